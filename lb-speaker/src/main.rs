//! The `lb-speaker` binary: parse and validate flags (exit 64 naming the flag when one is unusable), then
//! hand over to [`ops::run_daemon`] and [`lb_speaker::run`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    let config = match lb_speaker::Config::try_parse() {
        Ok(config) => config,
        Err(error) => {
            // --help and --version are "errors" printed to stdout; everything else is a usage error.
            let _ = error.print();
            return if error.use_stderr() {
                std::process::ExitCode::from(64)
            } else {
                std::process::ExitCode::SUCCESS
            };
        }
    };
    let settings = match config.validate() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("lb-speaker: {error}");
            return std::process::ExitCode::from(64);
        }
    };
    let mut registry = prometheus_client::registry::Registry::with_prefix("groundwork");
    let metrics = lb_speaker::Metrics::register(&mut registry);
    ops::run_daemon("lb-speaker", &config.ops, registry, |context| {
        lb_speaker::run(settings, metrics, context)
    })
}
