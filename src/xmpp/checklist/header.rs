//! Stream header [§4.2, §4.7] and features and restarts [§4.3].

use super::*;

#[test]
fn header_is_answered_with_from_fresh_id_version_lang_and_starttls_required() {
    // §4.7: our header carries from, id, version='1.0', xml:lang; §4.3.2: features follow.
    let mut pair = Pair::remote();
    pair.send(HEADER);
    assert_eq!(
        pair.recv(),
        format!("{}{FEATURES_STARTTLS}", server_header(1))
    );
}

#[test]
fn header_from_is_echoed_as_to() {
    // §4.7.2: if the client gave 'from', we echo it as 'to'.
    let mut pair = Pair::remote();
    pair.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' from='alice@example.com' version='1.0'>");
    assert!(
        pair.recv()
            .contains("from='example.com' to='alice@example.com' version='1.0'")
    );
}

#[test]
fn invalid_from_is_invalid_from() {
    let mut pair = Pair::remote();
    pair.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' from='a@b@c' version='1.0'>");
    pair.expect_stream_error("invalid-from");
}

#[test]
fn unknown_domain_gets_our_header_then_host_unknown() {
    // §4.9.3.6: our header first, then host-unknown, then close.
    let mut pair = Pair::remote();
    pair.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='other.org' version='1.0'>");
    let out = pair.expect_stream_error("host-unknown");
    assert!(out.starts_with(&server_header(1)));
    assert!(!out.contains("<stream:features>"));
}

#[test]
fn domain_match_ignores_case() {
    let mut pair = Pair::remote();
    pair.send(&HEADER.replace("example.com", "EXAMPLE.com"));
    assert!(pair.recv().ends_with(FEATURES_STARTTLS));
}

#[test]
fn second_served_domain_is_answered_as_itself() {
    let mut pair = Pair::remote();
    pair.send(&HEADER.replace("example.com", "localhost"));
    assert!(pair.recv().contains("from='localhost'"));
}

#[test]
fn missing_to_from_remote_is_improper_addressing() {
    // Checklist: a missing 'to' from a remote client is improper-addressing.
    let mut pair = Pair::remote();
    pair.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>");
    pair.expect_stream_error("improper-addressing");
}

#[test]
fn stream_ids_are_fresh_at_every_restart_and_client_id_is_ignored() {
    // §4.7.3: a new unpredictable id at every restart; the client's id is ignored.
    let mut pair = Pair::remote();
    pair.send(&HEADER.replace("to='example.com'", "to='example.com' id='client-chosen'"));
    let first = pair.recv();
    assert!(first.contains(&format!("id='{:032x}'", 1)) && !first.contains("client-chosen"));
    pair.send(STARTTLS);
    pair.recv();
    pair.handshake();
    pair.send(HEADER);
    assert!(pair.recv().contains(&format!("id='{:032x}'", 2)));
}

#[test]
fn production_stream_ids_have_128_bits_and_do_not_repeat() {
    // §4.7.3: ids come from the OS CSPRNG, 16 bytes each.
    use crate::server::OsRandom;
    let config = config(|_, _| {});
    let config = Arc::new(ConnectionConfig {
        ids: Arc::new(OsRandom),
        ..clone_config(&config)
    });
    let mut ids = std::collections::HashSet::new();
    for _ in 0..200 {
        let mut pair = Pair::with(config.clone(), Peer::Remote);
        pair.send(HEADER);
        let out = pair.recv();
        let id = out
            .split("id='")
            .nth(1)
            .unwrap()
            .split('\'')
            .next()
            .unwrap()
            .to_owned();
        assert_eq!(id.len(), 32);
        assert!(ids.insert(id), "stream id repeated");
    }
}

fn clone_config(c: &ConnectionConfig) -> ConnectionConfig {
    ConnectionConfig {
        stream: c.stream.clone(),
        framer: c.framer,
        tls: c.tls.clone(),
        ids: c.ids.clone(),
        auth_timeout: c.auth_timeout,
        idle_timeout: c.idle_timeout,
    }
}

