//! The `IPPool` custom resource (`groundwork.dev/v1alpha1`) and its checked form, [`PoolDef`].
//!
//! The Rust types are the schema: the CRD YAML under `deploy/crds/` is generated from them and a test fails
//! when the two drift. A pool that does not check out is never fatal: [`PoolDef::from_spec`] names the field,
//! the controller reports it as a condition on the pool, and addresses already given out stay where they are.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ranges::{AddressRange, Family, RangeError};

/// A set of addresses LoadBalancer Services may get, who may get them, and where they are announced.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "groundwork.dev",
    version = "v1alpha1",
    kind = "IPPool",
    plural = "ippools",
    shortname = "ippool",
    status = "IPPoolStatus",
    printcolumn = r#"{"name":"Addresses","type":"string","jsonPath":".spec.addresses"}"#,
    printcolumn = r#"{"name":"Assigned v4","type":"integer","jsonPath":".status.assignedIPv4"}"#,
    printcolumn = r#"{"name":"Available v4","type":"integer","jsonPath":".status.availableIPv4"}"#,
    printcolumn = r#"{"name":"Assigned v6","type":"integer","jsonPath":".status.assignedIPv6"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IPPoolSpec {
    /// CIDRs (`10.10.39.0/24`, `fd10:39::/120`) and inclusive ranges (`10.10.39.200-10.10.39.220`).
    pub addresses: Vec<String>,
    /// Whether Services get addresses from this pool without asking for it by name or address.
    #[serde(default = "default_true")]
    pub auto_assign: bool,
    /// Skip IPv4 addresses ending in .0 and .255.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,
    /// Which Services may get addresses from this pool (all when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
    /// Which nodes and interfaces may announce the pool's addresses (all eligible when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce: Option<AnnounceSpec>,
}

fn default_true() -> bool {
    true
}

/// Limits on the Services a pool serves; a Service must pass every list that is set.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Namespaces by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces by label; any selector matching is enough.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,
    /// Services by label; any selector matching is enough.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

/// Where a pool's addresses are announced.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnnounceSpec {
    /// Only nodes matching this selector announce (all nodes when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// Interfaces to announce on (every eligible interface of the node when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
}

/// What the controller reports about a pool.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IPPoolStatus {
    /// IPv4 addresses given to Services.
    #[serde(rename = "assignedIPv4")]
    pub assigned_ipv4: u64,
    /// IPv4 addresses still free (saturating).
    #[serde(rename = "availableIPv4")]
    pub available_ipv4: u64,
    /// IPv6 addresses given to Services.
    #[serde(rename = "assignedIPv6")]
    pub assigned_ipv6: u64,
    /// IPv6 addresses still free (saturating at 2^64-1).
    #[serde(rename = "availableIPv6")]
    pub available_ipv6: u64,
    /// `Ready` (the spec checks out), `Overlapping` (shares addresses with another pool), `AddressesInUseRemoved`
    /// (Services hold addresses the spec no longer lists).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A pool whose spec checked out, as the allocator uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolDef {
    /// Pool name (cluster-scoped, unique).
    pub name: String,
    /// Its ranges, in the order given.
    pub ranges: Vec<AddressRange>,
    /// See [`IPPoolSpec::auto_assign`].
    pub auto_assign: bool,
    /// See [`IPPoolSpec::avoid_buggy_ips`].
    pub avoid_buggy_ips: bool,
    /// See [`IPPoolSpec::service_allocation`].
    pub allocation: ServiceAllocation,
    /// See [`IPPoolSpec::announce`].
    pub announce: AnnounceSpec,
    /// Whether and from which nodes its addresses are answered by ARP/NDP.
    pub layer2: Layer2,
}

/// How a pool's addresses are announced on layer 2.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer2 {
    /// From nodes matching `announce.nodeSelector` (every IPPool, and the legacy ConfigMap's layer-2 pools).
    Pool,
    /// From nodes matching any of these (MetalLB's `L2Advertisement`s selecting the pool; empty: every
    /// node).
    Selected(Vec<LabelSelector>),
    /// Not at all: the pool is advertised by BGP only (a MetalLB pool no `L2Advertisement` selects, a
    /// legacy `protocol: bgp` pool).
    Off,
}

/// A pool field that does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// An entry of `spec.addresses`.
    #[error("spec.addresses[{index}]: {error}")]
    Range {
        /// Position in the list.
        index: usize,
        /// What is wrong.
        error: RangeError,
    },
    /// `spec.addresses` is empty.
    #[error("spec.addresses: no addresses")]
    Empty,
    /// A label selector that cannot be evaluated.
    #[error("{field}: {message}")]
    Selector {
        /// Path of the selector.
        field: String,
        /// Why.
        message: String,
    },
}

