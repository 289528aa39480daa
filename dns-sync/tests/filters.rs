//! Which objects dns-sync reads and which names it makes, against the real kube-apiserver and etcd:
//! `--namespace` and `--label-filter` keep everything else out, `--fqdn-template` names objects that carry
//! no name (external-dns's flags of those names), and a value that does not parse stops the daemon at start,
//! naming the flag.

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
async fn a_service_without_a_hostname_is_published_under_the_fqdn_template() {
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start().await.unwrap();
    create_namespaces(&cluster, &["shop"]).await;
    let mut sync = start_sync_with(&cluster, &etcd, |s| {
        s.fqdn_template("{{.Name}}.{{.Namespace}}.test.org")
    });
    sync.wait_ready(Duration::from_secs(20)).unwrap();
    create(
        &cluster,
        &service_in("shop", "web", &[]),
        Some("10.10.39.205"),
    )
    .await;
    wait_hosts(&etcd, "web.shop.test.org", OWNER, &["10.10.39.205"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_and_templates_that_do_not_parse_exit_64_naming_the_flag() {
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start().await.unwrap();
    type With = fn(DnsSync) -> DnsSync;
    let cases: [(&str, With, &str); 3] = [
        (
            "--label-filter",
            |s| s.label_filter("env in (prod"),
            "unbalanced",
        ),
        (
            "--label-filter",
            |s| s.label_filter("app=we b"),
            "label value",
        ),
        (
            "--fqdn-template",
            |s| s.fqdn_template("{{.Spec.ClusterIP}}.test.org"),
            "not supported",
        ),
    ];
    for (flag, with, words) in cases {
        let launcher = with(DnsSync::new(
            env!("CARGO_BIN_EXE_dns-sync"),
            OWNER,
            cluster.kubeconfig(),
            &etcd,
        ));
        let output = std::process::Command::new(launcher.binary())
            .args(launcher.args())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{flag}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains(words),
            "{flag}: {stderr}"
        );
    }
}
