//! The signaling hub: which endpoints are in which topics, and routing signals between them.
//!
//! Endpoints are local (a browser tab's WebSocket, the in-process native peer) or remote (known
//! through a relay link to another bridge). The hub introduces every two endpoints that share a
//! topic (`peer` messages to the local ones) and forwards `relay` messages by endpoint ID. It
//! never looks inside a payload, and it holds no sync data or keys.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use kathon_core::signaling::{RtcSignal, Signal};
use tokio::sync::mpsc;

/// Most endpoints (local and remote) a hub tracks.
pub const MAX_ENDPOINTS: usize = 1024;

/// Where a local endpoint's messages go.
pub type Outbox = mpsc::Sender<Signal>;

/// A link to another bridge: where to send what concerns its endpoints.
pub type LinkId = u64;

/// Messages for a relay link.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum LinkMessage {
    /// The sender's local endpoints and their topics (the whole set, replacing the previous).
    Endpoints {
        /// `(endpoint, topics)`.
        endpoints: Vec<(String, Vec<String>)>,
    },
    /// A signal between endpoints.
    Relay {
        /// Sender endpoint.
        from: String,
        /// Recipient endpoint.
        to: String,
        /// Payload.
        payload: RtcSignal,
    },
}

struct Local {
    topics: Vec<String>,
    outbox: Outbox,
}

struct Remote {
    link: LinkId,
    topics: Vec<String>,
}

#[derive(Default)]
struct State {
    local: BTreeMap<String, Local>,
    remote: BTreeMap<String, Remote>,
    links: BTreeMap<LinkId, mpsc::Sender<LinkMessage>>,
    /// Pairs already introduced, so an endpoint hears of another once.
    introduced: BTreeSet<(String, String)>,
}

/// The hub, shared by the WebSocket handlers, the relay links and the native peer.
#[derive(Clone, Default)]
pub struct Hub {
    state: Arc<Mutex<State>>,
    changed: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (local, remote) = self.counts();
        f.debug_struct("Hub").field("local", &local).field("remote", &remote).finish()
    }
}

