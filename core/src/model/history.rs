//! Browsing history: insert-only visits, and deletions that remove the data everywhere.
//!
//! History is append-heavy and must be *really* deletable, so it does not live in the `yrs`
//! document (where deleted content lingers in every past update). Each visit is an envelope
//! **attachment**: the signed envelope commits to its hash, and the visit itself can be redacted
//! from every stored and relayed copy without breaking the signature. A deletion is a signed
//! [`HistoryDeletion`] (by visit IDs, by URL, by time range, or everything up to a time) that every
//! replica applies to what it holds *and* keeps as a tombstone for visits that arrive later, so
//! the result does not depend on the order things arrive in. A deletion by URL names the URL only
//! by a keyed hash, so the tombstone does not carry the URL it erases.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::codec::{Reader, Writer};
use crate::envelope::EnvelopeId;
use crate::error::DecodeError;
use crate::identity::{DeviceId, IdentityId};
use crate::model::schema::{ItemId, MAX_TITLE_LEN, MAX_URL_LEN};

const VISIT_FORMAT: u8 = 0x61;
/// The bytes of a visit attachment that [`Visit::peek`] reads: format, ID, time.
pub(crate) const VISIT_HEAD_LEN: usize = 1 + 16 + 8;
/// How this device stores (and, once stored, holds) a history envelope of many visits: the
/// heads apart, the URLs and titles deflated 64 visits to a block. Measured on the realistic
/// profile's visits: 129.7 bytes a visit plain, 68.5 packed (blocks of 32: 72.6, of 256: 65.2);
/// a query inflates ~6 KB per block it reads.
pub(crate) const VISIT_PACKING: crate::envelope::PackSpec =
    crate::envelope::PackSpec { head_len: VISIT_HEAD_LEN as u8, per_block: 64 };
/// Fewer visits than this in one envelope (visits recorded as they happen) are stored plain:
/// deflating a handful gains little and costs every write.
pub(crate) const PACK_MIN_VISITS: usize = 16;
const OP_VISITS: u8 = 1;
const OP_DELETE: u8 = 2;

/// How a visit came about (as browsers record it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// Followed a link.
    Link,
    /// Typed into the address bar.
    Typed,
    /// Opened from a bookmark.
    Bookmark,
    /// Reloaded.
    Reload,
    /// Submitted a form.
    Form,
    /// Anything else.
    Other,
}

impl Transition {
    fn to_byte(self) -> u8 {
        match self {
            Transition::Link => 1,
            Transition::Typed => 2,
            Transition::Bookmark => 3,
            Transition::Reload => 4,
            Transition::Form => 5,
            Transition::Other => 0,
        }
    }

    fn from_byte(b: u8) -> Result<Self, DecodeError> {
        Ok(match b {
            0 => Transition::Other,
            1 => Transition::Link,
            2 => Transition::Typed,
            3 => Transition::Bookmark,
            4 => Transition::Reload,
            5 => Transition::Form,
            tag => return Err(DecodeError::UnknownTag { what: "visit transition", tag }),
        })
    }
}

/// One visit to a page.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Visit {
    /// Stable ID.
    #[serde(serialize_with = "crate::model::json::item_id")]
    pub id: ItemId,
    /// The page.
    pub url: String,
    /// Its title at the time.
    pub title: String,
    /// When, in Unix ms.
    pub visited_at_ms: u64,
    /// How.
    pub transition: Transition,
    /// The device it happened on.
    #[serde(serialize_with = "crate::model::json::device_id")]
    pub device: DeviceId,
}

impl Visit {
    /// Encodes the visit as an attachment (the device is the envelope's author).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.url.len().saturating_add(self.title.len()).saturating_add(32));
        w.u8(VISIT_FORMAT)
            .raw(self.id.as_bytes())
            .u64(self.visited_at_ms)
            .u8(self.transition.to_byte())
            .bytes_u16(self.url.as_bytes())
            .bytes_u16(self.title.as_bytes());
        w.into_bytes()
    }

    /// The ID and time of an encoded visit, without decoding its text: for this device's own,
    /// integrity-checked storage (a cold open indexes 100,000 visits this way), and for the index
    /// to read the keys of visits it holds (each was fully decoded, or came from that storage).
    pub(crate) fn peek(bytes: &[u8]) -> Result<(ItemId, u64), DecodeError> {
        let mut r = Reader::new(bytes);
        r.format("visit", VISIT_FORMAT)?;
        let id = ItemId::read(&mut r, "visit id")?;
        Ok((id, r.u64("visit time")?))
    }

    pub(crate) fn decode(bytes: &[u8], device: DeviceId) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.format("visit", VISIT_FORMAT)?;
        let id = ItemId::read(&mut r, "visit id")?;
        let visited_at_ms = r.u64("visit time")?;
        let transition = Transition::from_byte(r.u8("visit transition")?)?;
        let url = r.str_u16(MAX_URL_LEN, "visit url")?.to_owned();
        let title = r.str_u16(MAX_TITLE_LEN, "visit title")?.to_owned();
        r.finish("visit")?;
        Ok(Self { id, url, title, visited_at_ms, transition, device })
    }
}

