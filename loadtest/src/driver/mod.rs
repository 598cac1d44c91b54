//! The driver every request/reply scenario runs on (`write`, `login`, `ping`, `list`, `mixed`,
//! and the writers of `events`).
//!
//! A scenario is a [`Workload`]: its operation names (the table's rows) and a [`Client`] per
//! connection that does one *step* at a time (a request, a login, a write cycle) through a
//! [`Ctx`], which paces, times out and records each request. The driver opens the sessions,
//! starts the clients (spread over `--ramp-up`), lets each claim steps from the [`Bound`] until
//! the run is over, has each clean up, closes the sessions and builds the [`Report`].
//!
//! ```text
//!  open sessions ──► t0 ── ramp-up: clients start, steps are warm-up ──► window start
//!      ── measured steps ──► deadline or count ──► cleanup (unmeasured) ──► close ──► report
//! ```

pub mod pacing;
mod report;

use crate::cpu;
use crate::durability::{DurabilityArgs, Watch};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::ProgressBar;

use crate::connect::{Connect, Sources, close_sessions, open_sessions};
use crate::latency::Latencies;
use crate::ldm::{self, Outcome};
use crate::progress;
use crate::session::{Session, SessionError};
use pacing::{
    Bound, Claim, Pacing, Schedule, Start, Stop, TIMER_GRAIN, client_start, parse_duration,
    parse_duration_or_zero, parse_rate,
};
pub use report::Report;

/// A client waiting this long for its next intended start sends a whitespace keepalive, so
/// that a slow open loop does not meet the server's idle timeout (ldmd: 15 minutes).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);

/// The flags of every driven scenario.
#[derive(Args, Clone, Debug)]
pub struct Drive {
    /// Clients, each with its own session (login: each opening one session after another).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub clients: u32,
    /// Measure for this long after the ramp-up: 10s, 500ms, 2m (10s unless --count is given).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many measured operations in all, rounded up to whole steps.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Open loop: this many requests a second from all clients together, each request on a
    /// fixed schedule, its latency counted from when it was meant to start.
    #[arg(long, value_parser = parse_rate, value_name = "PER_SECOND")]
    pub rate: Option<f64>,
    /// Start the clients spread evenly over this long; what they do meanwhile is warm-up,
    /// left out of the table and of --count.
    #[arg(long, default_value = "0", value_parser = parse_duration_or_zero)]
    pub ramp_up: Duration,
    /// Sessions being opened at the same time (all are open before the first client starts).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// The server's process id: report its CPU time (user + system, from /proc/PID/stat) over
    /// the measured window, per measured operation.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
}

/// A scenario, as the driver sees it.
pub trait Workload: Send + Sync + 'static {
    type Client: Client;

    /// The scenario's name, for the report.
    fn scenario(&self) -> &'static str;

    /// The operations it measures, in table order; [`Ctx::request`] takes a position in it.
    fn operations(&self) -> &'static [&'static str];

    /// Operations in one step: `--count` counts operations, so it rounds up to whole steps.
    fn step_operations(&self) -> u64 {
        1
    }

    /// Whether each client holds one session for the whole run, opened before the clock
    /// starts (every scenario but `login`, which opens its own).
    fn holds_sessions(&self) -> bool {
        true
    }

    /// Client `index`, with its session when [`Workload::holds_sessions`].
    fn client(&self, index: usize, session: Option<Session>) -> Self::Client;
}

/// One connection's behaviour.
pub trait Client: Send + 'static {
    /// One step; an error means the session is gone and ends this client.
    fn step(&mut self, ctx: &mut Ctx) -> impl Future<Output = Result<(), SessionError>> + Send;

    /// After the last step: put back what the steps left on the server. Its requests go through
    /// `ctx` as usual, unpaced and counted as cleanup, not in the table.
    fn cleanup(&mut self, ctx: &mut Ctx) -> impl Future<Output = Result<(), SessionError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// The session to close, if the client holds one.
    fn into_session(self) -> Option<Session>;
}

/// Where a step stands in the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    WarmUp,
    Measured,
    Cleanup,
}

/// One client's side of the driver: pacing, the phase of its step, and the shared record.
pub struct Ctx {
    index: usize,
    phase: Phase,
    pacing: Pacing,
    shared: Arc<Shared>,
}

