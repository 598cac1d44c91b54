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
use crate::registry::units::parse_size;

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

/// A block whose value stands alone: `UUID` / `    value`, `UUID|uuid=value`.
fn value_block(title: &'static str, key: &str, value: &str) -> Block {
    Block {
        title,
        group: "domain",
        human: vec![format!("    {value}")],
        parseable: vec![record(title, &[(key, value)])],
    }
}

/// The long form of one domain, in Oracle's order: from a list-bindings Content (what each
/// resource is bound to) or a list-constraints Content (counts and sizes).
pub fn domain_blocks(content: &Content, owners: &ServiceOwners) -> Vec<Block> {
    let all: Vec<&Item> = items(content).collect();
    let mut blocks = Vec::new();
    if let Some(info) = of_type(&all, "ldom_info").next() {
        if let Some(uuid) = &info.uuid {
            blocks.push(value_block("UUID", "uuid", uuid));
        }
        if let Some(mac) = &info.address {
            blocks.push(value_block("MAC", "mac-addr", mac));
        }
        if let Some(hostid) = info.property("hostid") {
            blocks.push(value_block("HOSTID", "hostid", hostid.trim()));
        }
        let control: Vec<(&str, &str)> = info
            .properties
            .iter()
            .filter(|p| !SUMMARY_KEYS.contains(&p.key.as_str()))
            .filter(|p| p.key != "master")
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect();
        blocks.push(settings_block("CONTROL", "domain", &control));
        let master = prop(info, "master");
        blocks.push(settings_block(
            "DEPENDENCY",
            "domain",
            &[("master", &master)],
        ));
    }
    for cpu in of_type(&all, "cpu") {
        blocks.extend(cpu_blocks(cpu));
    }
    for mau in of_type(&all, "mau") {
        blocks.push(mau_block(mau));
    }
    for memory in of_type(&all, "memory") {
        blocks.push(memory_block(memory));
    }
    blocks.extend(of_type(&all, "cpu").filter_map(constraint_block));
    for reconf in of_type(&all, "reconf") {
        let pending: Vec<(&str, &str)> = reconf
            .properties
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect();
        blocks.push(settings_block(
            "DELAYED-RECONFIGURATION",
            "domain",
            &pending,
        ));
    }
    let variables: Vec<(String, String)> = of_type(&all, "var")
        .map(|v| (prop(v, "name"), prop(v, "value")))
        .collect();
    if !variables.is_empty() {
        blocks.push(Block {
            title: "VARIABLES",
            group: "domain",
            human: variables
                .iter()
                .map(|(k, v)| format!("    {k}={v}"))
                .collect(),
            parseable: std::iter::once("VARIABLES".to_owned())
                .chain(variables.iter().map(|(k, v)| record("", &[(k, v)])))
                .collect(),
        });
    }
    let io: Vec<&Item> = of_type(&all, "physio_device").collect();
    if !io.is_empty() {
        let rows: Vec<Vec<String>> = io
            .iter()
            .map(|d| vec![prop(d, "path"), prop(d, "name"), String::new()])
            .collect();
        blocks.push(Block {
            title: "IO",
            group: "physio",
            human: table(IO_COLUMNS, &rows),
            parseable: std::iter::once("IO".to_owned())
                .chain(
                    rows.iter()
                        .map(|r| record("", &[("dev", &r[0]), ("alias", &r[1])])),
                )
                .collect(),
        });
    }
    blocks.extend(service_blocks(&all, None));
    let nets: Vec<&Item> = of_type(&all, "network").collect();
    if !nets.is_empty() {
        blocks.push(network_block(&nets, owners));
    }
    let disks: Vec<&Item> = of_type(&all, "disk").collect();
    if !disks.is_empty() {
        blocks.push(disk_block(&disks, owners));
    }
    for console in of_type(&all, "console") {
        blocks.push(console_block(&content.id, console, owners));
    }
    blocks
}

const IO_COLUMNS: &[Column] = &[col("DEVICE", 16), col("PSEUDONYM", 16), col("OPTIONS", 0)];
const VCONS_COLUMNS: &[Column] = &[
    col("NAME", 16),
    col("SERVICE", 27),
    col("PORT", 6),
    col("LOGGING", 0),
];

