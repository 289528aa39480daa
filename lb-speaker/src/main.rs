//! The `lb-speaker` binary: parse flags, then hand over to [`ops::run_daemon`] and [`lb_speaker::run`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    let config = lb_speaker::Config::parse();
    let ops = config.ops.clone();
    let registry = prometheus_client::registry::Registry::with_prefix("groundwork");
    ops::run_daemon("lb-speaker", &ops, registry, |context| {
        lb_speaker::run(config, context)
    })
}
