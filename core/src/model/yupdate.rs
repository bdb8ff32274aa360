//! A structural check of `yrs` v1 updates from other devices, before `yrs` ever sees them.
//!
//! `yrs` decodes and integrates updates but does not expose their blocks, and integration cannot
//! be undone. So an update from a peer is first walked here, following the lib0 v1 layout that
//! `yrs::Update::decode_v1` reads, and refused unless it keeps every rule of Kathon's document
//! (see `docs/model.md`):
//!
//! * every inserted block belongs to the **one client ID the envelope declared** (derived from
//!   the author's key and a per-session nonce, so a device cannot insert under another's ID);
//! * that client's blocks start exactly where the document's state vector for it ends (no gaps,
//!   no overlaps) and are contiguous;
//! * every item lives in the author's **own** root map (`a:<author>`), as a map entry, and every
//!   origin, right origin or parent it names is an item of the same author that already exists or
//!   comes earlier in this update — so nothing is left pending and nothing of another author is
//!   touched (integrating a map entry deletes the entry it overwrites);
//! * contents are either one binary value (a signed register value, returned for verification)
//!   or a deleted placeholder; no nested types, text, JSON, embeds or sub-documents;
//! * the delete set names only the author's own, already-known items.
//!
//! Every count and length is checked against the bytes left before anything is allocated.
//!
//! # The document holds the structure, the registers hold the values
//!
//! The values in a replica's `yrs` document were never read back: the register index holds each
//! of them, decoded, and peers get them in the signed envelopes. So the document is given each
//! update **stripped** (`strip_values`): every entry's value (one `Any`, a buffer) replaced by
//! an empty binary, the `Placeholder`, with the items, clocks, origins and deletions left
//! exactly as they were. A local change inserts placeholders too, and the update `yrs` writes for
//! it is **filled** (`fill_values`) with the signed values before it is signed and sent: byte for
//! byte what `yrs` writes for the values themselves (a test checks it against `yrs`). Every
//! replica's document is the same skeleton, and it no longer keeps a second copy of every value:
//! on the realistic profile the document took 9.6 MB natively with the values, 7.5 MB with `null`
//! in their place (`yrs` decodes a `null` into a vector with room for four), 5.7 MB with empty
//! binaries.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::error::DecodeError;

const BLOCK_GC: u8 = 0;
const CONTENT_DELETED: u8 = 1;
const CONTENT_ANY: u8 = 8;
const HAS_ORIGIN: u8 = 0b1000_0000;
const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
const HAS_PARENT_SUB: u8 = 0b0010_0000;
const ANY_BUFFER_TAG: u8 = 116;
const CONTENT_BINARY: u8 = 3;
const CONTENT_KIND: u8 = 0x1f;
/// `yrs` client IDs are 53-bit (values above are silently masked, so they must be refused).
pub(crate) const MAX_CLIENT_ID: u64 = (1 << 53) - 1;

/// Why an update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateRuleError {
    /// The bytes are not a v1 update of the allowed shape.
    #[error("malformed yrs update: {0}")]
    Malformed(#[from] DecodeError),
    /// A block under a client ID other than the one declared.
    #[error("inserts under client {found}, but the envelope declared client {declared}")]
    ForeignClient {
        /// Declared.
        declared: u64,
        /// Found.
        found: u64,
    },
    /// Blocks that do not continue the client's clock exactly.
    #[error("client {client}: blocks start at clock {start}, the document is at {expected}")]
    ClockGap {
        /// The client.
        client: u64,
        /// Where the update starts.
        start: u32,
        /// Where the document is.
        expected: u32,
    },
    /// An item outside the author's own map, or referring to another author's items.
    #[error("an item reaches outside the author's own map ({0})")]
    OutsideOwnMap(&'static str),
    /// Content other than one binary value or a deleted placeholder.
    #[error("an item has content of kind {0}, which the document does not allow")]
    ForbiddenContent(u8),
    /// The delete set names items that are not the author's or do not exist yet.
    #[error("the delete set names items the author cannot delete")]
    ForeignDeletion,
}

/// Where one map entry is in an update: its block's info byte (which names the content's kind),
/// and its content.
#[derive(Debug, Clone)]
pub(crate) struct EntryAt {
    info: usize,
    content: Range<usize>,
}

/// What a valid update contains.
#[derive(Debug, Default)]
pub(crate) struct CheckedUpdate<'a> {
    /// The binary values inserted, in order (each must then verify as a register value).
    pub(crate) values: Vec<&'a [u8]>,
    /// Where each inserted entry is in the update, in order.
    pub(crate) entries: Vec<EntryAt>,
    /// Clock range `[start, end)` inserted for the declared client, if any block was inserted.
    pub(crate) clock_range: Option<(u32, u32)>,
}

