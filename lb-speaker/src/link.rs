//! The speaker's link with the controller, as pure logic: when to dial, when to heartbeat, how to leave
//! gracefully and when to stop (`announce.proto`: heartbeats every lease/5, graceful Leaving, reconnect
//! with backoff, rule 7's losses).
//!
//! [`Link`] is a state machine fed with what happened ([`Input`]: shutdown was asked for, a dial
//! finished, the session ended, a controller message was applied, the speaker refreshed what it
//! announces, time passed) and the current time; it answers with what to do ([`Action`]: dial, send
//! Leaving or a heartbeat, close, account for a lost session, notes worth a log line) and tells when it
//! next needs to be woken ([`Link::next_wake`]). It does no I/O and reads no clock, so every rule is
//! tested directly; `speaker.rs` waits on the stream, the dial and the timers, and carries the actions
//! out.
//!
//! Two things are tracked apart: the session ([`Session`]: waiting to dial, dialing, connected) and the
//! leave ([`Phase`]: running, leaving until a deadline, stopped), since a node may have to leave with no
//! session at all — it then dials again to hand its addresses over.

use std::fmt;
use std::time::Duration;

use ops::backoff::Backoff;
use tokio::time::Instant;

use crate::control;

/// Heartbeat period before any lease told us better.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// Heartbeats never come more often than this, however short the lease.
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);

/// What happened, for [`Link::feed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// Shutdown was asked for (fed once: the loop stops listening for it while leaving).
    Shutdown,
    /// The dial opened a session (Hello and Report are queued on it).
    Opened,
    /// The dial failed with this error.
    DialFailed(String),
    /// The session ended.
    Ended(Ending),
    /// A controller message was handled (and what it removed is no longer answered for).
    Handled {
        /// It was a snapshot or a delta, applied or not: the controller waits for an acknowledgement.
        acknowledge: bool,
        /// It was a snapshot or a delta that left nothing held (nor rejected).
        emptied: bool,
        /// The duration of the last lease received, if any.
        lease: Option<Duration>,
    },
    /// The speaker recomputed what it answers for: whether it announces anything.
    Refreshed {
        /// Some address is announced on some interface.
        announcing: bool,
    },
    /// Time passed (a timer of [`Link::next_wake`] or [`Link::leave_deadline`] fired).
    Tick,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The controller ended the stream.
    Closed,
    /// The stream failed (an error status, a reset connection); the error with its chain.
    Broke(String),
    /// A message could not be queued: the queue is closed, the stream's transport is gone (the
    /// connection was reset).
    QueueClosed(String),
    /// A message could not be queued: the queue is full, the controller stopped reading, which is no
    /// sign that its side ended anything.
    QueueFull(String),
}

impl Ending {
    /// Whether the controller's side closed or reset the stream (end of stream, an error status, a reset
    /// connection), as opposed to an ending of our own making (our queue to it stuck). Rule 7: a healthy
    /// session lost to the controller's side holds what we announce for `--controller-loss-hold`;
    /// anything else keeps only the lease.
    pub(crate) fn by_controller(&self) -> bool {
        !matches!(self, Self::QueueFull(_))
    }

    /// Whether the stream itself ended (as opposed to a send failing).
    fn is_stream_end(&self) -> bool {
        matches!(self, Self::Closed | Self::Broke(_))
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("the controller closed the session"),
            Self::Broke(error) => write!(f, "the session broke: {error}"),
            Self::QueueClosed(error) | Self::QueueFull(error) => {
                write!(f, "cannot queue a message: {error}")
            }
        }
    }
}

/// What the speaker must do after feeding the link, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Dial the controller and open a session with Hello and Report queued (step 1); feed
    /// [`Input::Opened`] or [`Input::DialFailed`] when done.
    Connect,
    /// Queue Leaving on the session.
    SendLeaving,
    /// Queue a heartbeat acknowledging the applied generation.
    SendHeartbeat,
    /// Close our half of the stream after the final acknowledgement and give the controller a moment
    /// to close its half, so the acknowledgement is on the wire before the process exits.
    Close,
    /// The session is gone: forget it and account for the loss (rule 7, a log line, metrics). The next
    /// dial is in `retry_in`.
    Lost {
        /// How it ended.
        ending: Ending,
        /// The reconnect backoff's delay.
        retry_in: Duration,
    },
    /// Something worth a log line (or a metric).
    Note(Note),
}

