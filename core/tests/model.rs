//! The browser-state model: local operations, sync between replicas, and the rules for deletes,
//! moves, secrets and history privacy.
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
use kathon_core::envelope::Envelope;
use kathon_core::model::history::Transition;
use kathon_core::model::schema::{ItemId, NodeKind};
use kathon_core::model::vault::VaultKey;
use kathon_core::model::{ChangeKind, Event, Received};

#[test]
fn bookmarks_sync_between_two_replicas() {
    let fx = Fixture::new(100, 2);
    let mut a = fx.replica(0, 1);
    let mut b = fx.replica(1, 2);
    let ((folder, page), sent) = a
        .state
        .transact(T0, &mut a.rng, |e| {
            let folder = e.add_bookmark(ItemId::TOOLBAR, None, NodeKind::Folder, "Rust", None)?;
            let page =
                e.add_bookmark(folder, None, NodeKind::Bookmark, "The Book", Some("https://doc.rust-lang.org/book/"))?;
            e.add_bookmark(folder, Some(0), NodeKind::Separator, "", None)?;
            Ok((folder, page))
        })
        .unwrap();
    assert_eq!(sent.len(), 1);
    sync_into(&a.state, &mut b.state, T0 + 1);
    let tree = b.state.bookmarks();
    assert_eq!(tree.children(&ItemId::TOOLBAR), &[folder]);
    assert_eq!(tree.children(&folder).len(), 2);
    assert_eq!(tree.children(&folder)[1], page);
    assert_eq!(tree.get(&page).unwrap().url.as_deref(), Some("https://doc.rust-lang.org/book/"));
    assert_eq!(a.state.to_json(), b.state.to_json());
    assert_eq!(a.state.encode_state(), b.state.encode_state());

    // B renames, A sees it.
    b.state.transact(T0 + 2, &mut b.rng, |e| e.edit_bookmark(&page, Some("TRPL"), None)).unwrap();
    sync_into(&b.state, &mut a.state, T0 + 3);
    assert_eq!(a.state.bookmarks().get(&page).unwrap().title, "TRPL");
    assert_eq!(a.state.bookmarks().search("trpl").len(), 1);
}

#[test]
fn concurrent_moves_of_two_folders_into_each_other_make_no_cycle() {
    let fx = Fixture::new(101, 2);
    let mut a = fx.replica(0, 1);
    let mut b = fx.replica(1, 2);
    let ((x, y), _) = a
        .state
        .transact(T0, &mut a.rng, |e| {
            Ok((
                e.add_bookmark(ItemId::MENU, None, NodeKind::Folder, "X", None)?,
                e.add_bookmark(ItemId::MENU, None, NodeKind::Folder, "Y", None)?,
            ))
        })
        .unwrap();
    sync_into(&a.state, &mut b.state, T0);
    a.state.transact(T0 + 10, &mut a.rng, |e| e.move_bookmark(&x, y, None)).unwrap();
    b.state.transact(T0 + 20, &mut b.rng, |e| e.move_bookmark(&y, x, None)).unwrap();
    sync_into(&a.state, &mut b.state, T0 + 30);
    sync_into(&b.state, &mut a.state, T0 + 30);
    for r in [&a, &b] {
        let tree = r.state.bookmarks();
        assert_eq!(tree.len(), 2, "nothing duplicated or lost");
        // The later move (Y into X) is undone: Y stays in the menu, X is inside Y.
        assert_eq!(tree.children(&ItemId::MENU), &[y]);
        assert_eq!(tree.children(&y), &[x]);
    }
    assert_eq!(a.state.encode_state(), b.state.encode_state());
}

