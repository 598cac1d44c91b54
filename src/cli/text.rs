//! The text renderings: the familiar `ldm list` table, its long form (`-l`), the parseable
//! form (`-p`: `VERSION 1.6`, then Oracle's `|`-separated records, stable for scripts), and
//! the readable output of the other list commands and of events.
//!
//! Shapes follow Oracle VM Server for SPARC's `ldm` as its Administration Guide shows them:
//! the table's columns NAME STATE FLAGS CONS VCPU MEMORY UTIL NORM UPTIME, MEMORY in the
//! largest exact unit (`4G`, `1536M`), UPTIME like `1d 2h 3m`, sections separated by blank
//! lines and domains by 78 dashes. A field the daemon did not report is blank.

use std::fmt::Write as _;

use crate::cli::view::{
    Block, DomainRow, col, contents, domain_blocks, domain_rows, items, percent, record,
    service_blocks, service_owners, spconfigs, table,
};
use crate::ldm::action::Action;
use crate::ldm::document::Item;
use crate::ldm::reply::{EventDoc, Reply};
use crate::registry::units::format_size;

/// The first line of every parseable listing (the version the ldm CLI's `-p` output carries).
pub const PARSEABLE_VERSION: &str = "VERSION 1.6";

/// The line between domains in a long listing: 78 dashes.
pub const SEPARATOR: &str =
    "------------------------------------------------------------------------------";

