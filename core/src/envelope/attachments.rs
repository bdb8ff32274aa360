//! An envelope's attachments, held in one of two forms.
//!
//! **Plain**: every attachment's bytes in one buffer (a history envelope carries up to 16,384
//! visits; one allocation each cost ~40 bytes a visit and a long cold open).
//!
//! **Packed**, the form this device *stores* large history envelopes in and keeps them in after
//! a cold open: each attachment's first `head_len` bytes in a column of their own (for a visit,
//! its ID and time: all a cold open's index and most queries read), and the rest deflated in
//! blocks of `per_block` attachments. The realistic profile's 100,000 visits are 13.0 MB plain
//! and about half that packed. Reading one attachment inflates its block; nothing is inflated to
//! open a store. The signed envelope is unchanged: its body commits to each attachment's hash,
//! and the canonical encoding (what peers receive) is written from either form.

use std::borrow::Cow;

use miniz_oxide::deflate::core::{
    CompressorOxide, TDEFLFlush, TDEFLStatus, compress_to_output, create_comp_flags_from_zip_params,
};

use crate::codec::{Reader, Writer};
use crate::error::DecodeError;

use super::{MAX_ATTACHMENT_LEN, MAX_ATTACHMENTS_TOTAL};

/// Flag on an end offset or length: that attachment is redacted (attachments total at most
/// 4 MiB, so offsets and lengths never reach this bit).
const REDACTED: u32 = 1 << 31;

/// The longest head a packed form keeps apart.
pub(crate) const MAX_HEAD_LEN: u8 = 64;

/// A packed form's block, inflated (`None` inside: it did not inflate), by index.
pub(crate) type HeldBlock = Option<(usize, Option<Vec<u8>>)>;

/// How to pack: see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PackSpec {
    /// Bytes of each attachment kept uncompressed.
    pub(crate) head_len: u8,
    /// Attachments per deflated block (at least 1).
    pub(crate) per_block: u16,
}

impl PackSpec {
    /// The block attachment `index` is in.
    fn block_of(self, index: usize) -> usize {
        index.checked_div(usize::from(self.per_block)).unwrap_or(0)
    }
}

#[derive(Clone, Debug)]
pub(super) enum Attachments {
    Plain(Plain),
    Packed(Packed),
}

impl Default for Attachments {
    fn default() -> Self {
        Attachments::Plain(Plain::default())
    }
}

/// Attachment `i` is `data[end(i - 1)..end(i)]`; a redacted one is zeroed in place and flagged,
/// and the buffer is compacted once most of it is redacted.
#[derive(Clone, Debug, Default)]
pub(super) struct Plain {
    data: Vec<u8>,
    /// End offsets, with [`REDACTED`] set on redacted ones.
    ends: Vec<u32>,
    redacted_bytes: usize,
}

#[derive(Clone, Debug)]
pub(super) struct Packed {
    spec: PackSpec,
    /// Each attachment's length, with [`REDACTED`] set on redacted ones (whose length is 0).
    lens: Vec<u32>,
    /// `head_len` bytes per attachment: its first bytes, zero-padded (all zero where redacted).
    heads: Vec<u8>,
    /// Block `b` is the deflated concatenation of the tails (the bytes after the head) of the
    /// present attachments `b * per_block ..`; empty when they have no tail bytes.
    blocks: Vec<Box<[u8]>>,
}

impl Attachments {
    pub(super) fn with_capacity(count: usize, bytes: usize) -> Self {
        Attachments::Plain(Plain {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(count),
            redacted_bytes: 0,
        })
    }

    /// Appends one (empty = redacted). Only while building a plain one.
    pub(super) fn push(&mut self, bytes: &[u8]) {
        if let Attachments::Plain(plain) = self {
            plain.push(bytes);
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Attachments::Plain(plain) => plain.ends.len(),
            Attachments::Packed(packed) => packed.lens.len(),
        }
    }

    /// Whether this is the packed form.
    pub(super) fn is_packed(&self) -> bool {
        matches!(self, Attachments::Packed(_))
    }

