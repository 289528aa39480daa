//! The Service types whose addresses are not in the Service itself: NodePort Services (at the nodes'
//! addresses), headless Services (at their ready Pods' addresses, one name per Pod with a hostname) and
//! ExternalName Services (a CNAME to `spec.externalName`), as external-dns v0.20 publishes them. Pure: the
//! controller hands in the Service, the Nodes and the EndpointSlices its reflectors hold, and gets
//! [`Wanted`]s back; LoadBalancer and ClusterIP Services go on to [`crate::source`] as before.
//!
//! Which types are published is `--service-type-filter` (external-dns's flag). NodePort and headless Services
//! need the Nodes and EndpointSlices of the cluster, so those reflectors run, and those are read, only when
//! the filter names NodePort or ClusterIP; without the flag a deployment watches what it always did.
//! Endpoints come from EndpointSlices (discovery.k8s.io/v1), as in external-dns v0.20; Pods are not watched:
//! a Pod's name comes from its endpoint's `hostname`, its host IP from its endpoint's node.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::{Endpoint as SliceEndpoint, EndpointSlice};

use crate::source::{
    self, Filters, NameRequest, ObjectId, RejectionKind, Request, TARGET_ANNOTATIONS, Targets,
    Wanted,
};
use crate::target::Target;

/// Which node addresses a NodePort Service is published at: `public` (ExternalIP) or `private` (InternalIP).
pub const ACCESS_ANNOTATIONS: [&str; 2] = [
    "external-dns.alpha.kubernetes.io/access",
    "external-dns.kubernetes.io/access",
];
/// What a headless Service's names point at instead of Pod IPs: `HostIP` or `NodeExternalIP`.
pub const ENDPOINTS_TYPE_ANNOTATIONS: [&str; 2] = [
    "external-dns.alpha.kubernetes.io/endpoints-type",
    "external-dns.kubernetes.io/endpoints-type",
];
/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Where a NodePort Service's addresses come from, as Events name it.
const NODES_FIELD: &str = "Node status.addresses";
/// Where a NodePort Service with `externalTrafficPolicy: Local` finds its nodes.
const LOCAL_NODES_FIELD: &str = "EndpointSlice endpoints[].nodeName (externalTrafficPolicy: Local)";
/// Where a headless Service's Pod addresses come from.
const POD_ADDRESSES_FIELD: &str = "EndpointSlice endpoints[].addresses";
/// Where a headless Service's host IPs come from (`--publish-host-ip`, `endpoints-type`).
const HOST_ADDRESSES_FIELD: &str = "EndpointSlice endpoints[].nodeName -> Node status.addresses";

/// A Service type, as `spec.type` and `--service-type-filter` spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum ServiceType {
    /// At the cluster IP with `--publish-internal-services`; headless ones at their Pods.
    #[value(name = "ClusterIP")]
    ClusterIp,
    /// At the nodes' addresses, with an SRV record per port.
    #[value(name = "NodePort")]
    NodePort,
    /// At the addresses in its status.
    #[value(name = "LoadBalancer")]
    LoadBalancer,
    /// A CNAME to `spec.externalName`.
    #[value(name = "ExternalName")]
    ExternalName,
}

impl ServiceType {
    /// The type of `service` (`ClusterIP` when unset); `None` for a type Kubernetes does not have.
    pub fn of(service: &Service) -> Option<Self> {
        match service.spec.as_ref().and_then(|s| s.type_.as_deref()) {
            None | Some("ClusterIP") => Some(Self::ClusterIp),
            Some("NodePort") => Some(Self::NodePort),
            Some("LoadBalancer") => Some(Self::LoadBalancer),
            Some("ExternalName") => Some(Self::ExternalName),
            Some(_) => None,
        }
    }
}

