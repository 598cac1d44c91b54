//! The XMPP error vocabulary, and the one place where each error becomes XML.
//!
//! Three layers, three enums, named exactly as RFC 6120 names them: stream errors end the stream
//! (§4.9), SASL failures end one authentication attempt (§6.5), stanza errors answer one iq
//! (§8.3).

use std::borrow::Cow;

use crate::limits::Limit;
use crate::xml::writer::XmlWriter;

/// Every defined stream error condition (RFC 6120 §4.9.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamErrorCondition {
    BadFormat,
    BadNamespacePrefix,
    Conflict,
    ConnectionTimeout,
    HostGone,
    HostUnknown,
    ImproperAddressing,
    InternalServerError,
    InvalidFrom,
    InvalidNamespace,
    InvalidXml,
    NotAuthorized,
    NotWellFormed,
    PolicyViolation,
    RemoteConnectionFailed,
    Reset,
    ResourceConstraint,
    RestrictedXml,
    SeeOtherHost,
    SystemShutdown,
    UndefinedCondition,
    UnsupportedEncoding,
    UnsupportedFeature,
    UnsupportedStanzaType,
    UnsupportedVersion,
}

impl StreamErrorCondition {
    pub const ALL: [StreamErrorCondition; 25] = [
        Self::BadFormat,
        Self::BadNamespacePrefix,
        Self::Conflict,
        Self::ConnectionTimeout,
        Self::HostGone,
        Self::HostUnknown,
        Self::ImproperAddressing,
        Self::InternalServerError,
        Self::InvalidFrom,
        Self::InvalidNamespace,
        Self::InvalidXml,
        Self::NotAuthorized,
        Self::NotWellFormed,
        Self::PolicyViolation,
        Self::RemoteConnectionFailed,
        Self::Reset,
        Self::ResourceConstraint,
        Self::RestrictedXml,
        Self::SeeOtherHost,
        Self::SystemShutdown,
        Self::UndefinedCondition,
        Self::UnsupportedEncoding,
        Self::UnsupportedFeature,
        Self::UnsupportedStanzaType,
        Self::UnsupportedVersion,
    ];

    /// The element name of the condition, also the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadFormat => "bad-format",
            Self::BadNamespacePrefix => "bad-namespace-prefix",
            Self::Conflict => "conflict",
            Self::ConnectionTimeout => "connection-timeout",
            Self::HostGone => "host-gone",
            Self::HostUnknown => "host-unknown",
            Self::ImproperAddressing => "improper-addressing",
            Self::InternalServerError => "internal-server-error",
            Self::InvalidFrom => "invalid-from",
            Self::InvalidNamespace => "invalid-namespace",
            Self::InvalidXml => "invalid-xml",
            Self::NotAuthorized => "not-authorized",
            Self::NotWellFormed => "not-well-formed",
            Self::PolicyViolation => "policy-violation",
            Self::RemoteConnectionFailed => "remote-connection-failed",
            Self::Reset => "reset",
            Self::ResourceConstraint => "resource-constraint",
            Self::RestrictedXml => "restricted-xml",
            Self::SeeOtherHost => "see-other-host",
            Self::SystemShutdown => "system-shutdown",
            Self::UndefinedCondition => "undefined-condition",
            Self::UnsupportedEncoding => "unsupported-encoding",
            Self::UnsupportedFeature => "unsupported-feature",
            Self::UnsupportedStanzaType => "unsupported-stanza-type",
            Self::UnsupportedVersion => "unsupported-version",
        }
    }
}

/// A stream error: a condition and an optional human-readable text (never a secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamError {
    pub condition: StreamErrorCondition,
    pub text: Option<Cow<'static, str>>,
    /// The configured limit that caused the error, if one did (counted in metrics).
    pub limit: Option<Limit>,
}

impl StreamError {
    pub fn new(condition: StreamErrorCondition) -> Self {
        Self {
            condition,
            text: None,
            limit: None,
        }
    }

    pub fn with_text(condition: StreamErrorCondition, text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            condition,
            text: Some(text.into()),
            limit: None,
        }
    }

    /// A stream error caused by a configured limit.
    pub fn limit(
        condition: StreamErrorCondition,
        limit: Limit,
        text: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            limit: Some(limit),
            ..Self::with_text(condition, text)
        }
    }

    /// `<stream:error><condition xmlns=.../><text>...</text></stream:error>`; the caller closes
    /// the stream after it.
    pub fn write(&self, w: &mut XmlWriter<'_>) {
        const NS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
        w.open("stream:error", &[])
            .empty(self.condition.as_str(), &[("xmlns", NS)]);
        if let Some(text) = &self.text {
            w.text_element("text", &[("xmlns", NS), ("xml:lang", "en")], text);
        }
        w.close("stream:error");
    }
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.condition.as_str())?;
        if let Some(text) = &self.text {
            write!(f, " ({text})")?;
        }
        Ok(())
    }
}

