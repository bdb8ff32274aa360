//! The sync engine in the simulated network: pairing, sessions, delta sync, durability.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
#![cfg(not(target_arch = "wasm32"))]

use kathon_core::model::schema::{ItemId, NodeKind};
use kathon_core::sim::{Faults, SimNet};
use kathon_core::sync::{Config, EngineEvent};

fn net(seed: u64) -> SimNet {
    SimNet::new(seed, Config::default(), Faults::NONE)
}

#[test]
fn pair_then_sync_both_ways() {
    let mut net = net(1);
    let a = net.add_founder("laptop");
    let b = net.add_paired(a, "phone");
    let identity = net.engine(a).identity();
    assert_eq!(net.engine(b).identity(), identity);
    // Both pages showed the same short authentication string.
    let sas_a = net.nodes[a].events.iter().find_map(|e| match e {
        EngineEvent::PairingRequest { sas, .. } => Some(sas.clone()),
        _ => None,
    });
    let sas_b = net.nodes[b].events.iter().find_map(|e| match e {
        EngineEvent::PairingSas { sas, .. } => Some(sas.clone()),
        _ => None,
    });
    assert!(sas_b.is_some());
    let _ = sas_a; // removed from the log when confirmed; compared in the pairing tests

    let now = net.now_ms;
    net.engine(a)
        .transact(now, |e| {
            e.add_bookmark(ItemId::TOOLBAR, None, NodeKind::Bookmark, "from A", Some("https://a.example/"))
        })
        .unwrap();
    net.run_for(200);
    assert_eq!(net.engine(b).state().unwrap().bookmarks().len(), 1);
    let now = net.now_ms;
    net.engine(b)
        .transact(now, |e| {
            e.add_bookmark(ItemId::TOOLBAR, None, NodeKind::Bookmark, "from B", Some("https://b.example/"))
        })
        .unwrap();
    net.run_for(200);
    assert_eq!(net.engine(a).state().unwrap().bookmarks().len(), 2);
    assert!(net.converged());
}

use kathon_core::envelope::{Envelope, UnsignedEnvelope};
use kathon_core::hlc::Timestamp;
use kathon_core::sync::wire::frames;
use kathon_core::sync::{Fingerprint, Message, PairingCode, RecordKey, SessionError};
use rand_core::RngCore;

fn refusals(net: &SimNet, i: usize) -> Vec<SessionError> {
    net.nodes[i]
        .events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::PeerRefused { error, .. } => Some(error.clone()),
            _ => None,
        })
        .collect()
}

fn add(net: &mut SimNet, i: usize, title: &str) {
    let now = net.now_ms + net.nodes[i].clock_offset_ms;
    net.engine(i)
        .transact(now, |e| e.add_bookmark(ItemId::MENU, None, NodeKind::Bookmark, title, Some("https://x.example/")))
        .unwrap();
}

fn bookmarks(net: &mut SimNet, i: usize) -> usize {
    net.engine(i).state().unwrap().bookmarks().len()
}

/// Three paired devices, then every connection closed.
fn trio(seed: u64) -> SimNet {
    let mut net = net(seed);
    let a = net.add_founder("a");
    net.add_paired(a, "b");
    net.add_paired(a, "c");
    for (x, y) in [(0, 1), (0, 2), (1, 2)] {
        net.disconnect(x, y);
    }
    for node in &mut net.nodes {
        node.events.clear();
    }
    net
}

#[test]
fn a_relay_that_swaps_fingerprints_gets_no_session() {
    let mut net = trio(10);
    add(&mut net, 0, "secret bookmark");
    // A bridge in the middle terminates DTLS on both sides with its own certificates, so each
    // device sees the relay's fingerprint as the remote one.
    net.remote_fp_override.insert((0, 1), Fingerprint::parse("sha-256 AA:AA").unwrap());
    net.remote_fp_override.insert((1, 0), Fingerprint::parse("sha-256 BB:BB").unwrap());
    net.connect(0, 1);
    net.run_for(2_000);
    assert!(refusals(&net, 0).contains(&SessionError::BadHandshake), "{:?}", refusals(&net, 0));
    assert!(refusals(&net, 1).contains(&SessionError::BadHandshake), "{:?}", refusals(&net, 1));
    assert!(net.engine(0).connected().is_empty() && net.engine(1).connected().is_empty());
    assert_eq!(bookmarks(&mut net, 1), 0, "no sync byte crossed");
}

#[test]
fn a_replayed_handshake_is_refused() {
    let mut net = trio(11);
    // Record everything A sends B in one session...
    let recorded = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let sink = recorded.clone();
    net.tamper = Some(Box::new(move |from, to, frame| {
        if (from, to) == (0, 1) {
            sink.borrow_mut().push(frame.clone());
        }
        Some(frame)
    }));
    net.connect(0, 1);
    net.run_for(1_000);
    assert_eq!(net.engine(1).connected().len(), 1);
    net.disconnect(0, 1);
    // ...then, in a new session, replace A's frames with the old ones.
    let old = recorded.borrow().clone();
    let mut replay = old.into_iter();
    net.tamper = Some(Box::new(move |from, to, frame| if (from, to) == (0, 1) { replay.next() } else { Some(frame) }));
    for node in &mut net.nodes {
        node.events.clear();
    }
    net.connect(0, 1);
    net.run_for(3_000);
    assert!(refusals(&net, 1).contains(&SessionError::BadHandshake), "{:?}", refusals(&net, 1));
    assert!(net.engine(1).connected().is_empty());
}

