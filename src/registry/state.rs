//! The registry's state and the rules that change it: pure, no I/O, no clock (the shell passes
//! `now`), no randomness but a seeded generator. The actor owns one [`Registry`].
//!
//! Each data object of a write is judged on its own and applied whole or not at all: handlers
//! check everything before they change anything, and the few that allocate several kinds of
//! resource run inside [`Registry::atomically`], which restores the pools on failure.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::ldm::action::Action;
use crate::ldm::document::{Content, Data, Envelope};
use crate::ldm::event::{Event, EventClass};
use crate::limits::Limit;
use crate::registry::machine::{GUEST_RA_BASE, MAC_FIRST, MAC_LAST, Machine, MemoryPool, UnitPool};
use crate::registry::model::{Binding, Domain, DomainState, FACTORY_DEFAULT, SpConfig};

/// Operator settings the rules depend on.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// With the XMPP listener off, memory DR is refused (§1, §6).
    pub xmpp_enabled: bool,
    /// Configurations the service processor holds, factory-default included.
    pub spconfigs_max: usize,
    /// The limits the rules enforce (`[limits]`): document sizes, reply sizes, what one domain
    /// and the machine may hold.
    pub limits: RegistryLimits,
    /// `[migration]`.
    pub migration: MigrationSettings,
}

/// What the migration rules need of `[migration]`.
#[derive(Clone, Debug, PartialEq)]
pub struct MigrationSettings {
    /// Migrations this daemon takes part in at once, as source or target.
    pub concurrent_max: usize,
    /// A reservation that hears nothing from its source for this long is released.
    pub reservation_idle_secs: u64,
    /// This host's name, for progress events and the target's record of its source.
    pub host_name: String,
}

impl Default for MigrationSettings {
    fn default() -> Self {
        MigrationSettings {
            concurrent_max: 4,
            reservation_idle_secs: 60,
            host_name: "localhost".into(),
        }
    }
}

/// The part of `[limits]` the registry enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryLimits {
    pub cmds_per_document_max: usize,
    pub data_per_document_max: usize,
    pub reply_bytes_max: usize,
    /// The largest request ldmd accepts: one domain's list-constraints must always fit it, so
    /// that it can be sent back as add-domain.
    pub stanza_bytes_max: usize,
    pub domains_max: usize,
    pub variables_per_domain_max: usize,
    pub variable_value_bytes_max: usize,
}

impl RegistryLimits {
    pub fn from_limits(limits: &crate::limits::Limits) -> RegistryLimits {
        RegistryLimits {
            cmds_per_document_max: limits.cmds_per_document_max,
            data_per_document_max: limits.data_per_document_max,
            reply_bytes_max: limits.reply_bytes_max,
            stanza_bytes_max: limits.stanza_bytes_max,
            domains_max: limits.domains_max,
            variables_per_domain_max: limits.variables_per_domain_max,
            variable_value_bytes_max: limits.variable_value_bytes_max,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            xmpp_enabled: true,
            spconfigs_max: 8,
            limits: RegistryLimits::from_limits(&crate::limits::Limits::default()),
            migration: MigrationSettings::default(),
        }
    }
}

/// A record to write (`Some`) or delete (`None`).
pub type Change = (Key, Option<Vec<u8>>);

/// A durable record, as the store keys it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Domain(String),
    SpConfigs,
    Meta,
    Migration(crate::migration::MigrationId),
}

/// The SP configurations: saved ones, the one the machine runs, the one for the next power-on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpConfigs {
    pub saved: Vec<SpConfig>,
    pub current: String,
    pub next: Option<String>,
}

/// Counters that must survive restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Where the search for the next free automatic MAC address starts.
    pub mac_cursor: u64,
    pub next_operation: u64,
    /// The generator behind UUIDs.
    pub rng: u64,
    /// This daemon's identity among its peers: a daemon refuses a migration from itself. Set
    /// at the first start (0 in stores older than migration: one is drawn at load).
    #[serde(default)]
    pub daemon_id: u128,
    /// The key behind the tokens this daemon hands out as a migration's target
    /// ([`crate::migration::Token::mint`]). Drawn with the first reservation and made durable
    /// in its commit; all zero until then.
    #[serde(default)]
    pub resolver_key: [u8; 32],
}

