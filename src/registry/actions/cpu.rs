//! Virtual CPUs (plain or whole cores) and crypto units.

use super::*;

/// The CPU constraint after the action: (virtual CPUs, whole cores).
pub(super) fn cpu_count(
    reg: &Registry,
    ctx: &Ctx<'_>,
    item: &Item,
    vcpus: u32,
    wcore: u32,
) -> Result<(u32, u32), String> {
    let tpc = reg.machine.threads_per_core;
    let cores: Option<u32> = item
        .property("wcore")
        .map(|w| parse_number("number of whole cores", w))
        .transpose()?
        .filter(|w| *w > 0);
    let count: u32 = match (cores, item.allocation_units.as_deref()) {
        (Some(cores), _) => cores,
        (None, Some(units)) => parse_number("number of virtual CPUs", units)?,
        (None, None) => {
            return Err(format!(
                "{} needs rasd:AllocationUnits in its 'cpu' Item",
                ctx.action
            ));
        }
    };
    let change = ctx.change();
    let (current, unit) = match cores {
        Some(_) if vcpus > 0 && wcore == 0 => {
            return Err(
                "The domain has virtual CPUs, not whole cores: use set-vcpu with wcore to switch"
                    .into(),
            );
        }
        Some(_) => (wcore, "whole cores"),
        None if wcore > 0 && change != Change::Set => {
            return Err("The domain has whole cores: change them with wcore".into());
        }
        None => (vcpus, "virtual CPUs"),
    };
    let next = match change {
        Change::Add => current.saturating_add(count),
        Change::Remove => current
            .checked_sub(count)
            .ok_or_else(|| format!("Cannot remove {count} {unit}: the domain has {current}"))?,
        Change::Set => count,
    };
    if count == 0 && change != Change::Set {
        return Err(format!("{} needs a number of {unit} above 0", ctx.action));
    }
    let limit = if cores.is_some() {
        reg.machine.cores
    } else {
        reg.machine.threads()
    };
    if next > limit {
        return Err(format!(
            "The machine has {limit} {unit}: {next} cannot be assigned to one domain"
        ));
    }
    // `next` is at most the machine's cores here, and cores × threads fit (checked at start).
    Ok(match cores {
        Some(_) => (next.saturating_mul(tpc), next),
        None => (next, 0),
    })
}

pub(super) fn vcpu(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    let domain = writable(reg, name)?;
    let item = item(ctx, content, "cpu")?;
    let (vcpus, wcore) = cpu_count(reg, ctx, item, domain.vcpus, domain.wcore)?;
    if vcpus == 0 && domain.state != DomainState::Inactive {
        return Err(format!(
            "LDom {name} is {}: it must keep at least one virtual CPU",
            domain.state.as_str()
        ));
    }
    let tpc = reg.machine.threads_per_core;
    reg.atomically(&[name], |reg| {
        if let Some(binding) = get_mut(reg, name)?.binding.as_mut() {
            let mut cpus = std::mem::take(&mut binding.cpus);
            let keep = if wcore > 0 { 0 } else { to_index(vcpus) };
            if keep < cpus.len() {
                // Shrinking, or moving to whole cores: give back and take again.
                reg.pools.cpus.give_back(cpus.get(keep..).unwrap_or_default());
                cpus.truncate(keep);
            }
            let wanted = vcpus.saturating_sub(to_count(cpus.len()));
            let free = reg.pools.cpus.free_count();
            let more = if wcore > 0 {
                reg.pools.cpus.take_cores(wcore, tpc).ok_or_else(|| format!("Not enough free whole cores for {name}: {wcore} requested"))?
            } else {
                reg.pools.cpus.take(wanted).ok_or_else(|| format!("Not enough free virtual CPUs for {name}: {wanted} more requested, {free} available"))?
            };
            cpus.extend(more);
            bound_mut(reg, name)?.cpus = cpus;
        }
        let domain = get_mut(reg, name)?;
        domain.vcpus = vcpus;
        domain.wcore = wcore;
        Ok(())
    })?;
    reg.touch(name);
    Ok(Applied::default())
}

pub(super) fn mau(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    let domain = writable(reg, name)?;
    let count: u32 = parse_number(
        "number of crypto units",
        units(ctx, item(ctx, content, "mau")?)?,
    )?;
    let current = domain.mau;
    let installed = reg.machine.crypto_units;
    let next = match ctx.change() {
        // Past u32::MAX is past the machine too: an add never wraps into a removal.
        Change::Add => current.saturating_add(count),
        Change::Remove => current
            .checked_sub(count)
            .ok_or_else(|| format!("Cannot remove {count} crypto units: {name} has {current}"))?,
        Change::Set => count,
    };
    if next > installed {
        return Err(format!(
            "The machine has {installed} crypto units: {name} cannot have {}",
            if ctx.change() == Change::Add {
                format!("{count} more than its {current}")
            } else {
                next.to_string()
            }
        ));
    }
    reg.atomically(&[name], |reg| {
        if let Some(mut maus) = get_mut(reg, name)?.binding.as_mut().map(|b| std::mem::take(&mut b.maus)) {
            let keep = to_index(next);
            if keep < maus.len() {
                reg.pools.maus.give_back(maus.get(keep..).unwrap_or_default());
                maus.truncate(keep);
            } else {
                let wanted = next.saturating_sub(to_count(maus.len()));
                let free = reg.pools.maus.free_count();
                maus.extend(reg.pools.maus.take(wanted).ok_or_else(|| format!("Not enough free crypto units for {name}: {wanted} more requested, {free} available"))?);
            }
            bound_mut(reg, name)?.maus = maus;
        }
        get_mut(reg, name)?.mau = next;
        Ok(())
    })?;
    reg.touch(name);
    Ok(Applied::default())
}

/// A count of units as a vector length (u32 always fits usize on our targets).
fn to_index(count: u32) -> usize {
    usize::try_from(count).unwrap_or(usize::MAX)
}

/// A vector length as a count of units (never more than the machine's 4096 threads).
fn to_count(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}
