//! Side-by-side speed of dns-sync and external-dns (CoreDNS provider) against the same real kube-apiserver
//! and etcd: time from a Service's (or an Ingress's) status getting its address, or an HTTPRoute's status
//! saying its Gateway accepted it, to the etcd commit, and to the name being answered by dns-server and by
//! CoreDNS (etcd plugin) reading that same etcd; etcd writes per change; and the initial sync of 5,000
//! annotated Services and of 5,000 HTTPRoutes.
//!
//! Run: `cargo bench -p dns-sync --bench propagation` (needs the peers from `scripts/build-peers`; builds
//! the release dns-server if it is not there). Figures go to `docs/benchmarks.md` by hand.

// A benchmark program panics like a test does when its set-up fails.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use etcd_client::{EventType, WatchOptions};
use futures::StreamExt;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use integration_tests::etcd::Etcd;
use integration_tests::gateway_api;
use integration_tests::kube::{GatewayApiChannel, KubeCluster, gateway_api_crds};
use integration_tests::launch::{DnsServer, DnsSync};
use integration_tests::peers::CoreDns;
use integration_tests::peers::{external_dns, external_dns_once};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

const BULK: usize = 5_000;

fn service(name: &str, hostname: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default",
            "annotations": {"external-dns.alpha.kubernetes.io/hostname": hostname}},
        // 5,000 Services would exhaust the NodePort range.
        "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "ports": [{"port": 80}]},
    }))
    .unwrap()
}

fn ingress(name: &str, hostname: &str) -> Ingress {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"rules": [{"host": hostname, "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]},
    }))
    .unwrap()
}

/// The Gateway (`default/edge`) the HTTPRoutes attach to, and its address.
const GATEWAY: &str = "edge";
const GATEWAY_IP: &str = "10.99.0.1";

/// Installs the Gateway API CRDs and creates the Gateway every HTTPRoute attaches to, with its address.
async fn create_gateway(cluster: &KubeCluster) {
    cluster
        .install_crds(&gateway_api_crds(GatewayApiChannel::Standard).unwrap())
        .await
        .unwrap();
    let spec = serde_json::json!({"gatewayClassName": "lab",
        "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]});
    gateway_api::create(
        cluster,
        "Gateway",
        "default",
        GATEWAY,
        serde_json::json!({}),
        spec,
    )
    .await
    .unwrap();
    gateway_api::set_gateway_addresses(cluster, "default", GATEWAY, &[GATEWAY_IP])
        .await
        .unwrap();
}

/// A new HTTPRoute for `host` on the Gateway, then its status saying the Gateway accepted it.
async fn create_route(cluster: &KubeCluster, name: &str, host: &str) {
    let parent = serde_json::json!({"name": GATEWAY});
    let spec = serde_json::json!({"parentRefs": [parent.clone()], "hostnames": [host]});
    gateway_api::create(
        cluster,
        "HTTPRoute",
        "default",
        name,
        serde_json::json!({}),
        spec,
    )
    .await
    .unwrap();
    gateway_api::set_route_status(cluster, "HTTPRoute", "default", name, &[(parent, true)])
        .await
        .unwrap();
}

/// What changes in a round: a new annotated LoadBalancer Service, a new Ingress with a host, or a new
/// HTTPRoute accepted by the Gateway.
#[derive(Clone, Copy)]
enum Object {
    Service,
    Ingress,
    HttpRoute,
}

/// Creates the object for `host`, then writes `ip` into its status (an HTTPRoute's status says it is
/// accepted; its address is the Gateway's); returns the address to expect once the status write returned.
async fn create_and_publish(
    cluster: &KubeCluster,
    object: Object,
    name: &str,
    host: &str,
    ip: &str,
) -> String {
    match object {
        Object::HttpRoute => {
            create_route(cluster, name, host).await;
            return GATEWAY_IP.to_owned();
        }
        Object::Service => {
            let api: Api<Service> = Api::namespaced(cluster.client(), "default");
            api.create(&PostParams::default(), &service(name, host))
                .await
                .unwrap();
            set_ip(&api, name, ip).await;
        }
        Object::Ingress => {
            let api: Api<Ingress> = Api::namespaced(cluster.client(), "default");
            api.create(&PostParams::default(), &ingress(name, host))
                .await
                .unwrap();
            let status = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}});
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap();
        }
    }
    ip.to_owned()
}