impl Ctx {
    /// The client's number, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// How long a reply (or a login) may take before the session counts as lost.
    pub fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// Waits for the next request's start: in the open loop, its intended time, less the
    /// timer's grain (sending keepalives on `session` during a long wait); at once otherwise,
    /// and in the cleanup.
    pub async fn begin(&mut self, mut session: Option<&mut Session>) -> Start {
        let now = Instant::now();
        if self.phase == Phase::Cleanup {
            return Start {
                intended: now,
                sent: now,
            };
        }
        let intended = self.pacing.take(now);
        let wake = intended.checked_sub(TIMER_GRAIN).unwrap_or(intended);
        if now >= wake {
            // No wait (the closed loop, or a client behind its schedule): sent as it was taken.
            return Start {
                intended,
                sent: now,
            };
        }
        loop {
            let now = Instant::now();
            if now >= wake {
                break;
            }
            tokio::time::sleep((wake - now).min(KEEPALIVE_INTERVAL)).await;
            if Instant::now() < wake
                && let Some(session) = session.as_deref_mut()
            {
                // A failed keepalive shows again, and is reported, on the request itself.
                let _ = session.keepalive().await;
            }
        }
        Start {
            intended,
            sent: Instant::now(),
        }
    }

    /// Records operation `operation`, begun at `start` and ended now; `object` names what it
    /// was done to, for the first-failure line.
    pub fn end(&mut self, operation: usize, start: Start, outcome: &Outcome, object: &str) {
        self.shared.record(
            self.phase,
            operation,
            start,
            Instant::now(),
            outcome,
            object,
        );
    }

    /// One LDM request on `session`: paced, sent, its reply read within the timeout, recorded.
    pub async fn request(
        &mut self,
        session: &mut Session,
        operation: usize,
        object: &str,
        document: &str,
    ) -> Result<Outcome, SessionError> {
        self.request_seen(session, operation, object, document, |_, _| {})
            .await
    }

    /// [`Ctx::request`], telling `on_send` when the request goes out and in which phase.
    pub async fn request_seen(
        &mut self,
        session: &mut Session,
        operation: usize,
        object: &str,
        document: &str,
        on_send: impl FnOnce(Start, Phase),
    ) -> Result<Outcome, SessionError> {
        let start = self.begin(Some(session)).await;
        on_send(start, self.phase);
        let name = self.shared.operations[operation];
        let reply = tokio::time::timeout(self.timeout(), session.request(document.as_bytes()))
            .await
            .map_err(|_| {
                SessionError(format!(
                    "client {}: no reply to {name} {object} within {:?}",
                    self.index,
                    self.timeout()
                ))
            })?
            .map_err(|e| SessionError(format!("client {}: {e}", self.index)))?;
        let outcome = ldm::outcome(&reply);
        self.end(operation, start, &outcome, object);
        Ok(outcome)
    }
}

/// What the clients share.
struct Shared {
    operations: &'static [&'static str],
    bound: Bound,
    timeout: Duration,
    /// A std Mutex, not a tokio one: nothing awaits while it is held.
    latencies: Mutex<Latencies>,
    first_failure: OnceLock<String>,
    failures: AtomicU64,
    warm_up: AtomicU64,
    cleanup: AtomicU64,
    late: AtomicU64,
    /// The last measured reply, in nanoseconds after the window's start.
    last_reply_nanos: AtomicU64,
    /// Every client passes it when its steps are over, so that no cleanup (a burst of
    /// unpaced requests) delays another client's last measured ones.
    steps_over: tokio::sync::Barrier,
}

