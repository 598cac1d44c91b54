//! The modelled machine: its inventory (from config, with a default modelled on a one-socket
//! SPARC T-series server) and the allocators that hand its CPUs, crypto units, memory, MAC
//! addresses and console ports to domains.
//!
//! Allocations are never stored: they are rebuilt from the domains' bindings at load, so the
//! durable state cannot disagree with itself.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::registry::units::{MIB, parse_size, round_down};

/// `[machine]` in the config file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MachineConfig {
    pub cores: u32,
    pub threads_per_core: u32,
    /// Installed memory, as `512G`.
    pub memory: String,
    /// Memory the hypervisor keeps for itself, at the bottom of the physical address space.
    pub hypervisor_memory: String,
    /// Cryptographic units (MAU), one per core on the T-series.
    pub crypto_units: u32,
    /// PCIe root complexes, each with its slots.
    pub root_complexes: Vec<RootComplexConfig>,
    /// What the control domain `primary` owns on the first start.
    pub control_domain: ControlDomainConfig,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RootComplexConfig {
    /// The alias, as `pci_0`.
    pub name: String,
    /// The device path, as `pci@300`.
    pub path: String,
    /// Slot names, as `/SYS/MB/PCIE0`.
    #[serde(default)]
    pub slots: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ControlDomainConfig {
    pub vcpus: u32,
    pub memory: String,
    pub crypto_units: u32,
}

impl Default for ControlDomainConfig {
    fn default() -> Self {
        ControlDomainConfig {
            vcpus: 16,
            memory: "16G".into(),
            crypto_units: 2,
        }
    }
}

impl Default for MachineConfig {
    /// One SPARC T-series socket: 32 cores of 8 threads, 512 GiB, a MAU per core, four root
    /// complexes with two slots each.
    fn default() -> Self {
        let root_complexes = DEFAULT_ROOT_COMPLEXES
            .iter()
            .map(|(name, path, slots)| RootComplexConfig {
                name: (*name).into(),
                path: (*path).into(),
                slots: slots.iter().map(|s| (*s).into()).collect(),
            })
            .collect();
        MachineConfig {
            cores: 32,
            threads_per_core: 8,
            memory: "512G".into(),
            hypervisor_memory: "512M".into(),
            crypto_units: 32,
            root_complexes,
            control_domain: ControlDomainConfig::default(),
        }
    }
}

/// The largest machine: every address and size the allocator computes stays far below 2^64.
pub const MEMORY_BYTES_MAX: u64 = 64 << 40;

/// The default machine's root complexes, each with its two slots.
const DEFAULT_ROOT_COMPLEXES: [(&str, &str, [&str; 2]); 4] = [
    ("pci_0", "pci@300", ["/SYS/MB/PCIE0", "/SYS/MB/PCIE1"]),
    ("pci_1", "pci@340", ["/SYS/MB/PCIE2", "/SYS/MB/PCIE3"]),
    ("pci_2", "pci@380", ["/SYS/MB/PCIE4", "/SYS/MB/PCIE5"]),
    ("pci_3", "pci@3c0", ["/SYS/MB/PCIE6", "/SYS/MB/PCIE7"]),
];

/// Physical memory is handed out in these units: the 4 MB rounding of bound domains (§6).
pub const MEMORY_GRANULE: u64 = 4 * MIB;
/// Memory dynamic reconfiguration moves memory in these units (§6).
pub const MEMDR_GRANULE: u64 = 256 * MIB;
/// Where a guest's real addresses begin.
pub const GUEST_RA_BASE: u64 = 0x1000_0000;
/// The LDoms automatic MAC range (00:14:4f:f8:00:00 to 00:14:4f:fb:ff:ff).
pub const MAC_FIRST: u64 = 0x0014_4ff8_0000;
pub const MAC_LAST: u64 = 0x0014_4ffb_ffff;

/// A physical I/O device a domain can own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoDevice {
    /// `pci_0` for a root complex, the slot name for a slot.
    pub name: String,
    /// `pci@300` for a root complex; the root complex's path for a slot.
    pub path: String,
    /// The root complex a slot belongs to.
    pub parent: Option<String>,
}

/// The checked inventory.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    pub cores: u32,
    pub threads_per_core: u32,
    pub memory_bytes: u64,
    pub hypervisor_bytes: u64,
    pub crypto_units: u32,
    pub io: Vec<IoDevice>,
    pub control_vcpus: u32,
    pub control_memory: u64,
    pub control_crypto_units: u32,
}

