//! The text renderings: the familiar `ldm list` table, its long form (`-l`), the parseable
//! form (`-p`: `VERSION 1.6`, then `|`-separated `key=value` lines, stable for scripts), and
//! the readable output of the other list commands and of events.
//!
//! Columns of the table are those of the ldm CLI: NAME STATE FLAGS CONS VCPU MEMORY UTIL
//! UPTIME, with MEMORY in the largest exact unit (`4G`, `1536M`) and UPTIME like `1h 2m`. A
//! field the daemon did not report prints as `-` in the table and empty in `-p`.

use std::fmt::Write as _;

use crate::cli::view::{
    Block, Body, DomainRow, contents, device_blocks, domain_blocks, domain_rows, items,
    service_blocks, service_owners, spconfigs,
};
use crate::ldm::action::Action;
use crate::ldm::document::Item;
use crate::ldm::reply::{EventDoc, Reply};
use crate::registry::units::{format_size, parse_size};

/// The first line of every parseable listing (the version the ldm CLI's `-p` output carries).
pub const PARSEABLE_VERSION: &str = "VERSION 1.6";

/// The line between domains in a long listing.
const SEPARATOR: &str =
    "------------------------------------------------------------------------------";

/// `1h 2m`, `3d 4h 5m`, `42s`.
pub fn format_uptime(seconds: u64) -> String {
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60);
    match (days, hours) {
        (0, 0) if seconds < 60 => format!("{seconds}s"),
        (0, 0) => format!("{minutes}m"),
        (0, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h {minutes}m"),
    }
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
    "NAME             STATE      FLAGS   CONS    VCPU  MEMORY   UTIL  UPTIME";

/// One row of the table (no trailing spaces). A field the daemon does not report is left
/// blank, as Oracle's ldm leaves an inactive domain's CONS, UTIL and UPTIME.
pub fn table_row(row: &DomainRow) -> String {
    let util = row.util.as_ref().map(|u| format!("{u}%"));
    let line = format!(
        "{:<16} {:<10} {:<7} {:<7} {:<5} {:<8} {:<5} {}",
        row.name,
        row.state,
        row.flags,
        row.cons,
        row.ncpu.map_or(String::new(), |n| n.to_string()),
        row.mem.map_or(String::new(), format_size),
        util.as_deref().unwrap_or_default(),
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

/// `DOMAIN|name=..|state=..|flags=..|cons=..|ncpu=..|mem=..|util=..|uptime=..`, the flags
/// spelled out (`long`, for `-l -p`) or as their six letters.
pub fn parseable_row(row: &DomainRow, long: bool) -> String {
    let flags = if long {
        flag_words(&row.flags)
    } else {
        row.flags.clone()
    };
    format!(
        "DOMAIN|name={}|state={}|flags={}|cons={}|ncpu={}|mem={}|util={}|uptime={}",
        row.name,
        row.state,
        flags,
        row.cons,
        row.ncpu.map_or(String::new(), |n| n.to_string()),
        row.mem.map_or(String::new(), |m| m.to_string()),
        row.util.as_deref().unwrap_or_default(),
        row.uptime.map_or(String::new(), |u| u.to_string()),
    )
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

/// Keeps the blocks of the `-o` groups asked for (all when none).
fn keep(blocks: Vec<Block>, groups: &[String]) -> Vec<Block> {
    blocks
        .into_iter()
        .filter(|b| groups.is_empty() || groups.iter().any(|g| g == b.group))
        .collect()
}

/// Blocks as text: a title, then indented values, settings or an aligned table.
pub fn blocks_text(blocks: &[Block]) -> String {
    let mut out = String::new();
    for block in blocks {
        let _ = writeln!(out, "{}", block.title);
        match &block.body {
            Body::Value(_, value) => {
                let _ = writeln!(out, "    {value}");
            }
            Body::Settings(settings) => {
                for (key, value) in settings {
                    let _ = writeln!(out, "    {key}={value}");
                }
            }
            Body::Table { columns, rows } => {
                let headers: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
                let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
                for row in rows {
                    for (width, cell) in widths.iter_mut().zip(row) {
                        *width = (*width).max(cell.chars().count());
                    }
                }
                let line = |cells: &mut dyn Iterator<Item = &str>| {
                    let mut text = String::from("    ");
                    for (cell, width) in cells.zip(&widths) {
                        let _ = write!(text, "{cell:<width$}  ");
                    }
                    text.trim_end().to_owned()
                };
                let _ = writeln!(out, "{}", line(&mut headers.iter().copied()));
                for row in rows {
                    let _ = writeln!(out, "{}", line(&mut row.iter().map(String::as_str)));
                }
            }
        }
        out.push('\n');
    }
    out
}

/// Sizes are bytes in the parseable form, as the ldm CLI writes them.
fn parseable_cell(key: &str, cell: &str) -> String {
    match key {
        "size" => parse_size(cell).map_or_else(|_| cell.to_owned(), |b| b.to_string()),
        _ => cell.to_owned(),
    }
}

/// Blocks in the parseable form: `TITLE|key=value` for values and settings, `TITLE` then one
/// `|key=value|...` line per row for tables.
pub fn blocks_parseable(blocks: &[Block]) -> String {
    let mut out = String::new();
    for block in blocks {
        let title = block.title.replace(' ', "-");
        match &block.body {
            Body::Value(key, value) => {
                let _ = writeln!(out, "{title}|{key}={value}");
            }
            Body::Settings(settings) => {
                out.push_str(&title);
                for (key, value) in settings {
                    let _ = write!(out, "|{key}={value}");
                }
                out.push('\n');
            }
            Body::Table { columns, rows } => {
                let _ = writeln!(out, "{title}");
                for row in rows {
                    for ((_, key), cell) in columns.iter().zip(row) {
                        let _ = write!(out, "|{key}={}", parseable_cell(key, cell));
                    }
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// `ldm list -l` / `ldm list-bindings`: each domain's row, then its blocks (bindings as
/// list-bindings reports them, service owners from list-services), domains separated by a
/// line of dashes. `parseable` gives the `-l -p` form.
pub fn long_listing(reply: &Reply, groups: &[String], parseable: bool) -> String {
    let owners = service_owners(reply);
    let bindings = contents(reply, Action::ListBindings);
    let mut out = String::new();
    if parseable {
        let _ = writeln!(out, "{PARSEABLE_VERSION}");
    }
    for (n, row) in domain_rows(reply).iter().enumerate() {
        let blocks = bindings
            .iter()
            .find(|c| c.id == row.name)
            .map(|c| keep(domain_blocks(c, &owners), groups))
            .unwrap_or_default();
        if parseable {
            let _ = writeln!(out, "{}", parseable_row(row, true));
            out.push_str(&blocks_parseable(&blocks));
            continue;
        }
        if n > 0 {
            let _ = writeln!(out, "{SEPARATOR}");
        }
        let _ = writeln!(out, "{TABLE_HEADER}\n{}\n", table_row(row));
        out.push_str(&blocks_text(&blocks));
    }
    out
}

/// `ldm list-constraints [-p]`: each domain's constraints in the long form's blocks.
pub fn constraints(reply: &Reply, parseable: bool) -> String {
    let owners = service_owners(reply);
    let mut out = String::new();
    if parseable {
        let _ = writeln!(out, "{PARSEABLE_VERSION}");
    }
    for content in contents(reply, Action::ListConstraints) {
        let blocks = domain_blocks(content, &owners);
        if parseable {
            let _ = writeln!(out, "DOMAIN|name={}", content.id);
            out.push_str(&blocks_parseable(&blocks));
        } else {
            let _ = writeln!(out, "DOMAIN\n{}\n", content.id);
            out.push_str(&blocks_text(&blocks));
        }
    }
    out
}

/// `ldm list-services [-p]`: VCC, VSW and VDS tables over every domain, with an LDOM column.
pub fn services(reply: &Reply, parseable: bool) -> String {
    let mut merged: Vec<Block> = Vec::new();
    for content in contents(reply, Action::ListServices) {
        let all: Vec<&Item> = items(content).collect();
        for block in service_blocks(&all, Some(&content.id)) {
            match merged.iter_mut().find(|b| b.title == block.title) {
                Some(Block {
                    body: Body::Table { rows, .. },
                    ..
                }) => {
                    if let Body::Table { rows: more, .. } = block.body {
                        rows.extend(more);
                    }
                }
                _ => merged.push(block),
            }
        }
    }
    render(&merged, parseable)
}

fn render(blocks: &[Block], parseable: bool) -> String {
    if parseable {
        format!("{PARSEABLE_VERSION}\n{}", blocks_parseable(blocks))
    } else {
        blocks_text(blocks)
    }
}

/// `ldm list-devices [-p] [cpu|crypto|memory|io...]`: free resources and I/O devices.
pub fn devices(reply: &Reply, groups: &[String], parseable: bool) -> String {
    let groups: Vec<String> = groups
        .iter()
        .map(|g| {
            if g == "io" {
                "physio".into()
            } else {
                g.clone()
            }
        })
        .collect();
    render(&keep(device_blocks(reply), &groups), parseable)
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

/// `ldm list-variable [NAME...] DOMAIN`: `name=value` lines.
pub fn variables(reply: &Reply, names: &[String]) -> String {
    let mut out = String::new();
    for content in contents(reply, Action::ListVariable) {
        for var in items(content).filter(|i| i.resource_type == "var") {
            let name = var.property("name").unwrap_or_default();
            if names.is_empty() || names.iter().any(|n| n == name) {
                let _ = writeln!(out, "{name}={}", var.property("value").unwrap_or_default());
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
mod tests {
    use super::*;
    use crate::ldm::reply::Reply;

    /// A list-domain reply as ldmd writes it: a guest, then the control domain.
    const LISTING: &str = "<LDM_interface version='1.3'><cmd><action>list-domain</action><data version='3.0'><Envelope><References/>\
        <Content id='ldg1'><Section><Item><rasd:OtherResourceType>ldom_info</rasd:OtherResourceType><uuid>u-1</uuid><rasd:Address>00:14:4f:f8:00:02</rasd:Address>\
        <gprop:GenericProperty key='state'>active</gprop:GenericProperty><gprop:GenericProperty key='flags'>-n----</gprop:GenericProperty>\
        <gprop:GenericProperty key='cons'>5000</gprop:GenericProperty><gprop:GenericProperty key='ncpu'>8</gprop:GenericProperty>\
        <gprop:GenericProperty key='mem'>4294967296</gprop:GenericProperty><gprop:GenericProperty key='uptime'>3720</gprop:GenericProperty>\
        <gprop:GenericProperty key='hostid'>0x84f80002</gprop:GenericProperty><gprop:GenericProperty key='failure-policy'>ignore</gprop:GenericProperty></Item></Section></Content>\
        <Content id='primary'><Section><Item><rasd:OtherResourceType>ldom_info</rasd:OtherResourceType>\
        <gprop:GenericProperty key='state'>active</gprop:GenericProperty><gprop:GenericProperty key='flags'>-n-cv-</gprop:GenericProperty>\
        <gprop:GenericProperty key='cons'>UART</gprop:GenericProperty><gprop:GenericProperty key='ncpu'>16</gprop:GenericProperty>\
        <gprop:GenericProperty key='mem'>17179869184</gprop:GenericProperty><gprop:GenericProperty key='uptime'>90061</gprop:GenericProperty></Item></Section></Content>\
        <Content id='ldg2'><Section><Item><rasd:OtherResourceType>ldom_info</rasd:OtherResourceType>\
        <gprop:GenericProperty key='state'>inactive</gprop:GenericProperty><gprop:GenericProperty key='flags'>------</gprop:GenericProperty>\
        <gprop:GenericProperty key='cons'></gprop:GenericProperty><gprop:GenericProperty key='ncpu'>2</gprop:GenericProperty>\
        <gprop:GenericProperty key='mem'>1610612736</gprop:GenericProperty><gprop:GenericProperty key='uptime'></gprop:GenericProperty></Item></Section></Content>\
        </Envelope><response><status>success</status></response></data><response><status>success</status></response></cmd><response><status>success</status></response></LDM_interface>";

    fn rows() -> Vec<DomainRow> {
        domain_rows(&Reply::from_xml(LISTING).unwrap())
    }

    #[test]
    fn the_table_has_the_ldm_columns_control_domain_first() {
        assert_eq!(
            list_table(&rows()),
            "NAME             STATE      FLAGS   CONS    VCPU  MEMORY   UTIL  UPTIME\n\
             primary          active     -n-cv-  UART    16    16G            1d 1h 1m\n\
             ldg1             active     -n----  5000    8     4G             1h 2m\n\
             ldg2             inactive   ------          2     1536M\n"
        );
    }

    #[test]
    fn the_parseable_form_gives_flag_letters_bytes_and_seconds_and_spells_flags_when_long() {
        // Oracle's rule (Flag Definitions): letters in `ldm list -p`, words with `-l -p`.
        assert_eq!(
            list_parseable(&rows()),
            "VERSION 1.6\n\
             DOMAIN|name=primary|state=active|flags=-n-cv-|cons=UART|ncpu=16|mem=17179869184|util=|uptime=90061\n\
             DOMAIN|name=ldg1|state=active|flags=-n----|cons=5000|ncpu=8|mem=4294967296|util=|uptime=3720\n\
             DOMAIN|name=ldg2|state=inactive|flags=------|cons=|ncpu=2|mem=1610612736|util=|uptime=\n"
        );
        let long: Vec<String> = rows().iter().map(|r| parseable_row(r, true)).collect();
        assert_eq!(
            long,
            [
                "DOMAIN|name=primary|state=active|flags=normal,control,vio-service|cons=UART|ncpu=16|mem=17179869184|util=|uptime=90061",
                "DOMAIN|name=ldg1|state=active|flags=normal|cons=5000|ncpu=8|mem=4294967296|util=|uptime=3720",
                "DOMAIN|name=ldg2|state=inactive|flags=|cons=|ncpu=2|mem=1610612736|util=|uptime=",
            ]
        );
        assert_eq!(
            flag_words("snrcvs"),
            "starting-or-stopping,normal,memory-dr,control,vio-service,source"
        );
        assert_eq!(flag_words("-td--e"), "transition,delayed-reconf,error");
    }

    #[test]
    fn uptime_reads_like_the_ldm_cli() {
        assert_eq!(format_uptime(0), "0s");
        assert_eq!(format_uptime(59), "59s");
        assert_eq!(format_uptime(60), "1m");
        assert_eq!(format_uptime(3720), "1h 2m");
        assert_eq!(format_uptime(86_400 + 7260), "1d 2h 1m");
    }

    #[test]
    fn blocks_render_as_text_tables_and_as_parseable_lines() {
        let blocks = vec![
            Block {
                title: "UUID".into(),
                group: "domain",
                body: Body::Value("uuid", "u-1".into()),
            },
            Block {
                title: "MEMORY".into(),
                group: "memory",
                body: Body::Table {
                    columns: vec![("RA", "ra"), ("SIZE", "size")],
                    rows: vec![vec!["0x10000000".into(), "4G".into()]],
                },
            },
        ];
        assert_eq!(
            blocks_text(&blocks),
            "UUID\n    u-1\n\nMEMORY\n    RA          SIZE\n    0x10000000  4G\n\n"
        );
        assert_eq!(
            blocks_parseable(&blocks),
            "UUID|uuid=u-1\nMEMORY\n|ra=0x10000000|size=4294967296\n"
        );
        assert_eq!(keep(blocks, &["memory".into()]).len(), 1);
    }

    #[test]
    fn an_event_line_names_the_action_the_domain_and_the_resources() {
        let event = EventDoc::from_xml("<LDM_event version='1.1'><cmd><action>add-vnet</action><data version='3.0'><Envelope><References/><Content id='ldg1'><Section><Item><rasd:OtherResourceType>network</rasd:OtherResourceType><gprop:GenericProperty key='vnet_name'>vnet1</gprop:GenericProperty></Item><Item><rasd:OtherResourceType>cpu</rasd:OtherResourceType><rasd:AllocationUnits>8</rasd:AllocationUnits></Item></Section></Content></Envelope></data></cmd></LDM_event>").unwrap();
        assert_eq!(
            event_line(&event),
            "add-vnet ldg1 network(vnet_name=vnet1) cpu=8"
        );
    }

    #[test]
    fn a_failed_listing_renders_what_succeeded_and_never_panics() {
        let reply = Reply::from_xml("<LDM_interface version='1.3'><cmd><action>list-domain</action><data version='3.0'><Envelope><Content id='x'/></Envelope><response><status>failure</status><resp_msg>LDom x does not exist</resp_msg></response></data></cmd><response><status>failure</status></response></LDM_interface>").unwrap();
        assert_eq!(
            list_table(&domain_rows(&reply)),
            format!("{TABLE_HEADER}\n")
        );
        assert_eq!(long_listing(&reply, &[], false), "");
        assert_eq!(reply.failures(), ["LDom x does not exist"]);
        // A Content without any ldom_info still gets a row: its name, every field blank.
        let bare = Reply::from_xml("<LDM_interface><cmd><action>list-domain</action><data><Envelope><Content id='y'/></Envelope><response><status>success</status></response></data></cmd></LDM_interface>").unwrap();
        assert_eq!(table_row(&domain_rows(&bare)[0]), "y");
    }
}