async fn set_ip(api: &Api<Service>, name: &str, ip: &str) {
    let status = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

fn answered(socket: &UdpSocket, server: SocketAddr, name: &str, want: &str) -> bool {
    let mut query = Message::query();
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    socket.send_to(&query.to_vec().unwrap(), server).unwrap();
    let mut buffer = [0u8; 1500];
    socket
        .recv_from(&mut buffer)
        .ok()
        .and_then(|(len, _)| Message::from_vec(&buffer[..len]).ok())
        .is_some_and(|m| m.answers.iter().any(|r| r.data.to_string() == want))
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((p / 100.0) * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}

struct Propagation {
    to_etcd_ms: Vec<f64>,
    to_dns_ms: Vec<f64>,
    to_coredns_ms: Vec<f64>,
    writes: i64,
    missed: usize,
}

/// Where the names are asked.
struct Servers {
    dns_server: SocketAddr,
    coredns: SocketAddr,
}

/// `count` changes, each a new object getting its address; times until a put for its name reaches etcd
/// (seen on a watch) and until dns-server and CoreDNS answer it. The creation is not timed: the clock
/// starts when the status write returns (the moment the address is known).
async fn propagate(
    cluster: &KubeCluster,
    etcd: &Etcd,
    servers: &Servers,
    object: Object,
    label: &str,
    count: usize,
    limit: Duration,
) -> Propagation {
    let mut client = etcd.client().await.unwrap();
    let start_revision = client
        .get("/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let mut watch = client
        .watch("/skydns/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let (puts, mut put_keys) = mpsc::unbounded_channel::<(String, Instant)>();
    let watcher = tokio::spawn(async move {
        while let Ok(Some(response)) = watch.message().await {
            for event in response.events() {
                if event.event_type() == EventType::Put
                    && let Some(kv) = event.kv()
                {
                    let _ =
                        puts.send((kv.key_str().unwrap_or_default().to_owned(), Instant::now()));
                }
            }
        }
    });
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut result = Propagation {
        to_etcd_ms: Vec::new(),
        to_dns_ms: Vec::new(),
        to_coredns_ms: Vec::new(),
        writes: 0,
        missed: 0,
    };
    for i in 0..count {
        let name = format!("{label}-{i}");
        let host = format!("{name}.test.org");
        let ip = format!("10.77.{}.{}", i / 250, i % 250 + 1);
        let dir = format!("/skydns/org/test/{name}/");
        let started = Instant::now();
        let ip = create_and_publish(cluster, object, &name, &host, &ip).await;
        let started = started.max(Instant::now());
        let mut to_etcd = None;
        let mut to_dns = None;
        let mut to_coredns = None;
        while started.elapsed() < limit
            && (to_etcd.is_none() || to_dns.is_none() || to_coredns.is_none())
        {
            while let Ok((key, at)) = put_keys.try_recv() {
                if to_etcd.is_none() && key.starts_with(&dir) {
                    to_etcd = Some(at.duration_since(started));
                }
            }
            if to_dns.is_none() && answered(&socket, servers.dns_server, &host, &ip) {
                to_dns = Some(started.elapsed());
            }
            if to_coredns.is_none() && answered(&socket, servers.coredns, &host, &ip) {
                to_coredns = Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        match (to_etcd, to_dns, to_coredns) {
            (Some(e), Some(d), Some(c)) => {
                result.to_etcd_ms.push(e.as_secs_f64() * 1e3);
                result.to_dns_ms.push(d.as_secs_f64() * 1e3);
                result.to_coredns_ms.push(c.as_secs_f64() * 1e3);
            }
            _ => result.missed += 1,
        }
    }
    // Let in-flight periodic work settle into the count, then count revisions (one per write txn).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let end_revision = client
        .get("/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    result.writes = end_revision - start_revision;
    watcher.abort();
    result
}

fn report(label: &str, run: &Propagation, count: usize) {
    println!(
        "{label:<42} {:>4} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>8.2} {:>6}",
        run.to_etcd_ms.len(),
        percentile(&run.to_etcd_ms, 50.0),
        percentile(&run.to_etcd_ms, 99.0),
        percentile(&run.to_dns_ms, 50.0),
        percentile(&run.to_dns_ms, 99.0),
        percentile(&run.to_coredns_ms, 50.0),
        percentile(&run.to_coredns_ms, 99.0),
        run.writes as f64 / count as f64,
        run.missed,
    );
}

fn dns_server_binary() -> PathBuf {
    let path = integration_tests::workspace_root().join("target/release/dns-server");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "-p", "dns-server"])
        .current_dir(integration_tests::workspace_root())
        .status()
        .unwrap();
    assert!(status.success() && path.is_file());
    path
}

fn dns_sync(cluster: &KubeCluster, etcd: &Etcd, owner: &str) -> DnsSync {
    DnsSync::new(
        env!("CARGO_BIN_EXE_dns-sync"),
        owner,
        cluster.kubeconfig(),
        etcd,
    )
    .domain_filter("test.org")
    .source("service")
    .source("ingress")
    .source("gateway-httproute")
}

#[tokio::main]
async fn main() {
    let cluster = KubeCluster::start().await.unwrap();
    let etcd = Etcd::start().await.unwrap();
    let server = dns_server_binary();
    // The poller asks for each new name about every millisecond until it is answered, NXDOMAIN until then:
    // monitoring, exempt from response rate limiting, which would otherwise drop some of its answers.
    let (_dns_server, dns_server) = DnsServer::new(&server, &etcd)
        .rrl_exempt("127.0.0.1/32")
        .serve()
        .unwrap();
    create_gateway(&cluster).await;
    let coredns = CoreDns::start_with_etcd(&etcd, &["test.org"])
        .await
        .unwrap();
    let servers = Servers {
        dns_server,
        coredns: coredns.addr(),
    };

    println!(
        "status patched -> record in etcd (watch) -> answered by dns-server and by CoreDNS (UDP), ms; writes = etcd revisions per change"
    );
    println!(
        "{:<42} {:>4} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6}",
        "writer / object",
        "n",
        "etcd p50",
        "etcd p99",
        "dnssrv 50",
        "dnssrv 99",
        "coredns50",
        "coredns99",
        "writes",
        "missed"
    );

    let mut sync = dns_sync(&cluster, &etcd, "gw").start().unwrap();
    sync.wait_ready(Duration::from_secs(20)).unwrap();
    for (object, label, what) in [
        (Object::Service, "sync", "Service"),
        (Object::Ingress, "sync-ing", "Ingress"),
        (Object::HttpRoute, "sync-rt", "HTTPRoute"),
    ] {
        let count = 50;
        let limit = Duration::from_secs(10);
        let run = propagate(&cluster, &etcd, &servers, object, label, count, limit).await;
        report(&format!("dns-sync (debounce 5ms) / {what}"), &run, count);
    }
    drop(sync);

    let kubeconfig = cluster.kubeconfig().to_owned();
    let (events, _dir) = external_dns(
        &kubeconfig,
        &etcd,
        &[
            "--source=service",
            "--source=ingress",
            "--source=gateway-httproute",
            "--domain-filter=test.org",
            "--txt-owner-id=extdns-events",
            "--events",
        ],
    )
    .unwrap();
    for (object, label, what) in [
        (Object::Service, "events", "Service"),
        (Object::Ingress, "events-ing", "Ingress"),
        (Object::HttpRoute, "events-rt", "HTTPRoute"),
    ] {
        let count = 10;
        let limit = Duration::from_secs(20);
        let run = propagate(&cluster, &etcd, &servers, object, label, count, limit).await;
        report(&format!("external-dns --events / {what}"), &run, count);
    }
    drop(events);

    let (default, _dir) = external_dns(
        &kubeconfig,
        &etcd,
        &[
            "--source=service",
            "--domain-filter=test.org",
            "--txt-owner-id=extdns-default",
        ],
    )
    .unwrap();
    let count = 3;
    let limit = Duration::from_secs(75);
    let run = propagate(
        &cluster,
        &etcd,
        &servers,
        Object::Service,
        "default",
        count,
        limit,
    )
    .await;
    report("external-dns (default, interval 1m) / Service", &run, count);
    drop(default);

    println!("\ninitial sync of {BULK} annotated LoadBalancer Services:");
    let api: Api<Service> = Api::namespaced(cluster.client(), "default");
    let created = Instant::now();
    futures::stream::iter(0..BULK)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("bulk-{i}");
                api.create(
                    &PostParams::default(),
                    &service(&name, &format!("{name}.test.org")),
                )
                .await
                .unwrap();
                set_ip(&api, &name, &format!("10.88.{}.{}", i / 250, i % 250 + 1)).await;
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    println!("(created in {:.1} s)", created.elapsed().as_secs_f64());
    // Services and Ingresses created so far, each one name; the 100 that the first dns-sync (owner `gw`)
    // wrote stay its own, so this one (owner `bulk`) manages the rest.
    let total = BULK + 50 + 10 + 3 + 50 + 10 + 50 + 10;
    let others = 50 + 50 + 50;
    let bulk_sync = dns_sync(&cluster, &etcd, "bulk");
    let started = Instant::now();
    let mut bulk = bulk_sync.start().unwrap();
    bulk.wait_ready(Duration::from_secs(120)).unwrap();
    let took = started.elapsed();
    let metrics = bulk.get("/metrics").unwrap().body;
    let managed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("groundwork_dns_sync_records_managed "))
        .unwrap_or("?")
        .to_owned();
    println!(
        "dns-sync: process start -> {managed} records written and ready: {:.2} s (target < 10 s; {total} names, {others} of another owner left alone)",
        took.as_secs_f64()
    );
    drop(bulk);
    // An empty etcd of its own: records dns-sync wrote would count as foreign to external-dns's registry.
    let fresh = Etcd::start().await.unwrap();
    let started = Instant::now();
    let run = external_dns_once(
        &kubeconfig,
        &fresh,
        &[
            "--source=service",
            "--domain-filter=test.org",
            "--txt-owner-id=bulk-extdns",
        ],
    )
    .await
    .unwrap();
    let keys = run.log.matches("Add/set key").count();
    println!(
        "external-dns --once: {:.2} s for the same Services ({keys} keys written)",
        started.elapsed().as_secs_f64()
    );
    bulk_routes(&cluster, &kubeconfig).await;
}

/// The initial sync of 5,000 HTTPRoutes: dns-sync reading only routes, from process start to ready, and
/// external-dns `--once` into an empty etcd, each on its own etcd.
async fn bulk_routes(cluster: &KubeCluster, kubeconfig: &std::path::Path) {
    println!(
        "\ninitial sync of {BULK} HTTPRoutes (plus the 60 above), each writer into an empty etcd:"
    );
    let created = Instant::now();
    futures::stream::iter(0..BULK)
        .map(|i| async move {
            let name = format!("route-{i}");
            create_route(cluster, &name, &format!("{name}.test.org")).await;
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    println!("(created in {:.1} s)", created.elapsed().as_secs_f64());
    let ours = Etcd::start().await.unwrap();
    let launcher = DnsSync::new(env!("CARGO_BIN_EXE_dns-sync"), "routes", kubeconfig, &ours)
        .domain_filter("test.org")
        .source("gateway-httproute");
    let started = Instant::now();
    let mut sync = launcher.start().unwrap();
    sync.wait_ready(Duration::from_secs(120)).unwrap();
    let took = started.elapsed();
    let metrics = sync.get("/metrics").unwrap().body;
    let managed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("groundwork_dns_sync_records_managed "))
        .unwrap_or("?")
        .to_owned();
    println!(
        "dns-sync: process start -> {managed} route records written and ready: {:.2} s",
        took.as_secs_f64()
    );
    drop(sync);
    let theirs = Etcd::start().await.unwrap();
    let started = Instant::now();
    let run = external_dns_once(
        kubeconfig,
        &theirs,
        &[
            "--source=gateway-httproute",
            "--domain-filter=test.org",
            "--txt-owner-id=routes-extdns",
        ],
    )
    .await
    .unwrap();
    let keys = run.log.matches("Add/set key").count();
    println!(
        "external-dns --once: {:.2} s for the same HTTPRoutes ({keys} keys written)",
        started.elapsed().as_secs_f64()
    );
}