/// What a history deletion removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryDeletion {
    /// These visits.
    Visits(Vec<ItemId>),
    /// Every visit to the URL whose keyed hash this is, made up to `up_to_ms`.
    Url {
        /// `url_key(identity, url)`.
        url_key: [u8; 32],
        /// Inclusive upper bound of visit times.
        up_to_ms: u64,
    },
    /// Every visit made in `[from_ms, to_ms]`.
    Range {
        /// Inclusive start.
        from_ms: u64,
        /// Inclusive end.
        to_ms: u64,
    },
    /// Every visit made up to `up_to_ms`.
    All {
        /// Inclusive upper bound.
        up_to_ms: u64,
    },
}

/// Most visit IDs one deletion may name.
const MAX_DELETED_IDS: u32 = 65_536;

/// The keyed hash that names a URL in a deletion, so the tombstone does not carry the URL.
pub(crate) fn url_key(identity: &IdentityId, url: &str) -> [u8; 32] {
    let key = blake3::derive_key("kathon-sync 2026-11 history url key v1", identity.as_bytes());
    *blake3::keyed_hash(&key, url.as_bytes()).as_bytes()
}

impl HistoryDeletion {
    /// Whether this deletion covers the visit `id` at `at_ms` (whose URL, only needed for a URL
    /// deletion, `visit` reads).
    fn matches(&self, identity: &IdentityId, id: ItemId, at_ms: u64, visit: &dyn Fn() -> Option<Visit>) -> bool {
        match self {
            HistoryDeletion::Visits(ids) => ids.binary_search(&id).is_ok(),
            HistoryDeletion::Url { url_key: key, up_to_ms } => {
                at_ms <= *up_to_ms && visit().is_some_and(|v| url_key(identity, &v.url) == *key)
            }
            HistoryDeletion::Range { from_ms, to_ms } => (*from_ms..=*to_ms).contains(&at_ms),
            HistoryDeletion::All { up_to_ms } => at_ms <= *up_to_ms,
        }
    }
}

/// The payload of a history envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HistoryOp {
    /// The visits are the envelope's attachments.
    Visits,
    /// A deletion.
    Delete(HistoryDeletion),
}

impl HistoryOp {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            HistoryOp::Visits => {
                w.u8(OP_VISITS);
            }
            HistoryOp::Delete(deletion) => {
                w.u8(OP_DELETE);
                match deletion {
                    HistoryDeletion::Visits(ids) => {
                        w.u8(1).u32(u32::try_from(ids.len()).unwrap_or(u32::MAX));
                        for id in ids {
                            w.raw(id.as_bytes());
                        }
                    }
                    HistoryDeletion::Url { url_key, up_to_ms } => {
                        w.u8(2).raw(url_key).u64(*up_to_ms);
                    }
                    HistoryDeletion::Range { from_ms, to_ms } => {
                        w.u8(3).u64(*from_ms).u64(*to_ms);
                    }
                    HistoryDeletion::All { up_to_ms } => {
                        w.u8(4).u64(*up_to_ms);
                    }
                }
            }
        }
        w.into_bytes()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let op = match r.u8("history op")? {
            OP_VISITS => HistoryOp::Visits,
            OP_DELETE => HistoryOp::Delete(match r.u8("history deletion")? {
                1 => {
                    let count = r.u32("deleted visit count")?;
                    let count = r.check_len(count.into(), MAX_DELETED_IDS.into(), "deleted visit count")?;
                    r.check_len(16u64.saturating_mul(count as u64), 16 * u64::from(MAX_DELETED_IDS), "deleted visits")?;
                    let mut ids = Vec::with_capacity(count);
                    for _ in 0..count {
                        let id = ItemId::read(&mut r, "deleted visit")?;
                        if ids.last().is_some_and(|last| *last >= id) {
                            return Err(DecodeError::NonCanonical { what: "deleted visits", reason: "not ascending" });
                        }
                        ids.push(id);
                    }
                    HistoryDeletion::Visits(ids)
                }
                2 => HistoryDeletion::Url { url_key: r.array("deleted url key")?, up_to_ms: r.u64("deleted up to")? },
                3 => {
                    let from_ms = r.u64("deleted from")?;
                    let to_ms = r.u64("deleted to")?;
                    if to_ms < from_ms {
                        return Err(DecodeError::NonCanonical {
                            what: "deleted range",
                            reason: "ends before it starts",
                        });
                    }
                    HistoryDeletion::Range { from_ms, to_ms }
                }
                4 => HistoryDeletion::All { up_to_ms: r.u64("deleted up to")? },
                tag => return Err(DecodeError::UnknownTag { what: "history deletion", tag }),
            }),
            tag => return Err(DecodeError::UnknownTag { what: "history op", tag }),
        };
        r.finish("history op")?;
        Ok(op)
    }
}

/// Where a visit's bytes are stored: which envelope, which attachment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct AttachmentRef {
    pub(crate) envelope: EnvelopeId,
    pub(crate) index: u32,
}

/// Reads a stored visit back: its bytes live in the envelope log, as an attachment.
pub(crate) trait VisitSource {
    /// The visit stored at `at`, if it is there (not redacted) and decodes.
    fn visit(&self, at: &AttachmentRef) -> Option<Visit>;

    /// The ID and time of the visit stored at `at`, without decoding its text.
    fn peek(&self, at: &AttachmentRef) -> Option<(ItemId, u64)> {
        self.visit(at).map(|v| (v.id, v.visited_at_ms))
    }
}

