//! One open session with the daemon: the stream set-up of the module documentation of
//! [`crate::client`], then requests, events and the close, every wait bounded by a deadline.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use zeroize::Zeroizing;

use super::tls::tls_config;
use super::wire::{Wire, describe_io, open};
use super::{ClientError, Endpoint, Login, Target};
use crate::cli::stream::{ClientStream, Incoming};
use crate::ldm::reply::{EventDoc, Reply};

/// The stream header the client sends; `to` only when a domain is known.
fn header(domain: Option<&str>) -> String {
    let to = domain.map_or(String::new(), |d| {
        let mut escaped = Vec::new();
        crate::xml::writer::push_attr_value(&mut escaped, d);
        format!(" to='{}'", String::from_utf8_lossy(&escaped))
    });
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'{to} version='1.0'>"
    )
}

/// Bytes read from the socket at a time; one buffer for the whole session.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// How long closing the stream may take: it is a courtesy, the work is done.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// A moment to give up at, and the limit it came from (for the message).
#[derive(Clone, Copy, Debug)]
struct Deadline {
    at: Instant,
    limit: Duration,
}

impl Deadline {
    fn after(limit: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + limit,
            limit,
        }
    }

    /// What is left; zero once passed.
    fn left(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }
}

/// One open session with the daemon, ready for documents.
pub struct Session {
    wire: Wire,
    stream: ClientStream,
    /// The endpoint, for messages.
    at: String,
    reply_timeout: Duration,
    /// Where reads land before the stream takes them.
    chunk: Box<[u8]>,
}

impl Session {
    /// Connects, secures and (with a login) authenticates, all within `connect_timeout`. See
    /// the module documentation.
    pub fn connect(target: &Target) -> Result<Session, ClientError> {
        let deadline = Deadline::after(target.connect_timeout);
        let at = target.endpoint.to_string();
        let tls = tls_config(&target.trust)?;
        let sock = open(&target.endpoint, target.connect_timeout).map_err(|e| {
            ClientError::Unreachable {
                at: at.clone(),
                reason: describe_io(&e),
            }
        })?;
        let mut session = Session {
            wire: Wire::Plain(sock),
            stream: ClientStream::new(),
            at,
            reply_timeout: target.reply_timeout,
            chunk: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
        };
        let header = header(target.domain.as_deref());
        session.send(header.as_bytes(), deadline)?;
        session.expect_header(deadline)?;
        let features = session.features(deadline)?;
        if !features.starttls {
            return Err(session.protocol("the daemon does not offer STARTTLS"));
        }
        // STARTTLS must travel alone: the daemon refuses anything after it in the same read.
        session.send(
            b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
            deadline,
        )?;
        match session.next(deadline, "STARTTLS")? {
            Incoming::Proceed if !session.stream.has_pending() => {}
            Incoming::Proceed => return Err(session.protocol("data after <proceed/>")),
            Incoming::TlsFailure => return Err(session.protocol("the daemon refused STARTTLS")),
            other => return Err(session.unexpected(&other)),
        }
        session.start_tls(tls, &target.endpoint, deadline)?;
        session.stream.restart();
        session.send(header.as_bytes(), deadline)?;
        session.expect_header(deadline)?;
        let features = session.features(deadline)?;
        if let Some(login) = &target.login {
            if !features.mechanisms.iter().any(|m| m == "PLAIN") {
                return Err(session.protocol("the daemon does not offer SASL PLAIN"));
            }
            session.authenticate(login, deadline)?;
            session.stream.restart();
            session.send(header.as_bytes(), deadline)?;
            session.expect_header(deadline)?;
            session.features(deadline)?;
        }
        Ok(session)
    }

    /// How long each later request may take (sending it and waiting for its reply).
    pub fn set_reply_timeout(&mut self, timeout: Duration) {
        self.reply_timeout = timeout;
    }

    /// Sends one document and returns its reply: its text as received, and as read. Sending
    /// and waiting share one `reply_timeout`.
    pub fn request(&mut self, document: &[u8]) -> Result<(String, Reply), ClientError> {
        let deadline = Deadline::after(self.reply_timeout);
        self.send(document, deadline)?;
        loop {
            match self.next(deadline, "the reply")? {
                Incoming::Reply { raw, reply } => return Ok((raw, reply)),
                // An event that was committed before the reply: not ours to print here.
                Incoming::Event(_) | Incoming::Other(_) => {}
                other => return Err(self.unexpected(&other)),
            }
        }
    }

    /// Waits for the next event; `None` when the daemon ends the stream or the connection.
    /// A whitespace keepalive goes out after every `keepalive` of silence, so that the
    /// daemon's idle timeout never ends a stream that only listens.
    pub fn next_event(&mut self, keepalive: Duration) -> Result<Option<EventDoc>, ClientError> {
        loop {
            match self.poll_or_read(Deadline::after(keepalive)) {
                Ok(Incoming::Event(event)) => return Ok(Some(event)),
                Ok(Incoming::StreamEnd) => return Ok(None),
                Ok(Incoming::StreamError(condition)) => {
                    return Err(self.protocol(&format!("the daemon ended the stream: {condition}")));
                }
                Ok(_) => {}
                Err(Waited::Timeout) => self.send(b" ", Deadline::after(self.reply_timeout))?,
                Err(Waited::Closed) => return Ok(None),
                Err(Waited::Failed(e)) => return Err(e),
            }
        }
    }

