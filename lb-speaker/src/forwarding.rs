//! BFD as the BGP speaker's signal of each peer's forwarding path: the seam between [`crate::bgp`] and
//! [`crate::bfd`]. A peer with a BFD profile gets a BFD session to its address; when that session, once Up,
//! goes down, the peer's BGP session is torn down at once instead of after its hold time. The router runs
//! its own BFD and withdraws this node's routes just as fast when the node is the one that went away.
//!
//! The BFD runner (its UDP port 3784) is started with the first peer that asks for BFD, not before: a node
//! without BFD peers listens on nothing more.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use ops::CancellationToken;
use proto::announce::v1::BgpPeer;
use tokio::sync::watch;

use crate::bfd::{Bfd, BfdSettings, Profile};
use crate::bgp::{ForwardingPaths, PathState};
use crate::metrics::Metrics;

/// A BFD session's (peer, local) addresses.
type SessionKey = (IpAddr, Option<IpAddr>);

/// BFD sessions for the BGP peers that ask for them.
pub struct BfdPaths {
    metrics: Metrics,
    /// The runner's handle once bound; the error if binding failed (reported once per peer).
    bfd: Mutex<Option<Result<Bfd, String>>>,
    /// The newest user of each BFD session: a restarted BGP peer takes its session over, and the old
    /// peer's ending must not remove it.
    users: Arc<Mutex<HashMap<SessionKey, u64>>>,
    stop: CancellationToken,
}

impl BfdPaths {
    /// Paths whose runner, once started, stops with `stop`.
    pub fn new(metrics: Metrics, stop: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            metrics,
            bfd: Mutex::new(None),
            users: Arc::new(Mutex::new(HashMap::new())),
            stop,
        })
    }

    /// The runner's handle, binding its sockets on first use.
    fn bfd(&self) -> Result<Bfd, String> {
        let mut bfd = self.bfd.lock().unwrap_or_else(PoisonError::into_inner);
        bfd.get_or_insert_with(|| {
            let (handle, runner) = Bfd::bind(BfdSettings::default(), self.metrics.clone())
                .map_err(|e| e.to_string())?;
            tokio::spawn(runner.run(self.stop.clone()));
            tracing::info!("BFD started");
            Ok(handle)
        })
        .clone()
    }
}

impl ForwardingPaths for BfdPaths {
    fn watch(&self, peer: &BgpPeer) -> Option<watch::Receiver<PathState>> {
        let profile = peer.bfd.as_ref()?;
        let profile = match Profile::from_proto(profile) {
            Ok(profile) => profile,
            Err(error) => {
                tracing::warn!(peer = peer.name, %error, "BFD profile refused; peering without BFD");
                return None;
            }
        };
        let Ok(address) = peer.address.parse::<IpAddr>() else {
            return None;
        };
        let local = peer.source_address.parse::<IpAddr>().ok();
        let bfd = match self.bfd() {
            Ok(bfd) => bfd,
            Err(error) => {
                tracing::warn!(
                    peer = peer.name,
                    error,
                    "BFD cannot run; peering without BFD"
                );
                return None;
            }
        };
        let (paths, receiver) = watch::channel(PathState {
            up: false,
            label: "Down",
        });
        let name = peer.name.clone();
        let key = (address, local);
        let me = {
            let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
            let next = users.get(&key).map_or(1, |n| n + 1);
            users.insert(key, next);
            next
        };
        let users = Arc::clone(&self.users);
        tokio::spawn(async move {
            let mut states = match bfd.add(address, local, profile).await {
                Ok(states) => states,
                Err(error) => {
                    tracing::warn!(peer = name, %error, "no BFD session; peering without BFD");
                    return;
                }
            };
            loop {
                let state = *states.borrow_and_update();
                paths.send_replace(PathState {
                    up: state.is_up(),
                    label: state.state.as_str(),
                });
                tokio::select! {
                    changed = states.changed() => if changed.is_err() { return },
                    // The BGP session is gone (peer removed or changed): so is its BFD session.
                    () = paths.closed() => {
                        let last = {
                            let mut users = users.lock().unwrap_or_else(PoisonError::into_inner);
                            let last = users.get(&key) == Some(&me);
                            if last {
                                users.remove(&key);
                            }
                            last
                        };
                        if last && let Err(error) = bfd.remove(address, local).await {
                            tracing::debug!(peer = name, %error, "BFD session not removed");
                        }
                        return;
                    }
                }
            }
        });
        Some(receiver)
    }
}
