//! A shared harness for the pure [`Connection`](crate::xmpp::connection::Connection): a server
//! connection and an in-memory rustls client pumped by hand, with a manual clock and predictable
//! stream ids, so that every assertion is on exact bytes.
//!
//! Used by the RFC 6120 checklist (`src/xmpp/checklist/`) and the fuzz targets (`src/fuzz.rs`).
//! Not part of the daemon: nothing in it runs unless a test or a fuzz target calls it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::ldm::Role;
use crate::xml::FramerLimits;
use crate::xmpp::connection::{Connection, ConnectionConfig, Event};
use crate::xmpp::stream::{IdSource, Identity, Peer, StreamConfig};

/// Ids that count up: 00..01, 00..02, ... so stream ids are predictable in assertions.
#[derive(Default)]
pub struct CountingIds(AtomicU64);

impl IdSource for CountingIds {
    fn fill(&self, bytes: &mut [u8]) {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        bytes.fill(0);
        let be = n.to_be_bytes();
        let len = bytes.len();
        bytes[len.saturating_sub(8)..].copy_from_slice(&be[8usize.saturating_sub(len)..]);
    }
}

pub struct TestTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
}

/// One certificate for all tests (generation costs a few milliseconds).
pub fn test_tls() -> &'static TestTls {
    static TLS: OnceLock<TestTls> = OnceLock::new();
    TLS.get_or_init(|| {
        let names = vec!["example.com".to_owned(), "localhost".to_owned()];
        let (cert_pem, key_pem) = crate::server::certs::generate(&names).unwrap();
        use rustls::pki_types::pem::PemObject;
        let cert = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let server = crate::server::certs::server_config(
            crate::server::certs::Identity {
                chain: vec![cert.clone()],
                key,
            },
            false,
        )
        .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        TestTls {
            server,
            client: Arc::new(client),
        }
    })
}

pub fn config(
    tweak: impl FnOnce(&mut StreamConfig, &mut ConnectionConfigParts),
) -> Arc<ConnectionConfig> {
    let mut stream = StreamConfig {
        domains: vec!["example.com".into(), "localhost".into()],
        sasl_attempts_max: 3,
        requests_in_flight_max: 4,
    };
    let mut parts = ConnectionConfigParts {
        framer: FramerLimits::default(),
        auth_timeout: Duration::from_secs(30),
        idle_timeout: Some(Duration::from_secs(600)),
    };
    tweak(&mut stream, &mut parts);
    Arc::new(ConnectionConfig {
        stream: Arc::new(stream),
        framer: parts.framer,
        tls: test_tls().server.clone(),
        ids: Arc::new(CountingIds::default()),
        auth_timeout: parts.auth_timeout,
        idle_timeout: parts.idle_timeout,
    })
}

pub struct ConnectionConfigParts {
    pub framer: FramerLimits,
    pub auth_timeout: Duration,
    pub idle_timeout: Option<Duration>,
}

pub const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>";
pub const STARTTLS: &str = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
/// `\0alice\0secret`
pub const AUTH_ALICE: &str =
    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>";

/// The server header written with stream id number `n` (CountingIds).
pub fn server_header(n: u64) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='{n:032x}' from='example.com' version='1.0' xml:lang='en'>"
    )
}

pub const FEATURES_STARTTLS: &str = "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>";
pub const FEATURES_SASL: &str = "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>";
pub const FEATURES_BIND: &str = "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session></stream:features>";

/// A server connection and the client end of it, pumped by hand.
pub struct Pair {
    pub now: Instant,
    pub server: Connection,
    pub client: Option<rustls::ClientConnection>,
    /// Every server write, as the client would see it (decrypted once TLS is up).
    writes: Vec<String>,
}

impl Pair {
    pub fn remote() -> Pair {
        Pair::with(config(|_, _| {}), Peer::Remote)
    }

    pub fn local(role: Role) -> Pair {
        Pair::with(config(|_, _| {}), Peer::Local { uid: 0, role })
    }

    pub fn with(config: Arc<ConnectionConfig>, peer: Peer) -> Pair {
        let now = Instant::now();
        Pair {
            now,
            server: Connection::new(config, peer, now),
            client: None,
            writes: Vec::new(),
        }
    }

    /// Sends bytes to the server: as TLS application data once TLS is up, else as they are.
    pub fn send(&mut self, data: &str) {
        self.send_bytes(data.as_bytes());
    }

