//! One client connection, sans I/O: the framer, the TLS adapter and the stream state machine
//! composed behind a `handle_*` / `poll_*` interface (as in quinn-proto).
//!
//! Calling order, for the shell:
//! 1. `handle_input(now, &mut buf)` with the bytes received so far; drop the returned count
//!    from the front of `buf` (what remains is a partial TLS record or element).
//! 2. Drain `poll_event()`: password checks to run, documents to hand off, metric facts.
//! 3. `poll_transmit(&mut out)` until it returns false, writing each filled `out` in one write.
//! 4. Deliver answers with `handle_auth_result` / `handle_response`, events of a subscribed
//!    stream with `handle_event`, deadlines with `handle_timeout(now)` (ask `poll_timeout()`
//!    when), and the peer's FIN with `handle_eof`.
//! 5. Close the socket once `is_finished()` and nothing is left to transmit.
//!
//! While `wants_input()` is false (password check out, too many documents in flight, closing)
//! the shell stops reading: back-pressure reaches the peer through TCP.
//!
//! Plaintext is framed where it lies: in the caller's buffer before TLS, and in each decrypted
//! record after it. Only an element split across records is copied, into `partial`, which is
//! released as soon as it empties, so an idle connection holds no input buffer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ldm::{Document, Response, Role};
use crate::limits::Limit;
use crate::xml::{Element, FrameError, FrameKind, Framer, FramerLimits, HeaderTag, ParseError};
use crate::xmpp::error::{SaslFailure, StreamError, StreamErrorCondition};
use crate::xmpp::outbox::Outbox;
use crate::xmpp::sasl::PlainCredentials;
use crate::xmpp::stream::{IdSource, Identity, Peer, Step, Stream, StreamConfig};
use crate::xmpp::tls::{Tls, TlsInput};

/// The first byte of a TLS handshake record (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// RFC 6120 §5.4.3.2, for a peer that still speaks plaintext XML after `<proceed/>`.
const TLS_FAILURE: &str = "<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>";

/// Everything a connection needs from the configuration, shared by all connections.
pub struct ConnectionConfig {
    pub stream: Arc<StreamConfig>,
    pub framer: FramerLimits,
    pub tls: Arc<rustls::ServerConfig>,
    pub ids: Arc<dyn IdSource>,
    /// From accept to authentication.
    pub auth_timeout: Duration,
    /// Without traffic from a remote peer. Local peers are exempt: the local event client waits
    /// silently for hours (ldm-xml-interface.md §1.2). `None` disables it.
    pub idle_timeout: Option<Duration>,
}

