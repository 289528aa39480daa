//! Behaviours of the fence, with explicit times: every rule of `announce.proto` steps 2 to 6.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use proto::speaker_messages;

const LEASE: Duration = Duration::from_millis(1000);
const GRACE: Duration = Duration::from_millis(100);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn hello(node: &str, held_generation: u64) -> pb::Hello {
    speaker_messages::hello_of(node, held_generation, vec![])
}

/// An increasing speaker clock for hand-written messages (the fence only compares stamps and keeps the
/// time it received them).
fn stamp() -> u64 {
    static CLOCK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    CLOCK.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn report(applied: u64, announcing: &[&str]) -> pb::SpeakerMessage {
    let announcing = announcing
        .iter()
        .map(|a| speaker_messages::announcement(a, "eth0"));
    speaker_messages::report(stamp(), applied, announcing)
}

fn heartbeat(applied: u64) -> pb::SpeakerMessage {
    speaker_messages::heartbeat(stamp(), applied)
}

fn leaving() -> pb::SpeakerMessage {
    speaker_messages::leaving(stamp())
}

fn want(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<DesiredAssignment>> {
    pairs
        .iter()
        .map(|(node, addresses)| {
            let set = addresses
                .iter()
                .map(|a| DesiredAssignment {
                    address: ip(a),
                    interfaces: vec![],
                    services: vec!["default/web".into()],
                    fresh: false,
                })
                .collect();
            ((*node).to_owned(), set)
        })
        .collect()
}

/// The snapshots sent to `session` in `out`, as (generation, addresses).
fn snapshots(out: &[Output], session: SessionId) -> Vec<(u64, Vec<IpAddr>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send {
                session: s,
                message:
                    pb::ControllerMessage {
                        body: Some(pb::controller_message::Body::Snapshot(set)),
                    },
            } if *s == session => Some((
                set.generation,
                set.assignments.iter().map(|a| ip(&a.address)).collect(),
            )),
            _ => None,
        })
        .collect()
}

fn renewals(out: &[Output], session: SessionId) -> Vec<u64> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send {
                session: s,
                message:
                    pb::ControllerMessage {
                        body: Some(pb::controller_message::Body::Renewal(r)),
                    },
            } if *s == session => Some(r.generation),
            _ => None,
        })
        .collect()
}

fn events(out: &[Output]) -> Vec<HubEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// An active fence whose activation window has passed, with nodes `a` (session 1) and `b` (session 2)
/// connected and reported empty, and `x` desired on `a` and acknowledged by it. Returns the time.
fn settled_with_x_on_a(fence: &mut Fence, t0: Instant) -> Instant {
    fence.set_active(true, t0);
    let t = t0 + LEASE + GRACE;
    fence.tick(t);
    fence.connect(1, &hello("a", 0), stamp(), t);
    fence.message(1, &report(0, &[]), t);
    fence.connect(2, &hello("b", 0), stamp(), t);
    fence.message(2, &report(0, &[]), t);
    let out = fence.set_desired(want(&[("a", &["10.0.0.1"])]), t);
    assert_eq!(snapshots(&out, 1), vec![(2, vec![ip("10.0.0.1")])]);
    fence.message(1, &heartbeat(2), t);
    fence.message(2, &heartbeat(1), t);
    assert_eq!(
        fence.announced().get(&ip("10.0.0.1")),
        Some(&"a".to_owned())
    );
    t
}

#[test]
fn first_snapshot_waits_for_the_speakers_report() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = Instant::now();
    fence.set_active(true, t);
    let out = fence.connect(1, &hello("a", 0), stamp(), t);
    assert!(snapshots(&out, 1).is_empty());
    assert!(fence.available().contains_key("a"));
    let out = fence.message(1, &report(0, &[]), t);
    assert_eq!(snapshots(&out, 1), vec![(1, vec![])]);
}

/// A speaker that reconnects still holding generation 2 of its earlier session: this session's generations
/// start above 2, so its acknowledgements count (they once collided with the held generation and were
/// ignored for good, and the address never showed as announced).
#[test]
fn a_reconnected_speakers_acks_count_even_where_generations_would_collide() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t0 = Instant::now();
    fence.set_active(true, t0);
    let t = t0 + LEASE + GRACE;
    fence.tick(t);
    fence.connect(1, &hello("a", 2), stamp(), t);
    let out = fence.message(1, &report(0, &[]), t);
    assert_eq!(snapshots(&out, 1), vec![(3, vec![])]);
    fence.message(1, &heartbeat(3), t);
    let out = fence.set_desired(want(&[("a", &["10.0.0.1"])]), t);
    assert_eq!(snapshots(&out, 1), vec![(4, vec![ip("10.0.0.1")])]);
    // The earlier session's generation says nothing about this one.
    fence.message(1, &heartbeat(2), t);
    fence.message(1, &heartbeat(4), t);
    assert_eq!(
        fence.announced().get(&ip("10.0.0.1")),
        Some(&"a".to_owned())
    );
}

