//! The `ldm` binary against a real daemon (issue 5): a full domain lifecycle with its printed
//! table, parseable lines and JSON; refusals with the daemon's `resp_msg` on stderr and exit
//! status 1; usage errors (2); no daemon (3, one line); remote login over TCP with `--ca`, a
//! wrong password (4) and a wrong pin (5); `ldm xml -`; `ldm events --count N` fed by other
//! `ldm` invocations. Every `ldm` run is bounded in time and killed if it overruns.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};
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
    let mut stdout = child.stdout.take().unwrap();
    // The caller may have taken stderr already (to wait for a line on it).
    let stderr = child.stderr.take();
    let out = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
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
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
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
