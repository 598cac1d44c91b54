//! What every scenario shares: where the server is and how to log in (the `Connect` flags), where
//! sessions connect from, and opening and closing many sessions at once.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Args;
use indicatif::ProgressBar;
use tokio::sync::Semaphore;

use crate::session::{self, Session, SessionError, Target};

#[derive(Args, Clone)]
pub struct Connect {
    /// The server's XMPP address.
    #[arg(long, default_value = "127.0.0.1:6482")]
    pub target: SocketAddr,
    /// XMPP domain to ask for (stream 'to', TLS server name).
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// User to authenticate as (SASL PLAIN); without it the session stops after TLS (enough for
    /// a local peer of ldmd).
    #[arg(long)]
    pub user: Option<String>,
    /// Password (or set LDM_PASSWORD).
    #[arg(long, env = "LDM_PASSWORD", hide_env_values = true, default_value = "")]
    pub password: String,
    /// The server's certificate (PEM) to verify against.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Do not verify the server's certificate.
    #[arg(long)]
    pub insecure: bool,
    /// Spread client source addresses over 127.0.0.1 .. 127.0.0.1+N-1 (loopback IPv4 targets
    /// only). Without it, a run keeps at most 200 sessions per address (ldmd allows 256 from
    /// one source by default) and spreads the rest by itself.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=16_777_214))]
    pub source_ips: Option<u32>,
    /// Full TLS handshakes only (rustls clients resume sessions by default).
    #[arg(long)]
    pub no_resumption: bool,
    /// Timeout for opening a session, and for each reply once it is open.
    #[arg(long, default_value = "30", value_name = "SECONDS")]
    pub timeout: u64,
}

impl Connect {
    /// The target every session shares: one TLS configuration, so that resumption works across
    /// sessions. [`Sources`] gives each session its own source address.
    pub fn target(&self) -> Result<Target, String> {
        let tls = session::client_tls(self.ca.as_deref(), self.insecure, !self.no_resumption)?;
        Ok(Target {
            addr: self.target,
            domain: self.domain.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            tls,
            source: None,
            timeout: Duration::from_secs(self.timeout),
        })
    }

    /// The source addresses for a run that holds `sessions` sessions at once: `--source-ips`,
    /// or as many loopback addresses as the ephemeral port range needs. As every run asks this
    /// once, it also warns when the descriptor limit is below the sessions.
    pub fn sources(&self, sessions: usize) -> Sources {
        let descriptors = crate::descriptor_limit();
        if (sessions as u64).saturating_add(DESCRIPTORS_SPARE) > descriptors {
            eprintln!(
                "ldm-load: warning: {sessions} sessions need more descriptors than the limit of \
                 {descriptors} (ulimit -n); the sessions past it will fail"
            );
        }
        let loopback_v4 = match self.target.ip() {
            IpAddr::V4(ip) => ip.is_loopback(),
            IpAddr::V6(_) => false,
        };
        if !loopback_v4 {
            return Sources { count: 1 };
        }
        let count = self
            .source_ips
            .unwrap_or_else(|| sources_needed(sessions, ephemeral_ports()));
        Sources { count }
    }
}

/// Where sessions connect from: one address (the kernel's choice), or `count` loopback
/// addresses from 127.0.0.1 up, round robin by session number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sources {
    pub count: u32,
}

impl Sources {
    /// The source address of session `index`; `None` leaves the choice to the kernel.
    pub fn addr(&self, index: usize) -> Option<IpAddr> {
        (self.count > 1).then(|| {
            let offset = (index % self.count as usize) as u32;
            IpAddr::V4(Ipv4Addr::from(
                u32::from(Ipv4Addr::new(127, 0, 0, 1)) + offset,
            ))
        })
    }
}

/// Descriptors a run needs besides its sessions (runtime, stdio, /metrics scrapes).
const DESCRIPTORS_SPARE: u64 = 64;

/// One source address's share: at most this part of its ephemeral ports, leaving room for
/// connections in TIME_WAIT and for other programs.
const PORT_SHARE_PERCENT: usize = 80;

