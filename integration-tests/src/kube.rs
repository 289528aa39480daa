//! A real Kubernetes control plane for a test: etcd, kube-apiserver and (optionally)
//! kube-controller-manager built from `k8s.io/kubernetes`, with generated certificates, an admin
//! kubeconfig on disk and a ready [`kube::Client`].
//!
//! There are no nodes or kubelets: tests that need "nodes" create Node objects and, for the data plane,
//! use [`crate::netlab`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::Deserialize;

use crate::certs::{self, Ca, Usage};
use crate::etcd::Etcd;
use crate::process::{Process, Scratch, free_port};
use crate::{HarnessError, Result, peers, wait};

/// How long the apiserver may take to become ready; the target is well under 15 s.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The Service CIDRs handed to the apiserver (virtual addresses only, nothing routes them): IPv4 first, so
/// single-stack Services are IPv4 as in most clusters, and an IPv6 range so that dual-stack Services
/// (`ipFamilyPolicy: RequireDualStack`) are accepted.
const SERVICE_CIDR: &str = "10.96.0.0/16,fd00:10:96::/112";

/// What to start besides etcd and the apiserver.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterOptions {
    /// Also run kube-controller-manager (service accounts, garbage collection, EndpointSlices...).
    pub controller_manager: bool,
    /// For real nodes: the address the apiserver advertises (the `kubernetes` Service's endpoint, in its
    /// certificate), where a forwarder inside the lab network brings kubelets and Pods to it. Without it the
    /// `kubernetes` Service has no endpoints.
    pub advertise: Option<std::net::Ipv4Addr>,
}