#[test]
fn tampered_dropped_and_flooded_frames_do_no_harm() {
    let mut net = trio(12);
    for i in 0..3 {
        add(&mut net, i, &format!("from {i}"));
    }
    // Flip a bit in one frame of twenty, in every direction.
    let mut rng = kathon_core::testing::rng_for_tests(5);
    net.tamper = Some(Box::new(move |_, _, mut frame| {
        if rng.next_u64().is_multiple_of(20) && !frame.is_empty() {
            let i = (rng.next_u64() as usize) % frame.len();
            frame[i] ^= 1 << (rng.next_u64() % 8);
        }
        Some(frame)
    }));
    net.faults = kathon_core::sim::Faults { loss_percent: 20, dup_percent: 20, latency_ms: 2, jitter_ms: 30 };
    net.connect_all();
    net.run_for(5_000);
    // A flood of garbage and oversized chunk claims from a peer.
    let mut garbage_rng = kathon_core::testing::rng_for_tests(6);
    for i in 0..5_000u32 {
        let mut frame = vec![0u8; (garbage_rng.next_u64() % 2_000) as usize];
        garbage_rng.fill_bytes(&mut frame);
        if i % 2 == 0 && frame.len() > 10 {
            frame[0] = 1; // the right version, a chunk of a message that never completes
            frame[1] = 1;
            frame[8] = 0xff;
            frame[9] = 0xff;
        }
        net.inject(1, 0, frame);
    }
    net.run_for(100);
    assert!(net.engine(0).buffered_bytes() < 5 * 8 * 1024 * 1024, "reassembly must stay bounded");
    // Stop the attack; reconnect whatever was refused; everyone converges.
    net.tamper = None;
    net.faults = kathon_core::sim::Faults::NONE;
    for (x, y) in [(0, 1), (0, 2), (1, 2)] {
        net.disconnect(x, y);
    }
    net.connect_all();
    net.run_for(7_000);
    assert!(net.converged());
    assert_eq!(bookmarks(&mut net, 0), 3);
}

fn envelope_frame(envelope: &kathon_core::envelope::VerifiedEnvelope) -> Vec<u8> {
    frames(&Message::Envelope(envelope.encode()).encode(), 9_999).remove(0)
}

#[test]
fn an_equivocating_device_is_quarantined_and_the_others_converge() {
    let mut net = trio(13);
    net.connect_all();
    add(&mut net, 2, "honest");
    net.run_for(1_000);
    // C signs a second, different envelope for its write #1.
    let c_key = net.engine(2).bundle().device.clone();
    let identity = net.engine(0).identity().unwrap();
    let forged = Envelope::sign(
        &c_key,
        &identity,
        UnsignedEnvelope {
            kind: 2,
            seq: 1,
            prev: None,
            hlc: Timestamp::from_wall_ms(net.now_ms),
            parents: vec![],
            payload: vec![1],
            attachments: vec![],
        },
    )
    .unwrap();
    net.inject(2, 0, envelope_frame(&forged));
    net.run_for(1_000);
    let quarantined = net.engine(0).state().unwrap().quarantined().contains(&c_key.public());
    assert!(quarantined);
    assert!(
        net.nodes[0].events.iter().any(|e| matches!(e, EngineEvent::Model(kathon_core::model::Event::Equivocation(_))))
    );
    add(&mut net, 1, "after");
    net.run_for(4_000);
    assert_eq!(bookmarks(&mut net, 0), bookmarks(&mut net, 1));
}

#[test]
fn a_forged_client_id_is_refused_and_far_future_stamps_wait_for_their_time() {
    let mut net = trio(14);
    net.connect_all();
    net.run_for(500);
    // C forges an update under A's yrs client ID.
    let c_key = net.engine(2).bundle().device.clone();
    let identity = net.engine(0).identity().unwrap();
    let a_client = net.engine(0).state().unwrap().client_id();
    let doc = yrs::Doc::with_options(yrs::Options {
        client_id: yrs::block::ClientID::new(a_client),
        ..yrs::Options::default()
    });
    let update = {
        use yrs::{Map, Transact};
        let map = doc.get_or_insert_map(kathon_core::model::author_map(&c_key.public()));
        let mut txn = doc.transact_mut();
        map.insert(&mut txn, "b/x/title", vec![1u8]);
        txn.encode_update_v1()
    };
    let mut payload = vec![9u8; 16];
    payload.extend_from_slice(&update);
    let forged = Envelope::sign(
        &c_key,
        &identity,
        UnsignedEnvelope {
            kind: 1,
            seq: 1,
            prev: None,
            hlc: Timestamp::from_wall_ms(net.now_ms),
            parents: vec![],
            payload,
            attachments: vec![],
        },
    )
    .unwrap();
    net.inject(2, 0, envelope_frame(&forged));
    net.run_for(200);
    assert!(
        net.nodes[0]
            .events
            .iter()
            .any(|e| matches!(e, EngineEvent::PeerSentInvalid { error: kathon_core::model::IngestError::Rule(_), .. }))
    );

    // B's clock runs an hour fast: its change waits at A until A's time reaches it.
    net.nodes[1].clock_offset_ms = 3_600_000;
    add(&mut net, 1, "from the future");
    net.run_for(5_000);
    assert_eq!(bookmarks(&mut net, 0), 0, "held back, not applied");
    net.run_for(3_600_000);
    assert_eq!(bookmarks(&mut net, 0), 1, "applied when its time came");
}

