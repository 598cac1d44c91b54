//! What a domain is: its identity (ldom_info) and its summary row (state, flags, console,
//! counts, utilisation, uptime, softstate), as list-domain reports them.

use super::prop;
use crate::ldm::document::Item;
use crate::registry::CONTROL_DOMAIN;
use crate::registry::model::{Domain, DomainState};
use crate::registry::state::Registry;
use crate::registry::units::{format_mac, format_size};

/// The six flag positions of §3.
pub fn flags(reg: &Registry, domain: &Domain) -> String {
    let mut flags = ['-'; 6];
    if let Some(flag) = reg.migration_of(&domain.name).and_then(|m| m.flag()) {
        flags[5] = flag;
    }
    if domain.state == DomainState::Active {
        flags[1] = 'n';
    }
    if domain.reconf.is_some() {
        flags[2] = 'd';
    } else if domain.memdr.is_some() {
        flags[2] = 'r';
    }
    if domain.name == CONTROL_DOMAIN {
        flags[3] = 'c';
    }
    if !(domain.vds.is_empty() && domain.vsw.is_empty() && domain.vcc.is_empty()) {
        flags[4] = 'v';
    }
    flags.iter().collect()
}

/// The console column: the SP's UART for the control domain, the bound port for a guest.
fn console(domain: &Domain) -> String {
    if domain.name == CONTROL_DOMAIN {
        return "UART".into();
    }
    domain
        .binding
        .as_ref()
        .and_then(|b| b.console_port)
        .map_or_else(String::new, |port| port.to_string())
}

pub(super) fn info(domain: &Domain) -> Item {
    let mut properties = vec![
        prop("hostid", format!("0x{:08x}", domain.hostid)),
        prop("failure-policy", &domain.failure_policy),
    ];
    if !domain.master.is_empty() {
        properties.push(prop("master", domain.master.join(",")));
    }
    properties.extend(domain.options.iter().map(|(k, v)| prop(k, v)));
    Item {
        resource_type: "ldom_info".into(),
        uuid: Some(domain.uuid.clone()),
        address: Some(format_mac(domain.mac)),
        properties,
        ..Item::default()
    }
}

pub(super) fn summary(reg: &Registry, domain: &Domain, now: u64) -> Item {
    let mut item = info(domain);
    let memory = domain
        .binding
        .as_ref()
        .map_or(domain.memory, |b| b.memory_bytes());
    let uptime = match (domain.state, domain.started_at) {
        (DomainState::Active, Some(at)) => now.saturating_sub(at).to_string(),
        _ => String::new(),
    };
    let util = utilisation(reg, domain).map_or_else(String::new, format_util);
    let mut properties = vec![
        prop("state", domain.state.as_str()),
        prop("flags", flags(reg, domain)),
        prop("cons", console(domain)),
        // A domain created without resources shows none, as in Oracle's listing.
        prop("ncpu", nonzero(u64::from(domain.vcpus))),
        prop("mem", nonzero(memory)),
        prop("util", &util),
        // No CPU power management: every strand runs at full speed, so the normalised figure
        // is the figure itself.
        prop("norm_util", &util),
        prop("uptime", uptime),
        prop("softstate", softstate(domain)),
    ];
    if let Some(dr) = &domain.memdr {
        properties.push(prop(
            "memdr",
            format!(
                "{} {} of {}",
                dr.action,
                format_size(dr.done),
                format_size(dr.bytes)
            ),
        ));
    }
    if let Some((operation, progress, peer)) =
        crate::registry::actions::migration::status(reg, &domain.name)
    {
        properties.push(prop("operation", operation));
        properties.push(prop("progress", progress));
        properties.push(prop("peer", peer));
    }
    properties.append(&mut item.properties);
    item.properties = properties;
    item
}

/// UTIL, in percent, of an active domain: the host's measured busy share for the control
/// domain (the host is the control domain); 0 for a guest, whose vCPUs run no guest code
/// (ldmd simulates domains). None for a domain that is not running, which `ldm` leaves blank.
pub(super) fn utilisation(reg: &Registry, domain: &Domain) -> Option<f64> {
    if domain.state != DomainState::Active {
        return None;
    }
    if domain.name == CONTROL_DOMAIN {
        reg.host_util
    } else {
        Some(0.0)
    }
}

fn nonzero(n: u64) -> String {
    if n == 0 { String::new() } else { n.to_string() }
}

/// A utilisation as `ldm` prints it: one decimal below 10 (`0.6`), whole above (`29`).
pub fn format_util(percent: f64) -> String {
    if percent < 9.95 {
        format!("{percent:.1}")
    } else {
        format!("{percent:.0}")
    }
}

/// What the domain's software is doing, in Oracle's words where they are true: the host runs
/// Linux; a started guest has no operating system to boot, so it sits in its firmware, as a
/// real domain does at the `ok` prompt.
fn softstate(domain: &Domain) -> &'static str {
    match (domain.state, domain.name == CONTROL_DOMAIN) {
        (DomainState::Active, true) => "Linux running",
        (DomainState::Active, false) => "OpenBoot Running",
        _ => "",
    }
}
