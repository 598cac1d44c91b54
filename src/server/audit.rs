//! The audit trail: one structured line per connection, login, refusal and change, under the
//! log target `ldmd::audit`, so that "who removed ldg1, and when" has an answer. `audit =
//! false` turns the target off (see `main`'s logging set-up); the lines go wherever the log
//! goes, as text or JSON (`log_format`).
//!
//! Connection and refusal lines are what a flood produces, so they are rate-limited per source
//! (per I/O thread): at most [`LINES_PER_WINDOW`] per [`WINDOW`], and the next line a source
//! gets after that says how many of its lines were left out (`suppressed`). Logins are already
//! bounded by the failed-login guard, and changes are the trail itself: neither is limited.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::auth::guard::LoginSource;
use crate::ldm::{Cmd, Document, Response, Role, Status};
use crate::xmpp::stream::Peer;

/// The log target of every audit line.
pub const TARGET: &str = "ldmd::audit";
/// The rate limit's window, per source.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Connection and refusal lines one source may produce per window.
pub const LINES_PER_WINDOW: u32 = 20;
/// Sources the limiter remembers; past it, sources whose window ended are forgotten first.
const SOURCES_MAX: usize = 4096;

/// A connection as the audit trail names it.
#[derive(Clone, Copy, Debug)]
pub struct Client {
    /// The peer's address, for TCP.
    pub addr: Option<SocketAddr>,
    pub peer: Peer,
    pub source: LoginSource,
}

impl Client {
    fn kind(&self) -> &'static str {
        match self.peer {
            Peer::Remote => "remote",
            Peer::Local { .. } => "local",
        }
    }

    fn transport(&self) -> &'static str {
        if self.addr.is_some() { "tcp" } else { "unix" }
    }

    /// `1.2.3.4:5678`, or `uid:1000` on the Unix socket.
    fn peer_text(&self) -> String {
        match (self.addr, self.source) {
            (Some(addr), _) => addr.to_string(),
            (None, LoginSource::Uid(uid)) => format!("uid:{uid}"),
            (None, LoginSource::Ip(_)) => "unknown".to_owned(),
        }
    }
}

/// A connection whose TLS session is up.
pub fn connection(client: &Client, tls_version: &str, suppressed: u64) {
    let uid = local_uid(client.peer);
    tracing::info!(
        target: TARGET,
        event = "connection",
        peer = %client.peer_text(),
        transport = client.transport(),
        kind = client.kind(),
        uid,
        tls = tls_version,
        suppressed,
        "connection"
    );
}

/// A local peer, authorized by its uid (no SASL): logged with its connection.
pub fn local_login(client: &Client) {
    if let Peer::Local { uid, role } = client.peer {
        tracing::info!(
            target: TARGET,
            event = "login",
            peer = %client.peer_text(),
            uid,
            method = "peer-credentials",
            role = role.as_str(),
            outcome = if role == Role::None { "no-role" } else { "success" },
            "login"
        );
    }
}

/// A SASL PLAIN login and how it ended (`failure`: the SASL condition sent).
pub fn sasl_login(client: &Client, user: &str, role: Option<Role>, failure: Option<&str>) {
    tracing::info!(
        target: TARGET,
        event = "login",
        peer = %client.peer_text(),
        user,
        method = "sasl-plain",
        role = role.map(Role::as_str),
        outcome = if failure.is_none() { "success" } else { "failure" },
        reason = failure,
        "login"
    );
}

/// A connection refused or ended by a limit or a rule.
pub fn refusal(client: &Client, condition: &str, limit: Option<&str>, suppressed: u64) {
    tracing::info!(
        target: TARGET,
        event = "refusal",
        peer = %client.peer_text(),
        transport = client.transport(),
        condition,
        limit,
        suppressed,
        "refusal"
    );
}

/// Who sent a change.
#[derive(Clone, Copy, Debug)]
pub enum Actor<'a> {
    User(&'a str),
    Uid(u32),
}

/// The domains each cmd of a document names, kept until its reply: a cmd refused as a whole
/// (not authorized, malformed) echoes no objects, yet its audit line should name them. Empty,
/// without allocating, for a document that changes nothing.
pub type Requested = Vec<Vec<String>>;

pub fn requested_domains(document: &Document) -> Requested {
    let changes = |cmd: &Cmd| {
        let action = cmd.action.as_ref().and_then(|a| a.known());
        action.is_none_or(|a| a.role() != Role::Read)
    };
    if !document.cmds.iter().any(changes) {
        return Vec::new();
    }
    document
        .cmds
        .iter()
        .map(|cmd| {
            let envelopes = cmd.data.iter().filter_map(|d| d.envelope.as_ref());
            envelopes
                .flat_map(|e| e.contents.iter().map(|c| c.id.clone()))
                .collect()
        })
        .collect()
}

