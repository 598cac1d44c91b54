//! Request documents built from the words of an `ldm` command line.
//!
//! Each builder takes the operands as the operator typed them (`8`, `4G`, `vol1@primary-vds0`,
//! `net-dev=net0`) and writes the document the daemon's registry accepts for that action:
//! the item types and property keys of ldm-xml-interface.md §4, one data object per domain so
//! that each is judged on its own. What can be checked without the daemon is checked here,
//! with the daemon's own wording where it has one (sizes, counts), so a typo never costs a
//! round trip and reads the same either way.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

use std::fmt;

use crate::ldm::action::{Action, ActionName};
use crate::ldm::document::SectionKind;
use crate::ldm::document::{Cmd, Content, Data, Document, Envelope, Item, Property, Section};
use crate::ldm::write::DATA_VERSION;
use crate::registry::units::{parse_number, parse_size};
use crate::xml::is_xml_char;

mod listing;

pub use listing::{list, list_all, list_devices, list_with_service_owners, recreate};

/// The `LDM_interface` version the client writes (the daemon echoes it).
pub const REQUEST_VERSION: &str = "1.3";

/// A command line the client can refuse before talking to the daemon (exit status 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage(message: impl Into<String>) -> UsageError {
    UsageError(message.into())
}

/// Refuses text that XML 1.0 cannot carry, literally or by reference: C0 control characters
/// other than tab, LF and CR, and U+FFFE and U+FFFF. The daemon would end the whole stream on
/// such a document instead of answering it. `what` says what the text is (`operand`,
/// `--domain`), and the text is shown escaped so that the message stays on one line.
pub fn check_xml_text(what: &str, text: &str) -> Result<(), UsageError> {
    match text.chars().find(|c| !is_xml_char(*c)) {
        None => Ok(()),
        Some(c) => Err(usage(format!(
            "{what} '{}' contains {} (U+{:04X}) that XML 1.0 forbids",
            text.escape_debug(),
            if c.is_control() {
                "a control character"
            } else {
                "a non-character"
            },
            u32::from(c)
        ))),
    }
}

/// Every text of a request document that came from the command line, checked with
/// [`check_xml_text`].
pub fn check_characters(document: &Document) -> Result<(), UsageError> {
    fn check_item(item: &Item) -> Result<(), UsageError> {
        let texts = [&item.resource_type]
            .into_iter()
            .chain(&item.allocation_units)
            .chain(&item.address)
            .chain(&item.uuid)
            .chain(item.properties.iter().flat_map(|p| [&p.key, &p.value]));
        for text in texts {
            check_xml_text("operand", text)?;
        }
        item.bindings
            .iter()
            .flat_map(|b| &b.items)
            .try_for_each(check_item)
    }
    for cmd in &document.cmds {
        let words = cmd.options.iter().chain(&cmd.arguments).map(String::as_str);
        for text in cmd.action.iter().map(ActionName::as_str).chain(words) {
            check_xml_text("operand", text)?;
        }
        for envelope in cmd.data.iter().filter_map(|d| d.envelope.as_ref()) {
            for content in &envelope.contents {
                check_xml_text("operand", &content.id)?;
            }
            let sections = envelope
                .sections
                .iter()
                .chain(envelope.contents.iter().flat_map(|c| &c.sections));
            sections.flat_map(|s| &s.items).try_for_each(check_item)?;
        }
    }
    Ok(())
}

