//! Browser bindings of Kathon Sync.
//!
//! A thin layer in the style of `ywasm` and `automerge-wasm`: newtypes over `kathon-core` types,
//! conversions at the edge, and no protocol decisions. Every error crosses into JavaScript as a
//! real `Error` whose `name` says what kind of failure it is (see [`error`]).

pub mod error;

use wasm_bindgen::prelude::*;

/// Installs the panic hook so that a bug shows a readable message in the console instead of
/// `unreachable executed`. Runs once, when the module is instantiated.
#[wasm_bindgen(start)]
pub fn start() {
    #[cfg(target_arch = "wasm32")]
    console_error_panic_hook::set_once();
}

/// The version of this package.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// Checks a text identity ID (`XXXXXXX-XXXXXXX-…`) and returns it in canonical form.
///
/// Throws a `KathonIdError` naming the problem (typo, wrong kind, wrong length).
#[wasm_bindgen(js_name = normalizeIdentityId)]
pub fn normalize_identity_id(text: &str) -> Result<String, JsValue> {
    let id: kathon_core::identity::IdentityId = text.parse().map_err(error::id_error)?;
    Ok(id.to_text())
}

/// Checks a text device ID and returns it in canonical form.
#[wasm_bindgen(js_name = normalizeDeviceId)]
pub fn normalize_device_id(text: &str) -> Result<String, JsValue> {
    let id: kathon_core::identity::DeviceId = text.parse().map_err(error::id_error)?;
    Ok(id.to_text())
}
