//! A stand-in speaker for the controller's tests: a real tonic client following the speaker's half of
//! `announce.proto` (Hello, then a Report, an acknowledgement after every set, heartbeats), with knobs to
//! misbehave (no acks, slow acks, silence) and a log of what it received.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::wait::until;
use proto::announce::v1 as pb;
use proto::announce::v1::announcer_client::AnnouncerClient;
use proto::speaker_messages;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// How often the stand-in sends heartbeats: a fifth of the shortest lease the tests use (300 ms).
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(60);
/// How long `wait_for` waits.
pub const WAIT: Duration = Duration::from_secs(5);

/// The stand-in speakers' monotonic clock (ms since the first call, + 1), stamped on every message as
/// `sent_at_ms` when it is built, just before it is sent.
pub fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub async fn plain_channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A mutual-TLS channel with a speaker's client certificate, as the real speaker dials.
pub async fn tls_channel(addr: SocketAddr, ca_pem: &str, cert_pem: &str, key_pem: &str) -> Channel {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(cert_pem, key_pem))
        .domain_name(addr.ip().to_string());
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// How the stand-in speaker behaves.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// Acknowledge every applied set (after `ack_delay`).
    pub ack: bool,
    pub ack_delay: Duration,
    /// Send a heartbeat every lease/5.
    pub heartbeat: bool,
}

/// A message from the controller, with when it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub message: pb::ControllerMessage,
}

/// What the stand-in speaker saw and did.
#[derive(Debug, Default)]
pub struct Log {
    pub received: Vec<Received>,
    /// When it sent each acknowledgement, by generation.
    pub acked_at: BTreeMap<u64, Instant>,
    pub applied: u64,
    pub ended: Option<Result<(), tonic::Status>>,
}

/// A tonic client that follows the speaker's half of the protocol.
pub struct FakeSpeaker {
    pub tx: Arc<Mutex<Option<mpsc::UnboundedSender<pb::SpeakerMessage>>>>,
    pub log: Arc<Mutex<Log>>,
    pub behaviour: Arc<Mutex<Behaviour>>,
    pub leaving: Arc<Mutex<bool>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSpeaker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn hello(node: &str, held_generation: u64) -> pb::SpeakerMessage {
    let interfaces = vec![pb::Interface {
        name: "eth0".into(),
        mac: vec![2, 0, 0, 0, 0, 1],
        addresses: vec!["10.10.39.10/24".into()],
        up: true,
    }];
    speaker_messages::hello(
        clock_ms(),
        speaker_messages::hello_of(node, held_generation, interfaces),
    )
}

pub fn report(applied: u64, announcing: &[&str]) -> pb::SpeakerMessage {
    let announcing = announcing
        .iter()
        .map(|a| speaker_messages::announcement(a, "eth0"));
    speaker_messages::report(clock_ms(), applied, announcing)
}

pub fn heartbeat(applied: u64) -> pb::SpeakerMessage {
    speaker_messages::heartbeat(clock_ms(), applied)
}

pub const DEFAULT: Behaviour = Behaviour {
    ack: true,
    ack_delay: Duration::ZERO,
    heartbeat: true,
};

impl FakeSpeaker {
    /// Opens a session as `node`, reporting `announcing` from an earlier session held as `held`.
    pub async fn connect(
        channel: Channel,
        node: &str,
        held: u64,
        announcing: &[&str],
    ) -> Result<Self, tonic::Status> {
        Self::connect_with_token(channel, node, held, announcing, None).await
    }

