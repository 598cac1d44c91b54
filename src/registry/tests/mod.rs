//! The registry's rules on plain values: no daemon, no disk.

use crate::ldm::{Document, Role, Status, parse_document};
use crate::registry::machine::{Machine, MachineConfig};
use crate::registry::model::{MemDrEnd, MemDrKind};
use crate::registry::run::Progress;
use crate::registry::state::{Effect, Key, Meta, Records, Registry, SpConfigs};
use crate::registry::{Settings, actions};
use crate::xml::{Element, NamespaceScope};

mod limits;

fn registry() -> Registry {
    let machine = Machine::from_config(&MachineConfig::default()).unwrap();
    Registry::new(machine, Settings::default(), 42, 1_000).unwrap()
}

fn document(xml: &str) -> Document {
    parse_document(&Element::parse(xml, &NamespaceScope::client()).unwrap())
}

fn cmd(action: &str, domain: &str, items: &str) -> String {
    format!(
        "<LDM_interface version='1.3'><cmd><action>{action}</action><data version='3.0'><Envelope><References/><Content xsi:type='ovf:VirtualSystem_Type' id='{domain}'><Section xsi:type='ovf:ResourceAllocationSection_type'>{items}</Section></Content></Envelope></data></cmd></LDM_interface>"
    )
}

fn units(resource: &str, units: &str) -> String {
    format!(
        "<Item><rasd:OtherResourceType>{resource}</rasd:OtherResourceType><rasd:AllocationUnits>{units}</rasd:AllocationUnits></Item>"
    )
}

/// Runs a document to completion (or to its long operation); returns each object's status and
/// messages.
fn run(reg: &mut Registry, xml: &str) -> (Progress, Vec<(Status, Vec<String>)>) {
    let mut run = Registry::begin(document(xml), Role::Write);
    let progress = reg.advance(&mut run, 2_000);
    let objects = match &progress {
        Progress::Done => run
            .into_response()
            .0
            .cmds
            .iter()
            .flat_map(|c| &c.data)
            .map(|d| (d.status, d.messages.clone()))
            .collect(),
        Progress::Waiting(_) => Vec::new(),
    };
    (progress, objects)
}

#[track_caller]
fn ok(reg: &mut Registry, xml: &str) {
    let (progress, objects) = run(reg, xml);
    assert!(matches!(progress, Progress::Done), "{progress:?}");
    assert!(
        objects.iter().all(|(s, _)| *s == Status::Success),
        "{xml}: {objects:?}"
    );
}

/// Adds, binds and starts `name` with one CPU and 4G.
fn active_guest(reg: &mut Registry, name: &str) {
    ok(
        reg,
        &cmd(
            "add-domain",
            name,
            &(units("cpu", "1") + &units("memory", "4G")),
        ),
    );
    ok(reg, &cmd("bind-domain", name, ""));
    ok(reg, &cmd("start-domain", name, ""));
}

#[track_caller]
fn refused(reg: &mut Registry, xml: &str) -> String {
    let (_, objects) = run(reg, xml);
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].0, Status::Failure, "{xml}");
    objects[0].1.join(" ")
}

/// Saves every record as the store would, and restores a registry from them.
fn reload(reg: &mut Registry, store: &mut std::collections::BTreeMap<Key, Vec<u8>>) -> Registry {
    for (key, value) in reg.take_dirty().unwrap() {
        match value {
            Some(v) => store.insert(key, v),
            None => store.remove(&key),
        };
    }
    let mut records = Records::default();
    for (key, value) in store.iter() {
        match key {
            Key::Domain(_) => records.domains.push(serde_json::from_slice(value).unwrap()),
            Key::SpConfigs => {
                records.spconfigs = Some(serde_json::from_slice::<SpConfigs>(value).unwrap())
            }
            Key::Meta => records.meta = Some(serde_json::from_slice::<Meta>(value).unwrap()),
            Key::Migration(_) => records
                .migrations
                .push(serde_json::from_slice(value).unwrap()),
        }
    }
    let (restored, _) =
        Registry::restore(reg.machine().clone(), Settings::default(), records).unwrap();
    restored
}

