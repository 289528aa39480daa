//! BGP mode (`announce.proto` step 9): the node peers with routers and advertises the LoadBalancer
//! prefixes the controller's `BgpConfig` lists, so that every eligible node draws traffic at once (ECMP).
//!
//! [`BgpSpeaker`] is what the control loop owns: [`BgpSpeaker::apply`] takes each new `BgpConfig` and
//! starts, stops or restarts one task per peer (`peer.rs`) and hands each its routes;
//! [`BgpSpeaker::states`] gives `Report.bgp_sessions`; [`BgpSpeaker::stop`] ends every session on the
//! speaker's shutdown. Below it, pure parts: the wire codec ([`message`]), the session state machine
//! ([`session`]) and the Adj-RIB-Out with its UPDATE computation ([`rib`]).
//!
//! BFD is not part of this module: a [`ForwardingPaths`] given with [`BgpSpeaker::with_forwarding`]
//! hands each peer's task a `watch` of its forwarding path ([`PathState`]); a path that was up and goes
//! down while the session is Established tears it down ("BFD down"). A path that never came up does not
//! keep the session down (BFD may come up after BGP), as in FRR.

mod md5;
pub mod message;
mod peer;
pub mod rib;
pub mod session;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use proto::announce::v1::{BgpConfig, BgpPeer, BgpSessionState, Problem};
use tokio::sync::{Notify, watch};

use self::message::LargeCommunity;
use self::peer::{PeerHandle, PeerSettings};
use self::rib::Route;
use self::session::{SessionConfig, Stop};
use crate::metrics::Metrics;

/// BGP's well-known port.
const BGP_PORT: u16 = 179;
/// `BgpPeer.hold_time_s` of 0.
const DEFAULT_HOLD: u16 = 90;
/// `BgpPeer.connect_retry_s` of 0.
const DEFAULT_CONNECT_RETRY: Duration = Duration::from_secs(5);
/// How long [`BgpSpeaker::stop`] waits for the sessions' last words.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The forwarding path to a peer as BFD sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathState {
    /// The path works; `false` while Established tears the session down.
    pub up: bool,
    /// BFD's state name for `BgpSessionState.bfd_state` (Down, Init, Up, AdminDown).
    pub label: &'static str,
}

/// Where per-peer forwarding-path signals come from (BFD, wired in at merge).
pub trait ForwardingPaths: Send + Sync {
    /// A watch of the path to `peer`, or `None` if the peer has no BFD.
    fn watch(&self, peer: &BgpPeer) -> Option<watch::Receiver<PathState>>;
}

/// The node's BGP sessions, owned by the control loop.
pub struct BgpSpeaker {
    metrics: Metrics,
    peers: BTreeMap<String, Running>,
    /// Peers that had a task in this process: the Restart-State bit is set only on a peer's first one.
    started: BTreeSet<String>,
    problems: Vec<Problem>,
    changed: Arc<Notify>,
    forwarding: Option<Arc<dyn ForwardingPaths>>,
    generation: Option<u64>,
}

struct Running {
    config: BgpPeer,
    handle: PeerHandle,
}

