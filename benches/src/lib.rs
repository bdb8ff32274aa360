//! Shared pieces of the benchmarks: deterministic fixtures with fixed seeds, so that anyone can
//! rerun a bench and get the same workload.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::arithmetic_side_effects, clippy::indexing_slicing)]

pub mod yjs;

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

/// The title of the `i`-th bookmark a bench adds as a change.
pub fn change_title(tag: &str, i: usize) -> String {
    format!("{tag} change {i}: an article worth reading")
}

/// The URL of the `i`-th bookmark a bench adds as a change.
pub fn change_url(i: usize) -> String {
    format!("https://example{}.org/articles/{i}/a-reasonably-long-path?ref=toolbar", i % 97)
}

/// Loads the realistic profile into an engine the way a browser would: one import of the
/// bookmarks, one of the history, one of the passwords, the device's layout.
pub fn load_profile(engine: &mut kathon_core::sync::Engine, profile: &kathon_core::testing::Profile, now_ms: u64) {
    engine.transact(now_ms, |e| e.import_bookmarks(&profile.bookmarks)).unwrap();
    engine
        .transact(now_ms, |e| {
            for v in &profile.visits {
                e.record_visit(&v.url, &v.title, v.at_ms, v.transition)?;
            }
            Ok(())
        })
        .unwrap();
    engine.transact(now_ms, |e| e.import_passwords(&profile.passwords)).unwrap();
    engine.transact(now_ms, |e| e.set_device_layout(&profile.layout)).unwrap();
}

/// Reads an engine's pending events and storage batches as a driver does, handing each record
/// written to `each` (in order: a later write of a key replaces an earlier one) and completing
/// the batch.
pub fn drain_storage(
    engine: &mut kathon_core::sync::Engine,
    mut each: impl FnMut(&kathon_core::sync::RecordKey, &[u8]),
) {
    while engine.poll_event().is_some() {}
    while let Some(batch) = engine.poll_storage() {
        for (key, body) in &batch.puts {
            each(key, body);
        }
        engine.handle_storage_done(batch.id);
    }
}

/// The clock the profile benches run at (the generated visits end here).
pub const PROFILE_NOW: u64 = 1_764_000_000_000;

/// One identity with two enrolled devices sharing a vault key, and the realistic profile: the
/// fixture of the apply and verified-ingest benches, natively and in wasm.
#[derive(Debug)]
pub struct ProfileSetup {
    /// Knows both devices.
    pub registry: kathon_core::certificate::DeviceRegistry,
    /// Device 0 writes, device 1 ingests.
    pub devices: Vec<DeviceSecretKey>,
    /// The shared vault key.
    pub vault_key: kathon_core::model::vault::VaultKey,
    /// The data.
    pub profile: kathon_core::testing::Profile,
    /// Its size.
    pub size: kathon_core::testing::ProfileSize,
}

impl ProfileSetup {
    /// The realistic profile, or the small one when `KATHON_PROFILE=small`.
    pub fn from_env() -> Self {
        let small = std::env::var("KATHON_PROFILE").as_deref() == Ok("small");
        Self::new(if small {
            kathon_core::testing::ProfileSize::SMALL
        } else {
            kathon_core::testing::ProfileSize::REALISTIC
        })
    }

    /// A profile of `size`, from [`SEED`].
    pub fn new(size: kathon_core::testing::ProfileSize) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(SEED);
        let root = RootSecretKey::generate(&mut rng);
        let devices: Vec<DeviceSecretKey> = (0..2).map(|_| DeviceSecretKey::generate(&mut rng)).collect();
        let mut registry = DeviceRegistry::new(root.public());
        for (i, d) in devices.iter().enumerate() {
            let name = DeviceName::new(&format!("d{i}")).unwrap();
            registry.add_certificate(DeviceCertificate::issue(&root, d.public(), name, 0, NEVER_EXPIRES)).unwrap();
        }
        let vault_key = kathon_core::model::vault::VaultKey::generate(&mut rng);
        let profile = kathon_core::testing::Profile::generate(SEED, size, PROFILE_NOW);
        Self { registry, devices, vault_key, profile, size }
    }

    /// A fresh replica on device `i`.
    pub fn replica(&self, i: usize, rng: &mut ChaCha20Rng) -> kathon_core::model::BrowserState {
        use rand_core::RngCore;
        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        let mut s = kathon_core::model::BrowserState::new(
            self.registry.clone(),
            self.devices[i].clone(),
            nonce,
            kathon_core::model::Settings::default(),
        )
        .unwrap();
        s.vault_mut().insert(self.vault_key.clone(), true);
        s
    }

    /// Imports the whole profile into `s` as a browser would (four transactions).
    pub fn apply(&self, s: &mut kathon_core::model::BrowserState, rng: &mut ChaCha20Rng) {
        let now = PROFILE_NOW;
        s.transact(now, rng, |e| e.import_bookmarks(&self.profile.bookmarks)).unwrap();
        s.transact(now, rng, |e| {
            for v in &self.profile.visits {
                e.record_visit(&v.url, &v.title, v.at_ms, v.transition)?;
            }
            Ok(())
        })
        .unwrap();
        s.transact(now, rng, |e| e.import_passwords(&self.profile.passwords)).unwrap();
        s.transact(now, rng, |e| e.set_device_layout(&self.profile.layout)).unwrap();
    }

    /// Records: bookmarks + visits + passwords + one layout.
    pub fn records(&self) -> u64 {
        (self.size.bookmarks + self.size.visits + self.size.passwords + 1) as u64
    }

    /// Device 0's envelopes for the whole profile, encoded as they travel.
    pub fn wire(&self) -> Vec<Vec<u8>> {
        let mut rng = ChaCha20Rng::seed_from_u64(SEED + 1);
        let mut built = self.replica(0, &mut rng);
        self.apply(&mut built, &mut rng);
        built.envelopes().map(|e| e.encode()).collect()
    }
}
