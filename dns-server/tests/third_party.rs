//! Outside judges of the zone dns-server serves, each run for real inside a network namespace whose only
//! interface is loopback (nothing they send can leave the machine):
//! - Zonemaster, the DNS community's zone checker, on a zone with what users publish and two name servers
//!   (IPv4 and IPv6 each) inside the zone, as an undelegated test: no ERROR, and only the WARNING and
//!   NOTICE messages that the sealed network or a documented limit explains (`docs/dns-compat.md`).
//! - unbound, the resolver users put in front of it, with a stub zone: every kind of record resolves
//!   through it, and a name published later appears.
//!
//! Needs root (network namespaces) and Debian's `zonemaster-cli` and `unbound` (`scripts/install-deps`).

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use integration_tests::daemon::Daemon;
use integration_tests::dig::{self, Answer};
use integration_tests::etcd::Etcd;
use integration_tests::forward::Forward;
use integration_tests::launch::DnsServer;
use integration_tests::netlab::{Host, SealedNamespace};
use integration_tests::unbound::Unbound;
use integration_tests::zonemaster::{self, Level};
use integration_tests::{require_root, wait};

/// What a user publishes in `test.org`, as external-dns and dns-sync write it.
const RECORDS: &[(&str, &str)] = &[
    // The apex: an address and the domain's mail exchanger (Zonemaster's ZONE09 asks for one).
    ("/skydns/org/test/dns/apex/a1", r#"{"host":"192.0.2.80"}"#),
    (
        "/skydns/org/test/dns/apex/mx1",
        r#"{"host":"mail.test.org","mail":true,"priority":10}"#,
    ),
    ("/skydns/org/test/mail/x1", r#"{"host":"192.0.2.25"}"#),
    // An Ingress host with an IPv4 and an IPv6 address (one key per target).
    (
        "/skydns/org/test/www/1a2b3c4d",
        r#"{"host":"192.0.2.10","targetstrip":1}"#,
    ),
    (
        "/skydns/org/test/www/2b3c4d5e",
        r#"{"host":"2001:db8::10","targetstrip":1}"#,
    ),
    // A CNAME to it, a service's SRV record, a TXT record and a wildcard Ingress host.
    (
        "/skydns/org/test/alias/x1",
        r#"{"host":"www.test.org","targetstrip":1}"#,
    ),
    (
        "/skydns/org/test/_tcp/_xmpp/x1",
        r#"{"host":"www.test.org","port":5222,"priority":10}"#,
    ),
    ("/skydns/org/test/info/x1", r#"{"text":"hello world"}"#),
    (
        "/skydns/org/test/apps/*/x1",
        r#"{"host":"192.0.2.40","targetstrip":1}"#,
    ),
];

/// An etcd holding [`RECORDS`].
async fn published_zone() -> Etcd {
    let etcd = Etcd::start().await.unwrap();
    publish(&etcd, RECORDS).await;
    etcd
}

/// Writes `records` (key, value) to `etcd`.
async fn publish(etcd: &Etcd, records: &[(&str, &str)]) {
    let mut client = etcd.client().await.unwrap();
    for (key, value) in records {
        client.put(*key, *value, None).await.unwrap();
    }
}

/// A dns-server in `host`'s namespace on `listen`, reading `etcd` through `forward`, with `extra` flags.
fn dns_server(
    host: &Host,
    forward: &Forward,
    etcd: &Etcd,
    listen: SocketAddr,
    extra: impl FnOnce(DnsServer) -> DnsServer,
) -> Daemon {
    let server = DnsServer::new(env!("CARGO_BIN_EXE_dns-server"), etcd)
        .listen(listen)
        .etcd_through(forward);
    let (daemon, _) = extra(server).serve_in(host).unwrap();
    daemon
}

/// Every WARNING and NOTICE Zonemaster may give, with why it is expected. Anything else fails the test:
/// either dns-server has a fault to fix, or a new explanation belongs here and in `docs/dns-compat.md`.
const EXPLAINED: &[(&str, &str)] = &[
    (
        "NO_RESPONSE_PTR_QUERY",
        "ADDRESS02: the reverse zones of the name servers' addresses are reached from the root servers, \
         and the sealed namespace has no route to them",
    ),
    (
        "NEITHER_DNSKEY_NOR_DS",
        "DNSSEC07: dns-server does not sign zones (not supported yet)",
    ),
    (
        "NOT_SIGNED",
        "DNSSEC: dns-server does not sign zones (not supported yet)",
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn zonemaster_finds_nothing_but_what_the_sealed_network_explains() {
    require_root("create the network namespace Zonemaster runs in").unwrap();
    let etcd = published_zone().await;
    // Public unicast addresses, so that ADDRESS01 judges them as it would a real deployment's (TEST-NET
    // and other special-purpose blocks are an ERROR there). They exist only on the namespace's loopback,
    // which has no route anywhere else: no packet to them can leave the machine.
    let ns1: [IpAddr; 2] = ["192.0.53.1".parse().unwrap(), "2a01:53::1".parse().unwrap()];
    let ns2: [IpAddr; 2] = [
        "198.51.53.2".parse().unwrap(),
        "2a02:53::2".parse().unwrap(),
    ];
    let addresses: Vec<IpAddr> = ns1.iter().chain(&ns2).copied().collect();
    let sealed = SealedNamespace::create("zonemaster", &addresses).unwrap();
    let host = sealed.host();
    let forward = Forward::start(host, etcd.client_addr().unwrap()).unwrap();
    let name_servers = format!(
        "ns1.test.org={},{};ns2.test.org={},{}",
        ns1[0], ns1[1], ns2[0], ns2[1]
    );
    // One process per address (two replicas of each name server, as a DaemonSet on two nodes would be).
    let _servers: Vec<Daemon> = addresses
        .iter()
        .map(|ip| {
            dns_server(host, &forward, &etcd, SocketAddr::new(*ip, 53), |s| {
                s.ns(&name_servers)
            })
        })
        .collect();

    let start = Instant::now();
    let delegation: Vec<(&str, IpAddr)> = ns1
        .iter()
        .map(|ip| ("ns1.test.org", *ip))
        .chain(ns2.iter().map(|ip| ("ns2.test.org", *ip)))
        .collect();
    let messages = zonemaster::check(host, "test.org", &delegation).unwrap();
    println!(
        "Zonemaster: {} messages in {:.1} s",
        messages.len(),
        start.elapsed().as_secs_f64()
    );
    for message in messages.iter().filter(|m| m.level >= Level::Notice) {
        println!("  {message}");
    }

    // It reached every server and liked what it saw there.
    for tag in [
        "ONE_SOA_SERIAL",
        "ONE_NS_SET",
        "ADDRESSES_MATCH",
        "ARE_AUTHORITATIVE",
        "EDNS0_SUPPORT",
        "ONE_SOA_TIME_PARAMETER_SET",
    ] {
        assert!(
            messages.iter().any(|m| m.tag == tag),
            "no {tag} from Zonemaster"
        );
    }
    let faults: Vec<String> = messages
        .iter()
        .filter(|m| m.level >= Level::Error)
        .map(ToString::to_string)
        .collect();
    assert!(
        faults.is_empty(),
        "Zonemaster errors:\n{}",
        faults.join("\n")
    );
    let unexplained: Vec<String> = messages
        .iter()
        .filter(|m| m.level >= Level::Notice)
        .filter(|m| !EXPLAINED.iter().any(|(tag, _)| *tag == m.tag))
        .map(ToString::to_string)
        .collect();
    assert!(
        unexplained.is_empty(),
        "Zonemaster messages nothing explains (fix dns-server, or explain them in EXPLAINED and \
         docs/dns-compat.md):\n{}",
        unexplained.join("\n")
    );
}

/// Asks `resolver` (recursion desired) from inside `host`'s namespace.
fn resolve(host: &Host, resolver: SocketAddr, name: &str, rtype: &str) -> Answer {
    dig::query_from(host, resolver, name, rtype, &["+recurse", "+time=5"]).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn unbound_with_a_stub_zone_resolves_what_users_publish() {
    require_root("create the network namespace unbound runs in").unwrap();
    let etcd = published_zone().await;
    let sealed = SealedNamespace::create("unbound", &[]).unwrap();
    let host = sealed.host();
    let forward = Forward::start(host, etcd.client_addr().unwrap()).unwrap();
    let authoritative: SocketAddr = ([127, 0, 0, 1], 5300).into();
    let _server = dns_server(host, &forward, &etcd, authoritative, |s| s);
    let start = Instant::now();
    let unbound =
        Unbound::with_stub_zone(host, ([127, 0, 0, 1], 53).into(), "test.org", authoritative)
            .unwrap();
    println!(
        "unbound answering after {:.0} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    let resolver = unbound.addr();
    let ask = |name: &str, rtype: &str| {
        let answer = resolve(host, resolver, name, rtype);
        assert!(answer.has_flag("ra"), "{}", answer.raw);
        answer
    };

    let cases: &[(&str, &str, &str, &[&str])] = &[
        ("www.test.org", "A", "A", &["192.0.2.10"]),
        ("www.test.org", "AAAA", "AAAA", &["2001:db8::10"]),
        ("test.org", "A", "A", &["192.0.2.80"]),
        ("test.org", "MX", "MX", &["10 mail.test.org."]),
        ("info.test.org", "TXT", "TXT", &["\"hello world\""]),
        (
            "_xmpp._tcp.test.org",
            "SRV",
            "SRV",
            &["10 100 5222 www.test.org."],
        ),
        ("shop.apps.test.org", "A", "A", &["192.0.2.40"]),
        // The CNAME, and its target chased by unbound inside the stub zone.
        ("alias.test.org", "A", "CNAME", &["www.test.org."]),
        ("alias.test.org", "A", "A", &["192.0.2.10"]),
    ];
    for (name, rtype, answer_type, want) in cases {
        let answer = ask(name, rtype);
        assert_eq!(answer.status, "NOERROR", "{name} {rtype}\n{}", answer.raw);
        assert_eq!(
            answer.data_of(answer_type),
            *want,
            "{name} {rtype}\n{}",
            answer.raw
        );
    }

    // Negative answers, cached no longer than the SOA's TTL (30 s) whatever the SOA minimum says.
    let missing = ask("missing.test.org", "A");
    assert_eq!(missing.status, "NXDOMAIN", "{}", missing.raw);
    let nodata = ask("info.test.org", "A");
    assert_eq!(nodata.status, "NOERROR", "{}", nodata.raw);
    assert!(nodata.answer.is_empty(), "{}", nodata.raw);
    for negative in [&missing, &nodata] {
        let soa = &negative.authority[0];
        assert!(
            soa.rtype == "SOA" && soa.ttl <= 30,
            "negative answer's SOA: {}",
            negative.raw
        );
    }

    // A name published now: once dns-server serves it, unbound resolves it at the first question. (A
    // name unbound was asked before, while it did not exist, would stay NXDOMAIN for up to 30 s.)
    let published = Instant::now();
    publish(
        &etcd,
        &[(
            "/skydns/org/test/added/x1",
            r#"{"host":"192.0.2.99","targetstrip":1}"#,
        )],
    )
    .await;
    wait::until_blocking(
        "dns-server to serve added.test.org",
        Duration::from_secs(10),
        || {
            let answer = dig::query_from(host, authoritative, "added.test.org", "A", &[])
                .map_err(|e| e.to_string())?;
            if answer.data_of("A") == ["192.0.2.99"] {
                Ok(())
            } else {
                Err(answer.status)
            }
        },
    )
    .unwrap();
    let added = ask("added.test.org", "A");
    assert_eq!(added.data_of("A"), ["192.0.2.99"], "{}", added.raw);
    println!(
        "published name resolved through unbound {:.0} ms after the etcd write",
        published.elapsed().as_secs_f64() * 1e3
    );
}