    /// Ends the stream politely (best effort, within `CLOSE_WAIT`).
    pub fn close(mut self) {
        let deadline = Deadline::after(CLOSE_WAIT);
        let _ = self.send(b"</stream:stream>", deadline);
        if let Wire::Tls(tls) = &mut self.wire {
            tls.conn.send_close_notify();
            let _ = tls.conn.complete_io(&mut tls.sock);
        }
    }

    fn authenticate(&mut self, login: &Login, deadline: Deadline) -> Result<(), ClientError> {
        let message = Zeroizing::new(format!("\0{}\0{}", login.user, login.password.as_str()));
        let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*message));
        let auth = Zeroizing::new(format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            encoded.as_str()
        ));
        self.send(auth.as_bytes(), deadline)?;
        match self.next(deadline, "authentication")? {
            Incoming::SaslSuccess => Ok(()),
            Incoming::SaslFailure(reason) => Err(ClientError::Auth {
                user: login.user.clone(),
                at: self.at.clone(),
                reason,
            }),
            other => Err(self.unexpected(&other)),
        }
    }

    fn start_tls(
        &mut self,
        config: Arc<ClientConfig>,
        endpoint: &Endpoint,
        deadline: Deadline,
    ) -> Result<(), ClientError> {
        let name = match endpoint {
            Endpoint::Tcp { host, .. } => match host.parse::<IpAddr>() {
                Ok(ip) => ServerName::IpAddress(ip.into()),
                Err(_) => ServerName::try_from(host.clone())
                    .map_err(|e| ClientError::Setup(format!("'{host}' is not a host name: {e}")))?,
            },
            // Pinned or path-trusted: the name is not what is checked.
            Endpoint::Unix(_) => ServerName::DnsName(
                rustls::pki_types::DnsName::try_from("localhost")
                    .map_err(|e| ClientError::Setup(e.to_string()))?,
            ),
        };
        let tls_error = |at: &str, e: &dyn std::fmt::Display| ClientError::Tls {
            at: at.to_owned(),
            reason: e.to_string(),
        };
        let connection =
            ClientConnection::new(config, name).map_err(|e| tls_error(&self.at, &e))?;
        let Wire::Plain(sock) = std::mem::replace(&mut self.wire, Wire::Gone) else {
            return Err(self.protocol("TLS started twice"));
        };
        let mut tls = StreamOwned::new(connection, sock);
        while tls.conn.is_handshaking() {
            let left = deadline.left();
            if left.is_zero() {
                return Err(self.timeout("the TLS handshake", deadline));
            }
            let _ = tls.sock.set_timeouts(left);
            if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                return Err(match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        self.timeout("the TLS handshake", deadline)
                    }
                    _ => tls_error(&self.at, &tls_reason(&e)),
                });
            }
        }
        self.wire = Wire::Tls(Box::new(tls));
        Ok(())
    }

    /// Writes all of `bytes` before `deadline`: a daemon that stops reading cannot hold the
    /// client forever.
    fn send(&mut self, bytes: &[u8], deadline: Deadline) -> Result<(), ClientError> {
        let left = deadline.left();
        if left.is_zero() {
            return Err(self.timeout("the daemon to read the request", deadline));
        }
        self.wire.set_timeouts(left);
        let result = match &mut self.wire {
            Wire::Plain(s) => s.write_all(bytes).and_then(|()| s.flush()),
            Wire::Tls(t) => t.write_all(bytes).and_then(|()| t.flush()),
            Wire::Gone => Err(io::Error::from(io::ErrorKind::NotConnected)),
        };
        result.map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                self.timeout("the daemon to read the request", deadline)
            }
            _ => self.protocol(&format!("the connection failed: {}", describe_io(&e))),
        })
    }

    fn expect_header(&mut self, deadline: Deadline) -> Result<(), ClientError> {
        match self.next(deadline, "the stream header")? {
            Incoming::Header => Ok(()),
            other => Err(self.unexpected(&other)),
        }
    }

    fn features(
        &mut self,
        deadline: Deadline,
    ) -> Result<crate::cli::stream::Features, ClientError> {
        match self.next(deadline, "stream features")? {
            Incoming::Features(features) => Ok(features),
            other => Err(self.unexpected(&other)),
        }
    }

    /// The next thing the daemon says before `deadline`; the end of the stream is an error.
    fn next(&mut self, deadline: Deadline, waiting: &'static str) -> Result<Incoming, ClientError> {
        match self.poll_or_read(deadline) {
            Ok(Incoming::StreamError(condition)) => {
                Err(self.protocol(&format!("the daemon ended the stream: {condition}")))
            }
            Ok(Incoming::StreamEnd) | Err(Waited::Closed) => Err(self.protocol(&format!(
                "the daemon closed the connection while waiting for {waiting}"
            ))),
            Ok(incoming) => Ok(incoming),
            Err(Waited::Timeout) => Err(self.timeout(waiting, deadline)),
            Err(Waited::Failed(e)) => Err(e),
        }
    }

    fn poll_or_read(&mut self, deadline: Deadline) -> Result<Incoming, Waited> {
        loop {
            match self.stream.poll_incoming() {
                Ok(Some(incoming)) => return Ok(incoming),
                Ok(None) => {}
                Err(fault) => return Err(Waited::Failed(self.protocol(&fault.to_string()))),
            }
            let left = deadline.left();
            if left.is_zero() {
                return Err(Waited::Timeout);
            }
            self.wire.set_timeouts(left);
            let read = match &mut self.wire {
                Wire::Plain(s) => s.read(&mut self.chunk),
                Wire::Tls(t) => t.read(&mut self.chunk),
                Wire::Gone => Ok(0),
            };
            match read {
                Ok(0) => return Err(Waited::Closed),
                Ok(n) => self.stream.handle_bytes(&self.chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(Waited::Timeout);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    return Err(Waited::Closed);
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    return Err(Waited::Failed(ClientError::Tls {
                        at: self.at.clone(),
                        reason: e.to_string(),
                    }));
                }
                Err(e) => {
                    return Err(Waited::Failed(
                        self.protocol(&format!("the connection failed: {}", describe_io(&e))),
                    ));
                }
            }
        }
    }

    fn protocol(&self, reason: &str) -> ClientError {
        ClientError::Protocol {
            at: self.at.clone(),
            reason: reason.to_owned(),
        }
    }

    fn unexpected(&self, incoming: &Incoming) -> ClientError {
        let what = match incoming {
            Incoming::Header => "a new stream header".to_owned(),
            Incoming::Features(_) => "stream features".to_owned(),
            Incoming::Proceed => "<proceed/>".to_owned(),
            Incoming::TlsFailure => "a STARTTLS failure".to_owned(),
            Incoming::SaslSuccess => "<success/>".to_owned(),
            Incoming::SaslFailure(c) => format!("a SASL failure ({c})"),
            Incoming::StreamError(c) => format!("a stream error ({c})"),
            Incoming::Reply { .. } => "an LDM reply".to_owned(),
            Incoming::Event(_) => "an LDM event".to_owned(),
            Incoming::StreamEnd => "the end of the stream".to_owned(),
            Incoming::Other(name) => format!("<{name}>"),
        };
        self.protocol(&format!("unexpected {what}"))
    }

    fn timeout(&self, waiting: &'static str, deadline: Deadline) -> ClientError {
        ClientError::Timeout {
            at: self.at.clone(),
            seconds: deadline.limit.as_secs(),
            waiting,
        }
    }
}

