//! Migrations that go through: every domain state, with and without renaming, a dry run,
//! progress events, a cancel midway, and migrations side by side.

use std::time::Duration;

use super::harness::*;
use crate::support::*;

#[test]
fn an_inactive_domain_moves_with_its_identity_and_a_new_name() {
    let hosts = Hosts::start();
    guest(&hosts, "ldg1", "inactive");
    let before = identity(&hosts.source, "ldg1");
    let reply = hosts.migrate("ldg1", "ldg1-new", &[]);
    assert_eq!(document_status(&reply).0, "success", "{reply}");
    assert_eq!(listed(&hosts.source, "ldg1"), None);
    let moved = listed(&hosts.target, "ldg1-new").expect("on the target");
    assert_eq!(field(&moved, "state"), "inactive");
    assert_eq!(field(&moved, "flags"), "");
    assert_eq!(identity(&hosts.target, "ldg1-new"), before);
    hosts.settled();
}

#[test]
fn a_bound_domain_keeps_its_real_addresses_and_frees_the_source() {
    let hosts = Hosts::start();
    let free_before = free_memory(&hosts.source);
    guest(&hosts, "ldg1", "bound");
    let before = identity(&hosts.source, "ldg1");
    let addresses = real_addresses(&hosts.source, "ldg1");
    assert!(!addresses.is_empty());
    let reply = hosts.migrate("ldg1", "ldg1", &[]);
    assert_eq!(document_status(&reply).0, "success", "{reply}");
    let moved = listed(&hosts.target, "ldg1").expect("on the target");
    assert_eq!(field(&moved, "state"), "bound");
    assert_eq!(identity(&hosts.target, "ldg1"), before);
    assert_eq!(real_addresses(&hosts.target, "ldg1"), addresses);
    // Everything the domain held on the source is free again.
    assert_eq!(free_memory(&hosts.source), free_before);
    hosts.settled();
}

#[test]
fn an_active_domain_runs_on_the_target_and_events_report_its_progress() {
    let hosts = Hosts::start();
    guest(&hosts, "ldg1", "active");
    let mut watcher = hosts.source.unix();
    watcher.secure();
    watcher.request(
        "<LDM_interface version='1.0'><cmd><action>reg-domain-events</action><data version='3.0'/></cmd></LDM_interface>",
    );
    let before = identity(&hosts.source, "ldg1");
    let addresses = real_addresses(&hosts.source, "ldg1");
    let reply = hosts.migrate("ldg1", "ldg1-b", &[]);
    assert_eq!(document_status(&reply).0, "success", "{reply}");
    let moved = listed(&hosts.target, "ldg1-b").expect("on the target");
    assert_eq!(field(&moved, "state"), "active");
    assert_eq!(identity(&hosts.target, "ldg1-b"), before);
    assert_eq!(real_addresses(&hosts.target, "ldg1-b"), addresses);
    assert_eq!(listed(&hosts.source, "ldg1"), None);
    // Progress to the end, done, and the domain event of the migration itself (a Content
    // with no ldom_info).
    let events =
        watcher.read_until("<gprop:GenericProperty key='status'>done</gprop:GenericProperty>");
    assert!(
        events.contains("<gprop:GenericProperty key='progress'>100%</gprop:GenericProperty>"),
        "{events}"
    );
    let domain_event = watcher.read_until("</LDM_event>");
    let domain_event = domain_event + &watcher.read_until("</LDM_event>");
    assert!(
        domain_event.contains("<action>migrate-domain</action><data version='3.0'><Envelope><References/><Content xsi:type='ovf:VirtualSystem_Type' id='ldg1'/>"),
        "{domain_event}"
    );
    hosts.settled();
}