#[test]
fn an_edit_inside_a_concurrently_deleted_folder_is_kept() {
    let fx = Fixture::new(102, 2);
    let mut a = fx.replica(0, 1);
    let mut b = fx.replica(1, 2);
    let ((outer, inner, page), _) = a
        .state
        .transact(T0, &mut a.rng, |e| {
            let outer = e.add_bookmark(ItemId::TOOLBAR, None, NodeKind::Folder, "Outer", None)?;
            let inner = e.add_bookmark(outer, None, NodeKind::Folder, "Inner", None)?;
            let page = e.add_bookmark(inner, None, NodeKind::Bookmark, "Page", Some("https://a.example/"))?;
            e.add_bookmark(inner, None, NodeKind::Bookmark, "Untouched", Some("https://b.example/"))?;
            Ok((outer, inner, page))
        })
        .unwrap();
    sync_into(&a.state, &mut b.state, T0);
    // A deletes the whole folder; B, not knowing, edits one bookmark inside it and adds another.
    let (removed, _) = a.state.transact(T0 + 5, &mut a.rng, |e| e.delete_bookmark(&inner)).unwrap();
    assert_eq!(removed, 3);
    let (added, _) = b
        .state
        .transact(T0 + 6, &mut b.rng, |e| {
            e.edit_bookmark(&page, Some("Page, renamed"), None)?;
            e.add_bookmark(inner, None, NodeKind::Bookmark, "New", Some("https://c.example/"))
        })
        .unwrap();
    sync_into(&a.state, &mut b.state, T0 + 10);
    sync_into(&b.state, &mut a.state, T0 + 10);
    for r in [&a, &b] {
        let tree = r.state.bookmarks();
        assert!(tree.get(&inner).is_none(), "the deleted folder stays deleted");
        // Both the edited and the new bookmark survive, re-homed in the nearest surviving folder.
        assert_eq!(tree.get(&page).unwrap().parent, outer);
        assert_eq!(tree.get(&page).unwrap().title, "Page, renamed");
        assert_eq!(tree.get(&added).unwrap().parent, outer);
        assert_eq!(tree.len(), 3);
    }
    assert_eq!(a.state.to_json(), b.state.to_json());
}

#[test]
fn concurrent_edits_of_different_password_fields_both_survive() {
    let fx = Fixture::new(103, 2);
    let mut a = fx.replica(0, 1);
    let mut b = fx.replica(1, 2);
    let key = VaultKey::generate(&mut a.rng);
    a.state.vault_mut().insert(key.clone(), true);
    b.state.vault_mut().insert(key, true);
    let (id, _) =
        a.state.transact(T0, &mut a.rng, |e| e.add_password("https://bank.example", "ada", "s3cret!", "")).unwrap();
    sync_into(&a.state, &mut b.state, T0);
    a.state
        .transact(T0 + 1, &mut a.rng, |e| e.set_password_fields(&id, None, Some("ada.lovelace"), None, None))
        .unwrap();
    b.state.transact(T0 + 2, &mut b.rng, |e| e.set_password_fields(&id, None, None, Some("n3w-pass"), None)).unwrap();
    sync_into(&a.state, &mut b.state, T0 + 3);
    sync_into(&b.state, &mut a.state, T0 + 3);
    for r in [&a, &b] {
        let entries = r.state.passwords();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].username, "ada.lovelace");
        assert_eq!(r.state.reveal_password_field(&id, "password").unwrap(), "n3w-pass");
    }
    // No plaintext secret anywhere in the document or the envelopes.
    for r in [&a, &b] {
        for bytes in [r.state.encode_state(), r.state.encode_envelopes()] {
            for secret in [&b"s3cret!"[..], b"n3w-pass"] {
                assert!(!bytes.windows(secret.len()).any(|w| w == secret));
            }
        }
    }
}

