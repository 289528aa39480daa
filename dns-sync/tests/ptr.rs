//! PTR records (`--create-ptr`) against the real kube-apiserver, etcd, dns-server and CoreDNS: a Service's
//! address answers PTR with its names (dns-server all of them, CoreDNS the first, the only one it reads),
//! only inside the reverse zones given, and the records go when the Service does.

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use integration_tests::etcd::Etcd;
use integration_tests::kube::KubeCluster;
use integration_tests::launch::DnsServer;
use integration_tests::peers::CoreDns;
use integration_tests::{dig, process};
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::DeleteParams;

mod support;

use support::{OWNER, create_service, start_sync_with, wait_hosts};

const WAIT: Duration = Duration::from_secs(20);

/// Waits until `server` answers the PTR question for `name` with exactly `want`.
fn wait_ptr(server: std::net::SocketAddr, name: &str, want: &[&str]) {
    support::wait_answer(server, "PTR", name, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn addresses_in_a_reverse_zone_answer_ptr_with_their_names_until_the_service_goes() {
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start().await.unwrap();
    let mut sync = start_sync_with(&cluster, &etcd, |s| {
        s.zone("test.org").zone("10.in-addr.arpa").create_ptr()
    });
    sync.wait_ready(WAIT).unwrap();
    create_service(&cluster, "web", "web.test.org,www.test.org", "10.10.39.200").await;
    create_service(&cluster, "far", "far.test.org", "192.0.2.7").await;
    wait_hosts(
        &etcd,
        "200.39.10.10.in-addr.arpa",
        OWNER,
        &["web.test.org", "www.test.org"],
    )
    .await;

    let binary = process::workspace_binary("dns-server").unwrap();
    let (_ours, dns) = DnsServer::new(&binary, &etcd)
        .zone("10.in-addr.arpa")
        .transfer_allow("127.0.0.0/8")
        .serve()
        .unwrap();
    let coredns = CoreDns::start_with_etcd(&etcd, &["test.org", "10.in-addr.arpa"])
        .await
        .unwrap();
    wait_ptr(
        dns,
        "200.39.10.10.in-addr.arpa",
        &["web.test.org.", "www.test.org."],
    );
    // CoreDNS answers PTR only from the record at the reverse name's own key: the first name.
    wait_ptr(
        coredns.addr(),
        "200.39.10.10.in-addr.arpa",
        &["web.test.org."],
    );
    // The reverse zone transfers like any other, its PTR records included.
    let transfer = dig::transfer(dns, "10.in-addr.arpa", "AXFR", &[]).unwrap();
    let ptrs: Vec<String> = transfer
        .content()
        .into_iter()
        .filter(|r| r.contains(" PTR "))
        .collect();
    assert_eq!(
        ptrs,
        [
            "200.39.10.10.in-addr.arpa. PTR web.test.org.",
            "200.39.10.10.in-addr.arpa. PTR www.test.org."
        ],
        "{:?}",
        transfer.records
    );
    // 192.0.2.7 is in no reverse zone of ours: no record for it (nobody would serve it).
    let keys = support::keys_under(&etcd, "/skydns/arpa/in-addr/7").await;
    assert!(keys.is_empty(), "{keys:?}");

    Api::<Service>::namespaced(cluster.client(), "default")
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    wait_hosts(&etcd, "200.39.10.10.in-addr.arpa", OWNER, &[]).await;
    wait_ptr(dns, "200.39.10.10.in-addr.arpa", &[]);
}
