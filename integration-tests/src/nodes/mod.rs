//! A Kubernetes cluster on real nodes, on one machine: the seed's nodes m1, n1 and n2 as network namespaces on
//! the lab bridge, each running its own containerd, kubelet and kube-proxy ([`node`]), with the test bed's
//! control plane (etcd, kube-apiserver, kube-controller-manager, plus kube-scheduler) on the machine's
//! loopback and a forwarder on m1's address bringing kubelets and Pods to the apiserver, as if m1 ran it.
//!
//! Pods get addresses from a CNI bridge per node (`10.244.<i>.0/24`), routed between nodes across the lab
//! bridge; Services work through kube-proxy in each node's namespace; the cluster DNS is CoreDNS in a Pod
//! ([`addons`]); PersistentVolumes are local directories ([`addons`]). Nothing comes from a registry: the
//! images are built here ([`crate::images`]) and imported into every node's containerd.
//!
//! Everything a cluster creates is reported to a [`Tracker`] as it is created (so that a supervisor that dies
//! can still be cleaned up after) and removed when the [`NodeCluster`] is dropped: processes by PID, each
//! node's cgroup with whatever is left in it, mount namespaces, network namespaces. The machine's sysctls,
//! cgroups and any containerd of its own are never touched.

pub mod addons;
pub mod cgroup;
pub mod kept_logs;
pub mod mountns;
pub mod node;

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node as NodeObject;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use tokio::runtime::Runtime;

use crate::forward::Forward;
use crate::kube::{ClusterOptions, KubeCluster};
use crate::netlab::{Host, LabNetwork, LabSpec};
use crate::process::Process;
use crate::{HarnessError, Result, images, io_err, peers, wait};
use cgroup::Cgroup;
use kept_logs::LogKeeper;
use mountns::PrivateDir;
use node::{Node, NodeConfig};

/// The seed's nodes, in order; node `i` gets Pod range `10.244.<i>.0/24`.
pub const NODES: [&str; 3] = ["m1", "n1", "n2"];
/// The node the control plane is reached through (the seed's master).
pub const CONTROL_PLANE_NODE: &str = "m1";
/// How long nodes may take to become Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// What a bring-up reports as it goes, so that a supervisor can record it and clean up after a crash.
pub trait Tracker {
    /// A progress line; an error abandons the bring-up (a stop was requested).
    fn step(&mut self, message: &str) -> Result<()>;
    /// A process was started.
    fn process(&mut self, process: &Process) -> Result<()>;
    /// Network namespaces were created.
    fn namespaces(&mut self, names: &[String]) -> Result<()>;
    /// A cgroup was created (kill what is inside, then remove it).
    fn cgroup(&mut self, name: &str) -> Result<()>;
    /// A mount was made (unmount it, in the reverse order of reporting).
    fn mount(&mut self, path: &Path) -> Result<()>;
}

/// A [`Tracker`] that prints progress to stderr and records nothing (for tests, which clean up on drop).
#[derive(Debug, Default)]
pub struct PrintTracker;

impl Tracker for PrintTracker {
    fn step(&mut self, message: &str) -> Result<()> {
        eprintln!("[nodes] {message}");
        Ok(())
    }
    fn process(&mut self, _: &Process) -> Result<()> {
        Ok(())
    }
    fn namespaces(&mut self, _: &[String]) -> Result<()> {
        Ok(())
    }
    fn cgroup(&mut self, _: &str) -> Result<()> {
        Ok(())
    }
    fn mount(&mut self, _: &Path) -> Result<()> {
        Ok(())
    }
}

/// A running cluster on real nodes. Fields drop in order: the nodes (agents, then everything left in their
/// cgroups, then their mount namespaces), the scheduler, the forwarder, the control plane, and the network
/// namespaces last.
pub struct NodeCluster {
    nodes: Vec<Node>,
    scheduler: Process,
    _apiserver_forward: Forward,
    cluster: KubeCluster,
    _control_cgroup: Cgroup,
    _mount_dir: PrivateDir,
    _log_keeper: LogKeeper,
    network: LabNetwork,
    server: String,
}

