//! The fence reached from outside the crate, for the fuzz targets under `fuzz/` only (feature `fuzzing`,
//! never enabled by the daemon). The fence stays crate-private; this forwards the calls the hub makes
//! (`Inner::with_fence`, `session::drive`) with the sessions' inputs and the fence's outputs as public
//! types, so a fuzzer can feed it any sequence of decoded speaker messages at any times.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use proto::announce::v1 as pb;
use tokio::time::Instant;

use super::fence::{self, Fence};
use super::{DesiredAssignment, HubEvent, SpeakerInfo};

/// What a session's reader received (the fence's `Inbound`).
#[derive(Debug, Clone)]
pub enum Inbound {
    /// The session's first message, with the speaker's send stamp.
    Hello {
        /// The Hello.
        hello: pb::Hello,
        /// Its `sent_at_ms`.
        sent_at_ms: u64,
    },
    /// Any later message.
    Message(pb::SpeakerMessage),
    /// The stream ended without the hub closing it.
    Ended,
}

/// What the hub must do after feeding the fence (the fence's `Output`).
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send `message` on session `session`.
    Send {
        /// The session.
        session: u64,
        /// The message.
        message: pb::ControllerMessage,
    },
    /// End session `session`; `replaced` when a newer session of its node took over, else the hub is
    /// no longer the leader.
    Close {
        /// The session.
        session: u64,
        /// Why.
        replaced: bool,
    },
    /// An observation.
    Event(HubEvent),
}

impl From<fence::Output> for Output {
    fn from(output: fence::Output) -> Self {
        match output {
            fence::Output::Send { session, message } => Self::Send { session, message },
            fence::Output::Close { session, reason } => Self::Close {
                session,
                replaced: reason == fence::CloseReason::Replaced,
            },
            fence::Output::Event(event) => Self::Event(event),
        }
    }
}

/// The fencing state machine behind a public face.
#[derive(Debug)]
pub struct FuzzFence(Fence);

fn outputs(outputs: Vec<fence::Output>) -> Vec<Output> {
    outputs.into_iter().map(Output::from).collect()
}

impl FuzzFence {
    /// A fence handing out leases of `lease`, moving a silent node's addresses `grace` after its deadline,
    /// and holding unreported addresses for `activation_hold` after activation.
    pub fn new(lease: Duration, grace: Duration, activation_hold: Duration) -> Self {
        Self(Fence::new(lease, grace).with_activation_hold(activation_hold))
    }

    /// Becomes the leader, or stops being one.
    pub fn set_active(&mut self, active: bool, now: Instant) -> Vec<Output> {
        outputs(self.0.set_active(active, now))
    }

    /// Takes in what sessions received, `(session, what, arrived at)` in order, then steps at `now`.
    pub fn receive(&mut self, batch: Vec<(u64, Inbound, Instant)>, now: Instant) -> Vec<Output> {
        let batch = batch
            .into_iter()
            .map(|(session, what, at)| fence::Received {
                session,
                what: match what {
                    Inbound::Hello { hello, sent_at_ms } => {
                        fence::Inbound::Hello { hello, sent_at_ms }
                    }
                    Inbound::Message(message) => fence::Inbound::Message(message),
                    Inbound::Ended => fence::Inbound::Ended,
                },
                at,
            });
        outputs(self.0.receive(batch, now))
    }

    /// Replaces every node's desired assignments.
    pub fn set_desired(
        &mut self,
        desired: BTreeMap<String, Vec<DesiredAssignment>>,
        now: Instant,
    ) -> Vec<Output> {
        outputs(self.0.set_desired(desired, now))
    }

    /// When [`FuzzFence::receive`] must next be called with nothing received.
    pub fn next_wake(&self) -> Option<Instant> {
        self.0.next_wake()
    }

    /// Which node announces each address, as the hub publishes it.
    pub fn announced(&self) -> BTreeMap<IpAddr, String> {
        self.0.announced()
    }

    /// Speakers able to take addresses now.
    pub fn available(&self) -> BTreeMap<String, SpeakerInfo> {
        self.0.available()
    }
}