#[test]
fn deleted_history_leaves_the_document_and_what_is_sent() {
    let fx = Fixture::new(104, 2);
    let mut a = fx.replica(0, 1);
    let mut b = fx.replica(1, 2);
    let secret_url = "https://very-private.example/diagnosis?q=embarrassing";
    let secret_title = "Embarrassing diagnosis";
    a.state
        .transact(T0, &mut a.rng, |e| {
            e.record_visit("https://news.example/", "News", T0 - 5000, Transition::Typed)?;
            e.record_visit(secret_url, secret_title, T0 - 4000, Transition::Link)?;
            e.record_visit(secret_url, secret_title, T0 - 3000, Transition::Reload)?;
            Ok(())
        })
        .unwrap();
    sync_into(&a.state, &mut b.state, T0);
    assert_eq!(b.state.history_len(), 3);
    // B deletes the URL; A learns of it.
    b.state
        .transact(T0 + 1, &mut b.rng, |e| {
            e.delete_history_url(secret_url);
            Ok(())
        })
        .unwrap();
    sync_into(&b.state, &mut a.state, T0 + 2);
    let present = |bytes: &[u8], needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    for r in [&a, &b] {
        assert_eq!(r.state.history_len(), 1);
        for bytes in [r.state.encode_state(), r.state.encode_envelopes()] {
            assert!(!present(&bytes, secret_url), "URL bytes left behind");
            assert!(!present(&bytes, secret_title), "title bytes left behind");
            assert!(present(&bytes, "https://news.example/"));
        }
    }
    // A third replica syncing from scratch never receives the deleted bytes and converges.
    let mut c = fx.replica(1, 3);
    sync_into(&a.state, &mut c.state, T0 + 3);
    assert_eq!(c.state.history_len(), 1);
    assert_eq!(c.state.encode_state(), a.state.encode_state());
}

#[test]
fn a_remote_mass_deletion_is_held_and_can_be_accepted_or_rejected() {
    let fx = Fixture::new(105, 2);
    let mut a = fx.replica(0, 1);
    let (folder, _) = a
        .state
        .transact(T0, &mut a.rng, |e| {
            let folder = e.add_bookmark(ItemId::TOOLBAR, None, NodeKind::Folder, "Work", None)?;
            for i in 0..30 {
                e.add_bookmark(folder, None, NodeKind::Bookmark, &format!("page {i}"), Some("https://w.example/"))?;
            }
            for i in 0..10 {
                e.add_bookmark(
                    ItemId::MENU,
                    None,
                    NodeKind::Bookmark,
                    &format!("keep {i}"),
                    Some("https://k.example/"),
                )?;
            }
            Ok(folder)
        })
        .unwrap();
    for reject in [false, true] {
        let mut b = fx.replica(1, 2 + u64::from(reject));
        sync_into(&a.state, &mut b.state, T0);
        while b.state.poll_event().is_some() {}
        assert_eq!(b.state.bookmarks().len(), 41);
        // A compromised device (here: A) deletes 31 of 41 nodes in one batch.
        let mut attacker = fx.replica(0, 10 + u64::from(reject));
        sync_into(&a.state, &mut attacker.state, T0);
        let (_, sent) = attacker.state.transact(T0 + 1, &mut attacker.rng, |e| e.delete_bookmark(&folder)).unwrap();
        let held = Envelope::decode(&sent[0].encode()).unwrap();
        let id = held.id();
        assert_eq!(b.state.receive(held, T0 + 2).unwrap(), Received::HeldForConfirmation);
        assert_eq!(b.state.bookmarks().len(), 41, "nothing applied while held");
        assert!(matches!(b.state.poll_event(), Some(Event::MassDeletionHeld { deletes: 31, total: 41, .. })));
        if reject {
            let undo = b.state.reject_held(&id, T0 + 3, &mut b.rng).unwrap();
            assert!(!undo.is_empty());
            assert_eq!(b.state.bookmarks().len(), 41, "every node revived");
            // The revival reaches the attacker too.
            sync_into(&b.state, &mut attacker.state, T0 + 4);
            assert_eq!(attacker.state.bookmarks().len(), 41);
            assert_eq!(attacker.state.to_json(), b.state.to_json());
        } else {
            b.state.accept_held(&id, T0 + 3).unwrap();
            assert_eq!(b.state.bookmarks().len(), 10);
        }
    }
}