/// Log-worthy moments of the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Note {
    /// Stopping with a session: it is told that this node leaves.
    Leaving,
    /// Stopping with no session while addresses are still announced: dialing again to hand them over.
    HandingOver,
    /// A session opened while stopping: it is told that this node leaves.
    ReconnectedWhileLeaving,
    /// A dial failed; the next in `retry_in`.
    DialFailed {
        /// The dial's error.
        error: String,
        /// The reconnect backoff's delay.
        retry_in: Duration,
    },
    /// Stopped at once: no session, and nothing announced to hand over.
    NothingToHandOver,
    /// Stopped: the controller moved every address away.
    MovedAway,
    /// Stopped: no session, and nothing left to hand over.
    NothingLeft,
    /// Stopped: the controller did not move everything away within `--leave-timeout`.
    LeaveTimedOut,
}

/// The session with the controller, as far as the link is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Session {
    /// No session; the next dial is due at `next_attempt` (if one is called for).
    Idle {
        /// When the backoff allows the next dial.
        next_attempt: Instant,
    },
    /// A dial is under way.
    Connecting,
    /// A session is open.
    Connected {
        /// When the next heartbeat is due.
        next_heartbeat: Instant,
    },
}

/// Whether the speaker runs, leaves or has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Serving until shutdown is asked for.
    Running,
    /// Shutdown was asked for: handing the addresses over until `deadline` (`--leave-timeout`).
    Leaving {
        /// When the leave is cut short.
        deadline: Instant,
    },
    /// Done: the loop ends.
    Stopped,
}

/// The link state machine (see the module documentation).
#[derive(Debug)]
pub(crate) struct Link {
    session: Session,
    phase: Phase,
    leave_timeout: Duration,
    /// Reconnect backoff (rule 7), reset once a session opened.
    backoff: Backoff,
    /// The duration of the last lease received: heartbeats go every lease/5.
    lease: Option<Duration>,
    /// Whether the speaker announced anything at its last refresh.
    announcing: bool,
}

impl Link {
    /// A link with no session that dials at once, leaving within `leave_timeout` once shutdown is asked
    /// for.
    pub(crate) fn new(leave_timeout: Duration, now: Instant) -> Self {
        Self {
            session: Session::Idle { next_attempt: now },
            phase: Phase::Running,
            leave_timeout,
            backoff: control::reconnect_backoff(),
            lease: None,
            announcing: false,
        }
    }

    /// Whether shutdown was asked for (leaving or stopped): it is not fed again.
    pub(crate) fn is_leaving(&self) -> bool {
        self.phase != Phase::Running
    }

    /// Whether the speaker is done: the loop ends.
    pub(crate) fn is_stopped(&self) -> bool {
        self.phase == Phase::Stopped
    }

