//! The migration fault matrix (issue 11): a real SIGKILL of either daemon right after each
//! durable commit and each send of the protocol, the link cut or silently blackholed in one
//! direction at each phase, and random double kills from a printed seed. After each case, once
//! both daemons run and the link is healed:
//!
//! - exactly one side owns the domain, and no migration record is left on either;
//! - on commit the identity is intact (UUID, MACs, hostid, vdisks, vnets, variables, memory
//!   size and real addresses, vCPUs) and the domain is in the state it had;
//! - nothing leaked on either side, and still nothing after both restart;
//! - the requester got success only if the target committed, a plain failure only if it did
//!   not, and otherwise the in-doubt failure (or nothing, when the source died under it).
//!
//! Replay one random case with `LDMD_FAULT_SEED=<seed> cargo test --features fault-points
//! --test migration_faults random`.
#![cfg(feature = "fault-points")]

mod support;

#[path = "e2e_migration/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::*;
use support::proxy::Link;
use support::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Source,
    Target,
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGKILL at `point` after `skip` passes.
    Kill(Side, &'static str, u32),
    /// When the source pauses at `point`, the link becomes `link` for `hold`, then heals.
    Link(&'static str, Link, Duration),
}

/// The domain's state before, to compare with what each side holds after.
struct Before {
    state: String,
    identity: String,
    real_addresses: Vec<(String, String)>,
    source_free_with: u64,
    source_free_without: u64,
    target_free: u64,
}

fn free_mib(daemon: &Daemon) -> u64 {
    free_memory(daemon) >> 20
}

fn env_of(faults: &[Fault], side: Side) -> String {
    faults
        .iter()
        .filter_map(|f| match f {
            Fault::Kill(s, point, skip) if *s == side => Some(format!("{point}=kill@{skip}")),
            Fault::Link(point, ..) if side == Side::Source => Some(format!("{point}=pause*1")),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Runs one case: `state` is the domain's state on the source (bound or active).
fn run(state: &str, faults: &[Fault]) {
    let source_env = env_of(faults, Side::Source);
    let target_env = env_of(faults, Side::Target);
    let mut hosts = Hosts::start_with(&Setup {
        source_env: &[("LDMD_FAULTS", source_env.as_str())],
        target_env: &[("LDMD_FAULTS", target_env.as_str())],
        ..Setup::default()
    });
    let source_free_without = free_mib(&hosts.source);
    guest(&hosts, "ldg1", state);
    let before = Before {
        state: field(&listed(&hosts.source, "ldg1").unwrap(), "state"),
        identity: identity(&hosts.source, "ldg1"),
        real_addresses: real_addresses(&hosts.source, "ldg1"),
        source_free_with: free_mib(&hosts.source),
        source_free_without,
        target_free: free_mib(&hosts.target),
    };
    let document = migrate_document("ldg1", "ldg1", &hosts.target_address(), USER, PASSWORD, &[]);
    let mut client = hosts.source.unix();
    client.secure();
    let requester = std::thread::spawn(move || client.try_request(&document).ok());
    let deadline = Instant::now() + SETTLE;
    // Kills: wait for each faulted daemon to die, then start it again without faults.
    for fault in faults {
        match *fault {
            Fault::Kill(side, point, _) => {
                let daemon = match side {
                    Side::Source => &mut hosts.source,
                    Side::Target => &mut hosts.target,
                };
                while !daemon.has_exited() {
                    assert!(
                        Instant::now() < deadline,
                        "the fault point {point} was never reached"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            Fault::Link(point, link, hold) => {
                assert!(
                    hosts
                        .source
                        .wait_for_stderr(&format!("fault point {point}: pausing"), SETTLE),
                    "the fault point {point} was never reached"
                );
                hosts.link(link);
                std::thread::sleep(hold);
                hosts.proxy.heal();
            }
        }
    }
    for fault in faults {
        if let Fault::Kill(side, ..) = fault {
            match side {
                Side::Source if hosts.source.has_exited() => hosts.restart_source(),
                Side::Target if hosts.target.has_exited() => hosts.restart_target(),
                _ => {}
            }
        }
    }
    let reply = requester.join().unwrap();
    hosts.settled();
    let owner = check(&hosts, &before, reply.as_deref());
    // A restart of both finds the same: nothing held twice, nothing leaked.
    hosts.restart_source();
    hosts.restart_target();
    hosts.settled();
    assert_eq!(
        check(&hosts, &before, None),
        owner,
        "a restart changed the owner"
    );
}

/// The invariants of the module documentation; returns the side that owns the domain.
#[track_caller]
fn check(hosts: &Hosts, before: &Before, reply: Option<&str>) -> Side {
    let here = listed(&hosts.source, "ldg1");
    let there = listed(&hosts.target, "ldg1");
    let owner = match (&here, &there) {
        (Some(line), None) => {
            assert!(!field(line, "flags").contains("source"), "{line}");
            assert_eq!(field(line, "state"), before.state);
            assert_eq!(identity(&hosts.source, "ldg1"), before.identity);
            assert_eq!(
                free_mib(&hosts.source),
                before.source_free_with,
                "source leaked"
            );
            assert_eq!(free_mib(&hosts.target), before.target_free, "target leaked");
            Side::Source
        }
        (None, Some(line)) => {
            assert!(!field(line, "flags").contains("target"), "{line}");
            assert_eq!(field(line, "state"), before.state);
            assert_eq!(identity(&hosts.target, "ldg1"), before.identity);
            assert_eq!(real_addresses(&hosts.target, "ldg1"), before.real_addresses);
            assert_eq!(
                free_mib(&hosts.source),
                before.source_free_without,
                "source leaked"
            );
            let held = before.source_free_without - before.source_free_with;
            assert_eq!(
                free_mib(&hosts.target),
                before.target_free - held,
                "target leaked"
            );
            Side::Target
        }
        (Some(_), Some(_)) => panic!("the domain is on both sides"),
        (None, None) => panic!("the domain is on neither side"),
    };
    if let Some(reply) = reply {
        let (status, message) = document_status(reply);
        let message = message.unwrap_or_default();
        match (status.as_str(), owner) {
            ("success", Side::Target) => {}
            ("failure", _) if message.contains("is in doubt") => {}
            ("failure", Side::Source) => {}
            _ => panic!("the requester was told {status} ({message}) but the owner is {owner:?}"),
        }
    }
    owner
}

const HOLD: Duration = Duration::from_secs(3);

#[test]
fn source_killed_after_each_commit_and_send() {
    for point in [
        "migration.source.forgotten",
        "migration.source.preparing",
        "migration.source.sent_reserve",
        "migration.source.reserved",
        "migration.source.prepared",
        "migration.source.sent_commit",
        "migration.source.done",
        "migration.source.sent_forget",
    ] {
        println!("case: source killed at {point}");
        run("bound", &[Fault::Kill(Side::Source, point, 0)]);
    }
    println!("case: source killed after the first chunk");
    run(
        "active",
        &[Fault::Kill(
            Side::Source,
            "migration.source.sent_transfer",
            0,
        )],
    );
}

#[test]
fn target_killed_after_each_commit_and_answer() {
    for (point, skip) in [
        ("migration.target.reserved", 0),
        // A bound domain's answers: reserve, commit, then forget.
        ("migration.target.answered", 0),
        ("migration.target.committed", 0),
        ("migration.target.answered", 1),
        ("migration.target.forgotten", 0),
        ("migration.target.answered", 2),
    ] {
        println!("case: target killed at {point}@{skip}");
        run("bound", &[Fault::Kill(Side::Target, point, skip)]);
    }
}

#[test]
fn the_link_cut_or_blackholed_at_each_phase() {
    for (point, link) in [
        ("migration.source.sent_reserve", Link::Cut),
        ("migration.source.sent_reserve", Link::BlackholeToTarget),
        ("migration.source.prepared", Link::Cut),
        ("migration.source.prepared", Link::BlackholeToTarget),
        ("migration.source.prepared", Link::BlackholeToSource),
        ("migration.source.done", Link::Cut),
        ("migration.source.done", Link::BlackholeToSource),
    ] {
        println!("case: {link:?} at {point}");
        run("bound", &[Fault::Link(point, link, HOLD)]);
    }
}

/// Every point a random case may kill at, with the side it is on.
const POINTS: &[(Side, &str)] = &[
    (Side::Source, "migration.source.preparing"),
    (Side::Source, "migration.source.sent_reserve"),
    (Side::Source, "migration.source.reserved"),
    (Side::Source, "migration.source.prepared"),
    (Side::Source, "migration.source.sent_commit"),
    (Side::Source, "migration.source.done"),
    (Side::Source, "migration.source.sent_forget"),
    (Side::Target, "migration.target.reserved"),
    (Side::Target, "migration.target.committed"),
    (Side::Target, "migration.target.forgotten"),
];

#[test]
fn random_double_kills() {
    let seed: u64 = std::env::var("LDMD_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let cases = if std::env::var("LDMD_FAULT_SEED").is_ok() {
        1
    } else {
        4
    };
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for n in 0..cases {
        let case_seed = next();
        let mut pick = case_seed;
        let mut draw = |len: usize| {
            pick = pick.rotate_left(17).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            (pick % len as u64) as usize
        };
        // One kill on each side, so that both restart mid-protocol; a point the run never
        // reaches (the other kill ended it first) is dropped.
        let sources: Vec<_> = POINTS.iter().filter(|(s, _)| *s == Side::Source).collect();
        let targets: Vec<_> = POINTS.iter().filter(|(s, _)| *s == Side::Target).collect();
        let (_, source_point) = *sources[draw(sources.len())];
        let (_, target_point) = *targets[draw(targets.len())];
        println!(
            "random case {n}: seed {seed}, case seed {case_seed}: source killed at {source_point}, target at {target_point} (replay: LDMD_FAULT_SEED={seed})"
        );
        run_double(source_point, target_point);
    }
}

/// Both daemons armed; whichever points the run reaches kill; both are restarted.
fn run_double(source_point: &'static str, target_point: &'static str) {
    let source_env = format!("{source_point}=kill");
    let target_env = format!("{target_point}=kill");
    let mut hosts = Hosts::start_with(&Setup {
        source_env: &[("LDMD_FAULTS", source_env.as_str())],
        target_env: &[("LDMD_FAULTS", target_env.as_str())],
        ..Setup::default()
    });
    let source_free_without = free_mib(&hosts.source);
    guest(&hosts, "ldg1", "bound");
    let before = Before {
        state: "bound".into(),
        identity: identity(&hosts.source, "ldg1"),
        real_addresses: real_addresses(&hosts.source, "ldg1"),
        source_free_with: free_mib(&hosts.source),
        source_free_without,
        target_free: free_mib(&hosts.target),
    };
    let document = migrate_document("ldg1", "ldg1", &hosts.target_address(), USER, PASSWORD, &[]);
    let mut client = hosts.source.unix();
    client.secure();
    let requester = std::thread::spawn(move || client.try_request(&document).ok());
    // Let the run go as far as it goes: each side dies at its point or lives on.
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline && !(hosts.source.has_exited() && hosts.target.has_exited()) {
        if requester.is_finished() && !hosts.source.has_exited() && !hosts.target.has_exited() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Both start again (killed or not: a restart of a live one is a third crash).
    hosts.restart_source();
    hosts.restart_target();
    let reply = requester.join().unwrap();
    hosts.settled();
    let owner = check(&hosts, &before, reply.as_deref());
    hosts.restart_source();
    hosts.restart_target();
    hosts.settled();
    assert_eq!(check(&hosts, &before, None), owner);
}
