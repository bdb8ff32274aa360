#![allow(clippy::unwrap_used, missing_docs)]
use kathon_core::sync::{Config, Engine, RecordKey};
use kathon_core::testing::{Profile, ProfileSize};
use std::io::{Read, Write};

fn main() {
    let now = 1_790_000_000_000u64;
    let path = std::path::Path::new("/tmp/kathon-open.bin");
    if !path.exists() {
        let profile = Profile::generate(kathon_benches::SEED, ProfileSize::REALISTIC, now);
        let mut file = std::fs::File::create(path).unwrap();
        let mut engine = Engine::create_identity(Config::default(), "memory", [7; 32], now).unwrap();
        kathon_benches::load_profile(&mut engine, &profile, now);
        kathon_benches::drain_storage(&mut engine, |key, body| {
            let key = key.to_text();
            file.write_all(&(key.len() as u32).to_be_bytes()).unwrap();
            file.write_all(key.as_bytes()).unwrap();
            file.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
            file.write_all(body).unwrap();
        });
        return;
    }
    // last write of a key wins: collect offsets only
    let mut bytes = Vec::new();
    std::fs::File::open(path).unwrap().read_to_end(&mut bytes).unwrap();
    let mut at = 0usize;
    let mut index = std::collections::BTreeMap::new();
    let mut identity = Vec::new();
    while at < bytes.len() {
        let n = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let key = RecordKey::from_text(std::str::from_utf8(&bytes[at + 4..at + 4 + n]).unwrap()).unwrap();
        let len = u32::from_be_bytes(bytes[at + 4 + n..at + 8 + n].try_into().unwrap()) as usize;
        let body = (at + 8 + n)..(at + 8 + n + len);
        at += 8 + n + len;
        if key == RecordKey::Identity {
            identity = bytes[body].to_vec();
        } else {
            index.insert(key, body);
        }
    }
    // Hand over copies one at a time (as the browser copies from JS); `bytes` stands in for IndexedDB.
    let records = index.into_iter().map(|(k, r)| (k, bytes[r].to_vec()));
    let engine = Engine::load(Config::default(), &identity, records, [8; 32], now).unwrap();
    println!("{:?}", engine.state().unwrap().counts());
}
