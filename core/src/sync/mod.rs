//! The sans-IO sync engine.
//!
//! An [`Engine`] is one device: its [`BrowserState`], its sessions with peers, its pairing codes
//! and what it needs stored. It does no IO and reads no clock. A driver (the browser bindings, the
//! native bridge, the simulated network) feeds it inputs and carries out its outputs:
//!
//! | inputs (`handle_*`) | outputs (`poll_*`) |
//! |---|---|
//! | a data channel opened or closed, with both DTLS fingerprints | frames to send to a peer ([`Transmit`], at most 16 KiB each) |
//! | a frame from a peer | storage batches, each one atomic transaction ([`StorageBatch`]) |
//! | a batch made durable (or failed) | events for the app ([`EngineEvent`]) |
//! | the time (`handle_timeout`) | when to call again (`poll_timeout`) |
//! | local changes (`transact`), pairing and revocation commands | |
//!
//! # The run loop
//!
//! After **any** input, drain every output, then sleep until `poll_timeout` or the next input:
//!
//! ```
//! # use kathon_core::sync::{Engine, Transmit};
//! fn drive(engine: &mut Engine, now_ms: u64, send: &mut dyn FnMut(Transmit), store: &mut dyn FnMut(u64)) -> Option<u64> {
//!     engine.handle_timeout(now_ms);
//!     while let Some(transmit) = engine.poll_transmit() {
//!         send(transmit); // on the data channel of `transmit.peer`
//!     }
//!     while let Some(batch) = engine.poll_storage() {
//!         store(batch.id); // write `batch.puts` in one transaction, then `handle_storage_done(batch.id)`
//!     }
//!     while let Some(_event) = engine.poll_event() { /* show it */ }
//!     engine.poll_timeout() // call `handle_timeout` again by then
//! }
//! ```
//!
//! A local change is reported `Committed` — and reaches peers — only after its batch is durable.
//! Peers learn of remote envelopes this device holds only once they are durable here too.
//!
//! # A session
//!
//! 1. Each side sends `Hello` with a fresh nonce (re-sent until the peer's arrives).
//! 2. Each side sends `Auth`: its certificate and a signature binding both DTLS fingerprints and
//!    both nonces (see [`session`]). The other side checks the certificate chains to the same
//!    identity, the device is not revoked, and the signature matches **its own** view of the
//!    fingerprints. Nothing else is accepted before this; a failure ends the session with a typed
//!    [`SessionError`] the app can show.
//! 3. Both send their `Registry` and a `Summary` (their durable per-author heads); each then sends
//!    exactly the envelopes the other lacks, in causal order; new envelopes follow as they become
//!    durable. Summaries repeat every few seconds, which is how losses heal and a dropped session
//!    resumes where it left off.

pub mod session;
pub mod storage;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRngCore, RngCore, SeedableRng};

use crate::certificate::{
    DeviceCertificate, DeviceName, DeviceRegistry, NEVER_EXPIRES, Revocation, VerifiedCertificate,
};
use crate::codec::{Reader, Writer};
use crate::envelope::{Envelope, EnvelopeId, VerifiedEnvelope};
use crate::error::{DecodeError, VerifyError};
use crate::identity::{DeviceId, DeviceSecretKey, IdentityId, RootSecretKey};
use crate::model::vault::{VaultKey, VaultKeyId};
use crate::model::{BrowserState, Edit, IngestError, ModelError, Received, Settings};

pub use session::{Fingerprint, PairingCode};
pub use storage::{LoadError, RecordKey, StorageBatch};
pub use wire::{Message, Purpose, RefuseReason};

/// The driver's name for one connection.
pub type PeerKey = u64;

/// Engine settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// The model's settings.
    pub settings: Settings,
    /// How often an established session repeats its summary.
    pub summary_interval_ms: u64,
    /// How often an unanswered handshake message is re-sent.
    pub retry_ms: u64,
    /// How long a handshake may take.
    pub handshake_timeout_ms: u64,
    /// Most bytes queued for one peer before the engine waits for `handle_drained`.
    pub max_queued_bytes: usize,
    /// How long a pairing code stays valid.
    pub pairing_code_ttl_ms: u64,
    /// Wrong proofs allowed before a pairing code is burned.
    pub pairing_attempts: u8,
    /// Group commit: how long a local change may wait, when nothing is being written, for the
    /// changes after it, so that they are signed and stored together (0: sealed at once). Changes
    /// made while a batch is being written always wait for it. A driver whose every storage
    /// transaction costs much (IndexedDB) sets a few milliseconds.
    pub group_commit_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            settings: Settings::default(),
            summary_interval_ms: 3_000,
            retry_ms: 500,
            handshake_timeout_ms: 15_000,
            max_queued_bytes: 128 * 1024,
            pairing_code_ttl_ms: 10 * 60 * 1000,
            pairing_attempts: 3,
            group_commit_ms: 0,
        }
    }
}

/// One frame for one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The connection.
    pub peer: PeerKey,
    /// The data-channel message (at most 16 KiB).
    pub frame: Vec<u8>,
}

/// Why a session was refused or ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The peer belongs to another identity.
    #[error("the other device belongs to another identity")]
    WrongIdentity,
    /// The peer's device is not enrolled in this identity.
    #[error("the other device is not enrolled in this identity")]
    NotEnrolled,
    /// The peer's device was revoked.
    #[error("the other device was revoked")]
    Revoked,
    /// The handshake signature does not match this connection: a relay changed the DTLS
    /// fingerprints, or replayed an old handshake.
    #[error("the handshake does not match this connection (fingerprints swapped or an old handshake replayed)")]
    BadHandshake,
    /// The pairing code is wrong, expired or used up.
    #[error("the pairing code is wrong, expired or used up")]
    BadPairingCode,
    /// The user refused the pairing.
    #[error("the pairing was refused")]
    PairingRefused,
    /// The peer speaks another protocol version.
    #[error("the other device speaks another protocol version")]
    Version,
    /// The handshake took too long.
    #[error("the handshake timed out")]
    Timeout,
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The peer ended the session, for this reason.
    #[error("the other device refused the session ({0:?})")]
    RefusedByPeer(RefuseReason),
}

impl SessionError {
    fn reason(&self) -> RefuseReason {
        match self {
            SessionError::WrongIdentity => RefuseReason::WrongIdentity,
            SessionError::NotEnrolled | SessionError::Revoked => RefuseReason::NotEnrolled,
            SessionError::BadHandshake => RefuseReason::BadHandshake,
            SessionError::BadPairingCode => RefuseReason::BadPairingCode,
            SessionError::PairingRefused => RefuseReason::PairingRefused,
            SessionError::Version => RefuseReason::Version,
            SessionError::Timeout => RefuseReason::Timeout,
            SessionError::Protocol(_) | SessionError::RefusedByPeer(_) => RefuseReason::Protocol,
        }
    }
}

/// Something for the app.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineEvent {
    /// From the model: data changed, a mass deletion is held, a device equivocated.
    Model(crate::model::Event),
    /// Local changes are durable (and on their way to peers).
    Committed(Vec<EnvelopeId>),
    /// A peer proved it is one of this identity's devices.
    PeerAuthenticated {
        /// The connection.
        peer: PeerKey,
        /// Its device.
        device: DeviceId,
        /// Its name.
        name: String,
    },
    /// A session was refused or ended with an error.
    PeerRefused {
        /// The connection.
        peer: PeerKey,
        /// Why.
        error: SessionError,
    },
    /// A peer sent something that was refused (the session goes on).
    PeerSentInvalid {
        /// The connection.
        peer: PeerKey,
        /// What was wrong.
        error: IngestError,
    },
    /// A device wants to join with this device's pairing code: compare `sas` with the one the
    /// new device shows, then call `confirm_pairing`.
    PairingRequest {
        /// The connection.
        peer: PeerKey,
        /// The new device's key.
        device: DeviceId,
        /// Its proposed name.
        name: String,
        /// The short authentication string.
        sas: String,
    },
    /// The enrolled device proved the code: show `sas` for the user to compare.
    PairingSas {
        /// The connection.
        peer: PeerKey,
        /// The short authentication string.
        sas: String,
    },
    /// This device is now enrolled in `identity`.
    Paired {
        /// The identity.
        identity: IdentityId,
    },
    /// Local changes could not be signed into an envelope (they stay visible here and are
    /// tried again with the next change). Not expected: every size is bounded beforehand.
    CommitFailed {
        /// Why.
        message: String,
    },
    /// An envelope held here can no longer be written out as its author signed it: part of it
    /// (a deflated payload, a block of packed visits) no longer reads — a bug, never expected.
    /// It is not sent to peers, and a redaction of it is not stored: a deletion holds (it is an
    /// envelope of its own), but the stored record keeps the earlier form, deleted bytes and
    /// all, so that the store still opens. Reported once per envelope.
    EnvelopeUnreadable {
        /// The envelope.
        envelope: EnvelopeId,
    },
    /// A storage batch failed; it stays queued and is offered again.
    StorageFailed {
        /// The batch.
        batch: u64,
        /// What the driver reported.
        message: String,
    },
}

