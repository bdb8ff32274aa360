//! Messages between two engines, and their framing into data-channel messages of at most
//! 16 KiB.
//!
//! A **frame** is one data-channel message: a version byte, then either a whole message or one
//! chunk of a larger one. Chunks carry `(message id, index, count)`, so a message reassembles
//! whatever order its chunks arrive in and however often; reassembly is bounded (bytes per
//! message, messages in progress, age), and anything incomplete is eventually dropped — the
//! protocol above recovers, because every message is idempotent and summaries are repeated.

use std::collections::BTreeMap;

use crate::codec::{Reader, Writer};
use crate::error::DecodeError;

/// The frame format this build speaks (2: envelopes may travel deflated, message tag 11).
pub const WIRE_VERSION: u8 = 2;
/// A deflated envelope may expand at most this many times (and to at most the envelope cap):
/// what a receiver allocates stays proportional to what it received.
pub const MAX_INFLATE_RATIO: usize = 32;
/// Envelopes smaller than this travel as they are (deflate gains little on them).
const DEFLATE_FROM: usize = 256;
/// Largest frame (one data-channel message), as RFC 8831 recommends for interoperability.
pub const MAX_FRAME: usize = 16 * 1024;
/// Largest reassembled message (8 MiB: the largest envelope and some room).
pub const MAX_MESSAGE: usize = 8 << 20;
/// Most messages being reassembled at once, per peer.
pub const MAX_PARTIAL_MESSAGES: usize = 4;
/// A partial message older than this is dropped.
pub const PARTIAL_TIMEOUT_MS: u64 = 30_000;

const FRAME_WHOLE: u8 = 0;
const FRAME_CHUNK: u8 = 1;
const CHUNK_HEADER: usize = 1 + 1 + 4 + 2 + 2;
const CHUNK_BODY: usize = MAX_FRAME - CHUNK_HEADER;

/// A vault key on the wire: `(id, secret, created_ms)`.
pub type WireVaultKey = ([u8; 16], [u8; 32], u64);

/// Why the peer is told the session ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RefuseReason {
    /// Speaks another protocol version.
    Version,
    /// Belongs to another identity.
    WrongIdentity,
    /// Not enrolled, or revoked.
    NotEnrolled,
    /// The handshake signature does not verify for this session's fingerprints and nonces.
    BadHandshake,
    /// The pairing code is wrong, expired or used up.
    BadPairingCode,
    /// The user refused the pairing.
    PairingRefused,
    /// A protocol violation.
    Protocol,
    /// The handshake did not finish in time.
    Timeout,
}

impl RefuseReason {
    fn to_byte(self) -> u8 {
        match self {
            RefuseReason::Version => 1,
            RefuseReason::WrongIdentity => 2,
            RefuseReason::NotEnrolled => 3,
            RefuseReason::BadHandshake => 4,
            RefuseReason::BadPairingCode => 5,
            RefuseReason::PairingRefused => 6,
            RefuseReason::Protocol => 7,
            RefuseReason::Timeout => 8,
        }
    }

    fn from_byte(b: u8) -> Result<Self, DecodeError> {
        Ok(match b {
            1 => RefuseReason::Version,
            2 => RefuseReason::WrongIdentity,
            3 => RefuseReason::NotEnrolled,
            4 => RefuseReason::BadHandshake,
            5 => RefuseReason::BadPairingCode,
            6 => RefuseReason::PairingRefused,
            7 => RefuseReason::Protocol,
            8 => RefuseReason::Timeout,
            tag => return Err(DecodeError::UnknownTag { what: "refuse reason", tag }),
        })
    }
}

/// What a session is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Two enrolled devices syncing.
    Sync,
    /// A new device joining with a pairing code whose ID this is.
    Pair([u8; 8]),
}