/// How Services are published, from the flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceOptions {
    /// `--service-type-filter`. Empty: LoadBalancer, ExternalName and (with `--publish-internal-services`)
    /// ClusterIP Services with a cluster IP; NodePort and headless Services only when named here.
    pub types: Vec<ServiceType>,
    /// Headless Services at their Pods' host IPs rather than the Pod IPs (`--publish-host-ip`).
    pub publish_host_ip: bool,
    /// Headless Services at their not-ready Pods too (`--always-publish-not-ready-addresses`).
    pub always_publish_not_ready: bool,
    /// NodePort Services at the nodes' internal IPv6 addresses beside their external ones
    /// (`--expose-internal-ipv6`).
    pub expose_internal_ipv6: bool,
}

impl ServiceOptions {
    /// Whether Services of `kind` are published at all.
    pub fn publishes(&self, kind: ServiceType) -> bool {
        if self.types.is_empty() {
            kind != ServiceType::NodePort
        } else {
            self.types.contains(&kind)
        }
    }

    /// Whether headless Services are published (ClusterIP named in the filter).
    pub fn headless(&self) -> bool {
        self.types.contains(&ServiceType::ClusterIp)
    }

    /// Whether NodePort Services are published.
    pub fn node_ports(&self) -> bool {
        self.types.contains(&ServiceType::NodePort)
    }

    /// Whether Nodes and EndpointSlices must be watched: NodePort or headless Services are published.
    pub fn needs_endpoints(&self) -> bool {
        self.headless() || self.node_ports()
    }
}

/// The Nodes and EndpointSlices of the cluster, indexed for the Services that read them.
#[derive(Debug, Default)]
pub struct ClusterView<'a> {
    nodes: BTreeMap<&'a str, &'a Node>,
    /// By namespace, then Service name.
    slices: BTreeMap<&'a str, BTreeMap<&'a str, Vec<&'a EndpointSlice>>>,
}

impl<'a> ClusterView<'a> {
    /// Indexes `nodes` by name and `slices` by their Service (the `kubernetes.io/service-name` label).
    pub fn new(
        nodes: impl IntoIterator<Item = &'a Node>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Self {
        let nodes = nodes
            .into_iter()
            .filter_map(|node| Some((node.metadata.name.as_deref()?, node)))
            .collect();
        let mut by_service: BTreeMap<&str, BTreeMap<&str, Vec<&EndpointSlice>>> = BTreeMap::new();
        for slice in slices {
            let namespace = slice.metadata.namespace.as_deref();
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(SERVICE_NAME_LABEL));
            if let (Some(namespace), Some(service)) = (namespace, service) {
                by_service
                    .entry(namespace)
                    .or_default()
                    .entry(service.as_str())
                    .or_default()
                    .push(slice);
            }
        }
        Self {
            nodes,
            slices: by_service,
        }
    }

    fn slices_of<'s>(&'s self, service: &Service) -> &'s [&'a EndpointSlice] {
        let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
        let name = service.metadata.name.as_deref().unwrap_or_default();
        self.slices
            .get(namespace)
            .and_then(|services| services.get(name))
            .map_or(&[], Vec::as_slice)
    }

    fn endpoints_of<'s>(
        &'s self,
        service: &Service,
    ) -> impl Iterator<Item = (&'a EndpointSlice, &'a SliceEndpoint)> + 's {
        self.slices_of(service).iter().flat_map(|slice| {
            slice
                .endpoints
                .iter()
                .flatten()
                .map(move |endpoint| (*slice, endpoint))
        })
    }
}