/// Work and facts for the shell.
#[derive(Debug)]
pub enum Event {
    /// Check these credentials off the I/O thread; answer with `handle_auth_result`.
    Verify(PlainCredentials),
    /// Hand this document to the LDM handler; answer with `handle_response`.
    Document(Document, Role),
    /// The TLS handshake ended well, `handshake` after its first record arrived.
    TlsEstablished {
        handshake: Duration,
    },
    TlsFailed,
    Authenticated,
    /// A SASL failure was sent, decided by the verifier or by the stream (a malformed
    /// message, an invalid user name), with the user name the client gave, if it got that far.
    AuthFailed {
        failure: SaslFailure,
        user: Option<String>,
    },
    /// A stream error was sent (and the limit behind it, if any).
    StreamError(StreamErrorCondition, Option<Limit>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    Open,
    /// The last bytes are queued: transmit them, then close.
    Closing,
    /// Transmitted everything; the socket can close.
    Finished,
}

pub struct Connection {
    config: Arc<ConnectionConfig>,
    /// Received bytes not yet consumed: a partial element before TLS, a partial record after.
    /// The shell fills it (lending a pooled buffer) and takes it back once it is empty.
    rx: Vec<u8>,
    tls: Option<Box<Tls>>,
    pipe: Pipeline,
    /// Bytes to write exactly as they are: output before TLS, TLS handshake records.
    raw: Vec<u8>,
    /// When the first TLS record arrived: the TLS handshake is timed from there.
    tls_began: Option<Instant>,
    auth_deadline: Instant,
    last_activity: Instant,
    lifecycle: Lifecycle,
}

/// The parts that turn plaintext into stream actions, split from `tls` so that plaintext can be
/// processed while the TLS layer lends out a decrypted record.
struct Pipeline {
    framer: Framer,
    stream: Stream,
    out: Outbox,
    events: VecDeque<Event>,
    /// Plaintext of an element split across TLS records (or input held while paused).
    partial: Vec<u8>,
    /// The stream asked for TLS and nothing followed `<starttls/>`.
    start_tls: bool,
    closing: bool,
}

impl Connection {
    pub fn new(config: Arc<ConnectionConfig>, peer: Peer, now: Instant) -> Self {
        let stream = Stream::new(config.stream.clone(), config.ids.clone(), peer);
        Self {
            pipe: Pipeline {
                framer: Framer::new(config.framer),
                stream,
                out: Outbox::default(),
                events: VecDeque::new(),
                partial: Vec::new(),
                start_tls: false,
                closing: false,
            },
            auth_deadline: later(now, config.auth_timeout),
            last_activity: now,
            config,
            rx: Vec::new(),
            tls: None,
            raw: Vec::new(),
            tls_began: None,
            lifecycle: Lifecycle::Open,
        }
    }

    /// Where the shell appends received bytes. When its capacity is zero the shell may install a
    /// pooled buffer; see [`Connection::take_empty_input_buffer`].
    pub fn input_buffer(&mut self) -> &mut Vec<u8> {
        &mut self.rx
    }

    /// Returns the input buffer if it holds nothing (for the shell's pool), so that an idle
    /// connection holds no read buffer.
    pub fn take_empty_input_buffer(&mut self) -> Option<Vec<u8>> {
        (self.rx.is_empty() && self.rx.capacity() > 0).then(|| std::mem::take(&mut self.rx))
    }

    /// Processes the bytes in the input buffer.
    pub fn handle_input(&mut self, now: Instant) {
        if self.lifecycle != Lifecycle::Open {
            self.rx.clear(); // closing: nothing more is read
            return;
        }
        self.last_activity = now;
        let consumed = match &mut self.tls {
            None => {
                let consumed = self.pipe.process(&self.rx);
                if self.pipe.start_tls {
                    self.rx.drain(..consumed);
                    self.begin_tls();
                    self.after_change();
                    return;
                }
                consumed
            }
            Some(tls) => {
                if self.tls_began.is_none() {
                    // Whitespace after <starttls/> that arrived in a later read, before the first
                    // TLS record: discarded like whitespace in the same read.
                    let blank = self.rx.iter().take_while(|b| is_xml_space(**b)).count();
                    self.rx.drain(..blank);
                    if self.rx.is_empty() {
                        self.after_change();
                        return;
                    }
                }
                let pipe = &mut self.pipe;
                let established_before = tls.is_established();
                let looks_like_tls = self.rx.first() == Some(&TLS_HANDSHAKE_RECORD);
                let raw_before = self.raw.len();
                let since_tls_began =
                    now.saturating_duration_since(*self.tls_began.get_or_insert(now));
                let on_input = |event: TlsInput<'_>| pipe.tls_input(event, since_tls_began);
                match tls.read(&mut self.rx, &mut self.raw, on_input) {
                    Ok(consumed) => consumed,
                    Err(_) => {
                        if !established_before {
                            pipe.events.push_back(Event::TlsFailed);
                            if !looks_like_tls {
                                // Still speaking plaintext XML after <proceed/>: a TLS alert
                                // would be noise to it; say it in XML instead.
                                self.raw.truncate(raw_before);
                                self.raw.extend_from_slice(TLS_FAILURE.as_bytes());
                            }
                        }
                        pipe.closing = true;
                        self.rx.len()
                    }
                }
            }
        };
        self.rx.drain(..consumed);
        self.after_change();
    }