/// One protocol message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Opens a session: a fresh nonce.
    Hello {
        /// Protocol version.
        version: u8,
        /// What the session is for.
        purpose: Purpose,
        /// Fresh random nonce.
        nonce: [u8; 32],
    },
    /// Proves the sender's device identity for this session.
    Auth {
        /// The sender's device certificate.
        certificate: Vec<u8>,
        /// Signature over the session transcript (see `session::transcript`).
        signature: [u8; 64],
    },
    /// The session ends, and why.
    Refuse(RefuseReason),
    /// Certificates and revocations.
    Registry {
        /// Encoded certificates.
        certificates: Vec<Vec<u8>>,
        /// Encoded revocations.
        revocations: Vec<Vec<u8>>,
    },
    /// What the sender holds: its heads per author, durably stored, and its vault key IDs.
    Summary {
        /// `(author key, seq)` pairs.
        heads: Vec<([u8; 32], u64)>,
        /// Vault keys held.
        vault_keys: Vec<[u8; 16]>,
    },
    /// One envelope.
    Envelope(Vec<u8>),
    /// Vault keys (only inside an authenticated session with a non-revoked device).
    VaultKeys(Vec<WireVaultKey>),
    /// Pairing: the joining device's proof of the code's secret.
    PairJoin {
        /// The joining device's public key.
        device: [u8; 32],
        /// Its proposed name.
        name: String,
        /// Keyed MAC proving the secret (see `pairing`).
        proof: [u8; 32],
    },
    /// Pairing: the enrolled device's proof and certificate.
    PairAccept {
        /// The enrolled device's certificate.
        certificate: Vec<u8>,
        /// Keyed MAC proving the secret.
        proof: [u8; 32],
    },
    /// Pairing: what the new device needs, sent once the user confirmed the short authentication
    /// string.
    PairWelcome {
        /// The new device's certificate.
        certificate: Vec<u8>,
        /// The root secret key (so any device can revoke a lost one), 32 bytes.
        root_secret: [u8; 32],
        /// Vault keys.
        vault_keys: Vec<WireVaultKey>,
    },
}

const MAX_LIST: u32 = 1 << 16;

fn read_list<T>(
    r: &mut Reader<'_>,
    what: &'static str,
    min_item: u64,
    mut item: impl FnMut(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let n = r.u32(what)?;
    let n = r.check_len(n.into(), MAX_LIST.into(), what)?;
    r.check_len((n as u64).saturating_mul(min_item), u64::MAX, what)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(item(r)?);
    }
    Ok(out)
}

fn write_len(w: &mut Writer, n: usize) {
    w.u32(u32::try_from(n).unwrap_or(u32::MAX));
}

