//! The pure registry: operations per second, without transport or disk. Each iteration applies
//! one parsed document to a registry that already holds 500 domains, as the actor would.
//!
//! `cargo bench --bench registry`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ldmd::ldm::{Document, Role, parse_document};
use ldmd::registry::machine::{Machine, MachineConfig};
use ldmd::registry::run::Progress;
use ldmd::registry::{Registry, Settings};
use ldmd::xml::{Element, NamespaceScope};

fn document(action: &str, domain: &str, items: &str) -> Document {
    let xml = format!(
        "<LDM_interface version='1.3'><cmd><action>{action}</action><data version='3.0'><Envelope><References/><Content xsi:type='ovf:VirtualSystem_Type' id='{domain}'><Section xsi:type='ovf:ResourceAllocationSection_type'>{items}</Section></Content></Envelope></data></cmd></LDM_interface>"
    );
    parse_document(&Element::parse(&xml, &NamespaceScope::client()).unwrap())
}

fn apply(reg: &mut Registry, document: &Document) {
    let mut run = Registry::begin(document.clone(), Role::Write);
    let progress = reg.advance(&mut run, 0);
    assert!(matches!(progress, Progress::Done));
    black_box(progress);
    // The actor takes these after every batch; here after every document.
    black_box(reg.take_dirty().expect("records serialize"));
    black_box(reg.take_events());
}

fn populated() -> Registry {
    let machine = Machine::from_config(&MachineConfig::default()).unwrap();
    let mut reg = Registry::new(machine, Settings::default(), 7, 0).expect("registry");
    for i in 0..500 {
        apply(&mut reg, &document("add-domain", &format!("idle{i}"), ""));
    }
    reg
}

fn registry(c: &mut Criterion) {
    let mut group = c.benchmark_group("registry");
    group.throughput(Throughput::Elements(1));
    let cpu = "<Item><rasd:OtherResourceType>cpu</rasd:OtherResourceType><rasd:AllocationUnits>4</rasd:AllocationUnits></Item>";
    let memory = "<Item><rasd:OtherResourceType>memory</rasd:OtherResourceType><rasd:AllocationUnits>2G</rasd:AllocationUnits></Item>";
    let cycle = [
        document("add-domain", "bench", ""),
        document("set-vcpu", "bench", cpu),
        document("set-memory", "bench", memory),
        document("bind-domain", "bench", ""),
        document("start-domain", "bench", ""),
        document("stop-domain", "bench", ""),
        document("unbind-domain", "bench", ""),
        document("remove-domain", "bench", ""),
    ];
    let mut reg = populated();
    let mut i = 0;
    group.bench_function("lifecycle_op", |b| {
        b.iter(|| {
            apply(&mut reg, &cycle[i % cycle.len()]);
            i += 1;
        })
    });
    let list = parse_document(
        &Element::parse(
            "<LDM_interface version='1.3'><cmd><action>list-domain</action><data version='3.0'/></cmd></LDM_interface>",
            &NamespaceScope::client(),
        )
        .unwrap(),
    );
    let mut reg = populated();
    group.bench_function("list_domain_501", |b| b.iter(|| apply(&mut reg, &list)));
    group.finish();
}

criterion_group!(benches, registry);
criterion_main!(benches);