impl Shared {
    fn record(
        &self,
        phase: Phase,
        operation: usize,
        start: Start,
        replied: Instant,
        outcome: &Outcome,
        object: &str,
    ) {
        match phase {
            Phase::Measured => {
                self.latencies.lock().expect("latency lock").record(
                    operation,
                    start.latency(replied),
                    outcome.success,
                );
                if start.late() {
                    self.late.fetch_add(1, Ordering::Relaxed);
                }
                let since = replied.saturating_duration_since(self.bound.window_start());
                let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
                self.last_reply_nanos.fetch_max(nanos, Ordering::Relaxed);
            }
            Phase::WarmUp => {
                self.warm_up.fetch_add(1, Ordering::Relaxed);
            }
            Phase::Cleanup => {
                self.cleanup.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !outcome.success {
            self.failures.fetch_add(1, Ordering::Relaxed);
            if self.first_failure.get().is_none() {
                let message = outcome.message.as_deref().unwrap_or("(no resp_msg)");
                let name = self.operations[operation];
                let _ = self
                    .first_failure
                    .set(format!("{name} {object}: {message}"));
            }
        }
    }
}

/// How a client's run ended.
struct ClientEnd {
    session: Option<Session>,
    error: Option<SessionError>,
    /// The bound that ended its steps (none when its session was lost).
    stop: Option<Stop>,
    missed: u64,
}

/// Runs `workload` as the flags say and prints its report; the exit status.
pub async fn main<W: Workload>(workload: W, connect: &Connect, drive: &Drive) -> i32 {
    main_watched(workload, connect, drive, None).await
}

/// [`main`], with the durability figures of `watched` (its flags, and the scenario's write
/// actions) read around the run.
pub async fn main_watched<W: Workload>(
    workload: W,
    connect: &Connect,
    drive: &Drive,
    watched: Option<(&DurabilityArgs, &'static [&'static str])>,
) -> i32 {
    let sources = connect.sources(drive.clients as usize);
    let watch = match watched {
        Some((args, writes)) if args.metrics_url.is_some() || args.disk_probe.is_some() => {
            Some(Watch::start(args, writes).await)
        }
        _ => None,
    };
    let result = run(Arc::new(workload), connect, drive, sources).await;
    let durability = match watch {
        Some(watch) => Some(watch.finish().await),
        None => None,
    };
    match result {
        Ok(mut report) => {
            report.durability = durability;
            report.judge();
            report.print();
            crate::write_json(drive.json.as_deref(), &report);
            report.exit_code()
        }
        Err(e) => {
            eprintln!("ldm-load: {e}");
            2
        }
    }
}

/// Opens the sessions, runs the clients to the bound, cleans up, closes, and reports. An `Err`
/// is a bad argument (no certificate, for instance): nothing ran.
pub async fn run<W: Workload>(
    workload: Arc<W>,
    connect: &Connect,
    drive: &Drive,
    sources: Sources,
) -> Result<Report, String> {
    let base = connect.target()?;
    let clients = drive.clients as usize;
    let mut session_errors = Vec::new();
    // Logins are not what the other scenarios measure: every session is open before the clock.
    let sessions: Vec<Option<Session>> = if workload.holds_sessions() {
        let bar = progress::bar(clients as u64, "opening");
        let gate = Arc::new(tokio::sync::Semaphore::new(drive.concurrency as usize));
        let opened = open_sessions(&base, sources, 0..clients, &gate, &bar).await;
        bar.finish_and_clear();
        opened
            .into_iter()
            .enumerate()
            .map(|(index, result)| {
                result
                    .map_err(|e| session_errors.push(format!("client {index}: {e}")))
                    .ok()
            })
            .collect()
    } else {
        (0..clients).map(|_| None).collect()
    };
    let sessions_open = sessions.iter().flatten().count();
    let running = if workload.holds_sessions() {
        sessions_open
    } else {
        clients
    };
    let t0 = Instant::now();
    let shared = Arc::new(Shared {
        operations: workload.operations(),
        bound: Bound::new(t0 + drive.ramp_up, drive.duration, drive.count),
        timeout: base.timeout,
        latencies: Mutex::new(Latencies::new(workload.operations())),
        first_failure: OnceLock::new(),
        failures: AtomicU64::new(0),
        warm_up: AtomicU64::new(0),
        cleanup: AtomicU64::new(0),
        late: AtomicU64::new(0),
        last_reply_nanos: AtomicU64::new(0),
        steps_over: tokio::sync::Barrier::new(running),
    });
    let mut tasks = Vec::with_capacity(clients);
    for (index, session) in sessions.into_iter().enumerate() {
        if workload.holds_sessions() && session.is_none() {
            continue;
        }
        let start = client_start(t0, index, clients, drive.ramp_up, drive.rate);
        let pacing = match drive.rate {
            Some(rate) => Pacing::Open(Schedule::new(start, clients, rate)),
            None => Pacing::Closed,
        };
        let ctx = Ctx {
            index,
            phase: Phase::WarmUp,
            pacing,
            shared: shared.clone(),
        };
        let client = workload.client(index, session);
        let steps = workload.step_operations();
        tasks.push(tokio::spawn(drive_client(client, ctx, start, steps)));
    }
    // The server's CPU time at the start of the measured window (the end of the ramp-up).
    let cpu_start = drive.server_pid.map(|pid| {
        let start = t0 + drive.ramp_up;
        tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            cpu::seconds(pid)
        })
    });
    let bar = progress::bar(1000, "running");
    let ticker = tokio::spawn(show_progress(shared.clone(), bar.clone(), drive.clone()));
    let mut open = Vec::with_capacity(tasks.len());
    let (mut missed, mut deadline_reached) = (0, false);
    for task in tasks {
        let end = task.await.expect("client task");
        missed += end.missed;
        deadline_reached |= end.stop == Some(Stop::Deadline);
        open.extend(end.session);
        if let Some(e) = end.error {
            session_errors.push(e.to_string());
        }
    }
    let cpu_end = drive.server_pid.and_then(cpu::seconds);
    let cpu_start = match cpu_start {
        Some(task) => task.await.ok().flatten(),
        None => None,
    };
    if let Some(pid) = drive.server_pid
        && (cpu_start.is_none() || cpu_end.is_none())
    {
        eprintln!(
            "ldm-load: --server-pid {pid}: /proc/{pid}/stat could not be read; no CPU figure"
        );
    }
    ticker.abort();
    bar.finish_and_clear();
    close_sessions(open).await;
    // The window ends at the last measured reply, or at the deadline if that ended the run
    // earlier: in the open loop nothing was due after it, so the rate is over the whole window.
    let mut seconds = Duration::from_nanos(shared.last_reply_nanos.load(Ordering::Relaxed));
    if deadline_reached && let Some(deadline) = shared.bound.deadline() {
        seconds = seconds.max(deadline.saturating_duration_since(t0 + drive.ramp_up));
    }
    let latencies = shared.latencies.lock().expect("latency lock");
    Ok(Report {
        scenario: workload.scenario(),
        mode: if drive.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        rate: drive.rate,
        clients,
        ramp_up_seconds: drive.ramp_up.as_secs_f64(),
        duration_seconds: drive.duration.map(|d| d.as_secs_f64()),
        count: drive.count,
        sessions_open,
        session_errors: session_errors.len(),
        first_session_error: session_errors.into_iter().next(),
        seconds: seconds.as_secs_f64(),
        warm_up_operations: shared.warm_up.load(Ordering::Relaxed),
        late: shared.late.load(Ordering::Relaxed),
        missed,
        failures: shared.failures.load(Ordering::Relaxed),
        first_failure: shared.first_failure.get().cloned(),
        cleanup_operations: shared.cleanup.load(Ordering::Relaxed),
        operations: latencies.rows(seconds),
        server_cpu_seconds: cpu_start
            .zip(cpu_end)
            .map(|(start, end)| (end - start).max(0.0)),
        durability: None,
        problems: Vec::new(),
    })
}

