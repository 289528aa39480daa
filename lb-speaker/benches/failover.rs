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
use support::{arping, kernel_traffic};

const CREATES: usize = 10;
const KILLS: usize = 5;
const CUTS: usize = 3;

fn main() {
    let mut system = System::start("lb-failover-bench");
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

    // 2. Kill the announcing speaker, measure, start it again.
    let vip = Ipv4Addr::new(10, 10, 39, 200);
    let mut kills = Vec::new();
    for _ in 0..KILLS {
        let node = system.wait_announced("web0", "10.10.39.200", None);
        let old = system.mac_of(&node);
        wait_answering(&client, vip, old);
        let watch = ArpWatch::start(&client, vip);
        let killed = Instant::now();
        system.speakers.get_mut(&node).unwrap().kill();
        let (answered, _) = watch.wait_other_than(old, Duration::from_secs(10));
        watch.assert_never_two_answering(1);
        kills.push(answered - killed);
        drop(watch);
        system.restart_speaker(&node);
        settle(&system, &client);
    }

    // 3. Cut the announcing node off from the controller, measure, heal.
    let mut cuts = Vec::new();
    let mut stops = Vec::new();
    for _ in 0..CUTS {
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
        system.forwards[&node].resume();
        drop(watch);
        settle(&system, &client);
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

/// One `arping` with a short wait; whether anybody answered.
fn arping_quick(client: &integration_tests::netlab::Host, address: Ipv4Addr) -> bool {
    let out = client
        .command("arping")
        .args(["-c", "1", "-w", "0.2", "-I", "eth0", &address.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("reply from")
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

/// Waits until every speaker is back and the address answers from one node.
fn settle(system: &System, client: &integration_tests::netlab::Host) {
    let node = system.wait_announced("web0", "10.10.39.200", None);
    kernel_traffic(client, "10.10.39.200".parse().unwrap());
    wait_answering(client, Ipv4Addr::new(10, 10, 39, 200), system.mac_of(&node));
    // The next round starts from three connected speakers, as the controller counts them.
    wait::until_blocking("three speakers connected", WAIT, || {
        let metrics = system.controllers[0].0.get("/metrics")?.body;
        metrics
            .lines()
            .find(|l| l.contains("speakers_connected") && !l.starts_with('#'))
            .filter(|l| l.ends_with(" 3"))
            .map(|_| ())
            .ok_or_else(|| "fewer than three".to_owned())
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