#[test]
fn change_events_say_what_changed_and_who_changed_it() {
    let fx = Fixture::new(106, 2);
    let mut a = fx.replica(0, 1);
    let mut b = fx.replica(1, 2);
    let (id, _) = a
        .state
        .transact(T0, &mut a.rng, |e| {
            e.add_bookmark(ItemId::TOOLBAR, None, NodeKind::Bookmark, "x", Some("https://x.example/"))
        })
        .unwrap();
    let local: Vec<Event> = std::iter::from_fn(|| a.state.poll_event()).collect();
    assert!(local.contains(&Event::Changed {
        kind: ChangeKind::Bookmark,
        id: Some(id),
        by: fx.devices[0].public(),
        local: true
    }));
    sync_into(&a.state, &mut b.state, T0);
    let remote: Vec<Event> = std::iter::from_fn(|| b.state.poll_event()).collect();
    assert!(remote.contains(&Event::Changed {
        kind: ChangeKind::Bookmark,
        id: Some(id),
        by: fx.devices[0].public(),
        local: false
    }));
}

#[test]
fn a_vault_key_rotation_reseals_every_secret() {
    let fx = Fixture::new(107, 2);
    let mut a = fx.replica(0, 1);
    let old = VaultKey::generate(&mut a.rng);
    a.state.vault_mut().insert(old.clone(), true);
    let ((pw, key), _) = a
        .state
        .transact(T0, &mut a.rng, |e| {
            Ok((
                e.add_password("https://x.example", "u", "p1", "n1")?,
                e.add_key("laptop", "ssh-ed25519", "-----SECRET-----")?,
            ))
        })
        .unwrap();
    let new = VaultKey::generate(&mut a.rng);
    a.state.vault_mut().insert(new.clone(), true);
    let (count, _) = a.state.transact(T0 + 1, &mut a.rng, |e| e.reseal_secrets()).unwrap();
    assert_eq!(count, 3);
    // A device holding only the new key reads everything; one holding only the old key reads nothing.
    let mut b = fx.replica(1, 2);
    sync_into(&a.state, &mut b.state, T0 + 2);
    b.state.vault_mut().insert(new, true);
    assert_eq!(b.state.reveal_password_field(&pw, "password").unwrap(), "p1");
    assert_eq!(b.state.reveal_password_field(&pw, "notes").unwrap(), "n1");
    assert_eq!(b.state.reveal_key(&key).unwrap(), "-----SECRET-----");
    b.state.vault_mut().lock();
    b.state.vault_mut().insert(old, true);
    assert!(b.state.reveal_password_field(&pw, "password").is_err());
}

#[test]
fn workspaces_are_per_device_and_saved_ones_are_shared() {
    use kathon_core::model::entries::{Layout, Tab, TabGroup, Window};
    let fx = Fixture::new(108, 2);
    let mut a = fx.replica(0, 1);
    let mut b = fx.replica(1, 2);
    let tab = |url: &str| Tab { url: url.into(), title: url.into(), pinned: false, group: None };
    let layout_a = Layout {
        windows: vec![Window {
            tabs: vec![tab("https://a.example/1"), Tab { pinned: true, group: Some(0), ..tab("https://a.example/2") }],
            groups: vec![TabGroup { title: "Work".into(), color: "blue".into(), collapsed: false }],
            active_tab: 1,
        }],
    };
    let layout_b = Layout { windows: vec![Window { tabs: vec![tab("https://b.example/")], ..Window::default() }] };
    a.state.transact(T0, &mut a.rng, |e| e.set_device_layout(&layout_a)).unwrap();
    b.state.transact(T0, &mut b.rng, |e| e.set_device_layout(&layout_b)).unwrap();
    let (saved, _) = a.state.transact(T0 + 1, &mut a.rng, |e| e.save_workspace("Research", &layout_a)).unwrap();
    sync_into(&a.state, &mut b.state, T0 + 2);
    sync_into(&b.state, &mut a.state, T0 + 2);
    for r in [&a, &b] {
        let layouts = r.state.device_layouts();
        assert_eq!(layouts.get(&fx.devices[0].public()), Some(&layout_a));
        assert_eq!(layouts.get(&fx.devices[1].public()), Some(&layout_b));
    }
    // B renames the shared workspace; B's tabs never overwrite A's.
    b.state.transact(T0 + 3, &mut b.rng, |e| e.update_workspace(&saved, Some("Research 2026"), None)).unwrap();
    sync_into(&b.state, &mut a.state, T0 + 4);
    let named = a.state.named_workspaces();
    assert_eq!((named.len(), named[0].name.as_str()), (1, "Research 2026"));
    assert_eq!(named[0].layout, layout_a);
}

