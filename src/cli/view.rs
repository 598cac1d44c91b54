//! What the replies of list actions say, in the shapes the renderings need: one summary row
//! per domain (list-domain), and titled blocks, each in its readable and parseable shapes, for
//! the long form, list-bindings and list-constraints (`view::long`) and the services
//! (`view::services`); list-devices and list-io are in [`crate::cli::devices`].
//!
//! Every field is read from what the daemon reported, by property key; a field it did not
//! report is empty, never invented. Blocks carry their `ldm list -o` group so the long form
//! can be narrowed (`-o network,disk`).

use std::collections::BTreeMap;

use crate::ldm::action::Action;
use crate::ldm::document::{Content, Envelope, Item, Section, Status};
use crate::ldm::reply::Reply;
use crate::registry::units::parse_size;

mod long;
mod services;

pub use long::domain_blocks;
pub use services::service_blocks;

/// One domain of a list-domain reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainRow {
    pub name: String,
    pub state: String,
    /// The six positions of §3 (`-n-cv-`).
    pub flags: String,
    /// Console: `UART`, a port, or empty.
    pub cons: String,
    pub ncpu: Option<u64>,
    /// Bytes.
    pub mem: Option<u64>,
    /// Percent, as the daemon words it (`0.4`, `23`), for an active domain.
    pub util: Option<String>,
    /// Utilisation normalised for power management (`NORM`).
    pub norm_util: Option<String>,
    /// What the domain's software is doing (`OpenBoot Running`), for an active domain.
    pub softstate: String,
    /// Seconds since start, for an active domain.
    pub uptime: Option<u64>,
    pub uuid: String,
    pub mac: String,
    pub hostid: String,
    /// Other ldom_info properties (failure-policy, master, ...), in reply order.
    pub settings: Vec<(String, String)>,
}

/// Keys of the summary that have columns of their own.
const SUMMARY_KEYS: &[&str] = &[
    "state",
    "flags",
    "cons",
    "ncpu",
    "mem",
    "util",
    "norm_util",
    "uptime",
    "softstate",
    "hostid",
];

/// Envelopes of the successful objects of `action`'s cmd, in reply order.
fn envelopes(reply: &Reply, action: Action) -> impl Iterator<Item = &Envelope> {
    reply
        .cmds
        .iter()
        .filter(move |c| c.answers(action))
        .flat_map(|c| &c.data)
        .filter(|d| d.status == Status::Success)
        .filter_map(|d| d.data.envelope.as_ref())
}

/// Contents of the successful objects of `action`'s cmd, in reply order.
pub fn contents(reply: &Reply, action: Action) -> Vec<&Content> {
    envelopes(reply, action).flat_map(|e| &e.contents).collect()
}

/// Envelope-level sections of the successful objects of `action`'s cmd.
pub fn sections(reply: &Reply, action: Action) -> Vec<&Section> {
    envelopes(reply, action).flat_map(|e| &e.sections).collect()
}

/// Every Item of a Content, across its sections.
pub fn items(content: &Content) -> impl Iterator<Item = &Item> {
    content.sections.iter().flat_map(|s| &s.items)
}

pub fn prop(item: &Item, key: &str) -> String {
    item.property(key).unwrap_or_default().trim().to_owned()
}

/// The summary rows of a list-domain reply.
/// The control domain comes first, as in the ldm CLI; the others keep the daemon's order.
pub fn domain_rows(reply: &Reply) -> Vec<DomainRow> {
    let mut rows: Vec<DomainRow> = contents(reply, Action::ListDomain)
        .into_iter()
        .map(domain_row)
        .collect();
    rows.sort_by_key(|r| r.name != crate::registry::CONTROL_DOMAIN);
    rows
}

