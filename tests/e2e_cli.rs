//! The `ldm` binary against a real daemon (issue 5): a full domain lifecycle with its printed
//! table, parseable lines and JSON; resource, SP configuration and listing commands each
//! followed by the listing that shows their effect; refusals with the daemon's `resp_msg` on
//! stderr and exit status 1; usage errors (2), among them text XML cannot carry; no daemon
//! (3, one line); remote login over TCP with `--ca`, a wrong password (4) and a wrong pin or
//! CA (5); the trust rule of the Unix socket (2 for a directory others can write, 5 for a
//! foreign certificate); flags over the environment; a daemon that never answers (5 within
//! `--connect-timeout`); `ldm xml -`; `ldm events --count N` fed by other `ldm` invocations,
//! and exit 5 when the stream ends first; a closed stdout. Every `ldm` run, and every wait on
//! its output, is bounded in time and the process killed if it overruns.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::*;

const LDM: &str = env!("CARGO_BIN_EXE_ldm");
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// An `ldm` command with a clean environment (no inherited socket or password).
fn ldm_command(args: &[&str]) -> Command {
    let mut command = Command::new(LDM);
    command
        .args(args)
        .env_remove("LDMD_SOCKET")
        .env_remove("LDM_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits for `child` at most `RUN_LIMIT`, killing it if it overruns, and collects its output.
fn finish(mut child: Child, stdin: Option<&str>) -> Output {
    let mut input = child.stdin.take().expect("piped stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    // The caller may have taken stdout (to close it) or stderr (to wait for a line on it).
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let out = std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(mut stdout) = stdout {
            let _ = stdout.read_to_end(&mut text);
        }
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(mut stderr) = stderr {
            let _ = stderr.read_to_end(&mut text);
        }
        text
    });
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ldm ran longer than {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// The first line `child` writes on stderr, waited for at most `RUN_LIMIT` (the child is
/// killed if none comes); the returned thread collects the rest of stderr.
fn first_stderr_line(child: &mut Child) -> (String, JoinHandle<String>) {
    let stderr = child.stderr.take().expect("piped stderr");
    let (sender, receiver) = mpsc::channel();
    let rest = std::thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = sender.send(line);
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
        rest
    });
    match receiver.recv_timeout(RUN_LIMIT) {
        Ok(line) => (line, rest),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ldm wrote no line on stderr within {RUN_LIMIT:?}");
        }
    }
}

fn run_with(mut command: Command, stdin: Option<&str>) -> Output {
    finish(command.spawn().unwrap(), stdin)
}

/// Runs `ldm --socket <daemon's socket> ARGS`.
fn ldm(daemon: &Daemon, args: &[&str]) -> Output {
    let socket = daemon.socket.to_str().unwrap().to_owned();
    let mut full = vec!["--socket", &socket];
    full.extend_from_slice(args);
    run_with(ldm_command(&full), None)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "ldm failed ({:?}): {}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

#[track_caller]
fn exits(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
}

/// The table row of `domain` in `ldm list` output.
fn row<'t>(table: &'t str, domain: &str) -> &'t str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(domain))
        .unwrap_or_else(|| panic!("no {domain} in\n{table}"))
}

