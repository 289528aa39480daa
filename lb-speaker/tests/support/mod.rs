//! Shared pieces of the lb-speaker integration tests and benchmark:
//!
//! - [`StandIn`]: the controller's half of `announce.proto`, served by a real tonic `AnnouncerServer` on a
//!   real socket. This is not a mock of something that could run here: lb-controller is being written
//!   concurrently, and this stand-in *is* the peer contract the speaker is tested against (each step of the
//!   session is driven explicitly by the test, so the speaker's half is checked message by message).
//! - [`start_speaker`]: the real `lb-speaker` binary inside a lab namespace.
//! - Layer-2 probes from the client namespace: raw ARP/NDP requests and captures ([`probe_arp`],
//!   [`Capture`]), `arping`, and the kernel's neighbour table ([`neighbour_mac`]).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod bgp;
pub mod peer;
pub mod system;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use integration_tests::launch::LbSpeaker;
use integration_tests::netlab::{HOST_INTERFACE, Host};
use integration_tests::process::{Process, Scratch};
use integration_tests::wait;
use lb_speaker::frames::{self, Frame, Mac};
use pnet::datalink::{self, Channel, DataLinkReceiver, DataLinkSender};
use proto::announce::v1::announcer_server::{Announcer, AnnouncerServer};
use proto::announce::v1::controller_message::Body as ControllerBody;
use proto::announce::v1::speaker_message::Body as SpeakerBody;
use proto::announce::v1::{
    Assignment, AssignmentSet, ControllerMessage, Lease, LeaseRenewal, SpeakerMessage,
};
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

/// The seed's first LoadBalancer address.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 10, 39, 200);
/// An address nobody is assigned.
pub const UNASSIGNED: Ipv4Addr = Ipv4Addr::new(10, 10, 39, 201);

/// One speaker session as the stand-in sees it.
pub struct SessionRecord {
    /// The node from Hello.
    pub node: String,
    /// Every message received, Hello first.
    pub received: Mutex<Vec<(Instant, SpeakerMessage)>>,
    /// Set when the speaker's stream ended or broke.
    pub ended: AtomicBool,
    tx: UnboundedSender<Result<ControllerMessage, Status>>,
    /// The newest `sent_at_ms` received from this session: what every lease echoes (step 3).
    newest_sent_at: AtomicU64,
    generation: AtomicU64,
    lease_ms: AtomicU32,
    renewing: AtomicBool,
}

impl SessionRecord {
    /// Sends a raw message to the speaker.
    pub fn send(&self, body: ControllerBody) {
        let _ = self.tx.send(Ok(ControllerMessage { body: Some(body) }));
    }

    /// The newest `sent_at_ms` received from this session.
    pub fn echo(&self) -> u64 {
        self.newest_sent_at.load(Ordering::SeqCst)
    }

    /// A lease of `valid_for_ms` echoing the newest `sent_at_ms` received, as the contract's controller
    /// sends it.
    pub fn lease(&self, valid_for_ms: u32) -> Lease {
        Lease {
            valid_for_ms,
            echo_ms: self.echo(),
        }
    }

