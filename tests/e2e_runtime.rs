//! End-to-end: how `ldmd` chooses its I/O runtime. `auto` takes io_uring where it works and
//! falls back to epoll, saying why, when a seccomp filter on the daemon's own process refuses
//! `io_uring_setup` (as container runtimes' default profiles do); an explicit `io_uring` that
//! cannot work is a clear start-up error. The filter is installed between fork and exec, in the
//! child alone: the host-wide `kernel.io_uring_disabled` sysctl is never touched.

mod support;

use std::os::unix::process::CommandExt;
use std::process::Command;

use support::*;

const REMOTE: &str = "tcp_loopback_is_local = false";

/// A filter that answers `io_uring_setup` with EPERM, as Docker's default profile does, and
/// allows everything else. Built before the fork: the child only installs it.
fn refusing_io_uring_setup() -> seccompiler::BpfProgram {
    let rules = [(libc::SYS_io_uring_setup, vec![])].into_iter().collect();
    let filter = seccompiler::SeccompFilter::new(
        rules,
        seccompiler::SeccompAction::Allow,
        seccompiler::SeccompAction::Errno(libc::EPERM as u32),
        std::env::consts::ARCH.try_into().unwrap(),
    )
    .unwrap();
    filter.try_into().unwrap()
}

/// `command`, with the filter installed in the child just before it execs ldmd.
fn under_the_filter(command: &mut Command) -> &mut Command {
    let program = refusing_io_uring_setup();
    // SAFETY: between fork and exec the closure only makes two system calls (prctl, seccomp)
    // on a program built before the fork; it allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(move || {
            seccompiler::apply_filter(&program).map_err(|e| std::io::Error::other(e.to_string()))
        })
    }
}

/// Whether this process can set up an io_uring (the daemon's `auto` should then take it).
fn io_uring_works_here() -> Result<(), std::io::Error> {
    io_uring::IoUring::new(8).map(drop)
}

fn metrics_addr() -> std::net::SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

#[test]
fn auto_takes_io_uring_where_it_works_and_says_so_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = metrics_addr();
    let child = Daemon::command(&dir, REMOTE, Some(metrics), Some("auto"))
        .spawn()
        .unwrap();
    let daemon = Daemon::ready(dir, child, Some(metrics), None);
    let expected = match io_uring_works_here() {
        Ok(()) => "io_uring",
        Err(e) => {
            println!("io_uring_setup fails in this test's process too ({e}): expecting epoll");
            "epoll"
        }
    };
    assert_eq!(daemon.runtime, expected);
    let sample = format!("ldmd_runtime_info{{runtime=\"{expected}\"}} 1");
    let scrape = daemon.scrape();
    assert!(scrape.contains(&sample), "{sample} missing from:\n{scrape}");
    assert_eq!(scrape.matches("ldmd_runtime_info{").count(), 1, "{scrape}");
}

#[test]
fn auto_falls_back_to_epoll_when_seccomp_refuses_io_uring_setup_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    add_users(&dir.path().join("state"), &[("alice", "write", "pw")]);
    let metrics = metrics_addr();
    let mut command = Daemon::command(&dir, REMOTE, Some(metrics), Some("auto"));
    let child = under_the_filter(&mut command).spawn().unwrap();
    let daemon = Daemon::ready(dir, child, Some(metrics), None);
    assert_eq!(daemon.runtime, "epoll");

    // One warning, naming the refused call and the likely cause.
    let log = daemon.stderr_so_far.lock().unwrap().clone();
    let warnings: Vec<_> = log.lines().filter(|l| l.contains("using epoll")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("io_uring_setup") && warnings[0].contains("seccomp"),
        "{log}"
    );
    assert!(
        daemon
            .scrape()
            .contains("ldmd_runtime_info{runtime=\"epoll\"} 1")
    );

    // And it serves: a remote login and a request over TCP, a local one over the Unix socket.
    let mut client = daemon.tcp();
    client.secure();
    client.login("alice", "pw");
    let reply = client.request(&add_domain("fallback1"));
    assert_eq!(document_status(&reply).0, "success", "{reply}");
    let mut local = daemon.unix();
    local.secure();
    let listing = local.request(list_domain());
    assert!(listing.contains("id='fallback1'"), "{listing}");
}

#[test]
fn explicit_io_uring_that_cannot_work_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Daemon::command(&dir, REMOTE, None, Some("io_uring"));
    let out = under_the_filter(&mut command).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("io_uring cannot be used: io_uring_setup") && stderr.contains("seccomp"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
    assert!(
        !dir.path().join("state").exists(),
        "a start that fails creates no state directory"
    );
}

#[test]
fn a_runtime_that_does_not_exist_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = Daemon::command(&dir, "", None, Some("uring"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("auto, io_uring or epoll"), "{stderr}");
}