#[test]
fn full_domain_lifecycle_through_the_ldm_binary() {
    let daemon = Daemon::start("");
    let d = &daemon;
    assert_eq!(
        ok(ldm(d, &["add-domain", "ldg1"])),
        "",
        "a write prints nothing"
    );
    ok(ldm(d, &["add-vcpu", "8", "ldg1"]));
    ok(ldm(d, &["set-memory", "4G", "ldg1"]));
    ok(ldm(
        d,
        &["add-vdsdev", "/dev/zvol/dsk/pool/vol1", "vol1@primary-vds0"],
    ));
    ok(ldm(
        d,
        &["add-vdisk", "vdisk1", "vol1@primary-vds0", "ldg1"],
    ));
    ok(ldm(d, &["add-vsw", "net-dev=net1", "ldg1-vsw0", "primary"]));
    ok(ldm(d, &["add-vnet", "vnet1", "ldg1-vsw0", "ldg1"]));

    // The table before binding: constraints only, no console, no uptime.
    let table = ok(ldm(d, &["ls"]));
    assert_eq!(
        table.lines().next(),
        Some("NAME             STATE      FLAGS   CONS    VCPU  MEMORY   UTIL  UPTIME")
    );
    assert!(
        table.lines().nth(1).unwrap().starts_with("primary "),
        "{table}"
    );
    assert_eq!(
        row(&table, "ldg1"),
        "ldg1             inactive   ------  -       8     4G       -     -"
    );

    ok(ldm(d, &["bind", "ldg1"]));
    ok(ldm(d, &["start", "ldg1"]));
    let table = ok(ldm(d, &["list"]));
    let ldg1 = row(&table, "ldg1");
    assert!(
        ldg1.starts_with("ldg1             active     -n----  5000    8     4G       -     "),
        "{table}"
    );
    let uptime = ldg1.rsplit("  ").next().unwrap().trim();
    assert!(
        uptime.ends_with('s') && uptime[..uptime.len() - 1].parse::<u64>().is_ok(),
        "{uptime}"
    );

    // -p: the VERSION line, then one DOMAIN line each, flags spelled out, bytes and seconds.
    let parseable = ok(ldm(d, &["list", "-p"]));
    let lines: Vec<&str> = parseable.lines().collect();
    assert_eq!(lines[0], "VERSION 1.6");
    assert!(lines[1].starts_with("DOMAIN|name=primary|state=active|flags=normal,control,vio-service|cons=UART|ncpu=16|mem=17179869184|util=|uptime="), "{parseable}");
    let line = lines
        .iter()
        .find(|l| l.starts_with("DOMAIN|name=ldg1|"))
        .unwrap();
    let fields: Vec<&str> = line.split('|').collect();
    assert_eq!(
        fields[..8],
        [
            "DOMAIN",
            "name=ldg1",
            "state=active",
            "flags=normal",
            "cons=5000",
            "ncpu=8",
            "mem=4294967296",
            "util="
        ]
    );
    assert!(
        fields[8]
            .strip_prefix("uptime=")
            .unwrap()
            .parse::<u64>()
            .is_ok(),
        "{line}"
    );

    // -o json parses, with typed numbers.
    let json: serde_json::Value =
        serde_json::from_str(&ok(ldm(d, &["list", "ldg1", "-o", "json"]))).unwrap();
    assert_eq!(json["status"], "success");
    assert_eq!(json["messages"], serde_json::json!([]));
    let domain = &json["domains"][0];
    assert_eq!(domain["name"], "ldg1");
    assert_eq!(domain["state"], "active");
    assert_eq!(domain["flags"], "-n----");
    assert_eq!(domain["ncpu"], 8);
    assert_eq!(domain["mem"], 4u64 << 30);
    assert_eq!(domain["cons"], "5000");
    assert!(domain["uptime"].is_u64());

    // -l: the bindings, devices and services of the domain.
    let long = ok(ldm(d, &["list", "-l", "ldg1"]));
    for part in [
        "VCPU\n    VID  PID  CID\n    0    16   2\n",
        "MEMORY\n    RA          PA",
        "vnet1  ldg1-vsw0@primary  network@",
        "vdisk1  vol1@primary-vds0        disk@0  primary",
        "VCONS\n",
    ] {
        assert!(long.contains(part), "{part:?} in\n{long}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&ok(ldm(d, &["list", "-l", "ldg1", "-o", "json"]))).unwrap();
    let resources = json["domains"][0]["resources"].as_array().unwrap();
    let cpu = resources.iter().find(|r| r["type"] == "cpu").unwrap();
    assert_eq!(cpu["bindings"].as_array().unwrap().len(), 8);
    let services = ok(ldm(d, &["list-services"]));
    assert!(services.contains("ldg1-vsw0     primary  "), "{services}");
    let bindings = ok(ldm(d, &["list-bindings", "ldg1"]));
    assert!(bindings.contains("network@"), "{bindings}");
    assert!(ok(ldm(d, &["list-constraints", "ldg1"])).starts_with("DOMAIN\nldg1\n"));

    // Refusals: the daemon's resp_msg, alone, on stderr; exit status 1.
    let active = ldm(d, &["remove-domain", "ldg1"]);
    exits(&active, 1);
    assert_eq!(
        stderr(&active),
        "LDom ldg1 is active: it must be unbound (inactive) to be removed\n"
    );
    assert_eq!(stdout(&active), "");
    let unknown = ldm(d, &["add-vcpu", "1", "nosuch"]);
    exits(&unknown, 1);
    assert_eq!(stderr(&unknown), "LDom nosuch does not exist\n");
    // A listing names what exists and fails for what does not.
    let partly = ldm(d, &["list", "ldg1", "nosuch"]);
    exits(&partly, 1);
    assert_eq!(stderr(&partly), "LDom nosuch does not exist\n");
    assert!(row(&stdout(&partly), "ldg1").starts_with("ldg1 "));
    let json = ldm(d, &["remove-domain", "ldg1", "-o", "json"]);
    exits(&json, 1);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["status"], "failure");
    assert_eq!(
        json["messages"],
        serde_json::json!(["LDom ldg1 is active: it must be unbound (inactive) to be removed"])
    );
    // Usage errors never reach the daemon: exit status 2, with the daemon's own wording.
    let size = ldm(d, &["set-memory", "4Q", "ldg1"]);
    exits(&size, 2);
    assert_eq!(
        stderr(&size),
        "ldm: Invalid memory size '4Q': expected a number with an optional unit K, M, G or T\n"
    );
    exits(&ldm(d, &["add-vcpu", "ldg1"]), 2);
    exits(&ldm(d, &["frobnicate-domain", "ldg1"]), 2);

    ok(ldm(d, &["stop", "ldg1"]));
    ok(ldm(d, &["unbind", "ldg1"]));
    ok(ldm(d, &["remove-vnet", "vnet1", "ldg1"]));
    ok(ldm(d, &["remove-vsw", "ldg1-vsw0"]));
    ok(ldm(d, &["rm-domain", "ldg1"]));
    let table = ok(ldm(d, &["list"]));
    assert_eq!(table.lines().count(), 2, "only primary is left:\n{table}");

    // SP configurations.
    ok(ldm(d, &["add-spconfig", "config1"]));
    assert_eq!(
        ok(ldm(d, &["list-spconfig"])),
        "factory-default\nconfig1 [current]\n"
    );
}

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
fn text_xml_cannot_carry_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens: a refusal here is exit 2, where connecting would be 3.
    let socket = dir.path().join("ldmd.sock");
    let socket = socket.to_str().unwrap();
    for (args, message) in [
        (
            &["add-domain", "ldg\u{1}"][..],
            "ldm: operand 'ldg\\u{1}' contains a control character (U+0001) that XML 1.0 forbids\n",
        ),
        (
            &["--domain", "local\u{1b}host", "list"],
            "ldm: --domain 'local\\u{1b}host' contains a control character (U+001B) that XML 1.0 forbids\n",
        ),
        (
            &["set-vsw", "mtu=\u{7}", "sw0"],
            "ldm: operand '\\u{7}' contains a control character (U+0007) that XML 1.0 forbids\n",
        ),
    ] {
        let mut full = vec!["--socket", socket];
        full.extend_from_slice(args);
        let out = run_with(ldm_command(&full), None);
        exits(&out, 2);
        assert_eq!(stderr(&out), message, "{args:?}");
    }
    let out = run_with(
        ldm_command(&["--socket", socket, "xml", "-"]),
        Some(&list_domain().replace("list-domain", "list\u{1}domain")),
    );
    exits(&out, 2);
    assert!(
        stderr(&out).contains("contains a control character (U+0001)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn operands_that_change_nothing_and_ignored_sections_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ldmd.sock");
    let socket = socket.to_str().unwrap();
    for (args, message) in [
        (
            &["add-variable", "ldg1"][..],
            "ldm: add-variable: expected NAME=VALUE... DOMAIN\n",
        ),
        (
            &["rm-var", "ldg1"],
            "ldm: remove-variable: expected NAME... DOMAIN\n",
        ),
        (
            &["set-vsw", "primary-vsw0"],
            "ldm: set-vsw: give at least one property=value\n",
        ),
        (
            &["list-services", "-o", "network"],
            "ldm: -o SECTIONS applies to list-domain and list-bindings only (here: -o text or -o json)\n",
        ),
    ] {
        let mut full = vec!["--socket", socket];
        full.extend_from_slice(args);
        let out = run_with(ldm_command(&full), None);
        exits(&out, 2);
        assert_eq!(stderr(&out), message, "{args:?}");
    }
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

#[test]
fn xml_sends_a_raw_document_from_stdin_and_prints_the_reply() {
    let daemon = Daemon::start("");
    let socket = daemon.socket.to_str().unwrap().to_owned();
    let document = format!("<?xml version='1.0'?>\n{}\n", list_domain());
    let out = run_with(
        ldm_command(&["--socket", &socket, "xml", "-"]),
        Some(&document),
    );
    let reply = ok(out);
    assert!(reply.starts_with("<LDM_interface version='1.0'"), "{reply}");
    assert!(reply.contains("id='primary'"), "{reply}");
    assert!(reply.trim_end().ends_with("</LDM_interface>"), "{reply}");
    let failing = run_with(
        ldm_command(&["--socket", &socket, "xml", "-"]),
        Some(&add_domain("-bad")),
    );
    exits(&failing, 1);
    assert!(stdout(&failing).contains("<status>failure</status>"));
    assert!(stderr(&failing).contains("must begin with a letter or a digit"));
    let not_xml = run_with(ldm_command(&["--socket", &socket, "xml", "-"]), Some("<a>"));
    exits(&not_xml, 2);
    let file = daemon.dir.path().join("doc.xml");
    std::fs::write(&file, list_domain()).unwrap();
    ok(run_with(
        ldm_command(&["--socket", &socket, "xml", file.to_str().unwrap()]),
        None,
    ));
    // -o json: the outcome of the reply, as every subcommand prints it.
    let json = run_with(
        ldm_command(&["--socket", &socket, "xml", "-", "-o", "json"]),
        Some(&add_domain("-bad")),
    );
    exits(&json, 1);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["status"], "failure");
    assert!(
        json["messages"][0]
            .as_str()
            .unwrap()
            .contains("must begin with a letter or a digit"),
        "{json}"
    );
    let json = ok(run_with(
        ldm_command(&["--socket", &socket, "xml", "-", "-o", "json"]),
        Some(list_domain()),
    ));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["status"], "success");
}

