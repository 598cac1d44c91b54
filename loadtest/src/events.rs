//! `ldm-load events`: subscriber sessions registered with `reg-all-events` (spec §5), and writer
//! clients running the write cycle (add-domain, set-vcpu, set-memory, remove-domain) on domains
//! of their own. Each successful write publishes one event, which every subscriber must read.
//!
//! An event's delivery latency runs from the moment its writer *sent* the request that caused
//! it to the moment a subscriber has read the whole event: the server's commit, fan-out and
//! write, seen from outside. (From the writer's reply instead would leave the commit out, and
//! the reply and the event leave the server together.) Events are matched to writes by action
//! and domain name, which are unique within a run. At the end the subscribers get a little time
//! to read the last events; a write whose event a subscriber never read is missed, and an event
//! no write explains (or read twice) is extra.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use tokio::sync::watch;

use crate::connect::{Connect, close_sessions, open_sessions};
use crate::driver::{self, Drive, Report};
use crate::latency::{self, Latencies, Row};
use crate::ldm::{self, Action};
use crate::progress;
use crate::session::{Session, SessionError};
use crate::write::Write;

/// The longest the subscribers get, after the writers stop, to read the last events.
const DRAIN_MAX: Duration = Duration::from_secs(5);

/// A subscriber that only listens sends a whitespace keepalive this often (the server's idle
/// timeout would otherwise end its stream).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// The writers: --clients writer sessions, paced and bounded as in `write`.
    #[command(flatten)]
    pub drive: Drive,
    /// Subscriber sessions, each registered for every event.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub subscribers: u32,
}

/// The writes in flight, and what the subscribers read of them.
pub struct Hub {
    subscribers: usize,
    /// Writes sent whose event not every subscriber has read yet, by `action domain`.
    pending: Mutex<HashMap<String, Pending>>,
    /// Delivery latency per event action (the write cycle's names).
    deliveries: Mutex<Latencies>,
    delivered: AtomicU64,
    extra: AtomicU64,
}

struct Pending {
    sent: Instant,
    /// Sent in the measured window (warm-up events are counted, not timed).
    measured: bool,
    /// One bit per subscriber that has read the event.
    seen: Vec<u64>,
    unseen: usize,
}

impl Hub {
    pub fn new(subscribers: usize) -> Hub {
        Hub {
            subscribers,
            pending: Mutex::new(HashMap::new()),
            deliveries: Mutex::new(Latencies::new(Action::CYCLE_NAMES)),
            delivered: AtomicU64::new(0),
            extra: AtomicU64::new(0),
        }
    }

    /// A writer is sending `action` on `domain` now (before the send, so that no subscriber
    /// can read the event first).
    pub fn expect(&self, action: &str, domain: &str, sent: Instant, measured: bool) {
        if self.subscribers == 0 {
            return;
        }
        let pending = Pending {
            sent,
            measured,
            seen: vec![0; self.subscribers.div_ceil(64)],
            unseen: self.subscribers,
        };
        self.lock().insert(key(action, domain), pending);
    }

    /// The write failed: it publishes nothing.
    pub fn cancel(&self, action: &str, domain: &str) {
        self.lock().remove(&key(action, domain));
    }

