//! One BFD session in Asynchronous mode (RFC 5880 §6), as pure logic: the states (AdminDown, Down, Init,
//! Up) and the three-way handshake, the detection timer, the transmit timer with its jitter, the slow
//! transmit rate while not Up, the Poll Sequence that changes timers, and the Passive role.
//!
//! Like `link.rs`, a [`Session`] is fed what happened ([`Input`]: a packet for it, time passed, it was
//! taken administratively down, its profile changed) with the current time, answers with what to do
//! ([`Action`]: send a packet, report a state change) and tells when it next needs waking
//! ([`Session::next_wake`]). It reads no clock and touches no socket; the randomness of the jitter comes
//! from a seed, so every rule is tested on explicit times (`session_tests.rs`).
//!
//! Timers, in the RFC's words: the transmit interval is the greater of our `bfd.DesiredMinTxInterval`
//! and the peer's `bfd.RemoteMinRxInterval`, each packet 75-100% of it (75-90% with a detect multiplier
//! of 1, §6.8.7); the detection time is the peer's Detect Mult times the greater of our
//! `bfd.RequiredMinRxInterval` and the peer's last Desired Min TX (§6.8.4). While not Up, our Desired Min
//! TX is at least one second (§6.8.3). A change of either of our intervals while Up starts a Poll
//! Sequence: packets carry P until one with F comes back, and until then a longer transmit interval or a
//! shorter detection time does not take effect (§6.8.3).

use std::time::Duration;

use tokio::time::Instant;

use super::packet::{ControlPacket, Diagnostic, State};

/// Both intervals when the profile leaves them at 0 (`announce.proto`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(300);
/// The detection multiplier when the profile leaves it at 0.
pub const DEFAULT_DETECT_MULTIPLIER: u8 = 3;
/// The least Desired Min TX while the session is not Up (§6.8.3).
pub const SLOW_TX: Duration = Duration::from_secs(1);
/// Shortest interval a profile may ask for: a userspace daemon on a shared node cannot keep a tighter
/// clock without false detections.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Longest interval a profile may ask for.
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// The timers and role of a session (`announce.proto`'s `BfdProfile`, validated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// Our Required Min RX Interval: how often we are willing to receive.
    pub receive_interval: Duration,
    /// Our Desired Min TX Interval while Up.
    pub transmit_interval: Duration,
    /// Our Detect Mult: the peer declares us down after this many intervals without a packet.
    pub detect_multiplier: u8,
    /// Wait for the peer's first packet before sending anything (§6.1, the Passive role).
    pub passive: bool,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            receive_interval: DEFAULT_INTERVAL,
            transmit_interval: DEFAULT_INTERVAL,
            detect_multiplier: DEFAULT_DETECT_MULTIPLIER,
            passive: false,
        }
    }
}

/// A `BfdProfile` that cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// An interval outside 10 ms - 60 s.
    #[error("{which} interval {ms} ms is outside {MIN_INTERVAL:?}-{MAX_INTERVAL:?}")]
    Interval {
        /// `receive` or `transmit`.
        which: &'static str,
        /// The value asked for.
        ms: u32,
    },
    /// A detection multiplier above 255.
    #[error("detect multiplier {0} is above 255")]
    DetectMultiplier(u32),
}

impl Profile {
    /// The profile `announce.proto` describes: 0 means the default (300 ms, 3).
    pub fn from_proto(profile: &proto::announce::v1::BfdProfile) -> Result<Self, ProfileError> {
        let interval = |which: &'static str, ms: u32| {
            if ms == 0 {
                return Ok(DEFAULT_INTERVAL);
            }
            let interval = Duration::from_millis(u64::from(ms));
            if (MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) {
                Ok(interval)
            } else {
                Err(ProfileError::Interval { which, ms })
            }
        };
        let detect_multiplier = match profile.detect_multiplier {
            0 => DEFAULT_DETECT_MULTIPLIER,
            n => u8::try_from(n).map_err(|_| ProfileError::DetectMultiplier(n))?,
        };
        Ok(Self {
            receive_interval: interval("receive", profile.receive_interval_ms)?,
            transmit_interval: interval("transmit", profile.transmit_interval_ms)?,
            detect_multiplier,
            passive: profile.passive,
        })
    }
}