impl<T: VisitSource + ?Sized> VisitSource for &T {
    fn visit(&self, at: &AttachmentRef) -> Option<Visit> {
        (**self).visit(at)
    }
    fn peek(&self, at: &AttachmentRef) -> Option<(ItemId, u64)> {
        (**self).peek(at)
    }
}

/// Where an indexed visit's bytes are: a slot in [`HistoryStore::envelopes`] (not the envelope's
/// 32-byte ID) and the attachment's index. It names the visit within a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Stored {
    envelope: u32,
    index: u32,
}

/// An entry of a settled index, 16 bytes: the leading 8 bytes of the visit's sort key, and where
/// the visit is. The key itself is not kept (the envelope log holds it anyway): two entries that
/// tie on the lead — two visits in one millisecond, two IDs that share 8 bytes — are told apart
/// by reading their keys from where they are stored.
#[derive(Clone, Copy, Debug)]
struct Slot {
    lead: u64,
    at: Stored,
}

/// How an index orders visits.
trait Order {
    /// The full sort key.
    type Key: Ord + Copy + core::fmt::Debug;
    fn key(id: ItemId, at_ms: u64) -> Self::Key;
    /// The key's leading 8 bytes, which decide almost every comparison.
    fn lead(key: &Self::Key) -> u64;
}

/// By visit ID (lookups, deduplication, the canonical encoding).
#[derive(Clone, Copy, Debug)]
struct ById;

impl Order for ById {
    type Key = ItemId;
    fn key(id: ItemId, _: u64) -> ItemId {
        id
    }
    fn lead(key: &ItemId) -> u64 {
        key.as_bytes().first_chunk().map_or(0, |lead| u64::from_be_bytes(*lead))
    }
}

/// By time, then ID (so replicas list visits in one order).
#[derive(Clone, Copy, Debug)]
struct ByTime;

impl Order for ByTime {
    type Key = (u64, ItemId);
    fn key(id: ItemId, at_ms: u64) -> (u64, ItemId) {
        (at_ms, id)
    }
    fn lead(key: &(u64, ItemId)) -> u64 {
        key.0
    }
}

/// Reads indexed visits' keys from where they are stored.
#[derive(Clone, Copy)]
struct Keys<'a> {
    envelopes: &'a [EnvelopeId],
    source: &'a dyn VisitSource,
}

impl Keys<'_> {
    /// The ID and time of an indexed visit.
    fn peek(&self, at: Stored) -> Option<(ItemId, u64)> {
        let envelope = *self.envelopes.get(usize::try_from(at.envelope).ok()?)?;
        self.source.peek(&AttachmentRef { envelope, index: at.index })
    }

    fn key<O: Order>(&self, at: Stored) -> Option<O::Key> {
        self.peek(at).map(|(id, at_ms)| O::key(id, at_ms))
    }

    /// The order of two settled entries. A visit that cannot be read (never the case for an
    /// indexed one) sorts first, consistently.
    fn order<O: Order>(&self, a: &Slot, b: &Slot) -> Ordering {
        a.lead.cmp(&b.lead).then_with(|| self.key::<O>(a.at).cmp(&self.key::<O>(b.at)))
    }

    /// Where a settled entry sorts against a key.
    fn compare<O: Order>(&self, slot: &Slot, key: &O::Key) -> Ordering {
        slot.lead.cmp(&O::lead(key)).then_with(|| self.key::<O>(slot.at).cmp(&Some(*key)))
    }
}

/// Fewest fresh entries an index merges into its settled run (few in unit tests, to merge often).
const MIN_FRESH: usize = if cfg!(test) { 8 } else { 1024 };

/// One order of the visits: a settled run sorted by key (what a cold open builds: 16 bytes a
/// visit, no tree nodes), and a small tree of the entries added since, with their full keys.
/// The tree is merged into the run once it holds a sixteenth as many entries, so each entry is
/// copied a bounded number of times on average and lookups stay logarithmic.
#[derive(Clone, Debug)]
struct Index<O: Order> {
    settled: Vec<Slot>,
    fresh: BTreeMap<O::Key, Stored>,
}

impl<O: Order> Default for Index<O> {
    fn default() -> Self {
        Self { settled: Vec::new(), fresh: BTreeMap::new() }
    }
}

impl<O: Order> Index<O> {
    fn len(&self) -> usize {
        self.settled.len().saturating_add(self.fresh.len())
    }

    fn get(&self, key: &O::Key, keys: Keys<'_>) -> Option<Stored> {
        self.fresh.get(key).copied().or_else(|| self.get_settled(key, keys))
    }

    fn get_settled(&self, key: &O::Key, keys: Keys<'_>) -> Option<Stored> {
        let lead = O::lead(key);
        let start = self.settled.partition_point(|s| s.lead < lead);
        self.settled
            .get(start..)?
            .iter()
            .take_while(|s| s.lead == lead)
            .find(|s| keys.key::<O>(s.at).as_ref() == Some(key))
            .map(|s| s.at)
    }

    /// Makes `slots` the settled run (the index must be empty).
    fn settle(&mut self, mut slots: Vec<Slot>, keys: Keys<'_>) {
        // In place: a stable sort would want a scratch copy as large as the run.
        slots.sort_unstable_by(|a, b| keys.order::<O>(a, b));
        slots.shrink_to_fit();
        self.settled = slots;
    }

