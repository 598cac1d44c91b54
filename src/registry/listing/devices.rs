//! list-devices: the machine's cores, strands, crypto units, memory blocks and I/O devices,
//! free ones or (`-a`) all with their owners.

use super::{binding, core_cpus, core_of, item, join_ids, mau_item, prop};
use crate::ldm::document::{Section, SectionKind};
use crate::registry::state::Registry;
use crate::registry::units::format_size;

/// What `owner` prints for memory the hypervisor keeps, as Oracle's `ldm list-devices -a`.
pub const HYPERVISOR_OWNER: &str = "_sys_";

/// Free resources, and who owns each I/O device; with `all`, bound resources too. Each CPU,
/// crypto unit and memory block is one binding row with an `owner` (empty when free); the
/// allocation units stay the free totals.
pub(super) fn devices(reg: &Registry, all: bool) -> Section {
    let pools = reg.pools();
    let tpc = reg.machine().threads_per_core;
    // Who holds each strand and crypto unit, built once: a listing of the largest machine
    // stays linear in its size.
    let mut cpu_owner: std::collections::HashMap<u32, &str> = std::collections::HashMap::new();
    let mut mau_owner: std::collections::HashMap<u32, &str> = std::collections::HashMap::new();
    for domain in reg.domains() {
        if let Some(binding) = &domain.binding {
            cpu_owner.extend(binding.cpus.iter().map(|c| (*c, domain.name.as_str())));
            mau_owner.extend(binding.maus.iter().map(|m| (*m, domain.name.as_str())));
        }
    }
    // A unit is wholly free or wholly bound (`free` 100 or 0), and ldmd manages no power:
    // every strand is powered on (`pm` no).
    let free = |is_free: bool| if is_free { "100" } else { "0" };
    let mut cpu = item("cpu", Some(pools.cpus.free_count().to_string()), Vec::new());
    cpu.bindings = binding(
        (0..reg.machine().threads())
            .filter(|pid| all || pools.cpus.is_free(*pid))
            .map(|pid| {
                let is_free = pools.cpus.is_free(pid);
                let owner = if is_free {
                    ""
                } else {
                    cpu_owner.get(&pid).copied().unwrap_or("")
                };
                item(
                    "cpu",
                    None,
                    vec![
                        prop("pid", pid),
                        prop("cid", core_of(pid, tpc)),
                        prop("free", free(is_free)),
                        prop("pm", "no"),
                        prop("owner", owner),
                    ],
                )
            })
            .collect(),
    );
    // A core: its share of free strands in percent, and its strands.
    let mut core = item("core", None, Vec::new());
    core.bindings = binding(
        (0..reg.machine().cores)
            .filter_map(|cid| {
                let strands = core_cpus(cid, tpc);
                let free = strands.iter().filter(|p| pools.cpus.is_free(**p)).count();
                let percent = free.saturating_mul(100).checked_div(strands.len())?;
                (all || free > 0).then(|| {
                    item(
                        "core",
                        None,
                        vec![
                            prop("cid", cid),
                            prop("free", percent),
                            prop("cpuset", join_ids(&strands)),
                        ],
                    )
                })
            })
            .collect(),
    );
    let mut mau = item("mau", Some(pools.maus.free_count().to_string()), Vec::new());
    mau.bindings = binding(
        (0..reg.machine().crypto_units)
            .filter(|id| all || pools.maus.is_free(*id))
            .map(|id| {
                let is_free = pools.maus.is_free(id);
                let owner = if is_free {
                    ""
                } else {
                    mau_owner.get(&id).copied().unwrap_or("")
                };
                let mut unit = mau_item(id, tpc, owner);
                unit.properties.push(prop("free", free(is_free)));
                unit
            })
            .collect(),
    );
    let mut memory = item(
        "memory",
        Some(format_size(pools.memory.free_bytes())),
        Vec::new(),
    );
    let mut blocks: Vec<(u64, u64, &str)> = pools
        .memory
        .ranges()
        .map(|(pa, size)| (pa, size, ""))
        .collect();
    if all {
        if reg.machine().hypervisor_bytes > 0 {
            blocks.push((0, reg.machine().hypervisor_bytes, HYPERVISOR_OWNER));
        }
        for domain in reg.domains() {
            let bound = domain.binding.iter().flat_map(|b| &b.memory);
            let reserved = domain.memdr.iter().flat_map(|m| &m.reserved);
            let pending = domain.reconf.iter().flat_map(|r| &r.reserved);
            for block in bound.chain(reserved).chain(pending) {
                blocks.push((block.pa, block.size, domain.name.as_str()));
            }
        }
    }
    blocks.sort_unstable();
    memory.bindings = binding(
        blocks
            .into_iter()
            .map(|(pa, size, owner)| {
                item(
                    "memory",
                    None,
                    vec![
                        prop("pa", format!("0x{pa:x}")),
                        prop("size", format_size(size)),
                        prop("owner", owner),
                    ],
                )
            })
            .collect(),
    );
    let mut items = vec![core, cpu, mau, memory];
    for device in &reg.machine().io {
        let owner = reg.io_owner.get(&device.name).map_or("", String::as_str);
        if !all && !owner.is_empty() {
            continue;
        }
        let bus = device.parent.as_deref().unwrap_or(&device.name);
        // A root complex is a bus; a slot is a PCIe slot, occupied (every configured slot
        // holds a card).
        let (kind, status) = match device.parent {
            None => ("BUS", ""),
            Some(_) => ("PCIE", "OCC"),
        };
        items.push(item(
            "physio_device",
            None,
            vec![
                prop("name", &device.name),
                prop("path", &device.path),
                prop("bus", bus),
                prop("type", kind),
                prop("status", status),
                prop("owner", owner),
            ],
        ));
    }
    Section {
        kind: SectionKind::ResourceAllocation,
        items,
    }
}
