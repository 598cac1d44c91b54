//! The verifier pool: checks SASL PLAIN passwords on its own threads, never on an I/O thread.
//!
//! argon2id costs tens of milliseconds per check by design. A bounded queue feeds a few
//! threads; when it is full the client gets `temporary-auth-failure` at once instead of waiting
//! behind a flood. Before anything is queued, [`Verifier::submit`] answers on the spot what needs
//! no hash: a source or user over its failed-login limit (`temporary-auth-failure`, see
//! [`LoginGuard`]), and a success remembered as an HMAC-SHA256 digest under a per-process
//! secret (never the password), so a flood of wrong passwords cannot keep correct users out.
//! The memory is bounded and forgotten whenever the user file changes.
//!
//! The user file is re-read when its modification time, size or inode changes: by the verifier
//! threads before a check (so `ldmd user add` takes effect at once), and by a watcher thread
//! once a second, which tells the I/O threads the accounts changed so that streams of removed
//! users, or opened with a password since changed, end, and downgraded users lose their writes.
//! Unknown users are checked against a dummy hash so that the answer takes as long as for a
//! known user.
//!
//! A source ldmd settling a migration logs in as `ldmd-migration-<id>` with the token this
//! daemon gave it: checked at once against this daemon's key ([`ResolverKey`]), with the
//! restricted role [`Role::Resolve`]. Its failures count against the source like any other.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use ring::hmac;

use crate::auth::guard::{LoginGuard, LoginSource};
use crate::auth::store::{UserStore, hash_password, verify_password};
use crate::ldm::Role;
use crate::limits::Limit;
use crate::xmpp::error::SaslFailure;
use crate::xmpp::sasl::PlainCredentials;
use crate::xmpp::stream::Identity;

/// How often the watcher looks at the user file.
const USERS_POLL: Duration = Duration::from_secs(1);

/// Where the verdict goes (the requesting connection's I/O thread).
pub type Reply = Box<dyn FnOnce(Result<Identity, SaslFailure>) + Send>;

pub struct VerifyRequest {
    pub credentials: PlainCredentials,
    /// Who asks: failed logins are counted per source.
    pub source: LoginSource,
    pub reply: Reply,
}

/// What the accounts are now, for the streams already logged in: user → (role, credential),
/// as of one version (`generation`) of the user store.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Accounts {
    pub generation: u64,
    users: HashMap<String, (Role, u64)>,
}

impl Accounts {
    /// The role and credential tag of `user`, if the account exists.
    pub fn get(&self, user: &str) -> Option<(Role, u64)> {
        self.users.get(user).copied()
    }
}

/// Told whenever the user file changed (from the watcher thread).
pub type OnAccountsChanged = Box<dyn Fn(Arc<Accounts>) + Send>;

/// How the pool is set up.
pub struct VerifierConfig {
    pub users_file: PathBuf,
    pub threads: usize,
    pub queue_max: usize,
    /// Successes remembered at most.
    pub remembered_max: usize,
    pub guard: LoginGuard,
    /// The key of the tokens this daemon hands out as a migration's target: a source's
    /// resolver logs in with one (see `crate::migration`).
    pub resolvers: ResolverKey,
}

/// The key this daemon mints migration tokens under, as the registry last committed it (see
/// [`crate::migration::Token`]): a resolver's login is checked against it alone, so a source
/// can still settle a migration this daemon has already forgotten.
#[derive(Clone, Default)]
pub struct ResolverKey(Arc<std::sync::RwLock<Option<[u8; 32]>>>);

impl ResolverKey {
    /// Sets the key (the registry, once it is durable).
    pub fn publish(&self, key: Option<[u8; 32]>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = key;
    }

