//! The speaker on a real layer-2 segment: lab namespaces joined by a bridge, the real `lb-speaker` binary in
//! the node namespaces, the kernel (`arping`, `ping`, `ip neigh`) and raw sockets in the client namespace,
//! and the stand-in controller (see `support`) driving the `announce.proto` session step by step.
//! Needs root (network namespaces, raw sockets).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use std::sync::Arc;

use integration_tests::netlab::{Host, LabNetwork, LabSpec};
use integration_tests::process::{Process, Scratch};
use integration_tests::wait;
use lb_speaker::frames::{ArpOp, Frame};
use nix::sys::signal::Signal;
use proto::announce::v1::speaker_message::Body as SpeakerBody;
use support::*;

const SPEAKER: &str = env!("CARGO_BIN_EXE_lb-speaker");
const SESSION_TIMEOUT: Duration = Duration::from_secs(20);

/// A lab with the stand-in controller on m1 and a speaker on each of `nodes`, every session open.
/// Fields drop in order: speakers first, the namespaces last.
struct Bed {
    speakers: Vec<Process>,
    sessions: Vec<Arc<SessionRecord>>,
    controller: StandIn,
    _scratch: Scratch,
    lab: LabNetwork,
}

impl Bed {
    fn new(what: &str, nodes: &[&str]) -> Self {
        let lab = LabNetwork::create(&LabSpec::seed()).unwrap_or_else(|e| panic!("{e}"));
        let scratch = Scratch::new(what).unwrap();
        let controller = StandIn::start_in(lab.host("m1").unwrap(), None);
        let speakers = nodes
            .iter()
            .map(|n| {
                start_speaker(
                    SPEAKER,
                    lab.host(n).unwrap(),
                    &scratch,
                    &controller.url("http"),
                    |s| s,
                )
            })
            .collect();
        let sessions = nodes
            .iter()
            .map(|n| controller.wait_session(n, 0, SESSION_TIMEOUT))
            .collect();
        Self {
            speakers,
            sessions,
            controller,
            _scratch: scratch,
            lab,
        }
    }

    fn host(&self, name: &str) -> &Host {
        self.lab.host(name).unwrap()
    }

    /// Stops the stand-in controller (every session ends), as a leader that goes away.
    fn stop_controller(&mut self) -> u16 {
        let port = self.controller.addr.port();
        let host = self.host("m1").clone();
        // A new one that never accepts anything replaces it until `start_controller`.
        self.controller = StandIn::start_in(&host, None);
        port
    }

    /// Starts a stand-in controller at `port`, where the speakers dial.
    fn start_controller(&mut self, port: u16) {
        let host = self.host("m1").clone();
        self.controller = StandIn::start_in_at(&host, port, None);
    }
}

fn vip() -> IpAddr {
    IpAddr::V4(VIP)
}

#[test]
fn the_assigned_node_alone_answers_arp_and_nothing_answers_for_unassigned_addresses() {
    let bed = Bed::new("lb-speaker-arp", &["n1", "n2"]);
    let (n1, client) = (bed.host("n1"), bed.host("client"));
    let (one, two) = (&bed.sessions[0], &bed.sessions[1]);

    // Step 1: Hello names the node's eth0 and its MAC, then a Report of what it still announces (nothing).
    let messages = one.messages();
    let Some(SpeakerBody::Hello(hello)) = &messages[0].body else {
        panic!("first message {:?}", messages[0])
    };
    assert_eq!(hello.interfaces.len(), 1, "{hello:?}");
    assert_eq!(hello.interfaces[0].name, "eth0");
    assert_eq!(hello.interfaces[0].mac, n1.mac().unwrap().to_vec());
    assert_eq!(hello.held_generation, 0);
    one.wait_for("the initial report", SESSION_TIMEOUT, |m| {
        matches!(m.get(1).and_then(|m| m.body.as_ref()), Some(SpeakerBody::Report(r)) if r.announcing.is_empty()).then_some(())
    });

    let (generation, _) = one.assign(&["10.10.39.200"], 10_000);
    two.assign(&[], 10_000);
    one.wait_ack(generation, SESSION_TIMEOUT);
    let report = one.wait_for("a report announcing the address", SESSION_TIMEOUT, |m| {
        m.iter().rev().find_map(|m| match &m.body {
            Some(SpeakerBody::Report(r)) if !r.announcing.is_empty() => Some(r.clone()),
            _ => None,
        })
    });
    assert_eq!(report.applied_generation, generation);
    assert_eq!(report.announcing[0].address, "10.10.39.200");
    assert_eq!(report.announcing[0].interface, "eth0");

    let n1_mac = n1.mac().unwrap();
    assert_eq!(arping(client, VIP), [n1_mac], "arping 10.10.39.200");
    assert_eq!(
        probe_arp(client, VIP, Duration::from_millis(500)),
        [n1_mac],
        "exactly one reply, from n1"
    );
    assert!(arping(client, UNASSIGNED).is_empty());
    assert!(probe_arp(client, UNASSIGNED, Duration::from_millis(500)).is_empty());
}