    /// Like [`FakeSpeaker::connect`], sending `token` as `authorization: Bearer` (what the speaker
    /// reads from its projected ServiceAccount token).
    pub async fn connect_with_token(
        channel: Channel,
        node: &str,
        held: u64,
        announcing: &[&str],
        token: Option<&str>,
    ) -> Result<Self, tonic::Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(hello(node, held)).unwrap();
        tx.send(report(held, announcing)).unwrap();
        let mut client = AnnouncerClient::new(channel);
        let mut request = tonic::Request::new(UnboundedReceiverStream::new(rx));
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let mut inbound = client.session(request).await?.into_inner();
        let tx = Arc::new(Mutex::new(Some(tx)));
        let log = Arc::new(Mutex::new(Log {
            applied: held,
            ..Log::default()
        }));
        let behaviour = Arc::new(Mutex::new(DEFAULT));
        let leaving = Arc::new(Mutex::new(false));
        let task = {
            let (tx, log, behaviour, leaving) =
                (tx.clone(), log.clone(), behaviour.clone(), leaving.clone());
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(HEARTBEAT_EVERY);
                loop {
                    tokio::select! {
                        _ = ticker.tick() => {
                            let applied = log.lock().unwrap().applied;
                            let beat = behaviour.lock().unwrap().heartbeat;
                            if beat && let Some(tx) = tx.lock().unwrap().as_ref() {
                                let _ = tx.send(heartbeat(applied));
                            }
                        }
                        next = inbound.message() => {
                            let message = match next {
                                Ok(Some(message)) => message,
                                Ok(None) => { log.lock().unwrap().ended = Some(Ok(())); return; }
                                Err(status) => { log.lock().unwrap().ended = Some(Err(status)); return; }
                            };
                            let set = match &message.body {
                                Some(pb::controller_message::Body::Snapshot(set)) => Some(set.clone()),
                                _ => None,
                            };
                            log.lock().unwrap().received.push(Received { at: Instant::now(), message });
                            let Some(set) = set else { continue };
                            log.lock().unwrap().applied = set.generation;
                            let b = *behaviour.lock().unwrap();
                            if !b.ack {
                                continue;
                            }
                            if !b.ack_delay.is_zero() {
                                tokio::time::sleep(b.ack_delay).await;
                            }
                            log.lock().unwrap().acked_at.insert(set.generation, Instant::now());
                            let mut tx = tx.lock().unwrap();
                            if let Some(sender) = tx.as_ref() {
                                let _ = sender.send(heartbeat(set.generation));
                            }
                            if *leaving.lock().unwrap() && set.assignments.is_empty() {
                                // Applied the empty set after Leaving: close our half and exit.
                                tx.take();
                            }
                        }
                    }
                }
            })
        };
        Ok(Self {
            tx,
            log,
            behaviour,
            leaving,
            task,
        })
    }

    /// The newest BGP configuration received, if any.
    pub fn bgp(&self) -> Option<pb::BgpConfig> {
        self.log
            .lock()
            .unwrap()
            .received
            .iter()
            .rev()
            .find_map(|r| match &r.message.body {
                Some(pb::controller_message::Body::Bgp(config)) => Some(config.clone()),
                _ => None,
            })
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    pub fn send(&self, message: pb::SpeakerMessage) {
        if let Some(tx) = self.tx.lock().unwrap().as_ref() {
            tx.send(message).unwrap();
        }
    }

    pub fn leave(&self) {
        *self.leaving.lock().unwrap() = true;
        self.send(speaker_messages::leaving(clock_ms()));
    }

    /// Snapshots received, as (arrival, generation, addresses).
    pub fn snapshots(&self) -> Vec<(Instant, u64, Vec<IpAddr>)> {
        self.log
            .lock()
            .unwrap()
            .received
            .iter()
            .filter_map(|r| match &r.message.body {
                Some(pb::controller_message::Body::Snapshot(set)) => Some((
                    r.at,
                    set.generation,
                    set.assignments.iter().map(|a| ip(&a.address)).collect(),
                )),
                _ => None,
            })
            .collect()
    }

    /// When the first snapshot holding `address` arrived.
    pub fn got(&self, address: &str) -> Option<Instant> {
        self.snapshots()
            .into_iter()
            .find(|(_, _, set)| set.contains(&ip(address)))
            .map(|(at, _, _)| at)
    }

    pub fn last_lease_at(&self) -> Option<Instant> {
        self.log.lock().unwrap().received.last().map(|r| r.at)
    }

    pub fn ended(&self) -> Option<Result<(), tonic::Status>> {
        self.log.lock().unwrap().ended.clone()
    }

    pub async fn wait_for(&self, address: &str) -> Instant {
        until(&format!("a snapshot with {address}"), WAIT, || async {
            self.got(address)
                .ok_or_else(|| format!("snapshots so far: {:?}", self.snapshots()))
        })
        .await
        .unwrap()
    }

    /// Ends the session abruptly, as when the speaker process dies.
    pub fn reset(self) {
        self.task.abort();
        self.tx.lock().unwrap().take();
    }
}

impl FakeSpeaker {
    /// The latest end of any lease received, on the stand-ins' clock: echo_ms + valid_for_ms (step 3).
    pub fn newest_lease_end_ms(&self) -> Option<u64> {
        self.log
            .lock()
            .unwrap()
            .received
            .iter()
            .filter_map(|r| match &r.message.body {
                Some(pb::controller_message::Body::Snapshot(set)) => set.lease,
                Some(pb::controller_message::Body::Renewal(renewal)) => renewal.lease,
                _ => None,
            })
            .filter(|lease| lease.echo_ms > 0)
            .map(|lease| lease.echo_ms + u64::from(lease.valid_for_ms))
            .max()
    }

    /// The addresses of the newest snapshot received.
    pub fn current(&self) -> Vec<IpAddr> {
        self.snapshots()
            .last()
            .map(|(_, _, set)| set.clone())
            .unwrap_or_default()
    }
}