#[test]
fn removed_address_moves_only_after_the_old_holder_acknowledges() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = settled_with_x_on_a(&mut fence, Instant::now());
    let out = fence.set_desired(want(&[("b", &["10.0.0.1"])]), t);
    assert_eq!(snapshots(&out, 1), vec![(3, vec![])]);
    assert!(snapshots(&out, 2).is_empty(), "b must wait for a's ack");
    // An ack of an older generation does not release it.
    let out = fence.message(1, &heartbeat(2), t + ms(10));
    assert!(snapshots(&out, 2).is_empty());
    let out = fence.message(1, &heartbeat(3), t + ms(20));
    assert_eq!(snapshots(&out, 2), vec![(2, vec![ip("10.0.0.1")])]);
    assert!(events(&out).contains(&HubEvent::HandedOver {
        address: ip("10.0.0.1"),
        from: Some("a".into()),
        to: "b".into(),
        waited: ms(20),
    }));
}

#[test]
fn reset_stream_frees_its_addresses_at_once() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = settled_with_x_on_a(&mut fence, Instant::now());
    let out = fence.disconnect(1, t + ms(5));
    assert!(events(&out).contains(&HubEvent::Disconnected {
        node: "a".into(),
        why: DisconnectReason::Reset
    }));
    assert!(!fence.available().contains_key("a"));
    let out = fence.set_desired(want(&[("b", &["10.0.0.1"])]), t + ms(5));
    assert_eq!(snapshots(&out, 2), vec![(2, vec![ip("10.0.0.1")])]);
}

#[test]
fn silent_node_keeps_its_addresses_until_exactly_its_lease_deadline() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = settled_with_x_on_a(&mut fence, Instant::now());
    // b keeps talking; a says nothing more after t. The renewals a is still sent until it counts as
    // silent all echo its message of t, so its lease ends at t + lease on its own clock (step 3), and
    // the controller's deadline is t + lease + grace, however late those renewals arrive.
    let mut now = t;
    let last_heard_from_a = t;
    let mut became_silent = None;
    while became_silent.is_none() {
        now += ms(10);
        let mut out = fence.message(2, &heartbeat(1), now);
        out.extend(fence.tick(now));
        if events(&out).contains(&HubEvent::Disconnected {
            node: "a".into(),
            why: DisconnectReason::Silent,
        }) {
            became_silent = Some(now);
        }
    }
    assert_eq!(became_silent, Some(t + LEASE / 2));
    assert!(!fence.available().contains_key("a"));
    let out = fence.set_desired(want(&[("b", &["10.0.0.1"])]), now);
    assert!(snapshots(&out, 2).is_empty());
    let deadline = last_heard_from_a + LEASE + GRACE;
    while now + ms(10) < deadline {
        now += ms(10);
        let mut out = fence.message(2, &heartbeat(1), now);
        out.extend(fence.tick(now));
        assert!(renewals(&out, 1).is_empty(), "no renewals to a silent node");
        assert!(
            snapshots(&out, 2).is_empty(),
            "moved before the deadline at {:?}",
            now - t
        );
    }
    let out = fence.tick(deadline - ms(1));
    assert!(snapshots(&out, 2).is_empty());
    let out = fence.tick(deadline);
    assert_eq!(snapshots(&out, 2).len(), 1);
    assert_eq!(snapshots(&out, 2)[0].1, vec![ip("10.0.0.1")]);
}

/// The process was starved for 700 ms (more than half a lease): the hub steps before its readers took in
/// the heartbeats that arrived meanwhile. It must not call every speaker silent for its own stall (that
/// stopped their renewals, and their leases lapsed), yet a node that really went quiet is still found.
#[test]
fn a_hub_that_ran_late_does_not_call_its_speakers_silent_for_its_own_stall() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = settled_with_x_on_a(&mut fence, Instant::now());
    let late = t + ms(700);
    let out = fence.tick(late);
    assert!(
        !events(&out)
            .iter()
            .any(|e| matches!(e, HubEvent::Disconnected { .. })),
        "{:?}",
        events(&out)
    );
    assert_eq!(
        renewals(&out, 1),
        [2],
        "a is renewed as soon as the hub runs"
    );
    assert!(fence.available().contains_key("a") && fence.available().contains_key("b"));
    // From then on only b speaks: a is silent half a lease after the hub resumed, not earlier.
    let mut now = late;
    let became_silent = loop {
        now += ms(10);
        let mut out = fence.message(2, &heartbeat(1), now);
        out.extend(fence.tick(now));
        if events(&out).contains(&HubEvent::Disconnected {
            node: "a".into(),
            why: DisconnectReason::Silent,
        }) {
            break now;
        }
    };
    assert_eq!(became_silent, late + LEASE / 2);
}

