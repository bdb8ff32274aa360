//! The byte-level codec shared by every wire and storage format in this crate.
//!
//! Formats are fixed-width big-endian integers and length-prefixed byte strings, so every value has
//! exactly one encoding (no varints, no optional padding): what a signature covers is what a peer
//! decodes. [`Reader`] reads untrusted bytes: every read is bounds-checked, every length is checked
//! against a hard cap *and* against the bytes actually left before anything is allocated, and no
//! path panics.

use crate::error::DecodeError;

/// A cursor over untrusted bytes.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Everything read so far, from the start of the buffer.
    pub(crate) fn consumed(&self) -> &'a [u8] {
        self.buf.get(..self.pos).unwrap_or_default()
    }

    pub(crate) fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let truncated = || DecodeError::Truncated { what, at: self.pos, needed: len.saturating_sub(self.remaining()) };
        let end = self.pos.checked_add(len).ok_or_else(truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(u8::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// Reads a format byte — the type in the high nibble, the version in the low one — and
    /// refuses anything but `supported`: another type is an unknown tag, another version of this
    /// type an unsupported version.
    pub(crate) fn format(&mut self, what: &'static str, supported: u8) -> Result<(), DecodeError> {
        let found = self.u8(what)?;
        if found == supported {
            Ok(())
        } else if found >> 4 == supported >> 4 {
            Err(DecodeError::UnsupportedVersion { what, found: found & 0x0f, supported: supported & 0x0f })
        } else {
            Err(DecodeError::UnknownTag { what, tag: found })
        }
    }

    /// Like [`Reader::format`], for a type with several supported versions (oldest first); returns
    /// the format byte found.
    pub(crate) fn format_of(&mut self, what: &'static str, supported: &[u8]) -> Result<u8, DecodeError> {
        let found = self.u8(what)?;
        match supported {
            _ if supported.contains(&found) => Ok(found),
            [.., newest] if found >> 4 == newest >> 4 => {
                Err(DecodeError::UnsupportedVersion { what, found: found & 0x0f, supported: newest & 0x0f })
            }
            _ => Err(DecodeError::UnknownTag { what, tag: found }),
        }
    }

    /// Checks a declared length against its cap and against what is left, so that no
    /// allocation is ever sized by an attacker beyond the input actually received.
    pub(crate) fn check_len(&self, len: u64, max: u64, what: &'static str) -> Result<usize, DecodeError> {
        if len > max {
            return Err(DecodeError::TooLarge { what, len, max });
        }
        let len = usize::try_from(len).map_err(|_| DecodeError::TooLarge { what, len, max })?;
        if len > self.remaining() {
            return Err(DecodeError::Truncated { what, at: self.pos, needed: len.saturating_sub(self.remaining()) });
        }
        Ok(len)
    }

    /// A byte string with a `u8` length prefix.
    pub(crate) fn bytes_u8(&mut self, max: u8, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u8(what)?;
        let len = self.check_len(len.into(), max.into(), what)?;
        self.take(len, what)
    }

    /// A byte string with a `u16` length prefix.
    pub(crate) fn bytes_u16(&mut self, max: u16, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u16(what)?;
        let len = self.check_len(len.into(), max.into(), what)?;
        self.take(len, what)
    }

    /// A byte string with a `u32` length prefix.
    pub(crate) fn bytes_u32(&mut self, max: u32, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(what)?;
        let len = self.check_len(len.into(), max.into(), what)?;
        self.take(len, what)
    }

    /// A UTF-8 string with a `u8` length prefix.
    pub(crate) fn str_u8(&mut self, max: u8, what: &'static str) -> Result<&'a str, DecodeError> {
        let bytes = self.bytes_u8(max, what)?;
        core::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { what })
    }

    /// A UTF-8 string with a `u16` length prefix.
    pub(crate) fn str_u16(&mut self, max: u16, what: &'static str) -> Result<&'a str, DecodeError> {
        let bytes = self.bytes_u16(max, what)?;
        core::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { what })
    }

    /// A list of 32-byte hashes with a `u8` count, which must be strictly ascending (so the
    /// encoding is canonical and duplicate-free).
    pub(crate) fn sorted_hashes(&mut self, max: u8, what: &'static str) -> Result<Vec<[u8; 32]>, DecodeError> {
        let count = self.u8(what)?;
        let byte_len = u64::from(count).saturating_mul(32);
        self.check_len(byte_len, u64::from(max).saturating_mul(32), what)?;
        let mut out: Vec<[u8; 32]> = Vec::with_capacity(count.into());
        for _ in 0..count {
            let hash = self.array::<32>(what)?;
            if out.last().is_some_and(|last| *last >= hash) {
                return Err(DecodeError::NonCanonical { what, reason: "hashes must be strictly ascending" });
            }
            out.push(hash);
        }
        Ok(out)
    }

    /// Fails unless every byte has been read.
    pub(crate) fn finish(self, what: &'static str) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { what, count }),
        }
    }
}

