//! SASL PLAIN [§6, RFC 4616].

use super::*;
use crate::xmpp::SaslFailure;
use base64::Engine as _;

fn auth(raw: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
    format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{encoded}</auth>")
}

fn failure(condition: &str) -> String {
    format!("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><{condition}/></failure>")
}

#[test]
fn sasl_plain_success_restarts_with_bind() {
    // §6.4.6: <success/>, then the client restarts and gets the bind feature.
    let mut pair = Pair::remote();
    pair.login();
    assert!(pair.server.is_authenticated());
}

#[test]
fn sasl_plain_accepts_user_at_domain_and_own_authzid() {
    let mut pair = Pair::remote();
    pair.secured_stream();
    pair.send(&auth(b"alice@example.com\0alice@example.com\0pw"));
    pair.expect_verify("alice", "pw");
}

#[test]
fn sasl_plain_rejects_foreign_authzid() {
    // RFC 4616 §2: an authzid other than the user's own identity is invalid-authzid.
    let mut pair = Pair::remote();
    pair.secured_stream();
    pair.send(&auth(b"root@example.com\0alice\0pw"));
    assert_eq!(pair.recv(), failure("invalid-authzid"));
    assert!(
        pair.events().iter().all(|e| !matches!(e, Event::Verify(_))),
        "no password check"
    );
}

#[test]
fn sasl_plain_bad_base64_is_incorrect_encoding() {
    let mut pair = Pair::remote();
    pair.secured_stream();
    pair.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>@@@@</auth>");
    assert_eq!(pair.recv(), failure("incorrect-encoding"));
}

#[test]
fn sasl_plain_wrong_structure_is_malformed_request() {
    let mut pair = Pair::remote();
    pair.secured_stream();
    pair.send(&auth(b"alice\0pw"));
    assert_eq!(pair.recv(), failure("malformed-request"));
}

#[test]
fn sasl_bad_credentials_are_not_authorized() {
    // §6.5.10: the verifier said no.
    let mut pair = Pair::remote();
    pair.secured_stream();
    pair.send(AUTH_ALICE);
    pair.expect_verify("alice", "secret");
    pair.answer_auth(Err(SaslFailure::NotAuthorized));
    assert_eq!(pair.recv(), failure("not-authorized"));
    assert!(!pair.server.is_authenticated());
}

#[test]
fn sasl_other_mechanism_is_invalid_mechanism() {
    let mut pair = Pair::remote();
    pair.secured_stream();
    pair.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>biws</auth>");
    assert_eq!(pair.recv(), failure("invalid-mechanism"));
}

#[test]
fn sasl_abort_is_aborted() {
    let mut pair = Pair::remote();
    pair.secured_stream();
    pair.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    assert_eq!(pair.recv(), failure("aborted"));
}

#[test]
fn sasl_empty_auth_gets_an_empty_challenge() {
    // §6.4.2: no initial response: an empty challenge, then the response carries the message.
    let mut pair = Pair::remote();
    pair.secured_stream();
    pair.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'/>");
    assert_eq!(
        pair.recv(),
        "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
    );
    pair.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>AGFsaWNlAHNlY3JldA==</response>");
    pair.expect_verify("alice", "secret");
}

#[test]
fn sasl_equals_sign_is_an_empty_response_and_malformed_for_plain() {
    let mut pair = Pair::remote();
    pair.secured_stream();
    pair.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>=</auth>");
    assert_eq!(pair.recv(), failure("malformed-request"));
}

#[test]
fn sasl_retries_are_bounded() {
    // §6.4.5: a few retries, then policy-violation and close.
    let mut pair = Pair::remote();
    pair.secured_stream();
    for _ in 0..2 {
        pair.send(AUTH_ALICE);
        pair.expect_verify("alice", "secret");
        pair.answer_auth(Err(SaslFailure::NotAuthorized));
        assert_eq!(pair.recv(), failure("not-authorized"));
    }
    pair.send(AUTH_ALICE);
    pair.answer_auth(Err(SaslFailure::NotAuthorized));
    let out = pair.expect_stream_error("policy-violation");
    assert!(out.starts_with(&failure("not-authorized")));
    let limit_hit = pair.events().into_iter().any(|e| {
        matches!(
            e,
            Event::StreamError(_, Some(crate::limits::Limit::SaslAttempts))
        )
    });
    assert!(limit_hit);
}

