//! The import/export module, loaded on first use (`wasm/js/formats.js`, `wasm/formats/`).
//!
//! File formats are parsed and written by a second `.wasm` that a page downloads only when it
//! first imports or exports a file. Bookmarks and passwords cross between the two modules as
//! the core's neutral forms in their compact encoding; this module decodes what comes back with
//! the same caps as any untrusted bytes, and applies it itself.

use js_sys::{JsString, Uint8Array};
use kathon_core::model::import::{self, BookmarkFile, PasswordRow};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use zeroize::Zeroizing;

use crate::error;

#[wasm_bindgen(module = "/js/formats.js")]
extern "C" {
    #[wasm_bindgen(catch, js_name = parseBookmarksHtml)]
    async fn parse_bookmarks_html_js(text: &JsString) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch, js_name = parseChromiumBookmarks)]
    async fn parse_chromium_bookmarks_js(text: &JsString) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch, js_name = parsePasswordsCsv)]
    async fn parse_passwords_csv_js(text: &JsString) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch, js_name = writeBookmarksHtml)]
    async fn write_bookmarks_html_js(file: &Uint8Array) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch, js_name = writeChromiumBookmarks)]
    async fn write_chromium_bookmarks_js(file: &Uint8Array) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(catch, js_name = writePasswordsCsv)]
    async fn write_passwords_csv_js(rows: &Uint8Array) -> Result<JsValue, JsValue>;
}

/// The bookmark file formats.
#[derive(Clone, Copy, Debug)]
pub(crate) enum BookmarkFormat {
    /// The Netscape bookmark file every browser exports.
    Html,
    /// Chromium's `Bookmarks` JSON.
    ChromiumJson,
}

/// A file that cannot be imported: `KathonInputError` code `import`, the place in the message.
fn refused_file(message: &str) -> JsValue {
    error::js_error("KathonInputError", "import", message)
}

/// The module itself failing: not fetched or not compiled (offline, a file missing), trapped, or
/// refusing what this module sent it (a stale copy of another version).
fn unavailable(detail: &str) -> JsValue {
    error::state("unavailable", &format!("the import/export module could not be loaded or failed: {detail}"))
}

/// What the module threw while parsing: a string is a file it refused (its message names the
/// place); anything else is the module failing.
fn thrown_parsing(e: JsValue) -> JsValue {
    match e.as_string() {
        Some(message) => refused_file(&message),
        None => thrown_writing(e),
    }
}

/// What the module threw while writing what this module encoded: never the user's file.
fn thrown_writing(e: JsValue) -> JsValue {
    match e.as_string() {
        Some(message) => unavailable(&message),
        None => unavailable(&e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())).unwrap_or_default()),
    }
}

/// The bytes the module returned, copied out (wiped when dropped: password rows are secrets).
fn returned_bytes(value: &JsValue) -> Result<Zeroizing<Vec<u8>>, JsValue> {
    let array = value.dyn_ref::<Uint8Array>().ok_or_else(|| unavailable("it returned no bytes"))?;
    let mut bytes = Zeroizing::new(vec![0u8; usize::try_from(array.length()).unwrap_or_default()]);
    array.copy_to(&mut bytes);
    array.fill(0, 0, array.length());
    Ok(bytes)
}

/// Parses a bookmark file into its neutral form.
pub(crate) async fn parse_bookmarks(format: BookmarkFormat, text: &JsString) -> Result<BookmarkFile, JsValue> {
    let encoded = match format {
        BookmarkFormat::Html => parse_bookmarks_html_js(text).await,
        BookmarkFormat::ChromiumJson => parse_chromium_bookmarks_js(text).await,
    }
    .map_err(thrown_parsing)?;
    // Beyond the caps (more than a million nodes, say): the file is refused, as one too large.
    BookmarkFile::decode(&returned_bytes(&encoded)?).map_err(|e| refused_file(&e.to_string()))
}

/// Parses password CSV into rows.
pub(crate) async fn parse_passwords(text: &JsString) -> Result<Vec<PasswordRow>, JsValue> {
    let encoded = parse_passwords_csv_js(text).await.map_err(thrown_parsing)?;
    import::decode_password_rows(&returned_bytes(&encoded)?).map_err(|e| refused_file(&e.to_string()))
}

/// Writes bookmarks as a file; the text stays a JS string (never copied into this module).
pub(crate) async fn write_bookmarks(format: BookmarkFormat, file: &BookmarkFile) -> Result<JsValue, JsValue> {
    let encoded = Uint8Array::from(file.encode().as_slice());
    match format {
        BookmarkFormat::Html => write_bookmarks_html_js(&encoded).await,
        BookmarkFormat::ChromiumJson => write_chromium_bookmarks_js(&encoded).await,
    }
    .map_err(thrown_writing)
}

/// Writes password rows as CSV.
pub(crate) async fn write_passwords(rows: &[PasswordRow]) -> Result<JsValue, JsValue> {
    let encoded = Uint8Array::from(import::encode_password_rows(rows).as_slice());
    write_passwords_csv_js(&encoded).await.map_err(thrown_writing)
}
