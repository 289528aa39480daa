//! Speed and scale of the real `lb-controller` binary against the test bed's real kube-apiserver (issue 5,
//! "Speed and scale"):
//!
//! 1. Service created -> address in its status (seen on a watch), one Service at a time, on an empty
//!    cluster and again at scale.
//! 2. At scale (10,000 Services, 1,000 Ready Nodes each with a simulated speaker): time from controller start
//!    to every status written and every address held by a speaker; RSS at steady state; a restart (SIGTERM,
//!    start again with the same flags): time to ready and to every speaker holding its set again, with zero
//!    Service addresses and zero announcers changed; one speaker reset: only its addresses move.
//!
//! The simulated speakers are tonic clients in this process following the speaker's half of
//! `announce.proto` (Hello + Report, an acknowledging Heartbeat after each set, Heartbeats every lease/5,
//! reconnect with backoff 50 ms -> 1 s, and the controller-loss hold of rule 7), multiplexed over a few
//! HTTP/2 connections. The peer is MetalLB's controller (v0.15.2 from `scripts/build-peers metallb`, webhooks
//! off, an `IPAddressPool` of the same addresses), run alone on the same apiserver: before ours on the empty
//! cluster, and after ours on the same 10,000+ Services.
//!
//! Run: `cargo bench -p lb-controller --bench scale`. `LB_BENCH_SERVICES` and `LB_BENCH_SPEAKERS` scale it
//! down for a quick look. Figures go to `docs/benchmarks.md` by hand.

// A benchmark program panics like a test does when its set-up fails.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use integration_tests::daemon::Daemon;
use integration_tests::kube::{KubeCluster, status_ips};
use integration_tests::launch::LbController;
use integration_tests::metallb::MetalLb;
use integration_tests::process::free_port;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use lb_controller::pool::IPPool;
use proto::announce::v1 as pb;
use proto::announce::v1::announcer_client::AnnouncerClient;
use proto::speaker_messages;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// Sequential creates timed for the latency figure, on the empty cluster.
const LATENCY_SAMPLES: usize = 200;
/// Sequential creates timed again once the cluster is at scale.
const LATENCY_AT_SCALE: usize = 50;
/// HTTP/2 connections the simulated speakers share.
const CHANNELS: usize = 20;
/// `--controller-loss-hold` of the controller, and the simulated speakers' own hold (rule 7).
/// 2 s, or the lease when that is longer (the controller refuses a hold shorter than the lease).
fn hold() -> Duration {
    Duration::from_millis(u64::try_from(lease_ms().max(2000)).unwrap_or(u64::MAX))
}
/// `--speaker-lease` in milliseconds, unless `LB_BENCH_LEASE_MS` says otherwise (the brief's 1500 ms; the
/// controller's default is 1 s).
fn lease_ms() -> usize {
    // Read once: the simulated speakers consult it on every heartbeat.
    static LEASE_MS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LEASE_MS.get_or_init(|| size("LB_BENCH_LEASE_MS", 1500))
}

/// How late the simulated speakers sent their heartbeats (after the instant each was due), the worst in
/// microseconds and how many were later than a tenth of a lease: if the simulation itself falls behind,
/// the controller sees silence it did not cause.
static WORST_LATE_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static LATE_BEATS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static BEATS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// API creates in flight at once while setting up.
const CREATE_CONCURRENCY: usize = 32;
/// How often in-memory conditions (fed by watches and gRPC streams) are re-checked.
const CHECK_EVERY: Duration = Duration::from_millis(5);

fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---- what the API shows, from one watch on every Service ----

#[derive(Default)]
struct ServiceView {
    ips: HashMap<String, Vec<String>>,
    announcer: HashMap<String, String>,
    /// When a status with an address was first seen, per Service.
    first_ip: HashMap<String, Instant>,
}

impl ServiceView {
    fn with_ip(&self) -> usize {
        self.ips.values().filter(|ips| !ips.is_empty()).count()
    }
}

