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
//!
//! **A commit that fails** (a full disk, an I/O error) acknowledges nothing of its batch:
//!
//! 1. the registry is rebuilt from the records as last committed (kept in memory, so no read of
//!    the failing disk is needed), keeping the memory DRs whose workers still run;
//! 2. every document the batch touched is rewound to where it stood before the batch and
//!    answered again, with every write refused ("ldmd cannot save changes: ...") and every
//!    read answered from the rebuilt state; the batch's events and long operations are
//!    dropped; a memory DR that finished in the batch is kept to be recorded later, its
//!    document still waiting;
//! 3. until a commit succeeds again, writes are refused at once and reads served; the store
//!    is tried again after a back-off (0.1 s, doubling to 5 s) by the next batch with a write or
//!    a finished memory DR.
//!
//! The daemon never exits for a failing store, and a restart on a full disk starts in the same
//! state (see `main.rs`). A panic, on the other hand, ends the process: nothing it could leave
//! half-done was acknowledged.

// The registry's shell (its thread, its disk): the lints of the pure rules do not apply.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, mpsc};

use crate::auth::verifier::ResolverKey;
use crate::ldm::event::Event;
use crate::migration::MigrationId;
use crate::migration::plan::WorkerReport;
use crate::migration::worker::{self, Worker};
use crate::registry::actions;
use crate::registry::actions::migration::{self as migrating, Note};
use crate::registry::machine::MEMDR_GRANULE;
use crate::registry::model::{MemDrEnd, MemDrKind};
use crate::registry::replica::{ReadPath, Replica, is_replica_read};
use crate::registry::run::{Checkpoint, Progress, Run};
use crate::registry::state::{Effect, Key, Registry};
use crate::registry::store::{Committed, Store, records_of};
use crate::registry::units::round_down;
use crate::server::dispatch::{Backend, ConnKey, ReplyTicket, Request, ToIo};

/// Requests applied per batch, at most.
const BATCH_MAX: usize = 256;
/// The first wait before the store is tried again after a failure; it doubles up to the max.
const STORE_RETRY_FIRST: Duration = Duration::from_millis(100);
const STORE_RETRY_MAX: Duration = Duration::from_secs(5);
/// How often reservations are looked at for silence (`migration.reservation_idle_secs`).
const RESERVATION_TICK: Duration = Duration::from_secs(1);

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

/// A worker's report: a memory DR's, or a migration's.
#[derive(Clone, Debug)]
enum Report {
    Progress { operation: u64, done: u64 },
    Done { operation: u64, done: u64 },
    Migration(MigrationId, WorkerReport),
}

/// The registry, ready to run as the daemon's [`Backend`].
pub struct RegistryActor {
    pub registry: Registry,
    pub store: Store,
    pub guest: GuestModel,
    /// Why the store could not be opened for writing at start, if it could not: the daemon
    /// then starts with writes refused and retries the store.
    pub store_fault: Option<String>,
    /// Bytes of replies built and not yet written, all streams together, at most.
    pub reply_bytes_in_flight_max: usize,
    /// How migration workers reach their targets.
    pub migration: Arc<worker::Settings>,
    /// Where the key of this daemon's migration tokens is published for the verifier (a
    /// source's resolver logs in with a token).
    pub resolvers: ResolverKey,
    /// Where the I/O threads' replicas come from; `None`: every read comes to this thread.
    pub reads: Option<Arc<ReadPath>>,
}