impl Machine {
    /// Checks `config`; the error names the key.
    pub fn from_config(config: &MachineConfig) -> Result<Machine, String> {
        let size =
            |key: &str, text: &str| parse_size(text).map_err(|e| format!("machine.{key}: {e}"));
        let memory_bytes = size("memory", &config.memory)?;
        let hypervisor_bytes = size("hypervisor_memory", &config.hypervisor_memory)?;
        let control_memory = size("control_domain.memory", &config.control_domain.memory)?;
        let threads = u64::from(config.cores).saturating_mul(u64::from(config.threads_per_core));
        if config.cores == 0 || config.threads_per_core == 0 || threads > 4096 {
            return Err("machine: cores × threads_per_core must be between 1 and 4096".into());
        }
        if !memory_bytes.is_multiple_of(MEMDR_GRANULE)
            || !hypervisor_bytes.is_multiple_of(MEMDR_GRANULE)
        {
            return Err(
                "machine.memory and machine.hypervisor_memory must be multiples of 256M".into(),
            );
        }
        if !control_memory.is_multiple_of(MEMDR_GRANULE) || control_memory == 0 {
            return Err("machine.control_domain.memory must be a non-zero multiple of 256M".into());
        }
        // An operator's sizes may be anything up to 2^64: added checked, and the machine is at
        // most 64T, so no address or size computed later can overflow.
        let claimed = hypervisor_bytes.checked_add(control_memory);
        if claimed.is_none_or(|c| c > memory_bytes) || memory_bytes > MEMORY_BYTES_MAX {
            return Err("machine.memory must hold the hypervisor's and the control domain's memory (and be at most 64T)".into());
        }
        let control = &config.control_domain;
        if control.vcpus == 0 || u64::from(control.vcpus) > threads {
            return Err(
                "machine.control_domain.vcpus must be between 1 and the machine's threads".into(),
            );
        }
        if control.crypto_units > config.crypto_units || config.crypto_units > config.cores {
            return Err("machine: crypto units are at most one per core, and the control domain's at most the machine's".into());
        }
        let mut io = Vec::new();
        let mut names = BTreeSet::new();
        for rc in &config.root_complexes {
            io.push(IoDevice {
                name: rc.name.clone(),
                path: rc.path.clone(),
                parent: None,
            });
            io.extend(rc.slots.iter().map(|slot| IoDevice {
                name: slot.clone(),
                path: rc.path.clone(),
                parent: Some(rc.name.clone()),
            }));
        }
        for device in &io {
            if !names.insert(device.name.as_str()) {
                return Err(format!(
                    "machine.root_complexes: '{}' is named twice",
                    device.name
                ));
            }
        }
        Ok(Machine {
            cores: config.cores,
            threads_per_core: config.threads_per_core,
            memory_bytes,
            hypervisor_bytes,
            crypto_units: config.crypto_units,
            io,
            control_vcpus: control.vcpus,
            control_memory,
            control_crypto_units: control.crypto_units,
        })
    }

    /// Virtual CPUs (threads) of the machine: at most 4096, checked at start.
    pub fn threads(&self) -> u32 {
        self.cores.saturating_mul(self.threads_per_core)
    }

    /// A device by its name or, for a root complex, its path.
    pub fn io_device(&self, name: &str) -> Option<&IoDevice> {
        self.io
            .iter()
            .find(|d| d.name == name || (d.parent.is_none() && d.path == name))
    }
}

/// Which of `count` numbered units (CPUs, crypto units) are free.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitPool {
    free: BTreeSet<u32>,
}

