//! LAN discovery between bridges, sans-IO: the packet format and the announce/answer/expire
//! state machine. The bridge moves the packets over UDP multicast (administratively scoped IPv4
//! and link-local IPv6, TTL / hop limit 1).
//!
//! A bridge announces its ID, the port of its relay, and the **topics** its endpoints joined —
//! opaque, day-rotating keyed hashes (see [`crate::signaling`]): bridges whose endpoints share a
//! topic connect their relays, and people on the LAN learn nothing but that some bridges are
//! there. Announcements are hints only: they cause no trust (the engine's handshake
//! authenticates), so a spoofed one costs at most a refused connection.
//!
//! Rules:
//!
//! * announce at start (with a query, so others answer at once), whenever a new bridge is heard,
//!   and every 30 s;
//! * answer a query with an announcement — to the multicast group, never to the (unvalidated)
//!   source address — and never send more than three times the bytes of the queries received
//!   (a byte budget), at most one answer per 50 ms;
//! * keep at most 256 bridges, forget one not heard for 90 s;
//! * drop and count anything malformed.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::codec::{Reader, Writer};
use crate::error::DecodeError;

const MAGIC: [u8; 4] = *b"KSD1";
const KIND_ANNOUNCE: u8 = 1;
const KIND_QUERY: u8 = 2;
/// Most topics in one packet.
pub const MAX_TOPICS: u8 = 16;
/// Largest packet.
pub const MAX_PACKET: usize = 4 + 1 + 16 + 2 + 1 + 32 * MAX_TOPICS as usize;
/// How often a bridge re-announces itself.
pub const ANNOUNCE_INTERVAL_MS: u64 = 30_000;
/// How long a bridge not heard from is remembered.
pub const EXPIRY_MS: u64 = 90_000;
/// Most bridges remembered.
pub const MAX_CACHE: usize = 256;
/// Most bridges remembered from one IP address. A machine runs one bridge, a few at most; without
/// this cap one host announcing invented bridges pushed the real ones out of the cache (seen in
/// the LAN flood test: a newcomer found, then evicted by 1,000 forged bridges, and not heard of
/// again until its next periodic announcement 30 s later).
pub const MAX_PER_ADDRESS: usize = 4;
const MIN_REPLY_GAP_MS: u64 = 50;
const AMPLIFICATION: usize = 3;
const BUDGET_CAP: usize = 64 * 1024;

/// A bridge's random ID (fresh per process).
pub type BridgeId = [u8; 16];
/// A rendezvous topic.
pub type Topic = [u8; 32];

/// A discovery packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// "I am here; my relay listens on this port; my endpoints are in these topics."
    Announce {
        /// Sender.
        bridge: BridgeId,
        /// Relay port.
        relay_port: u16,
        /// Topics.
        topics: Vec<Topic>,
    },
    /// "Who is here?" — answered with announcements.
    Query {
        /// Sender.
        bridge: BridgeId,
    },
}

impl Packet {
    /// The encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(MAX_PACKET);
        w.raw(&MAGIC);
        match self {
            Packet::Announce { bridge, relay_port, topics } => {
                w.u8(KIND_ANNOUNCE).raw(bridge).u16(*relay_port).u8(u8::try_from(topics.len()).unwrap_or(0));
                for t in topics.iter().take(MAX_TOPICS.into()) {
                    w.raw(t);
                }
            }
            Packet::Query { bridge } => {
                w.u8(KIND_QUERY).raw(bridge);
            }
        }
        w.into_bytes()
    }

    /// Decodes untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_PACKET {
            return Err(DecodeError::TooLarge {
                what: "discovery packet",
                len: bytes.len() as u64,
                max: MAX_PACKET as u64,
            });
        }
        let mut r = Reader::new(bytes);
        if r.array::<4>("discovery magic")? != MAGIC {
            return Err(DecodeError::UnknownTag { what: "discovery magic", tag: 0 });
        }
        let packet = match r.u8("discovery kind")? {
            KIND_ANNOUNCE => {
                let bridge = r.array("bridge id")?;
                let relay_port = r.u16("relay port")?;
                if relay_port == 0 {
                    return Err(DecodeError::NonCanonical { what: "relay port", reason: "zero" });
                }
                let n = r.u8("topic count")?;
                if n > MAX_TOPICS {
                    return Err(DecodeError::TooLarge { what: "topics", len: n.into(), max: MAX_TOPICS.into() });
                }
                let mut topics = Vec::with_capacity(n.into());
                for _ in 0..n {
                    topics.push(r.array("topic")?);
                }
                Packet::Announce { bridge, relay_port, topics }
            }
            KIND_QUERY => Packet::Query { bridge: r.array("bridge id")? },
            tag => return Err(DecodeError::UnknownTag { what: "discovery kind", tag }),
        };
        r.finish("discovery packet")?;
        Ok(packet)
    }
}

