//! The whole load-balancing system for end-to-end tests and the failover benchmark: the `lb-controller`
//! binary against the test bed's kube-apiserver (root namespace), an `lb-speaker` in each node namespace
//! of the seed lab (m1, n1, n2) reaching it over mutual TLS through a loopback forwarder that can be
//! paused (a partition) or retargeted (a new leader). The client namespace watches ARP with the test bed's
//! [`integration_tests::lab::probe::ArpProbe`], a request every [`PROBE_EVERY`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use integration_tests::certs::{Ca, TlsFiles, Usage};
use integration_tests::daemon::Daemon;
use integration_tests::forward::Forward;
use integration_tests::kube::KubeCluster;
use integration_tests::launch::LbController;
use integration_tests::netlab::{Host, LabNetwork, LabSpec};
use integration_tests::process::{Process, Scratch, free_port, workspace_binary};
use integration_tests::speaker_identity::SpeakerAccount;
use integration_tests::wait;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::PostParams;
use lb_speaker::frames::Mac;
use serde_json::json;

use super::start_speaker;

/// The speaker binary: the tests' and the bench's own package builds it.
pub const SPEAKER: &str = env!("CARGO_BIN_EXE_lb-speaker");
/// How long conditions are waited for.
pub const WAIT: Duration = Duration::from_secs(30);
/// The seed's nodes.
pub const NODES: [&str; 3] = ["m1", "n1", "n2"];
/// How often the client asks who has the address while a fault is injected.
pub const PROBE_EVERY: Duration = Duration::from_millis(10);

/// The whole system on one machine. Fields drop in order: speakers, forwarders, controller, cluster,
/// and the namespaces last.
pub struct System {
    /// The speaker processes by node.
    pub speakers: BTreeMap<String, Process>,
    /// The forwarders by node.
    pub forwards: BTreeMap<String, Forward>,
    /// The controllers and their gRPC addresses; the first leads.
    pub controllers: Vec<(Daemon, SocketAddr)>,
    /// The speakers' TLS files and controller-loss hold, to restart one.
    speaker_tls: TlsFiles,
    hold: Duration,
    client: kube::Client,
    runtime: tokio::runtime::Runtime,
    _cluster: KubeCluster,
    _scratch: Scratch,
    lab: LabNetwork,
}

impl System {
    pub fn start(what: &str) -> Self {
        Self::start_with(what, 1, Duration::from_secs(2))
    }

    /// `controllers` replicas (with leader election when more than one; the first leads) and speakers
    /// configured with `hold` as their controller-loss hold.
    pub fn start_with(what: &str, controllers: usize, hold: Duration) -> Self {
        Self::start_on(what, &LabSpec::seed(), controllers, hold)
    }

    /// As [`System::start_with`], on the network `spec` (the seed's hosts and more, e.g. a router).
    pub fn start_on(what: &str, spec: &LabSpec, controllers: usize, hold: Duration) -> Self {
        Self::start_on_with(what, spec, controllers, hold, |c| c, |_, _| {})
    }

