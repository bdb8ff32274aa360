//! Typed errors, one enum per failure domain.
//!
//! Every enum is `#[non_exhaustive]` so that new reasons can be added without breaking callers,
//! and every message says what was being read and why it was refused, in words an app can show.

use crate::identity::DeviceId;

/// Bytes that do not decode: truncated, oversized, of an unknown version or not canonical.
///
/// Decoding never panics and never allocates more than the input it was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the value did.
    #[error("{what}: input ends at byte {at}, {needed} more byte(s) needed")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Offset where the read started.
        at: usize,
        /// How many more bytes it needed.
        needed: usize,
    },
    /// A length or count is over its hard cap.
    #[error("{what}: {len} exceeds the limit of {max}")]
    TooLarge {
        /// The field being read.
        what: &'static str,
        /// The declared length.
        len: u64,
        /// The cap.
        max: u64,
    },
    /// A version byte this build does not read.
    #[error("{what}: unsupported version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The structure being read.
        what: &'static str,
        /// The version found.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// A tag or kind byte with no meaning.
    #[error("{what}: unknown tag {tag}")]
    UnknownTag {
        /// The field being read.
        what: &'static str,
        /// The tag found.
        tag: u8,
    },
    /// Bytes left over after a complete value.
    #[error("{count} unexpected trailing byte(s) after {what}")]
    TrailingBytes {
        /// The structure that was read.
        what: &'static str,
        /// How many bytes were left.
        count: usize,
    },
    /// A value with more than one possible encoding, given in a form other than the canonical one.
    #[error("{what}: not in canonical form ({reason})")]
    NonCanonical {
        /// The field being read.
        what: &'static str,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// Text that is not UTF-8.
    #[error("{what}: invalid UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        what: &'static str,
    },
    /// 32 bytes that are not a usable Ed25519 public key (not a curve point, or of small order).
    #[error("{what}: not a valid Ed25519 public key")]
    InvalidKey {
        /// The field being read.
        what: &'static str,
    },
}

/// A well-formed value that must not be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The signature does not verify (under `verify_strict`).
    #[error("{what}: signature does not verify")]
    BadSignature {
        /// What was signed.
        what: &'static str,
    },
    /// Signed for another identity than the one expected.
    #[error("{what}: belongs to another identity")]
    WrongIdentity {
        /// What was checked.
        what: &'static str,
    },
    /// An attachment does not match the hash the signed body commits to.
    #[error("envelope attachment #{index} does not match its signed hash")]
    AttachmentMismatch {
        /// Which attachment.
        index: usize,
    },
    /// The author has no certificate from this identity.
    #[error("device {device} is not enrolled in this identity")]
    UnknownDevice {
        /// The author.
        device: DeviceId,
    },
    /// The author was revoked before this write.
    #[error("device {device} was revoked after its write #{last_valid_seq}; refusing write #{seq}")]
    Revoked {
        /// The author.
        device: DeviceId,
        /// The last sequence number still accepted from it.
        last_valid_seq: u64,
        /// The refused write's sequence number (0 where not applicable).
        seq: u64,
    },
    /// The author's certificate is not valid at the time given.
    #[error(
        "the certificate of device {device} is not valid at {at_ms} ms (valid from {not_before_ms} until {not_after_ms})"
    )]
    Expired {
        /// The author.
        device: DeviceId,
        /// The time checked.
        at_ms: u64,
        /// Start of validity.
        not_before_ms: u64,
        /// End of validity.
        not_after_ms: u64,
    },
}

/// A clock reading that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClockError {
    /// A timestamp further ahead of local time than the allowed skew. The value is held back
    /// until local time reaches it, not dropped.
    #[error("timestamp {stamp_ms} ms is {ahead_ms} ms ahead of local time (allowed skew {max_skew_ms} ms)")]
    TooFarAhead {
        /// The wall-clock part of the timestamp.
        stamp_ms: u64,
        /// How far ahead of local time it is.
        ahead_ms: u64,
        /// The allowed skew.
        max_skew_ms: u64,
    },
    /// The clock has reached the largest representable time.
    #[error("the hybrid logical clock is exhausted")]
    Exhausted,
}
