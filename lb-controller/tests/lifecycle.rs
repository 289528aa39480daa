//! The `lb-controller` process as an operator sees it: it serves its probes and metrics, and stops cleanly on
//! SIGTERM within its drain time; unusable flags exit 64 naming the flag.

use integration_tests::kube::KubeCluster;
use integration_tests::launch::LbController;

#[tokio::test(flavor = "multi_thread")]
async fn serves_probes_and_metrics_then_stops_on_sigterm() {
    let cluster = KubeCluster::start().await.unwrap();
    cluster
        .install_crds(&lb_controller::crd_definitions())
        .await
        .unwrap();
    let port = integration_tests::process::free_port().unwrap();
    let controller = LbController::new(env!("CARGO_BIN_EXE_lb-controller"), cluster.kubeconfig())
        .grpc(format!("127.0.0.1:{port}"));
    tokio::task::spawn_blocking(move || {
        integration_tests::daemon::assert_lifecycle(&controller);
    })
    .await
    .unwrap();
}

#[test]
fn refuses_to_serve_speakers_without_tls_or_an_explicit_insecure() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_lb-controller"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--tls-cert, --tls-key and --tls-ca"),
        "{stderr}"
    );
}