#[test]
fn allocations_rebuilt_from_records_equal_the_live_ones_after_random_changes() {
    // Whatever sequence of changes, accepted or refused, the durable records alone rebuild
    // exactly the pools the live registry holds: nothing refused left a trace.
    let mut reg = registry();
    let mut store = std::collections::BTreeMap::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for step in 0..600 {
        let domain = format!("d{}", next(6));
        let xml = match next(10) {
            0 => cmd("add-domain", &domain, ""),
            1 => cmd("set-vcpu", &domain, &units("cpu", &(next(80)).to_string())),
            2 => cmd(
                "set-memory",
                &domain,
                &units("memory", &format!("{}M", next(200_000))),
            ),
            3 => cmd("bind-domain", &domain, ""),
            4 => cmd("unbind-domain", &domain, ""),
            5 => cmd("start-domain", &domain, ""),
            6 => cmd("stop-domain", &domain, ""),
            7 => cmd("remove-domain", &domain, ""),
            8 => cmd(
                "add-vnet",
                &domain,
                &format!(
                    "<Item><rasd:OtherResourceType>network</rasd:OtherResourceType><gprop:GenericProperty key='vnet_name'>n{}</gprop:GenericProperty><gprop:GenericProperty key='service_name'>primary-vsw0</gprop:GenericProperty></Item>",
                    next(3)
                ),
            ),
            _ => cmd("set-mau", &domain, &units("mau", &next(12).to_string())),
        };
        let (progress, _) = run(&mut reg, &xml);
        if let Progress::Waiting(operation) = progress {
            // A memory DR on an active domain: let the guest finish half of it.
            let done = reg.domains().find_map(|d| d.memdr.as_ref()).unwrap().bytes / 2;
            actions::finish_memdr(&mut reg, operation, done)
                .unwrap()
                .1
                .ok();
        }
        if step % 50 == 49 {
            let restored = reload(&mut reg, &mut store);
            assert_eq!(restored.pools(), reg.pools(), "step {step}");
            assert_eq!(
                restored.domains().collect::<Vec<_>>(),
                reg.domains().collect::<Vec<_>>()
            );
        }
    }
    assert!(reg.domains().count() > 1, "the walk did create domains");
}

#[test]
fn a_refused_bind_leaves_nothing_reserved() {
    let mut reg = registry();
    ok(
        &mut reg,
        &cmd(
            "add-domain",
            "big",
            &(units("cpu", "64") + &units("memory", "600G")),
        ),
    );
    let before = reg.pools().clone();
    let message = refused(&mut reg, &cmd("bind-domain", "big", ""));
    assert!(
        message.starts_with("Not enough free memory for big"),
        "{message}"
    );
    assert_eq!(
        reg.pools(),
        &before,
        "the CPUs taken before the memory failed were given back"
    );
    assert!(
        reg.take_events()
            .iter()
            .all(|e| !String::from_utf8_lossy(&e.document).contains("bind-domain"))
    );
}

#[test]
fn bound_memory_rounds_up_to_4m_with_a_warning() {
    let mut reg = registry();
    ok(
        &mut reg,
        &cmd(
            "add-domain",
            "g",
            &(units("cpu", "1") + &units("memory", "1001M")),
        ),
    );
    let mut run = Registry::begin(document(&cmd("bind-domain", "g", "")), Role::Write);
    assert_eq!(reg.advance(&mut run, 0), Progress::Done);
    let (response, _) = run.into_response();
    let warning = response.cmds[0].data[0].warning.clone().unwrap();
    assert_eq!(
        warning,
        "The memory of g was rounded up from 1001M to 1004M"
    );
    assert_eq!(reg.domain("g").unwrap().memory, 1004 << 20);
}

