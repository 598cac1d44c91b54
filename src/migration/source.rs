//! The source's state machine: what each report of the worker, each operator command and a
//! restart do to the source's durable record of one migration and to its domain. Pure: the
//! registry applies each [`SourceStep`] in one durable commit, and only then does the worker
//! send what the step asks for.
//!
//! ```text
//!            reserved(token)            transfer complete
//!  Preparing ───────────────▶ Preparing ────────────────────▶ Prepared ──committed──▶ Done
//!   │  failed, cancel,          (token)    domain stopped,      │   ▲                  │
//!   │  restart                             then: send commit    │   │ no outcome:      │ forget
//!   ▼                                                            │   │ in doubt (e),    │ acknowledged
//!  (none): domain resumed ◀──────────── aborted ─────────────────┘   │ send resolve     ▼
//!          (resolve sent to free the target early)                    └──────────────  (none)
//! ```
//!
//! The one rule that matters: from `Prepared` the domain is resumed only on the target's
//! explicit `aborted`, or by the operator's forced recovery of an in-doubt migration. A
//! timeout, a lost link or a failure reply says nothing about whether the target committed.

use serde::{Deserialize, Serialize};

use super::{Outcome, RecordChange, Token};

/// The source's durable record of one migration.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Outgoing {
    pub phase: Phase,
    /// The target's token, once it reserved.
    pub token: Option<Token>,
    /// The requester was told the outcome is in doubt (flag `e`); the resolver runs.
    pub in_doubt: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The domain is locked and still runs here; the target may hold a reservation.
    Preparing,
    /// The domain is stopped here and commit may have been sent: only the target knows.
    Prepared,
    /// The target committed and the domain is gone from here; `forget` is owed.
    Done,
}

impl Outgoing {
    pub fn preparing() -> Outgoing {
        Outgoing {
            phase: Phase::Preparing,
            token: None,
            in_doubt: false,
        }
    }
}

/// What happens to the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceInput {
    /// The target reserved and gave its token.
    Reserved(Token),
    /// Before the handoff: a refusal, a failed check, a lost link or a timeout.
    Failed,
    /// Every chunk of the state was sent and accepted.
    TransferComplete,
    /// The target's definitive answer to commit or resolve.
    Outcome(Outcome),
    /// Commit or resolve got no definitive answer (timeout, lost link, a failure reply).
    NoOutcome,
    /// `cancel-operation migration`.
    Cancel,
    /// `cancel-operation -f migration` of an in-doubt migration: the operator says the target
    /// is gone for good.
    ForceRecover,
    /// The target acknowledged `forget`.
    ForgetAcknowledged,
    /// The daemon starts with this record in its store.
    Restart,
}

/// What happens to the domain on the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Domain {
    Unchanged,
    /// Stopped for the handoff (it stays defined and locked).
    Suspend,
    /// Unlocked and, if it was running, running again.
    Resume,
    /// Deleted: it is the target's now.
    Remove,
}

/// What the worker sends next, once the step is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Send {
    Commit,
    Resolve,
    Forget,
}

/// How the migration ended, for the requester (and the metrics), when it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum End {
    Committed,
    /// Failed or refused before the handoff, or aborted by the target.
    Aborted,
    Cancelled,
    /// The requester is told the outcome is in doubt; the migration goes on resolving.
    InDoubt,
    /// The operator restored the domain here without the target's word.
    ForcedRecovery,
}

/// One transition.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct SourceStep {
    pub record: RecordChange<Outgoing>,
    pub domain: Domain,
    pub send: Option<Send>,
    pub end: Option<End>,
    /// The input does not apply in this state (an operator command is refused; a stray report
    /// is ignored).
    pub refused: bool,
}

impl SourceStep {
    fn ignore() -> SourceStep {
        SourceStep {
            record: RecordChange::Keep,
            domain: Domain::Unchanged,
            send: None,
            end: None,
            refused: true,
        }
    }

    /// Back to the source before the handoff: the record goes, the domain resumes, and the
    /// target is asked to resolve (freeing its reservation early) when it has one.
    fn abandon(record: &Outgoing, end: Option<End>) -> SourceStep {
        SourceStep {
            record: RecordChange::Delete,
            domain: Domain::Resume,
            send: record.token.as_ref().map(|_| Send::Resolve),
            end,
            refused: false,
        }
    }
}

