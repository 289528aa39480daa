//! The speaker's Prometheus metrics, registered once at start-up and cloned into the responder threads and
//! the control loop (prometheus-client metrics are atomics behind an `Arc`, so updates need no lock).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `protocol` label: `arp` or `ndp`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    /// `arp` or `ndp`.
    pub protocol: &'static str,
}

/// Label values.
pub const ARP: ProtocolLabels = ProtocolLabels { protocol: "arp" };
/// Label values.
pub const NDP: ProtocolLabels = ProtocolLabels { protocol: "ndp" };

// --- BFD (`bfd`) ---

/// `state` label of the BFD metrics: `AdminDown`, `Down`, `Init` or `Up`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BfdStateLabels {
    /// The session state.
    pub state: &'static str,
}

/// `reason` label of discarded BFD packets (`bfd::packet::Discard::label`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BfdDiscardLabels {
    /// Why the packet was discarded.
    pub reason: &'static str,
}

// --- end BFD ---

/// `peer` label: `BgpPeer.name`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BgpPeerLabels {
    /// `BgpPeer.name`.
    pub peer: String,
}

/// `peer` and `state` labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BgpStateLabels {
    /// `BgpPeer.name`.
    pub peer: String,
    /// RFC 4271's state name.
    pub state: &'static str,
}