/// Why an engine command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// This device is not enrolled yet (pair it or create an identity first).
    #[error("this device is not enrolled in an identity yet")]
    NotEnrolled,
    /// This device does not hold the root key, which the command needs.
    #[error("this device does not hold the identity's root key")]
    NoRootKey,
    /// No such device.
    #[error("no enrolled device {0}")]
    UnknownDevice(DeviceId),
    /// The model refused.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A certificate or revocation could not be added.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// No pairing request on this connection.
    #[error("no pairing is waiting on this connection")]
    NoPairing,
}

/// The secrets and certificate of this device, as stored under [`RecordKey::Identity`].
#[derive(Clone)]
pub struct IdentityBundle {
    /// The device's signing key.
    pub device: DeviceSecretKey,
    /// The root key, if this device holds it.
    pub root: Option<RootSecretKey>,
    /// This device's certificate.
    pub certificate: Option<VerifiedCertificate>,
    /// The device-local key that MACs stored records.
    pub storage_key: [u8; 32],
    /// Vault keys: `(key, created_ms)`.
    pub vault_keys: Vec<(VaultKey, u64)>,
}

impl core::fmt::Debug for IdentityBundle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IdentityBundle")
            .field("device", &self.device.public())
            .field("root", &self.root.as_ref().map(|_| "[redacted]"))
            .field("vault_keys", &self.vault_keys.len())
            .finish_non_exhaustive()
    }
}

const BUNDLE_FORMAT: u8 = 0xa1;

impl IdentityBundle {
    /// Encodes the bundle. **Contains secrets in the clear**: seal before storing.
    pub fn encode(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut w = Writer::default();
        w.u8(BUNDLE_FORMAT).raw(self.device.secret_bytes().as_ref());
        match &self.root {
            Some(root) => w.u8(1).raw(root.secret_bytes().as_ref()),
            None => w.u8(0),
        };
        match &self.certificate {
            Some(cert) => w.u8(1).bytes_u16(&cert.encode()),
            None => w.u8(0),
        };
        w.raw(&self.storage_key).u32(u32::try_from(self.vault_keys.len()).unwrap_or(0));
        for (key, created) in &self.vault_keys {
            w.raw(&key.id().0).raw(key.secret()).u64(*created);
        }
        zeroize::Zeroizing::new(w.into_bytes())
    }

    /// Decodes a bundle.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.format("identity bundle", BUNDLE_FORMAT)?;
        let device = DeviceSecretKey::from_secret_bytes(&zeroize::Zeroizing::new(r.array("device key")?));
        let root = match r.u8("root flag")? {
            0 => None,
            _ => Some(RootSecretKey::from_secret_bytes(&zeroize::Zeroizing::new(r.array("root key")?))),
        };
        let certificate = match r.u8("certificate flag")? {
            0 => None,
            _ => {
                let cert = DeviceCertificate::decode(r.bytes_u16(1024, "certificate")?)?;
                let identity = *cert.identity();
                Some(
                    cert.verify(&identity)
                        .map_err(|_| DecodeError::NonCanonical { what: "certificate", reason: "bad signature" })?,
                )
            }
        };
        let storage_key = r.array("storage key")?;
        let n = r.u32("vault key count")?;
        let n = r.check_len(n.into(), 4096, "vault key count")?;
        let mut vault_keys = Vec::with_capacity(n);
        for _ in 0..n {
            let id = VaultKeyId(r.array("vault key id")?);
            let secret: [u8; 32] = r.array("vault key")?;
            vault_keys.push((VaultKey::from_parts(id, secret), r.u64("vault key created")?));
        }
        r.finish("identity bundle")?;
        Ok(Self { device, root, certificate, storage_key, vault_keys })
    }
}

#[derive(Debug)]
enum Phase {
    /// Waiting for the peer's `Hello`.
    Hello,
    /// Both nonces known; waiting for the peer's `Auth`.
    Auth,
    /// Pairing: the enrolled side waits for the user to confirm.
    AwaitingConfirmation { device: DeviceId, name: String },
    /// Pairing: the joining side waits for `PairWelcome`.
    AwaitingWelcome { enrolled: Box<VerifiedCertificate> },
    /// Authenticated.
    Established { device: DeviceId },
    /// Over.
    Closed,
}

struct Peer {
    local_fp: Fingerprint,
    remote_fp: Fingerprint,
    purpose: Purpose,
    nonce: [u8; 32],
    their_nonce: Option<[u8; 32]>,
    phase: Phase,
    opened_ms: u64,
    last_hello_ms: u64,
    last_auth_ms: u64,
    last_summary_ms: u64,
    summary_due: bool,
    reassembler: wire::Reassembler,
    next_message_id: u32,
    outbox: VecDeque<Vec<u8>>,
    queued_bytes: usize,
    their_heads: BTreeMap<DeviceId, u64>,
    /// Per author, the highest sequence number queued for this peer and when: a summary sent
    /// before those envelopes arrived must not make them go out twice.
    queued_up_to: BTreeMap<DeviceId, (u64, u64)>,
    their_vault_keys: BTreeSet<VaultKeyId>,
    send_queue: VecDeque<EnvelopeId>,
    pairing_code: Option<[u8; 8]>,
    sent_auth: bool,
    /// The peer sent something only an authenticated peer sends: it has our `Auth` (or our
    /// welcome), so re-sending stops.
    confirmed: bool,
    /// The pairing message to re-send until the peer answers.
    resend: Option<Message>,
}

impl Peer {
    fn view(&self) -> Option<session::View<'_>> {
        Some(session::View {
            local_fp: &self.local_fp,
            remote_fp: &self.remote_fp,
            local_nonce: &self.nonce,
            remote_nonce: self.their_nonce.as_ref()?,
        })
    }

    fn queue(&mut self, message: &Message) {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1);
        for frame in wire::frames(&message.encode(), id) {
            self.queued_bytes = self.queued_bytes.saturating_add(frame.len());
            self.outbox.push_back(frame);
        }
    }

    fn established(&self) -> Option<DeviceId> {
        match self.phase {
            Phase::Established { device } => Some(device),
            _ => None,
        }
    }
}

struct ActiveCode {
    code: PairingCode,
    expires_ms: u64,
    attempts_left: u8,
}

struct Inflight {
    envelopes: Vec<(EnvelopeId, DeviceId, u64)>,
    local: Vec<EnvelopeId>,
    /// Envelopes rewritten (redacted) by this batch.
    rewritten: Vec<EnvelopeId>,
}

/// One device's sync engine. See the [module docs](self).
pub struct Engine {
    config: Config,
    rng: ChaCha20Rng,
    now_ms: u64,
    bundle: IdentityBundle,
    state: Option<BrowserState>,
    joining: Option<(PairingCode, String)>,
    peers: BTreeMap<PeerKey, Peer>,
    codes: BTreeMap<[u8; 8], ActiveCode>,
    storage_out: VecDeque<StorageBatch>,
    inflight: BTreeMap<u64, Inflight>,
    next_batch: u64,
    /// When the oldest local change not yet sealed was made (see `Config::group_commit_ms`).
    unsealed_since_ms: Option<u64>,
    next_order: u64,
    events: VecDeque<EngineEvent>,
    durable: BTreeMap<DeviceId, u64>,
    durable_pending: BTreeMap<DeviceId, BTreeSet<u64>>,
    /// Envelopes whose in-memory form (redacted) is not durable yet, with how many rewrites of
    /// each are in flight. They are not sent until it is: a redaction must never travel ahead of
    /// the deletion that caused it, which a crash could still lose.
    dirty: BTreeMap<EnvelopeId, usize>,
    /// Envelopes that can no longer be written out as signed (reported once; never sent).
    unreadable: BTreeSet<EnvelopeId>,
}

/// Pops the front of a queue and, once it is empty, gives back the capacity a burst grew it to
/// (a `VecDeque` keeps it otherwise).
pub(crate) fn pop_releasing<T>(queue: &mut VecDeque<T>) -> Option<T> {
    let front = queue.pop_front();
    if queue.is_empty() && queue.capacity() > 64 {
        queue.shrink_to_fit();
    }
    front
}

impl core::fmt::Debug for Engine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Engine")
            .field("device", &self.bundle.device.public())
            .field("enrolled", &self.state.is_some())
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

fn random_bytes<const N: usize>(rng: &mut impl RngCore) -> [u8; N] {
    let mut out = [0u8; N];
    rng.fill_bytes(&mut out);
    out
}

