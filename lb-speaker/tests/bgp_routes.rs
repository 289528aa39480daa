//! BGP mode end to end, judged by a real router: the `lb-controller` binary against the test bed's
//! kube-apiserver, an `lb-speaker` in each seed node's namespace (m1, n1, n2), and BIRD 2 in a `router`
//! namespace on the same segment. The user's side is only Kubernetes objects: a `BGPPeer`, a
//! `BGPAdvertisement` and a LoadBalancer Service. What counts is BIRD's own routing table.

mod support;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use integration_tests::bird::Bird;
use integration_tests::netlab::{HostSpec, LabSpec};
use integration_tests::wait;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, PostParams};
use serde_json::{Value, json};
use support::system::{NODES, System, WAIT};

const ROUTER_AS: u32 = 64500;
const NODES_AS: u32 = 4_200_000_001;

/// The seed's network with a router at 10.10.40.1 / fd10:10::40:1.
fn with_router() -> LabSpec {
    let mut spec = LabSpec::seed();
    spec.hosts.push(HostSpec {
        name: "router".to_owned(),
        ipv4: Ipv4Addr::new(10, 10, 40, 1),
        ipv6: Ipv6Addr::new(0xfd10, 0x10, 0, 0, 0, 0, 0x40, 1),
    });
    spec
}

/// BIRD peering passively with every node (the speakers dial out, as MetalLB's do), importing
/// everything into its IPv4 and IPv6 tables.
fn bird_config(system: &System) -> String {
    let mut config = format!(
        "router id 10.10.40.1;\nprotocol device {{}}\n\
         protocol kernel k4 {{ ipv4 {{ export none; }}; }}\n"
    );
    for node in NODES {
        let address = system.host(node).ipv4;
        config.push_str(&format!(
            "protocol bgp {node} {{\n  local 10.10.40.1 as {ROUTER_AS};\n  neighbor {address} as {NODES_AS};\n  \
             passive on;\n  hold time 9;\n  ipv4 {{ import all; export none; }};\n  ipv6 {{ import all; export none; }};\n}}\n"
        ));
    }
    config
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "groundwork.dev".into(),
        version: "v1alpha1".into(),
        api_version: "groundwork.dev/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn create(system: &System, kind: &str, plural: &str, name: &str, spec: Value) {
    let api: Api<DynamicObject> = Api::all_with(system.client(), &resource(kind, plural));
    let object = serde_json::from_value(json!({
        "apiVersion": "groundwork.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    system
        .block_on(api.create(&PostParams::default(), &object))
        .unwrap();
}

/// BIRD's routes for `prefix`, once `check` accepts them.
fn wait_route(bird: &Bird, prefix: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
    wait::until_blocking(&format!("{prefix}: {what}"), WAIT, || {
        let routes = bird.route(prefix).map_err(|e| e.to_string())?;
        if check(&routes) {
            Ok(routes)
        } else {
            Err(format!("router shows:\n{routes}"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", bird.log_tail(20)))
}

/// Next hops of the BGP paths in `birdc show route all` output.
fn next_hops(routes: &str) -> Vec<String> {
    let mut hops: Vec<String> = routes
        .lines()
        .filter_map(|l| l.trim().strip_prefix("BGP.next_hop: "))
        .map(|h| h.split_whitespace().next().unwrap_or_default().to_owned())
        .collect();
    hops.sort();
    hops
}

#[test]
fn a_service_is_routed_to_every_node_with_its_communities_and_withdrawn_when_it_goes() {
    let system = System::start_on("lb-bgp-routes", &with_router(), 1, Duration::from_secs(2));
    let router = system.host("router");
    let bird = Bird::start_in(
        router,
        "bird-router",
        system.scratch(),
        &bird_config(&system),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    create(
        &system,
        "BGPPeer",
        "bgppeers",
        "router",
        json!({"myASN": NODES_AS, "peerASN": ROUTER_AS, "peerAddress": "10.10.40.1", "holdTime": "9s",
               "dualStackAddressFamily": true}),
    );
    create(
        &system,
        "BGPAdvertisement",
        "bgpadvertisements",
        "seed",
        json!({"communities": ["65000:100", "large:4200000001:7:8"]}),
    );
    for node in NODES {
        wait::until_blocking(&format!("BGP session with {node}"), WAIT, || {
            match bird
                .protocol_state(node)
                .map_err(|e| e.to_string())?
                .as_str()
            {
                "Established" => Ok(()),
                other => Err(other.to_owned()),
            }
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e}\n{}",
                bird.show(&format!("protocols all {node}"))
                    .unwrap_or_default()
            )
        });
    }

    system.create_service("web");
    let routes = wait_route(&bird, "10.10.39.200/32", "a path through every node", |r| {
        next_hops(r).len() == NODES.len()
    });
    let mut expected: Vec<String> = NODES
        .iter()
        .map(|n| system.host(n).ipv4.to_string())
        .collect();
    expected.sort();
    assert_eq!(next_hops(&routes), expected, "{routes}");
    assert!(
        routes.contains("BGP.as_path: 4200000001"),
        "eBGP path is our AS: {routes}"
    );
    assert!(routes.contains("(65000,100)"), "community: {routes}");
    assert!(
        routes.contains("(4200000001, 7, 8)"),
        "large community: {routes}"
    );

    let api: Api<Service> = Api::namespaced(system.client(), "default");
    system
        .block_on(api.delete("web", &DeleteParams::default()))
        .unwrap();
    wait_route(
        &bird,
        "10.10.39.200/32",
        "withdrawn from every node",
        str::is_empty,
    );
}