pub fn domain_row(content: &Content) -> DomainRow {
    let mut row = DomainRow {
        name: content.id.clone(),
        ..DomainRow::default()
    };
    let Some(info) = items(content).find(|i| i.resource_type == "ldom_info") else {
        return row;
    };
    let number = |key: &str| info.property(key).and_then(|v| v.trim().parse().ok());
    row.state = prop(info, "state");
    row.flags = prop(info, "flags");
    row.cons = prop(info, "cons");
    row.ncpu = number("ncpu");
    row.mem = number("mem");
    let text = |key: &str| {
        info.property(key)
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
    };
    row.util = text("util");
    row.norm_util = text("norm_util");
    row.softstate = prop(info, "softstate");
    row.uptime = number("uptime");
    row.uuid = info.uuid.clone().unwrap_or_default();
    row.mac = info.address.clone().unwrap_or_default();
    row.hostid = prop(info, "hostid");
    row.settings = info
        .properties
        .iter()
        .filter(|p| !SUMMARY_KEYS.contains(&p.key.as_str()))
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect();
    row
}

/// Which domain provides each service (from a list-services reply over every domain).
pub type ServiceOwners = BTreeMap<String, String>;

pub fn service_owners(reply: &Reply) -> ServiceOwners {
    let mut owners = ServiceOwners::new();
    for content in contents(reply, Action::ListServices) {
        for item in items(content) {
            if matches!(item.resource_type.as_str(), "vds" | "vsw" | "vcc")
                && let Some(name) = item.property("service_name")
            {
                owners.insert(name.trim().to_owned(), content.id.clone());
            }
        }
    }
    owners
}

/// The `-o` groups of the long form, as the ldm CLI names them (`status` is a view of its
/// own, see [`crate::cli::text::status`]).
pub const GROUPS: &[&str] = &[
    "console", "core", "cpu", "crypto", "disk", "domain", "memory", "network", "physio", "resmgmt",
    "serial", "stats",
];

/// Groups whose blocks the long form shows only when `-o` asks for them.
const ASKED_ONLY: &[&str] = &["stats"];

/// A titled part of a listing, in both of its forms: the readable lines under the title, and
/// the parseable records (Oracle's shapes differ per section, so each block writes its own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub title: &'static str,
    /// The `-o` group it belongs to.
    pub group: &'static str,
    /// The lines under the title in the readable form, indented; none: the block is not shown
    /// there.
    pub human: Vec<String>,
    /// Its lines in the parseable form (`-p`); none: not shown there.
    pub parseable: Vec<String>,
}

impl Block {
    /// Whether the long form shows it when `-o` named `groups` (everything but the
    /// asked-only groups when it named none).
    pub fn shown(&self, groups: &[String]) -> bool {
        if groups.is_empty() {
            !ASKED_ONLY.contains(&self.group)
        } else {
            groups.iter().any(|g| g == self.group)
        }
    }
}

/// A column of a readable table: printed `width` wide (longer cells push the rest along by
/// one space, like printf's `%-16s `), right-aligned when `right`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    pub header: &'static str,
    pub width: usize,
    pub right: bool,
}

pub const fn col(header: &'static str, width: usize) -> Column {
    Column {
        header,
        width,
        right: false,
    }
}

pub const fn right(header: &'static str, width: usize) -> Column {
    Column {
        header,
        width,
        right: true,
    }
}

/// One readable table line: four spaces, then the cells in their columns; no trailing spaces.
pub fn fixed(columns: &[Column], cells: &[&str]) -> String {
    let mut line = String::from("    ");
    let last = columns.len().saturating_sub(1);
    for (n, (column, cell)) in columns.iter().zip(cells).enumerate() {
        let width = column.width;
        let cell = if column.right {
            format!("{cell:>width$}")
        } else {
            format!("{cell:<width$}")
        };
        line.push_str(&cell);
        if n < last {
            line.push(' ');
        }
    }
    line.trim_end().to_owned()
}

