//! `ldm-load`: a load generator for ldmd (and, for the XMPP scenarios, any XMPP server).
//!
//! ```text
//! ldm-load idle --target 127.0.0.1:6482 --domain localhost --user alice --insecure \
//!               --sessions 10000 --pid $(pidof ldmd)
//! ```
//! The password comes from `--password` or the `LDM_PASSWORD` environment variable. Every run
//! is bounded (session count, hold time) and stops by itself.

mod session;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use session::{Session, Target};

#[derive(Parser)]
#[command(
    name = "ldm-load",
    about = "Load generator for ldmd and other XMPP servers"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Hold N authenticated sessions idle and report the server's resident memory per session.
    Idle(IdleArgs),
}

#[derive(Args, Clone)]
struct Connect {
    /// The server's XMPP address.
    #[arg(long, default_value = "127.0.0.1:6482")]
    target: SocketAddr,
    /// XMPP domain to ask for (stream 'to', TLS server name).
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// User to authenticate as (SASL PLAIN); without it the session stops after TLS (enough for
    /// a local peer of ldmd).
    #[arg(long)]
    user: Option<String>,
    /// Password (or set LDM_PASSWORD).
    #[arg(long, env = "LDM_PASSWORD", hide_env_values = true, default_value = "")]
    password: String,
    /// The server's certificate (PEM) to verify against.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Do not verify the server's certificate.
    #[arg(long)]
    insecure: bool,
    /// Spread client source addresses over 127.0.0.1..=127.0.0.N (loopback targets), so that
    /// more than ~28,000 connections fit in the ephemeral port range.
    #[arg(long, default_value_t = 1)]
    source_ips: u8,
    /// Full TLS handshakes only (rustls clients resume sessions by default).
    #[arg(long)]
    no_resumption: bool,
    /// Per-session timeout for opening.
    #[arg(long, default_value = "30", value_name = "SECONDS")]
    timeout: u64,
}

#[derive(Args)]
struct IdleArgs {
    #[command(flatten)]
    connect: Connect,
    /// Sessions to open and hold.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Sessions being opened at the same time.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Seconds to hold the sessions once all are open.
    #[arg(long, default_value_t = 3)]
    hold: u64,
    /// The server's pid, to read its resident memory from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// Open the sessions in this many equal steps, reading the server's memory after each, and
    /// report the slope (bytes per added session), which no fixed baseline can distort.
    #[arg(long, default_value_t = 1)]
    steps: usize,
    /// Seconds to let the server settle before each memory reading.
    #[arg(long, default_value_t = 2)]
    settle: u64,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize)]
struct IdleReport {
    sessions_requested: usize,
    sessions_open: usize,
    errors: usize,
    first_error: Option<String>,
    open_seconds: f64,
    sessions_per_second: f64,
    server_rss_before_bytes: Option<u64>,
    server_rss_after_bytes: Option<u64>,
    server_rss_per_session_bytes: Option<f64>,
    /// (sessions open, server RSS) after each step.
    server_rss_steps: Vec<(usize, u64)>,
    /// Least-squares slope of RSS over sessions, in bytes per session.
    server_rss_slope_bytes_per_session: Option<f64>,
}

fn main() {
    raise_file_limit();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let code = runtime.block_on(async {
        match cli.scenario {
            Scenario::Idle(args) => idle(args).await,
        }
    });
    std::process::exit(code);
}

fn target(connect: &Connect, index: usize) -> Result<Target, String> {
    let tls = session::client_tls(
        connect.ca.as_deref(),
        connect.insecure,
        !connect.no_resumption,
    )?;
    let source =
        (connect.source_ips > 1 && connect.target.ip().is_loopback() && connect.target.is_ipv4())
            .then(|| {
                IpAddr::V4(Ipv4Addr::new(
                    127,
                    0,
                    0,
                    1 + (index % connect.source_ips as usize) as u8,
                ))
            });
    Ok(Target {
        addr: connect.target,
        domain: connect.domain.clone(),
        user: connect.user.clone(),
        password: connect.password.clone(),
        tls,
        source,
        timeout: Duration::from_secs(connect.timeout),
    })
}

