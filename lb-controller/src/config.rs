//! Command-line configuration, checked into [`Settings`] before any socket is bound or the API is called.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ops::OpsArgs;

use crate::request::ClassFilter;
use crate::speakers::{HubConfig, TlsFiles};

/// `lb-controller`: gives LoadBalancer Services addresses from IP pools, writes their status, picks the
/// node that announces each address, and tells that node's speaker over gRPC.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "lb-controller", version, about, long_about = None)]
pub struct Config {
    /// Kubeconfig to use; without it, in-cluster configuration or the usual kubeconfig inference.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Where speakers connect (gRPC).
    #[arg(long, env = "GRPC_LISTEN", default_value = "0.0.0.0:7472")]
    pub grpc_listen: SocketAddr,

    /// PEM certificate the gRPC server presents to speakers.
    #[arg(long, env = "TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate; only speakers with a client certificate it signed are accepted.
    #[arg(long, env = "TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// Serve speakers in plaintext, without authentication (a lab only; never on a real network).
    #[arg(long)]
    pub insecure: bool,

    /// The speakers' ServiceAccount, as NAMESPACE/NAME. With TLS, every session must carry a projected
    /// token of this account from a pod on the node its Hello names (checked by TokenReview).
    #[arg(long, env = "SPEAKER_SERVICE_ACCOUNT")]
    pub speaker_service_account: Option<String>,

    /// The audience the speakers' projected tokens are issued for.
    #[arg(
        long,
        env = "SPEAKER_TOKEN_AUDIENCE",
        default_value = "lb-controller.groundwork.dev"
    )]
    pub speaker_token_audience: String,

    /// The `spec.loadBalancerClass` this controller serves.
    #[arg(long, env = "LOAD_BALANCER_CLASS", default_value = "groundwork.dev/lb")]
    pub load_balancer_class: String,

    /// Serve only Services that name our class; by default Services without a class are served too.
    /// Set it when another implementation (MetalLB) serves the class-less ones.
    #[arg(long, env = "ONLY_OWN_CLASS")]
    pub only_own_class: bool,

    /// Also read pools from MetalLB's legacy ConfigMap, as NAMESPACE/NAME (e.g. `metallb-system/config`).
    /// An `IPPool` of the same name wins.
    #[arg(long, env = "METALLB_CONFIGMAP")]
    pub metallb_configmap: Option<String>,

    /// Also read MetalLB's own resources (`IPAddressPool`, `L2Advertisement`, `BGPPeer`, `BGPAdvertisement`,
    /// `BFDProfile`, `Community`, as of MetalLB v0.16) from this namespace, e.g. `metallb-system`; their
    /// CRDs must be installed. Our resources of the same names win.
    #[arg(long, env = "METALLB_NAMESPACE")]
    pub metallb_namespace: Option<String>,

    /// BGP mode: watch the `BGPPeer`, `BGPAdvertisement` and `BFDProfile` resources (their CRDs must be
    /// installed) and send each node's speaker its peers and routes. `--bgp=false` for layer 2 only.
    #[arg(long, env = "BGP", default_value_t = true, action = clap::ArgAction::Set)]
    pub bgp: bool,

    /// How long a speaker's assignments stay valid without renewal; a silent node's addresses move after
    /// this (plus `--lease-grace`). Speakers heartbeat every fifth of it and count as silent after half:
    /// a node cut off moves after at most about 1.7 times this plus the grace.
    #[arg(long, default_value = "1s", value_parser = ops::parse_duration)]
    pub speaker_lease: Duration,

    /// Transit allowance added to a silent node's lease before its addresses move.
    #[arg(long, default_value = "200ms", value_parser = ops::parse_duration)]
    pub lease_grace: Duration,

    /// How long speakers keep announcing after losing the controller (a leader change); a new leader
    /// waits this long before moving an address whose holder it has not heard from. Not shorter than the
    /// speakers' own setting.
    #[arg(long, default_value = "15s", value_parser = ops::parse_duration)]
    pub controller_loss_hold: Duration,

    /// Elect one active replica through a Lease; the others stand by (ready, idle) until they lead.
    #[arg(long, env = "LEADER_ELECT")]
    pub leader_elect: bool,

    /// Name of the Lease used for leader election.
    #[arg(long, env = "LEASE_NAME", default_value = "lb-controller")]
    pub lease_name: String,

    /// Namespace of the Lease (defaults to the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// How long a leader that died blocks the standby, in whole seconds.
    #[arg(long, default_value = "4s", value_parser = ops::parse_duration)]
    pub leader_lease: Duration,

    /// This replica's identity in the Lease and in Events.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// The Service speakers dial (in the pod's namespace, without a selector): the leader points it at
    /// itself by writing its EndpointSlice `<name>-leader` (port name `grpc`), so every healthy replica can
    /// be ready and rollouts finish. Needs --pod-name and --pod-ip.
    #[arg(long, env = "LEADER_SERVICE")]
    pub leader_service: Option<String>,

    /// This replica's address, for --leader-service (the downward API's `status.podIP`).
    #[arg(long, env = "POD_IP")]
    pub pod_ip: Option<std::net::IpAddr>,

    /// Logging, ops endpoint (`--metrics-listen`) and drain settings.
    #[command(flatten)]
    pub ops: OpsArgs,
}

