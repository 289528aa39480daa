//! Which objects dns-sync reads, against the real kube-apiserver and etcd: `--namespace` and `--label-filter`
//! (external-dns's flags of those names) keep everything else out, and a selector that does not parse stops
//! the daemon at start, naming the flag.

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use integration_tests::etcd::Etcd;
use integration_tests::kube::KubeCluster;
use integration_tests::launch::DnsSync;

mod support;

use support::{
    HOSTNAME, OWNER, create, create_namespaces, records_of, service_in, start_sync_with, wait_hosts,
};

/// A LoadBalancer Service `namespace/name` asking for `name.test.org`, with `labels`.
fn labelled(
    namespace: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> k8s_openapi::api::core::v1::Service {
    let mut service = service_in(namespace, name, &[(HOSTNAME, &format!("{name}.test.org"))]);
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    service.metadata.labels = Some(labels);
    service
}

#[tokio::test(flavor = "multi_thread")]
async fn only_objects_of_the_namespace_matching_the_label_filter_are_published() {
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start().await.unwrap();
    create_namespaces(&cluster, &["team-a", "team-b"]).await;
    let mut sync = start_sync_with(&cluster, &etcd, |s| {
        s.namespace("team-a")
            .label_filter("dns=public,tier notin (internal)")
    });
    sync.wait_ready(Duration::from_secs(20)).unwrap();

    let public = [("dns", "public")];
    create(
        &cluster,
        &labelled("team-b", "elsewhere", &public),
        Some("10.10.39.201"),
    )
    .await;
    create(
        &cluster,
        &labelled("team-a", "unlabelled", &[]),
        Some("10.10.39.202"),
    )
    .await;
    let internal = [("dns", "public"), ("tier", "internal")];
    create(
        &cluster,
        &labelled("team-a", "internal", &internal),
        Some("10.10.39.203"),
    )
    .await;
    create(
        &cluster,
        &labelled("team-a", "shop", &public),
        Some("10.10.39.204"),
    )
    .await;
    wait_hosts(&etcd, "shop.test.org", OWNER, &["10.10.39.204"]).await;

    // The others were created first; a dns-sync that saw them would have written them in the same or an
    // earlier sync than shop's.
    for name in ["elsewhere", "unlabelled", "internal"] {
        let records = records_of(&etcd, &format!("{name}.test.org")).await;
        assert!(
            records.is_empty(),
            "{name} is outside the filters: {records:?}"
        );
    }

    // A label added later brings an object in.
    let api: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(cluster.client(), "team-a");
    let patch = serde_json::json!({"metadata": {"labels": {"dns": "public"}}});
    api.patch(
        "unlabelled",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    wait_hosts(&etcd, "unlabelled.test.org", OWNER, &["10.10.39.202"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_label_filter_that_does_not_parse_exits_64_naming_the_flag() {
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start().await.unwrap();
    for (selector, words) in [("env in (prod", "unbalanced"), ("app=we b", "label value")] {
        let launcher = DnsSync::new(
            env!("CARGO_BIN_EXE_dns-sync"),
            OWNER,
            cluster.kubeconfig(),
            &etcd,
        )
        .label_filter(selector);
        let output = std::process::Command::new(launcher.binary())
            .args(launcher.args())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{selector}: {stderr}");
        assert!(
            stderr.contains("--label-filter") && stderr.contains(words),
            "{selector}: {stderr}"
        );
    }
}