/// Everything a Service asks for: its hostname annotation (or `--fqdn-template` names) by its type, and its
/// internal-hostname annotation at its cluster IPs. Services of a type the filter leaves out ask for nothing.
pub fn wanted(service: &Service, filters: &Filters, view: &ClusterView<'_>) -> Vec<Wanted> {
    let options = &filters.services;
    let kind = ServiceType::of(service);
    if !options.types.is_empty() && !kind.is_some_and(|k| options.types.contains(&k)) {
        return Vec::new();
    }
    let mut found = vec![source::internal_from_service(service, filters)];
    match (kind, is_headless(service)) {
        (Some(ServiceType::ClusterIp), true) if options.headless() => {
            found.extend(headless(service, filters, view));
        }
        (Some(ServiceType::NodePort), _) if options.node_ports() => {
            found.extend(node_port(service, filters, view));
        }
        (Some(ServiceType::ExternalName), _) if options.publishes(ServiceType::ExternalName) => {
            found.push(external_name(service, filters));
        }
        // A headless Service not asked for has no cluster IP to publish either.
        (Some(ServiceType::ClusterIp | ServiceType::LoadBalancer), false) => {
            found.push(source::from_service(service, filters));
        }
        _ => {}
    }
    found
}

/// A ClusterIP Service without a cluster IP (`clusterIP: None`).
fn is_headless(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| ip == "None")
}

/// The Service's names as [`source::collect`] takes them.
fn borrowed<'a>(hostnames: &'a [(String, &'static str)]) -> Vec<(&'a str, &'static str)> {
    hostnames
        .iter()
        .map(|(h, key)| (h.as_str(), *key))
        .collect()
}

/// An ExternalName Service: a CNAME to `spec.externalName`, or its `spec.externalIPs` when it has some (as
/// external-dns).
fn external_name(service: &Service, filters: &Filters) -> Wanted {
    let hostnames = source::service_hostnames(service, filters);
    if hostnames.is_empty() {
        return Wanted::default();
    }
    let ips = source::external_ips(service);
    let (targets, field) = if ips.is_empty() {
        let name = service
            .spec
            .as_ref()
            .and_then(|s| s.external_name.as_deref());
        (name.into_iter().collect(), "spec.externalName")
    } else {
        (ips, "spec.externalIPs")
    };
    source::collect(
        ObjectId::of("service", &service.metadata),
        &service.metadata,
        borrowed(&hostnames),
        Targets::Overridable(targets, field),
        filters,
    )
}

/// A NodePort Service: its names at the nodes' addresses (only the nodes with a ready endpoint under
/// `externalTrafficPolicy: Local`), and an SRV record per port and name; or, with the target annotation,
/// its names at those targets only (external-dns).
fn node_port(service: &Service, filters: &Filters, view: &ClusterView<'_>) -> Vec<Wanted> {
    let hostnames = source::service_hostnames(service, filters);
    if hostnames.is_empty() {
        return Vec::new();
    }
    let object = ObjectId::of("service", &service.metadata);
    let annotations = service.metadata.annotations.as_ref();
    let mut rejections = Vec::new();
    let access = match source::annotation(annotations, &ACCESS_ANNOTATIONS) {
        None => Access::Default,
        Some((_, "public")) => Access::Public,
        Some((_, "private")) => Access::Private,
        Some((key, other)) => {
            let reason = format!("{other:?} is neither public nor private; using the default");
            rejections.push(source::rejection(
                &object,
                key,
                RejectionKind::Invalid,
                reason,
            ));
            Access::Default
        }
    };
    let local = service
        .spec
        .as_ref()
        .and_then(|s| s.external_traffic_policy.as_deref())
        == Some("Local");
    let (nodes, field): (Vec<&Node>, _) = if local {
        let names = local_nodes(service, view);
        let nodes = names.iter().filter_map(|n| view.nodes.get(n).copied());
        (nodes.collect(), LOCAL_NODES_FIELD)
    } else {
        (view.nodes.values().copied().collect(), NODES_FIELD)
    };
    let targets = node_port_targets(&nodes, access, filters.services.expose_internal_ipv6);
    let ports = if source::annotation(annotations, &TARGET_ANNOTATIONS).is_some() {
        Vec::new()
    } else {
        node_ports(service, &object, &mut rejections)
    };
    if !ports.is_empty() {
        // The SRV names count too, before any is built: each name once per protocol.
        let hostnames = source::distinct_hostnames(borrowed(&hostnames));
        let protocols: BTreeSet<&str> = ports.iter().map(|(protocol, _)| *protocol).collect();
        let names = hostnames.len().saturating_mul(1 + protocols.len());
        let mut distinct = targets.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let counts = (names, distinct.len().max(ports.len()));
        let fields: Vec<&str> = hostnames.iter().map(|(_, f)| *f).collect();
        let limits = &filters.limits;
        let over = source::limit_rejections(&object, counts, &fields, field, limits);
        if !over.is_empty() {
            rejections.extend(over);
            let ttl = source::ttl_of(annotations).ok().flatten();
            return vec![keep_published(object, &service.metadata, ttl, rejections)];
        }
    }
    let mut wanted = source::collect(
        object,
        &service.metadata,
        borrowed(&hostnames),
        Targets::Overridable(targets, field),
        filters,
    );
    wanted.rejections.splice(0..0, rejections);
    let mut found = Vec::new();
    if let Some(request) = wanted.request.as_ref().filter(|r| !r.keep_published) {
        let name = service.metadata.name.as_deref().unwrap_or_default();
        found = srv_requests(name, request, &ports, &mut wanted.rejections);
    }
    found.insert(0, wanted);
    found
}

/// The (protocol, node port) of each port of a NodePort Service that has one; a node port that is not a
/// port number is rejected into `rejections`.
fn node_ports<'a>(
    service: &'a Service,
    object: &ObjectId,
    rejections: &mut Vec<source::Rejection>,
) -> Vec<(&'a str, u16)> {
    let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
    let mut found = Vec::new();
    for port in ports.into_iter().flatten() {
        let Some(node_port) = port.node_port.filter(|p| *p > 0) else {
            continue;
        };
        let Ok(node_port) = u16::try_from(node_port) else {
            let reason = format!("{node_port} is not a port number");
            let field = "spec.ports[].nodePort";
            rejections.push(source::rejection(
                object,
                field,
                RejectionKind::Invalid,
                reason,
            ));
            continue;
        };
        let protocol = match port.protocol.as_deref() {
            None | Some("" | "TCP") => "tcp",
            Some("UDP") => "udp",
            Some("SCTP") => "sctp",
            Some(_) => continue,
        };
        found.push((protocol, node_port));
    }
    found
}

