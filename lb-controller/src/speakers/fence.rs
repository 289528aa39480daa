//! Fencing, as pure logic: which node may announce which address, and what to send to each speaker so that
//! two nodes never answer ARP/NDP for one address at once (`announce.proto`, steps 2 to 6).
//!
//! [`Fence`] is a state machine fed with what happened (a session opened, a message arrived, a stream
//! ended, the desired assignments changed, time passed) and the current time; it answers with the messages
//! to send, the sessions to close and the events to report, and tells when it next needs to be woken
//! ([`Fence::next_wake`]). It does no I/O and reads no clock, so every timing rule is tested directly.
//!
//! The central notion is "may hold": node N may hold address X when X is in some generation sent to N that
//! N has not yet been seen to move past, or when N reported (or a replaced session of N was sent) X and
//! that claim has not lapsed. An address newly desired on N is sent to N only when no other node may hold
//! it — released by an acknowledgement (5a), a reset stream (5b) or a passed lease deadline (5c) — and,
//! right after activation, when no unknown node might still hold it from the previous leader.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use proto::announce::v1 as pb;
use tokio::time::Instant;

use super::{DesiredAssignment, DisconnectReason, HubEvent, SpeakerInfo};

/// Identifies one gRPC session (one `Session` stream) for its whole life.
pub(crate) type SessionId = u64;

/// What the I/O side must do after feeding the fence.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Output {
    /// Send `message` on the session's stream.
    Send {
        session: SessionId,
        message: pb::ControllerMessage,
    },
    /// End the session's stream with an error status.
    Close {
        session: SessionId,
        reason: CloseReason,
    },
    /// Report an observation.
    Event(HubEvent),
}

/// What a session's reader received.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// The session's first message.
    Hello { hello: pb::Hello, sent_at_ms: u64 },
    /// Any later message.
    Message(pb::SpeakerMessage),
    /// The stream ended (error or end-of-stream) without the hub closing it.
    Ended,
}

/// One [`Inbound`] of a session, with the instant it arrived.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) session: SessionId,
    pub(crate) what: Inbound,
    pub(crate) at: Instant,
}

/// Why the hub ends a session itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// A newer session of the same node took over.
    Replaced,
    /// This controller stopped being the leader.
    NotLeader,
}

/// A claim that outlived the session that made it: a replaced session's sends, or an address a speaker
/// reported announcing without this session having sent it.
#[derive(Debug, Clone, Copy)]
struct Inherited {
    /// The claim lapses at this instant (the speaker's lease has certainly run out by then).
    until: Instant,
    /// The speaker said it announces the address (so it is "announced", not only "may hold").
    reported: bool,
}

/// One speaker's live session.
#[derive(Debug)]
struct Session {
    id: SessionId,
    /// The generation the speaker held from an earlier session, as it said in Hello.
    held_generation: u64,
    /// A message after Hello arrived (normally the Report of step 1), so the first snapshot can take
    /// what the speaker already announces into account.
    ready: bool,
    silent: bool,
    leaving: bool,
    /// Acknowledgements can be trusted: generations in this session's acks can no longer be confused with
    /// the speaker's `held_generation` from an earlier session.
    synced: bool,
    /// Latest generation sent; starts at `held_generation` (nothing sent yet), so this session's
    /// generations are all above it and an acknowledgement can never be mistaken for the earlier session's.
    generation: u64,
    /// Latest generation acknowledged in this session.
    acked: u64,
    needs_snapshot: bool,
    /// Content of the latest generation sent.
    sent: BTreeMap<IpAddr, DesiredAssignment>,
    /// Addresses of every generation from `acked` (or 1) to `generation`: what the speaker may hold.
    history: BTreeMap<u64, BTreeSet<IpAddr>>,
    last_heard: Instant,
    /// The newest `sent_at_ms` received, and when it was received: the next lease echoes it.
    echo: Option<(u64, Instant)>,
    /// When the echo of the newest lease sent was received: the speaker's deadline is never later than
    /// this + lease (step 3), whatever the transit time of the lease itself.
    last_lease: Option<Instant>,
    /// When the newest lease was sent, to pace renewals.
    renewed_at: Option<Instant>,
    conflicts: BTreeSet<(IpAddr, String, Vec<u8>)>,
    problems: BTreeSet<(Option<IpAddr>, String, String)>,
    /// The BGP configuration last sent in this session, and its generation (step 9).
    bgp_sent: Option<(u64, Arc<pb::BgpConfig>)>,
    /// The BGP sessions it last reported.
    bgp_sessions: Vec<pb::BgpSessionState>,
}

impl Session {
    fn new(id: SessionId, held_generation: u64, sent_at_ms: u64, now: Instant) -> Self {
        Self {
            id,
            held_generation,
            ready: false,
            silent: false,
            leaving: false,
            synced: held_generation == 0,
            generation: held_generation,
            acked: 0,
            needs_snapshot: true,
            sent: BTreeMap::new(),
            history: BTreeMap::new(),
            last_heard: now,
            echo: (sent_at_ms > 0).then_some((sent_at_ms, now)),
            last_lease: None,
            renewed_at: None,
            conflicts: BTreeSet::new(),
            problems: BTreeSet::new(),
            bgp_sent: None,
            bgp_sessions: Vec::new(),
        }
    }

