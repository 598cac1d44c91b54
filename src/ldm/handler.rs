//! The seam between the transport and whoever answers LDM documents.
//!
//! The transport parses a document, tags it with the peer's [`Role`], and hands it to a
//! [`DocumentHandler`]; the response goes back on the same stream. The domain registry is the
//! real handler; until it exists, [`Unsupported`] answers every cmd with a `failure` naming the
//! action, so clients see well-formed replies at all three levels of §2.1.

use crate::ldm::document::{CmdResponse, Document, Response, Role};

/// Answers one document at a time. Called on the handler's own thread, never on an I/O thread.
pub trait DocumentHandler: Send + 'static {
    fn handle(&mut self, document: &Document, role: Role) -> Response;
}

/// Answers every cmd with a failure naming its action.
#[derive(Debug, Default)]
pub struct Unsupported;

impl DocumentHandler for Unsupported {
    fn handle(&mut self, document: &Document, role: Role) -> Response {
        respond_to_each_cmd(document, |cmd| match &cmd.action {
            None => "The cmd has no action".to_owned(),
            Some(action) => match action.authorize(role) {
                Err(refusal) => refusal,
                Ok(()) => format!("The action '{action}' is not supported by this ldmd"),
            },
        })
    }
}

/// Builds a reply that mirrors `document`, with each well-formed cmd refused for the reason
/// `refuse` gives and each malformed cmd refused for its own malformation.
pub fn respond_to_each_cmd(
    document: &Document,
    refuse: impl Fn(&crate::ldm::Cmd) -> String,
) -> Response {
    if let Some(reason) = &document.malformed {
        return Response {
            version: document.version.clone(),
            cmds: Vec::new(),
            malformed: Some(reason.clone()),
        };
    }
    let cmds = document
        .cmds
        .iter()
        .map(|cmd| CmdResponse {
            action: cmd.action.clone(),
            options: cmd.options.clone(),
            data: Vec::new(),
            failure: Some(cmd.malformed.clone().unwrap_or_else(|| refuse(cmd))),
        })
        .collect();
    Response {
        version: document.version.clone(),
        cmds,
        malformed: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ldm::{Action, DataResponse, Status};

    use crate::ldm::{parse_document, write_response};
    use crate::xml::{Element, NamespaceScope};

    const LIST: &str = r#"<LDM_interface version="1.3"><cmd><action>list-domain</action><data version="3.0"/></cmd><cmd><action>stop-domain</action><option>-f</option><data version="3.0"><Envelope><References/><ovf:Content xsi:type="ovf:VirtualSystem_Type" ovf:id="ldg1"><Section xsi:type="ovf:ResourceAllocationSection_Type"><Item><rasd:OtherResourceType>ldom_info</rasd:OtherResourceType><gprop:GenericProperty key="failure-policy">reset</gprop:GenericProperty></Item></Section></ovf:Content></Envelope></data></cmd></LDM_interface>"#;

    fn document(xml: &str) -> Document {
        parse_document(&Element::parse(xml, &NamespaceScope::client()).unwrap())
    }

    #[test]
    fn parses_cmds_options_and_envelope_by_local_name() {
        // §2: prefixes are matched by local name, declared or not; ovf:id names a Content.
        let doc = document(LIST);
        assert_eq!(doc.version.as_deref(), Some("1.3"));
        assert_eq!(doc.malformed, None);
        assert_eq!(doc.cmds.len(), 2);
        assert_eq!(doc.cmds[1].action, Some(Action::StopDomain.into()));
        assert_eq!(doc.cmds[1].options, ["-f"]);
        let content = &doc.cmds[1].data[0].envelope.as_ref().unwrap().contents[0];
        assert_eq!(content.id, "ldg1");
        let item = &content.sections[0].items[0];
        assert_eq!(item.resource_type, "ldom_info");
        assert_eq!(item.property("failure-policy"), Some("reset"));
    }

    #[test]
    fn malformations_are_recorded_at_their_level() {
        assert!(document("<LDM_interface/>").malformed.is_some());
        assert!(
            document("<LDM_interface version='1.0'/>")
                .malformed
                .is_some()
        );
        let doc = document(
            "<LDM_interface version='1.0'><cmd><data version='3.0'/></cmd><cmd><action>a</action><action>b</action><data/></cmd><cmd><action>x</action></cmd></LDM_interface>",
        );
        assert_eq!(doc.malformed, None);
        assert!(doc.cmds.iter().all(|c| c.malformed.is_some()));
    }

    #[test]
    fn unsupported_names_each_action_and_fails_every_level() {
        // Issue 2: each cmd gets a well-formed failure naming the unsupported action.
        let response = Unsupported.handle(&document(LIST), Role::Write);
        let mut out = Vec::new();
        write_response(&mut out, &response);
        let xml = String::from_utf8(out).unwrap();
        let root = Element::parse(&xml, &NamespaceScope::client()).unwrap();
        assert_eq!(root.attr("version"), Some("1.3"));
        let cmds: Vec<_> = root
            .elements()
            .filter(|e| e.local_name() == "cmd")
            .collect();
        assert_eq!(cmds.len(), 2);
        for (cmd, action) in cmds.iter().zip(["list-domain", "stop-domain"]) {
            assert_eq!(cmd.child_local("action").unwrap().text(), action);
            let resp = cmd.child_local("response").unwrap();
            assert_eq!(resp.child_local("status").unwrap().text(), "failure");
            assert!(
                resp.child_local("resp_msg")
                    .unwrap()
                    .text()
                    .contains(action)
            );
        }
        let doc_status = root.elements().last().unwrap();
        assert_eq!(doc_status.local_name(), "response");
        assert_eq!(doc_status.child_local("status").unwrap().text(), "failure");
    }

    #[test]
    fn unauthorized_roles_are_told_so_before_anything_else() {
        let response = Unsupported.handle(&document(LIST), Role::None);
        assert!(
            response.cmds.iter().all(|c| c
                .failure
                .as_deref()
                .unwrap()
                .starts_with("Not authorized"))
        );
        let response = Unsupported.handle(&document(LIST), Role::Read);
        assert!(
            response.cmds[0]
                .failure
                .as_deref()
                .unwrap()
                .contains("not supported"),
            "list-domain is a read"
        );
        assert!(
            response.cmds[1]
                .failure
                .as_deref()
                .unwrap()
                .starts_with("Not authorized"),
            "stop-domain is a write"
        );
    }

    #[test]
    fn written_response_declares_every_prefix_it_uses() {
        // A strict namespace-aware parser must accept what we write (§2, "ours").
        let doc = document(LIST);
        let data = doc.cmds[1].data[0].clone();
        let response = Response {
            version: doc.version.clone(),
            cmds: vec![CmdResponse {
                action: Some(Action::ListConstraints.into()),
                options: vec![],
                data: vec![DataResponse {
                    data,
                    status: Status::Success,
                    messages: vec![],
                    warning: Some("w".into()),
                }],
                failure: None,
            }],
            malformed: None,
        };
        let mut out = Vec::new();
        write_response(&mut out, &response);
        let xml = String::from_utf8(out).unwrap();
        let root = Element::parse(
            &xml,
            &NamespaceScope {
                default: crate::xml::Namespace::None,
                prefixes: vec![],
            },
        )
        .unwrap();
        assert!(!root.has_undeclared_prefix(), "{xml}");
        // And it reads back as the same data (request form round-trips).
        let again = parse_document(&root);
        assert_eq!(
            again.cmds[0].data[0].envelope,
            response.cmds[0].data[0].data.envelope
        );
    }
}
