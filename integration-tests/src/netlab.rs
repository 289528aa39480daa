//! Layer-2 networks made of network namespaces: a "switch" namespace holding a Linux bridge, and one
//! namespace per host (nodes and a client) attached to it by a veth pair, each host's end named `eth0`.
//!
//! [`SealedNamespace`] is the smallest case: one namespace with loopback only, holding addresses of its own,
//! for servers judged by tools that would otherwise reach out (Zonemaster) and resolvers (unbound).
//!
//! Safety: hosts get only the on-link routes of their own addresses, no default route, so nothing sent
//! inside the lab can leave it; the root namespace gets no interface on the bridge and never sends to lab
//! addresses. Namespaces are named `gwlab-<pid>-<n>-<host>`, removed on drop, and a namespace whose creating
//! process is gone is swept before the next lab is created (a crashed run leaves nothing behind for long).

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sched::{CloneFlags, setns};

use crate::{HarnessError, Result, io_err, require_root};

/// Prefix of every namespace the lab creates.
pub const NAMESPACE_PREFIX: &str = "gwlab-";
/// The interface name of every host's link to the switch.
pub const HOST_INTERFACE: &str = "eth0";
/// Linux limits interface names to 15 bytes; a host's name is also its switch port's name.
const MAX_HOST_NAME: usize = 15;

static NEXT_LAB: AtomicUsize = AtomicUsize::new(0);

/// One host to attach to the switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// Short name (`m1`, `n1`, `client`), also the switch port name.
    pub name: String,
    /// IPv4 address on `eth0`.
    pub ipv4: Ipv4Addr,
    /// IPv6 address on `eth0`.
    pub ipv6: Ipv6Addr,
}

/// A lab network to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabSpec {
    /// The hosts, in order.
    pub hosts: Vec<HostSpec>,
    /// IPv4 prefix length of the segment.
    pub ipv4_prefix: u8,
    /// IPv6 prefix length of the segment.
    pub ipv6_prefix: u8,
}

impl LabSpec {
    /// The seed's topology: nodes `m1`, `n1`, `n2` at 10.10.40.10/.110/.120 and a `client` at
    /// 10.10.40.200, on one 10.10.0.0/16 segment so that the seed's LoadBalancer pool
    /// (10.10.39.200-220) is on-link; IPv6 in fd10:10::/64 alongside.
    pub fn seed() -> Self {
        let host = |name: &str, last: u8| HostSpec {
            name: name.to_owned(),
            ipv4: Ipv4Addr::new(10, 10, 40, last),
            ipv6: Ipv6Addr::new(0xfd10, 0x10, 0, 0, 0, 0, 0x40, u16::from(last)),
        };
        Self {
            hosts: vec![
                host("m1", 10),
                host("n1", 110),
                host("n2", 120),
                host("client", 200),
            ],
            ipv4_prefix: 16,
            ipv6_prefix: 64,
        }
    }
}

/// A host of a running lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Its short name.
    pub name: String,
    /// The network namespace it lives in.
    pub netns: String,
    /// Its IPv4 address.
    pub ipv4: Ipv4Addr,
    /// Its IPv6 address.
    pub ipv6: Ipv6Addr,
}

