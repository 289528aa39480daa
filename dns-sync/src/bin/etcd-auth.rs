//! The `etcd-auth` binary: parse and validate flags, then hand over to [`ops::run_daemon`] and
//! [`dns_sync::etcd_auth::run`].

use clap::Parser;
use dns_sync::etcd_auth;

fn main() -> std::process::ExitCode {
    let config = etcd_auth::Config::parse();
    let settings = match config.validate() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("etcd-auth: {error}");
            return std::process::ExitCode::from(64);
        }
    };
    let registry = prometheus_client::registry::Registry::with_prefix("groundwork");
    ops::run_daemon("etcd-auth", &config.ops, registry, |context| {
        etcd_auth::run(settings, context)
    })
}