/// A table's readable lines: the header, then each row.
pub fn table(columns: &[Column], rows: &[Vec<String>]) -> Vec<String> {
    let headers: Vec<&str> = columns.iter().map(|c| c.header).collect();
    let mut lines = vec![fixed(columns, &headers)];
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        lines.push(fixed(columns, &cells));
    }
    lines
}

/// `HEAD|key=value|key=value`; an empty head gives a continuation row, `|key=value|...`.
/// A value that holds a line break or a `|` is written with `\n`, `\r` and `\|`, so that one
/// record stays one line and keeps its fields: a variable's value or a back end's path could
/// otherwise forge a record (`x=1<LF>DOMAIN|name=fake`) for every script that reads `-p`.
pub fn record(head: &str, fields: &[(&str, &str)]) -> String {
    let mut line = head.to_owned();
    for (key, value) in fields {
        line.push('|');
        line.push_str(key);
        line.push('=');
        for c in value.chars() {
            match c {
                '\n' => line.push_str("\\n"),
                '\r' => line.push_str("\\r"),
                '|' => line.push_str("\\|"),
                c => line.push(c),
            }
        }
    }
    line
}

/// A size as the parseable form writes it: bytes (`4G` → `4294967296`).
pub fn bytes(size: &str) -> String {
    parse_size(size).map_or_else(|_| size.to_owned(), |b| b.to_string())
}

/// `0,1,2,3` → `(0, 1, 2, 3)`, as Oracle prints a CPU set.
pub fn cpuset(ids: &str) -> String {
    let ids: Vec<&str> = ids.split(',').filter(|i| !i.is_empty()).collect();
    format!("({})", ids.join(", "))
}

/// `23` → `23%`; nothing stays nothing.
pub fn percent(value: &str) -> String {
    if value.is_empty() {
        String::new()
    } else {
        format!("{value}%")
    }
}

/// The Items of one resource type.
fn of_type<'a>(items: &'a [&'a Item], kind: &'a str) -> impl Iterator<Item = &'a Item> + 'a {
    items
        .iter()
        .copied()
        .filter(move |i| i.resource_type == kind)
}

/// `service@owner` when the owner is known.
fn at_owner(service: &str, owners: &ServiceOwners) -> String {
    match owners.get(service) {
        Some(owner) if !service.is_empty() => format!("{service}@{owner}"),
        _ => service.to_owned(),
    }
}

/// `vol@service`, or what there is of it when the daemon gave only one part.
fn at(volume: &str, service: &str) -> String {
    match (volume.is_empty(), service.is_empty()) {
        (false, false) => format!("{volume}@{service}"),
        (true, _) => service.to_owned(),
        (false, true) => volume.to_owned(),
    }
}

/// `5000-5100`, or nothing when a bound is missing.
fn port_range(item: &Item) -> String {
    let (min, max) = (prop(item, "min_port"), prop(item, "max_port"));
    if min.is_empty() || max.is_empty() {
        String::new()
    } else {
        format!("{min}-{max}")
    }
}

/// `network@0`; nothing when the daemon gave no number (an unbound constraint).
fn device(kind: &str, id: &str) -> String {
    if id.is_empty() {
        String::new()
    } else {
        format!("{kind}@{id}")
    }
}

fn bound_items(item: &Item) -> Vec<&Item> {
    item.bindings.iter().flat_map(|b| &b.items).collect()
}

/// SP configurations and their status (`current`, `next`), from a list-spconfig reply.
pub fn spconfigs(reply: &Reply) -> Vec<(String, String)> {
    sections(reply, Action::ListSpconfig)
        .into_iter()
        .flat_map(|s| &s.items)
        .filter(|i| i.resource_type == "spconfig")
        .map(|i| (prop(i, "spconfig_name"), prop(i, "spconfig_status")))
        .collect()
}

/// The domain that provides `service`, from a list-services reply.
pub fn service_owner(reply: &Reply, service: &str) -> Option<String> {
    service_owners(reply).remove(service)
}
