//! Memory: constraints, bound resizing, the control domain's delayed reconfiguration, and
//! memory dynamic reconfiguration (§6).

use super::*;

/// A memory size from a request. An inactive domain's constraint may exceed what this machine
/// has (binding refuses it), but no size passes the largest machine there is, so nothing
/// computed from it can overflow.
pub(super) fn memory_size(text: &str) -> Result<u64, String> {
    let size = parse_size(text)?;
    if size > MEMORY_BYTES_MAX {
        return Err(format!(
            "Invalid memory size {}: at most {} can be assigned to a domain",
            format_size(size),
            format_size(MEMORY_BYTES_MAX)
        ));
    }
    Ok(size)
}

pub(super) fn memory(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    let domain = writable(reg, name)?;
    let size = memory_size(units(ctx, item(ctx, content, "memory")?)?)?;
    let current = domain.memory;
    let change = ctx.change();
    if size == 0 && change != Change::Set {
        return Err(format!("{} needs a size above 0", ctx.action));
    }
    let target = match change {
        Change::Add => current
            .checked_add(size)
            .filter(|t| *t <= MEMORY_BYTES_MAX)
            .ok_or_else(|| {
                format!(
                    "Invalid memory size: {} more than {} is over {}",
                    format_size(size),
                    format_size(current),
                    format_size(MEMORY_BYTES_MAX)
                )
            })?,
        Change::Remove => current
            .checked_sub(size)
            .filter(|t| *t > 0)
            .ok_or_else(|| {
                format!(
                    "Cannot remove {} of memory from {name}: it has {}",
                    format_size(size),
                    format_size(current)
                )
            })?,
        Change::Set => size,
    };
    if target == 0 {
        return Err(format!("LDom {name} cannot be left without memory"));
    }
    match (domain.state, name == CONTROL_DOMAIN) {
        (DomainState::Inactive, _) => {
            get_mut(reg, name)?.memory = target;
            reg.touch(name);
            Ok(Applied::default())
        }
        (DomainState::Bound, _) => resize_bound(reg, name, target),
        (DomainState::Active, true) => delayed_memory(reg, name, target),
        (DomainState::Active, false) => start_memdr(reg, ctx, name, target),
    }
}

/// A bound domain's memory changes at once, in 4 MB units.
pub(super) fn resize_bound(reg: &mut Registry, name: &str, target: u64) -> Outcome {
    let rounded = rounded_to_granule(target)?;
    reg.atomically(&[name], |reg| {
        grow_or_shrink(reg, name, rounded, MEMORY_GRANULE)?;
        get_mut(reg, name)?.memory = rounded;
        Ok(())
    })?;
    reg.touch(name);
    Ok(rounding_warning(name, target, rounded))
}

/// `bytes` rounded up to the 4 MB of bound memory.
pub(super) fn rounded_to_granule(bytes: u64) -> Result<u64, String> {
    round_up(bytes, MEMORY_GRANULE)
        .ok_or_else(|| format!("Invalid memory size {}: too large", format_size(bytes)))
}

/// The warning of a bound domain whose memory was rounded up to 4 MB (§6).
pub(super) fn rounding_warning(name: &str, asked: u64, rounded: u64) -> Applied {
    if asked == rounded {
        return Applied::default();
    }
    Applied::warn(format!(
        "The memory of {name} was rounded up from {} to {}",
        format_size(asked),
        format_size(rounded)
    ))
}

/// Changes the bound memory of `name` to `target`, taking `align`-aligned memory or giving
/// back from the top of its real address space.
pub(super) fn grow_or_shrink(
    reg: &mut Registry,
    name: &str,
    target: u64,
    align: u64,
) -> Result<(), String> {
    let Some(mut binding) = get_mut(reg, name)?.binding.take() else {
        return Err(format!("LDom {name} is not bound"));
    };
    let bound = binding.memory_bytes();
    if let Some(wanted) = target.checked_sub(bound).filter(|w| *w > 0) {
        let free = reg.pools.memory.free_aligned(align);
        let pieces = reg.pools.memory.take(wanted, align).ok_or_else(|| {
            format!(
                "Not enough free memory for {name}: {} more requested, {} available",
                format_size(wanted),
                format_size(free)
            )
        });
        match pieces {
            Ok(pieces) => {
                let ra_end = binding.ra_end(crate::registry::machine::GUEST_RA_BASE);
                binding.memory.extend(blocks_from(&pieces, ra_end));
            }
            Err(e) => {
                get_mut(reg, name)?.binding = Some(binding);
                return Err(e);
            }
        }
    } else {
        let released = take_from_top(&mut binding.memory, bound.saturating_sub(target));
        for block in released {
            reg.pools.memory.give_back(block.pa, block.size);
        }
    }
    get_mut(reg, name)?.binding = Some(binding);
    Ok(())
}

