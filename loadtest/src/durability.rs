//! What durable writes cost, beside what the disk itself can do, in the same run (`write`,
//! `mixed`):
//!
//! - `--metrics-url`: the daemon's `/metrics` read before and after the run give its commits a
//!   second, the acknowledged writes per commit, its checkpoints, and the median commit time
//!   (interpolated in `ldmd_registry_commit_duration_seconds`' buckets);
//! - `--disk-probe DIR`: the disk's own limit, a raw 4 KiB `pwrite` + `fdatasync` of a file in
//!   DIR (the daemon's state directory), measured for 2 s before the run with the machine
//!   otherwise idle, and during the run, paced at one every 5 ms so that the probe itself adds
//!   little to the disk's load.
//!
//! The ratio of the commit's median to the probe's is printed beside them. The parsing and the
//! arithmetic are pure; only [`Watch`] does I/O.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::rss::{self, MetricsUrl};

/// The commit histogram, its count, the checkpoints and the commands, as ldmd names them.
const COMMIT_HISTOGRAM: &str = "ldmd_registry_commit_duration_seconds";
const CHECKPOINTS: &str = "ldmd_registry_checkpoints_total";
const COMMANDS: &str = "ldmd_commands_total";
/// The probe's idle measurement, before the run.
const IDLE_PROBE: Duration = Duration::from_secs(2);
/// The probe's pace during the run.
const PROBE_INTERVAL: Duration = Duration::from_millis(5);

#[derive(Args, Clone, Debug, Default)]
pub struct DurabilityArgs {
    /// The daemon's Prometheus endpoint (http://127.0.0.1:9482/metrics): report its commits a
    /// second, acknowledged writes per commit and median commit time over the run.
    #[arg(long, value_name = "URL", value_parser = rss::parse_url)]
    pub metrics_url: Option<MetricsUrl>,
    /// Measure the disk's raw 4 KiB write + fdatasync in this directory (the daemon's state
    /// directory) before and during the run, and print the commit's ratio to it.
    #[arg(long, value_name = "DIR")]
    pub disk_probe: Option<PathBuf>,
}

/// Latencies of the raw disk probe.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Probe {
    pub samples: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// Probes a second if they ran back to back (1 / mean).
    pub per_second: f64,
}

impl Probe {
    fn of(mut seconds: Vec<f64>) -> Option<Probe> {
        if seconds.is_empty() {
            return None;
        }
        seconds.sort_by(f64::total_cmp);
        let at = |q: f64| seconds[((seconds.len() - 1) as f64 * q).round() as usize] * 1e3;
        let total: f64 = seconds.iter().sum();
        Some(Probe {
            samples: seconds.len(),
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            per_second: seconds.len() as f64 / total.max(f64::MIN_POSITIVE),
        })
    }
}

/// What the daemon's /metrics say of the run, and the probe beside it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Durability {
    /// Seconds between the two /metrics readings.
    pub seconds: Option<f64>,
    pub commits: Option<u64>,
    pub commits_per_second: Option<f64>,
    /// Successful commands of the run's write actions, per commit.
    pub writes_per_commit: Option<f64>,
    pub checkpoints: Option<u64>,
    pub commit_p50_ms: Option<f64>,
    pub disk_idle: Option<Probe>,
    pub disk_during: Option<Probe>,
    /// Why a reading failed; the run itself goes on.
    pub problems: Vec<String>,
}

/// A reading of the counters that matter here.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    /// Cumulative bucket counts of the commit histogram, by upper bound (`+Inf` last).
    buckets: Vec<(f64, f64)>,
    commits: f64,
    checkpoints: f64,
    writes: f64,
}

