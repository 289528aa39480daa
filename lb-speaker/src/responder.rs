//! The data plane: one raw packet socket per eligible interface, read on its own blocking thread, answering
//! ARP requests and Neighbor Solicitations for the addresses in the shared [`AnswerTable`], and sending
//! gratuitous announcements when asked. The decision for one frame is the pure [`decide`], so what gets
//! answered is unit-tested without sockets.
//!
//! The table carries the lease deadline itself and every answer checks it against the clock, so replies
//! stop at the deadline even if the control loop were late to notice: fencing does not depend on a timer
//! firing. The socket is opened in promiscuous mode, which also delivers the solicited-node multicast
//! Neighbor Solicitations of addresses that are never configured on the interface (the kernel would not
//! join those groups for us).

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pnet::datalink::{self, Channel, DataLinkSender};
use tokio::sync::mpsc::UnboundedSender;

use crate::frames::{self, ArpOp, Frame, FrameError, Mac};
use crate::metrics::{self, Metrics, ProtocolLabels};

/// Conflicts (address, foreign MAC) one responder reports to the speaker between two assignment
/// changes; the controller takes at most as many from a report.
pub const MAX_REPORTED_CONFLICTS: usize = 64;

/// How often a responder thread wakes without traffic to see whether it must stop.
const READ_TIMEOUT: Duration = Duration::from_millis(100);

/// What every responder may answer for, written by the control loop, read per frame.
#[derive(Debug, Default)]
pub struct AnswerTable {
    /// The lease deadline: nothing is answered at or after it.
    pub deadline: Option<Instant>,
    /// Held addresses per interface name.
    pub by_interface: HashMap<String, HashSet<IpAddr>>,
    /// Bumped on every change, so responders forget which conflicts they already reported.
    pub epoch: u64,
}

impl AnswerTable {
    /// Whether `addr` is answered on `interface` at `now`.
    pub fn answers(&self, interface: &str, addr: IpAddr, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now < d)
            && self
                .by_interface
                .get(interface)
                .is_some_and(|set| set.contains(&addr))
    }
}

/// The table shared between the control loop and the responder threads.
pub type SharedTable = Arc<RwLock<AnswerTable>>;

/// Something a responder saw that the control loop must know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Another MAC claims an address we hold.
    Conflict {
        /// The address.
        address: IpAddr,
        /// Where it was seen.
        interface: String,
        /// Who claims it.
        foreign_mac: Mac,
    },
    /// The socket failed; the responder stopped.
    Failed {
        /// The interface.
        interface: String,
        /// What went wrong.
        error: String,
    },
}

/// What to do with one received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not ours to care about (other traffic, our own frames, frames unicast to someone else).
    Ignore,
    /// A frame that could not be parsed.
    Malformed(FrameError),
    /// A request for `address`; `reply` is the answer if we hold it.
    Request {
        /// Which protocol.
        protocol: ProtocolLabels,
        /// The address asked for.
        address: IpAddr,
        /// The frame to send back, if we hold the address.
        reply: Option<Vec<u8>>,
    },
    /// Another MAC announces or answers for an address we hold.
    Conflict {
        /// Which protocol.
        protocol: ProtocolLabels,
        /// The address.
        address: IpAddr,
        /// Who.
        foreign_mac: Mac,
    },
}

