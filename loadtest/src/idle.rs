//! `ldm-load idle`: hold N authenticated sessions idle and report the server's resident memory
//! per session, read from /proc (`--pid`) or from its /metrics (`--metrics-url`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::connect::{Connect, close_sessions, open_sessions};
use crate::progress;
use crate::rss::{self, RssSource};

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
    #[arg(long, conflicts_with = "metrics_url")]
    pid: Option<u32>,
    /// Or the server's Prometheus endpoint, to read its process_resident_memory_bytes:
    /// http://127.0.0.1:9482/metrics.
    #[arg(long, value_name = "URL", value_parser = rss::parse_url)]
    metrics_url: Option<rss::MetricsUrl>,
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

#[derive(Debug, Serialize)]
pub struct IdleReport {
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
    /// Why a memory reading failed, if one did.
    first_rss_error: Option<String>,
}

pub async fn idle(args: IdleArgs) -> i32 {
    match run(&args).await {
        Ok(report) => {
            print_idle(&report);
            crate::write_json(args.json.as_deref(), &report);
            if report.errors > 0 { 1 } else { 0 }
        }
        Err(e) => {
            eprintln!("ldm-load: {e}");
            2
        }
    }
}

/// Opens the sessions (in steps, reading the server's memory after each), holds them, reads
/// the memory again, and closes them.
pub async fn run(args: &IdleArgs) -> Result<IdleReport, String> {
    let base = args.connect.target()?;
    let sources = args.connect.sources(args.sessions);
    let memory = match (args.pid, &args.metrics_url) {
        (Some(pid), _) => Some(RssSource::Proc(pid)),
        (None, Some(url)) => Some(RssSource::Metrics(url.clone())),
        (None, None) => None,
    };
    let mut rss_error = None;
    let mut read_rss = async || match &memory {
        Some(source) => source
            .read()
            .await
            .map_err(|e| {
                rss_error.get_or_insert(e);
            })
            .ok(),
        None => None,
    };
    let rss_before = read_rss().await;
    let gate = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let bar = progress::bar(args.sessions as u64, "opening");
    let mut sessions = Vec::with_capacity(args.sessions);
    let mut errors = 0;
    let mut first_error = None;
    let mut steps = Vec::new();
    let step_size = args.sessions.div_ceil(args.steps.max(1));
    let mut open_time = Duration::ZERO;
    for step_start in (0..args.sessions).step_by(step_size.max(1)) {
        let step_started = Instant::now();
        let indices = step_start..(step_start + step_size).min(args.sessions);
        for result in open_sessions(&base, sources, indices, &gate, &bar).await {
            match result {
                Ok(session) => sessions.push(session),
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        open_time += step_started.elapsed();
        if args.steps > 1 {
            tokio::time::sleep(Duration::from_secs(args.settle)).await;
            if let Some(rss) = read_rss().await {
                steps.push((sessions.len(), rss));
            }
        }
    }
    let open_seconds = open_time.as_secs_f64();
    bar.set_prefix("holding");
    // Let the server settle (buffers returned, handshake state freed) before measuring.
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let rss_after = read_rss().await;
    bar.finish_and_clear();
    let report = IdleReport {
        sessions_requested: args.sessions,
        sessions_open: sessions.len(),
        errors,
        first_error,
        open_seconds,
        sessions_per_second: sessions.len() as f64 / open_seconds.max(1e-9),
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
        first_rss_error: rss_error,
    };
    close_sessions(sessions).await;
    Ok(report)
}

fn print_idle(r: &IdleReport) {
    println!(
        "sessions open        {} of {} ({} errors)",
        r.sessions_open, r.sessions_requested, r.errors
    );
    if let Some(e) = &r.first_error {
        println!("first error          {e}");
    }
    if let Some(e) = &r.first_rss_error {
        println!("memory reading       failed: {e}");
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::Scenario;
    use crate::testing::{Answers, Ldmd, block_on, scenario, serve_metrics};

    fn args(ldmd: &Ldmd, flags: &[&str]) -> IdleArgs {
        let Scenario::Idle(args) = scenario(ldmd, "idle", flags) else {
            panic!("not idle")
        };
        args
    }

    #[test]
    fn idle_holds_the_sessions_and_reads_memory_from_proc() {
        // The daemon runs in this process, so its pid is ours.
        let ldmd = Ldmd::start(Answers::Refusals);
        let pid = std::process::id().to_string();
        let args = args(
            &ldmd,
            &[
                "--sessions",
                "6",
                "--steps",
                "2",
                "--settle",
                "0",
                "--hold",
                "0",
                "--pid",
                &pid,
            ],
        );
        let report = block_on(run(&args)).unwrap();
        assert_eq!((report.sessions_open, report.errors), (6, 0));
        assert!(
            report.server_rss_before_bytes.is_some() && report.server_rss_after_bytes.is_some()
        );
        let steps: Vec<_> = report.server_rss_steps.iter().map(|s| s.0).collect();
        assert_eq!(steps, [3, 6]);
        assert!(report.server_rss_slope_bytes_per_session.is_some());
        assert_eq!(report.first_rss_error, None);
    }

    #[test]
    fn idle_reads_memory_from_a_metrics_url() {
        let ldmd = Ldmd::start(Answers::Refusals);
        let report = block_on(async {
            let url = serve_metrics("# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 1048576\n").await;
            run(&args(&ldmd, &["--sessions", "4", "--hold", "0", "--metrics-url", &url])).await
        })
        .unwrap();
        assert_eq!(report.sessions_open, 4);
        assert_eq!(report.server_rss_before_bytes, Some(1 << 20));
        assert_eq!(report.server_rss_after_bytes, Some(1 << 20));
        assert_eq!(report.server_rss_per_session_bytes, Some(0.0));
        assert!(
            crate::testing::parse(&["idle", "--pid", "1", "--metrics-url", "http://h/"]).is_err()
        );
        assert!(crate::testing::parse(&["idle", "--metrics-url", "ftp://h/"]).is_err());
    }
}
