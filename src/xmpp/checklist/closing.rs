//! Stream errors and closing [§4.4, §4.9], timeouts and limits [§13.12].

use super::*;
use crate::limits::Limit;

#[test]
fn closing_tag_is_answered_with_ours_and_the_connection_ends() {
    // §4.4: on the peer's </stream:stream>, we answer with ours and close.
    let mut pair = Pair::remote();
    pair.login();
    pair.send("</stream:stream>");
    let writes = pair.recv_writes();
    assert_eq!(writes.concat(), "</stream:stream>");
    assert!(pair.server.is_finished());
}

#[test]
fn closing_waits_for_documents_in_flight() {
    // Replies to documents already handed off are still delivered before our closing tag.
    let mut pair = Pair::remote();
    pair.login();
    pair.send("<LDM_interface version='1.0'><cmd><action>list-domain</action><data version='3.0'/></cmd></LDM_interface></stream:stream>");
    assert_eq!(pair.recv(), "");
    assert!(!pair.server.is_finished());
    pair.server
        .handle_response(pair.now, &crate::ldm::Response::default());
    let out = pair.recv();
    assert!(
        out.starts_with("<LDM_interface") && out.ends_with("</LDM_interface></stream:stream>"),
        "{out}"
    );
    assert!(pair.server.is_finished());
}

#[test]
fn bare_fin_cleans_up() {
    // A FIN without a closing tag is normal: the connection finishes.
    let mut pair = Pair::remote();
    pair.login();
    pair.server.handle_eof(pair.now);
    pair.recv();
    assert!(pair.server.is_finished());
}

#[test]
fn stream_error_before_our_header_sends_the_header_first() {
    // §4.9.1.1: the error needs an open stream: our header goes first.
    let mut pair = Pair::remote();
    pair.send("<?xml version='1.0' encoding='ISO-8859-1'?>");
    let out = pair.expect_stream_error("unsupported-encoding");
    assert!(out.starts_with(&server_header(1)));
}

#[test]
fn idle_stream_gets_connection_timeout() {
    let mut pair = Pair::remote();
    pair.login();
    pair.advance(Duration::from_secs(599));
    assert!(!pair.server.is_finished());
    pair.send(" "); // a whitespace keepalive is traffic
    pair.advance(Duration::from_secs(599));
    assert!(!pair.server.is_finished());
    pair.advance(Duration::from_secs(2));
    pair.expect_stream_error("connection-timeout");
    assert!(
        pair.events()
            .iter()
            .any(|e| matches!(e, Event::StreamError(_, Some(Limit::IdleTimeout))))
    );
}

#[test]
fn local_peers_are_exempt_from_the_idle_timeout() {
    // The local event client waits silently for hours.
    let mut pair = Pair::local(Role::Read);
    pair.secured_stream();
    pair.advance(Duration::from_secs(86_400));
    assert!(!pair.server.is_finished());
}

#[test]
fn authentication_deadline_closes_unauthenticated_streams() {
    let mut pair = Pair::remote();
    pair.secured_stream();
    assert!(pair.server.poll_timeout().is_some());
    pair.advance(Duration::from_secs(31));
    pair.expect_stream_error("connection-timeout");
    assert!(
        pair.events()
            .iter()
            .any(|e| matches!(e, Event::StreamError(_, Some(Limit::AuthTimeout))))
    );
}

#[test]
fn authentication_deadline_does_not_apply_once_authenticated() {
    let mut pair = Pair::remote();
    pair.login();
    pair.advance(Duration::from_secs(120));
    assert!(!pair.server.is_finished());
}

#[test]
fn deadline_during_the_tls_handshake_still_closes() {
    // Nothing can be written mid-handshake; the connection must still finish.
    let mut pair = Pair::remote();
    pair.send(HEADER);
    pair.send(STARTTLS);
    pair.recv();
    pair.advance(Duration::from_secs(31));
    pair.recv();
    assert!(pair.server.is_finished());
}

#[test]
fn shutdown_sends_system_shutdown() {
    let mut pair = Pair::remote();
    pair.login();
    pair.server.handle_shutdown(pair.now);
    pair.expect_stream_error("system-shutdown");
}

#[test]
fn shutdown_answers_documents_in_flight_first() {
    let mut pair = Pair::remote();
    pair.login();
    pair.send("<LDM_interface version='1.0'><cmd><action>list-domain</action><data version='3.0'/></cmd></LDM_interface>");
    pair.server.handle_shutdown(pair.now);
    assert!(!pair.server.is_finished());
    pair.server
        .handle_response(pair.now, &crate::ldm::Response::default());
    let out = pair.recv();
    assert!(
        out.contains("</LDM_interface><stream:error><system-shutdown"),
        "{out}"
    );
    assert!(pair.server.is_finished());
}

#[test]
fn stanza_over_the_size_limit_is_a_policy_violation() {
    // §13.12: a maximum stanza size, counted as a limit hit.
    let config = config(|_, c| c.framer.stanza_bytes_max = 1024);
    let mut pair = Pair::with(config, Peer::Remote);
    pair.login();
    pair.send(&format!(
        "<message><body>{}</body></message>",
        "x".repeat(2000)
    ));
    pair.expect_stream_error("policy-violation");
    assert!(
        pair.events()
            .iter()
            .any(|e| matches!(e, Event::StreamError(_, Some(Limit::StanzaBytes))))
    );
}

#[test]
fn client_stream_error_ends_the_stream() {
    let mut pair = Pair::remote();
    pair.login();
    pair.send("<stream:error><undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>");
    assert_eq!(pair.recv(), "</stream:stream>");
    assert!(pair.server.is_finished());
}

#[test]
fn idle_connection_holds_no_input_buffer() {
    // A partial element keeps its bytes; once complete, nothing is held.
    let mut pair = Pair::remote();
    pair.login();
    pair.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:");
    assert!(pair.server.holds_input_buffer());
    pair.send("ping'/></iq>");
    assert!(!pair.server.holds_input_buffer());
    assert!(pair.server.input_buffer().is_empty());
}

#[test]
fn local_peer_without_a_role_keeps_the_authentication_deadline() {
    // Review finding: an unmapped local uid must not hold a connection forever.
    let mut pair = Pair::local(Role::None);
    pair.secured_stream();
    assert!(!pair.server.is_authenticated());
    pair.advance(Duration::from_secs(31));
    pair.expect_stream_error("connection-timeout");
}

#[test]
fn idle_timeout_waits_for_documents_in_flight() {
    // A client waiting for a long operation is not idle; the clock restarts at the answer.
    let mut pair = Pair::remote();
    pair.login();
    pair.send("<LDM_interface version='1.0'><cmd><action>list-domain</action><data version='3.0'/></cmd></LDM_interface>");
    pair.advance(Duration::from_secs(3600));
    assert!(!pair.server.is_finished());
    pair.server
        .handle_response(pair.now, &crate::ldm::Response::default());
    pair.recv();
    pair.advance(Duration::from_secs(599));
    assert!(!pair.server.is_finished());
    pair.advance(Duration::from_secs(2));
    pair.expect_stream_error("connection-timeout");
}

#[test]
fn close_before_our_header_still_opens_the_stream_first() {
    // After TLS and before the client's new header, a FIN gets our header and close.
    let mut pair = Pair::remote();
    pair.secure();
    pair.server.handle_eof(pair.now);
    let out = pair.recv();
    assert_eq!(out, format!("{}</stream:stream>", server_header(2)));
    assert!(pair.server.is_finished());
}
