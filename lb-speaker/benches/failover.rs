//! End-to-end load-balancer timings with every part real (the `lb-controller` binary against the test bed's
//! kube-apiserver, `lb-speaker`s in the seed lab's node namespaces over mTLS, ARP probes every 10 ms from the
//! client namespace; see `tests/support/system.rs`):
//!
//! 1. Service created -> its address answers ARP in the client namespace.
//! 2. The announcing speaker killed -> another node answers (target under 500 ms).
//! 3. The announcing node cut off from the controller (its data link stays up) -> another node answers
//!    (target under 2 s), with the moment the cut-off node stopped and whether two nodes ever answered.
//!
//! Run as root after building the controller: `cargo build --release -p lb-controller &&
//! cargo bench -p lb-speaker --bench failover`. MetalLB is not built on this machine yet; the lab issue runs
//! it side by side.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use integration_tests::wait;
use lb_speaker::frames::Mac;
use support::system::{ArpWatch, System, WAIT, gap};
use support::{arping, probe_arp};

const CREATES: usize = 10;
const KILLS: usize = 3;
const CUTS: usize = 2;

fn main() {
    let system = System::start("lb-failover-bench");
    let client = system.host("client").clone();

    // 1. Service created -> ARP answered.
    let mut create = Vec::new();
    for i in 0..CREATES {
        let name = format!("web{i}");
        let address = Ipv4Addr::new(10, 10, 39, 200 + u8::try_from(i).unwrap());
        let started = Instant::now();
        system.create_service(&name);
        wait::until_blocking(&format!("{address} to answer"), WAIT, || {
            if arping_quick(&client, address) {
                Ok(())
            } else {
                Err("no answer yet".to_owned())
            }
        })
        .unwrap();
        create.push(started.elapsed());
    }

    drop(system);

    // 2. Kill the announcing speaker. Each round is a fresh system, as in the tests: a restarted speaker
    //    takes its addresses back (rendezvous), which is not what is measured here.
    let vip = Ipv4Addr::new(10, 10, 39, 200);
    let mut kills = Vec::new();
    for round in 0..KILLS {
        let mut system = System::start(&format!("lb-failover-bench-kill{round}"));
        let client = system.host("client").clone();
        system.create_service("web0");
        let node = system.wait_announced("web0", "10.10.39.200", None);
        let old = system.mac_of(&node);
        wait_answering(&client, vip, old);
        let watch = ArpWatch::start(&client, vip);
        let killed = Instant::now();
        system.speakers.get_mut(&node).unwrap().kill();
        let (answered, _) = watch.wait_other_than(old, Duration::from_secs(10));
        watch.assert_never_two_answering(1);
        kills.push(answered - killed);
    }

    // 3. Cut the announcing node off from the controller (its data link stays up).
    let mut cuts = Vec::new();
    let mut stops = Vec::new();
    for round in 0..CUTS {
        let system = System::start(&format!("lb-failover-bench-cut{round}"));
        let client = system.host("client").clone();
        system.create_service("web0");
        let node = system.wait_announced("web0", "10.10.39.200", None);
        let old = system.mac_of(&node);
        wait_answering(&client, vip, old);
        let watch = ArpWatch::start(&client, vip);
        let cut = Instant::now();
        system.forwards[&node].pause();
        let (answered, _) = watch.wait_other_than(old, Duration::from_secs(10));
        let (last_old, _) = gap(&watch.replies(), old);
        watch.assert_never_two_answering(1);
        cuts.push(answered - cut);
        stops.push(last_old.map_or(Duration::ZERO, |at| at - cut));
    }

    println!();
    println!(
        "groundwork lb-controller + lb-speaker, seed lab (3 nodes), speaker lease 1 s, grace 200 ms"
    );
    println!(
        "{:<52} {:>5} {:>10} {:>10}",
        "measurement", "n", "p50", "max"
    );
    row("Service created -> address answers ARP", &create);
    row("speaker killed -> another node answers ARP", &kills);
    row("node cut off -> it stops answering", &stops);
    row("node cut off -> another node answers ARP", &cuts);
    println!("(no probe was ever answered by two nodes; MetalLB: not run on this machine yet)");
}

/// One raw ARP probe with a short wait; whether anybody answered.
fn arping_quick(client: &integration_tests::netlab::Host, address: Ipv4Addr) -> bool {
    !probe_arp(client, address, Duration::from_millis(50)).is_empty()
}

fn wait_answering(client: &integration_tests::netlab::Host, address: Ipv4Addr, mac: Mac) {
    wait::until_blocking("the announcer to answer", WAIT, || {
        if arping(client, address) == [mac] {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .unwrap();
}

fn row(what: &str, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let p50 = sorted[sorted.len() / 2];
    let max = sorted[sorted.len() - 1];
    println!(
        "{what:<52} {:>5} {:>10} {:>10}",
        samples.len(),
        format!("{:.1} ms", p50.as_secs_f64() * 1000.0),
        format!("{:.1} ms", max.as_secs_f64() * 1000.0)
    );
}