#[test]
fn an_interrupted_memory_dr_is_rolled_back_on_restore() {
    let mut reg = registry();
    let mut store = std::collections::BTreeMap::new();
    active_guest(&mut reg, "g");
    let committed = reload(&mut reg, &mut store).pools().clone();
    let (progress, _) = run(&mut reg, &cmd("add-memory", "g", &units("memory", "2G")));
    assert!(matches!(progress, Progress::Waiting(_)));
    assert!(
        matches!(reg.take_effects()[..], [Effect::StartMemDr { kind: MemDrKind::Add, bytes, .. }] if bytes == 2 << 30)
    );
    assert_ne!(
        reg.pools(),
        &committed,
        "the growth is reserved while it runs"
    );
    // The daemon dies here: the DR's start is durable, its end never came.
    let restored = reload(&mut reg, &mut store);
    assert!(restored.domain("g").unwrap().memdr.is_none());
    assert_eq!(restored.domain("g").unwrap().memory, 4 << 30);
    assert_eq!(restored.pools(), &committed, "the reservation is released");
}

#[test]
fn set_memory_of_an_active_domain_names_the_size_typed_and_accepts_its_own_size() {
    let mut reg = registry();
    active_guest(&mut reg, "g");
    // Its own size: nothing to do, as set-vcpu to the current count (it used to be refused as
    // a DR of 0).
    reg.take_effects();
    ok(&mut reg, &cmd("set-memory", "g", &units("memory", "4G")));
    assert!(
        !reg.take_effects()
            .iter()
            .any(|e| matches!(e, Effect::StartMemDr { .. })),
        "no DR starts"
    );
    assert_eq!(reg.domain("g").unwrap().memory, 4 << 30);
    // What was typed, not the difference to the current size.
    let refusal = refused(&mut reg, &cmd("set-memory", "g", &units("memory", "3")));
    assert!(refusal.contains("Memory size 3 is not"), "{refusal}");
    let refusal = refused(&mut reg, &cmd("set-memory", "g", &units("memory", "4200M")));
    assert!(refusal.contains("Memory size 4200M is not"), "{refusal}");
    let adjusted = cmd("set-memory", "g", &units("memory", "4200M"))
        .replace("</action>", "</action><options>auto-adj</options>");
    let (progress, _) = run(&mut reg, &adjusted);
    let Progress::Waiting(operation) = progress else {
        panic!("{progress:?}")
    };
    let memdr = reg.domain("g").unwrap().memdr.clone().unwrap();
    assert_eq!(
        memdr.warning.as_deref(),
        Some("The size was adjusted from 4200M to 4352M to a 256M boundary")
    );
    let (end, _) = actions::finish_memdr(&mut reg, operation, 256 << 20).unwrap();
    assert_eq!(end, MemDrEnd::Completed);
    assert_eq!(reg.domain("g").unwrap().memory, 4352 << 20);
    // add-memory still names the change.
    let refusal = refused(&mut reg, &cmd("add-memory", "g", &units("memory", "300M")));
    assert!(refusal.contains("Memory size 300M is not"), "{refusal}");
}

#[test]
fn memory_dr_rules_of_section_6() {
    let mut reg = registry();
    active_guest(&mut reg, "g");
    assert!(
        refused(&mut reg, &cmd("add-memory", "g", &units("memory", "300M")))
            .contains("not a multiple of 256M")
    );
    assert!(
        refused(&mut reg, &cmd("remove-memory", "g", &units("memory", "4G"))).contains("it has 4G")
    );
    // auto-adj rounds a removal down.
    let adjusted = cmd("remove-memory", "g", &units("memory", "300M"))
        .replace("</action>", "</action><options>auto-adj</options>");
    let (progress, _) = run(&mut reg, &adjusted);
    let Progress::Waiting(operation) = progress else {
        panic!("{progress:?}")
    };
    assert!(
        refused(&mut reg, &cmd("add-vcpu", "g", &units("cpu", "1"))).contains("in progress on g")
    );
    let (end, outcome) = actions::finish_memdr(&mut reg, operation, 256 << 20).unwrap();
    assert_eq!(
        end,
        MemDrEnd::Completed,
        "all of the adjusted size was removed"
    );
    let outcome = outcome.unwrap();
    assert_eq!(
        outcome.warning.unwrap(),
        "The size was adjusted from 300M to 256M to a 256M boundary"
    );
    assert_eq!(reg.domain("g").unwrap().memory, (4 << 30) - (256 << 20));
    // With the XMPP interface off, no memory DR at all.
    let machine = reg.machine().clone();
    let mut off = Registry::new(
        machine,
        Settings {
            xmpp_enabled: false,
            ..Settings::default()
        },
        1,
        0,
    )
    .unwrap();
    active_guest(&mut off, "g");
    assert!(
        refused(&mut off, &cmd("add-memory", "g", &units("memory", "1G")))
            .contains("xmpp_enabled = false")
    );
}

