//! `ldm list-devices` and `ldm list-io`: the machine's cores, strands, crypto units, memory
//! blocks and I/O devices, free ones (or, with `-a`, all with their owners), in Oracle's
//! shapes. Both come from one list-devices reply (`-a` asks the daemon for bound resources
//! too), so an XML client sees the same facts.

use std::fmt::Write as _;

use crate::cli::text::PARSEABLE_VERSION;
use crate::cli::text::render;
use crate::cli::view::{Block, Column, bytes, col, cpuset, fixed, prop, record, table};
use crate::ldm::action::Action;
use crate::ldm::document::Item;
use crate::ldm::reply::Reply;

/// The classes `ldm list-devices` takes, with the block each names (`mem` and `memory` are
/// one; `crypto` lists the MAU block).
pub const CLASSES: &[(&str, &str)] = &[
    ("core", "CORE"),
    ("cpu", "VCPU"),
    ("crypto", "MAU"),
    ("memory", "MEMORY"),
    ("mem", "MEMORY"),
    ("io", "IO"),
];

fn section_items(reply: &Reply) -> Vec<&Item> {
    crate::cli::view::sections(reply, Action::ListDevices)
        .into_iter()
        .flat_map(|s| &s.items)
        .collect()
}

fn rows_of<'a>(items: &[&'a Item], kind: &str) -> Vec<&'a Item> {
    items
        .iter()
        .filter(|i| i.resource_type == kind)
        .flat_map(|i| i.bindings.iter().flat_map(|b| &b.items))
        .collect()
}

/// A block of rows: readable columns and the parseable keys of the same cells.
fn rows_block(
    title: &'static str,
    group: &'static str,
    columns: &[Column],
    keys: &[&str],
    rows: Vec<Vec<String>>,
) -> Block {
    let parseable = std::iter::once(title.to_owned())
        .chain(rows.iter().map(|row| {
            let fields: Vec<(&str, &str)> = keys
                .iter()
                .zip(row)
                .map(|(k, v)| (*k, v.as_str()))
                .collect();
            record("", &fields)
        }))
        .collect();
    Block {
        title,
        group,
        human: table(columns, &rows),
        parseable,
    }
}

