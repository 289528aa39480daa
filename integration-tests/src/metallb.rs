//! MetalLB as a peer to measure ours against, in layer-2 mode ([`MetalLb::start`]) or in BGP mode with its
//! native BGP speaker ([`MetalLb::start_bgp`]): its real controller and speakers (built from the Go module by
//! `scripts/build-peers metallb`, pinned in `peers/versions.env`) against a test bed kube-apiserver, one
//! speaker in each node namespace of a lab.
//!
//! What a MetalLB install has that a lab lacks, and what stands in for it here:
//! - Its CRDs: read at run time from the pinned module in the Go module cache (`config/crd/bases`), never
//!   copied into this repository.
//! - Its webhooks: off (`--webhook-mode=disabled --disable-cert-rotation`); nothing validates the pool.
//! - Speaker Pods: memberlist finds its peers by listing the Pods labelled `app=metallb,component=speaker`
//!   in `metallb-system` and joining their `status.podIP`, and each speaker reads its own Pod at start.
//!   There is no kubelet, so [`MetalLb::start`] creates those Pods and writes their status (the node's lab
//!   address) through the status subresource, before any speaker starts (speakers list them once at start).
//! - EndpointSlices: a speaker announces a Service only if it has a ready endpoint; with no
//!   kube-controller-manager, [`MetalLb::create_backends`] writes one.
//! - The memberlist key: a file, as the Secret would be mounted.
//! - BGP mode: the router is whatever the caller runs at [`BgpPeer::peer_address`] (BIRD in the
//!   benchmarks); MetalLB gets a `BGPPeer` (metallb.io/v1beta2) and a `BGPAdvertisement` of the pool
//!   instead of the `L2Advertisement`, and its speakers run with `METALLB_BGP_TYPE=native` (the default of
//!   v0.15.2, set explicitly: the FRR modes need an FRR daemon or frr-k8s beside each speaker, which a lab
//!   does not have). Native mode refuses BFD profiles and graceful restart (the speaker discards the whole
//!   configuration), so [`BgpPeer`] has neither. Memberlist still runs (the speaker starts it whenever
//!   `--ml-labels` is given); in BGP mode no announcement depends on it.
//!
//! The controller runs on the root namespace's loopback side (as lb-controller does in the end-to-end
//! system); each speaker reaches the apiserver through a [`Forward`] on its namespace's loopback, so a node
//! can be cut off from the control plane ([`MetalLb::cut`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::forward::Forward;
use crate::kube::KubeCluster;
use crate::netlab::{Host, ip};
use crate::process::{Process, Scratch, free_port};
use crate::{HarnessError, Result, io_err, peers, wait};

/// The namespace MetalLB's objects and speaker Pods live in.
pub const NAMESPACE: &str = "metallb-system";
/// The labels memberlist selects speaker Pods by (MetalLB's manifests use the same).
pub const SPEAKER_LABELS: &str = "app=metallb,component=speaker";
/// The name of the address pool [`MetalLb::start`] creates (and of its advertisement and BGP peer).
pub const POOL: &str = "lab";
/// How long start-up steps may take (memberlist joins within a few seconds).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How MetalLB announces the pool's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// An `L2Advertisement`: one speaker answers ARP/NDP for each address, chosen over memberlist.
    Layer2,
    /// A `BGPPeer` and a `BGPAdvertisement`: every speaker with a ready endpoint behind the Service
    /// announces it to the peer over its own session (native BGP).
    Bgp(BgpPeer),
}

/// The router every MetalLB speaker peers with in [`Mode::Bgp`] (a `BGPPeer` without a node selector).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpPeer {
    /// The nodes' AS (`myASN`).
    pub my_asn: u32,
    /// The router's AS (`peerASN`).
    pub peer_asn: u32,
    /// The router's address (`peerAddress`), reachable from every node namespace on port 179.
    pub peer_address: std::net::IpAddr,
    /// The hold time the speakers offer (`holdTime`); the session uses the smaller of both sides'.
    pub hold_time: Duration,
}

