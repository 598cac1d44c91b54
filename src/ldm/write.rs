//! Writing LDM response and event documents.
//!
//! Output is namespace-well-formed: every prefix used is declared on the root (§2), and the
//! element names are unprefixed where the Oracle documents write them so (`Envelope`, `Content`,
//! `Section`, `Item`), with a plain `id` on `Content`: the illumos FMA client reads it with
//! `xmlGetProp(content, "id")` and compares raw element names. Only the prefixes a document uses
//! are declared, to keep event documents small (that client reads 1 KiB at a time).

use crate::ldm::document::{
    Binding, CmdResponse, Content, Data, DataResponse, Document, Envelope, Item, Response, Section,
    Status,
};
use crate::ldm::parse::REQUEST_ROOT;
use crate::xml::XmlWriter;

const NS_XSI: (&str, &str) = ("xmlns:xsi", "http://www.w3.org/2001/XMLSchema-instance");
const NS_OVF: (&str, &str) = ("xmlns:ovf", "./schemas/envelope");
const NS_RASD: (&str, &str) = ("xmlns:rasd", "./schemas/CIM_ResourceAllocationSettingData");
const NS_GPROP: (&str, &str) = ("xmlns:gprop", "./schemas/GenericProperty");
const NS_BIND: (&str, &str) = ("xmlns:bind", "./schemas/Binding");
const CONTENT_TYPE: &str = "ovf:VirtualSystem_Type";
/// The data version every request and reply carries.
pub const DATA_VERSION: &str = "3.0";

/// Which prefixes a document needs declared.
#[derive(Default)]
struct Prefixes {
    envelope: bool,
    items: bool,
    bindings: bool,
}

impl Prefixes {
    fn of_data<'d>(data: impl IntoIterator<Item = &'d Data>) -> Prefixes {
        let mut p = Prefixes::default();
        for envelope in data.into_iter().filter_map(|d| d.envelope.as_ref()) {
            p.envelope = true;
            let sections = envelope
                .sections
                .iter()
                .chain(envelope.contents.iter().flat_map(|c| &c.sections));
            for item in sections.flat_map(|s| &s.items) {
                p.items = true;
                p.bindings |= !item.bindings.is_empty();
            }
        }
        p
    }

    fn attrs<'a>(&self, version: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut attrs = vec![("version", version)];
        if self.envelope {
            attrs.extend([NS_XSI, NS_OVF]);
        }
        if self.items {
            attrs.extend([NS_RASD, NS_GPROP]);
        }
        if self.bindings {
            attrs.push(NS_BIND);
        }
        attrs
    }
}

/// The root of event documents, and the version they carry (§5).
pub const EVENT_ROOT: &str = "LDM_event";
pub const EVENT_VERSION: &str = "1.1";

/// Writes an `LDM_event` document: one cmd naming what happened and the object it happened to.
/// Kept small: the illumos FMA client reads events 1 KiB at a time.
pub fn write_event(out: &mut Vec<u8>, action: &str, data: &Data) {
    let prefixes = Prefixes::of_data([data]);
    let mut w = XmlWriter::new(out);
    w.open(EVENT_ROOT, &prefixes.attrs(EVENT_VERSION))
        .open("cmd", &[])
        .text_element("action", &[], action)
        .open(
            "data",
            &[("version", data.version.as_deref().unwrap_or(DATA_VERSION))],
        );
    if let Some(envelope) = &data.envelope {
        write_envelope(&mut w, envelope);
    }
    w.close("data").close("cmd").close(EVENT_ROOT);
}

/// The bytes `data` takes as written in a reply (its `data` element and everything in it, not
/// counting the response elements after it); `scratch` is reused and kept small.
pub fn data_len(data: &Data, scratch: &mut Vec<u8>) -> usize {
    scratch.clear();
    let mut w = XmlWriter::new(scratch);
    let version = data.version.as_deref().unwrap_or(DATA_VERSION);
    match &data.envelope {
        None => {
            w.empty("data", &[("version", version)]);
        }
        Some(envelope) => {
            w.open("data", &[("version", version)]);
            write_envelope(&mut w, envelope);
            w.close("data");
        }
    }
    let len = scratch.len();
    if scratch.capacity() > SCRATCH_KEPT_BYTES {
        *scratch = Vec::new(); // one large listing does not pin its size for good
    }
    len
}

