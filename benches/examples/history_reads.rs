//! Reading history from a cold-opened store, where bulk-recorded visits are held packed (their
//! text deflated in blocks of 64): how long a full-text search, the 500 most recent visits and a
//! deletion by URL take. Reads go through the envelope log's one-block cache; without it each
//! visit read inflated its whole block (search 1.3 s instead of 80 ms natively).
//!
//! `cargo run --release -p kathon-benches --example history_reads` (`KATHON_PROFILE=small` for a
//! quick run). One run of each: rough figures, to compare builds on one machine.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::Instant;

use kathon_core::sync::{Config, Engine, RecordKey};
use kathon_core::testing::{Profile, ProfileSize};

fn main() {
    let size = if std::env::var("KATHON_PROFILE").as_deref() == Ok("small") {
        ProfileSize::SMALL
    } else {
        ProfileSize::REALISTIC
    };
    let now = kathon_benches::PROFILE_NOW;
    let profile = Profile::generate(kathon_benches::SEED, size, now);
    let mut engine = Engine::create_identity(Config::default(), "history", [7; 32], now).unwrap();
    kathon_benches::load_profile(&mut engine, &profile, now);
    let mut stored = std::collections::BTreeMap::new();
    kathon_benches::drain_storage(&mut engine, |key, body| {
        stored.insert(*key, body.to_vec()); // the last write of a key wins, as in a store
    });
    drop(engine);
    let identity_record = stored.remove(&RecordKey::Identity).expect("an identity record");
    let records: Vec<(RecordKey, Vec<u8>)> = stored.into_iter().collect();

    let started = Instant::now();
    let mut engine = Engine::load(Config::default(), &identity_record, records, [9; 32], now).unwrap();
    let load = started.elapsed();
    let state = engine.state().unwrap();
    let packed = state.envelopes().filter(|e| e.attachments_packed()).count();
    let started = Instant::now();
    let found = state.search_history("no such text anywhere").count();
    let search = started.elapsed();
    let started = Instant::now();
    let recent = state.history().take(500).count();
    let recent_time = started.elapsed();
    let url = profile.visits[profile.visits.len() / 2].url.clone();
    let started = Instant::now();
    engine
        .transact(now, |e| {
            e.delete_history_url(&url);
            Ok(())
        })
        .unwrap();
    let delete = started.elapsed();
    println!(
        "{} visits ({packed} packed envelopes): cold open {load:?}; search of every visit {search:?} ({found} found); \
         the {recent} most recent {recent_time:?}; delete by URL {delete:?}",
        size.visits
    );
}
