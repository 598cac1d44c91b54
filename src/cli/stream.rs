//! The client's side of an XMPP stream, as far as `ldm` needs it: the daemon's bytes in, what
//! each top-level element means out. Pure: the caller reads and writes the socket.
//!
//! ```text
//!  handle_bytes(&[u8]) ──▶ framer (the daemon's own, with client-sized limits)
//!  poll_incoming()     ◀── Header | Features | Proceed | SaslSuccess | SaslFailure | Reply
//!                          | Event | StreamError | StreamEnd | Other
//!  restart()               after <proceed/> (and TLS) or <success/>: a new header follows
//! ```
//!
//! "Need more bytes" is `Ok(None)`. Anything the daemon sends that is not XML, or a reply that
//! cannot be read, is a [`StreamFault`]: the caller ends the connection with a clear message.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

use crate::ldm::reply::{EventDoc, Reply, ReplyError, parse_event, parse_reply};
use crate::xml::{
    Element, FrameError, FrameKind, Framer, FramerLimits, HeaderTag, Namespace, NamespaceScope,
};

/// Largest document the client accepts: the daemon's default `reply_bytes_max`, so whatever the
/// daemon is willing to send, `ldm` reads.
pub const REPLY_BYTES_MAX: usize = crate::limits::REPLY_BYTES_MAX_DEFAULT;

/// One thing the daemon said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// The daemon's stream header (each restart brings a new one).
    Header,
    Features(Features),
    /// `<proceed/>`: start TLS now.
    Proceed,
    /// `<failure/>` in the TLS namespace.
    TlsFailure,
    SaslSuccess,
    /// The SASL failure condition (`not-authorized`, ...) and its text, if any.
    SaslFailure(String),
    /// The stream error condition and its text, if any; the stream is over.
    StreamError(String),
    /// An `LDM_interface` reply, with its text as received (for `ldm xml`).
    Reply {
        raw: String,
        reply: Reply,
    },
    Event(EventDoc),
    /// `</stream:stream>`
    StreamEnd,
    /// Any other element (an iq answer, a presence): its local name.
    Other(String),
}

/// What `<stream:features>` offers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Features {
    pub starttls: bool,
    /// SASL mechanisms (ldmd offers PLAIN).
    pub mechanisms: Vec<String>,
}

/// Why the daemon's bytes cannot be read any further.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamFault {
    #[error("the daemon sent malformed XML ({0})")]
    Frame(FrameError),
    #[error("the daemon sent malformed XML ({0})")]
    Parse(String),
    #[error("the daemon's reply could not be read: {0}")]
    Reply(ReplyError),
}

/// The reading half of a client stream.
#[derive(Debug)]
pub struct ClientStream {
    framer: Framer,
    /// Received and not yet framed.
    buf: Vec<u8>,
    /// Declarations of the daemon's current header.
    scope: NamespaceScope,
}

impl Default for ClientStream {
    fn default() -> Self {
        ClientStream::new()
    }
}

impl ClientStream {
    pub fn new() -> ClientStream {
        // The daemon's replies may be as large as its own reply limit, from the first byte.
        let limits = FramerLimits {
            stanza_bytes_max: REPLY_BYTES_MAX,
            preauth_stanza_bytes_max: REPLY_BYTES_MAX,
            ..FramerLimits::default()
        };
        ClientStream {
            framer: Framer::new(limits),
            buf: Vec::new(),
            scope: NamespaceScope::client(),
        }
    }

    /// Bytes read from the daemon.
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// True when bytes are buffered that no frame has used yet.
    pub fn has_pending(&self) -> bool {
        self.buf.iter().any(|b| !b.is_ascii_whitespace())
    }

    /// A new stream begins at the current position (after `<proceed/>` or `<success/>`).
    pub fn restart(&mut self) {
        self.framer.restart();
        self.scope = NamespaceScope::client();
    }

    /// The next complete thing the daemon said, or `None` until more bytes arrive.
    pub fn poll_incoming(&mut self) -> Result<Option<Incoming>, StreamFault> {
        loop {
            let Some(frame) = self.framer.next(&self.buf).map_err(StreamFault::Frame)? else {
                return Ok(None);
            };
            let bytes = self.buf.get(frame.start..frame.end).unwrap_or_default();
            let text = String::from_utf8_lossy(bytes).into_owned();
            self.buf.drain(..frame.end);
            match frame.kind {
                FrameKind::Whitespace => continue,
                FrameKind::StreamEnd => return Ok(Some(Incoming::StreamEnd)),
                FrameKind::Header => {
                    let header =
                        HeaderTag::parse(&text).map_err(|e| StreamFault::Parse(e.to_string()))?;
                    self.scope = header.scope;
                    return Ok(Some(Incoming::Header));
                }
                FrameKind::Element => return self.element(text).map(Some),
            }
        }
    }

    fn element(&self, text: String) -> Result<Incoming, StreamFault> {
        let element =
            Element::parse(&text, &self.scope).map_err(|e| StreamFault::Parse(e.to_string()))?;
        let incoming = match (element.local_name(), element.namespace) {
            ("features", Namespace::Streams) => Incoming::Features(features(&element)),
            ("error", Namespace::Streams) => Incoming::StreamError(condition(&element)),
            ("proceed", Namespace::Tls) => Incoming::Proceed,
            ("failure", Namespace::Tls) => Incoming::TlsFailure,
            ("success", Namespace::Sasl) => Incoming::SaslSuccess,
            ("failure", Namespace::Sasl) => Incoming::SaslFailure(condition(&element)),
            ("LDM_interface", _) => {
                let reply = parse_reply(&element).map_err(StreamFault::Reply)?;
                drop(element);
                Incoming::Reply { raw: text, reply }
            }
            ("LDM_event", _) => Incoming::Event(parse_event(&element).map_err(StreamFault::Reply)?),
            (other, _) => Incoming::Other(other.to_owned()),
        };
        Ok(incoming)
    }
}