    fn may_hold(&self) -> impl Iterator<Item = &IpAddr> {
        self.history.values().flatten()
    }

    /// Whether what was sent in this session is a live claim (not lapsed after silence).
    fn has_claims(&self) -> bool {
        !self.history.is_empty()
    }
}

#[derive(Debug)]
struct Node {
    info: SpeakerInfo,
    session: Option<Session>,
    inherited: BTreeMap<IpAddr, Inherited>,
}

impl Node {
    /// Moves the claims of the current session into `inherited`, lapsing at its lease deadline.
    fn inherit_session_claims(&mut self, lease_deadline: Option<Instant>) {
        let Some(session) = &self.session else { return };
        let Some(until) = lease_deadline else { return };
        for address in session.may_hold() {
            let entry = self.inherited.entry(*address).or_insert(Inherited {
                until,
                reported: false,
            });
            entry.until = entry.until.max(until);
        }
    }
}

/// The fencing state machine (see the module documentation).
#[derive(Debug)]
pub(crate) struct Fence {
    lease: Duration,
    grace: Duration,
    activation_hold: Duration,
    active: bool,
    /// Until then, any address may still be held by a node that has not connected since activation.
    unknown_until: Option<Instant>,
    /// Addresses a connected node reported announcing during the unknown-holder window.
    reported: BTreeSet<IpAddr>,
    nodes: BTreeMap<String, Node>,
    session_nodes: BTreeMap<SessionId, String>,
    desired: BTreeMap<String, BTreeMap<IpAddr, DesiredAssignment>>,
    last_holder: BTreeMap<IpAddr, String>,
    pending_since: BTreeMap<(String, IpAddr), Instant>,
    /// Whether [`Fence::available`] or [`Fence::announced`] may have changed since the last
    /// [`Fence::take_views_changed`]: rebuilding them is O(cluster), so it happens only when needed.
    views_changed: bool,
    /// Whether anything that decides what may be sent (desired sets, sessions, acknowledgements, claims,
    /// the unknown-holder window) changed since [`Fence::send_assignments`] last ran. Timer ticks come
    /// every few milliseconds with a thousand speakers renewing; without this, every tick while some
    /// address waits for its fence would redo the O(cluster) work, starving the heartbeats it waits for.
    assignments_stale: bool,
    /// Each node's BGP configuration (step 9); nodes absent get an empty one.
    bgp: BTreeMap<String, Arc<pb::BgpConfig>>,
    /// Whether some session may lack its BGP configuration: it changed, or sets went out (a session's
    /// first set is what a BGP configuration follows).
    bgp_stale: bool,
    /// [`Fence::earliest_timer`] as of the last step. Between steps only plain heartbeats are taken in,
    /// and they can only push silence later, so this stays a safe (early) answer until the next step.
    wake_at: Option<Instant>,
    /// When the hub last resumed after running late (stepped more than a tenth of a lease after it asked
    /// to be woken: the process was starved of CPU or paused). Silence counts from no earlier than this:
    /// heartbeats that arrived during the stall may not have been read yet, and calling every speaker
    /// silent for the hub's own deafness stopped their renewals and let their leases lapse (seen on real
    /// kubelets during a rollout on two busy cores). Fencing does not depend on it: an address still moves
    /// only once its holder's lease has run out.
    resumed_at: Option<Instant>,
}

impl Fence {
    /// A fence for leases of `lease`, moving addresses of silent nodes `grace` after their deadline.
    pub(crate) fn new(lease: Duration, grace: Duration) -> Self {
        Self {
            lease,
            grace,
            activation_hold: lease,
            active: false,
            unknown_until: None,
            reported: BTreeSet::new(),
            nodes: BTreeMap::new(),
            session_nodes: BTreeMap::new(),
            desired: BTreeMap::new(),
            last_holder: BTreeMap::new(),
            pending_since: BTreeMap::new(),
            views_changed: true,
            assignments_stale: true,
            bgp: BTreeMap::new(),
            bgp_stale: false,
            wake_at: None,
            resumed_at: None,
        }
    }

    /// Whether the views may have changed since the last call (and resets the flag).
    pub(crate) fn take_views_changed(&mut self) -> bool {
        std::mem::take(&mut self.views_changed)
    }

    /// Sets how long after activation an unreported address may still be held elsewhere (default: the
    /// lease).
    pub(crate) fn with_activation_hold(mut self, hold: Duration) -> Self {
        self.activation_hold = hold;
        self
    }

    /// Whether new sessions are accepted.
    pub(crate) fn is_active(&self) -> bool {
        self.active
    }

    fn lease_deadline(&self, session: &Session) -> Option<Instant> {
        session.last_lease.map(|t| t + self.lease + self.grace)
    }

    fn lease_ms(&self) -> u32 {
        u32::try_from(self.lease.as_millis()).unwrap_or(u32::MAX)
    }

