//! Every node's BGP sessions made visible: a `BGPSessionState` object per (node, peer) that
//! `kubectl get bgpsessionstates` lists, and an Event on the Node when a session comes up or goes down.
//!
//! The speakers report their sessions to the controller (`Report.bgp_sessions`); the hub passes each change
//! on. The objects are written by one task in the order reports came, so a quick flap never ends with an
//! older state written last; its queue is bounded, and when full the change is dropped and counted, to be
//! corrected by the node's next report.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use proto::announce::v1 as pb;
use serde_json::json;
use tokio::sync::mpsc;

use super::crd::BGPSessionState;

/// Reports waiting to be written, at most.
const QUEUE: usize = 256;
/// The field manager of our writes.
const MANAGER: &str = "groundwork-lb-controller";

/// The handle the controller's writer keeps.
#[derive(Debug, Clone)]
pub struct SessionStates {
    queue: mpsc::Sender<(String, Vec<pb::BgpSessionState>)>,
}

impl SessionStates {
    /// Starts the writing task.
    pub fn start(client: Client) -> Self {
        let (queue, mut reports) = mpsc::channel::<(String, Vec<pb::BgpSessionState>)>(QUEUE);
        tokio::spawn(async move {
            let api: Api<BGPSessionState> = Api::all(client);
            let mut written: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            while let Some((node, sessions)) = reports.recv().await {
                let names = write(&api, &node, &sessions).await;
                let before = written.insert(node, names.clone()).unwrap_or_default();
                for gone in before.difference(&names) {
                    if let Err(error) = api.delete(gone, &DeleteParams::default()).await
                        && !matches!(&error, kube::Error::Api(status) if status.code == 404)
                    {
                        tracing::warn!(name = gone, %error, "could not delete a BGPSessionState");
                    }
                }
            }
        });
        Self { queue }
    }

    /// Takes in `node`'s sessions as its speaker reported them.
    pub fn report(&self, node: &str, sessions: Vec<pb::BgpSessionState>) {
        if self.queue.try_send((node.to_owned(), sessions)).is_err() {
            tracing::warn!(node, "BGP session states not written: the queue is full");
        }
    }
}

/// Applies one object per session; the names written.
async fn write(
    api: &Api<BGPSessionState>,
    node: &str,
    sessions: &[pb::BgpSessionState],
) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for session in sessions {
        let name = object_name(node, &session.peer);
        let object = json!({
            "apiVersion": "groundwork.dev/v1alpha1", "kind": "BGPSessionState",
            "metadata": {"name": name, "labels": {"groundwork.dev/node": label_value(node)}},
            "spec": {"node": node, "peer": session.peer},
        });
        let status = json!({
            "apiVersion": "groundwork.dev/v1alpha1", "kind": "BGPSessionState",
            "status": {"bgpStatus": session.state, "bfdStatus": session.bfd_state,
                       "advertised": session.advertised, "lastError": session.last_error},
        });
        let params = PatchParams::apply(MANAGER).force();
        let result = match api.patch(&name, &params, &Patch::Apply(&object)).await {
            Ok(_) => {
                api.patch_status(&name, &params, &Patch::Apply(&status))
                    .await
            }
            Err(error) => Err(error),
        };
        match result {
            Ok(_) => {
                names.insert(name);
            }
            Err(error) => {
                tracing::warn!(node, peer = session.peer, %error, "could not write a BGPSessionState")
            }
        }
    }
    names
}

/// `<node>-<peer>` as an object name: lower case, anything but letters, digits, `-` and `.` as `-`.
pub fn object_name(node: &str, peer: &str) -> String {
    let name: String = format!("{node}-{peer}")
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    name.trim_matches(|c| c == '-' || c == '.')
        .chars()
        .take(253)
        .collect()
}

/// A node name as a label value (at most 63 characters).
fn label_value(node: &str) -> String {
    node.chars().take(63).collect()
}

/// The Event a change of `peer`'s session on a node calls for, if any: (warning, reason, message).
pub fn transition(
    before: Option<&pb::BgpSessionState>,
    now: &pb::BgpSessionState,
) -> Option<(bool, &'static str, String)> {
    let was_up = before.is_some_and(|b| b.state == "Established");
    let is_up = now.state == "Established";
    match (was_up, is_up) {
        (false, true) => Some((
            false,
            "BGPSessionEstablished",
            format!("BGP session with {} established", now.peer),
        )),
        (true, false) => Some((
            true,
            "BGPSessionDown",
            format!(
                "BGP session with {} is {}{}",
                now.peer,
                now.state,
                if now.last_error.is_empty() {
                    String::new()
                } else {
                    format!(": {}", now.last_error)
                }
            ),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(peer: &str, state: &str, error: &str) -> pb::BgpSessionState {
        pb::BgpSessionState {
            peer: peer.to_owned(),
            state: state.to_owned(),
            last_error: error.to_owned(),
            ..pb::BgpSessionState::default()
        }
    }

    #[test]
    fn names_are_valid_object_names() {
        assert_eq!(object_name("n1", "tor"), "n1-tor");
        assert_eq!(
            object_name("Node_A", "metallb/Tor 1"),
            "node-a-metallb-tor-1"
        );
    }

    #[test]
    fn only_coming_up_and_going_down_are_events_and_down_is_a_warning() {
        let up = state("tor", "Established", "");
        let down = state("tor", "Active", "hold timer expired");
        assert_eq!(
            transition(None, &up).map(|t| t.1),
            Some("BGPSessionEstablished")
        );
        assert_eq!(transition(Some(&up), &up), None);
        assert_eq!(
            transition(None, &down),
            None,
            "a session still coming up is no news"
        );
        let (warning, reason, message) = transition(Some(&up), &down).unwrap();
        assert!(warning);
        assert_eq!(reason, "BGPSessionDown");
        assert_eq!(
            message,
            "BGP session with tor is Active: hold timer expired"
        );
    }
}
