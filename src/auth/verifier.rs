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

/// Checks one set of credentials. The lock is never held while hashing.
fn verify(shared: &Mutex<Shared>, credentials: &PlainCredentials) -> Result<Identity, SaslFailure> {
    let (hash, role, digest, dummy) = {
        let mut state = shared.lock().unwrap_or_else(|e| e.into_inner());
        state.reload_if_changed();
        let digest = state.digest(credentials);
        let user = state.users.get(&credentials.authcid).cloned();
        match user {
            Some((role, _)) if state.remembered.contains(&digest) => {
                return Ok(Identity {
                    user: credentials.authcid.clone(),
                    role,
                });
            }
            Some((role, hash)) => (hash, role, digest, false),
            None => (state.dummy_hash.clone(), Role::None, digest, true),
        }
    };
    let matches = verify_password(&hash, &credentials.password);
    if dummy || !matches {
        return Err(SaslFailure::NotAuthorized);
    }
    let mut state = shared.lock().unwrap_or_else(|e| e.into_inner());
    if state.remembered.len() >= state.remembered_max {
        state.remembered.clear(); // bounded: forget everything rather than grow
    }
    state.remembered.insert(digest);
    Ok(Identity {
        user: credentials.authcid.clone(),
        role,
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
