//! `ldm migrate-domain` and `ldm list -o status`, run as an operator runs them.

use std::time::Duration;

use crate::harness::*;
use crate::support::*;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn ldm_migrate_domain_reads_the_target_password_from_a_file_then_the_environment() {
    let hosts = Hosts::start();
    guest(&hosts, "ldg1", "bound");
    ok(&hosts.source, &["add-domain", "ldg2"]);
    let port = hosts.proxy.addr.port().to_string();
    let file = hosts.source.state_dir().join("target-password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let file = file.to_str().unwrap();
    let to = |name: &str| format!("{USER}@127.0.0.1:{name}");

    // -n: both sides checked, nothing changed.
    let before = bindings(&hosts.source);
    let out = ldm(
        &hosts.source,
        &[
            "migrate-domain",
            "-n",
            "-p",
            file,
            "--target-port",
            &port,
            "ldg1",
            &to("ldg9"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(bindings(&hosts.source), before);
    assert_eq!(listed(&hosts.target, "ldg9"), None);

    // The file's first line is the password; the domain arrives renamed, bound.
    ok(
        &hosts.source,
        &[
            "migrate",
            "-p",
            file,
            "--target-port",
            &port,
            "ldg1",
            &to("ldg9"),
        ],
    );
    assert_eq!(listed(&hosts.source, "ldg1"), None);
    let arrived = listed(&hosts.target, "ldg9").expect("ldg9 on the target");
    assert_eq!(
        (field(&arrived, "state"), field(&arrived, "flags")),
        ("bound".into(), String::new())
    );

    // Without -p, LDM_TARGET_PASSWORD; a wrong one is refused in a sentence, and nothing moves.
    let target = format!("{USER}@127.0.0.1");
    let args = ["migrate", "--target-port", &port, "ldg2", &target];
    let out = ldm_with(&hosts.source, &args, &[("LDM_TARGET_PASSWORD", "wrong")]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("refused the login of {USER}")),
        "{}",
        stderr(&out)
    );
    assert!(listed(&hosts.source, "ldg2").is_some());
    let out = ldm_with(&hosts.source, &args, &[("LDM_TARGET_PASSWORD", PASSWORD)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(listed(&hosts.source, "ldg2"), None);
    assert_eq!(
        field(&listed(&hosts.target, "ldg2").unwrap(), "state"),
        "inactive"
    );

    // No password anywhere and no terminal: a usage error that says where one may come from.
    ok(&hosts.source, &["add-domain", "ldg3"]);
    let out = ldm(
        &hosts.source,
        &["migrate", "--target-port", &port, "ldg3", &target],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "no password for {USER}@127.0.0.1: give -p FILE, set LDM_TARGET_PASSWORD"
        )),
        "{}",
        stderr(&out)
    );
    // A malformed target is refused before anything is asked.
    let out = ldm(&hosts.source, &["migrate", "ldg3", "@127.0.0.1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("expected [USER@]HOST[:NAME], got '@127.0.0.1'"),
        "{}",
        stderr(&out)
    );
    hosts.settled();
}

#[test]
fn ldm_list_o_status_shows_the_migration_on_both_sides() {
    // 2G at 3 s per GiB: six seconds of transfer to look at.
    let hosts = Hosts::paced(3.0);
    guest(&hosts, "ldg1", "active");
    let requester = {
        let document =
            migrate_document("ldg1", "ldg1", &hosts.target_address(), USER, PASSWORD, &[]);
        let mut client = hosts.source.unix();
        client.secure();
        std::thread::spawn(move || client.request(&document))
    };
    let mut source_view = String::new();
    eventually(SETTLE, "the source shows progress past 0%", || {
        source_view = ok(&hosts.source, &["list", "-o", "status", "ldg1"]);
        source_view.contains("migration out") && !source_view.contains(" 0% ")
    });
    let peer = hosts.target_address();
    let row = source_view
        .lines()
        .find(|l| l.contains("migration out"))
        .unwrap()
        .to_owned();
    assert!(source_view.contains("OPERATION"), "{source_view}");
    assert!(
        row.contains('%') && row.trim_end().ends_with(&peer),
        "{row}"
    );
    // The short parseable form gives the flags' letters: the sixth is s here and t there.
    let letters = |daemon: &Daemon| {
        let out = ok(daemon, &["list", "-p", "ldg1"]);
        let line = out.lines().find(|l| l.starts_with("DOMAIN|")).unwrap();
        field(line, "flags")
    };
    let (here, there) = (letters(&hosts.source), letters(&hosts.target));
    assert!(here.len() == 6 && here.ends_with('s'), "{here}");
    assert!(there.len() == 6 && there.ends_with('t'), "{there}");
    let target_view = ok(&hosts.target, &["list", "-o", "status", "ldg1"]);
    assert!(
        target_view.contains("migration in") && target_view.contains("chunks"),
        "{target_view}"
    );
    // A domain with nothing running shows its name only.
    let primary = ok(&hosts.source, &["list", "-o", "status", "primary"]);
    assert_eq!(primary, "NAME\nprimary\n\n");
    let reply = requester.join().unwrap();
    assert_eq!(document_status(&reply).0, "success", "{reply}");
    std::thread::sleep(Duration::from_millis(50));
    let after = ok(&hosts.target, &["list", "-o", "status", "ldg1"]);
    assert!(!after.contains("migration"), "{after}");
    hosts.settled();
}
