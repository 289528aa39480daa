//! Command-line configuration, and its validation into [`Settings`] before any socket is opened: a speaker
//! with an unusable flag must say which flag at once (exit 64), not after it started answering ARP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ops::OpsArgs;
use regex::Regex;
use tonic::transport::Uri;

use crate::interfaces::Filter;

/// `lb-speaker`: answers ARP (IPv4) and NDP (IPv6) on this node for the LoadBalancer addresses that
/// lb-controller assigned to it, only while the controller's lease is valid.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "lb-speaker", version, about, long_about = None)]
pub struct Config {
    /// The controller's gRPC address: `https://HOST:PORT` (needs --tls-cert, --tls-key and --tls-ca) or
    /// `http://HOST:PORT` (needs --insecure).
    #[arg(long, env = "LB_CONTROLLER")]
    pub controller: String,

    /// This node's Kubernetes Node name, as the controller knows it.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// The speaker's client certificate (PEM), signed by the CA the controller trusts.
    #[arg(long, env = "LB_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "LB_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// The CA certificate (PEM) that signed the controller's server certificate.
    #[arg(long, env = "LB_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// The speaker pod's projected ServiceAccount token (audience: the controller), which proves to the
    /// controller which node this speaker runs on. Read again for every session (the kubelet rotates it).
    #[arg(long, env = "LB_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Talk to the controller in plaintext (`http://` URLs only). For labs; never in production.
    #[arg(long, env = "LB_INSECURE")]
    pub insecure: bool,

    /// Only interfaces whose name matches this regular expression may announce (default: all eligible).
    #[arg(long, env = "LB_INTERFACES")]
    pub interfaces: Option<String>,

    /// Interfaces whose name matches this regular expression never announce.
    #[arg(long, env = "LB_EXCLUDE_INTERFACES")]
    pub exclude_interfaces: Option<String>,

    /// After the immediate gratuitous ARP / unsolicited NA at takeover, send it this many more times,
    /// spaced 1.1 s apart (past Linux's 1 s ARP locktime, which would drop a faster repeat).
    #[arg(long, env = "LB_GRATUITOUS_REPEAT", default_value_t = 3)]
    pub gratuitous_repeat: u32,

    /// Re-send gratuitous ARP / unsolicited NA for every announced address this often, for switches that
    /// age out their tables (e.g. `60s`). Off by default.
    #[arg(long, env = "LB_PERIODIC_GRATUITOUS", value_parser = ops::parse_duration)]
    pub periodic_gratuitous: Option<Duration>,

    /// On SIGTERM, how long to wait for the controller to move this node's addresses away (the empty set)
    /// before stopping anyway. Must be shorter than --drain-timeout; defaults to 5s or three quarters of
    /// --drain-timeout, whichever is shorter.
    #[arg(long, env = "LB_LEAVE_TIMEOUT", value_parser = ops::parse_duration)]
    pub leave_timeout: Option<Duration>,

    /// When the controller's side closes or resets a healthy session (its leader died or stepped down),
    /// keep announcing what this node holds for up to this long after the loss (announce.proto rule 7), so
    /// that the data plane rides out a leader change; a controller's set without an address stops it at
    /// once. A merely silent session only keeps its lease. Must not be zero, should not be shorter than the
    /// lease, and lb-controller's `--controller-loss-hold` must not be shorter than this.
    #[arg(long, env = "LB_CONTROLLER_LOSS_HOLD", value_parser = ops::parse_duration, default_value = "15s")]
    pub controller_loss_hold: Duration,

    /// Logging, ops endpoint (`--metrics-listen`) and drain settings.
    #[command(flatten)]
    pub ops: OpsArgs,
}

/// A flag value that cannot be used; the message names the flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The controller URL is unusable.
    #[error("--controller {url:?}: {reason}")]
    Controller {
        /// As given.
        url: String,
        /// Why.
        reason: String,
    },
    /// No node name from the flag or the environment.
    #[error("--node-name (or NODE_NAME) is required and must not be empty")]
    NodeName,
    /// TLS flags and the URL scheme disagree.
    #[error("{0}")]
    Tls(String),
    /// A TLS file cannot be read or is not PEM.
    #[error("{flag} {path:?}: {reason}")]
    TlsFile {
        /// The flag.
        flag: &'static str,
        /// The path given.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A regular expression does not compile.
    #[error("{flag} {value:?}: {reason}")]
    Regex {
        /// The flag.
        flag: &'static str,
        /// As given.
        value: String,
        /// Why.
        reason: String,
    },
    /// A duration is out of range.
    #[error("{flag}: {reason}")]
    Duration {
        /// The flag.
        flag: &'static str,
        /// Why.
        reason: String,
    },
}

