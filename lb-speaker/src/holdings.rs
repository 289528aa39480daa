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
    deadline: Option<Instant>,
    lease: Option<Duration>,
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

    /// The lease deadline, if a lease was ever received.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The duration of the last lease received (heartbeats go every lease/5).
    pub fn lease_period(&self) -> Option<Duration> {
        self.lease
    }

    /// Whether the lease is running at `now`.
    pub fn lease_valid(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now < d)
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
    pub fn apply_set(&mut self, set: &AssignmentSet, now: Instant) -> Applied {
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
        self.deadline = None;
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
            self.deadline = Some(now + valid_for);
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
}
