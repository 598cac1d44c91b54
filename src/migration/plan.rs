//! What the registry hands a migration's worker, and what the worker reports back: plain data,
//! so that the registry's rules stay pure and the worker (a thread with sockets) stays thin.

use std::fmt;

use zeroize::Zeroizing;

use super::{MigrationId, Outcome, Token};

/// Everything a worker needs to carry a migration out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub id: MigrationId,
    /// Only run the checks (`-n`): nothing changes on either side.
    pub dry_run: bool,
    /// `-f`: soft checks are overridden on the target.
    pub force: bool,
    /// The domain here.
    pub domain: String,
    /// Its name on the target.
    pub target_domain: String,
    /// The target, as the operator wrote it (host name or address) and its port.
    pub host: String,
    pub port: u16,
    /// The target's user and password, from the request; never stored.
    pub user: String,
    pub password: Secret,
    /// The domain's record here, as JSON: sent to the target as it is.
    pub definition: Vec<u8>,
    /// This daemon's identity: the target refuses a migration from itself.
    pub source_daemon: u128,
    /// Chunks of modelled runtime state to stream (0 for a domain that is not running).
    pub chunks: u32,
    /// The domain's memory: with `migration.seconds_per_gib`, how long streaming takes.
    pub memory_bytes: u64,
}

/// How to reach the target of a migration again once the operator's password is gone: its
/// address, and the token the resolver logs in with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    pub id: MigrationId,
    pub host: String,
    pub port: u16,
    pub target_domain: String,
    pub token: Token,
}

/// A password: compared and cloned like a string, wiped when dropped, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Zeroizing<String>);

impl Secret {
    pub fn new(text: String) -> Secret {
        Secret(Zeroizing::new(text))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// What a worker tells the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerReport {
    /// The dry run's checks passed on the target (with its warnings), or why not.
    Checked(Result<Vec<String>, String>),
    /// The target reserved; its warnings (a console port replaced under `force`).
    Reserved {
        token: Token,
        warnings: Vec<String>,
    },
    /// `sent` of `chunks` chunks of the runtime state are on the target.
    Progress {
        sent: u32,
        chunks: u32,
    },
    TransferComplete,
    /// Before the handoff: why the migration cannot go on.
    Failed(String),
    /// The target's answer to commit or resolve.
    Outcome(Outcome),
    /// Commit or resolve got no definitive answer: why.
    NoOutcome(String),
    /// The target dropped its tombstone.
    Forgotten,
}

impl WorkerReport {
    /// Whether the registry records something durable for it (reports that change nothing
    /// durable are dropped, not retried, when the store fails).
    pub fn is_durable(&self) -> bool {
        !matches!(
            self,
            WorkerReport::Progress { .. } | WorkerReport::Checked(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_never_printed() {
        let secret = Secret::new("hunter2".into());
        assert_eq!(format!("{secret:?}"), "Secret(…)");
        let plan_text = format!(
            "{:?}",
            Plan {
                id: MigrationId(1),
                dry_run: false,
                force: false,
                domain: "a".into(),
                target_domain: "a".into(),
                host: "h".into(),
                port: 1,
                user: "u".into(),
                password: secret,
                definition: Vec::new(),
                source_daemon: 1,
                chunks: 0,
                memory_bytes: 0,
            }
        );
        assert!(!plan_text.contains("hunter2"), "{plan_text}");
    }
}
