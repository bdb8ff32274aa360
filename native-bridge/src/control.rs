//! The native peer's control API (`/peer/…`, loopback only), used by the command line.
//!
//! Requests carrying an `Origin` header are refused outright: a web page — even one allowed to
//! use signaling — must not create identities, issue pairing codes or read exports. Only local
//! programs (which send no `Origin`) may, and a local program is trusted as much as the bridge.

use std::sync::Arc;

use axum::Json;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::Shared;
use crate::peer::{Command, FileFormat, PeerHandle};

/// Largest file accepted by `import` (a browser's bookmarks or passwords export).
pub const MAX_IMPORT_BYTES: usize = 64 * 1024 * 1024;

pub(crate) fn routes() -> axum::Router<Arc<Shared>> {
    axum::Router::new()
        .route("/peer/status", get(status))
        .route("/peer/identity", post(create_identity))
        .route("/peer/join", post(join))
        .route("/peer/pairing-code", post(pairing_code))
        .route("/peer/confirm", post(confirm))
        .route("/peer/devices", get(devices))
        .route("/peer/revoke", post(revoke))
        .route("/peer/import", post(import).layer(DefaultBodyLimit::max(MAX_IMPORT_BYTES)))
        .route("/peer/export", get(export))
        .route("/peer/bookmarks", post(add_bookmark).get(search_bookmarks))
        .route("/peer/digest", get(digest))
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// The peer, if the request may use it.
fn peer<'a>(shared: &'a Shared, headers: &HeaderMap) -> Result<&'a PeerHandle, Box<Response>> {
    if let Err(why) = crate::signaling::allowed(headers, shared.listen, &[]) {
        return Err(Box::new(refuse(StatusCode::FORBIDDEN, why)));
    }
    if headers.contains_key("origin") {
        return Err(Box::new(refuse(StatusCode::FORBIDDEN, "the control API is for local programs, not web pages")));
    }
    shared
        .peer
        .as_ref()
        .ok_or_else(|| Box::new(refuse(StatusCode::NOT_FOUND, "this bridge runs without the native peer")))
}

fn answer<T: serde::Serialize>(result: Result<T, String>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(e) => refuse(StatusCode::UNPROCESSABLE_ENTITY, e),
    }
}

async fn status(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match peer(&shared, &headers) {
        Ok(p) => Json(p.status().await).into_response(),
        Err(r) => *r,
    }
}

async fn create_identity(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match peer(&shared, &headers) {
        Ok(p) => answer(p.request(Command::CreateIdentity).await),
        Err(r) => *r,
    }
}

#[derive(Deserialize)]
struct JoinRequest {
    code: String,
}

async fn join(State(shared): State<Arc<Shared>>, headers: HeaderMap, Json(body): Json<JoinRequest>) -> Response {
    match peer(&shared, &headers) {
        Ok(p) => answer(p.request(|r| Command::Join(body.code, r)).await),
        Err(r) => *r,
    }
}

async fn pairing_code(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match peer(&shared, &headers) {
        Ok(p) => answer(p.request(Command::PairingCode).await.map(|code| serde_json::json!({ "code": code }))),
        Err(r) => *r,
    }
}

#[derive(Deserialize)]
struct ConfirmRequest {
    peer: u64,
    accept: bool,
}

async fn confirm(State(shared): State<Arc<Shared>>, headers: HeaderMap, Json(body): Json<ConfirmRequest>) -> Response {
    match peer(&shared, &headers) {
        Ok(p) => answer(p.request(|r| Command::ConfirmPairing(body.peer, body.accept, r)).await),
        Err(r) => *r,
    }
}

async fn devices(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match peer(&shared, &headers) {
        Ok(p) => answer(p.request(Command::Devices).await),
        Err(r) => *r,
    }
}

#[derive(Deserialize)]
struct RevokeRequest {
    device: String,
}

async fn revoke(State(shared): State<Arc<Shared>>, headers: HeaderMap, Json(body): Json<RevokeRequest>) -> Response {
    match peer(&shared, &headers) {
        Ok(p) => answer(p.request(|r| Command::Revoke(body.device, r)).await),
        Err(r) => *r,
    }
}

#[derive(Deserialize)]
struct FormatQuery {
    format: FileFormat,
}

async fn import(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<FormatQuery>,
    body: String,
) -> Response {
    match peer(&shared, &headers) {
        Ok(p) => answer(p.request(|r| Command::Import(q.format, body, r)).await),
        Err(r) => *r,
    }
}

async fn export(State(shared): State<Arc<Shared>>, headers: HeaderMap, Query(q): Query<FormatQuery>) -> Response {
    match peer(&shared, &headers) {
        Ok(p) => match p.request(|r| Command::Export(q.format, r)).await {
            Ok(text) => text.into_response(),
            Err(e) => refuse(StatusCode::UNPROCESSABLE_ENTITY, e),
        },
        Err(r) => *r,
    }
}

#[derive(Deserialize)]
struct NewBookmark {
    url: String,
    #[serde(default)]
    title: String,
}

async fn add_bookmark(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<NewBookmark>,
) -> Response {
    match peer(&shared, &headers) {
        Ok(p) => answer(p.request(|r| Command::AddBookmark(body.url, body.title, r)).await),
        Err(r) => *r,
    }
}

#[derive(Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

async fn search_bookmarks(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<SearchQuery>,
) -> Response {
    match peer(&shared, &headers) {
        Ok(p) => answer(p.request(|r| Command::SearchBookmarks(q.q, r)).await),
        Err(r) => *r,
    }
}

async fn digest(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match peer(&shared, &headers) {
        Ok(p) => answer(p.request(Command::Digest).await),
        Err(r) => *r,
    }
}
