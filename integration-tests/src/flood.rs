//! A paced flood of UDP DNS queries from chosen loopback source addresses (all of 127.0.0.0/8 is local on
//! Linux, so `127.1.1.x` stands for a spoofed /24 without touching any interface), counting the answers that
//! come back whole and truncated: what response rate limiting is tested and measured with.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{Result, io_err};

/// How long the receivers keep listening, once the sending is over, for an answer still on its way.
const QUIET: Duration = Duration::from_millis(300);
/// How often the sender sends the queries that fell due.
const TICK: Duration = Duration::from_millis(1);

/// What a flood sent and got back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FloodCount {
    /// Queries sent.
    pub sent: u64,
    /// Answers without the TC flag.
    pub answered: u64,
    /// Answers with the TC flag (slipped, or too large for UDP).
    pub truncated: u64,
    /// Bytes of DNS messages sent.
    pub sent_bytes: u64,
    /// Bytes of DNS messages received (whole and truncated).
    pub received_bytes: u64,
}

/// A plain DNS query (recursion not desired, no EDNS) for `name` (dotted, no trailing dot needed) and
/// `qtype`, with message ID `id`.
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut message = Vec::with_capacity(12 + name.len() + 6);
    message.extend_from_slice(&id.to_be_bytes());
    message.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        message.push(u8::try_from(label.len()).unwrap_or(63).min(63));
        message.extend(label.bytes().take(63));
    }
    message.push(0);
    message.extend_from_slice(&qtype.to_be_bytes());
    message.extend_from_slice(&1u16.to_be_bytes());
    message
}

/// Sends `rate` queries a second to `server` for `duration`, round-robin from one socket bound to each address
/// of `from`, the `n`th query being `query(n)`; counts the answers until none has come for a moment.
pub fn flood(
    server: SocketAddr,
    from: &[IpAddr],
    rate: u32,
    duration: Duration,
    query: impl Fn(u64) -> Vec<u8>,
) -> Result<FloodCount> {
    flood_until(server, from, rate, duration, &AtomicBool::new(false), query)
}

/// [`flood`] that also ends as soon as `stop` is set.
pub fn flood_until(
    server: SocketAddr,
    from: &[IpAddr],
    rate: u32,
    duration: Duration,
    stop: &AtomicBool,
    query: impl Fn(u64) -> Vec<u8>,
) -> Result<FloodCount> {
    let answered = Arc::new(AtomicU64::new(0));
    let truncated = Arc::new(AtomicU64::new(0));
    let received_bytes = Arc::new(AtomicU64::new(0));
    let sending = Arc::new(AtomicBool::new(true));
    let mut sockets = Vec::new();
    let mut receivers = Vec::new();
    for address in from {
        let socket = UdpSocket::bind(SocketAddr::new(*address, 0))
            .map_err(io_err(&format!("binding a UDP socket to {address}")))?;
        let receiving = socket.try_clone().map_err(io_err("cloning a UDP socket"))?;
        receiving
            .set_read_timeout(Some(QUIET))
            .map_err(io_err("setting a read timeout"))?;
        let (answered, truncated, received_bytes, sending) = (
            answered.clone(),
            truncated.clone(),
            received_bytes.clone(),
            sending.clone(),
        );
        receivers.push(std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            loop {
                match receiving.recv(&mut buffer) {
                    Ok(len) if len >= 12 => {
                        let kind = if buffer[2] & 0x02 != 0 {
                            &truncated
                        } else {
                            &answered
                        };
                        kind.fetch_add(1, Ordering::Relaxed);
                        received_bytes.fetch_add(len as u64, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    // Nothing for QUIET: done once the sender is.
                    Err(_) if !sending.load(Ordering::Relaxed) => return,
                    Err(_) => {}
                }
            }
        }));
        sockets.push(socket);
    }
    let mut sent = (0u64, 0u64);
    let sending_result = send_paced(&sockets, server, rate, duration, stop, &query, &mut sent);
    sending.store(false, Ordering::Relaxed);
    for receiver in receivers {
        let _ = receiver.join();
    }
    sending_result?;
    Ok(FloodCount {
        sent: sent.0,
        answered: answered.load(Ordering::Relaxed),
        truncated: truncated.load(Ordering::Relaxed),
        sent_bytes: sent.1,
        received_bytes: received_bytes.load(Ordering::Relaxed),
    })
}

/// Sends `rate` queries a second for `duration` or until `stop`, round-robin over `sockets`, counting them and
/// their bytes in `sent`.
fn send_paced(
    sockets: &[UdpSocket],
    server: SocketAddr,
    rate: u32,
    duration: Duration,
    stop: &AtomicBool,
    query: &impl Fn(u64) -> Vec<u8>,
    sent: &mut (u64, u64),
) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < duration && !stop.load(Ordering::Relaxed) {
        let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        while sent.0 < due {
            let socket = &sockets[(sent.0 % sockets.len() as u64) as usize];
            let message = query(sent.0);
            socket
                .send_to(&message, server)
                .map_err(io_err("sending a query"))?;
            sent.0 += 1;
            sent.1 += message.len() as u64;
        }
        // The pace of the flood, not a wait for a condition.
        std::thread::sleep(TICK);
    }
    Ok(())
}
