//! Test and benchmark helpers (feature `test-util`): the **realistic profile** generator.
//!
//! A profile is what one person's browser holds after a few years: 5,000 bookmarks in nested
//! folders, 100,000 history visits over 90 days, 500 saved passwords and 50 tabs across 5
//! windows. Shapes follow what browsers store — title and URL lengths, folder depths that thin
//! out with depth, a few sites visited very often (a Zipf-like spread), visits clustered in the
//! day — and everything comes from one seed, so anyone can regenerate exactly the same data.
//!
//! Generator code never sees untrusted input, so plain arithmetic is allowed here.
#![allow(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::model::entries::{Layout, Tab, TabGroup, Window};
use crate::model::history::Transition;
use crate::model::import::{BookmarkFile, FileNode, PasswordRow};
use crate::model::schema::ItemId;

/// How big a profile to make.
#[derive(Clone, Copy, Debug)]
pub struct ProfileSize {
    /// Bookmarks (folders come on top, about one per 12 bookmarks).
    pub bookmarks: usize,
    /// History visits.
    pub visits: usize,
    /// Password entries.
    pub passwords: usize,
    /// Open tabs (spread over 5 windows).
    pub tabs: usize,
}

impl ProfileSize {
    /// The realistic profile: 5,000 bookmarks, 100,000 visits, 500 passwords, 50 tabs.
    pub const REALISTIC: ProfileSize = ProfileSize { bookmarks: 5_000, visits: 100_000, passwords: 500, tabs: 50 };
    /// A small one for quick tests.
    pub const SMALL: ProfileSize = ProfileSize { bookmarks: 200, visits: 2_000, passwords: 20, tabs: 10 };
}

/// One generated visit.
#[derive(Clone, Debug)]
pub struct VisitSpec {
    /// URL.
    pub url: String,
    /// Title.
    pub title: String,
    /// Time, Unix ms.
    pub at_ms: u64,
    /// How.
    pub transition: Transition,
}

/// A generated profile.
#[derive(Clone, Debug)]
pub struct Profile {
    /// The bookmark tree, as an import.
    pub bookmarks: BookmarkFile,
    /// History, oldest first.
    pub visits: Vec<VisitSpec>,
    /// Saved logins.
    pub passwords: Vec<PasswordRow>,
    /// Open windows and tabs.
    pub layout: Layout,
}

const WORDS: &[&str] = &[
    "rust",
    "guide",
    "recipe",
    "news",
    "weather",
    "map",
    "travel",
    "budget",
    "kids",
    "school",
    "garden",
    "music",
    "Konzert",
    "Reise",
    "recette",
    "voyage",
    "café",
    "ニュース",
    "天気",
    "旅行",
    "программа",
    "новости",
    "تعليم",
    "κατάλογος",
    "release",
    "notes",
    "docs",
    "api",
    "tutorial",
    "review",
    "best",
    "2026",
    "how",
    "to",
    "the",
    "and",
    "for",
    "with",
];
const TLDS: &[&str] = &["com", "org", "net", "de", "fr", "jp", "io", "dev", "co.uk", "example"];

struct Gen(ChaCha20Rng);

impl Gen {
    fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n.max(1) as u64) as usize
    }
    fn word(&mut self) -> &'static str {
        WORDS.get(self.below(WORDS.len())).copied().unwrap_or("x")
    }
    /// 2–9 words: titles are typically 20–60 characters.
    fn title(&mut self) -> String {
        let n = 2 + self.below(8);
        (0..n).map(|_| self.word()).collect::<Vec<_>>().join(" ")
    }
    fn domain(&mut self, index: usize) -> String {
        let tld = TLDS.get(index % TLDS.len()).copied().unwrap_or("com");
        format!("{}{index}.{tld}", self.word().chars().filter(char::is_ascii_alphanumeric).collect::<String>())
    }
    /// URLs are typically 30–120 characters: a domain, a path of 1–5 segments, sometimes a query.
    fn url(&mut self, domain: &str) -> String {
        let segments = 1 + self.below(5);
        let path: Vec<String> =
            (0..segments).map(|_| format!("{}-{}", self.word().replace(' ', "-"), self.below(10_000))).collect();
        let query = if self.below(3) == 0 { format!("?id={}&ref=bm", self.0.next_u32()) } else { String::new() };
        format!("https://{domain}/{}{query}", path.join("/"))
    }
}

