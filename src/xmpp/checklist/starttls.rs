//! STARTTLS [§5].

use super::*;

#[test]
fn starttls_proceeds_and_the_client_restarts() {
    // §5.4.2.3, §5.4.3.3: <proceed/>, handshake, new header, new features.
    let mut pair = Pair::remote();
    pair.secured_stream();
    assert!(
        pair.events()
            .iter()
            .any(|e| matches!(e, Event::TlsEstablished { .. }))
    );
}

#[test]
fn starttls_refuses_pipelined_plaintext() {
    // STARTTLS command injection: plaintext after <starttls/> is never processed.
    let mut pair = Pair::remote();
    pair.send(HEADER);
    pair.recv();
    pair.send(&format!(
        "{STARTTLS}<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    assert_eq!(
        pair.recv(),
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>"
    );
    assert!(pair.server.is_finished());
}

#[test]
fn starttls_discards_pipelined_whitespace() {
    // Whitespace is not a command: mattn/go-xmpp ends <starttls/> with a newline in the same
    // write. The newline is discarded and TLS proceeds.
    let mut pair = Pair::remote();
    pair.send(HEADER);
    pair.recv();
    pair.send(&format!("{STARTTLS}\n \t\r\n"));
    assert_eq!(
        pair.recv(),
        "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
    );
    pair.handshake();
    pair.send(HEADER);
    assert!(pair.recv().ends_with(FEATURES_SASL));
}

#[test]
fn starttls_discards_whitespace_before_the_first_tls_record() {
    // The newline may arrive in a read of its own, after <proceed/>: still not a command.
    let mut pair = Pair::remote();
    pair.send(HEADER);
    pair.recv();
    pair.send(STARTTLS);
    assert_eq!(
        pair.recv(),
        "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
    );
    pair.deliver(b"\n");
    assert_eq!(pair.recv(), "");
    assert!(!pair.server.is_finished());
    pair.handshake();
    pair.send(HEADER);
    assert!(pair.recv().ends_with(FEATURES_SASL));
}

#[test]
fn starttls_refuses_whitespace_followed_by_plaintext() {
    // Only whitespace is discarded: a command behind it is still injection.
    let mut pair = Pair::remote();
    pair.send(HEADER);
    pair.recv();
    pair.send(&format!("{STARTTLS}\n<presence/>"));
    assert_eq!(
        pair.recv(),
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>"
    );
    assert!(pair.server.is_finished());
    let mut pair = Pair::remote();
    pair.send(HEADER);
    pair.recv();
    pair.send(STARTTLS);
    pair.recv();
    pair.deliver(b"\n<presence/>");
    assert_eq!(
        pair.recv(),
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>"
    );
    assert!(pair.server.is_finished());
}

#[test]
fn plaintext_after_proceed_gets_tls_failure_and_close() {
    // §5.4.3.2: a failed negotiation ends the connection; a client still speaking XML is told so.
    let mut pair = Pair::remote();
    pair.send(HEADER);
    pair.recv();
    pair.send(STARTTLS);
    pair.recv();
    pair.send(HEADER);
    assert_eq!(
        pair.recv(),
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>"
    );
    assert!(pair.server.is_finished());
    assert!(pair.events().iter().any(|e| matches!(e, Event::TlsFailed)));
}

#[test]
fn tls_handshake_failure_closes() {
    // A broken ClientHello gets a TLS alert and the connection ends.
    let mut pair = Pair::remote();
    pair.send(HEADER);
    pair.recv();
    pair.send(STARTTLS);
    pair.recv();
    // A ClientHello record whose handshake body is empty: a decode error.
    pair.deliver(&[0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00]);
    let alert = pair.recv_writes().concat();
    // A fatal decode_error alert record: type 21, level 2 (fatal), description 50.
    assert_eq!(alert.as_bytes(), [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 50]);
    assert!(pair.server.is_finished());
}

#[test]
fn auth_before_tls_is_encryption_required() {
    // §6.4.1: SASL needs TLS first: encryption-required, the stream stays up.
    let mut pair = Pair::remote();
    pair.send(HEADER);
    pair.recv();
    pair.send(AUTH_ALICE);
    assert_eq!(
        pair.recv(),
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><encryption-required/></failure>"
    );
    assert!(!pair.server.is_finished());
    pair.send(STARTTLS);
    assert!(pair.recv().starts_with("<proceed"));
}

#[test]
fn tls_client_hello_on_the_plaintext_port_is_not_well_formed() {
    // Clients that try direct TLS first: not-well-formed (after our header), close, no crash.
    let mut pair = Pair::remote();
    pair.deliver(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ]);
    let out = pair.expect_stream_error("not-well-formed");
    assert!(out.starts_with(&server_header(1)));
}

#[test]
fn starttls_after_tls_is_a_policy_violation() {
    let mut pair = Pair::remote();
    pair.secured_stream();
    pair.send(STARTTLS);
    pair.expect_stream_error("policy-violation");
}

#[test]
fn tls_1_2_is_the_default_protocol() {
    // The reference daemon accepts TLS 1.2 only; so do we unless the operator allows 1.3.
    let mut pair = Pair::remote();
    pair.secure();
    let version = pair.client.as_ref().unwrap().protocol_version();
    assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_2));
}
