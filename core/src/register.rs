//! The signed last-writer-wins register (DESIGN §4).
//!
//! Each write is a [`RegisterValue`]: `(path, value, HLC, author, supersedes)`, where
//! `supersedes` names the values the writer had seen for this register. A value is signed by
//! the **envelope that carries it**: the author signs the envelope, the envelope's payload holds
//! the value's bytes, and a receiver refuses a value whose author is not the envelope's (see
//! `docs/protocol.md`, "Register value"). One signature per transaction instead of one per
//! field: a bookmark add used to cost four Ed25519 signatures, now it costs one, or a share of
//! one when local edits are committed in groups. The author and the time stay part of every
//! value, and the envelope that signed it stays in the log, so who wrote a password and when is
//! still provable years later ([`crate::model::BrowserState::envelope_of_value`]).
//!
//! Values of format version 1, each with its own signature, are still read (stores and peers of
//! earlier builds) and verified on their own; nothing writes them any more.
//!
//! A [`Register`] keeps **one slot per author** (an author's newer write replaces its older one,
//! ordered by the author's own HLC) and resolves on read:
//!
//! 1. a value superseded by another visible value loses, whatever the clocks say;
//! 2. among the rest, the greatest `(HLC, author, id)` wins;
//! 3. a value stamped more than the allowed skew ahead of local time is *held back* — stored and
//!    merged, but invisible until local time reaches it.
//!
//! A writer supersedes every value it holds, held-back ones included, so a far-future value loses
//! to any write made after it arrived, and a device whose clock was wrong and is corrected is
//! never locked out. Merging is a per-slot maximum under a total order, so it is commutative,
//! associative and idempotent; resolution is a pure function of the merged state and `now`.

use crate::certificate::DeviceRegistry;
use crate::codec::{Reader, Writer};
use crate::error::{DecodeError, VerifyError};
use crate::hash::{Hash, context};
use crate::hlc::Timestamp;
use crate::identity::{DeviceId, DeviceSecretKey, IdentityId, domain, signing_message};
use std::sync::Arc;

/// Format byte of a self-signed register value: type 4, version 1 (read, no longer written).
const FORMAT_SIGNED: u8 = 0x41;
/// Format byte of a register value signed by its envelope: type 4, version 2.
const FORMAT_ENVELOPE_SIGNED: u8 = 0x42;
/// Longest register path, in bytes.
pub const MAX_PATH_LEN: u16 = 512;
/// Largest value, in bytes (64 KiB).
pub const MAX_VALUE_LEN: u32 = 64 * 1024;
/// Most values one write may supersede (one per author slot).
pub const MAX_SUPERSEDES: u8 = 64;

/// A device ID held by every value it wrote. A replica holds tens of thousands of values, nearly
/// all by a handful of devices, so each value points at one shared copy of its author's 32-byte
/// key (4 bytes in wasm) — the values of one envelope share its author's.
pub type SharedDeviceId = Arc<DeviceId>;

/// The name of a register value: the hash of its author and its body.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ValueId(pub Hash);

/// Why a register value could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterWriteError {
    /// The path is over [`MAX_PATH_LEN`].
    #[error("register path of {0} bytes is over the {MAX_PATH_LEN}-byte limit")]
    PathTooLong(usize),
    /// The value is over [`MAX_VALUE_LEN`].
    #[error("value of {0} bytes is over the {MAX_VALUE_LEN}-byte limit")]
    ValueTooLarge(usize),
    /// The register holds more slots than one write may supersede.
    #[error("the register has {0} writers, over the limit of {MAX_SUPERSEDES}")]
    TooManyWriters(usize),
}

