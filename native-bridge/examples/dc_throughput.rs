//! Data-channel connect time, connect-to-authenticated-session time and throughput of native
//! peers with the bridge's exact WebRTC settings (`kathon_bridge::peer::setting_engine`: host
//! candidates, mDNS off, ICE checks every 10 ms; one negotiated ordered channel; a 128 KiB send
//! buffer; 16 KiB messages, the engine's frame size).
//!
//! * `cargo run -p kathon-bridge --release --example dc_throughput [MiB] [--bind ADDR]`: two
//!   native peers in this process. Ten connections, each timed to its open channel and then to
//!   an authenticated Kathon session (two paired engines run the real handshake over it: nonces,
//!   certificates, signatures over both DTLS fingerprints); then MiB (64) through one channel.
//!   Prints one JSON line per measurement and a summary.
//! * `… --example dc_throughput -- --answer [--bind ADDR]`: the native side for a browser. Reads
//!   an offer (`{"sdp": …}`, one line) on stdin, prints the answer line, and serves the browser
//!   bench's throughput protocol: a 9-byte message `1 ‖ u64 n` announces n bytes coming (it
//!   answers `2 ‖ u64 n` once they are in); `3 ‖ u64 n` asks it to send n bytes.
//!
//! Binds `127.0.0.1:0` unless told otherwise: loopback only (or a namespace the caller made).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    clippy::cast_precision_loss,
    clippy::indexing_slicing
)]

use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kathon_bridge::peer::{ConnectionHandler, SEND_BUFFER_LIMIT, nudge, setting_engine};
use kathon_core::sim::{Faults, SimNet};
use kathon_core::sync::{Config, Engine, EngineEvent};
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{PeerConnection, PeerConnectionBuilder, RTCConfigurationBuilder, RTCSessionDescription};

const FRAME: usize = 16 * 1024;

struct Side {
    pc: Arc<dyn PeerConnection>,
    dc: Arc<dyn DataChannel>,
    gathered: mpsc::Receiver<()>,
    nudges: mpsc::Receiver<()>,
}

/// The send-buffer limit (`--send-buffer BYTES`; the bridge's own by default).
fn send_buffer() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--send-buffer")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(SEND_BUFFER_LIMIT)
}

async fn side(bind: &str) -> Side {
    let (handler, gathered, nudges) = ConnectionHandler::new();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(setting_engine())
        .with_handler(Arc::new(handler))
        .with_udp_addrs(vec![format!("{bind}:0")])
        .with_data_channel_send_buffer_limit(send_buffer())
        .build()
        .await
        .unwrap();
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    let init = RTCDataChannelInit { ordered: true, negotiated: Some(0), ..Default::default() };
    let dc = pc.create_data_channel("kathon", Some(init)).await.unwrap();
    Side { pc, dc, gathered, nudges }
}

/// Waits for the channel to open, nudging the driver on each state change (as the bridge does).
async fn wait_open(dc: &Arc<dyn DataChannel>, nudges: &mut mpsc::Receiver<()>) {
    loop {
        tokio::select! {
            event = dc.poll() => match event {
                Some(DataChannelEvent::OnOpen) => return,
                None | Some(DataChannelEvent::OnClose) => panic!("the channel closed before opening"),
                _ => {}
            },
            Some(()) = nudges.recv() => nudge(dc).await,
        }
    }
}

async fn gathered(side: &mut Side) {
    let _ = tokio::time::timeout(Duration::from_secs(3), side.gathered.recv()).await;
}

