//! One I/O thread: a current-thread runtime (io_uring or epoll, see `runtime`) with its own
//! listeners, its connection table (a slab), its buffer pool, and a router task that delivers
//! answers from other threads.
//!
//! ```text
//!   accept ──spawn─────────────▶ connection actor ──document──▶ handler thread
//!                                   ▲    ▲                          │
//!                 inbox + notify ───┘    └── password check ── verifier threads
//!   mailbox ──▶ router ──(slab key, generation)──▶ inbox           │      │
//!      ▲________________________________________________________________/
//! ```
//!
//! Nothing here blocks: the thread only waits in the runtime. The router also fans committed
//! events out, to the thread's subscribers alone (a set of slab indices), so that one costs
//! O(subscribers), not O(connections); a subscriber that falls `event_queue_max` events behind
//! is ended, never waited for.

use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use slab::Slab;
use tokio::sync::{Notify, mpsc};

use crate::auth::Verifier;
use crate::auth::guard::{LoginSource, Source};
use crate::auth::peercred::{self, SockDiag};
use crate::config::Config;
use crate::ldm::Response;
use crate::ldm::event::{Event, SubscriptionChange};
use crate::metrics::Metrics;
use crate::registry::replica::{ReadPath, Replica};
use crate::server::admission::Admission;
use crate::server::dispatch::{ConnKey, ReplyTicket, Request, ToIo};
use crate::server::pool::BufferPool;
use crate::server::runtime::Runtime;
use crate::server::shell::{TcpAcceptor, UnixAcceptor};
use crate::server::subscribers::{Offer, Subscription};
use crate::server::{audit, conn};
use crate::xmpp::connection::ConnectionConfig;
use crate::xmpp::error::SaslFailure;
use crate::xmpp::stream::{Identity, Peer};

/// Standard size of pooled buffers: a full TLS record (16 KiB + 325) fits with room to spare.
pub const BUFFER_BYTES: usize = 32 * 1024;
/// Idle buffers each thread keeps.
const POOLED_BUFFERS_MAX: usize = 256;

/// State shared by all I/O threads.
pub struct Shared {
    pub config: Arc<Config>,
    pub connection: Arc<ConnectionConfig>,
    pub verifier: Verifier,
    /// The connection limits' counts.
    pub admission: Arc<Admission>,
    /// Connections accepted since start, all threads.
    pub accepted: AtomicU64,
    pub metrics: &'static Metrics,
    /// Where reads answered on the I/O threads meet the registry; `None` with a backend that
    /// keeps no replicas.
    pub reads: Option<Arc<ReadPath>>,
}

/// What a thread starts with.
pub struct ThreadSetup {
    pub index: usize,
    pub runtime: Runtime,
    pub tcp: Vec<std::net::TcpListener>,
    pub unix: Option<std::os::unix::net::UnixListener>,
    pub mailbox: mpsc::Sender<ToIo>,
    pub mailbox_rx: mpsc::Receiver<ToIo>,
    pub handler: mpsc::Sender<Request>,
    pub shared: Arc<Shared>,
}

/// Something delivered to a connection by the router.
pub enum Inbound {
    /// An answer, and its count in the replies in flight, released once it is written.
    Response(Response, Option<ReplyTicket>),
    AuthVerdict(Result<Identity, SaslFailure>),
    /// The user store changed (delivered to every connection, behind any verdict in flight).
    Accounts(Arc<crate::auth::Accounts>),
    /// For a subscribed stream; counted in its [`Subscription`] until the actor takes it.
    Event(Arc<Event>),
    /// The stream fell `event_queue_max` events behind: end it. Put at the front of the inbox,
    /// since the events before it are exactly what the stream cannot keep up with.
    EventOverflow,
    Shutdown,
}

