//! What the replies of list actions say, in the shapes the renderings need: one summary row
//! per domain (list-domain), and titled blocks of settings and tables for the long form,
//! list-bindings, list-constraints, list-services and list-devices.
//!
//! Every field is read from what the daemon reported, by property key; a field it did not
//! report is empty, never invented. Blocks carry their `ldm list -o` group so the long form
//! can be narrowed (`-o network,disk`).

use std::collections::BTreeMap;

use crate::ldm::action::Action;
use crate::ldm::document::{Content, Envelope, Item, Section, Status};
use crate::ldm::reply::Reply;

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
    /// Percent, when the daemon reports it (ldmd does not model utilisation).
    pub util: Option<String>,
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
    "state", "flags", "cons", "ncpu", "mem", "util", "uptime", "hostid",
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

fn prop(item: &Item, key: &str) -> String {
    item.property(key).unwrap_or_default().trim().to_owned()
}

/// The summary rows of a list-domain reply.
/// The control domain comes first, as in the ldm CLI; the others keep the daemon's order.
pub fn domain_rows(reply: &Reply) -> Vec<DomainRow> {
    let mut rows: Vec<DomainRow> = contents(reply, Action::ListDomain)
        .into_iter()
        .map(domain_row)
        .collect();
    rows.sort_by_key(|r| r.flags.chars().nth(3) != Some('c'));
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
    row.util = info
        .property("util")
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned);
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

/// The `-o` groups of the long form, as the ldm CLI names them.
pub const GROUPS: &[&str] = &[
    "domain", "cpu", "crypto", "memory", "network", "disk", "console", "physio",
];

/// A titled part of a long listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub title: String,
    /// The `-o` group it belongs to.
    pub group: &'static str,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// One value (`UUID`): its parseable key and the value.
    Value(&'static str, String),
    /// `key=value` settings (`CONTROL`, `VARIABLES`).
    Settings(Vec<(String, String)>),
    /// Rows under headers; each column also has its parseable key.
    Table {
        columns: Vec<(&'static str, &'static str)>,
        rows: Vec<Vec<String>>,
    },
}

fn value(title: &str, group: &'static str, key: &'static str, v: String) -> Block {
    Block {
        title: title.into(),
        group,
        body: Body::Value(key, v),
    }
}

