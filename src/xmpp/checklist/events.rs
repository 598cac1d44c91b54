//! LDM events on a subscribed stream (ldm-xml-interface.md §1.2 step 4, §5). Which streams
//! subscribed is the shell's business; here, what a stream does with an event it is handed.

use super::*;
use crate::ldm::Response;
use crate::ldm::document::Data;
use crate::ldm::event::{Event as LdmEvent, EventClass};

const LEGACY_HEADER: &str =
    "<?xml version='1.0'?><stream:stream xml:lang=\"en\" version=\"1.0\" id=\"xmpp\">";
const LIST: &str = "<LDM_interface version='1.0'><cmd><action>list-domain</action><data version='3.0'/></cmd></LDM_interface>";

fn event() -> LdmEvent {
    LdmEvent::new(EventClass::Domain, "add-domain", &Data::default())
}

fn document() -> String {
    String::from_utf8(event().document.to_vec()).unwrap()
}

/// Hands the event to the stream; true if it was written.
fn publish(pair: &mut Pair) -> bool {
    pair.server.handle_event(pair.now, &event().document)
}

/// The legacy local client up to its post-TLS features (ldm-xml-interface.md §1.2).
fn legacy_ready() -> Pair {
    let mut pair = Pair::local(Role::Read);
    pair.send(LEGACY_HEADER);
    pair.recv();
    pair.send(STARTTLS);
    pair.recv();
    pair.handshake();
    pair.send(LEGACY_HEADER);
    assert!(pair.recv().ends_with(FEATURES_SASL));
    pair
}

#[test]
fn event_reaches_an_authenticated_stream_as_one_message() {
    // §5: a subscribed, authenticated stream receives the LDM_event document as it was written.
    let mut pair = Pair::remote();
    pair.login();
    assert!(publish(&mut pair));
    assert_eq!(pair.recv_writes(), [document()]);
    assert!(!pair.server.is_finished());
}

#[test]
fn legacy_peer_gets_each_event_in_its_own_write() {
    // §1.2 step 4: the FMA client parses each read() as one document, so an event is never glued
    // to a reply or to another event, even when they are all waiting together.
    let mut pair = legacy_ready();
    pair.send(LIST);
    pair.events();
    assert!(publish(&mut pair));
    pair.server.handle_response(pair.now, &Response::default());
    assert!(publish(&mut pair));
    let writes = pair.recv_writes();
    assert_eq!(writes.len(), 3, "{writes:?}");
    assert_eq!(writes[0], document());
    assert!(writes[1].starts_with("<LDM_interface") && writes[1].ends_with("</LDM_interface>"));
    assert_eq!(writes[2], document());
}

#[test]
fn event_is_not_written_before_authentication() {
    // Nothing but the negotiation may reach a peer that is not authorized yet.
    let mut pair = Pair::remote();
    assert!(!publish(&mut pair), "before the first header");
    pair.send(HEADER);
    pair.recv();
    assert!(!publish(&mut pair), "before TLS");
    pair.send(STARTTLS);
    pair.recv();
    pair.handshake();
    assert!(!publish(&mut pair), "TLS up, no header yet");
    pair.send(HEADER);
    pair.recv();
    assert!(!publish(&mut pair), "secured, not authenticated");
    pair.send(AUTH_ALICE);
    pair.expect_verify("alice", "secret");
    assert!(!publish(&mut pair), "password check out");
    assert_eq!(pair.recv(), "");
}

#[test]
fn event_never_lands_between_success_and_the_new_stream() {
    // RFC 6120 §6.4.6: after <success/> the next thing the client reads is the new header.
    let mut pair = Pair::remote();
    pair.secured_stream();
    pair.send(AUTH_ALICE);
    pair.expect_verify("alice", "secret");
    pair.answer_auth(Ok(Identity {
        user: "alice".into(),
        role: Role::Write,
        credential: 1,
        generation: 0,
    }));
    assert!(!publish(&mut pair));
    assert_eq!(
        pair.recv(),
        "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
    );
}

#[test]
fn local_peer_without_a_role_gets_no_events() {
    // An unmapped local uid is not authorized: it is treated like an unauthenticated peer.
    let mut pair = Pair::local(Role::None);
    pair.secured_stream();
    assert!(!publish(&mut pair));
    assert_eq!(pair.recv(), "");
}

#[test]
fn event_after_close_is_dropped() {
    // Once our closing tag is queued, nothing may follow it.
    let mut pair = Pair::remote();
    pair.login();
    pair.send("</stream:stream>");
    assert_eq!(pair.recv(), "</stream:stream>");
    assert!(!publish(&mut pair));
    assert_eq!(pair.recv(), "");
    assert!(pair.server.is_finished());
}

#[test]
fn event_after_a_stream_error_is_dropped() {
    let mut pair = Pair::remote();
    pair.login();
    pair.send("<foo xmlns='urn:example'/>");
    assert!(!publish(&mut pair));
    pair.expect_stream_error("unsupported-stanza-type");
}

#[test]
fn event_while_draining_is_dropped_and_does_not_delay_the_close() {
    // The peer closed with a document in flight: it is owed that answer, then our close; an
    // event is not in flight, so it neither goes out nor holds the stream open.
    let mut pair = Pair::remote();
    pair.login();
    pair.send(&format!("{LIST}</stream:stream>"));
    pair.events();
    assert!(!publish(&mut pair));
    pair.server.handle_response(pair.now, &Response::default());
    let out = pair.recv();
    assert!(
        out.starts_with("<LDM_interface") && out.ends_with("</LDM_interface></stream:stream>"),
        "{out}"
    );
    assert!(pair.server.is_finished());
}

#[test]
fn event_during_shutdown_is_dropped() {
    // Shutdown answers what is in flight and then says system-shutdown: nothing new goes out.
    let mut pair = Pair::remote();
    pair.login();
    pair.send(LIST);
    pair.events();
    pair.server.handle_shutdown(pair.now);
    assert!(!publish(&mut pair));
    pair.server.handle_response(pair.now, &Response::default());
    let out = pair.recv();
    assert!(!out.contains("LDM_event"), "{out}");
    assert!(out.contains("<system-shutdown"), "{out}");
}

#[test]
fn events_do_not_keep_an_idle_remote_peer_alive() {
    // An event is traffic from us: a remote listener must still show it is alive.
    let mut pair = Pair::remote();
    pair.login();
    pair.advance(Duration::from_secs(599));
    assert!(publish(&mut pair));
    pair.recv();
    pair.advance(Duration::from_secs(2));
    pair.expect_stream_error("connection-timeout");
}

#[test]
fn events_do_not_count_as_documents_in_flight() {
    // In-flight documents pause input; events must not use up that allowance.
    let mut pair = Pair::remote();
    pair.login();
    for _ in 0..10 {
        assert!(publish(&mut pair));
    }
    assert!(pair.server.wants_input());
    pair.send(&LIST.repeat(4));
    let handed = pair
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Document(..)))
        .count();
    assert_eq!(handed, 4);
}
