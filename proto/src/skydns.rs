//! The skydns record schema in etcd: what a value looks like and where it lives.
//!
//! This is the format of CoreDNS's etcd plugin (`msg.Service`) as written by external-dns's CoreDNS
//! provider. Keeping it byte-compatible is what lets a user swap dns-sync for external-dns, or dns-server for
//! CoreDNS, one component at a time.
//!
//! Key layout: a DNS name is stored under the prefix with its labels reversed, one label per path segment:
//! `nginx.test.org` lives at `/skydns/org/test/nginx`. Writers put one key per target below that, named by a
//! suffix label (external-dns uses 8 hex digits): `/skydns/org/test/nginx/1a2b3c4d`, with `targetstrip: 1` so
//! that the suffix label is not part of the served name.

use serde::{Deserialize, Serialize};

/// The default etcd prefix used by CoreDNS, external-dns and groundwork.
pub const DEFAULT_PREFIX: &str = "/skydns";

/// Longest DNS name in presentation form without the trailing dot (RFC 1035 section 2.3.4).
const MAX_NAME_LEN: usize = 253;
/// Longest DNS label (RFC 1035 section 2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// One etcd value: a record in CoreDNS's etcd plugin format.
///
/// Field names and omission rules follow the Go struct (`json:",omitempty"`), so values we write are
/// indistinguishable from external-dns's and values it writes parse here. Unknown fields are ignored, as Go
/// does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SkydnsRecord {
    /// An IPv4/IPv6 address (A/AAAA) or a domain name (CNAME, or SRV/MX target).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// SRV port.
    #[serde(skip_serializing_if = "is_zero_u16")]
    pub port: u16,
    /// SRV priority, or MX preference when `mail` is set.
    #[serde(skip_serializing_if = "is_zero_u16")]
    pub priority: u16,
    /// SRV weight.
    #[serde(skip_serializing_if = "is_zero_u16")]
    pub weight: u16,
    /// TXT content.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub text: String,
    /// Serve `host` as an MX target.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mail: bool,
    /// Record TTL in seconds; 0 means the server's default.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
    /// How many leftmost labels of the key's name are not part of the served name (the suffix label that
    /// keeps several targets of one name apart).
    #[serde(rename = "targetstrip", skip_serializing_if = "is_zero_u32")]
    pub target_strip: u32,
    /// Records with different non-empty groups are not returned together.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The writer that owns this key (external-dns's `--txt-owner-id`, dns-sync's `--owner-id`). Writers
    /// change only keys carrying their own owner.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// The Kubernetes object that produced the record, as `kind/namespace/name` (written by dns-sync, for
    /// people reading etcd; CoreDNS and external-dns ignore it).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource: String,
}

fn is_zero_u16(v: &u16) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// A value under the prefix that is not a valid skydns record.
#[derive(Debug, thiserror::Error)]
#[error("etcd key {key}: invalid skydns record{}: {source}", field_suffix(.field))]
pub struct RecordError {
    /// The etcd key holding the value.
    pub key: String,
    /// The offending field, when the JSON is well-formed but a field is not (e.g. `port`).
    pub field: Option<String>,
    /// What the JSON decoder found wrong.
    #[source]
    pub source: serde_json::Error,
}

fn field_suffix(field: &Option<String>) -> String {
    field
        .as_ref()
        .map(|f| format!(", field {f}"))
        .unwrap_or_default()
}

impl SkydnsRecord {
    /// Decodes the value stored at `key` the way Go's `encoding/json` does for CoreDNS: field names match
    /// in any letter case (the last of duplicates wins), unknown fields are ignored, and `null` is an
    /// empty record.
    pub fn from_etcd(key: &str, value: &[u8]) -> Result<Self, RecordError> {
        let error = |field: Option<String>, source| RecordError {
            key: key.to_owned(),
            field,
            source,
        };
        let raw: serde_json::Value = serde_json::from_slice(value).map_err(|e| error(None, e))?;
        let normalized = match raw {
            serde_json::Value::Object(fields) => serde_json::Value::Object(
                fields
                    .into_iter()
                    .map(|(name, value)| (name.to_ascii_lowercase(), value))
                    .collect(),
            ),
            serde_json::Value::Null => serde_json::Value::Object(serde_json::Map::new()),
            other => other,
        };
        serde_path_to_error::deserialize(normalized).map_err(|e| {
            let path = e.path().to_string();
            let field = (path != ".").then_some(path);
            error(field, e.into_inner())
        })
    }

