//! How a route becomes names at its Gateways' addresses, and how bad input is rejected with the field named.

use serde_json::{Value, json};

use super::*;
use crate::source::Request;

const HOSTNAME: &str = "external-dns.alpha.kubernetes.io/hostname";
const TARGET: &str = "external-dns.alpha.kubernetes.io/target";

fn gateway(namespace: &str, name: &str, listeners: Value, addresses: &[&str]) -> Gateway {
    let addresses: Vec<Value> = addresses
        .iter()
        .map(|a| json!({"type": "IPAddress", "value": a}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"gatewayClassName": "lab", "listeners": listeners},
        "status": {"addresses": addresses},
    }))
    .unwrap()
}

/// One HTTP listener `http` on port 80 with `hostname`, allowing routes from every namespace.
fn http_listener(hostname: Option<&str>) -> Value {
    json!([{"name": "http", "port": 80, "protocol": "HTTP", "hostname": hostname,
            "allowedRoutes": {"namespaces": {"from": "All"}}}])
}

/// A route in `apps` attached to `parents` (`namespace/name`), each with `Accepted` = `accepted`.
fn route(hostnames: &[&str], annotations: Value, parents: &[(&str, bool)]) -> Route {
    let refs: Vec<Value> = parents
        .iter()
        .map(|(p, _)| {
            let (namespace, name) = p.split_once('/').unwrap();
            json!({"namespace": namespace, "name": name})
        })
        .collect();
    let status: Vec<Value> = parents
        .iter()
        .zip(&refs)
        .map(|((_, accepted), r)| {
            let status = if *accepted { "True" } else { "False" };
            json!({"parentRef": r, "controllerName": "lab.test/gateway",
                   "conditions": [{"type": "Accepted", "status": status}]})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "apps", "annotations": annotations},
        "spec": {"hostnames": hostnames, "parentRefs": refs},
        "status": {"parents": status},
    }))
    .unwrap()
}

/// Gateway `infra/edge` at 10.10.39.200, its HTTP listener for `*.test.org`.
fn wildcard_edge() -> Gateway {
    gateway(
        "infra",
        "edge",
        http_listener(Some("*.test.org")),
        &["10.10.39.200"],
    )
}

fn filters() -> Filters {
    Filters {
        domains: vec!["test.org".to_owned()],
        ..Filters::default()
    }
}

fn resolve(kind: RouteKind, route: &Route, gateways: &[Gateway]) -> Vec<Wanted> {
    let world = World::new(gateways, [], None);
    from_route(kind, route, &world, &filters())
}