    pub fn send_bytes(&mut self, data: &[u8]) {
        match &mut self.client {
            Some(client) => {
                client.writer().write_all(data).unwrap();
                let mut wire = Vec::new();
                while client.wants_write() {
                    client.write_tls(&mut wire).unwrap();
                }
                self.deliver(&wire);
            }
            None => self.deliver(data),
        }
    }

    /// Raw bytes onto the wire, bypassing the client's TLS.
    pub fn deliver(&mut self, wire: &[u8]) {
        self.server.input_buffer().extend_from_slice(wire);
        self.server.handle_input(self.now);
    }

    /// Everything the server wrote since the last call, concatenated.
    pub fn recv(&mut self) -> String {
        self.recv_writes().concat()
    }

    /// The server's writes since the last call, one string per `poll_transmit`.
    pub fn recv_writes(&mut self) -> Vec<String> {
        self.pump();
        std::mem::take(&mut self.writes)
    }

    fn pump(&mut self) {
        loop {
            let mut out = Vec::new();
            if !self.server.poll_transmit(&mut out) {
                return;
            }
            match &mut self.client {
                Some(client) => {
                    let mut rd = &out[..];
                    while !rd.is_empty() {
                        client.read_tls(&mut rd).unwrap();
                        if client.process_new_packets().is_err() {
                            break;
                        }
                    }
                    let mut plain = Vec::new();
                    match client.reader().read_to_end(&mut plain) {
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
                        Err(e) => panic!("client read: {e}"),
                    }
                    if !plain.is_empty() {
                        self.writes.push(String::from_utf8(plain).unwrap());
                    }
                }
                None => self.writes.push(String::from_utf8_lossy(&out).into_owned()),
            }
        }
    }

    /// Runs the TLS handshake (after `<proceed/>` was received).
    pub fn handshake(&mut self) {
        let name = ServerName::try_from("example.com").unwrap();
        let mut client = rustls::ClientConnection::new(test_tls().client.clone(), name).unwrap();
        for _ in 0..10 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            if !wire.is_empty() {
                self.deliver(&wire);
            }
            let mut out = Vec::new();
            while self.server.poll_transmit(&mut out) {}
            let mut rd = &out[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
                client.process_new_packets().unwrap();
            }
            if !client.is_handshaking() && !client.wants_write() {
                break;
            }
        }
        assert!(!client.is_handshaking(), "TLS handshake did not complete");
        self.client = Some(client);
    }

    /// Header, features, STARTTLS, handshake: ready for the post-TLS header.
    pub fn secure(&mut self) {
        self.send(HEADER);
        assert!(self.recv().ends_with(FEATURES_STARTTLS));
        self.send(STARTTLS);
        assert_eq!(
            self.recv(),
            "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
        );
        self.handshake();
    }

    /// Secured and restarted: the SASL features were received.
    pub fn secured_stream(&mut self) {
        self.secure();
        self.send(HEADER);
        assert!(self.recv().ends_with(FEATURES_SASL));
    }

    /// Authenticated as alice (write) and restarted: the bind features were received.
    pub fn login(&mut self) {
        self.secured_stream();
        self.send(AUTH_ALICE);
        self.expect_verify("alice", "secret");
        self.answer_auth(Ok(Identity {
            user: "alice".into(),
            role: Role::Write,
            credential: 1,
            generation: 0,
        }));
        assert_eq!(
            self.recv(),
            "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
        );
        self.send(HEADER);
        assert!(self.recv().ends_with(FEATURES_BIND));
    }

    pub fn answer_auth(&mut self, result: Result<Identity, crate::xmpp::SaslFailure>) {
        self.server.handle_auth_result(self.now, result);
    }

    /// Drains events, returning them.
    pub fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }

    /// Expects a password check for exactly these credentials among the pending events.
    pub fn expect_verify(&mut self, user: &str, password: &str) {
        let found = self
            .events()
            .into_iter()
            .any(|e| matches!(e, Event::Verify(c) if c.authcid == user && *c.password == password));
        assert!(found, "expected a password check for {user}");
    }

    /// Expects the stream to have ended with `condition`, and the connection to be finished.
    pub fn expect_stream_error(&mut self, condition: &str) -> String {
        let out = self.recv();
        let expected =
            format!("<stream:error><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>");
        assert!(out.contains(&expected), "expected {condition}, got: {out}");
        assert!(
            out.ends_with("</stream:error></stream:stream>"),
            "stream not closed: {out}"
        );
        assert!(self.server.is_finished(), "connection not finished");
        out
    }

    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.server.handle_timeout(self.now);
    }
}
