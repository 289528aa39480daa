//! End-to-end load-balancer timings on layer 2, groundwork and MetalLB side by side in one run, each in the
//! seed lab (node namespaces m1, n1, n2 and a client on one bridge) against the test bed's real
//! kube-apiserver, with ARP probes every 10 ms from the client namespace (the test bed's [`ArpProbe`]):
//!
//! 1. Service created -> its address answers ARP in the client namespace.
//! 2. The announcing speaker killed (SIGKILL) -> another node answers (our target: under 500 ms).
//! 3. The announcing node cut off -> another node answers (our target: under 2 s), when the cut-off node
//!    stopped answering, and whether two nodes ever answered one probe.
//!
//! groundwork is the `lb-controller` binary with `lb-speaker`s over mTLS (`tests/support/system.rs`); a
//! cut pauses the node's link to the controller. MetalLB is its controller and layer-2 speakers with
//! memberlist (`integration_tests::metallb`); a cut pauses the node's link to the apiserver and drops IP
//! between it and the other nodes (memberlist, its failure detector). In both the cut node's link to the
//! bridge stays up. Every kill/cut round is a fresh system: a restarted or healed node is not what is
//! measured.
//!
//! Run as root: `cargo build --release -p lb-controller && cargo bench -p lb-speaker --bench failover`.
//! The bench runs `scripts/build-peers metallb` itself (reused when fresh, ~2 minutes to build);
//! `FAILOVER_PEERS=groundwork` (or `metallb`) runs one side only.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use integration_tests::kube::KubeCluster;
use integration_tests::lab::probe::ArpProbe;
use integration_tests::metallb::MetalLb;
use integration_tests::netlab::{Host, LabNetwork, LabSpec};
use integration_tests::wait;
use lb_speaker::frames::Mac;
use support::peer::Peer;
use support::system::{NODES, PROBE_EVERY, System, WAIT};
use support::{arping, probe_arp};

const CREATES: usize = 10;
const KILLS: usize = 3;
const CUTS: usize = 2;
/// The seed pool: both systems hand out its first address to the first Service.
const POOL: &str = "10.10.39.200-10.10.39.220";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 10, 39, 200);
/// How long another node may take to answer after a fault (MetalLB's memberlist takes seconds).
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the probes go on after another node answered, to see whether the old one still does.
const OBSERVE: Duration = Duration::from_secs(2);

/// One load balancer in the lab, as a round needs it.
trait Subject {
    fn client(&self) -> Host;
    fn mac_of(&self, node: &str) -> Mac;
    /// What must exist before the Service for it to be announced (not timed).
    fn prepare(&self, service: &str);
    fn create_service(&self, service: &str);
    /// Checks the Service got `address` (after its ARP answer was timed).
    fn check_address(&self, service: &str, address: Ipv4Addr);
    fn kill_speaker(&mut self, node: &str);
    fn cut(&self, node: &str);
}

impl Subject for System {
    fn client(&self) -> Host {
        self.host("client").clone()
    }
    fn mac_of(&self, node: &str) -> Mac {
        System::mac_of(self, node)
    }
    fn prepare(&self, _: &str) {}
    fn create_service(&self, service: &str) {
        System::create_service(self, service);
    }
    fn check_address(&self, service: &str, address: Ipv4Addr) {
        self.wait_announced(service, &address.to_string(), None);
    }
    fn kill_speaker(&mut self, node: &str) {
        self.speakers.get_mut(node).unwrap().kill();
    }
    fn cut(&self, node: &str) {
        self.forwards[node].pause();
    }
}

/// MetalLB in its own seed lab and control plane. Fields drop in order: MetalLB, the control plane, the
/// namespaces.
struct MetalLbLab {
    metallb: MetalLb,
    runtime: tokio::runtime::Runtime,
    _cluster: KubeCluster,
    lab: LabNetwork,
}

