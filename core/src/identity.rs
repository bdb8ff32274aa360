//! Keys and their names: the user's root identity, device keys, and the text form people read.
//!
//! A user **identity** is an Ed25519 root key; its public key is the [`IdentityId`]. Every device
//! has its **own** Ed25519 key, named by its [`DeviceId`], certified by the root (see
//! [`crate::certificate`]). Public keys are validated when they are built (a curve point, not of
//! small order), so a value of these types is always usable; every verification uses
//! `verify_strict`. Secret keys print as `[redacted]` and are zeroized when dropped.
//!
//! # Text form
//!
//! IDs are shown like Syncthing's device IDs: the 32 key bytes plus a 3-byte checksum, in
//! base32 (56 characters), in eight groups of seven:
//!
//! ```text
//! MFRGGZD-FMZTGNB-...-XXXXXXX
//! ```
//!
//! The checksum is a BLAKE3 hash under a context string that differs for identities and devices,
//! so a typo is caught with probability 1 − 2⁻²⁴ and a device ID pasted where an identity ID is
//! expected is named as such. Parsing ignores case, spaces and dashes, and reads `0`, `1` and `8`
//! as the letters `O`, `I` and `B` they are often mistaken for.

use core::fmt;
use core::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::error::DecodeError;
use crate::hash::{Context, Hash, context};

/// Why a text ID did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdParseError {
    /// Not 56 base32 characters once dashes and spaces are removed.
    #[error("an ID has 56 letters and digits (dashes and spaces aside); this has {found}")]
    WrongLength {
        /// Characters found.
        found: usize,
    },
    /// A character outside the base32 alphabet.
    #[error("{character:?} at position {position} is not a letter or digit 2-7")]
    InvalidCharacter {
        /// The character.
        character: char,
        /// Its position in the input.
        position: usize,
    },
    /// The checksum does not match: a typo.
    #[error("the checksum does not match: check the ID for a typo")]
    ChecksumMismatch,
    /// A valid ID of the other kind.
    #[error("this is a {found} ID, not a {expected} ID")]
    WrongKind {
        /// What was asked for.
        expected: &'static str,
        /// What it is.
        found: &'static str,
    },
    /// The checksum matches but the bytes are not a usable public key.
    #[error("the ID does not name a valid public key")]
    InvalidKey,
}

const TEXT_KEY_LEN: usize = 32;
const TEXT_CHECKSUM_LEN: usize = 3;
const TEXT_CHARS: usize = 56;
const TEXT_GROUP: usize = 7;

fn text_checksum(ctx: &'static Context, key: &[u8; 32]) -> [u8; TEXT_CHECKSUM_LEN] {
    let digest = Hash::digest(ctx, &[key]);
    let mut out = [0u8; TEXT_CHECKSUM_LEN];
    out.copy_from_slice(digest.as_bytes().get(..TEXT_CHECKSUM_LEN).unwrap_or(&[0; TEXT_CHECKSUM_LEN]));
    out
}

fn encode_text(ctx: &'static Context, key: &[u8; 32]) -> String {
    let mut raw = [0u8; TEXT_KEY_LEN + TEXT_CHECKSUM_LEN];
    let (key_part, sum_part) = raw.split_at_mut(TEXT_KEY_LEN);
    key_part.copy_from_slice(key);
    sum_part.copy_from_slice(&text_checksum(ctx, key));
    let plain = crate::text::base32_upper(&raw);
    let mut out = String::with_capacity(TEXT_CHARS + TEXT_CHARS / TEXT_GROUP);
    for (i, ch) in plain.chars().enumerate() {
        if i > 0 && i % TEXT_GROUP == 0 {
            out.push('-');
        }
        out.push(ch);
    }
    out
}