/// `CONTROL` / `    key=value` lines; `CONTROL|key=value|...` on one line.
fn settings_block(title: &'static str, group: &'static str, settings: &[(&str, &str)]) -> Block {
    Block {
        title,
        group,
        human: settings
            .iter()
            .map(|(k, v)| format!("    {k}={v}"))
            .collect(),
        parseable: vec![record(title, settings)],
    }
}

/// VCPU (and CORE, CONSTRAINT): bound strands from list-bindings, else the count.
fn cpu_blocks(cpu: &Item) -> Vec<Block> {
    let count = cpu.allocation_units.clone().unwrap_or_default();
    let wcore = prop(cpu, "wcore");
    let whole_cores = !wcore.is_empty() && wcore != "0";
    let bound = bound_items(cpu);
    let mut blocks = Vec::new();
    if bound.is_empty() {
        if whole_cores {
            blocks.push(count_block("CORE", "core", "COUNT", "count", &wcore));
        }
        blocks.push(count_block("VCPU", "cpu", "COUNT", "count", &count));
    } else {
        let mut cores: Vec<(String, Vec<String>)> = Vec::new();
        for strand in &bound {
            let cid = prop(strand, "cid");
            match cores.iter_mut().find(|(c, _)| *c == cid) {
                Some((_, pids)) => pids.push(prop(strand, "pid")),
                None => cores.push((cid, vec![prop(strand, "pid")])),
            }
        }
        let rows: Vec<Vec<String>> = cores
            .iter()
            .map(|(cid, pids)| vec![cid.clone(), cpuset(&pids.join(","))])
            .collect();
        blocks.push(Block {
            title: "CORE",
            group: "core",
            human: table(&[col("CID", 6), col("CPUSET", 0)], &rows),
            parseable: std::iter::once("CORE".to_owned())
                .chain(
                    rows.iter()
                        .map(|r| record("", &[("cid", &r[0]), ("cpuset", &r[1])])),
                )
                .collect(),
        });
        let columns = [
            col("VID", 6),
            col("PID", 6),
            col("CID", 6),
            col("UTIL", 4),
            col("NORM", 4),
            right("STRAND", 6),
        ];
        let fields: Vec<[String; 6]> = bound
            .iter()
            .map(|s| {
                [
                    prop(s, "vid"),
                    prop(s, "pid"),
                    prop(s, "cid"),
                    prop(s, "util"),
                    prop(s, "norm_util"),
                    prop(s, "strand"),
                ]
            })
            .collect();
        let rows: Vec<Vec<String>> = fields
            .iter()
            .map(|[vid, pid, cid, util, norm, strand]| {
                vec![
                    vid.clone(),
                    pid.clone(),
                    cid.clone(),
                    percent(util),
                    percent(norm),
                    percent(strand),
                ]
            })
            .collect();
        blocks.push(Block {
            title: "VCPU",
            group: "cpu",
            human: table(&columns, &rows),
            parseable: std::iter::once("VCPU".to_owned())
                // The guide's order first (`|vid=|pid=|util=|strand=`, which its CPU
                // mapping example reads by position), then what later releases added.
                .chain(fields.iter().map(|[vid, pid, cid, util, norm, strand]| {
                    record(
                        "",
                        &[
                            ("vid", vid),
                            ("pid", pid),
                            ("util", util),
                            ("strand", strand),
                            ("cid", cid),
                            ("norm_util", norm),
                        ],
                    )
                }))
                .collect(),
        });
    }
    blocks
}

/// CONSTRAINT (`whole-core`) for a domain whose CPUs are whole cores; the guide lists it after
/// MEMORY.
fn constraint_block(cpu: &Item) -> Option<Block> {
    let wcore = prop(cpu, "wcore");
    (!wcore.is_empty() && wcore != "0").then(|| Block {
        title: "CONSTRAINT",
        group: "resmgmt",
        human: vec!["    whole-core".into()],
        parseable: vec!["CONSTRAINT|whole-core".into()],
    })
}