/// A connection's side of the table: its inbox and the notification that wakes it.
#[derive(Default)]
pub struct ConnShared {
    pub inbox: RefCell<VecDeque<Inbound>>,
    pub notify: Notify,
    /// Written by the router, and by the actor as it takes events.
    pub subscription: Cell<Subscription>,
}

struct Slot {
    generation: u64,
    shared: Rc<ConnShared>,
}

/// Per-thread context, shared by the thread's tasks (single-threaded: `Rc` and `RefCell`;
/// no borrow is ever held across an await).
pub struct ThreadCtx {
    pub index: usize,
    pub shared: Arc<Shared>,
    pub mailbox: mpsc::Sender<ToIo>,
    pub handler: mpsc::Sender<Request>,
    pub pool: RefCell<BufferPool>,
    slots: RefCell<Slab<Slot>>,
    /// Slab indices of the connections whose subscription is not empty.
    subscribers: RefCell<HashSet<usize>>,
    next_generation: Cell<u64>,
    sock_diag: RefCell<Option<SockDiag>>,
    listener_fds: RefCell<Vec<RawFd>>,
    pub shutting_down: Cell<bool>,
    /// Notified whenever a connection leaves the table (the router is its only waiter).
    slot_freed: Notify,
    /// Wakes the Unix accept loop at shutdown.
    stop_accepting: Notify,
    /// The accounts as last announced: a password verdict made against an older user store
    /// that arrives after the announcement is checked against them.
    pub accounts: RefCell<Option<Arc<crate::auth::Accounts>>>,
    /// The thread's copy of the registry's committed state, for reads (see `registry::replica`).
    pub replica: RefCell<Option<Box<Replica>>>,
    /// The per-source rate limit of the thread's connection and refusal audit lines.
    audit: RefCell<audit::Limiter>,
}

/// Runs the thread until shutdown has drained its connections. `started` hears, once, whether
/// the thread's runtime and listeners could be set up.
pub fn run(setup: ThreadSetup, started: std::sync::mpsc::SyncSender<io::Result<()>>) {
    let runtime = match setup.runtime.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    runtime.block_on(async move {
        let metrics = setup.shared.metrics;
        let ctx = Rc::new(ThreadCtx {
            index: setup.index,
            shared: setup.shared,
            mailbox: setup.mailbox,
            handler: setup.handler,
            pool: RefCell::new(BufferPool::new(BUFFER_BYTES, POOLED_BUFFERS_MAX, metrics)),
            slots: RefCell::new(Slab::new()),
            subscribers: RefCell::new(HashSet::new()),
            next_generation: Cell::new(0),
            sock_diag: RefCell::new(None),
            listener_fds: RefCell::new(Vec::new()),
            shutting_down: Cell::new(false),
            slot_freed: Notify::new(),
            stop_accepting: Notify::new(),
            accounts: RefCell::new(None),
            replica: RefCell::new(None),
            audit: RefCell::new(audit::Limiter::default()),
        });
        let acceptors = || -> io::Result<_> {
            let tcp = setup
                .tcp
                .into_iter()
                .map(|listener| TcpAcceptor::new(setup.runtime, listener))
                .collect::<io::Result<Vec<_>>>()?;
            let unix = setup
                .unix
                .map(|listener| UnixAcceptor::new(setup.runtime, listener))
                .transpose()?;
            Ok((tcp, unix))
        };
        let (tcp, unix) = match acceptors() {
            Ok(acceptors) => acceptors,
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        };
        for listener in tcp {
            ctx.listener_fds.borrow_mut().push(listener.raw_fd());
            tokio::task::spawn_local(accept_tcp(ctx.clone(), listener));
        }
        if let Some(unix) = unix {
            tokio::task::spawn_local(accept_unix(ctx.clone(), unix));
        }
        tokio::task::spawn_local(trim_after_bursts(ctx.clone()));
        let _ = started.send(Ok(()));
        route(&ctx, setup.mailbox_rx).await;
    });
}

