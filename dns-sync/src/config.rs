//! Command-line configuration, validated into [`Settings`] before any connection is made.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use ops::OpsArgs;
use ops::etcd::{EtcdArgs, EtcdConfigError, EtcdConnection};
use proto::skydns::KeyLayout;

use crate::gateway::GatewaySettings;
use crate::gateway::api::RouteKind;
use crate::plan::Policy;
use crate::publish::{NamePattern, PublishRules};
use crate::service_types::{ServiceOptions, ServiceType};
use crate::source::{Filters, Limits, validate_hostname};

/// `dns-sync`: keeps DNS records for Services and Ingresses in etcd, in the skydns format that CoreDNS and
/// external-dns use, changing only the records it owns.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "dns-sync", version, about, long_about = None)]
pub struct Config {
    /// How to reach etcd.
    #[command(flatten)]
    pub etcd: EtcdArgs,

    /// Our owner id, written into every record; only records carrying it are ever changed or deleted.
    /// Give each dns-sync (and each external-dns) writing one etcd a different id.
    #[arg(long, env = "OWNER_ID")]
    pub owner_id: String,

    /// Only names ending in this domain (label boundary) are written (repeatable; none means any).
    #[arg(long = "domain-filter", env = "DOMAIN_FILTER", value_delimiter = ',')]
    pub domain_filters: Vec<String>,

