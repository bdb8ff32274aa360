//! The browser-state model: bookmarks, history, passwords, workspaces and keys over a `yrs`
//! document, where every change is a signed envelope.
//!
//! [`BrowserState`] is one device's replica. Local changes are made inside
//! [`BrowserState::transact`], which signs every field write as a register value, writes them
//! into this device's own map of the `yrs` document and returns the signed envelopes to send.
//! Remote envelopes go through [`BrowserState::receive`], which verifies them — author, signature,
//! place in the author's chain, causal dependencies, clock skew, the structural rules of the `yrs`
//! update and every register value's own signature — **before** anything touches the document.
//!
//! # Document layout
//!
//! Each device writes only into its own root map of the `yrs` document, named `a:<device key in
//! hex>`, under a `yrs` client ID derived from its key and a fresh per-session nonce. A key of
//! that map is a register path (`b/<node>/title`, `p/<entry>/password`, …) and its value the
//! device's latest signed register value for it: exactly DESIGN §4's "one slot per author", with
//! resolution on read by the register rules, not by `yrs`'s client ordering. History lives beside
//! the document as redactable envelope attachments (see [`history`]).
//!
//! The rules are written out in `docs/model.md`.

pub mod bookmarks;
pub mod entries;
pub mod history;
pub mod import;
pub(crate) mod json;
pub mod schema;
pub mod vault;
pub mod yupdate;

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use rand_core::CryptoRngCore;
use yrs::updates::decoder::Decode;
use yrs::{Doc, Map, Options, ReadTxn, StateVector, Transact, Update};

use crate::certificate::DeviceRegistry;
use crate::envelope::{
    AuthorChains, ChainPosition, Envelope, EnvelopeBuildError, EnvelopeId, Equivocation, MAX_ATTACHMENTS,
    MAX_ATTACHMENTS_TOTAL, UnsignedEnvelope, VerifiedEnvelope,
};
use crate::error::{DecodeError, VerifyError};
use crate::hash::Hash;
use crate::hlc::{DEFAULT_MAX_SKEW_MS, HybridClock, Timestamp};
use crate::identity::{DeviceId, DeviceSecretKey, IdentityId};
use crate::register::{Register, RegisterValue, RegisterWriteError, SharedDeviceId, VerifiedRegisterValue};

use bookmarks::BookmarkTree;
use entries::{KeyRecord, Layout, NamedWorkspace, PasswordEntry};
use history::{AttachmentRef, HistoryDeletion, HistoryOp, HistoryStore, Transition, Visit};
use schema::{ItemId, MAX_TITLE_LEN, MAX_URL_LEN, NodeKind, Place, Position, path};
use vault::{Vault, VaultError};
use yupdate::{DocView, UpdateRuleError};

/// Envelope kind: a `yrs` update of the document (payload: 16-byte session nonce, then the update).
pub const KIND_DOC_UPDATE: u8 = 1;
/// Envelope kind: history (payload: a history op; visits are the attachments).
pub const KIND_HISTORY: u8 = 2;

/// Largest `yrs` update put in one envelope before a local change is split (the envelope's
/// payload cap is 1 MiB; the estimate below is conservative).
const DOC_CHUNK: usize = 768 * 1024;
/// Upper bound on what `yrs` adds per map entry: the map name (`a:` and 64 hex digits), the key
/// once more, IDs and lengths.
const YRS_ENTRY_OVERHEAD: usize = 160;

/// Tunable limits and policies.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How far ahead of local time a timestamp may be before it is held back.
    pub max_skew_ms: u64,
    /// A remote batch deleting more than this share (percent) of the bookmarks is held.
    pub mass_delete_percent: u8,
    /// A remote batch deleting more than this many bookmarks is held.
    pub mass_delete_count: usize,
    /// The share rule applies only to batches deleting at least this many.
    pub mass_delete_min: usize,
    /// Most envelopes held waiting for their dependencies or their time.
    pub max_pending: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_skew_ms: DEFAULT_MAX_SKEW_MS,
            mass_delete_percent: 20,
            mass_delete_count: 1000,
            mass_delete_min: 10,
            max_pending: 100_000,
        }
    }
}

/// What kind of thing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// A bookmark node.
    Bookmark,
    /// A visit.
    History,
    /// A password entry.
    Password,
    /// A device's open windows and tabs, or a saved workspace.
    Workspace,
    /// A key record.
    Key,
}

/// Most visits one batch reports one by one (see [`Event::Changed`]).
pub const MAX_VISIT_EVENTS: usize = 256;

/// Something the app should know about.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Data changed.
    Changed {
        /// What kind.
        kind: ChangeKind,
        /// Which item (`None` for history deletions, and for batches of more than
        /// [`MAX_VISIT_EVENTS`] visits: re-read the history).
        id: Option<ItemId>,
        /// The device that made the change.
        by: DeviceId,
        /// Whether this device made it.
        local: bool,
    },
    /// A remote batch would delete many bookmarks; it waits for [`BrowserState::accept_held`] or
    /// [`BrowserState::reject_held`].
    MassDeletionHeld {
        /// The held envelope.
        envelope: EnvelopeId,
        /// Its author.
        author: DeviceId,
        /// How many live bookmark nodes it deletes.
        deletes: usize,
        /// How many there are.
        total: usize,
    },
    /// A device signed two different envelopes for one place in its chain; it is quarantined.
    Equivocation(Equivocation),
    /// Two devices claimed one `yrs` client ID.
    ClientCollision {
        /// The client ID.
        client: u64,
        /// The device that claimed it first.
        first: DeviceId,
        /// The device refused.
        second: DeviceId,
    },
}

/// What happened to a received envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// Applied, with any held envelopes it released (in order).
    Applied(Vec<EnvelopeId>),
    /// Already held; nothing changed.
    Duplicate,
    /// Waiting for earlier envelopes or for local time to reach its timestamp.
    Pending,
    /// Held for the user to confirm a mass deletion.
    HeldForConfirmation,
}

