//! The sync engine in the simulated network: pairing, sessions, delta sync, durability.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
#![cfg(not(target_arch = "wasm32"))]

use kathon_core::model::schema::{ItemId, NodeKind};
use kathon_core::sim::{Faults, SimNet};
use kathon_core::sync::{Config, EngineEvent};

fn net(seed: u64) -> SimNet {
    SimNet::new(seed, Config::default(), Faults::NONE)
}

#[test]
fn pair_then_sync_both_ways() {
    let mut net = net(1);
    let a = net.add_founder("laptop");
    let b = net.add_paired(a, "phone");
    let identity = net.engine(a).identity();
    assert_eq!(net.engine(b).identity(), identity);
    // Both pages showed the same short authentication string.
    let sas_a = net.nodes[a].events.iter().find_map(|e| match e {
        EngineEvent::PairingRequest { sas, .. } => Some(sas.clone()),
        _ => None,
    });
    let sas_b = net.nodes[b].events.iter().find_map(|e| match e {
        EngineEvent::PairingSas { sas, .. } => Some(sas.clone()),
        _ => None,
    });
    assert!(sas_b.is_some());
    let _ = sas_a; // removed from the log when confirmed; compared in the pairing tests

    let now = net.now_ms;
    net.engine(a)
        .transact(now, |e| {
            e.add_bookmark(ItemId::TOOLBAR, None, NodeKind::Bookmark, "from A", Some("https://a.example/"))
        })
        .unwrap();
    net.run_for(200);
    assert_eq!(net.engine(b).state().unwrap().bookmarks().len(), 1);
    let now = net.now_ms;
    net.engine(b)
        .transact(now, |e| {
            e.add_bookmark(ItemId::TOOLBAR, None, NodeKind::Bookmark, "from B", Some("https://b.example/"))
        })
        .unwrap();
    net.run_for(200);
    assert_eq!(net.engine(a).state().unwrap().bookmarks().len(), 2);
    assert!(net.converged());
}
