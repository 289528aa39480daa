//! Behaviours of one session, with explicit times: the handshake, the timers and their jitter, the slow
//! rate while not Up, Poll and Final, the Passive role, and each way down with its diagnostic.

use super::*;

const OURS: u32 = 0x1111;
const THEIRS: u32 = 0x2222;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn profile(rx: u64, tx: u64, mult: u8) -> Profile {
    Profile {
        receive_interval: ms(rx),
        transmit_interval: ms(tx),
        detect_multiplier: mult,
        passive: false,
    }
}

/// A packet from the peer in `state`, with its Desired Min TX / Required Min RX in ms.
fn peer(state: State, tx: u64, rx: u64, mult: u8) -> ControlPacket {
    ControlPacket {
        diagnostic: Diagnostic::None,
        state,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: mult,
        my_discriminator: THEIRS,
        your_discriminator: if state == State::Down { 0 } else { OURS },
        desired_min_tx_us: u32::try_from(tx * 1000).unwrap_or(u32::MAX),
        required_min_rx_us: u32::try_from(rx * 1000).unwrap_or(u32::MAX),
        required_min_echo_rx_us: 0,
    }
}

fn sent(actions: &[Action]) -> Vec<ControlPacket> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(p) => Some(*p),
            Action::StateChanged { .. } => None,
        })
        .collect()
}

fn changes(actions: &[Action]) -> Vec<(State, State, Diagnostic)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StateChanged {
                from,
                to,
                diagnostic,
            } => Some((*from, *to, *diagnostic)),
            Action::Send(_) => None,
        })
        .collect()
}

/// A session with `p` brought Up at `t0` by a peer sending every `peer_tx` ms and asking for
/// `peer_rx` ms, its Poll Sequence (going Up shortens our Desired Min TX) already answered.
fn up(p: Profile, peer_tx: u64, peer_rx: u64, t0: Instant) -> Session {
    let mut s = Session::new(OURS, p, 7, t0);
    s.feed(Input::Packet(peer(State::Down, 1000, peer_rx, 3)), t0);
    s.feed(Input::Packet(peer(State::Up, peer_tx, peer_rx, 3)), t0);
    assert_eq!(s.state(), State::Up);
    let final_ = ControlPacket {
        final_: true,
        ..peer(State::Up, peer_tx, peer_rx, 3)
    };
    s.feed(Input::Packet(final_), t0);
    assert!(!s.polling());
    s
}

#[test]
fn an_active_session_sends_down_at_once_then_once_a_second_at_most() {
    let t0 = Instant::now();
    let mut s = Session::new(OURS, profile(100, 100, 3), 1, t0);
    assert_eq!(s.next_wake(), Some(t0));
    let packets = sent(&s.feed(Input::Tick, t0));
    assert_eq!(packets.len(), 1);
    let p = packets[0];
    assert_eq!(
        (p.state, p.my_discriminator, p.your_discriminator),
        (State::Down, OURS, 0)
    );
    assert_eq!(p.desired_min_tx_us, 1_000_000, "§6.8.3: 1 s while not Up");
    assert_eq!(p.required_min_rx_us, 100_000);
    assert_eq!(p.detect_mult, 3);
    assert!(!p.poll && !p.final_);
    let next = s.next_wake().unwrap_or(t0);
    assert!(
        next >= t0 + ms(750) && next <= t0 + ms(1000),
        "{:?}",
        next - t0
    );
}

#[test]
fn a_passive_session_is_silent_until_the_peer_speaks_then_answers() {
    let t0 = Instant::now();
    let mut s = Session::new(
        OURS,
        Profile {
            passive: true,
            ..profile(100, 100, 3)
        },
        1,
        t0,
    );
    assert_eq!(s.next_wake(), None);
    assert_eq!(s.feed(Input::Tick, t0 + ms(5000)), []);
    let actions = s.feed(
        Input::Packet(peer(State::Down, 1000, 100, 3)),
        t0 + ms(5000),
    );
    assert_eq!(
        changes(&actions),
        [(State::Down, State::Init, Diagnostic::None)]
    );
    let packets = sent(&actions);
    assert_eq!(packets.len(), 1);
    assert_eq!(
        (packets[0].state, packets[0].your_discriminator),
        (State::Init, THEIRS)
    );
}

