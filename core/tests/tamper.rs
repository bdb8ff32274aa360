//! Tamper tests: every single-bit flip and every swap of two same-sized fields of an encoded
//! envelope, certificate, revocation and register value is refused with a typed error.
//! Runs natively and, through `wasm-bindgen-test`, in Node and headless Chromium.
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
use kathon_core::certificate::{DeviceCertificate, DeviceName, DeviceRegistry, Revocation};
use kathon_core::envelope::Envelope;
use kathon_core::error::VerifyError;
use kathon_core::hlc::Timestamp;
use kathon_core::identity::DeviceSecretKey;
use kathon_core::register::{Register, RegisterValue};

/// Applies `mutate` to a copy of `bytes` for each single-bit flip and asserts `accept` refuses.
fn every_bit_flip(bytes: &[u8], accept: impl Fn(&[u8]) -> bool) {
    assert!(accept(bytes), "the untampered value must be accepted");
    for bit in 0..bytes.len() * 8 {
        let mut tampered = bytes.to_vec();
        tampered[bit / 8] ^= 1 << (bit % 8);
        assert!(!accept(&tampered), "flipping bit {bit} was not detected");
    }
}

/// Swaps every pair of distinct same-length fields (given as `(offset, len)`) and asserts `accept`
/// refuses the result.
fn every_field_swap(bytes: &[u8], fields: &[(usize, usize)], accept: impl Fn(&[u8]) -> bool) {
    let mut swaps = 0;
    for (i, &(a, len_a)) in fields.iter().enumerate() {
        for &(b, len_b) in &fields[i + 1..] {
            if len_a != len_b || bytes[a..a + len_a] == bytes[b..b + len_b] {
                continue;
            }
            let mut tampered = bytes.to_vec();
            let (field_a, field_b) = (bytes[a..a + len_a].to_vec(), bytes[b..b + len_b].to_vec());
            tampered[a..a + len_a].copy_from_slice(&field_b);
            tampered[b..b + len_b].copy_from_slice(&field_a);
            assert!(!accept(&tampered), "swapping fields at {a} and {b} was not detected");
            swaps += 1;
        }
    }
    assert!(swaps > 0, "no field pair was swapped");
}

#[test]
fn envelope_tampering_is_refused() {
    let fx = Fixture::new(1, 3);
    let first = fx.envelope(0, 1, None, vec![], b"one");
    let other_a = fx.envelope(1, 1, None, vec![], b"a");
    let other_b = fx.envelope(2, 1, None, vec![], b"b");
    let unsigned = kathon_core::envelope::UnsignedEnvelope {
        kind: 2,
        seq: 2,
        prev: Some(first.id()),
        hlc: Timestamp { wall_ms: 1_700_000_000_000, counter: 3 },
        parents: vec![other_a.id(), other_b.id()],
        payload: b"the payload".to_vec(),
        attachments: vec![b"attachment one".to_vec(), b"attachment two".to_vec()],
    };
    let env = Envelope::sign(&fx.devices[0], &fx.identity, unsigned).unwrap();
    let bytes = env.encode();
    let accept = |b: &[u8]| Envelope::decode(b).is_ok_and(|e| e.verify(&fx.registry).is_ok());
    every_bit_flip(&bytes, accept);

    // format, kind, author, seq, prev, hlc wall, hlc counter, parent count, parent 1, parent 2,
    // payload length, (payload), attachment count, hash 1, hash 2, signature R, signature S,
    // attachment 1 length, (attachment 1), attachment 2 length, (attachment 2).
    let count_at = 151 + 4 + 11;
    let sig = count_at + 4 + 64;
    let att = sig + 64;
    let fields = [
        (0, 1),
        (1, 1),
        (2, 32),
        (34, 8),
        (42, 32),
        (74, 8),
        (82, 4),
        (86, 1),
        (87, 32),
        (119, 32),
        (151, 4),
        (count_at, 4),
        (count_at + 4, 32),
        (count_at + 36, 32),
        (sig, 32),
        (sig + 32, 32),
        (att + 4, 14),
        (att + 4 + 14 + 4, 14),
    ];
    every_field_swap(&bytes, &fields, accept);
}

