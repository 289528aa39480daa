//! BFD for the BGP speaker: RFC 5880 in Asynchronous mode over single-hop UDP (RFC 5881), IPv4 and IPv6,
//! without Demand mode, Echo or authentication.
//!
//! - [`packet`]: the Control packet's bytes and the receive checks a packet is judged by on its own.
//! - [`session`]: one session's state machine, pure and driven with explicit times.
//! - This module: [`Bfd`], the handle the BGP speaker asks for sessions with, and [`BfdRunner`], the one
//!   task per process that owns the sockets and every session. It receives on UDP 3784 (one IPv4 and one
//!   IPv6 socket) and accepts only packets that arrive with TTL / hop limit 255 (`IP_RECVTTL`,
//!   `IPV6_RECVHOPLIMIT`), so a packet from beyond the link cannot reach a session (RFC 5881 §5). It
//!   finds a packet's session by Your Discriminator, or by (source, destination) while that is 0, and
//!   sends from a per-session socket with a source port in 49152-65535 and TTL 255 (RFC 5881 §4).
//!
//! Sessions are keyed by (peer, local address); [`Bfd::add`] hands back a `watch` of the session's
//! [`BfdState`], [`Bfd::remove`] takes it AdminDown, keeps telling the peer so for the peer's detection
//! time (RFC 5880 §6.8.16) and then drops it. Everything is bounded: the number of sessions
//! ([`BfdSettings::max_sessions`]) and the command queue. On shutdown every session tells its peer
//! AdminDown, which RFC 5882 §3.2 asks peers not to take for a forwarding failure (BGP closes its own
//! sessions); a runner that dies without shutdown is noticed by its peers through their detection time.

pub mod packet;
pub mod session;

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use packet::{Diagnostic, State};
pub use session::{Profile, ProfileError};

use crate::metrics::{BfdDiscardLabels, BfdStateLabels, Metrics};
use packet::{ControlPacket, Discard};
use session::{Action, Input, Session};

/// The destination port of single-hop BFD Control packets (RFC 5881 §4).
pub const CONTROL_PORT: u16 = 3784;
/// The source ports BFD Control packets are sent from (RFC 5881 §4).
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// The TTL / hop limit single-hop packets are sent with and must arrive with (RFC 5881 §5).
pub const TTL: u8 = 255;
/// Sessions a runner holds unless told otherwise.
pub const DEFAULT_MAX_SESSIONS: usize = 256;
/// Commands queued to the runner.
const COMMAND_QUEUE: usize = 64;
/// Source ports tried per session before giving up.
const PORT_ATTEMPTS: usize = 128;
/// Receive buffer: a Control packet is 24 bytes (more with authentication, which is discarded).
const RECEIVE_BUFFER: usize = 128;

/// How a runner is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BfdSettings {
    /// Most sessions held at once (those being removed included).
    pub max_sessions: usize,
    /// The port to receive on ([`CONTROL_PORT`]; another only for tests that cannot use it).
    pub port: u16,
}

impl Default for BfdSettings {
    fn default() -> Self {
        Self {
            max_sessions: DEFAULT_MAX_SESSIONS,
            port: CONTROL_PORT,
        }
    }
}

/// What the BGP speaker sees of a session: its state and why it last changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdState {
    /// The session state; its [`State::as_str`] is `BgpSessionState.bfd_state`.
    pub state: State,
    /// Why the state last changed.
    pub diagnostic: Diagnostic,
}

impl BfdState {
    /// Whether the session is Up.
    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }
}

impl fmt::Display for BfdState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.state, self.diagnostic)
    }
}

/// Sessions are told apart by their peer and the local address they run from (None: any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// The peer's address.
    pub peer: IpAddr,
    /// The local address packets are sent from and expected at; None lets the kernel choose.
    pub local: Option<IpAddr>,
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.local {
            Some(local) => write!(f, "{} from {local}", self.peer),
            None => write!(f, "{}", self.peer),
        }
    }
}

