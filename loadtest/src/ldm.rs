//! The LDM documents the scenarios send, the two things they read from a reply (the document
//! status and the first `resp_msg`), and the two they read from an event (its action and
//! domain).
//!
//! A reply's document status is the `response` that is the last child of `LDM_interface`
//! (§2.1), so it is the last `<status>` in the reply: everything a server echoes inside the
//! reply is escaped text or comes before it. Reading that one marker keeps the client loose
//! (it measures the server, it does not validate it) without being fooled by per-object
//! statuses.

/// The domain a load client works on: `load-<run>-<client>-<k>`. The run tag (this process's
/// id and start time) keeps runs apart, so that domains an interrupted run left behind never
/// collide with the next run's.
pub fn domain_name(client: usize, k: u64) -> String {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| {
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("{:x}{:04x}", std::process::id(), seconds & 0xffff)
    });
    format!("load-{run}-{client}-{k}")
}

/// An LDM action the scenarios send, named as the long ldm subcommand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    AddDomain,
    SetVcpu,
    SetMemory,
    RemoveDomain,
    ListDomain,
    ListBindings,
    ListConstraints,
    RegAllEvents,
}

impl Action {
    /// What one write client does to one domain, in order: every step a durable write, and the
    /// last undoes the first, so a finished cycle leaves the registry as it found it.
    pub const CYCLE: [Action; 4] = [
        Action::AddDomain,
        Action::SetVcpu,
        Action::SetMemory,
        Action::RemoveDomain,
    ];

    /// The cycle's names, as table rows.
    pub const CYCLE_NAMES: &[&str] = &["add-domain", "set-vcpu", "set-memory", "remove-domain"];

    pub fn name(self) -> &'static str {
        match self {
            Action::AddDomain => "add-domain",
            Action::SetVcpu => "set-vcpu",
            Action::SetMemory => "set-memory",
            Action::RemoveDomain => "remove-domain",
            Action::ListDomain => "list-domain",
            Action::ListBindings => "list-bindings",
            Action::ListConstraints => "list-constraints",
            Action::RegAllEvents => "reg-all-events",
        }
    }

    /// The request document for this action on `domain`, or on no object (every domain for a
    /// list, the stream itself for a registration). Our domain names need no escaping.
    pub fn document(self, domain: Option<&str>) -> String {
        let content = domain.map(|domain| {
            debug_assert!(
                domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-'),
                "{domain}"
            );
            match self {
                Action::AddDomain => content_with_item(
                    domain,
                    "<rasd:OtherResourceType>ldom_info</rasd:OtherResourceType>",
                ),
                Action::SetVcpu => content_with_item(
                    domain,
                    "<rasd:OtherResourceType>cpu</rasd:OtherResourceType><rasd:AllocationUnits>4</rasd:AllocationUnits>",
                ),
                Action::SetMemory => content_with_item(
                    domain,
                    "<rasd:OtherResourceType>memory</rasd:OtherResourceType><rasd:AllocationUnits>2G</rasd:AllocationUnits>",
                ),
                _ => format!(r#"<Content xsi:type="ovf:VirtualSystem_Type" id="{domain}"/>"#),
            }
        });
        let data = match content {
            Some(content) => {
                format!(r#"<data version="3.0"><Envelope><References/>{content}</Envelope></data>"#)
            }
            None => r#"<data version="3.0"/>"#.to_owned(),
        };
        format!(
            r#"<LDM_interface version="1.3"><cmd><action>{}</action>{data}</cmd></LDM_interface>"#,
            self.name()
        )
    }
}

fn content_with_item(domain: &str, item: &str) -> String {
    format!(
        r#"<Content xsi:type="ovf:VirtualSystem_Type" id="{domain}"><Section xsi:type="ovf:ResourceAllocationSection_type"><Item>{item}</Item></Section></Content>"#
    )
}

/// What a reply said.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The document status was `success`.
    pub success: bool,
    /// The first `resp_msg` anywhere in the reply (on a failure, the first reason).
    pub message: Option<String>,
}

