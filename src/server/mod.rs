//! The I/O shell: listeners, connection actors, buffer pools, the handler thread, shutdown.

pub mod admission;
pub mod audit;
pub mod certs;
mod conn;
pub mod dispatch;
mod io_thread;
pub mod listener;
mod nonblocking;
pub mod pool;
pub mod runtime;
mod shell;
mod subscribers;

use crate::registry::replica::ReadPath;
use crate::xmpp::IdSource;

/// The operating system's CSPRNG, for stream ids and generated resources.
#[derive(Debug, Default)]
pub struct OsRandom;

impl IdSource for OsRandom {
    fn fill(&self, bytes: &mut [u8]) {
        getrandom::fill(bytes).expect("the OS random number generator is unavailable");
    }
}

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use crate::auth::guard::LoginGuard;
use crate::auth::verifier::{OnAccountsChanged, ResolverKey};
use crate::auth::{UserStore, Verifier, VerifierConfig};
use crate::config::Config;
use crate::server::dispatch::{Backend, ToIo};
use crate::server::io_thread::{Shared, ThreadSetup};
use crate::xmpp::connection::ConnectionConfig;
use crate::xmpp::stream::StreamConfig;

/// Documents waiting for the handler thread, all connections together.
const HANDLER_QUEUE_MAX: usize = 1024;
/// Answers waiting for one I/O thread's router.
const MAILBOX_MAX: usize = 4096;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("state directory {path}: {source}")]
    StateDir { path: PathBuf, source: io::Error },
    #[error("TLS certificate: {0}")]
    Certificate(String),
    #[error("user store: {0}")]
    Users(#[from] crate::auth::store::StoreError),
    #[error(transparent)]
    Listen(#[from] listener::ListenError),
    #[error("cannot start a thread: {0}")]
    Thread(io::Error),
    #[error(transparent)]
    Runtime(#[from] runtime::Unavailable),
    #[error("cannot start the {runtime} runtime of an I/O thread: {source}")]
    ThreadRuntime {
        runtime: runtime::Runtime,
        source: io::Error,
    },
}

/// A running daemon: its addresses, and the threads to stop.
pub struct Server {
    /// The XMPP listeners' addresses, as bound (a configured port 0 shows its real port).
    pub tcp_addrs: Vec<SocketAddr>,
    pub socket_path: PathBuf,
    /// SHA-256 of the TLS certificate.
    pub fingerprint: String,
    /// The certificate was generated at this start.
    pub certificate_generated: bool,
    /// What the I/O threads run on.
    pub runtime: runtime::Runtime,
    mailboxes: Vec<mpsc::Sender<ToIo>>,
    io_threads: Vec<JoinHandle<()>>,
    handler_thread: Option<JoinHandle<()>>,
    verifier: Option<Verifier>,
}

impl Server {
    /// Binds everything, starts every thread, and returns once the daemon accepts connections.
    pub fn start(config: Config, backend: Box<dyn Backend>) -> Result<Server, StartError> {
        Server::start_with(config, backend, ResolverKey::default(), None)
    }

    /// [`Server::start`], with the tokens of the migrations this daemon is the target of, as
    /// its registry publishes them (a source's resolver logs in with one), and the read path
    /// its replicas come through.
    pub fn start_with(
        config: Config,
        backend: Box<dyn Backend>,
        resolvers: ResolverKey,
        reads: Option<Arc<ReadPath>>,
    ) -> Result<Server, StartError> {
        // First, so that a runtime that cannot work leaves nothing behind.
        let runtime = runtime::resolve(config.runtime)?;
        tracing::info!(runtime = %runtime, "I/O runtime");
        crate::metrics::get().runtime(runtime);
        let state_err = |source| StartError::StateDir {
            path: config.state_dir.clone(),
            source,
        };
        crate::auth::store::create_private_dir(&config.state_dir).map_err(state_err)?;
        UserStore::load(&config.users_file())?;

        let mut names = config.domains.clone();
        names.extend(["127.0.0.1".to_owned(), "::1".to_owned()]);
        let configured = config
            .tls
            .cert_and_key
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()));
        let (identity, generated) = certs::load_or_generate(configured, &config.state_dir, &names)
            .map_err(|e| StartError::Certificate(e.to_string()))?;
        let fingerprint = identity.fingerprint();
        let tls = certs::server_config(identity, config.tls.allow_tls13)
            .map_err(|e| StartError::Certificate(e.to_string()))?;

        let threads = config.io_threads.max(1);
        let mut groups = Vec::new();
        for addr in &config.listen {
            groups.push(listener::bind_tcp_group(*addr, threads)?);
        }
        let tcp_addrs = groups
            .iter()
            .filter_map(|g| g[0].local_addr().ok())
            .collect();
        let unix = listener::bind_unix(&config.socket)?;

        let (mailboxes, mut receivers): (Vec<_>, Vec<_>) =
            (0..threads).map(|_| mpsc::channel(MAILBOX_MAX)).unzip();
        let limits = &config.limits;
        let verifier_config = VerifierConfig {
            users_file: config.users_file(),
            threads: config.auth.verifier_threads,
            queue_max: limits.auth_queue_max,
            remembered_max: config.auth.cache_entries_max,
            guard: LoginGuard::new(
                limits.login_failure_window(),
                limits.login_failures_per_source_max,
                limits.login_failures_per_user_max,
            ),
            resolvers,
        };
        // Every I/O thread hears of a change of the accounts, to end or downgrade its streams.
        let tell = mailboxes.clone();
        let on_change: OnAccountsChanged = Box::new(move |accounts| {
            for mailbox in &tell {
                let _ = mailbox.blocking_send(ToIo::Accounts(accounts.clone()));
            }
        });
        let verifier =
            Verifier::start(verifier_config, Some(on_change)).map_err(StartError::Thread)?;
        let connection = Arc::new(ConnectionConfig {
            stream: Arc::new(StreamConfig {
                domains: config.domains.clone(),
                sasl_attempts_max: config.limits.sasl_attempts_max,
                requests_in_flight_max: config.limits.requests_in_flight_max,
            }),
            framer: config.limits.framer(),
            tls,
            ids: Arc::new(OsRandom),
            auth_timeout: config.limits.auth_timeout(),
            idle_timeout: config.limits.idle_timeout(),
        });
        let socket_path = config.socket.clone();
        let admission = admission::Admission::new(&config.limits, config.owner_uid);
        let shared = Arc::new(Shared {
            config: Arc::new(config),
            connection,
            verifier: verifier.clone(),
            admission,
            accepted: std::sync::atomic::AtomicU64::new(0),
            metrics: crate::metrics::get(),
            reads,
        });

        let (handler_tx, handler_rx) = mpsc::channel(HANDLER_QUEUE_MAX);
        let handler_thread = backend
            .spawn(handler_rx, mailboxes.clone())
            .map_err(StartError::Thread)?;
        let mut unix = Some(unix);
        let mut io_threads = Vec::new();
        let mut starting = Vec::new();
        for (index, mailbox_rx) in receivers.drain(..).enumerate() {
            let setup = ThreadSetup {
                index,
                runtime,
                tcp: groups.iter_mut().map(|g| g.remove(0)).collect(),
                unix: if index == 0 { unix.take() } else { None },
                mailbox: mailboxes[index].clone(),
                mailbox_rx,
                handler: handler_tx.clone(),
                shared: shared.clone(),
            };
            let (started, start) = std::sync::mpsc::sync_channel(1);
            let thread = std::thread::Builder::new()
                .name(format!("ldmd-io-{index}"))
                .spawn(move || io_thread::run(setup, started))
                .map_err(StartError::Thread)?;
            io_threads.push(thread);
            starting.push(start);
        }
        let server = Server {
            tcp_addrs,
            socket_path,
            fingerprint,
            certificate_generated: generated,
            runtime,
            mailboxes,
            io_threads,
            handler_thread: Some(handler_thread),
            verifier: Some(verifier),
        };
        // Every thread says whether its runtime and listeners could be set up (io_uring may
        // still fail here, e.g. on the locked-memory limit of older kernels).
        for start in starting {
            let outcome = start
                .recv()
                .unwrap_or_else(|_| Err(io::Error::other("the thread ended before it started")));
            if let Err(source) = outcome {
                server.shutdown();
                return Err(StartError::ThreadRuntime { runtime, source });
            }
        }
        Ok(server)
    }

    /// Sends `system-shutdown` to every stream, waits for them to drain (bounded by
    /// `limits.shutdown_drain_secs`), stops every thread and removes the Unix socket.
    pub fn shutdown(mut self) {
        for mailbox in &self.mailboxes {
            let _ = mailbox.blocking_send(ToIo::Shutdown);
        }
        for thread in self.io_threads.drain(..) {
            let _ = thread.join();
        }
        self.mailboxes.clear();
        if let Some(handler) = self.handler_thread.take() {
            let _ = handler.join();
        }
        if let Some(verifier) = self.verifier.take() {
            verifier.join();
        }
        let _ = std::fs::remove_file(&self.socket_path);
    }
}
