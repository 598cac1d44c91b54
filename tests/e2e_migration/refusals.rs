//! Every refusal of §6, each with the ldm CLI's kind of sentence, and nothing changed on either
//! side; and what a migration in progress refuses.

use super::harness::*;
use crate::support::*;

/// Migrates `domain` to its own name and expects a refusal containing `expected`; checks that
/// neither side changed.
#[track_caller]
fn refused(hosts: &Hosts, domain: &str, options: &[&str], expected: &str) {
    let source_before = bindings(&hosts.source);
    let target_before = bindings(&hosts.target);
    let reply = hosts.migrate(domain, domain, options);
    let (status, message) = document_status(&reply);
    assert_eq!(status, "failure", "{reply}");
    let message = message.unwrap_or_default();
    assert!(
        message.contains(expected),
        "expected '{expected}' in '{message}'"
    );
    assert_eq!(bindings(&hosts.source), source_before, "the source changed");
    assert_eq!(bindings(&hosts.target), target_before, "the target changed");
    hosts.settled();
}

#[test]
fn what_the_source_refuses_before_reaching_the_target() {
    let hosts = Hosts::start();
    refused(
        &hosts,
        "primary",
        &[],
        "The control domain primary cannot be migrated",
    );
    refused(&hosts, "nosuch", &[], "LDom nosuch does not exist");
    // Physical I/O.
    guest(&hosts, "io1", "inactive");
    ok(&hosts.source, &["add-io", "/SYS/MB/PCIE1", "io1"]);
    refused(
        &hosts,
        "io1",
        &[],
        "LDom io1 owns physical I/O devices (/SYS/MB/PCIE1): a domain with physical I/O cannot be migrated",
    );
    // A service domain.
    guest(&hosts, "svc1", "inactive");
    ok(&hosts.source, &["add-vds", "svc1-vds0", "svc1"]);
    refused(
        &hosts,
        "svc1",
        &[],
        "provides virtual I/O services (svc1-vds0)",
    );
    // A master of another domain.
    guest(&hosts, "boss", "inactive");
    ok(&hosts.source, &["add-domain", "master=boss", "worker"]);
    refused(&hosts, "boss", &[], "LDom boss is a master of worker");
    // The control domain in delayed reconfiguration.
    guest(&hosts, "ldg1", "bound");
    ok(&hosts.source, &["set-memory", "12G", "primary"]);
    refused(&hosts, "ldg1", &[], "delayed reconfiguration pending");
    ok(&hosts.source, &["cancel-reconf", "primary"]);
}

#[test]
fn what_the_target_refuses_leaves_both_sides_as_they_were() {
    let hosts = Hosts::start();
    guest(&hosts, "ldg1", "bound");
    // The name is taken on the target.
    ok(&hosts.target, &["add-domain", "ldg1"]);
    refused(
        &hosts,
        "ldg1",
        &[],
        "LDom ldg1 already exists on the target",
    );
    ok(&hosts.target, &["remove-domain", "ldg1"]);
    // The domain's MAC address is in use there.
    let mac = field(
        ok(&hosts.source, &["list-constraints", "-p", "ldg1"])
            .lines()
            .find(|l| l.starts_with("MAC|"))
            .unwrap(),
        "mac-addr",
    );
    ok(
        &hosts.target,
        &["add-domain", &format!("mac-addr={mac}"), "other"],
    );
    refused(
        &hosts,
        "ldg1",
        &[],
        &format!("MAC address {mac} of ldg1 is already in use on the target"),
    );
    ok(&hosts.target, &["remove-domain", "other"]);
    // Not enough memory left there.
    ok(&hosts.target, &["add-domain", "big"]);
    ok(&hosts.target, &["add-vcpu", "1", "big"]);
    ok(&hosts.target, &["add-memory", "494G", "big"]);
    ok(&hosts.target, &["bind-domain", "big"]);
    refused(
        &hosts,
        "ldg1",
        &[],
        "Not enough free memory on the target for ldg1",
    );
    // An inactive domain is not checked for resources: it goes (and binds there later).
    guest(&hosts, "idle", "inactive");
    let reply = hosts.migrate("idle", "idle", &[]);
    assert_eq!(document_status(&reply).0, "success", "{reply}");
    ok(&hosts.target, &["unbind-domain", "big"]);
    // A volume or a virtual switch the target lacks.
    ok(
        &hosts.source,
        &[
            "add-vdsdev",
            "/dev/zvol/only-here",
            "vol-local@primary-vds0",
        ],
    );
    ok(
        &hosts.source,
        &["add-vdisk", "disk1", "vol-local@primary-vds0", "ldg1"],
    );
    refused(
        &hosts,
        "ldg1",
        &[],
        "Volume vol-local of service primary-vds0, used by vdisk disk1 of ldg1, does not exist on the target",
    );
    ok(
        &hosts.target,
        &["add-vdsdev", "/dev/zvol/there", "vol-local@primary-vds0"],
    );
    ok(
        &hosts.source,
        &["add-vsw", "net-dev=net1", "backup-vsw0", "primary"],
    );
    ok(&hosts.source, &["add-vnet", "net1", "backup-vsw0", "ldg1"]);
    refused(
        &hosts,
        "ldg1",
        &[],
        "The virtual switch backup-vsw0 of vnet net1 of ldg1 does not exist on the target",
    );
}

