//! Bytes on the wire that used to wedge or crash a stream: end tags that do not match, a second
//! stream header, ill-formed namespaces, the byte sequences real clients send, whitespace after
//! STARTTLS.

use super::*;

#[test]
fn mismatched_end_tag_gets_not_well_formed_and_the_stream_is_not_wedged() {
    // `<a><b></a>` used to be swallowed silently until a timeout (never, for a local peer with
    // a role). Now the stream ends at the end tag, before and after authentication.
    let daemon = Daemon::start_with_users(REMOTE, &[("alice", "write", "pw")]);
    let mut client = daemon.tcp();
    client.send(HEADER);
    client.read_until("</stream:features>");
    client.send("<a><b></a>");
    let out = client.read_to_close();
    assert!(out.contains(&stream_error("not-well-formed")), "{out}");
    assert!(out.contains("end tag does not match"), "{out}");

    let mut client = logged_in(&daemon, "alice", "pw");
    client.send("<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'></iq>");
    let out = client.read_to_close();
    assert!(out.contains(&stream_error("not-well-formed")), "{out}");

    // A local peer with a role has no idle timeout: the wedge there would have been forever.
    let mut local = daemon.unix();
    local.secure();
    local.send("<LDM_interface version='1.0'><cmd></LDM_interface>");
    let out = local.read_to_close();
    assert!(out.contains(&stream_error("not-well-formed")), "{out}");
    bystander_is_answered(&daemon);
}

#[test]
fn second_stream_header_gets_unsupported_stanza_type_at_once() {
    let daemon = Daemon::start_with_users(REMOTE, &[("alice", "write", "pw")]);
    let mut client = logged_in(&daemon, "alice", "pw");
    // No byte after the header's `>`: the answer must not wait for any.
    client.send(HEADER.trim_start_matches("<?xml version='1.0'?>"));
    let out = client.read_to_close();
    assert!(
        out.contains(&stream_error("unsupported-stanza-type")),
        "{out}"
    );
    assert!(out.contains("stream header inside an open stream"), "{out}");
}

#[test]
fn namespace_ill_formed_stanzas_are_refused_and_ldm_documents_keep_their_prefixes() {
    let daemon = Daemon::start_with_users(REMOTE, &[("alice", "write", "pw")]);
    for (stanza, condition) in [
        (
            "<iq type='get' id='1' xmlns:a='urn:x' xmlns:b='urn:x' a:k='1' b:k='2'><ping xmlns='urn:xmpp:ping'/></iq>",
            "not-well-formed",
        ),
        (
            "<iq type='get' id='1' xmlns:xml='urn:other'><ping xmlns='urn:xmpp:ping'/></iq>",
            "not-well-formed",
        ),
        ("<iq type='get' id='1'><a:/></iq>", "not-well-formed"),
        (
            "<iq type='get' id='1'><p:ping/></iq>",
            "bad-namespace-prefix",
        ),
        (
            "<iq type='get' id='1' p:x='1'><ping xmlns='urn:xmpp:ping'/></iq>",
            "bad-namespace-prefix",
        ),
    ] {
        let mut client = logged_in(&daemon, "alice", "pw");
        client.send(stanza);
        let out = client.read_to_close();
        assert!(out.contains(&stream_error(condition)), "{stanza}: {out}");
    }
    // Oracle's clients write rasd:, gprop:, ovf: and xsi: without declaring them.
    let mut client = logged_in(&daemon, "alice", "pw");
    let reply = client.request(&add_domain("ldg1"));
    assert_eq!(document_status(&reply).0, "success", "{reply}");
}

/// mattn/go-xmpp's bytes, as it writes them: a newline after every element.
const GO_XMPP_HEADER: &str = "<?xml version='1.0'?>\n<stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>\n";

#[test]
fn go_xmpp_byte_sequence_logs_in_binds_and_gets_an_ldm_reply() {
    // `<starttls/>\n` and `</auth>\n`: the newlines are not commands. They used to get
    // `<failure/>` and a refused restart.
    use base64::Engine as _;
    let daemon = Daemon::start_with_users(REMOTE, &[("alice", "write", "pw")]);
    let mut client = daemon.tcp();
    client.send(GO_XMPP_HEADER);
    client.read_until("</stream:features>");
    client.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\n");
    client.read_until("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    client.start_tls();
    client.send(GO_XMPP_HEADER);
    client.read_until("</stream:features>");
    let plain = base64::engine::general_purpose::STANDARD.encode("\0alice\0pw");
    client.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>\n"
    ));
    client.read_until("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    client.send(GO_XMPP_HEADER);
    client.read_until("</stream:features>");
    client.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>go</resource></bind></iq>\n");
    let bound = client.read_until("</iq>");
    assert!(bound.contains("<jid>alice@localhost/go</jid>"), "{bound}");
    let reply = client.request(&format!("{}\n", list_domain()));
    assert_eq!(document_status(&reply).0, "success", "{reply}");
    assert!(reply.contains("primary"), "{reply}");
}

#[test]
fn go_sendxmpp_logs_in_and_gets_an_ldm_reply() {
    // The real go-xmpp library, through Debian's go-sendxmpp (which .ci/run installs).
    let Ok(binary) = which("go-sendxmpp") else {
        println!("skipped: go-sendxmpp is not installed (apt-get install go-sendxmpp)");
        return;
    };
    let daemon = Daemon::start_with_users(REMOTE, &[("alice", "write", "pw")]);
    let mut child = std::process::Command::new(binary)
        .args(["-d", "-n", "--raw", "--timeout", "10"])
        .args(["-u", "alice@localhost", "-p", "pw", "-j"])
        .arg(daemon.xmpp.unwrap().to_string())
        .arg("alice@localhost")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(list_domain().as_bytes()).unwrap();
    }
    let output = wait_with_deadline(child, Duration::from_secs(30));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"),
        "{text}"
    );
    assert!(text.contains("<jid>alice@localhost/"), "bound: {text}");
    let reply = text
        .find("<LDM_interface version='1.0' xmlns")
        .map(|at| &text[at..])
        .unwrap_or_else(|| panic!("no LDM reply in go-sendxmpp's debug output: {text}"));
    assert!(reply.contains("<status>success</status>"), "{reply}");
    assert!(reply.contains("primary"), "{reply}");
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .ok_or(())
}

/// Waits for `child`, killing it past `deadline`, so no test leaves a process behind.
fn wait_with_deadline(mut child: std::process::Child, deadline: Duration) -> std::process::Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn whitespace_after_starttls_is_discarded_and_anything_else_refused() {
    let daemon = Daemon::start(REMOTE);
    // Whitespace in a read of its own, before the first TLS record.
    let mut client = daemon.tcp();
    client.send(HEADER);
    client.read_until("</stream:features>");
    client.send(STARTTLS);
    client.read_until("<proceed");
    client.send("\r\n");
    client.start_tls();
    client.send(HEADER);
    assert!(client.read_until("</stream:features>").contains("PLAIN"));
    // Whitespace, then a command: injection, refused and never processed.
    let mut client = daemon.tcp();
    client.send(HEADER);
    client.read_until("</stream:features>");
    client.send(&format!("{STARTTLS}\n<presence/>"));
    assert_eq!(
        client.read_to_close(),
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>"
    );
}