impl std::fmt::Debug for NodeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCluster")
            .field("server", &self.server)
            .field("nodes", &NODES)
            .finish_non_exhaustive()
    }
}

impl NodeCluster {
    /// Builds the network, the control plane and the nodes, with configuration, state and logs under `dir`,
    /// loads the support images (pause, CoreDNS, etcd, httpd) into every node, and waits until every node is
    /// Ready. Needs root, the kubelet, kube-proxy and kube-scheduler peers, and Debian's containerd, runc and
    /// CNI plugins (`scripts/install-deps`).
    pub fn start(dir: &Path, runtime: &Runtime, tracker: &mut dyn Tracker) -> Result<Self> {
        crate::require_root("run kubelets in network namespaces")?;
        for peer in ["kubelet", "kube-proxy", "kube-scheduler"] {
            peers::binary(peer)?;
        }
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;

        tracker.step(
            "support images: pause, CoreDNS, etcd, busybox httpd (built here, no registry)",
        )?;
        let image_dir = dir.join("images");
        let mut archives = Vec::new();
        for (name, spec) in [
            ("pause", images::pause(&image_dir.join("work"))?),
            ("coredns", images::coredns()?),
            ("etcd", images::etcd()?),
            ("httpd", images::httpd()?),
        ] {
            let archive = image_dir.join(format!("{name}.oci.tar"));
            spec.write(&archive)?;
            archives.push(archive);
        }

        tracker
            .step("lab network: a bridge with node namespaces m1, n1, n2 and a client namespace")?;
        cgroup::sweep_leftovers()?;
        mountns::sweep_leftovers()?;
        let network = LabNetwork::create(&LabSpec::seed())?;
        let mut namespaces: Vec<String> = network.hosts().iter().map(|h| h.netns.clone()).collect();
        namespaces.push(network.switch_netns().to_owned());
        tracker.namespaces(&namespaces)?;
        let hosts: Vec<Host> = NODES
            .iter()
            .map(|name| network.find(name).cloned())
            .collect::<Result<_>>()?;
        let control = hosts[0].clone();

        tracker.step(&format!(
            "control plane: etcd, kube-apiserver (advertised on {}), kube-controller-manager, kube-scheduler",
            control.ipv4
        ))?;
        let mut cluster = runtime.block_on(KubeCluster::start_with(ClusterOptions {
            controller_manager: true,
            advertise: Some(control.ipv4),
        }))?;
        tracker.process(cluster.etcd().process())?;
        tracker.process(cluster.apiserver())?;
        if let Some(kcm) = cluster.controller_manager() {
            tracker.process(kcm)?;
        }
        let port = cluster.port();
        let apiserver_forward = Forward::start_at(
            &control,
            (control.ipv4, port).into(),
            ([127, 0, 0, 1], port).into(),
        )?;
        let server = format!("https://{}:{port}", control.ipv4);
        let scheduler_kubeconfig = cluster.client_kubeconfig(
            "kube-scheduler",
            "system:kube-scheduler",
            &[],
            cluster.server_url(),
        )?;
        let mut scheduler_command = std::process::Command::new(peers::binary("kube-scheduler")?);
        scheduler_command
            .arg(format!("--kubeconfig={}", scheduler_kubeconfig.display()))
            .arg(format!(
                "--authentication-kubeconfig={}",
                scheduler_kubeconfig.display()
            ))
            .arg(format!(
                "--authorization-kubeconfig={}",
                scheduler_kubeconfig.display()
            ))
            .arg("--bind-address=127.0.0.1")
            .arg("--secure-port=0")
            .arg("--leader-elect=false")
            .arg("--v=1");
        let scheduler = Process::spawn(
            "kube-scheduler",
            scheduler_command,
            &dir.join("kube-scheduler.log"),
        )?;
        tracker.process(&scheduler)?;
        // The control plane gets a cgroup of its own, as it would a machine of its own. Left in the root
        // cgroup, each of its threads weighs as much as a whole node's cgroup (cgroup v1 counts root tasks one
        // by one): a busy apiserver then starved the nodes' Pods for a second at a time, and the speakers'
        // one-second leases lapsed mid-rollout, which no real node sharing nothing with the control plane sees.
        let control_cgroup = Cgroup::create(&format!("{}-control", network.run_id()))?;
        tracker.cgroup(control_cgroup.name())?;
        let mut control_pids = vec![cluster.etcd().process().pid(), cluster.apiserver().pid()];
        control_pids.extend(cluster.controller_manager().map(|kcm| kcm.pid()));
        control_pids.push(scheduler.pid());
        for pid in control_pids {
            control_cgroup.join(pid)?;
        }

        tracker.step(
            "Node objects m1, n1, n2 with their Pod ranges; routes between the nodes' Pods",
        )?;
        let client = cluster.client();
        runtime.block_on(create_nodes(&client, &hosts))?;
        for (i, host) in hosts.iter().enumerate() {
            for (j, other) in hosts.iter().enumerate() {
                if i != j {
                    crate::netlab::ip(&[
                        "-n",
                        &host.netns,
                        "route",
                        "add",
                        &pod_cidr(j),
                        "via",
                        &other.ipv4.to_string(),
                    ])?;
                }
            }
        }

        let mount_dir = mountns::private_dir(&dir.join(format!("{}-mntns", network.run_id())))?;
        tracker.mount(mount_dir.path())?;
        let proxy_kubeconfig =
            cluster.client_kubeconfig("kube-proxy", "system:kube-proxy", &[], &server)?;
        let mut nodes: Vec<Node> = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            tracker.step(&format!(
                "node {}: containerd, kubelet, kube-proxy in {}",
                host.name, host.netns
            ))?;
            let kubelet_kubeconfig = cluster.client_kubeconfig(
                &format!("kubelet-{}", host.name),
                &format!("system:node:{}", host.name),
                &["system:nodes"],
                &server,
            )?;
            let mount_file = mount_dir.path().join(&host.name);
            tracker.cgroup(&host.netns)?;
            tracker.mount(&mount_file)?;
            let mut node = Node::start(NodeConfig {
                host: host.clone(),
                pod_cidr: pod_cidr(i),
                dir: dir.join(&host.name),
                mount_file,
                ca: cluster.ca_file(),
                kubelet_kubeconfig,
                proxy_kubeconfig: proxy_kubeconfig.clone(),
            })?;
            for process in node.processes() {
                tracker.process(process)?;
            }
            for archive in &archives {
                node.import_image(archive)?;
            }
            nodes.push(node);
        }

