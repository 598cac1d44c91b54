//! Durability: the registry's records in a redb database, one fsync'd transaction per batch.
//!
//! redb gives crash-safe commits (copy-on-write B-trees with a checksummed commit slot), so a
//! `kill -9` at any moment leaves either the old or the new batch, never half of one. A
//! hand-written log would need its own framing, checksums, compaction and recovery tests for
//! the same guarantee.
// The registry's shell (its thread, its disk): the lints of the pure rules do not apply.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::path::{Path, PathBuf};

use redb::backends::InMemoryBackend;
use redb::{
    Database, ReadOnlyDatabase, ReadableDatabase, ReadableTable, StorageBackend, TableDefinition,
};

use crate::registry::model::{Domain, MigrationRecord};
use crate::registry::state::{Key, Records};

const DOMAINS: TableDefinition<&str, &[u8]> = TableDefinition::new("domains");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
/// Migration records, by id (32 hex digits). Absent from stores older than migration.
const MIGRATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("migrations");
const SPCONFIGS_KEY: &str = "spconfigs";
const META_KEY: &str = "meta";

#[derive(Debug, thiserror::Error)]
#[error("registry store {path}: {message}")]
pub struct StoreError {
    pub path: PathBuf,
    pub message: String,
}

/// The registry's database. After a failed write the database is closed (redb asks for that
/// after an I/O error) and opened again at the next commit.
pub struct Store {
    db: Option<Database>,
    path: PathBuf,
}

impl Store {
    /// Opens the database at `path`, creating it if it does not exist. A new database is made
    /// beside it and renamed into place once complete, so a disk that fails while it is being
    /// made never leaves a half-written file at `path` for every later start to trip on.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let error = |e: &dyn std::fmt::Display| StoreError {
            path: path.to_owned(),
            message: e.to_string(),
        };
        crate::fault::io_point("store.open").map_err(|e| error(&e))?;
        if !path.exists() {
            create_in_place(path).map_err(|e| error(&e))?;
        }
        let db = Database::create(path).map_err(|e| error(&e))?;
        Ok(Store {
            db: Some(db),
            path: path.to_owned(),
        })
    }

    /// A store that could not be opened for writing (a full or failing disk): every commit
    /// first tries to open it again.
    pub fn closed(path: &Path) -> Store {
        Store {
            db: None,
            path: path.to_owned(),
        }
    }

    /// Reads every record without writing to the disk, as a daemon that starts on a full or
    /// failing disk must: `None` for a store that does not exist or holds nothing yet.
    ///
    /// redb's read-only open refuses a file that was not closed cleanly (a crash, or the
    /// failure itself, leaves it so): such a file is then read into memory, where redb's
    /// recovery may write what it needs to.
    pub fn read_only(path: &Path) -> Result<Option<Records>, StoreError> {
        let error = |e: &dyn std::fmt::Display| StoreError {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let length = match std::fs::metadata(path) {
            Ok(metadata) => metadata.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(error(&e)),
        };
        if length == 0 {
            return Ok(None); // created, never written
        }
        let store = Store::closed(path);
        match ReadOnlyDatabase::open(path) {
            Ok(db) => store.load_from(&db),
            Err(read_only) => {
                let bytes = std::fs::read(path).map_err(|e| error(&e))?;
                let backend = InMemoryBackend::new();
                backend
                    .set_len(bytes.len() as u64)
                    .and_then(|()| backend.write(0, &bytes))
                    .map_err(|e| error(&e))?;
                let db = redb::Builder::new()
                    .create_with_backend(backend)
                    .map_err(|e| error(&format!("{read_only}; and in memory: {e}")))?;
                store.load_from(&db)
            }
        }
    }

    /// Whether the database is open for writing now.
    pub fn is_open(&self) -> bool {
        self.db.is_some()
    }

    fn error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| self.error(format!("{what}: {e}")))
    }

    /// Every record, or `None` for a new store.
    pub fn load(&self) -> Result<Option<Records>, StoreError> {
        let db = self
            .db
            .as_ref()
            .ok_or_else(|| self.error("the store is not open"))?;
        self.load_from(db)
    }

    fn load_from(&self, db: &impl ReadableDatabase) -> Result<Option<Records>, StoreError> {
        let txn = db.begin_read().map_err(|e| self.error(e))?;
        let state = match txn.open_table(STATE) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.error(e)),
        };
        let Some(meta) = state.get(META_KEY).map_err(|e| self.error(e))? else {
            return Ok(None);
        };
        let meta = self.decode("meta", meta.value())?;
        let spconfigs = match state.get(SPCONFIGS_KEY).map_err(|e| self.error(e))? {
            Some(value) => Some(self.decode("spconfigs", value.value())?),
            None => None,
        };
        let mut domains = Vec::new();
        let table = txn.open_table(DOMAINS).map_err(|e| self.error(e))?;
        for entry in table.iter().map_err(|e| self.error(e))? {
            let (name, value) = entry.map_err(|e| self.error(e))?;
            let domain: Domain = self.decode(&format!("domain {}", name.value()), value.value())?;
            domains.push(domain);
        }
        let mut migrations = Vec::new();
        match txn.open_table(MIGRATIONS) {
            Ok(table) => {
                for entry in table.iter().map_err(|e| self.error(e))? {
                    let (id, value) = entry.map_err(|e| self.error(e))?;
                    let record: MigrationRecord =
                        self.decode(&format!("migration {}", id.value()), value.value())?;
                    migrations.push(record);
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.error(e)),
        }
        Ok(Some(Records {
            domains,
            spconfigs,
            meta: Some(meta),
            migrations,
        }))
    }

    /// Writes `changes` in one durable transaction: when this returns, they survive a crash.
    /// On failure nothing of them may be stored, and the database is closed to be opened again
    /// at the next commit. With `whole`, `changes` is every record there is, and any domain the
    /// store holds beyond them is deleted in the same transaction: after a failed commit the
    /// disk may hold that commit after all (an error from the last fsync), and this puts it
    /// back to what was acknowledged.
    pub fn commit(
        &mut self,
        changes: &[(Key, Option<Vec<u8>>)],
        whole: bool,
    ) -> Result<(), StoreError> {
        if self.db.is_none() {
            let reopened = Store::open(&self.path)?;
            self.db = reopened.db;
        }
        let outcome = match &self.db {
            Some(db) => self.write(db, changes, whole),
            None => Err(self.error("the store is not open")),
        };
        if outcome.is_err() {
            self.db = None;
        }
        outcome
    }

    fn write(
        &self,
        db: &Database,
        changes: &[(Key, Option<Vec<u8>>)],
        whole: bool,
    ) -> Result<(), StoreError> {
        crate::fault::io_point("store.commit").map_err(|e| self.error(e))?;
        let txn = db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut domains = txn.open_table(DOMAINS).map_err(|e| self.error(e))?;
            let mut state = txn.open_table(STATE).map_err(|e| self.error(e))?;
            let mut migrations = txn.open_table(MIGRATIONS).map_err(|e| self.error(e))?;
            let keys: Vec<(Key, String)> = changes
                .iter()
                .map(|(key, _)| (key.clone(), table_key(key)))
                .collect();
            if whole {
                let kept: std::collections::HashSet<(bool, &str)> = changes
                    .iter()
                    .zip(&keys)
                    .filter_map(|((key, value), (_, name))| match (key, value) {
                        (Key::Domain(_), Some(_)) => Some((true, name.as_str())),
                        (Key::Migration(_), Some(_)) => Some((false, name.as_str())),
                        _ => None,
                    })
                    .collect();
                for (is_domain, table) in [(true, &mut domains), (false, &mut migrations)] {
                    let mut stale = Vec::new();
                    for entry in table.iter().map_err(|e| self.error(e))? {
                        let (name, _) = entry.map_err(|e| self.error(e))?;
                        if !kept.contains(&(is_domain, name.value())) {
                            stale.push(name.value().to_owned());
                        }
                    }
                    for name in stale {
                        table.remove(name.as_str()).map_err(|e| self.error(e))?;
                    }
                }
            }
            for ((key, value), (_, name)) in changes.iter().zip(&keys) {
                let table = match key {
                    Key::Domain(_) => &mut domains,
                    Key::SpConfigs | Key::Meta => &mut state,
                    Key::Migration(_) => &mut migrations,
                };
                match value {
                    Some(bytes) => table.insert(name.as_str(), bytes.as_slice()).map(drop),
                    None => table.remove(name.as_str()).map(drop),
                }
                .map_err(|e| self.error(e))?;
            }
        }
        txn.commit().map_err(|e| self.error(e))
    }
}

