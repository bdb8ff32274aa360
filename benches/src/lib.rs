//! Shared pieces of the benchmarks: deterministic fixtures with fixed seeds, so that anyone can
//! rerun a bench and get the same workload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kathon_core::certificate::{DeviceCertificate, DeviceName, DeviceRegistry, NEVER_EXPIRES};
use kathon_core::envelope::{Envelope, UnsignedEnvelope, VerifiedEnvelope};
use kathon_core::hlc::Timestamp;
use kathon_core::identity::{DeviceSecretKey, IdentityId, RootSecretKey};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// The seed every bench starts from.
pub const SEED: u64 = 0x6b61_7468_6f6e;

/// One identity with one enrolled device.
#[derive(Debug)]
pub struct Device {
    /// The identity.
    pub identity: IdentityId,
    /// The device's key.
    pub key: DeviceSecretKey,
    /// A registry that knows the device.
    pub registry: DeviceRegistry,
}

impl Device {
    /// Builds the fixture from [`SEED`].
    pub fn new() -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(SEED);
        let root = RootSecretKey::generate(&mut rng);
        let key = DeviceSecretKey::generate(&mut rng);
        let identity = root.public();
        let mut registry = DeviceRegistry::new(identity);
        let name = DeviceName::new("bench").unwrap();
        registry.add_certificate(DeviceCertificate::issue(&root, key.public(), name, 0, NEVER_EXPIRES)).unwrap();
        Self { identity, key, registry }
    }

    /// A chain of `count` envelopes with `payload_len`-byte payloads.
    pub fn chain(&self, count: u64, payload_len: usize) -> Vec<VerifiedEnvelope> {
        let mut out: Vec<VerifiedEnvelope> = Vec::new();
        for seq in 1..=count {
            let unsigned = UnsignedEnvelope {
                kind: 1,
                seq,
                prev: out.last().map(VerifiedEnvelope::id),
                hlc: Timestamp::from_wall_ms(1_700_000_000_000u64.saturating_add(seq)),
                parents: Vec::new(),
                payload: vec![0x5a; payload_len],
                attachments: vec![],
            };
            out.push(Envelope::sign(&self.key, &self.identity, unsigned).unwrap());
        }
        out
    }
}

impl Default for Device {
    fn default() -> Self {
        Self::new()
    }
}
