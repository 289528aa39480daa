//! What a peer should hear and what it was told (its Adj-RIB-Out), and the UPDATEs that take it from one
//! to the other: pure, so that grouping, splitting and next-hop choice are tested without a router.
//!
//! Next hop: for a route of the session's own family, the session's local address; for the other family
//! (IPv6 routes over an IPv4 session, or the reverse), the node's global address of that family on the
//! interface that holds the session's local address, since a router rejects a next hop it cannot reach
//! directly. Without one, the family is not advertised to that peer and a problem is reported.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::message::{
    Family, LargeCommunity, MAX_MESSAGE, MpReach, PathAttributes, Update, encoded_len,
};

/// LOCAL_PREF sent to iBGP peers when the route sets none (RFC 4271 requires the attribute there).
const DEFAULT_LOCAL_PREF: u32 = 100;
/// The widest an encoded prefix gets (length byte + address).
const MAX_V4_PREFIX: usize = 5;
const MAX_V6_PREFIX: usize = 17;

/// One prefix the configuration asks to advertise to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The prefix.
    pub prefix: IpNet,
    /// RFC 1997 communities.
    pub communities: Vec<u32>,
    /// RFC 8092 communities.
    pub large_communities: Vec<LargeCommunity>,
    /// LOCAL_PREF for iBGP.
    pub local_pref: Option<u32>,
}

/// What decides the attributes a given peer gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    /// Our AS (prepended for eBGP).
    pub my_asn: u32,
    /// iBGP: empty AS_PATH and LOCAL_PREF.
    pub ibgp: bool,
    /// Families the session negotiated.
    pub families: BTreeSet<Family>,
    /// Next hop for IPv4 routes, if any.
    pub next_hop_v4: Option<Ipv4Addr>,
    /// Next hop for IPv6 routes, if any.
    pub next_hop_v6: Option<Ipv6Addr>,
}

/// How one prefix is advertised.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Advert {
    /// The attributes, without NEXT_HOP (kept in `next_hop`, whose family may differ from IPv4).
    pub attributes: PathAttributes,
    /// The next hop.
    pub next_hop: IpAddr,
}

/// Prefix -> how it is (to be) advertised.
pub type AdjRibOut = BTreeMap<IpNet, Advert>;

/// What `view`'s peer should be told of `routes`, and why some are left out.
pub fn desired(routes: &[Route], view: &PeerView) -> (AdjRibOut, Vec<String>) {
    let mut rib = AdjRibOut::new();
    let mut problems = BTreeSet::new();
    for route in routes {
        let family = Family::of(route.prefix.addr());
        if !view.families.contains(&family) {
            problems.insert(format!("the peer did not negotiate {family:?} unicast"));
            continue;
        }
        let next_hop = match family {
            Family::Ipv4 => view.next_hop_v4.map(IpAddr::V4),
            Family::Ipv6 => view.next_hop_v6.map(IpAddr::V6),
        };
        let Some(next_hop) = next_hop else {
            problems.insert(format!(
                "no {family:?} address on the session's interface to use as next hop"
            ));
            continue;
        };
        let mut communities = route.communities.clone();
        communities.sort_unstable();
        communities.dedup();
        let mut large_communities = route.large_communities.clone();
        large_communities.sort_unstable();
        large_communities.dedup();
        let attributes = PathAttributes {
            as_path: if view.ibgp { vec![] } else { vec![view.my_asn] },
            next_hop: None,
            local_pref: view
                .ibgp
                .then(|| route.local_pref.unwrap_or(DEFAULT_LOCAL_PREF)),
            communities,
            large_communities,
        };
        rib.insert(
            route.prefix.trunc(),
            Advert {
                attributes,
                next_hop,
            },
        );
    }
    (rib, problems.into_iter().collect())
}

