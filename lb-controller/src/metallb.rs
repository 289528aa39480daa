//! MetalLB's own custom resources (`metallb.io`, as of v0.16), read in place from MetalLB's namespace
//! (`--metallb-namespace`), so a MetalLB user swaps the daemons and keeps their YAML: `IPAddressPool`,
//! `L2Advertisement`, `BGPPeer` (v1beta2), `BGPAdvertisement`, `BFDProfile` and `Community`.
//!
//! The BGP kinds share their spec types with ours (`crate::bgp::crd`). Every field MetalLB has that we do
//! not is collected rather than dropped by serde, and reported as an Event naming it: fields that would
//! narrow what is advertised (`serviceSelectors`) make the object unusable, so nothing is announced that
//! the user did not ask for; the others are used without them.
//!
//! Pools: an `IPAddressPool` is answered by ARP/NDP only when an `L2Advertisement` selects it (from the
//! nodes it selects), as in MetalLB; one no `L2Advertisement` selects is BGP-only. An `IPPool` of the same
//! name wins, as for the legacy ConfigMap.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{Api, Client, CustomResource, Resource};
use ops::CancellationToken;
use ops::kube::Watched;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::bgp::crd::{BFDProfileSpec, BGPAdvertisementSpec, BGPPeerSpec, CommunityAlias};
use crate::bgp::source::{Entry, Objects, Problem};
use crate::controller::{spec_json, watch_world};
use crate::pool::{IPPoolSpec, Layer2, PoolDef, ServiceAllocation, selector_matches};
use crate::schedule::Change;

/// MetalLB's `BGPPeer`: our spec, and whatever else it carries.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug)]
#[kube(
    group = "metallb.io",
    version = "v1beta2",
    kind = "BGPPeer",
    root = "MetalLbBGPPeer",
    namespaced,
    schema = "disabled"
)]
pub struct MetalLbBGPPeerSpec {
    /// The fields we read.
    #[serde(flatten)]
    pub spec: BGPPeerSpec,
    /// Fields we do not know.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// MetalLB's `BGPAdvertisement`.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "BGPAdvertisement",
    root = "MetalLbBGPAdvertisement",
    namespaced,
    schema = "disabled"
)]
pub struct MetalLbBGPAdvertisementSpec {
    /// The fields we read.
    #[serde(flatten)]
    pub spec: BGPAdvertisementSpec,
    /// Fields we do not know (`serviceSelectors`, `asPathPrepend`).
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// MetalLB's `BFDProfile`.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "BFDProfile",
    root = "MetalLbBFDProfile",
    namespaced,
    schema = "disabled"
)]
pub struct MetalLbBFDProfileSpec {
    /// The fields we read.
    #[serde(flatten)]
    pub spec: BFDProfileSpec,
    /// Fields we do not know.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// MetalLB's `Community` aliases.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "Community",
    root = "MetalLbCommunity",
    namespaced,
    schema = "disabled"
)]
pub struct MetalLbCommunitySpec {
    /// `name` -> `value` pairs.
    #[serde(default)]
    pub communities: Vec<CommunityAlias>,
}

/// MetalLB's `IPAddressPool`.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "IPAddressPool",
    root = "MetalLbIPAddressPool",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct MetalLbIPAddressPoolSpec {
    /// CIDRs and ranges.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Whether Services get addresses from it without asking (true when unset).
    #[serde(default)]
    pub auto_assign: Option<bool>,
    /// Skip .0 and .255.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,
    /// Which Services may get its addresses.
    #[serde(default)]
    pub service_allocation: Option<MetalLbServiceAllocation>,
    /// Fields we do not know.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `IPAddressPool.spec.serviceAllocation`.
#[derive(Deserialize, Serialize, Clone, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct MetalLbServiceAllocation {
    /// The order in which pools are tried: not supported (reported).
    #[serde(default)]
    pub priority: Option<i64>,
    /// The rest is ours, field for field.
    #[serde(flatten)]
    pub allocation: ServiceAllocation,
}