impl RegistryActor {
    pub fn new(registry: Registry, store: Store, guest: GuestModel) -> RegistryActor {
        RegistryActor {
            registry,
            store,
            guest,
            store_fault: None,
            reply_bytes_in_flight_max: crate::limits::Limits::default().reply_bytes_in_flight_max,
            migration: Arc::new(worker::Settings::default()),
            resolvers: ResolverKey::default(),
            reads: None,
        }
    }
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

/// Something owed to an I/O thread, in commit order. (A reply's run is large, but outputs only
/// wait in one vector for the batch's commit.)
#[allow(clippy::large_enum_variant)]
enum Output {
    /// An answered document, with the connection it goes to.
    Reply(Answer),
    Event(Arc<Event>),
}

/// A document being answered, for one connection, with the bytes its listings filled in
/// counted in the replies in flight from the moment they are built (a document that then waits
/// for a memory DR holds them all that time).
struct Answer {
    key: ConnKey,
    run: Run,
    /// The connection's bytes of replies not yet written.
    unwritten: Arc<AtomicUsize>,
    counted: Option<ReplyTicket>,
}

impl Answer {
    fn new(key: ConnKey, run: Run, unwritten: Arc<AtomicUsize>) -> Answer {
        Answer {
            key,
            run,
            unwritten,
            counted: None,
        }
    }

    /// Counts what the run filled in since the last call.
    fn count(&mut self, in_flight: &Arc<AtomicUsize>) {
        let (counted, counted_shared) = self
            .counted
            .as_ref()
            .map_or((0, 0), |t| (t.bytes(), t.shared_bytes()));
        let (filled, filled_shared) = (self.run.filled_bytes(), self.run.filled_shared_bytes());
        if filled > counted {
            let more = ReplyTicket::count(
                filled - counted,
                filled_shared.saturating_sub(counted_shared),
                self.unwritten.clone(),
                in_flight.clone(),
            );
            self.counted = ReplyTicket::join(self.counted.take(), more);
        }
    }