#[test]
fn the_control_domain_reconfigures_at_its_reboot_and_locks_the_others_meanwhile() {
    let mut reg = registry();
    ok(&mut reg, &cmd("add-domain", "g", ""));
    let mut run1 = Registry::begin(
        document(&cmd("set-memory", "primary", &units("memory", "32G"))),
        Role::Write,
    );
    assert_eq!(reg.advance(&mut run1, 0), Progress::Done);
    let (response, _) = run1.into_response();
    assert!(
        response.cmds[0].data[0]
            .warning
            .as_deref()
            .unwrap()
            .starts_with("Initiating a delayed reconfiguration")
    );
    assert_eq!(
        crate::registry::listing::flags(&reg, reg.domain("primary").unwrap()),
        "-ndcv-"
    );
    assert!(
        refused(&mut reg, &cmd("add-vcpu", "g", &units("cpu", "1")))
            .contains("delayed reconfiguration pending")
    );
    let bound = |reg: &Registry| {
        reg.domain("primary")
            .unwrap()
            .binding
            .as_ref()
            .unwrap()
            .memory_bytes()
    };
    assert_eq!(bound(&reg), 16 << 30, "nothing changes before the reboot");
    ok(
        &mut reg,
        &cmd("stop-domain", "primary", "").replace("</action>", "</action><options>-r</options>"),
    );
    assert_eq!(bound(&reg), 32 << 30);
    assert!(reg.domain("primary").unwrap().reconf.is_none());
    ok(&mut reg, &cmd("add-vcpu", "g", &units("cpu", "1")));
    // remove-reconf throws pending changes away.
    ok(
        &mut reg,
        &cmd("set-memory", "primary", &units("memory", "8G")),
    );
    ok(&mut reg, &cmd("remove-reconf", "primary", ""));
    assert_eq!(reg.domain("primary").unwrap().memory, 32 << 30);
}

#[test]
fn names_macs_and_services_are_checked() {
    let mut reg = registry();
    assert!(
        refused(&mut reg, &cmd("add-domain", &"x".repeat(257), ""))
            .contains("at most 256 characters")
    );
    assert!(refused(&mut reg, &cmd("add-domain", "a b", "")).contains("not allowed"));
    ok(&mut reg, &cmd("add-domain", "g", ""));
    let mac = crate::registry::units::format_mac(reg.domain("g").unwrap().mac);
    let taken = format!(
        "<Item><rasd:OtherResourceType>ldom_info</rasd:OtherResourceType><rasd:Address>{mac}</rasd:Address></Item>"
    );
    assert!(refused(&mut reg, &cmd("add-domain", "h", &taken)).contains("is already in use"));
    assert!(reg.domain("h").is_none());
    let vds = "<Item><rasd:OtherResourceType>vds</rasd:OtherResourceType><gprop:GenericProperty key='service_name'>primary-vds0</gprop:GenericProperty></Item>";
    assert!(
        refused(&mut reg, &cmd("add-vdiskserver", "g", vds)).contains("already in use by primary")
    );
    assert!(refused(&mut reg, &cmd("remove-domain", "primary", "")).contains("cannot be removed"));
    assert_eq!(
        reg.domain("g").unwrap().hostid,
        0x8400_0000 | (reg.domain("g").unwrap().mac & 0xff_ffff) as u32
    );
}

