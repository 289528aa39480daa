//! NOTIFY (RFC 1996): when a zone's serial changes, tell the configured secondaries, so that AD or BIND
//! acting as a secondary refreshes within moments instead of at the SOA refresh interval.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::PoisonError;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType, TSigner};
use ops::CancellationToken;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::lookup::{self, Zones};
use crate::metrics::NotifyMetrics;
use crate::store::SharedIndex;
use crate::tsig;

/// Changes arriving closer together than this are announced once.
const SETTLE: Duration = Duration::from_millis(50);
/// Tries per secondary and serial; the wait doubles from one second (RFC 1996 4.1 suggests retrying).
const TRIES: u32 = 5;

/// Who to NOTIFY, and how.
#[derive(Clone)]
pub struct Secondaries {
    /// The secondaries' addresses.
    pub targets: Vec<SocketAddr>,
    /// Where NOTIFY is sent from (`None`: the route's choice).
    pub source: Option<IpAddr>,
    /// The key NOTIFY is signed with.
    pub key: Option<TSigner>,
}

/// Sends NOTIFY for every zone whose serial differs from the one last announced, each time `revisions`
/// moves, until `shutdown`. The first announcement follows the first load, since a secondary may hold data
/// older than ours after we restarted.
pub async fn run(
    secondaries: Secondaries,
    zones: Zones,
    index: SharedIndex,
    mut revisions: watch::Receiver<i64>,
    metrics: NotifyMetrics,
    shutdown: CancellationToken,
) {
    let Secondaries {
        targets,
        source,
        key,
    } = secondaries;
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
                let (shutdown, key) = (shutdown.clone(), key.clone());
                tokio::spawn(async move {
                    let announcement = Announcement {
                        zone,
                        serial,
                        soa,
                        source,
                        key,
                    };
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = notify_one(announcement, target, metrics) => {}
                    }
                });
            }
        }
    }
}

/// One zone's new serial, to announce.
struct Announcement {
    zone: Name,
    serial: u32,
    soa: hickory_proto::rr::Record,
    /// Where NOTIFY is sent from (`None`: the route's choice).
    source: Option<IpAddr>,
    /// The key NOTIFY is signed with.
    key: Option<TSigner>,
}

async fn notify_one(announcement: Announcement, target: SocketAddr, metrics: NotifyMetrics) {
    let Announcement {
        ref zone,
        serial,
        source,
        ..
    } = announcement;
    let mut wait = Duration::from_secs(1);
    tracing::info!(zone = %zone, serial, target = %target, source = ?source, "sending NOTIFY");
    for attempt in 1..=TRIES {
        let started = tokio::time::Instant::now();
        match send(&announcement, target, wait).await {
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
    announcement: &Announcement,
    target: SocketAddr,
    wait: Duration,
) -> std::io::Result<ResponseCode> {
    let Announcement {
        zone,
        soa,
        source,
        key,
        ..
    } = announcement;
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
    let mut verifier = key
        .as_ref()
        .and_then(|key| tsig::sign_request(key, &mut message, tsig::now()));
    let bytes = message.to_vec().map_err(std::io::Error::other)?;
    socket.send(&bytes).await?;
    let mut buffer = vec![0u8; 4096];
    tokio::time::timeout(wait, async {
        loop {
            let len = socket.recv(&mut buffer).await?;
            let Ok(reply) = Message::from_vec(&buffer[..len]) else {
                continue;
            };
            if reply.metadata.id != message.metadata.id
                || reply.metadata.message_type != MessageType::Response
                || reply.metadata.op_code != OpCode::Notify
            {
                continue;
            }
            let rcode = reply.metadata.response_code;
            // A signed NOTIFY is acknowledged only by an answer signed with the same key (an error answer
            // counts as refused either way: BADKEY and BADSIG answers are unsigned by definition).
            if rcode == ResponseCode::NoError
                && let Some(verifier) = verifier.as_mut()
                && let Err(error) = verifier.verify(&buffer[..len])
            {
                tracing::warn!(zone = %zone, target = %target, error = %error, "NOTIFY answer with a bad TSIG signature ignored");
                continue;
            }
            return Ok(rcode);
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