fn watch_services(client: Client) -> Arc<Mutex<ServiceView>> {
    let view = Arc::new(Mutex::new(ServiceView::default()));
    let shared = view.clone();
    tokio::spawn(async move {
        let stream =
            watcher(Api::<Service>::all(client), watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let now = Instant::now();
            match event {
                Ok(watcher::Event::Apply(svc) | watcher::Event::InitApply(svc)) => {
                    let key = format!(
                        "{}/{}",
                        svc.metadata.namespace.as_deref().unwrap_or_default(),
                        svc.metadata.name.as_deref().unwrap_or_default()
                    );
                    let ips = status_ips(&svc);
                    let mut view = shared.lock().unwrap();
                    if !ips.is_empty() {
                        view.first_ip.entry(key.clone()).or_insert(now);
                    }
                    match lb_controller::request::announcing_node(&svc) {
                        Some(node) => view.announcer.insert(key.clone(), node),
                        None => view.announcer.remove(&key),
                    };
                    view.ips.insert(key, ips);
                }
                Ok(watcher::Event::Delete(svc)) => {
                    let key = format!(
                        "{}/{}",
                        svc.metadata.namespace.as_deref().unwrap_or_default(),
                        svc.metadata.name.as_deref().unwrap_or_default()
                    );
                    let mut view = shared.lock().unwrap();
                    view.ips.remove(&key);
                    view.announcer.remove(&key);
                }
                Ok(_) => {}
                Err(error) => eprintln!("service watch: {error}"),
            }
        }
    });
    view
}

/// How far behind the simulated speakers' own heartbeats ran.
fn simulation_lateness() -> String {
    use std::sync::atomic::Ordering::Relaxed;
    format!(
        "simulated speakers: {} heartbeats, sent late by up to {:.1} ms, {} more than lease/10 late",
        BEATS.load(Relaxed),
        WORST_LATE_US.load(Relaxed) as f64 / 1e3,
        LATE_BEATS.load(Relaxed)
    )
}

/// Re-checks `probe` every [`CHECK_EVERY`] until it answers, or panics after `timeout` with its last word.
async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if started.elapsed() >= timeout => {
                panic!(
                    "timed out after {timeout:?} waiting for {what}: {last}; {}",
                    simulation_lateness()
                )
            }
            Err(_) => tokio::time::sleep(CHECK_EVERY).await,
        }
    }
}

// ---- simulated speakers ----

#[derive(Default)]
struct Held {
    /// What the speaker announces now.
    holding: BTreeSet<IpAddr>,
    /// Generation applied in the current session (0 until its first set).
    applied: u64,
    /// Last generation applied in any session (Hello.held_generation).
    held_generation: u64,
    /// Sessions in which a set arrived.
    sessions: u64,
    /// When the controller's side ended the last session: the controller-loss hold runs from here.
    lost_at: Option<Instant>,
    /// Times the hold ran out before a controller answered (the data plane would have gone dark).
    holds_expired: u64,
}

struct Speaker {
    node: String,
    held: Mutex<Held>,
    stop: CancellationToken,
}

/// Every address a speaker gained, with who and when: the record of announcer changes.
type Gains = Arc<Mutex<Vec<(IpAddr, String, Instant)>>>;

struct Fleet {
    speakers: Vec<Arc<Speaker>>,
    gains: Gains,
}

impl Fleet {
    fn start(count: usize, grpc: SocketAddr) -> Self {
        let channels: Vec<Channel> = (0..CHANNELS)
            .map(|_| {
                Endpoint::from_shared(format!("http://{grpc}"))
                    .unwrap()
                    .connect_timeout(Duration::from_secs(1))
                    .connect_lazy()
            })
            .collect();
        let gains: Gains = Arc::default();
        let speakers: Vec<Arc<Speaker>> = (0..count)
            .map(|i| {
                Arc::new(Speaker {
                    node: node_name(i),
                    held: Mutex::default(),
                    stop: CancellationToken::new(),
                })
            })
            .collect();
        for (i, speaker) in speakers.iter().enumerate() {
            tokio::spawn(run_speaker(
                speaker.clone(),
                channels[i % CHANNELS].clone(),
                gains.clone(),
            ));
        }
        Self { speakers, gains }
    }

    /// Which speaker holds each address; addresses held by two speakers are listed in the second map.
    fn holdings(&self) -> (BTreeMap<IpAddr, String>, BTreeSet<IpAddr>) {
        let mut holder = BTreeMap::new();
        let mut doubled = BTreeSet::new();
        for speaker in &self.speakers {
            for address in &speaker.held.lock().unwrap().holding {
                if holder.insert(*address, speaker.node.clone()).is_some() {
                    doubled.insert(*address);
                }
            }
        }
        (holder, doubled)
    }

