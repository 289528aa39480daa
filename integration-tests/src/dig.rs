//! DNS queries with the real `dig` (Debian's bind9-dnsutils), parsed into what tests assert on: the response
//! code, the header flags, and the records of each section.

use std::net::SocketAddr;
use std::process::Command;

use crate::netlab::Host;
use crate::{HarnessError, Result, io_err};

/// One resource record as `dig` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Owner name, lower-cased, with the trailing dot.
    pub name: String,
    /// TTL in seconds.
    pub ttl: u32,
    /// Record type, e.g. `A`.
    pub rtype: String,
    /// Record data as presented, e.g. `10.10.39.200`.
    pub data: String,
}

/// A parsed `dig` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Response code, e.g. `NOERROR`, `NXDOMAIN`, `REFUSED`.
    pub status: String,
    /// Header flags, e.g. `qr`, `aa`, `tc`.
    pub flags: Vec<String>,
    /// ANSWER section.
    pub answer: Vec<Record>,
    /// AUTHORITY section.
    pub authority: Vec<Record>,
    /// Everything `dig` printed, for assertion messages.
    pub raw: String,
}

impl Answer {
    /// Whether the header carries `flag` (e.g. `aa`).
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// The answer records as `name ttl type data` lines, sorted: what two servers' answers are compared by.
    pub fn records(&self) -> Vec<String> {
        let mut records: Vec<String> = self
            .answer
            .iter()
            .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.rtype, r.data))
            .collect();
        records.sort();
        records
    }

    /// The data of every answer record of type `rtype`, sorted.
    pub fn data_of(&self, rtype: &str) -> Vec<String> {
        let mut data: Vec<String> = self
            .answer
            .iter()
            .filter(|r| r.rtype == rtype)
            .map(|r| r.data.clone())
            .collect();
        data.sort();
        data
    }
}

/// Asks `server` for `name`/`rtype` over UDP (add `+tcp` in `extra` for TCP), without recursion (unless
/// `extra` has `+recurse`, as for a resolver).
pub fn query(server: SocketAddr, name: &str, rtype: &str, extra: &[&str]) -> Result<Answer> {
    ask(Command::new("dig"), server, name, rtype, extra)
}

/// [`query`] from inside `host`'s network namespace.
pub fn query_from(
    host: &Host,
    server: SocketAddr,
    name: &str,
    rtype: &str,
    extra: &[&str],
) -> Result<Answer> {
    ask(host.command("dig"), server, name, rtype, extra)
}

fn ask(
    mut command: Command,
    server: SocketAddr,
    name: &str,
    rtype: &str,
    extra: &[&str],
) -> Result<Answer> {
    addressed(&mut command, server, name, rtype);
    command
        .args(["+norecurse", "+time=2", "+tries=1"])
        .args(extra);
    let output = command
        .output()
        .map_err(io_err("running dig (install bind9-dnsutils)"))?;
    let raw = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(HarnessError::Command {
            command: format!("{command:?}"),
            stderr: format!("{raw}{}", String::from_utf8_lossy(&output.stderr)),
        });
    }
    parse(&raw).ok_or_else(|| HarnessError::Command {
        command: format!("{command:?}"),
        stderr: format!("unparseable dig output:\n{raw}"),
    })
}

/// A zone transfer as `dig` received it.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// The records, one per line as dig prints them (`name ttl class type data`, tab-separated).
    pub records: Vec<String>,
    /// Messages received.
    pub messages: usize,
    /// Bytes received.
    pub bytes: usize,
}

impl Transfer {
    /// The records as `name type data` (lowercased name, TTL and class left out), SOA and TSIG records
    /// excluded, sorted and deduplicated: what two servers holding the same zone have alike.
    pub fn content(&self) -> Vec<String> {
        let mut content: Vec<String> = self
            .records
            .iter()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let [name, _ttl, _class, rtype, data @ ..] = fields.as_slice() else {
                    return None;
                };
                (!matches!(*rtype, "SOA" | "TSIG"))
                    .then(|| format!("{} {rtype} {}", name.to_lowercase(), data.join(" ")))
            })
            .collect();
        content.sort();
        content.dedup();
        content
    }
}

