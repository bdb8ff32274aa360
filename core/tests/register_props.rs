//! Property tests of the signed LWW register over random histories of 3–5 writers with random
//! clocks and skews: merge is commutative, associative and idempotent; resolution is order
//! independent; a corrected clock is never locked out; a far-future value loses to any value
//! written after seeing it. Failing cases are kept in `proptest-regressions/`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::Fixture;
use kathon_core::hlc::{HybridClock, Timestamp};
use kathon_core::register::{Register, VerifiedRegisterValue};
use proptest::prelude::*;

const PATH: &str = "bookmarks/b1/title";
const SKEW: u64 = 60_000;
const START: u64 = 1_700_000_000_000;

#[derive(Clone, Debug)]
enum Op {
    /// Writer writes a value.
    Write(usize),
    /// Writer `to` receives everything `from` holds.
    Sync { from: usize, to: usize },
    /// Real time passes.
    Wait(u64),
}

fn op(writers: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..writers).prop_map(Op::Write),
        3 => (0..writers, 0..writers).prop_map(|(from, to)| Op::Sync { from, to }),
        1 => (0u64..120_000).prop_map(Op::Wait),
    ]
}

/// Clock offsets: mostly small, sometimes far in the future or past.
fn offset() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => -5_000i64..5_000,
        1 => 3_600_000i64..86_400_000,
        1 => -86_400_000i64..-3_600_000,
    ]
}

fn history() -> impl Strategy<Value = (Vec<i64>, Vec<Op>)> {
    (3usize..=5)
        .prop_flat_map(|writers| (prop::collection::vec(offset(), writers), prop::collection::vec(op(writers), 1..60)))
}

struct World {
    fx: Fixture,
    replicas: Vec<Register>,
    clocks: Vec<HybridClock>,
    offsets: Vec<i64>,
    now: u64,
    written: Vec<VerifiedRegisterValue>,
}

impl World {
    fn new(offsets: Vec<i64>) -> Self {
        let n = offsets.len();
        Self {
            fx: Fixture::new(21, n),
            replicas: vec![Register::new(); n],
            clocks: vec![HybridClock::new(SKEW); n],
            offsets,
            now: START,
            written: Vec::new(),
        }
    }

    fn local_time(&self, w: usize) -> u64 {
        self.now.saturating_add_signed(self.offsets[w])
    }

    fn run(&mut self, op: &Op) {
        match *op {
            Op::Write(w) => {
                let local = self.local_time(w);
                let hlc = self.clocks[w].tick(local).unwrap();
                let value = format!("{w}@{hlc:?}").into_bytes();
                let v = self.replicas[w]
                    .write(&std::sync::Arc::new(self.fx.devices[w].public()), PATH, value, hlc)
                    .unwrap();
                self.written.push(v);
            }
            Op::Sync { from, to } => {
                let incoming = self.replicas[from].clone();
                let local = self.local_time(to);
                for v in incoming.values() {
                    // A stamp too far ahead does not move the clock; the value is still merged.
                    let _ = self.clocks[to].observe(v.hlc(), local);
                }
                self.replicas[to].merge(&incoming);
            }
            Op::Wait(ms) => self.now += ms,
        }
    }
}

