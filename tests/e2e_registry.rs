//! The registry end to end (issue 3): a real daemon driven over its sockets through a whole
//! domain lifecycle, with list output, memory DR (growth, partial removal, cancellation),
//! events seen by a second subscribed connection, refusals, and state after a restart.

mod support;

use support::*;

/// A guest that moves memory quickly, and keeps at least 2G.
const CONFIG: &str = "[memdr]\nseconds_per_gib = 0.4\nguest_memory_floor = '2G'\n";

const RAS: &str = "<Section xsi:type='ovf:ResourceAllocationSection_type'>";

/// One cmd on domain `domain` with `items` (already-written `<Item>`s).
fn doc(action: &str, domain: &str, items: &str) -> String {
    let section = if items.is_empty() {
        String::new()
    } else {
        format!("{RAS}{items}</Section>")
    };
    format!(
        "<LDM_interface version='1.3'><cmd><action>{action}</action><data version='3.0'><Envelope><References/><Content xsi:type='ovf:VirtualSystem_Type' id='{domain}'>{section}</Content></Envelope></data></cmd></LDM_interface>"
    )
}

fn doc_with_option(action: &str, option: &str, domain: &str, items: &str) -> String {
    doc(action, domain, items).replacen(
        "</action>",
        &format!("</action><options>{option}</options>"),
        1,
    )
}

fn units(resource: &str, units: &str) -> String {
    format!(
        "<Item><rasd:OtherResourceType>{resource}</rasd:OtherResourceType><rasd:AllocationUnits>{units}</rasd:AllocationUnits></Item>"
    )
}

fn props(resource: &str, props: &[(&str, &str)]) -> String {
    let props: String = props
        .iter()
        .map(|(k, v)| format!("<gprop:GenericProperty key='{k}'>{v}</gprop:GenericProperty>"))
        .collect();
    format!("<Item><rasd:OtherResourceType>{resource}</rasd:OtherResourceType>{props}</Item>")
}

const OK: &str = "<response><status>success</status></response></LDM_interface>";

#[track_caller]
fn ok(client: &mut Client, document: &str) -> String {
    let reply = client.request(document);
    assert!(
        reply.ends_with(OK),
        "expected success for {document}\n got {reply}"
    );
    reply
}

#[track_caller]
fn refused(client: &mut Client, document: &str, message: &str) -> String {
    let reply = client.request(document);
    assert!(
        reply.ends_with("<response><status>failure</status></response></LDM_interface>"),
        "{reply}"
    );
    assert!(reply.contains(message), "expected {message:?} in {reply}");
    reply
}

/// The value of `key` in the ldom_info of `domain` in a list-domain reply.
fn property(reply: &str, domain: &str, key: &str) -> String {
    let content = &reply[reply
        .find(&format!("id='{domain}'"))
        .unwrap_or_else(|| panic!("{domain} in {reply}"))..];
    let tag = format!("key='{key}'>");
    let start = content
        .find(&tag)
        .unwrap_or_else(|| panic!("{key} in {content}"))
        + tag.len();
    content[start..start + content[start..].find('<').unwrap()].to_owned()
}

fn list(client: &mut Client) -> String {
    ok(client, list_domain())
}

/// Every event action and domain the subscriber has received so far, in order.
fn events(subscriber: &mut Client, count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|_| {
            let event = subscriber.read_until("</LDM_event>");
            let event = &event[event.find("<LDM_event").expect("an event")..];
            let action =
                &event[event.find("<action>").unwrap() + 8..event.find("</action>").unwrap()];
            let id = &event[event.find(" id='").unwrap() + 5..];
            (action.to_owned(), id[..id.find('\'').unwrap()].to_owned())
        })
        .collect()
}

