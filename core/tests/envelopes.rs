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
    AuthorChains, ChainPosition, Envelope, EnvelopeBuildError, MAX_PAYLOAD_LEN, UnsignedEnvelope,
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
