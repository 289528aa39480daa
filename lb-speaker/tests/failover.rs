//! End to end on layer 2, with every part real: the `lb-controller` binary against the test bed's
//! kube-apiserver (in the root namespace), an `lb-speaker` in each node namespace of the seed lab (m1, n1,
//! n2) reaching the controller over mutual TLS through a loopback forwarder, and the client namespace
//! probing ARP on the shared bridge. The forwarder can be paused to cut a node off from the control plane
//! while its data link stays up: the case fencing exists for.
//!
//! Needs root (namespaces, raw sockets) and the `lb-controller` binary (`cargo test --workspace` builds it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::certs::{Ca, Usage};
use integration_tests::daemon::Daemon;
use integration_tests::forward::Forward;
use integration_tests::kube::KubeCluster;
use integration_tests::netlab::{Host, LabNetwork, LabSpec};
use integration_tests::process::{Process, Scratch, free_port, workspace_binary};
use integration_tests::wait;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use lb_speaker::frames::{self, Frame, Mac};
use serde_json::json;
use support::*;

const SPEAKER: &str = env!("CARGO_BIN_EXE_lb-speaker");
const WAIT: Duration = Duration::from_secs(30);
const NODES: [&str; 3] = ["m1", "n1", "n2"];

/// The whole system on one machine. Fields drop in order: speakers, forwarders, controller, cluster,
/// and the namespaces last.
struct System {
    speakers: BTreeMap<String, Process>,
    forwards: BTreeMap<String, Forward>,
    /// The controllers and their gRPC addresses; the first leads.
    controllers: Vec<(Daemon, SocketAddr)>,
    client: kube::Client,
    runtime: tokio::runtime::Runtime,
    _cluster: KubeCluster,
    _scratch: Scratch,
    lab: LabNetwork,
}

impl System {
    fn start(what: &str) -> Self {
        Self::start_with(what, 1, "2s")
    }

    /// `controllers` replicas (with leader election when more than one; the first leads) and speakers
    /// configured with `hold` as their controller-loss hold.
    fn start_with(what: &str, controllers: usize, hold: &str) -> Self {
        let lab = LabNetwork::create(&LabSpec::seed()).unwrap_or_else(|e| panic!("{e}"));
        let scratch = Scratch::new(what).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let cluster = runtime.block_on(KubeCluster::start()).unwrap();
        let client = cluster.client();
        runtime.block_on(seed_objects(&client));

        let ca = Ca::new("groundwork-test-ca").unwrap();
        let server = ca
            .issue_files(
                scratch.path(),
                "lb-controller",
                &[],
                &["127.0.0.1"],
                Usage::Server,
            )
            .unwrap();
        let speaker = ca
            .issue_files(scratch.path(), "lb-speaker", &[], &[], Usage::Client)
            .unwrap();

        let binary = workspace_binary("lb-controller").unwrap();
        let kubeconfig = cluster.kubeconfig().display().to_string();
        let (cert, key, ca_file) = (
            server.cert.display().to_string(),
            server.key.display().to_string(),
            server.ca.display().to_string(),
        );
        let mut replicas = Vec::new();
        for replica in 0..controllers {
            let grpc: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
            let grpc_flag = grpc.to_string();
            let mut args = vec![
                "--kubeconfig",
                &kubeconfig,
                "--grpc-listen",
                &grpc_flag,
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--tls-ca",
                &ca_file,
                "--controller-loss-hold",
                hold,
            ];
            if controllers > 1 {
                args.extend_from_slice(&["--leader-elect", "--leader-lease", "2s"]);
            }
            let mut controller = Daemon::start(&binary.display().to_string(), &args).unwrap();
            if replica == 0 {
                controller.wait_ready(WAIT).unwrap();
            }
            replicas.push((controller, grpc));
        }
        let grpc = replicas[0].1;

        let mut forwards = BTreeMap::new();
        let mut speakers = BTreeMap::new();
        let (cert, key, ca_file) = (
            speaker.cert.display().to_string(),
            speaker.key.display().to_string(),
            speaker.ca.display().to_string(),
        );
        for node in NODES {
            let host = lab.host(node).unwrap();
            let forward = Forward::start(host, grpc).unwrap();
            let url = format!("https://127.0.0.1:{}", forward.local().port());
            let process = start_speaker(
                SPEAKER,
                host,
                &scratch,
                &url,
                &[
                    "--tls-cert",
                    &cert,
                    "--tls-key",
                    &key,
                    "--tls-ca",
                    &ca_file,
                    "--controller-loss-hold",
                    hold,
                ],
            );
            forwards.insert(node.to_owned(), forward);
            speakers.insert(node.to_owned(), process);
        }
        Self {
            speakers,
            forwards,
            controllers: replicas,
            client,
            runtime,
            _cluster: cluster,
            _scratch: scratch,
            lab,
        }
    }