/// Where a `key=value` operand goes in its Item.
#[derive(Clone, Copy, Debug)]
enum Field {
    /// `gprop:GenericProperty key=...`
    Prop(&'static str),
    /// `rasd:Address` (a MAC address).
    Address,
}

/// `key=value` operands of add-domain and set-domain.
const DOMAIN_FIELDS: &[(&str, Field)] = &[
    ("mac-addr", Field::Address),
    ("hostid", Field::Prop("hostid")),
    ("failure-policy", Field::Prop("failure-policy")),
    ("extended-mapin-space", Field::Prop("extended-mapin-space")),
    ("master", Field::Prop("master")),
    ("perf-counters", Field::Prop("perf-counters")),
    ("rc-add-policy", Field::Prop("rc-add-policy")),
];

const VSW_FIELDS: &[(&str, Field)] = &[
    ("mac-addr", Field::Address),
    ("net-dev", Field::Prop("dev_path")),
    ("default-vlan-id", Field::Prop("default-vlan-id")),
    ("pvid", Field::Prop("pvid")),
    ("vid", Field::Prop("vid")),
    ("mtu", Field::Prop("mtu")),
    ("mode", Field::Prop("mode")),
    ("linkprop", Field::Prop("linkprop")),
    ("inter-vnet-link", Field::Prop("inter_vnet_link")),
];

const VNET_FIELDS: &[(&str, Field)] = &[
    ("mac-addr", Field::Address),
    ("mode", Field::Prop("mode")),
    ("pvid", Field::Prop("pvid")),
    ("vid", Field::Prop("vid")),
    ("linkprop", Field::Prop("linkprop")),
];

const VDSDEV_FIELDS: &[(&str, Field)] = &[
    ("options", Field::Prop("vol_opts")),
    ("mpgroup", Field::Prop("mpgroup")),
];

const VDISK_FIELDS: &[(&str, Field)] = &[("timeout", Field::Prop("timeout"))];

const VCONS_FIELDS: &[(&str, Field)] = &[
    ("port", Field::Prop("port")),
    ("group", Field::Prop("group")),
    ("service", Field::Prop("service_name")),
    ("log", Field::Prop("enable-log")),
];

/// The event classes `ldm events` can subscribe to, and the action that subscribes to each.
pub const EVENT_CLASSES: &[(&str, Action)] = &[
    ("all", Action::RegAllEvents),
    ("domain", Action::RegDomainEvents),
    ("resource", Action::RegResourceEvents),
    ("hardware", Action::RegHardwareEvents),
];

/// A document of `cmds`.
pub fn document(cmds: Vec<Cmd>) -> Document {
    Document {
        version: Some(REQUEST_VERSION.into()),
        cmds,
        malformed: None,
    }
}

fn cmd(action: Action, options: &[&str], data: Vec<Data>) -> Cmd {
    Cmd {
        action: Some(action.into()),
        options: options.iter().map(|o| (*o).to_owned()).collect(),
        data,
        ..Cmd::default()
    }
}

/// One command on one data object.
fn single(action: Action, options: &[&str], data: Data) -> Document {
    document(vec![cmd(action, options, vec![data])])
}

/// `<data version="3.0"/>`: every domain, or the stream itself.
fn no_object() -> Data {
    Data {
        version: Some(DATA_VERSION.into()),
        envelope: None,
    }
}

fn section(items: Vec<Item>) -> Vec<Section> {
    if items.is_empty() {
        return Vec::new();
    }
    vec![Section {
        kind: SectionKind::ResourceAllocation,
        items,
    }]
}

/// A data object naming `domain`, with `items` in its resource allocation section.
fn on_domain(domain: &str, items: Vec<Item>) -> Data {
    Data {
        version: Some(DATA_VERSION.into()),
        envelope: Some(Envelope {
            contents: vec![Content {
                id: domain.into(),
                sections: section(items),
            }],
            sections: Vec::new(),
        }),
    }
}

/// A service object: inside its owner's Content when the owner is known, else in an
/// Envelope-level section, which the daemon reads as the control domain's (§4, "Content or
/// Envelope").
fn on_service(owner: Option<&str>, item: Item) -> Data {
    match owner {
        Some(owner) => on_domain(owner, vec![item]),
        None => Data {
            version: Some(DATA_VERSION.into()),
            envelope: Some(Envelope {
                contents: Vec::new(),
                sections: section(vec![item]),
            }),
        },
    }
}

fn item(resource: &str) -> Item {
    Item {
        resource_type: resource.into(),
        ..Item::default()
    }
}

fn with_units(resource: &str, units: &str) -> Item {
    Item {
        allocation_units: Some(units.into()),
        ..item(resource)
    }
}

fn with_props(resource: &str, props: &[(&str, &str)]) -> Item {
    let mut item = item(resource);
    for (key, value) in props {
        push(&mut item, key, value);
    }
    item
}

fn push(item: &mut Item, key: &str, value: &str) {
    item.properties.push(Property {
        key: key.into(),
        value: value.into(),
    });
}

/// Adds `key=value` operands to `item`, refusing keys the subcommand does not take.
fn add_fields(
    item: &mut Item,
    subcommand: &str,
    fields: &[(&str, Field)],
    operands: &[String],
) -> Result<(), UsageError> {
    for operand in operands {
        let (key, value) = operand.split_once('=').ok_or_else(|| {
            usage(format!(
                "{subcommand}: expected property=value, got '{operand}'"
            ))
        })?;
        let field = fields
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, field)| *field)
            .ok_or_else(|| {
                let known: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
                usage(format!(
                    "{subcommand}: unknown property '{key}' (expected {})",
                    known.join(", ")
                ))
            })?;
        match field {
            Field::Address => item.address = Some(value.into()),
            Field::Prop(prop) => push(item, prop, value),
        }
    }
    Ok(())
}

