//! The relay between bridges: a WebSocket per pair of bridges whose endpoints share a topic,
//! carrying the hub's [`LinkMessage`]s. The bridge with the smaller ID connects (so there is one
//! link per pair); anyone on the LAN may connect, and nothing they send is trusted beyond routing
//! — sizes are capped, and a link only relays for endpoints it announced.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use kathon_core::discovery::{BridgeId, Neighbour};
use kathon_core::signaling::MAX_SIGNAL_BYTES;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::hub::{Hub, LinkMessage};

/// Largest link message (an endpoint list of the hub's maximum size fits).
const MAX_LINK_MESSAGE: usize = 256 * 1024;
/// Most links at once.
const MAX_LINKS: u64 = 64;

static NEXT_LINK: AtomicU64 = AtomicU64::new(1);
static OPEN_LINKS: AtomicU64 = AtomicU64::new(0);

fn parse(text: &str) -> Option<LinkMessage> {
    if text.len() > MAX_LINK_MESSAGE {
        return None;
    }
    let message: LinkMessage = serde_json::from_str(text).ok()?;
    if let LinkMessage::Relay { payload, .. } = &message
        && serde_json::to_string(payload).map_or(0, |s| s.len()) > MAX_SIGNAL_BYTES
    {
        return None;
    }
    Some(message)
}

/// Accepts links from other bridges on the LAN.
pub async fn serve(listener: TcpListener, hub: Hub, mut stop: watch::Receiver<bool>) {
    let app = Router::new().route("/relay", get(upgrade)).with_state(hub);
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
}

async fn upgrade(State(hub): State<Hub>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_LINK_MESSAGE).on_upgrade(move |socket| serve_link(socket, hub))
}

async fn serve_link(mut socket: WebSocket, hub: Hub) {
    if OPEN_LINKS.fetch_add(1, Ordering::SeqCst) >= MAX_LINKS {
        OPEN_LINKS.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let link = NEXT_LINK.fetch_add(1, Ordering::SeqCst);
    let (tx, mut rx) = mpsc::channel::<LinkMessage>(256);
    hub.link_up(link, tx);
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let Some(Ok(Message::Text(text))) = incoming else { break };
                if let Some(message) = parse(&text) {
                    hub.from_link(link, message);
                }
            }
            outgoing = rx.recv() => {
                let Some(message) = outgoing else { break };
                let Ok(text) = serde_json::to_string(&message) else { continue };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
        }
    }
    hub.link_down(link);
    OPEN_LINKS.fetch_sub(1, Ordering::SeqCst);
}

/// Most attempts to (re)link to one bridge in a row; discovery's next announcement of it
/// starts a new round.
const MAX_DIAL_ATTEMPTS: u32 = 5;

/// Connects to the bridges discovery finds, when their endpoints share a topic with ours and
/// our ID is the smaller. A link that fails or ends is tried again with a doubling delay.
pub async fn connect_loop(
    hub: Hub,
    me: BridgeId,
    mut found: mpsc::Receiver<(BridgeId, Neighbour)>,
    retry: mpsc::Sender<(BridgeId, Neighbour)>,
    mut stop: watch::Receiver<bool>,
) {
    let linked: std::sync::Arc<std::sync::Mutex<BTreeSet<BridgeId>>> = Default::default();
    // Failed attempts in a row per bridge (reset by a link that came up).
    let attempts: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<BridgeId, u32>>> = Default::default();
    loop {
        tokio::select! {
            () = crate::stopped(&mut stop) => return,
            next = found.recv() => {
                let Some((id, neighbour)) = next else { return };
                if id <= me {
                    continue; // the other bridge connects
                }
                let ours = hub.local_topics();
                let shared = neighbour.topics.iter().any(|t| ours.contains(&data_encoding::HEXLOWER.encode(t)));
                let already = linked.lock().map(|l| l.contains(&id)).unwrap_or(true);
                if !shared || already {
                    continue;
                }
                let attempt = {
                    let Ok(mut map) = attempts.lock() else { continue };
                    let n = map.entry(id).or_insert(0);
                    *n = n.saturating_add(1);
                    let n = *n;
                    if n > MAX_DIAL_ATTEMPTS {
                        map.remove(&id);
                        continue;
                    }
                    n
                };
                let delay = Duration::from_secs(1u64 << attempt.min(6));
                if let Ok(mut l) = linked.lock() {
                    l.insert(id);
                }
                let addr = SocketAddr::new(neighbour.addr.ip(), neighbour.relay_port);
                let (hub, linked, stop, retry) = (hub.clone(), linked.clone(), stop.clone(), retry.clone());
                let attempts = attempts.clone();
                tokio::spawn(async move {
                    let up = AtomicBool::new(false);
                    if let Err(e) = dial(addr, hub, stop.clone(), &up).await {
                        tracing::info!(%addr, error = %e, "relay link ended");
                    }
                    if up.load(Ordering::SeqCst)
                        && let Ok(mut map) = attempts.lock()
                    {
                        map.remove(&id);
                    }
                    if let Ok(mut l) = linked.lock() {
                        l.remove(&id);
                    }
                    if !*stop.borrow() {
                        tokio::time::sleep(delay).await;
                        let _ = retry.send((id, neighbour)).await;
                    }
                });
            }
        }
    }
}

/// Links to a bridge until the link ends. `up` is set once it is connected.
async fn dial(addr: SocketAddr, hub: Hub, mut stop: watch::Receiver<bool>, up: &AtomicBool) -> Result<(), String> {
    let url = match addr {
        SocketAddr::V4(a) => format!("ws://{a}/relay"),
        SocketAddr::V6(a) => format!("ws://[{}%{}]:{}/relay", a.ip(), a.scope_id(), a.port()),
    };
    let config =
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().max_message_size(Some(MAX_LINK_MESSAGE));
    let (socket, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), false)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(%addr, "relay link up");
    up.store(true, Ordering::SeqCst);
    let (mut sink, mut stream) = socket.split();
    let link = NEXT_LINK.fetch_add(1, Ordering::SeqCst);
    let (tx, mut rx) = mpsc::channel::<LinkMessage>(256);
    hub.link_up(link, tx);
    let result = loop {
        tokio::select! {
            () = crate::stopped(&mut stop) => break Ok(()),
            incoming = stream.next() => {
                match incoming {
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                        if let Some(message) = parse(&text) {
                            hub.from_link(link, message);
                        }
                    }
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) | None => break Ok(()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break Err(e.to_string()),
                }
            }
            outgoing = rx.recv() => {
                let Some(message) = outgoing else { break Ok(()) };
                let Ok(text) = serde_json::to_string(&message) else { continue };
                if let Err(e) = sink.send(tokio_tungstenite::tungstenite::Message::Text(text.into())).await {
                    break Err(e.to_string());
                }
            }
        }
    };
    hub.link_down(link);
    result
}