#[test]
fn a_closed_stdout_ends_ldm_quietly() {
    let daemon = Daemon::start("");
    let socket = daemon.socket.to_str().unwrap().to_owned();
    for (args, stdin) in [(&["list"][..], None), (&["xml", "-"], Some(list_domain()))] {
        let mut full = vec!["--socket", socket.as_str()];
        full.extend_from_slice(args);
        let mut child = ldm_command(&full).spawn().unwrap();
        // `ldm list | head -0`: the reader is gone before anything is written.
        drop(child.stdout.take());
        let out = finish(child, stdin);
        assert_eq!(stderr(&out), "", "{args:?}");
        exits(&out, 0);
    }
}

#[test]
fn events_are_printed_as_other_ldm_invocations_cause_them() {
    let daemon = Daemon::start("");
    let socket = daemon.socket.to_str().unwrap().to_owned();
    for (format, expected) in [
        (
            "text",
            vec![
                "add-domain ev1".to_owned(),
                "add-vcpu ev1 cpu=2".to_owned(),
                "remove-domain ev1".to_owned(),
            ],
        ),
        ("json", Vec::new()),
    ] {
        let mut child = ldm_command(&["--socket", &socket, "events", "--count", "3", "-o", format])
            .spawn()
            .unwrap();
        // The subscription is in place once ldm says it listens.
        let (line, _rest) = first_stderr_line(&mut child);
        assert_eq!(line, "ldm: listening for all events (Ctrl-C to stop)\n");
        let name = format!("ev-{format}");
        ok(ldm(&daemon, &["add-domain", &name]));
        ok(ldm(&daemon, &["add-vcpu", "2", &name]));
        ok(ldm(&daemon, &["remove-domain", &name]));
        let out = finish(child, None);
        exits(&out, 0);
        let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
        if format == "text" {
            let expected: Vec<String> = expected.iter().map(|l| l.replace("ev1", &name)).collect();
            assert_eq!(lines, expected);
        } else {
            let events: Vec<serde_json::Value> = lines
                .iter()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(events.len(), 3);
            assert_eq!(events[0]["event"], "add-domain");
            assert_eq!(events[1]["event"], "add-vcpu");
            assert_eq!(events[1]["domains"], serde_json::json!([name]));
            assert_eq!(events[1]["resources"][0]["units"], "2");
            assert_eq!(events[2]["event"], "remove-domain");
        }
    }
}

