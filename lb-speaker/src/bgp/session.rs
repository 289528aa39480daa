//! One BGP session's finite state machine (RFC 4271 §8) as pure logic: when to dial, what to answer an
//! OPEN, when keepalives are due, when the hold timer expires, and how the session ends (a NOTIFICATION
//! or a silent close for graceful restart).
//!
//! Like `crate::link`, [`Session`] is fed what happened ([`Input`]) with the current time and answers with
//! what to do ([`Action`]); it reads no clock and does no I/O, so every rule is tested on explicit
//! instants (`session_tests.rs`). `peer.rs` owns the TCP connection and carries the actions out.
//!
//! We only dial out (as MetalLB's native speaker does), so there is no listening side and no connection
//! collision to resolve. RFC 4271's Active state ("listening") is used for "waiting to dial again after
//! a failed connection", and Idle for "waiting to dial again after a session ended".

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use ops::backoff::Backoff;
use tokio::time::Instant;

use super::message::{
    Capabilities, DecodeError, Family, GracefulRestart, Message, Notification, Open, code,
};

/// The hold timer while waiting for the peer's OPEN (RFC 4271 §8: "a large value", 4 minutes).
const OPEN_HOLD: Duration = Duration::from_secs(240);
/// The longest wait between connection attempts.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// What a session is configured with (already defaulted: no zeros meaning "default" here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Our AS.
    pub my_asn: u32,
    /// The AS the peer must announce.
    pub peer_asn: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Proposed hold time in seconds (0 or >= 3).
    pub hold_time: u16,
    /// Keepalive interval if configured; hold/3 otherwise.
    pub keepalive: Option<Duration>,
    /// First delay between connection attempts (doubling up to 30 s).
    pub connect_retry: Duration,
    /// Restart time to advertise with Graceful Restart; `None` = no capability.
    pub graceful_restart: Option<u16>,
    /// Set the Restart-State bit in the OPEN (this process restarted).
    pub restart_state: bool,
}

/// RFC 4271's states, spelt as `announce.proto` wants them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// Not connected; a dial is scheduled.
    Idle,
    /// Dialing.
    Connect,
    /// The last dial failed; another is scheduled.
    Active,
    /// Our OPEN is sent; waiting for the peer's.
    OpenSent,
    /// OPENs exchanged; waiting for the peer's KEEPALIVE.
    OpenConfirm,
    /// Routes flow.
    Established,
}

impl State {
    /// The name used in reports and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "Idle",
            Self::Connect => "Connect",
            Self::Active => "Active",
            Self::OpenSent => "OpenSent",
            Self::OpenConfirm => "OpenConfirm",
            Self::Established => "Established",
        }
    }

    /// Every state, for per-state metrics.
    pub const ALL: [State; 6] = [
        Self::Idle,
        Self::Connect,
        Self::Active,
        Self::OpenSent,
        Self::OpenConfirm,
        Self::Established,
    ];

    fn connected(self) -> bool {
        matches!(self, Self::OpenSent | Self::OpenConfirm | Self::Established)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What both OPENs agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Hold time in seconds (0 = no hold timer, no keepalives).
    pub hold_time: u16,
    /// Keepalive interval, `None` with a hold time of 0.
    pub keepalive: Option<Duration>,
    /// Both sides sent the 4-octet AS capability.
    pub four_octet_as: bool,
    /// Families both sides can carry.
    pub families: BTreeSet<Family>,
    /// Both sides advertised Graceful Restart: a silent close leaves our routes stale, not withdrawn.
    pub graceful_restart: bool,
    /// The peer's BGP identifier.
    pub peer_router_id: Ipv4Addr,
}

/// Why the session is stopped for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The peer left the configuration: Cease / Peer De-configured.
    Deconfigured,
    /// The peer's settings changed and a new session replaces this one: Cease / Administrative Reset.
    Reset,
    /// The process stops: a silent close when Graceful Restart was negotiated (the router keeps our
    /// routes as stale until we are back), Cease / Administrative Shutdown otherwise (withdrawn at once).
    Shutdown,
}

