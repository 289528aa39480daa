//! The speaker's control loop: one task that owns the holdings, the interface scan and the responders, and
//! drives the session with the controller through the steps of `announce.proto` (Hello and Report, apply
//! and acknowledge, heartbeats every lease/5, reports on change, graceful Leaving, reconnect with backoff).
//! When to dial, heartbeat, leave and stop is decided by the link state machine (`crate::link`): the loop
//! waits on the stream, the dial and the timers, feeds it, and carries out what it answers.
//! Every event ends in [`Speaker::refresh`], which recomputes what to answer for now, updates the responders'
//! table *before* anything is acknowledged, and sends the gratuitous announcements for what was taken over.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use ops::CancellationToken;
use ops::endpoint::Health;
use proto::announce::v1::controller_message::Body as ControllerBody;
use proto::announce::v1::speaker_message::Body as SpeakerBody;
use proto::announce::v1::{
    Announcement, Conflict, ControllerMessage, Heartbeat, Hello, Interface, Leaving, Problem,
    Report, SpeakerMessage,
};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use crate::bgp::BgpSpeaker;
use crate::config::Settings;
use crate::control::{self, ControlError, Session};
use crate::frames::Mac;
use crate::holdings::{Applied, Holdings, LeaseOutcome, Loss};
use crate::interfaces::{self, InterfaceSet};
use crate::link::{Action, Ending, Input, Link, Note};
use crate::metrics::Metrics;
use crate::responder::{AnswerTable, Event, Responder, SharedTable};

/// How often interfaces are rescanned (links coming, going, changing flags or masters).
const RESCAN_EVERY: Duration = Duration::from_secs(2);
/// Spacing of gratuitous repeats: past Linux's default 1 s `locktime`, within which a neighbour entry
/// ignores updates.
const REPEAT_SPACING: Duration = Duration::from_millis(1100);
/// After the final acknowledgement, how long to wait for the controller to close its half.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

type Connecting = Pin<Box<dyn Future<Output = Result<Session, ControlError>> + Send>>;

#[derive(Debug)]
struct Repeat {
    due: Instant,
    interface: String,
    address: IpAddr,
    remaining: u32,
}

/// The control loop's state.
pub struct Speaker {
    settings: Settings,
    metrics: Metrics,
    health: Health,
    holdings: Holdings,
    interfaces: InterfaceSet,
    responders: BTreeMap<String, Responder>,
    responder_failures: BTreeMap<String, String>,
    table: SharedTable,
    events: UnboundedSender<Event>,
    announced: BTreeSet<(String, IpAddr)>,
    problems: Vec<Problem>,
    conflicts: BTreeSet<(IpAddr, String, Mac)>,
    repeats: Vec<Repeat>,
    last_report: Option<Report>,
    connected_once: bool,
    lease_was_valid: bool,
    /// When to dial, heartbeat, leave and stop: the loop below only carries its actions out.
    link: Link,
    /// The open session, if any.
    session: Option<Session>,
    /// The dial under way, if any.
    connecting: Option<Connecting>,
    /// A session the link closed, whose controller is given [`CLOSE_GRACE`] to close its half before
    /// the speaker stops.
    closing: Option<Session>,
    /// The BGP sessions (step 9): kept across controller sessions, stopped only with the speaker.
    bgp: BgpSpeaker,
    /// Stops the BFD runner, after BGP has stopped.
    bfd_stop: CancellationToken,
}