/// `text` as it may reach a terminal: control characters other than newline and tab (a
/// carriage return, C1 controls such as CSI, U+009B, which XML lets through and some terminals
/// obey) are written as `\u{9b}`. What ldm prints comes from the daemon, and a value a remote
/// user set must not be able to move the cursor or rewrite an operator's screen.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.contains(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `3d 21h 7m`, `19d 9m`, `2m`, `42s`: the units that are not zero, seconds only under a
/// minute, as Oracle's UPTIME.
pub fn format_uptime(seconds: u64) -> String {
    if seconds < 60 {
        return format!("{seconds}s");
    }
    let parts = [
        (seconds / 86_400, "d"),
        (seconds / 3600 % 24, "h"),
        (seconds / 60 % 60, "m"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The six flag positions spelled out as `ldm list -l -p` does (`normal,control,vio-service`);
/// the short `ldm list -p` keeps the letters (`-n-cv-`), as Oracle's does.
pub fn flag_words(flags: &str) -> String {
    let words: Vec<&str> = flags
        .chars()
        .enumerate()
        .filter_map(|(position, flag)| match (position, flag) {
            (0, 's') => Some("starting-or-stopping"),
            (1, 'n') => Some("normal"),
            (1, 't') => Some("transition"),
            (1, 'd') => Some("degraded"),
            (2, 'd') => Some("delayed-reconf"),
            (2, 'r') => Some("memory-dr"),
            (3, 'c') => Some("control"),
            (4, 'v') => Some("vio-service"),
            (5, 's') => Some("source"),
            (5, 't') => Some("target"),
            (5, 'e') => Some("error"),
            _ => None,
        })
        .collect();
    words.join(",")
}

/// The header of the table.
pub const TABLE_HEADER: &str =
    "NAME             STATE      FLAGS   CONS    VCPU  MEMORY   UTIL  NORM  UPTIME";

/// One row of the table (no trailing spaces). A field the daemon does not report is left
/// blank, as Oracle's ldm leaves an inactive domain's CONS, UTIL, NORM and UPTIME; the
/// utilisations are right-aligned in their four places (`0.4%`, ` 23%`).
pub fn table_row(row: &DomainRow) -> String {
    let util = |u: &Option<String>| percent(u.as_deref().unwrap_or_default());
    let line = format!(
        "{:<16} {:<10} {:<7} {:<7} {:<5} {:<8} {:>4}  {:>4}  {}",
        row.name,
        row.state,
        row.flags,
        row.cons,
        row.ncpu.map_or(String::new(), |n| n.to_string()),
        row.mem.map_or(String::new(), format_size),
        util(&row.util),
        util(&row.norm_util),
        row.uptime.map_or(String::new(), format_uptime),
    );
    line.trim_end().to_owned()
}

/// `ldm list`: the header and one row per domain.
pub fn list_table(rows: &[DomainRow]) -> String {
    let mut out = String::from(TABLE_HEADER);
    out.push('\n');
    for row in rows {
        out.push_str(&table_row(row));
        out.push('\n');
    }
    out
}

/// The DOMAIN record. `ldm list -p` gives the flags' letters and ends with `norm_util`;
/// `-l -p` (`long`) spells the flags out and adds `softstate` after `uptime`, as Oracle's.
pub fn parseable_row(row: &DomainRow, long: bool) -> String {
    let flags = if long {
        flag_words(&row.flags)
    } else {
        row.flags.clone()
    };
    let mut line = format!(
        "DOMAIN|name={}|state={}|flags={}|cons={}|ncpu={}|mem={}|util={}|uptime={}",
        row.name,
        row.state,
        flags,
        row.cons,
        row.ncpu.map_or(String::new(), |n| n.to_string()),
        row.mem.map_or(String::new(), |m| m.to_string()),
        row.util.as_deref().unwrap_or_default(),
        row.uptime.map_or(String::new(), |u| u.to_string()),
    );
    if long {
        let _ = write!(line, "|softstate={}", row.softstate);
    }
    let _ = write!(
        line,
        "|norm_util={}",
        row.norm_util.as_deref().unwrap_or_default()
    );
    line
}

/// `ldm list -o status`: each domain, and the long operation running on it (a migration in or
/// out, a memory DR) with its progress and the other daemon.
pub fn status(rows: &[DomainRow]) -> String {
    let mut out = String::new();
    for row in rows {
        let setting = |key: &str| {
            row.settings
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        out.push_str(&format!("NAME\n{}\n", row.name));
        let running = match (setting("operation"), setting("memdr")) {
            (Some(operation), _) => Some((
                operation.to_owned(),
                setting("progress").unwrap_or_default().to_owned(),
                setting("peer").unwrap_or_default().to_owned(),
            )),
            (None, Some(memdr)) => Some(("memory-dr".to_owned(), memdr.to_owned(), String::new())),
            (None, None) => None,
        };
        if let Some((operation, progress, peer)) = running {
            out.push_str(&format!(
                "\nSTATUS\n    {:<26}{:<22}PEER\n    {:<26}{:<22}{}\n",
                "OPERATION", "PROGRESS", operation, progress, peer
            ));
        }
        out.push('\n');
    }
    out
}

/// `ldm list -p`
pub fn list_parseable(rows: &[DomainRow]) -> String {
    let mut out = format!("{PARSEABLE_VERSION}\n");
    for row in rows {
        out.push_str(&parseable_row(row, false));
        out.push('\n');
    }
    out
}

/// Blocks as text: each title, its lines, a blank line.
pub fn blocks_text(blocks: &[Block]) -> String {
    let mut out = String::new();
    for block in blocks.iter().filter(|b| !b.human.is_empty()) {
        let _ = writeln!(out, "{}", block.title);
        for line in &block.human {
            let _ = writeln!(out, "{line}");
        }
        out.push('\n');
    }
    out
}

/// Blocks in the parseable form: each block's records. A service domain's services come as
/// the guide writes them, VDS before VCC and VSW, where the readable form (and so the blocks)
/// has VCC, VSW, VDS.
pub fn blocks_parseable(blocks: &[Block]) -> String {
    let service_rank = |b: &&Block| match b.title {
        "VDS" => Some(0),
        "VCC" => Some(1),
        "VSW" => Some(2),
        _ => None,
    };
    let mut ordered: Vec<&Block> = blocks.iter().collect();
    let positions: Vec<usize> = (0..ordered.len())
        .filter(|n| service_rank(&ordered[*n]).is_some())
        .collect();
    let mut services: Vec<&Block> = positions.iter().map(|n| ordered[*n]).collect();
    services.sort_by_key(|b| service_rank(b));
    for (position, block) in positions.into_iter().zip(services) {
        ordered[position] = block;
    }
    let mut out = String::new();
    for line in ordered.iter().flat_map(|b| &b.parseable) {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// `ldm list -l` / `ldm list-bindings`: each domain's row, then its blocks (bindings as
/// list-bindings reports them, service owners from list-services), domains separated by a
/// line of dashes. `-o` (`groups`) narrows the blocks and, as Oracle's, heads each domain
/// with `NAME` and its name instead of the table. `parseable` gives the `-l -p` form.
pub fn long_listing(reply: &Reply, groups: &[String], parseable: bool) -> String {
    let owners = service_owners(reply);
    let bindings = contents(reply, Action::ListBindings);
    let mut out = String::new();
    if parseable {
        let _ = writeln!(out, "{PARSEABLE_VERSION}");
    }
    for (n, row) in domain_rows(reply).iter().enumerate() {
        let blocks: Vec<Block> = bindings
            .iter()
            .find(|c| c.id == row.name)
            .map(|c| domain_blocks(c, &owners))
            .unwrap_or_default()
            .into_iter()
            .filter(|b| b.shown(groups))
            .collect();
        let blocks = with_softstate(with_stats(blocks, row, groups), row, groups);
        if parseable {
            let _ = writeln!(out, "{}", parseable_row(row, true));
            out.push_str(&blocks_parseable(&blocks));
            continue;
        }
        if n > 0 {
            let _ = writeln!(out, "{SEPARATOR}");
        }
        if groups.is_empty() {
            let _ = writeln!(out, "{TABLE_HEADER}\n{}\n", table_row(row));
        } else {
            let _ = writeln!(out, "NAME\n{}\n", row.name);
        }
        out.push_str(&blocks_text(&blocks));
    }
    out
}

/// SOFTSTATE, right after the row, as the guide's long listings show it: the readable form
/// only (the DOMAIN record carries `softstate`), and only when the domain reports one.
fn with_softstate(mut blocks: Vec<Block>, row: &DomainRow, groups: &[String]) -> Vec<Block> {
    let softstate = Block {
        title: "SOFTSTATE",
        group: "domain",
        human: vec![row.softstate.clone()],
        parseable: Vec::new(),
    };
    if !row.softstate.is_empty() && softstate.shown(groups) {
        blocks.insert(0, softstate);
    }
    blocks
}

/// `-o stats`: the domain's utilisation and uptime, which the table row carries otherwise.
fn with_stats(mut blocks: Vec<Block>, row: &DomainRow, groups: &[String]) -> Vec<Block> {
    if groups.iter().any(|g| g == "stats") {
        let util = row.util.clone().unwrap_or_default();
        let norm = row.norm_util.clone().unwrap_or_default();
        let uptime = row.uptime.map_or(String::new(), |u| u.to_string());
        let readable = row.uptime.map_or(String::new(), format_uptime);
        blocks.push(Block {
            title: "STATS",
            group: "stats",
            human: table(
                &[col("UTIL", 5), col("NORM", 5), col("UPTIME", 0)],
                &[vec![percent(&util), percent(&norm), readable]],
            ),
            parseable: vec![record(
                "STATS",
                &[("util", &util), ("norm_util", &norm), ("uptime", &uptime)],
            )],
        });
    }
    blocks
}

/// `ldm list-constraints [-p]`: each domain's constraints (`DOMAIN` and its name, then the
/// long form's blocks with counts and sizes), domains separated by a line of dashes.
pub fn constraints(reply: &Reply, parseable: bool) -> String {
    let owners = service_owners(reply);
    let mut out = String::new();
    if parseable {
        let _ = writeln!(out, "{PARSEABLE_VERSION}");
    }
    let mut listed = contents(reply, Action::ListConstraints);
    // The control domain first, as in every listing.
    listed.sort_by_key(|c| c.id != crate::registry::CONTROL_DOMAIN);
    for (n, content) in listed.into_iter().enumerate() {
        let blocks = domain_blocks(content, &owners);
        if parseable {
            let _ = writeln!(out, "DOMAIN|name={}", content.id);
            out.push_str(&blocks_parseable(&blocks));
        } else {
            if n > 0 {
                let _ = writeln!(out, "{SEPARATOR}");
            }
            let _ = writeln!(out, "DOMAIN\n{}\n", content.id);
            out.push_str(&blocks_text(&blocks));
        }
    }
    out
}

/// `ldm list-services [-p]`: VCC, VSW and VDS over every domain, with the providing domain,
/// the control domain's first.
pub fn services(reply: &Reply, parseable: bool) -> String {
    let mut listed = contents(reply, Action::ListServices);
    listed.sort_by_key(|c| c.id != crate::registry::CONTROL_DOMAIN);
    let mut merged: Vec<Block> = Vec::new();
    for content in listed {
        let all: Vec<&Item> = items(content).collect();
        for block in service_blocks(&all, Some(&content.id)) {
            match merged.iter_mut().find(|b| b.title == block.title) {
                Some(existing) => {
                    // The header is already there.
                    existing.human.extend(block.human.into_iter().skip(1));
                    existing.parseable.extend(block.parseable);
                }
                None => merged.push(block),
            }
        }
    }
    let rank = |b: &Block| ["VCC", "VSW", "VDS"].iter().position(|t| *t == b.title);
    merged.sort_by_key(rank);
    render(&merged, parseable)
}

/// Blocks in either form, the parseable one after its VERSION line.
pub fn render(blocks: &[Block], parseable: bool) -> String {
    if parseable {
        format!("{PARSEABLE_VERSION}\n{}", blocks_parseable(blocks))
    } else {
        blocks_text(blocks)
    }
}

/// `ldm list-spconfig [-p]`: one configuration a line, `[current]` and `[next poweron]`
/// marked as the ldm CLI marks them.
pub fn spconfig(reply: &Reply, parseable: bool) -> String {
    let mut out = String::new();
    if parseable {
        let _ = writeln!(out, "{PARSEABLE_VERSION}");
    }
    for (name, status) in spconfigs(reply) {
        if parseable {
            let _ = writeln!(out, "SPCONFIG|name={name}|status={status}");
            continue;
        }
        match status.as_str() {
            "" => {
                let _ = writeln!(out, "{name}");
            }
            "next" => {
                let _ = writeln!(out, "{name} [next poweron]");
            }
            other => {
                let _ = writeln!(out, "{name} [{other}]");
            }
        }
    }
    out
}

/// `ldm list-variable [-p] [NAME...] DOMAIN`: `name=value` lines, or with `parseable` the
/// VARIABLES record of `list -l -p` (`VARIABLES`, then `|name=value` per variable).
pub fn variables(reply: &Reply, names: &[String], parseable: bool) -> String {
    let mut out = String::new();
    if parseable {
        let _ = writeln!(out, "{PARSEABLE_VERSION}\nVARIABLES");
    }
    for content in contents(reply, Action::ListVariable) {
        for var in items(content).filter(|i| i.resource_type == "var") {
            let name = var.property("name").unwrap_or_default();
            let value = var.property("value").unwrap_or_default();
            if !(names.is_empty() || names.iter().any(|n| n == name)) {
                continue;
            }
            if parseable {
                let _ = writeln!(out, "{}", record("", &[(name, value)]));
            } else {
                let _ = writeln!(out, "{name}={value}");
            }
        }
    }
    out
}

/// One line for an event: its action, the domain or SP configuration it concerns, and each
/// resource it carries as `type=units` or `type(key=value,...)`.
pub fn event_line(event: &EventDoc) -> String {
    let mut line = event.action.clone();
    for envelope in event.data.iter().filter_map(|d| d.envelope.as_ref()) {
        let resources = envelope
            .contents
            .iter()
            .map(|c| (Some(c.id.as_str()), items(c).collect::<Vec<_>>()))
            .chain(
                envelope
                    .sections
                    .iter()
                    .map(|s| (None, s.items.iter().collect())),
            );
        for (domain, items) in resources {
            if let Some(domain) = domain {
                let _ = write!(line, " {domain}");
            }
            for item in items {
                line.push(' ');
                line.push_str(&describe(item));
            }
        }
    }
    line
}

fn describe(item: &Item) -> String {
    if item.resource_type == "spconfig"
        && let Some(name) = item.property("spconfig_name")
    {
        return format!("spconfig={name}");
    }
    let mut parts: Vec<String> = Vec::new();
    if let Some(address) = &item.address {
        parts.push(format!("mac-addr={address}"));
    }
    parts.extend(
        item.properties
            .iter()
            .map(|p| format!("{}={}", p.key, p.value)),
    );
    match (&item.allocation_units, parts.is_empty()) {
        (Some(units), true) => format!("{}={units}", item.resource_type),
        (Some(units), false) => format!("{}={units}({})", item.resource_type, parts.join(",")),
        (None, true) => item.resource_type.clone(),
        (None, false) => format!("{}({})", item.resource_type, parts.join(",")),
    }
}

#[cfg(test)]
mod tests;
