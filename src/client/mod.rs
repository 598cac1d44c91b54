//! The `ldm` command's connection to ldmd: the shell around [`crate::cli::stream`].
//!
//! ```text
//!  connect ─▶ header ─▶ features{starttls} ─▶ <starttls/> ─▶ <proceed/> ─▶ TLS (verified)
//!          ─▶ header ─▶ features ─┬─ local (Unix socket): documents at once (§1.2)
//!                                 └─ remote: <auth PLAIN> ─▶ <success/> ─▶ header ─▶ features
//!                                            ─▶ documents
//! ```
//!
//! Blocking std sockets, one connection, every wait bounded. `connect_timeout` bounds the
//! whole of reaching the daemon: the connect (a Unix socket whose daemon stopped accepting
//! included), STARTTLS, the TLS handshake and the login. `reply_timeout` bounds sending each
//! request and waiting for its reply. Each read and write on the socket carries what is left
//! of the current limit as its timeout. Events wait without limit and send a whitespace
//! keepalive when the stream has been quiet for a while.
//!
//! **Trust.** Over TCP the daemon is verified against `--ca` (names checked), a pinned
//! SHA-256 fingerprint, or not at all with `--insecure`; without them, the certificate of
//! `--config`/`--state-dir`, if there is one and it passes the certificate checks below,
//! serves as `--ca`.
//!
//! Over the Unix socket, unless one of those three options is given, `ldm` first makes sure
//! that only root or the caller can have put there what it is about to trust (the defaults
//! are relative to the working directory, which may be a shared one like `/tmp`). Before
//! connecting, even when nothing listens yet ([`local_trust`]):
//!
//! 1. the socket's directory (symlinks followed) must exist, else the daemon is unreachable
//!    (exit 3); it must belong to root or the caller and must not be writable by group or
//!    others (mode `& 0o022 == 0`; the sticky bit does not help), so that only its owner or
//!    root can have bound a socket in it;
//! 2. if the daemon's certificate file can be opened, the opened file must belong to root or
//!    the caller and not be writable by others (`& 0o002 == 0`), and its directory must pass
//!    rule 1; the certificate is then pinned byte for byte;
//! 3. if it cannot be opened (absent, or another user's), rule 1 alone is the anchor.
//!
//! Anything else is refused (exit 2) with one line naming `--ca`, `--fingerprint` and
//! `--insecure`. A daemon run by a third user is therefore verified with one of those.

use std::path::PathBuf;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use zeroize::Zeroizing;

mod local;
mod session;
mod tls;
mod wire;

pub use local::{local_certificate, local_trust};
pub use session::Session;

/// Where the daemon listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Endpoint::Tcp { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// How the daemon's TLS certificate is verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// The daemon's own certificate file: the presented certificate must be exactly it.
    Pinned(PathBuf),
    /// Trust roots from a PEM file (a CA, or the daemon's self-signed certificate); the host
    /// name or address is checked against the certificate.
    Ca(PathBuf),
    /// SHA-256 of the daemon's certificate, as ldmd prints it (`5D:CE:…`).
    Fingerprint(Vec<u8>),
    /// The Unix socket's permissions (see the module documentation).
    SocketPath,
    /// A peer daemon, as a migrating ldmd verifies its target: the presented certificate is one
    /// of `pins` (DER, from the trust directory) or has one of the SHA-256 `fingerprints`, or
    /// chains to `ca` with the host name checked. With none of them nothing is trusted.
    Peers {
        pins: Vec<Vec<u8>>,
        fingerprints: Vec<Vec<u8>>,
        ca: Option<PathBuf>,
    },
    /// No verification at all (`--insecure`, for tests).
    Insecure,
}

/// A remote user's credentials.
pub struct Login {
    pub user: String,
    pub password: Zeroizing<String>,
}

/// Everything needed to open a session.
pub struct Target {
    pub endpoint: Endpoint,
    /// The XMPP domain (stream `to`); `None` sends no `to`, which ldmd accepts from local peers.
    pub domain: Option<String>,
    pub trust: Trust,
    pub login: Option<Login>,
    pub connect_timeout: Duration,
    pub reply_timeout: Duration,
}