/// Every durable record, as loaded from the store.
#[derive(Clone, Debug, Default)]
pub struct Records {
    pub domains: Vec<Domain>,
    pub spconfigs: Option<SpConfigs>,
    pub meta: Option<Meta>,
    pub migrations: Vec<crate::registry::model::MigrationRecord>,
}

/// Work the shell must start once the batch that asked for it is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Ask the domain's guest to take or give up `bytes` of memory.
    StartMemDr {
        operation: u64,
        domain: String,
        kind: crate::registry::model::MemDrKind,
        bytes: u64,
        /// Memory bound before the change.
        bound: u64,
    },
    CancelMemDr {
        operation: u64,
    },
    /// Start a migration's worker: it reaches the target and drives it (a dry run only checks).
    StartMigration(Box<crate::migration::plan::Plan>),
    /// Have the worker of a migration send `send` to the target (starting a worker for it when
    /// none runs, after a restart). `settle`: keep asking until the target answers for good.
    MigrationSend {
        contact: crate::migration::plan::Contact,
        send: crate::migration::source::Send,
        settle: bool,
    },
    /// The migration is over here, or cancelled: its worker stops once it has sent what it
    /// was asked to.
    StopMigration {
        id: crate::migration::MigrationId,
    },
}

/// Free resources. Cloned by [`Registry::atomically`], so kept to what a transaction can touch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pools {
    pub cpus: UnitPool,
    pub maus: UnitPool,
    pub memory: MemoryPool,
}

pub struct Registry {
    pub(crate) machine: Machine,
    pub(crate) settings: Settings,
    pub(crate) domains: BTreeMap<String, Domain>,
    pub(crate) sp: SpConfigs,
    pub(crate) meta: Meta,
    pub(crate) pools: Pools,
    /// Allocated MAC addresses (domains, vnets, vsws).
    pub(crate) macs: HashSet<u64>,
    /// Console ports bound, by vcc.
    pub(crate) console_ports: HashSet<(String, u16)>,
    /// Service name → the domain providing it (service names are machine-wide).
    pub(crate) services: HashMap<String, String>,
    /// Physical device → its owner.
    pub(crate) io_owner: HashMap<String, String>,
    /// Migrations this daemon takes part in (durable), and what only lives while it runs.
    pub(crate) migrations:
        BTreeMap<crate::migration::MigrationId, crate::registry::model::MigrationRecord>,
    pub(crate) migrating: crate::registry::actions::migration::Volatile,
    /// Unpredictable bytes from the shell, refreshed before each batch: migration ids and
    /// tokens are drawn from them (the rules themselves stay deterministic given them).
    entropy: [u8; 32],
    entropy_draws: u64,
    /// The host's CPU busy share over the shell's last sampling window, in percent: the
    /// control domain's UTIL (the host is the control domain). None until measured.
    pub(crate) host_util: Option<f64>,
    dirty: BTreeSet<Key>,
    events: Vec<Event>,
    effects: Vec<Effect>,
    /// Limits that fired since the last call to `take_limit_hits`, for the metrics.
    limit_hits: Vec<Limit>,
    /// When set, every write is refused with this reason and nothing is changed: the store
    /// cannot take changes now (the actor sets it while the disk fails).
    pub(crate) writes_refused: Option<String>,
    /// Bytes listings may still fill in before the replies in flight reach
    /// `reply_bytes_in_flight_max` (set by the actor before each batch).
    pub(crate) reply_room: usize,
    /// A listing found no room left in `reply_room`: later ones of the batch fail at once
    /// unless their connection still has room of its own.
    pub(crate) replies_full: bool,
    /// Bytes listings of the document being advanced may fill in outside `reply_room`: what
    /// is left of its connection's own share, `stanza_bytes_max` of unwritten replies (set by
    /// the actor before each advance). A client that reads its replies is thus never refused
    /// because others leave theirs unread.
    pub(crate) connection_room: usize,
    /// Reused to measure listings as they will be written.
    pub(crate) scratch: Vec<u8>,
}

