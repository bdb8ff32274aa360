//! The native peer: the same `kathon-core` engine the browsers run, over the `webrtc` crate.
//!
//! # Shape
//!
//! * The **engine actor** owns the [`Engine`] on its own thread (a single-threaded runtime), so
//!   applying a large profile never stalls the bridge's network tasks. Every input — a command,
//!   a signal from the hub, a data-channel event, a finished storage write, a timer — is handed
//!   to the engine, then the engine's outputs are drained (`poll_transmit`, `poll_storage`,
//!   `poll_event`, `poll_timeout`), exactly as the browser driver does it.
//! * The **storage writer** thread commits each batch to [`Store`] (redb, durable) and only then
//!   reports it done, so the engine acknowledges nothing that is not on disk.
//! * One **connection task** per remote endpoint runs a `webrtc` peer connection: host
//!   candidates only (no STUN/TURN, mDNS off), this device's persistent DTLS certificate, one
//!   negotiated, ordered data channel (`id` 0, as the browsers open it) with a bounded send
//!   buffer, and a bounded event queue towards the actor (back-pressure instead of memory).
//!
//! The endpoint with the smaller ID offers, as in the browser driver; either side may be a
//! browser or another native peer.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use kathon_core::identity::DeviceId;
use kathon_core::model::import;
use kathon_core::model::schema::{ItemId, NodeKind};
use kathon_core::signaling::{RtcSignal, Signal};
use kathon_core::sync::{Config as EngineConfig, Engine, EngineEvent, Fingerprint, PairingCode, PeerKey, StorageBatch};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCCertificate, RTCConfigurationBuilder,
    RTCIceConnectionState, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, SettingEngine,
    SettingEngineBuilder,
};

use crate::hub::Hub;
use crate::store::Store;

/// Send-buffer limit of a data channel. Larger limits make bursts drop UDP packets on loopback
/// (and `webrtc`'s SCTP then waits out a 1 s minimum RTO). Measured native→Chromium, 64 MiB of
/// 16 KiB messages (benches/browser, `--only rtc --native-args "--send-buffer N"`): 32 KiB gave
/// 22–26 MB/s, 64 KiB 17, 128 KiB 15–17, 512 KiB 18; Chromium↔Chromium in the same runs 20–28.
/// It bounds what is in flight, so at 1 ms round trip the ceiling is ~32 MB/s.
pub const SEND_BUFFER_LIMIT: usize = 32 * 1024;
/// Data-channel events queued towards the engine per connection before the reader waits.
const EVENT_QUEUE: usize = 256;
/// Largest data-channel message passed to the engine (its frames are at most 16 KiB).
const MAX_MESSAGE: usize = 64 * 1024;
/// How long to wait for ICE gathering before sending a description anyway.
const GATHER_TIMEOUT: Duration = Duration::from_secs(3);
/// How long after a connection ends the offering side first tries again; it doubles with each
/// failure (up to [`MAX_RETRY_MS`]) until a session is authenticated.
const RETRY_MS: u64 = 2_000;
/// Longest wait between attempts.
const MAX_RETRY_MS: u64 = 60_000;
/// How long a connection may take from offer or answer to an open data channel.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How often ICE sends a connectivity check while connecting. The crate's default (200 ms, as
/// pion's) makes nomination wait for the next tick: with it a channel took ~0.6 s to open.
pub const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(10);
/// Checks per candidate pair before it is given up: with [`ICE_CHECK_INTERVAL`], 3 s, as long as
/// the default (7 × 200 ms) and then some, so an answer relayed slowly still connects.
pub const ICE_MAX_CHECKS: u16 = 300;
/// How often the rotating identity topics are re-joined.
const TOPIC_REFRESH_MS: u64 = 10 * 60 * 1000;

/// Settings of the native peer.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// Where the store lives.
    pub data_dir: PathBuf,
    /// This device's name when it creates or joins an identity.
    pub device_name: String,
    /// Local UDP addresses for host candidates. `0.0.0.0:0` means every non-loopback interface;
    /// `127.0.0.1:0` lets browsers on this machine connect over loopback.
    pub udp_addrs: Vec<String>,
    /// The engine's settings.
    pub engine: EngineConfig,
}

impl PeerConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: PathBuf, device_name: String) -> Self {
        Self {
            data_dir,
            device_name,
            udp_addrs: vec!["0.0.0.0:0".into(), "127.0.0.1:0".into()],
            engine: EngineConfig::default(),
        }
    }
}

/// What the native peer reports.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PeerStatus {
    /// `new` (no identity), `joining` (waiting to pair) or `enrolled`.
    pub state: String,
    /// The identity, if enrolled.
    pub identity: Option<String>,
    /// This device.
    pub device: Option<String>,
    /// Whether this device holds the identity's root key (can issue pairing codes).
    pub holds_root_key: bool,
    /// Its signaling endpoint.
    pub endpoint: String,
    /// Its DTLS certificate fingerprint.
    pub fingerprint: String,
    /// Endpoints found through the hub.
    pub peers_found: usize,
    /// Open WebRTC connections.
    pub connections: usize,
    /// Authenticated sessions: device ID and name.
    pub sessions: Vec<(String, String)>,
    /// When the replica last changed (ms since the Unix epoch; 0: never).
    pub last_sync_ms: u64,
    /// Storage batches not yet committed.
    pub pending_storage: usize,
    /// Data-channel bytes received since start.
    pub bytes_received: u64,
    /// Data-channel bytes sent since start.
    pub bytes_sent: u64,
    /// The last error.
    pub last_error: Option<String>,
    /// Pairings in progress.
    pub pairing: Vec<PairingInfo>,
    /// What the replica holds.
    pub counts: Counts,
}