    /// The peer half-closed TCP (or sent close_notify) without closing its stream: answer
    /// documents in flight, then close. A bare FIN is normal for some clients.
    pub fn handle_eof(&mut self, _now: Instant) {
        self.pipe.peer_gone();
        self.after_change();
    }

    /// The verifier's answer to an [`Event::Verify`].
    pub fn handle_auth_result(&mut self, _now: Instant, result: Result<Identity, SaslFailure>) {
        if result.is_ok() {
            self.pipe.events.push_back(Event::Authenticated);
        }
        let step = self
            .pipe
            .stream
            .handle_auth_result(result, &mut self.pipe.out);
        self.pipe.apply(step, 0, 0);
        self.resume();
    }

    /// The handler's answer to an [`Event::Document`].
    pub fn handle_response(&mut self, now: Instant, response: &Response) {
        self.last_activity = now; // the idle clock starts again from the answer
        let step = self
            .pipe
            .stream
            .handle_response(response, &mut self.pipe.out);
        self.pipe.apply(Ok(step), 0, 0);
        self.resume();
    }

    /// An `LDM_event` document for this subscribed stream, from the registry. Written as a
    /// message of its own when the stream is authorized and open, silently dropped otherwise
    /// (before authentication, closing, closed). Returns whether it was written.
    ///
    /// The idle clock is left alone: an event is traffic from us, and a remote peer that only
    /// listens must still show it is alive (whitespace keepalives count), or the idle timeout
    /// ends it. Local peers with a role, such as the FMA event client, are exempt anyway.
    pub fn handle_event(&mut self, _now: Instant, document: &[u8]) -> bool {
        if self.lifecycle != Lifecycle::Open || self.pipe.closing {
            return false;
        }
        self.pipe.stream.handle_event(document, &mut self.pipe.out)
    }

    /// The user this connection authenticated as with SASL, if it did.
    pub fn sasl_user(&self) -> Option<&str> {
        self.pipe.stream.sasl_user()
    }

    /// The identity this connection authenticated as with SASL, if it did.
    pub fn identity(&self) -> Option<&Identity> {
        self.pipe.stream.identity()
    }

    /// The user store changed; see [`Stream::handle_account`].
    pub fn handle_account(&mut self, _now: Instant, account: Option<(Role, u64)>) {
        if self.lifecycle != Lifecycle::Open {
            return;
        }
        if let Err(error) = self.pipe.stream.handle_account(account) {
            self.pipe.fail(error);
            self.after_change();
        }
    }

    /// Daemon shutdown: `system-shutdown` once documents in flight are answered.
    pub fn handle_shutdown(&mut self, _now: Instant) {
        let step = self.pipe.stream.begin_shutdown(&mut self.pipe.out);
        self.pipe.apply(Ok(step), 0, 0);
        self.after_change();
    }

    /// Ends the stream with `error` now (the shell's own limits, a drain deadline).
    pub fn handle_error(&mut self, _now: Instant, error: StreamError) {
        self.pipe.fail(error);
        self.after_change();
    }