    /// Merges the fresh tree into the settled run if it has grown enough.
    fn tidy(&mut self, keys: Keys<'_>) {
        if self.fresh.len() <= MIN_FRESH.max(self.settled.len() / 16) {
            return;
        }
        let fresh = std::mem::take(&mut self.fresh);
        let mut merged = Vec::with_capacity(self.settled.len().saturating_add(fresh.len()));
        let mut settled = std::mem::take(&mut self.settled).into_iter().peekable();
        for (key, at) in fresh {
            while let Some(slot) = settled.next_if(|s| keys.compare::<O>(s, &key) == Ordering::Less) {
                merged.push(slot);
            }
            merged.push(Slot { lead: O::lead(&key), at });
        }
        merged.extend(settled);
        self.settled = merged;
    }

    /// Removes the entries stored at `doomed` (sorted).
    fn remove(&mut self, doomed: &[Stored]) {
        self.settled.retain(|s| doomed.binary_search(&s.at).is_err());
        if self.settled.len() < self.settled.capacity() / 2 {
            self.settled.shrink_to_fit();
        }
        self.fresh.retain(|_, at| doomed.binary_search(at).is_err());
    }

    /// Every entry, in no particular order.
    fn unordered(&self) -> impl Iterator<Item = Stored> + '_ {
        self.settled.iter().map(|s| s.at).chain(self.fresh.values().copied())
    }

    /// Every entry, in key order (`rev`: greatest first), read lazily.
    fn ordered<'a>(&'a self, rev: bool) -> Ordered<'a, O> {
        Ordered { settled: self.settled.as_slice(), fresh: self.fresh.iter(), fresh_head: None, rev }
    }
}

impl Index<ByTime> {
    /// The entries of visits made in `[from_ms, to_ms]`.
    fn during(&self, from_ms: u64, to_ms: u64) -> Vec<Stored> {
        let start = self.settled.partition_point(|s| s.lead < from_ms);
        let settled = self.settled.get(start..).unwrap_or_default().iter().take_while(|s| s.lead <= to_ms);
        let fresh = self.fresh.range((from_ms, ItemId::MIN)..=(to_ms, ItemId::MAX)).map(|(_, at)| *at);
        settled.map(|s| s.at).chain(fresh).collect()
    }
}

/// An index's two parts merged, in order.
struct Ordered<'a, O: Order> {
    settled: &'a [Slot],
    fresh: std::collections::btree_map::Iter<'a, O::Key, Stored>,
    /// The next fresh entry, taken from `fresh` but not yet handed out.
    fresh_head: Option<(&'a O::Key, &'a Stored)>,
    /// Greatest first.
    rev: bool,
}

impl<O: Order> Ordered<'_, O> {
    fn next(&mut self, keys: Keys<'_>) -> Option<Stored> {
        if self.fresh_head.is_none() {
            self.fresh_head = if self.rev { self.fresh.next_back() } else { self.fresh.next() };
        }
        let slot = if self.rev { self.settled.last() } else { self.settled.first() };
        let take_settled = match (slot, self.fresh_head) {
            (None, None) => return None,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(slot), Some((key, _))) => {
                let order = keys.compare::<O>(slot, key);
                if self.rev { order == Ordering::Greater } else { order == Ordering::Less }
            }
        };
        if take_settled {
            let (slot, rest) = if self.rev { self.settled.split_last()? } else { self.settled.split_first()? };
            self.settled = rest;
            Some(slot.at)
        } else {
            self.fresh_head.take().map(|(_, at)| *at)
        }
    }
}

/// The visits a replica holds, and the deletions that keep applying.
///
/// Two indexes of the same visits, one by ID and one by time, each a sorted run of 16-byte
/// entries plus a small tree of recent additions ([`Index`]). The visits' URLs and titles are not
/// indexed: they are decoded from the envelope log when asked for (the log holds them anyway: a
/// second, decoded copy of 100,000 visits was most of a replica's memory).
#[derive(Clone, Debug, Default)]
pub(crate) struct HistoryStore {
    by_id: Index<ById>,
    by_time: Index<ByTime>,
    tombstones: Vec<HistoryDeletion>,
    /// Visits of a restore not indexed yet ([`HistoryStore::stage`]): their entries in each order.
    staged_by_id: Vec<Slot>,
    staged_by_time: Vec<Slot>,
    /// The envelopes visits are stored in, by slot (few: one per batch of visits).
    envelopes: Vec<EnvelopeId>,
    slots: BTreeMap<EnvelopeId, u32>,
}

impl HistoryStore {
    /// The slot-based name of a visit stored at `at`.
    fn stored(&mut self, at: AttachmentRef) -> Stored {
        // A batch's visits share one envelope, most often the latest one.
        if let Some(last) = self.envelopes.len().checked_sub(1)
            && self.envelopes.get(last) == Some(&at.envelope)
        {
            return Stored { envelope: u32::try_from(last).unwrap_or(u32::MAX), index: at.index };
        }
        let envelope = match self.slots.get(&at.envelope) {
            Some(slot) => *slot,
            None => {
                // Past 2^32 envelopes the entry points nowhere (its visit reads as absent).
                let slot = u32::try_from(self.envelopes.len()).unwrap_or(u32::MAX);
                self.envelopes.push(at.envelope);
                self.slots.insert(at.envelope, slot);
                slot
            }
        };
        Stored { envelope, index: at.index }
    }

