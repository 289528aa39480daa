//! Zone transfer to real secondaries: Knot DNS and BIND (as AD would be) transfer the zone from dns-server
//! and, told by NOTIFY, follow changes in etcd long before their SOA refresh interval (2 hours), by
//! incremental transfers (IXFR) signed with TSIG; an unsigned or wrongly signed secondary gets nothing.

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use integration_tests::bind::Named;
use integration_tests::daemon::Daemon;
use integration_tests::dig;
use integration_tests::etcd::Etcd;
use integration_tests::knot::Knot;
use integration_tests::launch::DnsServer;
use integration_tests::process::{Scratch, free_port};
use integration_tests::tsig::TsigKey;
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
    let (mut ours, primary) = server(&etcd)
        .transfer_allow("127.0.0.1/32")
        .notify(&notify)
        .serve()
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
    let (mut ours, addr) = server(&etcd)
        .transfer_allow("192.0.2.0/24")
        .serve()
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
    let (primary, primary_addr) = server(&etcd)
        .listen("127.0.0.2:0")
        .transfer_allow("127.0.0.0/8")
        .notify(&notify)
        .serve()
        .unwrap();
    let knot = Knot::secondary_on(knot_port, "test.org", primary_addr)
        .await
        .unwrap();
    wait_for(knot.addr(), "nginx.test.org", "10.10.39.200").await;
    // Another server of the zone that Knot does not know as its primary: its NOTIFY is refused.
    let (mut stranger, _) = server(&etcd)
        .listen("127.0.0.3:0")
        .notify(&notify)
        .serve()
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
    let (_ours, primary) = server(&etcd)
        .transfer_allow("127.0.0.1/32")
        .ns("ns1.test.org=192.0.2.53")
        .serve()
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

/// The SOA serial `server` answers for test.org (signed with `key` when given).
fn soa_serial(server: SocketAddr, key: Option<&TsigKey>) -> Result<u32, String> {
    let key_arg = key.map(TsigKey::dig_arg);
    let mut extra = vec![];
    if let Some(key_arg) = &key_arg {
        extra = vec!["-y", key_arg.as_str()];
    }
    let answer = dig::query(server, "test.org", "SOA", &extra).map_err(|e| e.to_string())?;
    let soa = answer.data_of("SOA");
    let serial = soa
        .first()
        .and_then(|data| data.split_whitespace().nth(2))
        .and_then(|serial| serial.parse().ok());
    serial.ok_or_else(|| format!("{} {soa:?}", answer.status))
}

/// Waits until `secondary` holds serial `want`.
async fn wait_for_serial(what: &str, secondary: SocketAddr, want: u32) -> Duration {
    let start = Instant::now();
    wait::until(
        &format!("{what} to hold serial {want}"),
        Duration::from_secs(30),
        || async move {
            let serial = soa_serial(secondary, None)?;
            (serial == want)
                .then_some(())
                .ok_or_else(|| format!("serial {serial}"))
        },
    )
    .await
    .unwrap();
    start.elapsed()
}

/// The value of a labelled counter sample, such as `groundwork_dns_transfers_total{kind="ixfr"}`; 0 when
/// absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// What `server` holds of test.org, read by AXFR (signed with `key` when given).
fn held(server: SocketAddr, key: Option<&TsigKey>) -> Vec<String> {
    let key_arg = key.map(TsigKey::dig_arg);
    let extra: Vec<&str> = key_arg.iter().flat_map(|k| ["-y", k.as_str()]).collect();
    dig::transfer(server, "test.org", "AXFR", &extra)
        .unwrap()
        .content()
}