/// Errors of the BFD runner and its handle.
#[derive(Debug, thiserror::Error)]
pub enum BfdError {
    /// A socket could not be opened or set up.
    #[error("{what}: {source}")]
    Socket {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The runner holds [`BfdSettings::max_sessions`] sessions already.
    #[error("at most {0} BFD sessions")]
    TooManySessions(usize),
    /// Peer and local address are of different families.
    #[error("peer {peer} and local address {local} are of different families")]
    AddressFamily {
        /// The peer.
        peer: IpAddr,
        /// The local address.
        local: IpAddr,
    },
    /// The peer is an address BFD cannot run to (unspecified, multicast, IPv6 link-local: those need
    /// an interface, which sessions do not carry yet).
    #[error("cannot run BFD to {0}")]
    Peer(IpAddr),
    /// An IPv6 session while the runner has no IPv6 socket (IPv6 is disabled on the host).
    #[error("no IPv6 socket: IPv6 is unavailable here")]
    NoIpv6,
    /// The runner has stopped.
    #[error("the BFD runner has stopped")]
    Stopped,
}

fn socket_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> BfdError {
    let what = what.into();
    move |source| BfdError::Socket { what, source }
}

fn errno_error(what: impl Into<String>) -> impl FnOnce(nix::Error) -> BfdError {
    let what = what.into();
    move |errno| BfdError::Socket {
        what,
        source: errno.into(),
    }
}

enum Command {
    Add {
        key: SessionKey,
        profile: Profile,
        reply: oneshot::Sender<Result<watch::Receiver<BfdState>, BfdError>>,
    },
    Remove {
        key: SessionKey,
        reply: oneshot::Sender<bool>,
    },
}

/// The BGP speaker's handle on the runner; cheap to clone.
#[derive(Debug, Clone)]
pub struct Bfd {
    commands: mpsc::Sender<Command>,
}

impl Bfd {
    /// Opens the receive sockets (IPv4, and IPv6 where the host has it) and returns the handle and the
    /// runner to spawn. Must be called within a Tokio runtime.
    pub fn bind(settings: BfdSettings, metrics: Metrics) -> Result<(Self, BfdRunner), BfdError> {
        let v4 = receive_socket(SocketAddr::from((Ipv4Addr::UNSPECIFIED, settings.port)))?;
        let v6 = match receive_socket(SocketAddr::from((Ipv6Addr::UNSPECIFIED, settings.port))) {
            Ok(socket) => Some(socket),
            Err(BfdError::Socket { source, .. })
                if source.raw_os_error() == Some(nix::libc::EAFNOSUPPORT)
                    || source.raw_os_error() == Some(nix::libc::EADDRNOTAVAIL) =>
            {
                tracing::warn!(error = %source, "no IPv6 here: BFD runs over IPv4 only");
                None
            }
            Err(error) => return Err(error),
        };
        let (commands, inbox) = mpsc::channel(COMMAND_QUEUE);
        let runner = BfdRunner {
            v4,
            v6,
            inbox,
            sessions: HashMap::new(),
            by_discriminator: HashMap::new(),
            max_sessions: settings.max_sessions,
            metrics,
            random: RandomState::new(),
            draws: 0,
        };
        Ok((Self { commands }, runner))
    }

    /// Starts (or, for a key already running, re-profiles) the session to `peer` from `local`, and
    /// returns a watch of its state, Down at first.
    pub async fn add(
        &self,
        peer: IpAddr,
        local: Option<IpAddr>,
        profile: Profile,
    ) -> Result<watch::Receiver<BfdState>, BfdError> {
        let (reply, answer) = oneshot::channel();
        let key = SessionKey { peer, local };
        self.commands
            .send(Command::Add {
                key,
                profile,
                reply,
            })
            .await
            .map_err(|_| BfdError::Stopped)?;
        answer.await.map_err(|_| BfdError::Stopped)?
    }

