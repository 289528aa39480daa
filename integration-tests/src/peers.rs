//! The Go peer programs, built by `scripts/build-peers` into `target/peers/bin` (or `$PEERS_DIR/bin`), and
//! runners for the ones tests talk to: CoreDNS with its etcd plugin, and external-dns with its CoreDNS
//! provider.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::etcd::Etcd;
use crate::process::{Process, Scratch, free_port};
use crate::{HarnessError, Result, certs, http, wait, workspace_root};

/// The directory holding the built peers.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target").join("peers"))
        .join("bin")
}

/// Path of a built peer program, or [`HarnessError::MissingPeer`] telling how to build it.
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir().join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::MissingPeer {
            name: name.to_owned(),
            path,
        })
    }
}

/// CoreDNS serving zones from etcd through its etcd plugin, on a free loopback port (UDP and TCP).
#[derive(Debug)]
pub struct CoreDns {
    process: Process,
    addr: SocketAddr,
    _scratch: Scratch,
}

impl CoreDns {
    /// Starts CoreDNS authoritative for `zones`, reading records under `/skydns` in `etcd` (over TLS when
    /// etcd serves TLS), and waits until its `ready` plugin reports ready.
    pub async fn start_with_etcd(etcd: &Etcd, zones: &[&str]) -> Result<Self> {
        Self::start_with_plugins(etcd, zones, "").await
    }

    /// [`CoreDns::start_with_etcd`] with extra plugin lines in the server block (e.g. `cache 30`).
    pub async fn start_with_plugins(etcd: &Etcd, zones: &[&str], plugins: &str) -> Result<Self> {
        Self::start_at(etcd, zones, plugins, "/skydns").await
    }

    /// [`CoreDns::start_with_plugins`] reading records under `path` (the etcd plugin's `path`).
    pub async fn start_at(etcd: &Etcd, zones: &[&str], plugins: &str, path: &str) -> Result<Self> {
        let binary = binary("coredns")?;
        let scratch = Scratch::new("coredns")?;
        let port = free_port()?;
        let ready: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let tls = etcd
            .client_tls()
            .map(|f| {
                format!(
                    "\n        tls {} {} {}",
                    f.cert.display(),
                    f.key.display(),
                    f.ca.display()
                )
            })
            .unwrap_or_default();
        let corefile = format!(
            "{keys} {{\n    bind 127.0.0.1\n    ready {ready}\n    {plugins}\n    etcd {zones} {{\n        path {path}\n        endpoint {endpoint}{tls}\n    }}\n}}\n",
            // Every zone of the server block with the port: a zone without one would be served on 53.
            keys = zones
                .iter()
                .map(|zone| format!("{zone}:{port}"))
                .collect::<Vec<_>>()
                .join(" "),
            zones = zones.join(" "),
            endpoint = etcd.endpoint(),
        );
        let corefile_path = scratch.join("Corefile");
        certs::write(&corefile_path, &corefile)?;
        let mut command = Command::new(binary);
        command.arg("-conf").arg(&corefile_path);
        let mut process = Process::spawn("coredns", command, &scratch.join("coredns.log"))?;
        wait::until("CoreDNS to be ready", Duration::from_secs(20), || {
            let running = process.check_running();
            async move {
                running.map_err(|e| e.to_string())?;
                match http::get(ready, "/ready")? {
                    response if response.status == 200 => Ok(()),
                    response => Err(format!("/ready answered {}", response.status)),
                }
            }
        })
        .await?;
        Ok(Self {
            process,
            addr: ([127, 0, 0, 1], port).into(),
            _scratch: scratch,
        })
    }

