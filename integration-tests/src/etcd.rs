//! A real etcd member for a test: the binary shipped by the `etcd-bin-vendored` crate, on free loopback
//! ports, with a private data directory, optionally serving TLS with client-certificate authentication.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::certs::{Ca, TlsFiles, Usage};
use crate::process::{Process, Scratch, free_port};
use crate::{HarnessError, Result, io_err, wait};

/// How long etcd may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running single-member etcd cluster, stopped and deleted on drop.
#[derive(Debug)]
pub struct Etcd {
    // Fields drop in order: the process stops before its directory is removed.
    process: Process,
    client_tls: Option<TlsFiles>,
    ca: Option<Ca>,
    endpoint: String,
    peer_url: String,
    started_in: Duration,
    scratch: Scratch,
}

impl Etcd {
    /// Starts etcd speaking plain HTTP on loopback.
    pub async fn start() -> Result<Self> {
        Self::start_with(false).await
    }

    /// Starts etcd serving TLS with a fresh CA, requiring client certificates from that CA.
    pub async fn start_tls() -> Result<Self> {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> Result<Self> {
        // A free port is free when picked, not when etcd binds it: another test may take it between the
        // two. Try again on fresh ports when that is why etcd exited.
        let mut attempt = 1;
        loop {
            match Self::start_once(tls).await {
                Err(error)
                    if attempt < 3 && error.to_string().contains("address already in use") =>
                {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_once(tls: bool) -> Result<Self> {
        let scratch = Scratch::new(if tls { "etcd-tls" } else { "etcd" })?;
        let scheme = if tls { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{}", free_port()?);
        let peer_url = format!("http://127.0.0.1:{}", free_port()?);
        let (client_tls, ca) = if tls {
            let ca = Ca::new("groundwork test etcd CA")?;
            ca.issue_files(
                scratch.path(),
                "server",
                &[],
                &["localhost", "127.0.0.1"],
                Usage::ServerAndClient,
            )?;
            let client = ca.issue_files(scratch.path(), "client", &[], &[], Usage::Client)?;
            (Some(client), Some(ca))
        } else {
            (None, None)
        };
        let process = spawn(&scratch, &endpoint, &peer_url, client_tls.is_some())?;
        let mut etcd = Self {
            process,
            client_tls,
            ca,
            endpoint,
            peer_url,
            started_in: Duration::ZERO,
            scratch,
        };
        etcd.wait_ready().await?;
        Ok(etcd)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        let options = self.connect_options()?;
        let endpoint = self.endpoint.clone();
        let process = &mut self.process;
        wait::until("etcd to answer", START_TIMEOUT, || {
            let running = process.check_running();
            let options = options.clone();
            let endpoint = endpoint.clone();
            async move {
                running.map_err(|e| e.to_string())?;
                let mut client = Client::connect([endpoint], Some(options))
                    .await
                    .map_err(|e| e.to_string())?;
                client.status().await.map_err(|e| e.to_string())?;
                Ok(())
            }
        })
        .await?;
        self.started_in = start.elapsed();
        Ok(())
    }

    /// The client URL, e.g. `http://127.0.0.1:40123` or `https://...`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The client port's socket address (to forward into a network namespace).
    pub fn client_addr(&self) -> Result<std::net::SocketAddr> {
        let hostport = self
            .endpoint
            .split_once("://")
            .map_or(self.endpoint.as_str(), |(_, rest)| rest);
        hostport
            .parse()
            .map_err(|e| HarnessError::Setup(format!("etcd endpoint {}: {e}", self.endpoint)))
    }

    /// CA, client certificate and key for a TLS etcd (as files, for programs such as CoreDNS).
    pub fn client_tls(&self) -> Option<&TlsFiles> {
        self.client_tls.as_ref()
    }

    /// A TLS etcd's client certificate with common name `cn` (the etcd user it is, once auth is enabled),
    /// signed by etcd's CA and written into this etcd's directory; `None` for a plain-HTTP etcd.
    pub fn issue_client(&self, cn: &str) -> Result<Option<TlsFiles>> {
        self.ca
            .as_ref()
            .map(|ca| ca.issue_files(self.scratch.path(), cn, &[], &[], Usage::Client))
            .transpose()
    }

    /// How long the last start took until etcd answered.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The etcd process (for fault tests: kill, signal, log).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Options for `etcd_client::Client::connect`, with TLS when etcd serves it.
    pub fn connect_options(&self) -> Result<ConnectOptions> {
        connect_options(self.client_tls.as_ref())
    }

    /// A connected client presenting the certificate `files` (e.g. from [`Etcd::issue_client`]).
    pub async fn client_as(&self, files: &TlsFiles) -> Result<Client> {
        Ok(Client::connect([self.endpoint.clone()], Some(connect_options(Some(files))?)).await?)
    }

    /// A connected client.
    pub async fn client(&self) -> Result<Client> {
        Ok(Client::connect([self.endpoint.clone()], Some(self.connect_options()?)).await?)
    }

    /// Kills etcd (SIGKILL), as in a crash; [`Etcd::start_again`] brings it back.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Kills etcd (SIGKILL) and starts it again on the same ports and data, as after a crash; waits until
    /// it answers.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.start_again().await
    }

    /// Starts a killed etcd again on the same ports and data, and waits until it answers.
    pub async fn start_again(&mut self) -> Result<()> {
        self.process = spawn(
            &self.scratch,
            &self.endpoint,
            &self.peer_url,
            self.client_tls.is_some(),
        )?;
        self.wait_ready().await
    }
}

/// Client options: TLS with `files` as CA and identity, or plain HTTP without.
fn connect_options(files: Option<&TlsFiles>) -> Result<ConnectOptions> {
    let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
    let Some(files) = files else {
        return Ok(options);
    };
    let read =
        |path: &Path| std::fs::read(path).map_err(io_err(format!("reading {}", path.display())));
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read(&files.ca)?))
        .identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?));
    Ok(options.with_tls(tls))
}

fn spawn(scratch: &Scratch, endpoint: &str, peer_url: &str, tls: bool) -> Result<Process> {
    let binary = etcd_bin_vendored::etcd_bin_path().map_err(|e| HarnessError::Io {
        what: "locating the vendored etcd binary".to_owned(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut command = Command::new(binary);
    command
        .arg("--name=test")
        .arg(format!("--data-dir={}", scratch.join("data").display()))
        .arg(format!("--listen-client-urls={endpoint}"))
        .arg(format!("--advertise-client-urls={endpoint}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=test={peer_url}"))
        .arg("--log-level=warn")
        // Test data is disposable; fsync would make every write wait on the disk.
        .arg("--unsafe-no-fsync");
    if tls {
        let dir = scratch.path();
        command
            .arg(format!("--cert-file={}", dir.join("server.crt").display()))
            .arg(format!("--key-file={}", dir.join("server.key").display()))
            .arg(format!(
                "--trusted-ca-file={}",
                dir.join("ca.crt").display()
            ))
            .arg("--client-cert-auth");
    }
    Process::spawn("etcd", command, &scratch.join("etcd.log"))
}
