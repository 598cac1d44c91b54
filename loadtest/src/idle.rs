//! `ldm-load idle`: hold N authenticated sessions idle and report the server's resident memory
//! per session.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::connect::{Connect, OpenCounts, close_sessions, open_progress, open_sessions};

#[derive(Args)]
pub struct IdleArgs {
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

pub async fn idle(args: IdleArgs) -> i32 {
    let base = match args.connect.target() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ldm-load: {e}");
            return 2;
        }
    };
    let rss_before = args.pid.and_then(rss_bytes);
    let counts = Arc::new(OpenCounts::default());
    let gate = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let progress = tokio::spawn(open_progress(args.sessions, counts.clone()));
    let mut sessions = Vec::with_capacity(args.sessions);
    let mut first_error = None;
    let mut steps = Vec::new();
    let step_size = args.sessions.div_ceil(args.steps.max(1));
    let mut open_time = Duration::ZERO;
    for step_start in (0..args.sessions).step_by(step_size.max(1)) {
        let step_started = Instant::now();
        let indices = step_start..(step_start + step_size).min(args.sessions);
        for result in open_sessions(&args.connect, &base, indices, &gate, &counts).await {
            match result {
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
    let open_seconds = open_time.as_secs_f64();
    progress.abort();
    eprintln!();
    // Let the server settle (buffers returned, handshake state freed) before measuring.
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let rss_after = args.pid.and_then(rss_bytes);
    let report = IdleReport {
        sessions_requested: args.sessions,
        sessions_open: sessions.len(),
        errors: counts.failed.load(Ordering::Relaxed),
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
    close_sessions(sessions).await;
    print_idle(&report);
    crate::write_json(args.json.as_deref(), &report);
    if report.errors > 0 { 1 } else { 0 }
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