/// Gives memory freed after a burst of connections back to the kernel.
///
/// A TLS handshake allocates far more than the session it leaves behind. Opening many
/// connections at once leaves the allocator's pages full of free holes between live sessions,
/// which it keeps for reuse. With glibc, 10,000 sessions opened 200 at a time took 99 MiB of
/// RSS, of which 45 MiB were such holes, and `malloc_trim` brought it to 61 MiB. ldmd now runs
/// on mimalloc (faster under this load, see the README), whose heaps are per thread: each I/O
/// thread asks mimalloc to return its free pages (`mi_collect`), at most once a second and
/// only after new connections arrived.
async fn trim_after_bursts(ctx: Rc<ThreadCtx>) {
    let mut seen = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if ctx.shutting_down.get() {
            return;
        }
        let accepted = ctx.shared.accepted.load(Ordering::Relaxed);
        if accepted != seen {
            seen = accepted;
            // SAFETY: mi_collect has no preconditions; it works on this thread's heap.
            unsafe { libmimalloc_sys::mi_collect(true) };
        }
    }
}

/// Delivers mailbox messages to connections; on shutdown, drains and returns.
async fn route(ctx: &Rc<ThreadCtx>, mut mailbox: mpsc::Receiver<ToIo>) {
    let mut batch = Vec::with_capacity(64);
    let mut drain_until: Option<Instant> = None;
    loop {
        if drain_until.is_some() && ctx.slots.borrow().is_empty() {
            return;
        }
        let deadline = drain_until.map(tokio::time::Instant::from_std);
        tokio::select! {
            received = mailbox.recv_many(&mut batch, 64) => {
                if received == 0 {
                    return; // every sender is gone
                }
                for message in batch.drain(..) {
                    match message {
                        ToIo::Batch { generation, messages } => {
                            // Before any of its replies is delivered: a read that follows
                            // one of them, on any thread, then needs a replica this new.
                            if let (Some(generation), Some(reads)) = (generation, &ctx.shared.reads) {
                                reads.deliver(generation);
                            }
                            for message in messages {
                                handle(ctx, message, &mut drain_until);
                            }
                        }
                        message => handle(ctx, message, &mut drain_until),
                    }
                }
            }
            _ = ctx.slot_freed.notified(), if drain_until.is_some() => {}
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                tracing::warn!(thread = ctx.index, left = ctx.slots.borrow().len(), "shutdown drain timed out; closing the rest");
                return;
            }
        }
    }
}

/// One mailbox message (a batch's are taken one by one, in order).
fn handle(ctx: &Rc<ThreadCtx>, message: ToIo, drain_until: &mut Option<Instant>) {
    match message {
        ToIo::Response {
            key,
            response,
            subscription,
            ticket,
        } => {
            // First, so that the stream gets exactly the events committed after its
            // registration (they follow this response in the mailbox).
            if let Some(change) = subscription {
                ctx.change_subscription(key, change);
            }
            ctx.deliver(key, Inbound::Response(response, ticket));
        }
        ToIo::Event(event) => ctx.publish(&event),
        ToIo::AuthVerdict { key, verdict } => ctx.deliver(key, Inbound::AuthVerdict(verdict)),
        ToIo::Accounts(accounts) => {
            *ctx.accounts.borrow_mut() = Some(accounts.clone());
            ctx.broadcast(|| Inbound::Accounts(accounts.clone()));
        }
        ToIo::Shutdown if drain_until.is_none() => {
            let drain = ctx.shared.config.limits.shutdown_drain();
            // Connections get the drain time; the thread a little more to close.
            *drain_until = Some(Instant::now() + drain + Duration::from_secs(1));
            ctx.begin_shutdown();
        }
        ToIo::Shutdown => {}
        ToIo::Replica(replica) => *ctx.replica.borrow_mut() = Some(replica),
        // The registry never nests batches; one would only be flattened.
        ToIo::Batch { messages, .. } => {
            for message in messages {
                handle(ctx, message, drain_until);
            }
        }
    }
}

