//! The signed last-writer-wins register (DESIGN §4).
//!
//! Each write is a [`RegisterValue`]: `(path, value, HLC, author, supersedes, signature)`, where
//! `supersedes` names the values the writer had seen for this register. A value is checkable on
//! its own ([`RegisterValue::verify`]), so an app can show who wrote it and when, years later.
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

use std::collections::BTreeMap;

use crate::certificate::DeviceRegistry;
use crate::codec::{Reader, Writer};
use crate::error::{DecodeError, VerifyError};
use crate::hash::{Hash, context};
use crate::hlc::Timestamp;
use crate::identity::{DeviceId, DeviceSecretKey, IdentityId, domain, signing_message};

/// Format byte of a register value: type 4, version 1.
const REGISTER_FORMAT: u8 = 0x41;
/// Longest register path, in bytes.
pub const MAX_PATH_LEN: u16 = 512;
/// Largest value, in bytes (64 KiB).
pub const MAX_VALUE_LEN: u32 = 64 * 1024;
/// Most values one write may supersede (one per author slot).
pub const MAX_SUPERSEDES: u8 = 64;

/// The name of a register value: the hash of its signed body.
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

/// One signed write of a register. Decoded but **not verified**: call [`RegisterValue::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterValue {
    path: String,
    author: DeviceId,
    hlc: Timestamp,
    supersedes: Vec<ValueId>,
    value: Vec<u8>,
    signature: [u8; 64],
    id: ValueId,
}

impl RegisterValue {
    /// Signs a write. Prefer [`Register::write`], which fills in `supersedes`.
    pub fn sign(
        author: &DeviceSecretKey,
        identity: &IdentityId,
        path: &str,
        value: Vec<u8>,
        hlc: Timestamp,
        mut supersedes: Vec<ValueId>,
    ) -> Result<VerifiedRegisterValue, RegisterWriteError> {
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
        let mut v = RegisterValue {
            path: path.to_owned(),
            author: author.public(),
            hlc,
            supersedes,
            value,
            signature: [0; 64],
            id: ValueId(Hash::ZERO),
        };
        let body = v.encode_body();
        v.id = ValueId(Hash::digest(context::REGISTER_VALUE_ID, &[body.as_bytes()]));
        v.signature = author.sign(&signing_message(domain::REGISTER_VALUE, identity, &v.id.0));
        Ok(VerifiedRegisterValue(v))
    }

    fn encode_body(&self) -> Writer {
        let mut w = Writer::with_capacity(self.encoded_len());
        let supersedes: Vec<[u8; 32]> = self.supersedes.iter().map(|s| *s.0.as_bytes()).collect();
        w.u8(REGISTER_FORMAT)
            .bytes_u16(self.path.as_bytes())
            .raw(self.author.as_bytes())
            .u64(self.hlc.wall_ms)
            .u32(self.hlc.counter)
            .hashes(&supersedes)
            .bytes_u32(&self.value);
        w
    }

    /// Size of the encoding.
    pub fn encoded_len(&self) -> usize {
        const FIXED: usize = 1 + 2 + 32 + Timestamp::ENCODED_LEN + 1 + 4 + 64;
        FIXED
            .saturating_add(self.path.len())
            .saturating_add(32usize.saturating_mul(self.supersedes.len()))
            .saturating_add(self.value.len())
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = self.encode_body();
        w.raw(&self.signature);
        w.into_bytes()
    }