impl Profile {
    /// Generates a profile from `seed`, with visit times ending at `now_ms`.
    pub fn generate(seed: u64, size: ProfileSize, now_ms: u64) -> Profile {
        let mut g = Gen(ChaCha20Rng::seed_from_u64(seed));
        let domains: Vec<String> = (0..400).map(|i| g.domain(i)).collect();
        let pick_domain = |g: &mut Gen| {
            // Zipf-like: low indexes far more often.
            let r = g.below(1000).saturating_add(1);
            domains.get((domains.len().saturating_mul(r.saturating_mul(r))) / 1_000_000).cloned().unwrap_or_default()
        };

        // Bookmarks: folders of ~12 bookmarks, nested up to 5 deep, spread over the roots.
        let mut remaining = size.bookmarks;
        let mut roots: Vec<(ItemId, Vec<FileNode>)> =
            vec![(ItemId::TOOLBAR, Vec::new()), (ItemId::MENU, Vec::new()), (ItemId::OTHER, Vec::new())];
        fn folder(g: &mut Gen, depth: usize, remaining: &mut usize, pick: &dyn Fn(&mut Gen) -> String) -> FileNode {
            let mut children = Vec::new();
            let n = (4 + g.below(16)).min(*remaining);
            for _ in 0..n {
                let domain = pick(g);
                children.push(FileNode::Bookmark { title: g.title(), url: g.url(&domain) });
                *remaining = remaining.saturating_sub(1);
            }
            if g.below(8) == 0 {
                children.push(FileNode::Separator);
            }
            if depth < 5 && *remaining > 0 {
                for _ in 0..g.below(3) {
                    if *remaining == 0 {
                        break;
                    }
                    children.push(folder(g, depth.saturating_add(1), remaining, pick));
                }
            }
            FileNode::Folder { title: g.title(), children }
        }
        let mut turn = 0usize;
        while remaining > 0 {
            let node = if g.below(6) == 0 {
                remaining = remaining.saturating_sub(1);
                let domain = pick_domain(&mut g);
                FileNode::Bookmark { title: g.title(), url: g.url(&domain) }
            } else {
                folder(&mut g, 1, &mut remaining, &pick_domain)
            };
            if let Some((_, list)) = roots.get_mut(turn % 3) {
                list.push(node);
            }
            turn = turn.saturating_add(1);
        }

        // Visits over 90 days, mostly in the waking hours.
        let day = 86_400_000u64;
        let start = now_ms.saturating_sub(90 * day);
        let mut visits: Vec<VisitSpec> = (0..size.visits)
            .map(|_| {
                let d = g.below(90) as u64;
                let hour = 7 + g.below(16) as u64;
                let at_ms = start + d * day + hour * 3_600_000 + g.below(3_600_000) as u64;
                let domain = pick_domain(&mut g);
                let transition = match g.below(10) {
                    0..=5 => Transition::Link,
                    6..=7 => Transition::Typed,
                    8 => Transition::Bookmark,
                    _ => Transition::Reload,
                };
                VisitSpec { url: g.url(&domain), title: g.title(), at_ms: at_ms.min(now_ms), transition }
            })
            .collect();
        visits.sort_by_key(|v| v.at_ms);

        let passwords = (0..size.passwords)
            .map(|i| {
                let domain = domains.get(i % domains.len()).cloned().unwrap_or_default();
                PasswordRow {
                    origin: format!("https://{domain}"),
                    username: format!("{}.{}{}", g.word(), g.word(), g.below(100)),
                    password: format!("{:016x}{:08x}", g.0.next_u64(), g.0.next_u32()),
                    notes: if g.below(5) == 0 { g.title() } else { String::new() },
                }
            })
            .collect();

        let windows = 5usize;
        let layout = Layout {
            windows: (0..windows)
                .map(|w| {
                    let tabs: Vec<Tab> = (0..size.tabs / windows)
                        .map(|t| {
                            let domain = pick_domain(&mut g);
                            Tab {
                                url: g.url(&domain),
                                title: g.title(),
                                pinned: t < 2 && w == 0,
                                group: (t % 4 == 3).then_some(0),
                            }
                        })
                        .collect();
                    Window {
                        tabs,
                        groups: vec![TabGroup { title: g.title(), color: "blue".into(), collapsed: false }],
                        active_tab: 0,
                    }
                })
                .collect(),
        };
        Profile { bookmarks: BookmarkFile { roots }, visits, passwords, layout }
    }

