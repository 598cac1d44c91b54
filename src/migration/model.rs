//! The model check: one migration attempt between a source and a target, explored breadth
//! first over every interleaving of delivery, loss, duplication and reordering of messages,
//! crash and restart of either side, every timeout and the operator's cancel, to a stated
//! depth. Each side is the daemon's own state machine ([`source::step`], [`target::step`]);
//! what is modelled here is only the shell around them: the worker's one request at a time,
//! the network, and which records survive a crash (the durable ones).
//!
//! At every reachable state:
//! - the domain is never runnable on both sides (the source's copy runs unless it is `Prepared`
//!   or removed; the target's once it took the domain over);
//! - at least one side holds a complete durable definition;
//! - never, for this attempt, a resume of the source after `Prepared` and a commit on the target.
//!
//! And from every reachable state, once faults stop (nothing lost, duplicated or crashed, the
//! crashed side restarted, timers firing only when nothing else can happen), both sides reach
//! the same end: the domain on exactly one side, no record left on either, no reservation left
//! on the target, and the requester told success only if the target committed and a plain
//! failure only if it did not.

use std::collections::{BTreeMap, HashSet, VecDeque};

use super::source::{self, Outgoing, Phase, Send, SourceInput};
use super::target::{self, Incoming, Receiving, TargetAnswer, TargetInput};
use super::{Outcome, Token};

/// The source's domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum SourceCopy {
    /// Defined here; runnable unless the record is `Prepared`.
    Present,
    Removed,
}

/// The target's copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum TargetCopy {
    None,
    /// A receiving domain (flag t): not runnable, not a complete definition of its own.
    Receiving,
    Owned,
}

