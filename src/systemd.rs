//! systemd integration without a library: `READY=1` once the server
//! listens, `STOPPING=1` on shutdown, and `WATCHDOG=1` pings at half the
//! watchdog interval, all over the datagram socket in `$NOTIFY_SOCKET`.
//! Outside systemd (no socket) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

fn send(message: &str) {
    let Ok(path) = std::env::var("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let sent = match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|addr| socket.send_to_addr(message.as_bytes(), &addr))
        }
        None => socket.send_to(message.as_bytes(), &path),
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

pub fn ready() {
    send("READY=1");
}

pub fn stopping() {
    send("STOPPING=1");
}

/// Pings the watchdog for as long as the runtime runs, when systemd asked
/// for it (`WatchdogSec=`).
pub fn spawn_watchdog() {
    let Some(interval) = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|u| u.parse::<u64>().ok())
        .map(|usec| Duration::from_micros(usec / 2))
    else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            send("WATCHDOG=1");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_the_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).expect("bind");
        // The variable is process-wide; this is the only test that sets it.
        std::env::set_var("NOTIFY_SOCKET", &path);
        ready();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
    }

    /// The unit's confinement (issue 10, item 9) stays in place: each of
    /// these lines is part of what `systemd-analyze security` rates 1.2.
    #[test]
    fn the_unit_keeps_its_confinement() {
        let unit = include_str!("../systemd/vidmill.service");
        let lines: Vec<&str> = unit.lines().map(str::trim).collect();
        for directive in [
            "CapabilityBoundingSet=",
            "AmbientCapabilities=",
            "NoNewPrivileges=yes",
            "ProtectProc=invisible",
            "PrivateUsers=yes",
            "UMask=0077",
            "ProtectSystem=strict",
            "ReadWritePaths=/var/lib/vidmill",
            "PrivateTmp=yes",
            "PrivateDevices=yes",
            "RestrictNamespaces=yes",
            "SystemCallArchitectures=native",
            "SystemCallFilter=@system-service seccomp",
            "SystemCallErrorNumber=EPERM",
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
            "IPAddressDeny=link-local multicast",
        ] {
            assert!(lines.contains(&directive), "{directive} missing");
        }
        let denied = lines
            .iter()
            .find_map(|l| l.strip_prefix("SystemCallFilter=~"))
            .expect("a deny list");
        for group in ["@privileged", "@mount", "@debug", "@module", "@raw-io"] {
            assert!(denied.split_whitespace().any(|g| g == group), "{group}");
        }
        // Workers set their own rlimits: @resources must stay allowed.
        assert!(!denied.contains("@resources"));
    }
}
