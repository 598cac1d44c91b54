//! Requests that ask too much: extreme numbers, every limit at and past its bound, documents
//! that would amplify into huge replies, and a store that refuses writes.

use super::*;

#[test]
fn a_random_walk_of_every_action_with_extreme_values_keeps_every_invariant() {
    // Every action, on a few domains, with 0, 1, max−1, u32::MAX, u64::MAX, sizes near 2^64
    // and names at and past their limits: nothing panics, nothing is lost or held twice, and
    // the records rebuild exactly the live pools (crate::fuzz::registry_walk checks them).
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..6 * 3000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect();
    crate::fuzz::registry_walk(bytes.chunks(6));
}

/// A registry with some limits changed.
fn registry_with(tweak: impl FnOnce(&mut crate::registry::state::RegistryLimits)) -> Registry {
    let machine = Machine::from_config(&MachineConfig::default()).unwrap();
    let mut settings = Settings::default();
    tweak(&mut settings.limits);
    Registry::new(machine, settings, 42, 1_000).unwrap()
}

fn prop_item(resource: &str, props: &[(&str, &str)]) -> String {
    let props: String = props
        .iter()
        .map(|(k, v)| format!("<gprop:GenericProperty key='{k}'>{v}</gprop:GenericProperty>"))
        .collect();
    format!("<Item><rasd:OtherResourceType>{resource}</rasd:OtherResourceType>{props}</Item>")
}

/// Runs a document to its end; returns the whole response.
fn respond(reg: &mut Registry, xml: &str, role: Role) -> crate::ldm::Response {
    let mut run = Registry::begin(document(xml), role);
    assert_eq!(reg.advance(&mut run, 0), Progress::Done);
    run.into_response().0
}

#[test]
fn removing_a_disk_service_named_like_a_switch_is_refused_not_a_panic() {
    // `ldm rm-vds primary-vsw0` used to panic the registry thread at an expect.
    let mut reg = registry();
    let vds = prop_item("vds", &[("service_name", "primary-vsw0")]);
    let message = refused(&mut reg, &cmd("remove-vdiskserver", "primary", &vds));
    assert_eq!(message, "primary-vsw0 is not a virtual disk service");
    let volume = prop_item(
        "vds_volume",
        &[("service_name", "primary-vcc0"), ("vol_name", "v")],
    );
    assert!(
        refused(
            &mut reg,
            &cmd("remove-vdiskserverdevice", "primary", &volume)
        )
        .contains("is not a virtual disk service")
    );
    assert!(
        reg.domain("primary").unwrap().vsw.len() == 1,
        "nothing changed"
    );
}

#[test]
fn adding_crypto_units_never_wraps_into_a_removal() {
    // add-mau with 4294967295 units wrapped in release builds: an add that removed units.
    let mut reg = registry();
    ok(&mut reg, &cmd("add-domain", "g", &units("mau", "2")));
    let message = refused(&mut reg, &cmd("add-mau", "g", &units("mau", "4294967295")));
    assert!(
        message.starts_with("The machine has 32 crypto units"),
        "{message}"
    );
    assert_eq!(reg.domain("g").unwrap().mau, 2);
    for count in ["4294967296", "18446744073709551615", "-1"] {
        refused(&mut reg, &cmd("add-mau", "g", &units("mau", count)));
    }
    assert!(refused(&mut reg, &cmd("remove-mau", "g", &units("mau", "3"))).contains("has 2"));
    let message = refused(&mut reg, &cmd("add-vcpu", "g", &units("cpu", "4294967295")));
    assert!(message.starts_with("The machine has 256"), "{message}");
}

#[test]
fn memory_sizes_near_two_to_the_64_are_refused_and_never_bind_zero_bytes() {
    // A size within 4 MiB of 2^64 rounded up to 0: a domain bound with 0 bytes.
    let mut reg = registry();
    ok(&mut reg, &cmd("add-domain", "g", &units("cpu", "1")));
    for size in [
        "18446744073709551615",
        "18446744073709551614",
        "17179869183G",
        "16777215T",
        "65T",
    ] {
        let message = refused(&mut reg, &cmd("set-memory", "g", &units("memory", size)));
        assert!(
            message.starts_with("Invalid memory size"),
            "{size}: {message}"
        );
        refused(&mut reg, &cmd("add-domain", "h", &units("memory", size)));
    }
    ok(&mut reg, &cmd("set-memory", "g", &units("memory", "64T")));
    assert!(refused(&mut reg, &cmd("add-memory", "g", &units("memory", "4M"))).contains("is over"));
    assert!(refused(&mut reg, &cmd("bind-domain", "g", "")).starts_with("Not enough free memory"));
    assert_eq!(reg.domain("g").unwrap().binding, None);
}

