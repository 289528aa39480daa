//! What every groundwork daemon must do as a process, checked against its real binary: log its ops address,
//! answer `/healthz`, `/readyz` and `/metrics`, and exit 0 soon after SIGTERM.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::launch::{Flags, Launcher};
use crate::netlab::Host;
use crate::process::{Process, Scratch};
use crate::{Result, http, wait};

/// A daemon started by a test with its ops endpoint on a free loopback port and JSON logs.
#[derive(Debug)]
pub struct Daemon {
    process: Process,
    ops_addr: SocketAddr,
    /// The namespace it runs in, where its ops endpoint is reached (`None`: the test's own).
    netns: Option<Host>,
    _scratch: Scratch,
}

impl Daemon {
    /// Starts `binary` with `args`, and waits (bounded) until it logged the address of its ops endpoint.
    pub fn start(binary: &str, args: &[&str]) -> Result<Self> {
        Self::spawn(None, binary, args)
    }

    /// [`Daemon::start`] inside `host`'s network namespace (`ip netns exec`).
    pub fn start_in(host: &Host, binary: &str, args: &[&str]) -> Result<Self> {
        Self::spawn(Some(host), binary, args)
    }

    fn spawn(netns: Option<&Host>, binary: &str, args: &[&str]) -> Result<Self> {
        let name = std::path::Path::new(binary)
            .file_name()
            .map_or_else(|| binary.to_owned(), |n| n.to_string_lossy().into_owned());
        let scratch = Scratch::new(&name)?;
        let mut command = netns.map_or_else(|| Command::new(binary), |host| host.command(binary));
        command
            .args(["--ops-addr", "127.0.0.1:0", "--log-format", "json"])
            .args(["--drain-timeout", "5s"])
            .args(args);
        let log = scratch.join(&format!("{name}.log"));
        let mut process = Process::spawn(&name, command, &log)?;
        let ops_addr = wait::until_blocking(
            &format!("{name} to log its ops_addr"),
            Duration::from_secs(20),
            || {
                // The log first: a short-lived run (`--once`) may already have exited after logging it.
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if let Some(addr) = addr_in(&text, "ops_addr") {
                    return Ok(addr);
                }
                process.check_running().map_err(|e| e.to_string())?;
                Err("not logged yet".to_owned())
            },
        )?;
        Ok(Self {
            process,
            ops_addr,
            netns: netns.cloned(),
            _scratch: scratch,
        })
    }

    /// The ops endpoint's address.
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops_addr
    }

    /// The daemon's process.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Waits (bounded) until the daemon logs an address in the JSON field `field` (e.g. `dns_addr`).
    pub fn logged_addr(&mut self, field: &str, timeout: Duration) -> Result<SocketAddr> {
        let process = &mut self.process;
        wait::until_blocking(
            &format!("{} to log {field}", process.name()),
            timeout,
            || {
                let log = std::fs::read_to_string(process.log_path()).unwrap_or_default();
                if let Some(addr) = addr_in(&log, field) {
                    return Ok(addr);
                }
                process.check_running().map_err(|e| e.to_string())?;
                Err("not logged yet".to_owned())
            },
        )
    }

    /// GETs `path` from the ops endpoint.
    pub fn get(&self, path: &str) -> std::result::Result<http::Response, String> {
        ops_get(self.netns.as_ref(), self.ops_addr, path)
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let addr = self.ops_addr;
        let netns = self.netns.as_ref();
        let process = &mut self.process;
        wait::until_blocking("/readyz to answer 200", timeout, || {
            process.check_running().map_err(|e| e.to_string())?;
            let response = ops_get(netns, addr, "/readyz")?;
            if response.status == 200 {
                Ok(())
            } else {
                Err(format!("{}: {}", response.status, response.body.trim()))
            }
        })
    }
}

impl Daemon {
    /// Waits until `/metrics` holds the sample line `sample` (e.g. `groundwork_lb_controller_leader 1`: a
    /// replica leads, which `/readyz` does not say, a standby being ready too).
    pub fn wait_metric(&mut self, sample: &str, timeout: Duration) -> Result<()> {
        let addr = self.ops_addr;
        let netns = self.netns.as_ref();
        let process = &mut self.process;
        wait::until_blocking(&format!("/metrics to show {sample}"), timeout, || {
            process.check_running().map_err(|e| e.to_string())?;
            let response = ops_get(netns, addr, "/metrics")?;
            if response.body.lines().any(|l| l.trim() == sample) {
                Ok(())
            } else {
                Err(format!("{}: no {sample}", response.status))
            }
        })
    }
}