/// PEM material for mutual TLS.
#[derive(Clone)]
pub struct TlsMaterial {
    /// The speaker's certificate chain.
    pub cert_pem: Vec<u8>,
    /// Its private key.
    pub key_pem: Vec<u8>,
    /// The CA that must have signed the controller's certificate.
    pub ca_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("TlsMaterial").finish_non_exhaustive()
    }
}

/// Longest token accepted from `--token-file`.
const MAX_TOKEN_BYTES: u64 = 16 * 1024;

/// Where the certificates and the token are. They are read at start-up (to fail early, naming the
/// flag) and again for every session, so a certificate renewed by cert-manager or the chart and a token
/// rotated by the kubelet are used without a restart.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// `--tls-cert`.
    pub cert: PathBuf,
    /// `--tls-key`.
    pub key: PathBuf,
    /// `--tls-ca`.
    pub ca: PathBuf,
    /// `--token-file`.
    pub token: PathBuf,
}

impl Credentials {
    /// Reads the files now.
    pub fn load(&self) -> Result<(TlsMaterial, String), ConfigError> {
        let material = TlsMaterial {
            cert_pem: read_pem("--tls-cert", &self.cert)?,
            key_pem: read_pem("--tls-key", &self.key)?,
            ca_pem: read_pem("--tls-ca", &self.ca)?,
        };
        let bad = |reason: String| ConfigError::TlsFile {
            flag: "--token-file",
            path: self.token.clone(),
            reason,
        };
        let size = std::fs::metadata(&self.token)
            .map_err(|e| bad(e.to_string()))?
            .len();
        if size > MAX_TOKEN_BYTES {
            return Err(bad(format!(
                "{size} bytes is not a token (at most {MAX_TOKEN_BYTES})"
            )));
        }
        let token = std::fs::read_to_string(&self.token).map_err(|e| bad(e.to_string()))?;
        let token = token.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(bad("empty, or not one token".to_owned()));
        }
        Ok((material, token.to_owned()))
    }
}

/// How to reach the controller.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// The URL, validated.
    pub uri: Uri,
    /// `None` with `--insecure`.
    pub tls: Option<Credentials>,
    /// The host part of the URL, which the controller's certificate must name.
    pub domain: String,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The controller.
    pub controller: ControllerSettings,
    /// This node's name.
    pub node_name: String,
    /// Which interfaces may announce.
    pub filter: Filter,
    /// Gratuitous repeats after the first.
    pub gratuitous_repeat: u32,
    /// Periodic re-announcement, if any.
    pub periodic_gratuitous: Option<Duration>,
    /// Bound on the graceful leave.
    pub leave_timeout: Duration,
    /// How long to keep announcing after the controller's side ended a healthy session (rule 7).
    pub controller_loss_hold: Duration,
}

