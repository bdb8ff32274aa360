//! A simulated network of engines (feature `test-util`), in the manner of quinn-proto's `Pair`
//! and str0m's netem: a virtual clock, links with latency, loss, duplication and reordering,
//! partitions, crashes that lose whatever was not yet durable, and restarts from stored records.
//!
//! It is a driver like the real ones: it feeds each [`Engine`] its inputs and carries out its
//! outputs, and nothing else.

#![allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::{BTreeMap, BTreeSet};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::envelope::EnvelopeId;
use crate::sync::{Config, Engine, EngineEvent, Fingerprint, PeerKey, RecordKey, StorageBatch, Transmit};

/// Faults applied to every frame.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// Percent of frames lost.
    pub loss_percent: u64,
    /// Percent of frames delivered twice.
    pub dup_percent: u64,
    /// Base one-way latency.
    pub latency_ms: u64,
    /// Extra random delay up to this much, which reorders frames.
    pub jitter_ms: u64,
}

impl Faults {
    /// A perfect LAN.
    pub const NONE: Faults = Faults { loss_percent: 0, dup_percent: 0, latency_ms: 1, jitter_ms: 0 };
}

/// Rewrites a frame in flight (an attacker on the path), or drops it (`None`).
pub type Tamper = Box<dyn FnMut(usize, usize, Vec<u8>) -> Option<Vec<u8>>>;

/// One simulated device.
pub struct SimNode {
    /// The engine, `None` while crashed.
    pub engine: Option<Engine>,
    /// Durable records.
    pub storage: BTreeMap<RecordKey, Vec<u8>>,
    /// Batches the engine emitted that are not durable yet.
    pub unflushed: Vec<StorageBatch>,
    /// Its DTLS fingerprint.
    pub fingerprint: Fingerprint,
    /// Local changes reported committed (acknowledged writes).
    pub acknowledged: BTreeSet<EnvelopeId>,
    /// Events seen.
    pub events: Vec<EngineEvent>,
    /// Whether storage completes immediately (otherwise on `flush`).
    pub instant_storage: bool,
    /// Clock offset from the network's time.
    pub clock_offset_ms: u64,
}

struct InFlight {
    at_ms: u64,
    to: usize,
    peer: PeerKey,
    frame: Vec<u8>,
}

impl core::fmt::Debug for SimNode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimNode")
            .field("up", &self.engine.is_some())
            .field("records", &self.storage.len())
            .finish_non_exhaustive()
    }
}

impl core::fmt::Debug for SimNet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimNet").field("now_ms", &self.now_ms).field("nodes", &self.nodes).finish_non_exhaustive()
    }
}

/// The network.
pub struct SimNet {
    /// Virtual time.
    pub now_ms: u64,
    /// The devices.
    pub nodes: Vec<SimNode>,
    /// Faults on every link.
    pub faults: Faults,
    /// Pairs that cannot reach each other.
    pub partitioned: BTreeSet<(usize, usize)>,
    /// An attacker on the path, if any.
    pub tamper: Option<Tamper>,
    config: Config,
    rng: ChaCha20Rng,
    in_flight: Vec<InFlight>,
    /// Open connections: (a, b) with a < b, and the connection epoch.
    links: BTreeMap<(usize, usize), u64>,
    epoch: u64,
    /// Fingerprints each side is told the other has (a malicious relay may change them).
    pub remote_fp_override: BTreeMap<(usize, usize), Fingerprint>,
    /// Total bytes carried.
    pub bytes_sent: u64,
    /// Frames carried.
    pub frames_sent: u64,
}

fn fingerprint(i: usize, salt: u64) -> Fingerprint {
    let bytes: Vec<String> = (0..32).map(|b| format!("{:02X}", (i as u64 * 31 + b as u64 * 7 + salt) % 256)).collect();
    Fingerprint::parse(&format!("sha-256 {}", bytes.join(":")))
        .unwrap_or_else(|| Fingerprint::parse("sha-256 00").unwrap_or_else(|| unreachable!()))
}

impl SimNet {
    /// An empty network.
    pub fn new(seed: u64, config: Config, faults: Faults) -> Self {
        Self {
            now_ms: 1_764_000_000_000,
            nodes: Vec::new(),
            faults,
            partitioned: BTreeSet::new(),
            tamper: None,
            config,
            rng: ChaCha20Rng::seed_from_u64(seed),
            in_flight: Vec::new(),
            links: BTreeMap::new(),
            epoch: 0,
            remote_fp_override: BTreeMap::new(),
            bytes_sent: 0,
            frames_sent: 0,
        }
    }