/// A running control plane, stopped and deleted on drop.
pub struct KubeCluster {
    // Fields drop in order: processes stop before the etcd they use and before files are removed.
    controller_manager: Option<Process>,
    apiserver: Process,
    apiserver_binary: PathBuf,
    apiserver_port: u16,
    advertise: Option<std::net::Ipv4Addr>,
    ca: Ca,
    etcd: Etcd,
    client: Client,
    kubeconfig: PathBuf,
    server_url: String,
    started_in: Duration,
    scratch: Scratch,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster")
            .field("server_url", &self.server_url)
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl KubeCluster {
    /// etcd + kube-apiserver.
    pub async fn start() -> Result<Self> {
        Self::start_with(ClusterOptions::default()).await
    }

    /// etcd + kube-apiserver + kube-controller-manager.
    pub async fn start_with_controller_manager() -> Result<Self> {
        Self::start_with(ClusterOptions {
            controller_manager: true,
            ..ClusterOptions::default()
        })
        .await
    }

    /// Starts the control plane described by `options` and waits until the apiserver is ready and the
    /// `default` namespace exists.
    pub async fn start_with(options: ClusterOptions) -> Result<Self> {
        let start = Instant::now();
        let apiserver_bin = peers::binary("kube-apiserver")?;
        let kcm_bin = if options.controller_manager {
            Some(peers::binary("kube-controller-manager")?)
        } else {
            None
        };
        let scratch = Scratch::new("kube")?;
        let dir = scratch.path();
        let etcd = Etcd::start().await?;

        let ca = Ca::new("groundwork test kubernetes CA")?;
        let ca_path = ca.write_ca(dir)?;
        let advertised = options.advertise.map(|ip| ip.to_string());
        let mut sans = vec![
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "10.96.0.1",
        ];
        sans.extend(advertised.as_deref());
        ca.issue_files(dir, "apiserver", &[], &sans, Usage::Server)?;
        let admin = ca.issue_files(dir, "admin", &["system:masters"], &[], Usage::Client)?;
        let (sa_key, sa_pub) = certs::key_pair_pem()?;
        certs::write(&dir.join("sa.key"), &sa_key)?;
        certs::write(&dir.join("sa.pub"), &sa_pub)?;

        let port = free_port()?;
        let server_url = format!("https://127.0.0.1:{port}");
        let kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(&kubeconfig, &server_url, &ca_path, &admin.cert, &admin.key)?;

        let mut apiserver = Process::spawn(
            "kube-apiserver",
            apiserver_command(
                &apiserver_bin,
                dir,
                etcd.endpoint(),
                port,
                options.advertise,
            ),
            &dir.join("kube-apiserver.log"),
        )?;
        let client = admin_client(&kubeconfig).await?;
        wait_ready(&client, &mut apiserver).await?;
        let started_in = start.elapsed();

        let controller_manager = match kcm_bin {
            Some(bin) => Some(Process::spawn(
                "kube-controller-manager",
                controller_manager_command(&bin, dir, &kubeconfig),
                &dir.join("kube-controller-manager.log"),
            )?),
            None => None,
        };
        Ok(Self {
            controller_manager,
            apiserver,
            apiserver_binary: apiserver_bin,
            apiserver_port: port,
            advertise: options.advertise,
            ca,
            etcd,
            client,
            kubeconfig,
            server_url,
            started_in,
            scratch,
        })
    }

    /// A client with cluster-admin rights.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Path of the admin kubeconfig (for `kubectl`, external-dns, helm...).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The apiserver URL.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The apiserver's port (on 127.0.0.1, and on the advertised address through the lab's forwarder).
    pub fn port(&self) -> u16 {
        self.apiserver_port
    }

    /// The cluster CA's certificate file (it signs the apiserver's and every client's certificate).
    pub fn ca_file(&self) -> PathBuf {
        self.scratch.path().join("ca.crt")
    }

    /// Writes a kubeconfig for `server` authenticating as user `name` in `groups` with a client certificate
    /// from the cluster CA (how kubelets, kube-proxy and kube-scheduler prove who they are), as `<stem>.kubeconfig`
    /// in the cluster's directory; returns its path.
    pub fn client_kubeconfig(
        &self,
        stem: &str,
        name: &str,
        groups: &[&str],
        server: &str,
    ) -> Result<PathBuf> {
        let dir = self.scratch.path();
        let leaf = self.ca.issue(name, groups, &[], Usage::Client)?;
        let (cert, key) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        certs::write(&cert, &leaf.cert_pem)?;
        certs::write(&key, &leaf.key_pem)?;
        let path = dir.join(format!("{stem}.kubeconfig"));
        write_kubeconfig(&path, server, &self.ca_file(), &cert, &key)?;
        Ok(path)
    }

    /// Time from [`KubeCluster::start_with`] until the apiserver was ready.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The scratch directory holding certificates and logs.
    pub fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// The kube-apiserver process (for fault tests).
    pub fn apiserver(&mut self) -> &mut Process {
        &mut self.apiserver
    }

    /// Kills kube-apiserver (SIGKILL), as in a crash; [`KubeCluster::start_apiserver`] brings it back.
    pub fn kill_apiserver(&mut self) {
        self.apiserver.kill();
    }

    /// Starts a killed kube-apiserver again on the same port, certificates and etcd, and waits until it
    /// is ready.
    pub async fn start_apiserver(&mut self) -> Result<()> {
        let dir = self.scratch.path().to_owned();
        self.apiserver = Process::spawn(
            "kube-apiserver",
            apiserver_command(
                &self.apiserver_binary,
                &dir,
                self.etcd.endpoint(),
                self.apiserver_port,
                self.advertise,
            ),
            &dir.join("kube-apiserver.log"),
        )?;
        wait_ready(&self.client, &mut self.apiserver).await
    }

    /// The kube-controller-manager process, when started.
    pub fn controller_manager(&mut self) -> Option<&mut Process> {
        self.controller_manager.as_mut()
    }

    /// The control plane's etcd.
    pub fn etcd(&mut self) -> &mut Etcd {
        &mut self.etcd
    }

    /// [`KubeCluster::install_crds`] with the CRDs of YAML files (one or more `---`-separated documents each,
    /// as projects publish them).
    pub async fn install_crd_files(&self, files: &[PathBuf]) -> Result<()> {
        self.install_crds(&read_crd_files(files)?).await
    }

    /// Creates or updates CustomResourceDefinitions (server-side apply) and waits until each is Established.
    pub async fn install_crds(&self, crds: &[CustomResourceDefinition]) -> Result<()> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let params = PatchParams::apply("groundwork-tests").force();
        for crd in crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            api.patch(&name, &params, &Patch::Apply(crd)).await?;
        }
        for crd in crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let api = api.clone();
            wait::until(
                &format!("CRD {name} to be Established"),
                Duration::from_secs(20),
                || {
                    let api = api.clone();
                    let name = name.clone();
                    async move {
                        let crd = api.get(&name).await.map_err(|e| e.to_string())?;
                        let established = crd
                            .status
                            .and_then(|s| s.conditions)
                            .unwrap_or_default()
                            .iter()
                            .any(|c| c.type_ == "Established" && c.status == "True");
                        if established {
                            Ok(())
                        } else {
                            Err("not established yet".to_owned())
                        }
                    }
                },
            )
            .await?;
        }
        Ok(())
    }
}

/// The CRDs of YAML files (one or more `---`-separated documents each, as projects publish them).
pub fn read_crd_files(files: &[PathBuf]) -> Result<Vec<CustomResourceDefinition>> {
    let mut crds = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .map_err(crate::io_err(format!("reading {}", file.display())))?;
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document)
                .map_err(|e| HarnessError::Setup(format!("{}: {e}", file.display())))?;
            if value.is_null() {
                continue;
            }
            crds.push(
                serde_yaml::from_value(value).map_err(|e| {
                    HarnessError::Setup(format!("{}: not a CRD: {e}", file.display()))
                })?,
            );
        }
    }
    Ok(crds)
}

