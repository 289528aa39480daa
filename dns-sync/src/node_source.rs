//! `--source node`: each Node published at its own addresses, as external-dns's node source does. Its names
//! are the `--fqdn-template` names (`{{.Name}}.nodes.example.org`), else the node's name; with
//! `--combine-fqdn-annotation`, both. Its addresses are its ExternalIPs (and, with `--expose-internal-ipv6`,
//! its internal IPv6 addresses), else its InternalIPs, unless the target annotation says otherwise. A node
//! marked unschedulable (cordoned) is left out while `--exclude-unschedulable` is on, as it is by default.
//! The TTL and annotation filter work as for every source. Pure: the reflector is
//! [`crate::controller`]'s.

use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::service_types::{Access, node_port_targets};
use crate::source::{FQDN_TEMPLATE_FIELD, Filters, ObjectId, Targets, Wanted, collect};

/// The kind in record attributions (`node//n1`: Nodes have no namespace) and in Events.
pub const KIND: &str = "node";
/// Where a node's own name comes from, as Events name it.
const NAME_FIELD: &str = "metadata.name";
/// Where a node's addresses come from, as Events name it.
const ADDRESSES_FIELD: &str = "status.addresses";

/// The records one Node asks for.
pub fn from_node(node: &Node, filters: &Filters) -> Wanted {
    let meta = &node.metadata;
    if !filters.annotations_match(meta.annotations.as_ref()) {
        return Wanted::default();
    }
    let cordoned = node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
    if cordoned && filters.exclude_unschedulable {
        return Wanted::default();
    }
    let templated = filters.templated(meta, false);
    let mut hostnames: Vec<(&str, &'static str)> = templated
        .iter()
        .map(|name| (name.as_str(), FQDN_TEMPLATE_FIELD))
        .collect();
    if hostnames.is_empty() || filters.combine_fqdn_annotation {
        hostnames.push((meta.name.as_deref().unwrap_or_default(), NAME_FIELD));
    }
    let ipv6 = filters.services.expose_internal_ipv6;
    let addresses = node_port_targets(&[node], Access::Default, ipv6);
    collect(
        ObjectId::of(KIND, meta),
        meta,
        hostnames,
        Targets::Overridable(addresses, ADDRESSES_FIELD),
        filters,
    )
}

/// A Node as the node source's store keeps it: what [`from_node`] reads, and what an Event on it needs.
/// Its images, conditions and capacity (most of a Node's size, and what its heartbeats change) are dropped.
pub fn trim(node: &mut Node) {
    let meta = std::mem::take(&mut node.metadata);
    let unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable);
    let addresses = node.status.as_mut().and_then(|s| s.addresses.take());
    *node = Node {
        metadata: ObjectMeta {
            name: meta.name,
            uid: meta.uid,
            resource_version: meta.resource_version,
            creation_timestamp: meta.creation_timestamp,
            labels: meta.labels,
            annotations: meta.annotations,
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            unschedulable,
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            addresses,
            ..NodeStatus::default()
        }),
    };
}

