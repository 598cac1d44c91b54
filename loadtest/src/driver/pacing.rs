//! When a run stops: the `--duration` and `--count` bounds, and how durations are written.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::ldm::Action;

/// How long a run lasts when neither `--duration` nor `--count` is given.
pub const DURATION_DEFAULT: Duration = Duration::from_secs(10);

/// When clients stop starting cycles.
pub struct Bound {
    deadline: Option<Instant>,
    count: Option<u64>,
    /// Operations claimed so far, a cycle at a time (only counted under `--count`).
    claimed: AtomicU64,
}

impl Bound {
    pub fn new(duration: Option<Duration>, count: Option<u64>, now: Instant) -> Bound {
        let duration = match (duration, count) {
            (None, None) => Some(DURATION_DEFAULT),
            (duration, _) => duration,
        };
        Bound {
            deadline: duration.map(|d| now + d),
            count,
            claimed: AtomicU64::new(0),
        }
    }

    /// Claims the next cycle, or says the run is over.
    pub fn claim_cycle(&self, now: Instant) -> bool {
        if self.deadline.is_some_and(|deadline| now >= deadline) {
            return false;
        }
        match self.count {
            None => true,
            Some(count) => {
                let cycle = Action::CYCLE.len() as u64;
                self.claimed.fetch_add(cycle, Ordering::Relaxed) < count
            }
        }
    }
}

/// `10s`, `500ms`, `2m`, `1h`, or a bare number of seconds; fractions too (`1.5s`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("'{text}' is not a duration (like 10s, 500ms, 2m)");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(bad()),
    };
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("'{text}' must be more than zero")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_and_must_be_positive() {
        for (text, expected) in [
            ("10s", Duration::from_secs(10)),
            ("10", Duration::from_secs(10)),
            ("500ms", Duration::from_millis(500)),
            ("1.5s", Duration::from_millis(1500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for text in ["", "s", "10x", "-1s", "1e3", "0s", "0", "1..2s"] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
    }

    #[test]
    fn bound_defaults_to_ten_seconds_and_counts_whole_cycles() {
        let now = Instant::now();
        let default = Bound::new(None, None, now);
        assert_eq!(default.deadline, Some(now + DURATION_DEFAULT));
        assert!(default.claim_cycle(now));
        assert!(!default.claim_cycle(now + DURATION_DEFAULT));
        // --count 9: three cycles of four (12 operations), then no more.
        let count = Bound::new(None, Some(9), now);
        assert_eq!(count.deadline, None);
        let claimed = (0..10).filter(|_| count.claim_cycle(now)).count();
        assert_eq!(claimed, 3);
        // Both: whichever comes first.
        let both = Bound::new(Some(Duration::from_secs(1)), Some(1000), now);
        assert!(!both.claim_cycle(now + Duration::from_secs(1)));
    }
}
