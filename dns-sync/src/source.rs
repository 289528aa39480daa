//! What DNS records the cluster asks for: Services of type LoadBalancer and Ingresses turned into
//! [`Request`]s (names and targets of one object), with every unusable input turned into a [`Rejection`] that
//! names the object and the field. Pure: the controller feeds it objects from its reflectors.
//!
//! The per-object [`Limits`] are checked here, on the raw lists, before anything is validated or paired: a
//! 256 KiB annotation is counted, never multiplied out. Whether a request may be published at all (reserved
//! names, namespaces, per-name limits) is [`crate::publish`]'s business.
//!
//! The annotations are external-dns's, so objects annotated for external-dns need no change.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{LoadBalancerIngress, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::fqdn_template::FqdnTemplate;
use crate::target::Target;

/// Hostname annotations, in order of precedence (external-dns reads both).
pub const HOSTNAME_ANNOTATIONS: [&str; 2] = [
    "external-dns.alpha.kubernetes.io/hostname",
    "external-dns.kubernetes.io/hostname",
];
/// TTL annotations (seconds, or a duration such as `1m`).
pub const TTL_ANNOTATIONS: [&str; 2] = [
    "external-dns.alpha.kubernetes.io/ttl",
    "external-dns.kubernetes.io/ttl",
];
/// Target override annotations (comma-separated addresses or names).
pub const TARGET_ANNOTATIONS: [&str; 2] = [
    "external-dns.alpha.kubernetes.io/target",
    "external-dns.kubernetes.io/target",
];
/// Names published at the Service's cluster IPs, whatever its type (external-dns's).
pub const INTERNAL_HOSTNAME_ANNOTATIONS: [&str; 2] = [
    "external-dns.alpha.kubernetes.io/internal-hostname",
    "external-dns.kubernetes.io/internal-hostname",
];
/// Which of an Ingress's names are published: `defined-hosts-only` (rules and TLS hosts) or `annotation-only`.
pub const INGRESS_HOSTNAME_SOURCE_ANNOTATIONS: [&str; 2] = [
    "external-dns.alpha.kubernetes.io/ingress-hostname-source",
    "external-dns.kubernetes.io/ingress-hostname-source",
];
/// Where a Service's cluster IPs are read from, as Events name it.
const CLUSTER_IPS_FIELD: &str = "spec.clusterIPs";
/// The legacy Ingress class annotation.
const INGRESS_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// Which object a record or a rejection comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId {
    /// `service`, `ingress`, `dnsendpoint`, `node`, or a Gateway API route kind (`httproute`, ...).
    pub kind: &'static str,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectId {
    /// The id of a `kind` object with this metadata.
    pub fn of(kind: &'static str, meta: &ObjectMeta) -> Self {
        Self {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }

    /// Parses the `kind/namespace/name` form written into a record's `resource` field.
    pub fn parse(resource: &str) -> Option<Self> {
        let mut parts = resource.splitn(3, '/');
        let kind = match parts.next()? {
            "service" => "service",
            "ingress" => "ingress",
            "dnsendpoint" => "dnsendpoint",
            "node" => crate::node_source::KIND,
            other => crate::gateway::api::RouteKind::from_id(other)?.id(),
        };
        let namespace = parts.next()?.to_owned();
        let name = parts.next()?.to_owned();
        Some(Self {
            kind,
            namespace,
            name,
        })
    }
}

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// One name pointing at one target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// Lower-case DNS name without the trailing dot (may start with `*.`).
    pub name: String,
    /// What the record holds.
    pub target: Target,
    /// TTL from the annotation, if any.
    pub ttl: Option<u32>,
    /// The object asking for it.
    pub object: ObjectId,
    /// Stored at the name's own key (no suffix label), for readers that look up exactly that key: CoreDNS
    /// answers PTR questions only from it. One record of a name at most.
    pub at_name: bool,
}

/// Why a name (or a whole object) is not published: the metric label and the Event reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectionKind {
    /// Bad input: not a host name, outside the domain filter, a bad TTL or target, no address yet.
    Invalid,
    /// A name nobody may publish: a zone apex, `dns.<zone>` and below, `--reserved-name`.
    Reserved,
    /// The namespace may not publish this name (`--namespace-domains`).
    NotAllowed,
    /// Another namespace holds the name.
    Conflict,
    /// Over a limit (names or targets per object, targets per name).
    Limit,
}

