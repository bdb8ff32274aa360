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

use std::borrow::Cow;
use std::collections::{BTreeMap, btree_map::Entry};

use crate::certificate::DeviceRegistry;
use crate::codec::{Reader, Writer};
use crate::error::{DecodeError, VerifyError};
use crate::hash::{Hash, context};
use crate::hlc::Timestamp;
use crate::identity::{DeviceId, DeviceSecretKey, IdentityId, domain, signing_message};

mod attachments;
mod payload;

pub(crate) use attachments::PackSpec;
use attachments::{Attachments, HeldBlock};
use payload::Payload;

/// The block of a packed envelope last inflated by [`VerifiedEnvelope::attachment_cached`], kept
/// to read its neighbours: reading visits one by one from a packed envelope would otherwise
/// inflate ~6 KB for each.
#[derive(Debug, Default)]
pub struct BlockCache {
    envelope: Option<EnvelopeId>,
    block: HeldBlock,
}

/// The envelope format byte this build writes and reads: type 1, version 1.
pub const ENVELOPE_FORMAT: u8 = 0x11;
/// The first byte of an envelope as this device *stores* it with packed attachments (see
/// `attachments`): this byte, the canonical body, the signature, then the packed attachments.
/// Never sent: peers get the canonical encoding.
const STORED_PACKED_FORMAT: u8 = 0x19;
/// The first byte of an envelope as this device stores it with its payload deflated (see
/// `payload`): this byte, the envelope's ID, the signed payload's length, then the canonical
/// encoding with the deflated bytes in the payload's place. Never sent.
const STORED_DEFLATED_FORMAT: u8 = 0x1a;
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
    payload: Payload,
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