#[test]
fn full_domain_lifecycle_with_memory_dr_events_and_list_output() {
    let daemon = Daemon::start_with_metrics(CONFIG, &[("reader", "read", "rpw")]);
    let mut subscriber = daemon.unix();
    subscriber.secure();
    ok(
        &mut subscriber,
        "<LDM_interface version='1.3'><cmd><action>reg-all-events</action><data version='3.0'/></cmd></LDM_interface>",
    );
    let mut admin = daemon.unix();
    admin.secure();

    ok(&mut admin, &doc("add-domain", "ldg1", ""));
    refused(
        &mut admin,
        &doc("add-domain", "ldg1", ""),
        "LDom ldg1 already exists",
    );
    refused(
        &mut admin,
        &doc("add-domain", "-bad", ""),
        "must begin with a letter or a digit",
    );
    ok(&mut admin, &doc("add-vcpu", "ldg1", &units("cpu", "8")));
    ok(
        &mut admin,
        &doc("add-memory", "ldg1", &units("memory", "4G")),
    );
    refused(
        &mut admin,
        &doc("add-vcpu", "ldg1", &units("cpu", "999")),
        "The machine has 256 virtual CPUs",
    );
    // A volume on the control domain's disk service (an Envelope-level section), then a disk.
    let volume = format!(
        "<LDM_interface version='1.3'><cmd><action>add-vdiskserverdevice</action><data version='3.0'><Envelope><References/>{RAS}{}</Section></Envelope></data></cmd></LDM_interface>",
        props(
            "vds_volume",
            &[
                ("vol_name", "vol1"),
                ("service_name", "primary-vds0"),
                ("block_dev", "/dev/zvol/dsk/ldoms/ldg1")
            ]
        )
    );
    ok(&mut admin, &volume);
    ok(
        &mut admin,
        &doc(
            "add-vdisk",
            "ldg1",
            &props(
                "disk",
                &[
                    ("vdisk_name", "vdisk0"),
                    ("service_name", "primary-vds0"),
                    ("vol_name", "vol1"),
                ],
            ),
        ),
    );
    refused(
        &mut admin,
        &doc(
            "add-vdisk",
            "ldg1",
            &props(
                "disk",
                &[
                    ("vdisk_name", "vdisk1"),
                    ("service_name", "primary-vds0"),
                    ("vol_name", "nope"),
                ],
            ),
        ),
        "Volume nope@primary-vds0 does not exist",
    );
    ok(
        &mut admin,
        &doc(
            "add-vnet",
            "ldg1",
            &props(
                "network",
                &[("vnet_name", "vnet0"), ("service_name", "primary-vsw0")],
            ),
        ),
    );
    ok(&mut admin, &doc("bind-domain", "ldg1", ""));

    // list-bindings: real CPU ids, memory real and physical addresses, MACs from the LDoms range.
    let bindings = ok(&mut admin, &doc("list-bindings", "ldg1", ""));
    assert!(
        bindings.contains("xmlns:bind='./schemas/Binding'"),
        "{bindings}"
    );
    assert_eq!(
        bindings
            .matches("<gprop:GenericProperty key='pid'>")
            .count(),
        8,
        "{bindings}"
    );
    assert!(
        bindings.contains("<gprop:GenericProperty key='pid'>16</gprop:GenericProperty>"),
        "CPUs after the control domain's 16: {bindings}"
    );
    assert!(
        bindings.contains("<gprop:GenericProperty key='ra'>0x10000000</gprop:GenericProperty>"),
        "{bindings}"
    );
    assert!(
        bindings.contains("<gprop:GenericProperty key='size'>4G</gprop:GenericProperty>"),
        "{bindings}"
    );
    assert!(
        bindings.contains("<rasd:Address>00:14:4f:f"),
        "MACs from the automatic range: {bindings}"
    );

    ok(&mut admin, &doc("start-domain", "ldg1", ""));
    let listing = list(&mut admin);
    assert_eq!(property(&listing, "ldg1", "state"), "active");
    assert_eq!(property(&listing, "ldg1", "flags"), "-n----");
    assert_eq!(property(&listing, "ldg1", "ncpu"), "8");
    assert_eq!(property(&listing, "ldg1", "cons"), "5000");
    assert_eq!(property(&listing, "primary", "flags"), "-n-cv-");

    // Memory DR: misaligned is refused; growth by 4G takes the modelled guest ~1.6 s, during
    // which the domain shows flag r and other changes to it are refused.
    refused(
        &mut admin,
        &doc("add-memory", "ldg1", &units("memory", "100M")),
        "not a multiple of 256M",
    );
    admin.send(&doc("set-memory", "ldg1", &units("memory", "8G")));
    let mut observer = daemon.unix();
    observer.secure();
    let during = list(&mut observer);
    assert_eq!(property(&during, "ldg1", "flags"), "-nr---", "{during}");
    refused(
        &mut observer,
        &doc("add-vcpu", "ldg1", &units("cpu", "1")),
        "A memory dynamic reconfiguration is in progress on ldg1",
    );
    let grown = admin.read_until("</LDM_interface>");
    assert!(grown.ends_with(OK), "{grown}");
    assert_eq!(
        property(&list(&mut admin), "ldg1", "mem"),
        (8u64 << 30).to_string()
    );

    // Removing 7G of 8G: the guest keeps its 2G floor, so only 6G goes, with a warning.
    let partial = ok(
        &mut admin,
        &doc("remove-memory", "ldg1", &units("memory", "7G")),
    );
    assert!(
        partial.contains("<resp_msg>Only 6G of the requested 7G could be removed from ldg1"),
        "{partial}"
    );
    assert_eq!(
        property(&list(&mut admin), "ldg1", "mem"),
        (2u64 << 30).to_string()
    );
    refused(
        &mut admin,
        &doc("remove-memory", "ldg1", &units("memory", "2G")),
        "Cannot remove 2G of memory from ldg1: it has 2G",
    );

    // Cancelling a DR part way: what was done stays, the rest is not done.
    admin.send(&doc("add-memory", "ldg1", &units("memory", "8G")));
    std::thread::sleep(std::time::Duration::from_millis(700));
    ok(
        &mut observer,
        &doc_with_option("cancel-operation", "memdr", "ldg1", ""),
    );
    let cancelled = admin.read_until("</LDM_interface>");
    assert!(cancelled.contains("was cancelled"), "{cancelled}");
    let mem: u64 = property(&list(&mut admin), "ldg1", "mem").parse().unwrap();
    assert!(
        mem > 2 << 30 && mem < 10 << 30 && mem.is_multiple_of(256 << 20),
        "{mem}"
    );
    // Each of the three DRs is counted by how it ended.
    for (outcome, count) in [
        ("completed", 1.0),
        ("partial", 1.0),
        ("cancelled", 1.0),
        ("refused", 0.0),
    ] {
        let sample = format!("ldmd_memdr_operations_total{{outcome=\"{outcome}\"}}");
        assert_eq!(daemon.metric(&sample), count, "{sample}");
    }
    assert_eq!(daemon.metric("ldmd_memdr_in_progress"), 0.0);

    // A read-only SASL user reads but cannot write.
    let mut reader = daemon.tcp();
    reader.secure();
    reader.login("reader", "rpw");
    list(&mut reader);
    refused(
        &mut reader,
        &doc("stop-domain", "ldg1", ""),
        "Not authorized: 'stop-domain' requires write authorization",
    );

    refused(
        &mut admin,
        &doc("remove-domain", "ldg1", ""),
        "it must be unbound (inactive) to be removed",
    );
    ok(&mut admin, &doc("stop-domain", "ldg1", ""));
    ok(&mut admin, &doc("unbind-domain", "ldg1", ""));
    refused(
        &mut admin,
        &doc("unbind-domain", "primary", ""),
        "cannot be unbound",
    );
    ok(&mut admin, &doc("remove-domain", "ldg1", ""));
    assert!(!list(&mut admin).contains("id='ldg1'"));

    let seen = events(&mut subscriber, 14);
    let expected: Vec<(String, String)> = [
        ("add-domain", "ldg1"),
        ("add-vcpu", "ldg1"),
        ("add-memory", "ldg1"),
        ("add-vdiskserverdevice", "primary"),
        ("add-vdisk", "ldg1"),
        ("add-vnet", "ldg1"),
        ("bind-domain", "ldg1"),
        ("start-domain", "ldg1"),
        ("set-memory", "ldg1"),
        ("remove-memory", "ldg1"),
        ("add-memory", "ldg1"),
        ("stop-domain", "ldg1"),
        ("unbind-domain", "ldg1"),
        ("remove-domain", "ldg1"),
    ]
    .iter()
    .map(|(a, d)| (a.to_string(), d.to_string()))
    .collect();
    assert_eq!(seen, expected, "events in commit order");
}

