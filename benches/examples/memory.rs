//! Peak and resident memory of the realistic profile natively, counted by a global allocator
//! (every byte the process asks the heap for), Kathon next to `yrs` holding the same data in the
//! Yjs shape the browser benches use.
//!
//! * **load**: the profile imported into a fresh replica (Kathon: signed, sealed, its events read
//!   and its storage batches written to a real file, as a driver does; Yjs: one transaction).
//! * **cold open**: the stored profile read back from that file into a new replica (Kathon:
//!   `Engine::load`, integrity checked; Yjs: decode and apply its v1 state), the file's bytes
//!   dropped afterwards.
//!
//! `cargo run --release -p kathon-benches --example memory` (`KATHON_PROFILE=small` for a quick
//! run). Prints a table; no assertions on size.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    clippy::cast_precision_loss,
    unsafe_code, // the counting allocator
    missing_docs
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use kathon_core::sync::{Config, Engine, RecordKey};
use kathon_core::testing::{Profile, ProfileSize};
use yrs::updates::decoder::Decode;
use yrs::{ReadTxn, StateVector, Transact, Update};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Starts a phase: returns the heap in use now, and resets the peak to it.
fn phase() -> usize {
    let now = CURRENT.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    now
}

fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

fn current() -> usize {
    CURRENT.load(Ordering::Relaxed)
}

/// Writes records as `key len ‖ key ‖ body len ‖ body`, appended as they come (a real file).
fn append(file: &mut std::fs::File, key: &RecordKey, body: &[u8]) {
    let key = key.to_text();
    file.write_all(&(key.len() as u32).to_be_bytes()).unwrap();
    file.write_all(key.as_bytes()).unwrap();
    file.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    file.write_all(body).unwrap();
}

fn read_records(path: &std::path::Path) -> (Vec<u8>, Vec<(RecordKey, Vec<u8>)>) {
    let mut bytes = Vec::new();
    std::fs::File::open(path).unwrap().read_to_end(&mut bytes).unwrap();
    let mut rest: &[u8] = &bytes;
    let mut take = |n: usize| {
        let (head, tail) = rest.split_at(n);
        rest = tail;
        head.to_vec()
    };
    let mut identity = Vec::new();
    let mut records = std::collections::BTreeMap::new();
    let total = bytes.len();
    let mut read = 0usize;
    while read < total {
        let n = u32::from_be_bytes(take(4).try_into().unwrap()) as usize;
        let key = RecordKey::from_text(std::str::from_utf8(&take(n)).unwrap()).unwrap();
        let len = u32::from_be_bytes(take(4).try_into().unwrap()) as usize;
        let body = take(len);
        read += 8 + n + len;
        if key == RecordKey::Identity {
            identity = body;
        } else {
            records.insert(key, body); // the last write of a key wins, as in a store
        }
    }
    (identity, records.into_iter().collect())
}

/// Where a loaded replica's bytes are: its envelope log by kind, and the `yrs` document the
/// document-update envelopes build (measured by applying their payloads to a fresh document).
struct Breakdown {
    doc_envelopes: usize,
    doc_payload: usize,
    doc_payload_held: usize,
    history_envelopes: usize,
    history_payload: usize,
    attachments: usize,
    attachments_held: usize,
    attachment_count: usize,
    doc_resident: usize,
}

impl Breakdown {
    fn of(engine: &Engine) -> Self {
        let state = engine.state().unwrap();
        let mut b = Self {
            doc_envelopes: 0,
            doc_payload: 0,
            doc_payload_held: 0,
            history_envelopes: 0,
            history_payload: 0,
            attachments: 0,
            attachments_held: 0,
            attachment_count: 0,
            doc_resident: 0,
        };
        let mut updates = Vec::new();
        for envelope in state.envelopes() {
            if envelope.kind() == kathon_core::model::KIND_DOC_UPDATE {
                b.doc_envelopes += 1;
                let payload = envelope.payload().unwrap();
                b.doc_payload += payload.len();
                b.doc_payload_held += envelope.payload_held_len();
                // As the replica's document holds it: the values are in the registers.
                updates.push(kathon_core::model::yupdate::held_form(payload.get(16..).unwrap()).unwrap());
            } else {
                b.history_envelopes += 1;
                b.history_payload += envelope.payload().unwrap().len();
            }
            b.attachments_held += envelope.attachments_held_len();
            for a in envelope.attachments().flatten() {
                b.attachments += a.len();
                b.attachment_count += 1;
            }
        }
        let before = current();
        let doc = yrs::Doc::with_client_id(3);
        for update in &updates {
            doc.transact_mut().apply_update(Update::decode_v1(update).unwrap()).unwrap();
        }
        b.doc_resident = current() - before;
        drop(doc);
        b
    }
}

