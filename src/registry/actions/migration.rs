//! Migration, as this daemon's registry sees it (§6; the protocol is in `crate::migration`):
//!
//! - on the **source**: `migrate-domain` checks the domain, records `Outgoing(Preparing)` and
//!   starts a worker; the worker's reports drive [`crate::migration::source`]; `cancel-operation
//!   migration` cancels or asks the target;
//! - on the **target**: the internal `migrate-*` messages drive [`crate::migration::target`],
//!   with the receiving domain built, checked and bound here;
//! - at **restart**, both machines' restart rules.
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

/// `migrate-domain`: checks the domain here, records the migration and starts its worker; the
/// object's answer waits for the outcome.
pub(super) fn migrate_domain(reg: &mut Registry, ctx: &Ctx<'_>, data: &Data, now: u64) -> Outcome {
    if !reg.settings.xmpp_enabled {
        return Err(
            "Migration is disabled because the XMPP interface is off (xmpp_enabled = false)".into(),
        );
    }
    let request = MigrationRequest::parse(data)?;
    let dry_run = ctx.flag(&["dry-run", "-n"]);
    let force = ctx.flag(&["force", "-f"]);
    let domain = check_migratable(reg, &request.domain)?.clone();
    if !dry_run {
        check_room(reg)?;
    }
    let definition = serde_json::to_vec(&domain)
        .map_err(|e| format!("The record of {} does not serialize: {e}", domain.name))?;
    let id = MigrationId(u128::from_be_bytes(
        reg.draw_secret()
            .get(..16)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .unwrap_or([0; 16]),
    ));
    let op = reg.next_operation();
    let chunks = if domain.state == DomainState::Active {
        let granules = domain.memory.div_ceil(MEMDR_GRANULE).max(1);
        u32::try_from(granules).unwrap_or(u32::MAX)
    } else {
        0
    };
    reg.migrating.requesters.insert(
        id,
        Requester {
            op,
            dry_run,
            warnings: Vec::new(),
        },
    );
    if !dry_run {
        reg.migrations.insert(
            id,
            MigrationRecord {
                id,
                domain: domain.name.clone(),
                peer_domain: request.target_domain.clone(),
                peer: request.peer(),
                started_at: now,
                side: MigrationSide::Source {
                    outgoing: Outgoing::preparing(),
                    host: request.host.clone(),
                    port: request.port,
                },
            },
        );
        reg.touch_migration(id);
        reg.migrating.progress.insert(id, (0, chunks));
        note(reg, Note::Began { id, source: true });
        note(reg, Note::Point("migration.source.preparing"));
        note(
            reg,
            Note::Log {
                warn: false,
                line: format!(
                    "migration {id}: {} to {} as {} begins",
                    domain.name,
                    request.peer(),
                    request.target_domain
                ),
            },
        );
    }
    reg.effect(Effect::StartMigration(Box::new(Plan {
        id,
        dry_run,
        force,
        domain: domain.name.clone(),
        target_domain: request.target_domain,
        host: request.host,
        port: request.port,
        user: request.user,
        password: request.password,
        definition,
        source_daemon: reg.daemon_id(),
        chunks,
        memory_bytes: domain.memory,
    })));
    Ok(Applied {
        waiting: Some(op),
        ..Applied::default()
    })
}

/// The fields of a `migrate-domain` object (§6).
struct MigrationRequest {
    domain: String,
    target_domain: String,
    host: String,
    port: u16,
    user: String,
    password: Secret,
}

impl MigrationRequest {
    fn parse(data: &Data) -> Result<MigrationRequest, String> {
        let contents = data.envelope.as_ref().map_or(&[][..], |e| &e.contents[..]);
        let [source, target] = contents else {
            return Err("migrate-domain needs two Contents: the domain, then its name on the target with an ldom_info giving target, username and password".into());
        };
        check_name("domain", &target.id, NAME_CHARS_MAX)?;
        let info = target
            .sections
            .iter()
            .flat_map(|s| &s.items)
            .find(|i| i.resource_type == "ldom_info")
            .ok_or("migrate-domain needs an ldom_info Item in its second Content (target, username, password)")?;
        let field = |key: &str| {
            info.property(key)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("migrate-domain needs the target's '{key}' property"))
        };
        let (host, port) = parse_target(field("target")?)?;
        let base64 = |key: &str| -> Result<String, String> {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(field(key)?)
                .map_err(|_| format!("migrate-domain: the {key} must be base64"))?;
            String::from_utf8(bytes)
                .map_err(|_| format!("migrate-domain: the {key} must be UTF-8 text"))
        };
        let user = base64("username")?;
        check_name("user", &user, NAME_CHARS_MAX)?;
        let password = Secret::new(base64("password")?);
        Ok(MigrationRequest {
            domain: source.id.clone(),
            target_domain: target.id.clone(),
            host,
            port,
            user,
            password,
        })
    }

    /// The target as the operator wrote it, with its port.
    fn peer(&self) -> String {
        peer_of(&self.host, self.port)
    }
}

