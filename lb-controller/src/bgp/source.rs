//! The BGP objects as the controller reads them: a watch per kind, and after each pass the step from what
//! they hold (and what the pass decided) to every node's [`pb::BgpConfig`] and the problems to report.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use ops::CancellationToken;
use ops::kube::{Watched, watch_kind};
use proto::announce::v1 as pb;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::check;
use super::crd::{BFDProfile, BGPAdvertisement, BGPPeer};
use super::plan::{self, World};
use crate::controller::on_world_change;
use crate::plan::Planner;
use crate::pool::IPPool;
use crate::schedule::Change;

/// A problem with a BGP object, for a Warning Event on it: (object, reason, message).
pub type Problem = (ObjectReference, &'static str, String);

/// Watches of the BGP kinds.
pub struct Sources {
    peers: Watched<BGPPeer>,
    advertisements: Watched<BGPAdvertisement>,
    profiles: Watched<BFDProfile>,
}

impl Sources {
    /// Starts a watch per kind; a change to what a pass reads of an object calls for a full pass, as
    /// for pools.
    pub(crate) fn start(
        client: &Client,
        changes: &mpsc::UnboundedSender<(Change, Instant)>,
        shutdown: &CancellationToken,
    ) -> Self {
        Self {
            peers: watch_kind(
                Api::all(client.clone()),
                watcher::Config::default(),
                on_world_change(changes, |o: &BGPPeer| serde_json::to_string(&o.spec).ok()),
                shutdown.clone(),
            ),
            advertisements: watch_kind(
                Api::all(client.clone()),
                watcher::Config::default(),
                on_world_change(changes, |o: &BGPAdvertisement| {
                    serde_json::to_string(&o.spec).ok()
                }),
                shutdown.clone(),
            ),
            profiles: watch_kind(
                Api::all(client.clone()),
                watcher::Config::default(),
                on_world_change(changes, |o: &BFDProfile| {
                    serde_json::to_string(&o.spec).ok()
                }),
                shutdown.clone(),
            ),
        }
    }

    /// Whether every watch has listed.
    pub fn listed(&self) -> bool {
        self.peers.is_fresh() && self.advertisements.is_fresh() && self.profiles.is_fresh()
    }

    /// Every node's BGP configuration after the pass `planner` just made, and what is wrong with the
    /// objects. Without any usable peer this costs nothing and every node's configuration is empty.
    pub fn desired(
        &self,
        planner: &Planner,
        pools: &[Arc<IPPool>],
    ) -> (BTreeMap<String, pb::BgpConfig>, Vec<Problem>) {
        let mut problems = Vec::new();
        let mut report = |object: ObjectReference, reason, message: String| {
            problems.push((object, reason, message));
        };
        let mut bfd_profiles = BTreeMap::new();
        for profile in self.profiles.store().state() {
            let name = profile.metadata.name.clone().unwrap_or_default();
            match check::bfd_profile(&profile.spec) {
                Ok(checked) => {
                    for note in checked.ignored {
                        report(profile.object_ref(&()), "UnsupportedField", note);
                    }
                    bfd_profiles.insert(name, checked.def);
                }
                Err(error) => report(
                    profile.object_ref(&()),
                    "InvalidConfiguration",
                    error.to_string(),
                ),
            }
        }
        let mut peers = Vec::new();
        for peer in self.peers.store().state() {
            let name = peer.metadata.name.clone().unwrap_or_default();
            match check::peer(&name, &peer.spec) {
                Ok(checked) => {
                    for note in checked.ignored {
                        report(peer.object_ref(&()), "UnsupportedField", note);
                    }
                    if let Some(profile) = checked.def.bfd_profile.as_ref()
                        && !bfd_profiles.contains_key(profile)
                    {
                        report(
                            peer.object_ref(&()),
                            "InvalidConfiguration",
                            format!(
                                "spec.bfdProfile: no usable BFDProfile {profile:?}; peering without BFD"
                            ),
                        );
                    }
                    peers.push(checked.def);
                }
                Err(error) => report(
                    peer.object_ref(&()),
                    "InvalidConfiguration",
                    error.to_string(),
                ),
            }
        }
        if peers.is_empty() {
            return (BTreeMap::new(), problems);
        }
        let mut advertisements = Vec::new();
        for advertisement in self.advertisements.store().state() {
            let name = advertisement.metadata.name.clone().unwrap_or_default();
            match check::advertisement(&name, &advertisement.spec, &[]) {
                Ok(checked) => {
                    for peer in checked
                        .def
                        .peers
                        .iter()
                        .filter(|p| !peers.iter().any(|d| d.name == **p))
                    {
                        report(
                            advertisement.object_ref(&()),
                            "InvalidConfiguration",
                            format!("spec.peers: no usable BGPPeer {peer:?}"),
                        );
                    }
                    advertisements.push(checked.def);
                }
                Err(error) => report(
                    advertisement.object_ref(&()),
                    "InvalidConfiguration",
                    error.to_string(),
                ),
            }
        }
        let pool_labels: HashMap<String, BTreeMap<String, String>> = pools
            .iter()
            .map(|p| {
                (
                    p.metadata.name.clone().unwrap_or_default(),
                    p.metadata.labels.clone().unwrap_or_default(),
                )
            })
            .collect();
        let (nodes, held) = planner.bgp_view();
        let desired = plan::desired(
            &World {
                peers: &peers,
                bfd_profiles: &bfd_profiles,
                advertisements: &advertisements,
                nodes,
                pool_labels: &pool_labels,
            },
            held,
        );
        (desired, problems)
    }
}
