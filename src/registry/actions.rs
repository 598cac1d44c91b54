//! The actions of §3, one data object at a time. Every handler checks before it changes, so a
//! refused object leaves no trace; the reason is the ldm CLI's kind of sentence.

use crate::ldm::document::{Cmd, Content, Data, Item, Section};
use crate::registry::CONTROL_DOMAIN;
use crate::registry::machine::{MEMDR_GRANULE, MEMORY_GRANULE, blocks_from};
use crate::registry::model::{
    Console, DelayedReconf, Domain, DomainState, FACTORY_DEFAULT, MemDr, MemDrKind, SpConfig,
    VDisk, VNet, Vcc, Vds, Volume, Vsw,
};
use crate::registry::state::{Applied, Effect, Outcome, Registry};
use crate::registry::units::{
    NAME_CHARS_MAX, SPCONFIG_CHARS_MAX, check_name, format_mac, format_size, parse_mac,
    parse_number, parse_size, round_down, round_up,
};

/// Every action this daemon answers (migrate-domain has its own issue).
const ACTIONS: &[&str] = &[
    "add-domain",
    "remove-domain",
    "set-domain",
    "list-domain",
    "bind-domain",
    "unbind-domain",
    "start-domain",
    "stop-domain",
    "panic-domain",
    "add-vcpu",
    "set-vcpu",
    "remove-vcpu",
    "add-mau",
    "set-mau",
    "remove-mau",
    "add-memory",
    "set-memory",
    "remove-memory",
    "add-vdiskserver",
    "remove-vdiskserver",
    "add-vdiskserverdevice",
    "remove-vdiskserverdevice",
    "add-vdisk",
    "remove-vdisk",
    "add-vswitch",
    "set-vswitch",
    "remove-vswitch",
    "add-vnet",
    "set-vnet",
    "remove-vnet",
    "add-vconscon",
    "set-vconscon",
    "remove-vconscon",
    "set-vconsole",
    "add-variable",
    "set-variable",
    "remove-variable",
    "list-variable",
    "add-io",
    "remove-io",
    "add-spconfig",
    "set-spconfig",
    "remove-spconfig",
    "list-spconfig",
    "list-bindings",
    "list-constraints",
    "list-devices",
    "list-services",
    "cancel-operation",
    "remove-reconf",
    "reg-domain-events",
    "unreg-domain-events",
    "reg-resource-events",
    "unreg-resource-events",
    "reg-hardware-events",
    "unreg-hardware-events",
    "reg-all-events",
    "unreg-all-events",
];

/// The cmd-level refusal of an action this daemon does not answer.
pub fn check_action(action: &str) -> Result<(), String> {
    if ACTIONS.contains(&action) {
        Ok(())
    } else if action == "migrate-domain" {
        Err("The action 'migrate-domain' is not supported by this ldmd yet".into())
    } else {
        Err(format!("Unknown action '{action}'"))
    }
}

/// Applies `action` to one data object of `cmd`.
pub fn apply(reg: &mut Registry, action: &str, cmd: &Cmd, data: &Data, now: u64) -> Outcome {
    match data.version.as_deref() {
        Some(v) if v.starts_with("3.") => {}
        Some(v) => return Err(format!("Unsupported data version '{v}' (expected 3.0)")),
        None => return Err("The data element needs a version attribute (3.0)".into()),
    }
    let ctx = Ctx { action, cmd, now };
    if action.starts_with("list-") {
        return crate::registry::listing::list(reg, action, data, now);
    }
    if action.starts_with("reg-") || action.starts_with("unreg-") {
        return Ok(Applied::default());
    }
    match action {
        "remove-domain" if ctx.flag(&["-a", "all"]) => return remove_all_domains(reg, &ctx),
        "start-domain" | "stop-domain" if ctx.flag(&["-a", "all"]) => {
            return all_domains(reg, &ctx);
        }
        "add-spconfig" | "set-spconfig" | "remove-spconfig" => return spconfig(reg, &ctx, data),
        _ => {}
    }
    let envelope = data.envelope.as_ref();
    let contents = envelope.map_or(&[][..], |e| &e.contents[..]);
    let sections = envelope.map_or(&[][..], |e| &e.sections[..]);
    match (contents, sections) {
        ([content], _) => on_domain(reg, &ctx, content),
        ([], [_, ..]) if is_service_action(action) => {
            // Services named outside any Content belong to the control domain.
            let content = Content {
                id: CONTROL_DOMAIN.into(),
                sections: sections.to_vec(),
            };
            on_domain(reg, &ctx, &content)
        }
        ([], _) => Err(format!("{action} needs a Content naming the domain")),
        _ => Err(format!(
            "{action} takes one domain per data object; this one names {}",
            contents.len()
        )),
    }
}

fn is_service_action(action: &str) -> bool {
    matches!(
        action,
        "add-vdiskserver"
            | "remove-vdiskserver"
            | "add-vdiskserverdevice"
            | "remove-vdiskserverdevice"
            | "add-vswitch"
            | "set-vswitch"
            | "remove-vswitch"
            | "add-vconscon"
            | "set-vconscon"
            | "remove-vconscon"
            | "add-io"
    )
}

struct Ctx<'a> {
    action: &'a str,
    cmd: &'a Cmd,
    now: u64,
}

impl Ctx<'_> {
    /// Whether an option or argument names one of `names`.
    fn flag(&self, names: &[&str]) -> bool {
        self.cmd
            .options
            .iter()
            .chain(&self.cmd.arguments)
            .any(|o| names.contains(&o.as_str()))
    }
}

fn items<'c>(content: &'c Content, resource: &'c str) -> impl Iterator<Item = &'c Item> + 'c {
    content
        .sections
        .iter()
        .flat_map(|s| &s.items)
        .filter(move |i| i.resource_type == resource)
}

/// The one Item of type `resource` the action needs.
fn item<'c>(ctx: &Ctx<'_>, content: &'c Content, resource: &'c str) -> Result<&'c Item, String> {
    let mut found = items(content, resource);
    match (found.next(), found.next()) {
        (Some(item), None) => Ok(item),
        (None, _) => Err(format!("{} needs a '{resource}' Item", ctx.action)),
        (Some(_), Some(_)) => Err(format!(
            "{} takes one '{resource}' Item per data object",
            ctx.action
        )),
    }
}

fn required<'i>(ctx: &Ctx<'_>, item: &'i Item, key: &str) -> Result<&'i str, String> {
    item.property(key)
        .filter(|v| !v.trim().is_empty())
        .map(str::trim)
        .ok_or_else(|| {
            format!(
                "{} needs the '{key}' property of its '{}' Item",
                ctx.action, item.resource_type
            )
        })
}

fn units<'i>(ctx: &Ctx<'_>, item: &'i Item) -> Result<&'i str, String> {
    item.allocation_units
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            format!(
                "{} needs rasd:AllocationUnits in its '{}' Item",
                ctx.action, item.resource_type
            )
        })
}

fn not_found(name: &str) -> String {
    format!("LDom {name} does not exist")
}

fn get<'r>(reg: &'r Registry, name: &str) -> Result<&'r Domain, String> {
    reg.domains.get(name).ok_or_else(|| not_found(name))
}

