//! The host's CPU utilisation, which `ldm list` shows as the control domain's UTIL: ldmd's host
//! is the control domain, so its busy share is that domain's. Read from the first line of
//! `/proc/stat` (the kernel's cumulative jiffies): busy time over all time across the last
//! [`WINDOW`] of samples taken every [`PERIOD`], as Oracle averages a domain's utilisation
//! over ten seconds. A thread of its own samples, so the figure is as fresh when the registry
//! has been idle for an hour as under load, and listing costs the registry one atomic load.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often the sampler reads `/proc/stat`.
pub const PERIOD: Duration = Duration::from_secs(1);
/// How many periods one figure covers.
pub const WINDOW: usize = 10;

/// Cumulative CPU time of the whole host, in jiffies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// Parses the `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq steal ...
/// Idle and iowait are idle; stolen time counts as busy (the host's CPUs were not free for
/// it); guest times are already inside user and nice, so they are not added twice. None for
/// anything else.
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().next()?;
    let mut fields = line.split_ascii_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if values.len() < 4 {
        return None;
    }
    let total = values.iter().try_fold(0u64, |sum, v| sum.checked_add(*v))?;
    let idle = values
        .get(3)?
        .checked_add(values.get(4).copied().unwrap_or(0))?;
    Some(CpuTimes {
        busy: total.checked_sub(idle)?,
        total,
    })
}

/// Busy percent between two samples, to one decimal; None when no time passed or the
/// counters went backwards.
pub fn busy_percent(before: CpuTimes, after: CpuTimes) -> Option<f64> {
    let total = after.total.checked_sub(before.total).filter(|t| *t > 0)?;
    let busy = after.busy.checked_sub(before.busy)?.min(total);
    // Both counts are far below 2^52 over a window of seconds.
    #[allow(clippy::cast_precision_loss)]
    let percent = busy as f64 * 100.0 / total as f64;
    Some((percent * 10.0).round() / 10.0)
}

/// The last [`WINDOW`] + 1 samples; the figure spans the oldest to the newest.
#[derive(Debug, Default)]
pub struct Window {
    samples: VecDeque<CpuTimes>,
}

impl Window {
    /// Adds a sample (None: `/proc/stat` could not be read, which forgets the window, so
    /// that no stale figure is shown) and gives the busy share across the window.
    pub fn push(&mut self, sample: Option<CpuTimes>) -> Option<f64> {
        let Some(sample) = sample else {
            self.samples.clear();
            return None;
        };
        if self.samples.len() > WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        busy_percent(*self.samples.front()?, *self.samples.back()?)
    }
}

/// No figure, in the shared cell (a percentage is never NaN).
const NONE: u64 = u64::MAX;

/// The latest figure the sampler published.
#[derive(Clone, Debug)]
pub struct HostLoad {
    percent: Arc<AtomicU64>,
}

impl HostLoad {
    /// Starts the sampler thread; it reads `/proc/stat` every [`PERIOD`] for the life of the
    /// process. Where the thread cannot be started, there is no figure (UTIL stays blank).
    pub fn start() -> HostLoad {
        let load = HostLoad {
            percent: Arc::new(AtomicU64::new(NONE)),
        };
        let cell = load.percent.clone();
        let sampler = move || {
            let mut window = Window::default();
            loop {
                let sample = std::fs::read_to_string("/proc/stat")
                    .ok()
                    .as_deref()
                    .and_then(parse_proc_stat);
                let figure = window.push(sample).map_or(NONE, f64::to_bits);
                cell.store(figure, Ordering::Relaxed);
                std::thread::sleep(PERIOD);
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("ldmd-hostload".into())
            .spawn(sampler)
        {
            tracing::warn!(error = %e, "cannot start the host load sampler: the control domain's UTIL stays blank");
        }
        load
    }

    /// No sampler: no figure (benches, and tests that need none).
    pub fn unmeasured() -> HostLoad {
        HostLoad {
            percent: Arc::new(AtomicU64::new(NONE)),
        }
    }

    /// The host's busy share over the last window, in percent.
    pub fn percent(&self) -> Option<f64> {
        match self.percent.load(Ordering::Relaxed) {
            NONE => None,
            bits => Some(f64::from_bits(bits)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_line_gives_busy_and_total_jiffies() {
        let stat = "cpu  100 5 50 800 40 3 2 0 7 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n";
        // busy = user+nice+system+irq+softirq+steal = 160; idle+iowait = 840.
        assert_eq!(
            parse_proc_stat(stat),
            Some(CpuTimes {
                busy: 160,
                total: 1000
            })
        );
        assert_eq!(parse_proc_stat("intr 1 2 3\n"), None);
        assert_eq!(parse_proc_stat("cpu 1 x 3 4\n"), None);
        assert_eq!(parse_proc_stat("cpu 1 2\n"), None);
        assert_eq!(parse_proc_stat(""), None);
    }

    #[test]
    fn busy_percent_is_the_busy_share_of_the_window_to_one_decimal() {
        let a = CpuTimes {
            busy: 100,
            total: 1000,
        };
        let b = CpuTimes {
            busy: 133,
            total: 1300,
        };
        assert_eq!(busy_percent(a, b), Some(11.0));
        assert_eq!(busy_percent(a, a), None);
        assert_eq!(busy_percent(b, a), None);
    }

    #[test]
    fn the_window_covers_the_last_ten_periods_and_forgets_on_a_failed_read() {
        let at = |n: u64, busy_per_period: u64| CpuTimes {
            busy: n * busy_per_period,
            total: n * 100,
        };
        let mut window = Window::default();
        assert_eq!(window.push(Some(at(0, 0))), None, "one sample is no window");
        // Ten idle periods, then the host goes fully busy: the figure climbs by a tenth a
        // period, as the idle periods leave the window.
        for n in 1..=10 {
            assert_eq!(window.push(Some(at(n, 0))), Some(0.0));
        }
        let mut busy = at(10, 0);
        let mut figures = Vec::new();
        for _ in 0..10 {
            busy = CpuTimes {
                busy: busy.busy + 100,
                total: busy.total + 100,
            };
            figures.push(window.push(Some(busy)).unwrap());
        }
        assert_eq!(
            figures,
            [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]
        );
        assert_eq!(window.push(None), None);
        assert_eq!(window.push(Some(busy)), None, "the window starts again");
    }

    #[test]
    fn this_hosts_proc_stat_parses() {
        if let Ok(text) = std::fs::read_to_string("/proc/stat") {
            let times = parse_proc_stat(&text).expect("the kernel's cpu line");
            assert!(times.busy <= times.total);
        }
    }
}
