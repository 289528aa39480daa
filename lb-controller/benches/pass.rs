//! The reconcile pass alone, as pure logic (no API server, no gRPC): how long one [`Planner::pass`] takes
//! for a cluster of a given size, on its first pass after a start (rebuilding from Service statuses) and on
//! the passes that follow (one Service added; one node gone).
//!
//! `cargo bench -p lb-controller --bench pass`
//! Sizes: `LB_BENCH_SERVICES` (default 10,000), `LB_BENCH_NODES` (default 1,000), `LB_BENCH_LOCAL`
//! (default 0: how many of the Services use `externalTrafficPolicy: Local`, each with an EndpointSlice).
//! The scale benchmark (`--bench scale`) measures the whole controller; this one tells how much of it is
//! the pass.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use lb_controller::plan::{Inputs, Outcome, Planner, Scope};
use lb_controller::pool::IPPool;
use lb_controller::request::{ClassFilter, ServiceKey};
use lb_controller::speakers::SpeakerInfo;
use serde_json::json;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn node_name(i: usize) -> String {
    format!("node-{i:04}")
}

/// A LoadBalancer Service whose status already shows `address` (as after a restart).
fn service(i: usize, address: Option<Ipv4Addr>, local: bool) -> Arc<Service> {
    let status = address.map_or(
        json!({}),
        |a| json!({"loadBalancer": {"ingress": [{"ip": a.to_string()}]}}),
    );
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {
                "namespace": format!("ns-{}", i % 50), "name": format!("svc-{i:05}"),
                "creationTimestamp": "2026-01-01T00:00:00Z", "uid": format!("uid-{i}"),
                "resourceVersion": format!("{}", 1000 + i)
            },
            "spec": {
                "type": "LoadBalancer", "ports": [{"port": 80}],
                "externalTrafficPolicy": if local { "Local" } else { "Cluster" },
                "selector": {"app": format!("app-{i}")}
            },
            "status": status
        }))
        .unwrap(),
    )
}

fn slice(i: usize, nodes: usize) -> Arc<EndpointSlice> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {
                "namespace": format!("ns-{}", i % 50), "name": format!("svc-{i:05}-abcde"),
                "labels": {"kubernetes.io/service-name": format!("svc-{i:05}")}
            },
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.1.0.1"], "nodeName": node_name(i % nodes), "conditions": {"ready": true}},
                {"addresses": ["10.1.0.2"], "nodeName": node_name((i * 7 + 3) % nodes), "conditions": {"ready": true}}
            ]
        }))
        .unwrap(),
    )
}

fn node(i: usize) -> Arc<Node> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": node_name(i), "labels": {"kubernetes.io/hostname": node_name(i)}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap(),
    )
}

struct Cluster {
    services: Vec<Arc<Service>>,
    pools: Vec<Arc<IPPool>>,
    nodes: Vec<Arc<Node>>,
    slices: Vec<Arc<EndpointSlice>>,
    speakers: BTreeMap<String, SpeakerInfo>,
}

impl Cluster {
    fn pass(&self, planner: &mut Planner) -> (Outcome, Duration) {
        self.pass_over(planner, Scope::Everything)
    }

    fn pass_over(&self, planner: &mut Planner, scope: Scope<'_>) -> (Outcome, Duration) {
        let started = Instant::now();
        let outcome = planner.pass(
            &Inputs {
                services: &self.services,
                pools: &self.pools,
                legacy_pools: &[],
                nodes: &self.nodes,
                slices: &self.slices,
                namespaces: &[],
                speakers: &self.speakers,
                include_unconnected: false,
                ever_connected: &BTreeSet::new(),
                announced: &BTreeMap::new(),
                announced_changed: true,
            },
            scope,
        );
        (outcome, started.elapsed())
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let services = env("LB_BENCH_SERVICES", 10_000);
    let nodes = env("LB_BENCH_NODES", 1_000);
    let local = env("LB_BENCH_LOCAL", 0).min(services);
    let base = u32::from(Ipv4Addr::new(10, 64, 0, 0));
    let mut cluster = Cluster {
        services: (0..services)
            .map(|i| {
                let address = Ipv4Addr::from(base + 1 + u32::try_from(i).unwrap());
                service(i, Some(address), i < local)
            })
            .collect(),
        pools: vec![Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "groundwork.dev/v1alpha1", "kind": "IPPool",
                "metadata": {"name": "bench"}, "spec": {"addresses": ["10.64.0.0/16"]}
            }))
            .unwrap(),
        )],
        nodes: (0..nodes).map(node).collect(),
        slices: (0..local).map(|i| slice(i, nodes)).collect(),
        speakers: (0..nodes)
            .map(|i| {
                (
                    node_name(i),
                    SpeakerInfo {
                        node: node_name(i),
                        interfaces: vec![],
                        version: String::new(),
                    },
                )
            })
            .collect(),
    };
    let filter = ClassFilter {
        class: "groundwork.dev/lb".into(),
        claim_unclassed: true,
    };
    println!("pass benchmark: {services} Services ({local} Local), {nodes} nodes with speakers");

    let mut planner = Planner::new(filter);
    let (first, took) = cluster.pass(&mut planner);
    let moved = first.statuses.iter().filter(|(_, a)| a.len() != 1).count();
    assert_eq!(moved, 0, "the first pass changed statuses");
    assert_eq!(first.pending, 0);
    println!("first pass (rebuild from statuses):  {took:>10.2?}");

    let mut steady = Vec::new();
    for _ in 0..5 {
        steady.push(cluster.pass(&mut planner).1);
    }
    steady.sort();
    println!(
        "steady pass, nothing changed (median of 5): {:>10.2?}",
        steady[2]
    );

    cluster.services.push(service(services, None, false));
    let (added, took) = cluster.pass(&mut planner);
    let key = ServiceKey::new(
        &format!("ns-{}", services % 50),
        &format!("svc-{services:05}"),
    );
    assert_eq!(added.statuses.get(&key).map(Vec::len), Some(1));
    println!("pass after one Service added:        {took:>10.2?}");

    // The same, as the controller runs it: an incremental pass over the one Service that changed.
    let mut changed_one = Vec::new();
    for extra in 1..=5 {
        let service = service(services + extra, None, false);
        let key = ServiceKey::new(
            &format!("ns-{}", (services + extra) % 50),
            &format!("svc-{:05}", services + extra),
        );
        cluster.services.push(service.clone());
        let changed = BTreeMap::from([(key.clone(), Some(service))]);
        let (added, took) = cluster.pass_over(&mut planner, Scope::Services(&changed));
        assert_eq!(added.statuses.get(&key).map(Vec::len), Some(1));
        changed_one.push(took);
    }
    changed_one.sort();
    println!(
        "incremental pass, one Service added (median of 5): {:>10.2?}",
        changed_one[2]
    );

    let gone = node_name(0);
    cluster.speakers.remove(&gone);
    let (after, took) = cluster.pass(&mut planner);
    assert!(!after.desired.contains_key(&gone));
    println!("pass after one speaker left:         {took:>10.2?}");
}