/// Why a received envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The envelope did not verify.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Its payload did not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The author equivocated.
    #[error(transparent)]
    Equivocation(#[from] Equivocation),
    /// The author is quarantined after equivocating.
    #[error("device {0} is quarantined after equivocating; its envelopes are refused")]
    Quarantined(DeviceId),
    /// The `yrs` update breaks the document's rules.
    #[error(transparent)]
    Rule(#[from] UpdateRuleError),
    /// A register value inside is not the envelope author's.
    #[error("a register value inside is signed by another device than the envelope's author")]
    ForeignValue,
    /// Two devices claimed one `yrs` client ID.
    #[error("yrs client {client} is already used by device {first}")]
    ClientCollision {
        /// The client ID.
        client: u64,
        /// Its owner.
        first: DeviceId,
    },
    /// An envelope kind this build does not know.
    #[error("unknown envelope kind {0}")]
    UnknownKind(u8),
    /// Too many envelopes are already waiting.
    #[error("too many envelopes are waiting for their dependencies ({0})")]
    PendingFull(usize),
    /// `yrs` refused an update that passed the structural check (a bug: please report).
    #[error("yrs refused the update: {0}")]
    Yrs(String),
}

/// Why a local change could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A value is over a limit.
    #[error(transparent)]
    Invalid(#[from] DecodeError),
    /// A register write failed.
    #[error(transparent)]
    Register(#[from] RegisterWriteError),
    /// An envelope could not be built.
    #[error(transparent)]
    Envelope(#[from] EnvelopeBuildError),
    /// The vault refused.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// No such item.
    #[error("no {kind} with ID {id}")]
    NotFound {
        /// What was looked for.
        kind: &'static str,
        /// Its ID.
        id: ItemId,
    },
    /// A bookmark cannot go there.
    #[error("cannot move {node} into {parent}: {reason}")]
    BadMove {
        /// The node.
        node: ItemId,
        /// The target.
        parent: ItemId,
        /// Why.
        reason: &'static str,
    },
    /// This device is not enrolled in the identity.
    #[error("this device is not enrolled in the identity")]
    NotEnrolled,
    /// The local clock cannot issue a timestamp.
    #[error(transparent)]
    Clock(#[from] crate::error::ClockError),
    /// `yrs` failed on a local change (a bug: please report).
    #[error("yrs: {0}")]
    Yrs(String),
    /// No envelope with this ID is held.
    #[error("no held envelope {0}")]
    NotHeld(EnvelopeId),
    /// A folder has no room for another node at that place: positions are capped at
    /// [`schema::MAX_POSITION_LEN`] bytes and grow with inserts at one end or at one spot.
    #[error(
        "no room for another position in folder {folder} (about 32,000 inserts at one end or at one spot \
         fill it): move some of its nodes to another folder"
    )]
    FolderFull {
        /// The folder.
        folder: ItemId,
    },
}

/// The `yrs` client ID of a device's session: derived, not chosen, so that no device can claim
/// another's.
pub fn session_client(author: &DeviceId, nonce: &[u8; 16]) -> u64 {
    let h = Hash::digest(&crate::hash::context::YRS_CLIENT, &[author.as_bytes(), nonce]);
    let mut first = [0u8; 8];
    first.copy_from_slice(h.as_bytes().get(..8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(first) & yupdate::MAX_CLIENT_ID
}

/// The root map a device writes into.
pub fn author_map(author: &DeviceId) -> String {
    format!("a:{}", crate::text::hex(author.as_bytes()))
}

struct Held {
    envelope: VerifiedEnvelope,
    deleted_nodes: Vec<ItemId>,
}

/// One device's replica of the browser state.
pub struct BrowserState {
    identity: IdentityId,
    registry: DeviceRegistry,
    device: DeviceSecretKey,
    /// Shared by every register value this device writes.
    device_id: SharedDeviceId,
    nonce: [u8; 16],
    client: u64,
    clock: HybridClock,
    settings: Settings,
    now_ms: u64,
    doc: Doc,
    registers: BTreeMap<Arc<str>, Register>,
    history: HistoryStore,
    chains: AuthorChains,
    log: BTreeMap<EnvelopeId, VerifiedEnvelope>,
    order: Vec<EnvelopeId>,
    client_owner: BTreeMap<u64, DeviceId>,
    pending: BTreeMap<EnvelopeId, VerifiedEnvelope>,
    held: BTreeMap<EnvelopeId, Held>,
    quarantined: BTreeSet<DeviceId>,
    events: VecDeque<Event>,
    vault: Vault,
    /// Envelopes whose attachments were redacted since the last `take_redacted`.
    redacted: BTreeSet<EnvelopeId>,
    /// The materialized bookmark tree: emptied whenever a `b/` register changes (or, for a tree
    /// that is not regular, when local time moves), refilled on the next read, and patched in
    /// place by local adds, edits and moves — so an edit costs no full materialization.
    bookmark_cache: OnceCell<BookmarkTree>,
    /// Local register writes made and visible here but not yet signed into an envelope (group
    /// commit: see [`BrowserState::transact_grouped`]), in the order they were made.
    unsealed: Vec<(String, VerifiedRegisterValue)>,
}

/// Most unsealed local writes held before they are sealed whatever the storage is doing.
const MAX_UNSEALED: usize = 4096;

impl core::fmt::Debug for BrowserState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BrowserState")
            .field("device", &self.device_id)
            .field("envelopes", &self.log.len())
            .field("registers", &self.registers.len())
            .field("visits", &self.history.len())
            .finish_non_exhaustive()
    }
}

/// The envelope log as the source of visits' bytes (the history index keeps only where they are).
/// Keeps the packed block it last inflated: reads in storage or time order take each block once.
struct LogVisits<'a> {
    log: &'a BTreeMap<EnvelopeId, VerifiedEnvelope>,
    cache: std::cell::RefCell<crate::envelope::BlockCache>,
}

impl<'a> LogVisits<'a> {
    fn new(log: &'a BTreeMap<EnvelopeId, VerifiedEnvelope>) -> Self {
        Self { log, cache: Default::default() }
    }
}

impl history::VisitSource for LogVisits<'_> {
    fn visit(&self, at: &AttachmentRef) -> Option<Visit> {
        let envelope = self.log.get(&at.envelope)?;
        let index = usize::try_from(at.index).ok()?;
        let mut cache = self.cache.try_borrow_mut().ok()?;
        let bytes = envelope.attachment_cached(index, &mut cache)?;
        Visit::decode(&bytes, *envelope.author()).ok()
    }
    fn peek(&self, at: &AttachmentRef) -> Option<(ItemId, u64)> {
        let index = usize::try_from(at.index).ok()?;
        let bytes = self.log.get(&at.envelope)?.attachment_prefix(index, history::VISIT_HEAD_LEN)?;
        Visit::peek(&bytes).ok()
    }
}

struct View<'a> {
    owner: &'a BTreeMap<u64, DeviceId>,
    author: DeviceId,
    declared: u64,
    sv: StateVector,
}

impl DocView for View<'_> {
    fn is_authors_client(&self, client: u64) -> bool {
        client == self.declared || self.owner.get(&client) == Some(&self.author)
    }
    fn next_clock(&self, client: u64) -> u32 {
        self.sv.get(&yrs::block::ClientID::new(client))
    }
}

impl BrowserState {
    /// A fresh replica for `device`, enrolled in `registry`'s identity. `session_nonce` must be
    /// fresh random bytes for every session (it derives the `yrs` client ID, which must never be
    /// reused, even after restoring a backup).
    pub fn new(
        registry: DeviceRegistry,
        device: DeviceSecretKey,
        session_nonce: [u8; 16],
        settings: Settings,
    ) -> Result<Self, ModelError> {
        let device_id = device.public();
        if !registry.is_active(&device_id) {
            return Err(ModelError::NotEnrolled);
        }
        let client = session_client(&device_id, &session_nonce);
        let doc = Doc::with_options(Options { client_id: yrs::block::ClientID::new(client), ..Options::default() });
        let mut client_owner = BTreeMap::new();
        client_owner.insert(client, device_id);
        Ok(Self {
            identity: *registry.identity(),
            registry,
            device,
            device_id: Arc::new(device_id),
            nonce: session_nonce,
            client,
            clock: HybridClock::new(settings.max_skew_ms),
            settings,
            now_ms: 0,
            doc,
            registers: BTreeMap::new(),
            history: HistoryStore::default(),
            chains: AuthorChains::new(),
            log: BTreeMap::new(),
            order: Vec::new(),
            client_owner,
            pending: BTreeMap::new(),
            held: BTreeMap::new(),
            quarantined: BTreeSet::new(),
            events: VecDeque::new(),
            vault: Vault::new(),
            redacted: BTreeSet::new(),
            bookmark_cache: OnceCell::new(),
            unsealed: Vec::new(),
        })
    }

