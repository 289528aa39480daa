//! What a Service asks of the load balancer, read from its spec, status and annotations into a
//! [`Request`] the allocator understands.
//!
//! Services configured for MetalLB keep working unchanged: its annotations (both the old
//! `metallb.universe.tf/` and the new `metallb.io/` prefix) are read next to ours, in this order of precedence:
//! `groundwork.dev/`, `metallb.io/`, `metallb.universe.tf/`, and last the deprecated `spec.loadBalancerIP`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Service, ServiceSpec};

use crate::ranges::Family;

/// Our annotation prefix.
pub const PREFIX: &str = "groundwork.dev/";
/// Annotation prefixes read for requests, in precedence order.
const PREFIXES: [&str; 3] = [PREFIX, "metallb.io/", "metallb.universe.tf/"];
// Earlier versions wrote the `groundwork.dev/announcing-node` annotation; the announcing node is now a
// status condition (`proto::service_status`).
pub use proto::service_status::{ANNOUNCING_CONDITION, announcing_node};

/// A Service's `namespace/name`: how the controller names one in its maps, logs and Events. One string
/// inside, so keys order exactly as their text does (the tie-break between Services created in the same
/// second).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey(String);

impl ServiceKey {
    /// The key of the Service `name` in `namespace`.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self(format!("{namespace}/{name}"))
    }

    /// The key of `service`.
    pub fn of(service: &Service) -> Self {
        Self::new(
            service.metadata.namespace.as_deref().unwrap_or_default(),
            service.metadata.name.as_deref().unwrap_or_default(),
        )
    }

    /// The Service's namespace.
    pub fn namespace(&self) -> &str {
        self.0
            .split_once('/')
            .map_or("", |(namespace, _)| namespace)
    }

    /// The Service's name.
    pub fn name(&self) -> &str {
        self.0
            .split_once('/')
            .map_or(self.0.as_str(), |(_, name)| name)
    }

    /// `namespace/name`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by Service can be read with the key's text: it orders, hashes and compares as the key does.
impl std::borrow::Borrow<str> for ServiceKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Tests name Services as `"namespace/name"`.
#[cfg(test)]
impl From<&str> for ServiceKey {
    fn from(key: &str) -> Self {
        Self(key.to_owned())
    }
}

#[cfg(test)]
impl PartialEq<&str> for ServiceKey {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
impl PartialEq<str> for ServiceKey {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// As its text, so logs of key sets read `{"web/a", "web/b"}`.
impl std::fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a Service's traffic may go to any node (Cluster) or only to nodes with a ready endpoint (Local).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficPolicy {
    /// `externalTrafficPolicy: Cluster` (the default).
    Cluster,
    /// `externalTrafficPolicy: Local`.
    Local,
}

/// How many families a Service wants addresses for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyPolicy {
    /// Exactly the first family.
    Single,
    /// Both if pools allow, else the first that works.
    PreferDual,
    /// Both, or nothing.
    RequireDual,
}

/// A LoadBalancer Service's wishes.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `namespace/name`.
    pub key: ServiceKey,
    /// Namespace.
    pub namespace: String,
    /// Labels (pool service selectors).
    pub labels: BTreeMap<String, String>,
    /// Families in preference order (from `spec.ipFamilies`, or from the requested addresses).
    pub families: Vec<Family>,
    /// From `spec.ipFamilyPolicy`.
    pub family_policy: FamilyPolicy,
    /// Specific addresses asked for (annotation or `spec.loadBalancerIP`).
    pub requested: Vec<IpAddr>,
    /// A pool asked for by name.
    pub pool: Option<String>,
    /// Services with the same key may share an address, if their ports do not clash.
    pub sharing_key: Option<String>,
    /// `(protocol, port)` pairs, for sharing.
    pub ports: Vec<(String, i32)>,
    /// From `spec.externalTrafficPolicy`.
    pub traffic_policy: TrafficPolicy,
    /// The Service's pod selector (Local Services share only with the same selector).
    pub selector: BTreeMap<String, String>,
    /// Addresses in `status.loadBalancer.ingress` now.
    pub current: Vec<IpAddr>,
    /// `metadata.creationTimestamp` in seconds, for "the older claim wins".
    pub created: i64,
}

/// A field of the Service that cannot be honoured as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// An address in an annotation or `spec.loadBalancerIP` does not parse.
    #[error("{field}: {value:?} is not an IP address")]
    BadAddress {
        /// Annotation key or spec path.
        field: String,
        /// The offending text.
        value: String,
    },
    /// Two requested addresses of one family.
    #[error("{field}: more than one {family} address requested")]
    DuplicateFamily {
        /// Annotation key or spec path.
        field: String,
        /// The family asked twice.
        family: Family,
    },
}

