//! SP configurations.

use super::*;

pub(super) fn spconfig(reg: &mut Registry, ctx: &Ctx<'_>, data: &Data) -> Outcome {
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
        Action::AddSpconfig => {
            if exists {
                return Err(format!("The SP configuration {name} already exists"));
            }
            if reg.sp.saved.len().saturating_add(1) >= reg.settings.spconfigs_max {
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
        Action::SetSpconfig => {
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
    reg.publish(EventClass::Hardware, ctx.action.event_name(), &event);
    Ok(Applied::default())
}