/// The UPDATEs that turn `advertised` into `desired`: withdrawals first, then one UPDATE per distinct
/// set of attributes (split to stay within 4096 bytes).
pub fn updates(advertised: &AdjRibOut, desired: &AdjRibOut, four_octet_as: bool) -> Vec<Update> {
    let mut out = Vec::new();
    let gone = advertised.keys().filter(|p| !desired.contains_key(*p));
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for prefix in gone {
        match prefix {
            IpNet::V4(p) => v4.push(*p),
            IpNet::V6(p) => v6.push(*p),
        }
    }
    let empty = Update::default();
    for chunk in v4.chunks(chunk_size(&empty, MAX_V4_PREFIX, four_octet_as)) {
        out.push(Update {
            withdrawn: chunk.to_vec(),
            ..Update::default()
        });
    }
    let unreach = Update::end_of_rib(Family::Ipv6);
    for chunk in v6.chunks(chunk_size(&unreach, MAX_V6_PREFIX, four_octet_as)) {
        out.push(Update {
            mp_unreach: Some(chunk.to_vec()),
            ..Update::default()
        });
    }
    let mut groups: BTreeMap<&Advert, Vec<IpNet>> = BTreeMap::new();
    for (prefix, advert) in desired {
        if advertised.get(prefix) != Some(advert) {
            groups.entry(advert).or_default().push(*prefix);
        }
    }
    for (advert, prefixes) in groups {
        match advert.next_hop {
            IpAddr::V4(next_hop) => {
                let base = Update {
                    attributes: Some(PathAttributes {
                        next_hop: Some(next_hop),
                        ..advert.attributes.clone()
                    }),
                    ..Update::default()
                };
                let nets: Vec<Ipv4Net> = prefixes
                    .iter()
                    .filter_map(|p| match p {
                        IpNet::V4(p) => Some(*p),
                        IpNet::V6(_) => None,
                    })
                    .collect();
                for chunk in nets.chunks(chunk_size(&base, MAX_V4_PREFIX, four_octet_as)) {
                    out.push(Update {
                        nlri: chunk.to_vec(),
                        ..base.clone()
                    });
                }
            }
            IpAddr::V6(next_hop) => {
                let base = Update {
                    attributes: Some(advert.attributes.clone()),
                    mp_reach: Some(MpReach {
                        next_hop,
                        nlri: vec![],
                    }),
                    ..Update::default()
                };
                let nets: Vec<Ipv6Net> = prefixes
                    .iter()
                    .filter_map(|p| match p {
                        IpNet::V6(p) => Some(*p),
                        IpNet::V4(_) => None,
                    })
                    .collect();
                for chunk in nets.chunks(chunk_size(&base, MAX_V6_PREFIX, four_octet_as)) {
                    out.push(Update {
                        mp_reach: Some(MpReach {
                            next_hop,
                            nlri: chunk.to_vec(),
                        }),
                        ..base.clone()
                    });
                }
            }
        }
    }
    out
}

/// How many prefixes of at most `per_prefix` bytes fit next to `base` (at least one, so that progress is
/// made; an UPDATE whose attributes alone are too big then fails to encode and is reported).
fn chunk_size(base: &Update, per_prefix: usize, four_octet_as: bool) -> usize {
    let room = MAX_MESSAGE.saturating_sub(encoded_len(base, four_octet_as));
    (room / per_prefix).max(1)
}

