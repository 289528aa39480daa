//! BFD against a real peer: BIRD 2 on a "router" host and the speaker's [`Bfd`] runner on a "node" host,
//! one lab segment with IPv4 and IPv6 ([`integration_tests::netlab`]). BIRD asks for the sessions with
//! `neighbor` lines in its `protocol bfd`, and is judged by `birdc show bfd sessions`; the node's side
//! by the `watch` of each session.
//!
//! The runner lives on a thread that entered the node's namespace, in a current-thread runtime of its
//! own; "crashing" it drops that runtime's future mid-flight, so nothing more is sent (no AdminDown), as
//! when the process dies. Detection times are asserted against the configured intervals, and printed.
//!
//! The tests share the machine's two cores with BIRD; they run one at a time (a lock) so that one test's
//! load does not blur another's timing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use integration_tests::bird::Bird;
use integration_tests::netlab::{HostSpec, LabNetwork, LabSpec};
use integration_tests::wait;
use lb_speaker::Metrics;
use lb_speaker::bfd::packet::ControlPacket;
use lb_speaker::bfd::{Bfd, BfdSettings, BfdState, Diagnostic, Profile, SOURCE_PORTS, State};
use lb_speaker::metrics::BfdDiscardLabels;
use nix::sched::{CloneFlags, setns};
use tokio::sync::{Mutex, oneshot, watch};
use tokio_util::sync::CancellationToken;

const ROUTER_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const NODE_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const ROUTER_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
const NODE_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
/// Both sides' intervals in the fast tests.
const INTERVAL: Duration = Duration::from_millis(100);
const MULTIPLIER: u32 = 3;
/// How late past a detection time a side may notice, for the scheduling of two processes on a shared
/// two-core machine (and, on BIRD's side, the polling of `birdc`).
const SLACK: Duration = Duration::from_millis(200);
/// Time for a session to come up: BIRD and we start at 1 s intervals (RFC 5880 §6.8.3).
const COME_UP: Duration = Duration::from_secs(10);

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

fn lab() -> LabNetwork {
    let host = |name: &str, ipv4, ipv6| HostSpec {
        name: name.to_owned(),
        ipv4,
        ipv6,
    };
    LabNetwork::create(&LabSpec {
        hosts: vec![
            host("router", ROUTER_V4, ROUTER_V6),
            host("node", NODE_V4, NODE_V6),
        ],
        ipv4_prefix: 24,
        ipv6_prefix: 64,
    })
    .expect("lab network")
}

/// Slow timers on our side: BIRD needs 10 x 1 s of silence to notice on its own.
fn slow_profile() -> Profile {
    Profile {
        receive_interval: INTERVAL,
        transmit_interval: Duration::from_secs(1),
        detect_multiplier: 10,
        passive: false,
    }
}

/// BIRD's detection time for us with [`slow_profile`].
const SLOW_DETECTION: Duration = Duration::from_secs(10);

fn fast_profile() -> Profile {
    Profile {
        receive_interval: INTERVAL,
        transmit_interval: INTERVAL,
        detect_multiplier: MULTIPLIER as u8,
        passive: false,
    }
}

/// BIRD in the router's namespace with a `protocol bfd` asking for sessions to the node's two addresses,
/// with `rx`/`tx` intervals and `multiplier`; killed on drop.
fn start_bird(lab: &LabNetwork, rx: Duration, tx: Duration, multiplier: u32) -> Bird {
    let config = format!(
        "router id {ROUTER_V4};\n\
         log stderr all;\n\
         protocol device {{ }}\n\
         protocol bfd {{\n\
         \x20 debug {{ states, events }};\n\
         \x20 interface \"eth0\" {{\n\
         \x20   min rx interval {rx} ms;\n\
         \x20   min tx interval {tx} ms;\n\
         \x20   idle tx interval 1 s;\n\
         \x20   multiplier {multiplier};\n\
         \x20 }};\n\
         \x20 neighbor {NODE_V4} dev \"eth0\";\n\
         \x20 neighbor {NODE_V6} dev \"eth0\";\n\
         }}\n",
        rx = rx.as_millis(),
        tx = tx.as_millis(),
    );
    Bird::start(lab.find("router").unwrap(), "bird-bfd", &config).unwrap_or_else(|e| panic!("{e}"))
}