    /// Back to where the batch found it, counted anew.
    fn rewind(&mut self, in_flight: &Arc<AtomicUsize>) -> Option<Checkpoint> {
        let checkpoint = self.run.rewind();
        self.counted = None;
        self.count(in_flight);
        checkpoint
    }
}

/// The store failed: why, and when to try it again.
struct StoreFault {
    reason: String,
    retry_at: Instant,
    backoff: Duration,
}

struct Actor {
    registry: Registry,
    store: Store,
    guest: GuestModel,
    mailboxes: Vec<mpsc::Sender<ToIo>>,
    /// Every record as last committed (as the store holds it), to rebuild the registry from
    /// when a commit fails without reading the failing disk.
    committed: BTreeMap<Key, Vec<u8>>,
    /// False until the first commit succeeds: `committed` then holds state not yet on disk.
    committed_is_durable: bool,
    /// Documents waiting for a long operation, by operation id.
    waiting: HashMap<u64, Answer>,
    /// Later documents of a connection whose earlier one is unanswered: answered in order. A
    /// connection has an entry exactly while one of its documents is unanswered.
    held: HashMap<ConnKey, VecDeque<Answer>>,
    cancels: HashMap<u64, Arc<Notify>>,
    reports_tx: mpsc::UnboundedSender<Report>,
    outputs: Vec<Output>,
    /// Reports applied in the batch in progress (with how a memory DR ended), to apply again if
    /// its commit fails.
    finished: Vec<(Report, Option<MemDrEnd>)>,
    /// Finished memory DRs whose recording a failed commit undid: applied first next time.
    pending: Vec<Report>,
    fault: Option<StoreFault>,
    /// A commit failed since the store last took one: the next commit rewrites every record
    /// and deletes what it does not name (the failed commit may have reached the disk).
    resync: bool,
    /// Bytes of replies built and not yet written, shared with the I/O threads.
    replies_in_flight: Arc<AtomicUsize>,
    reply_bytes_in_flight_max: usize,
    /// Migrations: their workers, where workers report, and when each began and stopped its
    /// domain (for the duration and downtime metrics).
    workers: HashMap<MigrationId, Worker>,
    migration_settings: Arc<worker::Settings>,
    migration_reports: worker::Reports,
    began: HashMap<MigrationId, Instant>,
    suspended: HashMap<MigrationId, Instant>,
    resolvers: ResolverKey,
    entropy: ring::rand::SystemRandom,
    host_load: crate::registry::host_load::HostLoad,
    reads: Option<Arc<ReadPath>>,
    /// The generation of the state as last published to `reads`.
    generation: u64,
    /// The state may have changed since it was last published.
    changed: bool,
    /// Per I/O thread, the generation of the last replica sent to it.
    replica_sent: Vec<u64>,
}

impl RegistryActor {
    async fn run(self, mut requests: mpsc::Receiver<Request>, mailboxes: Vec<mpsc::Sender<ToIo>>) {
        let (reports_tx, mut reports) = mpsc::unbounded_channel();
        let (migration_reports, mut migrations) = mpsc::unbounded_channel();
        // Crash-only: an empty copy here would, after a failed commit, rebuild an empty
        // registry and then delete every record on disk.
        let committed = self
            .registry
            .records()
            .expect("the registry's own records serialize")
            .into_iter()
            .collect();
        let mut actor = Actor {
            registry: self.registry,
            store: self.store,
            guest: self.guest,
            mailboxes,
            committed,
            committed_is_durable: false,
            waiting: HashMap::new(),
            held: HashMap::new(),
            cancels: HashMap::new(),
            reports_tx,
            outputs: Vec::new(),
            finished: Vec::new(),
            pending: Vec::new(),
            fault: None,
            resync: false,
            replies_in_flight: self.reads.as_ref().map_or_else(
                || Arc::new(AtomicUsize::new(0)),
                |r| r.replies_in_flight.clone(),
            ),
            reply_bytes_in_flight_max: self.reply_bytes_in_flight_max,
            workers: HashMap::new(),
            migration_settings: self.migration,
            migration_reports,
            began: HashMap::new(),
            suspended: HashMap::new(),
            resolvers: self.resolvers,
            entropy: ring::rand::SystemRandom::new(),
            host_load: crate::registry::host_load::HostLoad::start(),
            reads: self.reads,
            generation: 0,
            changed: true,
            replica_sent: Vec::new(),
        };
        if let Some(reason) = self.store_fault {
            actor.resync = true;
            actor.store_failed(reason);
        }
        // A new or rolled-back state is made durable before anything is answered. If the store
        // cannot take it, every record stays marked: none of this state is on disk yet.
        actor.begin_batch();
        if let Err(reason) = actor.commit() {
            actor.registry.touch_all();
            actor.resync = true;
            actor.store_failed(reason);
        }
        actor.publish_resolver_key();
        crate::metrics::get()
            .registry_domains
            .set(actor.registry.domains().count() as f64);
        // Restart rules of migrations may owe sends (resolve, forget): they start now.
        actor.count_limit_hits();
        actor.flush().await;
        let mut batch = Vec::with_capacity(BATCH_MAX);
        let mut report_batch = Vec::new();
        let mut migration_batch = Vec::new();
        loop {
            let retry_at = actor
                .retry_wanted()
                .then(|| actor.fault.as_ref().map(|f| f.retry_at))
                .flatten();
            // Reservations this daemon holds as a target are released when their source goes
            // silent: looked at once a second while there are any.
            let tick = migrating::has_reservations(&actor.registry)
                .then(|| Instant::now() + RESERVATION_TICK);
            tokio::select! {
                biased;
                n = reports.recv_many(&mut report_batch, BATCH_MAX) => {
                    if n == 0 { return; }
                }
                n = migrations.recv_many(&mut migration_batch, BATCH_MAX) => {
                    if n == 0 { return; }
                }
                n = requests.recv_many(&mut batch, BATCH_MAX) => {
                    if n == 0 { return; } // every connection's sender is gone: shutdown
                }
                _ = sleep_until(retry_at), if retry_at.is_some() => {}
                _ = sleep_until(tick), if tick.is_some() => {}
            }
            // Take whatever else is already waiting, so one commit covers it all.
            while let Ok(report) = reports.try_recv() {
                report_batch.push(report);
            }
            while let Ok((id, report)) = migrations.try_recv() {
                migration_batch.push((id, report));
            }
            report_batch.extend(
                migration_batch
                    .drain(..)
                    .map(|(id, report)| Report::Migration(id, report)),
            );
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
            // Reports move long operations along, which listings show.
            actor.changed |=
                !report_batch.is_empty() || !actor.pending.is_empty() || tick.is_some();
            let now = unix_now();
            actor.begin_batch();
            for report in std::mem::take(&mut actor.pending) {
                actor.report(report, now);
            }
            for report in report_batch.drain(..) {
                actor.report(report, now);
            }
            for request in batch.drain(..) {
                actor.request(request, now);
            }
            if tick.is_some() {
                migrating::expire_reservations(&mut actor.registry, now);
                actor.collect_events();
            }
            if let Err(reason) = actor.commit() {
                actor.roll_back(reason, now);
            }
            actor.count_limit_hits();
            actor.flush().await;
        }
    }
}

impl Actor {
    /// Sets the registry up for a batch: whether writes are taken, and the room for listings.
    fn begin_batch(&mut self) {
        let refusing = self
            .fault
            .as_ref()
            .filter(|f| Instant::now() < f.retry_at)
            .map(|f| refusal(&f.reason));
        self.registry.refuse_writes(refusing);
        let mut entropy = [0u8; 32];
        // Migration ids and tokens are drawn from this; the OS generator does not fail on
        // Linux once booted, and a failure would leave the previous batch's bytes, which the
        // registry still mixes with a counter.
        let _ = ring::rand::SecureRandom::fill(&self.entropy, &mut entropy);
        self.registry.set_entropy(entropy);
        self.registry.set_host_util(self.host_load.percent());
        let in_flight = self.replies_in_flight.load(Ordering::Acquire);
        self.registry
            .set_reply_room(self.reply_bytes_in_flight_max.saturating_sub(in_flight));
    }

