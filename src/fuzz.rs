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
