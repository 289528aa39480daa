//! `dns-server`: an authoritative DNS server answering from an in-memory index of the skydns records in
//! etcd (`proto::skydns`), kept current by an etcd watch.
//!
//! This crate holds the daemon's logic; `main.rs` only parses flags and calls [`run`]. The etcd index and the DNS listeners are not
//! built yet: today the daemon starts, serves its probes and metrics, and drains.

use ops::{Context, OpsArgs};

/// Command-line configuration (every flag also reads an environment variable).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "dns-server", version, about)]
pub struct Config {
    /// Logging, ops endpoint and drain settings.
    #[command(flatten)]
    pub ops: OpsArgs,
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {}

/// Runs the server until `context.shutdown` is cancelled.
pub async fn run(_config: Config, context: Context) -> Result<(), Error> {
    context.health.set_ready("running");
    context.shutdown.cancelled().await;
    Ok(())
}