/// A flag value that cannot be used; names the flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither TLS nor `--insecure`, or both.
    #[error("give --tls-cert, --tls-key and --tls-ca together, or --insecure (and not both)")]
    Tls,
    /// A TLS file is missing.
    #[error("{flag} {path}: {source}")]
    File {
        /// The flag.
        flag: &'static str,
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// TLS without the speakers' ServiceAccount, or a malformed one.
    #[error(
        "--speaker-service-account {0:?}: with TLS, give the speakers' ServiceAccount as NAMESPACE/NAME \
         (each session must prove its node with that account's token)"
    )]
    SpeakerAccount(String),
    /// An empty audience.
    #[error("--speaker-token-audience must not be empty")]
    Audience,
    /// `--metallb-configmap` is not NAMESPACE/NAME.
    #[error("--metallb-configmap {0:?}: expected NAMESPACE/NAME")]
    ConfigMap(String),
    /// A duration out of range.
    #[error("{flag}: {reason}")]
    Duration {
        /// The flag.
        flag: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The class is empty.
    #[error("--load-balancer-class must not be empty")]
    Class,
    /// `--leader-service` without the pod's name or address.
    #[error(
        "--leader-service {0}: needs --pod-name (POD_NAME) and --pod-ip (POD_IP) to point it at this pod"
    )]
    LeaderService(String),
}

/// Checked settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Which Services we serve.
    pub filter: ClassFilter,
    /// gRPC TLS (None with `--insecure`).
    pub tls: Option<TlsFiles>,
    /// What a speaker's token must show (always with TLS; None with `--insecure`).
    pub speaker_identity: Option<crate::speakers::identity::Expected>,
    /// Speaker leases.
    pub hub: HubConfig,
    /// Legacy ConfigMap as (namespace, name).
    pub metallb_configmap: Option<(String, String)>,
    /// Our identity.
    pub identity: String,
    /// The Service the leader points at itself.
    pub leader_service: Option<crate::leader_service::LeaderService>,
    /// The flags as given.
    pub config: Config,
}

impl Config {
    /// Checks every flag; touches no network.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let tls = self.tls_files()?;
        let speaker_identity = self.speaker_identity(tls.is_some())?;
        let metallb_configmap = self
            .metallb_configmap
            .as_ref()
            .map(|text| {
                namespaced(text)
                    .map(|(ns, name)| (ns.to_owned(), name.to_owned()))
                    .ok_or_else(|| ConfigError::ConfigMap(text.clone()))
            })
            .transpose()?;
        self.check_durations()?;
        if self.load_balancer_class.trim().is_empty() {
            return Err(ConfigError::Class);
        }
        Ok(Settings {
            filter: ClassFilter {
                class: self.load_balancer_class.clone(),
                claim_unclassed: !self.only_own_class,
            },
            tls,
            speaker_identity,
            hub: HubConfig {
                lease: self.speaker_lease,
                grace: self.lease_grace,
                activation_hold: self.controller_loss_hold,
            },
            metallb_configmap,
            leader_service: self.leader_service()?,
            identity: self
                .pod_name
                .clone()
                .unwrap_or_else(|| format!("lb-controller-{}", std::process::id())),
            config: self.clone(),
        })
    }

    /// The gRPC server's files, all three present, or none with an explicit `--insecure`.
    fn tls_files(&self) -> Result<Option<TlsFiles>, ConfigError> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca, self.insecure) {
            (Some(cert), Some(key), Some(ca), false) => {
                for (flag, path) in [("--tls-cert", cert), ("--tls-key", key), ("--tls-ca", ca)] {
                    std::fs::metadata(path).map_err(|source| ConfigError::File {
                        flag,
                        path: path.display().to_string(),
                        source,
                    })?;
                }
                Ok(Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    ca: ca.clone(),
                }))
            }
            (None, None, None, true) => Ok(None),
            _ => Err(ConfigError::Tls),
        }
    }

    /// Who a speaker must prove to be: only with TLS, where its ServiceAccount token is reviewed.
    fn speaker_identity(
        &self,
        tls: bool,
    ) -> Result<Option<crate::speakers::identity::Expected>, ConfigError> {
        if !tls {
            return Ok(None);
        }
        let text = self.speaker_service_account.clone().unwrap_or_default();
        let (namespace, name) =
            namespaced(&text).ok_or_else(|| ConfigError::SpeakerAccount(text.clone()))?;
        if self.speaker_token_audience.trim().is_empty() {
            return Err(ConfigError::Audience);
        }
        Ok(Some(crate::speakers::identity::Expected {
            audience: self.speaker_token_audience.clone(),
            namespace: namespace.to_owned(),
            service_account: name.to_owned(),
        }))
    }

    fn check_durations(&self) -> Result<(), ConfigError> {
        if self.speaker_lease < Duration::from_millis(100) {
            return Err(ConfigError::Duration {
                flag: "--speaker-lease",
                reason: "must be at least 100ms",
            });
        }
        if self.controller_loss_hold < self.speaker_lease {
            return Err(ConfigError::Duration {
                flag: "--controller-loss-hold",
                reason: "must not be shorter than --speaker-lease",
            });
        }
        if self.leader_lease < Duration::from_secs(2) {
            return Err(ConfigError::Duration {
                flag: "--leader-lease",
                reason: "must be at least 2s",
            });
        }
        Ok(())
    }

    /// The Service that points at the leader: it needs the Pod's name and IP.
    fn leader_service(&self) -> Result<Option<crate::leader_service::LeaderService>, ConfigError> {
        match (&self.leader_service, &self.pod_name, self.pod_ip) {
            (None, _, _) => Ok(None),
            (Some(service), Some(pod), Some(ip)) if !service.is_empty() => {
                Ok(Some(crate::leader_service::LeaderService::new(
                    &self.lease_namespace,
                    service,
                    pod,
                    ip,
                    self.grpc_listen,
                )))
            }
            (Some(service), _, _) => Err(ConfigError::LeaderService(service.clone())),
        }
    }
}