    /// Whether a failed store should be tried again even with no request: something waits to
    /// be recorded.
    fn retry_wanted(&self) -> bool {
        self.fault.is_some() && (!self.pending.is_empty() || self.registry.has_dirty())
    }

    fn request(&mut self, request: Request, now: u64) {
        self.changed |= !is_replica_read(&request.document);
        let run = Registry::begin(request.document, request.role);
        let answer = Answer::new(request.reply_to, run, request.unwritten);
        if let Some(queue) = self.held.get_mut(&request.reply_to) {
            queue.push_back(answer);
            return;
        }
        self.advance(answer, now);
    }

    /// Answers `answer` and then, while they do not wait, the documents held behind it.
    fn advance(&mut self, answer: Answer, now: u64) {
        let key = answer.key;
        let mut next = Some(answer);
        while let Some(mut answer) = next.take() {
            answer.run.checkpoint(None);
            let unwritten = answer.unwritten.load(Ordering::Acquire);
            self.registry.set_connection_unwritten(unwritten);
            let progress = self.registry.advance(&mut answer.run, now);
            answer.count(&self.replies_in_flight);
            self.collect_events();
            // A cancel may have answered the document that waits for its migration.
            for (operation, outcome) in migrating::take_answers(&mut self.registry) {
                self.resume(operation, outcome, now);
            }
            match progress {
                Progress::Done => {
                    self.outputs.push(Output::Reply(answer));
                    if let Some(queue) = self.held.get_mut(&key) {
                        match queue.pop_front() {
                            Some(held) => next = Some(held),
                            None => {
                                self.held.remove(&key);
                            }
                        }
                    }
                }
                Progress::Waiting(operation) => {
                    self.held.entry(key).or_default();
                    self.waiting.insert(operation, answer);
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
                if self.registry.writes_refused.is_some() {
                    // The store cannot take the result now: it is recorded at the next try.
                    self.pending.push(report);
                    return;
                }
                let Some((end, outcome)) =
                    actions::finish_memdr(&mut self.registry, operation, done)
                else {
                    return;
                };
                self.finished.push((report, Some(end)));
                self.collect_events();
                self.resume(operation, outcome, now);
            }
            Report::Migration(id, worker_report) => {
                let replayed = !matches!(worker_report, WorkerReport::Progress { .. });
                if replayed && self.registry.writes_refused.is_some() {
                    self.pending.push(Report::Migration(id, worker_report));
                    return;
                }
                if replayed {
                    self.finished
                        .push((Report::Migration(id, worker_report.clone()), None));
                }
                let answers = migrating::report(&mut self.registry, id, worker_report);
                self.collect_events();
                for (operation, outcome) in answers {
                    self.resume(operation, outcome, now);
                }
            }
        }
    }

    /// The document waiting for `operation` gets `outcome` for its object and goes on.
    fn resume(&mut self, operation: u64, outcome: crate::registry::state::Outcome, now: u64) {
        if let Some(mut answer) = self.waiting.remove(&operation) {
            answer.run.checkpoint(Some(operation));
            Registry::resume(&mut answer.run, outcome);
            self.advance(answer, now);
        }
    }

    fn collect_events(&mut self) {
        for event in self.registry.take_events() {
            self.outputs.push(Output::Event(Arc::new(event)));
        }
    }

    /// Writes the batch's changes durably; nothing of the batch may be acknowledged otherwise.
    fn commit(&mut self) -> Result<(), String> {
        // While writes are refused nothing new is dirty but what a rebuild rolled back; the
        // store is not touched before its retry time.
        if !self.registry.has_dirty() || self.registry.writes_refused.is_some() {
            self.settle_finished();
            self.migration_notes();
            return Ok(());
        }
        if crate::fault::point("registry.commit").is_some() {
            panic!("fault point registry.commit fired");
        }
        if self.resync {
            self.registry.touch_all();
        }
        let changes = self.registry.take_dirty()?;
        // The store's write and sync: serializing the records is the registry's work.
        let started = Instant::now();
        let committed = self
            .store
            .commit(&changes, self.resync)
            .map_err(|e| e.to_string())?;
        self.resync = false;
        let elapsed = started.elapsed();
        if changes
            .iter()
            .any(|(key, _)| matches!(key, crate::registry::state::Key::Meta))
        {
            self.publish_resolver_key();
        }
        self.migration_notes();
        for (key, value) in changes {
            match value {
                Some(value) => self.committed.insert(key, value),
                None => self.committed.remove(&key),
            };
        }
        self.committed_is_durable = true;
        for answer in self.waiting.values_mut() {
            answer.run.settle();
        }
        self.settle_finished();
        if let Some(fault) = self.fault.take() {
            tracing::info!(after = %fault.reason, "the registry store takes changes again");
            crate::metrics::get().registry_store_writable.set(1.0);
        }
        let metrics = crate::metrics::get();
        metrics
            .registry_commit_seconds
            .record(elapsed.as_secs_f64());
        if committed == Committed::Checkpoint {
            metrics.registry_checkpoints.increment(1);
        }
        metrics
            .registry_domains
            .set(self.registry.domains().count() as f64);
        Ok(())
    }

    /// The memory DRs recorded as finished in a batch that is durable: their workers are gone,
    /// and their outcomes count.
    fn settle_finished(&mut self) {
        for (report, end) in self.finished.drain(..) {
            if let Report::Done { operation, .. } = report {
                self.cancels.remove(&operation);
            }
            if let Some(end) = end {
                crate::metrics::get().memdr(end).increment(1);
            }
        }
    }

    /// The key of this daemon's migration tokens, for the verifier: published only once the
    /// commit that made it durable succeeded, so no token outlives a key that was never stored.
    fn publish_resolver_key(&self) {
        self.resolvers.publish(self.registry.resolver_key());
    }

    /// What the migration rules noted in a batch that is now durable: metrics, log lines, and
    /// the fault points where tests kill the daemon.
    fn migration_notes(&mut self) {
        let metrics = crate::metrics::get();
        for note in migrating::take_notes(&mut self.registry) {
            match note {
                Note::Point(name) => crate::fault::kill_point(name),
                Note::Began { id, .. } => {
                    self.began.insert(id, Instant::now());
                }
                Note::Suspended { id } => {
                    self.suspended.insert(id, Instant::now());
                }
                Note::Ended {
                    id,
                    source,
                    outcome,
                } => {
                    let role = if source { "source" } else { "target" };
                    metrics.migration_ended(role, outcome);
                    if outcome == "in_doubt" {
                        continue;
                    }
                    if let Some(began) = self.began.remove(&id) {
                        metrics.migration_duration(role, began.elapsed());
                    }
                    if let Some(suspended) = self.suspended.remove(&id)
                        && outcome == "committed"
                    {
                        metrics.migration_downtime(suspended.elapsed());
                    }
                }
                Note::Log { warn: true, line } => tracing::warn!("{line}"),
                Note::Log { warn: false, line } => tracing::info!("{line}"),
            }
        }
        let (mut holding, mut records, mut in_doubt) = ([0; 2], [0; 2], 0);
        for record in self.registry.migrations() {
            let role = usize::from(record.outgoing().is_none());
            records[role] += 1;
            if record.holds_domain() {
                holding[role] += 1;
            }
            if record.outgoing().is_some_and(|o| o.in_doubt) && record.holds_domain() {
                in_doubt += 1;
            }
        }
        metrics.migrations_in_progress(holding, in_doubt, records);
    }

    /// Remembers that the store failed, and when to try it again.
    fn store_failed(&mut self, reason: String) {
        let backoff = match &self.fault {
            None => STORE_RETRY_FIRST,
            Some(fault) => (fault.backoff * 2).min(STORE_RETRY_MAX),
        };
        if self.fault.is_none() {
            tracing::error!(error = %reason, "the registry store cannot take changes: writes are refused and reads served until it can; retrying");
        }
        let metrics = crate::metrics::get();
        metrics.registry_commit_failures.increment(1);
        metrics.registry_store_writable.set(0.0);
        self.fault = Some(StoreFault {
            reason,
            retry_at: Instant::now() + backoff,
            backoff,
        });
    }

    /// The batch's commit failed: back to the last committed state, and every document the
    /// batch touched answered again with its writes refused (see the module documentation).
    fn roll_back(&mut self, reason: String, now: u64) {
        self.store_failed(reason.clone());
        self.resync = true;
        let cancels = &self.cancels;
        let rebuilt = records_of(&self.committed).and_then(|records| {
            Registry::restore_keeping(
                self.registry.machine().clone(),
                self.registry.settings().clone(),
                records,
                |operation| cancels.contains_key(&operation),
            )
        });
        // Who waits for which migration, and what arrived of transfers, outlive the rebuild;
        // what the failed batch noted for the shell does not.
        let mut migrating = std::mem::take(&mut self.registry.migrating);
        migrating.forget_batch();
        // Crash-only: records this process wrote that no longer decode are a defect, and
        // keeping the batch's changes instead would later save writes that were refused. The
        // restart reads the disk, which holds exactly what was acknowledged.
        let (registry, _) = match rebuilt {
            Ok(rebuilt) => rebuilt,
            Err(e) => panic!("cannot rebuild the registry after a failed commit: {e}"),
        };
        self.registry = registry;
        self.registry.migrating = migrating;
        if !self.committed_is_durable {
            self.registry.touch_all();
        }
        // The rebuilt registry starts with no room figures: give it the batch's again. Its
        // limit hits are counted anew as the documents are answered again.
        let in_flight = self.replies_in_flight.load(Ordering::Acquire);
        self.registry
            .set_reply_room(self.reply_bytes_in_flight_max.saturating_sub(in_flight));
        self.pending
            .extend(self.finished.drain(..).map(|(report, _)| report));

        // Every document the batch touched, back to where it stood, in the order they were
        // answered; replies and events of the batch are dropped.
        let mut again: Vec<Answer> = Vec::new();
        for output in self.outputs.drain(..) {
            if let Output::Reply(answer) = output {
                again.push(answer);
            }
        }
        let touched: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, answer)| answer.run.is_touched())
            .map(|(operation, _)| *operation)
            .collect();
        for operation in touched {
            if let Some(answer) = self.waiting.remove(&operation) {
                again.push(answer);
            }
        }
        let mut queues: Vec<(ConnKey, Vec<Answer>)> = Vec::new();
        for mut answer in again {
            let key = answer.key;
            match answer.rewind(&self.replies_in_flight) {
                // Resumed by a memory DR that finished in this batch: it waits for it again.
                Some(checkpoint) if checkpoint.waiting_for.is_some() => {
                    let operation = checkpoint.waiting_for.unwrap_or_default();
                    self.waiting.insert(operation, answer);
                    self.held.entry(key).or_default();
                }
                _ => match queues.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, answers)) => answers.push(answer),
                    None => queues.push((key, vec![answer])),
                },
            }
        }
        self.registry.refuse_writes(Some(refusal(&reason)));
        for (key, answers) in queues {
            let queue = self.held.entry(key).or_default();
            for answer in answers.into_iter().rev() {
                queue.push_front(answer);
            }
            let waits = self.waiting.values().any(|answer| answer.key == key);
            if !waits && let Some(answer) = self.held.get_mut(&key).and_then(VecDeque::pop_front) {
                if self.held.get(&key).is_some_and(VecDeque::is_empty) {
                    self.held.remove(&key);
                }
                self.advance(answer, now);
            }
        }
    }

    fn count_limit_hits(&mut self) {
        let metrics = crate::metrics::get();
        for limit in self.registry.take_limit_hits() {
            metrics.limit_hit(limit).increment(1);
        }
    }

    /// Replies and events go out after the commit, then long operations start.
    async fn flush(&mut self) {
        let threads = self.mailboxes.len();
        if self.reads.is_some() && std::mem::take(&mut self.changed) {
            self.generation += 1;
        }
        let messages = std::mem::take(&mut self.outputs)
            .into_iter()
            .map(|output| match output {
                Output::Reply(answer) => {
                    let key = answer.key;
                    let (response, subscription) = answer.run.into_response();
                    let message = ToIo::Response {
                        key,
                        response,
                        subscription,
                        ticket: answer.counted,
                    };
                    (Some(key.thread), message)
                }
                Output::Event(event) => {
                    crate::metrics::get().events_published.increment(1);
                    (None, ToIo::Event(event))
                }
            });
        let mut queues = per_thread(messages, threads);
        if let Some(reads) = &self.reads {
            self.replica_sent.resize(threads, 0);
            for (thread, queue) in queues.iter_mut().enumerate() {
                if self.replica_sent[thread] < self.generation && reads.take_wanted(thread) {
                    self.replica_sent[thread] = self.generation;
                    let replica =
                        Replica::new(self.generation, &self.registry, self.host_load.clone());
                    queue.insert(0, ToIo::Replica(Box::new(replica)));
                }
            }
        }
        for (mailbox, mut messages) in self.mailboxes.iter().zip(queues) {
            let message = match (messages.len(), &self.reads) {
                (0, _) => continue,
                (1, None) => messages.pop().expect("one message"),
                (_, reads) => ToIo::Batch {
                    generation: reads.as_ref().map(|_| self.generation),
                    messages,
                },
            };
            // A closed mailbox means the thread is gone (shutdown): nobody to tell.
            let _ = mailbox.send(message).await;
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
                Effect::StartMigration(plan) => {
                    let id = plan.id;
                    match worker::start(
                        *plan,
                        self.migration_settings.clone(),
                        self.migration_reports.clone(),
                    ) {
                        Ok(worker) => {
                            self.workers.insert(id, worker);
                        }
                        Err(e) => {
                            tracing::error!(migration = %id, error = %e, "cannot start a migration worker");
                            let _ = self.migration_reports.send((
                                id,
                                WorkerReport::Failed(format!("ldmd could not start a worker: {e}")),
                            ));
                        }
                    }
                }
                Effect::MigrationSend {
                    contact,
                    send,
                    settle,
                } => {
                    let id = contact.id;
                    let command = worker::Command::Send {
                        contact,
                        send,
                        settle,
                    };
                    // A worker that ended (after a restart there is none) is started again.
                    let command = match self.workers.get(&id) {
                        Some(worker) => match worker.command(command) {
                            Ok(()) => continue,
                            Err(command) => command,
                        },
                        None => command,
                    };
                    match worker::contact(
                        id,
                        self.migration_settings.clone(),
                        self.migration_reports.clone(),
                    ) {
                        Ok(worker) => {
                            let _ = worker.command(command);
                            self.workers.insert(id, worker);
                        }
                        Err(e) => {
                            tracing::error!(migration = %id, error = %e, "cannot start a migration worker")
                        }
                    }
                }
                Effect::StopMigration { id } => {
                    // Dropping the channel ends the worker once it has sent what it was told.
                    self.workers.remove(&id);
                }
            }
        }
        crate::metrics::get()
            .memdr_in_progress
            .set(self.cancels.len() as f64);
    }
}

