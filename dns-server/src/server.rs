//! The DNS sockets: UDP and TCP on the same address, each message handed to the [`Handler`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ops::CancellationToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::handler::{Handler, Transport};

/// A TCP client that sends nothing for this long is disconnected (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Bound DNS sockets.
#[derive(Debug)]
pub struct Listeners {
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
}

impl Listeners {
    /// Binds UDP and TCP on `addr`; with port 0 the TCP port follows the one UDP got.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let udp = UdpSocket::bind(addr).await?;
        let tcp = TcpListener::bind(udp.local_addr()?).await?;
        Ok(Self {
            udp: Arc::new(udp),
            tcp,
        })
    }

    /// The bound address (same port for UDP and TCP).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

/// Serves until `shutdown`: one UDP worker per core sharing the socket, and a task per TCP connection.
pub async fn serve(listeners: Listeners, handler: Arc<Handler>, shutdown: CancellationToken) {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        tasks.spawn(serve_udp(
            listeners.udp.clone(),
            handler.clone(),
            shutdown.clone(),
        ));
    }
    tasks.spawn(serve_tcp(listeners.tcp, handler, shutdown));
    while tasks.join_next().await.is_some() {}
}

async fn serve_udp(socket: Arc<UdpSocket>, handler: Arc<Handler>, shutdown: CancellationToken) {
    let mut buffer = vec![0u8; usize::from(u16::MAX)];
    loop {
        let (len, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            received = socket.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                Err(error) => {
                    // ICMP errors from earlier sends surface here; the socket itself is fine.
                    tracing::debug!(error = %error, "udp receive error");
                    continue;
                }
            },
        };
        for response in handler.handle(&buffer[..len], Transport::Udp, peer.ip()) {
            if let Err(error) = socket.send_to(&response, peer).await {
                tracing::debug!(peer = %peer, error = %error, "udp send failed");
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, handler: Arc<Handler>, shutdown: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(error = %error, "tcp accept failed");
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                result = serve_connection(stream, peer, &handler) => {
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
        let responses = handler.handle(&buffer[..len], Transport::Tcp, peer.ip());
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
            stream.write_all(&framed).await?;
        }
    }
}