    /// Names ending in this domain (label boundary) are not written, even inside --domain-filter
    /// (repeatable; external-dns's `--exclude-domains`).
    #[arg(
        long = "exclude-domains",
        env = "EXCLUDE_DOMAINS",
        value_delimiter = ','
    )]
    pub exclude_domains: Vec<String>,

    /// A zone served from this etcd (repeatable; default: each --domain-filter, taken as a zone apex). Nobody
    /// may publish a zone's apex, `*.<zone>` or anything at or under `dns.<zone>` (dns-server's NS, glue and
    /// apex keys). Without --domain-filter, the zones are the domain filter too.
    #[arg(long = "zone", env = "ZONE", value_delimiter = ',')]
    pub zones: Vec<String>,

    /// A name nobody may publish, or `*.domain` for every name below it (repeatable), e.g. the name servers
    /// given to dns-server with --ns.
    #[arg(long = "reserved-name", env = "RESERVED_NAME", value_delimiter = ',')]
    pub reserved_names: Vec<String>,

    /// NAMESPACE=NAME or NAMESPACE=*.DOMAIN (repeatable): the names a namespace may publish. A namespace with
    /// entries publishes only inside them, and a name inside them is for the listed namespaces only; other
    /// names go to the first namespace that claims them.
    #[arg(
        long = "namespace-domains",
        env = "NAMESPACE_DOMAINS",
        value_delimiter = ','
    )]
    pub namespace_domains: Vec<String>,

    /// Namespaces without a --namespace-domains entry publish nothing.
    #[arg(long, env = "REQUIRE_NAMESPACE_DOMAINS")]
    pub require_namespace_domains: bool,

    /// Host names one object may ask for; an object with more publishes nothing new.
    #[arg(long, env = "MAX_NAMES_PER_OBJECT", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_names_per_object: u32,

    /// Targets one object may point its names at; an object with more publishes nothing new.
    #[arg(long, env = "MAX_TARGETS_PER_OBJECT", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_targets_per_object: u32,

    /// Distinct targets one name may have (the union over the objects of its namespace).
    #[arg(long, env = "MAX_TARGETS_PER_NAME", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_targets_per_name: u32,

    /// Also publish ClusterIP Services' hostname annotations, at their cluster IPs (external-dns's flag). The
    /// internal-hostname annotation is published at the cluster IPs for every Service type, with or without it.
    #[arg(long, env = "PUBLISH_INTERNAL_SERVICES")]
    pub publish_internal_services: bool,

    /// Only Services of these types (repeatable): ClusterIP, NodePort, LoadBalancer, ExternalName
    /// (external-dns's flag). Default: LoadBalancer, ExternalName and, with --publish-internal-services,
    /// ClusterIP Services with a cluster IP. NodePort and headless (ClusterIP) Services are published only when
    /// named here, since they need watches on Nodes and EndpointSlices (and the rights to them).
    #[arg(
        long = "service-type-filter",
        env = "SERVICE_TYPE_FILTER",
        value_enum,
        value_delimiter = ','
    )]
    pub service_type_filter: Vec<ServiceType>,

    /// Publish headless Services at their Pods' host IPs (the node's) instead of the Pod IPs.
    #[arg(long, env = "PUBLISH_HOST_IP")]
    pub publish_host_ip: bool,

    /// Publish headless Services at their not-ready Pods too, as if every Service set
    /// `publishNotReadyAddresses`.
    #[arg(long, env = "ALWAYS_PUBLISH_NOT_READY_ADDRESSES")]
    pub always_publish_not_ready_addresses: bool,

    /// Publish NodePort Services (and, with `--source node`, Nodes) at the nodes' internal IPv6 addresses
    /// too, beside their external addresses.
    #[arg(long, env = "EXPOSE_INTERNAL_IPV6")]
    pub expose_internal_ipv6: bool,

    /// With `--source node`, leave out Nodes marked unschedulable (cordoned); `=false` publishes them too.
    /// On by default, as in external-dns.
    #[arg(
        long,
        env = "EXCLUDE_UNSCHEDULABLE",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub exclude_unschedulable: bool,

    /// Also publish a PTR record for every A/AAAA record, at the address's reverse name, when that name is in
    /// a zone served from this etcd (`--zone 10.in-addr.arpa`, `--zone 8.b.d.0.1.0.0.2.ip6.arpa`).
    #[arg(long, env = "CREATE_PTR")]
    pub create_ptr: bool,

    /// `sync` creates, updates and deletes; `upsert-only` never deletes; `create-only` never rewrites nor
    /// deletes a record once written (external-dns's policies).
    #[arg(long, env = "POLICY", value_enum, default_value = "sync")]
    pub policy: Policy,

    /// Where names come from (repeatable): `service`, `ingress`, `crd` (external-dns's `DNSEndpoint`), `node`
    /// (each Node at its addresses), and the Gateway API routes `gateway-httproute`, `gateway-grpcroute`,
    /// `gateway-tlsroute`, `gateway-tcproute`, `gateway-udproute` (external-dns's names; their CRDs must be
    /// served, or dns-sync stops at start).
    /// Default: `service` and `ingress`.
    #[arg(long = "source", value_enum, value_delimiter = ',')]
    pub sources: Vec<SourceKind>,

    /// Gateway API routes are published only through Gateways of this name (external-dns's flag).
    #[arg(long, env = "GATEWAY_NAME")]
    pub gateway_name: Option<String>,

    /// Only Gateways in this namespace (external-dns's flag; `--namespace` selects the routes). Default:
    /// every namespace.
    #[arg(long, env = "GATEWAY_NAMESPACE")]
    pub gateway_namespace: Option<String>,

    /// Only Gateways whose labels match this selector, in kubectl's `-l` syntax (external-dns's flag;
    /// `--label-filter` selects the routes).
    #[arg(long, env = "GATEWAY_LABEL_FILTER")]
    pub gateway_label_filter: Option<String>,

    /// Only Ingresses of this class (`spec.ingressClassName`, or the legacy annotation).
    #[arg(long, env = "INGRESS_CLASS")]
    pub ingress_class: Option<String>,

    /// Only objects in this namespace (external-dns's `--namespace`). Default: every namespace.
    #[arg(long)]
    pub namespace: Option<String>,

    /// Only objects whose labels match this selector, in kubectl's `-l` syntax (`app=web,env in
    /// (prod,staging),!legacy`), as external-dns's `--label-filter`. The apiserver applies it to the watches.
    #[arg(long, env = "LABEL_FILTER")]
    pub label_filter: Option<String>,

    /// Names for objects without a hostname annotation (Services) or host rules (Ingresses), as
    /// external-dns's `--fqdn-template`: comma-separated, with `{{.Name}}`, `{{.Namespace}}` and
    /// `{{.Labels.KEY}}` (`{{.Name}}.{{.Namespace}}.example.org`).
    #[arg(long, env = "FQDN_TEMPLATE")]
    pub fqdn_template: Option<String>,

    /// With `--fqdn-template`, publish the templates' names for every object, beside its own.
    #[arg(long, env = "COMBINE_FQDN_ANNOTATION")]
    pub combine_fqdn_annotation: bool,

    /// Do not read the hostname and internal-hostname annotations (external-dns's flag): names come from
    /// Ingress hosts, route hostnames and `--fqdn-template` only.
    #[arg(long, env = "IGNORE_HOSTNAME_ANNOTATION")]
    pub ignore_hostname_annotation: bool,

    /// Do not publish Ingresses' `spec.tls[].hosts` (external-dns's flag; by default they are names, as
    /// the rules' hosts are).
    #[arg(long, env = "IGNORE_INGRESS_TLS_SPEC")]
    pub ignore_ingress_tls_spec: bool,

    /// Do not publish Ingresses' `spec.rules[].host` (external-dns's flag).
    #[arg(long, env = "IGNORE_INGRESS_RULES_SPEC")]
    pub ignore_ingress_rules_spec: bool,

    /// Only objects carrying this annotation value, as KEY=VALUE (repeatable).
    #[arg(long = "annotation-filter", value_delimiter = ',')]
    pub annotation_filters: Vec<String>,

    /// Take over records of this owner id (e.g. external-dns's `--txt-owner-id`) when they hold a name and
    /// target we want, rewriting them in place: a migration with no delete and re-create. Empty
    /// (`--adopt-owner=`) adopts records that carry no owner, as external-dns up to v0.20 writes them.
    #[arg(long, env = "ADOPT_OWNER")]
    pub adopt_owner: Option<String>,

    /// Kubeconfig to use; without it, in-cluster configuration or the usual kubeconfig inference.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Run one pass and exit.
    #[arg(long)]
    pub once: bool,

    /// Log the changes that would be made, write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Full reconcile interval, repairing drift such as a record deleted by hand.
    #[arg(long, env = "INTERVAL", default_value = "60s", value_parser = ops::parse_period)]
    pub interval: Duration,

    /// How long changes are gathered before they are written in one transaction.
    #[arg(long, default_value = "5ms", value_parser = ops::parse_duration)]
    pub debounce: Duration,

    /// Elect one active replica through a Lease; the others stand by.
    #[arg(long, env = "LEADER_ELECT")]
    pub leader_elect: bool,

    /// Name of the Lease used for leader election.
    #[arg(long, env = "LEASE_NAME", default_value = "dns-sync")]
    pub lease_name: String,

    /// Namespace of the Lease (defaults to the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// This replica's identity in the Lease and in Events.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// Logging, ops endpoint (`--metrics-listen`) and drain settings.
    #[command(flatten)]
    pub ops: OpsArgs,
}

