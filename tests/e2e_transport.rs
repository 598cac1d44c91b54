//! End-to-end: the real `ldmd` binary over real sockets (loopback and its Unix socket), with a
//! rustls client that trusts only the certificate the daemon generated.

mod support;

use std::time::Duration;

use support::*;

/// Loopback TCP peers are local by default; these tests need remote behaviour.
const REMOTE: &str = "tcp_loopback_is_local = false";

#[test]
fn remote_client_logs_in_binds_pings_and_gets_ldm_replies() {
    // Issue 2, §1.1 sequence: STARTTLS, SASL PLAIN, bind, ping, LDM document, close.
    let daemon = Daemon::start_with_users(REMOTE, &[("alice", "write", "s3cret pass")]);
    let mut client = daemon.tcp();
    let features = client.secure();
    assert!(
        features.contains("<mechanism>PLAIN</mechanism>"),
        "{features}"
    );
    assert_eq!(client.tls_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    let features = client.login("alice", "s3cret pass");
    assert!(
        features.contains("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"),
        "{features}"
    );
    client.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>e2e</resource></bind></iq>");
    assert!(
        client
            .read_until("</iq>")
            .contains("<jid>alice@localhost/e2e</jid>")
    );
    client.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(
        client.read_until("/>"),
        "<iq type='result' id='p' to='alice@localhost/e2e'/>"
    );
    let reply = client.request(list_domain());
    assert!(
        reply.contains("<Content xsi:type='ovf:VirtualSystem_Type' id='primary'>"),
        "{reply}"
    );
    assert!(reply.ends_with("<response><status>success</status></response></LDM_interface>"));
    client.send("</stream:stream>");
    assert_eq!(client.read_to_close(), "</stream:stream>");
}

#[test]
fn wrong_password_is_not_authorized_and_retries_are_bounded() {
    use base64::Engine as _;
    let daemon = Daemon::start_with_users(REMOTE, &[("alice", "read", "right")]);
    let mut client = daemon.tcp();
    client.secure();
    let auth = base64::engine::general_purpose::STANDARD.encode("\0alice\0wrong");
    for _ in 0..2 {
        client.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>"
        ));
        assert_eq!(
            client.read_until("</failure>"),
            "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>"
        );
    }
    client.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{auth}</auth>"
    ));
    let rest = client.read_to_close();
    assert!(
        rest.contains("<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"),
        "{rest}"
    );
}

#[test]
fn read_only_user_is_refused_writes() {
    let daemon = Daemon::start_with_users(REMOTE, &[("reader", "read", "pw")]);
    let mut client = daemon.tcp();
    client.secure();
    client.login("reader", "pw");
    let reply = client.request("<LDM_interface version='1.0'><cmd><action>add-domain</action><data version='3.0'/></cmd></LDM_interface>");
    assert!(
        reply.contains(
            "<resp_msg>Not authorized: 'add-domain' requires write authorization</resp_msg>"
        ),
        "{reply}"
    );
}