impl Engine {
    fn with_bundle(config: Config, bundle: IdentityBundle, rng_seed: [u8; 32], now_ms: u64) -> Self {
        Self {
            config,
            rng: ChaCha20Rng::from_seed(rng_seed),
            now_ms,
            bundle,
            state: None,
            joining: None,
            peers: BTreeMap::new(),
            codes: BTreeMap::new(),
            storage_out: VecDeque::new(),
            inflight: BTreeMap::new(),
            next_batch: 1,
            unsealed_since_ms: None,
            next_order: 0,
            events: VecDeque::new(),
            durable: BTreeMap::new(),
            durable_pending: BTreeMap::new(),
            dirty: BTreeMap::new(),
            unreadable: BTreeSet::new(),
        }
    }

    /// Creates a new identity with this device as its first member. `rng_seed` seeds the engine's
    /// generator (nonces, IDs): give it 32 fresh random bytes.
    pub fn create_identity(
        config: Config,
        device_name: &str,
        rng_seed: [u8; 32],
        now_ms: u64,
    ) -> Result<Self, EngineError> {
        let mut rng = ChaCha20Rng::from_seed(rng_seed);
        let root = RootSecretKey::generate(&mut rng);
        let device = DeviceSecretKey::generate(&mut rng);
        let name = DeviceName::new(device_name).map_err(|_| {
            ModelError::Invalid(DecodeError::NonCanonical {
                what: "device name",
                reason: "1-64 bytes, no control characters",
            })
        })?;
        let cert = DeviceCertificate::issue(&root, device.public(), name, now_ms.saturating_sub(60_000), NEVER_EXPIRES);
        let vault = VaultKey::generate(&mut rng);
        let bundle = IdentityBundle {
            device,
            root: Some(root),
            certificate: Some(cert.clone()),
            storage_key: random_bytes(&mut rng),
            vault_keys: vec![(vault, now_ms)],
        };
        let mut engine = Self::with_bundle(config, bundle, random_bytes(&mut rng), now_ms);
        let mut registry = DeviceRegistry::new(*cert.identity());
        registry.add_certificate(cert)?;
        engine.enrol(registry)?;
        engine.store_identity();
        engine.store_registry();
        Ok(engine)
    }

    /// A device that will join an identity with `code` (shown by an enrolled device).
    pub fn join(config: Config, code: PairingCode, device_name: &str, rng_seed: [u8; 32], now_ms: u64) -> Self {
        let mut rng = ChaCha20Rng::from_seed(rng_seed);
        let bundle = IdentityBundle {
            device: DeviceSecretKey::generate(&mut rng),
            root: None,
            certificate: None,
            storage_key: random_bytes(&mut rng),
            vault_keys: Vec::new(),
        };
        let mut engine = Self::with_bundle(config, bundle, random_bytes(&mut rng), now_ms);
        engine.joining = Some((code, device_name.chars().take(64).collect()));
        engine
    }

    fn enrol(&mut self, registry: DeviceRegistry) -> Result<(), EngineError> {
        let nonce: [u8; 16] = random_bytes(&mut self.rng);
        let mut state = BrowserState::new(registry, self.bundle.device.clone(), nonce, self.config.settings.clone())?;
        load_vault(&mut state, &self.bundle.vault_keys);
        self.state = Some(state);
        Ok(())
    }

    /// Rebuilds an engine from what the driver stored: the identity record (unsealed, if the
    /// driver sealed it) and every other record. Each record's MAC is checked; signatures are
    /// not re-verified (`audit` does).
    pub fn load(
        config: Config,
        identity: &[u8],
        records: impl IntoIterator<Item = (RecordKey, Vec<u8>)>,
        rng_seed: [u8; 32],
        now_ms: u64,
    ) -> Result<Self, LoadError> {
        let bundle = storage::peek_body(identity)
            .and_then(|body| IdentityBundle::decode(body).ok())
            .ok_or_else(|| LoadError::Identity("not an identity record".into()))?;
        storage::open_record(&bundle.storage_key, &RecordKey::Identity, identity)?;
        let key = bundle.storage_key;
        let mut engine = Self::with_bundle(config, bundle, rng_seed, now_ms);
        let Some(cert) = engine.bundle.certificate.clone() else {
            return Ok(engine);
        };
        let mut registry = DeviceRegistry::new(*cert.identity());
        let _ = registry.add_certificate(cert);
        let mut envelopes: Vec<(u64, VerifiedEnvelope)> = Vec::new();
        // Each record is dropped once decoded (the driver may hand them over one at a time), so
        // a cold open never holds the stored bytes twice.
        for (record_key, bytes) in records {
            let record_key = &record_key;
            let body = storage::open_record(&key, record_key, &bytes)?;
            match record_key {
                RecordKey::Registry => {
                    merge_registry_record(&mut registry, body).map_err(|e| LoadError::Torn("registry".into(), e))?
                }
                RecordKey::Envelope(id) => {
                    let (order, bytes) = storage::split_envelope_body(body).ok_or_else(|| {
                        LoadError::Torn(
                            record_key.to_text(),
                            DecodeError::Truncated { what: "order", at: 0, needed: 8 },
                        )
                    })?;
                    let envelope =
                        Envelope::decode_stored(bytes).map_err(|e| LoadError::Torn(record_key.to_text(), e))?;
                    if envelope.id() != *id {
                        return Err(LoadError::Tampered(record_key.to_text()));
                    }
                    envelopes.push((order, VerifiedEnvelope::assume_verified(envelope)));
                }
                RecordKey::Identity => {}
            }
        }
        envelopes.sort_by_key(|(order, _)| *order);
        engine.next_order = envelopes.last().map_or(0, |(o, _)| o.saturating_add(1));
        engine.enrol(registry).map_err(|e| LoadError::Identity(e.to_string()))?;
        if let Some(state) = engine.state.as_mut() {
            for (_, envelope) in envelopes {
                let (author, seq) = (*envelope.author(), envelope.seq());
                state.restore(envelope).map_err(|e| LoadError::Inconsistent(e.to_string()))?;
                engine.durable.insert(author, seq);
            }
            state.finish_restore();
            state.handle_timeout(now_ms);
            let _ = state.take_redacted();
        }
        Ok(engine)
    }

    /// Re-verifies every stored envelope's signature and every register value's, against the
    /// registry: the full audit. Returns the envelopes that fail.
    pub fn audit(&self) -> Vec<(EnvelopeId, String)> {
        let Some(state) = &self.state else { return Vec::new() };
        let mut bad = Vec::new();
        for envelope in state.envelopes() {
            let decoded = match Envelope::decode(&envelope.encode()) {
                Ok(e) => e,
                Err(e) => {
                    bad.push((envelope.id(), e.to_string()));
                    continue;
                }
            };
            // Revocations apply to writes after them; an audit checks signatures as of writing.
            if let Err(e) = decoded.verify(&registry_without_revocations(state.registry())) {
                bad.push((envelope.id(), e.to_string()));
            }
        }
        bad
    }

    // --- accessors -----------------------------------------------------------------------------

    /// The replica, once enrolled.
    pub fn state(&self) -> Option<&BrowserState> {
        self.state.as_ref()
    }

    /// This device.
    pub fn device(&self) -> DeviceId {
        self.bundle.device.public()
    }

    /// The identity, once enrolled.
    pub fn identity(&self) -> Option<IdentityId> {
        self.state.as_ref().map(|s| *s.identity())
    }

    /// Whether this device holds the root key.
    pub fn holds_root_key(&self) -> bool {
        self.bundle.root.is_some()
    }

    /// The identity bundle (to seal and store).
    pub fn bundle(&self) -> &IdentityBundle {
        &self.bundle
    }

    /// Devices with an established session, by connection.
    pub fn connected(&self) -> BTreeMap<PeerKey, DeviceId> {
        // Inserted, not `collect()`ed: a collect sorts first, more code in the `.wasm`.
        let mut connected = BTreeMap::new();
        connected.extend(self.peers.iter().filter_map(|(k, p)| p.established().map(|d| (*k, d))));
        connected
    }

    /// The durable per-author heads (what summaries advertise).
    pub fn durable_heads(&self) -> &BTreeMap<DeviceId, u64> {
        &self.durable
    }

    /// Bytes held for peers: partial messages being reassembled and frames waiting to be sent.
    pub fn buffered_bytes(&self) -> usize {
        self.peers.values().map(|p| p.reassembler.buffered().saturating_add(p.outbox.iter().map(Vec::len).sum())).sum()
    }

    /// Storage batches not yet acknowledged, counting local changes not yet sealed into one as
    /// one more.
    pub fn pending_storage(&self) -> usize {
        let unsealed = self.state.as_ref().is_some_and(|s| s.unsealed_len() > 0);
        self.storage_out.len().saturating_add(self.inflight.len()).saturating_add(usize::from(unsealed))
    }

