//! Ed25519 sign / verify / batch verify (the floor under verified ingest) and envelope
//! encode / decode / verify.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey};
use kathon_benches::Device;
use kathon_core::envelope::{Envelope, UnsignedEnvelope};
use kathon_core::hlc::Timestamp;

/// What the envelope signature covers: a domain tag, the identity and a 32-byte digest.
const MESSAGE_LEN: usize = 1 + 23 + 32 + 32;

fn ed25519(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let public = key.verifying_key();
    let message = [0x42u8; MESSAGE_LEN];
    let signature = key.sign(&message);
    let mut g = c.benchmark_group("ed25519");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign", |b| b.iter(|| key.sign(&message)));
    g.bench_function("verify_strict", |b| b.iter(|| public.verify_strict(&message, &signature).unwrap()));
    for n in [16usize, 64, 256] {
        let keys: Vec<SigningKey> =
            (0..n).map(|i| SigningKey::from_bytes(&[u8::try_from(i % 251).unwrap(); 32])).collect();
        let messages: Vec<[u8; MESSAGE_LEN]> = (0..n).map(|i| [u8::try_from(i % 256).unwrap(); MESSAGE_LEN]).collect();
        let signatures: Vec<_> = keys.iter().zip(&messages).map(|(k, m)| k.sign(m)).collect();
        let publics: Vec<_> = keys.iter().map(SigningKey::verifying_key).collect();
        let refs: Vec<&[u8]> = messages.iter().map(|m| m.as_slice()).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("verify_batch/{n}"), |b| {
            b.iter(|| ed25519_dalek::verify_batch(&refs, &signatures, &publics).unwrap())
        });
    }
    g.finish();
}

fn envelopes(c: &mut Criterion) {
    let device = Device::new();
    let env = device.chain(2, 256).pop().unwrap();
    let bytes = env.encode();
    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign/256B", |b| {
        b.iter_batched(
            || UnsignedEnvelope {
                kind: 1,
                seq: 1,
                prev: None,
                hlc: Timestamp::from_wall_ms(1),
                parents: vec![],
                payload: vec![0x5a; 256],
                attachments: vec![],
            },
            |unsigned| Envelope::sign(&device.key, &device.identity, unsigned).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("encode/256B", |b| b.iter(|| env.encode()));
    g.bench_function("decode/256B", |b| b.iter(|| Envelope::decode(&bytes).unwrap()));
    g.bench_function("decode+verify/256B", |b| {
        b.iter(|| Envelope::decode(&bytes).unwrap().verify(&device.registry).unwrap())
    });
    let big = device.chain(1, 64 * 1024).pop().unwrap().encode();
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("decode+verify/64KiB", |b| {
        b.iter(|| Envelope::decode(&big).unwrap().verify(&device.registry).unwrap())
    });
    g.finish();
}

criterion_group!(benches, ed25519, envelopes);
criterion_main!(benches);
