//! Deterministic fixtures shared by the integration tests (native and wasm).
#![allow(dead_code, unreachable_pub)]

use kathon_core::certificate::{DeviceCertificate, DeviceName, DeviceRegistry, NEVER_EXPIRES, VerifiedCertificate};
use kathon_core::envelope::{Envelope, EnvelopeId, UnsignedEnvelope, VerifiedEnvelope};
use kathon_core::hlc::Timestamp;
use kathon_core::identity::{DeviceSecretKey, IdentityId, RootSecretKey};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// An identity with `devices` enrolled devices.
pub struct Fixture {
    pub root: RootSecretKey,
    pub identity: IdentityId,
    pub devices: Vec<DeviceSecretKey>,
    pub certificates: Vec<VerifiedCertificate>,
    pub registry: DeviceRegistry,
}

impl Fixture {
    pub fn new(seed: u64, devices: usize) -> Self {
        let mut rng = rng(seed);
        let root = RootSecretKey::generate(&mut rng);
        let identity = root.public();
        let mut registry = DeviceRegistry::new(identity);
        let mut keys = Vec::new();
        let mut certificates = Vec::new();
        for i in 0..devices {
            let key = DeviceSecretKey::generate(&mut rng);
            let name = DeviceName::new(&format!("device {i}")).unwrap();
            let cert = DeviceCertificate::issue(&root, key.public(), name, 0, NEVER_EXPIRES);
            registry.add_certificate(cert.clone()).unwrap();
            keys.push(key);
            certificates.push(cert);
        }
        Self { root, identity, devices: keys, certificates, registry }
    }

    /// Envelope number `seq` of device `device`, following `prev`.
    pub fn envelope(
        &self,
        device: usize,
        seq: u64,
        prev: Option<EnvelopeId>,
        parents: Vec<EnvelopeId>,
        payload: &[u8],
    ) -> VerifiedEnvelope {
        let unsigned = UnsignedEnvelope {
            kind: 1,
            seq,
            prev,
            hlc: Timestamp { wall_ms: 1_700_000_000_000 + seq, counter: 0 },
            parents,
            payload: payload.to_vec(),
            attachments: vec![],
        };
        Envelope::sign(&self.devices[device], &self.identity, unsigned).unwrap()
    }

    /// A chain of `len` envelopes by `device`.
    pub fn chain(&self, device: usize, len: u64) -> Vec<VerifiedEnvelope> {
        let mut out: Vec<VerifiedEnvelope> = Vec::new();
        for seq in 1..=len {
            let prev = out.last().map(VerifiedEnvelope::id);
            out.push(self.envelope(device, seq, prev, Vec::new(), format!("change {seq}").as_bytes()));
        }
        out
    }
}

use kathon_core::model::{BrowserState, Settings};

/// A replica of device `i` of the fixture, with its own RNG.
pub struct Replica {
    pub state: BrowserState,
    pub rng: ChaCha20Rng,
}

impl Fixture {
    pub fn replica(&self, i: usize, seed: u64) -> Replica {
        self.replica_with(i, seed, Settings::default())
    }

    pub fn replica_with(&self, i: usize, seed: u64, settings: Settings) -> Replica {
        use rand_core::RngCore;
        let mut rng = rng(seed);
        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        let state = BrowserState::new(self.registry.clone(), self.devices[i].clone(), nonce, settings).unwrap();
        Replica { state, rng }
    }
}

pub const T0: u64 = 1_764_000_000_000;

/// Sends every envelope `from` holds to `to` (as bytes, through decoding), in `from`'s order.
pub fn sync_into(from: &BrowserState, to: &mut BrowserState, now_ms: u64) {
    let envelopes: Vec<Vec<u8>> = from.envelopes().map(|e| e.encode()).collect();
    for bytes in envelopes {
        let decoded = Envelope::decode(&bytes).unwrap();
        to.receive(decoded, now_ms).unwrap();
    }
}