    /// Fires the authentication deadline and the idle timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.lifecycle != Lifecycle::Open {
            return;
        }
        if !self.pipe.stream.is_authenticated() && now >= self.auth_deadline {
            let error = StreamError::limit(
                StreamErrorCondition::ConnectionTimeout,
                Limit::AuthTimeout,
                format!(
                    "not authenticated within {} s",
                    self.config.auth_timeout.as_secs()
                ),
            );
            self.handle_error(now, error);
        } else if self.idle_deadline().is_some_and(|deadline| now >= deadline) {
            let error = StreamError::limit(
                StreamErrorCondition::ConnectionTimeout,
                Limit::IdleTimeout,
                "idle for too long",
            );
            self.handle_error(now, error);
        }
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.lifecycle != Lifecycle::Open {
            return None;
        }
        let auth = (!self.pipe.stream.is_authenticated()).then_some(self.auth_deadline);
        match (auth, self.idle_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Idle means no traffic from the peer and nothing owed to it: a client waiting for a long
    /// operation is not idle. Local peers with a role are exempt.
    fn idle_deadline(&self) -> Option<Instant> {
        let stream = &self.pipe.stream;
        if stream.is_authorized_local() || stream.in_flight() > 0 {
            return None;
        }
        self.config
            .idle_timeout
            .map(|idle| later(self.last_activity, idle))
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.pipe.events.pop_front();
        if event.is_none() && self.pipe.events.capacity() > 0 {
            self.pipe.events = VecDeque::new(); // an idle connection keeps no queue capacity
        }
        event
    }

    /// Appends the next bytes to write to `out`; false when there is nothing to write. For a
    /// legacy LDM peer each call yields at most one message, to go out in its own write.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        let start = out.len();
        out.append(&mut self.raw);
        self.raw = Vec::new();
        let messages = &mut self.pipe.out;
        match &mut self.tls {
            Some(tls) if tls.is_established() && !messages.is_empty() => {
                let (bytes, count) = match self.pipe.stream.is_legacy() {
                    true => (messages.first_message().unwrap_or_default(), 1),
                    false => (messages.all_messages(), messages.message_count()),
                };
                if tls.encrypt(bytes, &mut self.rx, out).is_err() {
                    self.pipe.closing = true;
                    self.lifecycle = Lifecycle::Closing;
                }
                messages.consume_messages(count);
            }
            // Closing during the handshake: what the stream wrote can no longer be delivered.
            Some(tls) if !tls.is_established() && self.lifecycle == Lifecycle::Closing => {
                messages.consume_messages(messages.message_count());
            }
            _ => {}
        }
        if self.lifecycle == Lifecycle::Closing && self.pipe.out.is_empty() {
            if let Some(tls) = &mut self.tls {
                tls.close_notify(&mut self.rx, out);
            }
            self.lifecycle = Lifecycle::Finished;
        }
        out.len() > start
    }

    /// The shell may read more input now.
    pub fn wants_input(&self) -> bool {
        self.lifecycle == Lifecycle::Open && self.pipe.stream.wants_input()
    }

    /// Everything is transmitted (after `poll_transmit` returned false): close the socket.
    pub fn is_finished(&self) -> bool {
        self.lifecycle == Lifecycle::Finished
    }

    pub fn is_authenticated(&self) -> bool {
        self.pipe.stream.is_authenticated()
    }

    /// TLS is established (a Unix-socket peer may never use it).
    pub fn is_secured(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.is_established())
    }

    /// The TLS version negotiated (`TLSv1.2`, `TLSv1.3`), once established.
    pub fn tls_version(&self) -> Option<&'static str> {
        self.tls.as_ref().and_then(|tls| tls.version())
    }

    /// LDM documents handed out and not yet answered.
    pub fn requests_in_flight(&self) -> u32 {
        self.pipe.stream.in_flight()
    }

    /// True while input waits in the connection's own buffer (an element split across records).
    pub fn holds_input_buffer(&self) -> bool {
        self.pipe.partial.capacity() > 0
    }

    /// `<proceed/>` is queued: send it in plaintext, and read TLS from now on.
    fn begin_tls(&mut self) {
        self.pipe.start_tls = false;
        self.flush_plaintext_messages();
        match Tls::new(self.config.tls.clone()) {
            Ok(tls) => self.tls = Some(Box::new(tls)),
            Err(_) => {
                self.pipe.events.push_back(Event::TlsFailed);
                self.pipe.closing = true;
            }
        }
    }

    /// Before TLS, messages are written as they are.
    fn flush_plaintext_messages(&mut self) {
        let out = &mut self.pipe.out;
        self.raw.extend_from_slice(out.all_messages());
        out.consume_messages(out.message_count());
    }

    /// Input may resume after an answer: process what was held back.
    fn resume(&mut self) {
        if self.tls.is_some() {
            self.pipe.process_partial();
        }
        self.after_change();
    }

    fn after_change(&mut self) {
        if self.tls.is_none() {
            self.flush_plaintext_messages();
        }
        if self.pipe.closing && self.lifecycle == Lifecycle::Open {
            self.lifecycle = Lifecycle::Closing;
        }
    }
}

