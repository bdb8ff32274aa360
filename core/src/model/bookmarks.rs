//! The bookmark tree, materialized from the registers by deterministic rules.
//!
//! Each node has a `place` register (kind, parent, position, and the parent and position it had
//! before this write) and `title` / `url` registers. The tree is a pure function of the register
//! state and local time, so every replica that holds the same values shows the same tree. The
//! rules (written out in `docs/model.md`):
//!
//! 1. **Delete versus edit.** A deleted node's `place` holds a delete value that supersedes every
//!    value of the node its writer had seen. If any visible value of the node (a concurrent move,
//!    a title or URL edit) is *not* superseded by it, the node is **revived** — at the concurrent
//!    move's place if there is one, else where it was before the deletion. Deleting a folder
//!    writes a delete value for every node beneath it that the deleter saw.
//! 2. **Orphans.** A live node whose parent is deleted (or unknown) is re-parented to the
//!    **nearest surviving ancestor**, following each deleted folder's previous parent; with no
//!    surviving ancestor, to the "other bookmarks" root. Nothing edited is silently lost.
//! 3. **Cycles.** Concurrent moves can make parents form a cycle. In each cycle the move with the
//!    greatest `(HLC, author, id)` — the latest — is undone: that node goes back to the parent it
//!    had before the move. This is the outcome of Kleppmann et al.'s move operation (the later of
//!    two conflicting moves is skipped) computed from the registers. No node is ever duplicated:
//!    each node has exactly one place.
//! 4. **Order.** Siblings are ordered by fractional-index position, ties broken by node ID.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::ModelError;
use crate::model::schema::{ItemId, MAX_TITLE_LEN, MAX_URL_LEN, NodeKind, Place, Position, decode_text};
use crate::register::{Register, VerifiedRegisterValue};

/// One node as shown.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BookmarkNode {
    /// Stable ID.
    #[serde(serialize_with = "crate::model::json::item_id")]
    pub id: ItemId,
    /// Folder, bookmark or separator.
    pub kind: NodeKind,
    /// Title (empty for separators).
    pub title: String,
    /// URL (bookmarks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Parent folder or root.
    #[serde(serialize_with = "crate::model::json::item_id")]
    pub parent: ItemId,
    /// Children, in order (folders only).
    #[serde(serialize_with = "crate::model::json::item_ids", skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ItemId>,
    #[serde(skip)]
    pub(crate) position: Position,
}

/// The materialized tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BookmarkTree {
    nodes: BTreeMap<ItemId, BookmarkNode>,
    roots: BTreeMap<ItemId, Vec<ItemId>>,
    /// No rule beyond "each live node sits where its place says" was needed: no value held back
    /// as too far ahead, no revived node, no orphan, no cycle undone. Only then may a local
    /// add, edit or move patch the tree in place instead of materializing it again (the result
    /// is the same; `BrowserState::bookmark_cache_is_fresh` checks it in the tests).
    regular: bool,
}

impl BookmarkTree {
    /// A node by ID (not the roots).
    pub fn get(&self, id: &ItemId) -> Option<&BookmarkNode> {
        self.nodes.get(id)
    }

    /// The children of a folder or root, in order.
    pub fn children(&self, parent: &ItemId) -> &[ItemId] {
        if parent.is_root() {
            return self.roots.get(parent).map(Vec::as_slice).unwrap_or_default();
        }
        self.nodes.get(parent).map(|n| n.children.as_slice()).unwrap_or_default()
    }

    /// Every live node, by ID.
    pub fn nodes(&self) -> impl Iterator<Item = &BookmarkNode> {
        self.nodes.values()
    }

    /// Number of live nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Number of live bookmarks (not folders or separators).
    pub fn bookmark_count(&self) -> usize {
        self.nodes.values().filter(|n| n.kind == NodeKind::Bookmark).count()
    }

    /// Whether a local add, edit or move may patch this tree in place.
    pub(crate) fn is_regular(&self) -> bool {
        self.regular
    }

    fn children_mut(&mut self, parent: &ItemId) -> Option<&mut Vec<ItemId>> {
        if parent.is_root() {
            return Some(self.roots.entry(*parent).or_default());
        }
        self.nodes.get_mut(parent).map(|n| &mut n.children)
    }

