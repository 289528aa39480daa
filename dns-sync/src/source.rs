//! What DNS records the cluster asks for: Services of type LoadBalancer and Ingresses turned into
//! [`Endpoint`]s (a name and one target), with every unusable input turned into a [`Rejection`] that names the
//! object and the field. Pure: the controller feeds it objects from its reflectors.
//!
//! The annotations are external-dns's, so objects annotated for external-dns need no change.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{LoadBalancerIngress, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};

/// Hostname annotations, in order of precedence (external-dns reads both).
pub const HOSTNAME_ANNOTATIONS: [&str; 2] = [
    "external-dns.alpha.kubernetes.io/hostname",
    "external-dns.kubernetes.io/hostname",
];
/// TTL annotations (seconds, or a duration such as `1m`).
pub const TTL_ANNOTATIONS: [&str; 2] = [
    "external-dns.alpha.kubernetes.io/ttl",
    "external-dns.kubernetes.io/ttl",
];
/// Target override annotations (comma-separated addresses or names).
pub const TARGET_ANNOTATIONS: [&str; 2] = [
    "external-dns.alpha.kubernetes.io/target",
    "external-dns.kubernetes.io/target",
];
/// The legacy Ingress class annotation.
const INGRESS_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// Which object a record or a rejection comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId {
    /// `service` or `ingress`.
    pub kind: &'static str,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// One name pointing at one target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// Lower-case DNS name without the trailing dot (may start with `*.`).
    pub name: String,
    /// An IP address or a host name.
    pub target: String,
    /// TTL from the annotation, if any.
    pub ttl: Option<u32>,
    /// The object asking for it.
    pub object: ObjectId,
}

/// A name (or a whole object) that cannot be published, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The object.
    pub object: ObjectId,
    /// The field or annotation at fault.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// Which objects and names are in scope.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// Suffixes (`test.org`) a name must end with, on a label boundary; empty means any.
    pub domains: Vec<String>,
    /// Only Ingresses of this class (spec.ingressClassName or the legacy annotation).
    pub ingress_class: Option<String>,
    /// Only objects with these annotation values.
    pub annotations: Vec<(String, String)>,
}

impl Filters {
    fn in_domain(&self, name: &str) -> bool {
        self.domains.is_empty()
            || self.domains.iter().any(|domain| {
                name == domain
                    || name
                        .strip_suffix(domain.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            })
    }

    fn annotations_match(&self, annotations: Option<&BTreeMap<String, String>>) -> bool {
        self.annotations.iter().all(|(key, value)| {
            annotations
                .and_then(|a| a.get(key))
                .is_some_and(|v| v == value)
        })
    }
}

/// What one object asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Records to publish.
    pub endpoints: Vec<Endpoint>,
    /// Inputs that were skipped.
    pub rejections: Vec<Rejection>,
}

/// The records a Service asks for: only type LoadBalancer with a hostname annotation.
pub fn from_service(service: &Service, filters: &Filters) -> Wanted {
    let meta = &service.metadata;
    let object = ObjectId {
        kind: "service",
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    };
    let is_load_balancer = service
        .spec
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .is_some_and(|t| t == "LoadBalancer");
    if !is_load_balancer || !filters.annotations_match(meta.annotations.as_ref()) {
        return Wanted::default();
    }
    let status: Vec<Target> = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ingress| ingress.iter().filter_map(service_target).collect())
        .unwrap_or_default();
    let hostnames = annotation(meta.annotations.as_ref(), &HOSTNAME_ANNOTATIONS)
        .map(|(key, value)| (key, split_list(value)));
    let Some((hostname_key, hostnames)) = hostnames else {
        return Wanted::default();
    };
    collect(
        object,
        meta.annotations.as_ref(),
        hostname_key,
        hostnames,
        status,
        "status.loadBalancer.ingress",
        filters,
    )
}

/// The records an Ingress asks for: every `spec.rules[].host` (and the hostname annotation), pointing at
/// the addresses in its status.
pub fn from_ingress(ingress: &Ingress, filters: &Filters) -> Wanted {
    let meta = &ingress.metadata;
    let object = ObjectId {
        kind: "ingress",
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    };
    if !filters.annotations_match(meta.annotations.as_ref()) {
        return Wanted::default();
    }
    if let Some(class) = &filters.ingress_class {
        let own = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.clone())
            .or_else(|| {
                meta.annotations
                    .as_ref()
                    .and_then(|a| a.get(INGRESS_CLASS_ANNOTATION).cloned())
            });
        if own.as_deref() != Some(class.as_str()) {
            return Wanted::default();
        }
    }
    let mut hostnames: Vec<String> = ingress
        .spec
        .as_ref()
        .and_then(|s| s.rules.as_ref())
        .map(|rules| rules.iter().filter_map(|r| r.host.clone()).collect())
        .unwrap_or_default();
    if let Some((_, extra)) = annotation(meta.annotations.as_ref(), &HOSTNAME_ANNOTATIONS) {
        hostnames.extend(split_list(extra));
    }
    if hostnames.is_empty() {
        return Wanted::default();
    }
    let status: Vec<Target> = ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ingress| ingress.iter().filter_map(ingress_target).collect())
        .unwrap_or_default();
    collect(
        object,
        meta.annotations.as_ref(),
        "spec.rules[].host",
        hostnames,
        status,
        "status.loadBalancer.ingress",
        filters,
    )
}