#[test]
fn domains_are_limited_by_domains_max() {
    let mut reg = registry_with(|l| l.domains_max = 3);
    ok(&mut reg, &cmd("add-domain", "a", ""));
    ok(&mut reg, &cmd("add-domain", "b", ""));
    let message = refused(&mut reg, &cmd("add-domain", "c", ""));
    assert!(
        message.contains("at most 3 domains (limits.domains_max)"),
        "{message}"
    );
    assert!(
        reg.take_limit_hits()
            .contains(&crate::limits::Limit::Domains)
    );
    ok(&mut reg, &cmd("remove-domain", "a", ""));
    ok(&mut reg, &cmd("add-domain", "c", ""));
}

#[test]
fn variables_are_limited_in_count_and_value_size() {
    let mut reg = registry_with(|l| {
        l.variables_per_domain_max = 2;
        l.variable_value_bytes_max = 8;
    });
    ok(&mut reg, &cmd("add-domain", "g", ""));
    let var = |name: &str, value: &str| prop_item("var", &[("name", name), ("value", value)]);
    ok(&mut reg, &cmd("add-variable", "g", &var("a", "12345678")));
    let message = refused(&mut reg, &cmd("add-variable", "g", &var("b", "123456789")));
    assert!(
        message.contains("variable_value_bytes_max allows 8"),
        "{message}"
    );
    ok(&mut reg, &cmd("add-variable", "g", &var("b", "1")));
    let message = refused(&mut reg, &cmd("add-variable", "g", &var("c", "1")));
    assert!(
        message.contains("variables_per_domain_max allows 2"),
        "{message}"
    );
    ok(&mut reg, &cmd("set-variable", "g", &var("a", "2")));
    // add-domain with var Items is held to the same limits.
    let three = var("x", "1") + &var("y", "1") + &var("z", "1");
    assert!(refused(&mut reg, &cmd("add-domain", "h", &three)).contains("allows 2"));
    assert!(reg.domain("h").is_none());
}

#[test]
fn one_domains_constraints_always_fit_the_stanza_limit() {
    // list-constraints is meant to be fed back as add-domain: it must never outgrow the
    // largest request the daemon accepts. Changes that could make it do so are refused first.
    let stanza = 16 * 1024;
    let mut reg = registry_with(|l| {
        l.stanza_bytes_max = stanza;
        l.variables_per_domain_max = 10_000;
    });
    ok(&mut reg, &cmd("add-domain", "g", ""));
    let mut added = 0;
    let refusal = loop {
        let var = prop_item(
            "var",
            &[("name", &format!("v{added}")), ("value", &"x".repeat(200))],
        );
        let (_, objects) = run(&mut reg, &cmd("add-variable", "g", &var));
        if objects[0].0 == Status::Failure {
            break objects[0].1.join(" ");
        }
        added += 1;
        assert!(added < 1000, "never refused");
    };
    assert!(
        refusal.contains("would outgrow limits.stanza_bytes_max"),
        "{refusal}"
    );
    assert!(added > 10, "refused too early: {added}");
    let reply = respond(&mut reg, &cmd("list-constraints", "g", ""), Role::Read);
    let mut out = Vec::new();
    crate::ldm::write_response(&mut out, &reply);
    assert!(out.len() <= stanza, "{} bytes", out.len());
    // Services grow the domain that provides them: the same rule holds there.
    let mut volumes = 0;
    loop {
        let volume = prop_item(
            "vds_volume",
            &[
                ("service_name", "primary-vds0"),
                ("vol_name", &format!("vol{volumes}")),
                (
                    "block_dev",
                    &format!("/dev/zvol/dsk/ldoms/{}", "v".repeat(300)),
                ),
                ("vol_opts", "ro"),
            ],
        );
        let (_, objects) = run(&mut reg, &cmd("add-vdiskserverdevice", "primary", &volume));
        if objects[0].0 == Status::Failure {
            break;
        }
        volumes += 1;
        assert!(volumes < 1000, "never refused");
    }
    let reply = respond(
        &mut reg,
        &cmd("list-constraints", "primary", ""),
        Role::Read,
    );
    let mut out = Vec::new();
    crate::ldm::write_response(&mut out, &reply);
    assert!(out.len() <= stanza, "{} bytes", out.len());
}

