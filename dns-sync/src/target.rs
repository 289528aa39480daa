//! What one record of a name holds: an address or alias, a text, a service or a mail exchanger, as the
//! skydns format can express them. A record is identified by its name and its [`Target`]: the plan keeps one
//! etcd key per (name, target), and reads the target of a record back from the fields it was written to.
//!
//! The skydns format has one shape for all of them (`proto::skydns::SkydnsRecord`); what the record is
//! follows from which fields are set, as CoreDNS's etcd plugin reads it:
//! - `host` alone: an address (A/AAAA), else an alias (CNAME), or, in a reverse zone, a PTR;
//! - `text` without `host`: a TXT string;
//! - `host` and `port`: an SRV record (`priority`, `weight`, `port`, `host`);
//! - `host` and `mail`: an MX record (`priority` is the preference).
//!
//! Two limits of the format that a user of SRV and MX records meets: CoreDNS (and dns-server, which answers
//! like it) serves a priority or preference of 0 as 10, and serves SRV weights as each record's share of 100
//! within its priority. `docs/dns-sync.md` says so.

use std::fmt;
use std::net::IpAddr;

use proto::skydns::SkydnsRecord;

/// The data of one record of a name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// An IP address (A/AAAA) or a lower-case host name (CNAME; PTR in a reverse zone).
    Host(String),
    /// One TXT string, as given.
    Text(String),
    /// An SRV record.
    Srv {
        /// Priority (served as 10 when 0).
        priority: u16,
        /// Weight.
        weight: u16,
        /// Port.
        port: u16,
        /// Lower-case target host name.
        host: String,
    },
    /// An MX record.
    Mx {
        /// Preference (served as 10 when 0).
        preference: u16,
        /// Lower-case mail exchanger host name.
        host: String,
    },
}

impl Target {
    /// An address or host name target.
    pub fn host(host: impl Into<String>) -> Self {
        Self::Host(host.into())
    }

    /// The address, for an address target.
    pub fn address(&self) -> Option<IpAddr> {
        match self {
            Self::Host(host) => host.parse().ok(),
            _ => None,
        }
    }

    /// Whether this is a host name (not an address) in a plain `host` record: served as a CNAME, or as a
    /// PTR in a reverse zone.
    pub fn is_name(&self) -> bool {
        matches!(self, Self::Host(host) if host.parse::<IpAddr>().is_err())
    }

    /// The target of a record read back from etcd, by the rules CoreDNS reads it with; `None` for a record
    /// with neither host nor text.
    pub fn of_record(record: &SkydnsRecord) -> Option<Self> {
        let host = record.host.to_ascii_lowercase();
        if host.is_empty() {
            return (!record.text.is_empty()).then(|| Self::Text(record.text.clone()));
        }
        Some(if record.mail {
            Self::Mx {
                preference: record.priority,
                host,
            }
        } else if record.port != 0 {
            Self::Srv {
                priority: record.priority,
                weight: record.weight,
                port: record.port,
                host,
            }
        } else {
            Self::Host(host)
        })
    }

    /// Sets the fields of `record` that carry this target.
    pub fn fill(&self, record: &mut SkydnsRecord) {
        match self {
            Self::Host(host) => record.host.clone_from(host),
            Self::Text(text) => record.text.clone_from(text),
            Self::Srv {
                priority,
                weight,
                port,
                host,
            } => {
                record.host.clone_from(host);
                record.priority = *priority;
                record.weight = *weight;
                record.port = *port;
            }
            Self::Mx { preference, host } => {
                record.host.clone_from(host);
                record.priority = *preference;
                record.mail = true;
            }
        }
    }

    /// What the key's suffix label is derived from. A host target uses the host alone, so keys written
    /// before typed targets existed stay where they are; the others are tagged by type, and a text is
    /// hex-encoded because the suffix hash ignores case.
    pub fn key_seed(&self) -> String {
        match self {
            Self::Host(host) => host.clone(),
            Self::Text(text) => {
                let hex: String = text.bytes().map(|b| format!("{b:02x}")).collect();
                format!("txt:{hex}")
            }
            Self::Srv { .. } | Self::Mx { .. } => format!("{self}"),
        }
    }
}

impl fmt::Display for Target {
    /// The record data as a zone file shows it (`10 5 5060 sip.test.org` for SRV), for Events and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host(host) => f.write_str(host),
            Self::Text(text) => write!(f, "{text:?}"),
            Self::Srv {
                priority,
                weight,
                port,
                host,
            } => write!(f, "SRV {priority} {weight} {port} {host}"),
            Self::Mx { preference, host } => write!(f, "MX {preference} {host}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(target: &Target) -> Option<Target> {
        let mut record = SkydnsRecord::default();
        target.fill(&mut record);
        Target::of_record(&record)
    }

    #[test]
    fn every_target_reads_back_as_written() {
        let targets = [
            Target::host("10.0.0.1"),
            Target::host("fd00::1"),
            Target::host("web.test.org"),
            Target::Text("v=spf1 -all".to_owned()),
            Target::Srv {
                priority: 10,
                weight: 5,
                port: 5060,
                host: "sip.test.org".to_owned(),
            },
            Target::Mx {
                preference: 20,
                host: "mail.test.org".to_owned(),
            },
        ];
        for target in &targets {
            assert_eq!(round_trip(target).as_ref(), Some(target), "{target}");
        }
    }

    #[test]
    fn host_targets_keep_their_old_keys_and_texts_differing_in_case_do_not_share_one() {
        assert_eq!(Target::host("10.0.0.1").key_seed(), "10.0.0.1");
        assert_ne!(
            Target::Text("Hello".to_owned())
                .key_seed()
                .to_ascii_lowercase(),
            Target::Text("hello".to_owned())
                .key_seed()
                .to_ascii_lowercase()
        );
    }

    #[test]
    fn a_record_with_neither_host_nor_text_has_no_target() {
        assert_eq!(Target::of_record(&SkydnsRecord::default()), None);
    }
}