    fn get(&self) -> Option<[u8; 32]> {
        *self.0.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Handle to the pool; cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    queue: SyncSender<VerifyRequest>,
    shared: Arc<Mutex<Shared>>,
    threads: Arc<Mutex<Threads>>,
    resolvers: ResolverKey,
}

struct Threads {
    handles: Vec<JoinHandle<()>>,
    /// Dropped to stop the watcher.
    stop_watcher: Option<mpsc::Sender<()>>,
}

/// Answered at once, without queueing: the verdict, and the limit that decided it, if any.
#[derive(Debug)]
pub struct Immediate {
    pub verdict: Result<Identity, SaslFailure>,
    pub limit: Option<Limit>,
}

#[derive(Clone, Debug)]
struct Account {
    role: Role,
    hash: String,
    /// Identifies the password hash, so a stream knows when its password was changed.
    credential: u64,
}

struct Shared {
    users_file: PathBuf,
    /// (modified, length, inode) of the file the users were read from; `Some(None)` when it
    /// did not exist, `None` before the first load.
    stamp: Option<Option<(SystemTime, u64, u64)>>,
    users: HashMap<String, Account>,
    /// Digests of credentials that verified since the last reload.
    remembered: HashSet<[u8; 32]>,
    /// Counts reloads: a verification that straddles one is not remembered.
    generation: u64,
    remembered_max: usize,
    key: hmac::Key,
    dummy_hash: String,
    guard: LoginGuard,
}

impl Verifier {
    /// Starts the verifier threads, and a watcher that calls `on_change` whenever the user file
    /// changes.
    pub fn start(
        config: VerifierConfig,
        on_change: Option<OnAccountsChanged>,
    ) -> std::io::Result<Verifier> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(std::io::Error::other)?;
        let mut dummy = [0u8; 16];
        getrandom::fill(&mut dummy).map_err(std::io::Error::other)?;
        let dummy_hash = hash_password(&format!("{dummy:?}")).map_err(std::io::Error::other)?;
        let resolvers = config.resolvers;
        let mut state = Shared {
            users_file: config.users_file,
            stamp: None,
            users: HashMap::new(),
            remembered: HashSet::new(),
            generation: 0,
            remembered_max: config.remembered_max,
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            dummy_hash,
            guard: config.guard,
        };
        state.reload_if_changed();
        let shared = Arc::new(Mutex::new(state));
        let (queue, requests) = mpsc::sync_channel(config.queue_max);
        let requests = Arc::new(Mutex::new(requests));
        let mut handles = Vec::new();
        for n in 0..config.threads.max(1) {
            let shared = shared.clone();
            let requests = requests.clone();
            let handle = std::thread::Builder::new()
                .name(format!("ldmd-verify-{n}"))
                .spawn(move || work(&shared, &requests))?;
            handles.push(handle);
        }
        let mut stop_watcher = None;
        if let Some(on_change) = on_change {
            let (stop, stopped) = mpsc::channel();
            let shared = shared.clone();
            let handle = std::thread::Builder::new()
                .name("ldmd-users".into())
                .spawn(move || watch(&shared, &stopped, &on_change))?;
            handles.push(handle);
            stop_watcher = Some(stop);
        }
        Ok(Verifier {
            queue,
            shared,
            threads: Arc::new(Mutex::new(Threads {
                handles,
                stop_watcher,
            })),
            resolvers,
        })
    }

    /// Answers at once what needs no hash (a source or user over its failed-login limit, a
    /// remembered success, a full queue), or queues the check: its verdict then goes to the
    /// request's reply.
    pub fn submit(&self, request: VerifyRequest) -> Result<(), Immediate> {
        let credentials = &request.credentials;
        {
            let state = lock(&self.shared);
            if let Err(limit) =
                state
                    .guard
                    .check(Instant::now(), request.source, &credentials.authcid)
            {
                return Err(Immediate {
                    verdict: Err(SaslFailure::TemporaryAuthFailure),
                    limit: Some(limit),
                });
            }
            if let Some(identity) = state.remembered_identity(credentials) {
                return Err(Immediate {
                    verdict: Ok(identity),
                    limit: None,
                });
            }
        }
        // A migration's resolver: its token, checked at once (an HMAC, no argon2).
        if let Some(id) = crate::migration::MigrationId::from_resolver_user(&credentials.authcid) {
            let token = crate::migration::Token::parse(&credentials.password);
            let verdict = match (self.resolvers.get(), token) {
                (Some(key), Some(token)) if token.verifies(&key, id) => Ok(Identity {
                    user: credentials.authcid.clone(),
                    role: Role::Resolve,
                    credential: 0,
                    generation: u64::MAX,
                }),
                _ => {
                    let mut state = lock(&self.shared);
                    state.guard.failed(Instant::now(), request.source, None);
                    Err(SaslFailure::NotAuthorized)
                }
            };
            return Err(Immediate {
                verdict,
                limit: None,
            });
        }
        match self.queue.try_send(request) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Immediate {
                verdict: Err(SaslFailure::TemporaryAuthFailure),
                limit: Some(Limit::AuthQueue),
            }),
        }
    }

    /// Stops the threads once the queue drains (every clone must be dropped first).
    pub fn join(self) {
        let threads = std::mem::replace(
            &mut *lock(&self.threads),
            Threads {
                handles: Vec::new(),
                stop_watcher: None,
            },
        );
        drop(self.queue);
        drop(threads.stop_watcher);
        for thread in threads.handles {
            let _ = thread.join();
        }
    }
}

