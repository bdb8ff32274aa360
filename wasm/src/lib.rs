//! Browser bindings of Kathon Sync: the npm package `kathon-sync`.
//!
//! A thin layer in the style of `ywasm` and `automerge-wasm`: [`KathonStore`] wraps the sans-IO
//! [`Engine`] of `kathon-core`, converts values at the edge, and drives
//! the engine with browser APIs — IndexedDB for storage ([`idb_store`]), `RTCPeerConnection` data
//! channels for peers and a WebSocket to the local bridge for signaling ([`driver`]). It makes no
//! protocol decisions. Every error is a real JS `Error` with a stable `name` and `code`
//! ([`error`]); a panic hook prints a readable message instead of `unreachable executed`.

pub mod driver;
pub mod error;
pub mod events;
mod formats;
pub mod idb_store;
pub mod seal;
pub(crate) mod util;

use std::cell::RefCell;
use std::rc::Rc;

use kathon_core::model::entries::Layout;
use kathon_core::model::history::Transition;
use kathon_core::model::import::BookmarkFile;
use kathon_core::model::schema::{ItemId, NodeKind};
use kathon_core::model::{Edit, ModelError};
use kathon_core::sync::{Engine, PairingCode, RecordKey};
use rand_chacha::ChaCha20Rng as Rng;
use serde::Deserialize;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use driver::{Inner, Shared, drive};
use util::{from_js, now_ms, to_js};

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
/** A bookmark node. Roots are "toolbar", "menu", "other", "mobile". */
export interface BookmarkNode { id: string; kind: "folder" | "bookmark" | "separator"; title: string; url?: string; parent: string; children?: string[]; }
/** The bookmark tree: each root's nodes, nested. */
export type BookmarkTree = Record<"toolbar" | "menu" | "other" | "mobile", BookmarkTreeNode[]>;
export interface BookmarkTreeNode { id: string; kind: "folder" | "bookmark" | "separator"; title: string; url?: string; children?: BookmarkTreeNode[]; }
export interface NewBookmark { parent?: string; index?: number; kind?: "folder" | "bookmark" | "separator"; title: string; url?: string; }
export interface Visit { id: string; url: string; title: string; visitedAtMs: number; transition: "link" | "typed" | "bookmark" | "reload" | "form" | "other"; device: string; }
export interface NewVisit { url: string; title?: string; visitedAt?: number; transition?: Visit["transition"]; }
export interface PasswordEntry { id: string; origin: string; username: string; hasPassword: boolean; hasNotes: boolean; createdMs: number; changedMs: number; }
export interface PasswordFields { origin?: string; username?: string; password?: string; notes?: string; }
export interface KeyRecord { id: string; name: string; keyType: string; changedMs: number; }
export interface Tab { url: string; title: string; pinned?: boolean; group?: number | null; }
export interface TabGroup { title: string; color?: string; collapsed?: boolean; }
export interface Window { tabs: Tab[]; groups?: TabGroup[]; activeTab?: number; }
export interface Layout { windows: Window[]; }
export interface SavedWorkspace { id: string; name: string; layout: Layout; changedMs: number; }
export interface Device { id: string; name: string; thisDevice: boolean; revoked: boolean; connected: boolean; }
export interface ImportReport { foldersAdded: number; bookmarksAdded: number; passwordsAdded: number; passwordsUpdated: number; duplicatesSkipped: number; }
export interface StoreStatus { name: string; closed: boolean; enrolled: boolean; locked: boolean; passphraseSet: boolean; identityId: string | null; deviceId: string | null; holdsRootKey: boolean; }
export interface SyncStatus { bridge: string; peersFound: number; connected: number; lastSyncMs: number; lastError: string | null; pendingStorage: number; pendingEnvelopes: number; }
export interface Counts { bookmarks: number; history: number; passwords: number; keys: number; workspaces: number; envelopes: number; }
export interface PairingCodeInfo { code: string; expiresAt: number; }
export type KathonEventKind = "change" | "committed" | "peers" | "pairing" | "alert" | "error" | "*";
"#;

/// Installs the panic hook: a bug shows a readable message in the console.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

#[wasm_bindgen(module = "/js/warm.js")]
extern "C" {
    #[wasm_bindgen(js_name = startWarmUp)]
    fn start_warm_up(edits: u32) -> js_sys::Promise;
}

/// How many edits `warmUp` makes by default: ~0.4 s of a worker's time, most of the gain
/// (`benches/README.md`, "Warming up in a worker").
const WARM_UP_EDITS: u32 = 1_000;
const MAX_WARM_UP_EDITS: u32 = 10_000;

/// Runs the store's write path in a worker (`edits` bookmark adds into a throwaway store whose
/// database is deleted after), so the page's first edits run code already compiled: V8 shares
/// the compiled module between the page and its workers. Call it after `init()`, early, when the
/// page's first edits should be fast; nothing waits for it. Resolves to whether it ran (`false`
/// where module workers or IndexedDB are unavailable: nothing is lost but the head start).
#[wasm_bindgen(js_name = warmUp)]
pub async fn warm_up(edits: Option<u32>) -> bool {
    let edits = edits.unwrap_or(WARM_UP_EDITS).min(MAX_WARM_UP_EDITS);
    wasm_bindgen_futures::JsFuture::from(start_warm_up(edits)).await.ok().and_then(|v| v.as_bool()).unwrap_or(false)
}

/// The version of this package.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// Checks a text identity ID (`XXXXXXX-XXXXXXX-…`) and returns it in canonical form.
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

pub(crate) fn seal_identity(passphrase: &str, record: &[u8]) -> Result<Vec<u8>, JsValue> {
    seal::seal(passphrase, record, util::random()?, util::random()?, seal::Cost::DEFAULT)
        .map_err(|e| error::storage("storage", &e))
}

/// One store: a replica of the user's browser state in IndexedDB, and its sync engine.
#[wasm_bindgen]
pub struct KathonStore {
    shared: Shared,
}

