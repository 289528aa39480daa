// Unit tests panic like assertions do.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::source::{Limits, Rejection};

const HOSTNAME: &str = "external-dns.alpha.kubernetes.io/hostname";

fn service(spec: serde_json::Value, annotations: serde_json::Value) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default", "annotations": annotations},
        "spec": spec,
    }))
    .unwrap()
}

fn named(spec: serde_json::Value) -> Service {
    service(spec, serde_json::json!({HOSTNAME: "web.test.org"}))
}

fn node(name: &str, addresses: &[(&str, &str)]) -> Node {
    let addresses: Vec<serde_json::Value> = addresses
        .iter()
        .map(|(kind, address)| serde_json::json!({"type": kind, "address": address}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "status": {"addresses": addresses},
    }))
    .unwrap()
}

/// An EndpointSlice of Service `default/web` with `endpoints` (JSON).
fn slice(address_type: &str, endpoints: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("web-{address_type}"), "namespace": "default",
                     "labels": {SERVICE_NAME_LABEL: "web"}},
        "addressType": address_type,
        "endpoints": endpoints,
    }))
    .unwrap()
}

/// A Pod endpoint with `address` on `node`, ready or not, with a hostname when given.
fn pod(address: &str, node: &str, ready: bool, hostname: Option<&str>) -> serde_json::Value {
    let mut endpoint = serde_json::json!({
        "addresses": [address],
        "conditions": {"ready": ready, "serving": ready, "terminating": false},
        "nodeName": node,
        "targetRef": {"kind": "Pod", "name": format!("pod-{address}")},
    });
    if let Some(hostname) = hostname {
        endpoint["hostname"] = hostname.into();
    }
    endpoint
}

fn filters(types: &[ServiceType]) -> Filters {
    Filters {
        domains: vec!["test.org".to_owned()],
        services: ServiceOptions {
            types: types.to_vec(),
            ..ServiceOptions::default()
        },
        ..Filters::default()
    }
}

const NODE_PORT: &[ServiceType] = &[ServiceType::NodePort];
const CLUSTER_IP: &[ServiceType] = &[ServiceType::ClusterIp];

/// Every (name, target) the Service asks for, sorted.
fn records(found: &[Wanted]) -> Vec<String> {
    let mut records: Vec<String> = found
        .iter()
        .filter_map(|w| w.request.as_ref())
        .flat_map(|r| r.endpoints())
        .map(|e| format!("{} {}", e.name, e.target))
        .collect();
    records.sort();
    records
}

fn rejections(found: &[Wanted]) -> Vec<&Rejection> {
    found.iter().flat_map(|w| &w.rejections).collect()
}

fn waiting(found: &[Wanted]) -> Vec<&'static str> {
    found.iter().filter_map(|w| w.waiting).collect()
}

fn three_nodes() -> Vec<Node> {
    vec![
        node(
            "a",
            &[("InternalIP", "10.0.0.1"), ("ExternalIP", "192.0.2.1")],
        ),
        node("b", &[("InternalIP", "10.0.0.2"), ("Hostname", "b")]),
        node(
            "c",
            &[("InternalIP", "10.0.0.3"), ("ExternalIP", "192.0.2.3")],
        ),
    ]
}

#[test]
fn without_the_filter_node_port_and_headless_services_ask_for_nothing_and_nothing_is_watched() {
    let options = ServiceOptions::default();
    assert!(!options.needs_endpoints());
    for kind in [
        ServiceType::ClusterIp,
        ServiceType::LoadBalancer,
        ServiceType::ExternalName,
    ] {
        assert!(options.publishes(kind), "{kind:?}");
    }
    assert!(!options.publishes(ServiceType::NodePort));
    let nodes = three_nodes();
    let view = ClusterView::new(&nodes, []);
    let node_port =
        named(serde_json::json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}));
    assert!(records(&wanted(&node_port, &filters(&[]), &view)).is_empty());
    let headless = named(serde_json::json!({"clusterIP": "None"}));
    assert!(records(&wanted(&headless, &filters(&[]), &view)).is_empty());
    assert!(waiting(&wanted(&headless, &filters(&[]), &view)).is_empty());
}