impl Speaker {
    /// A speaker that has not started anything yet.
    pub fn new(
        settings: Settings,
        metrics: Metrics,
        health: Health,
    ) -> (Self, UnboundedReceiver<Event>) {
        let (events, events_rx) = mpsc::unbounded_channel();
        let link = Link::new(settings.leave_timeout, tokio::time::Instant::now());
        // The speaker's clock for `sent_at_ms` (announce.proto step 3): 1 ms before the control loop
        // exists, so every stamp is >= 1.
        let started = Instant::now();
        let epoch = started
            .checked_sub(Duration::from_millis(1))
            .unwrap_or(started);
        let bfd_stop = CancellationToken::new();
        let speaker = Self {
            settings,
            bgp: BgpSpeaker::new(metrics.clone()).with_forwarding(
                crate::forwarding::BfdPaths::new(metrics.clone(), bfd_stop.clone()),
            ),
            bfd_stop,
            metrics,
            health,
            holdings: Holdings::new(epoch),
            interfaces: InterfaceSet::default(),
            responders: BTreeMap::new(),
            responder_failures: BTreeMap::new(),
            table: Arc::new(RwLock::new(AnswerTable::default())),
            events,
            announced: BTreeSet::new(),
            problems: Vec::new(),
            conflicts: BTreeSet::new(),
            repeats: Vec::new(),
            last_report: None,
            connected_once: false,
            lease_was_valid: false,
            link,
            session: None,
            connecting: None,
            closing: None,
        };
        (speaker, events_rx)
    }

    /// Runs until `shutdown` is cancelled and the graceful leave is over. The loop waits on the session,
    /// the dial, the timers and the responders; what it takes in feeds the holdings and the [`Link`],
    /// and every turn ends with a refresh of what to answer for.
    pub async fn run(mut self, mut events: UnboundedReceiver<Event>, shutdown: CancellationToken) {
        self.rescan();
        self.refresh(Instant::now());
        self.refreshed();
        let mut rescan = tokio::time::interval(RESCAN_EVERY);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let periodic_every = self.settings.periodic_gratuitous.unwrap_or(Duration::MAX);
        let mut periodic = tokio::time::interval_at(
            tokio::time::Instant::now() + periodic_every.min(Duration::from_secs(86_400 * 365)),
            periodic_every.min(Duration::from_secs(86_400 * 365)),
        );
        while !self.link.is_stopped() {
            let now = Instant::now();
            let lease_deadline = self
                .holdings
                .deadline()
                .filter(|_| self.holdings.lease_valid(now));
            let next_repeat = self.repeats.iter().map(|r| r.due).min();
            let leave_deadline = self.link.leave_deadline();
            let link_wake = self.link.next_wake();
            let bgp_changed = self.bgp.change_signal();
            tokio::select! {
                biased;
                () = shutdown.cancelled(), if !self.link.is_leaving() => self.feed(Input::Shutdown),
                // Once the leave deadline passed, nothing else is taken in first.
                () = sleep_until(leave_deadline) => self.feed(Input::Tick),
                message = next_message(&mut self.session) => self.received(message),
                result = poll_connecting(&mut self.connecting) => self.dialed(result),
                () = sleep_until(link_wake) => self.feed(Input::Tick),
                () = sleep_until_std(lease_deadline) => {
                    // Refreshed below: the plan is empty now.
                }
                () = sleep_until_std(next_repeat) => {
                    self.repeat_due(Instant::now());
                }
                _ = rescan.tick() => {
                    self.rescan();
                }
                _ = periodic.tick(), if self.settings.periodic_gratuitous.is_some() => {
                    for (interface, address) in self.announced.clone() {
                        self.announce(&interface, address, "periodic");
                    }
                }
                Some(event) = events.recv() => {
                    self.event(event);
                }
                () = bgp_changed.notified() => {
                    // A BGP session changed: reported below.
                }
            }
            if self.link.is_stopped() {
                break;
            }
            self.refresh(Instant::now());
            self.report_if_changed();
            self.refreshed();
        }
        self.close().await;
        self.bgp.stop().await;
        self.bfd_stop.cancel();
        self.stop();
    }

