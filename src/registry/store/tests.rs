//! The store: the journal over redb, checkpoints, old stores, crashes.

use super::*;
use crate::registry::model::Domain;

fn domain_record(name: &str) -> (Key, Option<Vec<u8>>) {
    let domain = Domain::constraints_only(name);
    (
        Key::Domain(name.into()),
        Some(serde_json::to_vec(&domain).unwrap()),
    )
}

fn meta_record() -> (Key, Option<Vec<u8>>) {
    let meta = crate::registry::state::Meta {
        mac_cursor: 0,
        next_operation: 1,
        rng: 7,
        daemon_id: 9,
        resolver_key: [7; 32],
    };
    (Key::Meta, Some(serde_json::to_vec(&meta).unwrap()))
}

fn names(records: &Records) -> Vec<String> {
    records.domains.iter().map(|d| d.name.clone()).collect()
}

#[test]
fn a_new_store_is_made_beside_and_renamed_into_place() {
    // A disk that fails while the store is made must not leave a half-written file where
    // every later start would trip on it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.redb");
    let store = Store::open(&path).unwrap();
    assert!(path.exists());
    assert!(!path.with_extension("redb.new").exists());
    assert!(store.load().unwrap().is_none());
    drop(store);
    // An empty file (made, never written) reads as no store at all.
    let empty = dir.path().join("empty.redb");
    std::fs::write(&empty, b"").unwrap();
    assert!(Store::read_only(&empty).unwrap().is_none());
    assert!(
        Store::read_only(&dir.path().join("missing.redb"))
            .unwrap()
            .is_none()
    );
}

#[test]
#[allow(clippy::mem_forget)]
fn a_store_left_unclean_is_still_read_without_writing_the_disk() {
    // redb's read-only open refuses a file a crash left unclean; the records are then read
    // through a copy in memory, where recovery may write.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.redb");
    let mut store = Store::open(&path).unwrap();
    store
        .commit(&[domain_record("a"), meta_record()], false)
        .unwrap();
    // A crash: the database is never closed (its lock is still held, as another process's
    // would be: redb's read-only open fails either way, so the copy in memory is read).
    std::mem::forget(store);
    assert!(ReadOnlyDatabase::open(&path).is_err());
    let before = std::fs::read(&path).unwrap();
    let records = Store::read_only(&path).unwrap().unwrap();
    assert_eq!(names(&records), ["a"]);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file is untouched"
    );
}

#[test]
fn a_whole_commit_deletes_what_it_does_not_name() {
    // After a failed commit the disk may hold that commit after all: the next one rewrites
    // every record and removes the domains the registry does not have.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.redb");
    let mut store = Store::open(&path).unwrap();
    store
        .commit(
            &[domain_record("a"), domain_record("b"), meta_record()],
            false,
        )
        .unwrap();
    store
        .commit(&[domain_record("a"), meta_record()], true)
        .unwrap();
    assert_eq!(names(&store.load().unwrap().unwrap()), ["a"]);
    store.commit(&[domain_record("c")], false).unwrap();
    assert_eq!(names(&store.load().unwrap().unwrap()), ["a", "c"]);
}

#[test]
fn commits_are_journaled_and_replayed_over_the_database_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.redb");
    let mut store = Store::open(&path).unwrap();
    let first = store
        .commit(&[domain_record("a"), meta_record()], false)
        .unwrap();
    assert_eq!(first, Committed::Journaled);
    store.commit(&[domain_record("b")], false).unwrap();
    store
        .commit(&[(Key::Domain("a".into()), None)], false)
        .unwrap();
    assert_eq!(store.checkpoints(), 0);
    assert!(store.journal_bytes() > 0);
    // A crash: nothing but the journal holds these three commits.
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(names(&store.load().unwrap().unwrap()), ["b"]);
    assert_eq!(names(&Store::read_only(&path).unwrap().unwrap()), ["b"]);
}

