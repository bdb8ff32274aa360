//! Seeded schedules of whole engines in the simulated network: 3–5 devices (paired for real),
//! random edits of every data type, 10 % frame loss, 10 % duplication, reordering by jitter,
//! partitions, crashes that lose whatever was not durable, and restarts from storage. After the
//! network heals, every device must hold identical state within 3 sync rounds, and no
//! acknowledged write may be missing anywhere.
//!
//! Odd seeds run with a group-commit window (`Config::group_commit_ms`, 8 ms, what the browser
//! driver uses), even seeds without one.
//!
//! `KATHON_SIM_SCHEDULES` sets how many seeds run (10,000 by default; `cargo xtask soak` runs
//! more). Seeds that once failed are in `tests/regressions/sim.txt` and always run first, with
//! and without the window.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
#![cfg(not(target_arch = "wasm32"))]

use std::sync::OnceLock;

use kathon_core::sim::{Faults, SimNet};
use kathon_core::sync::{Config, RecordKey};
use kathon_core::testing::{RandomView, check_tree, random_change};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const LOSSY: Faults = Faults { loss_percent: 10, dup_percent: 10, latency_ms: 3, jitter_ms: 40 };

fn config() -> Config {
    let mut c = Config::default();
    // The mass-deletion guard holds batches for a user; it has its own tests.
    c.settings.mass_delete_count = usize::MAX;
    c.settings.mass_delete_min = usize::MAX;
    c
}

/// Paired devices are expensive to make (signatures, handshakes); schedules start from copies of
/// networks built once per size. Each copy still restarts every engine from its own storage.
/// Per device: its identity record, and its other records.
type Stored = (Vec<Vec<u8>>, Vec<Vec<(RecordKey, Vec<u8>)>>);

fn template(n: usize) -> &'static Stored {
    static TEMPLATES: [OnceLock<Stored>; 6] = [const { OnceLock::new() }; 6];
    TEMPLATES[n].get_or_init(|| {
        let mut net = SimNet::new(n as u64, config(), Faults::NONE);
        let founder = net.add_founder("device 0");
        for i in 1..n {
            net.add_paired(founder, &format!("device {i}"));
        }
        net.run_for(1_000);
        let identities = net.nodes.iter().map(|node| node.storage[&RecordKey::Identity].clone()).collect();
        let records = net
            .nodes
            .iter()
            .map(|node| {
                node.storage.iter().filter(|(k, _)| **k != RecordKey::Identity).map(|(k, v)| (*k, v.clone())).collect()
            })
            .collect();
        (identities, records)
    })
}

/// The window odd seeds run with.
const GROUP_COMMIT_MS: u64 = 8;

fn window_of(seed: u64) -> u64 {
    if seed % 2 == 1 { GROUP_COMMIT_MS } else { 0 }
}

fn build(seed: u64, n: usize, group_commit_ms: u64) -> SimNet {
    let (identities, records) = template(n);
    let mut net = SimNet::new(seed, Config { group_commit_ms, ..config() }, Faults::NONE);
    net.load_nodes(identities, records);
    net
}

fn verbose() -> bool {
    std::env::var("KATHON_SIM_VERBOSE").is_ok()
}

/// Prints each node's chains, storage and session events (`KATHON_SIM_VERBOSE=1`).
fn dump(net: &SimNet, round: u32) {
    eprintln!("round {round}: {} connections", net.links());
    for (j, node) in net.nodes.iter().enumerate() {
        let Some(e) = node.engine.as_ref() else { continue };
        let Some(s) = e.state() else { continue };
        eprintln!(
            "  node {j}: heads {:?} durable {:?} pending {} held {} connected {}",
            s.chains().heads().map(|(_, n)| n).collect::<Vec<_>>(),
            e.durable_heads().values().collect::<Vec<_>>(),
            s.pending_len(),
            s.held().count(),
            e.connected().len()
        );
        for event in node.events.iter().filter(|ev| {
            !matches!(ev, kathon_core::sync::EngineEvent::Model(_) | kathon_core::sync::EngineEvent::Committed(_))
        }) {
            eprintln!("     {event:?}");
        }
    }
}