    /// Where an indexed visit's bytes are.
    fn stored_at(&self, at: Stored) -> Option<AttachmentRef> {
        let envelope = *self.envelopes.get(usize::try_from(at.envelope).ok()?)?;
        Some(AttachmentRef { envelope, index: at.index })
    }

    /// An indexed visit, decoded from where it is stored.
    fn read(&self, at: Stored, source: &dyn VisitSource) -> Option<Visit> {
        source.visit(&self.stored_at(at)?)
    }

    /// Takes visits from this device's own storage without indexing them yet: a cold open stages
    /// all of them and [`HistoryStore::settle`] sorts each index once (inserting 100,000 random
    /// IDs one by one was a third of a cold open in wasm). Tombstones apply as they would have
    /// one by one; the first of two visits with one ID counts.
    pub(crate) fn stage(
        &mut self,
        identity: &IdentityId,
        visits: Vec<(ItemId, u64, AttachmentRef)>,
        source: &dyn VisitSource,
    ) -> Vec<AttachmentRef> {
        let mut redact = Vec::new();
        for (id, at_ms, stored_at) in visits {
            if self.tombstones.iter().any(|t| t.matches(identity, id, at_ms, &|| source.visit(&stored_at))) {
                redact.push(stored_at);
            } else {
                let at = self.stored(stored_at);
                self.staged_by_id.push(Slot { lead: ById::lead(&id), at });
                self.staged_by_time.push(Slot { lead: at_ms, at });
            }
        }
        redact
    }

    /// Indexes the staged visits. Every other operation settles first.
    pub(crate) fn settle(&mut self, source: &dyn VisitSource) {
        if self.staged_by_id.is_empty() {
            return;
        }
        let mut by_id = std::mem::take(&mut self.staged_by_id);
        let by_time = std::mem::take(&mut self.staged_by_time);
        if self.by_id.len() > 0 {
            for slot in by_id {
                if let Some((id, at_ms)) = self.stored_at(slot.at).and_then(|at| source.peek(&at)) {
                    self.index_new(id, at_ms, slot.at, source);
                }
            }
            let keys = Keys { envelopes: &self.envelopes, source };
            self.by_id.tidy(keys);
            self.by_time.tidy(keys);
            return;
        }
        let keys = Keys { envelopes: &self.envelopes, source };
        // Arrival order is `at` (slots are handed out as envelopes arrive): after the key, it
        // puts the first of two visits with one ID first, and the later ones are dropped.
        by_id.sort_unstable_by(|a, b| keys.order::<ById>(a, b).then(a.at.cmp(&b.at)));
        let mut repeated = Vec::new();
        by_id.dedup_by(|later, kept| {
            let same = later.lead == kept.lead && keys.key::<ById>(later.at) == keys.key::<ById>(kept.at);
            if same {
                repeated.push(later.at);
            }
            same
        });
        self.by_id.settle(by_id, keys);
        let mut by_time = by_time;
        if !repeated.is_empty() {
            repeated.sort_unstable();
            by_time.retain(|s| repeated.binary_search(&s.at).is_err());
        }
        self.by_time.settle(by_time, keys);
    }

    /// Indexes a visit unless one with its ID is indexed already (one ID twice, in a batch or
    /// across: the first one counts, on every replica). The caller tidies afterwards.
    fn index_new(&mut self, id: ItemId, at_ms: u64, at: Stored, source: &dyn VisitSource) -> bool {
        if self.by_id.get_settled(&id, Keys { envelopes: &self.envelopes, source }).is_some() {
            return false;
        }
        match self.by_id.fresh.entry(id) {
            std::collections::btree_map::Entry::Occupied(_) => return false,
            std::collections::btree_map::Entry::Vacant(entry) => entry.insert(at),
        };
        self.by_time.fresh.insert((at_ms, id), at);
        true
    }

    /// Adds visits `(id, time, where stored)` whose envelope is already in the log. Returns the
    /// visits added and the attachments to redact because a tombstone already covers them.
    pub(crate) fn add(
        &mut self,
        identity: &IdentityId,
        visits: Vec<(ItemId, u64, AttachmentRef)>,
        source: &dyn VisitSource,
    ) -> (Vec<ItemId>, Vec<AttachmentRef>) {
        self.settle(source);
        let mut added = Vec::new();
        let mut redact = Vec::new();
        for (id, at_ms, stored_at) in visits {
            if self.tombstones.iter().any(|t| t.matches(identity, id, at_ms, &|| source.visit(&stored_at))) {
                redact.push(stored_at);
                continue;
            }
            let at = self.stored(stored_at);
            if self.index_new(id, at_ms, at, source) {
                added.push(id);
            }
        }
        let keys = Keys { envelopes: &self.envelopes, source };
        self.by_id.tidy(keys);
        self.by_time.tidy(keys);
        (added, redact)
    }