    /// Encodes the record as the JSON value to store.
    pub fn to_json(&self) -> String {
        // Serializing a struct of strings, integers and a bool into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A DNS name or etcd prefix that cannot be mapped onto the key layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The etcd prefix must be an absolute path such as `/skydns`.
    #[error("etcd prefix {0:?} must start with '/' and contain no empty segments")]
    BadPrefix(String),
    /// The name is not a valid DNS name for a key.
    #[error("DNS name {name:?}: {reason}")]
    BadName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Where names live in etcd under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    prefix: String,
}

impl Default for KeyLayout {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

impl KeyLayout {
    /// A layout under `prefix` (`/skydns` and `/skydns/` are the same prefix).
    pub fn new(prefix: &str) -> Result<Self, KeyError> {
        let trimmed = prefix.trim_end_matches('/');
        if !trimmed.starts_with('/') || trimmed[1..].split('/').any(str::is_empty) {
            return Err(KeyError::BadPrefix(prefix.to_owned()));
        }
        Ok(Self {
            prefix: trimmed.to_owned(),
        })
    }

    /// The prefix without a trailing slash.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The range every key of this layout starts with (the prefix plus `/`), for etcd range reads and
    /// watches that must not match a sibling such as `/skydnsfoo`.
    pub fn range_prefix(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// The directory of a name: `nginx.test.org` -> `/skydns/org/test/nginx`.
    pub fn directory_of(&self, name: &str) -> Result<String, KeyError> {
        let name = normalize_name(name)?;
        let mut key = self.prefix.clone();
        for label in name.rsplit('.') {
            key.push('/');
            key.push_str(label);
        }
        Ok(key)
    }

    /// The key of one record of `name`, told apart from the name's other records by `suffix`:
    /// `("nginx.test.org", "1a2b3c4d")` -> `/skydns/org/test/nginx/1a2b3c4d`. Store it with
    /// `target_strip: 1` so the suffix is not served as part of the name.
    pub fn record_key(&self, name: &str, suffix: &str) -> Result<String, KeyError> {
        check_label(name, suffix)?;
        Ok(format!("{}/{}", self.directory_of(name)?, suffix))
    }

    /// The DNS name a key stands for, every path segment included (`/skydns/org/test/nginx/1a2b3c4d` ->
    /// `1a2b3c4d.nginx.test.org`); `None` for keys outside the prefix or with empty segments.
    pub fn name_of(&self, key: &str) -> Option<String> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        if rest.is_empty() || rest.split('/').any(str::is_empty) {
            return None;
        }
        let mut labels: Vec<&str> = rest.split('/').collect();
        labels.reverse();
        Some(labels.join(".").to_ascii_lowercase())
    }
}

/// A deterministic 8-hex-digit suffix label for one target of a name, in the shape external-dns uses, so
/// that rewriting the same target always lands on the same key (no churn between runs or replicas).
pub fn target_suffix(name: &str, target: &str) -> String {
    // FNV-1a: tiny, stable across versions and platforms, and good enough to keep a name's few targets
    // apart; a collision is detected by the writer when it finds a different target at the key.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.bytes().chain([0]).chain(target.bytes()) {
        hash ^= u32::from(byte.to_ascii_lowercase());
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{:08x}", hash & 0x7fff_ffff)
}

/// Lower-cases a DNS name, drops a trailing dot, and checks that every label fits in one key segment.
pub fn normalize_name(name: &str) -> Result<String, KeyError> {
    let bad = |reason| KeyError::BadName {
        name: name.to_owned(),
        reason,
    };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(bad("is empty"));
    }
    if trimmed.len() > MAX_NAME_LEN {
        return Err(bad("is longer than 253 characters"));
    }
    for label in trimmed.split('.') {
        check_label(name, label)?;
    }
    Ok(trimmed.to_ascii_lowercase())
}

fn check_label(name: &str, label: &str) -> Result<(), KeyError> {
    let bad = |reason| KeyError::BadName {
        name: name.to_owned(),
        reason,
    };
    if label.is_empty() {
        return Err(bad("has an empty label"));
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(bad("has a label longer than 63 characters"));
    }
    if label == "*" {
        return Ok(());
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad(
            "has a label with characters other than letters, digits, '-' and '_' (or a lone '*')",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_dns_value_round_trips_with_go_field_names() {
        let value =
            br#"{"host":"10.10.39.200","text":"","ttl":300,"targetstrip":1,"owner":"default"}"#;
        let record = SkydnsRecord::from_etcd("/skydns/org/test/nginx/1a2b3c4d", value).unwrap();
        assert_eq!(record.host, "10.10.39.200");
        assert_eq!(record.ttl, 300);
        assert_eq!(record.target_strip, 1);
        assert_eq!(record.owner, "default");
        assert_eq!(
            record.to_json(),
            r#"{"host":"10.10.39.200","ttl":300,"targetstrip":1,"owner":"default"}"#
        );
    }

    #[test]
    fn zero_and_empty_fields_are_omitted_like_go_omitempty() {
        assert_eq!(SkydnsRecord::default().to_json(), "{}");
    }

    #[test]
    fn field_names_match_in_any_case_and_null_is_empty_like_go() {
        let record =
            SkydnsRecord::from_etcd("/k", br#"{"Host":"10.0.0.1","TTL":30,"targetStrip":1}"#)
                .unwrap();
        assert_eq!(record.host, "10.0.0.1");
        assert_eq!(record.ttl, 30);
        assert_eq!(record.target_strip, 1);
        assert_eq!(
            SkydnsRecord::from_etcd("/k", b"null").unwrap(),
            SkydnsRecord::default()
        );
    }

    #[test]
    fn unknown_fields_are_ignored_like_go() {
        let record = SkydnsRecord::from_etcd("/k", br#"{"host":"a.b","future":[1,2]}"#).unwrap();
        assert_eq!(record.host, "a.b");
    }

    #[test]
    fn bad_value_error_names_the_key_and_the_field() {
        let err = SkydnsRecord::from_etcd("/skydns/org/x", br#"{"port":70000}"#).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/skydns/org/x"), "{text}");
        assert!(text.contains("field port"), "{text}");
        assert!(text.contains("70000"), "{text}");
        let err = SkydnsRecord::from_etcd("/k", b"[1]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid skydns record"), "{err}");
    }

    #[test]
    fn names_map_to_reversed_label_paths_and_back() {
        let layout = KeyLayout::new("/skydns/").unwrap();
        assert_eq!(
            layout.directory_of("Nginx.Test.org.").unwrap(),
            "/skydns/org/test/nginx"
        );
        let key = layout.record_key("nginx.test.org", "1a2b3c4d").unwrap();
        assert_eq!(key, "/skydns/org/test/nginx/1a2b3c4d");
        assert_eq!(layout.name_of(&key).unwrap(), "1a2b3c4d.nginx.test.org");
        assert_eq!(layout.range_prefix(), "/skydns/");
    }

    #[test]
    fn keys_outside_the_prefix_have_no_name() {
        let layout = KeyLayout::default();
        assert_eq!(layout.name_of("/skydnsx/org/test"), None);
        assert_eq!(layout.name_of("/skydns/"), None);
        assert_eq!(layout.name_of("/skydns/org//test"), None);
    }

    #[test]
    fn wildcard_labels_are_kept_and_slashes_rejected() {
        let layout = KeyLayout::default();
        assert_eq!(
            layout.directory_of("*.apps.test.org").unwrap(),
            "/skydns/org/test/apps/*"
        );
        assert!(layout.directory_of("a/b.test.org").is_err());
        assert!(layout.directory_of("a..org").is_err());
        assert!(layout.directory_of("").is_err());
        assert!(layout.record_key("a.org", "x/y").is_err());
    }

    #[test]
    fn prefixes_must_be_absolute_paths() {
        assert!(KeyLayout::new("skydns").is_err());
        assert!(KeyLayout::new("/").is_err());
        assert!(KeyLayout::new("//x").is_err());
        assert_eq!(KeyLayout::new("/a/b").unwrap().prefix(), "/a/b");
    }

    #[test]
    fn target_suffixes_are_stable_eight_hex_digits_and_differ_per_target() {
        let a = target_suffix("nginx.test.org", "10.10.39.200");
        assert_eq!(a, target_suffix("NGINX.test.org", "10.10.39.200"));
        assert_eq!(a.len(), 8);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, target_suffix("nginx.test.org", "10.10.39.201"));
    }
}
