//! LDM documents: parse and build, in MB/s. Criterion reports the bytes per second; documents
//! per second are the reciprocal of the time it reports per iteration (one document each).
//!
//! - `ldm_parse`: a framed `LDM_interface` element to a [`Document`], as a connection does per
//!   request: the quick-xml tree ([`Element::parse`]) and then [`parse_document`]. Sizes from a
//!   bare list-domain to an add-domain of 64 fully equipped domains, and 100 cmds in one document.
//! - `ldm_build`: a list-domain reply for 1, 50 and 500 domains written with [`write_response`]
//!   (the [`Response`] is built by the registry outside the timed loop; `cargo bench --bench
//!   registry` times the listing itself), and `LDM_event` documents as the registry writes
//!   them ([`Event::new`]) for a resource and a domain event.
//!
//! `cargo bench --bench ldm`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ldmd::ldm::event::{Event, EventClass};
use ldmd::ldm::{
    Content, Data, Document, Envelope, Item, Response, Role, Section, SectionKind, Status,
    parse_document, write_response,
};
use ldmd::registry::machine::{Machine, MachineConfig};
use ldmd::registry::run::Progress;
use ldmd::registry::{Registry, Settings};
use ldmd::xml::{Element, NamespaceScope};

/// Domains in the large add-domain document.
const ADD_DOMAIN_CONTENTS: usize = 64;
/// Cmds in the many-cmds document.
const MANY_CMDS: usize = 100;
/// Domains listed by the list-domain replies, the control domain included.
const LISTED_DOMAINS: [usize; 3] = [1, 50, 500];

/// Prefixes left undeclared, as most real requests send them (ldm-xml-interface.md §2).
fn request(cmds: &str) -> String {
    format!("<LDM_interface version='1.3'>{cmds}</LDM_interface>")
}

fn cmd(action: &str, contents: &str) -> String {
    format!(
        "<cmd><action>{action}</action><data version='3.0'><Envelope><References/>{contents}</Envelope></data></cmd>"
    )
}

fn content(domain: &str, items: &str) -> String {
    format!(
        "<Content xsi:type='ovf:VirtualSystem_Type' id='{domain}'><Section xsi:type='ovf:ResourceAllocationSection_type'>{items}</Section></Content>"
    )
}

fn item(resource: &str, units: Option<&str>, properties: &[(&str, &str)]) -> String {
    let mut s = format!("<Item><rasd:OtherResourceType>{resource}</rasd:OtherResourceType>");
    if let Some(units) = units {
        s += &format!("<rasd:AllocationUnits>{units}</rasd:AllocationUnits>");
    }
    for (key, value) in properties {
        s += &format!("<gprop:GenericProperty key='{key}'>{value}</gprop:GenericProperty>");
    }
    s + "</Item>"
}

/// A domain as an operator's add-domain creates it in one go: its settings, CPUs, crypto,
/// memory, two networks, two disks, a console and a variable.
fn equipped_domain(name: &str) -> String {
    let items = [
        item(
            "ldom_info",
            None,
            &[("failure-policy", "reset"), ("master", "primary")],
        ),
        item("cpu", Some("8"), &[("wcore", "0")]),
        item("mau", Some("1"), &[]),
        item("memory", Some("16G"), &[]),
        item(
            "network",
            None,
            &[("vnet_name", "vnet0"), ("service_name", "primary-vsw0")],
        ),
        item(
            "network",
            None,
            &[
                ("vnet_name", "vnet1"),
                ("service_name", "primary-vsw1"),
                ("pvid", "12"),
            ],
        ),
        item(
            "disk",
            None,
            &[
                ("vdisk_name", "root"),
                ("service_name", "primary-vds0"),
                ("vol_name", &format!("{name}-root")),
            ],
        ),
        item(
            "disk",
            None,
            &[
                ("vdisk_name", "data"),
                ("service_name", "primary-vds0"),
                ("vol_name", &format!("{name}-data")),
                ("timeout", "30"),
            ],
        ),
        item("console", None, &[("port", "5000"), ("group", name)]),
        item("var", None, &[("name", "auto-boot?"), ("value", "true")]),
    ];
    content(name, &items.concat())
}

