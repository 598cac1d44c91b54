//! `ldm xml`: a document as the operator wrote it, checked before it is sent. On the stream a
//! document the daemon cannot read ends the whole stream, so whatever can be refused here is.

use crate::cli::request::check_xml_text;
use crate::xml::is_xml_char;

/// The document without the XML declaration a file may start with: on a stream it would be
/// a processing instruction, which the daemon refuses as restricted XML.
pub fn strip_declaration(text: &str) -> &str {
    let text = text.trim_start_matches('\u{feff}').trim();
    match text.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map_or("", |(_, r)| r.trim()),
        None => text,
    }
}

/// One well-formed `LDM_interface` element, without the constructs a stream may not carry:
/// anything else would end the whole stream instead of being answered. Characters follow the
/// rule of [`check_xml_text`], written literally or as character references.
pub fn check_document(text: &str) -> Result<(), String> {
    if text.contains("<!--") || text.contains("<?") || text.contains("<!DOCTYPE") {
        return Err(
            "the document must not contain comments, processing instructions or a DOCTYPE".into(),
        );
    }
    check_xml_text("the document", text).map_err(|e| e.0)?;
    check_character_references(text)?;
    let scope = crate::xml::NamespaceScope::client();
    let root = crate::xml::Element::parse(text, &scope)
        .map_err(|e| format!("the document is not well-formed XML: {}", e.message()))?;
    if root.local_name() != "LDM_interface" {
        return Err(format!(
            "expected an LDM_interface document, got <{}>",
            root.name
        ));
    }
    Ok(())
}

/// `&#N;` and `&#xH;` must name characters XML allows, as the daemon's framer requires.
fn check_character_references(text: &str) -> Result<(), String> {
    for (at, _) in text.match_indices("&#") {
        let rest = &text[at + 2..];
        let Some(end) = rest.find(';') else {
            return Err(
                "the document is not well-formed XML: unterminated character reference".into(),
            );
        };
        let body = &rest[..end];
        let code = match body.strip_prefix('x') {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => body.parse::<u32>(),
        };
        match code.ok().and_then(char::from_u32) {
            Some(c) if is_xml_char(c) => {}
            Some(c) if c.is_control() => {
                return Err(format!(
                    "the document contains a control character (&#{body};, U+{:04X}) that XML 1.0 forbids",
                    u32::from(c)
                ));
            }
            _ => {
                return Err(format!(
                    "the document contains a character reference (&#{body};) to a character XML 1.0 forbids"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "<LDM_interface version='1.0'><cmd><action>list-domain</action><data version='3.0'/></cmd></LDM_interface>";

    #[test]
    fn a_declaration_and_a_byte_order_mark_are_removed_before_sending() {
        let file = format!("\u{feff}<?xml version='1.0' encoding='UTF-8'?>\n{LIST}\n");
        assert_eq!(strip_declaration(&file), LIST);
        assert_eq!(strip_declaration(LIST), LIST);
        assert!(check_document(strip_declaration(&file)).is_ok());
    }

    #[test]
    fn what_would_end_the_stream_is_refused_locally() {
        for (bad, why) in [
            (format!("<!-- c -->{LIST}"), "comments"),
            ("<a/>".to_owned(), "expected an LDM_interface"),
            ("<LDM_interface>".to_owned(), "not well-formed"),
            (
                LIST.replace("list-domain", "list\u{1}domain"),
                "contains a control character",
            ),
            (
                LIST.replace("list-domain", "list\u{1b}[2J"),
                "contains a control character",
            ),
            (
                LIST.replace("list-domain", "list&#1;domain"),
                "contains a control character (&#1;, U+0001)",
            ),
            (
                LIST.replace("list-domain", "list&#x1F;domain"),
                "contains a control character",
            ),
            (
                LIST.replace("list-domain", "list&#xFFFE;"),
                "to a character XML 1.0 forbids",
            ),
            (
                LIST.replace("list-domain", "list\u{ffff}"),
                "contains a non-character (U+FFFF)",
            ),
        ] {
            let refused = check_document(&bad).expect_err(&bad);
            assert!(refused.contains(why), "{bad:?}: {refused}");
            assert_eq!(refused.lines().count(), 1, "{refused}");
        }
        // Tab, newlines and references to allowed characters are fine.
        let fine = LIST.replace("list-domain", "\tlist-domain&#x41;&#65;\r\n");
        assert_eq!(check_document(&fine), Ok(()));
    }
}