    /// The bookmarks as a Netscape bookmark file.
    pub fn bookmarks_html(&self) -> String {
        fn esc(s: &str) -> String {
            html_escape::encode_double_quoted_attribute(s).into_owned()
        }
        fn write(out: &mut String, nodes: &[FileNode]) {
            for n in nodes {
                match n {
                    FileNode::Folder { title, children } => {
                        out.push_str(&format!("<DT><H3>{}</H3>\n<DL><p>\n", esc(title)));
                        write(out, children);
                        out.push_str("</DL><p>\n");
                    }
                    FileNode::Bookmark { title, url } => {
                        out.push_str(&format!(
                            "<DT><A HREF=\"{}\" ADD_DATE=\"1700000000\">{}</A>\n",
                            esc(url),
                            esc(title)
                        ));
                    }
                    FileNode::Separator => out.push_str("<HR>\n"),
                }
            }
        }
        let mut out = String::from(
            "<!DOCTYPE NETSCAPE-Bookmark-file-1>\n<TITLE>Bookmarks</TITLE>\n<H1>Bookmarks</H1>\n<DL><p>\n",
        );
        for (root, children) in &self.bookmarks.roots {
            if *root == ItemId::MENU {
                write(&mut out, children);
            } else {
                let marker =
                    if *root == ItemId::TOOLBAR { "PERSONAL_TOOLBAR_FOLDER" } else { "UNFILED_BOOKMARKS_FOLDER" };
                out.push_str(&format!("<DT><H3 {marker}=\"true\">root</H3>\n<DL><p>\n"));
                write(&mut out, children);
                out.push_str("</DL><p>\n");
            }
        }
        out.push_str("</DL><p>\n");
        out
    }
}

/// URLs the random changes pick from (few, so that concurrent changes collide).
pub const URLS: [&str; 6] = [
    "https://example.org/",
    "https://rust-lang.org/learn",
    "https://news.example/today",
    "https://private.example/secret-page",
    "https://docs.example/a/b/c?q=1",
    "https://shop.example/cart",
];

