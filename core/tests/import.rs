//! Import and export: round trips of each format against real-world-shaped fixtures and a
//! generated file of thousands of entries, idempotent re-imports, and malformed files that give
//! a clear error with a line number and change nothing.
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

use common::{Fixture, T0};
use kathon_core::error::DecodeError;
use kathon_core::model::import::{
    BookmarkFile, FileNode, ImportError, MAX_EXPORT_DEPTH, MAX_FILE_NODES, PasswordRow, decode_password_rows,
    encode_password_rows, export_chromium_json, export_netscape, export_password_csv, parse_chromium_json,
    parse_netscape, parse_password_csv, password_rows,
};
use kathon_core::model::schema::{ItemId, NodeKind};
use kathon_core::model::vault::VaultKey;
use kathon_core::testing::{Profile, ProfileSize};

const FIREFOX_HTML: &str = include_str!("fixtures/bookmarks_firefox.html");
const CHROMIUM_JSON: &str = include_str!("fixtures/chromium_Bookmarks.json");
const CHROME_CSV: &str = include_str!("fixtures/passwords_chrome.csv");
const FIREFOX_CSV: &str = include_str!("fixtures/passwords_firefox.csv");
const BITWARDEN_CSV: &str = include_str!("fixtures/passwords_bitwarden.csv");

fn titles(tree: &kathon_core::model::bookmarks::BookmarkTree, parent: &ItemId) -> Vec<String> {
    tree.children(parent).iter().map(|c| tree.get(c).unwrap().title.clone()).collect()
}

/// The replica's bookmarks as an export sees them in the browser: through the encoding that
/// carries them to the import/export module.
fn file_of(tree: &kathon_core::model::bookmarks::BookmarkTree) -> BookmarkFile {
    let file = BookmarkFile::from_tree(tree);
    let decoded = BookmarkFile::decode(&file.encode()).unwrap();
    assert_eq!(decoded, file);
    decoded
}

/// Drops separators and empty-root entries so two parses can be compared structurally.
fn normalize(b: &BookmarkFile) -> Vec<(ItemId, Vec<FileNode>)> {
    fn strip(nodes: &[FileNode]) -> Vec<FileNode> {
        nodes
            .iter()
            .filter(|n| !matches!(n, FileNode::Separator))
            .map(|n| match n {
                FileNode::Folder { title, children } => {
                    FileNode::Folder { title: title.clone(), children: strip(children) }
                }
                other => other.clone(),
            })
            .collect()
    }
    let mut out: Vec<_> = b.roots.iter().map(|(r, c)| (*r, strip(c))).filter(|(_, c)| !c.is_empty()).collect();
    out.sort_by_key(|(r, _)| *r);
    out
}

#[test]
fn firefox_html_imports_with_structure_unicode_and_entities() {
    let parsed = parse_netscape(FIREFOX_HTML).unwrap();
    assert_eq!(parsed.bookmark_count(), 11);
    let fx = Fixture::new(300, 1);
    let mut a = fx.replica(0, 1);
    let (report, _) = a.state.transact(T0, &mut a.rng, |e| e.import_bookmarks(&parsed)).unwrap();
    assert_eq!((report.bookmarks_added, report.folders_added), (13, 5)); // 11 bookmarks + 2 separators
    let tree = a.state.bookmarks().clone();
    assert_eq!(titles(&tree, &ItemId::TOOLBAR), ["Hacker News", "GitHub · notifications", "Work"]);
    assert_eq!(titles(&tree, &ItemId::OTHER), ["مرحبا بالعالم", "Recently Bookmarked"]);
    assert_eq!(titles(&tree, &ItemId::MENU), ["Getting Started", "", "Recettes & cuisine"]);
    let recipes = tree.children(&ItemId::MENU)[2];
    assert_eq!(titles(&tree, &recipes), ["Tarte Tatin — la vraie", "ラーメンの作り方 🍜", "Brot & Gebäck"]);
    let tarte = tree.get(&tree.children(&recipes)[0]).unwrap();
    assert_eq!(tarte.url.as_deref(), Some("https://fr.example.org/tarte-tatin?servings=6&lang=fr"));
    let search = tree.search("laugenbrezel");
    assert_eq!(search[0].title, "Laugenbrezel \"wie beim Bäcker\"");
    assert_eq!(tree.search("KATH-42")[0].title, "KATH-42: Sync <everything>");

    // Importing twice adds nothing.
    let (again, _) = a.state.transact(T0 + 1, &mut a.rng, |e| e.import_bookmarks(&parsed)).unwrap();
    assert_eq!((again.bookmarks_added, again.folders_added), (0, 0));
    assert_eq!(a.state.bookmarks().len(), tree.len());

    // Export, parse back: the same tree.
    let exported = export_netscape(&file_of(a.state.bookmarks()));
    assert_eq!(normalize(&parse_netscape(&exported).unwrap()), normalize(&parsed));
}

