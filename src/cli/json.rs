//! `-o json`: every command prints one JSON object, for scripts. Its members:
//!
//! - `status`: `success` or `failure` (the reply's document status);
//! - `messages`: every failure reason, in order; `warnings`: notes on what succeeded;
//! - list commands add their data: `domains` (summary rows, and with `-l`, list-bindings or
//!   list-constraints their `resources`), `services`, `devices`, `spconfigs`, `variables`.
//!
//! A resource is `{"type", "units"?, "address"?, "uuid"?, "properties": {..}, "bindings"?}`,
//! the Item of ldm-xml-interface.md §4 as the daemon reported it. Numbers the daemon reports
//! as whole numbers (`ncpu`, `mem` in bytes, `uptime` in seconds) are JSON numbers.

use serde_json::{Map, Value, json};

use crate::cli::view::{DomainRow, contents, items, sections, spconfigs};
use crate::ldm::action::Action;
use crate::ldm::document::{Content, Item, Status};
use crate::ldm::reply::{EventDoc, Reply};

/// `status`, `messages`, `warnings` of a reply.
pub fn outcome(reply: &Reply) -> Map<String, Value> {
    let mut out = Map::new();
    let status = if reply.status == Status::Success {
        "success"
    } else {
        "failure"
    };
    out.insert("status".into(), json!(status));
    let messages: Vec<&str> = if reply.status == Status::Success {
        Vec::new()
    } else {
        reply.failures()
    };
    out.insert("messages".into(), json!(messages));
    out.insert("warnings".into(), json!(reply.warnings()));
    out
}

pub fn row(row: &DomainRow) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("name".into(), json!(row.name));
    out.insert("state".into(), json!(row.state));
    out.insert("flags".into(), json!(row.flags));
    out.insert("cons".into(), json!(row.cons));
    out.insert("ncpu".into(), json!(row.ncpu));
    out.insert("mem".into(), json!(row.mem));
    out.insert("util".into(), json!(row.util));
    out.insert("norm_util".into(), json!(row.norm_util));
    out.insert("softstate".into(), json!(row.softstate));
    out.insert("uptime".into(), json!(row.uptime));
    out.insert("uuid".into(), json!(row.uuid));
    out.insert("mac".into(), json!(row.mac));
    out.insert("hostid".into(), json!(row.hostid));
    let settings: Map<String, Value> = row
        .settings
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    out.insert("settings".into(), Value::Object(settings));
    out
}

/// One resource Item.
pub fn item(item: &Item) -> Value {
    let mut out = Map::new();
    out.insert("type".into(), json!(item.resource_type));
    if let Some(units) = &item.allocation_units {
        out.insert("units".into(), json!(units));
    }
    if let Some(address) = &item.address {
        out.insert("address".into(), json!(address));
    }
    if let Some(uuid) = &item.uuid {
        out.insert("uuid".into(), json!(uuid));
    }
    let properties: Map<String, Value> = item
        .properties
        .iter()
        .map(|p| (p.key.clone(), json!(p.value)))
        .collect();
    out.insert("properties".into(), Value::Object(properties));
    let bound: Vec<Value> = item
        .bindings
        .iter()
        .flat_map(|b| &b.items)
        .map(self::item)
        .collect();
    if !bound.is_empty() {
        out.insert("bindings".into(), Value::Array(bound));
    }
    Value::Object(out)
}

fn resources(content: &Content) -> Value {
    Value::Array(items(content).map(item).collect())
}

/// `[{"name", "resources"}]` of the successful objects of `action`.
pub fn domains_with_resources(reply: &Reply, action: Action) -> Value {
    Value::Array(
        contents(reply, action)
            .into_iter()
            .map(|c| json!({"name": c.id, "resources": resources(c)}))
            .collect(),
    )
}

