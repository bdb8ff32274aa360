//! Signed envelopes: the unit in which every change travels and is stored.
//!
//! An [`Envelope`] carries one transaction of one device: its author, its place in the author's
//! chain (`seq` and the ID of the author's previous envelope), the IDs of the other envelopes it
//! causally follows, an HLC timestamp, a payload (for document changes, a `yrs` update) and an
//! Ed25519 signature. It is named by the BLAKE3 hash of its signed body ([`EnvelopeId`]).
//!
//! Decoding ([`Envelope::decode`]) checks form only: sizes, caps, canonical order. Trust is a
//! separate step, [`Envelope::verify`], which checks the author against a [`DeviceRegistry`] and
//! the signature with `verify_strict`, and returns a [`VerifiedEnvelope`] — the only type the rest
//! of the system accepts. [`AuthorChains`] then places it in its author's chain, telling a
//! duplicate from a gap from **equivocation** (two different envelopes signed for one place).
//!
//! The byte layout is in `docs/protocol.md`.

use std::collections::{BTreeMap, btree_map::Entry};

use crate::certificate::DeviceRegistry;
use crate::codec::{Reader, Writer};
use crate::error::{DecodeError, VerifyError};
use crate::hash::{Hash, context};
use crate::hlc::Timestamp;
use crate::identity::{DeviceId, DeviceSecretKey, IdentityId, domain, signing_message};

/// The envelope format byte this build writes and reads: type 1, version 1.
pub const ENVELOPE_FORMAT: u8 = 0x11;
/// Largest payload, in bytes (1 MiB). Larger changes are split into several envelopes.
pub const MAX_PAYLOAD_LEN: u32 = 1 << 20;
/// Most parents an envelope may name besides its author's previous one.
pub const MAX_PARENTS: u8 = 64;
/// Most attachments one envelope may carry.
pub const MAX_ATTACHMENTS: u32 = 16 * 1024;
/// Largest attachment, in bytes (64 KiB).
pub const MAX_ATTACHMENT_LEN: u32 = 64 * 1024;
/// Largest total size of an envelope's attachments (4 MiB).
pub const MAX_ATTACHMENTS_TOTAL: usize = 4 << 20;
/// Largest encoded envelope.
pub const MAX_ENVELOPE_LEN: usize = (1 + 1 + 32 + 8 + 32 + Timestamp::ENCODED_LEN + 1 + 4 + 4 + 64)
    + 32 * MAX_PARENTS as usize
    + MAX_PAYLOAD_LEN as usize
    + 36 * MAX_ATTACHMENTS as usize
    + MAX_ATTACHMENTS_TOTAL;

/// The name of an envelope: the hash of its signed body.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct EnvelopeId(pub Hash);

impl EnvelopeId {
    /// The raw hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }
}

impl core::fmt::Display for EnvelopeId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&self.0, f)
    }
}

/// What an envelope will say, before it is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsignedEnvelope {
    /// Payload type; its meaning belongs to the layer above (see `docs/protocol.md`).
    pub kind: u8,
    /// Place in the author's chain, from 1.
    pub seq: u64,
    /// The author's previous envelope: `None` exactly when `seq == 1`.
    pub prev: Option<EnvelopeId>,
    /// When it was written.
    pub hlc: Timestamp,
    /// Other envelopes it causally follows (deduplicated and sorted when signed).
    pub parents: Vec<EnvelopeId>,
    /// The payload.
    pub payload: Vec<u8>,
    /// Attachments: content that is committed to by hash in the signed body but travels after the
    /// signature, so that it can later be *redacted* (dropped everywhere) while the envelope still
    /// verifies — how deleted history leaves every replica (see `docs/protocol.md`).
    pub attachments: Vec<Vec<u8>>,
}

