//! Issue 16: `ldm` output in Oracle's shapes, line for line. A daemon on a machine like the
//! Administration Guide's examples (two root complexes `bus_a` at `pci@780` and `bus_b` at
//! `pci@7c0`, a 4-strand 1G control domain) gets the guide's domains through `ldm` commands:
//! `ldg1` bound and running with a disk, a network device and a boot-device variable, `ldg2`
//! inactive with two network devices. Each listing is then compared, line by line, with the
//! text in `golden/` written from the guide's examples. Placeholders stand only for values
//! that differ by nature: `<uuid>`, `<mac>`, `<hostid>`, `<secs>` and `<uptime>`, and
//! `<util>`, the control domain's utilisation, which is the host's measured CPU use.
//!
//! Then scripts' ways of reading `-p`: `cut -d'|' -f3` for the state, `-f5` for the
//! console, `grep -c '|pid='` for free strands, summing `size=` for free memory, and `awk` on
//! the VNET and VDISK records, each run by the shell and checked against the machine.

use super::*;

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
        &["add-domain", "ldg1"],
        &["add-vcpu", "2", "ldg1"],
        &["add-memory", "768M", "ldg1"],
        &["add-vdsdev", "/ldoms/ldg1/disk", "vol0@primary-vds0"],
        &["add-vdisk", "vdisk0", "vol0@primary-vds0", "ldg1"],
        &["add-vnet", "vnet0", "primary-vsw0", "ldg1"],
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
    ];
    for args in commands {
        ok(ldm(&daemon, args));
    }
    daemon
}

/// The characters a placeholder stands for, and whether it may stand for nothing.
type Placeholder = (fn(char) -> bool, bool);

/// Which characters a placeholder stands for, and whether it may be empty (the control
/// domain's utilisation is blank until the first second of measurement is over).
fn placeholder(name: &str) -> Option<Placeholder> {
    Some(match name {
        "uuid" => (|c| c.is_ascii_hexdigit() || c == '-', false),
        "mac" => (|c| c.is_ascii_hexdigit() || c == ':', false),
        "hostid" => (|c| c.is_ascii_hexdigit() || c == 'x', false),
        "secs" => (|c| c.is_ascii_digit(), false),
        "uptime" => (|c| c.is_ascii_digit() || "dhms ".contains(c), false),
        "util" => (|c| c.is_ascii_digit() || ". %".contains(c), true),
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
    let Some((allowed, may_be_empty)) = placeholder(name) else {
        // Not a placeholder (`<` in the text itself): match it literally.
        return line
            .strip_prefix('<')
            .is_some_and(|l| matches(&rest[1..], l));
    };
    let run = line.find(|c: char| !allowed(c)).unwrap_or(line.len());
    let shortest = usize::from(!may_be_empty);
    (shortest..=run).any(|n| line.is_char_boundary(n) && matches(after, &line[n..]))
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
    assert!(matches(
        "x  <util>  <util>  <uptime>",
        "x   0.4%   23%  1d 2h"
    ));
    assert!(matches("x  <util>  <util>  <uptime>", "x            3s"));
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
         name=ldg2|state=inactive|cons="
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
        "name=vdisk0 vol=vol0@primary-vds0 dev=disk@0"
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
    let xml = ok(ldm(&daemon, &["list-constraints", "-x", "ldg2"]));
    assert!(
        xml.starts_with("<?xml version=\"1.0\"?>\n<LDM_interface"),
        "{xml}"
    );
    let before = ok(ldm(&daemon, &["list-constraints", "-p", "ldg2"]));
    ok(ldm(&daemon, &["remove-domain", "ldg2"]));
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &xml).unwrap();
    let added = ldm(
        &daemon,
        &["add-domain", "-i", file.path().to_str().unwrap()],
    );
    assert_eq!(stdout(&added), "", "a write prints nothing");
    ok(added);
    // The same domain: UUID, MACs, host ID, resources, devices and their numbers.
    assert_eq!(
        ok(ldm(&daemon, &["list-constraints", "-p", "ldg2"])),
        before
    );
    // ldm's own `uuid=`, as Oracle's add-domain takes it.
    let uuid = "6c908858-12ef-e520-9eb3-f1cd3dbc3a59";
    ok(ldm(
        &daemon,
        &["add-domain", &format!("uuid={uuid}"), "ldg3"],
    ));
    let listed = ok(ldm(&daemon, &["list-constraints", "-p", "ldg3"]));
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
