//! Behaviours of the fence, with explicit times: every rule of `announce.proto` steps 2 to 6.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const LEASE: Duration = Duration::from_millis(1000);
const GRACE: Duration = Duration::from_millis(100);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn hello(node: &str, held_generation: u64) -> pb::Hello {
    pb::Hello {
        node: node.into(),
        interfaces: vec![],
        version: "test".into(),
        held_generation,
    }
}

fn report(applied: u64, announcing: &[&str]) -> pb::SpeakerMessage {
    pb::SpeakerMessage {
        body: Some(pb::speaker_message::Body::Report(pb::Report {
            applied_generation: applied,
            announcing: announcing
                .iter()
                .map(|a| pb::Announcement {
                    address: (*a).into(),
                    interface: "eth0".into(),
                })
                .collect(),
            conflicts: vec![],
            problems: vec![],
        })),
    }
}

fn heartbeat(applied: u64) -> pb::SpeakerMessage {
    pb::SpeakerMessage {
        body: Some(pb::speaker_message::Body::Heartbeat(pb::Heartbeat {
            applied_generation: applied,
        })),
    }
}

fn leaving() -> pb::SpeakerMessage {
    pb::SpeakerMessage {
        body: Some(pb::speaker_message::Body::Leaving(pb::Leaving {})),
    }
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
    fence.connect(1, &hello("a", 0), t);
    fence.message(1, &report(0, &[]), t);
    fence.connect(2, &hello("b", 0), t);
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
    let out = fence.connect(1, &hello("a", 0), t);
    assert!(snapshots(&out, 1).is_empty());
    assert!(fence.available().contains_key("a"));
    let out = fence.message(1, &report(0, &[]), t);
    assert_eq!(snapshots(&out, 1), vec![(1, vec![])]);
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
    // b keeps talking; a says nothing more. Its last lease goes out at the last renewal before silence.
    let mut now = t;
    let mut last_lease_to_a = t;
    let mut became_silent = None;
    while became_silent.is_none() {
        now += ms(10);
        let mut out = fence.message(2, &heartbeat(1), now);
        out.extend(fence.tick(now));
        if !renewals(&out, 1).is_empty() {
            last_lease_to_a = now;
        }
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
    let deadline = last_lease_to_a + LEASE + GRACE;
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

#[test]
fn silent_node_that_speaks_again_is_available_and_gets_a_new_snapshot() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = settled_with_x_on_a(&mut fence, Instant::now());
    fence.message(2, &heartbeat(1), t + LEASE / 2);
    fence.tick(t + LEASE / 2);
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
    fence.connect(2, &hello("b", 0), t);
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
    let out = fence.connect(1, &hello("a", 7), t);
    assert!(
        snapshots(&out, 1).is_empty(),
        "no snapshot before its report"
    );
    let out = fence.message(1, &report(7, &["10.0.0.1"]), t);
    assert_eq!(snapshots(&out, 1), vec![(1, vec![ip("10.0.0.1")])]);
    assert_eq!(
        fence.announced().get(&ip("10.0.0.1")),
        Some(&"a".to_owned())
    );
}

#[test]
fn after_activation_a_reported_address_moves_once_its_reporter_acknowledges() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = Instant::now();
    fence.set_active(true, t);
    fence.set_desired(want(&[("b", &["10.0.0.1"])]), t);
    fence.connect(2, &hello("b", 0), t);
    fence.message(2, &report(0, &[]), t);
    fence.connect(1, &hello("a", 7), t);
    let out = fence.message(1, &report(7, &["10.0.0.1"]), t);
    assert_eq!(snapshots(&out, 1), vec![(1, vec![])]);
    // The stale held generation (7) is not an acknowledgement; generation 1 is.
    let out = fence.message(1, &heartbeat(7), t + ms(1));
    assert!(snapshots(&out, 2).is_empty());
    let out = fence.message(1, &heartbeat(1), t + ms(2));
    assert_eq!(snapshots(&out, 2), vec![(2, vec![ip("10.0.0.1")])]);
}

#[test]
fn an_acknowledgement_equal_to_the_held_generation_is_not_trusted() {
    let mut fence = Fence::new(LEASE, GRACE);
    let t = Instant::now();
    fence.set_active(true, t);
    fence.tick(t + LEASE + GRACE);
    let t = t + LEASE + GRACE;
    fence.connect(2, &hello("b", 0), t);
    fence.message(2, &report(0, &[]), t);
    fence.connect(1, &hello("a", 1), t);
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
    let out = fence.connect(3, &hello("a", 2), t + ms(10));
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
    assert_eq!(snapshots(&out, 3), vec![(1, vec![])]);
    assert!(snapshots(&out, 2).is_empty());
    let out = fence.message(3, &heartbeat(1), t + ms(13));
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
