//! TSIG keys for tests, made by BIND's own `tsig-keygen` (so the key file dns-server reads is the format
//! operators have), and spelled for each peer: BIND's `key` clause, Knot's `key:` section, `dig -y`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::run_ok;
use crate::{HarnessError, Result, certs};

/// A shared secret known by name.
#[derive(Debug, Clone)]
pub struct TsigKey {
    /// The key's name, e.g. `transfer.test.org`.
    pub name: String,
    /// The BIND `key` clause `tsig-keygen` printed.
    pub clause: String,
    /// The base64 secret.
    pub secret: String,
}

impl TsigKey {
    /// A fresh HMAC-SHA256 key called `name`.
    pub fn generate(name: &str) -> Result<Self> {
        let clause = run_ok(Command::new("tsig-keygen").args(["-a", "hmac-sha256", name]))?;
        let secret = clause
            .lines()
            .find_map(|line| line.trim().strip_prefix("secret \""))
            .and_then(|rest| rest.strip_suffix("\";"))
            .ok_or_else(|| HarnessError::Setup(format!("tsig-keygen printed no secret: {clause}")))?
            .to_owned();
        Ok(Self {
            name: name.to_owned(),
            clause,
            secret,
        })
    }

    /// The same name with another secret: what a secondary holding a stale or wrong key has.
    pub fn with_other_secret(&self) -> Result<Self> {
        Self::generate(&self.name)
    }

    /// Writes the `key` clause to `dir/<name>.key` (what `--tsig-key-file` and BIND's `include` read).
    pub fn write_file(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join(format!("{}.key", self.name));
        certs::write(&path, &self.clause)?;
        Ok(path)
    }

    /// The key in Knot's configuration syntax.
    pub fn knot_section(&self) -> String {
        format!(
            "key:\n  - id: {}\n    algorithm: hmac-sha256\n    secret: {}\n\n",
            self.name, self.secret
        )
    }

    /// `dig`'s `-y` value.
    pub fn dig_arg(&self) -> String {
        format!("hmac-sha256:{}:{}", self.name, self.secret)
    }
}