/// The bytes `content` takes as written in an Envelope; `scratch` as for [`data_len`].
pub fn content_len(content: &Content, scratch: &mut Vec<u8>) -> usize {
    scratch.clear();
    let mut w = XmlWriter::new(scratch);
    write_content(&mut w, content);
    let len = scratch.len();
    if scratch.capacity() > SCRATCH_KEPT_BYTES {
        *scratch = Vec::new();
    }
    len
}

/// What [`data_len`]'s scratch buffer may keep between calls.
const SCRATCH_KEPT_BYTES: usize = 64 * 1024;

/// Writes a complete response document.
pub fn write_response(out: &mut Vec<u8>, response: &Response) {
    let version = response.version.as_deref().unwrap_or("1.0");
    let prefixes = Prefixes::of_data(
        response
            .cmds
            .iter()
            .flat_map(|c| c.data.iter().map(|d| &d.data)),
    );
    let mut w = XmlWriter::new(out);
    w.open(REQUEST_ROOT, &prefixes.attrs(version));
    for cmd in &response.cmds {
        write_cmd(&mut w, cmd);
    }
    write_status(&mut w, response.status(), response.malformed.as_deref());
    w.close(REQUEST_ROOT);
}

/// Writes a request document, as a client sends it: options in one `<options>` element,
/// arguments in one `<arguments>` element, and each data object in request form.
pub fn write_request(out: &mut Vec<u8>, document: &Document) {
    let version = document.version.as_deref().unwrap_or("1.0");
    let prefixes = Prefixes::of_data(document.cmds.iter().flat_map(|c| &c.data));
    let mut w = XmlWriter::new(out);
    w.open(REQUEST_ROOT, &prefixes.attrs(version));
    for cmd in &document.cmds {
        w.open("cmd", &[]);
        if let Some(action) = &cmd.action {
            w.text_element("action", &[], action.as_str());
        }
        if !cmd.options.is_empty() {
            w.text_element("options", &[], &cmd.options.join(" "));
        }
        if !cmd.arguments.is_empty() {
            w.text_element("arguments", &[], &cmd.arguments.join(" "));
        }
        for data in &cmd.data {
            let version = data.version.as_deref().unwrap_or(DATA_VERSION);
            match &data.envelope {
                None => {
                    w.empty("data", &[("version", version)]);
                }
                Some(envelope) => {
                    w.open("data", &[("version", version)]);
                    write_envelope(&mut w, envelope);
                    w.close("data");
                }
            }
        }
        w.close("cmd");
    }
    w.close(REQUEST_ROOT);
}

fn write_cmd(w: &mut XmlWriter<'_>, cmd: &CmdResponse) {
    w.open("cmd", &[]);
    if let Some(action) = &cmd.action {
        w.text_element("action", &[], action.as_str());
    }
    if !cmd.options.is_empty() {
        w.text_element("options", &[], &cmd.options.join(" "));
    }
    for data in &cmd.data {
        write_data_response(w, data);
    }
    write_status(w, cmd.status(), cmd.failure.as_deref());
    w.close("cmd");
}

fn write_data_response(w: &mut XmlWriter<'_>, data: &DataResponse) {
    w.open(
        "data",
        &[(
            "version",
            data.data.version.as_deref().unwrap_or(DATA_VERSION),
        )],
    );
    if let Some(envelope) = &data.data.envelope {
        write_envelope(w, envelope);
    }
    w.open("response", &[])
        .text_element("status", &[], data.status.as_str());
    for message in &data.messages {
        w.text_element("resp_msg", &[], message);
    }
    w.close("response");
    if let Some(warning) = &data.warning {
        w.open("response", &[])
            .text_element("status", &[], Status::Success.as_str())
            .text_element("resp_msg", &[], warning)
            .close("response");
    }
    w.close("data");
}

