//! The limits, stream errors and SASL outcomes are counted in /metrics.

mod support;

use support::*;

#[test]
fn limit_hits_stream_errors_and_sasl_outcomes_are_counted() {
    let config =
        "tcp_loopback_is_local = false\n[limits]\nstanza_bytes_max = 2048\nsasl_attempts_max = 2";
    let daemon = Daemon::start_with_metrics(config, &[("alice", "write", "pw")]);

    // One stanza over the size limit.
    let mut client = daemon.tcp();
    client.secure();
    client.login("alice", "pw");
    client.send(&format!(
        "<message><body>{}</body></message>",
        "x".repeat(4096)
    ));
    client.read_to_close();

    // Two failed logins: the second is over sasl_attempts_max.
    let mut client = daemon.tcp();
    client.secure();
    for _ in 0..2 {
        client.send(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAG5v</auth>",
        );
        client.read_until("</failure>");
    }
    client.read_to_close();

    std::thread::sleep(std::time::Duration::from_millis(200));
    let body = daemon.scrape();
    let value = |sample: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no sample {sample} in:\n{body}"))
    };
    assert_eq!(
        value("ldmd_limit_hits_total{limit=\"stanza_bytes_max\"}"),
        1.0
    );
    assert_eq!(
        value("ldmd_limit_hits_total{limit=\"sasl_attempts_max\"}"),
        1.0
    );
    assert_eq!(
        value("ldmd_stream_errors_total{condition=\"policy-violation\"}"),
        2.0
    );
    assert_eq!(
        value("ldmd_sasl_authentications_total{result=\"success\"}"),
        1.0
    );
    assert_eq!(
        value("ldmd_sasl_authentications_total{result=\"not-authorized\"}"),
        2.0
    );
    assert_eq!(
        value("ldmd_tls_handshakes_total{result=\"established\"}"),
        2.0
    );
    assert_eq!(
        value("ldmd_connections_accepted_total{transport=\"tcp\"}"),
        2.0
    );
    assert!(
        body.contains("# HELP ldmd_limit_hits_total "),
        "help text is exposed"
    );
}

#[test]
fn idle_authenticated_sessions_hold_no_pooled_buffer() {
    // Issue 2 §3: a connection with no partial element returns its buffer to the pool. (A stanza
    // split across TLS records waits in the connection's own buffer, released as it completes:
    // see the checklist's idle_connection_holds_no_input_buffer.)
    let daemon =
        Daemon::start_with_metrics("tcp_loopback_is_local = false", &[("idle", "read", "pw")]);
    let mut sessions = Vec::new();
    for _ in 0..50 {
        let mut client = daemon.tcp();
        client.secure();
        client.login("idle", "pw");
        sessions.push(client);
    }
    // Traffic borrows buffers and gives them back.
    for session in &mut sessions {
        session.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>");
        session.read_until("/>");
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        daemon.metric("ldmd_connections_open{transport=\"tcp\"}"),
        50.0
    );
    assert_eq!(
        daemon.metric("ldmd_buffer_pool_in_use_buffers"),
        0.0,
        "50 idle sessions hold no buffer"
    );
}
