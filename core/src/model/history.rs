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

use std::collections::{BTreeMap, BTreeSet};

use crate::codec::{Reader, Writer};
use crate::envelope::EnvelopeId;
use crate::error::DecodeError;
use crate::identity::{DeviceId, IdentityId};
use crate::model::schema::{ItemId, MAX_TITLE_LEN, MAX_URL_LEN};

const VISIT_FORMAT: u8 = 0x61;
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
    /// integrity-checked storage (a cold open indexes 100,000 visits this way).
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
}

impl<T: VisitSource + ?Sized> VisitSource for &T {
    fn visit(&self, at: &AttachmentRef) -> Option<Visit> {
        (**self).visit(at)
    }
}

/// What the index keeps of a visit: its time and where its bytes are. Its URL and title are
/// decoded from the envelope log when asked for (the log holds them anyway: a second, decoded copy
/// of 100,000 visits was most of a replica's memory). The envelope is a slot in
/// [`HistoryStore::envelopes`], not its 32-byte ID: 16 bytes a visit instead of 48.
#[derive(Clone, Copy, Debug)]
struct Entry {
    at_ms: u64,
    envelope: u32,
    index: u32,
}

/// The visits a replica holds, and the deletions that keep applying.
#[derive(Clone, Debug, Default)]
pub(crate) struct HistoryStore {
    visits: BTreeMap<ItemId, Entry>,
    by_time: BTreeSet<(u64, ItemId)>,
    tombstones: Vec<HistoryDeletion>,
    /// Visits of a restore not indexed yet ([`HistoryStore::stage`]), in arrival order.
    staged: Vec<(ItemId, Entry)>,
    /// The envelopes visits are stored in, by slot (few: one per batch of visits).
    envelopes: Vec<EnvelopeId>,
    slots: BTreeMap<EnvelopeId, u32>,
}

impl HistoryStore {
    /// The index entry of a visit stored at `at`.
    fn entry(&mut self, at_ms: u64, at: AttachmentRef) -> Entry {
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
        Entry { at_ms, envelope, index: at.index }
    }

    /// Where an indexed visit's bytes are.
    fn stored_at(&self, entry: &Entry) -> Option<AttachmentRef> {
        let envelope = *self.envelopes.get(usize::try_from(entry.envelope).ok()?)?;
        Some(AttachmentRef { envelope, index: entry.index })
    }

    /// An indexed visit, decoded from where it is stored.
    fn read(&self, entry: &Entry, source: &dyn VisitSource) -> Option<Visit> {
        source.visit(&self.stored_at(entry)?)
    }

