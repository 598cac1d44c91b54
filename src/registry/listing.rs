//! The `list-*` actions, answered in request form (§4) so that their output can be sent back as
//! input; list-bindings adds `bind:Binding` children with what each resource is bound to.
//! One function per action, called from the registry's one `match` over actions
//! ([`crate::registry::actions::apply`]).

use crate::ldm::document::{
    Binding, Content, Data, Envelope, Item, Property, Section, SectionKind,
};
use crate::registry::CONTROL_DOMAIN;
use crate::registry::model::{Domain, FACTORY_DEFAULT};
use crate::registry::state::{Applied, Outcome, Registry};
use crate::registry::units::{format_mac, format_size};

mod devices;
mod summary;

pub use devices::HYPERVISOR_OWNER;
use devices::devices;
pub use summary::{flags, format_util};
use summary::{info, summary, utilisation};

pub fn list_domain(reg: &Registry, data: &Data, now: u64) -> Outcome {
    let domains = requested(reg, data)?;
    let contents = domains
        .iter()
        .map(|d| content(d, vec![summary(reg, d, now)]))
        .collect();
    answer(data, contents, Vec::new())
}

pub fn list_constraints(reg: &Registry, data: &Data) -> Outcome {
    let domains = requested(reg, data)?;
    let contents = domains
        .iter()
        .map(|d| content(d, constraints(reg, d, false)))
        .collect();
    answer(data, contents, Vec::new())
}

/// The bytes `domain`'s constraints take as one object of a list-constraints reply (and so,
/// sent back, of an add-domain request).
pub fn constraints_len(reg: &Registry, domain: &Domain, scratch: &mut Vec<u8>) -> usize {
    let data = Data {
        version: Some(crate::ldm::write::DATA_VERSION.into()),
        envelope: Some(Envelope {
            contents: vec![content(domain, constraints(reg, domain, false))],
            sections: Vec::new(),
        }),
    };
    crate::ldm::write::data_len(&data, scratch)
}

pub fn list_bindings(reg: &Registry, data: &Data) -> Outcome {
    let domains = requested(reg, data)?;
    let contents = domains
        .iter()
        .map(|d| content(d, constraints(reg, d, true)))
        .collect();
    answer(data, contents, Vec::new())
}

/// The domains that provide services, each with its services.
pub fn list_services(reg: &Registry, data: &Data) -> Outcome {
    let domains = requested(reg, data)?;
    let contents = domains
        .iter()
        .filter(|d| !(d.vds.is_empty() && d.vsw.is_empty() && d.vcc.is_empty()))
        .map(|d| content(d, services(reg, d, true)))
        .collect();
    answer(data, contents, Vec::new())
}

pub fn list_variable(reg: &Registry, data: &Data) -> Outcome {
    let domains = requested(reg, data)?;
    let contents = domains.iter().map(|d| content(d, variables(d))).collect();
    answer(data, contents, Vec::new())
}

/// The machine's free resources and unowned I/O devices; with the `-a` (`all`) option, bound
/// ones too, each naming its owner. Named domains must exist, though the answer is about the
/// whole machine.
pub fn list_devices(reg: &Registry, options: &[String], data: &Data) -> Outcome {
    requested(reg, data)?;
    let all = options.iter().any(|o| o == "-a" || o == "all");
    answer(data, Vec::new(), vec![devices(reg, all)])
}

/// Every SP configuration. Named domains must exist, as for list-devices.
pub fn list_spconfig(reg: &Registry, data: &Data) -> Outcome {
    requested(reg, data)?;
    answer(data, Vec::new(), vec![spconfig_section(reg, None)])
}

/// The domains a list data object names (one Content each), or every domain when it names none.
fn requested<'r>(reg: &'r Registry, data: &Data) -> Result<Vec<&'r Domain>, String> {
    let requested = data
        .envelope
        .as_ref()
        .map(|e| &e.contents[..])
        .unwrap_or_default();
    if requested.is_empty() {
        return Ok(reg.domains().collect());
    }
    requested
        .iter()
        .map(|c| {
            reg.domain(&c.id)
                .ok_or_else(|| format!("LDom {} does not exist", c.id))
        })
        .collect()
}

