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
use crate::model::import::{ImportNode, ImportedBookmarks, ImportedLogin};
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
    pub bookmarks: ImportedBookmarks,
    /// History, oldest first.
    pub visits: Vec<VisitSpec>,
    /// Saved logins.
    pub passwords: Vec<ImportedLogin>,
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
        let mut roots: Vec<(ItemId, Vec<ImportNode>)> =
            vec![(ItemId::TOOLBAR, Vec::new()), (ItemId::MENU, Vec::new()), (ItemId::OTHER, Vec::new())];
        fn folder(g: &mut Gen, depth: usize, remaining: &mut usize, pick: &dyn Fn(&mut Gen) -> String) -> ImportNode {
            let mut children = Vec::new();
            let n = (4 + g.below(16)).min(*remaining);
            for _ in 0..n {
                let domain = pick(g);
                children.push(ImportNode::Bookmark { title: g.title(), url: g.url(&domain) });
                *remaining = remaining.saturating_sub(1);
            }
            if g.below(8) == 0 {
                children.push(ImportNode::Separator);
            }
            if depth < 5 && *remaining > 0 {
                for _ in 0..g.below(3) {
                    if *remaining == 0 {
                        break;
                    }
                    children.push(folder(g, depth.saturating_add(1), remaining, pick));
                }
            }
            ImportNode::Folder { title: g.title(), children }
        }
        let mut turn = 0usize;
        while remaining > 0 {
            let node = if g.below(6) == 0 {
                remaining = remaining.saturating_sub(1);
                let domain = pick_domain(&mut g);
                ImportNode::Bookmark { title: g.title(), url: g.url(&domain) }
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
                ImportedLogin {
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
        Profile { bookmarks: ImportedBookmarks { roots }, visits, passwords, layout }
    }

    /// The bookmarks as a Netscape bookmark file.
    pub fn bookmarks_html(&self) -> String {
        fn esc(s: &str) -> String {
            html_escape::encode_double_quoted_attribute(s).into_owned()
        }
        fn write(out: &mut String, nodes: &[ImportNode]) {
            for n in nodes {
                match n {
                    ImportNode::Folder { title, children } => {
                        out.push_str(&format!("<DT><H3>{}</H3>\n<DL><p>\n", esc(title)));
                        write(out, children);
                        out.push_str("</DL><p>\n");
                    }
                    ImportNode::Bookmark { title, url } => {
                        out.push_str(&format!(
                            "<DT><A HREF=\"{}\" ADD_DATE=\"1700000000\">{}</A>\n",
                            esc(url),
                            esc(title)
                        ));
                    }
                    ImportNode::Separator => out.push_str("<HR>\n"),
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