#[test]
fn a_revoked_device_can_neither_write_nor_read_what_comes_after() {
    let mut net = trio(15);
    net.connect_all();
    let now = net.now_ms;
    let entry = net.engine(0).transact(now, |e| e.add_password("https://bank.example", "ada", "before", "")).unwrap();
    net.run_for(2_000);
    assert_eq!(net.engine(2).state().unwrap().reveal_password_field(&entry, "password").unwrap(), "before");
    // C goes away (lost); A revokes it and changes the password.
    net.disconnect(0, 2);
    net.disconnect(1, 2);
    let c = net.engine(2).device();
    let now = net.now_ms;
    net.engine(0).revoke(c, now).unwrap();
    let now = net.now_ms;
    net.engine(0).transact(now, |e| e.set_password_fields(&entry, None, None, Some("after"), None)).unwrap();
    net.run_for(4_000);
    // C writes while away, then comes back.
    add(&mut net, 2, "written after revocation");
    for node in &mut net.nodes {
        node.events.clear();
    }
    net.connect_all();
    net.run_for(4_000);
    for i in [0, 1] {
        assert!(
            refusals(&net, i).iter().any(|e| *e == SessionError::Revoked || *e == SessionError::NotEnrolled),
            "{i}: {:?}",
            refusals(&net, i)
        );
        assert_eq!(bookmarks(&mut net, i), 0, "C's new write is refused");
    }
    // Even delivered directly, C's new envelope is refused as revoked.
    let after = net.engine(2).state().unwrap().envelopes().last().unwrap().clone();
    let now = net.now_ms;
    assert_eq!(
        net.engine(1).state_mut().unwrap().receive(Envelope::decode(&after.encode()).unwrap(), now).unwrap_err(),
        kathon_core::model::IngestError::Verify(kathon_core::error::VerifyError::Revoked {
            device: c,
            last_valid_seq: 0,
            seq: 1
        })
    );
    // B reads the new password; C, which never received the new vault key, cannot.
    assert_eq!(net.engine(1).state().unwrap().reveal_password_field(&entry, "password").unwrap(), "after");
    // Even handed every envelope A holds, C cannot open the re-sealed password.
    let envelopes: Vec<Vec<u8>> = net.engine(0).state().unwrap().envelopes().map(|e| e.encode()).collect();
    let now = net.now_ms;
    let c_state = net.engine(2).state_mut().unwrap();
    for bytes in envelopes {
        let _ = c_state.receive(Envelope::decode(&bytes).unwrap(), now);
    }
    assert!(matches!(
        c_state.reveal_password_field(&entry, "password"),
        Err(kathon_core::model::ModelError::Vault(kathon_core::model::vault::VaultError::UnknownKey))
    ));
}

#[test]
fn wrong_and_expired_pairing_codes_fail_cleanly() {
    let mut net = net(16);
    let a = net.add_founder("a");
    let registry_before = net.engine(a).state().unwrap().registry().certificates().count();
    // A code with the right device tag and a wrong secret.
    let now = net.now_ms;
    let real = net.engine(a).new_pairing_code(now).unwrap();
    let wrong = PairingCode { device_tag: real.device_tag, secret: [0; 16] };
    let seed = [1u8; 32];
    let joiner = kathon_core::sync::Engine::join(Config::default(), wrong, "intruder", seed, now);
    let j = net.nodes.len();
    net.push_engine(joiner);
    net.connect(a, j);
    net.run_for(2_000);
    assert!(
        refusals(&net, a).contains(&SessionError::BadPairingCode)
            || refusals(&net, j)
                .contains(&SessionError::RefusedByPeer(kathon_core::sync::RefuseReason::BadPairingCode))
    );
    // The right code after it expired.
    net.disconnect(a, j);
    let late = kathon_core::sync::Engine::join(Config::default(), real.clone(), "late", [2u8; 32], net.now_ms);
    let k = net.nodes.len();
    net.push_engine(late);
    net.run_for(Config::default().pairing_code_ttl_ms + 1);
    net.connect(a, k);
    net.run_for(2_000);
    assert!(net.engine(k).state().is_none(), "no identity for an expired code");
    assert_eq!(net.engine(a).state().unwrap().registry().certificates().count(), registry_before, "nothing changed");
    // Text form round trip and typo detection.
    let text = real.to_text();
    assert_eq!(PairingCode::parse(&text.to_lowercase()).unwrap(), real);
    let typo = text.replacen('A', "B", 1);
    assert!(PairingCode::parse(&typo).is_err() || typo == text);
}

#[test]
fn both_devices_show_the_same_short_authentication_string() {
    let mut net = net(17);
    let a = net.add_founder("a");
    let now = net.now_ms;
    let code = net.engine(a).new_pairing_code(now).unwrap();
    let joiner = kathon_core::sync::Engine::join(Config::default(), code, "b", [3u8; 32], now);
    let b = net.nodes.len();
    net.push_engine(joiner);
    net.connect(a, b);
    net.run_for(1_000);
    let on_a = net.nodes[a].events.iter().find_map(|e| match e {
        EngineEvent::PairingRequest { sas, peer, .. } => Some((sas.clone(), *peer)),
        _ => None,
    });
    let on_b = net.nodes[b].events.iter().find_map(|e| match e {
        EngineEvent::PairingSas { sas, .. } => Some(sas.clone()),
        _ => None,
    });
    let (sas_a, peer) = on_a.unwrap();
    assert_eq!(Some(sas_a.clone()), on_b);
    assert_eq!(sas_a.len(), 7);
    // Refusing on A ends it; nothing is issued.
    let now = net.now_ms;
    net.engine(a).confirm_pairing(peer, false, now).unwrap();
    net.run_for(1_000);
    assert!(net.engine(b).state().is_none());
}

#[test]
fn stored_records_are_checked_on_load() {
    let mut net = trio(18);
    net.connect_all();
    add(&mut net, 0, "one");
    net.run_for(1_000);
    let identity = net.nodes[0].storage[&RecordKey::Identity].clone();
    let records: Vec<(RecordKey, Vec<u8>)> =
        net.nodes[0].storage.iter().filter(|(k, _)| **k != RecordKey::Identity).map(|(k, v)| (*k, v.clone())).collect();
    let now = net.now_ms;
    let load = |records: Vec<(RecordKey, Vec<u8>)>| {
        kathon_core::sync::Engine::load(Config::default(), &identity, records, [7; 32], now)
    };
    let good = load(records.clone()).unwrap();
    assert_eq!(good.state().unwrap().bookmarks().len(), 1);
    assert!(good.audit().is_empty(), "a full audit of honest data finds nothing");
    // One flipped bit anywhere in an envelope record is caught.
    let (index, _) = records.iter().enumerate().find(|(_, (k, _))| matches!(k, RecordKey::Envelope(_))).unwrap();
    for bit in [0usize, 40, 200] {
        let mut tampered = records.clone();
        let bytes = &mut tampered[index].1;
        let at = bit.min(bytes.len() * 8 - 1);
        bytes[at / 8] ^= 1 << (at % 8);
        assert!(matches!(
            load(tampered),
            Err(kathon_core::sync::LoadError::Tampered(_) | kathon_core::sync::LoadError::Torn(..))
        ));
    }
    // A torn (truncated) record too.
    let mut torn = records.clone();
    let len = torn[index].1.len();
    torn[index].1.truncate(len / 2);
    assert!(matches!(load(torn), Err(kathon_core::sync::LoadError::Torn(..))));
    // A record moved under another key is caught.
    let mut moved = records.clone();
    moved[index].0 = RecordKey::Envelope(kathon_core::envelope::EnvelopeId(kathon_core::hash::Hash::ZERO));
    assert!(load(moved).is_err());
}

