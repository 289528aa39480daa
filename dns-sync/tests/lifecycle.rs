//! The `dns-sync` process as an operator sees it: it serves its probes and metrics, turns ready after its
//! first sync, and stops cleanly on SIGTERM within its drain time.

use integration_tests::etcd::Etcd;
use integration_tests::kube::KubeCluster;

#[tokio::test(flavor = "multi_thread")]
async fn serves_probes_and_metrics_then_stops_on_sigterm() {
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start().await.unwrap();
    let kubeconfig = cluster.kubeconfig().display().to_string();
    let endpoint = etcd.endpoint().to_owned();
    tokio::task::spawn_blocking(move || {
        integration_tests::daemon::assert_lifecycle(
            env!("CARGO_BIN_EXE_dns-sync"),
            &[
                "--owner-id",
                "gw",
                "--kubeconfig",
                &kubeconfig,
                "--etcd-endpoints",
                &endpoint,
            ],
        );
    })
    .await
    .unwrap();
}