fn table(
    title: &str,
    group: &'static str,
    columns: &[(&'static str, &'static str)],
    rows: Vec<Vec<String>>,
) -> Block {
    Block {
        title: title.into(),
        group,
        body: Body::Table {
            columns: columns.to_vec(),
            rows,
        },
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

fn device(kind: &str, id: &str) -> String {
    if id.is_empty() {
        String::new()
    } else {
        format!("{kind}@{id}")
    }
}

/// The long form of one domain: from a list-bindings Content (bindings shown) or a
/// list-constraints Content (counts and sizes only).
pub fn domain_blocks(content: &Content, owners: &ServiceOwners) -> Vec<Block> {
    let mut blocks = Vec::new();
    let all: Vec<&Item> = items(content).collect();
    if let Some(info) = of_type(&all, "ldom_info").next() {
        if let Some(uuid) = &info.uuid {
            blocks.push(value("UUID", "domain", "uuid", uuid.clone()));
        }
        if let Some(mac) = &info.address {
            blocks.push(value("MAC", "domain", "mac-addr", mac.clone()));
        }
        if let Some(hostid) = info.property("hostid") {
            blocks.push(value("HOSTID", "domain", "hostid", hostid.to_owned()));
        }
        let control: Vec<(String, String)> = info
            .properties
            .iter()
            .filter(|p| !SUMMARY_KEYS.contains(&p.key.as_str()) && p.key != "master")
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect();
        blocks.push(Block {
            title: "CONTROL".into(),
            group: "domain",
            body: Body::Settings(control),
        });
        blocks.push(Block {
            title: "DEPENDENCY".into(),
            group: "domain",
            body: Body::Settings(vec![("master".into(), prop(info, "master"))]),
        });
    }
    for cpu in of_type(&all, "cpu") {
        blocks.push(resource_block(
            cpu,
            "VCPU",
            "cpu",
            &[("VID", "vid"), ("PID", "pid"), ("CID", "cid")],
        ));
    }
    for mau in of_type(&all, "mau") {
        blocks.push(resource_block(
            mau,
            "MAU",
            "crypto",
            &[("ID", "id"), ("CID", "cid")],
        ));
    }
    for memory in of_type(&all, "memory") {
        blocks.push(resource_block(
            memory,
            "MEMORY",
            "memory",
            &[("RA", "ra"), ("PA", "pa"), ("SIZE", "size")],
        ));
    }
    for reconf in of_type(&all, "reconf") {
        blocks.push(Block {
            title: "DELAYED RECONFIGURATION".into(),
            group: "domain",
            body: Body::Settings(
                reconf
                    .properties
                    .iter()
                    .map(|p| (p.key.clone(), p.value.clone()))
                    .collect(),
            ),
        });
    }
    let variables: Vec<(String, String)> = of_type(&all, "var")
        .map(|v| (prop(v, "name"), prop(v, "value")))
        .collect();
    if !variables.is_empty() {
        blocks.push(Block {
            title: "VARIABLES".into(),
            group: "domain",
            body: Body::Settings(variables),
        });
    }
    let io: Vec<Vec<String>> = of_type(&all, "physio_device")
        .map(|d| vec![prop(d, "name")])
        .collect();
    if !io.is_empty() {
        blocks.push(table("IO", "physio", &[("DEVICE", "dev")], io));
    }
    blocks.extend(service_blocks(&all, None));
    let nets: Vec<Vec<String>> = of_type(&all, "network")
        .map(|n| {
            vec![
                prop(n, "vnet_name"),
                at_owner(&prop(n, "service_name"), owners),
                device("network", &prop(n, "id")),
                n.address.clone().unwrap_or_default(),
                prop(n, "mode"),
                prop(n, "pvid"),
                prop(n, "vid"),
                prop(n, "linkprop"),
            ]
        })
        .collect();
    if !nets.is_empty() {
        blocks.push(table("NETWORK", "network", NETWORK_COLUMNS, nets));
    }
    let disks: Vec<Vec<String>> = of_type(&all, "disk")
        .map(|d| {
            let service = prop(d, "service_name");
            vec![
                prop(d, "vdisk_name"),
                format!("{}@{service}", prop(d, "vol_name")),
                prop(d, "timeout"),
                device("disk", &prop(d, "id")),
                owners.get(&service).cloned().unwrap_or_default(),
            ]
        })
        .collect();
    if !disks.is_empty() {
        blocks.push(table("DISK", "disk", DISK_COLUMNS, disks));
    }
    let consoles: Vec<Vec<String>> = of_type(&all, "console")
        .map(|c| {
            vec![
                content.id.clone(),
                at_owner(&prop(c, "service_name"), owners),
                prop(c, "port"),
                prop(c, "group"),
                prop(c, "enable-log"),
            ]
        })
        .collect();
    if !consoles.is_empty() {
        blocks.push(table("VCONS", "console", VCONS_COLUMNS, consoles));
    }
    blocks
}

const NETWORK_COLUMNS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("SERVICE", "service"),
    ("DEVICE", "dev"),
    ("MAC", "mac-addr"),
    ("MODE", "mode"),
    ("PVID", "pvid"),
    ("VID", "vid"),
    ("LINKPROP", "linkprop"),
];
const DISK_COLUMNS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("VOLUME", "vol"),
    ("TOUT", "timeout"),
    ("DEVICE", "dev"),
    ("SERVER", "server"),
];
const VCONS_COLUMNS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("SERVICE", "service"),
    ("PORT", "port"),
    ("GROUP", "group"),
    ("LOGGING", "logging"),
];

/// A CPU, crypto or memory Item: its bound pieces when list-bindings gave them, else the
/// constraint (`COUNT`, `SIZE`).
fn resource_block(
    item: &Item,
    title: &str,
    group: &'static str,
    columns: &[(&'static str, &'static str)],
) -> Block {
    let bound: Vec<&Item> = item.bindings.iter().flat_map(|b| &b.items).collect();
    if bound.is_empty() {
        let units = item.allocation_units.clone().unwrap_or_default();
        let (header, key) = if group == "memory" {
            ("SIZE", "size")
        } else {
            ("COUNT", "count")
        };
        let mut columns = vec![(header, key)];
        let mut row = vec![units];
        if let Some(cores) = item.property("wcore").filter(|w| w.trim() != "0") {
            columns.push(("WHOLE-CORES", "wcore"));
            row.push(cores.trim().to_owned());
        }
        return Block {
            title: title.into(),
            group,
            body: Body::Table {
                columns,
                rows: vec![row],
            },
        };
    }
    let rows = bound
        .iter()
        .map(|b| columns.iter().map(|(_, key)| prop(b, key)).collect())
        .collect();
    table(title, group, columns, rows)
}

