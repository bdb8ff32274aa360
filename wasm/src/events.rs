//! Engine events as plain JavaScript objects, by listener kind.
//!
//! | kind | object |
//! |---|---|
//! | `change` | `{ kind: "bookmark" \| "history" \| "password" \| "workspace" \| "key", id?, by, local }` (no `id`: many history changes) |
//! | `committed` | `{ envelopes: number }` (local changes are durable) |
//! | `peers` | `{ authenticated?: {peer, device, name} , refused?: {peer, reason, message, peerReason} }` |
//! | `pairing` | `{ request?: {peer, device, name, sas}, sas?: string, paired?: identity }` |
//! | `alert` | `{ massDeletion?: {envelope, author, deletes, total}, equivocation?: device, clientCollision?: … }` |
//! | `error` | `{ code, message }` |

use kathon_core::model::Event;
use kathon_core::sync::EngineEvent;
use serde_json::json;
use wasm_bindgen::JsValue;

use crate::util::to_js as value_to_js;

/// The listener kind of an event, without building its object.
pub(crate) fn kind_of(event: &EngineEvent) -> &'static str {
    match event {
        EngineEvent::Model(Event::Changed { .. }) => "change",
        EngineEvent::Committed(_) => "committed",
        EngineEvent::PeerAuthenticated { .. } | EngineEvent::PeerRefused { .. } => "peers",
        _ => to_js(event).0,
    }
}

pub(crate) fn to_js(event: &EngineEvent) -> (&'static str, JsValue) {
    let (kind, value) = match event {
        EngineEvent::Model(Event::Changed { kind, id, by, local }) => {
            ("change", json!({ "kind": kind, "id": id.map(|i| i.to_string()), "by": by.to_string(), "local": local }))
        }
        EngineEvent::Model(Event::MassDeletionHeld { envelope, author, deletes, total }) => (
            "alert",
            json!({ "massDeletion": { "envelope": envelope.to_string(), "author": author.to_string(), "deletes": deletes, "total": total } }),
        ),
        EngineEvent::Model(Event::Equivocation(e)) => {
            ("alert", json!({ "equivocation": e.author.to_string(), "message": e.to_string() }))
        }
        EngineEvent::Model(Event::ClientCollision { client, first, second }) => (
            "alert",
            json!({ "clientCollision": { "client": client, "first": first.to_string(), "second": second.to_string() } }),
        ),
        EngineEvent::Committed(ids) => ("committed", json!({ "envelopes": ids.len() })),
        EngineEvent::PeerAuthenticated { peer, device, name } => {
            ("peers", json!({ "authenticated": { "peer": peer, "device": device.to_string(), "name": name } }))
        }
        EngineEvent::PeerRefused { peer, error } => (
            "peers",
            json!({ "refused": {
                "peer": peer,
                "reason": reason_code(error),
                "message": error.to_string(),
                // When the other device refused this one: its reason (`not-enrolled` after a revocation).
                "peerReason": match error {
                    kathon_core::sync::SessionError::RefusedByPeer(r) => serde_json::to_value(r).unwrap_or_default(),
                    _ => serde_json::Value::Null,
                },
            } }),
        ),
        EngineEvent::PeerSentInvalid { peer, error } => {
            ("alert", json!({ "invalid": { "peer": peer, "message": error.to_string() } }))
        }
        EngineEvent::PairingRequest { peer, device, name, sas } => {
            ("pairing", json!({ "request": { "peer": peer, "device": device.to_string(), "name": name, "sas": sas } }))
        }
        EngineEvent::PairingSas { sas, .. } => ("pairing", json!({ "sas": sas })),
        EngineEvent::Paired { identity } => ("pairing", json!({ "paired": identity.to_string() })),
        EngineEvent::StorageFailed { message, .. } => {
            let code = if message.to_lowercase().contains("quota") { "quota" } else { "storage" };
            ("error", json!({ "code": code, "message": message }))
        }
        EngineEvent::CommitFailed { message } => ("error", json!({ "code": "commit", "message": message })),
        EngineEvent::EnvelopeUnreadable { envelope } => (
            "error",
            json!({ "code": "unreadable", "message": format!("envelope {envelope} no longer reads as signed: it is not sent to peers, and deletions in it are not stored (they hold, the deleted bytes stay in storage)") }),
        ),
        _ => ("other", json!({})),
    };
    (kind, value_to_js(&value))
}

fn reason_code(error: &kathon_core::sync::SessionError) -> &'static str {
    use kathon_core::sync::SessionError as E;
    match error {
        E::WrongIdentity => "wrong-identity",
        E::NotEnrolled => "not-enrolled",
        E::Revoked => "revoked",
        // Whichever side notices a tampered connection first tells the other: the same news.
        E::BadHandshake | E::RefusedByPeer(kathon_core::sync::RefuseReason::BadHandshake) => "bad-handshake",
        E::BadPairingCode => "bad-pairing-code",
        E::PairingRefused => "pairing-refused",
        E::Version => "version",
        E::Timeout => "timeout",
        E::RefusedByPeer(_) => "refused-by-peer",
        _ => "protocol",
    }
}
