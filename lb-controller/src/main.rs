//! The `lb-controller` binary: parse flags, then hand over to [`ops::run_daemon`] and [`lb_controller::run`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    let config = lb_controller::Config::parse();
    let ops = config.ops.clone();
    let registry = prometheus_client::registry::Registry::with_prefix("groundwork");
    ops::run_daemon("lb-controller", &ops, registry, |context| {
        lb_controller::run(config, context)
    })
}
