//! PTR records (`--create-ptr`, external-dns's flag of that name): for every address record published, the
//! reverse name (`200.39.10.10.in-addr.arpa`, or the nibbles under `ip6.arpa`) pointing back at the name,
//! owned like the forward record and going away with it. Only reverse names inside a zone served from this
//! etcd (`--zone 10.in-addr.arpa`) are written: an address outside every reverse zone simply gets no PTR,
//! as with external-dns, since nobody would serve it.
//!
//! A reverse name is derived from names the publishing rules already allowed and from addresses in the
//! objects' status (written by the load balancer, not by the object's author), so no further rule applies.
//! Two names on one address give two PTR records, as two A records would give two answers. CoreDNS's etcd
//! plugin answers PTR only from the record at the reverse name's own key (no suffix label), which can hold one
//! record: the first name (in name order) goes there, served by both servers; the others under suffix keys,
//! served by dns-server.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::source::{Endpoint, at_or_below};
use crate::target::Target;

/// The reverse name of `address`, lower case, without the trailing dot.
pub fn reverse_name(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut labels: Vec<String> = v6
                .octets()
                .iter()
                .flat_map(|byte| [byte >> 4, byte & 0x0f])
                .map(|nibble| format!("{nibble:x}"))
                .collect();
            labels.reverse();
            format!("{}.ip6.arpa", labels.join("."))
        }
    }
}

/// The PTR endpoints for `endpoints` (those whose target is an address and whose name is not a wildcard),
/// each inside one of `zones`; one per (reverse name, name). [`place_at_names`] then says which goes to the
/// reverse name's own key.
pub fn endpoints_for(endpoints: &[Endpoint], zones: &[String]) -> Vec<Endpoint> {
    let mut seen: BTreeSet<(String, &str)> = BTreeSet::new();
    let mut ptrs: Vec<Endpoint> = Vec::new();
    for endpoint in endpoints {
        let Some(address) = endpoint.target.address() else {
            continue;
        };
        if endpoint.name.starts_with("*.") {
            continue;
        }
        let reverse = reverse_name(address);
        if !zones.iter().any(|zone| at_or_below(&reverse, zone)) {
            continue;
        }
        if seen.insert((reverse.clone(), endpoint.name.as_str())) {
            ptrs.push(Endpoint {
                name: reverse,
                target: Target::Host(endpoint.name.clone()),
                ttl: endpoint.ttl,
                object: endpoint.object.clone(),
                at_name: false,
            });
        }
    }
    ptrs.sort_by(|a, b| (&a.name, &a.target).cmp(&(&b.name, &b.target)));
    ptrs
}

/// Marks, for every reverse name among `endpoints` with host name targets (from `--create-ptr` or a
/// `DNSEndpoint`'s PTR entries alike), the first target in order to be stored at the name's own key, where
/// CoreDNS reads PTR answers from; every endpoint of that (name, target) is marked, the others are not.
pub fn place_at_names(endpoints: &mut [Endpoint]) {
    let mut first: BTreeMap<&str, &Target> = BTreeMap::new();
    for endpoint in endpoints
        .iter()
        .filter(|e| is_reverse(&e.name) && e.target.is_name())
    {
        let slot = first.entry(&endpoint.name).or_insert(&endpoint.target);
        if endpoint.target < **slot {
            *slot = &endpoint.target;
        }
    }
    let first: BTreeSet<(String, Target)> = first
        .into_iter()
        .map(|(name, target)| (name.to_owned(), target.clone()))
        .collect();
    for endpoint in endpoints.iter_mut() {
        endpoint.at_name = first.contains(&(endpoint.name.clone(), endpoint.target.clone()));
    }
}

/// Whether `name` is below `in-addr.arpa` or `ip6.arpa`.
fn is_reverse(name: &str) -> bool {
    at_or_below(name, "in-addr.arpa") || at_or_below(name, "ip6.arpa")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ObjectId;

    fn endpoint(name: &str, target: &str) -> Endpoint {
        Endpoint {
            name: name.to_owned(),
            target: Target::host(target),
            ttl: Some(60),
            object: ObjectId::parse("service/default/web").unwrap(),
            at_name: false,
        }
    }

    #[test]
    fn reverse_names_are_written_as_rfc_1035_and_3596_say() {
        assert_eq!(
            reverse_name("10.10.39.200".parse().unwrap()),
            "200.39.10.10.in-addr.arpa"
        );
        assert_eq!(
            reverse_name("2001:db8::567:89ab".parse().unwrap()),
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    #[test]
    fn only_addresses_inside_a_reverse_zone_get_a_ptr_pointing_at_the_name() {
        let zones = ["test.org".to_owned(), "10.in-addr.arpa".to_owned()];
        let ptrs = endpoints_for(
            &[
                endpoint("nginx.test.org", "10.10.39.200"),
                endpoint("shop.test.org", "10.10.39.200"),
                endpoint("nginx.test.org", "10.10.39.200"),
                endpoint("*.apps.test.org", "10.10.39.201"),
                endpoint("alias.test.org", "nginx.test.org"),
                endpoint("far.test.org", "192.0.2.1"),
            ],
            &zones,
        );
        let pairs: Vec<(&str, &Target)> =
            ptrs.iter().map(|p| (p.name.as_str(), &p.target)).collect();
        assert_eq!(
            pairs,
            [
                ("200.39.10.10.in-addr.arpa", &Target::host("nginx.test.org")),
                ("200.39.10.10.in-addr.arpa", &Target::host("shop.test.org")),
            ]
        );
        assert_eq!(ptrs[0].ttl, Some(60));
        let mut ptrs = ptrs;
        ptrs.push(endpoint("200.39.10.10.in-addr.arpa", "nginx.test.org"));
        ptrs.push(endpoint("nginx.test.org", "10.10.39.200"));
        place_at_names(&mut ptrs);
        let at_name: Vec<bool> = ptrs.iter().map(|p| p.at_name).collect();
        assert_eq!(
            at_name,
            [true, false, true, false],
            "the first name of a reverse name at its own key, every endpoint of it, no forward name"
        );
        assert!(!at_or_below(
            "200.39.10.110.in-addr.arpa",
            "10.in-addr.arpa"
        ));
    }
}
