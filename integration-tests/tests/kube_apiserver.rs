//! The real control plane the tests use: a kube-apiserver built from k8s.io/kubernetes, ready quickly,
//! reporting its real version, storing Services and their status subresource, and serving CRDs; and
//! kube-controller-manager doing its controllers' work against it.

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use integration_tests::kube::KubeCluster;
use integration_tests::wait;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;

fn load_balancer_service(name: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": 8080}]},
    }))
    .unwrap()
}

#[tokio::test]
async fn apiserver_starts_quickly_stores_services_and_patches_their_status() {
    let cluster = KubeCluster::start().await.unwrap();
    let started = cluster.started_in();
    println!("kube-apiserver ready in {:.2} s", started.as_secs_f64());
    assert!(
        started < Duration::from_secs(15),
        "kube-apiserver took {started:?} to become ready"
    );

    let version = cluster.client().apiserver_version().await.unwrap();
    let pinned = include_str!("../peers/versions.env")
        .lines()
        .find_map(|l| l.strip_prefix("KUBERNETES_VERSION="))
        .unwrap();
    assert_eq!(version.git_version, pinned);

    let services: Api<Service> = Api::namespaced(cluster.client(), "default");
    let created = services
        .create(
            &PostParams::default(),
            &load_balancer_service("ingress-nginx"),
        )
        .await
        .unwrap();
    assert!(
        created
            .spec
            .unwrap()
            .cluster_ip
            .unwrap()
            .starts_with("10.96.")
    );

    let status = serde_json::json!({
        "status": {"loadBalancer": {"ingress": [{"ip": "10.10.39.200"}]}}
    });
    services
        .patch_status(
            "ingress-nginx",
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .unwrap();
    let stored = services.get_status("ingress-nginx").await.unwrap();
    let ingress = stored
        .status
        .unwrap()
        .load_balancer
        .unwrap()
        .ingress
        .unwrap();
    assert_eq!(ingress[0].ip.as_deref(), Some("10.10.39.200"));
}

#[tokio::test]
async fn crds_install_and_their_objects_are_served() {
    let cluster = KubeCluster::start().await.unwrap();
    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "probes.test.groundwork.dev"},
        "spec": {
            "group": "test.groundwork.dev",
            "scope": "Cluster",
            "names": {"plural": "probes", "singular": "probe", "kind": "Probe"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"value": {"type": "string"}}}
                }}}
            }]
        }
    }))
    .unwrap();
    cluster.install_crds(&[crd]).await.unwrap();

    let resource = ApiResource {
        group: "test.groundwork.dev".into(),
        version: "v1".into(),
        api_version: "test.groundwork.dev/v1".into(),
        kind: "Probe".into(),
        plural: "probes".into(),
    };
    let api: Api<DynamicObject> = Api::all_with(cluster.client(), &resource);
    let object: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "test.groundwork.dev/v1",
        "kind": "Probe",
        "metadata": {"name": "one"},
        "spec": {"value": "hello"},
    }))
    .unwrap();
    // Discovery of a new CRD can lag its Established condition by a moment: retry on NotFound only.
    wait::until(
        "the Probe object to be created",
        Duration::from_secs(10),
        || {
            let api = api.clone();
            let object = object.clone();
            async move {
                api.create(&PostParams::default(), &object)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await
    .unwrap();
    let stored = api.get("one").await.unwrap();
    assert_eq!(stored.data["spec"]["value"], "hello");
}

#[tokio::test]
async fn controller_manager_runs_its_controllers_against_the_apiserver() {
    let cluster = KubeCluster::start_with_controller_manager().await.unwrap();
    // The service-account controller creates `default` in every namespace: proof that
    // kube-controller-manager is connected and reconciling.
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client(), "default");
    wait::until(
        "kube-controller-manager to create the default ServiceAccount",
        Duration::from_secs(30),
        || {
            let accounts = accounts.clone();
            async move {
                accounts
                    .get("default")
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await
    .unwrap();
}
