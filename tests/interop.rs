//! Interop with real clients: the illumos FMA LDM client re-enacted byte for byte
//! (ldm-xml-interface.md §1.2), and the slixmpp XMPP library. Both are Python scripts in
//! `tests/interop/`; `.ci/run` installs slixmpp with pip.

mod support;

use std::process::Command;

use support::*;

fn python(script: &str, args: &[&str]) -> (bool, String) {
    let path = format!("{}/tests/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed for the interop tests: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), format!("{stdout}{stderr}"))
}

/// Replaces the stream id with `ID`, after checking it is 128 bits of hex.
fn mask_id(text: &str) -> String {
    let Some(start) = text.find(" id='") else {
        return text.to_owned();
    };
    let value_start = start + " id='".len();
    let end = value_start + text[value_start..].find('\'').unwrap();
    let id = &text[value_start..end];
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "stream id {id:?}"
    );
    format!("{}ID{}", &text[..value_start], &text[end..])
}

#[test]
fn fma_client_legacy_handshake_byte_for_byte() {
    // §1.2: the exact bytes the illumos client sends, and what it must read back, read by read.
    let daemon = Daemon::start("");
    let port = daemon.xmpp.unwrap().port().to_string();
    let (_, out) = python("fma_client.py", &[&port]);
    let transcript: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let reads: Vec<String> = transcript["reads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| mask_id(r.as_str().unwrap()))
        .collect();
    let header = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='ID' from='localhost' version='1.0' xml:lang='en'>";
    let expected = [
        format!("{header}<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>"),
        "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>".to_owned(),
        format!("{header}<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>"),
        "<LDM_interface version='1.1'><cmd><action>reg-domain-events</action><response><status>failure</status><resp_msg>The action 'reg-domain-events' is not supported by this ldmd</resp_msg></response></cmd><response><status>failure</status></response></LDM_interface>".to_owned(),
    ];
    assert_eq!(reads, expected, "transcript: {out}");
    assert!(
        reads.iter().all(|r| r.len() < 1024),
        "each document fits the client's 1 KiB read"
    );
    assert_eq!(transcript["tls"], "TLSv1.2");
    assert_eq!(
        transcript["outcome"],
        "response action=reg-domain-events status=failure"
    );
}

#[test]
fn slixmpp_connects_with_starttls_and_sasl_plain_binds_and_pings() {
    let daemon = Daemon::start_with_users(
        "tcp_loopback_is_local = false",
        &[("alice", "write", "interop pw")],
    );
    let addr = daemon.xmpp.unwrap();
    let ca = daemon.state_dir().join("tls-cert.pem");
    let (ok, out) = python(
        "slixmpp_ping.py",
        &[
            &addr.ip().to_string(),
            &addr.port().to_string(),
            "alice@localhost",
            "interop pw",
            ca.to_str().unwrap(),
        ],
    );
    assert!(
        !out.contains("No module named 'slixmpp'"),
        "slixmpp is not installed: run `pip install slixmpp` (.ci/run does)"
    );
    assert!(ok, "slixmpp: {out}");
    assert!(out.contains("bound=alice@localhost/"), "{out}");
    assert!(out.contains("outcome=ok"), "{out}");
}