/// Why talking to the daemon failed. Each kind has its exit status (see the README).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers there (exit 3).
    #[error("cannot reach ldmd at {at}: {reason} ({hint})", hint = unreachable_hint(reason))]
    Unreachable { at: String, reason: String },
    /// The daemon refused the user's credentials (exit 4).
    #[error("authentication failed for {user} at {at}: {reason}")]
    Auth {
        user: String,
        at: String,
        reason: String,
    },
    /// The certificate could not be verified, or TLS failed (exit 5).
    #[error("TLS with ldmd at {at} failed: {reason}")]
    Tls { at: String, reason: String },
    /// The daemon said something unexpected, or ended the stream (exit 5).
    #[error("ldmd at {at}: {reason}")]
    Protocol { at: String, reason: String },
    /// No answer in time (exit 5).
    #[error("ldmd at {at} did not answer within {seconds} s (waiting for {waiting})")]
    Timeout {
        at: String,
        seconds: u64,
        waiting: &'static str,
    },
    /// The client's own setting cannot be used: an unreadable CA file, a socket others could
    /// have bound (exit 2).
    #[error("{0}")]
    Setup(String),
}

impl ClientError {
    /// The `ldm` exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unreachable { .. } => 3,
            ClientError::Auth { .. } => 4,
            ClientError::Tls { .. }
            | ClientError::Protocol { .. }
            | ClientError::Timeout { .. } => 5,
            ClientError::Setup(_) => 2,
        }
    }
}

/// Parses a SHA-256 fingerprint: 64 hex digits, with or without colons, any case.
pub fn parse_fingerprint(text: &str) -> Result<Vec<u8>, String> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect::<Option<Vec<u8>>>();
    match bytes {
        Some(bytes) if bytes.len() == 32 && hex.len() == 64 => Ok(bytes),
        _ => Err(format!(
            "'{text}' is not a SHA-256 fingerprint (64 hex digits, colons allowed)"
        )),
    }
}

/// The colon-separated upper-case SHA-256 of a certificate, as ldmd prints it.
pub fn fingerprint(cert: &[u8]) -> String {
    crate::server::certs::fingerprint(&CertificateDer::from(cert.to_vec()))
}

/// What an operator should look at when the daemon cannot be reached, by the reason.
fn unreachable_hint(reason: &str) -> &'static str {
    if reason == "permission denied" {
        "this user may not open the socket or its directory: ldmd's system layout puts it in \
         /run/ldmd, which every local user can reach; see --socket"
    } else {
        "is ldmd running? see --socket/--host"
    }
}

#[cfg(test)]
mod tests {
    use super::tls::fingerprint_of_digest;
    use super::*;

    #[test]
    fn an_unreachable_daemon_gets_the_hint_its_reason_calls_for() {
        let error = |reason: &str| {
            ClientError::Unreachable {
                at: "/run/ldmd/ldmd.sock".into(),
                reason: reason.into(),
            }
            .to_string()
        };
        assert!(error("no such file").ends_with("(is ldmd running? see --socket/--host)"));
        let denied = error("permission denied");
        assert!(
            denied.contains("may not open the socket or its directory"),
            "{denied}"
        );
        assert!(!denied.contains("is ldmd running"), "{denied}");
    }

    #[test]
    fn fingerprints_parse_as_ldmd_prints_them_or_as_plain_hex() {
        let printed = (0..32)
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let bytes = parse_fingerprint(&printed).unwrap();
        assert_eq!(bytes, (0..32).collect::<Vec<u8>>());
        assert_eq!(
            parse_fingerprint(&printed.replace(':', "").to_lowercase()).unwrap(),
            bytes
        );
        assert_eq!(fingerprint_of_digest(&bytes), printed);
        for bad in [
            "",
            "5D:CE",
            &printed[3..],
            &format!("{printed}:00"),
            &"zz".repeat(32),
        ] {
            assert!(parse_fingerprint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints_print_as_an_operator_writes_them() {
        assert_eq!(
            Endpoint::Unix("./s/ldmd.sock".into()).to_string(),
            "./s/ldmd.sock"
        );
        let v6 = Endpoint::Tcp {
            host: "::1".into(),
            port: 6482,
        };
        assert_eq!(v6.to_string(), "[::1]:6482");
    }
}
