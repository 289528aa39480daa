//! The etcd connection every etcd-backed daemon shares: its flags (with the environment names external-dns
//! uses, so existing deployments carry over), the TLS client set-up, and a paged read of a whole prefix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, KeyValue, TlsOptions,
};

/// Flags for reaching etcd; flatten into a daemon's `Config`.
#[derive(Debug, Clone, clap::Args)]
pub struct EtcdArgs {
    /// etcd client URLs, comma-separated (also read from external-dns's ETCD_URLS).
    #[arg(
        long,
        env = "ETCD_URLS",
        value_delimiter = ',',
        default_value = "https://127.0.0.1:2379"
    )]
    pub etcd_endpoints: Vec<String>,

    /// etcd key prefix holding the records.
    #[arg(long, env = "ETCD_PREFIX", default_value = "/skydns")]
    pub etcd_prefix: String,

    /// CA certificate that signed etcd's server certificate (PEM).
    #[arg(long, env = "ETCD_CA_FILE")]
    pub etcd_ca_file: Option<PathBuf>,

    /// Client certificate for etcd (PEM); needs --etcd-key-file.
    #[arg(long, env = "ETCD_CERT_FILE")]
    pub etcd_cert_file: Option<PathBuf>,

    /// Private key of the etcd client certificate (PEM).
    #[arg(long, env = "ETCD_KEY_FILE")]
    pub etcd_key_file: Option<PathBuf>,
}

/// An etcd flag that cannot be used; names the flag.
#[derive(Debug, thiserror::Error)]
pub enum EtcdConfigError {
    /// An endpoint is not a URL etcd-client can dial.
    #[error("--etcd-endpoints {0:?}: must be http://host:port or https://host:port")]
    Endpoint(String),
    /// Certificate and key must come together.
    #[error("--etcd-cert-file and --etcd-key-file must be given together")]
    HalfIdentity,
    /// A TLS file cannot be read.
    #[error("{flag} {path}: {source}")]
    TlsFile {
        /// The flag.
        flag: &'static str,
        /// The path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Validated connection settings.
#[derive(Debug, Clone)]
pub struct EtcdConnection {
    /// Client URLs.
    pub endpoints: Vec<String>,
    /// Options with TLS when asked for.
    pub options: ConnectOptions,
    /// Warnings to log once logging is up (e.g. plaintext endpoints).
    pub warnings: Vec<String>,
}

impl EtcdConnection {
    /// Connects (lazily: etcd-client dials on first use).
    pub async fn connect(&self) -> Result<Client, etcd_client::Error> {
        Client::connect(self.endpoints.clone(), Some(self.options.clone())).await
    }
}

impl EtcdArgs {
    /// Checks the endpoints and reads the TLS files; touches no network.
    pub fn connection(&self) -> Result<EtcdConnection, EtcdConfigError> {
        let mut warnings = Vec::new();
        for endpoint in &self.etcd_endpoints {
            let ok = endpoint
                .strip_prefix("https://")
                .or_else(|| endpoint.strip_prefix("http://"))
                .is_some_and(|rest| !rest.is_empty());
            if !ok {
                return Err(EtcdConfigError::Endpoint(endpoint.clone()));
            }
            if endpoint.starts_with("http://") {
                warnings.push(format!(
                    "etcd endpoint {endpoint} is plaintext; use https:// with --etcd-ca-file outside a lab"
                ));
            }
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let mut tls = TlsOptions::new();
        let mut use_tls = self
            .etcd_endpoints
            .iter()
            .any(|e| e.starts_with("https://"));
        if let Some(ca) = &self.etcd_ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read("--etcd-ca-file", ca)?));
            use_tls = true;
        }
        match (&self.etcd_cert_file, &self.etcd_key_file) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(
                    read("--etcd-cert-file", cert)?,
                    read("--etcd-key-file", key)?,
                ));
                use_tls = true;
            }
            (None, None) => {}
            _ => return Err(EtcdConfigError::HalfIdentity),
        }
        Ok(EtcdConnection {
            endpoints: self.etcd_endpoints.clone(),
            options: if use_tls {
                options.with_tls(tls)
            } else {
                options
            },
            warnings,
        })
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, EtcdConfigError> {
    std::fs::read(path).map_err(|source| EtcdConfigError::TlsFile {
        flag,
        path: path.display().to_string(),
        source,
    })
}

/// Keys per range read: keeps each response far below gRPC's 4 MiB message limit.
const PAGE: i64 = 5_000;

/// Every key under `prefix` as of one revision, read page by page; returns them with that revision.
pub async fn list_prefix(
    client: &mut Client,
    prefix: &str,
) -> Result<(Vec<KeyValue>, i64), etcd_client::Error> {
    list_prefix_at(client, prefix, 0).await
}

/// [`list_prefix`] as of revision `at` (0: the latest). A compacted revision fails with etcd's
/// "required revision has been compacted" error.
pub async fn list_prefix_at(
    client: &mut Client,
    prefix: &str,
    at: i64,
) -> Result<(Vec<KeyValue>, i64), etcd_client::Error> {
    let range_end = prefix_end(prefix);
    let mut all = Vec::new();
    let mut from = prefix.as_bytes().to_vec();
    let mut revision = at;
    loop {
        let mut options = GetOptions::new()
            .with_range(range_end.clone())
            .with_limit(PAGE);
        if revision > 0 {
            // Later pages read the same snapshot as the first.
            options = options.with_revision(revision);
        }
        let mut page = client.get(from.clone(), Some(options)).await?;
        if revision == 0 {
            revision = page.header().map_or(0, |h| h.revision());
        }
        let more = page.more();
        let kvs = page.take_kvs();
        match kvs.last() {
            Some(last) if more => {
                from = last.key().to_vec();
                from.push(0);
                all.extend(kvs);
            }
            _ => {
                all.extend(kvs);
                return Ok((all, revision));
            }
        }
    }
}

/// The end of the key range holding every key that starts with `prefix`: the prefix with its last byte
/// incremented (carrying past 0xff bytes).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Only 0xff bytes: every key from the prefix on ("\0" means "to the end" in etcd).
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Flags {
        #[command(flatten)]
        etcd: EtcdArgs,
    }

    #[test]
    fn prefix_ranges_end_right_after_the_prefix() {
        assert_eq!(prefix_end("/skydns/"), b"/skydns0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }

    #[test]
    fn bad_etcd_flags_name_the_flag() {
        let parse = |args: &[&str]| {
            let mut all = vec!["x"];
            all.extend_from_slice(args);
            Flags::try_parse_from(all)
                .unwrap()
                .etcd
                .connection()
                .unwrap_err()
                .to_string()
        };
        assert!(parse(&["--etcd-endpoints", "127.0.0.1:2379"]).contains("--etcd-endpoints"));
        assert!(parse(&["--etcd-cert-file", "/x"]).contains("--etcd-key-file"));
        assert!(parse(&["--etcd-ca-file", "/nonexistent/ca"]).contains("--etcd-ca-file"));
    }

    #[test]
    fn plaintext_endpoints_are_warned_about() {
        let flags =
            Flags::try_parse_from(["x", "--etcd-endpoints", "http://127.0.0.1:2379"]).unwrap();
        assert_eq!(flags.etcd.connection().unwrap().warnings.len(), 1);
    }
}