    /// Bytes held for them (buffers' contents, not their spare capacity).
    pub(super) fn held_len(&self) -> usize {
        match self {
            Attachments::Plain(plain) => plain.data.len().saturating_add(plain.ends.len().saturating_mul(4)),
            Attachments::Packed(packed) => packed
                .lens
                .len()
                .saturating_mul(4)
                .saturating_add(packed.heads.len())
                .saturating_add(packed.blocks.iter().map(|b| b.len()).sum()),
        }
    }

    /// Replaces packed block `block` with bytes that do not inflate (for tests of what a damaged
    /// block does; only a bug could make one). Returns whether there was such a block.
    #[cfg(feature = "test-util")]
    pub(super) fn break_block(&mut self, block: usize) -> bool {
        let Attachments::Packed(packed) = self else { return false };
        let Some(bytes) = packed.blocks.get_mut(block) else { return false };
        // A final block of the reserved type 3: no inflater accepts it.
        *bytes = Box::new([0xff; 8]);
        true
    }

    /// How a packed form is packed.
    pub(super) fn packed_spec(&self) -> Option<PackSpec> {
        match self {
            Attachments::Plain(_) => None,
            Attachments::Packed(packed) => Some(packed.spec),
        }
    }

    /// The length of attachment `index`: `Some(None)` where redacted, `None` past the end.
    pub(super) fn len_of(&self, index: usize) -> Option<Option<usize>> {
        match self {
            Attachments::Plain(plain) => {
                plain.range(index).map(|(start, end, redacted)| (!redacted).then(|| end.saturating_sub(start)))
            }
            Attachments::Packed(packed) => {
                packed.lens.get(index).map(|len| (len & REDACTED == 0).then_some(*len as usize))
            }
        }
    }

