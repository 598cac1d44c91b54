//! What each subcommand sends and prints: the lifecycle, resource, SP configuration and
//! listing commands against a real daemon, `ldm xml`, local refusals, a closed stdout.

use super::*;

#[test]
fn full_domain_lifecycle_through_the_ldm_binary() {
    let daemon = Daemon::start("");
    let d = &daemon;
    assert_eq!(
        ok(ldm(d, &["add-domain", "ldg1"])),
        "",
        "a write prints nothing"
    );
    ok(ldm(d, &["add-vcpu", "8", "ldg1"]));
    ok(ldm(d, &["set-memory", "4G", "ldg1"]));
    ok(ldm(
        d,
        &["add-vdsdev", "/dev/zvol/dsk/pool/vol1", "vol1@primary-vds0"],
    ));
    ok(ldm(
        d,
        &["add-vdisk", "vdisk1", "vol1@primary-vds0", "ldg1"],
    ));
    ok(ldm(d, &["add-vsw", "net-dev=net1", "ldg1-vsw0", "primary"]));
    ok(ldm(d, &["add-vnet", "vnet1", "ldg1-vsw0", "ldg1"]));

    // The table before binding: constraints only, no console, no uptime.
    let table = ok(ldm(d, &["ls"]));
    assert_eq!(
        table.lines().next(),
        Some("NAME             STATE      FLAGS   CONS    VCPU  MEMORY   UTIL  NORM  UPTIME")
    );
    assert!(
        table.lines().nth(1).unwrap().starts_with("primary "),
        "{table}"
    );
    assert_eq!(
        row(&table, "ldg1"),
        // Blank where Oracle's ldm leaves blanks: an inactive domain's CONS, UTIL, NORM, UPTIME.
        "ldg1             inactive   ------          8     4G"
    );

    ok(ldm(d, &["bind", "ldg1"]));
    ok(ldm(d, &["start", "ldg1"]));
    let table = ok(ldm(d, &["list"]));
    let ldg1 = row(&table, "ldg1");
    assert!(
        ldg1.starts_with("ldg1             active     -n----  5000    8     4G       0.0%  0.0%  "),
        "{table}"
    );
    let uptime = ldg1.rsplit("  ").next().unwrap().trim();
    assert!(
        uptime.ends_with('s') && uptime[..uptime.len() - 1].parse::<u64>().is_ok(),
        "{uptime}"
    );

    // -p: the VERSION line, then one DOMAIN line each, the flags' letters, bytes and seconds.
    let parseable = ok(ldm(d, &["list", "-p"]));
    let lines: Vec<&str> = parseable.lines().collect();
    assert_eq!(lines[0], "VERSION 1.6");
    assert!(
        lines[1].starts_with(
            "DOMAIN|name=primary|state=active|flags=-n-cv-|cons=UART|ncpu=16|mem=17179869184|util="
        ),
        "{parseable}"
    );
    // -l -p spells them out.
    let long = ok(ldm(d, &["list", "-l", "-p", "primary"]));
    assert!(
        long.contains(
            "\nDOMAIN|name=primary|state=active|flags=normal,control,vio-service|cons=UART|"
        ),
        "{long}"
    );
    let line = lines
        .iter()
        .find(|l| l.starts_with("DOMAIN|name=ldg1|"))
        .unwrap();
    let fields: Vec<&str> = line.split('|').collect();
    assert_eq!(
        fields[..8],
        [
            "DOMAIN",
            "name=ldg1",
            "state=active",
            "flags=-n----",
            "cons=5000",
            "ncpu=8",
            "mem=4294967296",
            "util=0.0"
        ]
    );
    assert!(
        fields[8]
            .strip_prefix("uptime=")
            .unwrap()
            .parse::<u64>()
            .is_ok(),
        "{line}"
    );

    // -o json parses, with typed numbers.
    let json: serde_json::Value =
        serde_json::from_str(&ok(ldm(d, &["list", "ldg1", "-o", "json"]))).unwrap();
    assert_eq!(json["status"], "success");
    assert_eq!(json["messages"], serde_json::json!([]));
    let domain = &json["domains"][0];
    assert_eq!(domain["name"], "ldg1");
    assert_eq!(domain["state"], "active");
    assert_eq!(domain["flags"], "-n----");
    assert_eq!(domain["ncpu"], 8);
    assert_eq!(domain["mem"], 4u64 << 30);
    assert_eq!(domain["cons"], "5000");
    assert!(domain["uptime"].is_u64());

    // -l: the bindings, devices and services of the domain.
    let long = ok(ldm(d, &["list", "-l", "ldg1"]));
    for part in [
        "VCPU\n    VID    PID    CID    UTIL NORM STRAND\n    0      16     2      0.0% 0.0%   100%\n",
        "MEMORY\n    RA               PA",
        "vnet1            ldg1-vsw0@primary           0    network@0",
        "vdisk1           vol1@primary-vds0                0    disk@0  primary",
        "VCONS\n",
    ] {
        assert!(long.contains(part), "{part:?} in\n{long}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&ok(ldm(d, &["list", "-l", "ldg1", "-o", "json"]))).unwrap();
    let resources = json["domains"][0]["resources"].as_array().unwrap();
    let cpu = resources.iter().find(|r| r["type"] == "cpu").unwrap();
    assert_eq!(cpu["bindings"].as_array().unwrap().len(), 8);
    let services = ok(ldm(d, &["list-services"]));
    assert!(
        services.contains("    ldg1-vsw0        primary          "),
        "{services}"
    );
    let bindings = ok(ldm(d, &["list-bindings", "ldg1"]));
    assert!(bindings.contains("network@"), "{bindings}");
    assert!(ok(ldm(d, &["list-constraints", "ldg1"])).starts_with("DOMAIN\nldg1\n"));

    // Refusals: the daemon's resp_msg, alone, on stderr; exit status 1.
    let active = ldm(d, &["remove-domain", "ldg1"]);
    exits(&active, 1);
    assert_eq!(
        stderr(&active),
        "LDom ldg1 is active: it must be unbound (inactive) to be removed\n"
    );
    assert_eq!(stdout(&active), "");
    let unknown = ldm(d, &["add-vcpu", "1", "nosuch"]);
    exits(&unknown, 1);
    assert_eq!(stderr(&unknown), "LDom nosuch does not exist\n");
    // A listing names what exists and fails for what does not.
    let partly = ldm(d, &["list", "ldg1", "nosuch"]);
    exits(&partly, 1);
    assert_eq!(stderr(&partly), "LDom nosuch does not exist\n");
    assert!(row(&stdout(&partly), "ldg1").starts_with("ldg1 "));
    let json = ldm(d, &["remove-domain", "ldg1", "-o", "json"]);
    exits(&json, 1);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["status"], "failure");
    assert_eq!(
        json["messages"],
        serde_json::json!(["LDom ldg1 is active: it must be unbound (inactive) to be removed"])
    );
    // Usage errors never reach the daemon: exit status 2, with the daemon's own wording.
    let size = ldm(d, &["set-memory", "4Q", "ldg1"]);
    exits(&size, 2);
    assert_eq!(
        stderr(&size),
        "ldm: Invalid memory size '4Q': expected a number with an optional unit K, M, G or T\n"
    );
    exits(&ldm(d, &["add-vcpu", "ldg1"]), 2);
    exits(&ldm(d, &["frobnicate-domain", "ldg1"]), 2);

    ok(ldm(d, &["stop", "ldg1"]));
    ok(ldm(d, &["unbind", "ldg1"]));
    ok(ldm(d, &["remove-vnet", "vnet1", "ldg1"]));
    ok(ldm(d, &["remove-vsw", "ldg1-vsw0"]));
    ok(ldm(d, &["rm-domain", "ldg1"]));
    let table = ok(ldm(d, &["list"]));
    assert_eq!(table.lines().count(), 2, "only primary is left:\n{table}");

    // SP configurations.
    ok(ldm(d, &["add-spconfig", "config1"]));
    assert_eq!(
        ok(ldm(d, &["list-spconfig"])),
        "factory-default\nconfig1 [current]\n"
    );
}

#[test]
fn text_xml_cannot_carry_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens: a refusal here is exit 2, where connecting would be 3.
    let socket = dir.path().join("ldmd.sock");
    let socket = socket.to_str().unwrap();
    for (args, message) in [
        (
            &["add-domain", "ldg\u{1}"][..],
            "ldm: operand 'ldg\\u{1}' contains a control character (U+0001) that XML 1.0 forbids\n",
        ),
        (
            &["--domain", "local\u{1b}host", "list"],
            "ldm: --domain 'local\\u{1b}host' contains a control character (U+001B) that XML 1.0 forbids\n",
        ),
        (
            &["set-vsw", "mtu=\u{7}", "sw0"],
            "ldm: operand '\\u{7}' contains a control character (U+0007) that XML 1.0 forbids\n",
        ),
    ] {
        let mut full = vec!["--socket", socket];
        full.extend_from_slice(args);
        let out = run_with(ldm_command(&full), None);
        exits(&out, 2);
        assert_eq!(stderr(&out), message, "{args:?}");
    }
    let out = run_with(
        ldm_command(&["--socket", socket, "xml", "-"]),
        Some(&list_domain().replace("list-domain", "list\u{1}domain")),
    );
    exits(&out, 2);
    assert!(
        stderr(&out).contains("contains a control character (U+0001)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn operands_that_change_nothing_and_ignored_sections_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("ldmd.sock");
    let socket = socket.to_str().unwrap();
    for (args, message) in [
        (
            &["add-variable", "ldg1"][..],
            "ldm: add-variable: expected NAME=VALUE... DOMAIN\n",
        ),
        (
            &["rm-var", "ldg1"],
            "ldm: remove-variable: expected NAME... DOMAIN\n",
        ),
        (
            &["set-vsw", "primary-vsw0"],
            "ldm: set-vsw: give at least one property=value\n",
        ),
        (
            &["list-services", "-o", "network"],
            "ldm: -o SECTIONS applies to list-domain and list-bindings only (here: -o text or -o json)\n",
        ),
    ] {
        let mut full = vec!["--socket", socket];
        full.extend_from_slice(args);
        let out = run_with(ldm_command(&full), None);
        exits(&out, 2);
        assert_eq!(stderr(&out), message, "{args:?}");
    }
}

#[test]
fn xml_sends_a_raw_document_from_stdin_and_prints_the_reply() {
    let daemon = Daemon::start("");
    let socket = daemon.socket.to_str().unwrap().to_owned();
    let document = format!("<?xml version='1.0'?>\n{}\n", list_domain());
    let out = run_with(
        ldm_command(&["--socket", &socket, "xml", "-"]),
        Some(&document),
    );
    let reply = ok(out);
    assert!(reply.starts_with("<LDM_interface version='1.0'"), "{reply}");
    assert!(reply.contains("id='primary'"), "{reply}");
    assert!(reply.trim_end().ends_with("</LDM_interface>"), "{reply}");
    let failing = run_with(
        ldm_command(&["--socket", &socket, "xml", "-"]),
        Some(&add_domain("-bad")),
    );
    exits(&failing, 1);
    assert!(stdout(&failing).contains("<status>failure</status>"));
    assert!(stderr(&failing).contains("must begin with a letter or a digit"));
    let not_xml = run_with(ldm_command(&["--socket", &socket, "xml", "-"]), Some("<a>"));
    exits(&not_xml, 2);
    let file = daemon.dir.path().join("doc.xml");
    std::fs::write(&file, list_domain()).unwrap();
    ok(run_with(
        ldm_command(&["--socket", &socket, "xml", file.to_str().unwrap()]),
        None,
    ));
    // -o json: the outcome of the reply, as every subcommand prints it.
    let json = run_with(
        ldm_command(&["--socket", &socket, "xml", "-", "-o", "json"]),
        Some(&add_domain("-bad")),
    );
    exits(&json, 1);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["status"], "failure");
    assert!(
        json["messages"][0]
            .as_str()
            .unwrap()
            .contains("must begin with a letter or a digit"),
        "{json}"
    );
    let json = ok(run_with(
        ldm_command(&["--socket", &socket, "xml", "-", "-o", "json"]),
        Some(list_domain()),
    ));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["status"], "success");
}