    /// The identity.
    pub fn identity(&self) -> &IdentityId {
        &self.identity
    }
    /// This device.
    pub fn device(&self) -> &DeviceId {
        &self.device_id
    }
    /// The device registry.
    pub fn registry(&self) -> &DeviceRegistry {
        &self.registry
    }
    /// Mutable access to the registry (to add certificates and revocations as they arrive).
    pub fn registry_mut(&mut self) -> &mut DeviceRegistry {
        &mut self.registry
    }
    /// The vault (to unlock, lock or add keys).
    pub fn vault_mut(&mut self) -> &mut Vault {
        &mut self.vault
    }
    /// The vault.
    pub fn vault(&self) -> &Vault {
        &self.vault
    }
    /// This session's `yrs` client ID.
    pub fn client_id(&self) -> u64 {
        self.client
    }
    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
    /// The latest local time seen.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        crate::sync::pop_releasing(&mut self.events)
    }

    /// How many events the queue has room for.
    #[cfg(any(test, feature = "test-util"))]
    pub fn event_queue_capacity(&self) -> usize {
        self.events.capacity()
    }

    /// Every applied envelope, in the order it was applied (a causal order).
    pub fn envelopes(&self) -> impl Iterator<Item = &VerifiedEnvelope> {
        self.order.iter().filter_map(|id| self.log.get(id))
    }

    /// The applied envelopes from position `start` of [`envelopes`](Self::envelopes) on,
    /// without walking the ones before it.
    pub fn envelopes_from(&self, start: usize) -> impl Iterator<Item = &VerifiedEnvelope> {
        self.order.get(start..).unwrap_or_default().iter().filter_map(|id| self.log.get(id))
    }

    /// One applied envelope.
    pub fn envelope(&self, id: &EnvelopeId) -> Option<&VerifiedEnvelope> {
        self.log.get(id)
    }

    /// The per-author chain heads.
    pub fn chains(&self) -> &AuthorChains {
        &self.chains
    }

    /// How many envelopes wait for dependencies or time.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The envelopes held for a mass-deletion confirmation.
    pub fn held(&self) -> impl Iterator<Item = (&EnvelopeId, usize)> {
        self.held.iter().map(|(id, h)| (id, h.deleted_nodes.len()))
    }

    /// Devices quarantined for equivocating.
    pub fn quarantined(&self) -> &BTreeSet<DeviceId> {
        &self.quarantined
    }

    /// How envelope `id` is to be stored (`None`: as it is), and, where packed, it is held packed
    /// from now on too (the record is then written from the packed form without deflating
    /// again). History envelopes of many visits are packed (see `history::VISIT_PACKING`); a
    /// large document update is held, and so stored, with its payload deflated.
    pub(crate) fn pack_for_storage(&mut self, id: &EnvelopeId) -> Option<crate::envelope::PackSpec> {
        let envelope = self.log.get_mut(id)?;
        envelope.deflate_payload();
        if envelope.kind() != KIND_HISTORY || envelope.attachment_count() < history::PACK_MIN_VISITS {
            return None;
        }
        envelope.pack_attachments(history::VISIT_PACKING);
        Some(history::VISIT_PACKING)
    }

    /// The envelopes whose stored copies changed (attachments redacted) since last asked.
    pub fn take_redacted(&mut self) -> Vec<EnvelopeId> {
        std::mem::take(&mut self.redacted).into_iter().collect()
    }

    /// Re-applies an envelope read back from this device's own storage, after the storage's
    /// integrity check: signatures are not checked again (see `docs/protocol.md`, persistence).
    /// Envelopes must come in the order they were first applied; call
    /// [`BrowserState::finish_restore`] after the last one.
    pub fn restore(&mut self, envelope: VerifiedEnvelope) -> Result<(), IngestError> {
        if self.log.contains_key(&envelope.id()) {
            return Ok(());
        }
        // Never go back in time, whatever the skew: this device's own writes must keep ranking
        // above its earlier ones.
        if envelope.hlc() > self.clock.last() {
            self.clock = HybridClock::restore(envelope.hlc(), self.settings.max_skew_ms);
        }
        match self.chains.check(&envelope) {
            Ok(ChainPosition::Next) => {}
            Ok(ChainPosition::Duplicate) => return Ok(()),
            Ok(ChainPosition::Gap { .. }) => {
                return Err(DecodeError::NonCanonical { what: "stored envelopes", reason: "a gap in a chain" }.into());
            }
            Err(e) => return Err(e.into()),
        }
        self.apply_remote(envelope, false, true)?;
        self.events.clear();
        Ok(())
    }

    /// Ends a run of [`BrowserState::restore`]s: indexes what they staged. Until then the
    /// history shows none of the restored visits.
    pub fn finish_restore(&mut self) {
        self.history.settle(&LogVisits::new(&self.log));
    }

    /// Advances local time: applies envelopes whose timestamps were too far ahead. Returns the
    /// envelopes applied.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Vec<EnvelopeId> {
        self.advance_to(now_ms);
        self.drain_pending()
    }

    // ------------------------------------------------------------------------------------------
    // Receiving
    // ------------------------------------------------------------------------------------------

    /// Verifies and applies an envelope from another device (or a copy of one of this device's
    /// own, which is a duplicate).
    pub fn receive(&mut self, envelope: Envelope, now_ms: u64) -> Result<Received, IngestError> {
        self.advance_to(now_ms);
        let id = envelope.id();
        if self.log.contains_key(&id) || self.pending.contains_key(&id) || self.held.contains_key(&id) {
            return Ok(Received::Duplicate);
        }
        if self.quarantined.contains(envelope.author()) {
            return Err(IngestError::Quarantined(*envelope.author()));
        }
        let verified = envelope.verify(&self.registry)?;
        match self.chains.check(&verified) {
            Err(equivocation) => {
                self.quarantine(equivocation.clone());
                return Err(IngestError::Equivocation(equivocation));
            }
            Ok(ChainPosition::Duplicate) => return Ok(Received::Duplicate),
            Ok(ChainPosition::Gap { .. }) => return self.park(verified),
            Ok(ChainPosition::Next) => {}
        }
        if !self.ready(&verified) {
            return self.park(verified);
        }
        match self.apply_remote(verified, true, false)? {
            Some(()) => {
                let mut applied = vec![id];
                applied.extend(self.drain_pending());
                Ok(Received::Applied(applied))
            }
            None => Ok(Received::HeldForConfirmation),
        }
    }

    fn quarantine(&mut self, equivocation: Equivocation) {
        self.quarantined.insert(equivocation.author);
        self.pending.retain(|_, e| e.author() != &equivocation.author);
        self.events.push_back(Event::Equivocation(equivocation));
    }

    fn park(&mut self, envelope: VerifiedEnvelope) -> Result<Received, IngestError> {
        if self.pending.len() >= self.settings.max_pending {
            return Err(IngestError::PendingFull(self.pending.len()));
        }
        self.pending.insert(envelope.id(), envelope);
        Ok(Received::Pending)
    }

    /// Dependencies applied and timestamp within the skew.
    fn ready(&self, envelope: &VerifiedEnvelope) -> bool {
        envelope.dependencies().all(|d| self.log.contains_key(&d))
            && envelope.hlc().is_visible_at(self.now_ms, self.settings.max_skew_ms)
    }

    fn drain_pending(&mut self) -> Vec<EnvelopeId> {
        let mut applied = Vec::new();
        loop {
            let next = self.pending.values().find(|e| self.chains.check(e) == Ok(ChainPosition::Next) && self.ready(e));
            let Some(id) = next.map(VerifiedEnvelope::id) else { break };
            let Some(envelope) = self.pending.remove(&id) else { break };
            match self.apply_remote(envelope, true, false) {
                Ok(Some(())) => applied.push(id),
                Ok(None) => {}
                // A parked envelope that turns out invalid is dropped; the others go on.
                Err(_) => {}
            }
            // Drop what can never apply: duplicates and envelopes of quarantined authors.
            let chains = &self.chains;
            self.pending.retain(|_, e| matches!(chains.check(e), Ok(ChainPosition::Next | ChainPosition::Gap { .. })));
        }
        applied
    }

    /// Applies a verified envelope that is next in its chain with its dependencies present.
    /// Returns `None` if it was held for a mass-deletion confirmation.
    fn apply_remote(
        &mut self,
        envelope: VerifiedEnvelope,
        guard: bool,
        trusted: bool,
    ) -> Result<Option<()>, IngestError> {
        let _ = self.clock.observe(envelope.hlc(), self.now_ms);
        match envelope.kind() {
            KIND_DOC_UPDATE => {
                let author = *envelope.author();
                let payload = envelope.payload()?;
                let (nonce, update) = split_doc_payload(&payload)?;
                let client = session_client(&author, &nonce);
                if let Some(owner) = self.client_owner.get(&client)
                    && *owner != author
                {
                    self.events.push_back(Event::ClientCollision { client, first: *owner, second: author });
                    return Err(IngestError::ClientCollision { client, first: *owner });
                }
                let view = View {
                    owner: &self.client_owner,
                    author,
                    declared: client,
                    sv: self.doc.transact().state_vector(),
                };
                let checked = yupdate::check_update(update, &author_map(&author), client, &view)?;
                let mut values = Vec::with_capacity(checked.values.len());
                // One copy of the author's key for every value of the envelope.
                let shared_author = Arc::new(author);
                for bytes in &checked.values {
                    let value = RegisterValue::decode(bytes, &shared_author)?;
                    if value.author() != &author {
                        return Err(IngestError::ForeignValue);
                    }
                    // Signed by the envelope, which verified; a version 1 value by itself too.
                    values.push(if value.is_self_signed() && !trusted {
                        value.verify(&self.registry)?
                    } else {
                        VerifiedRegisterValue::assume_verified(value)
                    });
                }
                // Only a batch with enough bookmark deletions to matter costs a tree build.
                let candidates = values.iter().filter(|v| is_bookmark_deletion(v)).count();
                if guard
                    && (candidates >= self.settings.mass_delete_min || candidates > self.settings.mass_delete_count)
                {
                    let tree = self.bookmarks();
                    let deleted = deleted_nodes(tree, &values);
                    let total = tree.len();
                    if self.is_mass_deletion(deleted.len(), total) {
                        self.events.push_back(Event::MassDeletionHeld {
                            envelope: envelope.id(),
                            author,
                            deletes: deleted.len(),
                            total,
                        });
                        self.held.insert(envelope.id(), Held { envelope, deleted_nodes: deleted });
                        return Ok(None);
                    }
                }
                // The document takes the update stripped of its values (the registers hold them;
                // see `yupdate`'s docs).
                let stripped = yupdate::strip_values(update, &checked);
                drop(checked);
                // An inflated payload (up to 1 MiB) goes before the document grows: a cold open's
                // peak comes while the last bulk update is applied.
                drop(payload);
                let decoded = Update::decode_v1(&stripped).map_err(|e| IngestError::Yrs(e.to_string()))?;
                drop(stripped);
                self.doc.transact_mut().apply_update(decoded).map_err(|e| IngestError::Yrs(e.to_string()))?;
                self.client_owner.insert(client, author);
                for value in values {
                    self.index_value(value, !trusted);
                }
            }
            KIND_HISTORY => {
                let author = *envelope.author();
                match HistoryOp::decode(&envelope.payload()?)? {
                    HistoryOp::Visits => {
                        let count = envelope.attachment_count();
                        let mut visits = Vec::with_capacity(count);
                        let at = |index: usize| AttachmentRef {
                            envelope: envelope.id(),
                            index: u32::try_from(index).unwrap_or(u32::MAX),
                        };
                        if trusted {
                            // From our own storage (integrity-checked): only what the index
                            // needs, which a packed envelope holds uninflated.
                            for index in 0..count {
                                if let Some(head) = envelope.attachment_prefix(index, history::VISIT_HEAD_LEN) {
                                    let (id, at_ms) = Visit::peek(&head)?;
                                    visits.push((id, at_ms, at(index)));
                                }
                            }
                        } else {
                            // From a peer: every field checked.
                            for (index, attachment) in envelope.attachments().enumerate() {
                                if let Some(bytes) = attachment {
                                    let visit = Visit::decode(&bytes, author)?;
                                    visits.push((visit.id, visit.visited_at_ms, at(index)));
                                }
                            }
                        }
                        self.record(envelope);
                        if trusted {
                            let redact = self.history.stage(&self.identity, visits, &LogVisits::new(&self.log));
                            self.redact(&redact);
                            return Ok(Some(()));
                        }
                        let (added, redact) = self.history.add(&self.identity, visits, &LogVisits::new(&self.log));
                        self.redact(&redact);
                        self.visits_changed(added, author, false);
                        return Ok(Some(()));
                    }
                    HistoryOp::Delete(deletion) => {
                        if envelope.attachment_count() > 0 {
                            return Err(DecodeError::NonCanonical {
                                what: "history deletion",
                                reason: "has attachments",
                            }
                            .into());
                        }
                        self.record(envelope);
                        let redact = self.history.delete(&self.identity, deletion, &LogVisits::new(&self.log));
                        self.redact(&redact);
                        self.events.push_back(Event::Changed {
                            kind: ChangeKind::History,
                            id: None,
                            by: author,
                            local: false,
                        });
                        return Ok(Some(()));
                    }
                }
            }
            other => return Err(IngestError::UnknownKind(other)),
        }
        self.record(envelope);
        Ok(Some(()))
    }

    fn record(&mut self, envelope: VerifiedEnvelope) {
        // Cannot fail: callers checked the position.
        let _ = self.chains.append(&envelope);
        let id = envelope.id();
        self.order.push(id);
        self.log.insert(id, envelope);
    }

    fn redact(&mut self, refs: &[AttachmentRef]) {
        // One call per envelope, so that a packed one rewrites each block it touches once. The
        // history store lists them envelope by envelope, ascending (its slots are per envelope);
        // a run out of order would only cost another pass.
        for in_envelope in refs.chunk_by(|x, y| x.envelope == y.envelope) {
            let Some(id) = in_envelope.first().map(|r| r.envelope) else { continue };
            let indices: Vec<usize> = in_envelope.iter().map(|r| r.index as usize).collect();
            if let Some(envelope) = self.log.get_mut(&id)
                && envelope.redact_attachments(&indices) > 0
            {
                self.redacted.insert(id);
            }
        }
    }

    /// Merges a remote value into its register; `announce`: tell the app (not on a restore).
    fn index_value(&mut self, value: VerifiedRegisterValue, announce: bool) {
        let by = *value.author();
        let change = if announce { change_of(value.path()) } else { None };
        if value.path().starts_with("b/") {
            self.bookmark_cache.take();
        }
        match self.registers.get_mut(value.path()) {
            Some(register) => {
                register.insert(value);
            }
            None => {
                let mut register = Register::new();
                let path = value.shared_path().clone();
                register.insert(value);
                self.registers.insert(path, register);
            }
        }
        if let Some((kind, id)) = change {
            self.events.push_back(Event::Changed { kind, id, by, local: false });
        }
    }

    fn is_mass_deletion(&self, deletes: usize, total: usize) -> bool {
        let share = usize::from(self.settings.mass_delete_percent);
        deletes > self.settings.mass_delete_count
            || (deletes >= self.settings.mass_delete_min && deletes.saturating_mul(100) > share.saturating_mul(total))
    }

    /// Applies a held mass deletion as it is.
    pub fn accept_held(&mut self, id: &EnvelopeId, now_ms: u64) -> Result<Vec<EnvelopeId>, IngestError> {
        self.advance_to(now_ms);
        let Some(held) = self.held.remove(id) else { return Ok(Vec::new()) };
        self.apply_remote(held.envelope, false, false)?;
        let mut applied = vec![*id];
        applied.extend(self.drain_pending());
        Ok(applied)
    }

    /// Refuses a held mass deletion: it is applied (so every replica stays in step) and then
    /// undone by new writes that revive every node it deleted. Returns the envelopes to send.
    pub fn reject_held(
        &mut self,
        id: &EnvelopeId,
        now_ms: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<VerifiedEnvelope>, ModelError> {
        let held = self.held.remove(id).ok_or(ModelError::NotHeld(*id))?;
        let nodes = held.deleted_nodes.clone();
        self.advance_to(now_ms);
        self.apply_remote(held.envelope, false, false).map_err(|e| ModelError::Yrs(e.to_string()))?;
        self.drain_pending();
        let ((), envelopes) = self.transact(now_ms, rng, |edit| {
            for node in &nodes {
                edit.restore_bookmark(node)?;
            }
            Ok(())
        })?;
        Ok(envelopes)
    }

    // ------------------------------------------------------------------------------------------
    // Local changes
    // ------------------------------------------------------------------------------------------

    /// Makes a local change. Everything `f` writes is signed, committed as envelopes and applied
    /// here (with any writes still unsealed from [`BrowserState::transact_grouped`], before
    /// them); if `f` fails, nothing of it is kept. Returns `f`'s result and the envelopes to send.
    pub fn transact<T, R: CryptoRngCore>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
        f: impl FnOnce(&mut Edit<'_, R>) -> Result<T, ModelError>,
    ) -> Result<(T, Vec<VerifiedEnvelope>), ModelError> {
        self.transact_grouped(now_ms, rng, false, f)
    }

    /// Makes a local change as [`BrowserState::transact`] does, but when `defer` is set its
    /// register writes are applied and visible here without being signed yet: they join the
    /// writes waiting for the next [`BrowserState::seal`], which signs all of them into one
    /// envelope. This is group commit — the driver defers while an earlier commit is being
    /// written, so edits arriving one at a time share a signature and a storage transaction. An
    /// edit with visits or history deletions, or one that makes the group too large, seals
    /// everything at once (the history keeps its order with the register writes).
    pub fn transact_grouped<T, R: CryptoRngCore>(
        &mut self,
        now_ms: u64,
        rng: &mut R,
        defer: bool,
        f: impl FnOnce(&mut Edit<'_, R>) -> Result<T, ModelError>,
    ) -> Result<(T, Vec<VerifiedEnvelope>), ModelError> {
        self.advance_to(now_ms);
        let mut edit = Edit {
            state: self,
            rng,
            writes: Vec::new(),
            saved: BTreeMap::new(),
            visits: Vec::new(),
            deletions: Vec::new(),
            tree: None,
        };
        match f(&mut edit) {
            Ok(value) => {
                let envelopes = edit.commit(defer)?;
                Ok((value, envelopes))
            }
            Err(e) => {
                edit.rollback();
                Err(e)
            }
        }
    }

    /// Local writes waiting to be sealed.
    pub fn unsealed_len(&self) -> usize {
        self.unsealed.len()
    }

    /// Signs every unsealed local write into envelopes (one per 768 KiB of writes; only the last
    /// value written to a path is published — it supersedes the ones before it) and applies them
    /// here. Returns the envelopes to store and send.
    pub fn seal(&mut self) -> Result<Vec<VerifiedEnvelope>, ModelError> {
        let writes = std::mem::take(&mut self.unsealed);
        let mut last: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, (p, _)) in writes.iter().enumerate() {
            last.insert(p.as_str(), i);
        }
        let published: Vec<&(String, VerifiedRegisterValue)> =
            writes.iter().enumerate().filter(|(i, (p, _))| last.get(p.as_str()) == Some(i)).map(|(_, w)| w).collect();
        let mut out = Vec::new();
        let mut chunk: Vec<&(String, VerifiedRegisterValue)> = Vec::new();
        let mut chunk_len = 0usize;
        let mut sealed = 0usize;
        for write in published {
            let len = write.1.as_value().encoded_len().saturating_add(write.0.len()).saturating_add(YRS_ENTRY_OVERHEAD);
            if chunk_len.saturating_add(len) > DOC_CHUNK && !chunk.is_empty() {
                match self.commit_doc_chunk(&chunk) {
                    Ok(envelope) => out.push(envelope),
                    Err(e) => return Err(self.unseal_from(&writes, sealed, e)),
                }
                sealed = sealed.saturating_add(chunk.len());
                chunk.clear();
                chunk_len = 0;
            }
            chunk.push(write);
            chunk_len = chunk_len.saturating_add(len);
        }
        if !chunk.is_empty() {
            match self.commit_doc_chunk(&chunk) {
                Ok(envelope) => out.push(envelope),
                Err(e) => return Err(self.unseal_from(&writes, sealed, e)),
            }
        }
        Ok(out)
    }

    /// Puts back the writes a failed seal did not publish (the first `sealed` published ones
    /// went out), so that a later seal retries them.
    fn unseal_from(
        &mut self,
        writes: &[(String, VerifiedRegisterValue)],
        sealed: usize,
        error: ModelError,
    ) -> ModelError {
        let mut last: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, (p, _)) in writes.iter().enumerate() {
            last.insert(p.as_str(), i);
        }
        let left: Vec<(String, VerifiedRegisterValue)> = writes
            .iter()
            .enumerate()
            .filter(|(i, (p, _))| last.get(p.as_str()) == Some(i))
            .skip(sealed)
            .map(|(_, w)| w.clone())
            .collect();
        self.unsealed.splice(0..0, left);
        error
    }

    fn heads_for_parents(&self) -> Vec<EnvelopeId> {
        let mut heads: Vec<EnvelopeId> = self
            .chains
            .heads()
            .filter(|(author, _)| **author != *self.device_id)
            .filter_map(|(author, _)| self.chains.head(author).map(|(_, id)| id))
            .collect();
        heads.truncate(usize::from(crate::envelope::MAX_PARENTS));
        heads
    }

    fn sign_and_apply(
        &mut self,
        kind: u8,
        payload: Vec<u8>,
        attachments: Vec<Vec<u8>>,
    ) -> Result<VerifiedEnvelope, ModelError> {
        let hlc = self.clock.tick(self.now_ms)?;
        self.sign_and_apply_at(kind, hlc, payload, attachments)
    }

    fn sign_and_apply_at(
        &mut self,
        kind: u8,
        hlc: Timestamp,
        payload: Vec<u8>,
        attachments: Vec<Vec<u8>>,
    ) -> Result<VerifiedEnvelope, ModelError> {
        let (seq, prev) = match self.chains.head(&self.device_id) {
            Some((seq, id)) => (seq.saturating_add(1), Some(id)),
            None => (1, None),
        };
        let unsigned =
            UnsignedEnvelope { kind, seq, prev, hlc, parents: self.heads_for_parents(), payload, attachments };
        let envelope = Envelope::sign(&self.device, &self.identity, unsigned)?;
        self.record(envelope.clone());
        Ok(envelope)
    }

    // ------------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------------

    fn bookmark_registers(&self) -> impl Iterator<Item = (&str, &Register)> {
        prefix_range(&self.registers, "b/", "b0")
    }

    fn prefixed(&self, kind: &'static str) -> impl Iterator<Item = (&str, &Register)> {
        let (from, to) = match kind {
            "p" => ("p/", "p0"),
            "k" => ("k/", "k0"),
            "w" => ("w/", "w0"),
            "d" => ("d/", "d0"),
            _ => ("", ""),
        };
        prefix_range(&self.registers, from, to)
    }

    /// The bookmark tree.
    pub fn bookmarks(&self) -> &BookmarkTree {
        self.bookmark_cache.get_or_init(|| self.materialize_bookmarks())
    }

    fn materialize_bookmarks(&self) -> BookmarkTree {
        bookmarks::materialize(self.bookmark_registers(), self.now_ms, self.settings.max_skew_ms)
    }

    /// Moves local time forward. A tree that held values back as too far ahead may show them
    /// now, so it is materialized again.
    fn advance_to(&mut self, now_ms: u64) {
        if now_ms > self.now_ms && self.bookmark_cache.get().is_some_and(|t| !t.is_regular()) {
            self.bookmark_cache.take();
        }
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// Whether the cached bookmark tree (if any) equals a full materialization: the check behind
    /// the in-place patches, run by the tests and the simulations.
    #[cfg(any(test, feature = "test-util"))]
    pub fn bookmark_cache_is_fresh(&self) -> bool {
        self.bookmark_cache.get().is_none_or(|cached| *cached == self.materialize_bookmarks())
    }

    /// The bookmark tree built afresh from the registers, bypassing the cache (what a cold open's
    /// first bookmark query runs; for the benches).
    #[cfg(any(test, feature = "test-util"))]
    pub fn materialize_bookmarks_uncached(&self) -> BookmarkTree {
        self.materialize_bookmarks()
    }

    /// Visits, most recent first.
    pub fn history(&self) -> impl Iterator<Item = Visit> + '_ {
        self.history.recent(LogVisits::new(&self.log))
    }

    /// Visits whose URL or title contains `needle`, most recent first, decoded as they are read.
    pub fn search_history<'a>(&'a self, needle: &str) -> impl Iterator<Item = Visit> + 'a {
        self.history.search(needle, LogVisits::new(&self.log))
    }

    /// One visit.
    pub fn visit(&self, id: &ItemId) -> Option<Visit> {
        self.history.get(id, &LogVisits::new(&self.log))
    }

    /// Number of visits.
    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// Live password entries, by ID.
    pub fn passwords(&self) -> Vec<PasswordEntry> {
        let (now, skew) = (self.now_ms, self.settings.max_skew_ms);
        entries::group("p", self.prefixed("p"))
            .into_iter()
            .filter(|(_, f)| entries::is_live(f, now, skew))
            .map(|(id, f)| entries::password_entry(id, &f, now, skew))
            .collect()
    }

    /// Opens a secret field (`password` or `notes`) of a password entry.
    pub fn reveal_password_field(&self, id: &ItemId, field: &str) -> Result<String, ModelError> {
        self.reveal(&path::password(id, field))
    }

    /// Opens the key material of a key record.
    pub fn reveal_key(&self, id: &ItemId) -> Result<String, ModelError> {
        self.reveal(&path::key(id, "secret"))
    }

    fn reveal(&self, register_path: &str) -> Result<String, ModelError> {
        let Some(value) =
            self.registers.get(register_path).and_then(|r| r.current(self.now_ms, self.settings.max_skew_ms))
        else {
            return Ok(String::new());
        };
        if value.value().is_empty() {
            return Ok(String::new());
        }
        let plain = self.vault.open(&self.identity, register_path, value.value())?;
        String::from_utf8(plain).map_err(|_| ModelError::Invalid(DecodeError::InvalidUtf8 { what: "secret" }))
    }

    /// Live key records.
    pub fn keys(&self) -> Vec<KeyRecord> {
        let (now, skew) = (self.now_ms, self.settings.max_skew_ms);
        entries::group("k", self.prefixed("k"))
            .into_iter()
            .filter(|(_, f)| entries::is_live(f, now, skew))
            .map(|(id, f)| entries::key_record(id, &f, now, skew))
            .collect()
    }

    /// Saved, shared workspaces.
    pub fn named_workspaces(&self) -> Vec<NamedWorkspace> {
        let (now, skew) = (self.now_ms, self.settings.max_skew_ms);
        entries::group("w", self.prefixed("w"))
            .into_iter()
            .filter(|(_, f)| entries::is_live(f, now, skew))
            .map(|(id, f)| entries::named_workspace(id, &f, now, skew))
            .collect()
    }

    /// Each device's open windows and tabs, as that device last published them. Only the
    /// device's own slot counts: no other device can publish another's tabs.
    pub fn device_layouts(&self) -> BTreeMap<DeviceId, Layout> {
        let mut out = BTreeMap::new();
        for (p, register) in self.prefixed("d") {
            for value in register.values() {
                if *p == path::device_layout(value.author())
                    && value.hlc().is_visible_at(self.now_ms, self.settings.max_skew_ms)
                    && let Ok(layout) = Layout::decode(value.value())
                {
                    out.insert(*value.author(), layout);
                }
            }
        }
        out
    }

    /// A JSON view of everything (secrets stay sealed), identical on replicas holding the same
    /// envelopes.
    pub fn to_json(&self) -> serde_json::Value {
        let layouts: serde_json::Map<String, serde_json::Value> = self
            .device_layouts()
            .into_iter()
            .map(|(d, l)| (d.to_string(), serde_json::to_value(l).unwrap_or_default()))
            .collect();
        serde_json::json!({
            "bookmarks": self.bookmarks().to_json(),
            "history": self.history().collect::<Vec<_>>(),
            "passwords": self.passwords(),
            "keys": self.keys(),
            "workspaces": { "devices": layouts, "named": self.named_workspaces() },
        })
    }

    /// The envelope that carried (and so signed) the register value `id`, for showing who wrote
    /// a value and proving it: the envelope's signature covers the value's bytes. Walks the log,
    /// decoding each document update (an audit's cost, not a lookup's).
    pub fn envelope_of_value(&self, id: &crate::register::ValueId) -> Option<EnvelopeId> {
        self.envelopes().filter(|e| e.kind() == KIND_DOC_UPDATE).find_map(|envelope| {
            let payload = envelope.payload().ok()?;
            let (_, update) = split_doc_payload(&payload).ok()?;
            let checked = yupdate::values_in(update)?;
            let author = Arc::new(*envelope.author());
            checked
                .iter()
                .any(|bytes| RegisterValue::decode(bytes, &author).is_ok_and(|v| v.id() == *id))
                .then(|| envelope.id())
        })
    }

    /// A hash of [`BrowserState::to_json`]: equal on replicas holding the same data, so two
    /// devices can tell whether they have converged without sending the data.
    pub fn digest(&self) -> String {
        blake3::hash(self.to_json().to_string().as_bytes()).to_hex().to_string()
    }

    /// How much the replica holds.
    pub fn counts(&self) -> Counts {
        Counts {
            bookmarks: self.bookmarks().bookmark_count(),
            history: self.history_len(),
            passwords: self.passwords().len(),
            keys: self.keys().len(),
            workspaces: self.named_workspaces().len(),
            envelopes: self.envelopes().count(),
        }
    }

    /// The encoded replica state, to compare replicas: the `yrs` document (its structure: the
    /// values are in the registers), every register's values and the history store.
    pub fn encode_state(&self) -> Vec<u8> {
        let mut w = crate::codec::Writer::with_capacity(0);
        w.bytes_u32(&self.doc.transact().encode_state_as_update_v1(&StateVector::default()));
        for register in self.registers.values() {
            for value in register.values() {
                w.bytes_u32(&value.encode());
            }
        }
        w.bytes_u32(&self.history.encode(&LogVisits::new(&self.log)));
        w.into_bytes()
    }

    /// Every byte this replica would send a peer that has nothing: all applied envelopes.
    pub fn encode_envelopes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for envelope in self.envelopes() {
            out.extend_from_slice(&envelope.encode());
        }
        out
    }
}