    /// Attachment `index`: `Some(None)` where redacted, `None` past the end. A packed one whose
    /// block cannot be inflated reads as redacted (this device wrote it, under a MAC: a bug).
    pub(super) fn get(&self, index: usize) -> Option<Option<Cow<'_, [u8]>>> {
        self.get_with_block(index, &mut None)
    }

    /// [`Attachments::get`], inflating a packed form's block into `held` unless it holds that
    /// block already: reading neighbours one by one inflates each block once, not once each.
    pub(super) fn get_with_block(&self, index: usize, held: &mut HeldBlock) -> Option<Option<Cow<'_, [u8]>>> {
        match self {
            Attachments::Plain(plain) => plain.get(index).map(|a| a.map(Cow::Borrowed)),
            Attachments::Packed(packed) => {
                let Some(len) = packed.present_len(index) else {
                    return (index < packed.lens.len()).then_some(None);
                };
                if len <= usize::from(packed.spec.head_len) {
                    return Some(packed.head(index).and_then(|h| h.get(..len)).map(Cow::Borrowed));
                }
                let block = packed.spec.block_of(index);
                if held.as_ref().is_none_or(|(at, _)| *at != block) {
                    *held = Some((block, packed.inflate(block)));
                }
                let Some(inflated) = held.as_ref().and_then(|(_, b)| b.as_deref()) else { return Some(None) };
                Some(packed.whole(index, inflated).flatten().map(Cow::Owned))
            }
        }
    }

    /// The first `n` bytes of attachment `index` (fewer if it is shorter), `None` where redacted
    /// or past the end. Borrowed unless a packed form must inflate for them.
    pub(super) fn prefix(&self, index: usize, n: usize) -> Option<Cow<'_, [u8]>> {
        match self {
            Attachments::Plain(plain) => {
                let bytes = plain.get(index)??;
                Some(Cow::Borrowed(bytes.get(..n.min(bytes.len()))?))
            }
            Attachments::Packed(packed) => {
                let len = packed.present_len(index)?;
                if n <= usize::from(packed.spec.head_len) || len <= usize::from(packed.spec.head_len) {
                    let head = packed.head(index)?;
                    return Some(Cow::Borrowed(head.get(..n.min(len))?));
                }
                match self.get(index)?? {
                    Cow::Owned(mut whole) => {
                        whole.truncate(n);
                        Some(Cow::Owned(whole))
                    }
                    Cow::Borrowed(whole) => Some(Cow::Borrowed(whole.get(..n.min(whole.len()))?)),
                }
            }
        }
    }

    /// Every attachment in order, `None` where redacted; a packed form inflates each block once.
    pub(super) fn iter(&self) -> Iter<'_> {
        Iter { attachments: self, next: 0, block: None }
    }

    /// Redacts attachment `index`: its bytes are gone from memory at once. Returns whether it
    /// was present.
    #[cfg(test)]
    fn redact(&mut self, index: usize) -> bool {
        self.redact_many(&[index], |_, _| ()) == 1
    }

    /// Redacts the attachments at `indices` (best ascending; repeated, redacted and absent ones
    /// are skipped), calling `before(index, bytes)` with each one's bytes just before they go.
    /// Their bytes are gone from memory at once. A packed form inflates and deflates each block
    /// it touches once (deleting all of a 100,000-visit history is one pass, not 100,000).
    /// Returns how many were redacted.
    pub(super) fn redact_many(&mut self, indices: &[usize], mut before: impl FnMut(usize, &[u8])) -> usize {
        // Not sorted here (a sort is code in the `.wasm` for each element type): callers pass
        // them ascending, and a run out of order only costs its block another pass.
        match self {
            Attachments::Plain(plain) => {
                let mut count = 0usize;
                for &index in indices {
                    if let Some(Some(bytes)) = plain.get(index) {
                        before(index, bytes);
                        count = count.saturating_add(usize::from(plain.redact(index)));
                    }
                }
                count
            }
            Attachments::Packed(packed) => {
                let spec = packed.spec;
                let mut deflater = Deflater::new();
                indices
                    .chunk_by(|x, y| spec.block_of(*x) == spec.block_of(*y))
                    .map(|in_block| {
                        in_block.first().map_or(0, |first| {
                            packed.redact_in_block(spec.block_of(*first), in_block, &mut before, &mut deflater)
                        })
                    })
                    .fold(0, usize::saturating_add)
            }
        }
    }

    /// Writes the packed section (see [`Attachments::read_packed`]): a packed form as it is (in
    /// its own spec), a plain one deflated now.
    pub(super) fn write_packed(&self, spec: PackSpec, w: &mut Writer) {
        match self {
            Attachments::Packed(packed) => packed.write(w),
            Attachments::Plain(plain) => Packed::from_plain(plain, spec).write(w),
        }
    }

    /// Reads a packed section of `count` attachments. Only for this device's own storage, read
    /// under its MAC: every length and cap is checked, but the blocks are not inflated (that is
    /// the point); one that does not inflate reads as redacted.
    pub(super) fn read_packed(r: &mut Reader<'_>, count: usize) -> Result<Self, DecodeError> {
        let head_len = r.u8("packed head length")?;
        if head_len == 0 || head_len > MAX_HEAD_LEN {
            return Err(DecodeError::NonCanonical { what: "packed attachments", reason: "head length out of range" });
        }
        let per_block = r.u16("packed block size")?;
        if per_block == 0 {
            return Err(DecodeError::NonCanonical { what: "packed attachments", reason: "empty blocks" });
        }
        let spec = PackSpec { head_len, per_block };
        r.check_len(4u64.saturating_mul(count as u64), u64::from(u32::MAX), "packed attachment lengths")?;
        let mut lens = Vec::with_capacity(count);
        let mut total = 0usize;
        for _ in 0..count {
            let len = r.u32("packed attachment length")?;
            let bytes = if len & REDACTED != 0 {
                if len != REDACTED {
                    return Err(DecodeError::NonCanonical {
                        what: "packed attachments",
                        reason: "a redacted attachment has a length",
                    });
                }
                0
            } else if len == 0 || len > MAX_ATTACHMENT_LEN {
                return Err(DecodeError::TooLarge {
                    what: "packed attachment",
                    len: u64::from(len),
                    max: u64::from(MAX_ATTACHMENT_LEN),
                });
            } else {
                len as usize
            };
            total = add_to_attachments_total(total, bytes)?;
            lens.push(len);
        }
        let heads = r.take(count.saturating_mul(usize::from(head_len)), "packed heads")?.to_vec();
        let block_count = count.div_ceil(usize::from(per_block));
        let mut blocks = Vec::with_capacity(block_count.min(r.remaining() / 4));
        for _ in 0..block_count {
            blocks.push(r.bytes_u32(MAX_ATTACHMENTS_TOTAL as u32, "packed block")?.into());
        }
        Ok(Attachments::Packed(Packed { spec, lens, heads, blocks }))
    }

    /// Packs a plain form in memory (a no-op for a packed one).
    pub(super) fn pack(&mut self, spec: PackSpec) {
        if let Attachments::Plain(plain) = self {
            *self = Attachments::Packed(Packed::from_plain(plain, spec));
        }
    }
}