    fn min_sessions(&self) -> u64 {
        self.speakers
            .iter()
            .map(|s| s.held.lock().unwrap().sessions)
            .min()
            .unwrap_or(0)
    }

    fn holds_expired(&self) -> u64 {
        self.speakers
            .iter()
            .map(|s| s.held.lock().unwrap().holds_expired)
            .sum()
    }
}

fn node_name(i: usize) -> String {
    format!("node-{i:04}")
}

async fn run_speaker(speaker: Arc<Speaker>, channel: Channel, gains: Gains) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let synced = tokio::select! {
            () = speaker.stop.cancelled() => return,
            synced = session(&speaker, channel.clone(), &gains) => synced,
        };
        if synced {
            backoff = Duration::from_millis(50);
        }
        tokio::select! {
            () = speaker.stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// The simulated speakers' monotonic clock, in ms (>= 1), for `SpeakerMessage.sent_at_ms` (step 3).
fn clock_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
}

/// One session; returns whether a set arrived in it. Dropping the future (reset) drops both halves of the
/// stream, which the controller sees as a broken stream: the process died.
async fn session(speaker: &Speaker, channel: Channel, gains: &Gains) -> bool {
    let (held_generation, announcing) = {
        let mut held = speaker.held.lock().unwrap();
        if held.lost_at.take().is_some_and(|at| at.elapsed() >= hold()) {
            held.holding.clear();
            held.held_generation = 0;
            held.holds_expired += 1;
        }
        held.applied = 0;
        let announcing: Vec<pb::Announcement> = held
            .holding
            .iter()
            .map(|a| speaker_messages::announcement(a, "eth0"))
            .collect();
        (held.held_generation, announcing)
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let interfaces = vec![pb::Interface {
        name: "eth0".into(),
        mac: vec![2, 0, 0, 0, 0, 1],
        addresses: vec!["10.10.0.10/16".into()],
        up: true,
    }];
    let hello = speaker_messages::hello_of(&speaker.node, held_generation, interfaces);
    tx.send(speaker_messages::hello(clock_ms(), hello)).unwrap();
    tx.send(speaker_messages::report(clock_ms(), 0, announcing))
        .unwrap();
    let Ok(response) = AnnouncerClient::new(channel)
        .session(UnboundedReceiverStream::new(rx))
        .await
    else {
        return false;
    };
    let mut inbound = response.into_inner();
    let mut synced = false;
    let mut beat_every = Duration::from_millis(300);
    let mut next_beat = tokio::time::Instant::now() + beat_every;
    loop {
        let message = tokio::select! {
            () = tokio::time::sleep_until(next_beat) => {
                use std::sync::atomic::Ordering::Relaxed;
                let late = tokio::time::Instant::now().saturating_duration_since(next_beat);
                let late_us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
                WORST_LATE_US.fetch_max(late_us, Relaxed);
                BEATS.fetch_add(1, Relaxed);
                if late_us > u64::try_from(lease_ms() * 100).unwrap_or(u64::MAX) {
                    LATE_BEATS.fetch_add(1, Relaxed);
                }
                let applied = speaker.held.lock().unwrap().applied;
                let _ = tx.send(speaker_messages::heartbeat(clock_ms(), applied));
                next_beat = tokio::time::Instant::now() + beat_every;
                continue;
            }
            message = inbound.message() => message,
        };
        let message = match message {
            Ok(Some(message)) => message,
            Ok(None) | Err(_) => {
                // The controller's side ended it (or died): hold what we announce (rule 7).
                speaker.held.lock().unwrap().lost_at = Some(Instant::now());
                return synced;
            }
        };
        let Some(pb::controller_message::Body::Snapshot(set)) = message.body else {
            // Renewals: the fake does not run a lease timer.
            continue;
        };
        if let Some(lease) = set.lease {
            beat_every = Duration::from_millis(u64::from(lease.valid_for_ms) / 5);
        }
        let now = Instant::now();
        let new: BTreeSet<IpAddr> = set
            .assignments
            .iter()
            .map(|a| a.address.parse().unwrap())
            .collect();
        {
            let mut held = speaker.held.lock().unwrap();
            let mut log = gains.lock().unwrap();
            for address in new.difference(&held.holding) {
                log.push((*address, speaker.node.clone(), now));
            }
            held.holding = new;
            held.applied = set.generation;
            held.held_generation = set.generation;
            if !synced {
                held.sessions += 1;
                synced = true;
            }
        }
        let _ = tx.send(speaker_messages::heartbeat(clock_ms(), set.generation));
        next_beat = tokio::time::Instant::now() + beat_every;
    }
}

// ---- set-up through the API ----

fn service(name: &str) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        // 10,000 Services would exhaust the NodePort range.
        "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                 "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": name}},
    }))
    .unwrap()
}