/// The blocks of a list-devices reply: CORE, VCPU, MAU, MEMORY, IO (those with rows). `all`
/// (`-a`): the memory table names each block's owner in a BOUND column, which a listing of
/// free memory alone leaves out, as the guide's `list-devices mem` does.
pub fn device_blocks(reply: &Reply, all: bool) -> Vec<Block> {
    let items = section_items(reply);
    let mut blocks = Vec::new();
    let cores: Vec<Vec<String>> = rows_of(&items, "core")
        .iter()
        .map(|c| vec![prop(c, "cid"), prop(c, "free"), cpuset(&prop(c, "cpuset"))])
        .collect();
    if !cores.is_empty() {
        blocks.push(rows_block(
            "CORE",
            "core",
            &[col("ID", 7), col("%FREE", 7), col("CPUSET", 0)],
            &["cid", "free", "cpuset"],
            cores,
        ));
    }
    let cpus: Vec<Vec<String>> = rows_of(&items, "cpu")
        .iter()
        .map(|c| vec![prop(c, "pid"), prop(c, "free"), prop(c, "pm")])
        .collect();
    if !cpus.is_empty() {
        blocks.push(rows_block(
            "VCPU",
            "cpu",
            &[col("PID", 7), col("%FREE", 7), col("PM", 0)],
            &["pid", "free", "pm"],
            cpus,
        ));
    }
    let maus: Vec<Vec<String>> = rows_of(&items, "mau")
        .iter()
        .map(|m| {
            vec![
                prop(m, "id"),
                prop(m, "free"),
                cpuset(&prop(m, "cpuset")),
                prop(m, "owner"),
            ]
        })
        .collect();
    if !maus.is_empty() {
        blocks.push(rows_block(
            "MAU",
            "crypto",
            &[
                col("ID", 7),
                col("%FREE", 7),
                col("CPUSET", 39),
                col("BOUND", 0),
            ],
            &["id", "free", "cpuset", "bound"],
            maus,
        ));
    }
    let memory: Vec<&Item> = rows_of(&items, "memory");
    if !memory.is_empty() {
        let readable: Vec<Vec<String>> = memory
            .iter()
            .map(|m| vec![prop(m, "pa"), prop(m, "size"), prop(m, "owner")])
            .collect();
        let columns: &[Column] = if all {
            &[col("PA", 20), col("SIZE", 15), col("BOUND", 0)]
        } else {
            &[col("PA", 20), col("SIZE", 0)]
        };
        blocks.push(Block {
            title: "MEMORY",
            group: "memory",
            human: table(columns, &readable),
            // Sizes in bytes, which scripts sum.
            parseable: std::iter::once("MEMORY".to_owned())
                .chain(readable.iter().map(|m| {
                    record(
                        "",
                        &[("pa", &m[0]), ("size", &bytes(&m[1])), ("bound", &m[2])],
                    )
                }))
                .collect(),
        });
    }
    let io: Vec<Vec<String>> = items
        .iter()
        .filter(|i| i.resource_type == "physio_device")
        .map(|d| {
            let bound = if prop(d, "owner").is_empty() {
                "no"
            } else {
                "yes"
            };
            vec![prop(d, "path"), prop(d, "name"), bound.to_owned()]
        })
        .collect();
    if !io.is_empty() {
        blocks.push(rows_block(
            "IO",
            "physio",
            &[
                col("DEVICE", 32),
                col("PSEUDONYM", 16),
                col("BOUND", 7),
                col("OPTIONS", 0),
            ],
            &["dev", "alias", "bound"],
            io,
        ));
    }
    blocks
}

/// `ldm list-devices [-a] [-p] [CLASS...]`.
pub fn devices(reply: &Reply, classes: &[String], all: bool, parseable: bool) -> String {
    let titles: Vec<&str> = classes
        .iter()
        .filter_map(|c| CLASSES.iter().find(|(name, _)| name == c))
        .map(|(_, title)| *title)
        .collect();
    let blocks: Vec<Block> = device_blocks(reply, all)
        .into_iter()
        .filter(|b| titles.is_empty() || titles.contains(&b.title))
        .collect();
    render(&blocks, parseable)
}

const IO_COLUMNS: &[Column] = &[
    col("NAME", 41),
    col("TYPE", 6),
    col("BUS", 8),
    col("DOMAIN", 8),
    col("STATUS", 0),
];

/// `ldm list-io [-p]`: every I/O device, its type (a root complex is a `BUS`, a slot `PCIE`),
/// the bus it is on, the domain that owns it, and a slot's status (`OCC`: occupied).
pub fn io(reply: &Reply, parseable: bool) -> String {
    let rows: Vec<[String; 5]> = section_items(reply)
        .into_iter()
        .filter(|i| i.resource_type == "physio_device")
        .map(|d| ["name", "type", "bus", "owner", "status"].map(|key| prop(d, key)))
        .collect();
    let mut out = String::new();
    if parseable {
        let _ = writeln!(out, "{PARSEABLE_VERSION}");
        for [name, kind, bus, domain, status] in &rows {
            let fields = [
                ("name", name.as_str()),
                ("type", kind),
                ("bus", bus),
                ("domain", domain),
                ("status", status),
            ];
            let _ = writeln!(out, "{}", record("IO", &fields));
        }
        return out;
    }
    let line = |cells: &[&str]| fixed(IO_COLUMNS, cells).trim_start().to_owned();
    let _ = writeln!(
        out,
        "{}",
        line(&["NAME", "TYPE", "BUS", "DOMAIN", "STATUS"])
    );
    let _ = writeln!(
        out,
        "{}",
        line(&["----", "----", "---", "------", "------"])
    );
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        let _ = writeln!(out, "{}", line(&cells));
    }
    out
}
