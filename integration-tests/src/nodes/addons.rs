//! What every real cluster has besides its nodes and that groundwork's chart relies on: the cluster DNS
//! (CoreDNS with its `kubernetes` plugin, at `10.96.0.10`, as kubeadm deploys it) and a default StorageClass
//! (local PersistentVolumes, one directory per node, as on bare metal without a storage system).

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;

use super::node::{CLUSTER_DNS, CLUSTER_DOMAIN};
use crate::{Result, images, io_err, peers, wait};

/// The StorageClass of the local volumes, marked default.
pub const STORAGE_CLASS: &str = "local";
/// How long the cluster DNS may take to become available.
const DNS_TIMEOUT: Duration = Duration::from_secs(120);

/// CoreDNS as the cluster DNS: authoritative for `cluster.local` and the reverse zones from the Kubernetes
/// API, nothing else (no `forward`: a lab has no upstream, and a cluster DNS is no open resolver). Waits
/// until its Deployment is available.
pub async fn cluster_dns(client: &kube::Client) -> Result<()> {
    let image = format!(
        "{}:{}",
        images::COREDNS_REPOSITORY,
        peers::pinned_version("COREDNS_VERSION")?
    );
    let manifest = format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: coredns, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "system:coredns"}}
rules:
  - apiGroups: [""]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "system:coredns"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}}
subjects: [{{kind: ServiceAccount, name: coredns, namespace: kube-system}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: coredns, namespace: kube-system}}
data:
  Corefile: |
    .:1053 {{
        errors
        health :8080
        ready :8181
        kubernetes {domain} in-addr.arpa ip6.arpa {{
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }}
        cache 30
        loadbalance
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  replicas: 2
  selector: {{matchLabels: {{k8s-app: kube-dns}}}}
  template:
    metadata: {{labels: {{k8s-app: kube-dns}}}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      securityContext: {{runAsNonRoot: true, runAsUser: 65532, seccompProfile: {{type: RuntimeDefault}}}}
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector: {{matchLabels: {{k8s-app: kube-dns}}}}
      containers:
        - name: coredns
          image: {image}
          imagePullPolicy: Never
          args: [-conf, /etc/coredns/Corefile]
          ports:
            - {{name: dns, containerPort: 1053, protocol: UDP}}
            - {{name: dns-tcp, containerPort: 1053, protocol: TCP}}
          livenessProbe: {{httpGet: {{path: /health, port: 8080}}, periodSeconds: 10}}
          readinessProbe: {{httpGet: {{path: /ready, port: 8181}}, periodSeconds: 2}}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {{drop: [ALL]}}
          volumeMounts: [{{name: config, mountPath: /etc/coredns, readOnly: true}}]
      volumes: [{{name: config, configMap: {{name: coredns}}}}]
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  clusterIP: {dns}
  selector: {{k8s-app: kube-dns}}
  ports:
    - {{name: dns, port: 53, targetPort: 1053, protocol: UDP}}
    - {{name: dns-tcp, port: 53, targetPort: 1053, protocol: TCP}}
"#,
        domain = CLUSTER_DOMAIN,
        dns = CLUSTER_DNS,
    );
    crate::kube::apply_yaml(client, "groundwork-lab", &manifest).await?;
    wait_available(client, "kube-system", "coredns", DNS_TIMEOUT).await
}

/// A default StorageClass of local volumes and `per_node` PersistentVolumes of `size` on each node, each a
/// directory of the node's own (`<cluster dir>/<node>/volumes/pv<i>`, where the node's mount namespace sees
/// it too) bound to its node by node affinity (what the chart's etcd members claim).
pub async fn local_storage(
    client: &kube::Client,
    nodes: &[&str],
    cluster_dir: &Path,
    per_node: usize,
    size: &str,
) -> Result<()> {
    let mut manifest = format!(
        r#"apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: {STORAGE_CLASS}
  annotations: {{storageclass.kubernetes.io/is-default-class: "true"}}
provisioner: kubernetes.io/no-provisioner
# Bind when a Pod is scheduled, so the volume is on the node the Pod runs on.
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
"#
    );
    for node in nodes {
        for i in 0..per_node {
            let path = cluster_dir
                .join(node)
                .join("volumes")
                .join(format!("pv{i}"));
            std::fs::create_dir_all(&path)
                .map_err(io_err(format!("creating {}", path.display())))?;
            manifest.push_str(&format!(
                r#"---
apiVersion: v1
kind: PersistentVolume
metadata: {{name: local-{node}-{i}}}
spec:
  capacity: {{storage: {size}}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: {STORAGE_CLASS}
  local: {{path: {path}}}
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions:
            - {{key: kubernetes.io/hostname, operator: In, values: [{node}]}}
"#,
                path = path.display()
            ));
        }
    }
    crate::kube::apply_yaml(client, "groundwork-lab", &manifest).await
}

/// Waits until a Deployment has all its replicas updated and available.
pub async fn wait_available(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    wait::until(
        &format!("Deployment {namespace}/{name} to be available"),
        timeout,
        || {
            let api = api.clone();
            async move {
                let d = api.get(name).await.map_err(|e| e.to_string())?;
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let status = d.status.unwrap_or_default();
                let (updated, available) = (
                    status.updated_replicas.unwrap_or(0),
                    status.available_replicas.unwrap_or(0),
                );
                if updated == want && available == want {
                    Ok(())
                } else {
                    Err(format!(
                        "{updated} updated, {available} of {want} available"
                    ))
                }
            }
        },
    )
    .await
}
