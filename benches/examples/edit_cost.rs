//! The cost of one local bookmark edit as the tree grows: it must stay flat (no rebuild of the
//! tree, no walk over every envelope, per edit). Prints the mean per 500 edits.
//!
//! `cargo run --release -p kathon-benches --example edit_cost [edits]`
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects, clippy::cast_possible_truncation, missing_docs)]

use kathon_core::model::schema::{ItemId, NodeKind};
use kathon_core::sim::{Faults, SimNet};
use kathon_core::sync::Config;

fn main() {
    let edits: u64 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(5_000);
    let mut net = SimNet::new(1, Config::default(), Faults::NONE);
    let a = net.add_founder("a");
    let now = net.now_ms;
    let engine = net.engine(a);
    let mut window = std::time::Instant::now();
    for i in 0..edits {
        let title = format!("Bookmark number {i}: an article worth reading");
        let url = format!("https://example{}.org/articles/{i}/a-reasonably-long-path", i % 97);
        engine
            .transact(now + i, |e| e.add_bookmark(ItemId::TOOLBAR, None, NodeKind::Bookmark, &title, Some(&url)))
            .unwrap();
        while engine.poll_storage().is_some() {}
        while engine.poll_event().is_some() {}
        if (i + 1) % 500 == 0 {
            println!("bookmarks {:>6}: {:>7.1} µs per edit", i + 1, window.elapsed().as_secs_f64() * 1e6 / 500.0);
            window = std::time::Instant::now();
        }
    }
}