/// The registers whose paths lie in `[from, to)`.
fn prefix_range<'a>(
    registers: &'a BTreeMap<Arc<str>, Register>,
    from: &'a str,
    to: &'a str,
) -> impl Iterator<Item = (&'a str, &'a Register)> + 'a {
    use core::ops::Bound;
    registers.range::<str, _>((Bound::Included(from), Bound::Excluded(to))).map(|(p, r)| (&**p, r))
}

fn split_doc_payload(payload: &[u8]) -> Result<([u8; 16], &[u8]), DecodeError> {
    let (nonce, update) = payload.split_at_checked(16).ok_or(DecodeError::Truncated {
        what: "session nonce",
        at: 0,
        needed: 16usize.saturating_sub(payload.len()),
    })?;
    let mut n = [0u8; 16];
    n.copy_from_slice(nonce);
    Ok((n, update))
}

fn is_bookmark_deletion(value: &VerifiedRegisterValue) -> bool {
    matches!(path::split(value.path()), Some(("b", _, "place")))
        && Place::decode(value.value()).is_ok_and(|p| p.is_deleted())
}

/// The live bookmark nodes that `values` delete.
fn deleted_nodes(tree: &BookmarkTree, values: &[VerifiedRegisterValue]) -> Vec<ItemId> {
    values
        .iter()
        .filter(|v| is_bookmark_deletion(v))
        .filter_map(|v| match path::split(v.path()) {
            Some((_, id, _)) => id.parse::<ItemId>().ok().filter(|id| tree.get(id).is_some()),
            None => None,
        })
        .collect()
}