/// A pairing in progress.
#[derive(Clone, Debug, Serialize)]
pub struct PairingInfo {
    /// The connection (pass it to confirm).
    pub peer: PeerKey,
    /// `request` (a new device asks to join; confirm it) or `joining` (this device is joining).
    pub role: String,
    /// The new device, for a request.
    pub device: Option<String>,
    /// Its proposed name, for a request.
    pub name: Option<String>,
    /// The short authentication string both screens must show.
    pub sas: String,
}

pub use kathon_core::model::Counts;

/// A device of the identity.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceInfo {
    /// Its ID.
    pub id: String,
    /// Its name.
    pub name: String,
    /// This device.
    pub this_device: bool,
    /// Revoked.
    pub revoked: bool,
    /// In an authenticated session now.
    pub connected: bool,
}

/// A bookmark found by a search.
#[derive(Clone, Debug, Serialize)]
pub struct BookmarkHit {
    /// Its ID.
    pub id: String,
    /// Title.
    pub title: String,
    /// URL.
    pub url: Option<String>,
}

/// Formats for import and export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileFormat {
    /// Netscape bookmark HTML (what every browser exports).
    BookmarksHtml,
    /// Chromium's `Bookmarks` JSON.
    ChromiumJson,
    /// Password CSV (Chrome, Firefox or Bitwarden columns).
    PasswordsCsv,
}

type Reply<T> = oneshot::Sender<Result<T, String>>;

/// A request to the engine actor.
#[derive(Debug)]
#[non_exhaustive]
pub enum Command {
    /// Report status.
    Status(oneshot::Sender<PeerStatus>),
    /// Create a new identity with this device as its first member.
    CreateIdentity(Reply<PeerStatus>),
    /// Join an identity with a pairing code.
    Join(String, Reply<()>),
    /// Make a pairing code (text).
    PairingCode(Reply<String>),
    /// Accept or refuse a pairing request.
    ConfirmPairing(PeerKey, bool, Reply<()>),
    /// List devices.
    Devices(Reply<Vec<DeviceInfo>>),
    /// Revoke a device.
    Revoke(String, Reply<()>),
    /// Import a file's text.
    Import(FileFormat, String, Reply<import::ImportReport>),
    /// Export as text.
    Export(FileFormat, Reply<String>),
    /// Add a bookmark to "Other bookmarks": `(url, title)`.
    AddBookmark(String, String, Reply<String>),
    /// Search bookmarks by title or URL.
    SearchBookmarks(String, Reply<Vec<BookmarkHit>>),
    /// A hash of the whole replica's JSON view: equal on replicas holding the same data.
    Digest(Reply<String>),
}

/// The running native peer.
#[derive(Clone, Debug)]
pub struct PeerHandle {
    commands: mpsc::Sender<Command>,
    done: watch::Receiver<bool>,
}

impl PeerHandle {
    /// Its status (a default one if the actor has stopped).
    pub async fn status(&self) -> PeerStatus {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Status(tx)).await.is_err() {
            return PeerStatus { state: "stopped".into(), ..PeerStatus::default() };
        }
        rx.await.unwrap_or_default()
    }

    /// Sends a command and waits for its answer.
    pub async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| "the native peer has stopped".to_owned())?;
        rx.await.map_err(|_| "the native peer has stopped".to_owned())?
    }

    /// Resolves when the peer has stopped and its writes are on disk.
    pub async fn closed(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|d| *d).await;
    }
}

/// Opens the store, loads the replica and starts the peer. Fails if the store is in use or
/// does not load (a tampered or torn record).
pub async fn spawn(
    config: PeerConfig,
    hub: Hub,
    stop: watch::Receiver<bool>,
    _tasks: &mut tokio::task::JoinSet<()>,
) -> std::io::Result<PeerHandle> {
    let other = |e: String| std::io::Error::other(e);
    let store = Arc::new(Store::open(&config.data_dir).map_err(|e| other(e.to_string()))?);
    let cert = dtls_certificate(&store).map_err(other)?;
    let fingerprint = webrtc::peer_connection::crypto::default_provider()
        .ok()
        .and_then(|p| cert.get_fingerprints(p.crypto()).ok())
        .and_then(|f| f.into_iter().next())
        .map(|f| format!("{} {}", f.algorithm, f.value))
        .unwrap_or_default();
    let loaded = store.load().map_err(|e| other(e.to_string()))?;
    let runtime = tokio::runtime::Handle::current();
    let (commands_tx, commands_rx) = mpsc::channel(64);
    let (done_tx, done_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
    std::thread::Builder::new()
        .name("kathon-peer".into())
        .spawn(move || {
            let local = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("cannot start the peer's runtime: {e}")));
                    return;
                }
            };
            local.block_on(async move {
                let engine = match loaded.identity {
                    None => None,
                    Some(identity) => {
                        let seed = crate::rand_bytes();
                        match Engine::load(config.engine.clone(), &identity, loaded.records, seed, crate::now_ms()) {
                            Ok(engine) => Some(engine),
                            Err(e) => {
                                let _ = ready_tx.send(Err(format!("the store does not load: {e}")));
                                return;
                            }
                        }
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let actor = Actor::new(config, engine, store, cert, fingerprint, hub, runtime);
                actor.run(commands_rx, stop).await;
            });
            let _ = done_tx.send(true);
        })
        .map_err(|e| other(e.to_string()))?;
    ready_rx.await.map_err(|_| other("the native peer did not start".into()))?.map_err(other)?;
    Ok(PeerHandle { commands: commands_tx, done: done_rx })
}

