//! The `dns-sync` process as an operator sees it: it serves its probes and metrics, turns ready after its
//! first sync, and stops cleanly on SIGTERM within its drain time.

use integration_tests::etcd::Etcd;
use integration_tests::kube::KubeCluster;
use integration_tests::launch::DnsSync;

#[tokio::test(flavor = "multi_thread")]
async fn serves_probes_and_metrics_then_stops_on_sigterm() {
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start().await.unwrap();
    let sync = DnsSync::new(
        env!("CARGO_BIN_EXE_dns-sync"),
        "gw",
        cluster.kubeconfig(),
        &etcd,
    );
    tokio::task::spawn_blocking(move || {
        integration_tests::daemon::assert_lifecycle(&sync);
    })
    .await
    .unwrap();
}