impl Message {
    /// Encodes the message (before framing).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            Message::Hello { version, purpose, nonce } => {
                w.u8(1).u8(*version);
                match purpose {
                    Purpose::Sync => w.u8(1),
                    Purpose::Pair(code) => w.u8(2).raw(code),
                };
                w.raw(nonce);
            }
            Message::Auth { certificate, signature } => {
                w.u8(2).bytes_u16(certificate).raw(signature);
            }
            Message::Refuse(reason) => {
                w.u8(3).u8(reason.to_byte());
            }
            Message::Registry { certificates, revocations } => {
                w.u8(4);
                for list in [certificates, revocations] {
                    write_len(&mut w, list.len());
                    for item in list {
                        w.bytes_u16(item);
                    }
                }
            }
            Message::Summary { heads, vault_keys } => {
                w.u8(5);
                write_len(&mut w, heads.len());
                for (author, seq) in heads {
                    w.raw(author).u64(*seq);
                }
                write_len(&mut w, vault_keys.len());
                for id in vault_keys {
                    w.raw(id);
                }
            }
            Message::Envelope(bytes) => {
                // Deflated when that is smaller: an envelope repeats its author's map name and
                // the register paths' prefixes in every entry (a group of 100 bookmark adds:
                // 62 KB raw, 8 KB deflated).
                let deflated = (bytes.len() >= DEFLATE_FROM)
                    .then(|| miniz_oxide::deflate::compress_to_vec(bytes, 1))
                    .filter(|d| d.len() < bytes.len() && bytes.len() <= d.len().saturating_mul(MAX_INFLATE_RATIO));
                match deflated {
                    Some(d) => {
                        w.u8(11);
                        write_len(&mut w, bytes.len());
                        w.raw(&d);
                    }
                    None => {
                        w.u8(6).raw(bytes);
                    }
                }
            }
            Message::VaultKeys(keys) => {
                w.u8(7);
                write_keys(&mut w, keys);
            }
            Message::PairJoin { device, name, proof } => {
                w.u8(8).raw(device).bytes_u8(name.as_bytes()).raw(proof);
            }
            Message::PairAccept { certificate, proof } => {
                w.u8(9).bytes_u16(certificate).raw(proof);
            }
            Message::PairWelcome { certificate, root_secret, vault_keys } => {
                w.u8(10).bytes_u16(certificate).raw(root_secret);
                write_keys(&mut w, vault_keys);
            }
        }
        w.into_bytes()
    }

    /// Decodes an untrusted message.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let message = match r.u8("message tag")? {
            1 => {
                let version = r.u8("hello version")?;
                let purpose = match r.u8("hello purpose")? {
                    1 => Purpose::Sync,
                    2 => Purpose::Pair(r.array("pairing code id")?),
                    tag => return Err(DecodeError::UnknownTag { what: "hello purpose", tag }),
                };
                Message::Hello { version, purpose, nonce: r.array("hello nonce")? }
            }
            2 => Message::Auth {
                certificate: r.bytes_u16(1024, "auth certificate")?.to_vec(),
                signature: r.array("auth signature")?,
            },
            3 => Message::Refuse(RefuseReason::from_byte(r.u8("refuse reason")?)?),
            4 => {
                let certificates =
                    read_list(&mut r, "registry certificates", 2, |r| Ok(r.bytes_u16(1024, "certificate")?.to_vec()))?;
                let revocations =
                    read_list(&mut r, "registry revocations", 2, |r| Ok(r.bytes_u16(1024, "revocation")?.to_vec()))?;
                Message::Registry { certificates, revocations }
            }
            5 => {
                let heads = read_list(&mut r, "summary heads", 40, |r| {
                    Ok((r.array("summary author")?, r.u64("summary seq")?))
                })?;
                let vault_keys = read_list(&mut r, "summary vault keys", 16, |r| r.array("vault key id"))?;
                Message::Summary { heads, vault_keys }
            }
            6 => {
                let rest = r.take(r.remaining(), "envelope")?.to_vec();
                Message::Envelope(rest)
            }
            11 => {
                let len = u64::from(r.u32("deflated envelope length")?);
                let deflated = r.take(r.remaining(), "deflated envelope")?;
                let max = (crate::envelope::MAX_ENVELOPE_LEN as u64)
                    .min((deflated.len() as u64).saturating_mul(MAX_INFLATE_RATIO as u64));
                if len > max {
                    return Err(DecodeError::TooLarge { what: "deflated envelope length", len, max });
                }
                let len =
                    usize::try_from(len).map_err(|_| DecodeError::TooLarge { what: "deflated envelope", len, max })?;
                let inflated = miniz_oxide::inflate::decompress_to_vec_with_limit(deflated, len).map_err(|_| {
                    DecodeError::NonCanonical {
                        what: "deflated envelope",
                        reason: "not a deflate stream of the length it declares",
                    }
                })?;
                if inflated.len() != len {
                    return Err(DecodeError::NonCanonical {
                        what: "deflated envelope",
                        reason: "inflates to another length than it declares",
                    });
                }
                Message::Envelope(inflated)
            }
            7 => Message::VaultKeys(read_keys(&mut r)?),
            8 => Message::PairJoin {
                device: r.array("pairing device")?,
                name: r.str_u8(64, "pairing device name")?.to_owned(),
                proof: r.array("pairing proof")?,
            },
            9 => Message::PairAccept {
                certificate: r.bytes_u16(1024, "pairing certificate")?.to_vec(),
                proof: r.array("pairing proof")?,
            },
            10 => Message::PairWelcome {
                certificate: r.bytes_u16(1024, "welcome certificate")?.to_vec(),
                root_secret: r.array("welcome root key")?,
                vault_keys: read_keys(&mut r)?,
            },
            tag => return Err(DecodeError::UnknownTag { what: "message", tag }),
        };
        r.finish("message")?;
        Ok(message)
    }
}