impl PartialEq for Attachments {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Attachments {}

impl Plain {
    fn push(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
        let end = u32::try_from(self.data.len()).unwrap_or(u32::MAX) & !REDACTED;
        self.ends.push(if bytes.is_empty() { end | REDACTED } else { end });
    }

    fn range(&self, index: usize) -> Option<(usize, usize, bool)> {
        let end = *self.ends.get(index)?;
        let start = match index.checked_sub(1) {
            Some(before) => self.ends.get(before).map_or(0, |e| e & !REDACTED),
            None => 0,
        };
        Some((start as usize, (end & !REDACTED) as usize, end & REDACTED != 0))
    }

    fn get(&self, index: usize) -> Option<Option<&[u8]>> {
        let (start, end, redacted) = self.range(index)?;
        Some(if redacted { None } else { self.data.get(start..end) })
    }

    fn redact(&mut self, index: usize) -> bool {
        let Some((start, end, false)) = self.range(index) else { return false };
        if let Some(bytes) = self.data.get_mut(start..end) {
            bytes.fill(0);
        }
        if let Some(e) = self.ends.get_mut(index) {
            *e |= REDACTED;
        }
        self.redacted_bytes = self.redacted_bytes.saturating_add(end.saturating_sub(start));
        if self.redacted_bytes.saturating_mul(2) > self.data.len() {
            let mut compact = Plain {
                data: Vec::with_capacity(self.data.len().saturating_sub(self.redacted_bytes)),
                ends: Vec::with_capacity(self.ends.len()),
                redacted_bytes: 0,
            };
            for index in 0..self.ends.len() {
                compact.push(self.get(index).flatten().unwrap_or_default());
            }
            *self = compact;
        }
        true
    }
}

impl Packed {
    fn from_plain(plain: &Plain, spec: PackSpec) -> Self {
        let count = plain.ends.len();
        let head_len = usize::from(spec.head_len);
        let mut lens = Vec::with_capacity(count);
        let mut heads = vec![0u8; count.saturating_mul(head_len)];
        let mut blocks = Vec::with_capacity(count.div_ceil(usize::from(spec.per_block.max(1))));
        let mut tails = Vec::new();
        let mut deflater = Deflater::new();
        for index in 0..count {
            match plain.get(index).flatten() {
                Some(bytes) => {
                    lens.push(u32::try_from(bytes.len()).unwrap_or(0) & !REDACTED);
                    let (head, tail) = bytes.split_at(head_len.min(bytes.len()));
                    let at = index.saturating_mul(head_len);
                    if let Some(slot) = heads.get_mut(at..at.saturating_add(head.len())) {
                        slot.copy_from_slice(head);
                    }
                    tails.extend_from_slice(tail);
                }
                None => lens.push(REDACTED),
            }
            let next = index.saturating_add(1);
            if next == count || spec.block_of(next) != spec.block_of(index) {
                blocks.push(deflater.deflate(&tails));
                tails.clear();
            }
        }
        Packed { spec, lens, heads, blocks }
    }

    fn write(&self, w: &mut Writer) {
        w.u8(self.spec.head_len).u16(self.spec.per_block);
        for len in &self.lens {
            w.u32(*len);
        }
        w.raw(&self.heads);
        for block in &self.blocks {
            w.bytes_u32(block);
        }
    }

    fn present_len(&self, index: usize) -> Option<usize> {
        let len = *self.lens.get(index)?;
        (len & REDACTED == 0).then_some(len as usize)
    }

    /// The stored head of attachment `index` (zero-padded to `head_len`).
    fn head(&self, index: usize) -> Option<&[u8]> {
        let head_len = usize::from(self.spec.head_len);
        let at = index.checked_mul(head_len)?;
        self.heads.get(at..at.checked_add(head_len)?)
    }

    fn tail_len(&self, index: usize) -> usize {
        self.present_len(index).map_or(0, |len| len.saturating_sub(usize::from(self.spec.head_len)))
    }