/// What happened, for [`Session::feed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A packet for this session passed the checks of `packet.rs` and the runner's demultiplexing.
    Packet(ControlPacket),
    /// Time passed (the wake-up of [`Session::next_wake`] came).
    Tick,
    /// Take the session AdminDown and tell the peer so (before removing it).
    AdminDown,
    /// New timers or role.
    Profile(Profile),
}

/// What to do after feeding a session, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this packet to the peer.
    Send(ControlPacket),
    /// The session changed state.
    StateChanged {
        /// The state before.
        from: State,
        /// The state now.
        to: State,
        /// Why.
        diagnostic: Diagnostic,
    },
}

/// The intervals a Poll Sequence puts into effect when its Final comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Poll {
    tx: Duration,
    rx: Duration,
}

/// One session's state machine (see the module documentation).
#[derive(Debug, Clone)]
pub struct Session {
    local_discriminator: u32,
    profile: Profile,
    state: State,
    diagnostic: Diagnostic,
    remote_state: State,
    remote_discriminator: u32,
    /// The peer's Required Min RX (1 µs until heard, as §6.8.1 says).
    remote_min_rx: Duration,
    /// The peer's last Desired Min TX.
    remote_desired_min_tx: Duration,
    /// The peer's Detect Mult, 0 until heard.
    remote_detect_mult: u8,
    /// The Desired Min TX the transmit interval is computed from now.
    tx_in_use: Duration,
    /// The Required Min RX the detection time is computed from now.
    rx_in_use: Duration,
    /// A Poll Sequence under way.
    poll: Option<Poll>,
    /// The timers changed again during the Poll Sequence: poll once more after its Final.
    repoll: bool,
    next_tx: Option<Instant>,
    detection_deadline: Option<Instant>,
    rng: u64,
}

impl Session {
    /// A session in Down with discriminator `local_discriminator` (non-zero, unique in the process). An
    /// active session sends its first packet at `now`; `seed` drives the jitter.
    pub fn new(local_discriminator: u32, profile: Profile, seed: u64, now: Instant) -> Self {
        let mut session = Self {
            local_discriminator,
            profile,
            state: State::Down,
            diagnostic: Diagnostic::None,
            remote_state: State::Down,
            remote_discriminator: 0,
            remote_min_rx: Duration::from_micros(1),
            remote_desired_min_tx: Duration::ZERO,
            remote_detect_mult: 0,
            tx_in_use: SLOW_TX.max(profile.transmit_interval),
            rx_in_use: profile.receive_interval,
            poll: None,
            repoll: false,
            next_tx: None,
            detection_deadline: None,
            // xorshift has one fixed point, 0.
            rng: seed | 1,
        };
        if session.may_transmit() {
            session.next_tx = Some(now);
        }
        session
    }

    /// Our discriminator.
    pub fn local_discriminator(&self) -> u32 {
        self.local_discriminator
    }

