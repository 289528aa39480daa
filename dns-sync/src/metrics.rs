//! dns-sync's Prometheus metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::source::RejectionKind;

/// Everything dns-sync exports (names under `groundwork_dns_sync_`).
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Records we own after the last sync.
    pub records_managed: Gauge,
    /// Keys written or deleted.
    pub etcd_writes: Counter,
    /// Failed syncs (etcd or API errors).
    pub errors: Counter,
    /// Names skipped for bad input.
    pub rejected: Gauge,
    /// Names refused in the last sync, by rule (`reason` label).
    pub refused: Family<Vec<(&'static str, &'static str)>, Gauge>,
    /// Objects asking for names that have no address yet (not a refusal).
    pub waiting: Gauge,
    /// Wanted records blocked by another owner's key.
    pub conflicts: Gauge,
    /// Deletions held back while the view of the cluster was not fresh.
    pub deferred_deletes: Gauge,
    /// Time from the first object change of a batch to its etcd commit.
    pub change_to_commit: Histogram,
    /// Unix time of the last successful sync.
    pub last_success: Gauge,
    /// 1 while this replica is the active one.
    pub leader: Gauge,
    /// Kubernetes Events dropped because the publishing queue was full.
    pub events_dropped: Counter,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            records_managed: Gauge::default(),
            etcd_writes: Counter::default(),
            errors: Counter::default(),
            rejected: Gauge::default(),
            refused: Family::default(),
            waiting: Gauge::default(),
            conflicts: Gauge::default(),
            deferred_deletes: Gauge::default(),
            // 1 ms .. ~16 s.
            change_to_commit: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            last_success: Gauge::default(),
            leader: Gauge::default(),
            events_dropped: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("dns_sync");
        r.register(
            "records_managed",
            "Records owned by this dns-sync",
            metrics.records_managed.clone(),
        );
        r.register(
            "etcd_writes",
            "Keys written or deleted in etcd",
            metrics.etcd_writes.clone(),
        );
        r.register("errors", "Failed sync attempts", metrics.errors.clone());
        r.register(
            "rejected_names",
            "Names skipped for bad input",
            metrics.rejected.clone(),
        );
        r.register(
            "refusals",
            "Names refused in the last sync, by reason: invalid, reserved, not_allowed, conflict, limit",
            metrics.refused.clone(),
        );
        r.register(
            "waiting_objects",
            "Objects asking for names that have no address to publish yet",
            metrics.waiting.clone(),
        );
        r.register(
            "conflicts",
            "Wanted records blocked by another owner's key",
            metrics.conflicts.clone(),
        );
        r.register(
            "deferred_deletes",
            "Deletions held back until the view is fresh",
            metrics.deferred_deletes.clone(),
        );
        r.register(
            "change_to_commit_seconds",
            "Time from an object change to the etcd commit",
            metrics.change_to_commit.clone(),
        );
        r.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful sync",
            metrics.last_success.clone(),
        );
        r.register(
            "leader",
            "Whether this replica is the active one",
            metrics.leader.clone(),
        );
        r.register(
            "events_dropped",
            "Kubernetes Events dropped because the publishing queue was full",
            metrics.events_dropped.clone(),
        );
        metrics
    }

    /// The `refusals` gauge of one reason.
    pub fn refused(&self, kind: RejectionKind) -> Gauge {
        self.refused
            .get_or_create(&vec![("reason", kind.label())])
            .clone()
    }
}
