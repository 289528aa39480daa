#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `lb-controller` against the test bed's real kube-apiserver: pools, Service statuses, Events, restarts,
//! leader hand-over, and announcers chosen among speakers. Real tonic clients stand in for speakers
//! (`support/`), following the speaker's half of `announce.proto`; the real speaker is exercised in its own
//! crate and in the lab suites.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use integration_tests::certs::{Ca, Usage};
use integration_tests::daemon::Daemon;
use integration_tests::kube::{KubeCluster, status_ips};
use integration_tests::launch::LbController;
use integration_tests::process::{Scratch, free_port};
use integration_tests::speaker_identity::{AUDIENCE, SpeakerAccount};
use integration_tests::wait::until;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use lb_controller::pool::IPPool;
use serde_json::json;

mod support;
use support::FakeSpeaker;

const WAIT: Duration = Duration::from_secs(20);

/// A control plane with the IPPool CRD, three Ready nodes as in the seed (m1, n1, n2) and the seed pool.
async fn seed_cluster() -> (KubeCluster, Client) {
    let cluster = KubeCluster::start().await.unwrap();
    cluster
        .install_crds(&lb_controller::crd_definitions())
        .await
        .unwrap();
    let client = cluster.client();
    for node in ["m1", "n1", "n2"] {
        add_ready_node(&client, node).await;
    }
    apply_pool(
        &client,
        "seed",
        json!({"addresses": ["10.10.39.200-10.10.39.220"]}),
    )
    .await;
    (cluster, client)
}

async fn add_ready_node(client: &Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let now = "2026-01-01T00:00:00Z";
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test node",
                "lastHeartbeatTime": now, "lastTransitionTime": now
            }]}})),
        )
        .await
        .unwrap();
}

async fn apply_pool(client: &Client, name: &str, spec: serde_json::Value) {
    let pools: Api<IPPool> = Api::all(client.clone());
    pools
        .patch(
            name,
            &PatchParams::apply("tests").force(),
            &Patch::Apply(json!({
                "apiVersion": "groundwork.dev/v1alpha1", "kind": "IPPool",
                "metadata": {"name": name}, "spec": spec
            })),
        )
        .await
        .unwrap();
}

async fn create_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
}

async fn create_service(client: &Client, ns: &str, name: &str, extra: serde_json::Value) {
    let mut value = json!({
        "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                 "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": name}}
    });
    merge(&mut value, extra);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(value).unwrap(),
        )
        .await
        .unwrap();
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

async fn service(client: &Client, ns: &str, name: &str) -> Service {
    Api::<Service>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap()
}

async fn wait_status(client: &Client, ns: &str, name: &str, want: &[&str]) {
    until(&format!("{ns}/{name} status {want:?}"), WAIT, || async {
        let ips = status_ips(&service(client, ns, name).await);
        if ips == want {
            Ok(())
        } else {
            Err(format!("status is {ips:?}"))
        }
    })
    .await
    .unwrap();
}

async fn wait_announcing(client: &Client, ns: &str, name: &str, want: Option<&str>) {
    until(
        &format!("{ns}/{name} announcing-node {want:?}"),
        WAIT,
        || async {
            let svc = service(client, ns, name).await;
            let have = lb_controller::request::announcing_node(&svc);
            if have.as_deref() == want {
                Ok(())
            } else {
                Err(format!("announcing node is {have:?}"))
            }
        },
    )
    .await
    .unwrap();
}

/// Waits for an Event with `reason` about the object `name` in `ns`, and returns its note.
async fn wait_event(client: &Client, ns: &str, name: &str, reason: &str) -> String {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    until(&format!("a {reason} event on {name}"), WAIT, || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .iter()
            .find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
            })
            .map(|e| e.note.clone().unwrap_or_default())
            .ok_or_else(|| {
                format!(
                    "events so far: {:?}",
                    list.items
                        .iter()
                        .map(|e| (e.reason.clone(), e.note.clone()))
                        .collect::<Vec<_>>()
                )
            })
    })
    .await
    .unwrap()
}

/// Starts the controller (plaintext gRPC on a free loopback port) and waits until it leads and is ready.
fn start_controller(cluster: &KubeCluster) -> (Daemon, SocketAddr) {
    start_controller_with(cluster, |c| c)
}