impl MetalLbLab {
    fn start() -> Self {
        let lab = LabNetwork::create(&LabSpec::seed()).unwrap_or_else(|e| panic!("{e}"));
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let cluster = runtime.block_on(KubeCluster::start()).unwrap();
        runtime
            .block_on(integration_tests::lab::seed::install_crd_and_nodes(
                &cluster, &NODES,
            ))
            .unwrap();
        let nodes: Vec<Host> = NODES.iter().map(|n| lab.host(n).unwrap().clone()).collect();
        let metallb = runtime
            .block_on(MetalLb::start(&cluster, &nodes, POOL))
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            metallb,
            runtime,
            _cluster: cluster,
            lab,
        }
    }
}

impl Subject for MetalLbLab {
    fn client(&self) -> Host {
        self.lab.host("client").unwrap().clone()
    }
    fn mac_of(&self, node: &str) -> Mac {
        self.lab.host(node).unwrap().mac().unwrap()
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
    fn check_address(&self, service: &str, address: Ipv4Addr) {
        let addresses = self
            .runtime
            .block_on(self.metallb.service_addresses(service))
            .unwrap();
        assert_eq!(addresses, [address.to_string()], "{service}'s status");
    }
    fn kill_speaker(&mut self, node: &str) {
        self.metallb.speaker(node).unwrap().kill();
    }
    fn cut(&self, node: &str) {
        self.metallb.cut(node).unwrap();
    }
}

/// A fresh system of `peer` for the round `round`.
fn start(peer: Peer, round: &str) -> Box<dyn Subject> {
    match peer {
        Peer::Groundwork => Box::new(System::start(&format!("lb-failover-bench-{round}"))),
        Peer::MetalLb => Box::new(MetalLbLab::start()),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill,
    Cut,
}

/// One fault round: when another node answered, when the old one last answered (None: it still did at
/// the end of the observation), and whether two nodes ever answered one probe (or took turns).
struct Failover {
    answered: Duration,
    old_stopped: Option<Duration>,
    two_answering: bool,
}

/// What one peer measured.
#[derive(Default)]
struct Figures {
    create: Vec<Duration>,
    create_two: bool,
    kills: Vec<Failover>,
    cuts: Vec<Failover>,
}

fn main() {
    let peers = Peer::from_env("FAILOVER_PEERS");
    if peers.contains(&Peer::MetalLb) {
        build_metallb();
    }
    let mut results = Vec::new();
    for peer in peers {
        let mut figures = Figures::default();
        let (create, create_two) = creates(peer);
        figures.create = create;
        figures.create_two = create_two;
        for round in 0..KILLS {
            figures
                .kills
                .push(failover(peer, Fault::Kill, &format!("kill{round}")));
        }
        for round in 0..CUTS {
            figures
                .cuts
                .push(failover(peer, Fault::Cut, &format!("cut{round}")));
        }
        results.push((peer, figures));
    }
    report(&results);
}

/// Builds (or reuses) the pinned MetalLB binaries.
fn build_metallb() {
    let script = integration_tests::workspace_root().join("scripts/build-peers");
    let status = std::process::Command::new(&script)
        .arg("metallb")
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(status.success(), "scripts/build-peers metallb failed");
}

/// Services created one at a time in one system, each timed until its address answers ARP; and whether
/// any of those probes was answered by two nodes.
fn creates(peer: Peer) -> (Vec<Duration>, bool) {
    let subject = start(peer, "create");
    let client = subject.client();
    let mut times = Vec::new();
    let mut two = false;
    for i in 0..CREATES {
        let name = format!("web{i}");
        let address = Ipv4Addr::new(10, 10, 39, 200 + u8::try_from(i).unwrap());
        subject.prepare(&name);
        let started = Instant::now();
        subject.create_service(&name);
        let answers = wait::until_blocking(&format!("{address} to answer"), WAIT, || {
            let macs = probe_arp(&client, address, Duration::from_millis(50));
            if macs.is_empty() {
                Err("no answer yet".to_owned())
            } else {
                Ok(macs)
            }
        })
        .unwrap_or_else(|e| panic!("{}: {e}", peer.name()));
        times.push(started.elapsed());
        two |= answers.iter().any(|m| *m != answers[0]);
        subject.check_address(&name, address);
    }
    (times, two)
}

/// A fresh system with one Service; the announcing node is killed or cut off while the client probes.
fn failover(peer: Peer, fault: Fault, round: &str) -> Failover {
    let mut subject = start(peer, round);
    let client = subject.client();
    subject.prepare("web0");
    subject.create_service("web0");
    let (node, old) = announcer(subject.as_ref(), &client);
    let watch = ArpProbe::start(&client, VIP, PROBE_EVERY).unwrap();
    watch.wait_first_reply(WAIT).unwrap();
    let at = Instant::now();
    match fault {
        Fault::Kill => subject.kill_speaker(&node),
        Fault::Cut => subject.cut(&node),
    }
    let (answered, _) = watch
        .wait_other_than(old, FAILOVER_TIMEOUT)
        .unwrap_or_else(|e| panic!("{}: {e}", peer.name()));
    // Observing on purpose: whether the old node keeps answering after another took over is the finding.
    std::thread::sleep(OBSERVE);
    // The old node's last reply first: the end, read after it, is then never before it.
    let last_old = watch.last_reply_from(old);
    let end = watch.replies().last().map_or(at, |(t, _)| *t);
    let (doubled, changes) = watch.two_answering();
    let old_stopped = last_old
        .filter(|t| end.duration_since(*t) > Duration::from_millis(200))
        .map(|t| t.saturating_duration_since(at));
    Failover {
        answered: answered - at,
        old_stopped,
        two_answering: doubled > 0 || changes > 1,
    }
}

/// Waits until exactly one node answers for [`VIP`]; returns it and its MAC.
fn announcer(subject: &dyn Subject, client: &Host) -> (String, Mac) {
    let mac = wait::until_blocking(
        "one node to answer",
        WAIT,
        || match arping(client, VIP)[..] {
            [mac] => Ok(mac),
            ref other => Err(format!("answers from {other:02x?}")),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let node = NODES
        .iter()
        .find(|n| subject.mac_of(n) == mac)
        .expect("the answer comes from a node");
    ((*node).to_owned(), mac)
}

fn report(results: &[(Peer, Figures)]) {
    println!();
    println!(
        "seed lab (3 nodes, client probing ARP every 10 ms); groundwork: speaker lease 1 s, grace 200 ms; \
         MetalLB {}: memberlist (LAN defaults)",
        integration_tests::metallb::version().unwrap_or_default()
    );
    println!(
        "{:<11} {:<46} {:>3} {:>11} {:>11} {:>10}",
        "peer", "measurement", "n", "p50", "max", "two nodes"
    );
    for (peer, figures) in results {
        let peer = peer.name();
        let yes = |b: bool| if b { "yes" } else { "no" };
        let any = |rounds: &[Failover]| rounds.iter().any(|r| r.two_answering);
        let answered = |rounds: &[Failover]| rounds.iter().map(|r| r.answered).collect::<Vec<_>>();
        row(
            peer,
            "Service created -> address answers ARP",
            &figures.create,
            yes(figures.create_two),
        );
        row(
            peer,
            "speaker killed -> another node answers ARP",
            &answered(&figures.kills),
            yes(any(&figures.kills)),
        );
        row(
            peer,
            "node cut off -> another node answers ARP",
            &answered(&figures.cuts),
            yes(any(&figures.cuts)),
        );
        let stopped: Vec<Duration> = figures.cuts.iter().filter_map(|r| r.old_stopped).collect();
        let still = figures.cuts.len() - stopped.len();
        if stopped.is_empty() {
            println!(
                "{peer:<11} {:<46} {:>3} {:>23}",
                "node cut off -> it stops answering",
                figures.cuts.len(),
                format!("never (within {} s)", OBSERVE.as_secs())
            );
        } else {
            // The last column says how many cut-off nodes never stopped within the observation.
            row(
                peer,
                "node cut off -> it stops answering",
                &stopped,
                &format!("{still} never"),
            );
        }
    }
}

fn row(peer: &str, what: &str, samples: &[Duration], two: &str) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!(
        "{peer:<11} {what:<46} {:>3} {:>11} {:>11} {two:>10}",
        samples.len(),
        ms(sorted[sorted.len() / 2]),
        ms(sorted[sorted.len() - 1])
    );
}
