//! What makes a groundwork daemon operable, shared so that all four behave alike for the people running them:
//!
//! - [`OpsArgs`]: the flags every daemon has (log format and filter, the ops listen address, drain time).
//! - [`logging`]: `tracing` output as text or JSON.
//! - [`shutdown`]: SIGTERM/SIGINT turned into a [`CancellationToken`] handed down, and a bounded drain.
//! - [`backoff`]: the one exponential backoff every retry loop uses.
//! - [`endpoint`]: one HTTP listener serving `/metrics` (Prometheus), `/healthz` and `/readyz`.
//!
//! Component logic never lives here; only the plumbing around it.

pub mod backoff;
pub mod endpoint;
pub mod etcd;
#[cfg(feature = "kube")]
pub mod kube;
pub mod logging;
pub mod shutdown;

use std::net::SocketAddr;
use std::time::Duration;

pub use tokio_util::sync::CancellationToken;

/// Flags shared by every daemon; flatten into the daemon's own clap `Config`.
#[derive(Debug, Clone, clap::Args)]
pub struct OpsArgs {
    /// Log output format: `text` for people, `json` for log pipelines.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: logging::LogFormat,

    /// Log filter in `tracing` EnvFilter syntax, e.g. `info` or `info,dns_server=debug`.
    #[arg(long, env = "LOG_FILTER", default_value = "info")]
    pub log_filter: String,

    /// Address of the HTTP listener for `/metrics`, `/healthz` and `/readyz` (port 0 picks a free port;
    /// the bound address is logged as `ops_addr`).
    #[arg(
        long,
        env = "OPS_ADDR",
        alias = "metrics-listen",
        default_value = "0.0.0.0:9090",
        value_parser = parse_listen
    )]
    pub ops_addr: SocketAddr,

    /// After SIGTERM/SIGINT, how long in-flight work may take to finish before the process exits anyway.
    #[arg(long, env = "DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

/// What a daemon's `run` function is handed: the shutdown token, plus the readiness and metrics registry the
/// ops endpoint serves.
#[derive(Debug, Clone)]
pub struct Context {
    /// Cancelled on SIGTERM/SIGINT; every long-running task selects on it.
    pub shutdown: CancellationToken,
    /// Readiness reported by `/readyz`.
    pub health: endpoint::Health,
}

/// The body of every daemon's `main`: installs logging, starts the ops endpoint with the daemon's metrics,
/// runs `run` until it returns or a signal asks it to stop, and bounds the drain. Exit codes: 0 after a clean
/// stop, 1 when `run` failed or the drain timed out, 64 for unusable flags (as sysexits' `EX_USAGE`).
pub fn run_daemon<F, Fut, E>(
    name: &'static str,
    args: &OpsArgs,
    mut registry: prometheus_client::registry::Registry,
    run: F,
) -> std::process::ExitCode
where
    F: FnOnce(Context) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    use std::process::ExitCode;

    register_build_info(&mut registry, name);
    if let Err(e) = logging::init(args.log_format, &args.log_filter) {
        eprintln!("{name}: {e}");
        return ExitCode::from(64);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let shutdown = match shutdown::on_signal() {
            Ok(token) => token,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                return ExitCode::FAILURE;
            }
        };
        let health = endpoint::Health::new();
        let endpoint = match endpoint::serve(
            args.ops_addr,
            health.clone(),
            std::sync::Arc::new(registry),
            shutdown.clone(),
        )
        .await
        {
            Ok(endpoint) => endpoint,
            Err(e) => {
                tracing::error!(ops_addr = %args.ops_addr, error = %e, "cannot bind the ops endpoint");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(daemon = name, version = env!("CARGO_PKG_VERSION"), "started");
        let context = Context {
            shutdown: shutdown.clone(),
            health,
        };
        let outcome =
            shutdown::run_with_drain(run(context), shutdown.clone(), args.drain_timeout).await;
        // The daemon is done; stop serving probes even if it returned without a signal.
        shutdown.cancel();
        let _ = endpoint.task.await;
        match outcome {
            shutdown::Outcome::Finished(Ok(())) => {
                tracing::info!(daemon = name, "stopped");
                ExitCode::SUCCESS
            }
            shutdown::Outcome::Finished(Err(e)) => {
                tracing::error!(daemon = name, error = %e, "failed");
                ExitCode::FAILURE
            }
            shutdown::Outcome::DrainTimedOut => {
                tracing::error!(daemon = name, drain_timeout = ?args.drain_timeout, "drain timed out, exiting anyway");
                ExitCode::FAILURE
            }
        }
    })
}