/// Sessions per source address at most, so that a run stays within ldmd's default
/// `limits.connections_per_source_max` (256) without being told.
const SESSIONS_PER_SOURCE_MAX: usize = 200;

/// Source addresses enough for `sessions` at once when each has `ports` ephemeral ports, and
/// no more than [`SESSIONS_PER_SOURCE_MAX`] sessions on one.
fn sources_needed(sessions: usize, ports: usize) -> u32 {
    let per_source = (ports * PORT_SHARE_PERCENT / 100).clamp(1, SESSIONS_PER_SOURCE_MAX);
    u32::try_from(sessions.div_ceil(per_source).max(1)).unwrap_or(u32::MAX)
}

/// The size of the ephemeral port range (Linux's default, 32768-60999, if it cannot be read).
fn ephemeral_ports() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut bounds = text.split_whitespace().map(str::parse::<usize>);
            let (low, high) = (bounds.next()?.ok()?, bounds.next()?.ok()?);
            (high >= low).then(|| high - low + 1)
        })
        .unwrap_or(60999 - 32768 + 1)
}

/// Opens the sessions numbered `indices`, at most `gate`'s permits at a time, each from its
/// source address; the results come back in index order. `bar` advances by one per session
/// and its message counts failures.
pub async fn open_sessions(
    base: &Target,
    sources: Sources,
    indices: Range<usize>,
    gate: &Arc<Semaphore>,
    bar: &ProgressBar,
) -> Vec<Result<Session, SessionError>> {
    let failed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(indices.len());
    for index in indices {
        let mut target = base.clone();
        target.source = sources.addr(index);
        let (gate, bar, failed) = (gate.clone(), bar.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.expect("semaphore");
            let result = Session::open(&target).await;
            if result.is_err() {
                let failed = failed.fetch_add(1, Ordering::Relaxed) + 1;
                bar.set_message(format!("{failed} failed"));
            }
            bar.inc(1);
            result
        }));
    }
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.expect("session task"));
    }
    results
}

/// Closes every session, all at once.
pub async fn close_sessions(sessions: Vec<Session>) {
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|s| tokio::spawn(s.close()))
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_spread_over_loopback_sources_past_200_each_or_the_port_range() {
        // 28,232 ports (Linux's default range): 80% of them per address, 200 at most.
        let ports = 28_232;
        // At most 200 per source: ldmd's default allows 256 connections from one address.
        assert_eq!(sources_needed(200, ports), 1);
        assert_eq!(sources_needed(201, ports), 2);
        assert_eq!(sources_needed(10_000, ports), 50);
        assert_eq!(sources_needed(100_000, ports), 500);
        assert_eq!(sources_needed(0, ports), 1);
        // A small port range still decides when it is the tighter bound.
        assert_eq!(sources_needed(1000, 100), 13);
    }

    #[test]
    fn source_addresses_count_up_from_127_0_0_1_round_robin() {
        let one = Sources { count: 1 };
        assert_eq!(one.addr(5), None);
        let many = Sources { count: 300 };
        let addr = |i| many.addr(i).unwrap().to_string();
        assert_eq!(addr(0), "127.0.0.1");
        assert_eq!(addr(254), "127.0.0.255");
        assert_eq!(addr(255), "127.0.1.0");
        assert_eq!(addr(299), "127.0.1.44");
        assert_eq!(addr(300), "127.0.0.1");
    }

    #[test]
    fn only_a_loopback_ipv4_target_gets_spread_sources() {
        let connect = |target: &str, source_ips| Connect {
            target: target.parse().unwrap(),
            domain: "localhost".into(),
            user: None,
            password: String::new(),
            ca: None,
            insecure: true,
            source_ips,
            no_resumption: false,
            timeout: 30,
        };
        assert_eq!(connect("127.0.0.1:6482", Some(4)).sources(10).count, 4);
        assert_eq!(connect("127.0.0.1:6482", None).sources(10).count, 1);
        assert!(connect("127.0.0.1:6482", None).sources(1_000_000).count > 1);
        assert_eq!(
            connect("192.0.2.1:6482", Some(4)).sources(1_000_000).count,
            1
        );
        assert_eq!(connect("[::1]:6482", None).sources(1_000_000).count, 1);
    }
}
