//! Sync cost in the simulated network, between two paired devices, and against the Yjs sync
//! protocol on the same data in the same run. Prints tables; no timing assertions.
//!
//! 1. A full sync of the realistic profile, then incremental syncs of k = 1, 10, 100, 1000
//!    changes while the devices are in session — bytes, frames, round trips.
//! 2. The same profile after 50,000 scattered history deletions, then k bookmark adds: Kathon in
//!    session, Kathon after a reconnect (B was offline while A made the changes; the handshake is
//!    counted), and the Yjs sync protocol (y-protocols SyncStep1 + SyncStep2 both ways, computed
//!    with `yrs`, whose encoding is Yjs's) on a Yjs document of the same shape as the browser
//!    benches use.
//!
//! `cargo bench -p kathon-benches --bench sync` (`KATHON_PROFILE=small` for a quick run).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::cast_precision_loss,
    missing_docs
)]

use kathon_benches::yjs;
use kathon_core::model::schema::{ItemId, NodeKind};
use kathon_core::sim::{Faults, SimNet};
use kathon_core::sync::Config;
use kathon_core::testing::{Profile, ProfileSize};
use yrs::types::ToJson;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Array, Doc, ReadTxn, StateVector, Transact, Update};

const LATENCY_MS: u64 = 5;
const RTT_MS: u64 = 2 * LATENCY_MS;
const DELETIONS: usize = 50_000;

/// Whether every live node holds the same chain heads (cheaper than comparing whole states,
/// which the end of the run does once).
fn same_heads(net: &SimNet) -> bool {
    let heads: Vec<Vec<_>> = net
        .nodes
        .iter()
        .filter_map(|n| n.engine.as_ref().and_then(|e| e.state()))
        .map(|s| s.chains().heads().map(|(d, n)| (*d, n)).collect())
        .collect();
    heads.windows(2).all(|w| w[0] == w[1])
}

fn converge(net: &mut SimNet) -> u64 {
    let start = net.now_ms;
    while !same_heads(net) {
        net.run_for(1);
        assert!(net.now_ms - start < 600_000, "did not converge");
    }
    net.now_ms - start
}

fn add_bookmarks(net: &mut SimNet, node: usize, k: usize, tag: &str) {
    let now = net.now_ms;
    for i in 0..k {
        net.engine(node)
            .transact(now, |e| {
                e.add_bookmark(
                    ItemId::MENU,
                    None,
                    NodeKind::Bookmark,
                    &kathon_benches::change_title(tag, i),
                    Some(&kathon_benches::change_url(i)),
                )
            })
            .unwrap();
    }
}

fn load_profile(net: &mut SimNet, node: usize, profile: &Profile) {
    let now = net.now_ms;
    kathon_benches::load_profile(net.engine(node), profile, now);
}

fn paired_pair() -> (SimNet, usize, usize) {
    let mut net = SimNet::new(1, Config::default(), Faults::NONE);
    let a = net.add_founder("a");
    let b = net.add_paired(a, "b");
    net.faults = Faults { latency_ms: LATENCY_MS, ..Faults::NONE };
    (net, a, b)
}

/// Part 1: full sync, then incremental syncs in session.
fn in_session(size: ProfileSize) {
    let (mut net, a, b) = paired_pair();
    let profile = Profile::generate(kathon_benches::SEED, size, net.now_ms);
    load_profile(&mut net, a, &profile);
    let (bytes, frames) = (net.bytes_sent, net.frames_sent);
    let took = converge(&mut net);
    println!(
        "two paired devices, {LATENCY_MS} ms one-way latency; profile: {} bookmarks, {} visits, {} passwords",
        size.bookmarks, size.visits, size.passwords
    );
    println!();
    println!("| sync | bytes | frames | bytes/change | round trips |");
    println!("|---|--:|--:|--:|--:|");
    println!(
        "| full (B empty) | {} | {} | | {:.1} |",
        net.bytes_sent - bytes,
        net.frames_sent - frames,
        took as f64 / RTT_MS as f64
    );
    assert_eq!(net.engine(b).state().unwrap().history_len(), size.visits);
    for k in [1usize, 10, 100, 1000] {
        let (bytes, frames) = (net.bytes_sent, net.frames_sent);
        add_bookmarks(&mut net, a, k, "session");
        let took = converge(&mut net);
        let sent = net.bytes_sent - bytes;
        println!(
            "| incremental, k = {k} | {sent} | {} | {:.0} | {:.1} |",
            net.frames_sent - frames,
            sent as f64 / k as f64,
            took as f64 / RTT_MS as f64
        );
    }
    assert!(net.converged());
}

/// Deletes every other visit, newest first (so indexes stay valid): 50,000 scattered deletions.
fn yjs_delete_scattered(doc: &Doc, count: usize) {
    let visits = doc.get_or_insert_array("visits");
    let mut txn = doc.transact_mut();
    let len = visits.len(&txn) as usize;
    let mut index = len.saturating_sub(1) & !1;
    for _ in 0..count {
        visits.remove_range(&mut txn, index as u32, 1);
        if index < 2 {
            break;
        }
        index -= 2;
    }
}

/// Bytes of one y-protocols sync message: message type, sync step, a length-prefixed payload.
fn y_message(payload: usize) -> usize {
    let mut len_bytes = 1;
    let mut n = payload >> 7;
    while n > 0 {
        len_bytes += 1;
        n >>= 7;
    }
    2 + len_bytes + payload
}