#[test]
fn malformed_and_mixed_documents_are_judged_per_object_and_state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_in(dir, CONFIG);
    let mut admin = daemon.unix();
    admin.secure();
    // Two cmds, the second with two data objects: each judged on its own.
    let mixed = "<LDM_interface version='1.3'><cmd><action>add-domain</action><data version='3.0'><Envelope><References/><Content xsi:type='ovf:VirtualSystem_Type' id='keep'/></Envelope></data></cmd><cmd><action>set-vcpu</action><data version='3.0'><Envelope><References/><Content xsi:type='ovf:VirtualSystem_Type' id='keep'><Section xsi:type='ovf:ResourceAllocationSection_type'><Item><rasd:OtherResourceType>cpu</rasd:OtherResourceType><rasd:AllocationUnits>4</rasd:AllocationUnits></Item></Section></Content></Envelope></data><data version='3.0'><Envelope><References/><Content xsi:type='ovf:VirtualSystem_Type' id='ghost'><Section xsi:type='ovf:ResourceAllocationSection_type'><Item><rasd:OtherResourceType>cpu</rasd:OtherResourceType><rasd:AllocationUnits>4</rasd:AllocationUnits></Item></Section></Content></Envelope></data></cmd><cmd><action>frobnicate-domain</action><data version='3.0'/></cmd></LDM_interface>";
    let reply = refused(&mut admin, mixed, "LDom ghost does not exist");
    assert!(
        reply.contains("<resp_msg>Unknown action 'frobnicate-domain'</resp_msg>"),
        "{reply}"
    );
    assert_eq!(
        reply.matches("<status>success</status>").count(),
        3,
        "add-domain's object and cmd, and keep's set-vcpu: {reply}"
    );
    // Not well formed: the document-level failure, and the stream goes on.
    let reply = admin.request(
        "<LDM_interface version='1.3'><cmd><action>list-domain</action></cmd></LDM_interface>",
    );
    assert!(reply.contains("<status>failure</status>"), "{reply}");
    list(&mut admin);
    ok(
        &mut admin,
        &format!(
            "<LDM_interface version='1.3'><cmd><action>add-spconfig</action><data version='3.0'><Envelope><References/>{RAS}{}</Section></Envelope></data></cmd></LDM_interface>",
            props("spconfig", &[("spconfig_name", "config1")])
        ),
    );
    let before = ok(
        &mut admin,
        "<LDM_interface version='1.3'><cmd><action>list-constraints</action><data version='3.0'/></cmd></LDM_interface>",
    );
    drop(admin);

    let daemon = restart(daemon);
    let mut admin = daemon.unix();
    admin.secure();
    let after = ok(
        &mut admin,
        "<LDM_interface version='1.3'><cmd><action>list-constraints</action><data version='3.0'/></cmd></LDM_interface>",
    );
    assert_eq!(
        after, before,
        "constraints, bindings, services and identities survive a restart"
    );
    assert!(after.contains("id='keep'"));
    let configs = ok(
        &mut admin,
        "<LDM_interface version='1.3'><cmd><action>list-spconfig</action><data version='3.0'/></cmd></LDM_interface>",
    );
    assert!(configs.contains("<gprop:GenericProperty key='spconfig_name'>config1</gprop:GenericProperty><gprop:GenericProperty key='spconfig_status'>current</gprop:GenericProperty>"), "{configs}");
    refused(
        &mut admin,
        &doc("add-domain", "keep", ""),
        "LDom keep already exists",
    );
}

