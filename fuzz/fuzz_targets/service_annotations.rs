//! Service and Ingress annotations, spec and status fields as users (and MetalLB or external-dns
//! configurations) write them: dns-sync's `service_types::wanted` (every Service type, over fuzzed Nodes and
//! EndpointSlices) / `source::from_ingress` (hostname, target and TTL annotations) / `node_source::from_node`
//! (the same Nodes as a source) and lb-controller's
//! `request::read` (requested addresses, pool, sharing key, families).
//!
//! Asserts: nothing panics; every endpoint dns-sync wants has a valid lower-case name inside the domain
//! filter that maps onto an etcd key (plan.rs relies on that), a target that is an address or a valid
//! non-wildcard name (or an SRV record `_<service>._<protocol>.<name>` pointing at its name), a TTL within
//! i32, no (name, target) twice, and one Service's names and targets within the per-object limits; every request the controller reads
//! asks for at most one address per family, its families follow the requested addresses, and its key is
//! `namespace/name`.
#![no_main]

use std::collections::BTreeMap;
use std::net::IpAddr;

use arbitrary::Arbitrary;
use dns_sync::service_types::{self, ClusterView, ServiceOptions, ServiceType};
use dns_sync::source::{self, Filters};
use dns_sync::target::Target;
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Node, NodeAddress, NodeStatus, ObjectReference, Service,
    ServicePort, ServiceSpec, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::api::networking::v1::{
    Ingress, IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressRule, IngressSpec,
    IngressStatus, IngressTLS,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use lb_controller::ranges::Family;
use lb_controller::request::{self, ClassFilter};
use libfuzzer_sys::fuzz_target;
use proto::skydns::{KeyLayout, target_suffix};

const KEYS: &[&str] = &[
    "external-dns.alpha.kubernetes.io/hostname",
    "external-dns.kubernetes.io/hostname",
    "external-dns.alpha.kubernetes.io/ttl",
    "external-dns.kubernetes.io/ttl",
    "external-dns.alpha.kubernetes.io/target",
    "external-dns.kubernetes.io/target",
    "groundwork.dev/loadBalancerIPs",
    "metallb.io/loadBalancerIPs",
    "metallb.universe.tf/loadBalancerIPs",
    "groundwork.dev/address-pool",
    "metallb.universe.tf/address-pool",
    "groundwork.dev/allow-shared-ip",
    "metallb.io/allow-shared-ip",
    "kubernetes.io/ingress.class",
    "external-dns.alpha.kubernetes.io/access",
    "external-dns.alpha.kubernetes.io/endpoints-type",
    "external-dns.alpha.kubernetes.io/internal-hostname",
];

const VALUES: &[&str] = &[
    "web.test.org",
    "*.test.org",
    "a.test.org,b.test.org",
    "10.0.0.1",
    "fd00::1",
    "10.0.0.1,fd00::1",
    "10.0.0.1,10.0.0.2",
    "60",
    "1m",
    "4294967296",
    "2147483648s",
    "test.org.",
    "-a.test.org",
    "10.0.0.300",
    "",
    " , ",
    "LoadBalancer",
    "Local",
    "IPv4",
    "IPv6",
    "PreferDualStack",
    "RequireDualStack",
    "nginx",
    "public",
    "private",
    "HostIP",
    "NodeExternalIP",
    "10.244.0.1",
    "fd00:244::1",
    "web-0",
];

#[derive(Debug, Arbitrary)]
enum Text {
    Known(u8),
    Any(String),
    List(Vec<u8>),
}

impl Text {
    fn text(&self) -> String {
        let known = |i: &u8| VALUES[usize::from(*i) % VALUES.len()];
        match self {
            Self::Known(i) => known(i).to_owned(),
            Self::Any(text) => text.clone(),
            Self::List(items) => items.iter().map(known).collect::<Vec<_>>().join(","),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Key {
    Known(u8),
    Any(String),
}

#[derive(Debug, Arbitrary)]
struct Input {
    annotations: Vec<(Key, Text)>,
    name: String,
    namespace: String,
    load_balancer: bool,
    load_balancer_ip: Option<Text>,
    ip_families: Option<Vec<Text>>,
    ip_family_policy: Option<Text>,
    external_traffic_policy: Option<Text>,
    ports: Vec<(Option<Text>, i32)>,
    class: Option<Text>,
    /// `status.loadBalancer.ingress`: ip, hostname.
    status: Vec<(Option<Text>, Option<Text>)>,
    /// Ingress `spec.rules[].host`.
    rules: Vec<Option<Text>>,
    domains: Vec<Text>,
    ingress_class: Option<Text>,
    /// Picks ClusterIP, NodePort or ExternalName when not `load_balancer`.
    kind: u8,
    headless: bool,
    external_name: Option<Text>,
    /// Per node: its (external?, address) pairs.
    nodes: Vec<Vec<(bool, Text)>>,
    endpoints: Vec<FuzzEndpoint>,
    /// Bits: every type in the filter, --publish-host-ip, --always-publish-not-ready-addresses,
    /// --expose-internal-ipv6, publishNotReadyAddresses.
    flags: u8,
}

/// One endpoint of the Service's EndpointSlices.
#[derive(Debug, Arbitrary)]
struct FuzzEndpoint {
    /// Picks the slice: IPv4, IPv6 or FQDN.
    address_type: u8,
    addresses: Vec<Text>,
    ready: Option<bool>,
    serving: Option<bool>,
    hostname: Option<Text>,
    /// Picks a node by index (one past the last: a node that does not exist).
    node: u8,
    pod: bool,
}

fn opt(text: &Option<Text>) -> Option<String> {
    text.as_ref().map(Text::text)
}

fuzz_target!(|input: Input| {
    let annotations: BTreeMap<String, String> = input
        .annotations
        .iter()
        .map(|(key, value)| {
            let key = match key {
                Key::Known(i) => KEYS[usize::from(*i) % KEYS.len()].to_owned(),
                Key::Any(key) => key.clone(),
            };
            (key, value.text())
        })
        .collect();
    let metadata = ObjectMeta {
        name: Some(input.name.clone()),
        namespace: Some(input.namespace.clone()),
        annotations: Some(annotations.clone()),
        ..ObjectMeta::default()
    };
    let service = Service {
        metadata: metadata.clone(),
        spec: Some(ServiceSpec {
            type_: Some(
                if input.load_balancer {
                    "LoadBalancer"
                } else {
                    ["ClusterIP", "NodePort", "ExternalName"][usize::from(input.kind % 3)]
                }
                .to_owned(),
            ),
            cluster_ip: input.headless.then(|| "None".to_owned()),
            external_name: opt(&input.external_name),
            publish_not_ready_addresses: Some(input.flags & 16 != 0),
            load_balancer_ip: opt(&input.load_balancer_ip),
            ip_families: input
                .ip_families
                .as_ref()
                .map(|f| f.iter().map(Text::text).collect()),
            ip_family_policy: opt(&input.ip_family_policy),
            external_traffic_policy: opt(&input.external_traffic_policy),
            load_balancer_class: opt(&input.class),
            ports: Some(
                input
                    .ports
                    .iter()
                    .map(|(protocol, port)| ServicePort {
                        protocol: opt(protocol),
                        port: *port,
                        node_port: Some(*port),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        status: Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(
                    input
                        .status
                        .iter()
                        .map(|(ip, hostname)| LoadBalancerIngress {
                            ip: opt(ip),
                            hostname: opt(hostname),
                            ..LoadBalancerIngress::default()
                        })
                        .collect(),
                ),
            }),
            ..ServiceStatus::default()
        }),
    };
    let ingress = Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: opt(&input.class),
            rules: Some(
                input
                    .rules
                    .iter()
                    .map(|host| IngressRule {
                        host: opt(host),
                        ..IngressRule::default()
                    })
                    .collect(),
            ),
            // The same hosts again, as a certificate would list them: names too, and the same names.
            tls: Some(vec![IngressTLS {
                hosts: Some(input.rules.iter().filter_map(opt).collect()),
                ..IngressTLS::default()
            }]),
            ..IngressSpec::default()
        }),
        status: Some(IngressStatus {
            load_balancer: Some(IngressLoadBalancerStatus {
                ingress: Some(
                    input
                        .status
                        .iter()
                        .map(|(ip, hostname)| IngressLoadBalancerIngress {
                            ip: opt(ip),
                            hostname: opt(hostname),
                            ..IngressLoadBalancerIngress::default()
                        })
                        .collect(),
                ),
            }),
        }),
    };

    let filters = Filters {
        // Every other domain excluded: names under it must never come out, even inside the others.
        domains: input.domains.iter().step_by(2).map(Text::text).collect(),
        excluded_domains: input.domains.iter().skip(1).step_by(2).map(Text::text).collect(),
        ingress_class: opt(&input.ingress_class),
        annotations: Vec::new(),
        // Names rendered from the fuzzed name, namespace and labels go through the same checks as given ones.
        fqdn_templates: dns_sync::fqdn_template::parse("{{.Name}}.{{.Namespace}}.{{.Labels.team}}.example.org")
            .unwrap_or_default(),
        combine_fqdn_annotation: input.name.len() % 2 == 0,
        publish_internal: input.name.len() % 3 == 0,
        // Small, so the fuzzer reaches them: an object over a limit asks for nothing new.
        limits: source::Limits {
            names_per_object: 8,
            targets_per_object: 8,
        },
        services: ServiceOptions {
            types: if input.flags & 1 != 0 {
                vec![
                    ServiceType::ClusterIp,
                    ServiceType::NodePort,
                    ServiceType::LoadBalancer,
                    ServiceType::ExternalName,
                ]
            } else {
                Vec::new()
            },
            publish_host_ip: input.flags & 2 != 0,
            always_publish_not_ready: input.flags & 4 != 0,
            expose_internal_ipv6: input.flags & 8 != 0,
        },
        exclude_unschedulable: input.flags & 16 != 0,
        ignore_hostname_annotation: input.flags & 32 != 0,
        ignore_ingress_tls_spec: input.flags & 64 != 0,
        ignore_ingress_rules_spec: input.flags & 128 != 0,
    };
    let nodes = fuzz_nodes(&input.nodes);
    let slices = fuzz_slices(&input, nodes.len());
    let view = ClusterView::new(&nodes, &slices);
    let of_service = service_types::wanted(&service, &filters, &view);
    within_object_limits(&of_service, &filters.limits);
    let mut all = of_service;
    all.push(source::from_ingress(&ingress, &filters));
    // `--source node`: the same nodes, carrying the Service's labels and annotations, as the store keeps them.
    for node in &nodes {
        let mut node = node.clone();
        node.metadata.labels = service.metadata.labels.clone();
        node.metadata.annotations = service.metadata.annotations.clone();
        dns_sync::node_source::trim(&mut node);
        all.push(dns_sync::node_source::from_node(&node, &filters));
    }
    for wanted in all {
        if let Some(request) = &wanted.request {
            assert!(request.names.len() <= filters.limits.names_per_object);
            assert!(request.targets.len() <= filters.limits.targets_per_object);
            assert!(!request.keep_published || (request.names.is_empty() && request.targets.is_empty()));
        }
        let endpoints: Vec<source::Endpoint> = wanted
            .request
            .iter()
            .flat_map(source::Request::endpoints)
            .collect();
        let mut pairs = std::collections::BTreeSet::new();
        for endpoint in &endpoints {
            let name = &endpoint.name;
            assert!(endpoint.ttl.is_none_or(|ttl| ttl <= i32::MAX as u32));
            let pair = (name.clone(), endpoint.target.to_string());
            assert!(pairs.insert(pair), "{name:?} -> {} twice", endpoint.target);
            // An SRV record's name is `_<service>._<protocol>.<host>`, the name it points at.
            let named = match &endpoint.target {
                Target::Host(_) => name.as_str(),
                Target::Srv { priority: 0, weight: 50, port: _, host } => {
                    let mut labels = name.splitn(3, '.');
                    let (service_label, protocol, rest) = (labels.next(), labels.next(), labels.next());
                    assert!(service_label.is_some_and(|l| l.starts_with('_') && l.len() <= 63), "{name:?}");
                    assert!(matches!(protocol, Some("_tcp" | "_udp" | "_sctp")), "{name:?}");
                    assert_eq!(rest, Some(host.as_str()), "{name:?}");
                    assert!(!host.starts_with("*."), "SRV at a wildcard {host:?}");
                    host.as_str()
                }
                other => panic!("a Service asked for {other:?}, not an address, name or SRV record"),
            };
            assert_eq!(
                source::validate_hostname(named).as_deref(),
                Ok(named),
                "name {name:?}"
            );
            assert!(
                filters.domains.is_empty()
                    || filters
                        .domains
                        .iter()
                        .any(|d| named == d || named.ends_with(&format!(".{d}"))),
                "{name:?} outside {:?}",
                filters.domains
            );
            assert!(
                !filters
                    .excluded_domains
                    .iter()
                    .any(|d| named == d || named.ends_with(&format!(".{d}"))),
                "{name:?} inside excluded {:?}",
                filters.excluded_domains
            );
            KeyLayout::default()
                .record_key(name, &target_suffix(name, &endpoint.target.key_seed()))
                .unwrap_or_else(|e| panic!("{name:?} -> {} has no etcd key: {e}", endpoint.target));
            if let Target::Host(target) = &endpoint.target
                && target.parse::<IpAddr>().is_err()
            {
                assert_eq!(
                    source::validate_hostname(target).as_ref(),
                    Ok(target),
                    "target {target:?}"
                );
                assert!(!target.starts_with("*."), "wildcard target {target:?}");
            }
        }
    }

    let filter = ClassFilter {
        class: "groundwork.dev/lb".to_owned(),
        claim_unclassed: true,
    };
    let _ = filter.handles(&service);
    if let Ok(request) = request::read(&service) {
        assert_eq!(request.key.as_str(), format!("{}/{}", input.namespace, input.name));
        assert!(request.requested.len() <= 2);
        if let [a, b] = request.requested.as_slice() {
            assert_ne!(
                Family::of(*a),
                Family::of(*b),
                "two addresses of one family"
            );
        }
        if !request.requested.is_empty() {
            let families: Vec<Family> = request.requested.iter().map(|a| Family::of(*a)).collect();
            assert_eq!(request.families, families);
        }
        assert!(!request.families.is_empty());
        assert!(
            request
                .pool
                .as_ref()
                .is_none_or(|p| !p.is_empty() && p.trim() == p)
        );
    }
});

/// Nodes `n0`, `n1`, ... with the fuzzed addresses.
fn fuzz_nodes(nodes: &[Vec<(bool, Text)>]) -> Vec<Node> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, addresses)| Node {
            metadata: ObjectMeta {
                name: Some(format!("n{i}")),
                ..ObjectMeta::default()
            },
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|(external, address)| NodeAddress {
                            type_: if *external { "ExternalIP" } else { "InternalIP" }.to_owned(),
                            address: address.text(),
                        })
                        .collect(),
                ),
                ..NodeStatus::default()
            }),
            ..Node::default()
        })
        .collect()
}

