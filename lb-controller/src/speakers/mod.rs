//! The controller's half of the speaker protocol (`proto/groundwork/announce/v1/announce.proto`): the gRPC
//! server every `lb-speaker` dials, which pushes each node its assignments and leases and fences addresses
//! so that two nodes never announce one at once.
//!
//! The rest of the controller sees a [`SpeakerHub`]: it learns which speakers can take addresses
//! ([`SpeakerHub::available`]), states which node should announce what ([`SpeakerHub::set_desired`]), and
//! reads back what is announced ([`SpeakerHub::announced`]) and what happened ([`SpeakerHub::events`]).
//! The fencing rules live in `fence` as pure logic; `session` is the tonic service and the timer
//! driver around it; `identity` decides whether a session may speak for the node it names; `tls` loads
//! certificates; `metrics` counts what happens.
//!
//! Everything a speaker can fill is bounded: the inbox between the sessions and the fence (a full one
//! makes the readers wait, and HTTP/2 flow control then stops the speaker), the observations queue
//! (dropped and counted beyond [`EVENT_QUEUE`]), and what one report may list (`fence`).

mod fence;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod identity;
mod metrics;
mod session;
mod tls;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use proto::announce::v1 as pb;
use proto::announce::v1::announcer_server::AnnouncerServer;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use session::SpeakerService;

/// Messages received from all sessions that the fence has not taken in yet.
const INBOX: usize = 4096;

/// Observations waiting for the controller (which turns them into Kubernetes Events).
pub const EVENT_QUEUE: usize = 1024;

/// Timing of the leases the hub hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubConfig {
    /// How long an assignment stays valid after the speaker receives it without renewal. Renewals go out
    /// every `lease / 5`; a speaker that sends nothing for `lease / 2` is silent.
    pub lease: Duration,
    /// Added to a silent node's lease deadline before its addresses move, for transit time.
    pub grace: Duration,
    /// After activation, how long an address nobody reported may still be held by a speaker that has
    /// not reconnected (the speakers' controller-loss hold, `announce.proto` step 8); plus `grace`.
    pub activation_hold: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_millis(1000),
            grace: Duration::from_millis(200),
            activation_hold: Duration::from_millis(1000),
        }
    }
}

/// One address a node should announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredAssignment {
    /// The IPv4 or IPv6 address.
    pub address: IpAddr,
    /// Interfaces to announce on; empty means every eligible interface.
    pub interfaces: Vec<String>,
    /// The Services using the address, as `namespace/name`.
    pub services: Vec<String>,
    /// No Service's status showed the address when this controller became leader, so no speaker can
    /// hold it from an earlier leader: it skips the activation window.
    pub fresh: bool,
}

impl DesiredAssignment {
    fn to_proto(&self) -> pb::Assignment {
        pb::Assignment {
            address: self.address.to_string(),
            interfaces: self.interfaces.clone(),
            services: self.services.clone(),
        }
    }
}

/// A network interface a speaker can announce on, as it said in its Hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Interface name (`eth0`).
    pub name: String,
    /// Hardware address (6 bytes for Ethernet).
    pub mac: Vec<u8>,
    /// Addresses configured on the interface; entries that do not parse as CIDR are left out.
    pub addresses: Vec<ipnet::IpNet>,
    /// Whether the link is up.
    pub up: bool,
}

/// A speaker that can take addresses now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerInfo {
    /// Kubernetes Node name.
    pub node: String,
    /// Where it can announce.
    pub interfaces: Vec<InterfaceInfo>,
    /// The speaker's build version.
    pub version: String,
}

impl SpeakerInfo {
    fn from_hello(hello: &pb::Hello) -> Self {
        let interfaces = hello
            .interfaces
            .iter()
            .map(|i| InterfaceInfo {
                name: i.name.clone(),
                mac: i.mac.clone(),
                addresses: i
                    .addresses
                    .iter()
                    .filter_map(|a| match a.parse() {
                        Ok(net) => Some(net),
                        Err(_) => {
                            tracing::warn!(node = %hello.node, interface = %i.name, address = %a,
                                "ignoring an interface address that is not CIDR");
                            None
                        }
                    })
                    .collect(),
                up: i.up,
            })
            .collect();
        Self {
            node: hello.node.clone(),
            interfaces,
            version: hello.version.clone(),
        }
    }
}

