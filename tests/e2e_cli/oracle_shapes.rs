//! Issue 16: `ldm` output in Oracle's shapes, line for line. A daemon on a machine like the
//! Administration Guide's examples (two root complexes `bus_a` at `pci@780` and `bus_b` at
//! `pci@7c0` with a slot, a 4-strand 1G control domain with a second switch on VLANs 5 and 6
//! and a read-only multipathed ISO volume) gets the guide's domains through `ldm` commands:
//! `ldg1` bound and running with a crypto unit, two disks (one with a timeout) on two
//! networks and a boot-device variable; `ldg2` inactive with two networks on one switch and a
//! disk service of its own; `ldg3` inactive with a whole core. Each listing is then compared,
//! line by line, with the text in `golden/` written from the guide's examples. Placeholders
//! stand only for values that differ by nature: `<uuid>`, `<mac>`, `<hostid>`, `<secs>` and
//! `<uptime>`, and the control domain's utilisation, which is the host's measured CPU use:
//! `<util>` in records, `<pct4>` for its four places in a table.
//!
//! Then scripts' ways of reading `-p`: `cut -d'|' -f3` for the state, `-f5` for the
//! console, `grep -c '|pid='` for free strands, summing `size=` for free memory, and `awk` on
//! the VNET and VDISK records, each run by the shell and checked against the machine.

use super::*;
use std::time::{Duration, Instant};

const MACHINE: &str = r#"
[machine]
cores = 2
threads_per_core = 8
memory = "8G"
hypervisor_memory = "256M"
crypto_units = 2
[machine.control_domain]
vcpus = 4
memory = "1G"
crypto_units = 0
[[machine.root_complexes]]
name = "bus_a"
path = "pci@780"
[[machine.root_complexes]]
name = "bus_b"
path = "pci@7c0"
slots = ["/SYS/MB/PCIE1"]
"#;