    /// Feeds the link and carries out what it answers.
    fn feed(&mut self, input: Input) {
        for action in self.link.feed(input, tokio::time::Instant::now()) {
            match action {
                Action::Connect => self.connecting = Some(self.connect()),
                Action::SendLeaving => self.emit(SpeakerBody::Leaving(Leaving {})),
                Action::SendHeartbeat => self.heartbeat(),
                Action::Close => {
                    // Our half closes now; the controller's is waited for once the loop is over.
                    self.closing = self.session.take().map(|mut open| {
                        open.outbound = None;
                        open
                    });
                }
                Action::Lost { ending, retry_in } => self.session_lost(&ending, retry_in),
                Action::Note(note) => self.note(note),
            }
        }
    }

    /// Tells the link what the last refresh left announced.
    fn refreshed(&mut self) {
        let announcing = !self.announced.is_empty();
        self.feed(Input::Refreshed { announcing });
    }

    /// Takes in what the session's stream gave.
    fn received(&mut self, message: Result<Option<ControllerMessage>, tonic::Status>) {
        let input = match message {
            Ok(Some(message)) => self.handle(message),
            Ok(None) => Input::Ended(Ending::Closed),
            Err(status) => Input::Ended(Ending::Broke(control::chain(&status))),
        };
        self.feed(input);
    }

    /// Takes in the end of a dial.
    fn dialed(&mut self, result: Result<Session, ControlError>) {
        self.connecting = None;
        match result {
            Ok(opened) => {
                self.session = Some(opened);
                self.session_opened();
                self.feed(Input::Opened);
            }
            Err(e) => self.feed(Input::DialFailed(e.to_string())),
        }
    }

    /// Logs (and counts) what the link noted.
    fn note(&self, note: Note) {
        let leave_timeout = self.settings.leave_timeout;
        match note {
            Note::Leaving => {
                tracing::info!(leave_timeout = ?leave_timeout, "stopping: telling the controller this node is leaving");
            }
            Note::HandingOver => {
                tracing::info!(leave_timeout = ?leave_timeout, announced = self.announced.len(), "stopping: reconnecting to the controller to hand this node's addresses over; announcing meanwhile");
            }
            Note::ReconnectedWhileLeaving => {
                tracing::info!(
                    "reconnected while stopping: telling the controller this node is leaving"
                );
            }
            Note::DialFailed { error, retry_in } => {
                self.metrics.controller_errors.inc();
                tracing::warn!(controller = %self.settings.controller.uri, error = %error, retry_in = ?retry_in, "cannot open a session with the controller");
            }
            Note::NothingToHandOver => {
                tracing::info!(
                    "stopping; no session with the controller, and nothing announced to hand over"
                );
            }
            Note::MovedAway => {
                tracing::info!("the controller moved every address away; leaving");
            }
            Note::NothingLeft => tracing::info!("stopping: nothing left to hand over"),
            Note::LeaveTimedOut => {
                tracing::warn!(
                    "the controller did not move this node's addresses within --leave-timeout; stopping anyway"
                );
            }
        }
    }