#[test]
fn events_fail_with_exit_5_when_the_stream_ends_first() {
    // A daemon that shuts down after one of three events (its stream error says why), one
    // that dies after one of three, and one that dies under an `ldm events` with no count.
    for (count, ending) in [
        (Some("3"), "shutdown"),
        (Some("3"), "crash"),
        (None, "crash"),
    ] {
        let daemon = Daemon::start("");
        let socket = daemon.socket.to_str().unwrap().to_owned();
        let mut args = vec!["--socket", socket.as_str(), "events"];
        if let Some(count) = count {
            args.extend(["--count", count]);
        }
        let mut child = ldm_command(&args).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, printed) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let (line, rest) = first_stderr_line(&mut child);
        assert_eq!(line, "ldm: listening for all events (Ctrl-C to stop)\n");
        if count.is_some() {
            ok(ldm(&daemon, &["add-domain", "once"]));
            // The event is printed before the daemon goes.
            assert_eq!(printed.recv_timeout(RUN_LIMIT).unwrap(), "add-domain once");
        }
        let expected = match ending {
            "shutdown" => {
                daemon.terminate();
                // A stream error says why.
                format!("ldm: ldmd at {socket}: the daemon ended the stream: system-shutdown\n")
            }
            _ => {
                daemon.crash();
                let of = match count {
                    Some(count) => format!("1 of {count}"),
                    None => "0".to_owned(),
                };
                format!("ldm: ldmd at {socket}: the stream ended after {of} events\n")
            }
        };
        let out = finish(child, None);
        exits(&out, 5);
        assert_eq!(rest.join().unwrap(), expected, "{ending}");
    }
}

