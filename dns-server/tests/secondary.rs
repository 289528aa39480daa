//! Zone transfer to a real secondary: Knot DNS (as AD or BIND would be) transfers the zone from dns-server
//! and, told by NOTIFY, follows a change in etcd long before its SOA refresh interval (2 hours).

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use integration_tests::daemon::start_dns_server;
use integration_tests::dig;
use integration_tests::etcd::Etcd;
use integration_tests::knot::Knot;
use integration_tests::process::{Scratch, free_port};
use integration_tests::wait;

async fn wait_for(server: SocketAddr, name: &str, want: &str) -> Duration {
    let start = Instant::now();
    wait::until(
        &format!("{name} A {want} at {server}"),
        Duration::from_secs(20),
        || async {
            let answer = dig::query(server, name, "A", &[]).map_err(|e| e.to_string())?;
            if answer.data_of("A") == [want] {
                Ok(())
            } else {
                Err(format!("{} {:?}", answer.status, answer.data_of("A")))
            }
        },
    )
    .await
    .unwrap();
    start.elapsed()
}

/// An etcd holding `nginx.test.org A 10.10.39.200`, and a client of it.
async fn etcd_with_nginx() -> (Etcd, etcd_client::Client) {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    client
        .put(
            "/skydns/org/test/nginx/1a2b3c4d",
            r#"{"host":"10.10.39.200","targetstrip":1}"#,
            None,
        )
        .await
        .unwrap();
    (etcd, client)
}