impl BgpSpeaker {
    /// A speaker with no sessions.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            peers: BTreeMap::new(),
            started: BTreeSet::new(),
            problems: Vec::new(),
            changed: Arc::new(Notify::new()),
            forwarding: None,
            generation: None,
        }
    }

    /// Takes forwarding-path signals (BFD) from `paths` for sessions started from now on.
    pub fn with_forwarding(mut self, paths: Arc<dyn ForwardingPaths>) -> Self {
        self.forwarding = Some(paths);
        self
    }

    /// Makes the sessions and routes those of `config`: peers gone are de-configured (Cease), peers whose
    /// settings changed are restarted, new ones started, and every peer gets its current routes.
    /// Must run inside a tokio runtime.
    pub fn apply(&mut self, config: &BgpConfig) {
        self.generation = Some(config.generation);
        let mut problems = Vec::new();
        let routes = parse_routes(&config.routes, &mut problems);
        let wanted: BTreeMap<&str, &BgpPeer> =
            config.peers.iter().map(|p| (p.name.as_str(), p)).collect();
        let gone: Vec<String> = self
            .peers
            .keys()
            .filter(|name| !wanted.contains_key(name.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(mut running) = self.peers.remove(&name) {
                tracing::info!(peer = %name, "BGP peer removed from the configuration");
                running.handle.stop(Stop::Deconfigured);
            }
        }
        for (name, peer) in wanted {
            let for_peer: Arc<Vec<Route>> = Arc::new(
                routes
                    .iter()
                    .filter(|(peers, _)| peers.is_empty() || peers.iter().any(|p| p == name))
                    .map(|(_, route)| route.clone())
                    .collect(),
            );
            if let Some(running) = self.peers.get(name)
                && running.config == *peer
            {
                running.handle.routes.send_if_modified(|current| {
                    let differs = **current != *for_peer;
                    if differs {
                        *current = for_peer.clone();
                    }
                    differs
                });
                continue;
            }
            if let Some(mut old) = self.peers.remove(name) {
                tracing::info!(peer = %name, "BGP peer settings changed; restarting the session");
                old.handle.stop(Stop::Reset);
            }
            let settings = match self.resolve(peer) {
                Ok(settings) => settings,
                Err(message) => {
                    tracing::warn!(peer = %name, problem = %message, "BGP peer not started");
                    problems.push(Problem {
                        address: peer.address.clone(),
                        interface: String::new(),
                        message: format!("BGP peer {name}: {message}"),
                    });
                    continue;
                }
            };
            self.started.insert(name.to_owned());
            let path = self.forwarding.as_ref().and_then(|f| f.watch(peer));
            let handle = PeerHandle::start(
                settings,
                for_peer,
                path,
                self.changed.clone(),
                self.metrics.clone(),
            );
            self.peers.insert(
                name.to_owned(),
                Running {
                    config: peer.clone(),
                    handle,
                },
            );
        }
        self.problems = problems;
        self.changed.notify_one();
    }

    /// One state per peer of the current configuration, for `Report.bgp_sessions`.
    pub fn states(&self) -> Vec<BgpSessionState> {
        self.peers
            .iter()
            .map(|(name, running)| {
                let status = running.handle.status();
                BgpSessionState {
                    peer: name.clone(),
                    state: status.state.map_or("Idle", session::State::name).to_owned(),
                    advertised: status.advertised,
                    bfd_state: status.bfd_state,
                    last_error: status.last_error,
                }
            })
            .collect()
    }

    /// What keeps routes or peers from being advertised (bad configuration, no next hop of a family).
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = self.problems.clone();
        for (name, running) in &self.peers {
            for message in running.handle.status().problems {
                problems.push(Problem {
                    address: running.config.address.clone(),
                    interface: String::new(),
                    message: format!("BGP peer {name}: {message}"),
                });
            }
        }
        problems
    }

    /// The generation of the configuration applied last.
    pub fn generation(&self) -> Option<u64> {
        self.generation
    }

    /// Notified when some session's state, advertised count or problems changed: the control loop waits
    /// on it (a clone, so that the wait borrows nothing of the loop's state) and then reports.
    pub fn change_signal(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// Ends every session as the process stops: silently where Graceful Restart was negotiated (the
    /// routers keep the routes as stale until we are back), with Cease / Administrative Shutdown
    /// otherwise (the routers withdraw them at once). Waits at most a few seconds.
    pub async fn stop(&mut self) {
        let stopping: Vec<_> = std::mem::take(&mut self.peers)
            .into_values()
            .map(|running| running.handle.stop_and_wait(Stop::Shutdown, STOP_GRACE))
            .collect();
        futures::future::join_all(stopping).await;
    }

    fn resolve(&self, peer: &BgpPeer) -> Result<PeerSettings, String> {
        let ip: IpAddr = peer
            .address
            .parse()
            .map_err(|_| format!("address {:?} is not an IP address", peer.address))?;
        let port = match peer.port {
            0 => BGP_PORT,
            p => u16::try_from(p).map_err(|_| format!("port {p} out of range"))?,
        };
        if peer.my_asn == 0 || peer.peer_asn == 0 {
            return Err("AS numbers must not be 0".to_owned());
        }
        let hold_time = match peer.hold_time_s {
            0 => DEFAULT_HOLD,
            1 | 2 => return Err("hold time must be 0 or at least 3 s".to_owned()),
            h => u16::try_from(h).map_err(|_| format!("hold time {h} s out of range"))?,
        };
        let router_id = if peer.router_id.is_empty() {
            first_ipv4().ok_or("no router_id and no IPv4 address on the node")?
        } else {
            peer.router_id
                .parse()
                .map_err(|_| format!("router_id {:?} is not a dotted quad", peer.router_id))?
        };
        let source = if peer.source_address.is_empty() {
            None
        } else {
            Some(peer.source_address.parse::<IpAddr>().map_err(|_| {
                format!(
                    "source_address {:?} is not an IP address",
                    peer.source_address
                )
            })?)
        };
        if peer.password.len() > md5::MAX_KEY {
            return Err(format!("password longer than {} bytes", md5::MAX_KEY));
        }
        let ibgp = peer.my_asn == peer.peer_asn;
        let graceful_restart = (peer.graceful_restart_s > 0)
            .then(|| u16::try_from(peer.graceful_restart_s.min(0x0fff)).unwrap_or(0x0fff));
        Ok(PeerSettings {
            name: peer.name.clone(),
            address: SocketAddr::new(ip, port),
            source,
            password: (!peer.password.is_empty()).then(|| peer.password.as_bytes().to_vec()),
            // GTSM-style 255 for iBGP and multihop; 1 keeps a single-hop eBGP session on the link.
            ttl: if ibgp || peer.ebgp_multihop { 255 } else { 1 },
            session: SessionConfig {
                my_asn: peer.my_asn,
                peer_asn: peer.peer_asn,
                router_id,
                hold_time,
                keepalive: (peer.keepalive_s > 0)
                    .then(|| Duration::from_secs(u64::from(peer.keepalive_s))),
                connect_retry: match peer.connect_retry_s {
                    0 => DEFAULT_CONNECT_RETRY,
                    s => Duration::from_secs(u64::from(s)),
                },
                graceful_restart,
                // Approximation of "restarted with routes": the first session of a peer in this process.
                // A router that kept nothing of ours ignores the bit; one that kept stale routes learns
                // that we restarted (RFC 4724 §4.1) and need not wait for our End-of-RIB to send its own.
                restart_state: graceful_restart.is_some() && !self.started.contains(&peer.name),
            },
        })
    }
}

