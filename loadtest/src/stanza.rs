//! Whole top-level elements in what a server sent, found loosely: enough to pick the answer to
//! our ping out of whatever else an XMPP server may send between stanzas (presence, messages,
//! whitespace keepalives). Not a validating parser: the load generator measures servers.

use std::ops::Range;

/// The byte range of the first complete top-level element in `buf`, after any whitespace, or
/// `None` while it is incomplete. An element ends at its start tag's `/>` or at the first
/// `</name>` after it (stanzas do not nest an element of their own name).
pub fn first_element(buf: &[u8]) -> Option<Range<usize>> {
    let start = buf.iter().position(|b| !b.is_ascii_whitespace())?;
    if buf[start] != b'<' {
        // Character data between stanzas (a server's fault): handed back up to the next tag,
        // for the caller to skip.
        let len = buf[start..].iter().position(|&b| b == b'<')?;
        return Some(start..start + len);
    }
    let tag_end = start + start_tag_len(&buf[start..])?;
    if buf[tag_end - 2] == b'/' {
        return Some(start..tag_end);
    }
    let name_len = buf[start + 1..tag_end]
        .iter()
        .position(|&b| b.is_ascii_whitespace() || b == b'>' || b == b'/')?;
    let mut close = Vec::with_capacity(name_len + 3);
    close.extend_from_slice(b"</");
    close.extend_from_slice(&buf[start + 1..start + 1 + name_len]);
    close.push(b'>');
    let at = buf[tag_end..]
        .windows(close.len())
        .position(|w| w == close.as_slice())?;
    Some(start..tag_end + at + close.len())
}

/// The length of the start tag at the beginning of `tag` (up to and including its `>`, which
/// may sit inside a quoted attribute value without ending it).
fn start_tag_len(tag: &[u8]) -> Option<usize> {
    let mut quote = None;
    for (i, &b) in tag.iter().enumerate() {
        match (quote, b) {
            (None, b'\'' | b'"') => quote = Some(b),
            (Some(q), _) if b == q => quote = None,
            (None, b'>') => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// The value of attribute `name` on an element's start tag (either quote), unescaped only as
/// far as our own ids need: not at all.
pub fn attr<'e>(element: &'e str, name: &str) -> Option<&'e str> {
    let tag = &element[..start_tag_len(element.as_bytes())?];
    let mut rest = tag;
    while let Some(at) = rest.find(name) {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + name.len()..];
        if before.is_some_and(char::is_whitespace)
            && let Some(value) = after.strip_prefix('=')
            && let Some(quote) = value.chars().next().filter(|q| *q == '\'' || *q == '"')
        {
            let value = &value[1..];
            return value.find(quote).map(|end| &value[..end]);
        }
        rest = after;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a server might send after bind: a presence, a keepalive, then our answer.
    const STREAM: &str = " <presence from='a@b/c' type='unavailable'/>\n<message to='x'><body>a > b</body></message><iq type=\"result\" id='p7' to='load@localhost/r'/>";

    fn elements(mut buf: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(range) = first_element(buf) {
            out.push(String::from_utf8(buf[range.clone()].to_vec()).unwrap());
            buf = &buf[range.end..];
        }
        out
    }

    #[test]
    fn finds_each_top_level_element_and_ignores_whitespace() {
        let found = elements(STREAM.as_bytes());
        assert_eq!(
            found,
            [
                "<presence from='a@b/c' type='unavailable'/>",
                "<message to='x'><body>a > b</body></message>",
                "<iq type=\"result\" id='p7' to='load@localhost/r'/>",
            ]
        );
        assert_eq!(attr(&found[2], "id"), Some("p7"));
        assert_eq!(attr(&found[2], "type"), Some("result"));
        assert_eq!(attr(&found[2], "to"), Some("load@localhost/r"));
        assert_eq!(attr(&found[1], "id"), None);
    }

    #[test]
    fn an_element_split_at_any_byte_is_found_only_once_whole() {
        // Every prefix of the stream yields the elements complete in it, never a partial one.
        let whole = elements(STREAM.as_bytes());
        for split in 0..=STREAM.len() {
            let prefix = elements(&STREAM.as_bytes()[..split]);
            assert!(whole.starts_with(&prefix), "split at {split}: {prefix:?}");
            let ends: Vec<usize> = whole
                .iter()
                .scan(0, |at, e| {
                    *at = STREAM[*at..].find(e.as_str()).unwrap() + *at + e.len();
                    Some(*at)
                })
                .collect();
            assert_eq!(
                prefix.len(),
                ends.iter().filter(|&&end| end <= split).count(),
                "split at {split}"
            );
        }
    }

    #[test]
    fn attr_is_matched_by_whole_name_and_a_quote_inside_a_value_is_kept() {
        let iq = "<iq xid='no' id=\"a'b\" type='error'><error/></iq>";
        assert_eq!(attr(iq, "id"), Some("a'b"));
        assert_eq!(attr(iq, "type"), Some("error"));
        assert_eq!(first_element(b"> stray <a/>"), Some(0..8));
        let gt = "<iq id='x>y' type='result'/>";
        assert_eq!(first_element(gt.as_bytes()), Some(0..gt.len()));
        assert_eq!(attr(gt, "type"), Some("result"));
    }
}
