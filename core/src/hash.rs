//! Content hashes (BLAKE3 in its key-derivation mode, one context string per kind of object, so
//! that a hash of one kind can never be mistaken for a hash of another).

use core::fmt;

/// A 32-byte BLAKE3 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash([u8; 32]);

impl Hash {
    /// The all-zero hash, used only as a placeholder in tests and fixtures.
    pub const ZERO: Hash = Hash([0; 32]);

    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The digest bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        crate::text::hex(&self.0)
    }

    /// Hashes `parts` (concatenated) under a domain-separating context string.
    pub(crate) fn digest(context: &'static str, parts: &[&[u8]]) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key(context);
        for part in parts {
            hasher.update(part);
        }
        Self(*hasher.finalize().as_bytes())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.to_hex();
        write!(f, "Hash({})", hex.get(..12).unwrap_or(&hex))
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Context strings for [`Hash::digest`]. Changing any of them changes every hash of that kind.
pub(crate) mod context {
    pub(crate) const ENVELOPE_ID: &str = "kathon-sync 2026-11 envelope id v1";
    pub(crate) const CERTIFICATE_ID: &str = "kathon-sync 2026-11 device certificate id v1";
    pub(crate) const REVOCATION_ID: &str = "kathon-sync 2026-11 revocation id v1";
    pub(crate) const ATTACHMENT: &str = "kathon-sync 2026-11 envelope attachment v1";
    pub(crate) const REGISTER_VALUE_ID: &str = "kathon-sync 2026-11 register value id v1";
    pub(crate) const REGISTER_VALUE_ID_V2: &str = "kathon-sync 2026-12 register value id v2";
    pub(crate) const SESSION: &str = "kathon-sync 2026-11 session transcript v1";
    pub(crate) const PAIRING: &str = "kathon-sync 2026-11 pairing v1";
    pub(crate) const YRS_CLIENT: &str = "kathon-sync 2026-11 yrs session client id v1";
    pub(crate) const IDENTITY_TEXT_CHECKSUM: &str = "kathon-sync 2026-11 identity id checksum v1";
    pub(crate) const DEVICE_TEXT_CHECKSUM: &str = "kathon-sync 2026-11 device id checksum v1";
}