/// Reads the document status and the first `resp_msg` of one whole reply.
pub fn outcome(reply: &str) -> Outcome {
    let status = reply
        .rfind("<status>")
        .and_then(|at| between(&reply[at..], "<status>", "</status>"));
    Outcome {
        success: status == Some("success"),
        message: between(reply, "<resp_msg>", "</resp_msg>").map(unescape),
    }
}

/// The text between the first `open` in `text` and the `close` after it.
fn between<'t>(text: &'t str, open: &str, close: &str) -> Option<&'t str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    Some(&text[start..start + len])
}

/// The five predefined entities, which is all a server's `resp_msg` text can hold.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// What an `LDM_event` says happened, and to which domain: its `action` and the `id` of its
/// first `Content` (ldmd writes `id='…'`; `ovf:id` and double quotes are read too). `None` for
/// an event about no domain (an SP configuration) or for something that is not an event.
pub fn event(document: &str) -> Option<(&str, &str)> {
    let document = &document[document.find("<LDM_event")?..];
    let action = between(document, "<action>", "</action>")?;
    let content = &document[document.find("<Content")?..];
    let tag = &content[..content.find('>')?];
    let at = [" id='", " id=\"", ":id='", ":id=\""]
        .iter()
        .find_map(|open| tag.find(open).map(|at| at + open.len()))?;
    let quote = tag.as_bytes()[at - 1] as char;
    let len = tag[at..].find(quote)?;
    Some((action, &tag[at..at + len]))
}

#[cfg(test)]
mod tests {
    use super::*;

    use ldmd::ldm::event::{Event, EventClass};
    use ldmd::ldm::handler::{DocumentHandler, Unsupported};
    use ldmd::ldm::{
        ActionName, CmdResponse, Data, DataResponse, Response, Role, Status, parse_document,
        write_response,
    };
    use ldmd::xml::{Element, NamespaceScope};

    fn parse(xml: &str) -> ldmd::ldm::Document {
        parse_document(&Element::parse(xml, &NamespaceScope::client()).expect("well-formed"))
    }

