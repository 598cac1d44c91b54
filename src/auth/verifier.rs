//! The verifier pool: checks SASL PLAIN passwords on its own threads, never on an I/O thread.
//!
//! argon2id costs tens of milliseconds per check by design. A bounded queue feeds a few
//! threads; when it is full the client gets `temporary-auth-failure` at once instead of waiting
//! behind a flood. Successful checks are remembered as HMAC-SHA256 digests under a per-process
//! secret (never the password), so a management client that reconnects often does not pay the
//! hash every time; the memory is bounded and forgotten whenever the user file changes.
//!
//! The user file is re-read when its modification time, size or inode changes, so `ldmd user
//! add` takes effect without a restart. Unknown users are checked against a dummy hash so that
//! the answer takes as long as for a known user.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::SystemTime;

use ring::hmac;

use crate::auth::store::{UserStore, hash_password, verify_password};
use crate::ldm::Role;
use crate::xmpp::error::SaslFailure;
use crate::xmpp::sasl::PlainCredentials;
use crate::xmpp::stream::Identity;

/// Where the verdict goes (the requesting connection's I/O thread).
pub type Reply = Box<dyn FnOnce(Result<Identity, SaslFailure>) + Send>;

pub struct VerifyRequest {
    pub credentials: PlainCredentials,
    pub reply: Reply,
}

/// Handle to the pool; cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    queue: SyncSender<VerifyRequest>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// The queue of password checks is full: answer `temporary-auth-failure`.
pub struct Busy(pub Reply);

impl std::fmt::Debug for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Busy")
    }
}

struct Shared {
    users_file: PathBuf,
    /// (modified, length, inode) of the file the users were read from.
    stamp: Option<(SystemTime, u64, u64)>,
    users: HashMap<String, (Role, String)>,
    /// Digests of credentials that verified since the last reload.
    remembered: HashSet<[u8; 32]>,
    /// Counts reloads: a verification that straddles one is not remembered.
    generation: u64,

    remembered_max: usize,
    key: hmac::Key,
    dummy_hash: String,
}

impl Verifier {
    /// Starts `threads` verifier threads reading `users_file`.
    pub fn start(
        users_file: PathBuf,
        threads: usize,
        queue_max: usize,
        remembered_max: usize,
    ) -> std::io::Result<Verifier> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(std::io::Error::other)?;
        let mut dummy = [0u8; 16];
        getrandom::fill(&mut dummy).map_err(std::io::Error::other)?;
        let dummy_hash = hash_password(&format!("{dummy:?}")).map_err(std::io::Error::other)?;
        let shared = Arc::new(Mutex::new(Shared {
            users_file,
            stamp: None,
            users: HashMap::new(),
            remembered: HashSet::new(),
            generation: 0,
            remembered_max,

            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            dummy_hash,
        }));
        let (queue, requests) = mpsc::sync_channel(queue_max);
        let requests = Arc::new(Mutex::new(requests));
        let mut handles = Vec::new();
        for n in 0..threads.max(1) {
            let shared = shared.clone();
            let requests = requests.clone();
            let handle = std::thread::Builder::new()
                .name(format!("ldmd-verify-{n}"))
                .spawn(move || work(&shared, &requests))?;
            handles.push(handle);
        }
        Ok(Verifier {
            queue,
            threads: Arc::new(Mutex::new(handles)),
        })
    }

    /// Queues a check; `Err(Busy)` when the queue is full (the caller answers at once).
    pub fn submit(&self, request: VerifyRequest) -> Result<(), Busy> {
        match self.queue.try_send(request) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(r) | TrySendError::Disconnected(r)) => Err(Busy(r.reply)),
        }
    }

    /// Stops the threads once the queue drains (every clone must be dropped first).
    pub fn join(self) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        drop(self.queue);
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn work(shared: &Mutex<Shared>, requests: &Mutex<Receiver<VerifyRequest>>) {
    loop {
        let request = match requests.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(request) => request,
            Err(_) => return, // every sender is gone: shutting down
        };
        let verdict = verify(shared, &request.credentials);
        (request.reply)(verdict);
    }
}

