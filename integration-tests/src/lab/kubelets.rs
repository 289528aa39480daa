//! The lab on real nodes (`scripts/lab up --kubelets`): a [`NodeCluster`] (containerd, kubelet and kube-proxy
//! in each of m1, n1, n2), the cluster DNS and local volumes, groundwork installed with its Helm chart from
//! the image `scripts/image` wrote, and the seed scenario through real Pods, checked from the client
//! namespace as in the process lab: one node's speaker Pod answers ARP for `10.10.39.200`, dns-server behind a
//! NodePort answers `nginx.test.org`, and an HTTP request reaches a backend Pod through the address.
//!
//! What users install is what runs here: the chart as published, the one image, every Pod under the Pod
//! Security level the chart's docs ask for. Only the values a bare-metal user would set differ from the
//! defaults ([`values`]).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use tokio::runtime::Runtime;

use super::probe::{mac_text, wait_dig_a, wait_http_ok, wait_sole_answerer};
use super::seed;
use super::state::StateDir;
use super::system::{HOSTNAME, Progress, Recorder, new_runtime};
use crate::nodes::{NODES, NodeCluster, addons};
use crate::{HarnessError, Result, images, io_err, oci, peers, wait, workspace_root};

/// The Helm release and its namespace (Pod Security `restricted`, as docs/install.md asks).
pub const RELEASE: &str = "groundwork";
/// The release namespace.
pub const NAMESPACE: &str = "groundwork";
/// The speaker's own namespace (Pod Security `privileged`, made by the chart).
pub const SPEAKER_NAMESPACE: &str = "groundwork-speaker";
/// What every object of the release carries.
pub const RELEASE_SELECTOR: &str = "app.kubernetes.io/instance=groundwork";
/// How long the release's Pods may take to become ready (images are local; two cores start ~20 Pods).
pub const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long each check of the seed scenario is waited for.
const WAIT: Duration = Duration::from_secs(90);

/// The lab on real nodes, running. Fields drop in order; the cluster takes everything with it.
pub struct KubeletLab {
    cluster: NodeCluster,
    helm_home: PathBuf,
    values: PathBuf,
    image: String,
    address: Ipv4Addr,
    announcer: String,
    dns_port: u16,
    summary: Vec<String>,
    progress: Progress,
    runtime: Runtime,
}

impl KubeletLab {
    /// Brings the real-node lab up with its state, progress and logs in `dir`, installing groundwork from the
    /// image archive `image` (`target/images/groundwork.oci.tar`), and checks the seed scenario.
    pub fn start(dir: StateDir, image: &Path) -> Result<Self> {
        let mut recorder = Recorder::new(dir, Arc::new(AtomicBool::new(false)))?;
        let lab = bring_up(&mut recorder, new_runtime()?, image);
        recorder.finish(lab, |lab| lab.summary.clone())
    }

    /// An admin client.
    pub fn client(&self) -> kube::Client {
        self.cluster.client()
    }

    /// Runs `future` on the lab's async runtime (its kube client lives there).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// The cluster: nodes, control plane, network.
    pub fn cluster(&self) -> &NodeCluster {
        &self.cluster
    }

    /// Runs `helm <args>` against the lab (with the lab's own Helm home).
    pub fn helm(&self, args: &[&str]) -> Result<String> {
        peers::helm(self.cluster.kubeconfig(), &self.helm_home, args).map_err(HarnessError::Setup)
    }

    /// The values file the release was installed with.
    pub fn values_file(&self) -> &Path {
        &self.values
    }

    /// The groundwork image the release runs (`repository:tag`).
    pub fn image(&self) -> &str {
        &self.image
    }

    /// The seed address and the node that announced it at bring-up.
    pub fn seed(&self) -> (Ipv4Addr, &str) {
        (self.address, &self.announcer)
    }

    /// The NodePort of the dns-server Service (UDP).
    pub fn dns_port(&self) -> u16 {
        self.dns_port
    }

    /// The summary `lab up --kubelets` prints.
    pub fn summary(&self) -> &[String] {
        &self.summary
    }

    /// Appends a line to the lab's progress log.
    pub fn note(&self, message: &str) {
        self.progress.note(message);
    }

    /// Processes of the cluster that have exited (each with its status and log), checked now.
    pub fn exited(&mut self) -> Vec<(String, std::process::ExitStatus, PathBuf)> {
        self.cluster
            .processes()
            .into_iter()
            .filter_map(|p| {
                p.poll_exit()
                    .map(|status| (p.name().to_owned(), status, p.log_path().to_owned()))
            })
            .collect()
    }

    /// Waits until every workload of the release has rolled out (see [`wait_release`]).
    pub fn wait_release(&self, timeout: Duration) -> Result<()> {
        self.runtime
            .block_on(wait_release(&self.cluster.client(), timeout))
            .map_err(|e| explain(&self.cluster, &self.runtime, e))
    }
}