    /// Subscriber `subscriber` has read an event about `action` on `domain` at `at`.
    fn delivered(&self, subscriber: usize, action: &str, domain: &str, at: Instant) {
        let mut pending = self.lock();
        let key = key(action, domain);
        let Some(write) = pending.get_mut(&key) else {
            self.extra.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let (word, bit) = (subscriber / 64, 1u64 << (subscriber % 64));
        if write.seen[word] & bit != 0 {
            self.extra.fetch_add(1, Ordering::Relaxed);
            return;
        }
        write.seen[word] |= bit;
        write.unseen -= 1;
        self.delivered.fetch_add(1, Ordering::Relaxed);
        if write.measured
            && let Some(operation) = Action::CYCLE_NAMES.iter().position(|&n| n == action)
        {
            let latency = at.saturating_duration_since(write.sent);
            self.deliveries
                .lock()
                .expect("delivery lock")
                .record(operation, latency, true);
        }
        if write.unseen == 0 {
            pending.remove(&key);
        }
    }

    /// Events still owed to subscribers.
    fn outstanding(&self) -> u64 {
        self.lock().values().map(|p| p.unseen as u64).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().expect("hub lock")
    }
}

fn key(action: &str, domain: &str) -> String {
    format!("{action} {domain}")
}

/// The writers' report, and the events.
#[derive(Debug, Serialize)]
pub struct EventsReport {
    #[serde(flatten)]
    pub run: Report,
    pub subscribers: usize,
    /// Subscribers that did not open, register, or last to the end.
    pub subscriber_errors: usize,
    pub first_subscriber_error: Option<String>,
    /// Successful writes times the subscribers registered.
    pub events_expected: u64,
    pub events_delivered: u64,
    pub events_missed: u64,
    pub events_extra: u64,
    /// Delivery latency per event action, then `total` (writes of the measured window only).
    pub events: Vec<Row>,
}

impl EventsReport {
    fn judge(&mut self) {
        self.run.judge();
        if self.subscriber_errors > 0 {
            self.run.problems.push(format!(
                "{} subscribers failed (first: {})",
                self.subscriber_errors,
                self.first_subscriber_error.as_deref().unwrap_or("?")
            ));
        }
        if self.events_missed > 0 || self.events_extra > 0 {
            self.run.problems.push(format!(
                "{} events missed and {} extra, of {} expected",
                self.events_missed, self.events_extra, self.events_expected
            ));
        }
    }

