//! NodePort and headless Services (`--service-type-filter`) against the real kube-apiserver, etcd and
//! dns-server. No kubelet runs: the tests make the Node objects and EndpointSlices the cluster would (a
//! kubelet registering its node, the EndpointSlice controller following Pods), and `dig` asks dns-server for
//! the names.

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use integration_tests::daemon::Daemon;
use integration_tests::etcd::Etcd;
use integration_tests::kube::KubeCluster;
use integration_tests::peers::external_dns_once;
use integration_tests::wait;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::DeleteParams;
use proto::skydns::{KeyLayout, SkydnsRecord};

mod support;

use support::workloads::{
    PodEndpoint, create_default_service_account, create_node, create_pod, create_with_spec,
    delete_node, ready, set_endpoints,
};
use support::{HOSTNAME, OWNER, dns_server, start_sync_with, wait_answer, wait_event, wait_hosts};

const WAIT: Duration = Duration::from_secs(20);

/// dns-sync with `--service-type-filter service_type`, and dns-server for `test.org` over the same etcd.
fn start(cluster: &KubeCluster, etcd: &Etcd, service_type: &str) -> (Daemon, Daemon, SocketAddr) {
    let mut sync = start_sync_with(cluster, etcd, |s| s.service_type(service_type));
    sync.wait_ready(WAIT).unwrap();
    let (server, dns) = dns_server(etcd);
    (sync, server, dns)
}

/// Nodes n1 (internal and external IPv4), n2 (internal IPv4 and IPv6) and n3 (internal IPv4), and two
/// NodePort Services: `web.test.org`, and `intra.test.org` with `access: private`.
async fn nodes_and_node_port_services(cluster: &KubeCluster) {
    let nodes: [(&str, &[(&str, &str)]); 3] = [
        (
            "n1",
            &[("InternalIP", "10.0.0.1"), ("ExternalIP", "192.0.2.1")],
        ),
        (
            "n2",
            &[("InternalIP", "10.0.0.2"), ("InternalIP", "fd00::2")],
        ),
        ("n3", &[("InternalIP", "10.0.0.3")]),
    ];
    for (name, addresses) in nodes {
        create_node(cluster, name, addresses).await;
    }
    let port = serde_json::json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}]});
    let services = [
        ("web", serde_json::json!({HOSTNAME: "web.test.org"})),
        (
            "intra",
            serde_json::json!({HOSTNAME: "intra.test.org", "external-dns.alpha.kubernetes.io/access": "private"}),
        ),
    ];
    for (name, annotations) in services {
        create_with_spec(cluster, name, port.clone(), annotations).await;
    }
}