/// `namespace/name`, both parts non-empty.
fn namespaced(text: &str) -> Option<(&str, &str)> {
    text.split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Settings, ConfigError> {
        Config::try_parse_from(std::iter::once("lb-controller").chain(args.iter().copied()))
            .unwrap()
            .validate()
    }

    #[test]
    fn a_leader_service_needs_the_pods_name_and_address() {
        let error = parse(&["--insecure", "--leader-service", "ctl"]).unwrap_err();
        assert!(error.to_string().contains("--pod-ip"), "{error}");
        let settings = parse(&[
            "--insecure",
            "--leader-service",
            "ctl",
            "--pod-name",
            "ctl-1",
            "--pod-ip",
            "10.244.0.9",
        ])
        .unwrap();
        let leader = settings.leader_service.unwrap();
        assert_eq!(leader.slice_name(), "ctl-leader");
        assert_eq!(leader.pod_ip.to_string(), "10.244.0.9");
    }

    #[test]
    fn needs_tls_or_an_explicit_insecure() {
        assert!(matches!(parse(&[]), Err(ConfigError::Tls)));
        assert!(parse(&["--insecure"]).unwrap().tls.is_none());
        assert!(matches!(
            parse(&["--insecure", "--tls-cert", "a"]),
            Err(ConfigError::Tls)
        ));
        let error = parse(&[
            "--tls-cert",
            "/nope/c",
            "--tls-key",
            "/nope/k",
            "--tls-ca",
            "/nope/a",
        ])
        .unwrap_err()
        .to_string();
        assert!(error.starts_with("--tls-cert /nope/c: "), "{error}");
    }

    #[test]
    fn tls_requires_the_speakers_account_to_check_their_nodes() {
        let dir = std::env::temp_dir();
        let file = dir.join(format!("lb-controller-config-{}", std::process::id()));
        std::fs::write(&file, "x").unwrap();
        let path = file.display().to_string();
        let tls = ["--tls-cert", &path, "--tls-key", &path, "--tls-ca", &path];
        let error = parse(&tls).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("--speaker-service-account \"\": "),
            "{error}"
        );
        let mut args = tls.to_vec();
        args.extend(["--speaker-service-account", "speakers"]);
        assert!(matches!(parse(&args), Err(ConfigError::SpeakerAccount(a)) if a == "speakers"));
        let mut args = tls.to_vec();
        args.extend([
            "--speaker-service-account",
            "groundwork-speakers/lb-speaker",
        ]);
        let expected = parse(&args).unwrap().speaker_identity.unwrap();
        assert_eq!(
            expected.username(),
            "system:serviceaccount:groundwork-speakers:lb-speaker"
        );
        assert_eq!(expected.audience, "lb-controller.groundwork.dev");
        assert!(parse(&["--insecure"]).unwrap().speaker_identity.is_none());
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn names_bad_values() {
        let error = parse(&["--insecure", "--metallb-configmap", "config"]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "--metallb-configmap \"config\": expected NAMESPACE/NAME"
        );
        let error = parse(&["--insecure", "--controller-loss-hold", "500ms"]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "--controller-loss-hold: must not be shorter than --speaker-lease"
        );
        let ok = parse(&["--insecure", "--metallb-configmap", "metallb-system/config"]).unwrap();
        assert_eq!(
            ok.metallb_configmap,
            Some(("metallb-system".into(), "config".into()))
        );
        assert!(ok.filter.claim_unclassed);
    }
}
