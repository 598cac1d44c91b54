//! The connection actor: one task per connection, driving a pure [`Connection`].
//!
//! Reads: the actor waits for readability through the runtime's reactor without lending any
//! buffer, then borrows a pooled buffer, receives with `MSG_DONTWAIT`, lets the connection
//! consume what it can and returns the buffer as soon as nothing partial remains. An io_uring
//! read would have to own a buffer for as long as the peer stays silent (tokio-uring 0.5 has no
//! provided-buffer rings), which would cost an idle connection its whole buffer.
//!
//! Writes go through io_uring with an owned pooled buffer, one write per `poll_transmit`, under
//! the send timeout. Answers from other threads arrive in the inbox, with a notification.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::auth::verifier::{Immediate, Reply, VerifyRequest};
use crate::ldm::{Document, Response, Role};
use crate::limits::Limit;
use crate::metrics::Phase;
use crate::registry::replica::is_replica_read;
use crate::server::admission::Ticket;
use crate::server::audit;
use crate::server::dispatch::{ConnKey, ReplyTicket, Request, ToIo};
use crate::server::io_thread::{BUFFER_BYTES, ConnShared, Inbound, ThreadCtx};
use crate::server::nonblocking::{receive, send_now};
use crate::server::shell::Transport;
use crate::xmpp::connection::{Connection, Event};
use crate::xmpp::error::{StreamError, StreamErrorCondition};
use crate::xmpp::stream::Peer;

/// The smallest free space worth a receive call; below it the buffer grows.
const READ_ROOM_MIN: usize = 4096;
/// Events handed to the connection between two transmits. A subscriber that was kept waiting
/// may find `event_queue_max` events in its inbox; handed over together they would all be
/// copied into its outbox, so they go in slices, each written before the next is taken.
const EVENTS_PER_TRANSMIT_MAX: usize = 32;

/// Runs one connection to its end. `admitted`: its slot, held until it ends, or the limit that
/// refuses it (the peer is told so).
pub async fn run(
    ctx: Rc<ThreadCtx>,
    transport: Transport,
    client: audit::Client,
    admitted: Result<Ticket, StreamError>,
) {
    let peer = client.peer;
    let (ticket, refused) = match admitted {
        Ok(ticket) => (Some(ticket), None),
        Err(error) => (None, Some(error)),
    };
    let counted = ticket.is_some();
    let (key, shared) = ctx.register();
    let unix = transport.is_unix();
    let mut actor = Actor {
        core: Box::new(Connection::new(
            ctx.shared.connection.clone(),
            peer,
            Instant::now(),
        )),
        ctx: ctx.clone(),
        key,
        shared,
        drain_deadline: None,
        unix,
        phase: None,
        received: VecDeque::new(),
        last_read: Instant::now(),
        in_flight_full: false,
        answered: Vec::new(),
        unwritten: Arc::default(),
        client,
    };
    if counted {
        actor.enter_phase(Phase::Negotiating);
    }
    if let Some(error) = refused {
        actor.core.handle_error(Instant::now(), error);
    } else if ctx.shutting_down.get() {
        actor.core.handle_shutdown(Instant::now());
    }
    // SAFETY: `transport` owns the fd and outlives `readiness`, which is dropped at the end of
    // this match, before the socket is shut down and closed.
    match unsafe { AsyncFd::register_with_interest(transport.as_raw_fd(), transport.interest()) } {
        Ok(readiness) => actor.serve(&transport, &readiness).await,
        Err(e) => tracing::warn!(error = %e, "cannot watch the socket"),
    }
    transport.shutdown();
    actor.finish();
    ctx.release(key);
    drop(ticket); // the slot is free once the socket is
}

