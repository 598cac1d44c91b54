//! Reading what the daemon answers, as a client sees it: `LDM_interface` responses (§2.1) and
//! `LDM_event` documents (§5).
//!
//! Statuses are taken as written on the wire, at each of the three levels, not recomputed: a
//! client reports what the daemon said. A reply that lacks a status is read as a failure, so a
//! truncated or foreign document can never pass for a success. Nothing here panics on what a
//! peer sends; the worst a hostile reply gets is a [`ReplyError`] or empty fields.
//!
//! ```text
//! LDM_interface @version
//!   cmd* : action, options?, data* (object, response, response?), response
//!   response : status, resp_msg*          (the document's, last)
//! ```

use crate::ldm::action::Action;
use crate::ldm::document::{Data, Status};
use crate::ldm::parse::{EVENT_ROOT, REQUEST_ROOT, parse_data};
use crate::xml::{Element, NamespaceScope};

/// A response document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub version: Option<String>,
    /// The document status: `success` only if the daemon wrote exactly that.
    pub status: Status,
    /// Document-level `resp_msg`s (a malformed request).
    pub messages: Vec<String>,
    pub cmds: Vec<ReplyCmd>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplyCmd {
    /// The action as the daemon wrote it (compare with [`ReplyCmd::answers`]).
    pub action: String,
    pub options: Vec<String>,
    pub status: Status,
    /// Cmd-level `resp_msg`s (an unknown action, no data).
    pub messages: Vec<String>,
    pub data: Vec<ReplyData>,
}

/// One object of a cmd, with its verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplyData {
    /// The object: echoed, or filled in by a list action.
    pub data: Data,
    pub status: Status,
    /// The first `response`'s messages: reasons on failure, notes on success.
    pub messages: Vec<String>,
    /// Messages of any later `response` (warnings, such as memory rounded up).
    pub warnings: Vec<String>,
}

/// An `LDM_event` document: what happened, and to which objects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventDoc {
    pub action: String,
    pub data: Vec<Data>,
}

/// Why a document from the daemon could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("the reply is not well-formed XML: {0}")]
    NotWellFormed(String),
    #[error("expected an {expected} document, got <{got}>")]
    UnexpectedRoot { expected: &'static str, got: String },
}

impl Reply {
    /// Parses the text of one response document (no stream around it, no namespaces needed).
    pub fn from_xml(text: &str) -> Result<Reply, ReplyError> {
        let root = parse_root(text)?;
        parse_reply(&root)
    }

    /// Every reason for failure, in document order: the document's, then per cmd its own and
    /// its failed objects'. Repeats are dropped (two cmds may fail for the same reason).
    pub fn failures(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let cmd_messages = self.cmds.iter().flat_map(|cmd| {
            cmd.messages.iter().chain(
                cmd.data
                    .iter()
                    .filter(|d| d.status == Status::Failure)
                    .flat_map(|d| &d.messages),
            )
        });
        for message in self.messages.iter().chain(cmd_messages) {
            if !out.contains(&message.as_str()) {
                out.push(message);
            }
        }
        if out.is_empty() && self.status == Status::Failure {
            out.push("The daemon reported a failure without a reason");
        }
        out
    }

    /// Warnings and notes of objects that succeeded, in document order, without repeats.
    pub fn warnings(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for data in self.cmds.iter().flat_map(|c| &c.data) {
            let notes = if data.status == Status::Success {
                &data.messages[..]
            } else {
                &[]
            };
            for message in notes.iter().chain(&data.warnings) {
                if !out.contains(&message.as_str()) {
                    out.push(message);
                }
            }
        }
        out
    }

    /// The cmd answering `action`, if the reply has one.
    pub fn cmd(&self, action: Action) -> Option<&ReplyCmd> {
        self.cmds.iter().find(|c| c.answers(action))
    }
}

impl ReplyCmd {
    /// Whether this cmd answers `action` (the daemon echoes the wire name exactly).
    pub fn answers(&self, action: Action) -> bool {
        self.action == action.as_str()
    }
}

impl EventDoc {
    pub fn from_xml(text: &str) -> Result<EventDoc, ReplyError> {
        let root = parse_root(text)?;
        parse_event(&root)
    }
}