/// The SRV records external-dns makes for a NodePort Service: `_<service>._<protocol>.<name>` for each
/// published name and protocol, one record per port of that protocol (priority 0, weight 50, the node
/// port, the name). A wildcard name gets none (`_web._tcp.*.test.org` names nothing), with a Warning.
fn srv_requests(
    service: &str,
    request: &Request,
    ports: &[(&str, u16)],
    rejections: &mut Vec<source::Rejection>,
) -> Vec<Wanted> {
    let mut found = Vec::new();
    for name in &request.names {
        if ports.is_empty() {
            break;
        }
        if name.name.starts_with("*.") {
            let reason = format!("{}: a wildcard name gets no SRV record", name.name);
            let refused =
                source::rejection(&request.object, name.field, RejectionKind::Invalid, reason);
            rejections.push(refused);
            continue;
        }
        let mut by_protocol: BTreeMap<&str, Vec<Target>> = BTreeMap::new();
        for (protocol, port) in ports {
            by_protocol.entry(protocol).or_default().push(Target::Srv {
                priority: 0,
                weight: 50,
                port: *port,
                host: name.name.clone(),
            });
        }
        for (protocol, mut targets) in by_protocol {
            let srv_name = format!("_{service}._{protocol}.{}", name.name);
            // The apiserver keeps Service names DNS labels; checked anyway, since the name becomes a label.
            let label_ok = service.len() < 63
                && service
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if srv_name.len() > 253 || !label_ok {
                let reason = format!("{srv_name:?}: not a valid SRV record name");
                let refused =
                    source::rejection(&request.object, name.field, RejectionKind::Invalid, reason);
                rejections.push(refused);
                continue;
            }
            targets.sort();
            targets.dedup();
            found.push(Wanted {
                request: Some(Request {
                    object: request.object.clone(),
                    created: request.created,
                    ttl: request.ttl,
                    names: vec![NameRequest {
                        name: srv_name,
                        field: name.field,
                    }],
                    targets,
                    keep_published: false,
                }),
                ..Wanted::default()
            });
        }
    }
    found
}