#[test]
fn reassignment_moves_the_clients_neighbour_entry_to_the_new_node_after_gratuitous_arp() {
    let bed = Bed::new("lb-speaker-move", &["n1", "n2"]);
    let (n1, n2, client) = (bed.host("n1"), bed.host("n2"), bed.host("client"));
    let (one, two) = (&bed.sessions[0], &bed.sessions[1]);
    sysctl(client, "net.ipv4.conf.eth0.arp_accept=1");
    let (n1_mac, n2_mac) = (n1.mac().unwrap(), n2.mac().unwrap());

    let (g1, _) = one.assign(&["10.10.39.200"], 10_000);
    one.wait_ack(g1, SESSION_TIMEOUT);
    wait::until_blocking(
        "client to resolve the address to n1",
        SESSION_TIMEOUT,
        || {
            kernel_traffic(client, vip());
            match neighbour_mac(client, vip()) {
                Some(mac) if mac == n1_mac => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .unwrap();

    // The move, fenced as the contract says: n1 acknowledges a set without the address before n2 gets it.
    let capture = Capture::start(client);
    let (g2, _) = one.assign(&[], 10_000);
    one.wait_ack(g2, SESSION_TIMEOUT);
    let moved_at = Instant::now();
    let (g3, _) = two.assign(&["10.10.39.200"], 10_000);
    two.wait_ack(g3, SESSION_TIMEOUT);

    // Takeover is announced at once in both forms.
    for op in [ArpOp::Request, ArpOp::Reply] {
        capture.wait_for(
            &format!("gratuitous ARP ({op:?}) from n2"),
            Duration::from_secs(5),
            |f| is_gratuitous_arp(f, VIP, n2_mac, op),
        );
    }
    wait::until_blocking(
        "client's neighbour entry to move to n2",
        Duration::from_secs(10),
        || {
            kernel_traffic(client, vip());
            match neighbour_mac(client, vip()) {
                Some(mac) if mac == n2_mac => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .unwrap();
    assert_eq!(probe_arp(client, VIP, Duration::from_millis(500)), [n2_mac]);
    // Repeats follow, spaced past the 1 s ARP locktime.
    let repeats = wait::until_blocking("a repeated gratuitous ARP", Duration::from_secs(5), || {
        let seen: Vec<Instant> = capture
            .frames()
            .into_iter()
            .filter(|(_, f)| is_gratuitous_arp(f, VIP, n2_mac, ArpOp::Request))
            .map(|(at, _)| at)
            .collect();
        (seen.len() >= 2)
            .then_some(seen)
            .ok_or("one so far".to_owned())
    })
    .unwrap();
    assert!(
        repeats[1] - repeats[0] > Duration::from_secs(1),
        "{repeats:?}"
    );
    // No moment with two answering MACs: n1 never announced or answered after the move began.
    let n1_after: Vec<_> = capture
        .frames()
        .into_iter()
        .filter(|(at, f)| {
            *at >= moved_at
                && matches!(f, Frame::Arp(a) if a.sender_mac == n1_mac && a.sender_ip == VIP)
        })
        .collect();
    assert!(n1_after.is_empty(), "n1 still answered: {n1_after:?}");
}

#[test]
fn a_lapsed_lease_stops_replies_within_the_lease_and_a_renewal_brings_them_back() {
    let bed = Bed::new("lb-speaker-lease", &["n1"]);
    let (n1, client) = (bed.host("n1"), bed.host("client"));
    let one = &bed.sessions[0];
    let n1_mac = n1.mac().unwrap();

    let lease = Duration::from_millis(1500);
    let (generation, _) = one.assign(&["10.10.39.200"], 1500);
    one.wait_ack(generation, SESSION_TIMEOUT);
    // Renewals keep it alive past several leases.
    std::thread::sleep(lease * 2); // the behaviour under test is the passage of time itself
    assert_eq!(probe_arp(client, VIP, Duration::from_millis(300)), [n1_mac]);

    one.stop_renewing();
    let stopped = Instant::now();
    wait::until_blocking("replies to stop", lease * 3, || {
        if probe_arp(client, VIP, Duration::from_millis(100)).is_empty() {
            Ok(())
        } else {
            Err("still answered".to_owned())
        }
    })
    .unwrap();
    // The last renewal was sent at most lease/5 before we stopped renewing; replies must end by its
    // deadline (plus the probe's own time).
    assert!(
        stopped.elapsed() <= lease + Duration::from_millis(400),
        "answered {:?} after renewals stopped",
        stopped.elapsed()
    );
    one.wait_for("a report with nothing announced", SESSION_TIMEOUT, |m| {
        let last_report = m.iter().rev().find_map(|m| match &m.body {
            Some(SpeakerBody::Report(r)) => Some(r),
            _ => None,
        });
        last_report.filter(|r| r.announcing.is_empty()).map(|_| ())
    });

    // A renewal for the same generation restarts the lease: answers and a fresh takeover come back.
    one.send(proto::announce::v1::controller_message::Body::Renewal(
        proto::announce::v1::LeaseRenewal {
            generation,
            lease: Some(one.lease(10_000)),
        },
    ));
    wait::until_blocking("replies to come back", SESSION_TIMEOUT, || {
        let macs = probe_arp(client, VIP, Duration::from_millis(200));
        (macs == [n1_mac]).then_some(()).ok_or(format!("{macs:?}"))
    })
    .unwrap();
}

#[test]
fn a_renewal_echoing_an_old_message_does_not_revive_a_lapsed_lease_and_a_fresh_echo_does() {
    let bed = Bed::new("lb-speaker-stale-echo", &["n1"]);
    let (n1, client) = (bed.host("n1"), bed.host("client"));
    let one = &bed.sessions[0];
    let n1_mac = n1.mac().unwrap();
    let (hello_received, hello) = one.received.lock().unwrap()[0].clone();
    assert!(hello.sent_at_ms >= 1, "{hello:?}");

    let lease_ms = 1500;
    let lease = Duration::from_millis(u64::from(lease_ms));
    let (generation, _) = one.assign(&["10.10.39.200"], lease_ms);
    one.wait_ack(generation, SESSION_TIMEOUT);
    assert_eq!(probe_arp(client, VIP, Duration::from_millis(300)), [n1_mac]);
    // Every message is stamped on the speaker's monotonic clock, in the order it was sent.
    let stamps: Vec<u64> = one.messages().iter().map(|m| m.sent_at_ms).collect();
    assert!(
        stamps.windows(2).all(|w| w[0] <= w[1]) && stamps[0] >= 1,
        "{stamps:?}"
    );

    one.stop_renewing();
    let stopped = Instant::now();
    wait::until_blocking("replies to stop", lease * 3, || {
        if probe_arp(client, VIP, Duration::from_millis(100)).is_empty() {
            Ok(())
        } else {
            Err("still answered".to_owned())
        }
    })
    .unwrap();
    assert!(
        stopped.elapsed() <= lease + Duration::from_millis(400),
        "answered {:?} after renewals stopped",
        stopped.elapsed()
    );

    // A renewal for the applied generation echoing the Hello, sent more than a lease after the speaker
    // sent it: what a renewal buffered across a partition looks like when it finally arrives. Counted
    // from its receipt it would restart the lease; counted from the echo it ended long ago.
    assert!(hello_received.elapsed() > lease);
    one.send(proto::announce::v1::controller_message::Body::Renewal(
        proto::announce::v1::LeaseRenewal {
            generation,
            lease: Some(proto::announce::v1::Lease {
                valid_for_ms: lease_ms,
                echo_ms: hello.sent_at_ms,
            }),
        },
    ));
    let stale_sent = Instant::now();
    while stale_sent.elapsed() < lease {
        let macs = probe_arp(client, VIP, Duration::from_millis(200));
        assert!(
            macs.is_empty(),
            "answered {:?} after a stale renewal: {macs:?}",
            stale_sent.elapsed()
        );
    }
    assert!(
        bed.speakers[0]
            .log_tail(2000)
            .contains("lease with a stale echo (delayed in transit) extends nothing"),
        "the stale renewal was not seen:\n{}",
        bed.speakers[0].log_tail(40)
    );

    // A renewal echoing the newest message (heartbeats kept coming) restarts the lease.
    one.send(proto::announce::v1::controller_message::Body::Renewal(
        proto::announce::v1::LeaseRenewal {
            generation,
            lease: Some(one.lease(lease_ms)),
        },
    ));
    wait::until_blocking("replies to come back", Duration::from_secs(1), || {
        let macs = probe_arp(client, VIP, Duration::from_millis(200));
        (macs == [n1_mac]).then_some(()).ok_or(format!("{macs:?}"))
    })
    .unwrap();
}

#[test]
fn ipv6_neighbor_solicitations_from_the_kernel_resolve_to_the_assigned_node() {
    let bed = Bed::new("lb-speaker-ndp", &["n1", "n2"]);
    let (n1, client) = (bed.host("n1"), bed.host("client"));
    let (one, two) = (&bed.sessions[0], &bed.sessions[1]);
    let v6: Ipv6Addr = "fd10:10::99".parse().unwrap();
    let capture = Capture::start(client);
    let (generation, _) = one.assign(&["fd10:10::99"], 10_000);
    two.assign(&[], 10_000);
    one.wait_ack(generation, SESSION_TIMEOUT);
    let n1_mac = n1.mac().unwrap();
    capture.wait_for("an unsolicited override NA from n1", Duration::from_secs(5), |f| {
        matches!(f, Frame::Advertisement(a) if a.target == v6 && a.override_flag && !a.solicited && a.target_mac == Some(n1_mac))
    });
    wait::until_blocking(
        "client to resolve fd10:10::99 to n1",
        SESSION_TIMEOUT,
        || {
            kernel_traffic(client, IpAddr::V6(v6));
            match neighbour_mac(client, IpAddr::V6(v6)) {
                Some(mac) if mac == n1_mac => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .unwrap();
    // The kernel's solicitation was answered by n1 alone, with a solicited advertisement.
    let answers: Vec<_> = capture
        .frames()
        .into_iter()
        .filter_map(|(_, f)| match f {
            Frame::Advertisement(a) if a.target == v6 && a.solicited => Some(a.target_mac),
            _ => None,
        })
        .collect();
    assert!(
        !answers.is_empty() && answers.iter().all(|m| *m == Some(n1_mac)),
        "{answers:?}"
    );
    // Nothing answers for an unassigned v6 address.
    let other = IpAddr::V6("fd10:10::98".parse().unwrap());
    kernel_traffic(client, other);
    assert_eq!(neighbour_mac(client, other), None);
}

#[test]
fn sigterm_sends_leaving_and_stops_after_acknowledging_the_empty_set() {
    let mut bed = Bed::new("lb-speaker-leave", &["n1"]);
    let (n1, client) = (bed.host("n1").clone(), bed.host("client").clone());
    let (n1, client) = (&n1, &client);
    let one = &bed.sessions[0];
    let (generation, _) = one.assign(&["10.10.39.200"], 10_000);
    one.wait_ack(generation, SESSION_TIMEOUT);
    assert_eq!(
        probe_arp(client, VIP, Duration::from_millis(300)),
        [n1.mac().unwrap()]
    );

    let one = one.clone();
    let speaker = &mut bed.speakers[0];
    speaker.signal(Signal::SIGTERM).unwrap();
    one.wait_for("Leaving", SESSION_TIMEOUT, |m| {
        m.iter()
            .any(|m| matches!(m.body, Some(SpeakerBody::Leaving(_))))
            .then_some(())
    });
    // Still announcing until the controller moved the address (no gap before the next node takes over).
    assert_eq!(
        probe_arp(client, VIP, Duration::from_millis(300)),
        [n1.mac().unwrap()]
    );
    let (empty, _) = one.assign(&[], 10_000);
    one.wait_ack(empty, SESSION_TIMEOUT);
    let status = speaker
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running:\n{}", speaker.log_tail(20)));
    assert!(status.success(), "{status}:\n{}", speaker.log_tail(20));
    wait::until_blocking("the session to end", Duration::from_secs(5), || {
        one.ended
            .load(std::sync::atomic::Ordering::SeqCst)
            .then_some(())
            .ok_or("open".to_owned())
    })
    .unwrap();
    assert!(probe_arp(client, VIP, Duration::from_millis(300)).is_empty());
}

#[test]
fn sigterm_while_the_controller_is_away_reconnects_to_leave_and_keeps_answering_until_the_address_moved()
 {
    let mut bed = Bed::new("lb-speaker-leave-away", &["n1"]);
    let (n1, client) = (bed.host("n1").clone(), bed.host("client").clone());
    let one = bed.sessions[0].clone();
    let (generation, _) = one.assign(&["10.10.39.200"], 10_000);
    one.wait_ack(generation, SESSION_TIMEOUT);

    // The controller goes away (a leader being replaced); the node holds its address meanwhile.
    let port = bed.stop_controller();
    let log = bed.speakers[0].log_path().to_owned();
    let logged = |what: &'static str| {
        let log = log.clone();
        wait::until_blocking(what, SESSION_TIMEOUT, move || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(what)
                .then_some(())
                .ok_or("not yet".to_owned())
        })
        .unwrap();
    };
    logged("lost the controller session");
    bed.speakers[0].signal(Signal::SIGTERM).unwrap();
    logged("stopping");
    // Stopping, it keeps answering: nobody else may announce the address before it is handed over.
    assert_eq!(
        probe_arp(&client, VIP, Duration::from_millis(300)),
        [n1.mac().unwrap()],
        "stopped answering before handing the address over:\n{}",
        bed.speakers[0].log_tail(20)
    );

    // A controller is back where speakers dial: the stopping speaker reconnects and says it is leaving.
    bed.start_controller(port);
    let again = bed.controller.wait_session("n1", 0, SESSION_TIMEOUT);
    again.wait_for("Leaving", SESSION_TIMEOUT, |m| {
        m.iter()
            .any(|m| matches!(m.body, Some(SpeakerBody::Leaving(_))))
            .then_some(())
    });
    let (empty, _) = again.assign(&[], 10_000);
    again.wait_ack(empty, SESSION_TIMEOUT);
    let speaker = &mut bed.speakers[0];
    let status = speaker
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running:\n{}", speaker.log_tail(20)));
    assert!(status.success(), "{status}:\n{}", speaker.log_tail(20));
    assert!(probe_arp(&client, VIP, Duration::from_millis(300)).is_empty());
}

#[test]
fn an_assignment_naming_a_missing_interface_is_reported_and_the_rest_is_served() {
    let bed = Bed::new("lb-speaker-problem", &["n1"]);
    let (n1, client) = (bed.host("n1"), bed.host("client"));
    let one = &bed.sessions[0];
    let assignment = |address: &str, interface: &str| proto::announce::v1::Assignment {
        address: address.to_owned(),
        interfaces: vec![interface.to_owned()],
        services: vec![],
    };
    let generation = one.assign_set(proto::announce::v1::AssignmentSet {
        generation: 0,
        assignments: vec![
            assignment("10.10.39.200", "eth0"),
            assignment("10.10.39.201", "eth7"),
        ],
        lease: Some(one.lease(10_000)),
    });
    one.wait_ack(generation, SESSION_TIMEOUT);
    let problem = one.wait_for("a report with the problem", SESSION_TIMEOUT, |m| {
        m.iter().rev().find_map(|m| match &m.body {
            Some(SpeakerBody::Report(r)) if !r.problems.is_empty() => Some(r.problems[0].clone()),
            _ => None,
        })
    });
    assert_eq!(
        (problem.address.as_str(), problem.interface.as_str()),
        ("10.10.39.201", "eth7")
    );
    assert!(problem.message.contains("does not exist"), "{problem:?}");
    assert_eq!(
        probe_arp(client, VIP, Duration::from_millis(300)),
        [n1.mac().unwrap()]
    );
    assert!(bed.speakers[0].log_tail(50).contains("eth7"));
}

#[test]
fn losing_the_controller_holds_the_address_past_the_lease_until_a_new_controller_says_otherwise() {
    let lab = LabNetwork::create(&LabSpec::seed()).unwrap_or_else(|e| panic!("{e}"));
    let scratch = Scratch::new("lb-speaker-loss-hold").unwrap();
    let (m1, n1, client) = (
        lab.host("m1").unwrap(),
        lab.host("n1").unwrap(),
        lab.host("client").unwrap(),
    );
    let controller = StandIn::start_in(m1, None);
    let url = controller.url("http");
    let port = controller.addr.port();
    let speaker = start_speaker(SPEAKER, n1, &scratch, &url, |s| {
        s.loss_hold(Duration::from_secs(5))
    });
    let n1_mac = n1.mac().unwrap();
    let lease = Duration::from_millis(600);
    let hold = Duration::from_secs(5);

    let one = controller.wait_session("n1", 0, SESSION_TIMEOUT);
    let (generation, _) = one.assign(&["10.10.39.200"], 600);
    one.wait_ack(generation, SESSION_TIMEOUT);
    assert_eq!(probe_arp(client, VIP, Duration::from_millis(300)), [n1_mac]);

    // The leader goes away while the session is healthy (renewals every lease/5): its process ends and
    // the kernel closes the connection.
    drop(one);
    drop(controller);
    let lost = Instant::now();
    // Well past the lease, the address is still answered, by the kernel's arping too.
    std::thread::sleep(lease * 2); // the behaviour under test is the passage of time itself
    assert_eq!(
        arping(client, VIP),
        [n1_mac],
        "no reply {:?} after the loss:\n{}",
        lost.elapsed(),
        speaker.log_tail(20)
    );
    assert!(lost.elapsed() < hold, "the check itself took too long");

    // A new leader at the same address: the speaker reconnects (backoff capped at 1 s), reports what it
    // still holds, and stops at once when the new set does not contain the address.
    let controller = StandIn::start_in_at(m1, port, None);
    let again = controller.wait_session("n1", 0, SESSION_TIMEOUT);
    let messages = again.messages();
    let Some(SpeakerBody::Hello(hello)) = &messages[0].body else {
        panic!("first message {:?}", messages[0])
    };
    assert_eq!(hello.held_generation, generation, "{hello:?}");
    again.wait_for("a report still announcing the address", SESSION_TIMEOUT, |m| {
        matches!(m.get(1).and_then(|m| m.body.as_ref()), Some(SpeakerBody::Report(r)) if r.announcing.iter().any(|a| a.address == "10.10.39.200")).then_some(())
    });
    assert_eq!(probe_arp(client, VIP, Duration::from_millis(300)), [n1_mac]);
    let (empty, _) = again.assign(&[], 600);
    again.wait_ack(empty, SESSION_TIMEOUT);
    let acked = Instant::now();
    assert!(
        probe_arp(client, VIP, Duration::from_millis(300)).is_empty(),
        "still answered after acknowledging the empty set"
    );
    assert!(arping(client, VIP).is_empty());
    assert!(
        acked < lost + hold,
        "the hold ran out before the new set arrived ({:?}), so this proves nothing",
        acked - lost
    );
    assert!(
        speaker
            .log_tail(200)
            .contains("holding what this node announces")
    );
}

#[test]
fn arp_replies_from_thousands_of_random_macs_make_a_bounded_number_of_reported_conflicts() {
    let bed = Bed::new("lb-speaker-conflict-flood", &["n1"]);
    let one = &bed.sessions[0];
    let (generation, _) = one.assign(&["10.10.39.200"], 60_000);
    one.wait_ack(generation, SESSION_TIMEOUT);
    // Anyone on the segment: the client claims the address from 5,000 made-up MACs.
    let (mut tx, _rx) = raw_channel(bed.host("client"), Duration::from_millis(100));
    const FLOOD: u32 = 5_000;
    for n in 0..FLOOD {
        let b = n.to_be_bytes();
        let mac = [0x02, 0x66, b[0], b[1], b[2], b[3]];
        let frame = lb_speaker::frames::gratuitous_arp(mac, VIP, ArpOp::Reply);
        tx.send_to(&frame, None).unwrap().unwrap();
    }
    // The speaker reports conflicts, never more than the bound, however many MACs it heard.
    let most = one.wait_for("a report with conflicts", SESSION_TIMEOUT, |messages| {
        messages
            .iter()
            .filter_map(|m| match &m.body {
                Some(SpeakerBody::Report(r)) => Some(r.conflicts.len()),
                _ => None,
            })
            .max()
            .filter(|most| *most > 0)
    });
    assert!(
        most <= lb_speaker::responder::MAX_REPORTED_CONFLICTS,
        "a report listed {most} conflicts"
    );
    // And it keeps answering for the address it holds.
    assert_eq!(
        arping(bed.host("client"), VIP),
        [bed.host("n1").mac().unwrap()]
    );
    let reports_over_bound = one
        .messages()
        .iter()
        .filter(|m| {
            matches!(&m.body, Some(SpeakerBody::Report(r))
                if r.conflicts.len() > lb_speaker::responder::MAX_REPORTED_CONFLICTS)
        })
        .count();
    assert_eq!(reports_over_bound, 0);
}
