//! What an Internet-facing dns-server does against clients that take more than their share, with a real
//! etcd and real TCP connections on loopback: TCP quotas, and response rate limiting against floods from
//! "spoofed" prefixes (source addresses in 127.0.0.0/8, which is all local, so 127.1.1.x and 127.2.2.x are two
//! /24s).

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use integration_tests::daemon::Daemon;
use integration_tests::dig;
use integration_tests::etcd::Etcd;
use integration_tests::flood::{FloodCount, flood, flood_until, query};
use integration_tests::launch::DnsServer;
use integration_tests::wait;

/// Whether the server closed `stream` (a read sees the end) rather than keeping it open.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0))
}

/// One A question over an open connection, RFC 1035 framing; returns the answer's length.
fn ask_over(stream: &mut TcpStream) -> usize {
    let query: [u8; 32] = [
        0x12, 0x34, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // header
        5, b'n', b'g', b'i', b'n', b'x', 4, b't', b'e', b's', b't', 3, b'o', b'r', b'g',
        0, // name
        0x00, 0x01, 0x00, 0x01, // A IN
    ];
    stream
        .write_all(&(query.len() as u16).to_be_bytes())
        .unwrap();
    stream.write_all(&query).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).unwrap();
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut answer).unwrap();
    answer.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_client_cannot_hold_more_tcp_connections_than_its_quota_and_others_still_get_in() {
    let (_etcd, server, dns) = nginx_server(|s| s.tcp_max_per_client(2).tcp_max_clients(3)).await;
    let connect = |from: [u8; 4]| {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
        socket.connect(&dns.into()).unwrap();
        TcpStream::from(socket)
    };
    // Two idle connections from 127.0.0.1 are held; a third is closed at once.
    let mut held: Vec<TcpStream> = (0..2).map(|_| connect([127, 0, 0, 1])).collect();
    assert!(ask_over(&mut held[0]) > 12);
    let mut third = connect([127, 0, 0, 1]);
    assert!(
        closed_by_server(&mut third),
        "a third connection from one client was kept"
    );
    // Another client still gets in, up to the total.
    let mut other = connect([127, 0, 0, 2]);
    assert!(ask_over(&mut other) > 12);
    let mut fourth = connect([127, 0, 0, 3]);
    assert!(
        closed_by_server(&mut fourth),
        "a connection over the total was kept"
    );
    // A place given back is taken again.
    drop(held.pop());
    let mut again =
        wait::until_blocking("a freed place to be taken", Duration::from_secs(5), || {
            let mut stream = connect([127, 0, 0, 3]);
            if closed_by_server(&mut stream) {
                Err("still full".to_owned())
            } else {
                Ok(stream)
            }
        })
        .unwrap();
    assert!(ask_over(&mut again) > 12);
    // UDP is not affected.
    let answer = dig::query(dns, "nginx.test.org", "A", &[]).unwrap();
    assert_eq!(answer.data_of("A"), ["10.10.39.200"]);
    let metrics = server.get("/metrics").unwrap().body;
    for quota in ["per_client", "total"] {
        let sample = format!("groundwork_dns_tcp_refused_total{{quota=\"{quota}\"}}");
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(&sample) && !l.ends_with(" 0")),
            "no {sample} in {metrics}"
        );
    }
}

const A: u16 = 1;

