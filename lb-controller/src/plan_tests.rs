use super::*;
use crate::speakers::SpeakerInfo;
use serde_json::json;

fn service(ns: &str, name: &str, extra: serde_json::Value) -> Arc<Service> {
    let mut value = json!({
        "metadata": {"namespace": ns, "name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}
    });
    merge(&mut value, extra);
    Arc::new(serde_json::from_value(value).unwrap())
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

fn pool(name: &str, spec: serde_json::Value) -> Arc<IPPool> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "groundwork.dev/v1alpha1", "kind": "IPPool",
            "metadata": {"name": name}, "spec": spec
        }))
        .unwrap(),
    )
}

fn node(name: &str, labels: serde_json::Value) -> Arc<Node> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap(),
    )
}

fn speakers(names: &[&str]) -> BTreeMap<String, SpeakerInfo> {
    names
        .iter()
        .map(|n| {
            (
                (*n).to_owned(),
                SpeakerInfo {
                    node: (*n).to_owned(),
                    interfaces: vec![],
                    version: String::new(),
                },
            )
        })
        .collect()
}

fn filter() -> ClassFilter {
    ClassFilter {
        class: "groundwork.dev/lb".into(),
        claim_unclassed: true,
    }
}

struct World {
    services: Vec<Arc<Service>>,
    pools: Vec<Arc<IPPool>>,
    /// Pools from the legacy ConfigMap or MetalLB's resources.
    legacy: Vec<PoolDef>,
    nodes: Vec<Arc<Node>>,
    slices: Vec<Arc<EndpointSlice>>,
    speakers: BTreeMap<String, SpeakerInfo>,
    announced: BTreeMap<IpAddr, String>,
}

impl World {
    fn seed() -> Self {
        Self {
            services: vec![service("ingress", "nginx", json!({}))],
            pools: vec![pool(
                "seed",
                json!({"addresses": ["10.10.39.200-10.10.39.220"]}),
            )],
            legacy: vec![],
            nodes: vec![
                node("m1", json!({})),
                node("n1", json!({})),
                node("n2", json!({})),
            ],
            slices: vec![],
            speakers: speakers(&["m1", "n1", "n2"]),
            announced: BTreeMap::new(),
        }
    }

    fn pass(&self, planner: &mut Planner) -> Outcome {
        self.pass_over(planner, Scope::Everything)
    }

    fn pass_over(&self, planner: &mut Planner, scope: Scope<'_>) -> Outcome {
        planner.pass(
            &Inputs {
                services: &self.services,
                pools: &self.pools,
                legacy_pools: &self.legacy,
                nodes: &self.nodes,
                slices: &self.slices,
                namespaces: &[],
                speakers: &self.speakers,
                include_unconnected: false,
                ever_connected: &BTreeSet::new(),
                announced: &self.announced,
                announced_changed: true,
            },
            scope,
        )
    }