async fn create_nodes(client: &Client, nodes: std::ops::Range<usize>) {
    let range = nodes;
    let nodes: Api<Node> = Api::all(client.clone());
    futures::stream::iter(range)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                let name = node_name(i);
                let node: Node = serde_json::from_value(
                    json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}),
                )
                .unwrap();
                nodes.create(&PostParams::default(), &node).await.unwrap();
                let now = "2026-01-01T00:00:00Z";
                nodes
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {"conditions": [{
                            "type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "bench node", "lastHeartbeatTime": now, "lastTransitionTime": now
                        }]}})),
                    )
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
}

/// Runs `call` for the Services `prefix-00000`... `prefix-{count - 1}`, `in_flight` at a time.
async fn on_each_service<F, Fut>(
    client: &Client,
    prefix: &str,
    count: usize,
    in_flight: usize,
    call: F,
) where
    F: Fn(Api<Service>, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    futures::stream::iter(0..count)
        .map(|i| call(api.clone(), format!("{prefix}-{i:05}")))
        .buffer_unordered(in_flight)
        .collect::<Vec<()>>()
        .await;
}

async fn create_services(client: &Client, prefix: &str, count: usize) {
    on_each_service(
        client,
        prefix,
        count,
        CREATE_CONCURRENCY,
        |api, name| async move {
            api.create(&PostParams::default(), &service(&name))
                .await
                .unwrap();
        },
    )
    .await;
}

/// The apiserver's own write rate, the limit every figure of writes at scale is measured against: one
/// status patch (a condition of a type no controller uses) on each of `count` Services, with as many in
/// flight as the controller uses, then the same again to remove it. Returns writes per second.
async fn apiserver_write_rate(
    client: &Client,
    prefix: &str,
    count: usize,
    in_flight: usize,
) -> f64 {
    let started = Instant::now();
    let probe = json!({"type": "bench.groundwork.dev/Probe", "status": "True",
        "reason": "Probe", "message": "write rate", "lastTransitionTime": "2026-01-01T00:00:00Z"});
    patch_conditions(client, prefix, count, in_flight, &probe).await;
    let rate = count as f64 / started.elapsed().as_secs_f64();
    let remove = json!({"type": "bench.groundwork.dev/Probe", "$patch": "delete"});
    patch_conditions(client, prefix, count, in_flight, &remove).await;
    rate
}

/// One strategic merge patch of `condition` into the status of each of `count` Services.
async fn patch_conditions(
    client: &Client,
    prefix: &str,
    count: usize,
    in_flight: usize,
    condition: &serde_json::Value,
) {
    on_each_service(client, prefix, count, in_flight, |api, name| async move {
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": {"conditions": [condition]}})),
        )
        .await
        .unwrap();
    })
    .await;
}

// ---- the controller process ----

struct Controller {
    daemon: Daemon,
    started: Instant,
}

fn controller_launcher(cluster: &KubeCluster, grpc: SocketAddr) -> LbController {
    let lease = Duration::from_millis(u64::try_from(lease_ms()).unwrap_or(u64::MAX));
    LbController::new(env!("CARGO_BIN_EXE_lb-controller"), cluster.kubeconfig())
        .grpc(grpc)
        .loss_hold(hold())
        .speaker_lease(lease)
}

fn start_controller(launcher: &LbController) -> Controller {
    let started = Instant::now();
    let daemon = tokio::task::block_in_place(|| launcher.start().unwrap());
    Controller { daemon, started }
}

impl Controller {
    /// Time from process start to `/readyz` answering 200.
    fn wait_ready(&mut self, timeout: Duration) -> Duration {
        tokio::task::block_in_place(|| self.daemon.wait_ready(timeout).unwrap());
        self.started.elapsed()
    }

    fn rss_mib(&mut self) -> f64 {
        let pid = self.daemon.process().pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib / 1024.0
    }

