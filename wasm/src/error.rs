//! Errors as JavaScript `Error` objects.
//!
//! Every failure crosses into JavaScript as a real `Error` (so it has a stack and `instanceof
//! Error` holds) whose `name` says what kind of failure it is and whose `code` is a stable
//! machine-readable string, as automerge-wasm does it — never a bare string, never a trap.
//!
//! | `name` | `code`s |
//! |---|---|
//! | `KathonIdError` | `id` |
//! | `KathonStateError` | `not-enrolled`, `locked`, `no-root-key`, `busy`, `closed`, `not-found`, `unavailable` (the import/export module did not load) |
//! | `KathonInputError` | `invalid`, `bad-move`, `folder-full`, `import` |
//! | `KathonVaultError` | `vault-locked`, `vault-unknown-key`, `vault-tampered`, `wrong-passphrase` |
//! | `KathonStorageError` | `storage`, `quota`, `tampered` |
//! | `KathonNetworkError` | `signaling`, `webrtc` |

use kathon_core::model::ModelError;
use kathon_core::model::vault::VaultError;
use kathon_core::sync::{EngineError, LoadError};
use wasm_bindgen::JsValue;

/// Builds a JS `Error` with `name`, `code` and `message`.
pub fn js_error(name: &str, code: &str, message: &str) -> JsValue {
    let error = js_sys::Error::new(message);
    error.set_name(name);
    let _ = js_sys::Reflect::set(&error, &JsValue::from_str("code"), &JsValue::from_str(code));
    error.into()
}

/// A state error (`KathonStateError`).
pub fn state(code: &str, message: &str) -> JsValue {
    js_error("KathonStateError", code, message)
}

/// An input error (`KathonInputError`).
pub fn input(message: &str) -> JsValue {
    js_error("KathonInputError", "invalid", message)
}

/// A storage error (`KathonStorageError`).
pub fn storage(code: &str, message: &str) -> JsValue {
    js_error("KathonStorageError", code, message)
}

/// A network error (`KathonNetworkError`).
pub fn network(code: &str, message: &str) -> JsValue {
    js_error("KathonNetworkError", code, message)
}

/// A text ID that does not parse.
pub fn id_error(e: kathon_core::identity::IdParseError) -> JsValue {
    js_error("KathonIdError", "id", &e.to_string())
}

/// A vault error.
pub fn vault(e: &VaultError) -> JsValue {
    let code = match e {
        VaultError::Locked => "vault-locked",
        VaultError::UnknownKey => "vault-unknown-key",
        VaultError::Tampered => "vault-tampered",
        _ => "vault-tampered",
    };
    js_error("KathonVaultError", code, &e.to_string())
}

/// A model error.
pub fn model(e: ModelError) -> JsValue {
    match &e {
        ModelError::Vault(v) => vault(v),
        ModelError::NotFound { .. } => state("not-found", &e.to_string()),
        ModelError::BadMove { .. } => js_error("KathonInputError", "bad-move", &e.to_string()),
        ModelError::FolderFull { .. } => js_error("KathonInputError", "folder-full", &e.to_string()),
        ModelError::NotEnrolled => state("not-enrolled", &e.to_string()),
        _ => input(&e.to_string()),
    }
}

/// An engine error.
pub fn engine(e: EngineError) -> JsValue {
    match e {
        EngineError::Model(m) => model(m),
        EngineError::NotEnrolled => state("not-enrolled", "this store is not enrolled in an identity yet"),
        EngineError::NoRootKey => state("no-root-key", "this device does not hold the identity's root key"),
        other => state("not-found", &other.to_string()),
    }
}

/// A load error.
pub fn load(e: &LoadError) -> JsValue {
    let code = match e {
        LoadError::Tampered(_) | LoadError::Torn(..) => "tampered",
        _ => "storage",
    };
    storage(code, &e.to_string())
}

/// Any JS value thrown by a browser API, as a storage error (keeps its message and DOMException
/// name, so a `QuotaExceededError` is recognisable).
pub fn from_dom(context: &str, e: &JsValue) -> JsValue {
    let message =
        js_sys::Reflect::get(e, &JsValue::from_str("message")).ok().and_then(|m| m.as_string()).unwrap_or_default();
    let name = js_sys::Reflect::get(e, &JsValue::from_str("name")).ok().and_then(|m| m.as_string()).unwrap_or_default();
    let code = if name == "QuotaExceededError" || message.contains("quota") || message.contains("Quota") {
        "quota"
    } else {
        "storage"
    };
    storage(code, &format!("{context}: {name} {message}"))
}
