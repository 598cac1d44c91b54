//! The host's CPU utilisation, which `ldm list` shows as the control domain's UTIL: ldmd's host
//! is the control domain, so its busy share is that domain's. Read from the first line of
//! `/proc/stat` (the kernel's cumulative jiffies), as `top` and `vmstat` compute it: busy time
//! over all time between two samples. Sampled at most once a second, on the registry's thread
//! before a batch, so a listing costs no extra read.

use std::time::{Duration, Instant};

/// Samples closer together than this reuse the last figure: a jiffy is 10 ms, so shorter
/// windows would be mostly rounding.
const WINDOW_MIN: Duration = Duration::from_secs(1);

/// Cumulative CPU time of the whole host, in jiffies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// Parses the `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq steal ...
/// Idle and iowait are idle; guest times are already inside user and nice, so they are not
/// added twice. None for anything else.
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

/// Busy percent between two samples, one decimal as `ldm list` shows it; None when no time
/// passed or the counters went backwards (a different boot).
pub fn busy_percent(before: CpuTimes, after: CpuTimes) -> Option<f64> {
    let total = after.total.checked_sub(before.total).filter(|t| *t > 0)?;
    let busy = after.busy.checked_sub(before.busy)?.min(total);
    // Both counts are far below 2^52 between two samples a second apart.
    #[allow(clippy::cast_precision_loss)]
    let percent = busy as f64 * 100.0 / total as f64;
    Some((percent * 10.0).round() / 10.0)
}

/// The sampler the registry actor keeps.
#[derive(Debug, Default)]
pub struct HostLoad {
    last: Option<(Instant, CpuTimes)>,
    percent: Option<f64>,
}

impl HostLoad {
    /// A sampler with its first sample taken, so the first listing a second later has a
    /// figure.
    pub fn started() -> HostLoad {
        let mut load = HostLoad::default();
        load.sample();
        load
    }

    /// The busy share over the last window of at least a second; reads `/proc/stat` when the
    /// window is over. None until two samples exist, or where `/proc/stat` cannot be read.
    pub fn sample(&mut self) -> Option<f64> {
        self.sample_with(Instant::now(), || {
            std::fs::read_to_string("/proc/stat")
                .ok()
                .as_deref()
                .and_then(parse_proc_stat)
        })
    }

    fn sample_with(
        &mut self,
        now: Instant,
        read: impl FnOnce() -> Option<CpuTimes>,
    ) -> Option<f64> {
        if self
            .last
            .is_some_and(|(at, _)| now.duration_since(at) < WINDOW_MIN)
        {
            return self.percent;
        }
        let Some(times) = read() else {
            return self.percent;
        };
        if let Some((_, before)) = self.last {
            self.percent = busy_percent(before, times).or(self.percent);
        }
        self.last = Some((now, times));
        self.percent
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
    fn samples_closer_than_the_window_keep_the_last_figure() {
        let start = Instant::now();
        let times = |busy, total| move || Some(CpuTimes { busy, total });
        let mut load = HostLoad::default();
        assert_eq!(load.sample_with(start, times(0, 100)), None);
        // Within the window: not read again.
        assert_eq!(
            load.sample_with(start + WINDOW_MIN / 2, || panic!("read too soon")),
            None
        );
        assert_eq!(
            load.sample_with(start + WINDOW_MIN, times(50, 300)),
            Some(25.0)
        );
        // An unreadable or unchanged counter keeps the last figure.
        assert_eq!(
            load.sample_with(start + WINDOW_MIN * 2, || None),
            Some(25.0)
        );
        assert_eq!(
            load.sample_with(start + WINDOW_MIN * 3, times(50, 300)),
            Some(25.0)
        );
    }

    #[test]
    fn this_hosts_proc_stat_parses() {
        if let Ok(text) = std::fs::read_to_string("/proc/stat") {
            let times = parse_proc_stat(&text).expect("the kernel's cpu line");
            assert!(times.busy <= times.total);
        }
    }
}
