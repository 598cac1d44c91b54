//! Failed logins, counted per source and per user over a window, so that a password-guessing
//! flood is answered `temporary-auth-failure` before it reaches the argon2 queue.
//!
//! Pure: the caller passes `now`. The rules:
//! - a source with `login_failures_per_source_max` failures in the window is refused;
//! - a user with `login_failures_per_user_max` failures in the window is refused, but only to
//!   sources that have failed in the window themselves: an attacker spread over many addresses
//!   cannot lock a user out of a source that has never failed, so a correct password from a
//!   clean source is always checked.
//!
//! Each key's window starts at its first failure and ends `window` later. Both tables are
//! bounded: when one is full, expired entries go first, then the oldest.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::limits::Limit;

/// What one source is counted as: an IPv4 address, or an IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.octets()),
                None => {
                    let mut prefix = [0; 8];
                    prefix.copy_from_slice(v6.octets().get(..8).unwrap_or(&[0; 8]));
                    Source::V6Prefix(prefix)
                }
            },
        }
    }
}

/// Who a login attempt comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoginSource {
    /// A TCP peer's address (an IPv6 /64 is one source).
    Ip(Source),
    /// A local peer on the Unix socket, by uid.
    Uid(u32),
}

/// Entries each table keeps at most (sources, user names).
pub const ENTRIES_MAX: usize = 65_536;

#[derive(Clone, Copy, Debug)]
struct Window {
    started: Instant,
    failures: u32,
}

/// The failure counts.
#[derive(Debug)]
pub struct LoginGuard {
    window: Duration,
    per_source_max: u32,
    per_user_max: u32,
    entries_max: usize,
    sources: HashMap<LoginSource, Window>,
    users: HashMap<String, Window>,
}

impl LoginGuard {
    pub fn new(window: Duration, per_source_max: u32, per_user_max: u32) -> LoginGuard {
        LoginGuard {
            window,
            per_source_max,
            per_user_max,
            entries_max: ENTRIES_MAX,
            sources: HashMap::new(),
            users: HashMap::new(),
        }
    }

    /// Whether a login as `user` from `source` may have its password checked now; the limit
    /// that refuses it otherwise.
    pub fn check(&self, now: Instant, source: LoginSource, user: &str) -> Result<(), Limit> {
        let source_failures = self.failures(&self.sources, &source, now);
        if source_failures >= self.per_source_max {
            return Err(Limit::LoginFailuresPerSource);
        }
        if source_failures > 0 && self.failures(&self.users, user, now) >= self.per_user_max {
            return Err(Limit::LoginFailuresPerUser);
        }
        Ok(())
    }

    /// Records a failed login; `account` is the user name when such an account exists. Only
    /// existing accounts are counted per user: names an attacker makes up cannot fill the table
    /// and push a real user's count out of it.
    pub fn failed(&mut self, now: Instant, source: LoginSource, account: Option<&str>) {
        let (window, entries_max) = (self.window, self.entries_max);
        count(&mut self.sources, source, now, window, entries_max);
        if let Some(user) = account {
            count(&mut self.users, user.to_owned(), now, window, entries_max);
        }
    }

    fn failures<K, Q>(&self, table: &HashMap<K, Window>, key: &Q, now: Instant) -> u32
    where
        K: std::borrow::Borrow<Q> + Hash + Eq,
        Q: Hash + Eq + ?Sized,
    {
        table
            .get(key)
            .filter(|w| now.saturating_duration_since(w.started) < self.window)
            .map_or(0, |w| w.failures)
    }
}

fn count<K: Hash + Eq>(
    table: &mut HashMap<K, Window>,
    key: K,
    now: Instant,
    window: Duration,
    entries_max: usize,
) {
    if table.len() >= entries_max && !table.contains_key(&key) {
        table.retain(|_, w| now.saturating_duration_since(w.started) < window);
        if table.len() >= entries_max {
            let oldest = table
                .iter()
                .min_by_key(|(_, w)| w.started)
                .map(|(_, w)| w.started);
            if let Some(oldest) = oldest {
                table.retain(|_, w| w.started != oldest);
            }
        }
    }
    let entry = table.entry(key).or_insert(Window {
        started: now,
        failures: 0,
    });
    if now.saturating_duration_since(entry.started) >= window {
        *entry = Window {
            started: now,
            failures: 0,
        };
    }
    entry.failures = entry.failures.saturating_add(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(300);

    fn ip(last: u8) -> LoginSource {
        LoginSource::Ip(Source::V4([192, 0, 2, last]))
    }

    #[test]
    fn a_source_that_keeps_failing_is_refused_for_the_window() {
        let mut guard = LoginGuard::new(WINDOW, 3, 100);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(guard.check(t0, ip(1), "alice"), Ok(()));
            guard.failed(t0, ip(1), Some("alice"));
        }
        assert_eq!(
            guard.check(t0, ip(1), "bob"),
            Err(Limit::LoginFailuresPerSource)
        );
        assert_eq!(guard.check(t0, ip(2), "bob"), Ok(()), "others go on");
        assert_eq!(guard.check(t0 + WINDOW, ip(1), "bob"), Ok(()), "it ends");
    }

    #[test]
    fn a_guessed_user_is_refused_only_to_sources_that_have_failed() {
        // Many sources each guessing once lock the user for themselves, never for a clean
        // source: the operator's own login still gets its password checked.
        let mut guard = LoginGuard::new(WINDOW, 100, 5);
        let t0 = Instant::now();
        for attacker in 10..20 {
            guard.failed(t0, ip(attacker), Some("alice"));
        }
        assert_eq!(
            guard.check(t0, ip(10), "alice"),
            Err(Limit::LoginFailuresPerUser)
        );
        assert_eq!(guard.check(t0, ip(1), "alice"), Ok(()), "a clean source");
        assert_eq!(guard.check(t0, ip(10), "bob"), Ok(()), "another user");
    }

    #[test]
    fn made_up_user_names_are_counted_per_source_only() {
        let mut guard = LoginGuard::new(WINDOW, 100, 1);
        let t0 = Instant::now();
        for n in 0..50u8 {
            guard.failed(t0, ip(n), None);
        }
        assert!(guard.users.is_empty());
        guard.failed(t0, ip(1), Some("alice"));
        assert_eq!(
            guard.check(t0, ip(1), "alice"),
            Err(Limit::LoginFailuresPerUser)
        );
    }

    #[test]
    fn tables_stay_bounded() {
        let mut guard = LoginGuard::new(WINDOW, 3, 3);
        guard.entries_max = 8;
        let t0 = Instant::now();
        for n in 0..100u8 {
            let at = t0 + Duration::from_millis(u64::from(n));
            guard.failed(at, ip(n), Some(&format!("user{n}")));
        }
        assert!(guard.sources.len() <= 8);
        assert!(guard.users.len() <= 8);
        // The newest are kept.
        assert_eq!(guard.failures(&guard.sources, &ip(99), t0), 1);
    }
}