#[test]
fn a_dry_run_checks_both_sides_and_changes_nothing() {
    let hosts = Hosts::start();
    guest(&hosts, "ldg1", "bound");
    let source_before = bindings(&hosts.source);
    let target_before = bindings(&hosts.target);
    let reply = hosts.migrate("ldg1", "ldg1", &["-n"]);
    assert_eq!(document_status(&reply).0, "success", "{reply}");
    assert_eq!(bindings(&hosts.source), source_before);
    assert_eq!(bindings(&hosts.target), target_before);
    // A dry run that fails on the target says why, and still changes nothing.
    ok(&hosts.target, &["add-domain", "ldg1"]);
    let reply = hosts.migrate("ldg1", "ldg1", &["dry-run"]);
    let (status, message) = document_status(&reply);
    assert_eq!(status, "failure");
    assert_eq!(
        message.as_deref(),
        Some("The dry run failed: LDom ldg1 already exists on the target")
    );
    assert_eq!(bindings(&hosts.source), source_before);
    hosts.settled();
}

#[test]
fn a_cancel_midway_puts_the_domain_back_and_frees_the_target() {
    // 2G at 3 s per GiB: six seconds of transfer to cancel in.
    let hosts = Hosts::paced(3.0);
    guest(&hosts, "ldg1", "active");
    let requester = {
        let document =
            migrate_document("ldg1", "ldg1", &hosts.target_address(), USER, PASSWORD, &[]);
        let mut client = hosts.source.unix();
        client.secure();
        std::thread::spawn(move || client.request(&document))
    };
    eventually(SETTLE, "the migration is under way", || {
        listed(&hosts.source, "ldg1").is_some_and(|l| field(&l, "flags").contains("source"))
            && listed(&hosts.target, "ldg1").is_some_and(|l| field(&l, "flags") == "target")
    });
    // Reads work meanwhile; the domain itself cannot change.
    let refused = ldm(&hosts.source, &["set-vcpu", "2", "ldg1"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("A migration of ldg1 to"));
    ok(&hosts.source, &["cancel-operation", "migration", "ldg1"]);
    let reply = requester.join().unwrap();
    let (status, message) = document_status(&reply);
    assert_eq!(status, "failure");
    assert!(message.unwrap().contains("was cancelled"), "{reply}");
    let back = listed(&hosts.source, "ldg1").expect("back on the source");
    assert_eq!(
        (field(&back, "state"), field(&back, "flags")),
        ("active".into(), "normal".into())
    );
    eventually(SETTLE, "the reservation is released", || {
        listed(&hosts.target, "ldg1").is_none()
    });
    ok(&hosts.source, &["set-vcpu", "2", "ldg1"]);
    hosts.settled();
}

#[test]
fn migrations_of_different_domains_run_side_by_side() {
    let hosts = Hosts::start();
    for name in ["ldg1", "ldg2", "ldg3"] {
        guest(&hosts, name, "bound");
    }
    let threads: Vec<_> = ["ldg1", "ldg2", "ldg3"]
        .into_iter()
        .map(|name| {
            let document =
                migrate_document(name, name, &hosts.target_address(), USER, PASSWORD, &[]);
            let mut client = hosts.source.unix();
            client.secure();
            std::thread::spawn(move || client.request(&document))
        })
        .collect();
    for thread in threads {
        let reply = thread.join().unwrap();
        assert_eq!(document_status(&reply).0, "success", "{reply}");
    }
    for name in ["ldg1", "ldg2", "ldg3"] {
        assert_eq!(listed(&hosts.source, name), None);
        assert_eq!(
            field(&listed(&hosts.target, name).unwrap(), "state"),
            "bound"
        );
    }
    hosts.settled();
}

#[test]
fn a_dropped_requester_does_not_cancel() {
    let hosts = Hosts::paced(1.0);
    guest(&hosts, "ldg1", "active");
    {
        let mut client = hosts.source.unix();
        client.secure();
        client.send(&migrate_document(
            "ldg1",
            "ldg1",
            &hosts.target_address(),
            USER,
            PASSWORD,
            &[],
        ));
        std::thread::sleep(Duration::from_millis(300));
    }
    eventually(SETTLE, "the domain reaches the target", || {
        listed(&hosts.target, "ldg1").is_some_and(|l| field(&l, "flags") == "normal")
    });
    assert_eq!(listed(&hosts.source, "ldg1"), None);
    hosts.settled();
}
