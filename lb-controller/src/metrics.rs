//! The controller's Prometheus metrics (the speaker hub registers its own: sessions, handovers, leases).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of the per-pool gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// Pool name.
    pub pool: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
}

/// Labels of the write counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `status`, `annotation`, `pool_status`.
    pub kind: String,
    /// `ok` or `error`.
    pub result: String,
}

/// Every controller metric.
#[derive(Clone)]
pub struct Metrics {
    /// Addresses in each pool.
    pub pool_total: Family<PoolLabels, Gauge>,
    /// Addresses given out from each pool.
    pub pool_in_use: Family<PoolLabels, Gauge>,
    /// Served Services without an address.
    pub pending: Gauge,
    /// Addresses assigned to Services.
    pub assignments: Gauge,
    /// Whether this replica leads.
    pub leader: Gauge,
    /// Reconcile pass duration.
    pub reconcile_seconds: Histogram,
    /// From a change seen on the API to its status written.
    pub change_to_status_seconds: Histogram,
    /// API writes by kind and result.
    pub writes: Family<WriteLabels, Counter>,
    /// Kubernetes Events dropped because the publishing queue was full.
    pub events_dropped: Counter,
    /// Changes the periodic full pass made: what incremental passes missed (should stay 0).
    pub check_changes: Counter,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new(registry: &mut Registry) -> Self {
        let buckets = || {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
        };
        let metrics = Self {
            pool_total: Family::default(),
            pool_in_use: Family::default(),
            pending: Gauge::default(),
            assignments: Gauge::default(),
            leader: Gauge::default(),
            reconcile_seconds: buckets(),
            change_to_status_seconds: buckets(),
            writes: Family::default(),
            events_dropped: Counter::default(),
            check_changes: Counter::default(),
        };
        let registry = registry.sub_registry_with_prefix("lb_controller");
        registry.register(
            "pool_addresses",
            "Addresses in the pool (saturating for IPv6)",
            metrics.pool_total.clone(),
        );
        registry.register(
            "pool_addresses_in_use",
            "Addresses of the pool given to Services",
            metrics.pool_in_use.clone(),
        );
        registry.register(
            "services_pending",
            "Served LoadBalancer Services still without an address",
            metrics.pending.clone(),
        );
        registry.register(
            "assigned_addresses",
            "Addresses held by Services",
            metrics.assignments.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica leads",
            metrics.leader.clone(),
        );
        registry.register(
            "reconcile_seconds",
            "Duration of one reconcile pass",
            metrics.reconcile_seconds.clone(),
        );
        registry.register(
            "change_to_status_seconds",
            "From a change seen on the API to the Service status written",
            metrics.change_to_status_seconds.clone(),
        );
        registry.register(
            "api_writes",
            "Writes to the Kubernetes API by kind and result",
            metrics.writes.clone(),
        );
        registry.register(
            "events_dropped",
            "Kubernetes Events dropped because the publishing queue was full",
            metrics.events_dropped.clone(),
        );
        registry.register(
            "consistency_check_changes",
            "Service addresses and announcers the periodic full pass changed (incremental passes missed them; should stay 0)",
            metrics.check_changes.clone(),
        );
        metrics
    }

    /// Counts one write.
    pub fn wrote(&self, kind: &str, ok: bool) {
        self.writes
            .get_or_create(&WriteLabels {
                kind: kind.to_owned(),
                result: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
    }
}