/// Registers `build_info{daemon, version} 1`, so dashboards can tell which build each pod runs.
fn register_build_info(registry: &mut prometheus_client::registry::Registry, name: &'static str) {
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;

    let info = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
    info.get_or_create(&vec![
        ("daemon", name),
        ("version", env!("CARGO_PKG_VERSION")),
    ])
    .set(1);
    registry.register("build_info", "Build of the running daemon", info);
}

/// Parses durations written as `500ms`, `10s`, `2m` or `1h`, the way Kubernetes users write them, and
/// sums of them as Go prints them (`1m30s`, `1h0m0s`: MetalLB's CRDs hold `metav1.Duration`s).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let mut rest = text;
    let mut total = Duration::ZERO;
    loop {
        let (part, after) = duration_part(text, rest)?;
        total = total.saturating_add(part);
        if after.is_empty() {
            return Ok(total);
        }
        rest = after;
    }
}

/// The first `<number><unit>` of `rest` (a tail of `text`, which errors name), and what follows it.
fn duration_part<'a>(text: &str, rest: &'a str) -> Result<(Duration, &'a str), String> {
    let split = rest
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {text:?} needs a unit (ms, s, m or h)"))?;
    let (number, tail) = rest.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("duration {text:?} must start with a whole number"))?;
    let unit_len = tail
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(tail.len());
    let (unit, after) = tail.split_at(unit_len);
    let millis = match unit {
        "ms" => value,
        "s" => value.saturating_mul(1_000),
        "m" => value.saturating_mul(60_000),
        "h" => value.saturating_mul(3_600_000),
        _ => {
            return Err(format!(
                "duration {text:?} has unknown unit {unit:?} (use ms, s, m or h)"
            ));
        }
    };
    Ok((Duration::from_millis(millis), after))
}

/// Parses a listen address `IP:PORT`, also with an IPv6 address written without brackets
/// (`fd00::7:9090`): Kubernetes substitutes `$(NODE_IP):9090` in a Pod's arguments without knowing the
/// address family, and the port is always last.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let bad = || format!("listen address {text:?} is not IP:PORT");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let ip: std::net::IpAddr = host.parse().map_err(|_| bad())?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    Ok(SocketAddr::new(ip, port))
}

/// [`parse_duration`] for periods, which cannot be zero (a timer with a zero period would fire without end;
/// Tokio's panics).
pub fn parse_period(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err(format!("period {:?} must be longer than zero", text.trim()));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_take_ipv6_with_or_without_brackets() {
        assert_eq!(
            parse_listen("10.0.0.7:9090").unwrap().to_string(),
            "10.0.0.7:9090"
        );
        assert_eq!(
            parse_listen("[fd00::7]:9090").unwrap().to_string(),
            "[fd00::7]:9090"
        );
        assert_eq!(
            parse_listen("fd00::7:9090").unwrap().to_string(),
            "[fd00::7]:9090"
        );
        for bad in ["", "9090", "node:9090", "10.0.0.7", "10.0.0.7:99999"] {
            let err = parse_listen(bad).unwrap_err();
            assert!(err.contains("IP:PORT"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_period_of_zero_is_refused_naming_the_value() {
        assert_eq!(parse_period("30s"), Ok(Duration::from_secs(30)));
        for zero in ["0s", "0ms", "0h"] {
            let err = parse_period(zero).unwrap_err();
            assert!(err.contains(zero) && err.contains("zero"), "{err}");
        }
    }

    #[test]
    fn durations_parse_with_kubernetes_style_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn durations_as_go_prints_them_are_summed() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h0m0s"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("1m30").is_err());
        assert!(parse_duration("1m-3s").is_err());
    }

    #[test]
    fn durations_without_a_known_unit_are_rejected_with_the_input_named() {
        for bad in ["10", "s", "10x", "-1s", ""] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}
