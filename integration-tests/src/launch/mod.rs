//! One launcher per groundwork daemon: a typed builder of its command line, started through [`Daemon`].
//!
//! Tests, benchmarks and the lab used to spell each daemon's flags out by hand, the same lb-controller
//! command line in eight places: a renamed flag or a new duration format had to be found in each, and a
//! test could drift from what the others run without anyone noticing. Here each flag the test bed uses is
//! one method, durations are written the way the daemons parse them (`600ms`, `2s`), and every launcher
//! shares how it is started ([`Launcher::start`], [`Launcher::start_in`]) or handed to a caller that spawns
//! the process itself ([`Launcher::command_in`]).
//!
//! A test whose point is one odd or bad flag (an exit 64 naming it) passes that flag, and only that one,
//! through the escape hatches [`Launcher::flag`] and [`Launcher::raw_arg`].

mod dns_server;
mod dns_sync;
mod lb_controller;
mod lb_speaker;

use std::fmt::Display;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub use dns_server::{DnsServer, DnsServerFlags};
pub use dns_sync::{DnsSync, DnsSyncFlags};
pub use lb_controller::{LbController, LbControllerFlags};
pub use lb_speaker::{LbSpeaker, LbSpeakerFlags};

use crate::Result;
use crate::certs::TlsFiles;
use crate::daemon::{Daemon, etcd_flags_with};
use crate::etcd::Etcd;
use crate::forward::Forward;
use crate::netlab::Host;

/// A daemon's own flags, as a launcher writes them.
pub trait Flags {
    /// Appends the flags to `args`.
    fn write(&self, args: &mut Vec<String>);
}

/// A daemon's command line being built: its binary, its own flags `D`, and what every daemon shares (log
/// filter, escape hatches). Use the aliases [`LbController`], [`LbSpeaker`], [`DnsSync`], [`DnsServer`].
#[derive(Debug, Clone)]
pub struct Launcher<D> {
    binary: String,
    daemon: D,
    log_filter: Option<String>,
    ops_in_args: bool,
    raw: Vec<String>,
}

impl<D: Flags> Launcher<D> {
    fn with(binary: impl AsRef<Path>, daemon: D) -> Self {
        Self {
            binary: binary.as_ref().display().to_string(),
            daemon,
            log_filter: None,
            ops_in_args: false,
            raw: Vec::new(),
        }
    }

    /// The binary it starts.
    pub fn binary(&self) -> &str {
        &self.binary
    }

    /// `--log-filter FILTER` (replacing an earlier one).
    pub fn log_filter(mut self, filter: &str) -> Self {
        self.log_filter = Some(filter.to_owned());
        self
    }

    /// Writes the ops endpoint on a free loopback port and JSON logs (`--ops-addr 127.0.0.1:0 --log-format
    /// json`) into [`Launcher::args`] too, for a caller that spawns the process itself; [`Launcher::start`]
    /// adds them (through [`Daemon`]) anyway.
    pub fn ops_in_args(mut self) -> Self {
        self.ops_in_args = true;
        self
    }

    /// Escape hatch: `name value` as given, for a test whose point is that one flag (an odd or bad value).
    pub fn flag(mut self, name: &str, value: impl Display) -> Self {
        self.raw.push(name.to_owned());
        self.raw.push(value.to_string());
        self
    }

    /// Escape hatch: one argument as given, for a test whose point is that one argument.
    pub fn raw_arg(mut self, arg: &str) -> Self {
        self.raw.push(arg.to_owned());
        self
    }

    /// The whole argument list (without the binary).
    pub fn args(&self) -> Vec<String> {
        self.line(self.ops_in_args)
    }

    fn line(&self, ops: bool) -> Vec<String> {
        let mut args = Vec::new();
        self.daemon.write(&mut args);
        if ops {
            args.extend(["--ops-addr", "127.0.0.1:0", "--log-format", "json"].map(str::to_owned));
        }
        if let Some(filter) = &self.log_filter {
            args.extend(["--log-filter".to_owned(), filter.clone()]);
        }
        args.extend(self.raw.iter().cloned());
        args
    }

    /// Starts it with [`Daemon::start`] (which adds the ops endpoint, JSON logs and the drain timeout).
    pub fn start(&self) -> Result<Daemon> {
        let args = self.line(false);
        Daemon::start(&self.binary, &refs(&args))
    }

    /// Starts it with [`Daemon::start_in`], inside `host`'s network namespace.
    pub fn start_in(&self, host: &Host) -> Result<Daemon> {
        let args = self.line(false);
        Daemon::start_in(host, &self.binary, &refs(&args))
    }