#[test]
fn the_three_way_handshake_goes_down_init_up() {
    let t0 = Instant::now();
    let mut s = Session::new(OURS, profile(100, 100, 3), 1, t0);
    s.feed(Input::Tick, t0);
    let a = s.feed(Input::Packet(peer(State::Down, 1000, 100, 3)), t0 + ms(10));
    assert_eq!(changes(&a), [(State::Down, State::Init, Diagnostic::None)]);
    assert_eq!(
        sent(&a)[0].state,
        State::Init,
        "the new state is sent at once"
    );
    assert_eq!(
        sent(&a)[0].desired_min_tx_us,
        1_000_000,
        "still 1 s in Init"
    );
    assert!(!sent(&a)[0].poll, "no Poll Sequence before Up");
    let b = s.feed(Input::Packet(peer(State::Up, 1000, 100, 3)), t0 + ms(20));
    assert_eq!(changes(&b), [(State::Init, State::Up, Diagnostic::None)]);
    assert_eq!(sent(&b)[0].state, State::Up);
}

#[test]
fn a_peer_already_in_init_brings_a_down_session_straight_up() {
    let t0 = Instant::now();
    let mut s = Session::new(OURS, profile(100, 100, 3), 1, t0);
    let a = s.feed(Input::Packet(peer(State::Init, 1000, 100, 3)), t0);
    assert_eq!(changes(&a), [(State::Down, State::Up, Diagnostic::None)]);
}

#[test]
fn two_sessions_of_this_code_come_up_with_each_other() {
    let t0 = Instant::now();
    let mut a = Session::new(1, profile(100, 100, 3), 1, t0);
    let mut b = Session::new(2, profile(100, 100, 3), 2, t0);
    let mut now = t0;
    let (mut to_b, mut to_a) = (Vec::new(), Vec::new());
    for _ in 0..400 {
        for p in std::mem::take(&mut to_a) {
            to_b.extend(sent(&a.feed(Input::Packet(p), now)));
        }
        for p in std::mem::take(&mut to_b) {
            to_a.extend(sent(&b.feed(Input::Packet(p), now)));
        }
        to_b.extend(sent(&a.feed(Input::Tick, now)));
        to_a.extend(sent(&b.feed(Input::Tick, now)));
        now += ms(5);
    }
    assert_eq!((a.state(), b.state()), (State::Up, State::Up));
    assert!(!a.polling() && !b.polling(), "both Poll Sequences ended");
    assert_eq!(a.transmit_interval(), ms(100));
    assert_eq!(a.detection_time(), Some(ms(300)));
}

#[test]
fn detection_time_is_their_multiplier_times_the_slower_of_our_rx_and_their_tx() {
    let t0 = Instant::now();
    let mut s = up(profile(100, 100, 3), 300, 100, t0);
    let t1 = t0 + ms(50);
    let five = ControlPacket {
        detect_mult: 5,
        ..peer(State::Up, 300, 100, 5)
    };
    s.feed(Input::Packet(five), t1);
    assert_eq!(s.detection_time(), Some(ms(1500)));
    let quiet: Vec<_> = (0..15)
        .flat_map(|i| changes(&s.feed(Input::Tick, t1 + ms(100 * i))))
        .collect();
    assert_eq!(quiet, [], "still Up before 1.5 s of silence");
    let expired = s.feed(Input::Tick, t1 + ms(1500));
    assert_eq!(
        changes(&expired),
        [(
            State::Up,
            State::Down,
            Diagnostic::ControlDetectionTimeExpired
        )]
    );
    let p = sent(&expired);
    assert_eq!(p[0].state, State::Down);
    assert_eq!(p[0].diagnostic, Diagnostic::ControlDetectionTimeExpired);
    assert_eq!(
        p[0].your_discriminator, 0,
        "the peer's discriminator is forgotten"
    );
    assert_eq!(p[0].desired_min_tx_us, 1_000_000, "back to the slow rate");
}