/// Builds an encoding. Lengths are checked by the typed constructors before anything is written,
/// so writing cannot fail; the `as` conversions below are guarded by those caps.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self { buf: Vec::with_capacity(capacity) }
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// Writes a `u8` length prefix; the caller guarantees `bytes.len() <= u8::MAX`.
    pub(crate) fn bytes_u8(&mut self, bytes: &[u8]) -> &mut Self {
        let len = u8::try_from(bytes.len()).unwrap_or(u8::MAX);
        self.u8(len).raw(bytes.get(..usize::from(len)).unwrap_or_default())
    }

    /// Writes a `u16` length prefix; the caller guarantees `bytes.len() <= u16::MAX`.
    pub(crate) fn bytes_u16(&mut self, bytes: &[u8]) -> &mut Self {
        let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
        self.u16(len).raw(bytes.get(..usize::from(len)).unwrap_or_default())
    }

    /// Writes a `u32` length prefix; the caller guarantees `bytes.len() <= u32::MAX`.
    pub(crate) fn bytes_u32(&mut self, bytes: &[u8]) -> &mut Self {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let shown = usize::try_from(len).unwrap_or(usize::MAX);
        self.u32(len).raw(bytes.get(..shown).unwrap_or_default())
    }

    /// Writes a `u8` count and the hashes; the caller guarantees sorting and the count cap.
    pub(crate) fn hashes(&mut self, hashes: &[[u8; 32]]) -> &mut Self {
        let count = u8::try_from(hashes.len()).unwrap_or(u8::MAX);
        self.u8(count);
        for hash in hashes.iter().take(count.into()) {
            self.raw(hash);
        }
        self
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Overwrites the four bytes at `at` (a length written before what it measures was known).
    pub(crate) fn set_u32_at(&mut self, at: usize, v: u32) {
        if let Some(slot) = self.buf.get_mut(at..at.saturating_add(4)) {
            slot.copy_from_slice(&v.to_be_bytes());
        }
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reports_truncation_without_panicking() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16("x"), Ok(0x0102));
        assert_eq!(r.u32("y"), Err(DecodeError::Truncated { what: "y", at: 2, needed: 3 }));
    }

    #[test]
    fn declared_length_beyond_input_is_refused_before_allocation() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0]);
        assert!(matches!(r.bytes_u32(u32::MAX, "blob"), Err(DecodeError::Truncated { .. })));
        let mut r = Reader::new(&[0, 0, 0, 9]);
        assert!(matches!(r.bytes_u32(8, "blob"), Err(DecodeError::TooLarge { len: 9, max: 8, .. })));
    }

    #[test]
    fn hashes_must_be_strictly_ascending() {
        let mut bytes = vec![2u8];
        bytes.extend([7u8; 32]);
        bytes.extend([7u8; 32]);
        assert!(matches!(Reader::new(&bytes).sorted_hashes(4, "h"), Err(DecodeError::NonCanonical { .. })));
    }
}
