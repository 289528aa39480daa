//! Who advertises what to which router: each node's [`pb::BgpConfig`], from the checked BGP objects, the
//! nodes that may announce, and the addresses Services hold. Pure; the controller calls it after a pass.
//!
//! Unlike layer 2 there is no single announcer: every eligible node advertises (ECMP at the routers).
//! A node is eligible for an address when it may announce at all (Ready, not excluded, with a speaker: the
//! planner's own list), an advertisement selecting the address's pool selects the node, and — for a Service
//! with `externalTrafficPolicy: Local` — it has a ready endpoint, so routers never send traffic to a node
//! that would drop it. Each advertisement goes to the node's peers it names (all when it names none) whose
//! session carries the address's family.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use proto::announce::v1 as pb;

use super::check::{AdvertisementDef, PeerDef};
use crate::pool::selector_matches;
use crate::request::ServiceKey;

/// The BGP objects that checked out, and the cluster around them.
pub struct World<'a> {
    /// Every usable peer.
    pub peers: &'a [PeerDef],
    /// BFD profiles by name.
    pub bfd_profiles: &'a BTreeMap<String, pb::BfdProfile>,
    /// Every usable advertisement.
    pub advertisements: &'a [AdvertisementDef],
    /// Nodes that may announce, with their labels.
    pub nodes: &'a [(String, BTreeMap<String, String>)],
    /// Labels per pool name (advertisements may select pools by label).
    pub pool_labels: &'a HashMap<String, BTreeMap<String, String>>,
}

/// An address some Services hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Held<'a> {
    /// The address.
    pub address: IpAddr,
    /// Its pool's name (`None`: outside every pool, so not advertised).
    pub pool: Option<&'a str>,
    /// The Services holding it.
    pub services: Vec<&'a ServiceKey>,
    /// With `externalTrafficPolicy: Local`: the nodes with a ready endpoint of every such holder.
    pub local: Option<BTreeSet<String>>,
}

/// Attributes a route carries, and so what decides whether two routes merge into one.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Attributes {
    communities: BTreeSet<u32>,
    large: BTreeSet<(u32, u32, u32)>,
    local_pref: Option<u32>,
}

/// What one (prefix, peer) pair is given: merged over every advertisement selecting it.
#[derive(Debug, Default)]
struct Given<'a> {
    attributes: Attributes,
    services: BTreeSet<&'a ServiceKey>,
}

/// Per node: its peers, and what each (prefix, peer name) is given.
type PerNode<'w, 'a> =
    BTreeMap<&'w str, (Vec<&'w PeerDef>, BTreeMap<(String, &'w str), Given<'a>>)>;

/// Every node's BGP configuration; nodes without peers are absent.
pub fn desired<'a>(
    world: &World<'_>,
    held: impl IntoIterator<Item = Held<'a>>,
) -> BTreeMap<String, pb::BgpConfig> {
    let mut nodes: PerNode<'_, 'a> = world
        .nodes
        .iter()
        .filter_map(|(name, labels)| {
            let peers: Vec<&PeerDef> = world
                .peers
                .iter()
                .filter(|p| matches_any(&p.node_selectors, labels))
                .collect();
            (!peers.is_empty()).then(|| (name.as_str(), (peers, BTreeMap::new())))
        })
        .collect();
    if nodes.is_empty() {
        return BTreeMap::new();
    }
    let labels_of: HashMap<&str, &BTreeMap<String, String>> =
        world.nodes.iter().map(|(n, l)| (n.as_str(), l)).collect();
    let no_labels = BTreeMap::new();
    for held in held {
        let Some(pool) = held.pool else { continue };
        let pool_labels = world.pool_labels.get(pool).unwrap_or(&no_labels);
        for advertisement in world
            .advertisements
            .iter()
            .filter(|a| a.selects_pool(pool, pool_labels))
        {
            let prefix = aggregate(held.address, advertisement.aggregation);
            let attributes = Attributes {
                communities: advertisement.communities.iter().copied().collect(),
                large: advertisement.large_communities.iter().copied().collect(),
                local_pref: advertisement.local_pref,
            };
            for (node, (peers, given)) in &mut nodes {
                let labels = labels_of.get(node).copied().unwrap_or(&no_labels);
                if !matches_any(&advertisement.node_selectors, labels)
                    || held.local.as_ref().is_some_and(|l| !l.contains(*node))
                {
                    continue;
                }
                for peer in peers.iter().filter(|p| {
                    (advertisement.peers.is_empty() || advertisement.peers.contains(&p.name))
                        && (p.dual_stack || p.ipv4 == held.address.is_ipv4())
                }) {
                    let entry = given
                        .entry((prefix.clone(), peer.name.as_str()))
                        .or_default();
                    merge(&mut entry.attributes, &attributes);
                    entry.services.extend(held.services.iter().copied());
                }
            }
        }
    }
    nodes
        .into_iter()
        .map(|(node, (peers, given))| (node.to_owned(), config(world, &peers, given)))
        .collect()
}

