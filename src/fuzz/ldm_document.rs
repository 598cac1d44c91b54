//! The fuzz body of LDM documents (`fuzz/fuzz_targets/ldm_document.rs`): the parser and the
//! request writer, the daemon's replies, and every rendering `ldm` makes of a reply from a
//! hostile daemon.

use crate::xml::{Element, NamespaceScope};

/// LDM documents. Invariants: parsing never panics; what the parser reads, the request writer
/// writes back so that reading it again gives the same document (after one round, which
/// fills in defaults such as the data version); a reply to it is always readable by the
/// client's reply reader.
pub fn ldm_document(data: &[u8]) {
    use crate::ldm::{Reply, parse_document, write_request, write_response};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let scope = NamespaceScope::client();
    let Ok(root) = Element::parse(text, &scope) else {
        return;
    };
    let first = parse_document(&root);
    let round = |document: &crate::ldm::Document| {
        let mut out = Vec::new();
        write_request(&mut out, document);
        let text = String::from_utf8(out).expect("the writer writes UTF-8");
        let root = Element::parse(&text, &scope).expect("the writer writes well-formed XML");
        parse_document(&root)
    };
    let second = round(&first);
    assert_eq!(round(&second), second, "writer and parser disagree");
    let response =
        crate::ldm::handler::respond_to_each_cmd(&first, |cmd| format!("refused: {cmd:?}"));
    let mut out = Vec::new();
    write_response(&mut out, &response);
    let text = String::from_utf8(out).expect("the writer writes UTF-8");
    Reply::from_xml(&text).expect("the client reads every reply the daemon writes");
    // The input itself as a reply from a hostile daemon: every rendering ldm has takes it.
    if let Ok(reply) = Reply::from_xml(std::str::from_utf8(data).unwrap_or_default()) {
        render_every_view(&reply);
    }
}

/// Every text `ldm` can print from a reply, in every form. Invariants: nothing panics; a
/// parseable listing starts with its VERSION line; what reaches the terminal carries no
/// control character but newline and tab.
fn render_every_view(reply: &crate::ldm::Reply) {
    use crate::cli::{devices, text, view};
    let rows = view::domain_rows(reply);
    let groups: Vec<String> = view::GROUPS.iter().map(|g| (*g).to_owned()).collect();
    let classes: Vec<String> = devices::CLASSES
        .iter()
        .map(|(c, _)| (*c).to_owned())
        .collect();
    let parseable = [
        text::list_parseable(&rows),
        text::long_listing(reply, &[], true),
        text::constraints(reply, true),
        text::services(reply, true),
        devices::devices(reply, &[], true, true),
        text::variables(reply, &[], true),
        devices::io(reply, true),
        text::spconfig(reply, true),
    ];
    for out in &parseable {
        assert!(out.starts_with(text::PARSEABLE_VERSION), "{out}");
    }
    let readable = [
        text::list_table(&rows),
        text::status(&rows),
        text::long_listing(reply, &[], false),
        text::long_listing(reply, &groups, false),
        text::constraints(reply, false),
        text::services(reply, false),
        devices::devices(reply, &classes, true, false),
        devices::devices(reply, &[], false, false),
        devices::io(reply, false),
        text::spconfig(reply, false),
        text::variables(reply, &[], false),
    ];
    for out in parseable.iter().chain(&readable) {
        let shown = text::terminal_safe(out);
        assert!(
            !shown.contains(|c: char| c.is_control() && c != '\n' && c != '\t'),
            "{shown:?}"
        );
    }
    let contents = view::contents(reply, crate::ldm::action::Action::ListConstraints);
    let mut xml = Vec::new();
    crate::ldm::write_request(&mut xml, &crate::cli::request::recreate(&contents));
}
