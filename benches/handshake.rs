//! Logins per second: a whole client-to-server handshake against the pure [`Connection`], in
//! memory: no sockets, no threads. One iteration is one login, as ldm-load and every management
//! client do it: stream header, STARTTLS, TLS 1.2 (an in-memory rustls client; the server's
//! ECDSA P-256 certificate is generated once, outside the timed loop), restarted stream, SASL
//! PLAIN, restarted stream, resource bind.
//!
//! The SASL verdict is answered at once, as the verifier does for credentials it remembers.
//! A password that must be hashed costs one argon2id verification on the verifier pool, off the
//! I/O thread; the `argon2id` group measures that alone, with the parameters `ldmd user add`
//! hashes with.
//!
//! Each variant is measured twice: `server` counts only the time spent inside the
//! `Connection`'s `handle_*`/`poll_*` calls (what the daemon's I/O thread pays per login), and
//! `client+server` the whole exchange, the in-memory client included. `full_tls` disables the
//! client's session cache; `resumed_tls` keeps one client config, so rustls resumes the TLS
//! session from the server's session cache, as real clients do when they reconnect.
//!
//! `cargo bench --bench handshake`

use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, ProtocolVersion};

use ldmd::config::Limits;
use ldmd::ldm::Role;
use ldmd::server::OsRandom;
use ldmd::server::certs;
use ldmd::xmpp::{Connection, ConnectionConfig, Event, Identity, Peer, StreamConfig};

const DOMAIN: &str = "localhost";
const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
const STARTTLS: &[u8] = b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
/// `\0bench\0secret`
const AUTH: &[u8] =
    b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGJlbmNoAHNlY3JldA==</auth>";
const BIND: &[u8] = b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bench</resource></bind></iq>";
/// Rounds of the TLS handshake loop before giving up (a full TLS 1.2 handshake needs two).
const TLS_FLIGHTS_MAX: usize = 8;

