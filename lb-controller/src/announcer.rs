//! Which node announces an address: rendezvous (highest-random-weight) hashing over the eligible nodes.
//!
//! Every (address, node) pair gets a pseudo-random score from a fixed hash, and the highest score wins.
//! Adding a node moves only the addresses it now wins; removing one moves only the addresses it held.
//! Two controller replicas, or one before and after a restart, compute the same answer from the same
//! inputs, so a leader change moves nothing.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

/// The node among `candidates` that announces `address`, or `None` if there is no candidate.
pub fn choose<'a>(
    address: IpAddr,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let prefix = address_prefix(address);
    candidates
        .into_iter()
        .max_by_key(|node| (finish(prefix, node), *node))
}

/// A stable 64-bit score: FNV-1a over the address bytes and the node name, then a splitmix64 finaliser
/// so that names differing in one character still score independently. Stable across builds and
/// platforms (unlike `std`'s hasher), which restarts rely on. Split in two so the address's part is
/// hashed once per address, not once per candidate.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over the address bytes and a separator.
fn address_prefix(address: IpAddr) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    let mut hash = OFFSET;
    let mut feed = |byte: u8| {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    };
    match address {
        IpAddr::V4(v4) => v4.octets().into_iter().for_each(&mut feed),
        IpAddr::V6(v6) => v6.octets().into_iter().for_each(&mut feed),
    }
    feed(0xff);
    hash
}

/// The rest of FNV-1a over the node name, then splitmix64's finaliser.
fn finish(prefix: u64, node: &str) -> u64 {
    let mut hash = prefix;
    for byte in node.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// A set of candidate nodes, shared by every address it applies to (typically one per pool).
pub type Candidates = Arc<BTreeSet<String>>;

/// Remembers each address's announcer between passes, so that a pass whose candidate sets did not change
/// costs nothing per address, and one where nodes came or went costs only the newcomers' scores: by the
/// rendezvous property, an address whose winner is still a candidate can only move to a newcomer.
/// Gives exactly what [`choose`] gives over the same candidates.
#[derive(Debug, Default)]
pub struct Memo {
    chosen: HashMap<IpAddr, Choice>,
    /// This pass's candidate sets, so equal sets share one `Arc` across passes.
    sets: Vec<Candidates>,
    /// The previous pass's sets, for [`Memo::intern`].
    previous: Vec<Candidates>,
    /// (old set, new set, nodes added, nodes removed), computed once per pair of sets per pass.
    diffs: Vec<(Candidates, Candidates, Vec<String>, BTreeSet<String>)>,
}

#[derive(Debug)]
struct Choice {
    set: Candidates,
    node: String,
    score: u64,
}

impl Memo {
    /// Starts a pass: candidate sets from now on are compared with the last pass's.
    pub fn begin_pass(&mut self) {
        self.previous = std::mem::take(&mut self.sets);
        self.diffs.clear();
    }

    /// Ends a pass: forgets addresses not in `held`.
    pub fn end_pass(&mut self, held: impl Fn(&IpAddr) -> bool) {
        self.chosen.retain(|address, _| held(address));
        self.previous.clear();
    }

    /// The shared handle for `set`: the previous pass's one when equal, so addresses keep their choice.
    pub fn intern(&mut self, set: BTreeSet<String>) -> Candidates {
        if let Some(same) = self.sets.iter().chain(&self.previous).find(|s| ***s == set) {
            let same = same.clone();
            if !self.sets.iter().any(|s| Arc::ptr_eq(s, &same)) {
                self.sets.push(same.clone());
            }
            return same;
        }
        let new = Arc::new(set);
        self.sets.push(new.clone());
        new
    }

    /// The announcer of `address` among `set` (from [`Memo::intern`]).
    pub fn choose(&mut self, address: IpAddr, set: &Candidates) -> Option<&str> {
        let unchanged = self
            .chosen
            .get(&address)
            .is_some_and(|old| Arc::ptr_eq(&old.set, set));
        if !unchanged {
            let prefix = address_prefix(address);
            let best = match self.chosen.get(&address) {
                Some(old) => {
                    let (added, removed) = diff(&mut self.diffs, &old.set, set);
                    if removed.contains(&old.node) {
                        best_of(prefix, set.iter())
                    } else {
                        match best_of(prefix, added.iter()) {
                            Some(new)
                                if (new.0, new.1.as_str()) > (old.score, old.node.as_str()) =>
                            {
                                Some(new)
                            }
                            _ => Some((old.score, old.node.clone())),
                        }
                    }
                }
                None => best_of(prefix, set.iter()),
            };
            match best {
                Some((score, node)) => {
                    let set = set.clone();
                    self.chosen.insert(address, Choice { set, node, score });
                }
                None => {
                    self.chosen.remove(&address);
                }
            }
        }
        self.chosen.get(&address).map(|c| c.node.as_str())
    }

    /// Forgets `address` (its candidates are computed per pass, e.g. for `externalTrafficPolicy: Local`).
    pub fn forget(&mut self, address: IpAddr) {
        self.chosen.remove(&address);
    }
}

fn best_of<'a>(prefix: u64, nodes: impl Iterator<Item = &'a String>) -> Option<(u64, String)> {
    nodes
        .map(|node| (finish(prefix, node), node))
        .max_by(|a, b| (a.0, a.1.as_str()).cmp(&(b.0, b.1.as_str())))
        .map(|(score, node)| (score, node.clone()))
}