    /// Takes the session to `peer` from `local` AdminDown, tells the peer, and drops it after the peer's
    /// detection time. Returns whether there was such a session.
    pub async fn remove(&self, peer: IpAddr, local: Option<IpAddr>) -> Result<bool, BfdError> {
        let (reply, answer) = oneshot::channel();
        let key = SessionKey { peer, local };
        self.commands
            .send(Command::Remove { key, reply })
            .await
            .map_err(|_| BfdError::Stopped)?;
        answer.await.map_err(|_| BfdError::Stopped)
    }
}

/// A session and what the runner keeps beside it.
struct Held {
    session: Session,
    /// Sends this session's packets, from its own source port.
    socket: UdpSocket,
    state: watch::Sender<BfdState>,
    /// Set once removed: when to drop it.
    retire_at: Option<Instant>,
}

impl Held {
    fn next_wake(&self) -> Option<Instant> {
        match (self.session.next_wake(), self.retire_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A datagram as received: its length in the buffer and what the kernel told about it.
struct Datagram {
    len: usize,
    source: IpAddr,
    destination: Option<IpAddr>,
    ttl: Option<u8>,
}

/// What woke the runner.
enum Event {
    Shutdown,
    Command(Option<Command>),
    V4(io::Result<Datagram>),
    V6(io::Result<Datagram>),
    Timer,
}

/// The task that owns the sockets and sessions; run it with [`BfdRunner::run`].
pub struct BfdRunner {
    v4: UdpSocket,
    v6: Option<UdpSocket>,
    inbox: mpsc::Receiver<Command>,
    sessions: HashMap<SessionKey, Held>,
    by_discriminator: HashMap<u32, SessionKey>,
    max_sessions: usize,
    metrics: Metrics,
    /// Discriminators, source ports and jitter seeds: std's per-process random keys, hashed with a
    /// counter, are random enough and need no other crate.
    random: RandomState,
    draws: u64,
}

impl fmt::Debug for BfdRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BfdRunner")
            .field("sessions", &self.sessions.len())
            .field("ipv6", &self.v6.is_some())
            .finish()
    }
}

impl BfdRunner {
    /// Runs the sessions until `shutdown` is cancelled (or every [`Bfd`] handle is dropped); then tells
    /// every peer AdminDown and returns.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut buf4 = [0u8; RECEIVE_BUFFER];
        let mut buf6 = [0u8; RECEIVE_BUFFER];
        loop {
            let wake = self.sessions.values().filter_map(Held::next_wake).min();
            let event = tokio::select! {
                () = shutdown.cancelled() => Event::Shutdown,
                command = self.inbox.recv() => Event::Command(command),
                received = receive(&self.v4, &mut buf4) => Event::V4(received),
                received = receive_maybe(self.v6.as_ref(), &mut buf6) => Event::V6(received),
                () = sleep_until_maybe(wake) => Event::Timer,
            };
            let now = Instant::now();
            match event {
                Event::Shutdown | Event::Command(None) => break,
                Event::Command(Some(command)) => self.command(command, now),
                Event::V4(received) => self.received(received, &buf4, now),
                Event::V6(received) => self.received(received, &buf6, now),
                Event::Timer => {}
            }
            self.tick(now);
        }
        let now = Instant::now();
        let keys: Vec<SessionKey> = self.sessions.keys().copied().collect();
        for key in keys {
            self.feed(key, Input::AdminDown, now);
        }
        tracing::info!(sessions = self.sessions.len(), "BFD stopped");
        for held in self.sessions.values() {
            self.metrics
                .bfd_sessions
                .get_or_create(&state_label(held.session.state()))
                .dec();
        }
    }