    fn seed(&mut self) -> [u8; 32] {
        let mut s = [0u8; 32];
        self.rng.fill_bytes(&mut s);
        s
    }

    /// Adds a device running `engine` (for tests that build engines themselves).
    pub fn push_engine(&mut self, engine: Engine) -> usize {
        self.push(engine)
    }

    fn push(&mut self, engine: Engine) -> usize {
        let i = self.nodes.len();
        self.nodes.push(SimNode {
            engine: Some(engine),
            storage: BTreeMap::new(),
            unflushed: Vec::new(),
            fingerprint: fingerprint(i, 0),
            acknowledged: BTreeSet::new(),
            events: Vec::new(),
            instant_storage: true,
            clock_offset_ms: 0,
        });
        i
    }

    /// Adds devices rebuilt from stored records (identity record and the rest, per device).
    pub fn load_nodes(&mut self, identities: &[Vec<u8>], records: &[Vec<(RecordKey, Vec<u8>)>]) {
        for (identity, records) in identities.iter().zip(records) {
            let seed = self.seed();
            let engine = Engine::load(self.config.clone(), identity, records.clone(), seed, self.now_ms)
                .unwrap_or_else(|e| panic!("cannot load a stored device: {e}"));
            let i = self.push(engine);
            let node = &mut self.nodes[i];
            node.storage = records.iter().cloned().collect();
            node.storage.insert(RecordKey::Identity, identity.clone());
        }
    }

    /// Adds the first device of a new identity.
    pub fn add_founder(&mut self, name: &str) -> usize {
        let seed = self.seed();
        let engine =
            Engine::create_identity(self.config.clone(), name, seed, self.now_ms).unwrap_or_else(|e| panic!("{e}"));
        self.push(engine)
    }

    /// Adds a device that will join with a pairing code from `sponsor`, pairs it over a fresh
    /// connection, confirms on the sponsor, and waits until it is enrolled.
    pub fn add_paired(&mut self, sponsor: usize, name: &str) -> usize {
        let now = self.now_ms;
        let code = self.engine(sponsor).new_pairing_code(now).unwrap_or_else(|e| panic!("{e}"));
        let seed = self.seed();
        let engine = Engine::join(self.config.clone(), code, name, seed, now);
        let joiner = self.push(engine);
        self.connect(sponsor, joiner);
        for _ in 0..200 {
            self.run_for(20);
            let request = self.nodes[sponsor].events.iter().find_map(|e| match e {
                EngineEvent::PairingRequest { peer, .. } => Some(*peer),
                _ => None,
            });
            if let Some(peer) = request {
                self.nodes[sponsor].events.retain(|e| !matches!(e, EngineEvent::PairingRequest { .. }));
                let now = self.now_ms;
                self.engine(sponsor).confirm_pairing(peer, true, now).unwrap_or_else(|e| panic!("{e}"));
            }
            if self.nodes[joiner].engine.as_ref().is_some_and(|e| e.state().is_some()) {
                self.run_for(100);
                return joiner;
            }
        }
        panic!("pairing did not complete");
    }

    /// The engine of node `i`.
    pub fn engine(&mut self, i: usize) -> &mut Engine {
        self.nodes[i].engine.as_mut().unwrap_or_else(|| panic!("node {i} is down"))
    }

    fn peer_key(&self, other: usize, epoch: u64) -> PeerKey {
        (epoch << 8) | other as u64
    }

    /// Opens a connection between `a` and `b`.
    pub fn connect(&mut self, a: usize, b: usize) {
        let pair = (a.min(b), a.max(b));
        if self.links.contains_key(&pair) || self.nodes[a].engine.is_none() || self.nodes[b].engine.is_none() {
            return;
        }
        self.epoch += 1;
        let epoch = self.epoch;
        self.links.insert(pair, epoch);
        for (me, other) in [(a, b), (b, a)] {
            let local = self.nodes[me].fingerprint.clone();
            let remote = self
                .remote_fp_override
                .get(&(me, other))
                .cloned()
                .unwrap_or_else(|| self.nodes[other].fingerprint.clone());
            let key = self.peer_key(other, epoch);
            let now = self.now_ms + self.nodes[me].clock_offset_ms;
            if let Some(e) = self.nodes[me].engine.as_mut() {
                e.handle_peer_up(key, local, remote, now);
            }
        }
    }

