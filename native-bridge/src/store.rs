//! The native peer's durable storage: one `redb` file in the data directory.
//!
//! `redb` is crash-safe (copy-on-write B-trees with a checksummed commit), and every batch the
//! engine hands over is written in one write transaction with immediate durability, so the
//! engine is told `handle_storage_done` only after the commit reached the disk — what it then
//! acknowledges to peers cannot be lost by a crash. Each record also carries the engine's keyed
//! MAC, so a record changed on disk is refused when the store is loaded.
//!
//! The identity record holds the device's secret keys; the file is created `0600` inside a
//! `0700` directory.

use std::path::{Path, PathBuf};

use kathon_core::sync::{RecordKey, StorageBatch};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const RECORDS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("records");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");

/// Largest record accepted when loading (an envelope is at most 1 MiB; the registry is small).
const MAX_RECORD: usize = 8 * 1024 * 1024;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process has the store open.
    #[error("the store {0} is in use by another process (is a bridge with the native peer running?)")]
    InUse(PathBuf),
    /// The file or directory could not be created or read.
    #[error("cannot open the store {path}: {message}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A read or write failed.
    #[error("store error: {0}")]
    Io(String),
    /// A record is not what this version writes.
    #[error("the store holds a record it cannot read: {0}")]
    Corrupt(String),
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

/// What a store holds.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The identity record, if the device has one.
    pub identity: Option<Vec<u8>>,
    /// Every other record.
    pub records: Vec<(RecordKey, Vec<u8>)>,
}

/// The native peer's store.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// The store's file inside a data directory.
    pub fn file_in(data_dir: &Path) -> PathBuf {
        data_dir.join("kathon.redb")
    }

    /// Opens (or creates) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = Self::file_in(data_dir);
        let open_err = |message: String| StoreError::Open { path: path.clone(), message };
        std::fs::create_dir_all(data_dir).map_err(|e| open_err(e.to_string()))?;
        restrict(data_dir, 0o700);
        let db = match Database::create(&path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::InUse(path)),
            Err(e) => return Err(open_err(e.to_string())),
        };
        restrict(&path, 0o600);
        Ok(Self { db, path })
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every record.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = match txn.open_table(RECORDS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Loaded::default()),
            Err(e) => return Err(io(e)),
        };
        let mut loaded = Loaded::default();
        for entry in table.iter().map_err(io)? {
            let (key, value) = entry.map_err(io)?;
            let (key, value) = (key.value(), value.value());
            if value.len() > MAX_RECORD {
                return Err(StoreError::Corrupt(format!("record {key} is {} bytes", value.len())));
            }
            match RecordKey::from_text(key) {
                Some(RecordKey::Identity) => loaded.identity = Some(value.to_vec()),
                Some(k) => loaded.records.push((k, value.to_vec())),
                None => return Err(StoreError::Corrupt(format!("unknown record key {key:?}"))),
            }
        }
        Ok(loaded)
    }

    /// Writes a batch in one durable transaction: it returns only after the commit.
    pub fn write(&self, batch: &StorageBatch) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut table = txn.open_table(RECORDS).map_err(io)?;
            for (key, bytes) in &batch.puts {
                table.insert(key.to_text().as_str(), bytes.as_slice()).map_err(io)?;
            }
        }
        txn.commit().map_err(io)
    }

    /// A metadata value (the DTLS certificate, settings).
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        Ok(table.get(key).map_err(io)?.map(|v| v.value().to_vec()))
    }

    /// Sets a metadata value, durably.
    pub fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut table = txn.open_table(META).map_err(io)?;
            table.insert(key, value).map_err(io)?;
        }
        txn.commit().map_err(io)
    }
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

#[cfg(not(unix))]
fn restrict(_path: &Path, _mode: u32) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_survive_reopening_and_a_second_opener_is_refused() {
        let dir = std::env::temp_dir().join(format!("kathon-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap();
        assert!(matches!(Store::open(&dir), Err(StoreError::InUse(_))));
        store.write(&StorageBatch { id: 1, puts: vec![(RecordKey::Registry, b"r".to_vec())] }).unwrap();
        store.set_meta("k", b"v").unwrap();
        drop(store);
        let store = Store::open(&dir).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.records, vec![(RecordKey::Registry, b"r".to_vec())]);
        assert_eq!(store.meta("k").unwrap().as_deref(), Some(&b"v"[..]));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