#[test]
fn list_constraints_output_feeds_back_into_add_domain() {
    // §4: list output in request form can be sent back as input.
    let mut reg = registry();
    ok(
        &mut reg,
        &cmd(
            "add-domain",
            "g",
            &(units("cpu", "3") + &units("memory", "3G") + &units("mau", "1")),
        ),
    );
    let mut run1 = Registry::begin(document(&cmd("list-constraints", "g", "")), Role::Read);
    assert_eq!(reg.advance(&mut run1, 0), Progress::Done);
    let (response, _) = run1.into_response();
    let mut content = response.cmds[0].data[0]
        .data
        .envelope
        .clone()
        .unwrap()
        .contents
        .remove(0);
    content.id = "copy".into();
    // Identities are the new domain's own.
    content.sections[0]
        .items
        .retain(|i| i.resource_type != "ldom_info");
    content.sections[0]
        .items
        .retain(|i| i.resource_type != "console");
    let mut doc = document(&cmd("add-domain", "copy", ""));
    doc.cmds[0].data[0].envelope.as_mut().unwrap().contents[0] = content;
    let mut run2 = Registry::begin(doc, Role::Write);
    assert_eq!(reg.advance(&mut run2, 0), Progress::Done);
    let (response, _) = run2.into_response();
    assert_eq!(response.status(), Status::Success, "{response:?}");
    let copy = reg.domain("copy").unwrap();
    assert_eq!((copy.vcpus, copy.memory, copy.mau), (3, 3 << 30, 1));
}

#[test]
fn switches_are_numbered_lowest_free_first_and_old_records_get_numbers_at_restore() {
    let mut reg = registry();
    let mut store = std::collections::BTreeMap::new();
    let vsw = |name: &str| {
        format!(
            "<Item><rasd:OtherResourceType>vsw</rasd:OtherResourceType><gprop:GenericProperty key='service_name'>{name}</gprop:GenericProperty></Item>"
        )
    };
    let ids = |reg: &Registry| -> Vec<(String, u32)> {
        reg.domain("primary")
            .unwrap()
            .vsw
            .iter()
            .map(|v| (v.name.clone(), v.id))
            .collect()
    };
    ok(&mut reg, &cmd("add-vswitch", "primary", &vsw("sw1")));
    ok(&mut reg, &cmd("add-vswitch", "primary", &vsw("sw2")));
    ok(&mut reg, &cmd("remove-vswitch", "primary", &vsw("sw1")));
    ok(&mut reg, &cmd("add-vswitch", "primary", &vsw("sw3")));
    let numbered = vec![
        ("primary-vsw0".to_owned(), 0),
        ("sw2".to_owned(), 2),
        ("sw3".to_owned(), 1),
    ];
    assert_eq!(ids(&reg), numbered);
    // Distinct numbers survive a restart as they are.
    let mut reg = reload(&mut reg, &mut store);
    assert_eq!(ids(&reg), numbered);
    // Records from before switches were numbered say 0 for each: they are numbered in order.
    for vsw in &mut reg.domains.get_mut("primary").unwrap().vsw {
        vsw.id = 0;
    }
    reg.touch("primary");
    let reg = reload(&mut reg, &mut store);
    assert_eq!(
        ids(&reg),
        [
            ("primary-vsw0".to_owned(), 0),
            ("sw2".to_owned(), 1),
            ("sw3".to_owned(), 2)
        ]
    );
}

#[test]
fn a_uuid_is_taken_at_creation_once_per_machine_and_never_changed() {
    let mut reg = registry();
    let info = |uuid: &str| {
        format!(
            "<Item><rasd:OtherResourceType>ldom_info</rasd:OtherResourceType><uuid>{uuid}</uuid></Item>"
        )
    };
    let given = "6C908858-12ef-e520-9eb3-f1cd3dbc3a59";
    ok(&mut reg, &cmd("add-domain", "a", &info(given)));
    assert_eq!(reg.domain("a").unwrap().uuid, given.to_ascii_lowercase());
    assert_eq!(
        refused(&mut reg, &cmd("add-domain", "b", &info(given))),
        "UUID 6c908858-12ef-e520-9eb3-f1cd3dbc3a59 is already used by LDom a"
    );
    for bad in [
        "6c908858",
        "6c908858-12ef-e520-9eb3-f1cd3dbc3a5g",
        "--------",
        "",
    ] {
        assert!(
            refused(&mut reg, &cmd("add-domain", "b", &info(bad))).starts_with("Invalid UUID"),
            "{bad}"
        );
    }
    assert!(reg.domain("b").is_none());
    // set-domain may carry the domain's own UUID (a listing sent back), never another.
    ok(&mut reg, &cmd("set-domain", "a", &info(given)));
    assert!(
        refused(
            &mut reg,
            &cmd(
                "set-domain",
                "a",
                &info("00000000-0000-0000-0000-000000000001")
            )
        )
        .contains("cannot change")
    );
    assert_eq!(reg.domain("a").unwrap().uuid, given.to_ascii_lowercase());
}

