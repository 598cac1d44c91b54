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

use std::fmt;

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
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::NotWellFormed(why) => write!(f, "not well-formed: {why}"),
            FrameError::Restricted(why) => write!(f, "restricted XML: {why}"),
            FrameError::UnsupportedEncoding => f.write_str("only UTF-8 is supported"),
            FrameError::TextBetweenStanzas => f.write_str("character data between stanzas"),
            FrameError::LimitExceeded(limit) => write!(f, "limit {} exceeded", limit.key()),
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

/// The resumable scanner. About 80 bytes; it owns no buffer.
#[derive(Clone, Debug)]
pub struct Framer {
    limits: FramerLimits,
    state: State,
    /// Bytes of the caller's buffer already scanned.
    pos: usize,
    /// Start of the unit being scanned: its `<` (for the header, the declaration is before it).
    frame_start: usize,
    /// Start of the current name, reference or declaration.
    token_start: usize,
    /// Start of the current attribute value.
    value_start: usize,
    /// Element depth inside the current stanza; 0 between stanzas.
    depth: u32,
    /// Attributes seen on the current start tag.
    attributes: u32,
    /// The header has not been framed yet.
    in_header: bool,
    /// The current end tag closes the stream (depth was 0 at `</`).
    closing_stream: bool,
    /// The header's qualified name, to match the stream's end tag (`stream:stream`, `x:stream`).
    header_name: Box<[u8]>,
}

impl Framer {
    pub fn new(limits: FramerLimits) -> Self {
        Self {
            limits,
            state: State::Prolog {
                declaration_allowed: true,
            },
            pos: 0,
            frame_start: 0,
            token_start: 0,
            value_start: 0,
            depth: 0,
            attributes: 0,
            in_header: true,
            closing_stream: false,
            header_name: Box::default(),
        }
    }

