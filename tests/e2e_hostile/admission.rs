//! Who may hold a connection, and how much: memory before authentication, connections per
//! source, per uid, and the Unix slots kept for root.

use super::*;

#[test]
fn unauthenticated_peers_hold_little_memory_and_get_policy_violation_past_the_preauth_limit() {
    // Before authentication a peer may make the daemon hold at most preauth_stanza_bytes_max
    // of its input (8 KiB): a partial stanza beyond it is refused at once.
    let daemon = Daemon::start(REMOTE);
    let mut client = daemon.tcp();
    client.send(HEADER);
    client.read_until("</stream:features>");
    client.send(&format!("<auth>{}", "A".repeat(9 * 1024)));
    let out = client.read_to_close();
    assert!(out.contains(&stream_error("policy-violation")), "{out}");
    assert!(out.contains("preauth_stanza_bytes_max"), "{out}");

    // 500 peers each holding a partial stanza just under the limit: the daemon's memory grows
    // by well under 64 KiB per connection (ceiling, not a target: about 12 KiB measured).
    const PEERS: usize = 500;
    const CEILING_PER_PEER: u64 = 64 * 1024;
    let before = rss_bytes(&daemon);
    let mut held = Vec::new();
    for n in 0..PEERS {
        let mut peer = tcp_from(&daemon, [127, 0, 1, (n % 250) as u8 + 1]);
        peer.send(HEADER);
        peer.read_until("</stream:features>");
        peer.send(&format!("<auth>{}", "A".repeat(8 * 1024 - 64)));
        held.push(peer);
    }
    std::thread::sleep(Duration::from_millis(500));
    let grown = rss_bytes(&daemon).saturating_sub(before);
    assert!(
        grown / PEERS as u64 <= CEILING_PER_PEER,
        "{} bytes per unauthenticated connection",
        grown / PEERS as u64
    );
    bystander_is_answered(&daemon);
}

#[test]
fn one_source_cannot_take_every_connection() {
    let daemon = Daemon::start(&format!(
        "{REMOTE}\n[limits]\nconnections_per_source_max = 3"
    ));
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut client = tcp_from(&daemon, [127, 0, 0, 7]);
        client.send(HEADER);
        client.read_until("</stream:features>");
        held.push(client);
    }
    let mut refused = tcp_from(&daemon, [127, 0, 0, 7]);
    let out = refused.read_to_close();
    assert!(out.contains(&stream_error("resource-constraint")), "{out}");
    assert!(
        out.contains("too many connections from this address"),
        "{out}"
    );
    let mut other = tcp_from(&daemon, [127, 0, 0, 8]);
    other.send(HEADER);
    assert!(other.read_until("</stream:features>").contains("starttls"));
    // The address gets its slots back as the daemon ends those streams: asked again until it
    // does, within a bound (no fixed sleep: a loaded machine may take longer than any guess).
    drop(held);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut again = tcp_from(&daemon, [127, 0, 0, 7]);
        let features = again
            .try_send_bytes(HEADER.as_bytes())
            .and_then(|()| again.try_read_until("</stream:features>"));
        match features {
            Ok(features) => {
                assert!(features.contains("starttls"), "{features}");
                break;
            }
            Err(e) if Instant::now() > deadline => panic!("the slots never came back: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn local_users_cannot_lock_root_out_of_the_unix_socket() {
    // A uid mapped to read is exempt from the idle timeout, so it could hold every Unix slot
    // forever. It gets connections_per_uid_max, never the reserved slots; root still gets in.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: switching to uid 65534 needs root");
        return;
    }
    // The socket must be reachable by nobody: a directory others may traverse.
    let public = tempfile::tempdir().unwrap();
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(public.path(), mode).unwrap();
    let socket = public.path().join("ldmd.sock");
    let daemon = Daemon::start(&format!(
        "{REMOTE}\nsocket = '{}'\n[local_users]\n65534 = 'read'\n[limits]\nunix_connections_max = 6\nunix_connections_reserved = 2\nconnections_per_uid_max = 3",
        socket.display()
    ));
    // Each child opens `count` connections, reports which were admitted, and holds them.
    let open = |count: usize| {
        move |socket: &std::path::Path, tls: std::sync::Arc<rustls::ClientConfig>| {
            let mut held = Vec::new();
            let mut outcomes = Vec::new();
            for _ in 0..count {
                let stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
                let mut client = Client::over(stream, tls.clone());
                // A refused connection may be closed before the header reaches it; its
                // refusal is still there to read.
                let _ = client.try_send_bytes(HEADER.as_bytes());
                outcomes.push(match client.try_read_until("</stream:features>") {
                    Ok(_) => "admitted",
                    Err(_) if client.pending.contains("resource-constraint") => "refused",
                    Err(_) => "something else",
                });
                held.push(client);
            }
            std::thread::sleep(Duration::from_millis(2500));
            outcomes.join(",")
        }
    };
    // 65534 takes its three; a fourth is over connections_per_uid_max.
    let nobody = as_uid(65534, &daemon, open(4));
    std::thread::sleep(Duration::from_millis(700));
    // 65533 takes the fourth slot; the fifth and sixth are reserved.
    let other = as_uid(65533, &daemon, open(2));
    std::thread::sleep(Duration::from_millis(700));
    // Root gets both reserved slots, and is answered.
    let mut roots = Vec::new();
    for _ in 0..2 {
        let mut root = daemon.unix();
        root.secure();
        assert!(root.request(list_domain()).contains("primary"));
        roots.push(root);
    }
    assert_eq!(nobody.join(), "admitted,admitted,admitted,refused");
    assert_eq!(other.join(), "admitted,refused");
}

/// Runs `body` in a forked child switched to `uid` (the socket's credentials are taken at
/// connect); its returned text comes back through a pipe when the returned handle is joined.
fn as_uid(
    uid: u32,
    daemon: &Daemon,
    body: impl FnOnce(&std::path::Path, std::sync::Arc<rustls::ClientConfig>) -> String,
) -> ChildReport {
    use std::io::Write as _;
    use std::os::unix::net::UnixStream;
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let socket = daemon.socket.clone();
    let tls = client_tls(&daemon.state_dir());
    // SAFETY: fork in a test process; the child runs `body` and exits without unwinding.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: dropping privileges in the forked child.
            assert_eq!(unsafe { libc::setgid(uid) }, 0);
            // SAFETY: as above.
            assert_eq!(unsafe { libc::setuid(uid) }, 0);
            body(&socket, tls)
        }));
        let text = outcome.unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            format!("child panicked: {why}")
        });
        let _ = theirs.write_all(text.as_bytes());
        // SAFETY: end the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    ChildReport { pid, pipe: ours }
}

struct ChildReport {
    pid: libc::pid_t,
    pipe: std::os::unix::net::UnixStream,
}

impl ChildReport {
    fn join(mut self) -> String {
        use std::io::Read as _;
        let mut text = String::new();
        self.pipe
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let _ = self.pipe.read_to_string(&mut text);
        let mut status = 0;
        // SAFETY: waitpid on our own child.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
        text
    }
}