/// MetalLB's controller and one speaker per node, stopped when dropped (speakers first).
pub struct MetalLb {
    speakers: BTreeMap<String, Process>,
    forwards: BTreeMap<String, Forward>,
    /// `None` while stopped by [`MetalLb::stop_controller`].
    controller: Option<Process>,
    kubeconfig: std::path::PathBuf,
    nodes: Vec<Host>,
    mode: Mode,
    client: kube::Client,
    scratch: Scratch,
}

impl std::fmt::Debug for MetalLb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetalLb")
            .field("speakers", &self.speakers)
            .field("controller", &self.controller)
            .field("logs", &self.scratch.path())
            .finish_non_exhaustive()
    }
}

impl MetalLb {
    /// Installs MetalLB's CRDs, the speaker Pods, an `IPAddressPool` of `addresses` with an
    /// `L2Advertisement`, starts the controller and a speaker in each of `nodes` (Node objects of the same
    /// names must exist), and waits until every speaker's memberlist holds every node.
    pub async fn start(cluster: &KubeCluster, nodes: &[Host], addresses: &str) -> Result<Self> {
        Self::start_in(cluster, nodes, addresses, Mode::Layer2).await
    }

    /// As [`MetalLb::start`] in BGP mode: a `BGPPeer` for `peer` and a `BGPAdvertisement` of the pool
    /// instead of the `L2Advertisement`, native BGP speakers. Returns once memberlist is joined; whether
    /// the sessions are up is the router's to say.
    pub async fn start_bgp(
        cluster: &KubeCluster,
        nodes: &[Host],
        addresses: &str,
        peer: &BgpPeer,
    ) -> Result<Self> {
        Self::start_in(cluster, nodes, addresses, Mode::Bgp(peer.clone())).await
    }

    /// The start shared by both modes.
    async fn start_in(
        cluster: &KubeCluster,
        nodes: &[Host],
        addresses: &str,
        mode: Mode,
    ) -> Result<Self> {
        // Both built, or a clear error before anything is created.
        peers::binary("metallb-controller")?;
        peers::binary("metallb-speaker")?;
        let scratch = Scratch::new("metallb")?;
        let client = cluster.client();
        cluster.install_crds(&crds()?).await?;
        create_namespace(&client).await?;
        for node in nodes {
            create_speaker_pod(&client, node).await?;
        }
        configure(&client, addresses, &mode).await?;

        let secret_dir = scratch.join("memberlist");
        std::fs::create_dir_all(&secret_dir).map_err(io_err("creating the memberlist key dir"))?;
        // The key only has to be shared by the speakers of this run; MetalLB hashes whatever it reads.
        let key = format!("groundwork-lab-{}", std::process::id());
        std::fs::write(secret_dir.join("secretkey"), key).map_err(io_err("writing the key"))?;

        let controller = spawn_controller(cluster.kubeconfig(), &scratch)?;

        let apiserver = apiserver_addr(cluster)?;
        let mut forwards = BTreeMap::new();
        for node in nodes {
            let forward = Forward::start(node, apiserver)?;
            let kubeconfig = scratch.join(&format!("{}.kubeconfig", node.name));
            write_kubeconfig_via(cluster, &kubeconfig, forward.local())?;
            forwards.insert(node.name.clone(), forward);
        }
        let mut metallb = Self {
            speakers: BTreeMap::new(),
            forwards,
            controller: Some(controller),
            kubeconfig: cluster.kubeconfig().to_owned(),
            nodes: nodes.to_vec(),
            mode,
            client,
            scratch,
        };
        for node in nodes {
            metallb.start_speaker(&node.name)?;
        }
        metallb.wait_memberlist().await?;
        Ok(metallb)
    }

