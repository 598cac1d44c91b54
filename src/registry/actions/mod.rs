//! The actions of §3, one data object at a time. Every handler checks before it changes, so a
//! refused object leaves no trace; the reason is the ldm CLI's kind of sentence.

mod cpu;
mod devices;
mod domain_info;
mod domains;
mod memory;
pub mod migration;
mod services;
mod spconfig;

use cpu::*;
use devices::*;
use domain_info::*;
use domains::*;
use memory::*;
use services::*;
use spconfig::*;

pub use memory::{finish_memdr, memdr_progress};

use std::borrow::Cow;

use crate::ldm::action::{Action, ActionName};
use crate::ldm::document::{Cmd, Content, Data, Item, Section};
use crate::ldm::event::{DOMAIN_RESET, EventClass};
use crate::registry::CONTROL_DOMAIN;
use crate::registry::listing;
use crate::registry::machine::{MEMDR_GRANULE, MEMORY_BYTES_MAX, MEMORY_GRANULE, blocks_from};
use crate::registry::model::{
    Console, DelayedReconf, Domain, DomainState, FACTORY_DEFAULT, MemDr, MemDrEnd, MemDrKind,
    SpConfig, VDisk, VNet, Vcc, Vds, Volume, Vsw,
};
use crate::registry::state::{Applied, Effect, Outcome, Registry};
use crate::registry::units::{
    NAME_CHARS_MAX, SPCONFIG_CHARS_MAX, check_name, format_mac, format_size, parse_mac,
    parse_number, parse_size, round_down, round_up,
};

/// The cmd-level refusal of an action this daemon does not answer, or the action it answers.
pub fn check_action(name: &ActionName) -> Result<Action, String> {
    match name {
        ActionName::Unknown(name) => Err(format!("Unknown action '{name}'")),
        ActionName::Known(action) => Ok(*action),
    }
}

