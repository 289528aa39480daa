//! Helpers shared by dns-sync's tests against the real kube-apiserver and etcd: start the daemon, make
//! Services in a namespace, read the records etcd holds for a name, wait for records and Events.

// Each test binary uses a part of these.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use integration_tests::daemon::Daemon;
use integration_tests::etcd::Etcd;
use integration_tests::kube::KubeCluster;
use integration_tests::launch::DnsSync;
use integration_tests::wait;
use k8s_openapi::api::core::v1::{Event, Namespace, Service};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use proto::skydns::{KeyLayout, SkydnsRecord};

pub mod workloads;

/// The owner id the tests run dns-sync with.
pub const OWNER: &str = "gw";
/// The hostname annotation.
pub const HOSTNAME: &str = "external-dns.alpha.kubernetes.io/hostname";
/// The target annotation.
pub const TARGET: &str = "external-dns.alpha.kubernetes.io/target";

/// dns-sync for `test.org` against `cluster` and `etcd`, started.
pub fn start_sync(cluster: &KubeCluster, etcd: &Etcd) -> Daemon {
    start_sync_with(cluster, etcd, |s| s)
}

/// [`start_sync`] with `extra` flags.
pub fn start_sync_with(
    cluster: &KubeCluster,
    etcd: &Etcd,
    extra: impl FnOnce(DnsSync) -> DnsSync,
) -> Daemon {
    extra(sync_launcher(cluster, etcd)).start().unwrap()
}

/// Runs `launcher` with `--once` and waits, at most 30 s, for it to exit successfully.
pub fn run_once(launcher: DnsSync) {
    let mut once = launcher.once().start().unwrap();
    let status = once.process().wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "dns-sync --once failed:\n{}",
        once.process().log_tail(30)
    );
}

/// dns-server serving `test.org` from `etcd`, started, and the address it answers on.
pub fn dns_server(etcd: &Etcd) -> (Daemon, std::net::SocketAddr) {
    let binary = integration_tests::process::workspace_binary("dns-server").unwrap();
    integration_tests::launch::DnsServer::new(&binary, etcd)
        .serve()
        .unwrap()
}

/// The dns-sync launcher for `test.org` against `cluster` and `etcd`, not started.
pub fn sync_launcher(cluster: &KubeCluster, etcd: &Etcd) -> DnsSync {
    DnsSync::new(
        env!("CARGO_BIN_EXE_dns-sync"),
        OWNER,
        cluster.kubeconfig(),
        etcd,
    )
    .domain_filter("test.org")
}

/// Starts `launcher` expecting dns-sync to stop with a failure, and returns what it logged last.
pub fn failed_start_log(launcher: &DnsSync) -> String {
    match launcher.start() {
        Err(error) => error.to_string(),
        Ok(mut daemon) => {
            let status = daemon.process().wait_exit(Duration::from_secs(20));
            assert!(
                status.is_some_and(|s| !s.success()),
                "dns-sync must stop: {status:?}"
            );
            daemon.process().log_tail(20)
        }
    }
}

/// A kube-apiserver serving external-dns's `DNSEndpoint` CRD (from its pinned module).
pub async fn cluster_with_dns_endpoints() -> KubeCluster {
    let cluster = KubeCluster::start().await.unwrap();
    let crd = integration_tests::kube::dns_endpoint_crd().unwrap();
    cluster.install_crds(&[crd]).await.unwrap();
    cluster
}

/// A `DNSEndpoint` `default/NAME` with these `spec.endpoints`.
pub fn dns_endpoint(
    name: &str,
    endpoints: serde_json::Value,
) -> dns_sync::dnsendpoint::DNSEndpoint {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "externaldns.k8s.io/v1alpha1",
        "kind": "DNSEndpoint",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"endpoints": endpoints},
    }))
    .unwrap()
}

/// A LoadBalancer Service in `namespace` with these annotations.
pub fn service_in(namespace: &str, name: &str, annotations: &[(&str, &str)]) -> Service {
    let annotations: serde_json::Map<String, serde_json::Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
    }))
    .unwrap()
}

/// A LoadBalancer Service in `default` asking for `hostnames`.
pub fn service(name: &str, hostnames: &str) -> Service {
    service_in("default", name, &[(HOSTNAME, hostnames)])
}

/// Creates namespaces.
pub async fn create_namespaces(cluster: &KubeCluster, names: &[&str]) {
    let api: Api<Namespace> = Api::all(cluster.client());
    for name in names {
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        api.create(&PostParams::default(), &namespace)
            .await
            .unwrap();
    }
}

/// Creates `service` (in its namespace) and, with `ip`, gives it that status address.
pub async fn create(cluster: &KubeCluster, service: &Service, ip: Option<&str>) {
    let namespace = service.metadata.namespace.as_deref().unwrap();
    let api: Api<Service> = Api::namespaced(cluster.client(), namespace);
    api.create(&PostParams::default(), service).await.unwrap();
    if let Some(ip) = ip {
        let name = service.metadata.name.as_deref().unwrap();
        set_service_ip_in(cluster, namespace, name, ip).await;
    }
}

/// A Service in `default` asking for `hostnames` at `ip`.
pub async fn create_service(cluster: &KubeCluster, name: &str, hostnames: &str, ip: &str) {
    create(cluster, &service(name, hostnames), Some(ip)).await;
}