/// What the check needs to know about the document.
pub(crate) trait DocView {
    /// Whether `client` belongs to the envelope's author.
    fn is_authors_client(&self, client: u64) -> bool;
    /// The document's next clock for `client` (0 if unknown).
    fn next_clock(&self, client: u64) -> u32;
}

/// A cursor over lib0 v1 bytes (LEB128 unsigned varints, var-strings, var-buffers).
struct Lib0<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Lib0<'a> {
    fn truncated(&self, what: &'static str) -> DecodeError {
        DecodeError::Truncated { what, at: self.pos, needed: 1 }
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or_else(|| self.truncated(what))?;
        self.pos = self.pos.saturating_add(1);
        Ok(b)
    }

    /// An unsigned varint of at most 64 bits in canonical form.
    fn var(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.u8(what)?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(DecodeError::TooLarge { what, len: u64::MAX, max: u64::MAX });
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                if byte == 0 && shift > 0 {
                    return Err(DecodeError::NonCanonical { what, reason: "varint with trailing zero byte" });
                }
                return Ok(value);
            }
        }
        Err(DecodeError::TooLarge { what, len: u64::MAX, max: u64::MAX })
    }

    fn var_u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let v = self.var(what)?;
        u32::try_from(v).map_err(|_| DecodeError::TooLarge { what, len: v, max: u32::MAX.into() })
    }

    /// A count of things that each take at least one byte: bounded by the bytes left.
    fn count(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.var(what)?;
        let left = self.buf.len().saturating_sub(self.pos) as u64;
        if n > left {
            return Err(DecodeError::TooLarge { what, len: n, max: left });
        }
        usize::try_from(n).map_err(|_| DecodeError::TooLarge { what, len: n, max: left })
    }

    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.count(what)?;
        let end = self.pos.checked_add(len).ok_or_else(|| self.truncated(what))?;
        let out = self.buf.get(self.pos..end).ok_or_else(|| self.truncated(what))?;
        self.pos = end;
        Ok(out)
    }

    fn string(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        core::str::from_utf8(self.bytes(what)?).map_err(|_| DecodeError::InvalidUtf8 { what })
    }

    fn client(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let c = self.var(what)?;
        if c > MAX_CLIENT_ID {
            return Err(DecodeError::TooLarge { what, len: c, max: MAX_CLIENT_ID });
        }
        Ok(c)
    }
}

/// Checks `update` against the rules above. `own_map` is the root name of the author's map and
/// `declared` the client ID the envelope declared.
pub(crate) fn check_update<'a>(
    update: &'a [u8],
    own_map: &str,
    declared: u64,
    doc: &dyn DocView,
) -> Result<CheckedUpdate<'a>, UpdateRuleError> {
    check_update_in(update, Some(own_map), declared, doc, Entries::Signed)
}

/// What an update's map entries hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Entries {
    /// Signed register values (an update as sent).
    Signed,
    /// an empty binary (an update as the document holds it).
    Stripped,
}