/// Brings it up, recording every process, namespace, cgroup and mount in `rec`.
pub(super) fn bring_up(rec: &mut Recorder, runtime: Runtime, image: &Path) -> Result<KubeletLab> {
    let files = rec.dir.files();
    let reference = oci::archive_reference(image).map_err(|e| {
        HarnessError::Setup(format!(
            "{e}\n(scripts/image writes the groundwork image to {})",
            images::GROUNDWORK_ARCHIVE
        ))
    })?;
    let cluster = NodeCluster::start(&files.join("nodes"), &runtime, rec)?;
    let client = cluster.client();
    let kubeconfig = rec.dir.path().join("kubeconfig");
    std::fs::copy(cluster.kubeconfig(), &kubeconfig).map_err(io_err(format!(
        "copying the kubeconfig to {}",
        kubeconfig.display()
    )))?;
    rec.state.kubeconfig = Some(kubeconfig.display().to_string());
    rec.save()?;

    rec.step(&format!(
        "groundwork image {reference} from {} into every node's containerd",
        image.display()
    ))?;
    cluster.load_image(image)?;

    rec.step("cluster DNS (CoreDNS at 10.96.0.10) and local volumes (StorageClass local)")?;
    runtime.block_on(addons::local_storage(
        &client,
        &NODES,
        &files.join("nodes"),
        2,
        "2Gi",
    ))?;
    runtime.block_on(addons::cluster_dns(&client))?;

    rec.step(&format!(
        "helm install {RELEASE} deploy/helm/groundwork in namespace {NAMESPACE} (Pod Security restricted)"
    ))?;
    let (repository, tag) = oci::split_reference(&reference);
    let values = files.join("values.yaml");
    std::fs::write(&values, lab_values(repository, tag, &images::etcd_tag()?))
        .map_err(io_err(format!("writing {}", values.display())))?;
    runtime.block_on(restricted_namespace(&client))?;
    let helm_home = files.join("helm");
    let chart = workspace_root().join("deploy/helm/groundwork");
    peers::helm(
        cluster.kubeconfig(),
        &helm_home,
        &[
            "install",
            RELEASE,
            &chart.display().to_string(),
            "--namespace",
            NAMESPACE,
            "--values",
            &values.display().to_string(),
        ],
    )
    .map_err(HarnessError::Setup)?;
    rec.step("waiting for every Pod of the release to be Running and Ready")?;
    runtime
        .block_on(wait_release(&client, ROLLOUT_TIMEOUT))
        .map_err(|e| explain(&cluster, &runtime, e))?;

    rec.step(
        "seed scenario: IPPool 10.10.39.200-10.10.39.220, ingress-nginx Service (LoadBalancer) over two httpd Pods, demo Deployment + Service, Ingress nginx.test.org",
    )?;
    runtime.block_on(seed::apply(&client, seed::Workloads::Httpd))?;
    let (address, announcer) = runtime.block_on(seed::wait_announced(&client, WAIT))?;
    rec.step(&format!(
        "ingress-nginx-controller got {address}, announced by {announcer}; writing it into the Ingress status"
    ))?;
    runtime.block_on(seed::set_ingress_status(&client, address))?;
    runtime.block_on(addons::wait_available(
        &client,
        seed::INGRESS_NAMESPACE,
        seed::INGRESS_SERVICE,
        WAIT,
    ))?;
    let dns_port = runtime.block_on(node_port(
        &client,
        NAMESPACE,
        &format!("{RELEASE}-dns-server"),
    ))?;

    let mut lab = KubeletLab {
        cluster,
        helm_home,
        values,
        image: reference,
        address,
        announcer,
        dns_port,
        summary: Vec::new(),
        progress: rec.progress.clone(),
        runtime,
    };
    rec.step("checking from the client namespace: ARP, DNS through the NodePort, HTTP")?;
    lab.summary = check(&lab, rec)?;
    Ok(lab)
}

/// The values a bare-metal user sets: their image, the zone, dns-server on a NodePort (the seed's AD
/// delegates to the nodes), etcd's image and storage class, and the interface the pool's segment is on.
fn lab_values(repository: &str, tag: &str, etcd_tag: &str) -> String {
    format!(
        r#"image:
  repository: {repository}
  tag: "{tag}"
  # Loaded into every node's containerd; there is no registry to pull from.
  pullPolicy: Never
lbSpeaker:
  interfaces: "^eth0$"
dnsSync:
  domainFilters: [test.org]
dnsServer:
  zones: [test.org]
  service:
    type: NodePort
etcd:
  image:
    repository: {etcd}
    tag: {etcd_tag}
  storage:
    size: 1Gi
    storageClassName: {class}
"#,
        etcd = images::ETCD_REPOSITORY,
        class = addons::STORAGE_CLASS,
    )
}

