//! Migration, as this daemon's registry sees it (§6; the protocol is in `crate::migration`):
//!
//! - on the **source** ([`outgoing`]): `migrate-domain` checks the domain, records `Outgoing(Preparing)` and
//!   starts a worker; the worker's reports drive [`crate::migration::source`]; `cancel-operation
//!   migration` cancels or asks the target;
//! - on the **target** ([`incoming`]): the internal `migrate-*` messages drive [`crate::migration::target`],
//!   with the receiving domain built, checked and bound here;
//! - here: at **restart**, both machines' restart rules; `list -o status`; what the shell
//!   collects after each commit.
//!
//! Every transition is one registry change, so it is durable in the batch's commit before any
//! answer leaves and before the worker sends what it asks for.

use std::collections::HashMap;

use super::*;
use crate::migration::plan::{Contact, Plan, Secret, WorkerReport};
use crate::migration::source::{self, Outgoing, Phase, SourceInput};
use crate::migration::target::{self, Incoming, Receiving, TargetAnswer, TargetInput};
use crate::migration::wire::{self, Message, Request};
use crate::migration::{MigrationId, RecordChange, Token};
use crate::registry::model::{MigrationRecord, MigrationSide};

mod incoming;
mod outgoing;

pub use incoming::*;
pub use outgoing::*;

/// The default port of a target written without one.
const DEFAULT_PORT: u16 = 6482;

/// What only lives while the daemon runs: who waits for which migration, and the target's
/// view of each transfer.
#[derive(Default)]
pub struct Volatile {
    /// Source: the operation the requester's document waits for, and the target's warnings.
    requesters: HashMap<MigrationId, Requester>,
    /// Source: `cancel-operation` documents waiting for the target's word.
    cancels: HashMap<MigrationId, Vec<u64>>,
    /// Source: chunks sent of chunks, for `ldm list -o status`.
    progress: HashMap<MigrationId, (u32, u32)>,
    /// Target: what arrived of each transfer.
    transfers: HashMap<MigrationId, Transfer>,
    /// Target: when the source was last heard of, per reservation (unix seconds).
    heard: HashMap<MigrationId, u64>,
    /// For the shell: metrics, fault points, log lines.
    notes: Vec<Note>,
    /// Answers owed to documents that wait for a migration, made while another document was
    /// answered (a cancel answers the requester): the actor collects them.
    answers: Vec<(u64, Outcome)>,
}

impl Volatile {
    /// What listings read of it (the progress of outgoing transfers), for a replica.
    pub fn for_replica(&self) -> Volatile {
        Volatile {
            progress: self.progress.clone(),
            ..Volatile::default()
        }
    }

    /// Forgets what a batch whose commit failed noted for the shell: none of it happened.
    pub fn forget_batch(&mut self) {
        self.notes.clear();
        self.answers.clear();
    }
}

struct Requester {
    op: u64,
    dry_run: bool,
    warnings: Vec<String>,
}

struct Transfer {
    next: u32,
    context: ring::digest::Context,
}

impl Transfer {
    fn new() -> Transfer {
        Transfer {
            next: 0,
            context: ring::digest::Context::new(&ring::digest::SHA256),
        }
    }
}

/// Something the shell acts on after the batch is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// A named fault point reached (tests kill the daemon there).
    Point(&'static str),
    /// A migration began here.
    Began { id: MigrationId, source: bool },
    /// The source stopped the domain for the handoff (downtime starts).
    Suspended { id: MigrationId },
    /// A migration ended here (`outcome`: committed, aborted, cancelled, forced_recovery),
    /// or the requester was told it is in doubt (`in_doubt`).
    Ended {
        id: MigrationId,
        source: bool,
        outcome: &'static str,
    },
    /// A line for the log, at warn (operator overrides) or info.
    Log { warn: bool, line: String },
}

/// At most `migration.concurrent_max` migrations hold a domain here at once.
fn check_room(reg: &Registry) -> Result<(), String> {
    let max = reg.settings.migration.concurrent_max;
    let running = reg.migrations.values().filter(|m| m.holds_domain()).count();
    if running >= max {
        let running = match running {
            1 => "A migration is".to_owned(),
            n => format!("{n} migrations are"),
        };
        return Err(format!(
            "{running} in progress on this machine; at most {max} can run at once (migration.concurrent_max)"
        ));
    }
    Ok(())
}

