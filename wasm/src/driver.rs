//! The browser driver of the engine: it moves bytes between the engine and the data channels,
//! records between the engine and IndexedDB, signals between the engine's peers and the bridge,
//! and time into the engine. It makes no protocol decisions.
//!
//! Everything lives in one `Rc<RefCell<Inner>>`. A borrow is never held across an `await` or
//! while calling back into JavaScript (event listeners run after the borrow is released), so a
//! listener may call back into the store without a re-entrancy trap.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use js_sys::{Array, Uint8Array};
use kathon_core::signaling::{RtcSignal, Signal};
use kathon_core::sync::{Config, Engine, EngineEvent, PeerKey, RecordKey, StorageBatch};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{RtcDataChannel, RtcPeerConnection, RtcSdpType, RtcSessionDescriptionInit};

use crate::idb_store::Db;
use crate::util::{now_ms, trace, warn};

pub(crate) type Shared = Rc<RefCell<Inner>>;

/// What the passphrase protects: the key derived from it, so re-sealing needs no new Argon2 run.
pub(crate) struct SealKey {
    pub(crate) passphrase: zeroize::Zeroizing<String>,
}

/// A WebRTC connection to one remote endpoint.
pub(crate) struct RtcPeer {
    pub(crate) pc: RtcPeerConnection,
    pub(crate) dc: RtcDataChannel,
    pub(crate) up: bool,
    /// The DTLS fingerprint in the remote description this side applied, kept from its SDP: the
    /// channel can open before `remoteDescription` reads back (seen in CI, two stores in one
    /// page), and a session is bound to the fingerprints when it opens.
    pub(crate) remote_fp: Option<kathon_core::sync::Fingerprint>,
    _closures: Vec<Closure<dyn FnMut(JsValue)>>,
}

impl RtcPeer {
    /// Closes the connection. Its handlers are detached first: the browser still fires `close`
    /// and state events after `close()`, and they must not reach closures about to be dropped.
    pub(crate) fn shut(self) {
        self.dc.set_onopen(None);
        self.dc.set_onmessage(None);
        self.dc.set_onclose(None);
        self.dc.set_onbufferedamountlow(None);
        self.pc.set_onconnectionstatechange(None);
        self.pc.set_onicegatheringstatechange(None);
        self.pc.close();
    }
}

/// How signals reach the bridge.
pub(crate) enum SignalingLink {
    /// A WebSocket to the local bridge.
    Socket { ws: web_sys::WebSocket, _closures: Vec<Closure<dyn FnMut(JsValue)>>, url: String },
    /// A function the app supplied (tests, or a custom transport).
    Custom(js_sys::Function),
}

/// Counters for the sync panel.
#[derive(Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SyncStatus {
    pub(crate) bridge: String,
    pub(crate) peers_found: usize,
    pub(crate) last_sync_ms: u64,
    pub(crate) last_error: Option<String>,
    pub(crate) pending_storage: usize,
}

/// A sealed identity record and the other records, waiting for the passphrase.
pub(crate) type Locked = (Vec<u8>, Vec<(RecordKey, Vec<u8>)>);

pub(crate) struct Inner {
    pub(crate) name: String,
    pub(crate) db: Rc<Db>,
    pub(crate) config: Config,
    pub(crate) engine: Option<Engine>,
    /// The stored identity, sealed, waiting for `unlock`.
    pub(crate) locked: Option<Locked>,
    pub(crate) seal: Option<SealKey>,
    pub(crate) storage_queue: VecDeque<StorageBatch>,
    pub(crate) storage_busy: bool,
    pub(crate) storage_retry_at: u64,
    /// The last storage failure `(code, message)`, cleared by the next successful write.
    pub(crate) storage_error: Option<(String, String)>,
    pub(crate) cert: Option<web_sys::RtcCertificate>,
    pub(crate) endpoint: String,
    pub(crate) signaling: Option<SignalingLink>,
    pub(crate) rtc: BTreeMap<PeerKey, RtcPeer>,
    pub(crate) by_endpoint: BTreeMap<String, PeerKey>,
    pub(crate) known_endpoints: BTreeMap<String, String>,
    /// How long the offering side waits before dialling an endpoint again, doubled after each
    /// connection that ended without an authenticated session (up to `MAX_REDIAL_MS`).
    pub(crate) redial_ms: BTreeMap<String, i32>,
    pub(crate) next_peer: PeerKey,
    pub(crate) listeners: Vec<(u32, String, js_sys::Function)>,
    pub(crate) next_listener: u32,
    /// The armed timer: its handle and when it fires (ms).
    pub(crate) timer: Option<(i32, u64)>,
    /// The one closure every timer calls (made once: a closure per drive cost real time).
    pub(crate) timer_closure: Option<Closure<dyn FnMut()>>,
    pub(crate) pairing_topic: Option<String>,
    pub(crate) status: SyncStatus,
    pub(crate) closed: bool,
}

