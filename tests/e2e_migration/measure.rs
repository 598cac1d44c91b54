//! Migration time against domain size, with two daemons here (README, Migration). Not a test
//! of speed: it prints what it measured, next to this machine's own floor (a raw fdatasync),
//! and asserts only that each migration succeeded. Run it with
//!
//! ```text
//! cargo test --release --test e2e_migration -- --ignored --nocapture migration_time
//! ```

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::support::*;

/// Median, lowest and highest, in seconds.
fn summary(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    (
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
    )
}

/// One 4 KiB write and fdatasync in `dir`, `n` times: the floor of every durable commit here.
fn raw_fdatasync(dir: &std::path::Path, n: usize) -> Vec<f64> {
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    let block = [7u8; 4096];
    let samples = (0..n)
        .map(|_| {
            let started = Instant::now();
            file.write_all(&block).unwrap();
            file.sync_data().unwrap();
            started.elapsed().as_secs_f64()
        })
        .collect();
    std::fs::remove_file(path).unwrap();
    samples
}

/// A guest of `memory` in `state` on the source (no vdisk: sizes differ only in memory).
fn sized_guest(hosts: &Hosts, name: &str, memory: &str, state: &str) {
    let source = &hosts.source;
    ok(source, &["add-domain", name]);
    ok(source, &["add-vcpu", "8", name]);
    ok(source, &["add-memory", memory, name]);
    ok(source, &["add-vnet", "net0", "primary-vsw0", name]);
    if state != "inactive" {
        ok(source, &["bind-domain", name]);
    }
    if state == "active" {
        ok(source, &["start-domain", name]);
    }
}

/// Migrates `name` and removes it from the target again; the requester's wait, in seconds.
fn timed_migration(hosts: &Hosts, name: &str, state: &str) -> f64 {
    let started = Instant::now();
    let reply = hosts.migrate(name, name, &[]);
    let took = started.elapsed().as_secs_f64();
    assert_eq!(document_status(&reply).0, "success", "{reply}");
    let target = &hosts.target;
    if state == "active" {
        ok(target, &["stop-domain", name]);
    }
    if state != "inactive" {
        ok(target, &["unbind-domain", name]);
    }
    ok(target, &["remove-domain", name]);
    took
}

#[test]
#[ignore = "a measurement: run it by hand (see the module documentation)"]
fn migration_time_against_domain_size() {
    let floor = summary(raw_fdatasync(&std::env::temp_dir(), 200));
    println!(
        "raw fdatasync of 4 KiB in {}: median {:.2} ms (range {:.2}–{:.2})",
        std::env::temp_dir().display(),
        floor.0 * 1e3,
        floor.1 * 1e3,
        floor.2 * 1e3
    );
    println!("| pace (s/GiB) | domain | runs | median | range | median / fdatasync |");
    println!("|---|---|---|---|---|---|");
    let cases: &[(f64, &str, &str, usize)] = &[
        (0.0, "inactive", "4G", 10),
        (0.0, "bound", "4G", 10),
        (0.0, "active", "1G", 10),
        (0.0, "active", "16G", 10),
        (0.0, "active", "64G", 5),
        (0.0, "active", "256G", 5),
        (0.5, "active", "1G", 5),
        (0.5, "active", "4G", 3),
        // The requester's client waits 10 s at most: 8G is 4 s of modelled transfer.
        (0.5, "active", "8G", 3),
    ];
    let mut pairs: Vec<(f64, Hosts)> = Vec::new();
    for &(pace, state, memory, runs) in cases {
        if !pairs.iter().any(|(p, _)| *p == pace) {
            let hosts = Hosts::paced(pace);
            pairs.push((pace, hosts));
        }
        let hosts = &pairs.iter().find(|(p, _)| *p == pace).unwrap().1;
        let samples: Vec<f64> = (0..runs)
            .map(|n| {
                let name = format!("m{n}");
                sized_guest(hosts, &name, memory, state);
                timed_migration(hosts, &name, state)
            })
            .collect();
        let (median, low, high) = summary(samples);
        println!(
            "| {pace} | {state} {memory} | {runs} | {:.1} ms | {:.1}–{:.1} ms | {:.0}× |",
            median * 1e3,
            low * 1e3,
            high * 1e3,
            median / floor.0
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for (_, hosts) in &pairs {
        hosts.settled();
    }
}