fn shares(a: &[String], b: &[String]) -> Option<String> {
    a.iter().find(|t| b.contains(t)).cloned()
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Resolves when the set of local topics changes (so discovery re-announces), including a
    /// change made while nobody was waiting: discovery's loop awaits this only between sends,
    /// and a change it missed would never be announced.
    pub async fn topics_changed(&self) {
        self.changed.notified().await;
    }

    /// Wakes `topics_changed`. `notify_one` keeps a permit when nobody waits (several changes
    /// before the next wait coalesce into one); `notify_waiters` would drop it.
    fn topics_did_change(&self) {
        self.changed.notify_one();
    }

    /// `(local, remote)` endpoint counts.
    pub fn counts(&self) -> (usize, usize) {
        let s = self.lock();
        (s.local.len(), s.remote.len())
    }

    /// Every topic a local endpoint is in.
    pub fn local_topics(&self) -> Vec<String> {
        let s = self.lock();
        let mut topics: Vec<String> = s.local.values().flat_map(|l| l.topics.iter().cloned()).collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// A local endpoint joins (or re-joins with new topics). Returns an error message to send it
    /// if refused.
    pub fn join(&self, endpoint: &str, topics: Vec<String>, outbox: Outbox) -> Result<(), String> {
        let mut s = self.lock();
        if !s.local.contains_key(endpoint) && s.local.len().saturating_add(s.remote.len()) >= MAX_ENDPOINTS {
            return Err("too many endpoints".into());
        }
        if s.remote.contains_key(endpoint) {
            return Err("endpoint ID in use".into());
        }
        s.local.insert(endpoint.to_owned(), Local { topics: topics.clone(), outbox });
        // Introduce it to every endpoint it shares a topic with.
        let mut notices: Vec<(Outbox, Signal)> = Vec::new();
        let others: Vec<(String, Option<Outbox>, Vec<String>)> = s
            .local
            .iter()
            .filter(|(e, _)| e.as_str() != endpoint)
            .map(|(e, l)| (e.clone(), Some(l.outbox.clone()), l.topics.clone()))
            .chain(s.remote.iter().map(|(e, r)| (e.clone(), None, r.topics.clone())))
            .collect();
        for (other, other_outbox, other_topics) in others {
            let Some(topic) = shares(&topics, &other_topics) else { continue };
            let pair = if endpoint < other.as_str() {
                (endpoint.to_owned(), other.clone())
            } else {
                (other.clone(), endpoint.to_owned())
            };
            if !s.introduced.insert(pair) {
                continue;
            }
            if let Some(o) = s.local.get(endpoint) {
                notices.push((o.outbox.clone(), Signal::Peer { endpoint: other.clone(), topic: topic.clone() }));
            }
            if let Some(o) = other_outbox {
                notices.push((o, Signal::Peer { endpoint: endpoint.to_owned(), topic }));
            }
        }
        drop(s);
        for (outbox, signal) in notices {
            let _ = outbox.try_send(signal);
        }
        self.advertise();
        self.topics_did_change();
        Ok(())
    }

    /// A local endpoint leaves.
    pub fn leave(&self, endpoint: &str) {
        let mut s = self.lock();
        if s.local.remove(endpoint).is_none() {
            return;
        }
        s.introduced.retain(|(a, b)| a != endpoint && b != endpoint);
        let outboxes: Vec<Outbox> = s.local.values().map(|l| l.outbox.clone()).collect();
        drop(s);
        for o in outboxes {
            let _ = o.try_send(Signal::PeerLeft { endpoint: endpoint.to_owned() });
        }
        self.advertise();
        self.topics_did_change();
    }

    /// A signal from local endpoint `from` to `to`.
    pub fn relay(&self, from: &str, to: &str, payload: RtcSignal) {
        let s = self.lock();
        if !s.local.contains_key(from) {
            return;
        }
        if let Some(local) = s.local.get(to) {
            let _ = local.outbox.try_send(Signal::Relay { from: from.to_owned(), to: to.to_owned(), payload });
        } else if let Some(remote) = s.remote.get(to)
            && let Some(link) = s.links.get(&remote.link)
        {
            let _ = link.try_send(LinkMessage::Relay { from: from.to_owned(), to: to.to_owned(), payload });
        }
    }

    /// A relay link to another bridge opened.
    pub fn link_up(&self, link: LinkId, tx: mpsc::Sender<LinkMessage>) {
        let mut s = self.lock();
        s.links.insert(link, tx.clone());
        let endpoints = advertised(&s);
        drop(s);
        let _ = tx.try_send(LinkMessage::Endpoints { endpoints });
    }

    /// A relay link closed: its endpoints are gone.
    pub fn link_down(&self, link: LinkId) {
        let mut s = self.lock();
        s.links.remove(&link);
        let gone: Vec<String> = s.remote.iter().filter(|(_, r)| r.link == link).map(|(e, _)| e.clone()).collect();
        for e in &gone {
            s.remote.remove(e);
        }
        s.introduced.retain(|(a, b)| !gone.contains(a) && !gone.contains(b));
        let outboxes: Vec<Outbox> = s.local.values().map(|l| l.outbox.clone()).collect();
        drop(s);
        for e in gone {
            for o in &outboxes {
                let _ = o.try_send(Signal::PeerLeft { endpoint: e.clone() });
            }
        }
    }

    /// A message from a relay link.
    pub fn from_link(&self, link: LinkId, message: LinkMessage) {
        match message {
            LinkMessage::Endpoints { endpoints } => {
                let mut s = self.lock();
                s.remote.retain(|_, r| r.link != link);
                let mut notices: Vec<(Outbox, Signal)> = Vec::new();
                for (endpoint, topics) in endpoints.into_iter().take(MAX_ENDPOINTS) {
                    if s.local.contains_key(&endpoint) || s.remote.len() >= MAX_ENDPOINTS {
                        continue;
                    }
                    let locals: Vec<(String, Outbox, Vec<String>)> =
                        s.local.iter().map(|(e, l)| (e.clone(), l.outbox.clone(), l.topics.clone())).collect();
                    for (local, outbox, local_topics) in locals {
                        let Some(topic) = shares(&topics, &local_topics) else { continue };
                        let pair = if local < endpoint {
                            (local.clone(), endpoint.clone())
                        } else {
                            (endpoint.clone(), local.clone())
                        };
                        if s.introduced.insert(pair) {
                            notices.push((outbox, Signal::Peer { endpoint: endpoint.clone(), topic }));
                        }
                    }
                    s.remote.insert(endpoint, Remote { link, topics });
                }
                drop(s);
                for (outbox, signal) in notices {
                    let _ = outbox.try_send(signal);
                }
            }
            LinkMessage::Relay { from, to, payload } => {
                let s = self.lock();
                // Only from an endpoint this link announced, to a local one.
                if s.remote.get(&from).is_some_and(|r| r.link == link)
                    && let Some(local) = s.local.get(&to)
                {
                    let _ = local.outbox.try_send(Signal::Relay { from, to, payload });
                }
            }
        }
    }

    /// Sends every link the current list of local endpoints.
    fn advertise(&self) {
        let s = self.lock();
        let endpoints = advertised(&s);
        let links: Vec<mpsc::Sender<LinkMessage>> = s.links.values().cloned().collect();
        drop(s);
        for link in links {
            let _ = link.try_send(LinkMessage::Endpoints { endpoints: endpoints.clone() });
        }
    }
}

fn advertised(s: &State) -> Vec<(String, Vec<String>)> {
    s.local.iter().map(|(e, l)| (e.clone(), l.topics.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flake this fixes: `pair code` on one machine while its discovery loop was sending a
    /// packet (not waiting) left the pairing topic unannounced, and the test timed out waiting for
    /// a pairing request (seen once in CI, under load).
    #[tokio::test]
    async fn a_topic_change_while_nobody_waits_is_not_lost() {
        let hub = Hub::default();
        let (outbox, _inbox) = mpsc::channel(8);
        assert!(hub.join("endpoint", vec!["topic".into()], outbox).is_ok());
        let woke = tokio::time::timeout(std::time::Duration::from_secs(5), hub.topics_changed()).await;
        assert!(woke.is_ok(), "a change made before anyone waited must still wake the next wait");
        hub.leave("endpoint");
        hub.leave("never joined");
        let woke = tokio::time::timeout(std::time::Duration::from_secs(5), hub.topics_changed()).await;
        assert!(woke.is_ok());
    }
}