/// Writes `added.test.org A 10.10.39.205`, the change a secondary must follow.
async fn add_a_name(client: &mut etcd_client::Client) {
    client
        .put(
            "/skydns/org/test/added/00000001",
            r#"{"host":"10.10.39.205","targetstrip":1}"#,
            None,
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn knot_as_secondary_transfers_the_zone_and_follows_notify() {
    let (etcd, mut client) = etcd_with_nginx().await;
    let knot_port = free_port().unwrap();
    let notify = format!("127.0.0.1:{knot_port}");
    let (mut ours, primary) = start_dns_server(
        env!("CARGO_BIN_EXE_dns-server"),
        &etcd,
        &["--transfer-allow", "127.0.0.1/32", "--notify", &notify],
    )
    .unwrap();
    ours.wait_ready(Duration::from_secs(10)).unwrap();

    let knot = Knot::secondary_on(knot_port, "test.org", primary)
        .await
        .unwrap();
    let transferred = wait_for(knot.addr(), "nginx.test.org", "10.10.39.200").await;
    println!(
        "initial transfer served by knot after {:.0} ms",
        transferred.as_secs_f64() * 1e3
    );

    add_a_name(&mut client).await;
    let followed = wait_for(knot.addr(), "added.test.org", "10.10.39.205").await;
    println!(
        "change in etcd served by knot after {:.0} ms (NOTIFY + transfer)",
        followed.as_secs_f64() * 1e3
    );

    let serial = |server| {
        dig::query(server, "test.org", "SOA", &[]).unwrap().answer[0]
            .data
            .clone()
    };
    assert_eq!(
        serial(knot.addr()),
        serial(primary),
        "secondary holds our serial"
    );
    let metrics = ours.get("/metrics").unwrap().body;
    assert!(
        !metrics.contains("groundwork_dns_notify_acked_total 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transfers_are_refused_to_clients_not_on_the_allow_list() {
    let etcd = Etcd::start().await.unwrap();
    let (mut ours, addr) = start_dns_server(
        env!("CARGO_BIN_EXE_dns-server"),
        &etcd,
        &["--transfer-allow", "192.0.2.0/24"],
    )
    .unwrap();
    ours.wait_ready(Duration::from_secs(10)).unwrap();
    let output = std::process::Command::new("dig")
        .args([
            &format!("@{}", addr.ip()),
            "-p",
            &addr.port().to_string(),
            "test.org",
            "AXFR",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("Transfer failed") || text.contains("REFUSED"),
        "{text}"
    );
    assert!(!text.contains("IN\tSOA"), "{text}");
}

/// The value of an unlabelled counter in a Prometheus text exposition.
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn notify_comes_from_the_primary_address_the_secondary_knows_and_a_refusal_is_no_acknowledgement()
 {
    let (etcd, mut client) = etcd_with_nginx().await;
    let knot_port = free_port().unwrap();
    let notify = format!("127.0.0.1:{knot_port}");
    // The primary listens on 127.0.0.2, which is what Knot knows and takes NOTIFY from. Sent from a socket
    // bound to 0.0.0.0, NOTIFY left from 127.0.0.1 and Knot refused it, while the primary logged it acknowledged.
    let (primary, primary_addr) = start_dns_server(
        env!("CARGO_BIN_EXE_dns-server"),
        &etcd,
        &[
            "--listen",
            "127.0.0.2:0",
            "--transfer-allow",
            "127.0.0.0/8",
            "--notify",
            &notify,
        ],
    )
    .unwrap();
    let knot = Knot::secondary_on(knot_port, "test.org", primary_addr)
        .await
        .unwrap();
    wait_for(knot.addr(), "nginx.test.org", "10.10.39.200").await;
    // Another server of the zone that Knot does not know as its primary: its NOTIFY is refused.
    let (mut stranger, _) = start_dns_server(
        env!("CARGO_BIN_EXE_dns-server"),
        &etcd,
        &["--listen", "127.0.0.3:0", "--notify", &notify],
    )
    .unwrap();

    add_a_name(&mut client).await;
    // Knot's refresh interval is two hours: only an accepted NOTIFY makes it follow this soon.
    let followed = wait_for(knot.addr(), "added.test.org", "10.10.39.205").await;
    println!(
        "knot followed the change {:.0} ms after it was written (NOTIFY from 127.0.0.2)",
        followed.as_secs_f64() * 1e3
    );
    let primary_metrics = primary.get("/metrics").unwrap().body;
    assert!(counter(&primary_metrics, "groundwork_dns_notify_acked_total") >= 1.0);
    assert_eq!(
        counter(&primary_metrics, "groundwork_dns_notify_refused_total"),
        0.0
    );
    wait::until(
        "the stranger's NOTIFY to be refused",
        Duration::from_secs(20),
        || {
            let metrics = stranger.get("/metrics").map(|r| r.body);
            async move {
                let metrics = metrics.map_err(|e| e.to_string())?;
                if counter(&metrics, "groundwork_dns_notify_acked_total") != 0.0 {
                    return Err(format!("counted as acknowledged: {metrics}"));
                }
                (counter(&metrics, "groundwork_dns_notify_refused_total") >= 1.0)
                    .then_some(())
                    .ok_or_else(|| "not refused yet".to_owned())
            }
        },
    )
    .await
    .unwrap();
    let log = stranger.process().log_tail(200);
    assert!(log.contains("secondary refused NOTIFY"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bind_named_checkzone_accepts_the_transferred_zone_with_every_record_shape() {
    // Each shape here once made BIND refuse the zone or a checker complain: a name host with a port (CNAME
    // and SRV at once), an in-zone NS name without an address, apex addresses from dns/apex left out, a
    // leaf below a wildcard transferred as `x1.*.apps`.
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    for (key, value) in [
        (
            "/skydns/org/test/nginx/1a2b3c4d",
            r#"{"host":"10.10.39.200","targetstrip":1}"#,
        ),
        ("/skydns/org/test/www", r#"{"host":"nginx.test.org"}"#),
        (
            "/skydns/org/test/_tcp/_xmpp/a",
            r#"{"host":"nginx.test.org","port":5222}"#,
        ),
        ("/skydns/org/test/dns/apex/a1", r#"{"host":"10.10.39.230"}"#),
        ("/skydns/org/test/apps/*/x1", r#"{"host":"10.10.39.240"}"#),
        (
            "/skydns/org/test/mail/00000005",
            r#"{"host":"10.10.39.206","mail":true,"priority":5,"targetstrip":1}"#,
        ),
        ("/skydns/org/test/info", r#"{"text":"hello"}"#),
    ] {
        client.put(key, value, None).await.unwrap();
    }
    let (_ours, primary) = start_dns_server(
        env!("CARGO_BIN_EXE_dns-server"),
        &etcd,
        &[
            "--transfer-allow",
            "127.0.0.1/32",
            "--ns",
            "ns1.test.org=192.0.2.53",
        ],
    )
    .unwrap();
    let axfr = std::process::Command::new("dig")
        .args(["-p", &primary.port().to_string()])
        .arg(format!("@{}", primary.ip()))
        .args(["test.org", "AXFR", "+onesoa", "+nocmd", "+nostats"])
        .output()
        .unwrap();
    let zone = String::from_utf8_lossy(&axfr.stdout).into_owned();
    assert!(
        axfr.status.success() && zone.contains("SOA"),
        "{zone}{}",
        String::from_utf8_lossy(&axfr.stderr)
    );
    let dir = Scratch::new("named-checkzone").unwrap();
    let file = dir.join("test.org.zone");
    std::fs::write(&file, &zone).unwrap();
    // Integrity checks in full, and every optional check a failure rather than a warning.
    let check = std::process::Command::new("named-checkzone")
        .args([
            "-i", "full", "-k", "fail", "-n", "fail", "-M", "fail", "-S", "fail",
        ])
        .args(["-m", "fail", "-r", "fail", "-T", "warn"])
        .arg("test.org")
        .arg(&file)
        .output()
        .unwrap();
    let verdict = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    println!("named-checkzone: {}", verdict.trim());
    assert!(check.status.success(), "{verdict}\nzone:\n{zone}");
    for expected in ["_xmpp._tcp.test.org.", "ns1.test.org.", "*.apps.test.org."] {
        assert!(zone.contains(expected), "{expected} missing:\n{zone}");
    }
    assert!(
        zone.lines()
            .any(|l| l.starts_with("test.org.") && l.contains("\tA\t10.10.39.230")),
        "apex A missing:\n{zone}"
    );
    assert!(!zone.contains("x1."), "{zone}");
}