#[test]
fn a_type_left_out_of_the_filter_asks_for_nothing_not_even_its_internal_hostname() {
    let lb = service(
        serde_json::json!({"type": "LoadBalancer", "clusterIP": "10.96.0.9"}),
        serde_json::json!({
            HOSTNAME: "web.test.org",
            "external-dns.alpha.kubernetes.io/internal-hostname": "web.internal.test.org",
        }),
    );
    let view = ClusterView::default();
    assert!(records(&wanted(&lb, &filters(NODE_PORT), &view)).is_empty());
    assert_eq!(
        records(&wanted(&lb, &filters(&[]), &view)),
        ["web.internal.test.org 10.96.0.9"]
    );
}

#[test]
fn a_node_port_service_is_published_at_the_external_ips_when_any_node_has_one() {
    let nodes = three_nodes();
    let view = ClusterView::new(&nodes, []);
    let svc = named(serde_json::json!({"type": "NodePort"}));
    let found = wanted(&svc, &filters(NODE_PORT), &view);
    assert_eq!(
        records(&found),
        ["web.test.org 192.0.2.1", "web.test.org 192.0.2.3"]
    );
    assert!(rejections(&found).is_empty());
}

#[test]
fn a_node_port_service_falls_back_to_internal_ips_and_access_picks_one_kind() {
    let internal_only = [
        node("a", &[("InternalIP", "10.0.0.1")]),
        node("b", &[("InternalIP", "fd00::2")]),
    ];
    let view = ClusterView::new(&internal_only, []);
    let svc = named(serde_json::json!({"type": "NodePort"}));
    assert_eq!(
        records(&wanted(&svc, &filters(NODE_PORT), &view)),
        ["web.test.org 10.0.0.1", "web.test.org fd00::2"]
    );

    let nodes = three_nodes();
    let view = ClusterView::new(&nodes, []);
    let private = service(
        serde_json::json!({"type": "NodePort"}),
        serde_json::json!({HOSTNAME: "web.test.org", "external-dns.alpha.kubernetes.io/access": "private"}),
    );
    assert_eq!(
        records(&wanted(&private, &filters(NODE_PORT), &view)),
        [
            "web.test.org 10.0.0.1",
            "web.test.org 10.0.0.2",
            "web.test.org 10.0.0.3"
        ]
    );
    // A value external-dns does not know: a Warning naming the annotation, and the default rule.
    let odd = service(
        serde_json::json!({"type": "NodePort"}),
        serde_json::json!({HOSTNAME: "web.test.org", "external-dns.alpha.kubernetes.io/access": "both"}),
    );
    let found = wanted(&odd, &filters(NODE_PORT), &view);
    assert_eq!(
        records(&found),
        ["web.test.org 192.0.2.1", "web.test.org 192.0.2.3"]
    );
    let refused = rejections(&found);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].field, "external-dns.alpha.kubernetes.io/access");
    assert_eq!(refused[0].kind, RejectionKind::Invalid);
}

#[test]
fn internal_ipv6_addresses_join_the_external_ones_only_with_expose_internal_ipv6() {
    let nodes = [
        node(
            "a",
            &[("InternalIP", "fd00::1"), ("ExternalIP", "192.0.2.1")],
        ),
        node(
            "b",
            &[("InternalIP", "10.0.0.2"), ("ExternalIP", "2001:db8::2")],
        ),
    ];
    let view = ClusterView::new(&nodes, []);
    let svc = named(serde_json::json!({"type": "NodePort"}));
    assert_eq!(
        records(&wanted(&svc, &filters(NODE_PORT), &view)),
        ["web.test.org 192.0.2.1", "web.test.org 2001:db8::2"]
    );
    let mut exposed = filters(NODE_PORT);
    exposed.services.expose_internal_ipv6 = true;
    assert_eq!(
        records(&wanted(&svc, &exposed, &view)),
        [
            "web.test.org 192.0.2.1",
            "web.test.org 2001:db8::2",
            "web.test.org fd00::1"
        ]
    );
}