/// Decides what to do with `bytes` received on an interface whose MAC is `mac`, where `holds` says
/// whether an address is answered there now.
pub fn decide(bytes: &[u8], mac: Mac, holds: impl Fn(IpAddr) -> bool) -> Decision {
    if let Some(dst) = bytes.get(..6) {
        // Promiscuous mode also shows unicast frames for other hosts; they are not asking us.
        let unicast = dst[0] & 1 == 0;
        if unicast && dst != mac {
            return Decision::Ignore;
        }
    }
    let frame = match frames::parse(bytes) {
        Ok(frame) => frame,
        Err(e) => return Decision::Malformed(e),
    };
    match frame {
        Frame::Other => Decision::Ignore,
        Frame::Arp(arp) if arp.eth_src == mac || arp.sender_mac == mac => Decision::Ignore,
        Frame::Arp(arp) => {
            let claimed = IpAddr::V4(arp.sender_ip);
            let claims_ours = (arp.op == ArpOp::Reply || arp.is_gratuitous()) && holds(claimed);
            if claims_ours {
                return Decision::Conflict {
                    protocol: metrics::ARP,
                    address: claimed,
                    foreign_mac: arp.sender_mac,
                };
            }
            if arp.op != ArpOp::Request {
                return Decision::Ignore;
            }
            let address = IpAddr::V4(arp.target_ip);
            Decision::Request {
                protocol: metrics::ARP,
                address,
                reply: holds(address).then(|| frames::arp_reply(mac, &arp)),
            }
        }
        Frame::Solicitation(ns) if ns.eth_src == mac => Decision::Ignore,
        Frame::Solicitation(ns) => {
            let address = IpAddr::V6(ns.target);
            Decision::Request {
                protocol: metrics::NDP,
                address,
                reply: holds(address).then(|| frames::neighbor_advertisement(mac, &ns)),
            }
        }
        Frame::Advertisement(na) if na.eth_src == mac || na.target_mac == Some(mac) => {
            Decision::Ignore
        }
        Frame::Advertisement(na) => {
            let address = IpAddr::V6(na.target);
            if holds(address) {
                Decision::Conflict {
                    protocol: metrics::NDP,
                    address,
                    foreign_mac: na.target_mac.unwrap_or(na.eth_src),
                }
            } else {
                Decision::Ignore
            }
        }
    }
}