impl Inner {
    pub(crate) fn new(name: String, db: Rc<Db>, endpoint: String) -> Self {
        Self {
            name,
            db,
            config: Config { group_commit_ms: GROUP_COMMIT_MS, ..Config::default() },
            engine: None,
            locked: None,
            seal: None,
            storage_queue: VecDeque::new(),
            storage_busy: false,
            storage_retry_at: 0,
            storage_error: None,
            cert: None,
            endpoint,
            signaling: None,
            rtc: BTreeMap::new(),
            by_endpoint: BTreeMap::new(),
            known_endpoints: BTreeMap::new(),
            redial_ms: BTreeMap::new(),
            next_peer: 1,
            listeners: Vec::new(),
            next_listener: 1,
            timer: None,
            timer_closure: None,
            pairing_topic: None,
            status: SyncStatus::default(),
            closed: false,
        }
    }

    /// Ends a closed store once its last write is stored: closes the database and drops the
    /// replica, the keys and the listeners. Their memory is reused by the next store at once
    /// rather than when the page's garbage collector reaches this object, and the keys are
    /// zeroized now (they zeroize as they drop).
    pub(crate) fn release(&mut self) {
        self.db.close();
        self.engine = None;
        self.locked = None;
        self.seal = None;
        self.cert = None;
        self.listeners.clear();
        self.known_endpoints.clear();
        self.redial_ms.clear();
    }
}

/// Runs the engine after an input: time, frames out, storage, events, the next timer.
pub(crate) fn drive(shared: &Shared) {
    let mut events = Vec::new();
    let mut refused = Vec::new();
    {
        let Ok(mut guard) = shared.try_borrow_mut() else {
            // Re-entered from a callback: run again right after.
            schedule(shared, 0);
            return;
        };
        let inner = &mut *guard;
        if inner.closed {
            return;
        }
        let now = now_ms();
        let Some(engine) = inner.engine.as_mut() else { return };
        engine.handle_timeout(now);
        // Frames: send until the data channel's buffer fills; `bufferedamountlow` resumes.
        while let Some(t) = engine.poll_transmit() {
            if let Some(peer) = inner.rtc.get(&t.peer)
                && peer.up
            {
                if peer.dc.send_with_u8_array(&t.frame).is_err() {
                    warn("kathon: a data channel refused a frame");
                }
                if peer.dc.buffered_amount() < 64 * 1024 {
                    engine.handle_drained(t.peer);
                }
            }
        }
        while let Some(batch) = engine.poll_storage() {
            inner.storage_queue.push_back(batch);
        }
        while let Some(e) = engine.poll_event() {
            match &e {
                EngineEvent::Committed(_) => inner.status.last_sync_ms = now,
                EngineEvent::PeerRefused { peer, error } => {
                    trace(&format!("kathon: session {peer} refused: {error}"));
                    refused.push(*peer);
                }
                EngineEvent::PeerAuthenticated { peer, name, .. } => {
                    trace(&format!("kathon: session {peer} authenticated ({name})"));
                    let endpoint = inner.by_endpoint.iter().find(|(_, k)| *k == peer).map(|(e, _)| e.clone());
                    if let Some(endpoint) = endpoint {
                        inner.redial_ms.remove(&endpoint);
                    }
                }
                EngineEvent::PairingRequest { peer, .. } => trace(&format!("kathon: session {peer} pairing request")),
                EngineEvent::Paired { .. } => trace("kathon: paired"),
                _ => {}
            }
            events.push(e);
        }
        inner.status.pending_storage = inner.storage_queue.len().saturating_add(engine.pending_storage());
        let next = engine.poll_timeout();
        let start_writer = !inner.storage_busy && !inner.storage_queue.is_empty() && now >= inner.storage_retry_at;
        if start_writer {
            inner.storage_busy = true;
        }
        let delay = match (next, inner.storage_busy || inner.storage_queue.is_empty()) {
            (Some(t), true) => Some(t.saturating_sub(now)),
            (Some(t), false) => Some(t.saturating_sub(now).min(inner.storage_retry_at.saturating_sub(now))),
            (None, false) => Some(inner.storage_retry_at.saturating_sub(now)),
            (None, true) => None,
        };
        drop(guard);
        if start_writer {
            spawn_local(write_storage(shared.clone()));
        }
        if let Some(delay) = delay {
            schedule(shared, i32::try_from(delay.min(60_000)).unwrap_or(60_000));
        }
    }
    for peer in refused {
        close_channel(shared, peer);
    }
    dispatch(shared, events);
}