impl core::fmt::Debug for KathonStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let name = self.shared.try_borrow().map(|i| i.name.clone()).unwrap_or_default();
        f.debug_struct("KathonStore").field("name", &name).finish_non_exhaustive()
    }
}

fn item(id: &str) -> Result<ItemId, JsValue> {
    id.parse::<ItemId>().map_err(|e| error::input(&e.to_string()))
}

fn device(id: &str) -> Result<kathon_core::identity::DeviceId, JsValue> {
    id.parse().map_err(error::id_error)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct NewBookmark {
    parent: Option<String>,
    index: Option<usize>,
    kind: Option<String>,
    title: String,
    url: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct NewVisit {
    url: String,
    title: Option<String>,
    visited_at: Option<f64>,
    transition: Option<String>,
}

/// Most visits one `recordVisits` call takes.
const MAX_VISITS_PER_CALL: usize = 100_000;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PasswordFields {
    origin: Option<String>,
    username: Option<String>,
    password: Option<String>,
    notes: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct KeyFields {
    name: String,
    #[serde(rename = "type")]
    key_type: Option<String>,
    secret: String,
}

fn transition(text: Option<&str>) -> Transition {
    match text {
        Some("typed") => Transition::Typed,
        Some("bookmark") => Transition::Bookmark,
        Some("reload") => Transition::Reload,
        Some("form") => Transition::Form,
        Some("link") | None => Transition::Link,
        Some(_) => Transition::Other,
    }
}

impl KathonStore {
    /// The store's state for a change, refused while borrowed (a call from inside one of its
    /// own callbacks) or once closed.
    fn open_mut(&self) -> Result<std::cell::RefMut<'_, driver::Inner>, JsValue> {
        let inner = self
            .shared
            .try_borrow_mut()
            .map_err(|_| error::state("busy", "the store is busy (called from inside its own callback)"))?;
        if inner.closed {
            return Err(error::state("closed", "the store is closed"));
        }
        Ok(inner)
    }

    fn engine_mut<T>(&self, f: impl FnOnce(&mut Engine) -> Result<T, JsValue>) -> Result<T, JsValue> {
        let result = {
            let mut inner = self.open_mut()?;
            if inner.locked.is_some() {
                return Err(error::state("locked", "the store is locked: call unlock(passphrase)"));
            }
            let engine = inner
                .engine
                .as_mut()
                .ok_or_else(|| error::state("not-enrolled", "create an identity or pair this browser first"))?;
            f(engine)
        };
        drive(&self.shared);
        result
    }

    fn read<T>(&self, f: impl FnOnce(&kathon_core::model::BrowserState) -> T) -> Result<T, JsValue> {
        let inner = self.shared.try_borrow().map_err(|_| error::state("busy", "the store is busy"))?;
        if inner.closed {
            return Err(error::state("closed", "the store is closed"));
        }
        if inner.locked.is_some() {
            return Err(error::state("locked", "the store is locked: call unlock(passphrase)"));
        }
        let state = inner
            .engine
            .as_ref()
            .and_then(Engine::state)
            .ok_or_else(|| error::state("not-enrolled", "create an identity or pair this browser first"))?;
        Ok(f(state))
    }

    fn change<T>(&self, f: impl FnOnce(&mut Edit<'_, Rng>) -> Result<T, ModelError>) -> Result<T, JsValue> {
        self.engine_mut(|engine| engine.transact(now_ms(), f).map_err(error::engine))
    }
}

#[wasm_bindgen]
impl KathonStore {
    /// Opens (or creates) the store `name` in IndexedDB. A store protected by a passphrase opens
    /// locked: call `unlock`. A tampered or torn record makes this throw a `KathonStorageError`
    /// with code `tampered`.
    #[wasm_bindgen(js_name = open)]
    pub async fn open(name: String) -> Result<KathonStore, JsValue> {
        let db = Rc::new(idb_store::Db::open(&name).await?);
        let endpoint = kathon_core::text::hex(&util::random::<12>()?);
        let shared: Shared = Rc::new(RefCell::new(Inner::new(name, db.clone(), endpoint)));
        // One persistent DTLS certificate per device (ECDSA P-256: what Chromium accepts). A
        // worker has no WebRTC: a store opened there works without sync and makes none.
        let has_webrtc = util::has_webrtc();
        let cert = match db.get_meta("dtls-certificate").await? {
            Some(cert) => cert,
            None if !has_webrtc => JsValue::UNDEFINED,
            None => {
                let algorithm = js_sys::Object::new();
                js_sys::Reflect::set(&algorithm, &"name".into(), &"ECDSA".into())?;
                js_sys::Reflect::set(&algorithm, &"namedCurve".into(), &"P-256".into())?;
                let promise = web_sys::RtcPeerConnection::generate_certificate_with_object(&algorithm)
                    .map_err(|e| error::network("webrtc", &format!("cannot make a DTLS certificate: {e:?}")))?;
                let cert = wasm_bindgen_futures::JsFuture::from(promise).await?;
                db.put_meta("dtls-certificate", &cert).await?;
                cert
            }
        };
        let records = db.load_records().await?;
        let mut identity = None;
        let mut rest = Vec::new();
        for (key, bytes) in records {
            match RecordKey::from_text(&key) {
                Some(RecordKey::Identity) => identity = Some(bytes.to_vec()),
                Some(k) => rest.push((k, bytes)),
                None => return Err(error::storage("tampered", &format!("unknown stored record {key}"))),
            }
        }
        {
            let mut inner = shared.borrow_mut();
            inner.cert = cert.dyn_into::<web_sys::RtcCertificate>().ok();
            match identity {
                None => {}
                Some(sealed) if seal::is_sealed(&sealed) => {
                    inner.locked = Some((sealed, rest.into_iter().map(|(k, b)| (k, b.to_vec())).collect()));
                }
                Some(identity) => {
                    // Copied into wasm one record at a time, each dropped once decoded.
                    let records = rest.into_iter().map(|(k, b)| (k, b.to_vec()));
                    let engine = Engine::load(inner.config.clone(), &identity, records, util::random()?, now_ms())
                        .map_err(|e| error::load(&e))?;
                    inner.engine = Some(engine);
                }
            }
        }
        drive(&shared);
        Ok(KathonStore { shared })
    }

    /// Whether the store is enrolled, locked or closed, and who it is (nobody once closed).
    #[wasm_bindgen(unchecked_return_type = "StoreStatus")]
    pub fn status(&self) -> JsValue {
        let Ok(inner) = self.shared.try_borrow() else { return JsValue::NULL };
        let engine = inner.engine.as_ref();
        to_js(&serde_json::json!({
            "name": inner.name,
            "closed": inner.closed,
            "enrolled": engine.and_then(Engine::identity).is_some(),
            "locked": inner.locked.is_some(),
            "passphraseSet": inner.seal.is_some() || inner.locked.is_some(),
            "identityId": engine.and_then(Engine::identity).map(|i| i.to_string()),
            "deviceId": engine.filter(|e| e.identity().is_some()).map(|e| e.device().to_string()),
            "holdsRootKey": engine.is_some_and(Engine::holds_root_key),
        }))
    }

    /// Creates a new identity with this browser as its first device.
    #[wasm_bindgen(js_name = createIdentity)]
    pub fn create_identity(&self, device_name: &str) -> Result<(), JsValue> {
        {
            let mut inner = self.open_mut()?;
            if inner.engine.as_ref().is_some_and(|e| e.identity().is_some()) || inner.locked.is_some() {
                return Err(error::state("not-enrolled", "this store already belongs to an identity"));
            }
            let engine = Engine::create_identity(inner.config.clone(), device_name, util::random()?, now_ms())
                .map_err(error::engine)?;
            inner.engine = Some(engine);
        }
        drive(&self.shared);
        driver::update_peer_topics(&self.shared);
        Ok(())
    }

    /// Prepares this browser to join an identity with a pairing code shown by one of its
    /// devices. Connect to the bridge; the pairing runs when the device is found, and `pairing`
    /// events show the short authentication string and the result.
    #[wasm_bindgen(js_name = joinWithCode)]
    pub fn join_with_code(&self, code: &str, device_name: &str) -> Result<(), JsValue> {
        let code =
            PairingCode::parse(code).map_err(|e| error::js_error("KathonInputError", "invalid", &e.to_string()))?;
        {
            let mut inner = self.open_mut()?;
            if inner.engine.as_ref().is_some_and(|e| e.identity().is_some()) {
                return Err(error::state("not-enrolled", "this store already belongs to an identity"));
            }
            inner.pairing_topic = Some(kathon_core::signaling::pairing_topic(&code.device_tag));
            let engine = Engine::join(inner.config.clone(), code, device_name, util::random()?, now_ms());
            inner.engine = Some(engine);
        }
        driver::update_peer_topics(&self.shared);
        drive(&self.shared);
        Ok(())
    }

    /// Makes a one-time pairing code for a new device (text; show it as text or QR). Keep this
    /// store connected to the bridge until the new device has joined.
    #[wasm_bindgen(js_name = newPairingCode, unchecked_return_type = "PairingCodeInfo")]
    pub fn new_pairing_code(&self) -> Result<JsValue, JsValue> {
        let now = now_ms();
        let (code, ttl) =
            self.engine_mut(|engine| Ok((engine.new_pairing_code(now).map_err(error::engine)?, 10 * 60 * 1000)))?;
        if let Ok(mut inner) = self.shared.try_borrow_mut() {
            inner.pairing_topic = Some(kathon_core::signaling::pairing_topic(&code.device_tag));
        }
        driver::update_peer_topics(&self.shared);
        Ok(to_js(&serde_json::json!({ "code": code.to_text(), "expiresAt": now.saturating_add(ttl) })))
    }

    /// Answers a pairing request (after comparing the short authentication strings).
    #[wasm_bindgen(js_name = confirmPairing)]
    pub fn confirm_pairing(&self, peer: f64, accept: bool) -> Result<(), JsValue> {
        let peer = peer as u64;
        self.engine_mut(|engine| engine.confirm_pairing(peer, accept, now_ms()).map_err(error::engine))
    }

    /// Protects the stored keys with a passphrase (Argon2id, 64 MiB, t = 3, p = 4). From now on
    /// the identity record is stored only sealed, and opening the store needs `unlock`.
    #[wasm_bindgen(js_name = setPassphrase)]
    pub fn set_passphrase(&self, passphrase: &str) -> Result<(), JsValue> {
        if passphrase.chars().count() < 8 {
            return Err(error::input("a passphrase needs at least 8 characters"));
        }
        if let Ok(mut inner) = self.shared.try_borrow_mut() {
            inner.seal = Some(driver::SealKey { passphrase: zeroize::Zeroizing::new(passphrase.to_owned()) });
        }
        self.engine_mut(|engine| {
            engine.persist_identity();
            Ok(())
        })
    }

    /// Whether `passphrase` is the one protecting this store — for asking the user again before
    /// showing secrets. Compared in constant time; `false` when no passphrase is set.
    #[wasm_bindgen(js_name = checkPassphrase)]
    pub fn check_passphrase(&self, passphrase: &str) -> bool {
        let Ok(inner) = self.shared.try_borrow() else { return false };
        // `blake3::Hash` compares in constant time.
        inner
            .seal
            .as_ref()
            .is_some_and(|s| blake3::hash(s.passphrase.as_bytes()) == blake3::hash(passphrase.as_bytes()))
    }

    /// Unlocks a store protected by a passphrase.
    pub fn unlock(&self, passphrase: &str) -> Result<(), JsValue> {
        {
            let mut inner = self.open_mut()?;
            let Some((sealed, records)) = inner.locked.take() else { return Ok(()) };
            let Some(identity) = seal::open(passphrase, &sealed) else {
                inner.locked = Some((sealed, records));
                return Err(error::js_error("KathonVaultError", "wrong-passphrase", "wrong passphrase"));
            };
            let engine = Engine::load(inner.config.clone(), &identity, records, util::random()?, now_ms())
                .map_err(|e| error::load(&e))?;
            inner.engine = Some(engine);
            inner.seal = Some(driver::SealKey { passphrase: zeroize::Zeroizing::new(passphrase.to_owned()) });
        }
        drive(&self.shared);
        driver::update_peer_topics(&self.shared);
        Ok(())
    }

    /// Listens to events of `kind` (`change`, `committed`, `peers`, `pairing`, `alert`,
    /// `error`, or `*`). Returns a function that stops listening.
    pub fn on(&self, kind: &str, listener: js_sys::Function) -> Result<js_sys::Function, JsValue> {
        let id = {
            let mut inner = self.open_mut()?;
            let id = inner.next_listener;
            inner.next_listener = inner.next_listener.saturating_add(1);
            inner.listeners.push((id, kind.to_owned(), listener));
            id
        };
        let weak = Rc::downgrade(&self.shared);
        let off = Closure::once_into_js(move || {
            if let Some(shared) = weak.upgrade()
                && let Ok(mut inner) = shared.try_borrow_mut()
            {
                inner.listeners.retain(|(i, _, _)| *i != id);
            }
        });
        Ok(off.unchecked_into())
    }

    // --- sync ----------------------------------------------------------------------------------

    /// Connects to the bridge on this machine (default `ws://127.0.0.1:7710/ws`) for signaling.
    /// The bridge is untrusted: the engine's handshake authenticates every peer. Throws
    /// `KathonNetworkError` `webrtc` where there is no WebRTC (in a worker).
    #[wasm_bindgen(js_name = connectBridge)]
    pub fn connect_bridge(&self, url: Option<String>) -> Result<(), JsValue> {
        drop(self.open_mut()?);
        util::require_webrtc()?;
        let url = url.unwrap_or_else(|| "ws://127.0.0.1:7710/ws".to_owned());
        let ws = web_sys::WebSocket::new(&url)
            .map_err(|e| error::network("signaling", &format!("cannot open {url}: {e:?}")))?;
        let weak = Rc::downgrade(&self.shared);
        let on_open = Closure::<dyn FnMut(JsValue)>::new({
            let weak = weak.clone();
            move |_| {
                if let Some(shared) = weak.upgrade() {
                    driver::update_peer_topics(&shared);
                    driver::emit(&shared, "peers", to_js(&serde_json::json!({"bridge": "connected"})));
                }
            }
        });
        let on_message = Closure::<dyn FnMut(JsValue)>::new({
            let weak = weak.clone();
            move |event: JsValue| {
                let Some(shared) = weak.upgrade() else { return };
                if let Some(text) = event.dyn_ref::<web_sys::MessageEvent>().and_then(|e| e.data().as_string()) {
                    driver::handle_signal_text(&shared, &text);
                }
            }
        });
        let on_close = Closure::<dyn FnMut(JsValue)>::new({
            let url = url.clone();
            move |_| {
                let Some(shared) = weak.upgrade() else { return };
                let reconnect = shared.try_borrow_mut().map(|mut i| {
                    i.status.bridge = "disconnected".into();
                    !i.closed && matches!(&i.signaling, Some(driver::SignalingLink::Socket { url: u, .. }) if *u == url)
                });
                driver::emit(&shared, "peers", to_js(&serde_json::json!({"bridge": "disconnected"})));
                if reconnect.unwrap_or(false) {
                    let url = url.clone();
                    wasm_bindgen_futures::spawn_local(async move {
                        util::sleep(2_000).await;
                        if !shared.try_borrow().is_ok_and(|i| i.closed) {
                            let _ = KathonStore { shared }.connect_bridge(Some(url));
                        }
                    });
                }
            }
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        let mut inner = self.open_mut()?;
        if let Some(driver::SignalingLink::Socket { ws: old, .. }) = inner.signaling.take() {
            old.set_onclose(None);
            let _ = old.close();
        }
        inner.status.bridge = url.clone();
        inner.signaling =
            Some(driver::SignalingLink::Socket { ws, _closures: vec![on_open, on_message, on_close], url });
        Ok(())
    }

    /// Uses `send` (called with each outgoing signaling message, a JSON string) instead of a
    /// WebSocket, and returns the function to call with each incoming one. For custom transports
    /// and tests.
    #[wasm_bindgen(js_name = attachSignaling)]
    pub fn attach_signaling(&self, send: js_sys::Function) -> Result<js_sys::Function, JsValue> {
        util::require_webrtc()?;
        {
            let mut inner = self.open_mut()?;
            inner.signaling = Some(driver::SignalingLink::Custom(send));
            inner.status.bridge = "custom".into();
        }
        driver::update_peer_topics(&self.shared);
        let weak = Rc::downgrade(&self.shared);
        let receive = Closure::<dyn FnMut(String)>::new(move |text: String| {
            if let Some(shared) = weak.upgrade() {
                driver::handle_signal_text(&shared, &text);
            }
        });
        Ok(receive.into_js_value().unchecked_into())
    }

    /// The sync panel's figures.
    #[wasm_bindgen(js_name = syncStatus, unchecked_return_type = "SyncStatus")]
    pub fn sync_status(&self) -> JsValue {
        let Ok(inner) = self.shared.try_borrow() else { return JsValue::NULL };
        let connected = inner.engine.as_ref().map_or(0, |e| e.connected().len());
        let pending = inner.engine.as_ref().and_then(Engine::state).map_or(0, |s| s.pending_len());
        to_js(&serde_json::json!({
            "bridge": inner.status.bridge,
            "peersFound": inner.status.peers_found,
            "connected": connected,
            "lastSyncMs": inner.status.last_sync_ms,
            "lastError": inner.status.last_error,
            "pendingStorage": inner.status.pending_storage,
            "pendingEnvelopes": pending,
        }))
    }

    /// This identity's devices.
    #[wasm_bindgen(unchecked_return_type = "Device[]")]
    pub fn devices(&self) -> Result<JsValue, JsValue> {
        let connected: Vec<_> = self
            .shared
            .try_borrow()
            .ok()
            .and_then(|i| i.engine.as_ref().map(|e| e.connected().into_values().collect()))
            .unwrap_or_default();
        self.read(|s| {
            let list: Vec<serde_json::Value> = s
                .registry()
                .certificates()
                .map(|c| {
                    serde_json::json!({
                        "id": c.device().to_string(),
                        "name": c.name().as_str(),
                        "thisDevice": c.device() == s.device(),
                        "revoked": s.registry().revocation(c.device()).is_some(),
                        "connected": connected.contains(c.device()),
                    })
                })
                .collect();
            to_js(&list)
        })
    }

    /// Revokes a lost device: its later writes are refused everywhere and a new vault key
    /// re-seals every secret.
    #[wasm_bindgen(js_name = revokeDevice)]
    pub fn revoke_device(&self, device_id: &str) -> Result<(), JsValue> {
        let device = device(device_id)?;
        self.engine_mut(|engine| engine.revoke(device, now_ms()).map_err(error::engine))
    }

    /// How much the replica holds: `{bookmarks, history, passwords, keys, workspaces, envelopes}`.
    #[wasm_bindgen(unchecked_return_type = "Counts")]
    pub fn counts(&self) -> Result<JsValue, JsValue> {
        self.read(|s| to_js(&s.counts()))
    }

    /// A hash of the replica's content: equal on devices holding the same data.
    pub fn digest(&self) -> Result<String, JsValue> {
        self.read(|s| s.digest())
    }

    /// Re-verifies every stored signature (the full audit). Resolves to the failures.
    pub fn audit(&self) -> Result<JsValue, JsValue> {
        let inner = self.shared.try_borrow().map_err(|_| error::state("busy", "the store is busy"))?;
        if inner.closed {
            return Err(error::state("closed", "the store is closed"));
        }
        let failures: Vec<(String, String)> = inner
            .engine
            .as_ref()
            .map(|e| e.audit().into_iter().map(|(id, why)| (id.to_string(), why)).collect())
            .unwrap_or_default();
        Ok(to_js(&failures))
    }

    // --- bookmarks -----------------------------------------------------------------------------

    /// Adds a bookmark, folder or separator; returns its ID.
    #[wasm_bindgen(js_name = addBookmark)]
    pub fn add_bookmark(
        &self,
        #[wasm_bindgen(unchecked_param_type = "NewBookmark")] node: JsValue,
    ) -> Result<String, JsValue> {
        let node: NewBookmark = from_js(node, "bookmark")?;
        let parent = item(node.parent.as_deref().unwrap_or("toolbar"))?;
        let kind = match node.kind.as_deref() {
            Some("folder") => NodeKind::Folder,
            Some("separator") => NodeKind::Separator,
            _ => NodeKind::Bookmark,
        };
        let id = self.change(|e| e.add_bookmark(parent, node.index, kind, &node.title, node.url.as_deref()))?;
        Ok(id.to_string())
    }

    /// Changes a node's title and/or URL.
    #[wasm_bindgen(js_name = editBookmark)]
    pub fn edit_bookmark(&self, id: &str, title: Option<String>, url: Option<String>) -> Result<(), JsValue> {
        let id = item(id)?;
        self.change(|e| e.edit_bookmark(&id, title.as_deref(), url.as_deref()))
    }

    /// Moves a node under `parent` at `index` (default: the end).
    #[wasm_bindgen(js_name = moveBookmark)]
    pub fn move_bookmark(&self, id: &str, parent: &str, index: Option<usize>) -> Result<(), JsValue> {
        let (id, parent) = (item(id)?, item(parent)?);
        self.change(|e| e.move_bookmark(&id, parent, index))
    }

    /// Deletes a node and everything in it; returns how many nodes went.
    #[wasm_bindgen(js_name = deleteBookmark)]
    pub fn delete_bookmark(&self, id: &str) -> Result<usize, JsValue> {
        let id = item(id)?;
        self.change(|e| e.delete_bookmark(&id))
    }

    /// The whole tree, nested.
    #[wasm_bindgen(js_name = bookmarkTree, unchecked_return_type = "BookmarkTree")]
    pub fn bookmark_tree(&self) -> Result<JsValue, JsValue> {
        self.read(|s| to_js(&s.bookmarks().to_json()))
    }

    /// The children of a folder or root.
    #[wasm_bindgen(js_name = bookmarkChildren, unchecked_return_type = "BookmarkNode[]")]
    pub fn bookmark_children(&self, parent: &str) -> Result<JsValue, JsValue> {
        let parent = item(parent)?;
        self.read(|s| {
            let tree = s.bookmarks();
            let nodes: Vec<_> = tree.children(&parent).iter().filter_map(|c| tree.get(c)).collect();
            to_js(&nodes)
        })
    }

    /// Bookmarks and folders whose title or URL contains `query`.
    #[wasm_bindgen(js_name = searchBookmarks, unchecked_return_type = "BookmarkNode[]")]
    pub fn search_bookmarks(&self, query: &str) -> Result<JsValue, JsValue> {
        self.read(|s| to_js(&s.bookmarks().search(query)))
    }

    // --- history -------------------------------------------------------------------------------

    /// Records a visit; returns its ID.
    #[wasm_bindgen(js_name = recordVisit)]
    pub fn record_visit(
        &self,
        #[wasm_bindgen(unchecked_param_type = "NewVisit")] visit: JsValue,
    ) -> Result<String, JsValue> {
        let v: NewVisit = from_js(visit, "visit")?;
        let at = v.visited_at.map_or_else(now_ms, |t| t.max(0.0) as u64);
        let id = self.change(|e| {
            e.record_visit(&v.url, v.title.as_deref().unwrap_or(""), at, transition(v.transition.as_deref()))
        })?;
        Ok(id.to_string())
    }

    /// Records many visits in one signed change (importing a browser's history); returns how
    /// many. At most 100,000 per call.
    #[wasm_bindgen(js_name = recordVisits)]
    pub fn record_visits(
        &self,
        #[wasm_bindgen(unchecked_param_type = "NewVisit[]")] visits: JsValue,
    ) -> Result<usize, JsValue> {
        let visits: js_sys::Array = visits.dyn_into().map_err(|_| error::input("visits: not an array"))?;
        let count = usize::try_from(visits.length()).unwrap_or(usize::MAX);
        if count > MAX_VISITS_PER_CALL {
            return Err(error::input(&format!("at most {MAX_VISITS_PER_CALL} visits per call")));
        }
        let now = now_ms();
        // Each visit is decoded as it is recorded: decoding the whole array first held a copy of
        // it at the import's peak (100,000 visits: the load's wasm memory 139.4 MB, 128.5 without
        // it, in the browser bench). A visit that does not decode rolls all back.
        let mut undecodable = None;
        let recorded = self.change(|e| {
            for (index, value) in visits.iter().enumerate() {
                let v: NewVisit = match from_js(value, &format!("visits[{index}]")) {
                    Ok(v) => v,
                    Err(js) => {
                        undecodable = Some(js);
                        return Err(ModelError::Invalid(kathon_core::error::DecodeError::NonCanonical {
                            what: "visits",
                            reason: "a visit does not decode",
                        }));
                    }
                };
                let at = v.visited_at.map_or(now, |t| t.max(0.0) as u64);
                e.record_visit(&v.url, v.title.as_deref().unwrap_or(""), at, transition(v.transition.as_deref()))?;
            }
            Ok(count)
        });
        match undecodable {
            Some(js) => Err(js),
            None => recorded,
        }
    }

    /// Visits, most recent first (`query` filters by URL or title; `limit` caps the count).
    #[wasm_bindgen(unchecked_return_type = "Visit[]")]
    pub fn history(&self, query: Option<String>, limit: Option<usize>) -> Result<JsValue, JsValue> {
        let limit = limit.unwrap_or(500);
        self.read(|s| {
            let visits: Vec<_> = match query.as_deref() {
                Some(q) if !q.is_empty() => s.search_history(q).take(limit).collect(),
                _ => s.history().take(limit).collect(),
            };
            to_js(&visits)
        })
    }

    /// Deletes every visit to `url`, on every device.
    #[wasm_bindgen(js_name = deleteHistoryUrl)]
    pub fn delete_history_url(&self, url: &str) -> Result<(), JsValue> {
        self.change(|e| {
            e.delete_history_url(url);
            Ok(())
        })
    }

    /// Deletes every visit made between `from` and `to` (ms since the epoch).
    #[wasm_bindgen(js_name = deleteHistoryRange)]
    pub fn delete_history_range(&self, from: f64, to: f64) -> Result<(), JsValue> {
        self.change(|e| {
            e.delete_history_range(from.max(0.0) as u64, to.max(0.0) as u64);
            Ok(())
        })
    }

    /// Deletes all history, on every device.
    #[wasm_bindgen(js_name = deleteAllHistory)]
    pub fn delete_all_history(&self) -> Result<(), JsValue> {
        self.change(|e| {
            e.delete_all_history();
            Ok(())
        })
    }

    // --- passwords -----------------------------------------------------------------------------

    /// Password entries (secrets stay sealed: use `revealPassword`).
    #[wasm_bindgen(unchecked_return_type = "PasswordEntry[]")]
    pub fn passwords(&self) -> Result<JsValue, JsValue> {
        self.read(|s| to_js(&s.passwords()))
    }

    /// Adds a password entry; returns its ID.
    #[wasm_bindgen(js_name = addPassword)]
    pub fn add_password(
        &self,
        #[wasm_bindgen(unchecked_param_type = "PasswordFields")] fields: JsValue,
    ) -> Result<String, JsValue> {
        let f: PasswordFields = from_js(fields, "password entry")?;
        let id = self.change(|e| {
            e.add_password(
                f.origin.as_deref().unwrap_or(""),
                f.username.as_deref().unwrap_or(""),
                f.password.as_deref().unwrap_or(""),
                f.notes.as_deref().unwrap_or(""),
            )
        })?;
        Ok(id.to_string())
    }

    /// Changes some fields of a password entry (each field merges on its own).
    #[wasm_bindgen(js_name = updatePassword)]
    pub fn update_password(
        &self,
        id: &str,
        #[wasm_bindgen(unchecked_param_type = "PasswordFields")] fields: JsValue,
    ) -> Result<(), JsValue> {
        let id = item(id)?;
        let f: PasswordFields = from_js(fields, "password fields")?;
        self.change(|e| {
            e.set_password_fields(
                &id,
                f.origin.as_deref(),
                f.username.as_deref(),
                f.password.as_deref(),
                f.notes.as_deref(),
            )
        })
    }

    /// Deletes a password entry.
    #[wasm_bindgen(js_name = deletePassword)]
    pub fn delete_password(&self, id: &str) -> Result<(), JsValue> {
        let id = item(id)?;
        self.change(|e| e.delete_password(&id))
    }

    /// Opens a secret field (`password` or `notes`).
    #[wasm_bindgen(js_name = revealPassword)]
    pub fn reveal_password(&self, id: &str, field: Option<String>) -> Result<String, JsValue> {
        let id = item(id)?;
        let field = field.unwrap_or_else(|| "password".to_owned());
        if field != "password" && field != "notes" {
            return Err(error::input("the secret fields are `password` and `notes`"));
        }
        self.read(|s| s.reveal_password_field(&id, &field))?.map_err(error::model)
    }

    // --- keys ----------------------------------------------------------------------------------

    /// Key records.
    #[wasm_bindgen(unchecked_return_type = "KeyRecord[]")]
    pub fn keys(&self) -> Result<JsValue, JsValue> {
        self.read(|s| to_js(&s.keys()))
    }

    /// Adds a key record (`{name, type, secret}`); returns its ID.
    #[wasm_bindgen(js_name = addKey)]
    pub fn add_key(
        &self,
        #[wasm_bindgen(unchecked_param_type = "{ name: string; type?: string; secret: string }")] fields: JsValue,
    ) -> Result<String, JsValue> {
        let f: KeyFields = from_js(fields, "key record")?;
        let id = self.change(|e| e.add_key(&f.name, f.key_type.as_deref().unwrap_or("other"), &f.secret))?;
        Ok(id.to_string())
    }

    /// Renames a key record.
    #[wasm_bindgen(js_name = renameKey)]
    pub fn rename_key(&self, id: &str, name: &str) -> Result<(), JsValue> {
        let id = item(id)?;
        self.change(|e| e.rename_key(&id, name))
    }

    /// Deletes a key record.
    #[wasm_bindgen(js_name = deleteKey)]
    pub fn delete_key(&self, id: &str) -> Result<(), JsValue> {
        let id = item(id)?;
        self.change(|e| e.delete_key(&id))
    }

    /// Opens a key record's secret.
    #[wasm_bindgen(js_name = revealKey)]
    pub fn reveal_key(&self, id: &str) -> Result<String, JsValue> {
        let id = item(id)?;
        self.read(|s| s.reveal_key(&id))?.map_err(error::model)
    }

    // --- workspaces ----------------------------------------------------------------------------

    /// Publishes this browser's open windows and tabs.
    #[wasm_bindgen(js_name = setDeviceLayout)]
    pub fn set_device_layout(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Layout")] layout: JsValue,
    ) -> Result<(), JsValue> {
        let layout: Layout = from_js(layout, "layout")?;
        self.change(|e| e.set_device_layout(&layout))
    }

    /// Every device's published windows and tabs, by device ID.
    #[wasm_bindgen(js_name = deviceLayouts, unchecked_return_type = "Record<string, Layout>")]
    pub fn device_layouts(&self) -> Result<JsValue, JsValue> {
        self.read(|s| {
            // Inserted, not `collect()`ed: a collect sorts first, more code in the `.wasm`.
            let mut map: std::collections::BTreeMap<String, Layout> = std::collections::BTreeMap::new();
            map.extend(s.device_layouts().into_iter().map(|(d, l)| (d.to_string(), l)));
            to_js(&map)
        })
    }

    /// Saved, shared workspaces.
    #[wasm_bindgen(js_name = savedWorkspaces, unchecked_return_type = "SavedWorkspace[]")]
    pub fn saved_workspaces(&self) -> Result<JsValue, JsValue> {
        self.read(|s| to_js(&s.named_workspaces()))
    }

    /// Saves a workspace any device can open; returns its ID.
    #[wasm_bindgen(js_name = saveWorkspace)]
    pub fn save_workspace(
        &self,
        name: &str,
        #[wasm_bindgen(unchecked_param_type = "Layout")] layout: JsValue,
    ) -> Result<String, JsValue> {
        let layout: Layout = from_js(layout, "layout")?;
        Ok(self.change(|e| e.save_workspace(name, &layout))?.to_string())
    }

    /// Renames and/or changes a saved workspace.
    #[wasm_bindgen(js_name = updateWorkspace)]
    pub fn update_workspace(
        &self,
        id: &str,
        name: Option<String>,
        #[wasm_bindgen(unchecked_param_type = "Layout | undefined")] layout: JsValue,
    ) -> Result<(), JsValue> {
        let id = item(id)?;
        let layout: Option<Layout> =
            if layout.is_undefined() || layout.is_null() { None } else { Some(from_js(layout, "layout")?) };
        self.change(|e| e.update_workspace(&id, name.as_deref(), layout.as_ref()))
    }

    /// Deletes a saved workspace.
    #[wasm_bindgen(js_name = deleteWorkspace)]
    pub fn delete_workspace(&self, id: &str) -> Result<(), JsValue> {
        let id = item(id)?;
        self.change(|e| e.delete_workspace(&id))
    }

    // --- import / export -----------------------------------------------------------------------
    // File formats are read and written by the import/export module, which a page downloads the
    // first time it calls one of these (see `formats`); so they return promises.

    /// Imports a Netscape bookmark file (what every browser exports).
    #[wasm_bindgen(js_name = importBookmarksHtml, unchecked_return_type = "ImportReport")]
    pub async fn import_bookmarks_html(&self, text: js_sys::JsString) -> Result<JsValue, JsValue> {
        let file = formats::parse_bookmarks(formats::BookmarkFormat::Html, &text).await?;
        Ok(to_js(&self.change(|e| e.import_bookmarks(&file))?))
    }

    /// Imports Chromium's `Bookmarks` JSON file.
    #[wasm_bindgen(js_name = importChromiumBookmarks, unchecked_return_type = "ImportReport")]
    pub async fn import_chromium_bookmarks(&self, text: js_sys::JsString) -> Result<JsValue, JsValue> {
        let file = formats::parse_bookmarks(formats::BookmarkFormat::ChromiumJson, &text).await?;
        Ok(to_js(&self.change(|e| e.import_bookmarks(&file))?))
    }

    /// Imports passwords from CSV (Chrome, Firefox or Bitwarden layout).
    #[wasm_bindgen(js_name = importPasswordsCsv, unchecked_return_type = "ImportReport")]
    pub async fn import_passwords_csv(&self, text: js_sys::JsString) -> Result<JsValue, JsValue> {
        let rows = formats::parse_passwords(&text).await?;
        Ok(to_js(&self.change(|e| e.import_passwords(&rows))?))
    }

    /// Exports the bookmarks as a Netscape bookmark file.
    #[wasm_bindgen(js_name = exportBookmarksHtml, unchecked_return_type = "string")]
    pub async fn export_bookmarks_html(&self) -> Result<JsValue, JsValue> {
        let file = self.read(|s| BookmarkFile::from_tree(s.bookmarks()))?;
        formats::write_bookmarks(formats::BookmarkFormat::Html, &file).await
    }

    /// Exports the bookmarks as Chromium's `Bookmarks` JSON.
    #[wasm_bindgen(js_name = exportChromiumBookmarks, unchecked_return_type = "string")]
    pub async fn export_chromium_bookmarks(&self) -> Result<JsValue, JsValue> {
        let file = self.read(|s| BookmarkFile::from_tree(s.bookmarks()))?;
        formats::write_bookmarks(formats::BookmarkFormat::ChromiumJson, &file).await
    }

    /// Exports the passwords as CSV (Chrome layout). Contains secrets in the clear.
    #[wasm_bindgen(js_name = exportPasswordsCsv, unchecked_return_type = "string")]
    pub async fn export_passwords_csv(&self) -> Result<JsValue, JsValue> {
        let rows = self.read(kathon_core::model::import::password_rows)?.map_err(error::model)?;
        formats::write_passwords(&rows).await
    }

    // --- held mass deletions -------------------------------------------------------------------

    /// Remote batches held because they would delete many bookmarks: `[{envelope, deletes}]`.
    #[wasm_bindgen(js_name = heldDeletions)]
    pub fn held_deletions(&self) -> Result<JsValue, JsValue> {
        self.read(|s| {
            let list: Vec<serde_json::Value> =
                s.held().map(|(id, n)| serde_json::json!({"envelope": id.to_string(), "deletes": n})).collect();
            to_js(&list)
        })
    }

    /// Applies a held mass deletion.
    #[wasm_bindgen(js_name = acceptHeldDeletion)]
    pub fn accept_held_deletion(&self, envelope: &str) -> Result<(), JsValue> {
        let id = envelope_id(envelope)?;
        self.engine_mut(|engine| engine.accept_held(&id, now_ms()).map_err(error::engine))
    }

    /// Refuses a held mass deletion: every deleted bookmark comes back, on every device.
    #[wasm_bindgen(js_name = rejectHeldDeletion)]
    pub fn reject_held_deletion(&self, envelope: &str) -> Result<(), JsValue> {
        let id = envelope_id(envelope)?;
        self.engine_mut(|engine| engine.reject_held(&id, now_ms()).map_err(error::engine))
    }

    /// Waits until every change made so far is durable in IndexedDB. Rejects with the storage
    /// error if a write fails (the changes stay queued and are retried), or if the writes make
    /// no progress for 30 s.
    pub async fn flush(&self) -> Result<(), JsValue> {
        // Timers in a chain are clamped to 4 ms anyway.
        const POLL_MS: i32 = 4;
        const STALL_POLLS: u32 = 30_000 / POLL_MS.unsigned_abs();
        let mut last_pending = usize::MAX;
        let mut stalled = 0u32;
        // Durability is wanted now: the changes waiting for the commit window go at once.
        if let Ok(mut inner) = self.shared.try_borrow_mut()
            && let Some(engine) = inner.engine.as_mut()
        {
            engine.seal_waiting();
        }
        driver::drive(&self.shared);
        loop {
            let pending = self.shared.try_borrow().map(|i| {
                let queued = i.storage_queue.len().saturating_add(i.engine.as_ref().map_or(0, |e| e.pending_storage()));
                (i.storage_busy || queued > 0, queued, i.storage_error.clone())
            });
            match pending {
                Ok((false, _, _)) => return Ok(()),
                Ok((true, _, Some((code, message)))) => return Err(error::storage(&code, &message)),
                Ok((true, queued, None)) if queued != last_pending => {
                    last_pending = queued;
                    stalled = 0;
                }
                Ok(_) | Err(_) => {}
            }
            stalled = stalled.saturating_add(1);
            if stalled > STALL_POLLS {
                return Err(error::storage("storage", "IndexedDB made no progress for 30 s"));
            }
            util::sleep(POLL_MS).await;
        }
    }

    /// Closes the store: connections, the bridge, IndexedDB. Changes made before it are still
    /// stored (`flush()` after `close()` resolves once they are); then the replica and the keys
    /// are dropped. Every call but `status()`, `syncStatus()` and `flush()` then throws
    /// `KathonStateError` `closed`.
    pub fn close(&self) {
        let Ok(mut inner) = self.shared.try_borrow_mut() else { return };
        inner.closed = true;
        for (_, peer) in std::mem::take(&mut inner.rtc) {
            peer.shut();
        }
        if let Some(driver::SignalingLink::Socket { ws, .. }) = inner.signaling.take() {
            ws.set_onclose(None);
            ws.set_onmessage(None);
            ws.set_onopen(None);
            ws.set_onerror(None);
            let _ = ws.close();
        }
        if let Some((handle, _)) = inner.timer.take() {
            util::clear_timeout(handle);
        }
        // Nothing made before `close` is dropped: changes waiting for the commit window are
        // sealed, and the database closes once the writer has stored everything queued (a
        // closed store takes no new changes).
        let fields = &mut *inner;
        if let Some(engine) = fields.engine.as_mut() {
            engine.seal_waiting();
            while let Some(batch) = engine.poll_storage() {
                fields.storage_queue.push_back(batch);
            }
        }
        if inner.storage_busy {
            return; // the running writer closes the database when it is done
        }
        if inner.storage_queue.is_empty() {
            inner.release();
            return;
        }
        inner.storage_busy = true;
        drop(inner);
        wasm_bindgen_futures::spawn_local(driver::write_storage(self.shared.clone()));
    }
}

fn envelope_id(text: &str) -> Result<kathon_core::envelope::EnvelopeId, JsValue> {
    let bytes = kathon_core::text::hex_32(text).ok_or_else(|| error::input("an envelope ID is 64 hex digits"))?;
    Ok(kathon_core::envelope::EnvelopeId(kathon_core::hash::Hash::from_bytes(bytes)))
}
