//! The DNS peers we must stay compatible with, running for real: CoreDNS's etcd plugin serves skydns
//! records to `dig`, and external-dns's CoreDNS provider writes the record of an annotated LoadBalancer
//! Service into etcd. Records are built and read with `proto::skydns`, so these tests also pin our schema
//! to what the peers actually read and write.

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use etcd_client::GetOptions;
use integration_tests::dig;
use integration_tests::etcd::Etcd;
use integration_tests::kube::{KubeCluster, create_lb_service};
use integration_tests::peers::{CoreDns, external_dns_once};
use proto::skydns::{KeyLayout, SkydnsRecord, target_suffix};

async fn coredns_serves_a_record_written_in_our_schema(etcd: &Etcd) {
    let layout = KeyLayout::default();
    let key = layout
        .record_key(
            "nginx.test.org",
            &target_suffix("nginx.test.org", "10.10.39.200"),
        )
        .unwrap();
    let record = SkydnsRecord {
        host: "10.10.39.200".into(),
        ttl: 60,
        target_strip: 1,
        owner: "groundwork".into(),
        ..SkydnsRecord::default()
    };
    etcd.client()
        .await
        .unwrap()
        .put(key, record.to_json(), None)
        .await
        .unwrap();

    let coredns = CoreDns::start_with_etcd(etcd, &["test.org"]).await.unwrap();
    let answer = dig::query(coredns.addr(), "nginx.test.org", "A", &[]).unwrap();
    assert_eq!(answer.status, "NOERROR", "{}", answer.raw);
    assert!(answer.has_flag("aa"), "{}", answer.raw);
    assert_eq!(answer.data_of("A"), ["10.10.39.200"], "{}", answer.raw);
    assert_eq!(answer.answer[0].ttl, 60);

    let tcp = dig::query(coredns.addr(), "nginx.test.org", "A", &["+tcp"]).unwrap();
    assert_eq!(tcp.data_of("A"), ["10.10.39.200"], "{}", tcp.raw);

    let missing = dig::query(coredns.addr(), "absent.test.org", "A", &[]).unwrap();
    assert_eq!(missing.status, "NXDOMAIN", "{}", missing.raw);
}

#[tokio::test]
async fn coredns_serves_an_etcd_record_to_dig() {
    let etcd = Etcd::start().await.unwrap();
    coredns_serves_a_record_written_in_our_schema(&etcd).await;
}

#[tokio::test]
async fn coredns_serves_an_etcd_record_read_over_tls() {
    let etcd = Etcd::start_tls().await.unwrap();
    coredns_serves_a_record_written_in_our_schema(&etcd).await;
}

#[tokio::test]
async fn external_dns_once_writes_the_record_of_an_annotated_service_into_etcd() {
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start_tls().await.unwrap();
    create_lb_service(
        &cluster.client(),
        "default",
        "ingress-nginx",
        &[
            (
                "external-dns.alpha.kubernetes.io/hostname",
                "nginx.test.org",
            ),
            ("external-dns.alpha.kubernetes.io/ttl", "120"),
        ],
        "10.10.39.200",
    )
    .await
    .unwrap();

    let run = external_dns_once(
        cluster.kubeconfig(),
        &etcd,
        &[
            "--source=service",
            "--domain-filter=test.org",
            "--txt-owner-id=smoke",
        ],
    )
    .await
    .unwrap();

    let layout = KeyLayout::default();
    let directory = format!("{}/", layout.directory_of("nginx.test.org").unwrap());
    let stored = etcd
        .client()
        .await
        .unwrap()
        .get(directory.clone(), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let records: Vec<(String, SkydnsRecord)> = stored
        .kvs()
        .iter()
        .map(|kv| {
            let key = kv.key_str().unwrap().to_owned();
            let record = SkydnsRecord::from_etcd(&key, kv.value()).unwrap();
            (key, record)
        })
        .collect();
    let address: Vec<&(String, SkydnsRecord)> = records
        .iter()
        .filter(|(_, r)| r.host == "10.10.39.200")
        .collect();
    assert_eq!(
        address.len(),
        1,
        "records under {directory}: {records:?}\n{}",
        run.log
    );
    let (key, record) = address[0];
    assert_eq!(record.ttl, 120);
    assert_eq!(record.target_strip, 1);
    // One key per target, named by an 8-hex-digit label below the name's directory.
    let suffix = key.strip_prefix(&directory).unwrap();
    assert!(
        suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit()),
        "unexpected key {key}"
    );
    assert_eq!(
        layout.name_of(key).unwrap(),
        format!("{suffix}.nginx.test.org")
    );
}