/// Opens a node's stored records (its identity record among them) as a fresh engine.
fn load_stored(
    storage: &std::collections::BTreeMap<RecordKey, Vec<u8>>,
    now: u64,
) -> Result<kathon_core::sync::Engine, kathon_core::sync::storage::LoadError> {
    let records = storage.iter().filter(|(k, _)| **k != RecordKey::Identity).map(|(k, v)| (*k, v.clone()));
    kathon_core::sync::Engine::load(Config::default(), &storage[&RecordKey::Identity], records, [9; 32], now)
}

/// Deletes all of `node`'s history in one transaction.
fn delete_all_history(net: &mut SimNet, node: usize) {
    let now = net.now_ms;
    net.engine(node)
        .transact(now, |e| {
            e.delete_all_history();
            Ok(())
        })
        .unwrap();
}

/// Generates a profile of `visits` visits from `seed` and records them all on `node` in one
/// transaction (one envelope); returns the profile.
fn record_visits(net: &mut SimNet, node: usize, seed: u64, visits: usize) -> kathon_core::testing::Profile {
    let profile = kathon_core::testing::Profile::generate(
        seed,
        kathon_core::testing::ProfileSize { bookmarks: 0, visits, passwords: 0, tabs: 0 },
        net.now_ms,
    );
    let now = net.now_ms;
    net.engine(node)
        .transact(now, |e| {
            for v in &profile.visits {
                e.record_visit(&v.url, &v.title, v.at_ms, v.transition)?;
            }
            Ok(())
        })
        .unwrap();
    profile
}

/// Bytes needed to bring B up to date after `k` changes on A, both holding the 100,000-visit
/// profile; and the number of frames.
fn delta_cost(k: usize) -> (u64, u64, u64) {
    let mut net = net(20 + k as u64);
    let a = net.add_founder("a");
    let b = net.add_paired(a, "b");
    record_visits(&mut net, a, 1, 100_000);
    let before = net.bytes_sent;
    net.run_for(5_000);
    let full = net.bytes_sent - before;
    assert!(net.converged());
    assert_eq!(net.engine(b).state().unwrap().history_len(), 100_000);
    // k small changes, each its own transaction, then sync.
    let (bytes, frames) = (net.bytes_sent, net.frames_sent);
    for i in 0..k {
        let now = net.now_ms;
        net.engine(a)
            .transact(now, |e| {
                e.add_bookmark(
                    ItemId::MENU,
                    None,
                    NodeKind::Bookmark,
                    &format!("change {i}"),
                    Some("https://k.example/"),
                )
            })
            .unwrap();
    }
    net.run_for(3_000);
    assert!(net.converged());
    (net.bytes_sent - bytes, net.frames_sent - frames, full)
}

#[test]
fn incremental_sync_grows_with_the_changes_not_the_profile() {
    let mut last = 0;
    for k in [1usize, 10, 100] {
        let (bytes, frames, full) = delta_cost(k);
        eprintln!("k = {k}: {bytes} bytes in {frames} frames (full sync of the profile: {full} bytes)");
        // A fixed cost (summaries of a few authors) plus a bounded cost per change.
        assert!(bytes <= 4_096 + 2_048 * k as u64, "k = {k}: {bytes} bytes");
        assert!(bytes * 100 < full, "k = {k}: {bytes} bytes is not small next to {full}");
        assert!(bytes > last);
        last = bytes;
    }
}

#[test]
fn a_device_in_the_middle_relays_changes_between_devices_that_never_meet() {
    // b and c are both connected to a, never to each other (a native peer between two
    // browsers on different machines).
    let mut net = trio(11);
    net.connect(0, 1);
    net.connect(0, 2);
    net.run_for(2_000);
    add(&mut net, 1, "from b");
    net.run_for(3_000);
    assert_eq!(bookmarks(&mut net, 0), 1, "a has b's change");
    assert_eq!(bookmarks(&mut net, 2), 1, "c has b's change, through a");
    add(&mut net, 2, "from c");
    net.run_for(3_000);
    assert_eq!(bookmarks(&mut net, 1), 2, "b has c's change, through a");
}

#[test]
fn a_device_paired_later_reaches_devices_already_in_session() {
    // b is in session with a when c joins through a; c's changes must reach b through a, so b
    // must learn c's certificate from a.
    let mut net = net(12);
    let a = net.add_founder("a");
    let b = net.add_paired(a, "b");
    net.run_for(1_000);
    let c = net.add_paired(a, "c");
    net.disconnect(b, c);
    net.partition(b, c);
    net.run_for(1_000);
    add(&mut net, c, "from c");
    net.run_for(3_000);
    assert_eq!(bookmarks(&mut net, a), 1, "a has c's change");
    assert_eq!(bookmarks(&mut net, b), 1, "b has c's change, through a");
}

