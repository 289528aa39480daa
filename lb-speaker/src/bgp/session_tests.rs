//! Behaviours of one BGP session on explicit instants: dialing and its backoff, the OPEN exchange and
//! its checks, hold-time negotiation, keepalives, the hold timer, and every way a session ends.

use super::*;
use crate::bgp::message::Update;

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn config(graceful_restart: Option<u16>) -> SessionConfig {
    SessionConfig {
        my_asn: 64512,
        peer_asn: 64513,
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        hold_time: 9,
        keepalive: None,
        connect_retry: s(5),
        graceful_restart,
        restart_state: false,
    }
}

fn peer_open(hold_time: u16, graceful_restart: bool) -> Open {
    Open {
        version: 4,
        asn: 64513,
        hold_time,
        router_id: Ipv4Addr::new(10, 0, 0, 254),
        capabilities: Capabilities {
            families: [Family::Ipv4, Family::Ipv6].into_iter().collect(),
            multiprotocol: true,
            four_octet_as: Some(64513),
            graceful_restart: graceful_restart.then(|| GracefulRestart {
                restart_state: false,
                restart_time: 120,
                families: vec![],
            }),
            route_refresh: true,
        },
    }
}

fn is_close(action: &Action) -> bool {
    matches!(action, Action::Close { .. })
}

fn notification(action: &Action) -> Option<(u8, u8)> {
    match action {
        Action::Send(Message::Notification(n)) => Some((n.code, n.subcode)),
        _ => None,
    }
}

/// A session that reached OpenSent at `t0`.
fn open_sent(config: SessionConfig, t0: Instant) -> Session {
    let mut session = Session::new(config, t0);
    assert_eq!(session.feed(Input::Tick, t0), [Action::Dial]);
    assert_eq!(session.state(), State::Connect);
    let actions = session.feed(Input::Connected, t0);
    assert!(matches!(
        actions.as_slice(),
        [Action::Send(Message::Open(_))]
    ));
    assert_eq!(session.state(), State::OpenSent);
    session
}

/// A session Established at `t0` with a peer proposing `hold` seconds.
fn established(config: SessionConfig, hold: u16, graceful_restart: bool, t0: Instant) -> Session {
    let mut session = open_sent(config, t0);
    let actions = session.feed(
        Input::Received(Message::Open(peer_open(hold, graceful_restart))),
        t0,
    );
    assert_eq!(actions, [Action::Send(Message::Keepalive)]);
    assert_eq!(session.state(), State::OpenConfirm);
    let actions = session.feed(Input::Received(Message::Keepalive), t0);
    assert!(matches!(actions.as_slice(), [Action::Established(_)]));
    assert_eq!(session.state(), State::Established);
    session
}

#[test]
fn a_session_comes_up_through_open_and_keepalive_with_the_smaller_hold_time() {
    let t0 = Instant::now();
    let session = established(config(None), 30, false, t0);
    let negotiated = session.negotiated().unwrap();
    assert_eq!(negotiated.hold_time, 9);
    assert_eq!(negotiated.keepalive, Some(s(3)));
    assert!(negotiated.four_octet_as);
    assert!(!negotiated.graceful_restart);
    assert_eq!(negotiated.families.len(), 2);
}

#[test]
fn keepalives_go_every_third_of_the_hold_time_and_received_ones_restart_the_hold_timer() {
    let t0 = Instant::now();
    let mut session = established(config(None), 9, false, t0);
    assert_eq!(session.feed(Input::Tick, t0 + s(2)), []);
    assert_eq!(
        session.feed(Input::Tick, t0 + s(3)),
        [Action::Send(Message::Keepalive)]
    );
    assert_eq!(
        session.feed(Input::Tick, t0 + s(6)),
        [Action::Send(Message::Keepalive)]
    );
    assert_eq!(
        session.feed(Input::Received(Message::Keepalive), t0 + s(8)),
        []
    );
    // The hold timer now runs until t0 + 17 s.
    assert_eq!(
        session.feed(Input::Tick, t0 + s(9)),
        [Action::Send(Message::Keepalive)]
    );
    assert_eq!(session.state(), State::Established);
    assert_eq!(session.next_wake(), Some(t0 + s(12)));
}

#[test]
fn a_configured_keepalive_shorter_than_a_third_is_used() {
    let t0 = Instant::now();
    let mut config = config(None);
    config.keepalive = Some(s(1));
    let session = established(config, 90, false, t0);
    assert_eq!(session.negotiated().unwrap().keepalive, Some(s(1)));
}

#[test]
fn a_silent_peer_gets_hold_timer_expired_and_is_dialed_again() {
    let t0 = Instant::now();
    let mut session = established(config(None), 9, false, t0);
    let actions = session.feed(Input::Tick, t0 + s(9));
    assert_eq!(
        notification(&actions[0]),
        Some((code::HOLD_TIMER_EXPIRED, 0))
    );
    assert!(matches!(
        &actions[1],
        Action::Close { reason, was_established: true } if reason == "hold timer expired"
    ));
    assert_eq!(session.state(), State::Idle);
    assert_eq!(session.last_error(), Some("hold timer expired"));
    assert_eq!(session.next_wake(), Some(t0 + s(9) + s(5)));
    assert_eq!(session.feed(Input::Tick, t0 + s(14)), [Action::Dial]);
}

#[test]
fn hold_time_zero_means_no_keepalives_and_no_hold_timer() {
    let t0 = Instant::now();
    let session = established(config(None), 0, false, t0);
    assert_eq!(session.negotiated().unwrap().keepalive, None);
    assert_eq!(session.next_wake(), None);
}