/// The kinds of object names come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    /// Services with a hostname annotation (LoadBalancer and ExternalName; see --service-type-filter).
    Service,
    /// Ingresses (rule hosts).
    Ingress,
    /// `DNSEndpoint` objects (`externaldns.k8s.io/v1alpha1`), external-dns's `crd` source.
    Crd,
    /// Gateway API `HTTPRoute`s.
    GatewayHttproute,
    /// Gateway API `GRPCRoute`s.
    GatewayGrpcroute,
    /// Gateway API `TLSRoute`s (experimental channel).
    GatewayTlsroute,
    /// Gateway API `TCPRoute`s (experimental channel).
    GatewayTcproute,
    /// Gateway API `UDPRoute`s (experimental channel).
    GatewayUdproute,
    /// Nodes, each at its own addresses (external-dns's `node` source).
    Node,
}

impl SourceKind {
    /// The Gateway API route kind this source reads, if it is one.
    pub fn route(self) -> Option<RouteKind> {
        match self {
            Self::Service | Self::Ingress | Self::Crd | Self::Node => None,
            Self::GatewayHttproute => Some(RouteKind::Http),
            Self::GatewayGrpcroute => Some(RouteKind::Grpc),
            Self::GatewayTlsroute => Some(RouteKind::Tls),
            Self::GatewayTcproute => Some(RouteKind::Tcp),
            Self::GatewayUdproute => Some(RouteKind::Udp),
        }
    }
}

