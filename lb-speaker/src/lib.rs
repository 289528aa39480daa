//! `lb-speaker`: runs on every node and answers ARP (IPv4) and NDP (IPv6) for the LoadBalancer addresses the
//! controller assigned to the node, only while its lease from the controller is valid; in BGP mode it
//! advertises the controller's prefixes to the node's routers instead.
//!
//! Pure logic and I/O are kept apart: [`frames`] (ARP/NDP bytes), [`holdings`] (the assignment set, its
//! generation and lease, per `announce.proto`) and [`interfaces`] (which links may announce) have no I/O;
//! neither has `link` (when to dial, heartbeat, leave and stop). [`responder`] owns the raw sockets,
//! [`control`] the connection to the controller, and [`speaker`] the loop that ties them together.
//! [`bfd`] runs BFD sessions (RFC 5880/5881) for the BGP speaker: a pure session state machine and one
//! runner owning the UDP sockets.
//! `main.rs` only parses flags and calls [`run`].
//!
//! BGP mode (step 9) lives in [`bgp`]: a wire codec, the session state machine and the Adj-RIB-Out are
//! pure; one task per peer owns its TCP connection, and [`bgp::BgpSpeaker`] is what the loop applies each
//! `BgpConfig` to and reads `Report.bgp_sessions` from. [`forwarding`] gives its peers their BFD sessions.

pub mod bfd;
pub mod bgp;
pub mod config;
pub mod control;
pub mod forwarding;
pub mod frames;
pub mod holdings;
pub mod interfaces;
mod link;
pub mod metrics;
pub mod responder;
pub mod speaker;

pub use config::{Config, ConfigError, Settings};
pub use metrics::Metrics;
use ops::Context;

/// Errors that stop the speaker.
#[derive(Debug, thiserror::Error)]
pub enum Error {}

/// Runs the speaker until `context.shutdown` is cancelled and the graceful leave is over.
pub async fn run(settings: Settings, metrics: Metrics, context: Context) -> Result<(), Error> {
    tracing::info!(
        node = %settings.node_name,
        controller = %settings.controller.uri,
        tls = settings.controller.tls.is_some(),
        "starting the speaker"
    );
    let (speaker, events) = speaker::Speaker::new(settings, metrics, context.health.clone());
    speaker.run(events, context.shutdown).await;
    Ok(())
}
