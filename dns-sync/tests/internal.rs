//! Services published at their cluster IPs, as external-dns does, against the real kube-apiserver (which
//! allocates the cluster IPs) and etcd: the internal-hostname annotation on any Service, and with
//! `--publish-internal-services` the hostname annotation of ClusterIP Services.

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use integration_tests::etcd::Etcd;
use integration_tests::kube::KubeCluster;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::PostParams;

mod support;

use support::{OWNER, start_sync_with, wait_hosts};

/// Creates a Service of `type_` with `annotations` and returns its cluster IP as the apiserver gave it.
async fn create(
    cluster: &KubeCluster,
    name: &str,
    type_: &str,
    annotations: serde_json::Value,
) -> String {
    let mut spec = serde_json::json!({"type": type_, "ports": [{"port": 80}]});
    if type_ == "LoadBalancer" {
        spec["allocateLoadBalancerNodePorts"] = false.into();
    }
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": spec,
    }))
    .unwrap();
    let api: Api<Service> = Api::namespaced(cluster.client(), "default");
    let created = api.create(&PostParams::default(), &service).await.unwrap();
    created.spec.unwrap().cluster_ip.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn services_are_published_at_their_cluster_ips_as_external_dns_does() {
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start().await.unwrap();
    let mut sync = start_sync_with(&cluster, &etcd, |s| s.publish_internal_services());
    sync.wait_ready(Duration::from_secs(20)).unwrap();

    // The internal-hostname of a LoadBalancer Service still waiting for its address: its cluster IP at once.
    let web = create(
        &cluster,
        "web",
        "LoadBalancer",
        serde_json::json!({"external-dns.alpha.kubernetes.io/internal-hostname": "web.internal.test.org"}),
    )
    .await;
    wait_hosts(&etcd, "web.internal.test.org", OWNER, &[&web]).await;

    // A ClusterIP Service's hostname, with --publish-internal-services.
    let api = create(
        &cluster,
        "api",
        "ClusterIP",
        serde_json::json!({"external-dns.alpha.kubernetes.io/hostname": "api.test.org"}),
    )
    .await;
    wait_hosts(&etcd, "api.test.org", OWNER, &[&api]).await;
}