impl Reading {
    /// Reads the Prometheus text `body`; `writes` are the actions whose successful commands
    /// count as writes.
    pub fn parse(body: &str, writes: &[&str]) -> Reading {
        let mut reading = Reading::default();
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, labels, value)) = split_sample(line) else {
                continue;
            };
            match name {
                _ if name == format!("{COMMIT_HISTOGRAM}_bucket") => {
                    if let Some(le) = label(labels, "le") {
                        let bound = if le == "+Inf" {
                            f64::INFINITY
                        } else {
                            le.parse().unwrap_or(f64::NAN)
                        };
                        if !bound.is_nan() {
                            reading.buckets.push((bound, value));
                        }
                    }
                }
                _ if name == format!("{COMMIT_HISTOGRAM}_count") => reading.commits = value,
                CHECKPOINTS => reading.checkpoints = value,
                COMMANDS
                    if label(labels, "status") == Some("success")
                        && label(labels, "action").is_some_and(|a| writes.contains(&a)) =>
                {
                    reading.writes += value
                }
                _ => {}
            }
        }
        reading.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        reading
    }
}

/// `name{labels} value` (labels may be absent).
fn split_sample(line: &str) -> Option<(&str, &str, f64)> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.trim().parse().ok()?;
    match head.split_once('{') {
        Some((name, labels)) => Some((name, labels.strip_suffix('}')?, value)),
        None => Some((head.trim(), "", value)),
    }
}

/// The value of label `name` in `a="x",b="y"` (values with no quotes or commas in them, as
/// ldmd's are).
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches('"'))
    })
}

/// The median of the observations between two readings of a cumulative histogram, linearly
/// interpolated in its bucket (as Prometheus' `histogram_quantile` does).
pub fn median_between(before: &[(f64, f64)], after: &[(f64, f64)]) -> Option<f64> {
    let counts: Vec<(f64, f64)> = after
        .iter()
        .map(|&(bound, count)| {
            let earlier = before
                .iter()
                .find(|(b, _)| *b == bound)
                .map_or(0.0, |(_, c)| *c);
            (bound, count - earlier)
        })
        .collect();
    let total = counts.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = total / 2.0;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(bound, count) in &counts {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower);
            }
            let within = count - below;
            let fraction = if within > 0.0 {
                (rank - below) / within
            } else {
                0.0
            };
            return Some(lower + (bound - lower) * fraction);
        }
        (lower, below) = (bound, count);
    }
    None
}

impl Durability {
    /// The figures between two readings taken `seconds` apart.
    pub fn between(before: &Reading, after: &Reading, seconds: f64) -> Durability {
        let commits = (after.commits - before.commits).max(0.0);
        let writes = (after.writes - before.writes).max(0.0);
        Durability {
            seconds: Some(seconds),
            commits: Some(commits as u64),
            commits_per_second: (seconds > 0.0).then(|| commits / seconds),
            writes_per_commit: (commits > 0.0).then(|| writes / commits),
            checkpoints: Some((after.checkpoints - before.checkpoints).max(0.0) as u64),
            commit_p50_ms: median_between(&before.buckets, &after.buckets).map(|s| s * 1e3),
            ..Durability::default()
        }
    }

    /// The lines printed under the table.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let (Some(commits), Some(seconds)) = (self.commits, self.seconds) {
            lines.push(format!(
                "commits         {commits} in {seconds:.1} s: {:.0}/s, {:.1} acknowledged writes per commit, {} checkpoints",
                self.commits_per_second.unwrap_or(0.0),
                self.writes_per_commit.unwrap_or(0.0),
                self.checkpoints.unwrap_or(0),
            ));
        }
        if let Some(p50) = self.commit_p50_ms {
            lines.push(format!(
                "commit p50      {p50:.3} ms ({COMMIT_HISTOGRAM}, interpolated in its buckets)"
            ));
        }
        for (when, probe) in [
            ("idle", &self.disk_idle),
            ("during the run", &self.disk_during),
        ] {
            if let Some(probe) = probe {
                lines.push(format!(
                    "disk ({when:<14}) 4 KiB write + fdatasync: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, {} probes ({:.0}/s back to back)",
                    probe.p50_ms, probe.p90_ms, probe.p99_ms, probe.samples, probe.per_second
                ));
                if let Some(p50) = self.commit_p50_ms {
                    lines.push(format!(
                        "commit / disk ({when}): {:.2}x at the median",
                        p50 / probe.p50_ms.max(f64::MIN_POSITIVE)
                    ));
                }
            }
        }
        for problem in &self.problems {
            lines.push(format!("durability      {problem}"));
        }
        lines
    }
}