    /// Becomes leader (or stops being one). Stopping closes every session and forgets every node.
    pub(crate) fn set_active(&mut self, active: bool, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        self.views_changed = true;
        self.assignments_stale = true;
        if active == self.active {
            return out;
        }
        self.active = active;
        if active {
            self.unknown_until = Some(now + self.activation_hold + self.grace);
            self.reported.clear();
        } else {
            for (name, node) in std::mem::take(&mut self.nodes) {
                if let Some(session) = node.session {
                    out.push(Output::Close {
                        session: session.id,
                        reason: CloseReason::NotLeader,
                    });
                    out.push(Output::Event(HubEvent::Disconnected {
                        node: name,
                        why: DisconnectReason::NotLeader,
                    }));
                }
            }
            self.session_nodes.clear();
            self.unknown_until = None;
            self.reported.clear();
            self.last_holder.clear();
            self.pending_since.clear();
        }
        self.step(now, &mut out);
        out
    }

    /// Takes in what sessions' readers received, in order, each stamped with when it arrived, then
    /// steps once at `now`: handles silence, lapsed leases, renewals and fenced addresses that became
    /// free. Under load this is how the hub keeps up: a thousand acknowledgements cost one
    /// O(cluster) step, not a thousand.
    pub(crate) fn receive(
        &mut self,
        batch: impl IntoIterator<Item = Received>,
        now: Instant,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        if self
            .wake_at
            .is_some_and(|due| now.saturating_duration_since(due) > self.lease / 10)
        {
            self.resumed_at = Some(now);
        }
        let mut news = false;
        for Received { session, what, at } in batch {
            news |= match what {
                Inbound::Hello { hello, sent_at_ms } => {
                    self.record_connect(session, &hello, sent_at_ms, at, &mut out);
                    true
                }
                Inbound::Message(message) => self.record_message(session, &message, at, &mut out),
                Inbound::Ended => {
                    self.record_disconnect(session, &mut out);
                    true
                }
            };
        }
        // Plain heartbeats alone (a thousand speakers send thousands a second) leave nothing for a step
        // to do until a timer is due.
        if news || self.wake_at.is_some_and(|at| at <= now) {
            self.step(now, &mut out);
        }
        out
    }

    /// [`Fence::receive`] of one Hello.
    #[cfg(test)]
    pub(crate) fn connect(
        &mut self,
        session: SessionId,
        hello: &pb::Hello,
        sent_at_ms: u64,
        now: Instant,
    ) -> Vec<Output> {
        let hello = hello.clone();
        let what = Inbound::Hello { hello, sent_at_ms };
        self.receive(
            [Received {
                session,
                what,
                at: now,
            }],
            now,
        )
    }

    /// [`Fence::receive`] of one message.
    #[cfg(test)]
    pub(crate) fn message(
        &mut self,
        session: SessionId,
        message: &pb::SpeakerMessage,
        now: Instant,
    ) -> Vec<Output> {
        let what = Inbound::Message(message.clone());
        self.receive(
            [Received {
                session,
                what,
                at: now,
            }],
            now,
        )
    }

    /// [`Fence::receive`] of one stream end.
    #[cfg(test)]
    pub(crate) fn disconnect(&mut self, session: SessionId, now: Instant) -> Vec<Output> {
        let what = Inbound::Ended;
        self.receive(
            [Received {
                session,
                what,
                at: now,
            }],
            now,
        )
    }

    /// A session sent its Hello (already validated: the node name is not empty).
    fn record_connect(
        &mut self,
        id: SessionId,
        hello: &pb::Hello,
        sent_at_ms: u64,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        if !self.active {
            // Deactivated between accepting the session and taking in its Hello.
            out.push(Output::Close {
                session: id,
                reason: CloseReason::NotLeader,
            });
            return;
        }
        self.views_changed = true;
        self.assignments_stale = true;
        let info = SpeakerInfo::from_hello(hello);
        let name = info.node.clone();
        let session = Session::new(id, hello.held_generation, sent_at_ms, now);
        match self.nodes.get(&name) {
            Some(node) => {
                let deadline = node.session.as_ref().and_then(|s| self.lease_deadline(s));
                let Some(node) = self.nodes.get_mut(&name) else {
                    return;
                };
                node.inherit_session_claims(deadline);
                if let Some(old) = node.session.take() {
                    self.session_nodes.remove(&old.id);
                    out.push(Output::Close {
                        session: old.id,
                        reason: CloseReason::Replaced,
                    });
                    out.push(Output::Event(HubEvent::Disconnected {
                        node: name.clone(),
                        why: DisconnectReason::Replaced,
                    }));
                }
                node.info = info;
                node.session = Some(session);
            }
            None => {
                self.nodes.insert(
                    name.clone(),
                    Node {
                        info,
                        session: Some(session),
                        inherited: BTreeMap::new(),
                    },
                );
            }
        }
        self.session_nodes.insert(id, name.clone());
        out.push(Output::Event(HubEvent::Connected { node: name }));
    }