/// `VCPU` / `    COUNT` / `    8`, and `VCPU|count=8`.
fn count_block(
    title: &'static str,
    group: &'static str,
    header: &'static str,
    key: &str,
    value: &str,
) -> Block {
    let parseable = if key == "size" {
        bytes(value)
    } else {
        value.to_owned()
    };
    Block {
        title,
        group,
        human: table(&[col(header, 0)], &[vec![value.to_owned()]]),
        parseable: vec![record(title, &[(key, &parseable)])],
    }
}

fn mau_block(mau: &Item) -> Block {
    let bound = bound_items(mau);
    if bound.is_empty() {
        let count = mau.allocation_units.clone().unwrap_or_default();
        return count_block("MAU", "crypto", "COUNT", "count", &count);
    }
    let rows: Vec<Vec<String>> = bound
        .iter()
        .map(|m| vec![prop(m, "id"), cpuset(&prop(m, "cpuset"))])
        .collect();
    Block {
        title: "MAU",
        group: "crypto",
        human: table(&[col("ID", 6), col("CPUSET", 0)], &rows),
        parseable: std::iter::once("MAU".to_owned())
            .chain(
                rows.iter()
                    .map(|r| record("", &[("id", &r[0]), ("cpuset", &r[1])])),
            )
            .collect(),
    }
}

fn memory_block(memory: &Item) -> Block {
    let bound = bound_items(memory);
    if bound.is_empty() {
        let size = memory.allocation_units.clone().unwrap_or_default();
        return count_block("MEMORY", "memory", "SIZE", "size", &size);
    }
    let rows: Vec<Vec<String>> = bound
        .iter()
        .map(|m| vec![prop(m, "ra"), prop(m, "pa"), prop(m, "size")])
        .collect();
    Block {
        title: "MEMORY",
        group: "memory",
        human: table(&[col("RA", 16), col("PA", 16), col("SIZE", 0)], &rows),
        parseable: std::iter::once("MEMORY".to_owned())
            .chain(
                rows.iter()
                    .map(|r| record("", &[("ra", &r[0]), ("pa", &r[1]), ("size", &bytes(&r[2]))])),
            )
            .collect(),
    }
}

const NETWORK_COLUMNS: &[Column] = &[
    col("NAME", 16),
    col("SERVICE", 27),
    col("ID", 4),
    col("DEVICE", 10),
    col("MAC", 17),
    col("MODE", 6),
    col("PVID", 4),
    col("VID", 20),
    col("MTU", 5),
    col("LINKPROP", 0),
];

fn network_block(nets: &[&Item], owners: &ServiceOwners) -> Block {
    let mut human_rows = Vec::new();
    let mut parseable = Vec::new();
    for n in nets {
        let (name, service, id) = (prop(n, "vnet_name"), prop(n, "service_name"), prop(n, "id"));
        let (mode, pvid, vid, linkprop) = (
            prop(n, "mode"),
            prop(n, "pvid"),
            prop(n, "vid"),
            prop(n, "linkprop"),
        );
        let mac = n.address.clone().unwrap_or_default();
        let mtu = prop(n, "mtu");
        let dev = device("network", &id);
        human_rows.push(vec![
            name.clone(),
            at_owner(&service, owners),
            id.clone(),
            dev.clone(),
            mac.clone(),
            mode.clone(),
            pvid.clone(),
            vid.clone(),
            mtu.clone(),
            linkprop.clone(),
        ]);
        parseable.push(record(
            "VNET",
            &[
                ("name", &name),
                ("dev", &dev),
                ("service", &service),
                ("mac-addr", &mac),
                ("mode", &mode),
                ("pvid", &pvid),
                ("vid", &vid),
                ("mtu", &mtu),
                ("linkprop", &linkprop),
                ("id", &id),
            ],
        ));
    }
    Block {
        title: "NETWORK",
        group: "network",
        human: table(NETWORK_COLUMNS, &human_rows),
        parseable,
    }
}

const DISK_COLUMNS: &[Column] = &[
    col("NAME", 16),
    col("VOLUME", 27),
    col("TOUT", 4),
    col("ID", 4),
    col("DEVICE", 7),
    col("SERVER", 14),
    col("MPGROUP", 0),
];

