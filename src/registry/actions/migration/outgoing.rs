//! The source's side of a migration: `migrate-domain` and its checks, `cancel-operation
//! migration`, and what the worker's reports do to the record (via
//! [`crate::migration::source`]).

use super::*;

/// `migrate-domain`: checks the domain here, records the migration and starts its worker; the
/// object's answer waits for the outcome.
pub(in crate::registry::actions) fn migrate_domain(
    reg: &mut Registry,
    ctx: &Ctx<'_>,
    data: &Data,
    now: u64,
) -> Outcome {
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

pub(super) fn peer_of(host: &str, port: u16) -> String {
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
pub(super) fn check_migratable<'r>(reg: &'r Registry, name: &str) -> Result<&'r Domain, String> {
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
pub(in crate::registry::actions) fn check_no_outgoing(
    reg: &Registry,
    name: &str,
) -> Result<(), String> {
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

/// `cancel-operation migration` (with `force`: `cancel-operation -f migration`).
pub(in crate::registry::actions) fn cancel(
    reg: &mut Registry,
    ctx: &Ctx<'_>,
    name: &str,
) -> Outcome {
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
pub(super) fn apply_source(
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
    // An abort the operator asked for (cancel after the handoff, and the target agreed) is
    // counted as a cancel: it is one, only confirmed by the target.
    let cancelled_here = reg.migrating.cancels.contains_key(&id);
    let outcome_label = match end {
        source::End::Committed => "committed",
        source::End::Aborted if cancelled_here => "cancelled",
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