fn write_keys(w: &mut Writer, keys: &[WireVaultKey]) {
    write_len(w, keys.len());
    for (id, secret, created) in keys {
        w.raw(id).raw(secret).u64(*created);
    }
}

fn read_keys(r: &mut Reader<'_>) -> Result<Vec<WireVaultKey>, DecodeError> {
    read_list(r, "vault keys", 56, |r| {
        Ok((r.array("vault key id")?, r.array("vault key")?, r.u64("vault key created")?))
    })
}

/// Splits an encoded message into frames of at most [`MAX_FRAME`] bytes.
pub fn frames(message: &[u8], message_id: u32) -> Vec<Vec<u8>> {
    if message.len().saturating_add(2) <= MAX_FRAME {
        let mut f = Vec::with_capacity(message.len().saturating_add(2));
        f.push(WIRE_VERSION);
        f.push(FRAME_WHOLE);
        f.extend_from_slice(message);
        return vec![f];
    }
    let chunks: Vec<&[u8]> = message.chunks(CHUNK_BODY).collect();
    let count = u16::try_from(chunks.len()).unwrap_or(u16::MAX);
    chunks
        .iter()
        .enumerate()
        .map(|(index, body)| {
            let mut w = Writer::with_capacity(CHUNK_HEADER.saturating_add(body.len()));
            w.u8(WIRE_VERSION)
                .u8(FRAME_CHUNK)
                .u32(message_id)
                .u16(u16::try_from(index).unwrap_or(u16::MAX))
                .u16(count)
                .raw(body);
            w.into_bytes()
        })
        .collect()
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Malformed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Another protocol version.
    #[error("frame version {0}, this build speaks {WIRE_VERSION}")]
    Version(u8),
}

struct Partial {
    chunks: Vec<Option<Vec<u8>>>,
    received: usize,
    bytes: usize,
    started_ms: u64,
}

/// Reassembles chunked messages from one peer, within bounds.
#[derive(Default)]
pub struct Reassembler {
    partial: BTreeMap<u32, Partial>,
}

impl core::fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Reassembler").field("partial", &self.partial.len()).finish()
    }
}

impl Reassembler {
    /// Takes one frame; returns a complete message when one is.
    pub fn push(&mut self, frame: &[u8], now_ms: u64) -> Result<Option<Vec<u8>>, FrameError> {
        if frame.len() > MAX_FRAME {
            return Err(DecodeError::TooLarge { what: "frame", len: frame.len() as u64, max: MAX_FRAME as u64 }.into());
        }
        let mut r = Reader::new(frame);
        let version = r.u8("frame version")?;
        if version != WIRE_VERSION {
            return Err(FrameError::Version(version));
        }
        match r.u8("frame kind")? {
            FRAME_WHOLE => Ok(Some(r.take(r.remaining(), "frame body")?.to_vec())),
            FRAME_CHUNK => {
                let id = r.u32("chunk message id")?;
                let index = usize::from(r.u16("chunk index")?);
                let count = usize::from(r.u16("chunk count")?);
                let body = r.take(r.remaining(), "chunk body")?;
                if count < 2
                    || index >= count
                    || count.saturating_mul(CHUNK_BODY) > MAX_MESSAGE.saturating_add(CHUNK_BODY)
                {
                    return Err(DecodeError::NonCanonical { what: "chunk", reason: "bad index or count" }.into());
                }
                self.partial.retain(|_, p| now_ms.saturating_sub(p.started_ms) < PARTIAL_TIMEOUT_MS);
                if !self.partial.contains_key(&id) && self.partial.len() >= MAX_PARTIAL_MESSAGES {
                    // Drop the oldest: a lost chunk must not wedge the peer forever.
                    if let Some(oldest) = self.partial.iter().min_by_key(|(_, p)| p.started_ms).map(|(k, _)| *k) {
                        self.partial.remove(&oldest);
                    }
                }
                let partial = self.partial.entry(id).or_insert_with(|| Partial {
                    chunks: vec![None; count],
                    received: 0,
                    bytes: 0,
                    started_ms: now_ms,
                });
                if partial.chunks.len() != count {
                    self.partial.remove(&id);
                    return Err(DecodeError::NonCanonical { what: "chunk", reason: "count changed" }.into());
                }
                if let Some(slot) = partial.chunks.get_mut(index)
                    && slot.is_none()
                {
                    partial.bytes = partial.bytes.saturating_add(body.len());
                    let partial_len = partial.bytes;
                    if partial_len > MAX_MESSAGE {
                        self.partial.remove(&id);
                        return Err(DecodeError::TooLarge {
                            what: "message",
                            len: partial_len as u64,
                            max: MAX_MESSAGE as u64,
                        }
                        .into());
                    }
                    *slot = Some(body.to_vec());
                    partial.received = partial.received.saturating_add(1);
                }
                if partial.received == count {
                    let done = self.partial.remove(&id).map(|p| p.chunks.into_iter().flatten().flatten().collect());
                    return Ok(done);
                }
                Ok(None)
            }
            tag => Err(DecodeError::UnknownTag { what: "frame kind", tag }.into()),
        }
    }

