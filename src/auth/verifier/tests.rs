use std::sync::mpsc::channel;

use zeroize::Zeroizing;

use super::*;
use crate::auth::guard::Source;

const SOURCE: LoginSource = LoginSource::Ip(Source::V4([192, 0, 2, 1]));

fn credentials(user: &str, password: &str) -> PlainCredentials {
    PlainCredentials {
        authzid: None,
        authcid: user.into(),
        password: Zeroizing::new(password.into()),
    }
}

fn start(path: PathBuf, threads: usize, queue_max: usize) -> Verifier {
    start_with(
        path,
        threads,
        queue_max,
        LoginGuard::new(Duration::from_secs(300), 100, 100),
    )
}

fn start_with(path: PathBuf, threads: usize, queue_max: usize, guard: LoginGuard) -> Verifier {
    let config = VerifierConfig {
        resolvers: Default::default(),
        users_file: path,
        threads,
        queue_max,
        remembered_max: 16,
        guard,
    };
    Verifier::start(config, None).unwrap()
}

/// Submits and waits for the verdict, however it comes.
fn check_from(
    verifier: &Verifier,
    source: LoginSource,
    user: &str,
    password: &str,
) -> (Result<Identity, SaslFailure>, bool) {
    let (tx, rx) = channel();
    let reply: Reply = Box::new(move |v| tx.send(v).unwrap());
    let request = VerifyRequest {
        credentials: credentials(user, password),
        source,
        reply,
    };
    match verifier.submit(request) {
        Ok(()) => (rx.recv().unwrap(), false),
        Err(immediate) => (immediate.verdict, true),
    }
}

fn check(verifier: &Verifier, user: &str, password: &str) -> Result<Identity, SaslFailure> {
    check_from(verifier, SOURCE, user, password).0
}

fn shared_for(path: &std::path::Path) -> Mutex<Shared> {
    Mutex::new(Shared {
        users_file: path.to_owned(),
        stamp: None,
        users: HashMap::new(),
        remembered: HashSet::new(),
        generation: 0,
        remembered_max: 16,
        key: hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]),
        dummy_hash: hash_password("dummy").unwrap(),
        guard: LoginGuard::new(Duration::from_secs(300), 100, 100),
    })
}

#[test]
fn verifies_and_picks_up_new_users_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    UserStore::add(&path, "alice", Role::Read, "pw1").unwrap();
    let verifier = start(path.clone(), 1, 8);
    let alice = check(&verifier, "alice", "pw1").unwrap();
    assert_eq!((alice.user.as_str(), alice.role), ("alice", Role::Read));
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
fn remembered_success_is_answered_without_queueing() {
    // A flood that fills the queue must not keep a correct, remembered user waiting.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    UserStore::add(&path, "alice", Role::Write, "pw").unwrap();
    let verifier = start(path, 1, 1);
    let (first, immediate) = check_from(&verifier, SOURCE, "alice", "pw");
    assert!(first.is_ok() && !immediate, "the first login is hashed");
    let (again, immediate) = check_from(&verifier, SOURCE, "alice", "pw");
    assert!(
        again.is_ok() && immediate,
        "the second comes from memory at once"
    );
    assert!(again.unwrap().credential != 0);
    verifier.join();
}

#[test]
fn failed_logins_are_refused_before_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    UserStore::add(&path, "alice", Role::Write, "pw").unwrap();
    let guard = LoginGuard::new(Duration::from_secs(300), 2, 100);
    let verifier = start_with(path, 1, 8, guard);
    for _ in 0..2 {
        assert_eq!(
            check(&verifier, "alice", "wrong"),
            Err(SaslFailure::NotAuthorized)
        );
    }
    let (verdict, immediate) = check_from(&verifier, SOURCE, "alice", "pw");
    assert_eq!(verdict, Err(SaslFailure::TemporaryAuthFailure));
    assert!(immediate, "refused before any hash");
    let clean = LoginSource::Ip(Source::V4([192, 0, 2, 9]));
    assert!(check_from(&verifier, clean, "alice", "pw").0.is_ok());
    verifier.join();
}