/// GETs `path` from an ops endpoint at `addr` in `netns` (`None`: the test's own namespace).
fn ops_get(
    netns: Option<&Host>,
    addr: SocketAddr,
    path: &str,
) -> std::result::Result<http::Response, String> {
    let Some(host) = netns else {
        return http::get(addr, path);
    };
    let path = path.to_owned();
    host.run(move || http::get(addr, &path))
        .map_err(|e| e.to_string())?
}

/// The `--etcd-*` flags (endpoint, and the TLS client files when etcd serves TLS) for a daemon reading
/// `etcd`.
pub fn etcd_flags(etcd: &crate::etcd::Etcd) -> Vec<String> {
    etcd_flags_with(etcd.endpoint(), etcd.client_tls())
}

/// The `--etcd-*` flags for reaching `etcd` with the client certificate `tls` (e.g. one from
/// [`crate::etcd::Etcd::issue_client`], whose CN is an etcd user).
pub fn etcd_flags_as(
    etcd: &crate::etcd::Etcd,
    tls: Option<&crate::certs::TlsFiles>,
) -> Vec<String> {
    etcd_flags_with(etcd.endpoint(), tls)
}

/// The `--etcd-*` flags for `endpoint`, with the TLS client files `tls`.
pub(crate) fn etcd_flags_with(endpoint: &str, tls: Option<&crate::certs::TlsFiles>) -> Vec<String> {
    let mut flags = vec!["--etcd-endpoints".to_owned(), endpoint.to_owned()];
    if let Some(tls) = tls {
        for (flag, path) in [
            ("--etcd-ca-file", &tls.ca),
            ("--etcd-cert-file", &tls.cert),
            ("--etcd-key-file", &tls.key),
        ] {
            flags.push(flag.to_owned());
            flags.push(path.display().to_string());
        }
    }
    flags
}

/// Finds `"<field>":"127.0.0.1:PORT"` in JSON log lines.
fn addr_in(log: &str, field: &str) -> Option<SocketAddr> {
    log.lines().find_map(|line| {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        value.get(field)?.as_str()?.parse().ok()
    })
}

/// Asserts the process contract of the daemon `launcher` starts: probes and metrics served, clean exit on
/// SIGTERM. Panics with the daemon's log on failure (this is an assertion helper for tests).
pub fn assert_lifecycle<D: Flags>(launcher: &Launcher<D>) {
    let binary = launcher.binary();
    let mut daemon = match launcher.start() {
        Ok(daemon) => daemon,
        Err(e) => panic!("{binary} did not start: {e}"),
    };
    let addr = daemon.ops_addr();
    let health = http::get(addr, "/healthz").unwrap_or_else(|e| panic!("/healthz: {e}"));
    assert_eq!((health.status, health.body.trim()), (200, "ok"));
    if let Err(e) = daemon.wait_ready(Duration::from_secs(20)) {
        panic!("{binary} never became ready: {e}");
    }
    let metrics = http::get(addr, "/metrics").unwrap_or_else(|e| panic!("/metrics: {e}"));
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("groundwork_build_info{"),
        "/metrics lacks groundwork_build_info:\n{}",
        metrics.body
    );
    daemon
        .process()
        .signal(Signal::SIGTERM)
        .unwrap_or_else(|e| panic!("{e}"));
    let status = daemon.process().wait_exit(Duration::from_secs(10));
    let tail = daemon.process().log_tail(20);
    let status =
        status.unwrap_or_else(|| panic!("{binary} still running 10 s after SIGTERM:\n{tail}"));
    assert!(
        status.success(),
        "{binary} exited with {status} after SIGTERM:\n{tail}"
    );
    assert!(
        tail.contains("\"stopped\""),
        "no 'stopped' log line:\n{tail}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ops_address_is_read_from_json_logs() {
        let log =
            "not json\n{\"message\":\"ops endpoint listening\",\"ops_addr\":\"127.0.0.1:4321\"}\n";
        assert_eq!(
            addr_in(log, "ops_addr"),
            Some(([127, 0, 0, 1], 4321).into())
        );
        assert_eq!(addr_in("{\"message\":\"x\"}", "ops_addr"), None);
    }
}