/// The guide's domains, built with `ldm`.
fn guide_machine() -> Daemon {
    let daemon = Daemon::start(MACHINE);
    let commands: &[&[&str]] = &[
        &[
            "add-vsw",
            "net-dev=net1",
            "vid=5,6",
            "mode=sc",
            "linkprop=phys-state",
            "primary-vsw1",
            "primary",
        ],
        &[
            "add-vdsdev",
            "options=ro,slice",
            "mpgroup=mp1",
            "/ldoms/iso",
            "vol2@primary-vds0",
        ],
        &["add-domain", "ldg1"],
        &["add-vcpu", "2", "ldg1"],
        &["add-memory", "768M", "ldg1"],
        &["add-crypto", "1", "ldg1"],
        &["add-vdsdev", "/ldoms/ldg1/disk", "vol0@primary-vds0"],
        &["add-vdisk", "vdisk0", "vol0@primary-vds0", "ldg1"],
        &[
            "add-vdisk",
            "timeout=30",
            "cdrom",
            "vol2@primary-vds0",
            "ldg1",
        ],
        &["add-vnet", "vnet0", "primary-vsw0", "ldg1"],
        &["add-vnet", "vnet1", "primary-vsw1", "ldg1"],
        &[
            "set-variable",
            "boot-device=/virtual-devices@100/channel-devices@200/disk@0:a",
            "ldg1",
        ],
        &["bind", "ldg1"],
        &["start", "ldg1"],
        &["add-domain", "ldg2"],
        &["add-vcpu", "3", "ldg2"],
        &["add-memory", "1G", "ldg2"],
        &["add-vdsdev", "/ldoms/ldg2/disk", "vol1@primary-vds0"],
        &["add-vdisk", "vdisk0", "vol1@primary-vds0", "ldg2"],
        &["add-vnet", "vnet0", "primary-vsw0", "ldg2"],
        &["add-vnet", "vnet1", "primary-vsw0", "ldg2"],
        &["add-vds", "ldg2-vds0", "ldg2"],
        &["add-vdsdev", "/dev/dsk/c0t1d0s2", "vol9@ldg2-vds0"],
        &["add-domain", "ldg3"],
        &["add-core", "1", "ldg3"],
        &["add-memory", "512M", "ldg3"],
    ];
    for args in commands {
        ok(ldm(&daemon, args));
    }
    // The control domain's UTIL is measured over windows of a second: wait for the first, so
    // that the listings show a figure, not the blank of a daemon just started.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ok(ldm(&daemon, &["list", "-p", "primary"])).contains("|util=|") {
        assert!(
            Instant::now() < deadline,
            "no utilisation measured within 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon
}

/// The characters a placeholder stands for, and how many: any number but none, or exactly
/// that many (a table's fixed-width field).
type Placeholder = (fn(char) -> bool, Option<usize>);

/// Which characters a placeholder stands for.
fn placeholder(name: &str) -> Option<Placeholder> {
    Some(match name {
        "uuid" => (|c| c.is_ascii_hexdigit() || c == '-', None),
        "mac" => (|c| c.is_ascii_hexdigit() || c == ':', None),
        "hostid" => (|c| c.is_ascii_hexdigit() || c == 'x', None),
        "secs" => (|c| c.is_ascii_digit(), None),
        "uptime" => (|c| c.is_ascii_digit() || "dhms ".contains(c), None),
        "util" => (|c| c.is_ascii_digit() || c == '.', None),
        // ` 23%`, `0.4%`, `100%` right-aligned in a row; `23% ` left-aligned in a VCPU row.
        "pct4" => (|c| c.is_ascii_digit() || ". %".contains(c), Some(4)),
        _ => return None,
    })
}

/// Whether `line` matches `expected`, whose `<name>` placeholders stand for runs of their
/// characters (tried shortest first, so a placeholder never swallows the text after it).
fn matches(expected: &str, line: &str) -> bool {
    let Some(open) = expected.find('<') else {
        return expected == line;
    };
    let (literal, rest) = expected.split_at(open);
    let Some(line) = line.strip_prefix(literal) else {
        return false;
    };
    let Some((name, after)) = rest[1..].split_once('>') else {
        return rest == line;
    };
    let Some((allowed, width)) = placeholder(name) else {
        // Not a placeholder (`<` in the text itself): match it literally.
        return line
            .strip_prefix('<')
            .is_some_and(|l| matches(&rest[1..], l));
    };
    // The characters are ASCII, so every length up to `run` is a character boundary.
    let run = line.find(|c: char| !allowed(c)).unwrap_or(line.len());
    let lengths = match width {
        Some(width) if width <= run => width..=width,
        Some(_) => return false,
        None => 1..=run,
    };
    lengths.into_iter().any(|n| {
        line[..n].contains(|c: char| c.is_ascii_digit() || c.is_ascii_hexdigit())
            && matches(after, &line[n..])
    })
}

/// Runs the command a golden file names on its first line (`$ ldm ...`) and compares.
#[track_caller]
fn check_golden(daemon: &Daemon, name: &str, text: &str) {
    let (command, expected) = text.split_once('\n').unwrap();
    let args: Vec<&str> = command
        .strip_prefix("$ ldm ")
        .unwrap_or_else(|| panic!("{name}: the first line names the command"))
        .split(' ')
        .collect();
    let got = ok(ldm(daemon, &args));
    let (got_lines, want_lines): (Vec<&str>, Vec<&str>) =
        (got.lines().collect(), expected.lines().collect());
    for (n, (got_line, want_line)) in got_lines.iter().zip(&want_lines).enumerate() {
        assert!(
            matches(want_line, got_line),
            "{name}, `{command}`, line {}:\n  want: {want_line}\n  got:  {got_line}\n\nwhole output:\n{got}",
            n + 2
        );
    }
    assert_eq!(
        got_lines.len(),
        want_lines.len(),
        "{name}, `{command}`: line count\n\nwhole output:\n{got}"
    );
}

macro_rules! golden {
    ($($file:literal),* $(,)?) => {
        &[$(($file, include_str!(concat!("golden/", $file, ".txt")))),*]
    };
}

const GOLDEN: &[(&str, &str)] = golden![
    "list",
    "list-p",
    "list-l",
    "list-l-p",
    "list-bindings-p-ldg2",
    "list-constraints-ldg1",
    "list-constraints-p",
    "list-services",
    "list-services-p",
    "list-devices",
    "list-devices-a-p",
    "list-devices-a-mem",
    "list-io",
    "list-io-p",
    "list-spconfig",
    "list-spconfig-p",
    "list-variable-ldg1",
    "list-o-net-disk-ldg2",
    "list-o-core-cpu-mem-stats-ldg1",
    "list-o-domain-crypto-physio-console-ldg1",
    "list-o-resmgmt-core-ldg3",
    "list-bindings-ldg1",
    "list-e-ldg2",
    "list-devices-p",
    "list-devices-a",
    "list-variable-p-ldg1",
    "list-o-status",
];

#[test]
fn every_listing_matches_the_guides_shapes_line_for_line() {
    let daemon = guide_machine();
    for (name, text) in GOLDEN {
        check_golden(&daemon, name, text);
    }
    // The aliases print the same.
    for (alias, long) in [
        ("ls-bindings", "list-bindings"),
        ("ls-services", "list-services"),
        ("ls-devices", "list-devices"),
        ("ls-spconfig", "list-spconfig"),
        ("ls-constraints", "list-constraints"),
        ("ls-io", "list-io"),
    ] {
        let with_p = |c| ok(ldm(&daemon, &[c, "-p"]));
        let (a, b) = (with_p(alias), with_p(long));
        // Only the uptime and the host's measured utilisation move between two runs.
        let steady = |t: String| -> Vec<String> {
            let moving = ["uptime=", "util=", "norm_util="];
            t.lines()
                .map(|l| {
                    l.split('|')
                        .filter(|f| !moving.iter().any(|m| f.starts_with(m)))
                        .collect::<Vec<_>>()
                        .join("|")
                })
                .collect()
        };
        assert_eq!(steady(a), steady(b), "{alias}");
    }
}

#[test]
fn the_placeholder_matcher_accepts_only_what_each_placeholder_stands_for() {
    assert!(matches(
        "UUID|uuid=<uuid>",
        "UUID|uuid=6c908858-12ef-e520-9eb3-f1cd3dbc3a59"
    ));
    assert!(!matches("UUID|uuid=<uuid>", "UUID|uuid="));
    assert!(!matches("UUID|uuid=<uuid>", "UUID|uuid=zz"));
    assert!(matches("x <pct4>  <pct4>  <uptime>", "x 0.4%   23%  1d 2h"));
    assert!(!matches("x <pct4>  <pct4>  <uptime>", "x            3s"));
    assert!(!matches("x <pct4>|", "x 0.4|"), "four places, not three");
    assert!(matches("|util=<util>|n", "|util=0.4|n"));
    assert!(!matches("|util=<util>|n", "|util=|n"));
    assert!(!matches("|util=<util>|n", "|util=0.4|x"));
    assert!(matches("a<b", "a<b"));
    assert!(!matches("abc", "abcd"));
}

/// `sh -c SCRIPT` with `LDM` naming the binary and `LDMD_SOCKET` the daemon's socket.
fn shell(daemon: &Daemon, script: &str) -> String {
    let mut command = Command::new("sh");
    command
        .args(["-c", script])
        .env("LDM", LDM)
        .env("LDMD_SOCKET", &daemon.socket)
        .env_remove("LDM_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    ok(run_with(command, None)).trim_end().to_owned()
}

#[test]
fn scripts_that_cut_grep_and_awk_the_parseable_form_get_the_right_answers() {
    let daemon = guide_machine();
    // The state and the console of each domain: fields 3 and 5 of its DOMAIN record.
    assert_eq!(
        shell(
            &daemon,
            r#""$LDM" list -p | grep '^DOMAIN' | cut -d'|' -f2,3,5"#
        ),
        "name=primary|state=active|cons=UART\n\
         name=ldg1|state=active|cons=5000\n\
         name=ldg2|state=inactive|cons=\n\
         name=ldg3|state=inactive|cons="
    );
    assert_eq!(
        shell(
            &daemon,
            r#""$LDM" list -p ldg1 | grep '^DOMAIN' | cut -d'|' -f3 | cut -d= -f2"#
        ),
        "active"
    );
    // Free strands: 16 on the machine, 4 for primary, 2 for ldg1 (ldg2 is not bound).
    assert_eq!(
        shell(&daemon, r#""$LDM" list-devices -p cpu | grep -c '|pid='"#),
        "10"
    );
    // Free memory: 8G less the hypervisor's 256M, primary's 1G and ldg1's 768M.
    let free = shell(
        &daemon,
        r#""$LDM" list-devices -p memory | grep -o 'size=[0-9]*' | cut -d= -f2 | awk '{ s += $1 } END { printf "%.0f", s }'"#,
    );
    assert_eq!(
        free,
        ((8u64 << 30) - (256 << 20) - (1 << 30) - (768 << 20)).to_string()
    );
    // The bound memory of every domain, -a: the whole machine adds up.
    let all = shell(
        &daemon,
        r#""$LDM" list-devices -a -p memory | grep -o 'size=[0-9]*' | cut -d= -f2 | awk '{ s += $1 } END { printf "%.0f", s }'"#,
    );
    assert_eq!(all, (8u64 << 30).to_string());
    // Networks and disks of a domain, as inventory scripts read them.
    assert_eq!(
        shell(
            &daemon,
            r#""$LDM" list -l -p ldg2 | awk -F'|' '/^VNET\|/ { split($2, n, "="); split($3, d, "="); print n[2], d[2] }'"#
        ),
        "vnet0 network@0\nvnet1 network@1"
    );
    assert_eq!(
        shell(
            &daemon,
            r#""$LDM" list-bindings -p ldg1 | awk -F'|' '/^VDISK\|/ { print $2, $3, $5 }'"#
        ),
        "name=vdisk0 vol=vol0@primary-vds0 dev=disk@0\n\
         name=cdrom vol=vol2@primary-vds0 dev=disk@1"
    );
    // A migration script's first look: who is doing what.
    assert_eq!(
        shell(&daemon, r#""$LDM" list -o status ldg1 | head -2"#),
        "NAME\nldg1"
    );
}

#[test]
fn the_version_banner_has_oracles_shape_and_names_ldmd() {
    let banner = ok(run_with(ldm_command(&["-V"]), None));
    let lines: Vec<&str> = banner.lines().collect();
    assert_eq!(lines[0], "");
    assert_eq!(lines[1], "Logical Domains Manager (v 3.6.0)");
    // What discovery tools match: the fifth word of the first line, the sixth field of the
    // protocol line split on whitespace, and the hypervisor's version after `@(#)Hypervisor`.
    assert_eq!(lines[1].split_whitespace().nth(4), Some("3.6.0)"));
    let protocol = lines
        .iter()
        .find(|l| l.contains("Hypervisor control protocol"))
        .unwrap();
    assert_eq!(
        protocol.split(' ').filter(|w| !w.is_empty()).nth(4),
        Some("1.0")
    );
    assert!(banner.contains("System PROM:"));
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        banner.contains(&format!("@(#)Hypervisor {version} ldmd (simulated)")),
        "{banner}"
    );
    assert_eq!(
        ok(run_with(ldm_command(&["--version"]), None)),
        banner,
        "--version is -V"
    );
}

#[test]
fn list_constraints_x_writes_the_xml_that_recreates_the_domain() {
    let daemon = guide_machine();
    // ldg2 provides a disk service with a volume, and uses primary's switch and disks.
    let xml = ok(ldm(&daemon, &["list-constraints", "-x", "ldg2"]));
    assert!(
        xml.starts_with("<?xml version=\"1.0\"?>\n<LDM_interface"),
        "{xml}"
    );
    let before = ok(ldm(&daemon, &["list-constraints", "-p", "ldg2"]));
    for args in [
        &["remove-vdsdev", "vol9@ldg2-vds0"][..],
        &["remove-vds", "ldg2-vds0"],
        &["remove-domain", "ldg2"],
    ] {
        ok(ldm(&daemon, args));
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &xml).unwrap();
    let added = ldm(
        &daemon,
        &["add-domain", "-i", file.path().to_str().unwrap()],
    );
    assert_eq!(stdout(&added), "", "a write prints nothing");
    ok(added);
    // The same domain: UUID, MACs, host ID, resources, its service, devices and numbers.
    assert_eq!(
        ok(ldm(&daemon, &["list-constraints", "-p", "ldg2"])),
        before
    );
    // Every domain: the control domain is left out, with a word on stderr.
    let all = ldm(&daemon, &["list-constraints", "-x"]);
    assert!(
        stderr(&all).contains("primary is left out"),
        "{}",
        stderr(&all)
    );
    assert!(!stdout(&all).contains("id='primary'"));
    // ldm's own `uuid=`, as Oracle's add-domain takes it.
    let uuid = "6c908858-12ef-e520-9eb3-f1cd3dbc3a59";
    ok(ldm(
        &daemon,
        &["add-domain", &format!("uuid={uuid}"), "ldg4"],
    ));
    let listed = ok(ldm(&daemon, &["list-constraints", "-p", "ldg4"]));
    assert!(
        listed.contains(&format!("\nUUID|uuid={uuid}\n")),
        "{listed}"
    );
    // A file that is not an LDM document is refused before anything is sent.
    std::fs::write(file.path(), "<nonsense/>").unwrap();
    exits(
        &ldm(
            &daemon,
            &["add-domain", "-i", file.path().to_str().unwrap()],
        ),
        2,
    );
}

#[test]
fn a_value_cannot_forge_a_record_or_reach_the_terminal_raw() {
    let daemon = guide_machine();
    let forged = "1\nDOMAIN|name=fake|state=active";
    ok(ldm(
        &daemon,
        &["set-variable", &format!("x={forged}"), "ldg2"],
    ));
    // (A carriage return never reaches the daemon: XML turns it into a newline.)
    ok(ldm(
        &daemon,
        &["set-variable", "nvramrc=\u{9b}31mred", "ldg2"],
    ));
    let long = ok(ldm(&daemon, &["list", "-l", "-p"]));
    let domains: Vec<&str> = long.lines().filter(|l| l.starts_with("DOMAIN|")).collect();
    assert_eq!(domains.len(), 4, "{long}");
    assert!(
        long.contains("\n|x=1\\nDOMAIN\\|name=fake\\|state=active\n"),
        "{long}"
    );
    // The C1 control is escaped on the way to the terminal.
    assert!(long.contains("\n|nvramrc=\\u{9b}31mred\n"), "{long}");
    // The readable form keeps a value's newline, as Oracle's; controls are still escaped.
    let plain = ok(ldm(&daemon, &["list-variable", "nvramrc", "x", "ldg2"]));
    assert_eq!(
        plain,
        "nvramrc=\\u{9b}31mred\nx=1\nDOMAIN|name=fake|state=active\n"
    );
}