/// Removes `bytes` from the highest real addresses of `blocks`; returns what was removed.
pub(super) fn take_from_top(
    blocks: &mut Vec<crate::registry::machine::MemoryBlock>,
    bytes: u64,
) -> Vec<crate::registry::machine::MemoryBlock> {
    blocks.sort_by_key(|b| b.ra);
    let mut left = bytes;
    let mut removed = Vec::new();
    while left > 0 {
        let Some(last) = blocks.last_mut() else { break };
        if last.size <= left {
            left = left.saturating_sub(last.size);
            removed.extend(blocks.pop());
        } else {
            // Addresses lie inside the machine (at most 64T): these sums cannot overflow.
            last.size = last.size.saturating_sub(left);
            removed.push(crate::registry::machine::MemoryBlock {
                ra: last.ra.saturating_add(last.size),
                pa: last.pa.saturating_add(last.size),
                size: left,
            });
            left = 0;
        }
    }
    removed
}

pub(super) const DELAYED_RECONF_WARNING: &str = "Initiating a delayed reconfiguration operation on the primary domain. All configuration changes for other domains are disabled until the primary domain reboots, at which time the new configuration for the primary domain will also take effect.";

/// The control domain's memory changes at its next reboot; growth is reserved now.
pub(super) fn delayed_memory(reg: &mut Registry, name: &str, target: u64) -> Outcome {
    let rounded = rounded_to_granule(target)?;
    let domain = get(reg, name)?;
    let first = domain.reconf.is_none();
    let mut reconf = domain.reconf.clone().unwrap_or_default();
    let bound = domain.binding.as_ref().map_or(0, |b| b.memory_bytes());
    reg.atomically(&[name], |reg| {
        for block in reconf.reserved.drain(..) {
            reg.pools.memory.give_back(block.pa, block.size);
        }
        if let Some(wanted) = rounded.checked_sub(bound).filter(|w| *w > 0) {
            let free = reg.pools.memory.free_aligned(MEMORY_GRANULE);
            let pieces = reg
                .pools
                .memory
                .take(wanted, MEMORY_GRANULE)
                .ok_or_else(|| {
                    format!(
                        "Not enough free memory for {name}: {} more requested, {} available",
                        format_size(wanted),
                        format_size(free)
                    )
                })?;
            reconf.reserved = blocks_from(&pieces, 0);
        }
        reconf.memory = Some(rounded);
        let domain = get_mut(reg, name)?;
        domain.reconf = Some(reconf);
        domain.memory = rounded;
        Ok(())
    })?;
    reg.touch(name);
    Ok(if first {
        Applied::warn(DELAYED_RECONF_WARNING)
    } else {
        Applied::default()
    })
}

/// Applies the control domain's delayed reconfiguration (at its reboot).
pub(super) fn apply_reconf(reg: &mut Registry) -> Result<(), String> {
    let name = CONTROL_DOMAIN;
    let Some(reconf) = get_mut(reg, name)?.reconf.take() else {
        return Ok(());
    };
    if let Some(target) = reconf.memory {
        for block in &reconf.reserved {
            reg.pools.memory.give_back(block.pa, block.size);
        }
        // The reservation was just returned, so this cannot fail.
        let _ = grow_or_shrink(reg, name, target, MEMORY_GRANULE);
    }
    let domain = get_mut(reg, name)?;
    domain.io.retain(|d| !reconf.io_remove.contains(d));
    domain.io.extend(reconf.io_add.iter().cloned());
    for device in &reconf.io_remove {
        reg.io_owner.remove(device);
    }
    Ok(())
}

pub(super) fn remove_reconf(reg: &mut Registry, name: &str) -> Result<(), String> {
    let domain = get(reg, name)?;
    let bound = domain.binding.as_ref().map_or(0, |b| b.memory_bytes());
    let Some(reconf) = domain.reconf.clone() else {
        return Err(format!("No delayed reconfiguration is pending on {name}"));
    };
    for block in &reconf.reserved {
        reg.pools.memory.give_back(block.pa, block.size);
    }
    for device in &reconf.io_add {
        reg.io_owner.remove(device);
    }
    let domain = get_mut(reg, name)?;
    domain.reconf = None;
    domain.memory = bound;
    reg.touch(name);
    Ok(())
}

