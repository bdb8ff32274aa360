//! Sealing the identity record (device key, root key, vault keys) with the user's passphrase.
//!
//! Once a passphrase is set, the identity record is stored only sealed: Argon2id (64 MiB,
//! t = 3, p = 4, DESIGN §2) derives a key from the passphrase and a random salt, and
//! XChaCha20-Poly1305 encrypts the record with it. The parameters are stored with the sealed
//! record, so they can be raised later without breaking old stores.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

const MAGIC: &[u8; 4] = b"KSP1";
const AAD: &[u8] = b"kathon-sync/v1/identity-seal";

/// Argon2id cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cost {
    /// Memory, KiB.
    pub memory_kib: u32,
    /// Passes.
    pub passes: u32,
    /// Lanes.
    pub lanes: u32,
}

impl Cost {
    /// DESIGN §2: at least 64 MiB, t = 3, p = 4.
    pub const DEFAULT: Cost = Cost { memory_kib: 64 * 1024, passes: 3, lanes: 4 };
}

/// Whether stored identity bytes are sealed.
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

fn derive(passphrase: &str, salt: &[u8; 16], cost: Cost) -> Result<Zeroizing<[u8; 32]>, String> {
    let params = argon2::Params::new(cost.memory_kib, cost.passes, cost.lanes, Some(32)).map_err(|e| e.to_string())?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon.hash_password_into(passphrase.as_bytes(), salt, key.as_mut()).map_err(|e| e.to_string())?;
    Ok(key)
}

/// Seals `plaintext`. `salt` and `nonce` must be fresh random bytes.
pub fn seal(
    passphrase: &str,
    plaintext: &[u8],
    salt: [u8; 16],
    nonce: [u8; 24],
    cost: Cost,
) -> Result<Vec<u8>, String> {
    let key = derive(passphrase, &salt, cost)?;
    let cipher = XChaCha20Poly1305::new(key.as_ref().into());
    let ciphertext = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: AAD })
        .map_err(|_| "encryption failed".to_owned())?;
    let mut out = Vec::with_capacity(ciphertext.len().saturating_add(64));
    out.extend_from_slice(MAGIC);
    for v in [cost.memory_kib, cost.passes, cost.lanes] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Opens sealed bytes; `None` for a wrong passphrase (or tampered bytes).
pub fn open(passphrase: &str, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let rest = sealed.strip_prefix(MAGIC)?;
    let (head, rest) = rest.split_at_checked(12)?;
    let word = |i: usize| head.get(i..i.saturating_add(4)).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes);
    let cost = Cost { memory_kib: word(0)?, passes: word(4)?, lanes: word(8)? };
    // Refuse absurd stored costs rather than hang or exhaust memory.
    if cost.memory_kib > 1 << 20 || cost.passes > 64 || cost.lanes > 16 {
        return None;
    }
    let (salt, rest) = rest.split_at_checked(16)?;
    let (nonce, ciphertext) = rest.split_at_checked(24)?;
    let key = derive(passphrase, salt.try_into().ok()?, cost).ok()?;
    let cipher = XChaCha20Poly1305::new(key.as_ref().into());
    cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: AAD }).ok().map(Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_only_with_the_passphrase() {
        let cheap = Cost { memory_kib: 64, passes: 1, lanes: 1 };
        let sealed = seal("correct horse", b"device key", [1; 16], [2; 24], cheap).unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(10).any(|w| w == b"device key"));
        assert_eq!(open("correct horse", &sealed).unwrap().as_slice(), b"device key");
        assert!(open("wrong", &sealed).is_none());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(open("correct horse", &tampered).is_none());
    }
}
