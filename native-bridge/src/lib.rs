//! The Kathon Sync bridge.
//!
//! One per machine. It finds the user's other machines on the LAN ([`mcast`]), relays WebRTC
//! signaling for the browsers on this machine ([`signaling`]) and between bridges ([`relay`]),
//! and can run a full native peer that keeps a replica on disk ([`peer`]). It is **untrusted by
//! design**: it never holds the browsers' sync data or keys, and the engine's session handshake —
//! which binds both DTLS fingerprints — is what authenticates a peer, so a bridge that rewrites
//! what it relays gets no session.
//!
//! # Layout
//!
//! * [`run`] is the whole daemon. It takes its listeners already bound and a shutdown future,
//!   as mini-redis does, so tests bind port 0 and stop it when they like.
//! * [`hub`] routes signaling between endpoints (browser tabs, the native peer, remote
//!   endpoints behind other bridges).
//! * [`mcast`] drives `kathon_core::discovery` over UDP multicast (`socket2`).
//! * [`relay`] carries the hub's messages between bridges over WebSockets.
//! * [`control`] is the native peer's API for the command line (`/peer/…`).
//! * [`peer`] is the native peer: the same `kathon-core` engine over the `webrtc` crate, with
//!   [`store`] (redb) for durable storage.

pub mod control;
pub mod hub;
pub mod mcast;
pub mod peer;
pub mod relay;
pub mod signaling;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Default loopback address of the bridge's HTTP/WebSocket endpoint.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7710";
/// Default port of the LAN relay between bridges.
pub const DEFAULT_RELAY_PORT: u16 = 7711;

/// Settings of a bridge.
#[derive(Clone, Debug)]
pub struct Config {
    /// A name for this machine, shown to the user's other devices.
    pub machine_name: String,
    /// Origins allowed to open the signaling WebSocket (besides this bridge's own pages).
    pub allowed_origins: Vec<String>,
    /// LAN discovery, or `None` to stay local.
    pub discovery: Option<mcast::DiscoveryConfig>,
    /// The native peer, or `None` for a signaling-only bridge.
    pub native_peer: Option<peer::PeerConfig>,
    /// A folder of static files to serve at `/` (the demo page).
    pub site_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            machine_name: "this machine".into(),
            allowed_origins: Vec::new(),
            discovery: None,
            native_peer: None,
            site_dir: None,
        }
    }
}

/// The listeners a bridge serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// Loopback only: browsers on this machine (status, signaling, the demo page).
    pub local: TcpListener,
    /// The LAN relay between bridges (bound to the LAN interface), if discovery is on.
    pub relay: Option<TcpListener>,
}

/// What `GET /status` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Bridge version.
    pub version: &'static str,
    /// This machine's name.
    pub machine_name: String,
    /// Milliseconds since the bridge started.
    pub uptime_ms: u64,
    /// Address of the loopback endpoint.
    pub listen: String,
    /// Local endpoints (browser tabs, the native peer).
    pub local_endpoints: usize,
    /// Endpoints known behind other bridges.
    pub remote_endpoints: usize,
    /// Discovery counters and neighbours.
    pub discovery: Option<mcast::DiscoveryStatus>,
    /// The native peer.
    pub peer: Option<peer::PeerStatus>,
}

pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) started: Instant,
    pub(crate) listen: SocketAddr,
    pub(crate) hub: hub::Hub,
    pub(crate) discovery: watch::Receiver<Option<mcast::DiscoveryStatus>>,
    pub(crate) peer: Option<peer::PeerHandle>,
}

/// Runs the bridge until `shutdown` completes.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listen = listeners.local.local_addr()?;
    if !listen.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the bridge listens on loopback only, not {listen}"),
        ));
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let hub = hub::Hub::default();
    let (discovery_tx, discovery_rx) = watch::channel(None);
    let mut tasks = tokio::task::JoinSet::new();

    if let (Some(discovery), Some(relay_listener)) = (config.discovery.clone(), listeners.relay) {
        let relay_port = relay_listener.local_addr()?.port();
        let bridge_id: [u8; 16] = rand_bytes();
        let (found_tx, found_rx) = tokio::sync::mpsc::channel(64);
        tasks.spawn(mcast::run(
            discovery,
            hub.clone(),
            bridge_id,
            relay_port,
            found_tx.clone(),
            discovery_tx,
            stop_rx.clone(),
        ));
        tasks.spawn(relay::connect_loop(hub.clone(), bridge_id, found_rx, found_tx, stop_rx.clone()));
        tasks.spawn(relay::serve(relay_listener, hub.clone(), stop_rx.clone()));
    }
    let peer = match &config.native_peer {
        Some(peer_config) => Some(peer::spawn(peer_config.clone(), hub.clone(), stop_rx.clone(), &mut tasks).await?),
        None => None,
    };

    let shared = Arc::new(Shared { config, started: Instant::now(), listen, hub, discovery: discovery_rx, peer });
    let mut app = Router::new()
        .route("/status", get(status))
        .route("/ws", get(signaling::upgrade))
        .merge(control::routes())
        .with_state(shared.clone());
    if let Some(dir) = &shared.config.site_dir {
        app = app.fallback_service(tower_http::services::ServeDir::new(dir));
    }
    tracing::info!(%listen, "bridge listening");
    let mut stop = stop_rx.clone();
    let served = axum::serve(listeners.local, app).with_graceful_shutdown(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let result = served.await;
    tasks.shutdown().await;
    if let Some(peer) = &shared.peer {
        peer.closed().await;
    }
    result
}

async fn status(State(shared): State<Arc<Shared>>) -> axum::Json<Status> {
    let (local, remote) = shared.hub.counts();
    let peer = match &shared.peer {
        Some(p) => Some(p.status().await),
        None => None,
    };
    axum::Json(Status {
        version: env!("CARGO_PKG_VERSION"),
        machine_name: shared.config.machine_name.clone(),
        uptime_ms: u64::try_from(shared.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        listen: shared.listen.to_string(),
        local_endpoints: local,
        remote_endpoints: remote,
        discovery: shared.discovery.borrow().clone(),
        peer,
    })
}

/// `N` bytes from the operating system's generator.
pub(crate) fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut out);
    out
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Resolves once `stop` turns true (or its sender is gone). Returns nothing, so no `watch`
/// guard is held across an `await` in a `select!`.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