/// MetalLB's `L2Advertisement`.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "L2Advertisement",
    root = "MetalLbL2Advertisement",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct MetalLbL2AdvertisementSpec {
    /// Pools by name.
    #[serde(default, rename = "ipAddressPools")]
    pub ip_address_pools: Vec<String>,
    /// Pools by label; with none named or selected, every pool.
    #[serde(default, rename = "ipAddressPoolSelectors")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes that announce (all when empty).
    #[serde(default)]
    pub node_selectors: Vec<LabelSelector>,
    /// Interfaces to announce on (all eligible when empty).
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Fields we do not know (`serviceSelectors`, `preferredNodeSelectors`).
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// Labels per pool name.
pub type PoolLabels = HashMap<String, BTreeMap<String, String>>;

/// Fields that would narrow what is announced: an object carrying one is not used at all.
const NARROWING: [&str; 1] = ["serviceSelectors"];

/// The watches of MetalLB's kinds in its namespace.
pub struct Sources {
    pools: Watched<MetalLbIPAddressPool>,
    l2: Watched<MetalLbL2Advertisement>,
    peers: Watched<MetalLbBGPPeer>,
    advertisements: Watched<MetalLbBGPAdvertisement>,
    profiles: Watched<MetalLbBFDProfile>,
    communities: Watched<MetalLbCommunity>,
}

impl Sources {
    /// Starts a watch per kind in `namespace`; a change calls for a full pass.
    pub(crate) fn start(
        client: &Client,
        namespace: &str,
        changes: &mpsc::UnboundedSender<(Change, Instant)>,
        shutdown: &CancellationToken,
    ) -> Self {
        Self {
            // A pool's labels matter too: advertisements select pools by them.
            pools: watch_world(
                Api::namespaced(client.clone(), namespace),
                changes,
                |o: &MetalLbIPAddressPool| (spec_json(&o.spec), o.metadata.labels.clone()),
                shutdown,
            ),
            l2: watch_world(
                Api::namespaced(client.clone(), namespace),
                changes,
                |o: &MetalLbL2Advertisement| spec_json(&o.spec),
                shutdown,
            ),
            peers: watch_world(
                Api::namespaced(client.clone(), namespace),
                changes,
                |o: &MetalLbBGPPeer| spec_json(&o.spec),
                shutdown,
            ),
            advertisements: watch_world(
                Api::namespaced(client.clone(), namespace),
                changes,
                |o: &MetalLbBGPAdvertisement| spec_json(&o.spec),
                shutdown,
            ),
            profiles: watch_world(
                Api::namespaced(client.clone(), namespace),
                changes,
                |o: &MetalLbBFDProfile| spec_json(&o.spec),
                shutdown,
            ),
            communities: watch_world(
                Api::namespaced(client.clone(), namespace),
                changes,
                |o: &MetalLbCommunity| spec_json(&o.spec),
                shutdown,
            ),
        }
    }

    /// Whether every watch has listed.
    pub fn listed(&self) -> bool {
        self.pools.is_fresh()
            && self.l2.is_fresh()
            && self.peers.is_fresh()
            && self.advertisements.is_fresh()
            && self.profiles.is_fresh()
            && self.communities.is_fresh()
    }

    /// The pools, with their layer-2 announcement from the `L2Advertisement`s, their labels (for
    /// `ipAddressPoolSelectors`), and what is wrong with them.
    pub fn pools(&self) -> (Vec<PoolDef>, PoolLabels, Vec<Problem>) {
        let mut problems = Vec::new();
        let mut l2 = Vec::new();
        for advertisement in self.l2.store().state() {
            let reference = advertisement.object_ref(&());
            if unknown(&reference, &advertisement.spec.other, &mut problems) {
                continue;
            }
            l2.push(advertisement.spec.clone());
        }
        let mut pools = Vec::new();
        let mut labels = HashMap::new();
        for pool in self.pools.store().state() {
            let reference = pool.object_ref(&());
            let name = pool.metadata.name.clone().unwrap_or_default();
            let pool_labels = pool.metadata.labels.clone().unwrap_or_default();
            unknown(&reference, &pool.spec.other, &mut problems);
            match pool_def(&name, &pool.spec, &pool_labels, &l2) {
                Ok((def, notes)) => {
                    for note in notes {
                        problems.push((reference.clone(), "UnsupportedField", note));
                    }
                    pools.push(def);
                    labels.insert(name, pool_labels);
                }
                Err(message) => problems.push((reference, "InvalidConfiguration", message)),
            }
        }
        (pools, labels, problems)
    }

    /// The BGP objects, as `crate::bgp::source` checks ours, with their unknown fields named.
    pub fn bgp_objects(&self, problems: &mut Vec<Problem>) -> Objects {
        let mut objects = Objects::default();
        for peer in self.peers.store().state() {
            let reference = peer.object_ref(&());
            if !unknown(&reference, &peer.spec.other, problems) {
                objects.peers.push(Entry::new(
                    reference,
                    &peer.metadata.name,
                    peer.spec.spec.clone(),
                ));
            }
        }
        for advertisement in self.advertisements.store().state() {
            let reference = advertisement.object_ref(&());
            if !unknown(&reference, &advertisement.spec.other, problems) {
                objects.advertisements.push(Entry::new(
                    reference,
                    &advertisement.metadata.name,
                    advertisement.spec.spec.clone(),
                ));
            }
        }
        for profile in self.profiles.store().state() {
            let reference = profile.object_ref(&());
            if !unknown(&reference, &profile.spec.other, problems) {
                objects.profiles.push(Entry::new(
                    reference,
                    &profile.metadata.name,
                    profile.spec.spec.clone(),
                ));
            }
        }
        for community in self.communities.store().state() {
            objects
                .aliases
                .extend(community.spec.communities.iter().cloned());
        }
        objects
    }
}

/// Reports each field of `other` (set to anything but null or empty) on `object`; true when one of them
/// makes the object unusable.
fn unknown(
    object: &ObjectReference,
    other: &BTreeMap<String, Value>,
    problems: &mut Vec<Problem>,
) -> bool {
    let mut unusable = false;
    for (field, value) in other {
        let empty = match value {
            Value::Null => true,
            Value::Array(items) => items.is_empty(),
            Value::Object(map) => map.is_empty(),
            Value::String(text) => text.is_empty(),
            _ => false,
        };
        if empty {
            continue;
        }
        if NARROWING.contains(&field.as_str()) {
            unusable = true;
            problems.push((
                object.clone(),
                "InvalidConfiguration",
                format!("spec.{field}: not supported; the object is not used, so nothing is announced that it would leave out"),
            ));
        } else {
            problems.push((
                object.clone(),
                "UnsupportedField",
                format!(
                    "spec.{field}: not supported by groundwork; the rest of the object is used"
                ),
            ));
        }
    }
    unusable
}

/// An `IPAddressPool` as a pool, announced on layer 2 by the `L2Advertisement`s that select it.
fn pool_def(
    name: &str,
    spec: &MetalLbIPAddressPoolSpec,
    labels: &BTreeMap<String, String>,
    l2: &[MetalLbL2AdvertisementSpec],
) -> Result<(PoolDef, Vec<String>), String> {
    let mut notes = Vec::new();
    let allocation = spec.service_allocation.clone().unwrap_or_default();
    if allocation.priority.is_some() {
        notes.push("spec.serviceAllocation.priority: pool priorities are not supported; pools are tried in name order".to_owned());
    }
    let ours = IPPoolSpec {
        addresses: spec.addresses.clone(),
        auto_assign: spec.auto_assign.unwrap_or(true),
        avoid_buggy_ips: spec.avoid_buggy_ips,
        service_allocation: Some(allocation.allocation),
        announce: None,
    };
    let mut def = PoolDef::from_spec(name, &ours).map_err(|e| e.to_string())?;
    let selecting: Vec<&MetalLbL2AdvertisementSpec> = l2
        .iter()
        .filter(|a| {
            (a.ip_address_pools.is_empty() && a.ip_address_pool_selectors.is_empty())
                || a.ip_address_pools.iter().any(|p| p == name)
                || a.ip_address_pool_selectors
                    .iter()
                    .any(|s| selector_matches(s, labels))
        })
        .collect();
    def.layer2 = if selecting.is_empty() {
        Layer2::Off
    } else if selecting.iter().any(|a| a.node_selectors.is_empty()) {
        Layer2::Selected(Vec::new())
    } else {
        Layer2::Selected(
            selecting
                .iter()
                .flat_map(|a| a.node_selectors.iter().cloned())
                .collect(),
        )
    };
    if !selecting.iter().any(|a| a.interfaces.is_empty()) {
        def.announce.interfaces = selecting
            .iter()
            .flat_map(|a| a.interfaces.iter().cloned())
            .collect();
        def.announce.interfaces.sort();
        def.announce.interfaces.dedup();
    }
    Ok((def, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn metallb_objects_parse_as_written_and_keep_what_we_do_not_know() {
        let peer: MetalLbBGPPeer = from_yaml(
            "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: router, namespace: metallb-system}\n\
             spec: {myASN: 64512, peerASN: 64500, peerAddress: 10.0.0.1, holdTime: 1m30s, vrf: red}\n",
        );
        assert_eq!(peer.spec.spec.peer_asn, 64500);
        assert_eq!(peer.spec.spec.hold_time.as_deref(), Some("1m30s"));
        // vrf is one of ours (refused by the check); nothing lands in other.
        assert!(peer.spec.other.is_empty(), "{:?}", peer.spec.other);
        let advertisement: MetalLbBGPAdvertisement = from_yaml(
            "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: a}\n\
             spec: {ipAddressPools: [public], asPathPrepend: 2, serviceSelectors: [{matchLabels: {a: b}}]}\n",
        );
        assert_eq!(advertisement.spec.spec.ip_address_pools, ["public"]);
        assert_eq!(
            advertisement.spec.other.keys().collect::<Vec<_>>(),
            ["asPathPrepend", "serviceSelectors"]
        );
        let mut problems = Vec::new();
        let reference = ObjectReference::default();
        assert!(unknown(
            &reference,
            &advertisement.spec.other,
            &mut problems
        ));
        let reasons: Vec<&str> = problems.iter().map(|p| p.1).collect();
        assert_eq!(reasons, ["UnsupportedField", "InvalidConfiguration"]);
        assert!(problems[1].2.starts_with("spec.serviceSelectors"));
    }

    #[test]
    fn a_pool_is_on_layer_2_only_where_an_l2advertisement_selects_it() {
        let pool: MetalLbIPAddressPool = from_yaml(
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: public}\n\
             spec: {addresses: [10.10.39.200-10.10.39.220], serviceAllocation: {priority: 1, namespaces: [web]}}\n",
        );
        let labels = BTreeMap::new();
        let (def, notes) = pool_def("public", &pool.spec, &labels, &[]).unwrap();
        assert_eq!(def.layer2, Layer2::Off);
        assert!(def.auto_assign);
        assert_eq!(def.allocation.namespaces, ["web"]);
        assert!(notes[0].starts_with("spec.serviceAllocation.priority"));
        let rack: MetalLbL2Advertisement = from_yaml(
            "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2}\n\
             spec: {ipAddressPools: [public], nodeSelectors: [{matchLabels: {rack: a}}], interfaces: [eth0]}\n",
        );
        let (def, _) = pool_def(
            "public",
            &pool.spec,
            &labels,
            std::slice::from_ref(&rack.spec),
        )
        .unwrap();
        let rack_a = BTreeMap::from([("rack".to_owned(), "a".to_owned())]);
        assert!(def.announces_on(&rack_a));
        assert!(!def.announces_on(&BTreeMap::new()));
        assert_eq!(def.announce.interfaces, ["eth0"]);
        let (def, _) = pool_def("other", &pool.spec, &labels, &[rack.spec]).unwrap();
        assert_eq!(def.layer2, Layer2::Off);
    }
}
