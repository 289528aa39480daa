//! Pointing the speakers' Service at the leader (`--leader-service`).
//!
//! Speakers dial one Service, and only the leader may take their streams. Steering them with readiness
//! (only the leader ready) broke what users do with a Deployment: a rollout waits for every new replica to
//! become ready, and a standby never does, so `helm upgrade` never finished and the old leader stayed; a
//! PodDisruptionBudget counted one healthy replica and blocked draining the leader's node. So every healthy
//! replica is ready, the Service has no selector, and the leader writes the Service's one EndpointSlice,
//! `<service>-leader`, with its own address, as the kube-apiserver does for the `kubernetes` Service. A new
//! leader overwrites it; the slice is owned by the Service, so it goes when the Service does.
//!
//! [`slice`] builds the object (plain data, unit-tested); [`publish`] writes it with server-side apply onto the
//! slice the chart created, so the controller needs only `get` and `patch` on that one name (a create cannot be
//! limited to a name in RBAC, and would let it steer any Service of its namespace).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use ops::CancellationToken;

/// The port name the Service and the slice share (kube-proxy matches them by name).
pub const PORT_NAME: &str = "grpc";
/// The slice's `endpointslice.kubernetes.io/managed-by` label: not the EndpointSlice controller's.
pub const MANAGED_BY: &str = "lb-controller.groundwork.dev";
/// Longest wait between attempts to publish.
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Which Service to point at this replica, and where this replica listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderService {
    /// The Service's namespace (the pod's own).
    pub namespace: String,
    /// The Service's name.
    pub service: String,
    /// This replica's Pod.
    pub pod_name: String,
    /// This replica's address (`status.podIP`).
    pub pod_ip: IpAddr,
    /// The gRPC port speakers dial.
    pub port: u16,
}

impl LeaderService {
    /// The settings for `--leader-service NAME` given the pod's identity and the gRPC listen address.
    pub fn new(
        namespace: &str,
        service: &str,
        pod_name: &str,
        pod_ip: IpAddr,
        grpc: SocketAddr,
    ) -> Self {
        Self {
            namespace: namespace.to_owned(),
            service: service.to_owned(),
            pod_name: pod_name.to_owned(),
            pod_ip,
            port: grpc.port(),
        }
    }

    /// The EndpointSlice's name.
    pub fn slice_name(&self) -> String {
        format!("{}-leader", self.service)
    }
}

/// The EndpointSlice that sends the Service's traffic to this replica, owned by the Service whose UID is
/// `service_uid`.
pub fn slice(leader: &LeaderService, service_uid: &str) -> EndpointSlice {
    let labels = BTreeMap::from([
        (
            "kubernetes.io/service-name".to_owned(),
            leader.service.clone(),
        ),
        (
            "endpointslice.kubernetes.io/managed-by".to_owned(),
            MANAGED_BY.to_owned(),
        ),
    ]);
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(leader.slice_name()),
            namespace: Some(leader.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".to_owned(),
                kind: "Service".to_owned(),
                name: leader.service.clone(),
                uid: service_uid.to_owned(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..ObjectMeta::default()
        },
        address_type: if leader.pod_ip.is_ipv4() {
            "IPv4"
        } else {
            "IPv6"
        }
        .to_owned(),
        endpoints: Some(vec![Endpoint {
            addresses: vec![leader.pod_ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".to_owned()),
                name: Some(leader.pod_name.clone()),
                namespace: Some(leader.namespace.clone()),
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        }]),
        ports: Some(vec![EndpointPort {
            name: Some(PORT_NAME.to_owned()),
            port: Some(i32::from(leader.port)),
            protocol: Some("TCP".to_owned()),
            app_protocol: None,
        }]),
    }
}

/// Writes the slice once the Service is in `services` (the controller's own cache of every Service), retrying
/// with backoff until it succeeds or `stop` is cancelled (leadership lost, shutdown).
pub async fn publish(
    client: kube::Client,
    services: Store<Service>,
    leader: LeaderService,
    stop: CancellationToken,
) {
    let api: Api<EndpointSlice> = Api::namespaced(client, &leader.namespace);
    let params = PatchParams::apply("lb-controller").force();
    let key = ObjectRef::<Service>::new(&leader.service).within(&leader.namespace);
    let mut wait = Duration::from_millis(200);
    loop {
        let outcome = match services.get(&key).and_then(|s| s.metadata.uid.clone()) {
            None => Err(format!(
                "Service {}/{} (--leader-service) not found: speakers cannot reach this leader",
                leader.namespace, leader.service
            )),
            Some(uid) => api
                .patch(
                    &leader.slice_name(),
                    &params,
                    &Patch::Apply(slice(&leader, &uid)),
                )
                .await
                .map(|_| ())
                .map_err(|e| match e {
                    kube::Error::Api(status) if status.code == 403 || status.code == 404 => format!(
                        "{}; the chart creates EndpointSlice {}/{} for the leader to fill (helm upgrade restores it)",
                        status.message,
                        leader.namespace,
                        leader.slice_name()
                    ),
                    other => other.to_string(),
                }),
        };
        match outcome {
            Ok(()) => {
                tracing::info!(
                    service = %format!("{}/{}", leader.namespace, leader.service),
                    address = %leader.pod_ip,
                    "the speakers' Service points at this leader"
                );
                return;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?wait, "cannot point the speakers' Service at this leader yet");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(ip: &str) -> LeaderService {
        LeaderService::new(
            "groundwork",
            "groundwork-lb-controller",
            "groundwork-lb-controller-abc",
            ip.parse().unwrap(),
            "0.0.0.0:7472".parse().unwrap(),
        )
    }

    #[test]
    fn the_slice_sends_the_services_grpc_port_to_this_pod_and_belongs_to_the_service() {
        let slice = slice(&leader("10.244.1.7"), "uid-1");
        assert_eq!(
            slice.metadata.name.as_deref(),
            Some("groundwork-lb-controller-leader")
        );
        let labels = slice.metadata.labels.clone().unwrap();
        assert_eq!(
            labels["kubernetes.io/service-name"],
            "groundwork-lb-controller"
        );
        assert_eq!(labels["endpointslice.kubernetes.io/managed-by"], MANAGED_BY);
        let owner = &slice.metadata.owner_references.clone().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Service", "uid-1")
        );
        assert_eq!(slice.address_type, "IPv4");
        let endpoints = slice.endpoints.clone().unwrap();
        assert_eq!(endpoints[0].addresses, ["10.244.1.7"]);
        assert_eq!(
            endpoints[0]
                .target_ref
                .as_ref()
                .and_then(|r| r.name.as_deref()),
            Some("groundwork-lb-controller-abc")
        );
        let port = &slice.ports.unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.port),
            (Some(PORT_NAME), Some(7472))
        );
    }

    #[test]
    fn an_ipv6_pod_gets_an_ipv6_slice() {
        assert_eq!(slice(&leader("fd00:10:244::7"), "u").address_type, "IPv6");
    }
}