/// Every `name target` pair published, once (a route attached to two Gateways asks twice when the route's
/// target annotation points both at the same target; publishing takes the union).
fn published(found: &[Wanted]) -> Vec<String> {
    let mut names: Vec<String> = found
        .iter()
        .flat_map(|w| w.request.iter())
        .flat_map(Request::endpoints)
        .map(|e| format!("{} {}", e.name, e.target))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn rejections(found: &[Wanted]) -> Vec<String> {
    found
        .iter()
        .flat_map(|w| &w.rejections)
        .map(|r| format!("{}: {}", r.field, r.reason))
        .collect()
}

#[test]
fn a_route_publishes_its_hostnames_within_the_listener_hostname_at_the_gateway_addresses() {
    let gw = wildcard_edge();
    let web = route(
        &["a.test.org", "*.apps.test.org"],
        json!({"external-dns.alpha.kubernetes.io/ttl": "60"}),
        &[("infra/edge", true)],
    );
    let found = resolve(RouteKind::Http, &web, &[gw]);
    assert_eq!(
        published(&found),
        ["*.apps.test.org 10.10.39.200", "a.test.org 10.10.39.200"]
    );
    assert!(rejections(&found).is_empty(), "{:?}", rejections(&found));
    let request = found[0].request.as_ref().unwrap();
    assert_eq!(request.ttl, Some(60));
    assert_eq!(request.object.to_string(), "httproute/apps/web");
}

#[test]
fn a_route_without_hostnames_takes_the_listener_hostname_and_a_wildcard_listener_narrows_nothing() {
    let exact = gateway(
        "infra",
        "edge",
        http_listener(Some("shop.test.org")),
        &["10.10.39.200"],
    );
    let any = route(&[], json!({}), &[("infra/edge", true)]);
    assert_eq!(
        published(&resolve(RouteKind::Http, &any, &[exact])),
        ["shop.test.org 10.10.39.200"]
    );
    // Neither the route nor the listener names a host: nothing to publish, nothing wrong.
    let open = gateway("infra", "edge", http_listener(None), &["10.10.39.200"]);
    let found = resolve(RouteKind::Http, &any, &[open]);
    assert!(published(&found).is_empty() && rejections(&found).is_empty());
}

#[test]
fn only_parents_that_accepted_the_route_publish_it() {
    let a = gateway("infra", "a", http_listener(None), &["10.10.39.200"]);
    let b = gateway("infra", "b", http_listener(None), &["10.10.39.201"]);
    let web = route(
        &["web.test.org"],
        json!({}),
        &[("infra/a", false), ("infra/b", true)],
    );
    assert_eq!(
        published(&resolve(RouteKind::Http, &web, &[a.clone(), b])),
        ["web.test.org 10.10.39.201"]
    );
    // Not accepted anywhere: nothing, and no complaint about the hostnames (the route is not attached).
    let refused = route(&["web.test.org"], json!({}), &[("infra/a", false)]);
    let found = resolve(RouteKind::Http, &refused, std::slice::from_ref(&a));
    assert!(found.is_empty(), "{found:?}");
    // A status entry for a parent the spec no longer names is stale.
    let mut stale = route(&["web.test.org"], json!({}), &[("infra/a", true)]);
    stale.spec.parent_refs[0].name = "c".to_owned();
    assert!(resolve(RouteKind::Http, &stale, &[a]).is_empty());
}

#[test]
fn each_gateway_publishes_its_own_addresses_and_its_target_annotation_replaces_them() {
    let a = gateway("infra", "a", http_listener(None), &["10.10.39.200"]);
    let mut b = gateway("infra", "b", http_listener(None), &["10.10.39.201"]);
    b.metadata.annotations = Some([(TARGET.to_owned(), "lb.example.net".to_owned())].into());
    let web = route(
        &["web.test.org"],
        json!({}),
        &[("infra/a", true), ("infra/b", true)],
    );
    let found = resolve(RouteKind::Http, &web, &[a.clone(), b.clone()]);
    assert_eq!(
        published(&found),
        ["web.test.org 10.10.39.200", "web.test.org lb.example.net"]
    );
    // The route's own target annotation wins over every Gateway's.
    let pinned = route(
        &["web.test.org"],
        json!({TARGET: "192.0.2.10"}),
        &[("infra/a", true), ("infra/b", true)],
    );
    assert_eq!(
        published(&resolve(RouteKind::Http, &pinned, &[a, b])),
        ["web.test.org 192.0.2.10"]
    );
}

#[test]
fn a_gateway_without_an_address_yet_leaves_the_route_waiting() {
    let gw = gateway("infra", "edge", http_listener(None), &[]);
    let web = route(&["web.test.org"], json!({}), &[("infra/edge", true)]);
    let found = resolve(RouteKind::Http, &web, &[gw]);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].waiting, Some(ADDRESSES_FIELD));
    assert!(found[0].rejections.is_empty() && found[0].request.is_none());
    // Two such Gateways: still one waiting route.
    let other = gateway("infra", "other", http_listener(None), &[]);
    let both = route(
        &["web.test.org"],
        json!({}),
        &[("infra/edge", true), ("infra/other", true)],
    );
    let gateways = [gateway("infra", "edge", http_listener(None), &[]), other];
    let found = resolve(RouteKind::Http, &both, &gateways);
    assert_eq!(found.iter().filter(|w| w.waiting.is_some()).count(), 1);
}

#[test]
fn tcp_and_udp_routes_are_named_by_the_hostname_annotation_only() {
    let listeners = json!([
        {"name": "db", "port": 5432, "protocol": "TCP", "allowedRoutes": {"namespaces": {"from": "All"}}},
        {"name": "dns", "port": 53, "protocol": "UDP", "allowedRoutes": {"namespaces": {"from": "All"}}},
    ]);
    let gw = gateway("infra", "edge", listeners, &["10.10.39.200"]);
    let bare = route(&[], json!({}), &[("infra/edge", true)]);
    assert!(resolve(RouteKind::Tcp, &bare, std::slice::from_ref(&gw)).is_empty());
    let named = route(
        &[],
        json!({HOSTNAME: "db.test.org"}),
        &[("infra/edge", true)],
    );
    assert_eq!(
        published(&resolve(RouteKind::Tcp, &named, std::slice::from_ref(&gw))),
        ["db.test.org 10.10.39.200"]
    );
    assert_eq!(
        published(&resolve(RouteKind::Udp, &named, std::slice::from_ref(&gw))),
        ["db.test.org 10.10.39.200"]
    );
    // A TLS route has no TLS listener here: nothing.
    assert!(published(&resolve(RouteKind::Tls, &named, &[gw])).is_empty());
}

