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
use std::sync::Arc;

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
#[derive(Debug, Default, Clone)]
struct Given<'a> {
    attributes: Attributes,
    services: BTreeSet<&'a ServiceKey>,
}

/// What each (prefix, peer name) is given.
type GivenMap<'w, 'a> = BTreeMap<(String, &'w str), Given<'a>>;

/// Nodes that peer with the same peers and that the same advertisements select get the same routes (unless
/// `externalTrafficPolicy: Local` sets them apart): their configuration is computed once and shared. With no
/// node selectors, that is one computation for the whole cluster instead of one per node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Signature {
    peers: Vec<usize>,
    advertisements: Vec<usize>,
}

/// Every node's BGP configuration; nodes without peers are absent. Nodes alike share one [`Arc`].
pub fn desired<'a>(
    world: &World<'_>,
    held: impl IntoIterator<Item = Held<'a>>,
) -> BTreeMap<String, Arc<pb::BgpConfig>> {
    let mut groups: BTreeMap<Signature, Vec<&str>> = BTreeMap::new();
    for (name, labels) in world.nodes {
        let signature = Signature {
            peers: indices(world.peers, |p| matches_any(&p.node_selectors, labels)),
            advertisements: indices(world.advertisements, |a| {
                matches_any(&a.node_selectors, labels)
            }),
        };
        if !signature.peers.is_empty() {
            groups.entry(signature).or_default().push(name);
        }
    }
    if groups.is_empty() {
        return BTreeMap::new();
    }
    // Which advertisements select each pool, decided once per pool.
    let no_labels = BTreeMap::new();
    let mut by_pool: HashMap<&str, Vec<usize>> = HashMap::new();
    let held: Vec<Held<'a>> = held.into_iter().filter(|h| h.pool.is_some()).collect();
    for pool in held.iter().filter_map(|h| h.pool) {
        by_pool.entry(pool).or_insert_with(|| {
            let labels = world.pool_labels.get(pool).unwrap_or(&no_labels);
            indices(world.advertisements, |a| a.selects_pool(pool, labels))
        });
    }
    let mut desired = BTreeMap::new();
    for (signature, nodes) in groups {
        let peers: Vec<&PeerDef> = signature.peers.iter().map(|i| &world.peers[*i]).collect();
        let mut base = GivenMap::new();
        let mut local: BTreeMap<&str, GivenMap<'_, 'a>> = BTreeMap::new();
        for address in &held {
            let advertisements = address
                .pool
                .and_then(|p| by_pool.get(p))
                .into_iter()
                .flatten()
                .filter(|i| signature.advertisements.contains(i))
                .map(|i| &world.advertisements[*i]);
            for advertisement in advertisements {
                match &address.local {
                    None => give(&mut base, &peers, advertisement, address),
                    Some(ready) => {
                        for node in nodes.iter().filter(|n| ready.contains(**n)) {
                            give(
                                local.entry(node).or_default(),
                                &peers,
                                advertisement,
                                address,
                            );
                        }
                    }
                }
            }
        }
        let shared = Arc::new(config(world, &peers, &base));
        for node in nodes {
            let config = match local.remove(node) {
                None => Arc::clone(&shared),
                // Its own routes besides the group's: merged as one more advertisement would be.
                Some(own) => {
                    let mut given = base.clone();
                    for (key, extra) in own {
                        let entry = given.entry(key).or_default();
                        merge(&mut entry.attributes, &extra.attributes);
                        entry.services.extend(extra.services);
                    }
                    Arc::new(config(world, &peers, &given))
                }
            };
            desired.insert(node.to_owned(), config);
        }
    }
    desired
}

/// The positions of the items `keep` accepts.
fn indices<T>(items: &[T], keep: impl Fn(&T) -> bool) -> Vec<usize> {
    items
        .iter()
        .enumerate()
        .filter(|(_, item)| keep(item))
        .map(|(i, _)| i)
        .collect()
}

/// Files `address` as `advertisement` gives it, to each of `peers` it goes to.
fn give<'w, 'a>(
    given: &mut GivenMap<'w, 'a>,
    peers: &[&'w PeerDef],
    advertisement: &AdvertisementDef,
    address: &Held<'a>,
) {
    let prefix = aggregate(address.address, advertisement.aggregation);
    let attributes = Attributes {
        communities: advertisement.communities.iter().copied().collect(),
        large: advertisement.large_communities.iter().copied().collect(),
        local_pref: advertisement.local_pref,
    };
    for peer in peers.iter().filter(|p| {
        (advertisement.peers.is_empty() || advertisement.peers.contains(&p.name))
            && (p.dual_stack || p.ipv4 == address.address.is_ipv4())
    }) {
        let entry = given
            .entry((prefix.clone(), peer.name.as_str()))
            .or_default();
        merge(&mut entry.attributes, &attributes);
        entry.services.extend(address.services.iter().copied());
    }
}

/// One node's config: its peers, and its routes grouped by (prefix, attributes).
fn config(world: &World<'_>, peers: &[&PeerDef], given: &GivenMap<'_, '_>) -> pb::BgpConfig {
    // Per (prefix, attributes): the peers and the Services.
    type Routes<'g> = BTreeMap<(&'g str, &'g Attributes), (Vec<String>, BTreeSet<&'g ServiceKey>)>;
    let mut routes: Routes<'_> = BTreeMap::new();
    for ((prefix, peer), given) in given {
        let route = routes.entry((prefix, &given.attributes)).or_default();
        route.0.push((*peer).to_owned());
        route.1.extend(given.services.iter().copied());
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
                prefix: prefix.to_owned(),
                peers,
                communities: attributes.communities.iter().copied().collect(),
                large_communities: attributes
                    .large
                    .iter()
                    .copied()
                    .map(
                        |(global_admin, local_data_1, local_data_2)| pb::LargeCommunity {
                            global_admin,
                            local_data_1,
                            local_data_2,
                        },
                    )
                    .collect(),
                local_pref: attributes.local_pref,
                services: services.into_iter().map(ToString::to_string).collect(),
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
