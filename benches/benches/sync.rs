//! Sync cost in the simulated network, between two paired devices: a full sync of the realistic
//! profile, then incremental syncs of k = 1, 10, 100, 1000 changes — bytes, frames, and round
//! trips (time to converge over the round-trip time). Prints a table; no timing assertions.
//!
//! `cargo bench -p kathon-benches --bench sync` (`KATHON_PROFILE=small` for a quick run).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    missing_docs
)]

use kathon_core::model::schema::{ItemId, NodeKind};
use kathon_core::sim::{Faults, SimNet};
use kathon_core::sync::Config;
use kathon_core::testing::{Profile, ProfileSize};

const LATENCY_MS: u64 = 5;

fn converge(net: &mut SimNet) -> u64 {
    let start = net.now_ms;
    while !net.converged() {
        net.run_for(1);
        assert!(net.now_ms - start < 600_000, "did not converge");
    }
    net.now_ms - start
}

fn main() {
    let size = if std::env::var("KATHON_PROFILE").as_deref() == Ok("small") {
        ProfileSize::SMALL
    } else {
        ProfileSize::REALISTIC
    };
    let mut net = SimNet::new(1, Config::default(), Faults::NONE);
    let a = net.add_founder("a");
    let b = net.add_paired(a, "b");
    net.faults = Faults { latency_ms: LATENCY_MS, ..Faults::NONE };
    let profile = Profile::generate(kathon_benches::SEED, size, net.now_ms);
    let now = net.now_ms;
    let engine = net.engine(a);
    engine.transact(now, |e| e.import_bookmarks(&profile.bookmarks)).unwrap();
    engine
        .transact(now, |e| {
            for v in &profile.visits {
                e.record_visit(&v.url, &v.title, v.at_ms, v.transition)?;
            }
            Ok(())
        })
        .unwrap();
    engine.transact(now, |e| e.import_passwords(&profile.passwords)).unwrap();
    engine.transact(now, |e| e.set_device_layout(&profile.layout)).unwrap();
    let rtt = 2 * LATENCY_MS;
    let (bytes, frames) = (net.bytes_sent, net.frames_sent);
    let took = converge(&mut net);
    println!(
        "two paired devices, {LATENCY_MS} ms one-way latency; profile: {} bookmarks, {} visits, {} passwords",
        size.bookmarks, size.visits, size.passwords
    );
    println!();
    println!("| sync | bytes | frames | bytes/change | round trips |");
    println!("|---|--:|--:|--:|--:|");
    println!(
        "| full (B empty) | {} | {} | | {:.1} |",
        net.bytes_sent - bytes,
        net.frames_sent - frames,
        took as f64 / rtt as f64
    );
    assert_eq!(net.engine(b).state().unwrap().history_len(), size.visits);
    for k in [1usize, 10, 100, 1000] {
        let (bytes, frames) = (net.bytes_sent, net.frames_sent);
        let now = net.now_ms;
        for i in 0..k {
            net.engine(a)
                .transact(now, |e| {
                    e.add_bookmark(
                        ItemId::MENU,
                        None,
                        NodeKind::Bookmark,
                        &format!("change {i}"),
                        Some("https://example.org/k"),
                    )
                })
                .unwrap();
        }
        let took = converge(&mut net);
        let sent = net.bytes_sent - bytes;
        println!(
            "| incremental, k = {k} | {sent} | {} | {:.0} | {:.1} |",
            net.frames_sent - frames,
            sent as f64 / k as f64,
            took as f64 / rtt as f64
        );
    }
}
