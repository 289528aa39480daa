//! The BGP speaker against a real router: BIRD 2 in a lab namespace (`rtr`), the crate's `BgpSpeaker` in
//! node namespaces (`n1`, `n2`) on the same segment, each driven from a thread that entered its namespace
//! and runs a current-thread tokio runtime. Every verdict is the router's own view (`birdc show route
//! all`, `show protocols`). The path through lb-controller is tested elsewhere; here only the BGP module.
//! Needs root (network namespaces) and BIRD (`scripts/install-deps`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use integration_tests::bird::Bird;
use integration_tests::netlab::{Host, HostSpec, LabNetwork, LabSpec, SealedNamespace};
use integration_tests::process::{Process, Scratch};
use integration_tests::wait;
use lb_speaker::Metrics;
use lb_speaker::bgp::message::{self, Capabilities, Message, Open};
use lb_speaker::bgp::{BgpSpeaker, ForwardingPaths, PathState};
use nix::sched::{CloneFlags, setns};
use proto::announce::v1::controller_message::Body as ControllerBody;
use proto::announce::v1::speaker_message::Body as SpeakerBody;
use proto::announce::v1::{BgpConfig, BgpPeer, BgpRoute, BgpSessionState, LargeCommunity};
use support::{StandIn, start_speaker};

const ROUTER_AS: u32 = 64500;
const N1_AS: u32 = 64501;
const N2_AS: u32 = 64502;
const V4: &str = "10.10.39.200/32";
const V6: &str = "fd10:39::200/128";
const UP_TIMEOUT: Duration = Duration::from_secs(20);
const SPEAKER: &str = env!("CARGO_BIN_EXE_lb-speaker");

