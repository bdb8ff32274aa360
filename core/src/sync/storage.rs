//! What the engine asks the driver to store, and how it checks what it reads back.
//!
//! The engine never touches storage: it emits [`StorageBatch`]es — each to be written in **one
//! atomic transaction** and acknowledged with `Engine::handle_storage_done` only once durable —
//! and it is rebuilt from the records with `Engine::load`.
//!
//! Every record carries a keyed BLAKE3 MAC under a **device-local storage key** (never synced), so
//! loading detects a tampered or torn record without re-checking every signature, which would cost
//! seconds for a large profile in wasm. Re-verifying every signature is `Engine::audit`. Anything
//! from another device is always fully verified when it arrives.

use crate::codec::{Reader, Writer};
use crate::envelope::EnvelopeId;
use crate::error::DecodeError;
use crate::hash::Hash;

/// The key a record is stored under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKey {
    /// The identity bundle: keys and the device certificate. **Holds secrets**: the driver must
    /// seal it (with the user's passphrase where one is set) before it touches storage.
    Identity,
    /// The device registry: certificates and revocations.
    Registry,
    /// An envelope.
    Envelope(EnvelopeId),
}

impl RecordKey {
    /// A stable text form for stores keyed by strings (`identity`, `registry`, `e:<hex>`).
    pub fn to_text(&self) -> String {
        match self {
            RecordKey::Identity => "identity".into(),
            RecordKey::Registry => "registry".into(),
            RecordKey::Envelope(id) => format!("e:{}", id.0.to_hex()),
        }
    }

    /// Parses [`RecordKey::to_text`].
    pub fn from_text(text: &str) -> Option<Self> {
        match text {
            "identity" => Some(RecordKey::Identity),
            "registry" => Some(RecordKey::Registry),
            _ => {
                let hex = text.strip_prefix("e:")?;
                let bytes = crate::text::hex_32_lower(hex)?;
                Some(RecordKey::Envelope(EnvelopeId(Hash::from_bytes(bytes))))
            }
        }
    }
}

/// Records to write in one atomic transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageBatch {
    /// Acknowledge with this ID.
    pub id: u64,
    /// Records to put (replacing any under the same key).
    pub puts: Vec<(RecordKey, Vec<u8>)>,
}

const RECORD_FORMAT: u8 = 0x91;

fn mac(key: &[u8; 32], kind: u8, body: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(&[kind]);
    h.update(body);
    *h.finalize().as_bytes()
}

fn kind_of(key: &RecordKey) -> u8 {
    match key {
        RecordKey::Identity => 1,
        RecordKey::Registry => 2,
        RecordKey::Envelope(_) => 3,
    }
}

/// Seals a record body with the storage MAC.
pub(crate) fn seal_record(storage_key: &[u8; 32], key: &RecordKey, body: &[u8]) -> Vec<u8> {
    let kind = kind_of(key);
    let mut w = Writer::with_capacity(body.len().saturating_add(40));
    w.u8(RECORD_FORMAT).u8(kind).bytes_u32(body).raw(&mac(storage_key, kind, body));
    w.into_bytes()
}

/// Why stored data could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A record is not whole (torn write) or not a record.
    #[error("stored record {0} is torn or malformed: {1}")]
    Torn(String, DecodeError),
    /// A record's MAC does not match: it was changed outside this device.
    #[error("stored record {0} was tampered with (its MAC does not match)")]
    Tampered(String),
    /// The identity bundle is missing or unreadable.
    #[error("the identity record is missing or unreadable: {0}")]
    Identity(String),
    /// The stored envelopes do not form complete chains.
    #[error("the stored envelopes are inconsistent: {0}")]
    Inconsistent(String),
}

/// Opens a record, checking its MAC.
pub(crate) fn open_record<'a>(storage_key: &[u8; 32], key: &RecordKey, bytes: &'a [u8]) -> Result<&'a [u8], LoadError> {
    let name = key.to_text();
    let torn = |e| LoadError::Torn(name.clone(), e);
    let mut r = Reader::new(bytes);
    r.format("stored record", RECORD_FORMAT).map_err(torn)?;
    let kind = r.u8("record kind").map_err(torn)?;
    let body = r.bytes_u32(u32::MAX, "record body").map_err(torn)?;
    let tag: [u8; 32] = r.array("record mac").map_err(torn)?;
    r.finish("stored record").map_err(torn)?;
    if kind != kind_of(key) || !crate::sync::session::macs_equal(&tag, &mac(storage_key, kind, body)) {
        return Err(LoadError::Tampered(name));
    }
    Ok(body)
}

/// The body of a record, unchecked (the identity record holds its own MAC key).
pub(crate) fn peek_body(bytes: &[u8]) -> Option<&[u8]> {
    let mut r = Reader::new(bytes);
    r.format("stored record", RECORD_FORMAT).ok()?;
    r.u8("record kind").ok()?;
    r.bytes_u32(u32::MAX, "record body").ok()
}

/// How an envelope record is written.
#[derive(Clone, Copy, Debug)]
pub(crate) enum EnvelopeWrite {
    /// Its first write: canonical, or packed with this spec.
    Fresh(Option<crate::envelope::PackSpec>),
    /// Written again after a redaction, in the form it is held. Checked first: the body must still
    /// hash to the envelope's ID (an attachment that no longer reads would be listed with a zero
    /// hash, and the record, MAC'd and all, would fail the next load as tampered). Hashing, not
    /// trusting `write_body`'s own account, so that any bug is caught here.
    Rewrite,
}

/// Seals an envelope record — body: its place in the apply order, then the envelope in its
/// stored form (see `Envelope::write_stored_to`) — encoding the envelope straight into the
/// record (a history envelope is up to 4 MiB: one copy, not three). `None` when a rewrite's
/// body no longer hashes to its ID: the record on disk is left as it is.
pub(crate) fn seal_envelope_record(
    storage_key: &[u8; 32],
    key: &RecordKey,
    order: u64,
    envelope: &crate::envelope::VerifiedEnvelope,
    write: EnvelopeWrite,
) -> Option<Vec<u8>> {
    let kind = kind_of(key);
    let mut w = Writer::with_capacity(envelope.encoded_len().saturating_add(1 + 1 + 4 + 8 + 1 + 32));
    // The body's length is known once the envelope is written (packing shrinks it).
    w.u8(RECORD_FORMAT).u8(kind).u32(0).u64(order);
    let pack = match write {
        EnvelopeWrite::Fresh(pack) => pack,
        EnvelopeWrite::Rewrite => None,
    };
    let signed = envelope.write_stored_to(&mut w, pack);
    if matches!(write, EnvelopeWrite::Rewrite)
        && !envelope.body_matches_id(signed.map(|body| w.as_bytes().get(body).unwrap_or_default()))
    {
        return None;
    }
    w.set_u32_at(2, u32::try_from(w.len().saturating_sub(6)).unwrap_or(u32::MAX));
    let tag = mac(storage_key, kind, w.as_bytes().get(6..).unwrap_or_default());
    w.raw(&tag);
    let mut record = w.into_bytes();
    // Sized for the canonical form, of which a packed or deflated one is a fraction; the record
    // waits in its batch until the driver has stored it.
    record.shrink_to_fit();
    Some(record)
}

pub(crate) fn split_envelope_body(body: &[u8]) -> Option<(u64, &[u8])> {
    let (order, envelope) = body.split_at_checked(8)?;
    Some((u64::from_be_bytes(order.try_into().ok()?), envelope))
}