    fn connect(&mut self) -> Connecting {
        let now = Instant::now();
        let hello = Hello {
            node: self.settings.node_name.clone(),
            interfaces: self
                .interfaces
                .eligible
                .values()
                .map(|i| Interface {
                    name: i.name.clone(),
                    mac: i.mac.to_vec(),
                    addresses: i.addresses.clone(),
                    up: true,
                })
                .collect(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            held_generation: self.holdings.held_generation(now),
        };
        let report = self.report();
        self.last_report = Some(report.clone());
        // Nothing of an earlier attempt can be echoed in this session.
        self.holdings.begin_session();
        let first = vec![
            self.message(SpeakerBody::Hello(hello)),
            self.message(SpeakerBody::Report(report)),
        ];
        let controller = self.settings.controller.clone();
        tracing::debug!(controller = %controller.uri, "dialing the controller");
        Box::pin(async move { control::open(&controller, first).await })
    }

    fn session_opened(&mut self) {
        self.connected_once = true;
        self.metrics.controller_connected.set(1);
        self.metrics.controller_sessions.inc();
        tracing::info!(controller = %self.settings.controller.uri, node = %self.settings.node_name, "session with the controller open");
    }

    /// The session ended (see [`Ending::by_controller`] for what rule 7 makes of it); the link dials
    /// again in `retry_in`.
    fn session_lost(&mut self, ending: &Ending, retry_in: Duration) {
        self.session = None;
        let now = Instant::now();
        self.holdings.begin_session();
        let hold = ending
            .by_controller()
            .then_some(self.settings.controller_loss_hold);
        let loss = self.holdings.controller_lost(now, hold);
        self.metrics.controller_connected.set(0);
        self.metrics.controller_errors.inc();
        let why = ending.to_string();
        let why = why.as_str();
        let left = self
            .holdings
            .deadline()
            .map(|d| d.saturating_duration_since(now));
        match loss {
            Loss::Hold { .. } => {
                tracing::warn!(reason = why, retry_in = ?retry_in, hold_left = ?left, held = self.holdings.held().len(), "lost the controller session; holding what this node announces for --controller-loss-hold unless a controller says otherwise");
            }
            Loss::Silent { echo_age } => {
                tracing::warn!(reason = why, retry_in = ?retry_in, lease_left = ?left, echo_age = ?echo_age, "lost the controller session after it had gone silent (no fresh lease echo); announcing only while the lease runs");
            }
            Loss::NotByController | Loss::Lapsed | Loss::AlreadyHandled => {
                tracing::warn!(reason = why, retry_in = ?retry_in, lease_left = ?left, loss = ?loss, "lost the controller session; announcing only while the lease runs");
            }
        }
    }

    /// Queues a heartbeat acknowledging the applied generation.
    fn heartbeat(&mut self) {
        let applied_generation = self.holdings.applied_generation();
        self.emit(SpeakerBody::Heartbeat(Heartbeat { applied_generation }));
    }

    /// A message stamped with `sent_at_ms` now. Stamped when queued: the queue is drained by the HTTP/2
    /// stream at once (a queue found full ends the session), and a stamp earlier than the real send time
    /// only makes the lease end earlier on our side, never later than the controller's view of it.
    fn message(&mut self, body: SpeakerBody) -> SpeakerMessage {
        SpeakerMessage {
            body: Some(body),
            sent_at_ms: self.holdings.stamp(Instant::now()),
        }
    }

    /// Queues `body` for the controller; a full or closed queue means the session is stuck or gone, which
    /// the link takes in at once (a failed send never stops the speaker by itself).
    fn emit(&mut self, body: SpeakerBody) {
        let Some(outbound) = self.session.as_ref().and_then(|s| s.outbound.clone()) else {
            return;
        };
        let message = self.message(body);
        if let Err(e) = outbound.try_send(message) {
            let ending = match &e {
                mpsc::error::TrySendError::Closed(_) => Ending::QueueClosed(e.to_string()),
                mpsc::error::TrySendError::Full(_) => Ending::QueueFull(e.to_string()),
            };
            self.session = None;
            self.feed(Input::Ended(ending));
        }
    }

    /// Applies one controller message; returns what the link makes of it (whether it awaits an
    /// acknowledgement, whether it left nothing held).
    fn handle(&mut self, message: ControllerMessage) -> Input {
        let now = Instant::now();
        let handled = |acknowledge: bool, emptied: bool, holdings: &Holdings| Input::Handled {
            acknowledge,
            emptied,
            lease: holdings.lease_period(),
        };
        let applied = match message.body {
            Some(ControllerBody::Snapshot(set)) => self.holdings.apply_set(&set),
            Some(ControllerBody::Delta(delta)) => self.holdings.apply_delta(&delta),
            Some(ControllerBody::Renewal(renewal)) => self.holdings.apply_renewal(&renewal),
            Some(ControllerBody::Bgp(config)) => {
                // Not fenced (step 9): nothing to acknowledge.
                tracing::debug!(
                    generation = config.generation,
                    peers = config.peers.len(),
                    routes = config.routes.len(),
                    "applying the BGP configuration"
                );
                self.bgp.apply(&config);
                return handled(false, false, &self.holdings);
            }
            None => {
                tracing::warn!("empty message from the controller ignored");
                return handled(false, false, &self.holdings);
            }
        };
        match applied {
            Applied::Snapshot { generation, lease } | Applied::Delta { generation, lease } => {
                self.lease_outcome(lease, now);
                tracing::debug!(
                    generation,
                    held = self.holdings.held().len(),
                    "applied assignments"
                );
                // Stop answering for removed addresses before acknowledging (the controller hands them
                // to another node on this acknowledgement, which the link sends), and take over added
                // ones at once.
                self.refresh(now);
                self.metrics.applied_generation.set(clamp(generation));
                let emptied =
                    self.holdings.held().is_empty() && self.holdings.rejected().is_empty();
                return handled(true, emptied, &self.holdings);
            }
            Applied::DeltaIgnored { base, applied } => {
                tracing::warn!(
                    base,
                    applied,
                    "delta against a generation this speaker does not hold ignored"
                );
                let report = self.report();
                self.last_report = Some(report.clone());
                self.emit(SpeakerBody::Report(report));
                return handled(true, false, &self.holdings);
            }
            Applied::Renewed { lease } => self.lease_outcome(lease, now),
            Applied::RenewalIgnored {
                generation,
                applied,
            } => {
                tracing::debug!(
                    generation,
                    applied,
                    "renewal for another generation ignored"
                );
            }
        }
        handled(false, false, &self.holdings)
    }

    /// Logs (and counts) a lease that extended nothing because of its echo (step 3).
    fn lease_outcome(&self, outcome: LeaseOutcome, now: Instant) {
        match outcome {
            LeaseOutcome::Absent | LeaseOutcome::Extended { .. } => {}
            LeaseOutcome::NotLater { until } => {
                if until <= now {
                    tracing::debug!(
                        over_for = ?now - until,
                        "lease with a stale echo (delayed in transit) extends nothing"
                    );
                }
            }
            LeaseOutcome::ZeroEcho => {
                self.metrics.lease_echoes_rejected.inc();
                tracing::debug!("lease with echo_ms 0 extends nothing");
            }
            LeaseOutcome::FutureEcho {
                echo_ms,
                max_sent_ms,
            } => {
                self.metrics.lease_echoes_rejected.inc();
                tracing::debug!(
                    echo_ms,
                    max_sent_ms,
                    "lease echoing a time this session never sent extends nothing"
                );
            }
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Conflict {
                address,
                interface,
                foreign_mac,
            } => {
                if self.announced.contains(&(interface.clone(), address)) {
                    if self.conflicts.len() < crate::responder::MAX_REPORTED_CONFLICTS {
                        self.conflicts.insert((address, interface, foreign_mac));
                    } else {
                        self.metrics.conflicts_unreported.inc();
                    }
                }
            }
            Event::Failed { interface, error } => {
                self.responders.remove(&interface);
                self.responder_failures.insert(interface, error);
            }
        }
    }

    fn rescan(&mut self) {
        let scanned = interfaces::scan(&self.settings.filter);
        if scanned != self.interfaces {
            tracing::info!(
                eligible = ?scanned.eligible.keys().collect::<Vec<_>>(),
                ineligible = ?scanned.ineligible.iter().map(|(n, r)| format!("{n}: {r}")).collect::<Vec<_>>(),
                "interfaces scanned"
            );
        }
        self.interfaces = scanned;
        self.metrics
            .interfaces_eligible
            .set(clamp(self.interfaces.eligible.len() as u64));
        // Stop responders on links that went away, changed MAC or became ineligible.
        let interfaces = &self.interfaces;
        self.responders.retain(|name, responder| {
            let keep = interfaces
                .eligible
                .get(name)
                .is_some_and(|i| i.mac == responder.mac() && responder.is_running());
            if !keep {
                tracing::info!(interface = %name, "interface no longer eligible or changed; responder stopped");
            }
            keep
        });
        self.responder_failures
            .retain(|name, _| self.interfaces.eligible.contains_key(name));
        for eligible in self.interfaces.eligible.values() {
            if self.responders.contains_key(&eligible.name) {
                continue;
            }
            match Responder::start(
                &eligible.name,
                eligible.mac,
                self.table.clone(),
                self.metrics.clone(),
                self.events.clone(),
            ) {
                Ok(responder) => {
                    self.responder_failures.remove(&eligible.name);
                    self.responders.insert(eligible.name.clone(), responder);
                }
                Err(e) => {
                    let text = e.to_string();
                    if self.responder_failures.get(&eligible.name) != Some(&text) {
                        tracing::error!(interface = %eligible.name, error = %text, "cannot start the responder");
                    }
                    self.responder_failures.insert(eligible.name.clone(), text);
                }
            }
        }
        self.update_readiness();
    }

    fn update_readiness(&self) {
        if !self.connected_once {
            self.health
                .set_not_ready("never connected to the controller yet");
        } else if let Some((name, error)) = self.responder_failures.iter().next() {
            self.health
                .set_not_ready(format!("responder on {name} is down: {error}"));
        } else {
            self.health.set_ready(format!(
                "connected to the controller; responding on {} interface(s)",
                self.responders.len()
            ));
        }
    }

    /// Recomputes what to answer for, updates the responders' table, logs and announces the changes.
    fn refresh(&mut self, now: Instant) {
        let plan = self.holdings.plan(now, &self.interfaces);
        let mut problems = plan.problems;
        let mut announce = BTreeSet::new();
        for (interface, address) in plan.announce {
            if self.responders.contains_key(&interface) {
                announce.insert((interface, address));
            } else {
                let why = self
                    .responder_failures
                    .get(&interface)
                    .map_or("not started yet", String::as_str);
                problems.push(Problem {
                    address: address.to_string(),
                    interface: interface.clone(),
                    message: format!("no responder on {interface}: {why}"),
                });
            }
        }
        let changed = announce != self.announced;
        {
            let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
            table.deadline = self.holdings.deadline();
            if changed {
                table.by_interface.clear();
                for (interface, address) in &announce {
                    table
                        .by_interface
                        .entry(interface.clone())
                        .or_default()
                        .insert(*address);
                }
                table.epoch += 1;
            }
        }
        let lease_valid = self.holdings.lease_valid(now);
        if self.lease_was_valid && !lease_valid && !self.holdings.held().is_empty() {
            tracing::warn!(
                held = self.holdings.held().len(),
                "lease lapsed without renewal; stopped answering for every address"
            );
        }
        self.lease_was_valid = lease_valid;
        if changed {
            let reason = if lease_valid {
                "unassigned"
            } else {
                "lease lapsed"
            };
            for (interface, address) in self.announced.difference(&announce) {
                tracing::info!(address = %address, interface = %interface, reason, "stopped announcing");
            }
            let added: Vec<(String, IpAddr)> =
                announce.difference(&self.announced).cloned().collect();
            self.announced = announce;
            for (interface, address) in added {
                let services = self
                    .holdings
                    .held()
                    .get(&address)
                    .map(|h| h.services.join(","))
                    .unwrap_or_default();
                tracing::info!(address = %address, interface = %interface, services = %services, "announcing");
                self.announce(&interface, address, "takeover");
                if self.settings.gratuitous_repeat > 0 {
                    self.repeats.push(Repeat {
                        due: Instant::now() + REPEAT_SPACING,
                        interface,
                        address,
                        remaining: self.settings.gratuitous_repeat,
                    });
                }
            }
            let announced = &self.announced;
            self.repeats
                .retain(|r| announced.contains(&(r.interface.clone(), r.address)));
            self.conflicts
                .retain(|(a, i, _)| announced.contains(&(i.clone(), *a)));
        }
        self.problems = problems;
        self.metrics
            .addresses_held
            .set(clamp(self.holdings.held().len() as u64));
        self.metrics
            .announcements
            .set(clamp(self.announced.len() as u64));
        self.metrics.lease_valid.set(i64::from(lease_valid));
        self.update_readiness();
    }

    fn announce(&self, interface: &str, address: IpAddr, why: &'static str) {
        let Some(responder) = self.responders.get(interface) else {
            return;
        };
        match responder.announce(address) {
            Ok(()) => {
                tracing::debug!(address = %address, interface, why, "gratuitous announcement sent");
            }
            Err(e) => {
                self.metrics.send_errors.inc();
                tracing::warn!(address = %address, interface, error = %e, "cannot send a gratuitous announcement");
            }
        }
    }

    fn repeat_due(&mut self, now: Instant) {
        let (due, mut later): (Vec<Repeat>, Vec<Repeat>) = std::mem::take(&mut self.repeats)
            .into_iter()
            .partition(|r| r.due <= now);
        for mut repeat in due {
            if !self
                .announced
                .contains(&(repeat.interface.clone(), repeat.address))
            {
                continue;
            }
            self.announce(&repeat.interface, repeat.address, "repeat");
            repeat.remaining -= 1;
            if repeat.remaining > 0 {
                repeat.due = now + REPEAT_SPACING;
                later.push(repeat);
            }
        }
        self.repeats = later;
    }

    fn report(&self) -> Report {
        Report {
            applied_generation: self.holdings.applied_generation(),
            announcing: self
                .announced
                .iter()
                .map(|(interface, address)| Announcement {
                    address: address.to_string(),
                    interface: interface.clone(),
                })
                .collect(),
            conflicts: self
                .conflicts
                .iter()
                .map(|(address, interface, mac)| Conflict {
                    address: address.to_string(),
                    interface: interface.clone(),
                    foreign_mac: mac.to_vec(),
                })
                .collect(),
            problems: self
                .problems
                .iter()
                .cloned()
                .chain(self.bgp.problems())
                .collect(),
            bgp_sessions: self.bgp.states(),
        }
    }

    fn report_if_changed(&mut self) {
        if self.session.is_none() {
            return;
        }
        let report = self.report();
        if self.last_report.as_ref() == Some(&report) {
            return;
        }
        for problem in &report.problems {
            let known = self
                .last_report
                .as_ref()
                .is_some_and(|r| r.problems.contains(problem));
            if !known {
                tracing::warn!(address = %problem.address, interface = %problem.interface, problem = %problem.message, "cannot announce as assigned");
            }
        }
        self.last_report = Some(report.clone());
        self.emit(SpeakerBody::Report(report));
    }

    /// After the link closed our half of the stream (following the final acknowledgement), gives the
    /// controller a moment to close its half, so the acknowledgement is on the wire before the process
    /// exits.
    async fn close(&mut self) {
        let Some(mut closing) = self.closing.take() else {
            return;
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Ok(Some(_)) = closing.inbound.message().await {}
        })
        .await;
    }

    /// Stops answering everything and closes every socket.
    fn stop(&mut self) {
        self.holdings.clear();
        {
            let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
            *table = AnswerTable {
                epoch: table.epoch + 1,
                ..AnswerTable::default()
            };
        }
        for (interface, address) in std::mem::take(&mut self.announced) {
            tracing::info!(address = %address, interface = %interface, reason = "stopping", "stopped announcing");
        }
        self.responders.clear();
        self.metrics.controller_connected.set(0);
        self.metrics.announcements.set(0);
        self.metrics.lease_valid.set(0);
    }
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

async fn next_message(
    session: &mut Option<Session>,
) -> Result<Option<ControllerMessage>, tonic::Status> {
    match session {
        Some(session) => session.inbound.message().await,
        None => std::future::pending().await,
    }
}

async fn poll_connecting(connecting: &mut Option<Connecting>) -> Result<Session, ControlError> {
    match connecting {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_std(deadline: Option<Instant>) {
    sleep_until(deadline.map(tokio::time::Instant::from_std)).await;
}