#[test]
fn the_wake_up_covers_the_detection_deadline() {
    let t0 = Instant::now();
    let mut s = up(profile(100, 100, 3), 100, 100, t0);
    s.feed(Input::Packet(peer(State::Up, 100, 100, 3)), t0);
    let mut now = t0;
    while s.state() == State::Up {
        now = s.next_wake().unwrap_or(now + ms(1000));
        s.feed(Input::Tick, now);
        assert!(now <= t0 + ms(300), "woken past the deadline");
    }
    assert_eq!(now, t0 + ms(300));
}

#[test]
fn the_transmit_interval_is_the_greater_of_our_tx_and_their_rx_with_75_to_100_percent_jitter() {
    let t0 = Instant::now();
    let mut s = up(profile(100, 100, 3), 100, 250, t0);
    assert_eq!(s.transmit_interval(), ms(250));
    let mut now = t0;
    let mut last = None;
    let (mut least, mut most) = (Duration::MAX, Duration::ZERO);
    for _ in 0..500 {
        now = s.next_wake().unwrap_or(now);
        // Keep the session Up: the peer speaks just as often.
        let mut actions = s.feed(Input::Packet(peer(State::Up, 100, 250, 3)), now);
        actions.extend(s.feed(Input::Tick, now));
        if !sent(&actions).is_empty() {
            if let Some(prev) = last {
                let gap: Duration = now - prev;
                least = least.min(gap);
                most = most.max(gap);
            }
            last = Some(now);
        }
    }
    assert!(least >= ms(187) + Duration::from_micros(500), "{least:?}");
    assert!(most <= ms(250), "{most:?}");
    assert!(
        most - least > ms(40),
        "jitter spreads the intervals: {least:?}-{most:?}"
    );
}

#[test]
fn with_a_multiplier_of_one_the_jitter_stays_within_90_percent() {
    let t0 = Instant::now();
    let mut s = up(profile(100, 100, 1), 100, 100, t0);
    let mut now = t0;
    let mut last: Option<Instant> = None;
    for _ in 0..300 {
        now = s.next_wake().unwrap_or(now);
        let mut actions = s.feed(Input::Packet(peer(State::Up, 100, 100, 3)), now);
        actions.extend(s.feed(Input::Tick, now));
        if !sent(&actions).is_empty() {
            if let Some(prev) = last {
                let gap = now - prev;
                assert!(gap >= ms(75) && gap <= ms(90), "{gap:?}");
            }
            last = Some(now);
        }
    }
}

#[test]
fn going_up_shortens_our_tx_with_a_poll_sequence_that_a_final_ends() {
    let t0 = Instant::now();
    let mut s = Session::new(OURS, profile(100, 100, 3), 1, t0);
    s.feed(Input::Packet(peer(State::Down, 1000, 100, 3)), t0);
    let a = s.feed(Input::Packet(peer(State::Up, 1000, 100, 3)), t0);
    assert!(s.polling());
    let p = sent(&a)[0];
    assert!(p.poll, "the Up packet polls");
    assert_eq!(p.desired_min_tx_us, 100_000);
    assert_eq!(
        s.transmit_interval(),
        ms(100),
        "sending faster needs no wait"
    );
    let later = sent(&s.feed(Input::Tick, t0 + ms(100)));
    assert!(later.iter().all(|p| p.poll), "P until the Final");
    let fin = ControlPacket {
        final_: true,
        ..peer(State::Up, 100, 100, 3)
    };
    s.feed(Input::Packet(fin), t0 + ms(120));
    assert!(!s.polling());
    let after = sent(&s.feed(Input::Tick, t0 + ms(300)));
    assert!(!after.is_empty() && after.iter().all(|p| !p.poll));
}

