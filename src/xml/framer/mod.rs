//! The resumable XML framer: finds the stream header and each complete top-level element in a
//! byte buffer, without copying and without ever rescanning a byte.
//!
//! An XMPP stream is one endless XML document. quick-xml has no push parser, so we frame first:
//! this scanner walks the bytes once, keeps just enough state to resume at any byte boundary,
//! and reports where each complete unit lies in the caller's buffer. The caller then parses that
//! slice in place with a borrowing reader.
//!
//! ```text
//!        BOM? <?xml ...?>? ws* <stream:stream ...>          ws* <elem>...</elem> ws* ... </stream:stream>
//!   Prolog ──────────────────────────────────────▶ TopLevel ──▶ element states ──▶ TopLevel ──▶ Ended
//!            Frame::Header                                     Frame::Element       Frame::StreamEnd
//! ```
//!
//! Calling order: `next(buf)` with every unconsumed byte of the stream so far (earlier bytes
//! unchanged, new bytes appended). It returns `Ok(None)` when it needs more bytes, or a frame; the
//! caller must drop exactly `frame.end` bytes from the front of `buf` before calling again.
//! `restart()` begins a new stream (after STARTTLS or SASL) at the current position.
//!
//! Restricted XML (RFC 6120 §11): no comments, processing instructions, DTDs or entity
//! references beyond the five predefined ones and character references; the XML declaration only
//! at the start of a stream; UTF-8 only. Every complete frame is checked for valid UTF-8 and
//! legal XML characters before it is reported. Every size, depth and count has a limit.
//!
//! Every end tag must name the element it closes (XML 1.0 §3, element type match): the framer
//! keeps the offsets of the open elements' names, relative to the stanza's start in the
//! caller's buffer, and compares the end tag's name with the innermost one as soon as it is
//! complete. So `<a><b></a>` is refused at its `>`, not left waiting for bytes that would never
//! balance it. The offsets of the first levels live in the framer itself; an idle connection
//! holds no buffer for them.
//!
//! A second stream header inside an open stream is refused as soon as its start tag ends: read
//! as a stanza it would swallow everything after it.

use std::fmt;

use smallvec::SmallVec;

pub use crate::limits::Limit;

mod rules;

pub use rules::is_xml_char;

use rules::{
    check_declaration, check_reference, check_xml_chars, is_name_byte, is_name_start, is_space,
    name_run,
};

/// Limits the framer enforces while scanning. See `config::Limits` for the documented defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramerLimits {
    /// Largest top-level element, in bytes (RFC 6120 §13.12: Prosody uses 256 KiB).
    pub stanza_bytes_max: usize,
    /// Largest top-level element until [`Framer::authenticated`] is called.
    pub preauth_stanza_bytes_max: usize,
    /// Largest stream header, XML declaration included, in bytes.
    pub header_bytes_max: usize,
    /// Deepest element nesting inside one stanza (the stanza's root element is depth 1).
    pub depth_max: u32,
    /// Most attributes (namespace declarations included) on one element.
    pub attributes_max: u32,
    /// Longest attribute value, in bytes as written on the wire.
    pub attribute_value_bytes_max: usize,
    /// Longest element or attribute name, in bytes.
    pub name_bytes_max: usize,
}

impl Default for FramerLimits {
    fn default() -> Self {
        Self {
            stanza_bytes_max: 256 * 1024,
            preauth_stanza_bytes_max: 8 * 1024,
            header_bytes_max: 4096,
            depth_max: 32,
            attributes_max: 64,
            attribute_value_bytes_max: 4096,
            name_bytes_max: 256,
        }
    }
}

/// What a frame holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// The stream header start tag (`buf[start..end]` excludes any XML declaration).
    Header,
    /// One complete top-level element.
    Element,
    /// The stream's closing tag.
    StreamEnd,
    /// Only whitespace between stanzas (a keepalive): nothing to parse, just drop it.
    Whitespace,
}

/// One unit found by the framer: its bytes are `buf[start..end]`; the caller then drops `end`
/// bytes (leading whitespace included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub start: usize,
    pub end: usize,
}

