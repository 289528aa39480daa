//! The `lb-speaker` process as an operator sees it: it serves its probes and metrics, and stops cleanly on
//! SIGTERM within its drain time.

#[test]
fn serves_probes_and_metrics_then_stops_on_sigterm() {
    integration_tests::daemon::assert_lifecycle(env!("CARGO_BIN_EXE_lb-speaker"), &[]);
}
