//! Zone transfers to real secondaries, measured: what one change in a 10,000-name zone costs as an IXFR
//! against the whole zone (AXFR), and how long BIND and Knot take from the write in etcd to holding the new
//! serial (dns-server's NOTIFY, the secondary's SOA check, then the IXFR), with and without TSIG.
//!
//! Run: `cargo bench -p dns-server --bench transfers` (needs `bind9`, `knot` and `dig` from
//! `scripts/install-deps`). Figures go to `docs/benchmarks.md` by hand.

// A benchmark program panics like a test does when its set-up fails.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use etcd_client::{Client, Txn, TxnOp};
use integration_tests::bind::Named;
use integration_tests::dig;
use integration_tests::etcd::Etcd;
use integration_tests::knot::Knot;
use integration_tests::launch::DnsServer;
use integration_tests::process::{Scratch, free_port};
use integration_tests::tsig::TsigKey;
use integration_tests::wait;

const NAMES: usize = 10_000;
const CHANGES: usize = 30;

async fn load(client: &mut Client) {
    let keys: Vec<(String, String)> = (0..NAMES)
        .map(|i| {
            (
                format!("/skydns/org/test/host{i}/0000abcd"),
                format!(
                    r#"{{"host":"10.{}.{}.{}","targetstrip":1}}"#,
                    100 + i / 65536,
                    (i / 256) % 256,
                    i % 256
                ),
            )
        })
        .collect();
    for chunk in keys.chunks(128) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None))
            .collect();
        client.txn(Txn::new().and_then(ops)).await.unwrap();
    }
}

fn serial(server: SocketAddr) -> Option<u32> {
    let answer = dig::query(server, "test.org", "SOA", &[]).ok()?;
    answer
        .data_of("SOA")
        .first()?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

async fn wait_serial(server: SocketAddr, want: u32) {
    wait::until("the new serial", Duration::from_secs(60), || async move {
        (serial(server) == Some(want))
            .then_some(())
            .ok_or_else(|| format!("{:?}", serial(server)))
    })
    .await
    .unwrap();
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Writes one changed address and returns the revision (the new serial).
async fn change(client: &mut Client, round: usize) -> u32 {
    let put = client
        .put(
            format!("/skydns/org/test/host{}/0000abcd", round % NAMES),
            format!(r#"{{"host":"10.200.0.{}","targetstrip":1}}"#, round % 250),
            None,
        )
        .await
        .unwrap();
    u32::try_from(put.header().unwrap().revision()).unwrap()
}

async fn follow(signed: bool) {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    load(&mut client).await;
    let key = TsigKey::generate("transfer.test.org").unwrap();
    let keys = Scratch::new("tsig-keys").unwrap();
    let key_file = key.write_file(keys.path()).unwrap();
    let (bind_port, knot_port) = (free_port().unwrap(), free_port().unwrap());
    let (to_bind, to_knot) = (
        format!("127.0.0.1:{bind_port}"),
        format!("127.0.0.1:{knot_port}"),
    );
    let mut server = DnsServer::new(env!("CARGO_BIN_EXE_dns-server"), &etcd)
        .transfer_allow("127.0.0.1/32")
        .notify(&to_bind)
        .notify(&to_knot);
    if signed {
        server = server
            .tsig_key_file(&key_file)
            .transfer_key(&key.name)
            .notify_key(&key.name);
    }
    let (mut ours, primary) = server.serve().unwrap();
    ours.wait_ready(Duration::from_secs(60)).unwrap();
    let key_ref = signed.then_some(&key);
    let named = Named::secondary_on(bind_port, "test.org", primary, key_ref)
        .await
        .unwrap();
    let knot = Knot::secondary_with_key(knot_port, "test.org", primary, key_ref)
        .await
        .unwrap();
    let first = serial(primary).unwrap();
    wait_serial(named.addr(), first).await;
    wait_serial(knot.addr(), first).await;

    if !signed {
        let started = Instant::now();
        let whole = dig::transfer(primary, "test.org", "AXFR", &[]).unwrap();
        let whole_took = started.elapsed();
        let new = change(&mut client, 0).await;
        wait::until(
            "the change served",
            Duration::from_secs(10),
            || async move {
                (serial(primary) == Some(new))
                    .then_some(())
                    .ok_or_else(|| "not yet".to_owned())
            },
        )
        .await
        .unwrap();
        let started = Instant::now();
        let incremental =
            dig::transfer(primary, "test.org", &format!("IXFR={first}"), &[]).unwrap();
        let incremental_took = started.elapsed();
        println!(
            "one changed address in a {NAMES}-name zone: AXFR {} records, {} messages, {} bytes; IXFR {} records, {} messages, {} bytes ({:.0}x fewer bytes)",
            whole.records.len(),
            whole.messages,
            whole.bytes,
            incremental.records.len(),
            incremental.messages,
            incremental.bytes,
            whole.bytes as f64 / incremental.bytes as f64
        );
        println!(
            "  as dig timed them (process start to exit): AXFR {:.0} ms, IXFR {:.0} ms",
            whole_took.as_secs_f64() * 1e3,
            incremental_took.as_secs_f64() * 1e3
        );
        wait_serial(named.addr(), new).await;
        wait_serial(knot.addr(), new).await;
    }

    let mut bind_ms = Vec::new();
    let mut knot_ms = Vec::new();
    for round in 1..=CHANGES {
        let written = Instant::now();
        let new = change(&mut client, round).await;
        let (mut bind_done, mut knot_done) = (None, None);
        wait::until("both secondaries", Duration::from_secs(60), || {
            if bind_done.is_none() && serial(named.addr()) == Some(new) {
                bind_done = Some(written.elapsed());
            }
            if knot_done.is_none() && serial(knot.addr()) == Some(new) {
                knot_done = Some(written.elapsed());
            }
            let done = bind_done.is_some() && knot_done.is_some();
            async move { done.then_some(()).ok_or_else(|| "not yet".to_owned()) }
        })
        .await
        .unwrap();
        bind_ms.push(bind_done.unwrap().as_secs_f64() * 1e3);
        knot_ms.push(knot_done.unwrap().as_secs_f64() * 1e3);
    }
    let metrics = ours.get("/metrics").unwrap().body;
    let transfers: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("groundwork_dns_transfers_total"))
        .collect();
    for (who, mut times) in [("BIND 9.18", bind_ms), ("Knot 3.2", knot_ms)] {
        times.sort_by(f64::total_cmp);
        println!(
            "{who} secondary, {}: write in etcd -> secondary at the new serial over {CHANGES} changes: p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
            if signed { "TSIG-signed" } else { "unsigned" },
            percentile(&times, 0.5),
            percentile(&times, 0.9),
            times[times.len() - 1]
        );
    }
    println!("  dns-server transfers: {transfers:?}");
}

#[tokio::main]
async fn main() {
    follow(false).await;
    follow(true).await;
}