    /// Puts `id` among `parent`'s children in (position, ID) order, as `materialize` sorts them.
    fn insert_child(&mut self, parent: &ItemId, id: ItemId, position: &Position) {
        let at = {
            let siblings = self.children(parent);
            let before = |c: &ItemId| self.nodes.get(c).is_some_and(|n| (&n.position, &n.id) < (position, &id));
            // Most inserts append (a new bookmark goes at the end): one lookup instead of a search.
            match siblings.last() {
                Some(last) if before(last) => siblings.len(),
                _ => siblings.partition_point(before),
            }
        };
        if let Some(children) = self.children_mut(parent) {
            children.insert(at.min(children.len()), id);
        }
    }

    /// Patch: a new node under a live folder or root.
    pub(crate) fn insert_new(&mut self, node: BookmarkNode) {
        let (id, parent, position) = (node.id, node.parent, node.position.clone());
        self.nodes.insert(id, node);
        self.insert_child(&parent, id, &position);
    }

    /// Patch: new title and/or URL of a live node.
    pub(crate) fn set_text(&mut self, id: &ItemId, title: Option<&str>, url: Option<&str>) {
        if let Some(node) = self.nodes.get_mut(id) {
            if let Some(title) = title {
                title.clone_into(&mut node.title);
            }
            if let (Some(url), NodeKind::Bookmark) = (url, node.kind) {
                node.url = Some(url.to_owned());
            }
        }
    }

    /// Patch: a live node moved under a live folder or root that is not inside it.
    pub(crate) fn relocate(&mut self, id: &ItemId, parent: ItemId, position: Position) {
        let Some(old_parent) = self.nodes.get(id).map(|n| n.parent) else { return };
        if let Some(children) = self.children_mut(&old_parent) {
            children.retain(|c| c != id);
        }
        if let Some(node) = self.nodes.get_mut(id) {
            node.parent = parent;
            node.position = position.clone();
        }
        self.insert_child(&parent, *id, &position);
    }

    /// Whether `node` is `ancestor` or lies beneath it.
    pub fn is_within(&self, node: &ItemId, ancestor: &ItemId) -> bool {
        let mut current = *node;
        for _ in 0..=self.nodes.len() {
            if current == *ancestor {
                return true;
            }
            match self.nodes.get(&current) {
                Some(n) => current = n.parent,
                None => return false,
            }
        }
        false
    }

    /// Every node beneath `folder`, depth first.
    pub fn descendants(&self, folder: &ItemId) -> Vec<ItemId> {
        let mut out = Vec::new();
        let mut stack: Vec<ItemId> = self.children(folder).iter().rev().copied().collect();
        while let Some(id) = stack.pop() {
            out.push(id);
            stack.extend(self.children(&id).iter().rev().copied());
        }
        out
    }

    /// Bookmarks and folders whose title or URL contains `needle`, case-insensitively.
    pub fn search(&self, needle: &str) -> Vec<&BookmarkNode> {
        let needle = needle.to_lowercase();
        self.nodes
            .values()
            .filter(|n| {
                n.title.to_lowercase().contains(&needle)
                    || n.url.as_deref().is_some_and(|u| u.to_lowercase().contains(&needle))
            })
            .collect()
    }

    /// The position for a new child at `index` among `parent`'s children (`exclude` is the node
    /// being moved, which does not count); [`ModelError::FolderFull`] when the folder has no room
    /// left there.
    pub(crate) fn position_at(
        &self,
        parent: &ItemId,
        index: usize,
        exclude: Option<&ItemId>,
    ) -> Result<Position, ModelError> {
        let siblings = self.children(parent);
        // The excluded node does not count: indexes at or past it shift by one.
        let excluded_at = exclude.and_then(|x| siblings.iter().position(|c| c == x));
        let raw = |i: usize| match excluded_at {
            Some(at) if i >= at => i.checked_add(1),
            _ => Some(i),
        };
        let sibling = |i: Option<usize>| {
            i.and_then(raw).and_then(|i| siblings.get(i)).and_then(|c| self.nodes.get(c)).map(|n| &n.position)
        };
        Position::between(sibling(index.checked_sub(1)), sibling(Some(index)))
            .ok_or(ModelError::FolderFull { folder: *parent })
    }

