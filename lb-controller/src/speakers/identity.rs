//! Who may speak for a node.
//!
//! Mutual TLS proves that a client is one of our speakers, not which one: every speaker holds a
//! certificate from the same CA, and root on any node can read its key. So each session also carries
//! the speaker pod's projected ServiceAccount token (audience: this controller), and the controller asks
//! the API server (TokenReview) whose it is. A token bound to a pod names the node the pod runs on
//! (`authentication.kubernetes.io/node-name`, set by the API server from the pod, not by the speaker), so
//! a session whose Hello names node B is accepted only with a token of the speakers' ServiceAccount from
//! a pod on B. The kubelet rotates the token; the speaker reads it again for every session.
//!
//! [`judge`] is the rule, without I/O; [`TokenReviewer`] asks the API server and applies it.

use std::sync::Arc;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::PostParams;
use tokio::sync::Semaphore;

/// The extra field the API server sets on a pod-bound ServiceAccount token: the pod's node.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// Longest token accepted; Kubernetes tokens are about 1 KiB.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// TokenReviews in flight at once: a reconnect storm of a thousand speakers queues here instead of
/// flooding the API server.
const CONCURRENT_REVIEWS: usize = 8;

/// What a speaker's token must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The audience the speakers' projected token is issued for.
    pub audience: String,
    /// The speakers' ServiceAccount namespace.
    pub namespace: String,
    /// The speakers' ServiceAccount name.
    pub service_account: String,
}

impl Expected {
    /// The user name the API server gives the ServiceAccount.
    pub fn username(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }
}

/// Why a session was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No `authorization: Bearer` metadata.
    #[error("no ServiceAccount token (authorization: Bearer) came with the session")]
    NoToken,
    /// The token is not one the API server accepts for our audience.
    #[error("the token is not valid for audience {audience}: {error}")]
    Invalid {
        /// Our audience.
        audience: String,
        /// What the API server said.
        error: String,
    },
    /// A valid token of another account.
    #[error("the token belongs to {got}, not the speakers' ServiceAccount {expected}")]
    WrongAccount {
        /// The token's user.
        got: String,
        /// The speakers' account.
        expected: String,
    },
    /// A valid speaker token from a pod on another node (or not bound to a pod on a node).
    #[error("the Hello names node {claimed} but the token is from a pod on {}", .actual.as_deref().unwrap_or("no node"))]
    WrongNode {
        /// The node the Hello names.
        claimed: String,
        /// The node the token is bound to.
        actual: Option<String>,
    },
    /// The API server could not be asked.
    #[error("the TokenReview failed: {0}")]
    ReviewFailed(String),
}

impl Refusal {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoToken => "no_token",
            Self::Invalid { .. } => "invalid_token",
            Self::WrongAccount { .. } => "wrong_account",
            Self::WrongNode { .. } => "wrong_node",
            Self::ReviewFailed(_) => "review_failed",
        }
    }
}

/// The rule: the review authenticated the token for our audience, as the speakers' ServiceAccount,
/// bound to a pod on `node`.
pub fn judge(status: &TokenReviewStatus, expected: &Expected, node: &str) -> Result<(), Refusal> {
    let invalid = |error: &str| Refusal::Invalid {
        audience: expected.audience.clone(),
        error: error.to_owned(),
    };
    if status.authenticated != Some(true) {
        return Err(invalid(
            status
                .error
                .as_deref()
                .filter(|e| !e.is_empty())
                .unwrap_or("not authenticated"),
        ));
    }
    // The API server returns the audiences the token was valid for out of those asked; an empty list
    // means it checked against its own default audiences instead, which is not ours.
    let audiences = status.audiences.as_deref().unwrap_or_default();
    if !audiences.contains(&expected.audience) {
        return Err(invalid("the token was not issued for this audience"));
    }
    let user = status.user.as_ref();
    let username = user.and_then(|u| u.username.as_deref()).unwrap_or_default();
    if username != expected.username() {
        return Err(Refusal::WrongAccount {
            got: username.to_owned(),
            expected: expected.username(),
        });
    }
    let actual = user
        .and_then(|u| u.extra.as_ref())
        .and_then(|extra| extra.get(NODE_NAME_EXTRA))
        .and_then(|values| match values.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        });
    if actual.as_deref() != Some(node) {
        return Err(Refusal::WrongNode {
            claimed: node.to_owned(),
            actual,
        });
    }
    Ok(())
}