/// The endpoints of StatefulSet-like Service `db`: db-0 and db-1 ready, db-2 not, one a node.
fn db_endpoints() -> [PodEndpoint<'static>; 3] {
    [
        ready("db-0", "10.244.0.10", "n1"),
        ready("db-1", "10.244.0.11", "n2"),
        PodEndpoint {
            ready: false,
            ..ready("db-2", "10.244.0.12", "n3")
        },
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn node_port_services_answer_at_the_nodes_addresses_and_follow_the_nodes_and_local_endpoints()
{
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start().await.unwrap();
    let (_sync, _server, dns) = start(&cluster, &etcd, "NodePort");
    nodes_and_node_port_services(&cluster).await;
    // A node with an external IP: only external IPs are published (external-dns's rule).
    wait_answer(dns, "A", "web.test.org", &["192.0.2.1"]);
    // The SRV record of the port: priority 0 (served as 10, as CoreDNS does), the node port, the name.
    let web = Api::<Service>::namespaced(cluster.client(), "default")
        .get("web")
        .await
        .unwrap();
    let node_port = web.spec.unwrap().ports.unwrap()[0].node_port.unwrap();
    let srv = format!("10 100 {node_port} web.test.org.");
    wait_answer(dns, "SRV", "_web._tcp.web.test.org", &[&srv]);
    // `access: private`: every node's internal addresses, IPv6 as AAAA.
    wait_answer(
        dns,
        "A",
        "intra.test.org",
        &["10.0.0.1", "10.0.0.2", "10.0.0.3"],
    );
    wait_answer(dns, "AAAA", "intra.test.org", &["fd00::2"]);

    // The node with the external IP goes: no node has one any more, so the internal addresses answer.
    delete_node(&cluster, "n1").await;
    wait_answer(dns, "A", "web.test.org", &["10.0.0.2", "10.0.0.3"]);
    wait_answer(dns, "AAAA", "web.test.org", &["fd00::2"]);
    wait_answer(dns, "A", "intra.test.org", &["10.0.0.2", "10.0.0.3"]);

    // externalTrafficPolicy: Local: only the nodes with a ready endpoint of the Service.
    let local = serde_json::json!({
        "type": "NodePort", "externalTrafficPolicy": "Local", "ports": [{"name": "http", "port": 80}],
    });
    create_with_spec(
        &cluster,
        "local",
        local,
        serde_json::json!({HOSTNAME: "local.test.org"}),
    )
    .await;
    wait_event(
        &cluster,
        "default",
        "local",
        "WaitingForAddress",
        &["externalTrafficPolicy"],
    )
    .await;
    let not_ready = PodEndpoint {
        ready: false,
        ..ready("local-b", "10.244.3.1", "n3")
    };
    set_endpoints(
        &cluster,
        "local",
        &[ready("local-a", "10.244.2.1", "n2"), not_ready],
    )
    .await;
    wait_answer(dns, "A", "local.test.org", &["10.0.0.2"]);
    set_endpoints(
        &cluster,
        "local",
        &[
            ready("local-a", "10.244.2.1", "n2"),
            ready("local-b", "10.244.3.1", "n3"),
        ],
    )
    .await;
    wait_answer(dns, "A", "local.test.org", &["10.0.0.2", "10.0.0.3"]);

    // The Service goes, and its names with it.
    Api::<Service>::namespaced(cluster.client(), "default")
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    wait_hosts(&etcd, "web.test.org", OWNER, &[]).await;
    wait_answer(dns, "A", "web.test.org", &[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn headless_services_answer_for_each_ready_pod_and_for_the_set_of_them() {
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start().await.unwrap();
    let (_sync, _server, dns) = start(&cluster, &etcd, "ClusterIP");
    let headless = serde_json::json!({"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]});
    create_with_spec(
        &cluster,
        "db",
        headless.clone(),
        serde_json::json!({HOSTNAME: "db.test.org"}),
    )
    .await;
    // No endpoints yet: a Normal Event, nothing published.
    wait_event(
        &cluster,
        "default",
        "db",
        "WaitingForAddress",
        &["EndpointSlice"],
    )
    .await;
    assert_event_type(&cluster, "db", "WaitingForAddress", "Normal").await;

    set_endpoints(&cluster, "db", &db_endpoints()).await;
    wait_answer(dns, "A", "db.test.org", &["10.244.0.10", "10.244.0.11"]);
    wait_answer(dns, "A", "db-0.db.test.org", &["10.244.0.10"]);
    wait_answer(dns, "A", "db-1.db.test.org", &["10.244.0.11"]);
    // The not-ready Pod has no name and is not in the set.
    wait_answer(dns, "A", "db-2.db.test.org", &[]);

    // db-1 goes away (its endpoint leaves the slice) and db-2 becomes ready.
    set_endpoints(
        &cluster,
        "db",
        &[
            ready("db-0", "10.244.0.10", "n1"),
            ready("db-2", "10.244.0.12", "n1"),
        ],
    )
    .await;
    wait_answer(dns, "A", "db.test.org", &["10.244.0.10", "10.244.0.12"]);
    wait_answer(dns, "A", "db-2.db.test.org", &["10.244.0.12"]);
    wait_answer(dns, "A", "db-1.db.test.org", &[]);
    wait_hosts(&etcd, "db-1.db.test.org", OWNER, &[]).await;

    // A value external-dns does not know is a Warning naming the annotation; the Pod IPs still answer.
    create_with_spec(
        &cluster,
        "cache",
        headless,
        serde_json::json!({HOSTNAME: "cache.test.org", "external-dns.alpha.kubernetes.io/endpoints-type": "Pod"}),
    )
    .await;
    set_endpoints(&cluster, "cache", &[ready("cache-0", "10.244.1.10", "n1")]).await;
    wait_answer(dns, "A", "cache-0.cache.test.org", &["10.244.1.10"]);
    wait_event(
        &cluster,
        "default",
        "cache",
        "Rejected",
        &["external-dns.alpha.kubernetes.io/endpoints-type", "\"Pod\""],
    )
    .await;
    assert_event_type(&cluster, "cache", "Rejected", "Warning").await;
}

/// Every Event of `reason` on Service `default/name` is of type `kind`.
async fn assert_event_type(cluster: &KubeCluster, name: &str, reason: &str, kind: &str) {
    let events = support::events_with_type(cluster, "default", name).await;
    let types: Vec<&str> = events
        .iter()
        .filter(|(_, r, _)| r == reason)
        .map(|(t, _, _)| t.as_str())
        .collect();
    assert!(
        !types.is_empty() && types.iter().all(|t| *t == kind),
        "{events:?}"
    );
}

/// Every (name, data) of the address and SRV records (not TXT: external-dns's registry) under `/skydns`
/// in `etcd`, sorted.
async fn records_in(etcd: &Etcd) -> Vec<(String, String)> {
    let layout = KeyLayout::default();
    let mut found: Vec<(String, String)> = support::keys_under(etcd, "/skydns/")
        .await
        .into_iter()
        .filter_map(|(key, value, _)| {
            let record = SkydnsRecord::from_etcd(&key, value.as_bytes()).ok()?;
            if !record.text.is_empty() {
                return None;
            }
            let name = layout.name_of(&key)?;
            let strip = usize::try_from(record.target_strip).ok()?;
            let name = name.splitn(strip + 1, '.').last()?.to_owned();
            let data = if record.port == 0 {
                record.host
            } else {
                let (priority, weight) = (record.priority, record.weight);
                format!("SRV {priority} {weight} {} {}", record.port, record.host)
            };
            Some((name, data))
        })
        .collect();
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn node_port_and_headless_services_get_the_records_external_dns_gives_them() {
    let cluster = KubeCluster::start().await.unwrap();
    let ours = Etcd::start().await.unwrap();
    let theirs = Etcd::start().await.unwrap();
    create_default_service_account(&cluster).await;
    nodes_and_node_port_services(&cluster).await;
    let local = serde_json::json!({
        "type": "NodePort", "externalTrafficPolicy": "Local", "selector": {"app": "local"},
        "ports": [{"name": "http", "port": 80}],
    });
    create_with_spec(
        &cluster,
        "local",
        local,
        serde_json::json!({HOSTNAME: "local.test.org"}),
    )
    .await;
    create_pod(&cluster, "local-a", "local", "n2", "10.244.2.1", true).await;
    create_pod(&cluster, "local-b", "local", "n3", "10.244.3.1", false).await;
    let local_b = PodEndpoint {
        ready: false,
        hostname: None,
        ..ready("local-b", "10.244.3.1", "n3")
    };
    let local_a = PodEndpoint {
        hostname: None,
        ..ready("local-a", "10.244.2.1", "n2")
    };
    set_endpoints(&cluster, "local", &[local_a, local_b]).await;

    let headless = serde_json::json!({"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]});
    create_with_spec(
        &cluster,
        "db",
        headless,
        serde_json::json!({HOSTNAME: "db.test.org"}),
    )
    .await;
    create_pod(&cluster, "db-0", "db", "n1", "10.244.0.10", true).await;
    create_pod(&cluster, "db-1", "db", "n2", "10.244.0.11", true).await;
    create_pod(&cluster, "db-2", "db", "n3", "10.244.0.12", false).await;
    set_endpoints(&cluster, "db", &db_endpoints()).await;

    external_dns_once(
        cluster.kubeconfig(),
        &theirs,
        &[
            "--source=service",
            "--domain-filter=test.org",
            "--service-type-filter=NodePort",
            "--service-type-filter=ClusterIP",
            // Without SRV here external-dns drops its NodePort SRV records (the default is A, AAAA, CNAME).
            "--managed-record-types=A",
            "--managed-record-types=AAAA",
            "--managed-record-types=CNAME",
            "--managed-record-types=SRV",
        ],
    )
    .await
    .unwrap();
    let written = records_in(&theirs).await;
    println!("external-dns wrote {written:?}");
    // web 1, intra 4 (two families), local 2 (node n2's only), db 2 and one per ready Pod; one SRV record
    // for each NodePort Service.
    assert_eq!(written.len(), 11 + 3, "{written:?}");
    // Its CoreDNS provider stores an SRV target whole in `host` ("0 50 31234 web.test.org", no `port`), which
    // CoreDNS cannot serve as SRV; dns-sync writes the SRV fields. Compared as what external-dns meant.
    let want: Vec<(String, String)> = written
        .into_iter()
        .map(|(name, data)| {
            if name.starts_with('_') {
                assert!(!data.starts_with("SRV"), "{name}: {data}");
                (name, format!("SRV {data}"))
            } else {
                (name, data)
            }
        })
        .collect();

    let mut sync = start_sync_with(&cluster, &ours, |s| {
        s.service_type("NodePort").service_type("ClusterIP")
    });
    sync.wait_ready(WAIT).unwrap();
    wait::until("the same address records as external-dns", WAIT, || async {
        let got = records_in(&ours).await;
        if got == want {
            Ok(())
        } else {
            Err(format!("ours {got:?}\ntheirs {want:?}"))
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn by_default_external_name_services_are_a_cname_and_node_ports_wait_for_the_filter() {
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start().await.unwrap();
    let mut sync = start_sync_with(&cluster, &etcd, |s| s);
    sync.wait_ready(WAIT).unwrap();
    let (_server, dns) = dns_server(&etcd);
    create_node(&cluster, "n1", &[("InternalIP", "10.0.0.1")]).await;
    let port = serde_json::json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}]});
    create_with_spec(
        &cluster,
        "web",
        port,
        serde_json::json!({HOSTNAME: "web.test.org"}),
    )
    .await;
    let external = serde_json::json!({"type": "ExternalName", "externalName": "db.example.org"});
    create_with_spec(
        &cluster,
        "db",
        external,
        serde_json::json!({HOSTNAME: "db.test.org"}),
    )
    .await;
    wait_answer(dns, "CNAME", "db.test.org", &["db.example.org."]);
    // Synced after the NodePort Service was created: without the filter it asks for nothing.
    wait_hosts(&etcd, "web.test.org", OWNER, &[]).await;
    assert!(
        support::keys_under(&etcd, "/skydns/org/test/_web")
            .await
            .is_empty()
    );
}