/// Everything the speaker exports, under `groundwork_lb_speaker_`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// ARP requests / Neighbor Solicitations received.
    pub requests_seen: Family<ProtocolLabels, Counter>,
    /// Replies / advertisements sent for held addresses.
    pub replies_sent: Family<ProtocolLabels, Counter>,
    /// Gratuitous ARP / unsolicited NA frames sent.
    pub gratuitous_sent: Family<ProtocolLabels, Counter>,
    /// Frames from another MAC claiming an address this node holds.
    pub conflicts: Family<ProtocolLabels, Counter>,
    /// Frames that could not be parsed.
    pub malformed_frames: Counter,
    /// Conflicts counted but not reported to the controller (beyond the bound on reported ones).
    pub conflicts_unreported: Counter,
    /// Frames that could not be sent.
    pub send_errors: Counter,
    /// Addresses held (whether or not the lease runs).
    pub addresses_held: Gauge,
    /// (interface, address) pairs answered for now.
    pub announcements: Gauge,
    /// 1 while the lease runs.
    pub lease_valid: Gauge,
    /// Leases whose echo was 0 or later than anything the session sent (they extend nothing).
    pub lease_echoes_rejected: Counter,
    /// The generation applied in the current session.
    pub applied_generation: Gauge,
    /// 1 while a session with the controller is open.
    pub controller_connected: Gauge,
    /// Sessions opened.
    pub controller_sessions: Counter,
    /// Failed attempts to open a session, and sessions that broke.
    pub controller_errors: Counter,
    /// Interfaces the speaker announces on.
    pub interfaces_eligible: Gauge,
    // --- BFD (`bfd`) ---
    /// BFD sessions by state (sessions being removed count as AdminDown until dropped).
    pub bfd_sessions: Family<BfdStateLabels, Gauge>,
    /// BFD state changes, by the state entered.
    pub bfd_state_changes: Family<BfdStateLabels, Counter>,
    /// BFD packets received and discarded, by reason.
    pub bfd_packets_discarded: Family<BfdDiscardLabels, Counter>,
    /// BFD Control packets received and handed to a session.
    pub bfd_packets_received: Counter,
    /// BFD Control packets sent.
    pub bfd_packets_sent: Counter,
    /// BFD Control packets that could not be sent.
    pub bfd_send_errors: Counter,
    // --- end BFD ---
    /// 1 for each BGP peer's current state, 0 for the states it left.
    pub bgp_session_state: Family<BgpStateLabels, Gauge>,
    /// BGP sessions Established now.
    pub bgp_sessions_established: Gauge,
    /// UPDATE messages sent, End-of-RIB included.
    pub bgp_updates_sent: Family<BgpPeerLabels, Counter>,
    /// Prefixes advertised to each peer now.
    pub bgp_prefixes_advertised: Family<BgpPeerLabels, Gauge>,
    /// Established sessions that went down.
    pub bgp_session_flaps: Family<BgpPeerLabels, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them under `lb_speaker_`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let r = registry.sub_registry_with_prefix("lb_speaker");
        r.register(
            "requests_seen",
            "ARP requests and Neighbor Solicitations received",
            metrics.requests_seen.clone(),
        );
        r.register(
            "replies_sent",
            "ARP replies and Neighbor Advertisements sent for held addresses",
            metrics.replies_sent.clone(),
        );
        r.register(
            "gratuitous_sent",
            "Gratuitous ARP and unsolicited Neighbor Advertisement frames sent",
            metrics.gratuitous_sent.clone(),
        );
        r.register(
            "conflicts",
            "Frames from another MAC claiming an address this node holds",
            metrics.conflicts.clone(),
        );
        r.register(
            "conflicts_unreported",
            "Conflicts beyond the bound on those reported to the controller (a flood of foreign MACs): counted only",
            metrics.conflicts_unreported.clone(),
        );
        r.register(
            "malformed_frames",
            "ARP/NDP frames that could not be parsed",
            metrics.malformed_frames.clone(),
        );
        r.register(
            "send_errors",
            "Frames that could not be sent",
            metrics.send_errors.clone(),
        );
        r.register(
            "addresses_held",
            "Addresses assigned to this node (whether or not the lease runs)",
            metrics.addresses_held.clone(),
        );
        r.register(
            "announcements",
            "Interface/address pairs answered for now",
            metrics.announcements.clone(),
        );
        r.register(
            "lease_valid",
            "1 while the controller's lease runs",
            metrics.lease_valid.clone(),
        );
        r.register(
            "lease_echoes_rejected",
            "Leases from the controller whose echo_ms was 0 or later than anything this session sent",
            metrics.lease_echoes_rejected.clone(),
        );
        r.register(
            "applied_generation",
            "Assignment generation applied in the current session",
            metrics.applied_generation.clone(),
        );
        r.register(
            "controller_connected",
            "1 while a session with the controller is open",
            metrics.controller_connected.clone(),
        );
        r.register(
            "controller_sessions",
            "Sessions opened with the controller",
            metrics.controller_sessions.clone(),
        );
        r.register(
            "controller_errors",
            "Failed attempts to open a session with the controller, and sessions that broke",
            metrics.controller_errors.clone(),
        );
        r.register(
            "interfaces_eligible",
            "Interfaces the speaker announces on",
            metrics.interfaces_eligible.clone(),
        );
        metrics.register_bfd(r);
        metrics.register_bgp(r);
        metrics
    }

    /// The BFD runner's metrics (`bfd`).
    fn register_bfd(&self, r: &mut Registry) {
        r.register(
            "bfd_sessions",
            "BFD sessions by state (sessions being removed count as AdminDown until dropped)",
            self.bfd_sessions.clone(),
        );
        r.register(
            "bfd_state_changes",
            "BFD session state changes, by the state entered",
            self.bfd_state_changes.clone(),
        );
        r.register(
            "bfd_packets_discarded",
            "BFD packets received and discarded, by reason (RFC 5880 6.8.6 checks, TTL not 255, no session)",
            self.bfd_packets_discarded.clone(),
        );
        r.register(
            "bfd_packets_received",
            "BFD Control packets received and handed to a session",
            self.bfd_packets_received.clone(),
        );
        r.register(
            "bfd_packets_sent",
            "BFD Control packets sent",
            self.bfd_packets_sent.clone(),
        );
        r.register(
            "bfd_send_errors",
            "BFD Control packets that could not be sent",
            self.bfd_send_errors.clone(),
        );
    }

    /// The BGP speaker's metrics (`bgp`).
    fn register_bgp(&self, r: &mut Registry) {
        r.register(
            "bgp_session_state",
            "1 for each BGP peer's current RFC 4271 state",
            self.bgp_session_state.clone(),
        );
        r.register(
            "bgp_sessions_established",
            "BGP sessions Established now",
            self.bgp_sessions_established.clone(),
        );
        r.register(
            "bgp_updates_sent",
            "BGP UPDATE messages sent, End-of-RIB markers included",
            self.bgp_updates_sent.clone(),
        );
        r.register(
            "bgp_prefixes_advertised",
            "Prefixes advertised to each BGP peer now",
            self.bgp_prefixes_advertised.clone(),
        );
        r.register(
            "bgp_session_flaps",
            "Established BGP sessions that went down",
            self.bgp_session_flaps.clone(),
        );
    }
}