    fn block_range(&self, block: usize) -> std::ops::Range<usize> {
        let per_block = usize::from(self.spec.per_block);
        let start = block.saturating_mul(per_block);
        start..start.saturating_add(per_block).min(self.lens.len())
    }

    /// Block `block`'s tails, inflated, if it inflates to exactly their total length.
    fn inflate(&self, block: usize) -> Option<Vec<u8>> {
        let expected: usize = self.block_range(block).map(|i| self.tail_len(i)).sum();
        if expected == 0 {
            return Some(Vec::new());
        }
        let deflated = self.blocks.get(block)?;
        let inflated = miniz_oxide::inflate::decompress_to_vec_with_limit(deflated, expected).ok()?;
        (inflated.len() == expected).then_some(inflated)
    }

    /// Where attachment `index`'s tail starts in its inflated block.
    fn tail_offset(&self, index: usize) -> usize {
        let start = self.block_range(self.spec.block_of(index)).start;
        (start..index).map(|i| self.tail_len(i)).sum()
    }

    /// Attachment `index` put back together from its head and, from `inflated` (its block), its
    /// tail.
    fn whole(&self, index: usize, inflated: &[u8]) -> Option<Option<Vec<u8>>> {
        let Some(len) = self.present_len(index) else {
            return if index < self.lens.len() { Some(None) } else { None };
        };
        let head = self.head(index)?;
        let mut whole = Vec::with_capacity(len);
        whole.extend_from_slice(head.get(..len.min(head.len()))?);
        let offset = self.tail_offset(index);
        whole.extend_from_slice(inflated.get(offset..offset.checked_add(self.tail_len(index))?)?);
        Some(Some(whole))
    }

    /// Redacts `indices` (all in block `block`): one inflate and one deflate. An
    /// attachment whose block does not inflate is left as it is (it already reads as redacted,
    /// and without its bytes its hash cannot be kept for the body).
    fn redact_in_block(
        &mut self,
        block: usize,
        indices: &[usize],
        before: &mut impl FnMut(usize, &[u8]),
        deflater: &mut Deflater,
    ) -> usize {
        let Some(inflated) = self.inflate(block) else {
            return 0;
        };
        let head_len = usize::from(self.spec.head_len);
        let mut kept_tails = Vec::with_capacity(inflated.len());
        let mut offset = 0usize;
        let mut count = 0usize;
        for index in self.block_range(block) {
            let tail_len = self.tail_len(index);
            let tail = inflated.get(offset..offset.saturating_add(tail_len)).unwrap_or_default();
            offset = offset.saturating_add(tail_len);
            let Some(len) = self.present_len(index) else { continue };
            if !indices.contains(&index) {
                kept_tails.extend_from_slice(tail);
                continue;
            }
            let at = index.saturating_mul(head_len);
            if let Some(head) = self.heads.get_mut(at..at.saturating_add(head_len)) {
                let mut whole = Vec::with_capacity(len);
                whole.extend_from_slice(head.get(..len.min(head_len)).unwrap_or_default());
                whole.extend_from_slice(tail);
                before(index, &whole);
                head.fill(0);
            }
            if let Some(e) = self.lens.get_mut(index) {
                *e = REDACTED;
            }
            count = count.saturating_add(1);
        }
        if count > 0
            && let Some(slot) = self.blocks.get_mut(block)
        {
            *slot = deflater.deflate(&kept_tails);
        }
        count
    }
}

/// Raw deflate at level 1 (as the wire uses: fast, and most of what higher levels get on short
/// text), one compressor for many blocks: a fresh one per block spent more time allocating and
/// zeroing its tables than compressing (natively 125 vs 56 ms for 10 MB in 6.4 KB blocks).
pub(super) struct Deflater(Option<CompressorOxide>);

impl Deflater {
    pub(super) fn new() -> Self {
        Self(None)
    }

