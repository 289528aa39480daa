//! NOTIFY (RFC 1996): when a zone's serial changes, tell the configured secondaries, so that AD or BIND
//! acting as a secondary refreshes within moments instead of at the SOA refresh interval.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::PoisonError;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use ops::CancellationToken;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::lookup::{self, Zones};
use crate::metrics::NotifyMetrics;
use crate::store::SharedIndex;

/// Changes arriving closer together than this are announced once.
const SETTLE: Duration = Duration::from_millis(50);
/// Tries per secondary and serial; the wait doubles from one second (RFC 1996 4.1 suggests retrying).
const TRIES: u32 = 5;

/// Sends NOTIFY for every zone whose serial differs from the one last announced, each time `revisions`
/// moves, until `shutdown`. The first announcement follows the first load, since a secondary may hold data
/// older than ours after we restarted.
pub async fn run(
    targets: Vec<SocketAddr>,
    source: Option<IpAddr>,
    zones: Zones,
    index: SharedIndex,
    mut revisions: watch::Receiver<i64>,
    metrics: NotifyMetrics,
    shutdown: CancellationToken,
) {
    if targets.is_empty() {
        return;
    }
    let mut announced: HashMap<Name, u32> = HashMap::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = revisions.changed() => if changed.is_err() { return },
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(SETTLE) => {}
        }
        for zone in zones.names() {
            let (soa, serial) = {
                let index = index.read().unwrap_or_else(PoisonError::into_inner);
                if index.revision() == 0 {
                    continue;
                }
                (
                    lookup::soa(&index, &zones, zone),
                    index.serial(&zone.to_ascii()),
                )
            };
            if announced.get(zone) == Some(&serial) {
                continue;
            }
            announced.insert(zone.clone(), serial);
            for target in &targets {
                let metrics = metrics.clone();
                let (zone, target, soa) = (zone.clone(), *target, soa.clone());
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = notify_one(zone, serial, target, source, soa, metrics) => {}
                    }
                });
            }
        }
    }
}

async fn notify_one(
    zone: Name,
    serial: u32,
    target: SocketAddr,
    source: Option<IpAddr>,
    soa: hickory_proto::rr::Record,
    metrics: NotifyMetrics,
) {
    let mut wait = Duration::from_secs(1);
    tracing::info!(zone = %zone, serial, target = %target, source = ?source, "sending NOTIFY");
    for attempt in 1..=TRIES {
        let started = tokio::time::Instant::now();
        match send(&zone, target, source, &soa, wait).await {
            Ok(ResponseCode::NoError) => {
                metrics.acked.inc();
                tracing::info!(zone = %zone, serial, target = %target, "secondary acknowledged NOTIFY");
                return;
            }
            Ok(rcode) => {
                // A definite answer: asking again from the same address gets the same one.
                metrics.refused.inc();
                tracing::warn!(
                    zone = %zone,
                    serial,
                    target = %target,
                    source = ?source,
                    rcode = %rcode,
                    "secondary refused NOTIFY: it takes NOTIFY only from the address it knows as the zone's primary (set --notify-source, or --listen on that address) and only for zones it is a secondary of; it refreshes at the SOA refresh interval instead"
                );
                return;
            }
            Err(error) => {
                tracing::debug!(zone = %zone, target = %target, attempt, error = %error, "NOTIFY not acknowledged");
                // A refused port fails at once; still give the secondary the whole interval to come up.
                tokio::time::sleep_until(started + wait).await;
            }
        }
        wait *= 2;
    }
    metrics.failed.inc();
    tracing::warn!(zone = %zone, serial, target = %target, tries = TRIES, "secondary never acknowledged NOTIFY");
}

/// One NOTIFY exchange from `source` (or the route's choice): the zone's SOA as question (and answer, as a
/// hint), waiting for the matching reply; returns its response code, which acknowledges only when NOERROR
/// (RFC 1996 4.7).
async fn send(
    zone: &Name,
    target: SocketAddr,
    source: Option<IpAddr>,
    soa: &hickory_proto::rr::Record,
    wait: Duration,
) -> std::io::Result<ResponseCode> {
    let unspecified = if target.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    let source = source
        .filter(|s| s.is_ipv4() == target.is_ipv4())
        .unwrap_or(unspecified);
    let socket = UdpSocket::bind(SocketAddr::new(source, 0)).await?;
    socket.connect(target).await?;
    let mut message = Message::new(rand_id(), MessageType::Query, OpCode::Notify);
    message.metadata.authoritative = true;
    message.add_query(Query::query(zone.clone(), RecordType::SOA));
    message.add_answer(soa.clone());
    let bytes = message.to_vec().map_err(std::io::Error::other)?;
    socket.send(&bytes).await?;
    let mut buffer = vec![0u8; 4096];
    tokio::time::timeout(wait, async {
        loop {
            let len = socket.recv(&mut buffer).await?;
            let Ok(reply) = Message::from_vec(&buffer[..len]) else {
                continue;
            };
            if reply.metadata.id == message.metadata.id
                && reply.metadata.message_type == MessageType::Response
                && reply.metadata.op_code == OpCode::Notify
            {
                return Ok(reply.metadata.response_code);
            }
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply"))?
}

fn rand_id() -> u16 {
    // Unpredictable enough to match replies; NOTIFY carries no secret.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos ^ (nanos >> 16)) as u16
}