/// What `input` does to a source holding `record` (`None`: the migration is over here).
pub fn step(record: Option<&Outgoing>, input: SourceInput) -> SourceStep {
    let Some(record) = record else {
        // Late answers of an attempt that already ended change nothing.
        return SourceStep::ignore();
    };
    let set = |record: Outgoing| RecordChange::Set(record);
    match (record.phase, input) {
        (Phase::Preparing, SourceInput::Reserved(token)) => SourceStep {
            record: set(Outgoing {
                token: Some(token),
                ..record.clone()
            }),
            domain: Domain::Unchanged,
            send: None,
            end: None,
            refused: false,
        },
        (Phase::Preparing, SourceInput::Failed) => SourceStep::abandon(record, Some(End::Aborted)),
        (Phase::Preparing, SourceInput::Cancel) => {
            SourceStep::abandon(record, Some(End::Cancelled))
        }
        // The requester's stream is gone with the process: no reply to make.
        (Phase::Preparing, SourceInput::Restart) => SourceStep::abandon(record, None),
        (Phase::Preparing, SourceInput::TransferComplete) if record.token.is_some() => SourceStep {
            record: set(Outgoing {
                phase: Phase::Prepared,
                ..record.clone()
            }),
            domain: Domain::Suspend,
            send: Some(Send::Commit),
            end: None,
            refused: false,
        },
        (Phase::Preparing, SourceInput::TransferComplete) => {
            SourceStep::abandon(record, Some(End::Aborted))
        }
        (Phase::Prepared, SourceInput::Outcome(Outcome::Committed)) => SourceStep {
            record: set(Outgoing {
                phase: Phase::Done,
                in_doubt: false,
                ..record.clone()
            }),
            domain: Domain::Remove,
            send: Some(Send::Forget),
            end: Some(End::Committed),
            refused: false,
        },
        (Phase::Prepared, SourceInput::Outcome(Outcome::Aborted)) => SourceStep {
            record: RecordChange::Delete,
            domain: Domain::Resume,
            send: None,
            end: Some(End::Aborted),
            refused: false,
        },
        (Phase::Prepared, SourceInput::NoOutcome | SourceInput::Failed) => {
            if resumes_on_timeout() {
                return SourceStep::abandon(record, Some(End::Aborted));
            }
            in_doubt(record, true)
        }
        (Phase::Prepared, SourceInput::Restart) => in_doubt(record, false),
        // Cancel after the handoff began: only the target can say; ask it now.
        (Phase::Prepared, SourceInput::Cancel) => SourceStep {
            record: RecordChange::Keep,
            domain: Domain::Unchanged,
            send: Some(Send::Resolve),
            end: None,
            refused: false,
        },
        (Phase::Prepared, SourceInput::ForceRecover) if record.in_doubt => SourceStep {
            record: RecordChange::Delete,
            domain: Domain::Resume,
            send: None,
            end: Some(End::ForcedRecovery),
            refused: false,
        },
        (Phase::Done, SourceInput::ForgetAcknowledged) => SourceStep {
            record: RecordChange::Delete,
            domain: Domain::Unchanged,
            send: None,
            end: None,
            refused: false,
        },
        (Phase::Done, SourceInput::Restart | SourceInput::NoOutcome | SourceInput::Failed) => {
            SourceStep {
                record: RecordChange::Keep,
                domain: Domain::Unchanged,
                send: Some(Send::Forget),
                end: None,
                refused: false,
            }
        }
        _ => SourceStep::ignore(),
    }
}

/// In `Prepared` with no answer: mark the record in doubt (the first time, the requester is
/// told so) and ask again. `told`: whether the requester may still be waiting.
fn in_doubt(record: &Outgoing, told: bool) -> SourceStep {
    let first = !record.in_doubt;
    SourceStep {
        record: if first {
            RecordChange::Set(Outgoing {
                in_doubt: true,
                ..record.clone()
            })
        } else {
            RecordChange::Keep
        },
        domain: Domain::Unchanged,
        send: Some(Send::Resolve),
        end: (first && told).then_some(End::InDoubt),
        refused: false,
    }
}

/// A broken rule the model check must catch: resuming the source when commit times out.
#[cfg(test)]
pub(crate) mod mutation {
    use std::cell::Cell;

    thread_local! {
        pub static RESUME_ON_TIMEOUT: Cell<bool> = const { Cell::new(false) };
    }
}

