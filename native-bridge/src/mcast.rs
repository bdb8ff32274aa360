//! Discovery over UDP multicast with `socket2`: the driver of `kathon_core::discovery`.
//!
//! An administratively scoped IPv4 group (`239.255.70.77`) and, when an interface index is
//! given, a link-local IPv6 group (`ff02::7a7a:4b53`), both with TTL / hop limit 1, so nothing
//! leaves the link. Packets from a source that is not on a local link (not private, link-local or
//! loopback) are dropped and counted as spoofed.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use kathon_core::discovery::{BridgeId, Discovery, DiscoveryEvent, DiscoveryStats, MAX_PACKET, Neighbour};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::hub::Hub;

/// Where to discover.
#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    /// Address of the LAN interface to use for IPv4 (`None`: the default interface).
    pub interface_v4: Option<Ipv4Addr>,
    /// Index of the LAN interface for IPv6 (`None`: no IPv6 discovery).
    pub interface_v6: Option<u32>,
    /// The IPv4 group.
    pub group_v4: Ipv4Addr,
    /// The IPv6 group.
    pub group_v6: Ipv6Addr,
    /// The UDP port.
    pub port: u16,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            interface_v4: None,
            interface_v6: None,
            group_v4: Ipv4Addr::new(239, 255, 70, 77),
            group_v6: Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0x7a7a, 0x4b53),
            port: 7712,
        }
    }
}

/// What the status page shows.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DiscoveryStatus {
    /// Counters.
    pub stats: DiscoveryStats,
    /// Bridges heard: `(bridge ID hex, address, relay port, topics, ms since heard)`.
    pub neighbours: Vec<NeighbourStatus>,
    /// Per bridge ID, how long after this bridge started it was first heard, in ms.
    pub first_heard_ms: BTreeMap<String, u64>,
}

/// One bridge heard.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NeighbourStatus {
    /// Its ID, hex.
    pub bridge: String,
    /// Where from.
    pub addr: String,
    /// Its relay port.
    pub relay_port: u16,
    /// How many topics it announced.
    pub topics: usize,
}

fn on_link(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_link_local() || v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_unicast_link_local() || v6.is_loopback(),
    }
}

fn socket_v4(cfg: &DiscoveryConfig) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, cfg.port)).into())?;
    let iface = cfg.interface_v4.unwrap_or(Ipv4Addr::UNSPECIFIED);
    s.join_multicast_v4(&cfg.group_v4, &iface)?;
    s.set_multicast_if_v4(&iface)?;
    s.set_multicast_ttl_v4(1)?;
    s.set_multicast_loop_v4(true)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

fn socket_v6(cfg: &DiscoveryConfig, index: u32) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(true)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, cfg.port)).into())?;
    s.join_multicast_v6(&cfg.group_v6, index)?;
    s.set_multicast_if_v6(index)?;
    s.set_multicast_hops_v6(1)?;
    s.set_multicast_loop_v6(true)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

fn topics_of(hub: &Hub) -> Vec<[u8; 32]> {
    hub.local_topics()
        .iter()
        .filter_map(|t| data_encoding::HEXLOWER.decode(t.as_bytes()).ok().and_then(|b| b.try_into().ok()))
        .collect()
}

/// Runs discovery until `stop`; bridges found go to `found`, status to `status`.
pub async fn run(
    cfg: DiscoveryConfig,
    hub: Hub,
    me: BridgeId,
    relay_port: u16,
    found: mpsc::Sender<(BridgeId, Neighbour)>,
    status: watch::Sender<Option<DiscoveryStatus>>,
    mut stop: watch::Receiver<bool>,
) {
    let v4 = match socket_v4(&cfg) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "IPv4 discovery unavailable");
            None
        }
    };
    let v6 = cfg.interface_v6.and_then(|i| match socket_v6(&cfg, i) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "IPv6 discovery unavailable");
            None
        }
    });
    let started = std::time::Instant::now();
    let mut d = Discovery::new(me, relay_port, crate::now_ms());
    d.set_topics(topics_of(&hub));
    let group_v4 = SocketAddr::V4(SocketAddrV4::new(cfg.group_v4, cfg.port));
    let group_v6 = cfg.interface_v6.map(|i| SocketAddr::V6(SocketAddrV6::new(cfg.group_v6, cfg.port, 0, i)));
    let mut first_heard: BTreeMap<String, u64> = BTreeMap::new();
    let (mut buf4, mut buf6) = ([0u8; MAX_PACKET + 1], [0u8; MAX_PACKET + 1]);
    loop {
        // Send what is due.
        let now = crate::now_ms();
        while let Some(packet) = d.poll_transmit(now) {
            if let Some(s) = &v4 {
                let _ = s.send_to(&packet, group_v4).await;
            }
            if let (Some(s), Some(g)) = (&v6, group_v6) {
                let _ = s.send_to(&packet, g).await;
            }
        }
        d.expire(now);
        let report = DiscoveryStatus {
            stats: d.stats(),
            neighbours: d
                .neighbours()
                .map(|(id, n)| NeighbourStatus {
                    bridge: data_encoding::HEXLOWER.encode(id),
                    addr: n.addr.ip().to_string(),
                    relay_port: n.relay_port,
                    topics: n.topics.len(),
                })
                .collect(),
            first_heard_ms: first_heard.clone(),
        };
        let _ = status.send(Some(report));
        let wait = Duration::from_millis(d.poll_timeout().saturating_sub(crate::now_ms()).clamp(5, 5_000));
        let received = tokio::select! {
            () = crate::stopped(&mut stop) => return,
            _ = tokio::time::sleep(wait) => None,
            () = hub.topics_changed() => {
                d.set_topics(topics_of(&hub));
                // Our topics changed: every known bridge may now share one.
                for (id, n) in d.neighbours() {
                    let _ = found.try_send((*id, n.clone()));
                }
                None
            }
            r = recv(v4.as_ref(), &mut buf4) => r,
            r = recv(v6.as_ref(), &mut buf6) => r,
        };
        if let Some((len, from, which)) = received {
            let bytes = if which == 4 { buf4.get(..len) } else { buf6.get(..len) };
            let Some(bytes) = bytes else { continue };
            if !on_link(from.ip()) {
                d.count_rejected();
                continue;
            }
            if let Some(DiscoveryEvent::Found(id, neighbour)) = d.handle_packet(bytes, from, crate::now_ms()) {
                let hex = data_encoding::HEXLOWER.encode(&id);
                first_heard
                    .entry(hex.clone())
                    .or_insert_with(|| u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
                tracing::info!(bridge = %hex, %from, "bridge found");
                let _ = found.try_send((id, neighbour));
            }
        }
    }
}

async fn recv(socket: Option<&UdpSocket>, buf: &mut [u8]) -> Option<(usize, SocketAddr, u8)> {
    match socket {
        Some(s) => match s.recv_from(buf).await {
            Ok((len, from)) => Some((len, from, if from.is_ipv4() { 4 } else { 6 })),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}