#[test]
fn a_restored_backup_reusing_a_client_id_is_caught_not_merged() {
    let fx = Fixture::new(109, 2);
    // Two replicas of one device with the same session nonce: what a restored backup would be
    // if it reused its yrs client ID. Both write their next envelope.
    let mut original = fx.replica(0, 1);
    let mut restored = fx.replica(0, 1);
    original
        .state
        .transact(T0, &mut original.rng, |e| e.add_bookmark(ItemId::MENU, None, NodeKind::Folder, "original", None))
        .unwrap();
    restored
        .state
        .transact(T0, &mut restored.rng, |e| e.add_bookmark(ItemId::MENU, None, NodeKind::Folder, "restored", None))
        .unwrap();
    let mut other = fx.replica(1, 2);
    sync_into(&original.state, &mut other.state, T0);
    let forked = restored.state.envelopes().next().unwrap().encode();
    let err = other.state.receive(Envelope::decode(&forked).unwrap(), T0).unwrap_err();
    assert!(matches!(err, kathon_core::model::IngestError::Equivocation(_)), "{err:?}");
    assert!(other.state.quarantined().contains(&fx.devices[0].public()));
    assert!(std::iter::from_fn(|| other.state.poll_event()).any(|e| matches!(e, Event::Equivocation(_))));
    assert_eq!(other.state.bookmarks().len(), 1, "the fork was not merged");
}

// Native only: 32,000 adds are seconds natively and far longer in a debug wasm build; the code
// under test is the same.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn a_folder_whose_positions_would_outgrow_their_cap_refuses_the_insert_and_loses_nothing() {
    // Appending again and again grows the last position by about a byte every 127 adds: past the
    // 255-byte cap after ~32,000. Such an add must fail with a clear error, never write a cut
    // position that no replica can read.
    let fx = Fixture::new(140, 1);
    let mut a = fx.replica(0, 1);
    let (folder, _) = a
        .state
        .transact(T0, &mut a.rng, |e| e.add_bookmark(ItemId::TOOLBAR, None, NodeKind::Folder, "Inbox", None))
        .unwrap();
    let mut added = 0usize;
    let mut refused = None;
    'batches: for batch in 0..40u64 {
        let result = a.state.transact(T0 + 1 + batch, &mut a.rng, |e| {
            for _ in 0..1_000 {
                e.add_bookmark(folder, None, NodeKind::Bookmark, "page", Some("https://a.example/"))?;
            }
            Ok(())
        });
        match result {
            Ok(_) => added += 1_000,
            Err(e) => {
                refused = Some(e);
                break 'batches;
            }
        }
    }
    let refused = refused.expect("an add past the cap is refused");
    assert!(matches!(refused, kathon_core::model::ModelError::FolderFull { folder: f } if f == folder), "{refused}");
    // The refused batch wrote nothing; fill the rest of the room one add at a time.
    assert_eq!(a.state.bookmarks().children(&folder).len(), added);
    for i in 0..1_000u64 {
        let one = a.state.transact(T0 + 50 + i, &mut a.rng, |e| {
            e.add_bookmark(folder, None, NodeKind::Bookmark, "page", Some("https://a.example/"))
        });
        match one {
            Ok(_) => added += 1,
            Err(e) => {
                assert!(matches!(e, kathon_core::model::ModelError::FolderFull { .. }), "{e}");
                break;
            }
        }
    }
    assert!((31_000..=33_000).contains(&added), "{added} adds fitted");
    // Everything written is intact and readable, here and on another replica.
    assert_eq!(a.state.bookmarks().children(&folder).len(), added);
    let mut b = fx.replica(0, 2);
    sync_into(&a.state, &mut b.state, T0 + 2_000);
    assert_eq!(b.state.bookmarks().children(&folder).len(), added);
    // A move into the full folder's end is refused the same way; the other end still has room.
    let (other, _) = a
        .state
        .transact(T0 + 2_001, &mut a.rng, |e| {
            e.add_bookmark(ItemId::TOOLBAR, None, NodeKind::Bookmark, "x", Some("https://x.example/"))
        })
        .unwrap();
    let moved = a.state.transact(T0 + 2_002, &mut a.rng, |e| e.move_bookmark(&other, folder, None));
    assert!(matches!(moved, Err(kathon_core::model::ModelError::FolderFull { .. })), "{moved:?}");
    a.state.transact(T0 + 2_003, &mut a.rng, |e| e.move_bookmark(&other, folder, Some(0))).unwrap();
    assert_eq!(a.state.bookmarks().children(&folder).first(), Some(&other));
}