    /// A message after Hello arrived on a session; says whether it changed anything a step acts on.
    fn record_message(
        &mut self,
        id: SessionId,
        message: &pb::SpeakerMessage,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> bool {
        let Some(name) = self.session_nodes.get(&id).cloned() else {
            return false;
        };
        let unknown_window = self.unknown_until.is_some();
        let report_claim_until = [Some(now + self.lease + self.grace), self.unknown_until]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(now);
        let Some(node) = self.nodes.get_mut(&name) else {
            return false;
        };
        let Some(session) = node.session.as_mut() else {
            return false;
        };
        session.last_heard = now;
        if message.sent_at_ms > session.echo.map_or(0, |(sent, _)| sent) {
            session.echo = Some((message.sent_at_ms, now));
        }
        // The common case, a heartbeat from a live session acknowledging nothing new, changes nothing a
        // step would act on (silence and renewals are the timer's business): skip the O(cluster) step.
        // This keeps a thousand speakers' heartbeats cheap.
        if let Some(pb::speaker_message::Body::Heartbeat(heartbeat)) = &message.body
            && !session.silent
            && session.ready
            && (heartbeat.applied_generation == 0
                || heartbeat.applied_generation <= session.acked
                || heartbeat.applied_generation > session.generation)
            && (session.synced || heartbeat.applied_generation == session.held_generation)
        {
            return false;
        }
        self.views_changed = true;
        self.assignments_stale = true;
        if session.silent {
            session.silent = false;
            session.needs_snapshot = true;
            out.push(Output::Event(HubEvent::Connected { node: name.clone() }));
        }
        if !session.ready {
            session.ready = true;
            session.needs_snapshot = true;
        }
        use pb::speaker_message::Body;
        match &message.body {
            Some(Body::Heartbeat(heartbeat)) => {
                acknowledge(node, heartbeat.applied_generation);
            }
            Some(Body::Report(report)) => {
                acknowledge(node, report.applied_generation);
                let announcing = parse_announcing(&name, report);
                if unknown_window {
                    self.reported.extend(announcing.iter().copied());
                }
                apply_announcing(node, &name, &announcing, report_claim_until);
                // What a speaker reports it announces is announced by it: a later set giving it the
                // same address changes nothing anyone could see (a restarted controller must not report
                // ten thousand hand-overs that did not happen).
                for address in &announcing {
                    self.last_holder
                        .entry(*address)
                        .or_insert_with(|| name.clone());
                }
                report_findings(node, &name, report, out);
                // Reported BGP sessions may be left over from an earlier leader's configuration.
                self.bgp_stale |= !report.bgp_sessions.is_empty();
            }
            Some(Body::Leaving(_)) if !session.leaving => {
                session.leaving = true;
                // Rule 6: the speaker stops once it applied an empty set. One that holds nothing gets a
                // new (empty) one all the same, or it would wait out its --leave-timeout for nothing.
                session.needs_snapshot = true;
                self.assignments_stale = true;
                out.push(Output::Event(HubEvent::Disconnected {
                    node: name.clone(),
                    why: DisconnectReason::Leaving,
                }));
            }
            Some(Body::Leaving(_)) => {}
            Some(Body::Hello(_)) => {
                tracing::warn!(node = %name, "ignoring a second hello on one session");
            }
            None => {}
        }
        true
    }

    /// A session's stream ended (error or end-of-stream) without the hub closing it.
    fn record_disconnect(&mut self, id: SessionId, out: &mut Vec<Output>) {
        self.views_changed = true;
        self.assignments_stale = true;
        let Some(name) = self.session_nodes.remove(&id) else {
            return;
        };
        let deadline = self
            .nodes
            .get(&name)
            .and_then(|n| n.session.as_ref())
            .and_then(|s| self.lease_deadline(s));
        let Some(node) = self.nodes.get_mut(&name) else {
            return;
        };
        let (silent, leaving) = node
            .session
            .as_ref()
            .map_or((false, false), |s| (s.silent, s.leaving));
        if silent && !leaving {
            // A partition can end a stream too (keepalive, TCP timeout) while the speaker still announces:
            // once silent, only the lease deadline frees its addresses.
            node.inherit_session_claims(deadline);
        } else {
            // The speaker process closed its stream: nothing answers any more (rule 5b).
            node.inherited.clear();
            if !leaving {
                out.push(Output::Event(HubEvent::Disconnected {
                    node: name.clone(),
                    why: DisconnectReason::Reset,
                }));
            }
        }
        node.session = None;
    }

    /// Replaces every node's desired assignments (nodes absent from `desired` get none).
    pub(crate) fn set_desired(
        &mut self,
        desired: BTreeMap<String, Vec<DesiredAssignment>>,
        now: Instant,
    ) -> Vec<Output> {
        let mut owners: BTreeMap<IpAddr, &str> = BTreeMap::new();
        for (node, assignments) in &desired {
            for assignment in assignments {
                if let Some(other) = owners.insert(assignment.address, node)
                    && other != node
                {
                    tracing::warn!(address = %assignment.address, first = other, second = %node,
                        "address desired on two nodes; the one holding it keeps it");
                }
            }
        }
        self.desired.clear();
        self.update_desired(desired, now)
    }

    /// Replaces the desired assignments of the nodes in `changes` only (an empty list: none); the other
    /// nodes' stay as they are. What an incremental pass of the planner hands over.
    pub(crate) fn update_desired(
        &mut self,
        changes: BTreeMap<String, Vec<DesiredAssignment>>,
        now: Instant,
    ) -> Vec<Output> {
        for (node, assignments) in changes {
            if assignments.is_empty() {
                self.desired.remove(&node);
            } else {
                let set = assignments.into_iter().map(|a| (a.address, a)).collect();
                self.desired.insert(node, set);
            }
        }
        // Desired sets are no view: what is announced follows acknowledgements.
        self.assignments_stale = true;
        let mut out = Vec::new();
        self.step(now, &mut out);
        out
    }

    /// Replaces every node's BGP configuration (nodes absent get an empty one); each session gets its
    /// node's after its first set, and again whenever it changes. Not fenced (step 9).
    pub(crate) fn set_bgp(
        &mut self,
        desired: BTreeMap<String, Arc<pb::BgpConfig>>,
        now: Instant,
    ) -> Vec<Output> {
        self.bgp = desired;
        self.bgp_stale = true;
        let mut out = Vec::new();
        self.step(now, &mut out);
        out
    }

    /// Sends each session whose node's BGP configuration differs from what it was last sent the new one,
    /// once its first set went out (so a speaker's first message is always a set, as in step 2).
    fn send_bgp(&mut self, out: &mut Vec<Output>) {
        if !std::mem::take(&mut self.bgp_stale) {
            return;
        }
        let empty = Arc::new(pb::BgpConfig::default());
        let mut compared: HashMap<(*const pb::BgpConfig, *const pb::BgpConfig), bool> =
            HashMap::new();
        for (name, node) in &mut self.nodes {
            let Some(session) = node.session.as_mut() else {
                continue;
            };
            if session.renewed_at.is_none() || session.leaving {
                continue;
            }
            let wanted = self.bgp.get(name).unwrap_or(&empty);
            // Nodes alike share one configuration (thousands of routes): each distinct pair of
            // configurations is compared once per call, not once per node.
            let unchanged = session.bgp_sent.as_ref().is_some_and(|(_, sent)| {
                Arc::ptr_eq(sent, wanted)
                    || *compared
                        .entry((Arc::as_ptr(sent), Arc::as_ptr(wanted)))
                        .or_insert_with(|| sent == wanted)
            });
            // A speaker that reported no BGP session holds no BGP configuration: an empty one would
            // change nothing (the first Report of a session comes before its first set).
            let nothing_to_clear = session.bgp_sent.is_none()
                && session.bgp_sessions.is_empty()
                && wanted.peers.is_empty()
                && wanted.routes.is_empty();
            if unchanged || nothing_to_clear {
                continue;
            }
            let generation = session.bgp_sent.as_ref().map_or(1, |(g, _)| g + 1);
            out.push(Output::Send {
                session: session.id,
                message: pb::ControllerMessage {
                    body: Some(pb::controller_message::Body::Bgp(pb::BgpConfig {
                        generation,
                        ..(**wanted).clone()
                    })),
                },
            });
            session.bgp_sent = Some((generation, Arc::clone(wanted)));
        }
    }

    /// [`Fence::receive`] of nothing: time passed.
    #[cfg(test)]
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Output> {
        self.receive([], now)
    }

    /// When [`Fence::receive`] must next be called (with nothing received, time having passed), if ever.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        self.wake_at
    }