/// What one object's handler did.
#[derive(Debug, Default)]
pub struct Applied {
    pub warning: Option<String>,
    /// A long operation was started; the object's answer waits for it.
    pub waiting: Option<u64>,
    /// The object, filled in (list actions); `None` echoes the request.
    pub data: Option<Data>,
}

impl Applied {
    pub fn warn(warning: impl Into<String>) -> Applied {
        Applied {
            warning: Some(warning.into()),
            ..Applied::default()
        }
    }
}

pub type Outcome = Result<Applied, String>;

impl Registry {
    /// A machine on its first start: the control domain active with its default slice and
    /// services, every other resource free.
    /// Fails only for a machine too small for its own control domain, which
    /// [`Machine::from_config`] already refuses.
    pub fn new(
        machine: Machine,
        settings: Settings,
        seed: u64,
        now: u64,
    ) -> Result<Registry, String> {
        let mut registry = Registry::empty(machine, settings, seed);
        registry.meta.daemon_id = registry.fresh_daemon_id();
        // Automatic MAC addresses start at a random place in the range, so that two machines
        // do not hand out the same ones and their domains can migrate between them (the range
        // has 2^18 addresses; two machines' first hundred collide with odds near 1 in 1,300).
        const SPAN: u64 = MAC_LAST - MAC_FIRST + 1;
        registry.meta.mac_cursor =
            MAC_FIRST.saturating_add(registry.next_random().checked_rem(SPAN).unwrap_or(0));
        registry.create_control_domain(now)?;
        registry.dirty.insert(Key::SpConfigs);
        registry.dirty.insert(Key::Meta);
        Ok(registry)
    }

    fn empty(machine: Machine, settings: Settings, seed: u64) -> Registry {
        let pools = Pools {
            cpus: UnitPool::new(machine.threads()),
            maus: UnitPool::new(machine.crypto_units),
            memory: MemoryPool::new(machine.hypervisor_bytes, machine.memory_bytes),
        };
        Registry {
            settings,
            domains: BTreeMap::new(),
            sp: SpConfigs {
                saved: Vec::new(),
                current: FACTORY_DEFAULT.into(),
                next: None,
            },
            meta: Meta {
                mac_cursor: MAC_FIRST,
                next_operation: 1,
                rng: seed,
                daemon_id: 0,
                resolver_key: [0; 32],
            },
            pools,
            macs: HashSet::new(),
            console_ports: HashSet::new(),
            services: HashMap::new(),
            io_owner: HashMap::new(),
            migrations: BTreeMap::new(),
            migrating: Default::default(),
            entropy: seed.to_be_bytes().repeat(4).try_into().unwrap_or([0; 32]),
            entropy_draws: 0,
            host_util: None,
            dirty: BTreeSet::new(),
            events: Vec::new(),
            effects: Vec::new(),
            limit_hits: Vec::new(),
            writes_refused: None,
            reply_room: usize::MAX,
            replies_full: false,
            connection_room: 0,
            scratch: Vec::new(),
            machine,
        }
    }

    /// A copy of what listings read, for an I/O thread's replica (see `replica`): no pending
    /// changes, events or effects, and no secret (the resolver key is not copied).
    pub fn replica(&self) -> Registry {
        Registry {
            machine: self.machine.clone(),
            settings: self.settings.clone(),
            domains: self.domains.clone(),
            sp: self.sp.clone(),
            meta: Meta {
                resolver_key: [0; 32],
                ..self.meta.clone()
            },
            pools: self.pools.clone(),
            macs: self.macs.clone(),
            console_ports: self.console_ports.clone(),
            services: self.services.clone(),
            io_owner: self.io_owner.clone(),
            migrations: self.migrations.clone(),
            migrating: self.migrating.for_replica(),
            entropy: [0; 32],
            entropy_draws: 0,
            host_util: self.host_util,
            dirty: BTreeSet::new(),
            events: Vec::new(),
            effects: Vec::new(),
            limit_hits: Vec::new(),
            writes_refused: None,
            reply_room: usize::MAX,
            replies_full: false,
            connection_room: 0,
            scratch: Vec::new(),
        }
    }

