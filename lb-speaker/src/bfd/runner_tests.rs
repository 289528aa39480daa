//! Behaviours of the runner that need no peer: its bounds, what `add` refuses, how a packet finds its
//! session, and how a removed session lingers then goes. Sockets are real (loopback, an ephemeral receive
//! port); time is Tokio's paused clock where the test waits on it. The protocol against a real peer is in
//! `tests/bfd.rs`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn bind(max_sessions: usize) -> (Bfd, BfdRunner, Metrics) {
    let metrics = Metrics::default();
    let settings = BfdSettings {
        max_sessions,
        // An ephemeral port: these tests run beside anything else on the host.
        port: 0,
    };
    let (bfd, runner) = Bfd::bind(settings, metrics.clone()).unwrap();
    (bfd, runner, metrics)
}

fn sessions_in(metrics: &Metrics, state: State) -> i64 {
    metrics
        .bfd_sessions
        .get_or_create(&state_label(state))
        .get()
}

#[tokio::test(start_paused = true)]
async fn add_refuses_sessions_beyond_the_bound_and_a_known_key_is_no_new_session() {
    let (bfd, runner, metrics) = bind(2);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    let profile = Profile::default();
    bfd.add(loopback(2), None, profile).await.unwrap();
    bfd.add(loopback(3), None, profile).await.unwrap();
    let again = bfd.add(loopback(2), None, profile).await.unwrap();
    assert_eq!(again.borrow().state, State::Down);
    assert!(matches!(
        bfd.add(loopback(4), None, profile).await,
        Err(BfdError::TooManySessions(2))
    ));
    assert!(
        matches!(
            bfd.add(loopback(2), Some(loopback(1)), profile).await,
            Err(BfdError::TooManySessions(2))
        ),
        "another local address is another session"
    );
    assert_eq!(sessions_in(&metrics, State::Down), 2);
    shutdown.cancel();
    task.await.unwrap();
    assert_eq!(sessions_in(&metrics, State::Down), 0);
    assert_eq!(sessions_in(&metrics, State::AdminDown), 0);
    assert!(matches!(
        bfd.add(loopback(2), None, profile).await,
        Err(BfdError::Stopped)
    ));
}

#[tokio::test]
async fn add_refuses_mixed_families_and_peers_bfd_cannot_reach() {
    let (_bfd, mut runner, _) = bind(8);
    let now = Instant::now();
    let mut add = |peer: IpAddr, local: Option<IpAddr>| {
        runner.add(SessionKey { peer, local }, Profile::default(), now)
    };
    assert!(matches!(
        add(loopback(2), Some(Ipv6Addr::LOCALHOST.into())),
        Err(BfdError::AddressFamily { .. })
    ));
    for peer in [
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V4(Ipv4Addr::new(224, 0, 0, 5)),
        IpAddr::V4(Ipv4Addr::BROADCAST),
        "fe80::1".parse().unwrap(),
        "ff02::1".parse().unwrap(),
    ] {
        assert!(
            matches!(add(peer, None), Err(BfdError::Peer(p)) if p == peer),
            "{peer}"
        );
    }
    assert!(add(loopback(2), Some(loopback(1))).is_ok());
}

#[tokio::test]
async fn a_packet_finds_its_session_by_discriminator_then_exact_addresses_then_any_local() {
    let (_bfd, mut runner, _) = bind(8);
    let now = Instant::now();
    let any = SessionKey {
        peer: loopback(2),
        local: None,
    };
    let bound = SessionKey {
        peer: loopback(2),
        local: Some(loopback(1)),
    };
    runner.add(any, Profile::default(), now).unwrap();
    runner.add(bound, Profile::default(), now).unwrap();
    let discriminator = runner.sessions[&any].session.local_discriminator();
    let packet = |your_discriminator: u32| {
        ControlPacket {
            diagnostic: Diagnostic::None,
            state: if your_discriminator == 0 {
                State::Down
            } else {
                State::Up
            },
            poll: false,
            final_: false,
            control_plane_independent: false,
            demand: false,
            detect_mult: 3,
            my_discriminator: 99,
            your_discriminator,
            desired_min_tx_us: 300_000,
            required_min_rx_us: 300_000,
            required_min_echo_rx_us: 0,
        }
        .encode()
    };
    let from = |source: u8, destination: u8, ttl: u8| Datagram {
        len: packet::PACKET_LEN,
        source: loopback(source),
        destination: Some(loopback(destination)),
        ttl: Some(ttl),
    };
    let demux = |datagram: Datagram, bytes: [u8; 24]| {
        runner.demultiplex(&datagram, &bytes).map(|(key, _)| key)
    };
    assert_eq!(demux(from(2, 1, 255), packet(0)), Ok(bound));
    assert_eq!(demux(from(2, 9, 255), packet(0)), Ok(any));
    assert_eq!(demux(from(2, 1, 255), packet(discriminator)), Ok(any));
    assert_eq!(
        demux(from(7, 1, 255), packet(discriminator)),
        Err(Discard::WrongSource)
    );
    assert_eq!(
        demux(from(2, 1, 255), packet(discriminator ^ 1)),
        Err(Discard::YourDiscriminator)
    );
    assert_eq!(demux(from(7, 1, 255), packet(0)), Err(Discard::NoSession));
    assert_eq!(demux(from(2, 1, 254), packet(0)), Err(Discard::Ttl(254)));
    let mut unknown_ttl = from(2, 1, 255);
    unknown_ttl.ttl = None;
    assert_eq!(demux(unknown_ttl, packet(0)), Err(Discard::Ttl(0)));
}

#[tokio::test(start_paused = true)]
async fn a_removed_session_says_admin_down_for_the_peer_detection_time_then_goes() {
    let (bfd, runner, metrics) = bind(1);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    let mut watch = bfd
        .add(loopback(2), None, Profile::default())
        .await
        .unwrap();
    let removed = Instant::now();
    assert!(bfd.remove(loopback(2), None).await.unwrap());
    let state = *watch.borrow_and_update();
    assert_eq!(
        (state.state, state.diagnostic),
        (State::AdminDown, Diagnostic::AdministrativelyDown)
    );
    assert_eq!(sessions_in(&metrics, State::AdminDown), 1);
    assert!(
        matches!(
            bfd.add(loopback(3), None, Profile::default()).await,
            Err(BfdError::TooManySessions(1))
        ),
        "a session telling its peer AdminDown still counts"
    );
    // The watch closes when the session is dropped: after 3 x 1 s (our multiplier x the slow rate).
    assert!(watch.changed().await.is_err());
    let lingered = removed.elapsed();
    assert!(
        lingered >= Duration::from_secs(3) && lingered < Duration::from_millis(3100),
        "{lingered:?}"
    );
    assert_eq!(sessions_in(&metrics, State::AdminDown), 0);
    assert!(metrics.bfd_packets_sent.get() >= 2, "AdminDown was said");
    assert!(!bfd.remove(loopback(2), None).await.unwrap());
    bfd.add(loopback(3), None, Profile::default())
        .await
        .unwrap();
    shutdown.cancel();
    task.await.unwrap();
}