/// The request documents parsed, smallest first: 105, 441, 33,735 and 144,104 bytes.
fn requests() -> Vec<(&'static str, String)> {
    let add_vcpu = cmd(
        "add-vcpu",
        &content("ldg1", &item("cpu", Some("8"), &[("wcore", "0")])),
    );
    let list_domain = "<cmd><action>list-domain</action><data version='3.0'/></cmd>".to_owned();
    let many_domains = (0..ADD_DOMAIN_CONTENTS)
        .map(|i| equipped_domain(&format!("ldg{i}")))
        .collect::<String>();
    let many_cmds = (0..MANY_CMDS)
        .map(|i| {
            cmd(
                "set-vcpu",
                &content(&format!("ldg{i}"), &item("cpu", Some("4"), &[])),
            )
        })
        .collect::<String>();
    vec![
        ("list_domain", request(&list_domain)),
        ("add_vcpu", request(&add_vcpu)),
        ("set_vcpu_x100_cmds", request(&many_cmds)),
        (
            "add_domain_x64_domains",
            request(&cmd("add-domain", &many_domains)),
        ),
    ]
}

fn parse(text: &str, scope: &NamespaceScope) -> Document {
    let root = Element::parse(text, scope).expect("well-formed request");
    parse_document(&root)
}

fn ldm_parse(c: &mut Criterion) {
    let scope = NamespaceScope::client();
    let mut group = c.benchmark_group("ldm_parse");
    for (name, text) in requests() {
        let document = parse(&text, &scope);
        assert!(document.malformed.is_none(), "{name}");
        assert!(
            document.cmds.iter().all(|c| c.malformed.is_none()),
            "{name}"
        );
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &text, |b, text| {
            b.iter(|| parse(black_box(text), &scope))
        });
    }
    group.finish();
}

/// Runs one request against the registry and returns its reply.
fn answer(reg: &mut Registry, text: &str) -> Response {
    let document = parse(text, &NamespaceScope::client());
    let mut run = Registry::begin(document, Role::Write);
    match reg.advance(&mut run, 0) {
        Progress::Done => run.into_response().0,
        Progress::Waiting(_) => panic!("a long operation in a listing"),
    }
}

/// The list-domain reply of a registry holding `domains` domains (the control domain and
/// `domains - 1` guests with CPUs and memory).
fn list_domain_reply(domains: usize) -> Response {
    let machine = Machine::from_config(&MachineConfig::default()).expect("machine");
    let mut reg = Registry::new(machine, Settings::default(), 7, 0).expect("registry");
    let items = item("cpu", Some("4"), &[]) + &item("memory", Some("2G"), &[]);
    for i in 1..domains {
        let add = request(&cmd("add-domain", &content(&format!("ldg{i}"), &items)));
        assert_eq!(answer(&mut reg, &add).status(), Status::Success);
    }
    let response = answer(
        &mut reg,
        &request("<cmd><action>list-domain</action><data version='3.0'/></cmd>"),
    );
    assert_eq!(response.status(), Status::Success);
    response
}

/// The event data the registry publishes: the request's Content, or only the domain's name
/// for a domain event.
fn event_data(domain: &str, items: Vec<Item>) -> Data {
    let sections = match items.is_empty() {
        true => Vec::new(),
        false => vec![Section {
            kind: SectionKind::ResourceAllocation,
            items,
        }],
    };
    Data {
        version: Some("3.0".into()),
        envelope: Some(Envelope {
            contents: vec![Content {
                id: domain.into(),
                sections,
            }],
            sections: Vec::new(),
        }),
    }
}

fn ldm_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("ldm_build");
    let mut out = Vec::new();
    for domains in LISTED_DOMAINS {
        let response = list_domain_reply(domains);
        out.clear();
        write_response(&mut out, &response);
        group.throughput(Throughput::Bytes(out.len() as u64));
        let id = BenchmarkId::new("list_domain_reply", format!("{domains}_domains"));
        group.bench_with_input(id, &response, |b, response| {
            b.iter(|| {
                out.clear();
                write_response(&mut out, black_box(response));
                black_box(out.len())
            })
        });
    }
    let cpu = Item {
        resource_type: "cpu".into(),
        allocation_units: Some("8".into()),
        ..Item::default()
    };
    let events = [
        (
            "resource_add_vcpu",
            EventClass::Resource,
            "add-vcpu",
            event_data("ldg1", vec![cpu]),
        ),
        (
            "domain_start",
            EventClass::Domain,
            "start-domain",
            event_data("ldg1", Vec::new()),
        ),
    ];
    for (name, class, action, data) in &events {
        let bytes = Event::new(*class, action, data).document.len();
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(BenchmarkId::new("event", name), |b| {
            b.iter(|| Event::new(*class, black_box(action), black_box(data)))
        });
    }
    group.finish();
}

criterion_group!(benches, ldm_parse, ldm_build);
criterion_main!(benches);