#[test]
fn bad_hostnames_and_hostnames_no_listener_accepts_are_rejected_naming_the_field() {
    let gw = wildcard_edge();
    let web = route(
        &["web.test.org", "web.other.org"],
        json!({HOSTNAME: "bad_name.test.org, extra.test.org, 10.10.39.9"}),
        &[("infra/edge", true)],
    );
    let found = resolve(RouteKind::Http, &web, &[gw]);
    assert_eq!(
        published(&found),
        ["extra.test.org 10.10.39.200", "web.test.org 10.10.39.200"]
    );
    let rejected = rejections(&found);
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    assert!(
        rejected
            .iter()
            .any(|r| r.starts_with(HOSTNAME) && r.contains("IP address")),
        "{rejected:?}"
    );
    assert!(
        rejected
            .iter()
            .any(|r| r.starts_with(HOSTNAME) && r.contains("bad_name.test.org")),
        "{rejected:?}"
    );
    assert!(
        rejected
            .iter()
            .any(|r| r.starts_with("spec.hostnames") && r.contains("no listener")),
        "{rejected:?}"
    );
}

#[test]
fn names_outside_the_domain_filter_and_bad_gateway_addresses_are_rejected() {
    let gw = gateway(
        "infra",
        "edge",
        http_listener(None),
        &["10.10.39.300", "10.10.39.200"],
    );
    let web = route(
        &["web.test.org", "web.example.net"],
        json!({}),
        &[("infra/edge", true)],
    );
    let found = resolve(RouteKind::Http, &web, &[gw]);
    assert_eq!(published(&found), ["web.test.org 10.10.39.200"]);
    let rejected = rejections(&found);
    assert!(
        rejected
            .iter()
            .any(|r| r.starts_with("spec.hostnames") && r.contains("--domain-filter")),
        "{rejected:?}"
    );
    assert!(
        rejected
            .iter()
            .any(|r| r.starts_with("Gateway status.addresses (infra/edge)")
                && r.contains("10.10.39.300")),
        "{rejected:?}"
    );
}

#[test]
fn the_gateway_name_filter_and_allowed_routes_keep_routes_out() {
    let same_only = json!([{"name": "http", "port": 80, "protocol": "HTTP"}]);
    let gw = gateway("infra", "edge", same_only, &["10.10.39.200"]);
    let web = route(&["web.test.org"], json!({}), &[("infra/edge", true)]);
    // The listener allows routes from its own namespace only; the route is in `apps`.
    assert!(published(&resolve(RouteKind::Http, &web, std::slice::from_ref(&gw))).is_empty());
    let open = gateway("infra", "edge", http_listener(None), &["10.10.39.200"]);
    let gateways = [open];
    let world = World::new(&gateways, [], Some("other"));
    assert!(from_route(RouteKind::Http, &web, &world, &filters()).is_empty());
}

#[test]
fn the_annotation_filter_and_the_name_limit_apply_to_routes() {
    let gw = gateway("infra", "edge", http_listener(None), &["10.10.39.200"]);
    let web = route(&["web.test.org"], json!({}), &[("infra/edge", true)]);
    let world = World::new(std::slice::from_ref(&gw), [], None);
    let filtered = Filters {
        annotations: vec![("dns".to_owned(), "public".to_owned())],
        ..filters()
    };
    assert!(from_route(RouteKind::Http, &web, &world, &filtered).is_empty());
    let many = route(
        &["a.test.org", "b.test.org", "c.test.org"],
        json!({}),
        &[("infra/edge", true)],
    );
    let limited = Filters {
        limits: crate::source::Limits {
            names_per_object: 2,
            targets_per_object: 100,
        },
        ..filters()
    };
    let found = from_route(RouteKind::Http, &many, &world, &limited);
    assert_eq!(found.len(), 1);
    assert!(found[0].request.as_ref().is_some_and(|r| r.keep_published));
    assert_eq!(found[0].rejections[0].kind, RejectionKind::Limit);
}

#[test]
fn route_object_ids_round_trip_through_the_resource_field() {
    for kind in RouteKind::ALL {
        let id = ObjectId {
            kind: kind.id(),
            namespace: "apps".to_owned(),
            name: "web".to_owned(),
        };
        assert_eq!(ObjectId::parse(&id.to_string()), Some(id));
    }
    assert_eq!(ObjectId::parse("gateway/apps/web"), None);
}