    /// The command running it with [`Launcher::args`], for a caller that spawns and watches the process.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command.args(self.args());
        command
    }

    /// [`Launcher::command`] inside `host`'s network namespace (`ip netns exec`).
    pub fn command_in(&self, host: &Host) -> Command {
        let mut command = host.command(&self.binary);
        command.args(self.args());
        command
    }
}

/// How a daemon reaches etcd: its `--etcd-*` flags ([`crate::daemon::etcd_flags`]).
#[derive(Debug, Clone)]
struct EtcdAccess {
    endpoint: String,
    tls: Option<TlsFiles>,
}

impl EtcdAccess {
    /// `etcd` at its own endpoint, with its client files when it serves TLS.
    fn of(etcd: &Etcd) -> Self {
        Self {
            endpoint: etcd.endpoint().to_owned(),
            tls: etcd.client_tls().cloned(),
        }
    }

    /// Through `forward` (from a namespace's loopback to etcd's client port); etcd's certificate names
    /// 127.0.0.1, which the forward listens on inside the namespace.
    fn through(&mut self, forward: &Forward) {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.endpoint = format!("{scheme}://127.0.0.1:{}", forward.local().port());
    }

    fn write(&self, args: &mut Vec<String>) {
        args.extend(etcd_flags_with(&self.endpoint, self.tls.as_ref()));
    }
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A duration as the daemons parse it (`ops::parse_duration`): whole seconds as `2s`, else milliseconds
/// (`600ms`).
fn duration(value: Duration) -> String {
    let millis = value.as_millis();
    if millis > 0 && millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

/// Appends `flag value` when `value` is set.
fn push_opt(args: &mut Vec<String>, flag: &str, value: Option<&String>) {
    if let Some(value) = value {
        args.extend([flag.to_owned(), value.clone()]);
    }
}

/// Appends `flag value` for each value.
fn push_each(args: &mut Vec<String>, flag: &str, values: &[String]) {
    for value in values {
        args.extend([flag.to_owned(), value.clone()]);
    }
}

/// Appends `flag DURATION` when `value` is set.
fn push_duration(args: &mut Vec<String>, flag: &str, value: Option<Duration>) {
    if let Some(value) = value {
        args.extend([flag.to_owned(), duration(value)]);
    }
}

/// Appends `flag` when `on`.
fn push_switch(args: &mut Vec<String>, flag: &str, on: bool) {
    if on {
        args.push(flag.to_owned());
    }
}

/// A path as a flag's value.
fn path_value(path: impl AsRef<Path>) -> String {
    path.as_ref().display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_as_the_daemons_parse_them() {
        assert_eq!(duration(Duration::from_millis(600)), "600ms");
        assert_eq!(duration(Duration::from_secs(2)), "2s");
        assert_eq!(duration(Duration::from_millis(15_000)), "15s");
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration(Duration::ZERO), "0ms");
    }
}

/// The leader-election flags lb-controller and dns-sync share.
#[derive(Debug, Clone, Default)]
pub struct Election {
    elect: bool,
    lease_name: Option<String>,
    lease_namespace: Option<String>,
    pod_name: Option<String>,
}

impl Election {
    fn write(&self, args: &mut Vec<String>) {
        push_switch(args, "--leader-elect", self.elect);
        push_opt(args, "--lease-name", self.lease_name.as_ref());
        push_opt(args, "--lease-namespace", self.lease_namespace.as_ref());
        push_opt(args, "--pod-name", self.pod_name.as_ref());
    }
}

/// A daemon that elects its leader through a Lease.
pub trait Elects: Flags {
    /// Its election flags.
    fn election(&mut self) -> &mut Election;
}

impl<D: Elects> Launcher<D> {
    /// `--leader-elect`: one replica leads through a Lease, the others stand by.
    pub fn leader_elect(mut self) -> Self {
        self.daemon.election().elect = true;
        self
    }

    /// `--lease-name NAME`: the Lease of the leader election.
    pub fn lease_name(mut self, name: &str) -> Self {
        self.daemon.election().lease_name = Some(name.to_owned());
        self
    }

    /// `--lease-namespace NAMESPACE`: the Lease's namespace.
    pub fn lease_namespace(mut self, namespace: &str) -> Self {
        self.daemon.election().lease_namespace = Some(namespace.to_owned());
        self
    }

    /// `--pod-name NAME`: this replica's identity in the Lease and in Events.
    pub fn pod_name(mut self, name: &str) -> Self {
        self.daemon.election().pod_name = Some(name.to_owned());
        self
    }
}
