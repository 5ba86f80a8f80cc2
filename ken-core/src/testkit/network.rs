//! Checks of endpoints and of network isolation between sandboxes.

use std::net::Ipv4Addr;

use super::lifecycle::page_body;
use super::support::{assert_unsupported, Scope};
use super::KitConfig;
use crate::network::{LocalNetwork, NetworkProvider};
use crate::policy::AccessPolicy;
use crate::sandbox::{PortSpec, SandboxName, SandboxProvider};

fn port_spec(name: &str, port: u16) -> PortSpec {
    PortSpec {
        name: name.to_owned(),
        port,
        scheme: "http".to_owned(),
    }
}

/// Checks endpoints: a sandbox created with 2 ports serves an HTTP page on each,
/// the host fetches both through their endpoint URLs, and the URLs differ. Without
/// the `endpoints` capability, create with ports and `endpoint` are unsupported.
pub async fn endpoints(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "endpoints");
    scope.run(endpoints_body(&scope)).await;
}

async fn endpoints_body(scope: &Scope<'_>) {
    let provider = scope.provider;
    let ports = vec![port_spec("web", 8080), port_spec("api", 8081)];
    let name = scope.name("ports");
    let mut spec = scope.spec(&name);
    spec.ports = ports.clone();

    if !provider.capabilities().endpoints {
        let result = scope.within("create", provider.create(&spec)).await;
        assert_unsupported(
            provider,
            result,
            "create with ports",
            "endpoints",
            "endpoint",
        );
        let plain = scope.create_plain("noports").await;
        let result = scope
            .within("endpoint", provider.endpoint(&plain, &ports[0]))
            .await;
        assert_unsupported(provider, result, "endpoint", "endpoints", "endpoint");
        return;
    }

    scope.create(&spec).await;
    for port in &ports {
        scope
            .start_http_server(&name, port.port, page_body(&name, port.port))
            .await;
    }
    let web = scope.endpoint(&name, &ports[0]).await;
    let api = scope.endpoint(&name, &ports[1]).await;
    assert_ne!(
        web.url, api.url,
        "both ports of {name} got the same endpoint URL"
    );
    scope.fetch_until(&web, &page_body(&name, 8080)).await;
    scope.fetch_until(&api, &page_body(&name, 8081)).await;

    let unexposed = port_spec("other", 8099);
    let result = scope
        .within("endpoint", provider.endpoint(&name, &unexposed))
        .await;
    assert!(
        result.is_err(),
        "endpoint of port 8099 of {name}, which was not exposed, returned {result:?}"
    );
}

/// Checks that sandbox A cannot connect to sandbox B, neither at B's address
/// nor at B's published port through A's default gateway or 127.0.0.1, while the
/// host reaches B's endpoint. Without the `isolation` capability, [`LocalNetwork`]
/// must refuse the standard access policy for the provider.
///
/// Connections are made from inside A with bash's `/dev/tcp` under `timeout 3`; a
/// connection from A to its own server proves that the method works.
pub async fn isolation(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "isolation");
    scope.run(isolation_body(&scope)).await;
}

async fn isolation_body(scope: &Scope<'_>) {
    let provider = scope.provider;
    let capabilities = provider.capabilities();

    if !capabilities.isolation {
        let network = LocalNetwork::new().with_provider_isolation(capabilities.isolation);
        let result = network.ensure_policy(&AccessPolicy::standard()).await;
        assert!(
            result.is_err(),
            "the {} provider does not isolate sandboxes, yet the local network accepted the standard \
             policy, which forbids sandbox-to-sandbox traffic",
            provider.name()
        );
        return;
    }

    let a = scope.create_plain("iso-a").await;
    let b = scope.name("iso-b");
    let mut b_spec = scope.spec(&b);
    let b_port = port_spec("web", 8080);
    if capabilities.endpoints {
        b_spec.ports = vec![b_port.clone()];
    }
    scope.create(&b_spec).await;

    scope.start_http_server(&b, 8080, page_body(&b, 8080)).await;
    scope.start_http_server(&a, 8090, page_body(&a, 8090)).await;
    assert!(
        can_connect(scope, &a, "127.0.0.1", 8090).await,
        "sandbox {a} cannot connect to its own server on 127.0.0.1:8090, so the isolation probe does not work"
    );

    let mut forbidden = Vec::new();
    for address in addresses_of(scope, &b).await {
        forbidden.push((address, 8080));
    }
    if capabilities.endpoints {
        let endpoint = scope.endpoint(&b, &b_port).await;
        scope.fetch_until(&endpoint, &page_body(&b, 8080)).await;
        let published = endpoint
            .url
            .port_or_known_default()
            .unwrap_or_else(|| panic!("endpoint {} of {b} has no port", endpoint.url));
        if let Some(gateway) = default_gateway(scope, &a).await {
            forbidden.push((gateway.to_string(), published));
        }
        forbidden.push(("127.0.0.1".to_owned(), published));
    }

    for (address, port) in forbidden {
        assert!(
            !can_connect(scope, &a, &address, port).await,
            "sandbox {a} connected to {address}:{port}, which reaches sandbox {b}; sandboxes must not reach each other"
        );
    }
}

