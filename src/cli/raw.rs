//! `ldm xml`: a document as the operator wrote it, checked before it is sent. On the stream a
//! document the daemon cannot read ends the whole stream, so whatever can be refused here is.

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
/// anything else would end the whole stream instead of being answered.
pub fn check_document(text: &str) -> Result<(), String> {
    if text.contains("<!--") || text.contains("<?") || text.contains("<!DOCTYPE") {
        return Err(
            "the document must not contain comments, processing instructions or a DOCTYPE".into(),
        );
    }
    let scope = crate::xml::NamespaceScope::client();
    let root = crate::xml::Element::parse(text, &scope)
        .map_err(|e| format!("the document is not well-formed XML: {}", e.0))?;
    if root.local_name() != "LDM_interface" {
        return Err(format!(
            "expected an LDM_interface document, got <{}>",
            root.name
        ));
    }
    Ok(())
}