    /// Whether a batch holding local changes is being written: new local changes then wait to be
    /// sealed together when it is done (group commit).
    fn local_batch_in_flight(&self) -> bool {
        self.inflight.values().any(|b| !b.local.is_empty())
    }

    /// Ends the commit window (a driver's `flush`: durability wanted now): the local changes
    /// waiting for it are sealed at once, or as soon as the write ahead of them is done.
    pub fn seal_waiting(&mut self) {
        if self.state.as_ref().is_some_and(|s| s.unsealed_len() > 0) {
            self.unsealed_since_ms = Some(self.now_ms.saturating_sub(self.config.group_commit_ms));
            if !self.local_batch_in_flight() {
                self.seal_local();
            }
        }
    }

    /// When the local changes waiting to be sealed are due (`None`: there are none).
    fn seal_due_ms(&self) -> Option<u64> {
        let waiting = self.state.as_ref().is_some_and(|s| s.unsealed_len() > 0);
        waiting.then(|| self.unsealed_since_ms.unwrap_or(self.now_ms).saturating_add(self.config.group_commit_ms))
    }

    /// Seals the local changes waiting for a commit, and stores them.
    fn seal_local(&mut self) {
        /// After a failed seal (the writes are kept), how long until the next try.
        const SEAL_RETRY_MS: u64 = 1_000;
        let Some(state) = self.state.as_mut() else { return };
        if state.unsealed_len() == 0 {
            self.unsealed_since_ms = None;
            return;
        }
        match state.seal() {
            Ok(envelopes) => {
                self.unsealed_since_ms = None;
                self.persist(envelopes.iter().map(VerifiedEnvelope::id).collect());
            }
            Err(e) => {
                let retry = self.now_ms.saturating_add(SEAL_RETRY_MS).saturating_sub(self.config.group_commit_ms);
                self.unsealed_since_ms = Some(retry);
                self.events.push_back(EngineEvent::CommitFailed { message: e.to_string() });
            }
        }
    }

