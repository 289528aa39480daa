#![allow(clippy::unwrap_used, clippy::expect_used)]
//! BGP mode end to end, judged by a real router: the `lb-controller` binary against the test bed's
//! kube-apiserver, an `lb-speaker` in each seed node's namespace (m1, n1, n2), and BIRD 2 in a `router`
//! namespace on the same segment. The user's side is only Kubernetes objects: a `BGPPeer`, a
//! `BGPAdvertisement` and a LoadBalancer Service. What counts is BIRD's own routing table.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use integration_tests::bird::Bird;
use integration_tests::wait;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::DeleteParams;
use serde_json::{Value, json};
use support::bgp::{
    self, NODES_AS, ROUTER_AS, create, create_fast_bfd_profile, next_hops, peered, wait_bfd_up,
    wait_established, wait_route, with_router,
};
use support::system::{NODES, System, WAIT};

/// BIRD's configuration for the system's nodes with `extra` in each BGP protocol.
fn bird_config(system: &System, extra: &str) -> String {
    let nodes: Vec<(&str, Ipv4Addr)> = NODES.iter().map(|n| (*n, system.host(n).ipv4)).collect();
    bgp::bird_config(&nodes, extra)
}

/// A system with a router, BIRD configured with `extra`, the peer `peer_spec`, an advertisement of every
/// pool, every session Established and the Service `web` routed through every node.
fn routed(what: &str, extra: &str, peer_spec: Value) -> (System, Bird) {
    let system = System::start_on(what, &with_router(), 1, Duration::from_secs(2));
    let bird = peered(&system, extra, peer_spec);
    system.create_service("web");
    wait_route(&bird, "10.10.39.200/32", "a path through every node", |r| {
        next_hops(r).len() == NODES.len()
    });
    (system, bird)
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
    create_fast_bfd_profile(&system);
    let bird = peered(&system, "bfd on;", peer);
    wait_bfd_up(&bird, NODES.len());
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
