//! The DNS sockets: UDP and TCP on the same address, each message handed to the [`Handler`].
//!
//! UDP is served by one plain OS thread per core, each with its own socket bound to the same address with
//! `SO_REUSEPORT`, so the kernel spreads datagrams across them and a query never waits on an async
//! scheduler. The same option lets a new process bind while the old one still serves, so a restart or
//! upgrade drops no answers. TCP, where connections are long and few, runs on Tokio.
//!
//! Every UDP answer, our own or relayed from a forwarded zone's upstream, passes response rate limiting
//! ([`crate::rrl`]) on its way to the socket; TCP answers do not (a TCP client cannot spoof its address).

use std::cell::Cell;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ops::CancellationToken;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::forward;
use crate::handler::{Handler, Outcome, ResponseCache, Transport, UdpOutcome};
use crate::metrics::RrlMetrics;
use crate::rrl::{self, Action, Limiter, Slip};
use crate::store::history::History;
use crate::tcp_quota::TcpQuota;

/// A TCP client that sends nothing for this long is disconnected (RFC 7766 suggests seconds), and one
/// that does not take an answer within it too (a reader that stops reading holds its buffers otherwise).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// After a failed accept (out of file descriptors, most often), wait this long before the next, doubling up
/// to [`ACCEPT_BACKOFF_MAX`]: retrying at once spins a core while nothing can change.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often a UDP thread looks at the shutdown token while no query arrives.
const UDP_POLL: Duration = Duration::from_millis(200);

/// Response rate limiting of UDP answers, with its counters and its clock.
#[derive(Debug, Clone)]
pub struct UdpRateLimit {
    limiter: Arc<Limiter>,
    metrics: RrlMetrics,
    /// Times given to the limiter count from here.
    epoch: Instant,
}

impl UdpRateLimit {
    /// Limits with `limiter`, counting in `metrics`.
    pub fn new(limiter: Limiter, metrics: RrlMetrics) -> Self {
        Self {
            limiter: Arc::new(limiter),
            metrics,
            epoch: Instant::now(),
        }
    }

    /// What to do with `answer` to `peer`; `slip` is the calling thread's.
    fn decide(&self, peer: SocketAddr, answer: &[u8], slip: &mut Slip) -> Action {
        if !self.limiter.enabled() {
            // Off: not even the clock read.
            return Action::Send;
        }
        self.limiter
            .decide(peer.ip(), answer, self.epoch.elapsed(), slip)
    }
}

thread_local! {
    /// The slip count of relayed answers, per Tokio worker thread.
    static RELAYED_SLIP: Cell<Slip> = Cell::new(Slip::default());
}

/// Bound DNS sockets.
#[derive(Debug)]
pub struct Listeners {
    udp: Vec<Arc<UdpSocket>>,
    tcp: TcpListener,
}

