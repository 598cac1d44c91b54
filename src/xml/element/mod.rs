//! A small element tree borrowed from one framed slice.
//!
//! The framer hands us a complete top-level element; quick-xml tokenizes that slice in place and
//! we build a tree whose names and (unescaped-when-needed) texts borrow from it. Namespaces are
//! resolved against the element's own declarations and then the stream header's, and the ones
//! XMPP cares about are interned as [`Namespace`] so the session compares enums, not URIs.
//!
//! Built only from frames the framer accepted, so the input is already size-, depth- and
//! character-checked; quick-xml adds the end-name match and duplicate-attribute checks.
//!
//! Namespace well-formedness (Namespaces in XML 1.0) is checked here: every element and
//! attribute name is a QName (`a:` or `a:b:c` are not); `xml` may only be bound to its own
//! namespace and nothing else may be; `xmlns` is never declared; no element carries two
//! attributes with the same expanded name (`a:x` and `b:x` with `a` and `b` bound to one URI).
//! A prefix with no declaration in scope is refused in XMPP stanzas. LDM documents keep one
//! leniency, because Oracle's clients and examples write `rasd:`, `gprop:`, `ovf:` and `xsi:`
//! without declaring them: inside an `LDM_interface` (or `LDM_event`) such a prefix is kept,
//! flagged as [`Namespace::Undeclared`], and matched by local name.

use std::borrow::Cow;

use quick_xml::XmlVersion;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

/// Namespaces the daemon recognises; everything else is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Namespace {
    /// No namespace (no default declared, as in the legacy LDM client's stream).
    None,
    /// A prefix was used without a declaration in scope.
    Undeclared,
    Client,
    Streams,
    StreamErrors,
    Tls,
    Sasl,
    Bind,
    Session,
    Stanzas,
    Ping,
    Xml,
    Other,
}

impl Namespace {
    pub const CLIENT: &'static str = "jabber:client";
    pub const STREAMS: &'static str = "http://etherx.jabber.org/streams";
    pub const STREAM_ERRORS: &'static str = "urn:ietf:params:xml:ns:xmpp-streams";
    pub const TLS: &'static str = "urn:ietf:params:xml:ns:xmpp-tls";
    pub const SASL: &'static str = "urn:ietf:params:xml:ns:xmpp-sasl";
    pub const BIND: &'static str = "urn:ietf:params:xml:ns:xmpp-bind";
    pub const SESSION: &'static str = "urn:ietf:params:xml:ns:xmpp-session";
    pub const STANZAS: &'static str = "urn:ietf:params:xml:ns:xmpp-stanzas";
    pub const PING: &'static str = "urn:xmpp:ping";
    pub const XML: &'static str = "http://www.w3.org/XML/1998/namespace";

    /// Interns a namespace URI.
    pub fn from_uri(uri: &str) -> Namespace {
        match uri {
            "" => Namespace::None,
            Self::CLIENT => Namespace::Client,
            Self::STREAMS => Namespace::Streams,
            Self::STREAM_ERRORS => Namespace::StreamErrors,
            Self::TLS => Namespace::Tls,
            Self::SASL => Namespace::Sasl,
            Self::BIND => Namespace::Bind,
            Self::SESSION => Namespace::Session,
            Self::STANZAS => Namespace::Stanzas,
            Self::PING => Namespace::Ping,
            Self::XML => Namespace::Xml,
            _ => Namespace::Other,
        }
    }
}

/// The namespace declarations in scope at the stream's top level, taken from its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceScope {
    pub default: Namespace,
    /// Prefix declarations of the header (bounded by `attributes_max`): prefix, URI, interned.
    pub prefixes: Vec<(Box<str>, Box<str>, Namespace)>,
}

impl NamespaceScope {
    /// The scope of a conforming client stream: `jabber:client` and `stream:`.
    pub fn client() -> Self {
        Self {
            default: Namespace::Client,
            prefixes: vec![(
                "stream".into(),
                Namespace::STREAMS.into(),
                Namespace::Streams,
            )],
        }
    }

