//! Forgery: a device may only write in its own name. Envelopes that insert under another
//! device's `yrs` client ID, write into another device's map, carry another device's signed
//! values or delete another device's items are refused before they touch the document, and
//! leave the state exactly as it was. Replays and duplicates change nothing.
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

use common::{Fixture, T0, sync_into};
use kathon_core::envelope::{Envelope, UnsignedEnvelope};
use kathon_core::error::VerifyError;
use kathon_core::hlc::Timestamp;
use kathon_core::model::schema::{ItemId, NodeKind};
use kathon_core::model::yupdate::UpdateRuleError;
use kathon_core::model::{IngestError, KIND_DOC_UPDATE, Received, author_map, session_client};
use kathon_core::register::RegisterValue;
use yrs::updates::decoder::Decode;
use yrs::{Doc, Map, Options, Transact, Update};

const NONCE: [u8; 16] = [7; 16];

/// Signs `update` as the first envelope of device `device`, declaring `NONCE`.
fn forged(fx: &Fixture, device: usize, update: Vec<u8>) -> Envelope {
    let mut payload = NONCE.to_vec();
    payload.extend_from_slice(&update);
    let unsigned = UnsignedEnvelope {
        kind: KIND_DOC_UPDATE,
        seq: 1,
        prev: None,
        hlc: Timestamp::from_wall_ms(T0),
        parents: vec![],
        payload,
        attachments: vec![],
    };
    Envelope::decode(&Envelope::sign(&fx.devices[device], &fx.identity, unsigned).unwrap().encode()).unwrap()
}

fn doc(client: u64) -> Doc {
    Doc::with_options(Options { client_id: yrs::block::ClientID::new(client), ..Options::default() })
}

/// A value as this build writes it: signed by the envelope that will carry it.
fn signed_value(fx: &Fixture, device: usize, path: &str) -> Vec<u8> {
    RegisterValue::write(
        &std::sync::Arc::new(fx.devices[device].public()),
        path,
        b"forged".to_vec(),
        Timestamp::from_wall_ms(T0),
        vec![],
    )
    .unwrap()
    .encode()
}

/// A value as earlier builds wrote it (format version 1), with its own signature.
fn self_signed_value(fx: &Fixture, device: usize, path: &str) -> Vec<u8> {
    RegisterValue::sign_v1(
        &fx.devices[device],
        &fx.identity,
        path,
        b"forged".to_vec(),
        Timestamp::from_wall_ms(T0),
        vec![],
    )
    .unwrap()
    .encode()
}

fn refused(victim: &mut kathon_core::model::BrowserState, envelope: Envelope) -> IngestError {
    let before = victim.encode_state();
    let err = victim.receive(envelope, T0 + 1).unwrap_err();
    assert_eq!(victim.encode_state(), before, "a refused envelope changed the state");
    err
}

#[test]
fn inserting_under_another_devices_client_id_is_refused() {
    let fx = Fixture::new(200, 3);
    let mut victim = fx.replica(2, 1);
    let attacker = fx.devices[0].public();
    // Device 0 writes into its own map, but under device 1's client ID.
    let b_client = session_client(&fx.devices[1].public(), &NONCE);
    let d = doc(b_client);
    let update = {
        let map = d.get_or_insert_map(author_map(&attacker));
        let mut txn = d.transact_mut();
        map.insert(&mut txn, "b/x/title", signed_value(&fx, 0, "b/x/title"));
        txn.encode_update_v1()
    };
    let err = refused(&mut victim.state, forged(&fx, 0, update));
    assert!(matches!(err, IngestError::Rule(UpdateRuleError::ForeignClient { .. })), "{err:?}");
}

#[test]
fn writing_into_another_devices_map_is_refused() {
    let fx = Fixture::new(201, 3);
    let mut victim = fx.replica(2, 1);
    let own_client = session_client(&fx.devices[0].public(), &NONCE);
    let d = doc(own_client);
    let update = {
        let map = d.get_or_insert_map(author_map(&fx.devices[1].public()));
        let mut txn = d.transact_mut();
        map.insert(&mut txn, "b/x/title", signed_value(&fx, 0, "b/x/title"));
        txn.encode_update_v1()
    };
    let err = refused(&mut victim.state, forged(&fx, 0, update));
    assert_eq!(err, IngestError::Rule(UpdateRuleError::OutsideOwnMap("parent map")));
}

#[test]
fn carrying_another_devices_signed_value_is_refused() {
    let fx = Fixture::new(202, 3);
    let mut victim = fx.replica(2, 1);
    let attacker = fx.devices[0].public();
    let d = doc(session_client(&attacker, &NONCE));
    let update = {
        let map = d.get_or_insert_map(author_map(&attacker));
        let mut txn = d.transact_mut();
        // A genuine self-signed value of device 1, replayed in device 0's map.
        map.insert(&mut txn, "b/x/title", self_signed_value(&fx, 1, "b/x/title"));
        txn.encode_update_v1()
    };
    assert_eq!(refused(&mut victim.state, forged(&fx, 0, update)), IngestError::ForeignValue);
}

