//! BIND 9 (Debian's `bind9`) as a real secondary: `named` transferring a zone from a primary (AXFR, then
//! IXFR), taking its NOTIFYs, optionally with a TSIG key for everything it says to the primary.

use std::net::SocketAddr;
use std::process::Command;

use crate::dns_peer::DnsPeer;
use crate::process::{Scratch, free_port};
use crate::tsig::TsigKey;
use crate::{Result, certs};

/// A running `named` on a loopback port (its address, process and directory: [`DnsPeer`]).
#[derive(Debug)]
pub struct Named(DnsPeer);

impl Named {
    /// A secondary for `zone` on `port`, transferring from `primary` (signing with `key` when given) and
    /// taking NOTIFY from the primary's address. Returns once named answers queries.
    pub async fn secondary_on(
        port: u16,
        zone: &str,
        primary: SocketAddr,
        key: Option<&TsigKey>,
    ) -> Result<Self> {
        let scratch = Scratch::new("named")?;
        let dir = scratch.path().display().to_string();
        let (key_clause, key_ref) = match key {
            Some(key) => (key.clause.clone(), format!(" key \"{}\"", key.name)),
            None => (String::new(), String::new()),
        };
        let config = format!(
            r#"{key_clause}
options {{
    directory "{dir}";
    pid-file "{dir}/named.pid";
    session-keyfile "{dir}/session.key";
    managed-keys-directory "{dir}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
    allow-transfer {{ 127.0.0.0/8; }};
}};
controls {{ }};
logging {{
    channel out {{ stderr; severity info; print-time yes; print-category yes; }};
    category default {{ out; }};
    category xfer-in {{ out; }};
    category notify {{ out; }};
}};
zone "{zone}" {{
    type secondary;
    primaries port {primary_port} {{ {primary_ip}{key_ref}; }};
    file "{zone}.db";
    masterfile-format text;
}};
"#,
            primary_port = primary.port(),
            primary_ip = primary.ip(),
        );
        let config_path = scratch.join("named.conf");
        certs::write(&config_path, &config)?;
        let mut command = Command::new("named");
        // Foreground, logging to stderr, one worker: a test-sized server.
        command.args(["-g", "-n", "1", "-c"]).arg(&config_path);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let peer = DnsPeer::start(
            "named",
            command,
            scratch,
            addr,
            ("version.bind", &["-c", "CH", "+norecurse"]),
        )
        .await?;
        Ok(Self(peer))
    }

    /// A secondary on a free port.
    pub async fn secondary(zone: &str, primary: SocketAddr, key: Option<&TsigKey>) -> Result<Self> {
        Self::secondary_on(free_port()?, zone, primary, key).await
    }
}

impl std::ops::Deref for Named {
    type Target = DnsPeer;
    fn deref(&self) -> &DnsPeer {
        &self.0
    }
}

impl std::ops::DerefMut for Named {
    fn deref_mut(&mut self) -> &mut DnsPeer {
        &mut self.0
    }
}
