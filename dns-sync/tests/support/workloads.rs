//! Workloads as the cluster's own controllers would leave them, for tests that run no kubelet or
//! controller-manager: Node objects a kubelet registers, Pods with the status a kubelet writes, the
//! EndpointSlices the EndpointSlice controller keeps, and Services of any type.

use integration_tests::kube::KubeCluster;
use k8s_openapi::api::core::v1::{Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};

/// Creates ServiceAccount `default/default`, which the apiserver requires before it admits a Pod and which
/// the controller-manager (not running here) would create.
pub async fn create_default_service_account(cluster: &KubeCluster) {
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client(), "default");
    let default: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).unwrap();
    accounts
        .create(&PostParams::default(), &default)
        .await
        .unwrap();
}

/// Registers a Node with these (type, address) pairs, as a kubelet does.
pub async fn create_node(cluster: &KubeCluster, name: &str, addresses: &[(&str, &str)]) {
    let api: Api<Node> = Api::all(cluster.client());
    let node: Node =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &node).await.unwrap();
    let addresses: Vec<serde_json::Value> = addresses
        .iter()
        .map(|(kind, address)| serde_json::json!({"type": kind, "address": address}))
        .collect();
    let status = serde_json::json!({"status": {"addresses": addresses}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

pub async fn delete_node(cluster: &KubeCluster, name: &str) {
    let api: Api<Node> = Api::all(cluster.client());
    api.delete(name, &DeleteParams::default()).await.unwrap();
}

/// Creates a Service in `default` with `spec` and `annotations`.
pub async fn create_with_spec(
    cluster: &KubeCluster,
    name: &str,
    spec: serde_json::Value,
    annotations: serde_json::Value,
) {
    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": spec,
    }))
    .unwrap();
    let api: Api<Service> = Api::namespaced(cluster.client(), "default");
    api.create(&PostParams::default(), &service).await.unwrap();
}

/// One endpoint of a Pod: its address, node, readiness and (a StatefulSet's Pods have one) hostname.
pub struct PodEndpoint<'a> {
    pub pod: &'a str,
    pub address: &'a str,
    pub node: &'a str,
    pub ready: bool,
    pub hostname: Option<&'a str>,
}

/// Creates or replaces the IPv4 EndpointSlice of Service `default/service`, as the EndpointSlice controller
/// keeps it for the Service's Pods.
pub async fn set_endpoints(cluster: &KubeCluster, service: &str, pods: &[PodEndpoint<'_>]) {
    let endpoints: Vec<serde_json::Value> = pods
        .iter()
        .map(|p| {
            let mut endpoint = serde_json::json!({
                "addresses": [p.address],
                "conditions": {"ready": p.ready, "serving": p.ready, "terminating": false},
                "nodeName": p.node,
                "targetRef": {"kind": "Pod", "namespace": "default", "name": p.pod},
            });
            if let Some(hostname) = p.hostname {
                endpoint["hostname"] = hostname.into();
            }
            endpoint
        })
        .collect();
    let slice = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-ipv4"),
            "namespace": "default",
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "tests.groundwork.dev",
            },
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
    });
    let api: Api<EndpointSlice> = Api::namespaced(cluster.client(), "default");
    let params = PatchParams::apply("groundwork-tests").force();
    api.patch(&format!("{service}-ipv4"), &params, &Patch::Apply(&slice))
        .await
        .unwrap();
}

pub fn ready<'a>(pod: &'a str, address: &'a str, node: &'a str) -> PodEndpoint<'a> {
    PodEndpoint {
        pod,
        address,
        node,
        ready: true,
        hostname: Some(pod),
    }
}

/// Creates Pod `default/name` (label `app`, on `node`, with `hostname` and subdomain `app`) and gives it the
/// status a kubelet would: running, with `ip`, ready or not.
pub async fn create_pod(
    cluster: &KubeCluster,
    name: &str,
    app: &str,
    node: &str,
    ip: &str,
    ready: bool,
) {
    let api: Api<Pod> = Api::namespaced(cluster.client(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
        "spec": {
            "hostname": name, "subdomain": app, "nodeName": node,
            "automountServiceAccountToken": false,
            "containers": [{"name": "main", "image": "registry.invalid/none"}],
        },
    }))
    .unwrap();
    api.create(&PostParams::default(), &pod).await.unwrap();
    let status = serde_json::json!({"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}
