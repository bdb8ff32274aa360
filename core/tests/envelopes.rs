//! Envelopes: round trips, verification, and placing them in their author's chain — duplicates,
//! gaps and equivocation.
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
use kathon_core::envelope::{
    AuthorChains, ChainPosition, Envelope, EnvelopeBuildError, MAX_PAYLOAD_LEN, UnsignedEnvelope, VerifiedEnvelope,
};
use kathon_core::hlc::Timestamp;

fn reparse(fx: &Fixture, env: &kathon_core::envelope::VerifiedEnvelope) -> kathon_core::envelope::VerifiedEnvelope {
    Envelope::decode(&env.encode()).unwrap().verify(&fx.registry).unwrap()
}

#[test]
fn encoding_round_trips_and_ids_are_stable() {
    let fx = Fixture::new(31, 2);
    let a = fx.chain(0, 3);
    let b = fx.envelope(1, 1, None, vec![a[2].id(), a[0].id(), a[2].id()], b"merge");
    let back = reparse(&fx, &b);
    assert_eq!(back, b);
    assert_eq!(back.id(), b.id());
    // Parents are stored sorted and deduplicated.
    let mut expected = vec![a[0].id(), a[2].id()];
    expected.sort();
    assert_eq!(back.parents(), expected.as_slice());
    assert_eq!(back.encoded_len(), back.encode().len());
}

#[test]
fn chains_accept_in_order_and_report_gaps_and_duplicates() {
    let fx = Fixture::new(32, 1);
    let chain = fx.chain(0, 3);
    let mut chains = AuthorChains::new();
    assert_eq!(chains.append(&chain[1]), Ok(ChainPosition::Gap { expected_seq: 1 }));
    assert_eq!(chains.append(&chain[0]), Ok(ChainPosition::Next));
    assert_eq!(chains.append(&chain[0]), Ok(ChainPosition::Duplicate));
    assert_eq!(chains.append(&chain[1]), Ok(ChainPosition::Next));
    assert_eq!(chains.append(&chain[2]), Ok(ChainPosition::Next));
    assert_eq!(chains.head(&fx.devices[0].public()), Some((3, chain[2].id())));
    assert_eq!(chains.id_at(&fx.devices[0].public(), 2), Some(chain[1].id()));
    assert_eq!(chains.id_at(&fx.devices[0].public(), 0), None);
}

#[test]
fn equivocation_is_detected_and_reported() {
    let fx = Fixture::new(33, 1);
    let honest = fx.chain(0, 2);
    let mut chains = AuthorChains::new();
    chains.append(&honest[0]).unwrap();
    chains.append(&honest[1]).unwrap();

    // Same author, same place, different content.
    let forked = fx.envelope(0, 2, Some(honest[0].id()), vec![], b"something else");
    let err = chains.append(&forked).unwrap_err();
    assert_eq!((err.seq, err.existing, err.conflicting), (2, honest[1].id(), forked.id()));

    // A later envelope whose `prev` names a different #2 betrays the fork too.
    let after_fork = fx.envelope(0, 3, Some(forked.id()), vec![], b"built on the fork");
    let err = chains.append(&after_fork).unwrap_err();
    assert_eq!((err.seq, err.existing, err.conflicting), (2, honest[1].id(), forked.id()));
    assert!(err.to_string().contains("signed two different envelopes"));
    // Nothing was appended.
    assert_eq!(chains.head(&fx.devices[0].public()).map(|h| h.0), Some(2));
}

#[test]
fn building_refuses_what_could_not_be_decoded() {
    let fx = Fixture::new(34, 1);
    let unsigned = |seq, prev, payload_len| UnsignedEnvelope {
        kind: 1,
        seq,
        prev,
        hlc: Timestamp::default(),
        parents: vec![],
        payload: vec![0; payload_len],
        attachments: vec![],
    };
    let key = &fx.devices[0];
    assert_eq!(
        Envelope::sign(key, &fx.identity, unsigned(0, None, 0)).unwrap_err(),
        EnvelopeBuildError::BadChainLink { seq: 0 }
    );
    let some = Some(fx.chain(0, 1)[0].id());
    assert!(Envelope::sign(key, &fx.identity, unsigned(1, some, 0)).is_err());
    assert!(Envelope::sign(key, &fx.identity, unsigned(2, None, 0)).is_err());
    assert_eq!(
        Envelope::sign(key, &fx.identity, unsigned(1, None, MAX_PAYLOAD_LEN as usize + 1)).unwrap_err(),
        EnvelopeBuildError::PayloadTooLarge(MAX_PAYLOAD_LEN as usize + 1)
    );
    // The largest payload round trips.
    let big = Envelope::sign(key, &fx.identity, unsigned(1, None, MAX_PAYLOAD_LEN as usize)).unwrap();
    assert_eq!(reparse(&fx, &big), big);
}

#[test]
fn redacted_attachments_are_gone_and_the_envelope_still_verifies() {
    let fx = Fixture::new(35, 1);
    let attachments: Vec<Vec<u8>> =
        (0..10).map(|i| format!("visit number {i} to a private page").into_bytes()).collect();
    let unsigned = UnsignedEnvelope {
        kind: 2,
        seq: 1,
        prev: None,
        hlc: Timestamp::from_wall_ms(1_700_000_000_000),
        parents: vec![],
        payload: vec![1],
        attachments: attachments.clone(),
    };
    let mut envelope = Envelope::sign(&fx.devices[0], &fx.identity, unsigned).unwrap();
    let contains = |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    // A few redacted (zeroed in place), then most (the buffer is compacted): each time every
    // other attachment is intact, the redacted ones are nowhere, and the envelope verifies.
    for (step, doomed) in [vec![1usize, 4, 7], vec![0, 2, 3, 5, 8]].into_iter().enumerate() {
        for i in &doomed {
            assert!(envelope.redact_attachment(*i));
            assert!(!envelope.redact_attachment(*i), "redacting twice changes nothing");
        }
        let gone: Vec<usize> = if step == 0 { vec![1, 4, 7] } else { vec![0, 1, 2, 3, 4, 5, 7, 8] };
        let bytes = envelope.encode();
        for (i, a) in attachments.iter().enumerate() {
            if gone.contains(&i) {
                assert_eq!(envelope.attachment(i), None);
                assert!(!contains(&bytes, a), "attachment {i} is still in the encoding");
            } else {
                assert_eq!(envelope.attachment(i).as_deref(), Some(a.as_slice()));
            }
        }
        let back = reparse(&fx, &envelope);
        assert_eq!(back.id(), envelope.id());
        assert_eq!(back, envelope);
        assert_eq!(back.attachments().filter(Option::is_some).count(), 10 - gone.len());
        // A verified envelope keeps only the withheld attachments' hashes and recomputes the
        // others: written again (verified, or trusted from storage), it is the same bytes.
        assert_eq!(back.encode(), bytes);
        let stored = VerifiedEnvelope::assume_verified(Envelope::decode(&bytes).unwrap());
        assert_eq!((stored.encode(), stored.id()), (bytes.clone(), envelope.id()));
    }
}
