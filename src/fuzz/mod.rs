//! The bodies of the fuzz targets. Each file of `fuzz/fuzz_targets/` is one line that calls one
//! of these; `tests/fuzz_corpus.rs` calls them on every file of the seed corpus, so the corpus
//! (and every crash turned into a corpus file) is replayed by an ordinary stable `cargo test`.
//!
//! A body panics exactly when it finds a defect: a panic inside the code under test, or a
//! broken invariant checked here. Each invariant is stated where it is checked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use crate::ldm::Role;
use crate::testing::{HEADER, Pair};
use crate::xml::{Element, FrameError, FrameKind, Framer, FramerLimits, NamespaceScope};
use crate::xmpp::connection::Event;
use crate::xmpp::stream::Identity;

mod journal;
mod ldm_document;
mod migration_offer;

pub use journal::journal;
pub use ldm_document::ldm_document;
pub use migration_offer::migration_offer;

/// Splits `data` into control bytes and the input they steer.
fn split_control(data: &[u8], control: usize) -> (&[u8], &[u8]) {
    data.split_at(control.min(data.len()))
}

/// Chunk lengths for `input`, cycling through `control` (each 1..=256; all at once without it).
fn chunks<'a>(input: &'a [u8], control: &[u8]) -> Vec<&'a [u8]> {
    if control.is_empty() {
        return vec![input];
    }
    let mut out = Vec::new();
    let mut rest = input;
    let mut n = 0;
    while !rest.is_empty() {
        let len = (usize::from(control[n % control.len()]) + 1).min(rest.len());
        let (chunk, tail) = rest.split_at(len);
        out.push(chunk);
        rest = tail;
        n += 1;
    }
    out
}

/// What framing a whole input gives: every frame's kind and bytes, then the error or nothing.
type Framed = (Vec<(FrameKind, Vec<u8>)>, Option<FrameError>);

