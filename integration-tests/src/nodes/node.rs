//! One real Kubernetes node in a lab network namespace: its own containerd (Debian's, with runc), kubelet and
//! kube-proxy, a CNI bridge for its Pods, a private mount namespace ([`super::mountns`]) and a cgroup
//! ([`super::cgroup`]) that holds everything it runs.
//!
//! A `hostNetwork` Pod joins the network namespace of its containerd's shim, so each node needs its own
//! containerd started in the node's namespace; the kubelet and kube-proxy run there too. Facts of this kind of
//! machine the configuration answers (they were found the hard way):
//! - cgroups are v1: the kubelet needs `failCgroupV1: false`, and takes `cgroupDriver` from its own
//!   configuration because Debian's containerd 1.6 does not answer CRI `RuntimeConfig`;
//! - the VM lacks `CAP_SYS_RESOURCE`, so containerd must not raise OOM scores (`restrict_oom_score_adj`);
//! - `ip netns exec` remounts `/sys`, after which runc finds no cgroup mount: processes enter with `nsenter`.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::cgroup::Cgroup;
use super::mountns::MountNamespace;
use crate::netlab::{HOST_INTERFACE, Host};
use crate::process::{Process, run_ok};
use crate::{Result, io_err, peers, wait};

/// The cluster's Service range as the nodes route it (the apiserver's IPv4 one).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// Where the Pods of all nodes live; node `i` gets `10.244.i.0/24`.
pub const POD_CIDR: &str = "10.244.0.0/16";
/// The cluster DNS Service's address (kubelet `clusterDNS`).
pub const CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The cluster domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Debian's runc, containerd's runtime.
const RUNC: &str = "/usr/sbin/runc";
/// Debian's CNI plugins (containernetworking-plugins).
const CNI_BIN: &str = "/usr/lib/cni";
/// How long containerd may take to answer on its socket.
const CONTAINERD_TIMEOUT: Duration = Duration::from_secs(30);

/// What a node is given to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The lab host (network namespace) it runs in; its name is the Node's name.
    pub host: Host,
    /// Its Pod range, `10.244.<i>.0/24`.
    pub pod_cidr: String,
    /// Its working directory (configuration, state, logs).
    pub dir: PathBuf,
    /// Where its mount namespace is pinned (in a private directory).
    pub mount_file: PathBuf,
    /// The cluster CA the kubelet trusts for client certificates.
    pub ca: PathBuf,
    /// The kubelet's kubeconfig (`system:node:<name>`).
    pub kubelet_kubeconfig: PathBuf,
    /// kube-proxy's kubeconfig (`system:kube-proxy`).
    pub proxy_kubeconfig: PathBuf,
}

/// A running node. Fields drop in order: the Kubernetes agents, then containerd, then everything left in the
/// node's cgroup (shims, containers), then the mount namespace.
#[derive(Debug)]
pub struct Node {
    kube_proxy: Process,
    kubelet: Process,
    containerd: Process,
    cgroup: Cgroup,
    mount_ns: MountNamespace,
    config: NodeConfig,
}

impl Node {
    /// Sets up the node's namespace (forwarding, the route to Services), then starts containerd, the
    /// kubelet and kube-proxy in it. Returns once containerd answers; the Node becomes Ready later.
    pub fn start(config: NodeConfig) -> Result<Self> {
        let host = &config.host;
        let dir = &config.dir;
        std::fs::create_dir_all(dir.join("cni"))
            .map_err(io_err(format!("creating {}", dir.join("cni").display())))?;
        // A node routes: Pods to other nodes' Pods, clients to Pods behind NodePorts and LoadBalancer IPs.
        run_ok(
            host.command("sysctl")
                .args(["-q", "-w", "net.ipv4.ip_forward=1"]),
        )?;
        // Services are virtual: kube-proxy rewrites their addresses after the route lookup, which needs a
        // route to succeed first (a real node has a default route; lab hosts have none, by design).
        crate::netlab::ip(&[
            "-n",
            &host.netns,
            "route",
            "add",
            SERVICE_CIDR,
            "dev",
            HOST_INTERFACE,
            "src",
            &host.ipv4.to_string(),
        ])?;

        let cgroup = Cgroup::create(&host.netns)?;
        let mount_ns = MountNamespace::create(&config.mount_file, dir)?;

        let socket = dir.join("containerd.sock");
        write(
            &dir.join("containerd.toml"),
            &containerd_config(&config, &socket),
        )?;
        write(&dir.join("cni/10-lab.conflist"), &cni_config(&config))?;
        let mut command = mount_ns.command(&host.netns, Path::new("containerd"));
        command.arg("--config").arg(dir.join("containerd.toml"));
        let mut containerd = Process::spawn(
            &format!("containerd on {}", host.name),
            command,
            &dir.join("containerd.log"),
        )?;
        // Before it starts any shim, so every shim and container is inside the node's cgroup.
        cgroup.join(containerd.pid())?;
        wait::until_blocking(
            &format!("containerd on {} to answer", host.name),
            CONTAINERD_TIMEOUT,
            || {
                containerd.check_running().map_err(|e| e.to_string())?;
                run_ok(
                    Command::new("ctr")
                        .arg("--address")
                        .arg(&socket)
                        .arg("version"),
                )
                .map_err(|e| e.to_string())
            },
        )?;

        write(
            &dir.join("kubelet.yaml"),
            &kubelet_config(&config, &cgroup, &socket),
        )?;
        write(
            &dir.join("resolv.conf"),
            "# lab node: no upstream resolvers\n",
        )?;
        let mut command = mount_ns.command(&host.netns, &peers::binary("kubelet")?);
        command
            .arg(format!("--config={}", dir.join("kubelet.yaml").display()))
            .arg(format!(
                "--kubeconfig={}",
                config.kubelet_kubeconfig.display()
            ))
            .arg(format!("--hostname-override={}", host.name))
            .arg(format!("--node-ip={}", host.ipv4))
            .arg("--v=1");
        let kubelet = Process::spawn(
            &format!("kubelet on {}", host.name),
            command,
            &dir.join("kubelet.log"),
        )?;
        cgroup.join(kubelet.pid())?;

        write(&dir.join("kube-proxy.yaml"), &kube_proxy_config(&config))?;
        let mut command = mount_ns.command(&host.netns, &peers::binary("kube-proxy")?);
        command
            .arg(format!(
                "--config={}",
                dir.join("kube-proxy.yaml").display()
            ))
            .arg("--v=1");
        let kube_proxy = Process::spawn(
            &format!("kube-proxy on {}", host.name),
            command,
            &dir.join("kube-proxy.log"),
        )?;
        cgroup.join(kube_proxy.pid())?;

        Ok(Self {
            kube_proxy,
            kubelet,
            containerd,
            cgroup,
            mount_ns,
            config,
        })
    }

