//! The Node and EndpointSlice reflectors that NodePort and headless Services need, started only when
//! `--service-type-filter` names those types. They keep only the fields [`crate::service_types`] reads, and
//! wake the sync only for changes that can matter: a node's addresses, a node coming or going, an
//! EndpointSlice of a Service that is published from its endpoints. Endpoint churn of every other Service in
//! the cluster costs a map look-up, not a sync.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, NodeStatus, ObjectReference, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use ops::CancellationToken;
use ops::kube::{Seen, Watched, watch_kind_trimmed};
use tokio::sync::mpsc;

use crate::config::WatchScope;
use crate::service_types::{ClusterView, SERVICE_NAME_LABEL, ServiceType};
use crate::source::{self, Filters};

/// (namespace, name) of the Services whose EndpointSlices are read.
type Interest = Arc<RwLock<HashSet<(String, String)>>>;

/// The two reflectors and which Services' slices matter.
pub(crate) struct ClusterWatch {
    nodes: Watched<Node>,
    slices: Watched<EndpointSlice>,
    interest: Interest,
}

/// The Nodes and EndpointSlices as one sync sees them.
#[derive(Default)]
pub(crate) struct Snapshot {
    nodes: Vec<Arc<Node>>,
    slices: Vec<Arc<EndpointSlice>>,
}

impl Snapshot {
    /// The index [`crate::service_types::wanted`] reads.
    pub(crate) fn view(&self) -> ClusterView<'_> {
        ClusterView::new(
            self.nodes.iter().map(AsRef::as_ref),
            self.slices.iter().map(AsRef::as_ref),
        )
    }
}

impl ClusterWatch {
    /// Starts both reflectors: Nodes cluster-wide, EndpointSlices in the watched namespaces (only those that
    /// belong to a Service; `--label-filter` selects Services, not their slices).
    pub(crate) fn start(
        client: &kube::Client,
        scope: &WatchScope,
        trigger: &mpsc::UnboundedSender<Instant>,
        shutdown: &CancellationToken,
    ) -> Self {
        let interest: Interest = Arc::default();
        let nodes = watch_kind_trimmed(
            kube::Api::all(client.clone()),
            kube::runtime::watcher::Config::default(),
            trim_node,
            on_node_change(trigger.clone(), addresses_digest),
            shutdown.clone(),
        );
        let slices = watch_kind_trimmed(
            scope.api(client.clone()),
            kube::runtime::watcher::Config::default().labels(SERVICE_NAME_LABEL),
            trim_slice,
            on_slice_change(trigger.clone(), interest.clone()),
            shutdown.clone(),
        );
        Self {
            nodes,
            slices,
            interest,
        }
    }

    /// Waits until both reflectors listed once, at most `limit` each.
    pub(crate) async fn wait_listed(&self, limit: Duration) -> bool {
        self.nodes.wait_listed(limit).await && self.slices.wait_listed(limit).await
    }

    /// Records which of `services` read their EndpointSlices, then takes the Nodes and EndpointSlices and
    /// whether both views are fresh; the kind not listed yet as the error. The interest is recorded first,
    /// so a slice change the snapshot misses still triggers the next sync.
    pub(crate) async fn snapshot(
        &self,
        services: &[Arc<Service>],
        filters: &Filters,
    ) -> Result<(Snapshot, bool), &'static str> {
        let interest: HashSet<(String, String)> = services
            .iter()
            .filter(|service| reads_endpoints(service, filters))
            .map(|service| {
                let meta = &service.metadata;
                (
                    meta.namespace.clone().unwrap_or_default(),
                    meta.name.clone().unwrap_or_default(),
                )
            })
            .collect();
        *self
            .interest
            .write()
            .unwrap_or_else(PoisonError::into_inner) = interest;
        let (nodes, nodes_fresh) = self.nodes.objects().await;
        if !self.nodes.has_listed() {
            return Err("nodes");
        }
        let (slices, slices_fresh) = self.slices.objects().await;
        if !self.slices.has_listed() {
            return Err("endpointslices");
        }
        Ok((Snapshot { nodes, slices }, nodes_fresh && slices_fresh))
    }
}