        let log_keeper = LogKeeper::start(
            nodes
                .iter()
                .map(|n| (n.pod_logs(), n.kept_pod_logs()))
                .collect(),
        );
        let mut cluster = Self {
            _log_keeper: log_keeper,
            nodes,
            scheduler,
            _apiserver_forward: apiserver_forward,
            cluster,
            _control_cgroup: control_cgroup,
            _mount_dir: mount_dir,
            network,
            server,
        };
        tracker.step("waiting for the kubelets to report their nodes Ready")?;
        cluster.wait_ready(runtime)?;
        Ok(cluster)
    }

    /// Waits until every node is Ready, failing early if a node's agents die.
    fn wait_ready(&mut self, runtime: &Runtime) -> Result<()> {
        let api: Api<NodeObject> = Api::all(self.cluster.client());
        wait::until_blocking("every node to be Ready", READY_TIMEOUT, || {
            for node in &mut self.nodes {
                node.check_running().map_err(|e| e.to_string())?;
            }
            self.scheduler.check_running().map_err(|e| e.to_string())?;
            let list = runtime
                .block_on(api.list(&Default::default()))
                .map_err(|e| e.to_string())?;
            let not_ready: Vec<String> = NODES
                .iter()
                .filter(|name| {
                    !list.items.iter().any(|n| {
                        n.metadata.name.as_deref() == Some(**name)
                            && n.status
                                .as_ref()
                                .and_then(|s| s.conditions.as_ref())
                                .is_some_and(|c| {
                                    c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                                })
                    })
                })
                .map(|n| (*n).to_owned())
                .collect();
            if not_ready.is_empty() {
                Ok(())
            } else {
                Err(format!("not Ready yet: {not_ready:?}"))
            }
        })
    }

    /// Imports an image archive into every node's containerd.
    pub fn load_image(&self, archive: &Path) -> Result<()> {
        for node in &self.nodes {
            node.import_image(archive)?;
        }
        Ok(())
    }

    /// An admin client.
    pub fn client(&self) -> kube::Client {
        self.cluster.client()
    }

    /// The admin kubeconfig (for helm), pointing at the apiserver's loopback address.
    pub fn kubeconfig(&self) -> &Path {
        self.cluster.kubeconfig()
    }

    /// The control plane.
    pub fn control_plane(&mut self) -> &mut KubeCluster {
        &mut self.cluster
    }

    /// The apiserver as kubelets and Pods reach it (m1's address).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The lab's namespaces.
    pub fn network(&self) -> &LabNetwork {
        &self.network
    }

    /// The host (node or `client`) called `name`.
    pub fn host(&self, name: &str) -> Result<&Host> {
        self.network.find(name)
    }

    /// The running nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Every process the cluster runs that should still be running: control plane, scheduler, node agents.
    pub fn processes(&mut self) -> Vec<&mut Process> {
        let mut all: Vec<&mut Process> = self
            .nodes
            .iter_mut()
            .flat_map(|n| n.processes().into_iter())
            .collect();
        all.push(&mut self.scheduler);
        all
    }

    /// The container logs of every Pod whose name starts with `prefix`, on any node, last `lines` lines each
    /// (for failure messages: the apiserver cannot reach the kubelets to serve `kubectl logs`).
    pub fn pod_logs(&self, prefix: &str, lines: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            for log in log_files(&node.pod_logs()) {
                let pod = log
                    .strip_prefix(node.pod_logs())
                    .ok()
                    .and_then(|p| p.iter().next())
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                // Directories are <namespace>_<pod>_<uid>.
                if pod.split('_').nth(1).is_some_and(|p| p.starts_with(prefix)) {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    let all: Vec<&str> = text.lines().collect();
                    out.push_str(&format!("--- {} on {}\n", log.display(), node.name()));
                    out.push_str(&all[all.len().saturating_sub(lines)..].join("\n"));
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// Node `i`'s Pod range.
pub fn pod_cidr(i: usize) -> String {
    format!("10.244.{i}.0/24")
}

/// Creates the Node objects before their kubelets start, with their Pod ranges (which the CNI configuration
/// and the routes between nodes already use) and the labels a kubelet would set.
async fn create_nodes(client: &kube::Client, hosts: &[Host]) -> Result<()> {
    let api: Api<NodeObject> = Api::all(client.clone());
    for (i, host) in hosts.iter().enumerate() {
        let node: NodeObject = serde_json::from_value(json!({
            "metadata": {"name": host.name, "labels": {
                "kubernetes.io/hostname": host.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "groundwork.dev/lab": "true",
            }},
            "spec": {"podCIDR": pod_cidr(i), "podCIDRs": [pod_cidr(i)]},
        }))
        .map_err(|e| HarnessError::Setup(format!("Node {}: {e}", host.name)))?;
        api.create(&PostParams::default(), &node).await?;
    }
    Ok(())
}

/// Every file below `dir`.
fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(log_files(&path));
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}
