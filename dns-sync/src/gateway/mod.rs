//! Gateway API routes as DNS names, as external-dns v0.20.0's `gateway-*route` sources make them: a route
//! (`HTTPRoute`, `GRPCRoute`, `TLSRoute`, `TCPRoute`, `UDPRoute`) is published at the addresses of the
//! Gateways that accepted it, under its hostnames intersected with the hostnames of the listeners it
//! attached to.
//!
//! Pure, like [`crate::source`]: [`from_route`] takes one route and a [`World`] (the Gateways and namespaces
//! the reflectors hold) and returns what it asks for; the rules themselves are in [`rules`]. The watches are
//! in [`watch`].
//!
//! A route is attached to a Gateway for each of its `status.parents[]` entries that the route still names
//! in `spec.parentRefs`, that is a `Gateway` dns-sync watches (`--gateway-name`, `--gateway-namespace`,
//! `--gateway-label-filter`), and whose `Accepted` condition is `True`. Through such a parent, a route
//! hostname is published where it intersects the hostname of a listener that the parent reference selects
//! (`sectionName`, `port`), whose protocol the route kind speaks, and whose `allowedRoutes` let the route in
//! (namespaces `Same`/`All`/`Selector`, and `kinds`).

pub mod api;
pub mod rules;
pub mod watch;

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::source::{
    self, FQDN_TEMPLATE_FIELD, Filters, HOSTNAME_ANNOTATIONS, ObjectId, Rejection, RejectionKind,
    TARGET_ANNOTATIONS, Targets, Wanted,
};
use api::{Gateway, Route, RouteKind};

/// Where a route's names come from when it has no hostnames of its own: its listener's hostname.
pub const LISTENER_HOSTNAME_FIELD: &str = "Gateway spec.listeners[].hostname";
/// The route's own host names.
pub const HOSTNAMES_FIELD: &str = "spec.hostnames";
/// Where a Gateway's addresses are read from.
pub const ADDRESSES_FIELD: &str = "Gateway status.addresses";
/// The Gateway's target annotation, which replaces its addresses.
pub const GATEWAY_TARGET_FIELD: &str = "Gateway external-dns.alpha.kubernetes.io/target";

/// Which Gateways and routes are in scope.
#[derive(Debug, Clone, Default)]
pub struct GatewaySettings {
    /// The route kinds asked for with `--source gateway-*route`; empty: no Gateway API watches at all.
    pub routes: Vec<RouteKind>,
    /// `--gateway-name`: only Gateways of this name.
    pub name: Option<String>,
    /// `--gateway-namespace` and `--gateway-label-filter`: which Gateways are watched.
    pub scope: crate::config::WatchScope,
}

/// The Gateways and namespaces routes are resolved against.
#[derive(Debug, Default)]
pub struct World<'a> {
    gateways: HashMap<(&'a str, &'a str), &'a Gateway>,
    namespace_labels: HashMap<&'a str, &'a BTreeMap<String, String>>,
    name: Option<&'a str>,
}

impl<'a> World<'a> {
    /// The world of these Gateways (only those named `name`, when given) and these namespaces.
    pub fn new(
        gateways: impl IntoIterator<Item = &'a Gateway>,
        namespaces: impl IntoIterator<Item = &'a ObjectMeta>,
        name: Option<&'a str>,
    ) -> Self {
        static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
        Self {
            gateways: gateways
                .into_iter()
                .map(|g| {
                    let meta = &g.metadata;
                    let key = (
                        meta.namespace.as_deref().unwrap_or_default(),
                        meta.name.as_deref().unwrap_or_default(),
                    );
                    (key, g)
                })
                .collect(),
            namespace_labels: namespaces
                .into_iter()
                .map(|meta| {
                    let name = meta.name.as_deref().unwrap_or_default();
                    (name, meta.labels.as_ref().unwrap_or(&NO_LABELS))
                })
                .collect(),
            name,
        }
    }

    fn gateway(&self, namespace: &str, name: &str) -> Option<&'a Gateway> {
        if self.name.is_some_and(|wanted| wanted != name) {
            return None;
        }
        self.gateways.get(&(namespace, name)).copied()
    }
}