/// A zone with names of every shape, so the differences carry more than one kind of record.
async fn seed_zone(client: &mut etcd_client::Client) {
    for i in 0..20 {
        client
            .put(
                format!("/skydns/org/test/host{i}/00000001"),
                format!(r#"{{"host":"10.10.40.{i}","targetstrip":1}}"#),
                None,
            )
            .await
            .unwrap();
    }
    for (key, value) in [
        ("/skydns/org/test/www", r#"{"host":"host1.test.org"}"#),
        ("/skydns/org/test/info", r#"{"text":"hello"}"#),
        (
            "/skydns/org/test/_tcp/_xmpp/a",
            r#"{"host":"host2.test.org","port":5222}"#,
        ),
    ] {
        client.put(key, value, None).await.unwrap();
    }
}

/// One change of each kind: a name added, an address changed, a name deleted, a text changed.
async fn change_zone(client: &mut etcd_client::Client) {
    add_a_name(client).await;
    client
        .put(
            "/skydns/org/test/host3/00000001",
            r#"{"host":"10.10.41.3","targetstrip":1}"#,
            None,
        )
        .await
        .unwrap();
    client
        .delete("/skydns/org/test/host5/00000001", None)
        .await
        .unwrap();
    client
        .put("/skydns/org/test/info", r#"{"text":"changed"}"#, None)
        .await
        .unwrap();
}

/// dns-server transferring to 127.0.0.1 only when signed with `key` (read from a key file, as
/// `tsig-keygen` wrote it), with `extra` flags; the directory holding the key file lives as long as it is
/// kept.
fn start_keyed_primary(
    etcd: &Etcd,
    key: &TsigKey,
    extra: impl FnOnce(DnsServer) -> DnsServer,
) -> (Daemon, SocketAddr, Scratch) {
    let keys = Scratch::new("tsig-keys").unwrap();
    let key_file = key.write_file(keys.path()).unwrap();
    let primary = server(etcd)
        .transfer_allow("127.0.0.1/32")
        .tsig_key_file(&key_file)
        .transfer_key(&key.name);
    let (daemon, addr) = extra(primary).serve().unwrap();
    (daemon, addr, keys)
}

/// The dns-server the tests run, serving `test.org` from `etcd` on a free loopback port.
fn server(etcd: &Etcd) -> DnsServer {
    DnsServer::new(env!("CARGO_BIN_EXE_dns-server"), etcd)
}

fn metrics_of(daemon: &Daemon) -> String {
    daemon.get("/metrics").unwrap().body
}

#[tokio::test(flavor = "multi_thread")]
async fn bind_and_knot_follow_changes_by_signed_ixfr_and_hold_exactly_what_we_serve() {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    seed_zone(&mut client).await;
    let key = TsigKey::generate("transfer.test.org").unwrap();
    let (bind_port, knot_port) = (free_port().unwrap(), free_port().unwrap());
    let (to_bind, to_knot) = (
        format!("127.0.0.1:{bind_port}"),
        format!("127.0.0.1:{knot_port}"),
    );
    let (mut ours, primary, _keys) = start_keyed_primary(&etcd, &key, |s| {
        s.notify_key(&key.name).notify(&to_bind).notify(&to_knot)
    });
    ours.wait_ready(Duration::from_secs(10)).unwrap();
    let named = Named::secondary_on(bind_port, "test.org", primary, Some(&key))
        .await
        .unwrap();
    let knot = Knot::secondary_with_key(knot_port, "test.org", primary, Some(&key))
        .await
        .unwrap();
    let first = soa_serial(primary, None).unwrap();
    wait_for_serial("BIND", named.addr(), first).await;
    wait_for_serial("Knot", knot.addr(), first).await;

    change_zone(&mut client).await;
    let changed = wait::until(
        "the primary's serial to move",
        Duration::from_secs(10),
        || async {
            let serial = soa_serial(primary, None)?;
            (serial != first)
                .then_some(serial)
                .ok_or_else(|| format!("still {serial}"))
        },
    )
    .await
    .unwrap();
    // Four writes may land as up to four serials; the secondaries end on the last.
    let last = wait::until(
        "the last change to be served",
        Duration::from_secs(10),
        || async {
            let answer =
                dig::query(primary, "info.test.org", "TXT", &[]).map_err(|e| e.to_string())?;
            (answer.data_of("TXT") == ["\"changed\""])
                .then(|| soa_serial(primary, None))
                .transpose()?
                .ok_or_else(|| "not yet".to_owned())
        },
    )
    .await
    .unwrap();
    assert!(last >= changed);
    let bind_took = wait_for_serial("BIND", named.addr(), last).await;
    let knot_took = wait_for_serial("Knot", knot.addr(), last).await;
    println!(
        "the last of four writes reached BIND {:.0} ms and Knot {:.0} ms after the primary served it (signed NOTIFY, then signed IXFR)",
        bind_took.as_secs_f64() * 1e3,
        (bind_took + knot_took).as_secs_f64() * 1e3
    );

    // Each secondary applied our differences and holds exactly what we serve: their own AXFR says so.
    let ours_now = held(primary, Some(&key));
    assert!(
        ours_now
            .iter()
            .any(|r| r.starts_with("added.test.org. A 10.10.39.205")),
        "{ours_now:#?}"
    );
    assert!(
        !ours_now.iter().any(|r| r.starts_with("host5.test.org.")),
        "{ours_now:#?}"
    );
    assert_eq!(held(named.addr(), None), ours_now, "BIND");
    assert_eq!(held(knot.addr(), None), ours_now, "Knot");

    let metrics = metrics_of(&ours);
    let ixfr = sample(&metrics, r#"groundwork_dns_transfers_total{kind="ixfr"}"#);
    let axfr = sample(&metrics, r#"groundwork_dns_transfers_total{kind="axfr"}"#);
    // Two first transfers in full, then only differences: a secondary that failed to apply one would have
    // come back for the whole zone.
    assert!(ixfr >= 2.0, "{metrics}");
    assert_eq!(axfr, 3.0, "one each, plus ours above; {metrics}");
    assert!(
        sample(&metrics, "groundwork_dns_notify_acked_total") >= 2.0,
        "signed NOTIFY acknowledged: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secondaries_without_the_transfer_key_or_with_a_wrong_secret_get_no_zone() {
    let (etcd, _client) = etcd_with_nginx().await;
    let key = TsigKey::generate("transfer.test.org").unwrap();
    let (ours, primary, _keys) = start_keyed_primary(&etcd, &key, |s| s);
    let wrong = key.with_other_secret().unwrap();
    let mut named = Named::secondary("test.org", primary, Some(&wrong))
        .await
        .unwrap();
    let mut knot = Knot::secondary("test.org", primary).await.unwrap();

    // BIND signs its SOA query with the wrong secret: NOTAUTH (BADSIG). Knot asks unsigned: its SOA query
    // is answered, its transfer refused.
    wait::until("both refusals", Duration::from_secs(30), || {
        let metrics = ours.get("/metrics").map(|r| r.body);
        async move {
            let metrics = metrics.map_err(|e| e.to_string())?;
            let notauth = metrics
                .lines()
                .any(|l| l.contains(r#"rcode="NOTAUTH""#) && !l.ends_with(" 0"));
            let refused = metrics.lines().any(|l| {
                l.contains(r#"qtype="AXFR""#)
                    && l.contains(r#"rcode="REFUSED""#)
                    && !l.ends_with(" 0")
            });
            (notauth && refused)
                .then_some(())
                .ok_or_else(|| format!("NOTAUTH {notauth}, REFUSED AXFR {refused}"))
        }
    })
    .await
    .unwrap();
    let status = |server| {
        dig::query(server, "nginx.test.org", "A", &[])
            .map(|a| a.status)
            .unwrap_or_else(|e| e.to_string())
    };
    assert_ne!(
        status(named.addr()),
        "NOERROR",
        "{}",
        named.process().log_tail(30)
    );
    assert_ne!(
        status(knot.addr()),
        "NOERROR",
        "{}",
        knot.process().log_tail(30)
    );
    let bind_log = named.process().log_tail(200);
    assert!(
        bind_log.contains("tsig") || bind_log.contains("NOTAUTH"),
        "BIND says why: {bind_log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn after_etcd_compacted_a_secondarys_version_ixfr_sends_the_whole_zone_and_it_follows() {
    let (etcd, mut client) = etcd_with_nginx().await;
    let knot_port = free_port().unwrap();
    let notify = format!("127.0.0.1:{knot_port}");
    let (ours, primary) = server(&etcd)
        .transfer_allow("127.0.0.1/32")
        .notify(&notify)
        .serve()
        .unwrap();
    let knot = Knot::secondary_on(knot_port, "test.org", primary)
        .await
        .unwrap();
    wait_for(knot.addr(), "nginx.test.org", "10.10.39.200").await;
    // Another key, then compaction of everything before it: the secondary's version is gone.
    let put = client
        .put("/skydns/org/other/x", r#"{"host":"10.0.0.1"}"#, None)
        .await
        .unwrap();
    let revision = put.header().unwrap().revision();
    client
        .compact(
            revision,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .unwrap();
    add_a_name(&mut client).await;
    wait_for(knot.addr(), "added.test.org", "10.10.39.205").await;
    assert_eq!(held(knot.addr(), None), held(primary, None));
    let metrics = metrics_of(&ours);
    assert!(
        sample(
            &metrics,
            r#"groundwork_dns_transfers_total{kind="ixfr_full"}"#
        ) >= 1.0,
        "{metrics}"
    );
}
