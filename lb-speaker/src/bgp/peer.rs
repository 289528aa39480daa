//! One task per BGP peer: it owns the TCP connection and carries out what the session's state machine
//! (`session.rs`) answers, and keeps the peer's Adj-RIB-Out (`rib.rs`) in step with the routes the
//! control loop hands it through a `watch` (only the newest set matters, so the channel is bounded by
//! construction).
//!
//! Reading runs in a task of its own that only frames bytes (header checked, at most 4096 bytes a
//! message) and hands whole messages over a small bounded channel, so the main loop's `select!` never
//! cancels a half-done read. Writes are bounded by [`WRITE_TIMEOUT`]: a peer that stops reading ends the
//! session rather than the task.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

use super::message::{self, DecodeError, Family, HEADER, Message, Update};
use super::rib::{self, AdjRibOut, PeerView, Route};
use super::session::{Action, Input, Negotiated, Session, SessionConfig, State, Stop};
use super::{PathState, md5};
use crate::metrics::{BgpPeerLabels, BgpStateLabels, Metrics};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one message may take to leave.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole messages read but not yet handled.
const INBOUND_QUEUE: usize = 16;

/// How to reach a peer and what to tell it, resolved from a `BgpPeer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerSettings {
    /// `BgpPeer.name`.
    pub name: String,
    /// Address and port.
    pub address: SocketAddr,
    /// Local address to connect from.
    pub source: Option<IpAddr>,
    /// TCP MD5 key.
    pub password: Option<Vec<u8>>,
    /// IP TTL / hop limit of the connection.
    pub ttl: u32,
    /// The session's parameters.
    pub session: SessionConfig,
}

/// What the control loop reads of a peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PeerStatus {
    pub state: Option<State>,
    pub advertised: u32,
    pub last_error: String,
    pub bfd_state: String,
    pub problems: Vec<String>,
}

/// The control loop's handle on a running peer task.
pub(crate) struct PeerHandle {
    pub routes: watch::Sender<Arc<Vec<Route>>>,
    pub status: Arc<Mutex<PeerStatus>>,
    stop: Option<oneshot::Sender<Stop>>,
    task: tokio::task::JoinHandle<()>,
}

impl PeerHandle {
    /// Starts the peer's task.
    pub fn start(
        settings: PeerSettings,
        routes: Arc<Vec<Route>>,
        path: Option<watch::Receiver<PathState>>,
        changed: Arc<Notify>,
        metrics: Metrics,
    ) -> Self {
        let (routes_tx, routes_rx) = watch::channel(routes);
        let (stop_tx, stop_rx) = oneshot::channel();
        let status = Arc::new(Mutex::new(PeerStatus {
            state: Some(State::Idle),
            ..PeerStatus::default()
        }));
        let path_up = path.as_ref().is_some_and(|p| p.borrow().up);
        let task = PeerTask {
            path_up,
            session: Session::new(settings.session.clone(), Instant::now()),
            settings,
            routes: routes_rx,
            path,
            status: status.clone(),
            changed,
            metrics,
            connecting: None,
            connection: None,
            advertised: AdjRibOut::new(),
            problems: Vec::new(),
            reported_state: None,
        };
        Self {
            routes: routes_tx,
            status,
            stop: Some(stop_tx),
            task: tokio::spawn(task.run(stop_rx)),
        }
    }

    /// Asks the task to stop; it ends by itself (bounded by the write timeout).
    pub fn stop(&mut self, why: Stop) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(why);
        }
    }

    /// Stops and waits for the task to end, at most `grace`.
    pub async fn stop_and_wait(mut self, why: Stop, grace: Duration) {
        self.stop(why);
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }

    /// A copy of the status.
    pub fn status(&self) -> PeerStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

type Connecting =
    std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<TcpStream>> + Send>>;