    // --- outputs -------------------------------------------------------------------------------

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let max = self.config.max_queued_bytes;
        let state = self.state.as_ref();
        let dirty = &self.dirty;
        for (key, peer) in self.peers.iter_mut() {
            if peer.outbox.is_empty() && peer.queued_bytes < max {
                // Refill lazily from the envelopes this peer lacks: bounded memory per peer. An
                // envelope whose redaction is not durable yet waits (order is kept).
                while peer.send_queue.front().is_some_and(|id| !dirty.contains_key(id)) {
                    let Some(id) = peer.send_queue.pop_front() else { break };
                    if self.unreadable.contains(&id) {
                        continue;
                    }
                    let Some(envelope) = state.and_then(|s| s.envelope(&id)) else { continue };
                    // Never what its author did not sign: the peer would refuse it anyway.
                    let Some(bytes) = envelope.encode_as_signed() else {
                        self.unreadable.insert(id);
                        self.events.push_back(EngineEvent::EnvelopeUnreadable { envelope: id });
                        continue;
                    };
                    peer.queue(&Message::Envelope(bytes));
                    break;
                }
            }
            if let Some(frame) = peer.outbox.pop_front() {
                return Some(Transmit { peer: *key, frame });
            }
        }
        None
    }

    /// Tells the engine a peer's send buffer has room again (its bytes left the data channel).
    pub fn handle_drained(&mut self, peer: PeerKey) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.queued_bytes = p.outbox.iter().map(Vec::len).sum();
        }
    }

    /// The next storage batch to write.
    pub fn poll_storage(&mut self) -> Option<StorageBatch> {
        self.storage_out.pop_front()
    }

    /// How many events the engine's and the replica's queues have room for (a drained queue
    /// should hold little).
    #[cfg(any(test, feature = "test-util"))]
    pub fn event_queue_capacity(&self) -> usize {
        self.events.capacity().saturating_add(self.state.as_ref().map_or(0, BrowserState::event_queue_capacity))
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<EngineEvent> {
        // The engine's own first, then the replica's, one at a time: moving the replica's queue
        // over in one go held both at the import's size (106,000 events for the realistic
        // profile, 30 MB of queue capacity kept after they were read).
        if let Some(event) = pop_releasing(&mut self.events) {
            return Some(event);
        }
        self.state.as_mut()?.poll_event().map(EngineEvent::Model)
    }

    /// When to call `handle_timeout` next.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut next: Option<u64> = None;
        let mut at = |t: u64| next = Some(next.map_or(t, |n| n.min(t)));
        for peer in self.peers.values() {
            match peer.phase {
                Phase::Hello | Phase::Auth => {
                    at(peer.last_hello_ms.max(peer.last_auth_ms).saturating_add(self.config.retry_ms));
                    at(peer.opened_ms.saturating_add(self.config.handshake_timeout_ms));
                }
                Phase::Established { .. } if !peer.confirmed => {
                    at(peer.last_auth_ms.saturating_add(self.config.retry_ms));
                }
                Phase::Established { .. } => at(peer.last_summary_ms.saturating_add(self.config.summary_interval_ms)),
                Phase::AwaitingWelcome { .. } | Phase::AwaitingConfirmation { .. } => {
                    at(peer.opened_ms.saturating_add(self.config.pairing_code_ttl_ms));
                }
                Phase::Closed => {}
            }
        }
        if self.state.as_ref().is_some_and(|s| s.pending_len() > 0) {
            at(self.now_ms.saturating_add(1_000));
        }
        if !self.local_batch_in_flight()
            && let Some(due) = self.seal_due_ms()
        {
            at(due);
        }
        next
    }

    // --- inputs --------------------------------------------------------------------------------

    /// Time passes: re-sends, summaries, timeouts, envelopes whose time has come.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let now = self.now_ms;
        if let Some(state) = self.state.as_mut()
            && !state.handle_timeout(now).is_empty()
        {
            self.persist_applied();
        }
        // Group commit: local changes whose window has passed, with nothing being written.
        if !self.local_batch_in_flight() && self.seal_due_ms().is_some_and(|due| now >= due) {
            self.seal_local();
        }
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for key in keys {
            let Some(peer) = self.peers.get_mut(&key) else { continue };
            match peer.phase {
                Phase::Hello | Phase::Auth
                    if now.saturating_sub(peer.opened_ms) >= self.config.handshake_timeout_ms =>
                {
                    self.refuse(key, SessionError::Timeout);
                }
                Phase::AwaitingWelcome { .. } | Phase::AwaitingConfirmation { .. }
                    if now.saturating_sub(peer.opened_ms) >= self.config.pairing_code_ttl_ms =>
                {
                    self.refuse(key, SessionError::Timeout);
                }
                // Handshake messages are re-sent on a timer until the peer shows it has them
                // (never in answer to a duplicate, which would make two peers ping-pong).
                Phase::Hello if now.saturating_sub(peer.last_hello_ms) >= self.config.retry_ms => {
                    peer.last_hello_ms = now;
                    let hello =
                        Message::Hello { version: wire::WIRE_VERSION, purpose: peer.purpose, nonce: peer.nonce };
                    peer.queue(&hello);
                }
                Phase::Auth if now.saturating_sub(peer.last_auth_ms) >= self.config.retry_ms => {
                    peer.last_auth_ms = now;
                    let hello =
                        Message::Hello { version: wire::WIRE_VERSION, purpose: peer.purpose, nonce: peer.nonce };
                    peer.queue(&hello);
                    if let Some(m) = peer.resend.clone() {
                        peer.queue(&m);
                    } else if peer.purpose == Purpose::Sync {
                        self.send_auth(key);
                    }
                }
                Phase::Established { .. }
                    if !peer.confirmed && now.saturating_sub(peer.last_auth_ms) >= self.config.retry_ms =>
                {
                    peer.last_auth_ms = now;
                    if let Some(m) = peer.resend.clone() {
                        peer.queue(&m);
                    } else {
                        self.send_auth(key);
                    }
                    self.send_registry(key);
                    self.send_summary(key);
                }
                Phase::Established { .. }
                    if peer.summary_due
                        || now.saturating_sub(peer.last_summary_ms) >= self.config.summary_interval_ms =>
                {
                    self.send_summary(key);
                }
                _ => {}
            }
        }
        self.codes.retain(|_, c| c.expires_ms > now);
    }

    /// A data channel opened. `local_fp` is this device's DTLS certificate fingerprint and
    /// `remote_fp` the one the peer presented in the DTLS handshake, both as the transport reports
    /// them.
    pub fn handle_peer_up(&mut self, peer: PeerKey, local_fp: Fingerprint, remote_fp: Fingerprint, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let purpose = match &self.joining {
            Some((code, _)) if self.state.is_none() => Purpose::Pair(code.code_id()),
            _ => Purpose::Sync,
        };
        let mut p = Peer {
            local_fp,
            remote_fp,
            purpose,
            nonce: random_bytes(&mut self.rng),
            their_nonce: None,
            phase: Phase::Hello,
            opened_ms: self.now_ms,
            last_hello_ms: self.now_ms,
            last_auth_ms: 0,
            last_summary_ms: 0,
            summary_due: false,
            reassembler: wire::Reassembler::default(),
            next_message_id: 0,
            outbox: VecDeque::new(),
            queued_bytes: 0,
            their_heads: BTreeMap::new(),
            queued_up_to: BTreeMap::new(),
            their_vault_keys: BTreeSet::new(),
            send_queue: VecDeque::new(),
            pairing_code: None,
            sent_auth: false,
            confirmed: false,
            resend: None,
        };
        p.queue(&Message::Hello { version: wire::WIRE_VERSION, purpose, nonce: p.nonce });
        self.peers.insert(peer, p);
    }

    /// A data channel closed.
    pub fn handle_peer_down(&mut self, peer: PeerKey) {
        self.peers.remove(&peer);
    }

    /// A frame arrived from `peer`.
    pub fn handle_frame(&mut self, peer: PeerKey, frame: &[u8], now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let Some(p) = self.peers.get_mut(&peer) else { return };
        if matches!(p.phase, Phase::Closed) {
            return;
        }
        let message = match p.reassembler.push(frame, self.now_ms) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return,
            Err(wire::FrameError::Version(_)) => return self.refuse(peer, SessionError::Version),
            Err(e) => return self.refuse(peer, SessionError::Protocol(e.to_string())),
        };
        match Message::decode(&message) {
            Ok(message) => self.handle_message(peer, message),
            Err(e) => self.refuse(peer, SessionError::Protocol(e.to_string())),
        }
    }

    fn refuse(&mut self, peer: PeerKey, error: SessionError) {
        if let Some(p) = self.peers.get_mut(&peer) {
            if !matches!(error, SessionError::RefusedByPeer(_)) {
                p.outbox.clear();
                p.queue(&Message::Refuse(error.reason()));
            }
            p.phase = Phase::Closed;
            p.send_queue.clear();
        }
        self.events.push_back(EngineEvent::PeerRefused { peer, error });
    }

    fn handle_message(&mut self, peer: PeerKey, message: Message) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        match message {
            Message::Refuse(reason) => {
                p.phase = Phase::Closed;
                self.events.push_back(EngineEvent::PeerRefused { peer, error: SessionError::RefusedByPeer(reason) });
            }
            Message::Hello { version, purpose, nonce } => {
                if version != wire::WIRE_VERSION {
                    return self.refuse(peer, SessionError::Version);
                }
                if let Some(existing) = p.their_nonce {
                    if existing != nonce {
                        return self.refuse(peer, SessionError::Protocol("the peer changed its nonce".into()));
                    }
                    // A re-sent Hello; our own timer re-sends what the peer may lack.
                    return;
                }
                p.their_nonce = Some(nonce);
                match purpose {
                    Purpose::Sync if self.state.is_some() && p.purpose == Purpose::Sync => {
                        p.phase = Phase::Auth;
                        self.send_auth(peer);
                    }
                    Purpose::Pair(code_id) if self.state.is_some() => {
                        // Another device wants to join with one of our codes.
                        if !self.codes.contains_key(&code_id) {
                            return self.refuse(peer, SessionError::BadPairingCode);
                        }
                        p.pairing_code = Some(code_id);
                        p.purpose = Purpose::Pair(code_id);
                        p.phase = Phase::Auth;
                        let hello = Message::Hello { version: wire::WIRE_VERSION, purpose: p.purpose, nonce: p.nonce };
                        p.queue(&hello);
                    }
                    Purpose::Pair(_) | Purpose::Sync if self.state.is_none() => {
                        // We are the joining side: prove the code.
                        p.phase = Phase::Auth;
                        self.send_join(peer);
                    }
                    _ => self.refuse(peer, SessionError::Protocol("mismatched session purpose".into())),
                }
            }
            Message::Auth { certificate, signature } => self.handle_auth(peer, &certificate, &signature),
            Message::PairJoin { device, name, proof } => self.handle_pair_join(peer, device, name, proof),
            Message::PairAccept { certificate, proof } => self.handle_pair_accept(peer, &certificate, &proof),
            Message::PairWelcome { certificate, root_secret, vault_keys } => {
                self.handle_pair_welcome(peer, &certificate, root_secret, vault_keys)
            }
            other => {
                // Everything else needs an established session.
                let Some(device) = p.established() else {
                    return;
                };
                p.confirmed = true;
                p.resend = None;
                self.handle_sync_message(peer, device, other);
            }
        }
    }

    fn send_auth(&mut self, peer: PeerKey) {
        let Some(state) = self.state.as_ref() else { return };
        let Some(cert) = self.bundle.certificate.as_ref() else { return };
        let Some(p) = self.peers.get_mut(&peer) else { return };
        let Some(view) = p.view() else { return };
        let signature = session::sign_auth(&self.bundle.device, state.identity(), &cert.id(), &view);
        p.queue(&Message::Auth { certificate: cert.encode(), signature });
        p.sent_auth = true;
        p.last_auth_ms = self.now_ms;
    }

    fn handle_auth(&mut self, peer: PeerKey, certificate: &[u8], signature: &[u8; 64]) {
        let Some(state) = self.state.as_mut() else { return };
        let Some(p) = self.peers.get_mut(&peer) else { return };
        if p.purpose != Purpose::Sync {
            return;
        }
        if !matches!(p.phase, Phase::Auth) {
            // Established already (a re-sent Auth), or not expecting one.
            return;
        }
        let Some(view) = p.view() else { return };
        let identity = *state.identity();
        let cert = match DeviceCertificate::decode(certificate) {
            Ok(c) => c,
            Err(e) => return self.refuse(peer, SessionError::Protocol(e.to_string())),
        };
        if cert.identity() != &identity {
            return self.refuse(peer, SessionError::WrongIdentity);
        }
        let cert = match cert.verify(&identity) {
            Ok(c) => c,
            Err(_) => return self.refuse(peer, SessionError::NotEnrolled),
        };
        let device = *cert.device();
        if state.registry().revocation(&device).is_some() {
            return self.refuse(peer, SessionError::Revoked);
        }
        if cert.check_validity(self.now_ms).is_err() {
            return self.refuse(peer, SessionError::NotEnrolled);
        }
        let message = session::peer_auth_message(&identity, &cert.id(), &view);
        if !cert.verify_device_signature(&message, signature) {
            return self.refuse(peer, SessionError::BadHandshake);
        }
        // A valid certificate from the identity is worth keeping even if we lacked it.
        if state.registry_mut().add_certificate(cert.clone()).unwrap_or(false) {
            self.store_registry();
        }
        self.establish(peer, device, cert.name().to_string());
    }

    fn establish(&mut self, peer: PeerKey, device: DeviceId, name: String) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        p.phase = Phase::Established { device };
        p.last_auth_ms = self.now_ms;
        self.events.push_back(EngineEvent::PeerAuthenticated { peer, device, name });
        self.send_registry(peer);
        self.send_auth_if_needed(peer);
        self.send_summary(peer);
    }

    fn send_auth_if_needed(&mut self, peer: PeerKey) {
        if self.peers.get(&peer).is_some_and(|p| !p.sent_auth && p.purpose == Purpose::Sync) {
            self.send_auth(peer);
        }
    }

    fn send_registry(&mut self, peer: PeerKey) {
        let Some(state) = self.state.as_ref() else { return };
        let certificates = state.registry().certificates().map(VerifiedCertificate::encode).collect();
        let revocations = state.registry().revocations().map(|r| r.encode()).collect();
        if let Some(p) = self.peers.get_mut(&peer) {
            p.queue(&Message::Registry { certificates, revocations });
        }
    }

    fn send_summary(&mut self, peer: PeerKey) {
        let heads: Vec<([u8; 32], u64)> = self.durable.iter().map(|(d, s)| (*d.as_bytes(), *s)).collect();
        let vault_keys: Vec<[u8; 16]> = self.bundle.vault_keys.iter().map(|(k, _)| k.id().0).collect();
        if let Some(p) = self.peers.get_mut(&peer) {
            p.queue(&Message::Summary { heads, vault_keys });
            p.last_summary_ms = self.now_ms;
            p.summary_due = false;
        }
    }

    fn handle_sync_message(&mut self, peer: PeerKey, device: DeviceId, message: Message) {
        match message {
            Message::Registry { certificates, revocations } => self.handle_registry(peer, &certificates, &revocations),
            Message::Summary { heads, vault_keys } => self.handle_summary(peer, device, &heads, &vault_keys),
            Message::Envelope(bytes) => self.handle_envelope(peer, &bytes),
            Message::VaultKeys(keys) => {
                let mut changed = false;
                for (id, secret, created) in keys {
                    if !self.bundle.vault_keys.iter().any(|(k, _)| k.id().0 == id) {
                        self.bundle.vault_keys.push((VaultKey::from_parts(VaultKeyId(id), secret), created));
                        changed = true;
                    }
                }
                if changed {
                    if let Some(state) = self.state.as_mut() {
                        load_vault(state, &self.bundle.vault_keys);
                    }
                    self.store_identity();
                }
            }
            _ => {}
        }
    }

    fn handle_registry(&mut self, peer: PeerKey, certificates: &[Vec<u8>], revocations: &[Vec<u8>]) {
        let Some(state) = self.state.as_mut() else { return };
        let identity = *state.identity();
        let mut changed = false;
        for bytes in certificates {
            if let Some(cert) = DeviceCertificate::decode(bytes).ok().and_then(|c| c.verify(&identity).ok()) {
                changed |= state.registry_mut().add_certificate(cert).unwrap_or(false);
            }
        }
        let mut revoked = Vec::new();
        for bytes in revocations {
            if let Some(rev) = Revocation::decode(bytes).ok().and_then(|r| r.verify(&identity).ok()) {
                revoked.push(*rev.device());
                changed |= state.registry_mut().add_revocation(rev).unwrap_or(false);
            }
        }
        if changed {
            self.store_registry();
            self.close_revoked_sessions();
            // Pass what was learned on, so a device between two others keeps both informed.
            self.broadcast_registry(Some(peer));
        }
    }

    /// Sends the registry to every established peer but `except`.
    fn broadcast_registry(&mut self, except: Option<PeerKey>) {
        let established: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(k, p)| Some(**k) != except && p.established().is_some())
            .map(|(k, _)| *k)
            .collect();
        for key in established {
            self.send_registry(key);
        }
    }

    fn close_revoked_sessions(&mut self) {
        let Some(state) = self.state.as_ref() else { return };
        let revoked: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| p.established().is_some_and(|d| state.registry().revocation(&d).is_some()))
            .map(|(k, _)| *k)
            .collect();
        for key in revoked {
            self.refuse(key, SessionError::Revoked);
        }
    }

    fn handle_summary(&mut self, peer: PeerKey, device: DeviceId, heads: &[([u8; 32], u64)], vault_keys: &[[u8; 16]]) {
        let Some(state) = self.state.as_ref() else { return };
        let Some(p) = self.peers.get_mut(&peer) else { return };
        let now = self.now_ms;
        let grace = self.config.summary_interval_ms;
        // Filled by insertion, not `collect()`: collecting into an ordered map or set sorts first,
        // and each element type's sort is ~1 KB of the browser's `.wasm` (a later duplicate key
        // wins either way).
        p.their_heads.clear();
        p.their_heads.extend(heads.iter().filter_map(|(d, s)| DeviceId::from_bytes(d).ok().map(|d| (d, *s))).map(
            |(d, s)| {
                // Envelopes queued within the last summary interval may still be on their way:
                // this summary can be older than them. If they were lost, the next summary says
                // so again, after the grace, and they are sent again then.
                match p.queued_up_to.get(&d) {
                    Some((up_to, at)) if *up_to > s && now.saturating_sub(*at) < grace => (d, *up_to),
                    _ => (d, s),
                }
            },
        ));
        p.their_vault_keys.clear();
        p.their_vault_keys.extend(vault_keys.iter().map(|k| VaultKeyId(*k)));
        // Exactly what the peer lacks, in the order this device applied it (a causal order),
        // and only what is durable here.
        let mut queued: BTreeSet<EnvelopeId> = BTreeSet::new(); // inserted, not `collect()`ed (as above)
        queued.extend(p.send_queue.iter().copied());
        let mut next_heads = p.their_heads.clone();
        for envelope in state.envelopes() {
            let author = *envelope.author();
            let have = p.their_heads.get(&author).copied().unwrap_or(0);
            let durable = self.durable.get(&author).copied().unwrap_or(0);
            if envelope.seq() > have && envelope.seq() <= durable && !queued.contains(&envelope.id()) {
                p.send_queue.push_back(envelope.id());
                let head = next_heads.entry(author).or_insert(0);
                *head = (*head).max(envelope.seq());
                p.queued_up_to.insert(author, (*head, now));
            }
        }
        p.their_heads = next_heads;
        // Vault keys the peer lacks, if it is still an active device.
        if state.registry().is_active(&device) {
            let missing: Vec<wire::WireVaultKey> = self
                .bundle
                .vault_keys
                .iter()
                .filter(|(k, _)| !p.their_vault_keys.contains(&k.id()))
                .map(|(k, c)| (k.id().0, *k.secret(), *c))
                .collect();
            if !missing.is_empty() {
                p.queue(&Message::VaultKeys(missing));
            }
        }
    }

    fn handle_envelope(&mut self, peer: PeerKey, bytes: &[u8]) {
        let Some(state) = self.state.as_mut() else { return };
        let envelope = match Envelope::decode(bytes) {
            Ok(e) => e,
            Err(e) => {
                self.events.push_back(EngineEvent::PeerSentInvalid { peer, error: IngestError::Decode(e) });
                return;
            }
        };
        // The sender holds it: never relay it back.
        if let Some(p) = self.peers.get_mut(&peer) {
            let known = p.their_heads.entry(*envelope.author()).or_insert(0);
            *known = (*known).max(envelope.seq());
        }
        match state.receive(envelope, self.now_ms) {
            Ok(Received::Applied(_)) => self.persist_applied(),
            Ok(_) => {}
            Err(error) => self.events.push_back(EngineEvent::PeerSentInvalid { peer, error }),
        }
    }

    // --- persistence -----------------------------------------------------------------------------

    /// Queues storage for every applied envelope not yet stored, and rewrites of redacted ones.
    fn persist_applied(&mut self) {
        self.persist(Vec::new());
    }

    fn persist(&mut self, local: Vec<EnvelopeId>) {
        let Some(state) = self.state.as_mut() else { return };
        let key = self.bundle.storage_key;
        let mut puts = Vec::new();
        let mut envelopes = Vec::new();
        let mut rewritten = Vec::new();
        let stored = self.next_order;
        let fresh: Vec<EnvelopeId> =
            state.envelopes_from(usize::try_from(stored).unwrap_or(usize::MAX)).map(VerifiedEnvelope::id).collect();
        for id in fresh {
            let pack = state.pack_for_storage(&id);
            let Some(envelope) = state.envelope(&id) else { continue };
            let record_key = RecordKey::Envelope(id);
            let write = storage::EnvelopeWrite::Fresh(pack);
            // A fresh write lists the hashes it was verified or signed with: it always seals.
            if let Some(record) = storage::seal_envelope_record(&key, &record_key, self.next_order, envelope, write) {
                puts.push((record_key, record));
            }
            envelopes.push((id, *envelope.author(), envelope.seq()));
            self.next_order = self.next_order.saturating_add(1);
        }
        for id in state.take_redacted() {
            let Some(position) = state.envelopes().position(|e| e.id() == id) else { continue };
            if position as u64 >= stored {
                continue; // written fresh above
            }
            if let Some(envelope) = state.envelope(&id) {
                let record_key = RecordKey::Envelope(id);
                // Held packed already if it was stored packed; written in the form it is held.
                let write = storage::EnvelopeWrite::Rewrite;
                let Some(record) = storage::seal_envelope_record(&key, &record_key, position as u64, envelope, write)
                else {
                    if self.unreadable.insert(id) {
                        self.events.push_back(EngineEvent::EnvelopeUnreadable { envelope: id });
                    }
                    continue;
                };
                puts.push((record_key, record));
                let count = self.dirty.entry(id).or_insert(0);
                *count = count.saturating_add(1);
                rewritten.push(id);
            }
        }
        if puts.is_empty() && local.is_empty() {
            return;
        }
        let id = self.next_batch;
        self.next_batch = self.next_batch.saturating_add(1);
        self.inflight.insert(id, Inflight { envelopes, local, rewritten });
        self.storage_out.push_back(StorageBatch { id, puts });
    }

    /// Writes the identity record again (the driver seals it, for example after the user set a
    /// passphrase).
    pub fn persist_identity(&mut self) {
        self.store_identity();
    }

    fn store_identity(&mut self) {
        let key = self.bundle.storage_key;
        let bytes = storage::seal_record(&key, &RecordKey::Identity, &self.bundle.encode());
        self.push_batch(vec![(RecordKey::Identity, bytes)]);
    }

    fn store_registry(&mut self) {
        let Some(state) = self.state.as_ref() else { return };
        let body = encode_registry(state.registry());
        let bytes = storage::seal_record(&self.bundle.storage_key, &RecordKey::Registry, &body);
        self.push_batch(vec![(RecordKey::Registry, bytes)]);
    }

    fn push_batch(&mut self, puts: Vec<(RecordKey, Vec<u8>)>) {
        let id = self.next_batch;
        self.next_batch = self.next_batch.saturating_add(1);
        self.inflight.insert(id, Inflight { envelopes: Vec::new(), local: Vec::new(), rewritten: Vec::new() });
        self.storage_out.push_back(StorageBatch { id, puts });
    }

    /// The driver committed batch `id` durably.
    pub fn handle_storage_done(&mut self, id: u64) {
        let Some(done) = self.inflight.remove(&id) else { return };
        for rewritten in &done.rewritten {
            if let Some(count) = self.dirty.get_mut(rewritten) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.dirty.remove(rewritten);
                }
            }
        }
        for (_, author, seq) in &done.envelopes {
            self.durable_pending.entry(*author).or_default().insert(*seq);
        }
        let mut advanced: Vec<DeviceId> = Vec::new();
        for (author, seqs) in self.durable_pending.iter_mut() {
            let head = self.durable.entry(*author).or_insert(0);
            let before = *head;
            while seqs.remove(&head.saturating_add(1)) {
                *head = head.saturating_add(1);
            }
            if *head > before {
                advanced.push(*author);
            }
        }
        if !done.local.is_empty() {
            self.events.push_back(EngineEvent::Committed(done.local));
        }
        if !self.local_batch_in_flight() && self.seal_due_ms().is_some_and(|due| self.now_ms >= due) {
            self.seal_local();
        }
        if !advanced.is_empty() {
            self.relay();
        }
    }

    /// The driver failed to commit batch `id` (quota, aborted transaction): it is offered again.
    pub fn handle_storage_failed(&mut self, id: u64, batch: StorageBatch, message: &str) {
        self.events.push_back(EngineEvent::StorageFailed { batch: id, message: message.to_owned() });
        self.storage_out.push_front(batch);
    }

    /// Sends newly durable envelopes to every established peer that lacks them.
    fn relay(&mut self) {
        let Some(state) = self.state.as_ref() else { return };
        let now = self.now_ms;
        for p in self.peers.values_mut() {
            if p.established().is_none() {
                continue;
            }
            let mut queued: BTreeSet<EnvelopeId> = BTreeSet::new();
            queued.extend(p.send_queue.iter().copied());
            for envelope in state.envelopes() {
                let author = *envelope.author();
                let have = p.their_heads.get(&author).copied().unwrap_or(0);
                let durable = self.durable.get(&author).copied().unwrap_or(0);
                if envelope.seq() > have && envelope.seq() <= durable && !queued.contains(&envelope.id()) {
                    p.send_queue.push_back(envelope.id());
                    p.their_heads.insert(author, envelope.seq());
                    p.queued_up_to.insert(author, (envelope.seq(), now));
                }
            }
            p.summary_due = true;
        }
    }

    // --- local changes ---------------------------------------------------------------------------

    /// Makes a local change (see [`BrowserState::transact`]): visible here at once, then stored,
    /// then reported `Committed` and sent to peers once durable.
    ///
    /// Group commit: while a batch of earlier local changes is being written, a new change is
    /// not signed yet; every change made meanwhile is signed into one envelope and stored in one
    /// batch when that write is done (see [`BrowserState::transact_grouped`]). Edits arriving
    /// one at a time so share a signature and a storage transaction, and none waits longer than
    /// the write ahead of it.
    pub fn transact<T>(
        &mut self,
        now_ms: u64,
        f: impl FnOnce(&mut Edit<'_, ChaCha20Rng>) -> Result<T, ModelError>,
    ) -> Result<T, EngineError> {
        self.now_ms = self.now_ms.max(now_ms);
        let since = self.unsealed_since_ms.unwrap_or(self.now_ms);
        let window_open = self.now_ms < since.saturating_add(self.config.group_commit_ms);
        let defer = self.local_batch_in_flight() || window_open;
        let state = self.state.as_mut().ok_or(EngineError::NotEnrolled)?;
        let (value, envelopes) = state.transact_grouped(self.now_ms, &mut self.rng, defer, f)?;
        self.unsealed_since_ms = (state.unsealed_len() > 0).then_some(since);
        self.persist(envelopes.iter().map(VerifiedEnvelope::id).collect());
        Ok(value)
    }

    /// Mutable access to the replica for the app's own reads that need it (events are still
    /// collected by `poll_event`). Writes must go through `transact`.
    pub fn state_mut(&mut self) -> Option<&mut BrowserState> {
        self.state.as_mut()
    }

    /// Applies a held mass deletion.
    pub fn accept_held(&mut self, id: &EnvelopeId, now_ms: u64) -> Result<(), EngineError> {
        let state = self.state.as_mut().ok_or(EngineError::NotEnrolled)?;
        state.accept_held(id, now_ms).map_err(|e| ModelError::Yrs(e.to_string()))?;
        self.persist_applied();
        Ok(())
    }

    /// Refuses a held mass deletion (it is applied, then undone by new writes).
    pub fn reject_held(&mut self, id: &EnvelopeId, now_ms: u64) -> Result<(), EngineError> {
        let state = self.state.as_mut().ok_or(EngineError::NotEnrolled)?;
        let envelopes = state.reject_held(id, now_ms, &mut self.rng)?;
        self.persist(envelopes.iter().map(VerifiedEnvelope::id).collect());
        Ok(())
    }

    // --- pairing -------------------------------------------------------------------------------

    /// Makes a one-time pairing code for a new device (valid for `pairing_code_ttl_ms`).
    pub fn new_pairing_code(&mut self, now_ms: u64) -> Result<PairingCode, EngineError> {
        self.now_ms = self.now_ms.max(now_ms);
        if self.state.is_none() {
            return Err(EngineError::NotEnrolled);
        }
        if self.bundle.root.is_none() {
            return Err(EngineError::NoRootKey);
        }
        let code = PairingCode { device_tag: PairingCode::tag_of(&self.device()), secret: random_bytes(&mut self.rng) };
        let active = ActiveCode {
            code: code.clone(),
            expires_ms: self.now_ms.saturating_add(self.config.pairing_code_ttl_ms),
            attempts_left: self.config.pairing_attempts,
        };
        self.codes.insert(code.code_id(), active);
        Ok(code)
    }

    fn send_join(&mut self, peer: PeerKey) {
        let Some((code, name)) = self.joining.as_ref() else { return };
        let Some(p) = self.peers.get_mut(&peer) else { return };
        let Some(view) = p.view() else { return };
        let device = *self.bundle.device.public().as_bytes();
        let proof = code.join_proof(&view, &device, name, true);
        let join = Message::PairJoin { device, name: name.clone(), proof };
        p.queue(&join);
        p.resend = Some(join);
        p.last_auth_ms = self.now_ms;
    }

    fn handle_pair_join(&mut self, peer: PeerKey, device: [u8; 32], name: String, proof: [u8; 32]) {
        let Some(state) = self.state.as_ref() else { return };
        let Some(p) = self.peers.get_mut(&peer) else { return };
        let Some(code_id) = p.pairing_code else { return };
        if let (Phase::AwaitingConfirmation { .. }, Some(accept)) = (&p.phase, p.resend.clone()) {
            p.queue(&accept); // the joiner has not received our answer yet
            return;
        }
        if !matches!(p.phase, Phase::Auth) {
            return;
        }
        let Some(view) = p.view() else { return };
        let Some(active) = self.codes.get_mut(&code_id) else {
            return self.refuse(peer, SessionError::BadPairingCode);
        };
        if active.expires_ms <= self.now_ms {
            self.codes.remove(&code_id);
            return self.refuse(peer, SessionError::BadPairingCode);
        }
        let expected = active.code.join_proof(&view, &device, &name, false);
        let Ok(device_id) = DeviceId::from_bytes(&device) else {
            return self.refuse(peer, SessionError::Protocol("invalid device key".into()));
        };
        if !session::macs_equal(&expected, &proof) || DeviceName::new(&name).is_err() {
            active.attempts_left = active.attempts_left.saturating_sub(1);
            if active.attempts_left == 0 {
                self.codes.remove(&code_id);
            }
            return self.refuse(peer, SessionError::BadPairingCode);
        }
        let Some(cert) = self.bundle.certificate.as_ref() else { return };
        let accept = active.code.accept_proof(&view, &cert.id(), true);
        let sas = active.code.sas(&view, &device, self.bundle.device.public().as_bytes());
        let _ = state;
        let accept = Message::PairAccept { certificate: cert.encode(), proof: accept };
        p.queue(&accept);
        p.resend = Some(accept);
        p.phase = Phase::AwaitingConfirmation { device: device_id, name: name.clone() };
        self.events.push_back(EngineEvent::PairingRequest { peer, device: device_id, name, sas });
    }

    fn handle_pair_accept(&mut self, peer: PeerKey, certificate: &[u8], proof: &[u8; 32]) {
        let Some((code, _)) = self.joining.as_ref() else { return };
        let Some(p) = self.peers.get_mut(&peer) else { return };
        let Some(view) = p.view() else { return };
        let Ok(cert) = DeviceCertificate::decode(certificate) else {
            return self.refuse(peer, SessionError::Protocol("bad certificate".into()));
        };
        let identity = *cert.identity();
        let Ok(cert) = cert.verify(&identity) else {
            return self.refuse(peer, SessionError::NotEnrolled);
        };
        let expected = code.accept_proof(&view, &cert.id(), false);
        if !session::macs_equal(&expected, proof) || PairingCode::tag_of(cert.device()) != code.device_tag {
            return self.refuse(peer, SessionError::BadPairingCode);
        }
        let sas = code.sas(&view, self.bundle.device.public().as_bytes(), cert.device().as_bytes());
        p.phase = Phase::AwaitingWelcome { enrolled: Box::new(cert) };
        p.resend = None;
        self.events.push_back(EngineEvent::PairingSas { peer, sas });
    }

    /// The user compared the short authentication strings: `accept` issues the new device's
    /// certificate and hands over what it needs; refusing ends the session.
    pub fn confirm_pairing(&mut self, peer: PeerKey, accept: bool, now_ms: u64) -> Result<(), EngineError> {
        self.now_ms = self.now_ms.max(now_ms);
        let Some(p) = self.peers.get_mut(&peer) else { return Err(EngineError::NoPairing) };
        let Phase::AwaitingConfirmation { device, name } = &p.phase else { return Err(EngineError::NoPairing) };
        let (device, name) = (*device, name.clone());
        if !accept {
            self.refuse(peer, SessionError::PairingRefused);
            return Ok(());
        }
        let root = self.bundle.root.as_ref().ok_or(EngineError::NoRootKey)?;
        let state = self.state.as_mut().ok_or(EngineError::NotEnrolled)?;
        let device_name = DeviceName::new(&name).map_err(|_| EngineError::UnknownDevice(device))?;
        let cert =
            DeviceCertificate::issue(root, device, device_name, self.now_ms.saturating_sub(60_000), NEVER_EXPIRES);
        state.registry_mut().add_certificate(cert.clone())?;
        let root_secret = *root.secret_bytes();
        let vault_keys = self.bundle.vault_keys.iter().map(|(k, c)| (k.id().0, *k.secret(), *c)).collect();
        if let Some(code_id) = p.pairing_code.take() {
            self.codes.remove(&code_id);
        }
        let welcome = Message::PairWelcome { certificate: cert.encode(), root_secret, vault_keys };
        p.queue(&welcome);
        p.resend = Some(welcome); // until the new device's first sync message arrives
        p.purpose = Purpose::Sync;
        self.store_registry();
        self.establish(peer, device, name);
        // Devices already in session learn the new certificate now, before any of its writes
        // reach them through this device.
        self.broadcast_registry(Some(peer));
        Ok(())
    }

    fn handle_pair_welcome(
        &mut self,
        peer: PeerKey,
        certificate: &[u8],
        root_secret: [u8; 32],
        vault_keys: Vec<wire::WireVaultKey>,
    ) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        let Phase::AwaitingWelcome { enrolled } = &p.phase else { return };
        let enrolled = (**enrolled).clone();
        let identity = *enrolled.identity();
        let root = RootSecretKey::from_secret_bytes(&root_secret);
        let Some(cert) = DeviceCertificate::decode(certificate).ok().and_then(|c| c.verify(&identity).ok()) else {
            return self.refuse(peer, SessionError::Protocol("bad certificate in welcome".into()));
        };
        if root.public() != identity || *cert.device() != self.bundle.device.public() {
            return self.refuse(peer, SessionError::Protocol("welcome does not match this device".into()));
        }
        self.bundle.root = Some(root);
        self.bundle.certificate = Some(cert.clone());
        self.bundle.vault_keys =
            vault_keys.into_iter().map(|(id, secret, c)| (VaultKey::from_parts(VaultKeyId(id), secret), c)).collect();
        let mut registry = DeviceRegistry::new(identity);
        let _ = registry.add_certificate(cert);
        let _ = registry.add_certificate(enrolled.clone());
        if let Err(e) = self.enrol(registry) {
            return self.refuse(peer, SessionError::Protocol(e.to_string()));
        }
        self.joining = None;
        self.store_identity();
        self.store_registry();
        self.events.push_back(EngineEvent::Paired { identity });
        if let Some(p) = self.peers.get_mut(&peer) {
            p.purpose = Purpose::Sync;
            p.sent_auth = true; // the pairing proofs authenticated this session
            p.confirmed = true; // the sponsor sent the welcome, so it is established
            p.resend = None;
        }
        self.establish(peer, *enrolled.device(), enrolled.name().to_string());
    }

    // --- revocation ----------------------------------------------------------------------------

    /// Revokes a lost device: its writes after the last one this device holds are refused
    /// everywhere, its sessions end, and a new vault key re-seals every secret so it cannot read
    /// anything written from now on.
    pub fn revoke(&mut self, device: DeviceId, now_ms: u64) -> Result<(), EngineError> {
        self.now_ms = self.now_ms.max(now_ms);
        let root = self.bundle.root.as_ref().ok_or(EngineError::NoRootKey)?;
        let state = self.state.as_mut().ok_or(EngineError::NotEnrolled)?;
        if state.registry().certificate(&device).is_none() {
            return Err(EngineError::UnknownDevice(device));
        }
        let last_valid_seq = state.chains().head(&device).map_or(0, |(seq, _)| seq);
        let revocation = Revocation::issue(root, device, last_valid_seq, self.now_ms);
        state.registry_mut().add_revocation(revocation)?;
        let key = VaultKey::generate(&mut self.rng);
        self.bundle.vault_keys.push((key, self.now_ms));
        load_vault(state, &self.bundle.vault_keys);
        self.store_identity();
        self.store_registry();
        self.close_revoked_sessions();
        self.transact(now_ms, |e| e.reseal_secrets())?;
        // Tell every connected device: the revocation, then the new key.
        let keys: Vec<PeerKey> = self.connected().keys().copied().collect();
        for k in keys {
            self.send_registry(k);
            if let Some(p) = self.peers.get_mut(&k) {
                p.summary_due = true;
            }
        }
        Ok(())
    }
}

