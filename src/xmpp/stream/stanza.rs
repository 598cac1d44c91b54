//! iq handling on an authorized stream: resource binding (RFC 6120 §7), XEP-0199 ping, the
//! legacy session establishment, and `service-unavailable` for everything else (§8.2.3).

use crate::xml::{Element, Namespace};
use crate::xmpp::error::{StanzaErrorCondition, StreamError};
use crate::xmpp::jid;
use crate::xmpp::outbox::Outbox;
use crate::xmpp::stream::{Step, Stream, header::hex};

pub(super) fn iq(
    stream: &mut Stream,
    iq: &Element<'_>,
    out: &mut Outbox,
) -> Result<Step, StreamError> {
    let id = iq.attr("id");
    let kind = iq.attr("type");
    if matches!(kind, Some("result" | "error")) {
        return Ok(Step::Continue); // answers to nothing we asked: ignore (§8.2.3)
    }
    let payloads: Vec<&Element<'_>> = iq.elements().collect();
    let (Some(id), Some(kind @ ("get" | "set")), [payload]) = (id, kind, payloads.as_slice())
    else {
        // §8.2.3: get/set needs an id and exactly one child.
        reply_error(stream, iq, StanzaErrorCondition::BadRequest, out);
        return Ok(Step::Continue);
    };
    match (kind, payload.namespace, payload.local_name()) {
        ("set", Namespace::Bind, "bind") => bind(stream, iq, id, payload, out),
        ("set", Namespace::Session, "session") | ("get", Namespace::Ping, "ping") => {
            let attrs = reply_attrs(stream, iq, "result", Some(id));
            out.writer().empty("iq", &attrs);
            out.end_message();
        }
        _ => reply_error(stream, iq, StanzaErrorCondition::ServiceUnavailable, out),
    }
    Ok(Step::Continue)
}

/// §7.6: bind a resource (the client's, or one we generate), once per stream.
fn bind(stream: &mut Stream, iq: &Element<'_>, id: &str, payload: &Element<'_>, out: &mut Outbox) {
    let Some(identity) = &stream.identity else {
        // A local peer authorized by its uid has no user name to bind: it must use SASL for that.
        return reply_error(stream, iq, StanzaErrorCondition::NotAllowed, out);
    };
    if stream.bound.is_some() {
        return reply_error(stream, iq, StanzaErrorCondition::NotAllowed, out);
    }
    let requested = payload.child("resource", Namespace::Bind).map(|r| r.text());
    let resource = match requested.as_deref().map(str::trim) {
        None | Some("") => {
            let mut bytes = [0u8; 8];
            stream.ids.fill(&mut bytes);
            format!("ldmd-{}", hex(&bytes))
        }
        Some(resource) if jid::is_valid_resource(resource) => resource.to_owned(),
        Some(_) => return reply_error(stream, iq, StanzaErrorCondition::BadRequest, out),
    };
    let full = format!("{}@{}/{}", identity.user, stream.domain_name(), resource);
    stream.bound = Some(full.clone().into_boxed_str());
    reply_result(stream, iq, id, out, |w| {
        w.open("bind", &[("xmlns", Namespace::BIND)])
            .text_element("jid", &[], &full)
            .close("bind");
    });
}

fn reply_result(
    stream: &Stream,
    iq: &Element<'_>,
    id: &str,
    out: &mut Outbox,
    payload: impl FnOnce(&mut crate::xml::XmlWriter<'_>),
) {
    let attrs = reply_attrs(stream, iq, "result", Some(id));
    let mut w = out.writer();
    w.open("iq", &attrs);
    payload(&mut w);
    w.close("iq");
    out.end_message();
}

fn reply_error(
    stream: &Stream,
    iq: &Element<'_>,
    condition: StanzaErrorCondition,
    out: &mut Outbox,
) {
    let attrs = reply_attrs(stream, iq, "error", iq.attr("id"));
    let mut w = out.writer();
    w.open("iq", &attrs);
    condition.write(&mut w);
    w.close("iq");
    out.end_message();
}

/// A reply comes from whom the request was addressed to, and goes to the bound JID.
fn reply_attrs<'a>(
    stream: &'a Stream,
    iq: &'a Element<'_>,
    kind: &'a str,
    id: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut attrs = vec![("type", kind)];
    if let Some(id) = id {
        attrs.push(("id", id));
    }
    if let Some(from) = iq.attr("to") {
        attrs.push(("from", from));
    }
    if let Some(bound) = &stream.bound {
        attrs.push(("to", bound));
    }
    attrs
}