/// Group commit: while a batch of local changes is being written, new local changes are visible
/// at once but signed only when that write is done — all of them into one envelope, in one batch.
#[test]
fn local_changes_made_during_a_write_are_committed_together() {
    use kathon_core::sync::Engine;
    let now = 1_790_000_000_000;
    let mut engine = Engine::create_identity(Config::default(), "laptop", [3; 32], now).unwrap();
    let drain = |engine: &mut Engine| -> Vec<kathon_core::sync::StorageBatch> {
        std::iter::from_fn(|| engine.poll_storage()).collect()
    };
    for batch in drain(&mut engine) {
        engine.handle_storage_done(batch.id);
    }
    let add = |engine: &mut Engine, title: &str| {
        engine
            .transact(now, |e| {
                e.add_bookmark(ItemId::TOOLBAR, None, NodeKind::Bookmark, title, Some("https://x.example/"))
            })
            .unwrap()
    };
    let envelopes = |engine: &Engine| engine.state().unwrap().envelopes().count();
    let committed = |engine: &mut Engine| -> Vec<usize> {
        std::iter::from_fn(|| engine.poll_event())
            .filter_map(|e| match e {
                EngineEvent::Committed(ids) => Some(ids.len()),
                _ => None,
            })
            .collect()
    };

    // Nothing being written: the first change is signed and stored at once.
    add(&mut engine, "first");
    assert_eq!(envelopes(&engine), 1);
    let first = drain(&mut engine);
    assert_eq!(first.len(), 1);
    // While it is written, 50 more changes: all visible, none signed yet, flush still pending.
    for i in 0..50 {
        add(&mut engine, &format!("during {i}"));
    }
    assert_eq!(engine.state().unwrap().bookmarks().children(&ItemId::TOOLBAR).len(), 51);
    assert_eq!(envelopes(&engine), 1, "changes made during a write wait for it");
    assert!(drain(&mut engine).is_empty());
    assert!(engine.pending_storage() > 0, "a flush must wait for the unsealed changes");
    let _ = committed(&mut engine);
    // The write is done: the first change is committed, and the 50 are signed together.
    engine.handle_storage_done(first[0].id);
    assert_eq!(committed(&mut engine), vec![1]);
    assert_eq!(envelopes(&engine), 2, "one envelope for the 50 changes");
    let second = drain(&mut engine);
    assert_eq!(second.len(), 1, "and one storage batch");
    for batch in second {
        engine.handle_storage_done(batch.id);
    }
    assert_eq!(committed(&mut engine), vec![1]);
    assert_eq!(engine.pending_storage(), 0);

    // One change being written, one waiting: the waiting one is three register writes.
    add(&mut engine, "being written");
    assert_eq!(drain(&mut engine).len(), 1);
    add(&mut engine, "waiting");
    assert_eq!(engine.state().unwrap().unsealed_len(), 3, "place, title and URL wait");

    // A visit seals what waits first, so history keeps its order with the other writes.
    engine
        .transact(now, |e| {
            e.record_visit("https://x.example/", "x", now, kathon_core::model::history::Transition::Link).map(|_| ())
        })
        .unwrap();
    assert_eq!(engine.state().unwrap().unsealed_len(), 0);
    assert_eq!(engine.state().unwrap().history_len(), 1);
}

/// Group commit with a window (`Config::group_commit_ms`, what the browser driver sets): with
/// nothing being written, a change waits up to the window for the ones after it; they are then
/// signed into one envelope and stored in one batch, and no change waits longer than the window
/// or the write ahead of it.
#[test]
fn a_commit_window_groups_changes_made_while_nothing_is_written() {
    use kathon_core::sync::Engine;
    let t0 = 1_790_000_000_000;
    let config = Config { group_commit_ms: 8, ..Config::default() };
    let mut engine = Engine::create_identity(config, "laptop", [4; 32], t0).unwrap();
    let drain = |engine: &mut Engine| -> Vec<kathon_core::sync::StorageBatch> {
        std::iter::from_fn(|| engine.poll_storage()).collect()
    };
    for batch in drain(&mut engine) {
        engine.handle_storage_done(batch.id);
    }
    let add = |engine: &mut Engine, now: u64, title: &str| {
        engine.transact(now, |e| e.add_bookmark(ItemId::TOOLBAR, None, NodeKind::Bookmark, title, None)).unwrap();
    };
    let envelopes = |engine: &Engine| engine.state().unwrap().envelopes().count();
    let before = envelopes(&engine);

    // Nothing being written: the first change waits, visible, with a timer at the window's end.
    add(&mut engine, t0, "a");
    assert_eq!(engine.state().unwrap().bookmarks().children(&ItemId::TOOLBAR).len(), 1);
    assert_eq!(envelopes(&engine), before);
    assert!(drain(&mut engine).is_empty());
    assert!(engine.pending_storage() > 0, "a flush waits for it");
    assert_eq!(engine.poll_timeout(), Some(t0 + 8));
    // Changes inside the window join it; the window is counted from the oldest.
    add(&mut engine, t0 + 3, "b");
    add(&mut engine, t0 + 7, "c");
    assert_eq!(engine.poll_timeout(), Some(t0 + 8));
    engine.handle_timeout(t0 + 7);
    assert!(drain(&mut engine).is_empty());
    // The window ends: one envelope, one batch, for the three.
    engine.handle_timeout(t0 + 8);
    assert_eq!(envelopes(&engine), before + 1);
    let batch = drain(&mut engine);
    assert_eq!(batch.len(), 1);
    assert_eq!(engine.state().unwrap().unsealed_len(), 0);

    // While that batch is written, changes wait for it whatever the window says...
    add(&mut engine, t0 + 20, "d");
    engine.handle_timeout(t0 + 40);
    assert!(drain(&mut engine).is_empty(), "a change waits for the write ahead of it");
    assert_eq!(envelopes(&engine), before + 1);
    // ...and are sealed as soon as it is done, their window having passed meanwhile.
    engine.handle_storage_done(batch[0].id);
    assert_eq!(envelopes(&engine), before + 2);
    let batch = drain(&mut engine);
    assert_eq!(batch.len(), 1);
    engine.handle_storage_done(batch[0].id);

    // A write done inside a change's window: the change still waits for its window.
    add(&mut engine, t0 + 100, "e");
    engine.handle_timeout(t0 + 108);
    let batch = drain(&mut engine);
    add(&mut engine, t0 + 109, "f");
    engine.handle_timeout(t0 + 110);
    engine.handle_storage_done(batch[0].id);
    assert_eq!(envelopes(&engine), before + 3, "f's window is open until t0 + 117");
    assert_eq!(engine.poll_timeout(), Some(t0 + 117));
    engine.handle_timeout(t0 + 117);
    assert_eq!(envelopes(&engine), before + 4);
    assert_eq!(engine.state().unwrap().bookmarks().children(&ItemId::TOOLBAR).len(), 6);

    for batch in drain(&mut engine) {
        engine.handle_storage_done(batch.id);
    }

    // A flush ends the window: sealed at once with nothing in flight...
    add(&mut engine, t0 + 200, "g");
    let batch = drain(&mut engine);
    assert!(batch.is_empty());
    engine.seal_waiting();
    assert_eq!(envelopes(&engine), before + 5);
    let batch = drain(&mut engine);
    assert_eq!(batch.len(), 1);
    // ...or right after the write ahead, though the window is still open.
    add(&mut engine, t0 + 201, "h");
    engine.seal_waiting();
    assert_eq!(envelopes(&engine), before + 5, "h waits for g's write");
    engine.handle_storage_done(batch[0].id);
    assert_eq!(envelopes(&engine), before + 6, "and not for its window");
    assert_eq!(engine.state().unwrap().unsealed_len(), 0);
}

