//! Every limit the daemon enforces, declared once: its config key under `[limits]` (also its
//! metric label), its type, default, accepted range and meaning.
//!
//! The table below is the only list. The [`limits!`] macro turns it into the [`Limit`] enum
//! (what fired, counted in `ldmd_limit_hits_total{limit="<key>"}`), the checked [`Limits`]
//! values, and the optional fields of the config file, so that adding a limit is one line and
//! the README test (`every_limit_is_documented_with_its_default`) says where to document it.
//! Names end in the unit, as TigerBeetle's style asks: `_bytes_max`, `_secs`.
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

use std::time::Duration;

use serde::Deserialize;

/// One row of the table, for documentation checks and error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitSpec {
    pub key: &'static str,
    pub default: u64,
    pub min: u64,
    pub max: u64,
    pub doc: &'static str,
}

macro_rules! limits {
    (
        counted {
            $( $(#[doc = $doc:literal])+ $variant:ident $key:ident : $ty:ty = $default:expr, $min:tt ..= $max:tt; )+
        }
        settings {
            $( $(#[doc = $sdoc:literal])+ $skey:ident : $sty:ty = $sdefault:expr, $smin:tt ..= $smax:tt; )+
        }
    ) => {
        /// A limit that can fire; each is counted under its config key.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Limit {
            $( $(#[doc = $doc])+ $variant, )+
        }

        impl Limit {
            pub const ALL: &'static [Limit] = &[ $( Limit::$variant, )+ ];

            /// The config key that sets this limit, also its metric label.
            pub fn key(self) -> &'static str {
                match self {
                    $( Limit::$variant => stringify!($key), )+
                }
            }
        }

        /// Every limit and setting of `[limits]`, checked against its range.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct Limits {
            $( $(#[doc = $doc])+ pub $key: $ty, )+
            $( $(#[doc = $sdoc])+ pub $skey: $sty, )+
        }

        impl Default for Limits {
            fn default() -> Self {
                Limits {
                    $( $key: $default, )+
                    $( $skey: $sdefault, )+
                }
            }
        }

        /// `[limits]` as the operator wrote it: every key optional, unknown keys refused.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct LimitsFile {
            $( $key: Option<$ty>, )+
            $( $skey: Option<$sty>, )+
        }

        impl LimitsFile {
            /// Each value present is checked against its range; an absent one takes its default.
            fn resolve_values(&self) -> Result<Limits, LimitError> {
                let defaults = Limits::default();
                Ok(Limits {
                    $( $key: checked(stringify!($key), self.$key, defaults.$key, $min as u64, $max as u64)?, )+
                    $( $skey: checked(stringify!($skey), self.$skey, defaults.$skey, $smin as u64, $smax as u64)?, )+
                })
            }
        }

        /// The table, in order, for documentation and its tests.
        pub const SPECS: &[LimitSpec] = &[
            $( LimitSpec {
                key: stringify!($key),
                default: $default as u64,
                min: $min as u64,
                max: $max as u64,
                doc: concat!($($doc, "\n"),+),
            }, )+
            $( LimitSpec {
                key: stringify!($skey),
                default: $sdefault as u64,
                min: $smin as u64,
                max: $smax as u64,
                doc: concat!($($sdoc, "\n"),+),
            }, )+
        ];
    };
}

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// The default of `reply_bytes_max`, which `ldm` also uses as the largest reply it reads: it
/// fits `list-bindings` of a fully allocated machine (see the README's Reliability section).
pub const REPLY_BYTES_MAX_DEFAULT: usize = 16 * MIB;

limits! {
    counted {
        /// Largest top-level element once the stream is authenticated, in bytes: a partial
        /// stanza that outgrows it gets `policy-violation` (Prosody uses 256 KiB).
        StanzaBytes stanza_bytes_max: usize = 256 * KIB, 1024..=(16 * MIB);
        /// Largest top-level element before authentication (STARTTLS, SASL): an unauthenticated
        /// peer cannot make the daemon hold more than this of its input.
        PreauthStanzaBytes preauth_stanza_bytes_max: usize = 8 * KIB, 256..=(16 * MIB);
        /// Largest stream header, XML declaration included.
        HeaderBytes header_bytes_max: usize = 4096, 256..=(64 * KIB);
        /// Deepest element nesting inside one stanza.
        Depth depth_max: u32 = 32, 2..=256;
        /// Most attributes on one element, namespace declarations included.
        Attributes attributes_max: u32 = 64, 1..=1024;
        /// Longest attribute value, as written on the wire.
        AttributeValueBytes attribute_value_bytes_max: usize = 4096, 64..=MIB;
        /// Longest element or attribute name.
        NameBytes name_bytes_max: usize = 256, 16..=4096;
        /// SASL failures on one stream, and separately `temporary-auth-failure` answers, before
        /// the stream ends with `policy-violation` (RFC 6120 §6.4.5).
        SaslAttempts sasl_attempts_max: u32 = 3, 1..=5;
        /// Seconds from accept to authentication (SASL, or TLS for a local peer with a role).
        AuthTimeout auth_timeout_secs: u64 = 30, 1..=3600;
        /// Seconds without traffic from a stream that is owed nothing; 0 disables it.
        IdleTimeout idle_timeout_secs: u64 = 900, 0..=604_800;
        /// Open TCP connections, all sources together.
        Connections connections_max: usize = 16_384, 1..=1_048_576;
        /// Open TCP connections from one source address (one IPv6 /64 counts as one source).
        ConnectionsPerSource connections_per_source_max: usize = 256, 1..=1_048_576;
        /// Open Unix-socket connections, counted apart from TCP.
        UnixConnections unix_connections_max: usize = 256, 2..=65_536;
        /// Open Unix-socket connections of one uid other than root and the daemon's own.
        ConnectionsPerUid connections_per_uid_max: usize = 32, 1..=65_536;
        /// Unix-socket slots that only root and the daemon's own uid may take, so that other
        /// local users cannot lock the operator out.
        UnixConnectionsReserved unix_connections_reserved: usize = 16, 0..=65_535;
        /// LDM documents a stream may have awaiting an answer; its input pauses beyond.
        RequestsInFlight requests_in_flight_max: u32 = 16, 1..=1024;
        /// Seconds a peer may take to accept the bytes we write.
        SendTimeout send_timeout_secs: u64 = 30, 1..=3600;
        /// Password checks waiting for a verifier thread; beyond it `temporary-auth-failure`.
        AuthQueue auth_queue_max: usize = 256, 1..=65_536;
        /// Failed logins from one source within `login_failure_window_secs`; beyond it every
        /// login from that source gets `temporary-auth-failure` before any password is checked.
        LoginFailuresPerSource login_failures_per_source_max: u32 = 10, 1..=1_000_000;
        /// Failed logins as one user within `login_failure_window_secs`; beyond it that user's
        /// logins from sources that have failed in the window get `temporary-auth-failure`
        /// (a source that has not failed still gets its password checked).
        LoginFailuresPerUser login_failures_per_user_max: u32 = 10, 1..=1_000_000;
        /// Events waiting for one subscribed stream; beyond it `resource-constraint`.
        EventQueue event_queue_max: u32 = 1024, 1..=1_048_576;
        /// Seconds shutdown waits for documents in flight.
        ShutdownDrain shutdown_drain_secs: u64 = 5, 1..=3600;
        /// cmd elements in one LDM document; more fail the whole document.
        CmdsPerDocument cmds_per_document_max: usize = 64, 1..=65_536;
        /// data elements in one LDM document, all cmds together; more fail the whole document.
        DataPerDocument data_per_document_max: usize = 1024, 1..=1_048_576;
        /// Largest LDM reply document, in bytes: an answer that would outgrow it fails with a
        /// message instead (it fits list-bindings of a fully allocated machine).
        ReplyBytes reply_bytes_max: usize = REPLY_BYTES_MAX_DEFAULT, (64 * 1024)..=(1024 * MIB);
        /// Bytes of LDM replies built and not yet written, all streams together, beyond each
        /// stream's own share of `stanza_bytes_max`: a listing that would go beyond fails with
        /// a message instead of growing memory without bound.
        ReplyBytesInFlight reply_bytes_in_flight_max: usize = 256 * MIB, (64 * 1024)..=(64 * 1024 * MIB);
        /// Domains on the machine, the control domain included.
        Domains domains_max: usize = 65_536, 1..=1_048_576;
        /// Variables of one domain.
        VariablesPerDomain variables_per_domain_max: usize = 128, 0..=65_536;
        /// Longest variable value, in bytes.
        VariableValueBytes variable_value_bytes_max: usize = 1024, 1..=MIB;
    }
    settings {
        /// Seconds over which failed logins are counted (per source and per user).
        login_failure_window_secs: u64 = 300, 1..=86_400;
    }
}

/// A value outside its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limits.{key}: {message}")]
pub struct LimitError {
    pub key: &'static str,
    pub message: String,
}

fn checked<T: Wide>(
    key: &'static str,
    value: Option<T>,
    default: T,
    min: u64,
    max: u64,
) -> Result<T, LimitError> {
    let Some(value) = value else {
        return Ok(default);
    };
    let wide = value.wide();
    if (min..=max).contains(&wide) {
        Ok(value)
    } else {
        Err(LimitError {
            key,
            message: format!("{wide} is out of range: expected {min} to {max}"),
        })
    }
}

/// The value as a `u64`, to compare with its range (`usize` has no `Into<u64>`).
trait Wide: Copy {
    fn wide(self) -> u64;
}

impl Wide for u32 {
    fn wide(self) -> u64 {
        u64::from(self)
    }
}

impl Wide for u64 {
    fn wide(self) -> u64 {
        self
    }
}

impl Wide for usize {
    fn wide(self) -> u64 {
        // usize is at most 64 bits on every target ldmd builds for.
        u64::try_from(self).unwrap_or(u64::MAX)
    }
}

impl LimitsFile {
    /// The limits the operator wrote, each checked against its range; an absent one takes its
    /// default, except that a default that depends on another limit follows it: lowering
    /// `stanza_bytes_max` lowers the pre-authentication limit with it, raising it raises the
    /// reply limits, and a small `unix_connections_max` reserves at most half of its slots.
    /// Values written explicitly are kept, and [`Limits::check_relations`] judges them.
    pub fn resolve(self) -> Result<Limits, LimitError> {
        let mut limits = self.resolve_values()?;
        if self.preauth_stanza_bytes_max.is_none() {
            limits.preauth_stanza_bytes_max =
                limits.preauth_stanza_bytes_max.min(limits.stanza_bytes_max);
        }
        if self.reply_bytes_max.is_none() {
            limits.reply_bytes_max = limits
                .reply_bytes_max
                .max(limits.stanza_bytes_max.saturating_mul(2));
        }
        if self.reply_bytes_in_flight_max.is_none() {
            limits.reply_bytes_in_flight_max =
                limits.reply_bytes_in_flight_max.max(limits.reply_bytes_max);
        }
        if self.unix_connections_reserved.is_none() {
            limits.unix_connections_reserved = limits
                .unix_connections_reserved
                .min(limits.unix_connections_max / 2);
        }
        Ok(limits)
    }
}

impl Limits {
    /// Relations between limits that no single range can state.
    pub fn check_relations(&self) -> Result<(), LimitError> {
        let fail = |key, message: String| Err(LimitError { key, message });
        if self.preauth_stanza_bytes_max > self.stanza_bytes_max {
            return fail(
                "preauth_stanza_bytes_max",
                format!(
                    "{} is above stanza_bytes_max ({})",
                    self.preauth_stanza_bytes_max, self.stanza_bytes_max
                ),
            );
        }
        if self.unix_connections_reserved >= self.unix_connections_max {
            return fail(
                "unix_connections_reserved",
                format!(
                    "{} leaves no slot of unix_connections_max ({}) for other users",
                    self.unix_connections_reserved, self.unix_connections_max
                ),
            );
        }
        // A reply echoes its request, so it must be able to hold one.
        if self.reply_bytes_max < self.stanza_bytes_max.saturating_mul(2) {
            return fail(
                "reply_bytes_max",
                format!(
                    "{} is below twice stanza_bytes_max ({}): a reply echoes its request",
                    self.reply_bytes_max, self.stanza_bytes_max
                ),
            );
        }
        if self.reply_bytes_in_flight_max < self.reply_bytes_max {
            return fail(
                "reply_bytes_in_flight_max",
                format!(
                    "{} is below reply_bytes_max ({})",
                    self.reply_bytes_in_flight_max, self.reply_bytes_max
                ),
            );
        }
        Ok(())
    }

    pub fn auth_timeout(&self) -> Duration {
        Duration::from_secs(self.auth_timeout_secs)
    }

    /// `None` when `idle_timeout_secs = 0`.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_secs > 0).then(|| Duration::from_secs(self.idle_timeout_secs))
    }

    pub fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.send_timeout_secs)
    }

    pub fn shutdown_drain(&self) -> Duration {
        Duration::from_secs(self.shutdown_drain_secs)
    }

    pub fn login_failure_window(&self) -> Duration {
        Duration::from_secs(self.login_failure_window_secs)
    }

    /// What the framer enforces once the stream is authenticated.
    pub fn framer(&self) -> crate::xml::FramerLimits {
        crate::xml::FramerLimits {
            stanza_bytes_max: self.stanza_bytes_max,
            preauth_stanza_bytes_max: self.preauth_stanza_bytes_max,
            header_bytes_max: self.header_bytes_max,
            depth_max: self.depth_max,
            attributes_max: self.attributes_max,
            attribute_value_bytes_max: self.attribute_value_bytes_max,
            name_bytes_max: self.name_bytes_max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_lies_in_its_range_and_the_defaults_fit_together() {
        for spec in SPECS {
            assert!(
                (spec.min..=spec.max).contains(&spec.default),
                "{}: default {} outside {}..={}",
                spec.key,
                spec.default,
                spec.min,
                spec.max
            );
        }
        Limits::default().check_relations().unwrap();
    }

    #[test]
    fn every_counted_limit_is_a_key_of_the_table() {
        for limit in Limit::ALL {
            assert!(SPECS.iter().any(|s| s.key == limit.key()), "{limit:?}");
        }
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        let file: LimitsFile = toml::from_str("sasl_attempts_max = 9").unwrap();
        let err = file.resolve().unwrap_err();
        assert_eq!(err.key, "sasl_attempts_max");
        assert!(err.to_string().contains("1 to 5"), "{err}");
        let file: LimitsFile = toml::from_str("idle_timeout_secs = 0").unwrap();
        assert_eq!(file.resolve().unwrap().idle_timeout(), None);
    }

    #[test]
    fn defaults_that_depend_on_another_limit_follow_it() {
        // An operator who lowers stanza_bytes_max must not meet an error about a limit they
        // never heard of; one who writes both inconsistently does.
        let file: LimitsFile = toml::from_str("stanza_bytes_max = 4096").unwrap();
        let limits = file.resolve().unwrap();
        assert_eq!(limits.preauth_stanza_bytes_max, 4096);
        limits.check_relations().unwrap();
        let file: LimitsFile = toml::from_str("stanza_bytes_max = 16777216").unwrap();
        let limits = file.resolve().unwrap();
        assert_eq!(limits.reply_bytes_max, 32 * MIB);
        limits.check_relations().unwrap();
        let file: LimitsFile = toml::from_str("unix_connections_max = 4").unwrap();
        let limits = file.resolve().unwrap();
        assert_eq!(limits.unix_connections_reserved, 2);
        limits.check_relations().unwrap();
        let file: LimitsFile =
            toml::from_str("stanza_bytes_max = 4096\npreauth_stanza_bytes_max = 8192").unwrap();
        assert!(file.resolve().unwrap().check_relations().is_err());
    }

    #[test]
    fn relations_between_limits_are_checked() {
        let limits = Limits {
            unix_connections_reserved: 256,
            ..Limits::default()
        };
        assert_eq!(
            limits.check_relations().unwrap_err().key,
            "unix_connections_reserved"
        );
        let limits = Limits {
            preauth_stanza_bytes_max: 1 << 20,
            ..Limits::default()
        };
        assert_eq!(
            limits.check_relations().unwrap_err().key,
            "preauth_stanza_bytes_max"
        );
    }

    #[test]
    fn every_limit_is_documented_with_its_default() {
        // The README's limits table is the operator's reference: a key missing there, or
        // documented with another default, is a defect.
        let readme = include_str!("../README.md");
        for spec in SPECS {
            let row = readme
                .lines()
                .find(|line| line.starts_with(&format!("| `{}` |", spec.key)))
                .unwrap_or_else(|| panic!("README has no row for limits.{}", spec.key));
            let default = row.split('|').nth(2).unwrap_or_default().trim();
            assert_eq!(
                default.replace(['_', ','], ""),
                spec.default.to_string(),
                "README default of {}",
                spec.key
            );
        }
    }
}