fn below(rng: &mut dyn RngCore, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

fn pick<T: Copy>(rng: &mut dyn RngCore, items: &[T]) -> Option<T> {
    (!items.is_empty()).then(|| items[below(rng, items.len())])
}

/// One random change of any kind, as a user would make it: bookmark adds, edits, moves (some of
/// them towards cycles), deletes; password entries and field edits; visits and history deletions
/// by URL, range and all; device layouts, saved workspaces and key records. Needs the vault
/// unlocked.
pub fn random_change<R: rand_core::CryptoRngCore>(
    e: &mut crate::model::Edit<'_, R>,
    state_view: &RandomView,
    rng: &mut dyn RngCore,
    now: u64,
) -> Result<(), crate::model::ModelError> {
    use crate::model::schema::NodeKind;
    let choice = below(rng, 100);
    let url = URLS[below(rng, URLS.len())];
    let word = format!("w{}", below(rng, 1000));
    let index = (below(rng, 2) == 0).then(|| below(rng, 4));
    let node = pick(rng, &state_view.nodes);
    let folder = pick(rng, &state_view.folders).unwrap_or(ItemId::OTHER);
    let field = below(rng, 4);
    let layout = Layout {
        windows: vec![Window {
            tabs: vec![Tab { url: url.into(), title: word.clone(), pinned: below(rng, 3) == 0, group: None }],
            ..Window::default()
        }],
    };
    match choice {
        0..=14 => {
            e.add_bookmark(folder, index, NodeKind::Bookmark, &word, Some(url))?;
        }
        15..=19 => {
            e.add_bookmark(folder, index, NodeKind::Folder, &word, None)?;
        }
        20..=21 => {
            e.add_bookmark(folder, index, NodeKind::Separator, "", None)?;
        }
        22..=31 => {
            if let Some(node) = node {
                // May be refused locally (into its own subtree); that is fine.
                let _ = e.move_bookmark(&node, folder, index);
            }
        }
        32..=37 => {
            if let Some(node) = node {
                e.delete_bookmark(&node)?;
            }
        }
        38..=45 => {
            if let Some(node) = node {
                e.edit_bookmark(&node, Some(&word), (field == 0).then_some("https://edited.example/"))?;
            }
        }
        46..=50 => {
            e.add_password(url, &word, &format!("pw-{word}"), "")?;
        }
        51..=58 => {
            if let Some(id) = pick(rng, &state_view.passwords) {
                let text = format!("{word}-{field}");
                let t = Some(text.as_str());
                match field {
                    0 => e.set_password_fields(&id, t, None, None, None)?,
                    1 => e.set_password_fields(&id, None, t, None, None)?,
                    2 => e.set_password_fields(&id, None, None, t, None)?,
                    _ => e.set_password_fields(&id, None, None, None, t)?,
                }
            }
        }
        59..=61 => {
            if let Some(id) = pick(rng, &state_view.passwords) {
                e.delete_password(&id)?;
            }
        }
        62..=74 => {
            e.record_visit(url, &word, now.saturating_sub(below(rng, 100_000) as u64), Transition::Link)?;
        }
        75..=77 => {
            let from = now.saturating_sub(below(rng, 200_000) as u64);
            e.delete_history_range(from, from + 50_000);
        }
        78..=79 => e.delete_history_url(url),
        80 => e.delete_all_history(),
        81..=84 => e.set_device_layout(&layout)?,
        85..=87 => match pick(rng, &state_view.workspaces) {
            Some(id) if field < 2 => e.update_workspace(&id, Some(&word), Some(&layout))?,
            Some(id) if field == 2 => e.delete_workspace(&id)?,
            _ => {
                e.save_workspace(&word, &layout)?;
            }
        },
        88..=91 => match pick(rng, &state_view.keys) {
            Some(id) if field < 2 => e.rename_key(&id, &word)?,
            Some(id) if field == 2 => e.delete_key(&id)?,
            _ => {
                e.add_key(&word, "ssh-ed25519", &format!("-----KEY {word}-----"))?;
            }
        },
        _ => {
            // Several edits in one transaction.
            let f = e.add_bookmark(folder, None, NodeKind::Folder, &word, None)?;
            e.add_bookmark(f, None, NodeKind::Bookmark, &word, Some(url))?;
            if let Some(node) = node {
                let _ = e.move_bookmark(&node, f, Some(0));
            }
        }
    }
    Ok(())
}

/// What [`random_change`] picks from: a snapshot of a replica's items.
#[derive(Clone, Debug, Default)]
pub struct RandomView {
    /// Live bookmark nodes.
    pub nodes: Vec<ItemId>,
    /// Live folders and the roots.
    pub folders: Vec<ItemId>,
    /// Password entries.
    pub passwords: Vec<ItemId>,
    /// Key records.
    pub keys: Vec<ItemId>,
    /// Saved workspaces.
    pub workspaces: Vec<ItemId>,
}

impl RandomView {
    /// Takes the snapshot.
    pub fn of(state: &crate::model::BrowserState) -> Self {
        use crate::model::schema::NodeKind;
        let tree = state.bookmarks();
        let mut folders: Vec<ItemId> = tree.nodes().filter(|n| n.kind == NodeKind::Folder).map(|n| n.id).collect();
        folders.extend(ItemId::ROOTS);
        Self {
            nodes: tree.nodes().map(|n| n.id).collect(),
            folders,
            passwords: state.passwords().iter().map(|p| p.id).collect(),
            keys: state.keys().iter().map(|k| k.id).collect(),
            workspaces: state.named_workspaces().iter().map(|w| w.id).collect(),
        }
    }
}

/// Checks that the bookmark tree has no cycle and no node twice: every node is reachable from
/// exactly one root, once.
pub fn check_tree(state: &crate::model::BrowserState) -> Result<(), String> {
    let tree = state.bookmarks();
    let mut seen = std::collections::BTreeSet::new();
    for root in ItemId::ROOTS {
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            for child in tree.children(&id) {
                if !seen.insert(*child) {
                    return Err(format!("node {child} appears twice"));
                }
                stack.push(*child);
            }
        }
    }
    if seen.len() != tree.len() {
        return Err("some nodes are unreachable (a cycle)".into());
    }
    Ok(())
}

