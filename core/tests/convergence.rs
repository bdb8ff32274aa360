//! Convergence of the browser-state model under random schedules.
//!
//! Each schedule (a seed) runs 3–5 replicas doing random operations of every kind — bookmark
//! adds, edits, moves that would form cycles, folder deletes concurrent with edits inside them,
//! password field edits, history visits and deletions by URL, range and all, workspaces, keys —
//! while envelopes travel in random order, duplicated and replayed, some from a replica whose
//! clock runs an hour fast. After a final exchange every replica must hold byte-identical encoded
//! state and an identical JSON view.
//!
//! `KATHON_SCHEDULES` sets how many seeds run (10,000 by default; `cargo xtask soak` runs more).
//! Seeds that ever failed are listed in `tests/regressions/convergence.txt` and always run first.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{Fixture, Replica, T0};
use kathon_core::envelope::Envelope;
use kathon_core::model::vault::VaultKey;
use kathon_core::model::{Received, Settings};
use kathon_core::testing::{RandomView, check_tree, random_change};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

struct Rng(ChaCha20Rng);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.0.next_u64() % 100 < percent
    }
}

fn settings() -> Settings {
    // The mass-deletion guard is tested on its own; here it would hold batches for a user.
    Settings { mass_delete_count: usize::MAX, mass_delete_min: usize::MAX, ..Settings::default() }
}

struct World {
    replicas: Vec<Replica>,
    offsets: Vec<u64>,
    now: u64,
    /// Messages in flight: (to, envelope bytes).
    wire: Vec<(usize, Vec<u8>)>,
}

impl World {
    fn local_time(&self, r: usize) -> u64 {
        self.now + self.offsets[r]
    }

    fn broadcast(&mut self, from: usize, bytes: Vec<Vec<u8>>) {
        for to in 0..self.replicas.len() {
            if to != from {
                for b in &bytes {
                    self.wire.push((to, b.clone()));
                }
            }
        }
    }

    fn deliver(&mut self, index: usize) {
        let (to, bytes) = self.wire.swap_remove(index);
        let now = self.local_time(to);
        let envelope = Envelope::decode(&bytes).unwrap();
        match self.replicas[to].state.receive(envelope, now) {
            Ok(Received::Applied(_) | Received::Duplicate | Received::Pending) => {}
            other => panic!("honest envelope refused: {other:?}"),
        }
        assert!(self.replicas[to].state.bookmark_cache_is_fresh(), "stale bookmark tree after a receive");
    }

    fn local_op(&mut self, r: usize, rng: &mut Rng) {
        let now = self.local_time(r);
        let replica = &mut self.replicas[r];
        let view = RandomView::of(&replica.state);
        let (_, envelopes) =
            replica.state.transact(now, &mut replica.rng, |e| random_change(e, &view, &mut rng.0, now)).unwrap();
        assert!(replica.state.bookmark_cache_is_fresh(), "a patched bookmark tree differs from the registers");
        let bytes: Vec<Vec<u8>> = envelopes.iter().map(|e| e.encode()).collect();
        self.broadcast(r, bytes);
    }

    /// Everyone sends everyone everything until nothing changes; then all must be equal.
    fn settle(&mut self) {
        self.now += 2 * 3_600_000; // past every fast clock
        let n = self.replicas.len();
        for _round in 0..4 {
            for from in 0..n {
                let bytes: Vec<Vec<u8>> = self.replicas[from].state.envelopes().map(|e| e.encode()).collect();
                for to in 0..n {
                    if to != from {
                        let now = self.local_time(to);
                        self.replicas[to].state.handle_timeout(now);
                        for b in &bytes {
                            self.replicas[to].state.receive(Envelope::decode(b).unwrap(), now).unwrap();
                        }
                    }
                }
            }
        }
    }
}

fn run_schedule(fx: &Fixture, seed: u64) {
    let mut rng = Rng(ChaCha20Rng::seed_from_u64(seed));
    let n = 3 + rng.below(3);
    let vault_key = VaultKey::generate(&mut rng.0);
    let mut replicas: Vec<Replica> =
        (0..n).map(|i| fx.replica_with(i, seed.wrapping_mul(31).wrapping_add(i as u64), settings())).collect();
    for r in &mut replicas {
        r.state.vault_mut().insert(vault_key.clone(), true);
    }
    let mut offsets: Vec<u64> = (0..n).map(|_| rng.below(3000) as u64).collect();
    if rng.chance(20) {
        offsets[0] += 3_600_000; // one clock an hour fast
    }
    let mut world = World { replicas, offsets, now: T0, wire: Vec::new() };
    let steps = 10 + rng.below(30);
    for _ in 0..steps {
        match rng.below(10) {
            0..=4 => {
                let r = rng.below(n);
                world.local_op(r, &mut rng);
            }
            5..=7 => {
                // Deliver a few messages in random order.
                for _ in 0..=rng.below(4) {
                    if !world.wire.is_empty() {
                        let i = rng.below(world.wire.len());
                        world.deliver(i);
                    }
                }
            }
            8 => {
                // Duplicate or replay: a message in flight, or one from someone's log.
                if rng.chance(50) && !world.wire.is_empty() {
                    let copy = world.wire[rng.below(world.wire.len())].clone();
                    world.wire.push(copy);
                } else {
                    let from = rng.below(n);
                    let log: Vec<Vec<u8>> = world.replicas[from].state.envelopes().map(|e| e.encode()).collect();
                    if let Some(bytes) = log.get(rng.below(log.len().max(1))) {
                        world.wire.push((rng.below(n), bytes.clone()));
                    }
                }
            }
            _ => world.now += rng.below(60_000) as u64,
        }
    }
    // Deliver what is left, in random order, then settle.
    while !world.wire.is_empty() {
        let i = rng.below(world.wire.len());
        world.deliver(i);
    }
    world.settle();
    let first = &world.replicas[0].state;
    let state = first.encode_state();
    let json = first.to_json();
    for (i, r) in world.replicas.iter().enumerate().skip(1) {
        assert_eq!(r.state.pending_len(), 0, "seed {seed}: replica {i} still has pending envelopes");
        assert_eq!(r.state.to_json(), json, "seed {seed}: replica {i} shows a different state");
        assert!(r.state.encode_state() == state, "seed {seed}: replica {i} encodes different bytes");
    }
    if let Err(e) = check_tree(first) {
        panic!("seed {seed}: {e}");
    }
}

fn regression_seeds() -> Vec<u64> {
    include_str!("regressions/convergence.txt")
        .lines()
        .filter_map(|l| l.split('#').next())
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn random_schedules_converge() {
    let fx = Fixture::new(2026, 5);
    let schedules: u64 = std::env::var("KATHON_SCHEDULES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let base: u64 = std::env::var("KATHON_SEED_BASE").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    for seed in regression_seeds() {
        run_schedule(&fx, seed);
    }
    // Schedules are independent: spread them over the cores.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    std::thread::scope(|scope| {
        for worker in 0..workers {
            let fx = &fx;
            scope.spawn(move || {
                for seed in (base + worker..base + schedules).step_by(workers as usize) {
                    run_schedule(fx, seed);
                }
            });
        }
    });
}
