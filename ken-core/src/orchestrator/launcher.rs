//! Identifies the process that launches a sandbox, so that garbage collection can
//! tell a launch in progress from one whose process died.

/// Returns `HOST/PID/START` for this process, where START is the process start time
/// in clock ticks since boot (so a reused PID does not look alive).
pub(super) fn current() -> String {
    let pid = std::process::id();
    format!("{}/{}/{}", hostname(), pid, start_ticks(pid).unwrap_or(0))
}

/// Returns whether the launcher recorded in `value` is certainly dead: it ran on this
/// host and no process with that PID and start time exists any more. A launcher on
/// another host, or a value that does not parse, is not known to be dead.
pub(super) fn is_dead(value: &str) -> bool {
    let mut parts = value.rsplitn(3, '/');
    let (Some(start), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(start), Ok(pid)) = (start.parse::<u64>(), pid.parse::<u32>()) else {
        return false;
    };
    if host != hostname() {
        return false;
    }
    match start_ticks(pid) {
        None => true,
        Some(ticks) => start != 0 && ticks != start,
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Reads field 22 (starttime) of `/proc/PID/stat`.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in field 2 may contain spaces, so count fields after its ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive() {
        assert!(!is_dead(&current()));
    }

    #[test]
    fn exited_process_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let ticks = start_ticks(pid).unwrap_or(1);
        child.wait().unwrap();
        assert!(is_dead(&format!("{}/{pid}/{ticks}", hostname())));
    }

    #[test]
    fn other_host_is_not_known_dead() {
        assert!(!is_dead("some-other-host/1/1"));
        assert!(!is_dead("garbage"));
    }
}
