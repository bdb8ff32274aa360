//! The peer's side: the realistic profile as a Yjs document, built with `yrs` (whose encoding is
//! Yjs's), in exactly the shape the browser benches give Yjs (`yjsApply` in
//! `benches/browser/main.js`): one `Y.Map` per bookmark node (parent, position, title, url or
//! kind), one `Y.Array` of visit objects, one `Y.Map` per password entry, the layout as JSON.

use std::collections::HashMap;
use std::sync::Arc;

use kathon_core::model::import::FileNode;
use kathon_core::testing::Profile;
use yrs::{Any, Array, Doc, Map, MapPrelim, Transact, TransactionMut};

fn s(text: &str) -> Any {
    Any::String(Arc::from(text))
}

fn nodes(txn: &mut TransactionMut<'_>, map: &yrs::MapRef, list: &[FileNode], parent: &str, next: &mut usize) {
    for (index, n) in list.iter().enumerate() {
        let key = format!("n{next}");
        *next = next.saturating_add(1);
        let mut fields: Vec<(&str, Any)> = vec![("parent", s(parent)), ("position", s(&format!("{index:04}")))];
        match n {
            FileNode::Bookmark { title, url } => fields.extend([("title", s(title)), ("url", s(url))]),
            FileNode::Folder { title, .. } => fields.extend([("title", s(title)), ("kind", s("folder"))]),
            FileNode::Separator => fields.push(("kind", s("separator"))),
        }
        map.insert(txn, key.as_str(), MapPrelim::from_iter(fields));
        if let FileNode::Folder { children, .. } = n {
            nodes(txn, map, children, &key, next);
        }
    }
}

/// The profile as one Yjs document (one transaction), with `yrs` client ID `client`.
pub fn profile_doc(profile: &Profile, client: u64) -> Doc {
    let doc = Doc::with_client_id(client);
    let bookmarks = doc.get_or_insert_map("bookmarks");
    let visits = doc.get_or_insert_array("visits");
    let passwords = doc.get_or_insert_map("passwords");
    let layouts = doc.get_or_insert_map("layouts");
    let mut txn = doc.transact_mut();
    let mut next = 0usize;
    for (root, list) in &profile.bookmarks.roots {
        nodes(&mut txn, &bookmarks, list, &root.to_string(), &mut next);
    }
    let rows: Vec<Any> = profile
        .visits
        .iter()
        .map(|v| {
            let mut m = HashMap::new();
            m.insert("url".to_owned(), s(&v.url));
            m.insert("title".to_owned(), s(&v.title));
            #[allow(clippy::cast_precision_loss)] // Unix ms fit in an f64 exactly until year 287,396.
            m.insert("at".to_owned(), Any::from(v.at_ms as f64));
            m.insert("transition".to_owned(), s(&format!("{:?}", v.transition)));
            Any::Map(Arc::new(m))
        })
        .collect();
    visits.insert_range(&mut txn, 0, rows);
    for (i, p) in profile.passwords.iter().enumerate() {
        let fields: Vec<(&str, Any)> = vec![
            ("origin", s(&p.origin)),
            ("username", s(&p.username)),
            ("password", s(&p.password)),
            ("notes", s(&p.notes)),
        ];
        passwords.insert(&mut txn, format!("p{i}").as_str(), MapPrelim::from_iter(fields));
    }
    layouts.insert(&mut txn, "bench", s(&serde_json::to_string(&profile.layout).unwrap_or_default()));
    drop(txn);
    doc
}

/// `k` bookmark adds, each its own transaction, in the profile document's shape.
pub fn add_bookmarks(doc: &Doc, k: usize, tag: &str) {
    let bookmarks = doc.get_or_insert_map("bookmarks");
    for i in 0..k {
        let mut txn = doc.transact_mut();
        let fields: Vec<(&str, Any)> = vec![
            ("parent", s("other")),
            ("position", s(&format!("z{i:06}"))),
            ("title", s(&crate::change_title(tag, i))),
            ("url", s(&crate::change_url(i))),
        ];
        bookmarks.insert(&mut txn, format!("{tag}{i}").as_str(), MapPrelim::from_iter(fields));
    }
}
