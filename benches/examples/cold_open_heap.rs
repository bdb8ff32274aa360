//! A cold open of the stored realistic profile by itself, for a heap profiler: where the peak of
//! a cold open is, by allocation site.
//!
//! The first run writes the profile's records to a file in the temporary directory (a replica
//! loaded and drained as a driver does) and stops; each later run opens that file, as the browser
//! does: the records are read up front (as IndexedDB hands them over) and copied in one at a time,
//! each dropped once decoded.
//!
//! ```sh
//! CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release -p kathon-benches --example cold_open_heap
//! target/release/examples/cold_open_heap          # writes the records
//! heaptrack target/release/examples/cold_open_heap
//! heaptrack_print -f heaptrack.cold_open_heap.*.zst --print-peaks 1 --sub-peak-limit 30
//! ```
//!
//! The file read up front (11.4 MB) is the largest block at the peak; what follows it is the open.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    missing_docs
)]

use std::io::Write;

use kathon_core::sync::{Config, Engine, RecordKey};
use kathon_core::testing::{Profile, ProfileSize};

fn main() {
    let now = kathon_benches::PROFILE_NOW;
    let path = std::env::temp_dir().join("kathon-cold-open-heap.records");
    if !path.exists() {
        let profile = Profile::generate(kathon_benches::SEED, ProfileSize::REALISTIC, now);
        let mut file = std::fs::File::create(&path).unwrap();
        let mut engine = Engine::create_identity(Config::default(), "heap", [7; 32], now).unwrap();
        kathon_benches::load_profile(&mut engine, &profile, now);
        kathon_benches::drain_storage(&mut engine, |key, body| {
            let key = key.to_text();
            file.write_all(&u32::try_from(key.len()).unwrap().to_be_bytes()).unwrap();
            file.write_all(key.as_bytes()).unwrap();
            file.write_all(&u32::try_from(body.len()).unwrap().to_be_bytes()).unwrap();
            file.write_all(body).unwrap();
        });
        println!("wrote {}; run again (under a heap profiler) to open it", path.display());
        return;
    }
    let bytes = std::fs::read(&path).unwrap();
    // Where each record is; the last write of a key wins, as in a store.
    let mut records = std::collections::BTreeMap::new();
    let mut identity = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let key_len = read_len(&bytes, &mut at);
        let key = RecordKey::from_text(std::str::from_utf8(&bytes[take(&mut at, key_len)]).unwrap()).unwrap();
        let body_len = read_len(&bytes, &mut at);
        let body = take(&mut at, body_len);
        if key == RecordKey::Identity {
            identity = bytes[body].to_vec();
        } else {
            records.insert(key, body);
        }
    }
    let records = records.into_iter().map(|(key, body)| (key, bytes[body].to_vec()));
    let engine = Engine::load(Config::default(), &identity, records, [8; 32], now).unwrap();
    // The first query, as the browser bench's cold open ends with one.
    println!("{:?}", engine.state().unwrap().counts());
}

/// The next `n` bytes' range.
fn take(at: &mut usize, n: usize) -> std::ops::Range<usize> {
    *at += n;
    (*at - n)..*at
}

/// A big-endian `u32` length.
fn read_len(bytes: &[u8], at: &mut usize) -> usize {
    u32::from_be_bytes(bytes[take(at, 4)].try_into().unwrap()) as usize
}
