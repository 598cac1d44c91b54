//! Local peers and the legacy LDM client (ldm-xml-interface.md §1.2).

use super::*;

const LEGACY_HEADER: &str =
    "<?xml version='1.0'?><stream:stream xml:lang=\"en\" version=\"1.0\" id=\"xmpp\">";

/// The legacy client's sequence up to its post-TLS header (its features not yet read).
fn legacy_secured(pair: &mut Pair) {
    pair.send(LEGACY_HEADER);
    pair.recv();
    pair.send(STARTTLS);
    pair.recv();
    pair.handshake();
    pair.send(LEGACY_HEADER);
}

#[test]
fn legacy_header_is_accepted_from_a_local_peer() {
    let mut pair = Pair::local(Role::Write);
    pair.send(LEGACY_HEADER);
    assert_eq!(
        pair.recv(),
        format!("{}{FEATURES_STARTTLS}", server_header(1))
    );
}

#[test]
fn local_peer_skips_sasl_and_sends_documents_with_its_role() {
    let mut pair = Pair::local(Role::Read);
    legacy_secured(&mut pair);
    assert!(
        pair.recv().ends_with(FEATURES_SASL),
        "features demand nothing; SASL stays optional"
    );
    assert!(pair.server.is_authenticated());
    pair.send("<LDM_interface version=\"1.1\">   <cmd>      <action>reg-domain-events</action>      <data version=\"3.0\"> </data>   </cmd></LDM_interface>");
    let role = pair.events().into_iter().find_map(|e| match e {
        Event::Document(_, role) => Some(role),
        _ => None,
    });
    assert_eq!(role, Some(Role::Read));
}

#[test]
fn legacy_peer_gets_each_message_in_its_own_write() {
    // The FMA client parses each read() as one document: never glue two into one write.
    let mut pair = Pair::local(Role::Write);
    legacy_secured(&mut pair);
    pair.recv();
    let doc = "<LDM_interface version='1.0'><cmd><action>list-domain</action><data version='3.0'/></cmd></LDM_interface>";
    pair.send(&doc.repeat(2));
    pair.events();
    pair.server
        .handle_response(pair.now, &crate::ldm::Response::default());
    pair.server
        .handle_response(pair.now, &crate::ldm::Response::default());
    let writes = pair.recv_writes();
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert!(
        writes
            .iter()
            .all(|w| w.starts_with("<LDM_interface") && w.ends_with("</LDM_interface>"))
    );
}

#[test]
fn ordinary_client_gets_replies_coalesced() {
    let mut pair = Pair::remote();
    pair.login();
    let doc = "<LDM_interface version='1.0'><cmd><action>list-domain</action><data version='3.0'/></cmd></LDM_interface>";
    pair.send(&doc.repeat(2));
    pair.events();
    pair.server
        .handle_response(pair.now, &crate::ldm::Response::default());
    pair.server
        .handle_response(pair.now, &crate::ldm::Response::default());
    assert_eq!(pair.recv_writes().len(), 1);
}

#[test]
fn local_peer_without_to_is_served_the_default_domain() {
    let mut pair = Pair::local(Role::Write);
    pair.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>");
    assert!(pair.recv().contains("from='example.com'"));
}

#[test]
fn local_peer_may_still_authenticate_with_sasl() {
    let mut pair = Pair::local(Role::None);
    pair.login();
    assert!(pair.server.is_authenticated());
}

#[test]
fn local_peer_without_sasl_cannot_bind() {
    let mut pair = Pair::local(Role::Write);
    pair.secured_stream();
    pair.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
    assert!(pair.recv().contains("<not-allowed"));
    pair.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(pair.recv(), "<iq type='result' id='p'/>");
}

#[test]
fn local_peer_still_needs_tls() {
    let mut pair = Pair::local(Role::Write);
    pair.send(LEGACY_HEADER);
    pair.recv();
    pair.send("<LDM_interface version='1.0'><cmd><action>list-domain</action><data version='3.0'/></cmd></LDM_interface>");
    pair.expect_stream_error("not-authorized");
}

#[test]
fn auth_waits_for_answers_to_documents_in_flight() {
    // Review finding: an answer must never land between <success/> and the new stream.
    let mut pair = Pair::local(Role::Write);
    pair.secured_stream();
    pair.send(&format!(
        "<LDM_interface version='1.0'><cmd><action>list-domain</action><data version='3.0'/></cmd></LDM_interface>{AUTH_ALICE}"
    ));
    let events = pair.events();
    assert!(events.iter().any(|e| matches!(e, Event::Document(..))));
    assert!(
        !events.iter().any(|e| matches!(e, Event::Verify(_))),
        "auth is not read yet"
    );
    pair.server
        .handle_response(pair.now, &crate::ldm::Response::default());
    assert!(pair.recv().ends_with("</LDM_interface>"));
    pair.expect_verify("alice", "secret");
    pair.answer_auth(Ok(Identity {
        user: "alice".into(),
        role: Role::Write,
        credential: 1,
        generation: 0,
    }));
    assert_eq!(
        pair.recv(),
        "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
    );
}
