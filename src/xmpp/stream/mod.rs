//! The XMPP client-to-server stream as a pure state machine (RFC 6120).
//!
//! ```text
//!  accept
//!    │
//!    ▼          header          <starttls/>                      TLS up
//!  AwaitHeader ───────▶ Plain ─────────────▶ TlsPending ────────────────▶ AwaitHeader
//!                        features:           (<proceed/> sent;            (restart)
//!                        starttls required    the connection shakes hands)    │ header
//!                                                                            ▼
//!  AwaitHeader ◀──────────────── Verifying ◀──────── <auth> ───────────── Secured
//!  (restart)     <success/>     (password check     ──────▶ <failure/>    features: PLAIN
//!      │                         off-thread)        retries bounded       local peers may
//!      │ header                                                           send documents
//!      ▼
//!    Ready ── bind, iq, LDM documents ──▶ ... ── </stream:stream> or an error ──▶ Closed
//! ```
//!
//! Inputs are `handle_*` calls with parsed headers and elements (the connection frames and
//! parses the bytes); output is XML appended to an [`Outbox`]; what the caller must do next is
//! the returned [`Step`]. Errors are [`StreamError`]s: the caller hands them to [`Stream::fail`],
//! which writes the error and closes. Every restart (after TLS, after SASL) resets the per-stream
//! state in the same call that handles the triggering element.
//!
//! LDM events ([`Stream::handle_event`]) go out only where documents are accepted, between
//! stanzas: in Ready, and in Secured for an authorized local peer. Elsewhere they are dropped.

mod header;
mod stanza;

use std::sync::Arc;

use crate::ldm::{Document, Response, Role};
use crate::limits::Limit;
use crate::xml::{Element, HeaderTag, Namespace, NamespaceScope};
use crate::xmpp::error::{SaslFailure, StreamError, StreamErrorCondition};
use crate::xmpp::jid;
use crate::xmpp::outbox::Outbox;
use crate::xmpp::sasl::{PlainCredentials, parse_plain};

/// Facts shared by every stream, built once from the configuration.
#[derive(Debug)]
pub struct StreamConfig {
    /// The XMPP domains served, lower case; the first is used when a local peer names none.
    pub domains: Vec<String>,
    /// SASL failures allowed before the stream is closed (RFC 6120 §6.4.5 asks for 2 to 5).
    pub sasl_attempts_max: u32,
    /// LDM documents a stream may have in flight before input pauses.
    pub requests_in_flight_max: u32,
}

/// Unpredictable bytes for stream ids and generated resources: the OS CSPRNG in production,
/// something repeatable in tests.
pub trait IdSource: Send + Sync + 'static {
    fn fill(&self, bytes: &mut [u8]);
}

/// Who is on the other end, decided by the shell from the socket before any byte is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// Must authenticate with SASL.
    Remote,
    /// Authenticated by the kernel's credentials of the peer process; SASL is optional.
    Local { uid: u32, role: Role },
}

/// A successful SASL authentication, as the verifier reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub role: Role,
    /// Identifies the password the user logged in with: a stream opened with a password that
    /// has since changed is ended.
    pub credential: u64,
    /// The version of the user store the verdict was made against: a change of the store
    /// announced to the I/O thread before this verdict arrived is applied to it at once.
    pub generation: u64,
}

/// What the caller must do after a `handle_*` call.
#[derive(Debug)]
pub enum Step {
    Continue,
    /// The peer asked for TLS: the caller checks that no plaintext follows, then calls
    /// [`Stream::proceed_tls`] (and starts the handshake) or [`Stream::refuse_tls`].
    StartTls,
    /// Check these credentials off the I/O thread, then call [`Stream::handle_auth_result`].
    /// Input pauses until then.
    Verify(PlainCredentials),
    /// Hand this document to the LDM handler with the peer's role; its response comes back
    /// through [`Stream::handle_response`].
    Document(Document, Role),
    /// The stream restarted: reset the framer at the current input position.
    Restart,
    /// Leave this element unread and stop reading until `wants_input()` is true again; it is
    /// read again then.
    Defer,