    fn host(&self, name: &str) -> &Host {
        self.lab.host(name).unwrap()
    }

    fn service(&self, name: &str) -> Service {
        let api: Api<Service> = Api::namespaced(self.client.clone(), "default");
        self.runtime.block_on(api.get(name)).unwrap()
    }

    fn create_service(&self, name: &str) {
        let api: Api<Service> = Api::namespaced(self.client.clone(), "default");
        let service = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                     "ports": [{"port": 80}], "selector": {"app": name}}
        }))
        .unwrap();
        self.runtime
            .block_on(api.create(&PostParams::default(), &service))
            .unwrap();
    }

    /// Waits until the Service shows `address` and names an announcing node; returns the node.
    fn wait_announced(&self, name: &str, address: &str, not: Option<&str>) -> String {
        wait::until_blocking(&format!("{name} announced at {address}"), WAIT, || {
            let service = self.service(name);
            let ips: Vec<String> = service
                .status
                .and_then(|s| s.load_balancer)
                .and_then(|l| l.ingress)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| i.ip)
                .collect();
            let node = service
                .metadata
                .annotations
                .unwrap_or_default()
                .get("groundwork.dev/announcing-node")
                .cloned();
            match node {
                Some(node) if ips == [address] && Some(node.as_str()) != not => Ok(node),
                other => Err(format!("status {ips:?}, announcing node {other:?}")),
            }
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn mac_of(&self, node: &str) -> Mac {
        self.host(node).mac().unwrap()
    }

    fn node_of(&self, mac: Mac) -> String {
        NODES
            .iter()
            .find(|n| self.mac_of(n) == mac)
            .map_or_else(|| format!("{mac:02x?}"), |n| (*n).to_owned())
    }
}

async fn seed_objects(client: &kube::Client) {
    let crd: CustomResourceDefinition = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/crds/ippools.groundwork.dev.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let pools: Api<kube::api::DynamicObject> = Api::all_with(
        client.clone(),
        &kube::api::ApiResource {
            group: "groundwork.dev".into(),
            version: "v1alpha1".into(),
            api_version: "groundwork.dev/v1alpha1".into(),
            kind: "IPPool".into(),
            plural: "ippools".into(),
        },
    );
    let pool = serde_json::from_value(json!({
        "apiVersion": "groundwork.dev/v1alpha1", "kind": "IPPool",
        "metadata": {"name": "seed"}, "spec": {"addresses": ["10.10.39.200-10.10.39.220"]}
    }))
    .unwrap();
    wait::until("the IPPool CRD to serve", WAIT, || async {
        pools
            .create(&PostParams::default(), &pool)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    for name in NODES {
        let node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
        let now = "2026-01-01T00:00:00Z";
        nodes
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"conditions": [{
                    "type": "Ready", "status": "True", "reason": "KubeletReady", "message": "lab node",
                    "lastHeartbeatTime": now, "lastTransitionTime": now
                }]}})),
            )
            .await
            .unwrap();
    }
}