fn disk_block(disks: &[&Item], owners: &ServiceOwners) -> Block {
    let mut human_rows = Vec::new();
    let mut parseable = Vec::new();
    for d in disks {
        let service = prop(d, "service_name");
        let (name, id) = (prop(d, "vdisk_name"), prop(d, "id"));
        let volume = at(&prop(d, "vol_name"), &service);
        let (timeout, mpgroup) = (prop(d, "timeout"), prop(d, "mpgroup"));
        let server = owners.get(&service).cloned().unwrap_or_default();
        let dev = device("disk", &id);
        human_rows.push(vec![
            name.clone(),
            volume.clone(),
            timeout.clone(),
            id.clone(),
            dev.clone(),
            server.clone(),
            mpgroup.clone(),
        ]);
        parseable.push(record(
            "VDISK",
            &[
                ("name", &name),
                ("vol", &volume),
                ("timeout", &timeout),
                ("dev", &dev),
                ("server", &server),
                ("mpgroup", &mpgroup),
                ("id", &id),
            ],
        ));
    }
    Block {
        title: "DISK",
        group: "disk",
        human: table(DISK_COLUMNS, &human_rows),
        parseable,
    }
}

/// A guest's console: its group (the domain's name by default), vcc, port and logging.
fn console_block(domain: &str, console: &Item, owners: &ServiceOwners) -> Block {
    // A console reached without a vcc (the control domain's: the service processor's) has a
    // type and nothing else.
    let kind = prop(console, "type");
    if !kind.is_empty() {
        return Block {
            title: "VCONS",
            group: "console",
            human: table(VCONS_COLUMNS, &[vec![kind.clone()]]),
            parseable: vec![record("VCONS", &[("type", &kind)])],
        };
    }
    let group = Some(prop(console, "group"))
        .filter(|g| !g.is_empty())
        .unwrap_or_else(|| domain.to_owned());
    let service = prop(console, "service_name");
    let (port, logging) = (prop(console, "port"), prop(console, "enable-log"));
    Block {
        title: "VCONS",
        group: "console",
        human: table(
            VCONS_COLUMNS,
            &[vec![
                group.clone(),
                at_owner(&service, owners),
                port.clone(),
                logging.clone(),
            ]],
        ),
        parseable: vec![record(
            "VCONS",
            &[
                ("group", &group),
                ("service", &service),
                ("port", &port),
                ("logging", &logging),
            ],
        )],
    }
}