/// Loads vault keys, the latest (by creation time, then ID) current.
fn load_vault(state: &mut BrowserState, keys: &[(VaultKey, u64)]) {
    let mut sorted: Vec<&(VaultKey, u64)> = keys.iter().collect();
    sorted.sort_by_key(|(k, c)| (*c, k.id()));
    let vault = state.vault_mut();
    vault.lock();
    let count = sorted.len();
    for (i, (key, _)) in sorted.into_iter().enumerate() {
        vault.insert(key.clone(), i.saturating_add(1) == count);
    }
}

fn encode_registry(registry: &DeviceRegistry) -> Vec<u8> {
    let mut w = Writer::default();
    let certs: Vec<Vec<u8>> = registry.certificates().map(VerifiedCertificate::encode).collect();
    let revocations: Vec<Vec<u8>> = registry.revocations().map(|r| r.encode()).collect();
    for list in [certs, revocations] {
        w.u32(u32::try_from(list.len()).unwrap_or(0));
        for item in list {
            w.bytes_u16(&item);
        }
    }
    w.into_bytes()
}

fn merge_registry_record(registry: &mut DeviceRegistry, body: &[u8]) -> Result<(), DecodeError> {
    let identity = *registry.identity();
    let mut r = Reader::new(body);
    let n = r.u32("certificate count")?;
    for _ in 0..r.check_len(n.into(), 65_536, "certificate count")? {
        let cert = DeviceCertificate::decode(r.bytes_u16(1024, "certificate")?)?;
        if let Ok(cert) = cert.verify(&identity) {
            let _ = registry.add_certificate(cert);
        }
    }
    let n = r.u32("revocation count")?;
    for _ in 0..r.check_len(n.into(), 65_536, "revocation count")? {
        let rev = Revocation::decode(r.bytes_u16(1024, "revocation")?)?;
        if let Ok(rev) = rev.verify(&identity) {
            let _ = registry.add_revocation(rev);
        }
    }
    r.finish("registry")
}

fn registry_without_revocations(registry: &DeviceRegistry) -> DeviceRegistry {
    let mut out = DeviceRegistry::new(*registry.identity());
    for cert in registry.certificates() {
        let _ = out.add_certificate(cert.clone());
    }
    out
}

/// Makes a seed for [`Engine`] from any cryptographic generator (the drivers use the OS's).
pub fn seed_from(rng: &mut impl CryptoRngCore) -> [u8; 32] {
    random_bytes(rng)
}
