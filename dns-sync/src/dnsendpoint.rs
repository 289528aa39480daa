//! The `DNSEndpoint` source (`--source crd`): external-dns's `externaldns.k8s.io/v1alpha1` resource, read
//! as external-dns's CRD source reads it, so objects written for external-dns need no change. It is how
//! users publish what no Service carries: TXT (SPF, DMARC, site verification), SRV, MX, PTR and plain names.
//!
//! Each entry of `spec.endpoints` becomes one [`Request`] (its name at its targets, with its TTL); the
//! publishing rules then treat them like any other object's. An entry the skydns format cannot express is
//! refused with an Event naming the field, and the object's other entries are published:
//! - `NS`: CoreDNS's etcd plugin and dns-server answer NS only at a zone's apex, from their own settings;
//!   a record below it would be stored and never served as a delegation.
//! - other types (`NAPTR`, `CAA`, ...) have no skydns fields.
//! - `setIdentifier`: routing policies choose between a name's records; skydns serves all of them.
//!
//! As in external-dns, targets ending in a dot are refused (TXT excepted), and `labels` and
//! `providerSpecific` (another provider's settings) are ignored. The CRD is external-dns's: dns-sync reads it
//! but does not install it. `status.observedGeneration` is written as external-dns writes it, once the object's
//! records are written ([`crate::observed`]).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use kube::CustomResource;
use serde::{Deserialize, Serialize};

use crate::source::{
    Filters, NameRequest, ObjectId, Rejection, RejectionKind, Request, Wanted, created, rejection,
    validate_target,
};
use crate::target::Target;

/// Longest TXT target accepted: far more than any SPF or verification string, and small enough that one
/// object cannot make the records it asks for large.
pub const MAX_TEXT_LEN: usize = 4096;

/// The `DNSEndpoint` spec, as external-dns defines it (only the fields read; unknown ones are ignored).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "externaldns.k8s.io",
    version = "v1alpha1",
    kind = "DNSEndpoint",
    plural = "dnsendpoints",
    namespaced,
    status = "DnsEndpointStatus",
    schema = "disabled"
)]
pub struct DnsEndpointSpec {
    /// The records.
    #[serde(default)]
    pub endpoints: Vec<EndpointEntry>,
}

/// The `DNSEndpoint` status: the generation whose records were last written (external-dns writes it too).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DnsEndpointStatus {
    /// `metadata.generation` when the records were written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A `DNSEndpoint` whose `status.observedGeneration` lags its `metadata.generation`: (namespace, name) and
/// the generation to record once its records are written.
pub fn lagging(object: &DNSEndpoint) -> Option<((String, String), i64)> {
    let meta = &object.metadata;
    let generation = meta.generation?;
    let observed = object.status.as_ref().and_then(|s| s.observed_generation);
    (observed != Some(generation)).then(|| {
        let namespace = meta.namespace.clone().unwrap_or_default();
        (
            (namespace, meta.name.clone().unwrap_or_default()),
            generation,
        )
    })
}

/// One entry of `spec.endpoints`: a name, a type and its targets.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointEntry {
    /// The name.
    #[serde(default)]
    pub dns_name: String,
    /// The targets, in the type's presentation form (`10 5 5060 sip.test.org` for SRV).
    #[serde(default)]
    pub targets: Vec<String>,
    /// `A`, `AAAA`, `CNAME`, `TXT`, `SRV`, `MX`, `PTR`, ...
    #[serde(default)]
    pub record_type: String,
    /// A routing-policy identifier (refused when set).
    #[serde(default)]
    pub set_identifier: String,
    /// TTL in seconds; 0 is the server's default.
    #[serde(default, rename = "recordTTL")]
    pub record_ttl: i64,
    /// external-dns's own labels (ignored).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The records a `DNSEndpoint` asks for: one [`Wanted`] per usable entry, and one carrying the rejections.