    /// Takes visits from this device's own storage without indexing them yet: a cold open stages
    /// all of them and [`HistoryStore::settle`] builds both trees at once from sorted runs
    /// (inserting 100,000 random IDs one by one was a third of a cold open in wasm). Tombstones
    /// apply as they would have one by one; the first of two visits with one ID counts.
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
                let entry = self.entry(at_ms, stored_at);
                self.staged.push((id, entry));
            }
        }
        redact
    }

    /// Indexes the staged visits. Every other operation settles first.
    pub(crate) fn settle(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        let mut staged = std::mem::take(&mut self.staged);
        // Arrival order is (envelope slot, index): slots are handed out as envelopes arrive. An
        // unstable sort on it keeps the first of equal IDs first without a scratch copy.
        staged.sort_unstable_by_key(|(id, e)| (*id, e.envelope, e.index));
        staged.dedup_by_key(|(id, _)| *id);
        staged.retain(|(id, _)| !self.visits.contains_key(id));
        if self.visits.is_empty() {
            // The ID tree first, from the staged buffer itself, so that buffer is gone before
            // the time tree is built: a cold open's peak is this step.
            self.visits = staged.into_iter().collect();
            self.by_time = self.visits.iter().map(|(id, e)| (e.at_ms, *id)).collect();
        } else {
            for (id, entry) in staged {
                self.by_time.insert((entry.at_ms, id));
                self.visits.insert(id, entry);
            }
        }
    }

    /// Adds visits `(id, time, where stored)` whose envelope is already in the log. Returns the
    /// visits added and the attachments to redact because a tombstone already covers them.
    pub(crate) fn add(
        &mut self,
        identity: &IdentityId,
        visits: Vec<(ItemId, u64, AttachmentRef)>,
        source: &dyn VisitSource,
    ) -> (Vec<ItemId>, Vec<AttachmentRef>) {
        self.settle();
        let mut added = Vec::new();
        let mut redact = Vec::new();
        for (id, at_ms, stored_at) in visits {
            if self.tombstones.iter().any(|t| t.matches(identity, id, at_ms, &|| source.visit(&stored_at))) {
                redact.push(stored_at);
                continue;
            }
            // One ID twice (in a batch or across): the first one counts, on every replica.
            if self.visits.contains_key(&id) {
                continue;
            }
            self.by_time.insert((at_ms, id));
            let entry = self.entry(at_ms, stored_at);
            self.visits.insert(id, entry);
            added.push(id);
        }
        (added, redact)
    }

    /// Applies a deletion: removes what it covers now and keeps it for later arrivals. Returns the
    /// removed visits' IDs and the attachments to redact.
    pub(crate) fn delete(
        &mut self,
        identity: &IdentityId,
        deletion: HistoryDeletion,
        source: &dyn VisitSource,
    ) -> (Vec<ItemId>, Vec<AttachmentRef>) {
        self.settle();
        let doomed: Vec<ItemId> = match &deletion {
            HistoryDeletion::Visits(ids) => ids.iter().filter(|id| self.visits.contains_key(id)).copied().collect(),
            HistoryDeletion::Range { from_ms, to_ms } => {
                self.by_time.range((*from_ms, ItemId::MIN)..=(*to_ms, ItemId::MAX)).map(|(_, id)| *id).collect()
            }
            HistoryDeletion::All { up_to_ms } => {
                self.by_time.range(..=(*up_to_ms, ItemId::MAX)).map(|(_, id)| *id).collect()
            }
            HistoryDeletion::Url { .. } => self
                .visits
                .iter()
                .filter(|(id, e)| deletion.matches(identity, **id, e.at_ms, &|| self.read(e, source)))
                .map(|(id, _)| *id)
                .collect(),
        };
        let mut redact = Vec::with_capacity(doomed.len());
        for id in &doomed {
            if let Some(entry) = self.visits.remove(id) {
                self.by_time.remove(&(entry.at_ms, *id));
                redact.extend(self.stored_at(&entry));
            }
        }
        self.tombstones.push(deletion);
        self.normalize_tombstones();
        (doomed, redact)
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
        self.by_time.iter().rev().filter_map(move |(_, id)| self.visits.get(id).and_then(|e| self.read(e, &source)))
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
        self.visits.get(id).and_then(|e| self.read(e, source))
    }

    pub(crate) fn len(&self) -> usize {
        self.visits.len()
    }

    /// A canonical encoding of the store (for comparing replicas byte for byte).
    pub(crate) fn encode(&self, source: &dyn VisitSource) -> Vec<u8> {
        let mut w = Writer::default();
        w.u32(u32::try_from(self.visits.len()).unwrap_or(u32::MAX));
        for entry in self.visits.values() {
            if let Some(visit) = self.read(entry, source) {
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

    /// An index entry is 16 bytes (100,000 visits: 3.2 MB less than with the envelope's ID in
    /// each), and a slot reads back as the envelope it was handed out for.
    #[test]
    fn an_index_entry_names_its_envelope_by_slot() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
        let mut store = HistoryStore::default();
        let (a, b) =
            (EnvelopeId(crate::hash::Hash::from_bytes([1; 32])), EnvelopeId(crate::hash::Hash::from_bytes([2; 32])));
        let first = store.entry(5, AttachmentRef { envelope: a, index: 7 });
        let second = store.entry(6, AttachmentRef { envelope: b, index: 0 });
        let third = store.entry(7, AttachmentRef { envelope: a, index: 8 });
        assert_eq!((first.envelope, second.envelope, third.envelope), (0, 1, 0));
        assert_eq!(store.stored_at(&third), Some(AttachmentRef { envelope: a, index: 8 }));
        assert_eq!(store.stored_at(&second), Some(AttachmentRef { envelope: b, index: 0 }));
        assert_eq!(store.stored_at(&Entry { at_ms: 0, envelope: 9, index: 0 }), None);
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
            let mut store = HistoryStore::default();
            let (added, redact) = store.add(&identity, batch, &source);
            assert!(redact.is_empty());
            assert_eq!(added.len(), n as usize - 1, "n = {n}");
            assert_eq!(store.len(), n as usize - 1);
            assert_eq!(store.by_time.len(), n as usize - 1);
            assert_eq!(store.get(&first, &source).unwrap().url, "https://example.org/0", "n = {n}");
            assert_eq!(store.recent(&source).count(), n as usize - 1);

            // The same batch staged by a restore, then settled: the same result.
            let mut restored = HistoryStore::default();
            let again: Vec<_> =
                store.visits.iter().map(|(id, e)| (*id, e.at_ms, store.stored_at(e).unwrap())).collect();
            let mut with_repeat = again.clone();
            with_repeat.push((first, 5, AttachmentRef { envelope, index: n - 1 }));
            assert!(restored.stage(&identity, with_repeat, &source).is_empty());
            restored.settle();
            assert_eq!(restored.len(), n as usize - 1);
            assert_eq!(restored.get(&first, &source).unwrap().url, "https://example.org/0");
            // A deletion during a restore sees the staged visits.
            let mut deleting = HistoryStore::default();
            assert!(deleting.stage(&identity, again, &source).is_empty());
            let (doomed, redact) = deleting.delete(&identity, HistoryDeletion::All { up_to_ms: u64::MAX }, &source);
            assert_eq!((doomed.len(), redact.len(), deleting.len()), (n as usize - 1, n as usize - 1, 0));
        }
    }
}