    /// Applies a deletion: removes what it covers now and keeps it for later arrivals. Returns the
    /// attachments to redact (the removed visits').
    pub(crate) fn delete(
        &mut self,
        identity: &IdentityId,
        deletion: HistoryDeletion,
        source: &dyn VisitSource,
    ) -> Vec<AttachmentRef> {
        self.settle(source);
        let keys = Keys { envelopes: &self.envelopes, source };
        let mut doomed: Vec<Stored> = match &deletion {
            HistoryDeletion::Visits(ids) => ids.iter().filter_map(|id| self.by_id.get(id, keys)).collect(),
            HistoryDeletion::Range { from_ms, to_ms } => self.by_time.during(*from_ms, *to_ms),
            HistoryDeletion::All { up_to_ms } => self.by_time.during(0, *up_to_ms),
            HistoryDeletion::Url { .. } => {
                // Read in storage order: a packed envelope's blocks are then inflated once each
                // (the source keeps the last one), not once a visit as in ID order.
                let mut candidates: Vec<Stored> = self.by_id.unordered().collect();
                candidates.sort_unstable();
                candidates
                    .into_iter()
                    .filter(|at| {
                        keys.peek(*at).is_some_and(|(id, at_ms)| {
                            deletion.matches(identity, id, at_ms, &|| self.read(*at, source))
                        })
                    })
                    .collect()
            }
        };
        doomed.sort_unstable();
        doomed.dedup();
        if !doomed.is_empty() {
            self.by_id.remove(&doomed);
            self.by_time.remove(&doomed);
        }
        self.tombstones.push(deletion);
        self.normalize_tombstones();
        doomed.iter().filter_map(|at| self.stored_at(*at)).collect()
    }

    /// Keeps the tombstone list small and independent of arrival order: the latest `All` subsumes
    /// every earlier `All`, and every range or URL deletion that ends before it.
    fn normalize_tombstones(&mut self) {
        let all = self
            .tombstones
            .iter()
            .filter_map(|t| if let HistoryDeletion::All { up_to_ms } = t { Some(*up_to_ms) } else { None })
            .max();
        if let Some(all) = all {
            self.tombstones.retain(|t| match t {
                HistoryDeletion::All { up_to_ms } => *up_to_ms == all,
                HistoryDeletion::Range { to_ms, .. } => *to_ms > all,
                HistoryDeletion::Url { up_to_ms, .. } => *up_to_ms > all,
                HistoryDeletion::Visits(_) => true,
            });
        }
        self.tombstones.sort_by_cached_key(|t| HistoryOp::Delete(t.clone()).encode());
        self.tombstones.dedup();
    }

    /// Visits, most recent first, decoded as they are read.
    pub(crate) fn recent<'a, S: VisitSource + 'a>(&'a self, source: S) -> impl Iterator<Item = Visit> + 'a {
        let mut ordered = self.by_time.ordered(true);
        std::iter::from_fn(move || {
            let keys = Keys { envelopes: &self.envelopes, source: &source };
            loop {
                let at = ordered.next(keys)?;
                if let Some(visit) = self.read(at, &source) {
                    return Some(visit);
                }
            }
        })
    }

    /// Visits whose URL or title contains `needle` (case-insensitive), most recent first.
    pub(crate) fn search<'a, S: VisitSource + 'a>(
        &'a self,
        needle: &str,
        source: S,
    ) -> impl Iterator<Item = Visit> + 'a {
        let needle = needle.to_lowercase();
        self.recent(source)
            .filter(move |v| v.url.to_lowercase().contains(&needle) || v.title.to_lowercase().contains(&needle))
    }