/// `vol1@primary-vds0` → (`vol1`, `primary-vds0`).
pub fn volume_at_service(operand: &str) -> Result<(&str, &str), UsageError> {
    match operand.split_once('@') {
        Some((volume, service)) if !volume.is_empty() && !service.is_empty() => {
            Ok((volume, service))
        }
        _ => Err(usage(format!(
            "expected volume-name@service-name, got '{operand}'"
        ))),
    }
}

/// A whole number of CPUs, cores or crypto units, checked as the daemon would.
fn count(what: &str, text: &str) -> Result<String, UsageError> {
    parse_number::<u32>(what, text)
        .map(|n| n.to_string())
        .map_err(UsageError)
}

/// `add-domain [prop=value...] NAME...`: properties go with a single domain only.
pub fn add_domain(names: &[String], props: &[String]) -> Result<Document, UsageError> {
    if names.len() > 1 && !props.is_empty() {
        return Err(usage(
            "add-domain: properties can be given for one domain at a time",
        ));
    }
    let mut info = item("ldom_info");
    // `uuid=` is taken at creation only, so it is not among the fields set-domain shares.
    let (uuids, props): (Vec<&String>, Vec<&String>) =
        props.iter().partition(|p| p.starts_with("uuid="));
    if let Some(uuid) = uuids.last() {
        info.uuid = uuid.strip_prefix("uuid=").map(str::to_owned);
    }
    let props: Vec<String> = props.into_iter().cloned().collect();
    add_fields(&mut info, "add-domain", DOMAIN_FIELDS, &props)?;
    let data = names
        .iter()
        .map(|name| on_domain(name, vec![info.clone()]))
        .collect();
    Ok(document(vec![cmd(Action::AddDomain, &[], data)]))
}

/// `set-domain prop=value... NAME`
pub fn set_domain(name: &str, props: &[String]) -> Result<Document, UsageError> {
    if props.is_empty() {
        return Err(usage("set-domain: give at least one property=value"));
    }
    let mut info = item("ldom_info");
    add_fields(&mut info, "set-domain", DOMAIN_FIELDS, props)?;
    Ok(single(Action::SetDomain, &[], on_domain(name, vec![info])))
}

/// A lifecycle action (remove-, bind-, unbind-, start-, stop-, panic-domain) on `names`, or
/// with `-a` on every domain. `options` are the wire options (`-f`, `-r`).
pub fn on_domains(action: Action, names: &[String], all: bool, options: &[&str]) -> Document {
    let mut options = options.to_vec();
    let data = if all {
        options.insert(0, "-a");
        vec![no_object()]
    } else {
        names.iter().map(|n| on_domain(n, Vec::new())).collect()
    };
    document(vec![cmd(action, &options, data)])
}