/// One candidate name of a route: a validated host name, or `None` for "whatever the listener accepts"
/// (a route without hostnames), and the field it came from.
type Candidate = (Option<String>, &'static str);

/// The names a route publishes through each Gateway (by namespace and name), with their fields.
type Through<'a> = BTreeMap<(&'a str, &'a str), (&'a Gateway, Vec<(String, &'static str)>)>;

/// What a route of `kind` asks for: one [`Wanted`] per Gateway it publishes through (each at that
/// Gateway's addresses), and the rejections of its bad inputs.
pub fn from_route(
    kind: RouteKind,
    route: &Route,
    world: &World<'_>,
    filters: &Filters,
) -> Vec<Wanted> {
    let meta = &route.metadata;
    if !filters.annotations_match(meta.annotations.as_ref()) {
        return Vec::new();
    }
    let object = ObjectId::of(kind.id(), meta);
    let mut rejections = Vec::new();
    let candidates = candidates(kind, route, filters, &object, &mut rejections);
    if candidates.len() > filters.limits.names_per_object {
        // Counted before anything is matched against listeners, as for other objects: the shared limit
        // check keeps what the route had published.
        let names = candidates
            .iter()
            .map(|(name, field)| (name.as_deref().unwrap_or_default(), *field))
            .collect();
        let targets = Targets::Overridable(Vec::new(), ADDRESSES_FIELD);
        return vec![source::collect(object, meta, names, targets, filters)];
    }
    let Attached {
        through,
        matched,
        any_accepted,
    } = attach(kind, route, world, &candidates, &object);
    if any_accepted {
        for ((candidate, field), matched) in candidates.iter().zip(matched) {
            if let (Some(name), false) = (candidate, matched) {
                rejections.push(Rejection {
                    object: object.clone(),
                    field: (*field).to_owned(),
                    reason: format!(
                        "{name:?}: no listener of the Gateways that accepted the route takes it (its hostname, the parentRef's sectionName and port, its protocol and allowedRoutes decide)"
                    ),
                    kind: RejectionKind::Invalid,
                });
            }
        }
    }
    let mut found: Vec<Wanted> = through
        .into_iter()
        .map(|((namespace, name), (gateway, hosts))| {
            let hostnames = hosts.iter().map(|(h, f)| (h.as_str(), *f)).collect();
            let mut wanted = source::collect(
                object.clone(),
                meta,
                hostnames,
                gateway_targets(gateway),
                filters,
            );
            // Fields read from the Gateway (addresses, its target annotation, a listener's hostname) name it.
            for rejection in &mut wanted.rejections {
                if rejection.field.starts_with("Gateway ") {
                    rejection.field = format!("{} ({namespace}/{name})", rejection.field);
                }
            }
            wanted
        })
        .collect();
    // One route waits once, however many of its Gateways have no address yet (it is one waiting object).
    let mut waits = found.iter_mut().filter(|w| w.waiting.is_some()).skip(1);
    for wanted in &mut waits {
        wanted.waiting = None;
    }
    if !rejections.is_empty() {
        found.push(Wanted {
            rejections,
            ..Wanted::default()
        });
    }
    found
}

/// Where a route is attached, and which of its candidate names that reaches.
struct Attached<'a> {
    /// The names it publishes through each Gateway.
    through: Through<'a>,
    /// For each candidate, whether some listener took it.
    matched: Vec<bool>,
    /// Whether any parent dns-sync watches accepted the route.
    any_accepted: bool,
}

/// Matches a route's candidate names against the listeners of the Gateways that accepted it.
fn attach<'a>(
    kind: RouteKind,
    route: &'a Route,
    world: &World<'a>,
    candidates: &[Candidate],
    object: &ObjectId,
) -> Attached<'a> {
    let route_namespace = route.metadata.namespace.as_deref().unwrap_or_default();
    let mut through = Through::new();
    let mut matched = vec![false; candidates.len()];
    let mut any_accepted = false;
    let parents = route.status.iter().flat_map(|s| s.parents.iter());
    for parent in parents {
        let reference = &parent.parent_ref;
        if !rules::asked_for(&route.spec.parent_refs, reference, route_namespace) {
            continue;
        }
        let Some((namespace, name)) = rules::gateway_of(reference, route_namespace) else {
            continue;
        };
        let Some(gateway) = world.gateway(namespace, name) else {
            continue;
        };
        if !rules::accepted(&parent.conditions) {
            tracing::debug!(route = %object, gateway = %format!("{namespace}/{name}"), "not accepted by this parent");
            continue;
        }
        any_accepted = true;
        let labels = world.namespace_labels.get(route_namespace).copied();
        for listener in rules::selected(&gateway.spec.listeners, reference) {
            if !rules::protocol_matches(kind, &listener.protocol) {
                continue;
            }
            if let Err(refusal) = rules::allowed(listener, namespace, route_namespace, labels, kind)
            {
                tracing::debug!(route = %object, gateway = %format!("{namespace}/{name}"), listener = %listener.name, ?refusal, "listener does not allow the route");
                continue;
            }
            // A hostname that is not one takes nothing (never "any": the CRD refuses such a listener anyway).
            let listener_host = match listener.hostname.as_deref().filter(|h| !h.is_empty()) {
                None => None,
                Some(hostname) => match source::validate_hostname(hostname) {
                    Ok(hostname) => Some(hostname),
                    Err(_) => continue,
                },
            };
            for (i, (candidate, field)) in candidates.iter().enumerate() {
                let Some(host) = rules::intersect(listener_host.as_deref(), candidate.as_deref())
                else {
                    continue;
                };
                matched[i] = true;
                let field = if candidate.is_some() {
                    *field
                } else {
                    LISTENER_HOSTNAME_FIELD
                };
                let (_, hosts) = through
                    .entry((namespace, name))
                    .or_insert_with(|| (gateway, Vec::new()));
                hosts.push((host, field));
            }
        }
    }
    Attached {
        through,
        matched,
        any_accepted,
    }
}