impl std::error::Error for StreamError {}

/// SASL failure conditions (RFC 6120 §6.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SaslFailure {
    Aborted,
    AccountDisabled,
    CredentialsExpired,
    EncryptionRequired,
    IncorrectEncoding,
    InvalidAuthzid,
    InvalidMechanism,
    MalformedRequest,
    MechanismTooWeak,
    NotAuthorized,
    TemporaryAuthFailure,
}

impl SaslFailure {
    pub const ALL: [SaslFailure; 11] = [
        Self::Aborted,
        Self::AccountDisabled,
        Self::CredentialsExpired,
        Self::EncryptionRequired,
        Self::IncorrectEncoding,
        Self::InvalidAuthzid,
        Self::InvalidMechanism,
        Self::MalformedRequest,
        Self::MechanismTooWeak,
        Self::NotAuthorized,
        Self::TemporaryAuthFailure,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aborted => "aborted",
            Self::AccountDisabled => "account-disabled",
            Self::CredentialsExpired => "credentials-expired",
            Self::EncryptionRequired => "encryption-required",
            Self::IncorrectEncoding => "incorrect-encoding",
            Self::InvalidAuthzid => "invalid-authzid",
            Self::InvalidMechanism => "invalid-mechanism",
            Self::MalformedRequest => "malformed-request",
            Self::MechanismTooWeak => "mechanism-too-weak",
            Self::NotAuthorized => "not-authorized",
            Self::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }

    /// `<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><condition/></failure>`
    pub fn write(self, w: &mut XmlWriter<'_>) {
        w.open("failure", &[("xmlns", "urn:ietf:params:xml:ns:xmpp-sasl")])
            .empty(self.as_str(), &[])
            .close("failure");
    }
}

/// Stanza error conditions this server sends (RFC 6120 §8.3.3), with their error types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StanzaErrorCondition {
    BadRequest,
    FeatureNotImplemented,
    InternalServerError,
    NotAllowed,
    NotAuthorized,
    ResourceConstraint,
    ServiceUnavailable,
}

impl StanzaErrorCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad-request",
            Self::FeatureNotImplemented => "feature-not-implemented",
            Self::InternalServerError => "internal-server-error",
            Self::NotAllowed => "not-allowed",
            Self::NotAuthorized => "not-authorized",
            Self::ResourceConstraint => "resource-constraint",
            Self::ServiceUnavailable => "service-unavailable",
        }
    }

    /// The error type RFC 6120 §8.3.3 recommends for the condition.
    pub fn error_type(self) -> &'static str {
        match self {
            Self::BadRequest => "modify",
            Self::NotAuthorized => "auth",
            Self::ResourceConstraint => "wait",
            Self::FeatureNotImplemented
            | Self::InternalServerError
            | Self::NotAllowed
            | Self::ServiceUnavailable => "cancel",
        }
    }

    /// `<error type='...'><condition xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>`
    pub fn write(self, w: &mut XmlWriter<'_>) {
        w.open("error", &[("type", self.error_type())])
            .empty(
                self.as_str(),
                &[("xmlns", "urn:ietf:params:xml:ns:xmpp-stanzas")],
            )
            .close("error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{Element, Namespace, NamespaceScope};

    #[test]
    fn every_stream_error_condition_is_well_formed_in_its_namespace() {
        // RFC 6120 §4.9.2: one condition, in the streams namespace, optional text.
        for condition in StreamErrorCondition::ALL {
            let mut out = Vec::new();
            StreamError::with_text(condition, "why <&>").write(&mut XmlWriter::new(&mut out));
            let xml = String::from_utf8(out).unwrap();
            let error = Element::parse(&xml, &NamespaceScope::client()).unwrap();
            assert!(error.is("error", Namespace::Streams));
            let children: Vec<_> = error.elements().collect();
            assert_eq!(children.len(), 2);
            assert!(children[0].is(condition.as_str(), Namespace::StreamErrors));
            assert!(children[1].is("text", Namespace::StreamErrors));
            assert_eq!(children[1].text(), "why <&>");
        }
    }

    #[test]
    fn every_sasl_failure_is_well_formed() {
        for failure in SaslFailure::ALL {
            let mut out = Vec::new();
            failure.write(&mut XmlWriter::new(&mut out));
            let xml = String::from_utf8(out).unwrap();
            let element = Element::parse(&xml, &NamespaceScope::client()).unwrap();
            assert!(element.is("failure", Namespace::Sasl));
            assert_eq!(
                element.elements().next().unwrap().local_name(),
                failure.as_str()
            );
        }
    }
}