impl RejectionKind {
    /// Every kind, for metrics that show zeros too.
    pub const ALL: [Self; 5] = [
        Self::Invalid,
        Self::Reserved,
        Self::NotAllowed,
        Self::Conflict,
        Self::Limit,
    ];

    /// The `reason` label of `groundwork_dns_sync_refusals`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Reserved => "reserved",
            Self::NotAllowed => "not_allowed",
            Self::Conflict => "conflict",
            Self::Limit => "limit",
        }
    }

    /// The reason of the Warning Event on the object.
    pub fn event_reason(self) -> &'static str {
        match self {
            Self::Invalid | Self::Reserved | Self::NotAllowed => "Rejected",
            Self::Conflict => "Conflict",
            Self::Limit => "LimitExceeded",
        }
    }
}

/// A name (or a whole object) that cannot be published, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The object.
    pub object: ObjectId,
    /// The field or annotation at fault.
    pub field: String,
    /// What is wrong.
    pub reason: String,
    /// Which rule refused it.
    pub kind: RejectionKind,
}

/// How much one object may ask for. Checked on the raw lists, before validation and before names and targets
/// are paired, so the records an object can cause are bounded by `names_per_object * targets_per_object`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Distinct host name entries of one object (`--max-names-per-object`).
    pub names_per_object: usize,
    /// Distinct target entries of one object (`--max-targets-per-object`).
    pub targets_per_object: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            names_per_object: 100,
            targets_per_object: 100,
        }
    }
}

/// The field named in Events about a name made by `--fqdn-template`.
pub const FQDN_TEMPLATE_FIELD: &str = "--fqdn-template";

/// Which objects and names are in scope.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// Suffixes (`test.org`) a name must end with, on a label boundary; empty means any.
    pub domains: Vec<String>,
    /// Suffixes a name must not end with, on a label boundary, even inside `domains` (`--exclude-domains`).
    pub excluded_domains: Vec<String>,
    /// Only Ingresses of this class (spec.ingressClassName or the legacy annotation).
    pub ingress_class: Option<String>,
    /// Only objects with these annotation values.
    pub annotations: Vec<(String, String)>,
    /// Names for objects that carry none (`--fqdn-template`).
    pub fqdn_templates: Vec<FqdnTemplate>,
    /// The templates' names in addition to the object's own (`--combine-fqdn-annotation`).
    pub combine_fqdn_annotation: bool,
    /// ClusterIP Services' hostname annotations too, at their cluster IPs (`--publish-internal-services`).
    pub publish_internal: bool,
    /// Per-object limits.
    pub limits: Limits,
    /// Which Service types are published, and how (`--service-type-filter` and friends).
    pub services: crate::service_types::ServiceOptions,
    /// Cordoned Nodes are not published (`--exclude-unschedulable`, `--source node`).
    pub exclude_unschedulable: bool,
    /// The hostname and internal-hostname annotations are not read (`--ignore-hostname-annotation`).
    pub ignore_hostname_annotation: bool,
    /// Ingress `spec.tls[].hosts` are not names (`--ignore-ingress-tls-spec`).
    pub ignore_ingress_tls_spec: bool,
    /// Ingress `spec.rules[].host` are not names (`--ignore-ingress-rules-spec`).
    pub ignore_ingress_rules_spec: bool,
}

impl Filters {
    /// The `--fqdn-template` names of the object of `meta`: for objects without names of their own, or for
    /// every object with `--combine-fqdn-annotation`.
    pub(crate) fn templated(&self, meta: &ObjectMeta, has_names: bool) -> Vec<String> {
        if has_names && !self.combine_fqdn_annotation {
            return Vec::new();
        }
        self.fqdn_templates.iter().map(|t| t.render(meta)).collect()
    }

    pub(crate) fn in_domain(&self, name: &str) -> bool {
        let under = |domain: &String| at_or_below(name, domain);
        (self.domains.is_empty() || self.domains.iter().any(under))
            && !self.excluded_domains.iter().any(under)
    }

