//! An envelope's payload as this device holds it: as signed, or **deflated** once stored.
//!
//! A bulk document update (a bookmark import: 5,000 bookmarks make six envelopes of ~550 KB) is
//! held for as long as the replica lives, to serve it to peers, but read only when the document is
//! rebuilt (a cold open) or a peer asks for it. Its `yrs` encoding repeats each map key's author
//! ID in hex, entry after entry, so it deflates ~5× (3.28 MB → 0.63 MB for the realistic
//! profile's bookmarks at level 1). Small payloads (a few edits) stay as they are: a compressor's
//! tables cost more than they would save.
//!
//! The deflated bytes are what this device stores too (see `Envelope::write_stored_to`), so a
//! cold open reads them as they are and inflates each payload once, to apply it.

use std::borrow::Cow;

use super::attachments::Deflater;
use crate::error::DecodeError;

/// Smallest payload held deflated (an import's envelopes, not a session's edits).
pub(crate) const DEFLATE_MIN: usize = 16 << 10;

#[derive(Clone, Debug)]
pub(super) enum Payload {
    /// As signed.
    Plain(Vec<u8>),
    /// Deflated; `len` is the signed payload's length.
    Deflated { len: u32, bytes: Box<[u8]> },
}

impl Default for Payload {
    fn default() -> Self {
        Payload::Plain(Vec::new())
    }
}

impl Payload {
    /// The signed payload's length.
    pub(super) fn len(&self) -> usize {
        match self {
            Payload::Plain(bytes) => bytes.len(),
            Payload::Deflated { len, .. } => *len as usize,
        }
    }

    /// The signed payload: borrowed, or inflated when held deflated.
    pub(super) fn get(&self) -> Result<Cow<'_, [u8]>, DecodeError> {
        match self {
            Payload::Plain(bytes) => Ok(Cow::Borrowed(bytes)),
            Payload::Deflated { len, bytes } => {
                let expected = *len as usize;
                miniz_oxide::inflate::decompress_to_vec_with_limit(bytes, expected)
                    .ok()
                    .filter(|inflated| inflated.len() == expected)
                    .map(Cow::Owned)
                    .ok_or(DecodeError::NonCanonical {
                        what: "stored payload",
                        reason: "does not inflate to its stated length",
                    })
            }
        }
    }

    /// Holds a plain payload of at least [`DEFLATE_MIN`] bytes deflated from now on, if that saves
    /// at least a quarter of it (an encrypted vault update does not deflate).
    pub(super) fn deflate(&mut self) {
        let Payload::Plain(plain) = self else { return };
        let Ok(len) = u32::try_from(plain.len()) else { return };
        if plain.len() < DEFLATE_MIN {
            return;
        }
        let bytes = Deflater::new().deflate(plain);
        if bytes.len().saturating_mul(4) <= plain.len().saturating_mul(3) {
            *self = Payload::Deflated { len, bytes };
        }
    }

    /// The deflated bytes and the signed length, if held deflated.
    pub(super) fn deflated(&self) -> Option<(u32, &[u8])> {
        match self {
            Payload::Plain(_) => None,
            Payload::Deflated { len, bytes } => Some((*len, bytes)),
        }
    }

    /// Bytes held (buffers' contents).
    pub(super) fn held_len(&self) -> usize {
        match self {
            Payload::Plain(bytes) => bytes.len(),
            Payload::Deflated { bytes, .. } => bytes.len(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    fn repetitive(len: usize) -> Vec<u8> {
        (0..len).map(|i| b"a:22944b66fbfd6a5db6403efc3b8059f/title"[i % 39]).collect()
    }

    #[test]
    fn a_large_payload_is_held_deflated_and_reads_back_the_same() {
        let signed = repetitive(100_000);
        let mut payload = Payload::Plain(signed.clone());
        payload.deflate();
        assert!(payload.deflated().is_some());
        assert!(payload.held_len() * 10 < signed.len());
        assert_eq!(payload.len(), signed.len());
        assert_eq!(&*payload.get().unwrap(), &signed[..]);
    }

    #[test]
    fn small_or_incompressible_payloads_stay_plain() {
        let mut small = Payload::Plain(repetitive(DEFLATE_MIN - 1));
        small.deflate();
        assert!(small.deflated().is_none());
        let mut at_the_minimum = Payload::Plain(repetitive(DEFLATE_MIN));
        at_the_minimum.deflate();
        assert!(at_the_minimum.deflated().is_some());
        let mut rng = <rand_chacha::ChaCha8Rng as rand_core::SeedableRng>::seed_from_u64(3);
        let mut noise = vec![0u8; 100_000];
        rand_core::RngCore::fill_bytes(&mut rng, &mut noise);
        let mut sealed = Payload::Plain(noise);
        sealed.deflate();
        assert!(sealed.deflated().is_none());
    }

    #[test]
    fn deflated_bytes_that_do_not_inflate_to_the_stated_length_are_an_error() {
        let mut payload = Payload::Plain(repetitive(50_000));
        payload.deflate();
        let (len, bytes) = payload.deflated().unwrap();
        let bytes = bytes.to_vec();
        for wrong in [
            Payload::Deflated { len: len + 1, bytes: bytes.clone().into() },
            Payload::Deflated { len: len - 1, bytes: bytes.clone().into() },
            Payload::Deflated { len, bytes: bytes[..bytes.len() / 2].into() },
            Payload::Deflated { len, bytes: vec![0xff; 8].into() },
        ] {
            assert!(wrong.get().is_err());
        }
    }
}