#[test]
fn documents_with_too_many_cmds_or_objects_fail_whole() {
    let mut reg = registry_with(|l| {
        l.cmds_per_document_max = 2;
        l.data_per_document_max = 3;
    });
    let list = "<cmd><action>list-domain</action><data version='3.0'/></cmd>";
    let doc = format!(
        "<LDM_interface version='1.0'>{}</LDM_interface>",
        list.repeat(3)
    );
    let response = respond(&mut reg, &doc, Role::Read);
    assert!(response.cmds.is_empty());
    assert_eq!(
        response.malformed.as_deref(),
        Some(
            "The document has 3 cmd elements; limits.cmds_per_document_max allows 2: send fewer per document"
        )
    );
    let four = "<data version='3.0'/>".repeat(4);
    let doc = format!(
        "<LDM_interface version='1.0'><cmd><action>list-devices</action>{four}</cmd></LDM_interface>"
    );
    let response = respond(&mut reg, &doc, Role::Read);
    assert!(response.malformed.unwrap().contains("4 data elements"));
    let hits = reg.take_limit_hits();
    assert!(hits.contains(&crate::limits::Limit::CmdsPerDocument));
    assert!(hits.contains(&crate::limits::Limit::DataPerDocument));
}

#[test]
fn listings_stop_at_the_reply_limit() {
    // A read user's document of many list-devices objects used to make hundreds of MB of reply.
    let mut reg = registry_with(|l| {
        l.stanza_bytes_max = 8 * 1024;
        l.data_per_document_max = 64;
        l.reply_bytes_max = 200 * 1024;
    });
    let objects = "<data version='3.0'/>".repeat(64);
    let doc = format!(
        "<LDM_interface version='1.0'><cmd><action>list-devices</action>{objects}</cmd></LDM_interface>"
    );
    let response = respond(&mut reg, &doc, Role::Read);
    let statuses: Vec<Status> = response.cmds[0].data.iter().map(|d| d.status).collect();
    let answered = statuses.iter().filter(|s| **s == Status::Success).count();
    assert!(answered > 0 && answered < 64, "{answered} answered");
    assert!(statuses[answered..].iter().all(|s| *s == Status::Failure));
    assert!(response.cmds[0].data[answered].messages[0].contains("limits.reply_bytes_max"));
    let mut out = Vec::new();
    crate::ldm::write_response(&mut out, &response);
    assert!(out.len() <= 200 * 1024, "{} bytes", out.len());
    assert!(
        reg.take_limit_hits()
            .contains(&crate::limits::Limit::ReplyBytes)
    );
}

#[test]
fn listings_stop_when_the_replies_in_flight_fill_their_room() {
    let mut reg = registry();
    reg.set_reply_room(100);
    let (_, objects) = {
        let mut run = Registry::begin(document(&cmd("list-domain", "primary", "")), Role::Read);
        assert_eq!(reg.advance(&mut run, 0), Progress::Done);
        let response = run.into_response().0;
        let objects: Vec<_> = response.cmds[0]
            .data
            .iter()
            .map(|d| (d.status, d.messages.clone()))
            .collect();
        ((), objects)
    };
    assert_eq!(objects[0].0, Status::Failure);
    assert!(objects[0].1[0].contains("reply_bytes_in_flight_max"));
    reg.set_reply_room(usize::MAX);
    ok(&mut reg, &cmd("list-domain", "primary", ""));
}

#[test]
fn a_connection_that_reads_its_replies_is_answered_when_others_fill_the_shared_room() {
    // Peers that never read their replies can fill reply_bytes_in_flight_max; each connection
    // still has stanza_bytes_max of unwritten replies of its own, so a bystander's listing is
    // answered, and a connection holding its own share already is refused.
    let mut reg = registry();
    let listing = |reg: &mut Registry| {
        let mut run = Registry::begin(document(&cmd("list-domain", "primary", "")), Role::Read);
        assert_eq!(reg.advance(&mut run, 0), Progress::Done);
        let shared = run.filled_shared_bytes();
        let data = run.into_response().0.cmds[0].data[0].clone();
        (data.status, data.messages, shared)
    };
    reg.set_reply_room(0);
    // The first listing of the batch: the shared room is full, and it fails.
    let (status, messages, _) = listing(&mut reg);
    assert_eq!(status, Status::Failure);
    assert!(messages[0].contains("reply_bytes_in_flight_max"));
    // A bystander holding nothing unwritten: answered from its own share, even after the
    // batch found the shared room full.
    reg.set_connection_unwritten(0);
    let (status, _, shared) = listing(&mut reg);
    assert_eq!((status, shared), (Status::Success, 0));
    // A connection whose own share is spent: refused again, without building the listing.
    reg.set_connection_unwritten(256 * 1024);
    let (status, messages, _) = listing(&mut reg);
    assert_eq!(status, Status::Failure);
    assert!(messages[0].contains("reply_bytes_in_flight_max"));
    // Part from its own share, the rest from the shared room.
    reg.set_reply_room(usize::MAX);
    reg.set_connection_unwritten(256 * 1024 - 10);
    let (status, _, shared) = listing(&mut reg);
    assert_eq!(status, Status::Success);
    assert!(shared > 0);
}

