//! The controller's event loop and its writes to the Kubernetes API.
//!
//! Reflectors on Services, IPPools, Nodes, EndpointSlices, Namespaces (and the legacy MetalLB ConfigMap
//! when asked) trigger a reconcile pass ([`crate::plan`]); so do speakers connecting or leaving and
//! acknowledging what they announce. Only the leader runs passes and serves speakers; a standby is not
//! ready, so the Service in front of the replicas sends speakers to the leader. Each pass hands the
//! speakers their assignments first, then writes only what differs from what the API shows: Service
//! statuses, the announcing-node annotation, IPPool statuses, and Events (each note once, not per pass).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use ops::CancellationToken;
use ops::endpoint::Health;
use ops::kube::{Watched, watch_kind};
use serde_json::json;
use tokio::sync::mpsc;

use crate::config::Settings;
use crate::legacy;
use crate::metrics::{Metrics, PoolLabels};
use crate::plan::{Inputs, Note, Outcome, Planner, PoolReport};
use crate::pool::{IPPool, IPPoolStatus};
use crate::request::{self, ANNOUNCING_NODE};
use crate::speakers::{HubEvent, SpeakerHub};

/// API writes in flight at once.
const WRITE_CONCURRENCY: usize = 32;
/// Longest wait between retries of failed writes.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Errors that stop the controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No Kubernetes client.
    #[error(transparent)]
    Kube(#[from] ops::kube::ClientError),
    /// Leader election could not start.
    #[error("leader election: {0}")]
    Lease(String),
    /// The speaker server failed.
    #[error("speaker server: {0}")]
    Speakers(#[from] crate::speakers::Error),
    /// The speaker server's thread or runtime could not start.
    #[error("speaker server thread: {0}")]
    Runtime(String),
}

struct Watchers {
    services: Watched<Service>,
    pools: Watched<IPPool>,
    nodes: Watched<Node>,
    slices: Watched<EndpointSlice>,
    namespaces: Watched<Namespace>,
    configmap: Option<Watched<ConfigMap>>,
}

impl Watchers {
    fn listed(&self) -> bool {
        self.services.is_fresh()
            && self.pools.is_fresh()
            && self.nodes.is_fresh()
            && self.slices.is_fresh()
            && self.namespaces.is_fresh()
            && self.configmap.as_ref().is_none_or(Watched::is_fresh)
    }
}

/// A finished status write: Service key, addresses written, result, the Service.
type StatusWrite = (String, Vec<IpAddr>, Result<(), kube::Error>, Arc<Service>);

/// What the leader remembers between passes.
struct Leading {
    planner: Planner,
    /// Until then, Ready nodes whose speaker has not reconnected still count as candidates; `None`
    /// once that window is over.
    settle_until: Option<tokio::time::Instant>,
    /// Nodes whose speaker connected since this replica leads.
    ever_connected: BTreeSet<String>,
}

/// The writer side: remembers what it wrote and what it told people, so nothing is repeated.
struct Writer {
    client: Client,
    recorder: Recorder,
    metrics: Metrics,
    /// Status written per Service, until the reflector shows it.
    written_status: HashMap<String, Vec<IpAddr>>,
    /// Annotation written per Service, until the reflector shows it.
    written_annotation: HashMap<String, Option<String>>,
    /// Note last published per Service.
    told: HashMap<String, Note>,
    /// Legacy ConfigMap problems last published.
    told_legacy: Vec<String>,
}

/// Runs the controller until `shutdown`.
pub async fn run(
    settings: Settings,
    metrics: Metrics,
    hub: SpeakerHub,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let client = ops::kube::client(settings.config.kubeconfig.as_deref()).await?;

    let server = {
        let hub = hub.clone();
        let (listen, tls, shutdown) = (
            settings.config.grpc_listen,
            settings.tls.clone(),
            shutdown.clone(),
        );
        // The speakers' sessions get their own thread and runtime: reconciling ten thousand Services is
        // CPU work, and heartbeats read late would look like silent nodes and move their addresses.
        let (done, result) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("speakers".to_owned())
            .spawn(move || {
                let outcome = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| Error::Runtime(e.to_string()))
                    .and_then(|runtime| {
                        runtime
                            .block_on(hub.serve(listen, tls, shutdown))
                            .map_err(Error::from)
                    });
                let _ = done.send(outcome);
            })
            .map_err(|e| Error::Runtime(e.to_string()))?;
        result
    };

    let (trigger, mut triggers) = mpsc::unbounded_channel::<Instant>();
    let all = watcher::Config::default;
    let watchers = Watchers {
        services: watch_kind(
            Api::all(client.clone()),
            all(),
            trigger.clone(),
            shutdown.clone(),
        ),
        pools: watch_kind(
            Api::all(client.clone()),
            all(),
            trigger.clone(),
            shutdown.clone(),
        ),
        nodes: watch_kind(
            Api::all(client.clone()),
            all(),
            trigger.clone(),
            shutdown.clone(),
        ),
        slices: watch_kind(
            Api::all(client.clone()),
            all(),
            trigger.clone(),
            shutdown.clone(),
        ),
        namespaces: watch_kind(
            Api::all(client.clone()),
            all(),
            trigger.clone(),
            shutdown.clone(),
        ),
        configmap: settings.metallb_configmap.as_ref().map(|(ns, name)| {
            watch_kind(
                Api::namespaced(client.clone(), ns),
                all().fields(&format!("metadata.name={name}")),
                trigger.clone(),
                shutdown.clone(),
            )
        }),
    };

    let mut writer = Writer {
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "lb-controller".to_owned(),
                instance: Some(settings.identity.clone()),
            },
        ),
        metrics: metrics.clone(),
        written_status: HashMap::new(),
        written_annotation: HashMap::new(),
        told: HashMap::new(),
        told_legacy: Vec::new(),
    };

    let election = settings.config.leader_elect.then(|| ops::kube::Election {
        name: settings.config.lease_name.clone(),
        namespace: settings.config.lease_namespace.clone(),
        identity: settings.identity.clone(),
        duration_secs: settings.config.leader_lease.as_secs().max(2),
        grace_secs: (settings.config.leader_lease.as_secs() / 2).max(1),
    });
    let (_election, mut leader) = ops::kube::leadership(&client, election.as_ref())
        .await
        .map_err(Error::Lease)?;

    let mut available = hub.available();
    let mut announced = hub.announced();
    let mut hub_events = hub.events();
    let mut leading: Option<Leading> = None;
    let mut pending: Option<Instant> = None;
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut retry_in = Duration::from_millis(500);
    let settle = settings.config.controller_loss_hold + settings.hub.grace;
    let mut first = true;
    health.set_not_ready("waiting for leadership");
    tokio::pin!(server);

    loop {
        let settle_at = leading.as_ref().and_then(|l| l.settle_until);
        if first {
            // Act on the election's first answer before waiting for anything.
            first = false;
        } else {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                result = &mut server => {
                    return match result {
                        Ok(outcome) => outcome,
                        Err(_) => Err(Error::Runtime("the speaker server thread ended".to_owned())),
                    };
                }
                Some(at) = triggers.recv() => { pending.get_or_insert(at); }
                changed = leader.changed() => {
                    if changed.is_err() {
                        return Err(Error::Lease("the lease manager stopped".to_owned()));
                    }
                }
                Ok(()) = available.changed() => { pending.get_or_insert_with(Instant::now); }
                Ok(()) = announced.changed() => { pending.get_or_insert_with(Instant::now); }
                Some(event) = hub_events.recv() => {
                    if let Some(leading) = &leading {
                        writer.tell_hub_event(&event, &leading.planner, &watchers.services);
                    }
                }
                () = sleep_until(settle_at) => {
                    if let Some(leading) = &mut leading {
                        // Past the settle window: from now on only connected speakers count.
                        leading.settle_until = None;
                    }
                    pending.get_or_insert_with(Instant::now);
                }
                () = sleep_until(retry_at) => { retry_at = None; }
            }
        }
        let is_leader = *leader.borrow();
        if is_leader && leading.is_none() {
            tracing::info!(identity = %settings.identity, "leading: rebuilding allocations from Service statuses first");
            hub.set_active(true);
            metrics.leader.set(1);
            leading = Some(Leading {
                planner: Planner::new(settings.filter.clone()),
                settle_until: Some(tokio::time::Instant::now() + settle),
                ever_connected: BTreeSet::new(),
            });
            pending.get_or_insert_with(Instant::now);
        } else if !is_leader && leading.is_some() {
            tracing::info!(identity = %settings.identity, "lost leadership; standing by");
            hub.set_active(false);
            metrics.leader.set(0);
            leading = None;
            health.set_not_ready("standing by (not leader)");
        }
        if !is_leader {
            health.set_not_ready("standing by (not leader)");
            continue;
        }
        let Some(state) = &mut leading else { continue };
        if pending.is_none() || retry_at.is_some() {
            continue;
        }
        if !watchers.listed() {
            health.set_not_ready("waiting for the first list of Services, pools and nodes");
            continue;
        }
        let Some(first_change) = pending.take() else {
            continue;
        };
        let started = Instant::now();
        // A pass is CPU work proportional to the cluster: let the runtime move other tasks off this
        // worker meanwhile.
        let outcome =
            tokio::task::block_in_place(|| pass(state, &watchers, &hub, &mut writer, &announced));
        metrics
            .reconcile_seconds
            .observe(started.elapsed().as_secs_f64());
        hub.set_desired(outcome.desired.clone());
        let failures = writer.write(&outcome, &watchers, first_change).await;
        if failures > 0 {
            tracing::warn!(failures, retry_in = ?retry_in, "some writes failed; retrying");
            pending = Some(first_change);
            retry_at = Some(tokio::time::Instant::now() + retry_in);
            retry_in = (retry_in * 2).min(RETRY_MAX);
        } else {
            retry_in = Duration::from_millis(500);
        }
        health.set_ready(format!(
            "leading: {} addresses assigned, {} Services pending",
            state.planner.allocator().holdings().count(),
            outcome.pending
        ));
    }
}