#[test]
fn local_policy_publishes_the_nodes_with_a_ready_endpoint_falling_back_as_external_dns_does() {
    let nodes = three_nodes();
    let svc = named(serde_json::json!({"type": "NodePort", "externalTrafficPolicy": "Local"}));
    let slices = [slice(
        "IPv4",
        serde_json::json!([
            pod("10.244.0.1", "a", true, None),
            pod("10.244.1.1", "b", false, None)
        ]),
    )];
    let view = ClusterView::new(&nodes, &slices);
    // Only node a has a ready endpoint; it has an external IP, so that is the one.
    assert_eq!(
        records(&wanted(&svc, &filters(NODE_PORT), &view)),
        ["web.test.org 192.0.2.1"]
    );
    // Nothing ready: the nodes of any endpoint, rather than no name at all (external-dns's fallback).
    let slices = [slice(
        "IPv4",
        serde_json::json!([
            pod("10.244.1.1", "b", false, None),
            pod("10.244.2.1", "c", false, None)
        ]),
    )];
    let view = ClusterView::new(&nodes, &slices);
    assert_eq!(
        records(&wanted(&svc, &filters(NODE_PORT), &view)),
        ["web.test.org 192.0.2.3"]
    );
    // No endpoint at all: waiting, Normal.
    let view = ClusterView::new(&nodes, []);
    let found = wanted(&svc, &filters(NODE_PORT), &view);
    assert!(records(&found).is_empty());
    assert_eq!(waiting(&found), [LOCAL_NODES_FIELD]);
    assert!(rejections(&found).is_empty());
}

#[test]
fn a_node_going_away_takes_its_address_with_it_and_no_nodes_is_waiting() {
    let svc = named(serde_json::json!({"type": "NodePort"}));
    let mut nodes = three_nodes();
    nodes.remove(0);
    let view = ClusterView::new(&nodes, []);
    assert_eq!(
        records(&wanted(&svc, &filters(NODE_PORT), &view)),
        ["web.test.org 192.0.2.3"]
    );
    let found = wanted(&svc, &filters(NODE_PORT), &ClusterView::default());
    assert_eq!(waiting(&found), [NODES_FIELD]);
}

#[test]
fn the_target_annotation_replaces_the_node_addresses() {
    let nodes = three_nodes();
    let view = ClusterView::new(&nodes, []);
    let svc = service(
        serde_json::json!({"type": "NodePort"}),
        serde_json::json!({HOSTNAME: "web.test.org", "external-dns.alpha.kubernetes.io/target": "203.0.113.5"}),
    );
    assert_eq!(
        records(&wanted(&svc, &filters(NODE_PORT), &view)),
        ["web.test.org 203.0.113.5"]
    );
}

#[test]
fn a_headless_service_names_each_pod_with_a_hostname_and_the_set_of_ready_pods() {
    let nodes = three_nodes();
    let slices = [slice(
        "IPv4",
        serde_json::json!([
            pod("10.244.0.5", "a", true, Some("web-0")),
            pod("10.244.1.5", "b", true, Some("web-1")),
            pod("10.244.2.5", "c", false, Some("web-2")),
            pod("10.244.2.6", "c", true, None),
        ]),
    )];
    let view = ClusterView::new(&nodes, &slices);
    let svc = named(serde_json::json!({"clusterIP": "None"}));
    let found = wanted(&svc, &filters(CLUSTER_IP), &view);
    assert_eq!(
        records(&found),
        [
            "web-0.web.test.org 10.244.0.5",
            "web-1.web.test.org 10.244.1.5",
            "web.test.org 10.244.0.5",
            "web.test.org 10.244.1.5",
            "web.test.org 10.244.2.6",
        ]
    );
    assert!(rejections(&found).is_empty());
    assert!(waiting(&found).is_empty());
}

#[test]
fn not_ready_pods_are_published_with_publish_not_ready_addresses_or_the_flag() {
    let slices = [slice(
        "IPv4",
        serde_json::json!([pod("10.244.2.5", "c", false, Some("web-2"))]),
    )];
    let view = ClusterView::new([], &slices);
    let svc = named(serde_json::json!({"clusterIP": "None"}));
    let found = wanted(&svc, &filters(CLUSTER_IP), &view);
    assert!(records(&found).is_empty());
    assert_eq!(waiting(&found), [POD_ADDRESSES_FIELD]);

    let want = ["web-2.web.test.org 10.244.2.5", "web.test.org 10.244.2.5"];
    let publishing =
        named(serde_json::json!({"clusterIP": "None", "publishNotReadyAddresses": true}));
    assert_eq!(
        records(&wanted(&publishing, &filters(CLUSTER_IP), &view)),
        want
    );
    let mut always = filters(CLUSTER_IP);
    always.services.always_publish_not_ready = true;
    assert_eq!(records(&wanted(&svc, &always, &view)), want);
}

