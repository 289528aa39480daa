//! lb-controller's handling of speaker messages: the fencing state machine behind the speakers' gRPC
//! sessions (`speakers::fence`, reached through the `fuzzing` feature), fed the messages of a simulated
//! cluster at fuzzer-chosen times.
//!
//! Three honest speakers follow the speaker's half of `announce.proto` over links with a transit delay;
//! the fuzzer decides what is desired where, and when processes die, links partition, speakers reconnect or
//! leave, and leadership is lost and regained. Two rogue speakers send whatever the fuzzer makes up:
//! arbitrary Hellos (interfaces, addresses, generations), reports, heartbeats and leaves built field by
//! field or decoded from raw protobuf bytes, and stream ends. Rogues claim only addresses of their own
//! range (10.0.1.0/24): a speaker's report is trusted by design, so a rogue claiming an honest address
//! could make any fence hand it on.
//!
//! Asserts: nothing panics; no two honest speakers ever announce one address in the same millisecond;
//! the fence sends only to open sessions, snapshots only addresses desired on that node (nothing to a
//! leaving one), generations that rise within a session, renewals of the latest generation, and leases of
//! the configured length; and once things settle, an address desired on one healthy honest node only is
//! announced by it.
//!
//! Replaying a finding with `FUZZ_TRACE=1` in the environment prints the decoded input, every delivery
//! to the fence and every output.
#![no_main]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use arbitrary::Arbitrary;
use lb_controller::speakers::DesiredAssignment;
use lb_controller::speakers::fuzzing::{FuzzFence, Inbound, Output};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use proto::announce::v1 as pb;
use proto::speaker_messages;
use tokio::time::Instant;

const HONEST: usize = 3;
const ROGUES: usize = 2;
const ADDRESSES: u8 = 3;
const LEASE: Duration = Duration::from_millis(500);
const GRACE: Duration = Duration::from_millis(100);
const SETTLE_MS: u64 = 2000;

#[derive(Debug, Arbitrary)]
enum Op {
    /// (node, address) pairs; nodes past the honest ones are rogues, which get rogue addresses.
    Desire(Vec<(u8, u8)>),
    Kill(u8),
    Partition(u8, u16),
    Reconnect(u8),
    Leave(u8),
    Leadership(bool),
    Rogue(u8, Rogue),
}

#[derive(Debug, Arbitrary)]
enum Rogue {
    Hello {
        held_generation: u64,
        sent_at_ms: u64,
        version: String,
        interfaces: Vec<(String, Vec<u8>, Vec<Text>, bool)>,
    },
    Heartbeat(u64, u64),
    Report {
        sent_at_ms: u64,
        applied_generation: u64,
        announcing: Vec<(Text, String)>,
        conflicts: Vec<(Text, String, Vec<u8>)>,
        problems: Vec<(Text, String, String)>,
    },
    Leaving(u64),
    /// A message as it comes off the wire.
    Encoded(Vec<u8>),
    End,
}

/// An address as a rogue writes it.
#[derive(Debug, Arbitrary)]
enum Text {
    Own(u8),
    V6(u16),
    Cidr(u8, u8),
    Any(String),
}

impl Text {
    fn text(&self) -> String {
        match self {
            Self::Own(n) => rogue_address(*n).to_string(),
            Self::V6(n) => format!("fd00::{n:x}"),
            Self::Cidr(n, len) => format!("{}/{len}", rogue_address(*n)),
            Self::Any(text) => text.clone(),
        }
    }
}

fn honest_address(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, n % ADDRESSES + 1))
}

fn rogue_address(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, n % ADDRESSES + 1))
}

/// Whether a rogue's address text would claim an honest speaker's address.
fn is_honest(text: &str) -> bool {
    text.parse::<IpAddr>()
        .is_ok_and(|a| matches!(a, IpAddr::V4(v4) if v4.octets()[..3] == [10, 0, 0]))
}

#[derive(Debug, Arbitrary)]
struct Input {
    delay: u8,
    take_every: u8,
    steps: Vec<(Op, u16)>,
}

enum Up {
    Connect(pb::Hello, u64),
    Message(pb::SpeakerMessage),
    Closed,
}

#[derive(Default)]
struct Speaker {
    alive: bool,
    session: Option<u64>,
    applied: Option<(u64, BTreeSet<IpAddr>)>,
    lease_until: Option<u64>,
    partitioned_until: u64,
    leaving: bool,
    lost_messages: bool,
    next_beat: u64,
    inbox: VecDeque<(u64, u64, pb::ControllerMessage)>,
}

