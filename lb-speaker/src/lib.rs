//! `lb-speaker`: runs on every node and answers ARP (IPv4) and NDP (IPv6) for the LoadBalancer addresses the
//! controller assigned to the node, only while its lease from the controller is valid.
//!
//! This crate holds the daemon's logic; `main.rs` only parses flags and calls [`run`]. ARP/NDP and the controller session are not
//! built yet: today the daemon starts, serves its probes and metrics, and drains.

use ops::{Context, OpsArgs};

/// Command-line configuration (every flag also reads an environment variable).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "lb-speaker", version, about)]
pub struct Config {
    /// Logging, ops endpoint and drain settings.
    #[command(flatten)]
    pub ops: OpsArgs,
}

/// Errors that stop the speaker.
#[derive(Debug, thiserror::Error)]
pub enum Error {}

/// Runs the speaker until `context.shutdown` is cancelled.
pub async fn run(_config: Config, context: Context) -> Result<(), Error> {
    context.health.set_ready("running");
    context.shutdown.cancelled().await;
    Ok(())
}