/// Applies `action` to one data object of `cmd`.
///
/// The one `match` over every action: a new [`Action`] does not compile until it says here
/// which rule answers it and where its object is named (a domain's Content; for services also
/// the Envelope, meaning the control domain).
pub fn apply(reg: &mut Registry, action: Action, cmd: &Cmd, data: &Data, now: u64) -> Outcome {
    match data.version.as_deref() {
        Some(v) if v.starts_with("3.") => {}
        Some(v) => return Err(format!("Unsupported data version '{v}' (expected 3.0)")),
        None => return Err("The data element needs a version attribute (3.0)".into()),
    }
    let ctx = Ctx { action, cmd, now };
    let all = ctx.flag(&["-a", "all"]);
    match action {
        Action::ListDomain => listing::list_domain(reg, data, now),
        Action::ListConstraints => listing::list_constraints(reg, data),
        Action::ListBindings => listing::list_bindings(reg, data),
        Action::ListServices => listing::list_services(reg, data),
        Action::ListVariable => listing::list_variable(reg, data),
        Action::ListDevices => listing::list_devices(reg, &cmd.options, data),
        Action::ListSpconfig => listing::list_spconfig(reg, data),
        // The subscription itself is changed by the run, in order with the replies.
        Action::RegDomainEvents
        | Action::UnregDomainEvents
        | Action::RegResourceEvents
        | Action::UnregResourceEvents
        | Action::RegHardwareEvents
        | Action::UnregHardwareEvents
        | Action::RegAllEvents
        | Action::UnregAllEvents => Ok(Applied::default()),
        Action::RemoveDomain if all => remove_all_domains(reg, &ctx),
        Action::StartDomain | Action::StopDomain if all => all_domains(reg, &ctx),
        Action::AddDomain => on_domain(reg, &ctx, data, add_domain),
        Action::RemoveDomain => on_domain(reg, &ctx, data, |reg, _, c| remove_domain(reg, &c.id)),
        Action::SetDomain => on_domain(reg, &ctx, data, set_domain),
        Action::BindDomain => on_domain(reg, &ctx, data, |reg, _, c| bind_domain(reg, &c.id)),
        Action::UnbindDomain => on_domain(reg, &ctx, data, |reg, _, c| unbind_domain(reg, &c.id)),
        Action::StartDomain => on_domain(reg, &ctx, data, |reg, ctx, c| {
            start_domain(reg, &c.id, ctx.now)
        }),
        Action::StopDomain => {
            on_domain(reg, &ctx, data, |reg, ctx, c| stop_domain(reg, ctx, &c.id))
        }
        Action::PanicDomain => on_domain(reg, &ctx, data, |reg, ctx, c| {
            panic_domain(reg, &c.id, ctx.now)
        }),
        Action::AddVcpu | Action::SetVcpu | Action::RemoveVcpu => on_domain(reg, &ctx, data, vcpu),
        Action::AddMau | Action::SetMau | Action::RemoveMau => on_domain(reg, &ctx, data, mau),
        Action::AddMemory | Action::SetMemory | Action::RemoveMemory => {
            on_domain(reg, &ctx, data, memory)
        }
        Action::AddVdiskserver | Action::RemoveVdiskserver => on_service(reg, &ctx, data, vds),
        Action::AddVdiskserverdevice | Action::RemoveVdiskserverdevice => {
            on_service(reg, &ctx, data, vds_volume)
        }
        Action::AddVdisk | Action::RemoveVdisk => on_domain(reg, &ctx, data, vdisk),
        Action::AddVswitch | Action::SetVswitch | Action::RemoveVswitch => {
            on_service(reg, &ctx, data, vswitch)
        }
        Action::AddVnet | Action::SetVnet | Action::RemoveVnet => on_domain(reg, &ctx, data, vnet),
        Action::AddVconscon | Action::SetVconscon | Action::RemoveVconscon => {
            on_service(reg, &ctx, data, vconscon)
        }
        Action::SetVconsole => on_domain(reg, &ctx, data, vconsole),
        Action::AddVariable | Action::SetVariable | Action::RemoveVariable => {
            on_domain(reg, &ctx, data, variable)
        }
        Action::AddIo => on_service(reg, &ctx, data, io),
        Action::RemoveIo => on_domain(reg, &ctx, data, io),
        Action::AddSpconfig | Action::SetSpconfig | Action::RemoveSpconfig => {
            spconfig(reg, &ctx, data)
        }
        Action::CancelOperation => on_domain(reg, &ctx, data, cancel_operation),
        Action::RemoveReconf => on_domain(reg, &ctx, data, |reg, _, c| {
            remove_reconf(reg, &c.id).map(|()| Applied::default())
        }),
        Action::MigrateDomain => migration::migrate_domain(reg, &ctx, data, now),
        Action::MigrateCheck
        | Action::MigrateReserve
        | Action::MigrateTransfer
        | Action::MigrateCommit
        | Action::MigrateResolve
        | Action::MigrateForget => migration::internal(reg, action, cmd, data, now),
    }
}