/// A bridge heard on the LAN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// Where it announced from (the relay is at this IP and `relay_port`).
    pub addr: SocketAddr,
    /// Its relay port.
    pub relay_port: u16,
    /// Its topics.
    pub topics: Vec<Topic>,
    /// When last heard.
    pub seen_ms: u64,
}

/// Counters, for the status page and the flood tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiscoveryStats {
    /// Packets accepted.
    pub accepted: u64,
    /// Packets dropped as malformed.
    pub malformed: u64,
    /// Packets dropped as spoofed or our own.
    pub rejected: u64,
    /// Answers not sent because of the byte budget or the rate limit.
    pub throttled: u64,
    /// Packets sent.
    pub sent: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
}

/// What a handled packet changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoveryEvent {
    /// A bridge was heard for the first time (or changed its topics).
    Found(BridgeId, Neighbour),
}

/// One bridge's discovery state.
#[derive(Debug)]
pub struct Discovery {
    me: BridgeId,
    relay_port: u16,
    topics: Vec<Topic>,
    cache: BTreeMap<BridgeId, Neighbour>,
    announce_due: bool,
    /// Our own topics changed: announce regardless of the answer budget (no one asked, so it
    /// cannot amplify anything), only rate-limited.
    own_change_due: bool,
    query_due: bool,
    next_periodic_ms: u64,
    last_reply_ms: u64,
    budget: usize,
    stats: DiscoveryStats,
}

impl Discovery {
    /// A bridge that just started: it will query and announce at once.
    pub fn new(me: BridgeId, relay_port: u16, now_ms: u64) -> Self {
        Self {
            me,
            relay_port,
            topics: Vec::new(),
            cache: BTreeMap::new(),
            announce_due: true,
            own_change_due: false,
            query_due: true,
            next_periodic_ms: now_ms.saturating_add(ANNOUNCE_INTERVAL_MS),
            last_reply_ms: 0,
            budget: 0,
            stats: DiscoveryStats::default(),
        }
    }

    /// The topics of this bridge's endpoints changed: announce them.
    pub fn set_topics(&mut self, mut topics: Vec<Topic>) {
        topics.sort_unstable();
        topics.dedup();
        topics.truncate(MAX_TOPICS.into());
        if topics != self.topics {
            self.topics = topics;
            self.own_change_due = true;
        }
    }

    /// This bridge's topics.
    pub fn topics(&self) -> &[Topic] {
        &self.topics
    }

    /// A packet arrived from `from` (already checked by the driver to come from the local link).
    pub fn handle_packet(&mut self, bytes: &[u8], from: SocketAddr, now_ms: u64) -> Option<DiscoveryEvent> {
        self.stats.bytes_in = self.stats.bytes_in.saturating_add(bytes.len() as u64);
        let packet = match Packet::decode(bytes) {
            Ok(p) => p,
            Err(_) => {
                self.stats.malformed = self.stats.malformed.saturating_add(1);
                return None;
            }
        };
        match packet {
            Packet::Announce { bridge, .. } | Packet::Query { bridge } if bridge == self.me => {
                // Our own, looped back.
                None
            }
            Packet::Query { .. } => {
                self.stats.accepted = self.stats.accepted.saturating_add(1);
                self.budget = self.budget.saturating_add(bytes.len().saturating_mul(AMPLIFICATION)).min(BUDGET_CAP);
                self.announce_due = true;
                None
            }
            Packet::Announce { bridge, relay_port, topics } => {
                self.stats.accepted = self.stats.accepted.saturating_add(1);
                self.budget = self.budget.saturating_add(bytes.len().saturating_mul(AMPLIFICATION)).min(BUDGET_CAP);
                let neighbour = Neighbour { addr: from, relay_port, topics, seen_ms: now_ms };
                let changed = self.cache.get(&bridge).is_none_or(|old| {
                    old.topics != neighbour.topics || old.addr != neighbour.addr || old.relay_port != relay_port
                });
                if changed && !self.cache.contains_key(&bridge) {
                    // A newcomer: let it find us now, not in 30 s.
                    self.announce_due = true;
                    // Room for it: from its own address first (see MAX_PER_ADDRESS), else the
                    // longest unheard.
                    let same_address = || self.cache.iter().filter(|(_, n)| n.addr.ip() == from.ip());
                    let evict = if same_address().count() >= MAX_PER_ADDRESS {
                        same_address().min_by_key(|(_, n)| n.seen_ms).map(|(b, _)| *b)
                    } else if self.cache.len() >= MAX_CACHE {
                        self.cache.iter().min_by_key(|(_, n)| n.seen_ms).map(|(b, _)| *b)
                    } else {
                        None
                    };
                    if let Some(evicted) = evict {
                        self.cache.remove(&evicted);
                    }
                }
                self.cache.insert(bridge, neighbour.clone());
                changed.then_some(DiscoveryEvent::Found(bridge, neighbour))
            }
        }
    }