/// Sends an ARP request for the address from the client every 10 ms and records every reply: who
/// answered, and to which probe, so that two MACs answering one probe (or interleaving) shows.
struct ArpWatch {
    replies: Arc<Mutex<Vec<(Instant, u64, Mac)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ArpWatch {
    fn start(client: &Host, target: std::net::Ipv4Addr) -> Self {
        let mac = client.mac().unwrap();
        let ip = client.ipv4;
        let (mut tx, mut rx) = raw_channel(client, Duration::from_millis(2));
        let replies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (replies.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut probe = 0u64;
            let mut next = Instant::now();
            while !s.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    probe += 1;
                    let _ = tx.send_to(&frames::arp_request(mac, ip, target), None);
                    next += Duration::from_millis(10);
                }
                let Ok(bytes) = rx.next() else { continue };
                if let Ok(Frame::Arp(arp)) = frames::parse(bytes)
                    && arp.op == frames::ArpOp::Reply
                    && arp.sender_ip == target
                    && arp.eth_dst == mac
                {
                    r.lock()
                        .unwrap()
                        .push((Instant::now(), probe, arp.sender_mac));
                }
            }
        });
        Self {
            replies,
            stop,
            thread: Some(thread),
        }
    }

    fn replies(&self) -> Vec<(Instant, u64, Mac)> {
        self.replies.lock().unwrap().clone()
    }

    /// Waits for a reply from a MAC other than `old`; returns when it arrived and the MAC.
    fn wait_other_than(&self, old: Mac, timeout: Duration) -> (Instant, Mac) {
        wait::until_blocking("a reply from another node", timeout, || {
            self.replies()
                .into_iter()
                .find(|(_, _, m)| *m != old)
                .map(|(at, _, m)| (at, m))
                .ok_or_else(|| "only the old node answers (or nobody)".to_owned())
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Asserts that no two MACs ever answered at once: each probe got answers from one MAC, and the
    /// answering MAC changed at most `max_changes` times (two nodes answering alternately would show as
    /// many changes).
    fn assert_never_two_answering(&self, max_changes: usize) {
        let replies = self.replies();
        let mut by_probe: BTreeMap<u64, Vec<Mac>> = BTreeMap::new();
        for (_, probe, mac) in &replies {
            by_probe.entry(*probe).or_default().push(*mac);
        }
        for (probe, macs) in &by_probe {
            let mut distinct = macs.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(
                distinct.len(),
                1,
                "probe {probe} answered by {distinct:02x?}"
            );
        }
        let mut sequence: Vec<Mac> = by_probe.values().map(|m| m[0]).collect();
        sequence.dedup();
        assert!(
            sequence.len() <= max_changes + 1,
            "the answering node changed {} times: {sequence:02x?}",
            sequence.len() - 1
        );
    }
}

impl Drop for ArpWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The last reply from `old` and the first reply from anyone else.
fn gap(replies: &[(Instant, u64, Mac)], old: Mac) -> (Option<Instant>, Option<Instant>) {
    let last_old = replies
        .iter()
        .filter(|(_, _, m)| *m == old)
        .map(|(at, _, _)| *at)
        .max();
    let first_new = replies
        .iter()
        .filter(|(_, _, m)| *m != old)
        .map(|(at, _, _)| *at)
        .min();
    (last_old, first_new)
}

#[test]
fn a_killed_speakers_address_moves_to_another_node_and_the_client_follows() {
    let mut system = System::start("lb-failover-kill");
    system.create_service("web");
    let first = system.wait_announced("web", "10.10.39.200", None);
    let client = system.host("client").clone();
    let old = system.mac_of(&first);
    assert_eq!(arping(&client, VIP), [old], "one answer, from {first}");
    assert!(probe_arp(&client, UNASSIGNED, Duration::from_millis(300)).is_empty());
    kernel_traffic(&client, IpAddr::V4(VIP));
    assert_eq!(neighbour_mac(&client, IpAddr::V4(VIP)), Some(old));

    let watch = ArpWatch::start(&client, VIP);
    wait::until_blocking("the watch to see the first node", WAIT, || {
        watch
            .replies()
            .first()
            .map(|_| ())
            .ok_or_else(|| "no reply yet".to_owned())
    })
    .unwrap();
    let killed_at = Instant::now();
    system.speakers.get_mut(&first).unwrap().kill();
    let (answered_at, new) = watch.wait_other_than(old, Duration::from_secs(10));
    let second = system.node_of(new);
    assert_ne!(second, first);
    // The client's neighbour entry follows through the new node's gratuitous ARP.
    let neighbour_at =
        wait::until_blocking(
            "the client's neighbour entry to move",
            WAIT,
            || match neighbour_mac(&client, IpAddr::V4(VIP)) {
                Some(mac) if mac == new => Ok(Instant::now()),
                other => Err(format!("{other:02x?}")),
            },
        )
        .unwrap();
    watch.assert_never_two_answering(1);
    println!(
        "speaker on {first} killed: {second} answers ARP after {:?}; client's neighbour entry moved after at most {:?}",
        answered_at - killed_at,
        neighbour_at - killed_at
    );
    assert_eq!(
        system.wait_announced("web", "10.10.39.200", Some(&first)),
        second
    );
}

#[test]
fn a_node_cut_off_from_the_controller_stops_answering_before_another_node_takes_over() {
    let system = System::start("lb-failover-cut");
    system.create_service("web");
    let first = system.wait_announced("web", "10.10.39.200", None);
    let client = system.host("client").clone();
    let old = system.mac_of(&first);
    let watch = ArpWatch::start(&client, VIP);
    wait::until_blocking("the watch to see the first node", WAIT, || {
        watch
            .replies()
            .first()
            .map(|_| ())
            .ok_or_else(|| "no reply yet".to_owned())
    })
    .unwrap();

    // Partition: the node's data link stays up, its control connection goes silent.
    let cut_at = Instant::now();
    system.forwards[&first].pause();
    let (answered_at, new) = watch.wait_other_than(old, Duration::from_secs(10));
    let (last_old, _) = gap(&watch.replies(), old);
    let last_old = last_old.unwrap();
    assert!(
        last_old < answered_at,
        "the cut-off node still answered when another took over"
    );
    watch.assert_never_two_answering(1);
    println!(
        "{first} cut off: it stopped answering after {:?}, {} answers after {:?} (gap {:?})",
        last_old - cut_at,
        system.node_of(new),
        answered_at - cut_at,
        answered_at - last_old
    );

    // Healing: the node comes back; whatever the controller decides, never two answering.
    system.forwards[&first].resume();
    let healed = Instant::now();
    wait::until_blocking("the system to settle after healing", WAIT, || {
        let replies = watch.replies();
        let recent: Vec<Mac> = replies
            .iter()
            .filter(|(at, _, _)| *at > healed + Duration::from_secs(3))
            .map(|(_, _, m)| *m)
            .collect();
        (recent.len() > 20)
            .then_some(())
            .ok_or_else(|| "settling".to_owned())
    })
    .unwrap();
    // At most one more change: back to the healed node (rendezvous prefers it), after the other
    // acknowledged its release.
    watch.assert_never_two_answering(2);
}

#[test]
fn a_leader_change_moves_nothing_and_the_client_keeps_getting_answers() {
    let mut system = System::start_with("lb-failover-leader", 2, "10s");
    system.create_service("web");
    let announcer = system.wait_announced("web", "10.10.39.200", None);
    let client = system.host("client").clone();
    let mac = system.mac_of(&announcer);
    let watch = ArpWatch::start(&client, VIP);
    wait::until_blocking("the watch to see the announcer", WAIT, || {
        watch
            .replies()
            .first()
            .map(|_| ())
            .ok_or_else(|| "no reply yet".to_owned())
    })
    .unwrap();

    let killed_at = Instant::now();
    system.controllers[0].0.process().kill();
    // The standby leads once the dead leader's Lease expires; then, like a Service whose ready endpoint
    // changed, the forwarders send new connections to it.
    let standby = system.controllers[1].1;
    system.controllers[1].0.wait_ready(WAIT).unwrap();
    let leading_at = Instant::now();
    for forward in system.forwards.values() {
        forward.set_upstream(standby);
    }
    // The new leader renews what the speakers report holding: the address stays where it is.
    let renewed_for = Duration::from_secs(3);
    wait::until_blocking(
        "answers to keep coming after the new leader took over",
        WAIT,
        || {
            let last = watch.replies().last().map(|(at, _, _)| *at);
            match last {
                Some(at) if at > leading_at + renewed_for => Ok(()),
                other => Err(format!("last answer at {other:?}")),
            }
        },
    )
    .unwrap();
    let replies = watch.replies();
    assert!(
        replies.iter().all(|(_, _, m)| *m == mac),
        "the address moved"
    );
    let longest_silence = replies
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    assert!(
        longest_silence < Duration::from_millis(500),
        "the client went {longest_silence:?} without an answer"
    );
    println!(
        "leader killed: the standby led after {:?}; {announcer} kept answering (longest silence {:?})",
        leading_at - killed_at,
        longest_silence
    );
    assert_eq!(
        system.wait_announced("web", "10.10.39.200", None),
        announcer
    );
}