fn frame_all(pieces: &[&[u8]], limits: FramerLimits) -> Framed {
    let mut framer = Framer::new(limits);
    framer.set_authenticated(true);
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match framer.next(&buf) {
                Ok(Some(frame)) => {
                    assert!(frame.start <= frame.end && frame.end <= buf.len());
                    if frame.kind != FrameKind::Whitespace {
                        frames.push((frame.kind, buf[frame.start..frame.end].to_vec()));
                    }
                    buf.drain(..frame.end);
                    if frame.kind == FrameKind::StreamEnd {
                        return (frames, None);
                    }
                }
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

/// The framer, split at arbitrary points, against itself and against quick-xml.
///
/// Invariants: the frames and the error do not depend on where the input was split; every
/// element the framer reports is, for quick-xml with end-name checks, exactly one balanced
/// element with no markup XMPP forbids; every header is one start tag; and the element tree
/// built from a frame never panics.
pub fn framer(data: &[u8]) {
    let (control, input) = split_control(data, 4);
    let limits = FramerLimits {
        stanza_bytes_max: 64 * 1024,
        preauth_stanza_bytes_max: 64 * 1024,
        ..FramerLimits::default()
    };
    let whole = frame_all(&[input], limits);
    let split = frame_all(&chunks(input, control), limits);
    assert_eq!(whole, split, "framing depends on where reads split");
    for (kind, bytes) in &whole.0 {
        let text = std::str::from_utf8(bytes).expect("the framer reports only UTF-8");
        match kind {
            FrameKind::Element => {
                quick_xml_reads_one_element(text);
                let _ = Element::parse(text, &NamespaceScope::client());
            }
            FrameKind::Header => {
                let mut reader = quick_xml::Reader::from_str(text);
                let event = reader.read_event();
                assert!(
                    matches!(event, Ok(quick_xml::events::Event::Start(_))),
                    "header frame {text:?} is not a start tag for quick-xml: {event:?}"
                );
                let _ = crate::xml::HeaderTag::parse(text);
            }
            FrameKind::StreamEnd | FrameKind::Whitespace => {}
        }
    }
}

/// The oracle: quick-xml, checking end names, reads `text` as one balanced element.
fn quick_xml_reads_one_element(text: &str) {
    use quick_xml::events::Event as X;
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut depth: i64 = 0;
    let mut closed = 0;
    loop {
        match reader.read_event() {
            Ok(X::Start(_)) => depth += 1,
            Ok(X::End(_)) => {
                depth -= 1;
                assert!(depth >= 0, "{text:?}: more end tags than start tags");
                if depth == 0 {
                    closed += 1;
                }
            }
            Ok(X::Empty(_)) if depth == 0 => closed += 1,
            Ok(X::Empty(_) | X::Text(_) | X::CData(_) | X::GeneralRef(_)) => {}
            Ok(X::Eof) => break,
            Ok(other) => panic!("{text:?}: the framer let through {other:?}"),
            Err(e) => panic!("{text:?}: framed, but quick-xml says {e}"),
        }
    }
    assert_eq!(depth, 0, "{text:?}: unbalanced");
    assert_eq!(closed, 1, "{text:?}: not exactly one element");
}

/// The whole pure connection, fed arbitrary chunks at one of four points of its life: before
/// TLS, after TLS, after SASL, and as a local peer after TLS.
///
/// Invariants: nothing panics; every byte the server writes is UTF-8 text once decrypted; a
/// password check or document handed out is answered and the connection goes on; and a remote
/// connection never wedges: two hours later it has ended (authentication deadline or idle
/// timeout), whatever it was sent.
pub fn connection(data: &[u8]) {
    let (control, input) = split_control(data, 3);
    let scenario = control.first().copied().unwrap_or(0) % 4;
    let mut pair = match scenario {
        3 => Pair::local(Role::Write),
        _ => Pair::remote(),
    };
    match scenario {
        1 | 3 => {
            pair.secure();
            pair.send(HEADER);
        }
        2 => pair.login(),
        _ => {}
    }
    pair.recv();
    for chunk in chunks(input, control.get(1..).unwrap_or_default()) {
        if pair.server.is_finished() {
            break;
        }
        if scenario == 0 {
            pair.deliver(chunk);
        } else {
            pair.send_bytes(chunk);
        }
        answer_work(&mut pair);
        pair.recv();
    }
    if scenario != 3 {
        pair.advance(Duration::from_secs(2 * 3600));
        answer_work(&mut pair);
        pair.recv();
        assert!(
            pair.server.is_finished(),
            "a remote connection is still open two hours later"
        );
    }
}

/// Answers every password check (alternately yes and no) and every document.
fn answer_work(pair: &mut Pair) {
    for _ in 0..64 {
        let events = pair.events();
        if events.is_empty() {
            return;
        }
        for event in events {
            match event {
                Event::Verify(credentials) => {
                    let verdict = if credentials.password.len() % 2 == 0 {
                        Ok(Identity {
                            user: credentials.authcid.clone(),
                            role: Role::Write,
                            credential: 1,
                            generation: 0,
                        })
                    } else {
                        Err(crate::xmpp::SaslFailure::NotAuthorized)
                    };
                    pair.answer_auth(verdict);
                }
                Event::Document(document, role) => {
                    let response = crate::ldm::handler::respond_to_each_cmd(&document, |_| {
                        format!("refused for the fuzzer ({role:?})")
                    });
                    pair.server.handle_response(pair.now, &response);
                }
                _ => {}
            }
        }
    }
}

/// SASL PLAIN messages. Invariants: nothing panics; what parses has three fields within the
/// RFC 4616 bounds and survives a round trip through base64.
pub fn sasl_plain(data: &[u8]) {
    use base64::Engine as _;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(credentials) = crate::xmpp::sasl::parse_plain(text) else {
        return;
    };
    let max = crate::xmpp::sasl::FIELD_BYTES_MAX;
    assert!(!credentials.authcid.is_empty() && credentials.authcid.len() <= max);
    assert!(!credentials.password.is_empty() && credentials.password.len() <= max);
    let message = format!(
        "{}\0{}\0{}",
        credentials.authzid.as_deref().unwrap_or_default(),
        credentials.authcid,
        &*credentials.password
    );
    let again = base64::engine::general_purpose::STANDARD.encode(message);
    let reparsed = crate::xmpp::sasl::parse_plain(&again).expect("a round trip parses");
    assert_eq!(reparsed.authcid, credentials.authcid);
    assert_eq!(*reparsed.password, *credentials.password);
}

/// The config loader. Invariant: any text gives a configuration or an error naming what is
/// wrong, never a panic; a configuration's limits satisfy their relations.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = crate::config::Config::from_toml(text, &crate::config::Overrides::default())
    {
        config
            .limits
            .check_relations()
            .expect("a loaded config is consistent");
        assert!(!config.domains.is_empty());
    }
}

/// The registry, fed a sequence of documents decoded from `data` (see [`walk_step`]): every
/// action, on a few domains, with extreme values (0, 1, max−1, `u32::MAX`, `u64::MAX`, sizes
/// near 2^64, names at and past their limits).
///
/// Invariants after each document: nothing panicked; a memory DR it started is finished by a
/// modelled guest; every CPU, crypto unit and byte of memory is either free or held by exactly
/// one domain; and every few steps, the pools rebuilt from the stored records equal the live
/// ones (so nothing refused left a trace and no record claims twice).
pub fn registry(data: &[u8]) {
    registry_walk(data.chunks(6));
}

/// The walk behind [`registry`]: one document per step of six bytes.
pub fn registry_walk<'s>(steps: impl Iterator<Item = &'s [u8]>) {
    use crate::registry::machine::{Machine, MachineConfig};
    use crate::registry::{Registry, Settings};
    let machine = Machine::from_config(&MachineConfig::default()).expect("default machine");
    let mut reg = Registry::new(machine, Settings::default(), 7, 1_000).expect("registry");
    for (n, step) in steps.enumerate() {
        let document = walk_step(step, &reg);
        // A few documents come from a read-only peer.
        let role = if step.get(1).is_some_and(|b| *b >= 0xf0) {
            Role::Read
        } else {
            Role::Write
        };
        let mut run = Registry::begin(document, role);
        let mut progress = reg.advance(&mut run, 2_000);
        while let crate::registry::run::Progress::Waiting(operation) = progress {
            // The modelled guest moves part of the memory asked for.
            let done = step.get(5).copied().map_or(0, u64::from) << 28;
            let (_, outcome) = crate::registry::actions::finish_memdr(&mut reg, operation, done)
                .expect("a waiting document's memory DR exists");
            Registry::resume(&mut run, outcome);
            progress = reg.advance(&mut run, 2_000);
        }
        let _ = run.into_response();
        check_conservation(&reg);
        if n % 16 == 15 {
            check_rebuild(&mut reg);
        }
    }
    check_rebuild(&mut reg);
}