#[test]
fn the_watcher_reports_every_change_of_the_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    UserStore::add(&path, "alice", Role::Write, "pw").unwrap();
    let (tx, rx) = channel();
    let config = VerifierConfig {
        resolvers: Default::default(),
        users_file: path.clone(),
        threads: 1,
        queue_max: 4,
        remembered_max: 4,
        guard: LoginGuard::new(Duration::from_secs(300), 10, 10),
    };
    let tx = Mutex::new(tx);
    let on_change: OnAccountsChanged = Box::new(move |accounts| {
        let _ = lock(&tx).send(accounts);
    });
    let verifier = Verifier::start(config, Some(on_change)).unwrap();
    let before = check(&verifier, "alice", "pw").unwrap();
    UserStore::remove(&path, "alice").unwrap();
    UserStore::add(&path, "alice", Role::Read, "pw").unwrap();
    // The watcher may see the removal and the new account in two looks.
    let (role, credential) = loop {
        let accounts = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        if let Some(account) = accounts.get("alice") {
            break account;
        }
    };
    assert_eq!(role, Role::Read);
    assert_ne!(
        credential, before.credential,
        "a new hash is a new credential"
    );
    UserStore::remove(&path, "alice").unwrap();
    let accounts = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(accounts.get("alice"), None);
    verifier.join();
}

#[test]
fn a_missing_user_file_is_loaded_once_not_at_every_look() {
    // The watcher looks every second: without a file it must not report a change each time.
    let dir = tempfile::tempdir().unwrap();
    let shared = shared_for(&dir.path().join("users.toml"));
    shared.lock().unwrap().reload_if_changed();
    let generation = shared.lock().unwrap().generation;
    shared.lock().unwrap().reload_if_changed();
    shared.lock().unwrap().reload_if_changed();
    assert_eq!(shared.lock().unwrap().generation, generation);
}

#[test]
fn success_that_straddles_a_password_change_is_not_remembered() {
    // Review finding: a check that runs while the user file is reloaded (password changed)
    // must not put the old password into the cache the reload just cleared.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    UserStore::add(&path, "alice", Role::Write, "old").unwrap();
    let shared = shared_for(&path);
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
    let verifier = start(dir.path().join("users.toml"), 1, 1);
    let (tx, rx) = channel();
    let mut busy = 0;
    for _ in 0..50 {
        let tx = tx.clone();
        let reply: Reply = Box::new(move |v| {
            let _ = tx.send(v);
        });
        let request = VerifyRequest {
            credentials: credentials("x", "y"),
            source: SOURCE,
            reply,
        };
        if let Err(immediate) = verifier.submit(request) {
            assert_eq!(immediate.limit, Some(Limit::AuthQueue));
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

#[test]
fn a_migration_resolver_logs_in_with_a_token_of_this_daemons_key_only() {
    use crate::migration::{MigrationId, Token};
    let dir = tempfile::tempdir().unwrap();
    let verifier = start(dir.path().join("users.toml"), 1, 4);
    let id = MigrationId(0xabc);
    let key = [3u8; 32];
    let token = Token::mint(&key, id, [1; 16]);
    // No key yet (this daemon never reserved): nobody is a resolver.
    let (verdict, at_once) = check_from(&verifier, SOURCE, &id.resolver_user(), &token.to_hex());
    assert_eq!(verdict.unwrap_err(), SaslFailure::NotAuthorized);
    assert!(at_once, "a resolver's login never waits for argon2");
    verifier.resolvers.publish(Some(key));
    let identity = check(&verifier, &id.resolver_user(), &token.to_hex()).unwrap();
    assert_eq!(identity.role, Role::Resolve);
    assert_eq!(identity.user, id.resolver_user());
    // Another migration's name, another daemon's key, a token that is not hex: refused.
    let other = MigrationId(0xabd).resolver_user();
    assert_eq!(
        check(&verifier, &other, &token.to_hex()).unwrap_err(),
        SaslFailure::NotAuthorized
    );
    let forged = Token::mint(&[4; 32], id, [1; 16]);
    assert_eq!(
        check(&verifier, &id.resolver_user(), &forged.to_hex()).unwrap_err(),
        SaslFailure::NotAuthorized
    );
    assert_eq!(
        check(&verifier, &id.resolver_user(), "not-a-token").unwrap_err(),
        SaslFailure::NotAuthorized
    );
}
