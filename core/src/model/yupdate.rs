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

use std::collections::BTreeMap;

use crate::error::DecodeError;

const BLOCK_GC: u8 = 0;
const CONTENT_DELETED: u8 = 1;
const CONTENT_ANY: u8 = 8;
const HAS_ORIGIN: u8 = 0b1000_0000;
const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
const HAS_PARENT_SUB: u8 = 0b0010_0000;
const ANY_BUFFER_TAG: u8 = 116;
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

/// What a valid update contains.
#[derive(Debug, Default)]
pub(crate) struct CheckedUpdate<'a> {
    /// The binary values inserted, in order (each must then verify as a register value).
    pub(crate) values: Vec<&'a [u8]>,
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
    check_update_in(update, Some(own_map), declared, doc)
}

fn check_update_in<'a>(
    update: &'a [u8],
    own_map: Option<&str>,
    declared: u64,
    doc: &dyn DocView,
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
                    match info & 0x1f {
                        CONTENT_DELETED => {
                            let n = r.var_u32("deleted length")?;
                            if n == 0 {
                                return Err(
                                    DecodeError::NonCanonical { what: "deleted length", reason: "empty" }.into()
                                );
                            }
                            n
                        }
                        CONTENT_ANY => {
                            if r.var("any count")? != 1 {
                                return Err(UpdateRuleError::ForbiddenContent(CONTENT_ANY));
                            }
                            if r.u8("any tag")? != ANY_BUFFER_TAG {
                                return Err(UpdateRuleError::ForbiddenContent(CONTENT_ANY));
                            }
                            out.values.push(r.bytes("any buffer")?);
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
    check_update_in(update, None, client, &view).ok().map(|c| c.values)
}