/// Why a speaker stopped being available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// Its stream broke or ended without Leaving: the process is gone, its addresses moved at once.
    Reset,
    /// It sent nothing for half a lease: its addresses move once its lease deadline passed.
    Silent,
    /// It announced a graceful shutdown.
    Leaving,
    /// A newer session of the same node took over.
    Replaced,
    /// This controller stopped being the leader and closed the session.
    NotLeader,
}

/// Observations for Kubernetes Events and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubEvent {
    /// A speaker opened a session (or spoke again after being silent).
    Connected {
        /// The node.
        node: String,
    },
    /// A speaker stopped being available.
    Disconnected {
        /// The node.
        node: String,
        /// Why.
        why: DisconnectReason,
    },
    /// Another MAC answers for an address this node announces.
    Conflict {
        /// The reporting node.
        node: String,
        /// The contested address.
        address: IpAddr,
        /// The interface it saw the answer on.
        interface: String,
        /// The other party's hardware address.
        foreign_mac: Vec<u8>,
    },
    /// Something prevented an announcement.
    Problem {
        /// The reporting node.
        node: String,
        /// The address concerned, if any.
        address: Option<IpAddr>,
        /// The interface concerned (may be empty).
        interface: String,
        /// What the speaker said.
        message: String,
    },
    /// A speaker's BGP sessions changed (a state, a count, an error), as its Report lists them.
    BgpSessions {
        /// The node.
        node: String,
        /// One per peer of its BGP configuration (at most `fence::MAX_FINDINGS`).
        sessions: Vec<pb::BgpSessionState>,
    },
    /// An address was sent to a node to announce.
    HandedOver {
        /// The address.
        address: IpAddr,
        /// The node that held it before, if any.
        from: Option<String>,
        /// The node that got it.
        to: String,
        /// How long it waited for fencing since it was first desired on `to`.
        waited: Duration,
    },
}

/// Certificate files for mutual TLS: the server's identity and the CA that signs speaker certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate (chain) of the server.
    pub cert: PathBuf,
    /// PEM private key of the server.
    pub key: PathBuf,
    /// PEM CA certificate; only clients with a certificate from it are accepted.
    pub ca: PathBuf,
}

