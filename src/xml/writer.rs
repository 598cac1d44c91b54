//! Writing XML into caller-owned byte buffers: escaping and a few element helpers.
//!
//! Output is built directly in the connection's outgoing buffer; nothing here allocates.
//! Attribute values are always written with single quotes.

/// Appends `text` escaped for character data (`&`, `<`, `>`).
pub fn push_text(out: &mut Vec<u8>, text: &str) {
    push_escaped(out, text, false);
}

/// Appends `value` escaped for a single- or double-quoted attribute value.
pub fn push_attr_value(out: &mut Vec<u8>, value: &str) {
    push_escaped(out, value, true);
}

fn push_escaped(out: &mut Vec<u8>, text: &str, in_attribute: bool) {
    let bytes = text.as_bytes();
    let mut clean_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'\'' if in_attribute => b"&apos;",
            b'"' if in_attribute => b"&quot;",
            // Attribute values are normalized by readers; keep these characters as they are.
            b'\t' if in_attribute => b"&#9;",
            b'\n' if in_attribute => b"&#10;",
            b'\r' => b"&#13;",
            _ => continue,
        };
        out.extend_from_slice(bytes.get(clean_from..i).unwrap_or_default());
        out.extend_from_slice(escape);
        clean_from = i.saturating_add(1);
    }
    out.extend_from_slice(bytes.get(clean_from..).unwrap_or_default());
}

/// Element writer over a byte buffer. Names are trusted (they come from our code); attribute
/// values and text are escaped.
pub struct XmlWriter<'o> {
    out: &'o mut Vec<u8>,
}

impl<'o> XmlWriter<'o> {
    pub fn new(out: &'o mut Vec<u8>) -> Self {
        Self { out }
    }

    /// `<name a='v' ...>`
    pub fn open(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.start_tag(name, attrs);
        self.out.push(b'>');
        self
    }

    /// `<name a='v' .../>`
    pub fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) -> &mut Self {
        self.start_tag(name, attrs);
        self.out.extend_from_slice(b"/>");
        self
    }

    /// `</name>`
    pub fn close(&mut self, name: &str) -> &mut Self {
        self.out.extend_from_slice(b"</");
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'>');
        self
    }

    /// Escaped character data.
    pub fn text(&mut self, text: &str) -> &mut Self {
        push_text(self.out, text);
        self
    }

    /// `<name a='v'>text</name>`
    pub fn text_element(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) -> &mut Self {
        self.open(name, attrs).text(text).close(name)
    }

    /// Bytes known to be well-formed XML (constant fragments).
    pub fn raw(&mut self, xml: &str) -> &mut Self {
        self.out.extend_from_slice(xml.as_bytes());
        self
    }

    fn start_tag(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.out.push(b'<');
        self.out.extend_from_slice(name.as_bytes());
        for (key, value) in attrs {
            self.out.push(b' ');
            self.out.extend_from_slice(key.as_bytes());
            self.out.extend_from_slice(b"='");
            push_attr_value(self.out, value);
            self.out.push(b'\'');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_in_text_and_attributes() {
        let mut out = Vec::new();
        XmlWriter::new(&mut out).text_element("a", &[("k", "x'\"<&>\ty")], "1 < 2 & 3 > 'q'");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<a k='x&apos;&quot;&lt;&amp;&gt;&#9;y'>1 &lt; 2 &amp; 3 &gt; 'q'</a>"
        );
    }

    #[test]
    fn written_values_read_back_identically() {
        // What we write, our own parser reads back unchanged (escaping is lossless).
        let tricky = "a\tb\nc\r\nd & <e> 'f' \"g\" é";
        let mut out = Vec::new();
        XmlWriter::new(&mut out).text_element("v", &[("k", tricky)], tricky);
        let xml = String::from_utf8(out).unwrap();
        let parsed =
            crate::xml::Element::parse(&xml, &crate::xml::NamespaceScope::client()).unwrap();
        assert_eq!(parsed.attr("k"), Some(tricky));
        assert_eq!(parsed.text(), tricky);
    }
}