impl Speaker {
    fn announcing(&self, now: u64) -> BTreeSet<IpAddr> {
        match (&self.applied, self.lease_until) {
            (Some((_, set)), Some(until)) if self.alive && until > now => set.clone(),
            _ => BTreeSet::new(),
        }
    }
}

/// What the harness knows of one session, to check what the fence sends on it.
struct SessionView {
    node: String,
    open: bool,
    leaving: bool,
    generation: u64,
    /// The generation of the last BGP configuration sent.
    bgp_generation: u64,
}

struct World {
    /// `FUZZ_TRACE` set: print the input, every delivery and every output (replaying a finding).
    trace: bool,
    t0: Instant,
    delay: u64,
    take_every: u64,
    fence: FuzzFence,
    active: bool,
    speakers: Vec<Speaker>,
    rogue_sessions: Vec<Option<u64>>,
    upbox: VecDeque<(u64, u64, Up)>,
    next_session: u64,
    sessions: BTreeMap<u64, SessionView>,
    desired: BTreeMap<String, BTreeSet<IpAddr>>,
    last_desired: Vec<(usize, IpAddr)>,
}

fn name(n: usize) -> String {
    if n < HONEST {
        format!("node-{n}")
    } else {
        format!("rogue-{}", n - HONEST)
    }
}

fn heartbeat(applied: u64) -> pb::SpeakerMessage {
    speaker_messages::heartbeat(0, applied)
}

impl World {
    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn up(&mut self, now: u64, n: usize, session: u64, mut message: Up) {
        match &mut message {
            Up::Message(m) => m.sent_at_ms = now + 1,
            Up::Connect(_, sent_at) => *sent_at = now + 1,
            Up::Closed => {}
        }
        if self.speakers[n].partitioned_until <= now {
            self.upbox.push_back((now + self.delay, session, message));
        }
    }

    fn connect(&mut self, now: u64, n: usize) {
        if !self.active {
            // The hub turns sessions away while it is not the leader; the speaker keeps dialling.
            return;
        }
        let id = self.next_session;
        self.next_session += 1;
        let speaker = &mut self.speakers[n];
        if !speaker.alive {
            *speaker = Speaker {
                alive: true,
                lost_messages: speaker.lost_messages,
                ..Speaker::default()
            };
        }
        speaker.session = Some(id);
        speaker.leaving = false;
        let held = speaker.applied.as_ref().map_or(0, |(g, _)| *g);
        let announcing = speaker
            .announcing(now)
            .into_iter()
            .map(|address| speaker_messages::announcement(address, "eth0"));
        let hello = speaker_messages::hello_of(&name(n), held, vec![]);
        let report = speaker_messages::report(0, held, announcing);
        self.up(now, n, id, Up::Connect(hello, 0));
        self.up(now, n, id, Up::Message(report));
    }

    fn carry_out(&mut self, now: u64, outputs: Vec<Output>) {
        for output in outputs {
            if self.trace {
                eprintln!("{now} ms: {output:?}");
            }
            match output {
                Output::Send { session, message } => {
                    self.check_send(session, &message);
                    if let Some(speaker) = self
                        .speakers
                        .iter_mut()
                        .find(|s| s.session == Some(session))
                        && speaker.partitioned_until <= now
                    {
                        speaker
                            .inbox
                            .push_back((now + self.delay, session, message));
                    }
                }
                Output::Close { session, .. } => {
                    let view = self
                        .sessions
                        .get_mut(&session)
                        .expect("closing a session never opened");
                    assert!(view.open, "closing session {session} twice");
                    view.open = false;
                    for speaker in &mut self.speakers {
                        if speaker.session == Some(session) {
                            speaker.session = None;
                        }
                    }
                    for rogue in &mut self.rogue_sessions {
                        if *rogue == Some(session) {
                            *rogue = None;
                        }
                    }
                }
                Output::Event(_) => {}
            }
        }
    }

