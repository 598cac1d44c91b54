use super::*;
use crate::plan::Plan;

fn planned(argv: &[&str]) -> Result<Plan, Failure> {
    let mut full = vec!["ldm"];
    full.extend_from_slice(argv);
    plan(Cli::try_parse_from(full).expect("parses").command)
}

fn document(argv: &[&str]) -> Document {
    match planned(argv) {
        Ok(Plan {
            document: Ok(document),
            ..
        }) => document,
        _ => panic!("no document for {argv:?}"),
    }
}

#[test]
fn the_ldm_cli_aliases_reach_the_long_action_names() {
    for (argv, action) in [
        (&["ls"][..], Action::ListDomain),
        (&["rm-domain", "ldg1"], Action::RemoveDomain),
        (&["bind", "ldg1"], Action::BindDomain),
        (&["unbind", "ldg1"], Action::UnbindDomain),
        (&["start", "-a"], Action::StartDomain),
        (&["set-mem", "4G", "ldg1"], Action::SetMemory),
        (&["add-crypto", "1", "ldg1"], Action::AddMau),
        (&["cancel-op", "memdr", "ldg1"], Action::CancelOperation),
        (&["add-config", "c1"], Action::AddSpconfig),
        // Every list-* has its ls-* (Oracle's ldm(8) aliases), the first action of each.
        (&["ls-domain"], Action::ListDomain),
        (&["ls-bindings"], Action::ListDomain),
        (&["ls-constraints"], Action::ListConstraints),
        (&["ls-devices"], Action::ListDevices),
        (&["ls-services"], Action::ListServices),
        (&["ls-spconfig"], Action::ListSpconfig),
        (&["ls-config"], Action::ListSpconfig),
        (&["ls-var", "ldg1"], Action::ListVariable),
        (&["ls-variable", "ldg1"], Action::ListVariable),
    ] {
        assert_eq!(
            document(argv).cmds[0].action,
            Some(action.into()),
            "{argv:?}"
        );
    }
    let stop = document(&["stop", "-f", "-r", "ldg1"]);
    assert_eq!(stop.cmds[0].options, ["-f", "-r"]);
}

#[test]
fn properties_come_before_the_positional_operands() {
    let vsw = document(&["add-vsw", "net-dev=net0", "mtu=9000", "sw0", "primary"]);
    let content = &vsw.cmds[0].data[0].envelope.as_ref().unwrap().contents[0];
    assert_eq!(content.id, "primary");
    let item = &content.sections[0].items[0];
    assert_eq!(item.property("service_name"), Some("sw0"));
    assert_eq!(item.property("dev_path"), Some("net0"));
    assert!(matches!(
        planned(&["add-vsw", "sw0", "mtu=9000"]),
        Err(Failure::Usage(_))
    ));
    assert!(matches!(
        planned(&["add-vnet", "vnet1", "ldg1"]),
        Err(Failure::Usage(_))
    ));
    // A service named without its domain waits for list-services to find the owner.
    assert!(matches!(
        planned(&["add-vdsdev", "/dev/x", "vol1@primary-vds0"]),
        Ok(Plan {
            document: Err(_),
            ..
        })
    ));
}

fn usage(argv: &[&str]) -> String {
    match planned(argv) {
        Err(Failure::Usage(message)) => message,
        _ => panic!("{argv:?} was not refused"),
    }
}

#[test]
fn operands_xml_cannot_carry_are_refused_before_connecting() {
    let message = usage(&["add-domain", "ldg\u{1}"]);
    assert_eq!(
        message,
        "operand 'ldg\\u{1}' contains a control character (U+0001) that XML 1.0 forbids"
    );
    for argv in [
        &["add-vsw", "mtu=9\u{1b}", "sw0", "primary"][..],
        &["set-variable", "boot=\u{0}", "ldg1"],
        &["add-vcpu", "2", "ldg\u{7f}\u{fffe}"],
        // A service command is checked before its owner is looked up.
        &["remove-vsw", "sw\u{2}"],
        &["add-vdsdev", "/dev/x\u{8}", "vol1@vds0"],
    ] {
        assert!(usage(argv).contains("that XML 1.0 forbids"), "{argv:?}");
    }
    // Tab and newline are XML characters: the daemon judges them.
    assert!(planned(&["set-variable", "motd=a\tb\nc", "ldg1"]).is_ok());
}