/// Stops the daemon cleanly and starts it again on the same state directory.
fn restart(mut daemon: Daemon) -> Daemon {
    let dir = std::mem::replace(&mut daemon.dir, tempfile::tempdir().unwrap());
    let (status, stderr) = daemon.terminate();
    assert!(status.success(), "{stderr}");
    Daemon::start_in(dir, CONFIG)
}

/// A client on the Unix socket (I/O thread 0), secured.
fn unix_client(daemon: &Daemon) -> Client {
    let mut client = daemon.unix();
    client.secure();
    client
}

/// A client on loopback TCP (a local peer), secured: the kernel spreads these over both I/O
/// threads.
fn tcp_client(daemon: &Daemon) -> Client {
    let mut client = daemon.tcp();
    client.secure();
    client
}

#[cfg(feature = "fault-points")]
#[test]
fn reads_are_answered_while_the_registry_thread_is_held_and_never_miss_a_write_they_follow() {
    // The registry thread is held inside a commit (fault point `store.commit=hold`) until the
    // test creates the release file: no timing decides anything here. Reads from other
    // streams are answered meanwhile, from the I/O threads' replicas of the committed state,
    // and do not see the held write. A read pipelined behind the held write on its own stream
    // waits for it and sees it; after the write's reply, every stream sees it.
    let release = tempfile::tempdir().unwrap();
    let release_file = release.path().join("release");
    let release_path = release_file.to_str().unwrap();
    // The first commit is the new machine's state, at start: the one after it is held.
    let daemon = Daemon::start_with_metrics_env(
        "",
        &[],
        &[
            ("LDMD_FAULTS", "store.commit=hold*1@1"),
            ("LDMD_FAULT_RELEASE", release_path),
        ],
    );
    let mut readers: Vec<Client> = (0..8).map(|_| tcp_client(&daemon)).collect();
    readers.push(unix_client(&daemon));
    // Each thread gets its replica with the answer to its first read.
    for reader in &mut readers {
        assert!(content_ids(&reader.request(list_domain())).contains(&"primary".to_owned()));
    }
    let before = daemon.metric("ldmd_replica_reads_total");

    let mut writer = unix_client(&daemon);
    writer.send(&add_domain("held"));
    writer.send(list_domain());
    assert!(
        daemon.wait_for_stderr(
            "fault point store.commit: holding",
            std::time::Duration::from_secs(30)
        ),
        "the commit was never held"
    );
    for reader in &mut readers {
        let names = content_ids(&reader.request(list_domain()));
        assert!(names.contains(&"primary".to_owned()), "{names:?}");
        assert!(
            !names.contains(&"held".to_owned()),
            "a read saw an uncommitted write"
        );
    }
    let during = daemon.metric("ldmd_replica_reads_total") - before;
    assert!(
        during >= readers.len() as f64,
        "{during} reads answered from replicas while the registry was held"
    );

    std::fs::write(&release_file, b"").unwrap();
    let added = writer.read_until("</LDM_interface>");
    assert_eq!(document_status(&added).0, "success", "{added}");
    let behind = writer.read_until("</LDM_interface>");
    assert!(
        content_ids(&behind).contains(&"held".to_owned()),
        "the read pipelined behind the write missed it: {behind}"
    );
    // Read-your-writes across streams: each write's reply is received, then every other
    // stream's next read must see it, whichever thread answers it.
    for round in 0..40 {
        let name = format!("ryw{round}");
        let (status, _) = document_status(&writer.request(&add_domain(&name)));
        assert_eq!(status, "success");
        let reader = &mut readers[round % 9];
        let names = content_ids(&reader.request(list_domain()));
        assert!(
            names.contains(&name),
            "round {round}: {name} missing from {names:?}"
        );
    }
}
