//! Domains: add, remove, set, and the lifecycle (bind, unbind, start, stop, panic).

use super::*;

pub(super) fn add_domain(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    check_name("domain", name, NAME_CHARS_MAX)?;
    if reg.domains.contains_key(name) {
        return Err(format!("LDom {name} already exists"));
    }
    let domains_max = reg.settings.limits.domains_max;
    if reg.domains.len() >= domains_max {
        reg.limit_hit(crate::limits::Limit::Domains);
        return Err(format!(
            "The machine holds at most {domains_max} domains (limits.domains_max): remove one first"
        ));
    }
    reg.check_not_in_delayed_reconf(name)?;
    // Constraints may come with the domain, as list-constraints writes them.
    let mut domain = crate::registry::model::Domain::constraints_only(name);
    let mut settings = Vec::new();
    for item in content.sections.iter().flat_map(|s| &s.items) {
        match item.resource_type.as_str() {
            "ldom_info" => settings.extend(check_info(reg, name, item, true)?),
            "cpu" => (domain.vcpus, domain.wcore) = cpu_count(reg, ctx, item, 0, 0)?,
            "mau" => domain.mau = parse_number("number of crypto units", units(ctx, item)?)?,
            "memory" => domain.memory = memory_size(units(ctx, item)?)?,
            "var" => {
                let (key, value) = variable_setting(reg, ctx, item)?;
                domain.variables.insert(key.into(), value.into());
                check_variable_count(reg, name, domain.variables.len())?;
            }
            "console" => domain.console = console_settings(reg, item, Console::default())?,
            other => {
                return Err(format!(
                    "add-domain takes ldom_info, cpu, mau, memory, var and console Items; add a '{other}' with its own action"
                ));
            }
        }
    }
    if domain.mau > reg.machine.crypto_units {
        return Err(format!(
            "The machine has {} crypto units",
            reg.machine.crypto_units
        ));
    }
    if reg.free_macs() == 0 {
        return Err(
            "No automatic MAC address is left in 00:14:4f:f8:00:00-00:14:4f:fb:ff:ff".into(),
        );
    }
    let fresh = reg.new_domain(name);
    // A UUID given in the settings replaces this one below.
    domain.uuid = fresh.uuid;
    domain.mac = fresh.mac;
    domain.hostid = fresh.hostid;
    let hostid_given = settings.iter().any(|s| matches!(s, Setting::Hostid(_)));
    apply_info(reg, &mut domain, settings);
    if !hostid_given {
        domain.hostid = crate::registry::state::hostid_of(domain.mac);
    }
    reg.touch(name);
    reg.domains.insert(name.into(), domain);
    Ok(Applied::default())
}

/// Which other domains stop `name` from being removed: its clients and its slaves.
pub(super) fn dependents(reg: &Registry, name: &str, leaving: &[&str]) -> Result<(), String> {
    let domain = get(reg, name)?;
    for other in reg
        .domains
        .values()
        .filter(|d| !leaving.contains(&d.name.as_str()))
    {
        if other.master.iter().any(|m| m == name) {
            return Err(format!(
                "LDom {name} is a master of {}: change its master property first",
                other.name
            ));
        }
        for disk in &other.vdisks {
            if domain.vds.iter().any(|s| s.name == disk.service) {
                return Err(format!(
                    "The service {} of {name} serves vdisk {} of {}",
                    disk.service, disk.name, other.name
                ));
            }
        }
        for net in &other.vnets {
            if domain.vsw.iter().any(|s| s.name == net.service) {
                return Err(format!(
                    "The service {} of {name} serves vnet {} of {}",
                    net.service, net.name, other.name
                ));
            }
        }
        if let Some(service) = &other.console.service
            && domain.vcc.iter().any(|s| &s.name == service)
        {
            return Err(format!(
                "The service {service} of {name} serves the console of {}",
                other.name
            ));
        }
    }
    Ok(())
}