fn merged(a: &Register, b: &Register) -> Register {
    let mut out = a.clone();
    out.merge(b);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn merge_is_commutative_associative_idempotent((offsets, ops) in history()) {
        let mut world = World::new(offsets);
        for op in &ops {
            world.run(op);
        }
        let r = &world.replicas;
        for a in r {
            prop_assert_eq!(&merged(a, a), a);
            for b in r {
                prop_assert_eq!(merged(a, b), merged(b, a));
                for c in r {
                    prop_assert_eq!(merged(&merged(a, b), c), merged(a, &merged(b, c)));
                }
            }
        }
    }

    #[test]
    fn delivery_order_does_not_matter((offsets, ops) in history(), seed in any::<u64>()) {
        let mut world = World::new(offsets);
        for op in &ops {
            world.run(op);
        }
        let mut in_order = Register::new();
        for v in &world.written {
            in_order.insert(v.clone());
        }
        // Shuffle deterministically from `seed`, deliver each value up to three times.
        let mut shuffled: Vec<&VerifiedRegisterValue> = world.written.iter().chain(&world.written).collect();
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let mut reordered = Register::new();
        for v in shuffled {
            reordered.insert(v.clone());
        }
        prop_assert_eq!(&reordered, &in_order);
        for now in [START, world.now, u64::MAX] {
            prop_assert_eq!(reordered.current(now, SKEW).map(|v| v.id()), in_order.current(now, SKEW).map(|v| v.id()));
        }
    }

    /// After everyone has synced, a write by any writer whose own stamp is visible wins
    /// everywhere, whatever the other clocks said — far-future values included.
    #[test]
    fn a_write_after_seeing_everything_wins((offsets, ops) in history(), writer in 0usize..3) {
        let mut world = World::new(offsets);
        for op in &ops {
            world.run(op);
        }
        let n = world.replicas.len();
        for to in 0..n {
            for from in 0..n {
                world.run(&Op::Sync { from, to });
            }
        }
        world.run(&Op::Write(writer));
        let last = world.written.last().unwrap().clone();
        for to in 0..n {
            world.run(&Op::Sync { from: writer, to });
        }
        // Read at a time where the new value is visible.
        let read_at = last.hlc().wall_ms.max(world.now);
        for replica in &world.replicas {
            prop_assert_eq!(replica.current(read_at, SKEW).map(|v| v.id()), Some(last.id()));
        }
    }
}

#[test]
fn a_corrected_clock_is_never_locked_out() {
    let fx = Fixture::new(22, 2);
    let (fast, honest) = (&fx.devices[0], &fx.devices[1]);
    let mut shared = Register::new();
    // The fast device's clock is a day ahead; its value is within nobody's skew.
    let future = shared
        .write(
            &std::sync::Arc::new(fast.public()),
            PATH,
            b"from the future".to_vec(),
            Timestamp::from_wall_ms(START + 86_400_000),
        )
        .unwrap();
    // Held back, not dropped: it is stored, but not current yet.
    assert_eq!(shared.values().count(), 1);
    assert_eq!(shared.current(START, SKEW), None);
    // The honest device writes after receiving it, with a far earlier clock, and wins now...
    let honest_value = shared
        .write(&std::sync::Arc::new(honest.public()), PATH, b"now".to_vec(), Timestamp::from_wall_ms(START))
        .unwrap();
    assert_eq!(shared.current(START, SKEW).map(|v| v.id()), Some(honest_value.id()));
    // ...and still wins once real time reaches the future stamp, because it supersedes it.
    assert_eq!(shared.current(START + 86_400_000, SKEW).map(|v| v.id()), Some(honest_value.id()));
    assert!(honest_value.supersedes().contains(&future.id()));
}

#[test]
fn a_held_back_value_appears_when_its_time_comes() {
    let fx = Fixture::new(23, 2);
    let mut a = Register::new();
    let early = a
        .write(&std::sync::Arc::new(fx.devices[0].public()), PATH, b"early".to_vec(), Timestamp::from_wall_ms(START))
        .unwrap();
    let mut b = Register::new();
    let later = b
        .write(
            &std::sync::Arc::new(fx.devices[1].public()),
            PATH,
            b"later".to_vec(),
            Timestamp::from_wall_ms(START + 3_600_000),
        )
        .unwrap();
    a.merge(&b);
    // Concurrent writes: the later stamp wins, but only once it is within the skew of local time.
    assert_eq!(a.current(START, SKEW).map(|v| v.id()), Some(early.id()));
    assert_eq!(a.current(START + 3_600_000 - SKEW, SKEW).map(|v| v.id()), Some(later.id()));
}