/// What the source's worker waits for: one request at a time on its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Waiting {
    Nothing,
    Reserve,
    Transfer,
    Commit,
    Resolve,
    Forget,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Request {
    Reserve,
    Transfer(u8),
    Commit(u8),
    Resolve(u8),
    Forget(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Answer {
    Reserved(u8),
    Accepted,
    Outcome(bool),
    Forgotten,
    Refused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Message {
    ToTarget(Request),
    /// An answer, with the kind of request it answers.
    ToSource(Waiting, Answer),
}

/// What the requester was told, if anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Told {
    Nothing,
    Success,
    Failure,
    InDoubt,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct World {
    source_up: bool,
    source_record: Option<Outgoing>,
    source_copy: SourceCopy,
    waiting: Waiting,
    target_up: bool,
    target_record: Option<Incoming>,
    target_copy: TargetCopy,
    /// Every chunk arrived (volatile on the target).
    target_complete: bool,
    /// Messages in flight, with their multiplicity: delivered in any order.
    network: BTreeMap<Message, u8>,
    tokens_issued: u8,
    told: Told,
    resumed_after_prepared: bool,
    target_committed: bool,
    crashes: u8,
    source_crashes: u8,
    duplicates: u8,
    cancels: u8,
}

/// How many faults of each kind one run may have.
#[derive(Clone, Copy, Debug)]
struct Budget {
    depth: usize,
    crashes: u8,
    duplicates: u8,
    cancels: u8,
}

fn token(n: u8) -> Token {
    Token([n; 32])
}

fn token_number(token: &Token) -> u8 {
    token.0[0]
}

impl World {
    /// The migration was accepted: the source's record is durable and its worker reserves.
    fn start() -> World {
        let mut world = World {
            source_up: true,
            source_record: Some(Outgoing::preparing()),
            source_copy: SourceCopy::Present,
            waiting: Waiting::Nothing,
            target_up: true,
            target_record: None,
            target_copy: TargetCopy::None,
            target_complete: false,
            network: BTreeMap::new(),
            tokens_issued: 0,
            told: Told::Nothing,
            resumed_after_prepared: false,
            target_committed: false,
            crashes: 0,
            source_crashes: 0,
            duplicates: 0,
            cancels: 0,
        };
        world.send(Request::Reserve, Waiting::Reserve);
        world
    }

    fn send(&mut self, request: Request, waiting: Waiting) {
        *self.network.entry(Message::ToTarget(request)).or_insert(0) += 1;
        self.waiting = waiting;
    }

    fn take(&mut self, message: Message) {
        if let Some(count) = self.network.get_mut(&message) {
            *count -= 1;
            if *count == 0 {
                self.network.remove(&message);
            }
        }
    }

    fn source_runnable(&self) -> bool {
        self.source_copy == SourceCopy::Present
            && self
                .source_record
                .as_ref()
                .is_none_or(|r| r.phase == Phase::Preparing)
    }

    /// Applies a source step as the registry does, then lets the worker act on it.
    fn source(&mut self, input: SourceInput) {
        let before = self.source_record.clone();
        let step = source::step(before.as_ref(), input);
        if step.refused {
            return;
        }
        let was_prepared = before.as_ref().is_some_and(|r| r.phase == Phase::Prepared);
        self.source_record = step.record.applied(before.clone());
        match step.domain {
            source::Domain::Unchanged | source::Domain::Suspend => {}
            source::Domain::Resume => {
                if was_prepared {
                    self.resumed_after_prepared = true;
                }
            }
            source::Domain::Remove => self.source_copy = SourceCopy::Removed,
        }
        if let Some(end) = step.end {
            self.told = match end {
                source::End::Committed => Told::Success,
                source::End::InDoubt => Told::InDoubt,
                source::End::Aborted | source::End::Cancelled | source::End::ForcedRecovery => {
                    Told::Failure
                }
            };
        }
        let token = self
            .source_record
            .as_ref()
            .or(before.as_ref())
            .and_then(|r| r.token.as_ref())
            .map(token_number);
        match (step.send, token) {
            (Some(Send::Commit), Some(t)) => self.send(Request::Commit(t), Waiting::Commit),
            (Some(Send::Forget), Some(t)) => self.send(Request::Forget(t), Waiting::Forget),
            // After an abandon the worker asks once to free the target, and waits no more.
            (Some(Send::Resolve), Some(t)) if self.source_record.is_none() => {
                self.send(Request::Resolve(t), Waiting::Nothing);
            }
            (Some(Send::Resolve), Some(t)) => self.send(Request::Resolve(t), Waiting::Resolve),
            (None, _) if self.source_record.is_none() => self.waiting = Waiting::Nothing,
            _ => {}
        }
    }

    /// Applies a target step as the registry does, and sends its answer to `waiting`.
    fn target(&mut self, input: TargetInput, answering: Waiting) {
        let step = target::step(self.target_record.as_ref(), input);
        self.target_record = step.record.applied(self.target_record);
        match step.receiving {
            Receiving::Unchanged => {}
            Receiving::Create => {
                self.target_copy = TargetCopy::Receiving;
                self.target_complete = false;
            }
            Receiving::Release => self.target_copy = TargetCopy::None,
            Receiving::TakeOver => {
                self.target_copy = TargetCopy::Owned;
                self.target_committed = true;
            }
        }
        let answer = match step.answer {
            None => return,
            Some(TargetAnswer::Reserved(token)) => Answer::Reserved(token_number(&token)),
            Some(TargetAnswer::Accepted) => Answer::Accepted,
            Some(TargetAnswer::Outcome(o)) => Answer::Outcome(o == Outcome::Committed),
            Some(TargetAnswer::Forgotten) => Answer::Forgotten,
            Some(TargetAnswer::Refused(_)) => Answer::Refused,
        };
        *self
            .network
            .entry(Message::ToSource(answering, answer))
            .or_insert(0) += 1;
    }

    /// The target receives `request`.
    fn deliver_to_target(&mut self, request: Request) {
        match request {
            // The registry checks before the machine is asked: the name must be free.
            Request::Reserve if self.target_copy != TargetCopy::None => {
                *self
                    .network
                    .entry(Message::ToSource(Waiting::Reserve, Answer::Refused))
                    .or_insert(0) += 1;
            }
            Request::Reserve => {
                self.tokens_issued += 1;
                let fresh = token(self.tokens_issued);
                self.target(TargetInput::Reserve { fresh }, Waiting::Reserve);
            }
            Request::Transfer(t) => {
                let accepted = matches!(self.target_record, Some(Incoming::Reserved { token }) if token.matches(&super::Token([t; 32])));
                self.target(TargetInput::Transfer { token: token(t) }, Waiting::Transfer);
                if accepted {
                    self.target_complete = true;
                }
            }
            Request::Commit(t) => {
                let complete = self.target_complete;
                self.target(
                    TargetInput::Commit {
                        token: token(t),
                        complete,
                    },
                    Waiting::Commit,
                );
            }
            Request::Resolve(t) => {
                self.target(TargetInput::Resolve { token: token(t) }, Waiting::Resolve)
            }
            Request::Forget(t) => {
                self.target(TargetInput::Forget { token: token(t) }, Waiting::Forget)
            }
        }
    }

    /// The source's worker reads `answer` to a `kind` request: only what it waits for.
    fn deliver_to_source(&mut self, kind: Waiting, answer: Answer) {
        if kind != self.waiting {
            return; // a session that is gone, or a stray duplicate
        }
        self.waiting = Waiting::Nothing;
        match (kind, answer) {
            (Waiting::Reserve, Answer::Reserved(t)) => {
                self.source(SourceInput::Reserved(token(t)));
                if self.source_record.is_some() {
                    self.send(Request::Transfer(t), Waiting::Transfer);
                }
            }
            (Waiting::Transfer, Answer::Accepted) => self.source(SourceInput::TransferComplete),
            (Waiting::Commit | Waiting::Resolve, Answer::Outcome(committed)) => {
                let outcome = if committed {
                    Outcome::Committed
                } else {
                    Outcome::Aborted
                };
                self.source(SourceInput::Outcome(outcome));
            }
            (Waiting::Forget, Answer::Forgotten) => self.source(SourceInput::ForgetAcknowledged),
            (Waiting::Commit | Waiting::Resolve | Waiting::Forget, _) => {
                self.source(SourceInput::NoOutcome);
            }
            _ => self.source(SourceInput::Failed),
        }
    }

    /// The worker's wait ended without an answer.
    fn source_timeout(&mut self) {
        let kind = self.waiting;
        self.waiting = Waiting::Nothing;
        match kind {
            Waiting::Nothing => {}
            Waiting::Reserve | Waiting::Transfer => self.source(SourceInput::Failed),
            Waiting::Commit | Waiting::Resolve | Waiting::Forget => {
                self.source(SourceInput::NoOutcome);
            }
        }
    }

    fn crash_source(&mut self) {
        self.source_up = false;
        self.waiting = Waiting::Nothing;
        self.crashes += 1;
        self.source_crashes += 1;
    }

    fn restart_source(&mut self) {
        self.source_up = true;
        if self.source_record.is_some() {
            self.source(SourceInput::Restart);
        }
    }

    fn crash_target(&mut self) {
        self.target_up = false;
        self.target_complete = false;
        self.crashes += 1;
    }

    fn restart_target(&mut self) {
        self.target_up = true;
        self.target(TargetInput::Restart, Waiting::Nothing);
    }

    /// Every state one event away, with the event's name.
    fn successors(&self, budget: &Budget, faults: bool) -> Vec<(&'static str, World)> {
        let mut next = Vec::new();
        let mut push = |name: &'static str, world: World| next.push((name, world));
        for &message in self.network.keys() {
            match message {
                Message::ToTarget(request) if self.target_up => {
                    let mut w = self.clone();
                    w.take(message);
                    w.deliver_to_target(request);
                    push("deliver to target", w);
                }
                Message::ToSource(kind, answer) if self.source_up => {
                    let mut w = self.clone();
                    w.take(message);
                    w.deliver_to_source(kind, answer);
                    push("deliver to source", w);
                }
                _ => {}
            }
            if faults {
                let mut lost = self.clone();
                lost.take(message);
                push("lose", lost);
                if self.duplicates < budget.duplicates {
                    let mut dup = self.clone();
                    *dup.network.entry(message).or_insert(0) += 1;
                    dup.duplicates += 1;
                    push("duplicate", dup);
                }
            }
        }
        if self.source_up && self.waiting != Waiting::Nothing {
            let mut w = self.clone();
            w.source_timeout();
            push("source times out", w);
        }
        if self.target_up && matches!(self.target_record, Some(Incoming::Reserved { .. })) {
            let mut w = self.clone();
            w.target(TargetInput::IdleExpired, Waiting::Nothing);
            push("reservation expires", w);
        }
        if !self.source_up {
            let mut w = self.clone();
            w.restart_source();
            push("source restarts", w);
        }
        if !self.target_up {
            let mut w = self.clone();
            w.restart_target();
            push("target restarts", w);
        }
        if faults {
            if self.crashes < budget.crashes {
                if self.source_up {
                    let mut w = self.clone();
                    w.crash_source();
                    push("source killed", w);
                }
                if self.target_up {
                    let mut w = self.clone();
                    w.crash_target();
                    push("target killed", w);
                }
            }
            if self.cancels < budget.cancels && self.source_up && self.source_record.is_some() {
                let mut w = self.clone();
                w.cancels += 1;
                w.source(SourceInput::Cancel);
                push("operator cancels", w);
            }
        }
        next
    }

    /// The safety properties; `Err` names the one that fails.
    fn check_safety(&self) -> Result<(), &'static str> {
        if self.source_runnable() && self.target_copy == TargetCopy::Owned {
            return Err("the domain is runnable on both sides");
        }
        if self.source_copy == SourceCopy::Removed && self.target_copy != TargetCopy::Owned {
            return Err("no side holds a complete definition of the domain");
        }
        if self.resumed_after_prepared && self.target_committed {
            return Err("the source resumed after Prepared and the target committed");
        }
        if self.told == Told::Success && !self.target_committed {
            return Err("the requester was told success but the target never committed");
        }
        if self.told == Told::Failure && self.target_committed {
            return Err("the requester was told failure but the target committed");
        }
        Ok(())
    }

    /// Runs on without faults until nothing more happens, then checks that both sides agree.
    fn settle(&self) -> Result<World, &'static str> {
        let mut world = self.clone();
        for _ in 0..200 {
            let next = world
                .successors(
                    &Budget {
                        depth: 0,
                        crashes: 0,
                        duplicates: 0,
                        cancels: 0,
                    },
                    false,
                )
                .into_iter()
                // Deliveries and restarts first; a timer only when nothing else can happen.
                .min_by_key(|(name, _)| match *name {
                    "source restarts" | "target restarts" => 0,
                    "deliver to target" | "deliver to source" => 1,
                    "source times out" => 2,
                    _ => 3,
                });
            match next {
                Some((_, w)) => {
                    w.check_safety()?;
                    world = w;
                }
                None => break,
            }
        }
        let over_here = world.source_record.is_none()
            && world.source_copy == SourceCopy::Present
            && world.target_record.is_none()
            && world.target_copy == TargetCopy::None;
        let over_there = world.source_record.is_none()
            && world.source_copy == SourceCopy::Removed
            && world.target_record.is_none()
            && world.target_copy == TargetCopy::Owned;
        if !(over_here || over_there) {
            return Err("once faults stop, the two sides do not reach the same end");
        }
        if world.told == Told::Nothing && world.source_crashes == 0 {
            return Err("the requester was never answered");
        }
        Ok(world)
    }
}

/// What a check explored, or the trace to the first state that breaks a property.
#[derive(Debug)]
struct Report {
    states: usize,
    ended_here: usize,
    ended_there: usize,
}

fn explore(budget: Budget) -> Result<Report, String> {
    let start = World::start();
    let mut seen: HashSet<World> = HashSet::new();
    let mut parents: Vec<(usize, &'static str)> = Vec::new();
    let mut worlds: Vec<World> = Vec::new();
    let mut queue: VecDeque<(usize, usize)> = VecDeque::new();
    seen.insert(start.clone());
    worlds.push(start);
    parents.push((usize::MAX, "start"));
    queue.push_back((0, 0));
    let (mut ended_here, mut ended_there) = (0, 0);
    let trace = |mut at: usize, parents: &[(usize, &'static str)]| {
        let mut steps = Vec::new();
        while at != usize::MAX {
            let (parent, name) = parents[at];
            steps.push(name);
            at = parent;
        }
        steps.reverse();
        steps.join(" → ")
    };
    while let Some((index, depth)) = queue.pop_front() {
        let world = worlds[index].clone();
        let fail = |why: &str| Err(format!("{why}\n  after: {}", trace(index, &parents)));
        if let Err(why) = world.check_safety() {
            return fail(why);
        }
        match world.settle() {
            Ok(end) if end.source_copy == SourceCopy::Present => ended_here += 1,
            Ok(_) => ended_there += 1,
            Err(why) => return fail(why),
        }
        if depth >= budget.depth {
            continue;
        }
        for (name, next) in world.successors(&budget, true) {
            if seen.insert(next.clone()) {
                worlds.push(next);
                parents.push((index, name));
                queue.push_back((worlds.len() - 1, depth + 1));
            }
        }
    }
    Ok(Report {
        states: worlds.len(),
        ended_here,
        ended_there,
    })
}

/// Depth and fault budget of the check that runs with every `cargo test`.
const BUDGET: Budget = Budget {
    depth: 16,
    crashes: 2,
    duplicates: 1,
    cancels: 1,
};

#[test]
fn the_protocol_keeps_its_promises_under_every_interleaving_of_faults() {
    let report = explore(BUDGET).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "migration model: {} states explored to depth {} ({} crashes, {} duplicate, {} cancel); settled on the source from {}, on the target from {}",
        report.states,
        BUDGET.depth,
        BUDGET.crashes,
        BUDGET.duplicates,
        BUDGET.cancels,
        report.ended_here,
        report.ended_there
    );
    // Both ends are reachable: the check is not vacuous.
    assert!(
        report.ended_here > 0 && report.ended_there > 0,
        "{report:?}"
    );
    assert!(report.states > 10_000, "{report:?}");
}

#[test]
fn the_check_catches_a_source_that_resumes_when_commit_times_out() {
    source::mutation::RESUME_ON_TIMEOUT.with(|m| m.set(true));
    let result = explore(Budget {
        depth: 12,
        ..BUDGET
    });
    source::mutation::RESUME_ON_TIMEOUT.with(|m| m.set(false));
    let error = result.expect_err("the broken rule went unnoticed");
    assert!(
        error.contains("runnable on both sides")
            || error.contains("resumed after Prepared and the target committed"),
        "{error}"
    );
}

/// The deeper check quoted in the README: `cargo test --release --lib deep_model -- --ignored
/// --nocapture`.
#[test]
#[ignore = "minutes in a debug build; run in release"]
fn deep_model_check() {
    let budget = Budget {
        depth: 22,
        crashes: 3,
        duplicates: 2,
        cancels: 1,
    };
    let started = std::time::Instant::now();
    let report = explore(budget).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "migration model, deep: {} states to depth {} ({} crashes, {} duplicates, {} cancel) in {:.1} s; settled on the source from {}, on the target from {}",
        report.states,
        budget.depth,
        budget.crashes,
        budget.duplicates,
        budget.cancels,
        started.elapsed().as_secs_f64(),
        report.ended_here,
        report.ended_there
    );
}
