//! Binding and stanzas [§7, §8], and LDM document hand-off.

use super::*;
use crate::ldm::{Response, Status};

fn ready() -> Pair {
    let mut pair = Pair::remote();
    pair.login();
    pair
}

#[test]
fn bind_returns_the_full_jid() {
    // §7.6.1: the result carries the full JID with the requested resource.
    let mut pair = ready();
    pair.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>laptop</resource></bind></iq>");
    assert_eq!(
        pair.recv(),
        "<iq type='result' id='b1' to='alice@example.com/laptop'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>alice@example.com/laptop</jid></bind></iq>"
    );
}

#[test]
fn bind_without_resource_gets_a_random_one() {
    // §7.6.2.1: the server generates a resource.
    let mut pair = ready();
    pair.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
    let out = pair.recv();
    let jid = out
        .split("<jid>")
        .nth(1)
        .unwrap()
        .split("</jid>")
        .next()
        .unwrap();
    assert!(
        jid.starts_with("alice@example.com/ldmd-") && jid.len() > "alice@example.com/ldmd-".len(),
        "{jid}"
    );
}

#[test]
fn bind_with_invalid_resource_is_bad_request() {
    let mut pair = ready();
    pair.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>a&#9;b&#x7F;</resource></bind></iq>");
    assert_eq!(
        pair.recv(),
        "<iq type='error' id='b1'><error type='modify'><bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    );
}

#[test]
fn second_bind_is_not_allowed() {
    let mut pair = ready();
    pair.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>");
    pair.recv();
    pair.send("<iq type='set' id='b2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>s</resource></bind></iq>");
    assert!(pair.recv().contains(
        "<error type='cancel'><not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
    ));
}

#[test]
fn ping_gets_an_empty_result() {
    // XEP-0199 §4.2.
    let mut pair = ready();
    pair.send("<iq type='get' id='p1' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(
        pair.recv(),
        "<iq type='result' id='p1' from='example.com'/>"
    );
}

#[test]
fn legacy_session_gets_an_empty_result() {
    let mut pair = ready();
    pair.send("<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
    assert_eq!(pair.recv(), "<iq type='result' id='s1'/>");
}

#[test]
fn unknown_iq_payload_is_service_unavailable() {
    // §8.4: an iq nobody handles gets service-unavailable.
    let mut pair = ready();
    pair.send("<iq type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>");
    assert_eq!(
        pair.recv(),
        "<iq type='error' id='v1'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    );
}

#[test]
fn iq_needs_an_id_a_valid_type_and_exactly_one_child() {
    // §8.2.3: otherwise bad-request; the stream stays up.
    let bad_request = "<bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>";
    for iq in [
        "<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>",
        "<iq type='get' id='x'/>",
        "<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/></iq>",
        "<iq type='fetch' id='x'><ping xmlns='urn:xmpp:ping'/></iq>",
        "<iq id='x'><ping xmlns='urn:xmpp:ping'/></iq>",
    ] {
        let mut pair = ready();
        pair.send(iq);
        let out = pair.recv();
        assert!(
            out.starts_with("<iq type='error'") && out.contains(bad_request),
            "{iq} -> {out}"
        );
        assert!(!pair.server.is_finished());
    }
}

#[test]
fn iq_results_and_errors_from_the_client_are_ignored() {
    let mut pair = ready();
    pair.send("<iq type='result' id='r1'/><iq type='error' id='r2'/>");
    assert_eq!(pair.recv(), "");
    assert!(!pair.server.is_finished());
}

#[test]
fn presence_and_message_are_tolerated() {
    // Clients send an initial presence: it never kills the stream.
    let mut pair = ready();
    pair.send("<presence/><message to='bob@example.com'><body>hi</body></message>");
    assert_eq!(pair.recv(), "");
    pair.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(pair.recv(), "<iq type='result' id='p'/>");
}

#[test]
fn unknown_top_level_element_is_unsupported_stanza_type() {
    let mut pair = ready();
    pair.send("<foo xmlns='urn:example'/>");
    pair.expect_stream_error("unsupported-stanza-type");
}

#[test]
fn undeclared_prefix_on_a_stanza_is_bad_namespace_prefix() {
    let mut pair = ready();
    pair.send("<x:iq type='get' id='1'/>");
    pair.expect_stream_error("bad-namespace-prefix");
}

#[test]
fn ldm_document_is_handed_off_with_the_role_and_answered() {
    // Issue 2 §7: the document is parsed, handed off, and the response written back.
    let mut pair = ready();
    pair.send("<LDM_interface version='1.0'><cmd><action>list-domain</action><data version='3.0'/></cmd></LDM_interface>");
    let events = pair.events();
    let (document, role) = events
        .into_iter()
        .find_map(|e| match e {
            Event::Document(d, r) => Some((d, r)),
            _ => None,
        })
        .expect("document handed off");
    assert_eq!(role, Role::Write);
    assert_eq!(
        document.cmds[0].action,
        Some(crate::ldm::Action::ListDomain.into())
    );
    let response = crate::ldm::handler::DocumentHandler::handle(
        &mut crate::ldm::handler::Unsupported,
        &document,
        role,
    );
    assert_eq!(response.status(), Status::Failure);
    pair.server.handle_response(pair.now, &response);
    let out = pair.recv();
    assert!(
        out.starts_with("<LDM_interface version='1.0'><cmd><action>list-domain</action>"),
        "{out}"
    );
    assert!(
        out.contains("<resp_msg>The action 'list-domain' is not supported by this ldmd</resp_msg>")
    );
    assert!(out.ends_with("<response><status>failure</status></response></LDM_interface>"));
}

#[test]
fn documents_beyond_the_in_flight_limit_wait() {
    // Back-pressure: with 4 documents unanswered, input pauses until one is answered.
    let mut pair = ready();
    let doc = "<LDM_interface version='1.0'><cmd><action>list-domain</action><data version='3.0'/></cmd></LDM_interface>";
    pair.send(&doc.repeat(6));
    let handed = pair
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Document(..)))
        .count();
    assert_eq!(handed, 4);
    assert!(!pair.server.wants_input());
    pair.server.handle_response(pair.now, &Response::default());
    let handed = pair
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Document(..)))
        .count();
    assert_eq!(handed, 1, "one more document is taken once one is answered");
}
