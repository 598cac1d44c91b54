//! When requests start, when a run stops, and from when a latency counts. Pure: every time is
//! passed in, so the tests drive it with made-up instants.
//!
//! Closed loop (the default): a client sends its next request as soon as the last reply is in,
//! and a latency runs from sending to the end of the reply.
//!
//! Open loop (`--rate R`): every request has an *intended* start on a fixed schedule. Client `c`
//! of `N` sends every `N / R` seconds, so all clients together send `R` a second. A client still
//! has one request in flight at a time. When the server stalls, its next requests go late,
//! back to back, and each latency runs from the intended start, not from the late send. So the
//! stall shows in the percentiles, as with wrk2, rather than being hidden by a client that
//! politely waited (coordinated omission).
//!
//! ```text
//!   intended:  |----i0----|----i1----|----i2----|----i3----|      (every N/R)
//!   closed:    send0 .. reply0 send1 .. reply1 ...               latency = reply - send
//!   open:      i0 send0 ...... stall ...... reply0 send1 reply1  latency1 = reply1 - i1
//! ```
//!
//! A run measures a window: it opens when the last client has started (the end of
//! `--ramp-up`) and closes at `--duration` later, or when `--count` operations were claimed.
//! Steps claimed before the window are warm-up: done, but kept out of the table and the count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a run lasts when neither `--duration` nor `--count` is given.
pub const DURATION_DEFAULT: Duration = Duration::from_secs(10);

/// The grain of the runtime's timers: tokio rounds a sleep's deadline up to the next
/// millisecond, so a client sleeps until this much before an intended start and may send up to
/// this much early (never late by the timer's doing).
pub const TIMER_GRAIN: Duration = Duration::from_millis(1);

/// A request sent later than this after its intended start counts as late: within a timer's
/// grain is not a delay worth reporting.
pub const LATE_TOLERANCE: Duration = TIMER_GRAIN;

/// When the measured window opens and closes.
pub struct Bound {
    /// Steps whose start comes before this are warm-up.
    window_start: Instant,
    deadline: Option<Instant>,
    count: Option<u64>,
    /// Operations claimed in the window so far, a step at a time (only counted under `--count`).
    claimed: AtomicU64,
}

/// The answer to a client that wants to start a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Before the window: do it, but do not measure it.
    WarmUp,
    Measured,
    /// The run is over for this client.
    Over(Stop),
}

/// Which bound ended a client's run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Deadline,
    Count,
}

impl Bound {
    /// A window from `window_start`: `duration` long, or `count` operations, whichever first;
    /// [`DURATION_DEFAULT`] when neither is given.
    pub fn new(window_start: Instant, duration: Option<Duration>, count: Option<u64>) -> Bound {
        let duration = match (duration, count) {
            (None, None) => Some(DURATION_DEFAULT),
            (duration, _) => duration,
        };
        Bound {
            window_start,
            deadline: duration.map(|d| window_start + d),
            count,
            claimed: AtomicU64::new(0),
        }
    }

    pub fn window_start(&self) -> Instant {
        self.window_start
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Operations claimed in the window so far (at most the count plus one step per client).
    pub fn claimed(&self) -> u64 {
        self.claimed.load(Ordering::Relaxed)
    }

    /// Claims a step of `operations` meant to start at `start` (closed loop: now; open loop:
    /// its intended start), at `now`. A step past the deadline is refused even when it was meant
    /// to start before it: the open loop then stops rather than send its backlog.
    pub fn claim(&self, operations: u64, start: Instant, now: Instant) -> Claim {
        if self
            .deadline
            .is_some_and(|deadline| start >= deadline || now >= deadline)
        {
            return Claim::Over(Stop::Deadline);
        }
        if start < self.window_start {
            return Claim::WarmUp;
        }
        match self.count {
            Some(count) if self.claimed.fetch_add(operations, Ordering::Relaxed) >= count => {
                Claim::Over(Stop::Count)
            }
            Some(_) => Claim::Measured,
            None => {
                self.claimed.fetch_add(operations, Ordering::Relaxed);
                Claim::Measured
            }
        }
    }
}

/// The intended starts of one client's requests in the open loop: `first`, then every
/// `interval`.
#[derive(Clone, Debug)]
pub struct Schedule {
    first: Instant,
    interval: Duration,
    /// Requests taken so far.
    taken: u64,
}

impl Schedule {
    /// Client `index`'s share of `rate` requests a second among `clients`: one request every
    /// `clients / rate` seconds from `first`.
    pub fn new(first: Instant, clients: usize, rate: f64) -> Schedule {
        let interval = Duration::from_secs_f64(clients as f64 / rate).max(Duration::from_nanos(1));
        Schedule {
            first,
            interval,
            taken: 0,
        }
    }

