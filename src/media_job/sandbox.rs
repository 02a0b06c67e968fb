//! A worker cannot open a network socket: a seccomp filter, installed
//! before any media is read, answers `socket()` for IPv4 and IPv6 (and
//! `io_uring_setup`, which could open one another way) with `EACCES`.
//! This holds even if a demuxer or decoder were made to run code of an
//! attacker's choosing; the registry allow-list (`vidmill_pipelines`)
//! already keeps network elements out of reach. Unix sockets and pipes,
//! which GLib uses, stay open. Needs no privilege (`PR_SET_NO_NEW_PRIVS`
//! first, as the kernel asks).

use std::collections::BTreeMap;
use std::io;

use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

/// Installs the filter on every thread of this process (and those it
/// starts later).
pub fn deny_network() -> io::Result<()> {
    let failed = |e: seccompiler::Error| io::Error::other(format!("seccomp filter: {e}"));
    let family = |af: i32| {
        SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, af as u64)
            .and_then(|c| SeccompRule::new(vec![c]))
            .map_err(seccompiler::Error::Backend)
    };
    let rules: BTreeMap<i64, Vec<SeccompRule>> = [
        (
            libc::SYS_socket,
            vec![
                family(libc::AF_INET).map_err(failed)?,
                family(libc::AF_INET6).map_err(failed)?,
            ],
        ),
        // No rule: every call matches.
        (libc::SYS_io_uring_setup, vec![]),
    ]
    .into();
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| failed(seccompiler::Error::Backend(e)))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
        arch,
    )
    .map_err(|e| failed(seccompiler::Error::Backend(e)))?;
    let program: seccompiler::BpfProgram = filter
        .try_into()
        .map_err(|e| failed(seccompiler::Error::Backend(e)))?;
    seccompiler::apply_filter_all_threads(&program).map_err(failed)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    /// Runs in a child process of the test binary (the filter cannot be
    /// lifted once installed): inside, the filter is installed and sockets
    /// are tried.
    #[test]
    fn a_sandboxed_process_opens_no_network_socket_but_unix_ones() {
        if std::env::var_os("VIDMILL_SANDBOX_PROBE").is_some() {
            super::deny_network().expect("install the filter");
            let tcp = std::net::TcpListener::bind("127.0.0.1:0").map(|_| ());
            let udp6 = std::net::UdpSocket::bind("[::1]:0").map(|_| ());
            let unix = std::os::unix::net::UnixDatagram::unbound().map(|_| ());
            assert_eq!(tcp.map_err(|e| e.raw_os_error()), Err(Some(libc::EACCES)));
            assert_eq!(udp6.map_err(|e| e.raw_os_error()), Err(Some(libc::EACCES)));
            assert!(unix.is_ok(), "{unix:?}");
            return;
        }
        let exe = std::env::current_exe().expect("test binary");
        let status = Command::new(exe)
            .args([
                "--exact",
                "media_job::sandbox::tests::a_sandboxed_process_opens_no_network_socket_but_unix_ones",
                "--nocapture",
            ])
            .env("VIDMILL_SANDBOX_PROBE", "1")
            .status()
            .expect("run the probe");
        assert!(status.success());
    }
}