    fn create_control_domain(&mut self, now: u64) -> Result<(), String> {
        let too_small = |what: &str| {
            format!(
                "the machine has too little {what} for {}",
                crate::registry::CONTROL_DOMAIN
            )
        };
        let mut primary = self.new_domain(crate::registry::CONTROL_DOMAIN);
        primary.vcpus = self.machine.control_vcpus;
        primary.mau = self.machine.control_crypto_units;
        primary.memory = self.machine.control_memory;
        primary.vds.push(crate::registry::model::Vds {
            name: "primary-vds0".into(),
            volumes: Vec::new(),
        });
        let vsw_mac = self
            .allocate_mac()
            .ok_or_else(|| too_small("MAC addresses"))?;
        primary.vsw.push(crate::registry::model::Vsw {
            name: "primary-vsw0".into(),
            mac: vsw_mac,
            net_dev: Some("net0".into()),
            pvid: 1,
            vid: Vec::new(),
            mtu: 1500,
            mode: None,
            linkprop: None,
            inter_vnet_link: true,
            id: 0,
        });
        primary.vcc.push(crate::registry::model::Vcc {
            name: "primary-vcc0".into(),
            min_port: 5000,
            max_port: 5100,
        });
        primary.io = self
            .machine
            .io
            .iter()
            .filter(|d| d.parent.is_none())
            .map(|d| d.name.clone())
            .collect();
        let cpus = self
            .pools
            .cpus
            .take(primary.vcpus)
            .ok_or_else(|| too_small("CPUs"))?;
        let maus = self
            .pools
            .maus
            .take(primary.mau)
            .ok_or_else(|| too_small("crypto units"))?;
        let pieces = self
            .pools
            .memory
            .take(primary.memory, crate::registry::machine::MEMDR_GRANULE)
            .ok_or_else(|| too_small("memory"))?;
        primary.binding = Some(Binding {
            cpus,
            maus,
            memory: crate::registry::machine::blocks_from(&pieces, GUEST_RA_BASE),
            console_port: None,
        });
        primary.state = DomainState::Active;
        primary.started_at = Some(now);
        for service in ["primary-vds0", "primary-vsw0", "primary-vcc0"] {
            self.services.insert(service.into(), primary.name.clone());
        }
        for device in &primary.io {
            self.io_owner.insert(device.clone(), primary.name.clone());
        }
        self.dirty.insert(Key::Domain(primary.name.clone()));
        self.domains.insert(primary.name.clone(), primary);
        Ok(())
    }

    /// Rebuilds the registry from its records. Allocations are derived from the bindings, and
    /// a memory DR that a crash interrupted is rolled back: the domain keeps the memory it had
    /// before it (the reply was never sent, so nothing acknowledged is undone). Migrations
    /// follow their restart rules (`crate::migration`): what they change is written at the
    /// first commit, and the sends they owe start after it. The notes say what was rolled back
    /// or resumed, for the log.
    pub fn restore(
        machine: Machine,
        settings: Settings,
        records: Records,
    ) -> Result<(Registry, Vec<String>), String> {
        let (mut registry, mut notes) =
            Registry::restore_keeping(machine, settings, records, |_| false)?;
        notes.extend(crate::registry::actions::migration::restart(&mut registry));
        Ok((registry, notes))
    }

