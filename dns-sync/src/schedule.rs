//! When dns-sync syncs: the event loop's decisions as a plain state machine (changes, leadership,
//! results and the time in; whether a sync is due out), so each rule is unit-tested and the loop in
//! `controller.rs` only does the I/O.
//!
//! Where a rule belongs: a new trigger is a call to [`Schedule::changed`]; when a failed sync is retried,
//! and how it backs off, is [`Schedule::failed`] and [`Schedule::wake_at`].

use std::time::Duration;

use ops::backoff::Backoff;
use tokio::time::Instant;

/// A failed sync is retried after this long at first...
const RETRY_MIN: Duration = Duration::from_secs(1);
/// ...doubling up to this.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The sync schedule.
#[derive(Debug)]
pub(crate) struct Schedule {
    /// When the first change not yet synced was seen.
    pending: Option<Instant>,
    leader: bool,
    /// A failed sync waits until then.
    retry_at: Option<Instant>,
    backoff: Backoff,
}

impl Schedule {
    /// A schedule for a replica that leads (or not) from the start.
    pub(crate) fn new(leader: bool) -> Self {
        Self {
            pending: None,
            leader,
            retry_at: None,
            backoff: Backoff::new(RETRY_MIN, RETRY_MAX),
        }
    }

    /// Something changed at `at` (a watch event, the periodic resync).
    pub(crate) fn changed(&mut self, at: Instant) {
        self.pending = Some(self.pending.map_or(at, |p| p.min(at)));
    }

    /// Leadership changed: a new leader syncs at once; a replica that stopped leading syncs nothing.
    pub(crate) fn leading(&mut self, leader: bool, now: Instant) {
        self.leader = leader;
        if leader {
            self.changed(now);
        }
    }

    /// Whether a sync is due now (then the loop gathers what else arrives within the debounce window,
    /// and calls [`Schedule::start`]).
    pub(crate) fn due(&self) -> bool {
        self.leader && self.pending.is_some() && self.retry_at.is_none()
    }

    /// A sync starts: returns when the first change it takes in was seen.
    pub(crate) fn start(&mut self) -> Option<Instant> {
        if !self.due() {
            return None;
        }
        self.pending.take()
    }

    /// The sync succeeded.
    pub(crate) fn succeeded(&mut self) {
        self.backoff.reset();
    }

    /// The sync failed: its changes wait for the retry; returns how long that is.
    pub(crate) fn failed(&mut self, first_change: Instant, now: Instant) -> Duration {
        self.changed(first_change);
        let delay = self.backoff.next_delay();
        self.retry_at = Some(now + delay);
        delay
    }

    /// When [`Schedule::tick`] must be called, if ever.
    pub(crate) fn wake_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Time passed: the retry may be due.
    pub(crate) fn tick(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_synced_once_and_measured_from_the_first_of_a_burst() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(true);
        assert!(!schedule.due());
        schedule.changed(t0 + Duration::from_millis(3));
        schedule.changed(t0 + Duration::from_millis(1));
        assert!(schedule.due());
        assert_eq!(schedule.start(), Some(t0 + Duration::from_millis(1)));
        schedule.succeeded();
        assert!(!schedule.due());
        assert_eq!(schedule.start(), None);
    }

    #[test]
    fn a_standby_syncs_nothing_and_a_new_leader_syncs_at_once() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(false);
        schedule.changed(t0);
        assert!(!schedule.due(), "not leading");
        schedule.leading(true, t0 + Duration::from_secs(1));
        assert_eq!(schedule.start(), Some(t0));
        schedule.leading(true, t0 + Duration::from_secs(2));
        assert!(schedule.due(), "leadership regained: sync everything again");
        schedule.leading(false, t0 + Duration::from_secs(3));
        assert!(!schedule.due());
    }

    #[test]
    fn a_failed_sync_is_retried_with_a_doubling_delay_that_resets_after_a_success() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(true);
        let mut now = t0;
        schedule.changed(now);
        for expected in [1, 2, 4, 8, 16, 30, 30] {
            let first = schedule.start().unwrap();
            assert_eq!(first, t0, "the retry keeps the first change's time");
            let delay = schedule.failed(first, now);
            assert_eq!(delay, Duration::from_secs(expected));
            schedule.changed(now + Duration::from_millis(1));
            assert!(!schedule.due(), "changes wait for the retry");
            assert_eq!(schedule.wake_at(), Some(now + delay));
            now += delay;
            schedule.tick(now);
            assert!(schedule.due());
        }
        schedule.start();
        schedule.succeeded();
        schedule.changed(now);
        let first = schedule.start().unwrap();
        assert_eq!(schedule.failed(first, now), RETRY_MIN);
    }
}
