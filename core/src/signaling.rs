//! Signaling: how endpoints (browser tabs and native peers) find each other through their
//! bridges and exchange WebRTC offers, answers and candidates.
//!
//! Each endpoint opens a WebSocket to the bridge on its own machine and **joins topics**: opaque
//! 32-byte rendezvous tags. The bridge tells it about every other endpoint that joined one of its
//! topics — on this machine or, through the LAN relay between bridges, on another — and relays
//! signals between them by endpoint ID. That is all a bridge knows or does: it never sees sync
//! data, keys or identities, and it is **untrusted** — what it relays is authenticated end to end
//! by the engine's session handshake, which binds both DTLS fingerprints.
//!
//! Topics:
//!
//! * the **identity topic**, a keyed hash of the identity and the current day, so endpoints of one
//!   identity meet while people on the LAN cannot tell whose devices they see, nor link days;
//! * a **pairing topic**, a hash of an enrolled device's pairing tag, so a new device holding a
//!   pairing code finds the device that showed it.
//!
//! Messages are JSON objects with a `type`, at most [`MAX_SIGNAL_BYTES`] long; the same types
//! serve browser↔bridge and bridge↔bridge.

use crate::identity::IdentityId;

/// Largest signaling message, in bytes (an SDP with candidates is a few KiB).
pub const MAX_SIGNAL_BYTES: usize = 64 * 1024;
/// Most topics one endpoint may join.
pub const MAX_TOPICS: usize = 8;
/// Longest endpoint ID.
pub const MAX_ENDPOINT_ID: usize = 64;

/// A signaling message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Signal {
    /// Endpoint → bridge: register `endpoint` and join `topics` (hex).
    Join {
        /// A random ID for this endpoint, fresh per connection.
        endpoint: String,
        /// Topics to join, hex.
        topics: Vec<String>,
    },
    /// Bridge → endpoint: another endpoint shares `topic`.
    Peer {
        /// The other endpoint.
        endpoint: String,
        /// The shared topic.
        topic: String,
    },
    /// Bridge → endpoint: an endpoint left.
    PeerLeft {
        /// The endpoint.
        endpoint: String,
    },
    /// An offer, answer or candidate from one endpoint to another (the payload is opaque to the
    /// bridge).
    Relay {
        /// Sender (set by the bridge; an endpoint's own claim is overwritten).
        #[serde(default)]
        from: String,
        /// Recipient.
        to: String,
        /// The payload.
        payload: RtcSignal,
    },
    /// Bridge → endpoint: something was refused.
    Error {
        /// What.
        message: String,
    },
}

/// What two endpoints exchange to set up a WebRTC connection (non-trickle: the description
/// carries its candidates).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RtcSignal {
    /// An SDP offer.
    Offer {
        /// The SDP.
        sdp: String,
    },
    /// An SDP answer.
    Answer {
        /// The SDP.
        sdp: String,
    },
}

/// Why a signaling message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// Over [`MAX_SIGNAL_BYTES`].
    #[error("signaling message of {0} bytes is over the {MAX_SIGNAL_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not a signaling message.
    #[error("malformed signaling message: {0}")]
    Malformed(String),
    /// Outside the limits (topic count, ID length, topic form).
    #[error("signaling message outside the limits: {0}")]
    Limits(&'static str),
}

impl Signal {
    /// Parses and checks an untrusted message.
    pub fn parse(text: &str) -> Result<Self, SignalError> {
        if text.len() > MAX_SIGNAL_BYTES {
            return Err(SignalError::TooLarge(text.len()));
        }
        let signal: Signal = serde_json::from_str(text).map_err(|e| SignalError::Malformed(e.to_string()))?;
        signal.check()?;
        Ok(signal)
    }

    fn check(&self) -> Result<(), SignalError> {
        let id_ok = |id: &str| {
            !id.is_empty() && id.len() <= MAX_ENDPOINT_ID && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        let topic_ok = |t: &str| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit());
        match self {
            Signal::Join { endpoint, topics } => {
                if !id_ok(endpoint) {
                    return Err(SignalError::Limits("endpoint ID"));
                }
                if topics.is_empty() || topics.len() > MAX_TOPICS || !topics.iter().all(|t| topic_ok(t)) {
                    return Err(SignalError::Limits("topics"));
                }
            }
            Signal::Peer { endpoint, topic } if !id_ok(endpoint) || !topic_ok(topic) => {
                return Err(SignalError::Limits("peer"));
            }
            Signal::PeerLeft { endpoint } if !id_ok(endpoint) => return Err(SignalError::Limits("endpoint ID")),
            Signal::Relay { from, to, .. } if !id_ok(to) || !(from.is_empty() || id_ok(from)) => {
                return Err(SignalError::Limits("relay endpoints"));
            }
            _ => {}
        }
        Ok(())
    }

    /// Serializes the message.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The identity topic for `day` (days since the Unix epoch).
pub fn identity_topic(identity: &IdentityId, day: u64) -> String {
    let key = blake3::derive_key("kathon-sync 2026-11 identity topic key v1", identity.as_bytes());
    let mut h = blake3::Hasher::new_keyed(&key);
    h.update(&day.to_be_bytes());
    h.finalize().to_hex().to_string()
}

/// The topics an endpoint of `identity` joins at `now_ms`: today's and yesterday's, so devices
/// whose clocks straddle midnight still meet.
pub fn identity_topics(identity: &IdentityId, now_ms: u64) -> Vec<String> {
    let day = now_ms / 86_400_000;
    vec![identity_topic(identity, day), identity_topic(identity, day.saturating_sub(1))]
}

/// The pairing topic of a device's pairing tag.
pub fn pairing_topic(device_tag: &[u8; 8]) -> String {
    let mut h = blake3::Hasher::new_derive_key("kathon-sync 2026-11 pairing topic v1");
    h.update(device_tag);
    h.finalize().to_hex().to_string()
}

/// Extracts the DTLS fingerprint from an SDP (`a=fingerprint:sha-256 AB:…`).
pub fn sdp_fingerprint(sdp: &str) -> Option<crate::sync::Fingerprint> {
    sdp.lines().find_map(|line| line.trim().strip_prefix("a=fingerprint:")).and_then(crate::sync::Fingerprint::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_limits_hold() {
        let join = Signal::Join { endpoint: "abc-123".into(), topics: vec!["a".repeat(64)] };
        assert_eq!(Signal::parse(&join.to_json()).unwrap(), join);
        let relay =
            Signal::Relay { from: String::new(), to: "x".into(), payload: RtcSignal::Offer { sdp: "v=0".into() } };
        assert_eq!(Signal::parse(&relay.to_json()).unwrap(), relay);
        assert!(Signal::parse(r#"{"type":"join","endpoint":"a b","topics":[]}"#).is_err());
        assert!(Signal::parse(&"x".repeat(MAX_SIGNAL_BYTES + 1)).is_err());
        assert!(Signal::parse(r#"{"type":"nope"}"#).is_err());
        let many = Signal::Join { endpoint: "e".into(), topics: vec!["0".repeat(64); 9] };
        assert!(Signal::parse(&many.to_json()).is_err());
    }

    #[test]
    fn fingerprints_come_out_of_sdp() {
        let sdp = "v=0\r\na=fingerprint:sha-256 ab:CD:01\r\na=setup:actpass\r\n";
        assert_eq!(sdp_fingerprint(sdp).unwrap().as_str(), "sha-256 AB:CD:01");
    }
}