#[test]
fn passwd_ends_the_users_sessions_and_set_changes_its_authorization() {
    let daemon = Daemon::start_with_users(REMOTE, &[("carol", "write", "old pw")]);
    let state = daemon.state_dir();
    let mut before = daemon.tcp();
    before.secure();
    before.login("carol", "old pw");

    let out = run_cli(&state, &["user", "passwd", "carol"], Some("new pw"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The stream opened with the old password is ended; the new one logs in.
    let ended = before.read_to_close();
    assert!(
        ended.contains("the account's password was changed"),
        "{ended}"
    );
    let mut after = daemon.tcp();
    after.secure();
    after.login("carol", "new pw");
    let reply = after.request(&add_domain("carol1"));
    assert_eq!(document_status(&reply).0, "success", "{reply}");

    let out = run_cli(&state, &["user", "set", "carol", "--auth", "read"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_cli(&state, &["user", "list"], None);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.split_whitespace().eq(["carol", "read"])),
        "{listing}"
    );
    // The open stream is downgraded as soon as the daemon has read the store: its writes are
    // refused (asked again until then, within a bound).
    let deadline = std::time::Instant::now() + TIMEOUT;
    for attempt in 0.. {
        let reply = after.request(&add_domain(&format!("carol-try{attempt}")));
        if document_status(&reply).0 == "failure" {
            assert!(reply.contains("authorized"), "{reply}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never downgraded");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Unknown users are a clear error.
    let out = run_cli(&state, &["user", "passwd", "nobody"], Some("x pw"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user 'nobody'"));
}

#[test]
fn user_added_while_running_can_log_in() {
    // The verifier re-reads the user store when it changes: no restart needed.
    let daemon = Daemon::start(REMOTE);
    let out = run_cli(
        &daemon.state_dir(),
        &["user", "add", "late", "--auth", "write"],
        Some("pw"),
    );
    assert!(out.status.success());
    let mut client = daemon.tcp();
    client.secure();
    client.login("late", "pw");
}

#[test]
fn loopback_tcp_peer_is_local_and_skips_sasl() {
    // Local peers: credentials from sock_diag; root has write authorization.
    let daemon = Daemon::start("");
    let mut client = daemon.tcp();
    client.secure();
    let reply = client.request("<LDM_interface version='1.0'><cmd><action>add-domain</action><data version='3.0'/></cmd></LDM_interface>");
    assert!(
        reply.contains("add-domain needs a Content naming the domain"),
        "root is authorized: {reply}"
    );
}

#[test]
fn unix_socket_peer_is_authorized_by_its_uid() {
    let daemon = Daemon::start("");
    let mut client = daemon.unix();
    client.secure();
    let reply = client.request(list_domain());
    assert!(reply.contains("id='primary'"), "{reply}");
}

#[test]
fn unknown_local_uid_gets_no_authorization_and_mapped_uid_gets_its_role() {
    // Runs a client as uid 65534 (nobody) over the Unix socket; needs root to switch uid.
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: switching uid needs root");
        return;
    }
    // The socket must be reachable by nobody: a directory others may traverse.
    let public = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        public.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let socket = public.path().join("ldmd.sock");
    for (extra, expected) in [
        (
            "",
            "Not authorized: 'list-domain' requires read authorization",
        ),
        ("[local_users]\n65534 = 'read'", "id='primary'"),
    ] {
        let _ = std::fs::remove_file(&socket);
        let config = format!("socket = '{}'\n{extra}", socket.display());
        let daemon = Daemon::start(&config);
        let reply = as_nobody_over_unix(&daemon);
        assert!(reply.contains(expected), "{extra}: {reply}");
    }
}

/// Forks a child that drops to uid 65534, then connects (SO_PEERCRED records the uid at
/// connect time), secures the stream and sends list-domain.
fn as_nobody_over_unix(daemon: &Daemon) -> String {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let (mut ours, mut theirs) = UnixStream::pair().unwrap();
    let socket = daemon.socket.clone();
    // Read while still root: the state directory is private.
    let tls = client_tls(&daemon.state_dir());
    // SAFETY: fork in a test process; the child only runs the closure below and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: dropping privileges in the forked child.
            assert_eq!(unsafe { libc::setgid(65534) }, 0);
            // SAFETY: as above.
            assert_eq!(unsafe { libc::setuid(65534) }, 0);
            let stream = UnixStream::connect(&socket).expect("connect as nobody");
            let mut client = Client::over(stream, tls);
            client.secure();
            client.request(list_domain())
        }));
        let text = outcome.unwrap_or_else(|_| "child panicked".to_owned());
        theirs.write_all(text.as_bytes()).unwrap();
        // SAFETY: end the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    drop(theirs);
    let mut reply = String::new();
    ours.read_to_string(&mut reply).unwrap();
    let mut status = 0;
    // SAFETY: waitpid on our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    reply
}

#[test]
fn starttls_injection_is_refused_over_the_wire() {
    let daemon = Daemon::start(REMOTE);
    let mut client = daemon.tcp();
    client.send(HEADER);
    client.read_until("</stream:features>");
    client.send(&format!(
        "{STARTTLS}<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>"
    ));
    assert_eq!(
        client.read_to_close(),
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>"
    );
}

#[test]
fn tls_client_hello_on_the_plaintext_port_gets_not_well_formed() {
    let daemon = Daemon::start(REMOTE);
    let mut client = daemon.tcp();
    client.send_bytes(&[
        0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03,
    ]);
    let out = client.read_to_close();
    assert!(
        out.contains("<not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"),
        "{out}"
    );
}

#[test]
fn silent_connection_hits_the_authentication_deadline() {
    let daemon = Daemon::start(&format!("{REMOTE}\n[limits]\nauth_timeout_secs = 1"));
    let mut client = daemon.tcp();
    let out = client.read_to_close();
    assert!(
        out.contains("<connection-timeout xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"),
        "{out}"
    );
}

#[test]
fn connections_over_the_limit_get_resource_constraint_and_others_carry_on() {
    let daemon = Daemon::start(&format!("{REMOTE}\n[limits]\nconnections_max = 2"));
    let mut first = daemon.tcp();
    first.send(HEADER);
    first.read_until("</stream:features>");
    let mut second = daemon.tcp();
    second.send(HEADER);
    second.read_until("</stream:features>");
    let mut third = daemon.tcp();
    let out = third.read_to_close();
    assert!(
        out.contains("<resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"),
        "{out}"
    );
    // The first two are unaffected; closing one frees a slot.
    first.send("</stream:stream>");
    first.read_to_close();
    std::thread::sleep(Duration::from_millis(100));
    let mut fourth = daemon.tcp();
    fourth.send(HEADER);
    assert!(fourth.read_until("</stream:features>").contains("starttls"));
    second.send(STARTTLS);
    second.read_until("<proceed");
}

#[test]
fn hostile_inputs_get_their_errors_and_never_affect_other_connections() {
    let daemon = Daemon::start(&format!("{REMOTE}\n[limits]\nstanza_bytes_max = 4096"));
    let mut bystander = daemon.tcp();
    bystander.send(HEADER);
    bystander.read_until("</stream:features>");
    let cases: &[(&[u8], &str)] = &[
        (b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><stream:stream>", "restricted-xml"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not-well-formed"),
        (b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'><a>\xff\xfe</a>", "not-well-formed"),
        (b"<?xml version='1.0' encoding='latin1'?>", "unsupported-encoding"),
        (b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='nowhere.invalid' version='1.0'>", "host-unknown"),
        (b"\x00\x00\x00\x00", "unsupported-encoding"),
    ];
    let mut threads = Vec::new();
    for (input, condition) in cases {
        let addr = daemon.xmpp.unwrap();
        let state = daemon.state_dir();
        let input = input.to_vec();
        let condition = condition.to_string();
        threads.push(std::thread::spawn(move || {
            let mut client = Client::tcp(addr, &state);
            client.send_bytes(&input);
            let out = client.read_to_close();
            assert!(
                out.contains(&format!(
                    "<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                )),
                "{condition}: {out}"
            );
        }));
    }
    // An oversized stanza, after TLS and login.
    for thread in threads {
        thread.join().unwrap();
    }
    bystander.send(STARTTLS);
    bystander.read_until("<proceed");
}

#[test]
fn oversized_stanza_is_a_policy_violation_after_login() {
    let daemon = Daemon::start_with_users(
        &format!("{REMOTE}\n[limits]\nstanza_bytes_max = 4096"),
        &[("a", "write", "p")],
    );
    let mut client = daemon.tcp();
    client.secure();
    client.login("a", "p");
    client.send(&format!(
        "<message><body>{}</body></message>",
        "x".repeat(10_000)
    ));
    let out = client.read_to_close();
    assert!(
        out.contains("<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"),
        "{out}"
    );
}

#[test]
fn tls13_is_offered_only_when_allowed() {
    let daemon = Daemon::start(&format!("{REMOTE}\n[tls]\nallow_tls13 = true"));
    let mut client = daemon.tcp();
    client.secure();
    assert_eq!(client.tls_version(), Some(rustls::ProtocolVersion::TLSv1_3));
}

#[test]
fn sigterm_sends_system_shutdown_to_every_stream_and_exits_zero() {
    let daemon = Daemon::start("");
    let mut tcp = daemon.tcp();
    tcp.secure();
    let mut unix = daemon.unix();
    unix.send(HEADER);
    unix.read_until("</stream:features>");
    let socket = daemon.socket.clone();
    let (status, stderr) = daemon.terminate();
    assert!(status.success(), "exit status {status:?}: {stderr}");
    for client in [&mut tcp, &mut unix] {
        let out = client.read_to_close();
        assert!(
            out.contains("<system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"),
            "{out}"
        );
    }
    assert!(!socket.exists(), "the Unix socket is removed at exit");
}

#[test]
fn busy_port_is_a_clear_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--state-dir")
        .arg(dir.path())
        .args(["--listen", &addr.to_string(), "--metrics-listen", "off"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{addr} is already in use")),
        "{stderr}"
    );
}

#[test]
fn xmpp_disabled_means_local_socket_only() {
    let daemon = Daemon::start("xmpp_enabled = false");
    assert_eq!(daemon.xmpp, None);
    let mut client = daemon.unix();
    client.secure();
}

#[test]
fn restart_keeps_the_generated_certificate() {
    let daemon = Daemon::start("");
    let fingerprint = daemon.fingerprint.clone();
    let dir = tempfile::tempdir().unwrap();
    let state = daemon.state_dir();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    for file in ["tls-cert.pem", "tls-key.pem"] {
        std::fs::copy(state.join(file), dir.path().join("state").join(file)).unwrap();
    }
    drop(daemon);
    let again = Daemon::start_in(dir, "");
    assert_eq!(again.fingerprint, fingerprint);
}
