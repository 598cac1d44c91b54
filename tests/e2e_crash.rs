//! Crash safety end to end: every change ldmd acknowledged survives `kill -9` at any moment.
//!
//! Rounds on one state directory, so that state accumulates: start ldmd, let writer threads
//! send add-domain documents one after another over the Unix socket, SIGKILL the daemon at a
//! random point while they are mid-flight, restart it on the same state, and list the domains.
//! A name counts as acknowledged only when its reply's document status said success; each one
//! must be listed after the restart. A name sent and not yet answered may or may not be.
//!
//! The kill points come from a seed printed at the start (`LDMD_CRASH_SEED=<n>` replays it):
//! the daemon's own timing still varies, but the kill lands at the same offset.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use support::*;

/// Rounds in the crash test: kills, each followed by a restart and a check.
const ROUNDS: u64 = 4;
/// Writer threads, each with its own session.
const WRITERS: usize = 4;
/// The kill comes this long after the writers start, drawn from this range.
const KILL_AFTER_MS_MIN: u64 = 150;
const KILL_AFTER_MS_MAX: u64 = 1500;
/// Documents one writer sends in a round at most (the kill normally ends it long before).
const WRITES_PER_ROUND_MAX: u64 = 50_000;

/// Local peers over the Unix socket get their role from the config: root always writes, and
/// whatever uid runs the test is mapped to write as well.
fn config() -> String {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    format!("[local_users]\n{uid} = 'write'")
}

/// What one writer saw before the kill.
#[derive(Default)]
struct Writes {
    /// Every name whose document went out, in order.
    sent: Vec<String>,
    /// Names whose reply said success.
    acknowledged: Vec<String>,
    /// Names whose reply said failure, and the first reason given.
    refused: Vec<String>,
    first_refusal: Option<String>,
}

/// Sends add-domain `crash-<round>-<writer>-<n>` for n = 0, 1, ... until the connection ends.
fn writer(mut client: Client, round: u64, writer: usize) -> Writes {
    let mut writes = Writes::default();
    for n in 0..WRITES_PER_ROUND_MAX {
        let name = format!("crash-{round}-{writer}-{n}");
        writes.sent.push(name.clone());
        let Ok(reply) = client.try_request(&add_domain(&name)) else {
            break;
        };
        match document_status(&reply) {
            (status, _) if status == "success" => writes.acknowledged.push(name),
            (_, message) => {
                writes.first_refusal.get_or_insert(format!(
                    "{name}: {}",
                    message.as_deref().unwrap_or("(no resp_msg)")
                ));
                writes.refused.push(name);
            }
        }
    }
    writes
}

/// Starts the writers on `daemon`, SIGKILLs it `kill_after` later, and waits for every writer
/// to notice; returns the state directory and what they saw.
fn write_until_killed(
    daemon: Daemon,
    round: u64,
    kill_after: Duration,
) -> (tempfile::TempDir, Vec<Writes>) {
    // Sessions are secured before the clock starts, so the kill lands among the writes.
    let clients: Vec<Client> = (0..WRITERS)
        .map(|_| {
            let mut client = daemon.unix();
            client.secure();
            client
        })
        .collect();
    let threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(index, client)| std::thread::spawn(move || writer(client, round, index)))
        .collect();
    std::thread::sleep(kill_after);
    let dir = daemon.crash();
    let writes = threads
        .into_iter()
        .map(|thread| thread.join().expect("writer thread"))
        .collect();
    (dir, writes)
}

/// Every domain name a list-domain reply names.
fn listed(daemon: &Daemon) -> BTreeSet<String> {
    let mut client = daemon.unix();
    client.secure();
    let reply = client.request(list_domain());
    let (status, message) = document_status(&reply);
    assert_eq!(status, "success", "list-domain failed: {message:?}");
    content_ids(&reply).into_iter().collect()
}

