//! `ldm-load write`: clients that each hold one session and run a closed loop over domains of
//! their own (`load-<client>-<k>`): add-domain, set-vcpu, set-memory, remove-domain, again.
//! On ldmd every one of these is a durable write. Each reply's latency, from sending the
//! document to reading the end of its reply, goes into a histogram per action; a failure reply
//! is counted, not fatal.
//!
//! Bounds: `--duration`, `--count`, or both (whichever comes first; 10 s when neither is
//! given). A client checks them before each cycle and finishes a cycle it began, so that a run
//! leaves no domain behind: a run may last one cycle past `--duration` (each reply bounded by
//! `--timeout`), and `--count` is rounded up to whole cycles of four.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::connect::{Connect, OpenCounts, close_sessions, open_progress, open_sessions};
use crate::driver::pacing::{Bound, parse_duration};
use crate::latency::{self, Latencies, Row};
use crate::ldm::{self, Action};
use crate::session::{Session, SessionError};

#[derive(Args)]
pub struct WriteArgs {
    #[command(flatten)]
    connect: Connect,
    /// Clients, each with its own session and its own domains.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    clients: u32,
    /// Stop starting cycles after this long: 10s, 500ms, 2m (10s unless --count is given).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many operations in all, rounded up to whole cycles of four.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Sessions being opened at the same time (all are open before the clock starts).
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct WriteReport {
    pub clients: usize,
    pub sessions_open: usize,
    /// Sessions that did not open, or ended early (closed, stream error, no reply in time).
    pub session_errors: usize,
    pub first_session_error: Option<String>,
    /// From the first request to the last reply.
    pub seconds: f64,
    /// The first failure reply: its action, domain and first `resp_msg`.
    pub first_failure: Option<String>,
    /// One row per action, then `total`.
    pub actions: Vec<Row>,
}

/// What the clients share.
struct Shared {
    bound: Bound,
    /// A std Mutex, not a tokio one: nothing awaits while it is held.
    latencies: Mutex<Latencies>,
    first_failure: OnceLock<String>,
    reply_timeout: Duration,
}

pub async fn write(args: WriteArgs) -> i32 {
    let report = match run(&args).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("ldm-load: {e}");
            return 2;
        }
    };
    print_report(&report);
    crate::write_json(args.json.as_deref(), &report);
    if report.session_errors > 0 { 1 } else { 0 }
}

/// Opens every session, runs the clients to the bound, closes the sessions, and reports.
async fn run(args: &WriteArgs) -> Result<WriteReport, String> {
    let base = args.connect.target()?;
    let clients = args.clients as usize;
    // Logins are not what this measures: every session is open before the clock starts.
    let counts = Arc::new(OpenCounts::default());
    let gate = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let bar = tokio::spawn(open_progress(clients, counts.clone()));
    let opened = open_sessions(&args.connect, &base, 0..clients, &gate, &counts).await;
    bar.abort();
    eprintln!();
    let mut session_errors = Vec::new();
    let started = Instant::now();
    let shared = Arc::new(Shared {
        bound: Bound::new(args.duration, args.count, started),
        latencies: Mutex::new(Latencies::new()),
        first_failure: OnceLock::new(),
        reply_timeout: base.timeout,
    });
    let mut tasks = Vec::with_capacity(clients);
    for (index, result) in opened.into_iter().enumerate() {
        match result {
            Ok(session) => tasks.push(tokio::spawn(client(index, session, shared.clone()))),
            Err(e) => session_errors.push(format!("client {index}: {e}")),
        }
    }
    let sessions_open = tasks.len();
    let progress = tokio::spawn(progress(shared.clone(), started));
    let mut sessions = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await.expect("client task") {
            Ok(session) => sessions.push(session),
            Err(e) => session_errors.push(e.to_string()),
        }
    }
    let elapsed = started.elapsed();
    progress.abort();
    close_sessions(sessions).await;
    let latencies = shared.latencies.lock().expect("latency lock");
    Ok(WriteReport {
        clients,
        sessions_open,
        session_errors: session_errors.len(),
        first_session_error: session_errors.into_iter().next(),
        seconds: elapsed.as_secs_f64(),
        first_failure: shared.first_failure.get().cloned(),
        actions: latencies.rows(elapsed),
    })
}

/// One client: cycles on its own domains until the bound; hands its session back to be
/// closed, or says why it ended early.
async fn client(
    index: usize,
    mut session: Session,
    shared: Arc<Shared>,
) -> Result<Session, SessionError> {
    let mut k: u64 = 0;
    while shared.bound.claim_cycle(Instant::now()) {
        let domain = format!("load-{index}-{k}");
        for action in Action::CYCLE {
            let document = action.document(&domain);
            let sent = Instant::now();
            let reply =
                tokio::time::timeout(shared.reply_timeout, session.request(document.as_bytes()))
                    .await
                    .map_err(|_| {
                        SessionError(format!(
                            "client {index}: no reply to {} {domain} within {:?}",
                            action.name(),
                            shared.reply_timeout
                        ))
                    })?
                    .map_err(|e| SessionError(format!("client {index}: {e}")))?;
            let latency = sent.elapsed();
            let outcome = ldm::outcome(&reply);
            shared
                .latencies
                .lock()
                .expect("latency lock")
                .record(action, latency, outcome.success);
            if !outcome.success && shared.first_failure.get().is_none() {
                let message = outcome.message.as_deref().unwrap_or("(no resp_msg)");
                let _ = shared
                    .first_failure
                    .set(format!("{} {domain}: {message}", action.name()));
            }
        }
        k += 1;
    }
    Ok(session)
}