    /// The client scope, shared: streams that declare exactly it hold a reference, not a copy.
    pub fn shared_client() -> std::sync::Arc<NamespaceScope> {
        static CLIENT: std::sync::OnceLock<std::sync::Arc<NamespaceScope>> =
            std::sync::OnceLock::new();
        CLIENT
            .get_or_init(|| std::sync::Arc::new(NamespaceScope::client()))
            .clone()
    }

    fn lookup(&self, prefix: Option<&str>) -> Namespace {
        match prefix {
            None => self.default,
            Some(p) => self.resolve(p).map_or(Namespace::Undeclared, |(_, ns)| ns),
        }
    }

    /// The URI and namespace a prefix is bound to, if it is declared.
    fn resolve(&self, prefix: &str) -> Option<(&str, Namespace)> {
        if prefix == XML_PREFIX {
            return Some((Namespace::XML, Namespace::Xml));
        }
        self.prefixes
            .iter()
            .rev()
            .find(|(declared, _, _)| &**declared == prefix)
            .map(|(_, uri, ns)| (&**uri, *ns))
    }
}

const XML_PREFIX: &str = "xml";
const XMLNS_PREFIX: &str = "xmlns";
/// The namespace of `xmlns` itself, which nothing may be bound to.
const XMLNS_URI: &str = "http://www.w3.org/2000/xmlns/";
/// Root elements whose undeclared prefixes are tolerated (LDM documents).
const LENIENT_ROOTS: [&str; 2] = [
    crate::ldm::parse::REQUEST_ROOT,
    crate::ldm::parse::EVENT_ROOT,
];

/// Why a framed slice could not become a tree; each maps to one stream error condition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not well-formed XML, or not namespace-well-formed: `not-well-formed`.
    #[error("not well-formed: {0}")]
    NotWellFormed(String),
    /// A prefix with no declaration in scope, outside LDM documents: `bad-namespace-prefix`.
    #[error("undeclared namespace prefix: {0}")]
    UndeclaredPrefix(String),
}

impl ParseError {
    fn malformed(why: impl Into<String>) -> ParseError {
        ParseError::NotWellFormed(why.into())
    }

    /// The reason, without the condition.
    pub fn message(&self) -> &str {
        match self {
            ParseError::NotWellFormed(why) | ParseError::UndeclaredPrefix(why) => why,
        }
    }
}

impl From<quick_xml::Error> for ParseError {
    fn from(err: quick_xml::Error) -> Self {
        ParseError::malformed(err.to_string())
    }
}

/// An attribute other than a namespace declaration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr<'a> {
    /// The qualified name as written (`type`, `xml:lang`, `ovf:id`).
    pub name: &'a str,
    pub value: Cow<'a, str>,
}

impl Attr<'_> {
    /// The name without its prefix.
    pub fn local_name(&self) -> &str {
        local_part(self.name)
    }
}

/// A child of an element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node<'a> {
    Element(Element<'a>),
    Text(Cow<'a, str>),
}

/// One element, borrowing from the framed slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element<'a> {
    /// The qualified name as written (`iq`, `stream:error`, `rasd:OtherResourceType`).
    pub name: &'a str,
    pub namespace: Namespace,
    pub attrs: Vec<Attr<'a>>,
    pub children: Vec<Node<'a>>,
}

impl<'a> Element<'a> {
    /// Parses one complete element (a framer `Element` frame) in the stream's scope.
    pub fn parse(slice: &'a str, scope: &NamespaceScope) -> Result<Element<'a>, ParseError> {
        Builder::new(scope).build(slice)
    }

    /// The name without its prefix.
    pub fn local_name(&self) -> &'a str {
        local_part(self.name)
    }

    /// True when this element is `local` in `namespace`.
    pub fn is(&self, local: &str, namespace: Namespace) -> bool {
        self.namespace == namespace && self.local_name() == local
    }

