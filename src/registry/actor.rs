//! The registry actor: the only writer of domain state, on a thread of its own.
//!
//! ```text
//!  connections ──Request──▶ mailbox ─┐                 ┌─▶ I/O thread mailboxes (replies, events)
//!  memory DR workers ──Report──────▶ ├─ apply batch ─ commit (one fsync) ─┤
//!                                     │                 └─▶ start/cancel workers
//! ```
//!
//! It drains its mailbox in batches, applies each request with the pure rules, writes the
//! batch's changes in one durable transaction, and only then replies and publishes events, so
//! nothing is acknowledged before it is on disk. A batch of reads commits nothing, so a read
//! waits at most for the batch in progress. Slow work (the modelled guest of a memory DR) runs
//! in worker tasks that report back as messages; the actor never waits for them.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, mpsc};

use crate::registry::actions;
use crate::registry::machine::MEMDR_GRANULE;
use crate::registry::model::MemDrKind;
use crate::registry::run::{Progress, Run};
use crate::registry::state::{Effect, Registry};
use crate::registry::store::Store;
use crate::registry::units::round_down;
use crate::server::dispatch::{Backend, ConnKey, Request, ToIo};

/// Requests applied per batch, at most.
const BATCH_MAX: usize = 256;

/// The modelled guest OS that a memory DR waits for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GuestModel {
    /// Time the guest takes per GiB moved.
    pub seconds_per_gib: f64,
    /// Memory the guest cannot give up (kernel, locked pages): a removal that would go below
    /// it is accepted only in part.
    pub memory_floor: u64,
}

impl Default for GuestModel {
    fn default() -> Self {
        GuestModel {
            seconds_per_gib: 0.5,
            memory_floor: 2 << 30,
        }
    }
}

/// A memory DR worker's report.
#[derive(Debug)]
enum Report {
    Progress { operation: u64, done: u64 },
    Done { operation: u64, done: u64 },
}

/// The registry, ready to run as the daemon's [`Backend`].
pub struct RegistryActor {
    pub registry: Registry,
    pub store: Store,
    pub guest: GuestModel,
}

impl Backend for RegistryActor {
    fn spawn(
        self: Box<Self>,
        requests: mpsc::Receiver<Request>,
        mailboxes: Vec<mpsc::Sender<ToIo>>,
    ) -> io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("ldmd-registry".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .expect("a current-thread runtime needs no resources");
                runtime.block_on(self.run(requests, mailboxes));
            })
    }
}

/// Something owed to an I/O thread, in commit order.
enum Output {
    Reply(
        ConnKey,
        crate::ldm::Response,
        Option<crate::ldm::event::SubscriptionChange>,
    ),
    Event(Arc<crate::ldm::event::Event>),
}

struct Actor {
    registry: Registry,
    store: Store,
    guest: GuestModel,
    mailboxes: Vec<mpsc::Sender<ToIo>>,
    /// Documents waiting for a long operation, by operation id.
    waiting: HashMap<u64, (ConnKey, Run)>,
    /// Later documents of a connection whose earlier one waits: answered in order.
    held: HashMap<ConnKey, VecDeque<Request>>,
    cancels: HashMap<u64, Arc<Notify>>,
    reports_tx: mpsc::UnboundedSender<Report>,
    outputs: Vec<Output>,
}

impl RegistryActor {
    async fn run(self, mut requests: mpsc::Receiver<Request>, mailboxes: Vec<mpsc::Sender<ToIo>>) {
        let (reports_tx, mut reports) = mpsc::unbounded_channel();
        let mut actor = Actor {
            registry: self.registry,
            store: self.store,
            guest: self.guest,
            mailboxes,
            waiting: HashMap::new(),
            held: HashMap::new(),
            cancels: HashMap::new(),
            reports_tx,
            outputs: Vec::new(),
        };
        // A new or rolled-back state is made durable before anything is answered.
        actor.commit();
        crate::metrics::get()
            .registry_domains
            .set(actor.registry.domains().count() as f64);
        let mut batch = Vec::with_capacity(BATCH_MAX);
        let mut report_batch = Vec::new();
        loop {
            tokio::select! {
                biased;
                n = reports.recv_many(&mut report_batch, BATCH_MAX) => {
                    if n == 0 { return; }
                }
                n = requests.recv_many(&mut batch, BATCH_MAX) => {
                    if n == 0 { return; } // every connection's sender is gone: shutdown
                }
            }
            // Take whatever else is already waiting, so one commit covers it all.
            while let Ok(report) = reports.try_recv() {
                report_batch.push(report);
            }
            while batch.len() < BATCH_MAX {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            let metrics = crate::metrics::get();
            metrics
                .registry_mailbox_depth
                .set((batch.len() + requests.len()) as f64);
            if !batch.is_empty() {
                metrics.registry_batch_size.record(batch.len() as f64);
            }
            let now = unix_now();
            for report in report_batch.drain(..) {
                actor.report(report, now);
            }
            for request in batch.drain(..) {
                actor.request(request, now);
            }
            actor.commit();
            actor.flush().await;
        }
    }
}

impl Actor {
    fn request(&mut self, request: Request, now: u64) {
        if let Some(queue) = self.held.get_mut(&request.reply_to) {
            queue.push_back(request);
            return;
        }
        let run = Registry::begin(request.document, request.role);
        self.advance(request.reply_to, run, now);
    }