/// The hash that commits to an attachment.
pub fn attachment_hash(attachment: &[u8]) -> Hash {
    Hash::digest(&context::ATTACHMENT, &[attachment])
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
            payload: Payload::Plain(payload),
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
        envelope.id = EnvelopeId(Hash::digest(&context::ENVELOPE_ID, &[body.as_bytes()]));
        envelope.signature = author.sign(&signing_message(domain::ENVELOPE, identity, &envelope.id.0));
        Ok(VerifiedEnvelope(envelope))
    }

    fn encode_body(&self) -> Writer {
        let mut w = Writer::with_capacity(self.encoded_len());
        let _ = self.write_body(&mut w);
        w
    }

    /// Writes the body; returns whether it is the body as signed. It is not only if part of the
    /// envelope no longer reads (a deflated payload or a packed block that does not inflate: a
    /// bug): what is written then keeps its length but not its hash.
    fn write_body(&self, w: &mut Writer) -> bool {
        match self.payload.get() {
            Ok(payload) => self.write_body_with(w, &payload),
            Err(_) => {
                self.write_body_with(w, &vec![0; self.payload.len()]);
                false
            }
        }
    }

    /// Writes the body with `payload` in the payload's place; returns whether every attachment's
    /// hash was known (from its bytes, or kept when it was redacted).
    fn write_body_with(&self, w: &mut Writer, payload: &[u8]) -> bool {
        w.u8(ENVELOPE_FORMAT).u8(self.kind).raw(self.author.as_bytes()).u64(self.seq);
        if let Some(prev) = &self.prev {
            w.raw(prev.as_bytes());
        }
        w.u64(self.hlc.wall_ms).u32(self.hlc.counter);
        let parents: Vec<[u8; 32]> = self.parents.iter().map(|p| *p.as_bytes()).collect();
        w.hashes(&parents).bytes_u32(payload);
        w.u32(u32::try_from(self.attachments.len()).unwrap_or(u32::MAX));
        if self.attachment_hashes.len() == self.attachments.len() {
            for hash in &self.attachment_hashes {
                w.raw(hash.as_bytes());
            }
            return true;
        }
        // Recomputed in one pass (a packed form inflates each block once, not once a visit).
        let mut known = true;
        for (index, attachment) in self.attachments.iter().enumerate() {
            let hash = match attachment {
                Some(bytes) => attachment_hash(&bytes),
                None => self.withheld_hash(index).unwrap_or_else(|| {
                    known = false;
                    Hash::ZERO
                }),
            };
            w.raw(hash.as_bytes());
        }
        known
    }

    fn withheld_hash(&self, index: usize) -> Option<Hash> {
        u32::try_from(index)
            .ok()
            .and_then(|i| self.withheld_hashes.binary_search_by_key(&i, |(at, _)| *at).ok())
            .and_then(|at| self.withheld_hashes.get(at))
            .map(|(_, hash)| *hash)
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
            .filter(|(index, _)| matches!(self.attachments.len_of(*index), Some(None)))
            .filter_map(|(index, hash)| Some((u32::try_from(index).ok()?, hash)))
            .collect();
    }

    /// Size of the encoding.
    pub fn encoded_len(&self) -> usize {
        let prev = if self.prev.is_some() { 32 } else { 0 };
        // format, kind, author, seq, hlc, parent count, payload length, attachment count, signature
        const FIXED: usize = 1 + 1 + 32 + 8 + Timestamp::ENCODED_LEN + 1 + 4 + 4 + 64;
        let attachments: usize = (0..self.attachments.len())
            .map(|i| self.attachments.len_of(i).flatten().unwrap_or(0).saturating_add(4))
            .sum();
        FIXED
            .saturating_add(prev)
            .saturating_add(32usize.saturating_mul(self.parents.len()))
            .saturating_add(self.payload.len())
            .saturating_add(32usize.saturating_mul(self.attachments.len()))
            .saturating_add(attachments)
    }

    /// The canonical encoding (of what is held: see [`VerifiedEnvelope::encode_as_signed`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len());
        let (_, as_signed) = self.write_to(&mut w);
        // An attachment that no longer reads is written empty: only then may the lengths differ.
        debug_assert!(!as_signed || w.len() == self.encoded_len());
        w.into_bytes()
    }

    /// The canonical encoding, if it is the envelope as signed: `None` if part of it no longer
    /// reads (see `write_body`).
    fn encode_as_signed(&self) -> Option<Vec<u8>> {
        let mut w = Writer::with_capacity(self.encoded_len());
        let (_, as_signed) = self.write_to(&mut w);
        as_signed.then(|| w.into_bytes())
    }

    /// Appends the canonical encoding to `w` (storage writes it straight into its record);
    /// returns where the body lies in `w` and whether it is the body as signed.
    pub(crate) fn write_to(&self, w: &mut Writer) -> (core::ops::Range<usize>, bool) {
        let start = w.len();
        let as_signed = self.write_body(w);
        let body = start..w.len();
        w.raw(&self.signature);
        for attachment in self.attachments.iter() {
            w.bytes_u32(attachment.as_deref().unwrap_or_default());
        }
        (body, as_signed)
    }

    /// Appends the form this device stores: the canonical encoding, or with `pack` the packed
    /// one (see `attachments`; an envelope held packed is written packed regardless).
    /// A payload held deflated is stored deflated (unless the attachments are packed: a history
    /// envelope's payload is small). Returns where the signed body lies in `w`, if it is written
    /// as signed (not so with a deflated payload).
    pub(crate) fn write_stored_to(&self, w: &mut Writer, pack: Option<PackSpec>) -> Option<core::ops::Range<usize>> {
        if let Some(spec) = self.attachments.packed_spec().or(pack.filter(|_| self.attachments.len() > 0)) {
            w.u8(STORED_PACKED_FORMAT);
            let start = w.len();
            // Whether it is as signed, a rewrite's check finds out from the bytes.
            let _ = self.write_body(w);
            let body = start..w.len();
            w.raw(&self.signature);
            self.attachments.write_packed(spec, w);
            return Some(body);
        }
        let Some((len, deflated)) = self.payload.deflated() else {
            return Some(self.write_to(w).0);
        };
        w.u8(STORED_DEFLATED_FORMAT).raw(self.id.0.as_bytes()).u32(len);
        let _ = self.write_body_with(w, deflated);
        w.raw(&self.signature);
        for attachment in self.attachments.iter() {
            w.bytes_u32(attachment.as_deref().unwrap_or_default());
        }
        None
    }

    /// Decodes what [`Envelope::write_stored_to`] wrote. Only for this device's own storage, read
    /// under its MAC (a packed form's blocks are not inflated here).
    pub(crate) fn decode_stored(bytes: &[u8]) -> Result<Self, DecodeError> {
        fn stored_form(rest: &[u8]) -> Result<Reader<'_>, DecodeError> {
            if rest.len() > MAX_ENVELOPE_LEN {
                return Err(DecodeError::TooLarge {
                    what: "envelope",
                    len: rest.len() as u64,
                    max: MAX_ENVELOPE_LEN as u64,
                });
            }
            Ok(Reader::new(rest))
        }
        match bytes.split_first() {
            Some((&STORED_PACKED_FORMAT, rest)) => Self::decode_stored_packed(stored_form(rest)?),
            Some((&STORED_DEFLATED_FORMAT, rest)) => Self::decode_stored_deflated(stored_form(rest)?),
            _ => Self::decode(bytes),
        }
    }

    fn decode_stored_deflated(mut r: Reader<'_>) -> Result<Self, DecodeError> {
        // The ID as stored, under the record's MAC: the body as written hashes to something else.
        let id = EnvelopeId(Hash::from_bytes(r.array("stored envelope id")?));
        let len = r.u32("stored payload length")?;
        if len > MAX_PAYLOAD_LEN {
            return Err(DecodeError::TooLarge {
                what: "stored payload",
                len: u64::from(len),
                max: u64::from(MAX_PAYLOAD_LEN),
            });
        }
        let mut envelope = Self::read(&mut r)?;
        r.finish("stored envelope")?;
        // Read as a plain payload: its bytes are the deflated ones.
        let deflated = match std::mem::take(&mut envelope.payload) {
            Payload::Plain(bytes) => bytes.into_boxed_slice(),
            Payload::Deflated { bytes, .. } => bytes,
        };
        envelope.payload = Payload::Deflated { len, bytes: deflated };
        envelope.id = id;
        Ok(envelope)
    }

    fn decode_stored_packed(mut r: Reader<'_>) -> Result<Self, DecodeError> {
        let (mut envelope, count) = Self::read_signed(&mut r)?;
        envelope.attachments = Attachments::read_packed(&mut r, count)?;
        r.finish("stored envelope")?;
        Ok(envelope)
    }

    /// Damages packed block `block` (see `testing::break_packed_block`).
    #[cfg(feature = "test-util")]
    pub(crate) fn break_packed_block(&mut self, block: usize) -> bool {
        self.attachments.break_block(block)
    }

    /// Damages a deflated payload (see `testing::break_deflated_payload`).
    #[cfg(feature = "test-util")]
    pub(crate) fn break_deflated_payload(&mut self) -> bool {
        let Payload::Deflated { bytes, .. } = &mut self.payload else { return false };
        *bytes = Box::new([0xff; 8]);
        true
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

    /// Reads everything up to and including the signature; returns the envelope (without its
    /// attachments) and how many attachments follow.
    fn read_signed(r: &mut Reader<'_>) -> Result<(Self, usize), DecodeError> {
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
        let payload = Payload::Plain(r.bytes_u32(MAX_PAYLOAD_LEN, "envelope payload")?.to_vec());
        let count = r.u32("envelope attachment count")?;
        let count = r.check_len(count.into(), MAX_ATTACHMENTS.into(), "envelope attachment count")?;
        r.check_len(32u64.saturating_mul(count as u64), 32 * u64::from(MAX_ATTACHMENTS), "envelope attachment hashes")?;
        let mut attachment_hashes = Vec::with_capacity(count);
        for _ in 0..count {
            attachment_hashes.push(Hash::from_bytes(r.array("envelope attachment hash")?));
        }
        let body = r.consumed().get(start..).unwrap_or_default();
        let id = EnvelopeId(Hash::digest(&context::ENVELOPE_ID, &[body]));
        let signature = r.array("envelope signature")?;
        let envelope = Self {
            kind,
            author,
            seq,
            prev,
            hlc,
            parents,
            payload,
            attachment_hashes,
            withheld_hashes: Vec::new(),
            attachments: Attachments::default(),
            signature,
            id,
        };
        Ok((envelope, count))
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let (mut envelope, count) = Self::read_signed(r)?;
        let mut attachments = Attachments::with_capacity(count, r.remaining());
        let mut total = 0usize;
        for _ in 0..count {
            let attachment = r.bytes_u32(MAX_ATTACHMENT_LEN, "envelope attachment")?;
            total = attachments::add_to_attachments_total(total, attachment.len())?;
            attachments.push(attachment);
        }
        envelope.attachments = attachments;
        Ok(envelope)
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
                && attachment_hash(&bytes) != *hash
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
    /// The payload as signed: borrowed, or inflated if held deflated (see
    /// [`VerifiedEnvelope::payload_deflated`]; an error only if those bytes no longer inflate).
    pub fn payload(&self) -> Result<Cow<'_, [u8]>, DecodeError> {
        self.0.payload.get()
    }
    /// Holds the payload deflated from now on if it is large and deflates well (see `payload`):
    /// for an envelope now durable in this device's storage.
    pub(crate) fn deflate_payload(&mut self) {
        self.0.payload.deflate();
    }
    /// Whether the payload is held deflated.
    pub fn payload_deflated(&self) -> bool {
        self.0.payload.deflated().is_some()
    }
    /// Bytes held in memory for the payload, deflated or not.
    pub fn payload_held_len(&self) -> usize {
        self.0.payload.held_len()
    }
    /// The attachments, `None` where redacted. Borrowed, unless held packed (a stored history
    /// envelope of many visits: see `docs/protocol.md`).
    pub fn attachments(&self) -> impl ExactSizeIterator<Item = Option<Cow<'_, [u8]>>> + '_ {
        self.0.attachments.iter()
    }
    /// How many attachments it carries, redacted ones included.
    pub fn attachment_count(&self) -> usize {
        self.0.attachments.len()
    }
    /// Attachment `index`, `None` where redacted or past the end.
    pub fn attachment(&self, index: usize) -> Option<Cow<'_, [u8]>> {
        self.0.attachments.get(index).flatten()
    }
    /// [`VerifiedEnvelope::attachment`], through `cache` (see [`BlockCache`]).
    pub fn attachment_cached(&self, index: usize, cache: &mut BlockCache) -> Option<Cow<'_, [u8]>> {
        if cache.envelope != Some(self.0.id) {
            *cache = BlockCache { envelope: Some(self.0.id), block: None };
        }
        self.0.attachments.get_with_block(index, &mut cache.block).flatten()
    }
    /// The first `n` bytes of attachment `index` (all of it if shorter), `None` where redacted or
    /// past the end: borrowed even when held packed, for `n` up to the packed head length.
    pub fn attachment_prefix(&self, index: usize, n: usize) -> Option<Cow<'_, [u8]>> {
        self.0.attachments.prefix(index, n)
    }
    /// Holds the attachments packed from now on (see `attachments`): for an envelope now
    /// durable in this device's storage, whose attachments are read far less than kept.
    pub(crate) fn pack_attachments(&mut self, spec: PackSpec) {
        self.0.attachments.pack(spec);
    }
    /// Whether the attachments are held packed.
    pub fn attachments_packed(&self) -> bool {
        self.0.attachments.is_packed()
    }
    /// Bytes held in memory for the attachments, packed or not (buffers' contents).
    pub fn attachments_held_len(&self) -> usize {
        self.0.attachments.held_len()
    }
    /// Drops attachment `index` (its hash stays in the signed body, so the envelope still
    /// verifies; its bytes are gone from memory at once). Returns whether anything was dropped.
    pub fn redact_attachment(&mut self, index: usize) -> bool {
        self.redact_attachments(&[index]) == 1
    }
    /// Drops the attachments at `indices` (best ascending), as
    /// [`VerifiedEnvelope::redact_attachment`] does each, in one pass. Returns how many were
    /// dropped.
    pub fn redact_attachments(&mut self, indices: &[usize]) -> usize {
        // The body must still list their hashes: keep them before the bytes go.
        let listed = !self.0.attachment_hashes.is_empty();
        let mut withheld = Vec::new();
        let count = self.0.attachments.redact_many(indices, |index, bytes| {
            if !listed && let Ok(at) = u32::try_from(index) {
                withheld.push((at, attachment_hash(bytes)));
            }
        });
        // Each in its place (at the end when redacted in ascending order, as callers do).
        for (at, hash) in withheld {
            if let Err(slot) = self.0.withheld_hashes.binary_search_by_key(&at, |(i, _)| *i) {
                self.0.withheld_hashes.insert(slot, (at, hash));
            }
        }
        count
    }
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.0.encode()
    }
    /// The canonical encoding, if it is still the envelope as signed: `None` only if part of
    /// what this device holds of it no longer reads (a bug; see `EngineEvent::EnvelopeUnreadable`).
    pub fn encode_as_signed(&self) -> Option<Vec<u8>> {
        self.0.encode_as_signed()
    }
    pub(crate) fn write_stored_to(&self, w: &mut Writer, pack: Option<PackSpec>) -> Option<core::ops::Range<usize>> {
        self.0.write_stored_to(w, pack)
    }
    /// Whether this envelope's body, as written out — `written` if `write_stored_to` just wrote
    /// it as signed, else written again here — hashes to its ID: false only if an attachment or
    /// a deflated payload can no longer be read.
    pub(crate) fn body_matches_id(&self, written: Option<&[u8]>) -> bool {
        let hash = match written {
            Some(body) => Hash::digest(&context::ENVELOPE_ID, &[body]),
            None => Hash::digest(&context::ENVELOPE_ID, &[self.0.encode_body().as_bytes()]),
        };
        hash == self.0.id.0
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