/// Why an envelope could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeBuildError {
    /// The payload is over [`MAX_PAYLOAD_LEN`].
    #[error("payload of {0} bytes is over the {MAX_PAYLOAD_LEN}-byte limit; split the change")]
    PayloadTooLarge(usize),
    /// More than [`MAX_PARENTS`] parents.
    #[error("{0} parents is over the limit of {MAX_PARENTS}")]
    TooManyParents(usize),
    /// Too many attachments, an empty one, or too many bytes of them.
    #[error(
        "attachments over the limits ({MAX_ATTACHMENTS} attachments, 1 byte to {MAX_ATTACHMENT_LEN} bytes each, {MAX_ATTACHMENTS_TOTAL} bytes in all)"
    )]
    Attachments,
    /// `seq` is 0, or `prev` is given for `seq == 1` or missing for a later one.
    #[error("sequence {seq} does not fit the previous-envelope link")]
    BadChainLink {
        /// The sequence number given.
        seq: u64,
    },
}

/// A decoded envelope. **Not verified**: call [`Envelope::verify`].
///
/// Equal envelopes are those with one ID (the hash of the whole signed body), one signature and
/// the same attachments present.
#[derive(Clone, Debug)]
pub struct Envelope {
    kind: u8,
    author: DeviceId,
    seq: u64,
    prev: Option<EnvelopeId>,
    hlc: Timestamp,
    parents: Vec<EnvelopeId>,
    payload: Vec<u8>,
    /// The hashes as listed in the body. Dropped when the envelope is loaded from this device's
    /// own storage ([`VerifiedEnvelope::assume_verified`]): from then on a present attachment's
    /// hash is recomputed from its bytes when the body is written again, and only the withheld
    /// ones' are kept (32 bytes a visit was 3.2 MB of a replica holding 100,000). Envelopes made
    /// or received in this session keep them, so storing and forwarding those costs no hashing.
    attachment_hashes: Vec<Hash>,
    /// The hashes of attachments without their bytes (redacted), by index, once verified.
    withheld_hashes: Vec<(u32, Hash)>,
    attachments: Attachments,
    signature: [u8; 64],
    id: EnvelopeId,
}

impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.signature == other.signature && self.attachments == other.attachments
    }
}

impl Eq for Envelope {}

/// An envelope's attachments in one buffer (a history envelope carries up to 16,384 visits: one
/// allocation each cost ~40 bytes a visit and a long cold open). Attachment `i` is
/// `data[end(i - 1)..end(i)]`; a redacted one is zeroed in place and flagged, and the buffer is
/// compacted once most of it is redacted.
#[derive(Clone, Debug, Default)]
struct Attachments {
    data: Vec<u8>,
    /// End offsets, with [`REDACTED`] set on redacted ones.
    ends: Vec<u32>,
    redacted_bytes: usize,
}

/// Flag on an end offset: that attachment is redacted (attachments total at most 4 MiB, so the
/// offsets never reach this bit).
const REDACTED: u32 = 1 << 31;

impl Attachments {
    fn with_capacity(count: usize, bytes: usize) -> Self {
        Self { data: Vec::with_capacity(bytes), ends: Vec::with_capacity(count), redacted_bytes: 0 }
    }

    /// Appends one (empty = redacted).
    fn push(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
        let end = u32::try_from(self.data.len()).unwrap_or(u32::MAX) & !REDACTED;
        self.ends.push(if bytes.is_empty() { end | REDACTED } else { end });
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn range(&self, index: usize) -> Option<(usize, usize, bool)> {
        let end = *self.ends.get(index)?;
        let start = match index.checked_sub(1) {
            Some(before) => self.ends.get(before).map_or(0, |e| e & !REDACTED),
            None => 0,
        };
        Some((start as usize, (end & !REDACTED) as usize, end & REDACTED != 0))
    }

    /// Attachment `index`: `Some(None)` where redacted, `None` past the end.
    fn get(&self, index: usize) -> Option<Option<&[u8]>> {
        let (start, end, redacted) = self.range(index)?;
        Some(if redacted { None } else { self.data.get(start..end) })
    }

    fn iter(&self) -> impl ExactSizeIterator<Item = Option<&[u8]>> + '_ {
        (0..self.len()).map(|i| self.get(i).flatten())
    }

    /// Redacts attachment `index` (zeroed at once; the space is reclaimed once most of the
    /// buffer is redacted). Returns whether it was present.
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
            let mut compact =
                Attachments::with_capacity(self.len(), self.data.len().saturating_sub(self.redacted_bytes));
            for attachment in self.iter() {
                compact.push(attachment.unwrap_or_default());
            }
            *self = compact;
        }
        true
    }
}