/// One y-protocols exchange between two documents: both send SyncStep1 (their state vector),
/// both answer SyncStep2 (what the other lacks, with the whole delete set). Returns
/// (bytes with v1 updates, bytes with v2 updates), and applies the v1 diffs.
fn yjs_sync(a: &Doc, b: &Doc) -> (usize, usize) {
    let sv_a = a.transact().state_vector();
    let sv_b = b.transact().state_vector();
    let (sv_a_bytes, sv_b_bytes) = (sv_a.encode_v1(), sv_b.encode_v1());
    let a_to_b = a.transact().encode_state_as_update_v1(&StateVector::decode_v1(&sv_b_bytes).unwrap());
    let b_to_a = b.transact().encode_state_as_update_v1(&StateVector::decode_v1(&sv_a_bytes).unwrap());
    let a_to_b_v2 = a.transact().encode_state_as_update_v2(&sv_b).len();
    let b_to_a_v2 = b.transact().encode_state_as_update_v2(&sv_a).len();
    let steps1 = y_message(sv_a_bytes.len()) + y_message(sv_b_bytes.len());
    let v1 = steps1 + y_message(a_to_b.len()) + y_message(b_to_a.len());
    let v2 = steps1 + y_message(a_to_b_v2) + y_message(b_to_a_v2);
    b.transact_mut().apply_update(Update::decode_v1(&a_to_b).unwrap()).unwrap();
    a.transact_mut().apply_update(Update::decode_v1(&b_to_a).unwrap()).unwrap();
    (v1, v2)
}

/// Part 2: after 50,000 scattered deletions, Kathon in session, after a reconnect, and Yjs.
fn after_deletions(size: ProfileSize) {
    let deletions = DELETIONS.min(size.visits / 2);
    let (mut net, a, b) = paired_pair();
    let profile = Profile::generate(kathon_benches::SEED, size, net.now_ms);
    load_profile(&mut net, a, &profile);
    converge(&mut net);
    // Every other visit, scattered over the whole history.
    let ids: Vec<ItemId> = net.engine(a).state().unwrap().history().step_by(2).take(deletions).map(|v| v.id).collect();
    let now = net.now_ms;
    net.engine(a)
        .transact(now, |e| {
            e.delete_visits(&ids);
            Ok(())
        })
        .unwrap();
    let (bytes, frames) = (net.bytes_sent, net.frames_sent);
    converge(&mut net);
    let deletion_bytes = net.bytes_sent - bytes;
    let deletion_frames = net.frames_sent - frames;
    net.run_for(5_000);
    assert_eq!(net.engine(b).state().unwrap().history_len(), size.visits - deletions);

    let yjs_a = yjs::profile_doc(&profile, 1);
    let yjs_b = Doc::with_client_id(2);
    yjs_sync(&yjs_a, &yjs_b);
    yjs_delete_scattered(&yjs_a, deletions);
    let (yjs_deletion_bytes, _) = yjs_sync(&yjs_a, &yjs_b);
    let nothing = yjs_sync(&yjs_a, &yjs_b);
    assert_eq!(yjs_b.get_or_insert_array("visits").len(&yjs_b.transact()) as usize, size.visits - deletions);

    println!();
    println!(
        "after {deletions} scattered history deletions (sent once: Kathon {deletion_bytes} bytes in {deletion_frames} \
         frames, Yjs {yjs_deletion_bytes} bytes); then k bookmark adds on A, each its own transaction"
    );
    println!("Yjs sync protocol when nothing changed: {} bytes (v1), {} bytes (v2)", nothing.0, nothing.1);
    println!();
    println!(
        "| k | Kathon in session: bytes (RT) | Kathon after reconnect: bytes (RT) | Yjs sync: bytes v1 / v2 (RT) | \
         Kathon/Yjs in session | Kathon/Yjs after reconnect |"
    );
    println!("|--:|--:|--:|--:|--:|--:|");
    for k in [1usize, 10, 100] {
        let before = net.bytes_sent;
        add_bookmarks(&mut net, a, k, "live");
        let took = converge(&mut net);
        let live = net.bytes_sent - before;
        let live_rt = took as f64 / RTT_MS as f64;

        net.disconnect(a, b);
        add_bookmarks(&mut net, a, k, "offline");
        let before = net.bytes_sent;
        net.connect(a, b);
        let took = converge(&mut net);
        let reconnect = net.bytes_sent - before;
        let reconnect_rt = took as f64 / RTT_MS as f64;
        // Let the summaries settle so the next row starts quiet.
        net.run_for(5_000);

        // Yjs does the same twice (live, then offline) to stay in step with Kathon's document;
        // each exchange is one y-protocols sync.
        yjs::add_bookmarks(&yjs_a, k, "live");
        let (yjs_v1, yjs_v2) = yjs_sync(&yjs_a, &yjs_b);
        yjs::add_bookmarks(&yjs_a, k, "offline");
        let _ = yjs_sync(&yjs_a, &yjs_b);
        println!(
            "| {k} | {live} ({live_rt:.1}) | {reconnect} ({reconnect_rt:.1}) | {yjs_v1} / {yjs_v2} (1.0) | {:.3} | {:.3} |",
            live as f64 / yjs_v1 as f64,
            reconnect as f64 / yjs_v1 as f64,
        );
    }
    assert!(net.converged());
    let json_a = yjs_a.get_or_insert_map("bookmarks").to_json(&yjs_a.transact());
    let json_b = yjs_b.get_or_insert_map("bookmarks").to_json(&yjs_b.transact());
    assert_eq!(json_a, json_b, "the Yjs documents converged");
}

fn main() {
    let size = if std::env::var("KATHON_PROFILE").as_deref() == Ok("small") {
        ProfileSize::SMALL
    } else {
        ProfileSize::REALISTIC
    };
    in_session(size);
    after_deletions(size);
}
