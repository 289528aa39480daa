//! The BGP pieces shared by the BGP end-to-end tests and the BGP benchmark: the seed network with a router,
//! BIRD's configuration for it, groundwork's BGP objects, and reading BIRD's table.

use std::net::{Ipv4Addr, Ipv6Addr};

use integration_tests::bird::Bird;
use integration_tests::netlab::{HostSpec, LabSpec};
use integration_tests::wait;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};

use super::system::{NODES, System, WAIT};

/// The router's AS.
pub const ROUTER_AS: u32 = 64500;
/// The nodes' AS (4 bytes, so that the 4-byte AS capability is exercised).
pub const NODES_AS: u32 = 4_200_000_001;
/// The router's address on the seed segment.
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 10, 40, 1);

/// The seed's network with a router at 10.10.40.1 / fd10:10::40:1.
pub fn with_router() -> LabSpec {
    let mut spec = LabSpec::seed();
    spec.hosts.push(HostSpec {
        name: "router".to_owned(),
        ipv4: ROUTER,
        ipv6: Ipv6Addr::new(0xfd10, 0x10, 0, 0, 0, 0, 0x40, 1),
    });
    spec
}

/// BIRD peering passively with each of `nodes` (name, address; the speakers dial out, as MetalLB's do),
/// importing everything into its IPv4 and IPv6 tables; `extra` goes into each BGP protocol (`bfd on;`,
/// `graceful restart on;`), and with BFD, BIRD runs it at 100 ms x 3.
pub fn bird_config(nodes: &[(&str, Ipv4Addr)], extra: &str) -> String {
    let mut config = format!("router id {ROUTER};\nprotocol device {{}}\n");
    if extra.contains("bfd") {
        config.push_str(
            "protocol bfd { interface \"eth0\" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }; }\n",
        );
    }
    for (node, address) in nodes {
        config.push_str(&format!(
            "protocol bgp {node} {{\n  local {ROUTER} as {ROUTER_AS};\n  neighbor {address} as {NODES_AS};\n  \
             passive on;\n  hold time 9;\n  {extra}\n  ipv4 {{ import all; export none; }};\n  ipv6 {{ import all; export none; }};\n}}\n"
        ));
    }
    config
}

/// BIRD in the system's `router` namespace configured with `extra` for every node, the `BGPPeer` "router"
/// of `peer_spec`, a `BGPAdvertisement` of every pool, and every session Established.
pub fn peered(system: &System, extra: &str, peer_spec: Value) -> Bird {
    peered_with(system, extra, "", peer_spec)
}

/// [`peered`], with `global` added to BIRD's configuration (e.g. a kernel protocol).
pub fn peered_with(system: &System, extra: &str, global: &str, peer_spec: Value) -> Bird {
    let nodes: Vec<(&str, Ipv4Addr)> = NODES.iter().map(|n| (*n, system.host(n).ipv4)).collect();
    let bird = Bird::start_in(
        system.host("router"),
        "bird-router",
        system.scratch(),
        &format!("{}{global}\n", bird_config(&nodes, extra)),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    create(system, "BGPPeer", "bgppeers", "router", peer_spec);
    create(
        system,
        "BGPAdvertisement",
        "bgpadvertisements",
        "all",
        json!({}),
    );
    wait_established(&bird, &NODES);
    bird
}

/// Waits until BIRD's session with each of `nodes` is Established.
pub fn wait_established(bird: &Bird, nodes: &[&str]) {
    for node in nodes {
        bird.wait_established(node, WAIT).unwrap_or_else(|e| {
            panic!(
                "{e}\n{}",
                bird.show(&format!("protocols all {node}"))
                    .unwrap_or_default()
            )
        });
    }
}

/// Waits until BIRD shows `count` BFD sessions Up.
pub fn wait_bfd_up(bird: &Bird, count: usize) {
    wait::until_blocking("BFD Up with every node", WAIT, || {
        let sessions = bird.show("bfd sessions").map_err(|e| e.to_string())?;
        let up = sessions.lines().filter(|l| l.contains(" Up ")).count();
        if up == count { Ok(()) } else { Err(sessions) }
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

/// One of groundwork's cluster-scoped objects (groundwork.dev/v1alpha1).
pub fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "groundwork.dev".into(),
        version: "v1alpha1".into(),
        api_version: "groundwork.dev/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Creates the groundwork object `kind` named `name` with `spec`.
pub fn create(system: &System, kind: &str, plural: &str, name: &str, spec: Value) {
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

/// The `BFDProfile` "fast": 100 ms x 3, what [`bird_config`] runs on BIRD's side.
pub fn create_fast_bfd_profile(system: &System) {
    create(
        system,
        "BFDProfile",
        "bfdprofiles",
        "fast",
        json!({"receiveInterval": 100, "transmitInterval": 100, "detectMultiplier": 3}),
    );
}

/// BIRD's routes for `prefix`, once `check` accepts them.
pub fn wait_route(bird: &Bird, prefix: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
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
pub fn next_hops(routes: &str) -> Vec<String> {
    let mut hops: Vec<String> = routes
        .lines()
        .filter_map(|l| l.trim().strip_prefix("BGP.next_hop: "))
        .map(|h| h.split_whitespace().next().unwrap_or_default().to_owned())
        .collect();
    hops.sort();
    hops
}