/// The server's configuration as `ldmd` builds it (default limits, TLS 1.2 only, OS-random
/// stream ids), and a client that trusts its certificate.
fn configs() -> (Arc<ConnectionConfig>, ClientConfig) {
    let (cert_pem, key_pem) = certs::generate(&[DOMAIN.to_owned()]).expect("certificate");
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
    let identity = certs::Identity {
        chain: vec![cert.clone()],
        key,
    };
    let tls = certs::server_config(identity, false).expect("server config");
    let limits = Limits::default();
    let server = Arc::new(ConnectionConfig {
        stream: Arc::new(StreamConfig {
            domains: vec![DOMAIN.to_owned()],
            sasl_attempts_max: limits.sasl_attempts_max,
            requests_in_flight_max: limits.requests_in_flight_max,
        }),
        framer: limits.framer(),
        tls,
        ids: Arc::new(OsRandom),
        auth_timeout: limits.auth_timeout(),
        idle_timeout: limits.idle_timeout(),
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("root");
    let client =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    (server, client)
}

/// One login in progress: the server connection, the client's TLS, and a clock for the time
/// spent inside the server.
struct Login {
    server: Connection,
    client: Option<ClientConnection>,
    now: Instant,
    /// Ciphertext or plaintext in flight, reused in both directions.
    wire: Vec<u8>,
    /// What the client read from the server since the last `exchange`.
    reply: Vec<u8>,
    server_time: Duration,
}

impl Login {
    fn new(config: &Arc<ConnectionConfig>) -> Login {
        let started = Instant::now();
        let server = Connection::new(config.clone(), Peer::Remote, started);
        Login {
            server,
            client: None,
            now: started,
            wire: Vec::with_capacity(4096),
            reply: Vec::with_capacity(1024),
            server_time: started.elapsed(),
        }
    }

    /// Runs `f` on the server, adding its time to `server_time`.
    fn on_server<R>(&mut self, f: impl FnOnce(&mut Connection, Instant) -> R) -> R {
        let started = Instant::now();
        let result = f(&mut self.server, self.now);
        self.server_time += started.elapsed();
        result
    }

    /// Delivers what is in `wire` to the server.
    fn deliver(&mut self) {
        let wire = std::mem::take(&mut self.wire);
        self.on_server(|server, now| {
            server.input_buffer().extend_from_slice(&wire);
            server.handle_input(now);
        });
        self.wire = wire;
        self.wire.clear();
    }

    /// Collects the server's writes into `wire`.
    fn transmit(&mut self) {
        let mut wire = std::mem::take(&mut self.wire);
        self.on_server(|server, _| while server.poll_transmit(&mut wire) {});
        self.wire = wire;
    }

    /// Sends `data` as the client (encrypted once TLS is up) and returns the server's answer as
    /// the client reads it.
    fn exchange(&mut self, data: &[u8]) -> &[u8] {
        self.send(data);
        self.receive()
    }

    fn send(&mut self, data: &[u8]) {
        match &mut self.client {
            Some(client) => {
                client.writer().write_all(data).expect("client write");
                while client.wants_write() {
                    client.write_tls(&mut self.wire).expect("client write_tls");
                }
            }
            None => self.wire.extend_from_slice(data),
        }
        self.deliver();
    }

    fn receive(&mut self) -> &[u8] {
        self.transmit();
        self.reply.clear();
        match &mut self.client {
            Some(client) => {
                let mut records = &self.wire[..];
                while !records.is_empty() {
                    client.read_tls(&mut records).expect("client read_tls");
                    client.process_new_packets().expect("client TLS");
                }
                match client.reader().read_to_end(&mut self.reply) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    other => panic!("the server closed the TLS session: {other:?}"),
                }
            }
            None => self.reply.extend_from_slice(&self.wire),
        }
        self.wire.clear();
        &self.reply
    }

    /// The TLS handshake, after `<proceed/>`.
    fn handshake(&mut self, client_config: &Arc<ClientConfig>) {
        let name = ServerName::try_from(DOMAIN).expect("server name");
        let mut client = ClientConnection::new(client_config.clone(), name).expect("client");
        for _ in 0..TLS_FLIGHTS_MAX {
            while client.wants_write() {
                client.write_tls(&mut self.wire).expect("client write_tls");
            }
            if !self.wire.is_empty() {
                self.deliver();
            }
            self.transmit();
            let mut records = &self.wire[..];
            while !records.is_empty() {
                client.read_tls(&mut records).expect("client read_tls");
                client.process_new_packets().expect("client TLS");
            }
            self.wire.clear();
            if !client.is_handshaking() && !client.wants_write() {
                break;
            }
        }
        assert!(!client.is_handshaking(), "the TLS handshake did not finish");
        self.client = Some(client);
    }

    /// Answers the password check the server asked for, as the verifier does from memory.
    fn answer_verify(&mut self) {
        let credentials = self.on_server(|server, now| {
            let mut credentials = None;
            while let Some(event) = server.poll_event() {
                if let Event::Verify(c) = event {
                    credentials = Some(c);
                }
            }
            let c = credentials.expect("the server asked for a password check");
            let identity = Identity {
                user: c.authcid.clone(),
                role: Role::Write,
                credential: 1,
                generation: 0,
            };
            server.handle_auth_result(now, Ok(identity));
            c
        });
        assert_eq!(credentials.authcid, "bench");
    }

    /// Drains the remaining events (the shell does after every input).
    fn drain_events(&mut self) {
        self.on_server(|server, _| while server.poll_event().is_some() {});
    }
}

/// One whole login; returns it finished: the connection authenticated and bound, and the time
/// spent inside it.
fn login(config: &Arc<ConnectionConfig>, client_config: &Arc<ClientConfig>) -> Login {
    let mut login = Login::new(config);
    assert!(login.exchange(HEADER).ends_with(b"</stream:features>"));
    assert!(login.exchange(STARTTLS).starts_with(b"<proceed "));
    login.handshake(client_config);
    login.drain_events();
    assert!(
        login
            .exchange(HEADER)
            .ends_with(b"</mechanisms></stream:features>")
    );
    login.send(AUTH);
    login.answer_verify();
    assert!(login.receive().starts_with(b"<success "));
    assert!(login.exchange(HEADER).ends_with(b"</stream:features>"));
    assert!(
        login
            .exchange(BIND)
            .ends_with(b"<jid>bench@localhost/bench</jid></bind></iq>")
    );
    login.drain_events();
    assert!(login.server.is_authenticated());
    login
}

fn handshake(c: &mut Criterion) {
    let (server, client) = configs();
    let mut full = client.clone();
    full.resumption = Resumption::disabled();
    let variants = [
        ("full_tls", Arc::new(full), HandshakeKind::Full),
        ("resumed_tls", Arc::new(client), HandshakeKind::Resumed),
    ];
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    for (name, client, kind) in &variants {
        // Warm the session caches, and check the variant is the handshake it claims to be.
        login(&server, client);
        let second = login(&server, client);
        let tls = second.client.as_ref().expect("TLS is up");
        assert_eq!(tls.handshake_kind(), Some(*kind), "{name}");
        assert_eq!(tls.protocol_version(), Some(ProtocolVersion::TLSv1_2));

        group.bench_function(format!("{name}/server"), |b| {
            b.iter_custom(|iterations| {
                (0..iterations)
                    .map(|_| black_box(login(&server, client)).server_time)
                    .sum()
            })
        });
        group.bench_function(format!("{name}/client+server"), |b| {
            b.iter(|| black_box(login(&server, client)))
        });
    }
    group.finish();
}

/// One argon2id verification with the parameters `ldmd user add` hashes with (m=19456 KiB,
/// t=2, p=1), as a verifier thread runs it for a password it does not remember.
fn argon2id(c: &mut Criterion) {
    let hash = ldmd::auth::store::hash_password("secret").expect("hash");
    let mut group = c.benchmark_group("argon2id");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("verify", |b| {
        b.iter(|| {
            assert!(ldmd::auth::store::verify_password(
                &hash,
                black_box("secret")
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, handshake, argon2id);
criterion_main!(benches);