    /// Everything is written: flush the outbox and close the connection.
    Close,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the client's stream header (at start and after every restart).
    AwaitHeader,
    /// Before TLS: only `<starttls/>` moves on.
    Plain,
    /// `<proceed/>` sent; the connection runs the TLS handshake.
    TlsPending,
    /// TLS up, not authenticated by SASL. `challenged`: an empty `<auth/>` got an empty challenge.
    Secured {
        challenged: bool,
    },
    /// A password check is out; input waits.
    Verifying,
    /// Authenticated and restarted.
    Ready,
    /// The peer closed its stream; we answer outstanding documents, then close ours.
    Draining,
    Closed,
}

/// One XMPP stream, from the first header to the close. About 150 bytes.
pub struct Stream {
    config: Arc<StreamConfig>,
    ids: Arc<dyn IdSource>,
    peer: Peer,
    phase: Phase,
    /// TLS is established.
    secured: bool,
    /// Set by SASL success.
    identity: Option<Identity>,
    /// The full JID once a resource is bound.
    bound: Option<Box<str>>,
    /// Index into `config.domains` of the domain this stream addresses.
    domain: usize,
    /// The domain (index) the first header's `to` named (`None` inside when absent): restarts
    /// must name the same.
    first_to: Option<Option<usize>>,
    header_sent: bool,
    /// The peer sent the lenient legacy header (local LDM clients): one write per message.
    legacy: bool,
    /// Namespaces in scope for the stream's stanzas.
    scope: Arc<NamespaceScope>,
    sasl_failures: u32,
    /// The user name of the SASL login in progress, as the client sent it.
    attempted_user: Option<String>,
    /// The last SASL failure sent, and the user name it was for, until the caller takes it.
    failure_to_report: Option<(SaslFailure, Option<String>)>,
    /// `temporary-auth-failure` answers, limited by the same number as failures.
    temporary_failures: u32,
    in_flight: u32,
    /// Shutdown requested: no new input, close once outstanding documents are answered.
    shutting_down: bool,
    /// An `<auth>` waits, unread, for the answers to documents in flight.
    auth_deferred: bool,
}

impl Stream {
    pub fn new(config: Arc<StreamConfig>, ids: Arc<dyn IdSource>, peer: Peer) -> Self {
        debug_assert!(!config.domains.is_empty());
        Self {
            config,
            ids,
            peer,
            phase: Phase::AwaitHeader,
            secured: false,
            identity: None,
            bound: None,
            domain: 0,
            first_to: None,
            header_sent: false,
            legacy: false,
            scope: NamespaceScope::shared_client(),
            sasl_failures: 0,
            attempted_user: None,
            failure_to_report: None,
            temporary_failures: 0,
            in_flight: 0,
            shutting_down: false,
            auth_deferred: false,
        }
    }

    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// The namespaces in scope for stanzas of the current stream.
    pub fn scope(&self) -> &NamespaceScope {
        &self.scope
    }

    /// True when the next input is a stream header.
    pub fn awaits_header(&self) -> bool {
        self.phase == Phase::AwaitHeader
    }

    /// True when more input may be processed now (not waiting for a password check, not over
    /// the in-flight document limit, not closing).
    pub fn wants_input(&self) -> bool {
        !self.shutting_down
            && self.in_flight < self.config.requests_in_flight_max
            && (!self.auth_deferred || self.in_flight == 0)
            && !matches!(
                self.phase,
                Phase::Verifying | Phase::Draining | Phase::Closed
            )
    }

    /// True once the stream is authorized to exchange documents (SASL, or a local peer on TLS).
    pub fn is_authenticated(&self) -> bool {
        match self.phase {
            Phase::Ready | Phase::Draining => true,
            Phase::Secured { .. } => self.is_authorized_local(),
            _ => self.identity.is_some(),
        }
    }