/// [`start_controller`] with `extra` flags.
fn start_controller_with(
    cluster: &KubeCluster,
    extra: impl FnOnce(LbController) -> LbController,
) -> (Daemon, SocketAddr) {
    let grpc: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
    let mut daemon = extra(controller(cluster).grpc(grpc)).start().unwrap();
    daemon.wait_ready(WAIT).unwrap();
    (daemon, grpc)
}

/// The controller the tests run: plaintext gRPC, a 600 ms speaker lease and a 1 s controller-loss hold.
fn controller(cluster: &KubeCluster) -> LbController {
    LbController::new(env!("CARGO_BIN_EXE_lb-controller"), cluster.kubeconfig())
        .speaker_lease(Duration::from_millis(600))
        .loss_hold(Duration::from_secs(1))
}

async fn speaker(grpc: SocketAddr, node: &str) -> FakeSpeaker {
    FakeSpeaker::connect(support::plain_channel(grpc).await, node, 0, &[])
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_gets_the_first_pool_address_an_event_and_the_pool_counts_it() {
    let (cluster, client) = seed_cluster().await;
    let (_controller, _) = start_controller(&cluster);
    create_namespace(&client, "ingress").await;
    create_service(&client, "ingress", "nginx", json!({})).await;
    wait_status(&client, "ingress", "nginx", &["10.10.39.200"]).await;
    let note = wait_event(&client, "ingress", "nginx", "IPAllocated").await;
    assert_eq!(note, "Assigned 10.10.39.200");

    let pools: Api<IPPool> = Api::all(client.clone());
    until("the pool status to count the address", WAIT, || async {
        let status = pools.get("seed").await.unwrap().status.unwrap_or_default();
        if status.assigned_ipv4 == 1 && status.available_ipv4 == 20 {
            Ok(status)
        } else {
            Err(format!("{status:?}"))
        }
    })
    .await
    .unwrap();

    // Deleting the Service frees the address for the next one.
    Api::<Service>::namespaced(client.clone(), "ingress")
        .delete("nginx", &DeleteParams::default())
        .await
        .unwrap();
    create_service(&client, "ingress", "next", json!({})).await;
    wait_status(&client, "ingress", "next", &["10.10.39.200"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_moves_no_address_and_a_new_service_gets_the_next_one() {
    let (cluster, client) = seed_cluster().await;
    let (mut controller, _) = start_controller(&cluster);
    for i in 0..5 {
        create_service(&client, "default", &format!("s{i}"), json!({})).await;
    }
    let mut before = BTreeMap::new();
    for i in 0..5 {
        let name = format!("s{i}");
        until(&format!("{name} to get an address"), WAIT, || async {
            let ips = status_ips(&service(&client, "default", &name).await);
            if ips.is_empty() {
                Err("pending".to_owned())
            } else {
                Ok(())
            }
        })
        .await
        .unwrap();
        before.insert(
            name.clone(),
            status_ips(&service(&client, "default", &name).await),
        );
    }
    controller.process().kill();
    // Free one address in the middle while the controller is down; the restart must not compact.
    Api::<Service>::namespaced(client.clone(), "default")
        .delete("s2", &DeleteParams::default())
        .await
        .unwrap();
    before.remove("s2");
    let (_controller, _) = start_controller(&cluster);
    create_service(&client, "default", "late", json!({})).await;
    wait_status(&client, "default", "late", &["10.10.39.202"]).await;
    for (name, ips) in before {
        assert_eq!(
            status_ips(&service(&client, "default", &name).await),
            ips,
            "{name} moved"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_reported_by_field_and_nothing_assigned_changes() {
    let (cluster, client) = seed_cluster().await;
    let (_controller, _) = start_controller(&cluster);
    create_service(&client, "default", "web", json!({})).await;
    wait_status(&client, "default", "web", &["10.10.39.200"]).await;

    // An unparsable requested address: reported, the old address stays.
    Api::<Service>::namespaced(client.clone(), "default")
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"metallb.universe.tf/loadBalancerIPs": "10.10.39.300"}}})),
        )
        .await
        .unwrap();
    let note = wait_event(&client, "default", "web", "AllocationFailed").await;
    assert_eq!(
        note,
        "metallb.universe.tf/loadBalancerIPs: \"10.10.39.300\" is not an IP address"
    );
    assert_eq!(
        status_ips(&service(&client, "default", "web").await),
        ["10.10.39.200"]
    );

    // An address outside every pool: pending, with the reason.
    create_service(
        &client,
        "default",
        "outside",
        json!({"metadata": {"annotations": {"groundwork.dev/loadBalancerIPs": "192.0.2.1"}}}),
    )
    .await;
    let note = wait_event(&client, "default", "outside", "AllocationFailed").await;
    assert!(
        note.contains("192.0.2.1") && note.contains("no pool"),
        "{note}"
    );

    // An address already taken without a sharing key.
    create_service(
        &client,
        "default",
        "thief",
        json!({"metadata": {"annotations": {"metallb.io/loadBalancerIPs": "10.10.39.200"}}}),
    )
    .await;
    let note = wait_event(&client, "default", "thief", "AllocationFailed").await;
    assert!(note.contains("already used by default/web"), "{note}");

    // A broken pool is reported on the pool; what was assigned stays.
    apply_pool(
        &client,
        "broken",
        json!({"addresses": ["10.20.0.9-10.20.0.1"]}),
    )
    .await;
    let pools: Api<IPPool> = Api::all(client.clone());
    let message = until("the broken pool's Ready condition", WAIT, || async {
        let status = pools
            .get("broken")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready" && c.status == "False")
            .map(|c| c.message.clone())
            .ok_or_else(|| format!("{status:?}"))
    })
    .await
    .unwrap();
    assert_eq!(
        message,
        "spec.addresses[0]: \"10.20.0.9-10.20.0.1\": the first address is after the last"
    );
    assert_eq!(
        status_ips(&service(&client, "default", "web").await),
        ["10.10.39.200"]
    );
    assert!(status_ips(&service(&client, "default", "thief").await).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_acknowledging_speaker_is_named_and_a_reset_moves_the_address_at_once() {
    let (cluster, client) = seed_cluster().await;
    let (_controller, grpc) = start_controller(&cluster);
    let n1 = speaker(grpc, "n1").await;
    create_service(&client, "default", "web", json!({})).await;
    wait_status(&client, "default", "web", &["10.10.39.200"]).await;
    // Only n1 has a speaker once the settle window (hold + grace) is over: it must announce.
    n1.wait_for("10.10.39.200").await;
    wait_announcing(&client, "default", "web", Some("n1")).await;

    let n2 = speaker(grpc, "n2").await;
    let m1 = speaker(grpc, "m1").await;
    n1.reset();
    let address: IpAddr = "10.10.39.200".parse().unwrap();
    let node = until("another speaker to get the address", WAIT, || async {
        [("n2", &n2), ("m1", &m1)]
            .into_iter()
            .find(|(_, s)| s.current().contains(&address))
            .map(|(n, _)| n)
            .ok_or_else(|| "not yet".to_owned())
    })
    .await
    .unwrap();
    wait_announcing(&client, "default", "web", Some(node)).await;
    let note = wait_event(&client, "default", "web", "AnnouncerChanged").await;
    assert!(note.contains("10.10.39.200 is announced by node"), "{note}");
}

/// How many announcing-node writes the controller made, from its metrics.
fn announcing_writes(controller: &Daemon) -> u64 {
    let metrics = controller.get("/metrics").unwrap().body;
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("groundwork_lb_controller_api_writes_total{")
                && l.contains("kind=\"announcing_node\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A restarted controller learns who announces what from the reconnecting speakers: it must not clear
/// the announcing nodes while they reconnect and write them back (at 10,000 Services that
/// was 20,000 writes and every announcing node gone for seconds).
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_rewrites_no_announcing_node() {
    let (cluster, client) = seed_cluster().await;
    let (mut controller, grpc) = start_controller(&cluster);
    let n1 = speaker(grpc, "n1").await;
    let n2 = speaker(grpc, "n2").await;
    for i in 0..4 {
        create_service(&client, "default", &format!("s{i}"), json!({})).await;
    }
    let mut before = BTreeMap::new();
    for i in 0..4 {
        let name = format!("s{i}");
        let address = format!("10.10.39.{}", 200 + i);
        until(&format!("{address} announced"), WAIT, || async {
            let holder = [("n1", &n1), ("n2", &n2)]
                .into_iter()
                .find(|(_, s)| s.current().contains(&address.parse().unwrap()));
            holder.map(|(n, _)| n).ok_or_else(|| "not yet".to_owned())
        })
        .await
        .unwrap();
        let node = if n1.current().contains(&address.parse().unwrap()) {
            "n1"
        } else {
            "n2"
        };
        wait_announcing(&client, "default", &name, Some(node)).await;
        before.insert(name, node);
    }

    controller.process().kill();
    let held = |s: &FakeSpeaker| {
        let generation = s.log.lock().unwrap().applied;
        let announcing: Vec<String> = s.current().iter().map(ToString::to_string).collect();
        (generation, announcing)
    };
    let (held1, held2) = (held(&n1), held(&n2));
    drop((n1, n2));
    // As a real deployment: the speakers reach the new leader once it is ready, holding what they had.
    let (controller, grpc) = start_controller(&cluster);
    let reconnect = |node: &'static str, (generation, announcing): (u64, Vec<String>)| async move {
        let announcing: Vec<&str> = announcing.iter().map(String::as_str).collect();
        FakeSpeaker::connect(
            support::plain_channel(grpc).await,
            node,
            generation,
            &announcing,
        )
        .await
        .unwrap()
    };
    let _n1 = reconnect("n1", held1).await;
    let _n2 = reconnect("n2", held2).await;
    // A new Service's announcing node is written only after the passes that followed the reconnections.
    create_service(&client, "default", "late", json!({})).await;
    until("the late Service's announcing node", WAIT, || async {
        let svc = service(&client, "default", "late").await;
        lb_controller::request::announcing_node(&svc).ok_or_else(|| "not yet".to_owned())
    })
    .await
    .unwrap();
    for (name, node) in before {
        wait_announcing(&client, "default", &name, Some(node)).await;
    }
    assert_eq!(
        announcing_writes(&controller),
        1,
        "only the new Service's announcing node is written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_takes_over_when_the_leader_dies_and_moves_nothing() {
    let (cluster, client) = seed_cluster().await;
    let election = |c: LbController| c.leader_elect().leader_lease(Duration::from_secs(2));
    let (mut first, _) = start_controller_with(&cluster, election);
    let grpc = format!("127.0.0.1:{}", free_port().unwrap());
    let mut second = election(controller(&cluster).grpc(grpc)).start().unwrap();
    // The standby is ready (a Deployment's rollout waits for every replica to be) but does not lead.
    second.wait_ready(Duration::from_secs(30)).unwrap();
    let standby = second.get("/readyz").unwrap();
    assert!(standby.body.contains("standing by"), "{}", standby.body);
    assert!(
        second
            .get("/metrics")
            .unwrap()
            .body
            .lines()
            .any(|l| l == "groundwork_lb_controller_leader 0"),
        "the standby must not lead"
    );

    for i in 0..3 {
        create_service(&client, "default", &format!("s{i}"), json!({})).await;
    }
    wait_status(&client, "default", "s2", &["10.10.39.202"]).await;
    first.process().kill();
    second
        .wait_metric("groundwork_lb_controller_leader 1", Duration::from_secs(30))
        .unwrap();
    create_service(&client, "default", "after", json!({})).await;
    wait_status(&client, "default", "after", &["10.10.39.203"]).await;
    for (i, ip) in ["10.10.39.200", "10.10.39.201", "10.10.39.202"]
        .iter()
        .enumerate()
    {
        assert_eq!(
            status_ips(&service(&client, "default", &format!("s{i}")).await),
            [*ip]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn other_classes_are_left_alone_and_metallb_configmap_pools_serve() {
    let cluster = KubeCluster::start().await.unwrap();
    cluster
        .install_crds(&lb_controller::crd_definitions())
        .await
        .unwrap();
    let client = cluster.client();
    add_ready_node(&client, "n1").await;
    create_namespace(&client, "metallb-system").await;
    // The seed's legacy ConfigMap, with a BGP pool and its peer as MetalLB before 0.13 read them, and a
    // protocol nobody has.
    let config = "peers:\n- peer-address: 10.10.40.1\n  peer-asn: 64500\n  my-asn: 64512\n\
                  bgp-communities:\n  no-advertise: 65535:65282\n\
                  address-pools:\n- name: default\n  protocol: layer2\n  addresses:\n  - 10.10.39.200-10.10.39.220\n\
                  - name: peering\n  protocol: bgp\n  addresses: [10.30.0.0/24]\n  bgp-advertisements:\n  - communities: [no-advertise]\n\
                  - name: odd\n  protocol: arp\n  addresses: [10.31.0.0/24]\n";
    Api::<ConfigMap>::namespaced(client.clone(), "metallb-system")
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "config"}, "data": {"config": config}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let (_controller, grpc) =
        start_controller_with(&cluster, |c| c.metallb_configmap("metallb-system/config"));
    let n1 = speaker(grpc, "n1").await;
    create_service(
        &client,
        "default",
        "theirs",
        json!({"spec": {"loadBalancerClass": "metallb.io/metallb"}}),
    )
    .await;
    create_service(
        &client,
        "default",
        "ours",
        json!({"spec": {"loadBalancerClass": "groundwork.dev/lb"}}),
    )
    .await;
    create_service(
        &client,
        "default",
        "routed",
        json!({"metadata": {"annotations": {"metallb.universe.tf/address-pool": "peering"}}}),
    )
    .await;
    wait_status(&client, "default", "ours", &["10.10.39.200"]).await;
    wait_status(&client, "default", "routed", &["10.30.0.0"]).await;
    let config = wait_bgp(&n1, "n1 told to advertise the BGP pool", |c| {
        !c.routes.is_empty()
    })
    .await;
    assert_eq!(config.peers[0].name, "legacy-peer-0");
    assert_eq!(config.routes[0].prefix, "10.30.0.0/32");
    assert_eq!(config.routes[0].communities, [0xFFFF_FF02]);
    assert!(
        !n1.current().contains(&"10.30.0.0".parse().unwrap()),
        "a BGP pool is not answered by ARP"
    );
    let note = wait_event(&client, "metallb-system", "config", "InvalidPool").await;
    assert!(note.contains("protocol \"arp\" is not supported"), "{note}");
    assert!(status_ips(&service(&client, "default", "theirs").await).is_empty());
    let theirs = service(&client, "default", "theirs").await;
    assert!(
        lb_controller::request::announcing_node(&theirs).is_none(),
        "a Service of another class must not be touched"
    );
}

/// Starts the controller serving speakers with mutual TLS; every session must prove its node with a
/// token of `account` (TokenReview against the real API server).
fn start_controller_tls(
    cluster: &KubeCluster,
    dir: &std::path::Path,
    ca: &Ca,
    account: &SpeakerAccount,
) -> (Daemon, SocketAddr) {
    let grpc: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
    let server = ca
        .issue_files(dir, "lb-controller", &[], &["127.0.0.1"], Usage::Server)
        .unwrap();
    let mut daemon = controller(cluster)
        .grpc(grpc)
        .tls(&server)
        .speaker_account(account)
        .start()
        .unwrap();
    daemon.wait_ready(WAIT).unwrap();
    (daemon, grpc)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_speaker_with_one_nodes_identity_cannot_take_another_nodes_addresses() {
    let (cluster, client) = seed_cluster().await;
    let scratch = Scratch::new("lb-controller-identity").unwrap();
    let ca = Ca::new("groundwork test CA").unwrap();
    let account = SpeakerAccount::default();
    let (mut controller, grpc) = start_controller_tls(&cluster, scratch.path(), &ca, &account);
    // Every speaker holds the same client certificate, as the chart gives them: it proves "a speaker
    // of this cluster", not which node.
    let leaf = ca.issue("lb-speaker", &[], &[], Usage::Client).unwrap();
    let channel = || support::tls_channel(grpc, ca.cert_pem(), &leaf.cert_pem, &leaf.key_pem);
    let token = |node: &'static str| {
        let (account, client) = (account.clone(), client.clone());
        async move { account.token(&client, node, AUDIENCE).await.unwrap() }
    };
    let (n1_token, n2_token) = (token("n1").await, token("n2").await);

    // n2's own speaker gets its session and the address.
    let n2 = FakeSpeaker::connect_with_token(channel().await, "n2", 0, &[], Some(&n2_token))
        .await
        .unwrap();
    create_service(&client, "default", "shop", json!({})).await;
    wait_status(&client, "default", "shop", &["10.10.39.200"]).await;
    n2.wait_for("10.10.39.200").await;
    wait_announcing(&client, "default", "shop", Some("n2")).await;

    // Root on n1 has n1's token and the shared certificate, and asks to be n2: refused, naming both.
    let refused = FakeSpeaker::connect_with_token(channel().await, "n2", 0, &[], Some(&n1_token))
        .await
        .err()
        .expect("a session for n2 with n1's token was accepted");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("the Hello names node n2 but the token is from a pod on n1"),
        "{refused:?}"
    );
    // Without a token, or with another account's token from a pod on n2: refused too.
    let refused = FakeSpeaker::connect_with_token(channel().await, "n2", 0, &[], None)
        .await
        .err()
        .expect("a session without a token was accepted");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let intruder = SpeakerAccount {
        name: "intruder".to_owned(),
        ..account.clone()
    };
    let intruder_token = intruder.token(&client, "n2", AUDIENCE).await.unwrap();
    let refused =
        FakeSpeaker::connect_with_token(channel().await, "n2", 0, &[], Some(&intruder_token))
            .await
            .err()
            .expect("another account's token was accepted");
    assert!(
        refused
            .message()
            .contains("not the speakers' ServiceAccount"),
        "{refused:?}"
    );
    // A token for another audience (the API server's default one) proves nothing here.
    let other_audience = account
        .token(&client, "n2", "https://kubernetes.default.svc")
        .await
        .unwrap();
    let refused =
        FakeSpeaker::connect_with_token(channel().await, "n2", 0, &[], Some(&other_audience))
            .await
            .err()
            .expect("a token for another audience was accepted");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // n2 kept its session and its address; the refusals are counted by reason.
    assert!(n2.ended().is_none(), "n2's session ended: {:?}", n2.ended());
    assert_eq!(n2.current(), ["10.10.39.200".parse::<IpAddr>().unwrap()]);
    wait_announcing(&client, "default", "shop", Some("n2")).await;
    for reason in ["wrong_node", "no_token", "wrong_account", "invalid_token"] {
        controller
            .wait_metric(
                &format!("groundwork_speaker_sessions_refused_total{{reason=\"{reason}\"}} 1"),
                WAIT,
            )
            .unwrap();
    }
    let log = controller.process().log_tail(200);
    assert!(
        log.contains("refused a speaker session: it does not prove the node it names"),
        "{log}"
    );

    // n1's speaker with n1's token is welcome, as n1.
    let n1 = FakeSpeaker::connect_with_token(channel().await, "n1", 0, &[], Some(&n1_token))
        .await
        .unwrap();
    assert!(n1.ended().is_none());
}

/// Creates `yaml`'s objects (one document each, as a user would `kubectl apply` them) through the
/// discovery-less dynamic API: group, version and plural come from the document.
async fn apply_yaml(client: &Client, yaml: &str) {
    use kube::api::{ApiResource, DynamicObject};
    for document in yaml.split("\n---\n") {
        let value: serde_json::Value = serde_yaml::from_str(document).unwrap();
        let api_version = value["apiVersion"].as_str().unwrap();
        let kind = value["kind"].as_str().unwrap();
        let (group, version) = api_version.split_once('/').unwrap();
        let resource = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: api_version.into(),
            kind: kind.into(),
            plural: format!("{}s", kind.to_lowercase()).replace("communitys", "communities"),
        };
        let object: DynamicObject = serde_json::from_value(value.clone()).unwrap();
        let api: Api<DynamicObject> = match value["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        api.create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("creating {kind}: {e}"));
    }
}

/// Waits until `speaker` holds a BGP configuration `check` accepts.
async fn wait_bgp(
    speaker: &FakeSpeaker,
    what: &str,
    check: impl Fn(&proto::announce::v1::BgpConfig) -> bool,
) -> proto::announce::v1::BgpConfig {
    until(what, WAIT, || async {
        match speaker.bgp() {
            Some(config) if check(&config) => Ok(config),
            other => Err(format!("newest BGP configuration: {other:?}")),
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn bgp_objects_become_each_nodes_peers_and_routes_and_bad_fields_are_events() {
    let (cluster, client) = seed_cluster().await;
    let (_controller, grpc) = start_controller(&cluster);
    let n1 = speaker(grpc, "n1").await;
    apply_yaml(
        &client,
        "apiVersion: groundwork.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: tor}\n\
         spec: {myASN: 64512, peerASN: 64512, peerAddress: 10.10.40.1, holdTime: 1m30s, bfdProfile: fast,\n\
         enableGracefulRestart: true, password: s3cret}\n---\n\
         apiVersion: groundwork.dev/v1alpha1\nkind: BFDProfile\nmetadata: {name: fast}\n\
         spec: {receiveInterval: 100, transmitInterval: 100, echoMode: true}\n---\n\
         apiVersion: groundwork.dev/v1alpha1\nkind: BGPAdvertisement\nmetadata: {name: seed}\n\
         spec: {ipAddressPools: [seed], localPref: 50, communities: [\"65000:100\"]}\n---\n\
         apiVersion: groundwork.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: broken}\n\
         spec: {myASN: 64512, peerASN: 64500, peerAddress: router.example}",
    )
    .await;
    create_service(&client, "default", "web", json!({})).await;
    wait_status(&client, "default", "web", &["10.10.39.200"]).await;
    let config = wait_bgp(&n1, "n1 told to advertise web's address", |c| {
        !c.routes.is_empty()
    })
    .await;
    assert_eq!(
        config.peers.len(),
        1,
        "the broken peer is left out: {config:?}"
    );
    let peer = &config.peers[0];
    assert_eq!(
        (peer.name.as_str(), peer.address.as_str()),
        ("tor", "10.10.40.1")
    );
    assert_eq!(
        (peer.my_asn, peer.peer_asn, peer.hold_time_s),
        (64512, 64512, 90)
    );
    assert_eq!(
        (peer.graceful_restart_s, peer.password.as_str()),
        (120, "s3cret")
    );
    let bfd = peer.bfd.as_ref().unwrap();
    assert_eq!(
        (
            bfd.receive_interval_ms,
            bfd.transmit_interval_ms,
            bfd.detect_multiplier
        ),
        (100, 100, 3)
    );
    let route = &config.routes[0];
    assert_eq!(route.prefix, "10.10.39.200/32");
    assert_eq!(
        (route.local_pref, route.communities.as_slice()),
        (Some(50), &[(65000 << 16) | 100][..])
    );
    assert_eq!(route.services, ["default/web"]);

    let note = wait_event(&client, "default", "broken", "InvalidConfiguration").await;
    assert!(note.starts_with("spec.peerAddress"), "{note}");
    let note = wait_event(&client, "default", "fast", "UnsupportedField").await;
    assert!(note.starts_with("spec.echoMode"), "{note}");

    // The Service goes: its route goes with it, the peer stays.
    Api::<Service>::namespaced(client.clone(), "default")
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    let config = wait_bgp(&n1, "n1 told to withdraw", |c| c.routes.is_empty()).await;
    assert_eq!(config.peers.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn metallb_resources_are_read_in_place_unchanged() {
    let (cluster, client) = seed_cluster().await;
    cluster
        .install_crds(&integration_tests::metallb::crds().unwrap())
        .await
        .unwrap();
    create_namespace(&client, "metallb-system").await;
    // A MetalLB v0.16 user's configuration as they wrote it: a BGP-only pool advertised with a community
    // alias and a BFD profile, and a layer-2 pool for rack a.
    apply_yaml(
        &client,
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: public, namespace: metallb-system}\n\
         spec: {addresses: [10.40.0.10-10.40.0.20]}\n---\n\
         apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: office, namespace: metallb-system}\n\
         spec: {addresses: [10.50.0.10-10.50.0.20], autoAssign: false}\n---\n\
         apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: office, namespace: metallb-system}\n\
         spec: {ipAddressPools: [office], nodeSelectors: [{matchLabels: {kubernetes.io/hostname: n2}}]}\n---\n\
         apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: tor, namespace: metallb-system}\n\
         spec: {myASN: 64512, peerASN: 64500, peerAddress: 10.10.40.1, holdTime: 9s, bfdProfile: fast}\n---\n\
         apiVersion: metallb.io/v1beta1\nkind: BFDProfile\nmetadata: {name: fast, namespace: metallb-system}\n\
         spec: {receiveInterval: 150, transmitInterval: 200, detectMultiplier: 4}\n---\n\
         apiVersion: metallb.io/v1beta1\nkind: Community\nmetadata: {name: aliases, namespace: metallb-system}\n\
         spec: {communities: [{name: no-advertise, value: \"65535:65282\"}]}\n---\n\
         apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: public, namespace: metallb-system}\n\
         spec: {ipAddressPools: [public], communities: [no-advertise], aggregationLength: 28,\n\
         asPathPrepend: 2}",
    )
    .await;
    // Our seed IPPool stays: new Services get its addresses unless they ask for MetalLB's pools.
    Api::<IPPool>::all(client.clone())
        .delete("seed", &DeleteParams::default())
        .await
        .unwrap();
    let (_controller, grpc) =
        start_controller_with(&cluster, |c| c.metallb_namespace("metallb-system"));
    let (n1, n2) = (speaker(grpc, "n1").await, speaker(grpc, "n2").await);
    create_service(&client, "default", "web", json!({})).await;
    wait_status(&client, "default", "web", &["10.40.0.10"]).await;
    create_service(
        &client,
        "default",
        "desk",
        json!({"metadata": {"annotations": {"metallb.universe.tf/address-pool": "office"}}}),
    )
    .await;
    wait_status(&client, "default", "desk", &["10.50.0.10"]).await;

    let config = wait_bgp(&n1, "n1 told to advertise the public pool", |c| {
        !c.routes.is_empty()
    })
    .await;
    assert_eq!(config.peers[0].name, "tor");
    let bfd = config.peers[0].bfd.as_ref().unwrap();
    assert_eq!(
        (
            bfd.receive_interval_ms,
            bfd.transmit_interval_ms,
            bfd.detect_multiplier
        ),
        (150, 200, 4)
    );
    let prefixes: Vec<&str> = config.routes.iter().map(|r| r.prefix.as_str()).collect();
    assert_eq!(
        prefixes,
        ["10.40.0.0/28"],
        "only the advertised pool, aggregated"
    );
    assert_eq!(config.routes[0].communities, [0xFFFF_FF02]);
    // Layer 2: the office pool from n2 only; the BGP-only pool from nobody, without a warning.
    n2.wait_for("10.50.0.10").await;
    assert!(n1.current().is_empty() && !n2.current().contains(&"10.40.0.10".parse().unwrap()));
    let note = wait_event(&client, "metallb-system", "public", "UnsupportedField").await;
    assert!(note.starts_with("spec.asPathPrepend"), "{note}");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let warnings: Vec<_> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web"))
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| (e.reason, e.note))
        .collect();
    assert!(
        warnings.is_empty(),
        "a BGP-only address is no warning: {warnings:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_bgp_crds_layer_2_still_serves() {
    use kube::CustomResourceExt;
    // A cluster upgraded with `helm upgrade`, which does not apply CRDs a chart gained since its install.
    let cluster = KubeCluster::start().await.unwrap();
    cluster.install_crds(&[IPPool::crd()]).await.unwrap();
    let client = cluster.client();
    add_ready_node(&client, "n1").await;
    apply_pool(
        &client,
        "seed",
        json!({"addresses": ["10.10.39.200-10.10.39.220"]}),
    )
    .await;
    let (mut controller, _) = start_controller(&cluster);
    create_service(&client, "default", "web", json!({})).await;
    wait_status(&client, "default", "web", &["10.10.39.200"]).await;
    let log = controller.process().log_tail(200);
    assert!(log.contains("BGP mode is off"), "the log says why: {log}");
}
