//! Knot DNS (Debian's `knot`) as a real peer: a secondary that transfers a zone from a primary and follows
//! its NOTIFYs, or a primary serving a zone file (the speed reference for authoritative serving).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::process::{Process, Scratch, free_port};
use crate::{Result, certs, dig, wait};

/// A running knotd on a free loopback port.
#[derive(Debug)]
pub struct Knot {
    process: Process,
    addr: SocketAddr,
    scratch: Scratch,
}

impl Knot {
    /// A secondary for `zone` transferring from `primary` and accepting its NOTIFYs. Returns once knotd
    /// answers queries (the zone itself may still be transferring).
    pub async fn secondary(zone: &str, primary: SocketAddr) -> Result<Self> {
        Self::secondary_on(free_port()?, zone, primary).await
    }

    /// [`Knot::secondary`] on a given loopback port (so the primary can be told where to NOTIFY first).
    pub async fn secondary_on(port: u16, zone: &str, primary: SocketAddr) -> Result<Self> {
        let remote = format!(
            "remote:\n  - id: primary\n    address: {}@{}\n\nacl:\n  - id: notify_from_primary\n    address: {}\n    action: notify\n\n",
            primary.ip(),
            primary.port(),
            primary.ip()
        );
        let zone = format!(
            "zone:\n  - domain: {zone}\n    master: primary\n    acl: notify_from_primary\n"
        );
        Self::start(port, &remote, &zone, None).await
    }

    /// A primary serving `zone` from the zone-file text `contents`.
    pub async fn primary(zone: &str, contents: &str) -> Result<Self> {
        let zone_block = format!("zone:\n  - domain: {zone}\n    file: \"{zone}.zone\"\n");
        Self::start(free_port()?, "", &zone_block, Some((zone, contents))).await
    }

    async fn start(
        port: u16,
        remote: &str,
        zone: &str,
        file: Option<(&str, &str)>,
    ) -> Result<Self> {
        let scratch = Scratch::new("knot")?;
        let dir = scratch.path().display().to_string();
        let config = format!(
            "server:\n  rundir: \"{dir}\"\n  listen: 127.0.0.1@{port}\n\nlog:\n  - target: stderr\n    any: info\n\ndatabase:\n  storage: \"{dir}/db\"\n\n{remote}template:\n  - id: default\n    storage: \"{dir}\"\n    zonefile-sync: -1\n\n{zone}"
        );
        let config_path = scratch.join("knot.conf");
        certs::write(&config_path, &config)?;
        if let Some((name, contents)) = file {
            certs::write(&scratch.join(&format!("{name}.zone")), contents)?;
        }
        let mut command = Command::new("knotd");
        command.arg("-c").arg(&config_path);
        let mut process = Process::spawn("knotd", command, &scratch.join("knotd.log"))?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        wait::until("knotd to answer", Duration::from_secs(20), || {
            let running = process.check_running();
            async move {
                running.map_err(|e| e.to_string())?;
                dig::query(addr, "version.server", "TXT", &["+norecurse"])
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await?;
        Ok(Self {
            process,
            addr,
            scratch,
        })
    }

    /// Where knotd answers DNS.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The knotd process (log, signals).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Its working directory.
    pub fn dir(&self) -> &std::path::Path {
        self.scratch.path()
    }
}