    /// The intended start of request `k` (computed from `first`, so no error accumulates).
    fn at(&self, k: u64) -> Instant {
        let nanos = self.interval.as_nanos().saturating_mul(u128::from(k));
        self.first + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The intended start of the next request, without taking it.
    pub fn peek(&self) -> Instant {
        self.at(self.taken)
    }

    /// Takes the next request's intended start.
    pub fn take(&mut self) -> Instant {
        let at = self.peek();
        self.taken += 1;
        at
    }

    /// Requests meant to start before `deadline` that were never taken: what a client skips
    /// when the run ends while it is behind.
    pub fn missed(&self, deadline: Instant) -> u64 {
        let due = if deadline <= self.first {
            0
        } else {
            (deadline - self.first)
                .as_nanos()
                .div_ceil(self.interval.as_nanos())
        };
        u64::try_from(due)
            .unwrap_or(u64::MAX)
            .saturating_sub(self.taken)
    }
}

/// How one client paces its requests.
#[derive(Clone, Debug)]
pub enum Pacing {
    Closed,
    Open(Schedule),
}

impl Pacing {
    /// When the next request is meant to start, seen at `now`.
    pub fn peek(&self, now: Instant) -> Instant {
        match self {
            Pacing::Closed => now,
            Pacing::Open(schedule) => schedule.peek(),
        }
    }

    /// Takes the next request's intended start, seen at `now`.
    pub fn take(&mut self, now: Instant) -> Instant {
        match self {
            Pacing::Closed => now,
            Pacing::Open(schedule) => schedule.take(),
        }
    }
}

/// One request's start: when it was meant to go, and when it went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start {
    pub intended: Instant,
    pub sent: Instant,
}

impl Start {
    /// The latency of a request whose reply ended at `replied`: from the intended start, so
    /// the time a request waited behind a slow one counts; from the send when it went early
    /// (within a timer grain), since no reply can come before the request. In the closed loop
    /// both are the send.
    pub fn latency(&self, replied: Instant) -> Duration {
        replied.saturating_duration_since(self.intended.min(self.sent))
    }