/// The same in the simulated network: a device whose storage is slow keeps every change, its
/// peer receives each one, and nothing acknowledged is lost across a crash.
#[test]
fn grouped_commits_reach_peers_and_survive_crashes() {
    let mut net = net(41);
    let a = net.add_founder("laptop");
    let b = net.add_paired(a, "phone");
    net.nodes[a].instant_storage = false;
    for round in 0..5 {
        let now = net.now_ms;
        for i in 0..20 {
            net.engine(a)
                .transact(now, |e| {
                    e.add_bookmark(ItemId::MENU, None, NodeKind::Bookmark, &format!("r{round} {i}"), None)
                })
                .unwrap();
        }
        net.run_for(50);
        net.flush(a);
        net.run_for(50);
        net.flush(a);
        net.run_for(200);
    }
    net.flush(a);
    net.run_for(500);
    assert_eq!(net.engine(b).state().unwrap().bookmarks().children(&ItemId::MENU).len(), 100);
    assert!(net.converged());
    let acknowledged = net.nodes[a].acknowledged.len();
    assert!(acknowledged >= 2, "committed in groups: {acknowledged} envelopes for 100 changes");
    assert!(acknowledged < 100, "edits made during a write shared envelopes: {acknowledged}");
    // Unsealed changes at a crash were never acknowledged; everything acknowledged survives.
    let now = net.now_ms;
    net.engine(a).transact(now, |e| e.add_bookmark(ItemId::MENU, None, NodeKind::Bookmark, "x", None)).unwrap();
    net.engine(a).transact(now, |e| e.add_bookmark(ItemId::MENU, None, NodeKind::Bookmark, "y", None)).unwrap();
    net.crash(a);
    net.restart(a);
    let acknowledged: Vec<_> = net.nodes[a].acknowledged.iter().copied().collect();
    let state = net.engine(a).state().unwrap();
    for id in &acknowledged {
        assert!(state.envelope(id).is_some(), "an acknowledged envelope was lost");
    }
}

/// A summary that left the peer before envelopes reached it does not make them go out again:
/// over 20 s of edits (one every 100 ms, 50 ms one way, a summary every 3 s each way), every
/// envelope crosses the link once, and the replicas converge.
#[test]
fn envelopes_in_flight_are_not_sent_twice_when_a_summary_crosses_them() {
    use std::sync::{Arc, Mutex};
    let mut net = net(42);
    let a = net.add_founder("laptop");
    let b = net.add_paired(a, "phone");
    net.faults = Faults { latency_ms: 50, ..Faults::NONE };
    net.run_for(5_000);
    let sent: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let log = sent.clone();
    net.tamper = Some(Box::new(move |from, _to, frame| {
        // Whole-message frames whose message is an envelope (tag 6, or 11 deflated).
        if from == 0 && frame.get(1) == Some(&0) && matches!(frame.get(2), Some(&6 | &11)) {
            log.lock().unwrap().push(frame.clone());
        }
        Some(frame)
    }));
    let before = net.engine(a).state().unwrap().envelopes().count();
    for i in 0..200 {
        let now = net.now_ms;
        net.engine(a)
            .transact(now, |e| e.add_bookmark(ItemId::MENU, None, NodeKind::Separator, &format!("{i}"), None))
            .unwrap();
        net.run_for(100);
    }
    net.run_for(10_000);
    assert!(net.converged());
    let made = net.engine(a).state().unwrap().envelopes().count() - before;
    let frames = sent.lock().unwrap().clone();
    let mut unique = frames.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), made, "every new envelope reached B");
    assert_eq!(frames.len(), made, "{} envelope frames for {made} envelopes: some went twice", frames.len());
    assert_eq!(net.engine(b).state().unwrap().bookmarks().children(&ItemId::MENU).len(), 200);
}

/// Reading a burst of events gives the queues' room back. The engine used to move the replica's
/// whole queue into its own: once read, both kept room for the whole burst (30 MB after the
/// realistic profile's import, which then queued an event per visit).
#[test]
fn read_events_leave_no_queue_room_behind() {
    use kathon_core::model::schema::ItemId;
    let now = 1_790_000_000_000u64;
    let mut engine = kathon_core::sync::Engine::create_identity(Config::default(), "events", [7; 32], now).unwrap();
    engine
        .transact(now, |e| {
            for i in 0..3_000 {
                e.add_bookmark(
                    ItemId::TOOLBAR,
                    None,
                    NodeKind::Bookmark,
                    &format!("b{i}"),
                    Some("https://a.example/"),
                )?;
            }
            Ok(())
        })
        .unwrap();
    let mut read = 0;
    while engine.poll_event().is_some() {
        read += 1;
    }
    assert!(read >= 3_000, "{read} events");
    assert!(engine.event_queue_capacity() <= 128, "room for {} events kept", engine.event_queue_capacity());
}