#[test]
fn silent_node_that_speaks_again_is_available_and_gets_a_new_snapshot() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = settled_with_x_on_a(&mut fence, Instant::now());
    // A hub that runs when it asked to (one that steps late would not trust its own view of silence).
    let mut now = t;
    while now < t + LEASE / 2 {
        now += ms(10);
        fence.message(2, &heartbeat(1), now);
        fence.tick(now);
    }
    assert!(!fence.available().contains_key("a"));
    let out = fence.message(1, &heartbeat(2), t + LEASE / 2 + ms(50));
    assert!(fence.available().contains_key("a"));
    assert_eq!(snapshots(&out, 1), vec![(3, vec![ip("10.0.0.1")])]);
    assert!(events(&out).contains(&HubEvent::Connected { node: "a".into() }));
}

#[test]
fn leaving_node_gets_an_empty_set_and_its_ack_hands_over() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = settled_with_x_on_a(&mut fence, Instant::now());
    let out = fence.message(1, &leaving(), t);
    assert!(!fence.available().contains_key("a"));
    assert_eq!(snapshots(&out, 1), vec![(3, vec![])]);
    let out = fence.set_desired(want(&[("b", &["10.0.0.1"])]), t);
    assert!(snapshots(&out, 2).is_empty());
    let out = fence.message(1, &heartbeat(3), t + ms(3));
    assert_eq!(snapshots(&out, 2), vec![(2, vec![ip("10.0.0.1")])]);
    let out = fence.disconnect(1, t + ms(4));
    assert!(events(&out).is_empty(), "leaving was already reported");
}

#[test]
fn renewals_go_out_every_fifth_of_a_lease_with_the_latest_generation() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = settled_with_x_on_a(&mut fence, Instant::now());
    assert_eq!(fence.next_wake(), Some(t + LEASE / 5));
    let out = fence.tick(t + LEASE / 5 - ms(1));
    assert!(renewals(&out, 1).is_empty());
    let mut out = fence.message(1, &heartbeat(2), t + LEASE / 5);
    out.extend(fence.tick(t + LEASE / 5));
    assert_eq!(renewals(&out, 1), vec![2]);
    assert_eq!(renewals(&out, 2), vec![1]);
}

#[test]
fn after_activation_an_unreported_address_waits_for_lease_plus_grace() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = Instant::now();
    fence.set_active(true, t);
    fence.connect(2, &hello("b", 0), stamp(), t);
    fence.message(2, &report(0, &[]), t);
    let out = fence.set_desired(want(&[("b", &["10.0.0.1"])]), t + ms(1));
    assert_eq!(snapshots(&out, 2), vec![]);
    let mut now = t + ms(1);
    while now + ms(50) < t + LEASE + GRACE {
        now += ms(50);
        let mut out = fence.message(2, &heartbeat(1), now);
        out.extend(fence.tick(now));
        assert!(
            snapshots(&out, 2).is_empty(),
            "handed over at {:?}",
            now - t
        );
    }
    let out = fence.tick(t + LEASE + GRACE - ms(1));
    assert!(snapshots(&out, 2).is_empty());
    assert_eq!(fence.next_wake(), Some(t + LEASE + GRACE));
    let out = fence.tick(t + LEASE + GRACE);
    assert_eq!(snapshots(&out, 2), vec![(2, vec![ip("10.0.0.1")])]);
}

#[test]
fn after_activation_a_node_reporting_an_address_keeps_it_without_a_gap() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = Instant::now();
    fence.set_active(true, t);
    fence.set_desired(want(&[("a", &["10.0.0.1"])]), t);
    let out = fence.connect(1, &hello("a", 7), stamp(), t);
    assert!(
        snapshots(&out, 1).is_empty(),
        "no snapshot before its report"
    );
    let out = fence.message(1, &report(7, &["10.0.0.1"]), t);
    assert_eq!(snapshots(&out, 1), vec![(8, vec![ip("10.0.0.1")])]);
    assert_eq!(
        fence.announced().get(&ip("10.0.0.1")),
        Some(&"a".to_owned())
    );
}

/// A new leader sends reconnecting speakers what they already announce: that is no hand-over (each one
/// becomes an `AnnouncerChanged` Event, ten thousand of them after a restart); a new address is one.
#[test]
fn after_activation_what_a_speaker_already_announces_is_not_handed_over() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = Instant::now();
    fence.set_active(true, t);
    fence.set_desired(want(&[("a", &["10.0.0.1", "10.0.0.2"])]), t);
    fence.connect(1, &hello("a", 7), stamp(), t);
    let out = fence.message(1, &report(7, &["10.0.0.1"]), t);
    assert_eq!(snapshots(&out, 1), vec![(8, vec![ip("10.0.0.1")])]);
    assert!(events(&out).is_empty(), "{:?}", events(&out));
    fence.message(1, &heartbeat(8), t + ms(400));
    fence.message(1, &heartbeat(8), t + ms(800));
    let out = fence.tick(t + LEASE + GRACE);
    assert_eq!(
        snapshots(&out, 1),
        vec![(9, vec![ip("10.0.0.1"), ip("10.0.0.2")])]
    );
    assert_eq!(
        events(&out),
        vec![HubEvent::HandedOver {
            address: ip("10.0.0.2"),
            from: None,
            to: "a".into(),
            waited: LEASE + GRACE,
        }]
    );
}

