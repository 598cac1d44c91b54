//! Consoles and their concentrators, variables, and physical I/O.

use super::*;

pub(super) fn port(what: &str, text: Option<&str>) -> Result<Option<u16>, String> {
    text.map(|t| match t.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("Invalid {what} '{t}': expected 1 to 65535")),
    })
    .transpose()
}

pub(super) fn vconscon(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
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
        Action::AddVconscon => {
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
            get_mut(reg, name)?.vcc.push(Vcc {
                name: service.into(),
                min_port: min,
                max_port: max,
            });
        }
        Action::SetVconscon => {
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
            let vcc = get_mut(reg, name)?
                .vcc
                .iter_mut()
                .find(|v| v.name == service)
                .ok_or_else(|| format!("{service} is not a virtual console concentrator"))?;
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
            get_mut(reg, name)?.vcc.retain(|v| v.name != service);
            reg.services.remove(service);
        }
    }
    reg.touch(name);
    Ok(Applied::default())
}

pub(super) fn console_settings(
    reg: &Registry,
    item: &Item,
    mut console: Console,
) -> Result<Console, String> {
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

pub(super) fn vconsole(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
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
    get_mut(reg, name)?.console = console;
    reg.touch(name);
    Ok(Applied::default())
}

pub(super) fn variable(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
    let name = content.id.as_str();
    let mut variables = writable(reg, name)?.variables.clone();
    let mut found = items(content, "var").peekable();
    if found.peek().is_none() {
        return Err(format!("{} needs a 'var' Item", ctx.action));
    }
    for item in found {
        if ctx.action == Action::RemoveVariable {
            let key = variable_name(ctx, item)?;
            if variables.remove(key).is_none() {
                return Err(format!("Variable {key} does not exist in {name}"));
            }
            continue;
        }
        let (key, value) = variable_setting(reg, ctx, item)?;
        let previous = variables.insert(key.to_owned(), value.to_owned());
        if ctx.action == Action::AddVariable && previous.is_some() {
            return Err(format!("Variable {key} already exists in {name}"));
        }
    }
    check_variable_count(reg, name, variables.len())?;
    get_mut(reg, name)?.variables = variables;
    reg.touch(name);
    Ok(Applied::default())
}

/// A variable's name, checked.
pub(super) fn variable_name<'i>(ctx: &Ctx<'_>, item: &'i Item) -> Result<&'i str, String> {
    let key = required(ctx, item, "name")?;
    if key.chars().count() > NAME_CHARS_MAX || key.contains(['=', '\0']) {
        return Err(format!(
            "Invalid variable name '{}'",
            key.chars().take(64).collect::<String>()
        ));
    }
    Ok(key)
}

/// A variable's name and value, checked against the limits.
pub(super) fn variable_setting<'i>(
    reg: &mut Registry,
    ctx: &Ctx<'_>,
    item: &'i Item,
) -> Result<(&'i str, &'i str), String> {
    let key = variable_name(ctx, item)?;
    let value = item.property("value").unwrap_or_default();
    let max = reg.settings.limits.variable_value_bytes_max;
    if value.len() > max {
        reg.limit_hit(crate::limits::Limit::VariableValueBytes);
        return Err(format!(
            "The value of variable {key} is {} bytes; limits.variable_value_bytes_max allows {max}",
            value.len()
        ));
    }
    Ok((key, value))
}

/// A domain may hold at most `variables_per_domain_max` variables.
pub(super) fn check_variable_count(
    reg: &mut Registry,
    name: &str,
    count: usize,
) -> Result<(), String> {
    let max = reg.settings.limits.variables_per_domain_max;
    if count > max {
        reg.limit_hit(crate::limits::Limit::VariablesPerDomain);
        return Err(format!(
            "LDom {name} would have {count} variables; limits.variables_per_domain_max allows {max}"
        ));
    }
    Ok(())
}

pub(super) fn io(reg: &mut Registry, ctx: &Ctx<'_>, content: &Content) -> Outcome {
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
    if ctx.action == Action::AddIo {
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
        let domain = get_mut(reg, name)?;
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
            let reconf = get_mut(reg, name)?
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
        get_mut(reg, name)?.io.retain(|d| *d != device.name);
    }
    reg.touch(name);
    Ok(Applied::default())
}