/// The VCC, VSW and VDS blocks of the services among `items`; with `owner`, an LDOM column
/// and `ldom=` name the domain that provides them (list-services).
pub fn service_blocks(items: &[&Item], owner: Option<&str>) -> Vec<Block> {
    let with_owner = |columns: &[Column]| {
        let mut columns = columns.to_vec();
        if owner.is_some() {
            columns.insert(1, col("LDOM", 16));
        }
        columns
    };
    let owned = |mut row: Vec<String>| {
        if let Some(owner) = owner {
            row.insert(1, owner.to_owned());
        }
        row
    };
    let ldom: Vec<(&str, &str)> = owner.map(|o| ("ldom", o)).into_iter().collect();
    let mut blocks = Vec::new();
    let vcc: Vec<&Item> = of_type(items, "vcc").collect();
    if !vcc.is_empty() {
        let rows: Vec<Vec<String>> = vcc
            .iter()
            .map(|v| owned(vec![prop(v, "service_name"), port_range(v)]))
            .collect();
        blocks.push(Block {
            title: "VCC",
            group: "console",
            human: table(&with_owner(&[col("NAME", 16), col("PORT-RANGE", 0)]), &rows),
            parseable: vcc
                .iter()
                .map(|v| {
                    let (name, nclients) = (prop(v, "service_name"), prop(v, "nclients"));
                    let range = port_range(v);
                    let mut fields = vec![("name", name.as_str())];
                    fields.extend(ldom.iter().copied());
                    // Constraints carry no client count: only bindings have clients.
                    if !nclients.is_empty() {
                        fields.push(("nclients", &nclients));
                    }
                    fields.push(("port-range", &range));
                    record("VCC", &fields)
                })
                .collect(),
        });
    }
    let vsw: Vec<&Item> = of_type(items, "vsw").collect();
    if !vsw.is_empty() {
        let mut rows = Vec::new();
        let mut parseable = Vec::new();
        for v in &vsw {
            let f = |key: &str| prop(v, key);
            let mac = v.address.clone().unwrap_or_default();
            let [
                name,
                nclients,
                net_dev,
                id,
                default_vlan,
                pvid,
                vid,
                mtu,
                mode,
                linkprop,
                ivl,
            ] = [
                "service_name",
                "nclients",
                "dev_path",
                "id",
                "default-vlan-id",
                "pvid",
                "vid",
                "mtu",
                "mode",
                "linkprop",
                "inter_vnet_link",
            ]
            .map(f);
            let dev = device("switch", &id);
            rows.push(owned(vec![
                name.clone(),
                mac.clone(),
                net_dev.clone(),
                id.clone(),
                dev.clone(),
                linkprop.clone(),
                default_vlan.clone(),
                pvid.clone(),
                vid.clone(),
                mtu.clone(),
                mode.clone(),
                ivl.clone(),
            ]));
            let mut fields = vec![("name", name.as_str())];
            fields.extend(ldom.iter().copied());
            if !nclients.is_empty() {
                fields.push(("nclients", &nclients));
            }
            fields.extend([
                ("mac-addr", mac.as_str()),
                ("net-dev", &net_dev),
                ("dev", &dev),
                ("default-vlan-id", &default_vlan),
                ("pvid", &pvid),
                ("vid", &vid),
                ("mtu", &mtu),
                ("mode", &mode),
                ("linkprop", &linkprop),
                ("inter-vnet-link", &ivl),
                ("id", &id),
            ]);
            parseable.push(record("VSW", &fields));
        }
        blocks.push(Block {
            title: "VSW",
            group: "network",
            human: table(&with_owner(VSW_COLUMNS), &rows),
            parseable,
        });
    }
    let mut rows = Vec::new();
    let mut parseable = Vec::new();
    for server in of_type(items, "vds") {
        let (name, nclients) = (prop(server, "service_name"), prop(server, "nclients"));
        let mut fields = vec![("name", name.as_str())];
        fields.extend(ldom.iter().copied());
        if !nclients.is_empty() {
            fields.push(("nclients", &nclients));
        }
        parseable.push(record("VDS", &fields));
        let volumes: Vec<&Item> = of_type(items, "vds_volume")
            .filter(|v| prop(v, "service_name") == name)
            .collect();
        if volumes.is_empty() {
            rows.push(owned(vec![name.clone()]));
        }
        for (n, volume) in volumes.iter().enumerate() {
            let shown = if n == 0 { name.clone() } else { String::new() };
            let f = |key: &str| prop(volume, key);
            let mut row = owned(vec![shown]);
            if n > 0 && owner.is_some() {
                row[1] = String::new();
            }
            row.extend([f("vol_name"), f("vol_opts"), f("mpgroup"), f("block_dev")]);
            rows.push(row);
            parseable.push(record(
                "",
                &[
                    ("vol", &f("vol_name")),
                    ("opts", &f("vol_opts")),
                    ("dev", &f("block_dev")),
                    ("mpgroup", &f("mpgroup")),
                ],
            ));
        }
    }
    if !parseable.is_empty() {
        blocks.push(Block {
            title: "VDS",
            group: "disk",
            human: table(
                &with_owner(&[
                    col("NAME", 16),
                    col("VOLUME", 14),
                    col("OPTIONS", 16),
                    col("MPGROUP", 14),
                    col("DEVICE", 0),
                ]),
                &rows,
            ),
            parseable,
        });
    }
    blocks
}

const VSW_COLUMNS: &[Column] = &[
    col("NAME", 16),
    col("MAC", 17),
    col("NET-DEV", 9),
    col("ID", 4),
    col("DEVICE", 10),
    col("LINKPROP", 10),
    col("DEFAULT-VLAN-ID", 15),
    col("PVID", 4),
    col("VID", 20),
    col("MTU", 5),
    col("MODE", 6),
    col("INTER-VNET-LINK", 0),
];

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
