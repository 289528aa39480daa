//! The BGP objects as the controller reads them: a watch per kind, and after each pass the step from what
//! they hold (and what the pass decided) to every node's [`pb::BgpConfig`] and the problems to report.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{Api, Client, Resource};
use ops::CancellationToken;
use ops::kube::Watched;
use proto::announce::v1 as pb;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::check;
use super::crd::{
    BFDProfile, BFDProfileSpec, BGPAdvertisement, BGPAdvertisementSpec, BGPPeer, BGPPeerSpec,
    CommunityAlias,
};
use super::plan::{self, World};
use crate::controller::{spec_json, watch_world};
use crate::plan::Planner;
use crate::pool::IPPool;
use crate::schedule::Change;

/// Whether the apiserver serves the BGP kinds (their CRDs are installed). `helm upgrade` does not install CRDs
/// a chart gained since its first install: a controller upgraded without them must still serve layer 2, not
/// wait for a list that never comes.
pub async fn installed(client: &Client) -> bool {
    let wanted = [
        "bgppeers",
        "bgpadvertisements",
        "bfdprofiles",
        "bgpsessionstates",
    ];
    match kube::discovery::group(client, "groundwork.dev").await {
        Ok(group) => {
            let served: Vec<String> = group
                .recommended_resources()
                .into_iter()
                .map(|(resource, _)| resource.plural)
                .collect();
            wanted.iter().all(|w| served.iter().any(|s| s == w))
        }
        Err(_) => false,
    }
}

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
            peers: watch_world(
                Api::all(client.clone()),
                changes,
                |o: &BGPPeer| spec_json(&o.spec),
                shutdown,
            ),
            advertisements: watch_world(
                Api::all(client.clone()),
                changes,
                |o: &BGPAdvertisement| spec_json(&o.spec),
                shutdown,
            ),
            profiles: watch_world(
                Api::all(client.clone()),
                changes,
                |o: &BFDProfile| spec_json(&o.spec),
                shutdown,
            ),
        }
    }

    /// Whether every watch has listed.
    pub fn listed(&self) -> bool {
        self.peers.is_fresh() && self.advertisements.is_fresh() && self.profiles.is_fresh()
    }

    /// Our objects, as the planner's next step takes them.
    pub fn objects(&self) -> Objects {
        Objects {
            peers: self
                .peers
                .store()
                .state()
                .iter()
                .map(|o| Entry::new(o.object_ref(&()), &o.metadata.name, o.spec.clone()))
                .collect(),
            advertisements: self
                .advertisements
                .store()
                .state()
                .iter()
                .map(|o| Entry::new(o.object_ref(&()), &o.metadata.name, o.spec.clone()))
                .collect(),
            profiles: self
                .profiles
                .store()
                .state()
                .iter()
                .map(|o| Entry::new(o.object_ref(&()), &o.metadata.name, o.spec.clone()))
                .collect(),
            aliases: Vec::new(),
        }
    }
}

/// One object of a BGP kind, ours or MetalLB's.
#[derive(Debug, Clone)]
pub struct Entry<T> {
    /// For Events.
    pub object: ObjectReference,
    /// Its name, as other objects refer to it.
    pub name: String,
    /// Its spec.
    pub spec: T,
}

impl<T> Entry<T> {
    /// An entry for the object `object` named `name`.
    pub fn new(object: ObjectReference, name: &Option<String>, spec: T) -> Self {
        Self {
            object,
            name: name.clone().unwrap_or_default(),
            spec,
        }
    }
}

/// Every BGP object to take into account.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// Peers.
    pub peers: Vec<Entry<BGPPeerSpec>>,
    /// Advertisements.
    pub advertisements: Vec<Entry<BGPAdvertisementSpec>>,
    /// BFD profiles.
    pub profiles: Vec<Entry<BFDProfileSpec>>,
    /// MetalLB's community aliases.
    pub aliases: Vec<CommunityAlias>,
}

impl Objects {
    /// Adds `other`'s objects after ours (a name both use is reported; the first keeps it).
    pub fn extend(&mut self, other: Self) {
        self.peers.extend(other.peers);
        self.advertisements.extend(other.advertisements);
        self.profiles.extend(other.profiles);
        self.aliases.extend(other.aliases);
    }
}

/// The BGP objects that checked out, with the pool labels advertisements select by: what only a full pass
/// (the only kind a change to them calls for) needs to rebuild.
#[derive(Debug, Default)]
pub struct Checked {
    peers: Vec<check::PeerDef>,
    profiles: BTreeMap<String, pb::BfdProfile>,
    advertisements: Vec<check::AdvertisementDef>,
    pool_labels: HashMap<String, BTreeMap<String, String>>,
}