/// A transfer of `zone` from `server`: `kind` is `AXFR` or `IXFR=<serial>`; `extra` adds dig options
/// (such as `-y` for a TSIG key). Fails when dig reports the transfer failed.
pub fn transfer(server: SocketAddr, zone: &str, kind: &str, extra: &[&str]) -> Result<Transfer> {
    let mut command = Command::new("dig");
    addressed(&mut command, server, zone, kind);
    command.args(["+nocmd", "+time=5", "+tries=1"]).args(extra);
    let output = command
        .output()
        .map_err(io_err("running dig (install bind9-dnsutils)"))?;
    let raw = String::from_utf8_lossy(&output.stdout).into_owned();
    let failed = |why: &str| HarnessError::Command {
        command: format!("{command:?}"),
        stderr: format!("{why}:\n{raw}{}", String::from_utf8_lossy(&output.stderr)),
    };
    if !output.status.success() || raw.contains("Transfer failed") {
        return Err(failed("transfer failed"));
    }
    // ";; XFR size: 7 records (messages 1, bytes 399)"
    let size = raw
        .lines()
        .find_map(|l| l.strip_prefix(";; XFR size: "))
        .ok_or_else(|| failed("no XFR size line"))?;
    let number_after = |label: &str| {
        size.split(label)
            .nth(1)
            .and_then(|rest| {
                rest.trim_start()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Ok(Transfer {
        records: raw
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with(';'))
            .map(str::to_owned)
            .collect(),
        messages: number_after("messages"),
        bytes: number_after("bytes"),
    })
}

/// Adds `@server -p port name rtype` to a dig command line.
fn addressed(command: &mut Command, server: SocketAddr, name: &str, rtype: &str) {
    command
        .arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .arg(name)
        .arg(rtype);
}

/// Parses `dig`'s default output.
pub fn parse(raw: &str) -> Option<Answer> {
    let status = raw
        .lines()
        .find_map(|l| l.split_once("status: "))
        .map(|(_, rest)| rest.split(',').next().unwrap_or_default().trim().to_owned())?;
    let flags = raw
        .lines()
        .find_map(|l| l.strip_prefix(";; flags: "))
        .map(|rest| {
            rest.split(';')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Some(Answer {
        status,
        flags,
        answer: section(raw, "ANSWER"),
        authority: section(raw, "AUTHORITY"),
        raw: raw.to_owned(),
    })
}

fn section(raw: &str, name: &str) -> Vec<Record> {
    let header = format!(";; {name} SECTION:");
    raw.lines()
        .skip_while(|l| l.trim() != header)
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let name = fields.next()?.to_ascii_lowercase();
            let ttl = fields.next()?.parse().ok()?;
            let _class = fields.next()?;
            let rtype = fields.next()?.to_owned();
            let data = fields.collect::<Vec<_>>().join(" ");
            Some(Record {
                name,
                ttl,
                rtype,
                data,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "
; <<>> DiG 9.18.28-1~deb12u2-Debian <<>> @127.0.0.1 -p 1053 nginx.test.org A +norecurse
;; global options: +cmd
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 4242
;; flags: qr aa; QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 1

;; QUESTION SECTION:
;nginx.test.org.\t\t\tIN\tA

;; ANSWER SECTION:
nginx.test.org.\t\t300\tIN\tA\t10.10.39.201
Nginx.test.org.\t\t300\tIN\tA\t10.10.39.200

;; Query time: 0 msec
";

    #[test]
    fn dig_output_is_parsed_into_status_flags_and_records() {
        let answer = parse(SAMPLE).unwrap();
        assert_eq!(answer.status, "NOERROR");
        assert!(answer.has_flag("aa") && answer.has_flag("qr") && !answer.has_flag("tc"));
        assert_eq!(answer.answer.len(), 2);
        assert_eq!(answer.answer[1].name, "nginx.test.org.");
        assert_eq!(answer.answer[1].ttl, 300);
        assert_eq!(answer.data_of("A"), ["10.10.39.200", "10.10.39.201"]);
        assert!(answer.authority.is_empty());
    }
}