#[test]
fn a_full_journal_is_checkpointed_and_disk_use_stays_bounded() {
    // Commits of 256 KiB records over 8 names: the 16 MiB journal wraps several times,
    // each wrap a checkpoint into the database, whose freed pages are reused.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.redb");
    let mut store = Store::open(&path).unwrap();
    store.commit(&[meta_record()], false).unwrap();
    let big = |name: &str, n: u8| {
        let mut domain = Domain::constraints_only(name);
        let blob = char::from(b'a' + n % 26).to_string().repeat(256 << 10);
        domain.variables.insert("blob".into(), blob);
        (
            Key::Domain(name.into()),
            Some(serde_json::to_vec(&domain).unwrap()),
        )
    };
    let commits = 320u32;
    // The database's size after each checkpoint.
    let mut sizes = Vec::new();
    for n in 0..commits {
        let name = format!("d{}", n % 8);
        let before = store.checkpoints();
        store.commit(&[big(&name, (n % 26) as u8)], false).unwrap();
        if store.checkpoints() > before {
            sizes.push(std::fs::metadata(&path).unwrap().len());
        }
    }
    assert!(sizes.len() >= 4, "{} checkpoints", sizes.len());
    let journal = std::fs::metadata(journal_path(&path)).unwrap().len();
    assert!(journal <= crate::registry::journal::CAPACITY, "{journal}");
    // The database holds 2 MiB of records: redb's copy-on-write takes room for two
    // versions of them and more, and then reuses its freed pages instead of growing.
    let (last, before_last) = (sizes[sizes.len() - 1], sizes[sizes.len() - 2]);
    assert!(
        last == before_last && last < 32 << 20,
        "the database grew to {last} bytes: {sizes:?}"
    );
    drop(store);
    let records = Store::open(&path).unwrap().load().unwrap().unwrap();
    assert_eq!(records.domains.len(), 8);
    // The last value of each, whether it came from the database or the journal.
    for domain in &records.domains {
        let k: u32 = domain.name[1..].parse().unwrap();
        let n = commits - 8 + k;
        let expected = char::from(b'a' + (n % 26) as u8);
        assert!(
            domain.variables["blob"].starts_with(expected),
            "{}",
            domain.name
        );
    }
}

#[test]
fn a_store_written_before_the_journal_loads_and_takes_commits() {
    // Stores written by earlier versions are a redb file alone, with no journal epoch.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.redb");
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut domains = txn.open_table(DOMAINS).unwrap();
            let mut state = txn.open_table(STATE).unwrap();
            for (key, value) in [domain_record("old"), meta_record()] {
                let value = value.unwrap();
                match key {
                    Key::Domain(name) => domains.insert(name.as_str(), value.as_slice()),
                    _ => state.insert(META_KEY, value.as_slice()),
                }
                .unwrap();
            }
        }
        txn.commit().unwrap();
    }
    assert!(!journal_path(&path).exists());
    assert_eq!(names(&Store::read_only(&path).unwrap().unwrap()), ["old"]);
    let mut store = Store::open(&path).unwrap();
    assert_eq!(names(&store.load().unwrap().unwrap()), ["old"]);
    store.commit(&[domain_record("new")], false).unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(names(&store.load().unwrap().unwrap()), ["new", "old"]);
}

#[test]
fn frames_of_an_epoch_a_checkpoint_ended_are_never_replayed() {
    // A whole commit (after a failure) goes to the database with a new epoch: a frame the
    // failed commit may have left in the journal is not replayed over it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.redb");
    let mut store = Store::open(&path).unwrap();
    store
        .commit(
            &[domain_record("a"), domain_record("refused"), meta_record()],
            false,
        )
        .unwrap();
    let committed = store
        .commit(&[domain_record("a"), meta_record()], true)
        .unwrap();
    assert_eq!(committed, Committed::Checkpoint);
    drop(store);
    assert_eq!(
        names(&Store::open(&path).unwrap().load().unwrap().unwrap()),
        ["a"]
    );
}
