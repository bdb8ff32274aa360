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

    /// Hashes `parts` (concatenated) under a domain-separating context string (BLAKE3's
    /// `derive_key`).
    pub(crate) fn digest(context: &'static Context, parts: &[&[u8]]) -> Self {
        use blake3::hazmat::HasherExt;
        let mut hasher = blake3::Hasher::new_from_context_key(context.key());
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

/// A context string of [`Hash::digest`] with its hash kept: `derive_key` hashes the context
/// before the input, which was a third of the work for a register value or a visit's attachment
/// (~100 bytes each, hashed on every write and every load).
pub(crate) struct Context {
    text: &'static str,
    key: std::sync::OnceLock<blake3::hazmat::ContextKey>,
}

impl Context {
    const fn new(text: &'static str) -> Self {
        Self { text, key: std::sync::OnceLock::new() }
    }

    fn key(&self) -> &blake3::hazmat::ContextKey {
        self.key.get_or_init(|| blake3::hazmat::hash_derive_key_context(self.text))
    }
}

/// Context strings for [`Hash::digest`]. Changing any of them changes every hash of that kind.
pub(crate) mod context {
    use super::Context;

    pub(crate) static ENVELOPE_ID: Context = Context::new("kathon-sync 2026-11 envelope id v1");
    pub(crate) static CERTIFICATE_ID: Context = Context::new("kathon-sync 2026-11 device certificate id v1");
    pub(crate) static REVOCATION_ID: Context = Context::new("kathon-sync 2026-11 revocation id v1");
    pub(crate) static ATTACHMENT: Context = Context::new("kathon-sync 2026-11 envelope attachment v1");
    pub(crate) static REGISTER_VALUE_ID: Context = Context::new("kathon-sync 2026-11 register value id v1");
    pub(crate) static REGISTER_VALUE_ID_V2: Context = Context::new("kathon-sync 2026-12 register value id v2");
    pub(crate) static SESSION: Context = Context::new("kathon-sync 2026-11 session transcript v1");
    pub(crate) static PAIRING: Context = Context::new("kathon-sync 2026-11 pairing v1");
    pub(crate) static YRS_CLIENT: Context = Context::new("kathon-sync 2026-11 yrs session client id v1");
    pub(crate) static IDENTITY_TEXT_CHECKSUM: Context = Context::new("kathon-sync 2026-11 identity id checksum v1");
    pub(crate) static DEVICE_TEXT_CHECKSUM: Context = Context::new("kathon-sync 2026-11 device id checksum v1");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kept context key gives exactly BLAKE3's `derive_key` (every stored and signed hash
    /// depends on it).
    #[test]
    fn digest_is_derive_key_of_the_parts() {
        let parts: [&[u8]; 3] = [b"kathon", b"", b" register value"];
        for _ in 0..2 {
            let expected = blake3::derive_key(context::REGISTER_VALUE_ID_V2.text, b"kathon register value");
            assert_eq!(Hash::digest(&context::REGISTER_VALUE_ID_V2, &parts).as_bytes(), &expected);
        }
        assert_eq!(
            Hash::digest(&context::ENVELOPE_ID, &[b"x"]).as_bytes(),
            &blake3::derive_key("kathon-sync 2026-11 envelope id v1", b"x")
        );
    }
}