    fn written(response: &Response) -> String {
        let mut out = Vec::new();
        write_response(&mut out, response);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_document_is_what_ldmd_reads_as_that_action_on_that_domain() {
        // The documents follow the wire contract; ldmd's own parser is the judge.
        let expected = [
            ("add-domain", Some(("ldom_info", None))),
            ("set-vcpu", Some(("cpu", Some("4")))),
            ("set-memory", Some(("memory", Some("2G")))),
            ("remove-domain", None),
        ];
        for (action, (name, item)) in Action::CYCLE.into_iter().zip(expected) {
            assert_eq!(action.name(), name);
            let doc = parse(&action.document(Some("load-7-42")));
            assert_eq!(doc.malformed, None, "{name}");
            assert_eq!(doc.version.as_deref(), Some("1.3"));
            let [cmd] = doc.cmds.as_slice() else {
                panic!("{name}: one cmd")
            };
            assert_eq!(
                (cmd.action.as_ref().map(ActionName::as_str), &cmd.malformed),
                (Some(name), &None)
            );
            let envelope = cmd.data[0].envelope.as_ref().expect("envelope");
            let [content] = envelope.contents.as_slice() else {
                panic!("{name}: one Content")
            };
            assert_eq!(content.id, "load-7-42");
            match item {
                None => assert!(content.sections.is_empty(), "{name}"),
                Some((resource, units)) => {
                    let item = &content.sections[0].items[0];
                    assert_eq!(item.resource_type, resource);
                    assert_eq!(item.allocation_units.as_deref(), units);
                }
            }
        }
        assert_eq!(Action::CYCLE.map(Action::name), Action::CYCLE_NAMES);
    }

    #[test]
    fn reads_and_registrations_name_one_domain_or_none() {
        for action in [
            Action::ListDomain,
            Action::ListBindings,
            Action::ListConstraints,
            Action::RegAllEvents,
        ] {
            let doc = parse(&action.document(None));
            let cmd = &doc.cmds[0];
            assert_eq!(
                cmd.action.as_ref().map(ActionName::as_str),
                Some(action.name())
            );
            assert_eq!(cmd.data.len(), 1);
            assert!(cmd.data[0].envelope.is_none(), "{}", action.name());
            let named = parse(&action.document(Some("load-1-2")));
            let envelope = named.cmds[0].data[0].envelope.as_ref().unwrap();
            assert_eq!(envelope.contents[0].id, "load-1-2");
            assert!(envelope.contents[0].sections.is_empty());
        }
    }

    #[test]
    fn an_event_gives_its_action_and_domain() {
        // ldmd's own event writer, for a domain event and a resource event.
        let data =
            |action: Action| parse(&action.document(Some("load-3-9"))).cmds[0].data[0].clone();
        for (class, action) in [
            (EventClass::Domain, Action::AddDomain),
            (EventClass::Resource, Action::SetVcpu),
        ] {
            let written = Event::new(class, action.name(), &data(action));
            let text = String::from_utf8(written.document.to_vec()).unwrap();
            assert_eq!(event(&text), Some((action.name(), "load-3-9")), "{text}");
        }
        let other = r#"<LDM_event version="1.1"><cmd><action>add-spconfig</action><data version="3.0"><Envelope><References/><Section/></Envelope></data></cmd></LDM_event>"#;
        assert_eq!(event(other), None);
        let ovf = r#"<LDM_event><cmd><action>stop-domain</action><data><Envelope><Content ovf:id="ldg1"/></Envelope></data></cmd></LDM_event>"#;
        assert_eq!(event(ovf), Some(("stop-domain", "ldg1")));
        assert_eq!(
            event("<LDM_interface><cmd><action>add-domain</action></cmd>"),
            None
        );
    }

    #[test]
    fn unsupported_reply_is_a_failure_with_its_reason() {
        // Today's ldmd: every cmd refused, each level failure, the reason in the cmd's resp_msg.
        let doc = parse(&Action::AddDomain.document(Some("load-0-0")));
        let reply = written(&Unsupported.handle(&doc, Role::Write));
        assert_eq!(
            outcome(&reply),
            Outcome {
                success: false,
                message: Some("The action 'add-domain' is not supported by this ldmd".to_owned()),
            }
        );
    }

    #[test]
    fn document_status_is_the_last_one_not_an_objects() {
        // A successful document whose object carries a warning: the object's own response
        // comes first, the document's last.
        let doc = parse(&Action::SetMemory.document(Some("load-0-0")));
        let data: Data = doc.cmds[0].data[0].clone();
        let cmd = |status, messages: Vec<&str>| CmdResponse {
            action: Some(ActionName::Known(ldmd::ldm::Action::SetMemory)),
            options: Vec::new(),
            data: vec![DataResponse {
                data: data.clone(),
                status,
                messages: messages.into_iter().map(String::from).collect(),
                warning: None,
            }],
            failure: None,
        };
        let response = |cmds| Response {
            version: Some("1.3".into()),
            cmds,
            malformed: None,
        };
        let ok = written(&response(vec![cmd(Status::Success, vec![])]));
        assert_eq!(
            outcome(&ok),
            Outcome {
                success: true,
                message: None
            }
        );
        let failed = written(&response(vec![
            cmd(Status::Success, vec![]),
            cmd(Status::Failure, vec!["Domain <load-0-0> & co. not found"]),
        ]));
        assert_eq!(
            outcome(&failed),
            Outcome {
                success: false,
                message: Some("Domain <load-0-0> & co. not found".to_owned()),
            }
        );
    }

    #[test]
    fn a_reply_without_a_status_is_no_success() {
        assert!(!outcome("<LDM_interface version='1.3'></LDM_interface>").success);
        assert!(!outcome("<status>succ").success);
    }
}