/// A batch of visits reports each visit, up to `MAX_VISIT_EVENTS`; a larger one (an import)
/// reports one history change with no ID, locally and on the peer that receives it.
#[test]
fn a_large_visit_batch_reports_one_change() {
    use kathon_core::model::history::Transition;
    use kathon_core::model::{ChangeKind, Event, MAX_VISIT_EVENTS};
    let history_changes = |events: &[EngineEvent]| -> Vec<Option<ItemId>> {
        events
            .iter()
            .filter_map(|e| match e {
                EngineEvent::Model(Event::Changed { kind: ChangeKind::History, id, .. }) => Some(*id),
                _ => None,
            })
            .collect()
    };
    let mut net = net(41);
    let a = net.add_founder("laptop");
    let b = net.add_paired(a, "phone");
    net.run_for(200);
    for (count, one_each) in [(MAX_VISIT_EVENTS, true), (MAX_VISIT_EVENTS + 1, false)] {
        let now = net.now_ms;
        for node in [a, b] {
            net.nodes[node].events.clear();
        }
        net.engine(a)
            .transact(now, |e| {
                for i in 0..count {
                    e.record_visit(&format!("https://v.example/{count}/{i}"), "", 1_000 + i as u64, Transition::Link)?;
                }
                Ok(())
            })
            .unwrap();
        net.run_for(500);
        for node in [a, b] {
            let changes = history_changes(&net.nodes[node].events);
            if one_each {
                assert_eq!(changes.len(), count, "node {node}");
                assert!(changes.iter().all(Option::is_some));
            } else {
                assert_eq!(changes, vec![None], "node {node}");
            }
        }
    }
}

/// History stored in bulk is stored (and, once stored, held) packed: the heads apart, the text
/// deflated. Read back, audited, deleted from, served to a peer and stored again, it is the
/// same history.
#[test]
fn history_stored_packed_reads_back_the_same() {
    let mut net = net(31);
    let a = net.add_founder("a");
    let profile = record_visits(&mut net, a, 5, 300);
    // A few more, one at a time: small envelopes stay plain.
    for v in profile.visits.iter().take(3) {
        let now = net.now_ms;
        net.engine(a)
            .transact(now, |e| e.record_visit(&v.url, "again", v.at_ms + 1, v.transition).map(|_| ()))
            .unwrap();
        net.run_for(50);
    }
    net.run_for(1_000);
    let history = |engine: &kathon_core::sync::Engine| {
        let mut visits: Vec<_> = engine.state().unwrap().history().collect();
        visits.sort_by(|x, y| x.id.as_bytes().cmp(y.id.as_bytes()));
        visits
    };
    let before = history(net.engine(a));
    assert_eq!(before.len(), 303);
    let load = |storage: &_, now| load_stored(storage, now).unwrap();
    let loaded = load(&net.nodes[a].storage, net.now_ms);
    assert_eq!(history(&loaded), before);
    let state = loaded.state().unwrap();
    let packed: Vec<bool> = state
        .envelopes()
        .filter(|e| e.kind() == kathon_core::model::KIND_HISTORY)
        .map(kathon_core::envelope::VerifiedEnvelope::attachments_packed)
        .collect();
    assert_eq!(packed, [true, false, false, false], "the bulk envelope packed, the single visits not");
    let bulk = state.envelopes().find(|e| e.attachments_packed()).unwrap();
    let bulk_id = bulk.id();
    let stored = &net.nodes[a].storage[&RecordKey::Envelope(bulk.id())];
    assert!(
        stored.len() * 10 < bulk.encoded_len() * 7,
        "the packed record ({} bytes) is well under the canonical encoding ({} bytes)",
        stored.len(),
        bulk.encoded_len()
    );
    assert!(bulk.attachments_held_len() * 10 < bulk.encoded_len() * 7);
    // Written out again, a packed envelope is the envelope its author signed.
    assert!(loaded.audit().is_empty(), "{:?}", loaded.audit());

    // Deleting from the loaded replica rewrites the packed record; loaded again, it holds the rest.
    net.nodes[a].engine = Some(loaded);
    let doomed: Vec<_> = before.iter().step_by(7).map(|v| v.id).collect();
    let gone_url = before[1].url.clone();
    let now = net.now_ms;
    net.engine(a)
        .transact(now, |e| {
            e.delete_visits(&doomed);
            e.delete_history_url(&gone_url);
            Ok(())
        })
        .unwrap();
    net.run_for(1_000);
    let kept: Vec<_> = before.iter().filter(|v| !doomed.contains(&v.id) && v.url != gone_url).cloned().collect();
    assert!(kept.len() < 270);
    assert_eq!(history(net.engine(a)), kept);
    let again = load(&net.nodes[a].storage, net.now_ms);
    assert_eq!(history(&again), kept);
    assert!(again.audit().is_empty());

    // A new device gets the packed envelopes as their author signed them.
    net.nodes[a].engine = Some(again);
    let b = net.add_paired(a, "b");
    net.run_for(5_000);
    assert!(net.converged());
    assert_eq!(history(net.engine(b)), kept);

    // Everything deleted: every block of the packed envelope emptied in one pass; its record
    // keeps no visit.
    delete_all_history(&mut net, a);
    net.run_for(1_000);
    assert_eq!(history(net.engine(a)).len(), 0);
    assert_eq!(history(net.engine(b)).len(), 0);
    let emptied = load(&net.nodes[a].storage, net.now_ms);
    assert_eq!(history(&emptied).len(), 0);
    assert!(emptied.audit().is_empty());
    // Every rewrite was stored: none was found unreadable.
    assert!(!net.nodes[a].events.iter().any(|e| matches!(e, EngineEvent::EnvelopeUnreadable { .. })));
    let record = &net.nodes[a].storage[&RecordKey::Envelope(bulk_id)];
    for visit in &before {
        assert!(!record.windows(16).any(|w| w == visit.id.as_bytes()), "a deleted visit's ID is still stored");
    }
    // Left: per visit its hash (in the signed body), its length and its zeroed head.
    assert!(record.len() < 300 * (32 + 4 + 25) + 1_000, "{} bytes left of the bulk record", record.len());
}

