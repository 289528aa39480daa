//! Which node announces an address: rendezvous (highest-random-weight) hashing over the eligible nodes.
//!
//! Every (address, node) pair gets a pseudo-random score from a fixed hash, and the highest score wins.
//! Adding a node moves only the addresses it now wins; removing one moves only the addresses it held.
//! Two controller replicas, or one before and after a restart, compute the same answer from the same
//! inputs, so a leader change moves nothing.

use std::net::IpAddr;

/// The node among `candidates` that announces `address`, or `None` if there is no candidate.
pub fn choose<'a>(
    address: IpAddr,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .max_by_key(|node| (score(address, node), *node))
}

/// A stable 64-bit score: FNV-1a over the address bytes and the node name, then a splitmix64 finaliser
/// so that names differing in one character still score independently. Stable across builds and
/// platforms (unlike `std`'s hasher), which restarts rely on.
fn score(address: IpAddr, node: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let octets: Vec<u8> = match address {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let mut hash = OFFSET;
    for byte in octets.iter().chain([0xffu8].iter()).chain(node.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn addresses(n: u32) -> Vec<IpAddr> {
        (0..n)
            .map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0a0a_0000 + i)))
            .collect()
    }

    #[test]
    fn the_answer_is_stable_and_independent_of_candidate_order() {
        let address: IpAddr = "10.10.39.200".parse().unwrap();
        let one = choose(address, ["m1", "n1", "n2"]);
        let two = choose(address, ["n2", "m1", "n1"]);
        assert_eq!(one, two);
        assert!(one.is_some());
        assert_eq!(choose(address, []), None);
    }

    #[test]
    fn load_spreads_across_nodes() {
        let nodes: Vec<String> = (0..10).map(|i| format!("node-{i}")).collect();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for address in addresses(10_000) {
            let node = choose(address, nodes.iter().map(String::as_str)).unwrap();
            *counts.entry(node).or_default() += 1;
        }
        assert_eq!(counts.len(), 10);
        for (node, count) in counts {
            assert!((700..1300).contains(&count), "{node} got {count} of 10000");
        }
    }

    proptest! {
        /// Removing a node moves exactly the addresses it held; adding it back moves exactly those back.
        #[test]
        fn a_leaving_node_moves_only_its_own_addresses(node_count in 2usize..20, gone in 0usize..20) {
            let gone = gone % node_count;
            let nodes: Vec<String> = (0..node_count).map(|i| format!("n{i}")).collect();
            let remaining: Vec<&str> = nodes.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, n)| n.as_str()).collect();
            for address in addresses(500) {
                let before = choose(address, nodes.iter().map(String::as_str)).unwrap();
                let after = choose(address, remaining.iter().copied()).unwrap();
                if before == nodes[gone] {
                    prop_assert_ne!(after, before);
                } else {
                    prop_assert_eq!(after, before);
                }
            }
        }
    }
}