/// Arms the engine's timer, unless one is armed already to fire no later (it runs `drive`,
/// which asks the engine again: an early wake-up is harmless, re-arming on every call was not).
pub(crate) fn schedule(shared: &Shared, delay_ms: i32) {
    let Ok(mut inner) = shared.try_borrow_mut() else { return };
    let now = now_ms();
    let at = now.saturating_add(u64::try_from(delay_ms.max(0)).unwrap_or(0));
    match inner.timer {
        Some((_, armed)) if armed <= at && armed >= now => return,
        Some((handle, _)) => crate::util::clear_timeout(handle),
        None => {}
    }
    if inner.timer_closure.is_none() {
        let weak = Rc::downgrade(shared);
        inner.timer_closure = Some(Closure::<dyn FnMut()>::new(move || {
            if let Some(shared) = weak.upgrade() {
                if let Ok(mut inner) = shared.try_borrow_mut() {
                    inner.timer = None;
                }
                drive(&shared);
            }
        }));
    }
    let handle = inner.timer_closure.as_ref().and_then(|c| crate::util::set_timeout(c, delay_ms.max(0)));
    inner.timer = handle.map(|h| (h, at));
}

/// How long a local change waits for the next ones before it is signed and stored, when no write
/// is in flight (`Config::group_commit_ms`). Each IndexedDB transaction costs the page about a
/// millisecond of main-thread time and the browser a commit; measured with the write bench
/// (`node benches/browser/run.mjs --only write`).
const GROUP_COMMIT_MS: u64 = 8;

/// Most bytes one IndexedDB transaction carries when queued batches are grouped.
const GROUP_COMMIT_MAX_BYTES: usize = 8 << 20;

/// Writes the queued storage batches: everything queued while the previous transaction was in
/// flight goes into the next one (group commit), up to `GROUP_COMMIT_MAX_BYTES`. Each
/// transaction is strict and atomic; the engine hears of each batch only once it is durable.
pub(crate) async fn write_storage(shared: Shared) {
    loop {
        let next = {
            let Ok(mut inner) = shared.try_borrow_mut() else { break };
            let mut group = Vec::new();
            let mut bytes = 0usize;
            while let Some(batch) = inner.storage_queue.front() {
                let size: usize = batch.puts.iter().map(|(_, b)| b.len()).sum();
                if !group.is_empty() && bytes.saturating_add(size) > GROUP_COMMIT_MAX_BYTES {
                    break;
                }
                bytes = bytes.saturating_add(size);
                if let Some(batch) = inner.storage_queue.pop_front() {
                    group.push(batch);
                }
            }
            (!group.is_empty()).then(|| (group, inner.db.clone(), inner.seal.as_ref().map(|s| s.passphrase.clone())))
        };
        let Some((group, db, passphrase)) = next else { break };
        let mut puts = Vec::with_capacity(group.iter().map(|b| b.puts.len()).sum());
        let mut failed = None;
        'batches: for batch in &group {
            for (key, bytes) in &batch.puts {
                // Copied into JavaScript at once (IndexedDB takes a copy anyway): no second copy
                // of a large batch in wasm memory, which never shrinks.
                let value = match (key, &passphrase) {
                    (RecordKey::Identity, Some(passphrase)) => match crate::seal_identity(passphrase, bytes) {
                        Ok(sealed) => Uint8Array::from(sealed.as_slice()),
                        Err(e) => {
                            failed = Some(e);
                            break 'batches;
                        }
                    },
                    _ => Uint8Array::from(bytes.as_slice()),
                };
                puts.push((key.to_text(), value));
            }
        }
        let result = match failed {
            Some(e) => Err(e),
            None => db.write(&puts).await,
        };
        let Ok(mut inner) = shared.try_borrow_mut() else { break };
        match result {
            Ok(()) => {
                inner.storage_error = None;
                let fields = &mut *inner;
                if let Some(engine) = fields.engine.as_mut() {
                    for batch in &group {
                        engine.handle_storage_done(batch.id);
                    }
                    // What that released (changes that waited for this write) goes next, even
                    // when the store is closing and `drive` no longer runs.
                    while let Some(batch) = engine.poll_storage() {
                        fields.storage_queue.push_back(batch);
                    }
                }
            }
            Err(e) => {
                let message = js_sys::Reflect::get(&e, &JsValue::from_str("message"))
                    .ok()
                    .and_then(|m| m.as_string())
                    .unwrap_or_default();
                let code = js_sys::Reflect::get(&e, &JsValue::from_str("code"))
                    .ok()
                    .and_then(|m| m.as_string())
                    .unwrap_or_default();
                // Keep the batches, first in line and in order, with everything after them:
                // nothing is dropped.
                for batch in group.into_iter().rev() {
                    inner.storage_queue.push_front(batch);
                }
                inner.status.last_error = Some(message.clone());
                inner.storage_error = Some((code.clone(), message.clone()));
                inner.storage_retry_at = now_ms().saturating_add(1_000);
                drop(inner);
                emit(&shared, "error", crate::util::to_js(&serde_json::json!({ "code": code, "message": message })));
                break;
            }
        }
    }
    if let Ok(mut inner) = shared.try_borrow_mut() {
        inner.storage_busy = false;
        if inner.closed {
            // `close` left the database open for this writer.
            inner.release();
            return;
        }
    }
    drive(&shared);
}