/// What these tests read off BIRD's BFD, over the harness's `birdc`.
trait BfdView {
    /// `show bfd sessions`, a row per peer.
    fn sessions(&self) -> Result<Vec<Row>, String>;
    /// The row of `peer`.
    fn row(&self, peer: IpAddr) -> Result<Row, String>;
    /// Waits until BIRD shows the session to `peer` Up, sending every `interval` and timing us out
    /// after `timeout`: both sides' Poll Sequences are over and the Up timers in force.
    fn wait_up(&self, peer: IpAddr, interval: Duration, timeout: Duration);
    /// Polls `birdc` as fast as it answers until the session to `peer` leaves Up; how long that took
    /// from `since`, or None by `deadline`.
    fn time_until_not_up(
        &self,
        peer: IpAddr,
        since: Instant,
        deadline: Duration,
    ) -> Option<Duration>;
}

impl BfdView for Bird {
    fn sessions(&self) -> Result<Vec<Row>, String> {
        let text = self.show("bfd sessions").map_err(|e| e.to_string())?;
        Ok(text
            .lines()
            .filter_map(|line| {
                // IP address, Interface, State, Since (one or two words), Interval, Timeout.
                let fields: Vec<&str> = line.split_whitespace().collect();
                let [interval, timeout] = fields.get(fields.len().checked_sub(2)?..)? else {
                    return None;
                };
                Some(Row {
                    peer: fields.first()?.parse().ok()?,
                    state: (*fields.get(2)?).to_owned(),
                    interval: interval.parse().ok()?,
                    timeout: timeout.parse().ok()?,
                })
            })
            .collect())
    }

    fn row(&self, peer: IpAddr) -> Result<Row, String> {
        self.sessions()?
            .into_iter()
            .find(|row| row.peer == peer)
            .ok_or_else(|| format!("BIRD has no session to {peer}"))
    }

    fn wait_up(&self, peer: IpAddr, interval: Duration, timeout: Duration) {
        let want = (interval.as_secs_f64(), timeout.as_secs_f64());
        wait::until_blocking(
            &format!("BIRD's session to {peer} Up at {want:?}"),
            COME_UP,
            || {
                let row = self.row(peer)?;
                let close = |a: f64, b: f64| (a - b).abs() < 0.0005;
                if row.state == "Up" && close(row.interval, want.0) && close(row.timeout, want.1) {
                    Ok(())
                } else {
                    Err(format!("{row:?}"))
                }
            },
        )
        .unwrap_or_else(|e| panic!("{e}\nBIRD log:\n{}", self.log_tail(30)));
    }

