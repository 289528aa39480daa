//! The test bed every groundwork crate tests against: real programs, started on loopback or inside network
//! namespaces made for the test, stopped and cleaned up when the handle is dropped.
//!
//! - [`etcd::Etcd`]: the etcd binary shipped by `etcd-bin-vendored`, optionally with TLS.
//! - [`kube::KubeCluster`]: etcd + kube-apiserver (+ kube-controller-manager) with an admin kubeconfig and a
//!   ready `kube::Client`.
//! - [`netlab::LabNetwork`]: a bridge as the switch, node and client namespaces on it by veth pairs;
//!   [`netlab::SealedNamespace`]: one namespace with loopback only, for servers with addresses of their own.
//! - [`nodes`]: a cluster of real nodes (containerd, kubelet, kube-proxy per node namespace) for the chart.
//! - [`peers`]: the Go peer programs (`scripts/build-peers`) and runners for CoreDNS and external-dns.
//! - [`knot::Knot`]: Knot DNS as a secondary (zone transfers, NOTIFY) or a zone-file primary.
//! - [`unbound::Unbound`]: unbound as a resolver with a stub zone served by dns-server.
//! - [`zonemaster`]: Zonemaster's verdict on a zone, from an undelegated test in a sealed namespace.
//! - [`metallb::MetalLb`]: MetalLB's controller and layer-2 speakers in a lab, the peer of lb-controller and
//!   lb-speaker.
//! - [`speaker_identity`]: the speakers' ServiceAccount and per-node tokens, as the kubelet projects them.
//! - [`images`]: the groundwork image and the lab's pause, etcd, httpd and CoreDNS images.
//! - [`oci`]: OCI image archives written from local files, loadable by docker, containerd and skopeo.
//! - [`daemon`]: checks that a groundwork daemon binary behaves like a well-run process.
//! - [`launch`]: one typed command-line builder per groundwork daemon, started as a [`daemon::Daemon`].
//!
//! Nothing here imitates a server: when a real program cannot start, the error says which one and why.

pub mod bind;
pub mod bird;
pub mod certs;
pub mod daemon;
pub mod dig;
pub mod dns_peer;
pub mod etcd;
pub mod flood;
pub mod forward;
pub mod gateway_api;
pub mod http;
pub mod images;
pub mod knot;
pub mod kube;
pub mod lab;
pub mod launch;
pub mod metallb;
pub mod netlab;
pub mod nodes;
pub mod oci;
pub mod peers;
pub mod process;
pub mod speaker_identity;
pub mod tsig;
pub mod unbound;
pub mod wait;
pub mod zonemaster;

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while standing up the test bed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A condition did not become true in time.
    #[error("timed out after {after:?} waiting for {what} (last: {last})")]
    Timeout {
        /// The condition.
        what: String,
        /// How long we waited.
        after: Duration,
        /// The last reason it was not true yet.
        last: String,
    },
    /// A program the test started exited on its own.
    #[error("{name} exited unexpectedly ({status}); log {log_path}:\n{tail}")]
    Exited {
        /// The program.
        name: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Where its full output is.
        log_path: String,
        /// The last lines it printed.
        tail: String,
    },
    /// A peer program has not been built.
    #[error("{name} is not built at {}: run scripts/build-peers", path.display())]
    MissingPeer {
        /// The program.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The test bed is not set up as the test needs (a binary not built...); says how to fix it.
    #[error("{0}")]
    Setup(String),
    /// The test needs privileges it does not have.
    #[error("this test needs root (CAP_NET_ADMIN and CAP_NET_RAW) to {0}; run the suite as root")]
    NeedsRoot(&'static str),
    /// A set-up command (such as `ip`) failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Certificate generation failed.
    #[error("generating certificates: {0}")]
    Cert(#[from] rcgen::Error),
    /// The Kubernetes client failed.
    #[error("kubernetes client: {0}")]
    Kube(#[from] ::kube::Error),
    /// The kubeconfig we wrote could not be loaded.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// The etcd client failed.
    #[error("etcd client: {0}")]
    Etcd(#[from] etcd_client::Error),
}

/// Result of harness operations.
pub type Result<T> = std::result::Result<T, HarnessError>;

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

/// The workspace's root directory (where `Cargo.toml` and `target/` are).
pub fn workspace_root() -> PathBuf {
    // integration-tests/ is one level below the workspace root; CARGO_MANIFEST_DIR is set at compile time.
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Fails with [`HarnessError::NeedsRoot`] unless the process is root; `why` completes "needs root to ...".
pub fn require_root(why: &'static str) -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(HarnessError::NeedsRoot(why))
    }
}

/// Fails with [`HarnessError::Setup`] unless `program` is on `PATH`; the message names the Debian `package`
/// and `scripts/install-deps`, which installs it (a missing tool fails a test, never skips it).
pub fn require_program(program: &str, package: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            HarnessError::Setup(format!(
                "{program} is not installed (Debian package {package}): run scripts/install-deps"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_fails_naming_its_package_and_install_deps() {
        let error = require_program("groundwork-no-such-tool", "no-such-package")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("no-such-package") && error.contains("scripts/install-deps"),
            "{error}"
        );
        assert!(require_program("sh", "dash").is_ok());
    }
}