    fn command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Add {
                key,
                profile,
                reply,
            } => {
                let _ = reply.send(self.add(key, profile, now));
            }
            Command::Remove { key, reply } => {
                let found = self
                    .sessions
                    .get(&key)
                    .is_some_and(|held| held.retire_at.is_none());
                if found {
                    self.feed(key, Input::AdminDown, now);
                    if let Some(held) = self.sessions.get_mut(&key) {
                        held.retire_at = Some(now + held.session.peer_detection_time());
                    }
                    tracing::info!(session = %key, "BFD session removed: telling the peer AdminDown");
                }
                let _ = reply.send(found);
            }
        }
    }

    fn add(
        &mut self,
        key: SessionKey,
        profile: Profile,
        now: Instant,
    ) -> Result<watch::Receiver<BfdState>, BfdError> {
        if let Some(held) = self.sessions.get(&key)
            && held.retire_at.is_none()
        {
            let watch = held.state.subscribe();
            if held.session.profile() != profile {
                self.feed(key, Input::Profile(profile), now);
            }
            return Ok(watch);
        }
        if let Some(local) = key.local
            && local.is_ipv4() != key.peer.is_ipv4()
        {
            return Err(BfdError::AddressFamily {
                peer: key.peer,
                local,
            });
        }
        let unusable = match key.peer {
            IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
            IpAddr::V6(v6) => {
                v6.is_unspecified() || v6.is_multicast() || v6.is_unicast_link_local()
            }
        };
        if unusable {
            return Err(BfdError::Peer(key.peer));
        }
        if key.peer.is_ipv6() && self.v6.is_none() {
            return Err(BfdError::NoIpv6);
        }
        // A session still telling its peer AdminDown gives way to the new one.
        let replacing = self.sessions.contains_key(&key);
        if !replacing && self.sessions.len() >= self.max_sessions {
            return Err(BfdError::TooManySessions(self.max_sessions));
        }
        let socket = self.send_socket(&key)?;
        if replacing {
            self.drop_session(key);
        }
        let discriminator = loop {
            // Truncation intended: any non-zero 32 bits not in use.
            let candidate = self.draw() as u32;
            if candidate != 0 && !self.by_discriminator.contains_key(&candidate) {
                break candidate;
            }
        };
        let seed = self.draw();
        let session = Session::new(discriminator, profile, seed, now);
        let (state, watch) = watch::channel(BfdState {
            state: session.state(),
            diagnostic: session.diagnostic(),
        });
        self.metrics
            .bfd_sessions
            .get_or_create(&state_label(session.state()))
            .inc();
        tracing::info!(
            session = %key,
            discriminator,
            passive = profile.passive,
            rx_ms = profile.receive_interval.as_millis(),
            tx_ms = profile.transmit_interval.as_millis(),
            multiplier = profile.detect_multiplier,
            "BFD session added"
        );
        self.by_discriminator.insert(discriminator, key);
        self.sessions.insert(
            key,
            Held {
                session,
                socket,
                state,
                retire_at: None,
            },
        );
        Ok(watch)
    }

    fn draw(&mut self) -> u64 {
        self.draws += 1;
        let mut hasher = self.random.build_hasher();
        hasher.write_u64(self.draws);
        hasher.finish()
    }

    /// A socket sending to `key.peer` from a free port of [`SOURCE_PORTS`] with TTL 255.
    fn send_socket(&mut self, key: &SessionKey) -> Result<UdpSocket, BfdError> {
        let domain = if key.peer.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let what = format!("opening a BFD send socket to {key}");
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
            .map_err(socket_error(what.clone()))?;
        if key.peer.is_ipv4() {
            socket.set_ttl_v4(u32::from(TTL))
        } else {
            socket
                .set_only_v6(true)
                .and_then(|()| socket.set_unicast_hops_v6(u32::from(TTL)))
        }
        .map_err(socket_error(what.clone()))?;
        socket
            .set_nonblocking(true)
            .map_err(socket_error(what.clone()))?;
        let local = key.local.unwrap_or(if key.peer.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        });
        let span = u64::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
        // Below 2^14 + 1, so the cast is lossless.
        let start = (self.draw() % span) as u16;
        let mut last = None;
        for attempt in 0..PORT_ATTEMPTS {
            let offset = (u64::from(start) + attempt as u64) % span;
            let port = SOURCE_PORTS.start() + offset as u16;
            match socket.bind(&SocketAddr::new(local, port).into()) {
                Ok(()) => {
                    let std: std::net::UdpSocket = socket.into();
                    return UdpSocket::from_std(std).map_err(socket_error(what));
                }
                Err(error) if error.kind() == io::ErrorKind::AddrInUse => last = Some(error),
                Err(error) => return Err(socket_error(format!("{what}: binding {local}"))(error)),
            }
        }
        Err(socket_error(format!("{what}: no free source port"))(
            last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)),
        ))
    }

    fn received(&mut self, received: io::Result<Datagram>, buf: &[u8], now: Instant) {
        let datagram = match received {
            Ok(datagram) => datagram,
            Err(error) => {
                tracing::debug!(%error, "BFD receive failed");
                return;
            }
        };
        let bytes = &buf[..datagram.len.min(buf.len())];
        match self.demultiplex(&datagram, bytes) {
            Ok((key, packet)) => {
                self.metrics.bfd_packets_received.inc();
                self.feed(key, Input::Packet(packet), now);
            }
            Err(discard) => {
                tracing::trace!(source = %datagram.source, %discard, "BFD packet discarded");
                self.metrics
                    .bfd_packets_discarded
                    .get_or_create(&BfdDiscardLabels {
                        reason: discard.label(),
                    })
                    .inc();
            }
        }
    }

    /// RFC 5881 §5's TTL check, `packet.rs`'s checks, then the session by Your Discriminator or, while
    /// that is 0, by addresses (RFC 5880 §6.8.6).
    fn demultiplex(
        &self,
        datagram: &Datagram,
        bytes: &[u8],
    ) -> Result<(SessionKey, ControlPacket), Discard> {
        let ttl = datagram.ttl.unwrap_or(0);
        if ttl != TTL {
            return Err(Discard::Ttl(ttl));
        }
        let packet = ControlPacket::decode(bytes)?;
        let source = unmapped(datagram.source);
        if packet.your_discriminator != 0 {
            let key = self
                .by_discriminator
                .get(&packet.your_discriminator)
                .ok_or(Discard::YourDiscriminator)?;
            if key.peer != source {
                return Err(Discard::WrongSource);
            }
            return Ok((*key, packet));
        }
        let exact = datagram.destination.map(|local| SessionKey {
            peer: source,
            local: Some(unmapped(local)),
        });
        let any = SessionKey {
            peer: source,
            local: None,
        };
        exact
            .filter(|key| self.sessions.contains_key(key))
            .or_else(|| self.sessions.contains_key(&any).then_some(any))
            .map(|key| (key, packet))
            .ok_or(Discard::NoSession)
    }

    fn tick(&mut self, now: Instant) {
        let due: Vec<SessionKey> = self
            .sessions
            .iter()
            .filter(|(_, held)| held.next_wake().is_some_and(|wake| wake <= now))
            .map(|(key, _)| *key)
            .collect();
        for key in due {
            if self
                .sessions
                .get(&key)
                .and_then(|held| held.retire_at)
                .is_some_and(|at| at <= now)
            {
                self.drop_session(key);
            } else {
                self.feed(key, Input::Tick, now);
            }
        }
    }

    fn drop_session(&mut self, key: SessionKey) {
        if let Some(held) = self.sessions.remove(&key) {
            self.by_discriminator
                .remove(&held.session.local_discriminator());
            self.metrics
                .bfd_sessions
                .get_or_create(&state_label(held.session.state()))
                .dec();
            tracing::debug!(session = %key, "BFD session dropped");
        }
    }

    fn feed(&mut self, key: SessionKey, input: Input, now: Instant) {
        let Some(held) = self.sessions.get_mut(&key) else {
            return;
        };
        for action in held.session.feed(input, now) {
            match action {
                Action::Send(packet) => {
                    let to = SocketAddr::new(key.peer, CONTROL_PORT);
                    match held.socket.try_send_to(&packet.encode(), to) {
                        Ok(_) => {
                            self.metrics.bfd_packets_sent.inc();
                        }
                        Err(error) => {
                            self.metrics.bfd_send_errors.inc();
                            tracing::debug!(session = %key, %error, "BFD send failed");
                        }
                    };
                }
                Action::StateChanged {
                    from,
                    to,
                    diagnostic,
                } => {
                    tracing::info!(session = %key, %from, %to, %diagnostic, "BFD session state changed");
                    self.metrics
                        .bfd_sessions
                        .get_or_create(&state_label(from))
                        .dec();
                    self.metrics
                        .bfd_sessions
                        .get_or_create(&state_label(to))
                        .inc();
                    self.metrics
                        .bfd_state_changes
                        .get_or_create(&state_label(to))
                        .inc();
                    held.state.send_replace(BfdState {
                        state: to,
                        diagnostic,
                    });
                }
            }
        }
    }
}