    pub(crate) fn get(&self, id: &ItemId, source: &dyn VisitSource) -> Option<Visit> {
        let at = self.by_id.get(id, Keys { envelopes: &self.envelopes, source })?;
        self.read(at, source)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// A canonical encoding of the store (for comparing replicas byte for byte).
    pub(crate) fn encode(&self, source: &dyn VisitSource) -> Vec<u8> {
        let keys = Keys { envelopes: &self.envelopes, source };
        let mut w = Writer::default();
        w.u32(u32::try_from(self.len()).unwrap_or(u32::MAX));
        let mut ordered = self.by_id.ordered(false);
        while let Some(at) = ordered.next(keys) {
            if let Some(visit) = self.read(at, source) {
                w.raw(visit.device.as_bytes()).bytes_u32(&visit.encode());
            }
        }
        let tombstones: Vec<Vec<u8>> = self.tombstones.iter().map(|t| HistoryOp::Delete(t.clone()).encode()).collect();
        w.u32(u32::try_from(tombstones.len()).unwrap_or(u32::MAX));
        for t in &tombstones {
            w.bytes_u32(t);
        }
        w.into_bytes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use crate::identity::{DeviceSecretKey, RootSecretKey};

    struct Source(BTreeMap<AttachmentRef, Visit>);

    impl VisitSource for Source {
        fn visit(&self, at: &AttachmentRef) -> Option<Visit> {
            self.0.get(at).cloned()
        }
    }

    /// An index entry is 16 bytes in each order (100,000 visits: 3.2 MB, where two trees keyed
    /// by ID and by time took 6.0 MB), and a slot reads back as the envelope it was handed out for.
    #[test]
    fn an_index_entry_is_16_bytes_and_names_its_envelope_by_slot() {
        assert_eq!(std::mem::size_of::<Slot>(), 16);
        let mut store = HistoryStore::default();
        let (a, b) =
            (EnvelopeId(crate::hash::Hash::from_bytes([1; 32])), EnvelopeId(crate::hash::Hash::from_bytes([2; 32])));
        let first = store.stored(AttachmentRef { envelope: a, index: 7 });
        let second = store.stored(AttachmentRef { envelope: b, index: 0 });
        let third = store.stored(AttachmentRef { envelope: a, index: 8 });
        assert_eq!((first.envelope, second.envelope, third.envelope), (0, 1, 0));
        assert_eq!(store.stored_at(third), Some(AttachmentRef { envelope: a, index: 8 }));
        assert_eq!(store.stored_at(second), Some(AttachmentRef { envelope: b, index: 0 }));
        assert_eq!(store.stored_at(Stored { envelope: 9, index: 0 }), None);
    }

    /// A batch naming one visit ID twice keeps the first, small or large, so replicas agree.
    #[test]
    fn a_repeated_id_in_a_batch_keeps_the_first() {
        let identity = RootSecretKey::from_secret_bytes(&[1; 32]).public();
        let device = DeviceSecretKey::from_secret_bytes(&[2; 32]).public();
        let envelope = crate::envelope::EnvelopeId(crate::hash::Hash::from_bytes([3; 32]));
        for n in [3u32, 3000] {
            let mut source = Source(BTreeMap::new());
            let mut batch = Vec::new();
            for i in 0..n {
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&(if i == n - 1 { 0 } else { i + 1 }).to_be_bytes());
                id[15] = 9;
                let id = ItemId::from_bytes(id);
                let at = AttachmentRef { envelope, index: i };
                let visit = Visit {
                    id,
                    url: format!("https://example.org/{i}"),
                    title: String::new(),
                    visited_at_ms: 1_000 + u64::from(i),
                    transition: Transition::Link,
                    device,
                };
                source.0.insert(at, visit);
                batch.push((id, 1_000 + u64::from(i), at));
            }
            // The last one repeats the ID of the first.
            let first = batch[0].0;
            batch[n as usize - 1].0 = first;
            source.0.get_mut(&batch[n as usize - 1].2).unwrap().id = first;
            let mut store = HistoryStore::default();
            let (added, redact) = store.add(&identity, batch, &source);
            assert!(redact.is_empty());
            assert_eq!(added.len(), n as usize - 1, "n = {n}");
            assert_eq!(store.len(), n as usize - 1);
            assert_eq!(store.by_time.len(), n as usize - 1);
            if n > MIN_FRESH as u32 {
                assert!(!store.by_id.settled.is_empty(), "a large batch is merged into the settled run");
            }
            assert_eq!(store.get(&first, &source).unwrap().url, "https://example.org/0", "n = {n}");
            assert_eq!(store.recent(&source).count(), n as usize - 1);

            // The same batch staged by a restore, then settled: the same result.
            let mut restored = HistoryStore::default();
            let again: Vec<_> = store
                .by_id
                .unordered()
                .map(|at| {
                    let at = store.stored_at(at).unwrap();
                    let (id, at_ms) = source.peek(&at).unwrap();
                    (id, at_ms, at)
                })
                .collect();
            let mut with_repeat = again.clone();
            with_repeat.push((first, 5, AttachmentRef { envelope, index: n - 1 }));
            assert!(restored.stage(&identity, with_repeat, &source).is_empty());
            restored.settle(&source);
            assert_eq!(restored.len(), n as usize - 1);
            assert_eq!(restored.get(&first, &source).unwrap().url, "https://example.org/0");
            // A deletion during a restore sees the staged visits.
            let mut deleting = HistoryStore::default();
            assert!(deleting.stage(&identity, again, &source).is_empty());
            let redact = deleting.delete(&identity, HistoryDeletion::All { up_to_ms: u64::MAX }, &source);
            assert_eq!((redact.len(), deleting.len()), (n as usize - 1, 0));
        }
    }

    /// The model-based test (proptest is a native-only dev-dependency).
    #[cfg(not(target_arch = "wasm32"))]
    mod model_based {
        use super::*;

        /// What a history store must do, written the plain way: a map by ID, the first visit of an ID
        /// kept, every deletion applied now and to later arrivals.
        #[derive(Default)]
        struct Model {
            visits: BTreeMap<ItemId, (u64, AttachmentRef)>,
            tombstones: Vec<HistoryDeletion>,
        }

        impl Model {
            fn add(
                &mut self,
                identity: &IdentityId,
                batch: &[(ItemId, u64, AttachmentRef)],
                source: &Source,
            ) -> Vec<AttachmentRef> {
                let mut redact = Vec::new();
                for (id, at_ms, at) in batch {
                    if self.tombstones.iter().any(|t| t.matches(identity, *id, *at_ms, &|| source.visit(at))) {
                        redact.push(*at);
                    } else {
                        self.visits.entry(*id).or_insert((*at_ms, *at));
                    }
                }
                redact
            }

            fn delete(
                &mut self,
                identity: &IdentityId,
                deletion: HistoryDeletion,
                source: &Source,
            ) -> Vec<AttachmentRef> {
                let mut redact = Vec::new();
                self.visits.retain(|id, (at_ms, at)| {
                    let doomed = deletion.matches(identity, *id, *at_ms, &|| source.visit(at));
                    if doomed {
                        redact.push(*at);
                    }
                    !doomed
                });
                self.tombstones.push(deletion);
                redact
            }
        }

        #[derive(Clone, Debug)]
        enum Op {
            /// A batch of visits `(ID pick, time, URL pick)`, added or (`staged`) restored.
            Visits {
                visits: Vec<(u16, u8, u8)>,
                staged: bool,
            },
            DeleteIds(Vec<u16>),
            DeleteRange(u8, u8),
            DeleteAll(u8),
            DeleteUrl(u8, u8),
        }

        fn op() -> impl proptest::strategy::Strategy<Value = Op> {
            use proptest::prelude::*;
            prop_oneof![
                6 => (proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 0..40), any::<bool>())
                    .prop_map(|(visits, staged)| Op::Visits { visits, staged }),
                1 => proptest::collection::vec(any::<u16>(), 0..8).prop_map(Op::DeleteIds),
                1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::DeleteRange(a.min(b), a.max(b))),
                1 => (0u8..40).prop_map(Op::DeleteAll),
                1 => (0u8..3, any::<u8>()).prop_map(|(u, t)| Op::DeleteUrl(u, t)),
            ]
        }

