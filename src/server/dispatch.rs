//! The handler thread, and the messages that cross between threads.
//!
//! Connections hand LDM documents to one handler thread through a bounded channel (a full
//! channel makes the sending connection wait, which stops its reads: back-pressure reaches the
//! client through TCP). Answers go back to the connection's I/O thread through that thread's
//! bounded mailbox, tagged with the connection's key; a router task there delivers them.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use crate::ldm::event::{Event, SubscriptionChange};
use crate::ldm::handler::DocumentHandler;
use crate::ldm::{Document, Response, Role};
use crate::xmpp::error::SaslFailure;
use crate::xmpp::stream::Identity;

/// A connection on some I/O thread: slab index plus a generation, so that an answer for a
/// closed connection never reaches a new one that reused the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub thread: usize,
    pub index: usize,
    pub generation: u64,
}

/// A document for the handler.
pub struct Request {
    pub document: Document,
    pub role: Role,
    pub reply_to: ConnKey,
    /// Bytes of replies to this connection built and not yet written (see [`ReplyTicket`]).
    pub unwritten: Arc<AtomicUsize>,
}

/// The bytes a reply's listings fill in, counted from the moment the registry builds the reply
/// until the I/O thread has written it, when dropping the ticket takes them off: all of them
/// in the connection's unwritten bytes, and the part beyond the connection's own share in the
/// replies in flight all connections share (`limits.reply_bytes_in_flight_max`).
#[derive(Debug)]
pub struct ReplyTicket {
    bytes: usize,
    shared_bytes: usize,
    unwritten: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
}

impl ReplyTicket {
    /// Counts `bytes` in `unwritten`, and `shared_bytes` of them in `in_flight`; no ticket for
    /// a reply that filled nothing in.
    pub fn count(
        bytes: usize,
        shared_bytes: usize,
        unwritten: Arc<AtomicUsize>,
        in_flight: Arc<AtomicUsize>,
    ) -> Option<ReplyTicket> {
        debug_assert!(shared_bytes <= bytes);
        if bytes == 0 {
            return None;
        }
        unwritten.fetch_add(bytes, Ordering::AcqRel);
        in_flight.fetch_add(shared_bytes, Ordering::AcqRel);
        Some(ReplyTicket {
            bytes,
            shared_bytes,
            unwritten,
            in_flight,
        })
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn shared_bytes(&self) -> usize {
        self.shared_bytes
    }

    /// One ticket for what two counted (for one connection).
    pub fn join(a: Option<ReplyTicket>, b: Option<ReplyTicket>) -> Option<ReplyTicket> {
        match (a, b) {
            (Some(mut a), Some(mut b)) => {
                // `b`'s bytes move to `a`, so `b` gives nothing back when it goes.
                debug_assert!(Arc::ptr_eq(&a.unwritten, &b.unwritten));
                a.bytes = a.bytes.saturating_add(std::mem::take(&mut b.bytes));
                a.shared_bytes = a
                    .shared_bytes
                    .saturating_add(std::mem::take(&mut b.shared_bytes));
                Some(a)
            }
            (a, b) => a.or(b),
        }
    }
}

impl Drop for ReplyTicket {
    fn drop(&mut self) {
        self.unwritten.fetch_sub(self.bytes, Ordering::AcqRel);
        self.in_flight
            .fetch_sub(self.shared_bytes, Ordering::AcqRel);
    }
}

/// Messages to an I/O thread.
pub enum ToIo {
    Response {
        key: ConnKey,
        response: Response,
        /// Set when the document (un)registered for events: applied before the response is
        /// delivered, so that the stream receives exactly the events committed after it.
        subscription: Option<SubscriptionChange>,
        /// Held until the reply is written.
        ticket: Option<ReplyTicket>,
    },
    /// A committed change, for every stream on the thread subscribed to its class.
    Event(Arc<Event>),
    AuthVerdict {
        key: ConnKey,
        verdict: Result<Identity, SaslFailure>,
    },
    /// The user store changed: every stream logged in with SASL checks its account.
    Accounts(Arc<crate::auth::Accounts>),
    /// Stop accepting, drain every stream, and end the thread.
    Shutdown,
    /// A registry batch's replies and events for this thread, in commit order: one message,
    /// so one wake-up of the thread, per batch. `generation`: the generation of the committed
    /// state they reflect (see `registry::replica`), when the registry keeps replicas.
    Batch {
        generation: Option<u64>,
        messages: Vec<ToIo>,
    },
    /// A newer replica of the committed state, for reads answered on the thread; it comes
    /// before the replies of its batch.
    Replica(Box<crate::registry::replica::Replica>),
}

/// Whoever answers LDM documents: it runs on its own thread(s), takes requests from `requests`
/// until every sender is gone, and answers through the I/O threads' mailboxes.
pub trait Backend: Send + 'static {
    fn spawn(
        self: Box<Self>,
        requests: mpsc::Receiver<Request>,
        mailboxes: Vec<mpsc::Sender<ToIo>>,
    ) -> io::Result<JoinHandle<()>>;
}

/// A synchronous [`DocumentHandler`] on a thread of its own, answering in arrival order.
pub struct HandlerThread(pub Box<dyn DocumentHandler>);

impl Backend for HandlerThread {
    fn spawn(
        self: Box<Self>,
        requests: mpsc::Receiver<Request>,
        mailboxes: Vec<mpsc::Sender<ToIo>>,
    ) -> io::Result<JoinHandle<()>> {
        spawn_handler(self.0, requests, mailboxes)
    }
}

/// Runs `handler` on its own thread until every request sender is gone.
fn spawn_handler(
    mut handler: Box<dyn DocumentHandler>,
    mut requests: mpsc::Receiver<Request>,
    mailboxes: Vec<mpsc::Sender<ToIo>>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ldmd-handler".into())
        .spawn(move || {
            let mut batch = Vec::with_capacity(64);
            while requests.blocking_recv_many(&mut batch, 64) > 0 {
                for request in batch.drain(..) {
                    let response = handler.handle(&request.document, request.role);
                    let key = request.reply_to;
                    // The thread may be gone already (shutting down): the answer has nowhere to go.
                    let _ = mailboxes[key.thread].blocking_send(ToIo::Response {
                        key,
                        response,
                        subscription: None,
                        ticket: None,
                    });
                }
            }
        })
}