fn parse_root(text: &str) -> Result<Element<'_>, ReplyError> {
    let text = text.trim_start();
    // An XML declaration may precede a document read from a file; the stream never has one.
    let text = match text.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map_or("", |(_, r)| r).trim_start(),
        None => text,
    };
    let scope = NamespaceScope {
        default: crate::xml::Namespace::None,
        prefixes: Vec::new(),
    };
    Element::parse(text, &scope).map_err(|e| ReplyError::NotWellFormed(e.message().to_owned()))
}

/// Reads a response document from its root element.
pub fn parse_reply(root: &Element<'_>) -> Result<Reply, ReplyError> {
    if root.local_name() != REQUEST_ROOT {
        return Err(ReplyError::UnexpectedRoot {
            expected: REQUEST_ROOT,
            got: root.name.to_owned(),
        });
    }
    let mut reply = Reply {
        version: root.attr_local("version").map(str::to_owned),
        ..Reply::default()
    };
    for child in root.elements() {
        match child.local_name() {
            "cmd" => reply.cmds.push(parse_cmd(child)),
            // The document's response is its last child; a later one would win, which is
            // what a reader that stops at the end sees too.
            "response" => (reply.status, reply.messages) = parse_response(child),
            _ => {}
        }
    }
    Ok(reply)
}

fn parse_cmd(cmd: &Element<'_>) -> ReplyCmd {
    let mut parsed = ReplyCmd::default();
    for child in cmd.elements() {
        match child.local_name() {
            "action" => parsed.action = child.text().trim().to_owned(),
            "option" | "options" => parsed
                .options
                .extend(child.text().split_whitespace().map(str::to_owned)),
            "data" => parsed.data.push(parse_reply_data(child)),
            "response" => (parsed.status, parsed.messages) = parse_response(child),
            _ => {}
        }
    }
    parsed
}

fn parse_reply_data(data: &Element<'_>) -> ReplyData {
    let mut parsed = ReplyData {
        data: parse_data(data),
        ..ReplyData::default()
    };
    let mut responses = data.elements().filter(|e| e.local_name() == "response");
    if let Some(first) = responses.next() {
        (parsed.status, parsed.messages) = parse_response(first);
    }
    for later in responses {
        parsed.warnings.extend(parse_response(later).1);
    }
    parsed
}

/// `<response><status>..</status><resp_msg>..</resp_msg>*</response>`
fn parse_response(response: &Element<'_>) -> (Status, Vec<String>) {
    let status = match response.child_local("status").map(|s| s.text()) {
        Some(text) if text.trim() == "success" => Status::Success,
        _ => Status::Failure,
    };
    let messages = response
        .elements()
        .filter(|e| e.local_name() == "resp_msg")
        .map(|e| e.text().trim().to_owned())
        .filter(|m| !m.is_empty())
        .collect();
    (status, messages)
}