#[test]
fn refused_writes_change_nothing_and_reads_go_on() {
    // While the store cannot take changes, every write is refused with the reason and reads
    // are answered.
    let mut reg = registry();
    reg.refuse_writes(Some("the disk is full".into()));
    let before = reg.records().unwrap();
    assert_eq!(
        refused(&mut reg, &cmd("add-domain", "g", "")),
        "the disk is full"
    );
    assert_eq!(reg.records().unwrap(), before);
    ok(&mut reg, &cmd("list-domain", "primary", ""));
    reg.refuse_writes(None);
    ok(&mut reg, &cmd("add-domain", "g", ""));
}

#[test]
fn a_run_rewinds_to_where_the_batch_found_it() {
    // When a commit fails, every document of the batch is answered again from where it stood:
    // a run keeps nothing of what the batch added to its answer.
    let mut reg = registry();
    let xml = format!(
        "<LDM_interface version='1.0'>{}{}</LDM_interface>",
        "<cmd><action>list-domain</action><data version='3.0'/></cmd>",
        "<cmd><action>add-domain</action><data version='3.0'><Envelope><Content id='g'/></Envelope></data></cmd>"
    );
    let mut run = Registry::begin(document(&xml), Role::Write);
    run.checkpoint(None);
    assert_eq!(reg.advance(&mut run, 0), Progress::Done);
    let checkpoint = run.rewind().unwrap();
    assert_eq!(checkpoint.waiting_for, None);
    assert!(run.rewind().is_none(), "one checkpoint per batch");
    reg.refuse_writes(Some("no space".into()));
    run.checkpoint(None);
    assert_eq!(reg.advance(&mut run, 0), Progress::Done);
    let (response, _) = run.into_response();
    assert_eq!(response.cmds.len(), 2, "each cmd answered once");
    assert_eq!(response.cmds[0].status(), Status::Success);
    assert_eq!(response.cmds[1].data[0].messages, ["no space"]);
}

#[test]
fn list_bindings_of_a_fully_allocated_machine_fits_the_default_reply_limit() {
    // The default reply_bytes_max (16 MiB) must answer an operator's `ldm list-bindings` of a
    // whole machine. Fully allocated: every one of the 240 threads the control domain leaves
    // bound to a guest of its own, each with 2G, a crypto unit where there is one left, a
    // vdisk, a vnet and a console port.
    let mut reg = registry();
    let ports = prop_item(
        "vcc",
        &[
            ("service_name", "primary-vcc0"),
            ("min_port", "5000"),
            ("max_port", "5300"),
        ],
    );
    ok(&mut reg, &cmd("set-vconscon", "primary", &ports));
    for n in 0..240 {
        let name = format!("guest-{n:03}");
        let volume = prop_item(
            "vds_volume",
            &[
                ("service_name", "primary-vds0"),
                ("vol_name", &format!("vol-{n:03}")),
                ("block_dev", &format!("/dev/zvol/dsk/ldoms/{name}/disk0")),
            ],
        );
        ok(&mut reg, &cmd("add-vdiskserverdevice", "primary", &volume));
        let mau = if n < 30 {
            units("mau", "1")
        } else {
            String::new()
        };
        ok(
            &mut reg,
            &cmd(
                "add-domain",
                &name,
                &(units("cpu", "1") + &units("memory", "2G") + &mau),
            ),
        );
        let disk = prop_item(
            "disk",
            &[
                ("vdisk_name", "vdisk0"),
                ("service_name", "primary-vds0"),
                ("vol_name", &format!("vol-{n:03}")),
            ],
        );
        ok(&mut reg, &cmd("add-vdisk", &name, &disk));
        let net = prop_item(
            "network",
            &[("vnet_name", "vnet0"), ("service_name", "primary-vsw0")],
        );
        ok(&mut reg, &cmd("add-vnet", &name, &net));
        ok(&mut reg, &cmd("bind-domain", &name, ""));
    }
    assert_eq!(reg.pools().cpus.free_count(), 0, "every thread is bound");
    let reply = respond(
        &mut reg,
        "<LDM_interface version='1.0'><cmd><action>list-bindings</action><data version='3.0'/></cmd></LDM_interface>",
        Role::Read,
    );
    assert_eq!(reply.status(), Status::Success);
    let mut out = Vec::new();
    crate::ldm::write_response(&mut out, &reply);
    println!(
        "list-bindings of a fully allocated machine: {} bytes",
        out.len()
    );
    assert!(
        out.len() < crate::limits::REPLY_BYTES_MAX_DEFAULT / 4,
        "{} bytes",
        out.len()
    );
}