    /// Starts `node`'s speaker (again, after it was stopped or killed: a restart), with the flags of
    /// [`MetalLb::start_in`]; its log goes on in the same file.
    pub fn start_speaker(&mut self, node: &str) -> Result<()> {
        let host = self.node(node)?.clone();
        let kubeconfig = self.scratch.join(&format!("{node}.kubeconfig"));
        let secret_dir = self.scratch.join("memberlist");
        let binary = peers::binary("metallb-speaker")?;
        let mut command = host.command(&binary.display().to_string());
        command.env("KUBECONFIG", &kubeconfig).args([
            "--node-name",
            node,
            "--pod-name",
            &speaker_pod(&host),
            "--namespace",
            NAMESPACE,
            "--host",
            "127.0.0.1",
            "--ml-bindaddr",
            &host.ipv4.to_string(),
            "--ml-labels",
            SPEAKER_LABELS,
            "--ml-secret-key-path",
            &secret_dir.display().to_string(),
            "--log-level=info",
        ]);
        if matches!(self.mode, Mode::Bgp(_)) {
            command.env("METALLB_BGP_TYPE", "native");
        }
        // One speaker a node: one still running there would hold its ports.
        if let Some(mut old) = self.speakers.remove(node) {
            old.stop(Duration::from_secs(5));
        }
        let log = self.scratch.join(&format!("metallb-speaker-{node}.log"));
        let process = Process::spawn(&format!("metallb-speaker on {node}"), command, &log)?;
        self.speakers.insert(node.to_owned(), process);
        Ok(())
    }

    /// Waits until each speaker logged a memberlist join of every node (itself included): from then on
    /// all of them elect the same announcer for an address.
    async fn wait_memberlist(&mut self) -> Result<()> {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        wait::until(
            "every MetalLB speaker to see every node",
            START_TIMEOUT,
            || {
                let mut state = Ok(());
                for process in self.speakers.values_mut().chain(self.controller.as_mut()) {
                    if let Err(e) = process.check_running() {
                        state = Err(e.to_string());
                    }
                }
                let missing: Vec<String> = self
                    .speakers
                    .iter()
                    .flat_map(|(node, process)| {
                        let log = std::fs::read_to_string(process.log_path()).unwrap_or_default();
                        names
                            .iter()
                            .filter(|name| {
                                !log.lines().any(|l| {
                                    l.contains("NodeJoin")
                                        && l.contains(&format!("\"node name\":\"{name}\""))
                                })
                            })
                            .map(|name| format!("{node} lacks {name}"))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                async move {
                    state?;
                    if missing.is_empty() {
                        Ok(())
                    } else {
                        Err(missing.join(", "))
                    }
                }
            },
        )
        .await
    }

    /// Stops MetalLB's controller (SIGTERM, then SIGKILL), so that another implementation can own the
    /// Services meanwhile; its configuration stays.
    pub fn stop_controller(&mut self) {
        if let Some(mut controller) = self.controller.take() {
            controller.stop(Duration::from_secs(5));
        }
    }

    /// Starts MetalLB's controller (again) with the same flags: a restart, as after an upgrade.
    pub fn start_controller(&mut self) -> Result<()> {
        self.stop_controller();
        self.controller = Some(spawn_controller(&self.kubeconfig, &self.scratch)?);
        Ok(())
    }

    /// Creates an EndpointSlice with one ready endpoint for the Service `name` in `default` (what
    /// kube-controller-manager would write for a running backend): without one no speaker announces it.
    pub async fn create_backends(&self, name: &str) -> Result<()> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), "default");
        let backend = self
            .nodes
            .first()
            .map_or_else(String::new, |n| n.ipv4.to_string());
        let slice = object(json!({
            "metadata": {"name": format!("{name}-lab"),
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [backend], "conditions": {"ready": true}}],
            "ports": [{"port": 80, "protocol": "TCP"}]
        }))?;
        api.create(&PostParams::default(), &slice).await?;
        Ok(())
    }

    /// Creates the LoadBalancer Service `name` in `default` (the same shape as the end-to-end system's).
    pub async fn create_service(&self, name: &str) -> Result<()> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), "default");
        let service = object(json!({
            "metadata": {"name": name},
            "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                     "ports": [{"port": 80}], "selector": {"app": name}}
        }))?;
        api.create(&PostParams::default(), &service).await?;
        Ok(())
    }

    /// The addresses in the Service's status.
    pub async fn service_addresses(&self, name: &str) -> Result<Vec<String>> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), "default");
        Ok(crate::kube::status_ips(&api.get(name).await?))
    }

    /// The speaker process on `node`.
    pub fn speaker(&mut self, node: &str) -> Option<&mut Process> {
        self.speakers.get_mut(node)
    }

    /// Cuts `node` off: its speaker's apiserver link stops moving bytes (as the end-to-end system's cut
    /// does to lb-speaker's controller link), and IP between it and every other node is dropped by
    /// blackhole routes on both sides, which silences memberlist (UDP and TCP on 7946 between node
    /// addresses), MetalLB's only failure detector. Its link to the bridge stays up: it still receives and
    /// answers ARP from the client.
    pub fn cut(&self, node: &str) -> Result<()> {
        let target = self.node(node)?;
        if let Some(forward) = self.forwards.get(node) {
            forward.pause();
        }
        for other in self.nodes.iter().filter(|n| n.name != node) {
            blackhole(target, other)?;
            blackhole(other, target)?;
        }
        Ok(())
    }

    /// The scratch directory with the controller's and speakers' logs.
    pub fn logs(&self) -> &std::path::Path {
        self.scratch.path()
    }

    fn node(&self, name: &str) -> Result<&Host> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| HarnessError::Setup(format!("no MetalLB node {name}")))
    }
}