    /// Like [`Registry::restore`], but a memory DR whose operation is `live` (its worker still
    /// runs: the registry is rebuilt while the daemon runs, after a failed commit) is kept, and
    /// migrations are taken as they are (the daemon did not restart: their workers run).
    pub fn restore_keeping(
        machine: Machine,
        settings: Settings,
        records: Records,
        live: impl Fn(u64) -> bool,
    ) -> Result<(Registry, Vec<String>), String> {
        let Some(meta) = records.meta else {
            return Err("the store has domains but no meta record".into());
        };
        let mut registry = Registry::empty(machine, settings, meta.rng);
        registry.meta = meta;
        if let Some(sp) = records.spconfigs {
            registry.sp = sp;
        }
        let mut notes = Vec::new();
        for mut domain in records.domains {
            if let Some(dr) = domain.memdr.take_if(|dr| !live(dr.id)) {
                notes.push(format!(
                    "the memory DR ({} {}) on {} was interrupted by a restart and rolled back",
                    dr.action,
                    crate::registry::units::format_size(dr.bytes),
                    domain.name
                ));
                registry.dirty.insert(Key::Domain(domain.name.clone()));
            }
            renumber_switches(&mut domain);
            registry.claim(&domain)?;
            registry.domains.insert(domain.name.clone(), domain);
        }
        if !registry
            .domains
            .contains_key(crate::registry::CONTROL_DOMAIN)
        {
            return Err("the store has no control domain".into());
        }
        if registry.meta.daemon_id == 0 {
            registry.meta.daemon_id = registry.fresh_daemon_id();
            registry.touch_meta();
        }
        for record in records.migrations {
            if !registry.domains.contains_key(&record.domain) && record.holds_domain() {
                return Err(format!(
                    "stored state is inconsistent: migration {} holds domain {}, which does not exist",
                    record.id, record.domain
                ));
            }
            registry.migrations.insert(record.id, record);
        }
        Ok((registry, notes))
    }

