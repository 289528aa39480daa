//! Fault suites on the whole lab: the control plane's apiserver restarts, the DNS etcd goes down and comes
//! back, a dns-server replica dies. Each prints how long the system took to recover and checks that what
//! clients see stayed correct. (A killed speaker, a node cut off from the controller and a killed leader
//! are `lb-speaker/tests/failover.rs`.)
//!
//! Each test brings up its own lab with its own state directory, so a user's lab is never touched. Needs
//! root and the daemons' binaries (`cargo build --workspace --bins`; `cargo test --workspace` builds them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use integration_tests::lab::probe::{ArpProbe, mac_text};
use integration_tests::lab::system::HOSTNAME;
use integration_tests::wait;
use serde_json::json;
use support::*;

/// How long an announcement stays valid without renewal (lb-controller's `--lease`, 1 s in the lab): a
/// client must never wait longer than this for an answer.
const LEASE: Duration = Duration::from_secs(1);
/// How long a dependency stays down at least, so that its clients notice.
const OUTAGE: Duration = Duration::from_secs(3);
/// How often the client asks who has the address (as `lab_kubelets` does).
const PROBE_EVERY: Duration = Duration::from_millis(20);

#[test]
fn an_apiserver_restart_keeps_the_address_answering_and_a_later_service_gets_an_address() {
    let mut lab = start_lab();
    let address = lab.seed_address();
    let announcer = lab.seed_announcer().to_owned();
    let watch = ArpProbe::start(&lab.client_host(), address, PROBE_EVERY).unwrap();
    watch.wait_first_reply(WAIT).unwrap();

    let killed_at = Instant::now();
    lab.kill_apiserver();
    // Down for a while: the controllers lose their watches and the leader its Lease renewals.
    wait::until_blocking(
        "the client to keep getting answers while the apiserver is down",
        WAIT,
        || {
            let after = watch
                .replies()
                .iter()
                .filter(|(at, _)| *at > killed_at)
                .count();
            (killed_at.elapsed() >= OUTAGE && after > 0)
                .then_some(())
                .ok_or_else(|| format!("{after} answers since the kill"))
        },
    )
    .unwrap();
    lab.start_apiserver().unwrap();
    let ready_at = Instant::now();

    lab.create_service("after", json!({}), json!({}));
    let ips = lab.wait_status("after", 1);
    let assigned_at = Instant::now();
    let answering = lab.wait_arp_single(v4(ips[0]));
    // And the seed's address still answers, from where it was.
    wait::until_blocking(
        "an answer after the new Service was announced",
        WAIT,
        || {
            let last = watch.replies().last().map(|(at, _)| *at);
            last.filter(|at| *at > assigned_at)
                .map(|_| ())
                .ok_or_else(|| format!("last answer at {last:?}"))
        },
    )
    .unwrap();
    // The status names the node that answers (it once stayed empty: a reconnected speaker's
    // acknowledgements were ignored when the new session's generation met its held one).
    wait::until_blocking("the announcing node in the status", WAIT, || {
        let annotation = lab.announcing("after");
        (annotation.as_deref() == Some(answering.as_str()))
            .then_some(())
            .ok_or_else(|| format!("annotation {annotation:?}, answering {answering}"))
    })
    .unwrap();
    let silence = watch.longest_silence();
    println!(
        "apiserver killed: ready again after {:?}; a new Service got {} {:?} after that, answered by {answering}; {address} kept answering (longest silence {silence:?}, {} answers)",
        ready_at - killed_at,
        ips[0],
        assigned_at - ready_at,
        watch.replies().len()
    );
    assert!(
        silence < LEASE,
        "the client went {silence:?} without an ARP answer"
    );
    assert_eq!(
        watch.macs().into_iter().map(mac_text).collect::<Vec<_>>(),
        [lab.mac(&announcer)],
        "the address moved or two nodes answered"
    );
}

#[test]
fn a_dns_etcd_outage_keeps_names_served_and_a_name_added_meanwhile_appears_after_it_is_back() {
    let mut lab = start_lab();
    let seed = [lab.seed_address().to_string()];
    lab.wait_dns(HOSTNAME, "A", &seed);

    let killed_at = Instant::now();
    lab.kill_dns_etcd();
    lab.create_service(
        "late",
        json!({HOSTNAME_ANNOTATION: "late.test.org"}),
        json!({}),
    );
    let (ips, _) = lab.wait_addresses("late", 1);
    // While etcd is down, both replicas keep answering from memory, query after query.
    let mut queries = 0;
    while killed_at.elapsed() < OUTAGE {
        for node in integration_tests::lab::system::DNS_NODES {
            let answer = lab.dig_on(node, HOSTNAME, "A").unwrap();
            assert_eq!(
                (answer.status.as_str(), answer.data_of("A")),
                ("NOERROR", seed.to_vec()),
                "dns-server on {node} with etcd down:\n{}",
                answer.raw
            );
            queries += 1;
        }
    }
    lab.start_dns_etcd().unwrap();
    let back_at = Instant::now();
    let caught_up = lab.wait_dns("late.test.org", "A", &[ips[0].to_string()]);
    lab.wait_dns(HOSTNAME, "A", &seed);
    println!(
        "DNS etcd down for {:?}: {queries} queries for {HOSTNAME} all answered meanwhile; late.test.org (added while it was down) served by both replicas {caught_up:?} after it was back",
        back_at - killed_at
    );
}

#[test]
fn with_one_dns_server_down_the_other_answers_and_the_restarted_one_answers_again() {
    let mut lab = start_lab();
    let seed = vec![lab.seed_address().to_string()];
    lab.wait_dns(HOSTNAME, "A", &seed);

    let killed_at = Instant::now();
    lab.dns_server("m1").unwrap().kill();
    assert!(
        lab.dig_on("m1", HOSTNAME, "A").is_err(),
        "the killed dns-server still answers"
    );
    let answer = lab.dig_on("n1", HOSTNAME, "A").unwrap();
    assert_eq!(answer.data_of("A"), seed, "{}", answer.raw);

    lab.restart_dns_server("m1").unwrap();
    let restarted_at = Instant::now();
    wait::until_blocking("the restarted dns-server on m1 to answer", WAIT, || {
        let answer = lab.dig_on("m1", HOSTNAME, "A")?;
        (answer.status == "NOERROR" && answer.data_of("A") == seed)
            .then_some(())
            .ok_or_else(|| format!("{} {:?}", answer.status, answer.data_of("A")))
    })
    .unwrap();
    println!(
        "dns-server on m1 killed: n1 answered meanwhile; m1 answers again {:?} after its restart ({:?} after the kill)",
        restarted_at.elapsed(),
        killed_at.elapsed()
    );
}