/// Free + held = the machine, for CPUs, crypto units and memory.
fn check_conservation(reg: &crate::registry::Registry) {
    let machine = reg.machine();
    let pools = reg.pools();
    let bound = |f: &dyn Fn(&crate::registry::model::Binding) -> usize| -> usize {
        reg.domains()
            .filter_map(|d| d.binding.as_ref())
            .map(f)
            .sum()
    };
    assert_eq!(
        pools.cpus.free_count() + bound(&|b| b.cpus.len()),
        machine.threads() as usize,
        "CPUs lost or doubled"
    );
    assert_eq!(
        pools.maus.free_count() + bound(&|b| b.maus.len()),
        machine.crypto_units as usize,
        "crypto units lost or doubled"
    );
    let held: u64 = reg
        .domains()
        .map(|d| {
            let bound = d.binding.as_ref().map_or(0, |b| b.memory_bytes());
            let reconf: u64 = d
                .reconf
                .iter()
                .flat_map(|r| &r.reserved)
                .map(|b| b.size)
                .sum();
            let memdr: u64 = d
                .memdr
                .iter()
                .flat_map(|m| &m.reserved)
                .map(|b| b.size)
                .sum();
            bound + reconf + memdr
        })
        .sum();
    assert_eq!(
        pools.memory.free_bytes() + held,
        machine.memory_bytes - machine.hypervisor_bytes,
        "memory lost or doubled"
    );
}

