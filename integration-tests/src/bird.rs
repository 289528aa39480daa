//! BIRD 2, the real router of the BGP and BFD tests: one `bird` process per test, in a namespace the test
//! made, with its own configuration, control socket and pid file in a scratch directory (the package's
//! system service is never used), stopped by PID when dropped (its [`Process`]). The router's own view, read with `birdc`, is
//! what the tests judge by.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::netlab::Host;
use crate::process::Process;
use crate::{HarnessError, Result, io_err, wait};

/// The `bird` binary (Debian's `bird2`, installed by `scripts/install-deps`).
pub const BIRD: &str = "/usr/sbin/bird";
/// Its control client.
pub const BIRDC: &str = "/usr/sbin/birdc";

/// A running BIRD.
pub struct Bird {
    process: Process,
    socket: PathBuf,
}

impl Bird {
    /// Starts BIRD in `host` with `config` (the whole `bird.conf`), its files under `dir` named after
    /// `name`, and waits until it answers on its control socket.
    pub fn start_in(host: &Host, name: &str, dir: &Path, config: &str) -> Result<Self> {
        let conf = dir.join(format!("{name}.conf"));
        let socket = dir.join(format!("{name}.ctl"));
        std::fs::write(&conf, config).map_err(io_err(format!("writing {}", conf.display())))?;
        let mut command = host.command(BIRD);
        command
            .arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(dir.join(format!("{name}.pid")));
        let log = dir.join(format!("{name}.log"));
        let process = Process::spawn(name, command, &log)?;
        let bird = Self { process, socket };
        wait::until_blocking(
            &format!("{name} answering on its control socket"),
            Duration::from_secs(10),
            || bird.show("status").map_err(|e| e.to_string()),
        )?;
        Ok(bird)
    }

    /// `birdc show <what>`'s output (`show route all`, `show protocols all p1`, `show bfd sessions`).
    pub fn show(&self, what: &str) -> Result<String> {
        let mut command = Command::new(BIRDC);
        command.arg("-s").arg(&self.socket).arg("show");
        command.args(what.split_whitespace());
        let output = command
            .output()
            .map_err(io_err(format!("running {BIRDC} show {what}")))?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        // birdc exits non-zero for an empty answer ("Network not found"): that is an answer, not a failure.
        let answered = output.status.success() || text.contains("Network not found");
        if !answered || text.contains("Unable to connect") {
            return Err(HarnessError::Setup(format!(
                "birdc show {what}: {}{}",
                text,
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(text)
    }

    /// The routes for `prefix` in the router's tables, with all their attributes (`show route <prefix>
    /// all`); empty when there are none.
    pub fn route(&self, prefix: &str) -> Result<String> {
        let text = self.show(&format!("route {prefix} all"))?;
        Ok(if text.lines().any(|l| l.starts_with(prefix)) {
            text
        } else {
            String::new()
        })
    }

    /// The BGP protocol `name`'s state as `show protocols` gives it (`Established`, `Active`, `Connect`...).
    pub fn protocol_state(&self, name: &str) -> Result<String> {
        let text = self.show(&format!("protocols {name}"))?;
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .ok_or_else(|| HarnessError::Setup(format!("no protocol {name} in: {text}")))?;
        Ok(line
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_owned())
    }

    /// The process (to kill it: a router that dies).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// The tail of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}