fn pass(
    state: &mut Leading,
    watchers: &Watchers,
    hub: &SpeakerHub,
    writer: &mut Writer,
    announced: &tokio::sync::watch::Receiver<BTreeMap<IpAddr, String>>,
) -> Outcome {
    let services = watchers.services.store().state();
    let pools = watchers.pools.store().state();
    let nodes = watchers.nodes.store().state();
    let slices = watchers.slices.store().state();
    let namespaces = watchers.namespaces.store().state();
    let legacy_pools = match &watchers.configmap {
        Some(configmap) => {
            let maps = configmap.store().state();
            let map = maps.first();
            let (pools, errors) = legacy::parse(
                map.and_then(|m| m.data.as_ref())
                    .and_then(|d| d.get("config"))
                    .map(String::as_str),
            );
            writer.tell_legacy(map.map(|m| m.as_ref()), &errors);
            pools
        }
        None => Vec::new(),
    };
    let speakers = hub.available().borrow().clone();
    state.ever_connected.extend(speakers.keys().cloned());
    let announced = announced.borrow().clone();
    state.planner.pass(&Inputs {
        services: &services,
        pools: &pools,
        legacy_pools: &legacy_pools,
        nodes: &nodes,
        slices: &slices,
        namespaces: &namespaces,
        speakers: &speakers,
        include_unconnected: state.settle_until.is_some(),
        ever_connected: &state.ever_connected,
        announced: &announced,
    })
}

