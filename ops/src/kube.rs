//! Kubernetes plumbing shared by the daemons that watch the API (`dns-sync`, `lb-controller`): building a
//! client from `--kubeconfig` or the environment, reflectors that say whether their view is complete and
//! fresh, and leader election through a Lease. Compiled only with the `kube` feature, so `dns-server` and
//! `lb-speaker` do not carry a Kubernetes client.

use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::ListParams;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig file could not be read or used.
    #[error("--kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The file given.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Neither in-cluster configuration nor a default kubeconfig was found.
    #[error("no Kubernetes configuration (in-cluster or ~/.kube/config): {0}")]
    Infer(String),
    /// The client itself failed to build (TLS material, proxy settings...).
    #[error("kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// Builds the Kubernetes client from `kubeconfig`, or in-cluster / inferred configuration.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let error = |message: String| ClientError::Kubeconfig {
                path: path.display().to_string(),
                message,
            };
            let kubeconfig =
                kube::config::Kubeconfig::read_from(path).map_err(|e| error(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .map_err(|e| error(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| ClientError::Infer(e.to_string()))?,
    };
    Ok(Client::try_from(config)?)
}

/// Publishes Kubernetes Events in the background, each as an Event of its own, a few at a time.
///
/// kube-runtime's `Recorder` folds an event into an earlier one with the same reason and action on the same
/// object, for six minutes, and keeps the earlier note. A Service whose problem changed ("no address yet",
/// then "bad_name is not a DNS name") would go on showing the old message. The daemons already tell each
/// note once, so here every publish creates a new Event.
///
/// Events are for people: [`EventPublisher::publish`] only queues, and one task publishes `concurrency` at
/// a time, so a burst (twenty thousand at a controller's start at ten thousand Services) never competes
/// with the writes users wait for, nor holds up the caller. The queue holds at most [`EVENT_QUEUE`]
/// Events: beyond that (a flood) they are dropped and counted, never buffered without end.
#[derive(Clone)]
pub struct EventPublisher {
    queue: mpsc::Sender<(
        kube::runtime::events::Event,
        k8s_openapi::api::core::v1::ObjectReference,
    )>,
    dropped: prometheus_client::metrics::counter::Counter,
}

/// Events queued for publishing at most. A controller's start at ten thousand Services queues about
/// 20,000, which fit; the API server takes them at a few hundred a second.
pub const EVENT_QUEUE: usize = 32 * 1024;

impl EventPublisher {
    /// Starts the publishing task on the current Tokio runtime, reporting as `reporter`; Events that
    /// find the queue full are counted in `dropped`.
    pub fn start(
        client: Client,
        reporter: kube::runtime::events::Reporter,
        concurrency: usize,
        dropped: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        let (queue, mut queued) = mpsc::channel(EVENT_QUEUE);
        let events = futures::stream::poll_fn(move |cx| queued.poll_recv(cx));
        tokio::spawn(events.for_each_concurrent(
            concurrency,
            move |(event, reference): (
                kube::runtime::events::Event,
                k8s_openapi::api::core::v1::ObjectReference,
            )| {
                // A recorder of its own, so its cache never folds this event into an earlier one.
                let recorder = kube::runtime::events::Recorder::new(client.clone(), reporter.clone());
                async move {
                    if let Err(error) = recorder.publish(&event, &reference).await {
                        tracing::debug!(object = ?reference.name, error = %error, "cannot publish event");
                    }
                }
            },
        ));
        Self { queue, dropped }
    }

    /// Queues `event` about `reference`.
    pub fn publish(
        &self,
        event: kube::runtime::events::Event,
        reference: k8s_openapi::api::core::v1::ObjectReference,
    ) {
        // The task lives as long as the runtime: besides a full queue, a send fails only while it
        // shuts down.
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send((event, reference)) {
            self.dropped.inc();
        }
    }
}

/// Whether the apiserver serves `plural` in `group`/`version` (a CRD-defined resource is served once its
/// CRD is installed). Any error, a 404 for an unknown group included, counts as not served.
pub async fn serves(client: &Client, group: &str, version: &str, plural: &str) -> bool {
    match client
        .list_api_group_resources(&format!("{group}/{version}"))
        .await
    {
        Ok(list) => list.resources.iter().any(|r| r.name == plural),
        Err(_) => false,
    }
}

/// One watched kind: its reflector store and whether that store is fresh (listed, and its watch has not
/// failed since).
pub struct Watched<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    fresh: Arc<AtomicBool>,
    /// Set once the first list completed (or a direct list succeeded); never cleared.
    listed: Arc<AtomicBool>,
    api: Api<K>,
    /// The watch's selectors, for a direct list when the watch is stale: without them that list would
    /// hand out objects the watch never shows (Services outside `--label-filter`, say).
    list: ListParams,
    /// Applied to every object before it is kept or handed out (see [`watch_kind_trimmed`]).
    trim: fn(&mut K),
}