/// Whether a Service's records depend on its EndpointSlices: a headless or NodePort Service with names.
fn reads_endpoints(service: &Service, filters: &Filters) -> bool {
    let headless = service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
    let kind = ServiceType::of(service);
    let by_type = match kind {
        Some(ServiceType::NodePort) => filters.services.node_ports(),
        Some(ServiceType::ClusterIp) => headless && filters.services.headless(),
        _ => false,
    };
    by_type && !source::service_hostnames(service, filters).is_empty()
}

/// Wakes the sync when a node comes, goes, or changes what `digest` covers (its addresses, for NodePort
/// Services); status heartbeats do not.
pub(crate) fn on_node_change(
    trigger: mpsc::UnboundedSender<Instant>,
    digest: fn(&Node) -> u64,
) -> impl Fn(Seen<'_, Node>) + Send {
    // One digest per node name: as many entries as the cluster has nodes.
    let seen: Mutex<HashMap<String, u64>> = Mutex::default();
    move |change| {
        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = match change {
            Seen::Listed => {
                seen.clear();
                true
            }
            Seen::Applied(node) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                let digest = digest(node);
                seen.insert(name, digest) != Some(digest)
            }
            Seen::Deleted(node) => {
                seen.remove(node.metadata.name.as_deref().unwrap_or_default());
                true
            }
        };
        if changed {
            let _ = trigger.send(Instant::now());
        }
    }
}

fn addresses_digest(node: &Node) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    hash_addresses(node, &mut hasher);
    hasher.finish()
}

/// Feeds a node's (type, address) pairs to `hasher`.
pub(crate) fn hash_addresses(node: &Node, hasher: &mut impl Hasher) {
    if let Some(addresses) = node.status.as_ref().and_then(|s| s.addresses.as_ref()) {
        for address in addresses {
            (&address.type_, &address.address).hash(hasher);
        }
    }
}

/// Wakes the sync when an EndpointSlice of a Service in `interest` changes, and after every (re)list.
fn on_slice_change(
    trigger: mpsc::UnboundedSender<Instant>,
    interest: Interest,
) -> impl Fn(Seen<'_, EndpointSlice>) + Send {
    move |change| {
        let slice = match change {
            Seen::Listed => None,
            Seen::Applied(slice) | Seen::Deleted(slice) => Some(slice),
        };
        let wanted = slice.is_none_or(|slice| {
            let meta = &slice.metadata;
            let service = meta.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL));
            let key = (
                meta.namespace.clone().unwrap_or_default(),
                service.cloned().unwrap_or_default(),
            );
            interest
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&key)
        });
        if wanted {
            let _ = trigger.send(Instant::now());
        }
    }
}

