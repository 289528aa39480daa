//! What the speaker holds and until when: the assignment set the controller gave it, the generation it
//! applied, and the single lease deadline for the whole set, following the rules of `announce.proto`
//! step 3 exactly. This is the fencing half of "never two nodes answering for one address", so it is pure
//! (time is passed in as an `Instant`) and unit-tested rule by rule. [`Holdings::plan`] then turns what is
//! held now into the (interface, address) pairs to answer for, and the problems to report.
//!
//! Leases count from the speaker's own clock (step 3): every message the speaker sends is stamped with
//! [`Holdings::stamp`] (milliseconds since `epoch`, a monotonic instant fixed for the process), the
//! controller echoes the newest stamp it received in every `Lease`, and a lease runs until
//! `epoch + echo_ms + valid_for_ms`. When a message arrives plays no part, so a renewal delayed in transit
//! (buffered across a partition) extends nothing.

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
        /// What its lease did to the deadline.
        lease: LeaseOutcome,
    },
    /// A delta was applied on top of its base.
    Delta {
        /// Its generation.
        generation: u64,
        /// What its lease did to the deadline.
        lease: LeaseOutcome,
    },
    /// A delta against a generation we do not hold: ignored; the controller answers with a snapshot once
    /// it sees our applied generation.
    DeltaIgnored {
        /// The delta's base.
        base: u64,
        /// What we hold.
        applied: u64,
    },
    /// A renewal for the applied generation.
    Renewed {
        /// What its lease did to the deadline.
        lease: LeaseOutcome,
    },
    /// A renewal for another generation: ignored.
    RenewalIgnored {
        /// The renewal's generation.
        generation: u64,
        /// What we hold.
        applied: u64,
    },
}

/// What the lease of an applied set, delta or renewal did to the deadline (step 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The message carried no lease: the deadline stays as it was.
    Absent,
    /// `epoch + echo_ms + valid_for_ms` is later than the deadline was: the deadline moved there.
    Extended {
        /// The new deadline.
        until: Instant,
    },
    /// `epoch + echo_ms + valid_for_ms` is not later than the deadline (e.g. a renewal delayed in
    /// transit, whose echo is old): nothing moved.
    NotLater {
        /// Where this lease alone would have ended.
        until: Instant,
    },
    /// `echo_ms` is 0 (never valid): nothing moved.
    ZeroEcho,
    /// `echo_ms` is later than anything this session sent: nothing moved.
    FutureEcho {
        /// The echo.
        echo_ms: u64,
        /// The newest stamp this session sent.
        max_sent_ms: u64,
    },
}

/// The speaker's holdings.
#[derive(Debug, Clone)]
pub struct Holdings {
    /// The speaker's clock: `sent_at_ms` and `echo_ms` count milliseconds from here.
    epoch: Instant,
    /// The newest `sent_at_ms` stamped in the current session (0 before its first message): an echo
    /// beyond it cannot be genuine.
    max_sent_ms: u64,
    /// The newest valid echo of an applied lease, from any session (the clock is the process's): what
    /// tells a healthy session from a silent one when it ends (rule 7).
    newest_echo_ms: Option<u64>,
    /// Generation of the last applied snapshot/delta in the current session; 0 before the first snapshot
    /// of a session, since generations are scoped to one session.
    generation: u64,
    /// The last generation applied in any session (for `Hello.held_generation`).
    held_generation: u64,
    assignments: BTreeMap<IpAddr, Held>,
    /// Addresses from the controller that are not IP addresses, with the reason.
    rejected: BTreeMap<String, String>,
    /// Rule 3's deadline: the latest `epoch + echo_ms + valid_for_ms` of an applied lease.
    lease_deadline: Option<Instant>,
    lease: Option<Duration>,
    /// Rule 7's controller-loss hold: the time of loss + the hold, if a loss since the last snapshot
    /// started one. Cleared by the next snapshot (normal lease rules again).
    hold_until: Option<Instant>,
    /// A loss since the last snapshot was already handled (whether or not it started a hold), so further
    /// losses (reconnects that fail again and again) never extend anything.
    loss_handled: bool,
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
    /// The newest lease echo was lease/2 old or older at the loss (the stream went silent, e.g. a
    /// partition later noticed by TCP or HTTP/2 keepalive, or only stale renewals arrived): only the lease.
    Silent {
        /// How old the newest echo was (`None`: no lease was ever echoed).
        echo_age: Option<Duration>,
    },
    /// The lease had already run out: a loss never brings addresses back.
    Lapsed,
    /// A loss since the last snapshot was already handled: nothing is extended again.
    AlreadyHandled,
}