    /// An attribute by its qualified name.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.name == name)
            .map(|a| &*a.value)
    }

    /// An attribute by its local name, whatever its prefix (`id` matches `ovf:id`).
    pub fn attr_local(&self, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.local_name() == local)
            .map(|a| &*a.value)
    }

    /// Child elements in document order.
    pub fn elements(&self) -> impl Iterator<Item = &Element<'a>> {
        self.children.iter().filter_map(|node| match node {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element with this local name, whatever its prefix or namespace.
    pub fn child_local(&self, local: &str) -> Option<&Element<'a>> {
        self.elements().find(|e| e.local_name() == local)
    }

    /// The first child element `local` in `namespace`.
    pub fn child(&self, local: &str, namespace: Namespace) -> Option<&Element<'a>> {
        self.elements().find(|e| e.is(local, namespace))
    }

    /// The element's character data (its text children concatenated).
    pub fn text(&self) -> Cow<'a, str> {
        let mut texts = self.children.iter().filter_map(|node| match node {
            Node::Text(t) => Some(t),
            Node::Element(_) => None,
        });
        match (texts.next(), texts.next()) {
            (None, _) => Cow::Borrowed(""),
            (Some(only), None) => only.clone(),
            (Some(first), Some(second)) => {
                let mut all = String::with_capacity(first.len().saturating_add(second.len()));
                all.push_str(first);
                all.push_str(second);
                texts.for_each(|t| all.push_str(t));
                Cow::Owned(all)
            }
        }
    }

    /// True when some element in this tree used an undeclared prefix.
    pub fn has_undeclared_prefix(&self) -> bool {
        self.namespace == Namespace::Undeclared
            || self.elements().any(|e| e.has_undeclared_prefix())
    }
}

/// A parsed stream header start tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderTag<'a> {
    pub name: &'a str,
    pub namespace: Namespace,
    /// The declarations the header makes; the scope of every stanza that follows.
    pub scope: NamespaceScope,
    pub attrs: Vec<Attr<'a>>,
}

impl<'a> HeaderTag<'a> {
    /// Parses the header start tag framed by the framer (`<stream:stream ...>`). Its own
    /// prefix may be undeclared (the legacy LDM client's header declares nothing); the stream
    /// state machine decides what it accepts.
    pub fn parse(slice: &'a str) -> Result<HeaderTag<'a>, ParseError> {
        let mut reader = Reader::from_str(slice);
        match reader.read_event()? {
            Event::Start(start) => {
                let empty = NamespaceScope {
                    default: Namespace::None,
                    prefixes: Vec::new(),
                };
                let mut builder = Builder::new(&empty);
                builder.lenient = true;
                let name = borrowed_name(slice, &start)?;
                check_qname(name)?;
                let (attrs, _) = builder.attributes(slice, &start)?;
                let scope = builder.into_scope();
                let namespace = scope.lookup(prefix_of(name));
                Ok(HeaderTag {
                    name,
                    namespace,
                    scope,
                    attrs,
                })
            }
            _ => Err(ParseError::malformed("stream header expected")),
        }
    }

    pub fn local_name(&self) -> &'a str {
        local_part(self.name)
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.name == name)
            .map(|a| &*a.value)
    }
}

fn local_part(name: &str) -> &str {
    name.split_once(':').map_or(name, |(_, local)| local)
}

fn prefix_of(name: &str) -> Option<&str> {
    name.split_once(':').map(|(prefix, _)| prefix)
}

/// A QName (Namespaces in XML 1.0 §4): an NCName, or two joined by one colon. The framer
/// already checked that the name starts with a name character and holds only name characters.
fn check_qname(name: &str) -> Result<(), ParseError> {
    let ncname = |part: &str| {
        part.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_' || !c.is_ascii())
    };
    let valid = match name.split_once(':') {
        None => ncname(name),
        Some((prefix, local)) => ncname(prefix) && ncname(local) && !local.contains(':'),
    };
    if valid {
        Ok(())
    } else {
        Err(ParseError::malformed(format!(
            "'{}' is not a qualified name",
            name.chars().take(64).collect::<String>()
        )))
    }
}

