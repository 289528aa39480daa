//! Forwarding of explicitly configured zones (`--forward ZONE=UPSTREAM`) to upstream servers. Nothing is
//! forwarded unless configured: without it, a question outside the served zones is REFUSED.
//!
//! Each forwarded question goes out from a fresh ephemeral socket with the client's own bytes (ID, EDNS and
//! all), so replies cannot be confused between clients, and the upstream's answer is relayed unchanged.
//! Forwarding runs on the async runtime, never on a UDP serving thread, so a slow upstream cannot stall
//! answers from our own zones.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::rr::Name;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one upstream gets before the next is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(1500);

/// Zones forwarded to upstream servers, longest first.
#[derive(Debug, Clone, Default)]
pub struct ForwardZones {
    zones: Vec<(Name, Vec<SocketAddr>)>,
}

impl ForwardZones {
    /// Forward zones from `(zone, upstreams)` pairs.
    pub fn new(mut zones: Vec<(Name, Vec<SocketAddr>)>) -> Self {
        zones.sort_by_key(|(zone, _)| std::cmp::Reverse(zone.num_labels()));
        Self { zones }
    }

    /// The upstreams for `name`, if it lies in a forwarded zone.
    pub fn upstreams(&self, name: &Name) -> Option<&[SocketAddr]> {
        self.zones
            .iter()
            .find(|(zone, _)| zone.zone_of(name))
            .map(|(_, upstreams)| upstreams.as_slice())
    }

    /// The forwarded zones.
    pub fn zones(&self) -> impl Iterator<Item = &Name> {
        self.zones.iter().map(|(zone, _)| zone)
    }
}

/// Asks each upstream in turn (UDP, or TCP when `tcp`) and returns the first reply carrying the request's
/// ID; `None` when every upstream failed.
pub async fn exchange(request: &[u8], upstreams: &[SocketAddr], tcp: bool) -> Option<Vec<u8>> {
    for upstream in upstreams {
        let attempt = if tcp {
            tokio::time::timeout(UPSTREAM_TIMEOUT, over_tcp(request, *upstream)).await
        } else {
            tokio::time::timeout(UPSTREAM_TIMEOUT, over_udp(request, *upstream)).await
        };
        match attempt {
            Ok(Ok(reply)) if reply.len() >= 12 && reply[..2] == request[..2] => return Some(reply),
            Ok(Ok(_)) => {
                tracing::debug!(upstream = %upstream, "upstream reply does not match the query")
            }
            Ok(Err(error)) => {
                tracing::debug!(upstream = %upstream, error = %error, "upstream failed")
            }
            Err(_) => tracing::debug!(upstream = %upstream, "upstream timed out"),
        }
    }
    None
}

async fn over_udp(request: &[u8], upstream: SocketAddr) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(upstream).await?;
    socket.send(request).await?;
    let mut buffer = vec![0u8; usize::from(u16::MAX)];
    let len = socket.recv(&mut buffer).await?;
    buffer.truncate(len);
    Ok(buffer)
}

async fn over_tcp(request: &[u8], upstream: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(request.len()).map_err(std::io::Error::other)?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(request);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut reply = vec![0u8; usize::from(len)];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}