/// What an object over a limit asks for: nothing new, the records it has kept (see [`Request`]).
fn keep_published(
    object: ObjectId,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ttl: Option<u32>,
    rejections: Vec<source::Rejection>,
) -> Wanted {
    Wanted {
        request: Some(Request {
            object,
            created: source::created(meta),
            ttl,
            names: Vec::new(),
            targets: Vec::new(),
            keep_published: true,
        }),
        rejections,
        waiting: None,
    }
}

/// The `access` annotation of a NodePort Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// External IPs when any node has one, else internal IPs.
    Default,
    /// External IPs only.
    Public,
    /// Internal IPs only.
    Private,
}

/// The addresses a NodePort Service is published at, by external-dns's rule: the nodes' ExternalIPs when
/// there are any (and their internal IPv6 addresses with `expose_internal_ipv6`), else their InternalIPs;
/// `public` and `private` pick one kind outright. For one node, the addresses its own name is published at
/// (`--source node`, [`crate::node_source`]).
pub(crate) fn node_port_targets<'a>(
    nodes: &[&'a Node],
    access: Access,
    internal_ipv6: bool,
) -> Vec<&'a str> {
    let mut external = Vec::new();
    let mut internal = Vec::new();
    let mut internal_v6 = Vec::new();
    for (kind, address) in nodes.iter().flat_map(|node| node_addresses(node)) {
        match kind {
            "ExternalIP" => external.push(address),
            "InternalIP" => {
                internal.push(address);
                if address.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()) {
                    internal_v6.push(address);
                }
            }
            _ => {}
        }
    }
    let with_v6 = |mut external: Vec<&'a str>| {
        if internal_ipv6 {
            external.extend(internal_v6.iter().copied());
        }
        external
    };
    match access {
        Access::Public => with_v6(external),
        Access::Private => internal,
        Access::Default if !external.is_empty() => with_v6(external),
        Access::Default => internal,
    }
}

/// A node's (type, address) pairs, in its status's order.
fn node_addresses(node: &Node) -> impl Iterator<Item = (&str, &str)> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .map(|a| (a.type_.as_str(), a.address.as_str()))
}

/// A node's host IP as the kubelet picks it for its Pods' `status.hostIP`: the first InternalIP, else the
/// first ExternalIP.
fn host_ip(node: &Node) -> Option<&str> {
    let usable = |kind: &'static str| {
        node_addresses(node)
            .filter(move |(k, _)| *k == kind)
            .map(|(_, address)| address)
            .find(|address| address.parse::<IpAddr>().is_ok())
    };
    usable("InternalIP").or_else(|| usable("ExternalIP"))
}

/// The nodes of a Service's endpoints under `externalTrafficPolicy: Local`, as external-dns picks them: the
/// nodes with a ready endpoint; when there are none, those with a serving one (ready but terminating); when
/// there are none either, those with any endpoint, so that a rollout never empties the name.
fn local_nodes<'a>(service: &Service, view: &ClusterView<'a>) -> BTreeSet<&'a str> {
    let mut levels: [BTreeSet<&str>; 3] = Default::default();
    for (_, endpoint) in view.endpoints_of(service) {
        let Some(node) = endpoint.node_name.as_deref() else {
            continue;
        };
        let conditions = endpoint.conditions.as_ref();
        // Unset conditions mean true (EndpointConditions' contract).
        let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
        let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
        if ready {
            levels[0].insert(node);
        }
        if serving {
            levels[1].insert(node);
        }
        levels[2].insert(node);
    }
    levels
        .into_iter()
        .find(|nodes| !nodes.is_empty())
        .unwrap_or_default()
}