#[cfg(test)]
fn resumes_on_timeout() -> bool {
    mutation::RESUME_ON_TIMEOUT.with(|m| m.get())
}

#[cfg(not(test))]
#[inline(always)]
fn resumes_on_timeout() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preparing(token: Option<u8>) -> Outgoing {
        Outgoing {
            phase: Phase::Preparing,
            token: token.map(|n| Token([n; 32])),
            in_doubt: false,
        }
    }

    fn prepared(in_doubt: bool) -> Outgoing {
        Outgoing {
            phase: Phase::Prepared,
            token: Some(Token([1; 32])),
            in_doubt,
        }
    }

    #[test]
    fn before_the_handoff_a_failure_resumes_and_frees_the_target_if_it_reserved() {
        let fresh = step(Some(&preparing(None)), SourceInput::Failed);
        assert_eq!(
            (fresh.record, fresh.domain, fresh.send, fresh.end),
            (
                RecordChange::Delete,
                Domain::Resume,
                None,
                Some(End::Aborted)
            )
        );
        let reserved = step(Some(&preparing(Some(1))), SourceInput::Cancel);
        assert_eq!(reserved.send, Some(Send::Resolve));
        assert_eq!(reserved.end, Some(End::Cancelled));
        let restarted = step(Some(&preparing(Some(1))), SourceInput::Restart);
        assert_eq!(
            (restarted.domain, restarted.send, restarted.end),
            (Domain::Resume, Some(Send::Resolve), None)
        );
    }

    #[test]
    fn commit_is_sent_only_after_the_prepared_record() {
        let handoff = step(Some(&preparing(Some(1))), SourceInput::TransferComplete);
        assert_eq!(handoff.record, RecordChange::Set(prepared(false)));
        assert_eq!(
            (handoff.domain, handoff.send),
            (Domain::Suspend, Some(Send::Commit))
        );
    }

    #[test]
    fn in_prepared_only_the_targets_word_or_the_operator_resumes() {
        for input in [
            SourceInput::NoOutcome,
            SourceInput::Failed,
            SourceInput::Restart,
            SourceInput::Cancel,
            SourceInput::ForceRecover,
        ] {
            let s = step(Some(&prepared(false)), input.clone());
            assert_ne!(s.domain, Domain::Resume, "{input:?}");
            assert_ne!(s.domain, Domain::Remove, "{input:?}");
        }
        let timeout = step(Some(&prepared(false)), SourceInput::NoOutcome);
        assert_eq!(timeout.record, RecordChange::Set(prepared(true)));
        assert_eq!(
            (timeout.send, timeout.end),
            (Some(Send::Resolve), Some(End::InDoubt))
        );
        let again = step(Some(&prepared(true)), SourceInput::NoOutcome);
        assert_eq!(
            (again.record, again.send, again.end),
            (RecordChange::Keep, Some(Send::Resolve), None)
        );
        let forced = step(Some(&prepared(true)), SourceInput::ForceRecover);
        assert_eq!(
            (forced.domain, forced.end),
            (Domain::Resume, Some(End::ForcedRecovery))
        );
        let aborted = step(
            Some(&prepared(true)),
            SourceInput::Outcome(Outcome::Aborted),
        );
        assert_eq!(aborted.domain, Domain::Resume);
        let committed = step(
            Some(&prepared(true)),
            SourceInput::Outcome(Outcome::Committed),
        );
        assert_eq!(
            (committed.domain, committed.send, committed.end),
            (Domain::Remove, Some(Send::Forget), Some(End::Committed))
        );
    }

    #[test]
    fn done_resends_forget_until_it_is_acknowledged_and_late_answers_change_nothing() {
        let done = Outgoing {
            phase: Phase::Done,
            token: Some(Token([1; 32])),
            in_doubt: false,
        };
        assert_eq!(
            step(Some(&done), SourceInput::Restart).send,
            Some(Send::Forget)
        );
        assert_eq!(
            step(Some(&done), SourceInput::Outcome(Outcome::Aborted)).domain,
            Domain::Unchanged
        );
        assert_eq!(
            step(Some(&done), SourceInput::ForgetAcknowledged).record,
            RecordChange::Delete
        );
        let late = step(None, SourceInput::Outcome(Outcome::Committed));
        assert!(late.refused);
        assert_eq!(late.domain, Domain::Unchanged);
    }
}