    /// Marks everything `domain` holds as used; an error means the records are inconsistent.
    fn claim(&mut self, domain: &Domain) -> Result<(), String> {
        let corrupt = |what: &str| {
            format!(
                "stored state is inconsistent: {what} of {} is claimed twice or out of range",
                domain.name
            )
        };
        for mac in std::iter::once(domain.mac)
            .chain(domain.vnets.iter().map(|v| v.mac))
            .chain(domain.vsw.iter().map(|v| v.mac))
        {
            if !self.macs.insert(mac) {
                return Err(corrupt("a MAC address"));
            }
        }
        for service in domain
            .vds
            .iter()
            .map(|s| &s.name)
            .chain(domain.vsw.iter().map(|s| &s.name))
            .chain(domain.vcc.iter().map(|s| &s.name))
        {
            if self
                .services
                .insert(service.clone(), domain.name.clone())
                .is_some()
            {
                return Err(corrupt("a service name"));
            }
        }
        let reconf_io = domain.reconf.iter().flat_map(|r| r.io_add.iter());
        for device in domain.io.iter().chain(reconf_io) {
            if self
                .io_owner
                .insert(device.clone(), domain.name.clone())
                .is_some()
            {
                return Err(corrupt("an I/O device"));
            }
        }
        if let Some(binding) = &domain.binding {
            if !self.pools.cpus.claim(&binding.cpus) {
                return Err(corrupt("a CPU"));
            }
            if !self.pools.maus.claim(&binding.maus) {
                return Err(corrupt("a crypto unit"));
            }
            // Memory set aside for the control domain's reboot, or for a memory DR that is
            // still running (kept only when the registry is rebuilt while the daemon runs).
            let reserved = domain
                .reconf
                .iter()
                .flat_map(|r| r.reserved.iter())
                .chain(domain.memdr.iter().flat_map(|m| m.reserved.iter()));
            for block in binding.memory.iter().chain(reserved) {
                if !self.pools.memory.claim(block.pa, block.size) {
                    return Err(corrupt("memory"));
                }
            }
            if let Some(port) = binding.console_port {
                let service = self.console_service(domain).unwrap_or_default();
                if !self.console_ports.insert((service, port)) {
                    return Err(corrupt("a console port"));
                }
            }
        }
        Ok(())
    }

    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn domains(&self) -> impl Iterator<Item = &Domain> {
        self.domains.values()
    }

    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains.get(name)
    }

    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    /// The records changed since the last call, with their new values (`None`: deleted).
    pub fn take_dirty(&mut self) -> Result<Vec<Change>, String> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|key| {
                let value = match &key {
                    Key::Domain(name) => self.domains.get(name).map(to_json).transpose()?,
                    Key::SpConfigs => Some(to_json(&self.sp)?),
                    Key::Meta => Some(to_json(&self.meta)?),
                    Key::Migration(id) => self.migrations.get(id).map(to_json).transpose()?,
                };
                Ok((key, value))
            })
            .collect()
    }

    /// Every record, serialized as the store keeps it.
    pub fn records(&self) -> Result<Vec<(Key, Vec<u8>)>, String> {
        let mut records = Vec::new();
        for (name, domain) in &self.domains {
            records.push((Key::Domain(name.clone()), to_json(domain)?));
        }
        records.push((Key::SpConfigs, to_json(&self.sp)?));
        records.push((Key::Meta, to_json(&self.meta)?));
        for (id, record) in &self.migrations {
            records.push((Key::Migration(*id), to_json(record)?));
        }
        Ok(records)
    }

    /// Marks every record as changed: all of them are written at the next commit.
    pub fn touch_all(&mut self) {
        let names: Vec<String> = self.domains.keys().cloned().collect();
        self.dirty.extend(names.into_iter().map(Key::Domain));
        self.dirty.insert(Key::SpConfigs);
        self.dirty.insert(Key::Meta);
        let ids: Vec<_> = self.migrations.keys().copied().collect();
        self.dirty.extend(ids.into_iter().map(Key::Migration));
    }

    /// The host's CPU utilisation the shell measured (see `host_util`).
    pub fn set_host_util(&mut self, percent: Option<f64>) {
        self.host_util = percent;
    }

    /// Fresh unpredictable bytes from the shell, before a batch (see `entropy`).
    pub fn set_entropy(&mut self, entropy: [u8; 32]) {
        self.entropy = entropy;
    }

    /// 32 bytes no earlier draw of this process gave: SHA-256 of the shell's entropy and a
    /// counter.
    pub(crate) fn draw_secret(&mut self) -> [u8; 32] {
        self.entropy_draws = self.entropy_draws.wrapping_add(1);
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(&self.entropy);
        context.update(&self.entropy_draws.to_be_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(context.finish().as_ref());
        out
    }

    fn fresh_daemon_id(&mut self) -> u128 {
        let secret = self.draw_secret();
        let mut half = [0u8; 16];
        half.copy_from_slice(secret.get(..16).unwrap_or(&[0; 16]));
        // Never 0, which means "none yet".
        u128::from_be_bytes(half).max(1)
    }

    /// A token for a new reservation of `id`, minted under the resolver key, which is drawn
    /// (and marked for this batch's commit) the first time.
    pub(crate) fn mint_token(
        &mut self,
        id: crate::migration::MigrationId,
    ) -> crate::migration::Token {
        if self.meta.resolver_key == [0; 32] {
            self.meta.resolver_key = self.draw_secret();
            self.touch_meta();
        }
        let mut nonce = [0u8; 16];
        for (out, byte) in nonce.iter_mut().zip(self.draw_secret()) {
            *out = byte;
        }
        crate::migration::Token::mint(&self.meta.resolver_key, id, nonce)
    }

    /// The key resolvers' tokens are checked against, once one was drawn.
    pub fn resolver_key(&self) -> Option<[u8; 32]> {
        (self.meta.resolver_key != [0; 32]).then_some(self.meta.resolver_key)
    }

    /// This daemon's identity among its peers.
    pub fn daemon_id(&self) -> u128 {
        self.meta.daemon_id
    }

    /// The migrations this daemon takes part in.
    pub fn migrations(&self) -> impl Iterator<Item = &crate::registry::model::MigrationRecord> {
        self.migrations.values()
    }

    /// The migration that holds `domain` here, if one does.
    pub fn migration_of(&self, domain: &str) -> Option<&crate::registry::model::MigrationRecord> {
        self.migrations
            .values()
            .find(|m| m.domain == domain && m.holds_domain())
    }

    pub(crate) fn touch_migration(&mut self, id: crate::migration::MigrationId) {
        self.dirty.insert(Key::Migration(id));
    }

    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Events of the changes applied since the last call, in order.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// The limits that fired since the last call.
    pub fn take_limit_hits(&mut self) -> Vec<Limit> {
        std::mem::take(&mut self.limit_hits)
    }

    pub(crate) fn limit_hit(&mut self, limit: Limit) {
        self.limit_hits.push(limit);
    }

    /// Refuses every write with `reason` from now on (`None`: writes are taken again).
    pub fn refuse_writes(&mut self, reason: Option<String>) {
        self.writes_refused = reason;
    }

    /// How many bytes listings may fill in before the replies in flight reach their limit.
    pub fn set_reply_room(&mut self, room: usize) {
        self.reply_room = room;
        self.replies_full = false;
    }

    /// Before advancing a document: how many bytes of replies its connection has not written
    /// yet. Up to `stanza_bytes_max` of them are the connection's own share, outside the
    /// replies in flight that all connections share.
    pub fn set_connection_unwritten(&mut self, unwritten: usize) {
        self.connection_room = self
            .settings
            .limits
            .stanza_bytes_max
            .saturating_sub(unwritten);
    }

    pub(crate) fn effect(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    pub(crate) fn touch(&mut self, name: &str) {
        self.dirty.insert(Key::Domain(name.to_owned()));
    }

    pub(crate) fn touch_meta(&mut self) {
        self.dirty.insert(Key::Meta);
    }

    pub(crate) fn touch_spconfigs(&mut self) {
        self.dirty.insert(Key::SpConfigs);
    }

    /// Publishes the event named `name` (its `<action>`) of `class` about `data`.
    pub(crate) fn publish(&mut self, class: EventClass, name: &str, data: &Data) {
        self.events.push(Event::new(class, name, data));
    }

    /// Publishes the change `action` made to a domain, with the Content the request named
    /// (resource events carry the resource; domain events only the name). Actions that publish
    /// nothing (§5: lists, registrations, cancellations) publish no event here.
    pub(crate) fn publish_content(&mut self, action: Action, content: Content) {
        if let Some(class) = action.event_class() {
            self.publish_named(class, action.event_name(), content);
        }
    }

    /// Publishes the event named `name` of `class` about a domain, with `content` as
    /// [`Registry::publish_content`] trims it.
    pub(crate) fn publish_named(&mut self, class: EventClass, name: &str, content: Content) {
        let content = match class {
            EventClass::Domain => Content {
                id: content.id,
                sections: Vec::new(),
            },
            _ => content,
        };
        let data = Data {
            version: Some(crate::ldm::write::DATA_VERSION.into()),
            envelope: Some(Envelope {
                contents: vec![content],
                sections: Vec::new(),
            }),
        };
        self.publish(class, name, &data);
    }

    /// A domain as `add-domain` creates it: inactive, no resources, a fresh MAC and UUID.
    pub(crate) fn new_domain(&mut self, name: &str) -> Domain {
        let mut domain = Domain::constraints_only(name);
        domain.mac = self.allocate_mac().unwrap_or(0);
        domain.hostid = hostid_of(domain.mac);
        domain.uuid = self.uuid();
        domain
    }

    /// The next free automatic MAC address, searching from the persisted cursor.
    pub(crate) fn allocate_mac(&mut self) -> Option<u64> {
        if self.free_macs() == 0 {
            return None;
        }
        let mut mac = self.meta.mac_cursor.clamp(MAC_FIRST, MAC_LAST);
        let after = |mac: u64| {
            if mac >= MAC_LAST {
                MAC_FIRST
            } else {
                mac.saturating_add(1)
            }
        };
        while self.macs.contains(&mac) {
            mac = after(mac);
        }
        self.macs.insert(mac);
        self.meta.mac_cursor = after(mac);
        self.touch_meta();
        Some(mac)
    }

    pub(crate) fn free_macs(&self) -> u64 {
        const SPAN: u64 = MAC_LAST - MAC_FIRST + 1;
        SPAN.saturating_sub(u64::try_from(self.macs.len()).unwrap_or(u64::MAX))
    }

    /// A version 4 UUID from the registry's generator (identifiers, not secrets).
    fn uuid(&mut self) -> String {
        let hi = self.next_random();
        let lo = self.next_random();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&hi.to_be_bytes());
        bytes[8..].copy_from_slice(&lo.to_be_bytes());
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }

    /// splitmix64.
    fn next_random(&mut self) -> u64 {
        self.meta.rng = self.meta.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.touch_meta();
        let mut z = self.meta.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn next_operation(&mut self) -> u64 {
        let id = self.meta.next_operation;
        // Ids only need to differ from those of operations still running.
        self.meta.next_operation = id.wrapping_add(1);
        self.touch_meta();
        id
    }

    /// The vcc serving `domain`'s console: its own choice, else the machine's first vcc.
    pub(crate) fn console_service(&self, domain: &Domain) -> Option<String> {
        if let Some(service) = &domain.console.service {
            return Some(service.clone());
        }
        self.domains
            .values()
            .flat_map(|d| d.vcc.iter())
            .map(|v| v.name.clone())
            .next()
    }

    /// Runs `change`; if it fails, the pools, console ports and the named domains are put back
    /// as they were. (Changes that own I/O devices or MACs check before they change instead.)
    pub(crate) fn atomically<T>(
        &mut self,
        domains: &[&str],
        change: impl FnOnce(&mut Registry) -> Result<T, String>,
    ) -> Result<T, String> {
        let pools = self.pools.clone();
        let saved: Vec<(String, Option<Domain>)> = domains
            .iter()
            .map(|n| (n.to_string(), self.domains.get(*n).cloned()))
            .collect();
        let ports = self.console_ports.clone();
        let result = change(self);
        if result.is_err() {
            self.pools = pools;
            self.console_ports = ports;
            for (name, domain) in saved {
                match domain {
                    Some(d) => self.domains.insert(name, d),
                    None => self.domains.remove(&name),
                };
            }
        }
        result
    }

    /// The primary in delayed reconfiguration refuses changes to every other domain.
    pub(crate) fn check_not_in_delayed_reconf(&self, name: &str) -> Result<(), String> {
        let control = crate::registry::CONTROL_DOMAIN;
        if name != control
            && self
                .domains
                .get(control)
                .is_some_and(|d| d.reconf.is_some())
        {
            return Err(format!(
                "The {control} domain has a delayed reconfiguration pending: changes to other domains are disabled until it reboots"
            ));
        }
        Ok(())
    }
}

/// Oracle's convention: a domain's hostid is 0x84 followed by the low 24 bits of its MAC.
pub fn hostid_of(mac: u64) -> u32 {
    0x8400_0000 | (mac & 0x00ff_ffff) as u32
}

/// A record's bytes. Our records always serialize; should one not, the batch is refused like
/// one the disk could not take, never half-written.
fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(value).map_err(|e| format!("a registry record does not serialize: {e}"))
}

/// Gives a domain's switches distinct numbers in their order when they have none yet: records
/// written before switches were numbered say 0 for each. Distinct numbers are kept as they
/// are, so `switch@N` never changes across a restart.
fn renumber_switches(domain: &mut Domain) {
    let distinct: BTreeSet<u32> = domain.vsw.iter().map(|v| v.id).collect();
    if distinct.len() == domain.vsw.len() {
        return;
    }
    for (n, vsw) in (0u32..).zip(domain.vsw.iter_mut()) {
        vsw.id = n;
    }
}