impl ThreadCtx {
    /// Whether a connection or refusal audit line of `source` is logged now, and if so how
    /// many of its lines were left out before it.
    pub fn audit_admits(&self, source: LoginSource) -> Option<u64> {
        match self.audit.borrow_mut().admit(source, Instant::now()) {
            audit::Verdict::Log { suppressed } => Some(suppressed),
            audit::Verdict::Suppress => None,
        }
    }

    fn deliver(&self, key: ConnKey, message: Inbound) {
        let slots = self.slots.borrow();
        if let Some(slot) = slots
            .get(key.index)
            .filter(|s| s.generation == key.generation)
        {
            slot.shared.inbox.borrow_mut().push_back(message);
            slot.shared.notify.notify_one();
        }
    }

    fn change_subscription(&self, key: ConnKey, change: SubscriptionChange) {
        let slots = self.slots.borrow();
        let Some(slot) = slots
            .get(key.index)
            .filter(|s| s.generation == key.generation)
        else {
            return; // closed meanwhile
        };
        let mut subscription = slot.shared.subscription.get();
        subscription.change(change);
        slot.shared.subscription.set(subscription);
        let mut subscribers = self.subscribers.borrow_mut();
        if subscription.is_subscribed() {
            subscribers.insert(key.index);
        } else {
            subscribers.remove(&key.index);
        }
    }

    /// Offers `event` to every subscriber on this thread. Never waits: a subscriber too far
    /// behind is told to end instead.
    fn publish(&self, event: &Arc<Event>) {
        let queue_max = self.shared.config.limits.event_queue_max;
        let slots = self.slots.borrow();
        self.subscribers.borrow_mut().retain(|&index| {
            let Some(slot) = slots.get(index) else {
                debug_assert!(false, "release forgot subscriber {index}");
                return false;
            };
            let shared = &slot.shared;
            let mut subscription = shared.subscription.get();
            let offer = subscription.offer(event.class, queue_max);
            shared.subscription.set(subscription);
            match offer {
                Offer::Skip => {}
                Offer::Queue => {
                    shared
                        .inbox
                        .borrow_mut()
                        .push_back(Inbound::Event(event.clone()));
                    shared.notify.notify_one();
                }
                Offer::Overflow => {
                    self.shared.metrics.event_subscribers_dropped.increment(1);
                    shared.inbox.borrow_mut().push_front(Inbound::EventOverflow);
                    shared.notify.notify_one();
                }
            }
            subscription.is_subscribed()
        });
    }

    /// Puts `message()` in every connection's inbox. A connection whose SASL verdict is still
    /// in its inbox gets this behind it, so the order of events is kept.
    fn broadcast(&self, message: impl Fn() -> Inbound) {
        for (_, slot) in self.slots.borrow().iter() {
            slot.shared.inbox.borrow_mut().push_back(message());
            slot.shared.notify.notify_one();
        }
    }

    /// Stops accepting and asks every connection to close.
    fn begin_shutdown(&self) {
        self.shutting_down.set(true);
        for fd in self.listener_fds.borrow().iter() {
            // A pending io_uring accept is not woken by close(); shutdown() ends it with EINVAL.
            // SAFETY: the fd belongs to a listener owned by this thread's accept task.
            unsafe { libc::shutdown(*fd, libc::SHUT_RDWR) };
        }
        // The accept loop is parked in its select (this thread runs one task at a time).
        self.stop_accepting.notify_waiters();
        self.broadcast(|| Inbound::Shutdown);
    }

    /// Registers a connection; the actor removes itself with `release`.
    pub fn register(&self) -> (ConnKey, Rc<ConnShared>) {
        let generation = self.next_generation.get();
        self.next_generation.set(generation + 1);
        let shared = Rc::new(ConnShared::default());
        let index = self.slots.borrow_mut().insert(Slot {
            generation,
            shared: shared.clone(),
        });
        (
            ConnKey {
                thread: self.index,
                index,
                generation,
            },
            shared,
        )
    }