    /// The earliest instant a timer rule (silence, a lease deadline, a renewal, a claim or the
    /// unknown-holder window lapsing) may act; O(nodes), so computed once per step.
    fn earliest_timer(&self) -> Option<Instant> {
        let half = self.lease / 2;
        let renew_every = self.lease / 5;
        let mut earliest = self.unknown_until;
        let mut consider = |at: Instant| earliest = Some(earliest.map_or(at, |e| e.min(at)));
        for node in self.nodes.values() {
            node.inherited.values().for_each(|i| consider(i.until));
            let Some(session) = &node.session else {
                continue;
            };
            if session.silent {
                if session.has_claims() {
                    self.lease_deadline(session)
                        .into_iter()
                        .for_each(&mut consider);
                }
            } else {
                consider(self.heard(session) + half);
                if session.ready {
                    session
                        .renewed_at
                        .into_iter()
                        .for_each(|t| consider(t + renew_every));
                }
            }
        }
        earliest
    }

    /// Speakers able to take addresses now.
    pub(crate) fn available(&self) -> BTreeMap<String, SpeakerInfo> {
        self.nodes
            .iter()
            .filter(|(_, node)| {
                node.session
                    .as_ref()
                    .is_some_and(|s| !s.silent && !s.leaving)
            })
            .map(|(name, node)| (name.clone(), node.info.clone()))
            .collect()
    }

    /// Which node announces each address: it acknowledged a generation holding it, or reported it.
    pub(crate) fn announced(&self) -> BTreeMap<IpAddr, String> {
        let mut announced = BTreeMap::new();
        for (name, node) in &self.nodes {
            if let Some(session) = &node.session
                && session.synced
                && session.acked >= 1
            {
                for address in session.history.get(&session.acked).into_iter().flatten() {
                    announced.entry(*address).or_insert_with(|| name.clone());
                }
            }
            for (address, claim) in &node.inherited {
                if claim.reported {
                    announced.entry(*address).or_insert_with(|| name.clone());
                }
            }
        }
        announced
    }