fn get_mut<'r>(reg: &'r mut Registry, name: &str) -> &'r mut Domain {
    reg.domains.get_mut(name).expect("checked before")
}

/// A domain that may be changed now: it exists, runs no memory DR, and is not locked out by the
/// control domain's delayed reconfiguration.
fn writable<'r>(reg: &'r Registry, name: &str) -> Result<&'r Domain, String> {
    let domain = get(reg, name)?;
    if domain.memdr.is_some() {
        return Err(format!(
            "A memory dynamic reconfiguration is in progress on {name}: wait for it, or cancel it with cancel-operation memdr"
        ));
    }
    reg.check_not_in_delayed_reconf(name)?;
    Ok(domain)
}

fn on_domain(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    let outcome = match ctx.action {
        "add-domain" => add_domain(reg, ctx, content),
        "remove-domain" => remove_domain(reg, name),
        "set-domain" => set_domain(reg, ctx, content),
        "bind-domain" => bind_domain(reg, name),
        "unbind-domain" => unbind_domain(reg, name),
        "start-domain" => start_domain(reg, name, ctx.now),
        "stop-domain" => stop_domain(reg, ctx, name),
        "panic-domain" => panic_domain(reg, name, ctx.now),
        "add-vcpu" | "set-vcpu" | "remove-vcpu" => vcpu(reg, ctx, content),
        "add-mau" | "set-mau" | "remove-mau" => mau(reg, ctx, content),
        "add-memory" | "set-memory" | "remove-memory" => memory(reg, ctx, content),
        "add-vdiskserver" | "remove-vdiskserver" => vds(reg, ctx, content),
        "add-vdiskserverdevice" | "remove-vdiskserverdevice" => vds_volume(reg, ctx, content),
        "add-vdisk" | "remove-vdisk" => vdisk(reg, ctx, content),
        "add-vswitch" | "set-vswitch" | "remove-vswitch" => vswitch(reg, ctx, content),
        "add-vnet" | "set-vnet" | "remove-vnet" => vnet(reg, ctx, content),
        "add-vconscon" | "set-vconscon" | "remove-vconscon" => vconscon(reg, ctx, content),
        "set-vconsole" => vconsole(reg, ctx, content),
        "add-variable" | "set-variable" | "remove-variable" => variable(reg, ctx, content),
        "add-io" | "remove-io" => io(reg, ctx, content),
        "cancel-operation" => cancel_operation(reg, ctx, content),
        "remove-reconf" => remove_reconf(reg, name).map(|()| Applied::default()),
        other => Err(format!("Unknown action '{other}'")),
    }?;
    // A cancellation is not a change: the operation it stops publishes what it did.
    let publishes = !matches!(ctx.action, "cancel-operation" | "remove-reconf");
    if outcome.waiting.is_none() && publishes {
        reg.publish_content(ctx.action, content.clone());
    }
    Ok(outcome)
}

// ---- domains ----

fn check_failure_policy(policy: &str) -> Result<(), String> {
    match policy {
        "ignore" | "panic" | "reset" | "stop" => Ok(()),
        other => Err(format!(
            "Invalid failure-policy '{other}': expected ignore, panic, reset or stop"
        )),
    }
}

/// The ldom_info settings of `item`, checked against the registry; applied by `apply_info`.
fn check_info(reg: &Registry, name: &str, item: &Item, creating: bool) -> Result<(), String> {
    for property in &item.properties {
        let value = property.value.trim();
        match property.key.as_str() {
            "failure-policy" => check_failure_policy(value)?,
            "master" => {
                let masters: Vec<&str> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .collect();
                if masters.len() > 4 {
                    return Err(format!("LDom {name} can have at most 4 master domains"));
                }
                for master in masters {
                    if master == name {
                        return Err(format!("LDom {name} cannot be its own master"));
                    }
                    get(reg, master)?;
                }
            }
            "extended-mapin-space" | "perf-counters" | "rc-add-policy" => {}
            "hostid" => {
                if !creating && get(reg, name)?.state != DomainState::Inactive {
                    return Err(format!("LDom {name} must be inactive to change its hostid"));
                }
                parse_hostid(value)?;
            }
            other => return Err(format!("Unknown ldom_info property '{other}'")),
        }
    }
    if let Some(address) = &item.address {
        if !creating && get(reg, name)?.state != DomainState::Inactive {
            return Err(format!(
                "LDom {name} must be inactive to change its MAC address"
            ));
        }
        let mac = parse_mac(address.trim())?;
        let own = reg.domains.get(name).is_some_and(|d| d.mac == mac);
        if reg.macs.contains(&mac) && !own {
            return Err(format!("MAC address {} is already in use", format_mac(mac)));
        }
    }
    Ok(())
}

fn parse_hostid(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    u32::from_str_radix(digits, 16)
        .map_err(|_| format!("Invalid hostid '{text}': expected hexadecimal"))
}

fn apply_info(reg: &mut Registry, domain: &mut Domain, item: &Item) {
    for property in &item.properties {
        let value = property.value.trim();
        match property.key.as_str() {
            "failure-policy" => domain.failure_policy = value.into(),
            "master" => {
                domain.master = value
                    .split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(String::from)
                    .collect();
            }
            "hostid" => domain.hostid = parse_hostid(value).expect("checked"),
            key => {
                domain.options.insert(key.into(), value.into());
            }
        }
    }
    if let Some(address) = &item.address {
        let mac = parse_mac(address.trim()).expect("checked");
        if mac != domain.mac {
            reg.macs.remove(&domain.mac);
            reg.macs.insert(mac);
            domain.mac = mac;
        }
    }
}