    /// Sends the next snapshot with `addresses` (on every eligible interface) and a lease of `lease_ms`,
    /// and keeps renewing it every lease/5 until [`SessionRecord::stop_renewing`]. Returns its generation
    /// and the instant just before it was handed to the stream.
    pub fn assign(&self, addresses: &[&str], lease_ms: u32) -> (u64, Instant) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.lease_ms.store(lease_ms, Ordering::SeqCst);
        self.renewing.store(true, Ordering::SeqCst);
        let set = AssignmentSet {
            generation,
            assignments: addresses
                .iter()
                .map(|a| Assignment {
                    address: (*a).to_owned(),
                    interfaces: vec![],
                    services: vec!["test/svc".to_owned()],
                })
                .collect(),
            lease: Some(self.lease(lease_ms)),
        };
        let sent_at = Instant::now();
        self.send(ControllerBody::Snapshot(set));
        (generation, sent_at)
    }

    /// Sends a snapshot built by the caller (generation filled in; its lease is sent as built, see
    /// [`SessionRecord::lease`]).
    pub fn assign_set(&self, mut set: AssignmentSet) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        set.generation = generation;
        if let Some(lease) = &set.lease {
            self.lease_ms.store(lease.valid_for_ms, Ordering::SeqCst);
        }
        self.renewing.store(true, Ordering::SeqCst);
        self.send(ControllerBody::Snapshot(set));
        generation
    }

    /// Stops the automatic lease renewals (a partitioned or dead leader, as far as the speaker can tell).
    pub fn stop_renewing(&self) {
        self.renewing.store(false, Ordering::SeqCst);
    }

    /// Messages received so far.
    pub fn messages(&self) -> Vec<SpeakerMessage> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Waits until a Heartbeat acknowledges `generation` (or later).
    pub fn wait_ack(&self, generation: u64, timeout: Duration) {
        wait::until_blocking(
            &format!("{} to acknowledge generation {generation}", self.node),
            timeout,
            || {
                let acked = self.messages().iter().any(|m| {
                    matches!(&m.body, Some(SpeakerBody::Heartbeat(h)) if h.applied_generation >= generation)
                });
                if acked {
                    Ok(())
                } else {
                    Err(format!("{} messages, no ack", self.messages().len()))
                }
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Waits until `probe` finds something in the received messages.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        probe: impl Fn(&[SpeakerMessage]) -> Option<T>,
    ) -> T {
        wait::until_blocking(what, timeout, || {
            let messages = self.messages();
            probe(&messages).ok_or_else(|| format!("{} messages so far", messages.len()))
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }
}

#[derive(Default)]
struct Shared {
    sessions: Mutex<Vec<Arc<SessionRecord>>>,
}

struct Service {
    shared: Arc<Shared>,
}

type ControllerStream = Pin<Box<dyn Stream<Item = Result<ControllerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Announcer for Service {
    type SessionStream = ControllerStream;

    async fn session(
        &self,
        request: Request<Streaming<SpeakerMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let Ok(Some(first)) = inbound.message().await else {
                return;
            };
            let Some(SpeakerBody::Hello(hello)) = &first.body else {
                let _ = tx.send(Err(Status::invalid_argument(
                    "the first message must be Hello",
                )));
                return;
            };
            let record = Arc::new(SessionRecord {
                node: hello.node.clone(),
                received: Mutex::new(vec![(Instant::now(), first.clone())]),
                ended: AtomicBool::new(false),
                tx,
                newest_sent_at: AtomicU64::new(first.sent_at_ms),
                generation: AtomicU64::new(0),
                lease_ms: AtomicU32::new(0),
                renewing: AtomicBool::new(false),
            });
            shared.sessions.lock().unwrap().push(record.clone());
            let renewer = tokio::spawn(renew(record.clone()));
            while let Ok(Some(message)) = inbound.message().await {
                record
                    .newest_sent_at
                    .fetch_max(message.sent_at_ms, Ordering::SeqCst);
                record
                    .received
                    .lock()
                    .unwrap()
                    .push((Instant::now(), message));
            }
            record.ended.store(true, Ordering::SeqCst);
            renewer.abort();
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}

/// Renews the current generation every lease/5 while renewing is on (step 2 of the contract), echoing the
/// newest `sent_at_ms` received (step 3).
async fn renew(record: Arc<SessionRecord>) {
    loop {
        let lease_ms = record.lease_ms.load(Ordering::SeqCst);
        let period = Duration::from_millis(u64::from(lease_ms.max(50)) / 5);
        tokio::time::sleep(period).await;
        if record.renewing.load(Ordering::SeqCst) && lease_ms > 0 {
            record.send(ControllerBody::Renewal(LeaseRenewal {
                generation: record.generation.load(Ordering::SeqCst),
                lease: Some(record.lease(lease_ms)),
            }));
        }
    }
}

/// TLS for the stand-in: its server certificate and the CA its clients must be signed by.
pub struct StandInTls {
    /// Server certificate (PEM).
    pub cert_pem: String,
    /// Server key (PEM).
    pub key_pem: String,
    /// The CA client certificates must chain to (PEM).
    pub client_ca_pem: String,
}

/// A running stand-in controller.
pub struct StandIn {
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl StandIn {
    /// Serves on `listener` (already bound, possibly inside a lab namespace: the socket keeps its
    /// namespace wherever it is used from).
    pub fn start(listener: std::net::TcpListener, tls: Option<StandInTls>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = Service {
            shared: shared.clone(),
        };
        let _guard = runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let mut server = Server::builder();
        if let Some(tls) = tls {
            server = server
                .tls_config(
                    ServerTlsConfig::new()
                        .identity(Identity::from_pem(tls.cert_pem, tls.key_pem))
                        .client_ca_root(Certificate::from_pem(tls.client_ca_pem)),
                )
                .unwrap();
        }
        let router = server.add_service(AnnouncerServer::new(service));
        runtime.spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ = router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            runtime,
            shared,
            addr,
            stop: Some(stop),
        }
    }

    /// Binds `ip:0` inside `host`'s namespace and serves there.
    pub fn start_in(host: &Host, tls: Option<StandInTls>) -> Self {
        Self::start_in_at(host, 0, tls)
    }

    /// Binds `ip:port` inside `host`'s namespace and serves there (a restarted controller at the address
    /// the speakers already dial).
    pub fn start_in_at(host: &Host, port: u16, tls: Option<StandInTls>) -> Self {
        let ip = host.ipv4;
        let listener = host
            .run(move || std::net::TcpListener::bind((ip, port)))
            .unwrap()
            .unwrap();
        Self::start(listener, tls)
    }

    /// `http://addr` for the speaker's `--controller`.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    /// Every session opened so far.
    pub fn sessions(&self) -> Vec<Arc<SessionRecord>> {
        self.shared.sessions.lock().unwrap().clone()
    }

    /// Waits for a new session from `node` (the `nth` one, counting from 0).
    pub fn wait_session(&self, node: &str, nth: usize, timeout: Duration) -> Arc<SessionRecord> {
        wait::until_blocking(&format!("session #{nth} from {node}"), timeout, || {
            self.sessions()
                .into_iter()
                .filter(|s| s.node == node)
                .nth(nth)
                .ok_or_else(|| "not yet".to_owned())
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = &self.runtime;
    }
}

/// Starts the real `lb-speaker` in `host`'s namespace, talking to `controller` (plaintext for an `http://`
/// URL), announcing on `eth0`, with debug logs of its own; `extra` adds flags (or another log filter).
pub fn start_speaker(
    binary: &str,
    host: &Host,
    scratch: &Scratch,
    controller: &str,
    extra: impl FnOnce(LbSpeaker) -> LbSpeaker,
) -> Process {
    let mut speaker = LbSpeaker::new(binary, &host.name)
        .controller(controller)
        .interfaces("^eth0$")
        .log_filter("info,lb_speaker=debug")
        .ops_in_args();
    if controller.starts_with("http://") {
        speaker = speaker.insecure();
    }
    let command = extra(speaker).command_in(host);
    let log = scratch.join(&format!("lb-speaker-{}.log", host.name));
    Process::spawn(&format!("lb-speaker on {}", host.name), command, &log).unwrap()
}

/// A raw Ethernet channel on `eth0` inside `host`.
pub fn raw_channel(
    host: &Host,
    read_timeout: Duration,
) -> (Box<dyn DataLinkSender>, Box<dyn DataLinkReceiver>) {
    host.run(move || {
        let interface = datalink::interfaces()
            .into_iter()
            .find(|i| i.name == HOST_INTERFACE)
            .expect("eth0 in the namespace");
        let config = datalink::Config {
            read_timeout: Some(read_timeout),
            ..datalink::Config::default()
        };
        match datalink::channel(&interface, config).expect("raw socket on eth0") {
            Channel::Ethernet(tx, rx) => (tx, rx),
            _ => panic!("not an Ethernet channel"),
        }
    })
    .unwrap()
}

/// Sends one ARP request for `target` from `client` and returns the MAC of every reply within `listen`.
pub fn probe_arp(client: &Host, target: Ipv4Addr, listen: Duration) -> Vec<Mac> {
    let mac = client.mac().unwrap();
    let (mut tx, mut rx) = raw_channel(client, Duration::from_millis(20));
    let request = frames::arp_request(mac, client.ipv4, target);
    tx.send_to(&request, None).unwrap().unwrap();
    let deadline = Instant::now() + listen;
    let mut macs = Vec::new();
    while Instant::now() < deadline {
        let Ok(bytes) = rx.next() else { continue };
        if let Ok(Frame::Arp(arp)) = frames::parse(bytes)
            && arp.op == frames::ArpOp::Reply
            && arp.sender_ip == target
            && arp.eth_dst == mac
        {
            macs.push(arp.sender_mac);
        }
    }
    macs
}

/// Runs `arping -c 1 -w 2 -I eth0 target` in `client`; returns the MACs it printed replies from.
pub fn arping(client: &Host, target: Ipv4Addr) -> Vec<Mac> {
    let out = client
        .command("arping")
        .args([
            "-c",
            "1",
            "-w",
            "2",
            "-I",
            HOST_INTERFACE,
            &target.to_string(),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| {
            let inside = l.split('[').nth(1)?.split(']').next()?;
            parse_mac(inside)
        })
        .collect()
}

/// The MAC the kernel's neighbour table in `client` holds for `addr`, if any (not FAILED/INCOMPLETE).
pub fn neighbour_mac(client: &Host, addr: IpAddr) -> Option<Mac> {
    let out = client
        .command("ip")
        .args(["neigh", "show", &addr.to_string(), "dev", HOST_INTERFACE])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace().skip_while(|w| *w != "lladdr");
    words.next()?;
    parse_mac(words.next()?)
}

/// Sends kernel traffic to `addr` from `client` so its neighbour table resolves it (the ping itself is not
/// answered: the address is configured nowhere).
pub fn kernel_traffic(client: &Host, addr: IpAddr) {
    let _ = client
        .command("ping")
        .args(["-c", "1", "-W", "1", &addr.to_string()])
        .output()
        .unwrap();
}

/// Parses `aa:bb:cc:dd:ee:ff` (any case).
pub fn parse_mac(text: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Frames seen on `eth0` in a namespace, recorded with their arrival time until dropped.
pub struct Capture {
    frames: Arc<Mutex<Vec<(Instant, Frame)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Capture {
    /// Starts capturing ARP and NDP frames in `host`.
    pub fn start(host: &Host) -> Self {
        let (_tx, mut rx) = raw_channel(host, Duration::from_millis(20));
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (frames.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok(bytes) = rx.next() else { continue };
                let at = Instant::now();
                if let Ok(frame) = frames::parse(bytes)
                    && frame != Frame::Other
                {
                    f.lock().unwrap().push((at, frame));
                }
            }
        });
        Self {
            frames,
            stop,
            thread: Some(thread),
        }
    }

    /// Everything captured so far.
    pub fn frames(&self) -> Vec<(Instant, Frame)> {
        self.frames.lock().unwrap().clone()
    }

    /// Waits for the first frame matching `want`, returns when it arrived.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        want: impl Fn(&Frame) -> bool,
    ) -> Instant {
        wait::until_blocking(what, timeout, || {
            self.frames()
                .into_iter()
                .find(|(_, f)| want(f))
                .map(|(at, _)| at)
                .ok_or_else(|| "not seen yet".to_owned())
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whether `frame` is a gratuitous ARP for `ip` from `mac`, in the given form.
pub fn is_gratuitous_arp(frame: &Frame, ip: Ipv4Addr, mac: Mac, op: frames::ArpOp) -> bool {
    matches!(frame, Frame::Arp(a) if a.is_gratuitous() && a.sender_ip == ip && a.sender_mac == mac && a.op == op)
}

/// Sets a sysctl inside `host`'s namespace.
pub fn sysctl(host: &Host, key_value: &str) {
    let out = host
        .command("sysctl")
        .args(["-q", "-w", key_value])
        .output()
        .unwrap();
    assert!(out.status.success(), "sysctl {key_value}: {out:?}");
}