/// A flag value that cannot be used; names the flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// etcd flags.
    #[error(transparent)]
    Etcd(#[from] EtcdConfigError),
    /// The prefix is not an absolute etcd path.
    #[error("--etcd-prefix: {0}")]
    Prefix(#[from] proto::skydns::KeyError),
    /// The owner id is empty or has characters that do not belong in a JSON string we compare.
    #[error("--owner-id {0:?}: must be non-empty letters, digits, '-', '_' or '.'")]
    OwnerId(String),
    /// A domain filter is not a DNS name.
    #[error("--domain-filter {value:?}: {reason}")]
    DomainFilter {
        /// As given.
        value: String,
        /// Why.
        reason: String,
    },
    /// An excluded domain is not a DNS name.
    #[error("--exclude-domains {value:?}: {reason}")]
    ExcludeDomains {
        /// As given.
        value: String,
        /// Why.
        reason: String,
    },
    /// An annotation filter is not KEY=VALUE.
    #[error("--annotation-filter {0:?}: expected KEY=VALUE")]
    AnnotationFilter(String),
    /// A zone is not a DNS name.
    #[error("--zone {value:?}: {reason}")]
    Zone {
        /// As given.
        value: String,
        /// Why.
        reason: String,
    },
    /// A reserved name is not a DNS name or `*.domain`.
    #[error("--reserved-name {value:?}: {reason}")]
    ReservedName {
        /// As given.
        value: String,
        /// Why.
        reason: String,
    },
    /// A namespace allow-list entry is not NAMESPACE=NAME or NAMESPACE=*.DOMAIN.
    #[error("--namespace-domains {value:?}: {reason}")]
    NamespaceDomains {
        /// As given.
        value: String,
        /// Why.
        reason: String,
    },
    /// Adopting our own records makes no sense.
    #[error("--adopt-owner must differ from --owner-id")]
    AdoptSelf,
    /// A template cannot be rendered as external-dns would.
    #[error("--fqdn-template {value:?}: {reason}")]
    FqdnTemplate {
        /// As given.
        value: String,
        /// Why.
        reason: String,
    },
    /// The namespace is not a namespace name.
    #[error(
        "--namespace {0:?}: a namespace is a DNS label (lower-case letters, digits, '-'; up to 63)"
    )]
    Namespace(String),
    /// `--gateway-namespace` is not a namespace name.
    #[error(
        "--gateway-namespace {0:?}: a namespace is a DNS label (lower-case letters, digits, '-'; up to 63)"
    )]
    GatewayNamespace(String),
    /// `--gateway-label-filter` does not parse.
    #[error("--gateway-label-filter {value:?}: {reason}")]
    GatewayLabelFilter {
        /// As given.
        value: String,
        /// Why.
        reason: String,
    },
    /// The label selector does not parse.
    #[error("--label-filter {value:?}: {reason}")]
    LabelFilter {
        /// As given.
        value: String,
        /// Why.
        reason: String,
    },
}

/// Which objects dns-sync watches: one namespace or all, and a label selector the apiserver applies.
#[derive(Debug, Clone, Default)]
pub struct WatchScope {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only objects whose labels match.
    pub labels: Option<kube::core::Selector>,
}

impl WatchScope {
    /// The API of `K` over the scope's namespaces.
    pub fn api<K>(&self, client: kube::Client) -> kube::Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match &self.namespace {
            Some(namespace) => kube::Api::namespaced(client, namespace),
            None => kube::Api::all(client),
        }
    }

    /// The watch configuration with the label selector.
    pub fn watch_config(&self) -> kube::runtime::watcher::Config {
        let config = kube::runtime::watcher::Config::default();
        match &self.labels {
            Some(labels) => config.labels_from(labels),
            None => config,
        }
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// etcd connection.
    pub etcd: EtcdConnection,
    /// Key layout.
    pub layout: KeyLayout,
    /// Our owner id.
    pub owner: String,
    /// Owner id to adopt from.
    pub adopt: Option<String>,
    /// Policy.
    pub policy: Policy,
    /// Object and name filters.
    pub filters: Filters,
    /// Reserved names, namespaces and per-name limits.
    pub publish: PublishRules,
    /// Watch Services.
    pub services: bool,
    /// Watch Ingresses.
    pub ingresses: bool,
    /// Watch `DNSEndpoint`s.
    pub dns_endpoints: bool,
    /// Watch Nodes as a source (`--source node`).
    pub nodes: bool,
    /// Which objects the watches see.
    pub scope: WatchScope,
    /// The Gateway API sources.
    pub gateway: GatewaySettings,
    /// The rest of the flags, as given.
    pub config: Config,
}

