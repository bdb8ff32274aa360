//! Garbage tests: random byte strings and every truncation of valid encodings go into every
//! decoder. Each must return an error (or, for a valid prefix that happens to parse, a value),
//! never panic, and — natively, where a counting allocator watches — never allocate more than
//! the input it was given plus a small constant.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

mod common;

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use common::Fixture;
use kathon_core::certificate::{DeviceCertificate, Revocation};
use kathon_core::envelope::Envelope;
use kathon_core::hlc::Timestamp;
use kathon_core::identity::{DeviceId, IdentityId};
use kathon_core::register::{Register, RegisterValue};
use rand_core::RngCore;

#[cfg(not(target_arch = "wasm32"))]
mod counting {
    //! Counts the bytes this thread has allocated and its peak since the last reset.
    #![allow(unsafe_code)]
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static LIVE: Cell<usize> = const { Cell::new(0) };
        static PEAK: Cell<usize> = const { Cell::new(0) };
    }

    pub(crate) struct Counting;

    // SAFETY: forwards to `System`, only adding bookkeeping in const-initialised thread locals
    // (which never allocate).
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = LIVE.try_with(|live| {
                let now = live.get().saturating_add(layout.size());
                live.set(now);
                let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
            });
            // SAFETY: same contract as the caller's.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(layout.size())));
            // SAFETY: same contract as the caller's.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    /// Runs `f` and returns the peak number of bytes it had allocated at once.
    pub(crate) fn peak_during(f: impl FnOnce()) -> usize {
        let base = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(base));
        f();
        PEAK.with(Cell::get).saturating_sub(base)
    }
}

/// Runs one decoder on `input`, checking the allocation bound where it can be watched.
fn decode_bounded(name: &str, input: &[u8], decode: &dyn Fn(&[u8])) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let peak = counting::peak_during(|| decode(input));
        assert!(peak <= input.len() + 4096, "{name}: {peak} bytes allocated for a {}-byte input", input.len());
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = name;
        decode(input);
    }
}