#[test]
fn a_poll_from_the_peer_is_answered_at_once_with_final_and_without_poll() {
    let t0 = Instant::now();
    let mut s = up(profile(100, 100, 3), 100, 100, t0);
    let poll = ControlPacket {
        poll: true,
        ..peer(State::Up, 100, 100, 3)
    };
    let packets = sent(&s.feed(Input::Packet(poll), t0 + ms(1)));
    assert_eq!(packets.len(), 1);
    assert!(packets[0].final_ && !packets[0].poll);
}

#[test]
fn a_longer_transmit_interval_while_up_waits_for_the_final() {
    let t0 = Instant::now();
    let mut s = up(profile(100, 100, 3), 100, 100, t0);
    s.feed(Input::Profile(profile(100, 500, 3)), t0 + ms(10));
    assert!(s.polling());
    assert_eq!(s.transmit_interval(), ms(100), "unchanged until the Final");
    let p = sent(&s.feed(Input::Tick, s.next_wake().unwrap_or(t0)));
    assert_eq!((p[0].poll, p[0].desired_min_tx_us), (true, 500_000));
    let fin = ControlPacket {
        final_: true,
        ..peer(State::Up, 100, 100, 3)
    };
    s.feed(Input::Packet(fin), t0 + ms(150));
    assert_eq!(s.transmit_interval(), ms(500));
}

#[test]
fn a_shorter_receive_interval_while_up_keeps_the_old_detection_time_until_the_final() {
    let t0 = Instant::now();
    let mut s = up(profile(300, 100, 3), 100, 100, t0);
    assert_eq!(s.detection_time(), Some(ms(900)));
    s.feed(Input::Profile(profile(100, 100, 3)), t0);
    s.feed(Input::Packet(peer(State::Up, 100, 100, 3)), t0 + ms(10));
    assert_eq!(s.detection_time(), Some(ms(900)), "still the old one");
    let fin = ControlPacket {
        final_: true,
        ..peer(State::Up, 100, 100, 3)
    };
    s.feed(Input::Packet(fin), t0 + ms(20));
    assert_eq!(s.detection_time(), Some(ms(300)));
}

#[test]
fn a_second_change_during_a_poll_polls_again_after_the_final() {
    let t0 = Instant::now();
    let mut s = up(profile(100, 100, 3), 100, 100, t0);
    s.feed(Input::Profile(profile(100, 200, 3)), t0);
    s.feed(Input::Profile(profile(100, 400, 3)), t0);
    let fin = ControlPacket {
        final_: true,
        ..peer(State::Up, 100, 100, 3)
    };
    s.feed(Input::Packet(fin), t0 + ms(10));
    assert!(s.polling(), "the second change gets a Poll of its own");
    assert_eq!(s.transmit_interval(), ms(200));
    s.feed(Input::Packet(fin), t0 + ms(20));
    assert!(!s.polling());
    assert_eq!(s.transmit_interval(), ms(400));
}

#[test]
fn a_neighbor_signalling_admin_down_takes_us_down_with_diagnostic_3() {
    let t0 = Instant::now();
    let mut s = up(profile(100, 100, 3), 100, 100, t0);
    let admin = peer(State::AdminDown, 1000, 100, 3);
    let a = s.feed(Input::Packet(admin), t0 + ms(10));
    assert_eq!(
        changes(&a),
        [(
            State::Up,
            State::Down,
            Diagnostic::NeighborSignaledSessionDown
        )]
    );
    assert_eq!(
        sent(&a)[0].diagnostic,
        Diagnostic::NeighborSignaledSessionDown
    );
}