#[test]
fn host_ips_replace_pod_ips_with_the_flag_or_the_endpoints_type_annotation() {
    let nodes = three_nodes();
    let slices = [slice(
        "IPv4",
        serde_json::json!([
            pod("10.244.0.5", "a", true, Some("web-0")),
            pod("10.244.0.6", "a", true, Some("web-1")),
            pod("10.244.1.5", "b", true, None),
        ]),
    )];
    let view = ClusterView::new(&nodes, &slices);
    let svc = named(serde_json::json!({"clusterIP": "None"}));
    let mut host_ip = filters(CLUSTER_IP);
    host_ip.services.publish_host_ip = true;
    assert_eq!(
        records(&wanted(&svc, &host_ip, &view)),
        [
            "web-0.web.test.org 10.0.0.1",
            "web-1.web.test.org 10.0.0.1",
            "web.test.org 10.0.0.1",
            "web.test.org 10.0.0.2",
        ]
    );
    let external = service(
        serde_json::json!({"clusterIP": "None"}),
        serde_json::json!({HOSTNAME: "web.test.org", "external-dns.alpha.kubernetes.io/endpoints-type": "NodeExternalIP"}),
    );
    assert_eq!(
        records(&wanted(&external, &filters(CLUSTER_IP), &view)),
        [
            "web-0.web.test.org 192.0.2.1",
            "web-1.web.test.org 192.0.2.1",
            "web.test.org 192.0.2.1",
        ]
    );
    let odd = service(
        serde_json::json!({"clusterIP": "None"}),
        serde_json::json!({HOSTNAME: "web.test.org", "external-dns.alpha.kubernetes.io/endpoints-type": "Node"}),
    );
    let found = wanted(&odd, &filters(CLUSTER_IP), &view);
    assert_eq!(records(&found).len(), 5, "Pod IPs, the default");
    assert_eq!(
        rejections(&found)[0].field,
        "external-dns.alpha.kubernetes.io/endpoints-type"
    );
}

#[test]
fn the_kubelets_host_ip_is_the_first_internal_address_else_the_first_external() {
    let both = node(
        "a",
        &[("ExternalIP", "192.0.2.1"), ("InternalIP", "10.0.0.1")],
    );
    assert_eq!(host_ip(&both), Some("10.0.0.1"));
    let external = node("b", &[("Hostname", "b"), ("ExternalIP", "192.0.2.2")]);
    assert_eq!(host_ip(&external), Some("192.0.2.2"));
    assert_eq!(host_ip(&node("c", &[("Hostname", "c")])), None);
}

#[test]
fn endpoints_that_are_not_pods_or_not_addresses_are_skipped_as_external_dns_does() {
    let mut not_a_pod = pod("10.244.0.9", "a", true, Some("ext"));
    not_a_pod["targetRef"]["kind"] = "Node".into();
    let mut no_ref = pod("10.244.0.8", "a", true, None);
    no_ref.as_object_mut().unwrap().remove("targetRef");
    let slices = [
        slice(
            "IPv4",
            serde_json::json!([not_a_pod, no_ref, pod("10.244.0.5", "a", true, None)]),
        ),
        slice(
            "FQDN",
            serde_json::json!([pod("db.example.org", "a", true, None)]),
        ),
        slice(
            "IPv6",
            serde_json::json!([pod("fd00:244::5", "a", true, None)]),
        ),
    ];
    let view = ClusterView::new([], &slices);
    let svc = named(serde_json::json!({"clusterIP": "None"}));
    assert_eq!(
        records(&wanted(&svc, &filters(CLUSTER_IP), &view)),
        ["web.test.org 10.244.0.5", "web.test.org fd00:244::5"]
    );
}

