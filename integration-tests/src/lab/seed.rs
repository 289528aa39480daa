//! The seed scenario's Kubernetes objects (ARCHITECTURE.md, "The seed scenario"): the IPPool, the Node
//! objects standing for the lab's node namespaces, an ingress controller's LoadBalancer Service, a demo
//! Deployment and Service, and the Ingress `nginx.test.org` whose status the lab writes itself, since no
//! real ingress controller runs here (none builds from a Go module into an image without a registry: nginx,
//! Envoy and HAProxy are C or C++ programs with their own libraries).
//!
//! On real nodes ([`Workloads::Httpd`]) the ingress controller's Pods are busybox `httpd` servers that
//! answer with their Pod's name, so a client's request through the LoadBalancer address reaches a real
//! backend Pod; in the process lab ([`Workloads::Placeholder`]) no kubelet runs them.

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::kube::KubeCluster;
use crate::{HarnessError, Result, wait};

/// The ingress controller's namespace and Service name.
pub const INGRESS_NAMESPACE: &str = "ingress-nginx";
/// The ingress controller's LoadBalancer Service.
pub const INGRESS_SERVICE: &str = "ingress-nginx-controller";

fn object<T: k8s_openapi::serde::de::DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| HarnessError::Setup(format!("seed object: {e}")))
}

/// Installs every CRD under `deploy/crds/` (IPPool and the BGP kinds) and creates Ready Node objects for
/// `nodes`.
pub async fn install_crd_and_nodes(cluster: &KubeCluster, nodes: &[&str]) -> Result<()> {
    let dir = crate::workspace_root().join("deploy/crds");
    let mut crds = Vec::new();
    let entries =
        std::fs::read_dir(&dir).map_err(crate::io_err(format!("reading {}", dir.display())))?;
    for entry in entries {
        let path = entry
            .map_err(crate::io_err(format!("reading {}", dir.display())))?
            .path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(crate::io_err(format!("reading {}", path.display())))?;
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text)
            .map_err(|e| HarnessError::Setup(format!("{}: {e}", path.display())))?;
        crds.push(crd);
    }
    cluster.install_crds(&crds).await?;
    let client = cluster.client();
    let api: Api<Node> = Api::all(client.clone());
    for name in nodes {
        let node =
            object(json!({"metadata": {"name": name, "labels": {"groundwork.dev/lab": "true"}}}))?;
        api.create(&PostParams::default(), &node).await?;
    }
    heartbeat_nodes(&client, nodes).await
}

/// Marks `nodes` Ready with a fresh heartbeat: there are no kubelets, and without heartbeats
/// kube-controller-manager's node lifecycle controller would mark them NotReady after its grace period.
pub async fn heartbeat_nodes(client: &kube::Client, nodes: &[&str]) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let now = serde_json::to_value(Time(k8s_openapi::jiff::Timestamp::now()))
        .map_err(|e| HarnessError::Setup(format!("timestamp: {e}")))?;
    for name in nodes {
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": {"conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "lab node (heartbeat from the lab supervisor)",
                "lastHeartbeatTime": now, "lastTransitionTime": now
            }]}})),
        )
        .await?;
    }
    Ok(())
}

fn ippools(client: &kube::Client) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &ApiResource {
            group: "groundwork.dev".into(),
            version: "v1alpha1".into(),
            api_version: "groundwork.dev/v1alpha1".into(),
            kind: "IPPool".into(),
            plural: "ippools".into(),
        },
    )
}

/// What the seed's Deployments run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workloads {
    /// Images no kubelet will run (there is none): the objects exist, the Pods stay Pending.
    Placeholder,
    /// The lab's busybox `httpd` image, answering on port 8080 with the Pod's name: for real nodes.
    Httpd,
}

/// The labels of the ingress controller's Pods, which its Service selects.
pub const INGRESS_LABELS: (&str, &str) = ("app.kubernetes.io/name", "ingress-nginx");

/// A Deployment of `replicas` Pods labelled `labels` running `workloads`.
fn deployment(name: &str, labels: &Value, replicas: u32, workloads: Workloads) -> Value {
    let pod = match workloads {
        Workloads::Placeholder => json!({
            "containers": [{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]
        }),
        Workloads::Httpd => json!({
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "httpd", "image": crate::images::HTTPD_REFERENCE, "imagePullPolicy": "Never",
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 2},
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "www", "mountPath": "/www", "readOnly": true}]
            }],
            // The page is the Pod's own name: a client sees which backend answered.
            "volumes": [{"name": "www", "downwardAPI": {"items": [
                {"path": "index.html", "fieldRef": {"fieldPath": "metadata.name"}}
            ]}}]
        }),
    };
    json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": pod}}
    })
}