/// Nodes in `new` but not `old`, and in `old` but not `new`; memoised per pair within a pass.
fn diff<'d>(
    diffs: &'d mut Vec<(Candidates, Candidates, Vec<String>, BTreeSet<String>)>,
    old: &Candidates,
    new: &Candidates,
) -> (&'d [String], &'d BTreeSet<String>) {
    let index = match diffs
        .iter()
        .position(|(o, n, _, _)| Arc::ptr_eq(o, old) && Arc::ptr_eq(n, new))
    {
        Some(index) => index,
        None => {
            let added = new.difference(old).cloned().collect();
            let removed = old.difference(new).cloned().collect();
            diffs.push((old.clone(), new.clone(), added, removed));
            diffs.len() - 1
        }
    };
    let (_, _, added, removed) = &diffs[index];
    (added, removed)
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

    /// The scores are part of the contract between releases: a controller upgrade must not move addresses.
    /// Expected values from an independent implementation of FNV-1a + splitmix64.
    #[test]
    fn scores_are_stable_across_releases() {
        let score = |a: &str, n: &str| finish(address_prefix(a.parse().unwrap()), n);
        assert_eq!(score("10.10.39.200", "m1"), 0x1d18_8460_a245_35de);
        assert_eq!(score("10.10.39.200", "n1"), 0xf838_06ee_814d_f89e);
        assert_eq!(score("fd00::1", "node-0001"), 0xf323_417d_907f_d79d);
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
        /// Across passes where nodes come and go, the memo answers exactly what a fresh choice would.
        #[test]
        fn the_memo_agrees_with_a_fresh_choice(
            passes in proptest::collection::vec(proptest::collection::btree_set(0usize..12, 0..12), 1..8)
        ) {
            let mut memo = Memo::default();
            for members in passes {
                memo.begin_pass();
                let names: BTreeSet<String> = members.iter().map(|i| format!("n{i}")).collect();
                let set = memo.intern(names.clone());
                // A second, different set in the same pass (as a second pool would have).
                let odd: BTreeSet<String> = names.iter().filter(|n| n.len() % 2 == 0).cloned().collect();
                let odd_set = memo.intern(odd.clone());
                for (i, address) in addresses(60).into_iter().enumerate() {
                    let (names, set) = if i % 3 == 0 { (&odd, &odd_set) } else { (&names, &set) };
                    let fresh = choose(address, names.iter().map(String::as_str)).map(str::to_owned);
                    prop_assert_eq!(memo.choose(address, set).map(str::to_owned), fresh);
                }
                memo.end_pass(|_| true);
            }
        }

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
