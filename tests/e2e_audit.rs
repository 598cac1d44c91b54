//! End-to-end: the audit trail (`ldmd::audit`) names who connected, logged in, was refused and
//! changed what, in text and in JSON, and `audit = false` turns it off.

mod support;

use std::time::Duration;

use support::*;

const REMOTE: &str = "tcp_loopback_is_local = false";
const USERS: &[(&str, &str, &str)] = &[("alice", "write", "alice pw"), ("bob", "read", "bob pw")];

/// A login, a refused login, a write, a refused write, a refused connection and a local peer,
/// against a daemon configured with `extra`.
fn exercise(extra: &str) -> Daemon {
    let config = format!("{REMOTE}\n{extra}\n[limits]\nconnections_per_source_max = 2");
    let daemon = Daemon::start_with_users(&config, USERS);

    let mut alice = daemon.tcp();
    alice.secure();
    alice.login("alice", "alice pw");
    let reply = alice.request(&add_domain("audited1"));
    assert_eq!(document_status(&reply).0, "success", "{reply}");

    let mut bob = daemon.tcp();
    bob.secure();
    bob.login("bob", "bob pw");
    let reply = bob.request(&add_domain("audited2"));
    assert_eq!(document_status(&reply).0, "failure", "{reply}");

    // A third connection from 127.0.0.1 is over connections_per_source_max.
    let mut third = daemon.tcp();
    let out = third.read_to_close();
    assert!(out.contains("resource-constraint"), "{out}");
    drop((alice, bob));

    let mut local = daemon.unix();
    local.secure();
    local.request(list_domain());
    daemon
}

/// Waits (bounded) until the daemon's stderr holds `count` lines containing every needle.
fn lines_with(daemon: &Daemon, needles: &[&str], count: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let log = daemon.stderr_so_far.lock().unwrap().clone();
        let found: Vec<String> = log
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect();
        if found.len() >= count || std::time::Instant::now() > deadline {
            assert_eq!(found.len(), count, "{needles:?} in:\n{log}");
            return found;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn text_lines_name_logins_refusals_and_writes() {
    let daemon = exercise("");
    let audit = "ldmd::audit";
    let login = lines_with(&daemon, &[audit, "event=\"login\"", "user=\"alice\""], 1);
    assert!(login[0].contains("outcome=\"success\""), "{}", login[0]);
    assert!(login[0].contains("role=\"write\""), "{}", login[0]);
    let write = lines_with(&daemon, &[audit, "event=\"write\"", "user=\"alice\""], 1);
    for field in [
        "action=\"add-domain\"",
        "domain=\"audited1\"",
        "outcome=\"success\"",
        "latency_ms=",
    ] {
        assert!(write[0].contains(field), "{field} in {}", write[0]);
    }
    let refused = lines_with(&daemon, &[audit, "event=\"write\"", "user=\"bob\""], 1);
    assert!(refused[0].contains("outcome=\"failure\""), "{}", refused[0]);
    assert!(refused[0].contains("domain=\"audited2\""), "{}", refused[0]);
    let refusal = lines_with(
        &daemon,
        &[audit, "event=\"refusal\"", "resource-constraint"],
        1,
    );
    assert!(
        refusal[0].contains("limit=\"connections_per_source_max\""),
        "{}",
        refusal[0]
    );
    let connections = lines_with(&daemon, &[audit, "event=\"connection\"", "TLSv1.2"], 3);
    assert!(connections.iter().any(|l| l.contains("kind=\"local\"")));
    let local = lines_with(&daemon, &[audit, "login", "peer-credentials"], 1);
    assert!(local[0].contains("uid="), "{}", local[0]);
    // Colours are for terminals: this stderr is a pipe.
    assert!(!daemon.stderr_so_far.lock().unwrap().contains('\u{1b}'));
}

#[test]
fn json_lines_carry_the_same_fields() {
    let daemon = exercise("log_format = 'json'");
    let audit: Vec<serde_json::Value> =
        lines_with(&daemon, &["ldmd::audit", "\"event\":\"write\""], 2)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
    let alice = audit
        .iter()
        .find(|v| v["user"] == "alice")
        .expect("alice's write");
    assert_eq!(alice["target"], "ldmd::audit");
    assert_eq!(alice["action"], "add-domain");
    assert_eq!(alice["domain"], "audited1");
    assert_eq!(alice["outcome"], "success");
    assert!(alice["latency_ms"].as_f64().is_some(), "{alice}");
    let bob = audit
        .iter()
        .find(|v| v["user"] == "bob")
        .expect("bob's write");
    assert_eq!(bob["outcome"], "failure");
    let login = lines_with(
        &daemon,
        &["ldmd::audit", "\"event\":\"login\"", "\"alice\""],
        1,
    );
    let login: serde_json::Value = serde_json::from_str(&login[0]).unwrap();
    assert_eq!(login["outcome"], "success");
    let refusal = lines_with(&daemon, &["ldmd::audit", "\"event\":\"refusal\""], 1);
    let refusal: serde_json::Value = serde_json::from_str(&refusal[0]).unwrap();
    assert_eq!(refusal["condition"], "resource-constraint");
    // Every line on stderr is JSON, not only the audit's.
    let log = daemon.stderr_so_far.lock().unwrap().clone();
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}

#[test]
fn audit_false_turns_the_trail_off() {
    let daemon = exercise("audit = false");
    // The local listing was answered after every other step: anything would be logged by now.
    let log = daemon.stderr_so_far.lock().unwrap().clone();
    assert!(!log.contains("ldmd::audit"), "{log}");
}

#[test]
fn a_hostile_user_name_cannot_forge_or_split_an_audit_line() {
    use base64::Engine as _;
    let daemon = Daemon::start_with_users(REMOTE, USERS);
    let mut client = daemon.tcp();
    client.secure();
    // A user name that, written raw, would end the line and forge a successful write.
    let forged = "x\n2026-12-07T00:00:00Z  INFO ldmd::audit: write event=\"write\" user=\"root\"";
    let message = base64::engine::general_purpose::STANDARD.encode(format!("\0{forged}\0pw"));
    client.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{message}</auth>"
    ));
    assert!(client.read_until("/>").contains("not-authorized"));
    let failed = lines_with(&daemon, &["ldmd::audit", "outcome=\"failure\""], 1);
    // The name stays inside its quoted field, its newline escaped: one line, no forged write.
    assert!(failed[0].contains("user=\"x\\n2026"), "{}", failed[0]);
    let log = daemon.stderr_so_far.lock().unwrap().clone();
    assert!(!log.contains("user=\"root\""), "a forged field:\n{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("2026-12-07T00:00:00Z")),
        "a forged line:\n{log}"
    );
}