/// Calls the listeners of each event, outside any borrow.
pub(crate) fn dispatch(shared: &Shared, events: Vec<EngineEvent>) {
    for event in events {
        let kind = crate::events::kind_of(&event);
        if kind == "peers" {
            update_peer_topics(shared);
        }
        let listeners: Vec<js_sys::Function> = match shared.try_borrow() {
            Ok(inner) => {
                inner.listeners.iter().filter(|(_, k, _)| k == kind || k == "*").map(|(_, _, f)| f.clone()).collect()
            }
            Err(_) => Vec::new(),
        };
        if listeners.is_empty() {
            continue; // nobody listens: no JS object to build
        }
        let (_, value) = crate::events::to_js(&event);
        for f in listeners {
            if let Err(e) = f.call1(&JsValue::NULL, &value) {
                web_sys::console::error_2(&JsValue::from_str("kathon: an event listener threw"), &e);
            }
        }
    }
}

/// Emits an app-level event that does not come from the engine.
pub(crate) fn emit(shared: &Shared, kind: &str, value: JsValue) {
    let listeners: Vec<js_sys::Function> = match shared.try_borrow() {
        Ok(inner) => {
            inner.listeners.iter().filter(|(_, k, _)| k == kind || k == "*").map(|(_, _, f)| f.clone()).collect()
        }
        Err(_) => Vec::new(),
    };
    for f in listeners {
        let _ = f.call1(&JsValue::NULL, &value);
    }
}

// ------------------------------------------------------------------------------------------------
// Signaling
// ------------------------------------------------------------------------------------------------

/// The topics this endpoint should be in.
pub(crate) fn topics(inner: &Inner) -> Vec<String> {
    let mut topics = Vec::new();
    if let Some(identity) = inner.engine.as_ref().and_then(Engine::identity) {
        topics.extend(kathon_core::signaling::identity_topics(&identity, now_ms()));
    }
    if let Some(t) = &inner.pairing_topic {
        topics.push(t.clone());
    }
    topics
}

/// Sends a signal to the bridge.
pub(crate) fn send_signal(shared: &Shared, signal: &Signal) {
    let text = signal.to_json();
    let Ok(inner) = shared.try_borrow() else { return };
    match &inner.signaling {
        Some(SignalingLink::Socket { ws, .. }) if ws.ready_state() == web_sys::WebSocket::OPEN => {
            let _ = ws.send_with_str(&text);
        }
        Some(SignalingLink::Socket { .. }) => {}
        Some(SignalingLink::Custom(f)) => {
            let f = f.clone();
            drop(inner);
            if let Err(e) = f.call1(&JsValue::NULL, &JsValue::from_str(&text)) {
                web_sys::console::error_2(&JsValue::from_str("kathon: the signaling function threw"), &e);
            }
        }
        None => {}
    }
}

/// (Re)joins the current topics.
pub(crate) fn update_peer_topics(shared: &Shared) {
    let (endpoint, topics) = match shared.try_borrow() {
        Ok(inner) if inner.signaling.is_some() => (inner.endpoint.clone(), topics(&inner)),
        _ => return,
    };
    if !topics.is_empty() {
        send_signal(shared, &Signal::Join { endpoint, topics });
    }
}