#[test]
fn after_activation_a_reported_address_moves_once_its_reporter_acknowledges() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = Instant::now();
    fence.set_active(true, t);
    fence.set_desired(want(&[("b", &["10.0.0.1"])]), t);
    fence.connect(2, &hello("b", 0), stamp(), t);
    fence.message(2, &report(0, &[]), t);
    fence.connect(1, &hello("a", 7), stamp(), t);
    let out = fence.message(1, &report(7, &["10.0.0.1"]), t);
    assert_eq!(snapshots(&out, 1), vec![(8, vec![])]);
    // The stale held generation (7) is not an acknowledgement; generation 8 is.
    let out = fence.message(1, &heartbeat(7), t + ms(1));
    assert!(snapshots(&out, 2).is_empty());
    let out = fence.message(1, &heartbeat(8), t + ms(2));
    assert_eq!(snapshots(&out, 2), vec![(2, vec![ip("10.0.0.1")])]);
}

#[test]
fn an_acknowledgement_equal_to_the_held_generation_is_not_trusted() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = Instant::now();
    fence.set_active(true, t);
    fence.tick(t + LEASE + GRACE);
    let t = t + LEASE + GRACE;
    fence.connect(2, &hello("b", 0), stamp(), t);
    fence.message(2, &report(0, &[]), t);
    fence.connect(1, &hello("a", 1), stamp(), t);
    fence.message(1, &report(1, &["10.0.0.1"]), t);
    let out = fence.set_desired(want(&[("b", &["10.0.0.1"])]), t);
    assert!(snapshots(&out, 2).is_empty());
    // "1" may still be a's generation from its previous session: it proves nothing.
    let out = fence.message(1, &heartbeat(1), t + ms(1));
    assert!(snapshots(&out, 2).is_empty());
    // Its report, though, is the truth for what it held before this session.
    let out = fence.message(1, &report(1, &[]), t + ms(2));
    assert_eq!(snapshots(&out, 2), vec![(2, vec![ip("10.0.0.1")])]);
}

#[test]
fn a_replacing_session_keeps_the_old_claims_until_its_report_releases_them() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = settled_with_x_on_a(&mut fence, Instant::now());
    let out = fence.connect(3, &hello("a", 2), stamp(), t + ms(10));
    assert!(out.contains(&Output::Close {
        session: 1,
        reason: CloseReason::Replaced
    }));
    let out = fence.set_desired(want(&[("b", &["10.0.0.1"])]), t + ms(10));
    assert!(snapshots(&out, 2).is_empty());
    // The old stream ending now is not a reset of the node.
    let out = fence.disconnect(1, t + ms(11));
    assert!(out.is_empty());
    let out = fence.message(3, &report(2, &["10.0.0.1"]), t + ms(12));
    assert_eq!(snapshots(&out, 3), vec![(3, vec![])]);
    assert!(snapshots(&out, 2).is_empty());
    let out = fence.message(3, &heartbeat(3), t + ms(13));
    assert_eq!(snapshots(&out, 2), vec![(2, vec![ip("10.0.0.1")])]);
}

#[test]
fn deactivation_closes_every_session_as_not_the_leader() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = settled_with_x_on_a(&mut fence, Instant::now());
    let out = fence.set_active(false, t);
    assert!(out.contains(&Output::Close {
        session: 1,
        reason: CloseReason::NotLeader
    }));
    assert!(out.contains(&Output::Close {
        session: 2,
        reason: CloseReason::NotLeader
    }));
    assert!(fence.available().is_empty());
    assert!(!fence.is_active());
}

#[test]
fn bad_addresses_in_reports_are_ignored() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = settled_with_x_on_a(&mut fence, Instant::now());
    let mut message = report(2, &["not-an-ip", "10.0.0.1"]);
    if let Some(pb::speaker_message::Body::Report(r)) = message.body.as_mut() {
        r.conflicts.push(pb::Conflict {
            address: "999.1.1.1".into(),
            interface: "eth0".into(),
            foreign_mac: vec![1, 2, 3, 4, 5, 6],
        });
        r.conflicts.push(pb::Conflict {
            address: "10.0.0.1".into(),
            interface: "eth0".into(),
            foreign_mac: vec![1, 2, 3, 4, 5, 6],
        });
    }
    let out = fence.message(1, &message, t);
    let conflicts: Vec<_> = events(&out)
        .into_iter()
        .filter(|e| matches!(e, HubEvent::Conflict { .. }))
        .collect();
    assert_eq!(conflicts.len(), 1);
    // The same conflict in the next report is not news.
    let out = fence.message(1, &message, t + ms(1));
    assert!(events(&out).is_empty());
}