/// Returns true when a TCP connection from inside `from` to `address:port`
/// succeeds within 3 s.
async fn can_connect(scope: &Scope<'_>, from: &SandboxName, address: &str, port: u16) -> bool {
    let script = format!("timeout 3 bash -c 'exec 3<>/dev/tcp/{address}/{port}' 2>/dev/null");
    let output = scope
        .exec(from, crate::exec::ExecRequest::shell(script))
        .await;
    output.status.success()
}

/// Returns the IPv4 addresses of `sandbox` other than loopback, from `hostname -I`
/// or, where that is missing, from `/proc/net/fib_trie`.
async fn addresses_of(scope: &Scope<'_>, sandbox: &SandboxName) -> Vec<String> {
    let from_hostname = scope.sh(sandbox, "hostname -I 2>/dev/null || true").await;
    let mut addresses: Vec<String> = from_hostname
        .split_whitespace()
        .filter(|word| word.parse::<Ipv4Addr>().is_ok_and(|ip| !ip.is_loopback()))
        .map(str::to_owned)
        .collect();
    if addresses.is_empty() {
        let trie = scope.sh(sandbox, "cat /proc/net/fib_trie").await;
        addresses = local_addresses_from_fib_trie(&trie);
    }
    assert!(
        !addresses.is_empty(),
        "found no IPv4 address of sandbox {sandbox}"
    );
    addresses
}

/// Returns the addresses marked `/32 host LOCAL` in `/proc/net/fib_trie`, without
/// loopback ones.
fn local_addresses_from_fib_trie(trie: &str) -> Vec<String> {
    let mut addresses = Vec::new();
    let mut previous: Option<&str> = None;
    for line in trie.lines() {
        let line = line.trim();
        if line.starts_with("/32 host LOCAL") {
            if let Some(ip) = previous.and_then(|word| word.parse::<Ipv4Addr>().ok()) {
                if !ip.is_loopback() && !addresses.contains(&ip.to_string()) {
                    addresses.push(ip.to_string());
                }
            }
        }
        previous = line.strip_prefix("|-- ");
    }
    addresses
}

/// Returns the default gateway of `sandbox` from its `/proc/net/route`.
async fn default_gateway(scope: &Scope<'_>, sandbox: &SandboxName) -> Option<Ipv4Addr> {
    let routes = scope.sh(sandbox, "cat /proc/net/route").await;
    gateway_from_routes(&routes)
}

/// Parses `/proc/net/route`: the default route has destination `00000000`, and the
/// gateway is a little-endian hex IPv4 address.
fn gateway_from_routes(routes: &str) -> Option<Ipv4Addr> {
    routes.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&"00000000") {
            return None;
        }
        let gateway = u32::from_str_radix(fields.get(2)?, 16).ok()?;
        Some(Ipv4Addr::from(gateway.to_le_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_parses_default_route() {
        let routes = "Iface\tDestination\tGateway \tFlags\n\
                      eth0\t00000000\t010011AC\t0003\n\
                      eth0\t000011AC\t00000000\t0001\n";
        assert_eq!(
            gateway_from_routes(routes),
            Some(Ipv4Addr::new(172, 17, 0, 1))
        );
    }

    #[test]
    fn gateway_missing_without_default_route() {
        let routes = "Iface\tDestination\tGateway \tFlags\neth0\t000011AC\t00000000\t0001\n";
        assert_eq!(gateway_from_routes(routes), None);
    }

    #[test]
    fn fib_trie_yields_local_addresses() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
                    \x20    |-- 127.0.0.1\n        /32 host LOCAL\n\
                    \x20    |-- 172.18.0.5\n        /32 host LOCAL\n\
                    Local:\n     |-- 172.18.0.5\n        /32 host LOCAL\n";
        assert_eq!(local_addresses_from_fib_trie(trie), ["172.18.0.5"]);
    }
}
