//! BGP mode side by side: groundwork (`lb-controller` + `lb-speaker`s) and MetalLB (its controller + native
//! BGP speakers), each in its own lab (the seed nodes m1, n1, n2 and a `router` namespace on one bridge)
//! against the test bed's real kube-apiserver, announcing to the same real router, BIRD 2, whose own
//! table (`birdc show route <prefix> all`, polled every [`POLL`]) is what is timed:
//!
//! 1. Service created -> its route at the router: from the create call, and from its status address being
//!    written (seen by a watch); the first path and the paths through all three nodes.
//! 2. A speaker killed (SIGKILL) -> that node's path gone.
//! 3. A node cut off (`ip link set eth0 down` in its namespace: silence, no FIN) -> its path gone. BIRD
//!    runs BFD at 100 ms x 3; groundwork's peer has a `BFDProfile` of the same; MetalLB's native speaker
//!    cannot run BFD (it discards a configuration with a BFD profile), so there its 9 s hold timer decides.
//! 4. A graceful restart (SIGTERM, then the speaker started again) -> was the path ever withdrawn?
//!    groundwork's peer has `enableGracefulRestart: true` and BIRD `graceful restart on`; MetalLB's native
//!    speaker has no graceful restart (it discards a configuration that asks for it), BIRD's side is the
//!    same, and what BIRD did is reported.
//!
//! BIRD is passive (the speakers dial out) with `hold time 9`, the peers offer 9 s. Each case is one fresh
//! system per peer; the kills, cuts and restarts go over the three nodes in turn.
//!
//! Run as root, with MetalLB built (`scripts/build-peers metallb`, or `PEERS_DIR` pointing at a build):
//! `cargo build --release -p lb-controller && cargo bench -p lb-speaker --bench bgp`;
//! `BGP_PEERS=groundwork` (or `metallb`) runs one side only.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use integration_tests::bird::Bird;
use integration_tests::kube::KubeCluster;
use integration_tests::metallb::{BgpPeer, MetalLb};
use integration_tests::netlab::{Host, LabNetwork, ip};
use integration_tests::process::{Process, Scratch};
use integration_tests::wait;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::runtime::watcher;
use nix::sys::signal::Signal;
use serde_json::json;
use support::bgp::{
    NODES_AS, ROUTER, ROUTER_AS, bird_config, create_fast_bfd_profile, next_hops, peered,
    wait_bfd_up, wait_established, with_router,
};
use support::peer::Peer;
use support::system::{NODES, System, WAIT};

/// Services created, one at a time.
const CREATES: usize = 10;
/// How often BIRD's table is read (one `birdc` call takes a few ms on top).
const POLL: Duration = Duration::from_millis(2);
/// The seed pool: both systems hand out its addresses in order.
const POOL: &str = "10.10.39.200-10.10.39.220";
/// The first Service's route, the one faults are judged on.
const WEB0: &str = "10.10.39.200/32";
/// How long a path may take to go (the hold timer is 9 s).
const GONE_WITHIN: Duration = Duration::from_secs(30);
/// How long a restarted speaker's path is watched after its session is up again.
const OBSERVE: Duration = Duration::from_secs(2);
/// The peers' and BIRD's hold time.
const HOLD: Duration = Duration::from_secs(9);

/// What BIRD and the peers are configured for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    /// Plain sessions: creates, then kills.
    Routes,
    /// BFD on BIRD's side (and groundwork's): cuts.
    Cut,
    /// Graceful restart on BIRD's side (and groundwork's): restarts.
    Restart,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Self::Routes => "routes",
            Self::Cut => "cut",
            Self::Restart => "restart",
        }
    }

    fn bird_extra(self) -> &'static str {
        match self {
            Self::Routes => "",
            Self::Cut => "bfd on;",
            Self::Restart => "graceful restart on;",
        }
    }
}

/// One load balancer with its router, as a case needs it.
trait Subject {
    fn bird(&self) -> &Bird;
    fn host(&self, name: &str) -> Host;
    fn client(&self) -> kube::Client;
    /// What must exist before the Service for it to be announced (not timed).
    fn prepare(&self, service: &str);
    fn create_service(&self, service: &str);
    fn kill_speaker(&mut self, node: &str);
    /// The speaker on `node`, to signal it and see it exit.
    fn speaker(&mut self, node: &str) -> &mut Process;
    fn start_speaker(&mut self, node: &str);
}

/// groundwork with its router. Fields drop in order: BIRD, then the system.
struct Groundwork {
    bird: Bird,
    system: System,
}