impl Config {
    /// Checks every flag and reads the TLS files; touches no network. Flags are checked in the order
    /// below, so the first unusable one is the one named.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let controller = self.controller_settings()?;
        let node_name = self.node_name()?;
        let filter = Filter {
            include: compile("--interfaces", self.interfaces.as_deref())?,
            exclude: compile("--exclude-interfaces", self.exclude_interfaces.as_deref())?,
        };
        self.check_periodic_gratuitous()?;
        let leave_timeout = self.leave_timeout()?;
        self.check_controller_loss_hold()?;
        Ok(Settings {
            controller,
            node_name,
            filter,
            gratuitous_repeat: self.gratuitous_repeat,
            periodic_gratuitous: self.periodic_gratuitous,
            leave_timeout,
            controller_loss_hold: self.controller_loss_hold,
        })
    }

    /// `--controller` is unusable for `reason`.
    fn bad_url(&self, reason: &str) -> ConfigError {
        ConfigError::Controller {
            url: self.controller.clone(),
            reason: reason.to_owned(),
        }
    }

    /// `--controller` with the TLS flags that go with its scheme: a host, a port, and https with every
    /// TLS file or http with `--insecure`.
    fn controller_settings(&self) -> Result<ControllerSettings, ConfigError> {
        let uri: Uri = self
            .controller
            .parse()
            .map_err(|e: tonic::codegen::http::uri::InvalidUri| self.bad_url(&e.to_string()))?;
        let domain = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| self.bad_url("needs a host, e.g. https://lb-controller:7472"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls = match uri.scheme_str() {
            Some("https") => Some(self.tls_credentials()?),
            Some("http") => {
                self.check_plaintext()?;
                None
            }
            _ => return Err(self.bad_url("the scheme must be https:// or http://")),
        };
        if uri.port_u16().is_none() {
            return Err(self.bad_url("needs a port, e.g. https://lb-controller:7472"));
        }
        Ok(ControllerSettings { uri, tls, domain })
    }

    /// For an https:// controller: every TLS file and the token, read once now so a bad one is named
    /// before anything starts.
    fn tls_credentials(&self) -> Result<Credentials, ConfigError> {
        if self.insecure {
            return Err(ConfigError::Tls(
                "--insecure cannot be used with an https:// --controller URL; use http:// for plaintext or drop --insecure"
                    .to_owned(),
            ));
        }
        let (Some(cert), Some(key), Some(ca)) = (&self.tls_cert, &self.tls_key, &self.tls_ca)
        else {
            return Err(ConfigError::Tls(
                "an https:// --controller needs --tls-cert, --tls-key and --tls-ca (or use http:// with --insecure)"
                    .to_owned(),
            ));
        };
        let Some(token) = &self.token_file else {
            return Err(ConfigError::Tls(
                "an https:// --controller needs --token-file: the projected ServiceAccount token that proves this speaker's node"
                    .to_owned(),
            ));
        };
        let credentials = Credentials {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
            token: token.clone(),
        };
        credentials.load()?;
        Ok(credentials)
    }

    /// For an http:// controller: plaintext must be asked for with `--insecure`, and no TLS flag may
    /// suggest otherwise.
    fn check_plaintext(&self) -> Result<(), ConfigError> {
        if !self.insecure {
            return Err(ConfigError::Tls(
                "an http:// --controller is plaintext and needs --insecure (or use https:// with --tls-cert, --tls-key and --tls-ca)"
                    .to_owned(),
            ));
        }
        let tls_flags = [&self.tls_cert, &self.tls_key, &self.tls_ca];
        if tls_flags.iter().any(|f| f.is_some()) || self.token_file.is_some() {
            return Err(ConfigError::Tls(
                "--tls-cert/--tls-key/--tls-ca/--token-file are given but --controller is http:// with --insecure; pick one"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    /// `--node-name`, trimmed and not empty.
    fn node_name(&self) -> Result<String, ConfigError> {
        Ok(self
            .node_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .ok_or(ConfigError::NodeName)?
            .to_owned())
    }

    /// `--periodic-gratuitous`, if given, is at least 1 s.
    fn check_periodic_gratuitous(&self) -> Result<(), ConfigError> {
        if let Some(period) = self.periodic_gratuitous
            && period < Duration::from_secs(1)
        {
            return Err(ConfigError::Duration {
                flag: "--periodic-gratuitous",
                reason: format!(
                    "{period:?} is below 1s (Linux ignores updates within its 1 s locktime)"
                ),
            });
        }
        Ok(())
    }

    /// `--leave-timeout`, shorter than `--drain-timeout`; by default 3/4 of the drain, at most 5 s.
    fn leave_timeout(&self) -> Result<Duration, ConfigError> {
        match self.leave_timeout {
            Some(leave) if leave >= self.ops.drain_timeout => Err(ConfigError::Duration {
                flag: "--leave-timeout",
                reason: format!(
                    "{leave:?} must be shorter than --drain-timeout ({:?}), or the drain cuts the leave short",
                    self.ops.drain_timeout
                ),
            }),
            Some(leave) => Ok(leave),
            None => Ok((self.ops.drain_timeout * 3 / 4).min(Duration::from_secs(5))),
        }
    }

    /// `--controller-loss-hold` is longer than zero.
    fn check_controller_loss_hold(&self) -> Result<(), ConfigError> {
        if self.controller_loss_hold.is_zero() {
            return Err(ConfigError::Duration {
                flag: "--controller-loss-hold",
                reason:
                    "must be longer than zero (announce.proto rule 7: never less than the lease)"
                        .to_owned(),
            });
        }
        Ok(())
    }
}

fn compile(flag: &'static str, value: Option<&str>) -> Result<Option<Regex>, ConfigError> {
    value
        .map(|v| {
            Regex::new(v).map_err(|e| ConfigError::Regex {
                flag,
                value: v.to_owned(),
                reason: e.to_string(),
            })
        })
        .transpose()
}

fn read_pem(flag: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let bad = |reason: String| ConfigError::TlsFile {
        flag,
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(bad("not a PEM file".to_owned()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn config(args: &[&str]) -> Config {
        let mut all = vec!["lb-speaker"];
        if !args.contains(&"--node-name") {
            all.extend_from_slice(&["--node-name", "n1"]);
        }
        all.extend_from_slice(args);
        Config::try_parse_from(all).unwrap()
    }

    #[test]
    fn a_plaintext_lab_command_line_validates() {
        let settings = config(&["--controller", "http://10.10.40.10:7472", "--insecure"])
            .validate()
            .unwrap();
        assert_eq!(settings.node_name, "n1");
        assert_eq!(settings.controller.domain, "10.10.40.10");
        assert!(settings.controller.tls.is_none());
        assert_eq!(settings.gratuitous_repeat, 3);
        assert_eq!(settings.periodic_gratuitous, None);
        assert_eq!(settings.controller_loss_hold, Duration::from_secs(15));
    }

    #[test]
    fn https_reads_the_tls_files_and_takes_the_domain_from_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let pem = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
        for name in ["c.pem", "k.pem", "ca.pem"] {
            std::fs::write(dir.path().join(name), pem).unwrap();
        }
        std::fs::write(dir.path().join("token"), "eyJ.abc.def\n").unwrap();
        let path = |n: &str| dir.path().join(n).display().to_string();
        let args = [
            "--controller",
            "https://lb-controller.kube-system:7472",
            "--tls-cert",
            &path("c.pem"),
            "--tls-key",
            &path("k.pem"),
            "--tls-ca",
            &path("ca.pem"),
        ];
        let error = config(&args).validate().unwrap_err();
        assert!(error.to_string().contains("--token-file"), "{error}");
        let mut with_token = args.to_vec();
        let token = path("token");
        with_token.extend(["--token-file", &token]);
        let settings = config(&with_token).validate().unwrap();
        assert_eq!(settings.controller.domain, "lb-controller.kube-system");
        let credentials = settings.controller.tls.unwrap();
        assert_eq!(credentials.load().unwrap().1, "eyJ.abc.def");
        // A rotated token is read at the next session.
        std::fs::write(dir.path().join("token"), "eyJ.new.tok").unwrap();
        assert_eq!(credentials.load().unwrap().1, "eyJ.new.tok");
        std::fs::write(dir.path().join("token"), "").unwrap();
        let error = credentials.load().unwrap_err().to_string();
        assert!(error.starts_with("--token-file "), "{error}");
    }

    #[test]
    fn bad_values_name_their_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--controller", "http://x:1"], "--insecure"),
            (&["--controller", "https://x:1"], "--tls-cert"),
            (&["--controller", "https://x:1", "--insecure"], "--insecure"),
            (&["--controller", "ftp://x:1", "--insecure"], "--controller"),
            (&["--controller", "http://x", "--insecure"], "--controller"),
            (
                &[
                    "--controller",
                    "http://x:1",
                    "--insecure",
                    "--interfaces",
                    "(",
                ],
                "--interfaces",
            ),
            (
                &[
                    "--controller",
                    "http://x:1",
                    "--insecure",
                    "--exclude-interfaces",
                    "[",
                ],
                "--exclude-interfaces",
            ),
            (
                &[
                    "--controller",
                    "https://x:1",
                    "--tls-cert",
                    "/nonexistent/c",
                    "--tls-key",
                    "/nonexistent/k",
                    "--tls-ca",
                    "/nonexistent/ca",
                    "--token-file",
                    "/nonexistent/token",
                ],
                "--tls-cert",
            ),
            (
                &[
                    "--controller",
                    "http://x:1",
                    "--insecure",
                    "--periodic-gratuitous",
                    "100ms",
                ],
                "--periodic-gratuitous",
            ),
            (
                &[
                    "--controller",
                    "http://x:1",
                    "--insecure",
                    "--leave-timeout",
                    "30s",
                ],
                "--leave-timeout",
            ),
            (
                &[
                    "--controller",
                    "http://x:1",
                    "--insecure",
                    "--controller-loss-hold",
                    "0s",
                ],
                "--controller-loss-hold",
            ),
            (
                &[
                    "--controller",
                    "http://x:1",
                    "--insecure",
                    "--node-name",
                    " ",
                ],
                "--node-name",
            ),
        ];
        for (args, flag) in cases {
            let err = config(args).validate().unwrap_err().to_string();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
    }
}