#[test]
fn a_report_flooded_with_conflicts_from_random_macs_makes_a_bounded_number_of_events() {
    let mut fence = Fence::new(LEASE, GRACE);
    let mut t = settled_with_x_on_a(&mut fence, Instant::now());
    let mut total = 0;
    for round in 0..20u32 {
        let mut message = report(2, &["10.0.0.1"]);
        if let Some(pb::speaker_message::Body::Report(r)) = message.body.as_mut() {
            for n in 0..10_000u32 {
                let mac = (round * 10_000 + n).to_be_bytes();
                r.conflicts.push(pb::Conflict {
                    address: "10.0.0.1".into(),
                    interface: "eth0".into(),
                    foreign_mac: vec![2, 0, mac[0], mac[1], mac[2], mac[3]],
                });
            }
        }
        t += ms(1);
        let out = fence.message(1, &message, t);
        let conflicts = events(&out)
            .into_iter()
            .filter(|e| matches!(e, HubEvent::Conflict { .. }))
            .count();
        assert!(
            conflicts <= MAX_FINDINGS,
            "{conflicts} events from one report"
        );
        total += conflicts;
    }
    // One contested address on one interface is one observation for the session, whatever the MACs.
    assert_eq!(total, 1);
}

/// A simulated world: speakers that follow the speaker's half of the protocol over links with a fixed
/// transit delay, processes that die, partitions that drop messages, reconnects and graceful leaves. The
/// fence must never let two live speakers announce one address at the same millisecond.
mod simulation {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    const NODES: usize = 3;
    const ADDRESSES: u8 = 3;
    const SIM_LEASE: Duration = Duration::from_millis(500);
    const SIM_GRACE: Duration = Duration::from_millis(100);

    #[derive(Debug, Clone)]
    enum Op {
        Desire(Vec<(usize, u8)>),
        Kill(usize),
        Partition(usize, u64),
        Reconnect(usize),
        Leave(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => prop::collection::vec((0..NODES, 1..=ADDRESSES), 0..5).prop_map(Op::Desire),
            1 => (0..NODES).prop_map(Op::Kill),
            2 => (0..NODES, 0u64..1500).prop_map(|(n, d)| Op::Partition(n, d)),
            2 => (0..NODES).prop_map(Op::Reconnect),
            1 => (0..NODES).prop_map(Op::Leave),
        ]
    }

    enum Up {
        Connect(pb::Hello, u64),
        Message(pb::SpeakerMessage),
        Closed,
    }

    #[derive(Default)]
    struct Speaker {
        alive: bool,
        session: Option<SessionId>,
        applied: Option<(u64, BTreeSet<IpAddr>)>,
        lease_until: Option<u64>,
        partitioned_until: u64,
        leaving: bool,
        /// Messages to or from it were dropped (a real stream would have stalled instead).
        lost_messages: bool,
        next_beat: u64,
        /// Controller -> speaker, delivered in order.
        inbox: VecDeque<(u64, SessionId, pb::ControllerMessage)>,
    }

    impl Speaker {
        fn announcing(&self, now: u64) -> BTreeSet<IpAddr> {
            match (&self.applied, self.lease_until) {
                (Some((_, set)), Some(until)) if self.alive && until > now => set.clone(),
                _ => BTreeSet::new(),
            }
        }
    }

    struct World {
        t0: Instant,
        delay: u64,
        take_every: u64,
        fence: Fence,
        speakers: Vec<Speaker>,
        /// Speaker -> controller, delivered in order.
        upbox: VecDeque<(u64, SessionId, Up)>,
        next_session: SessionId,
        last_desired: Vec<(usize, u8)>,
    }

    impl World {
        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        fn name(n: usize) -> String {
            format!("node-{n}")
        }

        /// Sends from speaker `n`, stamping messages with its clock (the world's, + 1 so it is >= 1).
        fn up(&mut self, now: u64, n: usize, session: SessionId, mut message: Up) {
            if let Up::Message(m) = &mut message {
                m.sent_at_ms = now + 1;
            }
            if let Up::Connect(_, sent_at) = &mut message {
                *sent_at = now + 1;
            }
            if self.speakers[n].partitioned_until <= now {
                self.upbox.push_back((now + self.delay, session, message));
            }
        }