/// The readings and the probe of one run: [`Watch::start`] before it, [`Watch::finish`] after.
pub struct Watch {
    args: DurabilityArgs,
    writes: &'static [&'static str],
    before: Option<(Reading, Instant)>,
    probe: Option<(Arc<AtomicBool>, std::thread::JoinHandle<Vec<f64>>)>,
    report: Durability,
}

impl Watch {
    /// Probes the idle disk, reads /metrics, and starts the paced probe. `writes`: the
    /// scenario's write actions.
    pub async fn start(args: &DurabilityArgs, writes: &'static [&'static str]) -> Watch {
        let mut watch = Watch {
            args: args.clone(),
            writes,
            before: None,
            probe: None,
            report: Durability::default(),
        };
        if let Some(dir) = &args.disk_probe {
            let dir = dir.clone();
            let idle = tokio::task::spawn_blocking(move || probe_for(&dir, IDLE_PROBE, None))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
            match idle {
                Ok(seconds) => watch.report.disk_idle = Probe::of(seconds),
                Err(e) => watch.report.problems.push(format!("disk probe: {e}")),
            }
        }
        if let Some(url) = &args.metrics_url {
            match rss::scrape_body(url).await {
                Ok(body) => watch.before = Some((Reading::parse(&body, writes), Instant::now())),
                Err(e) => watch.report.problems.push(format!("/metrics: {e}")),
            }
        }
        if let Some(dir) = &args.disk_probe
            && watch.report.disk_idle.is_some()
        {
            let stop = Arc::new(AtomicBool::new(false));
            let (dir, flag) = (dir.clone(), stop.clone());
            let handle = std::thread::spawn(move || {
                probe_for(&dir, Duration::MAX, Some((&flag, PROBE_INTERVAL))).unwrap_or_default()
            });
            watch.probe = Some((stop, handle));
        }
        watch
    }

    /// Stops the probe and reads /metrics again.
    pub async fn finish(mut self) -> Durability {
        if let Some((stop, handle)) = self.probe.take() {
            stop.store(true, Ordering::Relaxed);
            let seconds = tokio::task::spawn_blocking(move || handle.join().unwrap_or_default())
                .await
                .unwrap_or_default();
            self.report.disk_during = Probe::of(seconds);
        }
        if let (Some(url), Some((before, at))) = (&self.args.metrics_url, &self.before) {
            match rss::scrape_body(url).await {
                Ok(body) => {
                    let after = Reading::parse(&body, self.writes);
                    let seconds = at.elapsed().as_secs_f64();
                    let report = std::mem::take(&mut self.report);
                    self.report = Durability {
                        disk_idle: report.disk_idle,
                        disk_during: report.disk_during,
                        problems: report.problems,
                        ..Durability::between(before, &after, seconds)
                    };
                }
                Err(e) => self.report.problems.push(format!("/metrics: {e}")),
            }
        }
        self.report
    }
}

