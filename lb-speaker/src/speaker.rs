//! The speaker's control loop: one task that owns the holdings, the interface scan and the responders, and
//! drives the session with the controller through the steps of `announce.proto` (Hello and Report, apply
//! and acknowledge, heartbeats every lease/5, reports on change, graceful Leaving, reconnect with backoff).
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

use crate::config::Settings;
use crate::control::{self, Backoff, ControlError, Session};
use crate::frames::Mac;
use crate::holdings::{Applied, Holdings, LeaseOutcome, Loss};
use crate::interfaces::{self, InterfaceSet};
use crate::metrics::Metrics;
use crate::responder::{AnswerTable, Event, Responder, SharedTable};

/// How often interfaces are rescanned (links coming, going, changing flags or masters).
const RESCAN_EVERY: Duration = Duration::from_secs(2);
/// Spacing of gratuitous repeats: past Linux's default 1 s `locktime`, within which a neighbour entry
/// ignores updates.
const REPEAT_SPACING: Duration = Duration::from_millis(1100);
/// Heartbeat period before any lease told us better.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
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
    backoff: Backoff,
    next_attempt: tokio::time::Instant,
    next_heartbeat: tokio::time::Instant,
}

impl Speaker {
    /// A speaker that has not started anything yet.
    pub fn new(
        settings: Settings,
        metrics: Metrics,
        health: Health,
    ) -> (Self, UnboundedReceiver<Event>) {
        let (events, events_rx) = mpsc::unbounded_channel();
        let now = tokio::time::Instant::now();
        // The speaker's clock for `sent_at_ms` (announce.proto step 3): 1 ms before the control loop
        // exists, so every stamp is >= 1.
        let started = Instant::now();
        let epoch = started
            .checked_sub(Duration::from_millis(1))
            .unwrap_or(started);
        let speaker = Self {
            settings,
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
            backoff: control::reconnect_backoff(),
            next_attempt: now,
            next_heartbeat: now,
        };
        (speaker, events_rx)
    }

    /// Runs until `shutdown` is cancelled and the graceful leave is over.
    pub async fn run(mut self, mut events: UnboundedReceiver<Event>, shutdown: CancellationToken) {
        self.rescan();
        self.refresh(Instant::now());
        let mut session: Option<Session> = None;
        let mut connecting: Option<Connecting> = None;
        let mut leave_deadline: Option<tokio::time::Instant> = None;
        let mut rescan = tokio::time::interval(RESCAN_EVERY);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let periodic_every = self.settings.periodic_gratuitous.unwrap_or(Duration::MAX);
        let mut periodic = tokio::time::interval_at(
            tokio::time::Instant::now() + periodic_every.min(Duration::from_secs(86_400 * 365)),
            periodic_every.min(Duration::from_secs(86_400 * 365)),
        );
        loop {
            let now = Instant::now();
            let lease_deadline = self
                .holdings
                .deadline()
                .filter(|_| self.holdings.lease_valid(now));
            let next_repeat = self.repeats.iter().map(|r| r.due).min();
            // While leaving, only to hand over what this node still announces.
            let may_connect = session.is_none()
                && connecting.is_none()
                && (leave_deadline.is_none() || !self.announced.is_empty());
            tokio::select! {
                biased;
                () = shutdown.cancelled(), if leave_deadline.is_none() => {
                    if session.is_none() && self.announced.is_empty() {
                        tracing::info!("stopping; no session with the controller, and nothing announced to hand over");
                        break;
                    }
                    leave_deadline = Some(tokio::time::Instant::now() + self.settings.leave_timeout);
                    if session.is_some() {
                        tracing::info!(leave_timeout = ?self.settings.leave_timeout, "stopping: telling the controller this node is leaving");
                        self.emit(&mut session, SpeakerBody::Leaving(Leaving {}));
                    } else {
                        // The session is down (a controller leader change, say) while this node still answers for
                        // addresses: stopping now would leave them unanswered until the controller sees the node
                        // gone and its lease run out. Reconnect and leave properly instead, announcing meanwhile.
                        tracing::info!(leave_timeout = ?self.settings.leave_timeout, announced = self.announced.len(), "stopping: reconnecting to the controller to hand this node's addresses over; announcing meanwhile");
                    }
                }
                () = sleep_until(leave_deadline) => {
                    tracing::warn!("the controller did not move this node's addresses within --leave-timeout; stopping anyway");
                    break;
                }
                message = next_message(&mut session) => {
                    match message {
                        Ok(Some(message)) => {
                            let emptied = self.handle(message, &mut session);
                            if emptied && leave_deadline.is_some() {
                                tracing::info!("the controller moved every address away; leaving");
                                close(&mut session).await;
                                break;
                            }
                        }
                        Ok(None) => {
                            self.session_lost(&mut session, "the controller closed the session", true);
                            if leave_deadline.is_some() && self.announced.is_empty() {
                                break;
                            }
                        }
                        Err(status) => {
                            self.session_lost(&mut session, &format!("the session broke: {}", control::chain(&status)), true);
                            if leave_deadline.is_some() && self.announced.is_empty() {
                                break;
                            }
                        }
                    }
                }
                result = poll_connecting(&mut connecting) => {
                    connecting = None;
                    match result {
                        Ok(opened) => {
                            session = Some(opened);
                            self.session_opened();
                            if leave_deadline.is_some() {
                                tracing::info!("reconnected while stopping: telling the controller this node is leaving");
                                self.emit(&mut session, SpeakerBody::Leaving(Leaving {}));
                            }
                        }
                        Err(e) => {
                            self.metrics.controller_errors.inc();
                            let delay = self.backoff.next_delay();
                            self.next_attempt = tokio::time::Instant::now() + delay;
                            tracing::warn!(controller = %self.settings.controller.uri, error = %e, retry_in = ?delay, "cannot open a session with the controller");
                        }
                    }
                }
                () = tokio::time::sleep_until(self.next_attempt), if may_connect => {
                    connecting = Some(self.connect());
                }
                () = tokio::time::sleep_until(self.next_heartbeat), if session.is_some() => {
                    self.heartbeat(&mut session);
                }
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
            }
            self.refresh(Instant::now());
            self.report_if_changed(&mut session);
            if leave_deadline.is_some() && session.is_none() && self.announced.is_empty() {
                tracing::info!("stopping: nothing left to hand over");
                break;
            }
        }
        self.stop();
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
        self.backoff.reset();
        self.connected_once = true;
        self.metrics.controller_connected.set(1);
        self.metrics.controller_sessions.inc();
        self.next_heartbeat = tokio::time::Instant::now() + self.heartbeat_period();
        tracing::info!(controller = %self.settings.controller.uri, node = %self.settings.node_name, "session with the controller open");
    }

