//! End to end on layer 2, with every part real: the `lb-controller` binary against the test bed's
//! kube-apiserver (in the root namespace), an `lb-speaker` in each node namespace of the seed lab (m1, n1,
//! n2) reaching the controller over mutual TLS through a loopback forwarder, and the client namespace
//! probing ARP on the shared bridge. The forwarder can be paused to cut a node off from the control plane
//! while its data link stays up: the case fencing exists for.
//!
//! Needs root (namespaces, raw sockets) and the `lb-controller` binary (`cargo test --workspace` builds it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use integration_tests::lab::probe::ArpProbe;
use integration_tests::wait;
use lb_speaker::frames::Mac;
use support::system::*;
use support::*;

#[test]
fn a_killed_speakers_address_moves_to_another_node_and_the_client_follows() {
    let mut system = System::start("lb-failover-kill");
    system.create_service("web");
    let first = system.wait_announced("web", "10.10.39.200", None);
    let client = system.host("client").clone();
    let old = system.mac_of(&first);
    assert_eq!(arping(&client, VIP), [old], "one answer, from {first}");
    assert!(probe_arp(&client, UNASSIGNED, Duration::from_millis(300)).is_empty());
    kernel_traffic(&client, IpAddr::V4(VIP));
    assert_eq!(neighbour_mac(&client, IpAddr::V4(VIP)), Some(old));

    let watch = ArpProbe::start(&client, VIP, PROBE_EVERY).unwrap();
    watch.wait_first_reply(WAIT).unwrap();
    let killed_at = Instant::now();
    system.speakers.get_mut(&first).unwrap().kill();
    let (answered_at, new) = watch.wait_other_than(old, Duration::from_secs(10)).unwrap();
    let second = system.node_of(new);
    assert_ne!(second, first);
    // The client's neighbour entry follows through the new node's gratuitous ARP.
    let neighbour_at =
        wait::until_blocking(
            "the client's neighbour entry to move",
            WAIT,
            || match neighbour_mac(&client, IpAddr::V4(VIP)) {
                Some(mac) if mac == new => Ok(Instant::now()),
                other => Err(format!("{other:02x?}")),
            },
        )
        .unwrap();
    watch.assert_never_two_answering(1);
    println!(
        "speaker on {first} killed: {second} answers ARP after {:?}; client's neighbour entry moved after at most {:?}",
        answered_at - killed_at,
        neighbour_at - killed_at
    );
    assert_eq!(
        system.wait_announced("web", "10.10.39.200", Some(&first)),
        second
    );
}

#[test]
fn a_node_cut_off_from_the_controller_stops_answering_before_another_node_takes_over() {
    let system = System::start("lb-failover-cut");
    system.create_service("web");
    let first = system.wait_announced("web", "10.10.39.200", None);
    let client = system.host("client").clone();
    let old = system.mac_of(&first);
    let watch = ArpProbe::start(&client, VIP, PROBE_EVERY).unwrap();
    watch.wait_first_reply(WAIT).unwrap();

    // Partition: the node's data link stays up, its control connection goes silent.
    let cut_at = Instant::now();
    system.forwards[&first].pause();
    let (answered_at, new) = watch.wait_other_than(old, Duration::from_secs(10)).unwrap();
    let last_old = watch.last_reply_from(old).unwrap();
    assert!(
        last_old < answered_at,
        "the cut-off node still answered when another took over"
    );
    watch.assert_never_two_answering(1);
    println!(
        "{first} cut off: it stopped answering after {:?}, {} answers after {:?} (gap {:?})",
        last_old - cut_at,
        system.node_of(new),
        answered_at - cut_at,
        answered_at - last_old
    );

    // Healing: the node comes back; whatever the controller decides, never two answering.
    system.forwards[&first].resume();
    let healed = Instant::now();
    wait::until_blocking("the system to settle after healing", WAIT, || {
        let replies = watch.replies();
        let recent: Vec<Mac> = replies
            .iter()
            .filter(|(at, _)| *at > healed + Duration::from_secs(3))
            .map(|(_, m)| *m)
            .collect();
        (recent.len() > 20)
            .then_some(())
            .ok_or_else(|| "settling".to_owned())
    })
    .unwrap();
    // At most one more change: back to the healed node (rendezvous prefers it), after the other
    // acknowledged its release.
    watch.assert_never_two_answering(2);
}

#[test]
fn a_leader_change_moves_nothing_and_the_client_keeps_getting_answers() {
    let mut system = System::start_with("lb-failover-leader", 2, Duration::from_secs(10));
    system.create_service("web");
    let announcer = system.wait_announced("web", "10.10.39.200", None);
    let client = system.host("client").clone();
    let mac = system.mac_of(&announcer);
    let watch = ArpProbe::start(&client, VIP, PROBE_EVERY).unwrap();
    watch.wait_first_reply(WAIT).unwrap();

    let killed_at = Instant::now();
    system.controllers[0].0.process().kill();
    // The standby leads once the dead leader's Lease expires; then, like a Service whose ready endpoint
    // changed, the forwarders send new connections to it.
    let standby = system.controllers[1].1;
    system.controllers[1]
        .0
        .wait_metric("groundwork_lb_controller_leader 1", WAIT)
        .unwrap();
    let leading_at = Instant::now();
    for forward in system.forwards.values() {
        forward.set_upstream(standby);
    }
    // The new leader renews what the speakers report holding: the address stays where it is.
    let renewed_for = Duration::from_secs(3);
    wait::until_blocking(
        "answers to keep coming after the new leader took over",
        WAIT,
        || {
            let last = watch.replies().last().map(|(at, _)| *at);
            match last {
                Some(at) if at > leading_at + renewed_for => Ok(()),
                other => Err(format!("last answer at {other:?}")),
            }
        },
    )
    .unwrap();
    let replies = watch.replies();
    assert!(replies.iter().all(|(_, m)| *m == mac), "the address moved");
    let longest_silence = watch.longest_silence();
    assert!(
        longest_silence < Duration::from_millis(500),
        "the client went {longest_silence:?} without an answer"
    );
    println!(
        "leader killed: the standby led after {:?}; {announcer} kept answering (longest silence {:?})",
        leading_at - killed_at,
        longest_silence
    );
    assert_eq!(
        system.wait_announced("web", "10.10.39.200", None),
        announcer
    );
}