impl Config {
    /// Checks every flag; touches no network.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        check_owners(&self.owner_id, self.adopt_owner.as_deref())?;
        let (domains, zones) = self.domains_and_zones()?;
        let reserved = host_names(&self.reserved_names, |value, reason| {
            ConfigError::ReservedName { value, reason }
        })?
        .iter()
        .map(|name| NamePattern::new(name))
        .collect();
        let namespace_domains = parse_namespace_domains(&self.namespace_domains)?;
        let annotations = parse_annotation_filters(&self.annotation_filters)?;
        let both = self.sources.is_empty();
        Ok(Settings {
            etcd: self.etcd.connection()?,
            layout: KeyLayout::new(&self.etcd.etcd_prefix)?,
            owner: self.owner_id.clone(),
            adopt: self.adopt_owner.clone(),
            policy: self.policy,
            filters: Filters {
                domains,
                excluded_domains: host_names(&self.exclude_domains, |value, reason| {
                    ConfigError::ExcludeDomains { value, reason }
                })?,
                ingress_class: self.ingress_class.clone(),
                annotations,
                fqdn_templates: self.fqdn_templates()?,
                combine_fqdn_annotation: self.combine_fqdn_annotation,
                publish_internal: self.publish_internal_services,
                services: ServiceOptions {
                    types: self.service_type_filter.clone(),
                    publish_host_ip: self.publish_host_ip,
                    always_publish_not_ready: self.always_publish_not_ready_addresses,
                    expose_internal_ipv6: self.expose_internal_ipv6,
                },
                exclude_unschedulable: self.exclude_unschedulable,
                ignore_hostname_annotation: self.ignore_hostname_annotation,
                ignore_ingress_tls_spec: self.ignore_ingress_tls_spec,
                ignore_ingress_rules_spec: self.ignore_ingress_rules_spec,
                limits: Limits {
                    names_per_object: self.max_names_per_object as usize,
                    targets_per_object: self.max_targets_per_object as usize,
                },
            },
            publish: PublishRules {
                zones,
                reserved,
                namespace_domains,
                require_namespace_domains: self.require_namespace_domains,
                max_targets_per_name: self.max_targets_per_name as usize,
            },
            services: both || self.sources.contains(&SourceKind::Service),
            ingresses: both || self.sources.contains(&SourceKind::Ingress),
            dns_endpoints: self.sources.contains(&SourceKind::Crd),
            nodes: self.sources.contains(&SourceKind::Node),
            scope: self.watch_scope()?,
            gateway: self.gateway_settings()?,
            config: self.clone(),
        })
    }

    fn fqdn_templates(&self) -> Result<Vec<crate::fqdn_template::FqdnTemplate>, ConfigError> {
        let Some(text) = &self.fqdn_template else {
            return Ok(Vec::new());
        };
        crate::fqdn_template::parse(text).map_err(|reason| ConfigError::FqdnTemplate {
            value: text.clone(),
            reason,
        })
    }

    /// The route kinds asked for and `--gateway-*`, checked.
    fn gateway_settings(&self) -> Result<GatewaySettings, ConfigError> {
        let mut routes: Vec<RouteKind> = self.sources.iter().filter_map(|s| s.route()).collect();
        routes.sort();
        routes.dedup();
        Ok(GatewaySettings {
            routes,
            name: self.gateway_name.clone(),
            scope: scope_of(
                self.gateway_namespace.as_ref(),
                self.gateway_label_filter.as_ref(),
                ConfigError::GatewayNamespace,
                |value, reason| ConfigError::GatewayLabelFilter { value, reason },
            )?,
        })
    }

    /// `--namespace` and `--label-filter`, checked.
    fn watch_scope(&self) -> Result<WatchScope, ConfigError> {
        scope_of(
            self.namespace.as_ref(),
            self.label_filter.as_ref(),
            ConfigError::Namespace,
            |value, reason| ConfigError::LabelFilter { value, reason },
        )
    }

    /// The domain filters and the zones, each defaulting to the other: the zones are what we may write
    /// into, the filter what we read.
    fn domains_and_zones(&self) -> Result<(Vec<String>, Vec<String>), ConfigError> {
        let mut domains = host_names(&self.domain_filters, |value, reason| {
            ConfigError::DomainFilter { value, reason }
        })?;
        let mut zones = host_names(&self.zones, |value, reason| ConfigError::Zone {
            value,
            reason,
        })?;
        if let Some(zone) = zones.iter().find(|z| z.starts_with("*.")) {
            return Err(ConfigError::Zone {
                value: zone.clone(),
                reason: "a zone cannot be a wildcard".to_owned(),
            });
        }
        if zones.is_empty() {
            zones.clone_from(&domains);
        } else if domains.is_empty() {
            domains.clone_from(&zones);
        }
        Ok((domains, zones))
    }
}

