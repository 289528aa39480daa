//! The I/O around the fence: the tonic `Announcer` service that opens sessions, a reader task per session
//! queueing what the speaker says, and one driver that takes in the queue and steps the fence, waking
//! exactly when it asked to (silence, renewals, lease deadlines) instead of polling.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use proto::announce::v1 as pb;
use proto::announce::v1::announcer_server::Announcer;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::fence::{CloseReason, Inbound, Received};
use super::{Inner, identity};

/// The sending half of one session's response stream.
#[derive(Debug)]
pub(super) struct Stream {
    tx: mpsc::UnboundedSender<Result<pb::ControllerMessage, Status>>,
    /// Stops the session's reader when the hub closes the session itself.
    closed: CancellationToken,
}

impl Stream {
    pub(super) fn send(&self, message: pb::ControllerMessage) {
        // A send fails only when the client went away; its reader reports that as the end of the stream.
        let _ = self.tx.send(Ok(message));
    }

    /// Ends the stream with a status saying why (dropping `self` drops the last sender).
    pub(super) fn close(self, reason: CloseReason) {
        let status = match reason {
            CloseReason::Replaced => Status::aborted("replaced by a newer session of this node"),
            CloseReason::NotLeader => Status::unavailable("not the leader"),
        };
        let _ = self.tx.send(Err(status));
        self.closed.cancel();
    }
}

/// The gRPC service speakers open their sessions on.
#[derive(Debug)]
pub struct SpeakerService {
    inner: Arc<Inner>,
}

impl SpeakerService {
    pub(super) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }
}

#[tonic::async_trait]
impl Announcer for SpeakerService {
    type SessionStream = UnboundedReceiverStream<Result<pb::ControllerMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::SpeakerMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        ensure_driver(&self.inner);
        if !self.inner.lock().fence.is_active() {
            return Err(Status::unavailable("not the leader"));
        }
        let token = identity::bearer(request.metadata()).map(str::to_owned);
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(self.inner.config.lease, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within one lease"))??;
        let (hello, sent_at_ms) = match first {
            Some(pb::SpeakerMessage {
                body: Some(pb::speaker_message::Body::Hello(hello)),
                sent_at_ms,
            }) => (hello, sent_at_ms),
            _ => return Err(Status::invalid_argument("the first message must be hello")),
        };
        if hello.node.is_empty() {
            return Err(Status::invalid_argument("hello.node must not be empty"));
        }
        if let Some(reviewer) = self.inner.identity.get()
            && let Err(refusal) = reviewer.verify(token.as_deref(), &hello.node).await
        {
            self.inner.metrics.refused(refusal.reason());
            tracing::warn!(node = %hello.node, reason = refusal.reason(), %refusal,
                    "refused a speaker session: it does not prove the node it names");
            return Err(Status::permission_denied(format!(
                "refused a session for node {}: {refusal}",
                hello.node
            )));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let closed = CancellationToken::new();
        let id = {
            let mut state = self.inner.lock();
            if !state.fence.is_active() {
                return Err(Status::unavailable("not the leader"));
            }
            let id = state.next_session;
            state.next_session += 1;
            state.streams.insert(
                id,
                Stream {
                    tx,
                    closed: closed.clone(),
                },
            );
            id
        };
        tracing::debug!(node = %hello.node, session = id, "session opened");
        self.inner
            .receive(id, Inbound::Hello { hello, sent_at_ms })
            .await;
        tokio::spawn(read_session(Arc::clone(&self.inner), id, inbound, closed));
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

/// Feeds a session's messages into the fence until the stream ends or the hub closes the session.
async fn read_session(
    inner: Arc<Inner>,
    id: super::fence::SessionId,
    mut inbound: Streaming<pb::SpeakerMessage>,
    closed: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            () = closed.cancelled() => return,
            next = inbound.message() => next,
        };
        match next {
            Ok(Some(message)) => inner.receive(id, Inbound::Message(message)).await,
            Ok(None) => {
                tracing::debug!(session = id, "speaker closed its stream");
                break;
            }
            Err(status) => {
                tracing::debug!(session = id, %status, "speaker stream broke");
                break;
            }
        }
    }
    inner.receive(id, Inbound::Ended).await;
}

/// Starts the driver once, if a Tokio runtime is running (it always is by the time a session
/// opens). The driver holds the hub weakly and ends when the hub is dropped.
pub(super) fn ensure_driver(inner: &Arc<Inner>) {
    if inner.driver_started.load(Ordering::Acquire) {
        return;
    }
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if inner.driver_started.swap(true, Ordering::AcqRel) {
        return;
    }
    let inbox = inner
        .inbox_rx
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(inbox) = inbox {
        handle.spawn(drive(Arc::downgrade(inner), Arc::clone(&inner.wake), inbox));
    }
}

/// The shortest time between two timer-driven steps of the fence.
const TICK_GRANULARITY: std::time::Duration = std::time::Duration::from_millis(10);

/// The one task that steps the fence for sessions and timers: it takes in everything the readers
/// received since its last step, then steps once. While a step runs the readers keep queueing, so the
/// busier the hub, the more each step takes in; a step never waits behind another per message.
async fn drive(
    inner: Weak<Inner>,
    wake: Arc<tokio::sync::Notify>,
    mut inbox: mpsc::Receiver<Received>,
) {
    let mut batch = Vec::new();
    loop {
        while let Ok(received) = inbox.try_recv() {
            batch.push(received);
        }
        let next = {
            let Some(inner) = inner.upgrade() else { return };
            let now = tokio::time::Instant::now();
            let mut state = inner.lock();
            for received in &batch {
                inner
                    .metrics
                    .observe_queued(now.saturating_duration_since(received.at));
                if matches!(received.what, Inbound::Ended) {
                    state.streams.remove(&received.session);
                }
            }
            let outputs = state.fence.receive(batch.drain(..), now);
            inner.apply(&mut state, outputs);
            state.fence.next_wake()
        };
        // Timer work is batched too: with a thousand speakers some renewal is always due, and one step
        // every TICK_GRANULARITY serves all of them (renewals go out every lease/5).
        let sleep = async {
            match next {
                Some(at) => {
                    let at = at.max(tokio::time::Instant::now() + TICK_GRANULARITY);
                    tokio::time::sleep_until(at).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = wake.notified() => {}
            received = inbox.recv() => match received {
                Some(received) => batch.push(received),
                None => return,
            },
        }
    }
}