        fn connect(&mut self, now: u64, n: usize) {
            let id = self.next_session;
            self.next_session += 1;
            let speaker = &mut self.speakers[n];
            if !speaker.alive {
                *speaker = Speaker {
                    alive: true,
                    lost_messages: speaker.lost_messages,
                    ..Speaker::default()
                };
            }
            speaker.session = Some(id);
            speaker.leaving = false;
            let held = speaker.applied.as_ref().map_or(0, |(g, _)| *g);
            let announcing = speaker
                .announcing(now)
                .into_iter()
                .map(|address| speaker_messages::announcement(address, "eth0"));
            let hello = speaker_messages::hello_of(&Self::name(n), held, vec![]);
            let report = speaker_messages::report(0, held, announcing);
            self.up(now, n, id, Up::Connect(hello, 0));
            self.up(now, n, id, Up::Message(report));
        }

        fn carry_out(&mut self, now: u64, outputs: Vec<Output>) {
            for output in outputs {
                match output {
                    Output::Send { session, message } => {
                        if let Some(speaker) = self
                            .speakers
                            .iter_mut()
                            .find(|s| s.session == Some(session))
                            && speaker.partitioned_until <= now
                        {
                            speaker
                                .inbox
                                .push_back((now + self.delay, session, message));
                        }
                    }
                    Output::Close { session, .. } => {
                        for speaker in &mut self.speakers {
                            if speaker.session == Some(session) {
                                speaker.session = None;
                            }
                        }
                    }
                    Output::Event(_) => {}
                }
            }
        }

        fn apply(&mut self, now: u64, op: &Op) {
            match op {
                Op::Desire(pairs) => {
                    self.last_desired.clone_from(pairs);
                    let mut desired: BTreeMap<String, Vec<DesiredAssignment>> = BTreeMap::new();
                    for (n, a) in pairs {
                        desired
                            .entry(Self::name(*n))
                            .or_default()
                            .push(DesiredAssignment {
                                address: IpAddr::from([10, 0, 0, *a]),
                                interfaces: vec![],
                                services: vec![],
                                fresh: false,
                            });
                    }
                    let out = self.fence.set_desired(desired, self.at(now));
                    self.carry_out(now, out);
                }
                Op::Kill(n) => {
                    let speaker = &mut self.speakers[*n];
                    speaker.alive = false;
                    speaker.inbox.clear();
                    if let Some(session) = speaker.session.take() {
                        // The kernel closes the socket: the controller sees the end after transit.
                        self.upbox
                            .push_back((now + self.delay, session, Up::Closed));
                    }
                }
                Op::Partition(n, duration) => {
                    self.speakers[*n].partitioned_until = now + duration;
                    self.speakers[*n].lost_messages = true;
                }
                // Dialing fails during a partition; the speaker keeps its session and retries later.
                Op::Reconnect(n) if self.speakers[*n].partitioned_until > now => {}
                Op::Reconnect(n) => self.connect(now, *n),
                Op::Leave(n) => {
                    let speaker = &mut self.speakers[*n];
                    if let (true, Some(session)) = (speaker.alive, speaker.session) {
                        speaker.leaving = true;
                        let leaving = speaker_messages::leaving(0);
                        self.up(now, *n, session, Up::Message(leaving));
                    }
                }
            }
        }

        /// Advances one millisecond: deliveries, speaker timers, controller timers. The controller takes
        /// in what arrived every `take_every` ms, as one batch, each message stamped with its arrival
        /// (the hub's driver, busy with a long step, does the same).
        fn run_ms(&mut self, now: u64) {
            let mut batch = Vec::new();
            if now.is_multiple_of(self.take_every) {
                while self.upbox.front().is_some_and(|(at, _, _)| *at <= now) {
                    let Some((at, session, up)) = self.upbox.pop_front() else {
                        break;
                    };
                    let what = match up {
                        Up::Connect(hello, sent_at_ms) => Inbound::Hello { hello, sent_at_ms },
                        Up::Message(message) => Inbound::Message(message),
                        Up::Closed => Inbound::Ended,
                    };
                    let at = self.at(at);
                    batch.push(Received { session, what, at });
                }
            }
            if !batch.is_empty() || self.fence.next_wake().is_some_and(|w| w <= self.at(now)) {
                let out = self.fence.receive(batch, self.at(now));
                self.carry_out(now, out);
            }
            for n in 0..NODES {
                self.speaker_ms(now, n);
            }
        }

