use super::*;
use crate::ldm::write::write_request;

fn xml(document: &Document) -> String {
    let mut out = Vec::new();
    write_request(&mut out, document);
    String::from_utf8(out).unwrap()
}

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|w| (*w).to_owned()).collect()
}

const HEAD: &str = "<LDM_interface version='1.3' xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance' xmlns:ovf='./schemas/envelope' xmlns:rasd='./schemas/CIM_ResourceAllocationSettingData' xmlns:gprop='./schemas/GenericProperty'>";

#[test]
fn add_vcpu_writes_a_cpu_item_with_allocation_units() {
    let document = vcpu(Action::AddVcpu, "8", "ldg1", false).unwrap();
    assert_eq!(
        xml(&document),
        format!(
            "{HEAD}<cmd><action>add-vcpu</action><data version='3.0'><Envelope><References/><Content xsi:type='ovf:VirtualSystem_Type' id='ldg1'><Section xsi:type='ovf:ResourceAllocationSection_type'><Item><rasd:OtherResourceType>cpu</rasd:OtherResourceType><rasd:AllocationUnits>8</rasd:AllocationUnits></Item></Section></Content></Envelope></data></cmd></LDM_interface>"
        )
    );
    let cores = xml(&vcpu(Action::AddVcpu, "2", "ldg1", true).unwrap());
    assert!(
        cores.contains("<gprop:GenericProperty key='wcore'>2</gprop:GenericProperty>"),
        "{cores}"
    );
    assert_eq!(
        vcpu(Action::AddVcpu, "8x", "ldg1", false).unwrap_err().0,
        "Invalid number of virtual CPUs '8x': expected a whole number"
    );
}

#[test]
fn memory_sizes_are_checked_with_the_daemons_rule_and_sent_as_typed() {
    let document = memory(Action::SetMemory, "4G", "ldg1", false).unwrap();
    assert!(xml(&document).contains("<rasd:AllocationUnits>4G</rasd:AllocationUnits>"));
    let adjusted = xml(&memory(Action::AddMemory, "300M", "ldg1", true).unwrap());
    assert!(
        adjusted.contains("<options>auto-adj</options>"),
        "{adjusted}"
    );
    assert_eq!(
        memory(Action::SetMemory, "4Q", "ldg1", false)
            .unwrap_err()
            .0,
        "Invalid memory size '4Q': expected a number with an optional unit K, M, G or T"
    );
}

#[test]
fn properties_map_to_their_wire_keys_and_unknown_ones_are_refused() {
    let document = vsw(
        Action::AddVswitch,
        "ldg1-vsw0",
        Some("ldg1"),
        &words(&[
            "net-dev=net1",
            "mac-addr=00:14:4f:f8:00:09",
            "inter-vnet-link=off",
        ]),
    )
    .unwrap();
    let text = xml(&document);
    for part in [
        "<gprop:GenericProperty key='service_name'>ldg1-vsw0</gprop:GenericProperty>",
        "<gprop:GenericProperty key='dev_path'>net1</gprop:GenericProperty>",
        "<rasd:Address>00:14:4f:f8:00:09</rasd:Address>",
        "<gprop:GenericProperty key='inter_vnet_link'>off</gprop:GenericProperty>",
        "id='ldg1'",
    ] {
        assert!(text.contains(part), "{part} in {text}");
    }
    let err = vsw(Action::AddVswitch, "s", None, &words(&["speed=10"])).unwrap_err();
    assert!(
        err.0.starts_with("add-vswitch: unknown property 'speed'"),
        "{err}"
    );
    let err = vsw(Action::AddVswitch, "s", None, &words(&["net1"])).unwrap_err();
    assert_eq!(err.0, "add-vswitch: expected property=value, got 'net1'");
}

#[test]
fn services_without_a_known_owner_go_in_an_envelope_section() {
    let text = xml(&add_vdsdev(
        "/dev/zvol/dsk/pool/vol1",
        "vol1@primary-vds0",
        &words(&["options=ro"]),
        false,
        None,
    )
    .unwrap());
    assert!(text.contains("<Envelope><References/><Section"), "{text}");
    assert!(!text.contains("<Content"), "{text}");
    assert!(
        text.contains("key='block_dev'>/dev/zvol/dsk/pool/vol1<"),
        "{text}"
    );
    assert!(text.contains("key='vol_opts'>ro<"), "{text}");
    assert!(volume_at_service("vol1").is_err());
    assert!(volume_at_service("@svc").is_err());
    assert_eq!(volume_at_service("v@s").unwrap(), ("v", "s"));
}

#[test]
fn every_domain_gets_its_own_data_object_and_all_is_an_option() {
    let document = on_domains(Action::RemoveDomain, &words(&["a", "b"]), false, &[]);
    assert_eq!(document.cmds[0].data.len(), 2);
    let all = on_domains(Action::StopDomain, &[], true, &["-f"]);
    assert_eq!(all.cmds[0].options, ["-a", "-f"]);
    assert_eq!(all.cmds[0].data, [no_object()]);
    let listing = list(
        &[Action::ListDomain, Action::ListBindings],
        &words(&["x", "y"]),
    );
    assert_eq!(listing.cmds.len(), 2);
    assert_eq!(listing.cmds[1].data.len(), 2);
}

#[test]
fn add_domain_properties_need_a_single_domain() {
    assert!(add_domain(&words(&["a", "b"]), &words(&["hostid=0x1"])).is_err());
    let text = xml(&add_domain(&words(&["a"]), &words(&["failure-policy=reset"])).unwrap());
    assert!(text.contains("<rasd:OtherResourceType>ldom_info</rasd:OtherResourceType><gprop:GenericProperty key='failure-policy'>reset<"), "{text}");
    assert!(set_domain("a", &[]).is_err());
}