    /// Every node that may hold each of `addresses` right now (the fencing invariant: at most one each).
    fn holders_of(&self, addresses: &BTreeSet<IpAddr>) -> BTreeMap<IpAddr, BTreeSet<String>> {
        let mut holders: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
        if addresses.is_empty() {
            return holders;
        }
        for (name, node) in &self.nodes {
            let in_session = node.session.iter().flat_map(Session::may_hold);
            for address in node.inherited.keys().chain(in_session) {
                if addresses.contains(address) {
                    holders.entry(*address).or_default().insert(name.clone());
                }
            }
        }
        holders
    }

    fn step(&mut self, now: Instant, out: &mut Vec<Output>) {
        let before = out.len();
        self.expire(now, out);
        self.send_assignments(now, out);
        self.send_bgp(out);
        // A session closed or gone silent changes who is available; a hand-over is only sent yet.
        if out[before..].iter().any(|o| {
            matches!(
                o,
                Output::Close { .. }
                    | Output::Event(HubEvent::Disconnected { .. } | HubEvent::Connected { .. })
            )
        }) {
            self.views_changed = true;
        }
        self.renew(now, out);
        self.wake_at = self.earliest_timer();
    }

    /// When `session` was last heard from, as far as silence goes: never before the hub last resumed.
    fn heard(&self, session: &Session) -> Instant {
        self.resumed_at.map_or(session.last_heard, |resumed| {
            session.last_heard.max(resumed)
        })
    }

    fn expire(&mut self, now: Instant, out: &mut Vec<Output>) {
        let half = self.lease / 2;
        let (lease, grace) = (self.lease, self.grace);
        let resumed_at = self.resumed_at;
        for (name, node) in &mut self.nodes {
            if let Some(session) = node.session.as_mut() {
                let heard = resumed_at.map_or(session.last_heard, |r| session.last_heard.max(r));
                if !session.silent && now >= heard + half {
                    session.silent = true;
                    self.assignments_stale = true;
                    out.push(Output::Event(HubEvent::Disconnected {
                        node: name.clone(),
                        why: DisconnectReason::Silent,
                    }));
                }
                let lapsed = session.last_lease.is_none_or(|t| t + lease + grace <= now);
                if session.silent && lapsed && session.has_claims() {
                    // Its lease ran out (rule 5c): it announces nothing until it is sent a new snapshot.
                    self.views_changed = true;
                    self.assignments_stale = true;
                    session.history.clear();
                    session.sent.clear();
                    session.needs_snapshot = true;
                }
            }
            let claims = node.inherited.len();
            node.inherited.retain(|_, claim| claim.until > now);
            if node.inherited.len() != claims {
                self.views_changed = true;
                self.assignments_stale = true;
            }
        }
        self.nodes
            .retain(|_, node| node.session.is_some() || !node.inherited.is_empty());
        if self.unknown_until.is_some_and(|until| until <= now) {
            self.unknown_until = None;
            self.reported.clear();
            self.assignments_stale = true;
        }
    }

    fn send_assignments(&mut self, now: Instant, out: &mut Vec<Output>) {
        // Fast path: nothing that decides what may be sent changed since the last run.
        if !std::mem::take(&mut self.assignments_stale) {
            return;
        }
        let (work, wanted) = self.sessions_behind();
        if work.is_empty() {
            self.pending_since.clear();
            return;
        }
        self.bgp_stale = true;
        // Sending changes no view: what is announced follows acknowledgements, not what was sent.
        let mut holders = self.holders_of(&wanted);
        let mut pending = BTreeSet::new();
        let valid_for_ms = self.lease_ms();
        for name in work {
            let Some(session) = self.nodes.get_mut(&name).and_then(|n| n.session.as_mut()) else {
                continue;
            };
            let desired = desired_for(&self.desired, &name, session);
            let claims = Claims {
                holders: &holders,
                unknown_window: self.unknown_until.is_some(),
                reported: &self.reported,
            };
            let target = claims.sendable(&name, desired, &session.sent, &mut pending);
            let Some(added) = send_set(session, target, now, valid_for_ms, out) else {
                continue;
            };
            for address in added {
                holders.entry(address).or_default().insert(name.clone());
                out.extend(self.handed_over(&name, address, now).map(Output::Event));
            }
        }
        self.pending_since.retain(|key, _| pending.contains(key));
        for key in pending {
            self.pending_since.entry(key).or_insert(now);
        }
    }

    /// The sessions whose latest set is not their desired one, and the addresses they still lack. This
    /// compares sets without allocating; the rest of [`Fence::send_assignments`] is only for those sessions
    /// and those addresses, so an acknowledgement that releases one address costs a scan of the claims, not
    /// a rebuild of them.
    fn sessions_behind(&self) -> (Vec<String>, BTreeSet<IpAddr>) {
        let mut work = Vec::new();
        let mut wanted = BTreeSet::new();
        for (name, node) in &self.nodes {
            let Some(session) = &node.session else {
                continue;
            };
            if !session.ready || session.silent {
                continue;
            }
            let desired = desired_for(&self.desired, name, session);
            if !session.needs_snapshot && desired == &session.sent {
                continue;
            }
            wanted.extend(desired.keys().filter(|a| !session.sent.contains_key(a)));
            work.push(name.clone());
        }
        (work, wanted)
    }

