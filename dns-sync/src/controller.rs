//! The event loop: reflectors on Services, Ingresses and Gateway API objects trigger a sync; changes
//! arriving within the debounce window are written together; a periodic full sync repairs drift; with
//! `--leader-elect` only the Lease holder writes.
//!
//! Safety against mass deletion: deletions are planned only from a complete, fresh view. A reflector is
//! fresh after its list completed and until its watch fails; while it is not, the sync lists the objects
//! directly, and if that fails too, it upserts and defers every deletion.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, ObjectReference, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::Resource;
use kube::runtime::events::{Event as KubeEvent, EventType, Reporter};
use ops::CancellationToken;
use ops::endpoint::Health;
use ops::kube::{Watched, watch_kind, watch_kind_trimmed};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::cluster_watch::{ClusterWatch, on_node_change};
use crate::config::Settings;
use crate::dnsendpoint::{self, DNSEndpoint};
use crate::metrics::Metrics;
use crate::node_source;
use crate::plan::{self, Change, Conflict, Rules};
use crate::publish;
use crate::schedule::Schedule;
use crate::service_types;
use crate::source::{self, Endpoint, ObjectId, Rejection, RejectionKind, Request};
use crate::writer::{self, WriteError};

/// Events published at once.
const EVENT_CONCURRENCY: usize = 8;
/// Syncs retried after a guard failure before giving up until the next trigger.
const RACE_RETRIES: usize = 3;