/// One write of a register. Decoded but **not authenticated**: a receiver
/// takes it only from a verified envelope of its author, and checks a self-signed (version 1)
/// value with [`RegisterValue::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterValue {
    /// Shared with the replica's register map, which keys the register by it (one copy of each
    /// path, not two: ~22,500 registers in the realistic profile).
    path: Arc<str>,
    author: SharedDeviceId,
    hlc: Timestamp,
    /// Boxed slices, not vectors: exact size, and a replica holds one value per register.
    supersedes: Box<[ValueId]>,
    value: Box<[u8]>,
    /// Version 1 values carry their own signature; version 2 values are signed by their envelope.
    /// Boxed: almost every value has none, and replicas hold one value per register.
    signature: Option<Box<[u8; 64]>>,
    id: ValueId,
}

fn check_write(path: &str, value: &[u8], supersedes: &mut Vec<ValueId>) -> Result<(), RegisterWriteError> {
    if path.len() > usize::from(MAX_PATH_LEN) {
        return Err(RegisterWriteError::PathTooLong(path.len()));
    }
    if value.len() > MAX_VALUE_LEN as usize {
        return Err(RegisterWriteError::ValueTooLarge(value.len()));
    }
    supersedes.sort_unstable();
    supersedes.dedup();
    if supersedes.len() > usize::from(MAX_SUPERSEDES) {
        return Err(RegisterWriteError::TooManyWriters(supersedes.len()));
    }
    Ok(())
}

impl RegisterValue {
    /// A new write by `author`, to be signed by the envelope that carries it. Prefer
    /// [`Register::write`], which fills in `supersedes`.
    pub fn write(
        author: &SharedDeviceId,
        path: &str,
        value: Vec<u8>,
        hlc: Timestamp,
        mut supersedes: Vec<ValueId>,
    ) -> Result<VerifiedRegisterValue, RegisterWriteError> {
        check_write(path, &value, &mut supersedes)?;
        let mut v = RegisterValue {
            path: Arc::from(path),
            author: Arc::clone(author),
            hlc,
            supersedes: supersedes.into_boxed_slice(),
            value: value.into_boxed_slice(),
            signature: None,
            id: ValueId(Hash::ZERO),
        };
        v.id = v.compute_id(v.encode_body().as_bytes());
        // Ours: it will be signed with the envelope this device makes.
        Ok(VerifiedRegisterValue(v))
    }

    /// A self-signed write in the version 1 format, as builds before 2026-12 made them (kept so
    /// that their stores and their peers keep being read, and for the tests of that path).
    pub fn sign_v1(
        author: &DeviceSecretKey,
        identity: &IdentityId,
        path: &str,
        value: Vec<u8>,
        hlc: Timestamp,
        mut supersedes: Vec<ValueId>,
    ) -> Result<VerifiedRegisterValue, RegisterWriteError> {
        check_write(path, &value, &mut supersedes)?;
        let mut v = RegisterValue {
            path: Arc::from(path),
            author: Arc::new(author.public()),
            hlc,
            supersedes: supersedes.into_boxed_slice(),
            value: value.into_boxed_slice(),
            signature: Some(Box::new([0; 64])),
            id: ValueId(Hash::ZERO),
        };
        v.id = v.compute_id(v.encode_body().as_bytes());
        v.signature = Some(Box::new(author.sign(&signing_message(domain::REGISTER_VALUE, identity, &v.id.0))));
        Ok(VerifiedRegisterValue(v))
    }

    fn compute_id(&self, body: &[u8]) -> ValueId {
        match self.signature {
            Some(_) => ValueId(Hash::digest(&context::REGISTER_VALUE_ID, &[body])),
            // The author is implicit in the encoding (it is the envelope's), so the name binds it.
            None => ValueId(Hash::digest(&context::REGISTER_VALUE_ID_V2, &[self.author.as_bytes(), body])),
        }
    }

    fn encode_body(&self) -> Writer {
        let mut w = Writer::with_capacity(self.encoded_len());
        let supersedes: Vec<[u8; 32]> = self.supersedes.iter().map(|s| *s.0.as_bytes()).collect();
        match self.signature {
            Some(_) => {
                w.u8(FORMAT_SIGNED).bytes_u16(self.path.as_bytes()).raw(self.author.as_bytes());
            }
            None => {
                w.u8(FORMAT_ENVELOPE_SIGNED).bytes_u16(self.path.as_bytes());
            }
        }
        w.u64(self.hlc.wall_ms).u32(self.hlc.counter).hashes(&supersedes).bytes_u32(&self.value);
        w
    }