/// MetalLB's CRDs from the module pinned as `METALLB_CRD_VERSION` in the Go module cache (fetched
/// through the module proxy if missing): the resources users write, which lb-controller reads in place,
/// and which the pinned MetalLB binaries read too.
pub fn crds() -> Result<Vec<CustomResourceDefinition>> {
    crate::kube::module_crds(
        "go.universe.tf/metallb",
        "METALLB_CRD_VERSION",
        "config/crd/bases",
    )
}

/// The pinned version of the MetalLB binaries (`METALLB_VERSION` in `integration-tests/peers/versions.env`).
pub fn version() -> Result<String> {
    peers::pinned_version("METALLB_VERSION")
}

fn object<T: k8s_openapi::serde::de::DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| HarnessError::Setup(format!("MetalLB object: {e}")))
}

/// MetalLB's controller with webhooks off, logging into `scratch`.
fn spawn_controller(kubeconfig: &std::path::Path, scratch: &Scratch) -> Result<Process> {
    let mut command = std::process::Command::new(peers::binary("metallb-controller")?);
    command.env("KUBECONFIG", kubeconfig).args([
        "--namespace",
        NAMESPACE,
        "--webhook-mode=disabled",
        "--disable-cert-rotation",
        "--log-level=info",
        &format!("--port={}", free_port()?),
    ]);
    Process::spawn(
        "metallb-controller",
        command,
        &scratch.join("metallb-controller.log"),
    )
}

fn speaker_pod(node: &Host) -> String {
    format!("speaker-{}", node.name)
}

async fn create_namespace(client: &kube::Client) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": NAMESPACE}}))?,
        )
        .await?;
    // Pod admission wants the namespace's default ServiceAccount, which only kube-controller-manager
    // would create.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), NAMESPACE);
    accounts
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "default"}}))?,
        )
        .await?;
    Ok(())
}

/// A speaker Pod bound to `node`, Running at the node's lab address, as a kubelet would report it.
async fn create_speaker_pod(client: &kube::Client, node: &Host) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let labels: serde_json::Map<String, Value> = SPEAKER_LABELS
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), Value::from(v)))
        .collect();
    let name = speaker_pod(node);
    let pod = object(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node.name, "hostNetwork": true, "automountServiceAccountToken": false,
                 "containers": [{"name": "speaker", "image": "quay.io/metallb/speaker"}]}
    }))?;
    api.create(&PostParams::default(), &pod).await?;
    let address = node.ipv4.to_string();
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "phase": "Running", "podIP": address, "podIPs": [{"ip": address}], "hostIP": address
        }})),
    )
    .await?;
    Ok(())
}