    pub(super) fn deflate(&mut self, bytes: &[u8]) -> Box<[u8]> {
        if bytes.is_empty() {
            return Box::default();
        }
        let compressor = match &mut self.0 {
            Some(compressor) => {
                compressor.reset();
                compressor
            }
            None => self.0.insert(CompressorOxide::new(create_comp_flags_from_zip_params(1, 0, 0))),
        };
        let mut out = Vec::with_capacity(bytes.len() / 2);
        let (status, _) = compress_to_output(compressor, bytes, TDEFLFlush::Finish, |chunk| {
            out.extend_from_slice(chunk);
            true
        });
        if status == TDEFLStatus::Done { out.into() } else { miniz_oxide::deflate::compress_to_vec(bytes, 1).into() }
    }
}

/// See [`Attachments::iter`].
pub(crate) struct Iter<'a> {
    attachments: &'a Attachments,
    next: usize,
    block: HeldBlock,
}

impl<'a> Iterator for Iter<'a> {
    type Item = Option<Cow<'a, [u8]>>;

    fn next(&mut self) -> Option<Self::Item> {
        let index = self.next;
        let item = self.attachments.get_with_block(index, &mut self.block)?;
        self.next = index.saturating_add(1);
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.attachments.len().saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Iter<'_> {}

/// Adds one attachment's length to an envelope's running total, refusing a total over the cap
/// (the same check for the wire form and the packed stored form).
pub(super) fn add_to_attachments_total(total: usize, len: usize) -> Result<usize, DecodeError> {
    let total = total.saturating_add(len);
    if total > MAX_ATTACHMENTS_TOTAL {
        return Err(DecodeError::TooLarge {
            what: "envelope attachments",
            len: total as u64,
            max: MAX_ATTACHMENTS_TOTAL as u64,
        });
    }
    Ok(total)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use rand_chacha::ChaCha8Rng;
    use rand_core::{RngCore, SeedableRng};

    use super::*;

    const SPEC: PackSpec = PackSpec { head_len: 25, per_block: 8 };

    /// Visit-like attachments: a random head, then text that repeats a little; some shorter than
    /// the head, some redacted (empty).
    fn sample(rng: &mut ChaCha8Rng, count: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|_| match rng.next_u32() % 10 {
                0 => Vec::new(),
                1 => vec![7u8; 1 + rng.next_u32() as usize % 25],
                _ => {
                    let mut a = vec![0u8; 25];
                    rng.fill_bytes(&mut a);
                    let words = ["https://", "example.org/", "news", "café ", "天気", "/x?id="];
                    for _ in 0..(rng.next_u32() % 12) {
                        a.extend_from_slice(words[rng.next_u32() as usize % words.len()].as_bytes());
                    }
                    a
                }
            })
            .collect()
    }

    fn plain(attachments: &[Vec<u8>]) -> Attachments {
        let mut all = Attachments::with_capacity(attachments.len(), 0);
        for a in attachments {
            all.push(a);
        }
        all
    }

    fn packed_via_bytes(all: &Attachments) -> Attachments {
        let mut w = Writer::default();
        all.write_packed(SPEC, &mut w);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        let back = Attachments::read_packed(&mut r, all.len()).unwrap();
        r.finish("packed").unwrap();
        assert!(back.is_packed());
        back
    }

    fn assert_same(a: &Attachments, b: &Attachments) {
        assert_eq!(a.len(), b.len());
        for i in 0..a.len() + 2 {
            assert_eq!(a.get(i), b.get(i), "attachment {i}");
            assert_eq!(a.len_of(i), b.len_of(i), "length of {i}");
            for n in [0, 1, 25, 26, 40] {
                assert_eq!(a.prefix(i, n), b.prefix(i, n), "first {n} bytes of {i}");
            }
        }
        assert!(a.iter().eq(b.iter()));
        assert_eq!(a, b);
    }

    #[test]
    fn packed_reads_as_plain_for_many_seeded_samples() {
        for seed in 0..200u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let count = rng.next_u32() as usize % 40;
            let attachments = sample(&mut rng, count);
            let plain = plain(&attachments);
            let mut in_memory = plain.clone();
            in_memory.pack(SPEC);
            assert_same(&plain, &in_memory);
            assert_same(&plain, &packed_via_bytes(&plain));
            // Written again from the packed form: the same bytes.
            let (mut once, mut twice) = (Writer::default(), Writer::default());
            plain.write_packed(SPEC, &mut once);
            in_memory.write_packed(SPEC, &mut twice);
            assert_eq!(once.as_bytes(), twice.as_bytes());
        }
    }

