//! What the speaker holds and until when: the assignment set the controller gave it, the generation it
//! applied, and the single lease deadline for the whole set, following the rules of `announce.proto`
//! step 3 exactly. This is the fencing half of "never two nodes answering for one address", so it is pure
//! (time is passed in as an `Instant`) and unit-tested rule by rule. [`Holdings::plan`] then turns what is
//! held now into the (interface, address) pairs to answer for, and the problems to report.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use proto::announce::v1::{
    Assignment, AssignmentDelta, AssignmentSet, Lease, LeaseRenewal, Problem,
};

use crate::interfaces::InterfaceSet;

/// One held address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Interfaces named by the controller; empty means every eligible interface.
    pub interfaces: Vec<String>,
    /// The Services using it, for logs.
    pub services: Vec<String>,
}

/// What applying a controller message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A snapshot replaced everything.
    Snapshot {
        /// Its generation.
        generation: u64,
    },
    /// A delta was applied on top of its base.
    Delta {
        /// Its generation.
        generation: u64,
    },
    /// A delta against a generation we do not hold: ignored; the controller answers with a snapshot once
    /// it sees our applied generation.
    DeltaIgnored {
        /// The delta's base.
        base: u64,
        /// What we hold.
        applied: u64,
    },
    /// A renewal for the applied generation restarted the lease.
    Renewed,
    /// A renewal for another generation: ignored.
    RenewalIgnored {
        /// The renewal's generation.
        generation: u64,
        /// What we hold.
        applied: u64,
    },
}

/// The speaker's holdings.
#[derive(Debug, Clone, Default)]
pub struct Holdings {
    /// Generation of the last applied snapshot/delta in the current session; 0 before the first snapshot
    /// of a session, since generations are scoped to one session.
    generation: u64,
    /// The last generation applied in any session (for `Hello.held_generation`).
    held_generation: u64,
    assignments: BTreeMap<IpAddr, Held>,
    /// Addresses from the controller that are not IP addresses, with the reason.
    rejected: BTreeMap<String, String>,
    /// Rule 3's deadline: receipt of the last lease + its `valid_for_ms`.
    lease_deadline: Option<Instant>,
    lease: Option<Duration>,
    /// Rule 7's controller-loss hold: the time of loss + the hold, if a loss since the last snapshot
    /// started one. Cleared by the next snapshot (normal lease rules again).
    hold_until: Option<Instant>,
    /// A loss since the last snapshot was already handled (whether or not it started a hold), so further
    /// losses (reconnects that fail again and again) never extend anything.
    loss_handled: bool,
    /// When the last message of any kind arrived from the controller.
    last_heard: Option<Instant>,
}

/// What losing the controller session did to the holdings (rule 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The session was healthy and closed or reset by the controller's side: what is held stays announced
    /// until `until` (or a later lease deadline).
    Hold {
        /// Time of loss + the controller-loss hold.
        until: Instant,
    },
    /// The session ended but not by the controller's doing (e.g. our queue to it was stuck): only the lease.
    NotByController,
    /// Nothing arrived from the controller within the last lease/2 before the loss (the stream went silent,
    /// e.g. a partition later noticed by TCP or HTTP/2 keepalive): only the lease.
    Silent {
        /// How long nothing had arrived (`None`: nothing ever did).
        quiet_for: Option<Duration>,
    },
    /// The lease had already run out: a loss never brings addresses back.
    Lapsed,
    /// A loss since the last snapshot was already handled: nothing is extended again.
    AlreadyHandled,
}

impl Holdings {
    /// Empty holdings with no lease.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new session starts: its generations restart at 1, so nothing from the old session is a valid base
    /// for a delta or renewal. What is held keeps being announced until its lease runs out.
    pub fn begin_session(&mut self) {
        self.generation = 0;
    }