/// One line per cmd and domain of `response` whose action changes something: `requested` is
/// what [`requested_domains`] kept of its document, `latency` from the document's arrival to
/// its reply.
pub fn changes(
    actor: Actor<'_>,
    client: &Client,
    response: &Response,
    requested: &Requested,
    latency: Duration,
) {
    let latency_ms = latency.as_secs_f64() * 1000.0;
    for (index, cmd) in response.cmds.iter().enumerate() {
        let Some(action) = cmd.action.as_ref() else {
            continue;
        };
        // A read is not a change; an action this daemon does not know is logged as attempted.
        if action.known().is_some_and(|a| a.role() == Role::Read) {
            continue;
        }
        let line = |domain: &str, status: Status, reason: Option<&str>| {
            let outcome = status.as_str();
            let (user, uid) = match actor {
                Actor::User(user) => (Some(user), None),
                Actor::Uid(uid) => (None, Some(uid)),
            };
            tracing::info!(
                target: TARGET,
                event = "write",
                peer = %client.peer_text(),
                user,
                uid,
                action = action.as_str(),
                domain,
                outcome,
                reason,
                latency_ms,
                "write"
            );
        };
        if let Some(failure) = &cmd.failure {
            let named = requested.get(index).filter(|d| !d.is_empty());
            match named {
                Some(domains) => domains
                    .iter()
                    .for_each(|d| line(d, Status::Failure, Some(failure))),
                None => line("-", Status::Failure, Some(failure)),
            }
            continue;
        }
        for data in &cmd.data {
            let reason = data.messages.first().map(String::as_str);
            let reason = reason.filter(|_| data.status != Status::Success);
            let contents = data.data.envelope.as_ref().map(|e| &e.contents[..]);
            match contents {
                Some(contents) if !contents.is_empty() => {
                    for content in contents {
                        line(&content.id, data.status, reason);
                    }
                }
                // SP configurations and services belong to no domain.
                _ => line("-", data.status, reason),
            }
        }
    }
}

fn local_uid(peer: Peer) -> Option<u32> {
    match peer {
        Peer::Local { uid, .. } => Some(uid),
        Peer::Remote => None,
    }
}

/// What the limiter says of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it, saying how many of the source's lines were left out before it.
    Log {
        suppressed: u64,
    },
    Suppress,
}

/// The per-source rate limit of connection and refusal lines. Pure: the caller passes `now`.
#[derive(Debug)]
pub struct Limiter {
    sources: HashMap<LoginSource, Window>,
    window: Duration,
    per_window: u32,
    sources_max: usize,
    /// Lines left out for sources forgotten while the table was full, told with the next line
    /// of any source.
    forgotten_suppressed: u64,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    lines: u32,
    suppressed: u64,
}

impl Default for Limiter {
    fn default() -> Limiter {
        Limiter::new(WINDOW, LINES_PER_WINDOW, SOURCES_MAX)
    }
}

impl Limiter {
    pub fn new(window: Duration, per_window: u32, sources_max: usize) -> Limiter {
        Limiter {
            sources: HashMap::new(),
            window,
            per_window,
            sources_max,
            forgotten_suppressed: 0,
        }
    }

    /// Whether a line of `source` is logged at `now`.
    pub fn admit(&mut self, source: LoginSource, now: Instant) -> Verdict {
        if !self.sources.contains_key(&source) && self.sources.len() >= self.sources_max {
            self.forget_ended(now);
        }
        if !self.sources.contains_key(&source) && self.sources.len() >= self.sources_max {
            // Still full of live sources: a flood from many addresses. Counted, told later.
            self.forgotten_suppressed = self.forgotten_suppressed.saturating_add(1);
            return Verdict::Suppress;
        }
        let window = self.sources.entry(source).or_insert(Window {
            started: now,
            lines: 0,
            suppressed: 0,
        });
        if now.saturating_duration_since(window.started) >= self.window {
            window.started = now;
            window.lines = 0;
        }
        if window.lines >= self.per_window {
            window.suppressed = window.suppressed.saturating_add(1);
            return Verdict::Suppress;
        }
        window.lines += 1;
        let suppressed = std::mem::take(&mut window.suppressed)
            .saturating_add(std::mem::take(&mut self.forgotten_suppressed));
        Verdict::Log { suppressed }
    }

    /// Drops the sources whose window has ended; what they had left out is kept in one count.
    fn forget_ended(&mut self, now: Instant) {
        let window = self.window;
        let mut forgotten = 0u64;
        self.sources.retain(|_, w| {
            let ended = now.saturating_duration_since(w.started) >= window;
            if ended {
                forgotten = forgotten.saturating_add(w.suppressed);
            }
            !ended
        });
        self.forgotten_suppressed = self.forgotten_suppressed.saturating_add(forgotten);
    }

    pub fn sources(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::guard::Source;

    fn ip(last: u8) -> LoginSource {
        LoginSource::Ip(Source::V4([10, 0, 0, last]))
    }

    #[test]
    fn a_source_gets_its_lines_per_window_then_hears_how_many_were_left_out() {
        let mut limiter = Limiter::new(Duration::from_secs(10), 3, 16);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.admit(ip(1), t0), Verdict::Log { suppressed: 0 });
        }
        for _ in 0..5 {
            assert_eq!(limiter.admit(ip(1), t0), Verdict::Suppress);
        }
        // Another source is not affected.
        assert_eq!(limiter.admit(ip(2), t0), Verdict::Log { suppressed: 0 });
        let later = t0 + Duration::from_secs(10);
        assert_eq!(limiter.admit(ip(1), later), Verdict::Log { suppressed: 5 });
        assert_eq!(limiter.admit(ip(1), later), Verdict::Log { suppressed: 0 });
    }

    #[test]
    fn the_table_stays_bounded_and_forgotten_counts_are_still_told() {
        let mut limiter = Limiter::new(Duration::from_secs(10), 1, 2);
        let t0 = Instant::now();
        assert_eq!(limiter.admit(ip(1), t0), Verdict::Log { suppressed: 0 });
        assert_eq!(limiter.admit(ip(1), t0), Verdict::Suppress);
        assert_eq!(limiter.admit(ip(2), t0), Verdict::Log { suppressed: 0 });
        // Full of live sources: a third is counted, not remembered.
        assert_eq!(limiter.admit(ip(3), t0), Verdict::Suppress);
        assert_eq!(limiter.sources(), 2);
        // Once their windows end, they are forgotten to make room; nothing left out is lost.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(limiter.admit(ip(4), later), Verdict::Log { suppressed: 2 });
        assert!(limiter.sources() <= 2);
    }
}