#[test]
fn redacted_attachments_still_verify_and_tampered_ones_do_not() {
    let fx = Fixture::new(8, 1);
    let unsigned = kathon_core::envelope::UnsignedEnvelope {
        kind: 2,
        seq: 1,
        prev: None,
        hlc: Timestamp::from_wall_ms(5),
        parents: vec![],
        payload: vec![],
        attachments: vec![b"visit to example.org".to_vec(), b"visit to kathon.dev".to_vec()],
    };
    let mut env = Envelope::sign(&fx.devices[0], &fx.identity, unsigned).unwrap();
    assert!(env.redact_attachment(0));
    assert!(!env.redact_attachment(0));
    let bytes = env.encode();
    assert!(!bytes.windows(11).any(|w| w == b"example.org"));
    let back = Envelope::decode(&bytes).unwrap().verify(&fx.registry).unwrap();
    assert_eq!(back.id(), env.id());
    assert_eq!(back.attachment(0), None);
    assert_eq!(back.attachment(1).as_deref(), Some(&b"visit to kathon.dev"[..]));
    // Replacing a redacted attachment with other content is refused.
    let mut forged = bytes.clone();
    let at = forged.len() - (4 + 19) - 4;
    forged.splice(at..at + 4, [0, 0, 0, 3, b'x', b'y', b'z']);
    let err = Envelope::decode(&forged).unwrap().verify(&fx.registry).unwrap_err();
    assert_eq!(err, VerifyError::AttachmentMismatch { index: 0 });
}

#[test]
fn certificate_tampering_is_refused() {
    let fx = Fixture::new(2, 1);
    let bytes = fx.certificates[0].encode();
    let accept = |b: &[u8]| DeviceCertificate::decode(b).is_ok_and(|c| c.verify(&fx.identity).is_ok());
    every_bit_flip(&bytes, accept);
    let name_len = fx.certificates[0].name().as_str().len();
    let sig = 1 + 32 + 32 + 8 + 8 + 1 + name_len;
    let fields = [(0, 1), (1, 32), (33, 32), (65, 8), (73, 8), (81, 1), (sig, 32), (sig + 32, 32)];
    every_field_swap(&bytes, &fields, accept);
}

#[test]
fn revocation_tampering_is_refused() {
    let fx = Fixture::new(3, 1);
    let revocation = Revocation::issue(&fx.root, fx.devices[0].public(), 17, 1_700_000_000_000);
    let bytes = revocation.encode();
    let accept = |b: &[u8]| Revocation::decode(b).is_ok_and(|r| r.verify(&fx.identity).is_ok());
    every_bit_flip(&bytes, accept);
    let fields = [(0, 1), (1, 32), (33, 32), (65, 8), (73, 8), (81, 32), (113, 32)];
    every_field_swap(&bytes, &fields, accept);
}

#[test]
fn self_signed_register_value_tampering_is_refused() {
    // Format version 1, as earlier builds wrote it: each value verifies on its own.
    let fx = Fixture::new(4, 2);
    let old = RegisterValue::sign_v1(
        &fx.devices[1],
        &fx.identity,
        "bookmarks/x/title",
        b"old".to_vec(),
        Timestamp::from_wall_ms(5),
        vec![],
    )
    .unwrap();
    let value = RegisterValue::sign_v1(
        &fx.devices[0],
        &fx.identity,
        "bookmarks/x/title",
        b"Kathon".to_vec(),
        Timestamp::from_wall_ms(9),
        vec![old.id()],
    )
    .unwrap();
    let bytes = value.encode();
    let carrier = std::sync::Arc::new(fx.devices[0].public());
    let accept = |b: &[u8]| RegisterValue::decode(b, &carrier).is_ok_and(|v| v.verify(&fx.registry).is_ok());
    every_bit_flip(&bytes, accept);
    let path_len = "bookmarks/x/title".len();
    let author = 1 + 2 + path_len;
    let supersedes = author + 32 + 12 + 1;
    let sig = supersedes + 32 + 4 + 6;
    let fields = [(0, 1), (author, 32), (author + 32, 8), (supersedes, 32), (sig, 32), (sig + 32, 32)];
    every_field_swap(&bytes, &fields, accept);
}