#[test]
fn a_console_port_taken_on_the_target_is_refused_unless_forced() {
    let hosts = Hosts::start();
    guest(&hosts, "ldg1", "bound");
    // The target's first domain takes the console port ldg1 has on the source (5000).
    ok(&hosts.target, &["add-domain", "here"]);
    ok(&hosts.target, &["add-vcpu", "1", "here"]);
    ok(&hosts.target, &["add-memory", "1G", "here"]);
    ok(&hosts.target, &["bind-domain", "here"]);
    refused(
        &hosts,
        "ldg1",
        &[],
        "Console port 5000 of primary-vcc0, used by ldg1, is in use on the target: use force (-f) to take a free one",
    );
    let reply = hosts.migrate("ldg1", "ldg1", &["-f"]);
    assert_eq!(document_status(&reply).0, "success", "{reply}");
    assert!(
        reply.contains(
            "Console port 5000 of primary-vcc0 was in use on the target: ldg1 uses port 5001 there"
        ),
        "{reply}"
    );
    assert_eq!(
        field(&listed(&hosts.target, "ldg1").unwrap(), "cons"),
        "5001"
    );
    hosts.settled();
}

#[test]
fn wrong_credentials_or_an_untrusted_target_change_nothing() {
    let hosts = Hosts::start();
    guest(&hosts, "ldg1", "active");
    let before = bindings(&hosts.source);
    let reply = hosts.migrate_as("ldg1", "ldg1", &[], USER, "not-the-password");
    let (status, message) = document_status(&reply);
    assert_eq!(status, "failure");
    assert!(
        message
            .unwrap()
            .contains("refused the login of mover (wrong user name or password)"),
        "{reply}"
    );
    // Nobody trusted: refused before any password is sent (the target saw no login at all).
    let logins = |hosts: &Hosts| {
        let text = hosts.target.scrape();
        sample(&text, "ldmd_sasl_authentications_total{result=\"success\"}")
            + sample(
                &text,
                "ldmd_sasl_authentications_total{result=\"not-authorized\"}",
            )
    };
    // `ldmd trust list`: the pin the harness added is the target's certificate.
    let out = run_cli(&hosts.source.state_dir(), &["trust", "list"], None);
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let row: Vec<&str> = listing
        .lines()
        .find(|l| l.starts_with("target "))
        .unwrap_or_else(|| panic!("{listing}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[1].len(), 95, "{listing}");
    let (identity, _) =
        ldmd::server::certs::load_or_generate(None, &hosts.target.state_dir(), &[]).unwrap();
    assert_eq!(
        row[1],
        identity.fingerprint(),
        "not the target's: {listing}"
    );
    assert!(row[2..].join(" ").contains("localhost"), "{listing}");
    let seen = logins(&hosts);
    let out = run_cli(
        &hosts.source.state_dir(),
        &["trust", "remove", "target"],
        None,
    );
    assert!(out.status.success());
    let reply = hosts.migrate("ldg1", "ldg1", &[]);
    let (status, message) = document_status(&reply);
    assert_eq!(status, "failure");
    assert!(
        message
            .unwrap()
            .contains("no peer certificate is trusted: add the target's certificate with `ldmd trust add FILE`"),
        "{reply}"
    );
    assert_eq!(logins(&hosts), seen, "a login reached an untrusted target");
    // A certificate that is not the target's is no better.
    let stranger = tempfile::tempdir().unwrap();
    ldmd::server::certs::load_or_generate(None, stranger.path(), &["localhost".into()]).unwrap();
    let cert = stranger.path().join("tls-cert.pem");
    let out = run_cli(
        &hosts.source.state_dir(),
        &["trust", "add", cert.to_str().unwrap()],
        None,
    );
    assert!(out.status.success());
    let reply = hosts.migrate("ldg1", "ldg1", &[]);
    assert!(
        document_status(&reply)
            .1
            .unwrap()
            .contains("is not trusted"),
        "{reply}"
    );
    assert_eq!(bindings(&hosts.source), before);
    // Trusted again without a restart: it goes.
    hosts.trust_target();
    let reply = hosts.migrate("ldg1", "ldg1", &[]);
    assert_eq!(document_status(&reply).0, "success", "{reply}");
    hosts.settled();
}

#[test]
fn a_migration_in_progress_locks_its_domain_and_refuses_bind_and_stop_of_others() {
    let hosts = Hosts::paced(4.0);
    guest(&hosts, "ldg1", "active");
    guest(&hosts, "ldg2", "active");
    guest(&hosts, "ldg3", "inactive");
    let requester = {
        let document =
            migrate_document("ldg1", "ldg1", &hosts.target_address(), USER, PASSWORD, &[]);
        let mut client = hosts.source.unix();
        client.secure();
        std::thread::spawn(move || client.request(&document))
    };
    eventually(SETTLE, "the migration is under way", || {
        listed(&hosts.target, "ldg1").is_some()
    });
    let refusal = |args: &[&str]| {
        let out = ldm(&hosts.source, args);
        assert!(!out.status.success(), "{args:?} went through");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(refusal(&["stop-domain", "ldg2"]).contains("A migration of ldg1 to"));
    assert!(
        refusal(&["bind-domain", "ldg3"]).contains("bind and stop of other domains are refused")
    );
    assert!(refusal(&["remove-vcpu", "1", "ldg1"]).contains("A migration of ldg1"));
    // The receiving domain on the target is locked too, and the target will not cancel.
    let out = ldm(&hosts.target, &["set-vcpu", "1", "ldg1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is being migrated to this machine"));
    let out = ldm(&hosts.target, &["cancel-operation", "migration", "ldg1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cancel-operation migration is accepted only on the source"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Forced recovery is only for an in-doubt migration.
    let out = ldm(
        &hosts.source,
        &["cancel-operation", "-f", "migration", "ldg1"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not in doubt"));
    // Reads work throughout.
    ok(&hosts.source, &["list-bindings", "ldg2"]);
    let reply = requester.join().unwrap();
    assert_eq!(document_status(&reply).0, "success", "{reply}");
    // Over: the machine is the operator's again.
    ok(&hosts.source, &["stop-domain", "ldg2"]);
    ok(&hosts.source, &["bind-domain", "ldg3"]);
    hosts.settled();
}

#[test]
fn never_to_itself_nor_with_xmpp_off() {
    let hosts = Hosts::start_with(&Setup {
        source_config: "tcp_loopback_is_local = false\n",
        ..Setup::default()
    });
    guest(&hosts, "ldg1", "active");
    // To itself: the source trusts its own certificate and names its own address.
    let own = hosts.source.state_dir().join("tls-cert.pem");
    let out = run_cli(
        &hosts.source.state_dir(),
        &["trust", "add", own.to_str().unwrap(), "--name", "self"],
        None,
    );
    assert!(out.status.success());
    add_users(&hosts.source.state_dir(), &[("self", "write", "pw")]);
    let mut client = hosts.source.unix();
    client.secure();
    let reply = client.request(&migrate_document(
        "ldg1",
        "ldg1-copy",
        &hosts.source.xmpp.unwrap().to_string(),
        "self",
        "pw",
        &[],
    ));
    assert!(
        document_status(&reply)
            .1
            .unwrap()
            .contains("The domain cannot be migrated to the daemon it is on"),
        "{reply}"
    );
    assert!(listed(&hosts.source, "ldg1-copy").is_none());
    assert_eq!(
        field(&listed(&hosts.source, "ldg1").unwrap(), "flags"),
        "normal"
    );
    hosts.settled();

    let off = Daemon::start(&format!(
        "xmpp_enabled = false\n{}",
        migration_config(0.0, "")
    ));
    let mut client = off.unix();
    client.secure();
    client.request(&add_domain("ldg9"));
    let reply = client.request(&migrate_document(
        "ldg9",
        "ldg9",
        "127.0.0.1:1",
        USER,
        PASSWORD,
        &[],
    ));
    assert_eq!(
        document_status(&reply).1.as_deref(),
        Some("Migration is disabled because the XMPP interface is off (xmpp_enabled = false)")
    );
}

#[test]
fn concurrent_max_bounds_migrations_in_progress() {
    let hosts = Hosts::start_with(&Setup {
        pace: 4.0,
        source_migration: "concurrent_max = 1\n",
        ..Setup::default()
    });
    guest(&hosts, "ldg1", "active");
    guest(&hosts, "ldg2", "inactive");
    let requester = {
        let document =
            migrate_document("ldg1", "ldg1", &hosts.target_address(), USER, PASSWORD, &[]);
        let mut client = hosts.source.unix();
        client.secure();
        std::thread::spawn(move || client.request(&document))
    };
    eventually(SETTLE, "the first migration is under way", || {
        listed(&hosts.target, "ldg1").is_some()
    });
    let reply = hosts.migrate("ldg2", "ldg2", &[]);
    assert_eq!(
        document_status(&reply).1.as_deref(),
        Some(
            "A migration is in progress on this machine; at most 1 can run at once (migration.concurrent_max)"
        )
    );
    assert_eq!(document_status(&requester.join().unwrap()).0, "success");
    let reply = hosts.migrate("ldg2", "ldg2", &[]);
    assert_eq!(document_status(&reply).0, "success", "{reply}");
    hosts.settled();
}