    /// Notes that a message (of any kind, applied or not) arrived from the controller at `now`: what tells
    /// a healthy session from a silent one when it ends.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = Some(now);
    }

    /// The session with the controller was lost at `now` (rule 7). `hold` is the controller-loss hold when
    /// the controller's side closed or reset the stream, `None` for any other ending. The hold applies
    /// only once per loss (the first loss after a snapshot), only if the lease still runs, and only if the
    /// session was healthy: a message arrived within the last lease/2 (the controller's own silence
    /// threshold, rule 5; renewals come every lease/5). "Within the last lease" would say nothing more than
    /// "the lease still runs", since every renewal restarts the lease: a stream that went silent (a
    /// partition) and is only later reset by TCP or HTTP/2 keepalive would then hold. Then the deadline becomes
    /// max(lease deadline, now + hold); it is never extended again until a snapshot arrives.
    pub fn controller_lost(&mut self, now: Instant, hold: Option<Duration>) -> Loss {
        if std::mem::replace(&mut self.loss_handled, true) {
            return Loss::AlreadyHandled;
        }
        let Some(hold) = hold else {
            return Loss::NotByController;
        };
        if self.lease_deadline.is_none_or(|d| now >= d) {
            return Loss::Lapsed;
        }
        let quiet_for = self.last_heard.map(|t| now.saturating_duration_since(t));
        let healthy = match (quiet_for, self.lease) {
            (Some(quiet), Some(lease)) => quiet < lease / 2,
            _ => false,
        };
        if !healthy {
            return Loss::Silent { quiet_for };
        }
        let until = now + hold;
        self.hold_until = Some(until);
        Loss::Hold { until }
    }

    /// The end of the controller-loss hold, if one is running at `now`.
    pub fn hold_until(&self, now: Instant) -> Option<Instant> {
        self.hold_until.filter(|h| now < *h)
    }

    /// The generation applied in this session (0 if none yet): what heartbeats and reports acknowledge.
    pub fn applied_generation(&self) -> u64 {
        self.generation
    }

    /// The generation still held from any session, 0 if the lease ran out.
    pub fn held_generation(&self, now: Instant) -> u64 {
        if self.lease_valid(now) {
            self.held_generation
        } else {
            0
        }
    }

    /// Until when what is held is announced: the lease deadline, or the end of a controller-loss hold if
    /// later. `None` if no lease was ever received.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.lease_deadline, self.hold_until) {
            (Some(lease), Some(hold)) => Some(lease.max(hold)),
            (lease, None) => lease,
            (None, hold) => hold,
        }
    }

    /// The duration of the last lease received (heartbeats go every lease/5).
    pub fn lease_period(&self) -> Option<Duration> {
        self.lease
    }

    /// Whether the lease (or a controller-loss hold) is running at `now`.
    pub fn lease_valid(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|d| now < d)
    }

    /// Every held address, whether or not the lease runs.
    pub fn held(&self) -> &BTreeMap<IpAddr, Held> {
        &self.assignments
    }

    /// Addresses the controller sent that are not IP addresses.
    pub fn rejected(&self) -> &BTreeMap<String, String> {
        &self.rejected
    }

    /// Applies a snapshot received at `now`: it replaces everything and, being the applied generation
    /// afterwards, restarts the lease.
    /// It also ends a controller-loss hold: normal lease rules apply again (addresses not in the set stop
    /// at once; a set without a lease leaves only the lease deadline from before the loss).
    pub fn apply_set(&mut self, set: &AssignmentSet, now: Instant) -> Applied {
        self.heard(now);
        self.hold_until = None;
        self.loss_handled = false;
        self.assignments.clear();
        self.rejected.clear();
        for assignment in &set.assignments {
            self.upsert(assignment);
        }
        self.generation = set.generation;
        self.held_generation = set.generation;
        self.restart_lease(set.lease.as_ref(), now);
        Applied::Snapshot {
            generation: set.generation,
        }
    }

    /// Applies a delta received at `now` if its base is the applied generation; otherwise ignores it.
    pub fn apply_delta(&mut self, delta: &AssignmentDelta, now: Instant) -> Applied {
        self.heard(now);
        if self.generation == 0 || delta.base_generation != self.generation {
            return Applied::DeltaIgnored {
                base: delta.base_generation,
                applied: self.generation,
            };
        }
        for removed in &delta.removed {
            match removed.parse::<IpAddr>() {
                Ok(addr) => {
                    self.assignments.remove(&addr);
                }
                Err(_) => {
                    self.rejected.remove(removed);
                }
            }
        }
        for assignment in &delta.upserted {
            self.upsert(assignment);
        }
        self.generation = delta.generation;
        self.held_generation = delta.generation;
        self.restart_lease(delta.lease.as_ref(), now);
        Applied::Delta {
            generation: delta.generation,
        }
    }

    /// Applies a renewal received at `now`: it restarts the lease only for the applied generation.
    pub fn apply_renewal(&mut self, renewal: &LeaseRenewal, now: Instant) -> Applied {
        self.heard(now);
        if self.generation == 0 || renewal.generation != self.generation {
            return Applied::RenewalIgnored {
                generation: renewal.generation,
                applied: self.generation,
            };
        }
        self.restart_lease(renewal.lease.as_ref(), now);
        Applied::Renewed
    }

    /// Forgets everything (after a graceful leave or when stopping).
    pub fn clear(&mut self) {
        self.assignments.clear();
        self.rejected.clear();
        self.lease_deadline = None;
        self.hold_until = None;
    }

    fn upsert(&mut self, assignment: &Assignment) {
        match assignment.address.trim().parse::<IpAddr>() {
            Ok(addr) => {
                self.assignments.insert(
                    addr,
                    Held {
                        interfaces: assignment.interfaces.clone(),
                        services: assignment.services.clone(),
                    },
                );
            }
            Err(e) => {
                self.rejected.insert(
                    assignment.address.clone(),
                    format!("not an IP address: {e}"),
                );
            }
        }
    }

    /// Rule 3: deadline = receipt time + valid_for_ms. A message without a lease leaves the timer alone.
    fn restart_lease(&mut self, lease: Option<&Lease>, now: Instant) {
        if let Some(lease) = lease {
            let valid_for = Duration::from_millis(u64::from(lease.valid_for_ms));
            self.lease_deadline = Some(now + valid_for);
            self.lease = Some(valid_for);
        }
    }

    /// What to answer for at `now` on the interfaces in `interfaces`, and what prevents the rest. Nothing
    /// is answered once the lease has lapsed.
    pub fn plan(&self, now: Instant, interfaces: &InterfaceSet) -> Plan {
        let mut plan = Plan::default();
        for (text, reason) in &self.rejected {
            plan.problems.push(Problem {
                address: text.clone(),
                interface: String::new(),
                message: reason.clone(),
            });
        }
        if !self.lease_valid(now) {
            return plan;
        }
        for (addr, held) in &self.assignments {
            if held.interfaces.is_empty() {
                if interfaces.eligible.is_empty() {
                    plan.problems.push(Problem {
                        address: addr.to_string(),
                        interface: String::new(),
                        message: "no eligible interface on this node".to_owned(),
                    });
                }
                for name in interfaces.eligible.keys() {
                    plan.announce.insert((name.clone(), *addr));
                }
                continue;
            }
            for name in &held.interfaces {
                if interfaces.eligible.contains_key(name) {
                    plan.announce.insert((name.clone(), *addr));
                } else {
                    let message = match interfaces.ineligible.get(name) {
                        Some(reason) => format!("interface {name} is not eligible: {reason}"),
                        None => format!("interface {name} does not exist on this node"),
                    };
                    plan.problems.push(Problem {
                        address: addr.to_string(),
                        interface: name.clone(),
                        message,
                    });
                }
            }
        }
        plan
    }
}