    /// Begins a new stream at the current position: the next bytes are a new prolog and header.
    /// Call after consuming the frame that triggered the restart (RFC 6120 §4.3.3).
    pub fn restart(&mut self) {
        *self = Self::new(self.limits);
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
        while self.pos < buf.len() {
            if let Some(frame) = self.step(buf)? {
                self.check_frame(buf, frame)?;
                self.pos = 0;
                self.frame_start = 0;
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

    /// Refuses a partial unit that has already outgrown its limit, before it is complete.
    fn check_pending_size(&self) -> Result<(), FrameError> {
        if self.in_header {
            return self.check_header_size(self.pos);
        }
        if !matches!(self.state, State::TopLevel | State::Ended)
            && self.pos - self.frame_start > self.limits.stanza_bytes_max
        {
            return Err(FrameError::LimitExceeded(Limit::StanzaBytes));
        }
        Ok(())
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
            FrameKind::Element if frame.end - frame.start > self.limits.stanza_bytes_max => {
                return Err(FrameError::LimitExceeded(Limit::StanzaBytes));
            }
            _ => {}
        }
        check_xml_chars(&buf[frame.start..frame.end])
    }

    /// Consumes at least one byte; returns a frame when one completes.
    fn step(&mut self, buf: &[u8]) -> Result<Option<Frame>, FrameError> {
        let byte = buf[self.pos];
        match self.state {
            State::Prolog {
                declaration_allowed,
            } => self.prolog(byte, declaration_allowed)?,
            State::Bom { matched } => {
                if byte != UTF8_BOM[usize::from(matched)] {
                    return Err(FrameError::NotWellFormed("stream does not start with '<'"));
                }
                self.pos += 1;
                self.state = match usize::from(matched) + 1 {
                    3 => State::Prolog {
                        declaration_allowed: true,
                    },
                    _ => State::Bom {
                        matched: matched + 1,
                    },
                };
            }
            State::PrologOpen {
                declaration_allowed,
            } => {
                if byte == b'?' {
                    if !declaration_allowed {
                        return Err(FrameError::Restricted("processing instruction"));
                    }
                    self.pos += 1;
                    self.state = State::DeclarationTarget { matched: 0 };
                } else {
                    self.state = State::Open;
                    self.open(byte)?;
                }
            }
            State::DeclarationTarget { matched } => {
                self.pos += 1;
                match DECLARATION_TARGET.get(usize::from(matched)) {
                    Some(&expected) if byte == expected => {
                        self.state = State::DeclarationTarget {
                            matched: matched + 1,
                        };
                    }
                    None if is_space(byte) => self.state = State::Declaration { question: false },
                    _ => return Err(FrameError::Restricted("processing instruction")),
                }
            }
            State::Declaration { question } => self.declaration(buf, byte, question)?,
            State::TopLevel => self.top_level(byte)?,
            State::Open => self.open(byte)?,
            State::Bang { matched } => self.bang(byte, matched)?,
            State::StartName => {
                self.pos += name_run(&buf[self.pos..]);
                self.check_name_len()?;
                if self.pos < buf.len() {
                    if self.in_header {
                        self.header_name = buf[self.token_start..self.pos].into();
                    }
                    self.state = State::InTag { spaced: false };
                }
            }
            State::InTag { spaced } => return self.in_tag(byte, spaced),
            State::AttrName => {
                self.pos += name_run(&buf[self.pos..]);
                self.check_name_len()?;
                if self.pos < buf.len() {
                    self.state = State::AttrEq;
                }
            }
            State::AttrEq => {
                self.pos += 1;
                match byte {
                    b'=' => self.state = State::AttrQuote,
                    _ if is_space(byte) => {}
                    _ => return Err(FrameError::NotWellFormed("attribute without a value")),
                }
            }
            State::AttrQuote => {
                self.pos += 1;
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
                self.pos += 1;
                if self.in_header {
                    return Err(FrameError::NotWellFormed(
                        "the stream header cannot be empty",
                    ));
                }
                return Ok(self.close_element());
            }
            State::EndName => {
                self.pos += name_run(&buf[self.pos..]);
                self.check_name_len()?;
                if self.pos < buf.len() {
                    self.end_name(buf)?;
                }
            }
            State::EndTail => {
                self.pos += 1;
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
            State::Text { brackets } => self.text(buf, brackets)?,
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
                self.pos += 1;
                self.state = State::PrologOpen {
                    declaration_allowed,
                };
            }
            _ if is_space(byte) => {
                self.pos += 1;
                self.state = State::Prolog {
                    declaration_allowed: false,
                };
            }
            // UTF-16 byte order marks, or UTF-16/32 text (a NUL next to '<').
            0xFE | 0xFF | 0x00 => return Err(FrameError::UnsupportedEncoding),
            _ => return Err(FrameError::NotWellFormed("stream does not start with '<'")),
        }
        Ok(())
    }

    fn declaration(&mut self, buf: &[u8], byte: u8, question: bool) -> Result<(), FrameError> {
        self.pos += 1;
        if self.pos - self.frame_start > DECLARATION_BYTES_MAX {
            return Err(FrameError::NotWellFormed("XML declaration too long"));
        }
        self.state = match byte {
            b'>' if question => {
                check_declaration(&buf[self.frame_start..self.pos])?;
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
                self.pos += 1;
                self.state = State::Open;
            }
            _ if is_space(byte) => self.pos += 1,
            _ => return Err(FrameError::TextBetweenStanzas),
        }
        Ok(())
    }

    /// After `<`: decides between a start tag, an end tag, CDATA and forbidden markup.
    fn open(&mut self, byte: u8) -> Result<(), FrameError> {
        match byte {
            b'/' if self.in_header => {
                return Err(FrameError::NotWellFormed(
                    "end tag before the stream header",
                ));
            }
            b'/' => {
                self.pos += 1;
                self.closing_stream = self.depth == 0;
                self.token_start = self.pos;
                self.state = State::EndName;
            }
            b'?' => return Err(FrameError::Restricted("processing instruction")),
            b'!' if self.depth == 0 => return Err(FrameError::Restricted("comment or DTD")),
            b'!' => {
                self.pos += 1;
                self.state = State::Bang { matched: 0 };
            }
            _ if is_name_start(byte) => {
                if !self.in_header {
                    if self.depth == self.limits.depth_max {
                        return Err(FrameError::LimitExceeded(Limit::Depth));
                    }
                    self.depth += 1;
                }
                self.attributes = 0;
                self.token_start = self.pos;
                self.state = State::StartName;
            }
            _ => return Err(FrameError::NotWellFormed("'<' not followed by a name")),
        }
        Ok(())
    }

    fn bang(&mut self, byte: u8, matched: u8) -> Result<(), FrameError> {
        if matched == 0 && matches!(byte, b'-' | b'D' | b'd') {
            return Err(FrameError::Restricted("comment or DTD"));
        }
        if byte != CDATA_OPEN[usize::from(matched)] {
            return Err(FrameError::NotWellFormed("malformed markup declaration"));
        }
        self.pos += 1;
        let matched = matched + 1;
        self.state = if usize::from(matched) == CDATA_OPEN.len() {
            State::CData { brackets: 0 }
        } else {
            State::Bang { matched }
        };
        Ok(())
    }

    fn in_tag(&mut self, byte: u8, spaced: bool) -> Result<Option<Frame>, FrameError> {
        self.pos += 1;
        match byte {
            b'>' if self.in_header => {
                self.in_header = false;
                self.state = State::TopLevel;
                return Ok(Some(self.frame(FrameKind::Header)));
            }
            b'>' => self.state = TEXT,
            b'/' => self.state = State::SelfClose,
            _ if is_space(byte) => self.state = State::InTag { spaced: true },
            _ if is_name_start(byte) => {
                if !spaced {
                    return Err(FrameError::NotWellFormed(
                        "attributes must be separated by spaces",
                    ));
                }
                self.attributes += 1;
                if self.attributes > self.limits.attributes_max {
                    return Err(FrameError::LimitExceeded(Limit::Attributes));
                }
                self.token_start = self.pos - 1;
                self.state = State::AttrName;
            }
            _ => return Err(FrameError::NotWellFormed("unexpected byte in a start tag")),
        }
        Ok(None)
    }

    fn attr_value(&mut self, buf: &[u8], quote: u8) -> Result<(), FrameError> {
        let rest = &buf[self.pos..];
        // The value's bytes scanned so far, up to (not including) the delimiter found.
        let found = memchr::memchr3(quote, b'<', b'&', rest);
        let value_end = self.pos + found.unwrap_or(rest.len());
        if value_end - self.value_start > self.limits.attribute_value_bytes_max {
            return Err(FrameError::LimitExceeded(Limit::AttributeValueBytes));
        }
        match found {
            None => self.pos = buf.len(),
            Some(i) => {
                self.pos += i + 1;
                match rest[i] {
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

    fn text(&mut self, buf: &[u8], brackets: u8) -> Result<(), FrameError> {
        if brackets > 0 {
            // Inside a run of `]`: one byte at a time until the run ends.
            match buf[self.pos] {
                b']' => {
                    self.pos += 1;
                    self.state = State::Text { brackets: 2 };
                }
                b'>' if brackets >= 2 => {
                    return Err(FrameError::NotWellFormed("']]>' in character data"));
                }
                _ => self.state = TEXT, // this byte is scanned again as plain text
            }
            return Ok(());
        }
        let rest = &buf[self.pos..];
        match memchr::memchr3(b'<', b'&', b']', rest) {
            None => self.pos = buf.len(),
            Some(i) => {
                self.pos += i + 1;
                match rest[i] {
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
        self.pos += 1;
        if byte != b';' {
            if !(is_name_byte(byte) || byte == b'#') {
                return Err(FrameError::NotWellFormed("malformed reference"));
            }
            if self.pos - self.token_start > REFERENCE_BYTES_MAX {
                return Err(FrameError::NotWellFormed("unterminated reference"));
            }
            return Ok(());
        }
        check_reference(&buf[self.token_start..self.pos - 1])?;
        self.state = match quote {
            None => TEXT,
            Some(quote) => State::AttrValue { quote },
        };
        Ok(())
    }

    fn cdata(&mut self, buf: &[u8], mut brackets: u8) {
        while self.pos < buf.len() {
            let byte = buf[self.pos];
            self.pos += 1;
            match byte {
                b']' => brackets = (brackets + 1).min(2),
                b'>' if brackets == 2 => {
                    self.state = TEXT;
                    return;
                }
                _ => {
                    brackets = 0;
                    match memchr::memchr(b']', &buf[self.pos..]) {
                        Some(i) => self.pos += i,
                        None => self.pos = buf.len(),
                    }
                }
            }
        }
        self.state = State::CData { brackets };
    }

    /// The end tag's name is complete (`buf[pos]` is the byte after it).
    fn end_name(&mut self, buf: &[u8]) -> Result<(), FrameError> {
        let name = &buf[self.token_start..self.pos];
        if name.is_empty() {
            return Err(FrameError::NotWellFormed("end tag without a name"));
        }
        if self.closing_stream && *name != *self.header_name {
            return Err(FrameError::NotWellFormed(
                "end tag does not match the stream header",
            ));
        }
        self.state = State::EndTail;
        Ok(())
    }

    /// An element closed (`/>` or its end tag): the stanza is complete when depth returns to 0.
    fn close_element(&mut self) -> Option<Frame> {
        debug_assert!(self.depth > 0);
        self.depth -= 1;
        if self.depth == 0 {
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
        if self.pos - self.token_start > self.limits.name_bytes_max {
            return Err(FrameError::LimitExceeded(Limit::NameBytes));
        }
        Ok(())
    }
}

const UTF8_BOM_FIRST: u8 = 0xEF;

#[cfg(test)]
mod tests;
