//! Pools from MetalLB's legacy ConfigMap (the `config` key of `metallb-system/config` before MetalLB 0.13),
//! so a cluster moves over without rewriting its pools first:
//!
//! ```yaml
//! address-pools:
//! - name: default
//!   protocol: layer2
//!   addresses: [10.10.39.200-10.10.39.220]
//!   auto-assign: true        # optional
//!   avoid-buggy-ips: false   # optional
//! ```
//!
//! BGP pools work too, with the ConfigMap's `peers` and `bgp-communities`, as MetalLB read them:
//!
//! ```yaml
//! peers:
//! - peer-address: 10.10.40.1
//!   peer-asn: 64500
//!   my-asn: 64512
//!   hold-time: 90s           # optional; also peer-port, router-id, source-address, password,
//!   node-selectors: [...]    # match-labels / match-expressions
//! bgp-communities:
//!   no-advertise: 65535:65282
//! address-pools:
//! - name: public
//!   protocol: bgp
//!   addresses: [10.40.0.0/28]
//!   bgp-advertisements:      # optional; one advertisement of every address alone when absent
//!   - aggregation-length: 32
//!     localpref: 100
//!     communities: [no-advertise]
//! ```
//!
//! They become the same checked objects as the `BGPPeer` and `BGPAdvertisement` resources (named
//! `legacy-peer-<n>` and `legacy-<pool>-<n>`); a BGP pool is not answered by ARP.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use serde::Deserialize;

use crate::bgp::crd::{BGPAdvertisementSpec, BGPPeerSpec, CommunityAlias};
use crate::pool::{IPPoolSpec, Layer2, PoolDef, PoolError};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LegacyConfig {
    #[serde(default)]
    address_pools: Vec<LegacyPool>,
    #[serde(default)]
    peers: Vec<LegacyPeer>,
    #[serde(default)]
    bgp_communities: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LegacyPeer {
    #[serde(default)]
    peer_address: String,
    #[serde(default)]
    peer_asn: u32,
    #[serde(default)]
    my_asn: u32,
    #[serde(default)]
    peer_port: Option<u16>,
    #[serde(default)]
    hold_time: Option<String>,
    #[serde(default)]
    router_id: Option<String>,
    #[serde(default)]
    source_address: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    node_selectors: Vec<LegacySelector>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LegacySelector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<LegacyExpression>,
}

#[derive(Debug, Deserialize)]
struct LegacyExpression {
    key: String,
    operator: String,
    #[serde(default)]
    values: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LegacyAdvertisement {
    #[serde(default)]
    aggregation_length: Option<i32>,
    #[serde(default)]
    aggregation_length_v6: Option<i32>,
    #[serde(default)]
    localpref: Option<u32>,
    #[serde(default)]
    communities: Vec<String>,
}

/// What the legacy ConfigMap holds.
#[derive(Debug, Default)]
pub struct Legacy {
    /// Its pools, layer 2 and BGP.
    pub pools: Vec<PoolDef>,
    /// Its peers, as `BGPPeer` specs named `legacy-peer-<n>`.
    pub peers: Vec<(String, BGPPeerSpec)>,
    /// Its BGP pools' advertisements, named `legacy-<pool>-<n>`.
    pub advertisements: Vec<(String, BGPAdvertisementSpec)>,
    /// Its `bgp-communities`.
    pub aliases: Vec<CommunityAlias>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LegacyPool {
    name: String,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default = "default_true")]
    auto_assign: bool,
    #[serde(default)]
    avoid_buggy_ips: bool,
    #[serde(default)]
    bgp_advertisements: Option<Vec<LegacyAdvertisement>>,
}

fn default_true() -> bool {
    true
}

/// A problem with the legacy ConfigMap; names the key and pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegacyError {
    /// The ConfigMap has no `config` key.
    #[error("data.config: missing")]
    Missing,
    /// The YAML does not parse.
    #[error("data.config: {0}")]
    Yaml(String),
    /// A pool with another protocol than layer2 or bgp.
    #[error(
        "data.config address-pools[{index}] {name:?}: protocol {protocol:?} is not supported (layer2 or bgp)"
    )]
    Protocol {
        /// Position.
        index: usize,
        /// Pool name.
        name: String,
        /// Its protocol.
        protocol: String,
    },
    /// A pool whose fields do not check out.
    #[error("data.config address-pools[{index}] {name:?}: {error}")]
    Pool {
        /// Position.
        index: usize,
        /// Pool name.
        name: String,
        /// The field error (its `spec.addresses[i]` reads as `addresses[i]` here).
        error: PoolError,
    },
}