    /// SIGTERM and wait for the exit; keeps the log for reading afterwards.
    fn stop(mut self, keep_log: &str) -> Duration {
        let started = Instant::now();
        tokio::task::block_in_place(|| {
            self.daemon.process().stop(Duration::from_secs(30));
        });
        let took = started.elapsed();
        let _ = std::fs::copy(self.daemon.process().log_path(), keep_log);
        took
    }
}

fn log_dir() -> PathBuf {
    let dir = integration_tests::workspace_root().join("target/tmp/lb-controller-bench");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---- figures ----

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((p / 100.0) * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}

fn latency_row(label: &str, samples: &[f64]) -> String {
    format!(
        "{label:<44} {:>5} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
        samples.len(),
        percentile(samples, 50.0),
        percentile(samples, 90.0),
        percentile(samples, 99.0),
        percentile(samples, 100.0),
    )
}

/// Creates `count` Services one at a time; for each, the time from the create call returning to a watch
/// event showing an address in its status, in ms. Each may take up to `limit`; one that does not get an
/// address in time ends the run with an infinite sample.
async fn latency(
    client: &Client,
    view: &Arc<Mutex<ServiceView>>,
    prefix: &str,
    count: usize,
    limit: Duration,
) -> Vec<f64> {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("{prefix}-{i:03}");
        api.create(&PostParams::default(), &service(&name))
            .await
            .unwrap();
        let created = Instant::now();
        let key = format!("default/{name}");
        let deadline = created + limit;
        let seen = loop {
            if let Some(at) = view.lock().unwrap().first_ip.get(&key).copied() {
                break Some(at);
            }
            if Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(CHECK_EVERY).await;
        };
        match seen {
            Some(at) => samples.push(at.saturating_duration_since(created).as_secs_f64() * 1e3),
            None => {
                // Reported as an infinite sample; the rest would only queue behind it.
                eprintln!("{key}: no address within {limit:?}");
                samples.push(f64::INFINITY);
                break;
            }
        }
    }
    samples
}

/// Builds MetalLB (`scripts/build-peers metallb`, reused when built) and starts its controller alone (no
/// speakers: addresses only) with an `IPAddressPool` of the benchmark's addresses.
async fn metallb_peer(cluster: &KubeCluster) -> MetalLb {
    let script = integration_tests::workspace_root().join("scripts/build-peers");
    let status = std::process::Command::new(script)
        .arg("metallb")
        .status()
        .unwrap();
    assert!(status.success(), "scripts/build-peers metallb failed");
    MetalLb::start(cluster, &[], "10.64.0.0/16").await.unwrap()
}

/// Deletes the Services named `prefix-*` in `default` and waits until the watch saw them go.
async fn delete_services(client: &Client, view: &Arc<Mutex<ServiceView>>, prefix: &str) {
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    let names: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect();
    for name in &names {
        api.delete(name, &Default::default()).await.unwrap();
    }
    let keys: Vec<String> = names.iter().map(|n| format!("default/{n}")).collect();
    wait_for(
        "the peer's Services to be gone",
        Duration::from_secs(60),
        || {
            let view = view.lock().unwrap();
            let left = keys.iter().filter(|k| view.ips.contains_key(*k)).count();
            (left == 0).then_some(()).ok_or(format!("{left} left"))
        },
    )
    .await;
}

fn speakers_hold(fleet: &Fleet, want: usize) -> Result<BTreeMap<IpAddr, String>, String> {
    let (holder, doubled) = fleet.holdings();
    if !doubled.is_empty() {
        return Err(format!("{} addresses held twice", doubled.len()));
    }
    if holder.len() == want {
        Ok(holder)
    } else {
        Err(format!("{} of {want} addresses held", holder.len()))
    }
}

fn changed(before: &BTreeMap<IpAddr, String>, after: &BTreeMap<IpAddr, String>) -> usize {
    before
        .iter()
        .filter(|(address, node)| after.get(address) != Some(node))
        .count()
}

/// Every Service's status as the API lists it now.
async fn statuses(client: &Client) -> BTreeMap<String, Vec<String>> {
    let api: Api<Service> = Api::all(client.clone());
    let mut all = BTreeMap::new();
    let mut params = ListParams::default().limit(2000);
    loop {
        let page = api.list(&params).await.unwrap();
        for svc in &page.items {
            all.insert(
                format!(
                    "{}/{}",
                    svc.metadata.namespace.as_deref().unwrap_or_default(),
                    svc.metadata.name.as_deref().unwrap_or_default()
                ),
                status_ips(svc),
            );
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return all,
        }
    }
}

