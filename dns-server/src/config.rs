//! Command-line configuration, and its validation into [`Settings`] before any socket is opened.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::Name;
use ipnet::IpNet;
use ops::OpsArgs;
use ops::etcd::{EtcdArgs, EtcdConfigError};
use proto::skydns::KeyLayout;

use crate::forward::ForwardZones;
use crate::lookup::{NameServer, SoaSettings, Zones};
use crate::rrl;
use crate::store::follower::EtcdSource;

/// `dns-server`: authoritative DNS for the skydns records in etcd (CoreDNS etcd plugin format).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "dns-server", version, about, long_about = None)]
pub struct Config {
    /// A zone to serve authoritatively (repeatable). Questions outside every zone are REFUSED.
    #[arg(
        long = "zone",
        env = "DNS_ZONES",
        value_delimiter = ',',
        required = true
    )]
    pub zones: Vec<String>,

    /// Address for DNS over UDP and TCP.
    #[arg(long, env = "DNS_LISTEN", default_value = "0.0.0.0:53")]
    pub listen: SocketAddr,

    /// TCP connections held at once, from all clients (BIND's `tcp-clients`); more are closed on accept.
    #[arg(long, env = "DNS_TCP_MAX_CLIENTS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub tcp_max_clients: u32,

    /// TCP connections held at once from one client address.
    #[arg(long, env = "DNS_TCP_MAX_PER_CLIENT", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub tcp_max_per_client: u32,

    /// Response rate limiting (RRL) of UDP answers: answers a second to one client prefix for one kind of
    /// answer (a name and type; for NXDOMAIN, NODATA and errors, the zone), with a burst of one second's
    /// worth. 0 turns RRL off. NSD's default; see docs/dns-compat.md.
    #[arg(long, env = "DNS_RRL_RESPONSES_PER_SECOND", default_value_t = rrl::DEFAULT_RESPONSES_PER_SECOND,
        value_parser = clap::value_parser!(u32).range(0..=i64::from(rrl::MAX_RESPONSES_PER_SECOND)))]
    pub rrl_responses_per_second: u32,

    /// Of the answers over the RRL limit, every Nth is sent truncated (TC set, no records) so that a real
    /// client in a spoofed prefix retries over TCP, and the others are dropped; 0 drops all, 1 truncates all.
    #[arg(long, env = "DNS_RRL_SLIP", default_value_t = rrl::DEFAULT_SLIP,
        value_parser = clap::value_parser!(u32).range(0..=10))]
    pub rrl_slip: u32,

    /// IPv4 clients in one prefix of this length share their RRL limits.
    #[arg(long, env = "DNS_RRL_IPV4_PREFIX", default_value_t = rrl::DEFAULT_IPV4_PREFIX,
        value_parser = clap::value_parser!(u8).range(0..=32))]
    pub rrl_ipv4_prefix: u8,

    /// IPv6 clients in one prefix of this length share their RRL limits (a /56 is one end site, often).
    #[arg(long, env = "DNS_RRL_IPV6_PREFIX", default_value_t = rrl::DEFAULT_IPV6_PREFIX,
        value_parser = clap::value_parser!(u8).range(0..=128))]
    pub rrl_ipv6_prefix: u8,

    /// Slots of the RRL table, 8 bytes each, rounded up to a power of two and allocated at start. When more
    /// prefixes and answers are active at once than it holds, the ones idle longest are forgotten.
    #[arg(long, env = "DNS_RRL_TABLE_SIZE", default_value_t = rrl::DEFAULT_TABLE_SIZE,
        value_parser = clap::value_parser!(u32).range(4..=(1 << 28)))]
    pub rrl_table_size: u32,

    /// Client networks (CIDR) whose UDP answers are never rate limited, e.g. the monitoring or the
    /// secondaries (repeatable).
    #[arg(long = "rrl-exempt", env = "DNS_RRL_EXEMPT", value_delimiter = ',')]
    pub rrl_exempt: Vec<IpNet>,

    /// How to reach etcd.
    #[command(flatten)]
    pub etcd: EtcdArgs,

    /// A name server of the zones, as NAME or NAME=IP[,IP...] (repeatable). Served as the apex NS set
    /// (with glue for in-zone names) and the SOA MNAME. Without it, NS comes from `dns/ns` records as in
    /// CoreDNS.
    #[arg(long = "ns", env = "DNS_NS", value_delimiter = ';')]
    pub name_servers: Vec<String>,

    /// Client networks (CIDR) allowed to transfer the zones (AXFR, over TCP), e.g. the AD or BIND servers
    /// acting as secondaries (repeatable). Everyone else is refused.
    #[arg(
        long = "transfer-allow",
        env = "DNS_TRANSFER_ALLOW",
        value_delimiter = ','
    )]
    pub transfer_allow: Vec<IpNet>,

    /// Secondaries to send NOTIFY to when a zone's serial changes, as IP or IP:PORT (repeatable).
    #[arg(long = "notify", env = "DNS_NOTIFY", value_delimiter = ',', value_parser = parse_notify_target)]
    pub notify: Vec<SocketAddr>,

    /// The address NOTIFY is sent from (BIND's `notify-source`): secondaries accept NOTIFY only from the
    /// address they know as their primary. Default: the `--listen` address when it is a specific one, else
    /// the address the route to each secondary picks.
    #[arg(long = "notify-source", env = "DNS_NOTIFY_SOURCE")]
    pub notify_source: Option<IpAddr>,

    /// A file of TSIG keys (repeatable): BIND `key` clauses as `tsig-keygen` prints them, or
    /// `algorithm:name:secret` lines as `dig -y` takes them (hmac-sha256/384/512). Mount a Secret here.
    #[arg(
        long = "tsig-key-file",
        env = "DNS_TSIG_KEY_FILES",
        value_delimiter = ','
    )]
    pub tsig_key_files: Vec<std::path::PathBuf>,

    /// A key zone transfers must be signed with (repeatable; BIND's `allow-transfer { key NAME; }`): with
    /// any given, an AXFR or IXFR from a `--transfer-allow` address also needs a valid TSIG signature by one
    /// of them. Without, transfers are unsigned unless the secondary signs.
    #[arg(
        long = "transfer-key",
        env = "DNS_TRANSFER_KEYS",
        value_delimiter = ','
    )]
    pub transfer_keys: Vec<String>,

    /// The key NOTIFY messages are signed with (for secondaries that take NOTIFY only signed, such as
    /// Knot with a keyed `notify` ACL).
    #[arg(long = "notify-key", env = "DNS_NOTIFY_KEY")]
    pub notify_key: Option<String>,

    /// Forward questions for another zone to upstream servers, as ZONE=IP[:PORT][,IP[:PORT]...]
    /// (repeatable). Only these zones are forwarded; everything else outside the served zones is REFUSED.
    #[arg(long = "forward", env = "DNS_FORWARD", value_delimiter = ';')]
    pub forward: Vec<String>,

    /// TTL of records stored with `ttl` 0 (CoreDNS uses 300).
    #[arg(long, env = "DNS_DEFAULT_TTL", default_value_t = 300)]
    pub default_ttl: u32,

    /// TTL of the SOA record; negative answers are cached no longer than this either (RFC 2308).
    #[arg(long, env = "DNS_SOA_TTL", default_value_t = SoaSettings::DEFAULT.ttl)]
    pub soa_ttl: u32,

    /// SOA refresh, for secondaries (seconds).
    #[arg(long, default_value_t = SoaSettings::DEFAULT.refresh)]
    pub soa_refresh: i32,

    /// SOA retry, for secondaries (seconds).
    #[arg(long, default_value_t = SoaSettings::DEFAULT.retry)]
    pub soa_retry: i32,

    /// SOA expire, for secondaries (seconds).
    #[arg(long, default_value_t = SoaSettings::DEFAULT.expire)]
    pub soa_expire: i32,

    /// The SOA minimum: how long resolvers may cache NXDOMAIN/NODATA (RFC 2308), capped by `--soa-ttl`.
    #[arg(long, env = "DNS_NEGATIVE_TTL", default_value_t = SoaSettings::DEFAULT.negative_ttl)]
    pub negative_ttl: u32,

    /// Logging, ops endpoint (`--metrics-listen`) and drain settings.
    #[command(flatten)]
    pub ops: OpsArgs,
}