impl Groundwork {
    fn start(case: Case) -> Self {
        let system = System::start_on(
            &format!("lb-bgp-bench-{}", case.name()),
            &with_router(),
            1,
            Duration::from_secs(2),
        );
        let mut peer = json!({"myASN": NODES_AS, "peerASN": ROUTER_AS, "peerAddress": ROUTER.to_string(),
                              "holdTime": format!("{}s", HOLD.as_secs())});
        match case {
            Case::Routes => {}
            Case::Cut => {
                create_fast_bfd_profile(&system);
                peer["bfdProfile"] = json!("fast");
            }
            Case::Restart => peer["enableGracefulRestart"] = json!(true),
        }
        let bird = peered(&system, case.bird_extra(), peer);
        if case == Case::Cut {
            wait_bfd_up(&bird, NODES.len());
        }
        Self { bird, system }
    }
}

impl Subject for Groundwork {
    fn bird(&self) -> &Bird {
        &self.bird
    }
    fn host(&self, name: &str) -> Host {
        self.system.host(name).clone()
    }
    fn client(&self) -> kube::Client {
        self.system.client()
    }
    fn prepare(&self, _: &str) {}
    fn create_service(&self, service: &str) {
        self.system.create_service(service);
    }
    fn kill_speaker(&mut self, node: &str) {
        self.system.speakers.get_mut(node).unwrap().kill();
    }
    fn speaker(&mut self, node: &str) -> &mut Process {
        self.system.speakers.get_mut(node).unwrap()
    }
    fn start_speaker(&mut self, node: &str) {
        self.system.restart_speaker(node);
    }
}

/// MetalLB in its own lab and control plane with its router. Fields drop in order: BIRD, MetalLB, the
/// control plane, the namespaces.
struct MetalLbLab {
    bird: Bird,
    metallb: MetalLb,
    runtime: tokio::runtime::Runtime,
    cluster: KubeCluster,
    lab: LabNetwork,
    _scratch: Scratch,
}