    /// Sent noticeably after its intended start.
    pub fn late(&self) -> bool {
        self.sent.saturating_duration_since(self.intended) > LATE_TOLERANCE
    }
}

/// When client `index` of `clients` starts. With a ramp-up, not before `index / clients` of it.
/// In the open loop a client also keeps its own phase, `index / rate` into the common interval
/// `clients / rate`, so that together the clients send evenly: a ramp-up only delays a client
/// to its first slot after its ramp-up time, it never lines clients up on the same instant.
pub fn client_start(
    t0: Instant,
    index: usize,
    clients: usize,
    ramp_up: Duration,
    rate: Option<f64>,
) -> Instant {
    let ramped = t0 + ramp_up.mul_f64(index as f64 / clients.max(1) as f64);
    let Some(rate) = rate else {
        return ramped;
    };
    let nanos = |seconds: f64| (seconds * 1e9).round() as u128;
    let phase = nanos(index as f64 / rate);
    let interval = nanos(clients.max(1) as f64 / rate).max(1);
    let behind = (ramped - t0).as_nanos().saturating_sub(phase);
    let slot = phase + behind.div_ceil(interval) * interval;
    t0 + Duration::from_nanos(u64::try_from(slot).unwrap_or(u64::MAX))
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

/// A duration that may be zero (`--ramp-up 0`).
pub fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    if text.trim_end_matches(['s', 'm', 'h']).parse::<f64>() == Ok(0.0) {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

/// A positive, finite rate in requests a second.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "'{text}' is not a rate above zero (requests a second)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

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
        for text in ["0", "0s", "0ms"] {
            assert_eq!(parse_duration_or_zero(text), Ok(Duration::ZERO), "{text}");
        }
        assert_eq!(parse_duration_or_zero("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration_or_zero("x").is_err());
        assert_eq!(parse_rate("2500"), Ok(2500.0));
        for text in ["0", "-1", "inf", "NaN", "x"] {
            assert!(parse_rate(text).is_err(), "{text}");
        }
    }

    #[test]
    fn bound_defaults_to_ten_seconds_and_counts_whole_steps() {
        let now = Instant::now();
        let default = Bound::new(now, None, None);
        assert_eq!(default.deadline, Some(now + DURATION_DEFAULT));
        assert_eq!(default.claim(4, now, now), Claim::Measured);
        let end = now + DURATION_DEFAULT;
        assert_eq!(default.claim(4, end, end), Claim::Over(Stop::Deadline));
        // --count 9 in steps of four: three steps (12 operations), then no more.
        let count = Bound::new(now, None, Some(9));
        assert_eq!(count.deadline, None);
        let claims: Vec<_> = (0..5).map(|_| count.claim(4, now, now)).collect();
        assert_eq!(claims[..3], [Claim::Measured; 3]);
        assert_eq!(claims[3..], [Claim::Over(Stop::Count); 2]);
        // Both: whichever comes first.
        let both = Bound::new(now, Some(Duration::from_secs(1)), Some(1000));
        let later = now + Duration::from_secs(1);
        assert_eq!(both.claim(1, later, later), Claim::Over(Stop::Deadline));
    }

    #[test]
    fn steps_before_the_window_are_warm_up_and_not_counted() {
        // Ramp-up of 1 s: a step meant to start in it is warm-up and does not use the count.
        let t0 = Instant::now();
        let bound = Bound::new(t0 + Duration::from_secs(1), None, Some(2));
        assert_eq!(bound.claim(1, t0, t0), Claim::WarmUp);
        assert_eq!(bound.claim(1, t0 + 999 * MS, t0), Claim::WarmUp);
        assert_eq!(bound.claimed(), 0);
        let open = t0 + Duration::from_secs(1);
        assert_eq!(bound.claim(1, open, open), Claim::Measured);
        assert_eq!(bound.claim(1, open, open), Claim::Measured);
        assert_eq!(bound.claim(1, open, open), Claim::Over(Stop::Count));
        // The deadline counts from the window's start, not from the first client's.
        let timed = Bound::new(open, Some(Duration::from_secs(2)), None);
        assert_eq!(timed.deadline(), Some(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn a_step_meant_before_the_deadline_but_reached_after_it_is_not_sent() {
        // The open loop's cap: a client behind its schedule stops at the deadline.
        let t0 = Instant::now();
        let bound = Bound::new(t0, Some(Duration::from_secs(1)), None);
        let meant = t0 + 900 * MS;
        assert_eq!(bound.claim(1, meant, meant), Claim::Measured);
        assert_eq!(
            bound.claim(1, meant, t0 + 1500 * MS),
            Claim::Over(Stop::Deadline)
        );
    }

    #[test]
    fn open_loop_latency_includes_the_time_a_stalled_server_made_requests_wait() {
        // 4 clients at 400/s: each sends every 10 ms. The server stalls 100 ms on the first
        // request, then answers each in 1 ms.
        let t0 = Instant::now();
        let mut pacing = Pacing::Open(Schedule::new(t0, 4, 400.0));
        let mut now = t0;
        let mut latencies = Vec::new();
        let mut late = 0;
        for k in 0..5 {
            let intended = pacing.take(now);
            assert_eq!(
                intended,
                t0 + 10 * k * MS,
                "on the schedule, whatever happened"
            );
            now = now.max(intended);
            let start = Start {
                intended,
                sent: now,
            };
            now += if k == 0 { 100 * MS } else { MS };
            latencies.push(start.latency(now));
            late += u32::from(start.late());
        }
        // Each reply ended at 100, 101, 102, 103, 104 ms; the requests were meant at 0, 10, 20,
        // 30, 40 ms. A closed-loop count would say 100, 1, 1, 1, 1.
        let expected: Vec<_> = [100, 91, 82, 73, 64].map(|ms| ms * MS).into();
        assert_eq!(latencies, expected);
        assert_eq!(late, 4);
    }

    #[test]
    fn a_request_sent_early_by_the_timer_counts_from_its_send() {
        let t0 = Instant::now();
        let early = Start {
            intended: t0 + MS,
            sent: t0 + MS / 2,
        };
        assert_eq!(early.latency(t0 + 3 * MS), 5 * MS / 2);
        assert!(!early.late());
    }

    #[test]
    fn closed_loop_latency_runs_from_the_send() {
        let now = Instant::now();
        let mut pacing = Pacing::Closed;
        let start = Start {
            intended: pacing.take(now),
            sent: now,
        };
        assert_eq!(start.latency(now + 7 * MS), 7 * MS);
        assert!(!start.late());
    }

    #[test]
    fn missed_counts_the_schedule_left_unsent_before_the_deadline() {
        // Every 10 ms from t0: requests at 0..=90 ms are due before a 100 ms deadline.
        let t0 = Instant::now();
        let mut schedule = Schedule::new(t0, 1, 100.0);
        let deadline = t0 + 100 * MS;
        assert_eq!(schedule.missed(deadline), 10);
        for _ in 0..3 {
            schedule.take();
        }
        assert_eq!(schedule.missed(deadline), 7);
        assert_eq!(schedule.missed(t0), 0);
        for _ in 0..20 {
            schedule.take();
        }
        assert_eq!(schedule.missed(deadline), 0);
    }

    #[test]
    fn clients_start_spread_over_the_ramp_up_or_offset_by_the_rate() {
        let t0 = Instant::now();
        let starts = |ramp, rate| {
            (0..4)
                .map(move |c| client_start(t0, c, 4, ramp, rate) - t0)
                .collect()
        };
        let ramp: Vec<_> = starts(Duration::from_secs(2), None);
        assert_eq!(ramp, [0, 500, 1000, 1500].map(|ms| ms * MS));
        let open: Vec<_> = starts(Duration::ZERO, Some(100.0));
        assert_eq!(open, [0, 10, 20, 30].map(|ms| ms * MS));
        let closed: Vec<_> = starts(Duration::ZERO, None);
        assert_eq!(closed, [Duration::ZERO; 4]);
        // Both: each client waits for its ramp-up time, then takes the next slot of its own
        // phase (every 40 ms, offset 10 ms per client), so the clients never send together.
        let both: Vec<_> = starts(Duration::from_secs(2), Some(100.0));
        assert_eq!(both, [0, 530, 1020, 1510].map(|ms| ms * MS));
    }
}
