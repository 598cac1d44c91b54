//! What every scenario shares: where the server is and how to log in (the `Connect` flags), and
//! opening and closing many sessions at once.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Args;
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
    /// Spread client source addresses over 127.0.0.1..=127.0.0.N (loopback targets), so that
    /// more than ~28,000 connections fit in the ephemeral port range.
    #[arg(long, default_value_t = 1)]
    pub source_ips: u8,
    /// Full TLS handshakes only (rustls clients resume sessions by default).
    #[arg(long)]
    pub no_resumption: bool,
    /// Timeout for opening a session, and for each reply once it is open.
    #[arg(long, default_value = "30", value_name = "SECONDS")]
    pub timeout: u64,
}

impl Connect {
    /// The target every session shares: one TLS configuration, so that resumption works across
    /// sessions. [`Connect::source`] gives each session its own source address.
    pub fn target(&self) -> Result<Target, String> {
        let tls = session::client_tls(self.ca.as_deref(), self.insecure, !self.no_resumption)?;
        Ok(Target {
            addr: self.target,
            domain: self.domain.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            tls,
            source: self.source(0),
            timeout: Duration::from_secs(self.timeout),
        })
    }

    /// The source address of session `index` when `--source-ips` spreads them.
    pub fn source(&self, index: usize) -> Option<IpAddr> {
        (self.source_ips > 1 && self.target.ip().is_loopback() && self.target.is_ipv4()).then(
            || {
                IpAddr::V4(Ipv4Addr::new(
                    127,
                    0,
                    0,
                    1 + (index % self.source_ips as usize) as u8,
                ))
            },
        )
    }
}

/// Sessions opened and failed so far, for a progress line.
#[derive(Default)]
pub struct OpenCounts {
    pub opened: AtomicUsize,
    pub failed: AtomicUsize,
}

/// Opens the sessions numbered `indices`, at most `gate`'s permits at a time; the results come
/// back in index order.
pub async fn open_sessions(
    connect: &Connect,
    base: &Target,
    indices: Range<usize>,
    gate: &Arc<Semaphore>,
    counts: &Arc<OpenCounts>,
) -> Vec<Result<Session, SessionError>> {
    let mut tasks = Vec::with_capacity(indices.len());
    for index in indices {
        let mut target = base.clone();
        target.source = connect.source(index);
        let (gate, counts) = (gate.clone(), counts.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.expect("semaphore");
            let result = Session::open(&target).await;
            match &result {
                Ok(_) => counts.opened.fetch_add(1, Ordering::Relaxed),
                Err(_) => counts.failed.fetch_add(1, Ordering::Relaxed),
            };
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

/// A progress bar on stderr while `total` sessions open; abort the task when done.
pub async fn open_progress(total: usize, counts: Arc<OpenCounts>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let (o, f) = (
            counts.opened.load(Ordering::Relaxed),
            counts.failed.load(Ordering::Relaxed),
        );
        let width = 40;
        let done = ((o + f) * width / total.max(1)).min(width);
        eprint!(
            "\r[{}{}] {o}/{total} open, {f} errors",
            "#".repeat(done),
            " ".repeat(width - done)
        );
    }
}
