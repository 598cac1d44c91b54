//! The target's state machine: what one message does to the target's durable record of one
//! migration, to the receiving domain, and what the target answers. Pure: the registry applies
//! each [`TargetStep`] in one durable commit before the answer leaves.
//!
//! ```text
//!               reserve                      commit (token, complete)
//!   (none) ─────────────────▶ Reserved ─────────────────────────────▶ Committed
//!     ▲                          │  commit (token, incomplete)             │
//!     │                          │  resolve (token), idle, restart         │ forget (token)
//!     └──────────────────────────┴─────────────────────────────────────────┘
//!        receiving domain released                  tombstone dropped; the domain stays
//! ```
//!
//! Every answer to commit and resolve is definitive ([`Outcome`]): `committed` only from a
//! durable `Committed` with the asker's token; `aborted` whenever this daemon holds no such
//! record and never will, because a reservation is made only by reserve, which hands out a
//! fresh token, and the asker's token was not it. So a refusal to commit is never "maybe".

use serde::{Deserialize, Serialize};

use super::{Outcome, RecordChange, Token, TokenDigest};

/// The target's durable record of one migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Incoming {
    /// The receiving domain exists (flag `t`), its resources held; no commit yet.
    Reserved { token: TokenDigest },
    /// The domain is this daemon's; the tombstone answers `committed` until `forget`.
    Committed { token: TokenDigest },
}

impl Incoming {
    fn token(&self) -> &TokenDigest {
        match self {
            Incoming::Reserved { token } | Incoming::Committed { token } => token,
        }
    }
}

/// What happens to the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetInput {
    /// `migrate-reserve`, its checks passed; `fresh` is a new random token.
    Reserve { fresh: Token },
    /// `migrate-transfer`.
    Transfer { token: Token },
    /// `migrate-commit`; `complete`: every chunk arrived and the digest matches.
    Commit { token: Token, complete: bool },
    /// `migrate-resolve`.
    Resolve { token: Token },
    /// `migrate-forget`.
    Forget { token: Token },
    /// The reservation saw nothing from the source for `migration.reservation_idle_secs`.
    IdleExpired,
    /// The daemon starts with this record in its store.
    Restart,
}

/// What happens to the receiving domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Receiving {
    Unchanged,
    /// Create it from the source's definition, resources bound as on the source (flag `t`).
    Create,
    /// Delete it and give back what it held.
    Release,
    /// It becomes this daemon's own domain, in the state it had on the source.
    TakeOver,
}

/// The target's answer, when the input was a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetAnswer {
    Reserved(Token),
    /// A chunk was accepted.
    Accepted,
    Outcome(Outcome),
    Forgotten,
    Refused(Refusal),
}

/// Why a message was refused (no change was made).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Reserve for an id this daemon already has a record of.
    AlreadyReserved,
    /// Transfer without a reservation for this token.
    NotReserved,
    /// Forget of a reservation that was never committed.
    NotCommitted,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::AlreadyReserved => "This migration was already reserved on the target",
            Refusal::NotReserved => {
                "No reservation for this migration exists on the target (it was released)"
            }
            Refusal::NotCommitted => "This migration was not committed on the target",
        }
    }
}

/// One transition.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct TargetStep {
    pub record: RecordChange<Incoming>,
    pub receiving: Receiving,
    /// `None` for timers and restarts.
    pub answer: Option<TargetAnswer>,
}

impl TargetStep {
    fn answer(answer: TargetAnswer) -> TargetStep {
        TargetStep {
            record: RecordChange::Keep,
            receiving: Receiving::Unchanged,
            answer: Some(answer),
        }
    }

    fn nothing() -> TargetStep {
        TargetStep {
            record: RecordChange::Keep,
            receiving: Receiving::Unchanged,
            answer: None,
        }
    }

    /// The reservation ends: released, and `answer` (if any) sent once that is durable.
    fn release(answer: Option<TargetAnswer>) -> TargetStep {
        TargetStep {
            record: RecordChange::Delete,
            receiving: Receiving::Release,
            answer,
        }
    }
}