fn state_label(state: State) -> BfdStateLabels {
    BfdStateLabels {
        state: state.as_str(),
    }
}

/// IPv4-mapped IPv6 addresses as IPv4 (they do not arrive on a v6-only socket, but keys are IPv4).
fn unmapped(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        IpAddr::V4(_) => address,
    }
}

/// A receive socket on `address` that reports each datagram's TTL / hop limit and destination.
fn receive_socket(address: SocketAddr) -> Result<UdpSocket, BfdError> {
    let what = format!("opening the BFD socket on {address}");
    let domain = if address.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket =
        Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(socket_error(&what))?;
    if address.is_ipv4() {
        setsockopt(&socket, sockopt::Ipv4RecvTtl, &true).map_err(errno_error(&what))?;
        setsockopt(&socket, sockopt::Ipv4PacketInfo, &true).map_err(errno_error(&what))?;
    } else {
        socket.set_only_v6(true).map_err(socket_error(&what))?;
        setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true).map_err(errno_error(&what))?;
        setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true).map_err(errno_error(&what))?;
    }
    socket.set_nonblocking(true).map_err(socket_error(&what))?;
    socket.bind(&address.into()).map_err(socket_error(&what))?;
    let std: std::net::UdpSocket = socket.into();
    UdpSocket::from_std(std).map_err(socket_error(what))
}