    /// The first of the hostname annotations `keys` an object carries, and its value, unless
    /// `--ignore-hostname-annotation` says they are not read.
    pub(crate) fn hostname_annotation<'a>(
        &self,
        meta: &'a ObjectMeta,
        keys: &[&'static str],
    ) -> Option<(&'static str, &'a str)> {
        if self.ignore_hostname_annotation {
            return None;
        }
        annotation(meta.annotations.as_ref(), keys)
    }

    pub(crate) fn annotations_match(&self, annotations: Option<&BTreeMap<String, String>>) -> bool {
        self.annotations.iter().all(|(key, value)| {
            annotations
                .and_then(|a| a.get(key))
                .is_some_and(|v| v == value)
        })
    }
}

/// A name one object asks for, and the field it came from (for Events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRequest {
    /// Lower-case, validated, inside the domain filter.
    pub name: String,
    /// The annotation or field it was read from.
    pub field: &'static str,
}

/// What one object asks to publish: every name at every target, kept apart until the publishing rules have
/// allowed it (so the cross product is never built for an object they refuse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The object.
    pub object: ObjectId,
    /// Its `metadata.creationTimestamp` in Unix seconds (who claimed a name first).
    pub created: Option<i64>,
    /// TTL from the annotation, if any.
    pub ttl: Option<u32>,
    /// Names, sorted and distinct.
    pub names: Vec<NameRequest>,
    /// Targets, sorted and distinct.
    pub targets: Vec<Target>,
    /// The object went over a [`Limits`] entry: it publishes nothing new and keeps the records it already had
    /// (`names` and `targets` are empty).
    pub keep_published: bool,
}

impl Request {
    /// Every (name, target) pair as an endpoint.
    pub fn endpoints(&self) -> impl Iterator<Item = Endpoint> + '_ {
        self.names.iter().flat_map(move |name| {
            self.targets
                .iter()
                .map(move |target| self.endpoint(&name.name, target))
        })
    }

    /// One endpoint of this object.
    pub fn endpoint(&self, name: &str, target: &Target) -> Endpoint {
        Endpoint {
            name: name.to_owned(),
            target: target.clone(),
            ttl: self.ttl,
            object: self.object.clone(),
            at_name: false,
        }
    }
}

/// What one object asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// What to publish, if anything.
    pub request: Option<Request>,
    /// Inputs that were skipped.
    pub rejections: Vec<Rejection>,
    /// The object asks for names but has no address yet (its status is still empty, as a new LoadBalancer
    /// Service's is until the controller assigns one): the field it waits on. Normal, nothing to fix.
    pub waiting: Option<&'static str>,
}

/// The records a Service asks for with its hostname annotation (or `--fqdn-template`): a LoadBalancer at its
/// `spec.externalIPs` if it has any, else at the addresses in its status; and with
/// `--publish-internal-services` a ClusterIP Service at its cluster IPs.
pub fn from_service(service: &Service, filters: &Filters) -> Wanted {
    let meta = &service.metadata;
    let kind = service.spec.as_ref().and_then(|s| s.type_.as_deref());
    let internal = match kind {
        Some("LoadBalancer") => false,
        None | Some("ClusterIP") if filters.publish_internal => true,
        _ => return Wanted::default(),
    };
    let hostnames = service_hostnames(service, filters);
    if hostnames.is_empty() {
        return Wanted::default();
    }
    let external_ips = external_ips(service);
    let (addresses, field) = if internal {
        (cluster_ips(service), CLUSTER_IPS_FIELD)
    } else if !external_ips.is_empty() {
        // As external-dns: addresses the cluster was told to route to this Service come before its status.
        (external_ips, "spec.externalIPs")
    } else {
        let status = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|ingress| ingress.iter().filter_map(service_target).collect())
            .unwrap_or_default();
        (status, "status.loadBalancer.ingress")
    };
    let hostnames = hostnames
        .iter()
        .map(|(h, key)| (h.as_str(), *key))
        .collect();
    collect(
        ObjectId::of("service", meta),
        meta,
        hostnames,
        Targets::Overridable(addresses, field),
        filters,
    )
}

