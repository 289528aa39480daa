//! The `lb-controller` binary: parse and validate flags, then hand over to [`ops::run_daemon`] and
//! [`lb_controller::run`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    let config = lb_controller::Config::parse();
    let settings = match config.validate() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("lb-controller: {error}");
            return std::process::ExitCode::from(64);
        }
    };
    let mut registry = prometheus_client::registry::Registry::with_prefix("groundwork");
    let metrics = lb_controller::Metrics::new(&mut registry);
    let hub = lb_controller::SpeakerHub::new(settings.hub, &mut registry);
    ops::run_daemon("lb-controller", &config.ops, registry, |context| {
        lb_controller::run(settings, metrics, hub, context)
    })
}