impl PartialEq for Attachments {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Attachments {}

/// The hash that commits to an attachment.
pub fn attachment_hash(attachment: &[u8]) -> Hash {
    Hash::digest(context::ATTACHMENT, &[attachment])
}

impl Envelope {
    /// Signs `unsigned` as `author` of `identity`.
    pub fn sign(
        author: &DeviceSecretKey,
        identity: &IdentityId,
        unsigned: UnsignedEnvelope,
    ) -> Result<VerifiedEnvelope, EnvelopeBuildError> {
        let UnsignedEnvelope { kind, seq, prev, hlc, mut parents, payload, attachments } = unsigned;
        if payload.len() > MAX_PAYLOAD_LEN as usize {
            return Err(EnvelopeBuildError::PayloadTooLarge(payload.len()));
        }
        if (seq == 0) || ((seq == 1) != prev.is_none()) {
            return Err(EnvelopeBuildError::BadChainLink { seq });
        }
        parents.sort_unstable();
        parents.dedup();
        parents.retain(|p| Some(*p) != prev);
        if parents.len() > usize::from(MAX_PARENTS) {
            return Err(EnvelopeBuildError::TooManyParents(parents.len()));
        }
        let mut envelope = Envelope {
            kind,
            author: author.public(),
            seq,
            prev,
            hlc,
            parents,
            payload,
            attachment_hashes: attachments.iter().map(|a| attachment_hash(a)).collect(),
            withheld_hashes: Vec::new(),
            attachments: {
                let mut all = Attachments::with_capacity(attachments.len(), attachments.iter().map(Vec::len).sum());
                for a in &attachments {
                    all.push(a);
                }
                all
            },
            signature: [0; 64],
            id: EnvelopeId(Hash::ZERO),
        };
        let body = envelope.encode_body();
        envelope.id = EnvelopeId(Hash::digest(context::ENVELOPE_ID, &[body.as_bytes()]));
        envelope.signature = author.sign(&signing_message(domain::ENVELOPE, identity, &envelope.id.0));
        Ok(VerifiedEnvelope(envelope))
    }

    fn encode_body(&self) -> Writer {
        let mut w = Writer::with_capacity(self.encoded_len());
        self.write_body(&mut w);
        w
    }

    fn write_body(&self, w: &mut Writer) {
        w.u8(ENVELOPE_FORMAT).u8(self.kind).raw(self.author.as_bytes()).u64(self.seq);
        if let Some(prev) = &self.prev {
            w.raw(prev.as_bytes());
        }
        w.u64(self.hlc.wall_ms).u32(self.hlc.counter);
        let parents: Vec<[u8; 32]> = self.parents.iter().map(|p| *p.as_bytes()).collect();
        w.hashes(&parents).bytes_u32(&self.payload);
        w.u32(u32::try_from(self.attachments.len()).unwrap_or(u32::MAX));
        for index in 0..self.attachments.len() {
            w.raw(self.attachment_hash_at(index).as_bytes());
        }
    }

    /// The hash the body lists for attachment `index`.
    fn attachment_hash_at(&self, index: usize) -> Hash {
        if let Some(listed) = self.attachment_hashes.get(index) {
            return *listed;
        }
        match self.attachments.get(index) {
            Some(Some(bytes)) => attachment_hash(bytes),
            // Withheld (or past the end, which the callers never ask for).
            _ => u32::try_from(index)
                .ok()
                .and_then(|i| self.withheld_hashes.binary_search_by_key(&i, |(at, _)| *at).ok())
                .and_then(|at| self.withheld_hashes.get(at))
                .map_or(Hash::ZERO, |(_, hash)| *hash),
        }
    }

    /// Once the attachments are known to match the listed hashes: keeps only the hashes of the
    /// withheld ones (the others are recomputed each time the body is written: natively ~0.4 µs
    /// an attachment, `profile/encode` 124 vs 82 ms for the realistic profile's 100,000).
    fn forget_present_hashes(&mut self) {
        if self.attachment_hashes.is_empty() {
            return;
        }
        let listed = std::mem::take(&mut self.attachment_hashes);
        self.withheld_hashes = listed
            .into_iter()
            .enumerate()
            .filter(|(index, _)| matches!(self.attachments.get(*index), Some(None)))
            .filter_map(|(index, hash)| Some((u32::try_from(index).ok()?, hash)))
            .collect();
    }

