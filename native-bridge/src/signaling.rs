//! The signaling WebSocket for the browsers on this machine (`/ws`, loopback only).
//!
//! A browser page opens it, `join`s topics under a fresh endpoint ID, and exchanges `relay`
//! messages with the endpoints the hub introduces. The `Host` must be a loopback name (against
//! DNS rebinding) and the `Origin`, when a browser sends one, must be this bridge's own or one in
//! the allow-list (so an arbitrary web page cannot use the bridge). Messages are capped at
//! [`MAX_SIGNAL_BYTES`].

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kathon_core::signaling::{MAX_SIGNAL_BYTES, Signal};
use tokio::sync::mpsc;

use crate::Shared;

/// Whether a request's `Host` and `Origin` are acceptable.
pub(crate) fn allowed(
    headers: &HeaderMap,
    listen: std::net::SocketAddr,
    allow_list: &[String],
) -> Result<(), &'static str> {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or_default();
    let host_name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    if !matches!(host_name, "127.0.0.1" | "localhost" | "[::1]") {
        return Err("the bridge answers only to 127.0.0.1 or localhost");
    }
    let Some(origin) = headers.get("origin").and_then(|o| o.to_str().ok()) else {
        return Ok(()); // not a browser: a local program, trusted as much as the bridge is
    };
    let own = [format!("http://127.0.0.1:{}", listen.port()), format!("http://localhost:{}", listen.port())];
    if own.iter().any(|o| o == origin) || allow_list.iter().any(|o| o == origin || o == "*") {
        Ok(())
    } else {
        Err("this page's origin is not allowed to use the bridge (see --allow-origin)")
    }
}

pub(crate) async fn upgrade(State(shared): State<Arc<Shared>>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    if let Err(why) = allowed(&headers, shared.listen, &shared.config.allowed_origins) {
        tracing::warn!(why, "refused a signaling connection");
        return (StatusCode::FORBIDDEN, why).into_response();
    }
    ws.max_message_size(MAX_SIGNAL_BYTES).on_upgrade(move |socket| session(socket, shared))
}

async fn session(mut socket: WebSocket, shared: Arc<Shared>) {
    let (tx, mut rx) = mpsc::channel::<Signal>(256);
    let mut endpoint: Option<String> = None;
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let Some(Ok(message)) = incoming else { break };
                let text = match message {
                    Message::Text(t) => t.to_string(),
                    Message::Close(_) => break,
                    _ => continue,
                };
                match Signal::parse(&text) {
                    Ok(Signal::Join { endpoint: e, topics }) => {
                        if endpoint.as_ref().is_some_and(|old| *old != e) {
                            let _ = socket.send(Message::Text(Signal::Error { message: "one endpoint per connection".into() }.to_json().into())).await;
                            continue;
                        }
                        if let Err(message) = shared.hub.join(&e, topics, tx.clone()) {
                            let _ = socket.send(Message::Text(Signal::Error { message }.to_json().into())).await;
                            continue;
                        }
                        endpoint = Some(e);
                    }
                    Ok(Signal::Relay { to, payload, .. }) => {
                        if let Some(from) = &endpoint {
                            shared.hub.relay(from, &to, payload);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = socket.send(Message::Text(Signal::Error { message: e.to_string() }.to_json().into())).await;
                    }
                }
            }
            outgoing = rx.recv() => {
                let Some(signal) = outgoing else { break };
                if socket.send(Message::Text(signal.to_json().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    if let Some(e) = endpoint {
        shared.hub.leave(&e);
    }
}
