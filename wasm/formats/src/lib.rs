//! The import/export module of the `kathon-sync` npm package.
//!
//! Reading and writing bookmark and password files — the Netscape bookmark file, Chromium's
//! `Bookmarks` JSON, password CSV — took 59 KB of the store's module gzipped (511 KB before they
//! moved; the HTML entity table, the CSV and JSON machinery), and most pages never import or
//! export anything. So those parsers and writers live in this second `.wasm`, which the main module
//! (`kathon-wasm`) loads the first time a page imports or exports a file.
//!
//! This module holds no state and makes no decisions: it turns file text into the neutral forms
//! of [`kathon_core::model::import`] and back, and hands them across in their compact encoding
//! ([`BookmarkFile::encode`], [`import::encode_password_rows`]), which the main module decodes
//! with hard caps like any other untrusted bytes before applying anything. A file that does not
//! parse is refused here with its line and column, as a thrown string the main module turns into
//! its `KathonInputError`.
//!
//! Password rows carry secrets in the clear, so the buffers this code holds them in — the CSV
//! text's copy, the rows, their encoding, the CSV written — are wiped before they are freed (the
//! CSV library's own small buffers are not: they are the library's).

use js_sys::{JsString, Uint8Array};
use kathon_core::model::import::{self, BookmarkFile, ImportError};
use wasm_bindgen::prelude::wasm_bindgen;
use zeroize::{Zeroize, Zeroizing};

fn encoded(file: Result<BookmarkFile, ImportError>) -> Result<Uint8Array, String> {
    Ok(Uint8Array::from(file.map_err(|e| e.to_string())?.encode().as_slice()))
}

fn decoded(file: &[u8]) -> Result<BookmarkFile, String> {
    BookmarkFile::decode(file).map_err(|e| e.to_string())
}

/// A Netscape bookmark file (what every browser exports) as an encoded [`BookmarkFile`].
#[wasm_bindgen(js_name = parseBookmarksHtml)]
pub fn parse_bookmarks_html(text: &str) -> Result<Uint8Array, String> {
    encoded(import::parse_netscape(text))
}

/// Chromium's `Bookmarks` JSON as an encoded [`BookmarkFile`].
#[wasm_bindgen(js_name = parseChromiumBookmarks)]
pub fn parse_chromium_bookmarks(text: &str) -> Result<Uint8Array, String> {
    encoded(import::parse_chromium_json(text))
}

/// Password CSV (Chrome, Firefox or Bitwarden layout) as encoded password rows.
#[wasm_bindgen(js_name = parsePasswordsCsv)]
pub fn parse_passwords_csv(text: &JsString) -> Result<Uint8Array, String> {
    // Copied in by hand (not as `&str`) so the copy is wiped before it is freed.
    let text = Zeroizing::new(String::from(text));
    let rows = import::parse_password_csv(&text).map_err(|e| e.to_string())?;
    Ok(Uint8Array::from(import::encode_password_rows(&rows).as_slice()))
}

/// An encoded [`BookmarkFile`] as a Netscape bookmark file.
#[wasm_bindgen(js_name = writeBookmarksHtml)]
pub fn write_bookmarks_html(file: &[u8]) -> Result<String, String> {
    Ok(import::export_netscape(&decoded(file)?))
}

/// An encoded [`BookmarkFile`] as Chromium's `Bookmarks` JSON.
#[wasm_bindgen(js_name = writeChromiumBookmarks)]
pub fn write_chromium_bookmarks(file: &[u8]) -> Result<String, String> {
    Ok(import::export_chromium_json(&decoded(file)?))
}

/// Encoded password rows as CSV in Chrome's layout.
#[wasm_bindgen(js_name = writePasswordsCsv)]
pub fn write_passwords_csv(rows: &Uint8Array) -> Result<JsString, String> {
    // Copied in by hand (not as `&[u8]`) so the copy is wiped before it is freed.
    let mut bytes = Zeroizing::new(vec![0u8; usize::try_from(rows.length()).unwrap_or_default()]);
    rows.copy_to(&mut bytes);
    let rows = import::decode_password_rows(&bytes).map_err(|e| e.to_string())?;
    let mut csv = import::export_password_csv(&rows).map_err(|e| e.to_string())?;
    let text = JsString::from(csv.as_str());
    csv.zeroize();
    Ok(text)
}