/// Offer, answer, open: both channels open. Returns the time from building the two peer
/// connections to both channels open.
async fn connect(bind: &str) -> (Side, Side, Duration) {
    let started = Instant::now();
    let (mut a, mut b) = (side(bind).await, side(bind).await);
    let offer = a.pc.create_offer(None).await.unwrap();
    a.pc.set_local_description(offer).await.unwrap();
    gathered(&mut a).await;
    b.pc.set_remote_description(a.pc.local_description().await.unwrap()).await.unwrap();
    let answer = b.pc.create_answer(None).await.unwrap();
    b.pc.set_local_description(answer).await.unwrap();
    gathered(&mut b).await;
    a.pc.set_remote_description(b.pc.local_description().await.unwrap()).await.unwrap();
    tokio::join!(wait_open(&a.dc, &mut a.nudges), wait_open(&b.dc, &mut b.nudges));
    let took = started.elapsed();
    (a, b, took)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Runs `engine`'s session over an open channel until the peer is authenticated; returns the
/// engine.
async fn authenticate(mut engine: Engine, key: u64, side: &Side) -> Engine {
    let local = kathon_core::signaling::sdp_fingerprint(&side.pc.local_description().await.unwrap().sdp).unwrap();
    let remote = kathon_core::signaling::sdp_fingerprint(&side.pc.remote_description().await.unwrap().sdp).unwrap();
    engine.handle_peer_up(key, local, remote, now_ms());
    loop {
        engine.handle_timeout(now_ms());
        while let Some(t) = engine.poll_transmit() {
            side.dc.send(BytesMut::from(t.frame.as_slice())).await.unwrap();
            engine.handle_drained(key);
        }
        while let Some(batch) = engine.poll_storage() {
            engine.handle_storage_done(batch.id);
        }
        let mut done = false;
        while let Some(event) = engine.poll_event() {
            match event {
                EngineEvent::PeerAuthenticated { peer, .. } if peer == key => done = true,
                EngineEvent::PeerRefused { error, .. } => panic!("session refused: {error}"),
                _ => {}
            }
        }
        if done {
            // Let the peer see our last message before the next trial takes the channel down.
            while let Some(t) = engine.poll_transmit() {
                side.dc.send(BytesMut::from(t.frame.as_slice())).await.unwrap();
            }
            return engine;
        }
        let wait = engine.poll_timeout().map_or(1_000, |t| t.saturating_sub(now_ms())).min(1_000);
        tokio::select! {
            event = side.dc.poll() => match event {
                Some(DataChannelEvent::OnMessage(m)) => engine.handle_frame(key, &m.data, now_ms()),
                None | Some(DataChannelEvent::OnClose) => panic!("the channel closed during the handshake"),
                _ => {}
            },
            () = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
    }
}

/// Two engines of one identity, paired in the simulated network (the pairing is not measured).
fn paired_engines() -> (Engine, Engine) {
    let mut net = SimNet::new(7, Config::default(), Faults::NONE);
    let a = net.add_founder("native a");
    let b = net.add_paired(a, "native b");
    let (ea, eb) = (net.nodes[a].engine.take().unwrap(), net.nodes[b].engine.take().unwrap());
    (ea, eb)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 }
}

async fn in_process(mib: usize, bind: &str) {
    let (mut ea, mut eb) = paired_engines();
    let (mut open_ms, mut auth_ms) = (Vec::new(), Vec::new());
    for trial in 0..10u64 {
        let started = Instant::now();
        let (a, b, open) = connect(bind).await;
        let key = 100 + trial;
        let (ra, rb) = tokio::join!(authenticate(ea, key, &a), authenticate(eb, key, &b));
        let session = started.elapsed();
        (ea, eb) = (ra, rb);
        ea.handle_peer_down(key);
        eb.handle_peer_down(key);
        let _ = a.pc.close().await;
        let _ = b.pc.close().await;
        open_ms.push(open.as_secs_f64() * 1000.0);
        auth_ms.push(session.as_secs_f64() * 1000.0);
        println!(
            "{{\"trial\": {trial}, \"channelOpenMs\": {:.2}, \"authenticatedSessionMs\": {:.2}}}",
            open.as_secs_f64() * 1000.0,
            session.as_secs_f64() * 1000.0
        );
    }

    let (a, b, _) = connect(bind).await;
    let total = mib * 1024 * 1024;
    let frame = BytesMut::from(vec![7u8; FRAME].as_slice());
    let dc_b = b.dc.clone();
    let receiver = tokio::spawn(async move {
        let mut got = 0usize;
        let start = Instant::now();
        while got < total {
            match dc_b.poll().await {
                Some(DataChannelEvent::OnMessage(m)) => got += m.data.len(),
                Some(DataChannelEvent::OnClose) | None => break,
                _ => {}
            }
        }
        (got, start.elapsed())
    });
    let mut sent = 0;
    while sent < total {
        a.dc.send(frame.clone()).await.unwrap();
        sent += frame.len();
    }
    let (got, took) = receiver.await.unwrap();
    let mbps = got as f64 / took.as_secs_f64() / 1e6;
    println!(
        "{{\"summary\": true, \"channelOpenMedianMs\": {:.2}, \"authenticatedSessionMedianMs\": {:.2}, \
         \"throughputMBps\": {mbps:.2}, \"bytes\": {got}}}",
        median(open_ms),
        median(auth_ms)
    );
    let _ = a.pc.close().await;
    let _ = b.pc.close().await;
}

fn control(tag: u8, n: u64) -> BytesMut {
    let mut m = BytesMut::with_capacity(9);
    m.extend_from_slice(&[tag]);
    m.extend_from_slice(&n.to_be_bytes());
    m
}

/// The native side of the browser bench: answer one offer, then serve the throughput protocol.
async fn answer(bind: &str) {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    let offer: serde_json::Value = serde_json::from_str(&line).unwrap();
    let mut b = side(bind).await;
    let offer = RTCSessionDescription::offer(offer["sdp"].as_str().unwrap().to_owned()).unwrap();
    b.pc.set_remote_description(offer).await.unwrap();
    let answer = b.pc.create_answer(None).await.unwrap();
    b.pc.set_local_description(answer).await.unwrap();
    gathered(&mut b).await;
    let sdp = b.pc.local_description().await.unwrap().sdp;
    println!("{}", serde_json::json!({ "sdp": sdp }));
    wait_open(&b.dc, &mut b.nudges).await;
    eprintln!("channel open");
    let frame = BytesMut::from(vec![9u8; FRAME].as_slice());
    let mut expecting = 0u64;
    let mut got = 0u64;
    while let Some(event) = b.dc.poll().await {
        let DataChannelEvent::OnMessage(m) = event else {
            if matches!(event, DataChannelEvent::OnClose) {
                break;
            }
            continue;
        };
        if m.data.len() == 9 {
            let n = u64::from_be_bytes(m.data[1..9].try_into().unwrap());
            match m.data[0] {
                1 => {
                    (expecting, got) = (n, 0);
                }
                3 => {
                    let mut sent = 0u64;
                    while sent < n {
                        b.dc.send(frame.clone()).await.unwrap();
                        sent += FRAME as u64;
                    }
                }
                _ => {}
            }
            continue;
        }
        got += m.data.len() as u64;
        if expecting > 0 && got >= expecting {
            b.dc.send(control(2, got)).await.unwrap();
            expecting = 0;
        }
    }
    let _ = b.pc.close().await;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bind =
        args.iter().position(|a| a == "--bind").and_then(|i| args.get(i + 1)).map_or("127.0.0.1", String::as_str);
    if args.iter().any(|a| a == "--answer") {
        answer(bind).await;
    } else {
        let mib = args.first().and_then(|a| a.parse().ok()).unwrap_or(64);
        in_process(mib, bind).await;
    }
}