/// A signal from the bridge.
pub(crate) fn handle_signal_text(shared: &Shared, text: &str) {
    let signal = match Signal::parse(text) {
        Ok(s) => s,
        Err(e) => {
            warn(&format!("kathon: ignoring a bad signaling message: {e}"));
            return;
        }
    };
    match signal {
        Signal::Peer { endpoint, topic } => {
            let (offer, already) = match shared.try_borrow_mut() {
                Ok(mut inner) => {
                    inner.known_endpoints.insert(endpoint.clone(), topic);
                    inner.status.peers_found = inner.known_endpoints.len();
                    (inner.endpoint < endpoint, inner.by_endpoint.contains_key(&endpoint))
                }
                Err(_) => {
                    warn("kathon: bug: a peer signal arrived while the store was borrowed; dropped");
                    return;
                }
            };
            trace(&format!("kathon: peer {endpoint} found (offer {offer}, already {already})"));
            emit(shared, "peers", crate::util::to_js(&serde_json::json!({"found": endpoint})));
            if offer && !already {
                spawn_local(connect(shared.clone(), endpoint));
            }
        }
        Signal::PeerLeft { endpoint } => {
            if let Ok(mut inner) = shared.try_borrow_mut() {
                inner.known_endpoints.remove(&endpoint);
                inner.redial_ms.remove(&endpoint);
                inner.status.peers_found = inner.known_endpoints.len();
            }
        }
        Signal::Relay { from, payload, .. } => match payload {
            RtcSignal::Offer { sdp } => {
                trace(&format!("kathon: offer from {from}"));
                spawn_local(answer(shared.clone(), from, sdp));
            }
            RtcSignal::Answer { sdp } => {
                trace(&format!("kathon: answer from {from}"));
                spawn_local(accept_answer(shared.clone(), from, sdp));
            }
            _ => {}
        },
        Signal::Error { message } => {
            if let Ok(mut inner) = shared.try_borrow_mut() {
                inner.status.last_error = Some(format!("bridge: {message}"));
            }
        }
        _ => {}
    }
}

// ------------------------------------------------------------------------------------------------
// WebRTC
// ------------------------------------------------------------------------------------------------