struct Actor {
    core: Box<Connection>,
    ctx: Rc<ThreadCtx>,
    key: ConnKey,
    shared: Rc<ConnShared>,
    /// After shutdown began: when to stop waiting for documents in flight.
    drain_deadline: Option<Instant>,
    unix: bool,
    /// The phase counted in `ldmd_connections_open`; `None` for a refused connection.
    phase: Option<Phase>,
    /// Each unanswered document, oldest first (replies come back in order).
    received: VecDeque<Received>,
    /// When the bytes being processed were read: the receipt time of the documents in them.
    last_read: Instant,
    /// Reading is paused at `requests_in_flight_max` (counted once per pause).
    in_flight_full: bool,
    /// Replies handed to the connection and not yet written: their action label, arrival, and
    /// count in the replies in flight (released when written).
    answered: Vec<(usize, Instant, Option<ReplyTicket>)>,
    /// Bytes of replies to this connection the registry built and it has not written yet:
    /// the registry gives each connection a share of its own (see `ReplyTicket`).
    unwritten: Arc<AtomicUsize>,
    /// Who this is: for the audit trail, and the source its failed logins count against.
    client: audit::Client,
}

/// Why the loop stopped reading the socket.
enum Wake {
    Readable,
    Inbox,
    Timer,
}