    /// The JSON view: each root with its nested children.
    pub fn to_json(&self) -> serde_json::Value {
        fn node_json(tree: &BookmarkTree, id: &ItemId, depth: usize) -> serde_json::Value {
            let Some(node) = tree.nodes.get(id) else { return serde_json::Value::Null };
            let mut v = serde_json::Map::new();
            v.insert("id".into(), id.to_string().into());
            v.insert("kind".into(), serde_json::to_value(node.kind).unwrap_or_default());
            v.insert("title".into(), node.title.clone().into());
            if let Some(url) = &node.url {
                v.insert("url".into(), url.clone().into());
            }
            if node.kind == NodeKind::Folder && depth < 256 {
                let children = node.children.iter().map(|c| node_json(tree, c, depth.saturating_add(1))).collect();
                v.insert("children".into(), children);
            }
            v.into()
        }
        let mut out = serde_json::Map::new();
        for root in ItemId::ROOTS {
            let children: Vec<serde_json::Value> = self.children(&root).iter().map(|c| node_json(self, c, 0)).collect();
            out.insert(root.to_string(), children.into());
        }
        out.into()
    }
}

/// A node's registers.
#[derive(Default)]
struct NodeRegisters<'a> {
    place: Option<&'a Register>,
    title: Option<&'a Register>,
    url: Option<&'a Register>,
}

fn visible(register: Option<&Register>, now_ms: u64, skew: u64) -> impl Iterator<Item = &VerifiedRegisterValue> {
    register.into_iter().flat_map(|r| r.values()).filter(move |v| v.hlc().is_visible_at(now_ms, skew))
}

/// The effective place of a node, and the rank of the value that decided it.
struct Resolved {
    kind: NodeKind,
    parent: ItemId,
    position: Position,
    prev_parent: ItemId,
    prev_position: Position,
    rank: (crate::hlc::Timestamp, crate::identity::DeviceId, crate::register::ValueId),
    /// Deleted, and brought back by a concurrent move or edit.
    revived: bool,
}

fn rank(v: &VerifiedRegisterValue) -> (crate::hlc::Timestamp, crate::identity::DeviceId, crate::register::ValueId) {
    (v.hlc(), *v.author(), v.id())
}

/// Resolves one node: `None` if it has no visible place or stays deleted.
fn resolve_node(regs: &NodeRegisters<'_>, now_ms: u64, skew: u64) -> Option<Resolved> {
    let place_register = regs.place?;
    let current = place_register.current(now_ms, skew)?;
    let place = Place::decode(current.value()).ok()?;
    let from = |p: Place, v: &VerifiedRegisterValue| Resolved {
        kind: p.kind,
        parent: p.parent,
        position: p.position,
        prev_parent: p.prev_parent,
        prev_position: p.prev_position,
        rank: rank(v),
        revived: false,
    };
    if !place.is_deleted() {
        return Some(from(place, current));
    }
    // Deleted: revived by any visible value of the node the deletion did not supersede.
    let unseen =
        |v: &&VerifiedRegisterValue| v.id() != current.id() && current.supersedes().binary_search(&v.id()).is_err();
    let concurrent_move = visible(regs.place, now_ms, skew)
        .filter(unseen)
        .filter_map(|v| Place::decode(v.value()).ok().filter(|p| !p.is_deleted()).map(|p| (v, p)))
        .max_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)));
    if let Some((v, p)) = concurrent_move {
        return Some(Resolved { revived: true, ..from(p, v) });
    }
    let edited = visible(regs.title, now_ms, skew).chain(visible(regs.url, now_ms, skew)).any(|v| unseen(&v));
    if edited {
        return Some(Resolved {
            kind: place.kind,
            parent: place.prev_parent,
            position: place.prev_position.clone(),
            prev_parent: place.prev_parent,
            prev_position: place.prev_position,
            rank: rank(current),
            revived: true,
        });
    }
    None
}