    /// Records that `address` was just sent to `name`: the hand-over event, unless it goes back to the
    /// node that announced it last (a new session, a lapsed lease renewed).
    fn handed_over(&mut self, name: &str, address: IpAddr, now: Instant) -> Option<HubEvent> {
        let waited = self
            .pending_since
            .remove(&(name.to_owned(), address))
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        let from = self.last_holder.insert(address, name.to_owned());
        if from.as_deref() == Some(name) {
            return None;
        }
        Some(HubEvent::HandedOver {
            address,
            from,
            to: name.to_owned(),
            waited,
        })
    }

    fn renew(&mut self, now: Instant, out: &mut Vec<Output>) {
        let renew_every = self.lease / 5;
        let valid_for_ms = self.lease_ms();
        for node in self.nodes.values_mut() {
            let Some(session) = node.session.as_mut() else {
                continue;
            };
            if !session.ready || session.silent {
                continue;
            }
            if session.renewed_at.is_some_and(|t| now >= t + renew_every) {
                session.renewed_at = Some(now);
                session.last_lease = session.echo.map(|(_, at)| at).or(session.last_lease);
                out.push(Output::Send {
                    session: session.id,
                    message: pb::ControllerMessage {
                        body: Some(pb::controller_message::Body::Renewal(pb::LeaseRenewal {
                            generation: session.generation,
                            lease: Some(pb::Lease {
                                valid_for_ms,
                                echo_ms: session.echo.map_or(0, |(sent, _)| sent),
                            }),
                        })),
                    },
                });
            }
        }
    }
}

/// What node `name` should hold: nothing while it is leaving, else its desired set.
fn desired_for<'a>(
    desired: &'a BTreeMap<String, BTreeMap<IpAddr, DesiredAssignment>>,
    name: &str,
    session: &Session,
) -> &'a BTreeMap<IpAddr, DesiredAssignment> {
    static EMPTY: BTreeMap<IpAddr, DesiredAssignment> = BTreeMap::new();
    if session.leaving {
        return &EMPTY;
    }
    desired.get(name).unwrap_or(&EMPTY)
}

/// Who may hold which address right now, as [`Fence::send_assignments`] decides what may be sent.
struct Claims<'a> {
    holders: &'a BTreeMap<IpAddr, BTreeSet<String>>,
    /// The window after activation in which holders the hub has not heard from may still announce.
    unknown_window: bool,
    /// Addresses some speaker reported holding since activation.
    reported: &'a BTreeSet<IpAddr>,
}

impl Claims<'_> {
    /// What `name` may be sent of `desired`: what it already has, and what nobody else may hold (rule 5;
    /// in the window after activation, rule 8). The rest waits in `pending`.
    fn sendable(
        &self,
        name: &str,
        desired: &BTreeMap<IpAddr, DesiredAssignment>,
        sent: &BTreeMap<IpAddr, DesiredAssignment>,
        pending: &mut BTreeSet<(String, IpAddr)>,
    ) -> BTreeMap<IpAddr, DesiredAssignment> {
        let mut target = BTreeMap::new();
        for (address, assignment) in desired {
            let holders = self.holders.get(address);
            let free = || {
                let others = holders.is_some_and(|h| h.iter().any(|holder| holder != name));
                let unknown = self.unknown_window
                    && !assignment.fresh
                    && !self.reported.contains(address)
                    && !holders.is_some_and(|h| h.contains(name));
                !(others || unknown)
            };
            if sent.contains_key(address) || free() {
                target.insert(*address, assignment.clone());
            } else {
                pending.insert((name.to_owned(), *address));
            }
        }
        target
    }
}

/// Sends `target` as the session's next generation, unless it is what the session already has; returns the
/// addresses it adds.
fn send_set(
    session: &mut Session,
    target: BTreeMap<IpAddr, DesiredAssignment>,
    now: Instant,
    valid_for_ms: u32,
    out: &mut Vec<Output>,
) -> Option<Vec<IpAddr>> {
    if target == session.sent && !session.needs_snapshot {
        return None;
    }
    session.generation += 1;
    session.needs_snapshot = false;
    session.renewed_at = Some(now);
    session.last_lease = session.echo.map(|(_, at)| at).or(session.last_lease);
    let echo_ms = session.echo.map_or(0, |(sent, _)| sent);
    session
        .history
        .insert(session.generation, target.keys().copied().collect());
    let added = target
        .keys()
        .filter(|a| !session.sent.contains_key(a))
        .copied()
        .collect();
    out.push(Output::Send {
        session: session.id,
        message: pb::ControllerMessage {
            body: Some(pb::controller_message::Body::Snapshot(pb::AssignmentSet {
                generation: session.generation,
                assignments: target.values().map(DesiredAssignment::to_proto).collect(),
                lease: Some(pb::Lease {
                    valid_for_ms,
                    echo_ms,
                }),
            })),
        },
    });
    session.sent = target;
    Some(added)
}