impl Writer {
    /// Writes what differs; returns how many writes failed.
    async fn write(
        &mut self,
        outcome: &Outcome,
        watchers: &Watchers,
        first_change: Instant,
    ) -> usize {
        let services: HashMap<String, Arc<Service>> = watchers
            .services
            .store()
            .state()
            .into_iter()
            .map(|s| (request::key_of(&s), s))
            .collect();
        let mut status_writes = Vec::new();
        let mut annotation_writes = Vec::new();
        for (key, desired) in &outcome.statuses {
            let Some(service) = services.get(key) else {
                continue;
            };
            let current = status_addresses(service);
            if &current == desired {
                self.written_status.remove(key);
                continue;
            }
            if self.written_status.get(key) == Some(desired) {
                continue;
            }
            status_writes.push((service.clone(), desired.clone()));
        }
        for (key, desired) in &outcome.announcing {
            let Some(service) = services.get(key) else {
                continue;
            };
            let current = service
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOUNCING_NODE))
                .cloned();
            if &current == desired {
                self.written_annotation.remove(key);
                continue;
            }
            if self.written_annotation.get(key) == Some(desired) {
                continue;
            }
            annotation_writes.push((service.clone(), desired.clone()));
        }

        let client = self.client.clone();
        let status_results: Vec<StatusWrite> = futures::stream::iter(status_writes)
            .map(|(service, desired)| {
                let client = client.clone();
                async move {
                    let result = patch_status(&client, &service, &desired).await;
                    (request::key_of(&service), desired, result, service)
                }
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        let annotation_results: Vec<(String, Option<String>, Result<(), kube::Error>)> =
            futures::stream::iter(annotation_writes)
                .map(|(service, desired)| {
                    let client = client.clone();
                    async move {
                        let result = patch_annotation(&client, &service, desired.as_deref()).await;
                        (request::key_of(&service), desired, result)
                    }
                })
                .buffer_unordered(WRITE_CONCURRENCY)
                .collect()
                .await;

        let mut failures = 0;
        let mut events = Vec::new();
        let written = status_results.iter().filter(|r| r.2.is_ok()).count();
        if written > 0 {
            tracing::info!(written, "Service statuses written");
        }
        for (key, desired, result, service) in status_results {
            self.metrics.wrote("status", result.is_ok());
            match result {
                Ok(()) => {
                    self.metrics
                        .change_to_status_seconds
                        .observe(first_change.elapsed().as_secs_f64());
                    tracing::debug!(service = %key, addresses = ?desired, "status written");
                    if !desired.is_empty() {
                        events.push((
                            service.object_ref(&()),
                            EventType::Normal,
                            "IPAllocated",
                            format!("Assigned {}", join(&desired)),
                        ));
                    }
                    self.written_status.insert(key, desired);
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(service = %key, error = %error, "cannot write status");
                }
            }
        }
        let written = annotation_results.iter().filter(|r| r.2.is_ok()).count();
        if written > 0 {
            tracing::info!(written, "announcing-node annotations written");
        }
        for (key, desired, result) in annotation_results {
            self.metrics.wrote("annotation", result.is_ok());
            match result {
                Ok(()) => {
                    self.written_annotation.insert(key, desired);
                }
                Err(error) => {
                    // A Service deleted meanwhile is not a failure worth retrying.
                    if !is_not_found(&error) {
                        failures += 1;
                    }
                    tracing::warn!(service = %key, error = %error, "cannot write the announcing-node annotation");
                }
            }
        }

        // Notes, once each.
        self.told.retain(|key, _| outcome.notes.contains_key(key));
        for (key, note) in &outcome.notes {
            if self.told.get(key) == Some(note) {
                continue;
            }
            let Some(service) = services.get(key) else {
                continue;
            };
            tracing::warn!(service = %key, reason = note.reason, "{}", note.message);
            events.push((
                service.object_ref(&()),
                EventType::Warning,
                note.reason,
                note.message.clone(),
            ));
            self.told.insert(key.clone(), note.clone());
        }
        self.publish(events);

        failures += self.write_pools(outcome, watchers).await;
        self.update_metrics(outcome);
        failures
    }

    async fn write_pools(&mut self, outcome: &Outcome, watchers: &Watchers) -> usize {
        let mut failures = 0;
        for pool in watchers.pools.store().state() {
            let Some(name) = pool.metadata.name.clone() else {
                continue;
            };
            let Some(report) = outcome.pools.get(&name) else {
                continue;
            };
            let previous = pool.status.clone().unwrap_or_default();
            let status = pool_status(report, &previous, pool.metadata.generation);
            if status == previous {
                continue;
            }
            if let Some(invalid) = &report.invalid {
                tracing::warn!(pool = %name, "{invalid}");
                self.publish(vec![(
                    pool.object_ref(&()),
                    EventType::Warning,
                    "InvalidPool",
                    invalid.clone(),
                )]);
            }
            let api: Api<IPPool> = Api::all(self.client.clone());
            let result = api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": status })),
                )
                .await;
            self.metrics.wrote("pool_status", result.is_ok());
            if let Err(error) = result {
                if !is_not_found(&error) {
                    failures += 1;
                }
                tracing::warn!(pool = %name, error = %error, "cannot write the pool status");
            }
        }
        failures
    }

    fn update_metrics(&self, outcome: &Outcome) {
        self.metrics.pending.set(gauge(outcome.pending));
        self.metrics.pool_total.clear();
        self.metrics.pool_in_use.clear();
        let mut assigned = 0;
        for (name, report) in &outcome.pools {
            let u = report.usage;
            assigned += u.assigned_v4 + u.assigned_v6;
            for (family, used, free) in [
                ("ipv4", u.assigned_v4, u.available_v4),
                ("ipv6", u.assigned_v6, u.available_v6),
            ] {
                let labels = PoolLabels {
                    pool: name.clone(),
                    family: family.to_owned(),
                };
                self.metrics
                    .pool_total
                    .get_or_create(&labels)
                    .set(i64::try_from(used.saturating_add(free)).unwrap_or(i64::MAX));
                self.metrics
                    .pool_in_use
                    .get_or_create(&labels)
                    .set(i64::try_from(used).unwrap_or(i64::MAX));
            }
        }
        self.metrics
            .assignments
            .set(i64::try_from(assigned).unwrap_or(i64::MAX));
    }

    fn tell_legacy(&mut self, map: Option<&ConfigMap>, errors: &[legacy::LegacyError]) {
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        if messages == self.told_legacy {
            return;
        }
        self.told_legacy.clone_from(&messages);
        for message in &messages {
            tracing::warn!(configmap = ?map.and_then(|m| m.metadata.name.clone()), "legacy MetalLB configuration: {message}");
        }
        if let Some(map) = map {
            self.publish(
                messages
                    .into_iter()
                    .map(|m| (map.object_ref(&()), EventType::Warning, "InvalidPool", m))
                    .collect(),
            );
        }
    }

    /// Events about what the speakers did, on the Services using the address.
    fn tell_hub_event(&self, event: &HubEvent, planner: &Planner, services: &Watched<Service>) {
        let (address, kind, reason, message) = match event {
            HubEvent::HandedOver {
                address,
                from,
                to,
                waited,
            } => (
                *address,
                EventType::Normal,
                "AnnouncerChanged",
                match from {
                    Some(from) => format!(
                        "{address} is announced by node {to} (was {from}; handed over after {waited:?})"
                    ),
                    None => format!("{address} is announced by node {to}"),
                },
            ),
            HubEvent::Conflict {
                node,
                address,
                interface,
                foreign_mac,
            } => (
                *address,
                EventType::Warning,
                "AddressConflict",
                format!(
                    "node {node} saw {} answer for {address} on {interface}: another device uses this address",
                    mac(foreign_mac)
                ),
            ),
            HubEvent::Problem {
                node,
                address: Some(address),
                interface,
                message,
            } => (
                *address,
                EventType::Warning,
                "AnnouncementProblem",
                format!("node {node} cannot announce {address} on {interface:?}: {message}"),
            ),
            HubEvent::Problem { .. }
            | HubEvent::Connected { .. }
            | HubEvent::Disconnected { .. } => return,
        };
        let references: Vec<_> = planner
            .allocator()
            .holdings()
            .filter(|(a, _)| *a == address)
            .flat_map(|(_, holders)| holders.cloned().collect::<Vec<_>>())
            .filter_map(|key| {
                let (ns, name) = key.split_once('/')?;
                services.store().get(&ObjectRef::new(name).within(ns))
            })
            .map(|s| (s.object_ref(&()), kind, reason, message.clone()))
            .collect();
        self.publish(references);
    }

    /// Events are for people: published in the background, never holding up a write.
    fn publish(
        &self,
        events: Vec<(
            k8s_openapi::api::core::v1::ObjectReference,
            EventType,
            &'static str,
            String,
        )>,
    ) {
        if events.is_empty() {
            return;
        }
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            futures::stream::iter(events)
                .for_each_concurrent(8, |(reference, type_, reason, note)| {
                    let recorder = recorder.clone();
                    async move {
                        let event = KubeEvent {
                            type_,
                            reason: reason.to_owned(),
                            note: Some(note.chars().take(1000).collect()),
                            action: "Allocate".to_owned(),
                            secondary: None,
                        };
                        if let Err(error) = recorder.publish(&event, &reference).await {
                            tracing::debug!(object = ?reference.name, error = %error, "cannot publish event");
                        }
                    }
                })
                .await;
        });
    }
}