impl Listeners {
    /// Binds `threads` UDP sockets and one TCP listener on `addr`; with port 0 all share the port the
    /// first socket got. Must run inside a Tokio runtime (for the TCP listener).
    ///
    /// With port 0 the port the kernel picks for UDP may be taken for TCP by another process; that
    /// is not the operator's error, so another port is tried (a fixed port is never changed).
    pub fn bind(addr: SocketAddr, threads: usize) -> std::io::Result<Self> {
        const EPHEMERAL_ATTEMPTS: usize = 16;
        let mut attempt = 1;
        loop {
            match Self::bind_once(addr, threads) {
                Err(error)
                    if addr.port() == 0
                        && error.kind() == std::io::ErrorKind::AddrInUse
                        && attempt < EPHEMERAL_ATTEMPTS =>
                {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    fn bind_once(addr: SocketAddr, threads: usize) -> std::io::Result<Self> {
        let first = reuseport(addr, Type::DGRAM, Protocol::UDP)?;
        let local = first.local_addr()?.as_socket().unwrap_or(addr);
        let mut udp = vec![Arc::new(UdpSocket::from(first))];
        for _ in 1..threads.max(1) {
            let socket = reuseport(local, Type::DGRAM, Protocol::UDP)?;
            udp.push(Arc::new(UdpSocket::from(socket)));
        }
        let tcp = reuseport(local, Type::STREAM, Protocol::TCP)?;
        tcp.listen(1024)?;
        tcp.set_nonblocking(true)?;
        let tcp = TcpListener::from_std(std::net::TcpListener::from(tcp))?;
        Ok(Self { udp, tcp })
    }

    /// The bound address (same port for UDP and TCP).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

fn reuseport(addr: SocketAddr, kind: Type, protocol: Protocol) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    socket.set_reuse_port(true)?;
    if kind == Type::STREAM {
        socket.set_reuse_address(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Serves until `shutdown`: a thread per UDP socket, its answers limited by `rrl`, and a task per TCP
/// connection within `quota`; IXFR reads the zone's past versions from `history`.
pub async fn serve(
    listeners: Listeners,
    handler: Arc<Handler>,
    history: Arc<History>,
    quota: TcpQuota,
    rrl: UdpRateLimit,
    shutdown: CancellationToken,
) {
    let mut threads = Vec::new();
    let runtime = tokio::runtime::Handle::current();
    for (n, socket) in listeners.udp.into_iter().enumerate() {
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        let runtime = runtime.clone();
        let rrl = rrl.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("dns-udp-{n}"))
            .spawn(move || serve_udp(&socket, &handler, &rrl, &runtime, &shutdown));
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(error) => tracing::error!(error = %error, "cannot start a UDP thread"),
        }
    }
    serve_tcp(listeners.tcp, handler, history, quota, shutdown).await;
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await;
}

fn serve_udp(
    socket: &Arc<UdpSocket>,
    handler: &Arc<Handler>,
    rrl: &UdpRateLimit,
    runtime: &tokio::runtime::Handle,
    shutdown: &CancellationToken,
) {
    if let Err(error) = socket.set_read_timeout(Some(UDP_POLL)) {
        tracing::error!(error = %error, "cannot set the UDP read timeout");
        return;
    }
    let mut buffer = vec![0u8; usize::from(u16::MAX)];
    let mut cache = ResponseCache::default();
    let mut slip = Slip::default();
    let mut tally = rrl.metrics.tally();
    let mut slipped = Vec::new();
    while !shutdown.is_cancelled() {
        let (len, peer) = match socket.recv_from(&mut buffer) {
            Ok(received) => received,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                tally.flush();
                continue;
            }
            Err(error) => {
                // ICMP errors from earlier sends surface here; the socket itself is fine.
                tracing::debug!(error = %error, "udp receive error");
                continue;
            }
        };
        let response = match handler.handle_udp(&buffer[..len], peer.ip(), &mut cache) {
            UdpOutcome::Drop => continue,
            UdpOutcome::Answer(response) => response,
            UdpOutcome::Forward(upstreams) => {
                // Relayed off this thread, so a slow upstream never delays our own answers.
                let (request, socket, handler, rrl) = (
                    buffer[..len].to_vec(),
                    socket.clone(),
                    handler.clone(),
                    rrl.clone(),
                );
                runtime.spawn(async move {
                    let reply = forward::exchange(&request, &upstreams, false).await;
                    if let Some(reply) = reply.or_else(|| handler.failure(&request)) {
                        send_relayed(&socket, &rrl, peer, &reply);
                    }
                });
                continue;
            }
        };
        let action = rrl.decide(peer, response, &mut slip);
        tally.count(action);
        let Some(response) = rrl::to_send(response, action, &mut slipped) else {
            continue;
        };
        if let Err(error) = socket.send_to(response, peer) {
            tracing::debug!(peer = %peer, error = %error, "udp send failed");
        }
    }
    tally.flush();
}

/// Sends an upstream's `reply` to `peer`, through response rate limiting like our own answers: a forwarded
/// zone reflects as well as ours.
fn send_relayed(socket: &UdpSocket, rrl: &UdpRateLimit, peer: SocketAddr, reply: &[u8]) {
    let action = RELAYED_SLIP.with(|cell| {
        let mut slip = cell.get();
        let action = rrl.decide(peer, reply, &mut slip);
        cell.set(slip);
        action
    });
    rrl.metrics.count(action);
    if let Some(reply) = rrl::to_send(reply, action, &mut Vec::new()) {
        let _ = socket.send_to(reply, peer);
    }
}

async fn serve_tcp(
    listener: TcpListener,
    handler: Arc<Handler>,
    history: Arc<History>,
    quota: TcpQuota,
    shutdown: CancellationToken,
) {
    let mut backoff = ops::backoff::Backoff::new(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff.reset();
                    accepted
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %error, retry_in = ?delay, "tcp accept failed");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            },
        };
        let admission = match quota.admit(peer.ip()) {
            Ok(admission) => admission,
            Err(refusal) => {
                handler.tcp_refused(refusal);
                tracing::debug!(peer = %peer, ?refusal, "tcp connection over quota closed");
                drop(stream);
                continue;
            }
        };
        let (handler, history) = (handler.clone(), history.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _admission = admission;
            tokio::select! {
                () = shutdown.cancelled() => {}
                result = serve_connection(stream, peer, &handler, &history) => {
                    if let Err(error) = result {
                        tracing::debug!(peer = %peer, error = %error, "tcp connection ended");
                    }
                }
            }
        });
    }
}

/// Length-prefixed messages (RFC 1035 4.2.2), answered in order, until the client closes or idles.
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    handler: &Handler,
    history: &History,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; usize::from(u16::MAX)];
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(error)) => return Err(error),
            Err(_) => return Ok(()),
        };
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buffer[..len]))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "message body"))??;
        let request = &buffer[..len];
        let responses = match handler.handle(request, Transport::Tcp, peer.ip()) {
            Outcome::Messages(responses) => responses,
            Outcome::Incremental(transfer) => {
                let old = history
                    .index_at(transfer.revision())
                    .await
                    .unwrap_or_else(|error| {
                        tracing::warn!(error = %error, "cannot read the zone's history; sending it whole");
                        None
                    });
                handler.incremental(transfer, old)
            }
            Outcome::Forward(upstreams) => forward::exchange(request, &upstreams, true)
                .await
                .or_else(|| handler.failure(request))
                .into_iter()
                .collect(),
        };
        if responses.is_empty() {
            return Ok(());
        }
        for response in responses {
            let Ok(prefix) = u16::try_from(response.len()) else {
                return Ok(());
            };
            let mut framed = Vec::with_capacity(response.len() + 2);
            framed.extend_from_slice(&prefix.to_be_bytes());
            framed.extend_from_slice(&response);
            tokio::time::timeout(TCP_IDLE, stream.write_all(&framed))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "answer not taken")
                })??;
        }
    }
}
