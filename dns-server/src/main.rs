//! The `dns-server` binary: parse flags, then hand over to [`ops::run_daemon`] and [`dns_server::run`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    let config = dns_server::Config::parse();
    let ops = config.ops.clone();
    let registry = prometheus_client::registry::Registry::with_prefix("groundwork");
    ops::run_daemon("dns-server", &ops, registry, |context| {
        dns_server::run(config, context)
    })
}