#[test]
fn chromium_json_round_trips() {
    let parsed = parse_chromium_json(CHROMIUM_JSON).unwrap();
    assert_eq!(parsed.bookmark_count(), 4);
    let fx = Fixture::new(301, 1);
    let mut a = fx.replica(0, 1);
    a.state.transact(T0, &mut a.rng, |e| e.import_bookmarks(&parsed)).unwrap();
    let tree = a.state.bookmarks();
    assert_eq!(titles(tree, &ItemId::TOOLBAR), ["Rust documentation", "Travel"]);
    assert_eq!(titles(tree, &ItemId::MOBILE), ["Read later (phone)"]);
    let travel = tree.children(&ItemId::TOOLBAR)[1];
    assert_eq!(titles(tree, &travel), ["Zürich — Öffnungszeiten", "待办"]);
    let exported = export_chromium_json(&file_of(tree));
    assert_eq!(normalize(&parse_chromium_json(&exported).unwrap()), normalize(&parsed));
    let (again, _) =
        a.state.transact(T0 + 1, &mut a.rng, |e| e.import_bookmarks(&parse_chromium_json(&exported).unwrap())).unwrap();
    assert_eq!(again.bookmarks_added + again.folders_added, 0);
}

#[test]
fn thousands_of_bookmarks_round_trip_through_html() {
    let profile = Profile::generate(7, ProfileSize { bookmarks: 3_000, ..ProfileSize::SMALL }, T0);
    let html = profile.bookmarks_html();
    let parsed = parse_netscape(&html).unwrap();
    assert_eq!(parsed.bookmark_count(), 3_000);
    let fx = Fixture::new(302, 1);
    let mut a = fx.replica(0, 1);
    let (report, envelopes) = a.state.transact(T0, &mut a.rng, |e| e.import_bookmarks(&parsed)).unwrap();
    assert_eq!(report.bookmarks_added - count_separators(&parsed), 3_000);
    assert!(envelopes.len() > 1, "a large import is split into several envelopes");
    assert_eq!(a.state.bookmarks().bookmark_count(), 3_000);
    let exported = export_netscape(&file_of(a.state.bookmarks()));
    assert_eq!(normalize(&parse_netscape(&exported).unwrap()), normalize(&parsed));
}

fn count_separators(b: &BookmarkFile) -> usize {
    fn count(nodes: &[FileNode]) -> usize {
        nodes
            .iter()
            .map(|n| match n {
                FileNode::Separator => 1,
                FileNode::Folder { children, .. } => count(children),
                FileNode::Bookmark { .. } => 0,
            })
            .sum()
    }
    b.roots.iter().map(|(_, c)| count(c)).sum()
}

#[test]
fn password_csv_in_every_layout_imports_once_and_round_trips() {
    let chrome = parse_password_csv(CHROME_CSV).unwrap();
    let firefox = parse_password_csv(FIREFOX_CSV).unwrap();
    let bitwarden = parse_password_csv(BITWARDEN_CSV).unwrap();
    assert_eq!((chrome.len(), firefox.len(), bitwarden.len()), (3, 3, 2), "Bitwarden's secure note is skipped");
    assert_eq!(chrome[1].password, "p\"a\"ss w0rd!");
    assert_eq!(chrome[2].notes, "multi-line\nnote here");
    assert_eq!(bitwarden[1].notes, "Use with \"split tunnel\"");

    let fx = Fixture::new(303, 1);
    let mut a = fx.replica(0, 1);
    let key = VaultKey::generate(&mut a.rng);
    a.state.vault_mut().insert(key, true);
    for logins in [&chrome, &firefox, &bitwarden] {
        a.state.transact(T0, &mut a.rng, |e| e.import_passwords(logins)).unwrap();
    }
    assert_eq!(a.state.passwords().len(), 8);
    let (again, _) = a.state.transact(T0 + 1, &mut a.rng, |e| e.import_passwords(&chrome)).unwrap();
    assert_eq!((again.passwords_added, again.passwords_updated, again.duplicates_skipped), (0, 0, 3));

    let rows = password_rows(&a.state).unwrap();
    let rows = decode_password_rows(&encode_password_rows(&rows)).unwrap();
    let csv = export_password_csv(&rows).unwrap();
    let mut back = parse_password_csv(&csv).unwrap();
    let mut all: Vec<_> = chrome.iter().chain(&firefox).chain(&bitwarden).cloned().collect();
    back.sort_by(|x, y| (&x.origin, &x.username).cmp(&(&y.origin, &y.username)));
    all.sort_by(|x, y| (&x.origin, &x.username).cmp(&(&y.origin, &y.username)));
    assert_eq!(back, all);
}