/// A namespace and a label selector (kubectl's `-l` syntax), checked, as a [`WatchScope`]; the errors name
/// the flags they came from.
fn scope_of(
    namespace: Option<&String>,
    labels: Option<&String>,
    namespace_error: fn(String) -> ConfigError,
    labels_error: fn(String, String) -> ConfigError,
) -> Result<WatchScope, ConfigError> {
    if let Some(namespace) = namespace.filter(|n| !is_namespace(n)) {
        return Err(namespace_error(namespace.clone()));
    }
    let labels = labels
        .map(|text| {
            crate::label_filter::parse(text).map_err(|reason| labels_error(text.clone(), reason))
        })
        .transpose()?;
    Ok(WatchScope {
        namespace: namespace.cloned(),
        labels,
    })
}

/// Checks our owner id and the one to adopt from (which may be empty: records without an owner).
fn check_owners(owner_id: &str, adopt_owner: Option<&str>) -> Result<(), ConfigError> {
    if !is_owner_id(owner_id) {
        return Err(ConfigError::OwnerId(owner_id.to_owned()));
    }
    if let Some(adopt) = adopt_owner {
        if adopt == owner_id {
            return Err(ConfigError::AdoptSelf);
        }
        if !adopt.is_empty() && !is_owner_id(adopt) {
            return Err(ConfigError::OwnerId(adopt.to_owned()));
        }
    }
    Ok(())
}

/// An owner id: non-empty letters, digits, '-', '_' or '.' (nothing to escape in the JSON we compare).
fn is_owner_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `values` as validated lower-case host names; the first bad one as the flag's `error`.
fn host_names(
    values: &[String],
    error: fn(String, String) -> ConfigError,
) -> Result<Vec<String>, ConfigError> {
    values
        .iter()
        .map(|value| validate_hostname(value).map_err(|reason| error(value.clone(), reason)))
        .collect()
}

/// `--namespace-domains` entries (NAMESPACE=NAME or NAMESPACE=*.DOMAIN) as each namespace's allow-list.
fn parse_namespace_domains(
    entries: &[String],
) -> Result<BTreeMap<String, Vec<NamePattern>>, ConfigError> {
    let mut namespace_domains: BTreeMap<String, Vec<NamePattern>> = BTreeMap::new();
    for entry in entries {
        let error = |reason: &str| ConfigError::NamespaceDomains {
            value: entry.clone(),
            reason: reason.to_owned(),
        };
        let (namespace, pattern) = entry
            .split_once('=')
            .ok_or_else(|| error("expected NAMESPACE=NAME or NAMESPACE=*.DOMAIN"))?;
        let namespace = namespace.trim();
        if !is_namespace(namespace) {
            return Err(error("the namespace must be a DNS label (RFC 1123)"));
        }
        let pattern = validate_hostname(pattern).map_err(|reason| error(&reason))?;
        namespace_domains
            .entry(namespace.to_owned())
            .or_default()
            .push(NamePattern::new(&pattern));
    }
    Ok(namespace_domains)
}

/// `--annotation-filter` entries (KEY=VALUE, the key not empty) as trimmed pairs.
fn parse_annotation_filters(filters: &[String]) -> Result<Vec<(String, String)>, ConfigError> {
    filters
        .iter()
        .map(|f| {
            f.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| ConfigError::AnnotationFilter(f.clone()))
        })
        .collect()
}