fn change_of(register_path: &str) -> Option<(ChangeKind, Option<ItemId>)> {
    let (kind, id, _) = path::split(register_path)?;
    let kind = match kind {
        "b" => ChangeKind::Bookmark,
        "p" => ChangeKind::Password,
        "k" => ChangeKind::Key,
        "w" | "d" => ChangeKind::Workspace,
        _ => return None,
    };
    Some((kind, id.parse().ok()))
}

/// A local change in progress (see [`BrowserState::transact`]).
pub struct Edit<'s, R> {
    state: &'s mut BrowserState,
    rng: &'s mut R,
    /// Paths written, in order (a path may repeat; the last value wins).
    writes: Vec<(String, VerifiedRegisterValue)>,
    /// Registers as they were before this edit touched them.
    saved: BTreeMap<String, Option<Register>>,
    visits: Vec<Visit>,
    deletions: Vec<HistoryDeletion>,
    tree: Option<BookmarkTree>,
}

impl<R> core::fmt::Debug for Edit<'_, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Edit").field("writes", &self.writes.len()).finish_non_exhaustive()
    }
}

impl<R: CryptoRngCore> Edit<'_, R> {
    /// Writes `value` into the register at `register_path`, superseding every value held.
    fn write(&mut self, register_path: String, value: Vec<u8>) -> Result<(), ModelError> {
        let hlc = self.state.clock.tick(self.state.now_ms)?;
        self.write_at(register_path, value, hlc)
    }

    fn write_at(&mut self, register_path: String, value: Vec<u8>, hlc: Timestamp) -> Result<(), ModelError> {
        if register_path.starts_with("b/") {
            self.tree = None;
            self.state.bookmark_cache.take();
        }
        let state = &mut *self.state;
        // One search of the register index for the rollback copy and the write (two before).
        let held = state.registers.get_mut(register_path.as_str());
        if !self.saved.contains_key(register_path.as_str()) {
            self.saved.insert(register_path.clone(), held.as_deref().cloned());
        }
        let written = match held {
            Some(register) => register.write(&state.device_id, &register_path, value, hlc)?,
            None => {
                // A new register is keyed by its first value's own (shared) path.
                let mut register = Register::new();
                let written = register.write(&state.device_id, &register_path, value, hlc)?;
                state.registers.insert(written.shared_path().clone(), register);
                written
            }
        };
        self.writes.push((register_path, written));
        Ok(())
    }

    /// Supersedes every value of every register under `prefix` (used by deletions).
    fn seen_under(&self, prefix: &str) -> Vec<crate::register::ValueId> {
        let end = format!("{prefix}\u{10ffff}");
        prefix_range(&self.state.registers, prefix, &end)
            .flat_map(|(_, r)| r.values().map(VerifiedRegisterValue::id))
            .collect()
    }

    fn write_superseding(
        &mut self,
        register_path: String,
        value: Vec<u8>,
        extra: Vec<crate::register::ValueId>,
    ) -> Result<(), ModelError> {
        let hlc = self.state.clock.tick(self.state.now_ms)?;
        if register_path.starts_with("b/") {
            self.tree = None;
            self.state.bookmark_cache.take();
        }
        let state = &mut *self.state;
        self.saved.entry(register_path.clone()).or_insert_with(|| state.registers.get(register_path.as_str()).cloned());
        let mut supersedes: Vec<_> = state
            .registers
            .get(register_path.as_str())
            .into_iter()
            .flat_map(|r| r.values().map(VerifiedRegisterValue::id))
            .collect();
        supersedes.extend(extra);
        supersedes.sort();
        supersedes.dedup();
        supersedes.truncate(usize::from(crate::register::MAX_SUPERSEDES));
        let written = RegisterValue::write(&state.device_id, &register_path, value, hlc, supersedes)?;
        state.registers.entry(written.shared_path().clone()).or_default().insert(written.clone());
        self.writes.push((register_path, written));
        Ok(())
    }

    fn rollback(self) {
        let bookmarks_touched = self.saved.keys().any(|p| p.starts_with("b/"));
        if let (false, Some(tree)) = (bookmarks_touched, self.tree) {
            // Only read: the tree is still the state's.
            self.state.bookmark_cache = OnceCell::from(tree);
        } else {
            self.state.bookmark_cache.take();
        }
        for (p, original) in self.saved {
            match original {
                Some(r) => {
                    self.state.registers.insert(Arc::from(p), r);
                }
                None => {
                    self.state.registers.remove(p.as_str());
                }
            }
        }
    }

    /// A fresh random ID.
    pub fn new_id(&mut self) -> ItemId {
        ItemId::random(self.rng)
    }

    /// The bookmark tree including this edit's changes so far.
    pub fn tree(&mut self) -> &BookmarkTree {
        let state = &mut *self.state;
        self.tree.get_or_insert_with(|| match state.bookmark_cache.take() {
            Some(tree) => tree,
            None => state.materialize_bookmarks(),
        })
    }

    /// Takes this edit's tree for patching after the writes of a local add, edit or move, if it
    /// may be patched (see `BookmarkTree::is_regular`).
    fn tree_to_patch(&mut self) -> Option<BookmarkTree> {
        self.tree().is_regular().then(|| self.tree.take()).flatten()
    }

    // --- bookmarks ---------------------------------------------------------------------------

    /// Adds a folder, bookmark or separator under `parent` at `index` (`None`: at the end).
    pub fn add_bookmark(
        &mut self,
        parent: ItemId,
        index: Option<usize>,
        kind: NodeKind,
        title: &str,
        url: Option<&str>,
    ) -> Result<ItemId, ModelError> {
        schema::check_text(title, MAX_TITLE_LEN, "title")?;
        if let Some(url) = url {
            schema::check_text(url, MAX_URL_LEN, "url")?;
        }
        let tree = self.tree();
        if !parent.is_root() && tree.get(&parent).is_none_or(|n| n.kind != NodeKind::Folder) {
            return Err(ModelError::NotFound { kind: "folder", id: parent });
        }
        let index = index.unwrap_or(usize::MAX).min(tree.children(&parent).len());
        let position = tree.position_at(&parent, index, None)?;
        let id = self.new_id();
        self.add_bookmark_at(id, parent, position, kind, title, url)?;
        Ok(id)
    }

    /// Adds a node at an explicit position (bulk imports compute positions themselves).
    pub(crate) fn add_bookmark_at(
        &mut self,
        id: ItemId,
        parent: ItemId,
        position: Position,
        kind: NodeKind,
        title: &str,
        url: Option<&str>,
    ) -> Result<(), ModelError> {
        schema::check_text(title, MAX_TITLE_LEN, "title")?;
        let [place_path, title_path, url_path] = path::bookmark_fields(&id, ["place", "title", "url"]);
        // A fresh node under a live folder of a regular tree lands exactly where its place says.
        let fresh =
            [&place_path, &title_path, &url_path].iter().all(|p| !self.state.registers.contains_key(p.as_str()));
        let patch = if fresh {
            self.tree_to_patch()
                .filter(|t| parent.is_root() || t.get(&parent).is_some_and(|n| n.kind == NodeKind::Folder))
        } else {
            None
        };
        let place =
            Place { kind, parent, position: position.clone(), prev_parent: parent, prev_position: position.clone() };
        self.write(place_path, place.encode())?;
        if kind != NodeKind::Separator {
            self.write(title_path, schema::encode_text(title))?;
        }
        let url = if kind == NodeKind::Bookmark { url } else { None };
        if let Some(url) = url {
            schema::check_text(url, MAX_URL_LEN, "url")?;
            self.write(url_path, schema::encode_text(url))?;
        }
        if let Some(mut tree) = patch {
            let title = if kind == NodeKind::Separator { String::new() } else { title.to_owned() };
            let url = url.map(str::to_owned);
            tree.insert_new(bookmarks::BookmarkNode { id, kind, title, url, parent, children: Vec::new(), position });
            self.tree = Some(tree);
        }
        Ok(())
    }

    /// Changes a node's title and/or URL.
    pub fn edit_bookmark(&mut self, id: &ItemId, title: Option<&str>, url: Option<&str>) -> Result<(), ModelError> {
        let node = self.tree().get(id).cloned().ok_or(ModelError::NotFound { kind: "bookmark", id: *id })?;
        let patch = self.tree_to_patch();
        if let Some(title) = title {
            schema::check_text(title, MAX_TITLE_LEN, "title")?;
            self.write(path::bookmark(id, "title"), schema::encode_text(title))?;
        }
        if let Some(url) = url {
            schema::check_text(url, MAX_URL_LEN, "url")?;
            if node.kind == NodeKind::Bookmark {
                self.write(path::bookmark(id, "url"), schema::encode_text(url))?;
            }
        }
        if let Some(mut tree) = patch {
            tree.set_text(id, title, url);
            self.tree = Some(tree);
        }
        Ok(())
    }

    /// Moves a node under `parent` at `index` (`None`: at the end).
    pub fn move_bookmark(&mut self, id: &ItemId, parent: ItemId, index: Option<usize>) -> Result<(), ModelError> {
        let tree = self.tree();
        let node = tree.get(id).cloned().ok_or(ModelError::NotFound { kind: "bookmark", id: *id })?;
        if !parent.is_root() && tree.get(&parent).is_none_or(|n| n.kind != NodeKind::Folder) {
            return Err(ModelError::BadMove { node: *id, parent, reason: "not a folder" });
        }
        if tree.is_within(&parent, id) {
            return Err(ModelError::BadMove { node: *id, parent, reason: "a folder cannot go inside itself" });
        }
        let siblings = tree.children(&parent).iter().filter(|c| *c != id).count();
        let index = index.unwrap_or(usize::MAX).min(siblings);
        let position = tree.position_at(&parent, index, Some(id))?;
        // A live folder that is not inside the node: no cycle, no orphan, the node lands there.
        let patch = self.tree_to_patch();
        let place = Place {
            kind: node.kind,
            parent,
            position: position.clone(),
            prev_parent: node.parent,
            prev_position: node.position,
        };
        self.write(path::bookmark(id, "place"), place.encode())?;
        if let Some(mut tree) = patch {
            tree.relocate(id, parent, position);
            self.tree = Some(tree);
        }
        Ok(())
    }

    /// Deletes a node and everything beneath it.
    pub fn delete_bookmark(&mut self, id: &ItemId) -> Result<usize, ModelError> {
        let tree = self.tree().clone();
        let node = tree.get(id).ok_or(ModelError::NotFound { kind: "bookmark", id: *id })?;
        let mut doomed = vec![*id];
        doomed.extend(tree.descendants(&node.id));
        for victim in &doomed {
            let Some(n) = tree.get(victim) else { continue };
            let place = Place {
                kind: n.kind,
                parent: ItemId::DELETED,
                position: n.position.clone(),
                prev_parent: n.parent,
                prev_position: n.position.clone(),
            };
            let seen = self.seen_under(&format!("b/{victim}/"));
            self.write_superseding(path::bookmark(victim, "place"), place.encode(), seen)?;
        }
        Ok(doomed.len())
    }

    /// Brings back a node deleted by a refused mass deletion, where it was.
    fn restore_bookmark(&mut self, id: &ItemId) -> Result<(), ModelError> {
        let register_path = path::bookmark(id, "place");
        let Some(current) = self
            .state
            .registers
            .get(register_path.as_str())
            .and_then(|r| r.current(self.state.now_ms, self.state.settings.max_skew_ms))
        else {
            return Ok(());
        };
        let Ok(deleted) = Place::decode(current.value()) else { return Ok(()) };
        if !deleted.is_deleted() {
            return Ok(());
        }
        let place = Place {
            kind: deleted.kind,
            parent: deleted.prev_parent,
            position: deleted.prev_position.clone(),
            prev_parent: deleted.prev_parent,
            prev_position: deleted.prev_position,
        };
        self.write(register_path, place.encode())
    }

    // --- history -----------------------------------------------------------------------------

    /// Records a visit on this device.
    pub fn record_visit(
        &mut self,
        url: &str,
        title: &str,
        visited_at_ms: u64,
        transition: Transition,
    ) -> Result<ItemId, ModelError> {
        schema::check_text(url, MAX_URL_LEN, "url")?;
        schema::check_text(title, MAX_TITLE_LEN, "title")?;
        let id = self.new_id();
        self.visits.push(Visit {
            id,
            url: url.to_owned(),
            title: title.to_owned(),
            visited_at_ms,
            transition,
            device: *self.state.device_id,
        });
        Ok(id)
    }

    /// Deletes every visit to `url` made so far.
    pub fn delete_history_url(&mut self, url: &str) {
        let up_to_ms = self.state.now_ms;
        self.deletions.push(HistoryDeletion::Url { url_key: history::url_key(&self.state.identity, url), up_to_ms });
    }

    /// Deletes every visit made in `[from_ms, to_ms]`.
    pub fn delete_history_range(&mut self, from_ms: u64, to_ms: u64) {
        self.deletions.push(HistoryDeletion::Range { from_ms: from_ms.min(to_ms), to_ms: to_ms.max(from_ms) });
    }

    /// Deletes every visit made so far.
    pub fn delete_all_history(&mut self) {
        self.deletions.push(HistoryDeletion::All { up_to_ms: self.state.now_ms });
    }

    /// Deletes some visits.
    pub fn delete_visits(&mut self, ids: &[ItemId]) {
        let mut ids = ids.to_vec();
        ids.sort();
        ids.dedup();
        for chunk in ids.chunks(65_536) {
            self.deletions.push(HistoryDeletion::Visits(chunk.to_vec()));
        }
    }

    // --- passwords ---------------------------------------------------------------------------

    /// Adds a password entry. The password and notes are sealed with the vault.
    pub fn add_password(
        &mut self,
        origin: &str,
        username: &str,
        password: &str,
        notes: &str,
    ) -> Result<ItemId, ModelError> {
        let id = self.new_id();
        let now = self.state.now_ms;
        self.write(path::password(&id, "created"), schema::encode_u64(now))?;
        self.write(path::password(&id, "state"), schema::STATE_LIVE.to_vec())?;
        self.set_password_fields(&id, Some(origin), Some(username), Some(password), Some(notes))?;
        Ok(id)
    }

    /// Changes some fields of a password entry; each field is its own register.
    pub fn set_password_fields(
        &mut self,
        id: &ItemId,
        origin: Option<&str>,
        username: Option<&str>,
        password: Option<&str>,
        notes: Option<&str>,
    ) -> Result<(), ModelError> {
        if let Some(origin) = origin {
            schema::check_text(origin, MAX_URL_LEN, "origin")?;
            self.write(path::password(id, "origin"), schema::encode_text(origin))?;
        }
        if let Some(username) = username {
            schema::check_text(username, MAX_TITLE_LEN, "username")?;
            self.write(path::password(id, "username"), schema::encode_text(username))?;
        }
        for (field, secret) in [("password", password), ("notes", notes)] {
            if let Some(secret) = secret {
                self.write_secret(path::password(id, field), secret)?;
            }
        }
        Ok(())
    }

    fn write_secret(&mut self, register_path: String, secret: &str) -> Result<(), ModelError> {
        let sealed = if secret.is_empty() {
            Vec::new()
        } else {
            self.state.vault.seal(self.rng, &self.state.identity, &register_path, secret.as_bytes())?
        };
        self.write(register_path, sealed)
    }

    /// Deletes a password entry.
    pub fn delete_password(&mut self, id: &ItemId) -> Result<(), ModelError> {
        self.delete_entry(&format!("p/{id}/"), path::password(id, "state"))
    }

    fn delete_entry(&mut self, prefix: &str, state_path: String) -> Result<(), ModelError> {
        let seen = self.seen_under(prefix);
        self.write_superseding(state_path, schema::STATE_DELETED.to_vec(), seen)
    }

    /// Re-seals every secret this replica holds under the vault's current key (after a
    /// rotation). Secrets sealed with a key this device lacks are left as they are.
    pub fn reseal_secrets(&mut self) -> Result<usize, ModelError> {
        let Some(current) = self.state.vault.current().map(vault::VaultKey::id) else {
            return Err(VaultError::Locked.into());
        };
        let (now, skew) = (self.state.now_ms, self.state.settings.max_skew_ms);
        let targets: Vec<String> = self
            .state
            .registers
            .iter()
            .filter(|(p, _)| matches!(path::split(p), Some(("p", _, "password" | "notes")) | Some(("k", _, "secret"))))
            .filter_map(|(p, r)| {
                let v = r.current(now, skew)?;
                (!v.value().is_empty() && Vault::sealed_with(v.value()).ok()? != current).then(|| p.to_string())
            })
            .collect();
        let mut count: usize = 0;
        for register_path in targets {
            let plain = match self.state.reveal(&register_path) {
                Ok(plain) => plain,
                Err(ModelError::Vault(VaultError::UnknownKey)) => continue,
                Err(e) => return Err(e),
            };
            self.write_secret(register_path, &plain)?;
            count = count.saturating_add(1);
        }
        Ok(count)
    }

    // --- keys ----------------------------------------------------------------------------------

    /// Adds a key record; the key material is sealed with the vault.
    pub fn add_key(&mut self, name: &str, key_type: &str, secret: &str) -> Result<ItemId, ModelError> {
        schema::check_text(name, MAX_TITLE_LEN, "name")?;
        schema::check_text(key_type, MAX_TITLE_LEN, "key type")?;
        let id = self.new_id();
        self.write(path::key(&id, "state"), schema::STATE_LIVE.to_vec())?;
        self.write(path::key(&id, "name"), schema::encode_text(name))?;
        self.write(path::key(&id, "type"), schema::encode_text(key_type))?;
        self.write_secret(path::key(&id, "secret"), secret)?;
        Ok(id)
    }

    /// Renames a key record.
    pub fn rename_key(&mut self, id: &ItemId, name: &str) -> Result<(), ModelError> {
        schema::check_text(name, MAX_TITLE_LEN, "name")?;
        self.write(path::key(id, "name"), schema::encode_text(name))
    }

    /// Deletes a key record.
    pub fn delete_key(&mut self, id: &ItemId) -> Result<(), ModelError> {
        self.delete_entry(&format!("k/{id}/"), path::key(id, "state"))
    }

    // --- workspaces ----------------------------------------------------------------------------

    /// Publishes this device's open windows and tabs.
    pub fn set_device_layout(&mut self, layout: &Layout) -> Result<(), ModelError> {
        layout.check()?;
        let device = *self.state.device_id;
        self.write(path::device_layout(&device), layout.encode())
    }

    /// Saves a named workspace that any device can open and edit.
    pub fn save_workspace(&mut self, name: &str, layout: &Layout) -> Result<ItemId, ModelError> {
        let id = self.new_id();
        self.write(path::workspace(&id, "state"), schema::STATE_LIVE.to_vec())?;
        self.update_workspace(&id, Some(name), Some(layout))?;
        Ok(id)
    }

    /// Changes a saved workspace.
    pub fn update_workspace(
        &mut self,
        id: &ItemId,
        name: Option<&str>,
        layout: Option<&Layout>,
    ) -> Result<(), ModelError> {
        if let Some(name) = name {
            schema::check_text(name, MAX_TITLE_LEN, "name")?;
            self.write(path::workspace(id, "name"), schema::encode_text(name))?;
        }
        if let Some(layout) = layout {
            layout.check()?;
            self.write(path::workspace(id, "layout"), layout.encode())?;
        }
        Ok(())
    }

    /// Deletes a saved workspace.
    pub fn delete_workspace(&mut self, id: &ItemId) -> Result<(), ModelError> {
        self.delete_entry(&format!("w/{id}/"), path::workspace(id, "state"))
    }

    // --- commit --------------------------------------------------------------------------------

    fn commit(self, defer: bool) -> Result<Vec<VerifiedEnvelope>, ModelError> {
        let Edit { state, writes, visits, deletions, tree, .. } = self;
        if let Some(tree) = tree {
            // Up to date with every write of this edit (each `b/` write emptied it, or patched it).
            state.bookmark_cache = OnceCell::from(tree);
        }
        // One event per item changed: an item's writes come together (a bookmark add writes
        // three registers), so repeats are dropped as they come.
        let mut changed: Vec<(ChangeKind, Option<ItemId>)> = Vec::new();
        let mut last_item: Option<&str> = None;
        for (_, value) in &writes {
            // Writes to one item share its `kind/id/` prefix: its ID is parsed once.
            let item = value.path().rsplit_once('/').map(|(item, _)| item);
            if item.is_some() && item == last_item {
                continue;
            }
            last_item = item;
            if let Some(change) = change_of(value.path())
                && changed.last() != Some(&change)
            {
                changed.push(change);
            }
        }
        for (kind, id) in changed {
            state.events.push_back(Event::Changed { kind, id, by: *state.device_id, local: true });
        }
        state.unsealed.extend(writes);
        let seal_now = !defer || !visits.is_empty() || !deletions.is_empty() || state.unsealed.len() >= MAX_UNSEALED;
        let mut out = if seal_now { state.seal()? } else { Vec::new() };
        // Visits, as attachments, in envelopes of bounded size.
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut batch_len = 0usize;
        // Only what the index needs is kept of each visit once it is encoded.
        let mut batch_visits: Vec<(ItemId, u64)> = Vec::new();
        for visit in visits {
            let bytes = visit.encode();
            if !batch.is_empty()
                && (batch.len() >= MAX_ATTACHMENTS as usize
                    || batch_len.saturating_add(bytes.len()) > MAX_ATTACHMENTS_TOTAL)
            {
                out.push(state.commit_visits(std::mem::take(&mut batch), std::mem::take(&mut batch_visits))?);
                batch_len = 0;
            }
            batch_len = batch_len.saturating_add(bytes.len());
            batch.push(bytes);
            batch_visits.push((visit.id, visit.visited_at_ms));
        }
        if !batch.is_empty() {
            out.push(state.commit_visits(batch, batch_visits)?);
        }
        for deletion in deletions {
            let envelope =
                state.sign_and_apply(KIND_HISTORY, HistoryOp::Delete(deletion.clone()).encode(), Vec::new())?;
            let redact = state.history.delete(&state.identity, deletion, &LogVisits::new(&state.log));
            state.redact(&redact);
            state.events.push_back(Event::Changed {
                kind: ChangeKind::History,
                id: None,
                by: *state.device_id,
                local: true,
            });
            out.push(envelope);
        }
        // The log holds redacted copies where deletions applied; hand out what is stored.
        Ok(out.into_iter().map(|e| state.log.get(&e.id()).cloned().unwrap_or(e)).collect())
    }
}