/// This device's DTLS certificate: loaded from the store, or made once and stored.
fn dtls_certificate(store: &Store) -> Result<RTCCertificate, String> {
    let provider = webrtc::peer_connection::crypto::default_provider().map_err(|e| e.to_string())?;
    if let Some(pem) = store.meta("dtls-certificate").map_err(|e| e.to_string())?
        && let Ok(text) = String::from_utf8(pem)
        && expires_block_ok(&text)
        && let Ok(cert) = RTCCertificate::from_pem(&text, provider.crypto())
        && cert.expires > std::time::SystemTime::now()
    {
        return Ok(cert);
    }
    let params = rtc::peer_connection::certificate::CertificateParams::new(vec!["kathon-sync".to_owned()])
        .map_err(|e| e.to_string())?;
    let cert = RTCCertificate::generate(provider.crypto(), rtc::crypto::SignatureScheme::EcdsaP256Sha256, params)
        .map_err(|e| format!("cannot make a DTLS certificate: {e}"))?;
    let pem = cert.serialize_pem().map_err(|e| e.to_string())?;
    store.set_meta("dtls-certificate", pem.as_bytes()).map_err(|e| e.to_string())?;
    Ok(cert)
}

/// `RTCCertificate::from_pem` slices its first block's content without a length check: check
/// it here, so a damaged file means a new certificate rather than a panic.
fn expires_block_ok(pem: &str) -> bool {
    let Some(first) = pem.split("\n\n").next() else { return false };
    let body: String = first.lines().filter(|l| !l.starts_with("-----")).collect();
    first.contains("BEGIN EXPIRES") && data_encoding::BASE64.decode(body.trim().as_bytes()).is_ok_and(|b| b.len() >= 8)
}

// ------------------------------------------------------------------------------------------------
// Connections
// ------------------------------------------------------------------------------------------------

enum ConnCommand {
    Frame(Vec<u8>),
    Answer(String),
}

enum ConnEvent {
    Signal(PeerKey, RtcSignal),
    Up(PeerKey, Fingerprint, Fingerprint),
    Frame(PeerKey, Vec<u8>),
    Drained(PeerKey),
    Down(PeerKey, String),
}

/// The `webrtc` settings of every native connection: host candidates only (mDNS off, loopback
/// included so browsers on this machine connect), and ICE checks every
/// [`ICE_CHECK_INTERVAL`].
pub fn setting_engine() -> SettingEngine {
    SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_include_loopback_candidate(true)
        .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_MAX_CHECKS))
        .build()
}

/// Wakes the connection's driver so it sends what its core has queued.
///
/// `webrtc` 0.21.1 queues the DTLS `ClientHello` (when ICE selects a pair) and the SCTP `INIT`
/// (when DTLS completes) while it handles events, and nothing wakes its driver to send them: they
/// left on the next ICE timer tick, 200 ms apart, most of the 0.6 s a channel took to open. Any
/// call that ends in the driver's write wake-up sends them; setting the channel's low-water mark
/// to the value it has is one with no other effect.
pub async fn nudge(dc: &Arc<dyn DataChannel>) {
    if let Ok(threshold) = dc.buffered_amount_low_threshold().await {
        let _ = dc.set_buffered_amount_low_threshold(threshold).await;
    }
}

/// A connection's events: gathering done, state changes (each a [`nudge`] while connecting),
/// and failure.
pub struct ConnectionHandler {
    gathered: mpsc::Sender<()>,
    nudge: mpsc::Sender<()>,
    failed: Option<(PeerKey, mpsc::Sender<ConnEvent>)>,
}

impl std::fmt::Debug for ConnectionHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionHandler").finish_non_exhaustive()
    }
}

impl ConnectionHandler {
    /// A handler, with the receivers of "gathering complete" and of the nudges.
    pub fn new() -> (Self, mpsc::Receiver<()>, mpsc::Receiver<()>) {
        let (gathered, gathered_rx) = mpsc::channel(1);
        let (nudge, nudge_rx) = mpsc::channel(1);
        (Self { gathered, nudge, failed: None }, gathered_rx, nudge_rx)
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for ConnectionHandler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }

    async fn on_ice_connection_state_change(&self, _state: RTCIceConnectionState) {
        let _ = self.nudge.try_send(());
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.nudge.try_send(());
        if matches!(state, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed)
            && let Some((key, events)) = &self.failed
        {
            let _ = events.send(ConnEvent::Down(*key, format!("connection {state}"))).await;
        }
    }
}

struct ConnSettings {
    cert: RTCCertificate,
    udp_addrs: Vec<String>,
}

/// One connection, from offer or answer to close. Ends when the actor drops its commands.
async fn connection(
    key: PeerKey,
    remote_offer: Option<String>,
    settings: Arc<ConnSettings>,
    commands: mpsc::UnboundedReceiver<ConnCommand>,
    events: mpsc::Sender<ConnEvent>,
) {
    let why = match run_connection(key, remote_offer, settings, commands, events.clone()).await {
        Ok(()) => "closed".to_owned(),
        Err(e) => e,
    };
    let _ = events.send(ConnEvent::Down(key, why)).await;
}