/// The key of `key`'s record in its table.
fn table_key(key: &Key) -> String {
    match key {
        Key::Domain(name) => name.clone(),
        Key::SpConfigs => SPCONFIGS_KEY.into(),
        Key::Meta => META_KEY.into(),
        Key::Migration(id) => id.to_string(),
    }
}

/// Makes a new, empty database at `path`: built at `path.new`, closed, then renamed into place
/// with the directory synced.
fn create_in_place(path: &Path) -> std::io::Result<()> {
    let fresh = path.with_extension("redb.new");
    let _ = std::fs::remove_file(&fresh);
    // Closed explicitly: a clean close writes what a later read-only open needs, and its
    // error (a full disk) is ours to see.
    let made = Database::create(&fresh)
        .and_then(Database::close)
        .map_err(std::io::Error::other);
    if let Err(e) = made {
        let _ = std::fs::remove_file(&fresh);
        return Err(e);
    }
    std::fs::rename(&fresh, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The records behind `committed`: what the store holds after the last good commit.
pub fn records_of(committed: &std::collections::BTreeMap<Key, Vec<u8>>) -> Result<Records, String> {
    let mut records = Records::default();
    for (key, value) in committed {
        let decode_error = |e: serde_json::Error| format!("record {key:?}: {e}");
        match key {
            Key::Domain(_) => records
                .domains
                .push(serde_json::from_slice(value).map_err(decode_error)?),
            Key::SpConfigs => {
                records.spconfigs = Some(serde_json::from_slice(value).map_err(decode_error)?)
            }
            Key::Meta => records.meta = Some(serde_json::from_slice(value).map_err(decode_error)?),
            Key::Migration(_) => records
                .migrations
                .push(serde_json::from_slice(value).map_err(decode_error)?),
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
