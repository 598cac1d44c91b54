//! Reads off the commit path: each I/O thread answers documents of list actions from its own
//! replica of the registry as last committed, while the registry thread applies and commits
//! the next batch.
//!
//! ```text
//!  registry: apply batch ─ commit ─ generation += 1 ─ flush, one message per I/O thread:
//!            [replica (if the thread reads), replies, events] tagged with the generation
//!  I/O thread: takes the message: `delivered` = max(delivered, generation), then installs the
//!              replica and delivers the replies
//!  I/O thread: a document of list actions only, nothing of its stream unanswered, and a
//!              replica at least as new as `delivered` → answered here; else → the registry
//! ```
//!
//! **Why a read never misses a write it follows.** An I/O thread raises `delivered` to a
//! batch's generation before it delivers any of the batch's replies or events. A read sent
//! after a write's reply was received therefore finds `delivered` at least at that write's
//! generation, on any thread: it is answered here only from a replica at least as new, and
//! otherwise by the registry itself, after the write. A read pipelined behind an unanswered
//! document of its own stream goes to the registry too, so that it is answered after that
//! document and sees what it did. (`delivered` rather than the registry's own commit: a read
//! on a thread that has not yet taken its batch then waits only for the other thread's skew,
//! not for the whole trip from the registry.)
//!
//! **What a replica costs.** The registry clones its state for a thread only when the state
//! changed since it last sent that thread one and the thread has read since: at most once per
//! thread per batch, and never for a workload of writes alone.
//!
//! A replica holds only committed state: the registry publishes one after a commit, or after a
//! batch that changed nothing durable (progress of long operations), never in between.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::ldm::action::ActionName;
use crate::ldm::document::{Document, Response, Role};
use crate::limits::Limit;
use crate::registry::host_load::HostLoad;
use crate::registry::run::Progress;
use crate::registry::state::Registry;
use crate::server::dispatch::ReplyTicket;

/// What the registry thread and the I/O threads share about replicas.
#[derive(Debug)]
pub struct ReadPath {
    /// The newest generation whose replies or events an I/O thread has begun to deliver.
    delivered: AtomicU64,
    /// Per I/O thread: it has read from its replica, or wanted to, since the registry last
    /// sent it one; the registry sends it the next generation with its next batch.
    wanted: Box<[AtomicBool]>,
    /// Bytes of replies built and not yet written, all streams together (the registry's and
    /// the replicas' alike).
    pub replies_in_flight: Arc<AtomicUsize>,
    pub reply_bytes_in_flight_max: usize,
}

impl ReadPath {
    pub fn new(threads: usize, reply_bytes_in_flight_max: usize) -> Arc<ReadPath> {
        Arc::new(ReadPath {
            delivered: AtomicU64::new(0),
            wanted: (0..threads).map(|_| AtomicBool::new(false)).collect(),
            replies_in_flight: Arc::new(AtomicUsize::new(0)),
            reply_bytes_in_flight_max,
        })
    }

    /// An I/O thread: it is about to deliver replies and events of `generation`.
    pub fn deliver(&self, generation: u64) {
        self.delivered.fetch_max(generation, Ordering::AcqRel);
    }

    /// The registry: whether `thread` asked for a new replica, forgetting the request.
    pub fn take_wanted(&self, thread: usize) -> bool {
        self.wanted
            .get(thread)
            .is_some_and(|wanted| wanted.swap(false, Ordering::AcqRel))
    }

    /// An I/O thread: whether `replica` (if any) is current enough to answer a read received
    /// now. Either way the thread reads, so it wants the next generation.
    pub fn is_current(&self, thread: usize, replica: Option<&Replica>) -> bool {
        let delivered = self.delivered.load(Ordering::Acquire);
        if let Some(wanted) = self.wanted.get(thread)
            && !wanted.load(Ordering::Relaxed)
        {
            wanted.store(true, Ordering::Release);
        }
        replica.is_some_and(|r| r.generation >= delivered)
    }
}

/// A copy of the registry's committed state, owned by one I/O thread.
pub struct Replica {
    pub generation: u64,
    registry: Registry,
    host_load: HostLoad,
}

impl Replica {
    pub fn new(generation: u64, registry: &Registry, host_load: HostLoad) -> Replica {
        Replica {
            generation,
            registry: registry.replica(),
            host_load,
        }
    }

    /// Answers `document` (see [`is_replica_read`]) as the registry would, with its listings
    /// counted in the stream's unwritten replies and in the replies in flight. Returns the
    /// limits that fired, for the metrics.
    pub fn answer(
        &mut self,
        path: &ReadPath,
        document: Document,
        role: Role,
        unwritten: &Arc<AtomicUsize>,
        now: u64,
    ) -> (Response, Option<ReplyTicket>, Vec<Limit>) {
        let registry = &mut self.registry;
        registry.set_host_util(self.host_load.percent());
        let in_flight = path.replies_in_flight.load(Ordering::Acquire);
        registry.set_reply_room(path.reply_bytes_in_flight_max.saturating_sub(in_flight));
        registry.set_connection_unwritten(unwritten.load(Ordering::Acquire));
        let mut run = Registry::begin(document, role);
        let progress = registry.advance(&mut run, now);
        debug_assert_eq!(progress, Progress::Done, "a listing never waits");
        let ticket = ReplyTicket::count(
            run.filled_bytes(),
            run.filled_shared_bytes(),
            unwritten.clone(),
            path.replies_in_flight.clone(),
        );
        let (response, _) = run.into_response();
        (response, ticket, registry.take_limit_hits())
    }
}

/// Whether a replica may answer `document`: well formed, and every cmd a list action (no
/// change, no event registration, which must stay in order with the registry's events).
pub fn is_replica_read(document: &Document) -> bool {
    document.malformed.is_none()
        && !document.cmds.is_empty()
        && document.cmds.iter().all(|cmd| {
            cmd.malformed.is_none()
                && matches!(&cmd.action, Some(ActionName::Known(action)) if action.is_list())
        })
}