impl BrowserState {
    fn commit_doc_chunk(&mut self, chunk: &[&(String, VerifiedRegisterValue)]) -> Result<VerifiedEnvelope, ModelError> {
        // What can fail is done before the document takes the entries: `yrs` cannot undo them,
        // and clocks of this session that no envelope carries would stop every later update of
        // it at the peers (a clock gap). The HLC first; the envelope stays under its size cap by
        // `DOC_CHUNK`; the fill fails only if `yrs` wrote an update of another shape.
        let hlc = self.clock.tick(self.now_ms)?;
        let map = self.doc.get_or_insert_map(author_map(&self.device_id));
        // The document holds placeholder entries; the update sent carries the signed values in
        // their place (see `yupdate`'s docs).
        let stripped = {
            let mut txn = self.doc.transact_mut();
            for (p, _) in chunk {
                map.insert(&mut txn, p.as_str(), yupdate::Placeholder);
            }
            txn.encode_update_v1()
        };
        let values: Vec<Vec<u8>> = chunk.iter().map(|(_, value)| value.encode()).collect();
        let update = yupdate::fill_values(&stripped, &values).map_err(|e| ModelError::Yrs(e.to_string()))?;
        drop((stripped, values));
        let mut payload = Vec::with_capacity(update.len().saturating_add(16));
        payload.extend_from_slice(&self.nonce);
        payload.extend_from_slice(&update);
        self.sign_and_apply_at(KIND_DOC_UPDATE, hlc, payload, Vec::new())
    }

