//! Side-by-side speed of dns-server against its peers, in one run on one machine, with `dnsperf` on
//! loopback: CoreDNS (etcd plugin, with and without its `cache` plugin) reading the same etcd, and Knot DNS
//! serving the same names from a zone file. Also measures how fast a change in etcd is answered, and how
//! long 100,000 records take to load, with the memory they cost, and what response rate limiting (RRL) lets
//! through of a spoofed flood.
//!
//! dns-server runs with its defaults, RRL on: dnsperf asks for 10,000 names from one address, so no name is
//! asked for more often than RRL's limit and every answer pays for the RRL lookup without being limited (the
//! counters are printed to show it). A second dns-server with RRL off gives the lookup's cost. The poller that
//! times changes in etcd asks for one name as fast as it is answered; it stands for monitoring, and has its
//! own address, exempt from RRL.
//!
//! Run: `cargo bench -p dns-server --bench dnsperf` (needs the peers from `scripts/build-peers`, and
//! `dnsperf` and `knot` from `scripts/install-deps`). Figures go to `docs/benchmarks.md` by hand.

// A benchmark program panics like a test does when its set-up fails.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use etcd_client::{Client, Txn, TxnOp};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use integration_tests::daemon::Daemon;
use integration_tests::etcd::Etcd;
use integration_tests::flood;
use integration_tests::knot::Knot;
use integration_tests::launch::DnsServer;
use integration_tests::peers::CoreDns;
use integration_tests::process::Scratch;

const RECORDS: usize = 10_000;
const LOAD_RECORDS: usize = 100_000;
const SECONDS: &str = "10";
const CHANGES: usize = 200;
/// The source of the change poller, exempt from RRL (`--rrl-exempt`).
const POLLER: [u8; 4] = [127, 0, 1, 1];
const POLLER_NET: &str = "127.0.1.0/24";
/// The spoofed flood: queries a second, for how long, from how many addresses of 127.1.1.0/24.
const FLOOD_RATE: u32 = 50_000;
const FLOOD_SECONDS: u64 = 5;
const FLOOD_SOURCES: u8 = 8;

fn address(i: usize) -> String {
    format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256)
}