fn lab() -> LabNetwork {
    let host = |name: &str, last: u8| HostSpec {
        name: name.to_owned(),
        ipv4: Ipv4Addr::new(10, 20, 0, last),
        // fd20::11 for 10.20.0.11: the decimal digits read as hex.
        ipv6: Ipv6Addr::new(
            0xfd20,
            0,
            0,
            0,
            0,
            0,
            0,
            u16::from_str_radix(&last.to_string(), 16).unwrap(),
        ),
    };
    LabNetwork::create(&LabSpec {
        hosts: vec![host("rtr", 1), host("n1", 11), host("n2", 12)],
        ipv4_prefix: 24,
        ipv6_prefix: 64,
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// One `protocol bgp` of the router, named after the node.
struct Neighbor {
    name: &'static str,
    address: IpAddr,
    asn: u32,
    /// Extra lines (`password`, `hold time`, `graceful restart`).
    extra: &'static str,
}

/// BIRD in the router's namespace with a `protocol bgp` per neighbor (passive, importing everything),
/// logging to its harness log; killed on drop.
fn start_bird(router: &Host, scratch: &Scratch, neighbors: &[Neighbor]) -> Bird {
    let mut config = format!(
        "router id {};\nlog stderr all;\nprotocol device {{ }}\nprotocol direct {{ ipv4; ipv6; }}\n",
        router.ipv4
    );
    for n in neighbors {
        config.push_str(&format!(
            "protocol bgp {name} {{\n  local {local} as {ROUTER_AS};\n  neighbor {address} as {asn};\n  \
             passive on;\n  {extra}\n  ipv4 {{ import all; export none; }};\n  \
             ipv6 {{ import all; export none; }};\n}}\n",
            name = n.name,
            local = if n.address.is_ipv4() {
                IpAddr::V4(router.ipv4)
            } else {
                IpAddr::V6(router.ipv6)
            },
            address = n.address,
            asn = n.asn,
            extra = n.extra,
        ));
    }
    Bird::start_in(router, "bird", scratch.path(), &config).unwrap_or_else(|e| panic!("{e}"))
}

/// The paths of one prefix in `show route <prefix> table <t> all`, one text block a path.
fn split_paths(out: &str) -> Vec<String> {
    let mut paths: Vec<String> = Vec::new();
    for line in out.lines() {
        if line.contains(" unicast [") || line.contains(" blackhole [") {
            paths.push(String::new());
        }
        if let Some(path) = paths.last_mut() {
            path.push_str(line.trim());
            path.push('\n');
        }
    }
    paths
}

/// What these tests read off the router, over the harness's `birdc`.
trait RouterView {
    /// The routes BIRD holds for exactly `prefix`, one text block a path.
    fn paths(&self, prefix: &str) -> Vec<String>;
    /// "Import updates: received" of the channel (`ipv4`, `ipv6`) of protocol `n1`.
    fn import_updates_received(&self, channel: &str) -> usize;
    /// `show protocols all <name>`.
    fn protocol(&self, name: &str) -> String;
    /// Waits until `prefix` has exactly `count` paths; returns them.
    fn wait_paths(&self, prefix: &str, count: usize, timeout: Duration) -> Vec<String>;
}

/// `show route <prefix> table <master4|master6> all`.
fn show_route(bird: &Bird, prefix: &str) -> Result<String, String> {
    let table = if prefix.contains(':') {
        "master6"
    } else {
        "master4"
    };
    bird.birdc(&["show", "route", prefix, "table", table, "all"])
        .map_err(|e| e.to_string())
}

impl RouterView for Bird {
    fn paths(&self, prefix: &str) -> Vec<String> {
        split_paths(&show_route(self, prefix).unwrap_or_else(|e| panic!("{e}")))
    }

    fn import_updates_received(&self, channel: &str) -> usize {
        let out = self.protocol("n1");
        out.split(&format!("Channel {channel}"))
            .nth(1)
            .and_then(|section| {
                section
                    .lines()
                    .find(|l| l.trim_start().starts_with("Import updates:"))
            })
            .and_then(|line| line.split_whitespace().nth(2))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    fn protocol(&self, name: &str) -> String {
        self.show(&format!("protocols all {name}"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn wait_paths(&self, prefix: &str, count: usize, timeout: Duration) -> Vec<String> {
        wait::until_blocking(
            &format!("{count} path(s) to {prefix} in BIRD"),
            timeout,
            || {
                let paths = split_paths(&show_route(self, prefix)?);
                if paths.len() == count {
                    Ok(paths)
                } else {
                    Err(format!("{paths:?}"))
                }
            },
        )
        .unwrap()
    }
}

enum Order {
    Apply(BgpConfig),
    States(std::sync::mpsc::Sender<Vec<BgpSessionState>>),
    Stop(std::sync::mpsc::Sender<()>),
}

/// A `BgpSpeaker` running in a node's namespace, on a thread of its own; dropping it drops the speaker
/// without a graceful stop (its sockets close, as in a crash).
struct Node {
    commands: Option<tokio::sync::mpsc::UnboundedSender<Order>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Node {
    fn start(host: &Host) -> Self {
        let netns = File::open(format!("/run/netns/{}", host.netns)).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let thread = std::thread::spawn(move || {
            setns(&netns, CloneFlags::CLONE_NEWNET).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut bgp = BgpSpeaker::new(Metrics::default());
                while let Some(command) = rx.recv().await {
                    match command {
                        Order::Apply(config) => bgp.apply(&config),
                        Order::States(reply) => {
                            let _ = reply.send(bgp.states());
                        }
                        Order::Stop(reply) => {
                            bgp.stop().await;
                            let _ = reply.send(());
                        }
                    }
                }
            });
        });
        Self {
            commands: Some(tx),
            thread: Some(thread),
        }
    }

    fn send(&self, command: Order) {
        self.commands.as_ref().unwrap().send(command).unwrap();
    }

    fn apply(&self, config: BgpConfig) {
        self.send(Order::Apply(config));
    }

    fn states(&self) -> Vec<BgpSessionState> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.send(Order::States(tx));
        rx.recv().unwrap()
    }

    /// The speaker's graceful stop, as on the process's shutdown.
    fn stop(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.send(Order::Stop(tx));
        rx.recv().unwrap();
    }

    fn wait_state(&self, state: &str) -> BgpSessionState {
        wait::until_blocking(
            &format!("the speaker's session {state}"),
            UP_TIMEOUT,
            || {
                let states = self.states();
                states
                    .iter()
                    .find(|s| s.state == state)
                    .cloned()
                    .ok_or_else(|| format!("{states:?}"))
            },
        )
        .unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.commands = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn peer(my_asn: u32, node: &Host) -> BgpPeer {
    BgpPeer {
        name: "rtr".to_owned(),
        address: "10.20.0.1".to_owned(),
        my_asn,
        peer_asn: ROUTER_AS,
        router_id: node.ipv4.to_string(),
        hold_time_s: 9,
        ..BgpPeer::default()
    }
}

fn route(prefix: &str) -> BgpRoute {
    BgpRoute {
        prefix: prefix.to_owned(),
        ..BgpRoute::default()
    }
}

fn config(generation: u64, peer: BgpPeer, routes: Vec<BgpRoute>) -> BgpConfig {
    BgpConfig {
        generation,
        peers: vec![peer],
        routes,
    }
}

fn n1(extra: &'static str) -> Neighbor {
    Neighbor {
        name: "n1",
        address: IpAddr::V4(Ipv4Addr::new(10, 20, 0, 11)),
        asn: N1_AS,
        extra,
    }
}

/// A lab, BIRD with `neighbors`, and a speaker on n1 (fields drop in order: speaker, BIRD, namespaces).
struct Bed {
    node: Node,
    bird: Bird,
    _scratch: Scratch,
    lab: LabNetwork,
}

impl Bed {
    fn new(what: &str, neighbors: &[Neighbor]) -> Self {
        let lab = lab();
        let scratch = Scratch::new(what).unwrap();
        let bird = start_bird(lab.host("rtr").unwrap(), &scratch, neighbors);
        let node = Node::start(lab.host("n1").unwrap());
        Self {
            node,
            bird,
            _scratch: scratch,
            lab,
        }
    }

    fn host(&self, name: &str) -> &Host {
        self.lab.host(name).unwrap()
    }
}

#[test]
fn ebgp_routes_reach_the_router_with_next_hop_as_path_and_communities() {
    let bed = Bed::new("bgp-ebgp", &[n1("")]);
    let mut v4 = route(V4);
    v4.communities = vec![(ROUTER_AS << 16) | 1];
    v4.large_communities = vec![LargeCommunity {
        global_admin: ROUTER_AS,
        local_data_1: 1,
        local_data_2: 2,
    }];
    v4.local_pref = Some(300);
    bed.node
        .apply(config(1, peer(N1_AS, bed.host("n1")), vec![v4, route(V6)]));
    bed.bird.wait_established("n1", UP_TIMEOUT).unwrap();
    let paths = bed.bird.wait_paths(V4, 1, UP_TIMEOUT);
    let path = &paths[0];
    eprintln!("BIRD's path to {V4}:\n{path}");
    assert!(path.contains("via 10.20.0.11 on eth0"), "{path}");
    assert!(path.contains("BGP.as_path: 64501\n"), "{path}");
    assert!(path.contains("BGP.origin: IGP"), "{path}");
    assert!(path.contains("BGP.community: (64500,1)"), "{path}");
    assert!(
        path.contains("BGP.large_community: (64500, 1, 2)"),
        "{path}"
    );
    // LOCAL_PREF goes to iBGP peers only.
    assert!(!path.contains("BGP.local_pref: 300"), "{path}");
    let paths = bed.bird.wait_paths(V6, 1, UP_TIMEOUT);
    eprintln!("BIRD's path to {V6}:\n{}", paths[0]);
    assert!(paths[0].contains("via fd20::11 on eth0"), "{}", paths[0]);
    let state = bed.node.wait_state("Established");
    assert_eq!(state.advertised, 2);
    assert_eq!(state.peer, "rtr");
}

#[test]
fn ibgp_routes_carry_local_pref_and_an_empty_as_path() {
    let neighbor = Neighbor {
        asn: ROUTER_AS,
        ..n1("")
    };
    let bed = Bed::new("bgp-ibgp", &[neighbor]);
    let mut v4 = route(V4);
    v4.local_pref = Some(300);
    bed.node
        .apply(config(1, peer(ROUTER_AS, bed.host("n1")), vec![v4]));
    bed.bird.wait_established("n1", UP_TIMEOUT).unwrap();
    let path = bed.bird.wait_paths(V4, 1, UP_TIMEOUT).remove(0);
    eprintln!("BIRD's iBGP path to {V4}:\n{path}");
    assert!(path.contains("BGP.local_pref: 300"), "{path}");
    assert!(
        path.contains("BGP.as_path: \n") || path.contains("BGP.as_path:\n"),
        "{path}"
    );
    assert!(path.contains("via 10.20.0.11 on eth0"), "{path}");
}

#[test]
fn a_removed_route_is_withdrawn() {
    let bed = Bed::new("bgp-withdraw", &[n1("")]);
    let n1_peer = peer(N1_AS, bed.host("n1"));
    bed.node.apply(config(
        1,
        n1_peer.clone(),
        vec![route(V4), route("10.10.39.201/32"), route(V6)],
    ));
    bed.bird.wait_paths(V4, 1, UP_TIMEOUT);
    bed.bird.wait_paths(V6, 1, UP_TIMEOUT);
    bed.node
        .apply(config(2, n1_peer, vec![route("10.10.39.201/32")]));
    bed.bird.wait_paths(V4, 0, Duration::from_secs(5));
    bed.bird.wait_paths(V6, 0, Duration::from_secs(5));
    assert_eq!(bed.bird.paths("10.10.39.201/32").len(), 1);
    wait::until_blocking("the report to count 1 prefix", UP_TIMEOUT, || {
        let states = bed.node.states();
        (states[0].advertised == 1)
            .then_some(())
            .ok_or(format!("{states:?}"))
    })
    .unwrap();
}

#[test]
fn ipv4_and_ipv6_routes_from_two_nodes_give_the_router_two_paths() {
    let n2 = Neighbor {
        name: "n2",
        address: IpAddr::V4(Ipv4Addr::new(10, 20, 0, 12)),
        asn: N2_AS,
        extra: "",
    };
    let bed = Bed::new("bgp-ecmp", &[n1(""), n2]);
    let node2 = Node::start(bed.host("n2"));
    let routes = vec![route(V4), route(V6)];
    bed.node
        .apply(config(1, peer(N1_AS, bed.host("n1")), routes.clone()));
    node2.apply(config(1, peer(N2_AS, bed.host("n2")), routes));
    let v4 = bed.bird.wait_paths(V4, 2, UP_TIMEOUT);
    let v6 = bed.bird.wait_paths(V6, 2, UP_TIMEOUT);
    eprintln!(
        "BIRD's paths to {V4}:\n{}\nto {V6}:\n{}",
        v4.join(""),
        v6.join("")
    );
    for via in ["via 10.20.0.11 on eth0", "via 10.20.0.12 on eth0"] {
        assert!(v4.iter().any(|p| p.contains(via)), "{v4:?}");
    }
    for via in ["via fd20::11 on eth0", "via fd20::12 on eth0"] {
        assert!(v6.iter().any(|p| p.contains(via)), "{v6:?}");
    }
    drop(node2);
}

#[test]
fn stopping_the_speaker_without_graceful_restart_withdraws_at_once() {
    let bed = Bed::new("bgp-stop", &[n1("")]);
    bed.node
        .apply(config(1, peer(N1_AS, bed.host("n1")), vec![route(V4)]));
    bed.bird.wait_paths(V4, 1, UP_TIMEOUT);
    bed.node.stop();
    // Far below the 9 s hold time: the NOTIFICATION (Cease) made BIRD drop the session and the routes.
    bed.bird.wait_paths(V4, 0, Duration::from_secs(2));
    let protocol = bed.bird.protocol("n1");
    eprintln!("{protocol}");
    assert!(protocol.contains("Administrative shutdown"), "{protocol}");
}

#[test]
fn a_graceful_stop_keeps_the_route_stale_until_the_speaker_returns_with_end_of_rib() {
    let bed = Bed::new(
        "bgp-gr",
        &[n1("graceful restart on;\n  debug { states, packets };")],
    );
    let end_of_ribs = || bed.bird.log().matches("Got END-OF-RIB").count();
    let mut gr_peer = peer(N1_AS, bed.host("n1"));
    gr_peer.graceful_restart_s = 120;
    bed.node.apply(config(1, gr_peer.clone(), vec![route(V4)]));
    bed.bird.wait_paths(V4, 1, UP_TIMEOUT);
    // One End-of-RIB per family after the initial routes.
    wait::until_blocking("End-of-RIB for IPv4 and IPv6", UP_TIMEOUT, || {
        let n = end_of_ribs();
        (n == 2).then_some(()).ok_or(format!("{n} seen"))
    })
    .unwrap();
    let established = bed.bird.protocol("n1");
    assert!(
        established.contains("Restart recovery"),
        "the Restart-State bit: {established}"
    );
    bed.node.stop();
    wait::until_blocking("BIRD to keep our routes as stale", UP_TIMEOUT, || {
        let out = bed.bird.protocol("n1");
        out.contains("Neighbor graceful restart active")
            .then_some(())
            .ok_or(out)
    })
    .unwrap();
    let protocol = bed.bird.protocol("n1");
    let paths = bed.bird.paths(V4);
    eprintln!("after the graceful stop:\n{protocol}\n{}", paths.join(""));
    assert!(
        protocol.contains("Socket: Connection closed"),
        "closed without a NOTIFICATION: {protocol}"
    );
    assert_eq!(paths.len(), 1, "the route must be kept: {paths:?}");
    // The speaker process comes back (a new BgpSpeaker) and re-advertises; End-of-RIB ends the restart.
    let again = Node::start(bed.host("n1"));
    again.apply(config(1, gr_peer, vec![route(V4)]));
    bed.bird.wait_established("n1", UP_TIMEOUT).unwrap();
    wait::until_blocking("BIRD to end the graceful restart", UP_TIMEOUT, || {
        let protocol = bed.bird.protocol("n1");
        let done = end_of_ribs() == 4
            && !protocol.contains("graceful restart active")
            && bed.bird.paths(V4).len() == 1;
        done.then_some(()).ok_or(protocol)
    })
    .unwrap();
    eprintln!(
        "after the return:\n{}\n{}",
        bed.bird.protocol("n1"),
        bed.bird.paths(V4).join("")
    );
}

#[test]
fn an_md5_password_brings_the_session_up_only_when_it_matches() {
    let bed = Bed::new("bgp-md5", &[n1("password \"s3cret\";")]);
    let mut good = peer(N1_AS, bed.host("n1"));
    good.password = "s3cret".to_owned();
    bed.node.apply(config(1, good.clone(), vec![route(V4)]));
    bed.bird.wait_established("n1", UP_TIMEOUT).unwrap();
    bed.bird.wait_paths(V4, 1, UP_TIMEOUT);
    // A wrong key: the router's kernel drops the unsigned-as-expected SYNs, so the dial times out.
    let mut bad = good;
    bad.password = "wrong".to_owned();
    bad.connect_retry_s = 1;
    bed.node.apply(config(2, bad, vec![route(V4)]));
    let state = wait::until_blocking(
        "the dial with a wrong key to fail",
        Duration::from_secs(30),
        || {
            let states = bed.node.states();
            states
                .iter()
                .find(|s| s.last_error.contains("timed out"))
                .cloned()
                .ok_or(format!("{states:?}"))
        },
    )
    .unwrap();
    eprintln!("with a wrong key: {state:?}");
    assert_ne!(state.state, "Established");
    let protocol = bed.bird.protocol("n1");
    assert!(!protocol.contains("Established"), "{protocol}");
    // The old session was ended for the settings change.
    assert!(protocol.contains("Administrative reset"), "{protocol}");
    assert!(bed.bird.paths(V4).is_empty());
}

#[test]
fn a_cut_off_node_loses_its_route_after_the_hold_time() {
    let bed = Bed::new("bgp-hold", &[n1("hold time 3;")]);
    let mut short = peer(N1_AS, bed.host("n1"));
    short.hold_time_s = 3;
    bed.node.apply(config(1, short, vec![route(V4)]));
    bed.bird.wait_paths(V4, 1, UP_TIMEOUT);
    let node = bed.host("n1");
    integration_tests::netlab::ip(&["-n", &node.netns, "link", "set", "eth0", "down"]).unwrap();
    let cut = std::time::Instant::now();
    bed.bird.wait_paths(V4, 0, Duration::from_secs(8));
    let after = cut.elapsed();
    eprintln!(
        "route gone {after:?} after the cut; {}",
        bed.bird.protocol("n1")
    );
    assert!(after >= Duration::from_secs(1), "gone too early: {after:?}");
    let protocol = bed.bird.protocol("n1");
    assert!(protocol.contains("Hold timer expired"), "{protocol}");
}

/// The whole speaker: the `lb-speaker` binary takes the BgpConfig from its controller session, reports the
/// session in Report.bgp_sessions, and on SIGTERM (no graceful restart) tells the router to withdraw.
#[test]
fn the_speaker_binary_applies_the_controllers_bgp_config_and_reports_the_session() {
    let lab = lab();
    let scratch = Scratch::new("bgp-binary").unwrap();
    let router = lab.host("rtr").unwrap();
    let n1_host = lab.host("n1").unwrap();
    let bird = start_bird(router, &scratch, &[n1("")]);
    let controller = StandIn::start_in(router, None);
    let mut speaker = start_speaker(SPEAKER, n1_host, &scratch, &controller.url("http"), |s| s);
    let session = controller.wait_session("n1", 0, UP_TIMEOUT);
    session.assign(&[], 10_000);
    session.send(ControllerBody::Bgp(config(
        1,
        peer(N1_AS, n1_host),
        vec![route(V4)],
    )));
    bird.wait_paths(V4, 1, UP_TIMEOUT);
    let reported = session.wait_for(
        "a Report with the session Established",
        UP_TIMEOUT,
        |messages| {
            messages.iter().rev().find_map(|m| match &m.body {
                Some(SpeakerBody::Report(r))
                    if r.bgp_sessions
                        .iter()
                        .any(|s| s.state == "Established" && s.advertised == 1) =>
                {
                    Some(r.bgp_sessions.clone())
                }
                _ => None,
            })
        },
    );
    eprintln!("reported: {reported:?}");
    assert_eq!(reported[0].peer, "rtr");
    speaker.stop(Duration::from_secs(15));
    bird.wait_paths(V4, 0, Duration::from_secs(2));
    let protocol = bird.protocol("n1");
    assert!(protocol.contains("Administrative shutdown"), "{protocol}");
}

/// Reads one whole message off `stream`.
async fn read_message(stream: &mut tokio::net::TcpStream) -> Message {
    next_message(stream).await.expect("the connection ended")
}

/// Reads one whole message off `stream`, `None` once the connection ended.
async fn next_message(stream: &mut tokio::net::TcpStream) -> Option<Message> {
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; message::HEADER];
    stream.read_exact(&mut header).await.ok()?;
    let length = message::frame_length(&header).unwrap();
    let mut bytes = header.to_vec();
    bytes.resize(length, 0);
    stream
        .read_exact(&mut bytes[message::HEADER..])
        .await
        .unwrap();
    Some(message::decode(&bytes, true).unwrap())
}

/// The peer of the scripted-router tests: 10.30.0.1 in a sealed namespace, dialed from 10.30.0.2.
fn scripted_peer() -> BgpPeer {
    BgpPeer {
        name: "fake".to_owned(),
        address: "10.30.0.1".to_owned(),
        source_address: "10.30.0.2".to_owned(),
        my_asn: N1_AS,
        peer_asn: ROUTER_AS,
        router_id: "10.30.0.2".to_owned(),
        hold_time_s: 9,
        ..BgpPeer::default()
    }
}

/// Runs `scenario` on a current-thread runtime inside a sealed namespace holding 10.30.0.1 and 10.30.0.2,
/// with a listener on 10.30.0.1:179 for the scripted router.
fn in_sealed_namespace<R: Send + 'static>(
    scenario: impl AsyncFnOnce(tokio::net::TcpListener) -> R + Send + 'static,
) -> R {
    let ns = SealedNamespace::create(
        "bgpwire",
        &["10.30.0.1".parse().unwrap(), "10.30.0.2".parse().unwrap()],
    )
    .unwrap();
    ns.host()
        .run(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind("10.30.0.1:179")
                    .await
                    .unwrap();
                scenario(listener).await
            })
        })
        .unwrap()
}

/// Accepts the speaker's connection and plays the router's half of the OPEN exchange (4-octet AS, no
/// Multiprotocol: IPv4 unicast only); returns the stream, Established on both sides, and the speaker's OPEN.
async fn accept_session(listener: &tokio::net::TcpListener) -> (tokio::net::TcpStream, Open) {
    use tokio::io::AsyncWriteExt;
    let (mut stream, _) = tokio::time::timeout(UP_TIMEOUT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let Message::Open(open) = read_message(&mut stream).await else {
        panic!("no OPEN first");
    };
    let ours = Open {
        version: 4,
        asn: ROUTER_AS,
        hold_time: 90,
        router_id: "10.30.0.1".parse().unwrap(),
        capabilities: Capabilities {
            four_octet_as: Some(ROUTER_AS),
            ..Capabilities::default()
        },
    };
    for m in [Message::Open(ours), Message::Keepalive] {
        stream
            .write_all(&message::encode(&m, true).unwrap())
            .await
            .unwrap();
    }
    assert_eq!(read_message(&mut stream).await, Message::Keepalive);
    (stream, open)
}

/// A scripted router: the speaker's OPEN, its routes grouped in one UPDATE and its End-of-RIB, then a
/// message longer than 4096 bytes, which the speaker must refuse with a NOTIFICATION (Message Header Error /
/// Bad Message Length) and a closed session.
#[test]
fn a_message_longer_than_4096_bytes_ends_the_session_with_bad_message_length() {
    let (answer, states) = in_sealed_namespace(async |listener| {
        use tokio::io::AsyncWriteExt;
        let mut bgp = BgpSpeaker::new(Metrics::default());
        bgp.apply(&config(
            1,
            scripted_peer(),
            vec![route(V4), route("10.10.39.201/32")],
        ));
        let (mut stream, open) = accept_session(&listener).await;
        assert_eq!(open.asn, N1_AS);
        assert_eq!(open.hold_time, 9);
        assert!(open.capabilities.graceful_restart.is_none());
        // No Multiprotocol capability from the router: IPv4 unicast only, both prefixes in one UPDATE.
        let Message::Update(update) = read_message(&mut stream).await else {
            panic!("no UPDATE");
        };
        assert_eq!(update.nlri.len(), 2);
        let attributes = update.attributes.unwrap();
        assert_eq!(attributes.as_path, [N1_AS]);
        assert_eq!(attributes.next_hop, Some("10.30.0.2".parse().unwrap()));
        let Message::Update(end) = read_message(&mut stream).await else {
            panic!("no End-of-RIB");
        };
        assert_eq!(end.is_end_of_rib(), Some(message::Family::Ipv4));
        let mut oversized = vec![0xff; 16];
        oversized.extend_from_slice(&4097u16.to_be_bytes());
        oversized.push(2);
        oversized.resize(4097, 0);
        stream.write_all(&oversized).await.unwrap();
        let answer = read_message(&mut stream).await;
        let states = wait_states(&bgp, |s| s.state != "Established").await;
        bgp.stop().await;
        (answer, states)
    });
    assert_eq!(
        answer,
        Message::Notification(message::Notification::new(
            message::code::HEADER,
            message::code::BAD_LENGTH
        ))
    );
    assert!(
        states[0].last_error.contains("bad message length 4097"),
        "{states:?}"
    );
}

/// Waits until the single session's state satisfies `done`.
async fn wait_states(
    bgp: &BgpSpeaker,
    done: impl Fn(&BgpSessionState) -> bool,
) -> Vec<BgpSessionState> {
    wait::until("the session's state", UP_TIMEOUT, || {
        let states = bgp.states();
        let result = if states.first().is_some_and(&done) {
            Ok(states)
        } else {
            Err(format!("{states:?}"))
        };
        async move { result }
    })
    .await
    .unwrap()
}

/// The forwarding-path signal BFD will drive, as a test switch.
struct Switch(tokio::sync::watch::Receiver<PathState>);

impl ForwardingPaths for Switch {
    fn watch(&self, _peer: &BgpPeer) -> Option<tokio::sync::watch::Receiver<PathState>> {
        Some(self.0.clone())
    }
}

/// The BFD seam: a forwarding path reported down tears an Established session down at once ("BFD down"),
/// closing TCP without a NOTIFICATION; the metrics count the flap.
#[test]
fn a_forwarding_path_down_tears_the_session_down_as_bfd_down() {
    let (after, states, flaps, established) = in_sealed_namespace(async |listener| {
        let (path, watch) = tokio::sync::watch::channel(PathState {
            up: true,
            label: "Up",
        });
        let metrics = Metrics::default();
        let mut bgp =
            BgpSpeaker::new(metrics.clone()).with_forwarding(std::sync::Arc::new(Switch(watch)));
        bgp.apply(&config(1, scripted_peer(), vec![route(V4)]));
        let (mut stream, _) = accept_session(&listener).await;
        let up = wait_states(&bgp, |s| s.state == "Established" && s.advertised == 1).await;
        assert_eq!(up[0].bfd_state, "Up");
        assert_eq!(metrics.bgp_sessions_established.get(), 1);
        path.send(PathState {
            up: false,
            label: "Down",
        })
        .unwrap();
        // Past the UPDATE and End-of-RIB, the connection ends with no NOTIFICATION.
        let mut after = Vec::new();
        while let Some(message) = next_message(&mut stream).await {
            after.push(message);
        }
        let states = wait_states(&bgp, |s| s.last_error == "BFD down").await;
        let labels = lb_speaker::metrics::BgpPeerLabels {
            peer: "fake".to_owned(),
        };
        let flaps = metrics.bgp_session_flaps.get_or_create(&labels).get();
        let established = metrics.bgp_sessions_established.get();
        bgp.stop().await;
        (after, states, flaps, established)
    });
    assert!(
        after.iter().all(|m| !matches!(m, Message::Notification(_))),
        "{after:?}"
    );
    assert_ne!(states[0].state, "Established");
    assert_eq!(states[0].bfd_state, "Down");
    assert_eq!((flaps, established), (1, 0));
}

/// Over an IPv6 session, IPv6 routes take the session's local address as next hop and IPv4 routes the
/// node's IPv4 address on the same interface.
#[test]
fn an_ipv6_session_carries_ipv4_routes_with_the_nodes_ipv4_next_hop() {
    let neighbor = Neighbor {
        address: IpAddr::V6("fd20::11".parse().unwrap()),
        ..n1("")
    };
    let bed = Bed::new("bgp-v6-session", &[neighbor]);
    let mut v6_peer = peer(N1_AS, bed.host("n1"));
    v6_peer.address = "fd20::1".to_owned();
    bed.node
        .apply(config(1, v6_peer, vec![route(V4), route(V6)]));
    bed.bird.wait_established("n1", UP_TIMEOUT).unwrap();
    let v4 = bed.bird.wait_paths(V4, 1, UP_TIMEOUT).remove(0);
    let v6 = bed.bird.wait_paths(V6, 1, UP_TIMEOUT).remove(0);
    eprintln!("over IPv6:\n{v4}{v6}");
    assert!(v4.contains("via 10.20.0.11 on eth0"), "{v4}");
    assert!(v6.contains("via fd20::11 on eth0"), "{v6}");
}

/// A router's ROUTE-REFRESH (`birdc reload in`) gets the routes of the asked family again.
#[test]
fn a_route_refresh_gets_the_routes_again() {
    let bed = Bed::new("bgp-refresh", &[n1("")]);
    bed.node.apply(config(
        1,
        peer(N1_AS, bed.host("n1")),
        vec![route(V4), route("10.10.39.201/32"), route(V6)],
    ));
    bed.bird.wait_paths(V4, 1, UP_TIMEOUT);
    bed.bird.wait_paths(V6, 1, UP_TIMEOUT);
    let received = |channel: &str| bed.bird.import_updates_received(channel);
    wait::until_blocking("the initial routes counted", UP_TIMEOUT, || {
        let counts = (received("ipv4"), received("ipv6"));
        (counts == (2, 1))
            .then_some(())
            .ok_or(format!("{counts:?}"))
    })
    .unwrap();
    let reload = bed.bird.birdc(&["reload", "in", "n1"]).unwrap();
    eprintln!("{reload}");
    wait::until_blocking("the routes sent again", UP_TIMEOUT, || {
        let counts = (received("ipv4"), received("ipv6"));
        (counts == (4, 2))
            .then_some(())
            .ok_or(format!("{counts:?}"))
    })
    .unwrap();
    assert_eq!(bed.bird.paths(V4).len(), 1);
    bed.bird.wait_established("n1", UP_TIMEOUT).unwrap();
}

/// A 4-octet AS on both sides (RFC 6793): the OPEN carries AS_TRANS and the capability, AS_PATH 4-octet ASes.
#[test]
fn four_octet_as_numbers_reach_the_router_intact() {
    const BIG: u32 = 4_200_000_001;
    let neighbor = Neighbor { asn: BIG, ..n1("") };
    let bed = Bed::new("bgp-as4", &[neighbor]);
    bed.node
        .apply(config(1, peer(BIG, bed.host("n1")), vec![route(V4)]));
    bed.bird.wait_established("n1", UP_TIMEOUT).unwrap();
    let path = bed.bird.wait_paths(V4, 1, UP_TIMEOUT).remove(0);
    assert!(path.contains("BGP.as_path: 4200000001\n"), "{path}");
}

/// GoBGP in the router's namespace, a second implementation to speak to; killed on drop.
struct GoBgp {
    router: Host,
    _process: Process,
}

impl GoBgp {
    fn start(router: &Host, scratch: &Scratch) -> Self {
        let config = format!(
            "[global.config]\n  as = {ROUTER_AS}\n  router-id = \"{router_id}\"\n  port = 179\n\n\
             [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"10.20.0.11\"\n    peer-as = {N1_AS}\n\
             \x20 [neighbors.transport.config]\n    passive-mode = true\n\
             \x20 [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n\
             \x20 [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv6-unicast\"\n",
            router_id = router.ipv4,
        );
        let path = scratch.join("gobgpd.toml");
        std::fs::write(&path, config).unwrap();
        let mut command = router.command("gobgpd");
        command
            .arg("-f")
            .arg(&path)
            .arg("-p")
            .arg("--api-hosts=127.0.0.1:50051")
            .arg("--pprof-disable");
        let process = Process::spawn("gobgpd", command, &scratch.join("gobgpd.log")).unwrap();
        Self {
            router: router.clone(),
            _process: process,
        }
    }

    fn gobgp(&self, args: &[&str]) -> String {
        let output = self
            .router
            .command("gobgp")
            .args(["-u", "127.0.0.1", "-p", "50051"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// GoBGP as a second router: IPv4 and IPv6 routes with their next hops, AS path and communities.
#[test]
fn gobgp_receives_ipv4_and_ipv6_routes_with_next_hops_and_communities() {
    let lab = lab();
    let scratch = Scratch::new("bgp-gobgp").unwrap();
    let router = lab.host("rtr").unwrap();
    let gobgp = GoBgp::start(router, &scratch);
    let node = Node::start(lab.host("n1").unwrap());
    let mut v4 = route(V4);
    v4.communities = vec![(ROUTER_AS << 16) | 7];
    node.apply(config(
        1,
        peer(N1_AS, lab.host("n1").unwrap()),
        vec![v4, route(V6)],
    ));
    let rib = |family: &str, prefix: &str| {
        let out = gobgp.gobgp(&["global", "rib", "-a", family]);
        out.lines()
            .find(|l| l.contains(prefix))
            .map(str::to_owned)
            .ok_or(out)
    };
    let v4 = wait::until_blocking("GoBGP to hold the IPv4 route", UP_TIMEOUT, || {
        rib("ipv4", V4)
    })
    .unwrap();
    let v6 = wait::until_blocking("GoBGP to hold the IPv6 route", UP_TIMEOUT, || {
        rib("ipv6", V6)
    })
    .unwrap();
    eprintln!("GoBGP:\n{v4}\n{v6}");
    assert!(v4.contains("10.20.0.11"), "{v4}");
    assert!(v4.contains("64501"), "{v4}");
    assert!(v4.contains("64500:7"), "{v4}");
    assert!(v6.contains("fd20::11"), "{v6}");
    let state = node.wait_state("Established");
    assert_eq!(state.advertised, 2);
    drop(node);
}