/// add-/set-/remove-vcpu `N DOMAIN`; with `cores`, N whole cores (add-core, `-c`).
pub fn vcpu(
    action: Action,
    number: &str,
    domain: &str,
    cores: bool,
) -> Result<Document, UsageError> {
    let item = if cores {
        let n = count("number of whole cores", number)?;
        with_props("cpu", &[("wcore", &n)])
    } else {
        with_units("cpu", &count("number of virtual CPUs", number)?)
    };
    Ok(single(action, &[], on_domain(domain, vec![item])))
}

/// add-/set-/remove-mau `N DOMAIN` (the ldm CLI's crypto).
pub fn mau(action: Action, number: &str, domain: &str) -> Result<Document, UsageError> {
    let item = with_units("mau", &count("number of crypto units", number)?);
    Ok(single(action, &[], on_domain(domain, vec![item])))
}

/// add-/set-/remove-memory `SIZE DOMAIN`, the size checked here with the daemon's own rule.
pub fn memory(
    action: Action,
    size: &str,
    domain: &str,
    auto_adjust: bool,
) -> Result<Document, UsageError> {
    parse_size(size).map_err(UsageError)?;
    let options: &[&str] = if auto_adjust { &["auto-adj"] } else { &[] };
    let item = with_units("memory", size.trim());
    Ok(single(action, options, on_domain(domain, vec![item])))
}

/// add-vds `SERVICE DOMAIN` / remove-vds `SERVICE` (owner looked up by the caller).
pub fn vds(action: Action, service: &str, owner: Option<&str>) -> Document {
    let item = with_props("vds", &[("service_name", service)]);
    single(action, &[], on_service(owner, item))
}

/// add-vdsdev `[-f] [options=..] [mpgroup=..] BACKEND VOLUME@SERVICE`.
pub fn add_vdsdev(
    backend: &str,
    volume: &str,
    props: &[String],
    force: bool,
    owner: Option<&str>,
) -> Result<Document, UsageError> {
    let (volume, service) = volume_at_service(volume)?;
    let mut item = with_props(
        "vds_volume",
        &[
            ("vol_name", volume),
            ("service_name", service),
            ("block_dev", backend),
        ],
    );
    add_fields(&mut item, "add-vdsdev", VDSDEV_FIELDS, props)?;
    let options: &[&str] = if force { &["-f"] } else { &[] };
    Ok(single(
        Action::AddVdiskserverdevice,
        options,
        on_service(owner, item),
    ))
}

/// remove-vdsdev `VOLUME@SERVICE`.
pub fn remove_vdsdev(volume: &str, owner: Option<&str>) -> Result<Document, UsageError> {
    let (volume, service) = volume_at_service(volume)?;
    let item = with_props(
        "vds_volume",
        &[("vol_name", volume), ("service_name", service)],
    );
    Ok(single(
        Action::RemoveVdiskserverdevice,
        &[],
        on_service(owner, item),
    ))
}

/// add-vdisk `[timeout=..] DISK VOLUME@SERVICE DOMAIN`.
pub fn add_vdisk(
    disk: &str,
    volume: &str,
    domain: &str,
    props: &[String],
) -> Result<Document, UsageError> {
    let (volume, service) = volume_at_service(volume)?;
    let mut item = with_props(
        "disk",
        &[
            ("vdisk_name", disk),
            ("service_name", service),
            ("vol_name", volume),
        ],
    );
    add_fields(&mut item, "add-vdisk", VDISK_FIELDS, props)?;
    Ok(single(Action::AddVdisk, &[], on_domain(domain, vec![item])))
}

/// remove-vdisk `DISK DOMAIN`.
pub fn remove_vdisk(disk: &str, domain: &str) -> Document {
    let item = with_props("disk", &[("vdisk_name", disk)]);
    single(Action::RemoveVdisk, &[], on_domain(domain, vec![item]))
}