/// Builds the tree from every `b/…` register.
pub(crate) fn materialize<'a>(
    registers: impl Iterator<Item = (&'a str, &'a Register)>,
    now_ms: u64,
    skew: u64,
) -> BookmarkTree {
    // Each node's registers, by ID. The registers come in path order, so a node's fields are
    // adjacent ("b/<id>/place", "…/title", "…/url"): its ID is parsed once, and the nodes are
    // gathered in a vector and sorted once rather than looked up in a map per register (a cold
    // open's first bookmark query builds this).
    let mut by_node: Vec<(ItemId, NodeRegisters<'a>)> = Vec::new();
    let mut regular = true;
    // The last ID text seen, and whether it named a node (not a root, not the deleted marker).
    let mut last: Option<(&str, bool)> = None;
    for (path, register) in registers {
        let Some(("b", text, field)) = crate::model::schema::path::split(path) else { continue };
        let is_node = match last {
            Some((seen, is_node)) if seen == text => is_node,
            _ => {
                let id = text.parse::<ItemId>().ok().filter(|id| !id.is_root() && *id != ItemId::DELETED);
                if let Some(id) = id {
                    by_node.push((id, NodeRegisters::default()));
                }
                last = Some((text, id.is_some()));
                id.is_some()
            }
        };
        if !is_node {
            continue;
        }
        if register.values().any(|v| !v.hlc().is_visible_at(now_ms, skew)) {
            regular = false;
        }
        let Some((_, entry)) = by_node.last_mut() else { continue };
        match field {
            "place" => entry.place = Some(register),
            "title" => entry.title = Some(register),
            "url" => entry.url = Some(register),
            _ => {}
        }
    }
    // Two spellings of one ID (either case decodes) make two entries: merged, the later path's
    // field winning, as a map entry overwritten in path order would (the sort is stable).
    by_node.sort_by_key(|(id, _)| *id);
    by_node.dedup_by(|(later_id, later), (id, kept)| {
        let same = later_id == id;
        if same {
            kept.place = later.place.or(kept.place);
            kept.title = later.title.or(kept.title);
            kept.url = later.url.or(kept.url);
        }
        same
    });

    // Every node's last known place, live or not, for walking up from deleted folders.
    let mut last_parent: BTreeMap<ItemId, ItemId> = BTreeMap::new();
    let mut live: BTreeMap<ItemId, Resolved> = BTreeMap::new();
    for (id, regs) in &by_node {
        if let Some(current) = regs.place.and_then(|r| r.current(now_ms, skew))
            && let Ok(p) = Place::decode(current.value())
        {
            last_parent.insert(*id, if p.is_deleted() { p.prev_parent } else { p.parent });
        }
        if let Some(resolved) = resolve_node(regs, now_ms, skew) {
            regular &= !resolved.revived;
            live.insert(*id, resolved);
        }
    }

    let is_folder = |live: &BTreeMap<ItemId, Resolved>, id: &ItemId| {
        id.is_root() || live.get(id).is_some_and(|r| r.kind == NodeKind::Folder)
    };
    // The nearest surviving folder at or above `start`.
    let surviving = |live: &BTreeMap<ItemId, Resolved>, start: ItemId| -> ItemId {
        let mut current = start;
        for _ in 0..=last_parent.len() {
            if is_folder(live, &current) {
                return current;
            }
            if live.contains_key(&current) {
                // A live non-folder cannot hold children.
                return ItemId::OTHER;
            }
            match last_parent.get(&current) {
                Some(up) => current = *up,
                None => return ItemId::OTHER,
            }
        }
        ItemId::OTHER
    };

    let mut parent: BTreeMap<ItemId, ItemId> = BTreeMap::new();
    let ids: Vec<ItemId> = live.keys().copied().collect();
    for id in &ids {
        if let Some(r) = live.get(id) {
            let p = if r.parent == *id { r.prev_parent } else { r.parent };
            let home = surviving(&live, p);
            regular &= home == r.parent;
            parent.insert(*id, home);
        }
    }

    // Undo the latest move of each cycle until there are none.
    let mut undone: BTreeSet<ItemId> = BTreeSet::new();
    for _ in 0..=ids.len() {
        let Some(cycle) = find_cycle(&parent) else { break };
        let Some(latest) = cycle.iter().filter_map(|id| live.get(id).map(|r| (r.rank, *id))).max().map(|(_, id)| id)
        else {
            break;
        };
        let fallback = if undone.insert(latest) {
            live.get(&latest).map_or(ItemId::OTHER, |r| r.prev_parent)
        } else {
            ItemId::OTHER
        };
        let mut home = surviving(&live, fallback);
        if home == latest || cycle_through(&parent, home, latest) {
            home = ItemId::OTHER;
        }
        parent.insert(latest, home);
        if let Some(r) = live.get_mut(&latest)
            && home != r.parent
        {
            r.position = r.prev_position.clone();
        }
    }

    // `live` is consumed as the nodes are built, so the two never stand in full side by side
    // (this step was a cold open's peak in wasm).
    let mut nodes: BTreeMap<ItemId, BookmarkNode> = BTreeMap::new();
    for (id, r) in live {
        let regs = by_node.binary_search_by_key(&id, |(id, _)| *id).ok().and_then(|i| by_node.get(i)).map(|(_, r)| r);
        let text = |reg: Option<&Register>, max, what| {
            reg.and_then(|reg| reg.current(now_ms, skew)).and_then(|v| decode_text(v.value(), max, what).ok())
        };
        let title = text(regs.and_then(|r| r.title), MAX_TITLE_LEN, "title").unwrap_or_default();
        let url = if r.kind == NodeKind::Bookmark { text(regs.and_then(|r| r.url), MAX_URL_LEN, "url") } else { None };
        nodes.insert(
            id,
            BookmarkNode {
                id,
                kind: r.kind,
                title,
                url,
                parent: parent.get(&id).copied().unwrap_or(ItemId::OTHER),
                children: Vec::new(),
                position: r.position,
            },
        );
    }
    let mut grouped: BTreeMap<ItemId, Vec<(Position, ItemId)>> = BTreeMap::new();
    for node in nodes.values() {
        grouped.entry(node.parent).or_default().push((node.position.clone(), node.id));
    }
    let mut roots: BTreeMap<ItemId, Vec<ItemId>> = BTreeMap::new();
    roots.extend(ItemId::ROOTS.iter().map(|r| (*r, Vec::new())));
    for (p, mut children) in grouped {
        children.sort();
        let ordered: Vec<ItemId> = children.into_iter().map(|(_, id)| id).collect();
        if p.is_root() {
            roots.insert(p, ordered);
        } else if let Some(node) = nodes.get_mut(&p) {
            node.children = ordered;
        }
    }
    regular &= undone.is_empty();
    BookmarkTree { nodes, roots, regular }
}

/// Finds one cycle in the parent map, scanning nodes in ID order.
fn find_cycle(parent: &BTreeMap<ItemId, ItemId>) -> Option<Vec<ItemId>> {
    let mut done: BTreeSet<ItemId> = BTreeSet::new();
    for start in parent.keys() {
        if done.contains(start) {
            continue;
        }
        let mut path: Vec<ItemId> = Vec::new();
        let mut on_path: BTreeSet<ItemId> = BTreeSet::new();
        let mut current = *start;
        loop {
            if done.contains(&current) {
                break;
            }
            if on_path.contains(&current) {
                let at = path.iter().position(|id| *id == current).unwrap_or(0);
                return Some(path.split_off(at));
            }
            on_path.insert(current);
            path.push(current);
            match parent.get(&current) {
                Some(p) => current = *p,
                None => break,
            }
        }
        done.extend(path);
    }
    None
}

/// Whether following parents from `from` reaches `target`.
fn cycle_through(parent: &BTreeMap<ItemId, ItemId>, from: ItemId, target: ItemId) -> bool {
    let mut current = from;
    for _ in 0..=parent.len() {
        if current == target {
            return true;
        }
        match parent.get(&current) {
            Some(p) => current = *p,
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use rand_chacha::rand_core::SeedableRng;

    use super::*;
    use crate::hlc::Timestamp;
    use crate::identity::DeviceSecretKey;
    use crate::model::schema::encode_text;

    #[test]
    fn a_node_whose_id_is_spelled_in_two_cases_is_one_node() {
        // Either case of an ID parses, so a device can write one node's fields under two paths;
        // the tree holds one node with the fields of both (the later path's where both have one).
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let author = std::sync::Arc::new(DeviceSecretKey::generate(&mut rng).public());
        let id = ItemId::random(&mut rng);
        let lower = id.to_string();
        let upper = lower.to_ascii_uppercase();
        let place = Place {
            kind: NodeKind::Bookmark,
            parent: ItemId::TOOLBAR,
            position: Position::first(),
            prev_parent: ItemId::TOOLBAR,
            prev_position: Position::first(),
        };
        let at = Timestamp::from_wall_ms(1_000);
        let write = |path: String, value: Vec<u8>| {
            let mut register = Register::new();
            register.write(&author, &path, value, at).map(|_| (path, register))
        };
        let mut registers = [
            write(format!("b/{upper}/title"), encode_text("upper")).unwrap(),
            write(format!("b/{upper}/url"), encode_text("https://example.org/")).unwrap(),
            write(format!("b/{lower}/place"), place.encode()).unwrap(),
            write(format!("b/{lower}/title"), encode_text("lower")).unwrap(),
        ];
        registers.sort_by(|a, b| a.0.cmp(&b.0));
        let tree = materialize(registers.iter().map(|(p, r)| (p.as_str(), r)), 2_000, 0);
        assert_eq!(tree.len(), 1);
        let node = tree.get(&id).unwrap();
        assert_eq!(node.title, "lower");
        assert_eq!(node.url.as_deref(), Some("https://example.org/"));
        assert_eq!(tree.children(&ItemId::TOOLBAR), &[id]);
    }
}