/// The locks guard plain data that every critical section leaves consistent.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn work(shared: &Mutex<Shared>, requests: &Mutex<Receiver<VerifyRequest>>) {
    loop {
        let request = match lock(requests).recv() {
            Ok(request) => request,
            Err(_) => return, // every sender is gone: shutting down
        };
        let verdict = verify(shared, &request.credentials);
        if verdict == Err(SaslFailure::NotAuthorized) {
            let mut state = lock(shared);
            let user = &request.credentials.authcid;
            let account = state.users.contains_key(user).then_some(user.as_str());
            state.guard.failed(Instant::now(), request.source, account);
        }
        (request.reply)(verdict);
    }
}

/// Looks at the user file once a second until stopped; tells `on_change` about every reload.
fn watch(shared: &Mutex<Shared>, stopped: &Receiver<()>, on_change: &OnAccountsChanged) {
    let mut seen = lock(shared).generation;
    loop {
        match stopped.recv_timeout(USERS_POLL) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let accounts = {
            let mut state = lock(shared);
            state.reload_if_changed();
            if state.generation == seen {
                continue;
            }
            seen = state.generation;
            state.accounts()
        };
        on_change(Arc::new(accounts));
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
    credential: u64,
    digest: [u8; 32],
    /// An unknown user, checked against the dummy hash only to take the same time.
    dummy: bool,
    generation: u64,
}

fn begin(shared: &Mutex<Shared>, credentials: &PlainCredentials) -> Check {
    let mut state = lock(shared);
    state.reload_if_changed();
    if let Some(identity) = state.remembered_identity(credentials) {
        return Check::Known(Ok(identity));
    }
    let digest = state.digest(credentials);
    let generation = state.generation;
    match state.users.get(&credentials.authcid).cloned() {
        Some(account) => Check::Hash(Pending {
            hash: account.hash,
            role: account.role,
            credential: account.credential,
            digest,
            dummy: false,
            generation,
        }),
        None => Check::Hash(Pending {
            hash: state.dummy_hash.clone(),
            role: Role::None,
            credential: 0,
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
    let mut state = lock(shared);
    let user = credentials.authcid.clone();
    if state.generation != pending.generation {
        // The users were reloaded while we hashed: the verdict stands only if this user's hash
        // is unchanged, and it is not remembered, so a stale success never outlives a password
        // change.
        return match state.users.get(&credentials.authcid) {
            Some(account) if account.hash == pending.hash => Ok(Identity {
                user,
                role: account.role,
                credential: account.credential,
                generation: state.generation,
            }),
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
        credential: pending.credential,
        generation: pending.generation,
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
        if self.stamp == Some(stamp) {
            return;
        }
        match UserStore::load(&self.users_file) {
            Ok(store) => {
                self.users = store
                    .users()
                    .iter()
                    .map(|u| {
                        let account = Account {
                            role: u.role(),
                            hash: u.hash.clone(),
                            credential: credential_of(&u.hash),
                        };
                        (u.name.clone(), account)
                    })
                    .collect();
                self.stamp = Some(stamp);
                self.remembered.clear();
                self.generation = self.generation.wrapping_add(1);

                tracing::info!(users = self.users.len(), "user store loaded");
            }
            // Keep the users we had: a half-edited file must not lock everyone out.
            Err(e) => {
                tracing::warn!(error = %e, "user store unreadable; keeping the previous users")
            }
        }
    }

    /// The identity of a success remembered for exactly these credentials.
    fn remembered_identity(&self, credentials: &PlainCredentials) -> Option<Identity> {
        let account = self.users.get(&credentials.authcid)?;
        if !self.remembered.contains(&self.digest(credentials)) {
            return None;
        }
        Some(Identity {
            user: credentials.authcid.clone(),
            role: account.role,
            credential: account.credential,
            generation: self.generation,
        })
    }

    fn accounts(&self) -> Accounts {
        Accounts {
            generation: self.generation,
            users: self
                .users
                .iter()
                .map(|(name, a)| (name.clone(), (a.role, a.credential)))
                .collect(),
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

/// A tag for one password hash: the first 8 bytes of its SHA-256 (the PHC string holds a fresh
/// salt, so a new password, even the same one, gives a new tag).
fn credential_of(hash: &str) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, hash.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(digest.as_ref().get(..8).unwrap_or(&[0; 8]));
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests;