/// The release namespace, labelled to enforce Pod Security `restricted`, as docs/install.md asks.
async fn restricted_namespace(client: &kube::Client) -> Result<()> {
    let namespace: Namespace = serde_json::from_value(json!({
        "metadata": {"name": NAMESPACE, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/warn": "restricted",
        }}
    }))
    .map_err(|e| HarnessError::Setup(format!("namespace: {e}")))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    Ok(())
}

/// The first (UDP) NodePort of a Service.
async fn node_port(client: &kube::Client, namespace: &str, name: &str) -> Result<u16> {
    let service = Api::<Service>::namespaced(client.clone(), namespace)
        .get(name)
        .await?;
    service
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .iter()
        .find(|p| p.protocol.as_deref() == Some("UDP"))
        .and_then(|p| p.node_port)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| {
            HarnessError::Setup(format!("Service {namespace}/{name} has no UDP NodePort"))
        })
}

/// Waits until every Deployment, DaemonSet and StatefulSet of the release has rolled out: the controller saw
/// the latest spec, every replica runs it and is ready (available, for Deployments), and none is left over.
pub async fn wait_release(client: &kube::Client, timeout: Duration) -> Result<()> {
    let params = ListParams::default().labels(RELEASE_SELECTOR);
    wait::until("every workload of the release to roll out", timeout, || {
        let client = client.clone();
        let params = params.clone();
        async move {
            let mut pending = Vec::new();
            for ns in [NAMESPACE, SPEAKER_NAMESPACE] {
                let deployments = Api::<Deployment>::namespaced(client.clone(), ns)
                    .list(&params)
                    .await
                    .map_err(|e| e.to_string())?;
                pending.extend(deployments.iter().filter_map(deployment_pending));
                let daemonsets = Api::<DaemonSet>::namespaced(client.clone(), ns)
                    .list(&params)
                    .await
                    .map_err(|e| e.to_string())?;
                pending.extend(daemonsets.iter().filter_map(daemonset_pending));
                let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), ns)
                    .list(&params)
                    .await
                    .map_err(|e| e.to_string())?;
                pending.extend(statefulsets.iter().filter_map(statefulset_pending));
            }
            if pending.is_empty() {
                Ok(())
            } else {
                Err(pending.join("; "))
            }
        }
    })
    .await
}

/// What a Deployment still lacks to have rolled out, if anything.
fn deployment_pending(d: &Deployment) -> Option<String> {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let s = d.status.clone().unwrap_or_default();
    let (updated, available, total) = (
        s.updated_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
        s.replicas.unwrap_or(0),
    );
    let done = s.observed_generation == d.metadata.generation
        && updated == want
        && available == want
        && total == want;
    (!done).then(|| {
        format!(
            "Deployment {}: {updated}/{want} updated, {available} available, {total} in all",
            d.metadata.name.clone().unwrap_or_default()
        )
    })
}

/// What a DaemonSet still lacks to run ready and updated on every node, if anything.
fn daemonset_pending(d: &DaemonSet) -> Option<String> {
    let s = d.status.clone().unwrap_or_default();
    let want = s.desired_number_scheduled;
    let (updated, ready) = (s.updated_number_scheduled.unwrap_or(0), s.number_ready);
    let done = s.observed_generation == d.metadata.generation
        && usize::try_from(want).is_ok_and(|w| w == NODES.len())
        && updated == want
        && ready == want;
    (!done).then(|| {
        format!(
            "DaemonSet {}: {updated}/{want} updated, {ready} ready",
            d.metadata.name.clone().unwrap_or_default()
        )
    })
}

/// What a StatefulSet still lacks to have rolled out, if anything.
fn statefulset_pending(d: &StatefulSet) -> Option<String> {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let s = d.status.clone().unwrap_or_default();
    let (updated, ready) = (
        s.updated_replicas.unwrap_or(0),
        s.ready_replicas.unwrap_or(0),
    );
    let done = s.observed_generation == d.metadata.generation && updated == want && ready == want;
    (!done).then(|| {
        format!(
            "StatefulSet {}: {updated}/{want} updated, {ready} ready",
            d.metadata.name.clone().unwrap_or_default()
        )
    })
}

