//! The `dns-server` binary: parse and validate flags, then hand over to [`ops::run_daemon`] and
//! [`dns_server::run`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    let config = dns_server::Config::parse();
    let settings = match config.validate() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("dns-server: {error}");
            return std::process::ExitCode::from(64);
        }
    };
    let mut registry = prometheus_client::registry::Registry::with_prefix("groundwork");
    let metrics = dns_server::Metrics::register(&mut registry);
    ops::run_daemon("dns-server", &config.ops, registry, |context| {
        dns_server::run(settings, metrics, context)
    })
}
