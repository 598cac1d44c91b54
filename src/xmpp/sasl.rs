//! SASL PLAIN (RFC 4616) message parsing, as carried by XMPP (RFC 6120 §6.4.2).
//!
//! `message = [authzid] NUL authcid NUL passwd`, each field 1..=255 octets of UTF-8 (authzid may
//! be empty), base64-encoded on the wire. Parsing is pure; checking the password is the
//! verifier's job, off the I/O threads.

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::xmpp::error::SaslFailure;

/// RFC 4616 §2: each field is at most 255 octets.
pub const FIELD_BYTES_MAX: usize = 255;
/// The longest valid message (three fields and two separators), base64-encoded.
pub const ENCODED_BYTES_MAX: usize = (3 * FIELD_BYTES_MAX + 2).div_ceil(3) * 4;

/// What a client presented. The password is wiped from memory when dropped and never printed.
pub struct PlainCredentials {
    /// The identity to act as; `None` when the field was empty (act as `authcid`).
    pub authzid: Option<String>,
    /// The user name to authenticate.
    pub authcid: String,
    pub password: Zeroizing<String>,
}

impl std::fmt::Debug for PlainCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainCredentials")
            .field("authzid", &self.authzid)
            .field("authcid", &self.authcid)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Decodes the base64 text of an `<auth>` or `<response>` element into credentials.
pub fn parse_plain(encoded: &str) -> Result<PlainCredentials, SaslFailure> {
    if encoded.len() > ENCODED_BYTES_MAX {
        return Err(SaslFailure::MalformedRequest);
    }
    // RFC 6120 §6.4.2: "=" is an empty response; PLAIN needs three fields.
    if encoded == "=" {
        return Err(SaslFailure::MalformedRequest);
    }
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| SaslFailure::IncorrectEncoding)?,
    );
    let mut fields = decoded.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(SaslFailure::MalformedRequest);
    };
    if authcid.is_empty() || password.is_empty() {
        return Err(SaslFailure::MalformedRequest);
    }
    if [authzid, authcid, password]
        .iter()
        .any(|f| f.len() > FIELD_BYTES_MAX)
    {
        return Err(SaslFailure::MalformedRequest);
    }
    fn text(bytes: &[u8]) -> Result<&str, SaslFailure> {
        std::str::from_utf8(bytes).map_err(|_| SaslFailure::MalformedRequest)
    }
    Ok(PlainCredentials {
        authzid: (!authzid.is_empty())
            .then(|| text(authzid).map(str::to_owned))
            .transpose()?,
        authcid: text(authcid)?.to_owned(),
        password: Zeroizing::new(text(password)?.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(raw: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(raw)
    }

    #[test]
    fn parses_the_three_fields() {
        let c = parse_plain(&encode(b"alice@example.com\0alice\0s3cret")).unwrap();
        assert_eq!(c.authzid.as_deref(), Some("alice@example.com"));
        assert_eq!(c.authcid, "alice");
        assert_eq!(&*c.password, "s3cret");
        let c = parse_plain(&encode(b"\0alice\0s3cret")).unwrap();
        assert_eq!(c.authzid, None);
    }

    #[test]
    fn bad_base64_is_incorrect_encoding() {
        // RFC 6120 §6.5.2.
        assert_eq!(
            parse_plain("not base64!").unwrap_err(),
            SaslFailure::IncorrectEncoding
        );
        assert_eq!(
            parse_plain("AGFsaWNl\nAHM=").unwrap_err(),
            SaslFailure::IncorrectEncoding
        );
    }

    #[test]
    fn wrong_structure_is_malformed_request() {
        // RFC 4616 §2: exactly two NULs, non-empty authcid and password.
        for raw in [
            &b"alice\0secret"[..],
            b"a\0b\0c\0d",
            b"\0\0secret",
            b"\0alice\0",
            b"",
        ] {
            assert_eq!(
                parse_plain(&encode(raw)).unwrap_err(),
                SaslFailure::MalformedRequest,
                "{raw:?}"
            );
        }
        assert_eq!(parse_plain("=").unwrap_err(), SaslFailure::MalformedRequest);
    }

    #[test]
    fn non_utf8_field_is_malformed_request() {
        assert_eq!(
            parse_plain(&encode(b"\0al\xffice\0pw")).unwrap_err(),
            SaslFailure::MalformedRequest
        );
    }

    #[test]
    fn fields_are_bounded() {
        // RFC 4616 §2: at most 255 octets per field.
        let mut raw = b"\0alice\0".to_vec();
        raw.extend(std::iter::repeat_n(b'p', 256));
        assert_eq!(
            parse_plain(&encode(&raw)).unwrap_err(),
            SaslFailure::MalformedRequest
        );
        raw.truncate(raw.len() - 1);
        assert!(parse_plain(&encode(&raw)).is_ok());
        assert_eq!(
            parse_plain(&"A".repeat(ENCODED_BYTES_MAX + 4)).unwrap_err(),
            SaslFailure::MalformedRequest
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = parse_plain(&encode(b"\0alice\0hunter2")).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
