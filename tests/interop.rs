//! Interop with real clients: the illumos FMA LDM client re-enacted byte for byte
//! (ldm-xml-interface.md §1.2), and the slixmpp XMPP library. Both are Python scripts in
//! `tests/interop/`; `.ci/run` installs slixmpp with pip.

mod support;

use std::process::Command;

use support::*;

fn run_script(script: &str, args: &[&str]) -> (bool, String) {
    let path = format!("{}/tests/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("the test venv's python3: {e}"));
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
    let (_, out) = run_script("fma_client.py", &[&port]);
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
        "<LDM_interface version='1.1'><cmd><action>reg-domain-events</action><data version='3.0'><response><status>success</status></response></data><response><status>success</status></response></cmd><response><status>success</status></response></LDM_interface>".to_owned(),
    ];
    assert_eq!(reads, expected, "transcript: {out}");
    assert!(
        reads.iter().all(|r| r.len() < 1024),
        "each document fits the client's 1 KiB read"
    );
    assert_eq!(transcript["tls"], "TLSv1.2");
    assert_eq!(
        transcript["outcome"],
        "response action=reg-domain-events status=success"
    );
}

#[test]
fn fma_client_receives_domain_events_one_document_per_read() {
    // §5 and §1.2: after reg-domain-events the client reads each LDM_event as one whole
    // document of under 1 KiB, and finds the domain in Content's plain `id`.
    use std::io::{BufRead, BufReader};
    let daemon = Daemon::start("");
    let port = daemon.xmpp.unwrap().port().to_string();
    let script = format!("{}/tests/interop/fma_client.py", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(python())
        .args([script.as_str(), &port, "2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the test venv's python3");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "registered", "{line}");
    let mut admin = daemon.unix();
    admin.secure();
    for action in ["add-domain", "set-vcpu", "bind-domain", "remove-domain"] {
        let cpu = "<Section xsi:type='ovf:ResourceAllocationSection_type'><Item><rasd:OtherResourceType>cpu</rasd:OtherResourceType><rasd:AllocationUnits>2</rasd:AllocationUnits></Item></Section>";
        let sections = if action == "set-vcpu" { cpu } else { "" };
        let reply = admin.request(&format!("<LDM_interface version='1.3'><cmd><action>{action}</action><data version='3.0'><Envelope><References/><Content xsi:type='ovf:VirtualSystem_Type' id='fma1'>{sections}</Content></Envelope></data></cmd></LDM_interface>"));
        let ok = reply.ends_with("<response><status>success</status></response></LDM_interface>");
        // bind fails (no memory): a failed change publishes nothing.
        assert_eq!(ok, action != "bind-domain", "{action}: {reply}");
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    let transcript: serde_json::Value =
        serde_json::from_str(rest.trim()).unwrap_or_else(|e| panic!("{e}: {rest}"));
    // set-vcpu is a resource event: a domain subscriber does not get it.
    assert_eq!(
        transcript["events"],
        serde_json::json!([["add-domain", "fma1"], ["remove-domain", "fma1"]]),
        "{rest}"
    );
    let reads = transcript["reads"].as_array().unwrap();
    assert!(
        reads.iter().all(|r| r.as_str().unwrap().len() < 1024),
        "{rest}"
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
    let (ok, out) = run_script(
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