#[test]
fn spconfig_cancel_and_events_name_what_they_act_on() {
    let text = xml(&spconfig(Action::AddSpconfig, "config1"));
    assert!(text.contains("key='spconfig_name'>config1<"), "{text}");
    let cancel = cancel_operation("memdr", "ldg1", false).unwrap();
    assert_eq!(cancel.cmds[0].options, ["memdr"]);
    assert!(cancel_operation("dance", "ldg1", false).is_err());
    assert!(cancel_operation("memdr", "ldg1", true).is_err());
    let forced = cancel_operation("migration", "ldg1", true).unwrap();
    assert_eq!(forced.cmds[0].options, ["migration", "force"]);
    assert_eq!(
        register_events("domain").unwrap().cmds[0].action,
        Some(Action::RegDomainEvents.into())
    );
    assert!(register_events("cpu").is_err());
    assert!(
        vcc(
            Action::AddVconscon,
            "c",
            Some("p"),
            Some("port-range=5000-5100")
        )
        .is_ok()
    );
    assert!(vcc(Action::AddVconscon, "c", Some("p"), Some("5000")).is_err());
    let vars = variables(Action::AddVariable, &words(&["auto-boot?=false"]), "ldg1").unwrap();
    assert!(xml(&vars).contains("key='value'>false<"));
}

#[test]
fn text_xml_cannot_carry_is_refused_with_its_code_point() {
    assert_eq!(
        check_xml_text("operand", "ldg1 \t\r\n é ☃ \u{10000}"),
        Ok(())
    );
    for (text, shown) in [
        ("a\u{0}", "a\\0' contains a control character (U+0000)"),
        (
            "\u{1b}[2J",
            "\\u{1b}[2J' contains a control character (U+001B)",
        ),
        ("\u{1f}", "control character (U+001F)"),
        ("\u{fffe}", "\\u{fffe}' contains a non-character (U+FFFE)"),
        ("x\u{ffff}", "non-character (U+FFFF)"),
    ] {
        let refused = check_xml_text("--domain", text).unwrap_err().0;
        assert!(refused.starts_with("--domain '"), "{refused}");
        assert!(refused.contains(shown), "{text:?}: {refused}");
        assert!(refused.ends_with("that XML 1.0 forbids"), "{refused}");
    }
}

#[test]
fn every_text_of_a_document_is_checked_for_characters() {
    let good = vsw(
        Action::AddVswitch,
        "sw0",
        Some("primary"),
        &words(&["mtu=9000", "mac-addr=00:14:4f:f8:00:09"]),
    )
    .unwrap();
    assert_eq!(check_characters(&good), Ok(()));
    let bad_documents = [
        on_domains(Action::BindDomain, &words(&["ldg\u{1}"]), false, &[]),
        vsw(Action::AddVswitch, "sw0", None, &words(&["mtu=9\u{2}"])).unwrap(),
        vsw(Action::AddVswitch, "sw0", None, &words(&["mac-addr=\u{3}"])).unwrap(),
        memory(Action::SetMemory, "4G", "ldg1", false)
            .map(|mut d| {
                d.cmds[0].options.push("\u{4}".into());
                d
            })
            .unwrap(),
        variables(Action::AddVariable, &words(&["k\u{5}=v"]), "ldg1").unwrap(),
        spconfig(Action::AddSpconfig, "c\u{6}"),
    ];
    for document in bad_documents {
        let refused = check_characters(&document).unwrap_err().0;
        assert!(refused.starts_with("operand '"), "{refused}");
        assert!(
            refused.contains("contains a control character"),
            "{refused}"
        );
    }
}

#[test]
fn set_and_variable_commands_must_name_something_to_change() {
    assert!(vsw(Action::SetVswitch, "sw0", None, &[]).is_err());
    assert!(vsw(Action::RemoveVswitch, "sw0", None, &[]).is_ok());
    assert!(vnet(Action::SetVnet, "vnet1", None, "ldg1", &[]).is_err());
    assert!(vnet(Action::RemoveVnet, "vnet1", None, "ldg1", &[]).is_ok());
    for action in [
        Action::AddVariable,
        Action::SetVariable,
        Action::RemoveVariable,
    ] {
        assert!(variables(action, &[], "ldg1").is_err(), "{action}");
    }
}

#[test]
fn migration_targets_read_as_the_ldm_cli_writes_them() {
    let t = migration_target("root@host2:ldg1-new").unwrap();
    assert_eq!(
        (t.user.as_deref(), t.host.as_str(), t.name.as_deref()),
        (Some("root"), "host2", Some("ldg1-new"))
    );
    let t = migration_target("host2").unwrap();
    assert_eq!((t.user, t.host.as_str(), t.name), (None, "host2", None));
    let t = migration_target("admin@[::1]:copy").unwrap();
    assert_eq!((t.host.as_str(), t.name.as_deref()), ("::1", Some("copy")));
    for bad in ["", "@host", "host:", "[::1", "a@b@c", "[::1]x"] {
        assert!(migration_target(bad).is_err(), "{bad}");
    }
    let document = migrate_domain(
        "ldg1",
        &migration_target("[::1]:b").unwrap(),
        7000,
        "u",
        "p",
        true,
        true,
    );
    let cmd = &document.cmds[0];
    assert_eq!(cmd.options, ["dry-run", "force"]);
    let contents = &cmd.data[0].envelope.as_ref().unwrap().contents;
    assert_eq!(
        (contents[0].id.as_str(), contents[1].id.as_str()),
        ("ldg1", "b")
    );
    let info = &contents[1].sections[0].items[0];
    assert_eq!(info.property("target"), Some("[::1]:7000"));
    assert_eq!(info.property("username"), Some("dQ=="));
    assert_eq!(info.property("password"), Some("cA=="));
}