    /// The Node's name.
    pub fn name(&self) -> &str {
        &self.config.host.name
    }

    /// The lab host it runs in.
    pub fn host(&self) -> &Host {
        &self.config.host
    }

    /// The node's cgroup (its name equals its network namespace's).
    pub fn cgroup(&self) -> &Cgroup {
        &self.cgroup
    }

    /// Where its mount namespace is pinned.
    pub fn mount_file(&self) -> &Path {
        self.mount_ns.file()
    }

    /// Its containerd, kubelet and kube-proxy.
    pub fn processes(&mut self) -> [&mut Process; 3] {
        [
            &mut self.containerd,
            &mut self.kubelet,
            &mut self.kube_proxy,
        ]
    }

    /// Fails with [`crate::HarnessError::Exited`] (and the log's tail) if containerd, the kubelet or kube-proxy died.
    pub fn check_running(&mut self) -> Result<()> {
        for process in self.processes() {
            process.check_running()?;
        }
        Ok(())
    }

    /// Where the kubelet writes container logs (`<namespace>_<pod>_<uid>/<container>/<n>.log`).
    pub fn pod_logs(&self) -> PathBuf {
        self.config.dir.join("var-log").join("pods")
    }

    /// Where the [`super::kept_logs::LogKeeper`] keeps those logs, also of Pods that are gone.
    pub fn kept_pod_logs(&self) -> PathBuf {
        self.config.dir.join("kept-pod-logs")
    }

    /// Imports an OCI or Docker archive into the node's containerd, where the kubelet finds it (namespace
    /// `k8s.io`), as `kind load` or `k3s ctr images import` do.
    pub fn import_image(&self, archive: &Path) -> Result<()> {
        run_ok(
            Command::new("ctr")
                .arg("--address")
                .arg(self.config.dir.join("containerd.sock"))
                .args(["--namespace", "k8s.io", "images", "import"])
                .arg(archive),
        )
        .map(|_| ())
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(io_err(format!("writing {}", path.display())))
}

/// containerd's configuration: state in the node's mount namespace (`/var/lib`, `/run`), its socket where the
/// test bed can reach it, CNI from the node's directory, no OOM score changes.
fn containerd_config(config: &NodeConfig, socket: &Path) -> String {
    let cni_dir = config.dir.join("cni");
    format!(
        r#"version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # This VM lacks CAP_SYS_RESOURCE: raising a sandbox's OOM score fails every Pod
  # ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{RUNC}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni}"
"#,
        socket = socket.display(),
        pause = crate::images::PAUSE_REFERENCE,
        cni = cni_dir.display(),
    )
}

/// A bridge network per node (`cni0`, the node being each Pod's gateway), addresses from the node's Pod
/// range, host ports through `portmap`.
fn cni_config(config: &NodeConfig) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "lab",
        "plugins": [
            {
                "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
                "hairpinMode": true,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": config.pod_cidr}]],
                         "routes": [{"dst": "0.0.0.0/0"}]}
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
    .to_string()
}

fn kubelet_config(config: &NodeConfig, cgroup: &Cgroup, socket: &Path) -> String {
    let mut yaml = String::new();
    let _ = write!(
        yaml,
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {ip}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
# cgroups v1 here; Debian's containerd 1.6 does not report its cgroup driver (CRI RuntimeConfig).
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: {cgroup}
cgroupsPerQOS: true
failSwapOn: false
containerRuntimeEndpoint: unix://{socket}
clusterDNS: [{dns}]
clusterDomain: {domain}
resolvConf: {resolv}
# Images cannot be pulled again here: never collect them; evict only when the disk is really full.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}}
serializeImagePulls: false
"#,
        ip = config.host.ipv4,
        ca = config.ca.display(),
        cgroup = cgroup.path(),
        socket = socket.display(),
        dns = CLUSTER_DNS,
        domain = CLUSTER_DOMAIN,
        resolv = config.dir.join("resolv.conf").display(),
    );
    yaml
}

fn kube_proxy_config(config: &NodeConfig) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {kubeconfig}}}
hostnameOverride: {name}
# No IPVS in this kernel; iptables in the node's own namespace.
mode: iptables
clusterCIDR: {pods}
bindAddress: {ip}
nodePortAddresses: [primary]
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# conntrack limits and timeouts are global sysctls: leave the machine's alone.
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
"#,
        kubeconfig = config.proxy_kubeconfig.display(),
        name = config.host.name,
        pods = POD_CIDR,
        ip = config.host.ipv4,
    )
}
