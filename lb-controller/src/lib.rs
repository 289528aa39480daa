//! `lb-controller`: assigns addresses from IP pools to `type: LoadBalancer` Services, writes their status,
//! picks the node that announces each address, and pushes each node's assignments to its speaker over gRPC
//! (`proto::announce::v1`).
//!
//! Layout: pure logic first — [`ranges`] (address notation), [`pool`] (the `IPPool` CRD), [`legacy`]
//! (MetalLB's ConfigMap), [`request`] (what a Service asks for), [`allocator`] (who holds which address),
//! [`announcer`] (rendezvous choice of a node), [`plan`] (one reconcile pass) — then the I/O edges:
//! [`speakers`] (the gRPC hub with its fencing), `controller` (watches and the event loop) and `writer`
//! (API writes, run beside the loop). `main.rs` only parses flags and calls [`run`].

pub mod allocator;
pub mod announcer;
pub mod bgp;
pub mod config;
mod controller;
pub mod leader_service;
pub mod legacy;
pub mod metallb;
pub mod metrics;
pub mod plan;
pub mod pool;
pub mod ranges;
pub mod request;
mod schedule;
pub mod speakers;
mod writer;

pub use config::{Config, ConfigError, Settings};
pub use controller::Error;
pub use metrics::Metrics;
pub use speakers::SpeakerHub;

use ops::Context;

/// Every CRD the controller reads or writes, with the file name it has under `deploy/crds/` (generated from
/// the Rust types; a test fails when the files drift).
pub fn crds() -> Vec<(
    &'static str,
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
)> {
    use kube::CustomResourceExt;
    vec![
        ("ippools.groundwork.dev.yaml", pool::IPPool::crd()),
        ("bgppeers.groundwork.dev.yaml", bgp::BGPPeer::crd()),
        (
            "bgpadvertisements.groundwork.dev.yaml",
            bgp::BGPAdvertisement::crd(),
        ),
        ("bfdprofiles.groundwork.dev.yaml", bgp::BFDProfile::crd()),
        (
            "bgpsessionstates.groundwork.dev.yaml",
            bgp::BGPSessionState::crd(),
        ),
    ]
}

/// Runs the controller until `context.shutdown` is cancelled.
pub async fn run(
    settings: Settings,
    metrics: Metrics,
    hub: SpeakerHub,
    context: Context,
) -> Result<(), Error> {
    controller::run(settings, metrics, hub, context.health, context.shutdown).await
}

/// The CRDs of [`crds`] alone, to install.
pub fn crd_definitions()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    crds().into_iter().map(|(_, crd)| crd).collect()
}