    fn print(&self) {
        self.run.print_summary();
        println!(
            "events          {} subscribers: {} delivered of {} expected, {} missed, {} extra",
            self.subscribers,
            self.events_delivered,
            self.events_expected,
            self.events_missed,
            self.events_extra
        );
        println!();
        println!("writes (latency to the reply)");
        latency::print_table(&self.run.operations);
        println!();
        println!("event delivery (latency from the write's send to the subscriber's read)");
        latency::print_table(&self.events);
        self.run.print_verdict();
    }
}

pub async fn events(args: EventsArgs) -> i32 {
    match run(&args).await {
        Ok(mut report) => {
            report.judge();
            report.print();
            crate::write_json(args.drive.json.as_deref(), &report);
            report.run.exit_code()
        }
        Err(e) => {
            eprintln!("ldm-load: {e}");
            2
        }
    }
}

/// Subscribes, runs the writers, lets the last events arrive, and reports.
pub async fn run(args: &EventsArgs) -> Result<EventsReport, String> {
    let base = args.connect.target()?;
    let (writers, subscribers) = (args.drive.clients as usize, args.subscribers as usize);
    let sources = args.connect.sources(writers + subscribers);
    let mut errors = Vec::new();
    let bar = progress::bar(subscribers as u64, "subscribe");
    let gate = Arc::new(tokio::sync::Semaphore::new(args.drive.concurrency as usize));
    // Numbered after the writers, so that their source addresses follow on.
    let opened = open_sessions(&base, sources, writers..writers + subscribers, &gate, &bar).await;
    bar.finish_and_clear();
    let mut registered = Vec::with_capacity(subscribers);
    for result in opened {
        match tokio::time::timeout(base.timeout, register(result)).await {
            Ok(Ok(session)) => registered.push(session),
            Ok(Err(e)) => errors.push(format!("subscriber: {e}")),
            Err(_) => errors.push("subscriber: no answer to reg-all-events in time".into()),
        }
    }
    let hub = Arc::new(Hub::new(registered.len()));
    let (stop, stopped) = watch::channel(false);
    let listeners: Vec<_> = registered
        .into_iter()
        .enumerate()
        .map(|(index, session)| tokio::spawn(listen(index, session, hub.clone(), stopped.clone())))
        .collect();
    let workload = Write {
        hub: Some(hub.clone()),
    };
    let run = driver::run(Arc::new(workload), &args.connect, &args.drive, sources).await?;
    let drain_until = Instant::now() + DRAIN_MAX.min(base.timeout);
    while hub.outstanding() > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(true);
    let mut sessions = Vec::with_capacity(listeners.len());
    for listener in listeners {
        match listener.await.expect("subscriber task") {
            Ok(session) => sessions.push(session),
            Err(e) => errors.push(format!("subscriber: {e}")),
        }
    }
    close_sessions(sessions).await;
    let delivered = hub.delivered.load(Ordering::Relaxed);
    let missed = hub.outstanding();
    let seconds = Duration::from_secs_f64(run.seconds);
    let events = hub.deliveries.lock().expect("delivery lock").rows(seconds);
    Ok(EventsReport {
        run,
        subscribers,
        subscriber_errors: errors.len(),
        first_subscriber_error: errors.into_iter().next(),
        events_expected: delivered + missed,
        events_delivered: delivered,
        events_missed: missed,
        events_extra: hub.extra.load(Ordering::Relaxed),
        events,
    })
}

/// Registers an open session for every event.
async fn register(opened: Result<Session, SessionError>) -> Result<Session, SessionError> {
    let mut session = opened?;
    let reply = session
        .request(Action::RegAllEvents.document(None).as_bytes())
        .await?;
    let outcome = ldm::outcome(&reply);
    if !outcome.success {
        let reason = outcome.message.unwrap_or_default();
        return Err(SessionError(format!("reg-all-events refused: {reason}")));
    }
    Ok(session)
}

/// One subscriber: reads events until told to stop, then hands its session back.
async fn listen(
    index: usize,
    mut session: Session,
    hub: Arc<Hub>,
    mut stop: watch::Receiver<bool>,
) -> Result<Session, SessionError> {
    let mut keepalive = tokio::time::interval_at(
        tokio::time::Instant::now() + KEEPALIVE_INTERVAL,
        KEEPALIVE_INTERVAL,
    );
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return Ok(session),
            event = session.next_event() => {
                let at = Instant::now();
                let event = event?;
                match ldm::event(&event) {
                    Some((action, domain)) => hub.delivered(index, action, domain, at),
                    None => {
                        hub.extra.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ = keepalive.tick() => session.keepalive().await?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::Scenario;
    use crate::testing::{Answers, Ldmd, block_on, scenario};

    fn run_events(ldmd: &Ldmd, flags: &[&str]) -> EventsReport {
        let Scenario::Events(args) = scenario(ldmd, "events", flags) else {
            panic!("not events")
        };
        let mut report = block_on(run(&args)).unwrap();
        report.judge();
        report
    }

    #[test]
    fn every_subscriber_reads_one_event_per_write() {
        // Two writers, 16 writes, three subscribers: 48 events, each matched to its write.
        let ldmd = Ldmd::start(Answers::Registry);
        let report = run_events(
            &ldmd,
            &["--clients", "2", "--subscribers", "3", "--count", "16"],
        );
        assert_eq!(report.run.exit_code(), 0, "{:?}", report.run.problems);
        assert_eq!(report.run.operations[4].count, 16);
        assert_eq!(report.run.failures, 0);
        assert_eq!(
            (
                report.events_expected,
                report.events_delivered,
                report.events_missed,
                report.events_extra
            ),
            (48, 48, 0, 0)
        );
        let rows: Vec<_> = report
            .events
            .iter()
            .map(|r| (r.operation, r.count))
            .collect();
        assert_eq!(
            rows,
            [
                ("add-domain", 12),
                ("set-vcpu", 12),
                ("set-memory", 12),
                ("remove-domain", 12),
                ("total", 48)
            ]
        );
        assert!(report.events[4].p50_ms > 0.0);
        assert_eq!(ldmd.domains(), ["primary"]);
    }

    #[test]
    fn hub_counts_missed_extra_and_repeated_events() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_millis(3);
        let hub = Hub::new(2);
        hub.expect("add-domain", "load-0-0", t0, true);
        hub.expect("set-vcpu", "load-0-0", t0, true);
        hub.expect("set-memory", "load-0-0", t0, true);
        hub.cancel("set-memory", "load-0-0"); // failed: no event owed
        hub.delivered(0, "add-domain", "load-0-0", later);
        hub.delivered(1, "add-domain", "load-0-0", later);
        hub.delivered(1, "set-vcpu", "load-0-0", later);
        hub.delivered(1, "set-vcpu", "load-0-0", later); // twice to one subscriber
        hub.delivered(0, "remove-domain", "load-9-9", later); // no such write
        assert_eq!(hub.delivered.load(Ordering::Relaxed), 3);
        assert_eq!(hub.extra.load(Ordering::Relaxed), 2);
        assert_eq!(hub.outstanding(), 1, "subscriber 0 never read set-vcpu");
        let rows = hub.deliveries.lock().unwrap().rows(Duration::from_secs(1));
        assert_eq!((rows[0].count, rows[1].count, rows[4].count), (2, 1, 3));
        assert!((rows[4].max_ms - 3.0).abs() < 0.01, "{}", rows[4].max_ms);
    }
}
