//! Who may open a connection: the connection limits, all in one place.
//!
//! - TCP: `connections_max` in all, and `connections_per_source_max` from one source address
//!   (an IPv6 /64 counts as one source: a host usually holds a whole /64).
//! - Unix socket: `unix_connections_max` in all, of which `unix_connections_reserved` only root
//!   and the daemon's own uid may take, and `connections_per_uid_max` for any one other uid, so
//!   that no local user can lock the operator out (a `read` uid is exempt from the idle timeout
//!   and would otherwise hold its slots forever).
//!
//! An admitted connection holds a [`Ticket`]; dropping it gives the slot back, so no path out of
//! a connection can leak a count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub use crate::auth::guard::Source;
use crate::limits::{Limit, Limits};
use crate::xmpp::error::{StreamError, StreamErrorCondition};

/// The counts behind the connection limits, shared by every I/O thread.
#[derive(Debug)]
pub struct Admission {
    connections_max: usize,
    connections_per_source_max: usize,
    unix_connections_max: usize,
    unix_connections_reserved: usize,
    connections_per_uid_max: usize,
    /// The uid the daemon runs as: it may take reserved Unix slots, as root may.
    owner_uid: u32,
    tcp_open: AtomicUsize,
    unix_open: AtomicUsize,
    by_source: Mutex<HashMap<Source, usize>>,
    by_uid: Mutex<HashMap<u32, usize>>,
}

/// A counted connection; dropping it releases its slot.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    slot: Slot,
}

#[derive(Debug)]
enum Slot {
    Tcp(Source),
    Unix { uid: u32, per_uid: bool },
}

impl Admission {
    pub fn new(limits: &Limits, owner_uid: u32) -> Arc<Admission> {
        Arc::new(Admission {
            connections_max: limits.connections_max,
            connections_per_source_max: limits.connections_per_source_max,
            unix_connections_max: limits.unix_connections_max,
            unix_connections_reserved: limits.unix_connections_reserved,
            connections_per_uid_max: limits.connections_per_uid_max,
            owner_uid,
            tcp_open: AtomicUsize::new(0),
            unix_open: AtomicUsize::new(0),
            by_source: Mutex::new(HashMap::new()),
            by_uid: Mutex::new(HashMap::new()),
        })
    }

    /// Admits a TCP connection from `peer`, or says which limit refuses it.
    pub fn admit_tcp(self: &Arc<Self>, peer: IpAddr) -> Result<Ticket, StreamError> {
        let source = Source::of(peer);
        if !take(&self.tcp_open, self.connections_max) {
            return Err(refusal(Limit::Connections, "too many connections"));
        }
        let mut by_source = lock(&self.by_source);
        let count = by_source.entry(source).or_insert(0);
        if *count >= self.connections_per_source_max {
            drop(by_source);
            self.tcp_open.fetch_sub(1, Ordering::AcqRel);
            return Err(refusal(
                Limit::ConnectionsPerSource,
                "too many connections from this address",
            ));
        }
        *count = count.saturating_add(1);
        Ok(Ticket {
            admission: self.clone(),
            slot: Slot::Tcp(source),
        })
    }

    /// Admits a Unix-socket connection of `uid`, or says which limit refuses it.
    pub fn admit_unix(self: &Arc<Self>, uid: u32) -> Result<Ticket, StreamError> {
        let privileged = uid == 0 || uid == self.owner_uid;
        let open_max = if privileged {
            self.unix_connections_max
        } else {
            self.unix_connections_max
                .saturating_sub(self.unix_connections_reserved)
        };
        if !take(&self.unix_open, open_max) {
            let limit = if privileged || open_max == self.unix_connections_max {
                Limit::UnixConnections
            } else {
                Limit::UnixConnectionsReserved
            };
            return Err(refusal(limit, "too many local connections"));
        }
        if !privileged {
            let mut by_uid = lock(&self.by_uid);
            let count = by_uid.entry(uid).or_insert(0);
            if *count >= self.connections_per_uid_max {
                drop(by_uid);
                self.unix_open.fetch_sub(1, Ordering::AcqRel);
                return Err(refusal(
                    Limit::ConnectionsPerUid,
                    "too many local connections of this user",
                ));
            }
            *count = count.saturating_add(1);
        }
        Ok(Ticket {
            admission: self.clone(),
            slot: Slot::Unix {
                uid,
                per_uid: !privileged,
            },
        })
    }