/// Applies `change` to the one domain `data` names, and publishes it (§5) unless it waits for
/// a long operation, which publishes what it did when it ends.
fn on_domain(
    reg: &mut Registry,
    ctx: &Ctx<'_>,
    data: &Data,
    change: impl FnOnce(&mut Registry, &Ctx<'_>, &Content) -> Outcome,
) -> Outcome {
    let content = named_domain(ctx, data, false)?;
    apply_and_publish(reg, ctx, content, change)
}

/// [`on_domain`] for a service, which may also be named outside any Content: it then belongs to
/// the control domain (§4, "Content or Envelope").
fn on_service(
    reg: &mut Registry,
    ctx: &Ctx<'_>,
    data: &Data,
    change: impl FnOnce(&mut Registry, &Ctx<'_>, &Content) -> Outcome,
) -> Outcome {
    let content = named_domain(ctx, data, true)?;
    apply_and_publish(reg, ctx, content, change)
}

/// The tail of [`on_domain`] and [`on_service`]: the change, then its event.
fn apply_and_publish(
    reg: &mut Registry,
    ctx: &Ctx<'_>,
    content: Cow<'_, Content>,
    change: impl FnOnce(&mut Registry, &Ctx<'_>, &Content) -> Outcome,
) -> Outcome {
    if grows_constraints(ctx.action) {
        check_constraints_room(reg, &content)?;
    }
    let outcome = change(reg, ctx, &content)?;
    if outcome.waiting.is_none() {
        reg.publish_content(ctx.action, content.into_owned());
    }
    Ok(outcome)
}

/// What a one-domain list-constraints reply holds beside the domain's own object: the root
/// with its namespace declarations, the cmd, and the response elements.
const CONSTRAINTS_REPLY_OVERHEAD: usize = 1024;
/// What one Item can gain between request and listing: the values the registry fills in (a
/// MAC address, a device id, defaults).
const ITEM_GROWTH_MAX: usize = 512;

/// Whether an action can make a domain's constraints longer (it adds or sets strings or
/// items). Every action is listed, so that a new one must say.
fn grows_constraints(action: Action) -> bool {
    match action {
        Action::AddDomain
        | Action::SetDomain
        | Action::AddVdiskserver
        | Action::AddVdiskserverdevice
        | Action::AddVdisk
        | Action::AddVswitch
        | Action::SetVswitch
        | Action::AddVnet
        | Action::SetVnet
        | Action::AddVconscon
        | Action::SetVconscon
        | Action::SetVconsole
        | Action::AddVariable
        | Action::SetVariable
        | Action::AddIo => true,
        // Counts and sizes (at most 20 digits), lifecycle, removals, listings, events.
        Action::RemoveDomain
        | Action::ListDomain
        | Action::BindDomain
        | Action::UnbindDomain
        | Action::StartDomain
        | Action::StopDomain
        | Action::PanicDomain
        | Action::AddVcpu
        | Action::SetVcpu
        | Action::RemoveVcpu
        | Action::AddMau
        | Action::SetMau
        | Action::RemoveMau
        | Action::AddMemory
        | Action::SetMemory
        | Action::RemoveMemory
        | Action::RemoveVdiskserver
        | Action::RemoveVdiskserverdevice
        | Action::RemoveVdisk
        | Action::RemoveVswitch
        | Action::RemoveVnet
        | Action::RemoveVconscon
        | Action::RemoveVariable
        | Action::ListVariable
        | Action::RemoveIo
        | Action::AddSpconfig
        | Action::SetSpconfig
        | Action::RemoveSpconfig
        | Action::ListSpconfig
        | Action::ListBindings
        | Action::ListConstraints
        | Action::ListDevices
        | Action::ListServices
        | Action::MigrateDomain
        | Action::MigrateCheck
        | Action::MigrateReserve
        | Action::MigrateTransfer
        | Action::MigrateCommit
        | Action::MigrateResolve
        | Action::MigrateForget
        | Action::CancelOperation
        | Action::RemoveReconf
        | Action::RegDomainEvents
        | Action::UnregDomainEvents
        | Action::RegResourceEvents
        | Action::UnregResourceEvents
        | Action::RegHardwareEvents
        | Action::UnregHardwareEvents
        | Action::RegAllEvents
        | Action::UnregAllEvents => false,
    }
}

/// One domain's list-constraints must always fit the largest request ldmd accepts, so that it
/// can be sent back as add-domain (§4): a change that could outgrow it is refused before it is
/// made. Its growth is bounded by the size of the request's own object plus what the registry
/// fills in per Item.
fn check_constraints_room(reg: &mut Registry, content: &Content) -> Result<(), String> {
    let budget = reg
        .settings
        .limits
        .stanza_bytes_max
        .saturating_sub(CONSTRAINTS_REPLY_OVERHEAD);
    let mut scratch = std::mem::take(&mut reg.scratch);
    let current = reg
        .domains
        .get(&content.id)
        .map_or(0, |d| listing::constraints_len(reg, d, &mut scratch));
    let items = content
        .sections
        .iter()
        .map(|s| s.items.len())
        .sum::<usize>();
    let growth = crate::ldm::write::content_len(content, &mut scratch)
        .saturating_add(items.saturating_mul(ITEM_GROWTH_MAX));
    reg.scratch = scratch;
    if current.saturating_add(growth) > budget {
        reg.limit_hit(crate::limits::Limit::StanzaBytes);
        return Err(format!(
            "LDom {}'s constraints would outgrow limits.stanza_bytes_max ({} bytes), and its list-constraints could no longer be sent back as a request: the change is refused",
            content.id, reg.settings.limits.stanza_bytes_max
        ));
    }
    Ok(())
}

/// The one domain a data object names: its Content, or with `services`, the control domain
/// when the object is only Envelope-level sections.
fn named_domain<'d>(
    ctx: &Ctx<'_>,
    data: &'d Data,
    services: bool,
) -> Result<Cow<'d, Content>, String> {
    let envelope = data.envelope.as_ref();
    let contents = envelope.map_or(&[][..], |e| &e.contents[..]);
    let sections = envelope.map_or(&[][..], |e| &e.sections[..]);
    match (contents, sections) {
        ([content], _) => Ok(Cow::Borrowed(content)),
        ([], [_, ..]) if services => Ok(Cow::Owned(Content {
            id: CONTROL_DOMAIN.into(),
            sections: sections.to_vec(),
        })),
        ([], _) => Err(format!("{} needs a Content naming the domain", ctx.action)),
        _ => Err(format!(
            "{} takes one domain per data object; this one names {}",
            ctx.action,
            contents.len()
        )),
    }
}

/// What an add-, set- or remove- action does to a count or a size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Add,
    Set,
    Remove,
}