async fn run_connection(
    key: PeerKey,
    remote_offer: Option<String>,
    settings: Arc<ConnSettings>,
    mut commands: mpsc::UnboundedReceiver<ConnCommand>,
    events: mpsc::Sender<ConnEvent>,
) -> Result<(), String> {
    let err = |what: &str| {
        let what = what.to_owned();
        move |e: webrtc::error::Error| format!("{what}: {e}")
    };
    let (mut handler, mut gathered_rx, mut nudge_rx) = ConnectionHandler::new();
    handler.failed = Some((key, events.clone()));
    let handler = Arc::new(handler);
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().with_certificates(vec![settings.cert.clone()]).build())
        .with_setting_engine(setting_engine())
        .with_handler(handler)
        .with_udp_addrs(settings.udp_addrs.clone())
        .with_data_channel_send_buffer_limit(SEND_BUFFER_LIMIT)
        .build()
        .await
        .map_err(err("cannot create a peer connection"))?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    let init = RTCDataChannelInit { ordered: true, negotiated: Some(0), ..Default::default() };
    let dc = pc.create_data_channel("kathon", Some(init)).await.map_err(err("cannot open the data channel"))?;

    let (reader_done_tx, mut reader_done) = oneshot::channel::<()>();
    let (open_tx, mut open_rx) = watch::channel(false);
    tokio::spawn(read_channel(key, pc.clone(), dc.clone(), events.clone(), reader_done_tx, open_tx));
    let connect_deadline = tokio::time::Instant::now().checked_add(CONNECT_TIMEOUT);

    let result = async {
        match remote_offer {
            None => {
                let offer = pc.create_offer(None).await.map_err(err("cannot make an offer"))?;
                pc.set_local_description(offer).await.map_err(err("cannot set the offer"))?;
                let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered_rx.recv()).await;
                let sdp = pc.local_description().await.map(|d| d.sdp).unwrap_or_default();
                let _ = events.send(ConnEvent::Signal(key, RtcSignal::Offer { sdp })).await;
            }
            Some(sdp) => {
                let offer = RTCSessionDescription::offer(sdp).map_err(err("bad offer"))?;
                pc.set_remote_description(offer).await.map_err(err("cannot use the offer"))?;
                let answer = pc.create_answer(None).await.map_err(err("cannot make an answer"))?;
                pc.set_local_description(answer).await.map_err(err("cannot set the answer"))?;
                let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered_rx.recv()).await;
                let sdp = pc.local_description().await.map(|d| d.sdp).unwrap_or_default();
                let _ = events.send(ConnEvent::Signal(key, RtcSignal::Answer { sdp })).await;
            }
        }
        // Until the channel opens, a deadline: an answer that never comes (dropped or replayed
        // signaling) must not hold the endpoint forever.
        let opened = async {
            match connect_deadline {
                Some(deadline) => {
                    tokio::time::timeout_at(deadline, open_rx.wait_for(|o| *o)).await.is_ok_and(|r| r.is_ok())
                }
                None => true,
            }
        };
        tokio::pin!(opened);
        let mut open = false;
        loop {
            tokio::select! {
                _ = &mut reader_done => return Ok(()),
                in_time = &mut opened, if !open => {
                    if !in_time {
                        return Err("the connection did not open in time".to_owned());
                    }
                    open = true;
                }
                Some(()) = nudge_rx.recv(), if !open => nudge(&dc).await,
                command = commands.recv() => match command {
                    None => return Ok(()),
                    Some(ConnCommand::Answer(sdp)) => {
                        let answer = RTCSessionDescription::answer(sdp).map_err(err("bad answer"))?;
                        pc.set_remote_description(answer).await.map_err(err("cannot use the answer"))?;
                    }
                    Some(ConnCommand::Frame(frame)) => {
                        // Waits while the channel's send buffer is full: back-pressure.
                        dc.send(BytesMut::from(frame.as_slice())).await.map_err(err("send failed"))?;
                        if commands.is_empty() {
                            let _ = events.send(ConnEvent::Drained(key)).await;
                        }
                    }
                },
            }
        }
    }
    .await;
    let _ = pc.close().await;
    result
}

async fn read_channel(
    key: PeerKey,
    pc: Arc<dyn PeerConnection>,
    dc: Arc<dyn DataChannel>,
    events: mpsc::Sender<ConnEvent>,
    done: oneshot::Sender<()>,
    opened: watch::Sender<bool>,
) {
    while let Some(event) = dc.poll().await {
        match event {
            DataChannelEvent::OnOpen => {
                let _ = opened.send(true);
                let local = pc.local_description().await.and_then(|d| kathon_core::signaling::sdp_fingerprint(&d.sdp));
                let remote =
                    pc.remote_description().await.and_then(|d| kathon_core::signaling::sdp_fingerprint(&d.sdp));
                let (Some(local), Some(remote)) = (local, remote) else { break };
                if events.send(ConnEvent::Up(key, local, remote)).await.is_err() {
                    break;
                }
            }
            DataChannelEvent::OnMessage(message) => {
                if message.data.len() > MAX_MESSAGE {
                    break; // not a Kathon peer
                }
                // Bounded queue: a fast sender waits here, and SCTP's window holds the rest.
                if events.send(ConnEvent::Frame(key, message.data.to_vec())).await.is_err() {
                    break;
                }
            }
            DataChannelEvent::OnClose | DataChannelEvent::OnError => break,
            _ => {}
        }
    }
    let _ = done.send(());
}

// ------------------------------------------------------------------------------------------------
// The engine actor
// ------------------------------------------------------------------------------------------------

struct Conn {
    endpoint: String,
    commands: mpsc::UnboundedSender<ConnCommand>,
    up: bool,
}

