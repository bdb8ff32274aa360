//! Time-to-discover between bridges on a namespaced LAN: a resident bridge's discovery runs in
//! machine 1; a newcomer's discovery starts in machine 2, again and again, each time a fresh
//! bridge ID and fresh sockets. Measured from the call that starts the newcomer (sockets not yet
//! made) to the moment it has heard the resident, and to the moment the resident has heard it.
//!
//! The CI test runs 30 newcomers and asserts only that each is found (no timing assertion); the
//! campaign (`cargo test --release -p kathon-bridge --test discovery_latency -- --ignored
//! --nocapture`, part of `cargo xtask bench`) runs 500 and prints the percentiles.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_precision_loss
)]

mod lan;

use std::net::Ipv4Addr;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use kathon_bridge::hub::Hub;
use kathon_bridge::mcast::{self, DiscoveryConfig};
use kathon_core::discovery::BridgeId;
use lan::Lan;
use tokio::sync::{mpsc, watch};

const PORT: u16 = 17_390;

fn config(addr: Ipv4Addr) -> DiscoveryConfig {
    DiscoveryConfig {
        interface_v4: Some(addr),
        // Inside the thread's namespace: this machine's eth0.
        interface_v6: nix::net::if_::if_nametoindex("eth0").ok(),
        port: PORT,
        ..DiscoveryConfig::default()
    }
}

/// Per newcomer: (ms until it heard the resident, ms until the resident heard it).
fn campaign(trials: usize) -> Vec<(f64, f64)> {
    let _serial = lan::serial();
    let lan = Lan::up(2);
    let resident_id: BridgeId = [0xaa; 16];
    let (resident_addr, newcomer_addr) = (lan.addr(1), lan.addr(2));
    // The resident: reports each bridge it hears, with the instant, to the test.
    let (heard_tx, heard_rx) = std_mpsc::channel::<(BridgeId, Instant)>();
    let (stop_resident, stop_rx) = watch::channel(false);
    let resident = lan.in_ns(1, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let (found_tx, mut found_rx) = mpsc::channel(64);
            let (status_tx, _status) = watch::channel(None);
            let task = tokio::spawn(mcast::run(
                config(resident_addr),
                Hub::default(),
                resident_id,
                9,
                found_tx,
                status_tx,
                stop_rx,
            ));
            while let Some((id, _)) = found_rx.recv().await {
                let _ = heard_tx.send((id, Instant::now()));
            }
            let _ = task.await;
        });
    });
    std::thread::sleep(Duration::from_millis(300));
    let newcomers = lan.in_ns(2, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let mut out = Vec::with_capacity(trials);
            for trial in 0..trials {
                let mut id: BridgeId = [0; 16];
                id[..8].copy_from_slice(&(trial as u64 + 1).to_be_bytes());
                let (found_tx, mut found_rx) = mpsc::channel(64);
                let (status_tx, _status) = watch::channel(None);
                let (stop, stop_rx) = watch::channel(false);
                let started = Instant::now();
                let task = tokio::spawn(mcast::run(
                    config(newcomer_addr),
                    Hub::default(),
                    id,
                    9,
                    found_tx,
                    status_tx,
                    stop_rx,
                ));
                let heard = tokio::time::timeout(Duration::from_secs(5), async {
                    loop {
                        match found_rx.recv().await {
                            Some((found, _)) if found == resident_id => return Instant::now(),
                            Some(_) => {}
                            None => panic!("discovery stopped"),
                        }
                    }
                })
                .await
                .unwrap_or_else(|_| panic!("newcomer {trial} did not hear the resident in 5 s"));
                // Real newcomers arrive seconds apart; leave the resident's answer budget time
                // to refill, and this newcomer's sockets time to close.
                tokio::time::sleep(Duration::from_millis(150)).await;
                let _ = stop.send(true);
                let _ = task.await;
                out.push((id, started, heard));
            }
            out
        })
    });
    let runs = newcomers.join().unwrap();
    let _ = stop_resident.send(true);
    resident.join().unwrap();
    let heard_by_resident: Vec<(BridgeId, Instant)> = heard_rx.try_iter().collect();
    runs.into_iter()
        .map(|(id, started, heard)| {
            let resident_heard = heard_by_resident
                .iter()
                .find(|(b, _)| *b == id)
                .map(|(_, at)| at.duration_since(started).as_secs_f64() * 1000.0)
                .unwrap_or_else(|| panic!("the resident never heard newcomer {id:?}"));
            (heard.duration_since(started).as_secs_f64() * 1000.0, resident_heard)
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn report(results: &[(f64, f64)]) {
    for (what, pick) in [("newcomer hears the resident", 0usize), ("resident hears the newcomer", 1)] {
        let mut ms: Vec<f64> = results.iter().map(|r| if pick == 0 { r.0 } else { r.1 }).collect();
        ms.sort_by(f64::total_cmp);
        println!(
            "time-to-discover, {what}, {} newcomers: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms.len(),
            percentile(&ms, 50.0),
            percentile(&ms, 95.0),
            percentile(&ms, 99.0),
            ms[ms.len() - 1]
        );
    }
}

#[test]
fn newcomers_are_discovered() {
    if !lan::can_make_namespaces() {
        assert!(std::env::var_os("KATHON_SKIP_NETNS").is_some(), "needs root (or KATHON_SKIP_NETNS=1)");
        return;
    }
    let results = campaign(30);
    assert_eq!(results.len(), 30);
    report(&results);
}

#[test]
#[ignore = "a campaign: run by cargo xtask bench"]
fn discovery_latency_campaign() {
    let results = campaign(500);
    report(&results);
}