fn check_update_in<'a>(
    update: &'a [u8],
    own_map: Option<&str>,
    declared: u64,
    doc: &dyn DocView,
    entries: Entries,
) -> Result<CheckedUpdate<'a>, UpdateRuleError> {
    let mut r = Lib0 { buf: update, pos: 0 };
    let mut out = CheckedUpdate::default();
    let clients = r.count("update clients")?;
    if clients > 1 {
        return Err(UpdateRuleError::Malformed(DecodeError::TooLarge {
            what: "update clients",
            len: clients as u64,
            max: 1,
        }));
    }
    // Clocks known for each of the author's clients, as this update advances them.
    let mut next: BTreeMap<u64, u32> = BTreeMap::new();
    let known =
        |next: &BTreeMap<u64, u32>, client: u64| next.get(&client).copied().unwrap_or_else(|| doc.next_clock(client));
    for _ in 0..clients {
        let blocks = r.count("update blocks")?;
        let client = r.client("update client")?;
        if client != declared {
            return Err(UpdateRuleError::ForeignClient { declared, found: client });
        }
        let start = r.var_u32("update clock")?;
        let expected = doc.next_clock(client);
        if start != expected {
            return Err(UpdateRuleError::ClockGap { client, start, expected });
        }
        let mut clock = start;
        for _ in 0..blocks {
            let info_at = r.pos;
            let info = r.u8("block info")?;
            let len = match info {
                BLOCK_GC => {
                    return Err(UpdateRuleError::ForbiddenContent(BLOCK_GC));
                }
                _ => {
                    let refers = |r: &mut Lib0<'_>, next: &BTreeMap<u64, u32>, what: &'static str| {
                        let c = r.client(what)?;
                        let k = r.var_u32(what)?;
                        if !doc.is_authors_client(c) || k >= known(next, c) {
                            return Err(UpdateRuleError::OutsideOwnMap(what));
                        }
                        Ok::<(), UpdateRuleError>(())
                    };
                    if info & HAS_ORIGIN != 0 {
                        refers(&mut r, &next, "origin")?;
                    }
                    if info & HAS_RIGHT_ORIGIN != 0 {
                        refers(&mut r, &next, "right origin")?;
                    }
                    if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
                        match r.var("parent info")? {
                            1 => {
                                let name = r.string("parent name")?;
                                if own_map.is_some_and(|own| own != name) {
                                    return Err(UpdateRuleError::OutsideOwnMap("parent map"));
                                }
                            }
                            0 => return Err(UpdateRuleError::OutsideOwnMap("nested parent")),
                            _ => {
                                return Err(
                                    DecodeError::NonCanonical { what: "parent info", reason: "not 0 or 1" }.into()
                                );
                            }
                        }
                        if info & HAS_PARENT_SUB == 0 {
                            return Err(UpdateRuleError::OutsideOwnMap("not a map entry"));
                        }
                        r.string("map key")?;
                    }
                    let content_at = r.pos;
                    match info & CONTENT_KIND {
                        CONTENT_DELETED => {
                            let n = r.var_u32("deleted length")?;
                            if n == 0 {
                                return Err(
                                    DecodeError::NonCanonical { what: "deleted length", reason: "empty" }.into()
                                );
                            }
                            n
                        }
                        CONTENT_ANY if entries == Entries::Signed => {
                            if r.var("any count")? != 1 || r.u8("any tag")? != ANY_BUFFER_TAG {
                                return Err(UpdateRuleError::ForbiddenContent(CONTENT_ANY));
                            }
                            out.values.push(r.bytes("any buffer")?);
                            out.entries.push(EntryAt { info: info_at, content: content_at..r.pos });
                            1
                        }
                        CONTENT_BINARY if entries == Entries::Stripped => {
                            if !r.bytes("placeholder")?.is_empty() {
                                return Err(UpdateRuleError::ForbiddenContent(CONTENT_BINARY));
                            }
                            out.entries.push(EntryAt { info: info_at, content: content_at..r.pos });
                            1
                        }
                        other => return Err(UpdateRuleError::ForbiddenContent(other)),
                    }
                }
            };
            clock = clock.checked_add(len).ok_or(DecodeError::TooLarge {
                what: "update clock",
                len: u64::from(clock).saturating_add(len.into()),
                max: u32::MAX.into(),
            })?;
            next.insert(client, clock);
        }
        if clock > start {
            out.clock_range = Some((start, clock));
        }
    }
    // The delete set: clients, each with ranges of (clock, len).
    let ds_clients = r.count("delete set clients")?;
    for _ in 0..ds_clients {
        let client = r.client("delete set client")?;
        let ranges = r.count("delete set ranges")?;
        for _ in 0..ranges {
            let start = r.var_u32("delete clock")?;
            let len = r.var_u32("delete length")?;
            let end = start.checked_add(len).ok_or(UpdateRuleError::ForeignDeletion)?;
            if len == 0 || !doc.is_authors_client(client) || end > known(&next, client) {
                return Err(UpdateRuleError::ForeignDeletion);
            }
        }
    }
    if r.pos != update.len() {
        return Err(DecodeError::TrailingBytes { what: "yrs update", count: update.len().saturating_sub(r.pos) }.into());
    }
    Ok(out)
}

