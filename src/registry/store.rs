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

use redb::{Database, ReadOnlyDatabase, ReadableDatabase, ReadableTable, TableDefinition};

use crate::registry::model::Domain;
use crate::registry::state::{Key, Records};

const DOMAINS: TableDefinition<&str, &[u8]> = TableDefinition::new("domains");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
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
    /// Opens the database at `path`, creating it if it does not exist.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        crate::fault::io_point("store.open").map_err(|e| StoreError {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let db = Database::create(path).map_err(|e| StoreError {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
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

    /// Reads every record without opening the database for writing, as a daemon that starts
    /// on a full disk must: `None` for a store that does not exist or holds nothing yet.
    pub fn read_only(path: &Path) -> Result<Option<Records>, StoreError> {
        let error = |e: &dyn std::fmt::Display| StoreError {
            path: path.to_owned(),
            message: e.to_string(),
        };
        if !path.exists() {
            return Ok(None);
        }
        let db = ReadOnlyDatabase::open(path).map_err(|e| error(&e))?;
        let store = Store::closed(path);
        store.load_from(&db)
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
        Ok(Some(Records {
            domains,
            spconfigs,
            meta: Some(meta),
        }))
    }

    /// Writes `changes` in one durable transaction: when this returns, they survive a crash.
    /// On failure nothing of them is stored, and the database is closed to be opened again at
    /// the next commit.
    pub fn commit(&mut self, changes: &[(Key, Option<Vec<u8>>)]) -> Result<(), StoreError> {
        if self.db.is_none() {
            let reopened = Store::open(&self.path)?;
            self.db = reopened.db;
        }
        let outcome = match &self.db {
            Some(db) => self.write(db, changes),
            None => Err(self.error("the store is not open")),
        };
        if outcome.is_err() {
            self.db = None;
        }
        outcome
    }

    fn write(&self, db: &Database, changes: &[(Key, Option<Vec<u8>>)]) -> Result<(), StoreError> {
        crate::fault::io_point("store.commit").map_err(|e| self.error(e))?;
        let txn = db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut domains = txn.open_table(DOMAINS).map_err(|e| self.error(e))?;
            let mut state = txn.open_table(STATE).map_err(|e| self.error(e))?;
            for (key, value) in changes {
                let (table, name) = match key {
                    Key::Domain(name) => (&mut domains, name.as_str()),
                    Key::SpConfigs => (&mut state, SPCONFIGS_KEY),
                    Key::Meta => (&mut state, META_KEY),
                };
                match value {
                    Some(bytes) => table.insert(name, bytes.as_slice()).map(drop),
                    None => table.remove(name).map(drop),
                }
                .map_err(|e| self.error(e))?;
            }
        }
        txn.commit().map_err(|e| self.error(e))
    }
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
        }
    }
    Ok(records)
}
