//! The hot paths of durability and reads off the commit path, without transport or disk:
//!
//! - `journal_frame_30`: encoding one journal frame of a batch of 30 domain records (the
//!   `write` scenario's typical batch), CRC included;
//! - `replica_501`: the copy of a registry holding 501 domains that the registry thread makes
//!   for an I/O thread after a batch (the cost of keeping reads off the commit path);
//! - `replica_list_domain_1`: a `list-domain` of one domain answered from a replica, as an I/O
//!   thread answers it;
//! - `fan_out_event_10000`: writing one `LDM_event` and queueing it for 10,000 subscribers (the
//!   router's share of a fan-out; each stream then encrypts and sends it).
//!
//! `cargo bench --bench commit_path`

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ldmd::ldm::event::{Event, EventClass};
use ldmd::ldm::{Document, Role, parse_document};
use ldmd::registry::host_load::HostLoad;
use ldmd::registry::journal::encode_frame;
use ldmd::registry::machine::{Machine, MachineConfig};
use ldmd::registry::replica::{ReadPath, Replica};
use ldmd::registry::run::Progress;
use ldmd::registry::state::Key;
use ldmd::registry::{Registry, Settings};
use ldmd::xml::{Element, NamespaceScope};

fn document(action: &str, domain: &str) -> Document {
    let xml = format!(
        "<LDM_interface version='1.3'><cmd><action>{action}</action><data version='3.0'><Envelope><References/><Content xsi:type='ovf:VirtualSystem_Type' id='{domain}'><Section xsi:type='ovf:ResourceAllocationSection_type'/></Content></Envelope></data></cmd></LDM_interface>"
    );
    parse_document(&Element::parse(&xml, &NamespaceScope::client()).unwrap())
}

fn populated() -> Registry {
    let machine = Machine::from_config(&MachineConfig::default()).unwrap();
    let mut reg = Registry::new(machine, Settings::default(), 7, 0).expect("registry");
    for i in 0..500 {
        let mut run = Registry::begin(document("add-domain", &format!("idle{i}")), Role::Write);
        assert_eq!(reg.advance(&mut run, 0), Progress::Done);
    }
    reg.take_events();
    reg
}

fn commit_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit_path");
    group.throughput(Throughput::Elements(1));
    let reg = populated();
    let records = reg.records().expect("records serialize");
    let batch: Vec<_> = records
        .into_iter()
        .filter(|(key, _)| matches!(key, Key::Domain(_)))
        .take(30)
        .map(|(key, value)| (key, Some(value)))
        .collect();
    let mut frame = Vec::new();
    group.bench_function("journal_frame_30", |b| {
        b.iter(|| {
            frame.clear();
            encode_frame(7, black_box(&batch), &mut frame);
            black_box(frame.len())
        })
    });

    let host_load = HostLoad::unmeasured();
    group.bench_function("replica_501", |b| {
        b.iter(|| black_box(Replica::new(1, &reg, host_load.clone())))
    });

    let path = ReadPath::new(2, 64 << 20);
    let mut replica = Replica::new(1, &reg, host_load.clone());
    let unwritten = Arc::new(AtomicUsize::new(0));
    let list = document("list-domain", "idle42");
    group.bench_function("replica_list_domain_1", |b| {
        b.iter(|| {
            let answer = replica.answer(&path, list.clone(), Role::Read, &unwritten, 0);
            black_box(answer)
        })
    });

    let data = list.cmds[0].data[0].clone();
    let mut inboxes: Vec<VecDeque<Arc<Event>>> = (0..10_000).map(|_| VecDeque::new()).collect();
    group.bench_function("fan_out_event_10000", |b| {
        b.iter(|| {
            let event = Arc::new(Event::new(EventClass::Domain, "add-domain", &data));
            for inbox in &mut inboxes {
                inbox.push_back(event.clone());
            }
            for inbox in &mut inboxes {
                black_box(inbox.pop_front());
            }
        })
    });
}

criterion_group!(benches, commit_path);
criterion_main!(benches);
