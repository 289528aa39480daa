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
//! Only layer-2 pools mean anything to us; a BGP pool is reported and skipped, not guessed at.

use serde::Deserialize;

use crate::pool::{IPPoolSpec, PoolDef, PoolError};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct LegacyConfig {
    #[serde(default)]
    address_pools: Vec<LegacyPool>,
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
    /// A pool with another protocol than layer2.
    #[error(
        "data.config address-pools[{index}] {name:?}: protocol {protocol:?} is not supported (only layer2)"
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

/// Reads the pools from a ConfigMap's `config` value. Good pools are returned even when others are not.
pub fn parse(config: Option<&str>) -> (Vec<PoolDef>, Vec<LegacyError>) {
    let Some(text) = config else {
        return (vec![], vec![LegacyError::Missing]);
    };
    let parsed: LegacyConfig = match serde_yaml::from_str(text) {
        Ok(parsed) => parsed,
        Err(e) => return (vec![], vec![LegacyError::Yaml(e.to_string())]),
    };
    let mut pools = Vec::new();
    let mut errors = Vec::new();
    for (index, legacy) in parsed.address_pools.into_iter().enumerate() {
        let protocol = legacy.protocol.unwrap_or_else(|| "layer2".into());
        if protocol != "layer2" {
            errors.push(LegacyError::Protocol {
                index,
                name: legacy.name,
                protocol,
            });
            continue;
        }
        let spec = IPPoolSpec {
            addresses: legacy.addresses,
            auto_assign: legacy.auto_assign,
            avoid_buggy_ips: legacy.avoid_buggy_ips,
            service_allocation: None,
            announce: None,
        };
        match PoolDef::from_spec(&legacy.name, &spec) {
            Ok(pool) => pools.push(pool),
            Err(error) => errors.push(LegacyError::Pool {
                index,
                name: legacy.name,
                error,
            }),
        }
    }
    (pools, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_seed_configmap() {
        let (pools, errors) = parse(Some(
            "address-pools:\n- name: default\n  protocol: layer2\n  addresses:\n  - 10.10.39.200-10.10.39.220\n",
        ));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].name, "default");
        assert!(pools[0].auto_assign);
        assert!(pools[0].contains("10.10.39.210".parse().unwrap()));
    }

    #[test]
    fn skips_bgp_and_bad_pools_but_keeps_good_ones() {
        let (pools, errors) = parse(Some(
            "address-pools:\n- name: bgp\n  protocol: bgp\n  addresses: [10.0.0.0/24]\n- name: bad\n  addresses: [10.0.0.9-10.0.0.1]\n- name: ok\n  addresses: [10.1.0.0/24]\n  auto-assign: false\n",
        ));
        assert_eq!(pools.len(), 1);
        assert!(!pools[0].auto_assign);
        assert_eq!(errors.len(), 2);
        assert!(
            errors[0].to_string().contains("protocol \"bgp\""),
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
}
