//! The vault: keys that encrypt secret fields (passwords, notes, key material) before they enter
//! the document, so they are ciphertext in the document, in every envelope, in IndexedDB and on
//! disk.
//!
//! A secret field is sealed with XChaCha20-Poly1305 under the current [`VaultKey`], with a random
//! 192-bit nonce and, as associated data, the identity and the register path (which names the
//! entry and the field): a ciphertext moved to another entry, field or identity does not open.
//! Keys are named by a random [`VaultKeyId`]; a [`Vault`] keeps the current key for sealing and
//! older ones for opening, so a rotation can re-encrypt at its own pace.

use std::collections::BTreeMap;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::codec::{Reader, Writer};
use crate::error::DecodeError;
use crate::identity::IdentityId;

/// The name of a vault key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct VaultKeyId(pub [u8; 16]);

/// A 256-bit vault key. Redacted in `Debug`, zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct VaultKey {
    #[zeroize(skip)]
    id: VaultKeyId,
    secret: [u8; 32],
}

impl core::fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VaultKey").field("id", &self.id).field("secret", &"[redacted]").finish()
    }
}

impl VaultKey {
    /// A fresh random key.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut id = [0u8; 16];
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut id);
        rng.fill_bytes(&mut secret);
        Self { id: VaultKeyId(id), secret }
    }

    /// Restores a key.
    pub fn from_parts(id: VaultKeyId, secret: [u8; 32]) -> Self {
        Self { id, secret }
    }

    /// Its name.
    pub fn id(&self) -> VaultKeyId {
        self.id
    }

    /// The secret bytes (for sealing the key itself to storage or to a paired device).
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }
}

/// Why a secret could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The vault is locked (no key loaded).
    #[error("the vault is locked")]
    Locked,
    /// Sealed with a key this device does not hold (for example one issued after it was revoked).
    #[error("sealed with a vault key this device does not have")]
    UnknownKey,
    /// The ciphertext does not open: tampered, or moved from another field or entry.
    #[error("the sealed value does not open (tampered or moved)")]
    Tampered,
    /// Not a sealed value.
    #[error("malformed sealed value: {0}")]
    Malformed(#[from] DecodeError),
}

/// The vault keys this device holds.
#[derive(Clone, Debug, Default)]
pub struct Vault {
    keys: BTreeMap<VaultKeyId, VaultKey>,
    current: Option<VaultKeyId>,
}

const SEAL_FORMAT: u8 = 0x51;
const NONCE_LEN: usize = 24;
/// Longest plaintext secret (64 KiB less the sealing overhead).
pub const MAX_SECRET_LEN: usize = 60 * 1024;

impl Vault {
    /// A locked vault.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key; `make_current` makes it the one new secrets are sealed with.
    pub fn insert(&mut self, key: VaultKey, make_current: bool) {
        let id = key.id();
        self.keys.insert(id, key);
        if make_current || self.current.is_none() {
            self.current = Some(id);
        }
    }

    /// Whether a key for sealing is loaded.
    pub fn is_unlocked(&self) -> bool {
        self.current.is_some()
    }

    /// The current key.
    pub fn current(&self) -> Option<&VaultKey> {
        self.keys.get(&self.current?)
    }

    /// Forgets every key.
    pub fn lock(&mut self) {
        self.keys.clear();
        self.current = None;
    }

    fn associated_data(identity: &IdentityId, path: &str, key: &VaultKeyId) -> Vec<u8> {
        let mut ad = Vec::with_capacity(path.len().saturating_add(64));
        ad.extend_from_slice(b"kathon-sync/v1/vault\0");
        ad.extend_from_slice(identity.as_bytes());
        ad.extend_from_slice(&key.0);
        ad.extend_from_slice(path.as_bytes());
        ad
    }

    /// Seals `plaintext` for the register at `path`.
    pub fn seal(
        &self,
        rng: &mut impl CryptoRngCore,
        identity: &IdentityId,
        path: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        let key = self.current().ok_or(VaultError::Locked)?;
        if plaintext.len() > MAX_SECRET_LEN {
            return Err(VaultError::Malformed(DecodeError::TooLarge {
                what: "secret",
                len: plaintext.len() as u64,
                max: MAX_SECRET_LEN as u64,
            }));
        }
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new((&key.secret).into());
        let aad = Self::associated_data(identity, path, &key.id);
        let ciphertext = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: &aad })
            .map_err(|_| VaultError::Tampered)?;
        let mut w = Writer::with_capacity(ciphertext.len().saturating_add(1 + 16 + NONCE_LEN + 4));
        w.u8(SEAL_FORMAT).raw(&key.id.0).raw(&nonce).bytes_u32(&ciphertext);
        Ok(w.into_bytes())
    }

    /// The key a sealed value names.
    pub fn sealed_with(sealed: &[u8]) -> Result<VaultKeyId, VaultError> {
        let mut r = Reader::new(sealed);
        r.format("sealed value", SEAL_FORMAT)?;
        Ok(VaultKeyId(r.array("vault key id")?))
    }

    /// Opens a value sealed for the register at `path`.
    pub fn open(&self, identity: &IdentityId, path: &str, sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        if !self.is_unlocked() {
            return Err(VaultError::Locked);
        }
        let mut r = Reader::new(sealed);
        r.format("sealed value", SEAL_FORMAT)?;
        let key_id = VaultKeyId(r.array("vault key id")?);
        let nonce: [u8; NONCE_LEN] = r.array("nonce")?;
        let ciphertext = r.bytes_u32(u32::try_from(MAX_SECRET_LEN + 16).unwrap_or(u32::MAX), "ciphertext")?;
        r.finish("sealed value")?;
        let key = self.keys.get(&key_id).ok_or(VaultError::UnknownKey)?;
        let cipher = XChaCha20Poly1305::new((&key.secret).into());
        let aad = Self::associated_data(identity, path, &key_id);
        cipher
            .decrypt(XNonce::from_slice(&nonce), Payload { msg: ciphertext, aad: &aad })
            .map_err(|_| VaultError::Tampered)
    }
}