    /// Size of the encoding.
    pub fn encoded_len(&self) -> usize {
        let prev = if self.prev.is_some() { 32 } else { 0 };
        // format, kind, author, seq, hlc, parent count, payload length, attachment count, signature
        const FIXED: usize = 1 + 1 + 32 + 8 + Timestamp::ENCODED_LEN + 1 + 4 + 4 + 64;
        let attachments: usize = self.attachments.iter().map(|a| a.map_or(0, <[u8]>::len).saturating_add(4)).sum();
        FIXED
            .saturating_add(prev)
            .saturating_add(32usize.saturating_mul(self.parents.len()))
            .saturating_add(self.payload.len())
            .saturating_add(32usize.saturating_mul(self.attachments.len()))
            .saturating_add(attachments)
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len());
        self.write_to(&mut w);
        debug_assert_eq!(w.len(), self.encoded_len());
        w.into_bytes()
    }

    /// Appends the canonical encoding to `w` (storage writes it straight into its record).
    pub(crate) fn write_to(&self, w: &mut Writer) {
        self.write_body(w);
        w.raw(&self.signature);
        for attachment in self.attachments.iter() {
            w.bytes_u32(attachment.unwrap_or_default());
        }
    }

    /// Decodes untrusted bytes (the whole input must be one envelope).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_ENVELOPE_LEN {
            return Err(DecodeError::TooLarge {
                what: "envelope",
                len: bytes.len() as u64,
                max: MAX_ENVELOPE_LEN as u64,
            });
        }
        let mut r = Reader::new(bytes);
        let envelope = Self::read(&mut r)?;
        r.finish("envelope")?;
        Ok(envelope)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let start = r.position();
        r.format("envelope", ENVELOPE_FORMAT)?;
        let kind = r.u8("envelope kind")?;
        // Only a claim until `verify` finds it among the registry's validated devices.
        let author = DeviceId::from_claimed_bytes(r.array("envelope author")?);
        let seq = r.u64("envelope seq")?;
        if seq == 0 {
            return Err(DecodeError::NonCanonical { what: "envelope seq", reason: "sequence numbers start at 1" });
        }
        let prev = if seq > 1 { Some(EnvelopeId(Hash::from_bytes(r.array("envelope prev")?))) } else { None };
        let hlc = Timestamp { wall_ms: r.u64("envelope hlc")?, counter: r.u32("envelope hlc")? };
        let parents: Vec<EnvelopeId> = r
            .sorted_hashes(MAX_PARENTS, "envelope parents")?
            .into_iter()
            .map(|h| EnvelopeId(Hash::from_bytes(h)))
            .collect();
        if prev.is_some_and(|p| parents.binary_search(&p).is_ok()) {
            return Err(DecodeError::NonCanonical {
                what: "envelope parents",
                reason: "repeats the previous envelope",
            });
        }
        let payload = r.bytes_u32(MAX_PAYLOAD_LEN, "envelope payload")?.to_vec();
        let count = r.u32("envelope attachment count")?;
        let count = r.check_len(count.into(), MAX_ATTACHMENTS.into(), "envelope attachment count")?;
        r.check_len(32u64.saturating_mul(count as u64), 32 * u64::from(MAX_ATTACHMENTS), "envelope attachment hashes")?;
        let mut attachment_hashes = Vec::with_capacity(count);
        for _ in 0..count {
            attachment_hashes.push(Hash::from_bytes(r.array("envelope attachment hash")?));
        }
        let body = r.consumed().get(start..).unwrap_or_default();
        let id = EnvelopeId(Hash::digest(context::ENVELOPE_ID, &[body]));
        let signature = r.array("envelope signature")?;
        let mut attachments = Attachments::with_capacity(count, r.remaining());
        let mut total = 0usize;
        for _ in 0..count {
            let attachment = r.bytes_u32(MAX_ATTACHMENT_LEN, "envelope attachment")?;
            total = total.saturating_add(attachment.len());
            if total > MAX_ATTACHMENTS_TOTAL {
                return Err(DecodeError::TooLarge {
                    what: "envelope attachments",
                    len: total as u64,
                    max: MAX_ATTACHMENTS_TOTAL as u64,
                });
            }
            attachments.push(attachment);
        }
        Ok(Self {
            kind,
            author,
            seq,
            prev,
            hlc,
            parents,
            payload,
            attachment_hashes,
            withheld_hashes: Vec::new(),
            attachments,
            signature,
            id,
        })
    }

    /// Checks that the author may write this envelope and that the signature verifies for the
    /// registry's identity.
    pub fn verify(self, registry: &DeviceRegistry) -> Result<VerifiedEnvelope, VerifyError> {
        let cert = registry.authorize(&self.author, self.seq, self.hlc.wall_ms)?;
        if !cert.verify_device_signature(&self.signing_message(registry.identity()), &self.signature) {
            return Err(VerifyError::BadSignature { what: "envelope" });
        }
        self.check_attachments()?;
        Ok(VerifiedEnvelope(self))
    }

    /// Every attachment that is present must match the hash the signed body commits to.
    fn check_attachments(&self) -> Result<(), VerifyError> {
        for (index, (attachment, hash)) in self.attachments.iter().zip(&self.attachment_hashes).enumerate() {
            if let Some(bytes) = attachment
                && attachment_hash(bytes) != *hash
            {
                return Err(VerifyError::AttachmentMismatch { index });
            }
        }
        Ok(())
    }

    fn signing_message(&self, identity: &IdentityId) -> Vec<u8> {
        signing_message(domain::ENVELOPE, identity, &self.id.0)
    }

    /// The ID (hash of the signed body).
    pub fn id(&self) -> EnvelopeId {
        self.id
    }
    /// The claimed author.
    pub fn author(&self) -> &DeviceId {
        &self.author
    }
    /// The claimed place in the author's chain.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// The claimed timestamp.
    pub fn hlc(&self) -> Timestamp {
        self.hlc
    }
}