fn malformed_line(err: ImportError) -> usize {
    match err {
        ImportError::Malformed { line, .. } => line,
        other => panic!("expected a malformed-file error, got {other:?}"),
    }
}

#[test]
fn malformed_files_name_the_place_and_change_nothing() {
    // An unclosed list, reported at its line.
    let broken = FIREFOX_HTML.replacen(
        "        </DL><p>\n    </DL><p>\n    <DT><H3 ADD_DATE=\"1715000700\"",
        "    <DT><H3 ADD_DATE=\"1715000700\"",
        1,
    );
    let err = parse_netscape(&broken).unwrap_err();
    assert!(err.to_string().contains("line"), "{err}");
    // A bookmark without an address.
    let no_href = FIREFOX_HTML.replace("<DT><A HREF=\"https://news.ycombinator.com/\"", "<DT><A NAME=\"x\"");
    let err = parse_netscape(&no_href).unwrap_err();
    assert_eq!(malformed_line(err.clone()), 25, "{err}");
    assert!(err.to_string().contains("without HREF"));
    // Not a bookmark file at all.
    assert_eq!(malformed_line(parse_netscape("<html><body>hi</body></html>").unwrap_err()), 1);
    // An unterminated tag.
    assert!(parse_netscape("<!DOCTYPE NETSCAPE-Bookmark-file-1>\n<DL><p>\n<DT><A HREF=\"x\"").is_err());

    // JSON with a syntax error: line and column from the parser.
    let bad_json = CHROMIUM_JSON.replacen("\"type\": \"url\",", "\"type\": \"url\"", 1);
    match parse_chromium_json(&bad_json).unwrap_err() {
        ImportError::Malformed { line, column, .. } => assert!(line > 1 && column > 0),
        other => panic!("{other:?}"),
    }
    assert!(parse_chromium_json("{\"roots\": {}}").is_err());

    // CSV with a short record and CSV with an unknown header.
    let short = "name,url,username,password,note\na,https://a.example,u,p,n\nb,https://b.example,u\n";
    assert_eq!(malformed_line(parse_password_csv(short).unwrap_err()), 3);
    assert!(matches!(parse_password_csv("foo,bar\n1,2\n"), Err(ImportError::UnknownCsvLayout(_))));

    // Nothing was imported from any of them: parse errors come before any change.
    let fx = Fixture::new(304, 1);
    let a = fx.replica(0, 1);
    assert_eq!(a.state.bookmarks().len(), 0);
    assert_eq!(a.state.envelopes().count(), 0);
}

#[test]
fn a_failing_transaction_keeps_nothing() {
    let fx = Fixture::new(305, 1);
    let mut a = fx.replica(0, 1);
    let before = a.state.encode_state();
    let result = a.state.transact(T0, &mut a.rng, |e| {
        e.add_bookmark(ItemId::TOOLBAR, None, NodeKind::Bookmark, "kept?", Some("https://x.example/"))?;
        // The vault is locked: adding a password fails, so the whole change is dropped.
        e.add_password("https://x.example", "u", "p", "")
    });
    assert!(result.is_err());
    assert_eq!(a.state.encode_state(), before);
    assert_eq!(a.state.bookmarks().len(), 0);
}