async fn idle(args: IdleArgs) -> i32 {
    let base = match target(&args.connect, 0) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ldm-load: {e}");
            return 2;
        }
    };
    let rss_before = args.pid.and_then(rss_bytes);
    let started = Instant::now();
    let opened = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let progress = tokio::spawn(progress(args.sessions, opened.clone(), failed.clone()));
    let mut sessions = Vec::with_capacity(args.sessions);
    let mut first_error = None;
    let mut steps = Vec::new();
    let step_size = args.sessions.div_ceil(args.steps.max(1));
    let mut open_time = Duration::ZERO;
    for step_start in (0..args.sessions).step_by(step_size.max(1)) {
        let step_started = Instant::now();
        let mut tasks = Vec::with_capacity(step_size);
        for index in step_start..(step_start + step_size).min(args.sessions) {
            let mut target = base.clone();
            if args.connect.source_ips > 1 {
                target.source = self::target(&args.connect, index)
                    .ok()
                    .and_then(|t| t.source);
            }
            let gate = gate.clone();
            let (opened, failed) = (opened.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = gate.acquire().await.expect("semaphore");
                let result = Session::open(&target).await;
                match &result {
                    Ok(_) => opened.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
                result
            }));
        }
        for task in tasks {
            match task.await.expect("session task") {
                Ok(session) => sessions.push(session),
                Err(e) => {
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        open_time += step_started.elapsed();
        if args.steps > 1 {
            tokio::time::sleep(Duration::from_secs(args.settle)).await;
            if let Some(rss) = args.pid.and_then(rss_bytes) {
                steps.push((sessions.len(), rss));
            }
        }
    }
    let _ = started;
    let open_seconds = open_time.as_secs_f64();
    progress.abort();
    eprintln!();
    // Let the server settle (buffers returned, handshake state freed) before measuring.
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let rss_after = args.pid.and_then(rss_bytes);
    let report = IdleReport {
        sessions_requested: args.sessions,
        sessions_open: sessions.len(),
        errors: failed.load(Ordering::Relaxed),
        first_error,
        open_seconds,
        sessions_per_second: sessions.len() as f64 / open_seconds,
        server_rss_before_bytes: rss_before,
        server_rss_after_bytes: rss_after,
        server_rss_per_session_bytes: match (rss_before, rss_after) {
            (Some(b), Some(a)) if !sessions.is_empty() => {
                Some((a as f64 - b as f64) / sessions.len() as f64)
            }
            _ => None,
        },
        server_rss_slope_bytes_per_session: slope(&steps),
        server_rss_steps: steps,
    };
    let close = futures_join(sessions);
    close.await;
    print_idle(&report);
    if let Some(path) = &args.json
        && let Err(e) = std::fs::write(path, serde_json::to_string_pretty(&report).expect("json"))
    {
        eprintln!("ldm-load: {}: {e}", path.display());
    }
    if report.errors > 0 { 1 } else { 0 }
}

async fn futures_join(sessions: Vec<Session>) {
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|s| tokio::spawn(s.close()))
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

fn print_idle(r: &IdleReport) {
    println!(
        "sessions open        {} of {} ({} errors)",
        r.sessions_open, r.sessions_requested, r.errors
    );
    if let Some(e) = &r.first_error {
        println!("first error          {e}");
    }
    println!(
        "opened in            {:.2} s ({:.0} sessions/s)",
        r.open_seconds, r.sessions_per_second
    );
    if let (Some(b), Some(a)) = (r.server_rss_before_bytes, r.server_rss_after_bytes) {
        println!(
            "server RSS           {:.1} MiB -> {:.1} MiB",
            b as f64 / 1048576.0,
            a as f64 / 1048576.0
        );
    }
    if let Some(per) = r.server_rss_per_session_bytes {
        println!(
            "RSS per session      {:.0} bytes ({:.2} KiB) (from the first reading)",
            per,
            per / 1024.0
        );
    }
    for (open, rss) in &r.server_rss_steps {
        println!(
            "  at {open:>7} sessions: {:.1} MiB",
            *rss as f64 / 1048576.0
        );
    }
    if let Some(slope) = r.server_rss_slope_bytes_per_session {
        println!(
            "RSS slope            {:.0} bytes ({:.2} KiB) per added session",
            slope,
            slope / 1024.0
        );
    }
}

async fn progress(total: usize, opened: Arc<AtomicUsize>, failed: Arc<AtomicUsize>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let (o, f) = (
            opened.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed),
        );
        let width = 40;
        let done = (o + f) * width / total.max(1);
        eprint!(
            "\r[{}{}] {o}/{total} open, {f} errors",
            "#".repeat(done),
            " ".repeat(width - done)
        );
    }
}

/// Least-squares slope of (sessions, bytes) points.
fn slope(points: &[(usize, u64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0 as f64).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1 as f64).sum::<f64>() / n;
    let covariance: f64 = points
        .iter()
        .map(|p| (p.0 as f64 - mean_x) * (p.1 as f64 - mean_y))
        .sum();
    let variance: f64 = points.iter().map(|p| (p.0 as f64 - mean_x).powi(2)).sum();
    (variance > 0.0).then(|| covariance / variance)
}

/// VmRSS of a process, from /proc.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Many sessions need many descriptors: raise the soft limit to the hard one.
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