/// Which Services this controller handles.
#[derive(Debug, Clone)]
pub struct ClassFilter {
    /// Our `spec.loadBalancerClass`.
    pub class: String,
    /// Also handle LoadBalancer Services without a class.
    pub claim_unclassed: bool,
}

impl ClassFilter {
    /// Whether `service` is a LoadBalancer Service this controller handles.
    pub fn handles(&self, service: &Service) -> bool {
        let Some(spec) = &service.spec else {
            return false;
        };
        if spec.type_.as_deref() != Some("LoadBalancer") {
            return false;
        }
        match spec.load_balancer_class.as_deref() {
            None => self.claim_unclassed,
            Some(class) => class == self.class,
        }
    }
}

/// Reads a Service's request. The key and namespace are always filled, even when an error is returned.
pub fn read(service: &Service) -> Result<Request, RequestError> {
    let meta = &service.metadata;
    let namespace = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let no_annotations = BTreeMap::new();
    let annotations = meta.annotations.as_ref().unwrap_or(&no_annotations);
    let default_spec = ServiceSpec::default();
    let spec = service.spec.as_ref().unwrap_or(&default_spec);

    let requested = requested_addresses(annotations, spec)?;
    let (families, family_policy) = families(spec, &requested);
    Ok(Request {
        key: ServiceKey::new(&namespace, &name),
        namespace,
        labels: meta.labels.clone().unwrap_or_default(),
        families,
        family_policy,
        requested,
        pool: annotation(annotations, "address-pool").map(|(_, v)| v),
        sharing_key: annotation(annotations, "allow-shared-ip").map(|(_, v)| v),
        ports: spec
            .ports
            .iter()
            .flatten()
            .map(|p| (p.protocol.clone().unwrap_or_else(|| "TCP".into()), p.port))
            .collect(),
        traffic_policy: if spec.external_traffic_policy.as_deref() == Some("Local") {
            TrafficPolicy::Local
        } else {
            TrafficPolicy::Cluster
        },
        selector: spec.selector.clone().unwrap_or_default(),
        current: status_addresses(service),
        created: meta
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_second()),
    })
}

/// The first non-empty annotation `<prefix><suffix>` over the accepted prefixes, with its full key.
fn annotation(annotations: &BTreeMap<String, String>, suffix: &str) -> Option<(String, String)> {
    PREFIXES.iter().find_map(|prefix| {
        let key = format!("{prefix}{suffix}");
        annotations
            .get(&key)
            .map(|v| (key, v.trim().to_owned()))
            .filter(|(_, v)| !v.is_empty())
    })
}

/// The addresses asked for, by annotation or else `spec.loadBalancerIP`: at most one per family.
fn requested_addresses(
    annotations: &BTreeMap<String, String>,
    spec: &ServiceSpec,
) -> Result<Vec<IpAddr>, RequestError> {
    let mut requested = Vec::new();
    let requested_from = annotation(annotations, "loadBalancerIPs").or_else(|| {
        spec.load_balancer_ip
            .clone()
            .filter(|v| !v.trim().is_empty())
            .map(|v| ("spec.loadBalancerIP".to_owned(), v))
    });
    let Some((field, value)) = requested_from else {
        return Ok(requested);
    };
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let address: IpAddr = part.parse().map_err(|_| RequestError::BadAddress {
            field: field.clone(),
            value: part.to_owned(),
        })?;
        if requested
            .iter()
            .any(|r: &IpAddr| Family::of(*r) == Family::of(address))
        {
            return Err(RequestError::DuplicateFamily {
                field,
                family: Family::of(address),
            });
        }
        requested.push(address);
    }
    Ok(requested)
}

/// The families to allocate and how strictly: from the spec, unless addresses were asked for, which decide
/// them (exactly those).
fn families(spec: &ServiceSpec, requested: &[IpAddr]) -> (Vec<Family>, FamilyPolicy) {
    if !requested.is_empty() {
        let families: Vec<Family> = requested.iter().map(|a| Family::of(*a)).collect();
        let policy = if families.len() == 2 {
            FamilyPolicy::RequireDual
        } else {
            FamilyPolicy::Single
        };
        return (families, policy);
    }
    let mut families: Vec<Family> = spec
        .ip_families
        .iter()
        .flatten()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        })
        .collect();
    if families.is_empty() {
        families.push(Family::V4);
    }
    let policy = match spec.ip_family_policy.as_deref() {
        Some("PreferDualStack") => FamilyPolicy::PreferDual,
        Some("RequireDualStack") => FamilyPolicy::RequireDual,
        _ => FamilyPolicy::Single,
    };
    (families, policy)
}