#[test]
fn the_encoding_between_the_modules_round_trips_and_refuses_what_it_must() {
    let profile = Profile::generate(11, ProfileSize::SMALL, T0);
    let parsed = parse_netscape(&profile.bookmarks_html()).unwrap();
    let bytes = parsed.encode();
    assert_eq!(BookmarkFile::decode(&bytes).unwrap(), parsed);
    // Every truncation is an error, never a panic or a partial file.
    for len in 0..bytes.len() {
        assert!(BookmarkFile::decode(&bytes[..len]).is_err(), "prefix of {len} bytes decoded");
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(BookmarkFile::decode(&trailing), Err(DecodeError::TrailingBytes { .. })));
    // Only the four roots: the decoded form cannot name another parent.
    let mut foreign = BookmarkFile { roots: vec![(ItemId::from_bytes([7; 16]), vec![])] }.encode();
    assert!(matches!(BookmarkFile::decode(&foreign), Err(DecodeError::NonCanonical { .. })));
    foreign[0] = 0xb2;
    assert!(matches!(BookmarkFile::decode(&foreign), Err(DecodeError::UnsupportedVersion { .. })));
    // A node count beyond the bytes given is refused before anything is allocated.
    let mut huge = vec![0xb1, 1];
    huge.extend(ItemId::TOOLBAR.as_bytes());
    huge.extend(u32::MAX.to_be_bytes());
    assert!(matches!(BookmarkFile::decode(&huge), Err(DecodeError::TooLarge { .. } | DecodeError::Truncated { .. })));
    // More nodes in all than the cap, each list within it: refused, whatever the input holds.
    let separators = |n: usize| vec![FileNode::Separator; n];
    let over = MAX_FILE_NODES as usize / 2 + 1;
    let many = BookmarkFile { roots: vec![(ItemId::MENU, separators(over)), (ItemId::OTHER, separators(over))] };
    assert!(matches!(BookmarkFile::decode(&many.encode()), Err(DecodeError::TooLarge { .. })));
    let within =
        BookmarkFile { roots: vec![(ItemId::MENU, separators(over - 1)), (ItemId::OTHER, separators(over - 1))] };
    assert_eq!(BookmarkFile::decode(&within.encode()).unwrap(), within);
    // Nesting: 64 levels are what the importers accept; a 65th is refused.
    let nest = |levels: usize| {
        let mut node = FileNode::Bookmark { title: "deep".into(), url: "https://deep.example/".into() };
        for _ in 0..levels {
            node = FileNode::Folder { title: "f".into(), children: vec![node] };
        }
        BookmarkFile { roots: vec![(ItemId::MENU, vec![node])] }
    };
    assert!(BookmarkFile::decode(&nest(63).encode()).is_ok());
    assert!(matches!(BookmarkFile::decode(&nest(64).encode()), Err(DecodeError::TooLarge { .. })));

    let rows = parse_password_csv(CHROME_CSV).unwrap();
    let bytes = encode_password_rows(&rows);
    assert_eq!(decode_password_rows(&bytes).unwrap(), rows);
    for len in 0..bytes.len() {
        assert!(decode_password_rows(&bytes[..len]).is_err(), "prefix of {len} bytes decoded");
    }
    let mut count_only = vec![0xc1];
    count_only.extend(u32::MAX.to_be_bytes());
    assert!(decode_password_rows(&count_only).is_err());
}

#[test]
fn a_password_row_keeps_its_secrets_out_of_debug_output() {
    let row = PasswordRow {
        origin: "https://bank.example".into(),
        username: "ada".into(),
        password: "hunter2-secret".into(),
        notes: "pin 4321".into(),
    };
    let shown = format!("{row:?}");
    assert!(shown.contains("ada") && !shown.contains("hunter2") && !shown.contains("4321"), "{shown}");
}

#[test]
fn an_export_of_every_root_parses_back_into_the_same_file() {
    let profile = Profile::generate(12, ProfileSize::SMALL, T0);
    let fx = Fixture::new(306, 1);
    let mut a = fx.replica(0, 1);
    a.state.transact(T0, &mut a.rng, |e| e.import_bookmarks(&profile.bookmarks)).unwrap();
    let file = file_of(a.state.bookmarks());
    assert_eq!(file.roots.iter().map(|(r, _)| *r).collect::<Vec<_>>(), ItemId::ROOTS);
    assert_eq!(normalize(&parse_netscape(&export_netscape(&file)).unwrap()), normalize(&file));
}

#[test]
fn an_export_of_a_tree_deeper_than_the_importers_accept_parses_back() {
    let fx = Fixture::new(307, 1);
    let mut a = fx.replica(0, 1);
    a.state
        .transact(T0, &mut a.rng, |e| {
            for root in [ItemId::TOOLBAR, ItemId::MENU, ItemId::OTHER] {
                let mut parent = root;
                for level in 0..70 {
                    parent = e.add_bookmark(parent, None, NodeKind::Folder, &format!("level {level}"), None)?;
                }
                e.add_bookmark(parent, None, NodeKind::Bookmark, "deepest", Some("https://deep.example/"))?;
            }
            Ok(())
        })
        .unwrap();
    // Folders nested: 1 for a root's folder with nothing below it.
    fn depth(nodes: &[FileNode]) -> usize {
        nodes
            .iter()
            .map(|n| if let FileNode::Folder { children, .. } = n { 1 + depth(children) } else { 0 })
            .max()
            .unwrap_or(0)
    }
    let file = file_of(a.state.bookmarks());
    assert_eq!(depth(file.children(&ItemId::TOOLBAR)), MAX_EXPORT_DEPTH);
    let html = parse_netscape(&export_netscape(&file)).unwrap();
    let json = parse_chromium_json(&export_chromium_json(&file)).unwrap();
    for root in [ItemId::TOOLBAR, ItemId::MENU, ItemId::OTHER] {
        assert_eq!(depth(html.children(&root)), MAX_EXPORT_DEPTH, "HTML, {root}");
    }
    assert_eq!(depth(json.children(&ItemId::TOOLBAR)), MAX_EXPORT_DEPTH);
    // Chromium's file has no menu: it is a folder in "other", one level deeper.
    assert_eq!(depth(json.children(&ItemId::OTHER)), MAX_EXPORT_DEPTH + 1);
}