/// Sets the status address of a Service.
pub async fn set_service_ip_in(cluster: &KubeCluster, namespace: &str, name: &str, ip: &str) {
    let api: Api<Service> = Api::namespaced(cluster.client(), namespace);
    let status = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// Sets the status address of a Service in `default`.
pub async fn set_service_ip(cluster: &KubeCluster, name: &str, ip: &str) {
    set_service_ip_in(cluster, "default", name, ip).await;
}

/// Every record stored for `name` (at its directory's own key, and the keys directly below it), as (key,
/// record, create revision).
pub async fn records_of(etcd: &Etcd, name: &str) -> Vec<(String, SkydnsRecord, i64)> {
    let base = KeyLayout::default().directory_of(name).unwrap();
    let dir = format!("{base}/");
    let response = etcd
        .client()
        .await
        .unwrap()
        .get(base.clone(), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    response
        .kvs()
        .iter()
        .filter(|kv| {
            let key = kv.key_str().unwrap();
            key == base
                || key
                    .strip_prefix(&dir)
                    .is_some_and(|rest| !rest.contains('/'))
        })
        .map(|kv| {
            let key = kv.key_str().unwrap().to_owned();
            let record = SkydnsRecord::from_etcd(&key, kv.value()).unwrap();
            (key, record, kv.create_revision())
        })
        .collect()
}

/// Every key under `prefix` with its value and modification revision.
pub async fn keys_under(etcd: &Etcd, prefix: &str) -> Vec<(String, String, i64)> {
    let response = etcd
        .client()
        .await
        .unwrap()
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    response
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_owned(),
                kv.value_str().unwrap().to_owned(),
                kv.mod_revision(),
            )
        })
        .collect()
}

/// Waits until the hosts of `owner`'s records for `name` are exactly `hosts`; returns how long it took.
pub async fn wait_hosts(etcd: &Etcd, name: &str, owner: &str, hosts: &[&str]) -> Duration {
    let start = Instant::now();
    let mut want: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
    want.sort();
    wait::until(
        &format!("{name} to hold {want:?} for {owner:?}"),
        Duration::from_secs(20),
        || {
            let want = want.clone();
            async move {
                let mut got: Vec<String> = records_of(etcd, name)
                    .await
                    .into_iter()
                    .filter(|(_, r, _)| r.owner == owner)
                    .map(|(_, r, _)| r.host)
                    .collect();
                got.sort();
                if got == want {
                    Ok(())
                } else {
                    Err(format!("{got:?}"))
                }
            }
        },
    )
    .await
    .unwrap();
    start.elapsed()
}

/// Every (name, host) pair under `/skydns` in `etcd`, as `"name host"`, sorted: the address and alias
/// records, not TXT (external-dns's registry), each at the name it is served under (`targetstrip` applied).
pub async fn served_pairs(etcd: &Etcd) -> Vec<String> {
    let layout = KeyLayout::default();
    let mut pairs: Vec<String> = keys_under(etcd, "/skydns/")
        .await
        .into_iter()
        .filter_map(|(key, value, _)| {
            let record = SkydnsRecord::from_etcd(&key, value.as_bytes()).ok()?;
            let name = layout.name_of(&key)?;
            let strip = usize::try_from(record.target_strip).ok()?;
            let name = name.splitn(strip + 1, '.').last()?.to_owned();
            record
                .text
                .is_empty()
                .then(|| format!("{name} {}", record.host))
        })
        .collect();
    pairs.sort();
    pairs
}

/// Waits until `server` answers `name` `rtype` with exactly the (sorted) data `want`.
pub fn wait_answer(server: std::net::SocketAddr, rtype: &str, name: &str, want: &[&str]) {
    wait::until_blocking(
        &format!("{rtype} {name} -> {want:?}"),
        Duration::from_secs(20),
        || {
            let answer = integration_tests::dig::query(server, name, rtype, &[])
                .map_err(|e| e.to_string())?;
            let mut got = answer.data_of(rtype);
            got.sort();
            if got == want { Ok(()) } else { Err(answer.raw) }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Every Event about object `name` in `namespace`.
async fn list_events(cluster: &KubeCluster, namespace: &str, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(cluster.client(), namespace);
    let selector = format!("involvedObject.name={name}");
    api.list(&ListParams::default().fields(&selector))
        .await
        .unwrap()
        .items
}

/// The (reason, message) of every Event about object `name` in `namespace`.
pub async fn events_in(
    cluster: &KubeCluster,
    namespace: &str,
    name: &str,
) -> Vec<(String, String)> {
    list_events(cluster, namespace, name)
        .await
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// The (type, reason, message) of every Event about object `name` in `namespace`.
pub async fn events_with_type(
    cluster: &KubeCluster,
    namespace: &str,
    name: &str,
) -> Vec<(String, String, String)> {
    list_events(cluster, namespace, name)
        .await
        .into_iter()
        .map(|e| {
            let message = e.message.unwrap_or_default();
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                message,
            )
        })
        .collect()
}

/// The (reason, message) of every Event about object `name` in `default`.
pub async fn events_for(cluster: &KubeCluster, name: &str) -> Vec<(String, String)> {
    events_in(cluster, "default", name).await
}

/// Waits for an Event of `reason` on object `namespace/name` whose message contains every one of `words`.
pub async fn wait_event(
    cluster: &KubeCluster,
    namespace: &str,
    name: &str,
    reason: &str,
    words: &[&str],
) -> String {
    wait::until(
        &format!("a {reason} event on {namespace}/{name} saying {words:?}"),
        Duration::from_secs(20),
        || async {
            let events = events_in(cluster, namespace, name).await;
            events
                .iter()
                .find(|(r, note)| r == reason && words.iter().all(|w| note.contains(w)))
                .map(|(_, note)| note.clone())
                .ok_or_else(|| format!("{events:?}"))
        },
    )
    .await
    .unwrap()
}

/// Waits for a `Rejected` Event on Service `default/name` whose note contains every one of `words`.
pub async fn wait_rejected(cluster: &KubeCluster, name: &str, words: &[&str]) {
    wait_event(cluster, "default", name, "Rejected", words).await;
}