/// A dns-server with `flags` added, serving `nginx.test.org A 10.10.39.200` from a fresh etcd.
async fn nginx_server(flags: impl FnOnce(DnsServer) -> DnsServer) -> (Etcd, Daemon, SocketAddr) {
    let etcd = Etcd::start().await.unwrap();
    let mut client = etcd.client().await.unwrap();
    client
        .put("/skydns/org/test/nginx", r#"{"host":"10.10.39.200"}"#, None)
        .await
        .unwrap();
    let (daemon, dns) = flags(DnsServer::new(env!("CARGO_BIN_EXE_dns-server"), &etcd))
        .serve()
        .unwrap();
    (etcd, daemon, dns)
}

fn addresses(prefix: [u8; 3], hosts: std::ops::RangeInclusive<u8>) -> Vec<IpAddr> {
    hosts
        .map(|host| IpAddr::from([prefix[0], prefix[1], prefix[2], host]))
        .collect()
}

/// The value of the sample `name` in a Prometheus text body (0 when absent).
fn sample(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flooded_prefix_gets_about_the_limit_plus_truncated_answers_and_another_prefix_is_unaffected()
 {
    const LIMIT: u32 = 50;
    const SECONDS: u32 = 2;
    let (_etcd, server, dns) = nginx_server(|s| s.rrl_responses_per_second(50)).await;
    let window = Duration::from_secs(u64::from(SECONDS));
    let run = |prefix: [u8; 3], hosts, rate, name: fn(u64) -> String| {
        flood(dns, &addresses(prefix, hosts), rate, window, |n| {
            query(n as u16, &name(n), A)
        })
    };
    let (flooded, random_names, quiet) = std::thread::scope(|scope| {
        // 20 times the limit for one name, from eight addresses of one /24.
        let flooded =
            scope.spawn(|| run([127, 1, 1], 1..=8, 20 * LIMIT, |_| "nginx.test.org".into()));
        // 20 times the limit of names that do not exist, each new, from another /24.
        let random_names = scope.spawn(|| {
            run([127, 3, 3], 1..=8, 20 * LIMIT, |n| {
                format!("r{n}x.test.org")
            })
        });
        // Under the limit, the same name, from a third /24.
        let quiet = scope.spawn(|| run([127, 2, 2], 1..=1, LIMIT / 2, |_| "nginx.test.org".into()));
        (
            flooded.join().unwrap().unwrap(),
            random_names.join().unwrap().unwrap(),
            quiet.join().unwrap().unwrap(),
        )
    });
    // At most a second's burst plus the rate over the window, with room for a slow machine (the sender may
    // take longer than the window, which lets more through, never less).
    let most = u64::from(3 * LIMIT * SECONDS);
    for (what, count) in [("one name", flooded), ("random names", random_names)] {
        eprintln!("{what}: {count:?}");
        let FloodCount {
            sent,
            answered,
            truncated,
            ..
        } = count;
        assert!(
            sent >= u64::from(10 * LIMIT * SECONDS),
            "{what}: sent only {sent}"
        );
        assert!(
            (u64::from(LIMIT)..=most).contains(&answered),
            "{what}: {answered} of {sent} answered whole (limit {LIMIT}/s over {SECONDS} s)"
        );
        // Slip 2: about every second answer over the limit comes back truncated.
        let limited = sent - answered;
        assert!(
            (limited / 4..=limited * 3 / 4).contains(&truncated),
            "{what}: {truncated} truncated of {limited} limited"
        );
    }
    assert_eq!(
        (quiet.answered, quiet.truncated),
        (quiet.sent, 0),
        "a prefix under the limit lost answers"
    );
    // Counted in the metric, once the serving threads add up what they tallied.
    wait::until_blocking("RRL counters", Duration::from_secs(5), || {
        let metrics = server.get("/metrics")?.body;
        let counted = |action: &str| {
            sample(
                &metrics,
                &format!("groundwork_dns_rrl_responses_total{{action=\"{action}\"}}"),
            )
        };
        let (sent, slipped, dropped) = (counted("sent"), counted("slipped"), counted("dropped"));
        let whole = flooded.answered + random_names.answered + quiet.answered;
        let truncated = flooded.truncated + random_names.truncated;
        if sent >= whole && slipped >= truncated && dropped > 0 {
            Ok(())
        } else {
            Err(format!("sent {sent}, slipped {slipped}, dropped {dropped}"))
        }
    })
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_client_in_a_flooded_prefix_gets_a_truncated_answer_and_resolves_over_tcp() {
    let (_etcd, _server, dns) = nginx_server(|s| s.rrl_responses_per_second(20)).await;
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let flooding = scope.spawn(|| {
            flood_until(
                dns,
                &addresses([127, 1, 1], 1..=4),
                1000,
                Duration::from_secs(30),
                &stop,
                |n| query(n as u16, "nginx.test.org", A),
            )
        });
        // From 127.1.1.200, in the flooded /24: a UDP try is answered, dropped (dig times out) or
        // truncated, and then dig asks again over TCP, which is not limited.
        let resolved = wait::until_blocking(
            "dig to get a truncated answer and resolve over TCP",
            Duration::from_secs(20),
            || {
                let answer = dig::query(
                    dns,
                    "nginx.test.org",
                    "A",
                    &["-b", "127.1.1.200", "+time=1"],
                )
                .map_err(|e| e.to_string())?;
                if answer.raw.contains("Truncated, retrying in TCP mode") {
                    Ok(answer)
                } else {
                    Err(format!("not truncated:\n{}", answer.raw))
                }
            },
        );
        stop.store(true, Ordering::Relaxed);
        let flooded = flooding.join().unwrap().unwrap();
        let answer = resolved.unwrap();
        assert_eq!(answer.status, "NOERROR", "{}", answer.raw);
        assert_eq!(answer.data_of("A"), ["10.10.39.200"], "{}", answer.raw);
        assert!(flooded.truncated > 0, "{flooded:?}");
    });
}