fn features(element: &Element<'_>) -> Features {
    Features {
        starttls: element.child("starttls", Namespace::Tls).is_some(),
        mechanisms: element
            .child("mechanisms", Namespace::Sasl)
            .map(|m| {
                m.elements()
                    .filter(|e| e.local_name() == "mechanism")
                    .map(|e| e.text().trim().to_owned())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// `condition` or `condition: text` of a stream error or SASL failure.
fn condition(element: &Element<'_>) -> String {
    let name = element
        .elements()
        .find(|e| e.local_name() != "text")
        .map_or("undefined-condition", |e| e.local_name());
    match element.child_local("text").map(|t| t.text()) {
        Some(text) if !text.trim().is_empty() => format!("{name}: {}", text.trim()),
        _ => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ldm::document::Status;

    /// What ldmd sends a remote client up to its first reply and event, then a stream error.
    const TRANSCRIPT: &str = concat!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='1' from='localhost' version='1.0'>",
        "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>",
        "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
        " \n",
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/><text>bad password</text></failure>",
        "<LDM_interface version='1.3'><cmd><action>list-domain</action><data version='3.0'/><response><status>success</status></response></cmd><response><status>success</status></response></LDM_interface>",
        "<LDM_event version='1.1'><cmd><action>add-domain</action><data version='3.0'><Envelope><References/><Content id='ldg1'/></Envelope></data></cmd></LDM_event>",
        "<iq type='result' id='b'/>",
        "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
        "</stream:stream>",
    );

    fn kinds(items: &[Incoming]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Incoming::Reply { reply, .. } => format!("Reply({:?})", reply.status),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn drain(stream: &mut ClientStream, out: &mut Vec<Incoming>) {
        while let Some(incoming) = stream.poll_incoming().unwrap() {
            out.push(incoming);
        }
    }

    #[test]
    fn the_daemons_stream_reads_the_same_split_at_every_byte() {
        let mut whole = ClientStream::new();
        whole.handle_bytes(TRANSCRIPT.as_bytes());
        let mut expected = Vec::new();
        drain(&mut whole, &mut expected);
        assert_eq!(
            kinds(&expected),
            [
                "Header",
                "Features(Features { starttls: true, mechanisms: [] })",
                "Proceed",
                "SaslFailure(\"not-authorized: bad password\")",
                "Reply(Success)",
                "Event(EventDoc { action: \"add-domain\", data: [Data { version: Some(\"3.0\"), envelope: Some(Envelope { contents: [Content { id: \"ldg1\", sections: [] }], sections: [] }) }] })",
                "Other(\"iq\")",
                "StreamError(\"policy-violation\")",
                "StreamEnd",
            ]
        );
        for split in 1..TRANSCRIPT.len() {
            let mut stream = ClientStream::new();
            let mut got = Vec::new();
            stream.handle_bytes(&TRANSCRIPT.as_bytes()[..split]);
            drain(&mut stream, &mut got);
            stream.handle_bytes(&TRANSCRIPT.as_bytes()[split..]);
            drain(&mut stream, &mut got);
            assert_eq!(got, expected, "split at {split}");
        }
    }

    #[test]
    fn a_reply_keeps_its_text_and_a_restart_reads_a_new_header() {
        let mut stream = ClientStream::new();
        stream.handle_bytes(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'><success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
        assert_eq!(stream.poll_incoming().unwrap(), Some(Incoming::Header));
        assert_eq!(stream.poll_incoming().unwrap(), Some(Incoming::SaslSuccess));
        stream.restart();
        let reply = "<LDM_interface version='1.0'><response><status>failure</status><resp_msg>no</resp_msg></response></LDM_interface>";
        stream.handle_bytes(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>");
        stream.handle_bytes(reply.as_bytes());
        assert_eq!(stream.poll_incoming().unwrap(), Some(Incoming::Header));
        match stream.poll_incoming().unwrap() {
            Some(Incoming::Reply { raw, reply: parsed }) => {
                assert_eq!(raw, reply);
                assert_eq!(parsed.status, Status::Failure);
                assert_eq!(parsed.failures(), ["no"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(!stream.has_pending());
    }

    #[test]
    fn garbage_from_the_daemon_is_a_fault_not_a_panic() {
        for bytes in [
            &b"HTTP/1.1 400 Bad Request\r\n\r\n"[..],
            b"<stream:stream version='1.0'><!-- hi -->",
            b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>text",
            b"\xff\xfe<",
            b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><LDM_interface><x></y></LDM_interface>",
        ] {
            let mut stream = ClientStream::new();
            stream.handle_bytes(bytes);
            let mut result = Ok(None);
            for _ in 0..4 {
                result = stream.poll_incoming();
                if !matches!(result, Ok(Some(_))) {
                    break;
                }
            }
            assert!(result.is_err(), "{:?}: {result:?}", String::from_utf8_lossy(bytes));
        }
    }
}