#[test]
fn a_neighbor_in_down_while_we_are_up_takes_us_down_with_diagnostic_3() {
    let t0 = Instant::now();
    let mut s = up(profile(100, 100, 3), 100, 100, t0);
    let a = s.feed(Input::Packet(peer(State::Down, 1000, 100, 3)), t0 + ms(10));
    assert_eq!(
        changes(&a),
        [(
            State::Up,
            State::Down,
            Diagnostic::NeighborSignaledSessionDown
        )]
    );
}

#[test]
fn admin_down_tells_the_peer_at_once_and_ignores_its_packets() {
    let t0 = Instant::now();
    let mut s = up(profile(100, 100, 3), 100, 100, t0);
    let a = s.feed(Input::AdminDown, t0 + ms(10));
    assert_eq!(
        changes(&a),
        [(
            State::Up,
            State::AdminDown,
            Diagnostic::AdministrativelyDown
        )]
    );
    let p = sent(&a)[0];
    assert_eq!(
        (p.state, p.diagnostic, p.your_discriminator),
        (State::AdminDown, Diagnostic::AdministrativelyDown, THEIRS)
    );
    let poll = ControlPacket {
        poll: true,
        ..peer(State::Up, 100, 100, 3)
    };
    let ignored = s.feed(Input::Packet(poll), t0 + ms(20));
    assert_eq!(changes(&ignored), []);
    assert!(sent(&ignored).iter().all(|p| !p.final_));
    assert_eq!(s.state(), State::AdminDown);
    assert_eq!(
        s.peer_detection_time(),
        ms(3000),
        "3 x our 1 s while not Up"
    );
}

#[test]
fn when_detection_expires_a_passive_session_forgets_the_peer_and_falls_silent() {
    let t0 = Instant::now();
    let mut s = Session::new(
        OURS,
        Profile {
            passive: true,
            ..profile(100, 100, 3)
        },
        1,
        t0,
    );
    s.feed(Input::Packet(peer(State::Down, 1000, 100, 3)), t0);
    assert_eq!(s.state(), State::Init);
    let a = s.feed(Input::Tick, t0 + ms(3000));
    assert_eq!(
        changes(&a),
        [(
            State::Init,
            State::Down,
            Diagnostic::ControlDetectionTimeExpired
        )]
    );
    assert_eq!(s.remote_discriminator(), 0);
    assert_eq!(s.next_wake(), None, "passive and nobody to talk to");
}

#[test]
fn a_peer_asking_for_no_packets_gets_none() {
    let t0 = Instant::now();
    let mut s = up(profile(100, 100, 3), 100, 100, t0);
    s.feed(Input::Packet(peer(State::Up, 100, 0, 3)), t0 + ms(1));
    let quiet: Vec<_> = (1..20)
        .flat_map(|i| sent(&s.feed(Input::Tick, t0 + ms(10 * i))))
        .collect();
    assert_eq!(quiet, []);
}

#[test]
fn profiles_from_the_contract_default_and_validate() {
    use proto::announce::v1::BfdProfile;
    assert_eq!(
        Profile::from_proto(&BfdProfile::default()),
        Ok(Profile::default())
    );
    assert_eq!(
        Profile::from_proto(&BfdProfile {
            receive_interval_ms: 100,
            transmit_interval_ms: 150,
            detect_multiplier: 5,
            passive: true,
        }),
        Ok(Profile {
            receive_interval: ms(100),
            transmit_interval: ms(150),
            detect_multiplier: 5,
            passive: true,
        })
    );
    assert!(matches!(
        Profile::from_proto(&BfdProfile {
            receive_interval_ms: 5,
            ..BfdProfile::default()
        }),
        Err(ProfileError::Interval {
            which: "receive",
            ms: 5
        })
    ));
    assert_eq!(
        Profile::from_proto(&BfdProfile {
            detect_multiplier: 256,
            ..BfdProfile::default()
        }),
        Err(ProfileError::DetectMultiplier(256))
    );
}