#[test]
fn a_closed_stdout_ends_ldm_quietly() {
    let daemon = Daemon::start("");
    let socket = daemon.socket.to_str().unwrap().to_owned();
    for (args, stdin) in [(&["list"][..], None), (&["xml", "-"], Some(list_domain()))] {
        let mut full = vec!["--socket", socket.as_str()];
        full.extend_from_slice(args);
        let mut child = ldm_command(&full).spawn().unwrap();
        // `ldm list | head -0`: the reader is gone before anything is written.
        drop(child.stdout.take());
        let out = finish(child, stdin);
        assert_eq!(stderr(&out), "", "{args:?}");
        exits(&out, 0);
    }
}

/// What the listing after a step must show.
enum Shows {
    Line(&'static str),
    Exactly(&'static str),
    Not(&'static str),
}

/// One table row: an `ldm` command, its exit status, and a listing that shows its effect
/// (`then` empty: the command is a listing, and its own output is checked).
struct Step {
    run: &'static [&'static str],
    exit: i32,
    /// The daemon's refusal, for exit 1.
    refusal: Option<&'static str>,
    then: &'static [&'static str],
    shows: Shows,
}

const fn step(run: &'static [&'static str], then: &'static [&'static str], shows: Shows) -> Step {
    Step {
        run,
        exit: 0,
        refusal: None,
        then,
        shows,
    }
}

