//! Core errors as JavaScript `Error` objects.
//!
//! Each error becomes an `Error` whose `message` is the core error's text and whose `name` is a
//! stable identifier an app can branch on (`KathonIdError`, `KathonDecodeError`, …), as
//! automerge-wasm does it — never a bare string.

use wasm_bindgen::JsValue;

/// Builds a JS `Error` with `name` and `message`.
pub fn js_error(name: &str, message: &str) -> JsValue {
    let error = js_sys::Error::new(message);
    error.set_name(name);
    error.into()
}

/// A text ID that does not parse.
pub fn id_error(e: kathon_core::identity::IdParseError) -> JsValue {
    js_error("KathonIdError", &e.to_string())
}