#[test]
fn a_hold_time_of_one_or_two_seconds_is_refused() {
    for hold in [1, 2] {
        let t0 = Instant::now();
        let mut session = open_sent(config(None), t0);
        let actions = session.feed(Input::Received(Message::Open(peer_open(hold, false))), t0);
        assert_eq!(
            notification(&actions[0]),
            Some((code::OPEN, code::UNACCEPTABLE_HOLD_TIME))
        );
        assert!(is_close(&actions[1]));
    }
}

#[test]
fn an_open_from_the_wrong_as_or_version_or_identifier_is_refused() {
    let t0 = Instant::now();
    type Spoil = fn(&mut Open);
    let cases: [(Spoil, u8); 3] = [
        (|o| o.asn = 65000, code::BAD_PEER_AS),
        (|o| o.version = 3, code::BAD_VERSION),
        (
            |o| o.router_id = Ipv4Addr::UNSPECIFIED,
            code::BAD_IDENTIFIER,
        ),
    ];
    for (spoil, subcode) in cases {
        let mut session = open_sent(config(None), t0);
        let mut open = peer_open(90, false);
        spoil(&mut open);
        let actions = session.feed(Input::Received(Message::Open(open)), t0);
        assert_eq!(notification(&actions[0]), Some((code::OPEN, subcode)));
        assert!(is_close(&actions[1]));
        assert_eq!(session.state(), State::Idle);
    }
}

#[test]
fn failed_connections_back_off_from_the_retry_time_up_to_thirty_seconds() {
    let t0 = Instant::now();
    let mut session = Session::new(config(None), t0);
    let mut now = t0;
    let mut waits = Vec::new();
    for _ in 0..5 {
        assert_eq!(session.feed(Input::Tick, now), [Action::Dial]);
        assert_eq!(
            session.feed(Input::ConnectFailed("refused".into()), now),
            []
        );
        assert_eq!(session.state(), State::Active);
        let next = session.next_wake().unwrap();
        waits.push((next - now).as_secs());
        now = next;
    }
    assert_eq!(waits, [5, 10, 20, 30, 30]);
}

#[test]
fn a_peer_notification_ends_the_session_without_an_answer() {
    let t0 = Instant::now();
    let mut session = established(config(None), 9, false, t0);
    let cease = Notification::new(code::CEASE, code::ADMINISTRATIVE_SHUTDOWN);
    let actions = session.feed(Input::Received(Message::Notification(cease)), t0);
    assert_eq!(actions.len(), 1);
    assert!(is_close(&actions[0]));
    assert!(
        session
            .last_error()
            .unwrap()
            .contains("Administrative Shutdown")
    );
}

#[test]
fn an_update_before_established_is_a_state_machine_error() {
    let t0 = Instant::now();
    let mut session = open_sent(config(None), t0);
    let actions = session.feed(Input::Received(Message::Update(Update::default())), t0);
    assert_eq!(notification(&actions[0]), Some((code::FSM, 0)));
}

#[test]
fn stopping_without_graceful_restart_sends_administrative_shutdown() {
    let t0 = Instant::now();
    // We offer GR, the peer does not: not negotiated.
    let mut session = established(config(Some(120)), 9, false, t0);
    let actions = session.feed(Input::Stop(Stop::Shutdown), t0);
    assert_eq!(
        notification(&actions[0]),
        Some((code::CEASE, code::ADMINISTRATIVE_SHUTDOWN))
    );
    assert!(is_close(&actions[1]));
    assert!(session.is_stopped());
    assert_eq!(session.feed(Input::Tick, t0 + s(60)), []);
}

#[test]
fn stopping_with_graceful_restart_negotiated_closes_silently() {
    let t0 = Instant::now();
    let mut session = established(config(Some(120)), 9, true, t0);
    assert!(session.negotiated().unwrap().graceful_restart);
    let actions = session.feed(Input::Stop(Stop::Shutdown), t0);
    assert_eq!(actions.len(), 1);
    assert!(is_close(&actions[0]));
}

#[test]
fn a_deconfigured_peer_gets_cease_peer_deconfigured() {
    let t0 = Instant::now();
    let mut session = established(config(Some(120)), 9, true, t0);
    let actions = session.feed(Input::Stop(Stop::Deconfigured), t0);
    assert_eq!(
        notification(&actions[0]),
        Some((code::CEASE, code::PEER_DECONFIGURED))
    );
}

#[test]
fn a_forwarding_path_down_tears_an_established_session_down_as_bfd_down() {
    let t0 = Instant::now();
    let mut before = open_sent(config(None), t0);
    assert_eq!(before.feed(Input::ForwardingDown, t0), []);
    let mut session = established(config(None), 9, false, t0);
    let actions = session.feed(Input::ForwardingDown, t0);
    assert_eq!(actions.len(), 1);
    assert!(matches!(
        &actions[0],
        Action::Close { reason, was_established: true } if reason == "BFD down"
    ));
    assert_eq!(session.state(), State::Idle);
}

#[test]
fn the_restart_state_bit_is_set_only_until_the_first_established_session() {
    let t0 = Instant::now();
    let mut config = config(Some(120));
    config.restart_state = true;
    let mut session = open_sent(config, t0);
    assert!(
        session
            .open()
            .capabilities
            .graceful_restart
            .unwrap()
            .restart_state
    );
    session.feed(Input::Received(Message::Open(peer_open(9, true))), t0);
    session.feed(Input::Received(Message::Keepalive), t0);
    assert!(
        !session
            .open()
            .capabilities
            .graceful_restart
            .unwrap()
            .restart_state
    );
}

#[test]
fn without_graceful_restart_configured_the_capability_is_not_offered() {
    let session = Session::new(config(None), Instant::now());
    assert!(session.open().capabilities.graceful_restart.is_none());
    assert_eq!(session.open().capabilities.four_octet_as, Some(64512));
}
