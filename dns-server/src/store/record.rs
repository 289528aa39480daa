//! A skydns value turned into what the server can answer from: the JSON decoded (`proto::skydns`) and its
//! `host` classified once, at load time, as an address or a domain name, so queries never re-parse.

use std::net::IpAddr;

use hickory_proto::rr::Name;
use proto::skydns::{RecordError, SkydnsRecord};

/// What a record's `host` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// No host: a TXT-only record.
    None,
    /// An IPv4 or IPv6 address (A/AAAA, or a synthesized SRV/MX target).
    Address(IpAddr),
    /// A domain name (CNAME, or SRV/MX target), fully qualified and lower-cased.
    Name(Name),
}

/// One usable record from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The etcd key it was read from.
    pub key: String,
    /// The etcd revision that last modified it.
    pub mod_revision: i64,
    /// The classified host.
    pub host: Host,
    /// The decoded value, for the remaining fields.
    pub value: SkydnsRecord,
}

/// Why a value was skipped.
#[derive(Debug, thiserror::Error)]
pub enum InvalidRecord {
    /// Not JSON, or a field of the wrong type or range (e.g. a port over 65535).
    #[error(transparent)]
    Json(#[from] RecordError),
    /// `host` looks like an IP address but is not one (e.g. `10.0.0.300`).
    #[error("etcd key {key}: field host: {host:?} is not a valid IP address")]
    BadAddress {
        /// The etcd key.
        key: String,
        /// The host as stored.
        host: String,
    },
    /// `host` is neither an address nor a valid domain name.
    #[error("etcd key {key}: field host: {host:?} is not a valid domain name: {reason}")]
    BadName {
        /// The etcd key.
        key: String,
        /// The host as stored.
        host: String,
        /// The parser's complaint.
        reason: String,
    },
}

impl StoredRecord {
    /// Decodes and classifies the value stored at `key`.
    pub fn parse(key: &str, value: &[u8], mod_revision: i64) -> Result<Self, InvalidRecord> {
        let value = SkydnsRecord::from_etcd(key, value)?;
        let host = classify_host(key, &value.host)?;
        Ok(Self {
            key: key.to_owned(),
            mod_revision,
            host,
            value,
        })
    }
}

fn classify_host(key: &str, host: &str) -> Result<Host, InvalidRecord> {
    if host.is_empty() {
        return Ok(Host::None);
    }
    if let Ok(address) = host.parse::<IpAddr>() {
        return Ok(Host::Address(address));
    }
    // Something made only of digits and dots, or containing ':', was meant as an address: reject it
    // rather than serve "10.0.0.300" as a CNAME target.
    if host.contains(':') || host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(InvalidRecord::BadAddress {
            key: key.to_owned(),
            host: host.to_owned(),
        });
    }
    let mut name = Name::from_ascii(host).map_err(|e| InvalidRecord::BadName {
        key: key.to_owned(),
        host: host.to_owned(),
        reason: e.to_string(),
    })?;
    name.set_fqdn(true);
    Ok(Host::Name(name.to_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Result<StoredRecord, InvalidRecord> {
        StoredRecord::parse("/skydns/org/test/x", value.as_bytes(), 7)
    }

    #[test]
    fn hosts_are_classified_as_addresses_names_or_none() {
        assert_eq!(
            parse(r#"{"host":"10.10.39.200"}"#).unwrap().host,
            Host::Address("10.10.39.200".parse().unwrap())
        );
        assert_eq!(
            parse(r#"{"host":"fd10:10::39:200"}"#).unwrap().host,
            Host::Address("fd10:10::39:200".parse().unwrap())
        );
        assert_eq!(
            parse(r#"{"host":"Web.Example.COM"}"#).unwrap().host,
            Host::Name(Name::from_ascii("web.example.com.").unwrap())
        );
        assert_eq!(parse(r#"{"text":"hi"}"#).unwrap().host, Host::None);
    }

    #[test]
    fn impossible_values_are_rejected_naming_key_and_field() {
        for (value, needle) in [
            (r#"{"host":"10.0.0.300"}"#, "field host"),
            (r#"{"host":"fd10::zz"}"#, "field host"),
            (r#"{"host":"a..b"}"#, "field host"),
            (r#"{"port":65536}"#, "65536"),
            ("not json", "invalid skydns record"),
        ] {
            let err = parse(value).unwrap_err().to_string();
            assert!(err.contains("/skydns/org/test/x"), "{err}");
            assert!(err.contains(needle), "{value}: {err}");
        }
    }
}