/// The `IPAddressPool`, and per `mode` an `L2Advertisement` of it or a `BGPPeer` and a `BGPAdvertisement`
/// of it.
async fn configure(client: &kube::Client, addresses: &str, mode: &Mode) -> Result<()> {
    create_object(
        client,
        "v1beta1",
        "IPAddressPool",
        "ipaddresspools",
        json!({"addresses": [addresses]}),
    )
    .await?;
    match mode {
        Mode::Layer2 => {
            create_object(
                client,
                "v1beta1",
                "L2Advertisement",
                "l2advertisements",
                json!({"ipAddressPools": [POOL]}),
            )
            .await
        }
        Mode::Bgp(peer) => {
            create_object(
                client,
                "v1beta2",
                "BGPPeer",
                "bgppeers",
                json!({"myASN": peer.my_asn, "peerASN": peer.peer_asn,
                       "peerAddress": peer.peer_address.to_string(),
                       "holdTime": format!("{}s", peer.hold_time.as_secs())}),
            )
            .await?;
            create_object(
                client,
                "v1beta1",
                "BGPAdvertisement",
                "bgpadvertisements",
                json!({"ipAddressPools": [POOL]}),
            )
            .await
        }
    }
}

/// Creates the metallb.io object `kind` named [`POOL`] in [`NAMESPACE`] with `spec`.
async fn create_object(
    client: &kube::Client,
    version: &str,
    kind: &str,
    plural: &str,
    spec: Value,
) -> Result<()> {
    let api_version = format!("metallb.io/{version}");
    let resource = ApiResource {
        group: "metallb.io".into(),
        version: version.into(),
        api_version: api_version.clone(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &resource);
    let object = object(json!({
        "apiVersion": api_version, "kind": kind, "metadata": {"name": POOL}, "spec": spec
    }))?;
    api.create(&PostParams::default(), &object).await?;
    Ok(())
}

fn apiserver_addr(cluster: &KubeCluster) -> Result<SocketAddr> {
    cluster
        .server_url()
        .strip_prefix("https://")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| {
            HarnessError::Setup(format!(
                "apiserver URL {} is not https://ip:port",
                cluster.server_url()
            ))
        })
}

/// The cluster's admin kubeconfig with the server replaced by `local` (a forwarder inside a namespace;
/// the apiserver's certificate names 127.0.0.1, so TLS still verifies).
fn write_kubeconfig_via(
    cluster: &KubeCluster,
    path: &std::path::Path,
    local: SocketAddr,
) -> Result<()> {
    let text = std::fs::read_to_string(cluster.kubeconfig())
        .map_err(io_err("reading the admin kubeconfig"))?;
    let mut config: Value = serde_json::from_str(&text)
        .map_err(|e| HarnessError::Kubeconfig(format!("admin kubeconfig: {e}")))?;
    let clusters = config["clusters"]
        .as_array_mut()
        .ok_or_else(|| HarnessError::Kubeconfig("admin kubeconfig has no clusters".to_owned()))?;
    for entry in clusters {
        entry["cluster"]["server"] = Value::from(format!("https://{local}"));
    }
    std::fs::write(path, config.to_string()).map_err(io_err(format!("writing {}", path.display())))
}

/// Drops every IP packet `from` sends to `to` (a blackhole route in `from`'s namespace).
fn blackhole(from: &Host, to: &Host) -> Result<()> {
    ip(&[
        "-n",
        &from.netns,
        "route",
        "add",
        "blackhole",
        &format!("{}/32", to.ipv4),
    ])
    .map(|_| ())
}
