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
use kube::api::{ApiResource, DeleteParams, DynamicObject, PostParams};
use serde_json::{Value, json};
use support::bgp::{
    self, NODES_AS, ROUTER_AS, create, create_fast_bfd_profile, next_hops, peered, peered_with,
    resource, wait_bfd_up, wait_established, wait_route, with_router,
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
    routed_with(what, extra, "", peer_spec)
}

/// [`routed`], with `global` added to BIRD's configuration (e.g. a kernel protocol).
fn routed_with(what: &str, extra: &str, global: &str, peer_spec: Value) -> (System, Bird) {
    let system = System::start_on(what, &with_router(), 1, Duration::from_secs(2));
    let bird = peered_with(&system, extra, global, peer_spec);
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
    // What a user sees: one BGPSessionState per node and peer, and an Event on each Node.
    let states: Api<DynamicObject> = Api::all_with(
        system.client(),
        &resource("BGPSessionState", "bgpsessionstates"),
    );
    for node in NODES {
        let name = format!("{node}-router");
        wait::until_blocking(&format!("BGPSessionState {name} Established"), WAIT, || {
            let object = system
                .block_on(states.get_opt(&name))
                .map_err(|e| e.to_string())?
                .ok_or("not written yet")?;
            match object.data["status"]["bgpStatus"].as_str() {
                Some("Established") => Ok(()),
                other => Err(format!("bgpStatus {other:?}")),
            }
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(system.client(), "default");
    wait::until_blocking("a BGPSessionEstablished Event on m1", WAIT, || {
        let list = system
            .block_on(events.list(&Default::default()))
            .map_err(|e| e.to_string())?;
        list.items
            .iter()
            .find(|e| {
                e.reason.as_deref() == Some("BGPSessionEstablished")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("m1")
            })
            .map(|_| ())
            .ok_or_else(|| format!("{} events, none for m1", list.items.len()))
    })
    .unwrap_or_else(|e| panic!("{e}"));

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

/// A MetalLB v0.16 user's BGP objects, applied unchanged in `metallb-system`, with lb-controller reading them
/// in place (`--metallb-namespace`).
const METALLB_OBJECTS: &str = r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: public, namespace: metallb-system}
spec:
  addresses: [10.40.0.10-10.40.0.20]
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: router, namespace: metallb-system}
spec:
  myASN: 4200000001
  peerASN: 64500
  peerAddress: 10.10.40.1
  holdTime: 9s
---
apiVersion: metallb.io/v1beta1
kind: Community
metadata: {name: aliases, namespace: metallb-system}
spec:
  communities:
  - {name: no-export, value: "65535:65281"}
---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: public, namespace: metallb-system}
spec:
  ipAddressPools: [public]
  communities: [no-export]
"#;

#[test]
fn a_metallb_bgp_configuration_applied_unchanged_routes_the_service() {
    let system = System::start_on_with(
        "lb-bgp-metallb",
        &with_router(),
        1,
        Duration::from_secs(2),
        |c| c.metallb_namespace("metallb-system"),
        |runtime, cluster| {
            runtime
                .block_on(cluster.install_crds(&integration_tests::metallb::crds().unwrap()))
                .unwrap();
            let client = cluster.client();
            runtime.block_on(async {
                let namespaces: Api<k8s_openapi::api::core::v1::Namespace> =
                    Api::all(client.clone());
                let namespace =
                    serde_json::from_value(json!({"metadata": {"name": "metallb-system"}}))
                        .unwrap();
                namespaces
                    .create(&PostParams::default(), &namespace)
                    .await
                    .unwrap();
                for document in METALLB_OBJECTS.split("\n---\n") {
                    let value: Value = serde_yaml::from_str(document).unwrap();
                    let (group, version) = value["apiVersion"]
                        .as_str()
                        .unwrap()
                        .split_once('/')
                        .unwrap();
                    let kind = value["kind"].as_str().unwrap();
                    let plural = if kind == "Community" {
                        "communities".to_owned()
                    } else {
                        format!("{}s", kind.to_lowercase())
                    };
                    let resource = ApiResource {
                        group: group.into(),
                        version: version.into(),
                        api_version: format!("{group}/{version}"),
                        kind: kind.into(),
                        plural,
                    };
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(client.clone(), "metallb-system", &resource);
                    let object: DynamicObject = serde_json::from_value(value.clone()).unwrap();
                    api.create(&PostParams::default(), &object)
                        .await
                        .unwrap_or_else(|e| panic!("{kind}: {e}"));
                }
            });
        },
    );
    let bird = Bird::start_in(
        system.host("router"),
        "bird-router",
        system.scratch(),
        &bird_config(&system, ""),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    wait_established(&bird, &NODES);
    // The seed IPPool serves Services that ask for nothing; this one asks for MetalLB's pool, as MetalLB users'
    // Services do.
    let api: Api<Service> = Api::namespaced(system.client(), "default");
    let service = serde_json::from_value(json!({
        "metadata": {"name": "web", "annotations": {"metallb.universe.tf/address-pool": "public"}},
        "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                 "ports": [{"port": 80}], "selector": {"app": "web"}}
    }))
    .unwrap();
    system
        .block_on(api.create(&PostParams::default(), &service))
        .unwrap();
    let routes = wait_route(&bird, "10.40.0.10/32", "a path through every node", |r| {
        next_hops(r).len() == NODES.len()
    });
    assert!(
        routes.contains("(65535,65281)"),
        "the aliased community: {routes}"
    );
    // A BGP-only pool (no L2Advertisement selects it) is not answered by ARP from any node.
    let probe = integration_tests::lab::probe::ArpProbe::start(
        system.host("router"),
        "10.40.0.10".parse().unwrap(),
        Duration::from_millis(20),
    )
    .unwrap();
    wait::until_blocking("ten ARP requests for the address", WAIT, || {
        let asked = probe.exchanges().len();
        if asked >= 10 {
            Ok(())
        } else {
            Err(format!("{asked} so far"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        probe.answers(),
        0,
        "nobody answers ARP for a BGP-only address: {:?}",
        probe.macs()
    );
}

/// A client behind the router: its own namespace joined to the router by a veth pair (10.99.0.0/24), so
/// its traffic to the Service address can only go where the router's table sends it. Deleted on drop.
struct Outside {
    sealed: integration_tests::netlab::SealedNamespace,
}

impl Outside {
    const CLIENT: &'static str = "10.99.0.2";
    const ROUTER: &'static str = "10.99.0.1";

    fn attach(router: &integration_tests::netlab::Host) -> Self {
        use integration_tests::netlab::ip;
        let sealed = integration_tests::netlab::SealedNamespace::create("outside", &[]).unwrap();
        let (r, o) = (router.netns.as_str(), sealed.host().netns.as_str());
        ip(&[
            "-n", r, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1", "netns", o,
        ])
        .unwrap();
        ip(&[
            "-n",
            r,
            "addr",
            "add",
            &format!("{}/24", Self::ROUTER),
            "dev",
            "eth1",
        ])
        .unwrap();
        ip(&["-n", r, "link", "set", "eth1", "up"]).unwrap();
        ip(&[
            "-n",
            o,
            "addr",
            "add",
            &format!("{}/24", Self::CLIENT),
            "dev",
            "eth1",
        ])
        .unwrap();
        ip(&["-n", o, "link", "set", "eth1", "up"]).unwrap();
        ip(&[
            "-n",
            o,
            "route",
            "add",
            "10.10.39.0/24",
            "via",
            Self::ROUTER,
        ])
        .unwrap();
        // The router forwards, and spreads flows over equal paths by their ports too (layer-4 hash).
        for setting in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.fib_multipath_hash_policy=1",
        ] {
            let status = router
                .command("sysctl")
                .args(["-qw", setting])
                .status()
                .unwrap();
            assert!(status.success(), "sysctl {setting} in the router");
        }
        Self { sealed }
    }

    fn host(&self) -> &integration_tests::netlab::Host {
        self.sealed.host()
    }
}

#[test]
fn a_client_behind_the_router_reaches_the_service_through_every_node_over_ecmp() {
    let peer = json!({"myASN": NODES_AS, "peerASN": ROUTER_AS, "peerAddress": "10.10.40.1", "holdTime": "9s"});
    // BIRD installs what it learnt into the router's kernel table, the equal paths as one multipath route.
    let kernel = "protocol kernel { ipv4 { export all; }; merge paths on; }";
    let (system, _bird) = routed_with("lb-bgp-ecmp", "", kernel, peer);
    let router = system.host("router");
    let outside = Outside::attach(router);
    // What kube-proxy does on a real node, by hand: the Service address is local, and a server answers on
    // it (here with the node's name); replies to the outside go back through the router.
    let mut servers = Vec::new();
    for node in NODES {
        let host = system.host(node);
        integration_tests::netlab::ip(&[
            "-n",
            &host.netns,
            "addr",
            "add",
            "10.10.39.200/32",
            "dev",
            "lo",
        ])
        .unwrap();
        integration_tests::netlab::ip(&[
            "-n",
            &host.netns,
            "route",
            "add",
            "10.99.0.0/24",
            "via",
            "10.10.40.1",
        ])
        .unwrap();
        let root = system.scratch().join(format!("www-{node}"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), node).unwrap();
        let mut httpd = host.command("busybox");
        httpd
            .args(["httpd", "-f", "-p", "10.10.39.200:8080", "-h"])
            .arg(&root);
        let log = system.scratch().join(format!("httpd-{node}.log"));
        servers.push(
            integration_tests::process::Process::spawn(&format!("httpd on {node}"), httpd, &log)
                .unwrap(),
        );
    }

    // The router's own table: one route with a next hop through each node.
    let table = wait::until_blocking(
        "a multipath route in the router's kernel table",
        WAIT,
        || {
            let table = integration_tests::netlab::ip(&[
                "-n",
                &router.netns,
                "route",
                "show",
                "10.10.39.200",
            ])
            .map_err(|e| e.to_string())?;
            if table.matches("nexthop").count() == NODES.len() {
                Ok(table)
            } else {
                Err(table)
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for node in NODES {
        assert!(
            table.contains(&system.host(node).ipv4.to_string()),
            "{table}"
        );
    }

    // Flows from the client (each its own source port) land on more than one node.
    let mut answered = std::collections::BTreeSet::new();
    wait::until_blocking("answers from at least two nodes", WAIT, || {
        // bash's /dev/tcp: a new connection, from a new source port, each time (busybox's static wget
        // crashes here).
        let output = outside
            .host()
            .command("timeout")
            .args([
                "3",
                "bash",
                "-c",
                "exec 3<>/dev/tcp/10.10.39.200/8080; printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3",
            ])
            .output()
            .map_err(|e| e.to_string())?;
        let response = String::from_utf8_lossy(&output.stdout).into_owned();
        let body = response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_owned();
        if NODES.contains(&body.as_str()) {
            answered.insert(body);
        }
        if answered.len() >= 2 {
            Ok(())
        } else {
            Err(format!(
                "answered so far: {answered:?}; last: {}",
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    drop(servers);
}