/// The CRDs in directory `dir` of Go module `module` at the version pinned as `version_key` (its `*.yaml`
/// files but `kustomization.yaml`, in name order), read from the module cache ([`crate::peers::go_module_dir`]
/// fetches the module if needed): upstream's own files, not copies in this repository.
pub fn module_crds(
    module: &str,
    version_key: &str,
    dir: &str,
) -> Result<Vec<CustomResourceDefinition>> {
    let dir = crate::peers::go_module_dir(module, version_key)?.join(dir);
    let entries =
        std::fs::read_dir(&dir).map_err(crate::io_err(format!("reading {}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    files.sort();
    read_crd_files(&files)
}

/// Which Gateway API CRDs to install: `standard` has Gateways, HTTPRoutes and GRPCRoutes; `experimental`
/// adds TLSRoutes, TCPRoutes and UDPRoutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayApiChannel {
    /// `config/crd/standard`.
    Standard,
    /// `config/crd/experimental`.
    Experimental,
}

/// external-dns's `DNSEndpoint` CRD, from its pinned module (`EXTERNAL_DNS_VERSION`).
pub fn dns_endpoint_crd() -> Result<CustomResourceDefinition> {
    let mut crds = module_crds(
        "sigs.k8s.io/external-dns",
        "EXTERNAL_DNS_VERSION",
        "config/crd/standard",
    )?;
    crds.retain(|crd| crd.metadata.name.as_deref() == Some("dnsendpoints.externaldns.k8s.io"));
    crds.pop().ok_or_else(|| {
        crate::HarnessError::Setup("external-dns's module has no DNSEndpoint CRD".to_owned())
    })
}

/// The Gateway API's CRDs at the version pinned as `GATEWAY_API_VERSION` (v1.4.0, the one external-dns
/// v0.20.0 reads), of `channel`.
pub fn gateway_api_crds(channel: GatewayApiChannel) -> Result<Vec<CustomResourceDefinition>> {
    let dir = match channel {
        GatewayApiChannel::Standard => "config/crd/standard",
        GatewayApiChannel::Experimental => "config/crd/experimental",
    };
    module_crds("sigs.k8s.io/gateway-api", "GATEWAY_API_VERSION", dir)
}

/// Server-side applies every object of a YAML stream (`---`-separated, as manifests are published), each at
/// its own API resource found by discovery, as `kubectl apply --server-side` does.
pub async fn apply_yaml(client: &Client, manager: &str, yaml: &str) -> Result<()> {
    use kube::api::{ApiResource, DynamicObject};
    use kube::core::GroupVersionKind;
    use kube::discovery::{Scope, pinned_kind};
    let params = PatchParams::apply(manager).force();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(document)
            .map_err(|e| HarnessError::Setup(format!("manifest: {e}")))?;
        if value.is_null() {
            continue;
        }
        let object: DynamicObject = serde_yaml::from_value(value)
            .map_err(|e| HarnessError::Setup(format!("manifest object: {e}")))?;
        let types = object
            .types
            .clone()
            .ok_or_else(|| HarnessError::Setup("manifest object without apiVersion/kind".into()))?;
        let (group, version) = types
            .api_version
            .rsplit_once('/')
            .unwrap_or(("", types.api_version.as_str()));
        let gvk = GroupVersionKind::gvk(group, version, &types.kind);
        let (resource, capabilities): (ApiResource, _) = pinned_kind(client, &gvk).await?;
        let name = object.metadata.name.clone().unwrap_or_default();
        let api: Api<DynamicObject> = match (capabilities.scope, &object.metadata.namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
            (Scope::Namespaced, None) => Api::default_namespaced_with(client.clone(), &resource),
            (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
        };
        api.patch(&name, &params, &Patch::Apply(&object)).await?;
    }
    Ok(())
}

/// Creates the LoadBalancer Service `namespace/name` (port 80) with `annotations` and writes `ip` into its
/// status, as a load-balancer controller would: the input dns-sync and external-dns publish names from.
pub async fn create_lb_service(
    client: &Client,
    namespace: &str,
    name: &str,
    annotations: &[(&str, &str)],
    ip: &str,
) -> Result<()> {
    let annotations: serde_json::Map<String, serde_json::Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
        .collect();
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
    }))
    .map_err(|e| HarnessError::Setup(format!("Service {name}: {e}")))?;
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    services.create(&Default::default(), &service).await?;
    let status = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}});
    services
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