/// What happened, for [`Session::feed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A timer of [`Session::next_wake`] may be due.
    Tick,
    /// The TCP connection is up.
    Connected,
    /// The TCP connection could not be made.
    ConnectFailed(String),
    /// A message arrived.
    Received(Message),
    /// Bytes arrived that are not a valid message; the type byte if the header was read.
    Malformed(DecodeError, Option<u8>),
    /// The TCP connection closed or broke.
    Closed(String),
    /// The forwarding path to the peer is down (BFD).
    ForwardingDown,
    /// Stop for good.
    Stop(Stop),
}

/// What to do, answered by [`Session::feed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the peer.
    Dial,
    /// Send this message.
    Send(Message),
    /// The session is established: send the initial routes and End-of-RIB.
    Established(Negotiated),
    /// The peer asked for our routes of this family again (ROUTE-REFRESH).
    Resend(Family),
    /// Close the TCP connection (after any [`Action::Send`] before it); the session went down.
    Close {
        /// Why, for logs and `last_error`.
        reason: String,
        /// It had been Established (a flap).
        was_established: bool,
    },
}

/// One session's state and timers.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    negotiated: Option<Negotiated>,
    retry: Backoff,
    dial_at: Option<Instant>,
    hold_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    last_error: Option<String>,
    stopped: bool,
}

