//! The browser write bench's pattern natively, for an instruction-level profiler: bookmark adds
//! arriving one every 40 µs of virtual time, the driver's timer run after each (`drive`), and
//! each storage batch acknowledged 5 ms after it was taken (IndexedDB's commit). The group
//! commit then seals every ~100–200 edits, as in the page. Deterministic: the clock is virtual.
//!
//! `cargo build --release -p kathon-benches --example write_path`, then
//! `valgrind --tool=callgrind target/release/examples/write_path [edits]` (instruction counts
//! per function, without the timing noise of a shared VM) — or run it bare for a wall time.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects, clippy::cast_possible_truncation, missing_docs)]

use kathon_core::model::schema::{ItemId, NodeKind};
use kathon_core::sim::{Faults, SimNet};
use kathon_core::sync::Config;
use std::collections::VecDeque;

fn main() {
    let edits: u64 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(4_000);
    let mut net = SimNet::new(1, Config::default(), Faults::NONE);
    let a = net.add_founder("a");
    let start_ms = net.now_ms;
    let engine = net.engine(a);
    // Titles and URLs made up front: the loop times the store, not `format!`.
    let texts: Vec<(String, String)> = (0..edits)
        .map(|i| {
            (
                format!("Bookmark number {i}: an article worth reading"),
                format!("https://example{}.org/articles/{i}/a-reasonably-long-path", i % 97),
            )
        })
        .collect();
    let mut in_flight: VecDeque<(u64, u64)> = VecDeque::new();
    let mut envelopes = 0usize;
    let started = std::time::Instant::now();
    for (i, (title, url)) in texts.iter().enumerate() {
        let now = start_ms + (i as u64 * 40) / 1000;
        while in_flight.front().is_some_and(|(_, done_at)| *done_at <= now) {
            if let Some((id, _)) = in_flight.pop_front() {
                engine.handle_storage_done(id);
            }
        }
        engine.transact(now, |e| e.add_bookmark(ItemId::TOOLBAR, None, NodeKind::Bookmark, title, Some(url))).unwrap();
        engine.handle_timeout(now);
        while let Some(batch) = engine.poll_storage() {
            envelopes += batch.puts.len();
            in_flight.push_back((batch.id, now + 5));
        }
        while engine.poll_event().is_some() {}
    }
    engine.seal_waiting();
    while engine.poll_storage().is_some() {}
    let elapsed = started.elapsed();
    println!(
        "{edits} adds in {:.1} ms ({:.2} µs per add), {envelopes} records put",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e6 / edits as f64
    );
}