    /// Where CoreDNS answers DNS.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CoreDNS process.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// Runs `helm <args>` against the cluster of `kubeconfig`, with Helm's cache, config and data homes under
/// `home` (so tests never share or touch a user's); returns its stdout, or its stderr as the error.
pub fn helm(
    kubeconfig: &std::path::Path,
    home: &std::path::Path,
    args: &[&str],
) -> std::result::Result<String, String> {
    let helm = binary("helm").map_err(|e| e.to_string())?;
    let output = Command::new(helm)
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .map_err(|e| format!("running helm: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "helm {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// external-dns running continuously (its CoreDNS provider) with `args`, until dropped.
pub fn external_dns(
    kubeconfig: &std::path::Path,
    etcd: &Etcd,
    args: &[&str],
) -> Result<(Process, Scratch)> {
    let scratch = Scratch::new("external-dns")?;
    let mut command = external_dns_command(kubeconfig, etcd)?;
    command.args(args);
    let process = Process::spawn("external-dns", command, &scratch.join("external-dns.log"))?;
    Ok((process, scratch))
}

fn external_dns_command(kubeconfig: &std::path::Path, etcd: &Etcd) -> Result<Command> {
    let mut command = Command::new(binary("external-dns")?);
    command
        .arg("--provider=coredns")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg("--log-level=debug")
        .env("ETCD_URLS", etcd.endpoint());
    if let Some(files) = etcd.client_tls() {
        command
            .env("ETCD_CA_FILE", &files.ca)
            .env("ETCD_CERT_FILE", &files.cert)
            .env("ETCD_KEY_FILE", &files.key);
    }
    Ok(command)
}

/// What one external-dns run printed.
#[derive(Debug)]
pub struct ExternalDnsRun {
    /// Its combined output.
    pub log: String,
}

/// Runs external-dns once (`--once`) with its CoreDNS provider against `kubeconfig` and `etcd`, with
/// `args` appended (sources, filters, owner id...). Fails if it exits non-zero or takes over a minute.
pub async fn external_dns_once(
    kubeconfig: &std::path::Path,
    etcd: &Etcd,
    args: &[&str],
) -> Result<ExternalDnsRun> {
    let scratch = Scratch::new("external-dns")?;
    let mut command = external_dns_command(kubeconfig, etcd)?;
    command.arg("--once").args(args);
    let log_path = scratch.join("external-dns.log");
    let mut process = Process::spawn("external-dns", command, &log_path)?;
    let status = wait::until(
        "external-dns --once to finish",
        Duration::from_secs(60),
        || {
            let exited = process.poll_exit();
            async move { exited.ok_or_else(|| "still running".to_owned()) }
        },
    )
    .await?;
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    if !status.success() {
        return Err(HarnessError::Exited {
            name: "external-dns".to_owned(),
            status,
            log_path: log_path.display().to_string(),
            tail: process.log_tail(30),
        });
    }
    Ok(ExternalDnsRun { log })
}

/// A version pinned in `integration-tests/peers/versions.env`, by its key (e.g. `CERT_MANAGER_VERSION`).
pub fn pinned_version(key: &str) -> Result<String> {
    let path = workspace_root().join("integration-tests/peers/versions.env");
    let text = std::fs::read_to_string(&path)
        .map_err(crate::io_err(format!("reading {}", path.display())))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
        .ok_or_else(|| HarnessError::Setup(format!("no {key} in {}", path.display())))
}

/// The directory of Go module `module` at the version pinned as `version_key`, unpacked in the Go module cache
/// (`go mod download`: from the cache when `scripts/build-peers` or an earlier run fetched it, else from the
/// module proxy). Tests read upstream files from it, such as CRDs, instead of copies in this repository.
pub fn go_module_dir(module: &str, version_key: &str) -> Result<PathBuf> {
    let spec = format!("{module}@{}", pinned_version(version_key)?);
    let output = Command::new("go")
        .args(["mod", "download", "-json", &spec])
        .current_dir(std::env::temp_dir())
        .output()
        .map_err(crate::io_err(format!("running `go mod download {spec}`")))?;
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).map_err(|e| {
        HarnessError::Setup(format!(
            "`go mod download -json {spec}` printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    })?;
    match (answer["Dir"].as_str(), answer["Error"].as_str()) {
        (Some(dir), None) => Ok(PathBuf::from(dir)),
        (_, error) => Err(HarnessError::Setup(format!(
            "cannot download {spec}: {}",
            error.unwrap_or("no directory in the answer")
        ))),
    }
}