/// rustls's reason inside an I/O error, without the "unexpected error:" of our own refusals.
fn tls_reason(e: &io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::General(reason)) => reason.clone(),
        Some(other) => other.to_string(),
        None => describe_io(e),
    }
}

/// How a wait ended without something to read.
enum Waited {
    Timeout,
    Closed,
    Failed(ClientError),
}

#[cfg(test)]
mod tests {
    use super::super::wire;
    use super::*;

    /// A session over one end of a socket pair whose other end never reads.
    fn stalled_session() -> (Session, std::os::unix::net::UnixStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let session = Session {
            wire: Wire::Plain(wire::Sock::Unix(ours)),
            stream: ClientStream::new(),
            at: "test".into(),
            reply_timeout: Duration::from_millis(200),
            chunk: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
        };
        (session, theirs)
    }

    #[test]
    fn a_daemon_that_stops_reading_cannot_hold_a_request_past_its_deadline() {
        let (mut session, _peer) = stalled_session();
        let started = Instant::now();
        // Far more than the socket buffers hold.
        let document = vec![b' '; 64 << 20];
        match session.request(&document) {
            Err(error @ ClientError::Timeout { .. }) => {
                assert_eq!(
                    error.to_string(),
                    "ldmd at test did not answer within 0 s (waiting for the daemon to read the request)"
                );
                assert_eq!(error.exit_code(), 5);
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("a reply out of nowhere"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_daemon_that_never_answers_times_out_the_reply() {
        let (mut session, _peer) = stalled_session();
        let started = Instant::now();
        let Err(error) = session.request(b"<LDM_interface/>") else {
            panic!("a reply out of nowhere");
        };
        assert!(
            matches!(
                error,
                ClientError::Timeout {
                    waiting: "the reply",
                    ..
                }
            ),
            "{error}"
        );
        assert!(started.elapsed() >= Duration::from_millis(190));
    }

    #[test]
    fn the_header_names_a_domain_only_when_there_is_one() {
        assert!(!header(None).contains(" to="));
        assert!(header(Some("a'b")).contains(" to='a&apos;b'"));
    }
}