    /// A packet rejected by the driver (wrong source, our own address).
    pub fn count_rejected(&mut self) {
        self.stats.rejected = self.stats.rejected.saturating_add(1);
    }

    /// The next packet to send to the group.
    pub fn poll_transmit(&mut self, now_ms: u64) -> Option<Vec<u8>> {
        if self.query_due {
            self.query_due = false;
            return Some(self.sent(Packet::Query { bridge: self.me }.encode()));
        }
        let periodic = now_ms >= self.next_periodic_ms;
        if self.own_change_due && now_ms.saturating_sub(self.last_reply_ms) >= MIN_REPLY_GAP_MS {
            self.own_change_due = false;
            self.announce_due = false;
            self.last_reply_ms = now_ms;
            let packet =
                Packet::Announce { bridge: self.me, relay_port: self.relay_port, topics: self.topics.clone() }.encode();
            return Some(self.sent(packet));
        }
        if self.announce_due || periodic {
            let packet =
                Packet::Announce { bridge: self.me, relay_port: self.relay_port, topics: self.topics.clone() }.encode();
            if !periodic {
                // Answers and newcomer greetings: rate-limited and within the byte budget.
                if now_ms.saturating_sub(self.last_reply_ms) < MIN_REPLY_GAP_MS {
                    return None;
                }
                if self.budget < packet.len() && self.last_reply_ms != 0 {
                    self.announce_due = false;
                    self.stats.throttled = self.stats.throttled.saturating_add(1);
                    return None;
                }
                self.budget = self.budget.saturating_sub(packet.len());
            } else {
                self.next_periodic_ms = now_ms.saturating_add(ANNOUNCE_INTERVAL_MS);
            }
            self.announce_due = false;
            self.last_reply_ms = now_ms;
            return Some(self.sent(packet));
        }
        None
    }

    fn sent(&mut self, packet: Vec<u8>) -> Vec<u8> {
        self.stats.sent = self.stats.sent.saturating_add(1);
        self.stats.bytes_out = self.stats.bytes_out.saturating_add(packet.len() as u64);
        packet
    }

    /// When to call again.
    pub fn poll_timeout(&self) -> u64 {
        if self.announce_due || self.query_due || self.own_change_due {
            self.last_reply_ms.saturating_add(MIN_REPLY_GAP_MS)
        } else {
            self.next_periodic_ms
        }
    }

    /// Forgets bridges not heard for [`EXPIRY_MS`].
    pub fn expire(&mut self, now_ms: u64) {
        self.cache.retain(|_, n| now_ms.saturating_sub(n.seen_ms) < EXPIRY_MS);
    }

    /// Bridges heard recently.
    pub fn neighbours(&self) -> impl Iterator<Item = (&BridgeId, &Neighbour)> {
        self.cache.iter()
    }