    fn check_send(&mut self, session: u64, message: &pb::ControllerMessage) {
        let view = self
            .sessions
            .get_mut(&session)
            .expect("sending on a session never opened");
        assert!(view.open, "sending on closed session {session}");
        let lease = |lease: &Option<pb::Lease>| {
            let lease = lease.expect("every snapshot and renewal carries a lease");
            assert_eq!(u128::from(lease.valid_for_ms), LEASE.as_millis());
        };
        match &message.body {
            Some(pb::controller_message::Body::Snapshot(set)) => {
                rise("set", set.generation, &mut view.generation);
                lease(&set.lease);
                let desired = self.desired.get(&view.node);
                for assignment in &set.assignments {
                    let address: IpAddr =
                        assignment.address.parse().expect("an address we desired");
                    assert!(!view.leaving, "{address} sent to leaving {}", view.node);
                    assert!(
                        desired.is_some_and(|d| d.contains(&address)),
                        "{address} sent to {} where it is not desired",
                        view.node
                    );
                }
            }
            Some(pb::controller_message::Body::Renewal(renewal)) => {
                assert_eq!(
                    renewal.generation, view.generation,
                    "renewal of an old generation"
                );
                lease(&renewal.lease);
            }
            Some(pb::controller_message::Body::Bgp(bgp)) => {
                // No BGP configuration is desired here: a session gets the empty one, after its first set.
                assert!(
                    view.generation > 0,
                    "BGP configuration before the first set on session {session}"
                );
                assert!(bgp.peers.is_empty() && bgp.routes.is_empty(), "{bgp:?}");
                rise("BGP", bgp.generation, &mut view.bgp_generation);
            }
            other => panic!("unexpected message {other:?}"),
        }
    }

    fn set_desired(&mut self, now: u64, pairs: &[(u8, u8)]) {
        let mut desired: BTreeMap<String, Vec<DesiredAssignment>> = BTreeMap::new();
        self.last_desired.clear();
        for (node, address) in pairs {
            let n = usize::from(*node) % (HONEST + ROGUES);
            let address = if n < HONEST {
                honest_address(*address)
            } else {
                rogue_address(*address)
            };
            self.last_desired.push((n, address));
            desired.entry(name(n)).or_default().push(DesiredAssignment {
                address,
                interfaces: vec![],
                services: vec!["default/web".into()],
                fresh: false,
            });
        }
        self.desired = desired
            .iter()
            .map(|(node, set)| (node.clone(), set.iter().map(|a| a.address).collect()))
            .collect();
        let out = self.fence.set_desired(desired, self.at(now));
        self.carry_out(now, out);
    }

    fn apply(&mut self, now: u64, op: &Op) {
        let honest = |n: &u8| usize::from(*n) % HONEST;
        match op {
            Op::Desire(pairs) => self.set_desired(now, pairs),
            Op::Kill(n) => {
                let speaker = &mut self.speakers[honest(n)];
                speaker.alive = false;
                speaker.inbox.clear();
                if let Some(session) = speaker.session.take() {
                    self.upbox
                        .push_back((now + self.delay, session, Up::Closed));
                }
            }
            Op::Partition(n, duration) => {
                let speaker = &mut self.speakers[honest(n)];
                speaker.partitioned_until = now + u64::from(*duration % 1500);
                speaker.lost_messages = true;
            }
            Op::Reconnect(n) if self.speakers[honest(n)].partitioned_until > now => {}
            Op::Reconnect(n) => self.connect(now, honest(n)),
            Op::Leave(n) => {
                let n = honest(n);
                if let (true, Some(session)) = (self.speakers[n].alive, self.speakers[n].session) {
                    self.speakers[n].leaving = true;
                    let leaving = speaker_messages::leaving(0);
                    self.up(now, n, session, Up::Message(leaving));
                }
            }
            Op::Leadership(active) => {
                self.active = *active;
                let out = self.fence.set_active(*active, self.at(now));
                self.carry_out(now, out);
            }
            Op::Rogue(r, rogue) => self.rogue(now, usize::from(*r) % ROGUES, rogue),
        }
    }

