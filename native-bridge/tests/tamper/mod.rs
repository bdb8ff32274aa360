//! A malicious bridge for the tests: it links to two real bridges over their LAN relay, tells
//! each that the other's endpoints are behind it, and carries their signaling — honestly, as a
//! full WebRTC man in the middle (its own DTLS certificate towards each side, data channels
//! spliced), or by replaying an old offer.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use kathon_bridge::hub::LinkMessage;
use kathon_core::signaling::RtcSignal;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState,
    RTCSessionDescription, SettingEngineBuilder,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Forward everything unchanged (and remember offers).
    Honest,
    /// Terminate WebRTC on both sides with its own certificate and splice the channels.
    ManInTheMiddle,
    /// Drop the live signaling; send the last recorded offer again instead.
    Replay,
}

/// A recorded offer: `(from link, from, to, sdp)`.
type RecordedOffer = (usize, String, String, String);
/// Offers made towards the answering side, by `(from, to)`.
type Waiting = Arc<Mutex<BTreeMap<(String, String), Arc<dyn PeerConnection>>>>;

#[derive(Clone)]
pub(crate) struct Tamper {
    pub(crate) mode: Arc<Mutex<Mode>>,
    /// The last offer seen: `(from link, from, to, sdp)`.
    pub(crate) last_offer: Arc<Mutex<Option<RecordedOffer>>>,
    /// Offers it sent as a man in the middle.
    pub(crate) spliced: Arc<Mutex<u32>>,
    replay_now: Arc<tokio::sync::Notify>,
}

impl Tamper {
    pub(crate) fn new() -> Self {
        Self {
            mode: Arc::new(Mutex::new(Mode::Honest)),
            last_offer: Arc::default(),
            spliced: Arc::default(),
            replay_now: Arc::default(),
        }
    }

    pub(crate) fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
        if mode == Mode::Replay {
            self.replay_now.notify_one();
        }
    }

    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap()
    }
}

struct Gathered(mpsc::Sender<()>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Gathered {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.0.try_send(());
        }
    }
}

async fn new_pc(addr: &str) -> (Arc<dyn PeerConnection>, Arc<dyn DataChannel>, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel(1);
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(
            SettingEngineBuilder::new().with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled).build(),
        )
        .with_handler(Arc::new(Gathered(tx)))
        .with_udp_addrs(vec![format!("{addr}:0")])
        .with_data_channel_send_buffer_limit(128 * 1024)
        .build()
        .await
        .unwrap();
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    let init = RTCDataChannelInit { ordered: true, negotiated: Some(0), ..Default::default() };
    let dc = pc.create_data_channel("kathon", Some(init)).await.unwrap();
    (pc, dc, rx)
}

async fn local_sdp(pc: &Arc<dyn PeerConnection>, gathered: &mut mpsc::Receiver<()>) -> String {
    let _ = tokio::time::timeout(Duration::from_secs(3), gathered.recv()).await;
    pc.local_description().await.unwrap().sdp
}

