//! Stream headers: checking the client's (RFC 6120 §4.7) and writing ours with its features.

use crate::xml::{HeaderTag, Namespace, NamespaceScope};
use crate::xmpp::error::{StreamError, StreamErrorCondition as C};
use crate::xmpp::jid;
use crate::xmpp::outbox::Outbox;
use crate::xmpp::stream::{Peer, Phase, Stream};

/// Checks the client's header and answers with ours. Our header is written even when the
/// client's is refused, because a stream error needs an open stream (§4.9.1.1).
pub(super) fn accept(
    stream: &mut Stream,
    tag: &HeaderTag<'_>,
    out: &mut Outbox,
) -> Result<(), StreamError> {
    let to = tag.attr("to").map(str::trim);
    let matched = to.and_then(|to| {
        stream
            .config
            .domains
            .iter()
            .position(|d| jid::domain_matches(to, d))
    });
    stream.domain = matched.unwrap_or(0);
    let from = tag.attr("from").filter(|from| jid::is_valid_jid(from));
    write_header(stream, from, out);

    check_namespaces(stream, tag)?;
    check_version(tag.attr("version"))?;
    match (to, matched, stream.peer) {
        (Some(_), None, _) => {
            return Err(StreamError::with_text(
                C::HostUnknown,
                "this server does not serve that domain",
            ));
        }
        (None, _, Peer::Remote) => {
            return Err(StreamError::with_text(
                C::ImproperAddressing,
                "the stream header has no 'to'",
            ));
        }
        _ => {}
    }
    // Past the checks above, a 'to' names one of our domains: remember which (no allocation).
    let to_key = to.and(matched);
    match stream.first_to {
        // CVE-2018-10847: a restart must not switch domains under an established identity.
        Some(first) if first != to_key => {
            return Err(StreamError::with_text(
                C::NotAuthorized,
                "'to' changed across a stream restart",
            ));
        }
        Some(_) => {}
        None => stream.first_to = Some(to_key),
    }
    if tag.attr("from").is_some() && from.is_none() {
        return Err(StreamError::with_text(
            C::InvalidFrom,
            "'from' is not a valid JID",
        ));
    }
    Ok(())
}

/// The stream must be `stream` in the streams namespace with `jabber:client` content (§4.8).
/// A local peer may send the legacy LDM header, which declares no namespace at all.
fn check_namespaces(stream: &mut Stream, tag: &HeaderTag<'_>) -> Result<(), StreamError> {
    let undeclared_legacy = tag.namespace == Namespace::Undeclared
        && tag.name == "stream:stream"
        && tag.scope.default == Namespace::None
        && tag.scope.prefixes.is_empty();
    if undeclared_legacy && matches!(stream.peer, Peer::Local { .. }) {
        stream.legacy = true;
        stream.scope = NamespaceScope::shared_client();
        return Ok(());
    }
    if tag.namespace == Namespace::Undeclared {
        return Err(StreamError::with_text(
            C::BadNamespacePrefix,
            "the stream prefix is not declared",
        ));
    }
    if tag.namespace != Namespace::Streams || tag.local_name() != "stream" {
        return Err(StreamError::with_text(
            C::InvalidNamespace,
            "expected a stream in http://etherx.jabber.org/streams",
        ));
    }
    if tag.scope.default != Namespace::Client {
        return Err(StreamError::with_text(
            C::InvalidNamespace,
            "the content namespace must be jabber:client",
        ));
    }
    // Nearly every client declares exactly the usual scope: share it rather than copy it.
    stream.scope = if tag.scope == *NamespaceScope::shared_client() {
        NamespaceScope::shared_client()
    } else {
        std::sync::Arc::new(tag.scope.clone())
    };
    Ok(())
}

/// `version` missing means a pre-1.0 peer, which we do not serve (§4.7.5); a higher major
/// version is answered with 1.0, the highest we support.
fn check_version(version: Option<&str>) -> Result<(), StreamError> {
    let major = version
        .and_then(|v| v.split_once('.'))
        .filter(|(_, minor)| !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|(major, _)| major.parse::<u32>().ok());
    match major {
        Some(major) if major >= 1 => Ok(()),
        _ => Err(StreamError::with_text(
            C::UnsupportedVersion,
            "XMPP 1.0 is required",
        )),
    }
}

/// Our response header, with a fresh unpredictable id (§4.7.3: at least 128 bits).
pub(super) fn write_header(stream: &mut Stream, to: Option<&str>, out: &mut Outbox) {
    let mut id_bytes = [0u8; 16];
    stream.ids.fill(&mut id_bytes);
    let id = hex(&id_bytes);
    let domain = stream.domain_name();
    let mut attrs = vec![
        ("xmlns", Namespace::CLIENT),
        ("xmlns:stream", Namespace::STREAMS),
        ("id", id.as_str()),
        ("from", domain),
    ];
    if let Some(to) = to {
        attrs.push(("to", to));
    }
    attrs.extend([("version", "1.0"), ("xml:lang", "en")]);
    out.writer()
        .raw("<?xml version='1.0'?>")
        .open("stream:stream", &attrs);
    stream.header_sent = true;
}

/// The features for the stream's stage (§4.3.2), ending the header's message.
pub(super) fn write_features(stream: &Stream, out: &mut Outbox) {
    let mut w = out.writer();
    w.open("stream:features", &[]);
    match stream.phase {
        Phase::Plain => {
            w.open("starttls", &[("xmlns", Namespace::TLS)])
                .empty("required", &[])
                .close("starttls");
        }
        Phase::Secured { .. } => {
            // Local peers may skip this: documents are accepted on their kernel credentials.
            w.open("mechanisms", &[("xmlns", Namespace::SASL)])
                .text_element("mechanism", &[], "PLAIN")
                .close("mechanisms");
        }
        Phase::Ready => {
            w.empty("bind", &[("xmlns", Namespace::BIND)])
                .open("session", &[("xmlns", Namespace::SESSION)])
                .empty("optional", &[])
                .close("session");
        }
        _ => unreachable!("features are written right after a header"),
    }
    w.close("stream:features");
    out.end_message();
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
