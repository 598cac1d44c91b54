//! Reading an `LDM_interface` element into a [`Document`].
//!
//! Real documents use the prefixes `ovf`, `rasd`, `gprop`, `bind`, `xsi`, declared or not, and
//! both `id`/`ovf:id` and `_type`/`_Type`: everything is matched by local name (§2). Structural
//! problems are recorded on the document or cmd so the reply can name them.

use crate::ldm::action::ActionName;
use crate::ldm::document::{
    Binding, Cmd, Content, Data, Document, Envelope, Item, Property, Section, SectionKind,
};
use crate::xml::Element;

/// The root element names of LDM documents.
pub const REQUEST_ROOT: &str = "LDM_interface";
pub const EVENT_ROOT: &str = "LDM_event";

/// Parses a request document. Never fails: what is wrong is recorded for the reply.
pub fn parse_document(root: &Element<'_>) -> Document {
    let version = root.attr_local("version").map(str::to_owned);
    let cmds: Vec<Cmd> = root
        .elements()
        .filter(|e| e.local_name() == "cmd")
        .map(parse_cmd)
        .collect();
    let malformed = if version.is_none() {
        Some("The LDM_interface element has no version attribute".to_owned())
    } else if cmds.is_empty() {
        Some("The document contains no cmd element".to_owned())
    } else {
        None
    };
    Document {
        version,
        cmds,
        malformed,
    }
}

fn parse_cmd(cmd: &Element<'_>) -> Cmd {
    let mut parsed = Cmd::default();
    let mut actions = 0u32;
    for child in cmd.elements() {
        match child.local_name() {
            "action" => {
                actions = actions.saturating_add(1);
                parsed.action = Some(ActionName::parse(child.text().trim()));
            }
            "option" | "options" => {
                parsed
                    .options
                    .extend(child.text().split_whitespace().map(str::to_owned));
            }
            "arguments" => parsed
                .arguments
                .extend(child.text().split_whitespace().map(str::to_owned)),
            "data" => parsed.data.push(parse_data(child)),
            _ => {}
        }
    }
    parsed.malformed = match (actions, parsed.action.as_ref().map(ActionName::as_str)) {
        (0, _) => Some("The cmd has no action".to_owned()),
        (1, Some("")) => Some("The cmd has an empty action".to_owned()),
        (1, _) if parsed.data.is_empty() => Some("The cmd has no data element".to_owned()),
        (1, _) => None,
        _ => Some("The cmd has more than one action".to_owned()),
    };
    parsed
}

pub(crate) fn parse_data(data: &Element<'_>) -> Data {
    Data {
        version: data.attr_local("version").map(str::to_owned),
        envelope: data.child_local("Envelope").map(parse_envelope),
    }
}

fn parse_envelope(envelope: &Element<'_>) -> Envelope {
    let mut parsed = Envelope::default();
    for child in envelope.elements() {
        match child.local_name() {
            "Content" => parsed.contents.push(Content {
                id: child.attr_local("id").unwrap_or_default().to_owned(),
                sections: child
                    .elements()
                    .filter(|e| e.local_name() == "Section")
                    .map(parse_section)
                    .collect(),
            }),
            "Section" => parsed.sections.push(parse_section(child)),
            _ => {}
        }
    }
    parsed
}

fn parse_section(section: &Element<'_>) -> Section {
    Section {
        kind: SectionKind::from_xsi_type(section.attr_local("type").unwrap_or_default()),
        items: section
            .elements()
            .filter(|e| e.local_name() == "Item")
            .map(parse_item)
            .collect(),
    }
}

fn parse_item(item: &Element<'_>) -> Item {
    let mut parsed = Item::default();
    for child in item.elements() {
        let text = || child.text().trim().to_owned();
        match child.local_name() {
            "OtherResourceType" => parsed.resource_type = text(),
            "AllocationUnits" => parsed.allocation_units = Some(text()),
            "Address" => parsed.address = Some(text()),
            "uuid" => parsed.uuid = Some(text()),
            "GenericProperty" => parsed.properties.push(Property {
                key: child.attr_local("key").unwrap_or_default().to_owned(),
                value: child.text().into_owned(),
            }),
            "Binding" => parsed.bindings.push(Binding {
                items: child
                    .elements()
                    .filter(|e| e.local_name() == "Item")
                    .map(parse_item)
                    .collect(),
            }),
            _ => {}
        }
    }
    parsed
}
