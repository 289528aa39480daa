//! The speaker's end of the controller connection: dialing with mutual TLS (or plaintext with
//! `--insecure`), opening the `Session` stream with Hello and the first Report already queued (step 1 of
//! `announce.proto`), and the reconnect backoff. What the session *does* lives in [`crate::speaker`].

use std::time::Duration;

pub use ops::backoff::Backoff;
use proto::announce::v1::announcer_client::AnnouncerClient;
use proto::announce::v1::{ControllerMessage, SpeakerMessage};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::config::{ControllerSettings, TlsMaterial};

/// How long one dial may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Messages the speaker may queue towards the controller before the session counts as stuck.
const OUTBOUND_QUEUE: usize = 64;

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The endpoint or TLS settings are unusable.
    #[error("configuring the controller endpoint: {0}")]
    Endpoint(String),
    /// Dialing failed (unreachable, TLS refused either way).
    #[error("connecting to the controller: {0}")]
    Connect(String),
    /// The controller refused the session.
    #[error("opening the session: {0}")]
    Session(String),
}

/// An open session.
#[derive(Debug)]
pub struct Session {
    /// Messages to the controller; dropping it closes our half of the stream.
    pub outbound: Option<mpsc::Sender<SpeakerMessage>>,
    /// Messages from the controller.
    pub inbound: tonic::Streaming<ControllerMessage>,
}

/// Renders an error with its whole source chain: tonic's own message ("transport error") says nothing
/// about the certificate that did not verify; the chain does.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Builds the endpoint with the TLS material just read; no I/O.
pub fn endpoint(
    settings: &ControllerSettings,
    tls: Option<&TlsMaterial>,
) -> Result<Endpoint, ControlError> {
    let mut endpoint = Endpoint::from(settings.uri.clone())
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    if let Some(tls) = tls {
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&tls.ca_pem))
            .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
            .domain_name(settings.domain.clone());
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| ControlError::Endpoint(chain(&e)))?;
    }
    Ok(endpoint)
}

/// Dials the controller and opens the session with `first` (Hello, Report) queued before the stream
/// starts, so the controller reads them first. The certificates and the token are read now, so
/// renewed ones take effect at the next session.
pub async fn open(
    settings: &ControllerSettings,
    first: Vec<SpeakerMessage>,
) -> Result<Session, ControlError> {
    let credentials = settings
        .tls
        .as_ref()
        .map(|files| files.load())
        .transpose()
        .map_err(|e| ControlError::Endpoint(e.to_string()))?;
    let (tls, token) = match &credentials {
        Some((tls, token)) => (Some(tls), Some(token)),
        None => (None, None),
    };
    let channel = endpoint(settings, tls)?
        .connect()
        .await
        .map_err(|e| ControlError::Connect(chain(&e)))?;
    let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
    for message in first {
        // The queue is empty and larger than the two first messages.
        tx.try_send(message)
            .map_err(|e| ControlError::Session(e.to_string()))?;
    }
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().map_err(|_| {
            ControlError::Endpoint("--token-file: not a valid header value".to_owned())
        })?;
        request.metadata_mut().insert("authorization", value);
    }
    let response = AnnouncerClient::new(channel)
        .session(request)
        .await
        .map_err(|status| {
            ControlError::Session(explain_refusal(chain(&status), settings.tls.is_some()))
        })?;
    Ok(Session {
        outbound: Some(tx),
        inbound: response.into_inner(),
    })
}

/// Adds the likely cause to a session that failed as it started. With TLS 1.3 the client's handshake
/// completes before the server checks the client certificate, so a refusal arrives on the first request
/// as a bare "connection closed" — or, depending on timing, hyper's "connection was not ready" (closed
/// before the request went out), a broken pipe or a reset.
fn explain_refusal(mut text: String, mutual_tls: bool) -> String {
    let lower = text.to_lowercase();
    let cut_short = [
        "connection closed",
        "connection was not ready",
        "broken pipe",
        "brokenpipe",
        "connection reset",
        "connectionreset",
    ]
    .iter()
    .any(|s| lower.contains(s));
    if mutual_tls && cut_short {
        text.push_str(
            " (the controller closed the connection as the session started: with mutual TLS this \
             means it refused this speaker's client certificate; check that --tls-cert is signed by \
             the CA the controller trusts for clients)",
        );
    }
    text
}

/// Exponential reconnect backoff (announce.proto rule 7): 50 ms doubling to 1 s, reset after a session
/// opened.
pub fn reconnect_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(50), Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_cut_short_under_mutual_tls_points_at_the_client_certificate() {
        // Both seen from a speaker whose certificate the controller refused (CI, stop 25).
        for seen in [
            "hyper::Error(Canceled, \"connection was not ready\")",
            "hyper::Error(Canceled, \"connection closed\")",
        ] {
            let explained = explain_refusal(seen.to_owned(), true);
            assert!(explained.contains("--tls-cert"), "{explained}");
            assert_eq!(explain_refusal(seen.to_owned(), false), seen);
        }
        let other = "dns error: failed to lookup address";
        assert_eq!(explain_refusal(other.to_owned(), true), other);
    }

    #[test]
    fn reconnects_back_off_from_50_ms_to_1_s() {
        let mut b = reconnect_backoff();
        let delays: Vec<u128> = (0..7).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [50, 100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn error_chains_are_rendered_in_full_without_repeats() {
        let inner = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        let outer = ControlError::Connect(chain(&inner));
        assert_eq!(
            outer.to_string(),
            "connecting to the controller: invalid peer certificate: UnknownIssuer"
        );
    }
}