/// The Service `key` as the reflector `services` shows it.
pub(crate) fn find(
    services: &kube::runtime::reflector::Store<Service>,
    key: &ServiceKey,
) -> Option<std::sync::Arc<Service>> {
    services.get(&kube::runtime::reflector::ObjectRef::new(key.name()).within(key.namespace()))
}

/// The addresses a Service's status lists (entries that do not parse are left out).
pub(crate) fn status_addresses(service: &Service) -> Vec<IpAddr> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref().and_then(|ip| ip.parse().ok()))
        .collect()
}

/// Addresses as people read them in Events and messages: `a, b`.
pub(crate) fn join_addresses(addresses: &[IpAddr]) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(json: serde_json::Value) -> Service {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn reads_metallb_annotations_when_ours_are_absent() {
        let svc = service(serde_json::json!({
            "metadata": {"namespace": "web", "name": "front", "annotations": {
                "metallb.universe.tf/loadBalancerIPs": "10.10.39.205",
                "metallb.universe.tf/address-pool": "legacy",
                "metallb.io/allow-shared-ip": "front"
            }},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}
        }));
        let request = read(&svc).unwrap();
        assert_eq!(request.key, "web/front");
        assert_eq!(
            request.requested,
            vec!["10.10.39.205".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(request.pool.as_deref(), Some("legacy"));
        assert_eq!(request.sharing_key.as_deref(), Some("front"));
        assert_eq!(request.ports, vec![("TCP".into(), 80), ("UDP".into(), 53)]);
        assert_eq!(request.families, vec![Family::V4]);
    }

    #[test]
    fn our_annotation_wins_over_metallb_and_the_spec_field() {
        let svc = service(serde_json::json!({
            "metadata": {"namespace": "a", "name": "b", "annotations": {
                "groundwork.dev/loadBalancerIPs": "10.0.0.1,fd00::1",
                "metallb.io/loadBalancerIPs": "10.0.0.2"
            }},
            "spec": {"type": "LoadBalancer", "loadBalancerIP": "10.0.0.3", "ipFamilies": ["IPv4"]}
        }));
        let request = read(&svc).unwrap();
        assert_eq!(request.requested.len(), 2);
        assert_eq!(request.families, vec![Family::V4, Family::V6]);
        assert_eq!(request.family_policy, FamilyPolicy::RequireDual);
    }

    #[test]
    fn a_bad_requested_address_names_the_annotation() {
        let svc = service(serde_json::json!({
            "metadata": {"namespace": "a", "name": "b", "annotations": {
                "metallb.io/loadBalancerIPs": "10.0.0.300"
            }},
            "spec": {"type": "LoadBalancer"}
        }));
        assert_eq!(
            read(&svc).unwrap_err().to_string(),
            "metallb.io/loadBalancerIPs: \"10.0.0.300\" is not an IP address"
        );
        let twice = service(serde_json::json!({
            "metadata": {"namespace": "a", "name": "b"},
            "spec": {"type": "LoadBalancer", "loadBalancerIP": "10.0.0.1"}
        }));
        assert!(read(&twice).is_ok());
    }

    #[test]
    fn dual_stack_follows_ip_families_and_policy() {
        let svc = service(serde_json::json!({
            "metadata": {"namespace": "a", "name": "b"},
            "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv6", "IPv4"], "ipFamilyPolicy": "PreferDualStack",
                     "externalTrafficPolicy": "Local"}
        }));
        let request = read(&svc).unwrap();
        assert_eq!(request.families, vec![Family::V6, Family::V4]);
        assert_eq!(request.family_policy, FamilyPolicy::PreferDual);
        assert_eq!(request.traffic_policy, TrafficPolicy::Local);
    }

    #[test]
    fn the_class_filter_leaves_other_implementations_alone() {
        let filter = ClassFilter {
            class: "groundwork.dev/lb".into(),
            claim_unclassed: true,
        };
        let with = |class: Option<&str>, kind: &str| {
            service(serde_json::json!({
                "metadata": {"namespace": "a", "name": "b"},
                "spec": {"type": kind, "loadBalancerClass": class}
            }))
        };
        assert!(filter.handles(&with(None, "LoadBalancer")));
        assert!(filter.handles(&with(Some("groundwork.dev/lb"), "LoadBalancer")));
        assert!(!filter.handles(&with(Some("metallb.io/metallb"), "LoadBalancer")));
        assert!(!filter.handles(&with(None, "ClusterIP")));
        let strict = ClassFilter {
            claim_unclassed: false,
            ..filter
        };
        assert!(!strict.handles(&with(None, "LoadBalancer")));
    }
}
