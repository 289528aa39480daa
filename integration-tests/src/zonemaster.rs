//! Zonemaster (Debian's `zonemaster-cli`) as an outside judge of a zone: an undelegated test (the name
//! servers given with `--ns`, as before a delegation exists) run inside a [`SealedNamespace`], whose only
//! interface is loopback. Zonemaster would otherwise ask the root servers for the parent zone, the reverse
//! zones of the name servers' addresses and the AS numbers behind them; in the namespace those queries fail
//! at once (no route), and what they would have found is reported as such.
//!
//! [`SealedNamespace`]: crate::netlab::SealedNamespace

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::netlab::Host;
use crate::process::{Process, Scratch};
use crate::{HarnessError, Result, require_program};

/// How long a run may take: about 2 s against servers that answer at once, the rest is headroom for a
/// busy machine (Zonemaster waits 5 s for each query that gets no answer).
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// A message's severity, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Zonemaster's own tracing.
    Debug,
    /// A check that passed, or a fact.
    Info,
    /// Worth knowing, not a fault.
    Notice,
    /// A fault to fix unless the situation explains it.
    Warning,
    /// A fault.
    Error,
    /// A fault that stopped the test.
    Critical,
}

/// Zonemaster's names of the levels, lowest first.
const LEVEL_NAMES: [(Level, &str); 6] = [
    (Level::Debug, "DEBUG"),
    (Level::Info, "INFO"),
    (Level::Notice, "NOTICE"),
    (Level::Warning, "WARNING"),
    (Level::Error, "ERROR"),
    (Level::Critical, "CRITICAL"),
];

impl Level {
    fn parse(text: &str) -> Option<Self> {
        // DEBUG2 and DEBUG3 are Zonemaster's finer tracing.
        let text = if text.starts_with("DEBUG") {
            "DEBUG"
        } else {
            text
        };
        LEVEL_NAMES
            .iter()
            .find(|(_, name)| *name == text)
            .map(|(level, _)| *level)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = LEVEL_NAMES
            .iter()
            .find(|(level, _)| level == self)
            .map_or("?", |(_, name)| name);
        f.write_str(name)
    }
}

/// One message of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Its severity.
    pub level: Level,
    /// The test module, e.g. `ZONE`.
    pub module: String,
    /// The test case, e.g. `ZONE05` (`UNSPECIFIED` for some).
    pub testcase: String,
    /// The message tag, e.g. `EXPIRE_MINIMUM_VALUE_LOWER`: what tests match on.
    pub tag: String,
    /// The tag's arguments (the values it is about).
    pub args: serde_json::Value,
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.level, self.testcase, self.tag, self.args
        )
    }
}

/// Parses `zonemaster-cli --json-stream` output, one JSON object a line; other lines (Perl's warnings on
/// stderr) are returned apart.
pub fn parse(output: &str) -> (Vec<Message>, Vec<String>) {
    let mut messages = Vec::new();
    let mut other = Vec::new();
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        match message(line) {
            Some(message) => messages.push(message),
            None => other.push(line.to_owned()),
        }
    }
    (messages, other)
}

fn message(line: &str) -> Option<Message> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let text = |field: &str| value.get(field)?.as_str().map(str::to_owned);
    Some(Message {
        level: Level::parse(&text("level")?)?,
        module: text("module")?,
        testcase: text("testcase").unwrap_or_default(),
        tag: text("tag")?,
        args: value.get("args").cloned().unwrap_or_default(),
    })
}

/// Runs Zonemaster inside `host`'s namespace on `zone`, undelegated, with `name_servers` (name, address)
/// as the delegation; returns its messages at INFO and above. IPv6 is not used when no name server has an
/// IPv6 address.
pub fn check(host: &Host, zone: &str, name_servers: &[(&str, IpAddr)]) -> Result<Vec<Message>> {
    require_program("zonemaster-cli", "zonemaster-cli")?;
    let scratch = Scratch::new("zonemaster")?;
    let mut command = host.command("zonemaster-cli");
    command.args(["--json-stream", "--level", "INFO", "--no-progress"]);
    for (name, address) in name_servers {
        command.arg("--ns").arg(format!("{name}/{address}"));
    }
    if !name_servers.iter().any(|(_, address)| address.is_ipv6()) {
        command.arg("--no-ipv6");
    }
    command.arg(zone);
    let log = scratch.join("zonemaster.jsonl");
    let mut process = Process::spawn("zonemaster-cli", command, &log)?;
    let status = process.wait_exit(RUN_TIMEOUT).ok_or_else(|| {
        HarnessError::Setup(format!(
            "zonemaster-cli still running after {RUN_TIMEOUT:?}; output so far:\n{}",
            process.log_tail(20)
        ))
    })?;
    let output =
        std::fs::read_to_string(&log).map_err(crate::io_err("reading Zonemaster's output"))?;
    let (messages, other) = parse(&output);
    if !status.success() || messages.is_empty() {
        return Err(HarnessError::Command {
            command: format!("zonemaster-cli {zone} in {} ({status})", host.netns),
            stderr: other.join("\n"),
        });
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_stream_lines_parse_into_levels_and_tags() {
        let output = concat!(
            r#"{"args":{"version":"v4.6.2"},"level":"INFO","module":"SYSTEM","tag":"GLOBAL_VERSION","testcase":"UNSPECIFIED","timestamp":0.0004}"#,
            "\n",
            "Use of uninitialized value in concatenation at line 3.\n",
            r#"{"args":{"expire":86400,"required_expire":604800},"level":"WARNING","module":"ZONE","tag":"EXPIRE_MINIMUM_VALUE_LOWER","testcase":"ZONE05","timestamp":0.37}"#,
            "\n",
        );
        let (messages, other) = parse(output);
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1].level, Level::Warning);
        assert_eq!(messages[1].testcase, "ZONE05");
        assert_eq!(messages[1].tag, "EXPIRE_MINIMUM_VALUE_LOWER");
        assert_eq!(messages[1].args["expire"], 86400);
        assert_eq!(
            other,
            ["Use of uninitialized value in concatenation at line 3."]
        );
        assert!(Level::Notice < Level::Warning && Level::Error < Level::Critical);
        assert_eq!(
            messages[1].to_string(),
            r#"WARNING ZONE05 EXPIRE_MINIMUM_VALUE_LOWER {"expire":86400,"required_expire":604800}"#
        );
    }
}