pub(super) fn start_memdr(reg: &mut Registry, ctx: &Ctx<'_>, name: &str, target: u64) -> Outcome {
    if !reg.settings.xmpp_enabled {
        return Err("Memory dynamic reconfiguration is disabled because the XMPP interface is off (xmpp_enabled = false)".into());
    }
    let domain = get(reg, name)?;
    let bound = domain.binding.as_ref().map_or(0, |b| b.memory_bytes());
    let adjust = ctx.flag(&["auto-adj", "--auto-adj", "auto-adjust"]);
    let (kind, asked) = match target.checked_sub(bound) {
        Some(growth) => (MemDrKind::Add, growth),
        None => (MemDrKind::Remove, bound.saturating_sub(target)),
    };
    let set = ctx.change() == Change::Set;
    if set && asked == 0 {
        // Already that size, as set-vcpu to the current count: nothing to do, and no DR.
        return Ok(Applied::default());
    }
    // The size the operator typed: the domain's new size for set-memory, the change for
    // add-memory and remove-memory.
    let typed = |change: u64| match (set, kind) {
        (false, _) => change,
        (true, MemDrKind::Add) => bound.saturating_add(change),
        (true, MemDrKind::Remove) => bound.saturating_sub(change),
    };
    let mut bytes = asked;
    let mut warning = None;
    if bytes % MEMDR_GRANULE != 0 {
        if !adjust {
            return Err(format!(
                "Memory size {} is not a multiple of 256M: a memory dynamic reconfiguration moves memory in 256M units (use the auto-adj option to round it)",
                format_size(typed(asked))
            ));
        }
        bytes = match kind {
            // At most the machine's memory (checked in `memory`): never past u64::MAX.
            MemDrKind::Add => round_up(bytes, MEMDR_GRANULE).unwrap_or(bytes),
            MemDrKind::Remove => round_down(bytes, MEMDR_GRANULE),
        };
        warning = Some(format!(
            "The size was adjusted from {} to {} to a 256M boundary",
            format_size(typed(asked)),
            format_size(typed(bytes))
        ));
    }
    if bytes < MEMDR_GRANULE {
        return Err(match set {
            true => format!(
                "Memory size {} is within 256M of the {} {name} has: a memory dynamic reconfiguration moves at least 256M",
                format_size(target),
                format_size(bound)
            ),
            false => format!(
                "The smallest memory dynamic reconfiguration is 256M; {} was asked",
                format_size(asked)
            ),
        });
    }
    if kind == MemDrKind::Remove && bytes.saturating_add(MEMDR_GRANULE) > bound {
        return Err(format!(
            "Cannot remove {} from {name}: it has {} bound and must keep at least 256M",
            format_size(bytes),
            format_size(bound)
        ));
    }
    let reserved = if kind == MemDrKind::Add {
        let free = reg.pools.memory.free_aligned(MEMDR_GRANULE);
        let pieces = reg.pools.memory.take(bytes, MEMDR_GRANULE).ok_or_else(|| {
            format!(
                "Not enough free memory for {name}: {} more requested, {} available in 256M units",
                format_size(bytes),
                format_size(free)
            )
        })?;
        blocks_from(&pieces, 0)
    } else {
        Vec::new()
    };
    let operation = reg.next_operation();
    get_mut(reg, name)?.memdr = Some(MemDr {
        id: operation,
        kind,
        action: ctx.action,
        bytes,
        done: 0,
        reserved,
        warning,
        cancel_requested: false,
    });
    reg.touch(name);
    reg.effect(Effect::StartMemDr {
        operation,
        domain: name.into(),
        kind,
        bytes,
        bound,
    });
    Ok(Applied {
        waiting: Some(operation),
        ..Applied::default()
    })
}

