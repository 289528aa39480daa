//! dns-server against the real etcd (TLS, as deployed) and the real `dig`: what it answers, how fast it
//! follows changes, and that it keeps answering while etcd is down.

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use integration_tests::daemon::Daemon;
use integration_tests::dig;
use integration_tests::etcd::Etcd;
use integration_tests::launch::DnsServer;
use integration_tests::wait;

/// A dns-server for `test.org` reading `etcd` (with its TLS client files), started and ready.
struct Server {
    daemon: Daemon,
    dns: SocketAddr,
}

fn start(etcd: &Etcd) -> Server {
    let mut daemon = DnsServer::new(env!("CARGO_BIN_EXE_dns-server"), etcd)
        .start()
        .unwrap();
    let dns = daemon
        .logged_addr("dns_addr", Duration::from_secs(10))
        .unwrap();
    Server { daemon, dns }
}

async fn put(etcd: &Etcd, key: &str, value: &str) {
    etcd.client()
        .await
        .unwrap()
        .put(key, value, None)
        .await
        .unwrap();
}

async fn wait_for_answer(server: SocketAddr, name: &str, rtype: &str, want: &[&str]) -> Duration {
    let start = Instant::now();
    let want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
    wait::until(
        &format!("{name} {rtype} = {want:?}"),
        Duration::from_secs(10),
        || {
            let want = want.clone();
            async move {
                let answer = dig::query(server, name, rtype, &[]).map_err(|e| e.to_string())?;
                let got = answer.data_of(rtype);
                if got == want {
                    Ok(())
                } else {
                    Err(format!("{} {got:?}", answer.status))
                }
            }
        },
    )
    .await
    .unwrap();
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_etcd_records_over_udp_and_tcp_authoritatively_and_refuses_other_zones() {
    let etcd = Etcd::start_tls().await.unwrap();
    put(
        &etcd,
        "/skydns/org/test/nginx/1a2b3c4d",
        r#"{"host":"10.10.39.200","ttl":60,"targetstrip":1}"#,
    )
    .await;
    let mut server = start(&etcd);
    server.daemon.wait_ready(Duration::from_secs(10)).unwrap();

    let answer = dig::query(server.dns, "nginx.test.org", "A", &[]).unwrap();
    assert_eq!(answer.status, "NOERROR", "{}", answer.raw);
    assert!(answer.has_flag("aa"), "{}", answer.raw);
    assert!(!answer.has_flag("ra"), "{}", answer.raw);
    assert_eq!(answer.data_of("A"), ["10.10.39.200"]);
    assert_eq!(answer.answer[0].ttl, 60);

    let tcp = dig::query(server.dns, "nginx.test.org", "A", &["+tcp"]).unwrap();
    assert_eq!(tcp.data_of("A"), ["10.10.39.200"], "{}", tcp.raw);

    let missing = dig::query(server.dns, "nope.test.org", "A", &[]).unwrap();
    assert_eq!(missing.status, "NXDOMAIN", "{}", missing.raw);
    assert_eq!(missing.authority[0].rtype, "SOA", "{}", missing.raw);

    let other = dig::query(server.dns, "example.com", "A", &["+recurse"]).unwrap();
    assert_eq!(other.status, "REFUSED", "no open recursion: {}", other.raw);
    assert!(other.answer.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn follows_puts_and_deletes_in_etcd_and_moves_the_soa_serial() {
    let etcd = Etcd::start_tls().await.unwrap();
    let mut server = start(&etcd);
    server.daemon.wait_ready(Duration::from_secs(10)).unwrap();
    let serial_of = |server: SocketAddr| -> u64 {
        let soa = dig::query(server, "test.org", "SOA", &[]).unwrap();
        soa.answer[0]
            .data
            .split_whitespace()
            .nth(2)
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = serial_of(server.dns);

    put(
        &etcd,
        "/skydns/org/test/web/00000001",
        r#"{"host":"10.10.39.201"}"#,
    )
    .await;
    let took = wait_for_answer(server.dns, "web.test.org", "A", &["10.10.39.201"]).await;
    println!(
        "a put in etcd was answered after {:.1} ms",
        took.as_secs_f64() * 1e3
    );
    let after_put = serial_of(server.dns);
    assert!(after_put > before, "serial {before} -> {after_put}");
    assert_eq!(
        serial_of(server.dns),
        after_put,
        "the serial is stable without changes"
    );

    etcd.client()
        .await
        .unwrap()
        .delete("/skydns/org/test/web/00000001", None)
        .await
        .unwrap();
    wait::until(
        "web.test.org to be NXDOMAIN",
        Duration::from_secs(10),
        || async {
            let answer =
                dig::query(server.dns, "web.test.org", "A", &[]).map_err(|e| e.to_string())?;
            if answer.status == "NXDOMAIN" {
                Ok(())
            } else {
                Err(answer.status)
            }
        },
    )
    .await
    .unwrap();
    assert!(serial_of(server.dns) > after_put);

    // A write outside the zone does not move the zone's serial.
    let settled = serial_of(server.dns);
    put(&etcd, "/skydns/com/example/x", r#"{"host":"10.0.0.1"}"#).await;
    put(&etcd, "/skydns/org/test/marker", r#"{"host":"10.0.0.2"}"#).await;
    wait_for_answer(server.dns, "marker.test.org", "A", &["10.0.0.2"]).await;
    let marker_revision = etcd
        .client()
        .await
        .unwrap()
        .get("/skydns/org/test/marker", None)
        .await
        .unwrap()
        .kvs()[0]
        .mod_revision();
    assert!(settled < u64::try_from(marker_revision).unwrap());
    assert_eq!(
        serial_of(server.dns),
        u64::try_from(marker_revision).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keeps_answering_while_etcd_is_down_and_catches_up_when_it_returns() {
    let mut etcd = Etcd::start_tls().await.unwrap();
    put(
        &etcd,
        "/skydns/org/test/nginx/1a2b3c4d",
        r#"{"host":"10.10.39.200","targetstrip":1}"#,
    )
    .await;
    let mut server = start(&etcd);
    server.daemon.wait_ready(Duration::from_secs(10)).unwrap();

    etcd.kill();
    wait::until(
        "readiness detail to report etcd trouble",
        Duration::from_secs(15),
        || {
            let response = server.daemon.get("/readyz");
            async move {
                let response = response?;
                if response.status == 200 && response.body.contains("last known data") {
                    Ok(())
                } else {
                    Err(format!("{} {}", response.status, response.body.trim()))
                }
            }
        },
    )
    .await
    .unwrap();
    let answer = dig::query(server.dns, "nginx.test.org", "A", &[]).unwrap();
    assert_eq!(
        answer.data_of("A"),
        ["10.10.39.200"],
        "still served while etcd is down"
    );

    etcd.start_again().await.unwrap();
    put(
        &etcd,
        "/skydns/org/test/later/00000001",
        r#"{"host":"10.10.39.202"}"#,
    )
    .await;
    wait_for_answer(server.dns, "later.test.org", "A", &["10.10.39.202"]).await;
    assert_eq!(
        dig::query(server.dns, "nginx.test.org", "A", &[])
            .unwrap()
            .data_of("A"),
        ["10.10.39.200"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_values_are_skipped_counted_and_the_rest_served() {
    let etcd = Etcd::start_tls().await.unwrap();
    put(&etcd, "/skydns/org/test/bad/00000001", "{not json").await;
    put(
        &etcd,
        "/skydns/org/test/bad/00000002",
        r#"{"host":"10.0.0.300"}"#,
    )
    .await;
    put(
        &etcd,
        "/skydns/org/test/bad/00000003",
        r#"{"host":"10.10.39.203"}"#,
    )
    .await;
    let mut server = start(&etcd);
    server.daemon.wait_ready(Duration::from_secs(10)).unwrap();
    let answer = dig::query(server.dns, "bad.test.org", "A", &[]).unwrap();
    assert_eq!(answer.status, "NOERROR", "{}", answer.raw);
    assert_eq!(answer.data_of("A"), ["10.10.39.203"]);
    let metrics = server.daemon.get("/metrics").unwrap().body;
    assert!(
        metrics.contains("groundwork_dns_invalid_records_total 2"),
        "{metrics}"
    );
    let log = server.daemon.process().log_tail(50);
    assert!(
        log.contains("/skydns/org/test/bad/00000002") && log.contains("field host"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_etcd_it_starts_not_ready_and_answers_servfail_not_nxdomain() {
    let mut etcd = Etcd::start_tls().await.unwrap();
    etcd.kill();
    let server = start(&etcd);
    let readiness = server.daemon.get("/readyz").unwrap();
    assert_eq!(readiness.status, 503, "{}", readiness.body);
    let answer = dig::query(server.dns, "nginx.test.org", "A", &[]).unwrap();
    assert_eq!(answer.status, "SERVFAIL", "{}", answer.raw);
}

#[tokio::test(flavor = "multi_thread")]
async fn loads_more_records_than_one_etcd_range_read_returns() {
    // The first read is paged (5,000 keys a page); 12,000 records span three pages.
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    let count = 12_000;
    let keys: Vec<(String, String)> = (0..count)
        .map(|i| {
            let value = format!(
                r#"{{"host":"10.50.{}.{}","targetstrip":1}}"#,
                i / 256,
                i % 256
            );
            (format!("/skydns/org/test/h{i}/0000abcd"), value)
        })
        .collect();
    for chunk in keys.chunks(128) {
        let ops: Vec<etcd_client::TxnOp> = chunk
            .iter()
            .map(|(k, v)| etcd_client::TxnOp::put(k.as_str(), v.as_str(), None))
            .collect();
        client
            .txn(etcd_client::Txn::new().and_then(ops))
            .await
            .unwrap();
    }
    let mut server = start(&etcd);
    server.daemon.wait_ready(Duration::from_secs(30)).unwrap();
    for i in [0, 4_999, 5_000, 11_999] {
        let answer = dig::query(server.dns, &format!("h{i}.test.org"), "A", &[]).unwrap();
        assert_eq!(
            answer.data_of("A"),
            [format!("10.50.{}.{}", i / 256, i % 256)],
            "{}",
            answer.raw
        );
    }
    let metrics = server.daemon.get("/metrics").unwrap().body;
    assert!(
        metrics.contains("groundwork_dns_records 12000"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forwards_only_configured_zones_to_their_upstreams() {
    let zone = "$ORIGIN corp.example.\n$TTL 60\n@ SOA ns.corp.example. hostmaster.corp.example. 1 7200 1800 86400 30\n@ NS ns.corp.example.\nhost A 192.0.2.10\n";
    let upstream = integration_tests::knot::Knot::primary("corp.example", zone)
        .await
        .unwrap();
    let etcd = Etcd::start().await.unwrap();
    let forward = format!("corp.example={}", upstream.addr());
    let (mut daemon, dns) = DnsServer::new(env!("CARGO_BIN_EXE_dns-server"), &etcd)
        .forward(&forward)
        .forward("dead.example=127.0.0.1:1")
        .serve()
        .unwrap();
    daemon.wait_ready(Duration::from_secs(10)).unwrap();

    for extra in [&[][..], &["+tcp"][..]] {
        let answer = dig::query(dns, "host.corp.example", "A", extra).unwrap();
        assert_eq!(
            answer.data_of("A"),
            ["192.0.2.10"],
            "{extra:?}: {}",
            answer.raw
        );
        let dead = dig::query(dns, "x.dead.example", "A", extra).unwrap();
        assert_eq!(dead.status, "SERVFAIL", "{extra:?}: {}", dead.raw);
    }
    let other = dig::query(dns, "host.elsewhere.example", "A", &["+recurse"]).unwrap();
    assert_eq!(other.status, "REFUSED", "{}", other.raw);
}