    fn commit_visits(
        &mut self,
        attachments: Vec<Vec<u8>>,
        visits: Vec<(ItemId, u64)>,
    ) -> Result<VerifiedEnvelope, ModelError> {
        let envelope = self.sign_and_apply(KIND_HISTORY, HistoryOp::Visits.encode(), attachments)?;
        let refs = visits
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                (v.0, v.1, AttachmentRef { envelope: envelope.id(), index: u32::try_from(i).unwrap_or(u32::MAX) })
            })
            .collect();
        let (added, redact) = self.history.add(&self.identity, refs, &LogVisits::new(&self.log));
        self.redact(&redact);
        self.visits_changed(added, *self.device_id, true);
        Ok(envelope)
    }

    /// Reports added visits: one change each, or for a batch of more than [`MAX_VISIT_EVENTS`]
    /// one change with no ID, as a deletion reports (an import of 100,000 visits queued an event
    /// each: 11 MB in the replica, and again in the driver and as JS objects).
    fn visits_changed(&mut self, added: Vec<ItemId>, by: DeviceId, local: bool) {
        if added.len() > MAX_VISIT_EVENTS {
            self.events.push_back(Event::Changed { kind: ChangeKind::History, id: None, by, local });
            return;
        }
        for id in added {
            self.events.push_back(Event::Changed { kind: ChangeKind::History, id: Some(id), by, local });
        }
    }
}

/// Sizes of a replica.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Bookmarks (not folders or separators).
    pub bookmarks: usize,
    /// History visits.
    pub history: usize,
    /// Password entries.
    pub passwords: usize,
    /// Keys.
    pub keys: usize,
    /// Named workspaces.
    pub workspaces: usize,
    /// Envelopes held.
    pub envelopes: usize,
}