/// An envelope whose author and signature have been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedEnvelope(Envelope);

impl VerifiedEnvelope {
    /// The ID.
    pub fn id(&self) -> EnvelopeId {
        self.0.id
    }
    /// Payload type.
    pub fn kind(&self) -> u8 {
        self.0.kind
    }
    /// The author.
    pub fn author(&self) -> &DeviceId {
        &self.0.author
    }
    /// Place in the author's chain, from 1.
    pub fn seq(&self) -> u64 {
        self.0.seq
    }
    /// The author's previous envelope.
    pub fn prev(&self) -> Option<EnvelopeId> {
        self.0.prev
    }
    /// When it was written.
    pub fn hlc(&self) -> Timestamp {
        self.0.hlc
    }
    /// Other envelopes it causally follows, ascending.
    pub fn parents(&self) -> &[EnvelopeId] {
        &self.0.parents
    }
    /// Every envelope it causally follows: `prev` and `parents`.
    pub fn dependencies(&self) -> impl Iterator<Item = EnvelopeId> + '_ {
        self.0.prev.into_iter().chain(self.0.parents.iter().copied())
    }
    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.0.payload
    }
    /// The attachments, `None` where redacted.
    pub fn attachments(&self) -> impl ExactSizeIterator<Item = Option<&[u8]>> + '_ {
        self.0.attachments.iter()
    }
    /// Attachment `index`, `None` where redacted or past the end.
    pub fn attachment(&self, index: usize) -> Option<&[u8]> {
        self.0.attachments.get(index).flatten()
    }
    /// Drops attachment `index` (its hash stays in the signed body, so the envelope still
    /// verifies; its bytes are zeroed at once). Returns whether anything was dropped.
    pub fn redact_attachment(&mut self, index: usize) -> bool {
        // The body must still list its hash: keep it before the bytes go.
        let hash = self.0.attachment_hash_at(index);
        let listed = !self.0.attachment_hashes.is_empty();
        if !self.0.attachments.redact(index) {
            return false;
        }
        if !listed
            && let Ok(at) = u32::try_from(index)
            && let Err(slot) = self.0.withheld_hashes.binary_search_by_key(&at, |(i, _)| *i)
        {
            self.0.withheld_hashes.insert(slot, (at, hash));
        }
        true
    }
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.0.encode()
    }
    pub(crate) fn write_to(&self, w: &mut Writer) {
        self.0.write_to(w);
    }
    /// Size of the encoding.
    pub fn encoded_len(&self) -> usize {
        self.0.encoded_len()
    }
    /// The envelope itself.
    pub fn envelope(&self) -> &Envelope {
        &self.0
    }
    /// Trusts an envelope without checking it. Only for envelopes read back from this device's
    /// own storage after its integrity check (see `docs/protocol.md`, persistence).
    pub fn assume_verified(mut envelope: Envelope) -> Self {
        envelope.forget_present_hashes();
        Self(envelope)
    }
}

