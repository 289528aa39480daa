#![allow(clippy::unwrap_used, clippy::expect_used)]
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
/// everything into its IPv4 and IPv6 tables; `extra` goes into each BGP protocol (`bfd on;`,
/// `graceful restart on;`), and with BFD, BIRD runs it at 100 ms x 3.
fn bird_config(system: &System, extra: &str) -> String {
    let mut config = "router id 10.10.40.1;\nprotocol device {}\n".to_owned();
    if extra.contains("bfd") {
        config.push_str(
            "protocol bfd { interface \"eth0\" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }; }\n",
        );
    }
    for node in NODES {
        let address = system.host(node).ipv4;
        config.push_str(&format!(
            "protocol bgp {node} {{\n  local 10.10.40.1 as {ROUTER_AS};\n  neighbor {address} as {NODES_AS};\n  \
             passive on;\n  hold time 9;\n  {extra}\n  ipv4 {{ import all; export none; }};\n  ipv6 {{ import all; export none; }};\n}}\n"
        ));
    }
    config
}

/// A system with a router, BIRD configured with `extra`, the peer `peer_spec`, an advertisement of every
/// pool, every session Established and the Service `web` routed through every node.
fn routed(what: &str, extra: &str, peer_spec: Value) -> (System, Bird) {
    let system = System::start_on(what, &with_router(), 1, Duration::from_secs(2));
    let bird = Bird::start_in(
        system.host("router"),
        "bird-router",
        system.scratch(),
        &bird_config(&system, extra),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    create(&system, "BGPPeer", "bgppeers", "router", peer_spec);
    create(
        &system,
        "BGPAdvertisement",
        "bgpadvertisements",
        "all",
        json!({}),
    );
    wait_established(&bird, &NODES);
    system.create_service("web");
    wait_route(&bird, "10.10.39.200/32", "a path through every node", |r| {
        next_hops(r).len() == NODES.len()
    });
    (system, bird)
}

fn wait_established(bird: &Bird, nodes: &[&str]) {
    for node in nodes {
        bird.wait_established(node, WAIT)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Polls BIRD until the path through `node` is gone; how long that took from `since`.
fn path_gone(
    bird: &Bird,
    node_address: &str,
    since: std::time::Instant,
    within: Duration,
) -> Duration {
    wait::until_blocking(
        &format!("the path via {node_address} withdrawn"),
        within,
        || {
            let routes = bird.route("10.10.39.200/32").map_err(|e| e.to_string())?;
            if next_hops(&routes).iter().any(|h| h == node_address) {
                Err(format!("router shows:\n{routes}"))
            } else {
                Ok(since.elapsed())
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", bird.log_tail(20)))
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
        &bird_config(&system, ""),
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
    wait_established(&bird, &NODES);

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

#[test]
fn a_cut_off_node_is_withdrawn_by_bfd_long_before_the_hold_timer() {
    let peer = json!({"myASN": NODES_AS, "peerASN": ROUTER_AS, "peerAddress": "10.10.40.1", "holdTime": "9s",
                      "bfdProfile": "fast"});
    let system = System::start_on("lb-bgp-bfd", &with_router(), 1, Duration::from_secs(2));
    create(
        &system,
        "BFDProfile",
        "bfdprofiles",
        "fast",
        json!({"receiveInterval": 100, "transmitInterval": 100, "detectMultiplier": 3}),
    );
    let bird = Bird::start_in(
        system.host("router"),
        "bird-router",
        system.scratch(),
        &bird_config(&system, "bfd on;"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    create(&system, "BGPPeer", "bgppeers", "router", peer);
    create(
        &system,
        "BGPAdvertisement",
        "bgpadvertisements",
        "all",
        json!({}),
    );
    wait_established(&bird, &NODES);
    wait::until_blocking("BFD Up with every node", WAIT, || {
        let sessions = bird.show("bfd sessions").map_err(|e| e.to_string())?;
        let up = sessions.lines().filter(|l| l.contains(" Up ")).count();
        if up == NODES.len() {
            Ok(())
        } else {
            Err(sessions)
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    system.create_service("web");
    wait_route(&bird, "10.10.39.200/32", "a path through every node", |r| {
        next_hops(r).len() == NODES.len()
    });

    // n1's link goes down: no FIN, no RST, only silence. The hold timer (9 s) would take that long; BFD
    // (100 ms x 3) takes 300 ms.
    let n1 = system.host("n1");
    let cut = std::time::Instant::now();
    integration_tests::netlab::ip(&["-n", &n1.netns, "link", "set", "eth0", "down"]).unwrap();
    let took = path_gone(&bird, &n1.ipv4.to_string(), cut, Duration::from_secs(5));
    eprintln!(
        "[figure] BGP+BFD: a cut-off node's path left the router's table {took:?} after the cut"
    );
    assert!(
        took < Duration::from_secs(2),
        "BFD, not the 9 s hold timer, must withdraw it: {took:?}"
    );
    let routes = bird.route("10.10.39.200/32").unwrap();
    assert_eq!(
        next_hops(&routes).len(),
        NODES.len() - 1,
        "the other paths stay: {routes}"
    );
}

#[test]
fn a_killed_speakers_path_is_withdrawn_at_once() {
    let peer = json!({"myASN": NODES_AS, "peerASN": ROUTER_AS, "peerAddress": "10.10.40.1", "holdTime": "9s"});
    let (mut system, bird) = routed("lb-bgp-kill", "", peer);
    let n2 = system.host("n2").ipv4.to_string();
    let killed = std::time::Instant::now();
    system.speakers.get_mut("n2").unwrap().kill();
    let took = path_gone(&bird, &n2, killed, Duration::from_secs(5));
    eprintln!(
        "[figure] BGP: a killed speaker's path left the router's table {took:?} after SIGKILL"
    );
    assert!(
        took < Duration::from_secs(2),
        "the kernel closes the session at once: {took:?}"
    );
}

#[test]
fn a_graceful_restart_of_a_speaker_keeps_its_path() {
    let peer = json!({"myASN": NODES_AS, "peerASN": ROUTER_AS, "peerAddress": "10.10.40.1", "holdTime": "9s",
                      "enableGracefulRestart": true});
    let (mut system, bird) = routed("lb-bgp-gr", "graceful restart on;", peer);
    let n1 = system.host("n1").ipv4.to_string();
    let speaker = system.speakers.get_mut("n1").unwrap();
    speaker.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(
        speaker.wait_exit(WAIT).is_some(),
        "the speaker stops on SIGTERM"
    );
    // The router keeps n1's path while it restarts...
    wait::until_blocking("BIRD in graceful restart for n1", WAIT, || {
        let protocol = bird.show("protocols all n1").map_err(|e| e.to_string())?;
        if protocol.contains("graceful restart") || protocol.contains("Graceful restart") {
            Ok(())
        } else {
            Err(protocol)
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    // ...through the restart, checked at every poll until the new session is up, and after it.
    system.restart_speaker("n1");
    let missing = std::cell::Cell::new(0_u32);
    wait::until_blocking("n1 re-established", WAIT, || {
        let routes = bird.route("10.10.39.200/32").map_err(|e| e.to_string())?;
        if !next_hops(&routes).contains(&n1) {
            missing.set(missing.get() + 1);
        }
        match bird
            .protocol_state("n1")
            .map_err(|e| e.to_string())?
            .as_str()
        {
            "Established" => Ok(()),
            other => Err(other.to_owned()),
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        missing.get(),
        0,
        "n1's path was withdrawn during the graceful restart"
    );
    let routes = bird.route("10.10.39.200/32").unwrap();
    assert_eq!(next_hops(&routes).len(), NODES.len(), "{routes}");
}