    /// Decodes untrusted bytes (the whole input must be one value).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let start = r.position();
        r.format("register value", REGISTER_FORMAT)?;
        let path = r.str_u16(MAX_PATH_LEN, "register path")?.to_owned();
        // Only a claim until `verify` finds it among the registry's validated devices.
        let author = DeviceId::from_claimed_bytes(r.array("register author")?);
        let hlc = Timestamp { wall_ms: r.u64("register hlc")?, counter: r.u32("register hlc")? };
        let supersedes = r
            .sorted_hashes(MAX_SUPERSEDES, "register supersedes")?
            .into_iter()
            .map(|h| ValueId(Hash::from_bytes(h)))
            .collect();
        let value = r.bytes_u32(MAX_VALUE_LEN, "register value")?.to_vec();
        let body = r.consumed().get(start..).unwrap_or_default();
        let id = ValueId(Hash::digest(context::REGISTER_VALUE_ID, &[body]));
        let signature = r.array("register signature")?;
        r.finish("register value")?;
        Ok(Self { path, author, hlc, supersedes, value, signature, id })
    }

    /// Checks that the author is (or was) a device of the registry's identity and that the
    /// signature verifies. Revocation is enforced where writes are ingested (it depends on the
    /// envelope's sequence number), so a revoked device's earlier values still verify here.
    pub fn verify(self, registry: &DeviceRegistry) -> Result<VerifiedRegisterValue, VerifyError> {
        let cert = registry.certificate(&self.author).ok_or(VerifyError::UnknownDevice { device: self.author })?;
        let message = signing_message(domain::REGISTER_VALUE, registry.identity(), &self.id.0);
        if !cert.verify_device_signature(&message, &self.signature) {
            return Err(VerifyError::BadSignature { what: "register value" });
        }
        Ok(VerifiedRegisterValue(self))
    }

    /// Checks only the signature, for `identity`.
    pub fn verify_signature(self, identity: &IdentityId) -> Result<VerifiedRegisterValue, VerifyError> {
        let message = signing_message(domain::REGISTER_VALUE, identity, &self.id.0);
        if !self.author.verify(&message, &self.signature) {
            return Err(VerifyError::BadSignature { what: "register value" });
        }
        Ok(VerifiedRegisterValue(self))
    }

    /// The ID.
    pub fn id(&self) -> ValueId {
        self.id
    }
    /// The claimed author.
    pub fn author(&self) -> &DeviceId {
        &self.author
    }
    /// The register path.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// A register value whose signature has been checked.
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
    /// Trusts a value without checking it: only for this device's own integrity-checked storage.
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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Register {
    slots: BTreeMap<DeviceId, VerifiedRegisterValue>,
}

impl Register {
    /// An empty register.
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges one value in: it fills or replaces its author's slot if it ranks higher than what
    /// the slot holds. Returns whether the state changed.
    pub fn insert(&mut self, value: VerifiedRegisterValue) -> bool {
        match self.slots.get(value.author()) {
            Some(held) if held.rank() >= value.rank() => false,
            _ => {
                self.slots.insert(*value.author(), value);
                true
            }
        }
    }

    /// Merges another register's state in. Returns whether the state changed.
    pub fn merge(&mut self, other: &Register) -> bool {
        let mut changed = false;
        for value in other.slots.values() {
            changed |= self.insert(value.clone());
        }
        changed
    }

    /// Every held value, one per author, held-back ones included.
    pub fn values(&self) -> impl Iterator<Item = &VerifiedRegisterValue> {
        self.slots.values()
    }

    /// The current value at local time `now_ms`, hiding values more than `max_skew_ms` ahead.
    pub fn current(&self, now_ms: u64, max_skew_ms: u64) -> Option<&VerifiedRegisterValue> {
        let visible = || self.slots.values().filter(|v| v.hlc().is_visible_at(now_ms, max_skew_ms));
        visible()
            .filter(|candidate| !visible().any(|other| other.supersedes().binary_search(&candidate.id()).is_ok()))
            .max_by(|a, b| a.rank().cmp(&b.rank()))
    }

    /// Signs a new value that supersedes every value held, and merges it in.
    pub fn write(
        &mut self,
        author: &DeviceSecretKey,
        identity: &IdentityId,
        path: &str,
        value: Vec<u8>,
        hlc: Timestamp,
    ) -> Result<VerifiedRegisterValue, RegisterWriteError> {
        let supersedes: Vec<ValueId> = self.slots.values().map(VerifiedRegisterValue::id).collect();
        let written = RegisterValue::sign(author, identity, path, value, hlc, supersedes)?;
        self.insert(written.clone());
        Ok(written)
    }
}