/// A Node as the store keeps it: its name and addresses.
fn trim_node(node: &mut Node) {
    let addresses = node.status.as_mut().and_then(|s| s.addresses.take());
    *node = Node {
        metadata: ObjectMeta {
            name: node.metadata.name.take(),
            resource_version: node.metadata.resource_version.take(),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(NodeStatus {
            addresses,
            ..NodeStatus::default()
        }),
    };
}

/// An EndpointSlice as the store keeps it: its Service, address type, and each endpoint's addresses,
/// conditions, hostname, node and target kind and name.
fn trim_slice(slice: &mut EndpointSlice) {
    let meta = &mut slice.metadata;
    let service = meta
        .labels
        .as_mut()
        .and_then(|labels| labels.remove_entry(SERVICE_NAME_LABEL));
    let endpoints = slice.endpoints.take().map(|endpoints| {
        endpoints
            .into_iter()
            .map(|endpoint| Endpoint {
                addresses: endpoint.addresses,
                conditions: endpoint.conditions,
                hostname: endpoint.hostname,
                node_name: endpoint.node_name,
                target_ref: endpoint.target_ref.map(|target| ObjectReference {
                    kind: target.kind,
                    name: target.name,
                    ..ObjectReference::default()
                }),
                ..Endpoint::default()
            })
            .collect()
    });
    *slice = EndpointSlice {
        metadata: ObjectMeta {
            name: meta.name.take(),
            namespace: meta.namespace.take(),
            resource_version: meta.resource_version.take(),
            labels: service.map(|entry| BTreeMap::from([entry])),
            ..ObjectMeta::default()
        },
        address_type: std::mem::take(&mut slice.address_type),
        endpoints,
        ports: None,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_objects_keep_what_the_rules_read_and_nothing_else() {
        let mut node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "resourceVersion": "7", "labels": {"a": "b"}, "annotations": {"big": "x"}},
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "images": [{"names": ["registry/image:1"], "sizeBytes": 1}],
            },
        }))
        .unwrap();
        trim_node(&mut node);
        assert_eq!(
            serde_json::to_value(&node).unwrap(),
            serde_json::json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "n1", "resourceVersion": "7"},
                "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]},
            })
        );

        let mut slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "default", "resourceVersion": "9",
                         "labels": {SERVICE_NAME_LABEL: "web", "other": "x"}},
            "addressType": "IPv4",
            "endpoints": [{
                "addresses": ["10.244.0.5"], "conditions": {"ready": true}, "hostname": "web-0",
                "nodeName": "n1", "zone": "z", "targetRef": {"kind": "Pod", "name": "web-0", "uid": "u", "namespace": "default"},
            }],
            "ports": [{"port": 80}],
        }))
        .unwrap();
        trim_slice(&mut slice);
        assert_eq!(
            serde_json::to_value(&slice).unwrap(),
            serde_json::json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "web-abc", "namespace": "default", "resourceVersion": "9",
                             "labels": {SERVICE_NAME_LABEL: "web"}},
                "addressType": "IPv4",
                "endpoints": [{
                    "addresses": ["10.244.0.5"], "conditions": {"ready": true}, "hostname": "web-0",
                    "nodeName": "n1", "targetRef": {"kind": "Pod", "name": "web-0"},
                }],
            })
        );
    }

    #[test]
    fn only_address_changes_and_slices_of_published_services_wake_the_sync() {
        let (trigger, mut woken) = mpsc::unbounded_channel();
        let on_node = on_node_change(trigger.clone(), addresses_digest);
        let node = |address: &str| -> Node {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "n1"},
                "status": {"addresses": [{"type": "InternalIP", "address": address}]},
            }))
            .unwrap()
        };
        on_node(Seen::Applied(&node("10.0.0.1")));
        on_node(Seen::Applied(&node("10.0.0.1")));
        on_node(Seen::Applied(&node("10.0.0.2")));
        on_node(Seen::Deleted(&node("10.0.0.2")));
        let mut count = 0;
        while woken.try_recv().is_ok() {
            count += 1;
        }
        assert_eq!(
            count, 3,
            "a heartbeat with the same addresses wakes nothing"
        );

        let interest: Interest = Arc::default();
        let on_slice = on_slice_change(trigger, interest.clone());
        let slice = |service: &str| -> EndpointSlice {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("{service}-x"), "namespace": "default",
                             "labels": {SERVICE_NAME_LABEL: service}},
                "addressType": "IPv4",
            }))
            .unwrap()
        };
        on_slice(Seen::Applied(&slice("web")));
        assert!(woken.try_recv().is_err(), "nobody reads web's endpoints");
        interest
            .write()
            .unwrap()
            .insert(("default".to_owned(), "web".to_owned()));
        on_slice(Seen::Applied(&slice("web")));
        on_slice(Seen::Deleted(&slice("other")));
        on_slice(Seen::Listed);
        assert!(woken.try_recv().is_ok());
        assert!(woken.try_recv().is_ok(), "a relist always wakes the sync");
        assert!(woken.try_recv().is_err());
    }
}