impl Actor {
    async fn serve(&mut self, transport: &Transport, readiness: &AsyncFd<RawFd>) {
        let mut peer_done = false;
        loop {
            // Boxed: these states are brief, and an idle connection should not carry their size
            // in its task (the select below is all an idle connection holds).
            Box::pin(self.handle_events()).await;
            if !Box::pin(self.transmit(transport, readiness)).await {
                return;
            }
            self.written(Instant::now());
            self.update_phase();
            if self.core.is_finished() {
                return;
            }
            let deadline = match (self.core.poll_timeout(), self.drain_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let read = self.core.wants_input() && !peer_done;
            let wake = tokio::select! {
                biased;
                _ = self.shared.notify.notified() => Wake::Inbox,
                ready = readiness.readable(), if read => match ready {
                    Ok(_) => Wake::Readable,
                    Err(_) => return, // the reactor cannot watch this socket any more
                },

                _ = sleep_until(deadline), if deadline.is_some() => Wake::Timer,
            };
            let now = Instant::now();
            match wake {
                Wake::Inbox => self.deliver(now),
                Wake::Timer => {
                    self.core.handle_timeout(now);
                    if self.drain_deadline.is_some_and(|d| now >= d) {
                        self.drain_deadline = None;
                        let error = StreamError::limit(
                            StreamErrorCondition::SystemShutdown,
                            Limit::ShutdownDrain,
                            "documents in flight were not answered before shutdown",
                        );
                        self.core.handle_error(now, error);
                    }
                }
                Wake::Readable => match self.read(readiness) {
                    ReadOutcome::Data | ReadOutcome::Nothing => {}
                    ReadOutcome::Eof => {
                        peer_done = true;
                        self.core.handle_eof(now);
                    }
                    ReadOutcome::Dead => return,
                },
            }
        }
    }

    /// One receive into the connection's buffer.
    fn read(&mut self, readiness: &AsyncFd<RawFd>) -> ReadOutcome {
        let buffer = self.core.input_buffer();
        if buffer.capacity() == 0 {
            *buffer = self.ctx.pool.borrow_mut().take();
        }
        if buffer.capacity() - buffer.len() < READ_ROOM_MIN {
            buffer.reserve(BUFFER_BYTES);
        }
        // try_io clears the readiness flag when recv finds nothing (a stale wake-up).
        let outcome = readiness.try_io(Interest::READABLE, |fd| receive(*fd, buffer));
        let outcome = match outcome {
            Ok(0) => ReadOutcome::Eof,
            Ok(_) => {
                self.last_read = Instant::now();
                self.core.handle_input(self.last_read);
                ReadOutcome::Data
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ReadOutcome::Nothing,
            Err(_) => ReadOutcome::Dead, // reset: nobody to answer
        };
        if let Some(empty) = self.core.take_empty_input_buffer() {
            self.ctx.pool.borrow_mut().give(empty);
        }
        outcome
    }

    /// Writes everything the connection has to send, one `poll_transmit` per write.
    async fn transmit(&mut self, transport: &Transport, readiness: &AsyncFd<RawFd>) -> bool {
        let send_timeout = self.ctx.shared.config.limits.send_timeout();
        loop {
            let mut buffer = self.ctx.pool.borrow_mut().take();
            if !self.core.poll_transmit(&mut buffer) {
                self.ctx.pool.borrow_mut().give(buffer);
                return true;
            }
            // While the pool is lent out (a fan-out to thousands of subscribers, each given an
            // event), an io_uring write is first tried with one non-blocking send: it nearly
            // always fits in the socket's buffer, and then holds no buffer across a wait.
            // Otherwise writes go through io_uring, whose submissions are batched: cheaper per
            // write. (The epoll shell's writes always begin with such a send.)
            let pool_lent_out = self.ctx.pool.borrow().free() == 0;
            let eager = if pool_lent_out && transport.is_uring() {
                send_now(transport.as_raw_fd(), &buffer)
            } else {
                Ok(0)
            };
            match eager {
                Ok(sent) if sent == buffer.len() => {
                    self.ctx.pool.borrow_mut().give(buffer);
                    continue;
                }
                Ok(sent) => {
                    buffer.drain(..sent);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    self.ctx.pool.borrow_mut().give(buffer);
                    return false;
                }
            }
            let write = transport.write_all(readiness, buffer);
            match tokio::time::timeout(send_timeout, write).await {
                Ok((Ok(()), buffer)) => self.ctx.pool.borrow_mut().give(buffer),
                Ok((Err(_), buffer)) => {
                    self.ctx.pool.borrow_mut().give(buffer);
                    return false;
                }
                Err(_) => {
                    // The peer stopped reading. The write took its buffer along (an io_uring
                    // write keeps it until the socket's shutdown by our caller ends the write):
                    // the pool lends another next time.
                    self.ctx.pool.borrow_mut().forget_one();
                    self.ctx
                        .shared
                        .metrics
                        .limit_hit(Limit::SendTimeout)
                        .increment(1);
                    return false;
                }
            }
        }
    }

    /// Acts on what the connection asks for.
    async fn handle_events(&mut self) {
        let metrics = self.ctx.shared.metrics;
        while let Some(event) = self.core.poll_event() {
            match event {
                Event::Verify(credentials) => self.verify(credentials),
                Event::Document(document, role) => {
                    metrics.documents_received.increment(1);
                    // Alone: nothing of this stream is unanswered, so a read answered here
                    // cannot overtake a write of its own (see `registry::replica`).
                    let alone = self.received.is_empty();
                    // Taken at the read, not now: an earlier document of the same read may have
                    // waited here for room in the registry's mailbox.
                    self.received.push_back(Received {
                        at: self.last_read,
                        domains: audit::requested_domains(&document),
                    });
                    let document = match self.answer_from_replica(alone, document, role).await {
                        Some(document) => document,
                        None => continue,
                    };
                    debug_assert!(self.received.len() as u32 <= self.core.requests_in_flight());
                    let request = Request {
                        document,
                        role,
                        reply_to: self.key,
                        unwritten: self.unwritten.clone(),
                    };
                    // Waits while the handler is busy: back-pressure for this connection only.
                    if self.ctx.handler.send(request).await.is_err() {
                        let error = StreamError::with_text(
                            StreamErrorCondition::InternalServerError,
                            "the LDM handler stopped",
                        );
                        self.core.handle_error(Instant::now(), error);
                    }
                }
                Event::TlsEstablished { handshake } => {
                    metrics.tls_established.increment(1);
                    metrics
                        .tls_handshake_seconds
                        .record(handshake.as_secs_f64());
                    if let Some(suppressed) = self.ctx.audit_admits(self.client.source) {
                        let version = self.core.tls_version().unwrap_or("unknown");
                        audit::connection(&self.client, version, suppressed);
                    }
                    audit::local_login(&self.client);
                }
                Event::TlsFailed => metrics.tls_failed.increment(1),
                Event::Authenticated => {
                    metrics.sasl_success.increment(1);
                    let identity = self.core.identity();
                    let user = identity.map_or("", |i| i.user.as_str());
                    audit::sasl_login(&self.client, user, identity.map(|i| i.role), None);
                }
                Event::AuthFailed { failure, user } => {
                    metrics.sasl_failure(failure).increment(1);
                    let user = user.unwrap_or_default();
                    audit::sasl_login(&self.client, &user, None, Some(failure.as_str()));
                }
                Event::StreamError(condition, limit) => {
                    metrics.stream_error(condition).increment(1);
                    if let Some(limit) = limit {
                        metrics.limit_hit(limit).increment(1);
                    }
                    // Ending streams at shutdown refuses nobody.
                    let refused = condition != StreamErrorCondition::SystemShutdown;
                    if let Some(suppressed) = refused
                        .then(|| self.ctx.audit_admits(self.client.source))
                        .flatten()
                    {
                        let limit = limit.map(Limit::key);
                        audit::refusal(&self.client, condition.as_str(), limit, suppressed);
                    }
                }
            }
        }
        // Reading pauses while `requests_in_flight_max` documents await replies: one hit per
        // pause, however many documents a read carried.
        let in_flight_max = self.ctx.shared.config.limits.requests_in_flight_max;
        let full = self.core.requests_in_flight() >= in_flight_max;
        if full && !self.in_flight_full {
            metrics.limit_hit(Limit::RequestsInFlight).increment(1);
        }
        self.in_flight_full = full;
    }

    /// Answers a document of list actions from the thread's replica when it is current;
    /// otherwise gives it back, for the registry.
    async fn answer_from_replica(
        &mut self,
        alone: bool,
        document: Document,
        role: Role,
    ) -> Option<Document> {
        let Some(reads) = self.ctx.shared.reads.clone() else {
            return Some(document);
        };
        if !alone || !is_replica_read(&document) {
            return Some(document);
        }
        let ctx = self.ctx.clone();
        let current =
            |ctx: &ThreadCtx| reads.is_current(ctx.index, ctx.replica.borrow().as_deref());
        if !current(&ctx) {
            // The other thread has begun delivering a newer batch: this thread's share of it,
            // with the newer replica, is most likely in its mailbox already. Letting the router
            // run first is far quicker than the registry's queue.
            tokio::task::yield_now().await;
            if !current(&ctx) {
                return Some(document);
            }
        }
        let mut replica = ctx.replica.borrow_mut();
        let replica = replica.as_mut()?;
        let now = crate::registry::actor::unix_now();
        let (response, ticket, limits) =
            replica.answer(&reads, document, role, &self.unwritten, now);
        let metrics = self.ctx.shared.metrics;
        metrics.replica_reads.increment(1);
        for limit in limits {
            metrics.limit_hit(limit).increment(1);
        }
        self.take_response(Instant::now(), response, ticket);
        None
    }

    /// A reply to the oldest unanswered document, from the registry or a replica.
    fn take_response(&mut self, now: Instant, response: Response, ticket: Option<ReplyTicket>) {
        let metrics = self.ctx.shared.metrics;
        metrics.answered(&response);
        debug_assert!(!self.received.is_empty(), "a reply to no document");
        if let Some(received) = self.received.pop_front() {
            let actor = match (self.core.sasl_user(), self.client.peer) {
                (Some(user), _) => Some(audit::Actor::User(user)),
                (None, Peer::Local { uid, .. }) => Some(audit::Actor::Uid(uid)),
                (None, Peer::Remote) => None,
            };
            if let Some(actor) = actor {
                let latency = now - received.at;
                audit::changes(actor, &self.client, &response, &received.domains, latency);
            }
            let first = response.cmds.first().and_then(|c| c.action.as_ref());
            self.answered
                .push((metrics.action(first), received.at, ticket));
        }
        self.core.handle_response(now, &response);
    }

    /// Sends a password check to the verifier pool; its verdict comes back through the mailbox.
    fn verify(&mut self, credentials: crate::xmpp::sasl::PlainCredentials) {
        let mailbox = self.ctx.mailbox.clone();
        let key = self.key;
        let reply: Reply = Box::new(move |verdict| {
            let _ = mailbox.blocking_send(ToIo::AuthVerdict { key, verdict });
        });
        let request = VerifyRequest {
            credentials,
            source: self.client.source,
            reply,
        };
        if let Err(Immediate { verdict, limit }) = self.ctx.shared.verifier.submit(request) {
            if let Some(limit) = limit {
                self.ctx.shared.metrics.limit_hit(limit).increment(1);
            }
            self.core.handle_auth_result(Instant::now(), verdict);
        }
    }

    /// What the router left in the inbox: all of it, except that events stop after
    /// [`EVENTS_PER_TRANSMIT_MAX`] and the rest waits for the next pass.
    fn deliver(&mut self, now: Instant) {
        let metrics = self.ctx.shared.metrics;
        let mut events = 0;
        loop {
            if events == EVENTS_PER_TRANSMIT_MAX {
                // Wake again right after this slice is written (the wait is biased to the inbox).
                self.shared.notify.notify_one();
                return;
            }
            let Some(message) = self.shared.inbox.borrow_mut().pop_front() else {
                // An idle connection keeps no queue capacity.
                *self.shared.inbox.borrow_mut() = std::collections::VecDeque::new();
                return;
            };

            match message {
                Inbound::Response(response, ticket) => self.take_response(now, response, ticket),
                Inbound::AuthVerdict(verdict) => {
                    self.core.handle_auth_result(now, verdict);
                    // The store may have changed between the verdict and its arrival: the
                    // change was announced to every stream, but this one was not logged in yet.
                    let latest = self.ctx.accounts.borrow().clone();
                    if let (Some(accounts), Some(identity)) = (latest, self.core.identity())
                        && accounts.generation > identity.generation
                    {
                        let account = accounts.get(&identity.user);
                        self.core.handle_account(now, account);
                    }
                }
                Inbound::Accounts(accounts) => {
                    if let Some(user) = self.core.sasl_user() {
                        let account = accounts.get(user);
                        self.core.handle_account(now, account);
                    }
                }
                Inbound::Event(event) => {
                    events += 1;
                    let mut subscription = self.shared.subscription.get();
                    subscription.take();
                    self.shared.subscription.set(subscription);
                    if self.core.handle_event(now, &event.document) {
                        metrics.events_delivered.increment(1);
                    }
                }
                Inbound::EventOverflow => {
                    // Counted as a limit hit when the connection reports the stream error.
                    let error = StreamError::limit(
                        StreamErrorCondition::ResourceConstraint,
                        Limit::EventQueue,
                        "fell too far behind on events",
                    );
                    self.core.handle_error(now, error);
                }
                Inbound::Shutdown => {
                    self.core.handle_shutdown(now);
                    self.drain_deadline =
                        Some(now + self.ctx.shared.config.limits.shutdown_drain());
                }
            }
        }
    }

    /// Everything queued was written: the replies among it are complete on the socket.
    fn written(&mut self, now: Instant) {
        if self.answered.is_empty() {
            return;
        }
        let metrics = self.ctx.shared.metrics;
        let internal = crate::ldm::action::Action::MigrateCheck as usize;
        for (action, received, _written) in self.answered.drain(..) {
            metrics.request_latency(action, now - received);
            if action == internal {
                // A migration message's answer is on the socket (tests kill the target here).
                crate::fault::kill_point("migration.target.answered");
            }
        }
        if self.received.is_empty() {
            // An idle connection keeps no capacity.
            self.received = VecDeque::new();
            self.answered = Vec::new();
        }
    }

    /// Moves this connection to the phase its stream is in, in `ldmd_connections_open`.
    fn update_phase(&mut self) {
        let Some(current) = self.phase else { return };
        let phase = if self.core.is_authenticated() {
            Phase::Authenticated
        } else if self.core.is_secured() {
            Phase::Secured
        } else {
            Phase::Negotiating
        };
        // Only forwards: a closing stream stops reporting itself authenticated, but it was.
        if phase > current {
            self.leave_phase();
            self.enter_phase(phase);
        }
    }

    fn enter_phase(&mut self, phase: Phase) {
        let metrics = self.ctx.shared.metrics;
        metrics.connections_open(self.unix, phase).increment(1.0);
        self.phase = Some(phase);
    }

    fn leave_phase(&mut self) {
        if let Some(phase) = self.phase.take() {
            let metrics = self.ctx.shared.metrics;
            metrics.connections_open(self.unix, phase).decrement(1.0);
        }
    }

    /// Gives back a buffer still lent to the connection.
    fn finish(&mut self) {
        self.leave_phase();
        self.core.input_buffer().clear();
        if let Some(buffer) = self.core.take_empty_input_buffer() {
            self.ctx.pool.borrow_mut().give(buffer);
        }
    }
}

/// A document waiting for its reply.
struct Received {
    /// When it was read: its latency runs from here.
    at: Instant,
    /// The domains each of its cmds names, for the audit trail (empty for a read).
    domains: audit::Requested,
}

enum ReadOutcome {
    Data,
    Nothing,
    Eof,
    Dead,
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
    }
}
