//! Gateway API objects for tests and benchmarks, written as users and a gateway controller write them:
//! Gateways and routes from a spec, a Gateway's `status.addresses` once it is programmed, and a route's
//! `status.parents` with an `Accepted` condition per parent. The CRDs come from [`crate::kube::gateway_api_crds`].

use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::kube::KubeCluster;
use crate::{HarnessError, Result};

/// The API resource of a Gateway API `kind` at `version`.
pub fn resource(kind: &str, version: &str) -> ApiResource {
    let plural = format!("{}s", kind.to_ascii_lowercase());
    ApiResource {
        group: "gateway.networking.k8s.io".to_owned(),
        version: version.to_owned(),
        api_version: format!("gateway.networking.k8s.io/{version}"),
        kind: kind.to_owned(),
        plural,
    }
}

/// The version dns-sync reads `kind` at (Gateway API v1.4.0).
pub fn version_of(kind: &str) -> &'static str {
    match kind {
        "TLSRoute" | "TCPRoute" | "UDPRoute" => "v1alpha2",
        _ => "v1",
    }
}

/// The API of `kind` in `namespace`, at the version dns-sync reads.
pub fn api(cluster: &KubeCluster, kind: &str, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        cluster.client(),
        namespace,
        &resource(kind, version_of(kind)),
    )
}

/// Creates a Gateway API object of `kind` from `spec` and `annotations`.
pub async fn create(
    cluster: &KubeCluster,
    kind: &str,
    namespace: &str,
    name: &str,
    annotations: Value,
    spec: Value,
) -> Result<()> {
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": format!("gateway.networking.k8s.io/{}", version_of(kind)),
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": spec,
    }))
    .map_err(|e| HarnessError::Setup(format!("{kind} {namespace}/{name}: {e}")))?;
    api(cluster, kind, namespace)
        .create(&PostParams::default(), &object)
        .await?;
    Ok(())
}

/// Sets a Gateway's `status.addresses`, as its controller does once it is programmed.
pub async fn set_gateway_addresses(
    cluster: &KubeCluster,
    namespace: &str,
    name: &str,
    ips: &[&str],
) -> Result<()> {
    let addresses: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"type": "IPAddress", "value": ip}))
        .collect();
    let status = json!({"status": {"addresses": addresses}});
    api(cluster, "Gateway", namespace)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

/// Sets a route's `status.parents`: one entry per parent reference, `Accepted` as given.
pub async fn set_route_status(
    cluster: &KubeCluster,
    kind: &str,
    namespace: &str,
    name: &str,
    parents: &[(Value, bool)],
) -> Result<()> {
    let parents: Vec<Value> = parents
        .iter()
        .map(|(parent, accepted)| {
            let (status, reason) = if *accepted {
                ("True", "Accepted")
            } else {
                ("False", "NotAllowedByListeners")
            };
            json!({
                "parentRef": parent,
                "controllerName": "lab.test.org/gateway",
                "conditions": [{
                    "type": "Accepted", "status": status, "reason": reason, "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1,
                }],
            })
        })
        .collect();
    let status = json!({"status": {"parents": parents}});
    api(cluster, kind, namespace)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}
