//! Speaker identities as a cluster hands them out: the speakers' ServiceAccount, a Pod of it bound to
//! each node, and a token requested for that Pod with the controller's audience. That token is what the
//! kubelet projects into a real speaker pod (the chart's `lb-speaker` DaemonSet); the API server puts
//! the Pod's node in it, and lb-controller checks it by TokenReview. Tests without kubelets use these
//! Pods (they stay Pending, nothing runs them) to give each `lb-speaker` process its node's token.

use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use crate::{HarnessError, Result};

/// The audience lb-controller asks for by default (`--speaker-token-audience`).
pub const AUDIENCE: &str = "lb-controller.groundwork.dev";

/// The speakers' ServiceAccount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerAccount {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl Default for SpeakerAccount {
    fn default() -> Self {
        Self {
            namespace: "groundwork-speakers".to_owned(),
            name: "lb-speaker".to_owned(),
        }
    }
}

impl SpeakerAccount {
    /// lb-controller's `--speaker-service-account` value.
    pub fn flag(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Creates the namespace and the ServiceAccount (idempotent).
    pub async fn ensure(&self, client: &kube::Client) -> Result<()> {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace = serde_json::from_value(json!({"metadata": {"name": self.namespace}}))
            .map_err(|e| HarnessError::Setup(format!("namespace object: {e}")))?;
        create_if_absent(namespaces.create(&PostParams::default(), &namespace).await)?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &self.namespace);
        let account = serde_json::from_value(json!({"metadata": {"name": self.name}}))
            .map_err(|e| HarnessError::Setup(format!("service account object: {e}")))?;
        create_if_absent(accounts.create(&PostParams::default(), &account).await)?;
        Ok(())
    }

    /// A token of this account bound to a Pod of it on `node` (created if absent), for `audience`.
    pub async fn token(&self, client: &kube::Client, node: &str, audience: &str) -> Result<String> {
        self.ensure(client).await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &self.namespace);
        let pod_name = format!("{}-{node}", self.name);
        let pod = serde_json::from_value(json!({
            "metadata": {"name": pod_name, "labels": {"app.kubernetes.io/name": "lb-speaker"}},
            "spec": {
                "nodeName": node,
                "serviceAccountName": self.name,
                "automountServiceAccountToken": false,
                // Never run: a stand-in for the speaker pod whose token the kubelet would project.
                "containers": [{"name": "lb-speaker", "image": "groundwork.invalid/lb-speaker:none"}],
            },
        }))
        .map_err(|e| HarnessError::Setup(format!("pod object: {e}")))?;
        create_if_absent(pods.create(&PostParams::default(), &pod).await)?;
        let pod = pods.get(&pod_name).await?;
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![audience.to_owned()]),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".to_owned()),
                    kind: Some("Pod".to_owned()),
                    name: Some(pod_name.clone()),
                    uid: pod.metadata.uid.clone(),
                }),
                expiration_seconds: Some(24 * 3600),
            }),
            ..TokenRequest::default()
        };
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &self.namespace);
        let issued = accounts
            .create_token_request(&self.name, &PostParams::default(), &request)
            .await?;
        issued
            .status
            .and_then(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                HarnessError::Setup(format!(
                    "the API server issued no token for pod {}/{pod_name}",
                    self.namespace
                ))
            })
    }

    /// Writes `node`'s token (default audience) to `dir/token-<node>` and returns the path, for
    /// `lb-speaker --token-file`.
    pub async fn token_file(
        &self,
        client: &kube::Client,
        node: &str,
        dir: &Path,
    ) -> Result<PathBuf> {
        let token = self.token(client, node, AUDIENCE).await?;
        let path = dir.join(format!("token-{node}"));
        std::fs::write(&path, token)
            .map_err(crate::io_err(format!("writing {}", path.display())))?;
        Ok(path)
    }
}

fn create_if_absent<T>(result: std::result::Result<T, kube::Error>) -> Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}