/// A packed block that no longer inflates (only a bug could do it: records are MAC'd) must not
/// reach a peer, which would refuse the envelope, nor turn a deletion into a record that fails
/// the next load: the envelope is not sent, the rewrite is refused, both reported once; the
/// record on disk stays the earlier one, and the store still opens (the deletion holds).
#[test]
fn a_rewrite_that_no_longer_matches_its_id_is_refused() {
    let mut net = net(32);
    let a = net.add_founder("a");
    record_visits(&mut net, a, 6, 200);
    net.run_for(1_000);
    let bulk = net.engine(a).state().unwrap().envelopes().find(|e| e.attachments_packed()).unwrap().id();
    let key = RecordKey::Envelope(bulk);
    let identity = net.nodes[a].storage[&RecordKey::Identity].clone();
    let broken = kathon_core::testing::break_packed_block(&identity, key, &net.nodes[a].storage[&key], 0).unwrap();
    net.nodes[a].storage.insert(key, broken.clone());
    let load = load_stored;
    // Nothing is inflated to open a store: it opens.
    let loaded = load(&net.nodes[a].storage, net.now_ms).unwrap();
    assert_eq!(loaded.state().unwrap().history_len(), 200);
    net.nodes[a].engine = Some(loaded);
    net.nodes[a].events.clear();
    let reported = |net: &SimNet| {
        net.nodes[a]
            .events
            .iter()
            .filter(|e| matches!(e, EngineEvent::EnvelopeUnreadable { envelope } if *envelope == bulk))
            .count()
    };

    // A new device is never sent the envelope as it now reads (it would refuse it); the damage
    // is reported, once.
    let b = net.add_paired(a, "b");
    net.run_for(5_000);
    assert!(net.engine(b).state().unwrap().envelopes().all(|e| e.id() != bulk));
    assert!(!net.nodes[b].events.iter().any(|e| matches!(e, EngineEvent::PeerSentInvalid { .. })));
    assert_eq!(reported(&net), 1, "the unreadable envelope is reported");

    delete_all_history(&mut net, a);
    net.run_for(1_000);
    assert_eq!(reported(&net), 1, "reported once, not again for the refused rewrite");
    assert_eq!(net.nodes[a].storage[&key], broken, "the stored record is left as it was");
    assert_eq!(net.engine(a).state().unwrap().history_len(), 0);
    // Without the check the record would be sealed with zero hashes and this load would fail.
    // The deletion itself is an envelope of its own, stored: reloaded, the history is empty.
    let again = load(&net.nodes[a].storage, net.now_ms).unwrap();
    assert_eq!(again.state().unwrap().history_len(), 0);
}

/// A bulk document update (an import) is held and stored with its payload deflated: the record
/// is a fraction of the envelope, a reload rebuilds the same bookmarks, peers get the envelope
/// as signed, and a stored payload that no longer inflates is reported, not applied.
#[test]
fn bulk_document_updates_are_stored_deflated_and_read_back_the_same() {
    let mut net = net(33);
    let a = net.add_founder("a");
    let profile = kathon_core::testing::Profile::generate(
        7,
        kathon_core::testing::ProfileSize { bookmarks: 800, visits: 0, passwords: 0, tabs: 0 },
        net.now_ms,
    );
    let now = net.now_ms;
    net.engine(a).transact(now, |e| e.import_bookmarks(&profile.bookmarks)).unwrap();
    // A single edit stays plain.
    let now = net.now_ms;
    net.engine(a)
        .transact(now, |e| e.add_bookmark(ItemId::MENU, None, NodeKind::Bookmark, "one", Some("https://one.example/")))
        .unwrap();
    net.run_for(1_000);
    let state = net.nodes[a].engine.as_ref().unwrap().state().unwrap();
    let digest = state.digest();
    let deflated: Vec<_> = state.envelopes().filter(|e| e.payload_deflated()).map(|e| e.id()).collect();
    assert!(!deflated.is_empty(), "the import is held deflated");
    let single = state.envelopes().filter(|e| e.kind() == kathon_core::model::KIND_DOC_UPDATE).last().unwrap();
    assert!(!single.payload_deflated() && single.payload().unwrap().len() < 4_096, "the single edit is held as signed");
    for id in &deflated {
        let envelope = state.envelopes().find(|e| e.id() == *id).unwrap();
        let stored = &net.nodes[a].storage[&RecordKey::Envelope(*id)];
        assert!(
            stored.len() * 2 < envelope.encoded_len(),
            "the record ({} bytes) is well under the envelope ({} bytes)",
            stored.len(),
            envelope.encoded_len()
        );
        assert!(envelope.payload_held_len() * 2 < envelope.payload().unwrap().len());
    }

    let identity = net.nodes[a].storage[&RecordKey::Identity].clone();
    let load = load_stored;
    let loaded = load(&net.nodes[a].storage, net.now_ms).unwrap();
    assert_eq!(loaded.state().unwrap().digest(), digest);
    assert!(loaded.state().unwrap().envelopes().filter(|e| e.payload_deflated()).count() == deflated.len());
    // Written out again, each is the envelope its author signed.
    assert!(loaded.audit().is_empty(), "{:?}", loaded.audit());

    // A new device gets them as signed, and converges.
    net.nodes[a].engine = Some(loaded);
    let b = net.add_paired(a, "b");
    net.run_for(5_000);
    assert!(net.converged());
    assert_eq!(net.engine(b).state().unwrap().digest(), digest);

    // A deflated payload damaged under a valid MAC (a bug) fails the load with an error.
    let key = RecordKey::Envelope(deflated[0]);
    let broken = kathon_core::testing::break_deflated_payload(&identity, key, &net.nodes[a].storage[&key]).unwrap();
    let mut storage = net.nodes[a].storage.clone();
    storage.insert(key, broken);
    let error = load(&storage, net.now_ms).err();
    assert!(matches!(error, Some(kathon_core::sync::storage::LoadError::Inconsistent(_))), "{error:?}");
}