/// Reads a ConfigMap's `config` value. What checks out is returned even when the rest does not.
pub fn parse(config: Option<&str>) -> (Legacy, Vec<LegacyError>) {
    let Some(text) = config else {
        return (Legacy::default(), vec![LegacyError::Missing]);
    };
    let parsed: LegacyConfig = match serde_yaml::from_str(text) {
        Ok(parsed) => parsed,
        Err(e) => return (Legacy::default(), vec![LegacyError::Yaml(e.to_string())]),
    };
    let mut legacy = Legacy {
        aliases: parsed
            .bgp_communities
            .into_iter()
            .map(|(name, value)| CommunityAlias { name, value })
            .collect(),
        peers: parsed
            .peers
            .into_iter()
            .enumerate()
            .map(|(index, peer)| (format!("legacy-peer-{index}"), peer_spec(peer)))
            .collect(),
        ..Legacy::default()
    };
    let mut errors = Vec::new();
    for (index, pool) in parsed.address_pools.into_iter().enumerate() {
        let protocol = pool.protocol.clone().unwrap_or_else(|| "layer2".into());
        let layer2 = match protocol.as_str() {
            "layer2" => Layer2::Pool,
            "bgp" => Layer2::Off,
            _ => {
                errors.push(LegacyError::Protocol {
                    index,
                    name: pool.name,
                    protocol,
                });
                continue;
            }
        };
        let spec = IPPoolSpec {
            addresses: pool.addresses,
            auto_assign: pool.auto_assign,
            avoid_buggy_ips: pool.avoid_buggy_ips,
            service_allocation: None,
            announce: None,
        };
        match PoolDef::from_spec(&pool.name, &spec) {
            Ok(def) => legacy.pools.push(def.with_layer2(layer2.clone())),
            Err(error) => {
                errors.push(LegacyError::Pool {
                    index,
                    name: pool.name,
                    error,
                });
                continue;
            }
        }
        if layer2 == Layer2::Off {
            let advertisements = pool
                .bgp_advertisements
                .unwrap_or_else(|| vec![LegacyAdvertisement::every_address()]);
            for (n, advertisement) in advertisements.into_iter().enumerate() {
                legacy.advertisements.push((
                    format!("legacy-{}-{n}", pool.name),
                    BGPAdvertisementSpec {
                        aggregation_length: advertisement.aggregation_length,
                        aggregation_length_v6: advertisement.aggregation_length_v6,
                        local_pref: advertisement.localpref,
                        communities: advertisement.communities,
                        ip_address_pools: vec![pool.name.clone()],
                        ..BGPAdvertisementSpec::default()
                    },
                ));
            }
        }
    }
    (legacy, errors)
}

impl LegacyAdvertisement {
    /// MetalLB's default for a BGP pool without advertisements: each address alone, no attributes.
    fn every_address() -> Self {
        Self {
            aggregation_length: None,
            aggregation_length_v6: None,
            localpref: None,
            communities: Vec::new(),
        }
    }
}