/// `<response><status>..</status><resp_msg>..</resp_msg>?</response>`
fn write_status(w: &mut XmlWriter<'_>, status: Status, message: Option<&str>) {
    w.open("response", &[])
        .text_element("status", &[], status.as_str());
    if let Some(message) = message {
        w.text_element("resp_msg", &[], message);
    }
    w.close("response");
}

/// Writes an `Envelope` in request form.
pub fn write_envelope(w: &mut XmlWriter<'_>, envelope: &Envelope) {
    w.open("Envelope", &[]).empty("References", &[]);
    for content in &envelope.contents {
        write_content(w, content);
    }
    envelope.sections.iter().for_each(|s| write_section(w, s));
    w.close("Envelope");
}

fn write_content(w: &mut XmlWriter<'_>, content: &Content) {
    let attrs = [("xsi:type", CONTENT_TYPE), ("id", content.id.as_str())];
    if content.sections.is_empty() {
        w.empty("Content", &attrs);
    } else {
        w.open("Content", &attrs);
        content.sections.iter().for_each(|s| write_section(w, s));
        w.close("Content");
    }
}

fn write_section(w: &mut XmlWriter<'_>, section: &Section) {
    w.open("Section", &[("xsi:type", section.kind.xsi_type())]);
    section.items.iter().for_each(|item| write_item(w, item));
    w.close("Section");
}

fn write_item(w: &mut XmlWriter<'_>, item: &Item) {
    w.open("Item", &[])
        .text_element("rasd:OtherResourceType", &[], &item.resource_type);
    if let Some(uuid) = &item.uuid {
        w.text_element("uuid", &[], uuid);
    }
    if let Some(units) = &item.allocation_units {
        w.text_element("rasd:AllocationUnits", &[], units);
    }
    if let Some(address) = &item.address {
        w.text_element("rasd:Address", &[], address);
    }
    for property in &item.properties {
        w.text_element(
            "gprop:GenericProperty",
            &[("key", &property.key)],
            &property.value,
        );
    }
    item.bindings.iter().for_each(|b| write_binding(w, b));
    w.close("Item");
}

fn write_binding(w: &mut XmlWriter<'_>, binding: &Binding) {
    w.open("bind:Binding", &[]);
    binding.items.iter().for_each(|item| write_item(w, item));
    w.close("bind:Binding");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ldm::action::Action;
    use crate::ldm::document::{Cmd, Content, Property, SectionKind};
    use crate::xml::{Element, NamespaceScope};

    #[test]
    fn a_written_request_parses_back_to_the_same_document() {
        let item = Item {
            resource_type: "network".into(),
            address: Some("00:14:4f:f8:00:09".into()),
            properties: vec![Property {
                key: "vnet_name".into(),
                value: "a<b&'c'".into(),
            }],
            ..Item::default()
        };
        let document = Document {
            version: Some("1.3".into()),
            cmds: vec![
                Cmd {
                    action: Some(Action::AddVnet.into()),
                    options: vec!["-f".into()],
                    arguments: vec!["x".into()],
                    data: vec![Data {
                        version: Some(DATA_VERSION.into()),
                        envelope: Some(Envelope {
                            contents: vec![Content {
                                id: "ldg1".into(),
                                sections: vec![Section {
                                    kind: SectionKind::ResourceAllocation,
                                    items: vec![item],
                                }],
                            }],
                            sections: Vec::new(),
                        }),
                    }],
                    malformed: None,
                },
                Cmd {
                    action: Some(Action::ListDomain.into()),
                    data: vec![Data {
                        version: Some(DATA_VERSION.into()),
                        envelope: None,
                    }],
                    ..Cmd::default()
                },
            ],
            malformed: None,
        };
        let mut out = Vec::new();
        write_request(&mut out, &document);
        let text = String::from_utf8(out).unwrap();
        let root = Element::parse(&text, &NamespaceScope::client()).unwrap();
        assert!(!root.has_undeclared_prefix(), "{text}");
        assert_eq!(crate::ldm::parse_document(&root), document);
    }
}