struct Actor {
    config: PeerConfig,
    engine: Option<Engine>,
    store: Arc<Store>,
    writer: Option<std::sync::mpsc::Sender<StorageBatch>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    written: mpsc::UnboundedReceiver<(StorageBatch, Result<(), String>)>,
    settings: Arc<ConnSettings>,
    fingerprint: String,
    hub: Hub,
    runtime: tokio::runtime::Handle,
    endpoint: String,
    signals_tx: mpsc::Sender<Signal>,
    signals: mpsc::Receiver<Signal>,
    events_tx: mpsc::Sender<ConnEvent>,
    events: mpsc::Receiver<ConnEvent>,
    conns: BTreeMap<PeerKey, Conn>,
    by_endpoint: BTreeMap<String, PeerKey>,
    known: BTreeSet<String>,
    retry: BTreeMap<String, u64>,
    /// The current wait before reconnecting to an endpoint, while its sessions keep failing.
    backoff: BTreeMap<String, u64>,
    next_key: PeerKey,
    pairing_topic: Option<String>,
    pairing: BTreeMap<PeerKey, PairingInfo>,
    sessions: BTreeMap<PeerKey, (DeviceId, String)>,
    last_sync_ms: u64,
    last_error: Option<String>,
    topics_at: u64,
    /// Replies held until the storage batch holding their change is committed.
    durable_waiters: Vec<(u64, DurableReply)>,
    bytes_received: u64,
    bytes_sent: u64,
}

/// Sends a reply once its change is on disk (or fails to get there).
type DurableReply = Box<dyn FnOnce(Result<(), String>) + Send>;

impl Actor {
    fn new(
        config: PeerConfig,
        engine: Option<Engine>,
        store: Arc<Store>,
        cert: RTCCertificate,
        fingerprint: String,
        hub: Hub,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let (writer_tx, writer_rx) = std::sync::mpsc::channel::<StorageBatch>();
        let (written_tx, written) = mpsc::unbounded_channel();
        let writer_store = store.clone();
        let writer_thread = std::thread::Builder::new()
            .name("kathon-store".into())
            .spawn(move || {
                while let Ok(batch) = writer_rx.recv() {
                    let result = writer_store.write(&batch).map_err(|e| e.to_string());
                    if written_tx.send((batch, result)).is_err() {
                        break;
                    }
                }
            })
            .ok();
        let (signals_tx, signals) = mpsc::channel(256);
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let settings = Arc::new(ConnSettings { cert, udp_addrs: config.udp_addrs.clone() });
        Self {
            config,
            engine,
            store,
            writer: Some(writer_tx),
            writer_thread,
            written,
            settings,
            fingerprint,
            hub,
            runtime,
            endpoint: data_encoding::HEXLOWER.encode(&crate::rand_bytes::<12>()),
            signals_tx,
            signals,
            events_tx,
            events,
            conns: BTreeMap::new(),
            by_endpoint: BTreeMap::new(),
            known: BTreeSet::new(),
            retry: BTreeMap::new(),
            backoff: BTreeMap::new(),
            next_key: 1,
            pairing_topic: None,
            pairing: BTreeMap::new(),
            sessions: BTreeMap::new(),
            last_sync_ms: 0,
            last_error: None,
            topics_at: 0,
            durable_waiters: Vec::new(),
            bytes_received: 0,
            bytes_sent: 0,
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>, mut stop: watch::Receiver<bool>) {
        tracing::info!(endpoint = %self.endpoint, store = %self.store.path().display(), "native peer started");
        self.rejoin();
        loop {
            let wait = self.drive();
            tokio::select! {
                () = crate::stopped(&mut stop) => break,
                () = tokio::time::sleep(wait) => {}
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => break,
                },
                Some(signal) = self.signals.recv() => self.signal(signal),
                Some(event) = self.events.recv() => self.conn_event(event),
                Some((batch, result)) = self.written.recv() => self.written(batch, result),
            }
        }
        self.shutdown().await;
    }

    async fn shutdown(mut self) {
        self.hub.leave(&self.endpoint);
        self.conns.clear(); // dropping the command senders closes the connections
        // Let the writer finish what it has, and hand the results to the engine.
        self.writer = None;
        if let Some(thread) = self.writer_thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        while let Ok((batch, result)) = self.written.try_recv() {
            self.written(batch, result);
        }
        tracing::info!("native peer stopped");
    }

    fn now(&self) -> u64 {
        crate::now_ms()
    }

    /// Runs the engine's outputs; returns how long to sleep.
    fn drive(&mut self) -> Duration {
        let now = self.now();
        let mut events = Vec::new();
        let mut next = now.saturating_add(60_000);
        if let Some(engine) = self.engine.as_mut() {
            engine.handle_timeout(now);
            while let Some(t) = engine.poll_transmit() {
                if let Some(conn) = self.conns.get(&t.peer)
                    && conn.up
                {
                    self.bytes_sent = self.bytes_sent.saturating_add(t.frame.len() as u64);
                    let _ = conn.commands.send(ConnCommand::Frame(t.frame));
                }
            }
            while let Some(batch) = engine.poll_storage() {
                if let Some(writer) = &self.writer {
                    let _ = writer.send(batch);
                }
            }
            while let Some(e) = engine.poll_event() {
                events.push(e);
            }
            if let Some(t) = engine.poll_timeout() {
                next = next.min(t);
            }
        }
        for event in events {
            self.engine_event(event);
        }
        // Reconnects that are due.
        let due: Vec<String> = self.retry.iter().filter(|(_, at)| **at <= now).map(|(e, _)| e.clone()).collect();
        for endpoint in due {
            self.retry.remove(&endpoint);
            if self.known.contains(&endpoint) && !self.by_endpoint.contains_key(&endpoint) {
                self.open(endpoint, None);
            }
        }
        if let Some(at) = self.retry.values().min() {
            next = next.min(*at);
        }
        if now.saturating_sub(self.topics_at) >= TOPIC_REFRESH_MS {
            self.rejoin();
        }
        next = next.min(self.topics_at.saturating_add(TOPIC_REFRESH_MS));
        Duration::from_millis(next.saturating_sub(now).min(60_000))
    }

