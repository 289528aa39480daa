//! `dns-sync`'s command line.

use std::path::Path;
use std::time::Duration;

use super::{
    Election, Elects, EtcdAccess, Flags, Launcher, path_value, push_duration, push_each, push_opt,
    push_switch,
};
use crate::certs::TlsFiles;
use crate::etcd::Etcd;

/// The `dns-sync` launcher: `DnsSync::new(binary, owner_id, kubeconfig, etcd)`.
pub type DnsSync = Launcher<DnsSyncFlags>;

/// dns-sync's own flags (see [`DnsSync`]).
#[derive(Debug, Clone)]
pub struct DnsSyncFlags {
    owner_id: String,
    domain_filters: Vec<String>,
    zones: Vec<String>,
    sources: Vec<String>,
    create_ptr: bool,
    publish_internal_services: bool,
    service_types: Vec<String>,
    kubeconfig: String,
    etcd: EtcdAccess,
    annotation_filters: Vec<String>,
    namespace: Option<String>,
    label_filter: Option<String>,
    fqdn_template: Option<String>,
    adopt_owner: Option<String>,
    namespace_domains: Vec<String>,
    election: Election,
    interval: Option<Duration>,
    once: bool,
    dry_run: bool,
}

impl Launcher<DnsSyncFlags> {
    /// `binary` as owner `owner_id` (`--owner-id`), reading the API server of `kubeconfig` and writing
    /// `etcd` (its `--etcd-*` flags, with its client files when it serves TLS).
    pub fn new(
        binary: impl AsRef<Path>,
        owner_id: &str,
        kubeconfig: impl AsRef<Path>,
        etcd: &Etcd,
    ) -> Self {
        Self::with(
            binary,
            DnsSyncFlags {
                owner_id: owner_id.to_owned(),
                domain_filters: Vec::new(),
                zones: Vec::new(),
                sources: Vec::new(),
                create_ptr: false,
                publish_internal_services: false,
                service_types: Vec::new(),
                kubeconfig: path_value(kubeconfig),
                etcd: EtcdAccess::of(etcd),
                annotation_filters: Vec::new(),
                namespace: None,
                label_filter: None,
                fqdn_template: None,
                adopt_owner: None,
                namespace_domains: Vec::new(),
                election: Election::default(),
                interval: None,
                once: false,
                dry_run: false,
            },
        )
    }

    /// `--zone ZONE` (one more): a zone served from this etcd.
    pub fn zone(mut self, zone: &str) -> Self {
        self.daemon.zones.push(zone.to_owned());
        self
    }

    /// `--source SOURCE` (one more; without any, dns-sync's default `service` and `ingress`).
    pub fn source(mut self, source: &str) -> Self {
        self.daemon.sources.push(source.to_owned());
        self
    }

    /// `--create-ptr`: a PTR record for every address record, in the reverse zones given with `--zone`.
    pub fn create_ptr(mut self) -> Self {
        self.daemon.create_ptr = true;
        self
    }

    /// `--publish-internal-services`: ClusterIP Services' hostnames too, at their cluster IPs.
    pub fn publish_internal_services(mut self) -> Self {
        self.daemon.publish_internal_services = true;
        self
    }

    /// `--service-type-filter TYPE` (one more): `ClusterIP`, `NodePort`, `LoadBalancer`, `ExternalName`.
    pub fn service_type(mut self, service_type: &str) -> Self {
        self.daemon.service_types.push(service_type.to_owned());
        self
    }

    /// `--domain-filter DOMAIN` (one more).
    pub fn domain_filter(mut self, domain: &str) -> Self {
        self.daemon.domain_filters.push(domain.to_owned());
        self
    }

    /// Reaches etcd with the client certificate `identity` (its CN an etcd user) instead of etcd's own.
    pub fn etcd_identity(mut self, identity: &TlsFiles) -> Self {
        self.daemon.etcd.tls = Some(identity.clone());
        self
    }

    /// `--annotation-filter KEY=VALUE` (one more).
    pub fn annotation_filter(mut self, key_value: &str) -> Self {
        self.daemon.annotation_filters.push(key_value.to_owned());
        self
    }

    /// `--namespace NAMESPACE`: only objects in that namespace.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.daemon.namespace = Some(namespace.to_owned());
        self
    }

    /// `--label-filter SELECTOR`: only objects whose labels match (kubectl's `-l` syntax).
    pub fn label_filter(mut self, selector: &str) -> Self {
        self.daemon.label_filter = Some(selector.to_owned());
        self
    }

    /// `--fqdn-template TEMPLATES`: names for objects that carry none.
    pub fn fqdn_template(mut self, templates: &str) -> Self {
        self.daemon.fqdn_template = Some(templates.to_owned());
        self
    }

    /// `--adopt-owner=OWNER` (empty: records without an owner).
    pub fn adopt_owner(mut self, owner: &str) -> Self {
        self.daemon.adopt_owner = Some(owner.to_owned());
        self
    }

    /// `--namespace-domains NAMESPACE=NAME` (one more).
    pub fn namespace_domains(mut self, entry: &str) -> Self {
        self.daemon.namespace_domains.push(entry.to_owned());
        self
    }

    /// `--interval`: the full reconcile period.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.daemon.interval = Some(interval);
        self
    }

    /// `--once`: one pass, then exit.
    pub fn once(mut self) -> Self {
        self.daemon.once = true;
        self
    }

    /// `--dry-run`: log the changes, write nothing.
    pub fn dry_run(mut self) -> Self {
        self.daemon.dry_run = true;
        self
    }
}

impl Flags for DnsSyncFlags {
    fn write(&self, args: &mut Vec<String>) {
        args.extend(["--owner-id".to_owned(), self.owner_id.clone()]);
        push_each(args, "--domain-filter", &self.domain_filters);
        push_each(args, "--zone", &self.zones);
        push_each(args, "--source", &self.sources);
        push_switch(args, "--create-ptr", self.create_ptr);
        push_switch(
            args,
            "--publish-internal-services",
            self.publish_internal_services,
        );
        push_each(args, "--service-type-filter", &self.service_types);
        args.extend(["--kubeconfig".to_owned(), self.kubeconfig.clone()]);
        self.etcd.write(args);
        push_each(args, "--annotation-filter", &self.annotation_filters);
        push_opt(args, "--namespace", self.namespace.as_ref());
        push_opt(args, "--label-filter", self.label_filter.as_ref());
        push_opt(args, "--fqdn-template", self.fqdn_template.as_ref());
        if let Some(owner) = &self.adopt_owner {
            args.push(format!("--adopt-owner={owner}"));
        }
        push_each(args, "--namespace-domains", &self.namespace_domains);
        self.election.write(args);
        push_duration(args, "--interval", self.interval);
        push_switch(args, "--once", self.once);
        push_switch(args, "--dry-run", self.dry_run);
    }
}

impl Elects for DnsSyncFlags {
    fn election(&mut self) -> &mut Election {
        &mut self.election
    }
}