/// What a headless Service's names point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadlessTargets {
    /// The Pods' IPs (the endpoints' first address).
    Pod,
    /// The Pods' host IPs (`--publish-host-ip`, or `endpoints-type: HostIP`).
    Host,
    /// The ExternalIPs of the Pods' nodes (`endpoints-type: NodeExternalIP`).
    NodeExternal,
}

/// One ready endpoint of a headless Service: its Pod's hostname, if any, and its addresses.
#[derive(Debug)]
struct PodTargets<'a> {
    hostname: Option<&'a str>,
    targets: Vec<&'a str>,
}

/// A headless Service: each name at every ready Pod's address, and `<pod hostname>.<name>` at that Pod's, as
/// external-dns does. The names go into one request per distinct target set.
fn headless(service: &Service, filters: &Filters, view: &ClusterView<'_>) -> Vec<Wanted> {
    let hostnames = source::service_hostnames(service, filters);
    if hostnames.is_empty() {
        return Vec::new();
    }
    let meta = &service.metadata;
    let object = ObjectId::of("service", meta);
    let annotations = meta.annotations.as_ref();
    if source::annotation(annotations, &TARGET_ANNOTATIONS).is_some() {
        // The target annotation replaces the Pods, and with them the Pods' own names (external-dns).
        let targets = Targets::Overridable(Vec::new(), POD_ADDRESSES_FIELD);
        let names = borrowed(&hostnames);
        return vec![source::collect(object, meta, names, targets, filters)];
    }
    let mut first = Wanted::default();
    let ttl = match source::ttl_of(annotations) {
        Ok(ttl) => ttl,
        Err((key, reason)) => {
            let invalid = source::rejection(&object, key, RejectionKind::Invalid, reason);
            first.rejections.push(invalid);
            return vec![first];
        }
    };
    let mode = match source::annotation(annotations, &ENDPOINTS_TYPE_ANNOTATIONS) {
        Some((_, "NodeExternalIP")) => HeadlessTargets::NodeExternal,
        Some((_, "HostIP")) => HeadlessTargets::Host,
        other => {
            if let Some((key, value)) = other {
                let reason = format!("{value:?} is neither HostIP nor NodeExternalIP; ignored");
                let invalid = source::rejection(&object, key, RejectionKind::Invalid, reason);
                first.rejections.push(invalid);
            }
            if filters.services.publish_host_ip {
                HeadlessTargets::Host
            } else {
                HeadlessTargets::Pod
            }
        }
    };
    let not_ready = filters.services.always_publish_not_ready
        || service
            .spec
            .as_ref()
            .and_then(|s| s.publish_not_ready_addresses)
            .unwrap_or(false);
    let pods = pod_targets(service, view, mode, not_ready, filters);
    let field = if mode == HeadlessTargets::Pod {
        POD_ADDRESSES_FIELD
    } else {
        HOST_ADDRESSES_FIELD
    };

    let hostnames = source::distinct_hostnames(borrowed(&hostnames));
    let mut union: Vec<&str> = pods
        .iter()
        .flat_map(|p| p.targets.iter().copied())
        .collect();
    union.sort_unstable();
    union.dedup();
    let pod_names: BTreeSet<&str> = pods.iter().filter_map(|p| p.hostname).collect();
    // Counted before a single name is built: a long annotation times many Pods is refused, not expanded.
    let names = hostnames.len().saturating_mul(1 + pod_names.len());
    let fields: Vec<&str> = hostnames.iter().map(|(_, f)| *f).collect();
    let limits = &filters.limits;
    let over = source::limit_rejections(&object, (names, union.len()), &fields, field, limits);
    if !over.is_empty() {
        first.rejections.extend(over);
        return vec![keep_published(object, meta, ttl, first.rejections)];
    }
    if union.is_empty() {
        first.waiting = Some(field);
        return vec![first];
    }
    let valid: BTreeSet<String> =
        source::valid_targets(&object, union, field, &mut first.rejections)
            .into_iter()
            .filter_map(|target| match target {
                Target::Host(host) => Some(host),
                _ => None,
            })
            .collect();
    // Each name with its targets (a name made twice, by two hostnames, gets the union).
    let mut by_name: BTreeMap<String, (BTreeSet<&str>, &'static str)> = BTreeMap::new();
    for (hostname, key) in &hostnames {
        let hostname = hostname.trim().trim_end_matches('.');
        for pod in &pods {
            let targets = pod.targets.iter().copied().filter(|t| valid.contains(*t));
            let targets: Vec<&str> = targets.collect();
            if targets.is_empty() {
                continue;
            }
            let mut names = vec![hostname.to_owned()];
            names.extend(pod.hostname.map(|pod| format!("{pod}.{hostname}")));
            for name in names {
                let entry = by_name.entry(name).or_insert((BTreeSet::new(), *key));
                entry.0.extend(targets.iter().copied());
            }
        }
    }
    let mut groups: BTreeMap<Vec<&str>, Vec<(&str, &'static str)>> = BTreeMap::new();
    for (name, (targets, key)) in &by_name {
        let targets: Vec<&str> = targets.iter().copied().collect();
        groups
            .entry(targets)
            .or_default()
            .push((name.as_str(), key));
    }
    let mut found = Vec::with_capacity(groups.len() + 1);
    for (targets, names) in groups {
        let names: Vec<NameRequest> =
            source::valid_names(&object, names, filters, &mut first.rejections);
        if names.is_empty() {
            continue;
        }
        found.push(Wanted {
            request: Some(Request {
                object: object.clone(),
                created: source::created(meta),
                ttl,
                names,
                targets: targets.into_iter().map(Target::host).collect(),
                keep_published: false,
            }),
            ..Wanted::default()
        });
    }
    found.insert(0, first);
    found
}

/// The endpoints of a headless Service that are published: ready ones (all with `not_ready`), that stand
/// for a Pod, each with its Pod's hostname and the addresses `mode` picks.
fn pod_targets<'a>(
    service: &Service,
    view: &ClusterView<'a>,
    mode: HeadlessTargets,
    not_ready: bool,
    filters: &Filters,
) -> Vec<PodTargets<'a>> {
    let mut pods = Vec::new();
    for (slice, endpoint) in view.endpoints_of(service) {
        let ready = endpoint
            .conditions
            .as_ref()
            .and_then(|c| c.ready)
            .unwrap_or(true);
        if !ready && !not_ready {
            continue;
        }
        // external-dns publishes endpoints that stand for Pods only.
        if endpoint.target_ref.as_ref().and_then(|r| r.kind.as_deref()) != Some("Pod") {
            continue;
        }
        let node = || {
            endpoint
                .node_name
                .as_deref()
                .and_then(|name| view.nodes.get(name).copied())
        };
        let targets = match mode {
            HeadlessTargets::Pod => {
                if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
                    continue;
                }
                endpoint
                    .addresses
                    .first()
                    .map(String::as_str)
                    .into_iter()
                    .collect()
            }
            HeadlessTargets::Host => node().and_then(host_ip).into_iter().collect(),
            HeadlessTargets::NodeExternal => node()
                .map(|node| {
                    let access = Access::Public;
                    node_port_targets(&[node], access, filters.services.expose_internal_ipv6)
                })
                .unwrap_or_default(),
        };
        pods.push(PodTargets {
            hostname: endpoint.hostname.as_deref(),
            targets,
        });
    }
    pods
}

#[cfg(test)]
#[path = "service_types_tests.rs"]
mod tests;