/// One client: from its start, steps until the bound says stop; once every client has stopped,
/// its cleanup.
async fn drive_client<C: Client>(
    mut client: C,
    mut ctx: Ctx,
    start: Instant,
    step_operations: u64,
) -> ClientEnd {
    tokio::time::sleep_until(start.into()).await;
    let shared = ctx.shared.clone();
    let stepped = steps(&mut client, &mut ctx, step_operations).await;
    shared.steps_over.wait().await;
    let stop = match stepped {
        Ok(stop) => stop,
        Err(error) => {
            return ClientEnd {
                session: None,
                error: Some(error),
                stop: None,
                missed: 0,
            };
        }
    };
    let missed = match (stop, &ctx.pacing, shared.bound.deadline()) {
        (Stop::Deadline, Pacing::Open(schedule), Some(deadline)) => schedule.missed(deadline),
        _ => 0,
    };
    ctx.phase = Phase::Cleanup;
    if let Err(error) = client.cleanup(&mut ctx).await {
        return ClientEnd {
            session: None,
            error: Some(error),
            stop: Some(stop),
            missed,
        };
    }
    ClientEnd {
        session: client.into_session(),
        error: None,
        stop: Some(stop),
        missed,
    }
}

/// A client's steps, claimed one by one until the bound says stop (which bound), or until its
/// session is lost.
async fn steps<C: Client>(
    client: &mut C,
    ctx: &mut Ctx,
    step_operations: u64,
) -> Result<Stop, SessionError> {
    loop {
        let now = Instant::now();
        match ctx
            .shared
            .bound
            .claim(step_operations, ctx.pacing.peek(now), now)
        {
            Claim::Over(stop) => return Ok(stop),
            Claim::WarmUp => ctx.phase = Phase::WarmUp,
            Claim::Measured => ctx.phase = Phase::Measured,
        }
        client.step(ctx).await?;
    }
}

/// The running bar: how far towards the bound (the duration, or else the count), operations
/// so far, the last interval's rate, failures and late requests.
async fn show_progress(shared: Arc<Shared>, bar: ProgressBar, drive: Drive) {
    let length = bar.length().unwrap_or(1000);
    let t0 = shared.bound.window_start() - drive.ramp_up;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let (mut last_done, mut last_at) = (0, Instant::now());
    loop {
        tick.tick().await;
        let now = Instant::now();
        let (done, _) = shared.latencies.lock().expect("latency lock").totals();
        let fraction = match (shared.bound.deadline(), drive.count) {
            (Some(deadline), _) => {
                (now - t0).as_secs_f64() / (deadline - t0).as_secs_f64().max(1e-9)
            }
            (None, Some(count)) => shared.bound.claimed() as f64 / count as f64,
            (None, None) => 0.0,
        };
        bar.set_position((fraction.min(1.0) * length as f64) as u64);
        let rate = (done - last_done) as f64 / (now - last_at).as_secs_f64().max(1e-9);
        let warm_up = if now < shared.bound.window_start() {
            " (ramp-up)"
        } else {
            ""
        };
        bar.set_message(format!(
            "{done} ops, {rate:.0}/s, {} failed, {} late{warm_up}",
            shared.failures.load(Ordering::Relaxed),
            shared.late.load(Ordering::Relaxed)
        ));
        (last_done, last_at) = (done, now);
    }
}
