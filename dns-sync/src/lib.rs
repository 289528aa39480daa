//! `dns-sync`: watches Services, Ingresses, `DNSEndpoint`s, Gateway API routes and Nodes and keeps their DNS records
//! in etcd, in the skydns format that CoreDNS and external-dns use (`proto::skydns`), changing only the
//! records it owns.
//!
//! Layers: [`source`], [`dnsendpoint`] and [`gateway`] turn objects into wanted records (pure), with
//! [`service_types`] for the Services whose addresses live in Nodes and EndpointSlices, [`node_source`] for
//! the Nodes themselves, each record's data a
//! [`target::Target`], [`publish`] decides which of them may be
//! published and for which namespace (pure), [`plan`] diffs them against etcd under the ownership rules
//! (pure), [`ptr`] adds the reverse records of what was allowed (`--create-ptr`), [`writer`] reads etcd and applies a plan in guarded transactions, and [`controller`] runs the
//! reflectors, debounce, periodic resync and leader election. `main.rs` only parses flags and calls [`run`].
//!
//! [`etcd_auth`] (the `etcd-auth` binary) gives etcd the least-privilege identities dns-sync and dns-server run
//! as.

mod cluster_watch;
pub mod config;
pub mod controller;
pub mod dnsendpoint;
pub mod etcd_auth;
pub mod fqdn_template;
pub mod gateway;
pub mod label_filter;
pub mod metrics;
pub mod node_source;
pub mod observed;
pub mod plan;
pub mod ptr;
pub mod publish;
mod schedule;
pub mod service_types;
pub mod source;
pub mod target;
pub mod writer;

pub use config::{Config, ConfigError, Settings};
pub use controller::Error;
pub use metrics::Metrics;
use ops::Context;

/// Syncs until `context.shutdown` is cancelled (or once, with `--once`).
pub async fn run(settings: Settings, metrics: Metrics, context: Context) -> Result<(), Error> {
    controller::run(settings, metrics, context.health, context.shutdown).await
}