/// Checks one set of credentials: look up under the lock, hash without it, conclude under it.
fn verify(shared: &Mutex<Shared>, credentials: &PlainCredentials) -> Result<Identity, SaslFailure> {
    let pending = match begin(shared, credentials) {
        Check::Known(verdict) => return verdict,
        Check::Hash(pending) => pending,
    };
    let matches = verify_password(&pending.hash, &credentials.password);
    finish(shared, credentials, pending, matches)
}

/// What the first critical section decided.
enum Check {
    /// Answered from memory.
    Known(Result<Identity, SaslFailure>),
    /// The password must be hashed against `hash`.
    Hash(Pending),
}

struct Pending {
    hash: String,
    role: Role,
    digest: [u8; 32],
    /// An unknown user, checked against the dummy hash only to take the same time.
    dummy: bool,
    generation: u64,
}

fn begin(shared: &Mutex<Shared>, credentials: &PlainCredentials) -> Check {
    let mut state = shared.lock().unwrap_or_else(|e| e.into_inner());
    state.reload_if_changed();
    let digest = state.digest(credentials);
    let generation = state.generation;
    match state.users.get(&credentials.authcid).cloned() {
        Some((role, _)) if state.remembered.contains(&digest) => Check::Known(Ok(Identity {
            user: credentials.authcid.clone(),
            role,
        })),
        Some((role, hash)) => Check::Hash(Pending {
            hash,
            role,
            digest,
            dummy: false,
            generation,
        }),
        None => Check::Hash(Pending {
            hash: state.dummy_hash.clone(),
            role: Role::None,
            digest,
            dummy: true,
            generation,
        }),
    }
}

fn finish(
    shared: &Mutex<Shared>,
    credentials: &PlainCredentials,
    pending: Pending,
    matches: bool,
) -> Result<Identity, SaslFailure> {
    if pending.dummy || !matches {
        return Err(SaslFailure::NotAuthorized);
    }
    let mut state = shared.lock().unwrap_or_else(|e| e.into_inner());
    let user = credentials.authcid.clone();
    if state.generation != pending.generation {
        // The users were reloaded while we hashed: the verdict stands only if this user's hash
        // is unchanged, and it is not remembered, so a stale success never outlives a password
        // change.
        return match state.users.get(&credentials.authcid) {
            Some((role, hash)) if *hash == pending.hash => Ok(Identity { user, role: *role }),
            _ => Err(SaslFailure::NotAuthorized),
        };
    }
    if state.remembered.len() >= state.remembered_max {
        state.remembered.clear(); // bounded: forget everything rather than grow
    }
    state.remembered.insert(pending.digest);
    Ok(Identity {
        user,
        role: pending.role,
    })
}

impl Shared {
    fn reload_if_changed(&mut self) {
        let stamp = std::fs::metadata(&self.users_file).ok().map(|m| {
            (
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                m.len(),
                m.ino(),
            )
        });
        if stamp == self.stamp && self.stamp.is_some() {
            return;
        }
        match UserStore::load(&self.users_file) {
            Ok(store) => {
                self.users = store
                    .users()
                    .iter()
                    .map(|u| (u.name.clone(), (u.role(), u.hash.clone())))
                    .collect();
                self.stamp = stamp;
                self.remembered.clear();
                self.generation += 1;

                tracing::info!(users = self.users.len(), "user store loaded");
            }
            // Keep the users we had: a half-edited file must not lock everyone out.
            Err(e) => {
                tracing::warn!(error = %e, "user store unreadable; keeping the previous users")
            }
        }
    }

    /// HMAC(secret, name NUL password): remembers a success without keeping the password.
    fn digest(&self, credentials: &PlainCredentials) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(credentials.authcid.as_bytes());
        ctx.update(&[0]);
        ctx.update(credentials.password.as_bytes());
        let tag = ctx.sign();
        let mut digest = [0u8; 32];
        digest.copy_from_slice(tag.as_ref());
        digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use zeroize::Zeroizing;

    fn credentials(user: &str, password: &str) -> PlainCredentials {
        PlainCredentials {
            authzid: None,
            authcid: user.into(),
            password: Zeroizing::new(password.into()),
        }
    }