/// The binary values of an update this replica already accepted (for audits: which envelope
/// carried a value). `None` if it does not parse as a document update.
pub(crate) fn values_in(update: &[u8]) -> Option<Vec<&[u8]>> {
    check_accepted(update, Entries::Signed).map(|c| c.values)
}

/// Parses an update already accepted (or written here by `yrs`), whatever its client and clock.
fn check_accepted(update: &[u8], entries: Entries) -> Option<CheckedUpdate<'_>> {
    /// Answers as the document did when the update was accepted: the one client's clock started
    /// where the update starts.
    struct Accepted {
        client: u64,
        start: u32,
    }
    impl DocView for Accepted {
        fn is_authors_client(&self, _client: u64) -> bool {
            true
        }
        fn next_clock(&self, client: u64) -> u32 {
            if client == self.client { self.start } else { u32::MAX }
        }
    }
    let mut r = Lib0 { buf: update, pos: 0 };
    let (client, start) = if r.count("update clients").ok()? == 0 {
        (0, 0)
    } else {
        r.count("update blocks").ok()?;
        (r.client("update client").ok()?, r.var_u32("update clock").ok()?)
    };
    let view = Accepted { client, start };
    // The map name was checked when the update was accepted; any name is read here.
    check_update_in(update, None, client, &view, entries).ok()
}

/// An accepted update (a document-update envelope's payload after its session nonce) as a
/// replica's document holds it: every entry's value replaced by an empty binary. `None` if it does not
/// parse as a document update. For tools that measure the document; replicas strip as they check.
pub fn held_form(update: &[u8]) -> Option<Vec<u8>> {
    check_accepted(update, Entries::Signed).map(|checked| strip_values(update, &checked))
}

/// `update` (checked: `checked` is what [`check_update`] found in it) as the document holds it:
/// every entry's value replaced by an empty binary.
pub(crate) fn strip_values(update: &[u8], checked: &CheckedUpdate<'_>) -> Vec<u8> {
    let values = checked.entries.iter().map(|at| at.content.len()).sum::<usize>();
    let mut out = Vec::with_capacity(update.len().saturating_sub(values).saturating_add(checked.entries.len()));
    rewrite(update, &checked.entries, &mut out, CONTENT_BINARY, |_, out| out.push(0));
    out
}