struct Connection {
    writer: OwnedWriteHalf,
    inbound: mpsc::Receiver<Result<Vec<u8>, FrameError>>,
    reader: tokio::task::JoinHandle<()>,
    local: IpAddr,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[derive(Debug)]
enum FrameError {
    Decode(DecodeError),
    Io(String),
    Closed,
}

struct PeerTask {
    settings: PeerSettings,
    session: Session,
    routes: watch::Receiver<Arc<Vec<Route>>>,
    path: Option<watch::Receiver<PathState>>,
    status: Arc<Mutex<PeerStatus>>,
    changed: Arc<Notify>,
    metrics: Metrics,
    connecting: Option<Connecting>,
    connection: Option<Connection>,
    advertised: AdjRibOut,
    problems: Vec<String>,
    reported_state: Option<State>,
    /// The forwarding path's last `up`.
    path_up: bool,
}

impl PeerTask {
    async fn run(mut self, mut stop: oneshot::Receiver<Stop>) {
        self.publish();
        loop {
            let wake = self.session.next_wake();
            let input = tokio::select! {
                why = &mut stop => Input::Stop(why.unwrap_or(Stop::Deconfigured)),
                () = sleep_until(wake) => Input::Tick,
                result = connecting(&mut self.connecting) => {
                    self.connecting = None;
                    match result {
                        Ok(stream) => match self.connected(stream) {
                            Ok(()) => Input::Connected,
                            Err(e) => Input::ConnectFailed(e.to_string()),
                        },
                        Err(e) => Input::ConnectFailed(e.to_string()),
                    }
                }
                frame = inbound(&mut self.connection) => self.frame(frame),
                Ok(()) = changed(&mut self.routes) => {
                    if self.session.state() == State::Established {
                        self.sync_routes().await;
                    }
                    self.publish();
                    continue;
                }
                Some(up) = path_changed(&mut self.path) => {
                    // Only a path that was up going down counts (as FRR does): a BFD session still
                    // coming up (Down, Init) says nothing about the forwarding path yet.
                    let was_up = std::mem::replace(&mut self.path_up, up);
                    if up || !was_up {
                        self.publish();
                        continue;
                    }
                    Input::ForwardingDown
                }
            };
            let stopping = matches!(input, Input::Stop(_));
            let actions = self.session.feed(input, Instant::now());
            for action in actions {
                self.act(action).await;
            }
            self.publish();
            if stopping || self.session.is_stopped() {
                break;
            }
        }
        self.connection = None;
        let labels = self.state_labels(self.reported_state.unwrap_or(State::Idle));
        self.metrics.bgp_session_state.remove(&labels);
        self.metrics
            .bgp_prefixes_advertised
            .remove(&self.peer_labels());
    }