/// A seeded generator for tests.
pub fn rng_for_tests(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// Runs every decoder of untrusted bytes in the crate on `data` — the wire, storage, import and
/// document formats, public and internal. For fuzzing (`fuzz/`) and the arbitrary-bytes pass of
/// the normal tests: none may panic, hang or allocate beyond a bound.
pub fn decode_everything(data: &[u8]) {
    use crate::certificate::{DeviceCertificate, Revocation};
    use crate::envelope::Envelope;
    use crate::identity::{DeviceId, IdentityId};
    use crate::register::RegisterValue;
    let device = device_for_fuzzing();
    let _ = Envelope::decode(data);
    // This device's own stored forms (read under its MAC, parsed under the same caps): as given,
    // and forced into the packed and the deflated-payload forms.
    let _ = Envelope::decode_stored(data);
    for format in [0x19u8, 0x1a] {
        let _ = Envelope::decode_stored(&[&[format], data].concat());
    }
    let _ = DeviceCertificate::decode(data);
    let _ = Revocation::decode(data);
    let _ = RegisterValue::decode(data, &std::sync::Arc::new(device));
    let _ = crate::sync::Message::decode(data);
    let _ = crate::sync::wire::Reassembler::default().push(data, 0);
    let _ = crate::sync::IdentityBundle::decode(data);
    let _ = crate::model::history::HistoryOp::decode(data);
    let _ = crate::model::history::Visit::decode(data, device);
    let _ = crate::model::entries::Layout::decode(data);
    let _ = crate::model::schema::Place::decode(data);
    let _ = crate::model::vault::Vault::sealed_with(data);
    let _ = crate::sync::storage::open_record(&[0; 32], &crate::sync::RecordKey::Registry, data);
    struct NoDoc;
    impl crate::model::yupdate::DocView for NoDoc {
        fn is_authors_client(&self, client: u64) -> bool {
            client.is_multiple_of(2)
        }
        fn next_clock(&self, client: u64) -> u32 {
            (client % 7) as u32
        }
    }
    let _ = crate::model::yupdate::check_update(data, "a:00", 4, &NoDoc);
    // What the browser package's import/export module hands back.
    let _ = crate::model::import::BookmarkFile::decode(data);
    let _ = crate::model::import::decode_password_rows(data);
    if let Ok(text) = core::str::from_utf8(data) {
        let _ = text.parse::<IdentityId>();
        let _ = text.parse::<DeviceId>();
        let _ = text.parse::<ItemId>();
        let _ = crate::sync::PairingCode::parse(text);
        let _ = crate::sync::Fingerprint::parse(text);
        let _ = crate::text::hex_32(text);
        let _ = crate::model::import::parse_netscape(text);
        let _ = crate::model::import::parse_chromium_json(text);
        let _ = crate::model::import::parse_password_csv(text);
    }
}

fn device_for_fuzzing() -> crate::identity::DeviceId {
    crate::identity::DeviceSecretKey::from_secret_bytes(&[9; 32]).public()
}

/// Drives a freshly created engine with `data` read as a sequence of inputs — connections opened
/// and closed, frames (sometimes well-formed handshake messages, sometimes raw bytes), time
/// passing — draining every output after each. For fuzzing the engine as a whole.
pub fn drive_engine(data: &[u8]) {
    use crate::sync::{Config, Engine, Fingerprint, Message, Purpose};
    let Ok(mut engine) = Engine::create_identity(Config::default(), "fuzz", [5; 32], 1_764_000_000_000) else { return };
    let fp = |n: u8| Fingerprint::parse(&format!("sha-256 {n:02X}:00")).unwrap_or_else(|| unreachable!());
    let mut now = 1_764_000_000_000u64;
    for chunk in data.split(|b| *b == 0xfe) {
        let Some((&op, rest)) = chunk.split_first() else { continue };
        let peer = u64::from(op & 0x03);
        match op >> 2 {
            0 => engine.handle_peer_up(peer, fp(1), fp(op), now),
            1 => engine.handle_peer_down(peer),
            2 => now = now.saturating_add(u64::from(rest.first().copied().unwrap_or(1)) * 97),
            3 => {
                let mut nonce = [0u8; 32];
                for (n, b) in nonce.iter_mut().zip(rest) {
                    *n = *b;
                }
                let hello = Message::Hello { version: 1, purpose: Purpose::Sync, nonce };
                for frame in crate::sync::wire::frames(&hello.encode(), 1) {
                    engine.handle_frame(peer, &frame, now);
                }
            }
            4 => {
                for frame in crate::sync::wire::frames(rest, u32::from(op)) {
                    engine.handle_frame(peer, &frame, now);
                }
            }
            _ => engine.handle_frame(peer, rest, now),
        }
        engine.handle_timeout(now);
        while engine.poll_transmit().is_some() {}
        while let Some(batch) = engine.poll_storage() {
            engine.handle_storage_done(batch.id);
        }
        while engine.poll_event().is_some() {}
    }
}

/// Feeds a replica envelopes built from `data`, read as chunks separated by `0xff 0xfe`: a chunk
/// whose first byte is below `0x80` becomes the payload of an envelope **validly signed** by an
/// enrolled device (a malicious device, then: only the content is hostile), the next in its
/// chain; any other chunk is decoded as raw envelope bytes. For fuzzing the ingest path as a
/// whole — the yrs update check, the yrs apply, history ops and visits.
pub fn ingest_envelopes(data: &[u8]) {
    use crate::certificate::{DeviceCertificate, DeviceName, DeviceRegistry, NEVER_EXPIRES};
    use crate::envelope::{Envelope, UnsignedEnvelope};
    use crate::hlc::Timestamp;
    use crate::identity::{DeviceSecretKey, RootSecretKey};
    use crate::model::{BrowserState, KIND_DOC_UPDATE, KIND_HISTORY, Received, Settings};
    // The same keys and certificates every run: made once, so executions go to the ingest path.
    static FIXTURE: std::sync::OnceLock<(DeviceSecretKey, DeviceSecretKey, DeviceRegistry)> =
        std::sync::OnceLock::new();
    let (author, replica, registry) = FIXTURE.get_or_init(|| {
        let root = RootSecretKey::from_secret_bytes(&[1; 32]);
        let author = DeviceSecretKey::from_secret_bytes(&[2; 32]);
        let replica = DeviceSecretKey::from_secret_bytes(&[3; 32]);
        let mut registry = DeviceRegistry::new(root.public());
        for (key, name) in [(&author, "author"), (&replica, "replica")] {
            if let Ok(name) = DeviceName::new(name) {
                let _ = registry.add_certificate(DeviceCertificate::issue(&root, key.public(), name, 0, NEVER_EXPIRES));
            }
        }
        (author, replica, registry)
    });
    let Ok(mut state) = BrowserState::new(registry.clone(), replica.clone(), [4; 16], Settings::default()) else {
        return;
    };
    let now = 1_764_000_000_000u64;
    let (mut seq, mut prev) = (1u64, None);
    let mut rest = data;
    while !rest.is_empty() {
        let end = rest.windows(2).position(|w| w == [0xff, 0xfe]).unwrap_or(rest.len());
        let (chunk, tail) = rest.split_at(end);
        rest = tail.get(2..).unwrap_or_default();
        let Some((&first, body)) = chunk.split_first() else { continue };
        if first < 0x80 {
            let kind = if first & 1 == 0 { KIND_DOC_UPDATE } else { KIND_HISTORY };
            let (payload, attachments) = if kind == KIND_DOC_UPDATE {
                let mut p = vec![0u8; 16];
                p.extend_from_slice(body);
                (p, Vec::new())
            } else {
                let mut parts = body.split(|b| *b == 0xfd);
                let op = parts.next().unwrap_or_default().to_vec();
                (op, parts.filter(|p| !p.is_empty()).map(<[u8]>::to_vec).take(64).collect())
            };
            let unsigned = UnsignedEnvelope {
                kind,
                seq,
                prev,
                hlc: Timestamp::from_wall_ms(now),
                parents: vec![],
                payload,
                attachments,
            };
            let Ok(envelope) = Envelope::sign(author, state.identity(), unsigned) else { continue };
            let id = envelope.id();
            if let Ok(decoded) = Envelope::decode(&envelope.encode())
                && let Ok(Received::Applied(_)) = state.receive(decoded, now)
            {
                seq = seq.saturating_add(1);
                prev = Some(id);
            }
        } else if let Ok(envelope) = Envelope::decode(body) {
            let _ = state.receive(envelope, now);
        }
    }
    let _ = state.encode_state();
    let _ = state.to_json();
}

/// Damages a stored packed envelope record as only a bug could (records are MAC'd): its block
/// `block` replaced by bytes that do not inflate, the body (and so the ID) left as it was, sealed
/// again under the storage key found in `identity_record`. `None` if the record is not a packed
/// envelope record with that block.
pub fn break_packed_block(
    identity_record: &[u8],
    key: crate::sync::RecordKey,
    record: &[u8],
    block: usize,
) -> Option<Vec<u8>> {
    use crate::sync::storage;
    let bundle = crate::sync::IdentityBundle::decode(storage::peek_body(identity_record)?).ok()?;
    let body = storage::open_record(&bundle.storage_key, &key, record).ok()?;
    let (order, stored) = storage::split_envelope_body(body)?;
    let mut envelope = crate::envelope::Envelope::decode_stored(stored).ok()?;
    if !envelope.break_packed_block(block) {
        return None;
    }
    let mut w = crate::codec::Writer::with_capacity(record.len());
    w.u64(order);
    envelope.write_stored_to(&mut w, None);
    Some(storage::seal_record(&bundle.storage_key, &key, w.as_bytes()))
}

/// Damages a stored envelope record whose payload is held deflated, as only a bug could: the
/// deflated bytes replaced by bytes that do not inflate, sealed again under the storage key
/// found in `identity_record`. `None` if the record is not of that form.
pub fn break_deflated_payload(identity_record: &[u8], key: crate::sync::RecordKey, record: &[u8]) -> Option<Vec<u8>> {
    use crate::sync::storage;
    let bundle = crate::sync::IdentityBundle::decode(storage::peek_body(identity_record)?).ok()?;
    let body = storage::open_record(&bundle.storage_key, &key, record).ok()?;
    let (order, stored) = storage::split_envelope_body(body)?;
    let mut envelope = crate::envelope::Envelope::decode_stored(stored).ok()?;
    if !envelope.break_deflated_payload() {
        return None;
    }
    let mut w = crate::codec::Writer::with_capacity(record.len());
    w.u64(order);
    envelope.write_stored_to(&mut w, None);
    Some(storage::seal_record(&bundle.storage_key, &key, w.as_bytes()))
}