    /// Counters.
    pub fn stats(&self) -> DiscoveryStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 7711))
    }

    #[test]
    fn two_bridges_find_each_other_at_once() {
        let mut a = Discovery::new([1; 16], 9001, 0);
        let mut b = Discovery::new([2; 16], 9002, 0);
        a.set_topics(vec![[7; 32]]);
        // A starts: query, announce.
        let qa = a.poll_transmit(0).unwrap();
        let aa = a.poll_transmit(60).unwrap();
        assert!(b.handle_packet(&qa, addr(1), 1).is_none());
        let found = b.handle_packet(&aa, addr(1), 61);
        assert!(matches!(found, Some(DiscoveryEvent::Found(id, n)) if id == [1; 16] && n.relay_port == 9001));
        // B greets the newcomer without waiting for its 30 s timer.
        let _ = b.poll_transmit(62); // B's own start-up query
        let ab = b.poll_transmit(200).unwrap();
        assert!(matches!(a.handle_packet(&ab, addr(2), 201), Some(DiscoveryEvent::Found(..))));
    }

    #[test]
    fn a_change_of_our_own_topics_is_announced_even_with_no_answer_budget() {
        let mut d = Discovery::new([1; 16], 9001, 0);
        let mut t = 0;
        while d.poll_transmit(t).is_some() {
            t += 100;
        }
        // A query arrives and is answered: the budget is spent.
        let query = Packet::Query { bridge: [9; 16] }.encode();
        d.handle_packet(&query, addr(9), t);
        t += 100;
        while d.poll_transmit(t).is_some() {
            t += 100;
        }
        d.set_topics(vec![[5; 32]]);
        let packet = d.poll_transmit(t + 100).expect("our own change is announced at once");
        assert!(matches!(Packet::decode(&packet), Ok(Packet::Announce { topics, .. }) if topics == vec![[5; 32]]));
    }

    #[test]
    fn answers_stay_within_three_times_what_came_in() {
        let mut d = Discovery::new([1; 16], 9001, 0);
        d.set_topics((0..16u8).map(|i| [i; 32]).collect());
        while d.poll_transmit(0).is_some() {}
        let query = Packet::Query { bridge: [9; 16] }.encode();
        let mut now = 100;
        for _ in 0..10_000 {
            d.handle_packet(&query, addr(9), now);
            while d.poll_transmit(now).is_some() {}
            now += 60;
        }
        let s = d.stats();
        // Answers stay within the budget; on top come the periodic announcements (one per 30 s
        // over these 600 s) and the start-up ones.
        let periodic = (600 / 30 + 2) * MAX_PACKET as u64;
        assert!(s.bytes_out <= 3 * s.bytes_in + periodic, "{s:?}");
        assert!(s.throttled > 0, "{s:?}");
    }

    #[test]
    fn the_cache_is_bounded_and_expires() {
        let mut d = Discovery::new([1; 16], 9001, 0);
        for i in 0..1000u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            let p = Packet::Announce { bridge: id, relay_port: 1, topics: vec![] }.encode();
            let from = SocketAddr::from(([10, 1, (i / 250) as u8, (i % 250) as u8], 7711));
            d.handle_packet(&p, from, u64::from(i));
        }
        assert_eq!(d.neighbours().count(), MAX_CACHE);
        d.expire(1000 + EXPIRY_MS);
        assert_eq!(d.neighbours().count(), 0);
    }

    /// One host announcing a thousand invented bridges keeps at most four in the cache and
    /// pushes out no bridge of another host, whenever that one was heard.
    #[test]
    fn one_host_cannot_flood_the_others_out_of_the_cache() {
        let mut d = Discovery::new([1; 16], 9001, 0);
        let real = Packet::Announce { bridge: [7; 16], relay_port: 2, topics: vec![] }.encode();
        assert!(d.handle_packet(&real, addr(4), 0).is_some());
        for i in 0..1000u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            let forged = Packet::Announce { bridge: id, relay_port: 1, topics: vec![] }.encode();
            // From ever-changing ports of one address.
            d.handle_packet(&forged, SocketAddr::from(([10, 0, 0, 3], 40_000 + (i % 1000) as u16)), 1 + u64::from(i));
        }
        assert!(d.neighbours().any(|(b, _)| *b == [7; 16]), "the real bridge was pushed out");
        let from_attacker = d.neighbours().filter(|(_, n)| n.addr.ip() == addr(3).ip()).count();
        assert_eq!(from_attacker, MAX_PER_ADDRESS);
        assert_eq!(d.neighbours().count(), 1 + MAX_PER_ADDRESS);
    }

    #[test]
    fn malformed_packets_are_counted_not_trusted() {
        let mut d = Discovery::new([1; 16], 9001, 0);
        for bad in [&b""[..], b"KSD1", b"XXXX\x01", &[0u8; 600]] {
            assert!(d.handle_packet(bad, addr(2), 0).is_none());
        }
        let mut zero_port = Packet::Announce { bridge: [5; 16], relay_port: 1, topics: vec![] }.encode();
        zero_port[21] = 0;
        zero_port[22] = 0;
        assert!(d.handle_packet(&zero_port, addr(2), 0).is_none());
        assert_eq!(d.stats().malformed, 5);
    }
}