/// Where a verified envelope falls in its author's chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainPosition {
    /// The next one: append it.
    Next,
    /// Already have exactly this one.
    Duplicate,
    /// Earlier envelopes of the author are missing; hold it until they arrive.
    Gap {
        /// The sequence number expected next.
        expected_seq: u64,
    },
}

/// Proof that an author signed two different envelopes for one place in its chain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("device {author} signed two different envelopes as its write #{seq}")]
pub struct Equivocation {
    /// The equivocating device.
    pub author: DeviceId,
    /// The contested place.
    pub seq: u64,
    /// The envelope held for that place.
    pub existing: EnvelopeId,
    /// The other one (named directly, or through the `prev` link of a later envelope).
    pub conflicting: EnvelopeId,
}

/// Every author's chain as far as it has been accepted: each `(author, seq)` maps to one ID.
#[derive(Clone, Debug, Default)]
pub struct AuthorChains {
    ids: BTreeMap<DeviceId, Vec<EnvelopeId>>,
}

impl AuthorChains {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// The author's latest accepted envelope: `(seq, id)`.
    pub fn head(&self, author: &DeviceId) -> Option<(u64, EnvelopeId)> {
        let chain = self.ids.get(author)?;
        Some((chain.len() as u64, *chain.last()?))
    }

    /// The ID accepted for `(author, seq)`.
    pub fn id_at(&self, author: &DeviceId, seq: u64) -> Option<EnvelopeId> {
        let index = usize::try_from(seq.checked_sub(1)?).ok()?;
        self.ids.get(author)?.get(index).copied()
    }

    /// Every author with its chain length.
    pub fn heads(&self) -> impl Iterator<Item = (&DeviceId, u64)> {
        self.ids.iter().map(|(author, chain)| (author, chain.len() as u64))
    }

    /// Places `envelope` without changing anything.
    pub fn check(&self, envelope: &VerifiedEnvelope) -> Result<ChainPosition, Equivocation> {
        let author = *envelope.author();
        let seq = envelope.seq();
        let have = self.ids.get(&author).map_or(0, |c| c.len() as u64);
        if seq <= have {
            let existing = self.id_at(&author, seq).unwrap_or(envelope.id());
            return if existing == envelope.id() {
                Ok(ChainPosition::Duplicate)
            } else {
                Err(Equivocation { author, seq, existing, conflicting: envelope.id() })
            };
        }
        if seq > have.saturating_add(1) {
            return Ok(ChainPosition::Gap { expected_seq: have.saturating_add(1) });
        }
        match (self.head(&author), envelope.prev()) {
            (None, None) => Ok(ChainPosition::Next),
            (Some((_, head)), Some(prev)) if head == prev => Ok(ChainPosition::Next),
            (Some((head_seq, head)), Some(prev)) => {
                Err(Equivocation { author, seq: head_seq, existing: head, conflicting: prev })
            }
            // `seq == have + 1` with `prev` present exactly when `seq > 1`: other cases cannot decode.
            _ => Ok(ChainPosition::Gap { expected_seq: have.saturating_add(1) }),
        }
    }

    /// Places `envelope` and, if it is the next one, appends it.
    pub fn append(&mut self, envelope: &VerifiedEnvelope) -> Result<ChainPosition, Equivocation> {
        let position = self.check(envelope)?;
        if position == ChainPosition::Next {
            match self.ids.entry(*envelope.author()) {
                Entry::Vacant(slot) => {
                    slot.insert(vec![envelope.id()]);
                }
                Entry::Occupied(mut slot) => slot.get_mut().push(envelope.id()),
            }
        }
        Ok(position)
    }
}