impl PoolDef {
    /// Checks a pool spec.
    pub fn from_spec(name: &str, spec: &IPPoolSpec) -> Result<Self, PoolError> {
        if spec.addresses.is_empty() {
            return Err(PoolError::Empty);
        }
        let ranges = spec
            .addresses
            .iter()
            .enumerate()
            .map(|(index, text)| {
                text.parse::<AddressRange>()
                    .map_err(|error| PoolError::Range { index, error })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let allocation = spec.service_allocation.clone().unwrap_or_default();
        let announce = spec.announce.clone().unwrap_or_default();
        for (i, selector) in allocation.namespace_selectors.iter().enumerate() {
            check_selector(
                &format!("spec.serviceAllocation.namespaceSelectors[{i}]"),
                selector,
            )?;
        }
        for (i, selector) in allocation.service_selectors.iter().enumerate() {
            check_selector(
                &format!("spec.serviceAllocation.serviceSelectors[{i}]"),
                selector,
            )?;
        }
        if let Some(selector) = &announce.node_selector {
            check_selector("spec.announce.nodeSelector", selector)?;
        }
        Ok(Self {
            name: name.to_owned(),
            ranges,
            auto_assign: spec.auto_assign,
            avoid_buggy_ips: spec.avoid_buggy_ips,
            allocation,
            announce,
            layer2: Layer2::Pool,
        })
    }

    /// The same pool announced on layer 2 as `layer2` says.
    #[must_use]
    pub fn with_layer2(mut self, layer2: Layer2) -> Self {
        self.layer2 = layer2;
        self
    }

    /// Whether the pool holds `address` (buggy addresses included: a Service may hold one from before).
    pub fn contains(&self, address: std::net::IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(address))
    }

    /// Whether the pool has any range of `family`.
    pub fn has_family(&self, family: Family) -> bool {
        self.ranges.iter().any(|r| r.family() == family)
    }

    /// Whether a Service in `namespace` with `labels`, whose namespace carries `namespace_labels`, may get
    /// addresses from this pool.
    pub fn admits(
        &self,
        namespace: &str,
        namespace_labels: &BTreeMap<String, String>,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        let a = &self.allocation;
        (a.namespaces.is_empty() || a.namespaces.iter().any(|n| n == namespace))
            && (a.namespace_selectors.is_empty()
                || a.namespace_selectors
                    .iter()
                    .any(|s| selector_matches(s, namespace_labels)))
            && (a.service_selectors.is_empty()
                || a.service_selectors
                    .iter()
                    .any(|s| selector_matches(s, labels)))
    }

    /// Whether a node with `labels` may announce this pool's addresses.
    pub fn announces_on(&self, node_labels: &BTreeMap<String, String>) -> bool {
        match &self.layer2 {
            Layer2::Pool => self
                .announce
                .node_selector
                .as_ref()
                .is_none_or(|s| selector_matches(s, node_labels)),
            Layer2::Selected(selectors) => {
                selectors.is_empty() || selectors.iter().any(|s| selector_matches(s, node_labels))
            }
            Layer2::Off => false,
        }
    }
}

fn check_selector(field: &str, selector: &LabelSelector) -> Result<(), PoolError> {
    kube::core::Selector::try_from(selector.clone())
        .map(|_| ())
        .map_err(|e| PoolError::Selector {
            field: field.to_owned(),
            message: e.to_string(),
        })
}

/// Evaluates a selector that [`PoolDef::from_spec`] checked; one that cannot be evaluated matches nothing.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    use kube::core::SelectorExt;
    kube::core::Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn spec(addresses: &[&str]) -> IPPoolSpec {
        IPPoolSpec {
            addresses: addresses.iter().map(|s| (*s).to_owned()).collect(),
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: None,
            announce: None,
        }
    }

    #[test]
    fn a_bad_range_is_named_by_its_position() {
        let error =
            PoolDef::from_spec("p", &spec(&["10.0.0.0/24", "10.0.1.9-10.0.1.1"])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "spec.addresses[1]: \"10.0.1.9-10.0.1.1\": the first address is after the last"
        );
        assert_eq!(
            PoolDef::from_spec("p", &spec(&[])).unwrap_err(),
            PoolError::Empty
        );
    }

    #[test]
    fn the_spec_defaults_match_metallb() {
        let parsed: IPPoolSpec =
            serde_json::from_value(serde_json::json!({"addresses": ["10.0.0.0/24"]})).unwrap();
        assert!(parsed.auto_assign);
        assert!(!parsed.avoid_buggy_ips);
    }

    #[test]
    fn selectors_limit_services_namespaces_and_nodes() {
        let mut s = spec(&["10.0.0.0/24"]);
        s.service_allocation = Some(ServiceAllocation {
            namespaces: vec!["web".into()],
            namespace_selectors: vec![],
            service_selectors: vec![LabelSelector {
                match_labels: Some([("tier".to_owned(), "edge".to_owned())].into()),
                match_expressions: None,
            }],
        });
        s.announce = Some(AnnounceSpec {
            node_selector: Some(LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "edge".into(),
                    operator: "Exists".into(),
                    values: None,
                }]),
            }),
            interfaces: vec![],
        });
        let pool = PoolDef::from_spec("p", &s).unwrap();
        let edge: BTreeMap<_, _> = [("tier".to_owned(), "edge".to_owned())].into();
        assert!(pool.admits("web", &BTreeMap::new(), &edge));
        assert!(!pool.admits("other", &BTreeMap::new(), &edge));
        assert!(!pool.admits("web", &BTreeMap::new(), &BTreeMap::new()));
        assert!(pool.announces_on(&[("edge".to_owned(), String::new())].into()));
        assert!(!pool.announces_on(&BTreeMap::new()));
    }

    #[test]
    fn an_invalid_selector_is_named() {
        let mut s = spec(&["10.0.0.0/24"]);
        s.announce = Some(AnnounceSpec {
            node_selector: Some(LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "edge".into(),
                    operator: "Sometimes".into(),
                    values: None,
                }]),
            }),
            interfaces: vec![],
        });
        let error = PoolDef::from_spec("p", &s).unwrap_err().to_string();
        assert!(error.starts_with("spec.announce.nodeSelector: "), "{error}");
    }
}