impl UnitPool {
    pub fn new(count: u32) -> UnitPool {
        UnitPool {
            free: (0..count).collect(),
        }
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    pub fn is_free(&self, unit: u32) -> bool {
        self.free.contains(&unit)
    }

    /// Takes the `count` lowest free units, or none if there are not enough.
    pub fn take(&mut self, count: u32) -> Option<Vec<u32>> {
        let count = usize::try_from(count).ok()?;
        if count > self.free.len() {
            return None;
        }
        let taken: Vec<u32> = self.free.iter().take(count).copied().collect();
        taken.iter().for_each(|u| {
            self.free.remove(u);
        });
        Some(taken)
    }

    /// Takes `cores` whole free cores (every thread of each), lowest first.
    pub fn take_cores(&mut self, cores: u32, threads_per_core: u32) -> Option<Vec<u32>> {
        let cores = usize::try_from(cores).ok()?;
        let thread = |core: u32, i: u32| core.checked_mul(threads_per_core)?.checked_add(i);
        let whole: Vec<u32> = self
            .free
            .iter()
            .filter(|t| t.checked_rem(threads_per_core) == Some(0))
            .filter_map(|t| t.checked_div(threads_per_core))
            .filter(|core| {
                (0..threads_per_core)
                    .all(|i| thread(*core, i).is_some_and(|t| self.free.contains(&t)))
            })
            .take(cores)
            .collect();
        if whole.len() < cores {
            return None;
        }
        let taken: Vec<u32> = whole
            .iter()
            .flat_map(|core| (0..threads_per_core).filter_map(move |i| thread(*core, i)))
            .collect();
        taken.iter().for_each(|u| {
            self.free.remove(u);
        });
        Some(taken)
    }

    /// Marks units as used; false if one of them was not free (a corrupt state).
    pub fn claim(&mut self, units: &[u32]) -> bool {
        units.iter().all(|u| self.free.remove(u))
    }

    pub fn give_back(&mut self, units: &[u32]) {
        self.free.extend(units.iter().copied());
    }
}

/// A piece of memory bound to a domain: its guest real address, physical address and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemoryBlock {
    pub ra: u64,
    pub pa: u64,
    pub size: u64,
}

/// Free physical memory, as disjoint ranges (start → length), merged when freed.
///
/// Every range lies inside the machine (at most [`MEMORY_BYTES_MAX`]), so sums of addresses and
/// lengths stay far from 2^64; they are computed checked anyway, because `claim` also reads
/// ranges from stored records, and a corrupt record must be refused, not wrap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPool {
    free: BTreeMap<u64, u64>,
}

impl MemoryPool {
    pub fn new(start: u64, end: u64) -> MemoryPool {
        let mut free = BTreeMap::new();
        if let Some(len) = end.checked_sub(start).filter(|l| *l > 0) {
            free.insert(start, len);
        }
        MemoryPool { free }
    }

    /// The free ranges, lowest first: (physical address, length).
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.free.iter().map(|(&start, &len)| (start, len))
    }

    pub fn free_bytes(&self) -> u64 {
        self.free
            .values()
            .fold(0u64, |sum, len| sum.saturating_add(*len))
    }

    /// The `align`-aligned part of a free range: where it starts and how long it is, in
    /// `align` multiples.
    fn usable(start: u64, len: u64, align: u64) -> (u64, u64) {
        let aligned = start.checked_next_multiple_of(align).unwrap_or(u64::MAX);
        let end = start.saturating_add(len);
        (aligned, round_down(end.saturating_sub(aligned), align))
    }

    /// The free bytes usable at `align`-aligned addresses in `align` multiples.
    pub fn free_aligned(&self, align: u64) -> u64 {
        self.free
            .iter()
            .map(|(&start, &len)| Self::usable(start, len, align).1)
            .fold(0u64, u64::saturating_add)
    }

    /// Takes `size` bytes (a multiple of `align`) at `align`-aligned addresses, lowest first,
    /// in as few pieces as the free ranges allow. Physical addresses only: the caller assigns
    /// real addresses.
    pub fn take(&mut self, size: u64, align: u64) -> Option<Vec<(u64, u64)>> {
        debug_assert!(size.is_multiple_of(align));
        if self.free_aligned(align) < size {
            return None;
        }
        let mut pieces = Vec::new();
        let mut wanted = size;
        for (&start, &len) in &self.free {
            if wanted == 0 {
                break;
            }
            let (aligned, usable) = Self::usable(start, len, align);
            let piece = usable.min(wanted);
            if piece > 0 {
                pieces.push((aligned, piece));
                wanted = wanted.saturating_sub(piece);
            }
        }
        for &(pa, len) in &pieces {
            self.remove_range(pa, len);
        }
        Some(pieces)
    }

    fn remove_range(&mut self, pa: u64, len: u64) -> bool {
        let Some((&start, &free_len)) = self.free.range(..=pa).next_back() else {
            return false;
        };
        let (Some(end), Some(free_end)) = (pa.checked_add(len), start.checked_add(free_len)) else {
            return false;
        };
        if end > free_end {
            return false;
        }
        self.free.remove(&start);
        if pa > start {
            self.free.insert(start, pa.saturating_sub(start));
        }
        if free_end > end {
            self.free.insert(end, free_end.saturating_sub(end));
        }
        true
    }

    /// Marks a range as used; false if it was not wholly free (a corrupt state).
    pub fn claim(&mut self, pa: u64, len: u64) -> bool {
        self.remove_range(pa, len)
    }

    pub fn give_back(&mut self, pa: u64, len: u64) {
        let end = pa.saturating_add(len);
        let (mut start, mut merged) = (pa, len);
        if let Some((&before, &before_len)) = self.free.range(..pa).next_back()
            && before.checked_add(before_len) == Some(pa)
        {
            self.free.remove(&before);
            start = before;
            merged = merged.saturating_add(before_len);
        }
        if let Some(after_len) = self.free.remove(&end) {
            merged = merged.saturating_add(after_len);
        }
        self.free.insert(start, merged);
    }
}