/// A flag value that cannot be used; names the flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A zone is not a DNS name.
    #[error("--zone {zone:?}: {reason}")]
    Zone {
        /// As given.
        zone: String,
        /// Why.
        reason: String,
    },
    /// The prefix is not an absolute etcd path.
    #[error("--etcd-prefix: {0}")]
    Prefix(#[from] proto::skydns::KeyError),
    /// An etcd flag is unusable.
    #[error(transparent)]
    Etcd(#[from] EtcdConfigError),
    /// A `--forward` value is malformed.
    #[error("--forward {value:?}: {reason}")]
    Forward {
        /// As given.
        value: String,
        /// Why.
        reason: String,
    },
    /// A TSIG key file or key name is unusable.
    #[error(transparent)]
    Tsig(#[from] crate::tsig::KeyError),
    /// A `--ns` value is malformed.
    #[error("--ns {value:?}: {reason}")]
    NameServer {
        /// As given.
        value: String,
        /// Why.
        reason: String,
    },
}

/// The TSIG keys the server knows, and what they are for.
#[derive(Clone, Default)]
pub struct TsigSettings {
    /// Every key of the `--tsig-key-file` files: a request signed with one gets a signed answer.
    pub keys: crate::tsig::Keyring,
    /// Keys a transfer must be signed with (empty: none required).
    pub transfer_keys: Vec<Name>,
    /// The key NOTIFY is signed with.
    pub notify_key: Option<hickory_proto::rr::TSigner>,
}

impl std::fmt::Debug for TsigSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigSettings")
            .field("keys", &self.keys)
            .field("transfer_keys", &self.transfer_keys)
            .field(
                "notify_key",
                &self.notify_key.as_ref().map(|k| k.signer_name().to_ascii()),
            )
            .finish()
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What to answer for.
    pub zones: Zones,
    /// Where the records are.
    pub source: EtcdSource,
    /// DNS listen address.
    pub listen: SocketAddr,
    /// TCP connection quotas.
    pub tcp_limits: crate::tcp_quota::TcpLimits,
    /// Who may transfer zones.
    pub transfer_allow: Vec<IpNet>,
    /// Where to send NOTIFY.
    pub notify: Vec<SocketAddr>,
    /// Where NOTIFY comes from (`None`: the route's choice).
    pub notify_source: Option<IpAddr>,
    /// TSIG keys and which of them transfers and NOTIFY use.
    pub tsig: TsigSettings,
    /// Zones relayed to upstreams.
    pub forward: ForwardZones,
    /// Response rate limiting of UDP answers.
    pub rrl: rrl::RrlSettings,
    /// Warnings worth logging once logging is up (e.g. overlapping zones).
    pub warnings: Vec<String>,
}

impl Config {
    /// Checks every flag and reads the TLS files; touches no network.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let mut warnings = Vec::new();
        let mut names: Vec<Name> = Vec::new();
        for zone in &self.zones {
            let name = parse_name(zone).map_err(|reason| ConfigError::Zone {
                zone: zone.clone(),
                reason,
            })?;
            if names.contains(&name) {
                warnings.push(format!("zone {name} is given twice"));
                continue;
            }
            for other in &names {
                if other.zone_of(&name) || name.zone_of(other) {
                    warnings.push(format!(
                        "zones {other} and {name} overlap: names in the inner zone are answered from it"
                    ));
                }
            }
            names.push(name);
        }
        let layout = KeyLayout::new(&self.etcd.etcd_prefix)?;
        let connection = self.etcd.connection()?;
        warnings.extend(connection.warnings.iter().cloned());
        let mut zones = Zones::new(names);
        zones.default_ttl = self.default_ttl;
        zones.soa = SoaSettings {
            ttl: self.soa_ttl,
            refresh: self.soa_refresh,
            retry: self.soa_retry,
            expire: self.soa_expire,
            negative_ttl: self.negative_ttl,
        };
        zones.name_servers = self
            .name_servers
            .iter()
            .map(|value| parse_name_server(value))
            .collect::<Result<_, _>>()?;
        let forward = self.forward_zones(&zones, &mut warnings)?;
        let tsig = self.tsig()?;
        Ok(Settings {
            zones,
            source: EtcdSource { connection, layout },
            listen: self.listen,
            tcp_limits: crate::tcp_quota::TcpLimits {
                total: self.tcp_max_clients as usize,
                per_client: self.tcp_max_per_client as usize,
            },
            transfer_allow: self.transfer_allow.clone(),
            forward,
            rrl: rrl::RrlSettings {
                responses_per_second: self.rrl_responses_per_second,
                slip: self.rrl_slip,
                ipv4_prefix: self.rrl_ipv4_prefix,
                ipv6_prefix: self.rrl_ipv6_prefix,
                table_size: self.rrl_table_size,
                exempt: self.rrl_exempt.clone(),
            },
            notify: self.notify.clone(),
            notify_source: self.notify_source(),
            tsig,
            warnings,
        })
    }

    /// Reads the key files and checks that every key named by a flag is in them.
    fn tsig(&self) -> Result<TsigSettings, ConfigError> {
        use crate::tsig::{KeyError, Keyring, read_key_file};
        let mut specs = Vec::new();
        for path in &self.tsig_key_files {
            specs.extend(read_key_file("--tsig-key-file", path)?);
        }
        let keys = Keyring::new(specs).map_err(|reason| KeyError::Invalid {
            flag: "--tsig-key-file",
            path: self
                .tsig_key_files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(","),
            reason,
        })?;
        let known = |flag: &'static str, name: &str| {
            Name::from_ascii(name)
                .ok()
                .and_then(|n| keys.get(&n).cloned())
                .ok_or_else(|| KeyError::Unknown {
                    flag,
                    name: name.to_owned(),
                })
        };
        let mut transfer_keys = Vec::new();
        for name in &self.transfer_keys {
            transfer_keys.push(known("--transfer-key", name)?.signer_name().clone());
        }
        let notify_key = self
            .notify_key
            .as_deref()
            .map(|name| known("--notify-key", name))
            .transpose()?;
        Ok(TsigSettings {
            keys,
            transfer_keys,
            notify_key,
        })
    }

    /// `--notify-source`, else the listen address when it names one interface's address.
    fn notify_source(&self) -> Option<IpAddr> {
        self.notify_source
            .or_else(|| Some(self.listen.ip()).filter(|ip| !ip.is_unspecified()))
    }

    fn forward_zones(
        &self,
        zones: &Zones,
        warnings: &mut Vec<String>,
    ) -> Result<ForwardZones, ConfigError> {
        let mut forward = Vec::new();
        for value in &self.forward {
            let bad = |reason: String| ConfigError::Forward {
                value: value.clone(),
                reason,
            };
            let (zone, upstreams) = value
                .split_once('=')
                .ok_or_else(|| bad("expected ZONE=IP[:PORT][,...]".to_owned()))?;
            let zone = parse_name(zone).map_err(bad)?;
            let upstreams = upstreams
                .split(',')
                .map(|u| parse_notify_target(u.trim()).map_err(bad))
                .collect::<Result<Vec<_>, _>>()?;
            if zones.zone_of(&zone).is_some() {
                warnings.push(format!(
                    "forwarded zone {zone} lies inside a served zone and is answered from etcd instead"
                ));
            }
            forward.push((zone, upstreams));
        }
        Ok(ForwardZones::new(forward))
    }
}