/// A Service's `spec.externalIPs`: addresses the cluster routes to it, which external-dns publishes before
/// a LoadBalancer's status and an ExternalName's name.
pub(crate) fn external_ips(service: &Service) -> Vec<&str> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.external_ips.as_ref())
        .map(|ips| ips.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

/// The names a Service asks for with its hostname annotation (or `--fqdn-template`), each with the field it
/// comes from; none when the annotation filter leaves the Service out.
pub(crate) fn service_hostnames(
    service: &Service,
    filters: &Filters,
) -> Vec<(String, &'static str)> {
    let meta = &service.metadata;
    if !filters.annotations_match(meta.annotations.as_ref()) {
        return Vec::new();
    }
    let from_annotation = filters.hostname_annotation(meta, &HOSTNAME_ANNOTATIONS);
    let templated = filters.templated(meta, from_annotation.is_some());
    let mut hostnames: Vec<(String, &'static str)> = from_annotation
        .map(|(key, names)| split_list(names).map(|h| (h.to_owned(), key)).collect())
        .unwrap_or_default();
    hostnames.extend(
        templated
            .into_iter()
            .map(|name| (name, FQDN_TEMPLATE_FIELD)),
    );
    hostnames
}

/// The records a Service asks for with its internal-hostname annotation: those names at its cluster IPs,
/// whatever its type (not for a headless Service, which has none). The target annotation does not apply.
pub fn internal_from_service(service: &Service, filters: &Filters) -> Wanted {
    let meta = &service.metadata;
    let Some((key, names)) = filters.hostname_annotation(meta, &INTERNAL_HOSTNAME_ANNOTATIONS)
    else {
        return Wanted::default();
    };
    if !filters.annotations_match(meta.annotations.as_ref()) {
        return Wanted::default();
    }
    let addresses = cluster_ips(service);
    if addresses.is_empty() {
        // Headless, or not allocated yet: nothing to point at (a headless Service's names are its Pods').
        return Wanted::default();
    }
    collect(
        ObjectId::of("service", meta),
        meta,
        split_list(names).map(|h| (h, key)).collect(),
        Targets::Fixed(addresses, CLUSTER_IPS_FIELD),
        filters,
    )
}

/// A Service's cluster IPs (`spec.clusterIPs`, else `spec.clusterIP`), without `None` (headless).
fn cluster_ips(service: &Service) -> Vec<&str> {
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    let listed: Vec<&str> = spec
        .cluster_ips
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let ips = if listed.is_empty() {
        spec.cluster_ip.iter().map(String::as_str).collect()
    } else {
        listed
    };
    ips.into_iter()
        .filter(|ip| !ip.is_empty() && *ip != "None")
        .collect()
}

/// Where an object's targets come from.
pub(crate) enum Targets<'a> {
    /// These addresses (from the named field), unless the target annotation names others.
    Overridable(Vec<&'a str>, &'static str),
    /// These addresses, whatever the annotations say.
    Fixed(Vec<&'a str>, &'static str),
}

/// The records an Ingress asks for: every `spec.rules[].host` (and the hostname annotation), pointing at
/// the addresses in its status.
pub fn from_ingress(ingress: &Ingress, filters: &Filters) -> Wanted {
    let meta = &ingress.metadata;
    if !filters.annotations_match(meta.annotations.as_ref()) {
        return Wanted::default();
    }
    if let Some(class) = &filters.ingress_class {
        let own = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
            .or_else(|| {
                meta.annotations
                    .as_ref()
                    .and_then(|a| a.get(INGRESS_CLASS_ANNOTATION).map(String::as_str))
            });
        if own != Some(class.as_str()) {
            return Wanted::default();
        }
    }
    let mut hostnames = match ingress_hostnames(ingress, filters) {
        Ok(hostnames) => hostnames,
        Err(rejection) => {
            return Wanted {
                rejections: vec![rejection],
                ..Wanted::default()
            };
        }
    };
    let templated = filters.templated(meta, !hostnames.is_empty());
    hostnames.extend(
        templated
            .iter()
            .map(|name| (name.as_str(), FQDN_TEMPLATE_FIELD)),
    );
    if hostnames.is_empty() {
        return Wanted::default();
    }
    let status: Vec<&str> = ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ingress| ingress.iter().filter_map(ingress_target).collect())
        .unwrap_or_default();
    collect(
        ObjectId::of("ingress", meta),
        meta,
        hostnames,
        Targets::Overridable(status, "status.loadBalancer.ingress"),
        filters,
    )
}