    fn topics(&self) -> Vec<String> {
        let mut topics = Vec::new();
        if let Some(identity) = self.engine.as_ref().and_then(Engine::identity) {
            topics.extend(kathon_core::signaling::identity_topics(&identity, self.now()));
        }
        if let Some(t) = &self.pairing_topic {
            topics.push(t.clone());
        }
        topics
    }

    /// Joins (or leaves) the hub with the current topics.
    fn rejoin(&mut self) {
        self.topics_at = self.now();
        let topics = self.topics();
        if topics.is_empty() {
            self.hub.leave(&self.endpoint);
        } else if let Err(e) = self.hub.join(&self.endpoint, topics, self.signals_tx.clone()) {
            self.last_error = Some(format!("signaling: {e}"));
        }
    }

    fn engine_event(&mut self, event: EngineEvent) {
        match event {
            EngineEvent::Committed(_) | EngineEvent::Model(_) => self.last_sync_ms = self.now(),
            EngineEvent::PeerAuthenticated { peer, device, name } => {
                tracing::info!(%device, name, "session authenticated");
                if let Some(conn) = self.conns.get(&peer) {
                    self.backoff.remove(&conn.endpoint);
                }
                self.pairing.remove(&peer);
                self.sessions.insert(peer, (device, name));
            }
            EngineEvent::PeerRefused { peer, error } => {
                tracing::warn!(peer, %error, "session refused");
                self.last_error = Some(error.to_string());
                // The session is dead: drop the connection (the offering side tries again later).
                self.close(peer);
            }
            EngineEvent::PeerSentInvalid { peer, error } => {
                tracing::warn!(peer, %error, "a peer sent something invalid");
            }
            EngineEvent::PairingRequest { peer, device, name, sas } => {
                tracing::info!(peer, %device, name, sas, "pairing request: compare the codes, then confirm");
                self.pairing.insert(
                    peer,
                    PairingInfo {
                        peer,
                        role: "request".into(),
                        device: Some(device.to_string()),
                        name: Some(name),
                        sas,
                    },
                );
            }
            EngineEvent::PairingSas { peer, sas } => {
                tracing::info!(peer, sas, "pairing: compare this code with the other device");
                self.pairing.insert(peer, PairingInfo { peer, role: "joining".into(), device: None, name: None, sas });
            }
            EngineEvent::Paired { identity } => {
                tracing::info!(%identity, "paired");
                self.pairing_topic = None;
                self.pairing.clear();
                self.rejoin();
            }
            EngineEvent::StorageFailed { batch, message } => {
                tracing::error!(batch, message, "storage write failed; it will be retried");
                self.last_error = Some(format!("storage: {message}"));
            }
            EngineEvent::CommitFailed { message } => {
                tracing::error!(message, "local changes could not be signed; they are tried again");
                self.last_error = Some(format!("commit: {message}"));
            }
            EngineEvent::EnvelopeUnreadable { envelope } => {
                tracing::error!(%envelope, "an envelope no longer reads as signed: not sent to peers, deletions in it not stored");
                self.last_error = Some(format!("unreadable: envelope {envelope} no longer reads as signed"));
            }
            _ => {}
        }
    }

    fn open(&mut self, endpoint: String, remote_offer: Option<String>) {
        if let Some(old) = self.by_endpoint.remove(&endpoint) {
            self.close(old);
        }
        let key = self.next_key;
        self.next_key = self.next_key.saturating_add(1);
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        self.conns.insert(key, Conn { endpoint: endpoint.clone(), commands: commands_tx, up: false });
        self.by_endpoint.insert(endpoint, key);
        self.runtime.spawn(connection(key, remote_offer, self.settings.clone(), commands_rx, self.events_tx.clone()));
    }

    fn close(&mut self, key: PeerKey) {
        if let Some(conn) = self.conns.remove(&key) {
            if self.by_endpoint.get(&conn.endpoint) == Some(&key) {
                self.by_endpoint.remove(&conn.endpoint);
            }
            if let Some(engine) = self.engine.as_mut() {
                engine.handle_peer_down(key);
            }
            self.sessions.remove(&key);
            self.pairing.remove(&key);
            if self.known.contains(&conn.endpoint) && self.endpoint < conn.endpoint {
                let wait = self.backoff.get(&conn.endpoint).copied().unwrap_or(RETRY_MS);
                self.backoff.insert(conn.endpoint.clone(), wait.saturating_mul(2).min(MAX_RETRY_MS));
                self.retry.insert(conn.endpoint, self.now().saturating_add(wait));
            }
        }
    }