    /// When the graceful leave is cut short, while leaving. The loop waits for it before anything else,
    /// so that once it passed no other input is taken in first.
    pub(crate) fn leave_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Leaving { deadline } => Some(deadline),
            Phase::Running | Phase::Stopped => None,
        }
    }

    /// When [`Input::Tick`] must next be fed, if ever.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        let session = match self.session {
            Session::Idle { next_attempt } if self.may_connect() => Some(next_attempt),
            Session::Connected { next_heartbeat } if !self.is_stopped() => Some(next_heartbeat),
            Session::Idle { .. } | Session::Connecting | Session::Connected { .. } => None,
        };
        match (session, self.leave_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes in `input` at `now`; returns what to do, in order.
    pub(crate) fn feed(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.is_stopped() {
            // A send that fails while the last actions are carried out still lost the session: it is
            // accounted for like any other loss.
            if let Input::Ended(ending) = input {
                let retry_in = self.backoff.next_delay();
                out.push(Action::Lost { ending, retry_in });
            }
            return out;
        }
        match input {
            Input::Shutdown => self.shutdown(now, &mut out),
            Input::Opened => self.opened(now, &mut out),
            Input::DialFailed(error) => {
                let retry_in = self.retry_later(now);
                out.push(Action::Note(Note::DialFailed { error, retry_in }));
            }
            Input::Ended(ending) => self.ended(ending, now, &mut out),
            Input::Handled {
                acknowledge,
                emptied,
                lease,
            } => self.handled(acknowledge, emptied, lease, now, &mut out),
            Input::Refreshed { announcing } => {
                self.announcing = announcing;
                if self.is_leaving() && !self.is_connected() && !announcing {
                    self.stop(Note::NothingLeft, &mut out);
                }
            }
            Input::Tick => self.tick(now, &mut out),
        }
        out
    }

    fn is_connected(&self) -> bool {
        matches!(self.session, Session::Connected { .. })
    }

    /// Whether a dial is called for: always while running; while leaving, only to hand over what this
    /// node still announces.
    fn may_connect(&self) -> bool {
        match self.phase {
            Phase::Running => true,
            Phase::Leaving { .. } => self.announcing,
            Phase::Stopped => false,
        }
    }

    /// Heartbeats go every lease/5 (at least [`MIN_HEARTBEAT`] apart), every [`DEFAULT_HEARTBEAT`]
    /// before any lease told us better.
    fn heartbeat_period(&self) -> Duration {
        self.lease
            .map_or(DEFAULT_HEARTBEAT, |lease| (lease / 5).max(MIN_HEARTBEAT))
    }

    fn stop(&mut self, why: Note, out: &mut Vec<Action>) {
        self.phase = Phase::Stopped;
        out.push(Action::Note(why));
    }

    /// No session until the backoff's next delay has passed; returns that delay.
    fn retry_later(&mut self, now: Instant) -> Duration {
        let delay = self.backoff.next_delay();
        self.session = Session::Idle {
            next_attempt: now + delay,
        };
        delay
    }

    fn send_heartbeat(&mut self, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::SendHeartbeat);
        self.session = Session::Connected {
            next_heartbeat: now + self.heartbeat_period(),
        };
    }

    fn shutdown(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.is_leaving() {
            return;
        }
        if !self.is_connected() && !self.announcing {
            self.stop(Note::NothingToHandOver, out);
            return;
        }
        self.phase = Phase::Leaving {
            deadline: now + self.leave_timeout,
        };
        if self.is_connected() {
            out.push(Action::Note(Note::Leaving));
            out.push(Action::SendLeaving);
        } else {
            // The session is down (a controller leader change, say) while this node still answers for
            // addresses: stopping now would leave them unanswered until the controller sees the node
            // gone and its lease run out. Reconnect and leave properly instead, announcing meanwhile.
            out.push(Action::Note(Note::HandingOver));
        }
    }

    fn opened(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.backoff.reset();
        self.session = Session::Connected {
            next_heartbeat: now + self.heartbeat_period(),
        };
        if self.is_leaving() {
            out.push(Action::Note(Note::ReconnectedWhileLeaving));
            out.push(Action::SendLeaving);
        }
    }

    fn ended(&mut self, ending: Ending, now: Instant, out: &mut Vec<Action>) {
        let stream_ended = ending.is_stream_end();
        let retry_in = self.retry_later(now);
        out.push(Action::Lost { ending, retry_in });
        // A failed send is checked after the next refresh, like everything else; an ended stream at
        // once, against what was announced before it ended.
        if stream_ended && self.is_leaving() && !self.announcing {
            self.phase = Phase::Stopped;
        }
    }

    fn handled(
        &mut self,
        acknowledge: bool,
        emptied: bool,
        lease: Option<Duration>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.lease = lease;
        if acknowledge && self.is_connected() {
            self.send_heartbeat(now, out);
        }
        if emptied && self.is_leaving() {
            self.stop(Note::MovedAway, out);
            if self.is_connected() {
                out.push(Action::Close);
            }
        }
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self
            .leave_deadline()
            .is_some_and(|deadline| now >= deadline)
        {
            self.stop(Note::LeaveTimedOut, out);
            return;
        }
        match self.session {
            Session::Idle { next_attempt } if now >= next_attempt && self.may_connect() => {
                self.session = Session::Connecting;
                out.push(Action::Connect);
            }
            Session::Connected { next_heartbeat } if now >= next_heartbeat => {
                self.send_heartbeat(now, out);
            }
            Session::Idle { .. } | Session::Connecting | Session::Connected { .. } => {}
        }
    }
}

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