fn peer_of(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address; the port defaults to
/// 6482.
pub fn parse_target(text: &str) -> Result<(String, u16), String> {
    let bad = || {
        format!("Invalid target '{text}': expected host[:port], with an IPv6 address as [::1]:6482")
    };
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else if text.matches(':').count() > 1 {
        (text, None)
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(bad)?,
        None => DEFAULT_PORT,
    };
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    if !valid {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

/// The source's checks (§6): what the domain must be to leave this machine.
fn check_migratable<'r>(reg: &'r Registry, name: &str) -> Result<&'r Domain, String> {
    if name == CONTROL_DOMAIN {
        return Err(format!(
            "The control domain {CONTROL_DOMAIN} cannot be migrated"
        ));
    }
    let domain = get(reg, name)?;
    if let Some(migration) = reg.migration_of(name) {
        return Err(format!(
            "A migration of {name} is already in progress (to {})",
            migration.peer
        ));
    }
    let domain = writable(reg, name).map(|_| domain)?;
    if !domain.io.is_empty() {
        return Err(format!(
            "LDom {name} owns physical I/O devices ({}): a domain with physical I/O cannot be migrated",
            domain.io.join(", ")
        ));
    }
    let services: Vec<&str> = domain
        .vds
        .iter()
        .map(|s| s.name.as_str())
        .chain(domain.vsw.iter().map(|s| s.name.as_str()))
        .chain(domain.vcc.iter().map(|s| s.name.as_str()))
        .collect();
    if !services.is_empty() {
        return Err(format!(
            "LDom {name} provides virtual I/O services ({}): a service domain cannot be migrated",
            services.join(", ")
        ));
    }
    if let Some(slave) = reg
        .domains
        .values()
        .find(|d| d.master.iter().any(|m| m == name))
    {
        return Err(format!(
            "LDom {name} is a master of {}: a master domain cannot be migrated (change the master property of {} first)",
            slave.name, slave.name
        ));
    }
    Ok(domain)
}

/// While a domain migrates away, bind and stop of the machine's other domains wait (§6).
pub(super) fn check_no_outgoing(reg: &Registry, name: &str) -> Result<(), String> {
    if let Some(m) = reg
        .migrations
        .values()
        .find(|m| m.outgoing().is_some() && m.holds_domain() && m.domain != name)
    {
        return Err(format!(
            "A migration of {} to {} is in progress on this machine: bind and stop of other domains are refused until it ends",
            m.domain, m.peer
        ));
    }
    Ok(())
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

/// `cancel-operation migration` (with `force`: `cancel-operation -f migration`).
pub(super) fn cancel(reg: &mut Registry, ctx: &Ctx<'_>, name: &str) -> Outcome {
    let force = ctx.flag(&["force", "-f"]);
    let Some(record) = reg.migration_of(name).cloned() else {
        return Err(format!("No migration is in progress on {name}"));
    };
    let MigrationSide::Source { outgoing, .. } = &record.side else {
        return Err(format!(
            "LDom {name} is the target of a migration from {}: cancel-operation migration is accepted only on the source",
            record.peer
        ));
    };
    let input = if force {
        SourceInput::ForceRecover
    } else {
        SourceInput::Cancel
    };
    let step = source::step(Some(outgoing), input);
    if step.refused {
        return Err(format!(
            "The migration of {name} to {} is not in doubt: cancel-operation -f migration only restores an in-doubt migration (cancel it without -f)",
            record.peer
        ));
    }
    let phase = outgoing.phase;
    // The requester's document may be answered by this (cancelled); the actor collects it.
    let answers = apply_source(reg, &record, step, "");
    reg.migrating.answers.extend(answers);
    match (force, phase) {
        (true, _) => {
            note(
                reg,
                Note::Log {
                    warn: true,
                    line: format!(
                        "migration {}: {name} restored here by the operator without the word of {} (cancel-operation -f migration); if {} took it over, the domain now runs on both",
                        record.id, record.peer, record.peer
                    ),
                },
            );
            Ok(Applied::warn(format!(
                "{name} was restored on this machine without asking {}: make sure {} does not run it",
                record.peer, record.peer
            )))
        }
        (false, Phase::Preparing) => Ok(Applied::default()),
        // Prepared: the answer waits for the target's word.
        (false, _) => {
            let op = reg.next_operation();
            reg.migrating.cancels.entry(record.id).or_default().push(op);
            Ok(Applied {
                waiting: Some(op),
                ..Applied::default()
            })
        }
    }
}

/// One of the internal messages, on the target.
pub(super) fn internal(
    reg: &mut Registry,
    action: Action,
    cmd: &Cmd,
    data: &Data,
    now: u64,
) -> Outcome {
    if !reg.settings.xmpp_enabled {
        return Err(
            "Migration is disabled on the target because its XMPP interface is off (xmpp_enabled = false)"
                .into(),
        );
    }
    let message = Message::parse(action, cmd, data)?;
    let id = message.id;
    let record = reg.migrations.get(&id).cloned();
    if let Some(record) = &record
        && record.outgoing().is_some()
    {
        return Err("The domain cannot be migrated to the daemon it is on".into());
    }
    let incoming = record.as_ref().and_then(|r| r.incoming().copied());
    match message.request {
        Request::Check(offer) => {
            let warning = receive(reg, &message.domain, &offer, false)?.1;
            let mut applied = answer(&message.domain, vec![("checked", "yes".into())]);
            applied.warning = warning;
            Ok(applied)
        }
        Request::Reserve(offer) => {
            if incoming.is_some() {
                let step = target::step(
                    incoming.as_ref(),
                    TargetInput::Reserve {
                        fresh: Token([0; 32]),
                    },
                );
                return target_answer(&message.domain, step.answer);
            }
            check_room(reg)?;
            let (state, warning) = receive(reg, &message.domain, &offer, true)?;
            let fresh = reg.mint_token(id);
            let step = target::step(None, TargetInput::Reserve { fresh });
            let RecordChange::Set(incoming) = step.record else {
                return Err("the target's state machine did not reserve".into());
            };
            reg.migrations.insert(
                id,
                MigrationRecord {
                    id,
                    domain: message.domain.clone(),
                    peer_domain: String::new(),
                    peer: format!("{:032x}", offer.source_daemon),
                    started_at: now,
                    side: MigrationSide::Target { incoming, state },
                },
            );
            reg.touch_migration(id);
            reg.migrating.transfers.insert(id, Transfer::new());
            reg.migrating.heard.insert(id, now);
            note(reg, Note::Began { id, source: false });
            note(reg, Note::Point("migration.target.reserved"));
            let mut applied = target_answer(&message.domain, step.answer)?;
            applied.warning = warning;
            Ok(applied)
        }
        Request::Transfer {
            token,
            seq,
            chunks,
            chunk,
        } => {
            let step = target::step(incoming.as_ref(), TargetInput::Transfer { token });
            if step.answer == Some(TargetAnswer::Accepted) {
                let transfer = reg
                    .migrating
                    .transfers
                    .entry(id)
                    .or_insert_with(Transfer::new);
                if seq != transfer.next {
                    return Err(format!(
                        "Chunk {seq} arrived where chunk {} was expected",
                        transfer.next
                    ));
                }
                wire::chunk_digest_update(&mut transfer.context, seq, &chunk);
                transfer.next = seq.saturating_add(1);
                reg.migrating.heard.insert(id, now);
                let percent = percent(seq.saturating_add(1), chunks);
                publish_progress(reg, &message.domain, percent, "ongoing");
            }
            target_answer(&message.domain, step.answer)
        }
        Request::Commit {
            token,
            chunks,
            digest,
        } => {
            let complete = reg.migrating.transfers.get(&id).is_some_and(|t| {
                t.next == chunks && t.context.clone().finish().as_ref() == digest.as_slice()
            });
            let step = target::step(incoming.as_ref(), TargetInput::Commit { token, complete });
            apply_target(reg, id, record.as_ref(), &step, now);
            target_answer(&message.domain, step.answer)
        }
        Request::Resolve { token } => {
            let step = target::step(incoming.as_ref(), TargetInput::Resolve { token });
            apply_target(reg, id, record.as_ref(), &step, now);
            target_answer(&message.domain, step.answer)
        }
        Request::Forget { token } => {
            let step = target::step(incoming.as_ref(), TargetInput::Forget { token });
            apply_target(reg, id, record.as_ref(), &step, now);
            target_answer(&message.domain, step.answer)
        }
    }
}

fn answer(domain: &str, props: Vec<(&str, String)>) -> Applied {
    Applied {
        data: Some(wire::answer_data(domain, props)),
        ..Applied::default()
    }
}

/// The target's answer as this object's outcome.
fn target_answer(domain: &str, answer: Option<TargetAnswer>) -> Outcome {
    match answer {
        Some(TargetAnswer::Reserved(token)) => {
            Ok(self::answer(domain, vec![("token", token.to_hex())]))
        }
        Some(TargetAnswer::Accepted) => Ok(self::answer(domain, Vec::new())),
        Some(TargetAnswer::Outcome(outcome)) => Ok(self::answer(
            domain,
            vec![("outcome", outcome.as_str().into())],
        )),
        Some(TargetAnswer::Forgotten) => {
            Ok(self::answer(domain, vec![("forgotten", "yes".into())]))
        }
        Some(TargetAnswer::Refused(refusal)) => Err(refusal.message().into()),
        None => Err("the target's state machine gave no answer".into()),
    }
}

/// Applies a target step's record and receiving-domain changes.
fn apply_target(
    reg: &mut Registry,
    id: MigrationId,
    record: Option<&MigrationRecord>,
    step: &target::TargetStep,
    now: u64,
) {
    let Some(record) = record else { return };
    match &step.record {
        RecordChange::Keep => {}
        RecordChange::Set(incoming) => {
            if let Some(r) = reg.migrations.get_mut(&id)
                && let MigrationSide::Target {
                    incoming: current, ..
                } = &mut r.side
            {
                *current = *incoming;
            }
            reg.touch_migration(id);
        }
        RecordChange::Delete => {
            reg.migrations.remove(&id);
            reg.touch_migration(id);
        }
    }
    let name = record.domain.clone();
    match step.receiving {
        Receiving::Unchanged | Receiving::Create => {}
        Receiving::Release => {
            let _ = release_binding(reg, &name);
            forget_domain(reg, &name);
            reg.migrating.transfers.remove(&id);
            reg.migrating.heard.remove(&id);
            note(reg, Note::Point("migration.target.released"));
            note(
                reg,
                Note::Ended {
                    id,
                    source: false,
                    outcome: "aborted",
                },
            );
            publish_progress(reg, &name, 0, "failed");
        }
        Receiving::TakeOver => {
            let state = match &record.side {
                MigrationSide::Target { state, .. } => *state,
                MigrationSide::Source { .. } => DomainState::Bound,
            };
            if let Some(domain) = reg.domains.get_mut(&name) {
                domain.state = state;
                domain.started_at = (state == DomainState::Active).then_some(now);
            }
            reg.touch(&name);
            reg.migrating.transfers.remove(&id);
            reg.migrating.heard.remove(&id);
            note(reg, Note::Point("migration.target.committed"));
            note(
                reg,
                Note::Ended {
                    id,
                    source: false,
                    outcome: "committed",
                },
            );
            publish_progress(reg, &name, 100, "done");
            reg.publish_content(
                Action::MigrateDomain,
                Content {
                    id: name,
                    sections: Vec::new(),
                },
            );
        }
    }
    if step.record == RecordChange::Delete && step.receiving == Receiving::Unchanged {
        note(reg, Note::Point("migration.target.forgotten"));
    }
}

/// Builds the receiving domain `name` from `offer` and checks that this machine can hold it:
/// every check of the target (§6). With `keep`, it is created (resources bound as on the
/// source, state bound or inactive until commit); otherwise nothing changes (a dry run).
/// Returns the state it takes at commit, and a warning when `force` overrode a soft check.
fn receive(
    reg: &mut Registry,
    name: &str,
    offer: &wire::Offer,
    keep: bool,
) -> Result<(DomainState, Option<String>), String> {
    if offer.source_daemon == reg.daemon_id() {
        return Err("The domain cannot be migrated to the daemon it is on".into());
    }
    let mut domain: Domain = serde_json::from_slice(&offer.definition)
        .map_err(|e| format!("The domain's definition cannot be read: {e}"))?;
    let source_name = domain.name.clone();
    check_name("domain", name, NAME_CHARS_MAX)?;
    domain.name = name.to_owned();
    validate_definition(reg, &domain, &source_name)?;
    if reg.domains.contains_key(name) {
        return Err(format!("LDom {name} already exists on the target"));
    }
    let domains_max = reg.settings.limits.domains_max;
    if reg.domains.len() >= domains_max {
        return Err(format!(
            "The target holds at most {domains_max} domains (limits.domains_max)"
        ));
    }
    reg.check_not_in_delayed_reconf(name)?;
    for mac in std::iter::once(domain.mac).chain(domain.vnets.iter().map(|v| v.mac)) {
        if reg.macs.contains(&mac) {
            return Err(format!(
                "MAC address {} of {source_name} is already in use on the target",
                format_mac(mac)
            ));
        }
    }
    for master in &domain.master {
        if !reg.domains.contains_key(master) {
            return Err(format!(
                "The master domain {master} of {source_name} does not exist on the target"
            ));
        }
    }
    for disk in &domain.vdisks {
        let found = reg
            .domains
            .values()
            .flat_map(|d| &d.vds)
            .find(|s| s.name == disk.service)
            .is_some_and(|s| s.volumes.iter().any(|v| v.name == disk.volume));
        if !found {
            return Err(format!(
                "Volume {} of service {}, used by vdisk {} of {source_name}, does not exist on the target",
                disk.volume, disk.service, disk.name
            ));
        }
    }
    for net in &domain.vnets {
        let found = reg
            .domains
            .values()
            .flat_map(|d| &d.vsw)
            .any(|s| s.name == net.service);
        if !found {
            return Err(format!(
                "The virtual switch {} of vnet {} of {source_name} does not exist on the target",
                net.service, net.name
            ));
        }
    }
    let state = domain.state;
    let binding = domain.binding.take();
    domain.state = DomainState::Inactive;
    domain.started_at = None;
    let mut warning = None;
    if state != DomainState::Inactive {
        let binding = binding.ok_or_else(|| {
            format!(
                "The definition of {source_name} is {} but has no binding",
                state.as_str()
            )
        })?;
        let console = reg.console_service(&domain).ok_or_else(|| {
            format!("No virtual console concentrator (vcc) exists on the target for the console of {source_name}")
        })?;
        let force = offer.force;
        let wcore = domain.wcore;
        let vcpus = u32::try_from(binding.cpus.len()).unwrap_or(u32::MAX);
        let maus = u32::try_from(binding.maus.len()).unwrap_or(u32::MAX);
        let mut taken = None;
        let outcome = reg.atomically(&[name], |reg| {
            let tpc = reg.machine.threads_per_core;
            let cpus = if wcore > 0 {
                reg.pools.cpus.take_cores(wcore, tpc).ok_or_else(|| {
                    format!("Not enough free whole cores on the target for {source_name}: {wcore} requested")
                })?
            } else {
                let free = reg.pools.cpus.free_count();
                reg.pools.cpus.take(vcpus).ok_or_else(|| {
                    format!("Not enough free virtual CPUs on the target for {source_name}: {vcpus} requested, {free} available")
                })?
            };
            let free_maus = reg.pools.maus.free_count();
            let maus = reg.pools.maus.take(maus).ok_or_else(|| {
                format!("Not enough free crypto units on the target for {source_name}: {maus} requested, {free_maus} available")
            })?;
            // The same real addresses, whatever physical memory backs them.
            let mut memory = Vec::new();
            for block in &binding.memory {
                let free = reg.pools.memory.free_aligned(MEMORY_GRANULE);
                let pieces = reg.pools.memory.take(block.size, MEMORY_GRANULE).ok_or_else(|| {
                    format!(
                        "Not enough free memory on the target for {source_name}: {} requested, {} available",
                        format_size(binding.memory_bytes()),
                        format_size(free)
                    )
                })?;
                memory.extend(blocks_from(&pieces, block.ra));
            }
            let port = match binding.console_port {
                Some(port) if reg.console_ports.contains(&(console.clone(), port)) => {
                    if !force {
                        return Err(format!(
                            "Console port {port} of {console}, used by {source_name}, is in use on the target: use force (-f) to take a free one"
                        ));
                    }
                    let free = console_port(reg, &console, None)?;
                    warning = Some(format!(
                        "Console port {port} of {console} was in use on the target: {name} uses port {free} there"
                    ));
                    free
                }
                wanted => console_port(reg, &console, wanted)?,
            };
            let mut bound = domain.clone();
            bound.binding = Some(crate::registry::model::Binding {
                cpus,
                maus,
                memory,
                console_port: Some(port),
            });
            bound.state = DomainState::Bound;
            reg.domains.insert(name.to_owned(), bound.clone());
            taken = Some(bound);
            if keep {
                Ok(())
            } else {
                // A dry run: everything fits; put it all back.
                Err(String::new())
            }
        });
        match outcome {
            Ok(()) => {}
            Err(e) if e.is_empty() && !keep => return Ok((state, warning)),
            Err(e) => return Err(e),
        }
        if let Some(bound) = taken {
            domain = bound;
        }
    } else if !keep {
        return Ok((state, warning));
    }
    for mac in std::iter::once(domain.mac).chain(domain.vnets.iter().map(|v| v.mac)) {
        reg.macs.insert(mac);
    }
    reg.touch(name);
    reg.domains.insert(name.to_owned(), domain);
    Ok((state, warning))
}

/// A definition from another daemon is hostile until checked: everything a request to this
/// daemon could not have made is refused.
fn validate_definition(
    reg: &mut Registry,
    domain: &Domain,
    source_name: &str,
) -> Result<(), String> {
    let bad =
        |what: &str| format!("The definition of {source_name} is not acceptable here: {what}");
    check_name("domain", source_name, NAME_CHARS_MAX).map_err(|e| bad(&e))?;
    if !domain.io.is_empty() {
        return Err(bad("it owns physical I/O devices"));
    }
    if !(domain.vds.is_empty() && domain.vsw.is_empty() && domain.vcc.is_empty()) {
        return Err(bad("it provides virtual I/O services"));
    }
    if domain.memdr.is_some() || domain.reconf.is_some() {
        return Err(bad("a reconfiguration is in progress on it"));
    }
    if domain.memory > MEMORY_BYTES_MAX || domain.mau > reg.machine.crypto_units {
        return Err(bad(
            "its memory or crypto units exceed what any machine has",
        ));
    }
    if domain.master.len() > 4 {
        return Err(bad("it has more than 4 master domains"));
    }
    check_failure_policy(&domain.failure_policy).map_err(|e| bad(&e))?;
    let limits = &reg.settings.limits;
    if domain.variables.len() > limits.variables_per_domain_max
        || domain
            .variables
            .iter()
            .any(|(k, v)| k.len() > NAME_CHARS_MAX || v.len() > limits.variable_value_bytes_max)
    {
        return Err(bad("its variables exceed this daemon's limits"));
    }
    for (key, value) in &domain.options {
        if !matches!(
            key.as_str(),
            "extended-mapin-space" | "perf-counters" | "rc-add-policy"
        ) || value.chars().count() > NAME_CHARS_MAX
        {
            return Err(bad(&format!("unknown ldom_info setting '{key}'")));
        }
    }
    let names = domain
        .vdisks
        .iter()
        .flat_map(|d| [&d.name, &d.service, &d.volume])
        .chain(domain.vnets.iter().flat_map(|n| [&n.name, &n.service]))
        .chain(&domain.master)
        .chain(domain.console.service.iter());
    for name in names {
        check_name("name", name, NAME_CHARS_MAX).map_err(|e| bad(&e))?;
    }
    if domain.vdisks.len() > limits.data_per_document_max
        || domain.vnets.len() > limits.data_per_document_max
    {
        return Err(bad("it has more devices than this daemon allows"));
    }
    if domain.uuid.len() != 36
        || !domain
            .uuid
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == '-')
    {
        return Err(bad("its UUID is malformed"));
    }
    if let Some(binding) = &domain.binding {
        let aligned = binding.memory.iter().all(|b| {
            b.size > 0
                && b.size.is_multiple_of(MEMORY_GRANULE)
                && b.ra.is_multiple_of(MEMORY_GRANULE)
                && b.ra >= crate::registry::machine::GUEST_RA_BASE
                && b.ra.checked_add(b.size).is_some()
        });
        if !aligned || binding.memory_bytes() > MEMORY_BYTES_MAX {
            return Err(bad("its memory layout is malformed"));
        }
        if binding.maus.len() > usize::try_from(reg.machine.crypto_units).unwrap_or(usize::MAX)
            || binding.cpus.len() > usize::try_from(reg.machine.threads()).unwrap_or(usize::MAX)
        {
            return Err(bad(
                "it is bound to more CPUs or crypto units than this machine has",
            ));
        }
    }
    let mut scratch = std::mem::take(&mut reg.scratch);
    let size = crate::registry::listing::constraints_len(reg, domain, &mut scratch);
    reg.scratch = scratch;
    if size > limits.stanza_bytes_max {
        return Err(bad(
            "its constraints would not fit this daemon's stanza limit",
        ));
    }
    Ok(())
}

/// A report of a migration's worker (source side). Returns the answers owed to documents that
/// wait for this migration.
pub fn report(reg: &mut Registry, id: MigrationId, report: WorkerReport) -> Vec<(u64, Outcome)> {
    if let WorkerReport::Checked(result) = report {
        let Some(requester) = reg.migrating.requesters.remove(&id) else {
            return Vec::new();
        };
        return vec![(
            requester.op,
            result
                .map(|warnings| Applied {
                    warning: (!warnings.is_empty()).then(|| warnings.join("; ")),
                    ..Applied::default()
                })
                .map_err(|reason| format!("The dry run failed: {reason}")),
        )];
    }
    let Some(record) = reg.migrations.get(&id).cloned() else {
        return Vec::new();
    };
    let Some(outgoing) = record.outgoing() else {
        return Vec::new();
    };
    let mut reason = String::new();
    let input = match report {
        WorkerReport::Checked(_) => return Vec::new(),
        WorkerReport::Reserved { token, warnings } => {
            if let Some(requester) = reg.migrating.requesters.get_mut(&id) {
                requester.warnings = warnings;
            }
            SourceInput::Reserved(token)
        }
        WorkerReport::Progress { sent, chunks } => {
            reg.migrating.progress.insert(id, (sent, chunks));
            let percent = percent(sent, chunks);
            publish_progress(reg, &record.domain, percent, "ongoing");
            return Vec::new();
        }
        WorkerReport::TransferComplete => SourceInput::TransferComplete,
        WorkerReport::Failed(why) => {
            reason = why;
            SourceInput::Failed
        }
        WorkerReport::Outcome(outcome) => SourceInput::Outcome(outcome),
        WorkerReport::NoOutcome(why) => {
            reason = why;
            SourceInput::NoOutcome
        }
        WorkerReport::Forgotten => SourceInput::ForgetAcknowledged,
    };
    let step = source::step(Some(outgoing), input);
    if step.refused {
        return Vec::new();
    }
    let mut answers = apply_source(reg, &record, step, &reason);
    answers.append(&mut reg.migrating.answers);
    answers
}

/// Applies a source step: its record, its domain, what the worker sends next, and the answers
/// owed to the requester and to waiting cancels.
fn apply_source(
    reg: &mut Registry,
    record: &MigrationRecord,
    step: source::SourceStep,
    reason: &str,
) -> Vec<(u64, Outcome)> {
    let id = record.id;
    let MigrationSide::Source {
        outgoing,
        host,
        port,
    } = &record.side
    else {
        return Vec::new();
    };
    let token = match &step.record {
        RecordChange::Set(next) => next.token.clone(),
        _ => outgoing.token.clone(),
    };
    let was = outgoing.phase;
    match &step.record {
        RecordChange::Keep => {}
        RecordChange::Set(next) => {
            if let Some(MigrationSide::Source { outgoing, .. }) =
                reg.migrations.get_mut(&id).map(|r| &mut r.side)
            {
                *outgoing = next.clone();
            }
            reg.touch_migration(id);
            note(
                reg,
                Note::Point(match (next.phase, next.in_doubt) {
                    (Phase::Preparing, _) => "migration.source.reserved",
                    (Phase::Prepared, false) => "migration.source.prepared",
                    (Phase::Prepared, true) => "migration.source.in_doubt",
                    (Phase::Done, _) => "migration.source.done",
                }),
            );
        }
        RecordChange::Delete => {
            reg.migrations.remove(&id);
            reg.touch_migration(id);
            reg.migrating.progress.remove(&id);
            note(
                reg,
                Note::Point(if was == Phase::Done {
                    "migration.source.forgotten"
                } else {
                    "migration.source.resumed"
                }),
            );
        }
    }
    let name = record.domain.clone();
    match step.domain {
        source::Domain::Unchanged | source::Domain::Resume => {}
        source::Domain::Suspend => note(reg, Note::Suspended { id }),
        source::Domain::Remove => {
            let _ = release_binding(reg, &name);
            forget_domain(reg, &name);
            publish_progress(reg, &name, 100, "done");
            reg.publish_content(
                Action::MigrateDomain,
                Content {
                    id: name.clone(),
                    sections: Vec::new(),
                },
            );
        }
    }
    if step.domain == source::Domain::Resume && was != Phase::Done {
        publish_progress(reg, &name, 0, "failed");
    }
    let gone = !reg.migrations.contains_key(&id);
    if let (Some(send), Some(token)) = (step.send, token) {
        reg.effect(Effect::MigrationSend {
            contact: Contact {
                id,
                host: host.clone(),
                port: *port,
                target_domain: record.peer_domain.clone(),
                token,
            },
            send,
            settle: !gone,
        });
    }
    if gone {
        reg.effect(Effect::StopMigration { id });
    }
    let mut answers = Vec::new();
    let Some(end) = step.end else {
        return answers;
    };
    let peer = &record.peer;
    let outcome_label = match end {
        source::End::Committed => "committed",
        source::End::Aborted => "aborted",
        source::End::Cancelled => "cancelled",
        source::End::InDoubt => "in_doubt",
        source::End::ForcedRecovery => "forced_recovery",
    };
    note(
        reg,
        Note::Ended {
            id,
            source: true,
            outcome: outcome_label,
        },
    );
    note(
        reg,
        Note::Log {
            warn: end != source::End::Committed,
            line: format!(
                "migration {id}: {name} to {peer}: {}{}",
                outcome_label.replace('_', " "),
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                }
            ),
        },
    );
    let requester = match end {
        // The requester stays owed the final word only while nothing was said to it.
        source::End::InDoubt => reg.migrating.requesters.remove(&id),
        _ => reg.migrating.requesters.remove(&id),
    };
    let cancels = reg.migrating.cancels.remove(&id).unwrap_or_default();
    let answer: Outcome = match end {
        source::End::Committed => {
            let warnings = requester
                .as_ref()
                .map(|r| r.warnings.join("; "))
                .filter(|w| !w.is_empty());
            Ok(Applied {
                warning: warnings,
                ..Applied::default()
            })
        }
        source::End::Aborted if !cancels.is_empty() => {
            Err(format!("The migration of {name} to {peer} was cancelled"))
        }
        source::End::Aborted => Err(format!(
            "Migration of {name} to {peer} failed: {}",
            if reason.is_empty() {
                "the target aborted it"
            } else {
                reason
            }
        )),
        source::End::Cancelled => Err(format!("The migration of {name} to {peer} was cancelled")),
        source::End::InDoubt => Err(format!(
            "Migration of {name} to {peer} is in doubt: {}; ldmd keeps asking {peer} and will settle it",
            if reason.is_empty() {
                "the link failed after the handoff"
            } else {
                reason
            }
        )),
        source::End::ForcedRecovery => Err(format!(
            "The migration of {name} to {peer} was ended by the operator: {name} was restored here"
        )),
    };
    if let Some(requester) = requester.filter(|r| !r.dry_run) {
        answers.push((requester.op, answer));
    }
    for op in cancels {
        answers.push((
            op,
            match end {
                source::End::Committed => Err(format!(
                    "The migration of {name} to {peer} had already completed on the target: it cannot be cancelled"
                )),
                _ => Ok(Applied::warn(format!(
                    "The migration of {name} to {peer} was cancelled: {name} is back on this machine"
                ))),
            },
        ));
    }
    answers
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

/// Releases reservations whose source has been silent for `migration.reservation_idle_secs`.
pub fn expire_reservations(reg: &mut Registry, now: u64) {
    let idle = reg.settings.migration.reservation_idle_secs;
    let expired: Vec<MigrationRecord> = reg
        .migrations
        .values()
        .filter(|r| matches!(r.incoming(), Some(Incoming::Reserved { .. })))
        .filter(|r| {
            let heard = reg.migrating.heard.get(&r.id).copied().unwrap_or(0);
            now.saturating_sub(heard) >= idle
        })
        .cloned()
        .collect();
    for record in expired {
        let Some(incoming) = record.incoming().copied() else {
            continue;
        };
        let step = target::step(Some(&incoming), TargetInput::IdleExpired);
        apply_target(reg, record.id, Some(&record), &step, now);
        note(
            reg,
            Note::Log {
                warn: true,
                line: format!(
                    "migration {} into {}: nothing heard from its source for {idle} s; the reservation is released",
                    record.id, record.domain
                ),
            },
        );
    }
}

/// Whether a reservation here waits on its idle timer.
pub fn has_reservations(reg: &Registry) -> bool {
    reg.migrations
        .values()
        .any(|r| matches!(r.incoming(), Some(Incoming::Reserved { .. })))
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