fn new_peer(shared: &Shared, endpoint: &str) -> Result<PeerKey, JsValue> {
    let mut inner = shared.try_borrow_mut().map_err(|_| crate::error::state("busy", "store busy"))?;
    // A new offer for a known endpoint replaces its old connection.
    if let Some(old) = inner.by_endpoint.remove(endpoint) {
        if let Some(p) = inner.rtc.remove(&old) {
            p.shut();
        }
        if let Some(engine) = inner.engine.as_mut() {
            engine.handle_peer_down(old);
        }
    }
    let key = inner.next_peer;
    inner.next_peer = inner.next_peer.saturating_add(1);
    let config = web_sys::RtcConfiguration::new();
    config.set_ice_servers(&Array::new()); // no STUN, no TURN: host candidates on the LAN only
    if let Some(cert) = &inner.cert {
        config.set_certificates(&Array::of1(cert));
    }
    let pc = RtcPeerConnection::new_with_configuration(&config)
        .map_err(|e| crate::error::network("webrtc", &format!("{e:?}")))?;
    let init = web_sys::RtcDataChannelInit::new();
    init.set_negotiated(true);
    init.set_id(0);
    init.set_ordered(true);
    // Negotiated on both sides: no `ondatachannel`, so no first message lost inside it.
    let dc = pc.create_data_channel_with_data_channel_dict("kathon", &init);
    dc.set_binary_type(web_sys::RtcDataChannelType::Arraybuffer);
    dc.set_buffered_amount_low_threshold(64 * 1024);
    let mut closures: Vec<Closure<dyn FnMut(JsValue)>> = Vec::new();
    let weak = Rc::downgrade(shared);
    let on_open = Closure::<dyn FnMut(JsValue)>::new({
        let weak = weak.clone();
        move |_| {
            let Some(shared) = weak.upgrade() else { return };
            let Ok(mut inner) = shared.try_borrow_mut() else {
                warn("kathon: bug: a channel opened while the store was borrowed; the connect timeout will retry");
                return;
            };
            {
                let inner = &mut *inner;
                let Some(peer) = inner.rtc.get_mut(&key) else { return };
                let local = peer.pc.local_description().and_then(|d| kathon_core::signaling::sdp_fingerprint(&d.sdp()));
                let remote = peer.remote_fp.clone().or_else(|| {
                    peer.pc.remote_description().and_then(|d| kathon_core::signaling::sdp_fingerprint(&d.sdp()))
                });
                peer.up = true;
                trace(&format!("kathon: channel {key} open"));
                match (local, remote, inner.engine.as_mut()) {
                    (Some(local), Some(remote), Some(engine)) => engine.handle_peer_up(key, local, remote, now_ms()),
                    (local, remote, _) => {
                        // No session can be bound to this connection: close it (and dial again).
                        warn(&format!(
                            "kathon: channel {key} opened without a DTLS fingerprint ({local:?}, {remote:?}) or an engine"
                        ));
                        peer.dc.close();
                    }
                }
            }
            drop(inner);
            drive(&shared);
        }
    });
    dc.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    closures.push(on_open);
    let on_message = Closure::<dyn FnMut(JsValue)>::new({
        let weak = weak.clone();
        move |event: JsValue| {
            let Some(shared) = weak.upgrade() else { return };
            let Ok(event) = event.dyn_into::<web_sys::MessageEvent>() else { return };
            let bytes = Uint8Array::new(&event.data()).to_vec();
            match shared.try_borrow_mut() {
                Ok(mut inner) => {
                    if let Some(engine) = inner.engine.as_mut() {
                        engine.handle_frame(key, &bytes, now_ms());
                    }
                }
                Err(_) => {
                    warn("kathon: bug: a frame arrived while the store was borrowed; dropped (the sender re-sends)")
                }
            }
            drive(&shared);
        }
    });
    dc.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    closures.push(on_message);
    let on_low = Closure::<dyn FnMut(JsValue)>::new({
        let weak = weak.clone();
        move |_| {
            let Some(shared) = weak.upgrade() else { return };
            if let Ok(mut inner) = shared.try_borrow_mut()
                && let Some(engine) = inner.engine.as_mut()
            {
                engine.handle_drained(key);
            }
            drive(&shared);
        }
    });
    dc.set_onbufferedamountlow(Some(on_low.as_ref().unchecked_ref()));
    closures.push(on_low);
    let on_close = Closure::<dyn FnMut(JsValue)>::new({
        let weak = weak.clone();
        let endpoint = endpoint.to_owned();
        move |_| {
            let Some(shared) = weak.upgrade() else { return };
            peer_gone(&shared, key, &endpoint);
        }
    });
    dc.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    closures.push(on_close);
    let on_state = Closure::<dyn FnMut(JsValue)>::new({
        let endpoint = endpoint.to_owned();
        move |_| {
            let Some(shared) = weak.upgrade() else { return };
            let failed = shared
                .try_borrow()
                .ok()
                .and_then(|inner| inner.rtc.get(&key).map(|p| p.pc.connection_state()))
                .is_some_and(|s| {
                    matches!(s, web_sys::RtcPeerConnectionState::Failed | web_sys::RtcPeerConnectionState::Closed)
                });
            if failed {
                peer_gone(&shared, key, &endpoint);
            }
        }
    });
    pc.set_onconnectionstatechange(Some(on_state.as_ref().unchecked_ref()));
    closures.push(on_state);
    inner.rtc.insert(key, RtcPeer { pc, dc, up: false, remote_fp: None, _closures: closures });
    inner.by_endpoint.insert(endpoint.to_owned(), key);
    Ok(key)
}

/// Whether `key` is still the connection to `endpoint` (a newer offer or answer replaces it).
fn is_current(shared: &Shared, key: PeerKey, endpoint: &str) -> bool {
    shared.try_borrow().is_ok_and(|i| i.by_endpoint.get(endpoint) == Some(&key) && i.rtc.contains_key(&key))
}

/// Closes the data channel of a session the engine has ended (refused either way, or timed out).
/// Without this a dead session would hold its connection open for good, and the endpoint would
/// never be dialled again. `close()` on the channel (not the connection) sends what is queued
/// first, so the peer still gets the refusal and its reason; the `close` event then runs
/// `peer_gone`, on both sides.
fn close_channel(shared: &Shared, key: PeerKey) {
    if let Ok(inner) = shared.try_borrow()
        && let Some(peer) = inner.rtc.get(&key)
    {
        let dc = peer.dc.clone();
        drop(inner);
        dc.close();
    }
}