impl MetalLbLab {
    fn start(case: Case) -> Self {
        let lab = LabNetwork::create(&with_router()).unwrap_or_else(|e| panic!("{e}"));
        let scratch = Scratch::new(&format!("metallb-bgp-bench-{}", case.name())).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let cluster = runtime.block_on(KubeCluster::start()).unwrap();
        runtime
            .block_on(integration_tests::lab::seed::install_crd_and_nodes(
                &cluster, &NODES,
            ))
            .unwrap();
        let nodes = node_addresses(|n| lab.host(n).unwrap().clone());
        // BIRD first: a native speaker that finds nothing listening backs off before dialling again.
        let bird = Bird::start_in(
            lab.host("router").unwrap(),
            "bird-router",
            scratch.path(),
            &bird_config(&nodes, case.bird_extra()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let hosts: Vec<Host> = NODES.iter().map(|n| lab.host(n).unwrap().clone()).collect();
        let peer = BgpPeer {
            my_asn: NODES_AS,
            peer_asn: ROUTER_AS,
            peer_address: ROUTER.into(),
            hold_time: HOLD,
        };
        let metallb = runtime
            .block_on(MetalLb::start_bgp(&cluster, &hosts, POOL, &peer))
            .unwrap_or_else(|e| panic!("{e}"));
        wait_established(&bird, &NODES);
        Self {
            bird,
            metallb,
            runtime,
            cluster,
            lab,
            _scratch: scratch,
        }
    }
}

impl Subject for MetalLbLab {
    fn bird(&self) -> &Bird {
        &self.bird
    }
    fn host(&self, name: &str) -> Host {
        self.lab.host(name).unwrap().clone()
    }
    fn client(&self) -> kube::Client {
        self.cluster.client()
    }
    fn prepare(&self, service: &str) {
        self.runtime
            .block_on(self.metallb.create_backends(service))
            .unwrap();
    }
    fn create_service(&self, service: &str) {
        self.runtime
            .block_on(self.metallb.create_service(service))
            .unwrap();
    }
    fn kill_speaker(&mut self, node: &str) {
        self.metallb.speaker(node).unwrap().kill();
    }
    fn speaker(&mut self, node: &str) -> &mut Process {
        self.metallb.speaker(node).unwrap()
    }
    fn start_speaker(&mut self, node: &str) {
        self.metallb.start_speaker(node).unwrap();
    }
}

fn node_addresses(host: impl Fn(&str) -> Host) -> Vec<(&'static str, Ipv4Addr)> {
    NODES.iter().map(|n| (*n, host(n).ipv4)).collect()
}

/// A fresh system of `peer` configured for `case`.
fn start(peer: Peer, case: Case) -> Box<dyn Subject> {
    match peer {
        Peer::Groundwork => Box::new(Groundwork::start(case)),
        Peer::MetalLb => Box::new(MetalLbLab::start(case)),
    }
}

/// When each Service's status first held an address, as a watch saw it.
struct StatusWatch {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusWatch {
    fn start(runtime: &tokio::runtime::Runtime, client: kube::Client) -> Self {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let record = Arc::clone(&seen);
        let task = runtime.spawn(async move {
            let api: Api<Service> = Api::namespaced(client, "default");
            let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                let services = match event {
                    Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => vec![s],
                    _ => continue,
                };
                let now = Instant::now();
                for service in services {
                    if integration_tests::kube::status_ips(&service).is_empty() {
                        continue;
                    }
                    let name = service.metadata.name.clone().unwrap_or_default();
                    record.lock().unwrap().entry(name).or_insert(now);
                }
            }
        });
        Self { seen, task }
    }

    fn wait(&self, service: &str) -> Instant {
        wait::until_blocking(&format!("{service}'s status address"), WAIT, || {
            self.seen
                .lock()
                .unwrap()
                .get(service)
                .copied()
                .ok_or_else(|| "not yet".to_owned())
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for StatusWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads BIRD's routes for `prefix` every [`POLL`] until `done` accepts them; when that was (just after
/// the `birdc` call that showed it), or None after `within`.
fn poll_until(
    bird: &Bird,
    prefix: &str,
    within: Duration,
    mut done: impl FnMut(&[String]) -> bool,
) -> Option<Instant> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let routes = bird.route(prefix).unwrap_or_else(|e| panic!("{e}"));
        if done(&next_hops(&routes)) {
            return Some(Instant::now());
        }
        std::thread::sleep(POLL);
    }
    None
}

/// BIRD's `Last error` line for `node`'s session (why it last went down), or its state.
fn last_error(bird: &Bird, node: &str) -> String {
    let text = bird
        .show(&format!("protocols all {node}"))
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Last error:"))
        .map_or_else(
            || bird.protocol_state(node).unwrap_or_default(),
            |e| e.trim().to_owned(),
        )
}

/// One graceful-restart round.
struct Restart {
    /// How long the node's path was missing from BIRD's table in all (zero: never withdrawn).
    missing: Duration,
    /// From SIGTERM until the path was first missing.
    gone_after: Option<Duration>,
    /// From SIGTERM until the speaker exited (and was started again).
    exited_after: Duration,
    /// From SIGTERM until the new session was Established.
    established_after: Duration,
}

/// What one peer measured.
#[derive(Default)]
struct Figures {
    create_from_call: Vec<Duration>,
    /// Milliseconds, negative when the route was at the router before the watch saw the status.
    create_from_status: Vec<f64>,
    all_paths_from_status: Vec<f64>,
    kills: Vec<Duration>,
    kill_reasons: Vec<String>,
    cuts: Vec<Option<Duration>>,
    cut_reasons: Vec<String>,
    restarts: Vec<Restart>,
}

fn main() {
    let peers = Peer::from_env("BGP_PEERS");
    if peers.contains(&Peer::MetalLb) {
        for binary in ["metallb-controller", "metallb-speaker"] {
            integration_tests::peers::binary(binary).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    let watches = tokio::runtime::Runtime::new().unwrap();
    let mut results = Vec::new();
    for peer in peers {
        let mut figures = Figures::default();
        eprintln!("[bgp bench] {}: creates and kills", peer.name());
        routes_and_kills(peer, &watches, &mut figures);
        eprintln!("[bgp bench] {}: cuts", peer.name());
        cuts(peer, &mut figures);
        eprintln!("[bgp bench] {}: graceful restarts", peer.name());
        restarts(peer, &mut figures);
        results.push((peer, figures));
    }
    report(&results);
}

/// Services created one at a time, each timed until its route is at the router; then each speaker killed
/// in turn, timed until its path of the first Service is gone.
fn routes_and_kills(peer: Peer, watches: &tokio::runtime::Runtime, figures: &mut Figures) {
    let mut subject = start(peer, Case::Routes);
    let statuses = StatusWatch::start(watches, subject.client());
    for i in 0..CREATES {
        let name = format!("web{i}");
        let address = Ipv4Addr::new(10, 10, 39, 200 + u8::try_from(i).unwrap());
        let prefix = format!("{address}/32");
        subject.prepare(&name);
        let called = Instant::now();
        subject.create_service(&name);
        let first = poll_until(subject.bird(), &prefix, WAIT, |hops| !hops.is_empty())
            .unwrap_or_else(|| panic!("{}: no route for {prefix}", peer.name()));
        let all = poll_until(subject.bird(), &prefix, WAIT, |hops| {
            hops.len() == NODES.len()
        })
        .unwrap_or_else(|| panic!("{}: {prefix} not through every node", peer.name()));
        let status = statuses.wait(&name);
        let service: Service = watches
            .block_on(Api::namespaced(subject.client(), "default").get(&name))
            .unwrap();
        assert_eq!(
            integration_tests::kube::status_ips(&service),
            [address.to_string()],
            "{}: {name}'s status",
            peer.name()
        );
        figures.create_from_call.push(first - called);
        // Signed: a speaker may announce before the watch delivers the status write.
        figures.create_from_status.push(signed_ms(first, status));
        figures.all_paths_from_status.push(signed_ms(all, status));
    }
    for node in NODES {
        let address = subject.host(node).ipv4.to_string();
        let at = Instant::now();
        subject.kill_speaker(node);
        let gone = poll_until(subject.bird(), WEB0, GONE_WITHIN, |hops| {
            !hops.contains(&address)
        })
        .unwrap_or_else(|| panic!("{}: {node}'s path stayed after SIGKILL", peer.name()));
        figures.kills.push(gone - at);
        figures
            .kill_reasons
            .push(format!("{node}: {}", last_error(subject.bird(), node)));
    }
}

/// Each node's link cut in turn, timed until its path of the first Service is gone.
fn cuts(peer: Peer, figures: &mut Figures) {
    let subject = start(peer, Case::Cut);
    for (i, node) in NODES.iter().enumerate() {
        if i == 0 {
            create_routed(subject.as_ref(), "web0");
        }
        let host = subject.host(node);
        let address = host.ipv4.to_string();
        let at = Instant::now();
        ip(&["-n", &host.netns, "link", "set", "eth0", "down"]).unwrap();
        let gone = poll_until(subject.bird(), WEB0, GONE_WITHIN, |hops| {
            !hops.contains(&address)
        });
        figures.cuts.push(gone.map(|t| t - at));
        figures
            .cut_reasons
            .push(format!("{node}: {}", last_error(subject.bird(), node)));
    }
}

/// Each node's speaker stopped with SIGTERM and, once it exited, started again, in turn; BIRD's table is
/// read all along, from the signal until [`OBSERVE`] after the new session is up with the path back.
fn restarts(peer: Peer, figures: &mut Figures) {
    let mut subject = start(peer, Case::Restart);
    create_routed(subject.as_ref(), "web0");
    for node in NODES {
        let address = subject.host(node).ipv4.to_string();
        let mut missing = Duration::ZERO;
        let mut gone_after = None;
        let mut exited_after = None;
        let mut established_after = None;
        let at = Instant::now();
        subject.speaker(node).signal(Signal::SIGTERM).unwrap();
        let mut last = Instant::now();
        let deadline = at + GONE_WITHIN + WAIT;
        loop {
            assert!(
                Instant::now() < deadline,
                "{}: {node} not back after its restart",
                peer.name()
            );
            let routes = subject.bird().route(WEB0).unwrap();
            let present = next_hops(&routes).contains(&address);
            let seen = Instant::now();
            if !present {
                missing += seen - last;
                gone_after.get_or_insert(seen - at);
            }
            last = seen;
            if exited_after.is_none() {
                if subject.speaker(node).poll_exit().is_some() {
                    exited_after = Some(seen - at);
                    subject.start_speaker(node);
                }
            } else if established_after.is_none()
                && present
                && subject.bird().protocol_state(node).unwrap() == "Established"
            {
                established_after = Some(seen - at);
            }
            if established_after.is_some_and(|e| seen - at > e + OBSERVE) {
                break;
            }
            std::thread::sleep(POLL);
        }
        figures.restarts.push(Restart {
            missing,
            gone_after,
            exited_after: exited_after.unwrap_or_default(),
            established_after: established_after.unwrap_or_default(),
        });
    }
}

/// Creates `service` (with what the subject needs first) and waits until BIRD has it through every node.
fn create_routed(subject: &dyn Subject, service: &str) {
    subject.prepare(service);
    subject.create_service(service);
    poll_until(subject.bird(), WEB0, WAIT, |hops| hops.len() == NODES.len())
        .unwrap_or_else(|| panic!("{WEB0} not through every node"));
}

fn report(results: &[(Peer, Figures)]) {
    println!();
    println!(
        "BGP mode: seed lab (m1, n1, n2) + router, BIRD {} (passive, hold time 9 s; BFD 100 ms x 3 in the \
         cut case; graceful restart on in the restart case); BIRD's table polled every {} ms; MetalLB {} \
         native BGP",
        bird_version(),
        POLL.as_millis(),
        integration_tests::metallb::version().unwrap_or_default()
    );
    let width = 34;
    print!("{:<52} {:<26}", "measurement (p50 / max, n)", "goal");
    for (peer, _) in results {
        print!(" {:<width$}", peer.name());
    }
    println!();
    let line = |what: &str, goal: &str, cell: &dyn Fn(&Figures) -> String| {
        print!("{what:<52} {goal:<26}");
        for (_, figures) in results {
            print!(" {:<width$}", cell(figures));
        }
        println!();
    };
    line(
        "Service created -> route at router, from create",
        "",
        &|f| spread(&f.create_from_call),
    );
    line(
        "Service created -> route, from status written",
        "<= 100 ms",
        &|f| spread_ms(&f.create_from_status),
    );
    line("Service created -> all 3 paths, from status", "", &|f| {
        spread_ms(&f.all_paths_from_status)
    });
    line(
        "speaker killed (SIGKILL) -> its path gone",
        "at once",
        &|f| spread(&f.kills),
    );
    line(
        "node cut off (link down) -> its path gone",
        "<= 300 ms (BFD)",
        &|f| {
            let gone: Vec<Duration> = f.cuts.iter().flatten().copied().collect();
            let stayed = f.cuts.len() - gone.len();
            if stayed == 0 {
                spread(&gone)
            } else {
                format!(
                    "{}; {stayed} stayed {} s",
                    spread(&gone),
                    GONE_WITHIN.as_secs()
                )
            }
        },
    );
    line("graceful restart -> path withdrawn", "never", &|f| {
        let withdrawn = f.restarts.iter().filter(|r| !r.missing.is_zero()).count();
        if withdrawn == 0 {
            format!("never (0 of {})", f.restarts.len())
        } else {
            let gaps: Vec<Duration> = f.restarts.iter().map(|r| r.missing).collect();
            format!("{withdrawn} of {}, for {}", f.restarts.len(), spread(&gaps))
        }
    });
    line("graceful restart -> path gone after SIGTERM", "", &|f| {
        let gone: Vec<Duration> = f.restarts.iter().filter_map(|r| r.gone_after).collect();
        if gone.is_empty() {
            "-".to_owned()
        } else {
            spread(&gone)
        }
    });
    line(
        "graceful restart -> speaker exited after SIGTERM",
        "",
        &|f| {
            spread(
                &f.restarts
                    .iter()
                    .map(|r| r.exited_after)
                    .collect::<Vec<_>>(),
            )
        },
    );
    line(
        "graceful restart -> session back (SIGTERM to Est.)",
        "",
        &|f| {
            spread(
                &f.restarts
                    .iter()
                    .map(|r| r.established_after)
                    .collect::<Vec<_>>(),
            )
        },
    );
    println!();
    for (peer, figures) in results {
        println!(
            "{}: why BIRD dropped the killed speakers' sessions: {}",
            peer.name(),
            figures.kill_reasons.join("; ")
        );
        println!(
            "{}: why BIRD dropped the cut-off nodes' sessions: {}",
            peer.name(),
            figures.cut_reasons.join("; ")
        );
    }
    println!(
        "MetalLB native BGP runs no BFD (a BFDProfile makes its speaker discard the configuration): a cut-off \
         node's path goes when BIRD's 9 s hold timer expires. It has no graceful restart either: BIRD's \
         `graceful restart on` has no peer capability to act on."
    );
}

fn bird_version() -> String {
    let out = std::process::Command::new(integration_tests::bird::BIRD)
        .arg("--version")
        .output()
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_default();
    out.split_whitespace().last().unwrap_or("?").to_owned()
}

/// `later - earlier` in milliseconds, negative when `later` came first.
fn signed_ms(later: Instant, earlier: Instant) -> f64 {
    if later >= earlier {
        (later - earlier).as_secs_f64() * 1000.0
    } else {
        -(earlier - later).as_secs_f64() * 1000.0
    }
}

/// "p50 / max ms (n)".
fn spread(samples: &[Duration]) -> String {
    spread_ms(
        &samples
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect::<Vec<_>>(),
    )
}

/// "p50 / max ms (n)" of milliseconds.
fn spread_ms(samples: &[f64]) -> String {
    if samples.is_empty() {
        return "-".to_owned();
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    format!(
        "{:.1} / {:.1} ms ({})",
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
        samples.len()
    )
}