/// The pools and domains rebuilt from the records equal the live ones.
fn check_rebuild(reg: &mut crate::registry::Registry) {
    use crate::registry::Registry;
    let records: std::collections::BTreeMap<_, _> =
        reg.records().expect("records").into_iter().collect();
    let records = crate::registry::store::records_of(&records).expect("records decode");
    let (rebuilt, _) = Registry::restore_keeping(
        reg.machine().clone(),
        reg.settings().clone(),
        records,
        |_| true,
    )
    .expect("the records rebuild a registry");
    assert_eq!(rebuilt.pools(), reg.pools(), "rebuilt pools differ");
    assert_eq!(
        rebuilt.domains().collect::<Vec<_>>(),
        reg.domains().collect::<Vec<_>>()
    );
    let _ = reg.take_dirty();
    let _ = reg.take_events();
    let _ = reg.take_effects();
}

/// Values the walk draws from: the extremes of every type a request carries.
const NUMBERS: [&str; 10] = [
    "0",
    "1",
    "2",
    "8",
    "4294967294",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "-1",
    "x",
];
const SIZES: [&str; 10] = [
    "0",
    "4M",
    "256M",
    "1G",
    "4G",
    "511G",
    "64T",
    "18446744073709551615",
    "18446744073709551615G",
    "17179869183G",
];
/// Guests mostly: a change to the control domain starts a delayed reconfiguration that locks
/// every other domain until `stop-domain -r primary`.
const DOMAINS: [&str; 10] = [
    "d0",
    "d1",
    "d2",
    "d3",
    "d0",
    "d1",
    "d2",
    "primary",
    "d3",
    "no-such-domain",
];
const SERVICES: [&str; 6] = [
    "primary-vds0",
    "primary-vsw0",
    "primary-vcc0",
    "d0-vds0",
    "d1-vsw0",
    "d2-vcc0",
];
const OPTIONS: [&str; 6] = ["", "-f", "all", "auto-adj", "memdr", "-r"];

/// One document from six bytes: the action, the domain, the option, and three values. Most
/// documents name a domain that exists: a step on a missing guest usually creates it, and one
/// taken while the control domain's delayed reconfiguration locks the others often reboots it.
fn walk_step(step: &[u8], reg: &crate::registry::Registry) -> crate::ldm::Document {
    use crate::ldm::action::{Action, ActionName};
    use crate::ldm::document::{Cmd, Content, Data, Document, Envelope, Section, SectionKind};
    let byte = |i: usize| usize::from(step.get(i).copied().unwrap_or(0));
    let mut action = Action::ALL[byte(0) % Action::ALL.len()];
    let mut domain = DOMAINS[byte(1) % DOMAINS.len()];
    let mut option = OPTIONS[byte(2) % OPTIONS.len()];
    let locked = reg
        .domain(crate::registry::CONTROL_DOMAIN)
        .is_some_and(|p| p.reconf.is_some());
    if locked && byte(5) % 2 == 0 {
        (action, domain, option) = (Action::StopDomain, "primary", "-r");
    } else if reg.domain(domain).is_none() && domain != "no-such-domain" && byte(5) % 4 != 0 {
        action = Action::AddDomain;
    }
    let (a, b) = (byte(3), byte(4));
    let item = walk_item(action, a, b);
    let section = Section {
        kind: SectionKind::ResourceAllocation,
        items: item.into_iter().collect(),
    };
    // SP configurations are named in the Envelope; services sometimes are too (§4).
    let in_envelope = section.items.first().is_some_and(|i| {
        i.resource_type == "spconfig"
            || (a % 2 == 0 && ["vds", "vds_volume", "vsw", "vcc"].contains(&&*i.resource_type))
    });
    let (contents, sections) = if in_envelope {
        (Vec::new(), vec![section])
    } else {
        let content = Content {
            id: domain.into(),
            sections: vec![section],
        };
        (vec![content], Vec::new())
    };
    Document {
        version: Some("1.3".into()),
        cmds: vec![Cmd {
            action: Some(ActionName::Known(action)),
            options: (!option.is_empty())
                .then(|| option.to_owned())
                .into_iter()
                .collect(),
            arguments: Vec::new(),
            data: vec![Data {
                version: Some("3.0".into()),
                envelope: Some(Envelope { contents, sections }),
            }],
            malformed: None,
        }],
        malformed: None,
    }
}