    fn check(verifier: &Verifier, user: &str, password: &str) -> Result<Identity, SaslFailure> {
        let (tx, rx) = channel();
        let reply: Reply = Box::new(move |v| tx.send(v).unwrap());
        verifier
            .submit(VerifyRequest {
                credentials: credentials(user, password),
                reply,
            })
            .unwrap();
        rx.recv().unwrap()
    }

    #[test]
    fn verifies_and_picks_up_new_users_without_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        UserStore::add(&path, "alice", Role::Read, "pw1").unwrap();
        let verifier = Verifier::start(path.clone(), 1, 8, 16).unwrap();
        assert_eq!(
            check(&verifier, "alice", "pw1"),
            Ok(Identity {
                user: "alice".into(),
                role: Role::Read
            })
        );
        assert_eq!(
            check(&verifier, "alice", "pw1").map(|i| i.role),
            Ok(Role::Read),
            "remembered"
        );
        assert_eq!(
            check(&verifier, "alice", "wrong"),
            Err(SaslFailure::NotAuthorized)
        );
        assert_eq!(
            check(&verifier, "nobody", "pw1"),
            Err(SaslFailure::NotAuthorized)
        );
        UserStore::add(&path, "bob", Role::Write, "pw2").unwrap();
        assert_eq!(
            check(&verifier, "bob", "pw2").map(|i| i.role),
            Ok(Role::Write)
        );
        UserStore::remove(&path, "alice").unwrap();
        assert_eq!(
            check(&verifier, "alice", "pw1"),
            Err(SaslFailure::NotAuthorized),
            "removal forgets"
        );
        verifier.join();
    }

    #[test]
    fn success_that_straddles_a_password_change_is_not_remembered() {
        // Review finding: a check that runs while the user file is reloaded (password changed)
        // must not put the old password into the cache the reload just cleared.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        UserStore::add(&path, "alice", Role::Write, "old").unwrap();
        let shared = Mutex::new(Shared {
            users_file: path.clone(),
            stamp: None,
            users: HashMap::new(),
            remembered: HashSet::new(),
            generation: 0,
            remembered_max: 16,
            key: hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]),
            dummy_hash: hash_password("dummy").unwrap(),
        });
        let old = credentials("alice", "old");
        let Check::Hash(pending) = begin(&shared, &old) else {
            panic!("nothing is remembered yet")
        };
        let matches = verify_password(&pending.hash, "old");
        assert!(
            matches,
            "the old password matched the hash it was checked against"
        );
        // Meanwhile the operator changes the password and someone else's login reloads.
        UserStore::remove(&path, "alice").unwrap();
        UserStore::add(&path, "alice", Role::Write, "new").unwrap();
        shared.lock().unwrap().reload_if_changed();
        assert_eq!(
            finish(&shared, &old, pending, matches),
            Err(SaslFailure::NotAuthorized)
        );
        assert!(
            shared.lock().unwrap().remembered.is_empty(),
            "nothing stale is remembered"
        );
        assert_eq!(verify(&shared, &old), Err(SaslFailure::NotAuthorized));
        assert!(verify(&shared, &credentials("alice", "new")).is_ok());

        // A reload that leaves the user's hash alone does not refuse the login.
        let new = credentials("alice", "new");
        shared.lock().unwrap().remembered.clear();
        let Check::Hash(pending) = begin(&shared, &new) else {
            panic!("cache was cleared")
        };
        UserStore::add(&path, "bob", Role::Read, "pw").unwrap();
        shared.lock().unwrap().reload_if_changed();
        assert!(finish(&shared, &new, pending, true).is_ok());
    }

    #[test]
    fn full_queue_answers_busy_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let verifier = Verifier::start(dir.path().join("users.toml"), 1, 1, 16).unwrap();
        let (tx, rx) = channel();
        let mut busy = 0;
        for _ in 0..50 {
            let tx = tx.clone();
            let reply: Reply = Box::new(move |v| {
                let _ = tx.send(v);
            });
            if verifier
                .submit(VerifyRequest {
                    credentials: credentials("x", "y"),
                    reply,
                })
                .is_err()
            {
                busy += 1;
            }
        }
        assert!(
            busy > 0,
            "a bounded queue must refuse some of 50 instant submissions"
        );
        drop(tx);
        verifier.join();
        assert!(rx.iter().all(|v| v == Err(SaslFailure::NotAuthorized)));
    }
}