    fn time_until_not_up(
        &self,
        peer: IpAddr,
        since: Instant,
        deadline: Duration,
    ) -> Option<Duration> {
        while since.elapsed() < deadline {
            if self.row(peer).is_ok_and(|row| row.state != "Up") {
                return Some(since.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }
}

/// A row of `birdc show bfd sessions`.
#[derive(Debug)]
struct Row {
    peer: IpAddr,
    state: String,
    /// BIRD's transmit interval, s.
    interval: f64,
    /// BIRD's detection time for us, s.
    timeout: f64,
}

/// The node's BFD runner on a thread inside the node's namespace.
struct Node {
    bfd: Bfd,
    metrics: Metrics,
    shutdown: CancellationToken,
    crash: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Node {
    fn start(lab: &LabNetwork) -> Self {
        let node = lab.find("node").unwrap();
        let netns = File::open(format!("/run/netns/{}", node.netns)).unwrap();
        let shutdown = CancellationToken::new();
        let (crash, crashed) = oneshot::channel::<()>();
        let (ready, handle) = std::sync::mpsc::channel();
        let stop = shutdown.clone();
        let metrics = Metrics::default();
        let runner_metrics = metrics.clone();
        let thread = std::thread::spawn(move || {
            setns(&netns, CloneFlags::CLONE_NEWNET).expect("entering the node's namespace");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let (bfd, runner) = Bfd::bind(BfdSettings::default(), runner_metrics).unwrap();
                ready.send(bfd).unwrap();
                tokio::select! {
                    () = runner.run(stop) => {}
                    // The runner's future is dropped where it stands: nothing more is sent.
                    _ = crashed => {}
                }
            });
        });
        let bfd = handle.recv().expect("the node's runner started");
        Self {
            bfd,
            metrics,
            shutdown,
            crash: Some(crash),
            thread: Some(thread),
        }
    }

    fn crash(&mut self) {
        if let Some(crash) = self.crash.take() {
            let _ = crash.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn wait_for(
    watch: &mut watch::Receiver<BfdState>,
    state: State,
    timeout: Duration,
) -> BfdState {
    let reached = tokio::time::timeout(timeout, watch.wait_for(|s| s.state == state))
        .await
        .map(|r| r.map(|s| *s));
    match reached {
        Ok(Ok(reached)) => reached,
        Ok(Err(_)) => panic!("the runner stopped"),
        Err(_) => panic!("not {state} within {timeout:?}: {}", *watch.borrow()),
    }
}

/// The sessions a test runs: to BIRD's IPv4 address from the node's (a bound local address), and to its
/// IPv6 address with the kernel choosing the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn peer(self) -> IpAddr {
        match self {
            Self::V4 => ROUTER_V4.into(),
            Self::V6 => ROUTER_V6.into(),
        }
    }

    fn local(self) -> Option<IpAddr> {
        match self {
            Self::V4 => Some(NODE_V4.into()),
            Self::V6 => None,
        }
    }

    /// The node as BIRD knows it.
    fn node(self) -> IpAddr {
        match self {
            Self::V4 => NODE_V4.into(),
            Self::V6 => NODE_V6.into(),
        }
    }
}

/// A lab with BIRD (fast timers) and the node's runner, with a session per family in `profile` Up on
/// both sides and the Up timers in force on both. Declared in drop order: sessions, runner, BIRD, lab.
struct UpWithBird {
    sessions: Vec<watch::Receiver<BfdState>>,
    node: Node,
    bird: Bird,
    lab: LabNetwork,
}

async fn up_with_bird(families: &[Family], profile: Profile) -> UpWithBird {
    let lab = lab();
    let bird = start_bird(&lab, INTERVAL, INTERVAL, MULTIPLIER);
    let node = Node::start(&lab);
    let mut sessions = Vec::new();
    for family in families {
        let session = node
            .bfd
            .add(family.peer(), family.local(), profile)
            .await
            .unwrap();
        assert_eq!(
            session.borrow().state,
            State::Down,
            "a new session starts Down"
        );
        sessions.push(session);
    }
    for session in &mut sessions {
        wait_for(session, State::Up, COME_UP).await;
    }
    // BIRD sends at the greater of its min tx and our min rx, and times us out after our multiplier
    // times the greater of its min rx and our min tx.
    let interval = INTERVAL.max(profile.receive_interval);
    let timeout = INTERVAL.max(profile.transmit_interval) * u32::from(profile.detect_multiplier);
    for family in families {
        bird.wait_up(family.node(), interval, timeout);
    }
    UpWithBird {
        sessions,
        node,
        bird,
        lab,
    }
}

#[tokio::test]
async fn sessions_come_up_on_both_sides_with_bird_over_ipv4_and_ipv6() {
    let _one = ONE_AT_A_TIME.lock().await;
    let up = up_with_bird(&[Family::V4, Family::V6], fast_profile()).await;
    for session in &up.sessions {
        assert_eq!(session.borrow().state, State::Up);
    }
    // RFC 5881 §4: each session sends from its own port in 49152-65535 (TTL 255 is checked by BIRD,
    // which drops single-hop packets with less).
    let node = up.lab.find("node").unwrap();
    let sockets = integration_tests::process::run_ok(node.command("ss").arg("-Huan")).unwrap();
    let source_ports: Vec<(String, u16)> = sockets
        .lines()
        .filter_map(|line| {
            let local = line.split_whitespace().nth(3)?;
            let (address, port) = local.rsplit_once(':')?;
            Some((address.to_owned(), port.parse().ok()?))
        })
        .filter(|(_, port)| SOURCE_PORTS.contains(port))
        .collect();
    assert_eq!(
        source_ports.len(),
        2,
        "one send socket a session: {sockets}"
    );
    assert!(
        source_ports
            .iter()
            .any(|(address, _)| *address == NODE_V4.to_string()),
        "the IPv4 session sends from its local address: {sockets}"
    );
    println!("BIRD: {}", up.bird.show("bfd sessions").unwrap_or_default());
}

#[tokio::test]
async fn the_node_declares_bird_down_within_the_detection_time_when_bird_dies() {
    let _one = ONE_AT_A_TIME.lock().await;
    let UpWithBird {
        mut sessions,
        node: _node,
        mut bird,
        lab: _lab,
    } = up_with_bird(&[Family::V4, Family::V6], fast_profile()).await;
    // BIRD's last packet left at most one interval before the kill: our detection time (its
    // multiplier x the greater of our min rx and its min tx) ends at most that long after the kill.
    let detection = INTERVAL * MULTIPLIER;
    let killed = Instant::now();
    bird.kill();
    for (session, family) in sessions.iter_mut().zip(["IPv4", "IPv6"]) {
        let down = wait_for(session, State::Down, detection + SLACK).await;
        let after = killed.elapsed();
        println!(
            "node: {family} session Down {after:?} after BIRD was killed; detection time {detection:?}"
        );
        assert_eq!(down.diagnostic, Diagnostic::ControlDetectionTimeExpired);
        assert!(after <= detection + SLACK, "{after:?}");
    }
}

#[tokio::test]
async fn bird_declares_the_node_down_within_its_detection_time_when_the_runner_dies() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut up = up_with_bird(&[Family::V4], fast_profile()).await;
    // BIRD's detection time for us: our multiplier x the greater of its min rx and our min tx.
    let detection = INTERVAL * MULTIPLIER;
    let crashed = Instant::now();
    up.node.crash();
    let after = up
        .bird
        .time_until_not_up(NODE_V4.into(), crashed, detection + SLACK)
        .unwrap_or_else(|| {
            panic!(
                "BIRD still Up after {:?}: {:?}",
                detection + SLACK,
                up.bird.sessions()
            )
        });
    println!(
        "BIRD: session Down {after:?} after the node's runner died; detection time {detection:?}"
    );
}

#[tokio::test]
async fn bird_declares_the_node_down_within_its_detection_time_when_the_node_link_goes_down() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut up = up_with_bird(&[Family::V6], fast_profile()).await;
    let detection = INTERVAL * MULTIPLIER;
    let netns = up.lab.find("node").unwrap().netns.clone();
    let cut = Instant::now();
    integration_tests::netlab::ip(&["-n", &netns, "link", "set", "eth0", "down"]).unwrap();
    let after = up
        .bird
        .time_until_not_up(NODE_V6.into(), cut, detection + SLACK)
        .unwrap_or_else(|| panic!("BIRD still Up: {:?}", up.bird.sessions()));
    println!(
        "BIRD: session Down {after:?} after the node's link went down; detection time {detection:?}"
    );
    let down = wait_for(&mut up.sessions[0], State::Down, detection + SLACK).await;
    assert_eq!(down.diagnostic, Diagnostic::ControlDetectionTimeExpired);
}

#[tokio::test]
async fn a_removed_session_tells_bird_admin_down_long_before_its_detection_time() {
    let _one = ONE_AT_A_TIME.lock().await;
    let up = up_with_bird(&[Family::V4], slow_profile()).await;
    let bird_detection = SLOW_DETECTION;
    let removed = Instant::now();
    assert!(
        up.node
            .bfd
            .remove(ROUTER_V4.into(), Some(NODE_V4.into()))
            .await
            .unwrap()
    );
    let state = *up.sessions[0].borrow();
    assert_eq!(
        (state.state, state.diagnostic),
        (State::AdminDown, Diagnostic::AdministrativelyDown)
    );
    let after = up
        .bird
        .time_until_not_up(NODE_V4.into(), removed, Duration::from_secs(1))
        .unwrap_or_else(|| {
            panic!(
                "BIRD still Up 1 s after the removal: {:?}",
                up.bird.sessions()
            )
        });
    println!(
        "BIRD: session Down {after:?} after the removal (its detection time: {bird_detection:?})"
    );
    println!("BIRD: {}", up.bird.show("bfd sessions").unwrap_or_default());
    assert!(
        !up.node
            .bfd
            .remove(ROUTER_V4.into(), Some(NODE_V4.into()))
            .await
            .unwrap(),
        "a session is removed once"
    );
}

#[tokio::test]
async fn stopping_the_runner_tells_bird_admin_down_long_before_its_detection_time() {
    let _one = ONE_AT_A_TIME.lock().await;
    let up = up_with_bird(&[Family::V4, Family::V6], slow_profile()).await;
    let stopped = Instant::now();
    up.node.shutdown.cancel();
    for family in [Family::V4, Family::V6] {
        let after = up
            .bird
            .time_until_not_up(family.node(), stopped, Duration::from_secs(1))
            .unwrap_or_else(|| {
                panic!("BIRD still Up 1 s after the stop: {:?}", up.bird.sessions())
            });
        println!(
            "BIRD: {family:?} session Down {after:?} after the runner stopped (its detection time: {SLOW_DETECTION:?})"
        );
    }
    println!("BIRD log:\n{}", up.bird.log_tail(8));
}

#[tokio::test]
async fn a_passive_session_stays_silent_until_bird_speaks_then_comes_up() {
    let _one = ONE_AT_A_TIME.lock().await;
    let lab = lab();
    let node = Node::start(&lab);
    let passive = Profile {
        passive: true,
        ..fast_profile()
    };
    let mut v4 = node
        .bfd
        .add(ROUTER_V4.into(), Some(NODE_V4.into()), passive)
        .await
        .unwrap();
    // An active session would have sent its first Down at once and another within 1 s.
    let quiet = tokio::time::timeout(Duration::from_millis(1500), v4.changed()).await;
    assert!(quiet.is_err(), "no state change without a peer");
    assert_eq!(
        node.metrics.bfd_packets_sent.get(),
        0,
        "a passive session waits"
    );
    let bird = start_bird(&lab, INTERVAL, INTERVAL, MULTIPLIER);
    wait_for(&mut v4, State::Up, COME_UP).await;
    bird.wait_up(NODE_V4.into(), INTERVAL, INTERVAL * MULTIPLIER);
    assert!(node.metrics.bfd_packets_sent.get() > 0);
}

/// Sends `bytes` to the node's BFD port from the router's address with `ttl`.
fn send_from_router(lab: &LabNetwork, ttl: u32, bytes: Vec<u8>) {
    lab.find("router")
        .unwrap()
        .run(move || {
            let socket = std::net::UdpSocket::bind((ROUTER_V4, 0)).unwrap();
            socket.set_ttl(ttl).unwrap();
            socket.send_to(&bytes, (NODE_V4, 3784)).unwrap();
        })
        .unwrap();
}

#[tokio::test]
async fn packets_from_beyond_the_link_or_breaking_the_rules_are_discarded_and_counted() {
    let _one = ONE_AT_A_TIME.lock().await;
    let up = up_with_bird(&[Family::V4], fast_profile()).await;
    // From BIRD's address, a Down that would take the session down through its addresses.
    let down = ControlPacket {
        diagnostic: Diagnostic::None,
        state: State::Down,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: 77,
        your_discriminator: 0,
        desired_min_tx_us: 1_000_000,
        required_min_rx_us: 1_000_000,
        required_min_echo_rx_us: 0,
    }
    .encode();
    send_from_router(&up.lab, 64, down.to_vec());
    let mut authenticated = down;
    authenticated[1] |= 0x04;
    send_from_router(&up.lab, 255, authenticated.to_vec());
    let mut unknown = down;
    unknown[1] = 0xc0; // Up
    unknown[8..12].copy_from_slice(&12345u32.to_be_bytes());
    send_from_router(&up.lab, 255, unknown.to_vec());
    send_from_router(&up.lab, 255, vec![0x20; 10]);
    let metrics = up.node.metrics.clone();
    let discarded = |reason| {
        metrics
            .bfd_packets_discarded
            .get_or_create(&BfdDiscardLabels { reason })
            .get()
    };
    wait::until("the four packets discarded", Duration::from_secs(5), || {
        let counts = ["ttl", "authentication", "your_discriminator", "short"].map(discarded);
        async move {
            if counts.iter().all(|&n| n == 1) {
                Ok(())
            } else {
                Err(format!("{counts:?}"))
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        up.sessions[0].borrow().state,
        State::Up,
        "the TTL-64 Down was not believed"
    );
}