/// The update `yrs` wrote for [`Placeholder`] entries (a local change; see the module docs), with
/// the entries' `values` in their place, in order: the update to sign and send.
pub(crate) fn fill_values(stripped: &[u8], values: &[Vec<u8>]) -> Result<Vec<u8>, UpdateRuleError> {
    let checked =
        check_accepted(stripped, Entries::Stripped).ok_or(UpdateRuleError::Malformed(DecodeError::NonCanonical {
            what: "local yrs update",
            reason: "unexpected shape",
        }))?;
    if checked.entries.len() != values.len() {
        return Err(UpdateRuleError::Malformed(DecodeError::NonCanonical {
            what: "local yrs update",
            reason: "not one entry per value",
        }));
    }
    let added = values.iter().map(|v| v.len().saturating_add(12)).sum::<usize>();
    let mut out = Vec::with_capacity(stripped.len().saturating_add(added));
    rewrite(stripped, &checked.entries, &mut out, CONTENT_ANY, |i, out| {
        let value = values.get(i).map(Vec::as_slice).unwrap_or_default();
        out.extend_from_slice(&[1, ANY_BUFFER_TAG]); // one `Any`: a buffer
        write_var(out, u64::try_from(value.len()).unwrap_or(u64::MAX));
        out.extend_from_slice(value);
    });
    Ok(out)
}

/// Copies `update` into `out` with each of `entries` (ascending, within `update`) made of kind
/// `kind` and its content written by `content(i, out)`.
fn rewrite(
    update: &[u8],
    entries: &[EntryAt],
    out: &mut Vec<u8>,
    kind: u8,
    mut content: impl FnMut(usize, &mut Vec<u8>),
) {
    let mut from = 0;
    for (i, at) in entries.iter().enumerate() {
        // The checker's own offsets into this very buffer, ascending: never otherwise.
        debug_assert!(from <= at.info && at.info < at.content.start && at.content.end <= update.len());
        out.extend_from_slice(update.get(from..at.info).unwrap_or_default());
        let info = update.get(at.info).copied().unwrap_or_default();
        out.push((info & !CONTENT_KIND) | kind);
        out.extend_from_slice(update.get(at.info.saturating_add(1)..at.content.start).unwrap_or_default());
        content(i, out);
        from = at.content.end;
    }
    out.extend_from_slice(update.get(from..).unwrap_or_default());
}

/// What a replica's document holds in a map entry in place of its value: an empty binary (the
/// lightest content `yrs` has: no allocation for it once decoded).
#[derive(Debug)]
pub(crate) struct Placeholder;

impl yrs::block::Prelim for Placeholder {
    type Return = yrs::block::Unused;

    fn into_content(self, _txn: &mut yrs::TransactionMut<'_>) -> (yrs::block::ItemContent, Option<Self>) {
        (yrs::block::ItemContent::Binary(Vec::new()), None)
    }

    fn integrate(self, _txn: &mut yrs::TransactionMut<'_>, _inner_ref: yrs::branch::BranchPtr) {}
}

/// A lib0 unsigned varint.
fn write_var(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let low = value.to_le_bytes()[0] & 0x7f;
        value >>= 7;
        if value == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]

    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{Any, Doc, Map, ReadTxn, Transact};

    /// Writes `entries` into `doc`'s map `a:x` in one transaction, as values or as an empty binary.
    fn write(doc: &Doc, entries: &[(&str, Vec<u8>)], values: bool) -> Vec<u8> {
        let map = doc.get_or_insert_map("a:x");
        let mut txn = doc.transact_mut();
        for (key, value) in entries {
            if values {
                map.insert(&mut txn, *key, Any::from(value.clone()));
            } else {
                map.insert(&mut txn, *key, Placeholder);
            }
        }
        txn.encode_update_v1()
    }