/// add-vsw `[prop=value...] SERVICE DOMAIN`, set-vsw `prop=value... SERVICE`,
/// remove-vsw `SERVICE`.
pub fn vsw(
    action: Action,
    service: &str,
    owner: Option<&str>,
    props: &[String],
) -> Result<Document, UsageError> {
    if action == Action::SetVswitch && props.is_empty() {
        return Err(usage("set-vsw: give at least one property=value"));
    }
    let mut item = with_props("vsw", &[("service_name", service)]);
    add_fields(&mut item, action.as_str(), VSW_FIELDS, props)?;
    Ok(single(action, &[], on_service(owner, item)))
}

/// add-vnet `[prop=value...] NAME SERVICE DOMAIN`, set-vnet `prop=value... NAME DOMAIN`,
/// remove-vnet `NAME DOMAIN`.
pub fn vnet(
    action: Action,
    name: &str,
    service: Option<&str>,
    domain: &str,
    props: &[String],
) -> Result<Document, UsageError> {
    if action == Action::SetVnet && props.is_empty() {
        return Err(usage("set-vnet: give at least one property=value"));
    }
    let mut item = with_props("network", &[("vnet_name", name)]);
    if let Some(service) = service {
        push(&mut item, "service_name", service);
    }
    add_fields(&mut item, action.as_str(), VNET_FIELDS, props)?;
    Ok(single(action, &[], on_domain(domain, vec![item])))
}

/// add-vcc `port-range=MIN-MAX SERVICE DOMAIN`, set-vcc `port-range=.. SERVICE`,
/// remove-vcc `SERVICE`.
pub fn vcc(
    action: Action,
    service: &str,
    owner: Option<&str>,
    port_range: Option<&str>,
) -> Result<Document, UsageError> {
    let mut item = with_props("vcc", &[("service_name", service)]);
    if let Some(range) = port_range {
        let range = range.strip_prefix("port-range=").unwrap_or(range);
        let (min, max) = range
            .split_once('-')
            .ok_or_else(|| usage(format!("expected port-range=MIN-MAX, got '{range}'")))?;
        for port in [min, max] {
            parse_number::<u16>("console port", port).map_err(UsageError)?;
        }
        push(&mut item, "min_port", min.trim());
        push(&mut item, "max_port", max.trim());
    }
    Ok(single(action, &[], on_service(owner, item)))
}

/// set-vcons `[port=..] [group=..] [service=..] [log=on|off] DOMAIN`.
pub fn set_vcons(domain: &str, props: &[String]) -> Result<Document, UsageError> {
    if props.is_empty() {
        return Err(usage("set-vcons: give at least one property=value"));
    }
    let mut item = item("console");
    add_fields(&mut item, "set-vcons", VCONS_FIELDS, props)?;
    Ok(single(
        Action::SetVconsole,
        &[],
        on_domain(domain, vec![item]),
    ))
}

/// add-/set-variable `NAME=VALUE... DOMAIN`, remove-variable `NAME... DOMAIN`.
pub fn variables(
    action: Action,
    operands: &[String],
    domain: &str,
) -> Result<Document, UsageError> {
    if operands.is_empty() {
        let form = if action == Action::RemoveVariable {
            "NAME... DOMAIN"
        } else {
            "NAME=VALUE... DOMAIN"
        };
        return Err(usage(format!("{action}: expected {form}")));
    }
    let mut items = Vec::new();
    for operand in operands {
        let item = if action == Action::RemoveVariable {
            with_props("var", &[("name", operand)])
        } else {
            let (name, value) = operand
                .split_once('=')
                .ok_or_else(|| usage(format!("{action}: expected name=value, got '{operand}'")))?;
            with_props("var", &[("name", name), ("value", value)])
        };
        items.push(item);
    }
    Ok(single(action, &[], on_domain(domain, items)))
}

/// add-io / remove-io `DEVICE DOMAIN`.
pub fn io(action: Action, device: &str, domain: &str) -> Document {
    let item = with_props("physio_device", &[("name", device)]);
    single(action, &[], on_domain(domain, vec![item]))
}