    fn rogue(&mut self, now: u64, r: usize, rogue: &Rogue) {
        let message = speaker_messages::message;
        use pb::speaker_message::Body;
        let up = match rogue {
            Rogue::Hello {
                held_generation,
                sent_at_ms,
                version,
                interfaces,
            } => {
                if !self.active {
                    return;
                }
                let hello = pb::Hello {
                    node: name(HONEST + r),
                    interfaces: interfaces
                        .iter()
                        .map(|(name, mac, addresses, up)| pb::Interface {
                            name: name.clone(),
                            mac: mac.clone(),
                            addresses: addresses.iter().map(Text::text).collect(),
                            up: *up,
                        })
                        .collect(),
                    version: version.clone(),
                    held_generation: *held_generation,
                };
                let id = self.next_session;
                self.next_session += 1;
                self.rogue_sessions[r] = Some(id);
                self.upbox
                    .push_back((now + self.delay, id, Up::Connect(hello, *sent_at_ms)));
                return;
            }
            Rogue::Heartbeat(sent_at_ms, applied_generation) => Up::Message(message(
                *sent_at_ms,
                Body::Heartbeat(pb::Heartbeat {
                    applied_generation: *applied_generation,
                }),
            )),
            Rogue::Report {
                sent_at_ms,
                applied_generation,
                announcing,
                conflicts,
                problems,
            } => Up::Message(message(
                *sent_at_ms,
                Body::Report(pb::Report {
                    applied_generation: *applied_generation,
                    announcing: announcing
                        .iter()
                        .map(|(address, interface)| pb::Announcement {
                            address: address.text(),
                            interface: interface.clone(),
                        })
                        .collect(),
                    conflicts: conflicts
                        .iter()
                        .map(|(address, interface, mac)| pb::Conflict {
                            address: address.text(),
                            interface: interface.clone(),
                            foreign_mac: mac.clone(),
                        })
                        .collect(),
                    problems: problems
                        .iter()
                        .map(|(address, interface, text)| pb::Problem {
                            address: address.text(),
                            interface: interface.clone(),
                            message: text.clone(),
                        })
                        .collect(),
                    // BGP session states only become status Events; `Rogue::Encoded` reaches them.
                    bgp_sessions: Vec::new(),
                }),
            )),
            Rogue::Leaving(sent_at_ms) => {
                Up::Message(message(*sent_at_ms, Body::Leaving(pb::Leaving {})))
            }
            Rogue::Encoded(bytes) => match pb::SpeakerMessage::decode(bytes.as_slice()) {
                Ok(message) => Up::Message(message),
                Err(_) => return,
            },
            Rogue::End => Up::Closed,
        };
        let Some(session) = self.rogue_sessions[r] else {
            return;
        };
        let up = match up {
            Up::Message(mut message) => {
                if let Some(Body::Report(report)) = &mut message.body {
                    report.announcing.retain(|a| !is_honest(&a.address));
                }
                Up::Message(message)
            }
            other => other,
        };
        if matches!(up, Up::Closed) {
            self.rogue_sessions[r] = None;
        }
        self.upbox.push_back((now + self.delay, session, up));
    }

    fn run_ms(&mut self, now: u64) {
        let mut batch = Vec::new();
        // Sessions whose stream end is in this batch: closed once the fence has taken the batch in, as
        // it takes it in order (a Hello before the end in the same batch may still be answered).
        let mut ended = Vec::new();
        if now.is_multiple_of(self.take_every) {
            while self.upbox.front().is_some_and(|(at, _, _)| *at <= now) {
                let Some((at, session, up)) = self.upbox.pop_front() else {
                    break;
                };
                let what = match up {
                    Up::Connect(hello, sent_at_ms) => {
                        let node = hello.node.clone();
                        self.sessions.insert(
                            session,
                            SessionView {
                                node,
                                open: true,
                                leaving: false,
                                generation: 0,
                                bgp_generation: 0,
                            },
                        );
                        Inbound::Hello { hello, sent_at_ms }
                    }
                    Up::Message(message) => {
                        if let (Some(view), Some(pb::speaker_message::Body::Leaving(_))) =
                            (self.sessions.get_mut(&session), &message.body)
                        {
                            view.leaving = true;
                        }
                        Inbound::Message(message)
                    }
                    Up::Closed => {
                        ended.push(session);
                        Inbound::Ended
                    }
                };
                if self.trace {
                    eprintln!("{now} ms: session {session} <- {what:?}");
                }
                batch.push((session, what, self.at(at)));
            }
        }
        if !batch.is_empty() || self.fence.next_wake().is_some_and(|w| w <= self.at(now)) {
            let out = self.fence.receive(batch, self.at(now));
            self.carry_out(now, out);
        }
        for session in ended {
            if let Some(view) = self.sessions.get_mut(&session) {
                view.open = false;
            }
        }
        for n in 0..HONEST {
            self.speaker_ms(now, n);
        }
    }