    /// Writes the outcome's statuses back into the Services, as the API would after our patches.
    fn apply(&mut self, outcome: &Outcome) {
        for service in &mut self.services {
            if let Some(addresses) = outcome.statuses.get(&ServiceKey::of(service)) {
                let mut value = serde_json::to_value(&**service).unwrap();
                value["status"] = json!({"loadBalancer": {"ingress":
                    addresses.iter().map(|a| json!({"ip": a.to_string()})).collect::<Vec<_>>()}});
                *service = Arc::new(serde_json::from_value(value).unwrap());
            }
        }
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn announcer_of(outcome: &Outcome, address: IpAddr) -> Option<&str> {
    outcome
        .desired
        .iter()
        .find(|(_, list)| list.iter().any(|a| a.address == address))
        .map(|(node, _)| node.as_str())
}

#[test]
fn the_seed_service_gets_the_first_pool_address_and_one_announcer() {
    let world = World::seed();
    let outcome = world.pass(&mut Planner::new(filter()));
    assert_eq!(outcome.statuses["ingress/nginx"], vec![ip("10.10.39.200")]);
    let announcers: Vec<_> = outcome.desired.keys().collect();
    assert_eq!(announcers.len(), 1);
    assert_eq!(
        outcome.desired.values().next().unwrap()[0].services,
        vec!["ingress/nginx".to_owned()]
    );
    assert_eq!(outcome.pending, 0);
    assert_eq!(outcome.pools["seed"].usage.assigned_v4, 1);
    assert_eq!(outcome.pools["seed"].usage.available_v4, 20);
}

#[test]
fn a_restarted_controller_keeps_every_address_and_announcer() {
    let mut world = World::seed();
    for i in 0..15 {
        world
            .services
            .push(service("web", &format!("s{i}"), json!({})));
    }
    let first = world.pass(&mut Planner::new(filter()));
    world.apply(&first);
    // The pool shrinks in order: a new controller must still not move anything.
    let second = world.pass(&mut Planner::new(filter()));
    assert_eq!(first.statuses, second.statuses);
    let placement = |o: &Outcome| -> BTreeMap<IpAddr, String> {
        o.desired
            .iter()
            .flat_map(|(node, list)| list.iter().map(move |a| (a.address, node.clone())))
            .collect()
    };
    assert_eq!(placement(&first), placement(&second));
    // Addresses the statuses showed may still be announced from before: they are not fresh.
    assert!(first.desired.values().flatten().all(|a| a.fresh));
    assert!(second.desired.values().flatten().all(|a| !a.fresh));
}

/// While an address waits for its new node's acknowledgement (speakers reconnecting after a start, a
/// handover), the pass says nothing about the announcing-node condition, so it keeps its value instead
/// of being cleared and written again; it is cleared only when nobody will announce.
#[test]
fn the_annotation_waits_for_acknowledgements_and_clears_only_when_nobody_will_announce() {
    let mut world = World::seed();
    let mut planner = Planner::new(filter());
    let address = ip("10.10.39.200");
    let outcome = world.pass(&mut planner);
    assert!(!outcome.announcing.contains_key("ingress/nginx"));
    let node = announcer_of(&outcome, address).unwrap().to_owned();
    world.announced.insert(address, node.clone());
    let outcome = world.pass(&mut planner);
    assert_eq!(outcome.announcing["ingress/nginx"], Some(node.clone()));

    world.speakers.remove(&node);
    world.announced.clear();
    let outcome = world.pass(&mut planner);
    let next = announcer_of(&outcome, address).unwrap().to_owned();
    assert_ne!(next, node);
    assert!(!outcome.announcing.contains_key("ingress/nginx"));
    world.announced.insert(address, next.clone());
    let outcome = world.pass(&mut planner);
    assert_eq!(outcome.announcing["ingress/nginx"], Some(next));

    world.speakers.clear();
    world.announced.clear();
    let outcome = world.pass(&mut planner);
    assert_eq!(outcome.announcing["ingress/nginx"], None);
}

#[test]
fn a_leaving_speaker_moves_only_its_own_addresses() {
    let mut world = World::seed();
    for i in 0..15 {
        world
            .services
            .push(service("web", &format!("s{i}"), json!({})));
    }
    let mut planner = Planner::new(filter());
    let before = world.pass(&mut planner);
    world.speakers.remove("n1");
    let after = world.pass(&mut planner);
    let mut moved = 0;
    for list in before.desired.values() {
        for a in list {
            let (old, new) = (
                announcer_of(&before, a.address),
                announcer_of(&after, a.address),
            );
            if old == Some("n1") {
                assert_ne!(new, Some("n1"));
                moved += 1;
            } else {
                assert_eq!(old, new, "{} moved without reason", a.address);
            }
        }
    }
    assert!(moved > 0, "n1 held nothing; the test proves nothing");
    assert_eq!(
        before.statuses, after.statuses,
        "addresses never change with announcers"
    );
}

#[test]
fn other_classes_are_left_alone_and_ours_is_served() {
    let mut world = World::seed();
    world.services.push(service(
        "a",
        "metallb",
        json!({"spec": {"loadBalancerClass": "metallb.io/metallb"}}),
    ));
    world.services.push(service(
        "a",
        "ours",
        json!({"spec": {"loadBalancerClass": "groundwork.dev/lb"}}),
    ));
    world.services.push(service(
        "a",
        "plain",
        json!({"spec": {"type": "ClusterIP"}}),
    ));
    let outcome = world.pass(&mut Planner::new(filter()));
    let keys: Vec<_> = outcome.statuses.keys().cloned().collect();
    assert_eq!(keys, vec!["a/ours", "ingress/nginx"]);
}

#[test]
fn a_service_that_stops_being_ours_is_released_and_its_status_cleared() {
    let mut world = World::seed();
    let mut planner = Planner::new(filter());
    let first = world.pass(&mut planner);
    world.apply(&first);
    let mut value = serde_json::to_value(&*world.services[0]).unwrap();
    value["spec"]["type"] = json!("ClusterIP");
    world.services[0] = Arc::new(serde_json::from_value(value).unwrap());
    world.services.push(service("b", "next", json!({})));
    let second = world.pass(&mut planner);
    assert_eq!(second.statuses["ingress/nginx"], Vec::<IpAddr>::new());
    assert_eq!(
        second.statuses["b/next"],
        vec![ip("10.10.39.200")],
        "the freed address is reused"
    );
}

#[test]
fn a_pending_service_gets_an_address_when_the_pool_grows() {
    let mut world = World::seed();
    world.pools = vec![pool("seed", json!({"addresses": ["10.10.39.200"]}))];
    world.services.push(service(
        "b",
        "late",
        json!({"metadata": {"creationTimestamp": "2026-02-01T00:00:00Z"}}),
    ));
    let mut planner = Planner::new(filter());
    let first = world.pass(&mut planner);
    assert_eq!(first.statuses["b/late"], Vec::<IpAddr>::new());
    assert_eq!(first.pending, 1);
    let note = &first.notes["b/late"];
    assert_eq!(note.reason, Reason::AllocationFailed);
    assert!(
        note.message
            .contains("no free IPv4 address left in pools seed"),
        "{}",
        note.message
    );
    world.pools = vec![pool(
        "seed",
        json!({"addresses": ["10.10.39.200-10.10.39.201"]}),
    )];
    let second = world.pass(&mut planner);
    assert_eq!(second.statuses["b/late"], vec![ip("10.10.39.201")]);
}

#[test]
fn bad_pools_and_requests_are_reported_and_change_nothing() {
    let mut world = World::seed();
    let mut planner = Planner::new(filter());
    let first = world.pass(&mut planner);
    world.apply(&first);
    world
        .pools
        .push(pool("broken", json!({"addresses": ["10.0.0.9-10.0.0.1"]})));
    world
        .pools
        .push(pool("overlap", json!({"addresses": ["10.10.39.0/24"]})));
    let mut value = serde_json::to_value(&*world.services[0]).unwrap();
    value["metadata"]["annotations"] =
        json!({"metallb.universe.tf/loadBalancerIPs": "10.10.39.300"});
    world.services[0] = Arc::new(serde_json::from_value(value).unwrap());
    let second = world.pass(&mut planner);
    assert_eq!(second.statuses["ingress/nginx"], vec![ip("10.10.39.200")]);
    assert_eq!(
        second.notes["ingress/nginx"].message,
        "metallb.universe.tf/loadBalancerIPs: \"10.10.39.300\" is not an IP address"
    );
    assert_eq!(
        second.pools["broken"].invalid.as_deref(),
        Some("spec.addresses[0]: \"10.0.0.9-10.0.0.1\": the first address is after the last")
    );
    assert_eq!(second.pools["overlap"].overlaps, vec!["seed".to_owned()]);
    assert_eq!(second.pools["seed"].overlaps, vec!["overlap".to_owned()]);
}

#[test]
fn local_traffic_is_announced_only_from_nodes_with_a_ready_endpoint() {
    let mut world = World::seed();
    world.services = vec![service(
        "web",
        "local",
        json!({"spec": {"externalTrafficPolicy": "Local"}}),
    )];
    let mut planner = Planner::new(filter());
    let none = world.pass(&mut planner);
    assert!(none.desired.is_empty());
    assert_eq!(none.notes["web/local"].reason, Reason::NoAnnouncer);
    world.slices = vec![Arc::new(serde_json::from_value(json!({
        "metadata": {"namespace": "web", "name": "local-abc", "labels": {"kubernetes.io/service-name": "local"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.244.1.5"], "nodeName": "n2", "conditions": {"ready": true}},
            {"addresses": ["10.244.1.6"], "nodeName": "n1", "conditions": {"ready": false}}
        ]
    })).unwrap())];
    let outcome = world.pass(&mut planner);
    assert_eq!(outcome.desired.keys().collect::<Vec<_>>(), vec!["n2"]);
}

#[test]
fn the_announce_node_selector_and_exclusion_label_limit_announcers() {
    let mut world = World::seed();
    world.pools = vec![pool(
        "seed",
        json!({"addresses": ["10.10.39.200-10.10.39.220"],
        "announce": {"nodeSelector": {"matchLabels": {"edge": "true"}}, "interfaces": ["eth1"]}}),
    )];
    world.nodes = vec![
        node(
            "m1",
            json!({"edge": "true", "node.kubernetes.io/exclude-from-external-load-balancers": ""}),
        ),
        node("n1", json!({"edge": "true"})),
        node("n2", json!({})),
    ];
    let outcome = world.pass(&mut Planner::new(filter()));
    assert_eq!(outcome.desired.keys().collect::<Vec<_>>(), vec!["n1"]);
    assert_eq!(outcome.desired["n1"][0].interfaces, vec!["eth1".to_owned()]);
}

#[test]
fn of_two_services_claiming_one_address_the_older_keeps_it() {
    let mut world = World::seed();
    world.services = vec![
        service(
            "a",
            "newer",
            json!({"metadata": {"creationTimestamp": "2026-03-01T00:00:00Z"},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.10.39.205"}]}}}),
        ),
        service(
            "a",
            "older",
            json!({"metadata": {"creationTimestamp": "2026-02-01T00:00:00Z"},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.10.39.205"}]}}}),
        ),
    ];
    let outcome = world.pass(&mut Planner::new(filter()));
    assert_eq!(outcome.statuses["a/older"], vec![ip("10.10.39.205")]);
    assert_eq!(outcome.statuses["a/newer"], vec![ip("10.10.39.200")]);
    let note = &outcome.notes["a/newer"];
    assert_eq!(note.reason, Reason::AllocationConflict);
    assert!(
        note.message.contains("a/older") && note.message.contains("given 10.10.39.200"),
        "{}",
        note.message
    );
}

#[test]
fn legacy_pools_serve_unless_an_ippool_has_the_name() {
    let mut world = World::seed();
    world.pools.clear();
    let (crate::legacy::Legacy { pools: legacy, .. }, errors) = crate::legacy::parse(Some(
        "address-pools:\n- name: default\n  protocol: layer2\n  addresses: [10.10.39.200-10.10.39.220]\n",
    ));
    assert!(errors.is_empty());
    world.legacy = legacy;
    let outcome = world.pass(&mut Planner::new(filter()));
    assert_eq!(outcome.statuses["ingress/nginx"], vec![ip("10.10.39.200")]);
    assert!(
        outcome.pools.is_empty(),
        "legacy pools have no IPPool status"
    );
}

#[test]
fn while_settling_late_speakers_count_but_departed_ones_do_not() {
    let world = World::seed();
    let inputs = |speakers: &BTreeMap<String, SpeakerInfo>, ever: &BTreeSet<String>| {
        Planner::new(filter())
            .pass(
                &Inputs {
                    services: &world.services,
                    pools: &world.pools,
                    legacy_pools: &[],
                    nodes: &world.nodes,
                    slices: &[],
                    namespaces: &[],
                    speakers,
                    include_unconnected: true,
                    ever_connected: ever,
                    announced: &BTreeMap::new(),
                    announced_changed: true,
                },
                Scope::Everything,
            )
            .desired
    };
    // Nobody has reconnected yet: the answer is the same as with everyone connected.
    let all = inputs(&world.speakers, &BTreeSet::new());
    let nobody = inputs(&BTreeMap::new(), &BTreeSet::new());
    assert_eq!(
        all.keys().collect::<Vec<_>>(),
        nobody.keys().collect::<Vec<_>>()
    );
    // The chosen node's speaker connected and went away: it is not waited for.
    let chosen = all.keys().next().unwrap().clone();
    let mut rest = world.speakers.clone();
    rest.remove(&chosen);
    let ever: BTreeSet<String> = world.speakers.keys().cloned().collect();
    let after = inputs(&rest, &ever);
    assert!(!after.contains_key(&chosen));
    assert_eq!(after.len(), 1);
}

/// What a long-lived planner reuses between passes (requests by resourceVersion, announcers by candidate
/// set) never makes it answer differently from a planner seeing the same cluster for the first time.
#[test]
fn reused_results_agree_with_a_fresh_planner() {
    let mut world = World::seed();
    world.pools = vec![pool("big", json!({"addresses": ["10.20.0.0/24"]}))];
    world.nodes = (0..6).map(|i| node(&format!("w{i}"), json!({}))).collect();
    let all: Vec<String> = (0..6).map(|i| format!("w{i}")).collect();
    world.speakers = speakers(&all.iter().map(String::as_str).collect::<Vec<_>>());
    world.services = (0..40)
        .map(|i| {
            service(
                "web",
                &format!("s{i}"),
                json!({"metadata": {"resourceVersion": "1"}}),
            )
        })
        .collect();
    let placement = |o: &Outcome| -> BTreeMap<IpAddr, String> {
        o.desired
            .iter()
            .flat_map(|(node, list)| list.iter().map(move |a| (a.address, node.clone())))
            .collect()
    };
    let mut planner = Planner::new(filter());
    let first = world.pass(&mut planner);
    world.apply(&first);

    // Speakers leave and come back; each pass must match what a new planner computes from scratch.
    for gone in [
        vec!["w1"],
        vec!["w1", "w4"],
        vec![],
        vec!["w0", "w2", "w3"],
        vec![],
    ] {
        let present: Vec<&str> = all
            .iter()
            .map(String::as_str)
            .filter(|n| !gone.contains(n))
            .collect();
        world.speakers = speakers(&present);
        let reused = world.pass(&mut planner);
        let fresh = world.pass(&mut Planner::new(filter()));
        assert_eq!(
            placement(&reused),
            placement(&fresh),
            "speakers gone: {gone:?}"
        );
        assert_eq!(reused.statuses, fresh.statuses);
    }

    // A changed Service (new resourceVersion) is re-read: its requested address is honoured.
    let changed = service(
        "web",
        "s3",
        json!({"metadata": {"resourceVersion": "2",
                            "annotations": {"groundwork.dev/loadBalancerIPs": "10.20.0.200"}}}),
    );
    world.services[3] = changed;
    let outcome = world.pass(&mut planner);
    assert_eq!(outcome.statuses["web/s3"], vec![ip("10.20.0.200")]);
}

/// One change to the cluster in [`incremental_passes_agree_with_full_passes`].
#[derive(Debug, Clone)]
enum Op {
    /// Creates (or replaces) Service `i`: minute of creation, requested address (index into the
    /// pool), shared (with the key `k` and a port of its own), `externalTrafficPolicy: Local`.
    Put(usize, u8, Option<u8>, bool, bool),
    /// Deletes Service `i`.
    Delete(usize),
    /// Makes Service `i` a ClusterIP one (or a LoadBalancer again).
    Retype(usize),
    /// Sets Service `i`'s ready endpoints to the nodes in the bit mask.
    Endpoints(usize, u8),
    /// Speakers acknowledge the addresses placed on them whose bit in the mask is set.
    Acknowledge(u16),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0..12usize, 0..4u8, proptest::option::of(0..8u8), any::<bool>(), any::<bool>())
            .prop_map(|(i, m, r, s, l)| Op::Put(i, m, r, s, l)),
        2 => (0..12usize).prop_map(Op::Delete),
        1 => (0..12usize).prop_map(Op::Retype),
        1 => (0..12usize, 0..16u8).prop_map(|(i, n)| Op::Endpoints(i, n)),
        2 => any::<u16>().prop_map(Op::Acknowledge),
    ]
}

/// The cluster of [`incremental_passes_agree_with_full_passes`]: 12 possible Services over 8 addresses,
/// so pools run out and addresses are freed and shared; 4 nodes.
struct Churn {
    world: World,
    version: u64,
}

const CHURN_NODES: [&str; 4] = ["w0", "w1", "w2", "w3"];

impl Churn {
    fn new() -> Self {
        let mut world = World::seed();
        world.services.clear();
        world.pools = vec![pool("small", json!({"addresses": ["10.30.0.0/29"]}))];
        world.nodes = CHURN_NODES.iter().map(|n| node(n, json!({}))).collect();
        world.speakers = speakers(&CHURN_NODES);
        Self { world, version: 0 }
    }

    fn key(i: usize) -> ServiceKey {
        ServiceKey::new("web", &format!("s{i}"))
    }

    fn position(&self, i: usize) -> Option<usize> {
        let key = Self::key(i);
        self.world
            .services
            .iter()
            .position(|s| ServiceKey::of(s) == key)
    }

    /// Replaces (or adds) a Service with a new resourceVersion.
    fn store(&mut self, mut value: serde_json::Value) {
        self.version += 1;
        value["metadata"]["resourceVersion"] = json!(self.version.to_string());
        let service: Arc<Service> = Arc::new(serde_json::from_value(value).unwrap());
        let key = ServiceKey::of(&service);
        match self
            .world
            .services
            .iter()
            .position(|s| ServiceKey::of(s) == key)
        {
            Some(at) => self.world.services[at] = service,
            None => self.world.services.push(service),
        }
    }

    /// Applies `op`; returns the Service it changed, if any.
    fn apply(&mut self, op: &Op, placed: &BTreeMap<IpAddr, String>) -> Option<ServiceKey> {
        match *op {
            Op::Put(i, minute, requested, shared, local) => {
                let mut annotations = serde_json::Map::new();
                if let Some(r) = requested {
                    annotations.insert(
                        "groundwork.dev/loadBalancerIPs".into(),
                        json!(format!("10.30.0.{r}")),
                    );
                }
                if shared {
                    annotations.insert("groundwork.dev/allow-shared-ip".into(), json!("k"));
                }
                let status = self.position(i).map(|at| {
                    serde_json::to_value(&*self.world.services[at]).unwrap()["status"].clone()
                });
                let mut value = json!({
                    "metadata": {"namespace": "web", "name": format!("s{i}"),
                                 "creationTimestamp": format!("2026-01-01T00:{minute:02}:00Z"),
                                 "annotations": annotations},
                    "spec": {"type": "LoadBalancer", "ports": [{"port": 8000 + i}],
                             "externalTrafficPolicy": if local { "Local" } else { "Cluster" }}
                });
                if let Some(status) = status {
                    value["status"] = status;
                }
                self.store(value);
                Some(Self::key(i))
            }
            Op::Delete(i) => {
                let at = self.position(i)?;
                self.world.services.remove(at);
                Some(Self::key(i))
            }
            Op::Retype(i) => {
                let at = self.position(i)?;
                let mut value = serde_json::to_value(&*self.world.services[at]).unwrap();
                let retyped = if value["spec"]["type"] == "LoadBalancer" {
                    "ClusterIP"
                } else {
                    "LoadBalancer"
                };
                value["spec"]["type"] = json!(retyped);
                self.store(value);
                Some(Self::key(i))
            }
            Op::Endpoints(i, mask) => {
                let name = format!("s{i}");
                self.world.slices.retain(|s| {
                    s.metadata.labels.as_ref().unwrap()["kubernetes.io/service-name"] != name
                });
                let endpoints: Vec<_> = CHURN_NODES
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| mask & (1 << bit) != 0)
                    .map(|(_, node)| json!({"addresses": ["10.244.0.1"], "nodeName": node}))
                    .collect();
                self.world.slices.push(Arc::new(
                    serde_json::from_value(json!({
                        "metadata": {"namespace": "web", "name": format!("{name}-x"),
                                     "labels": {"kubernetes.io/service-name": name}},
                        "addressType": "IPv4",
                        "endpoints": endpoints
                    }))
                    .unwrap(),
                ));
                Some(Self::key(i))
            }
            Op::Acknowledge(mask) => {
                self.world.announced = placed
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| mask & (1 << (bit % 16)) != 0)
                    .map(|(_, (address, node))| (*address, node.clone()))
                    .collect();
                None
            }
        }
    }

    /// Writes statuses back as the API would; returns the Services whose status changed (their echo).
    fn write_back(&mut self, outcome: &Outcome) -> Vec<ServiceKey> {
        let mut echoed = Vec::new();
        for (key, addresses) in &outcome.statuses {
            let Some(at) = self
                .world
                .services
                .iter()
                .position(|s| &ServiceKey::of(s) == key)
            else {
                continue;
            };
            if &request::status_addresses(&self.world.services[at]) == addresses {
                continue;
            }
            let mut value = serde_json::to_value(&*self.world.services[at]).unwrap();
            value["status"] = json!({"loadBalancer": {"ingress":
                addresses.iter().map(|a| json!({"ip": a.to_string()})).collect::<Vec<_>>()}});
            self.store(value);
            echoed.push(key.clone());
        }
        echoed
    }

    fn pass(&self, planner: &mut Planner, scope: Scope<'_>) -> Outcome {
        self.world.pass_over(planner, scope)
    }

    fn changed(&self, keys: &BTreeSet<ServiceKey>) -> BTreeMap<ServiceKey, Option<Arc<Service>>> {
        keys.iter()
            .map(|key| {
                let found = self
                    .world
                    .services
                    .iter()
                    .find(|s| &ServiceKey::of(s) == key);
                (key.clone(), found.cloned())
            })
            .collect()
    }
}

/// Where each address is placed, from a full `desired`.
fn placement_of(desired: &BTreeMap<String, Vec<DesiredAssignment>>) -> BTreeMap<IpAddr, String> {
    desired
        .iter()
        .flat_map(|(node, list)| list.iter().map(move |a| (a.address, node.clone())))
        .collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// An incremental pass, given only the Services that changed (and the echoes of its own status
    /// writes), leaves nothing for a full pass to change, says of each Service it covers what that full
    /// pass says, and hands the speakers the same sets. (A full pass from another history may settle a
    /// contested address differently, on the oldest waiting claim rather than on whichever Service came
    /// first in its order, so each step is checked against a full pass over the same planner.)
    #[test]
    fn incremental_passes_agree_with_full_passes(ops in proptest::collection::vec(op(), 1..40)) {
        let mut churn = Churn::new();
        let mut planner = Planner::new(filter());
        let first = churn.pass(&mut planner, Scope::Everything);
        let mut desired = first.desired;
        let mut dirty: BTreeSet<ServiceKey> = BTreeSet::new();
        for (step, op) in ops.iter().enumerate() {
            let placed = placement_of(&desired);
            dirty.extend(churn.apply(op, &placed));
            let changed = churn.changed(&dirty);
            let some = churn.pass(&mut planner, Scope::Services(&changed));
            let all = churn.pass(&mut planner, Scope::Everything);
            proptest::prop_assert_eq!(all.changed, 0, "step {} {:?}: the full pass found work", step, op);
            proptest::prop_assert!(!some.desired_complete);
            for (node, list) in &some.desired {
                if list.is_empty() {
                    desired.remove(node);
                } else {
                    desired.insert(node.clone(), list.clone());
                }
            }
            proptest::prop_assert_eq!(&desired, &all.desired, "step {} {:?}: the speakers' sets", step, op);
            proptest::prop_assert_eq!(some.pending, all.pending, "step {} {:?}: pending", step, op);
            proptest::prop_assert_eq!(&some.pools, &all.pools, "step {} {:?}: pools", step, op);
            for key in churn.world.services.iter().map(|s| ServiceKey::of(s)) {
                if !some.coverage.covers(&key) {
                    continue;
                }
                // A Service we stopped serving gets its status cleared once, by the pass that released it.
                let released = some.statuses.get(&key).is_some_and(Vec::is_empty) && !all.statuses.contains_key(&key);
                if !released {
                    proptest::prop_assert_eq!(some.statuses.get(&key), all.statuses.get(&key), "step {} {:?}: status of {}", step, op, key);
                }
                proptest::prop_assert_eq!(some.notes.get(&key), all.notes.get(&key), "step {} {:?}: note of {}", step, op, key);
                proptest::prop_assert_eq!(some.announcing.get(&key), all.announcing.get(&key), "step {} {:?}: announcing of {}", step, op, key);
            }
            // The writes' echoes are the next pass's changes.
            dirty = churn.write_back(&all).into_iter().collect();
        }
    }
}

#[test]
fn a_pool_without_layer_2_gets_addresses_but_no_arp_announcer_and_no_warning() {
    let mut world = World::seed();
    world.pools.clear();
    let spec = crate::pool::IPPoolSpec {
        addresses: vec!["10.10.39.200-10.10.39.220".to_owned()],
        auto_assign: true,
        avoid_buggy_ips: false,
        service_allocation: None,
        announce: None,
    };
    let bgp_only = PoolDef::from_spec("bgp-only", &spec)
        .unwrap()
        .with_layer2(crate::pool::Layer2::Off);
    world.legacy = vec![bgp_only];
    let mut planner = Planner::new(filter());
    let outcome = world.pass(&mut planner);
    assert_eq!(outcome.statuses["ingress/nginx"], vec![ip("10.10.39.200")]);
    assert!(
        outcome.desired.values().all(Vec::is_empty),
        "{:?}",
        outcome.desired
    );
    assert!(
        !outcome.notes.contains_key("ingress/nginx"),
        "{:?}",
        outcome.notes
    );
    // BGP still sees the address, its pool and every node that may announce.
    let (nodes, held) = planner.bgp_view();
    assert_eq!(nodes.len(), 3);
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].pool, Some("bgp-only"));
}
