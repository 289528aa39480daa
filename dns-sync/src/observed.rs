//! `status.observedGeneration` on `DNSEndpoint`s, which external-dns writes and which tools that wait for an
//! object to be reconciled (kstatus in Flux and `kubectl wait`, Argo CD health checks) read: after a sync
//! wrote the records, each object whose status lags its generation is offered to one worker that patches the
//! status. The queue is bounded: when it is full, the rest are offered again by the next sync. An object
//! is offered once per generation; a failed patch is logged and offered again with the next sync.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use kube::Api;
use kube::api::{Patch, PatchParams};
use ops::CancellationToken;
use tokio::sync::mpsc;

use crate::dnsendpoint::DNSEndpoint;

/// How many status patches may wait for the worker. Far above the changes one sync makes in practice; a
/// first start over more lagging objects than this spreads them over a few syncs.
const QUEUE: usize = 1024;

/// (namespace, name) of a `DNSEndpoint`.
type Key = (String, String);

/// The sync's side: which objects were offered, and the queue to the worker.
pub struct Observer {
    queue: mpsc::Sender<(Key, i64)>,
    /// Offered and not failed, by the generation offered: only objects still lagging are kept.
    offered: HashMap<Key, i64>,
    /// Patches that failed, for the next [`Observer::offer`] to offer again.
    failed: Arc<Mutex<HashSet<Key>>>,
}

impl Observer {
    /// Starts the worker, which patches through `client` until `shutdown`.
    pub fn start(client: kube::Client, shutdown: CancellationToken) -> Self {
        let (queue, mut patches) = mpsc::channel::<(Key, i64)>(QUEUE);
        let failed: Arc<Mutex<HashSet<Key>>> = Arc::default();
        let failures = failed.clone();
        tokio::spawn(async move {
            loop {
                let ((namespace, name), generation) = tokio::select! {
                    () = shutdown.cancelled() => return,
                    next = patches.recv() => match next {
                        Some(patch) => patch,
                        None => return,
                    },
                };
                let api: Api<DNSEndpoint> = Api::namespaced(client.clone(), &namespace);
                let status = serde_json::json!({"status": {"observedGeneration": generation}});
                let patched = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await;
                if let Err(error) = patched {
                    tracing::warn!(dnsendpoint = %format!("{namespace}/{name}"), generation, error = %error, "cannot write status.observedGeneration");
                    failures
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert((namespace, name));
                }
            }
        });
        Self {
            queue,
            offered: HashMap::new(),
            failed,
        }
    }

    /// Offers the objects whose records were just written and whose status lags (see
    /// [`crate::dnsendpoint::lagging`]).
    pub fn offer(&mut self, lagging: impl IntoIterator<Item = (Key, i64)>) {
        let failed =
            std::mem::take(&mut *self.failed.lock().unwrap_or_else(PoisonError::into_inner));
        let mut offered = HashMap::new();
        for (key, generation) in lagging {
            let again = failed.contains(&key);
            if !again && self.offered.get(&key) == Some(&generation) {
                offered.insert(key, generation);
                continue;
            }
            // Full: the next sync offers it again. Closed: shutting down.
            if self.queue.try_send((key.clone(), generation)).is_ok() {
                offered.insert(key, generation);
            }
        }
        self.offered = offered;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observer(capacity: usize) -> (Observer, mpsc::Receiver<(Key, i64)>) {
        let (queue, patches) = mpsc::channel(capacity);
        let observer = Observer {
            queue,
            offered: HashMap::new(),
            failed: Arc::default(),
        };
        (observer, patches)
    }

    fn key(name: &str) -> Key {
        ("default".to_owned(), name.to_owned())
    }

    fn drain(patches: &mut mpsc::Receiver<(Key, i64)>) -> Vec<(Key, i64)> {
        std::iter::from_fn(|| patches.try_recv().ok()).collect()
    }

    #[test]
    fn each_generation_is_patched_once_and_a_failed_patch_is_offered_again() {
        let (mut observer, mut patches) = observer(8);
        observer.offer([(key("a"), 1), (key("b"), 3)]);
        assert_eq!(drain(&mut patches), [(key("a"), 1), (key("b"), 3)]);
        // Still lagging (the reflector has not seen the patch yet): not patched twice.
        observer.offer([(key("a"), 1), (key("b"), 3)]);
        assert_eq!(drain(&mut patches), []);
        // A new generation is; a failed patch is offered again.
        observer.failed.lock().unwrap().insert(key("b"));
        observer.offer([(key("a"), 2), (key("b"), 3)]);
        assert_eq!(drain(&mut patches), [(key("a"), 2), (key("b"), 3)]);
        // Objects no longer lagging are forgotten.
        observer.offer([]);
        assert!(observer.offered.is_empty());
    }

    #[test]
    fn a_full_queue_leaves_the_rest_for_the_next_sync() {
        let (mut observer, mut patches) = observer(2);
        let lagging = [(key("a"), 1), (key("b"), 1), (key("c"), 1)];
        observer.offer(lagging.clone());
        assert_eq!(drain(&mut patches), [(key("a"), 1), (key("b"), 1)]);
        observer.offer(lagging);
        assert_eq!(drain(&mut patches), [(key("c"), 1)]);
    }
}
