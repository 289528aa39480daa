//! The Gateway API's attachment rules as plain functions: which listener hostname a route hostname
//! intersects to, which listener protocols a route kind attaches to, whether a listener's `allowedRoutes`
//! lets a route in, whether a parent accepted a route. They follow the Gateway API specification as
//! external-dns v0.20.0 applies it (`source/gateway.go`), so a route publishes the same names under both.

use std::collections::BTreeMap;

use kube::core::{Selector, SelectorExt};

use super::api::{Condition, GROUP, Listener, ParentReference, RouteKind};

/// The name a route hostname and a listener hostname both accept, if any; `None` on either side means
/// "any host". A `*.` wildcard matches one or more labels (`*.test.org` covers `a.test.org` and
/// `a.b.test.org`, not `test.org`); of two overlapping names the more specific one is the intersection.
/// Both sides are validated, lower-case names ([`crate::source::validate_hostname`]).
pub fn intersect(listener: Option<&str>, route: Option<&str>) -> Option<String> {
    match (listener, route) {
        (None, None) => None,
        (None, Some(one)) | (Some(one), None) => Some(one.to_owned()),
        (Some(a), Some(b)) if a == b => Some(a.to_owned()),
        (Some(a), Some(b)) => {
            // The wider of the two must be a wildcard whose suffix the other ends with.
            let (wide, narrow) = if b.len() < a.len() || (a.len() == b.len() && b.starts_with("*."))
            {
                (b, a)
            } else {
                (a, b)
            };
            let suffix = wide.strip_prefix('*')?;
            narrow.ends_with(suffix).then(|| narrow.to_owned())
        }
    }
}

/// Whether a route of `kind` attaches to a listener of `protocol`: HTTP and GRPC routes to `HTTP` and
/// `HTTPS`, TLS routes to `TLS`, TCP routes to `TCP` and `TLS`, UDP routes to `UDP` (external-dns's pairs).
pub fn protocol_matches(kind: RouteKind, protocol: &str) -> bool {
    match kind {
        RouteKind::Http | RouteKind::Grpc => matches!(protocol, "HTTP" | "HTTPS"),
        RouteKind::Tls => protocol == "TLS",
        RouteKind::Tcp => matches!(protocol, "TCP" | "TLS"),
        RouteKind::Udp => protocol == "UDP",
    }
}

/// Whether a parent's conditions say it accepted the route: the first `Accepted` condition is `True`.
pub fn accepted(conditions: &[Condition]) -> bool {
    conditions
        .iter()
        .find(|c| c.type_ == "Accepted")
        .is_some_and(|c| c.status == "True")
}

/// The namespace and name of the Gateway `parent` refers to from a route in `route_namespace`; `None` for
/// a parent of another kind (a Service, for mesh routes).
pub fn gateway_of<'a>(
    parent: &'a ParentReference,
    route_namespace: &'a str,
) -> Option<(&'a str, &'a str)> {
    let group = non_empty(parent.group.as_deref()).unwrap_or(GROUP);
    let kind = non_empty(parent.kind.as_deref()).unwrap_or("Gateway");
    (group == GROUP && kind == "Gateway").then(|| {
        let namespace = non_empty(parent.namespace.as_deref()).unwrap_or(route_namespace);
        (namespace, parent.name.as_str())
    })
}

/// Whether the route's own `spec.parentRefs` name the Gateway of a `status.parents[]` entry: status
/// entries for parents the route no longer asks for are stale and ignored.
pub fn asked_for(
    spec: &[ParentReference],
    status: &ParentReference,
    route_namespace: &str,
) -> bool {
    let Some(wanted) = gateway_of(status, route_namespace) else {
        return false;
    };
    spec.iter()
        .any(|parent| gateway_of(parent, route_namespace) == Some(wanted))
}

/// The listeners a parent reference selects: the one named by `sectionName` (all without it), on `port`
/// when the reference gives one.
pub fn selected<'a>(
    listeners: &'a [Listener],
    parent: &'a ParentReference,
) -> impl Iterator<Item = &'a Listener> + 'a {
    let section = non_empty(parent.section_name.as_deref());
    listeners.iter().filter(move |listener| {
        section.is_none_or(|s| s == listener.name) && parent.port.is_none_or(|p| p == listener.port)
    })
}

/// Why a listener's `allowedRoutes` keeps a route out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `from: Same` and the route is in another namespace.
    OtherNamespace,
    /// `from: Selector` and the route's namespace does not match (or is unknown).
    NamespaceNotSelected,
    /// `from` is not `Same`, `All` or `Selector`, or the selector does not parse.
    BadRule(String),
    /// `kinds` does not list the route's kind.
    Kind,
}

/// Whether `listener` of a Gateway in `gateway_namespace` lets a route of `kind` from `route_namespace`
/// attach; `namespace_labels` are the labels of the route's namespace (`None` if it is unknown).
pub fn allowed(
    listener: &Listener,
    gateway_namespace: &str,
    route_namespace: &str,
    namespace_labels: Option<&BTreeMap<String, String>>,
    kind: RouteKind,
) -> Result<(), Refusal> {
    let allowed = listener.allowed_routes.as_ref();
    let namespaces = allowed.and_then(|a| a.namespaces.as_ref());
    match namespaces.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
        "All" => {}
        "Same" if gateway_namespace == route_namespace => {}
        "Same" => return Err(Refusal::OtherNamespace),
        "Selector" => {
            let selector = namespaces
                .and_then(|n| n.selector.clone())
                .unwrap_or_default();
            let selector = Selector::try_from(selector)
                .map_err(|e| Refusal::BadRule(format!("allowedRoutes.namespaces.selector: {e}")))?;
            if !namespace_labels.is_some_and(|labels| selector.matches(labels)) {
                return Err(Refusal::NamespaceNotSelected);
            }
        }
        other => {
            return Err(Refusal::BadRule(format!(
                "allowedRoutes.namespaces.from {other:?}"
            )));
        }
    }
    let kinds = allowed.map(|a| a.kinds.as_slice()).unwrap_or_default();
    let listed = kinds.is_empty()
        || kinds.iter().any(|k| {
            non_empty(k.group.as_deref()).unwrap_or(GROUP) == GROUP && k.kind == kind.kind()
        });
    if listed { Ok(()) } else { Err(Refusal::Kind) }
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.is_empty())
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