    /// Closes the connection between `a` and `b`.
    pub fn disconnect(&mut self, a: usize, b: usize) {
        let pair = (a.min(b), a.max(b));
        if let Some(epoch) = self.links.remove(&pair) {
            for (me, other) in [(a, b), (b, a)] {
                let key = self.peer_key(other, epoch);
                if let Some(e) = self.nodes[me].engine.as_mut() {
                    e.handle_peer_down(key);
                }
            }
        }
    }

    /// Connects every pair of live, enrolled-or-joining nodes not partitioned apart.
    pub fn connect_all(&mut self) {
        let n = self.nodes.len();
        for a in 0..n {
            for b in a + 1..n {
                if !self.partitioned.contains(&(a, b)) {
                    self.connect(a, b);
                }
            }
        }
    }

    /// Cuts `a` and `b` apart (closing their connection) until `heal`.
    pub fn partition(&mut self, a: usize, b: usize) {
        self.partitioned.insert((a.min(b), a.max(b)));
        self.disconnect(a, b);
    }

    /// Removes every partition and reconnects everyone.
    pub fn heal(&mut self) {
        self.partitioned.clear();
        self.connect_all();
    }

    /// Crashes node `i`: whatever was not durable is lost.
    pub fn crash(&mut self, i: usize) {
        let pairs: Vec<(usize, usize)> = self.links.keys().filter(|(a, b)| *a == i || *b == i).copied().collect();
        for (a, b) in pairs {
            self.disconnect(a, b);
        }
        self.nodes[i].engine = None;
        self.nodes[i].unflushed.clear();
        self.in_flight.retain(|f| f.to != i);
    }

    /// Restarts node `i` from its durable records.
    pub fn restart(&mut self, i: usize) {
        let seed = self.seed();
        let node = &mut self.nodes[i];
        let identity = node.storage.get(&RecordKey::Identity).cloned().unwrap_or_default();
        let records: Vec<(RecordKey, Vec<u8>)> =
            node.storage.iter().filter(|(k, _)| **k != RecordKey::Identity).map(|(k, v)| (*k, v.clone())).collect();
        let engine = Engine::load(self.config.clone(), &identity, records, seed, self.now_ms + node.clock_offset_ms)
            .unwrap_or_else(|e| panic!("node {i} cannot load its own storage: {e}"));
        node.engine = Some(engine);
    }

    /// Makes every pending storage batch of node `i` durable.
    pub fn flush(&mut self, i: usize) {
        let batches = std::mem::take(&mut self.nodes[i].unflushed);
        for batch in batches {
            self.commit(i, batch);
        }
    }

    fn commit(&mut self, i: usize, batch: StorageBatch) {
        let node = &mut self.nodes[i];
        for (key, bytes) in batch.puts {
            node.storage.insert(key, bytes);
        }
        if let Some(e) = node.engine.as_mut() {
            e.handle_storage_done(batch.id);
        }
    }

    fn drain(&mut self, i: usize) {
        loop {
            let Some(engine) = self.nodes[i].engine.as_mut() else { return };
            let mut progressed = false;
            let mut transmits: Vec<Transmit> = Vec::new();
            while let Some(t) = engine.poll_transmit() {
                transmits.push(t);
            }
            let mut batches = Vec::new();
            while let Some(b) = engine.poll_storage() {
                batches.push(b);
            }
            let mut events = Vec::new();
            while let Some(e) = engine.poll_event() {
                events.push(e);
            }
            let peers: Vec<PeerKey> = transmits.iter().map(|t| t.peer).collect::<BTreeSet<_>>().into_iter().collect();
            for p in peers {
                engine.handle_drained(p);
            }
            progressed |= !transmits.is_empty() || !batches.is_empty() || !events.is_empty();
            for t in transmits {
                self.send(i, t);
            }
            for b in batches {
                if self.nodes[i].instant_storage {
                    self.commit(i, b);
                } else {
                    self.nodes[i].unflushed.push(b);
                }
            }
            for e in events {
                if let EngineEvent::Committed(ids) = &e {
                    self.nodes[i].acknowledged.extend(ids.iter().copied());
                }
                self.nodes[i].events.push(e);
            }
            if !progressed {
                return;
            }
        }
    }