/// How a watch retries after an error: from 100 ms, doubling, at most 2 s apart (with jitter), reset after
/// 2 minutes without errors. kube-runtime's default climbs to 30 s to spare a struggling apiserver; but a
/// leader that re-lists only after waiting 12 s leaves new Services pending that long after an apiserver
/// restart (seen in the lab's fault suite), and a daemon's few watches retrying every 2 s cost an apiserver
/// nothing.
fn retry_backoff() -> impl kube::runtime::utils::Backoff {
    let builder = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    kube::runtime::utils::ResetTimerBackoff::new(
        watcher::ExponentialBackoff::from(builder),
        Duration::from_secs(120),
    )
}

/// What a reflector saw, told to the `on_change` callback of [`watch_kind`] after its store took it in.
#[derive(Debug)]
pub enum Seen<'a, K> {
    /// A complete (re)list: anything may have changed.
    Listed,
    /// One object was created or changed.
    Applied(&'a K),
    /// One object went away.
    Deleted(&'a K),
}

/// An `on_change` for [`watch_kind`] that only sends the time of each change, for loops that redo
/// everything on any change.
pub fn send_time<K>(
    trigger: mpsc::UnboundedSender<Instant>,
) -> impl Fn(Seen<'_, K>) + Send + 'static {
    move |_| {
        let _ = trigger.send(Instant::now());
    }
}

/// Starts a reflector over `api` (filtered by `config`) that runs until `shutdown`, calling `on_change`
/// with every change once the store shows it.
pub fn watch_kind<K>(
    api: Api<K>,
    config: watcher::Config,
    on_change: impl Fn(Seen<'_, K>) + Send + 'static,
    shutdown: CancellationToken,
) -> Watched<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    watch_kind_trimmed(api, config, |_| {}, on_change, shutdown)
}

/// [`watch_kind`] keeping only what `trim` leaves of each object: for kinds with large objects (Nodes with
/// their image lists, EndpointSlices) of which a daemon reads a few fields, so the store holds only those.
pub fn watch_kind_trimmed<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
    on_change: impl Fn(Seen<'_, K>) + Send + 'static,
    shutdown: CancellationToken,
) -> Watched<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let list = direct_list(&config);
    let fresh = Arc::new(AtomicBool::new(false));
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api.clone(), config)
            .backoff(retry_backoff())
            .modify(trim),
    );
    let listed = Arc::new(AtomicBool::new(false));
    let (flag, ever) = (fresh.clone(), listed.clone());
    let view = store.clone();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        let mut listing: Option<Instant> = None;
        loop {
            let item = tokio::select! {
                () = shutdown.cancelled() => return,
                item = stream.next() => item,
            };
            match item {
                None => return,
                Some(Ok(Event::Init)) => {
                    flag.store(false, Ordering::SeqCst);
                    listing = Some(Instant::now());
                }
                Some(Ok(Event::InitApply(_))) => {}
                Some(Ok(Event::InitDone)) => {
                    // How long a (re)list takes is what a daemon's readiness waits on at scale.
                    let took = listing.take().map(|at| at.elapsed());
                    tracing::info!(
                        kind = K::kind(&()).as_ref(),
                        objects = view.len(),
                        ?took,
                        "listed"
                    );
                    flag.store(true, Ordering::SeqCst);
                    ever.store(true, Ordering::SeqCst);
                    on_change(Seen::Listed);
                }
                Some(Ok(Event::Apply(object))) => {
                    flag.store(true, Ordering::SeqCst);
                    ever.store(true, Ordering::SeqCst);
                    on_change(Seen::Applied(&object));
                }
                Some(Ok(Event::Delete(object))) => {
                    flag.store(true, Ordering::SeqCst);
                    ever.store(true, Ordering::SeqCst);
                    on_change(Seen::Deleted(&object));
                }
                Some(Err(error)) => {
                    flag.store(false, Ordering::SeqCst);
                    tracing::warn!(kind = K::kind(&()).as_ref(), error = %error, "watch interrupted; the view is stale until it resumes");
                }
            }
        }
    });
    Watched {
        store,
        fresh,
        listed,
        api,
        list,
        trim,
    }
}