pub(super) fn check_removable(reg: &Registry, name: &str, leaving: &[&str]) -> Result<(), String> {
    if name == CONTROL_DOMAIN {
        return Err(format!(
            "The control domain {CONTROL_DOMAIN} cannot be removed"
        ));
    }
    let domain = writable(reg, name)?;
    if domain.state != DomainState::Inactive {
        return Err(format!(
            "LDom {name} is {}: it must be unbound (inactive) to be removed",
            domain.state.as_str()
        ));
    }
    dependents(reg, name, leaving)
}

/// Removes `name` and everything it held from the registry (it was checked removable).
pub(super) fn forget_domain(reg: &mut Registry, name: &str) {
    let Some(domain) = reg.domains.remove(name) else {
        return;
    };
    for mac in std::iter::once(domain.mac)
        .chain(domain.vnets.iter().map(|v| v.mac))
        .chain(domain.vsw.iter().map(|v| v.mac))
    {
        reg.macs.remove(&mac);
    }
    let services = domain
        .vds
        .iter()
        .map(|s| &s.name)
        .chain(domain.vsw.iter().map(|s| &s.name))
        .chain(domain.vcc.iter().map(|s| &s.name));
    for service in services {
        reg.services.remove(service);
    }
    for device in &domain.io {
        reg.io_owner.remove(device);
    }
    reg.touch(name);
}

pub(super) fn remove_domain(reg: &mut Registry, name: &str) -> Outcome {
    check_removable(reg, name, &[name])?;
    forget_domain(reg, name);
    Ok(Applied::default())
}

/// `remove-domain -a`: every domain but the control domain, all or none.
pub(super) fn remove_all_domains(reg: &mut Registry, ctx: &Ctx<'_>) -> Outcome {
    let names: Vec<String> = reg
        .domains
        .keys()
        .filter(|n| *n != CONTROL_DOMAIN)
        .cloned()
        .collect();
    let leaving: Vec<&str> = names.iter().map(String::as_str).collect();
    for name in &names {
        check_removable(reg, name, &leaving)?;
    }
    for name in &names {
        forget_domain(reg, name);
        reg.publish_content(
            ctx.action,
            Content {
                id: name.clone(),
                sections: Vec::new(),
            },
        );
    }
    Ok(Applied::warn(format!("{} domain(s) removed", names.len())))
}

/// `start-domain -a` / `stop-domain -a`: every domain in the right state.
pub(super) fn all_domains(reg: &mut Registry, ctx: &Ctx<'_>) -> Outcome {
    let wanted = if ctx.action == Action::StartDomain {
        DomainState::Bound
    } else {
        DomainState::Active
    };
    let names: Vec<String> = reg
        .domains
        .values()
        .filter(|d| d.name != CONTROL_DOMAIN && d.state == wanted && d.memdr.is_none())
        .map(|d| d.name.clone())
        .collect();
    for name in &names {
        writable(reg, name)?;
    }
    for name in &names {
        match ctx.action {
            Action::StartDomain => start_domain(reg, name, ctx.now)?,
            _ => stop_domain(reg, ctx, name)?,
        };
        reg.publish_content(
            ctx.action,
            Content {
                id: name.clone(),
                sections: Vec::new(),
            },
        );
    }
    Ok(Applied::warn(format!(
        "{} domain(s) {}",
        names.len(),
        if ctx.action == Action::StartDomain {
            "started"
        } else {
            "stopped"
        }
    )))
}

pub(super) fn set_domain(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    writable(reg, name)?;
    let item = item(ctx, content, "ldom_info")?;
    let settings = check_info(reg, name, item, false)?;
    let mut domain = reg.domains.remove(name).ok_or_else(|| not_found(name))?;
    apply_info(reg, &mut domain, settings);
    reg.domains.insert(name.into(), domain);
    reg.touch(name);
    Ok(Applied::default())
}