/// The first wait before dialling an endpoint again, and the longest.
const REDIAL_MS: i32 = 2_000;
const MAX_REDIAL_MS: i32 = 60_000;

/// A connection ended: tell the engine, and try again later if the endpoint is still around.
fn peer_gone(shared: &Shared, key: PeerKey, endpoint: &str) {
    let retry = {
        let Ok(mut inner) = shared.try_borrow_mut() else { return };
        let Some(peer) = inner.rtc.remove(&key) else { return };
        trace(&format!("kathon: connection {key} to {endpoint} gone"));
        peer.shut();
        if inner.by_endpoint.get(endpoint) == Some(&key) {
            inner.by_endpoint.remove(endpoint);
        }
        if let Some(engine) = inner.engine.as_mut() {
            engine.handle_peer_down(key);
        }
        let retry = !inner.closed && inner.known_endpoints.contains_key(endpoint) && inner.endpoint.as_str() < endpoint;
        let wait = inner.redial_ms.get(endpoint).copied().unwrap_or(REDIAL_MS);
        inner.redial_ms.insert(endpoint.to_owned(), wait.saturating_mul(2).min(MAX_REDIAL_MS));
        retry.then_some(wait)
    };
    emit(shared, "peers", crate::util::to_js(&serde_json::json!({"closed": endpoint})));
    if let Some(wait) = retry {
        let shared = shared.clone();
        let endpoint = endpoint.to_owned();
        trace(&format!("kathon: dialling {endpoint} again in {wait} ms"));
        spawn_local(async move {
            crate::util::sleep(wait).await;
            let again = shared.try_borrow().is_ok_and(|i| {
                !i.closed && !i.by_endpoint.contains_key(&endpoint) && i.known_endpoints.contains_key(&endpoint)
            });
            if again {
                connect(shared, endpoint).await;
            }
        });
    }
    drive(shared);
}

/// How long a connection may take to open its data channel, from when this side sent its
/// description, before it is dropped and (by the offering side) tried again.
const CONNECT_TIMEOUT_MS: i32 = 15_000;

/// Drops the connection `key` if its data channel has not opened in time: on a loaded machine a
/// first attempt can stall for good (no candidates gathered in time), and nothing else would
/// ever retry it.
fn watch_connect(shared: &Shared, key: PeerKey, endpoint: &str) {
    let weak = Rc::downgrade(shared);
    let endpoint = endpoint.to_owned();
    spawn_local(async move {
        crate::util::sleep(CONNECT_TIMEOUT_MS).await;
        let Some(shared) = weak.upgrade() else { return };
        let stalled = shared.try_borrow().is_ok_and(|i| i.rtc.get(&key).is_some_and(|p| !p.up));
        if stalled {
            warn(&format!("kathon: the connection to {endpoint} did not open in time; trying again"));
            peer_gone(&shared, key, &endpoint);
        }
    });
}

async fn wait_for_candidates(pc: &RtcPeerConnection) {
    // Non-trickle: wait until gathering completes (or 10 s), so the description carries them.
    // Woken by the state change itself: polling added up to a poll interval on each side.
    let deadline = now_ms().saturating_add(10_000);
    while pc.ice_gathering_state() != web_sys::RtcIceGatheringState::Complete {
        let left = deadline.saturating_sub(now_ms());
        if left == 0 {
            break;
        }
        let wake = js_sys::Promise::new(&mut |resolve, _| {
            pc.set_onicegatheringstatechange(Some(&resolve));
            crate::util::call_later(&resolve, i32::try_from(left).unwrap_or(10_000));
        });
        let _ = JsFuture::from(wake).await;
    }
    pc.set_onicegatheringstatechange(None);
}

fn local_sdp(pc: &RtcPeerConnection) -> String {
    pc.local_description().map(|d| d.sdp()).unwrap_or_default()
}