    /// Bytes held in partial messages.
    pub fn buffered(&self) -> usize {
        self.partial.values().map(|p| p.bytes).sum()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    /// Like an envelope of bookmark adds: repeated prefixes, varying IDs and text.
    fn repetitive(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0u64;
        while out.len() < n {
            let line =
                format!("a:{:016x} b/{:032x}/title Bookmark {i} https://example{}.org/a/{i}\n", 77, i * 7919, i % 97);
            out.extend_from_slice(line.as_bytes());
            i += 1;
        }
        out.truncate(n);
        out
    }

    #[test]
    fn envelopes_travel_deflated_when_that_is_smaller() {
        let bytes = repetitive(20_000);
        let encoded = Message::Envelope(bytes.clone()).encode();
        assert_eq!(encoded[0], 11, "a compressible envelope is deflated");
        assert!(encoded.len() < bytes.len() / 4);
        assert_eq!(Message::decode(&encoded).unwrap(), Message::Envelope(bytes));
        // Incompressible or small: as it is.
        let mut noise = vec![0u8; 5_000];
        rand_core::RngCore::fill_bytes(
            &mut <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(1),
            &mut noise,
        );
        for raw in [noise, vec![7; 100]] {
            let encoded = Message::Envelope(raw.clone()).encode();
            assert_eq!(encoded[0], 6);
            assert_eq!(Message::decode(&encoded).unwrap(), Message::Envelope(raw));
        }
        // Highly repetitive beyond the ratio cap: sent raw, so no receiver ever inflates more.
        let zeros = vec![0u8; 100_000];
        assert_eq!(Message::Envelope(zeros).encode()[0], 6);
    }

    #[test]
    fn deflate_bombs_and_lies_are_refused() {
        let bytes = repetitive(20_000);
        let deflated = miniz_oxide::deflate::compress_to_vec(&bytes, 1);
        let message = |len: u32, body: &[u8]| {
            let mut m = vec![11];
            m.extend_from_slice(&len.to_be_bytes());
            m.extend_from_slice(body);
            m
        };
        // The honest one decodes.
        assert!(Message::decode(&message(20_000, &deflated)).is_ok());
        // A length beyond the ratio cap, or beyond the envelope cap, is refused before inflating.
        let bomb = miniz_oxide::deflate::compress_to_vec(&vec![0u8; 1 << 20], 9);
        assert!(matches!(Message::decode(&message(1 << 20, &bomb)), Err(DecodeError::TooLarge { .. })));
        assert!(matches!(Message::decode(&message(u32::MAX, &deflated)), Err(DecodeError::TooLarge { .. })));
        // A stream that inflates to more or less than it declares, or is not deflate at all.
        assert!(Message::decode(&message(19_999, &deflated)).is_err());
        assert!(Message::decode(&message(20_001, &deflated)).is_err());
        assert!(Message::decode(&message(1_000, &[0xff; 200])).is_err());
        let mut truncated = deflated.clone();
        truncated.truncate(deflated.len() / 2);
        assert!(Message::decode(&message(20_000, &truncated)).is_err());
    }
}
