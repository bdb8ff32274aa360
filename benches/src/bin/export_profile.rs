//! Writes the realistic profile (`Profile::generate(SEED, …)`) as JSON, so that the browser
//! benches feed exactly the same data to Kathon and to the peers (Yjs, Automerge).
//!
//! `cargo run -p kathon-benches --release --bin export_profile -- <out.json> [small]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kathon_core::model::import::FileNode;
use kathon_core::model::schema::ItemId;
use kathon_core::testing::{Profile, ProfileSize};
use serde_json::{Value, json};

/// A fixed "now" so the visit times are the same on every run.
const NOW_MS: u64 = 1_764_000_000_000;

fn node(n: &FileNode) -> Value {
    match n {
        FileNode::Folder { title, children } => {
            json!({ "title": title, "children": children.iter().map(node).collect::<Vec<_>>() })
        }
        FileNode::Bookmark { title, url } => json!({ "title": title, "url": url }),
        FileNode::Separator => json!({ "separator": true }),
    }
}

fn root_name(id: &ItemId) -> &'static str {
    match *id {
        ItemId::TOOLBAR => "toolbar",
        ItemId::MENU => "menu",
        ItemId::MOBILE => "mobile",
        _ => "other",
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let out = args.next().expect("usage: export_profile <out.json> [small]");
    let size = if args.next().as_deref() == Some("small") { ProfileSize::SMALL } else { ProfileSize::REALISTIC };
    let profile = Profile::generate(kathon_benches::SEED, size, NOW_MS);
    let roots: Vec<Value> = profile
        .bookmarks
        .roots
        .iter()
        .map(|(id, children)| json!({ "root": root_name(id), "children": children.iter().map(node).collect::<Vec<_>>() }))
        .collect();
    let visits: Vec<Value> = profile
        .visits
        .iter()
        .map(|v| json!([v.url, v.title, v.at_ms, serde_json::to_value(v.transition).unwrap()]))
        .collect();
    let passwords: Vec<Value> = profile
        .passwords
        .iter()
        .map(|p| json!({ "origin": p.origin, "username": p.username, "password": p.password, "notes": p.notes }))
        .collect();
    let document = json!({
        "seed": kathon_benches::SEED,
        "bookmarks": roots,
        "visits": visits,
        "passwords": passwords,
        "layout": profile.layout,
    });
    std::fs::write(&out, serde_json::to_vec(&document).unwrap()).unwrap();
    println!(
        "{out}: {} bookmarks, {} visits, {} passwords",
        profile.bookmarks.bookmark_count(),
        profile.visits.len(),
        profile.passwords.len()
    );
}