        /// IDs from a small pool, many sharing their first 8 bytes, and times from a small range: so
        /// ties on the 16-byte entries' leads, repeats and merges of the fresh tree are common.
        fn pick_id(pick: u16) -> ItemId {
            let mut id = [0u8; 16];
            id[7] = (pick % 5) as u8;
            id[15] = ((pick / 5) % 60) as u8;
            id[0] = 0x10;
            ItemId::from_bytes(id)
        }

        proptest::proptest! {
            #![proptest_config(proptest::test_runner::Config { cases: 256, ..Default::default() })]

            /// The two sorted runs and their fresh trees answer as the plain model does: the same
            /// visits (first of an ID kept), in the same order by time and by ID, the same ones
            /// redacted, through restores, additions, merges and every kind of deletion.
            #[test]
            fn the_index_agrees_with_a_plain_map(ops in proptest::collection::vec(op(), 1..40)) {
                let identity = RootSecretKey::from_secret_bytes(&[1; 32]).public();
                let device = DeviceSecretKey::from_secret_bytes(&[2; 32]).public();
                let urls = ["https://a.example/", "https://b.example/", "https://c.example/"];
                let mut source = Source(BTreeMap::new());
                let mut store = HistoryStore::default();
                let mut model = Model::default();
                for (n, op) in ops.into_iter().enumerate() {
                    let (got, want) = match op {
                        Op::Visits { visits, staged } => {
                            let envelope = EnvelopeId(crate::hash::Hash::from_bytes([n as u8 + 1; 32]));
                            let batch: Vec<_> = visits
                                .iter()
                                .enumerate()
                                .map(|(i, (pick, t, u))| {
                                    let at = AttachmentRef { envelope, index: i as u32 };
                                    let id = pick_id(*pick);
                                    let visit = Visit {
                                        id,
                                        url: urls[*u as usize].to_owned(),
                                        title: String::new(),
                                        visited_at_ms: u64::from(*t),
                                        transition: Transition::Link,
                                        device,
                                    };
                                    source.0.insert(at, visit);
                                    (id, u64::from(*t), at)
                                })
                                .collect();
                            let want = model.add(&identity, &batch, &source);
                            let got = if staged {
                                store.stage(&identity, batch, &source)
                            } else {
                                store.add(&identity, batch, &source).1
                            };
                            (got, want)
                        }
                        other => {
                            let deletion = match other {
                                Op::DeleteIds(picks) => {
                                    let mut ids: Vec<ItemId> = picks.into_iter().map(pick_id).collect();
                                    ids.sort();
                                    ids.dedup();
                                    HistoryDeletion::Visits(ids)
                                }
                                Op::DeleteRange(from, to) => {
                                    HistoryDeletion::Range { from_ms: from.into(), to_ms: to.into() }
                                }
                                Op::DeleteAll(up_to) => HistoryDeletion::All { up_to_ms: up_to.into() },
                                Op::DeleteUrl(u, up_to) => HistoryDeletion::Url {
                                    url_key: url_key(&identity, urls[u as usize]),
                                    up_to_ms: up_to.into(),
                                },
                                Op::Visits { .. } => unreachable!(),
                            };
                            let want = model.delete(&identity, deletion.clone(), &source);
                            (store.delete(&identity, deletion, &source), want)
                        }
                    };
                    let (mut got, mut want) = (got, want);
                    got.sort();
                    want.sort();
                    proptest::prop_assert_eq!(got, want, "redacted, op {}", n);
                    if n % 3 == 0 {
                        store.settle(&source);
                    }
                    store.settle(&source);
                    proptest::prop_assert_eq!(store.len(), model.visits.len());
                    let mut by_time: Vec<(u64, ItemId)> = model.visits.iter().map(|(id, (t, _))| (*t, *id)).collect();
                    by_time.sort();
                    by_time.reverse();
                    let recent: Vec<(u64, ItemId)> = store.recent(&source).map(|v| (v.visited_at_ms, v.id)).collect();
                    proptest::prop_assert_eq!(recent, by_time);
                    let keys = Keys { envelopes: &store.envelopes, source: &source };
                    let mut ordered = store.by_id.ordered(false);
                    let mut by_id = Vec::new();
                    while let Some(at) = ordered.next(keys) {
                        by_id.push((keys.peek(at).unwrap().0, store.stored_at(at).unwrap()));
                    }
                    let want: Vec<_> = model.visits.iter().map(|(id, (_, at))| (*id, *at)).collect();
                    proptest::prop_assert_eq!(by_id, want);
                    for pick in 0..300u16 {
                        let id = pick_id(pick);
                        proptest::prop_assert_eq!(
                            store.get(&id, &source).map(|v| v.visited_at_ms),
                            model.visits.get(&id).map(|(t, _)| *t)
                        );
                    }
                }
            }
        }
    }
}