/// The restart rules of both machines, for every record a starting daemon finds.
pub fn restart(reg: &mut Registry) -> Vec<String> {
    let mut notes = Vec::new();
    let records: Vec<MigrationRecord> = reg.migrations.values().cloned().collect();
    for record in records {
        match &record.side {
            MigrationSide::Source { outgoing, .. } => {
                let phase = outgoing.phase;
                let step = source::step(Some(outgoing), SourceInput::Restart);
                let _ = apply_source(reg, &record, step, "");
                notes.push(match phase {
                    Phase::Preparing => format!(
                        "migration {} of {} to {} was interrupted before its handoff: {} resumed here",
                        record.id, record.domain, record.peer, record.domain
                    ),
                    Phase::Prepared => format!(
                        "migration {} of {} to {} was interrupted during its handoff: in doubt, asking {}",
                        record.id, record.domain, record.peer, record.peer
                    ),
                    Phase::Done => format!(
                        "migration {} of {} to {} is complete: telling {} to forget it",
                        record.id, record.domain, record.peer, record.peer
                    ),
                });
            }
            MigrationSide::Target { incoming, .. } => {
                let step = target::step(Some(incoming), TargetInput::Restart);
                if step.receiving == Receiving::Release {
                    notes.push(format!(
                        "migration {} into {} was interrupted before its commit: the reservation is released",
                        record.id, record.domain
                    ));
                }
                apply_target(reg, record.id, Some(&record), &step, 0);
            }
        }
    }
    notes
}

/// What the shell has to act on since the last call.
pub fn take_notes(reg: &mut Registry) -> Vec<Note> {
    std::mem::take(&mut reg.migrating.notes)
}

/// Answers owed to waiting documents that a request made (see `Volatile::answers`).
pub fn take_answers(reg: &mut Registry) -> Vec<(u64, Outcome)> {
    std::mem::take(&mut reg.migrating.answers)
}

/// A migration holding `name`, for `list-domain`'s status columns: operation, progress, peer.
pub fn status(reg: &Registry, name: &str) -> Option<(String, String, String)> {
    let record = reg.migration_of(name)?;
    let (operation, progress) = match &record.side {
        MigrationSide::Source { outgoing, .. } => {
            let (sent, chunks) = reg
                .migrating
                .progress
                .get(&record.id)
                .copied()
                .unwrap_or((0, 0));
            let what = if outgoing.in_doubt {
                "migration out (in doubt)"
            } else {
                "migration out"
            };
            let progress = match outgoing.phase {
                Phase::Preparing => format!("{}%", percent(sent, chunks)),
                Phase::Prepared | Phase::Done => "100%".into(),
            };
            (what, progress)
        }
        MigrationSide::Target { .. } => {
            let next = reg
                .migrating
                .transfers
                .get(&record.id)
                .map_or(0, |t| t.next);
            ("migration in", format!("{next} chunks"))
        }
    };
    Some((operation.into(), progress, record.peer.clone()))
}

fn percent(done: u32, of: u32) -> u32 {
    if of == 0 {
        return 100;
    }
    let percent = u64::from(done)
        .saturating_mul(100)
        .checked_div(u64::from(of))
        .unwrap_or(100);
    u32::try_from(percent.min(100)).unwrap_or(100)
}

fn note(reg: &mut Registry, note: Note) {
    reg.migrating.notes.push(note);
}

/// A progress event (§5): to hardware and domain subscribers.
fn publish_progress(reg: &mut Registry, domain: &str, percent: u32, status: &str) {
    let source = reg.settings.migration.host_name.clone();
    let item = Item {
        resource_type: "ldom_info".into(),
        properties: vec![
            crate::ldm::document::Property {
                key: "progress".into(),
                value: format!("{percent}%"),
            },
            crate::ldm::document::Property {
                key: "status".into(),
                value: status.into(),
            },
            crate::ldm::document::Property {
                key: "source".into(),
                value: source,
            },
        ],
        ..Item::default()
    };
    reg.publish_named(
        crate::ldm::event::EventClass::Progress,
        Action::MigrateDomain.event_name(),
        Content {
            id: domain.into(),
            sections: vec![Section {
                kind: crate::ldm::SectionKind::ResourceAllocation,
                items: vec![item],
            }],
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_read_as_operators_write_them() {
        assert_eq!(parse_target("host2").unwrap(), ("host2".into(), 6482));
        assert_eq!(parse_target("host2:7000").unwrap(), ("host2".into(), 7000));
        assert_eq!(parse_target("10.0.0.2").unwrap(), ("10.0.0.2".into(), 6482));
        assert_eq!(parse_target("[::1]:6482").unwrap(), ("::1".into(), 6482));
        assert_eq!(parse_target("[::1]").unwrap(), ("::1".into(), 6482));
        assert_eq!(parse_target("fe80::1").unwrap(), ("fe80::1".into(), 6482));
        for bad in [
            "",
            ":6482",
            "host:0",
            "host:70000",
            "[::1",
            "[::1]x",
            "a b",
            "host:port",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }
}