    fn signal(&mut self, signal: Signal) {
        match signal {
            Signal::Peer { endpoint, .. } => {
                self.known.insert(endpoint.clone());
                if self.endpoint < endpoint && !self.by_endpoint.contains_key(&endpoint) {
                    self.open(endpoint, None);
                }
            }
            Signal::PeerLeft { endpoint } => {
                self.known.remove(&endpoint);
                self.retry.remove(&endpoint);
            }
            Signal::Relay { from, payload, .. } => match payload {
                RtcSignal::Offer { sdp } => self.open(from, Some(sdp)),
                RtcSignal::Answer { sdp } => {
                    if let Some(conn) = self.by_endpoint.get(&from).and_then(|k| self.conns.get(k)) {
                        let _ = conn.commands.send(ConnCommand::Answer(sdp));
                    }
                }
                _ => {}
            },
            Signal::Error { message } => self.last_error = Some(format!("bridge: {message}")),
            _ => {}
        }
    }

    fn conn_event(&mut self, event: ConnEvent) {
        let now = self.now();
        match event {
            ConnEvent::Signal(key, payload) => {
                if let Some(conn) = self.conns.get(&key) {
                    self.hub.relay(&self.endpoint, &conn.endpoint, payload);
                }
            }
            ConnEvent::Up(key, local, remote) => {
                if let Some(conn) = self.conns.get_mut(&key) {
                    conn.up = true;
                    tracing::info!(endpoint = %conn.endpoint, "data channel open");
                    if let Some(engine) = self.engine.as_mut() {
                        engine.handle_peer_up(key, local, remote, now);
                    }
                }
            }
            ConnEvent::Frame(key, bytes) => {
                self.bytes_received = self.bytes_received.saturating_add(bytes.len() as u64);
                if self.conns.contains_key(&key)
                    && let Some(engine) = self.engine.as_mut()
                {
                    engine.handle_frame(key, &bytes, now);
                }
            }
            ConnEvent::Drained(key) => {
                if let Some(engine) = self.engine.as_mut() {
                    engine.handle_drained(key);
                }
            }
            ConnEvent::Down(key, why) => {
                if let Some(conn) = self.conns.get(&key) {
                    tracing::info!(endpoint = %conn.endpoint, why, "connection ended");
                }
                self.close(key);
            }
        }
    }

    /// Hands the engine's pending storage batches to the writer; returns the last one's ID.
    fn flush_storage(&mut self) -> Option<u64> {
        let engine = self.engine.as_mut()?;
        let mut last = None;
        while let Some(batch) = engine.poll_storage() {
            last = Some(batch.id);
            if let Some(writer) = &self.writer {
                let _ = writer.send(batch);
            }
        }
        last
    }