    /// Size of the encoding.
    pub fn encoded_len(&self) -> usize {
        const FIXED: usize = 1 + 2 + Timestamp::ENCODED_LEN + 1 + 4;
        let own = if self.signature.is_some() { 32 + 64 } else { 0 };
        FIXED
            .saturating_add(own)
            .saturating_add(self.path.len())
            .saturating_add(32usize.saturating_mul(self.supersedes.len()))
            .saturating_add(self.value.len())
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = self.encode_body();
        if let Some(signature) = &self.signature {
            w.raw(signature.as_slice());
        }
        w.into_bytes()
    }

    /// Decodes untrusted bytes (the whole input must be one value) found in an envelope of
    /// `carrier`: a version 2 value is `carrier`'s; a version 1 value names its own author, which
    /// is only a claim until checked against the carrier and verified. The value shares
    /// `carrier`'s copy of the key when the author is the carrier.
    pub fn decode(bytes: &[u8], carrier: &SharedDeviceId) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let start = r.position();
        let format = r.format_of("register value", &[FORMAT_SIGNED, FORMAT_ENVELOPE_SIGNED])?;
        let path: Arc<str> = Arc::from(r.str_u16(MAX_PATH_LEN, "register path")?);
        let author = if format == FORMAT_SIGNED {
            let claimed = DeviceId::from_claimed_bytes(r.array("register author")?);
            if claimed == **carrier { Arc::clone(carrier) } else { Arc::new(claimed) }
        } else {
            Arc::clone(carrier)
        };
        let hlc = Timestamp { wall_ms: r.u64("register hlc")?, counter: r.u32("register hlc")? };
        let supersedes = r
            .sorted_hashes(MAX_SUPERSEDES, "register supersedes")?
            .into_iter()
            .map(|h| ValueId(Hash::from_bytes(h)))
            .collect();
        let value = Box::from(r.bytes_u32(MAX_VALUE_LEN, "register value")?);
        let body = r.consumed().get(start..).unwrap_or_default();
        let signature = if format == FORMAT_SIGNED { Some(Box::new(r.array("register signature")?)) } else { None };
        let mut v = Self { path, author, hlc, supersedes, value, signature, id: ValueId(Hash::ZERO) };
        v.id = v.compute_id(body);
        r.finish("register value")?;
        Ok(v)
    }

    /// Whether this value carries its own signature (format version 1).
    pub fn is_self_signed(&self) -> bool {
        self.signature.is_some()
    }

    /// Checks a self-signed (version 1) value: its author is (or was) a device of the registry's
    /// identity and its signature verifies. Revocation is enforced where writes are ingested (it
    /// depends on the envelope's sequence number), so a revoked device's earlier values still
    /// verify here. A version 2 value has no signature of its own and never verifies here: it is
    /// authenticated by its envelope.
    pub fn verify(self, registry: &DeviceRegistry) -> Result<VerifiedRegisterValue, VerifyError> {
        let cert = registry.certificate(&self.author).ok_or(VerifyError::UnknownDevice { device: *self.author })?;
        let Some(signature) = &self.signature else {
            return Err(VerifyError::BadSignature { what: "register value (signed by its envelope)" });
        };
        let message = signing_message(domain::REGISTER_VALUE, registry.identity(), &self.id.0);
        if !cert.verify_device_signature(&message, signature) {
            return Err(VerifyError::BadSignature { what: "register value" });
        }
        Ok(VerifiedRegisterValue(self))
    }

    /// The ID.
    pub fn id(&self) -> ValueId {
        self.id
    }
    /// The author (for version 1 values, the claimed one).
    pub fn author(&self) -> &DeviceId {
        &self.author
    }
    /// The register path.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// An authenticated register value: one this device wrote, or one carried by a verified