async fn patch_status(
    client: &Client,
    service: &Service,
    addresses: &[IpAddr],
) -> Result<(), kube::Error> {
    let api: Api<Service> = Api::namespaced(
        client.clone(),
        service.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let ingress: Vec<_> = addresses
        .iter()
        .map(|a| json!({"ip": a.to_string(), "ipMode": "VIP"}))
        .collect();
    let body = if ingress.is_empty() {
        json!({"status": {"loadBalancer": {"ingress": null}}})
    } else {
        json!({"status": {"loadBalancer": {"ingress": ingress}}})
    };
    api.patch_status(
        service.metadata.name.as_deref().unwrap_or_default(),
        &PatchParams::default(),
        &Patch::Merge(body),
    )
    .await
    .map(|_| ())
}

async fn patch_annotation(
    client: &Client,
    service: &Service,
    node: Option<&str>,
) -> Result<(), kube::Error> {
    let api: Api<Service> = Api::namespaced(
        client.clone(),
        service.metadata.namespace.as_deref().unwrap_or_default(),
    );
    api.patch(
        service.metadata.name.as_deref().unwrap_or_default(),
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {ANNOUNCING_NODE: node}}})),
    )
    .await
    .map(|_| ())
}

fn status_addresses(service: &Service) -> Vec<IpAddr> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref().and_then(|ip| ip.parse().ok()))
        .collect()
}