impl Session {
    /// A session that dials at `now`.
    pub fn new(config: SessionConfig, now: Instant) -> Self {
        let retry = Backoff::new(config.connect_retry, MAX_RETRY);
        Self {
            config,
            state: State::Idle,
            negotiated: None,
            retry,
            dial_at: Some(now),
            hold_at: None,
            keepalive_at: None,
            last_error: None,
            stopped: false,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// What the OPENs agreed on, while Established.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated
            .as_ref()
            .filter(|_| self.state == State::Established)
    }

    /// Why the session last went down.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Whether it was stopped for good.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// When [`Input::Tick`] is next needed.
    pub fn next_wake(&self) -> Option<Instant> {
        [self.dial_at, self.hold_at, self.keepalive_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Our OPEN.
    pub fn open(&self) -> Open {
        let families: BTreeSet<Family> = [Family::Ipv4, Family::Ipv6].into_iter().collect();
        Open {
            version: 4,
            asn: self.config.my_asn,
            hold_time: self.config.hold_time,
            router_id: self.config.router_id,
            capabilities: Capabilities {
                graceful_restart: self.config.graceful_restart.map(|time| GracefulRestart {
                    restart_state: self.config.restart_state,
                    restart_time: time.min(0x0fff),
                    // The node's forwarding (kube-proxy, the CNI) does not restart with the speaker.
                    families: families.iter().map(|f| (*f, true)).collect(),
                }),
                families,
                multiprotocol: true,
                four_octet_as: Some(self.config.my_asn),
                route_refresh: true,
            },
        }
    }

    /// Takes in what happened at `now`; answers what to do, in order.
    pub fn feed(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.stopped {
            return actions;
        }
        match input {
            Input::Tick => self.tick(now, &mut actions),
            Input::Connected if self.state == State::Connect => {
                self.state = State::OpenSent;
                self.hold_at = Some(now + OPEN_HOLD);
                actions.push(Action::Send(Message::Open(self.open())));
            }
            Input::Connected => {}
            Input::ConnectFailed(error) if self.state == State::Connect => {
                self.state = State::Active;
                self.last_error = Some(error);
                self.dial_at = Some(now + self.retry.next_delay());
            }
            Input::ConnectFailed(_) => {}
            Input::Received(message) => self.received(message, now, &mut actions),
            Input::Malformed(error, kind) if self.state.connected() => {
                let notification = error.notification(kind);
                self.down(
                    format!("malformed message from the peer: {error}"),
                    Some(notification),
                    now,
                    &mut actions,
                );
            }
            Input::Malformed(..) => {}
            Input::Closed(why) if self.state.connected() => {
                self.down(format!("connection closed: {why}"), None, now, &mut actions);
            }
            Input::Closed(_) => {}
            Input::ForwardingDown if self.state == State::Established => {
                self.down("BFD down".to_owned(), None, now, &mut actions);
            }
            Input::ForwardingDown => {}
            Input::Stop(stop) => self.stop(stop, &mut actions),
        }
        actions
    }

    fn tick(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if let Some(hold_at) = self.hold_at
            && hold_at <= now
            && self.state.connected()
        {
            self.down(
                "hold timer expired".to_owned(),
                Some(Notification::new(code::HOLD_TIMER_EXPIRED, 0)),
                now,
                actions,
            );
            return;
        }
        if let Some(dial_at) = self.dial_at
            && dial_at <= now
            && matches!(self.state, State::Idle | State::Active)
        {
            self.dial_at = None;
            self.state = State::Connect;
            actions.push(Action::Dial);
        }
        if let Some(keepalive_at) = self.keepalive_at
            && keepalive_at <= now
            && matches!(self.state, State::OpenConfirm | State::Established)
        {
            let every = self
                .negotiated
                .as_ref()
                .and_then(|n| n.keepalive)
                .unwrap_or(Duration::MAX);
            self.keepalive_at = now.checked_add(every);
            actions.push(Action::Send(Message::Keepalive));
        }
    }

    fn received(&mut self, message: Message, now: Instant, actions: &mut Vec<Action>) {
        match (self.state, message) {
            (state, Message::Notification(n)) if state.connected() => {
                self.down(format!("peer sent NOTIFICATION {n}"), None, now, actions);
            }
            (State::OpenSent, Message::Open(open)) => match self.check_open(&open) {
                Ok(negotiated) => {
                    self.state = State::OpenConfirm;
                    self.restart_hold(now, negotiated.hold_time);
                    self.keepalive_at = negotiated.keepalive.and_then(|k| now.checked_add(k));
                    self.negotiated = Some(negotiated);
                    actions.push(Action::Send(Message::Keepalive));
                }
                Err((reason, notification)) => {
                    self.down(reason, Some(notification), now, actions);
                }
            },
            (State::OpenConfirm, Message::Keepalive) => {
                self.state = State::Established;
                self.retry.reset();
                // Only the first session after the process started is a restart.
                self.config.restart_state = false;
                let negotiated = self.negotiated.clone();
                if let Some(negotiated) = negotiated {
                    self.restart_hold(now, negotiated.hold_time);
                    actions.push(Action::Established(negotiated));
                }
            }
            (State::Established, Message::Keepalive | Message::Update(_)) => {
                // Received routes were checked by the decoder and are dropped: we originate only.
                let hold = self.negotiated.as_ref().map_or(0, |n| n.hold_time);
                self.restart_hold(now, hold);
            }
            (State::Established, Message::RouteRefresh(Some(family))) => {
                actions.push(Action::Resend(family));
            }
            // A family we never offered has nothing to resend.
            (State::Established, Message::RouteRefresh(None)) => {}
            (state, message) if state.connected() => {
                let kind = match message {
                    Message::Open(_) => "OPEN",
                    Message::Update(_) => "UPDATE",
                    Message::Keepalive => "KEEPALIVE",
                    Message::RouteRefresh(_) => "ROUTE-REFRESH",
                    Message::Notification(_) => "NOTIFICATION",
                };
                self.down(
                    format!("unexpected {kind} in {state}"),
                    Some(Notification::new(code::FSM, 0)),
                    now,
                    actions,
                );
            }
            _ => {}
        }
    }

    fn restart_hold(&mut self, now: Instant, hold_time: u16) {
        self.hold_at = (hold_time > 0).then(|| now + Duration::from_secs(u64::from(hold_time)));
    }

    /// RFC 4271 §6.2's checks, then what the two OPENs agree on.
    fn check_open(&self, open: &Open) -> Result<Negotiated, (String, Notification)> {
        if open.version != 4 {
            return Err((
                format!("peer speaks BGP version {}", open.version),
                Notification {
                    code: code::OPEN,
                    subcode: code::BAD_VERSION,
                    data: 4u16.to_be_bytes().to_vec(),
                },
            ));
        }
        if open.asn != self.config.peer_asn {
            return Err((
                format!(
                    "peer announced AS {}, configured {}",
                    open.asn, self.config.peer_asn
                ),
                Notification::new(code::OPEN, code::BAD_PEER_AS),
            ));
        }
        let ibgp = self.config.peer_asn == self.config.my_asn;
        if open.router_id.is_unspecified() || (ibgp && open.router_id == self.config.router_id) {
            return Err((
                format!("peer's BGP identifier {} is unacceptable", open.router_id),
                Notification::new(code::OPEN, code::BAD_IDENTIFIER),
            ));
        }
        if matches!(open.hold_time, 1 | 2) {
            return Err((
                format!("peer proposed a hold time of {} s", open.hold_time),
                Notification::new(code::OPEN, code::UNACCEPTABLE_HOLD_TIME),
            ));
        }
        let hold_time = open.hold_time.min(self.config.hold_time);
        let keepalive = (hold_time > 0).then(|| {
            let third = Duration::from_secs(u64::from(hold_time / 3).max(1));
            self.config.keepalive.map_or(third, |k| k.min(third))
        });
        let caps = &open.capabilities;
        let peer_families = if caps.multiprotocol {
            caps.families.clone()
        } else {
            // RFC 4760 §8: without the capability, IPv4 unicast only.
            [Family::Ipv4].into_iter().collect()
        };
        Ok(Negotiated {
            hold_time,
            keepalive,
            four_octet_as: caps.four_octet_as.is_some(),
            families: peer_families,
            graceful_restart: self.config.graceful_restart.is_some()
                && caps.graceful_restart.is_some(),
            peer_router_id: open.router_id,
        })
    }

    fn down(
        &mut self,
        reason: String,
        notification: Option<Notification>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let was_established = self.state == State::Established;
        if let Some(notification) = notification {
            actions.push(Action::Send(Message::Notification(notification)));
        }
        actions.push(Action::Close {
            reason: reason.clone(),
            was_established,
        });
        self.last_error = Some(reason);
        self.state = State::Idle;
        self.negotiated = None;
        self.hold_at = None;
        self.keepalive_at = None;
        self.dial_at = Some(now + self.retry.next_delay());
    }

    fn stop(&mut self, stop: Stop, actions: &mut Vec<Action>) {
        let was_established = self.state == State::Established;
        let graceful = self.negotiated().is_some_and(|n| n.graceful_restart);
        if self.state.connected() {
            let (reason, notification) = match stop {
                Stop::Deconfigured => (
                    "peer de-configured",
                    Some(Notification::new(code::CEASE, code::PEER_DECONFIGURED)),
                ),
                Stop::Reset => (
                    "peer settings changed",
                    Some(Notification::new(code::CEASE, code::ADMINISTRATIVE_RESET)),
                ),
                Stop::Shutdown if graceful => {
                    ("graceful stop (routes kept stale by the peer)", None)
                }
                Stop::Shutdown => (
                    "administrative shutdown",
                    Some(Notification::new(
                        code::CEASE,
                        code::ADMINISTRATIVE_SHUTDOWN,
                    )),
                ),
            };
            if let Some(notification) = notification {
                actions.push(Action::Send(Message::Notification(notification)));
            }
            actions.push(Action::Close {
                reason: reason.to_owned(),
                was_established,
            });
        }
        self.stopped = true;
        self.state = State::Idle;
        self.negotiated = None;
        self.dial_at = None;
        self.hold_at = None;
        self.keepalive_at = None;
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
