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
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use ops::CancellationToken;
use ops::endpoint::Health;
use ops::kube::{Watched, watch_kind};
use tokio::sync::mpsc;

use crate::config::Settings;
use crate::legacy;
use crate::metrics::Metrics;
use crate::plan::{Inputs, Outcome, Planner};
use crate::pool::IPPool;
use crate::speakers::SpeakerHub;
use crate::writer::{Writer, Written};

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

/// What the leader remembers between passes.
struct Leading {
    planner: Planner,
    /// Until then, Ready nodes whose speaker has not reconnected still count as candidates; `None`
    /// once that window is over.
    settle_until: Option<tokio::time::Instant>,
    /// Nodes whose speaker connected since this replica leads.
    ever_connected: BTreeSet<String>,
    /// Stops pointing the speakers' Service at this replica (`--leader-service`) when leadership ends.
    publishing: Option<CancellationToken>,
    /// Whether the hub takes speakers yet: only once the first pass rebuilt the assignments.
    hub_active: bool,
}

impl Drop for Leading {
    fn drop(&mut self) {
        if let Some(publishing) = &self.publishing {
            publishing.cancel();
        }
    }
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

    if let Some(expected) = &settings.speaker_identity {
        hub.require_identity(crate::speakers::identity::TokenReviewer::new(
            client.clone(),
            expected.clone(),
        ));
    }
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

    let mut writer = Writer::new(
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
    let (_election, mut leader) = ops::kube::leadership(&client, election.as_ref())
        .await
        .map_err(Error::Lease)?;

    let mut available = hub.available();
    let mut announced = hub.announced();
    let mut hub_events = hub.events();
    let mut leading: Option<Leading> = None;
    let mut pending: Option<Instant> = None;
    // The API writes of a pass run beside the loop, one batch at a time: passes (and so the speakers'
    // assignments) never wait for them. `unwritten` is the first change a pass saw while a batch was
    // in flight or writes were backing off: once they are done, a pass writes it.
    let mut writing: Option<tokio::task::JoinHandle<Written>> = None;
    let mut unwritten: Option<Instant> = None;
    // A pass that moves addresses between speakers (one came or went) runs even while a batch is in
    // flight; one that only follows API objects (mostly the echoes of our own writes) waits for it.
    let mut urgent = false;
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
                Ok(()) = available.changed() => {
                    pending.get_or_insert_with(Instant::now);
                    urgent = true;
                }
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
                    urgent = true;
                }
                () = sleep_until(retry_at) => {
                    retry_at = None;
                    if let Some(at) = unwritten.take() {
                        pending.get_or_insert(at);
                    }
                }
                written = finished(&mut writing) => {
                    writing = None;
                    // An error is a batch aborted when leadership was lost: nothing to take in.
                    if let Ok(written) = written {
                        let first_change = written.first_change;
                        let failures = writer.finish(written);
                        if failures > 0 {
                            tracing::warn!(failures, retry_in = ?retry_in, "some writes failed; retrying");
                            retry_at = Some(tokio::time::Instant::now() + retry_in);
                            retry_in = (retry_in * 2).min(RETRY_MAX);
                            unwritten = Some(unwritten.map_or(first_change, |u| u.min(first_change)));
                        } else {
                            retry_in = Duration::from_millis(500);
                        }
                    }
                    if retry_at.is_none()
                        && let Some(at) = unwritten.take()
                    {
                        pending.get_or_insert(at);
                    }
                }
            }
        }
        let is_leader = *leader.borrow();
        if is_leader && leading.is_none() {
            tracing::info!(identity = %settings.identity, "leading: rebuilding allocations from Service statuses first");
            metrics.leader.set(1);
            let publishing = settings.leader_service.clone().map(|service| {
                let stop = shutdown.child_token();
                tokio::spawn(crate::leader_service::publish(
                    client.clone(),
                    watchers.services.store().clone(),
                    service,
                    stop.clone(),
                ));
                stop
            });
            leading = Some(Leading {
                planner: Planner::new(settings.filter.clone()),
                settle_until: Some(tokio::time::Instant::now() + settle),
                ever_connected: BTreeSet::new(),
                publishing,
                hub_active: false,
            });
            pending.get_or_insert_with(Instant::now);
        } else if !is_leader && leading.is_some() {
            tracing::info!(identity = %settings.identity, "lost leadership; standing by");
            // The new leader writes from now on; a write of ours landing after one of its would undo it.
            if let Some(batch) = writing.take() {
                batch.abort();
            }
            unwritten = None;
            hub.set_active(false);
            metrics.leader.set(0);
            leading = None;
        }
        if !is_leader {
            // Ready once it could take over (its caches listed): a Deployment's rollout waits for every
            // replica to be ready. Speakers reach only the leader (--leader-service).
            if watchers.listed() {
                health.set_ready("standing by (not leader)");
            } else {
                health.set_not_ready(
                    "standing by (not leader); waiting for the first list of Services, pools and nodes",
                );
            }
            continue;
        }
        let Some(state) = &mut leading else { continue };
        if pending.is_none() || (writing.is_some() && !urgent) {
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
        let took = started.elapsed();
        metrics.reconcile_seconds.observe(took.as_secs_f64());
        tracing::debug!(?took, urgent, writing = writing.is_some(), "pass");
        urgent = false;
        hub.set_desired(outcome.desired.clone());
        if !state.hub_active {
            // Only now, with the assignments rebuilt: active before, the hub told every speaker that
            // connected to drop what it announces (an empty set), and the addresses went silent for as long
            // as the first list took (a leader change while the kube-apiserver was down: 6-7 s). Until now
            // speakers are refused as by a standby and keep what they hold (--controller-loss-hold).
            hub.set_active(true);
            state.hub_active = true;
            state.settle_until = Some(tokio::time::Instant::now() + settle);
            tracing::info!(identity = %settings.identity, "leading: taking speakers, assignments rebuilt");
        }
        writer.tell(&outcome, &watchers.services);
        if writing.is_some() || retry_at.is_some() {
            unwritten = Some(unwritten.map_or(first_change, |u| u.min(first_change)));
        } else {
            let batch = writer.prepare(
                &outcome,
                &watchers.services.store().state(),
                &watchers.pools.store().state(),
                unwritten
                    .take()
                    .map_or(first_change, |u| u.min(first_change)),
            );
            if !batch.is_empty() {
                writing = Some(tokio::spawn(batch.run()));
            }
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

/// The batch of writes in flight, once it is done (never, if there is none).
async fn finished(
    writing: &mut Option<tokio::task::JoinHandle<Written>>,
) -> Result<Written, tokio::task::JoinError> {
    match writing {
        Some(batch) => batch.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