/// add-/set-/remove-spconfig `NAME`.
pub fn spconfig(action: Action, name: &str) -> Document {
    let item = with_props("spconfig", &[("spconfig_name", name)]);
    single(action, &[], on_service(None, item))
}

/// cancel-operation `migration|reconf|memdr DOMAIN`.
/// `cancel-operation [-f] migration|reconf|memdr DOMAIN`; `-f` only with migration (the
/// forced recovery of an in-doubt migration).
pub fn cancel_operation(
    operation: &str,
    domain: &str,
    force: bool,
) -> Result<Document, UsageError> {
    if !["migration", "reconf", "memdr"].contains(&operation) {
        return Err(usage(format!(
            "cancel-operation: expected migration, reconf or memdr, got '{operation}'"
        )));
    }
    if force && operation != "migration" {
        return Err(usage(
            "cancel-operation: -f applies to migration only (restoring an in-doubt migration)",
        ));
    }
    let options: &[&str] = if force {
        &[operation, "force"]
    } else {
        &[operation]
    };
    Ok(single(
        Action::CancelOperation,
        options,
        on_domain(domain, Vec::new()),
    ))
}

/// Where `ldm migrate-domain` sends a domain: `[USER@]HOST[:NAME]`, an IPv6 address in
/// brackets (`root@[::1]:ldg1-new`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationTarget {
    pub user: Option<String>,
    pub host: String,
    pub name: Option<String>,
}

pub fn migration_target(text: &str) -> Result<MigrationTarget, UsageError> {
    let bad = || {
        usage(format!(
            "migrate-domain: expected [USER@]HOST[:NAME], got '{text}'"
        ))
    };
    let (user, rest) = match text.split_once('@') {
        Some((user, rest)) if !user.is_empty() => (Some(user.to_owned()), rest),
        Some(_) => return Err(bad()),
        None => (None, text),
    };
    let (host, name) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match rest.split_once(':') {
            Some((host, name)) => (host, Some(name)),
            None => (rest, None),
        }
    };
    if host.is_empty() || name.is_some_and(str::is_empty) || host.contains(['[', ']', '@']) {
        return Err(bad());
    }
    Ok(MigrationTarget {
        user,
        host: host.to_owned(),
        name: name.map(str::to_owned),
    })
}

/// `migrate-domain` (§6): the domain, then its name on the target with the target's address
/// and credentials (base64).
pub fn migrate_domain(
    domain: &str,
    target: &MigrationTarget,
    port: u16,
    user: &str,
    password: &str,
    dry_run: bool,
    force: bool,
) -> Document {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let address = if target.host.contains(':') {
        format!("[{}]:{port}", target.host)
    } else {
        format!("{}:{port}", target.host)
    };
    let info = with_props(
        "ldom_info",
        &[
            ("target", &address),
            ("username", &b64(user)),
            ("password", &b64(password)),
        ],
    );
    let mut data = on_domain(domain, Vec::new());
    if let Some(envelope) = data.envelope.as_mut() {
        envelope.contents.push(Content {
            id: target.name.clone().unwrap_or_else(|| domain.to_owned()),
            sections: section(vec![info]),
        });
    }
    let mut options = Vec::new();
    if dry_run {
        options.push("dry-run");
    }
    if force {
        options.push("force");
    }
    single(Action::MigrateDomain, &options, data)
}

/// `reg-<class>-events`.
pub fn register_events(class: &str) -> Result<Document, UsageError> {
    let Some(&(_, action)) = EVENT_CLASSES.iter().find(|(name, _)| *name == class) else {
        let names: Vec<&str> = EVENT_CLASSES.iter().map(|(name, _)| *name).collect();
        return Err(usage(format!(
            "events: unknown class '{class}' (expected {})",
            names.join(", ")
        )));
    };
    Ok(single(action, &[], no_object()))
}

#[cfg(test)]
mod tests;
