//! When the leader runs a pass, over how much, and when its API writes go out: the event loop's
//! decisions as a plain state machine. Changes and the time go in; what to do comes out. The loop in
//! `controller.rs` only does the I/O around it.
//!
//! Where a rule belongs:
//! - a new kind of change that should cause a pass: a [`Change`] and its arm in [`Schedule::change`];
//! - which changes may run a pass while writes are in flight: [`Schedule::next_pass`];
//! - when failed writes are retried, and how they back off: [`Schedule::written`], [`Schedule::tick`];
//! - the periodic consistency check: [`Schedule::tick`] and [`Order::Full`]'s `check`.

use std::collections::BTreeSet;
use std::time::Duration;

use ops::backoff::Backoff;
use tokio::time::Instant;

use crate::plan::Coverage;
use crate::request::ServiceKey;

/// Failed writes are retried from this long after...
const RETRY_MIN: Duration = Duration::from_millis(500);
/// ...doubling up to this.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Something that calls for a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// One Service changed, or the EndpointSlices of one.
    Service(ServiceKey),
    /// Speakers acknowledged different addresses.
    Announced,
    /// What only a full pass takes in: a pool, a Node, a Namespace, the legacy ConfigMap, a relist.
    Everything,
    /// A speaker came or went, or the settle window after a start ended: a full pass that moves
    /// addresses between speakers, which runs even while writes are in flight.
    Speakers,
}

/// How much the next pass looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Order {
    /// Everything. `check`: nothing asked for it but the clock, so it should change nothing.
    Full {
        /// Whether this is the periodic consistency check.
        check: bool,
    },
    /// Only these Services (and what the speakers acknowledge).
    Services(BTreeSet<ServiceKey>),
}

/// A pass to run now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pass {
    /// Its scope.
    pub(crate) order: Order,
    /// When the first change it takes in was seen (for the change-to-status metric).
    pub(crate) first_change: Instant,
    /// Whether speakers acknowledged something since the last pass.
    pub(crate) acknowledgements: bool,
}

/// Changes not yet taken in by a pass.
#[derive(Debug, Default)]
struct Dirty {
    since: Option<Instant>,
    everything: bool,
    services: BTreeSet<ServiceKey>,
    acknowledgements: bool,
}

impl Dirty {
    fn note(&mut self, at: Instant) {
        self.since = Some(self.since.map_or(at, |s| s.min(at)));
    }

    fn absorb(&mut self, other: Self) {
        if let Some(at) = other.since {
            self.note(at);
        }
        self.everything |= other.everything;
        self.services.extend(other.services);
        self.acknowledgements |= other.acknowledgements;
    }
}

/// The leader's pass and write schedule.
#[derive(Debug)]
pub(crate) struct Schedule {
    dirty: Dirty,
    /// A pass is due even while writes are in flight.
    urgent: bool,
    /// The consistency check is due (since then).
    check_due: Option<Instant>,
    next_check: Option<Instant>,
    check_every: Duration,
    /// A batch of writes is in flight.
    writing: bool,
    /// Failed writes wait until then.
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// What passes decided while writes could not start: passed again once they can.
    unwritten: Dirty,
}

impl Schedule {
    /// A schedule whose consistency check runs every `check_every` while leading.
    pub(crate) fn new(check_every: Duration) -> Self {
        Self {
            dirty: Dirty::default(),
            urgent: false,
            check_due: None,
            next_check: None,
            check_every,
            writing: false,
            retry_at: None,
            backoff: Backoff::new(RETRY_MIN, RETRY_MAX),
            unwritten: Dirty::default(),
        }
    }

    /// Leadership begins: everything is to be passed, and checked periodically from now on.
    pub(crate) fn start_leading(&mut self, now: Instant) {
        *self = Self::new(self.check_every);
        self.next_check = Some(now + self.check_every);
        self.change(Change::Everything, now);
    }

    /// Leadership ends (the loop aborts the batch in flight): nothing is due any more.
    pub(crate) fn stop_leading(&mut self) {
        *self = Self::new(self.check_every);
    }

    /// Takes in a change seen `at`.
    pub(crate) fn change(&mut self, change: Change, at: Instant) {
        self.dirty.note(at);
        match change {
            Change::Service(key) => {
                self.dirty.services.insert(key);
            }
            Change::Announced => self.dirty.acknowledgements = true,
            Change::Everything => self.dirty.everything = true,
            Change::Speakers => {
                self.dirty.everything = true;
                self.urgent = true;
            }
        }
    }

    /// The pass to run now, if any. While writes are in flight only an urgent pass runs: the others
    /// mostly follow the echoes of those writes, and would only be deferred.
    pub(crate) fn next_pass(&mut self) -> Option<Pass> {
        if self.writing && !self.urgent {
            return None;
        }
        if self.dirty.since.is_none() {
            let since = self.check_due.take()?;
            return Some(Pass {
                order: Order::Full { check: true },
                first_change: since,
                acknowledgements: true,
            });
        }
        let dirty = std::mem::take(&mut self.dirty);
        self.urgent = false;
        let first_change = dirty.since?;
        let order = if dirty.everything {
            // It covers the check, but what it changes is not drift.
            self.check_due = None;
            Order::Full { check: false }
        } else {
            Order::Services(dirty.services)
        };
        Some(Pass {
            order,
            first_change,
            acknowledgements: dirty.acknowledgements,
        })
    }

    /// Whether a pass's writes may start now (else [`Schedule::defer`] them).
    pub(crate) fn may_write(&self) -> bool {
        !self.writing && self.retry_at.is_none()
    }

    /// A batch of writes started.
    pub(crate) fn writing_started(&mut self) {
        self.writing = true;
    }

    /// A pass covering `coverage` could not write: it is passed again once writes may start.
    pub(crate) fn defer(&mut self, coverage: &Coverage, first_change: Instant) {
        self.unwritten.note(first_change);
        match coverage {
            Coverage::All => self.unwritten.everything = true,
            Coverage::Only(keys) => self.unwritten.services.extend(keys.iter().cloned()),
        }
    }

    /// The batch in flight is done: the Services whose writes failed, and whether other writes (pool
    /// statuses) failed. Returns how long until the retry, if any failed.
    pub(crate) fn written(
        &mut self,
        failed: BTreeSet<ServiceKey>,
        others_failed: bool,
        first_change: Instant,
        now: Instant,
    ) -> Option<Duration> {
        self.writing = false;
        let retry = if failed.is_empty() && !others_failed {
            self.backoff.reset();
            None
        } else {
            let delay = self.backoff.next_delay();
            self.retry_at = Some(now + delay);
            self.unwritten.note(first_change);
            self.unwritten.services.extend(failed);
            Some(delay)
        };
        if self.retry_at.is_none() {
            self.release_unwritten();
        }
        retry
    }

    /// When [`Schedule::tick`] must next be called, if ever.
    pub(crate) fn wake_at(&self) -> Option<Instant> {
        match (self.retry_at, self.next_check) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time passed: a retry or the consistency check may be due.
    pub(crate) fn tick(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            if !self.writing {
                self.release_unwritten();
            }
        }
        if let Some(at) = self.next_check
            && at <= now
        {
            self.check_due.get_or_insert(now);
            self.next_check = Some(now + self.check_every);
        }
    }

    fn release_unwritten(&mut self) {
        let unwritten = std::mem::take(&mut self.unwritten);
        self.dirty.absorb(unwritten);
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