    #[test]
    fn a_filled_update_is_byte_for_byte_what_yrs_writes_for_the_values() {
        let signed = Doc::with_client_id(7);
        let stripped = Doc::with_client_id(7);
        let long = vec![0xab; 300]; // a two-byte length
        let rounds: Vec<Vec<(&str, Vec<u8>)>> = vec![
            vec![("b/1/title", b"one".to_vec()), ("b/1/url", b"https://a".to_vec()), ("b/2/title", Vec::new())],
            // Overwrites: these entries name an origin, not their key.
            vec![("b/1/title", long.clone()), ("b/3/title", b"three".to_vec()), ("b/2/title", vec![0; 127])],
            vec![("b/1/title", vec![1; 128]), ("b/1/url", long)],
        ];
        for entries in rounds {
            let sent = write(&signed, &entries, true);
            let held = write(&stripped, &entries, false);
            let values: Vec<Vec<u8>> = entries.iter().map(|(_, v)| v.clone()).collect();
            assert_eq!(fill_values(&held, &values).unwrap(), sent);
            let checked = check_accepted(&sent, Entries::Signed).unwrap();
            assert_eq!(checked.values, values.iter().map(Vec::as_slice).collect::<Vec<_>>());
            assert_eq!(strip_values(&sent, &checked), held);
        }
        // The two documents differ only in what their entries hold.
        let signed_state = signed.transact().encode_state_as_update_v1(&Default::default());
        let stripped_state = stripped.transact().encode_state_as_update_v1(&Default::default());
        let checked = check_accepted(&signed_state, Entries::Signed).unwrap();
        assert_eq!(strip_values(&signed_state, &checked), stripped_state);
    }

    #[test]
    fn a_later_session_overwriting_an_earlier_ones_entries_fills_the_same() {
        // Session 7 writes; both documents take its update (the held one stripped); session 8 of
        // the same device then overwrites: origins and a delete set naming client 7.
        let first: Vec<(&str, Vec<u8>)> = vec![("p/1/username", b"ada".to_vec()), ("p/1/notes", vec![7; 200])];
        let sent = write(&Doc::with_client_id(7), &first, true);
        let checked = check_accepted(&sent, Entries::Signed).unwrap();
        let held = strip_values(&sent, &checked);
        let signed = Doc::with_client_id(8);
        let stripped = Doc::with_client_id(8);
        signed.transact_mut().apply_update(yrs::Update::decode_v1(&sent).unwrap()).unwrap();
        stripped.transact_mut().apply_update(yrs::Update::decode_v1(&held).unwrap()).unwrap();
        let second: Vec<(&str, Vec<u8>)> = vec![("p/1/notes", Vec::new()), ("p/1/username", b"lovelace".to_vec())];
        let sent = write(&signed, &second, true);
        let values: Vec<Vec<u8>> = second.iter().map(|(_, v)| v.clone()).collect();
        assert_eq!(fill_values(&write(&stripped, &second, false), &values).unwrap(), sent);
    }

    #[test]
    fn one_key_written_twice_in_a_transaction_fills_the_same() {
        // `seal` publishes one value per path, but the rewrite does not depend on it.
        let entries: Vec<(&str, Vec<u8>)> =
            vec![("b/1/title", b"draft".to_vec()), ("b/2/title", b"x".to_vec()), ("b/1/title", b"final".to_vec())];
        let sent = write(&Doc::with_client_id(5), &entries, true);
        let held = write(&Doc::with_client_id(5), &entries, false);
        let values: Vec<Vec<u8>> = entries.iter().map(|(_, v)| v.clone()).collect();
        assert_eq!(fill_values(&held, &values).unwrap(), sent);
        let checked = check_accepted(&sent, Entries::Signed).unwrap();
        assert_eq!(strip_values(&sent, &checked), held);
    }

    /// Sessions of one device writing into its map, transaction after transaction: a fresh
    /// session (a new client ID) starts from every earlier update, the signed document from the
    /// updates as sent, the held one from them stripped.
    /// One transaction: whether it starts a new session, and its writes (key, value length, byte).
    #[cfg(not(target_arch = "wasm32"))]
    type Transaction = (bool, Vec<(u8, usize, u8)>);