    fn frame(&self, frame: Result<Vec<u8>, FrameError>) -> Input {
        match frame {
            Ok(bytes) => {
                let four_octet = self.session.negotiated().is_some_and(|n| n.four_octet_as);
                match message::decode(&bytes, four_octet) {
                    Ok(message) => Input::Received(message),
                    Err(e) => Input::Malformed(e, message::message_type(&bytes)),
                }
            }
            Err(FrameError::Decode(e)) => Input::Malformed(e, None),
            Err(FrameError::Io(e)) => Input::Closed(e),
            Err(FrameError::Closed) => Input::Closed("the peer closed the connection".to_owned()),
        }
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::Dial => {
                tracing::debug!(peer = %self.settings.name, address = %self.settings.address, "connecting");
                self.connecting = Some(Box::pin(connect(self.settings.clone())));
            }
            Action::Send(message) => {
                if let Err(e) = self.send(&message).await {
                    let actions = self.session.feed(Input::Closed(e), Instant::now());
                    for action in actions {
                        // Only a Close can follow a Closed; no recursion needed.
                        if let Action::Close {
                            reason,
                            was_established,
                        } = action
                        {
                            self.closed(&reason, was_established);
                        }
                    }
                }
            }
            Action::Established(negotiated) => {
                self.metrics.bgp_sessions_established.inc();
                tracing::info!(
                    peer = %self.settings.name,
                    address = %self.settings.address,
                    hold_time = negotiated.hold_time,
                    families = ?negotiated.families,
                    graceful_restart = negotiated.graceful_restart,
                    "BGP session established"
                );
                self.advertised.clear();
                self.sync_routes().await;
                for family in &negotiated.families {
                    let _ = self
                        .send(&Message::Update(Update::end_of_rib(*family)))
                        .await;
                }
            }
            Action::Resend(family) => {
                let negotiated = self.session.negotiated().cloned();
                if let Some(negotiated) = negotiated {
                    let of_family: AdjRibOut = self
                        .advertised
                        .iter()
                        .filter(|(prefix, _)| Family::of(prefix.addr()) == family)
                        .map(|(prefix, advert)| (*prefix, advert.clone()))
                        .collect();
                    self.send_updates(&AdjRibOut::new(), &of_family, &negotiated)
                        .await;
                }
            }
            Action::Close {
                reason,
                was_established,
            } => {
                if let Some(mut connection) = self.connection.take() {
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, connection.writer.shutdown()).await;
                }
                self.connecting = None;
                self.closed(&reason, was_established);
            }
        }
    }

    fn closed(&mut self, reason: &str, was_established: bool) {
        self.connection = None;
        if was_established {
            self.metrics.bgp_sessions_established.dec();
            self.metrics
                .bgp_session_flaps
                .get_or_create(&self.peer_labels())
                .inc();
        }
        self.advertised.clear();
        tracing::info!(peer = %self.settings.name, address = %self.settings.address, reason, "BGP session down");
    }

    /// Takes the connection in: frames its reads in a task of its own.
    fn connected(&mut self, stream: TcpStream) -> io::Result<()> {
        let local = stream.local_addr()?.ip();
        let (reader, writer) = stream.into_split();
        let (tx, inbound) = mpsc::channel(INBOUND_QUEUE);
        let reader = tokio::spawn(read_frames(reader, tx));
        self.connection = Some(Connection {
            writer,
            inbound,
            reader,
            local,
        });
        Ok(())
    }

    async fn send(&mut self, message: &Message) -> Result<(), String> {
        let four_octet = self.session.negotiated().is_some_and(|n| n.four_octet_as);
        let bytes = message::encode(message, four_octet).map_err(|e| e.to_string())?;
        let Some(connection) = self.connection.as_mut() else {
            return Err("not connected".to_owned());
        };
        match tokio::time::timeout(WRITE_TIMEOUT, connection.writer.write_all(&bytes)).await {
            Ok(Ok(())) => {
                if matches!(message, Message::Update(_)) {
                    self.metrics
                        .bgp_updates_sent
                        .get_or_create(&self.peer_labels())
                        .inc();
                }
                Ok(())
            }
            Ok(Err(e)) => Err(format!("cannot send: {e}")),
            Err(_) => Err("the peer stopped reading (write timed out)".to_owned()),
        }
    }

    /// Brings the peer's Adj-RIB-Out to the current routes.
    async fn sync_routes(&mut self) {
        let Some(negotiated) = self.session.negotiated().cloned() else {
            return;
        };
        let Some(local) = self.connection.as_ref().map(|c| c.local) else {
            return;
        };
        let interfaces: Vec<Vec<IpNet>> = pnet::datalink::interfaces()
            .into_iter()
            .map(|i| {
                i.ips
                    .iter()
                    .filter_map(|n| IpNet::new(n.ip(), n.prefix()).ok())
                    .collect()
            })
            .collect();
        let (next_hop_v4, next_hop_v6) = rib::next_hops(local, &interfaces);
        let view = PeerView {
            my_asn: self.settings.session.my_asn,
            ibgp: self.settings.session.my_asn == self.settings.session.peer_asn,
            families: negotiated.families.clone(),
            next_hop_v4,
            next_hop_v6,
        };
        let routes = self.routes.borrow_and_update().clone();
        let (desired, problems) = rib::desired(&routes, &view);
        if problems != self.problems {
            for problem in &problems {
                tracing::warn!(peer = %self.settings.name, problem, "routes left out for this peer");
            }
            self.problems = problems;
        }
        let advertised = std::mem::take(&mut self.advertised);
        self.send_updates(&advertised, &desired, &negotiated).await;
        self.advertised = desired;
    }

    async fn send_updates(
        &mut self,
        advertised: &AdjRibOut,
        desired: &AdjRibOut,
        negotiated: &Negotiated,
    ) {
        for update in rib::updates(advertised, desired, negotiated.four_octet_as) {
            if let Err(e) = self.send(&Message::Update(update)).await {
                tracing::warn!(peer = %self.settings.name, error = %e, "cannot send an UPDATE");
            }
        }
    }

    fn peer_labels(&self) -> BgpPeerLabels {
        BgpPeerLabels {
            peer: self.settings.name.clone(),
        }
    }

    fn state_labels(&self, state: State) -> BgpStateLabels {
        BgpStateLabels {
            peer: self.settings.name.clone(),
            state: state.name(),
        }
    }

    /// Publishes the status and wakes the control loop when it changed.
    fn publish(&mut self) {
        let state = self.session.state();
        if self.reported_state != Some(state) {
            if let Some(old) = self.reported_state {
                self.metrics
                    .bgp_session_state
                    .get_or_create(&self.state_labels(old))
                    .set(0);
            }
            self.metrics
                .bgp_session_state
                .get_or_create(&self.state_labels(state))
                .set(1);
            tracing::info!(
                peer = %self.settings.name,
                from = self.reported_state.map_or("-", State::name),
                to = state.name(),
                reason = self.session.last_error().unwrap_or(""),
                "BGP session state changed"
            );
            self.reported_state = Some(state);
        }
        let advertised = u32::try_from(self.advertised.len()).unwrap_or(u32::MAX);
        self.metrics
            .bgp_prefixes_advertised
            .get_or_create(&self.peer_labels())
            .set(i64::from(advertised));
        let status = PeerStatus {
            state: Some(state),
            advertised,
            last_error: self.session.last_error().unwrap_or_default().to_owned(),
            bfd_state: self
                .path
                .as_ref()
                .map(|p| p.borrow().label.to_owned())
                .unwrap_or_default(),
            problems: self.problems.clone(),
        };
        let mut shared = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        if *shared != status {
            *shared = status;
            self.changed.notify_one();
        }
    }
}

