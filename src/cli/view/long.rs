//! The long form of one domain (`ldm list -l`, list-bindings, list-constraints): its blocks in
//! Oracle's order, each in its readable and parseable shapes.

use super::services::service_blocks;
use super::{
    Block, Column, SUMMARY_KEYS, ServiceOwners, at, at_owner, bound_items, bytes, col, cpuset,
    device, items, of_type, percent, prop, record, right, table,
};
use crate::ldm::document::{Content, Item};

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
