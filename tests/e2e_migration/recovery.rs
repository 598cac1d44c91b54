//! In doubt, and out of it: a cancel after the handoff asks the target, a target gone for good
//! is overridden by force, and with the shipped timers an in-doubt migration settles by itself
//! within 30 s of the link healing. The handoff is caught with the source's fault point
//! `migration.source.prepared` (a pause), so these need `--features fault-points`.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::support::proxy::Link;
use crate::support::*;

const PAUSE_AT_PREPARED: (&str, &str) = ("LDMD_FAULTS", "migration.source.prepared=pause*1");

/// A pair whose source pauses once right after it commits `Prepared`.
fn pausing(default_timers: bool) -> Hosts {
    Hosts::start_with(&Setup {
        source_env: &[PAUSE_AT_PREPARED],
        default_timers,
        ..Setup::default()
    })
}

/// Starts migrating ldg1 (bound) and returns once the source has committed `Prepared` and
/// pauses; the thread returns the requester's reply.
fn begin(hosts: &Hosts) -> std::thread::JoinHandle<String> {
    guest(hosts, "ldg1", "bound");
    let requester = {
        let document =
            migrate_document("ldg1", "ldg1", &hosts.target_address(), USER, PASSWORD, &[]);
        // Raw, for a reply that may wait for commit_timeout (10 s by default) and the pause.
        // (the timeout is the socket's: set through a clone, after `over` set its own).
        let stream = std::os::unix::net::UnixStream::connect(&hosts.source.socket).unwrap();
        let same_socket = stream.try_clone().unwrap();
        let mut client = Client::over(stream, client_tls(&hosts.source.state_dir()));
        same_socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        client.secure();
        std::thread::spawn(move || client.request(&document))
    };
    assert!(
        hosts
            .source
            .wait_for_stderr("fault point migration.source.prepared: pausing", SETTLE),
        "the handoff never began"
    );
    requester
}

/// The requester's reply is the in-doubt failure, and the source shows it.
fn expect_in_doubt(hosts: &Hosts, requester: std::thread::JoinHandle<String>) {
    let reply = requester.join().unwrap();
    let (status, message) = document_status(&reply);
    let message = message.unwrap_or_default();
    let peer = hosts.target_address();
    assert_eq!(status, "failure", "{reply}");
    assert!(
        message.starts_with(&format!("Migration of ldg1 to {peer} is in doubt: "))
            && message.contains(&format!("ldmd keeps asking {peer} and will settle it")),
        "{message}"
    );
    let line = listed(&hosts.source, "ldg1").expect("still listed on the source");
    assert!(field(&line, "flags").contains("error"), "{line}");
    assert_eq!(hosts.source.metric("ldmd_migration_in_doubt"), 1.0);
}

/// The link becomes `link` during the handoff: the requester is told it is in doubt.
fn in_doubt_after(hosts: &Hosts, link: Link) {
    let requester = begin(hosts);
    hosts.link(link);
    expect_in_doubt(hosts, requester);
}

/// `ldm cancel-operation migration ldg1` on the source, in a thread: it waits for the target.
fn cancel_in_thread(hosts: &Hosts) -> std::thread::JoinHandle<std::process::Output> {
    let socket = hosts.source.socket.clone();
    std::thread::spawn(move || {
        std::process::Command::new(LDM)
            .arg("--socket")
            .arg(socket)
            .args(["cancel-operation", "migration", "ldg1"])
            .env_remove("LDM_PASSWORD")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
}

#[test]
fn a_cancel_in_doubt_resumes_the_domain_when_the_target_never_committed() {
    let hosts = pausing(false);
    // The commit never reaches the target.
    in_doubt_after(&hosts, Link::BlackholeToTarget);
    let cancel = cancel_in_thread(&hosts);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !cancel.is_finished(),
        "the cancel did not wait for the target's word"
    );
    hosts.proxy.heal();
    let out = cancel.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = listed(&hosts.source, "ldg1").expect("resumed on the source");
    assert_eq!(
        (field(&line, "state"), field(&line, "flags")),
        ("bound".into(), String::new())
    );
    hosts.settled();
    assert_eq!(listed(&hosts.target, "ldg1"), None);
    assert_eq!(
        hosts
            .source
            .metric(r#"ldmd_migration_operations_total{role="source",outcome="cancelled"}"#),
        1.0
    );
}

#[test]
fn a_cancel_in_doubt_is_refused_when_the_target_already_committed() {
    let hosts = pausing(false);
    // The commit arrives; its answer is lost.
    in_doubt_after(&hosts, Link::BlackholeToSource);
    let cancel = cancel_in_thread(&hosts);
    std::thread::sleep(Duration::from_millis(500));
    hosts.proxy.heal();
    let out = cancel.join().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already completed on the target"),
        "{stderr}"
    );
    hosts.settled();
    assert_eq!(listed(&hosts.source, "ldg1"), None);
    // Bound, and no migration flag left.
    assert_eq!(field(&listed(&hosts.target, "ldg1").unwrap(), "flags"), "");
}

#[test]
fn a_target_gone_for_good_is_overridden_by_force_and_only_in_doubt() {
    let mut hosts = pausing(false);
    ok(&hosts.source, &["add-domain", "ldg2"]);
    let stuck = ldm(
        &hosts.source,
        &["cancel-operation", "-f", "migration", "ldg2"],
    );
    assert!(!stuck.status.success());
    assert!(String::from_utf8_lossy(&stuck.stderr).contains("No migration is in progress on ldg2"));
    // The target dies during the handoff, before the commit reaches it, and stays down.
    let requester = begin(&hosts);
    hosts.target.kill();
    expect_in_doubt(&hosts, requester);
    let out = ok(
        &hosts.source,
        &["cancel-operation", "-f", "migration", "ldg1"],
    );
    let peer = hosts.target_address();
    let line = listed(&hosts.source, "ldg1").expect("restored on the source");
    assert_eq!(
        (field(&line, "state"), field(&line, "flags")),
        ("bound".into(), String::new())
    );
    assert!(
        hosts.source.wait_for_stderr(
            &format!("restored here by the operator without the word of {peer}"),
            SETTLE
        ),
        "no warning logged"
    );
    assert!(out.is_empty() || out.contains("restored"), "{out}");
    assert_eq!(
        hosts
            .source
            .metric(r#"ldmd_migration_operations_total{role="source",outcome="forced_recovery"}"#),
        1.0
    );
    assert_eq!(hosts.source.metric("ldmd_migration_in_doubt"), 0.0);
    // The target, back, releases its reservation by its restart rule.
    hosts.restart_target();
    hosts.settled();
    assert_eq!(listed(&hosts.target, "ldg1"), None);
}

#[test]
fn in_doubt_settles_within_30_s_of_the_link_healing_with_the_default_timers() {
    let hosts = pausing(true);
    in_doubt_after(&hosts, Link::BlackholeToSource);
    // Hold the fault a while, as a real outage would, then heal and time the settlement.
    std::thread::sleep(Duration::from_secs(3));
    hosts.proxy.heal();
    let healed = Instant::now();
    hosts.settled();
    let took = healed.elapsed();
    println!("settled {took:?} after the link healed");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert_eq!(listed(&hosts.source, "ldg1"), None);
    // Bound, and no migration flag left.
    assert_eq!(field(&listed(&hosts.target, "ldg1").unwrap(), "flags"), "");
}