        fn speaker_ms(&mut self, now: u64, n: usize) {
            // Step 3: the lease runs until the echoed send time + valid_for on the speaker's clock.
            let until = |lease: &Option<pb::Lease>| {
                lease
                    .filter(|l| l.echo_ms > 0)
                    .map(|l| l.echo_ms - 1 + u64::from(l.valid_for_ms))
            };
            while self.speakers[n]
                .inbox
                .front()
                .is_some_and(|(at, _, _)| *at <= now)
            {
                let Some((_, session, message)) = self.speakers[n].inbox.pop_front() else {
                    break;
                };
                let speaker = &mut self.speakers[n];
                if !speaker.alive || speaker.session != Some(session) {
                    continue;
                }
                match message.body {
                    Some(pb::controller_message::Body::Snapshot(set)) => {
                        let addresses = set.assignments.iter().map(|a| ip(&a.address)).collect();
                        speaker.applied = Some((set.generation, addresses));
                        speaker.lease_until = speaker.lease_until.max(until(&set.lease));
                        let leaving_done = speaker.leaving && set.assignments.is_empty();
                        self.up(now, n, session, Up::Message(heartbeat(set.generation)));
                        if leaving_done {
                            self.up(now, n, session, Up::Closed);
                            let speaker = &mut self.speakers[n];
                            speaker.alive = false;
                            speaker.session = None;
                        }
                    }
                    Some(pb::controller_message::Body::Renewal(renewal))
                        if speaker
                            .applied
                            .as_ref()
                            .is_some_and(|(g, _)| *g == renewal.generation) =>
                    {
                        speaker.lease_until = speaker.lease_until.max(until(&renewal.lease));
                    }
                    _ => {}
                }
            }
            let speaker = &mut self.speakers[n];
            if speaker.alive && now >= speaker.next_beat {
                speaker.next_beat = now + 100;
                if let Some(session) = speaker.session {
                    let applied = speaker.applied.as_ref().map_or(0, |(g, _)| *g);
                    self.up(now, n, session, Up::Message(heartbeat(applied)));
                }
            }
        }

        fn check(&self, now: u64) -> Result<(), TestCaseError> {
            let mut seen: BTreeMap<IpAddr, usize> = BTreeMap::new();
            for (n, speaker) in self.speakers.iter().enumerate() {
                for address in speaker.announcing(now) {
                    if let Some(other) = seen.insert(address, n) {
                        return Err(TestCaseError::fail(format!(
                            "{address} announced by node-{other} and node-{n} at {now} ms"
                        )));
                    }
                }
            }
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn no_two_speakers_ever_announce_one_address_at_once(
            delay in 0u64..=40,
            take_every in prop_oneof![3 => Just(1u64), 1 => 2u64..=60],
            steps in prop::collection::vec((op(), 0u64..400), 1..25),
        ) {
            let t0 = Instant::now();
            let mut world = World {
                t0,
                delay,
                take_every,
                fence: Fence::new(SIM_LEASE, SIM_GRACE),
                speakers: (0..NODES).map(|_| Speaker::default()).collect(),
                upbox: VecDeque::new(),
                next_session: 1,
                last_desired: vec![],
            };
            let out = world.fence.set_active(true, t0);
            world.carry_out(0, out);
            for n in 0..NODES {
                world.connect(0, n);
            }
            let mut now = 0;
            for (op, wait) in &steps {
                world.apply(now, op);
                for _ in 0..*wait {
                    now += 1;
                    world.run_ms(now);
                    world.check(now)?;
                }
            }
            // Let everything settle: leases lapse or renew, fenced addresses move.
            for _ in 0..2000 {
                now += 1;
                world.run_ms(now);
                world.check(now)?;
            }
            // And nothing is held back for ever: an address desired on one healthy node only is announced.
            for (n, a) in &world.last_desired {
                let address = IpAddr::from([10, 0, 0, *a]);
                let unique = world.last_desired.iter().filter(|(_, b)| b == a).count() == 1;
                let speaker = &world.speakers[*n];
                let healthy = speaker.alive && speaker.session.is_some() && !speaker.leaving;
                if unique && healthy && !speaker.lost_messages {
                    prop_assert!(
                        speaker.announcing(now).contains(&address),
                        "{address} desired on node-{n} is not announced at {now} ms"
                    );
                }
            }
        }
    }
}

#[test]
fn leases_echo_the_newest_speaker_stamp_and_a_late_stamp_never_goes_back() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = settled_with_x_on_a(&mut fence, Instant::now());
    let newest = heartbeat(2);
    let stamp = newest.sent_at_ms;
    fence.message(1, &newest, t + ms(150));
    // A message that was overtaken in transit (an older stamp) does not move the echo back.
    let mut older = heartbeat(2);
    older.sent_at_ms = stamp - 1;
    fence.message(1, &older, t + ms(160));
    let out = fence.tick(t + LEASE / 5);
    let echoes: Vec<u64> = out
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                session: 1,
                message:
                    pb::ControllerMessage {
                        body: Some(pb::controller_message::Body::Renewal(r)),
                    },
            } => r.lease.map(|l| l.echo_ms),
            _ => None,
        })
        .collect();
    assert_eq!(echoes, vec![stamp]);
}

/// The BGP configurations sent to `session` in `out`, as (generation, peer names).
fn bgp_configs(out: &[Output], session: SessionId) -> Vec<(u64, Vec<String>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send {
                session: s,
                message:
                    pb::ControllerMessage {
                        body: Some(pb::controller_message::Body::Bgp(config)),
                    },
            } if *s == session => Some((
                config.generation,
                config.peers.iter().map(|p| p.name.clone()).collect(),
            )),
            _ => None,
        })
        .collect()
}