/// A NOTIFY target or upstream: `IP` (port 53) or `IP:PORT`.
fn parse_notify_target(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{text:?} is not IP or IP:PORT"))
}

fn parse_name(text: &str) -> Result<Name, String> {
    let mut name = Name::from_ascii(text.trim()).map_err(|e| e.to_string())?;
    if name.is_root() {
        return Err("the root zone cannot be served".to_owned());
    }
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

fn parse_name_server(value: &str) -> Result<NameServer, ConfigError> {
    let bad = |reason: String| ConfigError::NameServer {
        value: value.to_owned(),
        reason,
    };
    let (name, addresses) = value.split_once('=').unwrap_or((value, ""));
    let name = parse_name(name).map_err(bad)?;
    let addresses = addresses
        .split(',')
        .filter(|a| !a.trim().is_empty())
        .map(|a| {
            a.trim()
                .parse::<IpAddr>()
                .map_err(|e| bad(format!("{a:?} is not an IP address: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(NameServer { name, addresses })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn config(args: &[&str]) -> Config {
        let mut all = vec!["dns-server"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).unwrap()
    }

    #[test]
    fn a_minimal_command_line_validates() {
        let settings = config(&[
            "--zone",
            "Test.org.",
            "--etcd-endpoints",
            "http://127.0.0.1:2379",
        ])
        .validate()
        .unwrap();
        assert_eq!(settings.zones.names()[0].to_ascii(), "test.org.");
        assert_eq!(settings.source.layout.prefix(), "/skydns");
    }

    #[test]
    fn bad_values_name_their_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--zone", "a..b"], "--zone"),
            (
                &["--zone", "test.org", "--etcd-prefix", "skydns"],
                "--etcd-prefix",
            ),
            (
                &["--zone", "test.org", "--etcd-endpoints", "127.0.0.1:2379"],
                "--etcd-endpoints",
            ),
            (
                &["--zone", "test.org", "--etcd-cert-file", "/x"],
                "--etcd-key-file",
            ),
            (
                &[
                    "--zone",
                    "test.org",
                    "--etcd-ca-file",
                    "/nonexistent/ca.pem",
                ],
                "--etcd-ca-file",
            ),
            (
                &["--zone", "test.org", "--ns", "ns1.test.org=10.0.0.300"],
                "--ns",
            ),
        ];
        for (args, flag) in cases {
            let err = config(args).validate().unwrap_err().to_string();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn overlapping_zones_are_reported_not_fatal() {
        let settings = config(&[
            "--zone",
            "test.org",
            "--zone",
            "sub.test.org",
            "--zone",
            "test.org",
        ])
        .validate()
        .unwrap();
        assert_eq!(settings.zones.names().len(), 2);
        assert!(settings.warnings.iter().any(|w| w.contains("overlap")));
        assert!(settings.warnings.iter().any(|w| w.contains("twice")));
    }

    #[test]
    fn transfer_and_notify_flags_parse_with_clear_errors() {
        let settings = config(&[
            "--zone",
            "test.org",
            "--transfer-allow",
            "10.10.0.0/16,127.0.0.1/32",
            "--notify",
            "10.10.40.53",
            "--notify",
            "127.0.0.1:5300",
        ])
        .validate()
        .unwrap();
        assert_eq!(settings.transfer_allow.len(), 2);
        assert_eq!(settings.notify[0].port(), 53);
        assert_eq!(settings.notify[1].port(), 5300);
        let err = Config::try_parse_from([
            "dns-server",
            "--zone",
            "t.org",
            "--transfer-allow",
            "10.0.0.0/33",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("--transfer-allow"), "{err}");
        let err = Config::try_parse_from(["dns-server", "--zone", "t.org", "--notify", "nowhere"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--notify") && err.contains("nowhere"), "{err}");
    }

    #[test]
    fn notify_goes_from_the_listen_address_unless_told_otherwise() {
        let source = |extra: &[&str]| {
            let mut args = vec!["dns-server", "--zone", "test.org"];
            args.extend_from_slice(extra);
            Config::try_parse_from(args)
                .unwrap()
                .validate()
                .unwrap()
                .notify_source
        };
        assert_eq!(source(&["--listen", "0.0.0.0:53"]), None);
        assert_eq!(
            source(&["--listen", "192.0.2.53:53"]),
            Some("192.0.2.53".parse().unwrap())
        );
        assert_eq!(
            source(&["--listen", "192.0.2.53:53", "--notify-source", "192.0.2.1"]),
            Some("192.0.2.1".parse().unwrap())
        );
    }

    #[test]
    fn the_soa_flags_default_to_the_zonemaster_clean_timers() {
        let settings = config(&["--zone", "test.org"]).validate().unwrap();
        assert_eq!(settings.zones.soa, SoaSettings::DEFAULT);
    }

    #[test]
    fn rrl_is_on_by_default_and_bad_rrl_values_name_their_flag() {
        let settings = config(&["--zone", "test.org"]).validate().unwrap();
        assert_eq!(settings.rrl, rrl::RrlSettings::default());
        assert_eq!(settings.rrl.responses_per_second, 200);
        let settings = config(&[
            "--zone",
            "test.org",
            "--rrl-responses-per-second",
            "0",
            "--rrl-exempt",
            "10.0.0.0/8,fd00::/8",
        ])
        .validate()
        .unwrap();
        assert_eq!(settings.rrl.responses_per_second, 0);
        assert_eq!(settings.rrl.exempt.len(), 2);
        for (flag, value) in [
            ("--rrl-responses-per-second", "2000000"),
            ("--rrl-slip", "11"),
            ("--rrl-ipv4-prefix", "33"),
            ("--rrl-ipv6-prefix", "129"),
            ("--rrl-table-size", "0"),
            ("--rrl-exempt", "10.0.0.0/33"),
        ] {
            let err = Config::try_parse_from(["dns-server", "--zone", "t.org", flag, value])
                .unwrap_err()
                .to_string();
            assert!(err.contains(flag), "{flag} {value}: {err}");
        }
    }

    #[test]
    fn name_servers_take_optional_glue() {
        let settings = config(&[
            "--zone",
            "test.org",
            "--ns",
            "ns1.test.org=10.0.0.53,fd00::53",
        ])
        .validate()
        .unwrap();
        let ns = &settings.zones.name_servers[0];
        assert_eq!(ns.name.to_ascii(), "ns1.test.org.");
        assert_eq!(ns.addresses.len(), 2);
    }
}