/// `error`, with what a user would look at next: every Pod of the release that is not Running and Ready,
/// with its containers' states, and the end of its logs.
fn explain(cluster: &NodeCluster, runtime: &Runtime, error: HarnessError) -> HarnessError {
    let client = cluster.client();
    let pods: Vec<Pod> = runtime.block_on(async {
        let mut all = Vec::new();
        for ns in [NAMESPACE, SPEAKER_NAMESPACE] {
            if let Ok(list) = Api::<Pod>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await
            {
                all.extend(list.items);
            }
        }
        all
    });
    let mut text = format!("{error}\n");
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .as_ref()
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready {
            continue;
        }
        text.push_str(&format!(
            "pod {name} on {}: phase {}\n",
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            status.phase.unwrap_or_default()
        ));
        for c in status.container_statuses.unwrap_or_default() {
            text.push_str(&format!(
                "  container {}: restarts {}, state {}, last {}\n",
                c.name,
                c.restart_count,
                serde_json::to_string(&c.state).unwrap_or_default(),
                serde_json::to_string(&c.last_state).unwrap_or_default()
            ));
        }
        for condition in status.conditions.unwrap_or_default() {
            if condition.status != "True" {
                text.push_str(&format!(
                    "  {} False: {} {}\n",
                    condition.type_,
                    condition.reason.unwrap_or_default(),
                    condition.message.unwrap_or_default()
                ));
            }
        }
        text.push_str(&cluster.pod_logs(&name, 15));
    }
    HarnessError::Setup(text)
}

/// The checks a user wants to see, from the client namespace; returns the summary lines.
fn check(lab: &KubeletLab, rec: &Recorder) -> Result<Vec<String>> {
    let cluster = &lab.cluster;
    let (address, announcer) = (lab.address, lab.announcer.as_str());
    let client = cluster.host("client")?;
    let announcer_mac = mac_text(cluster.host(announcer)?.mac()?);

    wait_sole_answerer(client, address, announcer, &announcer_mac, WAIT)?;
    rec.note(&format!(
        "arping {address}: one MAC answers, {announcer_mac} ({announcer}'s speaker Pod)"
    ));

    let mut dns_lines = Vec::new();
    for node in NODES {
        let server = (cluster.host(node)?.ipv4, lab.dns_port).into();
        let answer = wait_dig_a(client, server, HOSTNAME, address, WAIT)?;
        let aa = if answer.has_flag("aa") { ", aa" } else { "" };
        rec.note(&format!(
            "dig -p {} @{} {HOSTNAME}: {address}{aa}",
            server.port(),
            server.ip()
        ));
        dns_lines.push(format!(
            "  dig -p {} @{} {HOSTNAME} ({node}'s NodePort): {address} ({}{aa})",
            server.port(),
            server.ip(),
            answer.status
        ));
    }

    let body = wait_http_ok(
        client,
        address,
        |body| body.starts_with(seed::INGRESS_SERVICE),
        WAIT,
    )?;
    rec.note(&format!(
        "curl http://{address}/: 200, served by Pod {body}"
    ));

    let pods = lab.runtime.block_on(pod_lines(&lab.cluster.client()))?;
    let mut lines = vec![
        format!(
            "kubeconfig: {}",
            rec.state.kubeconfig.clone().unwrap_or_default()
        ),
        format!("  (KUBECONFIG=... kubectl get pods -A -o wide; helm list -n {NAMESPACE})"),
        format!(
            "nodes: {} (containerd, kubelet, kube-proxy each)",
            NODES.join(", ")
        ),
        format!("image: {}", lab.image),
        format!("service ingress-nginx/ingress-nginx-controller external address: {address}"),
        format!("announcing node: {announcer} (MAC {announcer_mac})"),
        format!("arping {address} from client: answered by {announcer_mac} only"),
        format!(
            "dig {HOSTNAME} from client through the dns-server NodePort {}:",
            lab.dns_port
        ),
    ];
    lines.extend(dns_lines);
    lines.push(format!(
        "http://{address}/ from client: 200, served by Pod {body}"
    ));
    lines.push("groundwork Pods:".to_owned());
    lines.extend(pods);
    let namespaces: Vec<String> = cluster
        .network()
        .hosts()
        .iter()
        .map(|h| format!("{}={}", h.name, h.netns))
        .collect();
    lines.push(format!(
        "namespaces: {} (e.g. ip netns exec <client ns> dig -p {} @10.10.40.10 {HOSTNAME})",
        namespaces.join(" "),
        lab.dns_port
    ));
    lines.push(format!("logs and state: {}", rec.dir.path().display()));
    Ok(lines)
}

/// One line per Pod of the release: name, node, phase.
async fn pod_lines(client: &kube::Client) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for ns in [NAMESPACE, SPEAKER_NAMESPACE] {
        for pod in Api::<Pod>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await?
        {
            lines.push(format!(
                "  {ns}/{} on {}: {}",
                pod.metadata.name.unwrap_or_default(),
                pod.spec.and_then(|s| s.node_name).unwrap_or_default(),
                pod.status.and_then(|s| s.phase).unwrap_or_default()
            ));
        }
    }
    Ok(lines)
}