/// Checks `objects`; what is wrong with them goes to `problems`.
pub fn check(
    objects: &Objects,
    pool_labels: HashMap<String, BTreeMap<String, String>>,
    problems: &mut Vec<Problem>,
) -> Checked {
    let profiles = profiles(objects, problems);
    let peers = peers(objects, &profiles, problems);
    let advertisements = if peers.is_empty() {
        Vec::new()
    } else {
        advertisements(objects, &peers, problems)
    };
    Checked {
        peers,
        profiles,
        advertisements,
        pool_labels,
    }
}

/// Every node's BGP configuration after the pass `planner` just made. Without any usable peer this costs
/// nothing and every node's configuration is empty.
pub fn desired(checked: &Checked, planner: &Planner) -> BTreeMap<String, Arc<pb::BgpConfig>> {
    if checked.peers.is_empty() {
        return BTreeMap::new();
    }
    let (nodes, held) = planner.bgp_view();
    plan::desired(
        &World {
            peers: &checked.peers,
            bfd_profiles: &checked.profiles,
            advertisements: &checked.advertisements,
            nodes,
            pool_labels: &checked.pool_labels,
        },
        held,
    )
}

fn report(
    problems: &mut Vec<Problem>,
    object: &ObjectReference,
    reason: &'static str,
    message: String,
) {
    problems.push((object.clone(), reason, message));
}

/// The usable BFD profiles by name (the first of a name wins).
fn profiles(objects: &Objects, problems: &mut Vec<Problem>) -> BTreeMap<String, pb::BfdProfile> {
    let mut profiles = BTreeMap::new();
    for profile in &objects.profiles {
        match check::bfd_profile(&profile.spec) {
            Ok(checked) => {
                for note in checked.ignored {
                    report(problems, &profile.object, "UnsupportedField", note);
                }
                if profiles.contains_key(&profile.name) {
                    let message = format!(
                        "metadata.name: another BFDProfile is named {:?}; this one is not used",
                        profile.name
                    );
                    report(problems, &profile.object, "InvalidConfiguration", message);
                } else {
                    profiles.insert(profile.name.clone(), checked.def);
                }
            }
            Err(error) => report(
                problems,
                &profile.object,
                "InvalidConfiguration",
                error.to_string(),
            ),
        }
    }
    profiles
}

/// The usable peers (the first of a name wins); a missing BFD profile is reported, the peer kept.
fn peers(
    objects: &Objects,
    profiles: &BTreeMap<String, pb::BfdProfile>,
    problems: &mut Vec<Problem>,
) -> Vec<check::PeerDef> {
    let mut peers: Vec<check::PeerDef> = Vec::new();
    for peer in &objects.peers {
        let checked = match check::peer(&peer.name, &peer.spec) {
            Ok(checked) => checked,
            Err(error) => {
                report(
                    problems,
                    &peer.object,
                    "InvalidConfiguration",
                    error.to_string(),
                );
                continue;
            }
        };
        for note in checked.ignored {
            report(problems, &peer.object, "UnsupportedField", note);
        }
        if peers.iter().any(|p| p.name == peer.name) {
            let message = format!(
                "metadata.name: another BGPPeer is named {:?}; this one is not used",
                peer.name
            );
            report(problems, &peer.object, "InvalidConfiguration", message);
            continue;
        }
        if let Some(profile) = checked.def.bfd_profile.as_ref()
            && !profiles.contains_key(profile)
        {
            let message =
                format!("spec.bfdProfile: no usable BFDProfile {profile:?}; peering without BFD");
            report(problems, &peer.object, "InvalidConfiguration", message);
        }
        peers.push(checked.def);
    }
    peers
}

/// The usable advertisements; a peer they name that does not exist is reported.
fn advertisements(
    objects: &Objects,
    peers: &[check::PeerDef],
    problems: &mut Vec<Problem>,
) -> Vec<check::AdvertisementDef> {
    let mut advertisements = Vec::new();
    for advertisement in &objects.advertisements {
        match check::advertisement(&advertisement.name, &advertisement.spec, &objects.aliases) {
            Ok(checked) => {
                for peer in checked
                    .def
                    .peers
                    .iter()
                    .filter(|p| !peers.iter().any(|d| d.name == **p))
                {
                    let message = format!("spec.peers: no usable BGPPeer {peer:?}");
                    report(
                        problems,
                        &advertisement.object,
                        "InvalidConfiguration",
                        message,
                    );
                }
                advertisements.push(checked.def);
            }
            Err(error) => report(
                problems,
                &advertisement.object,
                "InvalidConfiguration",
                error.to_string(),
            ),
        }
    }
    advertisements
}

/// Labels per IPPool name, for `ipAddressPoolSelectors`.
pub fn pool_labels(pools: &[Arc<IPPool>]) -> HashMap<String, BTreeMap<String, String>> {
    pools
        .iter()
        .map(|p| {
            (
                p.metadata.name.clone().unwrap_or_default(),
                p.metadata.labels.clone().unwrap_or_default(),
            )
        })
        .collect()
}
