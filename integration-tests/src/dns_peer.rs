//! A third-party DNS server run by a test (knotd, named): its process, the loopback address it answers on,
//! and its working directory, started and waited for alike.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::process::{Process, Scratch};
use crate::{Result, dig, wait};

/// A running DNS server owned by a test; stopped by PID when dropped.
#[derive(Debug)]
pub struct DnsPeer {
    process: Process,
    addr: SocketAddr,
    scratch: Scratch,
}

impl DnsPeer {
    /// Runs `command` (logging to `<scratch>/<name>.log`) and waits until it answers `probe` (a name and
    /// dig options, e.g. a CHAOS `version.bind`) on `addr`.
    pub async fn start(
        name: &str,
        command: Command,
        scratch: Scratch,
        addr: SocketAddr,
        probe: (&str, &[&str]),
    ) -> Result<Self> {
        let mut process = Process::spawn(name, command, &scratch.join(&format!("{name}.log")))?;
        let (probe_name, probe_options) = probe;
        wait::until(
            &format!("{name} to answer"),
            Duration::from_secs(20),
            || {
                let running = process.check_running();
                async move {
                    running.map_err(|e| e.to_string())?;
                    dig::query(addr, probe_name, "TXT", probe_options)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            },
        )
        .await?;
        Ok(Self {
            process,
            addr,
            scratch,
        })
    }

    /// Where it answers DNS.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process (log, signals).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Its working directory.
    pub fn dir(&self) -> &std::path::Path {
        self.scratch.path()
    }
}