    /// Replies once the change just made is durable: what the user is told was saved, was.
    fn reply_when_durable<T: Send + 'static>(&mut self, result: Result<T, String>, reply: Reply<T>) {
        match (result, self.flush_storage()) {
            (Ok(value), Some(batch)) => {
                self.durable_waiters.push((
                    batch,
                    Box::new(move |stored: Result<(), String>| {
                        let _ = reply.send(stored.map(|()| value));
                    }),
                ));
            }
            (result, _) => {
                let _ = reply.send(result);
            }
        }
    }

    fn written(&mut self, batch: StorageBatch, result: Result<(), String>) {
        if result.is_ok() {
            let done = batch.id;
            let (ready, waiting): (Vec<_>, Vec<_>) =
                std::mem::take(&mut self.durable_waiters).into_iter().partition(|(id, _)| *id <= done);
            self.durable_waiters = waiting;
            for (_, reply) in ready {
                reply(Ok(()));
            }
        }
        let Some(engine) = self.engine.as_mut() else { return };
        match result {
            Ok(()) => engine.handle_storage_done(batch.id),
            Err(message) => {
                let id = batch.id;
                engine.handle_storage_failed(id, batch, &message);
            }
        }
    }

    fn command(&mut self, command: Command) {
        let now = self.now();
        match command {
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::CreateIdentity(reply) => {
                let result = if self.engine.as_ref().is_some_and(|e| e.identity().is_some()) {
                    Err("this device already belongs to an identity".to_owned())
                } else {
                    Engine::create_identity(
                        self.config.engine.clone(),
                        &self.config.device_name,
                        crate::rand_bytes(),
                        now,
                    )
                    .map_err(|e| e.to_string())
                };
                let result = result.map(|engine| {
                    self.engine = Some(engine);
                    self.rejoin();
                    self.status()
                });
                self.reply_when_durable(result, reply);
            }
            Command::Join(code, reply) => {
                let result = if self.engine.as_ref().is_some_and(|e| e.identity().is_some()) {
                    Err("this device already belongs to an identity".to_owned())
                } else {
                    PairingCode::parse(&code).map_err(|e| e.to_string()).map(|code| {
                        self.pairing_topic = Some(kathon_core::signaling::pairing_topic(&code.device_tag));
                        self.engine = Some(Engine::join(
                            self.config.engine.clone(),
                            code,
                            &self.config.device_name,
                            crate::rand_bytes(),
                            now,
                        ));
                        self.rejoin();
                    })
                };
                let _ = reply.send(result);
            }
            Command::PairingCode(reply) => {
                let result = self.engine_mut().and_then(|e| e.new_pairing_code(now).map_err(|e| e.to_string()));
                let result = result.map(|code| {
                    self.pairing_topic = Some(kathon_core::signaling::pairing_topic(&code.device_tag));
                    self.rejoin();
                    code.to_text()
                });
                let _ = reply.send(result);
            }
            Command::ConfirmPairing(peer, accept, reply) => {
                let result =
                    self.engine_mut().and_then(|e| e.confirm_pairing(peer, accept, now).map_err(|e| e.to_string()));
                let _ = reply.send(result);
            }
            Command::Devices(reply) => {
                let _ = reply.send(self.devices());
            }
            Command::Revoke(device, reply) => {
                let result = device
                    .parse::<DeviceId>()
                    .map_err(|e| e.to_string())
                    .and_then(|d| self.engine_mut().and_then(|e| e.revoke(d, now).map_err(|e| e.to_string())));
                self.reply_when_durable(result, reply);
            }
            Command::Import(format, text, reply) => {
                let result = self.import(format, &text, now);
                self.reply_when_durable(result, reply);
            }
            Command::Export(format, reply) => {
                let _ = reply.send(self.export(format));
            }
            Command::AddBookmark(url, title, reply) => {
                let result = self.engine_mut().and_then(|e| {
                    e.transact(now, |edit| {
                        edit.add_bookmark(ItemId::OTHER, None, NodeKind::Bookmark, &title, Some(&url))
                    })
                    .map(|id| id.to_string())
                    .map_err(|e| e.to_string())
                });
                self.reply_when_durable(result, reply);
            }
            Command::SearchBookmarks(query, reply) => {
                let result = self.state().map(|s| {
                    s.bookmarks()
                        .search(&query)
                        .into_iter()
                        .map(|n| BookmarkHit { id: n.id.to_string(), title: n.title.clone(), url: n.url.clone() })
                        .collect()
                });
                let _ = reply.send(result);
            }
            Command::Digest(reply) => {
                let result =
                    self.state().map(|s| blake3::hash(s.to_json().to_string().as_bytes()).to_hex().to_string());
                let _ = reply.send(result);
            }
        }
    }

    fn engine_mut(&mut self) -> Result<&mut Engine, String> {
        self.engine.as_mut().ok_or_else(|| "this device has no identity yet: create one or join with a code".to_owned())
    }

    fn state(&self) -> Result<&kathon_core::model::BrowserState, String> {
        self.engine
            .as_ref()
            .and_then(Engine::state)
            .ok_or_else(|| "this device has no identity yet: create one or join with a code".to_owned())
    }

    fn import(&mut self, format: FileFormat, text: &str, now: u64) -> Result<import::ImportReport, String> {
        let engine = self.engine_mut()?;
        match format {
            FileFormat::BookmarksHtml | FileFormat::ChromiumJson => {
                let parsed = if format == FileFormat::BookmarksHtml {
                    import::parse_netscape(text)
                } else {
                    import::parse_chromium_json(text)
                }
                .map_err(|e| e.to_string())?;
                engine.transact(now, |e| e.import_bookmarks(&parsed)).map_err(|e| e.to_string())
            }
            FileFormat::PasswordsCsv => {
                let parsed = import::parse_password_csv(text).map_err(|e| e.to_string())?;
                engine.transact(now, |e| e.import_passwords(&parsed)).map_err(|e| e.to_string())
            }
        }
    }

    fn export(&self, format: FileFormat) -> Result<String, String> {
        let state = self.state()?;
        match format {
            FileFormat::BookmarksHtml => {
                Ok(import::export_netscape(&import::BookmarkFile::from_tree(state.bookmarks())))
            }
            FileFormat::ChromiumJson => {
                Ok(import::export_chromium_json(&import::BookmarkFile::from_tree(state.bookmarks())))
            }
            FileFormat::PasswordsCsv => {
                let rows = import::password_rows(state).map_err(|e| e.to_string())?;
                import::export_password_csv(&rows).map_err(|e| e.to_string())
            }
        }
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>, String> {
        let state = self.state()?;
        let connected: Vec<&DeviceId> = self.sessions.values().map(|(d, _)| d).collect();
        Ok(state
            .registry()
            .certificates()
            .map(|c| DeviceInfo {
                id: c.device().to_string(),
                name: c.name().as_str().to_owned(),
                this_device: c.device() == state.device(),
                revoked: state.registry().revocation(c.device()).is_some(),
                connected: connected.contains(&c.device()),
            })
            .collect())
    }

    fn status(&self) -> PeerStatus {
        let engine = self.engine.as_ref();
        let enrolled = engine.and_then(Engine::identity);
        let counts = engine.and_then(Engine::state).map_or_else(Counts::default, |s| s.counts());
        PeerStatus {
            state: match (engine, enrolled) {
                (None, _) => "new",
                (Some(_), None) => "joining",
                (Some(_), Some(_)) => "enrolled",
            }
            .into(),
            identity: enrolled.map(|i| i.to_string()),
            device: enrolled.and(engine).map(|e| e.device().to_string()),
            holds_root_key: engine.is_some_and(Engine::holds_root_key),
            endpoint: self.endpoint.clone(),
            fingerprint: self.fingerprint.clone(),
            peers_found: self.known.len(),
            connections: self.conns.values().filter(|c| c.up).count(),
            sessions: self.sessions.values().map(|(d, n)| (d.to_string(), n.clone())).collect(),
            last_sync_ms: self.last_sync_ms,
            pending_storage: engine.map_or(0, Engine::pending_storage),
            bytes_received: self.bytes_received,
            bytes_sent: self.bytes_sent,
            last_error: self.last_error.clone(),
            pairing: self.pairing.values().cloned().collect(),
            counts,
        }
    }
}

/// Address helper for tests and the command line: the UDP addresses for one interface address.
pub fn udp_addrs_for(ip: std::net::IpAddr) -> Vec<String> {
    vec![SocketAddr::new(ip, 0).to_string(), "127.0.0.1:0".to_owned()]
}
