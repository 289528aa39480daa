//! dns-sync against the real kube-apiserver and a real TLS etcd: objects become records and follow every
//! change, only our own keys are ever touched, bad input is reported as Events, records are served by the
//! real CoreDNS, external-dns can run beside us or be migrated from, and outages lose nothing.

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use integration_tests::daemon::Daemon;
use integration_tests::etcd::Etcd;
use integration_tests::kube::KubeCluster;
use integration_tests::peers::{CoreDns, external_dns_once};
use integration_tests::{dig, wait};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use proto::skydns::KeyLayout;

mod support;

use support::{
    OWNER, create_service, events_for, events_with_type, records_of, service, set_service_ip,
    start_sync, start_sync_with, wait_event, wait_hosts, wait_rejected,
};

/// One pass of external-dns over the Services of `test.org`, with `owner` (a `--txt-owner-id=` flag).
async fn run_external_dns(cluster: &KubeCluster, etcd: &Etcd, owner: &str) {
    external_dns_once(
        cluster.kubeconfig(),
        etcd,
        &["--source=service", "--domain-filter=test.org", owner],
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn services_and_ingresses_become_records_that_follow_changes_and_foreign_keys_stay() {
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start_tls().await.unwrap();
    let foreign = "/skydns/org/test/nginx/0badf00d";
    etcd.client()
        .await
        .unwrap()
        .put(
            foreign,
            r#"{"host":"10.9.9.9","targetstrip":1,"owner":"someone-else"}"#,
            None,
        )
        .await
        .unwrap();
    let mut sync = start_sync(&cluster, &etcd);
    sync.wait_ready(Duration::from_secs(20)).unwrap();

    create_service(&cluster, "ingress-nginx", "lb.test.org", "10.10.39.200").await;
    let took = wait_hosts(&etcd, "lb.test.org", OWNER, &["10.10.39.200"]).await;
    println!(
        "service status -> etcd record in {:.0} ms (including the test's polling)",
        took.as_secs_f64() * 1e3
    );

    let ingress: Ingress = serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "nginx", "namespace": "default"},
        "spec": {"rules": [{"host": "nginx.test.org"}, {"host": "*.apps.test.org"}]},
    }))
    .unwrap();
    let ingresses: Api<Ingress> = Api::namespaced(cluster.client(), "default");
    ingresses
        .create(&PostParams::default(), &ingress)
        .await
        .unwrap();
    let status =
        serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": "10.10.39.200"}]}}});
    ingresses
        .patch_status("nginx", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    wait_hosts(&etcd, "nginx.test.org", OWNER, &["10.10.39.200"]).await;
    wait_hosts(&etcd, "*.apps.test.org", OWNER, &["10.10.39.200"]).await;
    let (_, record, _) = records_of(&etcd, "nginx.test.org")
        .await
        .into_iter()
        .find(|(_, r, _)| r.owner == OWNER)
        .unwrap();
    assert_eq!(record.resource, "ingress/default/nginx");
    assert_eq!(record.target_strip, 1);

    // The real CoreDNS serves what we wrote, next to the foreign record for the same name.
    let coredns = CoreDns::start_with_etcd(&etcd, &["test.org"])
        .await
        .unwrap();
    let answer = dig::query(coredns.addr(), "nginx.test.org", "A", &[]).unwrap();
    assert_eq!(
        answer.data_of("A"),
        ["10.10.39.200", "10.9.9.9"],
        "{}",
        answer.raw
    );

    set_service_ip(&cluster, "ingress-nginx", "10.10.39.201").await;
    wait_hosts(&etcd, "lb.test.org", OWNER, &["10.10.39.201"]).await;

    ingresses
        .delete("nginx", &DeleteParams::default())
        .await
        .unwrap();
    wait_hosts(&etcd, "nginx.test.org", OWNER, &[]).await;
    wait_hosts(&etcd, "*.apps.test.org", OWNER, &[]).await;
    let left = records_of(&etcd, "nginx.test.org").await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].0, foreign, "the foreign key is untouched");

    let events = events_for(&cluster, "ingress-nginx").await;
    assert!(
        events
            .iter()
            .any(|(reason, note)| reason == "Published" && note.contains("lb.test.org")),
        "{events:?}"
    );
    let metrics = sync.get("/metrics").unwrap().body;
    assert!(
        metrics.contains("groundwork_dns_sync_records_managed 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_names_are_reported_as_events_and_the_rest_syncs() {
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start().await.unwrap();
    let mut sync = start_sync(&cluster, &etcd);
    sync.wait_ready(Duration::from_secs(20)).unwrap();
    // First without an address: told so by a Normal Event (a new LoadBalancer Service has none until the
    // controller assigns one; nothing to fix), never a Warning. Then the bad name is a Rejected Warning.
    Api::<Service>::namespaced(cluster.client(), "default")
        .create(
            &PostParams::default(),
            &service(
                "mixed",
                "good.test.org,bad_name.test.org,elsewhere.example.com",
            ),
        )
        .await
        .unwrap();
    let waiting = wait_event(
        &cluster,
        "default",
        "mixed",
        "WaitingForAddress",
        &["status.loadBalancer.ingress", "no address"],
    )
    .await;
    assert!(!waiting.contains("bad_name"), "{waiting}");
    set_service_ip(&cluster, "mixed", "10.10.39.210").await;
    wait_hosts(&etcd, "good.test.org", OWNER, &["10.10.39.210"]).await;
    // Everything the first sync told is posted by now.
    let events = events_with_type(&cluster, "default", "mixed").await;
    assert!(
        !events
            .iter()
            .any(|(kind, _, note)| kind == "Warning" && note.contains("no address")),
        "a Service waiting for its address must not be warned about: {events:?}"
    );
    wait_rejected(
        &cluster,
        "mixed",
        &[
            "external-dns.alpha.kubernetes.io/hostname",
            "bad_name.test.org",
            "--domain-filter",
        ],
    )
    .await;
    assert!(records_of(&etcd, "bad_name.test.org").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn external_dns_and_dns_sync_on_one_cluster_keep_to_their_own_records() {
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start().await.unwrap();
    create_service(&cluster, "theirs", "theirs.test.org", "10.10.39.220").await;
    run_external_dns(&cluster, &etcd, "--txt-owner-id=extdns").await;
    let theirs_before = records_of(&etcd, "theirs.test.org").await;
    assert_eq!(theirs_before.len(), 1, "{theirs_before:?}");

    let mut sync = start_sync_with(&cluster, &etcd, |s| s.annotation_filter("sync=gw"));
    sync.wait_ready(Duration::from_secs(20)).unwrap();
    let api: Api<Service> = Api::namespaced(cluster.client(), "default");
    let mut ours = service("ours", "ours.test.org");
    ours.metadata
        .annotations
        .get_or_insert_default()
        .insert("sync".into(), "gw".into());
    api.create(&PostParams::default(), &ours).await.unwrap();
    set_service_ip(&cluster, "ours", "10.10.39.221").await;
    wait_hosts(&etcd, "ours.test.org", OWNER, &["10.10.39.221"]).await;

    // external-dns runs again and keeps its own; dns-sync never touched external-dns's key.
    run_external_dns(&cluster, &etcd, "--txt-owner-id=extdns").await;
    assert_eq!(records_of(&etcd, "theirs.test.org").await, theirs_before);
    wait_hosts(&etcd, "ours.test.org", OWNER, &["10.10.39.221"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn records_written_by_external_dns_are_adopted_in_place() {
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start().await.unwrap();
    create_service(&cluster, "ingress-nginx", "nginx.test.org", "10.10.39.200").await;
    run_external_dns(&cluster, &etcd, "--txt-owner-id=default").await;
    let before = records_of(&etcd, "nginx.test.org").await;
    let (key, record, created) = before
        .iter()
        .find(|(_, r, _)| r.host == "10.10.39.200")
        .cloned()
        .unwrap();
    assert_eq!(record.owner, "", "external-dns v0.20 writes no owner");

    // external-dns v0.20 writes no owner, so an empty --adopt-owner takes over unowned records.
    let mut sync = start_sync_with(&cluster, &etcd, |s| s.adopt_owner(""));
    sync.wait_ready(Duration::from_secs(20)).unwrap();
    wait_hosts(&etcd, "nginx.test.org", OWNER, &["10.10.39.200"]).await;
    let after = records_of(&etcd, "nginx.test.org").await;
    let adopted = after
        .iter()
        .find(|(k, _, _)| *k == key)
        .expect("same key kept");
    assert_eq!(adopted.1.owner, OWNER);
    assert_eq!(adopted.2, created, "never deleted and re-created");
    assert_eq!(
        after
            .iter()
            .filter(|(_, r, _)| r.host == "10.10.39.200")
            .count(),
        1,
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_etcd_outage_in_the_middle_of_changes_loses_nothing() {
    let cluster = KubeCluster::start().await.unwrap();
    let mut etcd = Etcd::start_tls().await.unwrap();
    let mut sync = start_sync(&cluster, &etcd);
    sync.wait_ready(Duration::from_secs(20)).unwrap();
    create_service(&cluster, "before", "before.test.org", "10.10.39.230").await;
    wait_hosts(&etcd, "before.test.org", OWNER, &["10.10.39.230"]).await;

    etcd.kill();
    create_service(&cluster, "during", "during.test.org", "10.10.39.231").await;
    let api: Api<Service> = Api::namespaced(cluster.client(), "default");
    api.delete("before", &DeleteParams::default())
        .await
        .unwrap();
    etcd.start_again().await.unwrap();

    wait_hosts(&etcd, "during.test.org", OWNER, &["10.10.39.231"]).await;
    wait_hosts(&etcd, "before.test.org", OWNER, &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_replica_takes_over_when_the_leader_dies() {
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start().await.unwrap();
    let mut first = start_sync_with(&cluster, &etcd, |s| s.leader_elect().pod_name("first"));
    first.wait_ready(Duration::from_secs(20)).unwrap();
    let mut second = start_sync_with(&cluster, &etcd, |s| s.leader_elect().pod_name("second"));
    second.wait_ready(Duration::from_secs(20)).unwrap();
    create_service(&cluster, "one", "one.test.org", "10.10.39.240").await;
    wait_hosts(&etcd, "one.test.org", OWNER, &["10.10.39.240"]).await;

    let leader_is = |daemon: &Daemon| {
        daemon
            .get("/metrics")
            .unwrap()
            .body
            .contains("groundwork_dns_sync_leader 1")
    };
    let (leader, standby) = if leader_is(&first) {
        (&mut first, &mut second)
    } else {
        (&mut second, &mut first)
    };
    assert!(!leader_is(standby), "exactly one leader");
    leader.process().kill();
    let killed = Instant::now();
    create_service(&cluster, "two", "two.test.org", "10.10.39.241").await;
    wait::until(
        "the standby to write two.test.org",
        Duration::from_secs(40),
        || async {
            let hosts: Vec<String> = records_of(&etcd, "two.test.org")
                .await
                .into_iter()
                .map(|(_, r, _)| r.host)
                .collect();
            if hosts == ["10.10.39.241"] {
                Ok(())
            } else {
                Err(format!("{hosts:?}"))
            }
        },
    )
    .await
    .unwrap();
    println!(
        "standby took over and wrote after {:.1} s (lease 15 s)",
        killed.elapsed().as_secs_f64()
    );
    assert!(leader_is(standby));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_apiserver_outage_deletes_nothing_and_changes_after_it_are_synced() {
    let mut cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start().await.unwrap();
    // A short resync interval, so syncs run while the API server is down.
    let mut sync = start_sync_with(&cluster, &etcd, |s| s.interval(Duration::from_millis(500)));
    sync.wait_ready(Duration::from_secs(20)).unwrap();
    create_service(&cluster, "kept", "kept.test.org", "10.10.39.250").await;
    wait_hosts(&etcd, "kept.test.org", OWNER, &["10.10.39.250"]).await;

    cluster.kill_apiserver();
    // Several resyncs while the API is unreachable: the record must stay.
    wait::until(
        "dns-sync to notice the outage",
        Duration::from_secs(20),
        || async {
            let metrics = sync.get("/metrics")?.body;
            if metrics.contains("groundwork_dns_sync_errors_total 0")
                && !sync.get("/readyz")?.body.contains("deferred")
            {
                Err("no sign of the outage yet".to_owned())
            } else {
                Ok(())
            }
        },
    )
    .await
    .ok();
    let during = records_of(&etcd, "kept.test.org").await;
    assert_eq!(
        during.len(),
        1,
        "nothing deleted while the API server is down: {during:?}"
    );

    cluster.start_apiserver().await.unwrap();
    let api: Api<Service> = Api::namespaced(cluster.client(), "default");
    api.delete("kept", &DeleteParams::default()).await.unwrap();
    create_service(&cluster, "after", "after.test.org", "10.10.39.251").await;
    wait_hosts(&etcd, "after.test.org", OWNER, &["10.10.39.251"]).await;
    wait_hosts(&etcd, "kept.test.org", OWNER, &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_deleted_by_hand_is_restored_by_the_periodic_resync() {
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start().await.unwrap();
    let mut sync = start_sync_with(&cluster, &etcd, |s| s.interval(Duration::from_secs(1)));
    sync.wait_ready(Duration::from_secs(20)).unwrap();
    create_service(&cluster, "drift", "drift.test.org", "10.10.39.252").await;
    wait_hosts(&etcd, "drift.test.org", OWNER, &["10.10.39.252"]).await;
    let dir = format!(
        "{}/",
        KeyLayout::default().directory_of("drift.test.org").unwrap()
    );
    etcd.client()
        .await
        .unwrap()
        .delete(dir, Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    wait_hosts(&etcd, "drift.test.org", OWNER, &["10.10.39.252"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn once_and_dry_run_do_one_pass_and_dry_run_writes_nothing() {
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start().await.unwrap();
    create_service(&cluster, "single", "single.test.org", "10.10.39.253").await;

    let mut dry = start_sync_with(&cluster, &etcd, |s| s.once().dry_run());
    let status = dry
        .process()
        .wait_exit(Duration::from_secs(30))
        .expect("--once exits");
    assert!(status.success(), "{}", dry.process().log_tail(20));
    let log = std::fs::read_to_string(dry.process().log_path()).unwrap();
    assert!(
        log.contains("would create") && log.contains("/skydns/org/test/single/"),
        "{log}"
    );
    assert!(records_of(&etcd, "single.test.org").await.is_empty());

    let mut once = start_sync_with(&cluster, &etcd, |s| s.once());
    let status = once
        .process()
        .wait_exit(Duration::from_secs(30))
        .expect("--once exits");
    assert!(status.success(), "{}", once.process().log_tail(20));
    wait_hosts(&etcd, "single.test.org", OWNER, &["10.10.39.253"]).await;
}