/// A digest of what [`from_node`] reads from a trimmed Node, so that only a change of it wakes a sync.
pub fn digest(node: &Node) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    let meta = &node.metadata;
    (&meta.labels, &meta.annotations).hash(&mut hasher);
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .hash(&mut hasher);
    crate::cluster_watch::hash_addresses(node, &mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fqdn_template;

    /// Node `name` with `addresses`, a label `zone: a`, and the images and conditions a kubelet reports.
    fn node(name: &str, addresses: &[(&str, &str)]) -> Node {
        let addresses: Vec<serde_json::Value> = addresses
            .iter()
            .map(|(kind, address)| serde_json::json!({"type": kind, "address": address}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"zone": "a"}},
            "spec": {},
            "status": {"addresses": addresses, "images": [{"names": ["big"], "sizeBytes": 1}],
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap()
    }

    fn cordon(mut node: Node) -> Node {
        node.spec.get_or_insert_default().unschedulable = Some(true);
        node
    }

    fn filters(template: Option<&str>) -> Filters {
        Filters {
            domains: vec!["test.org".to_owned()],
            fqdn_templates: template
                .map(|t| fqdn_template::parse(t).unwrap())
                .unwrap_or_default(),
            exclude_unschedulable: true,
            ..Filters::default()
        }
    }

    fn published(wanted: &Wanted) -> Vec<String> {
        let mut found: Vec<String> = wanted
            .request
            .iter()
            .flat_map(|r| r.endpoints())
            .map(|e| format!("{} {}", e.name, e.target))
            .collect();
        found.sort();
        found
    }

    const BOTH: [(&str, &str); 3] = [
        ("InternalIP", "10.0.0.1"),
        ("InternalIP", "fd00::1"),
        ("ExternalIP", "192.0.2.1"),
    ];

    #[test]
    fn a_node_is_published_at_its_external_ips_else_its_internal_ones() {
        let f = filters(Some("{{.Name}}.nodes.test.org"));
        let public = node("n1", &BOTH);
        assert_eq!(
            published(&from_node(&public, &f)),
            ["n1.nodes.test.org 192.0.2.1"]
        );
        let private = node("n2", &[("InternalIP", "10.0.0.2"), ("Hostname", "n2")]);
        assert_eq!(
            published(&from_node(&private, &f)),
            ["n2.nodes.test.org 10.0.0.2"]
        );

        let f = Filters {
            services: crate::service_types::ServiceOptions {
                expose_internal_ipv6: true,
                ..Default::default()
            },
            ..f
        };
        assert_eq!(
            published(&from_node(&public, &f)),
            ["n1.nodes.test.org 192.0.2.1", "n1.nodes.test.org fd00::1"]
        );
    }

    #[test]
    fn without_a_template_the_node_name_is_the_name_and_combining_gives_both() {
        let named = node("n1.test.org", &BOTH);
        assert_eq!(
            published(&from_node(&named, &filters(None))),
            ["n1.test.org 192.0.2.1"]
        );
        let combined = Filters {
            combine_fqdn_annotation: true,
            ..filters(Some("{{.Name}}.{{.Labels.zone}}.test.org"))
        };
        assert_eq!(
            published(&from_node(&named, &combined)),
            ["n1.test.org 192.0.2.1", "n1.test.org.a.test.org 192.0.2.1"]
        );
    }

    #[test]
    fn cordoned_nodes_are_left_out_unless_told_and_annotations_apply() {
        let f = filters(Some("{{.Name}}.nodes.test.org"));
        let cordoned = cordon(node("n1", &BOTH));
        assert_eq!(published(&from_node(&cordoned, &f)), Vec::<String>::new());
        let keep = Filters {
            exclude_unschedulable: false,
            ..filters(Some("{{.Name}}.nodes.test.org"))
        };
        assert_eq!(
            published(&from_node(&cordoned, &keep)),
            ["n1.nodes.test.org 192.0.2.1"]
        );

        let mut annotated = node("n1", &BOTH);
        annotated.metadata.annotations = Some(
            [
                ("external-dns.alpha.kubernetes.io/target", "198.51.100.1"),
                ("external-dns.alpha.kubernetes.io/ttl", "30"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        );
        let wanted = from_node(&annotated, &f);
        assert_eq!(published(&wanted), ["n1.nodes.test.org 198.51.100.1"]);
        assert_eq!(wanted.request.unwrap().ttl, Some(30));
    }

    #[test]
    fn a_name_that_is_not_a_host_name_is_refused_naming_where_it_came_from() {
        let f = filters(Some("{{.Labels.missing}}.nodes.test.org"));
        let wanted = from_node(&node("n1", &BOTH), &f);
        let refused = format!("{:?}", wanted.rejections);
        assert!(refused.contains(FQDN_TEMPLATE_FIELD), "{refused}");
        let outside = from_node(&node("n1.example.net", &BOTH), &filters(None));
        assert!(outside.request.is_none(), "outside the domain filter");
    }

    #[test]
    fn the_store_keeps_what_is_read_and_heartbeats_do_not_change_the_digest() {
        let mut trimmed = node("n1", &BOTH);
        let before = digest(&trimmed);
        trim(&mut trimmed);
        assert_eq!(digest(&trimmed), before);
        let status = trimmed.status.as_ref().unwrap();
        assert!(status.images.is_none() && status.conditions.is_none());
        assert_eq!(trimmed.metadata.labels.as_ref().unwrap()["zone"], "a");
        assert_eq!(
            published(&from_node(&trimmed, &filters(Some("{{.Name}}.test.org")))),
            ["n1.test.org 192.0.2.1"]
        );

        let cordoned = cordon(node("n1", &BOTH));
        assert_ne!(digest(&cordoned), before);
    }
}
