//! BIRD 2, the real router of the BGP and BFD tests: one `bird` process per test, in a namespace the test
//! made, with its own configuration, control socket and pid file in a scratch directory (the package's
//! system service is never used), stopped by PID when dropped (its [`Process`]). The router's own view, read with `birdc`, is
//! what the tests judge by.
//!
//! The API is the process and `birdc` only: starting, a raw [`Bird::birdc`], [`Bird::show`] and the two
//! readings every BGP suite makes ([`Bird::route`], [`Bird::protocol_state`]), killing, the log. What a
//! suite parses out of `birdc`'s text for its own assertions (paths, BFD rows, counters) stays in the suite.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::netlab::Host;
use crate::process::{Process, Scratch};
use crate::{HarnessError, Result, io_err, wait};

/// The `bird` binary (Debian's `bird2`, installed by `scripts/install-deps`).
pub const BIRD: &str = "/usr/sbin/bird";
/// Its control client.
pub const BIRDC: &str = "/usr/sbin/birdc";

/// How long BIRD gets to answer on its control socket after starting.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running BIRD.
pub struct Bird {
    // Declared before `scratch`: the process is stopped before its directory goes.
    process: Process,
    socket: PathBuf,
    _scratch: Option<Scratch>,
}

impl Bird {
    /// Starts BIRD in `host` with `config` (the whole `bird.conf`), its files under `dir` named after
    /// `name`, and waits until it answers on its control socket that it is up and running. To read its
    /// log through [`Bird::log`], the config logs to stderr (`log stderr all;`).
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
        let mut bird = Self {
            process,
            socket,
            _scratch: None,
        };
        let starting = &mut bird;
        wait::until_blocking(
            &format!("{name} up and running on its control socket"),
            START_TIMEOUT,
            || {
                // A config BIRD refuses ends the process: say so at once, with its log.
                starting
                    .process
                    .check_running()
                    .map_err(|e| e.to_string())?;
                let status = starting.show("status").map_err(|e| e.to_string())?;
                if status.contains("Daemon is up and running") {
                    Ok(())
                } else {
                    Err(status)
                }
            },
        )?;
        Ok(bird)
    }

    /// [`Bird::start_in`] a scratch directory of its own (kept with the log if the test fails).
    pub fn start(host: &Host, name: &str, config: &str) -> Result<Self> {
        let scratch = Scratch::new(name)?;
        let mut bird = Self::start_in(host, name, scratch.path(), config)?;
        bird._scratch = Some(scratch);
        Ok(bird)
    }

    /// `birdc <args>`'s output (`reload in p1`, `show route 10.0.0.1/32 table master4 all`...).
    /// An error when birdc cannot reach BIRD or rejects the command; "Network not found", the empty answer
    /// to a route query, is an answer.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let output = Command::new(BIRDC)
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .map_err(io_err(format!("running {BIRDC} {args:?}")))?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        // birdc exits non-zero for an empty answer ("Network not found"): that is an answer, not a failure.
        let answered = output.status.success() || text.contains("Network not found");
        if !answered || text.contains("Unable to connect") {
            return Err(HarnessError::Setup(format!(
                "birdc {}: {}{}",
                args.join(" "),
                text,
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(text)
    }

    /// `birdc show <what>`'s output (`show route all`, `show protocols all p1`, `show bfd sessions`).
    pub fn show(&self, what: &str) -> Result<String> {
        let args: Vec<&str> = std::iter::once("show")
            .chain(what.split_whitespace())
            .collect();
        self.birdc(&args)
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

    /// Waits up to `timeout` for the BGP protocol `name` to be Established; the timeout's error carries
    /// `show protocols all <name>`.
    pub fn wait_established(&self, name: &str, timeout: Duration) -> Result<()> {
        wait::until_blocking(
            &format!("BIRD's BGP session {name} Established"),
            timeout,
            || match self
                .protocol_state(name)
                .map_err(|e| e.to_string())?
                .as_str()
            {
                "Established" => Ok(()),
                _ => Err(self
                    .show(&format!("protocols all {name}"))
                    .unwrap_or_else(|e| e.to_string())),
            },
        )
    }

    /// SIGKILL at once: a router that dies, sending nothing more.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Its whole log (the process's stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log_path()).unwrap_or_default()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}
