//! Password guessing and account changes: failed logins refused before any hash, a remembered
//! user let in during a flood, revocation reaching open streams.

use super::*;

/// SASL PLAIN as `user` on a secured stream; returns the daemon's answer element.
fn try_login(client: &mut Client, user: &str, password: &str) -> String {
    use base64::Engine as _;
    let message = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    client.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{message}</auth>"
    ));
    let answer = client.read_until("/>");
    if answer.contains("<failure") {
        // A failure's condition and its closing tag.
        return answer + &client.read_until("</failure>");
    }
    answer
}

fn secured_from(daemon: &Daemon, source: [u8; 4]) -> Client {
    let mut client = tcp_from(daemon, source);
    client.secure();
    client
}

#[test]
fn failed_logins_are_refused_per_source_and_per_user_before_any_hash() {
    let daemon = Daemon::start_with_users(
        &format!(
            "{REMOTE}\n[limits]\nsasl_attempts_max = 5\nlogin_failures_per_source_max = 2\nlogin_failures_per_user_max = 3"
        ),
        &[("alice", "write", "pw"), ("bob", "write", "pw")],
    );
    // One source guessing: after two failures even the right password is not checked.
    let mut guesser = secured_from(&daemon, [127, 0, 3, 1]);
    for _ in 0..2 {
        assert!(try_login(&mut guesser, "alice", "wrong").contains("<not-authorized/>"));
    }
    let answer = try_login(&mut guesser, "alice", "pw");
    assert!(answer.contains("<temporary-auth-failure/>"), "{answer}");
    let mut clean = secured_from(&daemon, [127, 0, 3, 2]);
    assert!(try_login(&mut clean, "alice", "pw").contains("<success"));

    // Three sources guessing bob once each: bob is refused to them, never to a clean source.
    for n in 10..13 {
        let mut guesser = secured_from(&daemon, [127, 0, 3, n]);
        assert!(try_login(&mut guesser, "bob", "wrong").contains("<not-authorized/>"));
    }
    let mut guesser = secured_from(&daemon, [127, 0, 3, 10]);
    let answer = try_login(&mut guesser, "bob", "pw");
    assert!(answer.contains("<temporary-auth-failure/>"), "{answer}");
    let mut operator = secured_from(&daemon, [127, 0, 3, 20]);
    assert!(try_login(&mut operator, "bob", "pw").contains("<success"));
    bystander_is_answered(&daemon);
}

#[test]
fn a_flood_of_wrong_passwords_does_not_keep_a_remembered_user_out() {
    // One verifier thread and a queue of two: a flood from many sources fills it. A user who
    // logged in before is answered from memory, without queueing behind the flood.
    let daemon = Daemon::start_with_users(
        &format!(
            "{REMOTE}\n[auth]\nverifier_threads = 1\n[limits]\nauth_queue_max = 2\nsasl_attempts_max = 5\nlogin_failures_per_source_max = 1000\nlogin_failures_per_user_max = 1000"
        ),
        &[("alice", "write", "pw")],
    );
    let mut first = secured_from(&daemon, [127, 0, 4, 1]);
    assert!(try_login(&mut first, "alice", "pw").contains("<success"));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = Vec::new();
    for n in 0..6u8 {
        let (addr, state, stop) = (daemon.xmpp.unwrap(), daemon.state_dir(), stop.clone());
        flood.push(std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let socket =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                        .unwrap();
                socket
                    .bind(&SocketAddr::from(([127, 0, 5, n + 1], 0)).into())
                    .unwrap();
                socket.connect(&addr.into()).unwrap();
                let mut client = Client::from_tcp(socket.into(), &state);
                client.secure();
                for _ in 0..4 {
                    let _ = try_login(&mut client, "mallory", "guess");
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    for n in 0..5 {
        let started = Instant::now();
        let mut again = secured_from(&daemon, [127, 0, 4, 10 + n]);
        let answer = try_login(&mut again, "alice", "pw");
        assert!(answer.contains("<success"), "during the flood: {answer}");
        assert!(started.elapsed() < BYSTANDER_BOUND);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for thread in flood {
        thread.join().unwrap();
    }
}

#[test]
fn changes_to_the_user_store_reach_streams_already_open() {
    // Removed users lose their streams, a downgraded user its writes, and a stream opened with
    // a password since changed ends: whether `ldmd user` or an editor changed the file.
    let daemon = Daemon::start_with_users(
        REMOTE,
        &[
            ("alice", "write", "pw"),
            ("bob", "write", "pw"),
            ("carol", "write", "pw"),
        ],
    );
    let mut alice = logged_in(&daemon, "alice", "pw");
    let mut bob = logged_in(&daemon, "bob", "pw");
    let mut carol = logged_in(&daemon, "carol", "pw");
    assert_eq!(
        document_status(&bob.request(&add_domain("b1"))).0,
        "success"
    );

    let out = run_cli(&daemon.state_dir(), &["user", "remove", "alice"], None);
    assert!(out.status.success());
    let ended = alice.read_to_close();
    assert!(ended.contains(&stream_error("not-authorized")), "{ended}");
    assert!(ended.contains("the account was removed"), "{ended}");

    // By hand: bob's authorization becomes read, his hash untouched.
    let users = daemon.state_dir().join("users.toml");
    let text = std::fs::read_to_string(&users).unwrap();
    let edited = edit_auth(&text, "bob", "read");
    std::fs::write(&users, edited).unwrap();
    let deadline = Instant::now() + BYSTANDER_BOUND;
    loop {
        let reply = bob.request(&add_domain("b2"));
        let (status, message) = document_status(&reply);
        if status == "failure" {
            assert_eq!(
                message.as_deref(),
                Some("Not authorized: 'add-domain' requires write authorization")
            );
            break;
        }
        // Applied before the watcher saw the file: undo, and look again.
        bob.request(&remove_domain("b2"));
        assert!(Instant::now() < deadline, "the downgrade never took effect");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(bob.request(list_domain()).contains("b1"), "reads go on");

    run_cli(&daemon.state_dir(), &["user", "remove", "carol"], None);
    let out = run_cli(
        &daemon.state_dir(),
        &["user", "add", "carol", "--auth", "write"],
        Some("new"),
    );
    assert!(out.status.success());
    let ended = carol.read_to_close();
    assert!(ended.contains(&stream_error("not-authorized")), "{ended}");
    let mut carol = daemon.tcp();
    carol.secure();
    assert!(try_login(&mut carol, "carol", "new").contains("<success"));
}

/// The users file with `user`'s `auth` set to `auth`.
fn edit_auth(text: &str, user: &str, auth: &str) -> String {
    let mut out = String::new();
    let mut in_user = false;
    for line in text.lines() {
        if line.trim_start().starts_with("name") {
            in_user = line.contains(&format!("\"{user}\""));
        }
        if in_user && line.trim_start().starts_with("auth") {
            out.push_str(&format!("auth = \"{auth}\"\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert_ne!(out, format!("{text}\n"), "no auth line for {user}");
    out
}