/// Recovers a `&'a str` for a name quick-xml reports: names are never unescaped, so the bytes
/// always lie inside `slice`.
fn borrowed_name<'a>(slice: &'a str, start: &BytesStart<'a>) -> Result<&'a str, ParseError> {
    subslice(slice, start.name().into_inner())
        .ok_or_else(|| ParseError::malformed("element name outside the frame"))
}

/// Turns a sub-slice of `slice` back into a `&'a str` with the full lifetime.
fn subslice<'a>(slice: &'a str, part: &str) -> Option<&'a str> {
    let base = slice.as_ptr() as usize;
    let at = (part.as_ptr() as usize).checked_sub(base)?;
    slice.get(at..at.checked_add(part.len())?)
}

/// One namespace declaration inside a stanza: the prefix (`None` for the default), the URI.
struct Declaration<'a> {
    prefix: Option<&'a str>,
    uri: Cow<'a, str>,
    namespace: Namespace,
}

/// Builds the tree with an explicit stack: no recursion, so depth is bounded by the framer only.
struct Builder<'s, 'a> {
    stream: &'s NamespaceScope,
    /// Declarations in scope inside the stanza, innermost last.
    declared: Vec<Declaration<'a>>,
    /// Undeclared prefixes are kept and flagged instead of refused (LDM documents, headers).
    lenient: bool,
}

impl<'s, 'a> Builder<'s, 'a> {
    fn new(stream: &'s NamespaceScope) -> Self {
        Self {
            stream,
            declared: Vec::new(),
            lenient: false,
        }
    }

    /// The element namespace of `prefix` (`None`: the default namespace).
    fn lookup(&self, prefix: Option<&str>) -> Namespace {
        if prefix == Some(XML_PREFIX) {
            return Namespace::Xml;
        }
        self.declared
            .iter()
            .rev()
            .find(|d| d.prefix == prefix)
            .map_or_else(|| self.stream.lookup(prefix), |d| d.namespace)
    }

    /// The URI `prefix` is bound to, if it is declared.
    fn resolve(&self, prefix: &str) -> Option<&str> {
        match self
            .declared
            .iter()
            .rev()
            .find(|d| d.prefix == Some(prefix))
        {
            Some(declaration) => Some(&declaration.uri),
            None => self.stream.resolve(prefix).map(|(uri, _)| uri),
        }
    }

    /// A prefix without a declaration: refused, or tolerated and flagged.
    fn undeclared(&self, what: &str, name: &str) -> Result<(), ParseError> {
        if self.lenient {
            return Ok(());
        }
        Err(ParseError::UndeclaredPrefix(format!(
            "{what} '{}' uses a prefix that is not declared",
            name.chars().take(64).collect::<String>()
        )))
    }

    /// Splits attributes from namespace declarations (which it pushes, returning their count).
    fn attributes(
        &mut self,
        slice: &'a str,
        start: &BytesStart<'a>,
    ) -> Result<(Vec<Attr<'a>>, usize), ParseError> {
        let mut attrs = Vec::new();
        let mut declared = 0usize;
        for attr in start.attributes().with_checks(true) {
            let attr = attr.map_err(|e| ParseError::malformed(e.to_string()))?;
            let key = subslice(slice, attr.key.into_inner())
                .ok_or_else(|| ParseError::malformed("attribute name outside the frame"))?;
            check_qname(key)?;
            let value = attribute_value(slice, &attr)?;
            let prefix = if key == XMLNS_PREFIX {
                None
            } else if let Some(prefix) = key.strip_prefix("xmlns:") {
                Some(prefix)
            } else {
                attrs.push(Attr { name: key, value });
                continue;
            };
            check_declaration(prefix, &value)?;
            self.declared.push(Declaration {
                prefix,
                namespace: Namespace::from_uri(&value),
                uri: value,
            });
            declared = declared.saturating_add(1);
        }
        self.check_attribute_names(&attrs)?;
        Ok((attrs, declared))
    }