#[test]
fn slices_of_other_services_and_namespaces_are_not_read() {
    let mut elsewhere = slice(
        "IPv4",
        serde_json::json!([pod("10.244.0.5", "a", true, None)]),
    );
    elsewhere.metadata.namespace = Some("other".to_owned());
    let mut other = slice(
        "IPv4",
        serde_json::json!([pod("10.244.0.6", "a", true, None)]),
    );
    other.metadata.labels = Some([(SERVICE_NAME_LABEL.to_owned(), "api".to_owned())].into());
    let slices = [elsewhere, other];
    let view = ClusterView::new([], &slices);
    let svc = named(serde_json::json!({"clusterIP": "None"}));
    let found = wanted(&svc, &filters(CLUSTER_IP), &view);
    assert!(records(&found).is_empty());
    assert_eq!(waiting(&found), [POD_ADDRESSES_FIELD]);
}

#[test]
fn a_headless_service_over_a_limit_keeps_what_it_had_without_building_its_names() {
    let endpoints: Vec<serde_json::Value> = (0..20)
        .map(|i| {
            pod(
                &format!("10.244.0.{i}"),
                "a",
                true,
                Some(&format!("web-{i}")),
            )
        })
        .collect();
    let slices = [slice("IPv4", serde_json::Value::from(endpoints))];
    let view = ClusterView::new([], &slices);
    let svc = named(serde_json::json!({"clusterIP": "None"}));
    let mut tight = filters(CLUSTER_IP);
    tight.limits = Limits {
        names_per_object: 10,
        targets_per_object: 100,
    };
    let found = wanted(&svc, &tight, &view);
    assert!(records(&found).is_empty());
    let kept: Vec<&Request> = found.iter().filter_map(|w| w.request.as_ref()).collect();
    assert_eq!(kept.len(), 1);
    assert!(kept[0].keep_published);
    let refused = rejections(&found);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].kind, RejectionKind::Limit);
    assert!(
        refused[0].reason.contains("21 host names"),
        "{}",
        refused[0].reason
    );
}

#[test]
fn an_invalid_pod_name_is_refused_by_field_and_the_others_are_published() {
    let slices = [slice(
        "IPv4",
        serde_json::json!([pod("10.244.0.5", "a", true, Some("web-0"))]),
    )];
    let view = ClusterView::new([], &slices);
    let svc = service(
        serde_json::json!({"clusterIP": "None"}),
        serde_json::json!({HOSTNAME: "web.test.org,*.wild.test.org,web.elsewhere.org"}),
    );
    let found = wanted(&svc, &filters(CLUSTER_IP), &view);
    assert_eq!(
        records(&found),
        [
            "*.wild.test.org 10.244.0.5",
            "web-0.web.test.org 10.244.0.5",
            "web.test.org 10.244.0.5"
        ]
    );
    let mut reasons: Vec<String> = rejections(&found)
        .iter()
        .map(|r| format!("{}: {}", r.field, r.reason))
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons.iter().all(|r| r.starts_with(HOSTNAME)),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("web-0.*.wild.test.org")),
        "{reasons:?}"
    );
}

#[test]
fn an_external_name_service_is_a_cname_to_its_external_name_or_its_external_ips() {
    let svc = named(serde_json::json!({"type": "ExternalName", "externalName": "db.example.org"}));
    let view = ClusterView::default();
    assert_eq!(
        records(&wanted(&svc, &filters(&[]), &view)),
        ["web.test.org db.example.org"]
    );
    let with_ips = named(serde_json::json!({
        "type": "ExternalName", "externalName": "db.example.org", "externalIPs": ["198.51.100.7"],
    }));
    assert_eq!(
        records(&wanted(&with_ips, &filters(&[]), &view)),
        ["web.test.org 198.51.100.7"]
    );
    let bad = named(serde_json::json!({"type": "ExternalName", "externalName": "not a name"}));
    let found = wanted(&bad, &filters(&[]), &view);
    assert!(records(&found).is_empty());
    assert_eq!(rejections(&found)[0].field, "spec.externalName");
    assert!(records(&wanted(&svc, &filters(NODE_PORT), &view)).is_empty());
}

