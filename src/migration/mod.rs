//! Domain migration between two ldmd daemons (ldm-xml-interface.md §6): never on both hosts,
//! never on neither, whatever is killed or cut.
//!
//! Two-phase commit in which the **target decides**. One attempt is one [`MigrationId`]; each
//! side keeps a durable record of it in its own registry store, written in the same commit as
//! the change to the domain it describes.
//!
//! ```text
//!  source (S)                                       target (T)
//!  Outgoing(Preparing), domain locked ──reserve──▶  checks; receiving domain (flag t);
//!                                     ◀──token───   Reserved(token)
//!  Outgoing(Preparing, token)        ──transfer*─▶  (progress, volatile)
//!  Outgoing(Prepared), domain stopped
//!    only after this commit:         ──commit───▶   Reserved ─▶ Committed; the domain is T's
//!                                     ◀─committed─
//!  domain removed, Done              ──forget───▶   tombstone dropped
//!  (record dropped when acknowledged) ◀──────────
//!
//!  no answer to commit: flag e, the requester told "in doubt"; S keeps sending
//!  resolve ──▶ Committed: committed | Reserved: released, aborted | nothing: aborted
//! ```
//!
//! Why it is safe: T commits only from `Reserved` with the token it gave, and `resolve` deletes
//! `Reserved` before it answers `aborted`, so a late commit finds nothing; S sends commit only
//! after `Prepared` is durable and from then on never resumes the domain but on an explicit
//! `aborted` (or an operator's forced recovery); S removes the domain only on `committed`, which
//! T sends only once `Committed` is durable; T keeps its tombstone until `forget`, so "no record"
//! keeps meaning "aborted".
//!
//! - [`source`] and [`target`]: the two state machines, pure. The registry applies them; the
//!   model check (`model`, a test) explores them over every interleaving of delivery, loss,
//!   duplication, reordering, crash and restart.
//! - [`wire`]: the internal documents, ordinary `LDM_interface` documents that go through each
//!   daemon's normal pipeline.
//! - [`worker`]: the shell: the thread that drives the target over an authenticated XMPP/TLS
//!   session, and [`trust`], the peer certificates it verifies the target against.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod plan;
pub mod source;
pub mod target;
pub mod trust;
pub mod wire;
pub mod worker;

#[cfg(test)]
mod model;

/// The version of the internal documents this daemon speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// One migration attempt: 128 bits from the daemon's entropy, never reused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MigrationId(pub u128);

impl MigrationId {
    /// The id as written on the wire and in logs: 32 lower-case hex digits.
    pub fn parse(text: &str) -> Option<MigrationId> {
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(text, 16).ok().map(MigrationId)
    }

    /// The SASL user name the source's resolver logs in with (see [`Token`]).
    pub fn resolver_user(self) -> String {
        format!("{RESOLVER_USER_PREFIX}{self}")
    }

    /// The migration a resolver user name stands for.
    pub fn from_resolver_user(user: &str) -> Option<MigrationId> {
        user.strip_prefix(RESOLVER_USER_PREFIX)
            .and_then(MigrationId::parse)
    }
}

/// Resolver identities are named `ldmd-migration-<id>`: a name `ldmd user add` refuses.
pub const RESOLVER_USER_PREFIX: &str = "ldmd-migration-";

impl fmt::Display for MigrationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for MigrationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MigrationId({self})")
    }
}

/// The secret the target gives for one reservation. Every later message of the attempt carries
/// it, and the source's resolver logs in with it (user [`MigrationId::resolver_user`]) once the
/// operator's password is gone: the password is never stored. The target's record keeps only
/// its SHA-256 ([`TokenDigest`]).
///
/// A token is a fresh random nonce and a MAC of the migration and the nonce under the target's
/// durable resolver key ([`Token::mint`]), so the target authenticates a resolver with its key
/// alone ([`Token::verifies`]). That matters once the record is gone: a source that restarts
/// after the target forgot or released the migration must still hear `forgotten` or `aborted`,
/// not a refused login it could never get past. The nonce keeps each reservation's token new,
/// which the target's rules rely on (a stale commit never matches a later reservation).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Token(pub [u8; 32]);

/// Domain separation of the MAC behind tokens.
const TOKEN_CONTEXT: &[u8] = b"ldmd migration resolver token v1\0";

impl Token {
    /// 64 hex digits.
    pub fn parse(text: &str) -> Option<Token> {
        let bytes = decode_hex::<32>(text)?;
        Some(Token(bytes))
    }

    /// The token of a new reservation of `id`: `nonce` (16 bytes nobody saw before), then the
    /// first 16 bytes of HMAC-SHA256(`key`, context, id, nonce).
    pub fn mint(key: &[u8; 32], id: MigrationId, nonce: [u8; 16]) -> Token {
        let mut out = [0u8; 32];
        let (head, tail) = out.split_at_mut(16);
        head.copy_from_slice(&nonce);
        tail.copy_from_slice(&Token::tag(key, id, &nonce));
        Token(out)
    }