const fn refused(
    run: &'static [&'static str],
    refusal: &'static str,
    then: &'static [&'static str],
    shows: Shows,
) -> Step {
    Step {
        run,
        exit: 1,
        refusal: Some(refusal),
        then,
        shows,
    }
}

#[test]
fn resource_spconfig_and_listing_commands_show_in_the_next_listing() {
    use Shows::*;
    // Memory DR on an active domain takes 5 s per GiB here, long enough to cancel it.
    let daemon = Daemon::start("[memdr]\nseconds_per_gib = 5");
    let d = &daemon;
    for setup in [
        &["add-domain", "t1"][..],
        &["add-vcpu", "4", "t1"],
        &["set-memory", "2G", "t1"],
        &["add-vsw", "net-dev=net0", "t1-vsw0", "primary"],
        &["add-vnet", "vnet1", "t1-vsw0", "t1"],
    ] {
        ok(ldm(d, setup));
    }
    let table = [
        step(
            &["set-vcpu", "6", "t1"],
            &["list", "-p", "t1"],
            Line("ncpu=6"),
        ),
        step(
            &["remove-vcpu", "2", "t1"],
            &["list", "-p", "t1"],
            Line("ncpu=4"),
        ),
        refused(
            &["remove-vcpu", "9", "t1"],
            "",
            &["list", "-p", "t1"],
            Line("ncpu=4"),
        ),
        step(&["add-memory", "1G", "t1"], &["ls", "t1"], Line("3G")),
        step(
            &["remove-memory", "512M", "t1"],
            &["list", "-p", "t1"],
            Line("mem=2684354560"),
        ),
        step(
            &["add-spconfig", "c1"],
            &["list-spconfig"],
            Exactly("factory-default\nc1 [current]\n"),
        ),
        step(
            &["add-config", "c2"],
            &["list-spconfig"],
            Exactly("factory-default\nc1\nc2 [current]\n"),
        ),
        step(
            &["set-spconfig", "c1"],
            &["list-spconfig"],
            Exactly("factory-default\nc1 [next poweron]\nc2 [current]\n"),
        ),
        step(
            &["remove-spconfig", "c1"],
            &["list-spconfig", "-p"],
            Exactly(
                "VERSION 1.6\nSPCONFIG|name=factory-default|status=\nSPCONFIG|name=c2|status=current\n",
            ),
        ),
        refused(
            &["remove-spconfig", "c2"],
            "c2 is the current SP configuration: select another with set-spconfig and power-cycle first\n",
            &["list-spconfig"],
            Line("c2 [current]"),
        ),
        refused(
            &["cancel-operation", "memdr", "t1"],
            "No memory dynamic reconfiguration is in progress on t1\n",
            &["list", "-p", "t1"],
            Not("memory-dr"),
        ),
        step(
            &["bind", "t1"],
            &["list-devices", "-p", "cpu"],
            Not("|pid=16|"),
        ),
        step(
            &["list", "-l", "-p", "t1"],
            &[],
            Line("|vid=3|pid=19|util=|strand=100|cid=2"),
        ),
        step(&["list", "-l", "-p", "t1"], &[], Line("|ra=0x10000000|pa=")),
        step(&["list", "-o", "network", "t1"], &[], Not("\nVCPU\n")),
        // A prefix names its section, as Oracle's ldm takes it.
        step(
            &["list", "-o", "net", "t1"],
            &[],
            Line("    vnet1            t1-vsw0@primary             0    network@0  "),
        ),
        step(
            &["list", "-o", "network", "t1"],
            &[],
            Line("    vnet1            t1-vsw0@primary             0    network@0  "),
        ),
        step(&["list-devices", "memory"], &[], Line("MEMORY")),
    ];
    for Step {
        run,
        exit,
        refusal,
        then,
        shows,
    } in table
    {
        let out = ldm(d, run);
        exits(&out, exit);
        match refusal {
            Some("") => assert!(!stderr(&out).is_empty(), "{run:?}"),
            Some(message) => assert_eq!(stderr(&out), message, "{run:?}"),
            None => assert_eq!(stderr(&out), "", "{run:?}"),
        }
        let listing = if then.is_empty() {
            stdout(&out)
        } else {
            ok(ldm(d, then))
        };
        match shows {
            Line(part) => assert!(
                listing.lines().any(|l| l.contains(part)),
                "{run:?} then {then:?}: no {part:?} in\n{listing}"
            ),
            Exactly(text) => assert_eq!(listing, text, "{run:?} then {then:?}"),
            Not(part) => assert!(
                !listing.contains(part),
                "{run:?} then {then:?}: {part:?} in\n{listing}"
            ),
        }
    }
    // list-devices: the cpu t1 holds is no longer free.
    let devices = ok(ldm(d, &["list-devices", "cpu"]));
    assert!(
        devices.starts_with("VCPU\n    PID     %FREE   PM\n    20      100     no\n"),
        "{devices}"
    );

    // cancel-operation memdr: a DR in progress on the active domain ends early.
    ok(ldm(d, &["start", "t1"]));
    let socket = daemon.socket.to_str().unwrap().to_owned();
    let growing = ldm_command(&["--socket", &socket, "add-memory", "1G", "t1"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + RUN_LIMIT;
    while !ok(ldm(d, &["list", "-p", "t1"])).contains("flags=-nr---") {
        assert!(Instant::now() < deadline, "the memory DR never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    ok(ldm(d, &["cancel-op", "memdr", "t1"]));
    let grown = finish(growing, None);
    // Cancelled before or after some memory moved: a failure, or a success with a warning.
    assert!(matches!(grown.status.code(), Some(0 | 1)), "{grown:?}");
    assert!(stderr(&grown).contains("cancelled"), "{}", stderr(&grown));
    assert!(!ok(ldm(d, &["list", "-p", "t1"])).contains("memory-dr"));
}