fn bgp_for(node: &str, peer: &str) -> BTreeMap<String, std::sync::Arc<pb::BgpConfig>> {
    let config = pb::BgpConfig {
        peers: vec![pb::BgpPeer {
            name: peer.to_owned(),
            ..pb::BgpPeer::default()
        }],
        ..pb::BgpConfig::default()
    };
    BTreeMap::from([(node.to_owned(), std::sync::Arc::new(config))])
}

#[test]
fn bgp_configuration_follows_the_first_set_and_is_resent_only_when_it_changes() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = settled_with_x_on_a(&mut fence, Instant::now());
    // A session that had its first set gets its node's configuration at once; a node left out gets
    // nothing, as it reported no BGP session (nothing to clear).
    let out = fence.set_bgp(bgp_for("a", "router"), t);
    assert_eq!(bgp_configs(&out, 1), vec![(1, vec!["router".to_owned()])]);
    assert!(bgp_configs(&out, 2).is_empty());
    // Unchanged: nothing is resent, by a new call or by later steps.
    let out = fence.set_bgp(bgp_for("a", "router"), t);
    assert!(bgp_configs(&out, 1).is_empty() && bgp_configs(&out, 2).is_empty());
    let out = fence.message(1, &heartbeat(2), t + ms(10));
    assert!(bgp_configs(&out, 1).is_empty());
    // A change goes out with the next generation; BGP is not fenced, so no acknowledgement is awaited.
    let out = fence.set_bgp(bgp_for("a", "other"), t + ms(20));
    assert_eq!(bgp_configs(&out, 1), vec![(2, vec!["other".to_owned()])]);
    // A node whose speaker reports sessions (from an earlier leader) while none are wanted is cleared.
    let mut stale = report(1, &[]);
    if let Some(pb::speaker_message::Body::Report(r)) = stale.body.as_mut() {
        r.bgp_sessions = vec![pb::BgpSessionState {
            peer: "old".to_owned(),
            ..pb::BgpSessionState::default()
        }];
    }
    let out = fence.message(2, &stale, t + ms(25));
    let mut out = out;
    out.extend(fence.set_bgp(bgp_for("a", "other"), t + ms(26)));
    assert_eq!(bgp_configs(&out, 2), vec![(1, vec![])]);
    // A new session of the node gets its set first, then the configuration again.
    fence.disconnect(1, t + ms(30));
    let out = fence.connect(3, &hello("a", 2), stamp(), t + ms(40));
    let mut all = out.clone();
    all.extend(fence.message(3, &report(2, &["10.0.0.1"]), t + ms(40)));
    let position = |wanted: fn(&pb::controller_message::Body) -> bool| {
        all.iter().position(|o| {
            matches!(o, Output::Send { session: 3, message: pb::ControllerMessage { body: Some(b) } } if wanted(b))
        })
    };
    let set = position(|b| matches!(b, pb::controller_message::Body::Snapshot(_)));
    let bgp = position(|b| matches!(b, pb::controller_message::Body::Bgp(_)));
    assert!(set.is_some() && bgp.is_some() && set < bgp, "{all:?}");
}

#[test]
fn a_change_in_reported_bgp_sessions_is_one_event() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = settled_with_x_on_a(&mut fence, Instant::now());
    let with_sessions = |state: &str| {
        let mut message = report(2, &["10.0.0.1"]);
        if let Some(pb::speaker_message::Body::Report(r)) = message.body.as_mut() {
            r.bgp_sessions = vec![pb::BgpSessionState {
                peer: "tor".to_owned(),
                state: state.to_owned(),
                ..pb::BgpSessionState::default()
            }];
        }
        message
    };
    let bgp_events = |out: &[Output]| {
        events(out)
            .into_iter()
            .filter(|e| matches!(e, HubEvent::BgpSessions { .. }))
            .count()
    };
    assert_eq!(
        bgp_events(&fence.message(1, &with_sessions("Active"), t)),
        1
    );
    assert_eq!(
        bgp_events(&fence.message(1, &with_sessions("Active"), t)),
        0
    );
    assert_eq!(
        bgp_events(&fence.message(1, &with_sessions("Established"), t)),
        1
    );
}

#[test]
fn a_leaving_speaker_that_holds_nothing_gets_an_empty_set_at_once() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = settled_with_x_on_a(&mut fence, Instant::now());
    // b holds nothing; without a new set it would wait out its --leave-timeout.
    let out = fence.message(2, &leaving(), t + ms(10));
    let sets = snapshots(&out, 2);
    assert_eq!(sets.len(), 1, "{out:?}");
    assert!(sets[0].1.is_empty());
}
