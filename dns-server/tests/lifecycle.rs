//! The `dns-server` process as an operator sees it: it serves its probes and metrics, turns ready once it
//! has read etcd, and stops cleanly on SIGTERM within its drain time.

use integration_tests::etcd::Etcd;
use integration_tests::launch::DnsServer;

#[tokio::test(flavor = "multi_thread")]
async fn serves_probes_and_metrics_then_stops_on_sigterm() {
    let etcd = Etcd::start().await.unwrap();
    let server = DnsServer::new(env!("CARGO_BIN_EXE_dns-server"), &etcd);
    tokio::task::spawn_blocking(move || {
        integration_tests::daemon::assert_lifecycle(&server);
    })
    .await
    .unwrap();
}