fn mb(bytes: usize) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn main() {
    let size = if std::env::var("KATHON_PROFILE").as_deref() == Ok("small") {
        ProfileSize::SMALL
    } else {
        ProfileSize::REALISTIC
    };
    let now = 1_790_000_000_000u64;
    let profile = Profile::generate(kathon_benches::SEED, size, now);
    let records = size.bookmarks + size.visits + size.passwords + 1;
    let dir = std::env::temp_dir().join(format!("kathon-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("records.bin");

    // --- Kathon: load ---
    let base = phase();
    let mut file = std::fs::File::create(&path).unwrap();
    let mut engine = Engine::create_identity(Config::default(), "memory", [7; 32], now).unwrap();
    kathon_benches::load_profile(&mut engine, &profile, now);
    // Read the events as a driver does (one per visit and bookmark: ~106,000).
    kathon_benches::drain_storage(&mut engine, |key, body| append(&mut file, key, body));
    file.sync_all().unwrap();
    drop(file);
    let kathon_load_peak = peak() - base;
    let kathon_loaded = current() - base;
    let stored = std::fs::metadata(&path).unwrap().len();
    let counts = engine.state().unwrap().counts();
    assert_eq!(counts.history, size.visits);
    drop(engine);

    // --- Kathon: cold open ---
    let base = phase();
    let (identity, stored_records) = read_records(&path);
    let started = std::time::Instant::now();
    let engine = Engine::load(Config::default(), &identity, stored_records, [8; 32], now).unwrap();
    let kathon_open_time = started.elapsed();
    drop(identity);
    let kathon_open_peak = peak() - base;
    let kathon_open = current() - base;
    assert_eq!(engine.state().unwrap().counts(), counts);
    let breakdown = Breakdown::of(&engine);
    drop(engine);

    // --- Yjs (yrs): load, then cold open from its encoded state ---
    let base = phase();
    let doc = kathon_benches::yjs::profile_doc(&profile, 1);
    let yjs_load_peak = peak() - base;
    let yjs_loaded = current() - base;
    let state = doc.transact().encode_state_as_update_v1(&StateVector::default());
    drop(doc);
    std::fs::write(dir.join("yjs.bin"), &state).unwrap();
    drop(state);
    let base = phase();
    let state = std::fs::read(dir.join("yjs.bin")).unwrap();
    let doc = yrs::Doc::with_client_id(2);
    let started = std::time::Instant::now();
    doc.transact_mut().apply_update(Update::decode_v1(&state).unwrap()).unwrap();
    let yjs_open_time = started.elapsed();
    drop(state);
    let yjs_open_peak = peak() - base;
    let yjs_open = current() - base;
    let yjs_bytes = std::fs::metadata(dir.join("yjs.bin")).unwrap().len();
    drop(doc);
    let _ = std::fs::remove_dir_all(&dir);

    let per = |b: usize| b as f64 / records as f64;
    println!(
        "realistic profile: {} bookmarks, {} visits, {} passwords, 1 layout = {records} records",
        size.bookmarks, size.visits, size.passwords
    );
    println!("stored: Kathon {stored} bytes (records file), Yjs {yjs_bytes} bytes (v1 state)");
    println!(
        "cold open (from the bytes read to a loaded replica; one run, a rough figure): Kathon {kathon_open_time:?}, Yjs (yrs) {yjs_open_time:?}"
    );
    println!(
        "Kathon's resident state: {} document-update envelopes ({} of payload held in {}, whose `yrs` document alone takes {} resident), {} history envelopes ({} of payload, {} attachments: {}, held in {})",
        breakdown.doc_envelopes,
        mb(breakdown.doc_payload),
        mb(breakdown.doc_payload_held),
        mb(breakdown.doc_resident),
        breakdown.history_envelopes,
        mb(breakdown.history_payload),
        breakdown.attachment_count,
        mb(breakdown.attachments),
        mb(breakdown.attachments_held),
    );
    println!();
    println!(
        "| phase | Kathon peak | Kathon resident | Yjs (yrs) peak | Yjs resident | resident B/record Kathon / Yjs | ratio |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|");
    for (name, kp, kr, yp, yr) in [
        ("load", kathon_load_peak, kathon_loaded, yjs_load_peak, yjs_loaded),
        ("cold open", kathon_open_peak, kathon_open, yjs_open_peak, yjs_open),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} | {:.0} / {:.0} | {:.2}× |",
            mb(kp),
            mb(kr),
            mb(yp),
            mb(yr),
            per(kr),
            per(yr),
            kr as f64 / yr as f64
        );
    }
}