    /// The session ended. `by_controller`: the controller's side closed or reset the stream (end of
    /// stream, an error status, a reset connection), as opposed to an ending of our own making (our queue
    /// to it stuck). Rule 7: a healthy session lost to the controller's side holds what we announce for
    /// `--controller-loss-hold`; anything else keeps only the lease.
    fn session_lost(&mut self, session: &mut Option<Session>, why: &str, by_controller: bool) {
        *session = None;
        let now = Instant::now();
        self.holdings.begin_session();
        let hold = by_controller.then_some(self.settings.controller_loss_hold);
        let loss = self.holdings.controller_lost(now, hold);
        self.metrics.controller_connected.set(0);
        self.metrics.controller_errors.inc();
        let delay = self.backoff.next_delay();
        self.next_attempt = tokio::time::Instant::now() + delay;
        let left = self
            .holdings
            .deadline()
            .map(|d| d.saturating_duration_since(now));
        match loss {
            Loss::Hold { .. } => {
                tracing::warn!(reason = why, retry_in = ?delay, hold_left = ?left, held = self.holdings.held().len(), "lost the controller session; holding what this node announces for --controller-loss-hold unless a controller says otherwise");
            }
            Loss::Silent { echo_age } => {
                tracing::warn!(reason = why, retry_in = ?delay, lease_left = ?left, echo_age = ?echo_age, "lost the controller session after it had gone silent (no fresh lease echo); announcing only while the lease runs");
            }
            Loss::NotByController | Loss::Lapsed | Loss::AlreadyHandled => {
                tracing::warn!(reason = why, retry_in = ?delay, lease_left = ?left, loss = ?loss, "lost the controller session; announcing only while the lease runs");
            }
        }
    }

    fn heartbeat_period(&self) -> Duration {
        self.holdings
            .lease_period()
            .map_or(DEFAULT_HEARTBEAT, |lease| {
                (lease / 5).max(Duration::from_millis(10))
            })
    }

    fn heartbeat(&mut self, session: &mut Option<Session>) {
        let applied_generation = self.holdings.applied_generation();
        self.emit(
            session,
            SpeakerBody::Heartbeat(Heartbeat { applied_generation }),
        );
        self.next_heartbeat = tokio::time::Instant::now() + self.heartbeat_period();
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

    /// Queues `body` for the controller; a full or closed queue means the session is stuck or gone.
    fn emit(&mut self, session: &mut Option<Session>, body: SpeakerBody) {
        let Some(outbound) = session.as_ref().and_then(|s| s.outbound.clone()) else {
            return;
        };
        let message = self.message(body);
        if let Err(e) = outbound.try_send(message) {
            // Closed: the stream's transport is gone (the connection was reset); full: the controller
            // stopped reading, which is no sign that its side ended anything.
            let by_controller = matches!(e, mpsc::error::TrySendError::Closed(_));
            self.session_lost(
                session,
                &format!("cannot queue a message: {e}"),
                by_controller,
            );
        }
    }

    /// Applies one controller message; returns whether it was a set or delta that left nothing held.
    fn handle(&mut self, message: ControllerMessage, session: &mut Option<Session>) -> bool {
        let now = Instant::now();
        let applied = match message.body {
            Some(ControllerBody::Snapshot(set)) => self.holdings.apply_set(&set),
            Some(ControllerBody::Delta(delta)) => self.holdings.apply_delta(&delta),
            Some(ControllerBody::Renewal(renewal)) => self.holdings.apply_renewal(&renewal),
            None => {
                tracing::warn!("empty message from the controller ignored");
                return false;
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
                // to another node on this acknowledgement), and take over added ones at once.
                self.refresh(now);
                self.metrics.applied_generation.set(clamp(generation));
                self.heartbeat(session);
                return self.holdings.held().is_empty() && self.holdings.rejected().is_empty();
            }
            Applied::DeltaIgnored { base, applied } => {
                tracing::warn!(
                    base,
                    applied,
                    "delta against a generation this speaker does not hold ignored"
                );
                let report = self.report();
                self.last_report = Some(report.clone());
                self.emit(session, SpeakerBody::Report(report));
                self.heartbeat(session);
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
        false
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
            problems: self.problems.clone(),
        }
    }

    fn report_if_changed(&mut self, session: &mut Option<Session>) {
        if session.is_none() {
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
        self.emit(session, SpeakerBody::Report(report));
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

/// Closes our half of the stream after the final acknowledgement, then gives the controller a moment to
/// close its half, so the acknowledgement is on the wire before the process exits.
async fn close(session: &mut Option<Session>) {
    let Some(mut open) = session.take() else {
        return;
    };
    open.outbound = None;
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Ok(Some(_)) = open.inbound.message().await {}
    })
    .await;
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
