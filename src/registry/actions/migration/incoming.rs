//! The target's side of a migration: the internal `migrate-*` messages (via
//! [`crate::migration::target`]), the receiving domain built, checked and bound from the
//! source's definition, and reservations released when their source falls silent.

use super::*;

/// One of the internal messages, on the target.
pub(in crate::registry::actions) fn internal(
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

pub(super) fn answer(domain: &str, props: Vec<(&str, String)>) -> Applied {
    Applied {
        data: Some(wire::answer_data(domain, props)),
        ..Applied::default()
    }
}

/// The target's answer as this object's outcome.
pub(super) fn target_answer(domain: &str, answer: Option<TargetAnswer>) -> Outcome {
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
pub(super) fn apply_target(
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
pub(super) fn receive(
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
pub(super) fn validate_definition(
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
    // Its MAC addresses are 48-bit and distinct, as this daemon's own are: the target's
    // store refuses to load a domain that claims one twice (the fuzzer sent a vnet with the
    // domain's own MAC, which made the target's next start fail).
    let macs: Vec<u64> = std::iter::once(domain.mac)
        .chain(domain.vnets.iter().map(|n| n.mac))
        .collect();
    if macs.iter().any(|m| *m > 0xffff_ffff_ffff) {
        return Err(bad("a MAC address is out of range"));
    }
    if macs.iter().collect::<std::collections::HashSet<_>>().len() != macs.len() {
        return Err(bad("two of its MAC addresses are the same"));
    }
    // Device names and numbers are unique within their class, as this daemon makes them.
    fn unique<'d>(mut keys: impl Iterator<Item = (&'d str, u32)>) -> bool {
        let mut names = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        keys.all(|(name, id)| names.insert(name) && ids.insert(id))
    }
    if !unique(domain.vdisks.iter().map(|d| (d.name.as_str(), d.id)))
        || !unique(domain.vnets.iter().map(|n| (n.name.as_str(), n.id)))
    {
        return Err(bad("two of its devices share a name or a number"));
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