fn add_domain(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    check_name("domain", name, NAME_CHARS_MAX)?;
    if reg.domains.contains_key(name) {
        return Err(format!("LDom {name} already exists"));
    }
    reg.check_not_in_delayed_reconf(name)?;
    // Constraints may come with the domain, as list-constraints writes them.
    let mut domain = crate::registry::model::Domain::constraints_only(name);
    for item in content.sections.iter().flat_map(|s| &s.items) {
        match item.resource_type.as_str() {
            "ldom_info" => check_info(reg, name, item, true)?,
            "cpu" => (domain.vcpus, domain.wcore) = cpu_count(reg, ctx, item, 0, 0)?,
            "mau" => domain.mau = parse_number("number of crypto units", units(ctx, item)?)?,
            "memory" => domain.memory = parse_size(units(ctx, item)?)?,
            "var" => {
                let key = required(ctx, item, "name")?;
                let value = item.property("value").unwrap_or_default();
                domain.variables.insert(key.into(), value.into());
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
    domain.uuid = fresh.uuid;
    domain.mac = fresh.mac;
    domain.hostid = fresh.hostid;
    for item in items(content, "ldom_info") {
        apply_info(reg, &mut domain, item);
    }
    if items(content, "ldom_info").all(|i| i.property("hostid").is_none()) {
        domain.hostid = crate::registry::state::hostid_of(domain.mac);
    }
    reg.touch(name);
    reg.domains.insert(name.into(), domain);
    Ok(Applied::default())
}

/// Which other domains stop `name` from being removed: its clients and its slaves.
fn dependents(reg: &Registry, name: &str, leaving: &[&str]) -> Result<(), String> {
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

fn check_removable(reg: &Registry, name: &str, leaving: &[&str]) -> Result<(), String> {
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

fn forget_domain(reg: &mut Registry, name: &str) {
    let domain = reg.domains.remove(name).expect("checked");
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

fn remove_domain(reg: &mut Registry, name: &str) -> Outcome {
    check_removable(reg, name, &[name])?;
    forget_domain(reg, name);
    Ok(Applied::default())
}

/// `remove-domain -a`: every domain but the control domain, all or none.
fn remove_all_domains(reg: &mut Registry, ctx: &Ctx<'_>) -> Outcome {
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
fn all_domains(reg: &mut Registry, ctx: &Ctx<'_>) -> Outcome {
    let wanted = if ctx.action == "start-domain" {
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
            "start-domain" => start_domain(reg, name, ctx.now)?,
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
        if ctx.action == "start-domain" {
            "started"
        } else {
            "stopped"
        }
    )))
}

fn set_domain(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    writable(reg, name)?;
    let item = item(ctx, content, "ldom_info")?;
    check_info(reg, name, item, false)?;
    let mut domain = reg.domains.remove(name).expect("checked");
    apply_info(reg, &mut domain, item);
    reg.domains.insert(name.into(), domain);
    reg.touch(name);
    Ok(Applied::default())
}

fn bind_domain(reg: &mut Registry, name: &str) -> Outcome {
    let domain = writable(reg, name)?;
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
    let rounded = round_up(memory, MEMORY_GRANULE);
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
        let domain = get_mut(reg, name);
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
fn console_port(reg: &mut Registry, service: &str, wanted: Option<u16>) -> Result<u16, String> {
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

fn release_binding(reg: &mut Registry, name: &str) {
    let console = reg.console_service(get(reg, name).expect("checked"));
    let domain = get_mut(reg, name);
    let Some(binding) = domain.binding.take() else {
        return;
    };
    reg.pools.cpus.give_back(&binding.cpus);
    reg.pools.maus.give_back(&binding.maus);
    for block in &binding.memory {
        reg.pools.memory.give_back(block.pa, block.size);
    }
    if let (Some(port), Some(service)) = (binding.console_port, console) {
        reg.console_ports.remove(&(service, port));
    }
}

fn unbind_domain(reg: &mut Registry, name: &str) -> Outcome {
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
    release_binding(reg, name);
    get_mut(reg, name).state = DomainState::Inactive;
    reg.touch(name);
    Ok(Applied::default())
}

fn start_domain(reg: &mut Registry, name: &str, now: u64) -> Outcome {
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
    let domain = get_mut(reg, name);
    domain.state = DomainState::Active;
    domain.started_at = Some(now);
    reg.touch(name);
    Ok(Applied::default())
}

fn stop_domain(reg: &mut Registry, ctx: &Ctx<'_>, name: &str) -> Outcome {
    let reboot = ctx.flag(&["-r", "reboot"]);
    let domain = get(reg, name)?;
    if domain.memdr.is_some() {
        writable(reg, name)?;
    }
    if domain.state != DomainState::Active {
        return Err(format!("LDom {name} is not active"));
    }
    if name == CONTROL_DOMAIN {
        if !reboot {
            return Err(format!(
                "The control domain {CONTROL_DOMAIN} cannot be stopped; use the reboot option (-r) to reboot it"
            ));
        }
        apply_reconf(reg);
        get_mut(reg, name).started_at = Some(ctx.now);
        reg.touch(name);
        return Ok(Applied::default());
    }
    reg.check_not_in_delayed_reconf(name)?;
    let domain = get_mut(reg, name);
    if reboot {
        domain.started_at = Some(ctx.now);
    } else {
        domain.state = DomainState::Bound;
        domain.started_at = None;
    }
    reg.touch(name);
    Ok(Applied::default())
}

fn panic_domain(reg: &mut Registry, name: &str, now: u64) -> Outcome {
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
    get_mut(reg, name).started_at = Some(now);
    reg.touch(name);
    let slaves: Vec<(String, String)> = reg
        .domains
        .values()
        .filter(|d| d.state == DomainState::Active && d.master.iter().any(|m| m == name))
        .map(|d| (d.name.clone(), d.failure_policy.clone()))
        .collect();
    for (slave, policy) in slaves {
        let event = match policy.as_str() {
            "panic" => "panic-domain",
            "reset" => "domain-reset",
            "stop" => {
                let d = get_mut(reg, &slave);
                d.state = DomainState::Bound;
                d.started_at = None;
                "stop-domain"
            }
            _ => continue,
        };
        if event != "stop-domain" {
            get_mut(reg, &slave).started_at = Some(now);
        }
        reg.touch(&slave);
        reg.publish_content(
            event,
            Content {
                id: slave,
                sections: Vec::new(),
            },
        );
    }
    Ok(Applied::default())
}

// ---- CPUs and crypto units ----

/// The CPU constraint after the action: (virtual CPUs, whole cores).
fn cpu_count(
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
    let verb = ctx.action.split('-').next().unwrap_or_default();
    let (current, unit) = match cores {
        Some(_) if vcpus > 0 && wcore == 0 => {
            return Err(
                "The domain has virtual CPUs, not whole cores: use set-vcpu with wcore to switch"
                    .into(),
            );
        }
        Some(_) => (wcore, "whole cores"),
        None if wcore > 0 && verb != "set" => {
            return Err("The domain has whole cores: change them with wcore".into());
        }
        None => (vcpus, "virtual CPUs"),
    };
    let next = match verb {
        "add" => current.checked_add(count).ok_or("too many")?,
        "remove" if count > current => {
            return Err(format!(
                "Cannot remove {count} {unit}: the domain has {current}"
            ));
        }
        "remove" => current - count,
        _ => count,
    };
    if count == 0 && verb != "set" {
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
    Ok(match cores {
        Some(_) => (next * tpc, next),
        None => (next, 0),
    })
}

fn vcpu(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
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
        if let Some(binding) = get_mut(reg, name).binding.as_mut() {
            let mut cpus = std::mem::take(&mut binding.cpus);
            if wcore > 0 || (cpus.len() as u32) > vcpus {
                // Shrinking, or moving to whole cores: give back and take again.
                let keep = if wcore > 0 { 0 } else { vcpus as usize };
                reg.pools.cpus.give_back(&cpus[keep..]);
                cpus.truncate(keep);
            }
            let wanted = vcpus - cpus.len() as u32;
            let free = reg.pools.cpus.free_count();
            let more = if wcore > 0 {
                reg.pools.cpus.take_cores(wcore, tpc).ok_or_else(|| format!("Not enough free whole cores for {name}: {wcore} requested"))?
            } else {
                reg.pools.cpus.take(wanted).ok_or_else(|| format!("Not enough free virtual CPUs for {name}: {wanted} more requested, {free} available"))?
            };
            cpus.extend(more);
            get_mut(reg, name).binding.as_mut().expect("bound").cpus = cpus;
        }
        let domain = get_mut(reg, name);
        domain.vcpus = vcpus;
        domain.wcore = wcore;
        Ok(())
    })?;
    reg.touch(name);
    Ok(Applied::default())
}

fn mau(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    let domain = writable(reg, name)?;
    let count: u32 = parse_number(
        "number of crypto units",
        units(ctx, item(ctx, content, "mau")?)?,
    )?;
    let current = domain.mau;
    let next = match ctx.action {
        "add-mau" => current + count,
        "remove-mau" if count > current => {
            return Err(format!(
                "Cannot remove {count} crypto units: {name} has {current}"
            ));
        }
        "remove-mau" => current - count,
        _ => count,
    };
    if next > reg.machine.crypto_units {
        return Err(format!(
            "The machine has {} crypto units",
            reg.machine.crypto_units
        ));
    }
    reg.atomically(&[name], |reg| {
        if let Some(mut maus) = get_mut(reg, name).binding.as_mut().map(|b| std::mem::take(&mut b.maus)) {
            if maus.len() as u32 > next {
                reg.pools.maus.give_back(&maus[next as usize..]);
                maus.truncate(next as usize);
            } else {
                let wanted = next - maus.len() as u32;
                let free = reg.pools.maus.free_count();
                maus.extend(reg.pools.maus.take(wanted).ok_or_else(|| format!("Not enough free crypto units for {name}: {wanted} more requested, {free} available"))?);
            }
            get_mut(reg, name).binding.as_mut().expect("bound").maus = maus;
        }
        get_mut(reg, name).mau = next;
        Ok(())
    })?;
    reg.touch(name);
    Ok(Applied::default())
}

// ---- memory ----

fn memory(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    let domain = writable(reg, name)?;
    let size = parse_size(units(ctx, item(ctx, content, "memory")?)?)?;
    let current = domain.memory;
    let verb = ctx.action.split('-').next().unwrap_or_default();
    if size == 0 && verb != "set" {
        return Err(format!("{} needs a size above 0", ctx.action));
    }
    let target = match verb {
        "add" => current.checked_add(size).ok_or("Invalid memory size")?,
        "remove" if size >= current => {
            return Err(format!(
                "Cannot remove {} of memory from {name}: it has {}",
                format_size(size),
                format_size(current)
            ));
        }
        "remove" => current - size,
        _ => size,
    };
    if target == 0 {
        return Err(format!("LDom {name} cannot be left without memory"));
    }
    match (domain.state, name == CONTROL_DOMAIN) {
        (DomainState::Inactive, _) => {
            get_mut(reg, name).memory = target;
            reg.touch(name);
            Ok(Applied::default())
        }
        (DomainState::Bound, _) => resize_bound(reg, name, target),
        (DomainState::Active, true) => delayed_memory(reg, name, target),
        (DomainState::Active, false) => start_memdr(reg, ctx, name, target),
    }
}

/// A bound domain's memory changes at once, in 4 MB units.
fn resize_bound(reg: &mut Registry, name: &str, target: u64) -> Outcome {
    let rounded = round_up(target, MEMORY_GRANULE);
    reg.atomically(&[name], |reg| {
        grow_or_shrink(reg, name, rounded, MEMORY_GRANULE)?;
        get_mut(reg, name).memory = rounded;
        Ok(())
    })?;
    reg.touch(name);
    Ok(rounding_warning(name, target, rounded))
}

/// The warning of a bound domain whose memory was rounded up to 4 MB (§6).
fn rounding_warning(name: &str, asked: u64, rounded: u64) -> Applied {
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
fn grow_or_shrink(reg: &mut Registry, name: &str, target: u64, align: u64) -> Result<(), String> {
    let binding = get_mut(reg, name).binding.take().expect("bound");
    let mut binding = binding;
    let bound = binding.memory_bytes();
    if target > bound {
        let wanted = target - bound;
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
                get_mut(reg, name).binding = Some(binding);
                return Err(e);
            }
        }
    } else {
        let released = take_from_top(&mut binding.memory, bound - target);
        for block in released {
            reg.pools.memory.give_back(block.pa, block.size);
        }
    }
    get_mut(reg, name).binding = Some(binding);
    Ok(())
}

/// Removes `bytes` from the highest real addresses of `blocks`; returns what was removed.
fn take_from_top(
    blocks: &mut Vec<crate::registry::machine::MemoryBlock>,
    bytes: u64,
) -> Vec<crate::registry::machine::MemoryBlock> {
    blocks.sort_by_key(|b| b.ra);
    let mut left = bytes;
    let mut removed = Vec::new();
    while left > 0 {
        let Some(last) = blocks.last_mut() else { break };
        if last.size <= left {
            left -= last.size;
            removed.push(blocks.pop().expect("non-empty"));
        } else {
            last.size -= left;
            removed.push(crate::registry::machine::MemoryBlock {
                ra: last.ra + last.size,
                pa: last.pa + last.size,
                size: left,
            });
            left = 0;
        }
    }
    removed
}

const DELAYED_RECONF_WARNING: &str = "Initiating a delayed reconfiguration operation on the primary domain. All configuration changes for other domains are disabled until the primary domain reboots, at which time the new configuration for the primary domain will also take effect.";

/// The control domain's memory changes at its next reboot; growth is reserved now.
fn delayed_memory(reg: &mut Registry, name: &str, target: u64) -> Outcome {
    let rounded = round_up(target, MEMORY_GRANULE);
    let domain = get(reg, name)?;
    let first = domain.reconf.is_none();
    let mut reconf = domain.reconf.clone().unwrap_or_default();
    let bound = domain.binding.as_ref().map_or(0, |b| b.memory_bytes());
    reg.atomically(&[name], |reg| {
        for block in reconf.reserved.drain(..) {
            reg.pools.memory.give_back(block.pa, block.size);
        }
        if rounded > bound {
            let wanted = rounded - bound;
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
        let domain = get_mut(reg, name);
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
fn apply_reconf(reg: &mut Registry) {
    let name = CONTROL_DOMAIN;
    let Some(reconf) = get_mut(reg, name).reconf.take() else {
        return;
    };
    if let Some(target) = reconf.memory {
        for block in &reconf.reserved {
            reg.pools.memory.give_back(block.pa, block.size);
        }
        // The reservation was just returned, so this cannot fail.
        let _ = grow_or_shrink(reg, name, target, MEMORY_GRANULE);
    }
    let domain = get_mut(reg, name);
    domain.io.retain(|d| !reconf.io_remove.contains(d));
    domain.io.extend(reconf.io_add.iter().cloned());
    for device in &reconf.io_remove {
        reg.io_owner.remove(device);
    }
}

fn remove_reconf(reg: &mut Registry, name: &str) -> Result<(), String> {
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
    let domain = get_mut(reg, name);
    domain.reconf = None;
    domain.memory = bound;
    reg.touch(name);
    Ok(())
}

fn start_memdr(reg: &mut Registry, ctx: &Ctx<'_>, name: &str, target: u64) -> Outcome {
    if !reg.settings.xmpp_enabled {
        return Err("Memory dynamic reconfiguration is disabled because the XMPP interface is off (xmpp_enabled = false)".into());
    }
    let domain = get(reg, name)?;
    let bound = domain.binding.as_ref().map_or(0, |b| b.memory_bytes());
    let adjust = ctx.flag(&["auto-adj", "--auto-adj", "auto-adjust"]);
    let (kind, asked) = if target >= bound {
        (MemDrKind::Add, target - bound)
    } else {
        (MemDrKind::Remove, bound - target)
    };
    let mut bytes = asked;
    let mut warning = None;
    if bytes % MEMDR_GRANULE != 0 {
        if !adjust {
            return Err(format!(
                "Memory size {} is not a multiple of 256M: a memory dynamic reconfiguration moves memory in 256M units (use the auto-adj option to round it)",
                format_size(asked)
            ));
        }
        bytes = match kind {
            MemDrKind::Add => round_up(bytes, MEMDR_GRANULE),
            MemDrKind::Remove => round_down(bytes, MEMDR_GRANULE),
        };
        warning = Some(format!(
            "The size was adjusted from {} to {} to a 256M boundary",
            format_size(asked),
            format_size(bytes)
        ));
    }
    if bytes < MEMDR_GRANULE {
        return Err(format!(
            "The smallest memory dynamic reconfiguration is 256M; {} was asked",
            format_size(asked)
        ));
    }
    if kind == MemDrKind::Remove && bytes + MEMDR_GRANULE > bound {
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
    get_mut(reg, name).memdr = Some(MemDr {
        id: operation,
        kind,
        action: ctx.action.into(),
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
/// cancellation stopped it). Returns the answer owed to the request that started it.
pub fn finish_memdr(reg: &mut Registry, operation: u64, done: u64) -> Option<Outcome> {
    let name = reg
        .domains
        .values()
        .find(|d| d.memdr.as_ref().is_some_and(|m| m.id == operation))?
        .name
        .clone();
    let dr = get_mut(reg, &name).memdr.take().expect("found");
    let done = round_down(done.min(dr.bytes), MEMDR_GRANULE);
    match dr.kind {
        MemDrKind::Add => {
            let mut reserved = dr.reserved.clone();
            let unused = take_from_top(&mut reserved, dr.bytes - done);
            for block in unused {
                reg.pools.memory.give_back(block.pa, block.size);
            }
            let binding = get_mut(reg, &name).binding.as_mut().expect("active");
            let ra_end = binding.ra_end(crate::registry::machine::GUEST_RA_BASE);
            let pieces: Vec<(u64, u64)> = reserved.iter().map(|b| (b.pa, b.size)).collect();
            binding.memory.extend(blocks_from(&pieces, ra_end));
            get_mut(reg, &name).memory += done;
        }
        MemDrKind::Remove => {
            let binding = get_mut(reg, &name).binding.as_mut().expect("active");
            let released = take_from_top(&mut binding.memory, done);
            for block in released {
                reg.pools.memory.give_back(block.pa, block.size);
            }
            get_mut(reg, &name).memory -= done;
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
            &dr.action,
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
        Ok(Applied {
            warning: dr.warning,
            ..Applied::default()
        })
    } else if done == 0 && dr.cancel_requested {
        Err(format!(
            "The memory dynamic reconfiguration of {name} was cancelled before any memory was {verb} it"
        ))
    } else if done == 0 {
        Err(format!(
            "The guest of {name} could not release any memory: nothing was removed"
        ))
    } else if dr.cancel_requested {
        Ok(Applied::warn(format!(
            "The memory dynamic reconfiguration was cancelled: {} of the requested {} was {verb} {name}",
            format_size(done),
            format_size(dr.bytes)
        )))
    } else {
        Ok(Applied::warn(format!(
            "Only {} of the requested {} could be removed from {name}: the guest kept the rest in use",
            format_size(done),
            format_size(dr.bytes)
        )))
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

fn cancel_operation(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
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
            get_mut(reg, name)
                .memdr
                .as_mut()
                .expect("checked")
                .cancel_requested = true;
            reg.effect(Effect::CancelMemDr { operation: id });
            Ok(Applied::default())
        }
        "reconf" => remove_reconf(reg, name).map(|()| Applied::default()),
        _ => Err(format!("No migration is in progress on {name}")),
    }
}

// ---- services ----

fn service_name<'i>(ctx: &Ctx<'_>, item: &'i Item) -> Result<&'i str, String> {
    let name = required(ctx, item, "service_name")?;
    check_name("service", name, NAME_CHARS_MAX)?;
    Ok(name)
}

fn check_new_service(reg: &Registry, service: &str) -> Result<(), String> {
    match reg.services.get(service) {
        Some(owner) => Err(format!(
            "The service name {service} is already in use by {owner}"
        )),
        None => Ok(()),
    }
}

/// The domain that provides `service`, checked to be `content`'s domain.
fn own_service(reg: &Registry, name: &str, service: &str) -> Result<(), String> {
    match reg.services.get(service) {
        Some(owner) if owner == name => Ok(()),
        Some(owner) => Err(format!(
            "The service {service} belongs to {owner}, not {name}"
        )),
        None => Err(format!("The service {service} does not exist")),
    }
}

fn vds(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    writable(reg, name)?;
    let service = service_name(ctx, item(ctx, content, "vds")?)?;
    if ctx.action == "add-vdiskserver" {
        check_new_service(reg, service)?;
        reg.services.insert(service.into(), name.into());
        get_mut(reg, name).vds.push(Vds {
            name: service.into(),
            volumes: Vec::new(),
        });
    } else {
        own_service(reg, name, service)?;
        let vds = get(reg, name)?
            .vds
            .iter()
            .find(|s| s.name == service)
            .expect("owned");
        if let Some(volume) = vds.volumes.first() {
            return Err(format!(
                "The service {service} still exports volume {}: remove its volumes first",
                volume.name
            ));
        }
        reg.services.remove(service);
        get_mut(reg, name).vds.retain(|s| s.name != service);
    }
    reg.touch(name);
    Ok(Applied::default())
}

fn vds_volume(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    writable(reg, name)?;
    let item = item(ctx, content, "vds_volume")?;
    let service = service_name(ctx, item)?;
    let volume = required(ctx, item, "vol_name")?;
    check_name("volume", volume, NAME_CHARS_MAX)?;
    own_service(reg, name, service)?;
    let vds = get(reg, name)?
        .vds
        .iter()
        .find(|s| s.name == service)
        .ok_or_else(|| format!("{service} is not a virtual disk service"))?;
    if ctx.action == "add-vdiskserverdevice" {
        let block_dev = required(ctx, item, "block_dev")?;
        if vds.volumes.iter().any(|v| v.name == volume) {
            return Err(format!("Volume {volume} already exists in {service}"));
        }
        if let Some(other) = vds.volumes.iter().find(|v| v.block_dev == block_dev)
            && !ctx.flag(&["-f", "force"])
        {
            return Err(format!(
                "{block_dev} is already exported by {service} as {}; use force to export it twice",
                other.name
            ));
        }
        let opts: Vec<String> = item
            .property("vol_opts")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(String::from)
            .collect();
        if let Some(bad) = opts
            .iter()
            .find(|o| !["ro", "slice", "excl"].contains(&o.as_str()))
        {
            return Err(format!(
                "Invalid volume option '{bad}': expected ro, slice or excl"
            ));
        }
        let volume = Volume {
            name: volume.into(),
            block_dev: block_dev.into(),
            opts,
            mpgroup: item.property("mpgroup").map(String::from),
        };
        get_mut(reg, name)
            .vds
            .iter_mut()
            .find(|s| s.name == service)
            .expect("found")
            .volumes
            .push(volume);
    } else {
        if !vds.volumes.iter().any(|v| v.name == volume) {
            return Err(format!("Volume {volume} does not exist in {service}"));
        }
        for other in reg.domains.values() {
            if let Some(disk) = other
                .vdisks
                .iter()
                .find(|d| d.service == service && d.volume == volume)
            {
                return Err(format!(
                    "Volume {volume}@{service} is in use by vdisk {} of {}",
                    disk.name, other.name
                ));
            }
        }
        get_mut(reg, name)
            .vds
            .iter_mut()
            .find(|s| s.name == service)
            .expect("found")
            .volumes
            .retain(|v| v.name != volume);
    }
    reg.touch(name);
    Ok(Applied::default())
}

fn vdisk(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    let domain = writable(reg, name)?;
    let item = item(ctx, content, "disk")?;
    let disk = required(ctx, item, "vdisk_name")?;
    check_name("vdisk", disk, NAME_CHARS_MAX)?;
    if ctx.action == "add-vdisk" {
        if domain.vdisks.iter().any(|d| d.name == disk) {
            return Err(format!("Vdisk {disk} already exists in {name}"));
        }
        let service = required(ctx, item, "service_name")?;
        let volume = required(ctx, item, "vol_name")?;
        let owner = reg
            .services
            .get(service)
            .ok_or_else(|| format!("The service {service} does not exist"))?;
        let exists = get(reg, owner)?
            .vds
            .iter()
            .any(|s| s.name == service && s.volumes.iter().any(|v| v.name == volume));
        if !exists {
            return Err(format!("Volume {volume}@{service} does not exist"));
        }
        let timeout = item
            .property("timeout")
            .map(|t| parse_number("timeout", t))
            .transpose()?;
        let domain = get_mut(reg, name);
        let id = domain.next_device_id;
        domain.next_device_id += 1;
        domain.vdisks.push(VDisk {
            name: disk.into(),
            service: service.into(),
            volume: volume.into(),
            timeout,
            id,
        });
    } else {
        if !domain.vdisks.iter().any(|d| d.name == disk) {
            return Err(format!("Vdisk {disk} does not exist in {name}"));
        }
        get_mut(reg, name).vdisks.retain(|d| d.name != disk);
    }
    reg.touch(name);
    Ok(Applied::default())
}

fn vlan_ids(text: Option<&str>) -> Result<Vec<u16>, String> {
    text.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| match v.parse::<u16>() {
            Ok(id) if (1..=4094).contains(&id) => Ok(id),
            _ => Err(format!("Invalid VLAN id '{v}': expected 1 to 4094")),
        })
        .collect()
}

fn pvid(item: &Item) -> Result<Option<u16>, String> {
    item.property("pvid")
        .or(item.property("default-vlan-id"))
        .map(|p| {
            vlan_ids(Some(p)).and_then(|ids| match ids[..] {
                [id] => Ok(id),
                _ => Err(format!("Invalid pvid '{p}'")),
            })
        })
        .transpose()
}

/// A MAC address asked for in `item`, checked to be free, or a fresh one.
fn mac_for(reg: &mut Registry, item: &Item, current: Option<u64>) -> Result<u64, String> {
    match item
        .address
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "auto")
    {
        Some(text) => {
            let mac = parse_mac(text)?;
            if Some(mac) != current && reg.macs.contains(&mac) {
                return Err(format!("MAC address {} is already in use", format_mac(mac)));
            }
            if let Some(old) = current {
                reg.macs.remove(&old);
            }
            reg.macs.insert(mac);
            Ok(mac)
        }
        None => match current {
            Some(mac) => Ok(mac),
            None => reg
                .allocate_mac()
                .ok_or_else(|| "No automatic MAC address is left".into()),
        },
    }
}

fn vswitch(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    writable(reg, name)?;
    let item = item(ctx, content, "vsw")?;
    let service = service_name(ctx, item)?;
    let mtu = item
        .property("mtu")
        .map(|m| parse_number::<u32>("mtu", m))
        .transpose()?;
    if let Some(mtu) = mtu
        && !(1500..=16000).contains(&mtu)
    {
        return Err(format!("Invalid mtu {mtu}: expected 1500 to 16000"));
    }
    let pvid = pvid(item)?;
    let vid = item
        .property("vid")
        .map(|v| vlan_ids(Some(v)))
        .transpose()?;
    let inter_vnet_link = match item
        .property("inter_vnet_link")
        .or(item.property("inter-vnet-link"))
    {
        None => None,
        Some("on") => Some(true),
        Some("off") => Some(false),
        Some(other) => {
            return Err(format!(
                "Invalid inter_vnet_link '{other}': expected on or off"
            ));
        }
    };
    match ctx.action {
        "add-vswitch" => {
            check_new_service(reg, service)?;
            let mac = mac_for(reg, item, None)?;
            reg.services.insert(service.into(), name.into());
            get_mut(reg, name).vsw.push(Vsw {
                name: service.into(),
                mac,
                net_dev: item
                    .property("dev_path")
                    .or(item.property("net-dev"))
                    .map(String::from),
                pvid: pvid.unwrap_or(1),
                vid: vid.unwrap_or_default(),
                mtu: mtu.unwrap_or(1500),
                mode: item.property("mode").map(String::from),
                linkprop: item.property("linkprop").map(String::from),
                inter_vnet_link: inter_vnet_link.unwrap_or(true),
            });
        }
        "set-vswitch" => {
            own_service(reg, name, service)?;
            let current = get(reg, name)?
                .vsw
                .iter()
                .find(|s| s.name == service)
                .ok_or_else(|| format!("{service} is not a virtual switch"))?
                .mac;
            let mac = mac_for(reg, item, Some(current))?;
            let vsw = get_mut(reg, name)
                .vsw
                .iter_mut()
                .find(|s| s.name == service)
                .expect("found");
            vsw.mac = mac;
            if let Some(dev) = item.property("dev_path").or(item.property("net-dev")) {
                vsw.net_dev = Some(dev.into());
            }
            vsw.pvid = pvid.unwrap_or(vsw.pvid);
            vsw.vid = vid.unwrap_or_else(|| vsw.vid.clone());
            vsw.mtu = mtu.unwrap_or(vsw.mtu);
            vsw.inter_vnet_link = inter_vnet_link.unwrap_or(vsw.inter_vnet_link);
            if let Some(mode) = item.property("mode") {
                vsw.mode = Some(mode.into()).filter(|m: &String| !m.is_empty());
            }
            if let Some(linkprop) = item.property("linkprop") {
                vsw.linkprop = Some(linkprop.into()).filter(|m: &String| !m.is_empty());
            }
        }
        _ => {
            own_service(reg, name, service)?;
            get(reg, name)?
                .vsw
                .iter()
                .find(|s| s.name == service)
                .ok_or_else(|| format!("{service} is not a virtual switch"))?;
            for other in reg.domains.values() {
                if let Some(net) = other.vnets.iter().find(|n| n.service == service) {
                    return Err(format!(
                        "The virtual switch {service} still serves vnet {} of {}",
                        net.name, other.name
                    ));
                }
            }
            let domain = get_mut(reg, name);
            let mac = domain
                .vsw
                .iter()
                .find(|s| s.name == service)
                .expect("found")
                .mac;
            domain.vsw.retain(|s| s.name != service);
            reg.macs.remove(&mac);
            reg.services.remove(service);
        }
    }
    reg.touch(name);
    Ok(Applied::default())
}

fn vnet(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    let domain = writable(reg, name)?;
    let item = item(ctx, content, "network")?;
    let net = required(ctx, item, "vnet_name")?;
    check_name("vnet", net, NAME_CHARS_MAX)?;
    let existing = domain.vnets.iter().find(|n| n.name == net).cloned();
    let pvid = pvid(item)?;
    let vid = item
        .property("vid")
        .map(|v| vlan_ids(Some(v)))
        .transpose()?;
    match (ctx.action, existing) {
        ("add-vnet", Some(_)) => return Err(format!("Vnet {net} already exists in {name}")),
        ("add-vnet", None) => {
            let service = required(ctx, item, "service_name")?;
            let is_vsw = reg
                .services
                .get(service)
                .and_then(|o| reg.domains.get(o))
                .is_some_and(|d| d.vsw.iter().any(|s| s.name == service));
            if !is_vsw {
                return Err(format!("The virtual switch {service} does not exist"));
            }
            let mac = mac_for(reg, item, None)?;
            let domain = get_mut(reg, name);
            let id = domain.next_device_id;
            domain.next_device_id += 1;
            domain.vnets.push(VNet {
                name: net.into(),
                service: service.into(),
                mac,
                pvid: pvid.unwrap_or(1),
                vid: vid.unwrap_or_default(),
                mode: item.property("mode").map(String::from),
                linkprop: item.property("linkprop").map(String::from),
                id,
            });
        }
        (_, None) => return Err(format!("Vnet {net} does not exist in {name}")),
        ("set-vnet", Some(old)) => {
            if let Some(service) = item.property("service_name")
                && service != old.service
            {
                return Err(format!(
                    "Vnet {net} cannot move from {} to {service}: remove it and add it again",
                    old.service
                ));
            }
            let mac = mac_for(reg, item, Some(old.mac))?;
            let vnet = get_mut(reg, name)
                .vnets
                .iter_mut()
                .find(|n| n.name == net)
                .expect("found");
            vnet.mac = mac;
            vnet.pvid = pvid.unwrap_or(vnet.pvid);
            vnet.vid = vid.unwrap_or_else(|| vnet.vid.clone());
            if let Some(mode) = item.property("mode") {
                vnet.mode = Some(mode.into()).filter(|m: &String| !m.is_empty());
            }
            if let Some(linkprop) = item.property("linkprop") {
                vnet.linkprop = Some(linkprop.into()).filter(|m: &String| !m.is_empty());
            }
        }
        (_, Some(old)) => {
            reg.macs.remove(&old.mac);
            get_mut(reg, name).vnets.retain(|n| n.name != net);
        }
    }
    reg.touch(name);
    Ok(Applied::default())
}

fn port(what: &str, text: Option<&str>) -> Result<Option<u16>, String> {
    text.map(|t| match t.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("Invalid {what} '{t}': expected 1 to 65535")),
    })
    .transpose()
}

fn vconscon(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    writable(reg, name)?;
    let item = item(ctx, content, "vcc")?;
    let service = service_name(ctx, item)?;
    let min = port("min_port", item.property("min_port"))?;
    let max = port("max_port", item.property("max_port"))?;
    let in_use: Vec<u16> = reg
        .console_ports
        .iter()
        .filter(|(s, _)| s == service)
        .map(|(_, p)| *p)
        .collect();
    let overlaps = |reg: &Registry, min: u16, max: u16| {
        reg.domains
            .values()
            .flat_map(|d| &d.vcc)
            .find(|v| v.name != service && v.min_port <= max && min <= v.max_port)
            .map(|v| v.name.clone())
    };
    match ctx.action {
        "add-vconscon" => {
            check_new_service(reg, service)?;
            let (Some(min), Some(max)) = (min, max) else {
                return Err("add-vconscon needs min_port and max_port".into());
            };
            if min > max {
                return Err(format!("Invalid port range {min}-{max}"));
            }
            if let Some(other) = overlaps(reg, min, max) {
                return Err(format!("Ports {min}-{max} overlap those of {other}"));
            }
            reg.services.insert(service.into(), name.into());
            get_mut(reg, name).vcc.push(Vcc {
                name: service.into(),
                min_port: min,
                max_port: max,
            });
        }
        "set-vconscon" => {
            own_service(reg, name, service)?;
            let vcc = get(reg, name)?
                .vcc
                .iter()
                .find(|v| v.name == service)
                .ok_or_else(|| format!("{service} is not a console concentrator"))?;
            let (min, max) = (min.unwrap_or(vcc.min_port), max.unwrap_or(vcc.max_port));
            if min > max {
                return Err(format!("Invalid port range {min}-{max}"));
            }
            if let Some(port) = in_use.iter().find(|p| !(min..=max).contains(*p)) {
                return Err(format!(
                    "Console port {port} of {service} is in use and outside {min}-{max}"
                ));
            }
            if let Some(other) = overlaps(reg, min, max) {
                return Err(format!("Ports {min}-{max} overlap those of {other}"));
            }
            let vcc = get_mut(reg, name)
                .vcc
                .iter_mut()
                .find(|v| v.name == service)
                .expect("found");
            vcc.min_port = min;
            vcc.max_port = max;
        }
        _ => {
            own_service(reg, name, service)?;
            get(reg, name)?
                .vcc
                .iter()
                .find(|v| v.name == service)
                .ok_or_else(|| format!("{service} is not a console concentrator"))?;
            if !in_use.is_empty() {
                return Err(format!(
                    "The console concentrator {service} serves bound domains' consoles"
                ));
            }
            if let Some(client) = reg
                .domains
                .values()
                .find(|d| d.console.service.as_deref() == Some(service))
            {
                return Err(format!("The console of {} names {service}", client.name));
            }
            get_mut(reg, name).vcc.retain(|v| v.name != service);
            reg.services.remove(service);
        }
    }
    reg.touch(name);
    Ok(Applied::default())
}

fn console_settings(reg: &Registry, item: &Item, mut console: Console) -> Result<Console, String> {
    if let Some(service) = item.property("service_name") {
        let is_vcc = reg
            .services
            .get(service)
            .and_then(|o| reg.domains.get(o))
            .is_some_and(|d| d.vcc.iter().any(|v| v.name == service));
        if !is_vcc {
            return Err(format!("The console concentrator {service} does not exist"));
        }
        console.service = Some(service.into());
    }
    if let Some(p) = port("console port", item.property("port"))? {
        console.port = Some(p);
    }
    if let Some(group) = item.property("group") {
        check_name("console group", group, NAME_CHARS_MAX)?;
        console.group = Some(group.into());
    }
    match item.property("enable-log") {
        None => {}
        Some("on") => console.enable_log = true,
        Some("off") => console.enable_log = false,
        Some(other) => return Err(format!("Invalid enable-log '{other}': expected on or off")),
    }
    Ok(console)
}

fn vconsole(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    let domain = writable(reg, name)?;
    let item = item(ctx, content, "console")?;
    if domain.state != DomainState::Inactive
        && (item.property("port").is_some() || item.property("service_name").is_some())
    {
        return Err(format!(
            "LDom {name} must be inactive to change its console port or service"
        ));
    }
    let console = console_settings(reg, item, domain.console.clone())?;
    get_mut(reg, name).console = console;
    reg.touch(name);
    Ok(Applied::default())
}

fn variable(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    let domain = writable(reg, name)?;
    let mut found = items(content, "var").peekable();
    if found.peek().is_none() {
        return Err(format!("{} needs a 'var' Item", ctx.action));
    }
    let mut changes = Vec::new();
    for item in found {
        let key = required(ctx, item, "name")?;
        if key.len() > NAME_CHARS_MAX || key.contains(['=', '\0']) {
            return Err(format!("Invalid variable name '{key}'"));
        }
        let exists = domain.variables.contains_key(key);
        match ctx.action {
            "add-variable" if exists => {
                return Err(format!("Variable {key} already exists in {name}"));
            }
            "remove-variable" if !exists => {
                return Err(format!("Variable {key} does not exist in {name}"));
            }
            "remove-variable" => changes.push((key.to_owned(), None)),
            _ => changes.push((
                key.to_owned(),
                Some(item.property("value").unwrap_or_default().to_owned()),
            )),
        }
    }
    let domain = get_mut(reg, name);
    for (key, value) in changes {
        match value {
            Some(v) => domain.variables.insert(key, v),
            None => domain.variables.remove(&key),
        };
    }
    reg.touch(name);
    Ok(Applied::default())
}

fn io(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    let domain = writable(reg, name)?;
    let asked = required(ctx, item(ctx, content, "physio_device")?, "name")?;
    let device = reg
        .machine
        .io_device(asked)
        .ok_or_else(|| format!("No I/O device named {asked} exists"))?
        .clone();
    let control_active = name == CONTROL_DOMAIN;
    if !control_active && domain.state != DomainState::Inactive {
        return Err(format!(
            "LDom {name} must be inactive to change its physical I/O"
        ));
    }
    let first = domain.reconf.is_none();
    let owns = domain.io.contains(&device.name);
    let owner = reg.io_owner.get(&device.name).cloned();
    if ctx.action == "add-io" {
        if let Some(owner) = owner {
            return Err(format!(
                "{} is owned by {owner}: remove it there first",
                device.name
            ));
        }
        if let Some(parent) = &device.parent
            && !reg.io_owner.contains_key(parent)
        {
            return Err(format!(
                "The root complex {parent} of {} must be owned by a root domain",
                device.name
            ));
        }
        reg.io_owner.insert(device.name.clone(), name.into());
        let domain = get_mut(reg, name);
        if control_active {
            domain
                .reconf
                .get_or_insert_with(DelayedReconf::default)
                .io_add
                .push(device.name);
            reg.touch(name);
            return Ok(if first {
                Applied::warn(DELAYED_RECONF_WARNING)
            } else {
                Applied::default()
            });
        }
        domain.io.push(device.name);
    } else {
        if owner.as_deref() != Some(name) || !owns {
            return Err(format!("{} is not owned by {name}", device.name));
        }
        if control_active {
            let reconf = get_mut(reg, name)
                .reconf
                .get_or_insert_with(DelayedReconf::default);
            if !reconf.io_remove.contains(&device.name) {
                reconf.io_remove.push(device.name);
            }
            reg.touch(name);
            return Ok(if first {
                Applied::warn(DELAYED_RECONF_WARNING)
            } else {
                Applied::default()
            });
        }
        reg.io_owner.remove(&device.name);
        get_mut(reg, name).io.retain(|d| *d != device.name);
    }
    reg.touch(name);
    Ok(Applied::default())
}

// ---- SP configurations ----

fn spconfig(reg: &mut Registry, ctx: &Ctx<'_>, data: &Data) -> Outcome {
    let envelope = data.envelope.as_ref();
    let sections = envelope.into_iter().flat_map(|e| {
        e.sections
            .iter()
            .chain(e.contents.iter().flat_map(|c| &c.sections))
    });
    let item = sections
        .flat_map(|s| &s.items)
        .find(|i| i.resource_type == "spconfig");
    let name = match item {
        Some(item) => required(ctx, item, "spconfig_name")?.to_owned(),
        None => ctx.cmd.arguments.first().cloned().ok_or_else(|| {
            format!(
                "{} needs a 'spconfig' Item naming the configuration",
                ctx.action
            )
        })?,
    };
    check_name("SP configuration", &name, SPCONFIG_CHARS_MAX)?;
    let exists = name == FACTORY_DEFAULT || reg.sp.saved.iter().any(|c| c.name == name);
    match ctx.action {
        "add-spconfig" => {
            if exists {
                return Err(format!("The SP configuration {name} already exists"));
            }
            if reg.sp.saved.len() + 1 >= reg.settings.spconfigs_max {
                return Err(format!(
                    "The service processor holds at most {} configurations: remove one first",
                    reg.settings.spconfigs_max
                ));
            }
            let domains = reg.domains.keys().cloned().collect();
            reg.sp.saved.push(SpConfig {
                name: name.clone(),
                domains,
                saved_at: ctx.now,
            });
            reg.sp.current = name.clone();
            reg.sp.next = None;
        }
        "set-spconfig" => {
            if !exists {
                return Err(format!("The SP configuration {name} does not exist"));
            }
            reg.sp.next = Some(name.clone());
        }
        _ => {
            if name == FACTORY_DEFAULT {
                return Err(format!(
                    "The {FACTORY_DEFAULT} configuration cannot be removed"
                ));
            }
            if !exists {
                return Err(format!("The SP configuration {name} does not exist"));
            }
            if reg.sp.current == name {
                return Err(format!(
                    "{name} is the current SP configuration: select another with set-spconfig and power-cycle first"
                ));
            }
            reg.sp.saved.retain(|c| c.name != name);
            if reg.sp.next.as_deref() == Some(name.as_str()) {
                reg.sp.next = None;
            }
        }
    }
    reg.touch_spconfigs();
    let section = crate::registry::listing::spconfig_section(reg, Some(&name));
    let event = Data {
        version: Some(crate::ldm::write::DATA_VERSION.into()),
        envelope: Some(crate::ldm::Envelope {
            contents: Vec::new(),
            sections: vec![section],
        }),
    };
    reg.publish(crate::ldm::event::EventClass::Hardware, ctx.action, &event);
    Ok(Applied::default())
}
