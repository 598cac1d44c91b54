//! Durability: the registry's records in a redb database, with a write-ahead journal in front.
//!
//! A batch's commit is one frame in the journal (one `pwrite` and one `fdatasync`, see
//! [`journal`](crate::registry::journal)); when the journal is full, the records it holds go to
//! redb in one transaction (a checkpoint) and it starts again. redb gives that checkpoint
//! crash-safety (copy-on-write B-trees with a checksummed commit slot): a `kill -9` at any
//! moment leaves either the old or the new state. Loading reads redb and replays the journal's
//! frames of the epoch redb names. A store written before the journal existed is a redb file
//! with no journal beside it, and loads as it always did.
//!
//! Why not redb alone: its commit rewrites about twenty pages, several times the cost of the
//! disk's own write + fdatasync; the README's Performance section has the comparison.
// The registry's shell (its thread, its disk): the lints of the pure rules do not apply.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::backends::InMemoryBackend;
use redb::{
    Database, ReadOnlyDatabase, ReadableDatabase, ReadableTable, StorageBackend, TableDefinition,
};

use crate::registry::journal::Journal;
use crate::registry::state::{Change, Key, Records};

const DOMAINS: TableDefinition<&str, &[u8]> = TableDefinition::new("domains");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
/// Migration records, by id (32 hex digits). Absent from stores older than migration.
const MIGRATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("migrations");
const SPCONFIGS_KEY: &str = "spconfigs";
const META_KEY: &str = "meta";
/// The epoch of the journal whose frames follow the database's state (absent: 0).
const JOURNAL_EPOCH_KEY: &str = "journal_epoch";

#[derive(Debug, thiserror::Error)]
#[error("registry store {path}: {message}")]
pub struct StoreError {
    pub path: PathBuf,
    pub message: String,
}

/// The registry's database and its journal. After a failed write both are closed (redb asks
/// for that after an I/O error) and opened again at the next commit, which then writes every
/// record to the database.
pub struct Store {
    db: Option<Database>,
    journal: Option<Journal>,
    path: PathBuf,
    /// The epoch of the journal's frames that follow the database's state.
    epoch: u64,
    /// What the journal holds beyond the database, the latest value of each key: written to
    /// the database at the next checkpoint. Bounded by the journal's capacity.
    journaled: BTreeMap<Key, Option<Vec<u8>>>,
    /// Checkpoints written since the store was opened.
    checkpoints: u64,
}

/// What a commit did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Committed {
    /// One journal frame.
    Journaled,
    /// A checkpoint: the journal's records (and the batch's) written to the database.
    Checkpoint,
}

