//! `lb-speaker`'s command line.

use std::path::Path;
use std::time::Duration;

use super::{Flags, Launcher, path_value, push_duration, push_opt, push_switch};
use crate::certs::TlsFiles;

/// The `lb-speaker` launcher: `LbSpeaker::new(binary, node_name)`, then the controller it reaches
/// ([`LbSpeaker::controller`]) and how ([`LbSpeaker::insecure`] or [`LbSpeaker::tls`]).
pub type LbSpeaker = Launcher<LbSpeakerFlags>;

/// lb-speaker's own flags (see [`LbSpeaker`]).
#[derive(Debug, Clone)]
pub struct LbSpeakerFlags {
    controller: Option<String>,
    node_name: String,
    insecure: bool,
    interfaces: Option<String>,
    tls: Option<TlsFiles>,
    token_file: Option<String>,
    gratuitous_repeat: Option<String>,
    loss_hold: Option<Duration>,
}

impl Launcher<LbSpeakerFlags> {
    /// `binary` as the speaker of node `node_name` (`--node-name`).
    pub fn new(binary: impl AsRef<Path>, node_name: &str) -> Self {
        Self::with(
            binary,
            LbSpeakerFlags {
                controller: None,
                node_name: node_name.to_owned(),
                insecure: false,
                interfaces: None,
                tls: None,
                token_file: None,
                gratuitous_repeat: None,
                loss_hold: None,
            },
        )
    }

    /// `--controller URL`: the controller it opens its session with (`http://` or `https://`).
    pub fn controller(mut self, url: &str) -> Self {
        self.daemon.controller = Some(url.to_owned());
        self
    }

    /// `--insecure`: plaintext to an `http://` controller.
    pub fn insecure(mut self) -> Self {
        self.daemon.insecure = true;
        self
    }

    /// `--interfaces REGEX`: only matching interfaces may announce.
    pub fn interfaces(mut self, regex: &str) -> Self {
        self.daemon.interfaces = Some(regex.to_owned());
        self
    }

    /// Mutual TLS with the controller: `--tls-cert`, `--tls-key`, `--tls-ca` from `files`.
    pub fn tls(mut self, files: &TlsFiles) -> Self {
        self.daemon.tls = Some(files.clone());
        self
    }

    /// `--token-file PATH`: the projected ServiceAccount token proving the node.
    pub fn token_file(mut self, path: impl AsRef<Path>) -> Self {
        self.daemon.token_file = Some(path_value(path));
        self
    }

    /// `--gratuitous-repeat N`: gratuitous ARP repeats after a takeover.
    pub fn gratuitous_repeat(mut self, repeats: u32) -> Self {
        self.daemon.gratuitous_repeat = Some(repeats.to_string());
        self
    }

    /// `--controller-loss-hold`: how long to keep announcing after losing the controller.
    pub fn loss_hold(mut self, hold: Duration) -> Self {
        self.daemon.loss_hold = Some(hold);
        self
    }
}

impl Flags for LbSpeakerFlags {
    fn write(&self, args: &mut Vec<String>) {
        push_opt(args, "--controller", self.controller.as_ref());
        args.extend(["--node-name".to_owned(), self.node_name.clone()]);
        push_switch(args, "--insecure", self.insecure);
        push_opt(args, "--interfaces", self.interfaces.as_ref());
        if let Some(tls) = &self.tls {
            for (flag, path) in [
                ("--tls-cert", &tls.cert),
                ("--tls-key", &tls.key),
                ("--tls-ca", &tls.ca),
            ] {
                args.extend([flag.to_owned(), path_value(path)]);
            }
        }
        push_opt(args, "--token-file", self.token_file.as_ref());
        push_opt(args, "--gratuitous-repeat", self.gratuitous_repeat.as_ref());
        push_duration(args, "--controller-loss-hold", self.loss_hold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_holds_every_flag_given() {
        let args = LbSpeaker::new("lb-speaker", "n1")
            .controller("http://127.0.0.1:9")
            .insecure()
            .interfaces("^lo$")
            .loss_hold(Duration::from_secs(5))
            .log_filter("info")
            .flag("--gratuitous-repeat", "x")
            .args();
        assert_eq!(
            args,
            [
                "--controller",
                "http://127.0.0.1:9",
                "--node-name",
                "n1",
                "--insecure",
                "--interfaces",
                "^lo$",
                "--controller-loss-hold",
                "5s",
                "--log-filter",
                "info",
                "--gratuitous-repeat",
                "x",
            ]
        );
    }
}