    /// Whether this token was minted under `key` for `id` (in time independent of where a
    /// wrong one differs).
    pub fn verifies(&self, key: &[u8; 32], id: MigrationId) -> bool {
        let (nonce, tag) = self.0.split_at(16);
        let expected = Token::tag(key, id, nonce);
        tag.iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    fn tag(key: &[u8; 32], id: MigrationId, nonce: &[u8]) -> [u8; 16] {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
        let mut context = ring::hmac::Context::with_key(&key);
        context.update(TOKEN_CONTEXT);
        context.update(&id.0.to_be_bytes());
        context.update(nonce);
        let mut tag = [0u8; 16];
        for (out, byte) in tag.iter_mut().zip(context.sign().as_ref()) {
            *out = *byte;
        }
        tag
    }

    pub fn digest(&self) -> TokenDigest {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        TokenDigest(out)
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for Token {
    /// Never the secret itself: tokens end up in logs only as "Token(…)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(…)")
    }
}

/// What the target keeps of a token.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenDigest(pub [u8; 32]);

impl TokenDigest {
    /// Whether `token` is the one this digest was made from (in time independent of where
    /// they differ).
    pub fn matches(&self, token: &Token) -> bool {
        let other = token.digest();
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(…)")
    }
}

/// The target's definitive answer to commit or resolve. Anything else (a failure reply, a
/// timeout, a lost link) leaves the outcome unknown to the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Committed,
    Aborted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Committed => "committed",
            Outcome::Aborted => "aborted",
        }
    }

    pub fn parse(text: &str) -> Option<Outcome> {
        match text {
            "committed" => Some(Outcome::Committed),
            "aborted" => Some(Outcome::Aborted),
            _ => None,
        }
    }
}

/// What one step of a state machine does to its durable record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RecordChange<T> {
    Keep,
    Set(T),
    Delete,
}

impl<T> RecordChange<T> {
    /// The record after this change.
    pub fn applied(self, before: Option<T>) -> Option<T> {
        match self {
            RecordChange::Keep => before,
            RecordChange::Set(record) => Some(record),
            RecordChange::Delete => None,
        }
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len().saturating_mul(2));
    for byte in bytes {
        for nibble in [byte >> 4, byte & 0x0f] {
            // A nibble is below 16: always a digit.
            out.extend(DIGITS.get(usize::from(nibble)).map(|d| char::from(*d)));
        }
    }
    out
}

/// Exactly `N` bytes from `2N` hex digits (either case).
pub fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != N.checked_mul(2)? {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let high = char::from(*pair.first()?).to_digit(16)?;
        let low = char::from(*pair.get(1)?).to_digit(16)?;
        *byte = u8::try_from(high.checked_mul(16)?.checked_add(low)?).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_only_under_its_key_for_its_migration() {
        let key = [5u8; 32];
        let id = MigrationId(42);
        let token = Token::mint(&key, id, [9; 16]);
        assert!(token.verifies(&key, id));
        assert!(!token.verifies(&[6; 32], id), "another daemon's key");
        assert!(!token.verifies(&key, MigrationId(43)), "another migration");
        // A fresh nonce makes a different token, and each verifies on its own.
        let other = Token::mint(&key, id, [10; 16]);
        assert_ne!(other, token);
        assert!(other.verifies(&key, id));
        for byte in 0..32 {
            let mut forged = token.clone();
            forged.0[byte] ^= 1;
            assert!(!forged.verifies(&key, id), "byte {byte} flipped");
        }
    }

    #[test]
    fn ids_and_tokens_round_trip_as_hex_and_refuse_anything_else() {
        let id = MigrationId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(id.to_string(), "0123456789abcdef0011223344556677");
        assert_eq!(MigrationId::parse(&id.to_string()), Some(id));
        assert_eq!(
            MigrationId::from_resolver_user(&id.resolver_user()),
            Some(id)
        );
        for bad in [
            "",
            "0123",
            "g123456789abcdef0011223344556677",
            "+123456789abcdef0011223344556677",
        ] {
            assert_eq!(MigrationId::parse(bad), None, "{bad}");
        }
        assert_eq!(MigrationId::from_resolver_user("alice"), None);
        let token = Token([7; 32]);
        assert_eq!(Token::parse(&token.to_hex()), Some(token.clone()));
        assert_eq!(
            Token::parse(&token.to_hex().to_uppercase()),
            Some(token.clone())
        );
        assert_eq!(Token::parse("07"), None);
        assert_eq!(Token::parse(&"zz".repeat(32)), None);
        assert_eq!(format!("{token:?}"), "Token(…)");
    }

    #[test]
    fn a_digest_matches_only_its_own_token() {
        let token = Token([1; 32]);
        let digest = token.digest();
        assert!(digest.matches(&token));
        let mut other = token.0;
        other[31] ^= 1;
        assert!(!digest.matches(&Token(other)));
    }
}