/// Errors of the speaker server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A certificate file could not be read.
    #[error("reading {path}: {source}")]
    ReadTls {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The listen address could not be bound.
    #[error("binding the speaker server to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC server failed (TLS configuration or transport).
    #[error("speaker server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// State shared by the hub handles, the service and the sessions.
#[derive(Debug)]
struct Inner {
    config: HubConfig,
    state: Mutex<State>,
    /// Wakes the timer driver when a call from outside it moved the fence's next wake-up.
    wake: Arc<Notify>,
    available: watch::Sender<BTreeMap<String, SpeakerInfo>>,
    announced: watch::Sender<BTreeMap<IpAddr, String>>,
    events: mpsc::Sender<HubEvent>,
    events_rx: Mutex<Option<mpsc::Receiver<HubEvent>>>,
    metrics: metrics::Metrics,
    driver_started: std::sync::atomic::AtomicBool,
    /// What the sessions' readers received, for the driver to take in (`session::drive`).
    inbox: mpsc::Sender<fence::Received>,
    inbox_rx: Mutex<Option<mpsc::Receiver<fence::Received>>>,
    /// When set, a session must prove the node its Hello names (`identity`).
    identity: std::sync::OnceLock<identity::TokenReviewer>,
}

/// The fence plus the streams of the open sessions.
#[derive(Debug)]
struct State {
    fence: fence::Fence,
    next_session: fence::SessionId,
    streams: BTreeMap<fence::SessionId, session::Stream>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the fence half-updated in a way that matters more
        // than stopping the hub would, so keep going with the data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Carries out what the fence decided, then publishes the new views.
    fn apply(&self, state: &mut State, outputs: Vec<fence::Output>) {
        for output in outputs {
            match output {
                fence::Output::Send { session, message } => {
                    if let Some(stream) = state.streams.get(&session) {
                        stream.send(message);
                    }
                }
                fence::Output::Close { session, reason } => {
                    if let Some(stream) = state.streams.remove(&session) {
                        stream.close(reason);
                    }
                }
                fence::Output::Event(event) => {
                    log_event(&event);
                    self.metrics.observe(&event);
                    // Nobody listening is fine: events are observations, not commands. A full queue
                    // (a speaker flooding reports) drops them: the log and the metrics above have them.
                    if let Err(mpsc::error::TrySendError::Full(_)) = self.events.try_send(event) {
                        self.metrics.event_dropped();
                    }
                }
            }
        }
        if !state.fence.take_views_changed() {
            return;
        }
        let available = state.fence.available();
        let announced = state.fence.announced();
        self.metrics.set_levels(available.len(), announced.len());
        self.available.send_if_modified(|current| {
            let changed = *current != available;
            *current = available;
            changed
        });
        self.announced.send_if_modified(|current| {
            let changed = *current != announced;
            *current = announced;
            changed
        });
    }

    /// Queues what a session's reader received for the driver, stamped with the time it arrived; waits
    /// while the inbox is full.
    async fn receive(&self, session: fence::SessionId, what: fence::Inbound) {
        let at = tokio::time::Instant::now();
        // The driver holds the receiver for as long as the hub lives.
        let _ = self.inbox.send(fence::Received { session, what, at }).await;
    }

    /// Runs `f` on the fence with the current time and carries out its outputs.
    fn with_fence(
        &self,
        f: impl FnOnce(&mut fence::Fence, tokio::time::Instant) -> Vec<fence::Output>,
    ) {
        let mut state = self.lock();
        let wake_before = state.fence.next_wake();
        let outputs = f(&mut state.fence, tokio::time::Instant::now());
        self.apply(&mut state, outputs);
        // The driver sleeps until the wake-up it last read: tell it when a call from outside moved it
        // (a hand-over sent by a new plan starts a settle timer without changing any view).
        if state.fence.next_wake() != wake_before {
            self.wake.notify_one();
        }
    }
}

fn log_event(event: &HubEvent) {
    match event {
        HubEvent::BgpSessions { node, sessions } => {
            tracing::debug!(node, ?sessions, "BGP sessions reported");
        }
        HubEvent::Connected { node } => tracing::info!(node, "speaker connected"),
        HubEvent::Disconnected { node, why } => {
            tracing::info!(node, ?why, "speaker no longer available");
        }
        HubEvent::Conflict {
            node,
            address,
            interface,
            foreign_mac,
        } => tracing::warn!(node, %address, interface, ?foreign_mac, "address conflict reported"),
        HubEvent::Problem {
            node,
            address,
            interface,
            message,
        } => tracing::warn!(
            node,
            ?address,
            interface,
            message,
            "speaker problem reported"
        ),
        HubEvent::HandedOver {
            address,
            from,
            to,
            waited,
        } => match from {
            // A move between nodes is news; a first placement (thousands at start-up) is detail.
            Some(from) => tracing::info!(%address, from, to, ?waited, "address handed over"),
            None => tracing::debug!(%address, to, ?waited, "address placed"),
        },
    }
}

/// The controller's side of every speaker session; cheap to clone (all clones share one state).
#[derive(Debug, Clone)]
pub struct SpeakerHub {
    inner: Arc<Inner>,
}

impl SpeakerHub {
    /// A hub, inactive until [`SpeakerHub::set_active`], registering its metrics in `registry`.
    pub fn new(config: HubConfig, registry: &mut prometheus_client::registry::Registry) -> Self {
        let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (inbox, inbox_rx) = mpsc::channel(INBOX);
        let inner = Inner {
            config,
            state: Mutex::new(State {
                fence: fence::Fence::new(config.lease, config.grace)
                    .with_activation_hold(config.activation_hold),
                next_session: 1,
                streams: BTreeMap::new(),
            }),
            wake: Arc::new(Notify::new()),
            available: watch::Sender::new(BTreeMap::new()),
            announced: watch::Sender::new(BTreeMap::new()),
            events,
            events_rx: Mutex::new(Some(events_rx)),
            metrics: metrics::Metrics::register(registry),
            driver_started: std::sync::atomic::AtomicBool::new(false),
            inbox,
            inbox_rx: Mutex::new(Some(inbox_rx)),
            identity: std::sync::OnceLock::new(),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// From now on, a session is accepted only with a token that `reviewer` finds is from the speakers'
    /// ServiceAccount in a pod on the node the Hello names. Set once, before serving.
    pub fn require_identity(&self, reviewer: identity::TokenReviewer) {
        if self.inner.identity.set(reviewer).is_err() {
            tracing::warn!("speaker identity was already required; keeping the first reviewer");
        }
    }

    /// The tonic service to mount (the hub's timers start with the first service or session).
    pub fn service(&self) -> AnnouncerServer<SpeakerService> {
        session::ensure_driver(&self.inner);
        AnnouncerServer::new(SpeakerService::new(Arc::clone(&self.inner)))
    }

    /// Serves speakers on `listen` until `shutdown` is cancelled, then closes every session. With `tls`,
    /// clients must present a certificate from `tls.ca`; `None` serves plaintext (only for `--insecure`).
    pub async fn serve(
        &self,
        listen: SocketAddr,
        tls: Option<TlsFiles>,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| Error::Bind {
                addr: listen,
                source,
            })?;
        self.serve_on(listener, tls, shutdown).await
    }

    /// Like [`SpeakerHub::serve`], on a listener already bound (tests bind `127.0.0.1:0`).
    pub async fn serve_on(
        &self,
        listener: tokio::net::TcpListener,
        tls: Option<TlsFiles>,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let mut builder = tonic::transport::Server::builder();
        if let Some(files) = tls {
            builder = builder.tls_config(tls::server_config(&files).await?)?;
        }
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let inner = Arc::clone(&self.inner);
        let signal = async move {
            shutdown.cancelled().await;
            // Open streams would keep the graceful shutdown waiting: end them.
            let mut state = inner.lock();
            let streams = std::mem::take(&mut state.streams);
            for stream in streams.into_values() {
                stream.close(fence::CloseReason::NotLeader);
            }
        };
        builder
            .add_service(self.service())
            .serve_with_incoming_shutdown(incoming, signal)
            .await?;
        Ok(())
    }

    /// Only an active hub (the elected leader) accepts sessions. Deactivating closes every session with
    /// UNAVAILABLE; activating starts a window of `lease + grace` during which an address nobody connected
    /// has reported holding is not handed to anyone (a node that has not connected yet may hold it).
    pub fn set_active(&self, active: bool) {
        self.inner
            .with_fence(|fence, now| fence.set_active(active, now));
    }

    /// Speakers able to take addresses now: Hello received, not silent, not leaving, session open.
    pub fn available(&self) -> watch::Receiver<BTreeMap<String, SpeakerInfo>> {
        self.inner.available.subscribe()
    }

    /// Replaces the desired assignments of every node (nodes absent get an empty set). Each address is sent
    /// to its node as soon as fencing allows: every other node that may hold it acknowledged a set without
    /// it, lost its stream, or passed its lease deadline (`announce.proto` rule 5); until then it waits,
    /// and goes out the moment the acknowledgement arrives or the deadline passes.
    pub fn set_desired(&self, desired: BTreeMap<String, Vec<DesiredAssignment>>) {
        self.inner
            .with_fence(|fence, now| fence.set_desired(desired, now));
    }

    /// Replaces the desired assignments of the nodes in `changes` only (an empty list: none), as
    /// [`SpeakerHub::set_desired`] does for all of them.
    pub fn update_desired(&self, changes: BTreeMap<String, Vec<DesiredAssignment>>) {
        self.inner
            .with_fence(|fence, now| fence.update_desired(changes, now));
    }

    /// Replaces every node's BGP configuration (`announce.proto` step 9; nodes absent get an empty one).
    /// Sent to each speaker after its first set and whenever its node's changes; not fenced.
    pub fn set_bgp(&self, desired: BTreeMap<String, Arc<pb::BgpConfig>>) {
        self.inner
            .with_fence(|fence, now| fence.set_bgp(desired, now));
    }

    /// What each address is announced by right now: the node that acknowledged holding it.
    pub fn announced(&self) -> watch::Receiver<BTreeMap<IpAddr, String>> {
        self.inner.announced.subscribe()
    }

    /// The hub's observations. The first call gets every event since the hub was made (up to
    /// [`EVENT_QUEUE`] are buffered until then); later calls get a receiver that is already closed.
    pub fn events(&self) -> mpsc::Receiver<HubEvent> {
        let taken = self
            .inner
            .events_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        taken.unwrap_or_else(|| mpsc::channel(1).1)
    }
}
