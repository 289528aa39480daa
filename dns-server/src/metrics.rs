//! The server's Prometheus metrics, registered once at start-up and cloned into the tasks that update them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of a answered query.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// `udp` or `tcp`.
    pub transport: &'static str,
    /// Question type, e.g. `A`.
    pub qtype: &'static str,
    /// Response code, e.g. `NOERROR`.
    pub rcode: &'static str,
}

/// Metrics of the etcd follower.
#[derive(Debug, Clone, Default)]
pub struct StoreMetrics {
    /// Records in the index.
    pub records: Gauge,
    /// 1 while the watch is established.
    pub etcd_up: Gauge,
    /// Last etcd revision applied.
    pub etcd_revision: Gauge,
    /// Values skipped because they are not valid records.
    pub invalid_records: Counter,
    /// Interrupted syncs (connection, compaction, watch loss).
    pub etcd_errors: Counter,
    /// Full reads of the prefix.
    pub relists: Counter,
}

/// Metrics of the DNS front end.
#[derive(Debug, Clone)]
pub struct QueryMetrics {
    /// Answered queries.
    pub queries: Family<QueryLabels, Counter>,
    /// Time from receipt to the response being handed to the socket.
    pub duration: Histogram,
    /// Messages dropped without an answer (unparseable, or responses).
    pub dropped: Counter,
    /// TCP connections closed on accept, over the total or a client's quota.
    pub tcp_refused: Family<TcpRefusedLabels, Counter>,
    /// Zone transfers sent, by kind.
    pub transfers: Family<TransferLabels, Counter>,
}

/// How a zone transfer was answered.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct TransferLabels {
    /// `axfr`; `ixfr` (the difference); `ixfr_full` (the whole zone, the secondary's version no longer
    /// in etcd's history or the difference larger than the zone); `ixfr_current` (one SOA).
    pub kind: &'static str,
}

/// Which TCP quota turned a connection away.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct TcpRefusedLabels {
    /// `total` or `per_client`.
    pub quota: &'static str,
}

/// What response rate limiting did with a UDP answer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RrlLabels {
    /// `sent` (within the limit, exempt, or RRL off), `slipped` (sent truncated) or `dropped`.
    pub action: &'static str,
}

/// Metrics of response rate limiting: a counter per action.
#[derive(Debug, Clone, Default)]
pub struct RrlMetrics {
    /// UDP answers by [`RrlLabels`].
    pub responses: Family<RrlLabels, Counter>,
}

impl RrlMetrics {
    /// A per-thread tally that adds to these counters in batches.
    pub fn tally(&self) -> RrlTally {
        let counter = |action| self.responses.get_or_create(&RrlLabels { action }).clone();
        RrlTally {
            counters: [counter("sent"), counter("slipped"), counter("dropped")],
            counts: [0; 3],
        }
    }

    /// Counts one answer's action at once (for the rare answers not sent by a UDP serving thread).
    pub fn count(&self, action: crate::rrl::Action) {
        let mut tally = self.tally();
        tally.count(action);
        tally.flush();
    }
}

/// Answers counted by one UDP thread and not yet added to the shared counters: a shared counter is one
/// atomic add every thread contends for, once per answer otherwise.
#[derive(Debug)]
pub struct RrlTally {
    counters: [Counter; 3],
    counts: [u64; 3],
}

/// Answers a tally holds before adding them to the shared counters.
const TALLY_BATCH: u64 = 256;

impl RrlTally {
    /// Counts one answer's action.
    pub fn count(&mut self, action: crate::rrl::Action) {
        let index = match action {
            crate::rrl::Action::Send => 0,
            crate::rrl::Action::Slip { .. } => 1,
            crate::rrl::Action::Drop => 2,
        };
        self.counts[index] += 1;
        if self.counts[index] >= TALLY_BATCH {
            self.flush();
        }
    }

    /// Adds what was counted to the shared counters (also when the thread is idle, so they do not lag).
    pub fn flush(&mut self) {
        for (counter, count) in self.counters.iter().zip(&mut self.counts) {
            if *count > 0 {
                counter.inc_by(*count);
                *count = 0;
            }
        }
    }
}

/// Metrics of NOTIFY to secondaries.
#[derive(Debug, Clone, Default)]
pub struct NotifyMetrics {
    /// NOTIFY messages a secondary acknowledged.
    pub acked: Counter,
    /// NOTIFY announcements given up after every retry.
    pub failed: Counter,
    /// NOTIFY a secondary answered with an error (REFUSED, NOTAUTH...): not acknowledged, not retried.
    pub refused: Counter,
}

/// Everything the server exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Store side.
    pub store: StoreMetrics,
    /// Query side.
    pub queries: QueryMetrics,
    /// NOTIFY side.
    pub notify: NotifyMetrics,
    /// Response rate limiting.
    pub rrl: RrlMetrics,
}

impl Metrics {
    /// Creates the metrics and registers them under `dns_`.
    pub fn register(registry: &mut Registry) -> Self {
        let registry = registry.sub_registry_with_prefix("dns");
        let store = StoreMetrics::default();
        registry.register(
            "records",
            "Records in the in-memory index",
            store.records.clone(),
        );
        registry.register(
            "etcd_up",
            "Whether the etcd watch is established",
            store.etcd_up.clone(),
        );
        registry.register(
            "etcd_revision",
            "Last etcd revision applied to the index",
            store.etcd_revision.clone(),
        );
        registry.register(
            "invalid_records",
            "Values under the prefix skipped as invalid",
            store.invalid_records.clone(),
        );
        registry.register(
            "etcd_errors",
            "Interruptions of the etcd list/watch",
            store.etcd_errors.clone(),
        );
        registry.register(
            "etcd_relists",
            "Full reads of the prefix",
            store.relists.clone(),
        );
        let queries = QueryMetrics {
            queries: Family::default(),
            // 10 us .. ~80 ms.
            duration: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.000_01, 2.0, 14,
            )),
            dropped: Counter::default(),
            tcp_refused: Family::default(),
            transfers: Family::default(),
        };
        registry.register("queries", "Answered DNS queries", queries.queries.clone());
        registry.register(
            "request_duration_seconds",
            "Time to answer a query",
            queries.duration.clone(),
        );
        registry.register(
            "dropped",
            "DNS messages dropped without an answer",
            queries.dropped.clone(),
        );
        registry.register(
            "tcp_refused",
            "TCP connections closed on accept because a quota was full",
            queries.tcp_refused.clone(),
        );
        registry.register(
            "transfers",
            "Zone transfers answered, by kind (axfr, ixfr, ixfr_full, ixfr_current)",
            queries.transfers.clone(),
        );
        let notify = NotifyMetrics::default();
        registry.register(
            "notify_acked",
            "NOTIFY acknowledged by a secondary",
            notify.acked.clone(),
        );
        registry.register(
            "notify_failed",
            "NOTIFY given up after retries",
            notify.failed.clone(),
        );
        registry.register(
            "notify_refused",
            "NOTIFY answered with an error by a secondary (e.g. from an address it does not know as primary)",
            notify.refused.clone(),
        );
        let rrl = RrlMetrics::default();
        registry.register(
            "rrl_responses",
            "UDP answers by what response rate limiting did: sent, slipped (sent truncated) or dropped",
            rrl.responses.clone(),
        );
        Self {
            store,
            queries,
            notify,
            rrl,
        }
    }
}