/// The list a watch with `config` would start from, selectors included.
fn direct_list(config: &watcher::Config) -> ListParams {
    let mut list = ListParams::default();
    if let Some(labels) = &config.label_selector {
        list = list.labels(labels);
    }
    if let Some(fields) = &config.field_selector {
        list = list.fields(fields);
    }
    list
}

impl<K> Watched<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// The objects and whether they are a complete, fresh view; when the reflector is not fresh, lists
    /// directly with the watch's selectors, and falls back to the (stale) store if that fails too.
    pub async fn objects(&self) -> (Vec<Arc<K>>, bool) {
        if self.is_fresh() {
            return (self.store.state(), true);
        }
        match self.api.list(&self.list).await {
            Ok(list) => {
                self.listed.store(true, Ordering::SeqCst);
                let trimmed = list.items.into_iter().map(|mut object| {
                    (self.trim)(&mut object);
                    Arc::new(object)
                });
                (trimmed.collect(), true)
            }
            Err(error) => {
                tracing::warn!(kind = K::kind(&()).as_ref(), error = %error, "cannot list; using the last view");
                (self.store.state(), false)
            }
        }
    }

    /// The reflector's store as it is now.
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// Whether any complete list ever succeeded: before that, the view is empty, not merely stale, and
    /// nothing should be decided (or reported ready) from it.
    pub fn has_listed(&self) -> bool {
        self.listed.load(Ordering::SeqCst)
    }

    /// Whether the reflector listed and has not failed since.
    pub fn is_fresh(&self) -> bool {
        self.fresh.load(Ordering::SeqCst)
    }

    /// Waits until the first list completed, at most `limit`.
    pub async fn wait_listed(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.store.wait_until_ready())
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Leader election settings.
#[derive(Debug, Clone)]
pub struct Election {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity.
    pub identity: String,
    /// Lease duration in seconds: how long a dead leader blocks the others.
    pub duration_secs: u64,
    /// Seconds before expiry at which the holder renews.
    pub grace_secs: u64,
}

/// Keeps an election running; dropping it stops the election (and releases the Lease).
pub type ElectionGuard = Box<dyn std::any::Any + Send>;

/// With `Some(election)`, a Lease decides who leads and the receiver follows it; with `None` this replica
/// always leads.
pub async fn leadership(
    client: &Client,
    election: Option<&Election>,
) -> Result<(ElectionGuard, watch::Receiver<bool>), String> {
    let Some(election) = election else {
        let (sender, receiver) = watch::channel(true);
        return Ok((Box::new(sender), receiver));
    };
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &election.name)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(election.duration_secs)
        .with_grace(election.grace_secs)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let (receiver, task) = manager.watch().await;
    Ok((Box::new(task), receiver))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_direct_list_keeps_the_watch_selectors() {
        let config = watcher::Config::default()
            .labels("dns=public,tier notin (internal)")
            .fields("metadata.namespace=web");
        let list = direct_list(&config);
        assert_eq!(
            list.label_selector.as_deref(),
            Some("dns=public,tier notin (internal)")
        );
        assert_eq!(
            list.field_selector.as_deref(),
            Some("metadata.namespace=web")
        );
        let unfiltered = direct_list(&watcher::Config::default());
        assert_eq!(unfiltered.label_selector, None);
        assert_eq!(unfiltered.field_selector, None);
    }
}