/// Sorts messages out to `threads` threads, each keeping their order: one addressed to `None`
/// (an event) goes to every thread.
fn per_thread(
    messages: impl IntoIterator<Item = (Option<usize>, ToIo)>,
    threads: usize,
) -> Vec<Vec<ToIo>> {
    let mut out: Vec<Vec<ToIo>> = (0..threads).map(|_| Vec::new()).collect();
    for (thread, message) in messages {
        match (thread, message) {
            (Some(thread), message) => {
                if let Some(queue) = out.get_mut(thread) {
                    queue.push(message);
                }
            }
            (None, ToIo::Event(event)) => {
                for queue in &mut out {
                    queue.push(ToIo::Event(event.clone()));
                }
            }
            // Only events go to every thread.
            (None, _) => {}
        }
    }
    out
}

/// The failure every write gets while the store cannot take changes.
fn refusal(reason: &str) -> String {
    format!(
        "The change was not made: ldmd cannot save changes now ({reason}); reads still work, and the store is retried"
    )
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ldm::document::Data;
    use crate::ldm::event::EventClass;

    /// What a message is, for comparing: an event by its action, anything else by its kind.
    fn kind(message: &ToIo) -> String {
        match message {
            ToIo::Event(event) => String::from_utf8_lossy(&event.document)
                .split("<action>")
                .nth(1)
                .and_then(|rest| rest.split('<').next())
                .unwrap_or_default()
                .to_owned(),
            ToIo::Shutdown => "shutdown".into(),
            _ => "other".into(),
        }
    }

    #[test]
    fn a_batch_is_one_message_list_per_thread_in_commit_order_with_events_to_every_thread() {
        let event = |action: &str| {
            ToIo::Event(Arc::new(Event::new(
                EventClass::Domain,
                action,
                &Data::default(),
            )))
        };
        let messages = vec![
            (Some(1), ToIo::Shutdown),
            (None, event("first")),
            (Some(0), ToIo::Shutdown),
            (Some(1), ToIo::Shutdown),
            (None, event("second")),
            (Some(7), ToIo::Shutdown), // no such thread: dropped
        ];
        let out = per_thread(messages, 2);
        let kinds: Vec<Vec<String>> = out.iter().map(|q| q.iter().map(kind).collect()).collect();
        assert_eq!(
            kinds,
            [
                vec!["first", "shutdown", "second"],
                vec!["shutdown", "first", "shutdown", "second"],
            ]
        );
    }
}