    #[cfg(not(target_arch = "wasm32"))]
    fn fill_and_strip_agree_with_yrs(transactions: &[Transaction]) {
        const KEYS: [&str; 6] = ["b/1/title", "b/1/url", "b/1/place", "p/2/notes", "p/2/username", "w/3/layout"];
        let mut sent_so_far: Vec<Vec<u8>> = Vec::new();
        let mut held_so_far: Vec<Vec<u8>> = Vec::new();
        let mut client = 100;
        let mut docs = (Doc::with_client_id(client), Doc::with_client_id(client));
        for (new_session, writes) in transactions {
            if *new_session {
                client += 1;
                docs = (Doc::with_client_id(client), Doc::with_client_id(client));
                for (sent, held) in sent_so_far.iter().zip(&held_so_far) {
                    docs.0.transact_mut().apply_update(yrs::Update::decode_v1(sent).unwrap()).unwrap();
                    docs.1.transact_mut().apply_update(yrs::Update::decode_v1(held).unwrap()).unwrap();
                }
            }
            let entries: Vec<(&str, Vec<u8>)> =
                writes.iter().map(|&(key, len, byte)| (KEYS[usize::from(key) % KEYS.len()], vec![byte; len])).collect();
            let sent = write(&docs.0, &entries, true);
            let held = write(&docs.1, &entries, false);
            let values: Vec<Vec<u8>> = entries.iter().map(|(_, v)| v.clone()).collect();
            assert_eq!(fill_values(&held, &values).unwrap(), sent);
            let checked = check_accepted(&sent, Entries::Signed).unwrap();
            assert_eq!(strip_values(&sent, &checked), held);
            sent_so_far.push(sent);
            held_so_far.push(held);
        }
        // The whole state once more, where it is one client's (the checker reads one client).
        if client == 100 {
            let signed_state = docs.0.transact().encode_state_as_update_v1(&Default::default());
            let stripped_state = docs.1.transact().encode_state_as_update_v1(&Default::default());
            let checked = check_accepted(&signed_state, Entries::Signed).unwrap();
            assert_eq!(strip_values(&signed_state, &checked), stripped_state);
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn filled_and_stripped_updates_are_what_yrs_writes(
            transactions in proptest::collection::vec(
                (
                    proptest::prelude::any::<bool>(),
                    proptest::collection::vec((0u8..6, 0usize..300, proptest::prelude::any::<u8>()), 1..8),
                ),
                1..8,
            )
        ) {
            fill_and_strip_agree_with_yrs(&transactions);
        }
    }

    #[test]
    fn filling_needs_one_value_per_entry_and_a_stripped_update() {
        let doc = Doc::with_client_id(9);
        let held = write(&doc, &[("k/1/key", vec![1]), ("k/2/key", vec![2])], false);
        assert!(fill_values(&held, &[vec![1]]).is_err());
        assert!(fill_values(&held, &[vec![1], vec![2], vec![3]]).is_err());
        let sent = fill_values(&held, &[vec![1], vec![2]]).unwrap();
        assert!(fill_values(&sent, &[vec![1], vec![2]]).is_err(), "values where placeholders were expected");
    }

    #[test]
    fn a_peer_update_with_placeholder_entries_is_refused() {
        struct Empty;
        impl DocView for Empty {
            fn is_authors_client(&self, client: u64) -> bool {
                client == 9
            }
            fn next_clock(&self, _client: u64) -> u32 {
                0
            }
        }
        let doc = Doc::with_client_id(9);
        let held = write(&doc, &[("k/1/key", vec![1])], false);
        assert_eq!(
            check_update(&held, "a:x", 9, &Empty).unwrap_err(),
            UpdateRuleError::ForbiddenContent(CONTENT_BINARY)
        );
        let sent = fill_values(&held, &[vec![1]]).unwrap();
        assert_eq!(check_update(&sent, "a:x", 9, &Empty).unwrap().values, vec![&[1u8][..]]);
    }
}