/// The Item an action reads, with values drawn by `a` and `b`.
fn walk_item(action: crate::ldm::action::Action, a: usize, b: usize) -> Option<crate::ldm::Item> {
    use crate::ldm::action::Action as A;
    use crate::ldm::document::{Item, Property};
    let prop = |key: &str, value: &str| Property {
        key: key.into(),
        value: value.into(),
    };
    let service = SERVICES[a % SERVICES.len()];
    let name = match b % 5 {
        0 => "x".to_owned(),
        1 => "y".to_owned(),
        2 => "a".repeat(256),
        3 => "a".repeat(257),
        _ => "bad name".to_owned(),
    };
    let (resource, units, properties) = match action {
        A::AddVcpu | A::SetVcpu | A::RemoveVcpu => (
            "cpu",
            Some(NUMBERS[a % NUMBERS.len()]),
            if b.is_multiple_of(3) {
                vec![prop("wcore", NUMBERS[b % NUMBERS.len()])]
            } else {
                Vec::new()
            },
        ),
        A::AddMau | A::SetMau | A::RemoveMau => ("mau", Some(NUMBERS[a % NUMBERS.len()]), vec![]),
        A::AddMemory | A::SetMemory | A::RemoveMemory => {
            ("memory", Some(SIZES[a % SIZES.len()]), vec![])
        }
        A::AddDomain | A::SetDomain => (
            "ldom_info",
            None,
            match b % 4 {
                0 => vec![prop("failure-policy", "stop"), prop("master", "d0,d1")],
                1 => vec![prop("hostid", "0xffffffff")],
                2 => vec![prop("hostid", "0x1ffffffff")],
                _ => vec![prop("extended-mapin-space", "on")],
            },
        ),
        A::AddVdiskserver | A::RemoveVdiskserver => {
            ("vds", None, vec![prop("service_name", service)])
        }
        A::AddVdiskserverdevice | A::RemoveVdiskserverdevice => (
            "vds_volume",
            None,
            vec![
                prop("service_name", service),
                prop("vol_name", &name),
                prop("block_dev", "/dev/zvol/dsk/v"),
            ],
        ),
        A::AddVdisk | A::RemoveVdisk => (
            "disk",
            None,
            vec![
                prop("vdisk_name", &name),
                prop("service_name", service),
                prop("vol_name", "x"),
                prop("timeout", NUMBERS[b % NUMBERS.len()]),
            ],
        ),
        A::AddVswitch | A::SetVswitch | A::RemoveVswitch => (
            "vsw",
            None,
            vec![
                prop("service_name", service),
                prop("mtu", NUMBERS[b % NUMBERS.len()]),
                prop("pvid", NUMBERS[a % NUMBERS.len()]),
            ],
        ),
        A::AddVnet | A::SetVnet | A::RemoveVnet => (
            "network",
            None,
            vec![
                prop("vnet_name", &name),
                prop("service_name", service),
                prop("vid", "1,2,4094,4095"),
            ],
        ),
        A::AddVconscon | A::SetVconscon | A::RemoveVconscon => (
            "vcc",
            None,
            vec![
                prop("service_name", service),
                prop("min_port", NUMBERS[a % NUMBERS.len()]),
                prop("max_port", NUMBERS[b % NUMBERS.len()]),
            ],
        ),
        A::SetVconsole => (
            "console",
            None,
            vec![
                prop("port", NUMBERS[a % NUMBERS.len()]),
                prop("group", &name),
            ],
        ),
        A::AddVariable | A::SetVariable | A::RemoveVariable => (
            "var",
            None,
            vec![prop("name", &name), prop("value", &"v".repeat(b * 8))],
        ),
        A::AddIo | A::RemoveIo => (
            "physio_device",
            None,
            vec![prop(
                "name",
                ["pci_1", "pci@340", "/SYS/MB/PCIE3", "nope"][a % 4],
            )],
        ),
        A::AddSpconfig | A::SetSpconfig | A::RemoveSpconfig => {
            ("spconfig", None, vec![prop("spconfig_name", &name)])
        }
        _ => return None,
    };
    Some(Item {
        resource_type: resource.into(),
        allocation_units: units.map(str::to_owned),
        properties,
        ..Item::default()
    })
}
