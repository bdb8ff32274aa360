//! The realistic profile (5,000 bookmarks in nested folders, 100,000 visits, 500 passwords, 50
//! tabs in 5 windows): apply it to a fresh replica, build its bookmark tree from the registers,
//! encode it, and load it into another replica with full verification (decode, verify every
//! envelope and every register value, apply).
//!
//! `cargo bench -p kathon-benches --bench profile` (`KATHON_PROFILE=small` for a quick run).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kathon_benches::SEED;
use kathon_core::envelope::Envelope;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use kathon_benches::ProfileSetup as Setup;

const NOW: u64 = kathon_benches::PROFILE_NOW;

fn profile(c: &mut Criterion) {
    let setup = Setup::from_env();
    let mut rng = ChaCha20Rng::seed_from_u64(SEED + 1);
    let mut built = setup.replica(0, &mut rng);
    setup.apply(&mut built, &mut rng);
    let wire: Vec<Vec<u8>> = built.envelopes().map(|e| e.encode()).collect();
    let state = built.encode_state();
    let wire_bytes: usize = wire.iter().map(Vec::len).sum();
    let raw: usize = setup.profile.visits.iter().map(|v| v.url.len() + v.title.len() + 9).sum::<usize>();
    println!(
        "profile: {} bookmarks ({} nodes), {} visits, {} passwords, {} tabs -> {} envelopes, {wire_bytes} bytes ({:.1} B/record); \
         state {} bytes; raw visit text {:.1} B/visit",
        setup.size.bookmarks,
        built.bookmarks().len(),
        setup.size.visits,
        setup.size.passwords,
        setup.size.tabs,
        wire.len(),
        wire_bytes as f64 / setup.records() as f64,
        state.len(),
        raw as f64 / setup.size.visits as f64,
    );

    let mut g = c.benchmark_group("profile");
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(setup.records()));
    g.bench_function("apply to a fresh replica", |b| {
        b.iter_batched(
            || setup.replica(0, &mut rng.clone()),
            |mut s| setup.apply(&mut s, &mut rng.clone()),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("encode (envelopes + state)", |b| {
        b.iter(|| (built.envelopes().map(|e| e.encode()).collect::<Vec<_>>(), built.encode_state()))
    });
    g.bench_function("load with full verification", |b| {
        b.iter_batched(
            || setup.replica(1, &mut rng.clone()),
            |mut s| {
                for bytes in &wire {
                    s.receive(Envelope::decode(bytes).unwrap(), NOW).unwrap();
                }
                assert_eq!(s.history_len(), setup.size.visits);
                s
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("bookmarks");
    g.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(built.bookmarks().len() as u64));
    g.bench_function("tree from the registers (a cold open's first query)", |b| {
        b.iter(|| built.materialize_bookmarks_uncached())
    });
    g.finish();
}

criterion_group!(benches, profile);
criterion_main!(benches);
