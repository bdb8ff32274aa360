//! The Kathon Sync bridge.
//!
//! One per machine. It finds the user's other machines on the LAN, relays WebRTC signaling for
//! the browsers on this machine, and (optionally) runs a full native peer that keeps a replica on
//! disk. It is **untrusted by design**: it never holds sync data for the browsers, and the
//! engine's handshake — not the bridge — is what authenticates a peer.
//!
//! # Layout
//!
//! * [`run`] is the whole daemon: it takes its listener already bound and a shutdown future, as
//!   mini-redis does, so tests bind port 0 and stop it when they like.
//! * [`Config`] holds the settings; the binary (`main.rs`) fills it from flags.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;

/// Default loopback address of the bridge's HTTP/WebSocket endpoint.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7710";

/// Settings of a bridge.
#[derive(Clone, Debug)]
pub struct Config {
    /// A name for this machine, shown to the user's other devices.
    pub machine_name: String,
}

impl Default for Config {
    fn default() -> Self {
        Self { machine_name: "this machine".to_owned() }
    }
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
}

struct Shared {
    config: Config,
    started: Instant,
    listen: SocketAddr,
}

/// Runs the bridge on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listen = listener.local_addr()?;
    if !listen.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the bridge listens on loopback only, not {listen}"),
        ));
    }
    let shared = Arc::new(Shared { config, started: Instant::now(), listen });
    let app = Router::new().route("/status", get(status)).with_state(shared);
    tracing::info!(%listen, "bridge listening");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

async fn status(State(shared): State<Arc<Shared>>) -> Json<Status> {
    Json(Status {
        version: env!("CARGO_PKG_VERSION"),
        machine_name: shared.config.machine_name.clone(),
        uptime_ms: u64::try_from(shared.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        listen: shared.listen.to_string(),
    })
}