fn with_ports(annotations: serde_json::Value) -> Service {
    service(
        serde_json::json!({"type": "NodePort", "ports": [
            {"name": "http", "port": 80, "nodePort": 30080},
            {"name": "https", "port": 443, "protocol": "TCP", "nodePort": 30443},
            {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
        ]}),
        annotations,
    )
}

#[test]
fn a_node_port_service_gets_an_srv_record_per_port_named_after_the_service_and_protocol() {
    let nodes = three_nodes();
    let view = ClusterView::new(&nodes, []);
    let svc = with_ports(
        serde_json::json!({HOSTNAME: "web.test.org", "external-dns.alpha.kubernetes.io/ttl": "60"}),
    );
    let found = wanted(&svc, &filters(NODE_PORT), &view);
    assert_eq!(
        records(&found),
        [
            "_web._tcp.web.test.org SRV 0 50 30080 web.test.org",
            "_web._tcp.web.test.org SRV 0 50 30443 web.test.org",
            "_web._udp.web.test.org SRV 0 50 30053 web.test.org",
            "web.test.org 192.0.2.1",
            "web.test.org 192.0.2.3",
        ]
    );
    let ttls: BTreeSet<Option<u32>> = found
        .iter()
        .filter_map(|w| w.request.as_ref())
        .map(|r| r.ttl)
        .collect();
    assert_eq!(
        ttls,
        BTreeSet::from([Some(60)]),
        "the TTL annotation applies to SRV too"
    );
    assert!(rejections(&found).is_empty());
}

#[test]
fn no_srv_record_without_addresses_with_a_target_annotation_or_for_a_wildcard() {
    let svc = with_ports(serde_json::json!({HOSTNAME: "web.test.org,*.apps.test.org"}));
    // No node yet: the names wait, and so do their SRV records (they would point at nothing).
    let found = wanted(&svc, &filters(NODE_PORT), &ClusterView::default());
    assert!(records(&found).is_empty());
    assert_eq!(waiting(&found), [NODES_FIELD]);

    let nodes = three_nodes();
    let view = ClusterView::new(&nodes, []);
    let found = wanted(&svc, &filters(NODE_PORT), &view);
    let srv: Vec<String> = records(&found)
        .into_iter()
        .filter(|r| r.contains(" SRV "))
        .collect();
    assert_eq!(srv.len(), 3, "{srv:?}");
    assert!(srv.iter().all(|r| r.ends_with(" web.test.org")), "{srv:?}");
    let refused = rejections(&found);
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0].reason.contains("*.apps.test.org"),
        "{:?}",
        refused[0]
    );
    assert_eq!(refused[0].field, HOSTNAME);

    let targeted = with_ports(
        serde_json::json!({HOSTNAME: "web.test.org", "external-dns.alpha.kubernetes.io/target": "203.0.113.5"}),
    );
    assert_eq!(
        records(&wanted(&targeted, &filters(NODE_PORT), &view)),
        ["web.test.org 203.0.113.5"]
    );
}

#[test]
fn srv_names_count_against_the_names_limit_before_they_are_built() {
    let nodes = three_nodes();
    let view = ClusterView::new(&nodes, []);
    // 2 names x (1 + 2 protocols) = 6 names.
    let svc = with_ports(serde_json::json!({HOSTNAME: "web.test.org,www.test.org"}));
    let mut tight = filters(NODE_PORT);
    tight.limits.names_per_object = 5;
    let found = wanted(&svc, &tight, &view);
    assert!(records(&found).is_empty());
    assert!(
        found
            .iter()
            .filter_map(|w| w.request.as_ref())
            .all(|r| r.keep_published)
    );
    let refused = rejections(&found);
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0].reason.contains("6 host names"),
        "{:?}",
        refused[0]
    );
    tight.limits.names_per_object = 6;
    assert_eq!(records(&wanted(&svc, &tight, &view)).len(), 4 + 6);
}

#[test]
fn a_service_name_that_is_no_dns_label_gets_no_srv_record() {
    // Found by the fuzzer: the apiserver never stores such a name, but it would become a label of the record.
    let nodes = three_nodes();
    let view = ClusterView::new(&nodes, []);
    let mut svc = with_ports(serde_json::json!({HOSTNAME: "web.test.org"}));
    svc.metadata.name = Some("we\u{1f}b".to_owned());
    let found = wanted(&svc, &filters(NODE_PORT), &view);
    assert_eq!(
        records(&found),
        ["web.test.org 192.0.2.1", "web.test.org 192.0.2.3"]
    );
    assert_eq!(rejections(&found).len(), 2, "one per protocol");
}
