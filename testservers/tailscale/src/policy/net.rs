//! IP prefixes and the tailnet's own address ranges.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP prefix such as `100.64.0.0/10`; a bare address is a full-length prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IpNet {
    addr: IpAddr,
    len: u8,
}

/// The IPv4 range tailnet devices get addresses from.
pub(crate) const TAILNET_V4: IpNet = IpNet {
    addr: IpAddr::V4(Ipv4Addr::new(100, 64, 0, 0)),
    len: 10,
};

/// The IPv6 range tailnet devices get addresses from.
pub(crate) const TAILNET_V6: IpNet = IpNet {
    addr: IpAddr::V6(Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0)),
    len: 48,
};

impl IpNet {
    /// Parses `a.b.c.d`, `a.b.c.d/n`, an IPv6 address or an IPv6 prefix.
    pub(crate) fn parse(text: &str) -> Option<IpNet> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        (len <= max).then_some(IpNet { addr, len })
    }

    /// Builds the prefix that contains exactly `ip`.
    pub(crate) fn single(ip: IpAddr) -> IpNet {
        IpNet {
            addr: ip,
            len: if ip.is_ipv4() { 32 } else { 128 },
        }
    }

    /// Returns whether the prefix contains exactly one address.
    pub(crate) fn is_single(&self) -> bool {
        self.len == if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// Returns the prefix's first address.
    pub(crate) fn addr(&self) -> IpAddr {
        self.addr
    }

    fn bits(addr: IpAddr) -> u128 {
        match addr {
            IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
            IpAddr::V6(a) => u128::from(a),
        }
    }

    /// Returns the mask of a prefix length. IPv4 addresses sit in the top 32 bits of `bits`.
    fn mask(len: u8) -> u128 {
        let len = u32::from(len);
        if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        }
    }

    /// Returns whether `ip` lies in this prefix.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.covers(&IpNet::single(ip))
    }

    /// Returns whether every address of `other` lies in this prefix.
    pub(crate) fn covers(&self, other: &IpNet) -> bool {
        if self.addr.is_ipv4() != other.addr.is_ipv4() || other.len < self.len {
            return false;
        }
        let mask = Self::mask(self.len);
        Self::bits(self.addr) & mask == Self::bits(other.addr) & mask
    }

    /// Returns whether this prefix and `other` share no address.
    pub(crate) fn disjoint(&self, other: &IpNet) -> bool {
        !self.covers(other) && !other.covers(self)
    }

    /// Returns whether the prefix contains any tailnet device address.
    pub(crate) fn overlaps_tailnet(&self) -> bool {
        !self.disjoint(&TAILNET_V4) || !self.disjoint(&TAILNET_V6)
    }

    /// Returns whether the prefix contains every tailnet address of one IP family.
    pub(crate) fn covers_tailnet(&self) -> bool {
        self.covers(&TAILNET_V4) || self.covers(&TAILNET_V6)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_tailnet_ranges() {
        let all = IpNet::parse("0.0.0.0/0").expect("valid");
        assert!(all.covers_tailnet());
        let cgnat = IpNet::parse("100.64.0.0/10").expect("valid");
        assert!(cgnat.covers_tailnet());
        let part = IpNet::parse("100.100.0.0/16").expect("valid");
        assert!(part.overlaps_tailnet());
        assert!(!part.covers_tailnet());
        let lan = IpNet::parse("192.168.1.0/24").expect("valid");
        assert!(!lan.overlaps_tailnet());
        assert!(lan.contains("192.168.1.7".parse().expect("ip")));
        let v6 = IpNet::parse("fd7a:115c:a1e0::/48").expect("valid");
        assert!(v6.covers_tailnet());
        assert!(IpNet::parse("10.0.0.0/33").is_none());
    }
}