/// What the listing after a step must show.
enum Shows {
    Line(&'static str),
    Exactly(&'static str),
    Not(&'static str),
}

/// One table row: an `ldm` command, its exit status, and a listing that shows its effect
/// (`then` empty: the command is a listing, and its own output is checked).
struct Step {
    run: &'static [&'static str],
    exit: i32,
    /// The daemon's refusal, for exit 1.
    refusal: Option<&'static str>,
    then: &'static [&'static str],
    shows: Shows,
}

const fn step(run: &'static [&'static str], then: &'static [&'static str], shows: Shows) -> Step {
    Step {
        run,
        exit: 0,
        refusal: None,
        then,
        shows,
    }
}

const fn refused(
    run: &'static [&'static str],
    refusal: &'static str,
    then: &'static [&'static str],
    shows: Shows,
) -> Step {
    Step {
        run,
        exit: 1,
        refusal: Some(refusal),
        then,
        shows,
    }
}

#[test]
fn resource_spconfig_and_listing_commands_show_in_the_next_listing() {
    use Shows::*;
    // Memory DR on an active domain takes 5 s per GiB here, long enough to cancel it.
    let daemon = Daemon::start("[memdr]\nseconds_per_gib = 5");
    let d = &daemon;
    for setup in [
        &["add-domain", "t1"][..],
        &["add-vcpu", "4", "t1"],
        &["set-memory", "2G", "t1"],
        &["add-vsw", "net-dev=net0", "t1-vsw0", "primary"],
        &["add-vnet", "vnet1", "t1-vsw0", "t1"],
    ] {
        ok(ldm(d, setup));
    }
    let table = [
        step(
            &["set-vcpu", "6", "t1"],
            &["list", "-p", "t1"],
            Line("ncpu=6"),
        ),
        step(
            &["remove-vcpu", "2", "t1"],
            &["list", "-p", "t1"],
            Line("ncpu=4"),
        ),
        refused(
            &["remove-vcpu", "9", "t1"],
            "",
            &["list", "-p", "t1"],
            Line("ncpu=4"),
        ),
        step(&["add-memory", "1G", "t1"], &["ls", "t1"], Line("3G")),
        step(
            &["remove-memory", "512M", "t1"],
            &["list", "-p", "t1"],
            Line("mem=2684354560"),
        ),
        step(
            &["add-spconfig", "c1"],
            &["list-spconfig"],
            Exactly("factory-default\nc1 [current]\n"),
        ),
        step(
            &["add-config", "c2"],
            &["list-spconfig"],
            Exactly("factory-default\nc1\nc2 [current]\n"),
        ),
        step(
            &["set-spconfig", "c1"],
            &["list-spconfig"],
            Exactly("factory-default\nc1 [next poweron]\nc2 [current]\n"),
        ),
        step(
            &["remove-spconfig", "c1"],
            &["list-spconfig", "-p"],
            Exactly(
                "VERSION 1.6\nSPCONFIG|name=factory-default|status=\nSPCONFIG|name=c2|status=current\n",
            ),
        ),
        refused(
            &["remove-spconfig", "c2"],
            "c2 is the current SP configuration: select another with set-spconfig and power-cycle first\n",
            &["list-spconfig"],
            Line("c2 [current]"),
        ),
        refused(
            &["cancel-operation", "memdr", "t1"],
            "No memory dynamic reconfiguration is in progress on t1\n",
            &["list", "-p", "t1"],
            Not("memory-dr"),
        ),
        step(
            &["bind", "t1"],
            &["list-devices", "-p", "cpu"],
            Not("|pid=16|"),
        ),
        step(
            &["list", "-l", "-p", "t1"],
            &[],
            Line("|vid=3|pid=19|cid=2"),
        ),
        step(&["list", "-l", "-p", "t1"], &[], Line("|ra=0x10000000|pa=")),
        step(&["list", "-o", "network", "t1"], &[], Not("\nVCPU\n")),
        step(
            &["list", "-o", "network", "t1"],
            &[],
            Line("    vnet1  t1-vsw0@primary  network@0  "),
        ),
        step(&["list-devices", "memory"], &[], Line("MEMORY")),
    ];
    for Step {
        run,
        exit,
        refusal,
        then,
        shows,
    } in table
    {
        let out = ldm(d, run);
        exits(&out, exit);
        match refusal {
            Some("") => assert!(!stderr(&out).is_empty(), "{run:?}"),
            Some(message) => assert_eq!(stderr(&out), message, "{run:?}"),
            None => assert_eq!(stderr(&out), "", "{run:?}"),
        }
        let listing = if then.is_empty() {
            stdout(&out)
        } else {
            ok(ldm(d, then))
        };
        match shows {
            Line(part) => assert!(
                listing.lines().any(|l| l.contains(part)),
                "{run:?} then {then:?}: no {part:?} in\n{listing}"
            ),
            Exactly(text) => assert_eq!(listing, text, "{run:?} then {then:?}"),
            Not(part) => assert!(
                !listing.contains(part),
                "{run:?} then {then:?}: {part:?} in\n{listing}"
            ),
        }
    }
    // list-devices: the cpu t1 holds is no longer free.
    let devices = ok(ldm(d, &["list-devices", "cpu"]));
    assert!(
        devices.starts_with("VCPU\n    PID  CID\n    20   2\n"),
        "{devices}"
    );

    // cancel-operation memdr: a DR in progress on the active domain ends early.
    ok(ldm(d, &["start", "t1"]));
    let socket = daemon.socket.to_str().unwrap().to_owned();
    let growing = ldm_command(&["--socket", &socket, "add-memory", "1G", "t1"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + RUN_LIMIT;
    while !ok(ldm(d, &["list", "-p", "t1"])).contains("memory-dr") {
        assert!(Instant::now() < deadline, "the memory DR never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    ok(ldm(d, &["cancel-op", "memdr", "t1"]));
    let grown = finish(growing, None);
    // Cancelled before or after some memory moved: a failure, or a success with a warning.
    assert!(matches!(grown.status.code(), Some(0 | 1)), "{grown:?}");
    assert!(stderr(&grown).contains("cancelled"), "{}", stderr(&grown));
    assert!(!ok(ldm(d, &["list", "-p", "t1"])).contains("memory-dr"));
}