/// Where the journal of the store at `path` lives: beside it.
pub fn journal_path(path: &Path) -> PathBuf {
    path.with_extension("journal")
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
        let epoch = journal_epoch(&db).map_err(|e| error(&e))?;
        let (journal, frames) = Journal::open(&journal_path(path), epoch).map_err(|e| error(&e))?;
        let mut journaled = BTreeMap::new();
        for frame in frames {
            journaled.extend(frame);
        }
        Ok(Store {
            db: Some(db),
            journal: Some(journal),
            path: path.to_owned(),
            epoch,
            journaled,
            checkpoints: 0,
        })
    }

    /// A store that could not be opened for writing (a full or failing disk): every commit
    /// first tries to open it again.
    pub fn closed(path: &Path) -> Store {
        Store {
            db: None,
            journal: None,
            path: path.to_owned(),
            epoch: 0,
            journaled: BTreeMap::new(),
            checkpoints: 0,
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
        let mut store = Store::closed(path);
        let replay = |store: &mut Store, epoch: u64| -> Result<(), StoreError> {
            for frame in Journal::read(&journal_path(path), epoch).map_err(|e| error(&e))? {
                store.journaled.extend(frame);
            }
            Ok(())
        };
        match ReadOnlyDatabase::open(path) {
            Ok(db) => {
                replay(&mut store, journal_epoch(&db).map_err(|e| error(&e))?)?;
                store.load_from(&db)
            }
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
                replay(&mut store, journal_epoch(&db).map_err(|e| error(&e))?)?;
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

    /// Every record, or `None` for a new store.
    pub fn load(&self) -> Result<Option<Records>, StoreError> {
        let db = self
            .db
            .as_ref()
            .ok_or_else(|| self.error("the store is not open"))?;
        self.load_from(db)
    }

    /// The database's records with the journal's over them.
    fn load_from(&self, db: &impl ReadableDatabase) -> Result<Option<Records>, StoreError> {
        let mut raw: BTreeMap<Key, Vec<u8>> = BTreeMap::new();
        let txn = db.begin_read().map_err(|e| self.error(e))?;
        match txn.open_table(STATE) {
            Ok(table) => {
                for (key, name) in [(Key::Meta, META_KEY), (Key::SpConfigs, SPCONFIGS_KEY)] {
                    if let Some(value) = table.get(name).map_err(|e| self.error(e))? {
                        raw.insert(key, value.value().to_vec());
                    }
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.error(e)),
        }
        for (definition, migrations) in [(DOMAINS, false), (MIGRATIONS, true)] {
            let table = match txn.open_table(definition) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => continue,
                Err(e) => return Err(self.error(e)),
            };
            for entry in table.iter().map_err(|e| self.error(e))? {
                let (name, value) = entry.map_err(|e| self.error(e))?;
                let key = if migrations {
                    let id =
                        crate::migration::MigrationId::parse(name.value()).ok_or_else(|| {
                            self.error(format!("migration {:?}: not a migration id", name.value()))
                        })?;
                    Key::Migration(id)
                } else {
                    Key::Domain(name.value().to_owned())
                };
                raw.insert(key, value.value().to_vec());
            }
        }
        for (key, value) in &self.journaled {
            match value {
                Some(value) => raw.insert(key.clone(), value.clone()),
                None => raw.remove(key),
            };
        }
        if !raw.contains_key(&Key::Meta) {
            return Ok(None);
        }
        records_of(&raw).map(Some).map_err(|e| self.error(e))
    }

    /// Writes `changes` durably: when this returns, they survive a crash. On failure nothing
    /// of them may be stored, and the store is closed to be opened again at the next commit.
    /// With `whole`, `changes` is every record there is, and any domain or migration the store
    /// holds beyond them is deleted in the same transaction: after a failed commit the disk may
    /// hold that commit after all (an error from the last fsync), and this puts it back to what
    /// was acknowledged.
    pub fn commit(&mut self, changes: &[Change], whole: bool) -> Result<Committed, StoreError> {
        if self.db.is_none() {
            let reopened = Store::open(&self.path)?;
            *self = reopened;
        }
        let outcome = self.write(changes, whole);
        if outcome.is_err() {
            self.db = None;
            self.journal = None;
            self.journaled.clear();
        }
        outcome
    }

    fn write(&mut self, changes: &[Change], whole: bool) -> Result<Committed, StoreError> {
        crate::fault::io_point("store.commit").map_err(|e| self.error(e))?;
        if !whole
            && let Some(journal) = self.journal.as_mut()
            && journal.takes(changes)
            && journal.append().map_err(|e| self.error(e))?
        {
            self.journaled.extend(changes.iter().cloned());
            return Ok(Committed::Journaled);
        }
        self.checkpoint(changes, whole)?;
        Ok(Committed::Checkpoint)
    }

    /// Writes what the journal holds and `changes` to the database in one transaction, with
    /// the next epoch; then the journal starts again from its beginning.
    fn checkpoint(&mut self, changes: &[Change], whole: bool) -> Result<(), StoreError> {
        let db = self
            .db
            .as_ref()
            .ok_or_else(|| self.error("the store is not open"))?;
        let epoch = self.epoch.wrapping_add(1);
        // A whole commit names every record: what the journal holds is superseded.
        let journaled = if whole {
            Vec::new()
        } else {
            std::mem::take(&mut self.journaled).into_iter().collect()
        };
        self.write_db(db, &journaled, changes, whole, epoch)?;
        self.epoch = epoch;
        self.journaled.clear();
        self.checkpoints = self.checkpoints.saturating_add(1);
        if let Some(journal) = self.journal.as_mut() {
            journal.restart(epoch);
        }
        Ok(())
    }

    /// Checkpoints written since the store was opened.
    pub fn checkpoints(&self) -> u64 {
        self.checkpoints
    }

    /// Bytes of journal frames written since the last checkpoint.
    pub fn journal_bytes(&self) -> u64 {
        self.journal.as_ref().map_or(0, Journal::used)
    }

    /// Writes `journaled` then `changes` (later values win) and `epoch` in one durable
    /// transaction.
    fn write_db(
        &self,
        db: &Database,
        journaled: &[Change],
        changes: &[Change],
        whole: bool,
        epoch: u64,
    ) -> Result<(), StoreError> {
        let txn = db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut domains = txn.open_table(DOMAINS).map_err(|e| self.error(e))?;
            let mut state = txn.open_table(STATE).map_err(|e| self.error(e))?;
            let mut migrations = txn.open_table(MIGRATIONS).map_err(|e| self.error(e))?;
            if whole {
                let kept: std::collections::HashSet<(bool, String)> = changes
                    .iter()
                    .filter_map(|(key, value)| match (key, value) {
                        (Key::Domain(_), Some(_)) => Some((true, table_key(key))),
                        (Key::Migration(_), Some(_)) => Some((false, table_key(key))),
                        _ => None,
                    })
                    .collect();
                for (is_domain, table) in [(true, &mut domains), (false, &mut migrations)] {
                    let mut stale = Vec::new();
                    for entry in table.iter().map_err(|e| self.error(e))? {
                        let (name, _) = entry.map_err(|e| self.error(e))?;
                        if !kept.contains(&(is_domain, name.value().to_owned())) {
                            stale.push(name.value().to_owned());
                        }
                    }
                    for name in stale {
                        table.remove(name.as_str()).map_err(|e| self.error(e))?;
                    }
                }
            }
            for (key, value) in journaled.iter().chain(changes) {
                let name = table_key(key);
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
            state
                .insert(JOURNAL_EPOCH_KEY, epoch.to_le_bytes().as_slice())
                .map_err(|e| self.error(e))?;
        }
        txn.commit().map_err(|e| self.error(e))
    }
}

/// The epoch the database names for its journal (0 for a store older than the journal).
fn journal_epoch(db: &impl ReadableDatabase) -> Result<u64, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let table = match txn.open_table(STATE) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.to_string()),
    };
    match table.get(JOURNAL_EPOCH_KEY).map_err(|e| e.to_string())? {
        None => Ok(0),
        Some(value) => value
            .value()
            .try_into()
            .map(u64::from_le_bytes)
            .map_err(|_| "the journal epoch is not 8 bytes".to_owned()),
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
mod tests;