/// Why a responder could not start.
#[derive(Debug, thiserror::Error)]
pub enum ResponderError {
    /// The interface vanished between scan and open.
    #[error("interface {0} not found")]
    NotFound(String),
    /// The raw socket could not be opened (needs CAP_NET_RAW).
    #[error("opening a raw socket on {interface}: {source}")]
    Open {
        /// The interface.
        interface: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Not an Ethernet channel.
    #[error("{0} is not an Ethernet interface")]
    NotEthernet(String),
    /// The thread could not be spawned.
    #[error("starting the responder thread for {interface}: {source}")]
    Thread {
        /// The interface.
        interface: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A running responder on one interface.
pub struct Responder {
    name: String,
    mac: Mac,
    tx: Arc<Mutex<Box<dyn DataLinkSender>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    metrics: Metrics,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// Opens a raw socket on `name` (whose MAC is `mac`) and starts answering from `table`.
    pub fn start(
        name: &str,
        mac: Mac,
        table: SharedTable,
        metrics: Metrics,
        events: UnboundedSender<Event>,
    ) -> Result<Self, ResponderError> {
        let interface = datalink::interfaces()
            .into_iter()
            .find(|i| i.name == name)
            .ok_or_else(|| ResponderError::NotFound(name.to_owned()))?;
        let config = datalink::Config {
            read_timeout: Some(READ_TIMEOUT),
            promiscuous: true,
            ..datalink::Config::default()
        };
        let (tx, rx) = match datalink::channel(&interface, config) {
            Ok(Channel::Ethernet(tx, rx)) => (tx, rx),
            Ok(_) => return Err(ResponderError::NotEthernet(name.to_owned())),
            Err(source) => {
                return Err(ResponderError::Open {
                    interface: name.to_owned(),
                    source,
                });
            }
        };
        let tx = Arc::new(Mutex::new(tx));
        let stop = Arc::new(AtomicBool::new(false));
        let receive = Receive {
            name: name.to_owned(),
            mac,
            table,
            metrics: metrics.clone(),
            events,
            tx: tx.clone(),
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("responder-{name}"))
            .spawn(move || receive.run(rx))
            .map_err(|source| ResponderError::Thread {
                interface: name.to_owned(),
                source,
            })?;
        tracing::info!(interface = name, mac = %format_mac(&mac), "responding to ARP and NDP");
        Ok(Self {
            name: name.to_owned(),
            mac,
            tx,
            stop,
            thread: Some(thread),
            metrics,
        })
    }

    /// The interface's MAC.
    pub fn mac(&self) -> Mac {
        self.mac
    }

    /// Whether the receive thread is still running.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Announces `address` on this interface: gratuitous ARP in request and reply form, or an unsolicited
    /// Neighbor Advertisement with the override flag.
    pub fn announce(&self, address: IpAddr) -> io::Result<()> {
        match address {
            IpAddr::V4(ip) => {
                for op in [ArpOp::Request, ArpOp::Reply] {
                    send(&self.tx, &frames::gratuitous_arp(self.mac, ip, op))?;
                    self.metrics
                        .gratuitous_sent
                        .get_or_create(&metrics::ARP)
                        .inc();
                }
            }
            IpAddr::V6(ip) => {
                send(&self.tx, &frames::unsolicited_advertisement(self.mac, ip))?;
                self.metrics
                    .gratuitous_sent
                    .get_or_create(&metrics::NDP)
                    .inc();
            }
        }
        Ok(())
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The thread wakes within READ_TIMEOUT; joining makes the socket's close (and with it the end of
            // promiscuous mode) happen before the drop returns.
            let _ = thread.join();
        }
    }
}

fn send(tx: &Mutex<Box<dyn DataLinkSender>>, frame: &[u8]) -> io::Result<()> {
    let mut tx = tx.lock().unwrap_or_else(PoisonError::into_inner);
    tx.send_to(frame, None)
        .unwrap_or_else(|| Err(io::Error::other("the packet socket refused the frame")))
}

/// Formats a MAC the usual way.
pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

struct Receive {
    name: String,
    mac: Mac,
    table: SharedTable,
    metrics: Metrics,
    events: UnboundedSender<Event>,
    tx: Arc<Mutex<Box<dyn DataLinkSender>>>,
    stop: Arc<AtomicBool>,
}

impl Receive {
    fn run(self, mut rx: Box<dyn datalink::DataLinkReceiver>) {
        let mut reported: HashSet<(IpAddr, Mac)> = HashSet::new();
        let mut epoch = 0;
        while !self.stop.load(Ordering::Relaxed) {
            let bytes = match rx.next() {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(interface = %self.name, error = %e, "raw socket failed, responder stopped");
                    let _ = self.events.send(Event::Failed {
                        interface: self.name.clone(),
                        error: e.to_string(),
                    });
                    return;
                }
            };
            let decision = {
                let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
                if table.epoch != epoch {
                    epoch = table.epoch;
                    reported.clear();
                }
                let now = Instant::now();
                decide(bytes, self.mac, |addr| table.answers(&self.name, addr, now))
            };
            self.act(decision, &mut reported);
        }
    }

    fn act(&self, decision: Decision, reported: &mut HashSet<(IpAddr, Mac)>) {
        match decision {
            Decision::Ignore => {}
            Decision::Malformed(e) => {
                self.metrics.malformed_frames.inc();
                tracing::debug!(interface = %self.name, error = %e, "malformed frame ignored");
            }
            Decision::Request {
                protocol,
                address,
                reply,
            } => {
                self.metrics.requests_seen.get_or_create(&protocol).inc();
                let Some(reply) = reply else { return };
                match send(&self.tx, &reply) {
                    Ok(()) => {
                        self.metrics.replies_sent.get_or_create(&protocol).inc();
                        tracing::debug!(address = %address, interface = %self.name, protocol = protocol.protocol, "answered");
                    }
                    Err(e) => {
                        self.metrics.send_errors.inc();
                        tracing::warn!(address = %address, interface = %self.name, error = %e, "cannot send an answer");
                    }
                }
            }
            Decision::Conflict {
                protocol,
                address,
                foreign_mac,
            } => {
                self.metrics.conflicts.get_or_create(&protocol).inc();
                // Anyone on the segment can answer with random MACs: a bounded number of conflicts is
                // reported per assignment change, the rest only counted.
                if reported.len() >= MAX_REPORTED_CONFLICTS
                    && !reported.contains(&(address, foreign_mac))
                {
                    self.metrics.conflicts_unreported.inc();
                } else if reported.insert((address, foreign_mac)) {
                    tracing::warn!(
                        address = %address,
                        interface = %self.name,
                        foreign_mac = %format_mac(&foreign_mac),
                        protocol = protocol.protocol,
                        "conflict: another MAC claims an address this node announces"
                    );
                    let _ = self.events.send(Event::Conflict {
                        address,
                        interface: self.name.clone(),
                        foreign_mac,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const OURS: Mac = [2, 0, 0, 0, 0, 1];
    const CLIENT: Mac = [2, 0, 0, 0, 0, 0xc1];
    const OTHER_NODE: Mac = [2, 0, 0, 0, 0, 2];
    const HELD: Ipv4Addr = Ipv4Addr::new(10, 10, 39, 200);

    fn held(addr: IpAddr) -> bool {
        addr == IpAddr::V4(HELD) || addr == "fd10:10::99".parse::<IpAddr>().unwrap()
    }

    #[test]
    fn a_request_for_a_held_address_gets_a_unicast_reply_with_our_mac() {
        let request = frames::arp_request(CLIENT, Ipv4Addr::new(10, 10, 40, 200), HELD);
        let Decision::Request {
            reply: Some(reply), ..
        } = decide(&request, OURS, held)
        else {
            panic!("not answered")
        };
        let Ok(Frame::Arp(arp)) = frames::parse(&reply) else {
            panic!()
        };
        assert_eq!(
            (arp.eth_dst, arp.eth_src, arp.sender_mac),
            (CLIENT, OURS, OURS)
        );
        assert_eq!(arp.sender_ip, HELD);
    }

    #[test]
    fn requests_for_other_addresses_are_seen_but_not_answered() {
        let request = frames::arp_request(
            CLIENT,
            Ipv4Addr::new(10, 10, 40, 200),
            Ipv4Addr::new(10, 10, 39, 201),
        );
        assert!(matches!(
            decide(&request, OURS, held),
            Decision::Request { reply: None, .. }
        ));
    }

    #[test]
    fn our_own_frames_and_unicast_frames_for_others_are_ignored() {
        let own = frames::arp_request(OURS, Ipv4Addr::new(10, 10, 40, 110), HELD);
        assert_eq!(decide(&own, OURS, held), Decision::Ignore);
        let mut unicast = frames::arp_request(CLIENT, Ipv4Addr::new(10, 10, 40, 200), HELD);
        unicast[..6].copy_from_slice(&OTHER_NODE);
        assert_eq!(decide(&unicast, OURS, held), Decision::Ignore);
        let own_garp = frames::gratuitous_arp(OURS, HELD, ArpOp::Reply);
        assert_eq!(decide(&own_garp, OURS, held), Decision::Ignore);
    }

    #[test]
    fn another_mac_announcing_or_answering_for_a_held_address_is_a_conflict() {
        for frame in [
            frames::gratuitous_arp(OTHER_NODE, HELD, ArpOp::Request),
            frames::gratuitous_arp(OTHER_NODE, HELD, ArpOp::Reply),
            frames::unsolicited_advertisement(OTHER_NODE, "fd10:10::99".parse().unwrap()),
        ] {
            assert!(
                matches!(
                    decide(&frame, OURS, held),
                    Decision::Conflict {
                        foreign_mac: OTHER_NODE,
                        ..
                    }
                ),
                "{frame:?}"
            );
        }
        let unrelated =
            frames::gratuitous_arp(OTHER_NODE, Ipv4Addr::new(10, 10, 40, 120), ArpOp::Request);
        assert!(matches!(
            decide(&unrelated, OURS, held),
            Decision::Request { reply: None, .. }
        ));
    }

    #[test]
    fn a_solicitation_for_a_held_address_gets_an_advertisement() {
        let src: Ipv6Addr = "fd10:10::40:200".parse().unwrap();
        let ns = frames::neighbor_solicitation(CLIENT, src, "fd10:10::99".parse().unwrap());
        let Decision::Request {
            reply: Some(reply),
            protocol,
            ..
        } = decide(&ns, OURS, held)
        else {
            panic!("not answered")
        };
        assert_eq!(protocol, metrics::NDP);
        let Ok(Frame::Advertisement(na)) = frames::parse(&reply) else {
            panic!()
        };
        assert_eq!(na.target_mac, Some(OURS));
        let other = frames::neighbor_solicitation(CLIENT, src, "fd10:10::98".parse().unwrap());
        assert!(matches!(
            decide(&other, OURS, held),
            Decision::Request { reply: None, .. }
        ));
    }

    #[test]
    fn malformed_frames_are_reported_as_such() {
        let mut bad = frames::arp_request(CLIENT, Ipv4Addr::new(10, 10, 40, 200), HELD);
        bad[21] = 7;
        assert!(matches!(decide(&bad, OURS, held), Decision::Malformed(_)));
    }

    #[test]
    fn the_table_answers_only_before_the_deadline() {
        let now = Instant::now();
        let mut table = AnswerTable {
            deadline: Some(now + Duration::from_secs(1)),
            ..AnswerTable::default()
        };
        table
            .by_interface
            .entry("eth0".to_owned())
            .or_default()
            .insert(IpAddr::V4(HELD));
        assert!(table.answers("eth0", IpAddr::V4(HELD), now));
        assert!(!table.answers("eth1", IpAddr::V4(HELD), now));
        assert!(!table.answers("eth0", IpAddr::V4(HELD), now + Duration::from_secs(1)));
    }
}