type Decoder = (&'static str, Box<dyn Fn(&[u8])>);

/// The device whose envelope carries a decoded register value (any valid key).
fn carrier() -> std::sync::Arc<DeviceId> {
    std::sync::Arc::new(Fixture::new(10, 1).devices[0].public())
}

fn decoders() -> Vec<Decoder> {
    vec![
        ("envelope", Box::new(|b| drop(Envelope::decode(b)))),
        ("certificate", Box::new(|b| drop(DeviceCertificate::decode(b)))),
        ("revocation", Box::new(|b| drop(Revocation::decode(b)))),
        ("register value", {
            let carrier = carrier();
            Box::new(move |b| drop(RegisterValue::decode(b, &carrier)))
        }),
        ("identity text", Box::new(|b| drop(std::str::from_utf8(b).map(str::parse::<IdentityId>)))),
        ("device text", Box::new(|b| drop(std::str::from_utf8(b).map(str::parse::<DeviceId>)))),
        (
            "device key",
            Box::new(|b| {
                if let Ok(key) = <[u8; 32]>::try_from(b.get(..32).unwrap_or_default()) {
                    drop(DeviceId::from_bytes(&key));
                }
            }),
        ),
    ]
}

fn valid_encodings() -> Vec<Vec<u8>> {
    let fx = Fixture::new(11, 2);
    let chain = fx.chain(0, 2);
    let mut register = Register::new();
    let value = register
        .write(
            &std::sync::Arc::new(fx.devices[1].public()),
            "passwords/p/username",
            b"ada".to_vec(),
            Timestamp::from_wall_ms(3),
        )
        .unwrap();
    let old = kathon_core::register::RegisterValue::sign_v1(
        &fx.devices[0],
        &fx.identity,
        "passwords/p/username",
        b"ada".to_vec(),
        Timestamp::from_wall_ms(4),
        vec![value.id()],
    )
    .unwrap();
    vec![
        chain[0].encode(),
        chain[1].encode(),
        fx.envelope(1, 1, None, vec![chain[0].id(), chain[1].id()], &[7; 300]).encode(),
        fx.certificates[0].encode(),
        Revocation::issue(&fx.root, fx.devices[1].public(), 0, 0).encode(),
        value.encode(),
        old.encode(),
        fx.identity.to_text().into_bytes(),
    ]
}

#[test]
fn random_bytes_of_every_length_are_refused_without_panic() {
    let mut rng = common::rng(12);
    let decoders = decoders();
    for len in 0..=4096usize {
        let mut input = vec![0u8; len];
        rng.fill_bytes(&mut input);
        // Make the first byte a valid format byte most of the time, so decoding gets past it.
        if let Some(first) = input.first_mut() {
            *first = [0x11, 0x21, 0x31, 0x41, 0x42, *first][len % 6];
        }
        for (name, decode) in &decoders {
            decode_bounded(name, &input, decode.as_ref());
        }
    }
}

#[test]
fn every_truncation_of_valid_encodings_is_refused() {
    for bytes in valid_encodings() {
        for len in 0..bytes.len() {
            let prefix = &bytes[..len];
            for (name, decode) in &decoders() {
                decode_bounded(name, prefix, decode.as_ref());
            }
            // The leading format byte names the type, so no prefix of one type parses as another.
            assert!(Envelope::decode(prefix).is_err());
            assert!(DeviceCertificate::decode(prefix).is_err());
            assert!(Revocation::decode(prefix).is_err());
            assert!(RegisterValue::decode(prefix, &carrier()).is_err());
        }
    }
}

#[test]
fn huge_declared_lengths_do_not_allocate() {
    // A valid envelope header followed by a payload length of u32::MAX and nothing else.
    let fx = Fixture::new(13, 1);
    let mut bytes = fx.envelope(0, 1, None, vec![], b"").encode();
    let len_at = 1 + 1 + 32 + 8 + 12 + 1;
    bytes[len_at..len_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    bytes.truncate(len_at + 4);
    for (name, decode) in &decoders() {
        decode_bounded(name, &bytes, decode.as_ref());
    }
    assert!(matches!(
        Envelope::decode(&bytes),
        Err(kathon_core::error::DecodeError::TooLarge { what: "envelope payload", .. })
    ));
}

#[test]
fn trailing_bytes_are_refused() {
    for mut bytes in valid_encodings().into_iter().take(7) {
        bytes.push(0);
        assert!(Envelope::decode(&bytes).is_err());
        assert!(DeviceCertificate::decode(&bytes).is_err());
        assert!(Revocation::decode(&bytes).is_err());
        assert!(RegisterValue::decode(&bytes, &carrier()).is_err());
    }
}

#[test]
fn every_decoder_in_the_crate_survives_arbitrary_bytes() {
    let mut rng = common::rng(14);
    for len in (0..=4096usize).step_by(3) {
        let mut input = vec![0u8; len];
        rng.fill_bytes(&mut input);
        // Steer the first byte at a known format or message tag a third of the time.
        if let Some(first) = input.first_mut()
            && len % 3 == 0
        {
            const TAGS: [u8; 22] = [
                0x11, 0x21, 0x31, 0x41, 0x42, 0x51, 0x61, 0x71, 0x91, 0xa1, 0xb1, 0xc1, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11,
            ];
            *first = TAGS[len % TAGS.len()];
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let peak = counting::peak_during(|| kathon_core::testing::decode_everything(&input));
            assert!(peak <= 64 * 1024 + 32 * input.len(), "{peak} bytes allocated for a {len}-byte input");
        }
        #[cfg(target_arch = "wasm32")]
        kathon_core::testing::decode_everything(&input);
    }
}

#[test]
fn the_engine_survives_arbitrary_input_sequences() {
    let mut rng = common::rng(15);
    for round in 0..64 {
        let mut input = vec![0u8; 64 + round * 37];
        rng.fill_bytes(&mut input);
        kathon_core::testing::drive_engine(&input);
    }
}

#[test]
fn validly_signed_hostile_payloads_are_refused_without_panic() {
    let mut rng = common::rng(16);
    for round in 0..128 {
        let mut input = vec![0u8; 16 + round * 29];
        rng.fill_bytes(&mut input);
        // Mostly signed envelopes: keep first bytes of chunks low.
        for b in input.iter_mut().step_by(41) {
            *b &= 0x7f;
        }
        kathon_core::testing::ingest_envelopes(&input);
    }
}