/// Errors that stop dns-sync.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No Kubernetes client could be built.
    #[error(transparent)]
    Kube(#[from] ops::kube::ClientError),
    /// A requested source's resource is not served (its CRD is not installed).
    #[error("--source {flag}: the apiserver does not serve {resource}; install its CRD first")]
    NotServed {
        /// The `--source` value.
        flag: &'static str,
        /// The resource, as `plural.group/version`.
        resource: &'static str,
    },
    /// Leader election could not start.
    #[error("leader election: {0}")]
    Lease(String),
    /// A Gateway API source cannot start (its CRD is not served).
    #[error(transparent)]
    Gateway(#[from] crate::gateway::watch::StartError),
    /// `--once` failed.
    #[error("sync failed: {0}")]
    Sync(#[from] SyncError),
}

/// Why one sync did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// etcd trouble.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The view of the cluster was not available.
    #[error("{0} not listed yet")]
    NotReady(&'static str),
}

/// What a sync did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Records owned afterwards.
    pub managed: usize,
    /// Keys written.
    pub written: usize,
    /// Deletions deferred (stale view).
    pub deferred: usize,
}

struct Syncer {
    settings: Settings,
    etcd: Option<etcd_client::Client>,
    metrics: Metrics,
    events: ops::kube::EventPublisher,
    /// A hash of the last note per object and Event reason, so an unchanged state is not re-announced.
    reported: HashMap<(ObjectId, &'static str), u64>,
    services: Option<Watched<Service>>,
    ingresses: Option<Watched<Ingress>>,
    dns_endpoints: Option<Watched<DNSEndpoint>>,
    gateway: Option<crate::gateway::watch::Watches>,
    /// Nodes and EndpointSlices, for NodePort and headless Services (`--service-type-filter`).
    cluster: Option<ClusterWatch>,
    /// Nodes as a source of their own (`--source node`), trimmed by [`node_source::trim`].
    nodes: Option<Watched<Node>>,
    /// Writes `status.observedGeneration` on `DNSEndpoint`s (`--source crd`).
    observer: Option<crate::observed::Observer>,
}

/// What the objects ask for, gathered from the reflectors.
#[derive(Default)]
struct Asked {
    requests: Vec<Request>,
    rejections: Vec<Rejection>,
    /// Objects that ask for names but have no address yet, with the field they wait on.
    waiting: Vec<(ObjectId, &'static str)>,
    refs: HashMap<ObjectId, ObjectReference>,
    /// `DNSEndpoint`s whose `status.observedGeneration` lags, to record once their records are written.
    lagging: Vec<((String, String), i64)>,
}

impl Asked {
    fn add(&mut self, found: source::Wanted, object: ObjectId, reference: &ObjectReference) {
        if found.request.is_none() && found.rejections.is_empty() && found.waiting.is_none() {
            return;
        }
        if let Some(field) = found.waiting {
            self.waiting.push((object.clone(), field));
        }
        self.refs.insert(object, reference.clone());
        self.requests.extend(found.request);
        self.rejections.extend(found.rejections);
    }
}

impl Syncer {
    /// What every watched object asks for, and whether the view of all of them is complete and fresh.
    async fn ask(&self) -> Result<(Asked, bool), SyncError> {
        let mut asked = Asked::default();
        let mut fresh = true;
        let filters = &self.settings.filters;
        let services = objects_of(self.services.as_ref(), "services", &mut fresh).await?;
        let snapshot = match &self.cluster {
            Some(cluster) => {
                let (snapshot, is_fresh) = cluster
                    .snapshot(&services, filters)
                    .await
                    .map_err(SyncError::NotReady)?;
                fresh &= is_fresh;
                snapshot
            }
            None => Default::default(),
        };
        let view = snapshot.view();
        for object in services {
            let id = ObjectId::of("service", &object.metadata);
            let reference = object.object_ref(&());
            for found in service_types::wanted(&object, filters, &view) {
                asked.add(found, id.clone(), &reference);
            }
        }
        for object in objects_of(self.ingresses.as_ref(), "ingresses", &mut fresh).await? {
            let id = ObjectId::of("ingress", &object.metadata);
            asked.add(
                source::from_ingress(&object, filters),
                id,
                &object.object_ref(&()),
            );
        }
        let dns_endpoints = self.dns_endpoints.as_ref();
        for object in objects_of(dns_endpoints, "dnsendpoints", &mut fresh).await? {
            asked.lagging.extend(dnsendpoint::lagging(&object));
            let id = ObjectId::of("dnsendpoint", &object.metadata);
            let reference = object.object_ref(&());
            for found in dnsendpoint::from_dns_endpoint(&object, filters) {
                asked.add(found, id.clone(), &reference);
            }
        }
        for object in objects_of(self.nodes.as_ref(), "nodes", &mut fresh).await? {
            let id = ObjectId::of(node_source::KIND, &object.metadata);
            let reference = object.object_ref(&());
            asked.add(node_source::from_node(&object, filters), id, &reference);
        }
        if let Some(gateway) = &self.gateway {
            let (found, is_fresh) = gateway
                .wanted(&self.settings.filters)
                .await
                .map_err(SyncError::NotReady)?;
            fresh &= is_fresh;
            for (wanted, id, reference) in found {
                asked.add(wanted, id, &reference);
            }
        }
        Ok((asked, fresh))
    }

    async fn sync(&mut self) -> Result<Summary, SyncError> {
        let (mut asked, fresh) = self.ask().await?;
        let rules = Rules {
            layout: &self.settings.layout,
            owner: &self.settings.owner,
            adopt: self.settings.adopt.as_deref(),
            policy: self.settings.policy,
            allow_deletes: fresh,
        };
        let mut attempt = 0;
        let (decision, plan, written) = loop {
            attempt += 1;
            let client = etcd_client(&mut self.etcd, &self.settings.etcd).await?;
            let (existing, _undecodable) =
                writer::read_state(client, &self.settings.layout).await?;
            let mut decision = publish::decide(
                &asked.requests,
                &existing,
                &self.settings.layout,
                &self.settings.owner,
                &self.settings.publish,
            );
            if self.settings.config.create_ptr {
                let ptrs =
                    crate::ptr::endpoints_for(&decision.endpoints, &self.settings.publish.zones);
                decision.endpoints.extend(ptrs);
            }
            crate::ptr::place_at_names(&mut decision.endpoints);
            let plan = plan::plan(&decision.endpoints, &existing, &rules);
            if self.settings.config.dry_run {
                for change in &plan.changes {
                    log_change(change, true);
                }
                break (decision, plan, 0);
            }
            match writer::apply(client, &plan.changes).await {
                Ok(written) => {
                    for change in &plan.changes {
                        log_change(change, false);
                    }
                    if let Some(observer) = &mut self.observer {
                        observer.offer(std::mem::take(&mut asked.lagging));
                    }
                    break (decision, plan, written);
                }
                Err(WriteError::Raced) if attempt < RACE_RETRIES => continue,
                Err(error) => {
                    if !matches!(error, WriteError::Raced) {
                        // A broken connection is rebuilt on the next attempt.
                        self.etcd = None;
                    }
                    return Err(error.into());
                }
            }
        };
        asked.rejections.extend(decision.refusals);
        self.metrics.etcd_writes.inc_by(written as u64);
        self.metrics.records_managed.set(plan.managed as i64);
        let mut refused: HashMap<RejectionKind, i64> = HashMap::new();
        for rejection in &asked.rejections {
            *refused.entry(rejection.kind).or_default() += 1;
        }
        for kind in RejectionKind::ALL {
            let count = refused.get(&kind).copied().unwrap_or(0);
            self.metrics.refused(kind).set(count);
        }
        self.metrics
            .rejected
            .set(refused.get(&RejectionKind::Invalid).copied().unwrap_or(0));
        self.metrics.waiting.set(asked.waiting.len() as i64);
        self.metrics.conflicts.set(plan.conflicts.len() as i64);
        self.metrics
            .deferred_deletes
            .set(plan.deferred_deletes as i64);
        self.report(&decision.endpoints, &asked, &plan.conflicts)
            .await;
        Ok(Summary {
            managed: plan.managed,
            written,
            deferred: plan.deferred_deletes,
        })
    }

    /// Kubernetes Events on the objects whose outcome changed: `Published` and `WaitingForAddress` (Normal:
    /// a new LoadBalancer Service has no address until the controller assigns one), and the Warnings
    /// `Rejected`, `Conflict` and `LimitExceeded`, one Event per reason.
    async fn report(&mut self, published: &[Endpoint], asked: &Asked, conflicts: &[Conflict]) {
        let mut outcomes: HashMap<(&ObjectId, &'static str), (EventType, Vec<String>)> =
            HashMap::new();
        for endpoint in published {
            outcomes
                .entry((&endpoint.object, "Published"))
                .or_insert((EventType::Normal, Vec::new()))
                .1
                .push(format!("{} -> {}", endpoint.name, endpoint.target));
        }
        for (object, field) in &asked.waiting {
            tracing::debug!(%object, field, "names wait for an address");
            outcomes
                .entry((object, "WaitingForAddress"))
                .or_insert((EventType::Normal, Vec::new()))
                .1
                .push(format!("{field}: no address to publish yet"));
        }
        for rejection in &asked.rejections {
            tracing::warn!(object = %rejection.object, field = %rejection.field, reason = %rejection.reason, kind = rejection.kind.label(), "name refused");
            outcomes
                .entry((&rejection.object, rejection.kind.event_reason()))
                .or_insert((EventType::Warning, Vec::new()))
                .1
                .push(format!("{}: {}", rejection.field, rejection.reason));
        }
        for conflict in conflicts {
            tracing::warn!(object = %conflict.object, name = %conflict.name, key = %conflict.key, owner = %conflict.owner, "record owned by someone else");
            outcomes
                .entry((&conflict.object, "Conflict"))
                .or_insert((EventType::Warning, Vec::new()))
                .1
                .push(format!(
                    "{} is held by owner {:?} at {}",
                    conflict.name, conflict.owner, conflict.key
                ));
        }
        let mut reported = HashMap::with_capacity(outcomes.len());
        for ((object, reason), (kind, mut notes)) in outcomes {
            notes.sort();
            notes.dedup();
            let note = notes.join("; ");
            let digest = digest(&note);
            let key = (object.clone(), reason);
            let unchanged = self.reported.get(&key) == Some(&digest);
            reported.insert(key, digest);
            if unchanged {
                continue;
            }
            let Some(reference) = asked.refs.get(object) else {
                continue;
            };
            let event = KubeEvent {
                type_: kind,
                reason: reason.to_owned(),
                note: Some(truncate(&note, 1000)),
                action: "SyncDNS".to_owned(),
                secondary: None,
            };
            self.events.publish(event, reference.clone());
        }
        // Outcomes that ended are forgotten, so they are announced again if they come back.
        self.reported = reported;
    }
}

fn digest(note: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    note.hash(&mut hasher);
    hasher.finish()
}

/// The etcd client, connected on first use and again after a failure dropped it.
async fn etcd_client<'a>(
    slot: &'a mut Option<etcd_client::Client>,
    connection: &ops::etcd::EtcdConnection,
) -> Result<&'a mut etcd_client::Client, WriteError> {
    if slot.is_none() {
        *slot = Some(connection.connect().await?);
    }
    // Filled just above when it was empty.
    slot.as_mut().ok_or(WriteError::Raced)
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &text[..cut])
}

fn log_change(change: &Change, dry_run: bool) {
    let verb = if dry_run { "would" } else { "did" };
    match change {
        Change::Create { key, record } => {
            tracing::info!(key = %key, value = %record.to_json(), resource = %record.resource, "{verb} create");
        }
        Change::Update { key, record, .. } => {
            tracing::info!(key = %key, value = %record.to_json(), resource = %record.resource, "{verb} update");
        }
        Change::Delete { key, record, .. } => {
            tracing::info!(key = %key, value = %record.to_json(), resource = %record.resource, "{verb} delete");
        }
    }
}

/// Runs dns-sync until shutdown (or after one pass with `--once`).
pub async fn run(
    settings: Settings,
    metrics: Metrics,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    for warning in &settings.etcd.warnings {
        tracing::warn!("{warning}");
    }
    if settings.publish.zones.is_empty() {
        tracing::warn!(
            "no --zone and no --domain-filter: any name can be published, zone apexes and NS names included"
        );
    }
    let client = ops::kube::client(settings.config.kubeconfig.as_deref()).await?;
    let identity = settings
        .config
        .pod_name
        .clone()
        .unwrap_or_else(|| format!("dns-sync-{}", std::process::id()));
    let (trigger, triggers) = mpsc::unbounded_channel::<Instant>();
    let services = settings.services.then(|| {
        watch_kind(
            settings.scope.api::<Service>(client.clone()),
            settings.scope.watch_config(),
            ops::kube::send_time(trigger.clone()),
            shutdown.clone(),
        )
    });
    let ingresses = settings.ingresses.then(|| {
        watch_kind(
            settings.scope.api::<Ingress>(client.clone()),
            settings.scope.watch_config(),
            ops::kube::send_time(trigger.clone()),
            shutdown.clone(),
        )
    });
    let dns_endpoints = if settings.dns_endpoints {
        if !ops::kube::serves(&client, "externaldns.k8s.io", "v1alpha1", "dnsendpoints").await {
            return Err(Error::NotServed {
                flag: "crd",
                resource: "dnsendpoints.externaldns.k8s.io/v1alpha1",
            });
        }
        Some(watch_kind(
            settings.scope.api::<DNSEndpoint>(client.clone()),
            settings.scope.watch_config(),
            ops::kube::send_time(trigger.clone()),
            shutdown.clone(),
        ))
    } else {
        None
    };
    let gateway = crate::gateway::watch::Watches::start(
        &client,
        &settings.gateway,
        &settings.scope,
        trigger.clone(),
        &shutdown,
    )
    .await?;
    let cluster = (settings.services && settings.filters.services.needs_endpoints())
        .then(|| ClusterWatch::start(&client, &settings.scope, &trigger, &shutdown));
    // Cluster-scoped: `--namespace` does not apply, `--label-filter` does (as in external-dns).
    let nodes = settings.nodes.then(|| {
        watch_kind_trimmed(
            kube::Api::all(client.clone()),
            settings.scope.watch_config(),
            node_source::trim,
            on_node_change(trigger.clone(), node_source::digest),
            shutdown.clone(),
        )
    });
    let reporter = Reporter {
        controller: "dns-sync".to_owned(),
        instance: Some(identity.clone()),
    };
    let once = settings.config.once;
    let observer = (settings.dns_endpoints && !settings.config.dry_run)
        .then(|| crate::observed::Observer::start(client.clone(), shutdown.clone()));
    let mut syncer = Syncer {
        events: ops::kube::EventPublisher::start(
            client.clone(),
            reporter,
            EVENT_CONCURRENCY,
            metrics.events_dropped.clone(),
        ),
        settings,
        etcd: None,
        metrics: metrics.clone(),
        reported: HashMap::new(),
        services,
        ingresses,
        dns_endpoints,
        gateway,
        cluster,
        nodes,
        observer,
    };

    if once {
        return run_once(&mut syncer).await;
    }
    let election = syncer
        .settings
        .config
        .leader_elect
        .then(|| ops::kube::Election {
            name: syncer.settings.config.lease_name.clone(),
            namespace: syncer.settings.config.lease_namespace.clone(),
            identity: identity.clone(),
            duration_secs: 15,
            grace_secs: 5,
        });
    let (_lease_guard, leader) = ops::kube::leadership(&client, election.as_ref())
        .await
        .map_err(Error::Lease)?;
    follow(syncer, triggers, leader, &health, &identity, &shutdown).await
}

/// `--once`: waits for the first lists, syncs, and returns.
async fn run_once(syncer: &mut Syncer) -> Result<(), Error> {
    let limit = Duration::from_secs(30);
    if let Some(services) = &syncer.services
        && !services.wait_listed(limit).await
    {
        return Err(SyncError::NotReady("services").into());
    }
    if let Some(ingresses) = &syncer.ingresses
        && !ingresses.wait_listed(limit).await
    {
        return Err(SyncError::NotReady("ingresses").into());
    }
    if let Some(dns_endpoints) = &syncer.dns_endpoints
        && !dns_endpoints.wait_listed(limit).await
    {
        return Err(SyncError::NotReady("dnsendpoints").into());
    }
    if let Some(nodes) = &syncer.nodes
        && !nodes.wait_listed(limit).await
    {
        return Err(SyncError::NotReady("nodes").into());
    }
    if let Some(gateway) = &syncer.gateway
        && let Err(resource) = gateway.wait_listed(limit).await
    {
        return Err(SyncError::NotReady(resource).into());
    }
    if let Some(cluster) = &syncer.cluster
        && !cluster.wait_listed(limit).await
    {
        return Err(SyncError::NotReady("nodes and endpointslices").into());
    }
    let summary = syncer.sync().await?;
    tracing::info!(
        managed = summary.managed,
        written = summary.written,
        "one pass done"
    );
    Ok(())
}

/// Syncs whenever [`Schedule`] says so, until `shutdown`.
async fn follow(
    mut syncer: Syncer,
    mut triggers: mpsc::UnboundedReceiver<Instant>,
    mut leader: tokio::sync::watch::Receiver<bool>,
    health: &Health,
    identity: &str,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    let metrics = syncer.metrics.clone();
    let (interval, debounce) = (
        syncer.settings.config.interval,
        syncer.settings.config.debounce,
    );
    let mut schedule = Schedule::new(*leader.borrow());
    if *leader.borrow() {
        metrics.leader.set(1);
        health.set_not_ready("waiting for the first sync");
    } else {
        health.set_ready("standing by (not leader)");
    }
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            Some(at) = triggers.recv() => schedule.changed(at.into()),
            _ = ticker.tick() => schedule.changed(tokio::time::Instant::now()),
            changed = leader.changed() => {
                if changed.is_err() {
                    return Err(Error::Lease("the lease manager stopped".to_owned()));
                }
                let is_leader = *leader.borrow();
                metrics.leader.set(i64::from(is_leader));
                tracing::info!(leader = is_leader, identity = %identity, "leadership changed");
                schedule.leading(is_leader, tokio::time::Instant::now());
                if !is_leader {
                    health.set_ready("standing by (not leader)");
                }
            }
            () = sleep_until(schedule.wake_at()) => schedule.tick(tokio::time::Instant::now()),
        }
        if !schedule.due() {
            continue;
        }
        // Gather whatever else arrives within the debounce window into the same transaction.
        tokio::time::sleep(debounce).await;
        while let Ok(at) = triggers.try_recv() {
            schedule.changed(at.into());
        }
        let Some(first_change) = schedule.start() else {
            continue;
        };
        match syncer.sync().await {
            Ok(summary) => {
                schedule.succeeded();
                if summary.written > 0 {
                    metrics
                        .change_to_commit
                        .observe(first_change.elapsed().as_secs_f64());
                }
                metrics.last_success.set(unix_now());
                health.set_ready(format!(
                    "synced: {} records managed{}",
                    summary.managed,
                    if summary.deferred > 0 {
                        format!(
                            ", {} deletions deferred until the view is fresh",
                            summary.deferred
                        )
                    } else {
                        String::new()
                    }
                ));
            }
            Err(error) => {
                metrics.errors.inc();
                let retry_in = schedule.failed(first_change, tokio::time::Instant::now());
                tracing::warn!(error = %error, retry_in = ?retry_in, "sync failed; keeping the desired state and retrying");
            }
        }
    }
}

/// The objects of a watched kind (none when it is not watched); clears `fresh` when they are not a complete,
/// fresh view, and fails before the kind was ever listed.
async fn objects_of<K>(
    watched: Option<&Watched<K>>,
    kind: &'static str,
    fresh: &mut bool,
) -> Result<Vec<Arc<K>>, SyncError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let Some(watched) = watched else {
        return Ok(Vec::new());
    };
    let (objects, is_fresh) = watched.objects().await;
    if !watched.has_listed() {
        return Err(SyncError::NotReady(kind));
    }
    *fresh &= is_fresh;
    Ok(objects)
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
