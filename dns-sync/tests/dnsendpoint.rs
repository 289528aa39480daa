//! The `DNSEndpoint` source (`--source crd`) against the real kube-apiserver (with external-dns's own CRD,
//! from its pinned module), etcd, dns-server and CoreDNS: every record type the skydns format expresses is
//! answered by both servers alike, what it cannot express is a Warning naming the field, and the records go
//! with the object.

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use dns_sync::dnsendpoint::DNSEndpoint;
use integration_tests::etcd::Etcd;
use integration_tests::kube::KubeCluster;
use integration_tests::launch::DnsServer;
use integration_tests::peers::CoreDns;
use integration_tests::{dig, process, wait};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

mod support;

use support::{
    OWNER, cluster_with_dns_endpoints, dns_endpoint, failed_start_log, keys_under, start_sync_with,
    sync_launcher, wait_answer, wait_event,
};

const WAIT: Duration = Duration::from_secs(20);

/// The sorted answer data of `server` for `name` `rtype`.
fn answers(server: SocketAddr, name: &str, rtype: &str) -> Result<Vec<String>, String> {
    let answer = dig::query(server, name, rtype, &[]).map_err(|e| e.to_string())?;
    Ok(answer.data_of(rtype))
}

/// Waits until `default/records` has generation `generation` and a status recording it.
async fn wait_observed(api: &Api<DNSEndpoint>, generation: i64) {
    wait::until(
        &format!("status.observedGeneration {generation}"),
        WAIT,
        || async {
            let object = api.get("records").await.map_err(|e| e.to_string())?;
            let observed = object.status.as_ref().and_then(|s| s.observed_generation);
            if object.metadata.generation == Some(generation) && observed == Some(generation) {
                Ok(())
            } else {
                Err(format!(
                    "generation {:?}, observed {observed:?}",
                    object.metadata.generation
                ))
            }
        },
    )
    .await
    .unwrap();
}

fn records() -> DNSEndpoint {
    dns_endpoint(
        "records",
        json!([
            {"dnsName": "web.test.org", "recordType": "A", "targets": ["192.0.2.10", "192.0.2.11"], "recordTTL": 60},
            {"dnsName": "web.test.org", "recordType": "AAAA", "targets": ["2001:db8::10"]},
            {"dnsName": "www.test.org", "recordType": "CNAME", "targets": ["web.test.org"]},
            {"dnsName": "corp.test.org", "recordType": "TXT", "targets": ["v=spf1 include:_spf.test.org -all"]},
            {"dnsName": "_sip._tcp.test.org", "recordType": "SRV", "targets": ["10 60 5060 sip.test.org"]},
            {"dnsName": "corp.test.org", "recordType": "MX", "targets": ["10 mail.test.org", "20 mail2.test.org"]},
            {"dnsName": "10.2.0.192.in-addr.arpa", "recordType": "PTR", "targets": ["web.test.org"]},
            {"dnsName": "sub.test.org", "recordType": "NS", "targets": ["ns1.other.org"]}
        ]),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_record_type_of_a_dns_endpoint_is_answered_alike_by_dns_server_and_coredns() {
    let cluster = cluster_with_dns_endpoints().await;
    let etcd = Etcd::start().await.unwrap();
    let mut sync = start_sync_with(&cluster, &etcd, |s| {
        s.source("crd")
            .domain_filter("2.0.192.in-addr.arpa")
            .zone("test.org")
            .zone("2.0.192.in-addr.arpa")
    });
    sync.wait_ready(WAIT).unwrap();
    let api: Api<DNSEndpoint> = Api::namespaced(cluster.client(), "default");
    api.create(&PostParams::default(), &records())
        .await
        .unwrap();

    let binary = process::workspace_binary("dns-server").unwrap();
    let (_ours, dns) = DnsServer::new(&binary, &etcd)
        .and_zone("2.0.192.in-addr.arpa")
        .serve()
        .unwrap();
    let coredns = CoreDns::start_with_etcd(&etcd, &["test.org", "2.0.192.in-addr.arpa"])
        .await
        .unwrap();
    let questions: [(&str, &str, &[&str]); 5] = [
        ("web.test.org", "A", &["192.0.2.10", "192.0.2.11"]),
        ("web.test.org", "AAAA", &["2001:db8::10"]),
        // The alias, followed to the addresses (CoreDNS reads only a name's own key for a CNAME question,
        // so that question is asked of dns-server alone, below).
        ("www.test.org", "A", &["192.0.2.10", "192.0.2.11"]),
        (
            "corp.test.org",
            "TXT",
            &["\"v=spf1 include:_spf.test.org -all\""],
        ),
        ("10.2.0.192.in-addr.arpa", "PTR", &["web.test.org."]),
    ];
    for (name, rtype, want) in questions {
        wait_answer(dns, rtype, name, want);
        wait_answer(coredns.addr(), rtype, name, want);
    }
    // SRV and MX from dns-server only: CoreDNS strips `targetstrip` labels from their targets (it serves
    // `sip.test.org` as `test.org`), which docs/dns-sync.md tells users. Weights are served as shares of
    // 100 within a priority, as CoreDNS serves skydns records.
    wait_answer(
        dns,
        "SRV",
        "_sip._tcp.test.org",
        &["10 100 5060 sip.test.org."],
    );
    wait_answer(
        dns,
        "MX",
        "corp.test.org",
        &["10 mail.test.org.", "20 mail2.test.org."],
    );
    wait_answer(dns, "CNAME", "www.test.org", &["web.test.org."]);
    let ttl = dig::query(dns, "web.test.org", "A", &[]).unwrap();
    assert!(
        ttl.raw.contains("\t60\tIN\tA\t192.0.2.10"),
        "recordTTL 60 is served: {}",
        ttl.raw
    );
    // NS cannot be expressed: a Warning names the entry's field, and nothing is written for it.
    wait_event(
        &cluster,
        "default",
        "records",
        "Rejected",
        &["spec.endpoints[7].recordType", "NS"],
    )
    .await;
    assert_eq!(
        answers(dns, "sub.test.org", "NS").unwrap(),
        Vec::<String>::new()
    );

    // status.observedGeneration follows each generation once its records are written, as external-dns
    // keeps it: here after an edit that adds a name.
    wait_observed(&api, 1).await;
    let mut edited = api.get("records").await.unwrap();
    edited.spec.endpoints[0].dns_name = "web2.test.org".to_owned();
    api.replace("records", &PostParams::default(), &edited)
        .await
        .unwrap();
    wait_answer(dns, "A", "web2.test.org", &["192.0.2.10", "192.0.2.11"]);
    wait_observed(&api, 2).await;

    api.delete("records", &DeleteParams::default())
        .await
        .unwrap();
    wait::until("the DNSEndpoint's records are gone", WAIT, || async {
        let left = keys_under(&etcd, "/skydns/").await;
        if left.iter().any(|(_, value, _)| value.contains(OWNER)) {
            Err(format!("{left:?}"))
        } else {
            Ok(())
        }
    })
    .await
    .unwrap();
    wait_answer(dns, "A", "web.test.org", &[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_crd_the_crd_source_stops_at_start_and_says_what_to_install() {
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start().await.unwrap();
    let log = failed_start_log(&sync_launcher(&cluster, &etcd).source("crd"));
    assert!(
        log.contains("--source crd: the apiserver does not serve dnsendpoints.externaldns.k8s.io"),
        "{log}"
    );
}