    /// Open connections: (TCP, Unix).
    pub fn open(&self) -> (usize, usize) {
        (
            self.tcp_open.load(Ordering::Acquire),
            self.unix_open.load(Ordering::Acquire),
        )
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let admission = &self.admission;
        match self.slot {
            Slot::Tcp(source) => {
                admission.tcp_open.fetch_sub(1, Ordering::AcqRel);
                release(&admission.by_source, source);
            }
            Slot::Unix { uid, per_uid } => {
                admission.unix_open.fetch_sub(1, Ordering::AcqRel);
                if per_uid {
                    release(&admission.by_uid, uid);
                }
            }
        }
    }
}

/// Takes one of `max` slots counted in `open`.
fn take(open: &AtomicUsize, max: usize) -> bool {
    open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
        (n < max).then(|| n.saturating_add(1))
    })
    .is_ok()
}

fn release<K: std::hash::Hash + Eq>(counts: &Mutex<HashMap<K, usize>>, key: K) {
    let mut counts = lock(counts);
    if let Some(count) = counts.get_mut(&key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(&key); // bounded by the open connections, never by history
        }
    }
}

/// The maps hold plain counts: a panic elsewhere cannot leave them half-written.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn refusal(limit: Limit, text: &'static str) -> StreamError {
    // Counted by the actor when it sends this error, like every limit.
    StreamError::limit(StreamErrorCondition::ResourceConstraint, limit, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(tweak: impl FnOnce(&mut Limits)) -> Arc<Admission> {
        let mut limits = Limits::default();
        tweak(&mut limits);
        Admission::new(&limits, 1000)
    }

    #[test]
    fn one_source_cannot_take_every_tcp_slot() {
        let admission = admission(|l| {
            l.connections_max = 10;
            l.connections_per_source_max = 3;
        });
        let attacker: IpAddr = "192.0.2.7".parse().unwrap();
        let held: Vec<_> = (0..3)
            .map(|_| admission.admit_tcp(attacker).unwrap())
            .collect();
        let refused = admission.admit_tcp(attacker).unwrap_err();
        assert_eq!(refused.limit, Some(Limit::ConnectionsPerSource));
        assert!(admission.admit_tcp("192.0.2.8".parse().unwrap()).is_ok());
        drop(held);
        assert!(admission.admit_tcp(attacker).is_ok(), "slots come back");
        assert_eq!(admission.open(), (0, 0), "every ticket was dropped");
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a), Source::of(b));
        assert_ne!(Source::of(a), Source::of(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(Source::of(mapped), Source::of("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn reserved_unix_slots_stay_for_root_and_the_daemons_uid() {
        let admission = admission(|l| {
            l.unix_connections_max = 6;
            l.unix_connections_reserved = 2;
            l.connections_per_uid_max = 3;
        });
        let mut held = Vec::new();
        held.extend((0..3).map(|_| admission.admit_unix(2001).unwrap()));
        assert_eq!(
            admission.admit_unix(2001).unwrap_err().limit,
            Some(Limit::ConnectionsPerUid)
        );
        held.push(admission.admit_unix(2002).unwrap());
        assert_eq!(
            admission.admit_unix(2003).unwrap_err().limit,
            Some(Limit::UnixConnectionsReserved),
            "the last two slots are reserved"
        );
        held.push(admission.admit_unix(0).unwrap());
        held.push(admission.admit_unix(1000).unwrap());
        assert_eq!(
            admission.admit_unix(0).unwrap_err().limit,
            Some(Limit::UnixConnections)
        );
        drop(held);
        assert_eq!(admission.open(), (0, 0));
        assert!(lock(&admission.by_uid).is_empty());
    }
}