/// The token from gRPC metadata `authorization: Bearer <token>`, if well formed.
pub fn bearer(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    (!token.is_empty() && token.len() <= MAX_TOKEN_BYTES).then_some(token)
}

/// Asks the API server about each session's token.
#[derive(Clone)]
pub struct TokenReviewer {
    api: kube::Api<TokenReview>,
    expected: Expected,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl TokenReviewer {
    /// A reviewer using `client` (which needs `create` on `tokenreviews.authentication.k8s.io`).
    pub fn new(client: kube::Client, expected: Expected) -> Self {
        Self {
            api: kube::Api::all(client),
            expected,
            permits: Arc::new(Semaphore::new(CONCURRENT_REVIEWS)),
        }
    }

    /// Whether `token` may open a session for `node`.
    pub async fn verify(&self, token: Option<&str>, node: &str) -> Result<(), Refusal> {
        let token = token.ok_or(Refusal::NoToken)?;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec![self.expected.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| Refusal::ReviewFailed(e.to_string()))?;
        let reviewed = self
            .api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Refusal::ReviewFailed(e.to_string()))?;
        let status = reviewed.status.unwrap_or_default();
        judge(&status, &self.expected, node)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    fn expected() -> Expected {
        Expected {
            audience: "lb-controller.groundwork.dev".to_owned(),
            namespace: "groundwork-speakers".to_owned(),
            service_account: "lb-speaker".to_owned(),
        }
    }

    fn review(user: &str, node: Option<&str>, audiences: &[&str]) -> TokenReviewStatus {
        let extra =
            node.map(|n| BTreeMap::from([(NODE_NAME_EXTRA.to_owned(), vec![n.to_owned()])]));
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
            user: Some(UserInfo {
                username: Some(user.to_owned()),
                extra,
                ..UserInfo::default()
            }),
            error: None,
        }
    }

    const SPEAKER: &str = "system:serviceaccount:groundwork-speakers:lb-speaker";
    const AUDIENCE: &str = "lb-controller.groundwork.dev";

    #[test]
    fn a_speaker_token_from_a_pod_on_the_node_it_names_is_accepted() {
        assert_eq!(
            judge(&review(SPEAKER, Some("n1"), &[AUDIENCE]), &expected(), "n1"),
            Ok(())
        );
    }

    #[test]
    fn a_token_from_another_node_is_refused_naming_both_nodes() {
        let refusal =
            judge(&review(SPEAKER, Some("n1"), &[AUDIENCE]), &expected(), "n2").unwrap_err();
        assert_eq!(refusal.reason(), "wrong_node");
        assert_eq!(
            refusal.to_string(),
            "the Hello names node n2 but the token is from a pod on n1"
        );
    }

    #[test]
    fn a_token_not_bound_to_a_pod_on_a_node_is_refused() {
        let refusal = judge(&review(SPEAKER, None, &[AUDIENCE]), &expected(), "n1").unwrap_err();
        assert_eq!(
            refusal,
            Refusal::WrongNode {
                claimed: "n1".to_owned(),
                actual: None
            }
        );
    }

    #[test]
    fn another_account_on_the_right_node_is_refused() {
        let refusal = judge(
            &review(
                "system:serviceaccount:default:default",
                Some("n1"),
                &[AUDIENCE],
            ),
            &expected(),
            "n1",
        )
        .unwrap_err();
        assert_eq!(refusal.reason(), "wrong_account");
        assert!(refusal.to_string().contains(SPEAKER), "{refusal}");
    }

    #[test]
    fn a_token_for_another_audience_or_unauthenticated_is_invalid() {
        let other = review(SPEAKER, Some("n1"), &[]);
        assert_eq!(
            judge(&other, &expected(), "n1").unwrap_err().reason(),
            "invalid_token"
        );
        let denied = TokenReviewStatus {
            authenticated: Some(false),
            error: Some("token has expired".to_owned()),
            ..TokenReviewStatus::default()
        };
        let refusal = judge(&denied, &expected(), "n1").unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "the token is not valid for audience lb-controller.groundwork.dev: token has expired"
        );
    }

    #[test]
    fn bearer_tokens_are_read_from_metadata_and_bounded() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        assert_eq!(bearer(&metadata), None);
        metadata.insert("authorization", "Bearer abc.def".parse().unwrap());
        assert_eq!(bearer(&metadata), Some("abc.def"));
        metadata.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer(&metadata), None);
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        metadata.insert("authorization", huge.parse().unwrap());
        assert_eq!(bearer(&metadata), None);
    }
}