#[test]
fn register_value_tampering_is_refused() {
    // Format version 2: signed by the envelope that carries it. Its name binds every bit and its
    // author, so a changed value is another value; and inside a signed envelope, a flipped bit
    // fails the envelope's signature.
    let fx = Fixture::new(4, 2);
    let mut register = Register::new();
    register
        .write(
            &std::sync::Arc::new(fx.devices[1].public()),
            "bookmarks/x/title",
            b"old".to_vec(),
            Timestamp::from_wall_ms(5),
        )
        .unwrap();
    let value = register
        .write(
            &std::sync::Arc::new(fx.devices[0].public()),
            "bookmarks/x/title",
            b"Kathon".to_vec(),
            Timestamp::from_wall_ms(9),
        )
        .unwrap();
    let bytes = value.encode();
    let carrier = std::sync::Arc::new(fx.devices[0].public());
    assert_eq!(RegisterValue::decode(&bytes, &carrier).unwrap().id(), value.id());
    assert_ne!(
        RegisterValue::decode(&bytes, &std::sync::Arc::new(fx.devices[1].public())).unwrap().id(),
        value.id(),
        "author bound"
    );
    for bit in 0..bytes.len() * 8 {
        let mut tampered = bytes.clone();
        tampered[bit / 8] ^= 1 << (bit % 8);
        if let Ok(v) = RegisterValue::decode(&tampered, &carrier) {
            assert_ne!(v.id(), value.id(), "flipping bit {bit} kept the value's name");
            assert!(v.clone().verify(&fx.registry).is_err(), "a version 2 value never verifies on its own");
        }
    }
    let envelope = fx.envelope(0, 1, None, vec![], &bytes);
    let signed = envelope.encode();
    let at = signed.windows(bytes.len()).position(|w| w == bytes.as_slice()).unwrap();
    for bit in 0..bytes.len() * 8 {
        let mut tampered = signed.clone();
        tampered[at + bit / 8] ^= 1 << (bit % 8);
        assert!(
            Envelope::decode(&tampered).map_or(true, |e| e.verify(&fx.registry).is_err()),
            "flipping bit {bit} of the value inside its envelope was not detected"
        );
    }
}

#[test]
fn certificate_of_another_identity_is_refused() {
    let ours = Fixture::new(5, 1);
    let theirs = Fixture::new(6, 1);
    let foreign = DeviceCertificate::decode(&theirs.certificates[0].encode()).unwrap();
    assert_eq!(foreign.clone().verify(&ours.identity), Err(VerifyError::WrongIdentity { what: "device certificate" }));
    let mut registry = DeviceRegistry::new(ours.identity);
    assert_eq!(
        registry.add_certificate(theirs.certificates[0].clone()),
        Err(VerifyError::WrongIdentity { what: "device certificate" })
    );
    // Their device's envelope is unknown to our registry.
    let env = theirs.envelope(0, 1, None, vec![], b"x");
    let decoded = Envelope::decode(&env.encode()).unwrap();
    assert!(matches!(decoded.verify(&ours.registry), Err(VerifyError::UnknownDevice { .. })));
}

#[test]
fn expired_and_revoked_devices_are_refused() {
    let fx = Fixture::new(7, 1);
    let mut rng = common::rng(70);
    let device = DeviceSecretKey::generate(&mut rng);
    let name = DeviceName::new("short-lived").unwrap();
    let cert = DeviceCertificate::issue(&fx.root, device.public(), name, 0, 1_700_000_000_000);
    let mut registry = fx.registry.clone();
    registry.add_certificate(cert).unwrap();
    let signed = |seq: u64, wall_ms: u64| {
        let unsigned = kathon_core::envelope::UnsignedEnvelope {
            kind: 1,
            seq,
            prev: (seq > 1).then_some(kathon_core::envelope::EnvelopeId(kathon_core::hash::Hash::ZERO)),
            hlc: Timestamp::from_wall_ms(wall_ms),
            parents: vec![],
            payload: vec![],
            attachments: vec![],
        };
        let env = Envelope::sign(&device, &fx.identity, unsigned).unwrap();
        Envelope::decode(&env.encode()).unwrap()
    };
    assert!(signed(1, 1_600_000_000_000).verify(&registry).is_ok());
    assert!(matches!(signed(1, 1_700_000_000_001).verify(&registry), Err(VerifyError::Expired { .. })));

    // Revoked after its write #2: #2 stands, #3 is refused.
    registry.add_revocation(Revocation::issue(&fx.root, device.public(), 2, 1_650_000_000_000)).unwrap();
    assert!(signed(2, 1_600_000_000_000).verify(&registry).is_ok());
    assert_eq!(
        signed(3, 1_600_000_000_000).verify(&registry),
        Err(VerifyError::Revoked { device: device.public(), last_valid_seq: 2, seq: 3 })
    );
    // A second revocation can only tighten the bound.
    registry.add_revocation(Revocation::issue(&fx.root, device.public(), 5, 1_660_000_000_000)).unwrap();
    assert_eq!(registry.revocation(&device.public()).unwrap().last_valid_seq(), 2);
}