fn decode_text(
    ctx: &'static Context,
    other_ctx: &'static Context,
    expected: &'static str,
    found_other: &'static str,
    text: &str,
) -> Result<[u8; 32], IdParseError> {
    let mut clean = String::with_capacity(TEXT_CHARS);
    for (position, character) in text.chars().enumerate() {
        let mapped = match character.to_ascii_uppercase() {
            '-' | ' ' => continue,
            '0' => 'O',
            '1' => 'I',
            '8' => 'B',
            c @ ('A'..='Z' | '2'..='7') => c,
            _ => {
                return Err(IdParseError::InvalidCharacter { character, position });
            }
        };
        if clean.len() >= TEXT_CHARS {
            return Err(IdParseError::WrongLength { found: text.chars().filter(|c| !matches!(c, '-' | ' ')).count() });
        }
        clean.push(mapped);
    }
    if clean.len() != TEXT_CHARS {
        return Err(IdParseError::WrongLength { found: clean.len() });
    }
    let raw = crate::text::base32_upper_decode(clean.as_bytes()).ok_or(IdParseError::ChecksumMismatch)?;
    let (key_part, sum_part) =
        raw.split_at_checked(TEXT_KEY_LEN).ok_or(IdParseError::WrongLength { found: clean.len() })?;
    let key: [u8; 32] = key_part.try_into().map_err(|_| IdParseError::WrongLength { found: clean.len() })?;
    if sum_part == text_checksum(ctx, &key) {
        Ok(key)
    } else if sum_part == text_checksum(other_ctx, &key) {
        Err(IdParseError::WrongKind { expected, found: found_other })
    } else {
        Err(IdParseError::ChecksumMismatch)
    }
}

/// Parses 32 bytes as an Ed25519 public key fit for verification: a valid point, not of small
/// order (small-order keys admit signatures that verify for many messages).
fn parse_verifying_key(bytes: &[u8; 32], what: &'static str) -> Result<VerifyingKey, DecodeError> {
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| DecodeError::InvalidKey { what })?;
    if key.is_weak() {
        return Err(DecodeError::InvalidKey { what });
    }
    Ok(key)
}

macro_rules! public_key_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $ctx:expr, $other_ctx:expr, $other_kind:literal) => {
        $(#[$doc])*
        ///
        /// Holds the 32 key bytes, validated when built: a value of this type always decompresses
        /// to a point that is not of small order.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Parses and validates a public key.
            pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, DecodeError> {
                parse_verifying_key(bytes, concat!($kind, " key")).map(|_| Self(*bytes))
            }

            /// Takes 32 bytes as a *claimed* key without decompressing it (which costs several
            /// microseconds). Only for claims that are looked up among validated keys before
            /// anything relies on them — an envelope's author is looked up in the
            /// [`DeviceRegistry`](crate::certificate::DeviceRegistry). A claim that is not a valid
            /// key fails every verification (see `verifying_key`).
            #[allow(dead_code, reason = "used for device IDs only; generated for both kinds")]
            pub(crate) fn from_claimed_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The 32 public-key bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The decompressed key, for repeated verification. (Validated at construction; the
            /// fallback, the identity point, is refused by `verify_strict`, so it fails closed.)
            pub(crate) fn verifying_key(&self) -> VerifyingKey {
                VerifyingKey::from_bytes(&self.0).unwrap_or_default()
            }

            /// The checksummed text form (see the [module docs](self)).
            pub fn to_text(&self) -> String {
                encode_text($ctx, self.as_bytes())
            }

            /// Checks `signature` over `message` with `verify_strict`.
            #[allow(dead_code)] // device keys verify through their certificates
            pub(crate) fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
                verify_strict(&self.verifying_key(), message, signature)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_text())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let text = self.to_text();
                write!(f, concat!(stringify!($name), "({}…)"), text.get(..15).unwrap_or(&text))
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let bytes = decode_text($ctx, $other_ctx, $kind, $other_kind, s)?;
                Self::from_bytes(&bytes).map_err(|_| IdParseError::InvalidKey)
            }
        }
    };
}

public_key_type!(
    /// A user identity: the public half of the root key. Everything a user syncs belongs to one.
    IdentityId,
    "identity",
    &context::IDENTITY_TEXT_CHECKSUM,
    &context::DEVICE_TEXT_CHECKSUM,
    "device"
);

public_key_type!(
    /// A device: the public half of a device's own signing key.
    DeviceId,
    "device",
    &context::DEVICE_TEXT_CHECKSUM,
    &context::IDENTITY_TEXT_CHECKSUM,
    "identity"
);