/// The next hops for each family: the local address for its own family, and for the other one the first
/// global address of that family on the interface holding `local` (`interfaces`: each interface's
/// addresses).
pub fn next_hops(local: IpAddr, interfaces: &[Vec<IpNet>]) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let holding = interfaces
        .iter()
        .find(|addresses| addresses.iter().any(|a| a.addr() == local));
    let global = |a: &&IpNet| match a.addr() {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unicast_link_local() && !v6.is_unspecified(),
    };
    let other_v4 = || {
        holding?.iter().filter(global).find_map(|a| match a.addr() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
    };
    let other_v6 = || {
        holding?.iter().filter(global).find_map(|a| match a.addr() {
            IpAddr::V6(v6) => Some(v6),
            IpAddr::V4(_) => None,
        })
    };
    match local {
        IpAddr::V4(v4) => (Some(v4), other_v6()),
        IpAddr::V6(v6) => (other_v4(), Some(v6)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(ibgp: bool) -> PeerView {
        PeerView {
            my_asn: 64512,
            ibgp,
            families: [Family::Ipv4, Family::Ipv6].into_iter().collect(),
            next_hop_v4: Some(Ipv4Addr::new(10, 0, 0, 1)),
            next_hop_v6: Some("fd10::1".parse().unwrap()),
        }
    }

    fn route(prefix: &str, communities: &[u32]) -> Route {
        Route {
            prefix: prefix.parse().unwrap(),
            communities: communities.to_vec(),
            large_communities: vec![],
            local_pref: None,
        }
    }

    #[test]
    fn ebgp_prepends_our_as_and_ibgp_sends_local_pref() {
        let routes = [route("10.10.39.200/32", &[])];
        let (ebgp, _) = desired(&routes, &view(false));
        let advert = ebgp.values().next().unwrap();
        assert_eq!(advert.attributes.as_path, [64512]);
        assert_eq!(advert.attributes.local_pref, None);
        let (ibgp, _) = desired(&routes, &view(true));
        let advert = ibgp.values().next().unwrap();
        assert!(advert.attributes.as_path.is_empty());
        assert_eq!(advert.attributes.local_pref, Some(DEFAULT_LOCAL_PREF));
    }

    #[test]
    fn prefixes_with_equal_attributes_share_one_update() {
        let routes = [
            route("10.10.39.200/32", &[1]),
            route("10.10.39.201/32", &[1]),
            route("10.10.39.202/32", &[2]),
            route("fd10:39::200/128", &[1]),
        ];
        let (want, problems) = desired(&routes, &view(false));
        assert!(problems.is_empty());
        let sent = updates(&AdjRibOut::new(), &want, true);
        assert_eq!(sent.len(), 3);
        assert_eq!(sent.iter().map(|u| u.nlri.len()).sum::<usize>(), 3);
        assert!(sent.iter().any(|u| u.nlri.len() == 2));
        assert!(sent.iter().any(|u| u.mp_reach.is_some()));
        // Nothing changes: nothing to send.
        assert!(updates(&want, &want, true).is_empty());
    }

    #[test]
    fn removed_prefixes_are_withdrawn_by_family() {
        let routes = [
            route("10.10.39.200/32", &[]),
            route("fd10:39::200/128", &[]),
        ];
        let (before, _) = desired(&routes, &view(false));
        let sent = updates(&before, &AdjRibOut::new(), true);
        assert_eq!(sent.len(), 2);
        assert_eq!(
            sent[0].withdrawn,
            ["10.10.39.200/32".parse::<Ipv4Net>().unwrap()]
        );
        assert_eq!(
            sent[1].mp_unreach,
            Some(vec!["fd10:39::200/128".parse::<Ipv6Net>().unwrap()])
        );
    }

    #[test]
    fn a_family_without_next_hop_or_negotiation_is_left_out_with_a_problem() {
        let routes = [route("fd10:39::200/128", &[])];
        let mut no_v6 = view(false);
        no_v6.next_hop_v6 = None;
        let (rib, problems) = desired(&routes, &no_v6);
        assert!(rib.is_empty());
        assert_eq!(problems.len(), 1);
        let mut v4_only = view(false);
        v4_only.families.remove(&Family::Ipv6);
        let (rib, problems) = desired(&routes, &v4_only);
        assert!(rib.is_empty());
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn large_sets_split_below_the_message_limit() {
        let routes: Vec<Route> = (0..3000u32)
            .map(|i| Route {
                prefix: IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).unwrap()),
                communities: vec![],
                large_communities: vec![],
                local_pref: None,
            })
            .collect();
        let (want, _) = desired(&routes, &view(false));
        let sent = updates(&AdjRibOut::new(), &want, true);
        assert!(sent.len() > 1);
        assert!(sent.iter().all(|u| encoded_len(u, true) <= MAX_MESSAGE));
        assert_eq!(sent.iter().map(|u| u.nlri.len()).sum::<usize>(), 3000);
    }

    /// Applies decoded UPDATEs to a picture of what the peer holds, as a router would.
    fn replay(held: &mut BTreeMap<IpNet, PathAttributes>, update: &Update) {
        for p in &update.withdrawn {
            held.remove(&IpNet::V4(*p));
        }
        for p in update.mp_unreach.iter().flatten() {
            held.remove(&IpNet::V6(*p));
        }
        let Some(attributes) = &update.attributes else {
            return;
        };
        for p in &update.nlri {
            held.insert(IpNet::V4(*p), attributes.clone());
        }
        for p in update.mp_reach.iter().flat_map(|r| &r.nlri) {
            held.insert(IpNet::V6(*p), attributes.clone());
        }
    }

    fn arbitrary_routes() -> impl proptest::strategy::Strategy<Value = Vec<Route>> {
        use proptest::prelude::*;
        let prefix = prop_oneof![
            (any::<u32>(), 0u8..=32)
                .prop_map(|(a, l)| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc())),
            (any::<u128>(), 0u8..=128)
                .prop_map(|(a, l)| IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), l).unwrap().trunc())),
        ];
        let route = (
            prefix,
            proptest::collection::vec(0u32..4, 0..3),
            proptest::option::of(0u32..3),
        )
            .prop_map(|(prefix, communities, local_pref)| Route {
                prefix,
                communities,
                large_communities: vec![],
                local_pref,
            });
        proptest::collection::vec(route, 0..400)
    }

    proptest::proptest! {
        /// Whatever the change, the UPDATEs fit in 4096 bytes, decode, and leave the peer holding exactly
        /// the desired routes.
        #[test]
        fn updates_take_the_peer_from_any_set_to_any_other(
            before in arbitrary_routes(),
            after in arbitrary_routes(),
            ibgp in proptest::bool::ANY,
        ) {
            use crate::bgp::message::{Message, decode, encode};
            let view = view(ibgp);
            let (old, _) = desired(&before, &view);
            let (new, _) = desired(&after, &view);
            let mut held = BTreeMap::new();
            for update in updates(&AdjRibOut::new(), &old, true).into_iter().chain(updates(&old, &new, true)) {
                let bytes = encode(&Message::Update(update), true).unwrap();
                let Ok(Message::Update(decoded)) = decode(&bytes, true) else {
                    panic!("an UPDATE that does not decode");
                };
                replay(&mut held, &decoded);
            }
            let want: BTreeMap<IpNet, PathAttributes> = new
                .iter()
                .map(|(p, a)| {
                    let mut attributes = a.attributes.clone();
                    if let IpAddr::V4(v4) = a.next_hop {
                        attributes.next_hop = Some(v4);
                    }
                    (*p, attributes)
                })
                .collect();
            proptest::prop_assert_eq!(held, want);
        }
    }

    #[test]
    fn next_hops_come_from_the_interface_holding_the_local_address() {
        let interfaces = vec![
            vec!["127.0.0.1/8".parse().unwrap(), "::1/128".parse().unwrap()],
            vec![
                "10.0.0.1/24".parse().unwrap(),
                "fe80::1/64".parse().unwrap(),
                "fd10::1/64".parse().unwrap(),
            ],
        ];
        assert_eq!(
            next_hops("10.0.0.1".parse().unwrap(), &interfaces),
            (
                Some(Ipv4Addr::new(10, 0, 0, 1)),
                Some("fd10::1".parse().unwrap())
            )
        );
        assert_eq!(
            next_hops("fd10::1".parse().unwrap(), &interfaces),
            (
                Some(Ipv4Addr::new(10, 0, 0, 1)),
                Some("fd10::1".parse().unwrap())
            )
        );
        assert_eq!(
            next_hops("10.0.0.9".parse().unwrap(), &interfaces),
            (Some(Ipv4Addr::new(10, 0, 0, 9)), None)
        );
    }
}