#[test]
fn wrong_stream_namespace_is_invalid_namespace() {
    // §4.8.1: the stream namespace must be http://etherx.jabber.org/streams.
    let mut pair = Pair::remote();
    pair.send("<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong' to='example.com' version='1.0'>");
    pair.expect_stream_error("invalid-namespace");
}

#[test]
fn wrong_content_namespace_is_invalid_namespace() {
    // §4.8.2: the content namespace must be jabber:client.
    let mut pair = Pair::remote();
    pair.send("<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>");
    pair.expect_stream_error("invalid-namespace");
}

#[test]
fn stream_prefix_is_free() {
    // §4.8.5: any prefix may name the streams namespace, and the end tag must match it.
    let mut pair = Pair::remote();
    pair.send("<x:stream xmlns='jabber:client' xmlns:x='http://etherx.jabber.org/streams' to='example.com' version='1.0'>");
    assert!(pair.recv().ends_with(FEATURES_STARTTLS));
    pair.send("</x:stream>");
    assert_eq!(pair.recv(), "</stream:stream>");
    assert!(pair.server.is_finished());
}

#[test]
fn undeclared_stream_prefix_from_remote_is_bad_namespace_prefix() {
    // The legacy header is for local peers only.
    let mut pair = Pair::remote();
    pair.send("<?xml version='1.0'?><stream:stream xml:lang=\"en\" version=\"1.0\" id=\"xmpp\">");
    pair.expect_stream_error("bad-namespace-prefix");
}

#[test]
fn missing_version_is_unsupported_version() {
    // §4.7.5: a pre-1.0 peer (no version) is refused.
    let mut pair = Pair::remote();
    pair.send("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com'>");
    pair.expect_stream_error("unsupported-version");
    let mut pair = Pair::remote();
    pair.send(&HEADER.replace(
        "to='example.com' version='1.0'",
        "to='example.com' version='0.9'",
    ));
    pair.expect_stream_error("unsupported-version");
}

#[test]
fn higher_version_is_answered_with_1_0() {
    let mut pair = Pair::remote();
    pair.send(&HEADER.replace(
        "to='example.com' version='1.0'",
        "to='example.com' version='2.3'",
    ));
    assert!(pair.recv().contains("version='1.0'"));
}

#[test]
fn to_changed_across_restart_is_not_authorized() {
    // CVE-2018-10847: 'to' must not change across restarts.
    let mut pair = Pair::remote();
    pair.secure();
    pair.send(&HEADER.replace("example.com", "localhost"));
    pair.expect_stream_error("not-authorized");
}

#[test]
fn features_follow_every_header() {
    // §4.3.2: starttls before TLS, PLAIN after it, bind after SASL.
    let mut pair = Pair::remote();
    pair.login(); // asserts each features element on the way
}

#[test]
fn restart_resets_the_parser_in_the_same_step() {
    // §4.3.3: after <success/> the next bytes are a new stream, even in the same read as
    // whatever came before: a pipelined header right after <auth> is parsed as a new stream.
    let mut pair = Pair::remote();
    pair.secured_stream();
    pair.send(&format!("{AUTH_ALICE}{HEADER}"));
    pair.expect_verify("alice", "secret");
    assert_eq!(
        pair.recv(),
        "",
        "nothing is processed while the password is checked"
    );
    pair.answer_auth(Ok(Identity {
        user: "alice".into(),
        role: Role::Write,
        credential: 1,
        generation: 0,
    }));
    assert_eq!(
        pair.recv(),
        format!(
            "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>{}{FEATURES_BIND}",
            server_header(3)
        )
    );
}

#[test]
fn stanza_before_authentication_is_not_authorized() {
    // Checklist: a stanza before authentication is a not-authorized stream error.
    let mut pair = Pair::remote();
    pair.send(HEADER);
    pair.recv();
    pair.send("<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>");
    pair.expect_stream_error("not-authorized");

    let mut pair = Pair::remote();
    pair.secured_stream();
    pair.send("<message to='x@example.com'><body>hi</body></message>");
    pair.expect_stream_error("not-authorized");
}