/// The (interface, address) pairs to answer for now, and why others cannot be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Pairs to answer for.
    pub announce: BTreeSet<(String, IpAddr)>,
    /// Assignments that cannot be served as asked.
    pub problems: Vec<Problem>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interfaces::{Eligible, Ineligible};

    fn assignment(address: &str, interfaces: &[&str]) -> Assignment {
        Assignment {
            address: address.to_owned(),
            interfaces: interfaces.iter().map(|s| (*s).to_owned()).collect(),
            services: vec!["ingress/nginx".to_owned()],
        }
    }

    fn lease(ms: u32) -> Option<Lease> {
        Some(Lease { valid_for_ms: ms })
    }

    fn set(generation: u64, addresses: &[&str], ms: u32) -> AssignmentSet {
        AssignmentSet {
            generation,
            assignments: addresses.iter().map(|a| assignment(a, &[])).collect(),
            lease: lease(ms),
        }
    }

    fn eth0() -> InterfaceSet {
        let mut set = InterfaceSet::default();
        set.eligible.insert(
            "eth0".to_owned(),
            Eligible {
                name: "eth0".to_owned(),
                index: 2,
                mac: [2, 0, 0, 0, 0, 1],
                addresses: vec![],
            },
        );
        set.ineligible.insert("lo".to_owned(), Ineligible::Loopback);
        set
    }

    fn announced(h: &Holdings, now: Instant) -> Vec<String> {
        h.plan(now, &eth0())
            .announce
            .iter()
            .map(|(i, a)| format!("{i}/{a}"))
            .collect()
    }

    #[test]
    fn a_snapshot_is_announced_until_its_lease_runs_out() {
        let t0 = Instant::now();
        let mut h = Holdings::new();
        assert_eq!(
            h.apply_set(&set(1, &["10.10.39.200", "fd10:10::99"], 1000), t0),
            Applied::Snapshot { generation: 1 }
        );
        assert_eq!(h.applied_generation(), 1);
        assert_eq!(
            announced(&h, t0 + Duration::from_millis(999)),
            ["eth0/10.10.39.200", "eth0/fd10:10::99"]
        );
        assert!(announced(&h, t0 + Duration::from_millis(1000)).is_empty());
        assert!(!h.lease_valid(t0 + Duration::from_millis(1000)));
    }

    #[test]
    fn a_renewal_for_the_applied_generation_restarts_the_lease_from_receipt() {
        let t0 = Instant::now();
        let mut h = Holdings::new();
        h.apply_set(&set(3, &["10.10.39.200"], 1000), t0);
        let t1 = t0 + Duration::from_millis(800);
        let renewal = LeaseRenewal {
            generation: 3,
            lease: lease(1000),
        };
        assert_eq!(h.apply_renewal(&renewal, t1), Applied::Renewed);
        assert_eq!(h.deadline(), Some(t1 + Duration::from_millis(1000)));
        assert_eq!(announced(&h, t0 + Duration::from_millis(1500)).len(), 1);
    }

    #[test]
    fn a_renewal_for_another_generation_does_not_extend_the_lease() {
        let t0 = Instant::now();
        let mut h = Holdings::new();
        h.apply_set(&set(3, &["10.10.39.200"], 1000), t0);
        let stale = LeaseRenewal {
            generation: 2,
            lease: lease(60_000),
        };
        assert_eq!(
            h.apply_renewal(&stale, t0 + Duration::from_millis(500)),
            Applied::RenewalIgnored {
                generation: 2,
                applied: 3
            }
        );
        assert_eq!(h.deadline(), Some(t0 + Duration::from_millis(1000)));
    }

    #[test]
    fn a_lapsed_lease_comes_back_with_a_renewal() {
        let t0 = Instant::now();
        let mut h = Holdings::new();
        h.apply_set(&set(1, &["10.10.39.200"], 100), t0);
        let late = t0 + Duration::from_millis(500);
        assert!(announced(&h, late).is_empty());
        h.apply_renewal(
            &LeaseRenewal {
                generation: 1,
                lease: lease(100),
            },
            late,
        );
        assert_eq!(announced(&h, late), ["eth0/10.10.39.200"]);
    }

    #[test]
    fn a_delta_on_the_applied_generation_upserts_removes_and_restarts_the_lease() {
        let t0 = Instant::now();
        let mut h = Holdings::new();
        h.apply_set(&set(1, &["10.10.39.200", "10.10.39.201"], 1000), t0);
        let t1 = t0 + Duration::from_millis(900);
        let delta = AssignmentDelta {
            generation: 2,
            base_generation: 1,
            upserted: vec![assignment("10.10.39.202", &[])],
            removed: vec!["10.10.39.200".to_owned()],
            lease: lease(1000),
        };
        assert_eq!(h.apply_delta(&delta, t1), Applied::Delta { generation: 2 });
        assert_eq!(
            announced(&h, t0 + Duration::from_millis(1500)),
            ["eth0/10.10.39.201", "eth0/10.10.39.202"]
        );
    }

    #[test]
    fn a_delta_on_another_base_is_ignored_and_changes_nothing() {
        let t0 = Instant::now();
        let mut h = Holdings::new();
        h.apply_set(&set(5, &["10.10.39.200"], 1000), t0);
        let delta = AssignmentDelta {
            generation: 7,
            base_generation: 6,
            upserted: vec![assignment("10.10.39.202", &[])],
            removed: vec!["10.10.39.200".to_owned()],
            lease: lease(60_000),
        };
        assert_eq!(
            h.apply_delta(&delta, t0),
            Applied::DeltaIgnored {
                base: 6,
                applied: 5
            }
        );
        assert_eq!(h.applied_generation(), 5);
        assert_eq!(announced(&h, t0), ["eth0/10.10.39.200"]);
        assert_eq!(h.deadline(), Some(t0 + Duration::from_millis(1000)));
    }

    #[test]
    fn an_empty_snapshot_stops_everything_at_once() {
        let t0 = Instant::now();
        let mut h = Holdings::new();
        h.apply_set(&set(1, &["10.10.39.200"], 1000), t0);
        h.apply_set(&set(2, &[], 1000), t0);
        assert!(announced(&h, t0).is_empty());
        assert!(h.held().is_empty());
    }

    #[test]
    fn a_new_session_keeps_announcing_but_accepts_no_delta_or_renewal_before_its_snapshot() {
        let t0 = Instant::now();
        let mut h = Holdings::new();
        h.apply_set(&set(4, &["10.10.39.200"], 1000), t0);
        h.begin_session();
        assert_eq!(h.applied_generation(), 0);
        assert_eq!(h.held_generation(t0), 4);
        assert_eq!(announced(&h, t0), ["eth0/10.10.39.200"]);
        // Generation 4 of the new session is not the old generation 4.
        let renewal = LeaseRenewal {
            generation: 4,
            lease: lease(60_000),
        };
        assert!(matches!(
            h.apply_renewal(&renewal, t0),
            Applied::RenewalIgnored { .. }
        ));
        let delta = AssignmentDelta {
            generation: 5,
            base_generation: 4,
            ..Default::default()
        };
        assert!(matches!(
            h.apply_delta(&delta, t0),
            Applied::DeltaIgnored { .. }
        ));
        assert_eq!(h.held_generation(t0 + Duration::from_secs(2)), 0);
    }

    #[test]
    fn missing_and_ineligible_interfaces_are_problems_and_the_rest_is_served() {
        let t0 = Instant::now();
        let mut h = Holdings::new();
        h.apply_set(
            &AssignmentSet {
                generation: 1,
                assignments: vec![
                    assignment("10.10.39.200", &["eth0", "eth7"]),
                    assignment("10.10.39.201", &["lo"]),
                    assignment("not-an-ip", &[]),
                ],
                lease: lease(1000),
            },
            t0,
        );
        let plan = h.plan(t0, &eth0());
        assert_eq!(
            plan.announce.into_iter().collect::<Vec<_>>(),
            [("eth0".to_owned(), "10.10.39.200".parse().unwrap())]
        );
        let problems: Vec<(String, String, String)> = plan
            .problems
            .into_iter()
            .map(|p| (p.address, p.interface, p.message))
            .collect();
        assert!(problems.contains(&(
            "10.10.39.200".to_owned(),
            "eth7".to_owned(),
            "interface eth7 does not exist on this node".to_owned()
        )));
        assert!(
            problems
                .iter()
                .any(|(a, i, m)| a == "10.10.39.201" && i == "lo" && m.contains("loopback"))
        );
        assert!(
            problems
                .iter()
                .any(|(a, _, m)| a == "not-an-ip" && m.contains("not an IP"))
        );
    }

    #[test]
    fn a_zero_lease_is_lapsed_on_arrival() {
        let t0 = Instant::now();
        let mut h = Holdings::new();
        h.apply_set(&set(1, &["10.10.39.200"], 0), t0);
        assert!(announced(&h, t0).is_empty());
    }

    const HOLD: Duration = Duration::from_secs(15);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn renew(h: &mut Holdings, generation: u64, lease_ms: u32, at: Instant) {
        assert_eq!(
            h.apply_renewal(
                &LeaseRenewal {
                    generation,
                    lease: lease(lease_ms),
                },
                at,
            ),
            Applied::Renewed
        );
    }

    #[test]
    fn losing_a_healthy_session_to_the_controller_holds_until_loss_plus_hold() {
        let t0 = Instant::now();
        let mut h = Holdings::new();
        h.apply_set(&set(1, &["10.10.39.200"], 1500), t0);
        renew(&mut h, 1, 1500, t0 + ms(300));
        let lost = t0 + ms(400);
        h.begin_session();
        assert_eq!(
            h.controller_lost(lost, Some(HOLD)),
            Loss::Hold { until: lost + HOLD }
        );
        assert_eq!(h.deadline(), Some(lost + HOLD));
        assert_eq!(h.hold_until(lost), Some(lost + HOLD));
        // Long past the lease (300 ms + 1.5 s), still announced; the hold ends exactly at loss + hold.
        assert_eq!(announced(&h, lost + ms(2000)), ["eth0/10.10.39.200"]);
        assert_eq!(announced(&h, lost + HOLD - ms(1)), ["eth0/10.10.39.200"]);
        assert!(announced(&h, lost + HOLD).is_empty());
        // The new leader learns what is still held.
        assert_eq!(h.held_generation(lost + ms(2000)), 1);
    }

    #[test]
    fn a_hold_shorter_than_what_is_left_of_the_lease_never_shortens_it() {
        let t0 = Instant::now();
        let mut h = Holdings::new();
        h.apply_set(&set(1, &["10.10.39.200"], 10_000), t0);
        let lost = t0 + ms(100);
        assert_eq!(
            h.controller_lost(lost, Some(ms(1000))),
            Loss::Hold {
                until: lost + ms(1000)
            }
        );
        assert_eq!(h.deadline(), Some(t0 + ms(10_000)));
    }

    #[test]
    fn a_stream_that_went_silent_and_then_errored_starts_no_hold() {
        let t0 = Instant::now();
        let mut h = Holdings::new();
        // A long lease, so that it still runs when the partition is finally noticed.
        h.apply_set(&set(1, &["10.10.39.200"], 20_000), t0);
        renew(&mut h, 1, 20_000, t0 + ms(4000));
        // Nothing for half a lease (two renewals missed), then the TCP/HTTP2 keepalive gives up on the
        // stream while the lease still runs.
        let errored = t0 + ms(4000) + ms(10_000);
        let mut silent = h.clone();
        silent.begin_session();
        let loss = silent.controller_lost(errored, Some(HOLD));
        assert_eq!(
            loss,
            Loss::Silent {
                quiet_for: Some(ms(10_000))
            }
        );
        assert!(silent.lease_valid(errored));
        assert_eq!(silent.deadline(), Some(t0 + ms(24_000)));
        assert!(announced(&silent, t0 + ms(24_000)).is_empty());
        // The threshold is lease/2: heard 1 ms less long ago, the session counts as healthy.
        assert!(matches!(
            h.controller_lost(errored - ms(1), Some(HOLD)),
            Loss::Hold { .. }
        ));
    }

    #[test]
    fn a_lapsed_lease_is_not_brought_back_by_a_loss_and_our_own_endings_do_not_hold() {
        let t0 = Instant::now();
        let mut h = Holdings::new();
        h.apply_set(&set(1, &["10.10.39.200"], 1000), t0);
        let mut lapsed = h.clone();
        assert_eq!(
            lapsed.controller_lost(t0 + ms(1000), Some(HOLD)),
            Loss::Lapsed
        );
        assert!(announced(&lapsed, t0 + ms(1000)).is_empty());
        assert_eq!(h.controller_lost(t0 + ms(100), None), Loss::NotByController);
        assert_eq!(h.deadline(), Some(t0 + ms(1000)));
        // That loss was handled: a controller-side ending right after does not hold either.
        assert_eq!(
            h.controller_lost(t0 + ms(200), Some(HOLD)),
            Loss::AlreadyHandled
        );
        assert_eq!(h.deadline(), Some(t0 + ms(1000)));
    }

    #[test]
    fn repeated_failures_never_extend_beyond_the_first_loss_plus_hold() {
        let t0 = Instant::now();
        let mut h = Holdings::new();
        h.apply_set(&set(1, &["10.10.39.200"], 1500), t0);
        let lost = t0 + ms(100);
        h.begin_session();
        assert_eq!(
            h.controller_lost(lost, Some(HOLD)),
            Loss::Hold { until: lost + HOLD }
        );
        // Reconnects that open and break again, every second for longer than the hold; a stray message
        // from a session that sent no snapshot (ignored) does not re-arm anything either.
        for second in 1..30u64 {
            let at = lost + Duration::from_secs(second);
            h.begin_session();
            assert!(matches!(
                h.apply_renewal(
                    &LeaseRenewal {
                        generation: 1,
                        lease: lease(1500)
                    },
                    at
                ),
                Applied::RenewalIgnored { .. }
            ));
            assert_eq!(
                h.controller_lost(at, Some(HOLD)),
                Loss::AlreadyHandled,
                "at +{second}s"
            );
            assert_eq!(h.deadline(), Some(lost + HOLD));
        }
        assert!(announced(&h, lost + HOLD).is_empty());
        assert_eq!(h.held_generation(lost + HOLD), 0);
    }

    #[test]
    fn a_new_sessions_set_ends_the_hold_and_addresses_not_in_it_stop_at_once() {
        let t0 = Instant::now();
        let mut h = Holdings::new();
        h.apply_set(&set(1, &["10.10.39.200", "10.10.39.201"], 1500), t0);
        let lost = t0 + ms(100);
        h.begin_session();
        assert!(matches!(
            h.controller_lost(lost, Some(HOLD)),
            Loss::Hold { .. }
        ));
        // The new leader's first set keeps .201 only, with normal lease rules.
        let new = lost + ms(5000);
        h.apply_set(&set(1, &["10.10.39.201"], 1500), new);
        assert_eq!(announced(&h, new), ["eth0/10.10.39.201"]);
        assert_eq!(h.hold_until(new), None);
        assert_eq!(h.deadline(), Some(new + ms(1500)));
        assert!(announced(&h, new + ms(1500)).is_empty());
        // An empty set stops everything at once, hold or not.
        let mut emptied = h.clone();
        emptied.begin_session();
        emptied.controller_lost(new + ms(100), Some(HOLD));
        emptied.apply_set(&set(1, &[], 1500), new + ms(200));
        assert!(announced(&emptied, new + ms(200)).is_empty());
        // The set re-armed the hold: the next healthy loss holds again, from its own time.
        let again = new + ms(300);
        h.begin_session();
        assert_eq!(
            h.controller_lost(again, Some(HOLD)),
            Loss::Hold {
                until: again + HOLD
            }
        );
    }

    #[test]
    fn a_new_sessions_set_without_a_lease_falls_back_to_the_lease_from_before_the_loss() {
        let t0 = Instant::now();
        let mut h = Holdings::new();
        h.apply_set(&set(1, &["10.10.39.200"], 1500), t0);
        h.controller_lost(t0 + ms(100), Some(HOLD));
        let mut no_lease = set(1, &["10.10.39.200"], 0);
        no_lease.lease = None;
        h.apply_set(&no_lease, t0 + ms(3000));
        assert_eq!(h.deadline(), Some(t0 + ms(1500)));
        assert!(announced(&h, t0 + ms(3000)).is_empty());
    }
}
