//! The parts of JID syntax (RFC 7622) a client-to-server endpoint must check: the domain a
//! client asks for, the JID it claims in `from`, and the resource it asks to bind.

/// RFC 7622 §3.1: each part of a JID is at most 1023 octets.
pub const PART_BYTES_MAX: usize = 1023;

/// Compares a requested domain with a served one: ASCII case-insensitive, trailing dot ignored.
pub fn domain_matches(requested: &str, served: &str) -> bool {
    requested
        .strip_suffix('.')
        .unwrap_or(requested)
        .eq_ignore_ascii_case(served)
}

/// A resourcepart (RFC 7622 §3.4, OpaqueString): 1..=1023 octets, no control characters.
pub fn is_valid_resource(resource: &str) -> bool {
    !resource.is_empty()
        && resource.len() <= PART_BYTES_MAX
        && !resource.chars().any(char::is_control)
        && !resource.trim().is_empty()
}

/// A localpart (RFC 7622 §3.3): 1..=1023 octets without the characters it forbids.
pub fn is_valid_localpart(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= PART_BYTES_MAX
        && !local
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "\"&'/:<>@".contains(c))
}

/// A domainpart: 1..=1023 octets, no whitespace, controls, `@` or `/`.
pub fn is_valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= PART_BYTES_MAX
        && !domain
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '@' || c == '/')
}

/// A whole JID `[local@]domain[/resource]`, as a client may claim in the header's `from`.
pub fn is_valid_jid(jid: &str) -> bool {
    let (bare, resource) = match jid.split_once('/') {
        Some((bare, resource)) => (bare, Some(resource)),
        None => (jid, None),
    };
    let (local, domain) = match bare.split_once('@') {
        Some((local, domain)) => (Some(local), domain),
        None => (None, bare),
    };
    local.is_none_or(is_valid_localpart)
        && is_valid_domain(domain)
        && resource.is_none_or(is_valid_resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_match_ignores_case_and_trailing_dot() {
        assert!(domain_matches("Example.COM.", "example.com"));
        assert!(!domain_matches("example.org", "example.com"));
    }

    #[test]
    fn resources() {
        assert!(is_valid_resource("laptop 2"));
        assert!(is_valid_resource("é"));
        for bad in ["", "   ", "a\u{0}b", "a\u{7}", &"r".repeat(1024)] {
            assert!(!is_valid_resource(bad), "{bad:?}");
        }
    }

    #[test]
    fn jids() {
        assert!(is_valid_jid("alice@example.com/phone"));
        assert!(is_valid_jid("example.com"));
        for bad in [
            "",
            "@example.com",
            "a@b@c",
            "al ice@example.com",
            "alice@/r",
            "alice@example.com/",
        ] {
            assert!(!is_valid_jid(bad), "{bad:?}");
        }
    }
}