/// envelope of its author (and, for a version 1 value, whose own signature verified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedRegisterValue(RegisterValue);

impl VerifiedRegisterValue {
    /// The ID.
    pub fn id(&self) -> ValueId {
        self.0.id
    }
    /// The register it belongs to.
    pub fn path(&self) -> &str {
        &self.0.path
    }
    /// The register path, shared (a replica keys its register map by it).
    pub(crate) fn shared_path(&self) -> &Arc<str> {
        &self.0.path
    }
    /// Who wrote it.
    pub fn author(&self) -> &DeviceId {
        &self.0.author
    }
    /// When.
    pub fn hlc(&self) -> Timestamp {
        self.0.hlc
    }
    /// The values it supersedes, ascending.
    pub fn supersedes(&self) -> &[ValueId] {
        &self.0.supersedes
    }
    /// The value.
    pub fn value(&self) -> &[u8] {
        &self.0.value
    }
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.0.encode()
    }
    /// The decoded value.
    pub fn as_value(&self) -> &RegisterValue {
        &self.0
    }
    /// Trusts a value without checking it: only for this device's own integrity-checked storage
    /// and for values of an envelope already authenticated.
    pub fn assume_verified(value: RegisterValue) -> Self {
        Self(value)
    }

    /// The order that decides both which value an author slot keeps and, among concurrent
    /// values, which one wins.
    fn rank(&self) -> (Timestamp, &DeviceId, ValueId) {
        (self.0.hlc, &self.0.author, self.0.id)
    }
}

/// The state of one register: the latest verified value of each author.
///
/// A plain vector sorted by author, not a map: a register almost always has one writer, and a
/// replica holds tens of thousands of registers (a `BTreeMap` allocated a node of ~1.7 KB for
/// each, which was most of a replica's memory and a third of a local edit's time in wasm).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Register {
    slots: Vec<VerifiedRegisterValue>,
}

impl Register {
    /// An empty register.
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges one value in: it fills or replaces its author's slot if it ranks higher than what
    /// the slot holds. Returns whether the state changed.
    pub fn insert(&mut self, value: VerifiedRegisterValue) -> bool {
        match self.slots.binary_search_by(|held| held.author().cmp(value.author())) {
            Ok(at) => match self.slots.get_mut(at) {
                Some(held) if held.rank() < value.rank() => {
                    *held = value;
                    true
                }
                _ => false,
            },
            Err(at) => {
                // Exactly one more: a register almost always has one author, and `Vec`'s first
                // growth reserves four values (over half a replica's register memory was spare
                // capacity).
                self.slots.reserve_exact(1);
                self.slots.insert(at, value);
                true
            }
        }
    }

    /// Merges another register's state in. Returns whether the state changed.
    pub fn merge(&mut self, other: &Register) -> bool {
        let mut changed = false;
        for value in &other.slots {
            changed |= self.insert(value.clone());
        }
        changed
    }

    /// Every held value, one per author (in author order), held-back ones included.
    pub fn values(&self) -> impl Iterator<Item = &VerifiedRegisterValue> {
        self.slots.iter()
    }

    /// The current value at local time `now_ms`, hiding values more than `max_skew_ms` ahead.
    pub fn current(&self, now_ms: u64, max_skew_ms: u64) -> Option<&VerifiedRegisterValue> {
        // Nearly every register holds one value (one author, no concurrent write): it is current
        // if visible (a value cannot supersede itself: its ID is the hash of what it supersedes).
        if let [only] = self.slots.as_slice() {
            return only.hlc().is_visible_at(now_ms, max_skew_ms).then_some(only);
        }
        let visible = || self.slots.iter().filter(|v| v.hlc().is_visible_at(now_ms, max_skew_ms));
        visible()
            .filter(|candidate| !visible().any(|other| other.supersedes().binary_search(&candidate.id()).is_ok()))
            .max_by(|a, b| a.rank().cmp(&b.rank()))
    }