/// Writes `count` external-dns-style records (`hostN.test.org`, one suffix key each), 128 per transaction.
async fn load(client: &mut Client, count: usize) {
    let keys: Vec<(String, String)> = (0..count)
        .map(|i| {
            (
                format!("/skydns/org/test/host{i}/0000abcd"),
                format!(r#"{{"host":"{}","ttl":300,"targetstrip":1}}"#, address(i)),
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

fn start_ours(etcd: &Etcd, extra: impl FnOnce(DnsServer) -> DnsServer) -> (Daemon, SocketAddr) {
    extra(DnsServer::new(env!("CARGO_BIN_EXE_dns-server"), etcd))
        .serve()
        .unwrap()
}

/// The value of `groundwork_dns_rrl_responses_total{action}` on `server`.
fn rrl_count(server: &Daemon, action: &str) -> u64 {
    let sample = format!("groundwork_dns_rrl_responses_total{{action=\"{action}\"}} ");
    server
        .get("/metrics")
        .unwrap()
        .body
        .lines()
        .find_map(|l| l.strip_prefix(&sample)?.parse().ok())
        .unwrap_or(0)
}

/// The `n`th query of a flood.
type QueryFor = fn(u64) -> Vec<u8>;

struct Run {
    qps: f64,
    avg_ms: f64,
    lost: String,
    latencies_ms: Vec<f64>,
}

/// One dnsperf run; `rate` limits the queries per second; `verbose` collects every query's latency.
fn dnsperf(server: SocketAddr, queries: &std::path::Path, rate: Option<u64>, verbose: bool) -> Run {
    let mut command = Command::new("dnsperf");
    command
        .args([
            "-s",
            &server.ip().to_string(),
            "-p",
            &server.port().to_string(),
        ])
        .arg("-d")
        .arg(queries)
        .args(["-l", SECONDS, "-c", "4", "-T", "1", "-q", "500", "-t", "2"]);
    if let Some(rate) = rate {
        command.args(["-Q", &rate.to_string()]);
    }
    if verbose {
        command.arg("-v");
    }
    let output = command
        .output()
        .expect("dnsperf (install it with scripts/install-deps)");
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |label: &str| -> String {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(|rest| rest.trim().to_owned())
            .unwrap_or_default()
    };
    let qps = field("Queries per second:").parse().unwrap_or(0.0);
    let avg_ms = field("Average Latency (s):")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(0.0)
        * 1e3;
    let lost = field("Queries lost:");
    // Verbose lines: "> NOERROR host1.test.org A 0.000071"
    let latencies_ms = text
        .lines()
        .filter(|l| l.starts_with('>'))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|s| s * 1e3)
        .collect();
    Run {
        qps,
        avg_ms,
        lost,
        latencies_ms,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// Asks `server` for `name` A over UDP until it answers `want`, returning how long that took.
fn until_answered(
    socket: &UdpSocket,
    server: SocketAddr,
    name: &str,
    want: &str,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let mut query = Message::query();
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let bytes = query.to_vec().unwrap();
    let mut buffer = [0u8; 1500];
    while start.elapsed() < limit {
        socket.send_to(&bytes, server).unwrap();
        if let Ok((len, _)) = socket.recv_from(&mut buffer)
            && let Ok(reply) = Message::from_vec(&buffer[..len])
            && reply.answers.iter().any(|r| r.data.to_string() == want)
        {
            return Some(start.elapsed());
        }
    }
    None
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    println!(
        "dns-server vs CoreDNS vs Knot: {RECORDS} names, dnsperf -l {SECONDS} -c 4 -T 1 -q 500, UDP on loopback, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let scratch = Scratch::new("bench").unwrap();
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    load(&mut client, RECORDS).await;

    let queries = scratch.join("queries.txt");
    // A fixed shuffle (multiplicative hop), so each server gets the same sequence.
    let lines: String = (0..RECORDS)
        .map(|i| format!("host{}.test.org A\n", (i * 7919) % RECORDS))
        .collect();
    std::fs::write(&queries, lines).unwrap();
    let zone: String = std::iter::once(
        "$ORIGIN test.org.\n$TTL 300\n@ SOA ns.dns.test.org. hostmaster.test.org. 1 7200 1800 86400 30\n@ NS ns.dns.test.org.\n".to_owned(),
    )
    .chain((0..RECORDS).map(|i| format!("host{i} A {}\n", address(i))))
    .collect();

    let (mut ours, ours_addr) = start_ours(&etcd, |s| s.rrl_exempt(POLLER_NET));
    ours.wait_ready(Duration::from_secs(30)).unwrap();
    let (ours_off, ours_off_addr) = start_ours(&etcd, |s| s.rrl_responses_per_second(0));
    let coredns = CoreDns::start_with_etcd(&etcd, &["test.org"])
        .await
        .unwrap();
    let coredns_cache = CoreDns::start_with_plugins(&etcd, &["test.org"], "cache 30")
        .await
        .unwrap();
    let knot = Knot::primary("test.org", &zone).await.unwrap();

    let servers = [
        ("dns-server", ours_addr),
        ("dns-server RRL off", ours_off_addr),
        ("CoreDNS etcd", coredns.addr()),
        ("CoreDNS etcd+cache", coredns_cache.addr()),
        ("Knot (zone file)", knot.addr()),
    ];
    println!(
        "\n{:<20} {:>12} {:>12} {:>14}",
        "server", "peak QPS", "avg ms", "lost"
    );
    let mut peaks = Vec::new();
    for (label, addr) in servers {
        let answer = integration_tests::dig::query(addr, "host42.test.org", "A", &[]).unwrap();
        assert_eq!(
            answer.data_of("A"),
            [address(42)],
            "{label} answers wrongly:\n{}",
            answer.raw
        );
        let run = dnsperf(addr, &queries, None, false);
        println!(
            "{label:<20} {:>12.0} {:>12.3} {:>14}",
            run.qps, run.avg_ms, run.lost
        );
        peaks.push((label, addr, run.qps));
    }
    let peak_of = |label: &str| peaks.iter().find(|p| p.0 == label).unwrap().2;
    let ours_peak = peak_of("dns-server");
    println!(
        "\ndns-server / CoreDNS+cache = {:.2}x (target >= 3x); dns-server / Knot = {:.0}% (target >= 80%); RRL on / off = {:.1}%",
        ours_peak / peak_of("CoreDNS etcd+cache"),
        100.0 * ours_peak / peak_of("Knot (zone file)"),
        100.0 * ours_peak / peak_of("dns-server RRL off")
    );

    println!("\nlatency at half of each server's own peak (every query timed by dnsperf -v):");
    println!(
        "{:<20} {:>10} {:>10} {:>10} {:>10}",
        "server", "rate", "p50 ms", "p99 ms", "max ms"
    );
    for (label, addr, peak) in &peaks {
        let rate = (peak / 2.0) as u64;
        let run = dnsperf(*addr, &queries, Some(rate.max(1)), true);
        let lat = sorted(run.latencies_ms);
        println!(
            "{label:<20} {rate:>10} {:>10.3} {:>10.3} {:>10.3}",
            percentile(&lat, 50.0),
            percentile(&lat, 99.0),
            lat.last().copied().unwrap_or(f64::NAN)
        );
    }

    println!(
        "dns-server RRL during the dnsperf runs: sent {}, slipped {}, dropped {} (none should be limited)",
        rrl_count(&ours, "sent"),
        rrl_count(&ours, "slipped"),
        rrl_count(&ours, "dropped")
    );

    println!(
        "\na spoofed flood from {FLOOD_SOURCES} addresses of 127.1.1.0/24, {FLOOD_RATE} queries/s for {FLOOD_SECONDS} s; answers received per second:"
    );
    println!(
        "{:<20} {:<24} {:>10} {:>12} {:>12}",
        "server", "flood", "whole/s", "truncated/s", "bytes out/in"
    );
    let sources: Vec<std::net::IpAddr> = (1..=FLOOD_SOURCES)
        .map(|host| std::net::IpAddr::from([127, 1, 1, host]))
        .collect();
    let floods: [(&str, QueryFor); 2] = [
        ("one name (A)", |n| {
            flood::query(n as u16, "host42.test.org", 1)
        }),
        ("random names (NXDOMAIN)", |n| {
            flood::query(n as u16, &format!("nx{n}.test.org"), 1)
        }),
    ];
    for (label, addr) in [
        ("dns-server", ours_addr),
        ("dns-server RRL off", ours_off_addr),
    ] {
        for (what, query) in floods {
            let window = Duration::from_secs(FLOOD_SECONDS);
            let count = flood::flood(addr, &sources, FLOOD_RATE, window, query).unwrap();
            let seconds = FLOOD_SECONDS as f64;
            println!(
                "{label:<20} {what:<24} {:>10.0} {:>12.0} {:>12.2}",
                count.answered as f64 / seconds,
                count.truncated as f64 / seconds,
                count.received_bytes as f64 / count.sent_bytes.max(1) as f64
            );
        }
    }

    println!("\na change in etcd until dns-server answers it ({CHANGES} puts, polled over UDP):");
    let socket = UdpSocket::bind(SocketAddr::from((POLLER, 0))).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut delays = Vec::new();
    for i in 0..CHANGES {
        let want = address(RECORDS + i);
        let value = format!(r#"{{"host":"{want}","targetstrip":1}}"#);
        let put_at = Instant::now();
        client
            .put(format!("/skydns/org/test/change{i}/0000abcd"), value, None)
            .await
            .unwrap();
        let seen = until_answered(
            &socket,
            ours_addr,
            &format!("change{i}.test.org"),
            &want,
            Duration::from_secs(2),
        );
        delays.push(seen.map_or(f64::INFINITY, |_| put_at.elapsed().as_secs_f64() * 1e3));
    }
    let delays = sorted(delays);
    println!(
        "put -> answered: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 < 50 ms; CoreDNS reads etcd per query, with cache up to the TTL)",
        percentile(&delays, 50.0),
        percentile(&delays, 99.0),
        delays.last().copied().unwrap_or(f64::NAN)
    );
    drop((ours, ours_off, coredns, coredns_cache, knot));

    println!("\nloading {LOAD_RECORDS} records at start:");
    let empty_etcd = Etcd::start().await.unwrap();
    let (mut empty, _) = start_ours(&empty_etcd, |s| s);
    empty.wait_ready(Duration::from_secs(30)).unwrap();
    let baseline = rss_kib(empty.process().pid());
    drop(empty);
    let big = Etcd::start().await.unwrap();
    load(&mut big.client().await.unwrap(), LOAD_RECORDS).await;
    let started = Instant::now();
    let (mut loaded, _) = start_ours(&big, |s| s);
    loaded.wait_ready(Duration::from_secs(60)).unwrap();
    let took = started.elapsed();
    let rss = rss_kib(loaded.process().pid());
    println!(
        "ready after {:.2} s (target < 5 s); RSS {} MiB vs {} MiB empty = {:.0} bytes per record",
        took.as_secs_f64(),
        rss / 1024,
        baseline / 1024,
        (rss.saturating_sub(baseline) as f64 * 1024.0) / LOAD_RECORDS as f64
    );
}