/// The summary rows, each with its `resources` from `long_action`'s Content when given.
pub fn domains(reply: &Reply, rows: &[DomainRow], long_action: Option<Action>) -> Value {
    let long = long_action.map(|a| contents(reply, a)).unwrap_or_default();
    Value::Array(
        rows.iter()
            .map(|r| {
                let mut out = row(r);
                if let Some(content) = long.iter().find(|c| c.id == r.name) {
                    out.insert("resources".into(), resources(content));
                }
                Value::Object(out)
            })
            .collect(),
    )
}

/// The Items of the Envelope-level sections of `action` (list-devices).
pub fn section_items(reply: &Reply, action: Action) -> Value {
    Value::Array(
        sections(reply, action)
            .into_iter()
            .flat_map(|s| &s.items)
            .map(item)
            .collect(),
    )
}

pub fn spconfig_list(reply: &Reply) -> Value {
    Value::Array(
        spconfigs(reply)
            .into_iter()
            .map(|(name, status)| json!({"name": name, "status": status}))
            .collect(),
    )
}

/// One event: `{"event", "domains": [..], "resources": [..]}`.
pub fn event(event: &EventDoc) -> Value {
    let envelopes = event.data.iter().filter_map(|d| d.envelope.as_ref());
    let mut domains = Vec::new();
    let mut found = Vec::new();
    for envelope in envelopes {
        for content in &envelope.contents {
            domains.push(json!(content.id));
            found.extend(items(content).map(item));
        }
        found.extend(envelope.sections.iter().flat_map(|s| &s.items).map(item));
    }
    json!({"event": event.action, "domains": domains, "resources": found})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::view::domain_rows;

    #[test]
    fn a_listing_becomes_typed_json_with_the_outcome() {
        let reply = Reply::from_xml("<LDM_interface version='1.3'><cmd><action>list-domain</action><data version='3.0'><Envelope><Content id='ldg1'><Section><Item><rasd:OtherResourceType>ldom_info</rasd:OtherResourceType><gprop:GenericProperty key='state'>bound</gprop:GenericProperty><gprop:GenericProperty key='ncpu'>8</gprop:GenericProperty><gprop:GenericProperty key='mem'>4294967296</gprop:GenericProperty><gprop:GenericProperty key='uptime'></gprop:GenericProperty><gprop:GenericProperty key='failure-policy'>stop</gprop:GenericProperty></Item></Section></Content></Envelope><response><status>success</status></response><response><status>success</status><resp_msg>rounded</resp_msg></response></data></cmd><response><status>success</status></response></LDM_interface>").unwrap();
        let mut object = outcome(&reply);
        object.insert(
            "domains".into(),
            domains(&reply, &domain_rows(&reply), None),
        );
        let value = Value::Object(object);
        assert_eq!(value["status"], "success");
        assert_eq!(value["messages"], json!([]));
        assert_eq!(value["warnings"], json!(["rounded"]));
        let ldg1 = &value["domains"][0];
        assert_eq!(ldg1["name"], "ldg1");
        assert_eq!(ldg1["state"], "bound");
        assert_eq!(ldg1["ncpu"], 8);
        assert_eq!(ldg1["mem"], 4_294_967_296u64);
        assert_eq!(ldg1["uptime"], Value::Null);
        assert_eq!(ldg1["settings"]["failure-policy"], "stop");
    }

    #[test]
    fn items_keep_their_type_units_properties_and_bindings() {
        let item = Item {
            resource_type: "cpu".into(),
            allocation_units: Some("2".into()),
            bindings: vec![crate::ldm::document::Binding {
                items: vec![Item {
                    resource_type: "cpu".into(),
                    properties: vec![crate::ldm::document::Property {
                        key: "pid".into(),
                        value: "16".into(),
                    }],
                    ..Item::default()
                }],
            }],
            ..Item::default()
        };
        assert_eq!(
            self::item(&item),
            json!({"type": "cpu", "units": "2", "properties": {}, "bindings": [{"type": "cpu", "properties": {"pid": "16"}}]})
        );
    }
}