    /// A local peer whose uid maps to a role. A local uid mapped to nothing is not treated as
    /// authenticated: it keeps the authentication deadline (and the idle timeout), so that any
    /// local user cannot hold connections forever.
    pub fn is_authorized_local(&self) -> bool {
        matches!(self.peer, Peer::Local { role, .. } if role != Role::None)
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The peer sent the legacy header: each message must go out in a write of its own.
    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// The role documents from this stream carry.
    pub fn role(&self) -> Role {
        match (&self.identity, self.peer) {
            (Some(identity), _) => identity.role,
            (None, Peer::Local { role, .. }) => role,
            (None, Peer::Remote) => Role::None,
        }
    }

    /// The domain this stream addresses (an index into the configured domains, never empty).
    fn domain_name(&self) -> &str {
        self.config
            .domains
            .get(self.domain)
            .map_or("", String::as_str)
    }

    /// The SASL failure this stream sent last, whether the verifier or the stream itself
    /// decided it, with the user name the client gave when it got that far (reported once).
    pub fn take_sasl_failure(&mut self) -> Option<(SaslFailure, Option<String>)> {
        self.failure_to_report.take()
    }

    /// The user this stream authenticated as with SASL, if it did.
    pub fn sasl_user(&self) -> Option<&str> {
        self.identity.as_ref().map(|i| i.user.as_str())
    }

    /// The identity this stream authenticated as with SASL, if it did.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// The user store changed: `account` is what it now says of this stream's user (its role
    /// and credential), `None` when the user is gone. A removed account, or a password changed
    /// since this stream logged in, ends the stream with `not-authorized`; a changed role
    /// applies to the next document.
    pub fn handle_account(&mut self, account: Option<(Role, u64)>) -> Result<(), StreamError> {
        let Some(identity) = &mut self.identity else {
            return Ok(()); // not a SASL stream: local peers are authorized by uid
        };
        if identity.role == Role::Resolve {
            // A migration resolver's token is not an account of the users file.
            return Ok(());
        }
        match account {
            None => Err(StreamError::with_text(
                StreamErrorCondition::NotAuthorized,
                "the account was removed",
            )),
            Some((_, credential)) if credential != identity.credential => {
                Err(StreamError::with_text(
                    StreamErrorCondition::NotAuthorized,
                    "the account's password was changed",
                ))
            }
            Some((role, _)) => {
                identity.role = role;
                Ok(())
            }
        }
    }

    /// The client's stream header (RFC 6120 §4.2, §4.7).
    pub fn handle_header(
        &mut self,
        tag: &HeaderTag<'_>,
        out: &mut Outbox,
    ) -> Result<Step, StreamError> {
        debug_assert_eq!(self.phase, Phase::AwaitHeader);
        header::accept(self, tag, out)?;
        self.phase = match (self.secured, &self.identity) {
            (false, _) => Phase::Plain,
            (true, None) => Phase::Secured { challenged: false },
            (true, Some(_)) => Phase::Ready,
        };
        header::write_features(self, out);
        Ok(Step::Continue)
    }

    /// One top-level element of the stream.
    pub fn handle_element(
        &mut self,
        element: &Element<'_>,
        out: &mut Outbox,
    ) -> Result<Step, StreamError> {
        use StreamErrorCondition as C;
        let ns = element.namespace;
        let name = element.local_name();
        if ns == Namespace::Undeclared {
            return Err(StreamError::with_text(
                C::BadNamespacePrefix,
                "undeclared prefix on a top-level element",
            ));
        }
        if ns == Namespace::Streams {
            return if name == "error" {
                Ok(self.close(out)) // the peer reports an error and goes away
            } else {
                Err(StreamError::with_text(
                    C::UnsupportedStanzaType,
                    "unexpected stream element",
                ))
            };
        }
        match self.phase {
            Phase::Plain => match (ns, name) {
                (Namespace::Tls, "starttls") => Ok(Step::StartTls),
                (Namespace::Sasl, "auth") => {
                    self.sasl_failure(SaslFailure::EncryptionRequired, out)
                }
                _ if is_stanza(element) => Err(StreamError::with_text(
                    C::NotAuthorized,
                    "TLS is required first",
                )),
                _ => Err(unsupported(element)),
            },
            Phase::Secured { challenged } => match (ns, name) {
                // A restart must not overtake answers still owed to the current stream: wait
                // for them (the connection leaves the element unread until then).
                (Namespace::Sasl, "auth") if self.in_flight > 0 => {
                    self.auth_deferred = true;
                    Ok(Step::Defer)
                }
                (Namespace::Sasl, "auth") => self.sasl_auth(element, out),

                (Namespace::Sasl, "response") if challenged => self.sasl_response(element, out),
                (Namespace::Sasl, "response") => {
                    self.sasl_failure(SaslFailure::MalformedRequest, out)
                }
                (Namespace::Sasl, "abort") => self.sasl_failure(SaslFailure::Aborted, out),
                (Namespace::Tls, "starttls") => Err(StreamError::with_text(
                    C::PolicyViolation,
                    "TLS is already established",
                )),
                _ if is_stanza(element) && matches!(self.peer, Peer::Local { .. }) => {
                    self.stanza(element, out)
                }
                _ if is_stanza(element) => Err(StreamError::with_text(
                    C::NotAuthorized,
                    "authenticate first",
                )),
                _ => Err(unsupported(element)),
            },
            Phase::Ready => match ns {
                Namespace::Sasl | Namespace::Tls => Err(StreamError::with_text(
                    C::PolicyViolation,
                    "the stream is already authenticated",
                )),
                _ if is_stanza(element) => self.stanza(element, out),
                _ => Err(unsupported(element)),
            },
            // The connection feeds elements only when the stream wants them; should that ever
            // break, the peer gets a stream error, never a panic.
            Phase::AwaitHeader
            | Phase::TlsPending
            | Phase::Verifying
            | Phase::Draining
            | Phase::Closed => {
                debug_assert!(false, "element in phase {:?}", self.phase);
                Err(StreamError::with_text(
                    C::InternalServerError,
                    "element out of sequence",
                ))
            }
        }
    }

    /// The peer's `</stream:stream>` (RFC 6120 §4.4): answer outstanding documents, then close.
    pub fn handle_stream_end(&mut self, out: &mut Outbox) -> Step {
        if self.in_flight > 0 {
            self.phase = Phase::Draining;
            return Step::Continue;
        }
        self.close(out)
    }

    /// The starttls element was alone in its read: `<proceed/>`, and TLS starts.
    pub fn proceed_tls(&mut self, out: &mut Outbox) {
        out.writer().empty("proceed", &[("xmlns", Namespace::TLS)]);
        out.end_message();
        self.phase = Phase::TlsPending;
    }

    /// Plaintext followed `<starttls/>` in the same read (STARTTLS command injection): refuse
    /// with `<failure/>` and close (RFC 6120 §5.4.2.2).
    pub fn refuse_tls(&mut self, out: &mut Outbox) -> Step {
        out.writer()
            .empty("failure", &[("xmlns", Namespace::TLS)])
            .raw("</stream:stream>");
        out.end_message();
        self.phase = Phase::Closed;
        Step::Close
    }

    /// The TLS handshake finished: the client now sends a new header.
    pub fn tls_established(&mut self) {
        debug_assert_eq!(self.phase, Phase::TlsPending);
        self.secured = true;
        self.restart();
    }

    /// The verifier's answer to a [`Step::Verify`].
    pub fn handle_auth_result(
        &mut self,
        result: Result<Identity, SaslFailure>,
        out: &mut Outbox,
    ) -> Result<Step, StreamError> {
        if self.phase != Phase::Verifying {
            return Ok(Step::Continue); // the stream closed meanwhile
        }
        self.phase = Phase::Secured { challenged: false };
        match result {
            Ok(identity) => {
                out.writer().empty("success", &[("xmlns", Namespace::SASL)]);
                out.end_message();
                self.identity = Some(identity);
                self.attempted_user = None;
                self.restart();
                Ok(Step::Restart)
            }
            Err(failure) => self.sasl_failure(failure, out),
        }
    }

    /// The handler's answer to a [`Step::Document`].
    pub fn handle_response(&mut self, response: &Response, out: &mut Outbox) -> Step {
        debug_assert!(self.in_flight > 0);
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.phase == Phase::Closed {
            return Step::Continue;
        }
        crate::ldm::write_response(out.bytes_mut(), response);
        out.end_message();
        if self.in_flight == 0 {
            self.auth_deferred = false; // a waiting <auth> may now be read
        }
        if self.in_flight == 0 && (self.phase == Phase::Draining || self.shutting_down) {
            return self.finish_after_drain(out);
        }
        Step::Continue
    }

    /// An `LDM_event` document for a subscribed stream: written as a message of its own (the
    /// legacy client parses each read as one document), or dropped when the stream cannot take
    /// it. Returns whether it was written.
    ///
    /// Only an open, authorized stream between stanzas takes events. Mid-SASL, or between
    /// `<success/>` and the new header, an event would land inside the negotiation; draining
    /// and shutting-down streams are closing, and owe the peer nothing but their answers. An
    /// event is not a document in flight: nothing waits for it, so it neither holds back a
    /// restart nor delays the close.
    pub fn handle_event(&mut self, document: &[u8], out: &mut Outbox) -> bool {
        let open = match self.phase {
            Phase::Ready => true,
            Phase::Secured { challenged } => !challenged && self.is_authorized_local(),
            Phase::AwaitHeader
            | Phase::Plain
            | Phase::TlsPending
            | Phase::Verifying
            | Phase::Draining
            | Phase::Closed => false,
        };
        if !open || self.shutting_down || document.is_empty() {
            return false;
        }
        out.push_message(document);
        true
    }

    /// Daemon shutdown: stop taking input, answer what is in flight, then `system-shutdown`.
    pub fn begin_shutdown(&mut self, out: &mut Outbox) -> Step {
        self.shutting_down = true;
        if self.in_flight == 0 || !self.is_authenticated() {
            return self.fail(StreamError::new(StreamErrorCondition::SystemShutdown), out);
        }
        Step::Continue
    }

    /// Writes a stream error (our header first if it was never sent) and closes (§4.9.1).
    pub fn fail(&mut self, error: StreamError, out: &mut Outbox) -> Step {
        if self.phase == Phase::Closed {
            return Step::Close;
        }
        self.ensure_header(out);
        error.write(&mut out.writer());
        self.close(out) // the error and our closing tag go out as one message
    }

    fn finish_after_drain(&mut self, out: &mut Outbox) -> Step {
        if self.shutting_down {
            self.fail(StreamError::new(StreamErrorCondition::SystemShutdown), out)
        } else {
            self.close(out)
        }
    }

    /// Our closing tag, then close.
    fn close(&mut self, out: &mut Outbox) -> Step {
        if self.phase != Phase::Closed {
            self.ensure_header(out); // a close needs an open stream too
            out.writer().raw("</stream:stream>");
            out.end_message();
            self.phase = Phase::Closed;
        }
        Step::Close
    }

    /// Our header, if this stream has not had it yet (errors and closes need an open stream).
    fn ensure_header(&mut self, out: &mut Outbox) {
        if !self.header_sent {
            header::write_header(self, None, out);
        }
    }

    /// RFC 6120 §4.3.3: a new stream on the same connection, with fresh per-stream state.
    fn restart(&mut self) {
        self.phase = Phase::AwaitHeader;
        self.header_sent = false;
        self.scope = NamespaceScope::shared_client();
        self.bound = None;
    }

    fn sasl_auth(&mut self, auth: &Element<'_>, out: &mut Outbox) -> Result<Step, StreamError> {
        if auth.attr("mechanism") != Some("PLAIN") {
            return self.sasl_failure(SaslFailure::InvalidMechanism, out);
        }
        let initial = auth.text();
        if initial.is_empty() {
            // No initial response: an empty challenge asks for it (RFC 6120 §6.4.2).
            out.writer()
                .empty("challenge", &[("xmlns", Namespace::SASL)]);
            out.end_message();
            self.phase = Phase::Secured { challenged: true };
            return Ok(Step::Continue);
        }
        self.sasl_message(&initial, out)
    }

    fn sasl_response(
        &mut self,
        response: &Element<'_>,
        out: &mut Outbox,
    ) -> Result<Step, StreamError> {
        self.phase = Phase::Secured { challenged: false };
        self.sasl_message(&response.text(), out)
    }

    fn sasl_message(&mut self, encoded: &str, out: &mut Outbox) -> Result<Step, StreamError> {
        let mut credentials = match parse_plain(encoded) {
            Ok(credentials) => credentials,
            Err(failure) => return self.sasl_failure(failure, out),
        };
        self.attempted_user = Some(credentials.authcid.clone());
        let domain = self.domain_name();
        // The authcid is a user name; accept `user@<this domain>` too.
        if let Some((local, at_domain)) = credentials.authcid.split_once('@') {
            if !jid::domain_matches(at_domain, domain) {
                return self.sasl_failure(SaslFailure::NotAuthorized, out);
            }
            credentials.authcid = local.to_owned();
        }
        if !jid::is_valid_localpart(&credentials.authcid) {
            return self.sasl_failure(SaslFailure::NotAuthorized, out);
        }
        // RFC 4616 §2: an authzid other than the user's own identity is refused.
        if let Some(authzid) = &credentials.authzid {
            let own = authzid
                .split_once('@')
                .is_some_and(|(l, d)| l == credentials.authcid && jid::domain_matches(d, domain));
            if !own {
                return self.sasl_failure(SaslFailure::InvalidAuthzid, out);
            }
        }
        self.phase = Phase::Verifying;
        Ok(Step::Verify(credentials))
    }

    /// One failed attempt; too many close the stream (RFC 6120 §6.4.5: `policy-violation`).
    fn sasl_failure(
        &mut self,
        failure: SaslFailure,
        out: &mut Outbox,
    ) -> Result<Step, StreamError> {
        failure.write(&mut out.writer());
        out.end_message();
        self.failure_to_report = Some((failure, self.attempted_user.take()));
        // The server being busy is not the client's attempt to spend, but it is counted apart:
        // a client that retries without end would otherwise hold the stream forever.
        if failure == SaslFailure::TemporaryAuthFailure {
            self.temporary_failures = self.temporary_failures.saturating_add(1);
        } else {
            self.sasl_failures = self.sasl_failures.saturating_add(1);
        }
        let max = self.config.sasl_attempts_max;
        if self.sasl_failures >= max || self.temporary_failures >= max {
            return Err(StreamError::limit(
                StreamErrorCondition::PolicyViolation,
                Limit::SaslAttempts,
                "too many authentication attempts",
            ));
        }
        Ok(Step::Continue)
    }

    /// An authorized stanza or LDM document.
    fn stanza(&mut self, element: &Element<'_>, out: &mut Outbox) -> Result<Step, StreamError> {
        match element.local_name() {
            crate::ldm::parse::REQUEST_ROOT => {
                self.in_flight = self.in_flight.saturating_add(1);
                Ok(Step::Document(
                    crate::ldm::parse_document(element),
                    self.role(),
                ))
            }
            "iq" => stanza::iq(self, element, out),
            // Tolerated and ignored: clients send an initial presence; nothing here routes messages.
            _ => Ok(Step::Continue),
        }
    }
}

/// Top-level elements that carry content once the stream is authorized.
fn is_stanza(element: &Element<'_>) -> bool {
    match element.local_name() {
        "iq" | "message" | "presence" => element.namespace == Namespace::Client,
        crate::ldm::parse::REQUEST_ROOT => true,
        _ => false,
    }
}

fn unsupported(element: &Element<'_>) -> StreamError {
    StreamError::with_text(
        StreamErrorCondition::UnsupportedStanzaType,
        format!(
            "unsupported top-level element <{}>",
            element.local_name().chars().take(64).collect::<String>()
        ),
    )
}
