//! The actions of §3, one data object at a time. Every handler checks before it changes, so a
//! refused object leaves no trace; the reason is the ldm CLI's kind of sentence.

mod cpu;
mod devices;
mod domains;
mod memory;
mod services;
mod spconfig;

use cpu::*;
use devices::*;
use domains::*;
use memory::*;
use services::*;
use spconfig::*;

pub use memory::{finish_memdr, memdr_progress};

use crate::ldm::document::{Cmd, Content, Data, Item, Section};
use crate::registry::CONTROL_DOMAIN;
use crate::registry::machine::{MEMDR_GRANULE, MEMORY_GRANULE, blocks_from};
use crate::registry::model::{
    Console, DelayedReconf, Domain, DomainState, FACTORY_DEFAULT, MemDr, MemDrEnd, MemDrKind,
    SpConfig, VDisk, VNet, Vcc, Vds, Volume, Vsw,
};
use crate::registry::state::{Applied, Effect, Outcome, Registry};
use crate::registry::units::{
    NAME_CHARS_MAX, SPCONFIG_CHARS_MAX, check_name, format_mac, format_size, parse_mac,
    parse_number, parse_size, round_down, round_up,
};

/// Every action this daemon answers (migrate-domain has its own issue).
pub const ACTIONS: &[&str] = &[
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
