//! The cryptography of a session: binding device identities to one DTLS connection, and the
//! pairing code's proofs and short authentication string.
//!
//! **Session authentication.** After the data channel opens, each side sends a fresh 32-byte
//! nonce (`Hello`), then signs, with its device key, the transcript
//!
//! ```text
//! domain "kathon-sync/v1/session", identity,
//! BLAKE3(signer's certificate ID ‖ signer's DTLS fingerprint ‖ verifier's DTLS fingerprint ‖
//!        signer's nonce ‖ verifier's nonce)
//! ```
//!
//! with the fingerprints **as each side's own transport reports them** (its local certificate, and
//! the certificate the remote presented in DTLS). The verifier recomputes it from its own view —
//! its remote fingerprint as the signer's, its local as its own — and checks the signer's
//! certificate chains to the same identity. A bridge that swapped fingerprints in the SDP (to sit
//! in the middle with its own DTLS certificates) makes the two views differ, so the signature
//! fails; a replayed `Auth` from an older session signs other nonces. This is the libp2p
//! WebRTC-direct construction (identity keys authenticate *this* DTLS session), with Ed25519
//! signatures instead of Noise.
//!
//! **Pairing.** The code shown by an enrolled device carries a 16-byte secret. Both sides prove
//! knowledge of it with keyed BLAKE3 MACs over the same kind of transcript (so a relay cannot
//! forward a proof into another connection), and both derive the same 6-digit short
//! authentication string from it to show the user.

use crate::hash::{Hash, context};
use crate::identity::{DeviceSecretKey, IdentityId, signing_message};

/// A DTLS certificate fingerprint, normalised: `sha-256 AB:CD:…` (algorithm lower case, hex
/// upper case), as the SDP `a=fingerprint` line and `RTCCertificate.getFingerprints()` give it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// Normalises a fingerprint in SDP or WebCrypto form (`sha-256 ab:cd:…`, any case).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let (algorithm, hex) = text.split_once(' ')?;
        let hex = hex.trim().to_ascii_uppercase();
        if algorithm.is_empty() || algorithm.len() > 16 || hex.len() > 200 {
            return None;
        }
        if !hex.split(':').all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit())) {
            return None;
        }
        Some(Self(format!("{} {hex}", algorithm.to_ascii_lowercase())))
    }

    /// The normalised text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a session's transcript binds: both fingerprints and both nonces, from one side's view.
#[derive(Clone, Debug)]
pub(crate) struct View<'a> {
    pub(crate) local_fp: &'a Fingerprint,
    pub(crate) remote_fp: &'a Fingerprint,
    pub(crate) local_nonce: &'a [u8; 32],
    pub(crate) remote_nonce: &'a [u8; 32],
}

const SESSION_DOMAIN: &[u8] = b"kathon-sync/v1/session";

fn transcript(
    cert_id: &Hash,
    signer_fp: &Fingerprint,
    verifier_fp: &Fingerprint,
    signer_nonce: &[u8; 32],
    verifier_nonce: &[u8; 32],
) -> Hash {
    Hash::digest(
        &context::SESSION,
        &[
            cert_id.as_bytes(),
            &u16::try_from(signer_fp.0.len()).unwrap_or(u16::MAX).to_be_bytes(),
            signer_fp.0.as_bytes(),
            &u16::try_from(verifier_fp.0.len()).unwrap_or(u16::MAX).to_be_bytes(),
            verifier_fp.0.as_bytes(),
            signer_nonce,
            verifier_nonce,
        ],
    )
}

/// Signs this side's `Auth`.
pub(crate) fn sign_auth(device: &DeviceSecretKey, identity: &IdentityId, cert_id: &Hash, view: &View<'_>) -> [u8; 64] {
    let digest = transcript(cert_id, view.local_fp, view.remote_fp, view.local_nonce, view.remote_nonce);
    device.sign(&signing_message(SESSION_DOMAIN, identity, &digest))
}

/// The message the peer must have signed, computed from this side's view.
pub(crate) fn peer_auth_message(identity: &IdentityId, peer_cert_id: &Hash, view: &View<'_>) -> Vec<u8> {
    let digest = transcript(peer_cert_id, view.remote_fp, view.local_fp, view.remote_nonce, view.local_nonce);
    signing_message(SESSION_DOMAIN, identity, &digest)
}

/// A pairing code: which enrolled device shows it, and the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct PairingCode {
    /// First 8 bytes of a hash of the enrolled device's key (finds the right device).
    pub device_tag: [u8; 8],
    /// The secret (never sent; proven).
    pub secret: [u8; 16],
}

impl core::fmt::Debug for PairingCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PairingCode").field("device_tag", &self.device_tag).field("secret", &"[redacted]").finish()
    }
}

impl Drop for PairingCode {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

/// Why a pairing code did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PairingCodeError {
    /// Not of the right shape.
    #[error("a pairing code looks like KS1-XXXXXXX-…; this is not one")]
    Malformed,
    /// A typo.
    #[error("the pairing code's checksum does not match: check it for a typo")]
    Checksum,
}

const CODE_PREFIX: &str = "KS1";

impl PairingCode {
    /// The tag of a device key.
    pub fn tag_of(device: &crate::identity::DeviceId) -> [u8; 8] {
        let h = Hash::digest(&context::PAIRING, &[b"device tag", device.as_bytes()]);
        let mut tag = [0u8; 8];
        tag.copy_from_slice(h.as_bytes().get(..8).unwrap_or(&[0; 8]));
        tag
    }