pub fn from_dns_endpoint(object: &DNSEndpoint, filters: &Filters) -> Vec<Wanted> {
    let meta = &object.metadata;
    if !filters.annotations_match(meta.annotations.as_ref()) {
        return Vec::new();
    }
    let id = ObjectId::of("dnsendpoint", meta);
    let entries = &object.spec.endpoints;
    let mut refused = Wanted::default();
    // The limits apply to the whole object, on the raw entries, before anything is parsed.
    let targets: usize = entries.iter().map(|e| e.targets.len()).sum();
    let limits = &filters.limits;
    if entries.len() > limits.names_per_object || targets > limits.targets_per_object {
        let reason = format!(
            "{} entries with {targets} targets, more than the limits of {} names and {} targets \
             (--max-names-per-object, --max-targets-per-object); nothing new is published for this object",
            entries.len(),
            limits.names_per_object,
            limits.targets_per_object
        );
        refused.rejections.push(rejection(
            &id,
            "spec.endpoints",
            RejectionKind::Limit,
            reason,
        ));
        refused.request = Some(Request {
            object: id,
            created: created(meta),
            ttl: None,
            names: Vec::new(),
            targets: Vec::new(),
            keep_published: true,
        });
        return vec![refused];
    }
    let mut wanted = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        match entry_request(&id, index, entry, filters, &mut refused.rejections) {
            Some(request) => wanted.push(Wanted {
                request: Some(Request {
                    created: created(meta),
                    ..request
                }),
                ..Wanted::default()
            }),
            None => continue,
        }
    }
    if !refused.rejections.is_empty() {
        wanted.push(refused);
    }
    wanted
}

/// The request of entry `index`, or `None` with its problems in `rejections`.
fn entry_request(
    id: &ObjectId,
    index: usize,
    entry: &EndpointEntry,
    filters: &Filters,
    rejections: &mut Vec<Rejection>,
) -> Option<Request> {
    let field = |name: &str| format!("spec.endpoints[{index}].{name}");
    let mut refuse = |field: String, reason: String| {
        rejections.push(rejection(id, &field, RejectionKind::Invalid, reason));
    };
    let kind = entry.record_type.trim().to_ascii_uppercase();
    if let Err(reason) = supported(&kind) {
        refuse(field("recordType"), reason);
        return None;
    }
    if !entry.set_identifier.is_empty() {
        refuse(
            field("setIdentifier"),
            "routing policies choose between a name's records; the skydns format serves all of them, so \
             an entry with a setIdentifier is not published"
                .to_owned(),
        );
        return None;
    }
    let ttl = match u32::try_from(entry.record_ttl) {
        Ok(0) => None,
        Ok(ttl) if ttl <= i32::MAX as u32 => Some(ttl),
        _ => {
            let reason = format!(
                "{} is not a TTL (0 to 2147483647 seconds)",
                entry.record_ttl
            );
            refuse(field("recordTTL"), reason);
            return None;
        }
    };
    let name = match record_name(&entry.dns_name, &kind) {
        Ok(name) if filters.in_domain(&name) => name,
        Ok(name) => {
            let reason = format!("{name:?} is outside --domain-filter {:?}", filters.domains);
            refuse(field("dnsName"), reason);
            return None;
        }
        Err(reason) => {
            refuse(field("dnsName"), format!("{:?}: {reason}", entry.dns_name));
            return None;
        }
    };
    if entry.targets.is_empty() {
        refuse(field("targets"), "is empty".to_owned());
        return None;
    }
    if kind == "CNAME" && entry.targets.len() > 1 {
        let reason = format!("a CNAME has one target, not {}", entry.targets.len());
        refuse(field("targets"), reason);
        return None;
    }
    let mut targets = Vec::new();
    for (at, target) in entry.targets.iter().enumerate() {
        match parse_target(&kind, target) {
            Ok(target) => targets.push(target),
            Err(reason) => refuse(
                field(&format!("targets[{at}]")),
                format!("{target:?}: {reason}"),
            ),
        }
    }
    targets.sort();
    targets.dedup();
    (!targets.is_empty()).then(|| Request {
        object: id.clone(),
        created: None,
        ttl,
        names: vec![NameRequest {
            name,
            field: "spec.endpoints",
        }],
        targets,
        keep_published: false,
    })
}