#[test]
fn commands_that_would_set_nothing_are_usage_errors() {
    for (argv, expected) in [
        (
            &["add-variable", "ldg1"][..],
            "add-variable: expected NAME=VALUE... DOMAIN",
        ),
        (
            &["set-var", "ldg1"],
            "set-variable: expected NAME=VALUE... DOMAIN",
        ),
        (
            &["remove-variable", "ldg1"],
            "remove-variable: expected NAME... DOMAIN",
        ),
        (
            &["set-vsw", "sw0"],
            "set-vsw: give at least one property=value",
        ),
        (
            &["set-vnet", "vnet1", "ldg1"],
            "set-vnet: give at least one property=value",
        ),
    ] {
        assert_eq!(usage(argv), expected, "{argv:?}");
    }
}

#[test]
fn sections_apply_only_to_the_long_listing() {
    let check = |argv: &[&str]| {
        let mut full = vec!["ldm"];
        full.extend_from_slice(argv);
        let cli = Cli::try_parse_from(full).expect("parses");
        check_output(&cli.command, &output(cli.output.as_deref()).ok().unwrap())
    };
    assert!(check(&["list", "-o", "network"]).is_ok());
    assert!(check(&["list-bindings", "-o", "cpu,memory"]).is_ok());
    assert!(check(&["xml", "-", "-o", "json"]).is_ok());
    for argv in [
        &["list-services", "-o", "network"][..],
        &["events", "-o", "cpu"],
        &["xml", "-", "-o", "domain"],
        &["add-domain", "x", "-o", "cpu"],
    ] {
        assert!(
            matches!(check(argv), Err(Failure::Usage(m)) if m.starts_with("-o SECTIONS applies")),
            "{argv:?}"
        );
    }
}

#[test]
fn output_formats_and_list_sections_are_checked() {
    assert_eq!(output(Some("json")).ok(), Some(Output::Json));
    assert_eq!(
        output(Some("cpu,network")).ok(),
        Some(Output::Groups(vec!["cpu".into(), "network".into()]))
    );
    assert!(output(Some("yaml")).is_err());
    // Prefixes that name one section, as Oracle's ldm takes them.
    assert_eq!(
        output(Some("net,disk,mem,cons")).ok(),
        Some(Output::Groups(vec![
            "network".into(),
            "disk".into(),
            "memory".into(),
            "console".into()
        ]))
    );
    assert_eq!(output(Some("status")).ok(), Some(Output::Status));
    // Every group of Oracle's list, each by a prefix.
    assert_eq!(
        output(Some("cor,res,ser,stats,phys,cry,dom")).ok(),
        Some(Output::Groups(
            [
                "core", "resmgmt", "serial", "stats", "physio", "crypto", "domain"
            ]
            .map(String::from)
            .to_vec()
        ))
    );
    let usage = |text: &str| match output(Some(text)) {
        Err(Failure::Usage(message)) => message,
        Ok(parsed) => panic!("{text}: {parsed:?}"),
        Err(_) => panic!("{text}: not a usage error"),
    };
    assert_eq!(usage("d"), "-o: 'd' is ambiguous: disk, domain");
    assert_eq!(
        usage("c"),
        "-o: 'c' is ambiguous: console, core, cpu, crypto"
    );
    assert_eq!(usage("stat"), "-o: 'stat' is ambiguous: stats, status");
    assert!(usage("status,cpu").contains("on its own"));
    assert!(usage("").contains("unknown format ''"));
    let cli = Cli::try_parse_from(["ldm", "list", "--socket", "/s", "-o", "json"]).unwrap();
    assert_eq!(cli.conn.socket.as_deref(), Some(std::path::Path::new("/s")));
    assert_eq!(cli.output.as_deref(), Some("json"));
}

/// Every flag and operand of every subcommand explains itself in `--help` (and so in the man
/// page, which is generated from the same definitions).
#[test]
fn every_flag_has_help() {
    fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if ["help", "version"].contains(&id) || arg.is_hide_set() {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(
        &<Cli as clap::CommandFactory>::command(),
        "ldm",
        &mut missing,
    );
    assert!(missing.is_empty(), "no help for:\n{}", missing.join("\n"));
}