/// Assigns guest real addresses to physical pieces, continuing after `ra_end`.
pub fn blocks_from(pieces: &[(u64, u64)], ra_end: u64) -> Vec<MemoryBlock> {
    let mut ra = ra_end;
    pieces
        .iter()
        .map(|&(pa, size)| {
            let block = MemoryBlock { ra, pa, size };
            ra = ra.saturating_add(size);
            block
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::units::GIB;

    #[test]
    fn the_default_inventory_is_valid() {
        let machine = Machine::from_config(&MachineConfig::default()).unwrap();
        assert_eq!(machine.threads(), 256);
        assert_eq!(machine.memory_bytes, 512 * GIB);
        assert_eq!(machine.io.len(), 12);
        assert_eq!(machine.io_device("pci@340").unwrap().name, "pci_1");
        assert_eq!(
            machine
                .io_device("/SYS/MB/PCIE3")
                .unwrap()
                .parent
                .as_deref(),
            Some("pci_1")
        );
    }

    #[test]
    fn bad_inventories_name_the_key() {
        let config = MachineConfig {
            memory: "100M".into(),
            ..MachineConfig::default()
        };
        assert!(
            Machine::from_config(&config)
                .unwrap_err()
                .contains("machine.memory")
        );
        let mut config = MachineConfig::default();
        config.control_domain.vcpus = 0;
        assert!(Machine::from_config(&config).unwrap_err().contains("vcpus"));
        let mut config = MachineConfig::default();
        config.root_complexes[1].name = "pci_0".into();
        assert!(Machine::from_config(&config).unwrap_err().contains("twice"));
    }

    #[test]
    fn whole_cores_skip_partly_used_cores() {
        let mut pool = UnitPool::new(32);
        assert_eq!(pool.take(1), Some(vec![0]));
        let cores = pool.take_cores(2, 8).unwrap();
        assert_eq!(cores, (8..24).collect::<Vec<_>>());
        assert_eq!(pool.take_cores(1, 8), Some((24..32).collect()));
        assert_eq!(pool.take_cores(1, 8), None);
        assert_eq!(pool.free_count(), 7);
        assert_eq!(
            pool.take(8),
            None,
            "nothing is taken when there are not enough"
        );
        assert_eq!(pool.free_count(), 7);
    }

    #[test]
    fn memory_is_taken_aligned_and_merged_when_given_back() {
        let mut pool = MemoryPool::new(0, 4 * GIB);
        let a = pool.take(GIB, MEMDR_GRANULE).unwrap();
        assert_eq!(a, vec![(0, GIB)]);
        let b = pool.take(4 * MIB, MEMORY_GRANULE).unwrap();
        assert_eq!(b, vec![(GIB, 4 * MIB)]);
        // The next 256M-aligned address is past the 4M piece.
        let c = pool.take(MEMDR_GRANULE, MEMDR_GRANULE).unwrap();
        assert_eq!(c, vec![(GIB + MEMDR_GRANULE, MEMDR_GRANULE)]);
        pool.give_back(0, GIB);
        pool.give_back(GIB, 4 * MIB);
        pool.give_back(GIB + MEMDR_GRANULE, MEMDR_GRANULE);
        assert_eq!(
            pool,
            MemoryPool::new(0, 4 * GIB),
            "every range merged back into one"
        );
        assert!(pool.take(5 * GIB, MEMORY_GRANULE).is_none());
        assert_eq!(pool.free_bytes(), 4 * GIB);
    }

    #[test]
    fn a_request_spans_free_ranges() {
        let mut pool = MemoryPool::new(0, 4 * GIB);
        pool.claim(GIB, GIB);
        let pieces = pool.take(2 * GIB, MEMORY_GRANULE).unwrap();
        assert_eq!(pieces, vec![(0, GIB), (2 * GIB, GIB)]);
        let blocks = blocks_from(&pieces, GUEST_RA_BASE);
        assert_eq!(blocks[1].ra, GUEST_RA_BASE + GIB);
        assert!(!pool.claim(0, MIB), "claiming used memory is refused");
    }
}