/// A Kubernetes namespace name: one RFC 1123 label.
fn is_namespace(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let mut all = vec!["dns-sync", "--etcd-endpoints", "http://127.0.0.1:2379"];
        all.extend_from_slice(args);
        Config::try_parse_from(all)
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_watch_both_sources_with_the_sync_policy() {
        let settings = parse(&["--owner-id", "gw", "--domain-filter", "Test.org"]).unwrap();
        assert!(settings.services && settings.ingresses);
        assert_eq!(settings.policy, Policy::Sync);
        assert_eq!(settings.filters.domains, ["test.org"]);
        let only = parse(&["--owner-id", "gw", "--source", "ingress"]).unwrap();
        assert!(!only.services && only.ingresses);
        assert!(only.gateway.routes.is_empty());
    }

    #[test]
    fn the_node_source_leaves_cordoned_nodes_out_unless_told_like_external_dns() {
        let nodes = parse(&["--owner-id", "gw", "--source", "node"]).unwrap();
        assert!(nodes.nodes && !nodes.services && !nodes.ingresses);
        assert!(nodes.filters.exclude_unschedulable);
        for (flag, expected) in [
            ("--exclude-unschedulable", true),
            ("--exclude-unschedulable=true", true),
            ("--exclude-unschedulable=false", false),
        ] {
            let settings = parse(&["--owner-id", "gw", "--source", "node", flag]).unwrap();
            assert_eq!(settings.filters.exclude_unschedulable, expected, "{flag}");
        }
        let bad = parse(&["--owner-id", "gw", "--exclude-unschedulable=maybe"]).unwrap_err();
        assert!(bad.contains("--exclude-unschedulable"), "{bad}");
    }

    #[test]
    fn gateway_sources_take_external_dns_names_and_leave_services_and_ingresses_out() {
        let settings = parse(&[
            "--owner-id",
            "gw",
            "--source",
            "gateway-udproute,gateway-httproute",
            "--source",
            "gateway-httproute",
            "--gateway-namespace",
            "infra",
            "--gateway-label-filter",
            "dns=public",
            "--gateway-name",
            "edge",
        ])
        .unwrap();
        assert!(!settings.services && !settings.ingresses);
        assert_eq!(settings.gateway.routes, [RouteKind::Http, RouteKind::Udp]);
        assert_eq!(settings.gateway.name.as_deref(), Some("edge"));
        assert_eq!(settings.gateway.scope.namespace.as_deref(), Some("infra"));
        assert!(settings.gateway.scope.labels.is_some());
        for (args, flag) in [
            (&["--gateway-namespace", "Infra"][..], "--gateway-namespace"),
            (
                &["--gateway-label-filter", "a in (b"][..],
                "--gateway-label-filter",
            ),
            (&["--source", "gateway-route"][..], "--source"),
        ] {
            let mut all = vec!["--owner-id", "gw"];
            all.extend_from_slice(args);
            let err = parse(&all).unwrap_err();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (args, flag) in [
            (&["--owner-id", ""][..], "--owner-id"),
            (&["--owner-id", "a b"][..], "--owner-id"),
            (
                &["--owner-id", "gw", "--adopt-owner", "gw"][..],
                "--adopt-owner",
            ),
            (
                &["--owner-id", "gw", "--domain-filter", "bad_label.org"][..],
                "--domain-filter",
            ),
            (
                &["--owner-id", "gw", "--annotation-filter", "novalue"][..],
                "--annotation-filter",
            ),
            (&["--owner-id", "gw", "--policy", "yolo"][..], "--policy"),
            (
                &["--owner-id", "gw", "--interval", "soon"][..],
                "--interval",
            ),
            // A zero period made the reconcile timer panic at start.
            (&["--owner-id", "gw", "--interval", "0s"][..], "--interval"),
            (
                &["--owner-id", "gw", "--etcd-prefix", "x"][..],
                "--etcd-prefix",
            ),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
        assert!(parse(&[]).unwrap_err().contains("--owner-id"));
        for (args, flag) in [
            (&["--zone", "*.test.org"][..], "--zone"),
            (&["--zone", "bad_zone.org"][..], "--zone"),
            (&["--reserved-name", "a..b"][..], "--reserved-name"),
            (
                &["--namespace-domains", "shop.test.org"][..],
                "--namespace-domains",
            ),
            (
                &["--namespace-domains", "Team_A=shop.test.org"][..],
                "--namespace-domains",
            ),
            (
                &["--namespace-domains", "a=x.*.test.org"][..],
                "--namespace-domains",
            ),
            (
                &["--max-names-per-object", "0"][..],
                "--max-names-per-object",
            ),
            (
                &["--max-targets-per-name", "many"][..],
                "--max-targets-per-name",
            ),
        ] {
            let mut all = vec!["--owner-id", "gw"];
            all.extend_from_slice(args);
            let err = parse(&all).unwrap_err();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn service_types_are_spelled_as_kubernetes_and_external_dns_spell_them() {
        let default = parse(&["--owner-id", "gw"]).unwrap();
        assert!(default.filters.services.types.is_empty());
        assert!(!default.filters.services.needs_endpoints());
        let settings = parse(&[
            "--owner-id",
            "gw",
            "--service-type-filter",
            "NodePort,LoadBalancer",
            "--service-type-filter",
            "ExternalName",
            "--publish-host-ip",
            "--always-publish-not-ready-addresses",
            "--expose-internal-ipv6",
        ])
        .unwrap();
        let services = &settings.filters.services;
        assert_eq!(
            services.types,
            [
                ServiceType::NodePort,
                ServiceType::LoadBalancer,
                ServiceType::ExternalName
            ]
        );
        assert!(services.needs_endpoints() && !services.headless());
        assert!(
            services.publish_host_ip
                && services.always_publish_not_ready
                && services.expose_internal_ipv6
        );
        let err = parse(&["--owner-id", "gw", "--service-type-filter", "Headless"]).unwrap_err();
        assert!(err.contains("--service-type-filter"), "{err}");
    }

    #[test]
    fn excluded_domains_are_checked_and_named() {
        let settings = parse(&[
            "--owner-id",
            "gw",
            "--domain-filter",
            "test.org",
            "--exclude-domains",
            "Internal.test.org,lab.test.org",
        ])
        .unwrap();
        assert_eq!(
            settings.filters.excluded_domains,
            ["internal.test.org", "lab.test.org"]
        );
        let bad = parse(&["--owner-id", "gw", "--exclude-domains", "a..b"]).unwrap_err();
        assert!(bad.starts_with("--exclude-domains \"a..b\""), "{bad}");
    }

    #[test]
    fn zones_default_to_the_domain_filters_and_the_other_way_round() {
        let settings = parse(&["--owner-id", "gw", "--domain-filter", "test.org"]).unwrap();
        assert_eq!(settings.publish.zones, ["test.org"]);
        let settings = parse(&["--owner-id", "gw", "--zone", "Test.org,lab.example"]).unwrap();
        assert_eq!(settings.filters.domains, ["test.org", "lab.example"]);
        let settings = parse(&[
            "--owner-id",
            "gw",
            "--zone",
            "test.org",
            "--domain-filter",
            "apps.test.org",
        ])
        .unwrap();
        assert_eq!(settings.publish.zones, ["test.org"]);
        assert_eq!(settings.filters.domains, ["apps.test.org"]);
        assert!(
            parse(&["--owner-id", "gw"])
                .unwrap()
                .publish
                .zones
                .is_empty()
        );
    }

    #[test]
    fn namespace_domains_and_limits_are_read_into_the_rules() {
        let settings = parse(&[
            "--owner-id",
            "gw",
            "--namespace-domains",
            "team-a=shop.test.org,team-a=*.apps.test.org",
            "--namespace-domains",
            "b=b.test.org",
            "--reserved-name",
            "ns1.test.org",
            "--max-targets-per-object",
            "8",
        ])
        .unwrap();
        assert_eq!(
            settings.publish.namespace_domains["team-a"],
            [
                NamePattern::Exact("shop.test.org".to_owned()),
                NamePattern::Below("apps.test.org".to_owned())
            ]
        );
        assert_eq!(
            settings.publish.namespace_domains["b"],
            [NamePattern::Exact("b.test.org".to_owned())]
        );
        assert_eq!(
            settings.publish.reserved,
            [NamePattern::Exact("ns1.test.org".to_owned())]
        );
        assert_eq!(settings.filters.limits.targets_per_object, 8);
        assert_eq!(settings.filters.limits.names_per_object, 100);
        assert_eq!(settings.publish.max_targets_per_name, 1000);
        assert!(!settings.publish.require_namespace_domains);
    }

    #[test]
    fn the_owner_to_adopt_may_be_empty_but_neither_ours_nor_malformed() {
        assert!(check_owners("gw", None).is_ok());
        assert!(
            check_owners("gw", Some("")).is_ok(),
            "records without an owner"
        );
        assert!(check_owners("gw", Some("external-dns.v1_x")).is_ok());
        assert!(matches!(
            check_owners("gw", Some("gw")),
            Err(ConfigError::AdoptSelf)
        ));
        assert!(matches!(
            check_owners("gw", Some("a b")),
            Err(ConfigError::OwnerId(id)) if id == "a b"
        ));
        assert!(matches!(
            check_owners("", Some("")),
            Err(ConfigError::OwnerId(id)) if id.is_empty()
        ));
    }

    #[test]
    fn annotation_filters_are_trimmed_pairs_with_a_key() {
        let filters = |values: &[&str]| {
            let values: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
            parse_annotation_filters(&values)
        };
        assert_eq!(
            filters(&["team = shop ", "empty="]).unwrap(),
            [
                ("team".to_owned(), "shop".to_owned()),
                ("empty".to_owned(), String::new())
            ]
        );
        assert!(matches!(
            filters(&["=value"]),
            Err(ConfigError::AnnotationFilter(f)) if f == "=value"
        ));
    }
}