    /// Every prefixed attribute's prefix is declared (or tolerated), and no two attributes have
    /// the same expanded name (Namespaces in XML 1.0 §6.3).
    fn check_attribute_names(&self, attrs: &[Attr<'a>]) -> Result<(), ParseError> {
        // (the namespace: its URI, or, undeclared and tolerated, the prefix itself; local name)
        let mut expanded: Vec<(Result<&str, &str>, &str)> = Vec::new();
        for attr in attrs {
            let Some((prefix, local)) = attr.name.split_once(':') else {
                continue; // unprefixed: no namespace; quick-xml refuses duplicates
            };
            let identity = match self.resolve(prefix) {
                Some(uri) => Ok(uri),
                None => {
                    self.undeclared("attribute", attr.name)?;
                    Err(prefix)
                }
            };
            if expanded.contains(&(identity, local)) {
                return Err(ParseError::malformed(format!(
                    "two attributes named '{}' in one namespace",
                    local.chars().take(64).collect::<String>()
                )));
            }
            expanded.push((identity, local));
        }
        Ok(())
    }

    fn into_scope(self) -> NamespaceScope {
        let mut scope = NamespaceScope {
            default: Namespace::None,
            prefixes: Vec::new(),
        };
        for declaration in self.declared {
            match declaration.prefix {
                None => scope.default = declaration.namespace,
                Some(prefix) => scope.prefixes.push((
                    prefix.into(),
                    declaration.uri.into(),
                    declaration.namespace,
                )),
            }
        }
        scope
    }

    fn open(
        &mut self,
        slice: &'a str,
        start: &BytesStart<'a>,
        root: bool,
    ) -> Result<(Element<'a>, usize), ParseError> {
        let name = borrowed_name(slice, start)?;
        check_qname(name)?;
        if root {
            self.lenient = LENIENT_ROOTS.contains(&local_part(name));
        }
        let (attrs, declared) = self.attributes(slice, start)?;
        let namespace = self.lookup(prefix_of(name));
        // The root's own namespace is the stream's business (`bad-namespace-prefix` there too).
        if namespace == Namespace::Undeclared && !root {
            self.undeclared("element", name)?;
        }
        Ok((
            Element {
                name,
                namespace,
                attrs,
                children: Vec::new(),
            },
            declared,
        ))
    }

    /// Forgets the declarations an element made, as it closes.
    fn close(&mut self, declared: usize) {
        let keep = self.declared.len().saturating_sub(declared);
        self.declared.truncate(keep);
    }

    fn build(mut self, slice: &'a str) -> Result<Element<'a>, ParseError> {
        let mut reader = Reader::from_str(slice);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.expand_empty_elements = false;
        config.trim_text(false);
        // (element, declarations it pushed)
        let mut open: Vec<(Element<'a>, usize)> = Vec::new();
        let mut text = TextRun::default();
        loop {
            let event = reader.read_event()?;
            if !matches!(
                event,
                Event::Text(_) | Event::CData(_) | Event::GeneralRef(_)
            ) && let (Some(t), Some((parent, _))) = (text.take(), open.last_mut())
            {
                parent.children.push(Node::Text(t));
            }
            match event {
                Event::Start(start) => {
                    let root = open.is_empty();
                    open.push(self.open(slice, &start, root)?);
                }
                Event::Empty(start) => {
                    let (element, declared) = self.open(slice, &start, open.is_empty())?;
                    self.close(declared);
                    match open.last_mut() {
                        Some((parent, _)) => parent.children.push(Node::Element(element)),
                        None => return finish(reader, element),
                    }
                }
                Event::End(_) => {
                    let (element, declared) = open
                        .pop()
                        .ok_or_else(|| ParseError::malformed("unbalanced end tag"))?;
                    self.close(declared);
                    match open.last_mut() {
                        Some((parent, _)) => parent.children.push(Node::Element(element)),
                        None => return finish(reader, element),
                    }
                }
                Event::Text(t) => text.push(t.xml10_content()),
                Event::CData(c) => text.push(c.xml10_content()),
                Event::GeneralRef(r) => {
                    let resolved = match r.resolve_char_ref()? {
                        Some(c) => Cow::Owned(c.to_string()),
                        None => {
                            let name: &str = &r;
                            let entity = resolve_predefined_entity(name).ok_or_else(|| {
                                ParseError::malformed(format!("unknown entity {name}"))
                            })?;
                            Cow::Borrowed(entity)
                        }
                    };
                    text.push(resolved);
                }
                Event::Eof => return Err(ParseError::malformed("element is not complete")),
                // The framer refuses these before we ever see them.
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {
                    return Err(ParseError::malformed("restricted XML"));
                }
            }
        }
    }
}

/// The rules of Namespaces in XML 1.0 §3 for one declaration: `xml` only to its own URI and
/// nothing else to that URI; `xmlns` never declared and its URI never bound; no prefix undone.
fn check_declaration(prefix: Option<&str>, uri: &str) -> Result<(), ParseError> {
    let refuse = |why: &str| Err(ParseError::malformed(why));
    match prefix {
        Some(XMLNS_PREFIX) => refuse("the prefix xmlns cannot be declared"),
        Some(XML_PREFIX) if uri != Namespace::XML => {
            refuse("the prefix xml cannot be bound to another namespace")
        }
        Some(XML_PREFIX) => Ok(()),
        _ if uri == Namespace::XML => {
            refuse("only the prefix xml may be bound to the XML namespace")
        }
        _ if uri == XMLNS_URI => refuse("nothing may be bound to the xmlns namespace"),
        Some(prefix) if uri.is_empty() => Err(ParseError::malformed(format!(
            "empty namespace for prefix {}",
            prefix.chars().take(64).collect::<String>()
        ))),
        _ => Ok(()),
    }
}

/// Nothing may follow the element in its frame but whitespace.
fn finish<'a>(
    mut reader: Reader<&'a [u8]>,
    element: Element<'a>,
) -> Result<Element<'a>, ParseError> {
    match reader.read_event()? {
        Event::Eof => Ok(element),
        Event::Text(t) if t.chars().all(|c| c.is_ascii_whitespace()) => Ok(element),
        _ => Err(ParseError::malformed("content after the element")),
    }
}

/// The normalized, unescaped value; borrowed from `slice` when nothing had to change.
fn attribute_value<'a>(slice: &'a str, attr: &Attribute<'_>) -> Result<Cow<'a, str>, ParseError> {
    let value = attr
        .normalized_value(XmlVersion::Implicit1_0)
        .map_err(|e| ParseError::malformed(e.to_string()))?;
    Ok(match value {
        Cow::Borrowed(v) => {
            subslice(slice, v).map_or_else(|| Cow::Owned(v.to_owned()), Cow::Borrowed)
        }
        Cow::Owned(v) => Cow::Owned(v),
    })
}

/// Adjacent text, CDATA and references merged into one node; borrowed when it is one piece.
#[derive(Default)]
struct TextRun<'a> {
    text: Option<Cow<'a, str>>,
}

impl<'a> TextRun<'a> {
    fn push(&mut self, piece: Cow<'a, str>) {
        self.text = Some(match self.text.take() {
            None => piece,
            Some(mut acc) => {
                acc.to_mut().push_str(&piece);
                acc
            }
        });
    }

    fn take(&mut self) -> Option<Cow<'a, str>> {
        self.text.take()
    }
}

#[cfg(test)]
mod tests;