pub(super) fn bind_domain(reg: &mut Registry, name: &str) -> Outcome {
    let domain = writable(reg, name)?;
    migration::check_no_outgoing(reg, name)?;
    if name == CONTROL_DOMAIN || domain.state != DomainState::Inactive {
        return Err(format!("LDom {name} is already bound"));
    }
    if domain.vcpus == 0 {
        return Err(format!(
            "LDom {name} has no virtual CPUs: add some with add-vcpu before binding it"
        ));
    }
    if domain.memory == 0 {
        return Err(format!(
            "LDom {name} has no memory: add some with add-memory before binding it"
        ));
    }
    let console = reg.console_service(domain).ok_or_else(|| {
        format!("No virtual console concentrator (vcc) exists for the console of {name}: add one with add-vconscon")
    })?;
    let (vcpus, wcore, maus, memory, wanted_port) = (
        domain.vcpus,
        domain.wcore,
        domain.mau,
        domain.memory,
        domain.console.port,
    );
    let rounded = rounded_to_granule(memory)?;
    reg.atomically(&[name], |reg| {
        let tpc = reg.machine.threads_per_core;
        let cpus = if wcore > 0 {
            reg.pools.cpus.take_cores(wcore, tpc).ok_or_else(|| {
                format!("Not enough free whole cores for {name}: {wcore} requested")
            })?
        } else {
            let free = reg.pools.cpus.free_count();
            reg.pools.cpus.take(vcpus).ok_or_else(|| {
                format!(
                    "Not enough free virtual CPUs for {name}: {vcpus} requested, {free} available"
                )
            })?
        };
        let free_maus = reg.pools.maus.free_count();
        let maus = reg.pools.maus.take(maus).ok_or_else(|| {
            format!(
                "Not enough free crypto units for {name}: {maus} requested, {free_maus} available"
            )
        })?;
        let free = reg.pools.memory.free_aligned(MEMORY_GRANULE);
        let pieces = reg
            .pools
            .memory
            .take(rounded, MEMORY_GRANULE)
            .ok_or_else(|| {
                format!(
                    "Not enough free memory for {name}: {} requested, {} available",
                    format_size(rounded),
                    format_size(free)
                )
            })?;
        let port = console_port(reg, &console, wanted_port)?;
        let domain = get_mut(reg, name)?;
        domain.binding = Some(crate::registry::model::Binding {
            cpus,
            maus,
            memory: blocks_from(&pieces, crate::registry::machine::GUEST_RA_BASE),
            console_port: Some(port),
        });
        domain.memory = rounded;
        domain.state = DomainState::Bound;
        Ok(())
    })?;
    reg.touch(name);
    Ok(rounding_warning(name, memory, rounded))
}

/// A console port of `service`: the one asked for if free, else the lowest free one.
pub(super) fn console_port(
    reg: &mut Registry,
    service: &str,
    wanted: Option<u16>,
) -> Result<u16, String> {
    let vcc = reg
        .domains
        .values()
        .flat_map(|d| &d.vcc)
        .find(|v| v.name == service)
        .ok_or_else(|| format!("The console service {service} does not exist"))?;
    let (min, max) = (vcc.min_port, vcc.max_port);
    let port = match wanted {
        Some(port) if !(min..=max).contains(&port) => {
            return Err(format!(
                "Console port {port} is outside the range {min}-{max} of {service}"
            ));
        }
        Some(port) if reg.console_ports.contains(&(service.to_owned(), port)) => {
            return Err(format!(
                "Console port {port} of {service} is already in use"
            ));
        }
        Some(port) => port,
        None => (min..=max)
            .find(|p| !reg.console_ports.contains(&(service.to_owned(), *p)))
            .ok_or_else(|| format!("No console port of {service} ({min}-{max}) is free"))?,
    };
    reg.console_ports.insert((service.to_owned(), port));
    Ok(port)
}

pub(super) fn release_binding(reg: &mut Registry, name: &str) -> Result<(), String> {
    let console = reg.console_service(get(reg, name)?);
    let domain = get_mut(reg, name)?;
    let Some(binding) = domain.binding.take() else {
        return Ok(());
    };
    reg.pools.cpus.give_back(&binding.cpus);
    reg.pools.maus.give_back(&binding.maus);
    for block in &binding.memory {
        reg.pools.memory.give_back(block.pa, block.size);
    }
    if let (Some(port), Some(service)) = (binding.console_port, console) {
        reg.console_ports.remove(&(service, port));
    }
    Ok(())
}

