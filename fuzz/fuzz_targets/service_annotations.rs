//! Service and Ingress annotations, spec and status fields as users (and MetalLB or external-dns
//! configurations) write them: dns-sync's `source::from_service` / `from_ingress` (hostname, target and
//! TTL annotations) and lb-controller's `request::read` (requested addresses, pool, sharing key, families).
//!
//! Asserts: nothing panics; every endpoint dns-sync wants has a valid lower-case name inside the domain
//! filter that maps onto an etcd key (plan.rs relies on that), a target that is an address or a valid
//! non-wildcard name, a TTL within i32, and no (name, target) twice; every request the controller reads
//! asks for at most one address per family, its families follow the requested addresses, and its key is
//! `namespace/name`.
#![no_main]

use std::collections::BTreeMap;
use std::net::IpAddr;

use arbitrary::Arbitrary;
use dns_sync::source::{self, Filters};
use dns_sync::target::Target;
use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus,
};
use k8s_openapi::api::networking::v1::{
    Ingress, IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressRule, IngressSpec,
    IngressStatus,
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
                    "ClusterIP"
                }
                .to_owned(),
            ),
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
        domains: input.domains.iter().map(Text::text).collect(),
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
        // NodePort and headless Services read Nodes and EndpointSlices: `service_types`' unit tests.
        services: Default::default(),
    };
    for wanted in [
        source::from_service(&service, &filters),
        source::internal_from_service(&service, &filters),
        source::from_ingress(&ingress, &filters),
    ] {
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
            assert_eq!(
                source::validate_hostname(name).as_ref(),
                Ok(name),
                "name {name:?}"
            );
            assert!(
                filters.domains.is_empty()
                    || filters
                        .domains
                        .iter()
                        .any(|d| name == d || name.ends_with(&format!(".{d}"))),
                "{name:?} outside {:?}",
                filters.domains
            );
            let Target::Host(target) = &endpoint.target else {
                panic!("a Service asked for {:?}, not an address or name", endpoint.target);
            };
            KeyLayout::default()
                .record_key(name, &target_suffix(name, target))
                .unwrap_or_else(|e| panic!("{name:?} -> {target:?} has no etcd key: {e}"));
            if target.parse::<IpAddr>().is_err() {
                assert_eq!(
                    source::validate_hostname(target).as_ref(),
                    Ok(target),
                    "target {target:?}"
                );
                assert!(!target.starts_with("*."), "wildcard target {target:?}");
            }
            assert!(endpoint.ttl.is_none_or(|ttl| ttl <= i32::MAX as u32));
            assert!(pairs.insert((name, target)), "{name:?} -> {target:?} twice");
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
