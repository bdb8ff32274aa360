//! Text forms of bytes: RFC 4648 base32 without padding (item IDs, identity and device IDs,
//! pairing codes) and lower-case hex (hashes, envelope IDs).
//!
//! Both come from RustCrypto's constant-time codecs (`base32ct`, `base16ct`): some of these
//! bytes are secrets (a pairing code carries one), and their code is a fraction of a general
//! codec's in the browser's `.wasm`. Decoding accepts only **canonical** text: base32 whose
//! unused trailing bits are not zero would be a second spelling of the same bytes, so the decoded
//! bytes are encoded again and compared. Hex is read in either case only where people type it
//! ([`hex_32`]); keys this code wrote are read back in the one case it writes.

use base32ct::{Base32Unpadded, Base32UpperUnpadded, Encoding};

/// Lower-case unpadded base32 of `bytes` written into `out`, which must hold exactly the
/// encoded length; `None` if it does not.
pub(crate) fn base32_lower_into<'a>(bytes: &[u8], out: &'a mut [u8]) -> Option<&'a str> {
    Base32Unpadded::encode(bytes, out).ok()
}

/// Upper-case unpadded base32 of `bytes`.
pub(crate) fn base32_upper(bytes: &[u8]) -> String {
    Base32UpperUnpadded::encode_string(bytes)
}

/// Longest base32 text [`base32_decode_into`] reads (it works on the stack: item IDs are parsed
/// on every call that names one).
const MAX_BASE32_TEXT: usize = 64;

/// Decodes canonical unpadded base32 of either case into `out`, which must be exactly the
/// decoded length.
pub(crate) fn base32_decode_into(text: &[u8], out: &mut [u8]) -> Option<()> {
    let mut lower = [0u8; MAX_BASE32_TEXT];
    let lower = lower.get_mut(..text.len())?;
    lower.copy_from_slice(text);
    lower.make_ascii_lowercase();
    if Base32Unpadded::decode(&*lower, out).ok()?.len() != out.len() {
        return None;
    }
    let mut again = [0u8; MAX_BASE32_TEXT];
    let again = again.get_mut(..text.len())?;
    (base32_lower_into(out, again)?.as_bytes() == &*lower).then_some(())
}

/// Decodes canonical upper-case unpadded base32.
pub(crate) fn base32_upper_decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; text.len().saturating_mul(5) / 8];
    let len = Base32UpperUnpadded::decode(text, &mut out).ok()?.len();
    out.truncate(len);
    (base32_upper(&out).as_bytes() == text).then_some(out)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    base16ct::lower::encode_string(bytes)
}

/// Exactly 32 bytes from 64 hex digits of either case (what people type or paste).
pub fn hex_32(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    (base16ct::mixed::decode(text, &mut out).ok()?.len() == 32).then_some(out)
}

/// Exactly 32 bytes from 64 lower-case hex digits: the one spelling [`hex`] writes, for keys
/// this code wrote itself (a second spelling would be a second key for the same record).
pub(crate) fn hex_32_lower(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    (base16ct::lower::decode(text, &mut out).ok()?.len() == 32).then_some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn base32_round_trips_in_either_case_and_refuses_a_second_spelling() {
        let bytes = [0xa5u8; 16];
        let mut buf = [0u8; 26];
        let text = base32_lower_into(&bytes, &mut buf).unwrap().to_owned();
        let mut back = [0u8; 16];
        base32_decode_into(text.as_bytes(), &mut back).unwrap();
        assert_eq!(back, bytes);
        base32_decode_into(text.to_ascii_uppercase().as_bytes(), &mut back).unwrap();
        assert_eq!(back, bytes);
        // 16 bytes leave 2 unused bits in the last character: setting one is another spelling.
        const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
        let mut odd = text.into_bytes();
        let last = odd.len() - 1;
        let value = ALPHABET.iter().position(|c| *c == odd[last]).unwrap();
        odd[last] = ALPHABET[value ^ 1];
        assert!(base32_decode_into(&odd, &mut back).is_none());
        assert!(base32_decode_into(b"not base32 at all 0189!!!!", &mut back).is_none());
        assert!(base32_decode_into(&odd[..25], &mut back).is_none());

        let raw = [7u8; 26];
        let upper = base32_upper(&raw);
        assert_eq!(base32_upper_decode(upper.as_bytes()).unwrap(), raw);
        assert!(base32_upper_decode(upper.to_ascii_lowercase().as_bytes()).is_none());
    }

    #[test]
    fn hex_takes_either_case_and_only_32_bytes() {
        let bytes = [0xabu8; 32];
        let text = hex(&bytes);
        assert_eq!(text, "ab".repeat(32));
        assert_eq!(hex_32(&text), Some(bytes));
        assert_eq!(hex_32(&text.to_ascii_uppercase()), Some(bytes));
        assert_eq!(hex_32(&text[..62]), None);
        assert_eq!(hex_32(&format!("{text}00")), None);
        assert_eq!(hex_32(&text.replace('a', "g")), None);
        assert_eq!(hex_32_lower(&text), Some(bytes));
        assert_eq!(hex_32_lower(&text.to_ascii_uppercase()), None);
    }
}