/// One line a second on stderr: replies so far, the last second's rate, failures.
async fn progress(shared: Arc<Shared>, started: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    loop {
        tick.tick().await;
        let (replies, failures) = shared.latencies.lock().expect("latency lock").totals();
        eprintln!(
            "[{:>4.0} s] {replies} replies, {}/s, {failures} failures",
            started.elapsed().as_secs_f64(),
            replies - last
        );
        last = replies;
    }
}

fn print_report(r: &WriteReport) {
    println!(
        "clients              {} ({} sessions open, {} session errors)",
        r.clients, r.sessions_open, r.session_errors
    );
    if let Some(e) = &r.first_session_error {
        println!("first session error  {e}");
    }
    println!("ran for              {:.2} s", r.seconds);
    if let Some(f) = &r.first_failure {
        println!("first failure        {f}");
    }
    println!();
    latency::print_table(&r.actions);
}

#[cfg(test)]
mod tests {
    use super::*;

    use clap::Parser;

    use ldmd::config::{Config, Overrides};
    use ldmd::ldm::handler::Unsupported;
    use ldmd::server::Server;
    use ldmd::server::dispatch::HandlerThread;

    use crate::{Cli, Scenario};

    fn parse(args: &[&str]) -> Result<WriteArgs, String> {
        let argv = ["ldm-load", "write"].iter().chain(args);
        match Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .scenario
        {
            Scenario::Write(args) => Ok(args),
            _ => Err("not write".into()),
        }
    }

    #[test]
    fn flags_parse_and_bad_values_are_refused() {
        let args = parse(&[
            "--clients",
            "100",
            "--duration",
            "10s",
            "--count",
            "5000",
            "--target",
            "127.0.0.1:7000",
            "--user",
            "load",
            "--password",
            "pw",
            "--insecure",
            "--json",
            "out.json",
        ])
        .unwrap();
        assert_eq!(args.clients, 100);
        assert_eq!(args.duration, Some(Duration::from_secs(10)));
        assert_eq!(args.count, Some(5000));
        assert_eq!(args.connect.target.port(), 7000);
        assert_eq!(args.connect.user.as_deref(), Some("load"));
        assert!(args.connect.insecure);
        let defaults = parse(&[]).unwrap();
        assert_eq!(
            (defaults.clients, defaults.duration, defaults.count),
            (10, None, None)
        );
        for bad in [
            &["--clients", "0"][..],
            &["--count", "0"],
            &["--duration", "10x"],
            &["--duration", "0s"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    /// An ldmd in this process, answering every document with a failure (today's handler), on
    /// a free loopback port; this test's uid is mapped to the write role.
    fn start_ldmd(dir: &std::path::Path) -> Server {
        let overrides = Overrides {
            listen: vec!["127.0.0.1:0".into()],
            socket: Some(dir.join("ldmd.sock")),
            state_dir: Some(dir.to_path_buf()),
            metrics_listen: Some("off".into()),
        };
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let config = Config::from_toml(
            &format!("io_threads = 1\nlog = 'warn'\n[local_users]\n{uid} = 'write'"),
            &overrides,
        )
        .unwrap();
        Server::start(config, Box::new(HandlerThread(Box::new(Unsupported)))).unwrap()
    }

    fn run_against_ldmd(flags: &[&str]) -> WriteReport {
        let dir = tempfile::tempdir().unwrap();
        let server = start_ldmd(dir.path());
        let target = server.tcp_addrs[0].to_string();
        let mut argv = vec!["--target", &target, "--insecure"];
        argv.extend_from_slice(flags);
        let args = parse(&argv).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let report = runtime.block_on(run(&args)).unwrap();
        drop(runtime);
        // Outside the runtime: shutdown blocks.
        server.shutdown();
        report
    }

    #[test]
    fn count_bound_stops_after_whole_cycles_and_counts_every_failure_reply() {
        // --count 22 rounds up to 24: six cycles over three clients, every reply a failure
        // today, counted per action, the first failure's resp_msg kept.
        let report = run_against_ldmd(&["--clients", "3", "--count", "22"]);
        assert_eq!((report.sessions_open, report.session_errors), (3, 0));
        let counts: Vec<_> = report
            .actions
            .iter()
            .map(|r| (r.action, r.count, r.errors))
            .collect();
        assert_eq!(
            counts,
            [
                ("add-domain", 6, 6),
                ("set-vcpu", 6, 6),
                ("set-memory", 6, 6),
                ("remove-domain", 6, 6),
                ("total", 24, 24)
            ]
        );
        let total = &report.actions[4];
        assert!(total.p50_ms > 0.0 && total.p50_ms <= total.p99_ms && total.p99_ms <= total.max_ms);
        let failure = report.first_failure.unwrap();
        assert!(
            failure.contains(" load-") && failure.contains("is not supported by this ldmd"),
            "{failure}"
        );
    }

    #[test]
    fn duration_bound_stops_by_itself() {
        let report = run_against_ldmd(&["--clients", "2", "--duration", "300ms"]);
        assert_eq!(report.session_errors, 0);
        assert!(
            (0.3..5.0).contains(&report.seconds),
            "ran {} s",
            report.seconds
        );
        let total = &report.actions[4];
        assert!(
            total.count > 0 && total.count.is_multiple_of(4),
            "{}",
            total.count
        );
    }
}