/// The document a replica holds has placeholders where the values were; what it sends must carry
/// each value under its own path's key (the update is filled entry by entry, in order).
#[test]
fn every_value_sent_sits_under_its_own_path() {
    use kathon_core::model::KIND_DOC_UPDATE;
    use kathon_core::register::RegisterValue;
    use yrs::updates::decoder::Decode;
    use yrs::{Any, Map, Out, ReadTxn, Transact};

    let fx = Fixture::new(101, 1);
    let mut a = fx.replica(0, 1);
    let (pages, mut sent) = a
        .state
        .transact(T0, &mut a.rng, |e| {
            let folder = e.add_bookmark(ItemId::TOOLBAR, None, NodeKind::Folder, "Docs", None)?;
            (0..5)
                .map(|i| {
                    let url = format!("https://example.org/{i}");
                    e.add_bookmark(folder, None, NodeKind::Bookmark, &format!("page {i}"), Some(&url))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap();
    // Overwrites (their entries name an origin, not their key), in another order.
    let (_, edits) = a
        .state
        .transact(T0 + 1, &mut a.rng, |e| {
            e.edit_bookmark(&pages[3], None, Some("https://example.org/three"))?;
            e.edit_bookmark(&pages[0], Some("zero"), None)
        })
        .unwrap();
    sent.extend(edits);

    let scratch = yrs::Doc::with_client_id(1);
    for envelope in sent.iter().filter(|e| e.kind() == KIND_DOC_UPDATE) {
        let payload = envelope.payload().unwrap();
        let update = yrs::Update::decode_v1(&payload[16..]).unwrap();
        scratch.transact_mut().apply_update(update).unwrap();
    }
    // Roots arrive untyped: read each as the map it is.
    let names: Vec<String> = scratch.transact().root_refs().map(|(name, _)| name.to_owned()).collect();
    assert_eq!(names.len(), 1, "one device, one map");
    let maps: Vec<_> = names.iter().map(|name| scratch.get_or_insert_map(name.as_str())).collect();
    let txn = scratch.transact();
    let mut checked = 0;
    for map in maps {
        for (key, value) in map.iter(&txn) {
            let Out::Any(Any::Buffer(bytes)) = value else { panic!("{key}: not a buffer: {value:?}") };
            let value = RegisterValue::decode(&bytes, &std::sync::Arc::new(*a.state.device())).unwrap();
            assert_eq!(value.path(), key);
            checked += 1;
        }
    }
    assert_eq!(checked, 2 + 5 * 3, "the folder's two registers and each bookmark's three, once each");
    let tree = a.state.bookmarks();
    assert_eq!(tree.get(&pages[0]).unwrap().title, "zero");
    assert_eq!(tree.get(&pages[3]).unwrap().url.as_deref(), Some("https://example.org/three"));
}