/// A route's candidate names, distinct: its `spec.hostnames` (or, for kinds that have them and when it
/// has none, whatever the listener accepts), its hostname annotation, and the `--fqdn-template` names;
/// each one that is not a host name becomes a rejection.
fn candidates(
    kind: RouteKind,
    route: &Route,
    filters: &Filters,
    object: &ObjectId,
    rejections: &mut Vec<Rejection>,
) -> Vec<Candidate> {
    let meta = &route.metadata;
    let mut raw: Vec<(String, &'static str)> = route
        .spec
        .hostnames
        .iter()
        .map(|h| (h.clone(), HOSTNAMES_FIELD))
        .collect();
    if let Some((key, names)) = filters.hostname_annotation(meta, &HOSTNAME_ANNOTATIONS) {
        raw.extend(source::split_list(names).map(|h| (h.to_owned(), key)));
    }
    let templated = filters.templated(meta, !raw.is_empty());
    raw.extend(templated.into_iter().map(|n| (n, FQDN_TEMPLATE_FIELD)));
    let mut candidates: Vec<Candidate> = Vec::new();
    for (name, field) in raw {
        // As the Gateway API (and external-dns) say: a hostname is never an IP address.
        let checked = if name.trim().parse::<std::net::IpAddr>().is_ok() {
            Err("is an IP address, not a host name".to_owned())
        } else {
            source::validate_hostname(&name)
        };
        match checked {
            Ok(name) => candidates.push((Some(name), field)),
            Err(reason) => rejections.push(Rejection {
                object: object.clone(),
                field: field.to_owned(),
                reason: format!("{name:?}: {reason}"),
                kind: RejectionKind::Invalid,
            }),
        }
    }
    if kind.has_hostnames() && route.spec.hostnames.is_empty() {
        candidates.push((None, LISTENER_HOSTNAME_FIELD));
    }
    candidates.sort();
    candidates.dedup_by(|a, b| a.0 == b.0);
    candidates
}

/// A Gateway's targets: its target annotation (external-dns reads it from the Gateway), else the addresses
/// in its status. The route's own target annotation still wins over both (see [`source::collect`]).
fn gateway_targets(gateway: &Gateway) -> Targets<'_> {
    if let Some((_, value)) =
        source::annotation(gateway.metadata.annotations.as_ref(), &TARGET_ANNOTATIONS)
    {
        return Targets::Overridable(source::split_list(value).collect(), GATEWAY_TARGET_FIELD);
    }
    let addresses = gateway
        .status
        .iter()
        .flat_map(|s| s.addresses.iter())
        .map(|a| a.value.as_str())
        .filter(|v| !v.is_empty())
        .collect();
    Targets::Overridable(addresses, ADDRESSES_FIELD)
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
