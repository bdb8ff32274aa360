//! IndexedDB through the `idb` crate: the engine's records, and a few browser objects (the
//! persistent DTLS certificate).
//!
//! One database per store (`kathon-sync:<name>`) with two object stores: `records` (engine
//! records by key: `Uint8Array` values) and `meta` (structured-clone values). Each storage batch
//! is written in **one read-write transaction with `durability: "strict"`** and reported done
//! only when that transaction completes; an abort (a quota error, say) is reported as an error and
//! the batch stays queued.

use idb::builder::{DatabaseBuilder, ObjectStoreBuilder};
use idb::{Database, TransactionMode};
use js_sys::{Array, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};

use crate::error;

const RECORDS: &str = "records";
const META: &str = "meta";

/// An open store database.
#[derive(Debug)]
pub(crate) struct Db {
    raw: web_sys::IdbDatabase,
}

impl Db {
    /// Opens (creating if needed) the database of store `name`.
    pub(crate) async fn open(name: &str) -> Result<Self, JsValue> {
        let db = DatabaseBuilder::new(&format!("kathon-sync:{name}"))
            .version(1)
            .add_object_store(ObjectStoreBuilder::new(RECORDS))
            .add_object_store(ObjectStoreBuilder::new(META))
            .build()
            .await
            .map_err(|e| error::storage("storage", &format!("cannot open IndexedDB: {e}")))?;
        Ok(Self { raw: db.into() })
    }

    /// The `idb` wrapper over the same connection (a cheap handle).
    fn db(&self) -> Database {
        Database::from(self.raw.clone())
    }

    /// Every record, as `(key, bytes)`.
    /// Every record, as JavaScript byte arrays (copied into wasm one at a time by the caller, so
    /// a cold open never holds the whole store twice in wasm memory).
    pub(crate) async fn load_records(&self) -> Result<Vec<(String, Uint8Array)>, JsValue> {
        let fail = |e: idb::Error| error::storage("storage", &format!("cannot read IndexedDB: {e}"));
        let tx = self.db().transaction(&[RECORDS], TransactionMode::ReadOnly).map_err(fail)?;
        let store = tx.object_store(RECORDS).map_err(fail)?;
        let keys = store.get_all_keys(None, None).map_err(fail)?.await.map_err(fail)?;
        let values = store.get_all(None, None).map_err(fail)?.await.map_err(fail)?;
        tx.await.map_err(fail)?;
        let mut out = Vec::with_capacity(keys.len());
        for (key, value) in keys.into_iter().zip(values) {
            let Some(key) = key.as_string() else { continue };
            let Ok(bytes) = value.dyn_into::<Uint8Array>() else {
                return Err(error::storage("tampered", &format!("stored record {key} is not bytes")));
            };
            out.push((key, bytes));
        }
        Ok(out)
    }

    /// Writes records in one strict read-write transaction; resolves when it has committed.
    pub(crate) async fn write(&self, puts: &[(String, Uint8Array)]) -> Result<(), JsValue> {
        let names = Array::of1(&JsValue::from_str(RECORDS));
        // `durability: "strict"`: `complete` fires only once the data is on disk. (The typed
        // binding is behind web-sys's unstable APIs; the call is the same.)
        let options = js_sys::Object::new();
        js_sys::Reflect::set(&options, &"durability".into(), &"strict".into())?;
        let transaction = js_sys::Reflect::get(&self.raw, &"transaction".into())?.dyn_into::<js_sys::Function>()?;
        let tx = transaction
            .call3(&self.raw, &names, &"readwrite".into(), &options)
            .map_err(|e| error::from_dom("cannot start a transaction", &e))?
            .dyn_into::<web_sys::IdbTransaction>()?;
        let store = tx.object_store(RECORDS).map_err(|e| error::from_dom("no records store", &e))?;
        for (key, value) in puts {
            store.put_with_key(value, &JsValue::from_str(key)).map_err(|e| error::from_dom("cannot write", &e))?;
        }
        let tx_raw = tx.clone();
        let tx: idb::Transaction = tx.into();
        match tx.await {
            Ok(result) if result.is_committed() => Ok(()),
            Ok(_) | Err(_) => {
                let dom = tx_raw.error().map(JsValue::from).unwrap_or_else(|| JsValue::from_str("transaction aborted"));
                Err(error::from_dom("the write was aborted", &dom))
            }
        }
    }

    /// A value from `meta`.
    pub(crate) async fn get_meta(&self, key: &str) -> Result<Option<JsValue>, JsValue> {
        let fail = |e: idb::Error| error::storage("storage", &format!("cannot read IndexedDB: {e}"));
        let tx = self.db().transaction(&[META], TransactionMode::ReadOnly).map_err(fail)?;
        let store = tx.object_store(META).map_err(fail)?;
        let value = store.get(JsValue::from_str(key)).map_err(fail)?.await.map_err(fail)?;
        tx.await.map_err(fail)?;
        Ok(value.filter(|v| !v.is_undefined()))
    }

    /// Stores a value in `meta` (strict durability).
    pub(crate) async fn put_meta(&self, key: &str, value: &JsValue) -> Result<(), JsValue> {
        let fail = |e: idb::Error| error::storage("storage", &format!("cannot write IndexedDB: {e}"));
        let tx = self.db().transaction(&[META], TransactionMode::ReadWrite).map_err(fail)?;
        let store = tx.object_store(META).map_err(fail)?;
        store.put(value, Some(&JsValue::from_str(key))).map_err(fail)?.await.map_err(fail)?;
        tx.commit().map_err(fail)?.await.map_err(fail)?;
        Ok(())
    }

    /// Closes the connection.
    pub(crate) fn close(&self) {
        self.raw.close();
    }
}
