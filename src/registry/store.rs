//! Durability: the registry's records in a redb database, one fsync'd transaction per batch.
//!
//! redb gives crash-safe commits (copy-on-write B-trees with a checksummed commit slot), so a
//! `kill -9` at any moment leaves either the old or the new batch, never half of one. A
//! hand-written log would need its own framing, checksums, compaction and recovery tests for
//! the same guarantee.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

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

pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens the database at `path`, creating it if it does not exist.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::create(path).map_err(|e| StoreError {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Store {
            db,
            path: path.to_owned(),
        })
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
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
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
    pub fn commit(&self, changes: &[(Key, Option<Vec<u8>>)]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
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
