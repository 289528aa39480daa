//! `lb-controller`'s command line.

use std::fmt::Display;
use std::path::Path;
use std::time::Duration;

use super::{Election, Elects, Flags, Launcher, path_value, push_duration, push_opt, push_switch};
use crate::certs::TlsFiles;
use crate::speaker_identity::SpeakerAccount;

/// The `lb-controller` launcher: `LbController::new(binary, kubeconfig)`, plaintext gRPC to speakers
/// (`--insecure`) until [`LbController::tls`].
pub type LbController = Launcher<LbControllerFlags>;

/// lb-controller's own flags (see [`LbController`]).
#[derive(Debug, Clone)]
pub struct LbControllerFlags {
    kubeconfig: String,
    grpc: Option<String>,
    tls: Option<TlsFiles>,
    speaker_account: Option<String>,
    election: Election,
    leader_service: Option<(String, String)>,
    leader_lease: Option<Duration>,
    speaker_lease: Option<Duration>,
    loss_hold: Option<Duration>,
    metallb_configmap: Option<String>,
    metallb_namespace: Option<String>,
}

impl Launcher<LbControllerFlags> {
    /// `binary` against the API server of `kubeconfig`, serving speakers in plaintext (`--insecure`).
    pub fn new(binary: impl AsRef<Path>, kubeconfig: impl AsRef<Path>) -> Self {
        Self::with(
            binary,
            LbControllerFlags {
                kubeconfig: path_value(kubeconfig),
                grpc: None,
                tls: None,
                speaker_account: None,
                election: Election::default(),
                leader_service: None,
                leader_lease: None,
                speaker_lease: None,
                loss_hold: None,
                metallb_configmap: None,
                metallb_namespace: None,
            },
        )
    }

    /// `--grpc-listen ADDR`: where speakers connect.
    pub fn grpc(mut self, addr: impl Display) -> Self {
        self.daemon.grpc = Some(addr.to_string());
        self
    }

    /// Mutual TLS with speakers (`--tls-cert`, `--tls-key`, `--tls-ca` from `files`) instead of `--insecure`.
    pub fn tls(mut self, files: &TlsFiles) -> Self {
        self.daemon.tls = Some(files.clone());
        self
    }

    /// `--speaker-service-account NAMESPACE/NAME` of `account`.
    pub fn speaker_account(self, account: &SpeakerAccount) -> Self {
        self.speaker_account_named(&account.flag())
    }

    /// `--speaker-service-account NAMESPACE/NAME`, written out.
    pub fn speaker_account_named(mut self, namespace_name: &str) -> Self {
        self.daemon.speaker_account = Some(namespace_name.to_owned());
        self
    }

    /// `--leader-service SERVICE --pod-ip IP`: as leader, point `service` at `pod_ip`.
    pub fn leader_service(mut self, service: &str, pod_ip: impl Display) -> Self {
        self.daemon.leader_service = Some((service.to_owned(), pod_ip.to_string()));
        self
    }

    /// `--leader-lease`: how long a dead leader blocks the standby.
    pub fn leader_lease(mut self, lease: Duration) -> Self {
        self.daemon.leader_lease = Some(lease);
        self
    }

    /// `--speaker-lease`: how long a speaker's assignments stay valid without renewal.
    pub fn speaker_lease(mut self, lease: Duration) -> Self {
        self.daemon.speaker_lease = Some(lease);
        self
    }

    /// `--controller-loss-hold`: how long speakers keep announcing after losing the controller.
    pub fn loss_hold(mut self, hold: Duration) -> Self {
        self.daemon.loss_hold = Some(hold);
        self
    }

    /// `--metallb-configmap NAMESPACE/NAME`: also read pools from MetalLB's legacy ConfigMap.
    pub fn metallb_configmap(mut self, namespace_name: &str) -> Self {
        self.daemon.metallb_configmap = Some(namespace_name.to_owned());
        self
    }

    /// `--metallb-namespace NAMESPACE`: also read MetalLB's own resources from that namespace.
    pub fn metallb_namespace(mut self, namespace: &str) -> Self {
        self.daemon.metallb_namespace = Some(namespace.to_owned());
        self
    }
}

impl Flags for LbControllerFlags {
    fn write(&self, args: &mut Vec<String>) {
        args.extend(["--kubeconfig".to_owned(), self.kubeconfig.clone()]);
        push_switch(args, "--insecure", self.tls.is_none());
        push_opt(args, "--grpc-listen", self.grpc.as_ref());
        if let Some(tls) = &self.tls {
            for (flag, path) in [
                ("--tls-cert", &tls.cert),
                ("--tls-key", &tls.key),
                ("--tls-ca", &tls.ca),
            ] {
                args.extend([flag.to_owned(), path_value(path)]);
            }
        }
        push_opt(
            args,
            "--speaker-service-account",
            self.speaker_account.as_ref(),
        );
        self.election.write(args);
        if let Some((service, pod_ip)) = &self.leader_service {
            args.extend(["--leader-service", service, "--pod-ip", pod_ip].map(str::to_owned));
        }
        push_duration(args, "--leader-lease", self.leader_lease);
        push_duration(args, "--speaker-lease", self.speaker_lease);
        push_duration(args, "--controller-loss-hold", self.loss_hold);
        push_opt(args, "--metallb-configmap", self.metallb_configmap.as_ref());
        push_opt(args, "--metallb-namespace", self.metallb_namespace.as_ref());
    }
}

impl Elects for LbControllerFlags {
    fn election(&mut self) -> &mut Election {
        &mut self.election
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_holds_every_flag_given() {
        let args = LbController::new("lb-controller", "/k/config")
            .grpc("127.0.0.1:7472")
            .speaker_lease(Duration::from_millis(600))
            .loss_hold(Duration::from_secs(1))
            .leader_elect()
            .args();
        assert_eq!(
            args,
            [
                "--kubeconfig",
                "/k/config",
                "--insecure",
                "--grpc-listen",
                "127.0.0.1:7472",
                "--leader-elect",
                "--speaker-lease",
                "600ms",
                "--controller-loss-hold",
                "1s",
            ]
        );
        let tls = TlsFiles {
            ca: "/t/ca".into(),
            cert: "/t/crt".into(),
            key: "/t/key".into(),
        };
        let args = LbController::new("lb-controller", "/k/config")
            .tls(&tls)
            .args();
        assert_eq!(
            args,
            [
                "--kubeconfig",
                "/k/config",
                "--tls-cert",
                "/t/crt",
                "--tls-key",
                "/t/key",
                "--tls-ca",
                "/t/ca"
            ]
        );
    }
}
