//! The lab network is a real layer-2 segment: raw Ethernet frames cross the bridge between namespaces, IP
//! traffic flows between hosts, nothing can leave the lab, and a crashed run's namespaces are swept.
//! Needs root (network namespaces, raw sockets); without it these tests fail and say so.

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::time::{Duration, Instant};

use integration_tests::netlab::{self, HOST_INTERFACE, LabNetwork, LabSpec, NAMESPACE_PREFIX};
use pnet::datalink::{self, Channel, Config};
use pnet::packet::Packet;
use pnet::packet::ethernet::{EtherType, EthernetPacket, MutableEthernetPacket};
use pnet::util::MacAddr;

/// IEEE 802 "local experimental" EtherType: no host stack reacts to it.
const EXPERIMENTAL: EtherType = EtherType(0x88b5);

fn lab() -> LabNetwork {
    LabNetwork::create(&LabSpec::seed()).unwrap_or_else(|e| panic!("{e}"))
}

fn channel() -> (
    Box<dyn datalink::DataLinkSender>,
    Box<dyn datalink::DataLinkReceiver>,
) {
    let interface = datalink::interfaces()
        .into_iter()
        .find(|i| i.name == HOST_INTERFACE)
        .expect("eth0 in the namespace");
    let config = Config {
        read_timeout: Some(Duration::from_millis(100)),
        ..Config::default()
    };
    match datalink::channel(&interface, config).expect("raw socket on eth0") {
        Channel::Ethernet(tx, rx) => (tx, rx),
        _ => panic!("not an Ethernet channel"),
    }
}

#[test]
fn a_raw_ethernet_frame_crosses_the_bridge_between_two_namespaces() {
    let lab = lab();
    let sender = lab.host("n1").unwrap().clone();
    let receiver = lab.host("client").unwrap().clone();
    let sender_mac = sender.mac().unwrap();
    let payload = format!("groundwork lab frame from pid {}", std::process::id());

    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let expected = payload.clone();
    let receiving = std::thread::spawn(move || {
        receiver
            .run(move || {
                let (_tx, mut rx) = channel();
                ready_tx.send(()).unwrap();
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    let Ok(frame) = rx.next() else { continue };
                    let Some(packet) = EthernetPacket::new(frame) else {
                        continue;
                    };
                    if packet.get_ethertype() == EXPERIMENTAL
                        && packet.payload().starts_with(expected.as_bytes())
                    {
                        done_tx.send(()).unwrap();
                        return Some(packet.get_source());
                    }
                }
                None
            })
            .unwrap()
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();

    sender
        .run(move || {
            let (mut tx, _rx) = channel();
            let mut buffer = vec![0u8; 14 + payload.len().max(46)];
            let mut frame = MutableEthernetPacket::new(&mut buffer).unwrap();
            frame.set_destination(MacAddr::broadcast());
            frame.set_source(MacAddr::from(sender_mac));
            frame.set_ethertype(EXPERIMENTAL);
            frame.set_payload(payload.as_bytes());
            // Resend until the receiver confirms, bounded: the first frame can race the bridge port's
            // transition to forwarding.
            for _ in 0..50 {
                tx.send_to(frame.to_immutable().packet(), None)
                    .unwrap()
                    .unwrap();
                if done_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                    return;
                }
            }
        })
        .unwrap();
    let seen_source = receiving.join().unwrap();
    assert_eq!(seen_source, Some(MacAddr::from(sender_mac)));
}

#[test]
fn hosts_reach_each_other_over_ipv4_and_ipv6_and_have_no_route_off_the_lab() {
    let lab = lab();
    let client = lab.host("client").unwrap();
    let m1 = lab.host("m1").unwrap();
    for target in [m1.ipv4.to_string(), m1.ipv6.to_string()] {
        let out = client
            .command("ping")
            .args(["-c", "1", "-W", "2", &target])
            .output()
            .unwrap();
        assert!(out.status.success(), "ping {target}: {out:?}");
    }
    for host in lab.hosts() {
        for family in ["-4", "-6"] {
            let routes =
                netlab::ip(&["-n", &host.netns, family, "route", "show", "default"]).unwrap();
            assert!(
                routes.trim().is_empty(),
                "{} has a default route: {routes}",
                host.name
            );
        }
    }
    // The root namespace has no interface on the lab's segment.
    let root = netlab::ip(&["-o", "addr", "show"]).unwrap();
    assert!(
        !root.contains("10.10.40."),
        "root namespace is on the lab segment:\n{root}"
    );
}

#[test]
fn dropping_the_lab_removes_its_namespaces_and_leftovers_of_dead_runs_are_swept() {
    let lab = lab();
    let names: Vec<String> = lab.hosts().iter().map(|h| h.netns.clone()).collect();
    drop(lab);
    let listing = netlab::ip(&["netns", "list"]).unwrap();
    for name in &names {
        assert!(!listing.contains(name.as_str()), "{name} still exists");
    }

    // A namespace left by a run whose process is gone (pid above pid_max cannot be alive).
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let orphan = format!("{NAMESPACE_PREFIX}{}-0-n1", pid_max + 1);
    netlab::ip(&["netns", "add", &orphan]).unwrap();
    // Tests running beside this one sweep too (every lab creation does), so the orphan may be gone
    // before this sweep looks: what matters is that a sweep removed it.
    let removed = netlab::sweep_leftovers().unwrap();
    let listing = netlab::ip(&["netns", "list"]).unwrap();
    assert!(
        !listing.contains(&orphan),
        "{orphan} survived the sweep (this sweep removed {removed:?})"
    );
}
