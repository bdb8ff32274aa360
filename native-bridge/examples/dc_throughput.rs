//! Data-channel connect time and throughput between two native peers with the bridge's exact
//! WebRTC settings (host candidates on loopback, mDNS off, one negotiated ordered channel, a
//! 128 KiB send buffer, 16 KiB messages — the engine's frame size).
//!
//! `cargo run -p kathon-bridge --release --example dc_throughput [MiB]` (loopback only).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::arithmetic_side_effects, clippy::cast_precision_loss)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kathon_bridge::peer::SEND_BUFFER_LIMIT;
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState,
    SettingEngineBuilder,
};

struct Gathered(mpsc::Sender<()>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Gathered {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.0.try_send(());
        }
    }
}

async fn peer() -> (Arc<dyn PeerConnection>, Arc<dyn DataChannel>, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel(1);
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(
            SettingEngineBuilder::new()
                .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
                .with_include_loopback_candidate(true)
                .build(),
        )
        .with_handler(Arc::new(Gathered(tx)))
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .with_data_channel_send_buffer_limit(SEND_BUFFER_LIMIT)
        .build()
        .await
        .unwrap();
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    let init = RTCDataChannelInit { ordered: true, negotiated: Some(0), ..Default::default() };
    let dc = pc.create_data_channel("kathon", Some(init)).await.unwrap();
    (pc, dc, rx)
}

async fn wait_open(dc: &Arc<dyn DataChannel>) {
    while let Some(event) = dc.poll().await {
        if matches!(event, DataChannelEvent::OnOpen) {
            return;
        }
    }
}

#[tokio::main]
async fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let started = Instant::now();
    let (offerer, dc_a, mut gathered_a) = peer().await;
    let (answerer, dc_b, mut gathered_b) = peer().await;
    let offer = offerer.create_offer(None).await.unwrap();
    offerer.set_local_description(offer).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(3), gathered_a.recv()).await;
    answerer.set_remote_description(offerer.local_description().await.unwrap()).await.unwrap();
    let answer = answerer.create_answer(None).await.unwrap();
    answerer.set_local_description(answer).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(3), gathered_b.recv()).await;
    offerer.set_remote_description(answerer.local_description().await.unwrap()).await.unwrap();
    tokio::join!(wait_open(&dc_a), wait_open(&dc_b));
    let connect = started.elapsed();

    let total = mib * 1024 * 1024;
    let frame = BytesMut::from(vec![7u8; 16 * 1024].as_slice());
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
        dc_a.send(frame.clone()).await.unwrap();
        sent += frame.len();
    }
    let (got, took) = receiver.await.unwrap();
    println!(
        "connect (build both, offer/answer, ICE, DTLS, SCTP, channel open): {connect:?}\n\
         {got} bytes in {took:?}: {:.1} MB/s ({:.0} Mbit/s), 16 KiB messages, {} KiB send buffer",
        got as f64 / took.as_secs_f64() / 1e6,
        got as f64 * 8.0 / took.as_secs_f64() / 1e6,
        SEND_BUFFER_LIMIT / 1024
    );
    let _ = offerer.close().await;
    let _ = answerer.close().await;
}