/// Whether the skydns format can express records of type `kind`, and why not.
fn supported(kind: &str) -> Result<(), String> {
    match kind {
        "A" | "AAAA" | "CNAME" | "TXT" | "SRV" | "MX" | "PTR" => Ok(()),
        "" => Err("is empty".to_owned()),
        "NS" => Err(
            "NS records cannot be published here: dns-server and CoreDNS answer NS only at a zone's apex, \
             from their own settings, so a delegation below it would never be served"
                .to_owned(),
        ),
        other => Err(format!(
            "{other} records cannot be expressed in the skydns format (A, AAAA, CNAME, TXT, SRV, MX and PTR can)"
        )),
    }
}

/// The entry's name, lower case: labels may carry underscores (`_sip._tcp`, `_dmarc`), a wildcard only
/// leads, and a PTR's name is a reverse name.
fn record_name(dns_name: &str, kind: &str) -> Result<String, String> {
    let name = proto::skydns::normalize_name(dns_name.trim()).map_err(|e| e.to_string())?;
    if name.split('.').skip(1).any(|label| label == "*") {
        return Err("a wildcard can only be the first label".to_owned());
    }
    if !name.contains('.') {
        return Err("must have at least two labels".to_owned());
    }
    if kind == "PTR" && !(name.ends_with(".in-addr.arpa") || name.ends_with(".ip6.arpa")) {
        return Err("a PTR record's name must be under in-addr.arpa or ip6.arpa".to_owned());
    }
    Ok(name)
}

/// One target of a `kind` entry.
fn parse_target(kind: &str, target: &str) -> Result<Target, String> {
    if kind == "TXT" {
        if target.is_empty() {
            return Err("is empty".to_owned());
        }
        if target.len() > MAX_TEXT_LEN {
            return Err(format!("is longer than {MAX_TEXT_LEN} bytes"));
        }
        return Ok(Target::Text(target.to_owned()));
    }
    if target.ends_with('.') {
        return Err("ends with a dot, which external-dns refuses too".to_owned());
    }
    Ok(match kind {
        "A" => Target::Host(ipv4(target)?),
        "AAAA" => Target::Host(ipv6(target)?),
        "SRV" => {
            let mut fields = Fields::new(kind, target);
            let (priority, weight, port) = (
                fields.number("priority")?,
                fields.number("weight")?,
                fields.number("port")?,
            );
            let host = host_name(fields.last("target host")?)?;
            Target::Srv {
                priority,
                weight,
                port,
                host,
            }
        }
        "MX" => {
            let mut fields = Fields::new(kind, target);
            let preference = fields.number("preference")?;
            let host = host_name(fields.last("mail exchanger")?)?;
            Target::Mx { preference, host }
        }
        // CNAME and PTR.
        _ => Target::Host(host_name(target)?),
    })
}

/// The space-separated fields of an SRV or MX target.
struct Fields<'a> {
    kind: &'a str,
    fields: std::str::SplitWhitespace<'a>,
}

impl<'a> Fields<'a> {
    fn new(kind: &'a str, target: &'a str) -> Self {
        Self {
            kind,
            fields: target.split_whitespace(),
        }
    }

    fn number(&mut self, what: &str) -> Result<u16, String> {
        let value = self.fields.next().ok_or_else(|| format!("has no {what}"))?;
        value
            .parse::<u16>()
            .map_err(|_| format!("{what} {value:?} is not a number from 0 to 65535"))
    }

    /// The last field; more after it is an error.
    fn last(&mut self, what: &str) -> Result<&'a str, String> {
        let value = self.fields.next().ok_or_else(|| format!("has no {what}"))?;
        match self.fields.next() {
            Some(extra) => Err(format!(
                "has more fields than a {} record ({extra:?})",
                self.kind
            )),
            None => Ok(value),
        }
    }
}

fn ipv4(target: &str) -> Result<String, String> {
    target
        .parse::<Ipv4Addr>()
        .map(|a| a.to_string())
        .map_err(|_| "an A record's target must be an IPv4 address".to_owned())
}

fn ipv6(target: &str) -> Result<String, String> {
    target
        .parse::<Ipv6Addr>()
        .map(|a| a.to_string())
        .map_err(|_| "an AAAA record's target must be an IPv6 address".to_owned())
}

/// A host name target (not an address).
fn host_name(target: &str) -> Result<String, String> {
    let name = validate_target(target)?;
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err("must be a host name, not an address".to_owned());
    }
    Ok(name)
}

#[cfg(test)]
#[path = "dnsendpoint_tests.rs"]
mod tests;