#[test]
fn a_self_signed_value_with_a_bad_signature_is_refused_inside_a_good_envelope() {
    let fx = Fixture::new(206, 2);
    let mut victim = fx.replica(1, 1);
    let author = fx.devices[0].public();
    let mut value = self_signed_value(&fx, 0, "b/x/title");
    let last = value.len() - 1;
    value[last] ^= 1;
    let d = doc(session_client(&author, &NONCE));
    let update = {
        let map = d.get_or_insert_map(author_map(&author));
        let mut txn = d.transact_mut();
        map.insert(&mut txn, "b/x/title", value);
        txn.encode_update_v1()
    };
    let err = refused(&mut victim.state, forged(&fx, 0, update));
    assert!(matches!(err, IngestError::Verify(VerifyError::BadSignature { .. })), "{err:?}");
}

#[test]
fn values_of_both_formats_are_read_and_traced_to_their_envelope() {
    let fx = Fixture::new(207, 2);
    let mut victim = fx.replica(1, 1);
    let author = fx.devices[0].public();
    let (old, new) = (self_signed_value(&fx, 0, "k/old/name"), signed_value(&fx, 0, "k/new/name"));
    let d = doc(session_client(&author, &NONCE));
    let update = {
        let map = d.get_or_insert_map(author_map(&author));
        let mut txn = d.transact_mut();
        map.insert(&mut txn, "k/old/name", old.clone());
        map.insert(&mut txn, "k/new/name", new.clone());
        txn.encode_update_v1()
    };
    let envelope = forged(&fx, 0, update);
    let id = envelope.id();
    assert!(matches!(victim.state.receive(envelope, T0 + 1).unwrap(), Received::Applied(_)));
    for bytes in [old, new] {
        let value = RegisterValue::decode(&bytes, &std::sync::Arc::new(author)).unwrap();
        assert_eq!(victim.state.envelope_of_value(&value.id()), Some(id), "who signed it is provable");
    }
}

#[test]
fn deleting_or_overwriting_another_devices_items_is_refused() {
    let fx = Fixture::new(203, 3);
    let mut victim = fx.replica(2, 1);
    let mut honest = fx.replica(1, 2);
    honest
        .state
        .transact(T0, &mut honest.rng, |e| {
            e.add_bookmark(ItemId::TOOLBAR, None, NodeKind::Bookmark, "Mine", Some("https://a.example/"))
        })
        .unwrap();
    sync_into(&honest.state, &mut victim.state, T0);
    // The attacker holds the honest device's items and removes one of them.
    let attacker = fx.devices[0].public();
    let d = doc(session_client(&attacker, &NONCE));
    for e in honest.state.envelopes() {
        let payload = e.payload().unwrap();
        let update = &payload[16..];
        d.transact_mut().apply_update(Update::decode_v1(update).unwrap()).unwrap();
    }
    let honest_map = d.get_or_insert_map(author_map(&fx.devices[1].public()));
    let key = {
        let txn = d.transact();
        honest_map.keys(&txn).next().unwrap().to_owned()
    };
    let delete = {
        let mut txn = d.transact_mut();
        honest_map.remove(&mut txn, &key);
        txn.encode_update_v1()
    };
    assert_eq!(refused(&mut victim.state, forged(&fx, 0, delete)), IngestError::Rule(UpdateRuleError::ForeignDeletion));
    // Overwriting the same key (which would delete the honest item on integration) is refused too.
    let overwrite = {
        let mut txn = d.transact_mut();
        honest_map.insert(&mut txn, key.as_str(), signed_value(&fx, 0, &key));
        txn.encode_update_v1()
    };
    let err = refused(&mut victim.state, forged(&fx, 0, overwrite));
    assert!(matches!(err, IngestError::Rule(UpdateRuleError::OutsideOwnMap(_))), "{err:?}");
    assert_eq!(victim.state.bookmarks().len(), 1);
}

#[test]
fn replays_and_duplicates_change_nothing() {
    let fx = Fixture::new(204, 2);
    let mut a = fx.replica(0, 1);
    let mut b = fx.replica(1, 2);
    a.state
        .transact(T0, &mut a.rng, |e| {
            e.add_bookmark(ItemId::MENU, None, NodeKind::Bookmark, "One", Some("https://one.example/"))?;
            e.record_visit("https://one.example/", "One", T0, kathon_core::model::history::Transition::Typed)
        })
        .unwrap();
    sync_into(&a.state, &mut b.state, T0);
    let state = b.state.encode_state();
    let json = b.state.to_json();
    for _ in 0..3 {
        for e in a.state.envelopes() {
            let again = Envelope::decode(&e.encode()).unwrap();
            assert_eq!(b.state.receive(again, T0 + 5).unwrap(), Received::Duplicate);
        }
    }
    assert_eq!(b.state.encode_state(), state);
    assert_eq!(b.state.to_json(), json);
}

#[test]
fn garbage_doc_updates_are_refused_without_panic() {
    let fx = Fixture::new(205, 2);
    let mut victim = fx.replica(1, 1);
    let mut rng = common::rng(9);
    use rand_core::RngCore;
    for len in 0..512 {
        let mut update = vec![0u8; len];
        rng.fill_bytes(&mut update);
        if len > 2 {
            update[0] = 1; // one client, so decoding goes further
        }
        let before = victim.state.encode_state();
        assert!(victim.state.receive(forged(&fx, 0, update), T0).is_err());
        assert_eq!(victim.state.encode_state(), before);
    }
}
