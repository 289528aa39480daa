//! Knot DNS (Debian's `knot`) as a real peer: a secondary that transfers a zone from a primary and follows
//! its NOTIFYs, or a primary serving a zone file (the speed reference for authoritative serving).

use std::net::SocketAddr;
use std::process::Command;

use crate::dns_peer::DnsPeer;
use crate::process::{Scratch, free_port};
use crate::tsig::TsigKey;
use crate::{Result, certs};

/// A running knotd on a free loopback port (its address, process and directory: [`DnsPeer`]).
#[derive(Debug)]
pub struct Knot(DnsPeer);

impl Knot {
    /// A secondary for `zone` transferring from `primary` and accepting its NOTIFYs. Returns once knotd
    /// answers queries (the zone itself may still be transferring).
    pub async fn secondary(zone: &str, primary: SocketAddr) -> Result<Self> {
        Self::secondary_on(free_port()?, zone, primary).await
    }

    /// [`Knot::secondary`] on a given loopback port (so the primary can be told where to NOTIFY first).
    pub async fn secondary_on(port: u16, zone: &str, primary: SocketAddr) -> Result<Self> {
        Self::secondary_with_key(port, zone, primary, None).await
    }

    /// [`Knot::secondary_on`] signing its requests to the primary with `key`, and taking NOTIFY only when
    /// signed with it.
    pub async fn secondary_with_key(
        port: u16,
        zone: &str,
        primary: SocketAddr,
        key: Option<&TsigKey>,
    ) -> Result<Self> {
        let (key_section, key_ref) = match key {
            Some(key) => (key.knot_section(), format!("\n    key: {}", key.name)),
            None => (String::new(), String::new()),
        };
        let remote = format!(
            "{key_section}remote:\n  - id: primary\n    address: {}@{}{key_ref}\n\nacl:\n  - id: notify_from_primary\n    address: {}\n    action: notify{key_ref}\n  - id: transfer_to_tests\n    address: 127.0.0.0/8\n    action: transfer\n\n",
            primary.ip(),
            primary.port(),
            primary.ip()
        );
        // Tests read what the secondary holds by AXFR from it (`transfer_to_tests`).
        let zone = format!(
            "zone:\n  - domain: {zone}\n    master: primary\n    acl: [notify_from_primary, transfer_to_tests]\n"
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
        // The journal, where a secondary keeps the changes of each IXFR: knotd does not create its directory
        // and fails to store them without it ("failed to store changes (not exists)").
        std::fs::create_dir_all(scratch.join("db"))
            .map_err(crate::io_err("creating knotd's database directory"))?;
        let config_path = scratch.join("knot.conf");
        certs::write(&config_path, &config)?;
        if let Some((name, contents)) = file {
            certs::write(&scratch.join(&format!("{name}.zone")), contents)?;
        }
        let mut command = Command::new("knotd");
        command.arg("-c").arg(&config_path);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let peer = DnsPeer::start(
            "knotd",
            command,
            scratch,
            addr,
            ("version.server", &["+norecurse"]),
        )
        .await?;
        Ok(Self(peer))
    }
}

impl std::ops::Deref for Knot {
    type Target = DnsPeer;
    fn deref(&self) -> &DnsPeer {
        &self.0
    }
}

impl std::ops::DerefMut for Knot {
    fn deref_mut(&mut self) -> &mut DnsPeer {
        &mut self.0
    }
}