#[test]
fn disks_and_networks_are_numbered_per_class_lowest_free_first_and_kept_across_restarts() {
    let mut reg = registry();
    let mut store = std::collections::BTreeMap::new();
    let vnet = |name: &str| {
        format!(
            "<Item><rasd:OtherResourceType>network</rasd:OtherResourceType><gprop:GenericProperty key='vnet_name'>{name}</gprop:GenericProperty><gprop:GenericProperty key='service_name'>primary-vsw0</gprop:GenericProperty></Item>"
        )
    };
    let vdisk = |name: &str| {
        format!(
            "<Item><rasd:OtherResourceType>disk</rasd:OtherResourceType><gprop:GenericProperty key='vdisk_name'>{name}</gprop:GenericProperty><gprop:GenericProperty key='service_name'>primary-vds0</gprop:GenericProperty><gprop:GenericProperty key='vol_name'>vol1</gprop:GenericProperty></Item>"
        )
    };
    let volume = "<Item><rasd:OtherResourceType>vds_volume</rasd:OtherResourceType><gprop:GenericProperty key='vol_name'>vol1</gprop:GenericProperty><gprop:GenericProperty key='service_name'>primary-vds0</gprop:GenericProperty><gprop:GenericProperty key='block_dev'>/dev/zvol/v1</gprop:GenericProperty></Item>";
    ok(&mut reg, &cmd("add-vdiskserverdevice", "primary", volume));
    ok(&mut reg, &cmd("add-domain", "ldg1", ""));
    ok(&mut reg, &cmd("add-vdisk", "ldg1", &vdisk("d0")));
    ok(&mut reg, &cmd("add-vnet", "ldg1", &vnet("n0")));
    ok(&mut reg, &cmd("add-vnet", "ldg1", &vnet("n1")));
    ok(&mut reg, &cmd("add-vdisk", "ldg1", &vdisk("d1")));
    let ids = |reg: &Registry| {
        let d = reg.domain("ldg1").unwrap();
        (
            d.vdisks
                .iter()
                .map(|v| (v.name.clone(), v.id))
                .collect::<Vec<_>>(),
            d.vnets
                .iter()
                .map(|v| (v.name.clone(), v.id))
                .collect::<Vec<_>>(),
        )
    };
    // Each class from 0: the first network is network@0 although a disk came first.
    assert_eq!(
        ids(&reg),
        (
            vec![("d0".into(), 0), ("d1".into(), 1)],
            vec![("n0".into(), 0), ("n1".into(), 1)]
        )
    );
    // A freed number is the next one given; the others keep theirs.
    ok(&mut reg, &cmd("remove-vnet", "ldg1", &vnet("n0")));
    ok(&mut reg, &cmd("add-vnet", "ldg1", &vnet("n2")));
    let (_, nets) = ids(&reg);
    assert_eq!(nets, vec![("n1".into(), 1), ("n2".into(), 0)]);
    // A restart keeps every number.
    let restored = reload(&mut reg, &mut store);
    assert_eq!(ids(&restored), ids(&reg));
    // A record written with the counter disks and networks once shared still loads, its
    // numbers as stored.
    let mut legacy: serde_json::Value = serde_json::to_value(reg.domain("ldg1").unwrap()).unwrap();
    legacy["next_device_id"] = 4.into();
    let domain: crate::registry::model::Domain = serde_json::from_value(legacy).unwrap();
    assert_eq!(&domain, reg.domain("ldg1").unwrap());
}