async fn receive(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Datagram> {
    socket
        .async_io(Interest::READABLE, || receive_now(socket, buf))
        .await
}

async fn receive_maybe(socket: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<Datagram> {
    match socket {
        Some(socket) => receive(socket, buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_maybe(wake: Option<Instant>) {
    match wake {
        Some(wake) => tokio::time::sleep_until(wake).await,
        None => std::future::pending().await,
    }
}

/// One `recvmsg` with its control messages: the TTL / hop limit and the destination address.
fn receive_now(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Datagram> {
    let mut control = nix::cmsg_space!(
        nix::libc::c_int,
        nix::libc::in6_pktinfo,
        nix::libc::in_pktinfo
    );
    let mut iov = [IoSliceMut::new(buf)];
    let message = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    let source = message
        .address
        .as_ref()
        .and_then(|address| {
            address
                .as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .ok_or_else(|| io::Error::other("datagram without a source address"))?;
    let mut ttl = None;
    let mut destination = None;
    for cmsg in message.cmsgs().map_err(io::Error::from)? {
        match cmsg {
            ControlMessageOwned::Ipv4Ttl(value) | ControlMessageOwned::Ipv6HopLimit(value) => {
                ttl = u8::try_from(value).ok();
            }
            ControlMessageOwned::Ipv4PacketInfo(info) => {
                destination = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    info.ipi_addr.s_addr,
                ))));
            }
            ControlMessageOwned::Ipv6PacketInfo(info) => {
                destination = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
            }
            _ => {}
        }
    }
    Ok(Datagram {
        len: message.bytes,
        source,
        destination,
        ttl,
    })
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
