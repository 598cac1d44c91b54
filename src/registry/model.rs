//! What the registry stores: domains with their constraints, bindings and services, and the
//! SP configurations. Serialized as JSON records in the store, one per domain.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ldm::action::Action;
use crate::registry::machine::MemoryBlock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainState {
    /// Constraints only.
    Inactive,
    /// Resources reserved.
    Bound,
    Active,
}

impl DomainState {
    pub fn as_str(self) -> &'static str {
        match self {
            DomainState::Inactive => "inactive",
            DomainState::Bound => "bound",
            DomainState::Active => "active",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    pub name: String,
    pub uuid: String,
    /// The domain's own MAC address (ldom_info `rasd:Address`); its hostid derives from it.
    pub mac: u64,
    pub hostid: u32,
    pub state: DomainState,
    /// Unix seconds of the last start, for the uptime column.
    pub started_at: Option<u64>,
    pub failure_policy: String,
    /// Master domains (at most four), whose failure triggers this domain's failure policy.
    pub master: Vec<String>,
    /// Other ldom_info settings: extended-mapin-space, rc-add-policy, perf-counters.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    pub vcpus: u32,
    /// Whole cores asked for (0: plain virtual CPUs).
    pub wcore: u32,
    pub mau: u32,
    pub memory: u64,
    pub variables: BTreeMap<String, String>,
    pub vdisks: Vec<VDisk>,
    pub vnets: Vec<VNet>,
    pub console: Console,
    /// Physical I/O devices (root complexes, slots) owned, by name.
    pub io: Vec<String>,
    pub vds: Vec<Vds>,
    pub vsw: Vec<Vsw>,
    pub vcc: Vec<Vcc>,
    /// Set while bound or active.
    pub binding: Option<Binding>,
    /// The control domain's changes that wait for its reboot.
    pub reconf: Option<DelayedReconf>,
    /// A memory dynamic reconfiguration in progress.
    pub memdr: Option<MemDr>,
    // Records written before per-class device numbering also hold `next_device_id` (a counter
    // disks and networks shared): serde skips it, and the ids it gave stay as stored.
}

impl Domain {
    /// An inactive domain with no resources and no identity yet (the registry gives it a
    /// MAC address, hostid and UUID).
    pub fn constraints_only(name: &str) -> Domain {
        Domain {
            name: name.into(),
            uuid: String::new(),
            mac: 0,
            hostid: 0,
            state: DomainState::Inactive,
            started_at: None,
            failure_policy: "ignore".into(),
            master: Vec::new(),
            options: BTreeMap::new(),
            vcpus: 0,
            wcore: 0,
            mau: 0,
            memory: 0,
            variables: BTreeMap::new(),
            vdisks: Vec::new(),
            vnets: Vec::new(),
            console: Console::default(),
            io: Vec::new(),
            vds: Vec::new(),
            vsw: Vec::new(),
            vcc: Vec::new(),
            binding: None,
            reconf: None,
            memdr: None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub cpus: Vec<u32>,
    pub maus: Vec<u32>,
    pub memory: Vec<MemoryBlock>,
    pub console_port: Option<u16>,
}

impl Binding {
    pub fn memory_bytes(&self) -> u64 {
        self.memory
            .iter()
            .fold(0u64, |sum, b| sum.saturating_add(b.size))
    }

    /// One past the highest real address bound.
    pub fn ra_end(&self, base: u64) -> u64 {
        self.memory
            .iter()
            .map(|b| b.ra.saturating_add(b.size))
            .max()
            .unwrap_or(base)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Console {
    /// The vcc serving it; the first vcc of the machine when unset.
    pub service: Option<String>,
    /// A port asked for; otherwise the first free one of the vcc at bind.
    pub port: Option<u16>,
    pub group: Option<String>,
    pub enable_log: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VDisk {
    pub name: String,
    pub service: String,
    pub volume: String,
    pub timeout: Option<u32>,
    pub id: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VNet {
    pub name: String,
    pub service: String,
    pub mac: u64,
    pub pvid: u16,
    pub vid: Vec<u16>,
    pub mode: Option<String>,
    pub linkprop: Option<String>,
    pub id: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vds {
    pub name: String,
    pub volumes: Vec<Volume>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    pub block_dev: String,
    pub opts: Vec<String>,
    pub mpgroup: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vsw {
    pub name: String,
    pub mac: u64,
    pub net_dev: Option<String>,
    pub pvid: u16,
    pub vid: Vec<u16>,
    pub mtu: u32,
    pub mode: Option<String>,
    pub linkprop: Option<String>,
    pub inter_vnet_link: bool,
    /// Its number among the domain's switches (`switch@N`), lowest free first. Records
    /// written before switches were numbered load as 0 and are renumbered at restore.
    #[serde(default)]
    pub id: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vcc {
    pub name: String,
    pub min_port: u16,
    pub max_port: u16,
}

/// Changes to the control domain that take effect when it reboots. Memory it will grow into
/// is reserved now, so the reboot cannot fail for want of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelayedReconf {
    /// The memory size after the reboot.
    pub memory: Option<u64>,
    pub reserved: Vec<MemoryBlock>,
    /// Devices it gains (already reserved) and loses (still owned until then).
    pub io_add: Vec<String>,
    pub io_remove: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemDrKind {
    Add,
    Remove,
}

/// A memory DR in progress. Memory being added is reserved from the start; memory being
/// removed stays bound until the guest has let it go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemDr {
    pub id: u64,
    pub kind: MemDrKind,
    /// The action that asked for it (add-memory, set-memory, remove-memory), stored by its
    /// wire name.
    pub action: Action,
    /// Bytes asked for (256 MB multiple).
    pub bytes: u64,
    /// Bytes done so far, from the worker's progress reports (not durable).
    #[serde(default)]
    pub done: u64,
    pub reserved: Vec<MemoryBlock>,
    /// A warning for the reply (size adjusted).
    pub warning: Option<String>,
    pub cancel_requested: bool,
}

/// How a memory DR ended (the `outcome` label of `ldmd_memdr_operations_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemDrEnd {
    /// All the memory asked for was moved.
    Completed,
    /// The guest kept some memory in use: part of a removal was done.
    Partial,
    /// Cancelled (cancel-operation memdr), with or without some memory moved.
    Cancelled,
    /// The guest could not give up any memory: nothing was removed.
    Refused,
    /// Interrupted by a crash or shutdown and undone at the next start.
    RolledBack,
}

impl MemDrEnd {
    pub const ALL: [MemDrEnd; 5] = [
        MemDrEnd::Completed,
        MemDrEnd::Partial,
        MemDrEnd::Cancelled,
        MemDrEnd::Refused,
        MemDrEnd::RolledBack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MemDrEnd::Completed => "completed",
            MemDrEnd::Partial => "partial",
            MemDrEnd::Cancelled => "cancelled",
            MemDrEnd::Refused => "refused",
            MemDrEnd::RolledBack => "rolled_back",
        }
    }
}

/// A configuration saved on the service processor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpConfig {
    pub name: String,
    /// The domains it holds.
    pub domains: Vec<String>,
    pub saved_at: u64,
}

/// The name of the configuration the machine ships with; it cannot be removed.
pub const FACTORY_DEFAULT: &str = "factory-default";

/// A migration this daemon takes part in, as its store keeps it (one record per attempt; the
/// protocol is in `crate::migration`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationRecord {
    pub id: crate::migration::MigrationId,
    /// The domain's name here: the migrating domain on the source, the receiving (then owned)
    /// domain on the target.
    pub domain: String,
    /// Its name on the other side.
    pub peer_domain: String,
    /// The other daemon: the target's address as the operator wrote it (`host2`,
    /// `[::1]:6482`) on the source; the source daemon's host name on the target.
    pub peer: String,
    /// Unix seconds when it began here.
    pub started_at: u64,
    pub side: MigrationSide,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationSide {
    Source {
        outgoing: crate::migration::source::Outgoing,
        /// Where to reach the target again (the resolver after a restart).
        host: String,
        port: u16,
    },
    Target {
        incoming: crate::migration::target::Incoming,
        /// The state the domain takes when the target takes it over.
        state: DomainState,
    },
}

impl MigrationRecord {
    pub fn outgoing(&self) -> Option<&crate::migration::source::Outgoing> {
        match &self.side {
            MigrationSide::Source { outgoing, .. } => Some(outgoing),
            MigrationSide::Target { .. } => None,
        }
    }

    pub fn incoming(&self) -> Option<&crate::migration::target::Incoming> {
        match &self.side {
            MigrationSide::Target { incoming, .. } => Some(incoming),
            MigrationSide::Source { .. } => None,
        }
    }

    /// Whether the migration still holds its domain here: locked on the source until it ends,
    /// receiving on the target until it commits. Done and committed records only remember.
    pub fn holds_domain(&self) -> bool {
        use crate::migration::source::Phase;
        use crate::migration::target::Incoming;
        match &self.side {
            MigrationSide::Source { outgoing, .. } => outgoing.phase != Phase::Done,
            MigrationSide::Target { incoming, .. } => {
                matches!(incoming, Incoming::Reserved { .. })
            }
        }
    }

    /// The sixth `list-domain` flag (§3): `s` source, `t` target, `e` in doubt.
    pub fn flag(&self) -> Option<char> {
        if !self.holds_domain() {
            return None;
        }
        Some(match &self.side {
            MigrationSide::Source { outgoing, .. } if outgoing.in_doubt => 'e',
            MigrationSide::Source { .. } => 's',
            MigrationSide::Target { .. } => 't',
        })
    }
}
