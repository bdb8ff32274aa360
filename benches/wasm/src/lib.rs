//! The browser benches' wasm side (not part of the npm package): the Ed25519 floor — sign,
//! `verify_strict`, `verify_batch` — and verified ingest of the realistic profile, compiled with
//! the package's exact crates and features, so the page can put them next to WebCrypto's Ed25519
//! and to each other in one run. The page times each call; nothing here reads a clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::cell::RefCell;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use kathon_benches::{ProfileSetup, SEED};
use kathon_core::envelope::Envelope;
use kathon_core::testing::ProfileSize;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use wasm_bindgen::prelude::*;

/// Length of the messages signed: Kathon's signing message (domain, identity, hash).
const MESSAGE_LEN: usize = 88;
const SAMPLE_LEN: usize = MESSAGE_LEN + 64;

/// `n` signatures by one key over distinct messages: `public key [32] ‖ n × (message [88] ‖
/// signature [64])` (one author's envelopes are what a replica ingests).
#[wasm_bindgen(js_name = signatureSamples)]
pub fn signature_samples(n: u32) -> Vec<u8> {
    let mut rng = ChaCha20Rng::seed_from_u64(SEED);
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let key = SigningKey::from_bytes(&secret);
    let mut out = Vec::with_capacity(32 + n as usize * SAMPLE_LEN);
    out.extend_from_slice(key.verifying_key().as_bytes());
    for _ in 0..n {
        let mut message = [0u8; MESSAGE_LEN];
        rng.fill_bytes(&mut message);
        out.extend_from_slice(&message);
        out.extend_from_slice(&key.sign(&message).to_bytes());
    }
    out
}

fn parse(samples: &[u8]) -> (VerifyingKey, Vec<(&[u8], Signature)>) {
    let key = VerifyingKey::from_bytes(samples[..32].try_into().unwrap()).unwrap();
    let items = samples[32..]
        .chunks_exact(SAMPLE_LEN)
        .map(|c| (&c[..MESSAGE_LEN], Signature::from_bytes(c[MESSAGE_LEN..].try_into().unwrap())))
        .collect();
    (key, items)
}

/// Signs `n` messages; returns the last signature's first byte (so nothing is optimised away).
#[wasm_bindgen(js_name = signMany)]
pub fn sign_many(n: u32) -> u8 {
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut last = 0;
    for i in 0..n {
        let mut message = [0u8; MESSAGE_LEN];
        message[..4].copy_from_slice(&i.to_be_bytes());
        last = key.sign(&message).to_bytes()[0];
    }
    last
}

/// `verify_strict` of every sample (what Kathon decides validity with); returns how many held.
#[wasm_bindgen(js_name = verifyStrict)]
pub fn verify_strict(samples: &[u8]) -> u32 {
    let (key, items) = parse(samples);
    items.iter().filter(|(m, s)| key.verify_strict(m, s).is_ok()).count() as u32
}

/// `verify_batch` over batches of `batch` samples (the physical floor); returns how many held.
#[wasm_bindgen(js_name = verifyBatch)]
pub fn verify_batch(samples: &[u8], batch: u32) -> u32 {
    let (key, items) = parse(samples);
    let mut ok = 0;
    for chunk in items.chunks(batch.max(1) as usize) {
        let messages: Vec<&[u8]> = chunk.iter().map(|(m, _)| *m).collect();
        let signatures: Vec<Signature> = chunk.iter().map(|(_, s)| *s).collect();
        let keys = vec![key; chunk.len()];
        if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
            ok += chunk.len() as u32;
        }
    }
    ok
}

thread_local! {
    static INGEST: RefCell<Option<(ProfileSetup, Vec<Vec<u8>>)>> = const { RefCell::new(None) };
}

/// Builds the profile (realistic, or small) and device 0's envelopes for it, as they would
/// arrive from a peer. Returns the number of records.
#[wasm_bindgen(js_name = prepareIngest)]
pub fn prepare_ingest(small: bool) -> u32 {
    let setup = ProfileSetup::new(if small { ProfileSize::SMALL } else { ProfileSize::REALISTIC });
    let wire = setup.wire();
    let records = setup.records() as u32;
    INGEST.with(|i| *i.borrow_mut() = Some((setup, wire)));
    records
}

/// Verified ingest into a fresh replica on device 1: decode, verify, apply every envelope.
/// Returns the visits held afterwards.
#[wasm_bindgen(js_name = runIngest)]
pub fn run_ingest() -> u32 {
    INGEST.with(|i| {
        let guard = i.borrow();
        let Some((setup, wire)) = guard.as_ref() else { return 0 };
        let mut rng = ChaCha20Rng::seed_from_u64(SEED + 2);
        let mut s = setup.replica(1, &mut rng);
        for bytes in wire {
            s.receive(Envelope::decode(bytes).unwrap(), kathon_benches::PROFILE_NOW).unwrap();
        }
        s.history_len() as u32
    })
}