/// The node(s) lb-controller names as announcing the Service's addresses (its status condition).
pub use proto::service_status::announcing_node;

/// The `ip` entries of a Service's `status.loadBalancer.ingress`, as written.
pub fn status_ips(service: &Service) -> Vec<String> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .collect()
}

/// [`status_ips`] parsed, leaving out what is not an address.
pub fn status_addresses(service: &Service) -> Vec<std::net::IpAddr> {
    status_ips(service)
        .iter()
        .filter_map(|ip| ip.parse().ok())
        .collect()
}

fn apiserver_command(
    binary: &Path,
    dir: &Path,
    etcd: &str,
    port: u16,
    advertise: Option<std::net::Ipv4Addr>,
) -> Command {
    let path = |name: &str| dir.join(name).display().to_string();
    let mut command = Command::new(binary);
    command
        .arg(format!("--etcd-servers={etcd}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!(
            "--advertise-address={}",
            advertise.unwrap_or(std::net::Ipv4Addr::LOCALHOST)
        ))
        .arg(format!("--secure-port={port}"))
        .arg(format!("--cert-dir={}", path("apiserver-certs")))
        .arg(format!("--tls-cert-file={}", path("apiserver.crt")))
        .arg(format!("--tls-private-key-file={}", path("apiserver.key")))
        .arg(format!("--client-ca-file={}", path("ca.crt")))
        .arg(format!("--service-account-key-file={}", path("sa.pub")))
        .arg(format!(
            "--service-account-signing-key-file={}",
            path("sa.key")
        ))
        .arg("--service-account-issuer=https://kubernetes.default.svc")
        .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
        .arg("--authorization-mode=Node,RBAC")
        .arg("--allow-privileged=true")
        // Priority and fairness only shapes load we never generate, and costs start-up time.
        .arg("--enable-priority-and-fairness=false")
        .arg("--profiling=false")
        .arg("--v=1");
    if advertise.is_none() {
        // No nodes run here; the `kubernetes` Service's endpoints would point at loopback.
        command.arg("--endpoint-reconciler-type=none");
    }
    command
}

fn controller_manager_command(binary: &Path, dir: &Path, kubeconfig: &Path) -> Command {
    let path = |name: &str| dir.join(name).display().to_string();
    let mut command = Command::new(binary);
    command
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg(format!(
            "--authentication-kubeconfig={}",
            kubeconfig.display()
        ))
        .arg(format!(
            "--authorization-kubeconfig={}",
            kubeconfig.display()
        ))
        .arg("--bind-address=127.0.0.1")
        // No serving port: nothing here scrapes it, and a fixed port would clash between tests.
        .arg("--secure-port=0")
        .arg("--leader-elect=false")
        .arg("--use-service-account-credentials=true")
        .arg(format!(
            "--service-account-private-key-file={}",
            path("sa.key")
        ))
        .arg(format!("--root-ca-file={}", path("ca.crt")))
        .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
        .arg("--v=1");
    command
}

fn write_kubeconfig(path: &Path, server: &str, ca: &Path, cert: &Path, key: &Path) -> Result<()> {
    // JSON is valid YAML, and serde_json is already here.
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "groundwork-test", "cluster": {
            "server": server,
            "certificate-authority": ca,
        }}],
        "users": [{"name": "admin", "user": {
            "client-certificate": cert,
            "client-key": key,
        }}],
        "contexts": [{"name": "admin@groundwork-test", "context": {
            "cluster": "groundwork-test",
            "user": "admin",
            "namespace": "default",
        }}],
        "current-context": "admin@groundwork-test",
    });
    certs::write(path, &config.to_string())
}

/// A client from a kubeconfig file.
pub async fn admin_client(kubeconfig: &Path) -> Result<Client> {
    let kubeconfig =
        Kubeconfig::read_from(kubeconfig).map_err(|e| HarnessError::Kubeconfig(e.to_string()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| HarnessError::Kubeconfig(e.to_string()))?;
    Ok(Client::try_from(config)?)
}

async fn wait_ready(client: &Client, apiserver: &mut Process) -> Result<()> {
    wait::until("kube-apiserver /readyz", READY_TIMEOUT, || {
        let running = apiserver.check_running();
        let client = client.clone();
        async move {
            running.map_err(|e| e.to_string())?;
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| e.to_string())?;
            let body = client
                .request_text(request)
                .await
                .map_err(|e| e.to_string())?;
            if body.trim() != "ok" {
                return Err(body);
            }
            // The apiserver creates `default` shortly after start; tests assume it exists.
            Api::<Namespace>::all(client)
                .get("default")
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        }
    })
    .await
}