/// Reads an `LDM_event` document from its root element.
pub fn parse_event(root: &Element<'_>) -> Result<EventDoc, ReplyError> {
    if root.local_name() != EVENT_ROOT {
        return Err(ReplyError::UnexpectedRoot {
            expected: EVENT_ROOT,
            got: root.name.to_owned(),
        });
    }
    let mut event = EventDoc::default();
    for cmd in root.elements().filter(|e| e.local_name() == "cmd") {
        for child in cmd.elements() {
            match child.local_name() {
                "action" if event.action.is_empty() => {
                    event.action = child.text().trim().to_owned()
                }
                "data" => event.data.push(parse_data(child)),
                _ => {}
            }
        }
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ldm::action::ActionName;
    use crate::ldm::document::{
        CmdResponse, Content, DataResponse, Envelope, Item, Property, Response, Section,
        SectionKind,
    };
    use crate::ldm::write::{write_event, write_response};

    fn listed(name: &str) -> Data {
        Data {
            version: Some("3.0".into()),
            envelope: Some(Envelope {
                contents: vec![Content {
                    id: name.into(),
                    sections: vec![Section {
                        kind: SectionKind::ResourceAllocation,
                        items: vec![Item {
                            resource_type: "ldom_info".into(),
                            properties: vec![Property {
                                key: "state".into(),
                                value: "active".into(),
                            }],
                            ..Item::default()
                        }],
                    }],
                }],
                sections: Vec::new(),
            }),
        }
    }

    fn written(response: &Response) -> String {
        let mut out = Vec::new();
        write_response(&mut out, response);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn what_the_daemon_writes_reads_back_with_every_status_and_message() {
        // Round trip through the daemon's own writer: one good object with a warning, one
        // failed object, and a cmd refused for an unknown action.
        let response = Response {
            version: Some("1.3".into()),
            cmds: vec![
                CmdResponse {
                    action: Some(Action::ListDomain.into()),
                    options: vec!["-a".into()],
                    data: vec![
                        DataResponse {
                            data: listed("ldg1"),
                            status: Status::Success,
                            messages: Vec::new(),
                            warning: Some("rounded up".into()),
                        },
                        DataResponse {
                            data: Data {
                                version: Some("3.0".into()),
                                envelope: None,
                            },
                            status: Status::Failure,
                            messages: vec!["LDom x does not exist".into()],
                            warning: None,
                        },
                    ],
                    failure: None,
                },
                CmdResponse {
                    action: Some(ActionName::Unknown("frob".into())),
                    failure: Some("Unknown action 'frob'".into()),
                    ..CmdResponse::default()
                },
            ],
            malformed: None,
        };
        let reply = Reply::from_xml(&written(&response)).unwrap();
        assert_eq!(reply.version.as_deref(), Some("1.3"));
        assert_eq!(reply.status, Status::Failure);
        assert_eq!(reply.cmds.len(), 2);
        let list = &reply.cmds[0];
        assert_eq!(list.action, "list-domain");
        assert_eq!(list.options, ["-a"]);
        assert_eq!(list.status, Status::Failure);
        assert_eq!(list.data[0].data, listed("ldg1"));
        assert_eq!(list.data[0].status, Status::Success);
        assert_eq!(list.data[0].warnings, ["rounded up"]);
        assert_eq!(list.data[1].status, Status::Failure);
        assert_eq!(
            reply.failures(),
            ["LDom x does not exist", "Unknown action 'frob'"]
        );
        assert_eq!(reply.warnings(), ["rounded up"]);
    }

    #[test]
    fn a_reply_without_a_status_is_a_failure() {
        let reply = Reply::from_xml("<LDM_interface version='1.0'><cmd><action>list-domain</action><data version='3.0'/></cmd></LDM_interface>").unwrap();
        assert_eq!(reply.status, Status::Failure);
        assert_eq!(reply.cmds[0].status, Status::Failure);
        assert_eq!(
            reply.failures(),
            ["The daemon reported a failure without a reason"]
        );
        let odd = Reply::from_xml(
            "<LDM_interface><response><status>Success</status></response></LDM_interface>",
        )
        .unwrap();
        assert_eq!(
            odd.status,
            Status::Failure,
            "statuses are exact, lower case"
        );
    }

    #[test]
    fn hostile_or_foreign_documents_are_errors_not_panics() {
        for text in [
            "",
            "<",
            "<LDM_interface>",
            "<iq type='result'/>",
            "<LDM_interface><cmd></LDM_interface>",
            "<?xml version='1.0'",
            "<LDM_event version='1.1'/>",
        ] {
            assert!(Reply::from_xml(text).is_err(), "{text}");
        }
        // Odd but well-formed: read with what can be found.
        let reply = Reply::from_xml("<x:LDM_interface xmlns:x='u'><cmd><data/><response/><response><resp_msg>w</resp_msg></response></cmd><response><status>success</status></response></x:LDM_interface>").unwrap();
        assert_eq!(reply.status, Status::Success);
        assert_eq!(reply.cmds[0].data.len(), 1);
        assert_eq!(reply.cmds[0].status, Status::Failure);
        assert_eq!(reply.cmds[0].action, "");
    }

    #[test]
    fn events_read_back_their_action_and_object() {
        let mut out = Vec::new();
        write_event(&mut out, "start-domain", &listed("ldg1"));
        let event = EventDoc::from_xml(std::str::from_utf8(&out).unwrap()).unwrap();
        assert_eq!(event.action, "start-domain");
        assert_eq!(event.data, [listed("ldg1")]);
        assert!(EventDoc::from_xml("<LDM_interface version='1.0'/>").is_err());
    }

    #[test]
    fn an_xml_declaration_before_a_document_is_skipped() {
        let reply = Reply::from_xml("<?xml version='1.0'?>\n<LDM_interface version='1.0'><response><status>success</status></response></LDM_interface>").unwrap();
        assert_eq!(reply.status, Status::Success);
    }
}