    /// As [`System::start_on`], with `flags` added to each controller's command line, and `prepare` run
    /// against the cluster before any controller starts (CRDs and objects it must find at its first list).
    pub fn start_on_with(
        what: &str,
        spec: &LabSpec,
        controllers: usize,
        hold: Duration,
        flags: impl Fn(LbController) -> LbController,
        prepare: impl FnOnce(&tokio::runtime::Runtime, &KubeCluster),
    ) -> Self {
        let lab = LabNetwork::create(spec).unwrap_or_else(|e| panic!("{e}"));
        let scratch = Scratch::new(what).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let cluster = runtime.block_on(KubeCluster::start()).unwrap();
        let client = cluster.client();
        runtime.block_on(seed_objects(&cluster));
        prepare(&runtime, &cluster);
        // Each speaker proves its node with a token of the speakers' account from a Pod on that node.
        let account = SpeakerAccount::default();
        for node in NODES {
            runtime
                .block_on(account.token_file(&client, node, scratch.path()))
                .unwrap();
        }

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
        let mut replicas = Vec::new();
        for replica in 0..controllers {
            let grpc: SocketAddr = ([127, 0, 0, 1], free_port().unwrap()).into();
            let mut launcher = flags(LbController::new(&binary, cluster.kubeconfig()))
                .grpc(grpc)
                .tls(&server)
                .speaker_account(&account)
                .loss_hold(hold);
            if controllers > 1 {
                launcher = launcher.leader_elect().leader_lease(Duration::from_secs(2));
            }
            let mut controller = launcher.start().unwrap();
            if replica == 0 {
                controller.wait_ready(WAIT).unwrap();
                if controllers > 1 {
                    controller
                        .wait_metric("groundwork_lb_controller_leader 1", WAIT)
                        .unwrap();
                }
            }
            replicas.push((controller, grpc));
        }
        let grpc = replicas[0].1;

        let mut forwards = BTreeMap::new();
        let mut speakers = BTreeMap::new();
        for node in NODES {
            let host = lab.host(node).unwrap();
            let forward = Forward::start(host, grpc).unwrap();
            let process = spawn_speaker(host, &scratch, &forward, &speaker, hold);
            forwards.insert(node.to_owned(), forward);
            speakers.insert(node.to_owned(), process);
        }
        Self {
            speakers,
            forwards,
            controllers: replicas,
            speaker_tls: speaker,
            hold,
            client,
            runtime,
            _cluster: cluster,
            _scratch: scratch,
            lab,
        }
    }

    /// Starts `node`'s speaker again (after it was killed) and waits until it serves its probes.
    pub fn restart_speaker(&mut self, node: &str) {
        let process = spawn_speaker(
            self.lab.host(node).unwrap(),
            &self._scratch,
            &self.forwards[node],
            &self.speaker_tls,
            self.hold,
        );
        self.speakers.insert(node.to_owned(), process);
    }

    /// The scratch directory (logs, certificates, router configurations).
    pub fn scratch(&self) -> &std::path::Path {
        self._scratch.path()
    }

    /// The API client.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Runs `future` on the system's runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    pub fn host(&self, name: &str) -> &Host {
        self.lab.host(name).unwrap()
    }

    pub fn service(&self, name: &str) -> Service {
        let api: Api<Service> = Api::namespaced(self.client.clone(), "default");
        self.runtime.block_on(api.get(name)).unwrap()
    }

    pub fn create_service(&self, name: &str) {
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
    pub fn wait_announced(&self, name: &str, address: &str, not: Option<&str>) -> String {
        wait::until_blocking(&format!("{name} announced at {address}"), WAIT, || {
            let service = self.service(name);
            let ips = integration_tests::kube::status_ips(&service);
            let node = integration_tests::kube::announcing_node(&service);
            match node {
                Some(node) if ips == [address] && Some(node.as_str()) != not => Ok(node),
                other => Err(format!("status {ips:?}, announcing node {other:?}")),
            }
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn mac_of(&self, node: &str) -> Mac {
        self.host(node).mac().unwrap()
    }

    pub fn node_of(&self, mac: Mac) -> String {
        NODES
            .iter()
            .find(|n| self.mac_of(n) == mac)
            .map_or_else(|| format!("{mac:02x?}"), |n| (*n).to_owned())
    }
}

/// The IPPool CRD and Ready nodes (the lab's own seeding), and the seed pool.
async fn seed_objects(cluster: &KubeCluster) {
    integration_tests::lab::seed::install_crd_and_nodes(cluster, &NODES)
        .await
        .unwrap();
    let pools: Api<kube::api::DynamicObject> = Api::all_with(
        cluster.client(),
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
    pools.create(&PostParams::default(), &pool).await.unwrap();
}

fn spawn_speaker(
    host: &Host,
    scratch: &Scratch,
    forward: &Forward,
    tls: &TlsFiles,
    hold: Duration,
) -> Process {
    let url = format!("https://127.0.0.1:{}", forward.local().port());
    let token = scratch.path().join(format!("token-{}", host.name));
    start_speaker(SPEAKER, host, scratch, &url, |speaker| {
        speaker.tls(tls).loss_hold(hold).token_file(&token)
    })
}