/// Times 4 KiB `pwrite` + `fdatasync` of a private file in `dir` for `duration`, back to back,
/// or paced until `stop` is set. The file is removed after.
fn probe_for(
    dir: &Path,
    duration: Duration,
    paced: Option<(&AtomicBool, Duration)>,
) -> Result<Vec<f64>, String> {
    let path = dir.join(format!(".ldm-load-probe-{}", std::process::id()));
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let result = (|| {
        let mut block = [0u8; 4096];
        // Allocated and on disk first, so that every timed write overwrites in place.
        file.write_all_at(&block, 0)?;
        file.sync_all()?;
        let mut seconds = Vec::new();
        let start = Instant::now();
        let mut n: u64 = 0;
        loop {
            match paced {
                Some((stop, _)) if stop.load(Ordering::Relaxed) => break,
                None if start.elapsed() >= duration => break,
                _ => {}
            }
            n += 1;
            block[..8].copy_from_slice(&n.to_le_bytes());
            let t = Instant::now();
            file.write_all_at(&block, 0)?;
            file.sync_data()?;
            seconds.push(t.elapsed().as_secs_f64());
            if let Some((_, interval)) = paced {
                std::thread::sleep(interval);
            }
        }
        Ok(seconds)
    })();
    let _ = std::fs::remove_file(&path);
    result.map_err(|e: std::io::Error| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "\
# TYPE ldmd_registry_commit_duration_seconds histogram
ldmd_registry_commit_duration_seconds_bucket{le=\"0.0001\"} 10
ldmd_registry_commit_duration_seconds_bucket{le=\"0.0002\"} 50
ldmd_registry_commit_duration_seconds_bucket{le=\"0.0004\"} 90
ldmd_registry_commit_duration_seconds_bucket{le=\"+Inf\"} 100
ldmd_registry_commit_duration_seconds_sum 0.02
ldmd_registry_commit_duration_seconds_count 100
ldmd_registry_checkpoints_total 3
ldmd_commands_total{action=\"add-domain\",status=\"success\"} 400
ldmd_commands_total{action=\"add-domain\",status=\"failure\"} 7
ldmd_commands_total{action=\"list-domain\",status=\"success\"} 900
ldmd_commands_total{action=\"set-vcpu\",status=\"success\"} 600
";

    #[test]
    fn a_reading_takes_the_histogram_the_checkpoints_and_the_successful_writes() {
        let reading = Reading::parse(BODY, &["add-domain", "set-vcpu"]);
        assert_eq!(reading.commits, 100.0);
        assert_eq!(reading.checkpoints, 3.0);
        assert_eq!(reading.writes, 1000.0);
        assert_eq!(reading.buckets.len(), 4);
        assert_eq!(reading.buckets[3].0, f64::INFINITY);
    }

    #[test]
    fn the_median_is_interpolated_in_the_buckets_of_the_difference() {
        let after = Reading::parse(BODY, &[]);
        // All 100: the 50th observation is the last of the (0.1, 0.2] ms bucket.
        let median = median_between(&[], &after.buckets).unwrap();
        assert!((median - 0.0002).abs() < 1e-12, "{median}");
        // Before: 10 in the first bucket, 50 in all: the 50 since are 0 | 0 | 40 | 10, and the
        // 25th of them is 25/40 of the way through (0.2, 0.4] ms.
        let before = [
            (0.0001, 10.0),
            (0.0002, 50.0),
            (0.0004, 50.0),
            (f64::INFINITY, 50.0),
        ];
        let median = median_between(&before, &after.buckets).unwrap();
        assert!((median - 0.000325).abs() < 1e-12, "{median}");
        assert_eq!(median_between(&after.buckets, &after.buckets), None);
    }

    #[test]
    fn the_figures_between_readings_and_their_lines() {
        let before = Reading::parse(&BODY.replace(" 100\n", " 0\n"), &["add-domain"]);
        let after = Reading::parse(BODY, &["add-domain"]);
        let mut durability = Durability::between(&before, &after, 2.0);
        assert_eq!(durability.commits, Some(100));
        assert_eq!(durability.commits_per_second, Some(50.0));
        assert_eq!(
            durability.writes_per_commit,
            Some(0.0),
            "400 before and after"
        );
        durability.disk_idle = Probe::of(vec![0.0001, 0.0001, 0.0003]);
        let lines = durability.lines().join("\n");
        assert!(
            lines.contains("commits         100 in 2.0 s: 50/s"),
            "{lines}"
        );
        assert!(
            lines.contains("disk (idle          ) 4 KiB write + fdatasync: p50 0.100 ms"),
            "{lines}"
        );
        assert!(
            lines.contains("commit / disk (idle): 4.00x at the median"),
            "{lines}"
        );
    }

    #[test]
    fn the_probe_writes_and_syncs_a_file_it_then_removes() {
        let dir = tempfile::tempdir().unwrap();
        let seconds = probe_for(dir.path(), Duration::from_millis(50), None).unwrap();
        assert!(!seconds.is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let probe = Probe::of(seconds).unwrap();
        assert!(probe.p50_ms > 0.0 && probe.p50_ms <= probe.p99_ms);
        assert!(probe_for(&dir.path().join("missing"), Duration::ZERO, None).is_err());
    }
}