/// Takes an acknowledgement of `generation` (rule 4) into account.
fn acknowledge(node: &mut Node, generation: u64) {
    let Some(session) = node.session.as_mut() else {
        return;
    };
    if generation == 0 || generation > session.generation {
        return;
    }
    if !session.synced {
        // This session's generations start above `held_generation`: one at or below it is the earlier
        // session's, which says nothing about what the speaker applied from this one.
        if generation <= session.held_generation {
            return;
        }
        session.synced = true;
    }
    if generation > session.acked {
        session.acked = generation;
        session.history = session.history.split_off(&generation);
        // The speaker applied a snapshot of this session, which replaced whatever it held before.
        node.inherited.clear();
    }
}

fn parse_announcing(node: &str, report: &pb::Report) -> BTreeSet<IpAddr> {
    report
        .announcing
        .iter()
        .filter_map(|a| match a.address.parse::<IpAddr>() {
            Ok(address) => Some(address),
            Err(_) => {
                tracing::warn!(node, address = %a.address, "ignoring a bad address in a report");
                None
            }
        })
        .collect()
}

/// The report is the truth for claims older than this session: what it no longer announces is released;
/// what it announces without having been sent it in this session is a claim until `until`.
fn apply_announcing(node: &mut Node, name: &str, announcing: &BTreeSet<IpAddr>, until: Instant) {
    let Some(session) = node.session.as_ref() else {
        return;
    };
    let in_session: BTreeSet<IpAddr> = session.may_hold().copied().collect();
    let synced_once = session.synced && session.acked >= 1;
    node.inherited
        .retain(|address, _| announcing.contains(address) || in_session.contains(address));
    for address in announcing {
        if in_session.contains(address) {
            continue;
        }
        if synced_once {
            tracing::warn!(node = name, %address, "speaker reports an address it was not given");
        }
        let claim = node.inherited.entry(*address).or_insert(Inherited {
            until,
            reported: true,
        });
        claim.reported = true;
    }
}

/// Conflicts, and problems, taken from one report: each becomes a Kubernetes Event, and a speaker
/// hearing ARP replies from random MACs (anyone on the segment can send them) must not turn into an
/// Event flood. Whole reports are bounded by gRPC's 4 MiB message limit.
pub(super) const MAX_FINDINGS: usize = 64;

fn report_findings(node: &mut Node, name: &str, report: &pb::Report, out: &mut Vec<Output>) {
    let Some(session) = node.session.as_mut() else {
        return;
    };
    let sessions: Vec<pb::BgpSessionState> = report
        .bgp_sessions
        .iter()
        .take(MAX_FINDINGS)
        .cloned()
        .collect();
    if sessions != session.bgp_sessions {
        session.bgp_sessions.clone_from(&sessions);
        out.push(Output::Event(HubEvent::BgpSessions {
            node: name.to_owned(),
            sessions,
        }));
    }
    if report.conflicts.len() > MAX_FINDINGS || report.problems.len() > MAX_FINDINGS {
        tracing::warn!(
            node = name,
            conflicts = report.conflicts.len(),
            problems = report.problems.len(),
            limit = MAX_FINDINGS,
            "a report lists more findings than the limit; the rest are ignored"
        );
    }
    let mut conflicts = BTreeSet::new();
    for conflict in report.conflicts.iter().take(MAX_FINDINGS) {
        match conflict.address.parse::<IpAddr>() {
            Ok(address) => {
                conflicts.insert((
                    address,
                    conflict.interface.clone(),
                    conflict.foreign_mac.clone(),
                ));
            }
            Err(_) => {
                tracing::warn!(node = name, address = %conflict.address, "ignoring a conflict with a bad address");
            }
        }
    }
    // News is a contested (address, interface) this session had not reported: a flood of replies from
    // random MACs for one address is one Event, not one per MAC.
    let mut known: BTreeSet<(IpAddr, &str)> = session
        .conflicts
        .iter()
        .map(|(address, interface, _)| (*address, interface.as_str()))
        .collect();
    for (address, interface, foreign_mac) in &conflicts {
        if !known.insert((*address, interface.as_str())) {
            continue;
        }
        out.push(Output::Event(HubEvent::Conflict {
            node: name.to_owned(),
            address: *address,
            interface: interface.clone(),
            foreign_mac: foreign_mac.clone(),
        }));
    }
    session.conflicts = conflicts;
    let mut problems = BTreeSet::new();
    for problem in report.problems.iter().take(MAX_FINDINGS) {
        let address = if problem.address.is_empty() {
            None
        } else {
            match problem.address.parse::<IpAddr>() {
                Ok(address) => Some(address),
                Err(_) => {
                    tracing::warn!(node = name, address = %problem.address, "problem reported with a bad address");
                    None
                }
            }
        };
        problems.insert((address, problem.interface.clone(), problem.message.clone()));
    }
    for (address, interface, message) in problems.difference(&session.problems) {
        out.push(Output::Event(HubEvent::Problem {
            node: name.to_owned(),
            address: *address,
            interface: interface.clone(),
            message: message.clone(),
        }));
    }
    session.problems = problems;
}

#[cfg(test)]
#[path = "fence_tests.rs"]
mod tests;
