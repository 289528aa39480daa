//! The `lb-speaker` process as an operator sees it: it serves its probes and metrics, becomes ready once it
//! reached the controller, keeps serving /healthz and /metrics while the controller is unreachable, and
//! stops cleanly on SIGTERM within its drain time either way.
//!
//! The speaker runs in the root namespace here, so it is limited to `lo` (`--interfaces ^lo$`), which is
//! never eligible: no raw socket is opened on the machine's real interfaces.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use integration_tests::launch::LbSpeaker;
use nix::sys::signal::Signal;

const SPEAKER: &str = env!("CARGO_BIN_EXE_lb-speaker");

#[test]
fn serves_probes_and_metrics_then_stops_on_sigterm() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let controller = support::StandIn::start(listener, None);
    let url = controller.url("http");
    integration_tests::daemon::assert_lifecycle(
        &LbSpeaker::new(SPEAKER, "lifecycle")
            .controller(&url)
            .insecure()
            .interfaces("^lo$"),
    );
}

#[test]
fn an_unreachable_controller_leaves_it_live_but_not_ready_and_sigterm_still_stops_it() {
    // Port 9 on loopback (discard) has no listener: connections are refused at once.
    let mut daemon = LbSpeaker::new(SPEAKER, "lifecycle")
        .controller("http://127.0.0.1:9")
        .insecure()
        .interfaces("^lo$")
        .start()
        .unwrap();
    let health = daemon.get("/healthz").unwrap();
    assert_eq!(health.status, 200);
    integration_tests::wait::until_blocking(
        "a failed dial to be counted",
        Duration::from_secs(10),
        || {
            let metrics = daemon.get("/metrics")?;
            metrics
                .body
                .lines()
                .any(|l| {
                    l.starts_with("groundwork_lb_speaker_controller_errors_total ")
                        && !l.ends_with(" 0")
                })
                .then_some(())
                .ok_or(metrics.body)
        },
    )
    .unwrap();
    let ready = daemon.get("/readyz").unwrap();
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.body.contains("never connected"), "{}", ready.body);
    let metrics = daemon.get("/metrics").unwrap().body;
    assert!(
        metrics.contains("groundwork_lb_speaker_controller_connected 0"),
        "{metrics}"
    );
    daemon.process().signal(Signal::SIGTERM).unwrap();
    let status = daemon.process().wait_exit(Duration::from_secs(10));
    let tail = daemon.process().log_tail(20);
    assert!(status.is_some_and(|s| s.success()), "{status:?}:\n{tail}");
    assert!(
        tail.contains("cannot open a session with the controller"),
        "{tail}"
    );
}

#[test]
fn unusable_flags_exit_64_naming_the_flag() {
    let speaker = || LbSpeaker::new(SPEAKER, "n1");
    let cases: &[(LbSpeaker, &str)] = &[
        (speaker(), "--controller"),
        (
            speaker().controller("http://10.10.40.10:7472"),
            "--insecure",
        ),
        (
            speaker().controller("https://10.10.40.10:7472"),
            "--tls-cert",
        ),
        (
            speaker()
                .controller("http://10.10.40.10:7472")
                .insecure()
                .interfaces("("),
            "--interfaces",
        ),
        (
            speaker()
                .controller("http://10.10.40.10:7472")
                .insecure()
                .flag("--gratuitous-repeat", "x"),
            "--gratuitous-repeat",
        ),
    ];
    for (speaker, flag) in cases {
        let args = speaker.args();
        let out = std::process::Command::new(SPEAKER)
            .args(&args)
            .env_remove("NODE_NAME")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}