/// Creates the seed's pool, ingress controller Service, demo Deployment and Service, and Ingress; with
/// [`Workloads::Httpd`] also the ingress controller's Pods behind its Service.
pub async fn apply(client: &kube::Client, workloads: Workloads) -> Result<()> {
    let post = PostParams::default();
    let target_port = match workloads {
        Workloads::Placeholder => json!(80),
        Workloads::Httpd => json!("http"),
    };
    let pool = object(json!({
        "apiVersion": "groundwork.dev/v1alpha1", "kind": "IPPool",
        "metadata": {"name": "seed"}, "spec": {"addresses": ["10.10.39.200-10.10.39.220"]}
    }))?;
    ippools(client).create(&post, &pool).await?;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &post,
            &object(json!({"metadata": {"name": INGRESS_NAMESPACE}}))?,
        )
        .await?;
    let services: Api<Service> = Api::namespaced(client.clone(), INGRESS_NAMESPACE);
    services
        .create(
            &post,
            &object(json!({
                "metadata": {"name": INGRESS_SERVICE,
                             "labels": {"app.kubernetes.io/name": "ingress-nginx"}},
                "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                         "selector": {"app.kubernetes.io/name": "ingress-nginx"},
                         "ports": [{"name": "http", "port": 80, "targetPort": target_port},
                                   {"name": "https", "port": 443}]}
            }))?,
        )
        .await?;
    if workloads == Workloads::Httpd {
        let labels = json!({INGRESS_LABELS.0: INGRESS_LABELS.1});
        Api::<Deployment>::namespaced(client.clone(), INGRESS_NAMESPACE)
            .create(
                &post,
                &object(deployment(INGRESS_SERVICE, &labels, 2, workloads))?,
            )
            .await?;
    }

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .create(
            &post,
            &object(deployment("nginx", &json!({"app": "nginx"}), 1, workloads))?,
        )
        .await?;
    let demo: Api<Service> = Api::namespaced(client.clone(), "default");
    demo.create(
        &post,
        &object(json!({
            "metadata": {"name": "nginx"},
            "spec": {"selector": {"app": "nginx"}, "ports": [{"port": 80, "targetPort": target_port}]}
        }))?,
    )
    .await?;
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), "default");
    ingresses
        .create(
            &post,
            &object(json!({
                "metadata": {"name": "nginx"},
                "spec": {"ingressClassName": "nginx", "rules": [{"host": "nginx.test.org", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix",
                     "backend": {"service": {"name": "nginx", "port": {"number": 80}}}}]}}]}
            }))?,
        )
        .await?;
    Ok(())
}

/// Waits until the ingress controller's Service has an IPv4 address and an announcing node.
pub async fn wait_announced(
    client: &kube::Client,
    timeout: Duration,
) -> Result<(Ipv4Addr, String)> {
    let api: Api<Service> = Api::namespaced(client.clone(), INGRESS_NAMESPACE);
    wait::until(
        "the ingress controller's Service to get an address and an announcing node",
        timeout,
        || {
            let api = api.clone();
            async move {
                let service = api.get(INGRESS_SERVICE).await.map_err(|e| e.to_string())?;
                let ips: Vec<Ipv4Addr> = crate::kube::status_ips(&service)
                    .iter()
                    .filter_map(|ip| ip.parse().ok())
                    .collect();
                let node = crate::kube::announcing_node(&service);
                match (ips.as_slice(), node) {
                    ([ip], Some(node)) => Ok((*ip, node)),
                    (ips, node) => Err(format!("addresses {ips:?}, announcing node {node:?}")),
                }
            }
        },
    )
    .await
}

/// Writes `address` into the Ingress's status, as the ingress controller would.
pub async fn set_ingress_status(client: &kube::Client, address: Ipv4Addr) -> Result<()> {
    let api: Api<Ingress> = Api::namespaced(client.clone(), "default");
    api.patch_status(
        "nginx",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"loadBalancer": {"ingress": [{"ip": address.to_string()}]}}}),
        ),
    )
    .await?;
    Ok(())
}
