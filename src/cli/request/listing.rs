//! The documents of the list commands: list actions over named domains or every one, the
//! service owners the long forms need, list-devices `-a`, and what `list-constraints -x`
//! writes to recreate guests.

use super::{cmd, document, no_object, on_domain, single};
use crate::ldm::action::Action;
use crate::ldm::document::{Content, Data, Document, Envelope, Item, Section, SectionKind};
use crate::ldm::write::DATA_VERSION;

/// List actions, each over `domains` (one data object per domain, so that a missing one fails
/// alone) or over everything.
pub fn list(actions: &[Action], domains: &[String]) -> Document {
    let data = || {
        if domains.is_empty() {
            vec![no_object()]
        } else {
            domains.iter().map(|d| on_domain(d, Vec::new())).collect()
        }
    };
    document(actions.iter().map(|a| cmd(*a, &[], data())).collect())
}

/// `list` followed by a list-services over every domain: the long forms name the domain that
/// provides each service a listed domain uses (`vol1@primary-vds0` is served by `primary`).
pub fn list_with_service_owners(actions: &[Action], domains: &[String]) -> Document {
    let mut document = list(actions, domains);
    document
        .cmds
        .push(cmd(Action::ListServices, &[], vec![no_object()]));
    document
}

/// list-devices: free resources, or with `all` (`-a`) bound ones too, with their owners.
pub fn list_devices(all: bool) -> Document {
    let options: &[&str] = if all { &["-a"] } else { &[] };
    single(Action::ListDevices, options, no_object())
}

/// `ldm list-constraints -x`: what recreates the listed guests as list-constraints gave them,
/// sent back by `ldm add-domain -i`. add-domain takes a domain's own resources only, so the
/// document is, in order: an add-domain per guest; the services they provide (add-vds,
/// add-vdsdev, add-vsw, add-vcc); then their devices (add-vdisk, add-vnet, add-io), which may
/// use a service another listed guest provides. The daemon answers a document's cmds in
/// order. The control domain is left out: it exists on every machine and is not added.
pub fn recreate(contents: &[&Content]) -> Document {
    let on = |id: &str, items: Vec<Item>| Data {
        version: Some(DATA_VERSION.into()),
        envelope: Some(Envelope {
            contents: vec![Content {
                id: id.to_owned(),
                sections: vec![Section {
                    kind: SectionKind::ResourceAllocation,
                    items,
                }],
            }],
            sections: Vec::new(),
        }),
    };
    /// The action that adds an Item, and the phase it belongs to (0: the domain itself).
    fn adds(item: &Item) -> (u8, Action) {
        match item.resource_type.as_str() {
            "vds" => (1, Action::AddVdiskserver),
            "vds_volume" => (2, Action::AddVdiskserverdevice),
            "vsw" => (2, Action::AddVswitch),
            "vcc" => (2, Action::AddVconscon),
            "disk" => (3, Action::AddVdisk),
            "network" => (3, Action::AddVnet),
            "physio_device" => (3, Action::AddIo),
            _ => (0, Action::AddDomain),
        }
    }
    let guests: Vec<&&Content> = contents
        .iter()
        .filter(|c| c.id != crate::registry::CONTROL_DOMAIN)
        .collect();
    let items = |content: &Content| -> Vec<Item> {
        content
            .sections
            .iter()
            .flat_map(|s| s.items.clone())
            .collect()
    };
    let mut cmds = Vec::new();
    for content in &guests {
        let own: Vec<Item> = items(content)
            .into_iter()
            .filter(|i| adds(i).0 == 0)
            .collect();
        cmds.push(cmd(Action::AddDomain, &[], vec![on(&content.id, own)]));
    }
    for phase in 1..=3 {
        for content in &guests {
            for item in items(content).into_iter().filter(|i| adds(i).0 == phase) {
                let (_, action) = adds(&item);
                cmds.push(cmd(action, &[], vec![on(&content.id, vec![item])]));
            }
        }
    }
    document(cmds)
}

/// A list action over no domain in particular (list-devices, list-spconfig, list-services).
pub fn list_all(action: Action) -> Document {
    single(action, &[], no_object())
}