fn peer_spec(peer: LegacyPeer) -> BGPPeerSpec {
    BGPPeerSpec {
        my_asn: peer.my_asn,
        peer_asn: peer.peer_asn,
        peer_address: peer.peer_address,
        peer_port: peer.peer_port,
        hold_time: peer.hold_time,
        router_id: peer.router_id,
        source_address: peer.source_address,
        password: peer.password,
        node_selectors: peer
            .node_selectors
            .into_iter()
            .map(|s| LabelSelector {
                match_labels: (!s.match_labels.is_empty()).then_some(s.match_labels),
                match_expressions: (!s.match_expressions.is_empty()).then(|| {
                    s.match_expressions
                        .into_iter()
                        .map(|e| LabelSelectorRequirement {
                            key: e.key,
                            operator: e.operator,
                            values: (!e.values.is_empty()).then_some(e.values),
                        })
                        .collect()
                }),
            })
            .collect(),
        ..BGPPeerSpec::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_seed_configmap() {
        let (Legacy { pools, .. }, errors) = parse(Some(
            "address-pools:\n- name: default\n  protocol: layer2\n  addresses:\n  - 10.10.39.200-10.10.39.220\n",
        ));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].name, "default");
        assert!(pools[0].auto_assign);
        assert!(pools[0].contains("10.10.39.210".parse().unwrap()));
    }

    #[test]
    fn skips_unknown_protocols_and_bad_pools_but_keeps_good_ones() {
        let (Legacy { pools, .. }, errors) = parse(Some(
            "address-pools:\n- name: arp\n  protocol: arp\n  addresses: [10.0.0.0/24]\n- name: bad\n  addresses: [10.0.0.9-10.0.0.1]\n- name: ok\n  addresses: [10.1.0.0/24]\n  auto-assign: false\n",
        ));
        assert_eq!(pools.len(), 1);
        assert!(!pools[0].auto_assign);
        assert_eq!(errors.len(), 2);
        assert!(
            errors[0].to_string().contains("protocol \"arp\""),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].to_string().contains("\"bad\": spec.addresses[0]"),
            "{}",
            errors[1]
        );
        assert!(matches!(
            parse(Some("address-pools: [")).1[0],
            LegacyError::Yaml(_)
        ));
        assert_eq!(parse(None).1, vec![LegacyError::Missing]);
    }

    #[test]
    fn bgp_pools_come_with_their_peers_advertisements_and_communities() {
        let (legacy, errors) = parse(Some(
            "peers:\n- peer-address: 10.10.40.1\n  peer-asn: 64500\n  my-asn: 64512\n  hold-time: 9s\n  node-selectors:\n  - match-labels: {rack: a}\n\
             bgp-communities:\n  no-advertise: 65535:65282\n\
             address-pools:\n- name: public\n  protocol: bgp\n  addresses: [10.40.0.0/28]\n  bgp-advertisements:\n  - aggregation-length: 28\n    localpref: 50\n    communities: [no-advertise]\n\
             - name: plain\n  protocol: bgp\n  addresses: [10.41.0.0/28]\n",
        ));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(legacy.pools.len(), 2);
        assert!(legacy.pools.iter().all(|p| p.layer2 == Layer2::Off));
        let (name, peer) = &legacy.peers[0];
        assert_eq!(name, "legacy-peer-0");
        let checked = crate::bgp::check::peer(name, peer).unwrap().def;
        assert_eq!(
            (checked.session.hold_time_s, checked.session.peer_asn),
            (9, 64500)
        );
        assert_eq!(
            checked.node_selectors[0].match_labels.as_ref().unwrap()["rack"],
            "a"
        );
        let names: Vec<&str> = legacy
            .advertisements
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(names, ["legacy-public-0", "legacy-plain-0"]);
        let advertisement = crate::bgp::check::advertisement(
            "legacy-public-0",
            &legacy.advertisements[0].1,
            &legacy.aliases,
        )
        .unwrap()
        .def;
        assert_eq!(
            (advertisement.aggregation, advertisement.local_pref),
            ((28, 128), Some(50))
        );
        assert_eq!(advertisement.communities, [0xFFFF_FF02]);
        assert_eq!(advertisement.pools, ["public"]);
    }
}