    /// Writes a new value by `author` that supersedes every value held, and merges it in.
    pub fn write(
        &mut self,
        author: &SharedDeviceId,
        path: &str,
        value: Vec<u8>,
        hlc: Timestamp,
    ) -> Result<VerifiedRegisterValue, RegisterWriteError> {
        let supersedes: Vec<ValueId> = self.slots.iter().map(VerifiedRegisterValue::id).collect();
        let written = RegisterValue::write(author, path, value, hlc, supersedes)?;
        self.insert(written.clone());
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica holds one register per field, nearly all with one author: each must cost one
    /// value, not `Vec`'s first growth of four (that spare capacity was 9 MB of a 55 MB replica).
    #[test]
    fn a_register_reserves_only_the_values_it_holds() {
        let mut register = Register::new();
        let one = Arc::new(DeviceId::from_claimed_bytes([1; 32]));
        let two = Arc::new(DeviceId::from_claimed_bytes([2; 32]));
        register.write(&one, "b/x/title", b"first".to_vec(), Timestamp::from_wall_ms(1)).unwrap();
        assert_eq!(register.slots.capacity(), 1);
        register.write(&one, "b/x/title", b"again".to_vec(), Timestamp::from_wall_ms(2)).unwrap();
        assert_eq!(register.slots.capacity(), 1);
        register.write(&two, "b/x/title", b"other".to_vec(), Timestamp::from_wall_ms(3)).unwrap();
        assert_eq!((register.slots.len(), register.slots.capacity()), (2, 2));
    }

    /// What each register costs before its value's bytes: the values point at their author's
    /// shared key and hold their bytes and supersessions in exact-size boxes (it was 152 bytes
    /// natively and 120 in wasm with the key inline and two vectors).
    #[test]
    fn a_value_holds_its_author_by_a_pointer() {
        let pointer = core::mem::size_of::<usize>();
        // path (2), author (1), value (2) and supersedes (2) pointer-sized words, the signature's
        // box, the HLC and the ID.
        let expected = 8 * pointer + core::mem::size_of::<Timestamp>() + 32;
        assert!(core::mem::size_of::<RegisterValue>() <= expected, "{}", core::mem::size_of::<RegisterValue>());

        let author = Arc::new(DeviceId::from_claimed_bytes([7; 32]));
        let mut register = Register::new();
        let written = register.write(&author, "b/x/title", b"t".to_vec(), Timestamp::from_wall_ms(1)).unwrap();
        let decoded = RegisterValue::decode(&written.encode(), &author).unwrap();
        assert!(Arc::ptr_eq(&decoded.author, &author), "the decoded value shares the carrier's key");
        assert_eq!(decoded.id(), written.id());

        // A version 1 value names its author: the carrier's key is shared only when it is the
        // carrier; another device's claim keeps its own key (and is refused by the caller).
        use rand_chacha::rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        let (device, other) = (DeviceSecretKey::generate(&mut rng), DeviceSecretKey::generate(&mut rng));
        let identity = crate::identity::RootSecretKey::generate(&mut rng).public();
        let carrier = Arc::new(device.public());
        let hlc = Timestamp::from_wall_ms(2);
        let own = RegisterValue::sign_v1(&device, &identity, "b/x/title", b"v1".to_vec(), hlc, vec![]).unwrap();
        let decoded = RegisterValue::decode(&own.encode(), &carrier).unwrap();
        assert!(Arc::ptr_eq(&decoded.author, &carrier));
        assert_eq!(decoded.id(), own.id());
        let foreign = RegisterValue::sign_v1(&other, &identity, "b/x/title", b"v1".to_vec(), hlc, vec![]).unwrap();
        let decoded = RegisterValue::decode(&foreign.encode(), &carrier).unwrap();
        assert!(!Arc::ptr_eq(&decoded.author, &carrier));
        assert_eq!(decoded.author(), &other.public());
    }
}
