//! `dns-sync`: watches Services and Ingresses and keeps their DNS records in etcd, in the skydns format that
//! CoreDNS and external-dns use (`proto::skydns`), changing only the keys it owns.
//!
//! This crate holds the daemon's logic; `main.rs` only parses flags and calls [`run`]. The Kubernetes watchers and the etcd writer are not
//! built yet: today the daemon starts, serves its probes and metrics, and drains.

use ops::{Context, OpsArgs};

/// Command-line configuration (every flag also reads an environment variable).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "dns-sync", version, about)]
pub struct Config {
    /// Logging, ops endpoint and drain settings.
    #[command(flatten)]
    pub ops: OpsArgs,
}

/// Errors that stop the synchroniser.
#[derive(Debug, thiserror::Error)]
pub enum Error {}

/// Runs the synchroniser until `context.shutdown` is cancelled.
pub async fn run(_config: Config, context: Context) -> Result<(), Error> {
    context.health.set_ready("running");
    context.shutdown.cancelled().await;
    Ok(())
}