    fn send(&mut self, from: usize, t: Transmit) {
        let to = (t.peer & 0xff) as usize;
        let epoch = t.peer >> 8;
        let pair = (from.min(to), from.max(to));
        if self.links.get(&pair) != Some(&epoch) || self.partitioned.contains(&pair) {
            return;
        }
        self.frames_sent += 1;
        self.bytes_sent += t.frame.len() as u64;
        let frame = match self.tamper.as_mut() {
            Some(tamper) => match tamper(from, to, t.frame) {
                Some(f) => f,
                None => return,
            },
            None => t.frame,
        };
        if self.rng.next_u64() % 100 < self.faults.loss_percent {
            return;
        }
        let copies = if self.rng.next_u64() % 100 < self.faults.dup_percent { 2 } else { 1 };
        for _ in 0..copies {
            let jitter = if self.faults.jitter_ms > 0 { self.rng.next_u64() % self.faults.jitter_ms } else { 0 };
            let peer = self.peer_key(from, epoch);
            self.in_flight.push(InFlight {
                at_ms: self.now_ms + self.faults.latency_ms + jitter,
                to,
                peer,
                frame: frame.clone(),
            });
        }
    }

    /// Delivers `frame` to `to` as if `from` sent it on their open connection (an attacker on the
    /// path, or a misbehaving device). Returns whether a connection was open.
    pub fn inject(&mut self, from: usize, to: usize, frame: Vec<u8>) -> bool {
        let pair = (from.min(to), from.max(to));
        let Some(epoch) = self.links.get(&pair).copied() else { return false };
        let peer = self.peer_key(from, epoch);
        self.in_flight.push(InFlight { at_ms: self.now_ms, to, peer, frame });
        true
    }

    /// Advances virtual time by `ms`, delivering frames and firing timers as they fall due.
    pub fn run_for(&mut self, ms: u64) {
        let end = self.now_ms + ms;
        loop {
            for i in 0..self.nodes.len() {
                self.drain(i);
            }
            let next_frame = self.in_flight.iter().map(|f| f.at_ms).min();
            let next_timer = self
                .nodes
                .iter()
                .filter_map(|n| {
                    n.engine.as_ref().and_then(|e| e.poll_timeout().map(|t| t.saturating_sub(n.clock_offset_ms)))
                })
                .min();
            let next = [next_frame, next_timer].into_iter().flatten().min().unwrap_or(end).max(self.now_ms);
            if next > end {
                self.now_ms = end;
                self.tick_all();
                return;
            }
            self.now_ms = next;
            let (due, rest): (Vec<InFlight>, Vec<InFlight>) =
                std::mem::take(&mut self.in_flight).into_iter().partition(|f| f.at_ms <= next);
            self.in_flight = rest;
            for f in due {
                let now = self.now_ms + self.nodes[f.to].clock_offset_ms;
                if let Some(e) = self.nodes[f.to].engine.as_mut() {
                    e.handle_frame(f.peer, &f.frame, now);
                }
            }
            self.tick_all();
            if next == end {
                for i in 0..self.nodes.len() {
                    self.drain(i);
                }
                return;
            }
        }
    }

    fn tick_all(&mut self) {
        for node in &mut self.nodes {
            let now = self.now_ms + node.clock_offset_ms;
            if let Some(e) = node.engine.as_mut() {
                e.handle_timeout(now);
            }
        }
    }

    /// Whether every live, enrolled node holds the same envelopes (every chain at the same head)
    /// and the same encoded state, with no local change waiting to be sealed.
    pub fn converged(&self) -> bool {
        type Heads = Vec<(crate::identity::DeviceId, u64)>;
        let states: Vec<(Heads, Vec<u8>)> = self
            .nodes
            .iter()
            .filter_map(|n| n.engine.as_ref().and_then(|e| e.state()))
            .map(|s| (s.chains().heads().map(|(d, n)| (*d, n)).collect(), s.encode_state()))
            .collect();
        // A local change not yet sealed (a commit window is open) is in its replica but in no
        // envelope: not converged until it is sealed and sent.
        let sealed =
            self.nodes.iter().filter_map(|n| n.engine.as_ref().and_then(|e| e.state())).all(|s| s.unsealed_len() == 0);
        sealed && states.windows(2).all(|w| w[0] == w[1])
    }

    /// Connections currently open.
    pub fn links(&self) -> usize {
        self.links.len()
    }
}