/// Copies one data channel's messages into the other.
fn splice(from: Arc<dyn DataChannel>, to: Arc<dyn DataChannel>) {
    tokio::spawn(async move {
        while let Some(event) = from.poll().await {
            match event {
                DataChannelEvent::OnMessage(m) => {
                    // The other side may not be connected yet: wait for it, as a real attacker would.
                    for _ in 0..500 {
                        if to.ready_state().await.is_ok_and(|s| s == webrtc::data_channel::RTCDataChannelState::Open) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let _ = to.send(BytesMut::from(&m.data[..])).await;
                }
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
    });
}

/// Runs the malicious bridge (call it on a thread inside its namespace) until the links close.
pub(crate) async fn run(tamper: Tamper, own_addr: String, bridges: [String; 2]) {
    let mut sinks = Vec::new();
    let (in_tx, mut incoming) = mpsc::unbounded_channel::<(usize, LinkMessage)>();
    for (link, addr) in bridges.iter().enumerate() {
        let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/relay")).await.unwrap();
        let (sink, mut stream) = socket.split();
        sinks.push(sink);
        let in_tx = in_tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(Message::Text(text))) = stream.next().await {
                if let Ok(message) = serde_json::from_str::<LinkMessage>(&text) {
                    let _ = in_tx.send((link, message));
                }
            }
        });
    }
    let (out_tx, mut outgoing) = mpsc::unbounded_channel::<(usize, LinkMessage)>();
    // Offers this MITM made towards the answering side, waiting for its answer: (from, to) → pc.
    let waiting: Waiting = Arc::default();
    loop {
        tokio::select! {
            next = incoming.recv() => {
                let Some((link, message)) = next else { return };
                let other = 1 - link;
                match message {
                    LinkMessage::Endpoints { .. } => {
                        let _ = out_tx.send((other, message));
                    }
                    LinkMessage::Relay { from, to, payload } => match tamper.mode() {
                        Mode::Honest => {
                            if let RtcSignal::Offer { sdp } = &payload {
                                *tamper.last_offer.lock().unwrap() = Some((link, from.clone(), to.clone(), sdp.clone()));
                            }
                            let _ = out_tx.send((other, LinkMessage::Relay { from, to, payload }));
                        }
                        Mode::Replay => {} // the live signaling is dropped
                        Mode::ManInTheMiddle => match payload {
                            RtcSignal::Offer { sdp } => {
                                *tamper.spliced.lock().unwrap() += 1;
                                let (out_tx, waiting, own_addr) = (out_tx.clone(), waiting.clone(), own_addr.clone());
                                tokio::spawn(async move {
                                    // Towards the offerer: answer with our own certificate.
                                    let (pc_a, dc_a, mut gathered_a) = new_pc(&own_addr).await;
                                    pc_a.set_remote_description(RTCSessionDescription::offer(sdp).unwrap()).await.unwrap();
                                    let answer = pc_a.create_answer(None).await.unwrap();
                                    pc_a.set_local_description(answer).await.unwrap();
                                    let sdp_a = local_sdp(&pc_a, &mut gathered_a).await;
                                    let _ = out_tx.send((link, LinkMessage::Relay { from: to.clone(), to: from.clone(), payload: RtcSignal::Answer { sdp: sdp_a } }));
                                    // Towards the answerer: offer with our own certificate.
                                    let (pc_b, dc_b, mut gathered_b) = new_pc(&own_addr).await;
                                    let offer = pc_b.create_offer(None).await.unwrap();
                                    pc_b.set_local_description(offer).await.unwrap();
                                    let sdp_b = local_sdp(&pc_b, &mut gathered_b).await;
                                    waiting.lock().unwrap().insert((from.clone(), to.clone()), pc_b.clone());
                                    let _ = out_tx.send((other, LinkMessage::Relay { from, to, payload: RtcSignal::Offer { sdp: sdp_b } }));
                                    splice(dc_a.clone(), dc_b.clone());
                                    splice(dc_b, dc_a);
                                    // Keep both connections alive for the test's length.
                                    tokio::time::sleep(Duration::from_secs(120)).await;
                                    drop((pc_a, pc_b));
                                });
                            }
                            RtcSignal::Answer { sdp } => {
                                let pc = waiting.lock().unwrap().remove(&(to.clone(), from.clone()));
                                if let Some(pc) = pc {
                                    let _ = pc.set_remote_description(RTCSessionDescription::answer(sdp).unwrap()).await;
                                }
                            }
                            _ => {}
                        },
                    },
                }
            }
            () = tamper.replay_now.notified() => {
                let recorded = tamper.last_offer.lock().unwrap().clone();
                if let Some((link, from, to, sdp)) = recorded {
                    let _ = out_tx.send((1 - link, LinkMessage::Relay { from, to, payload: RtcSignal::Offer { sdp } }));
                }
            }
            Some((link, message)) = outgoing.recv() => {
                let text = serde_json::to_string(&message).unwrap();
                if sinks[link].send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
        }
    }
}
