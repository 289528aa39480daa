//! Command-line configuration, validated into [`Settings`] before any connection is made.

use std::path::PathBuf;
use std::time::Duration;

use ops::OpsArgs;
use ops::etcd::{EtcdArgs, EtcdConfigError, EtcdConnection};
use proto::skydns::KeyLayout;

use crate::plan::Policy;
use crate::source::{Filters, validate_hostname};

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

    /// `sync` creates, updates and deletes; `upsert-only` never deletes.
    #[arg(long, env = "POLICY", value_enum, default_value = "sync")]
    pub policy: Policy,

    /// Where names come from (repeatable): `service`, `ingress`. Default: both.
    #[arg(long = "source", value_enum, value_delimiter = ',')]
    pub sources: Vec<SourceKind>,

    /// Only Ingresses of this class (`spec.ingressClassName`, or the legacy annotation).
    #[arg(long, env = "INGRESS_CLASS")]
    pub ingress_class: Option<String>,

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
    /// Services of type LoadBalancer with a hostname annotation.
    Service,
    /// Ingresses (rule hosts).
    Ingress,
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
    /// An annotation filter is not KEY=VALUE.
    #[error("--annotation-filter {0:?}: expected KEY=VALUE")]
    AnnotationFilter(String),
    /// Adopting our own records makes no sense.
    #[error("--adopt-owner must differ from --owner-id")]
    AdoptSelf,
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
    /// Watch Services.
    pub services: bool,
    /// Watch Ingresses.
    pub ingresses: bool,
    /// The rest of the flags, as given.
    pub config: Config,
}

impl Config {
    /// Checks every flag; touches no network.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let valid_owner = |id: &str| {
            !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        if !valid_owner(&self.owner_id) {
            return Err(ConfigError::OwnerId(self.owner_id.clone()));
        }
        if let Some(adopt) = &self.adopt_owner {
            if adopt == &self.owner_id {
                return Err(ConfigError::AdoptSelf);
            }
            if !adopt.is_empty() && !valid_owner(adopt) {
                return Err(ConfigError::OwnerId(adopt.clone()));
            }
        }
        let domains = self
            .domain_filters
            .iter()
            .map(|d| {
                validate_hostname(d).map_err(|reason| ConfigError::DomainFilter {
                    value: d.clone(),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let annotations = self
            .annotation_filters
            .iter()
            .map(|f| {
                f.split_once('=')
                    .filter(|(k, _)| !k.is_empty())
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .ok_or_else(|| ConfigError::AnnotationFilter(f.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let both = self.sources.is_empty();
        Ok(Settings {
            etcd: self.etcd.connection()?,
            layout: KeyLayout::new(&self.etcd.etcd_prefix)?,
            owner: self.owner_id.clone(),
            adopt: self.adopt_owner.clone(),
            policy: self.policy,
            filters: Filters {
                domains,
                ingress_class: self.ingress_class.clone(),
                annotations,
            },
            services: both || self.sources.contains(&SourceKind::Service),
            ingresses: both || self.sources.contains(&SourceKind::Ingress),
            config: self.clone(),
        })
    }
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
    }
}
