//! The `dns-sync` binary: parse and validate flags, then hand over to [`ops::run_daemon`] and
//! [`dns_sync::run`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    let config = dns_sync::Config::parse();
    let settings = match config.validate() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("dns-sync: {error}");
            return std::process::ExitCode::from(64);
        }
    };
    let mut registry = prometheus_client::registry::Registry::with_prefix("groundwork");
    let metrics = dns_sync::Metrics::register(&mut registry);
    ops::run_daemon("dns-sync", &config.ops, registry, |context| {
        dns_sync::run(settings, metrics, context)
    })
}