/// The Service's EndpointSlices, one per address type, with the fuzzed endpoints.
fn fuzz_slices(input: &Input, nodes: usize) -> Vec<EndpointSlice> {
    ["IPv4", "IPv6", "FQDN"]
        .iter()
        .enumerate()
        .map(|(i, address_type)| EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{}-{i}", input.name)),
                namespace: Some(input.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    service_types::SERVICE_NAME_LABEL.to_owned(),
                    input.name.clone(),
                )])),
                ..ObjectMeta::default()
            },
            address_type: (*address_type).to_owned(),
            endpoints: Some(
                input
                    .endpoints
                    .iter()
                    .filter(|e| usize::from(e.address_type % 3) == i)
                    .map(|e| Endpoint {
                        addresses: e.addresses.iter().map(Text::text).collect(),
                        conditions: Some(EndpointConditions {
                            ready: e.ready,
                            serving: e.serving,
                            terminating: None,
                        }),
                        hostname: opt(&e.hostname),
                        node_name: Some(format!("n{}", usize::from(e.node) % (nodes + 1))),
                        target_ref: e.pod.then(|| ObjectReference {
                            kind: Some("Pod".to_owned()),
                            ..ObjectReference::default()
                        }),
                        ..Endpoint::default()
                    })
                    .collect(),
            ),
            ports: None,
        })
        .collect()
}

/// One Service's requests together stay within the per-object limits: distinct names, and distinct
/// targets of each kind (addresses and names; SRV records).
fn within_object_limits(found: &[source::Wanted], limits: &source::Limits) {
    let requests: Vec<&source::Request> = found
        .iter()
        .filter_map(|w| w.request.as_ref())
        .filter(|r| !r.keep_published)
        .collect();
    // The internal-hostname request is limited on its own.
    for (internal, label) in [(true, "internal"), (false, "by type")] {
        let mine: Vec<&&source::Request> = requests
            .iter()
            .filter(|r| r.names.iter().all(|n| n.field.contains("internal-hostname")) == internal)
            .collect();
        let names: std::collections::BTreeSet<&str> = mine
            .iter()
            .flat_map(|r| r.names.iter().map(|n| n.name.as_str()))
            .collect();
        assert!(names.len() <= limits.names_per_object, "{label}: {} names", names.len());
        let hosts: std::collections::BTreeSet<&Target> = mine
            .iter()
            .flat_map(|r| r.targets.iter())
            .filter(|t| matches!(t, Target::Host(_)))
            .collect();
        assert!(hosts.len() <= limits.targets_per_object, "{label}: {} targets", hosts.len());
    }
}
