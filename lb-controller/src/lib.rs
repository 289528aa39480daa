//! `lb-controller`: assigns addresses from IP pools to `type: LoadBalancer` Services, writes their status,
//! picks the node that announces each address, and pushes each node's assignments to its speaker over gRPC
//! (`proto::announce::v1`).
//!
//! This crate holds the daemon's logic; `main.rs` only parses flags and calls [`run`]. Pools, allocation and
//! the gRPC server are not built yet: today the daemon starts, serves its probes and metrics, and drains.

pub mod allocator;
pub mod announcer;
pub mod pool;
pub mod ranges;
pub mod request;
pub mod speakers;

use ops::{Context, OpsArgs};

/// Command-line configuration (every flag also reads an environment variable).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "lb-controller", version, about)]
pub struct Config {
    /// Logging, ops endpoint and drain settings.
    #[command(flatten)]
    pub ops: OpsArgs,
}

/// Errors that stop the controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {}

/// Runs the controller until `context.shutdown` is cancelled.
pub async fn run(_config: Config, context: Context) -> Result<(), Error> {
    context.health.set_ready("running");
    context.shutdown.cancelled().await;
    Ok(())
}