pub(super) fn unbind_domain(reg: &mut Registry, name: &str) -> Outcome {
    if name == CONTROL_DOMAIN {
        return Err(format!(
            "The control domain {CONTROL_DOMAIN} cannot be unbound"
        ));
    }
    let domain = writable(reg, name)?;
    match domain.state {
        DomainState::Bound => {}
        DomainState::Active => {
            return Err(format!(
                "LDom {name} is active: stop it before unbinding it"
            ));
        }
        DomainState::Inactive => return Err(format!("LDom {name} is not bound")),
    }
    release_binding(reg, name)?;
    get_mut(reg, name)?.state = DomainState::Inactive;
    reg.touch(name);
    Ok(Applied::default())
}

pub(super) fn start_domain(reg: &mut Registry, name: &str, now: u64) -> Outcome {
    let domain = writable(reg, name)?;
    match domain.state {
        DomainState::Bound => {}
        DomainState::Active => return Err(format!("LDom {name} is already active")),
        DomainState::Inactive => {
            return Err(format!(
                "LDom {name} is not bound: bind it before starting it"
            ));
        }
    }
    let domain = get_mut(reg, name)?;
    domain.state = DomainState::Active;
    domain.started_at = Some(now);
    reg.touch(name);
    Ok(Applied::default())
}

pub(super) fn stop_domain(reg: &mut Registry, ctx: &Ctx<'_>, name: &str) -> Outcome {
    let reboot = ctx.flag(&["-r", "reboot"]);
    let domain = get(reg, name)?;
    if domain.memdr.is_some() || reg.migration_of(name).is_some() {
        writable(reg, name)?;
    }
    migration::check_no_outgoing(reg, name)?;
    if domain.state != DomainState::Active {
        return Err(format!("LDom {name} is not active"));
    }
    if name == CONTROL_DOMAIN {
        if !reboot {
            return Err(format!(
                "The control domain {CONTROL_DOMAIN} cannot be stopped; use the reboot option (-r) to reboot it"
            ));
        }
        apply_reconf(reg)?;
        get_mut(reg, name)?.started_at = Some(ctx.now);
        reg.touch(name);
        return Ok(Applied::default());
    }
    reg.check_not_in_delayed_reconf(name)?;
    let domain = get_mut(reg, name)?;
    if reboot {
        domain.started_at = Some(ctx.now);
    } else {
        domain.state = DomainState::Bound;
        domain.started_at = None;
    }
    reg.touch(name);
    Ok(Applied::default())
}

pub(super) fn panic_domain(reg: &mut Registry, name: &str, now: u64) -> Outcome {
    if name == CONTROL_DOMAIN {
        return Err(format!(
            "The control domain {CONTROL_DOMAIN} cannot be panicked from ldmd"
        ));
    }
    let domain = writable(reg, name)?;
    if domain.state != DomainState::Active {
        return Err(format!("LDom {name} is not active"));
    }
    // The guest reboots after its panic; its slaves follow their failure policy.
    get_mut(reg, name)?.started_at = Some(now);
    reg.touch(name);
    let slaves: Vec<(String, String)> = reg
        .domains
        .values()
        .filter(|d| d.state == DomainState::Active && d.master.iter().any(|m| m == name))
        .map(|d| (d.name.clone(), d.failure_policy.clone()))
        .collect();
    for (slave, policy) in slaves {
        let event = match policy.as_str() {
            "panic" => Action::PanicDomain.event_name(),
            "reset" => DOMAIN_RESET,
            "stop" => Action::StopDomain.event_name(),
            _ => continue,
        };
        let d = get_mut(reg, &slave)?;
        if policy == "stop" {
            d.state = DomainState::Bound;
            d.started_at = None;
        } else {
            d.started_at = Some(now);
        }
        reg.touch(&slave);
        reg.publish_named(
            EventClass::Domain,
            event,
            Content {
                id: slave,
                sections: Vec::new(),
            },
        );
    }
    Ok(Applied::default())
}