/// An Ingress's own names, as external-dns reads them: its rules' hosts and its TLS hosts (each unless
/// `--ignore-ingress-rules-spec` / `--ignore-ingress-tls-spec`), and the hostname annotation; the
/// `ingress-hostname-source` annotation keeps only the first two (`defined-hosts-only`) or only the last
/// (`annotation-only`). Any other value of it is refused, naming it.
fn ingress_hostnames<'a>(
    ingress: &'a Ingress,
    filters: &Filters,
) -> Result<Vec<(&'a str, &'static str)>, Rejection> {
    let meta = &ingress.metadata;
    let spec = ingress.spec.as_ref();
    let mut defined: Vec<(&str, &'static str)> = Vec::new();
    if !filters.ignore_ingress_rules_spec {
        let rules = spec.and_then(|s| s.rules.as_deref()).unwrap_or_default();
        defined.extend(
            rules
                .iter()
                .filter_map(|r| r.host.as_deref())
                .map(|h| (h.trim(), "spec.rules[].host")),
        );
    }
    if !filters.ignore_ingress_tls_spec {
        let tls = spec.and_then(|s| s.tls.as_deref()).unwrap_or_default();
        defined.extend(
            tls.iter()
                .flat_map(|t| t.hosts.as_deref().unwrap_or_default())
                .map(|h| (h.trim(), "spec.tls[].hosts")),
        );
    }
    defined.retain(|(h, _)| !h.is_empty());
    let annotated: Vec<(&str, &'static str)> = filters
        .hostname_annotation(meta, &HOSTNAME_ANNOTATIONS)
        .map(|(key, names)| split_list(names).map(|h| (h, key)).collect())
        .unwrap_or_default();
    match annotation(
        meta.annotations.as_ref(),
        &INGRESS_HOSTNAME_SOURCE_ANNOTATIONS,
    ) {
        None => Ok(defined.into_iter().chain(annotated).collect()),
        Some((_, value)) if value.eq_ignore_ascii_case("defined-hosts-only") => Ok(defined),
        Some((_, value)) if value.eq_ignore_ascii_case("annotation-only") => Ok(annotated),
        Some((key, value)) => Err(rejection(
            &ObjectId::of("ingress", meta),
            key,
            RejectionKind::Invalid,
            format!("{value:?}: must be defined-hosts-only or annotation-only"),
        )),
    }
}

fn service_target(ingress: &LoadBalancerIngress) -> Option<&str> {
    ingress.ip.as_deref().or(ingress.hostname.as_deref())
}

fn ingress_target(ingress: &IngressLoadBalancerIngress) -> Option<&str> {
    ingress.ip.as_deref().or(ingress.hostname.as_deref())
}

/// Checks the limits on the raw lists, then validates names, TTL and targets of one object. Names and targets
/// stay two lists: pairing them is left to whoever publishes.
pub(crate) fn collect(
    object: ObjectId,
    meta: &ObjectMeta,
    hostnames: Vec<(&str, &'static str)>,
    targets: Targets<'_>,
    filters: &Filters,
) -> Wanted {
    let annotations = meta.annotations.as_ref();
    let mut wanted = Wanted::default();
    let ttl = match ttl_of(annotations) {
        Ok(ttl) => ttl,
        Err((key, reason)) => {
            let invalid = rejection(&object, key, RejectionKind::Invalid, reason);
            wanted.rejections.push(invalid);
            return wanted;
        }
    };
    let (targets, target_field) = match targets {
        Targets::Overridable(status, field) => distinct_targets(annotations, status, field),
        Targets::Fixed(mut addresses, field) => {
            addresses.sort_unstable();
            addresses.dedup();
            (addresses, field)
        }
    };
    let hostnames = distinct_hostnames(hostnames);
    // Limits first, on the raw entries: nothing of an oversized object is validated, paired or published.
    let name_fields: Vec<&str> = hostnames.iter().map(|(_, field)| *field).collect();
    let counts = (hostnames.len(), targets.len());
    let over = limit_rejections(&object, counts, &name_fields, target_field, &filters.limits);
    if !over.is_empty() {
        wanted.rejections = over;
        wanted.request = Some(Request {
            object,
            created: created(meta),
            ttl,
            names: Vec::new(),
            targets: Vec::new(),
            keep_published: true,
        });
        return wanted;
    }
    if targets.is_empty() {
        wanted.waiting = Some(target_field);
        return wanted;
    }
    let targets = valid_targets(&object, targets, target_field, &mut wanted.rejections);
    if targets.is_empty() {
        let reason = "no address to publish yet".to_owned();
        let none = rejection(&object, target_field, RejectionKind::Invalid, reason);
        wanted.rejections.push(none);
        return wanted;
    }
    let names = valid_names(&object, hostnames, filters, &mut wanted.rejections);
    if !names.is_empty() {
        wanted.request = Some(Request {
            object,
            created: created(meta),
            ttl,
            names,
            targets,
            keep_published: false,
        });
    }
    wanted
}

/// A rejection of `object`'s `field`.
pub(crate) fn rejection(
    object: &ObjectId,
    field: &str,
    kind: RejectionKind,
    reason: String,
) -> Rejection {
    Rejection {
        object: object.clone(),
        field: field.to_owned(),
        reason,
        kind,
    }
}

/// The TTL annotation's value, if any; the annotation and the reason when it is not a usable TTL.
pub(crate) fn ttl_of(
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<Option<u32>, (&'static str, String)> {
    match annotation(annotations, &TTL_ANNOTATIONS) {
        None => Ok(None),
        Some((key, value)) => parse_ttl(value).map(Some).map_err(|reason| (key, reason)),
    }
}

/// The raw target entries, sorted and distinct, and the field they come from: the target annotation when
/// the object has one, else the addresses in its status.
fn distinct_targets<'a>(
    annotations: Option<&'a BTreeMap<String, String>>,
    status: Vec<&'a str>,
    status_field: &'static str,
) -> (Vec<&'a str>, &'static str) {
    let (mut targets, field) = match annotation(annotations, &TARGET_ANNOTATIONS) {
        Some((key, value)) => (split_list(value).collect(), key),
        None => (status, status_field),
    };
    targets.sort_unstable();
    targets.dedup();
    (targets, field)
}

/// The raw host name entries, sorted, one entry per name.
pub(crate) fn distinct_hostnames<'a>(
    mut hostnames: Vec<(&'a str, &'static str)>,
) -> Vec<(&'a str, &'static str)> {
    hostnames.sort_unstable();
    hostnames.dedup_by(|a, b| a.0 == b.0);
    hostnames
}

/// A `Limit` rejection for each per-object limit the counts of distinct raw (names, targets) go over
/// (targets, then names, the names' fields in `name_fields`); none when the object is within its limits.
pub(crate) fn limit_rejections(
    object: &ObjectId,
    (names, targets): (usize, usize),
    name_fields: &[&str],
    target_field: &str,
    limits: &Limits,
) -> Vec<Rejection> {
    let mut over = Vec::new();
    if targets > limits.targets_per_object {
        let reason = format!(
            "{} targets, more than the limit of {} (--max-targets-per-object); nothing new is published for this object",
            targets, limits.targets_per_object
        );
        over.push(rejection(
            object,
            target_field,
            RejectionKind::Limit,
            reason,
        ));
    }
    if names > limits.names_per_object {
        let mut fields = name_fields.to_vec();
        fields.sort_unstable();
        fields.dedup();
        let reason = format!(
            "{} host names, more than the limit of {} (--max-names-per-object); nothing new is published for this object",
            names, limits.names_per_object
        );
        over.push(rejection(
            object,
            &fields.join(", "),
            RejectionKind::Limit,
            reason,
        ));
    }
    over
}

/// The targets that are IP addresses or host names, lower-case, sorted and distinct; each other one is
/// rejected into `rejections`.
pub(crate) fn valid_targets(
    object: &ObjectId,
    targets: Vec<&str>,
    target_field: &str,
    rejections: &mut Vec<Rejection>,
) -> Vec<Target> {
    let mut good_targets = Vec::new();
    for target in targets {
        match validate_target(target) {
            Ok(target) => good_targets.push(Target::Host(target)),
            Err(reason) => rejections.push(rejection(
                object,
                target_field,
                RejectionKind::Invalid,
                format!("{target:?}: {reason}"),
            )),
        }
    }
    good_targets.sort();
    good_targets.dedup();
    good_targets
}

/// The host names that are valid and inside the domain filter, lower-case, sorted and distinct; each other
/// one is rejected into `rejections`.
pub(crate) fn valid_names(
    object: &ObjectId,
    hostnames: Vec<(&str, &'static str)>,
    filters: &Filters,
    rejections: &mut Vec<Rejection>,
) -> Vec<NameRequest> {
    let mut names: Vec<NameRequest> = Vec::new();
    for (hostname, field) in hostnames {
        match validate_hostname(hostname) {
            Err(reason) => rejections.push(rejection(
                object,
                field,
                RejectionKind::Invalid,
                format!("{hostname:?}: {reason}"),
            )),
            Ok(name) if !filters.in_domain(&name) => rejections.push(rejection(
                object,
                field,
                RejectionKind::Invalid,
                if filters.excluded_domains.is_empty() {
                    format!("{name:?} is outside --domain-filter {:?}", filters.domains)
                } else {
                    format!(
                        "{name:?} is outside --domain-filter {:?} or inside --exclude-domains {:?}",
                        filters.domains, filters.excluded_domains
                    )
                },
            )),
            Ok(name) => names.push(NameRequest { name, field }),
        }
    }
    names.sort_by(|a, b| a.name.cmp(&b.name));
    names.dedup_by(|a, b| a.name == b.name);
    names
}

pub(crate) fn created(meta: &ObjectMeta) -> Option<i64> {
    meta.creation_timestamp.as_ref().map(|t| t.0.as_second())
}

pub(crate) fn annotation<'a>(
    annotations: Option<&'a BTreeMap<String, String>>,
    keys: &[&'static str],
) -> Option<(&'static str, &'a str)> {
    let annotations = annotations?;
    keys.iter()
        .find_map(|key| annotations.get(*key).map(|v| (*key, v.as_str())))
}

/// Whether `name` is `domain` or below it, on a label boundary (`a.test.org` is below `test.org`,
/// `atest.org` is not).
pub(crate) fn at_or_below(name: &str, domain: &str) -> bool {
    name.strip_suffix(domain)
        .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
}

pub(crate) fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Seconds as an integer, or a duration (`90s`, `5m`, `1h`) as external-dns accepts.
fn parse_ttl(value: &str) -> Result<u32, String> {
    let value = value.trim();
    let seconds = if value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty() {
        value.parse::<u64>().map_err(|e| e.to_string())?
    } else {
        ops::parse_duration(value)
            .map_err(|_| format!("{value:?} is not a number of seconds or a duration like 5m"))?
            .as_secs()
    };
    u32::try_from(seconds)
        .ok()
        .filter(|s| *s <= i32::MAX as u32)
        .ok_or_else(|| format!("{value:?} is too large for a TTL"))
}

/// RFC 1123 host names, optionally with a leading `*.` wildcard; returns the lower-case name.
pub fn validate_hostname(hostname: &str) -> Result<String, String> {
    let name = hostname.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return Err("is empty".to_owned());
    }
    if name.len() > 253 {
        return Err("is longer than 253 characters".to_owned());
    }
    for (i, label) in name.split('.').enumerate() {
        if label == "*" && i == 0 {
            continue;
        }
        if label.is_empty() || label.len() > 63 {
            return Err(format!("label {label:?} must be 1-63 characters"));
        }
        let valid = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !valid {
            return Err(format!(
                "label {label:?} must be letters, digits and inner hyphens (RFC 1123)"
            ));
        }
    }
    if !name.contains('.') {
        return Err("must have at least two labels".to_owned());
    }
    Ok(name)
}

pub(crate) fn validate_target(target: &str) -> Result<String, String> {
    if target.parse::<IpAddr>().is_ok() {
        return Ok(target.to_owned());
    }
    if target.bytes().all(|b| b.is_ascii_digit() || b == b'.') || target.contains(':') {
        return Err("is not a valid IP address".to_owned());
    }
    let name = validate_hostname(target)?;
    if name.starts_with("*.") {
        return Err("a target cannot be a wildcard".to_owned());
    }
    Ok(name)
}

#[cfg(test)]
#[path = "source_tests.rs"]
mod tests;