impl Holdings {
    /// Empty holdings with no lease, on a clock that counts from `epoch` (stamps are never below 1, so pick
    /// an epoch at least 1 ms before the first message, e.g. process start minus 1 ms).
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            max_sent_ms: 0,
            newest_echo_ms: None,
            generation: 0,
            held_generation: 0,
            assignments: BTreeMap::new(),
            rejected: BTreeMap::new(),
            lease_deadline: None,
            lease: None,
            hold_until: None,
            loss_handled: false,
        }
    }

    /// Stamps a message sent (queued) at `now`: its `sent_at_ms` (>= 1), remembered as the newest stamp of
    /// this session.
    pub fn stamp(&mut self, now: Instant) -> u64 {
        let ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.max_sent_ms = self.max_sent_ms.max(ms);
        ms
    }

    /// The instant `ms` on the speaker's clock stands for.
    pub fn instant_of(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// A new session starts: its generations restart (above the held one), so nothing from the old session is a valid base
    /// for a delta or renewal, and nothing it sent yet can be echoed. What is held keeps being announced
    /// until its lease runs out; echoes keep referring to the same process clock.
    pub fn begin_session(&mut self) {
        self.generation = 0;
        self.max_sent_ms = 0;
    }

    /// The session with the controller was lost at `now` (rule 7). `hold` is the controller-loss hold when
    /// the controller's side closed or reset the stream, `None` for any other ending. The hold applies
    /// only once per loss (the first loss after a snapshot), only if the lease still runs, and only if the
    /// session was healthy: the newest lease echo is younger than lease/2, i.e. the controller had heard
    /// from us within lease/2 and we had heard that back (the controller's own silence threshold, rule 5;
    /// heartbeats and renewals each come every lease/5). Receipt time says nothing: renewals buffered
    /// during a partition may arrive late, with an old echo. Then the deadline becomes
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
        let echo_age = self
            .newest_echo_ms
            .map(|echo| now.saturating_duration_since(self.instant_of(echo)));
        let healthy = match (echo_age, self.lease) {
            (Some(age), Some(lease)) => age < lease / 2,
            _ => false,
        };
        if !healthy {
            return Loss::Silent { echo_age };
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

    /// Applies a snapshot: it replaces everything and, being the applied generation afterwards, its lease
    /// extends the deadline (step 3).
    /// It also ends a controller-loss hold: normal lease rules apply again (addresses not in the set stop
    /// at once; a set whose lease extends nothing leaves only the lease deadline from before the loss).
    pub fn apply_set(&mut self, set: &AssignmentSet) -> Applied {
        self.hold_until = None;
        self.loss_handled = false;
        self.assignments.clear();
        self.rejected.clear();
        for assignment in &set.assignments {
            self.upsert(assignment);
        }
        self.generation = set.generation;
        self.held_generation = set.generation;
        Applied::Snapshot {
            generation: set.generation,
            lease: self.extend(set.lease.as_ref()),
        }
    }

    /// Applies a delta if its base is the applied generation; otherwise ignores it. Removed addresses stop
    /// at once, whatever its lease.
    pub fn apply_delta(&mut self, delta: &AssignmentDelta) -> Applied {
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
        Applied::Delta {
            generation: delta.generation,
            lease: self.extend(delta.lease.as_ref()),
        }
    }

    /// Applies a renewal: its lease counts only for the applied generation.
    pub fn apply_renewal(&mut self, renewal: &LeaseRenewal) -> Applied {
        if self.generation == 0 || renewal.generation != self.generation {
            return Applied::RenewalIgnored {
                generation: renewal.generation,
                applied: self.generation,
            };
        }
        Applied::Renewed {
            lease: self.extend(renewal.lease.as_ref()),
        }
    }

    /// Forgets everything (after a graceful leave or when stopping).
    pub fn clear(&mut self) {
        self.assignments.clear();
        self.rejected.clear();
        self.lease_deadline = None;
        self.hold_until = None;
    }

    /// Rule 3: deadline = max(deadline, epoch + echo_ms + valid_for_ms), for a lease whose echo is
    /// something this session sent. A message without a lease leaves the timer alone.
    fn extend(&mut self, lease: Option<&Lease>) -> LeaseOutcome {
        let Some(lease) = lease else {
            return LeaseOutcome::Absent;
        };
        let valid_for = Duration::from_millis(u64::from(lease.valid_for_ms));
        self.lease = Some(valid_for);
        if lease.echo_ms == 0 {
            return LeaseOutcome::ZeroEcho;
        }
        if lease.echo_ms > self.max_sent_ms {
            return LeaseOutcome::FutureEcho {
                echo_ms: lease.echo_ms,
                max_sent_ms: self.max_sent_ms,
            };
        }
        self.newest_echo_ms = Some(self.newest_echo_ms.unwrap_or(0).max(lease.echo_ms));
        let until = self.instant_of(lease.echo_ms) + valid_for;
        if self.lease_deadline.is_some_and(|d| d >= until) {
            return LeaseOutcome::NotLater { until };
        }
        self.lease_deadline = Some(until);
        LeaseOutcome::Extended { until }
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

    fn lease(ms: u32, echo_ms: u64) -> Option<Lease> {
        Some(Lease {
            valid_for_ms: ms,
            echo_ms,
        })
    }

    fn set(generation: u64, addresses: &[&str], ms: u32, echo_ms: u64) -> AssignmentSet {
        AssignmentSet {
            generation,
            assignments: addresses.iter().map(|a| assignment(a, &[])).collect(),
            lease: lease(ms, echo_ms),
        }
    }

    fn renewal(generation: u64, ms: u32, echo_ms: u64) -> LeaseRenewal {
        LeaseRenewal {
            generation,
            lease: lease(ms, echo_ms),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Holdings on a clock whose epoch is 1 s before the returned `t0`, and the stamp of a message sent at
    /// `t0` (the Hello of the session, echoed by the first set).
    fn start() -> (Holdings, Instant, u64) {
        let epoch = Instant::now();
        let mut h = Holdings::new(epoch);
        let t0 = epoch + ms(1000);
        let hello = h.stamp(t0);
        assert_eq!(hello, 1000);
        (h, t0, hello)
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
    fn stamps_count_milliseconds_from_the_epoch_and_are_never_zero() {
        let epoch = Instant::now();
        let mut h = Holdings::new(epoch);
        assert_eq!(h.stamp(epoch), 1);
        assert_eq!(h.stamp(epoch + Duration::from_micros(1999)), 1);
        assert_eq!(h.stamp(epoch + ms(2500)), 2500);
        assert_eq!(h.instant_of(2500), epoch + ms(2500));
    }

    #[test]
    fn a_snapshot_is_announced_until_its_echo_plus_its_lease() {
        let (mut h, t0, hello) = start();
        // However late it arrives, the lease counts from the echoed send time.
        assert_eq!(
            h.apply_set(&set(1, &["10.10.39.200", "fd10:10::99"], 1000, hello)),
            Applied::Snapshot {
                generation: 1,
                lease: LeaseOutcome::Extended {
                    until: t0 + ms(1000)
                }
            }
        );
        assert_eq!(h.applied_generation(), 1);
        assert_eq!(
            announced(&h, t0 + ms(999)),
            ["eth0/10.10.39.200", "eth0/fd10:10::99"]
        );
        assert!(announced(&h, t0 + ms(1000)).is_empty());
        assert!(!h.lease_valid(t0 + ms(1000)));
    }

    #[test]
    fn a_renewal_with_a_fresh_echo_extends_to_echo_plus_valid_for_exactly() {
        let (mut h, t0, hello) = start();
        h.apply_set(&set(3, &["10.10.39.200"], 1000, hello));
        // A heartbeat sent at +800 is echoed by the next renewal, received whenever.
        let heartbeat = h.stamp(t0 + ms(800));
        assert_eq!(
            h.apply_renewal(&renewal(3, 1000, heartbeat)),
            Applied::Renewed {
                lease: LeaseOutcome::Extended {
                    until: t0 + ms(1800)
                }
            }
        );
        assert_eq!(h.deadline(), Some(t0 + ms(1800)));
        assert_eq!(announced(&h, t0 + ms(1799)).len(), 1);
        assert!(announced(&h, t0 + ms(1800)).is_empty());
    }

    #[test]
    fn a_renewal_with_an_old_echo_extends_nothing() {
        let (mut h, t0, hello) = start();
        h.apply_set(&set(1, &["10.10.39.200"], 1000, hello));
        let before_partition = h.stamp(t0 + ms(200));
        let latest = h.stamp(t0 + ms(400));
        h.apply_renewal(&renewal(1, 1000, latest));
        assert_eq!(h.deadline(), Some(t0 + ms(1400)));
        // A partition: renewals the controller sent before it noticed arrive long after, echoing what it
        // had heard back then. They extend nothing, and a lapsed lease stays lapsed.
        for echo in [hello, before_partition, latest] {
            let late = h.apply_renewal(&renewal(1, 1000, echo));
            assert!(
                matches!(late, Applied::Renewed { lease: LeaseOutcome::NotLater { until } } if until <= t0 + ms(1400)),
                "{late:?}"
            );
            assert_eq!(h.deadline(), Some(t0 + ms(1400)));
            assert!(announced(&h, t0 + ms(3000)).is_empty());
        }
    }

    #[test]
    fn an_echo_of_zero_extends_nothing() {
        let (mut h, t0, hello) = start();
        assert_eq!(
            h.apply_set(&set(1, &["10.10.39.200"], 1000, 0)),
            Applied::Snapshot {
                generation: 1,
                lease: LeaseOutcome::ZeroEcho
            }
        );
        assert_eq!(h.deadline(), None);
        assert!(announced(&h, t0).is_empty());
        h.apply_renewal(&renewal(1, 1000, hello));
        assert_eq!(
            h.apply_renewal(&renewal(1, 60_000, 0)),
            Applied::Renewed {
                lease: LeaseOutcome::ZeroEcho
            }
        );
        assert_eq!(h.deadline(), Some(t0 + ms(1000)));
    }

    #[test]
    fn an_echo_from_the_future_extends_nothing_and_each_session_tracks_its_own_stamps() {
        let (mut h, t0, hello) = start();
        h.apply_set(&set(1, &["10.10.39.200"], 1000, hello));
        assert_eq!(
            h.apply_renewal(&renewal(1, 1000, hello + 1)),
            Applied::Renewed {
                lease: LeaseOutcome::FutureEcho {
                    echo_ms: hello + 1,
                    max_sent_ms: hello
                }
            }
        );
        assert_eq!(h.deadline(), Some(t0 + ms(1000)));
        // A new session has sent nothing yet: nothing can be echoed, not even the old session's stamps.
        h.begin_session();
        assert!(matches!(
            h.apply_set(&set(1, &["10.10.39.200"], 1000, hello)),
            Applied::Snapshot {
                lease: LeaseOutcome::FutureEcho { max_sent_ms: 0, .. },
                ..
            }
        ));
        // Its Hello is echoed; stamps keep counting on the same clock.
        let second_hello = h.stamp(t0 + ms(500));
        assert_eq!(second_hello, hello + 500);
        h.apply_set(&set(1, &["10.10.39.200"], 1000, second_hello));
        assert_eq!(h.deadline(), Some(t0 + ms(1500)));
    }

    #[test]
    fn a_set_or_delta_with_a_stale_echo_is_applied_but_gives_no_new_lease() {
        let (mut h, t0, hello) = start();
        h.apply_set(&set(1, &["10.10.39.200", "10.10.39.201"], 1000, hello));
        // A set without .200, echoing only the Hello: .200 stops at once, .201 only until the old deadline.
        assert_eq!(
            h.apply_set(&set(2, &["10.10.39.201"], 1000, hello)),
            Applied::Snapshot {
                generation: 2,
                lease: LeaseOutcome::NotLater {
                    until: t0 + ms(1000)
                }
            }
        );
        assert_eq!(announced(&h, t0 + ms(500)), ["eth0/10.10.39.201"]);
        assert_eq!(h.deadline(), Some(t0 + ms(1000)));
        assert!(announced(&h, t0 + ms(1000)).is_empty());
        // After the lapse, a stale delta still applies (generation, removals, additions) but answers nothing.
        let delta = AssignmentDelta {
            generation: 3,
            base_generation: 2,
            upserted: vec![assignment("10.10.39.202", &[])],
            removed: vec!["10.10.39.201".to_owned()],
            lease: lease(1000, hello),
        };
        assert!(matches!(
            h.apply_delta(&delta),
            Applied::Delta {
                generation: 3,
                lease: LeaseOutcome::NotLater { .. }
            }
        ));
        assert_eq!(h.applied_generation(), 3);
        assert_eq!(
            h.held().keys().map(ToString::to_string).collect::<Vec<_>>(),
            ["10.10.39.202"]
        );
        assert!(announced(&h, t0 + ms(1500)).is_empty());
        // A fresh echo brings the added address up.
        let heartbeat = h.stamp(t0 + ms(1500));
        h.apply_renewal(&renewal(3, 1000, heartbeat));
        assert_eq!(announced(&h, t0 + ms(1500)), ["eth0/10.10.39.202"]);
    }

    #[test]
    fn a_renewal_for_another_generation_does_not_extend_the_lease() {
        let (mut h, t0, hello) = start();
        h.apply_set(&set(3, &["10.10.39.200"], 1000, hello));
        let heartbeat = h.stamp(t0 + ms(500));
        assert_eq!(
            h.apply_renewal(&renewal(2, 60_000, heartbeat)),
            Applied::RenewalIgnored {
                generation: 2,
                applied: 3
            }
        );
        assert_eq!(h.deadline(), Some(t0 + ms(1000)));
    }

    #[test]
    fn a_lapsed_lease_comes_back_with_a_fresh_renewal() {
        let (mut h, t0, hello) = start();
        h.apply_set(&set(1, &["10.10.39.200"], 100, hello));
        let late = t0 + ms(500);
        assert!(announced(&h, late).is_empty());
        let heartbeat = h.stamp(late - ms(20));
        h.apply_renewal(&renewal(1, 100, heartbeat));
        assert_eq!(announced(&h, late), ["eth0/10.10.39.200"]);
        assert!(announced(&h, late + ms(80)).is_empty());
    }

    #[test]
    fn a_delta_on_the_applied_generation_upserts_removes_and_extends_the_lease() {
        let (mut h, t0, hello) = start();
        h.apply_set(&set(1, &["10.10.39.200", "10.10.39.201"], 1000, hello));
        let heartbeat = h.stamp(t0 + ms(900));
        let delta = AssignmentDelta {
            generation: 2,
            base_generation: 1,
            upserted: vec![assignment("10.10.39.202", &[])],
            removed: vec!["10.10.39.200".to_owned()],
            lease: lease(1000, heartbeat),
        };
        assert_eq!(
            h.apply_delta(&delta),
            Applied::Delta {
                generation: 2,
                lease: LeaseOutcome::Extended {
                    until: t0 + ms(1900)
                }
            }
        );
        assert_eq!(
            announced(&h, t0 + ms(1500)),
            ["eth0/10.10.39.201", "eth0/10.10.39.202"]
        );
    }

    #[test]
    fn a_delta_on_another_base_is_ignored_and_changes_nothing() {
        let (mut h, t0, hello) = start();
        h.apply_set(&set(5, &["10.10.39.200"], 1000, hello));
        let delta = AssignmentDelta {
            generation: 7,
            base_generation: 6,
            upserted: vec![assignment("10.10.39.202", &[])],
            removed: vec!["10.10.39.200".to_owned()],
            lease: lease(60_000, hello),
        };
        assert_eq!(
            h.apply_delta(&delta),
            Applied::DeltaIgnored {
                base: 6,
                applied: 5
            }
        );
        assert_eq!(h.applied_generation(), 5);
        assert_eq!(announced(&h, t0), ["eth0/10.10.39.200"]);
        assert_eq!(h.deadline(), Some(t0 + ms(1000)));
    }

    #[test]
    fn an_empty_snapshot_stops_everything_at_once() {
        let (mut h, t0, hello) = start();
        h.apply_set(&set(1, &["10.10.39.200"], 1000, hello));
        h.apply_set(&set(2, &[], 1000, hello));
        assert!(announced(&h, t0).is_empty());
        assert!(h.held().is_empty());
    }

    #[test]
    fn a_new_session_keeps_announcing_but_accepts_no_delta_or_renewal_before_its_snapshot() {
        let (mut h, t0, hello) = start();
        h.apply_set(&set(4, &["10.10.39.200"], 1000, hello));
        h.begin_session();
        let second_hello = h.stamp(t0 + ms(10));
        assert_eq!(h.applied_generation(), 0);
        assert_eq!(h.held_generation(t0), 4);
        assert_eq!(announced(&h, t0), ["eth0/10.10.39.200"]);
        // Generation 4 of the new session is not the old generation 4.
        assert!(matches!(
            h.apply_renewal(&renewal(4, 60_000, second_hello)),
            Applied::RenewalIgnored { .. }
        ));
        let delta = AssignmentDelta {
            generation: 5,
            base_generation: 4,
            ..Default::default()
        };
        assert!(matches!(
            h.apply_delta(&delta),
            Applied::DeltaIgnored { .. }
        ));
        assert_eq!(h.held_generation(t0 + Duration::from_secs(2)), 0);
    }

    #[test]
    fn missing_and_ineligible_interfaces_are_problems_and_the_rest_is_served() {
        let (mut h, t0, hello) = start();
        h.apply_set(&AssignmentSet {
            generation: 1,
            assignments: vec![
                assignment("10.10.39.200", &["eth0", "eth7"]),
                assignment("10.10.39.201", &["lo"]),
                assignment("not-an-ip", &[]),
            ],
            lease: lease(1000, hello),
        });
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
        let (mut h, t0, hello) = start();
        h.apply_set(&set(1, &["10.10.39.200"], 0, hello));
        assert!(announced(&h, t0).is_empty());
    }

    const HOLD: Duration = Duration::from_secs(15);

    /// A heartbeat sent at `sent` and echoed by a renewal of `generation`, which must extend the lease.
    fn renew(h: &mut Holdings, generation: u64, lease_ms: u32, sent: Instant) {
        let echo = h.stamp(sent);
        assert!(matches!(
            h.apply_renewal(&renewal(generation, lease_ms, echo)),
            Applied::Renewed {
                lease: LeaseOutcome::Extended { .. }
            }
        ));
    }

    #[test]
    fn losing_a_healthy_session_to_the_controller_holds_until_loss_plus_hold() {
        let (mut h, t0, hello) = start();
        h.apply_set(&set(1, &["10.10.39.200"], 1500, hello));
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
        let (mut h, t0, hello) = start();
        h.apply_set(&set(1, &["10.10.39.200"], 10_000, hello));
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
        let (mut h, t0, hello) = start();
        // A long lease, so that it still runs when the partition is finally noticed.
        h.apply_set(&set(1, &["10.10.39.200"], 20_000, hello));
        renew(&mut h, 1, 20_000, t0 + ms(4000));
        // No echo for half a lease (two renewals missed), then the TCP/HTTP2 keepalive gives up on the
        // stream while the lease still runs.
        let errored = t0 + ms(4000) + ms(10_000);
        let mut silent = h.clone();
        silent.begin_session();
        let loss = silent.controller_lost(errored, Some(HOLD));
        assert_eq!(
            loss,
            Loss::Silent {
                echo_age: Some(ms(10_000))
            }
        );
        assert!(silent.lease_valid(errored));
        assert_eq!(silent.deadline(), Some(t0 + ms(24_000)));
        assert!(announced(&silent, t0 + ms(24_000)).is_empty());
        // The threshold is lease/2: with an echo 1 ms younger, the session counts as healthy.
        assert!(matches!(
            h.controller_lost(errored - ms(1), Some(HOLD)),
            Loss::Hold { .. }
        ));
    }

    #[test]
    fn stale_renewals_arriving_after_a_partition_do_not_make_the_session_healthy() {
        let (mut h, t0, hello) = start();
        h.apply_set(&set(1, &["10.10.39.200"], 1500, hello));
        // Partitioned from +100: our heartbeats are stamped but never reach the controller.
        for at in [300, 600, 900] {
            h.stamp(t0 + ms(at));
        }
        // The partition heals at +1200: renewals buffered in TCP arrive at once, echoing the Hello (the
        // newest message the controller had), then the controller's side resets the stream while the
        // lease still runs. Messages arrived just now, but the newest echo is 1.25 s old: no hold.
        for _ in 0..3 {
            assert!(matches!(
                h.apply_renewal(&renewal(1, 1500, hello)),
                Applied::Renewed {
                    lease: LeaseOutcome::NotLater { .. }
                }
            ));
        }
        let reset = t0 + ms(1250);
        h.begin_session();
        assert_eq!(
            h.controller_lost(reset, Some(HOLD)),
            Loss::Silent {
                echo_age: Some(ms(1250))
            }
        );
        assert_eq!(h.deadline(), Some(t0 + ms(1500)));
        assert!(announced(&h, t0 + ms(1500)).is_empty());
    }

    #[test]
    fn a_lapsed_lease_is_not_brought_back_by_a_loss_and_our_own_endings_do_not_hold() {
        let (mut h, t0, hello) = start();
        h.apply_set(&set(1, &["10.10.39.200"], 1000, hello));
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
        let (mut h, t0, hello) = start();
        h.apply_set(&set(1, &["10.10.39.200"], 1500, hello));
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
            let echo = h.stamp(at);
            assert!(matches!(
                h.apply_renewal(&renewal(1, 1500, echo)),
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
        let (mut h, t0, hello) = start();
        h.apply_set(&set(1, &["10.10.39.200", "10.10.39.201"], 1500, hello));
        let lost = t0 + ms(100);
        h.begin_session();
        assert!(matches!(
            h.controller_lost(lost, Some(HOLD)),
            Loss::Hold { .. }
        ));
        // The new leader's first set keeps .201 only, with normal lease rules.
        let new = lost + ms(5000);
        let second_hello = h.stamp(new);
        h.apply_set(&set(1, &["10.10.39.201"], 1500, second_hello));
        assert_eq!(announced(&h, new), ["eth0/10.10.39.201"]);
        assert_eq!(h.hold_until(new), None);
        assert_eq!(h.deadline(), Some(new + ms(1500)));
        assert!(announced(&h, new + ms(1500)).is_empty());
        // An empty set stops everything at once, hold or not.
        let mut emptied = h.clone();
        emptied.begin_session();
        emptied.controller_lost(new + ms(100), Some(HOLD));
        let third_hello = emptied.stamp(new + ms(150));
        emptied.apply_set(&set(1, &[], 1500, third_hello));
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
    fn a_new_sessions_set_without_a_fresh_lease_falls_back_to_the_lease_from_before_the_loss() {
        let (mut h, t0, hello) = start();
        h.apply_set(&set(1, &["10.10.39.200"], 1500, hello));
        h.controller_lost(t0 + ms(100), Some(HOLD));
        h.begin_session();
        let second_hello = h.stamp(t0 + ms(2900));
        let mut no_lease = set(1, &["10.10.39.200"], 0, 0);
        no_lease.lease = None;
        assert_eq!(
            h.apply_set(&no_lease),
            Applied::Snapshot {
                generation: 1,
                lease: LeaseOutcome::Absent
            }
        );
        assert_eq!(h.deadline(), Some(t0 + ms(1500)));
        assert!(announced(&h, t0 + ms(3000)).is_empty());
        // Same with a lease that echoes the old session's Hello: it ended long ago.
        let mut stale = h.clone();
        stale.apply_set(&set(2, &["10.10.39.200"], 1500, hello));
        assert_eq!(stale.deadline(), Some(t0 + ms(1500)));
        // The fresh echo brings it back.
        h.apply_set(&set(2, &["10.10.39.200"], 1500, second_hello));
        assert_eq!(announced(&h, t0 + ms(3000)), ["eth0/10.10.39.200"]);
    }
}