    #[test]
    fn redacting_a_packed_attachment_is_redacting_the_plain_one() {
        for seed in 0..200u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let count = 1 + rng.next_u32() as usize % 40;
            let attachments = sample(&mut rng, count);
            let mut plain = plain(&attachments);
            let mut packed = packed_via_bytes(&plain);
            for _ in 0..count {
                let i = rng.next_u32() as usize % count;
                assert_eq!(plain.redact(i), packed.redact(i), "seed {seed}: redacting {i}");
                assert_same(&plain, &packed);
            }
            // What was redacted is gone from the packed form's bytes.
            let mut w = Writer::default();
            packed.write_packed(SPEC, &mut w);
            assert_same(&plain, &packed_via_bytes(&packed));
        }
    }

    #[test]
    fn a_block_that_does_not_inflate_reads_as_redacted_and_nothing_panics() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let attachments: Vec<Vec<u8>> =
            (0..20).map(|i| [vec![i as u8; 25], b"https://example.org/".repeat(3)].concat()).collect();
        let mut packed = plain(&attachments);
        packed.pack(SPEC);
        if let Attachments::Packed(p) = &mut packed {
            let mut broken = p.blocks[1].to_vec();
            rng.fill_bytes(&mut broken);
            p.blocks[1] = broken.into();
        }
        // Block 1 holds attachments 8..16.
        assert_eq!(packed.get(9), Some(None));
        assert_eq!(packed.get(3).flatten().as_deref(), Some(attachments[3].as_slice()));
        assert_eq!(packed.prefix(9, 25).as_deref(), Some(&attachments[9][..25]), "heads stay readable");
        assert_eq!(packed.iter().filter(Option::is_none).count(), 8);
        // Left as it is: without its bytes, its hash could not be kept for the body.
        assert!(!packed.redact(9));
        assert!(packed.redact(3));
        assert_eq!(packed.get(3), Some(None));
        assert_eq!(packed.get(16).flatten().as_deref(), Some(attachments[16].as_slice()));
    }

    fn read(bytes: &[u8], count: usize) -> Result<Attachments, DecodeError> {
        let mut r = Reader::new(bytes);
        Attachments::read_packed(&mut r, count)
    }

    #[test]
    fn a_malformed_packed_section_is_refused() {
        let section = |head_len: u8, per_block: u16, lens: &[u32], rest: &[u8]| {
            let mut w = Writer::default();
            w.u8(head_len).u16(per_block);
            for len in lens {
                w.u32(*len);
            }
            w.raw(rest);
            w.into_bytes()
        };
        let ok = section(4, 8, &[2, REDACTED], &[1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(read(&ok, 2).is_ok());
        assert!(read(&section(0, 8, &[2], &[0; 8]), 1).is_err(), "no head");
        assert!(read(&section(MAX_HEAD_LEN + 1, 8, &[2], &[0; 80]), 1).is_err(), "head too long");
        assert!(read(&section(4, 0, &[2], &[0; 8]), 1).is_err(), "empty blocks");
        assert!(read(&section(4, 8, &[REDACTED | 3], &[0; 8]), 1).is_err(), "a redacted length");
        assert!(read(&section(4, 8, &[0], &[0; 8]), 1).is_err(), "an empty attachment");
        assert!(read(&section(4, 8, &[MAX_ATTACHMENT_LEN + 1], &[0; 8]), 1).is_err(), "too long");
        let many = vec![MAX_ATTACHMENT_LEN; 65];
        assert!(read(&section(4, 8, &many, &[0; 4 * 65 + 9 * 4]), 65).is_err(), "over the total cap");
        assert!(read(&ok[..ok.len() - 1], 2).is_err(), "truncated");
        assert!(read(&ok, 3).is_err(), "more attachments than written");
    }

    #[cfg(not(target_arch = "wasm32"))]
    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400), count in 0usize..20) {
            if let Ok(all) = read(&bytes, count) {
                for i in 0..count + 1 {
                    let _ = all.get(i);
                    let _ = all.prefix(i, 30);
                }
                let _ = all.iter().count();
                let mut all = all;
                for i in 0..count {
                    let _ = all.redact(i);
                }
            }
        }
    }
}
