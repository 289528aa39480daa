//! `--source node` against the real kube-apiserver, etcd and dns-server: each Node answers at its own
//! addresses under its `--fqdn-template` name, follows address changes, cordoning and deletion, and the same
//! Nodes give the same records as the real external-dns v0.20.0's node source. No kubelet runs: the test
//! registers the Node objects and writes their status as kubelets would.

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use integration_tests::etcd::Etcd;
use integration_tests::kube::KubeCluster;
use integration_tests::peers::external_dns_once;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

mod support;

use support::workloads::create_node;
use support::{
    dns_server, run_once, served_pairs, start_sync_with, sync_launcher, wait_answer, wait_event,
};

const TEMPLATE: &str = "{{.Name}}.nodes.test.org";
const WAIT: Duration = Duration::from_secs(20);

/// Nodes n1 (an ExternalIP and an InternalIP), n2 (an InternalIP only) and n3 (cordoned).
async fn three_nodes(cluster: &KubeCluster) {
    create_node(
        cluster,
        "n1",
        &[("InternalIP", "10.0.0.1"), ("ExternalIP", "192.0.2.1")],
    )
    .await;
    create_node(
        cluster,
        "n2",
        &[("InternalIP", "10.0.0.2"), ("Hostname", "n2")],
    )
    .await;
    create_node(cluster, "n3", &[("ExternalIP", "192.0.2.3")]).await;
    patch_node(cluster, "n3", json!({"spec": {"unschedulable": true}})).await;
}

async fn patch_node(cluster: &KubeCluster, name: &str, patch: serde_json::Value) {
    let api: Api<Node> = Api::all(cluster.client());
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn patch_node_status(cluster: &KubeCluster, name: &str, status: serde_json::Value) {
    let api: Api<Node> = Api::all(cluster.client());
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": status})),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn each_node_answers_at_its_addresses_and_follows_them_cordoning_and_deletion() {
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start().await.unwrap();
    three_nodes(&cluster).await;
    let mut sync = start_sync_with(&cluster, &etcd, |s| {
        s.source("node").flag("--fqdn-template", TEMPLATE)
    });
    sync.wait_ready(WAIT).unwrap();
    let (_server, dns) = dns_server(&etcd);

    // External addresses first; a node without one at its internal ones; a cordoned node not at all.
    wait_answer(dns, "A", "n1.nodes.test.org", &["192.0.2.1"]);
    wait_answer(dns, "A", "n2.nodes.test.org", &["10.0.0.2"]);
    wait_answer(dns, "A", "n3.nodes.test.org", &[]);
    wait_event(
        &cluster,
        "default",
        "n1",
        "Published",
        &["n1.nodes.test.org"],
    )
    .await;

    // A node gaining an external address moves to it; one uncordoned appears; one cordoned goes.
    patch_node_status(
        &cluster,
        "n2",
        json!({"addresses": [{"type": "InternalIP", "address": "10.0.0.2"},
                             {"type": "ExternalIP", "address": "192.0.2.2"}]}),
    )
    .await;
    wait_answer(dns, "A", "n2.nodes.test.org", &["192.0.2.2"]);
    patch_node(&cluster, "n3", json!({"spec": {"unschedulable": null}})).await;
    wait_answer(dns, "A", "n3.nodes.test.org", &["192.0.2.3"]);
    patch_node(&cluster, "n1", json!({"spec": {"unschedulable": true}})).await;
    wait_answer(dns, "A", "n1.nodes.test.org", &[]);

    // The target and TTL annotations, as on a Service.
    patch_node(
        &cluster,
        "n3",
        json!({"metadata": {"annotations": {
            "external-dns.alpha.kubernetes.io/target": "198.51.100.3"}}}),
    )
    .await;
    wait_answer(dns, "A", "n3.nodes.test.org", &["198.51.100.3"]);

    let api: Api<Node> = Api::all(cluster.client());
    api.delete("n2", &DeleteParams::default()).await.unwrap();
    wait_answer(dns, "A", "n2.nodes.test.org", &[]);
    sync.process().check_running().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_nodes_give_the_records_external_dns_gives_them() {
    let cluster = KubeCluster::start().await.unwrap();
    three_nodes(&cluster).await;
    create_node(
        &cluster,
        "n4",
        &[("InternalIP", "10.0.0.4"), ("InternalIP", "fd00::4")],
    )
    .await;
    let theirs = Etcd::start().await.unwrap();
    external_dns_once(
        cluster.kubeconfig(),
        &theirs,
        &[
            "--source=node",
            &format!("--fqdn-template={TEMPLATE}"),
            "--domain-filter=test.org",
            // Its default still adds internal IPv6 addresses beside external ones (with a warning that
            // this will change); dns-sync's default is the coming one.
            "--no-expose-internal-ipv6",
        ],
    )
    .await
    .unwrap();
    let ours = Etcd::start().await.unwrap();
    run_once(
        sync_launcher(&cluster, &ours)
            .source("node")
            .flag("--fqdn-template", TEMPLATE),
    );

    let want = [
        "n1.nodes.test.org 192.0.2.1",
        "n2.nodes.test.org 10.0.0.2",
        "n4.nodes.test.org 10.0.0.4",
        "n4.nodes.test.org fd00::4",
    ];
    assert_eq!(served_pairs(&theirs).await, want, "external-dns");
    assert_eq!(served_pairs(&ours).await, want, "dns-sync");
}