/// The object filled in: the listed Contents, or Envelope-level sections.
fn answer(data: &Data, contents: Vec<Content>, sections: Vec<Section>) -> Outcome {
    Ok(Applied {
        data: Some(Data {
            version: data.version.clone(),
            envelope: Some(Envelope { contents, sections }),
        }),
        ..Applied::default()
    })
}

fn content(domain: &Domain, items: Vec<Item>) -> Content {
    Content {
        id: domain.name.clone(),
        sections: vec![Section {
            kind: SectionKind::ResourceAllocation,
            items,
        }],
    }
}

fn prop(key: &str, value: impl ToString) -> Property {
    Property {
        key: key.into(),
        value: value.to_string(),
    }
}

fn item(resource: &str, units: Option<String>, properties: Vec<Property>) -> Item {
    Item {
        resource_type: resource.into(),
        allocation_units: units,
        properties,
        ..Item::default()
    }
}

/// The core a CPU belongs to (the machine has at least one thread per core).
fn core_of(cpu: u32, threads_per_core: u32) -> u32 {
    cpu.checked_div(threads_per_core).unwrap_or(cpu)
}

/// The strands of core `cid`.
fn core_cpus(cid: u32, threads_per_core: u32) -> Vec<u32> {
    let first = cid.saturating_mul(threads_per_core);
    (first..first.saturating_add(threads_per_core)).collect()
}