type Target = String;

fn service_target(ingress: &LoadBalancerIngress) -> Option<Target> {
    ingress.ip.clone().or_else(|| ingress.hostname.clone())
}

fn ingress_target(ingress: &IngressLoadBalancerIngress) -> Option<Target> {
    ingress.ip.clone().or_else(|| ingress.hostname.clone())
}

/// Validates names, TTL and targets of one object and pairs every good name with every target.
fn collect(
    object: ObjectId,
    annotations: Option<&BTreeMap<String, String>>,
    hostname_field: &str,
    hostnames: Vec<String>,
    status: Vec<Target>,
    status_field: &str,
    filters: &Filters,
) -> Wanted {
    let mut wanted = Wanted::default();
    let reject = |wanted: &mut Wanted, field: &str, reason: String| {
        wanted.rejections.push(Rejection {
            object: object.clone(),
            field: field.to_owned(),
            reason,
        });
    };
    let ttl = match annotation(annotations, &TTL_ANNOTATIONS) {
        None => None,
        Some((key, value)) => match parse_ttl(value) {
            Ok(ttl) => Some(ttl),
            Err(reason) => {
                reject(&mut wanted, key, reason);
                return wanted;
            }
        },
    };
    let (targets, target_field) = match annotation(annotations, &TARGET_ANNOTATIONS) {
        Some((key, value)) => (split_list(value), key.to_owned()),
        None => (status, status_field.to_owned()),
    };
    let mut good_targets = Vec::new();
    for target in targets {
        match validate_target(&target) {
            Ok(target) => good_targets.push(target),
            Err(reason) => reject(&mut wanted, &target_field, format!("{target:?}: {reason}")),
        }
    }
    if good_targets.is_empty() {
        reject(
            &mut wanted,
            &target_field,
            "no address to publish yet".to_owned(),
        );
        return wanted;
    }
    good_targets.sort();
    good_targets.dedup();
    let mut names: Vec<String> = Vec::new();
    for hostname in hostnames {
        match validate_hostname(&hostname) {
            Err(reason) => reject(
                &mut wanted,
                hostname_field,
                format!("{hostname:?}: {reason}"),
            ),
            Ok(name) if !filters.in_domain(&name) => reject(
                &mut wanted,
                hostname_field,
                format!("{name:?} is outside --domain-filter {:?}", filters.domains),
            ),
            Ok(name) => names.push(name),
        }
    }
    names.sort();
    names.dedup();
    for name in names {
        for target in &good_targets {
            wanted.endpoints.push(Endpoint {
                name: name.clone(),
                target: target.clone(),
                ttl,
                object: object.clone(),
            });
        }
    }
    wanted
}

fn annotation<'a>(
    annotations: Option<&'a BTreeMap<String, String>>,
    keys: &[&'static str],
) -> Option<(&'static str, &'a str)> {
    let annotations = annotations?;
    keys.iter()
        .find_map(|key| annotations.get(*key).map(|v| (*key, v.as_str())))
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Seconds as an integer, or a duration (`90s`, `5m`, `1h`) as external-dns accepts.
fn parse_ttl(value: &str) -> Result<u32, String> {
    let value = value.trim();
    let seconds = if value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty() {
        value.parse::<u64>().map_err(|e| e.to_string())?
    } else {
        ops::parse_duration(value)
            .map_err(|_| format!("{value:?} is not a number of seconds or a duration like 5m"))?
            .as_secs()
    };
    u32::try_from(seconds)
        .ok()
        .filter(|s| *s <= i32::MAX as u32)
        .ok_or_else(|| format!("{value:?} is too large for a TTL"))
}

/// RFC 1123 host names, optionally with a leading `*.` wildcard; returns the lower-case name.
pub fn validate_hostname(hostname: &str) -> Result<String, String> {
    let name = hostname.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return Err("is empty".to_owned());
    }
    if name.len() > 253 {
        return Err("is longer than 253 characters".to_owned());
    }
    for (i, label) in name.split('.').enumerate() {
        if label == "*" && i == 0 {
            continue;
        }
        if label.is_empty() || label.len() > 63 {
            return Err(format!("label {label:?} must be 1-63 characters"));
        }
        let valid = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !valid {
            return Err(format!(
                "label {label:?} must be letters, digits and inner hyphens (RFC 1123)"
            ));
        }
    }
    if !name.contains('.') {
        return Err("must have at least two labels".to_owned());
    }
    Ok(name)
}

fn validate_target(target: &str) -> Result<String, String> {
    if target.parse::<IpAddr>().is_ok() {
        return Ok(target.to_owned());
    }
    if target.bytes().all(|b| b.is_ascii_digit() || b == b'.') || target.contains(':') {
        return Err("is not a valid IP address".to_owned());
    }
    let name = validate_hostname(target)?;
    if name.starts_with("*.") {
        return Err("a target cannot be a wildcard".to_owned());
    }
    Ok(name)
}

#[cfg(test)]
#[path = "source_tests.rs"]
mod tests;
