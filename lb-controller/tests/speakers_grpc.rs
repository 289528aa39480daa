#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The speaker hub over real gRPC on 127.0.0.1: tonic clients stand in for speakers and follow
//! `announce.proto` (Hello, then a Report, acks after every set, heartbeats every lease/5), and the tests
//! check the controller's half: fencing on reset, silence and graceful leave, lease renewals, generations,
//! mutual TLS, leadership and the activation window.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use integration_tests::certs::{Ca, Usage};
use integration_tests::wait::until;
use lb_controller::speakers::{DesiredAssignment, HubConfig, SpeakerHub, TlsFiles};
use proto::announce::v1 as pb;
use proto::announce::v1::announcer_client::AnnouncerClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

mod support;
use support::*;

const LEASE: Duration = Duration::from_millis(300);
const GRACE: Duration = Duration::from_millis(60);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn desired(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<DesiredAssignment>> {
    pairs
        .iter()
        .map(|(node, addresses)| {
            let set = addresses
                .iter()
                .map(|a| DesiredAssignment {
                    address: ip(a),
                    interfaces: vec!["eth0".into()],
                    services: vec!["default/web".into()],
                    fresh: false,
                })
                .collect();
            ((*node).to_owned(), set)
        })
        .collect()
}

/// A hub serving on a loopback port.
struct Controller {
    hub: SpeakerHub,
    addr: SocketAddr,
    shutdown: CancellationToken,
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start_controller(tls: Option<TlsFiles>, active: bool) -> Controller {
    let mut registry = prometheus_client::registry::Registry::default();
    let hub = SpeakerHub::new(
        HubConfig {
            lease: LEASE,
            grace: GRACE,
            activation_hold: LEASE,
        },
        &mut registry,
    );
    hub.set_active(active);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let serving = hub.clone();
    let token = shutdown.clone();
    tokio::spawn(async move { serving.serve_on(listener, tls, token).await.unwrap() });
    Controller {
        hub,
        addr,
        shutdown,
    }
}

/// Starts a controller whose activation window is already over, so addresses move only by rule 5.
async fn start_settled_controller() -> Controller {
    let controller = start_controller(None, true).await;
    tokio::time::sleep(LEASE + GRACE).await;
    controller
}

async fn wait_available(hub: &SpeakerHub, nodes: &[&str]) {
    let mut available = hub.available();
    let want: Vec<String> = nodes.iter().map(|n| (*n).to_owned()).collect();
    tokio::time::timeout(
        WAIT,
        available.wait_for(|a| a.keys().cloned().collect::<Vec<_>>() == want),
    )
    .await
    .expect("speakers available in time")
    .unwrap();
}

/// `a` holds 10.0.0.1 (acknowledged), `b` holds nothing; both are connected to a settled controller.
async fn two_speakers_a_holding_x() -> (Controller, FakeSpeaker, FakeSpeaker) {
    let controller = start_settled_controller().await;
    let a = FakeSpeaker::connect(plain_channel(controller.addr).await, "a", 0, &[])
        .await
        .unwrap();
    let b = FakeSpeaker::connect(plain_channel(controller.addr).await, "b", 0, &[])
        .await
        .unwrap();
    wait_available(&controller.hub, &["a", "b"]).await;
    controller.hub.set_desired(desired(&[("a", &["10.0.0.1"])]));
    a.wait_for("10.0.0.1").await;
    let mut announced = controller.hub.announced();
    tokio::time::timeout(
        WAIT,
        announced.wait_for(|m| m.get(&ip("10.0.0.1")).map(String::as_str) == Some("a")),
    )
    .await
    .unwrap()
    .unwrap();
    (controller, a, b)
}

#[tokio::test]
async fn reset_speaker_address_moves_at_once() {
    let (controller, a, b) = two_speakers_a_holding_x().await;
    let reset_at = Instant::now();
    a.reset();
    wait_available(&controller.hub, &["b"]).await;
    controller.hub.set_desired(desired(&[("b", &["10.0.0.1"])]));
    let moved_at = b.wait_for("10.0.0.1").await;
    assert!(
        moved_at - reset_at < LEASE / 2,
        "moved {:?} after the reset",
        moved_at - reset_at
    );
}

#[tokio::test]
async fn silent_speaker_address_moves_after_its_lease_deadline_and_not_before() {
    let (controller, a, b) = two_speakers_a_holding_x().await;
    a.set_behaviour(Behaviour {
        ack: false,
        ack_delay: Duration::ZERO,
        heartbeat: false,
    });
    controller.hub.set_desired(desired(&[("b", &["10.0.0.1"])]));
    wait_available(&controller.hub, &["b"]).await;
    let moved_at = b.wait_for("10.0.0.1").await;
    // When b got it, on the stand-ins' clock.
    let moved_ms = clock_ms() - u64::try_from(moved_at.elapsed().as_millis()).unwrap();
    assert!(
        a.ended().is_none(),
        "a silent session stays open: {:?}",
        a.ended()
    );
    // a's lease ends at the newest echo it received + valid_for, on its own clock (step 3): b must not
    // get the address before, and gets it about a grace later.
    let lease_end = a.newest_lease_end_ms().unwrap();
    assert!(
        moved_ms >= lease_end,
        "moved {} ms before a's lease ended",
        lease_end - moved_ms
    );
    let grace = u64::try_from(GRACE.as_millis()).unwrap();
    assert!(
        moved_ms < lease_end + grace + 150,
        "moved {} ms after a's lease ended",
        moved_ms - lease_end
    );
}

#[tokio::test]
async fn leaving_speaker_acknowledges_its_empty_set_before_the_address_moves() {
    let (controller, a, b) = two_speakers_a_holding_x().await;
    a.set_behaviour(Behaviour {
        ack_delay: Duration::from_millis(100),
        ..DEFAULT
    });
    a.leave();
    wait_available(&controller.hub, &["b"]).await;
    controller.hub.set_desired(desired(&[("b", &["10.0.0.1"])]));
    let moved_at = b.wait_for("10.0.0.1").await;
    let snapshots = a.snapshots();
    let (_, empty_generation, empty) = snapshots.last().unwrap().clone();
    assert!(empty.is_empty(), "the leaving node got {snapshots:?}");
    let acked_at = a.log.lock().unwrap().acked_at[&empty_generation];
    assert!(
        acked_at <= moved_at,
        "b got the address {:?} before a acknowledged",
        acked_at - moved_at
    );
    let ended = until("the leaving session to end", WAIT, || async {
        a.ended().ok_or_else(|| "still open".to_owned())
    })
    .await
    .unwrap();
    assert!(ended.is_ok(), "{ended:?}");
}

#[tokio::test]
async fn lease_renewals_arrive_every_fifth_of_a_lease() {
    let controller = start_settled_controller().await;
    let a = FakeSpeaker::connect(plain_channel(controller.addr).await, "a", 0, &[])
        .await
        .unwrap();
    until("ten renewals", WAIT, || async {
        let n = a.log.lock().unwrap().received.len();
        if n >= 11 {
            Ok(())
        } else {
            Err(format!("{n} messages"))
        }
    })
    .await
    .unwrap();
    let received = a.log.lock().unwrap().received.clone();
    let renewals: Vec<&Received> = received
        .iter()
        .filter(|r| {
            matches!(
                r.message.body,
                Some(pb::controller_message::Body::Renewal(_))
            )
        })
        .collect();
    assert!(renewals.len() >= 10);
    for pair in received.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= LEASE / 5 - Duration::from_millis(15)
                && gap <= LEASE / 5 + Duration::from_millis(40),
            "lease messages {gap:?} apart"
        );
    }
    for renewal in renewals {
        let Some(pb::controller_message::Body::Renewal(r)) = &renewal.message.body else {
            unreachable!()
        };
        assert_eq!(r.generation, 1);
        assert_eq!(r.lease.unwrap().valid_for_ms, 300);
    }
}

