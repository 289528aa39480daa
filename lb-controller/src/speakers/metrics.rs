//! The hub's Prometheus metrics, kept apart so the session code only says what happened.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{DisconnectReason, HubEvent};

/// Why a session ended, as a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
enum Reason {
    Reset,
    Silent,
    Leaving,
    Replaced,
    NotLeader,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndLabels {
    reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusedLabels {
    reason: &'static str,
}

/// Handles on every metric the hub updates.
#[derive(Debug)]
pub(crate) struct Metrics {
    connected: Gauge,
    sessions_ended: Family<EndLabels, Counter>,
    assignments_held: Gauge,
    handovers: Counter,
    handover_wait: Histogram,
    conflicts: Counter,
    queued: Histogram,
    refused: Family<RefusedLabels, Counter>,
    events_dropped: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            connected: Gauge::default(),
            sessions_ended: Family::default(),
            assignments_held: Gauge::default(),
            handovers: Counter::default(),
            // 5 ms .. ~20 s: an acknowledgement takes milliseconds, a lease deadline seconds.
            handover_wait: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.005, 2.0, 13),
            ),
            conflicts: Counter::default(),
            // 0.5 ms .. ~2 s: normally well under a millisecond; near half a lease, speakers look silent.
            queued: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0005, 2.0, 13,
            )),
            refused: Family::default(),
            events_dropped: Counter::default(),
        };
        registry.register(
            "speakers_connected",
            "Speakers with an open session that are not silent",
            metrics.connected.clone(),
        );
        registry.register(
            "speaker_sessions_ended",
            "Speaker sessions that ended (or went silent), by reason",
            metrics.sessions_ended.clone(),
        );
        registry.register(
            "speaker_assignments_held",
            "Addresses a speaker acknowledged announcing",
            metrics.assignments_held.clone(),
        );
        registry.register(
            "speaker_handovers",
            "Addresses moved from one node to another",
            metrics.handovers.clone(),
        );
        registry.register(
            "speaker_handover_wait_seconds",
            "How long a moved address waited for fencing before it was sent to its new node",
            metrics.handover_wait.clone(),
        );
        registry.register(
            "speaker_conflicts_reported",
            "Conflicts (another MAC answering for an announced address) reported by speakers",
            metrics.conflicts.clone(),
        );
        registry.register(
            "speaker_message_queued_seconds",
            "How long a speaker's message waited between arriving and being taken in by the hub \
             (if this nears half a lease, live speakers are taken for silent)",
            metrics.queued.clone(),
        );
        registry.register(
            "speaker_sessions_refused",
            "Sessions refused because the speaker's token does not prove the node its Hello names, by reason",
            metrics.refused.clone(),
        );
        registry.register(
            "speaker_events_dropped",
            "Hub observations dropped because the Event queue was full (a flood of reports)",
            metrics.events_dropped.clone(),
        );
        metrics
    }

    /// Counts a refused session.
    pub(crate) fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&RefusedLabels { reason }).inc();
    }

    /// Counts an observation the full Event queue could not take.
    pub(crate) fn event_dropped(&self) {
        self.events_dropped.inc();
    }

    /// Observes how long a received message waited for the hub.
    pub(crate) fn observe_queued(&self, waited: std::time::Duration) {
        self.queued.observe(waited.as_secs_f64());
    }

    /// Counts what an event says.
    pub(crate) fn observe(&self, event: &HubEvent) {
        match event {
            HubEvent::Disconnected { why, .. } => {
                let reason = match why {
                    DisconnectReason::Reset => Reason::Reset,
                    DisconnectReason::Silent => Reason::Silent,
                    DisconnectReason::Leaving => Reason::Leaving,
                    DisconnectReason::Replaced => Reason::Replaced,
                    DisconnectReason::NotLeader => Reason::NotLeader,
                };
                self.sessions_ended
                    .get_or_create(&EndLabels { reason })
                    .inc();
            }
            HubEvent::HandedOver {
                from: Some(_),
                waited,
                ..
            } => {
                self.handovers.inc();
                self.handover_wait.observe(waited.as_secs_f64());
            }
            HubEvent::Conflict { .. } => {
                self.conflicts.inc();
            }
            HubEvent::Connected { .. }
            | HubEvent::Problem { .. }
            | HubEvent::HandedOver { .. }
            | HubEvent::BgpSessions { .. } => {}
        }
    }

    /// Sets the gauges from the current state.
    pub(crate) fn set_levels(&self, connected: usize, held: usize) {
        self.connected
            .set(i64::try_from(connected).unwrap_or(i64::MAX));
        self.assignments_held
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::*;

    #[test]
    fn events_are_counted_by_reason_and_handovers_observe_their_wait() {
        let mut registry = Registry::with_prefix("lb_controller");
        let metrics = Metrics::register(&mut registry);
        metrics.observe(&HubEvent::Disconnected {
            node: "a".into(),
            why: DisconnectReason::Reset,
        });
        metrics.observe(&HubEvent::HandedOver {
            address: "10.0.0.1".parse().unwrap(),
            from: Some("a".into()),
            to: "b".into(),
            waited: Duration::from_millis(40),
        });
        metrics.observe(&HubEvent::Conflict {
            node: "b".into(),
            address: "10.0.0.1".parse().unwrap(),
            interface: "eth0".into(),
            foreign_mac: vec![0; 6],
        });
        metrics.set_levels(2, 1);
        metrics.observe_queued(Duration::from_micros(300));
        metrics.refused("wrong_node");
        metrics.event_dropped();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "lb_controller_speaker_sessions_ended_total{reason=\"Reset\"} 1",
            "lb_controller_speaker_handovers_total 1",
            "lb_controller_speaker_handover_wait_seconds_count 1",
            "lb_controller_speaker_conflicts_reported_total 1",
            "lb_controller_speakers_connected 2",
            "lb_controller_speaker_assignments_held 1",
            "lb_controller_speaker_message_queued_seconds_count 1",
            "lb_controller_speaker_sessions_refused_total{reason=\"wrong_node\"} 1",
            "lb_controller_speaker_events_dropped_total 1",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