/// `0,1,2,3`
fn join_ids(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// A crypto unit: one per core, serving that core's strands (`cpuset`).
fn mau_item(id: u32, threads_per_core: u32, owner: &str) -> Item {
    let mut properties = vec![
        prop("id", id),
        prop("cid", id),
        prop("cpuset", join_ids(&core_cpus(id, threads_per_core))),
    ];
    if !owner.is_empty() {
        properties.push(prop("owner", owner));
    }
    item("mau", None, properties)
}

fn binding(items: Vec<Item>) -> Vec<Binding> {
    vec![Binding { items }]
}

/// Constraints in request form; with `bound`, each resource also says what it is bound to.
fn constraints(reg: &Registry, domain: &Domain, bound: bool) -> Vec<Item> {
    let bind = domain.binding.as_ref().filter(|_| bound);
    let tpc = reg.machine().threads_per_core;
    let mut info = info(domain);
    if bound {
        info.properties
            .insert(0, prop("state", domain.state.as_str()));
        info.properties.insert(1, prop("flags", flags(reg, domain)));
    }
    let mut items = vec![info];
    let mut cpu = item(
        "cpu",
        Some(domain.vcpus.to_string()),
        vec![prop("wcore", domain.wcore)],
    );
    if let Some(b) = bind {
        // Per-vCPU figures are not measured apart: each shows the domain's. A vCPU is a whole
        // hardware strand (STRAND 100%): ldmd never shares strands.
        let util = utilisation(reg, domain).map_or_else(String::new, format_util);
        cpu.bindings = binding(
            b.cpus
                .iter()
                .enumerate()
                .map(|(vid, pid)| {
                    item(
                        "cpu",
                        None,
                        vec![
                            prop("vid", vid),
                            prop("pid", pid),
                            prop("cid", core_of(*pid, tpc)),
                            prop("util", &util),
                            prop("norm_util", &util),
                            prop("strand", 100),
                        ],
                    )
                })
                .collect(),
        );
    }
    items.push(cpu);
    if domain.mau > 0 {
        let mut mau = item("mau", Some(domain.mau.to_string()), Vec::new());
        if let Some(b) = bind {
            mau.bindings = binding(b.maus.iter().map(|id| mau_item(*id, tpc, "")).collect());
        }
        items.push(mau);
    }
    let mut memory = item("memory", Some(format_size(domain.memory)), Vec::new());
    if let Some(b) = bind {
        memory.bindings = binding(
            b.memory
                .iter()
                .map(|m| {
                    item(
                        "memory",
                        None,
                        vec![
                            prop("ra", format!("0x{:x}", m.ra)),
                            prop("pa", format!("0x{:x}", m.pa)),
                            prop("size", format_size(m.size)),
                        ],
                    )
                })
                .collect(),
        );
    }
    items.push(memory);
    if let Some(reconf) = &domain.reconf {
        let mut pending = Vec::new();
        if let Some(m) = reconf.memory {
            pending.push(prop("memory", format_size(m)));
        }
        if !reconf.io_add.is_empty() {
            pending.push(prop("io-add", reconf.io_add.join(",")));
        }
        if !reconf.io_remove.is_empty() {
            pending.push(prop("io-remove", reconf.io_remove.join(",")));
        }
        items.push(item("reconf", None, pending));
    }
    items.extend(services(reg, domain, bound));
    for disk in &domain.vdisks {
        let mut properties = vec![
            prop("vdisk_name", &disk.name),
            prop("service_name", &disk.service),
            prop("vol_name", &disk.volume),
        ];
        if let Some(t) = disk.timeout {
            properties.push(prop("timeout", t));
        }
        let mpgroup = reg
            .services
            .get(&disk.service)
            .and_then(|owner| reg.domain(owner))
            .and_then(|d| d.vds.iter().find(|v| v.name == disk.service))
            .and_then(|v| v.volumes.iter().find(|v| v.name == disk.volume))
            .and_then(|v| v.mpgroup.as_deref());
        if bound && let Some(mpgroup) = mpgroup {
            properties.push(prop("mpgroup", mpgroup));
        }
        properties.push(prop("id", disk.id));
        items.push(item("disk", None, properties));
    }
    for net in &domain.vnets {
        let mut properties = vec![
            prop("vnet_name", &net.name),
            prop("service_name", &net.service),
            prop("pvid", net.pvid),
        ];
        if !net.vid.is_empty() {
            properties.push(prop("vid", join(&net.vid)));
        }
        properties.extend(net.mode.iter().map(|m| prop("mode", m)));
        properties.extend(net.linkprop.iter().map(|l| prop("linkprop", l)));
        properties.push(prop("id", net.id));
        if bound {
            // A vnet's MTU is its switch's.
            let mtu = reg
                .services
                .get(&net.service)
                .and_then(|owner| reg.domain(owner))
                .and_then(|d| d.vsw.iter().find(|v| v.name == net.service))
                .map(|v| v.mtu);
            properties.extend(mtu.map(|m| prop("mtu", m)));
        }
        let mut network = item("network", None, properties);
        network.address = Some(format_mac(net.mac));
        items.push(network);
    }
    if domain.name != CONTROL_DOMAIN {
        let mut properties = Vec::new();
        let port = bind.and_then(|b| b.console_port).or(domain.console.port);
        // Bound without a named vcc, the console took a port of the first that had one free:
        // the one holding its port.
        let service = domain.console.service.clone().or_else(|| {
            let port = bind.and_then(|b| b.console_port)?;
            let holders: Vec<&String> = reg
                .console_ports
                .iter()
                .filter(|(_, p)| *p == port)
                .map(|(vcc, _)| vcc)
                .collect();
            match holders[..] {
                [vcc] => Some(vcc.clone()),
                _ => None,
            }
        });
        properties.extend(service.iter().map(|s| prop("service_name", s)));
        properties.extend(port.map(|p| prop("port", p)));
        properties.extend(domain.console.group.iter().map(|g| prop("group", g)));
        properties.push(prop(
            "enable-log",
            if domain.console.enable_log {
                "on"
            } else {
                "off"
            },
        ));
        items.push(item("console", None, properties));
    } else if bound {
        // The control domain's console is the service processor's, reached without a vcc.
        items.push(item("console", None, vec![prop("type", "SP")]));
    }
    items.extend(variables(domain));
    for device in &domain.io {
        let path = reg
            .machine()
            .io_device(device)
            .map_or("", |d| d.path.as_str());
        items.push(item(
            "physio_device",
            None,
            vec![prop("name", device), prop("path", path)],
        ));
    }
    items
}

fn join(ids: &[u16]) -> String {
    ids.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

/// The services a domain provides. With `bound` (list-bindings, list-services), `nclients`
/// counts the clients bound to each: virtual disks and network devices of bound or active
/// domains, and consoles holding a port; constraints carry no such count.
fn services(reg: &Registry, domain: &Domain, bound: bool) -> Vec<Item> {
    let bound_domains = || reg.domains().filter(|d| d.binding.is_some());
    let with_clients = |mut properties: Vec<Property>, count: usize| {
        if bound {
            properties.push(prop("nclients", count));
        }
        properties
    };
    let mut items = Vec::new();
    for vds in &domain.vds {
        let count = bound_domains()
            .flat_map(|d| &d.vdisks)
            .filter(|v| v.service == vds.name)
            .count();
        items.push(item(
            "vds",
            None,
            with_clients(vec![prop("service_name", &vds.name)], count),
        ));
        for volume in &vds.volumes {
            let mut properties = vec![
                prop("vol_name", &volume.name),
                prop("service_name", &vds.name),
                prop("block_dev", &volume.block_dev),
            ];
            if !volume.opts.is_empty() {
                properties.push(prop("vol_opts", volume.opts.join(",")));
            }
            properties.extend(volume.mpgroup.iter().map(|m| prop("mpgroup", m)));
            items.push(item("vds_volume", None, properties));
        }
    }
    for vsw in &domain.vsw {
        let count = bound_domains()
            .flat_map(|d| &d.vnets)
            .filter(|v| v.service == vsw.name)
            .count();
        let mut properties = with_clients(
            vec![prop("service_name", &vsw.name), prop("id", vsw.id)],
            count,
        );
        properties.extend(vsw.net_dev.iter().map(|d| prop("dev_path", d)));
        // A switch's own port VLAN is its default VLAN for the vnets that give none.
        properties.push(prop("default-vlan-id", vsw.pvid));
        properties.push(prop("pvid", vsw.pvid));
        if !vsw.vid.is_empty() {
            properties.push(prop("vid", join(&vsw.vid)));
        }
        properties.push(prop("mtu", vsw.mtu));
        properties.extend(vsw.mode.iter().map(|m| prop("mode", m)));
        properties.extend(vsw.linkprop.iter().map(|l| prop("linkprop", l)));
        properties.push(prop(
            "inter_vnet_link",
            if vsw.inter_vnet_link { "on" } else { "off" },
        ));
        let mut item = item("vsw", None, properties);
        item.address = Some(format_mac(vsw.mac));
        items.push(item);
    }
    for vcc in &domain.vcc {
        let count = reg
            .console_ports
            .iter()
            .filter(|(v, _)| *v == vcc.name)
            .count();
        items.push(item(
            "vcc",
            None,
            with_clients(
                vec![
                    prop("service_name", &vcc.name),
                    prop("min_port", vcc.min_port),
                    prop("max_port", vcc.max_port),
                ],
                count,
            ),
        ));
    }
    items
}

fn variables(domain: &Domain) -> Vec<Item> {
    domain
        .variables
        .iter()
        .map(|(name, value)| item("var", None, vec![prop("name", name), prop("value", value)]))
        .collect()
}

/// The SP configurations (all, or only `only`), with `current` and `next` marked.
pub fn spconfig_section(reg: &Registry, only: Option<&str>) -> Section {
    let names = std::iter::once(FACTORY_DEFAULT.to_owned())
        .chain(reg.sp.saved.iter().map(|c| c.name.clone()));
    let items = names
        .filter(|n| only.is_none_or(|o| o == n))
        .map(|name| {
            let status = if reg.sp.current == name {
                "current"
            } else if reg.sp.next.as_deref() == Some(name.as_str()) {
                "next"
            } else {
                ""
            };
            item(
                "spconfig",
                None,
                vec![
                    prop("spconfig_name", &name),
                    prop("spconfig_status", status),
                ],
            )
        })
        .collect();
    Section {
        kind: SectionKind::ResourceAllocation,
        items,
    }
}
