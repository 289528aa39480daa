//! The controller's event loop.
//!
//! Reflectors on Services, IPPools, Nodes, EndpointSlices, Namespaces (and the legacy MetalLB ConfigMap
//! when asked) trigger a reconcile pass ([`crate::plan`]); so do speakers connecting or leaving and
//! acknowledging what they announce. Only the leader runs passes and serves speakers; with
//! `--leader-service` it points the speakers' Service at itself ([`crate::leader_service`]), so a standby
//! is ready (a rollout needs every replica ready) yet never sees a speaker. Each pass hands the
//! speakers their assignments first, then starts the API writes that make the API show it
//! (`crate::writer`): one batch at a time, beside the loop, so a speaker that fails over does not wait
//! behind ten thousand status writes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use ops::CancellationToken;
use ops::endpoint::Health;
use ops::kube::{Seen, Watched, watch_kind};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::Settings;
use crate::legacy;
use crate::metrics::Metrics;
use crate::plan::{Inputs, Outcome, Planner, Scope};
use crate::pool::IPPool;
use crate::request::{self, ServiceKey};
use crate::schedule::{Change, Order, Pass, Schedule};
use crate::speakers::SpeakerHub;
use crate::writer::{Writer, Written};

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
    /// The BGP kinds (none with `--bgp=false`).
    bgp: Option<crate::bgp::source::Sources>,
    /// MetalLB's kinds in its namespace (with `--metallb-namespace`).
    metallb: Option<crate::metallb::Sources>,
}

impl Watchers {
    /// Starts a reflector per kind; each change is sent on `changes` as what it calls for.
    fn start(
        client: &Client,
        settings: &Settings,
        bgp: bool,
        changes: &mpsc::UnboundedSender<(Change, Instant)>,
        shutdown: &CancellationToken,
    ) -> Self {
        let all = watcher::Config::default;
        Self {
            services: watch_kind(
                Api::all(client.clone()),
                all(),
                on_service_change(changes, |service: &Service| Some(ServiceKey::of(service))),
                shutdown.clone(),
            ),
            pools: watch_kind(
                Api::all(client.clone()),
                all(),
                on_world_change(changes, |pool: &IPPool| {
                    serde_json::to_string(&pool.spec).ok()
                }),
                shutdown.clone(),
            ),
            nodes: watch_kind(
                Api::all(client.clone()),
                all(),
                on_world_change(changes, |node: &Node| {
                    (
                        node.metadata.labels.clone(),
                        node.spec.as_ref().and_then(|s| s.unschedulable),
                        crate::plan::node_ready(node),
                    )
                }),
                shutdown.clone(),
            ),
            slices: watch_kind(
                Api::all(client.clone()),
                all(),
                // A slice matters only to its Service (`externalTrafficPolicy: Local`).
                on_service_change(changes, |slice: &EndpointSlice| {
                    let namespace = slice.metadata.namespace.as_deref()?;
                    let labels = slice.metadata.labels.as_ref()?;
                    let service = labels.get("kubernetes.io/service-name")?;
                    Some(ServiceKey::new(namespace, service))
                }),
                shutdown.clone(),
            ),
            namespaces: watch_kind(
                Api::all(client.clone()),
                all(),
                on_world_change(changes, |namespace: &Namespace| {
                    namespace.metadata.labels.clone()
                }),
                shutdown.clone(),
            ),
            configmap: settings.metallb_configmap.as_ref().map(|(ns, name)| {
                watch_kind(
                    Api::namespaced(client.clone(), ns),
                    all().fields(&format!("metadata.name={name}")),
                    on_world_change(changes, |map: &ConfigMap| map.data.clone()),
                    shutdown.clone(),
                )
            }),
            bgp: bgp.then(|| crate::bgp::source::Sources::start(client, changes, shutdown)),
            metallb: settings
                .config
                .metallb_namespace
                .as_deref()
                .map(|namespace| {
                    crate::metallb::Sources::start(client, namespace, changes, shutdown)
                }),
        }
    }

    /// The legacy ConfigMap (if it exists) and what it holds, with `--metallb-configmap`.
    fn legacy(
        &self,
    ) -> Option<(
        Option<Arc<ConfigMap>>,
        legacy::Legacy,
        Vec<legacy::LegacyError>,
    )> {
        let configmap = self.configmap.as_ref()?;
        let map = configmap.store().state().into_iter().next();
        let (legacy, errors) = legacy::parse(
            map.as_ref()
                .and_then(|m| m.data.as_ref())
                .and_then(|d| d.get("config"))
                .map(String::as_str),
        );
        Some((map, legacy, errors))
    }