impl Host {
    /// `program` to be run inside this host's namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns, program]);
        command
    }

    /// Runs `f` on a thread that has entered this host's network namespace, so sockets it opens (raw
    /// packet sockets included) live there; returns what `f` returned.
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let path = format!("/run/netns/{}", self.netns);
        let netns = File::open(&path).map_err(io_err(format!("opening {path}")))?;
        let thread = std::thread::spawn(move || -> Result<R> {
            setns(&netns, CloneFlags::CLONE_NEWNET).map_err(|errno| HarnessError::Io {
                what: format!("entering network namespace {path}"),
                source: errno.into(),
            })?;
            Ok(f())
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// The MAC address of `eth0`.
    pub fn mac(&self) -> Result<[u8; 6]> {
        let out = ip(&["-n", &self.netns, "-o", "link", "show", HOST_INTERFACE])?;
        out.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .and_then(parse_mac)
            .ok_or_else(|| HarnessError::Command {
                command: format!("ip -n {} link show {HOST_INTERFACE}", self.netns),
                stderr: format!("no MAC address in: {out}"),
            })
    }
}

/// A running lab network, torn down on drop.
#[derive(Debug)]
pub struct LabNetwork {
    switch: String,
    hosts: Vec<Host>,
}

impl LabNetwork {
    /// Builds the lab: sweeps leftovers of dead runs, then creates the switch and every host.
    pub fn create(spec: &LabSpec) -> Result<Self> {
        require_root("create network namespaces for the lab")?;
        sweep_leftovers()?;
        for host in &spec.hosts {
            if host.name.is_empty() || host.name.len() > MAX_HOST_NAME || host.name == "br0" {
                return Err(HarnessError::Command {
                    command: "LabNetwork::create".to_owned(),
                    stderr: format!(
                        "host name {:?} must be 1-{MAX_HOST_NAME} bytes and not br0",
                        host.name
                    ),
                });
            }
        }
        let run = format!(
            "{NAMESPACE_PREFIX}{}-{}",
            std::process::id(),
            NEXT_LAB.fetch_add(1, Ordering::Relaxed)
        );
        // Constructed first so that a failure half-way still tears down what exists.
        let mut lab = Self {
            switch: format!("{run}-sw"),
            hosts: Vec::new(),
        };
        ip(&["netns", "add", &lab.switch])?;
        let sw = lab.switch.clone();
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        // Without snooping the bridge floods multicast, so Neighbor Solicitations reach every host even
        // before it joined the solicited-node group (as on a plain switch).
        ip(&[
            "-n",
            &sw,
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for spec_host in &spec.hosts {
            let host = Host {
                name: spec_host.name.clone(),
                netns: format!("{run}-{}", spec_host.name),
                ipv4: spec_host.ipv4,
                ipv6: spec_host.ipv6,
            };
            ip(&["netns", "add", &host.netns])?;
            lab.hosts.push(host.clone());
            let ns = host.netns.as_str();
            ip(&[
                "-n",
                ns,
                "link",
                "add",
                HOST_INTERFACE,
                "type",
                "veth",
                "peer",
                "name",
                &host.name,
                "netns",
                &sw,
            ])?;
            ip(&["-n", &sw, "link", "set", &host.name, "master", "br0", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            let v4 = format!("{}/{}", host.ipv4, spec.ipv4_prefix);
            let v6 = format!("{}/{}", host.ipv6, spec.ipv6_prefix);
            ip(&["-n", ns, "addr", "add", &v4, "dev", HOST_INTERFACE])?;
            ip(&[
                "-n",
                ns,
                "-6",
                "addr",
                "add",
                &v6,
                "dev",
                HOST_INTERFACE,
                "nodad",
            ])?;
            ip(&["-n", ns, "link", "set", HOST_INTERFACE, "up"])?;
        }
        Ok(lab)
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The host called `name`, or an error naming it.
    pub fn find(&self, name: &str) -> Result<&Host> {
        self.host(name)
            .ok_or_else(|| HarnessError::Setup(format!("no host {name} in the lab")))
    }

    /// All hosts, in the order of the spec.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// This lab's name prefix, `gwlab-<pid>-<n>` (its namespaces are `<prefix>-<host>`): other things the lab
    /// makes take it too, so that [`sweep_leftovers`]-style clean-ups recognise them.
    pub fn run_id(&self) -> &str {
        self.switch.strip_suffix("-sw").unwrap_or(&self.switch)
    }

    /// The namespace holding the bridge (for captures on switch ports).
    pub fn switch_netns(&self) -> &str {
        &self.switch
    }
}

impl Drop for LabNetwork {
    fn drop(&mut self) {
        // Deleting a namespace destroys its veth ends, and with them their peers on the bridge.
        for host in &self.hosts {
            let _ = ip(&["netns", "del", &host.netns]);
        }
        let _ = ip(&["netns", "del", &self.switch]);
    }
}

/// A network namespace with loopback only, holding extra addresses on `lo`: servers inside it get addresses
/// of their own (as name servers on the Internet have) while nothing can leave, there being no other
/// interface and no route. Named like lab namespaces (`gwlab-<pid>-<n>-<name>`), so
/// [`sweep_leftovers`] removes it after a crash; deleted on drop.
#[derive(Debug)]
pub struct SealedNamespace {
    host: Host,
}

impl SealedNamespace {
    /// Creates the namespace, brings `lo` up and adds `addresses` to it (host routes, no DAD for IPv6).
    pub fn create(name: &str, addresses: &[IpAddr]) -> Result<Self> {
        require_root("create a network namespace")?;
        sweep_leftovers()?;
        let netns = format!(
            "{NAMESPACE_PREFIX}{}-{}-{name}",
            std::process::id(),
            NEXT_LAB.fetch_add(1, Ordering::Relaxed)
        );
        let first_v4 = addresses.iter().find_map(|a| match a {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        });
        let first_v6 = addresses.iter().find_map(|a| match a {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        });
        ip(&["netns", "add", &netns])?;
        // Constructed before the addresses so that a failure half-way still deletes the namespace.
        let sealed = Self {
            host: Host {
                name: name.to_owned(),
                netns,
                ipv4: first_v4.unwrap_or(Ipv4Addr::LOCALHOST),
                ipv6: first_v6.unwrap_or(Ipv6Addr::LOCALHOST),
            },
        };
        let ns = sealed.host.netns.as_str();
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        for address in addresses {
            let (family, prefix) = if address.is_ipv4() {
                ("-4", "32")
            } else {
                ("-6", "128")
            };
            let cidr = format!("{address}/{prefix}");
            let mut args = vec!["-n", ns, family, "addr", "add", &cidr, "dev", "lo"];
            if address.is_ipv6() {
                args.push("nodad");
            }
            ip(&args)?;
        }
        Ok(sealed)
    }

    /// The namespace as a host: [`Host::command`] and [`Host::run`] work inside it.
    pub fn host(&self) -> &Host {
        &self.host
    }
}

impl Drop for SealedNamespace {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.host.netns]);
    }
}

/// Deletes lab namespaces whose creating process no longer runs; returns their names.
pub fn sweep_leftovers() -> Result<Vec<String>> {
    let listing = ip(&["netns", "list"])?;
    let mut removed = Vec::new();
    for name in listing.lines().filter_map(|l| l.split_whitespace().next()) {
        if !of_a_dead_run(name) {
            continue;
        }
        match ip(&["netns", "del", name]) {
            Ok(_) => removed.push(name.to_owned()),
            // Another test process swept it first: that is the outcome wanted.
            Err(_) if !std::path::Path::new(&format!("/run/netns/{name}")).exists() => {}
            Err(error) => return Err(error),
        }
    }
    Ok(removed)
}

/// Whether `name` is a lab name (`gwlab-<pid>-...`) of a process that no longer runs: what the lab made and a
/// crash left behind (namespaces, cgroups), safe to remove.
pub fn of_a_dead_run(name: &str) -> bool {
    name.strip_prefix(NAMESPACE_PREFIX)
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// Runs `ip` with `args`; the error carries the command line and stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(io_err("running ip (install iproute2)"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(HarnessError::Command {
            command: format!("ip {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_from_ip_link_output() {
        assert_eq!(
            parse_mac("02:42:ac:11:00:02"),
            Some([0x02, 0x42, 0xac, 0x11, 0x00, 0x02])
        );
        assert_eq!(parse_mac("02:42:ac:11:00"), None);
        assert_eq!(parse_mac("02:42:ac:11:00:02:03"), None);
    }

    #[test]
    fn the_seed_lab_puts_the_pool_on_link() {
        let spec = LabSpec::seed();
        let names: Vec<&str> = spec.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["m1", "n1", "n2", "client"]);
        // 10.10.39.200 and the hosts share 10.10.0.0/16.
        assert_eq!(spec.ipv4_prefix, 16);
        assert!(spec.hosts.iter().all(|h| h.ipv4.octets()[..2] == [10, 10]));
    }
}
