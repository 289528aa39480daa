//! SOA serials against a real etcd: every replica reports the same serial for the same zone content, and the
//! serial moves only when something inside the zone changes (Zonemaster flags `MULTIPLE_SOA_SERIALS`;
//! secondaries transfer the whole zone for nothing when it moves without a change).

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use integration_tests::daemon::Daemon;
use integration_tests::dig;
use integration_tests::etcd::Etcd;
use integration_tests::launch::DnsServer;
use integration_tests::wait;

fn serial(server: SocketAddr) -> Result<u32, String> {
    let answer = dig::query(server, "test.org", "SOA", &[]).map_err(|e| e.to_string())?;
    let soa = answer.data_of("SOA");
    soa.first()
        .and_then(|data| data.split_whitespace().nth(2))
        .and_then(|serial| serial.parse().ok())
        .ok_or_else(|| format!("no SOA serial in {soa:?} ({})", answer.status))
}

async fn wait_serial(server: SocketAddr, want: u32, what: &str) {
    wait::until(what, Duration::from_secs(20), || async move {
        let got = serial(server)?;
        (got == want)
            .then_some(())
            .ok_or_else(|| format!("serial {got}, want {want}"))
    })
    .await
    .unwrap();
}

fn replica(etcd: &Etcd) -> (Daemon, SocketAddr) {
    DnsServer::new(env!("CARGO_BIN_EXE_dns-server"), etcd)
        .serve()
        .unwrap()
}

/// Writes `n` keys of another zone, which move etcd's revision and nothing of test.org.
async fn elsewhere(client: &mut etcd_client::Client, n: usize) {
    for i in 0..n {
        client
            .put(
                format!("/skydns/org/example/host{i}"),
                r#"{"host":"192.0.2.1"}"#,
                None,
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_report_one_serial_for_one_zone_content_and_it_moves_only_with_the_zone() {
    let mut etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    for (key, host) in [
        ("/skydns/org/test/a", "10.10.39.1"),
        ("/skydns/org/test/b", "10.10.39.2"),
    ] {
        client
            .put(key, format!(r#"{{"host":"{host}"}}"#), None)
            .await
            .unwrap();
    }
    let written = client.get("/skydns/org/test/b", None).await.unwrap().kvs()[0].mod_revision();
    elsewhere(&mut client, 3).await;
    let (first, first_addr) = replica(&etcd);
    let at_start = serial(first_addr).unwrap();
    assert_eq!(
        i64::from(at_start),
        written,
        "the serial is the zone's last change, not the revision of the read"
    );

    elsewhere(&mut client, 5).await;
    let (second, second_addr) = replica(&etcd);
    assert_eq!(
        serial(second_addr).unwrap(),
        at_start,
        "a replica started after other zones changed reports the same serial"
    );

    // A deletion is a change of the zone that a later read cannot see: the replicas that watched it and
    // one started after it agree on its revision.
    let deleted = client
        .delete("/skydns/org/test/b", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let deleted = u32::try_from(deleted).unwrap();
    wait_serial(
        first_addr,
        deleted,
        "the first replica to take the deletion",
    )
    .await;
    wait_serial(
        second_addr,
        deleted,
        "the second replica to take the deletion",
    )
    .await;
    elsewhere(&mut client, 4).await;
    let (third, third_addr) = replica(&etcd);
    assert_eq!(
        serial(third_addr).unwrap(),
        deleted,
        "a replica started after the deletion finds it in etcd's history"
    );

    // etcd down and back with other zones written meanwhile: every replica reads everything again, and
    // no serial moves (it went up here before, and a NOTIFY and a full transfer followed).
    etcd.restart().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    elsewhere(&mut client, 2).await;
    for replica in [&first, &second, &third] {
        wait::until_blocking(
            "the replica to read etcd again",
            Duration::from_secs(30),
            || {
                let metrics = replica.get("/metrics")?.body;
                let relists: f64 = metrics
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("groundwork_dns_etcd_relists_total ")?
                            .parse()
                            .ok()
                    })
                    .unwrap_or(0.0);
                (relists >= 2.0)
                    .then_some(())
                    .ok_or_else(|| format!("{relists} reads of etcd"))
            },
        )
        .unwrap();
    }
    for addr in [first_addr, second_addr, third_addr] {
        assert_eq!(serial(addr).unwrap(), deleted, "re-listed at {addr}");
    }
    let changed = client
        .put("/skydns/org/test/c", r#"{"host":"10.10.39.3"}"#, None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let changed = u32::try_from(changed).unwrap();
    for addr in [first_addr, second_addr, third_addr] {
        wait_serial(
            addr,
            changed,
            "every replica to follow a change after etcd came back",
        )
        .await;
    }
}
