//! Reaching and trusting the daemon: no daemon, the socket's precedence, the trust rule of the
//! Unix socket, time limits, remote login over TCP.

use super::*;

#[test]
fn a_daemon_that_is_not_running_gives_one_line_and_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ldmd.sock");
    let out = run_with(
        ldm_command(&["--socket", socket.to_str().unwrap(), "list"]),
        None,
    );
    exits(&out, 3);
    assert_eq!(
        stderr(&out),
        format!(
            "ldm: cannot reach ldmd at {}: no such file (is ldmd running? see --socket/--host)\n",
            socket.display()
        )
    );
    let port = free_port().to_string();
    let host = format!("127.0.0.1:{port}");
    let out = run_with(ldm_command(&["--host", &host, "--insecure", "list"]), None);
    exits(&out, 3);
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("connection refused"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_default_socket_the_environment_and_the_config_file_find_the_daemon() {
    let daemon = Daemon::start("");
    // The quick start's layout: ./ldmd-state/ldmd.sock from the working directory.
    let cwd = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(daemon.state_dir(), cwd.path().join("ldmd-state")).unwrap();
    let mut command = ldm_command(&["add-domain", "here"]);
    command.current_dir(cwd.path());
    ok(run_with(command, None));
    let mut command = ldm_command(&["list", "here"]);
    command.env("LDMD_SOCKET", &daemon.socket);
    assert!(ok(run_with(command, None)).contains("\nhere "));
    let config = cwd.path().join("client.toml");
    std::fs::write(
        &config,
        format!("state_dir = '{}'\n", daemon.state_dir().display()),
    )
    .unwrap();
    let out = run_with(
        ldm_command(&["--config", config.to_str().unwrap(), "ls", "here"]),
        None,
    );
    assert!(ok(out).contains("\nhere "));
    // Flags beat the environment: --state-dir and --config over LDMD_SOCKET, --socket over all.
    let elsewhere = cwd.path().join("no-daemon-here.sock");
    let state = daemon.state_dir();
    for args in [
        vec!["--state-dir", state.to_str().unwrap()],
        vec!["--config", config.to_str().unwrap()],
        vec!["--socket", daemon.socket.to_str().unwrap()],
    ] {
        let mut full = args.clone();
        full.extend(["ls", "here"]);
        let mut command = ldm_command(&full);
        command.env("LDMD_SOCKET", &elsewhere);
        assert!(ok(run_with(command, None)).contains("\nhere "), "{args:?}");
    }
    let mut command = ldm_command(&["--socket", elsewhere.to_str().unwrap(), "ls"]);
    command.env("LDMD_SOCKET", &daemon.socket);
    exits(&run_with(command, None), 3);
}

/// A certificate ldmd did not make: another daemon's, or a stale one.
fn foreign_certificate() -> String {
    ldmd::server::certs::generate(&["localhost".to_owned()])
        .expect("a certificate")
        .0
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_state_directory_others_can_write_is_not_trusted() {
    let daemon = Daemon::start("");
    let state = daemon.state_dir();
    let state_text = state.to_str().unwrap();
    chmod(&state, 0o777);
    let expected = format!(
        "ldm: cannot trust ldmd at {state_text}/ldmd.sock: {state_text} can be written by other users (mode 0777); give --ca, --fingerprint or --insecure to say how to verify it\n"
    );
    // Even with the daemon's own certificate readable there: another user could have put both.
    for args in [
        &["--state-dir", state_text, "list"][..],
        &["--socket", daemon.socket.to_str().unwrap(), "list"],
    ] {
        let out = run_with(ldm_command(args), None);
        exits(&out, 2);
        assert_eq!(stderr(&out), expected, "{args:?}");
    }
    // Saying how to verify it is enough.
    ok(run_with(
        ldm_command(&[
            "--state-dir",
            state_text,
            "--fingerprint",
            &daemon.fingerprint,
            "list",
        ]),
        None,
    ));
    // The check comes before connecting: with nothing listening yet, still refused.
    let shared = tempfile::tempdir().unwrap();
    chmod(shared.path(), 0o1777);
    let planted = shared.path().join("ldmd-state");
    std::fs::create_dir(&planted).unwrap();
    chmod(&planted, 0o777);
    let mut command = ldm_command(&["list"]);
    command.current_dir(shared.path());
    let out = run_with(command, None);
    exits(&out, 2);
    assert!(
        stderr(&out).starts_with("ldm: cannot trust ldmd at ./ldmd-state/ldmd.sock: ./ldmd-state can be written by other users"),
        "{}",
        stderr(&out)
    );
    chmod(&state, 0o700);
}

#[test]
fn a_foreign_certificate_pinned_for_a_real_daemon_fails_verification() {
    let daemon = Daemon::start("");
    let stale = tempfile::tempdir().unwrap();
    let cert = stale.path().join("tls-cert.pem");
    std::fs::write(&cert, foreign_certificate()).unwrap();
    // The socket is the real daemon's; the certificate found for it is not its own.
    let out = run_with(
        ldm_command(&[
            "--socket",
            daemon.socket.to_str().unwrap(),
            "--state-dir",
            stale.path().to_str().unwrap(),
            "list",
        ]),
        None,
    );
    exits(&out, 5);
    assert!(
        stderr(&out).contains(&format!("is not the one in {}", cert.display())),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1);
    // A --ca of another certificate fails on the socket too.
    let out = run_with(
        ldm_command(&[
            "--socket",
            daemon.socket.to_str().unwrap(),
            "--ca",
            cert.to_str().unwrap(),
            "list",
        ]),
        None,
    );
    exits(&out, 5);
}

#[test]
fn a_daemon_that_accepts_but_never_answers_is_bounded_by_the_connect_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ldmd.sock");
    // Connections land in the backlog and are never answered.
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let started = Instant::now();
    let out = run_with(
        ldm_command(&[
            "--socket",
            socket.to_str().unwrap(),
            "--connect-timeout",
            "1",
            "list",
        ]),
        None,
    );
    exits(&out, 5);
    assert_eq!(
        stderr(&out),
        format!(
            "ldm: ldmd at {} did not answer within 1 s (waiting for the stream header)\n",
            socket.display()
        )
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn remote_users_log_in_with_a_password_and_a_verified_certificate() {
    let daemon = Daemon::start_with_users(
        "tcp_loopback_is_local = false",
        &[("alice", "write", "secret"), ("bob", "read", "bobpw")],
    );
    let host = daemon.xmpp.unwrap().to_string();
    let ca = daemon.state_dir().join("tls-cert.pem");
    let ca = ca.to_str().unwrap();
    let remote = |user: &str, password: Option<&str>, extra: &[&str], args: &[&str]| {
        let mut full = vec!["--host", &host, "--user", user];
        full.extend_from_slice(extra);
        full.extend_from_slice(args);
        let mut command = ldm_command(&full);
        if let Some(password) = password {
            command.env("LDM_PASSWORD", password);
        }
        run_with(command, None)
    };
    ok(remote(
        "alice",
        Some("secret"),
        &["--ca", ca],
        &["add-domain", "remote1"],
    ));
    assert!(ok(remote("alice", Some("secret"), &["--ca", ca], &["list"])).contains("\nremote1 "));
    // The pinned fingerprint, as ldmd printed it on its ready line.
    let pinned = remote(
        "alice",
        Some("secret"),
        &["--fingerprint", &daemon.fingerprint],
        &["list"],
    );
    ok(pinned);
    // A password file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "secret\n").unwrap();
    ok(remote(
        "alice",
        None,
        &["--ca", ca, "--password-file", file.to_str().unwrap()],
        &["ls"],
    ));

    let wrong = remote("alice", Some("nope"), &["--ca", ca], &["list"]);
    exits(&wrong, 4);
    assert_eq!(
        stderr(&wrong),
        format!("ldm: authentication failed for alice at {host}: not-authorized\n")
    );
    let read_only = remote("bob", Some("bobpw"), &["--ca", ca], &["add-domain", "nope"]);
    exits(&read_only, 1);
    assert_eq!(
        stderr(&read_only),
        "Not authorized: 'add-domain' requires write authorization\n"
    );
    let mut other = daemon.fingerprint.clone();
    other.replace_range(0..2, if other.starts_with("00") { "11" } else { "00" });
    let mismatch = remote(
        "alice",
        Some("secret"),
        &["--fingerprint", &other],
        &["list"],
    );
    exits(&mismatch, 5);
    assert!(
        stderr(&mismatch).contains("is not the pinned"),
        "{}",
        stderr(&mismatch)
    );
    let unverified = remote("alice", Some("secret"), &[], &["list"]);
    exits(&unverified, 2);
    assert_eq!(
        stderr(&unverified),
        "ldm: --host needs a way to verify the daemon: --ca FILE, --fingerprint SHA256 or --insecure\n"
    );
    // A CA that did not sign the daemon's certificate.
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, foreign_certificate()).unwrap();
    let wrong_ca = remote(
        "alice",
        Some("secret"),
        &["--ca", other_ca.to_str().unwrap()],
        &["list"],
    );
    exits(&wrong_ca, 5);
    assert!(
        stderr(&wrong_ca).starts_with(&format!("ldm: TLS with ldmd at {host} failed: ")),
        "{}",
        stderr(&wrong_ca)
    );
    assert_eq!(stderr(&wrong_ca).lines().count(), 1);
    // --insecure still logs in, but says where the password went.
    let insecure = remote("alice", Some("secret"), &["--insecure"], &["list"]);
    assert_eq!(
        stderr(&insecure),
        "ldm: warning: --insecure: the password of alice goes to a server whose certificate is not verified\n"
    );
    assert!(ok(insecure).contains("\nremote1 "));
    // --password-file beats LDM_PASSWORD.
    ok(remote(
        "alice",
        Some("wrong"),
        &["--ca", ca, "--password-file", file.to_str().unwrap()],
        &["list"],
    ));
    // No terminal and no password: a clear refusal, not a hang. A new session has no
    // controlling terminal, even when the tests run from one.
    let mut command = ldm_command(&["--host", &host, "--user", "alice", "--ca", ca, "list"]);
    command.stdin(Stdio::null());
    // SAFETY: setsid(2) is async-signal-safe, as pre_exec requires.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            libc::setsid();
            Ok(())
        });
    }
    let out = finish_without_stdin(command.spawn().unwrap());
    exits(&out, 2);
    assert!(
        stderr(&out).contains("no password for alice"),
        "{}",
        stderr(&out)
    );
}

fn finish_without_stdin(mut child: Child) -> Output {
    let deadline = Instant::now() + RUN_LIMIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ldm ran longer than {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}