#[test]
fn input_pauses_while_the_password_is_checked() {
    // The check runs off-thread; nothing behind <auth> is processed until it answers.
    let mut pair = Pair::remote();
    pair.secured_stream();
    pair.send(AUTH_ALICE);
    assert!(!pair.server.wants_input());
    pair.answer_auth(Err(SaslFailure::TemporaryAuthFailure));
    assert_eq!(pair.recv(), failure("temporary-auth-failure"));
    assert!(pair.server.wants_input());
}

#[test]
fn auth_after_authentication_is_a_policy_violation() {
    let mut pair = Pair::remote();
    pair.login();
    pair.send(AUTH_ALICE);
    pair.expect_stream_error("policy-violation");
}

#[test]
fn busy_verifier_does_not_spend_the_clients_attempts() {
    // temporary-auth-failure is the server's state, not a failed attempt: two of them and two
    // wrong passwords still leave the client its last attempt (sasl_attempts_max = 3).
    let mut pair = Pair::remote();
    pair.secured_stream();
    for failure_answer in [
        SaslFailure::TemporaryAuthFailure,
        SaslFailure::NotAuthorized,
        SaslFailure::TemporaryAuthFailure,
        SaslFailure::NotAuthorized,
    ] {
        pair.send(AUTH_ALICE);
        pair.answer_auth(Err(failure_answer));
        assert_eq!(pair.recv(), failure(failure_answer.as_str()));
    }
    pair.send(AUTH_ALICE);
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

#[test]
fn temporary_auth_failures_are_bounded_too() {
    // A client that retries a busy server without end would hold its stream forever: the
    // temporary failures are counted against the same number and end the stream.
    let mut pair = Pair::remote();
    pair.secured_stream();
    for _ in 0..2 {
        pair.send(AUTH_ALICE);
        pair.answer_auth(Err(SaslFailure::TemporaryAuthFailure));
        assert_eq!(pair.recv(), failure("temporary-auth-failure"));
    }
    pair.send(AUTH_ALICE);
    pair.answer_auth(Err(SaslFailure::TemporaryAuthFailure));
    pair.expect_stream_error("policy-violation");
}

#[test]
fn go_xmpp_login_with_trailing_newlines_reaches_bind() {
    // mattn/go-xmpp's exact byte sequence: every element it writes ends with "\n", and it sends
    // the restarted stream's declaration right after <success/>. The newlines carry no command.
    let header = "<?xml version='1.0'?>\n<stream:stream to='example.com' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>\n";
    let mut pair = Pair::remote();
    pair.send(header);
    assert!(pair.recv().ends_with(FEATURES_STARTTLS));
    pair.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\n");
    assert_eq!(
        pair.recv(),
        "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
    );
    pair.handshake();
    pair.send(header);
    assert!(pair.recv().ends_with(FEATURES_SASL));
    pair.send(&format!("{AUTH_ALICE}\n"));
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
    pair.send(header);
    assert!(pair.recv().ends_with(FEATURES_BIND));
    pair.send("<iq type='set' id='bind_1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>\n");
    let bound = pair.recv();
    assert!(bound.contains("<jid>alice@example.com/r</jid>"), "{bound}");
}

#[test]
fn a_removed_account_ends_its_streams() {
    let mut pair = Pair::remote();
    pair.login();
    pair.server.handle_account(pair.now, None);
    let out = pair.expect_stream_error("not-authorized");
    assert!(out.contains("the account was removed"), "{out}");
}

#[test]
fn a_changed_password_ends_streams_opened_with_the_old_one() {
    let mut pair = Pair::remote();
    pair.login(); // credential 1
    pair.server.handle_account(pair.now, Some((Role::Write, 1)));
    assert_eq!(pair.recv(), "", "an unchanged account changes nothing");
    pair.server.handle_account(pair.now, Some((Role::Write, 2)));
    let out = pair.expect_stream_error("not-authorized");
    assert!(out.contains("password was changed"), "{out}");
}

#[test]
fn a_downgraded_account_sends_its_next_document_with_the_new_role() {
    let mut pair = Pair::remote();
    pair.login();
    pair.server.handle_account(pair.now, Some((Role::Read, 1)));
    pair.send("<LDM_interface version='1.0'><cmd><action>add-domain</action><data version='3.0'/></cmd></LDM_interface>");
    let roles: Vec<Role> = pair
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Document(_, role) => Some(role),
            _ => None,
        })
        .collect();
    assert_eq!(roles, [Role::Read]);
}

#[test]
fn local_peers_are_not_touched_by_account_changes() {
    // A local peer is authorized by its uid, not by the user store.
    let mut pair = Pair::local(Role::Write);
    pair.secure();
    pair.send(HEADER);
    pair.recv();
    pair.server.handle_account(pair.now, None);
    assert!(!pair.server.is_finished());
}