/// VCC, VSW and VDS tables of the services among `items`; with `owner`, an LDOM column
/// names the domain that provides them (list-services).
pub fn service_blocks(items: &[&Item], owner: Option<&str>) -> Vec<Block> {
    let with_owner = |mut row: Vec<String>| {
        if let Some(owner) = owner {
            row.insert(1, owner.to_owned());
        }
        row
    };
    let columns = |list: &[(&'static str, &'static str)]| {
        let mut list = list.to_vec();
        if owner.is_some() {
            list.insert(1, ("LDOM", "ldom"));
        }
        list
    };
    let mut blocks = Vec::new();
    let vcc: Vec<Vec<String>> = of_type(items, "vcc")
        .map(|v| {
            with_owner(vec![
                prop(v, "service_name"),
                format!("{}-{}", prop(v, "min_port"), prop(v, "max_port")),
            ])
        })
        .collect();
    if !vcc.is_empty() {
        blocks.push(table(
            "VCC",
            "console",
            &columns(&[("NAME", "name"), ("PORT-RANGE", "port-range")]),
            vcc,
        ));
    }
    let vsw: Vec<Vec<String>> = of_type(items, "vsw")
        .map(|v| {
            with_owner(vec![
                prop(v, "service_name"),
                v.address.clone().unwrap_or_default(),
                prop(v, "dev_path"),
                prop(v, "pvid"),
                prop(v, "vid"),
                prop(v, "mtu"),
                prop(v, "mode"),
                prop(v, "linkprop"),
                prop(v, "inter_vnet_link"),
            ])
        })
        .collect();
    if !vsw.is_empty() {
        blocks.push(table(
            "VSW",
            "network",
            &columns(&[
                ("NAME", "name"),
                ("MAC", "mac-addr"),
                ("NET-DEV", "net-dev"),
                ("PVID", "pvid"),
                ("VID", "vid"),
                ("MTU", "mtu"),
                ("MODE", "mode"),
                ("LINKPROP", "linkprop"),
                ("INTER-VNET-LINK", "inter-vnet-link"),
            ]),
            vsw,
        ));
    }
    let mut vds: Vec<Vec<String>> = Vec::new();
    for server in of_type(items, "vds") {
        let name = prop(server, "service_name");
        let volumes: Vec<&Item> = of_type(items, "vds_volume")
            .filter(|v| prop(v, "service_name") == name)
            .collect();
        if volumes.is_empty() {
            vds.push(with_owner(vec![
                name.clone(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]));
        }
        for (n, volume) in volumes.iter().enumerate() {
            let shown = if n == 0 { name.clone() } else { String::new() };
            vds.push(with_owner(vec![
                shown,
                prop(volume, "vol_name"),
                prop(volume, "vol_opts"),
                prop(volume, "mpgroup"),
                prop(volume, "block_dev"),
            ]));
        }
    }
    if !vds.is_empty() {
        blocks.push(table(
            "VDS",
            "disk",
            &columns(&[
                ("NAME", "name"),
                ("VOLUME", "vol"),
                ("OPTIONS", "opts"),
                ("MPGROUP", "mpgroup"),
                ("DEVICE", "dev"),
            ]),
            vds,
        ));
    }
    blocks
}

/// The free resources and I/O devices of a list-devices reply.
pub fn device_blocks(reply: &Reply) -> Vec<Block> {
    let mut blocks = Vec::new();
    for item in sections(reply, Action::ListDevices)
        .into_iter()
        .flat_map(|s| &s.items)
    {
        let units = item.allocation_units.clone().unwrap_or_default();
        match item.resource_type.as_str() {
            "cpu" => {
                let rows = item
                    .bindings
                    .iter()
                    .flat_map(|b| &b.items)
                    .map(|c| vec![prop(c, "pid"), prop(c, "cid")])
                    .collect();
                blocks.push(table(
                    "VCPU",
                    "cpu",
                    &[("PID", "pid"), ("CID", "cid")],
                    rows,
                ));
            }
            "mau" => blocks.push(value("CRYPTO", "crypto", "free", units)),
            "memory" => blocks.push(value("MEMORY", "memory", "free", units)),
            _ => {}
        }
    }
    let io: Vec<Vec<String>> = sections(reply, Action::ListDevices)
        .into_iter()
        .flat_map(|s| &s.items)
        .filter(|i| i.resource_type == "physio_device")
        .map(|d| {
            let owner = prop(d, "owner");
            let bound = if owner.is_empty() { "no" } else { "yes" };
            vec![prop(d, "path"), prop(d, "name"), bound.to_owned(), owner]
        })
        .collect();
    if !io.is_empty() {
        blocks.push(table(
            "IO",
            "physio",
            &[
                ("DEVICE", "dev"),
                ("PSEUDONYM", "alias"),
                ("BOUND", "bound"),
                ("OWNER", "owner"),
            ],
            io,
        ));
    }
    blocks
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