    /// Answers `run` and then, while they do not wait, the documents held behind it. A
    /// connection has an entry in `held` exactly while one of its documents is unanswered.
    fn advance(&mut self, key: ConnKey, run: Run, now: u64) {
        let mut next = Some(run);
        while let Some(mut run) = next.take() {
            let progress = self.registry.advance(&mut run, now);
            self.collect_events();
            match progress {
                Progress::Done(response, subscription) => {
                    self.outputs
                        .push(Output::Reply(key, response, subscription));
                    if let Some(queue) = self.held.get_mut(&key) {
                        match queue.pop_front() {
                            Some(request) => {
                                next = Some(Registry::begin(request.document, request.role));
                            }
                            None => {
                                self.held.remove(&key);
                            }
                        }
                    }
                }
                Progress::Waiting(operation) => {
                    self.held.entry(key).or_default();
                    self.waiting.insert(operation, (key, run));
                }
            }
        }
    }

    fn report(&mut self, report: Report, now: u64) {
        match report {
            Report::Progress { operation, done } => {
                actions::memdr_progress(&mut self.registry, operation, done);
            }
            Report::Done { operation, done } => {
                self.cancels.remove(&operation);
                let Some((end, outcome)) =
                    actions::finish_memdr(&mut self.registry, operation, done)
                else {
                    return;
                };
                crate::metrics::get().memdr(end).increment(1);
                self.collect_events();
                if let Some((key, mut run)) = self.waiting.remove(&operation) {
                    Registry::resume(&mut run, outcome);
                    self.advance(key, run, now);
                }
            }
        }
    }

    fn collect_events(&mut self) {
        for event in self.registry.take_events() {
            self.outputs.push(Output::Event(Arc::new(event)));
        }
    }

    /// Writes the batch's changes durably; without that nothing may be acknowledged, so a
    /// store that fails ends the daemon (a restart reloads the last committed state).
    fn commit(&mut self) {
        if !self.registry.has_dirty() {
            return;
        }
        let started = Instant::now();
        let changes = self.registry.take_dirty();
        if let Err(e) = self.store.commit(&changes) {
            tracing::error!(error = %e, "cannot make registry changes durable; exiting without acknowledging them");
            std::process::exit(70);
        }
        let elapsed = started.elapsed();
        let metrics = crate::metrics::get();
        metrics
            .registry_commit_seconds
            .record(elapsed.as_secs_f64());
        metrics
            .registry_domains
            .set(self.registry.domains().count() as f64);
        tracing::trace!(records = changes.len(), ?elapsed, "committed");
    }

    /// Replies and events go out after the commit, then long operations start.
    async fn flush(&mut self) {
        for output in self.outputs.drain(..) {
            match output {
                Output::Reply(key, response, subscription) => {
                    let message = ToIo::Response {
                        key,
                        response,
                        subscription,
                    };
                    // A closed mailbox means the thread is gone (shutdown): nobody to tell.
                    let _ = self.mailboxes[key.thread].send(message).await;
                }
                Output::Event(event) => {
                    crate::metrics::get().events_published.increment(1);
                    for mailbox in &self.mailboxes {
                        let _ = mailbox.send(ToIo::Event(event.clone())).await;
                    }
                }
            }
        }
        for effect in self.registry.take_effects() {
            match effect {
                Effect::StartMemDr {
                    operation,
                    kind,
                    bytes,
                    bound,
                    ..
                } => {
                    let cancel = Arc::new(Notify::new());
                    self.cancels.insert(operation, cancel.clone());
                    let accepted = self.guest.accepts(kind, bytes, bound);
                    tokio::spawn(memdr_worker(
                        operation,
                        accepted,
                        self.guest,
                        cancel,
                        self.reports_tx.clone(),
                    ));
                }
                Effect::CancelMemDr { operation } => {
                    if let Some(cancel) = self.cancels.get(&operation) {
                        cancel.notify_one();
                    }
                }
            }
        }
        crate::metrics::get()
            .memdr_in_progress
            .set(self.cancels.len() as f64);
    }
}

impl GuestModel {
    /// How much of a change the guest goes along with: all of an addition; of a removal, what
    /// leaves it at least its floor.
    pub fn accepts(&self, kind: MemDrKind, bytes: u64, bound: u64) -> u64 {
        match kind {
            MemDrKind::Add => bytes,
            MemDrKind::Remove => bytes.min(round_down(
                bound.saturating_sub(self.memory_floor),
                MEMDR_GRANULE,
            )),
        }
    }
}

/// Moves `accepted` bytes 256 MB at a time at the guest's pace, reporting progress, until done
/// or cancelled.
async fn memdr_worker(
    operation: u64,
    accepted: u64,
    guest: GuestModel,
    cancel: Arc<Notify>,
    reports: mpsc::UnboundedSender<Report>,
) {
    let per_chunk = Duration::from_secs_f64(guest.seconds_per_gib.max(0.0) / 4.0);
    let mut done = 0;
    while done < accepted {
        tokio::select! {
            _ = tokio::time::sleep(per_chunk) => {
                done += MEMDR_GRANULE;
                let _ = reports.send(Report::Progress { operation, done });
            }
            _ = cancel.notified() => break,
        }
    }
    let _ = reports.send(Report::Done { operation, done });
}

/// Seconds since the epoch: the registry's clock (uptimes, SP configuration times).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