    fn speaker_ms(&mut self, now: u64, n: usize) {
        // The lease runs until the echoed send time + valid_for, on the speaker's clock.
        let until = |lease: &Option<pb::Lease>| {
            lease
                .filter(|l| l.echo_ms > 0)
                .map(|l| l.echo_ms - 1 + u64::from(l.valid_for_ms))
        };
        while self.speakers[n]
            .inbox
            .front()
            .is_some_and(|(at, _, _)| *at <= now)
        {
            let Some((_, session, message)) = self.speakers[n].inbox.pop_front() else {
                break;
            };
            let speaker = &mut self.speakers[n];
            if !speaker.alive || speaker.session != Some(session) {
                continue;
            }
            match message.body {
                Some(pb::controller_message::Body::Snapshot(set)) => {
                    let addresses = set
                        .assignments
                        .iter()
                        .filter_map(|a| a.address.parse().ok())
                        .collect();
                    speaker.applied = Some((set.generation, addresses));
                    speaker.lease_until = speaker.lease_until.max(until(&set.lease));
                    let leaving_done = speaker.leaving && set.assignments.is_empty();
                    self.up(now, n, session, Up::Message(heartbeat(set.generation)));
                    if leaving_done {
                        self.up(now, n, session, Up::Closed);
                        let speaker = &mut self.speakers[n];
                        speaker.alive = false;
                        speaker.session = None;
                    }
                }
                Some(pb::controller_message::Body::Renewal(renewal))
                    if speaker
                        .applied
                        .as_ref()
                        .is_some_and(|(g, _)| *g == renewal.generation) =>
                {
                    speaker.lease_until = speaker.lease_until.max(until(&renewal.lease));
                }
                _ => {}
            }
        }
        let speaker = &mut self.speakers[n];
        if speaker.alive && now >= speaker.next_beat {
            speaker.next_beat = now + 100;
            if let Some(session) = speaker.session {
                let applied = speaker.applied.as_ref().map_or(0, |(g, _)| *g);
                self.up(now, n, session, Up::Message(heartbeat(applied)));
            }
        }
    }

    fn check(&self, now: u64) {
        let mut seen: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for (n, speaker) in self.speakers.iter().enumerate() {
            for address in speaker.announcing(now) {
                if let Some(other) = seen.insert(address, n) {
                    panic!("{address} announced by node-{other} and node-{n} at {now} ms");
                }
            }
        }
    }
}

/// `next` follows `last` in a session's generations of `what`, which only rise.
fn rise(what: &str, next: u64, last: &mut u64) {
    assert!(next > *last, "{what} generation {next} after {last}");
    *last = next;
}

fuzz_target!(|input: Input| {
    let trace = std::env::var_os("FUZZ_TRACE").is_some();
    if trace {
        eprintln!("{input:#?}");
    }
    let t0 = Instant::now();
    let mut world = World {
        trace,
        t0,
        delay: u64::from(input.delay % 41),
        take_every: u64::from(input.take_every % 60) + 1,
        fence: FuzzFence::new(LEASE, GRACE, LEASE),
        active: true,
        speakers: (0..HONEST).map(|_| Speaker::default()).collect(),
        rogue_sessions: vec![None; ROGUES],
        upbox: VecDeque::new(),
        next_session: 1,
        sessions: BTreeMap::new(),
        desired: BTreeMap::new(),
        last_desired: vec![],
    };
    let out = world.fence.set_active(true, t0);
    world.carry_out(0, out);
    for n in 0..HONEST {
        world.connect(0, n);
    }
    let mut now = 0;
    for (op, wait) in input.steps.iter().take(32) {
        world.apply(now, op);
        for _ in 0..*wait % 400 {
            now += 1;
            world.run_ms(now);
            world.check(now);
        }
    }
    if !world.active {
        world.apply(now, &Op::Leadership(true));
    }
    for _ in 0..SETTLE_MS {
        now += 1;
        world.run_ms(now);
        world.check(now);
    }
    let _ = (world.fence.announced(), world.fence.available());
    // Nothing is held back for ever: an address desired on one healthy honest node only is announced.
    for (n, address) in &world.last_desired {
        let unique = world
            .last_desired
            .iter()
            .filter(|(_, b)| b == address)
            .count()
            == 1;
        let Some(speaker) = world.speakers.get(*n) else {
            continue;
        };
        let healthy = speaker.alive && speaker.session.is_some() && !speaker.leaving;
        if unique && healthy && !speaker.lost_messages {
            assert!(
                speaker.announcing(now).contains(address),
                "{address} desired on node-{n} is not announced at {now} ms"
            );
        }
    }
});
