//! `dns-server`'s command line, and the start every DNS test wants: serving, ready, its DNS address known.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::{EtcdAccess, Flags, Launcher, path_value, push_each};
use crate::Result;
use crate::certs::TlsFiles;
use crate::daemon::Daemon;
use crate::etcd::Etcd;
use crate::forward::Forward;
use crate::netlab::Host;

/// The `dns-server` launcher: `DnsServer::new(binary, etcd)` serves zone `test.org` on a free loopback
/// port; [`DnsServer::serve`] starts it and waits until it is ready.
pub type DnsServer = Launcher<DnsServerFlags>;

/// dns-server's own flags (see [`DnsServer`]).
#[derive(Debug, Clone)]
pub struct DnsServerFlags {
    zone: String,
    more_zones: Vec<String>,
    listen: String,
    etcd: EtcdAccess,
    /// The other flags, in the order given.
    options: Vec<(&'static str, String)>,
}

impl Launcher<DnsServerFlags> {
    /// `binary` serving `--zone test.org` on `--listen 127.0.0.1:0` from `etcd` (its `--etcd-*` flags, with
    /// its client files when it serves TLS).
    pub fn new(binary: impl AsRef<Path>, etcd: &Etcd) -> Self {
        Self::with(
            binary,
            DnsServerFlags {
                zone: "test.org".to_owned(),
                more_zones: Vec::new(),
                listen: "127.0.0.1:0".to_owned(),
                etcd: EtcdAccess::of(etcd),
                options: Vec::new(),
            },
        )
    }

    /// `--zone ZONE` in place of `test.org`.
    pub fn zone(mut self, zone: &str) -> Self {
        self.daemon.zone = zone.to_owned();
        self
    }

    /// One more `--zone ZONE`, served besides the first.
    pub fn and_zone(mut self, zone: &str) -> Self {
        self.daemon.more_zones.push(zone.to_owned());
        self
    }

    /// `--listen ADDR` in place of a free loopback port.
    pub fn listen(mut self, addr: impl Display) -> Self {
        self.daemon.listen = addr.to_string();
        self
    }

    /// Reaches etcd through `forward` (from the daemon's namespace's loopback to etcd's client port).
    pub fn etcd_through(mut self, forward: &Forward) -> Self {
        self.daemon.etcd.through(forward);
        self
    }

    /// Reaches etcd with the client certificate `identity` (its CN an etcd user) instead of etcd's own.
    pub fn etcd_identity(mut self, identity: &TlsFiles) -> Self {
        self.daemon.etcd.tls = Some(identity.clone());
        self
    }

    fn option(mut self, flag: &'static str, value: impl Display) -> Self {
        self.daemon.options.push((flag, value.to_string()));
        self
    }

    /// `--transfer-allow CIDR` (one more): who may transfer the zone.
    pub fn transfer_allow(self, cidr: &str) -> Self {
        self.option("--transfer-allow", cidr)
    }

    /// `--notify ADDR` (one more): a secondary told of changes.
    pub fn notify(self, addr: impl Display) -> Self {
        self.option("--notify", addr)
    }

    /// `--ns NAME=ADDRESS[;...]`: the zone's name servers.
    pub fn ns(self, name_servers: &str) -> Self {
        self.option("--ns", name_servers)
    }

    /// `--forward ZONE=ADDR` (one more): a zone forwarded upstream.
    pub fn forward(self, zone_upstream: &str) -> Self {
        self.option("--forward", zone_upstream)
    }

    /// `--rrl-exempt CIDR` (one more): clients response rate limiting leaves alone.
    pub fn rrl_exempt(self, cidr: &str) -> Self {
        self.option("--rrl-exempt", cidr)
    }

    /// `--rrl-responses-per-second N` (0: rate limiting off).
    pub fn rrl_responses_per_second(self, rate: u32) -> Self {
        self.option("--rrl-responses-per-second", rate)
    }

    /// `--tcp-max-clients N`: TCP connections open at once.
    pub fn tcp_max_clients(self, connections: u32) -> Self {
        self.option("--tcp-max-clients", connections)
    }

    /// `--tcp-max-per-client N`: TCP connections one client may hold.
    pub fn tcp_max_per_client(self, connections: u32) -> Self {
        self.option("--tcp-max-per-client", connections)
    }

    /// `--tsig-key-file PATH` (one more): TSIG keys as `tsig-keygen` writes them.
    pub fn tsig_key_file(self, path: impl AsRef<Path>) -> Self {
        self.option("--tsig-key-file", path_value(path))
    }

    /// `--transfer-key NAME`: transfers must be signed with this key.
    pub fn transfer_key(self, name: &str) -> Self {
        self.option("--transfer-key", name)
    }

    /// `--notify-key NAME`: NOTIFY is signed with this key.
    pub fn notify_key(self, name: &str) -> Self {
        self.option("--notify-key", name)
    }

    /// Starts it and waits (bounded) until it logged its DNS address and is ready; returns both.
    pub fn serve(&self) -> Result<(Daemon, SocketAddr)> {
        ready(self.start()?)
    }

    /// [`DnsServer::serve`] inside `host`'s network namespace.
    pub fn serve_in(&self, host: &Host) -> Result<(Daemon, SocketAddr)> {
        ready(self.start_in(host)?)
    }
}

fn ready(mut daemon: Daemon) -> Result<(Daemon, SocketAddr)> {
    let dns = daemon.logged_addr("dns_addr", Duration::from_secs(10))?;
    daemon.wait_ready(Duration::from_secs(30))?;
    Ok((daemon, dns))
}

impl Flags for DnsServerFlags {
    fn write(&self, args: &mut Vec<String>) {
        args.extend(["--zone", &self.zone, "--listen", &self.listen].map(str::to_owned));
        push_each(args, "--zone", &self.more_zones);
        self.etcd.write(args);
        for (flag, value) in &self.options {
            args.extend([(*flag).to_owned(), value.clone()]);
        }
    }
}