impl Pipeline {
    /// What the TLS layer reports, in order.
    fn tls_input(&mut self, input: TlsInput<'_>, since_tls_began: Duration) {
        match input {
            TlsInput::Established => {
                self.events.push_back(Event::TlsEstablished {
                    handshake: since_tls_began,
                });
                self.stream.tls_established();
                self.framer.restart();
            }
            TlsInput::Plaintext(plaintext) => self.feed(plaintext),
            TlsInput::PeerClosed => self.peer_gone(),
        }
    }

    /// Plaintext from one TLS record: framed in place unless earlier bytes are waiting.
    fn feed(&mut self, plaintext: &[u8]) {
        if self.closing {
            return;
        }
        if !self.partial.is_empty() || !self.stream.wants_input() {
            self.partial.extend_from_slice(plaintext);
            self.process_partial();
            return;
        }
        let consumed = self.process(plaintext);
        if consumed < plaintext.len() && !self.closing {
            self.partial
                .extend_from_slice(plaintext.get(consumed..).unwrap_or_default());
        }
    }

    /// Frames what waits in `partial`, as far as the stream wants input.
    fn process_partial(&mut self) {
        if self.partial.is_empty() {
            return;
        }
        let mut partial = std::mem::take(&mut self.partial);
        let consumed = self.process(&partial);
        partial.drain(..consumed);
        self.partial = if partial.is_empty() {
            Vec::new()
        } else {
            partial
        };
    }