/// Routes of the config with the peers they go to; bad prefixes become problems.
fn parse_routes(
    routes: &[proto::announce::v1::BgpRoute],
    problems: &mut Vec<Problem>,
) -> Vec<(Vec<String>, Route)> {
    let mut out = Vec::new();
    for route in routes {
        let prefix = route
            .prefix
            .parse::<IpNet>()
            .or_else(|_| route.prefix.parse::<IpAddr>().map(IpNet::from));
        let Ok(prefix) = prefix else {
            problems.push(Problem {
                address: route.prefix.clone(),
                interface: String::new(),
                message: format!("BGP route {:?} is not a prefix", route.prefix),
            });
            continue;
        };
        out.push((
            route.peers.clone(),
            Route {
                prefix,
                communities: route.communities.clone(),
                large_communities: route
                    .large_communities
                    .iter()
                    .map(|c| LargeCommunity {
                        global_admin: c.global_admin,
                        local_data_1: c.local_data_1,
                        local_data_2: c.local_data_2,
                    })
                    .collect(),
                local_pref: route.local_pref,
            },
        ));
    }
    out
}

/// The node's first non-loopback IPv4 address, the default BGP identifier.
fn first_ipv4() -> Option<Ipv4Addr> {
    pnet::datalink::interfaces()
        .into_iter()
        .flat_map(|i| i.ips)
        .find_map(|n| match n.ip() {
            IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_link_local() => Some(v4),
            _ => None,
        })
}
