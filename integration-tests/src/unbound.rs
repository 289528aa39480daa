//! unbound (Debian's `unbound`) as users run it in front of dns-server: a recursive resolver with a
//! `stub-zone` for the zone, QNAME minimisation on and DNSSEC validation on with the root's trust anchor,
//! the zone declared insecure (`domain-insecure`) because dns-server does not sign it.
//!
//! Each instance has its own configuration, directory, pid file and port; no chroot, no privilege drop, no
//! remote control, so it neither needs nor touches the package's system service. It runs inside a
//! namespace the test made (a [`crate::netlab::SealedNamespace`]): whatever it would ask outside the stub
//! zone (the root, for trust-anchor priming) fails there instead of leaving the machine.

use std::net::SocketAddr;
use std::time::Duration;

use crate::netlab::Host;
use crate::process::{Process, Scratch};
use crate::{Result, certs, dig, require_program, wait};

/// The root zone's trust anchor (KSK-2017, key tag 20326) as a DS record, as `/usr/share/dns/root.key`
/// holds it. Validation stays on as in a user's resolver; `domain-insecure` must keep it from the stub zone.
const ROOT_TRUST_ANCHOR: &str =
    ". DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D";

/// A running unbound.
#[derive(Debug)]
pub struct Unbound {
    // Fields drop in order: the process stops before its directory is removed.
    process: Process,
    addr: SocketAddr,
    _scratch: Scratch,
}

impl Unbound {
    /// Starts unbound in `host`'s namespace on `listen`, resolving `zone` from the authoritative server at
    /// `stub` (a stub zone: the resolver asks it directly, not the zone's parents). Returns once it answers.
    pub fn with_stub_zone(
        host: &Host,
        listen: SocketAddr,
        zone: &str,
        stub: SocketAddr,
    ) -> Result<Self> {
        let binary = require_program("unbound", "unbound")?;
        let scratch = Scratch::new("unbound")?;
        let dir = scratch.path().display().to_string();
        let config = format!(
            r#"server:
  interface: {ip}
  port: {port}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{dir}"
  pidfile: "{dir}/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 1
  val-log-level: 2
  qname-minimisation: yes
  # The stub's address is on loopback, which unbound does not query unless told to.
  do-not-query-localhost: no
  trust-anchor: "{ROOT_TRUST_ANCHOR}"
  domain-insecure: "{zone}"

remote-control:
  control-enable: no

stub-zone:
  name: "{zone}"
  stub-addr: {stub_ip}@{stub_port}
"#,
            ip = listen.ip(),
            port = listen.port(),
            stub_ip = stub.ip(),
            stub_port = stub.port(),
        );
        let config_path = scratch.join("unbound.conf");
        certs::write(&config_path, &config)?;
        let mut command = host.command(&binary.display().to_string());
        command.arg("-d").arg("-c").arg(&config_path);
        let mut process = Process::spawn("unbound", command, &scratch.join("unbound.log"))?;
        // unbound answers `version.server` (class CHAOS) itself: up, without asking the stub anything.
        wait::until_blocking("unbound to answer", Duration::from_secs(20), || {
            process.check_running().map_err(|e| e.to_string())?;
            dig::query_from(host, listen, "version.server", "TXT", &["-c", "CH"])
                .map(|_| ())
                .map_err(|e| e.to_string())
        })?;
        Ok(Self {
            process,
            addr: listen,
            _scratch: scratch,
        })
    }

    /// Where unbound answers, inside its namespace.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The unbound process (its log says why a lookup failed).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}