    pub fn release(&self, key: ConnKey) {
        let mut slots = self.slots.borrow_mut();
        if slots
            .get(key.index)
            .is_some_and(|s| s.generation == key.generation)
        {
            slots.remove(key.index);
            self.subscribers.borrow_mut().remove(&key.index);
        }
        drop(slots);
        self.slot_freed.notify_one();
    }

    /// A local TCP peer is one on loopback whose socket's owner the kernel reports.
    fn tcp_peer(&self, peer: SocketAddr, local: SocketAddr) -> Peer {
        let config = &self.shared.config;
        if !config.tcp_loopback_is_local || !peercred::is_loopback_pair(peer, local) {
            return Peer::Remote;
        }
        let mut diag = self.sock_diag.borrow_mut();
        if diag.is_none() {
            match SockDiag::new() {
                Ok(d) => *diag = Some(d),
                Err(e) => {
                    tracing::warn!(error = %e, "sock_diag unavailable; loopback peers must authenticate");
                    return Peer::Remote;
                }
            }
        }
        match diag.as_mut().map(|d| d.tcp_peer_uid(peer, local)) {
            Some(Ok(Some(uid))) => Peer::Local {
                uid,
                role: config.local_role(uid),
            },
            Some(Ok(None)) => Peer::Remote,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "sock_diag lookup failed");
                *diag = None; // reopen next time
                Peer::Remote
            }
            None => Peer::Remote,
        }
    }
}

async fn accept_tcp(ctx: Rc<ThreadCtx>, listener: TcpAcceptor) {
    let local = listener.local_addr().ok();
    loop {
        if ctx.shutting_down.get() {
            return;
        }
        // Shutdown also shuts the listener down, which ends a pending io_uring accept.
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = ctx.stop_accepting.notified() => return,
        };
        let (transport, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(_) if ctx.shutting_down.get() => return,
            Err(e) => {
                // EMFILE and friends: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Accepted as shutdown began: the actor tells it `system-shutdown` like the others.
        let shared = &ctx.shared;
        shared.metrics.accepted_tcp.increment(1);
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let peer_addr = peer;
        let admitted = shared.admission.admit_tcp(peer.ip());
        let peer = match (admitted.is_ok(), local) {
            (true, Some(local)) => ctx.tcp_peer(peer, local),
            _ => Peer::Remote,
        };
        let client = audit::Client {
            addr: Some(peer_addr),
            peer,
            source: LoginSource::Ip(Source::of(peer_addr.ip())),
        };
        tokio::task::spawn_local(conn::run(ctx.clone(), transport, client, admitted));
    }
}

async fn accept_unix(ctx: Rc<ThreadCtx>, listener: UnixAcceptor) {
    loop {
        if ctx.shutting_down.get() {
            return;
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = ctx.stop_accepting.notified() => return,
        };
        let transport = match accepted {
            Ok(transport) => transport,
            Err(e) => {
                tracing::warn!(error = %e, "unix accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = &ctx.shared;
        shared.metrics.accepted_unix.increment(1);
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        // A peer whose credentials cannot be read is nobody: no role, and no privileged slot.
        let uid = peercred::unix_peer_uid(transport.as_raw_fd()).unwrap_or(u32::MAX);
        let admitted = shared.admission.admit_unix(uid);
        let peer = Peer::Local {
            uid,
            role: if uid == u32::MAX {
                crate::ldm::Role::None
            } else {
                shared.config.local_role(uid)
            },
        };
        let client = audit::Client {
            addr: None,
            peer,
            source: LoginSource::Uid(uid),
        };
        tokio::task::spawn_local(conn::run(ctx.clone(), transport, client, admitted));
    }
}