/// Opens the TCP connection: MD5 key, TTL and source address set before connecting.
async fn connect(settings: PeerSettings) -> io::Result<TcpStream> {
    let peer = settings.address;
    let domain = socket2::Domain::for_address(peer);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(key) = &settings.password {
        md5::set_key(&socket, peer, key)?;
    }
    match peer {
        SocketAddr::V4(_) => socket.set_ttl_v4(settings.ttl)?,
        SocketAddr::V6(_) => socket.set_unicast_hops_v6(settings.ttl)?,
    }
    if let Some(source) = settings.source {
        socket.bind(&SocketAddr::new(source, 0).into())?;
    }
    let tcp = tokio::net::TcpSocket::from_std_stream(socket.into());
    match tokio::time::timeout(CONNECT_TIMEOUT, tcp.connect(peer)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connecting to {peer} timed out"),
        )),
    }
}

/// Frames messages off the connection until it ends or a frame is bad.
async fn read_frames(mut reader: OwnedReadHalf, tx: mpsc::Sender<Result<Vec<u8>, FrameError>>) {
    loop {
        let mut header = [0u8; HEADER];
        let frame = match reader.read_exact(&mut header).await {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(FrameError::Closed),
            Err(e) => Err(FrameError::Io(e.to_string())),
            Ok(_) => match message::frame_length(&header) {
                Err(e) => Err(FrameError::Decode(e)),
                Ok(length) => {
                    let mut bytes = vec![0u8; length];
                    bytes[..HEADER].copy_from_slice(&header);
                    match reader.read_exact(&mut bytes[HEADER..]).await {
                        Ok(_) => Ok(bytes),
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            Err(FrameError::Closed)
                        }
                        Err(e) => Err(FrameError::Io(e.to_string())),
                    }
                }
            },
        };
        let last = frame.is_err();
        if tx.send(frame).await.is_err() || last {
            return;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn connecting(connecting: &mut Option<Connecting>) -> io::Result<TcpStream> {
    match connecting {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn inbound(connection: &mut Option<Connection>) -> Result<Vec<u8>, FrameError> {
    match connection {
        Some(connection) => connection
            .inbound
            .recv()
            .await
            .unwrap_or(Err(FrameError::Closed)),
        None => std::future::pending().await,
    }
}

async fn changed(
    routes: &mut watch::Receiver<Arc<Vec<Route>>>,
) -> Result<(), watch::error::RecvError> {
    routes.changed().await
}

/// The path's new state (`true` = up), when it changed.
async fn path_changed(path: &mut Option<watch::Receiver<PathState>>) -> Option<bool> {
    match path {
        Some(receiver) => match receiver.changed().await {
            Ok(()) => Some(receiver.borrow_and_update().up),
            // The BFD side is gone: stop watching, the session stands on its own.
            Err(_) => {
                *path = None;
                None
            }
        },
        None => std::future::pending().await,
    }
}