#[tokio::test]
async fn generations_increase_strictly_and_renewals_carry_the_latest() {
    let controller = start_settled_controller().await;
    let a = FakeSpeaker::connect(plain_channel(controller.addr).await, "a", 0, &[])
        .await
        .unwrap();
    wait_available(&controller.hub, &["a"]).await;
    for set in [
        &["10.0.0.1"][..],
        &["10.0.0.1", "10.0.0.2"],
        &["10.0.0.2"],
        &[],
    ] {
        controller.hub.set_desired(desired(&[("a", set)]));
        until("the set to arrive", WAIT, || async {
            let last = a.snapshots().last().map(|(_, _, s)| s.clone());
            let want: Vec<IpAddr> = set.iter().map(|s| ip(s)).collect();
            if last == Some(want) {
                Ok(())
            } else {
                Err(format!("{last:?}"))
            }
        })
        .await
        .unwrap();
    }
    tokio::time::sleep(LEASE / 2).await;
    let received = a.log.lock().unwrap().received.clone();
    let mut latest = 0;
    for r in &received {
        match &r.message.body {
            Some(pb::controller_message::Body::Snapshot(set)) => {
                assert_eq!(set.generation, latest + 1, "in {received:?}");
                latest = set.generation;
            }
            Some(pb::controller_message::Body::Renewal(renewal)) => {
                assert_eq!(renewal.generation, latest);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(latest, 5);
}

#[tokio::test]
async fn first_message_must_be_a_hello_naming_the_node() {
    let controller = start_controller(None, true).await;
    let mut client = AnnouncerClient::new(plain_channel(controller.addr).await);
    let status = client
        .session(tokio_stream::iter(vec![heartbeat(0)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("hello"), "{status:?}");
    let status = client
        .session(tokio_stream::iter(vec![hello("", 0)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("hello.node"), "{status:?}");
}

#[tokio::test]
async fn second_hello_for_a_node_replaces_the_older_session() {
    let controller = start_settled_controller().await;
    let first = FakeSpeaker::connect(plain_channel(controller.addr).await, "a", 0, &[])
        .await
        .unwrap();
    wait_available(&controller.hub, &["a"]).await;
    let second = FakeSpeaker::connect(plain_channel(controller.addr).await, "a", 1, &[])
        .await
        .unwrap();
    until("the first session to be closed", WAIT, || async {
        match first.ended() {
            Some(Err(status)) => Ok(status),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    controller.hub.set_desired(desired(&[("a", &["10.0.0.1"])]));
    second.wait_for("10.0.0.1").await;
    assert!(first.got("10.0.0.1").is_none());
}

#[tokio::test]
async fn inactive_hub_refuses_sessions_as_unavailable_and_deactivation_closes_them() {
    let controller = start_controller(None, false).await;
    let status = match FakeSpeaker::connect(plain_channel(controller.addr).await, "a", 0, &[]).await
    {
        Ok(_) => panic!("an inactive hub accepted a session"),
        Err(status) => status,
    };
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), "not the leader");

    controller.hub.set_active(true);
    let a = FakeSpeaker::connect(plain_channel(controller.addr).await, "a", 0, &[])
        .await
        .unwrap();
    wait_available(&controller.hub, &["a"]).await;
    controller.hub.set_active(false);
    let status = until("the session to be closed", WAIT, || async {
        match a.ended() {
            Some(Err(status)) => Ok(status),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    wait_available(&controller.hub, &[]).await;
}

#[tokio::test]
async fn after_activation_a_reporting_holder_keeps_its_address_without_a_gap() {
    let controller = start_controller(None, true).await;
    controller.hub.set_desired(desired(&[("a", &["10.0.0.1"])]));
    let a = FakeSpeaker::connect(plain_channel(controller.addr).await, "a", 4, &["10.0.0.1"])
        .await
        .unwrap();
    a.wait_for("10.0.0.1").await;
    let snapshots = a.snapshots();
    assert_eq!(
        snapshots[0].2,
        vec![ip("10.0.0.1")],
        "the first set must keep the address: {snapshots:?}"
    );
}

#[tokio::test]
async fn after_activation_an_unknown_holder_window_delays_a_handover_until_lease_plus_grace() {
    // Activated after the clock is read, so the window cannot have started before `activated` (reading it
    // after a start that activated made the check miss by the start's few milliseconds on a busy machine).
    let controller = start_controller(None, false).await;
    let activated = Instant::now();
    controller.hub.set_active(true);
    let b = FakeSpeaker::connect(plain_channel(controller.addr).await, "b", 0, &[])
        .await
        .unwrap();
    controller.hub.set_desired(desired(&[("b", &["10.0.0.1"])]));
    let got = b.wait_for("10.0.0.1").await;
    assert!(
        got >= activated + LEASE + GRACE,
        "handed over {:?} after activation",
        got - activated
    );
    assert!(got < activated + LEASE + GRACE + Duration::from_millis(150));
}

/// Files for a server and clients signed by one CA, plus a client signed by another.
struct Pki {
    _dir: tempfile::TempDir,
    server: TlsFiles,
    client: integration_tests::certs::TlsFiles,
    stranger: integration_tests::certs::TlsFiles,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("groundwork test ca").unwrap();
    let server = ca
        .issue_files(
            dir.path(),
            "controller",
            &[],
            &["localhost", "127.0.0.1"],
            Usage::Server,
        )
        .unwrap();
    let client = ca
        .issue_files(dir.path(), "speaker", &[], &["node-a"], Usage::Client)
        .unwrap();
    let other_dir = dir.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let other_ca = Ca::new("some other ca").unwrap();
    let stranger = other_ca
        .issue_files(&other_dir, "speaker", &[], &["node-a"], Usage::Client)
        .unwrap();
    Pki {
        server: TlsFiles {
            cert: server.cert,
            key: server.key,
            ca: server.ca,
        },
        client,
        stranger,
        _dir: dir,
    }
}

async fn tls_channel(
    addr: SocketAddr,
    server_ca: &std::path::Path,
    identity: Option<&integration_tests::certs::TlsFiles>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(server_ca).unwrap()))
        .domain_name("localhost");
    if let Some(files) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&files.cert).unwrap(),
            std::fs::read(&files.key).unwrap(),
        ));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test]
async fn mtls_accepts_a_speaker_with_a_certificate_from_the_ca() {
    let pki = pki();
    let controller = start_controller(Some(pki.server.clone()), true).await;
    let channel = tls_channel(controller.addr, &pki.server.ca, Some(&pki.client))
        .await
        .unwrap();
    let _a = FakeSpeaker::connect(channel, "a", 0, &[]).await.unwrap();
    wait_available(&controller.hub, &["a"]).await;
}

/// A refused client fails at the handshake with the server's TLS alert `alert`: at connect, or with TLS 1.3
/// (client certificate checked after the client's Finished) on its first request; no session opens.
async fn assert_refused(
    controller: &Controller,
    channel: Result<Channel, tonic::transport::Error>,
    alert: &str,
) {
    let error = match channel {
        Err(error) => format!("{error:?}"),
        Ok(channel) => match FakeSpeaker::connect(channel, "a", 0, &[]).await {
            Ok(_) => panic!("a session opened without a valid client certificate"),
            Err(status) => format!("{status:?}"),
        },
    };
    assert!(
        error.contains(alert),
        "expected the TLS alert {alert}: {error}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(controller.hub.available().borrow().is_empty());
}

#[tokio::test]
async fn mtls_refuses_a_speaker_without_a_client_certificate() {
    let pki = pki();
    let controller = start_controller(Some(pki.server.clone()), true).await;
    let channel = tls_channel(controller.addr, &pki.server.ca, None).await;
    assert_refused(&controller, channel, "CertificateRequired").await;
}

#[tokio::test]
async fn mtls_refuses_a_certificate_from_another_ca() {
    let pki = pki();
    let controller = start_controller(Some(pki.server.clone()), true).await;
    let channel = tls_channel(controller.addr, &pki.server.ca, Some(&pki.stranger)).await;
    assert_refused(&controller, channel, "UnknownCA").await;
}
