//! How fast the speaker is where it matters, measured in lab namespaces with the real binary:
//!
//! 1. ARP reply latency seen from the client namespace (raw socket: request sent -> reply received), next
//!    to the kernel's own ARP reply latency for a node address as a baseline; the same for NDP.
//! 2. Takeover latency: from the stand-in controller handing an assignment to the stream to the first
//!    gratuitous ARP frame seen in the client namespace (target under 10 ms).
//!
//! Run as root: `cargo bench -p lb-speaker --bench arp`. MetalLB is not run here (the end-to-end lab
//! compares the two in one run).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use integration_tests::netlab::{LabNetwork, LabSpec};
use integration_tests::process::Scratch;
use lb_speaker::frames::{self, ArpOp, Frame};
use support::*;

const SPEAKER: &str = env!("CARGO_BIN_EXE_lb-speaker");
const SAMPLES: usize = 2000;
const TAKEOVERS: u8 = 50;

fn main() {
    let lab = LabNetwork::create(&LabSpec::seed()).unwrap_or_else(|e| panic!("{e}"));
    let scratch = Scratch::new("lb-speaker-bench").unwrap();
    let (n1, client) = (lab.host("n1").unwrap(), lab.host("client").unwrap());
    let controller = StandIn::start_in(lab.host("m1").unwrap(), None);
    let _speaker = start_speaker(SPEAKER, n1, &scratch, &controller.url("http"), |s| {
        s.log_filter("info")
    });
    let session = controller.wait_session("n1", 0, Duration::from_secs(30));
    let (generation, _) = session.assign(&["10.10.39.200", "fd10:10::99"], 600_000);
    session.wait_ack(generation, Duration::from_secs(10));
    let n1_mac = n1.mac().unwrap();
    let client_mac = client.mac().unwrap();

    let (mut tx, mut rx) = raw_channel(client, Duration::from_millis(50));
    let mut arp_latency = |target: Ipv4Addr| {
        let request = frames::arp_request(client_mac, client.ipv4, target);
        let mut samples = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let sent = Instant::now();
            tx.send_to(&request, None).unwrap().unwrap();
            while sent.elapsed() < Duration::from_secs(1) {
                let Ok(bytes) = rx.next() else { continue };
                if let Ok(Frame::Arp(a)) = frames::parse(bytes)
                    && a.op == ArpOp::Reply
                    && a.sender_ip == target
                    && a.eth_dst == client_mac
                {
                    samples.push(sent.elapsed());
                    break;
                }
            }
        }
        samples
    };
    let speaker_arp = arp_latency(VIP);
    let kernel_arp = arp_latency(n1.ipv4);
    let (mut tx, mut rx) = raw_channel(client, Duration::from_millis(50));
    let mut ndp_latency = |target: Ipv6Addr| {
        let request = frames::neighbor_solicitation(client_mac, client.ipv6, target);
        let mut samples = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let sent = Instant::now();
            tx.send_to(&request, None).unwrap().unwrap();
            while sent.elapsed() < Duration::from_secs(1) {
                let Ok(bytes) = rx.next() else { continue };
                if let Ok(Frame::Advertisement(a)) = frames::parse(bytes)
                    && a.target == target
                    && a.solicited
                {
                    samples.push(sent.elapsed());
                    break;
                }
            }
        }
        samples
    };
    let speaker_ndp = ndp_latency("fd10:10::99".parse().unwrap());
    let kernel_ndp = ndp_latency(n1.ipv6);

    // Takeover: a fresh address each round, so repeats of earlier rounds cannot be mistaken for it.
    let capture = Capture::start(client);
    let mut takeover = Vec::new();
    for k in 1..=TAKEOVERS {
        let address = Ipv4Addr::new(10, 10, 38, k);
        let (generation, sent_at) = session.assign(&[&address.to_string()], 600_000);
        let seen = capture.wait_for(
            "the takeover's gratuitous ARP",
            Duration::from_secs(5),
            |f| is_gratuitous_arp(f, address, n1_mac, ArpOp::Request),
        );
        takeover.push(seen.saturating_duration_since(sent_at));
        session.wait_ack(generation, Duration::from_secs(5));
    }

    println!("lb-speaker ARP/NDP benchmark ({SAMPLES} samples each, lab namespaces on one bridge)");
    report("ARP reply, lb-speaker (10.10.39.200)", &speaker_arp);
    report("ARP reply, Linux kernel (node address)", &kernel_arp);
    report("NDP advertisement, lb-speaker (fd10:10::99)", &speaker_ndp);
    report(
        "NDP advertisement, Linux kernel (node address)",
        &kernel_ndp,
    );
    report(
        "assignment sent -> first gratuitous ARP in client ns",
        &takeover,
    );
    let _ = IpAddr::V4(VIP);
}

fn report(what: &str, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = |q: f64| {
        let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(index).copied().unwrap_or_default()
    };
    println!(
        "{what:<55} n={:<5} p50={:>9.1?} p99={:>9.1?} max={:>9.1?}",
        sorted.len(),
        at(0.50),
        at(0.99),
        at(1.0)
    );
}