/// One node's config: its peers, and its routes grouped by (prefix, attributes).
fn config(
    world: &World<'_>,
    peers: &[&PeerDef],
    given: BTreeMap<(String, &str), Given<'_>>,
) -> pb::BgpConfig {
    let mut routes: BTreeMap<(String, Attributes), (Vec<String>, BTreeSet<String>)> =
        BTreeMap::new();
    for ((prefix, peer), given) in given {
        let route = routes.entry((prefix, given.attributes)).or_default();
        route.0.push(peer.to_owned());
        route
            .1
            .extend(given.services.iter().map(ToString::to_string));
    }
    pb::BgpConfig {
        generation: 0,
        peers: peers
            .iter()
            .map(|p| pb::BgpPeer {
                bfd: p
                    .bfd_profile
                    .as_ref()
                    .and_then(|name| world.bfd_profiles.get(name))
                    .cloned(),
                ..p.session.clone()
            })
            .collect(),
        routes: routes
            .into_iter()
            .map(|((prefix, attributes), (peers, services))| pb::BgpRoute {
                prefix,
                peers,
                communities: attributes.communities.into_iter().collect(),
                large_communities: attributes
                    .large
                    .into_iter()
                    .map(
                        |(global_admin, local_data_1, local_data_2)| pb::LargeCommunity {
                            global_admin,
                            local_data_1,
                            local_data_2,
                        },
                    )
                    .collect(),
                local_pref: attributes.local_pref,
                services: services.into_iter().collect(),
            })
            .collect(),
    }
}

/// Two advertisements giving one prefix to one peer: the union of their communities, the highest
/// LOCAL_PREF (a route carries one of each attribute).
fn merge(into: &mut Attributes, from: &Attributes) {
    into.communities.extend(from.communities.iter().copied());
    into.large.extend(from.large.iter().copied());
    into.local_pref = into.local_pref.max(from.local_pref);
}

fn matches_any(selectors: &[LabelSelector], labels: &BTreeMap<String, String>) -> bool {
    selectors.is_empty() || selectors.iter().any(|s| selector_matches(s, labels))
}

/// `address` as the prefix of `aggregation`'s length for its family (`10.0.0.7` at 24: `10.0.0.0/24`).
pub fn aggregate(address: IpAddr, aggregation: (u8, u8)) -> String {
    match address {
        IpAddr::V4(v4) => {
            let length = aggregation.0.min(32);
            let mask = u32::MAX.checked_shl(32 - u32::from(length)).unwrap_or(0);
            format!(
                "{}/{length}",
                std::net::Ipv4Addr::from(u32::from(v4) & mask)
            )
        }
        IpAddr::V6(v6) => {
            let length = aggregation.1.min(128);
            let mask = u128::MAX.checked_shl(128 - u32::from(length)).unwrap_or(0);
            format!(
                "{}/{length}",
                std::net::Ipv6Addr::from(u128::from(v6) & mask)
            )
        }
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