/// Why the byte stream cannot go on. Each maps to one stream error condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Not XML: `not-well-formed`.
    NotWellFormed(&'static str),
    /// XML that XMPP forbids (comment, PI, DTD, foreign entity): `restricted-xml`.
    Restricted(&'static str),
    /// An XML declaration naming another encoding, or a UTF-16 byte order mark.
    UnsupportedEncoding,
    /// Character data between stanzas: `bad-format`.
    TextBetweenStanzas,
    /// A configured limit: `policy-violation`.
    LimitExceeded(Limit),
    /// A start tag named like the stream header, at the top level of an open stream: a client
    /// that restarts the stream on its own. `unsupported-stanza-type`.
    NestedHeader,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::NotWellFormed(why) => write!(f, "not well-formed: {why}"),
            FrameError::Restricted(why) => write!(f, "restricted XML: {why}"),
            FrameError::UnsupportedEncoding => f.write_str("only UTF-8 is supported"),
            FrameError::TextBetweenStanzas => f.write_str("character data between stanzas"),
            FrameError::LimitExceeded(limit) => write!(f, "limit {} exceeded", limit.key()),
            FrameError::NestedHeader => f.write_str("a stream header inside an open stream"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Where the scanner is. Each state names what the next byte may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Start of a stream: BOM, declaration, whitespace, then the header's `<`. The declaration
    /// is allowed only before anything else but a BOM.
    Prolog {
        declaration_allowed: bool,
    },
    /// Inside a UTF-8 byte order mark, `matched` bytes of it seen.
    Bom {
        matched: u8,
    },
    /// After `<` in the prolog: `?` starts the declaration, anything else the header.
    PrologOpen {
        declaration_allowed: bool,
    },
    /// After `<?`: `matched` bytes of `xml ` seen; anything else is a processing instruction.
    DeclarationTarget {
        matched: u8,
    },
    /// Inside `<?xml ... ?>`; `question` is true right after a `?`.
    Declaration {
        question: bool,
    },
    /// Between stanzas (depth 0): whitespace, `<`, or the stream's end tag.
    TopLevel,
    /// Just after `<`.
    Open,
    /// After `<!` inside content: only `<![CDATA[` is allowed; `matched` bytes of `[CDATA[`.
    Bang {
        matched: u8,
    },
    /// Element or header name.
    StartName,
    /// Inside a start tag, between attributes. `spaced`: whitespace since the last token.
    InTag {
        spaced: bool,
    },
    AttrName,
    /// After an attribute name, waiting for `=`.
    AttrEq,
    /// After `=`, waiting for the opening quote.
    AttrQuote,
    AttrValue {
        quote: u8,
    },
    /// After `/` in a start tag: only `>` may follow.
    SelfClose,
    EndName,
    /// After an end tag's name: whitespace, then `>`.
    EndTail,
    /// Character data inside an element; `brackets` counts the `]` just seen, because `]]>`
    /// may not appear in character data (XML 1.0 §2.4).
    Text {
        brackets: u8,
    },
    /// Inside `&...;`, in text or in an attribute value (`quote` is then the value's quote).
    Reference {
        quote: Option<u8>,
    },
    /// Inside `<![CDATA[ ... ]]>`; `brackets` counts the `]` just seen.
    CData {
        brackets: u8,
    },
    /// After the stream's end tag: nothing more is read.
    Ended,
}

/// The longest reference we accept between `&` and `;`: `#x10FFFF` needs 8, and leading zeros
/// are legal (`&#x0000041;`), so allow some.
const REFERENCE_BYTES_MAX: usize = 32;
/// The longest XML declaration we accept.
const DECLARATION_BYTES_MAX: usize = 256;
const CDATA_OPEN: &[u8] = b"[CDATA[";
/// Text, with no `]` pending.
const TEXT: State = State::Text { brackets: 0 };
const DECLARATION_TARGET: &[u8] = b"xml";
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
const UTF8_BOM_FIRST: u8 = 0xEF;
/// Open elements whose name offsets live inline; deeper stanzas spill to the heap (LDM
/// documents nest eight deep: `LDM_interface/cmd/data/Envelope/Content/Section/Item/*`).
const OPEN_NAMES_INLINE: usize = 8;

/// The resumable scanner. 168 bytes (a test keeps it so); it owns no buffer.
#[derive(Clone, Debug)]
pub struct Framer {
    limits: FramerLimits,
    /// The stanza size limit in force: `preauth_stanza_bytes_max` until
    /// [`Framer::set_authenticated`], then `stanza_bytes_max`.
    stanza_bytes_max: usize,
    state: State,
    /// Bytes of the caller's buffer already scanned.
    pos: usize,
    /// Start of the unit being scanned: its `<` (for the header, the declaration is before it).
    frame_start: usize,
    /// Start of the current name, reference or declaration.
    token_start: usize,
    /// Start of the current attribute value.
    value_start: usize,
    /// Offsets from `frame_start` of the names of the elements open in the current stanza,
    /// innermost last; their count is the stanza's depth (0 between stanzas).
    open: SmallVec<[u32; OPEN_NAMES_INLINE]>,
    /// Attributes seen on the current start tag.
    attributes: u32,
    /// The header has not been framed yet.
    in_header: bool,
    /// Whitespace in the prolog still allows an XML declaration (a restarted stream: clients
    /// leave a newline after `</auth>`, which is not a command and carries nothing).
    lenient_prolog: bool,
    /// The current end tag closes the stream (depth was 0 at `</`).
    closing_stream: bool,
    /// The header's qualified name, to match the stream's end tag (`stream:stream`, `x:stream`).
    header_name: Box<[u8]>,
}

impl Framer {
    pub fn new(limits: FramerLimits) -> Self {
        Self {
            limits,
            stanza_bytes_max: limits.preauth_stanza_bytes_max,
            state: State::Prolog {
                declaration_allowed: true,
            },
            pos: 0,
            frame_start: 0,
            token_start: 0,
            value_start: 0,
            open: SmallVec::new(),
            attributes: 0,
            in_header: true,
            lenient_prolog: false,
            closing_stream: false,
            header_name: Box::default(),
        }
    }

    /// Begins a new stream at the current position: the next bytes are a new prolog and header.
    /// Call after consuming the frame that triggered the restart (RFC 6120 §4.3.3). The stanza
    /// size limit in force is kept; whitespace before the new declaration is skipped.
    pub fn restart(&mut self) {
        let stanza_bytes_max = self.stanza_bytes_max;
        *self = Self::new(self.limits);
        self.stanza_bytes_max = stanza_bytes_max;
        self.lenient_prolog = true;
    }

    /// Switches between the pre-authentication stanza limit and the full one. Call between
    /// frames, when the stream's authentication changes.
    pub fn set_authenticated(&mut self, authenticated: bool) {
        self.stanza_bytes_max = if authenticated {
            self.limits.stanza_bytes_max
        } else {
            self.limits.preauth_stanza_bytes_max
        };
    }

    /// True when no partial unit is pending, so the caller may release an empty buffer.
    pub fn is_between_frames(&self) -> bool {
        self.pos == 0
    }

    /// True once the stream's end tag was framed.
    pub fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// Scans `buf` from where the last call stopped. See the module documentation.
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<Frame>, FrameError> {
        debug_assert!(self.pos <= buf.len(), "caller dropped unconsumed bytes");
        while let Some(&byte) = buf.get(self.pos) {
            if let Some(frame) = self.step(buf, byte)? {
                self.check_frame(buf, frame)?;
                self.pos = 0;
                self.frame_start = 0;
                if self.open.spilled() {
                    self.open = SmallVec::new(); // a deep stanza's names go with it
                }
                return Ok(Some(frame));
            }
        }
        self.check_pending_size()?;
        if self.state == State::TopLevel && self.pos > 0 {
            // Only whitespace since the last frame: hand it back so the buffer can be released.
            let end = self.pos;
            self.pos = 0;
            return Ok(Some(Frame {
                kind: FrameKind::Whitespace,
                start: end,
                end,
            }));
        }
        Ok(None)
    }

    /// The bytes not scanned yet.
    fn rest<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        buf.get(self.pos..).unwrap_or_default()
    }

    /// Moves past `n` scanned bytes (never beyond the buffer, so never overflows).
    fn bump(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n);
    }

    /// Bytes of the unit being scanned so far.
    fn pending(&self) -> usize {
        self.pos.saturating_sub(self.frame_start)
    }

    /// Refuses a partial unit that has already outgrown its limit, before it is complete.
    fn check_pending_size(&self) -> Result<(), FrameError> {
        if self.in_header {
            return self.check_header_size(self.pos);
        }
        if !matches!(self.state, State::TopLevel | State::Ended)
            && self.pending() > self.stanza_bytes_max
        {
            return Err(FrameError::LimitExceeded(self.stanza_limit()));
        }
        Ok(())
    }

    /// The limit a stanza too large is counted under.
    fn stanza_limit(&self) -> Limit {
        if self.stanza_bytes_max == self.limits.stanza_bytes_max {
            Limit::StanzaBytes
        } else {
            Limit::PreauthStanzaBytes
        }
    }

    fn check_header_size(&self, end: usize) -> Result<(), FrameError> {
        if end > self.limits.header_bytes_max {
            return Err(FrameError::LimitExceeded(Limit::HeaderBytes));
        }
        Ok(())
    }

    /// Size and character checks on a complete frame.
    fn check_frame(&self, buf: &[u8], frame: Frame) -> Result<(), FrameError> {
        match frame.kind {
            FrameKind::Header => self.check_header_size(frame.end)?,
            FrameKind::Element if frame.end.saturating_sub(frame.start) > self.stanza_bytes_max => {
                return Err(FrameError::LimitExceeded(self.stanza_limit()));
            }
            _ => {}
        }
        check_xml_chars(buf.get(frame.start..frame.end).unwrap_or_default())
    }

    /// Consumes at least one byte (`byte` is `buf[pos]`); returns a frame when one completes.
    fn step(&mut self, buf: &[u8], byte: u8) -> Result<Option<Frame>, FrameError> {
        match self.state {
            State::Prolog {
                declaration_allowed,
            } => self.prolog(byte, declaration_allowed)?,
            State::Bom { matched } => {
                if UTF8_BOM.get(usize::from(matched)) != Some(&byte) {
                    return Err(FrameError::NotWellFormed("stream does not start with '<'"));
                }
                self.bump(1);
                let matched = matched.saturating_add(1);
                self.state = if usize::from(matched) == UTF8_BOM.len() {
                    State::Prolog {
                        declaration_allowed: true,
                    }
                } else {
                    State::Bom { matched }
                };
            }
            State::PrologOpen {
                declaration_allowed,
            } => {
                if byte == b'?' {
                    if !declaration_allowed {
                        return Err(FrameError::Restricted("processing instruction"));
                    }
                    self.bump(1);
                    self.state = State::DeclarationTarget { matched: 0 };
                } else {
                    self.state = State::Open;
                    self.open_tag(byte)?;
                }
            }
            State::DeclarationTarget { matched } => {
                self.bump(1);
                match DECLARATION_TARGET.get(usize::from(matched)) {
                    Some(&expected) if byte == expected => {
                        self.state = State::DeclarationTarget {
                            matched: matched.saturating_add(1),
                        };
                    }
                    None if is_space(byte) => self.state = State::Declaration { question: false },
                    _ => return Err(FrameError::Restricted("processing instruction")),
                }
            }
            State::Declaration { question } => self.declaration(buf, byte, question)?,
            State::TopLevel => self.top_level(byte)?,
            State::Open => self.open_tag(byte)?,
            State::Bang { matched } => self.bang(byte, matched)?,
            State::StartName => {
                self.bump(name_run(self.rest(buf)));
                self.check_name_len()?;
                if self.pos < buf.len() {
                    if self.in_header {
                        self.header_name = buf
                            .get(self.token_start..self.pos)
                            .unwrap_or_default()
                            .into();
                    }
                    self.state = State::InTag { spaced: false };
                }
            }
            State::InTag { spaced } => return self.in_tag(buf, byte, spaced),
            State::AttrName => {
                self.bump(name_run(self.rest(buf)));
                self.check_name_len()?;
                if self.pos < buf.len() {
                    self.state = State::AttrEq;
                }
            }
            State::AttrEq => {
                self.bump(1);
                match byte {
                    b'=' => self.state = State::AttrQuote,
                    _ if is_space(byte) => {}
                    _ => return Err(FrameError::NotWellFormed("attribute without a value")),
                }
            }
            State::AttrQuote => {
                self.bump(1);
                match byte {
                    b'"' | b'\'' => {
                        self.value_start = self.pos;
                        self.state = State::AttrValue { quote: byte };
                    }
                    _ if is_space(byte) => {}
                    _ => return Err(FrameError::NotWellFormed("attribute value without quotes")),
                }
            }
            State::AttrValue { quote } => self.attr_value(buf, quote)?,
            State::SelfClose => {
                if byte != b'>' {
                    return Err(FrameError::NotWellFormed(
                        "'/' not followed by '>' in a tag",
                    ));
                }
                self.bump(1);
                if self.in_header {
                    return Err(FrameError::NotWellFormed(
                        "the stream header cannot be empty",
                    ));
                }
                return Ok(self.close_element());
            }
            State::EndName => {
                self.bump(name_run(self.rest(buf)));
                self.check_name_len()?;
                if self.pos < buf.len() {
                    self.end_name(buf)?;
                }
            }
            State::EndTail => {
                self.bump(1);
                match byte {
                    b'>' if self.closing_stream => {
                        self.state = State::Ended;
                        return Ok(Some(self.frame(FrameKind::StreamEnd)));
                    }
                    b'>' => return Ok(self.close_element()),
                    _ if is_space(byte) => {}
                    _ => return Err(FrameError::NotWellFormed("unexpected byte in an end tag")),
                }
            }
            State::Text { brackets } => self.text(buf, byte, brackets)?,
            State::Reference { quote } => self.reference(buf, byte, quote)?,
            State::CData { brackets } => self.cdata(buf, brackets),
            State::Ended => self.pos = buf.len(),
        }
        Ok(None)
    }

    fn prolog(&mut self, byte: u8, declaration_allowed: bool) -> Result<(), FrameError> {
        match byte {
            UTF8_BOM_FIRST if self.pos == 0 => self.state = State::Bom { matched: 0 },
            b'<' => {
                self.frame_start = self.pos;
                self.bump(1);
                self.state = State::PrologOpen {
                    declaration_allowed,
                };
            }
            _ if is_space(byte) => {
                self.bump(1);
                self.state = State::Prolog {
                    declaration_allowed: declaration_allowed && self.lenient_prolog,
                };
            }
            // UTF-16 byte order marks, or UTF-16/32 text (a NUL next to '<').
            0xFE | 0xFF | 0x00 => return Err(FrameError::UnsupportedEncoding),
            _ => return Err(FrameError::NotWellFormed("stream does not start with '<'")),
        }
        Ok(())
    }

    fn declaration(&mut self, buf: &[u8], byte: u8, question: bool) -> Result<(), FrameError> {
        self.bump(1);
        if self.pending() > DECLARATION_BYTES_MAX {
            return Err(FrameError::NotWellFormed("XML declaration too long"));
        }
        self.state = match byte {
            b'>' if question => {
                check_declaration(buf.get(self.frame_start..self.pos).unwrap_or_default())?;
                State::Prolog {
                    declaration_allowed: false,
                }
            }
            b'?' => State::Declaration { question: true },
            _ => State::Declaration { question: false },
        };
        Ok(())
    }

    fn top_level(&mut self, byte: u8) -> Result<(), FrameError> {
        match byte {
            b'<' => {
                self.frame_start = self.pos;
                self.bump(1);
                self.state = State::Open;
            }
            _ if is_space(byte) => self.bump(1),
            _ => return Err(FrameError::TextBetweenStanzas),
        }
        Ok(())
    }

    /// After `<`: decides between a start tag, an end tag, CDATA and forbidden markup.
    fn open_tag(&mut self, byte: u8) -> Result<(), FrameError> {
        match byte {
            b'/' if self.in_header => {
                return Err(FrameError::NotWellFormed(
                    "end tag before the stream header",
                ));
            }
            b'/' => {
                self.bump(1);
                self.closing_stream = self.open.is_empty();
                self.token_start = self.pos;
                self.state = State::EndName;
            }
            b'?' => return Err(FrameError::Restricted("processing instruction")),
            b'!' if self.open.is_empty() => return Err(FrameError::Restricted("comment or DTD")),
            b'!' => {
                self.bump(1);
                self.state = State::Bang { matched: 0 };
            }
            _ if is_name_start(byte) => {
                if !self.in_header {
                    if self.open.len() >= self.depth_max() {
                        return Err(FrameError::LimitExceeded(Limit::Depth));
                    }
                    // The stanza is at most 16 MiB (the largest stanza limit), so its offsets
                    // fit 32 bits; a buffer that breaks that is refused rather than truncated.
                    let offset = u32::try_from(self.pending())
                        .map_err(|_| FrameError::LimitExceeded(self.stanza_limit()))?;
                    self.open.push(offset);
                }
                self.attributes = 0;
                self.token_start = self.pos;
                self.state = State::StartName;
            }
            _ => return Err(FrameError::NotWellFormed("'<' not followed by a name")),
        }
        Ok(())
    }

    fn depth_max(&self) -> usize {
        usize::try_from(self.limits.depth_max).unwrap_or(usize::MAX)
    }

    fn bang(&mut self, byte: u8, matched: u8) -> Result<(), FrameError> {
        if matched == 0 && matches!(byte, b'-' | b'D' | b'd') {
            return Err(FrameError::Restricted("comment or DTD"));
        }
        if CDATA_OPEN.get(usize::from(matched)) != Some(&byte) {
            return Err(FrameError::NotWellFormed("malformed markup declaration"));
        }
        self.bump(1);
        let matched = matched.saturating_add(1);
        self.state = if usize::from(matched) == CDATA_OPEN.len() {
            State::CData { brackets: 0 }
        } else {
            State::Bang { matched }
        };
        Ok(())
    }

    fn in_tag(&mut self, buf: &[u8], byte: u8, spaced: bool) -> Result<Option<Frame>, FrameError> {
        self.bump(1);
        match byte {
            b'>' if self.in_header => {
                self.in_header = false;
                self.state = State::TopLevel;
                return Ok(Some(self.frame(FrameKind::Header)));
            }
            b'>' => {
                if self.open.len() == 1 && self.names_the_header(buf) {
                    return Err(FrameError::NestedHeader);
                }
                self.state = TEXT;
            }
            b'/' => self.state = State::SelfClose,
            _ if is_space(byte) => self.state = State::InTag { spaced: true },
            _ if is_name_start(byte) => {
                if !spaced {
                    return Err(FrameError::NotWellFormed(
                        "attributes must be separated by spaces",
                    ));
                }
                self.attributes = self.attributes.saturating_add(1);
                if self.attributes > self.limits.attributes_max {
                    return Err(FrameError::LimitExceeded(Limit::Attributes));
                }
                self.token_start = self.pos.saturating_sub(1);
                self.state = State::AttrName;
            }
            _ => return Err(FrameError::NotWellFormed("unexpected byte in a start tag")),
        }
        Ok(None)
    }

    /// The name of the open element whose name starts `offset` bytes into the stanza.
    fn open_name<'b>(&self, buf: &'b [u8], offset: u32) -> &'b [u8] {
        let start = usize::try_from(offset)
            .ok()
            .and_then(|offset| self.frame_start.checked_add(offset))
            .unwrap_or(usize::MAX);
        let rest = buf.get(start..).unwrap_or_default();
        rest.get(..name_run(rest)).unwrap_or_default()
    }

    /// The stanza's root element has the stream header's local name (`stream`), whatever its
    /// prefix: no stanza is named so, and a client that restarts on its own may pick another.
    fn names_the_header(&self, buf: &[u8]) -> bool {
        self.open.first().is_some_and(|&root| {
            local_part(self.open_name(buf, root)) == local_part(&self.header_name)
        })
    }

    fn attr_value(&mut self, buf: &[u8], quote: u8) -> Result<(), FrameError> {
        let rest = self.rest(buf);
        // The value's bytes scanned so far, up to (not including) the delimiter found.
        let found = memchr::memchr3(quote, b'<', b'&', rest);
        let value_end = self.pos.saturating_add(found.unwrap_or(rest.len()));
        if value_end.saturating_sub(self.value_start) > self.limits.attribute_value_bytes_max {
            return Err(FrameError::LimitExceeded(Limit::AttributeValueBytes));
        }
        match found.and_then(|i| rest.get(i).map(|&delimiter| (i, delimiter))) {
            None => self.pos = buf.len(),
            Some((i, delimiter)) => {
                self.bump(i.saturating_add(1));
                match delimiter {
                    b'<' => return Err(FrameError::NotWellFormed("'<' in an attribute value")),
                    b'&' => {
                        self.token_start = self.pos;
                        self.state = State::Reference { quote: Some(quote) };
                    }
                    _ => self.state = State::InTag { spaced: false },
                }
            }
        }
        Ok(())
    }

    fn text(&mut self, buf: &[u8], byte: u8, brackets: u8) -> Result<(), FrameError> {
        if brackets > 0 {
            // Inside a run of `]`: one byte at a time until the run ends.
            match byte {
                b']' => {
                    self.bump(1);
                    self.state = State::Text { brackets: 2 };
                }
                b'>' if brackets >= 2 => {
                    return Err(FrameError::NotWellFormed("']]>' in character data"));
                }
                _ => self.state = TEXT, // this byte is scanned again as plain text
            }
            return Ok(());
        }
        let rest = self.rest(buf);
        match memchr::memchr3(b'<', b'&', b']', rest)
            .and_then(|i| rest.get(i).map(|&delimiter| (i, delimiter)))
        {
            None => self.pos = buf.len(),
            Some((i, delimiter)) => {
                self.bump(i.saturating_add(1));
                match delimiter {
                    b'<' => self.state = State::Open,
                    b'&' => {
                        self.token_start = self.pos;
                        self.state = State::Reference { quote: None };
                    }
                    _ => self.state = State::Text { brackets: 1 },
                }
            }
        }
        Ok(())
    }

    fn reference(&mut self, buf: &[u8], byte: u8, quote: Option<u8>) -> Result<(), FrameError> {
        self.bump(1);
        if byte != b';' {
            if !(is_name_byte(byte) || byte == b'#') {
                return Err(FrameError::NotWellFormed("malformed reference"));
            }
            if self.pos.saturating_sub(self.token_start) > REFERENCE_BYTES_MAX {
                return Err(FrameError::NotWellFormed("unterminated reference"));
            }
            return Ok(());
        }
        let name_end = self.pos.saturating_sub(1);
        check_reference(buf.get(self.token_start..name_end).unwrap_or_default())?;
        self.state = match quote {
            None => TEXT,
            Some(quote) => State::AttrValue { quote },
        };
        Ok(())
    }

    fn cdata(&mut self, buf: &[u8], mut brackets: u8) {
        while let Some(&byte) = buf.get(self.pos) {
            self.bump(1);
            match byte {
                b']' => brackets = brackets.saturating_add(1).min(2),
                b'>' if brackets == 2 => {
                    self.state = TEXT;
                    return;
                }
                _ => {
                    brackets = 0;
                    match memchr::memchr(b']', self.rest(buf)) {
                        Some(i) => self.bump(i),
                        None => self.pos = buf.len(),
                    }
                }
            }
        }
        self.state = State::CData { brackets };
    }

    /// The end tag's name is complete (`buf[pos]` is the byte after it).
    fn end_name(&mut self, buf: &[u8]) -> Result<(), FrameError> {
        let name = buf.get(self.token_start..self.pos).unwrap_or_default();
        if name.is_empty() {
            return Err(FrameError::NotWellFormed("end tag without a name"));
        }
        if self.closing_stream {
            if *name != *self.header_name {
                return Err(FrameError::NotWellFormed(
                    "end tag does not match the stream header",
                ));
            }
        } else if let Some(&innermost) = self.open.last()
            && self.open_name(buf, innermost) != name
        {
            return Err(FrameError::NotWellFormed(
                "end tag does not match the element it closes",
            ));
        }
        self.state = State::EndTail;
        Ok(())
    }

    /// An element closed (`/>` or its end tag): the stanza is complete when depth returns to 0.
    fn close_element(&mut self) -> Option<Frame> {
        debug_assert!(!self.open.is_empty());
        self.open.pop();
        if self.open.is_empty() {
            self.state = State::TopLevel;
            Some(self.frame(FrameKind::Element))
        } else {
            self.state = TEXT;
            None
        }
    }

    fn frame(&self, kind: FrameKind) -> Frame {
        Frame {
            kind,
            start: self.frame_start,
            end: self.pos,
        }
    }

    fn check_name_len(&self) -> Result<(), FrameError> {
        if self.pos.saturating_sub(self.token_start) > self.limits.name_bytes_max {
            return Err(FrameError::LimitExceeded(Limit::NameBytes));
        }
        Ok(())
    }
}

/// A name without its prefix.
fn local_part(name: &[u8]) -> &[u8] {
    let after = name
        .iter()
        .rposition(|&b| b == b':')
        .map_or(0, |colon| colon.saturating_add(1));
    name.get(after..).unwrap_or_default()
}

#[cfg(test)]
mod tests;