    /// The ID a joining device sends in its `Hello`: names the code without revealing it.
    pub fn code_id(&self) -> [u8; 8] {
        let h = Hash::digest(&context::PAIRING, &[b"code id", &self.device_tag, &self.secret]);
        let mut id = [0u8; 8];
        id.copy_from_slice(h.as_bytes().get(..8).unwrap_or(&[0; 8]));
        id
    }

    /// Text form: `KS1-` then base32 of tag, secret and a 2-byte checksum, in groups of seven.
    pub fn to_text(&self) -> String {
        let mut raw = Vec::with_capacity(26);
        raw.extend_from_slice(&self.device_tag);
        raw.extend_from_slice(&self.secret);
        let sum = Hash::digest(&context::PAIRING, &[b"checksum", &raw]);
        raw.extend_from_slice(sum.as_bytes().get(..2).unwrap_or(&[0, 0]));
        let text = crate::text::base32_upper(&raw);
        let groups: Vec<String> = text.as_bytes().chunks(7).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
        format!("{CODE_PREFIX}-{}", groups.join("-"))
    }

    /// Parses the text form (case, dashes and spaces do not matter).
    pub fn parse(text: &str) -> Result<Self, PairingCodeError> {
        let clean: String = text.chars().filter(|c| !matches!(c, '-' | ' ')).collect::<String>().to_ascii_uppercase();
        let body = clean.strip_prefix(CODE_PREFIX).ok_or(PairingCodeError::Malformed)?;
        let raw = crate::text::base32_upper_decode(body.as_bytes()).ok_or(PairingCodeError::Malformed)?;
        if raw.len() != 26 {
            return Err(PairingCodeError::Malformed);
        }
        let (payload, sum) = raw.split_at(24);
        let expected = Hash::digest(&context::PAIRING, &[b"checksum", payload]);
        if expected.as_bytes().get(..2) != Some(sum) {
            return Err(PairingCodeError::Checksum);
        }
        let mut device_tag = [0u8; 8];
        let mut secret = [0u8; 16];
        device_tag.copy_from_slice(payload.get(..8).ok_or(PairingCodeError::Malformed)?);
        secret.copy_from_slice(payload.get(8..).ok_or(PairingCodeError::Malformed)?);
        Ok(Self { device_tag, secret })
    }

    fn key(&self, purpose: &[u8]) -> [u8; 32] {
        *Hash::digest(&context::PAIRING, &[b"key", purpose, &self.secret]).as_bytes()
    }

    /// The joining device's proof, from `view` as the joining side sees the session.
    pub(crate) fn join_proof(&self, view: &View<'_>, device: &[u8; 32], name: &str, joiner_side: bool) -> [u8; 32] {
        let (j_fp, e_fp, j_nonce, e_nonce) = if joiner_side {
            (view.local_fp, view.remote_fp, view.local_nonce, view.remote_nonce)
        } else {
            (view.remote_fp, view.local_fp, view.remote_nonce, view.local_nonce)
        };
        mac(
            &self.key(b"join"),
            &[j_fp.0.as_bytes(), b"\0", e_fp.0.as_bytes(), b"\0", j_nonce, e_nonce, device, name.as_bytes()],
        )
    }

    /// The enrolled device's proof.
    pub(crate) fn accept_proof(&self, view: &View<'_>, cert_id: &Hash, enrolled_side: bool) -> [u8; 32] {
        let (e_fp, j_fp, e_nonce, j_nonce) = if enrolled_side {
            (view.local_fp, view.remote_fp, view.local_nonce, view.remote_nonce)
        } else {
            (view.remote_fp, view.local_fp, view.remote_nonce, view.local_nonce)
        };
        mac(
            &self.key(b"accept"),
            &[e_fp.0.as_bytes(), b"\0", j_fp.0.as_bytes(), b"\0", e_nonce, j_nonce, cert_id.as_bytes()],
        )
    }

    /// The 6-digit short authentication string both devices show, as `123 456`.
    pub(crate) fn sas(&self, view: &View<'_>, joiner: &[u8; 32], enrolled: &[u8; 32]) -> String {
        // Order-independent in the fingerprints and nonces, so both sides compute the same.
        let (fp_a, fp_b) = if view.local_fp <= view.remote_fp {
            (view.local_fp, view.remote_fp)
        } else {
            (view.remote_fp, view.local_fp)
        };
        let (n_a, n_b) = if view.local_nonce <= view.remote_nonce {
            (view.local_nonce, view.remote_nonce)
        } else {
            (view.remote_nonce, view.local_nonce)
        };
        let m =
            mac(&self.key(b"sas"), &[fp_a.0.as_bytes(), b"\0", fp_b.0.as_bytes(), b"\0", n_a, n_b, joiner, enrolled]);
        let mut first = [0u8; 8];
        first.copy_from_slice(m.get(..8).unwrap_or(&[0; 8]));
        let n = u64::from_be_bytes(first) % 1_000_000;
        format!("{:03} {:03}", n / 1000, n % 1000)
    }
}

fn mac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    for p in parts {
        h.update(&u32::try_from(p.len()).unwrap_or(u32::MAX).to_be_bytes());
        h.update(p);
    }
    *h.finalize().as_bytes()
}

/// Compares two MACs in constant time.
pub(crate) fn macs_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    blake3::Hash::from_bytes(*a) == blake3::Hash::from_bytes(*b)
}