    /// The peer's discriminator, 0 while unknown.
    pub fn remote_discriminator(&self) -> u32 {
        self.remote_discriminator
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Why the state last changed.
    pub fn diagnostic(&self) -> Diagnostic {
        self.diagnostic
    }

    /// The profile in force.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Whether a Poll Sequence is under way.
    pub fn polling(&self) -> bool {
        self.poll.is_some()
    }

    /// When the session next needs a [`Input::Tick`]: the next packet due or the detection time's end.
    pub fn next_wake(&self) -> Option<Instant> {
        match (self.next_tx, self.detection_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The transmit interval before jitter: the greater of our Desired Min TX in use and the peer's
    /// Required Min RX.
    pub fn transmit_interval(&self) -> Duration {
        self.tx_in_use.max(self.remote_min_rx)
    }

    /// How long the peer may stay silent before we declare it down (None until heard from).
    pub fn detection_time(&self) -> Option<Duration> {
        (self.remote_detect_mult != 0).then(|| {
            self.rx_in_use.max(self.remote_desired_min_tx) * u32::from(self.remote_detect_mult)
        })
    }

    /// How long the peer waits for us before declaring us down: how long an AdminDown session keeps
    /// telling it so before it is dropped (§6.8.16).
    pub fn peer_detection_time(&self) -> Duration {
        self.advertised_tx().max(self.remote_min_rx) * u32::from(self.profile.detect_multiplier)
    }

    /// Feeds what happened at `now`; returns what to do.
    pub fn feed(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match input {
            Input::Packet(packet) => self.receive(&packet, now, &mut actions),
            Input::Tick => {}
            Input::AdminDown => {
                if self.state != State::AdminDown {
                    self.change(
                        State::AdminDown,
                        Diagnostic::AdministrativelyDown,
                        now,
                        &mut actions,
                    );
                }
            }
            Input::Profile(profile) => {
                self.profile = profile;
                self.timers_changed(now);
                if !self.may_transmit() {
                    self.next_tx = None;
                } else if self.next_tx.is_none() {
                    self.next_tx = Some(now);
                }
            }
        }
        self.run_timers(now, &mut actions);
        actions
    }

    /// §6.8.6, from "set bfd.RemoteDiscr" on: the packet passed every check.
    fn receive(&mut self, packet: &ControlPacket, now: Instant, actions: &mut Vec<Action>) {
        self.remote_discriminator = packet.my_discriminator;
        self.remote_state = packet.state;
        self.remote_min_rx = Duration::from_micros(u64::from(packet.required_min_rx_us));
        self.remote_desired_min_tx = Duration::from_micros(u64::from(packet.desired_min_tx_us));
        self.remote_detect_mult = packet.detect_mult;
        if packet.final_
            && let Some(poll) = self.poll.take()
        {
            self.tx_in_use = poll.tx;
            self.rx_in_use = poll.rx;
            if std::mem::take(&mut self.repoll) {
                self.timers_changed(now);
            }
        }
        if let Some(detection) = self.detection_time() {
            self.detection_deadline = Some(now + detection);
        }
        if self.state == State::AdminDown {
            return;
        }
        if packet.state == State::AdminDown {
            if self.state != State::Down {
                self.change(
                    State::Down,
                    Diagnostic::NeighborSignaledSessionDown,
                    now,
                    actions,
                );
            }
        } else {
            match (self.state, packet.state) {
                (State::Down, State::Down) => {
                    self.change(State::Init, Diagnostic::None, now, actions)
                }
                (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                    self.change(State::Up, Diagnostic::None, now, actions);
                }
                (State::Up, State::Down) => {
                    self.change(
                        State::Down,
                        Diagnostic::NeighborSignaledSessionDown,
                        now,
                        actions,
                    );
                }
                _ => {}
            }
        }
        if self.may_transmit() && self.next_tx.is_none() {
            // A passive session heard its peer: it may speak now.
            self.next_tx = Some(now);
        }
        if packet.poll {
            // §6.8.6: answer a Poll at once, with F and without P.
            actions.push(Action::Send(self.packet(true)));
        }
    }

    fn change(
        &mut self,
        to: State,
        diagnostic: Diagnostic,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let from = self.state;
        self.state = to;
        self.diagnostic = diagnostic;
        actions.push(Action::StateChanged {
            from,
            to,
            diagnostic,
        });
        self.timers_changed(now);
        if self.may_transmit() {
            // Tell the peer at once rather than at the next periodic packet, so that the handshake and
            // AdminDown take a round trip, not intervals. §6.8.7 exempts only the Final from the
            // transmit timer; this departs from it on state changes only, a few packets a session.
            self.next_tx = Some(now);
        }
    }

    /// Our Desired Min TX as advertised now: at least one second while not Up (§6.8.3).
    fn advertised_tx(&self) -> Duration {
        if self.state == State::Up {
            self.profile.transmit_interval
        } else {
            self.profile.transmit_interval.max(SLOW_TX)
        }
    }

    /// Our advertised intervals may have changed: put them into effect, at once or through a Poll
    /// Sequence (§6.8.3).
    fn timers_changed(&mut self, now: Instant) {
        let tx = self.advertised_tx();
        let rx = self.profile.receive_interval;
        if self.state != State::Up {
            self.tx_in_use = tx;
            self.rx_in_use = rx;
            self.poll = None;
            self.repoll = false;
        } else {
            let target = Poll { tx, rx };
            if self.poll.is_none() && (self.tx_in_use, self.rx_in_use) == (tx, rx) {
                return;
            }
            // Sending faster and detecting later are safe at once; the reverse waits for the Final.
            self.tx_in_use = self.tx_in_use.min(tx);
            self.rx_in_use = self.rx_in_use.max(rx);
            match self.poll {
                None => self.poll = Some(target),
                Some(poll) if poll != target => self.repoll = true,
                Some(_) => {}
            }
        }
        // A shorter interval applies to the next packet, not one interval later.
        if let Some(next) = self.next_tx {
            let sooner = now + self.transmit_interval();
            if sooner < next {
                self.next_tx = Some(sooner);
            }
        }
    }

    /// §6.8.7: we send unless passive and not yet heard from, or the peer asked for no packets.
    fn may_transmit(&self) -> bool {
        let heard = self.remote_discriminator != 0;
        (heard || !self.profile.passive) && !self.remote_min_rx.is_zero()
    }

    fn run_timers(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self
            .detection_deadline
            .is_some_and(|deadline| now >= deadline)
        {
            self.detection_deadline = None;
            if matches!(self.state, State::Init | State::Up) {
                self.change(
                    State::Down,
                    Diagnostic::ControlDetectionTimeExpired,
                    now,
                    actions,
                );
            }
            // §6.8.1: the peer's discriminator is forgotten when the detection time expires.
            self.remote_discriminator = 0;
            self.remote_detect_mult = 0;
            if !self.may_transmit() {
                self.next_tx = None;
            }
        }
        if self.next_tx.is_some_and(|due| now >= due) {
            if self.may_transmit() {
                actions.push(Action::Send(self.packet(false)));
                let interval = self.jittered(self.transmit_interval());
                self.next_tx = Some(now + interval);
            } else {
                self.next_tx = None;
            }
        }
    }

    /// 75-100% of `interval`, or 75-90% with a detect multiplier of 1 (§6.8.7).
    fn jittered(&mut self, interval: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let span: u64 = if self.profile.detect_multiplier == 1 {
            151
        } else {
            251
        };
        // Both below 1001, so the cast is lossless.
        let permille = (750 + self.rng % span) as u32;
        interval * permille / 1000
    }

    fn packet(&self, final_: bool) -> ControlPacket {
        ControlPacket {
            diagnostic: self.diagnostic,
            state: self.state,
            poll: self.poll.is_some() && !final_,
            final_,
            control_plane_independent: false,
            demand: false,
            detect_mult: self.profile.detect_multiplier,
            my_discriminator: self.local_discriminator,
            your_discriminator: self.remote_discriminator,
            desired_min_tx_us: micros(self.advertised_tx()),
            required_min_rx_us: micros(self.profile.receive_interval),
            required_min_echo_rx_us: 0,
        }
    }
}

/// Intervals are at most [`MAX_INTERVAL`] (or [`SLOW_TX`]), far below u32::MAX µs; saturate anyway.
fn micros(interval: Duration) -> u32 {
    u32::try_from(interval.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