macro_rules! secret_key_type {
    ($(#[$doc:meta])* $name:ident, $public:ident) => {
        $(#[$doc])*
        ///
        /// `Debug` prints only the public half; the key is zeroized on drop.
        #[derive(Clone)]
        pub struct $name(SigningKey);

        impl $name {
            /// A fresh key from a cryptographically secure generator.
            pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
                Self(SigningKey::generate(rng))
            }

            /// Restores a key from its 32 secret bytes.
            pub fn from_secret_bytes(bytes: &[u8; 32]) -> Self {
                Self(SigningKey::from_bytes(bytes))
            }

            /// The 32 secret bytes, in a buffer that is zeroized on drop. Seal them before they
            /// touch storage.
            pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
                Zeroizing::new(self.0.to_bytes())
            }

            /// The public half.
            pub fn public(&self) -> $public {
                $public(self.0.verifying_key().to_bytes())
            }

            pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
                self.0.sign(message).to_bytes()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("public", &self.public())
                    .field("secret", &"[redacted]")
                    .finish()
            }
        }
    };
}

secret_key_type!(
    /// The user's root signing key. It signs device certificates and revocations, nothing else.
    RootSecretKey,
    IdentityId
);

secret_key_type!(
    /// A device's own signing key. It signs this device's envelopes, register values and
    /// session handshakes.
    DeviceSecretKey,
    DeviceId
);

/// `verify_strict`: the one signature check used everywhere (see `docs/protocol.md`).
pub(crate) fn verify_strict(key: &VerifyingKey, message: &[u8], signature: &[u8; 64]) -> bool {
    key.verify_strict(message, &Signature::from_bytes(signature)).is_ok()
}

/// Builds the message that is actually signed: a domain tag, the identity, and the digest of the
/// object. Binding the identity means a signature made for one identity is worthless in another,
/// and signing a fixed-size digest keeps signing and batch verification cheap for large payloads.
pub(crate) fn signing_message(domain: &'static [u8], identity: &IdentityId, digest: &Hash) -> Vec<u8> {
    let mut msg = Vec::with_capacity(domain.len().saturating_add(65));
    msg.push(u8::try_from(domain.len()).unwrap_or(u8::MAX));
    msg.extend_from_slice(domain);
    msg.extend_from_slice(identity.as_bytes());
    msg.extend_from_slice(digest.as_bytes());
    msg
}

/// Signature domain tags (see `docs/protocol.md`).
pub(crate) mod domain {
    pub(crate) const ENVELOPE: &[u8] = b"kathon-sync/v1/envelope";
    pub(crate) const DEVICE_CERTIFICATE: &[u8] = b"kathon-sync/v1/device-certificate";
    pub(crate) const REVOCATION: &[u8] = b"kathon-sync/v1/revocation";
    pub(crate) const REGISTER_VALUE: &[u8] = b"kathon-sync/v1/register-value";
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn text_form_round_trips_and_tolerates_people() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let id = RootSecretKey::generate(&mut rng).public();
        let text = id.to_text();
        assert_eq!(text.len(), 56 + 7);
        assert_eq!(text.parse::<IdentityId>(), Ok(id));
        let sloppy = text.to_lowercase().replace('-', " ").replace('o', "0").replace('i', "1");
        assert_eq!(sloppy.parse::<IdentityId>(), Ok(id));
    }

    #[test]
    fn text_form_detects_typos_and_kind() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let device = DeviceSecretKey::generate(&mut rng).public();
        let text = device.to_text();
        assert_eq!(text.parse::<IdentityId>(), Err(IdParseError::WrongKind { expected: "identity", found: "device" }));
        let mut chars: Vec<char> = text.chars().collect();
        chars[3] = if chars[3] == 'A' { 'B' } else { 'A' };
        let typo: String = chars.into_iter().collect();
        assert_eq!(typo.parse::<DeviceId>(), Err(IdParseError::ChecksumMismatch));
        assert!(matches!("abc".parse::<DeviceId>(), Err(IdParseError::WrongLength { found: 3 })));
        assert!(matches!("é".parse::<DeviceId>(), Err(IdParseError::InvalidCharacter { .. })));
    }

    #[test]
    fn small_order_keys_are_refused() {
        // The identity point (encoded as 1 followed by zeros) has small order.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert!(DeviceId::from_bytes(&weak).is_err());
    }

    #[test]
    fn secrets_are_redacted() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let key = DeviceSecretKey::generate(&mut rng);
        let shown = format!("{key:?}");
        assert!(shown.contains("[redacted]"));
        let secret_hex = crate::text::hex(key.secret_bytes().as_ref());
        assert!(!shown.to_lowercase().contains(&secret_hex));
    }
}