fn run_schedule(seed: u64, group_commit_ms: u64) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut below = |n: u64| rng.next_u64() % n.max(1);
    let n = 3 + below(3) as usize;
    let mut net = build(seed, n, group_commit_ms);
    net.faults = LOSSY;
    net.connect_all();
    let steps = 12 + below(20);
    let mut edit_rng = ChaCha20Rng::seed_from_u64(seed ^ 0x5eed);
    for _ in 0..steps {
        match below(20) {
            0..=8 => {
                let i = below(n as u64) as usize;
                if verbose() {
                    eprintln!("t={} edit on {i} (up: {})", net.now_ms, net.nodes[i].engine.is_some());
                }
                let now = net.now_ms + net.nodes[i].clock_offset_ms;
                if let Some(engine) = net.nodes[i].engine.as_mut() {
                    let view = RandomView::of(engine.state().unwrap());
                    engine.transact(now, |e| random_change(e, &view, &mut edit_rng, now)).unwrap();
                    assert!(engine.state().unwrap().bookmark_cache_is_fresh(), "seed {seed}: stale bookmark tree");
                }
            }
            9..=12 => net.run_for(10 + below(1_500)),
            13 => {
                let (a, b) = (below(n as u64) as usize, below(n as u64) as usize);
                if a != b {
                    net.partition(a, b);
                }
            }
            14 => net.heal(),
            15 => {
                let i = below(n as u64) as usize;
                if verbose() {
                    eprintln!(
                        "t={} crash/restart {i} (up: {}, unflushed {})",
                        net.now_ms,
                        net.nodes[i].engine.is_some(),
                        net.nodes[i].unflushed.len()
                    );
                }
                if net.nodes[i].engine.is_some() {
                    net.crash(i);
                } else {
                    net.restart(i);
                    net.connect_all();
                }
            }
            16 => {
                // Slow storage: batches wait until flushed (a crash loses them).
                let i = below(n as u64) as usize;
                net.nodes[i].instant_storage = !net.nodes[i].instant_storage;
                if net.nodes[i].instant_storage {
                    net.flush(i);
                }
            }
            17 => {
                let i = below(n as u64) as usize;
                net.flush(i);
            }
            _ => net.run_for(below(200)),
        }
    }
    // Heal: everyone up, storage flushed, a clean network, every pair connected.
    for i in 0..n {
        if net.nodes[i].engine.is_none() {
            net.restart(i);
        }
        net.nodes[i].instant_storage = true;
        net.flush(i);
    }
    net.faults = Faults::NONE;
    net.heal();
    let round = config().summary_interval_ms;
    let mut rounds = 0;
    while !net.converged() {
        if verbose() {
            dump(&net, rounds);
        }
        rounds += 1;
        assert!(rounds <= 3, "seed {seed}: not converged after 3 sync rounds");
        net.run_for(round);
    }
    // Every acknowledged write is everywhere.
    for (owner, node) in net.nodes.iter().enumerate() {
        for id in &node.acknowledged {
            if verbose() {
                let stored = node.storage.contains_key(&kathon_core::sync::RecordKey::Envelope(*id));
                let held = node.engine.as_ref().unwrap().state().unwrap().envelope(id).is_some();
                eprintln!("ack {id} by node {owner}: stored {stored}, in its state {held}");
            }
            for (j, other) in net.nodes.iter().enumerate() {
                let state = other.engine.as_ref().unwrap().state().unwrap();
                if state.envelope(id).is_none() && verbose() {
                    let mine = node.engine.as_ref().unwrap().state().unwrap();
                    let e = mine.envelope(id).unwrap();
                    eprintln!(
                        "missing: author {:?} seq {} kind {}; node {j} head {:?}, owner head {:?}, pending {}, heads durable {:?}",
                        e.author(),
                        e.seq(),
                        e.kind(),
                        state.chains().head(e.author()),
                        mine.chains().head(e.author()),
                        state.pending_len(),
                        other.engine.as_ref().unwrap().durable_heads().get(e.author())
                    );
                }
                assert!(state.envelope(id).is_some(), "seed {seed}: acknowledged write {id} missing on node {j}");
            }
        }
    }
    let state = net.nodes[0].engine.as_ref().unwrap().state().unwrap();
    if verbose() {
        eprintln!(
            "seed {seed}: {n} devices, {} envelopes, {} bookmarks, {} visits, {} frames, {} bytes, {rounds} rounds, {} acknowledged",
            state.envelopes().count(),
            state.bookmarks().len(),
            state.history_len(),
            net.frames_sent,
            net.bytes_sent,
            net.nodes.iter().map(|n| n.acknowledged.len()).sum::<usize>()
        );
    }
    if let Err(e) = check_tree(state) {
        panic!("seed {seed}: {e}");
    }
    let json = state.to_json();
    for (j, node) in net.nodes.iter().enumerate().skip(1) {
        assert_eq!(node.engine.as_ref().unwrap().state().unwrap().to_json(), json, "seed {seed}: node {j} differs");
    }
}

#[test]
fn lossy_partitioned_crashing_networks_converge() {
    if let Some(seed) = std::env::var("KATHON_SIM_SEED").ok().and_then(|v| v.parse().ok()) {
        return run_schedule(seed, window_of(seed));
    }
    let schedules: u64 = std::env::var("KATHON_SIM_SCHEDULES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let base: u64 = std::env::var("KATHON_SEED_BASE").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    for seed in include_str!("regressions/sim.txt").lines().filter_map(|l| l.split('#').next()?.trim().parse().ok()) {
        run_schedule(seed, 0);
        run_schedule(seed, GROUP_COMMIT_MS);
    }
    for n in 3..=5 {
        template(n);
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    std::thread::scope(|scope| {
        for worker in 0..workers {
            scope.spawn(move || {
                for seed in (base + worker..base + schedules).step_by(workers as usize) {
                    run_schedule(seed, window_of(seed));
                }
            });
        }
    });
}