    fn listed(&self) -> bool {
        self.services.is_fresh()
            && self.pools.is_fresh()
            && self.nodes.is_fresh()
            && self.slices.is_fresh()
            && self.namespaces.is_fresh()
            && self.configmap.as_ref().is_none_or(Watched::is_fresh)
            && self
                .bgp
                .as_ref()
                .is_none_or(crate::bgp::source::Sources::listed)
    }
}

/// A watch's `on_change` for what belongs to one Service (the Service itself, its EndpointSlices): a
/// change calls for a pass over the Service `service_of` names; a (re)list calls for a full pass.
fn on_service_change<K>(
    changes: &mpsc::UnboundedSender<(Change, Instant)>,
    service_of: impl Fn(&K) -> Option<ServiceKey> + Send + 'static,
) -> impl Fn(Seen<'_, K>) + Send + 'static {
    let changes = changes.clone();
    move |seen| {
        let change = match seen {
            Seen::Listed => Some(Change::Everything),
            Seen::Applied(object) | Seen::Deleted(object) => {
                service_of(object).map(Change::Service)
            }
        };
        if let Some(change) = change {
            let _ = changes.send((change, Instant::now()));
        }
    }
}

/// A watch's `on_change` for what only a full pass takes in (pools, Nodes, Namespaces, the legacy
/// ConfigMap): a full pass, but only when what the pass reads of the object changed, as `read` sums it
/// up. Our own pool status writes, and a kubelet's status updates that leave a Node Ready, change nothing
/// a pass reads; a full pass for each would put ~100 ms at 10,000 Services in front of every new one.
pub(crate) fn on_world_change<K: Resource<DynamicType = ()>, R: std::hash::Hash>(
    changes: &mpsc::UnboundedSender<(Change, Instant)>,
    read: impl Fn(&K) -> R + Send + 'static,
) -> impl Fn(Seen<'_, K>) + Send + 'static {
    use std::hash::{BuildHasher, RandomState};
    let changes = changes.clone();
    let hasher = RandomState::new();
    // One entry per object the watch has shown since its last list.
    let seen_before = std::sync::Mutex::new(std::collections::HashMap::<String, u64>::new());
    move |seen| {
        let mut known = seen_before
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let matters = match seen {
            // Objects deleted while the watch was down never get a Deleted: start over, so the map holds
            // no more than the store does.
            Seen::Listed => {
                known.clear();
                true
            }
            Seen::Applied(object) => {
                let summary = hasher.hash_one(read(object));
                known.insert(name_of(object), summary) != Some(summary)
            }
            Seen::Deleted(object) => {
                known.remove(&name_of(object));
                true
            }
        };
        if matters {
            let _ = changes.send((Change::Everything, Instant::now()));
        }
    }
}

/// A watch of the `K`s `api` sees whose changes call for a full pass, when what `read` sums up of one
/// changed (as [`on_world_change`] decides).
pub(crate) fn watch_world<K, R>(
    api: Api<K>,
    changes: &mpsc::UnboundedSender<(Change, Instant)>,
    read: impl Fn(&K) -> R + Send + 'static,
    shutdown: &CancellationToken,
) -> Watched<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    R: std::hash::Hash,
{
    watch_kind(
        api,
        watcher::Config::default(),
        on_world_change(changes, read),
        shutdown.clone(),
    )
}

/// What a pass reads of a resource whose spec is all it reads: the spec, as JSON.
pub(crate) fn spec_json<T: serde::Serialize>(spec: &T) -> Option<String> {
    serde_json::to_string(spec).ok()
}

/// `namespace/name`, or `name` for a cluster-scoped object.
fn name_of<K: Resource<DynamicType = ()>>(object: &K) -> String {
    let meta = object.meta();
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// What the leader remembers between passes.
struct Leading {
    planner: Planner,
    /// Until then, Ready nodes whose speaker has not reconnected still count as candidates; `None`
    /// once that window is over.
    settle_until: Option<Instant>,
    /// Nodes whose speaker connected since this replica leads.
    ever_connected: BTreeSet<String>,
    /// Stops pointing the speakers' Service at this replica (`--leader-service`) when leadership ends.
    publishing: Option<CancellationToken>,
    /// Whether the hub takes speakers yet: only once the first pass rebuilt the assignments.
    hub_active: bool,
    /// The BGP objects as of the last full pass.
    bgp: Option<crate::bgp::source::Checked>,
}

impl Drop for Leading {
    fn drop(&mut self) {
        if let Some(publishing) = &self.publishing {
            publishing.cancel();
        }
    }
}

/// How often the leader runs a full pass that nothing asked for, as a consistency check.
const CHECK_EVERY: Duration = Duration::from_secs(60);

/// Runs the controller until `shutdown`.
pub async fn run(
    settings: Settings,
    metrics: Metrics,
    hub: SpeakerHub,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let client = ops::kube::client(settings.config.kubeconfig.as_deref()).await?;
    if let Some(expected) = &settings.speaker_identity {
        hub.require_identity(crate::speakers::identity::TokenReviewer::new(
            client.clone(),
            expected.clone(),
        ));
    }
    let server = serve_speakers(&settings, &hub, &shutdown)?;
    let (changes, changed) = mpsc::unbounded_channel::<(Change, Instant)>();
    let bgp = settings.config.bgp
        && {
            let installed = crate::bgp::source::installed(&client).await;
            if !installed {
                tracing::warn!(
                    "BGP mode is off: the apiserver does not serve the BGPPeer, BGPAdvertisement, BFDProfile and \
                 BGPSessionState kinds; install their CRDs (deploy/crds/, or the chart's crds/ which `helm upgrade` \
                 does not apply) and restart, or run with --bgp=false"
                );
            }
            installed
        };
    let watchers = Watchers::start(&client, &settings, bgp, &changes, &shutdown);
    let writer = Writer::new(
        client.clone(),
        // A start at ten thousand Services makes twenty thousand Events: a few at a time, beside the
        // status writes.
        ops::kube::EventPublisher::start(
            client.clone(),
            Reporter {
                controller: "lb-controller".to_owned(),
                instance: Some(settings.identity.clone()),
            },
            4,
            metrics.events_dropped.clone(),
        ),
        metrics.clone(),
    );
    let election = settings.config.leader_elect.then(|| ops::kube::Election {
        name: settings.config.lease_name.clone(),
        namespace: settings.config.lease_namespace.clone(),
        identity: settings.identity.clone(),
        duration_secs: settings.config.leader_lease.as_secs().max(2),
        grace_secs: (settings.config.leader_lease.as_secs() / 2).max(1),
    });
    let (_election, leader) = ops::kube::leadership(&client, election.as_ref())
        .await
        .map_err(Error::Lease)?;
    health.set_not_ready("waiting for leadership");
    let settle = settings.config.controller_loss_hold + settings.hub.grace;
    let looping = Loop {
        available: hub.available(),
        announced: hub.announced(),
        hub_events: hub.events(),
        settings,
        metrics,
        hub,
        health,
        client,
        watchers,
        writer,
        leader,
        changed,
        leading: None,
        schedule: Schedule::new(CHECK_EVERY),
        writing: None,
        settle,
    };
    looping.run(server, shutdown).await
}

/// The event loop's I/O: what it listens to, and what it acts with. What it decides is in
/// [`Schedule`] (when to pass, over what, when to write) and [`Planner`] (the pass).
struct Loop {
    settings: Settings,
    metrics: Metrics,
    hub: SpeakerHub,
    health: Health,
    client: Client,
    watchers: Watchers,
    writer: Writer,
    leader: tokio::sync::watch::Receiver<bool>,
    changed: mpsc::UnboundedReceiver<(Change, Instant)>,
    available: tokio::sync::watch::Receiver<BTreeMap<String, crate::speakers::SpeakerInfo>>,
    announced: tokio::sync::watch::Receiver<BTreeMap<IpAddr, String>>,
    hub_events: mpsc::Receiver<crate::speakers::HubEvent>,
    leading: Option<Leading>,
    schedule: Schedule,
    /// The API writes of a pass run beside the loop, one batch at a time: passes (and so the speakers'
    /// assignments) never wait for them.
    writing: Option<tokio::task::JoinHandle<Written>>,
    /// How long after a start Ready nodes without a speaker still count (they may be reconnecting).
    settle: Duration,
}

/// Why the loop ended.
type Ended = Result<(), Error>;

impl Loop {
    async fn run(
        mut self,
        server: tokio::sync::oneshot::Receiver<Result<(), Error>>,
        shutdown: CancellationToken,
    ) -> Ended {
        tokio::pin!(server);
        // Act on the election's first answer before waiting for anything.
        let mut first = true;
        loop {
            if !first && let Some(ended) = self.wait(&mut server, &shutdown).await {
                return ended;
            }
            first = false;
            self.follow_leadership(&shutdown);
            if self.leading.is_none() {
                // Ready once it could take over (its caches listed): a Deployment's rollout waits for
                // every replica to be ready. Speakers reach only the leader (--leader-service).
                if self.watchers.listed() {
                    self.health.set_ready("standing by (not leader)");
                } else {
                    self.health.set_not_ready(
                        "standing by (not leader); waiting for the first list of Services, pools and nodes",
                    );
                }
            } else if !self.watchers.listed() {
                self.health
                    .set_not_ready("waiting for the first list of Services, pools and nodes");
            } else if let Some(pass) = self.schedule.next_pass() {
                self.pass_and_write(&pass);
            }
        }
    }

    /// Waits for the next thing to take in, and takes it in; `Some` when the loop must end.
    async fn wait(
        &mut self,
        server: &mut std::pin::Pin<&mut tokio::sync::oneshot::Receiver<Result<(), Error>>>,
        shutdown: &CancellationToken,
    ) -> Option<Ended> {
        let settle_at = self.leading.as_ref().and_then(|l| l.settle_until);
        tokio::select! {
            () = shutdown.cancelled() => return Some(Ok(())),
            result = server => {
                return Some(match result {
                    Ok(outcome) => outcome,
                    Err(_) => Err(Error::Runtime("the speaker server thread ended".to_owned())),
                });
            }
            Some((change, at)) = self.changed.recv() => {
                tracing::trace!(?change, "change seen");
                self.schedule.change(change, at);
            }
            changed = self.leader.changed() => {
                if changed.is_err() {
                    return Some(Err(Error::Lease("the lease manager stopped".to_owned())));
                }
            }
            Ok(()) = self.available.changed() => self.schedule.change(Change::Speakers, Instant::now()),
            Ok(()) = self.announced.changed() => self.schedule.change(Change::Announced, Instant::now()),
            Some(event) = self.hub_events.recv() => {
                if let Some(leading) = &self.leading {
                    self.writer.tell_hub_event(&event, &leading.planner, self.watchers.services.store());
                }
            }
            () = sleep_until(settle_at) => {
                if let Some(leading) = &mut self.leading {
                    // Past the settle window: from now on only connected speakers count.
                    leading.settle_until = None;
                }
                self.schedule.change(Change::Speakers, Instant::now());
            }
            () = sleep_until(self.schedule.wake_at()) => self.schedule.tick(Instant::now()),
            written = finished(&mut self.writing) => {
                self.writing = None;
                // An error is a batch aborted when leadership was lost: nothing to take in.
                if let Ok(written) = written {
                    let first_change = written.first_change;
                    let failed = self.writer.finish(written);
                    let count = failed.services.len() + failed.pools;
                    let retry = self.schedule.written(failed.services, failed.pools > 0, first_change, Instant::now());
                    if let Some(retry_in) = retry {
                        tracing::warn!(failures = count, ?retry_in, "some writes failed; retrying");
                    }
                }
            }
        }
        None
    }

    /// Starts leading, or stops, as the election says.
    fn follow_leadership(&mut self, shutdown: &CancellationToken) {
        let is_leader = *self.leader.borrow();
        let identity = &self.settings.identity;
        if is_leader && self.leading.is_none() {
            tracing::info!(%identity, "leading: rebuilding allocations from Service statuses first");
            self.metrics.leader.set(1);
            let publishing = self.settings.leader_service.clone().map(|service| {
                let stop = shutdown.child_token();
                tokio::spawn(crate::leader_service::publish(
                    self.client.clone(),
                    self.watchers.services.store().clone(),
                    service,
                    stop.clone(),
                ));
                stop
            });
            self.leading = Some(Leading {
                planner: Planner::new(self.settings.filter.clone()),
                settle_until: Some(Instant::now() + self.settle),
                ever_connected: BTreeSet::new(),
                publishing,
                hub_active: false,
                bgp: None,
            });
            self.schedule.start_leading(Instant::now());
        } else if !is_leader && self.leading.is_some() {
            tracing::info!(%identity, "lost leadership; standing by");
            // The new leader writes from now on; a write of ours landing after one of its would undo it.
            if let Some(batch) = self.writing.take() {
                batch.abort();
            }
            self.schedule.stop_leading();
            self.hub.set_active(false);
            self.metrics.leader.set(0);
            self.leading = None;
        }
    }

    /// Runs `pass`, hands the speakers their sets, tells people, and starts the writes if they may.
    fn pass_and_write(&mut self, pass: &Pass) {
        let Some(state) = &mut self.leading else {
            return;
        };
        let started = std::time::Instant::now();
        // A full pass is CPU work proportional to the cluster: let the runtime move other tasks off this
        // worker meanwhile.
        let outcome = tokio::task::block_in_place(|| {
            plan(
                state,
                &self.watchers,
                &self.hub,
                &mut self.writer,
                &self.announced,
                pass,
            )
        });
        let took = started.elapsed();
        self.metrics.reconcile_seconds.observe(took.as_secs_f64());
        if pass.order == (Order::Full { check: true }) && outcome.changed > 0 {
            self.metrics.check_changes.inc_by(outcome.changed as u64);
            tracing::warn!(
                changed = outcome.changed,
                "the periodic full pass changed what earlier passes had decided"
            );
        }
        if outcome.desired_complete {
            self.hub.set_desired(outcome.desired.clone());
        } else if !outcome.desired.is_empty() {
            self.hub.update_desired(outcome.desired.clone());
        }
        let bgp_sources = self.watchers.bgp.is_some()
            || self.watchers.metallb.is_some()
            || self.watchers.configmap.is_some();
        if bgp_sources {
            // The objects are checked on full passes only (any change to them calls for one); every pass
            // places the addresses it may have changed.
            if matches!(pass.order, Order::Full { .. }) || state.bgp.is_none() {
                state.bgp = Some(check_bgp(&self.watchers, &mut self.writer));
            }
            if let Some(checked) = &state.bgp {
                self.hub
                    .set_bgp(crate::bgp::source::desired(checked, &state.planner));
            }
        }
        let handed = started.elapsed();
        if !state.hub_active {
            // Only now, with the assignments rebuilt: active before, the hub told every speaker that
            // connected to drop what it announces (an empty set), and the addresses went silent for as
            // long as the first list took (a leader change while the kube-apiserver was down: 6-7 s).
            // Until now speakers are refused as by a standby and keep what they hold
            // (--controller-loss-hold).
            self.hub.set_active(true);
            state.hub_active = true;
            state.settle_until = Some(Instant::now() + self.settle);
            tracing::info!(identity = %self.settings.identity, "leading: taking speakers, assignments rebuilt");
        }
        self.writer.tell(&outcome, self.watchers.services.store());
        if self.schedule.may_write() {
            let batch = self.writer.prepare(
                &outcome,
                self.watchers.services.store(),
                &self.watchers.pools.store().state(),
                pass.first_change,
            );
            if batch.leftover {
                self.schedule.defer(&outcome.coverage, pass.first_change);
            }
            if !batch.is_empty() {
                self.writing = Some(tokio::spawn(batch.run()));
                self.schedule.writing_started();
            }
        } else {
            self.schedule.defer(&outcome.coverage, pass.first_change);
        }
        self.health.set_ready(format!(
            "leading: {} addresses assigned, {} Services pending",
            state.planner.allocator().held_count(),
            outcome.pending
        ));
        tracing::debug!(?took, ?handed, total = ?started.elapsed(), since_change = ?pass.first_change.elapsed(),
            order = ?pass.order, writing = self.writing.is_some(), "pass");
    }
}

/// The BGP objects (ours, MetalLB's, the legacy ConfigMap's) checked, and what is wrong with them reported.
/// Only a full pass calls for this: a change to any of them is one.
fn check_bgp(watchers: &Watchers, writer: &mut Writer) -> crate::bgp::source::Checked {
    use crate::bgp::source::{Entry, Objects};
    let mut problems = Vec::new();
    let mut objects = watchers
        .bgp
        .as_ref()
        .map(crate::bgp::source::Sources::objects)
        .unwrap_or_default();
    let mut labels = crate::bgp::source::pool_labels(&watchers.pools.store().state());
    if let Some(metallb) = &watchers.metallb {
        let (_, metallb_labels, pool_problems) = metallb.pools();
        problems.extend(pool_problems);
        for (name, pool_labels) in metallb_labels {
            labels.entry(name).or_insert(pool_labels);
        }
        objects.extend(metallb.bgp_objects(&mut problems));
    }
    if let Some((Some(map), legacy, _)) = watchers.legacy() {
        let reference = map.object_ref(&());
        objects.extend(Objects {
            peers: legacy
                .peers
                .into_iter()
                .map(|(name, spec)| Entry::new(reference.clone(), &Some(name), spec))
                .collect(),
            advertisements: legacy
                .advertisements
                .into_iter()
                .map(|(name, spec)| Entry::new(reference.clone(), &Some(name), spec))
                .collect(),
            profiles: Vec::new(),
            aliases: legacy.aliases,
        });
    }
    let checked = crate::bgp::source::check(&objects, labels, &mut problems);
    writer.tell_bgp(problems);
    checked
}

/// Starts the speakers' gRPC server on a thread of its own; the receiver says how it ended.
fn serve_speakers(
    settings: &Settings,
    hub: &SpeakerHub,
    shutdown: &CancellationToken,
) -> Result<tokio::sync::oneshot::Receiver<Result<(), Error>>, Error> {
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
    Ok(result)
}

/// Runs the planner over what `order` asks for.
fn plan(
    state: &mut Leading,
    watchers: &Watchers,
    hub: &SpeakerHub,
    writer: &mut Writer,
    announced: &tokio::sync::watch::Receiver<BTreeMap<IpAddr, String>>,
    pass: &Pass,
) -> Outcome {
    let slices = watchers.slices.store().state();
    let Order::Services(keys) = &pass.order else {
        return full_pass(state, watchers, hub, writer, &slices, announced);
    };
    let store = watchers.services.store();
    let changed: BTreeMap<ServiceKey, Option<Arc<Service>>> = keys
        .iter()
        .map(|key| (key.clone(), request::find(store, key)))
        .collect();
    // Borrowed, not copied: an incremental pass takes a millisecond, and the hub waits that long at most to
    // publish the next acknowledgement.
    let announced = announced.borrow();
    let nothing = BTreeMap::new();
    let nobody = BTreeSet::new();
    state.planner.pass(
        &Inputs {
            services: &[],
            pools: &[],
            legacy_pools: &[],
            nodes: &[],
            slices: &slices,
            namespaces: &[],
            speakers: &nothing,
            include_unconnected: false,
            ever_connected: &nobody,
            announced: &announced,
            announced_changed: pass.acknowledgements,
        },
        Scope::Services(&changed),
    )
}

fn full_pass(
    state: &mut Leading,
    watchers: &Watchers,
    hub: &SpeakerHub,
    writer: &mut Writer,
    slices: &[Arc<EndpointSlice>],
    announced: &tokio::sync::watch::Receiver<BTreeMap<IpAddr, String>>,
) -> Outcome {
    let services = watchers.services.store().state();
    let pools = watchers.pools.store().state();
    let nodes = watchers.nodes.store().state();
    let namespaces = watchers.namespaces.store().state();
    let legacy_pools = match watchers.legacy() {
        Some((map, legacy, errors)) => {
            writer.tell_legacy(map.as_deref(), &errors);
            legacy.pools
        }
        None => Vec::new(),
    };
    // MetalLB's IPAddressPools after the ConfigMap's; an IPPool of the same name wins over both.
    let mut legacy_pools = legacy_pools;
    if let Some(metallb) = &watchers.metallb {
        legacy_pools.extend(metallb.pools().0);
    }
    let speakers = hub.available().borrow().clone();
    state.ever_connected.extend(speakers.keys().cloned());
    // Copied: a full pass takes tens of milliseconds, too long to hold the hub up.
    let announced = announced.borrow().clone();
    state.planner.pass(
        &Inputs {
            services: &services,
            pools: &pools,
            legacy_pools: &legacy_pools,
            nodes: &nodes,
            slices,
            namespaces: &namespaces,
            speakers: &speakers,
            include_unconnected: state.settle_until.is_some(),
            ever_connected: &state.ever_connected,
            announced: &announced,
            announced_changed: true,
        },
        Scope::Everything,
    )
}

/// The batch of writes in flight, once it is done (never, if there is none).
async fn finished(
    writing: &mut Option<tokio::task::JoinHandle<Written>>,
) -> Result<Written, tokio::task::JoinError> {
    match writing {
        Some(batch) => batch.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