/// splitmix64: one well-mixed number from a seed.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed for this run: `LDMD_CRASH_SEED`, or the clock.
fn base_seed() -> u64 {
    std::env::var("LDMD_CRASH_SEED")
        .ok()
        .map(|s| s.parse().expect("LDMD_CRASH_SEED is a number"))
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// Where round `round` kills, from the run's seed: a different point each round.
fn kill_point(base: u64, round: u64) -> Duration {
    let span = KILL_AFTER_MS_MAX - KILL_AFTER_MS_MIN + 1;
    Duration::from_millis(KILL_AFTER_MS_MIN + mix(base.wrapping_add(round)) % span)
}

#[test]
fn acknowledged_writes_survive_kill_9_at_random_points() {
    // Durability: an acknowledged add-domain is in the state after a SIGKILL at any moment,
    // round after round on the same state; a refused one left nothing; the state is live.
    let started = Instant::now();
    let base = base_seed();
    println!("crash test: LDMD_CRASH_SEED={base}");
    let mut sent = BTreeSet::new();
    let mut acknowledged = BTreeSet::new();
    let mut refused = BTreeSet::new();
    let mut daemon = Daemon::start_in(tempfile::tempdir().unwrap(), &config());
    for round in 0..ROUNDS {
        let kill_after = kill_point(base, round);
        println!("round {round}: kill -9 after {} ms", kill_after.as_millis());
        let (dir, writes) = write_until_killed(daemon, round, kill_after);
        let acked_now: usize = writes.iter().map(|w| w.acknowledged.len()).sum();
        let first_refusal = writes.iter().find_map(|w| w.first_refusal.clone());
        println!(
            "round {round}: {} sent, {acked_now} acknowledged, first refusal {first_refusal:?}",
            writes.iter().map(|w| w.sent.len()).sum::<usize>()
        );
        assert!(
            acked_now > 0,
            "round {round} (LDMD_CRASH_SEED={base}): nothing was acknowledged before the kill, \
             so the round proves nothing; first refusal: {first_refusal:?}"
        );
        for w in writes {
            sent.extend(w.sent);
            acknowledged.extend(w.acknowledged);
            refused.extend(w.refused);
        }
        daemon = Daemon::start_in(dir, &config());
        let domains = listed(&daemon);
        assert!(domains.contains("primary"), "{domains:?}");
        let lost: Vec<_> = acknowledged.difference(&domains).collect();
        assert!(
            lost.is_empty(),
            "round {round} (LDMD_CRASH_SEED={base}): {} acknowledged domains are gone after \
             kill -9, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        let phantom: Vec<_> = domains
            .iter()
            .filter(|d| d.starts_with("crash-") && (!sent.contains(*d) || refused.contains(*d)))
            .collect();
        assert!(
            phantom.is_empty(),
            "round {round} (LDMD_CRASH_SEED={base}): listed but never sent, or refused: {phantom:?}"
        );
    }
    // The restarted state is live, not just listed: adding an acknowledged name again fails.
    let name = acknowledged.first().unwrap();
    let mut client = daemon.unix();
    client.secure();
    let reply = client.request(&add_domain(name));
    let (status, message) = document_status(&reply);
    assert_eq!(status, "failure", "{name} added twice: {reply}");
    assert!(message.is_some(), "a refusal names its reason: {reply}");
    println!(
        "crash test: {} acknowledged names survived {ROUNDS} kills in {:.1} s",
        acknowledged.len(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn kill_9_mid_flight_ends_every_writer_and_restarts_on_the_same_state() {
    // The crash test's machinery, on today's daemon (which refuses every write): writers get
    // replies until SIGKILL, each then ends on the closed connection instead of hanging, and
    // a daemon restarted on the state directory keeps its certificate and answers.
    let daemon = Daemon::start_in(tempfile::tempdir().unwrap(), &config());
    let fingerprint = daemon.fingerprint.clone();
    let (dir, writes) = write_until_killed(daemon, 0, Duration::from_millis(300));
    assert_eq!(writes.len(), WRITERS);
    for (index, w) in writes.iter().enumerate() {
        let answered = w.acknowledged.len() + w.refused.len();
        assert!(answered > 0, "writer {index} got no reply before the kill");
        assert!(
            (w.sent.len() as u64) < WRITES_PER_ROUND_MAX,
            "writer {index} ran out of names instead of being cut off"
        );
        // One document at most was in flight when the connection ended.
        assert!(w.sent.len() - answered <= 1, "writer {index}");
    }
    let daemon = Daemon::start_in(dir, &config());
    assert_eq!(daemon.fingerprint, fingerprint);
    let mut client = daemon.unix();
    client.secure();
    let (status, _) = document_status(&client.request(list_domain()));
    assert!(status == "success" || status == "failure", "{status}");
}