/// Opens a connection to `endpoint` (this side offers).
pub(crate) async fn connect(shared: Shared, endpoint: String) {
    let key = match new_peer(&shared, &endpoint) {
        Ok(key) => key,
        Err(e) => return warn(&format!("kathon: could not offer a connection to {endpoint}: {e:?}")),
    };
    let result: Result<(), JsValue> = async {
        let pc = shared.try_borrow().ok().and_then(|i| i.rtc.get(&key).map(|p| p.pc.clone())).ok_or(JsValue::NULL)?;
        let offer = JsFuture::from(pc.create_offer()).await?;
        let sdp = js_sys::Reflect::get(&offer, &JsValue::from_str("sdp"))?.as_string().unwrap_or_default();
        let init = RtcSessionDescriptionInit::new(RtcSdpType::Offer);
        init.set_sdp(&sdp);
        JsFuture::from(pc.set_local_description(&init)).await?;
        wait_for_candidates(&pc).await;
        if !is_current(&shared, key, &endpoint) {
            // Replaced while gathering: an offer for it would only confuse the other side.
            trace(&format!("kathon: connection {key} replaced before its offer went out"));
            return Ok(());
        }
        let from = shared.try_borrow().map(|i| i.endpoint.clone()).unwrap_or_default();
        trace(&format!("kathon: connection {key}: offer to {endpoint}"));
        send_signal(
            &shared,
            &Signal::Relay { from, to: endpoint.clone(), payload: RtcSignal::Offer { sdp: local_sdp(&pc) } },
        );
        watch_connect(&shared, key, &endpoint);
        Ok(())
    }
    .await;
    if let Err(e) = result {
        warn(&format!("kathon: could not offer a connection to {endpoint}: {e:?}"));
        peer_gone(&shared, key, &endpoint);
    }
}

async fn answer(shared: Shared, endpoint: String, sdp: String) {
    let key = match new_peer(&shared, &endpoint) {
        Ok(key) => key,
        Err(e) => return warn(&format!("kathon: could not answer {endpoint}: {e:?}")),
    };
    if let Ok(mut inner) = shared.try_borrow_mut()
        && let Some(peer) = inner.rtc.get_mut(&key)
    {
        peer.remote_fp = kathon_core::signaling::sdp_fingerprint(&sdp);
    }
    let result: Result<(), JsValue> = async {
        let pc = shared.try_borrow().ok().and_then(|i| i.rtc.get(&key).map(|p| p.pc.clone())).ok_or(JsValue::NULL)?;
        let init = RtcSessionDescriptionInit::new(RtcSdpType::Offer);
        init.set_sdp(&sdp);
        JsFuture::from(pc.set_remote_description(&init)).await?;
        let answer = JsFuture::from(pc.create_answer()).await?;
        let answer_sdp = js_sys::Reflect::get(&answer, &JsValue::from_str("sdp"))?.as_string().unwrap_or_default();
        let init = RtcSessionDescriptionInit::new(RtcSdpType::Answer);
        init.set_sdp(&answer_sdp);
        JsFuture::from(pc.set_local_description(&init)).await?;
        wait_for_candidates(&pc).await;
        if !is_current(&shared, key, &endpoint) {
            // A newer offer replaced this connection while it gathered: answering it now would
            // be taken as the answer to that newer offer, and poison it (a race on a loaded
            // machine, where gathering can take seconds and the offerer's timeout redials).
            trace(&format!("kathon: connection {key} replaced before its answer went out"));
            return Ok(());
        }
        let from = shared.try_borrow().map(|i| i.endpoint.clone()).unwrap_or_default();
        trace(&format!("kathon: connection {key}: answer to {endpoint}"));
        send_signal(
            &shared,
            &Signal::Relay { from, to: endpoint.clone(), payload: RtcSignal::Answer { sdp: local_sdp(&pc) } },
        );
        watch_connect(&shared, key, &endpoint);
        Ok(())
    }
    .await;
    if let Err(e) = result {
        warn(&format!("kathon: could not answer {endpoint}: {e:?}"));
        peer_gone(&shared, key, &endpoint);
    }
}

async fn accept_answer(shared: Shared, endpoint: String, sdp: String) {
    let pc = shared.try_borrow_mut().ok().and_then(|mut i| {
        let key = *i.by_endpoint.get(&endpoint)?;
        let peer = i.rtc.get_mut(&key)?;
        if peer.pc.signaling_state() != web_sys::RtcSignalingState::HaveLocalOffer {
            return None;
        }
        peer.remote_fp = kathon_core::signaling::sdp_fingerprint(&sdp);
        Some(peer.pc.clone())
    });
    let Some(pc) = pc else {
        // An answer to an earlier attempt, or a second copy: the connection it was for is gone.
        trace(&format!("kathon: ignoring an answer from {endpoint} that no offer waits for"));
        return;
    };
    let init = RtcSessionDescriptionInit::new(RtcSdpType::Answer);
    init.set_sdp(&sdp);
    if let Err(e) = JsFuture::from(pc.set_remote_description(&init)).await {
        warn(&format!("kathon: bad answer from {endpoint}: {e:?}"));
    }
}