    /// Frames and handles complete units at the front of `buf`; returns the bytes consumed.
    fn process(&mut self, buf: &[u8]) -> usize {
        let mut consumed = 0;
        while !self.closing && !self.start_tls && self.stream.wants_input() {
            // An unauthenticated peer gets the smaller stanza limit (it changes between frames).
            self.framer
                .set_authenticated(self.stream.is_authenticated());
            let unread = buf.get(consumed..).unwrap_or_default();
            let frame = match self.framer.next(unread) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(err) => {
                    self.fail(frame_error(err));
                    return buf.len();
                }
            };
            let bytes = unread.get(frame.start..frame.end).unwrap_or_default();
            let step = self.handle_frame(frame.kind, bytes);
            if matches!(step, Ok(Step::Defer)) {
                // Left unread: the framer is between frames, so it finds this one again.
                break;
            }
            let mut end = consumed.saturating_add(frame.end);
            if matches!(step, Ok(Step::StartTls))
                && is_whitespace(buf.get(end..).unwrap_or_default())
            {
                // Whitespace carries no command: clients (mattn/go-xmpp) end <starttls/> with a
                // newline. It is discarded; any other byte is still refused below.
                end = buf.len();
            }
            self.apply(step, end, buf.len());
            consumed = end;
        }
        if self.closing { buf.len() } else { consumed }
    }

    fn handle_frame(&mut self, kind: FrameKind, bytes: &[u8]) -> Result<Step, StreamError> {
        // The framer checked that every frame is UTF-8.
        let text = std::str::from_utf8(bytes).map_err(|_| not_well_formed("invalid UTF-8"))?;
        match kind {
            FrameKind::Whitespace => Ok(Step::Continue),
            FrameKind::Header => {
                if !self.stream.awaits_header() {
                    return Err(not_well_formed("unexpected stream header"));
                }
                let tag = HeaderTag::parse(text).map_err(parse_error)?;
                self.stream.handle_header(&tag, &mut self.out)
            }
            FrameKind::Element => {
                let element = Element::parse(text, self.stream.scope()).map_err(parse_error)?;
                self.stream.handle_element(&element, &mut self.out)
            }
            FrameKind::StreamEnd => Ok(self.stream.handle_stream_end(&mut self.out)),
        }
    }

    /// Acts on a step. `end` is where the triggering frame ended in a buffer of `len` bytes.
    fn apply(&mut self, step: Result<Step, StreamError>, end: usize, len: usize) {
        // Before the step's own events: a failure that also ended the stream comes first.
        if let Some((failure, user)) = self.stream.take_sasl_failure() {
            self.events.push_back(Event::AuthFailed { failure, user });
        }
        match step {
            Ok(Step::Continue | Step::Defer) => {}

            Ok(Step::StartTls) if end < len => {
                // Plaintext pipelined after <starttls/> is never processed (STARTTLS injection).
                self.stream.refuse_tls(&mut self.out);
                self.closing = true;
            }
            Ok(Step::StartTls) => {
                self.stream.proceed_tls(&mut self.out);
                self.start_tls = true;
            }
            Ok(Step::Verify(credentials)) => self.events.push_back(Event::Verify(credentials)),
            Ok(Step::Document(document, role)) => {
                self.events.push_back(Event::Document(document, role))
            }
            Ok(Step::Restart) => self.framer.restart(),
            Ok(Step::Close) => self.closing = true,
            Err(error) => self.fail(error),
        }
    }

    fn fail(&mut self, error: StreamError) {
        if self.stream.is_closed() {
            self.closing = true;
            return;
        }
        self.events
            .push_back(Event::StreamError(error.condition, error.limit));
        self.stream.fail(error, &mut self.out);
        self.closing = true;
        self.partial = Vec::new();
    }

    fn peer_gone(&mut self) {
        if self.stream.is_closed() {
            self.closing = true;
            return;
        }
        let step = self.stream.handle_stream_end(&mut self.out);
        self.apply(Ok(step), 0, 0);
    }
}

/// `now + by`. The durations come from limits with bounded ranges, so this never saturates.
fn later(now: Instant, by: Duration) -> Instant {
    now.checked_add(by).unwrap_or(now)
}

fn is_xml_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

fn is_whitespace(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| is_xml_space(*b))
}

fn not_well_formed(why: impl Into<std::borrow::Cow<'static, str>>) -> StreamError {
    StreamError::with_text(StreamErrorCondition::NotWellFormed, why)
}

/// The one mapping from tree-building errors to stream errors.
fn parse_error(err: ParseError) -> StreamError {
    match err {
        ParseError::NotWellFormed(why) => not_well_formed(why),
        ParseError::UndeclaredPrefix(why) => {
            StreamError::with_text(StreamErrorCondition::BadNamespacePrefix, why)
        }
    }
}

/// The one mapping from framer errors to stream errors.
fn frame_error(err: FrameError) -> StreamError {
    use StreamErrorCondition as C;
    match err {
        FrameError::NotWellFormed(why) => StreamError::with_text(C::NotWellFormed, why),
        FrameError::Restricted(why) => StreamError::with_text(C::RestrictedXml, why),
        FrameError::UnsupportedEncoding => {
            StreamError::with_text(C::UnsupportedEncoding, "only UTF-8 is supported")
        }
        FrameError::TextBetweenStanzas => {
            StreamError::with_text(C::BadFormat, "character data between stanzas")
        }
        FrameError::NestedHeader => StreamError::with_text(
            C::UnsupportedStanzaType,
            "a stream header inside an open stream: the stream restarts only after STARTTLS or SASL success",
        ),
        FrameError::LimitExceeded(limit) => StreamError::limit(
            C::PolicyViolation,
            limit,
            format!("limit {} exceeded", limit.key()),
        ),
    }
}
