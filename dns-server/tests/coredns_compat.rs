//! Differential test: the same etcd contents served by CoreDNS (etcd plugin, built from its Go module) and
//! by dns-server, asked the same questions with `dig`. Where CoreDNS is right the answers must match; each
//! deliberate difference (`docs/dns-compat.md`) is asserted here too, so the document cannot drift from the
//! behaviour.

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use integration_tests::dig::{self, Answer};
use integration_tests::etcd::Etcd;
use integration_tests::launch::DnsServer;
use integration_tests::peers::CoreDns;

/// Records as external-dns and CoreDNS users write them.
const RECORDS: &[(&str, &str)] = &[
    // external-dns: one key per target, 8-hex suffix, targetstrip 1.
    (
        "/skydns/org/test/nginx/1a2b3c4d",
        r#"{"host":"10.10.39.200","ttl":60,"targetstrip":1}"#,
    ),
    (
        "/skydns/org/test/nginx/2b3c4d5e",
        r#"{"host":"10.10.39.201","ttl":60,"targetstrip":1}"#,
    ),
    (
        "/skydns/org/test/nginx/3c4d5e6f",
        r#"{"host":"fd10:10::39:200","ttl":60,"targetstrip":1}"#,
    ),
    // external-dns's TXT registry record.
    (
        "/skydns/org/test/a-nginx/4d5e6f70",
        r#"{"text":"\"heritage=external-dns,external-dns/owner=default\"","targetstrip":1}"#,
    ),
    // CoreDNS documentation style: the name's own key, and several leaves below a name.
    (
        "/skydns/org/test/www",
        r#"{"host":"10.10.39.210","ttl":120}"#,
    ),
    ("/skydns/org/test/multi/x1", r#"{"host":"10.10.39.211"}"#),
    ("/skydns/org/test/multi/x2", r#"{"host":"10.10.39.212"}"#),
    ("/skydns/org/test/alias", r#"{"host":"www.test.org"}"#),
    (
        "/skydns/org/test/_http/_tcp/web/x1",
        r#"{"host":"10.10.39.213","port":8080}"#,
    ),
    (
        "/skydns/org/test/mail/x1",
        r#"{"host":"mx.test.org","mail":true,"priority":5}"#,
    ),
    ("/skydns/org/test/mx", r#"{"host":"10.10.39.214"}"#),
    // Shapes where CoreDNS is wrong.
    (
        "/skydns/org/test/deep/y/x/00000001",
        r#"{"host":"10.10.39.215"}"#,
    ),
    (
        "/skydns/org/test/apps/*/00000002",
        r#"{"host":"10.10.39.216","targetstrip":1}"#,
    ),
    (
        "/skydns/org/test/labelled",
        r#"{"host":"www.test.org","text":"a cname with a note"}"#,
    ),
    (
        "/skydns/org/test/broken/00000003",
        r#"{"host":"10.10.39.217"}"#,
    ),
    ("/skydns/org/test/broken/00000004", "{not json"),
];

struct Pair {
    coredns: SocketAddr,
    ours: SocketAddr,
}

impl Pair {
    fn ask(&self, name: &str, rtype: &str) -> (Answer, Answer) {
        (
            dig::query(self.coredns, name, rtype, &[]).unwrap(),
            dig::query(self.ours, name, rtype, &[]).unwrap(),
        )
    }
}

/// What must agree: the code, AA, and the answer records (owner, TTL, type, data) as a set.
fn comparable(answer: &Answer) -> (String, bool, Vec<String>) {
    (
        answer.status.clone(),
        answer.has_flag("aa"),
        answer.records(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_match_coredns_where_it_is_right_and_differ_only_as_documented() {
    let etcd = Etcd::start_tls().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    for (key, value) in RECORDS {
        client.put(*key, *value, None).await.unwrap();
    }
    let coredns = CoreDns::start_with_etcd(&etcd, &["test.org"])
        .await
        .unwrap();
    let (mut ours, dns) = DnsServer::new(env!("CARGO_BIN_EXE_dns-server"), &etcd)
        .serve()
        .unwrap();
    ours.wait_ready(Duration::from_secs(10)).unwrap();
    let pair = Pair {
        coredns: coredns.addr(),
        ours: dns,
    };

    let same = [
        ("nginx.test.org", "A"),
        ("nginx.test.org", "AAAA"),
        ("NGINX.Test.Org", "A"),
        ("a-nginx.test.org", "TXT"),
        ("www.test.org", "A"),
        ("www.test.org", "AAAA"),
        ("multi.test.org", "A"),
        ("x1.multi.test.org", "A"),
        ("alias.test.org", "A"),
        ("alias.test.org", "CNAME"),
        ("web._tcp._http.test.org", "SRV"),
        ("mail.test.org", "MX"),
        ("absent.test.org", "A"),
        ("absent.test.org", "TXT"),
    ];
    for (name, rtype) in same {
        let (theirs, ours) = pair.ask(name, rtype);
        assert_eq!(
            comparable(&ours),
            comparable(&theirs),
            "{name} {rtype}\n--- CoreDNS:\n{}\n--- dns-server:\n{}",
            theirs.raw,
            ours.raw
        );
        let has_soa = |a: &Answer| a.authority.iter().any(|r| r.rtype == "SOA");
        assert_eq!(
            has_soa(&ours),
            has_soa(&theirs),
            "{name} {rtype}: SOA in authority"
        );
    }

    // Documented differences (docs/dns-compat.md), each checked both ways.
    // 1. A name's records do not include deeper names' records.
    let (theirs, ours) = pair.ask("deep.test.org", "A");
    assert_eq!(theirs.data_of("A"), ["10.10.39.215"]);
    assert!(
        ours.answer.is_empty() && ours.status == "NOERROR",
        "{}",
        ours.raw
    );
    // 2. The apex is not the union of the zone. CoreDNS reads the whole zone for it, and so also trips
    // over the one bad value below (difference 5).
    let (theirs, ours) = pair.ask("test.org", "A");
    assert_eq!(theirs.status, "SERVFAIL", "{}", theirs.raw);
    assert_eq!(ours.status, "NOERROR", "{}", ours.raw);
    assert!(ours.data_of("A").is_empty(), "{}", ours.raw);
    // 3. A stored `*` is a wildcard.
    let (theirs, ours) = pair.ask("shop.apps.test.org", "A");
    assert_eq!(theirs.status, "NXDOMAIN");
    assert_eq!(ours.data_of("A"), ["10.10.39.216"], "{}", ours.raw);
    // 4. A name-valued host with text is a CNAME, also for A questions.
    let (theirs, ours) = pair.ask("labelled.test.org", "A");
    assert!(theirs.answer.is_empty(), "{}", theirs.raw);
    assert_eq!(ours.data_of("CNAME"), ["www.test.org."], "{}", ours.raw);
    assert_eq!(ours.data_of("A"), ["10.10.39.210"], "{}", ours.raw);
    // 5. One bad value spoils only itself, not the whole answer.
    let (theirs, ours) = pair.ask("broken.test.org", "A");
    assert_eq!(theirs.status, "SERVFAIL");
    assert_eq!(ours.data_of("A"), ["10.10.39.217"], "{}", ours.raw);
    // 6. SOA only at the apex, with a serial from etcd revisions that holds still.
    let (theirs, ours) = pair.ask("www.test.org", "SOA");
    assert_eq!(theirs.data_of("SOA").len(), 1);
    assert!(
        ours.answer.is_empty() && ours.authority[0].rtype == "SOA",
        "{}",
        ours.raw
    );
    let serial = |a: &Answer| {
        a.answer[0]
            .data
            .split_whitespace()
            .nth(2)
            .unwrap()
            .to_owned()
    };
    let first = dig::query(pair.ours, "test.org", "SOA", &[]).unwrap();
    let revision = client
        .get("/skydns/org/test/broken/00000004", None)
        .await
        .unwrap()
        .kvs()[0]
        .mod_revision();
    assert_eq!(
        serial(&first),
        revision.to_string(),
        "serial = last change in the zone"
    );
    // 7. ANY gets an answer (RFC 8482 minimal), not NODATA.
    let (theirs, ours) = pair.ask("www.test.org", "ANY");
    assert!(theirs.answer.is_empty());
    assert_eq!(ours.data_of("A"), ["10.10.39.210"], "{}", ours.raw);
}
