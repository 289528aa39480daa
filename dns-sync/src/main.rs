//! The `dns-sync` binary: parse flags, then hand over to [`ops::run_daemon`] and [`dns_sync::run`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    let config = dns_sync::Config::parse();
    let ops = config.ops.clone();
    let registry = prometheus_client::registry::Registry::with_prefix("groundwork");
    ops::run_daemon("dns-sync", &ops, registry, |context| {
        dns_sync::run(config, context)
    })
}
