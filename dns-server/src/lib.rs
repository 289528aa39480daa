//! `dns-server`: an authoritative DNS server for the skydns records in etcd (the format of CoreDNS's etcd
//! plugin and external-dns's CoreDNS provider, `proto::skydns`).
//!
//! Layers, each testable alone: [`store`] keeps an in-memory index equal to etcd (list, then watch);
//! [`lookup`] answers one question from the index; [`handler`] applies the DNS protocol rules to one
//! message; [`server`] owns the UDP and TCP sockets. `main.rs` only parses flags and calls [`run`].

pub mod cache_key;
pub mod config;
pub mod forward;
pub mod handler;
pub mod ixfr;
pub mod lookup;
pub mod metrics;
pub mod notify;
pub mod rrl;
pub mod server;
pub mod store;
pub mod tcp_quota;
pub mod tsig;

use std::sync::{Arc, RwLock};

pub use config::{Config, ConfigError, Settings};
pub use metrics::Metrics;
use ops::Context;

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The DNS address cannot be bound.
    #[error("--listen {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Serves DNS until `context.shutdown` is cancelled. Readiness turns on after the first full read of etcd.
pub async fn run(settings: Settings, metrics: Metrics, context: Context) -> Result<(), Error> {
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    let zone_names: Vec<String> = settings
        .zones
        .names()
        .iter()
        .map(|z| z.to_ascii())
        .collect();
    let index = Arc::new(RwLock::new(store::index::Index::new(
        settings.source.layout.clone(),
        &zone_names,
    )));
    // The CPUs this process may use: std reads the cgroup CPU quota and the affinity mask, so a Pod limited
    // to two CPUs on a 64-core node serves with two threads, not 64.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let listeners =
        server::Listeners::bind(settings.listen, threads).map_err(|source| Error::Bind {
            addr: settings.listen,
            source,
        })?;
    let dns_addr = listeners.local_addr().map_err(|source| Error::Bind {
        addr: settings.listen,
        source,
    })?;
    tracing::info!(dns_addr = %dns_addr, zones = ?zone_names, "serving DNS");
    context.health.set_not_ready("loading records from etcd");
    let (revisions, revision_updates) = tokio::sync::watch::channel(0);
    let history = Arc::new(store::history::History::new(
        settings.source.clone(),
        zone_names.clone(),
    ));
    let follower = tokio::spawn(store::follower::follow(
        settings.source,
        index.clone(),
        context.health.clone(),
        metrics.store,
        revisions,
        context.shutdown.clone(),
    ));
    let secondaries = notify::Secondaries {
        targets: settings.notify,
        source: settings.notify_source,
        key: settings.tsig.notify_key.clone(),
    };
    let notifier = tokio::spawn(notify::run(
        secondaries,
        settings.zones.clone(),
        index.clone(),
        revision_updates,
        metrics.notify,
        context.shutdown.clone(),
    ));
    let limiter = rrl::Limiter::new(&settings.rrl, settings.zones.names());
    tracing::info!(
        responses_per_second = settings.rrl.responses_per_second,
        slip = settings.rrl.slip,
        table_bytes = limiter.table_bytes(),
        "response rate limiting of UDP answers"
    );
    let rrl = server::UdpRateLimit::new(limiter, metrics.rrl);
    let handler = Arc::new(handler::Handler::new(
        index,
        settings.zones,
        settings.transfer_allow,
        settings.forward,
        metrics.queries,
        settings.tsig.clone(),
    ));
    let quota = tcp_quota::TcpQuota::new(settings.tcp_limits);
    server::serve(
        listeners,
        handler,
        history,
        quota,
        rrl,
        context.shutdown.clone(),
    )
    .await;
    let _ = follower.await;
    let _ = notifier.await;
    Ok(())
}