/// The pool status to write: usage and conditions, keeping each condition's transition time while its
/// status does not change.
fn pool_status(
    report: &PoolReport,
    previous: &IPPoolStatus,
    generation: Option<i64>,
) -> IPPoolStatus {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let condition = |type_: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" }.to_owned();
        let since = previous
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message,
            last_transition_time: since,
            observed_generation: generation,
        }
    };
    let mut conditions = vec![match &report.invalid {
        None => condition("Ready", true, "Valid", "the spec checks out".to_owned()),
        Some(error) => condition("Ready", false, "InvalidSpec", error.clone()),
    }];
    conditions.push(if report.overlaps.is_empty() {
        condition(
            "Overlapping",
            false,
            "Disjoint",
            "no other pool shares an address".to_owned(),
        )
    } else {
        condition(
            "Overlapping",
            true,
            "SharesAddresses",
            format!(
                "shares addresses with {}; an address is counted in the first pool by name",
                report.overlaps.join(", ")
            ),
        )
    });
    IPPoolStatus {
        assigned_ipv4: report.usage.assigned_v4,
        available_ipv4: report.usage.available_v4,
        assigned_ipv6: report.usage.assigned_v6,
        available_ipv6: report.usage.available_v6,
        conditions,
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

fn join(addresses: &[IpAddr]) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
