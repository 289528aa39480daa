//! Attacks on the publishing rules, against the real kube-apiserver and etcd: another namespace trying to take
//! over or add to a published name, to publish the zone apex or its name servers, to publish outside its
//! allow-list, and one object asking for a million records.

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use integration_tests::daemon::Daemon;
use integration_tests::etcd::Etcd;
use integration_tests::kube::KubeCluster;
use integration_tests::wait;

mod support;

use support::{
    HOSTNAME, OWNER, TARGET, create, create_namespaces, keys_under, records_of, service_in,
    start_sync, start_sync_with, wait_event, wait_hosts,
};

/// The resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// An apiserver with namespaces `a` and `b`, etcd, dns-sync, and `a/<label>` publishing `<label>.test.org` at
/// `ip`.
async fn start_with_a_name_in_a(label: &str, ip: &str) -> (KubeCluster, Etcd, Daemon) {
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start().await.unwrap();
    create_namespaces(&cluster, &["a", "b"]).await;
    let mut sync = start_sync(&cluster, &etcd);
    sync.wait_ready(Duration::from_secs(20)).unwrap();
    let name = format!("{label}.test.org");
    create(
        &cluster,
        &service_in("a", label, &[(HOSTNAME, &name)]),
        Some(ip),
    )
    .await;
    wait_hosts(&etcd, &name, OWNER, &[ip]).await;
    (cluster, etcd, sync)
}

#[tokio::test(flavor = "multi_thread")]
async fn another_namespace_cannot_take_over_add_to_or_publish_reserved_names() {
    let (cluster, etcd, mut sync) = start_with_a_name_in_a("shop", "10.10.39.200").await;
    let before = keys_under(&etcd, "/skydns/").await;

    // b asks for a's name, pointing it at an address of its own.
    create(
        &cluster,
        &service_in(
            "b",
            "evil",
            &[(HOSTNAME, "shop.test.org"), (TARGET, "10.6.6.6")],
        ),
        None,
    )
    .await;
    let note = wait_event(
        &cluster,
        "b",
        "evil",
        "Conflict",
        &["shop.test.org", "namespace a", "service/a/shop", HOSTNAME],
    )
    .await;
    println!("Conflict: {note}");
    // The Event comes after the sync that refused it was written: etcd is exactly as before.
    assert_eq!(keys_under(&etcd, "/skydns/").await, before);

    // b asks for the zone apex and the zone's name server (the NS and glue key space).
    create(
        &cluster,
        &service_in(
            "b",
            "apex",
            &[(HOSTNAME, "test.org,ns.dns.test.org"), (TARGET, "10.6.6.7")],
        ),
        None,
    )
    .await;
    let note = wait_event(
        &cluster,
        "b",
        "apex",
        "Rejected",
        &[
            HOSTNAME,
            "test.org is the apex",
            "ns.dns.test.org is under dns.test.org",
        ],
    )
    .await;
    println!("Rejected: {note}");
    assert_eq!(keys_under(&etcd, "/skydns/").await, before);
    assert!(records_of(&etcd, "test.org").await.is_empty());
    assert!(keys_under(&etcd, "/skydns/org/test/dns/").await.is_empty());
    let metrics = sync.get("/metrics").unwrap().body;
    for sample in [
        r#"groundwork_dns_sync_refusals{reason="conflict"} 1"#,
        r#"groundwork_dns_sync_refusals{reason="reserved"} 2"#,
    ] {
        assert!(metrics.contains(sample), "{sample} in {metrics}");
    }

    // With an allow-list for b, b publishes b.test.org and nothing else, and still not a's name.
    sync.process().stop(Duration::from_secs(5));
    let mut sync = start_sync_with(&cluster, &etcd, |s| s.namespace_domains("b=b.test.org"));
    sync.wait_ready(Duration::from_secs(20)).unwrap();
    create(
        &cluster,
        &service_in("b", "web", &[(HOSTNAME, "b.test.org,x.test.org")]),
        Some("10.10.39.201"),
    )
    .await;
    wait_hosts(&etcd, "b.test.org", OWNER, &["10.10.39.201"]).await;
    wait_event(
        &cluster,
        "b",
        "web",
        "Rejected",
        &[
            HOSTNAME,
            "x.test.org is outside what --namespace-domains allows namespace b: b.test.org",
        ],
    )
    .await;
    wait_event(
        &cluster,
        "b",
        "evil",
        "Rejected",
        &["shop.test.org is outside what --namespace-domains allows namespace b"],
    )
    .await;
    assert!(records_of(&etcd, "x.test.org").await.is_empty());
    let shop: Vec<(String, String, i64)> = keys_under(&etcd, "/skydns/org/test/shop/").await;
    let shop_before: Vec<(String, String, i64)> = before
        .iter()
        .filter(|(k, _, _)| k.starts_with("/skydns/org/test/shop/"))
        .cloned()
        .collect();
    assert_eq!(shop, shop_before, "a's records are untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_million_pair_object_is_capped_with_an_event_and_the_rest_keeps_syncing() {
    let (cluster, etcd, mut sync) = start_with_a_name_in_a("first", "10.10.39.210").await;
    let rss_before = rss_kib(sync.process().pid());

    let hostnames: Vec<String> = (0..1000).map(|i| format!("h{i}.test.org")).collect();
    let targets: Vec<String> = (0..1000)
        .map(|i| format!("10.20.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let (hostnames, targets) = (hostnames.join(","), targets.join(","));
    create(
        &cluster,
        &service_in("b", "huge", &[(HOSTNAME, &hostnames), (TARGET, &targets)]),
        None,
    )
    .await;
    let note = wait_event(
        &cluster,
        "b",
        "huge",
        "LimitExceeded",
        &[
            TARGET,
            "1000 targets, more than the limit of 100 (--max-targets-per-object)",
            HOSTNAME,
            "1000 host names, more than the limit of 100 (--max-names-per-object)",
        ],
    )
    .await;
    println!("LimitExceeded: {note}");

    // It keeps serving everybody else.
    create(
        &cluster,
        &service_in("a", "second", &[(HOSTNAME, "second.test.org")]),
        Some("10.10.39.211"),
    )
    .await;
    wait_hosts(&etcd, "second.test.org", OWNER, &["10.10.39.211"]).await;
    let keys = keys_under(&etcd, "/skydns/").await;
    assert_eq!(keys.len(), 2, "only first and second: {keys:?}");
    wait::until(
        "the limit to show in the metrics",
        Duration::from_secs(10),
        || async {
            let metrics = sync.get("/metrics")?.body;
            if metrics.contains(r#"groundwork_dns_sync_refusals{reason="limit"} 2"#) {
                Ok(())
            } else {
                Err(metrics)
            }
        },
    )
    .await
    .unwrap();
    let rss_after = rss_kib(sync.process().pid());
    println!("dns-sync resident memory: {rss_before} KiB before the object, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + 32 * 1024,
        "{rss_before} KiB -> {rss_after} KiB"
    );
}