/// Ends memory DR `operation` with `done` bytes moved (the guest's answer, or where a
/// cancellation stopped it). Returns how it ended and the answer owed to the request that
/// started it.
pub fn finish_memdr(reg: &mut Registry, operation: u64, done: u64) -> Option<(MemDrEnd, Outcome)> {
    let name = reg
        .domains
        .values()
        .find(|d| d.memdr.as_ref().is_some_and(|m| m.id == operation))?
        .name
        .clone();
    let dr = reg.domains.get_mut(&name)?.memdr.take()?;
    let done = round_down(done.min(dr.bytes), MEMDR_GRANULE);
    let domain = reg.domains.get_mut(&name)?;
    // An active domain has a binding: without one there is nothing to move, and the answer
    // says nothing was done rather than the registry stopping.
    let Some(binding) = domain.binding.as_mut() else {
        for block in &dr.reserved {
            reg.pools.memory.give_back(block.pa, block.size);
        }
        reg.touch(&name);
        return Some((
            MemDrEnd::Refused,
            Err(format!("{name} is no longer bound: nothing was moved")),
        ));
    };
    match dr.kind {
        MemDrKind::Add => {
            let mut reserved = dr.reserved.clone();
            let unused = take_from_top(&mut reserved, dr.bytes.saturating_sub(done));
            let ra_end = binding.ra_end(crate::registry::machine::GUEST_RA_BASE);
            let pieces: Vec<(u64, u64)> = reserved.iter().map(|b| (b.pa, b.size)).collect();
            binding.memory.extend(blocks_from(&pieces, ra_end));
            domain.memory = domain.memory.saturating_add(done);
            for block in unused {
                reg.pools.memory.give_back(block.pa, block.size);
            }
        }
        MemDrKind::Remove => {
            let released = take_from_top(&mut binding.memory, done);
            domain.memory = domain.memory.saturating_sub(done);
            for block in released {
                reg.pools.memory.give_back(block.pa, block.size);
            }
        }
    }
    reg.touch(&name);
    let verb = if dr.kind == MemDrKind::Add {
        "added to"
    } else {
        "removed from"
    };
    if done > 0 {
        let item = Item {
            resource_type: "memory".into(),
            allocation_units: Some(format_size(get(reg, &name).ok()?.memory)),
            ..Item::default()
        };
        // The event says what the memory is now, under the action that asked for the change.
        reg.publish_content(
            dr.action,
            Content {
                id: name.clone(),
                sections: vec![Section {
                    kind: crate::ldm::SectionKind::ResourceAllocation,
                    items: vec![item],
                }],
            },
        );
    }
    Some(if done == dr.bytes {
        let applied = Applied {
            warning: dr.warning,
            ..Applied::default()
        };
        (MemDrEnd::Completed, Ok(applied))
    } else if done == 0 && dr.cancel_requested {
        (
            MemDrEnd::Cancelled,
            Err(format!(
                "The memory dynamic reconfiguration of {name} was cancelled before any memory was {verb} it"
            )),
        )
    } else if done == 0 {
        (
            MemDrEnd::Refused,
            Err(format!(
                "The guest of {name} could not release any memory: nothing was removed"
            )),
        )
    } else if dr.cancel_requested {
        (
            MemDrEnd::Cancelled,
            Ok(Applied::warn(format!(
                "The memory dynamic reconfiguration was cancelled: {} of the requested {} was {verb} {name}",
                format_size(done),
                format_size(dr.bytes)
            ))),
        )
    } else {
        (
            MemDrEnd::Partial,
            Ok(Applied::warn(format!(
                "Only {} of the requested {} could be removed from {name}: the guest kept the rest in use",
                format_size(done),
                format_size(dr.bytes)
            ))),
        )
    })
}

/// Records a worker's progress report (not durable: a restart rolls the operation back).
pub fn memdr_progress(reg: &mut Registry, operation: u64, done: u64) {
    if let Some(dr) = reg
        .domains
        .values_mut()
        .filter_map(|d| d.memdr.as_mut())
        .find(|m| m.id == operation)
    {
        dr.done = done;
    }
}

pub(super) fn cancel_operation(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    if ctx.flag(&["migration"]) {
        get(reg, name)?;
        return migration::cancel(reg, ctx, name);
    }
    let domain = get(reg, name)?;
    let operation = ["memdr", "reconf", "migration"]
        .into_iter()
        .find(|op| ctx.flag(&[op]))
        .ok_or("cancel-operation needs the operation to cancel: memdr, reconf or migration")?;
    match operation {
        "memdr" => {
            let Some(dr) = domain.memdr.as_ref() else {
                return Err(format!(
                    "No memory dynamic reconfiguration is in progress on {name}"
                ));
            };
            let id = dr.id;
            get_mut(reg, name)?
                .memdr
                .as_mut()
                .ok_or_else(|| {
                    format!("No memory dynamic reconfiguration is in progress on {name}")
                })?
                .cancel_requested = true;
            reg.effect(Effect::CancelMemDr { operation: id });
            Ok(Applied::default())
        }
        "reconf" => remove_reconf(reg, name).map(|()| Applied::default()),
        _ => migration::cancel(reg, ctx, name),
    }
}