/// What `input` does to a target holding `record` (`None`: no record of this migration).
pub fn step(record: Option<&Incoming>, input: TargetInput) -> TargetStep {
    let mine = |token: &Token| record.filter(|r| r.token().matches(token)).copied();
    let aborted = || TargetStep::answer(TargetAnswer::Outcome(Outcome::Aborted));
    match input {
        TargetInput::Reserve { fresh } => match record {
            None => TargetStep {
                record: RecordChange::Set(Incoming::Reserved {
                    token: fresh.digest(),
                }),
                receiving: Receiving::Create,
                answer: Some(TargetAnswer::Reserved(fresh)),
            },
            Some(_) => TargetStep::answer(TargetAnswer::Refused(Refusal::AlreadyReserved)),
        },
        TargetInput::Transfer { token } => match mine(&token) {
            Some(Incoming::Reserved { .. }) => TargetStep::answer(TargetAnswer::Accepted),
            _ => TargetStep::answer(TargetAnswer::Refused(Refusal::NotReserved)),
        },
        TargetInput::Commit { token, complete } => match mine(&token) {
            Some(Incoming::Committed { .. }) => {
                TargetStep::answer(TargetAnswer::Outcome(Outcome::Committed))
            }
            Some(Incoming::Reserved { token }) if complete => TargetStep {
                record: RecordChange::Set(Incoming::Committed { token }),
                receiving: Receiving::TakeOver,
                answer: Some(TargetAnswer::Outcome(Outcome::Committed)),
            },
            // The state did not all arrive: this attempt can never commit, so say so for good.
            Some(Incoming::Reserved { .. }) => {
                TargetStep::release(Some(TargetAnswer::Outcome(Outcome::Aborted)))
            }
            None => aborted(),
        },
        TargetInput::Resolve { token } => match mine(&token) {
            Some(Incoming::Committed { .. }) => {
                TargetStep::answer(TargetAnswer::Outcome(Outcome::Committed))
            }
            Some(Incoming::Reserved { .. }) => {
                TargetStep::release(Some(TargetAnswer::Outcome(Outcome::Aborted)))
            }
            None => aborted(),
        },
        TargetInput::Forget { token } => match mine(&token) {
            Some(Incoming::Committed { .. }) => TargetStep {
                record: RecordChange::Delete,
                receiving: Receiving::Unchanged,
                answer: Some(TargetAnswer::Forgotten),
            },
            Some(Incoming::Reserved { .. }) => {
                TargetStep::answer(TargetAnswer::Refused(Refusal::NotCommitted))
            }
            // Already forgotten (or never ours to forget): nothing to do, and no harm.
            None => TargetStep::answer(TargetAnswer::Forgotten),
        },
        TargetInput::IdleExpired | TargetInput::Restart => match record {
            Some(Incoming::Reserved { .. }) => TargetStep::release(None),
            Some(Incoming::Committed { .. }) | None => TargetStep::nothing(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(n: u8) -> Token {
        Token([n; 32])
    }

    fn reserved(n: u8) -> Incoming {
        Incoming::Reserved {
            token: token(n).digest(),
        }
    }

    fn committed(n: u8) -> Incoming {
        Incoming::Committed {
            token: token(n).digest(),
        }
    }

    #[test]
    fn reserve_creates_the_receiving_domain_once() {
        let s = step(None, TargetInput::Reserve { fresh: token(1) });
        assert_eq!(s.record, RecordChange::Set(reserved(1)));
        assert_eq!(s.receiving, Receiving::Create);
        assert_eq!(s.answer, Some(TargetAnswer::Reserved(token(1))));
        let again = step(Some(&reserved(1)), TargetInput::Reserve { fresh: token(2) });
        assert_eq!(again.record, RecordChange::Keep);
        assert_eq!(
            again.answer,
            Some(TargetAnswer::Refused(Refusal::AlreadyReserved))
        );
    }

    #[test]
    fn commit_needs_the_reservations_own_token_and_the_whole_state() {
        let done = step(
            Some(&reserved(1)),
            TargetInput::Commit {
                token: token(1),
                complete: true,
            },
        );
        assert_eq!(done.record, RecordChange::Set(committed(1)));
        assert_eq!(done.receiving, Receiving::TakeOver);
        // Duplicates answer the same, and change nothing.
        let again = step(
            Some(&committed(1)),
            TargetInput::Commit {
                token: token(1),
                complete: false,
            },
        );
        assert_eq!(
            (again.record, again.answer),
            (
                RecordChange::Keep,
                Some(TargetAnswer::Outcome(Outcome::Committed))
            )
        );
        // Another token never commits this reservation, and is told it never will.
        let stranger = step(
            Some(&reserved(1)),
            TargetInput::Commit {
                token: token(9),
                complete: true,
            },
        );
        assert_eq!(stranger.record, RecordChange::Keep);
        assert_eq!(
            stranger.answer,
            Some(TargetAnswer::Outcome(Outcome::Aborted))
        );
        // A state that did not all arrive ends the reservation for good.
        let short = step(
            Some(&reserved(1)),
            TargetInput::Commit {
                token: token(1),
                complete: false,
            },
        );
        assert_eq!(
            (short.record, short.receiving),
            (RecordChange::Delete, Receiving::Release)
        );
        assert_eq!(short.answer, Some(TargetAnswer::Outcome(Outcome::Aborted)));
    }

    #[test]
    fn resolve_releases_a_reservation_before_answering_aborted_and_presumes_abort() {
        let released = step(Some(&reserved(1)), TargetInput::Resolve { token: token(1) });
        assert_eq!(
            (released.record, released.receiving),
            (RecordChange::Delete, Receiving::Release)
        );
        assert_eq!(
            released.answer,
            Some(TargetAnswer::Outcome(Outcome::Aborted))
        );
        let kept = step(
            Some(&committed(1)),
            TargetInput::Resolve { token: token(1) },
        );
        assert_eq!(kept.answer, Some(TargetAnswer::Outcome(Outcome::Committed)));
        let nothing = step(None, TargetInput::Resolve { token: token(1) });
        assert_eq!(
            (nothing.record, nothing.answer),
            (
                RecordChange::Keep,
                Some(TargetAnswer::Outcome(Outcome::Aborted))
            )
        );
    }

    #[test]
    fn forget_drops_only_a_committed_tombstone_and_restart_releases_reservations() {
        let forgot = step(Some(&committed(1)), TargetInput::Forget { token: token(1) });
        assert_eq!(
            (forgot.record, forgot.receiving),
            (RecordChange::Delete, Receiving::Unchanged)
        );
        let early = step(Some(&reserved(1)), TargetInput::Forget { token: token(1) });
        assert_eq!(early.record, RecordChange::Keep);
        let restart = step(Some(&reserved(1)), TargetInput::Restart);
        assert_eq!(
            (restart.record, restart.receiving, restart.answer),
            (RecordChange::Delete, Receiving::Release, None)
        );
        let owned = step(Some(&committed(1)), TargetInput::Restart);
        assert_eq!(owned.record, RecordChange::Keep);
        let idle = step(Some(&committed(1)), TargetInput::IdleExpired);
        assert_eq!(idle.receiving, Receiving::Unchanged);
    }
}