#[tokio::main]
async fn main() {
    let services = size("LB_BENCH_SERVICES", 10_000);
    let speakers = size("LB_BENCH_SPEAKERS", 1_000);
    let logs = log_dir();
    let mut table: Vec<(String, String)> = Vec::new();

    let cluster = KubeCluster::start().await.unwrap();
    cluster
        .install_crds(&lb_controller::crd_definitions())
        .await
        .unwrap();
    let client = cluster.client();
    Api::<IPPool>::all(client.clone())
        .patch(
            "bench",
            &PatchParams::apply("bench").force(),
            &Patch::Apply(json!({
                "apiVersion": "groundwork.dev/v1alpha1", "kind": "IPPool",
                "metadata": {"name": "bench"}, "spec": {"addresses": ["10.64.0.0/16"]}
            })),
        )
        .await
        .unwrap();
    let view = watch_services(client.clone());
    let grpc: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
    let launcher = controller_launcher(&cluster, grpc);
    println!("lb-controller speed and scale, MetalLB's controller as the peer");

    // 0. The peer on the empty cluster: MetalLB's controller (webhooks off) with an IPAddressPool of the
    // same addresses, on the same apiserver; stopped (and its Services deleted) before ours starts.
    // `LB_BENCH_PEER=0` leaves MetalLB out (its start on 10,000 Services takes minutes).
    let with_peer = size("LB_BENCH_PEER", 1) != 0;
    let mut metallb = if with_peer {
        Some(metallb_peer(&cluster).await)
    } else {
        None
    };
    let metallb_empty = if let Some(metallb) = &mut metallb {
        let samples = latency(
            &client,
            &view,
            "mlb",
            LATENCY_SAMPLES,
            Duration::from_secs(30),
        )
        .await;
        metallb.stop_controller();
        delete_services(&client, &view, "mlb").await;
        samples
    } else {
        Vec::new()
    };

    // 1. Latency on an empty cluster: one pool, three Ready nodes, no speakers.
    create_nodes(&client, 0..3).await;
    let mut controller = start_controller(&launcher);
    controller.wait_ready(Duration::from_secs(30));
    let empty = latency(
        &client,
        &view,
        "lat",
        LATENCY_SAMPLES,
        Duration::from_secs(30),
    )
    .await;
    controller.stop(&logs.join("1-latency.log").display().to_string());

    // 2. At scale: the Nodes and Services exist before the controller starts.
    let started = Instant::now();
    create_nodes(&client, 3..speakers).await;
    let nodes_took = started.elapsed();
    let started = Instant::now();
    create_services(&client, "bulk", services).await;
    println!(
        "set-up: {speakers} Ready nodes in {:.1} s, {services} Services in {:.1} s",
        nodes_took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let total = services + LATENCY_SAMPLES;
    let rate = apiserver_write_rate(&client, "bulk", services, 32).await;
    table.push((
        format!("apiserver alone: Service status writes per second (32 in flight, {services})"),
        format!("{rate:.0} /s"),
    ));
    table.push((
        format!("  so one write for each of {total} Services takes at least"),
        format!("{:.2} s", total as f64 / rate),
    ));

    let mut controller = start_controller(&launcher);
    let fleet = Fleet::start(speakers, grpc);
    let ready = controller.wait_ready(Duration::from_secs(120));
    wait_for(
        "every status to show an address",
        Duration::from_secs(600),
        || {
            let with_ip = view.lock().unwrap().with_ip();
            (with_ip == total)
                .then_some(())
                .ok_or(format!("{with_ip} of {total}"))
        },
    )
    .await;
    let all_statuses = view
        .lock()
        .unwrap()
        .first_ip
        .values()
        .max()
        .unwrap()
        .saturating_duration_since(controller.started);
    let held = wait_for(
        "every address to be held by one speaker",
        Duration::from_secs(600),
        || speakers_hold(&fleet, total),
    )
    .await;
    let all_held = controller.started.elapsed();
    wait_for(
        "every announcing node in the status",
        Duration::from_secs(600),
        || {
            let view = view.lock().unwrap();
            let agree = view
                .announcer
                .iter()
                .filter(|(key, node)| {
                    view.ips
                        .get(*key)
                        .and_then(|ips| ips.first())
                        .and_then(|ip| held.get(&ip.parse::<IpAddr>().unwrap()))
                        == Some(*node)
                })
                .count();
            (agree == total)
                .then_some(())
                .ok_or(format!("{agree} of {total} annotated with their speaker"))
        },
    )
    .await;
    let all_annotated = controller.started.elapsed();
    let per_node = total as f64 / speakers as f64;
    table.push((
        "controller start -> ready (/readyz 200)".to_owned(),
        format!("{:.2} s", ready.as_secs_f64()),
    ));
    table.push((
        format!("controller start -> all {total} statuses written"),
        format!("{:.2} s", all_statuses.as_secs_f64()),
    ));
    table.push((
        format!("controller start -> all {total} addresses held by {speakers} speakers"),
        format!("{:.2} s", all_held.as_secs_f64()),
    ));
    table.push((
        "controller start -> all announcing nodes".to_owned(),
        format!("{:.2} s", all_annotated.as_secs_f64()),
    ));
    let rss = controller.rss_mib();
    table.push((
        "controller RSS at steady state".to_owned(),
        format!("{rss:.1} MiB"),
    ));

    let at_scale = latency(
        &client,
        &view,
        "scale",
        LATENCY_AT_SCALE,
        Duration::from_secs(30),
    )
    .await;
    let total = total + LATENCY_AT_SCALE;
    let rss_after = controller.rss_mib();
    table.push((
        "controller RSS after the latency run at scale".to_owned(),
        format!("{rss_after:.1} MiB"),
    ));

    // 3. Restart: SIGTERM, start again with the same flags.
    let before_status = statuses(&client).await;
    let before_holders = wait_for(
        "every address to be held by one speaker before the restart",
        Duration::from_secs(60),
        || speakers_hold(&fleet, total),
    )
    .await;
    let sessions = fleet.min_sessions();
    let gains_before = fleet.gains.lock().unwrap().len();
    let exit = controller.stop(&logs.join("2-scale.log").display().to_string());
    let mut controller = start_controller(&launcher);
    let ready = controller.wait_ready(Duration::from_secs(120));
    let after_holders = wait_for(
        "every speaker to hold its set again in a new session",
        Duration::from_secs(120),
        || {
            let min = fleet.min_sessions();
            if min <= sessions {
                return Err(format!("some speaker has had {min} sessions"));
            }
            speakers_hold(&fleet, total)
        },
    )
    .await;
    let resynced = controller.started.elapsed();
    let after_status = statuses(&client).await;
    let status_changed = before_status
        .iter()
        .filter(|(key, ips)| after_status.get(*key) != Some(ips))
        .count();
    let announcer_changed = changed(&before_holders, &after_holders);
    let handed_elsewhere = fleet.gains.lock().unwrap()[gains_before..]
        .iter()
        .filter(|(address, node, _)| before_holders.get(address) != Some(node))
        .count();
    table.push((
        "restart: SIGTERM -> exited".to_owned(),
        format!("{:.2} s", exit.as_secs_f64()),
    ));
    table.push((
        "restart: start -> ready".to_owned(),
        format!("{:.2} s", ready.as_secs_f64()),
    ));
    table.push((
        format!("restart: start -> all {speakers} speakers hold their sets again"),
        format!("{:.2} s", resynced.as_secs_f64()),
    ));
    table.push((
        format!("restart: Service addresses changed (of {total})"),
        status_changed.to_string(),
    ));
    table.push((
        "restart: addresses that changed announcer".to_owned(),
        format!("{announcer_changed} (sent to another node at any point: {handed_elsewhere})"),
    ));
    table.push((
        "restart: speakers whose controller-loss hold ran out".to_owned(),
        fleet.holds_expired().to_string(),
    ));

    // 4. One speaker resets: only its addresses move.
    let gone = &fleet.speakers[0];
    let its: BTreeSet<IpAddr> = gone.held.lock().unwrap().holding.clone();
    let gains_before = fleet.gains.lock().unwrap().len();
    let reset_at = Instant::now();
    gone.stop.cancel();
    gone.held.lock().unwrap().holding.clear();
    let after_reset = wait_for(
        "the reset node's addresses to be held elsewhere",
        Duration::from_secs(30),
        || speakers_hold(&fleet, total),
    )
    .await;
    let moved_in = fleet.gains.lock().unwrap()[gains_before..]
        .iter()
        .map(|(_, _, at)| at.saturating_duration_since(reset_at))
        .max()
        .unwrap_or_default();
    let moved = changed(&after_holders, &after_reset);
    let moved_others = after_holders
        .iter()
        .filter(|(address, node)| {
            !its.contains(address) && after_reset.get(*address) != Some(*node)
        })
        .count();
    table.push((
        format!(
            "reset of {}: addresses it held (avg per node {per_node:.1})",
            gone.node
        ),
        its.len().to_string(),
    ));
    table.push((
        "reset: addresses that changed announcer".to_owned(),
        format!("{moved} (of other nodes: {moved_others})"),
    ));
    table.push((
        "reset: last address held elsewhere after".to_owned(),
        format!("{:.0} ms", moved_in.as_secs_f64() * 1e3),
    ));
    let final_status = statuses(&client).await;
    let changed_by_reset = after_status
        .iter()
        .filter(|(key, ips)| final_status.get(*key) != Some(ips))
        .count();
    table.push((
        "reset: Service addresses changed".to_owned(),
        changed_by_reset.to_string(),
    ));
    let rss_end = controller.rss_mib();
    table.push((
        "controller RSS after restart and reset".to_owned(),
        format!("{rss_end:.1} MiB"),
    ));
    controller.stop(&logs.join("3-restarted.log").display().to_string());

    // 5. The peer at scale: MetalLB's controller started on the same 10,000+ Services (whose statuses ours
    // wrote from the same addresses), as after its own restart: until a new Service gets an address, and
    // what it changed in the existing statuses.
    println!("\nService created -> address in status (watch), ms");
    println!(
        "{:<44} {:>5} {:>8} {:>8} {:>8} {:>8}",
        "", "n", "p50", "p90", "p99", "max"
    );
    println!(
        "{}",
        latency_row("empty cluster (3 nodes, no speakers)", &empty)
    );
    println!(
        "{}",
        latency_row(
            &format!("at scale ({services} Services, {speakers} speakers)"),
            &at_scale
        )
    );
    println!(
        "\nAt scale: {services} + {LATENCY_SAMPLES} Services, {speakers} Ready nodes and speakers, pool 10.64.0.0/16, --controller-loss-hold {}ms, --speaker-lease {}ms",
        hold().as_millis(),
        lease_ms()
    );
    for (what, figure) in &table {
        println!("{what:<66} {figure:>14}");
    }
    println!("{}", simulation_lateness());
    println!("\ncontroller logs: {}", logs.display());
    assert!(
        empty.iter().chain(&at_scale).all(|ms| ms.is_finite()),
        "a Service got no address from lb-controller in time"
    );
    assert_eq!(status_changed, 0, "a restart moved Service addresses");
    assert_eq!(
        changed_by_reset, 0,
        "a speaker reset moved Service addresses"
    );

    let mut peer_table = Vec::new();
    let mut metallb_scale = Vec::new();
    if let Some(mut metallb) = metallb {
        let before_peer = statuses(&client).await;
        let peer_started = Instant::now();
        metallb.start_controller().unwrap();
        let first = latency(&client, &view, "mlbfirst", 1, Duration::from_secs(900)).await;
        let peer_serving = peer_started.elapsed();
        metallb_scale = latency(
            &client,
            &view,
            "mlbscale",
            LATENCY_AT_SCALE,
            Duration::from_secs(60),
        )
        .await;
        let after_peer = statuses(&client).await;
        let peer_changed = before_peer
            .iter()
            .filter(|(key, ips)| after_peer.get(*key) != Some(ips))
            .count();
        drop(metallb);
        peer_table.push((
            format!(
                "MetalLB controller start -> a new Service has an address (at {total} Services)"
            ),
            format!(
                "{:.2} s (that Service: {:.0} ms)",
                peer_serving.as_secs_f64(),
                first[0]
            ),
        ));
        peer_table.push((
            format!("MetalLB controller start: Service addresses changed (of {total})"),
            peer_changed.to_string(),
        ));
    }

    if !peer_table.is_empty() {
        println!(
            "\nThe peer, MetalLB's controller (v0.15.2, webhooks off), Service created -> address in status, ms:"
        );
        println!("{}", latency_row("  empty cluster", &metallb_empty));
        println!(
            "{}",
            latency_row(&format!("  at {services} Services"), &metallb_scale)
        );
        for (what, figure) in &peer_table {
            println!("{what:<66} {figure:>14}");
        }
    }
}