struct Ctx<'a> {
    action: Action,
    cmd: &'a Cmd,
    now: u64,
}

impl Ctx<'_> {
    /// `add-*` adds (add-domain too: its constraints start from nothing), `remove-*` removes,
    /// and every other action sets.
    fn change(&self) -> Change {
        let name = self.action.as_str();
        if name.starts_with("add-") {
            Change::Add
        } else if name.starts_with("remove-") {
            Change::Remove
        } else {
            Change::Set
        }
    }

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

/// The domain `name`, to change. Handlers check before they change, so a missing domain here
/// is a broken invariant: it is reported as a refusal, never a panic.
fn get_mut<'r>(reg: &'r mut Registry, name: &str) -> Result<&'r mut Domain, String> {
    reg.domains.get_mut(name).ok_or_else(|| not_found(name))
}

/// The binding of `name`, which the caller found bound.
fn bound_mut<'r>(
    reg: &'r mut Registry,
    name: &str,
) -> Result<&'r mut crate::registry::model::Binding, String> {
    get_mut(reg, name)?
        .binding
        .as_mut()
        .ok_or_else(|| format!("LDom {name} is not bound"))
}

/// A domain that may be changed now: it exists, is not migrating, runs no memory DR, and is
/// not locked out by the control domain's delayed reconfiguration.
fn writable<'r>(reg: &'r Registry, name: &str) -> Result<&'r Domain, String> {
    let domain = get(reg, name)?;
    if let Some(migration) = reg.migration_of(name) {
        return Err(match migration.outgoing() {
            Some(_) => format!(
                "A migration of {name} to {} is in progress: {name} cannot be changed until it ends (or cancel it with cancel-operation migration)",
                migration.peer
            ),
            None => format!(
                "LDom {name} is being migrated to this machine: it cannot be changed until the migration ends"
            ),
        });
    }
    if domain.memdr.is_some() {
        return Err(format!(
            "A memory dynamic reconfiguration is in progress on {name}: wait for it, or cancel it with cancel-operation memdr"
        ));
    }
    reg.check_not_in_delayed_reconf(name)?;
    Ok(domain)
}
