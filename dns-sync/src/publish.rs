//! The publishing rules: which of the names the cluster asks for may be published, and for whom. Pure (no
//! I/O), so every rule is a unit test; the controller runs it between reading etcd and planning.
//!
//! Rules, in the order they are applied to each (object, name) claim:
//! 1. **Reserved names** are refused: a zone apex, `*.<zone>` (it would answer for the zone's default name
//!    server `ns.dns.<zone>`), `dns.<zone>` and everything below it (the `dns/` keys where dns-server keeps the
//!    zone's NS, glue and apex records), and every `--reserved-name`.
//! 2. **Allow-lists** (`--namespace-domains`): a namespace with a list may publish only names it covers; a name
//!    covered by some namespace's list is for the listed namespaces only; with `--require-namespace-domains`,
//!    a namespace without a list publishes nothing.
//! 3. **One namespace per name**: among the claims left, one namespace holds the name. The namespace whose
//!    objects the name's records in etcd are attributed to keeps it while it still asks for it (so editing an
//!    old object's annotation cannot take over a name); otherwise the first claimant by
//!    `metadata.creationTimestamp` wins, ties broken by namespace, name and kind, so every replica and every
//!    run decides alike. Objects of the holder's namespace get the union of their targets, as before; every
//!    other claim is a `Conflict` and changes nothing.
//! 4. **Targets per name** are capped: the holder's objects are added in claim order, and one that would take
//!    the name over `--max-targets-per-name` is refused for that name.
//!
//! An object over a per-object limit (see [`crate::source::Limits`]) asks for nothing new: its claims are the
//! records etcd already attributes to it, which pass the same rules again.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use proto::skydns::KeyLayout;

use crate::plan::{Existing, served_name};
use crate::source::{Endpoint, ObjectId, Rejection, RejectionKind, Request};
use crate::target::Target;

/// The field named in Events for claims rebuilt from etcd (objects over a limit).
const KEPT_FIELD: &str = "(records kept from before)";

/// A name, or every name below a domain (`*.apps.test.org`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum NamePattern {
    /// Exactly this name.
    Exact(String),
    /// Every name strictly below this domain, wildcards included.
    Below(String),
}

impl NamePattern {
    /// Reads `name` or `*.domain` (already lower-case and validated).
    pub fn new(pattern: &str) -> Self {
        match pattern.strip_prefix("*.") {
            Some(domain) => Self::Below(domain.to_owned()),
            None => Self::Exact(pattern.to_owned()),
        }
    }

    /// Whether `name` is covered.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(exact) => name == exact,
            Self::Below(domain) => is_below(name, domain),
        }
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Below(domain) => write!(f, "*.{domain}"),
        }
    }
}

/// Whether `name` is strictly below `domain` on a label boundary.
fn is_below(name: &str, domain: &str) -> bool {
    name != domain && crate::source::at_or_below(name, domain)
}

/// The rules' parameters (from the flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRules {
    /// Zone apexes served from this etcd (`--zone`, default the domain filters).
    pub zones: Vec<String>,
    /// More names nobody may publish (`--reserved-name`).
    pub reserved: Vec<NamePattern>,
    /// Per-namespace allow-lists (`--namespace-domains`).
    pub namespace_domains: BTreeMap<String, Vec<NamePattern>>,
    /// Namespaces without an allow-list publish nothing (`--require-namespace-domains`).
    pub require_namespace_domains: bool,
    /// Distinct targets one name may have (`--max-targets-per-name`).
    pub max_targets_per_name: usize,
}

impl Default for PublishRules {
    fn default() -> Self {
        Self {
            zones: Vec::new(),
            reserved: Vec::new(),
            namespace_domains: BTreeMap::new(),
            require_namespace_domains: false,
            max_targets_per_name: 1000,
        }
    }
}

impl PublishRules {
    /// Why nobody may publish `name`, if so.
    pub fn reserved_reason(&self, name: &str) -> Option<String> {
        for zone in &self.zones {
            if name == zone {
                return Some(format!(
                    "{name} is the apex of zone {zone}; nobody may publish it"
                ));
            }
            if name.strip_prefix("*.") == Some(zone.as_str()) {
                return Some(format!(
                    "{name} is a wildcard at the apex of zone {zone}: it would answer for the zone's name server \
                     ns.dns.{zone}; nobody may publish it"
                ));
            }
            let dns = format!("dns.{zone}");
            if crate::source::at_or_below(name, &dns) {
                return Some(format!(
                    "{name} is under {dns}, where dns-server keeps the zone's NS, glue and apex records; nobody may \
                     publish it"
                ));
            }
        }
        self.reserved
            .iter()
            .find(|pattern| pattern.matches(name))
            .map(|pattern| format!("{name} is reserved by --reserved-name {pattern}"))
    }

    /// Whether `namespace` may publish `name` under the allow-lists; the reason if not.
    pub fn allowed(&self, namespace: &str, name: &str) -> Result<(), String> {
        if let Some(list) = self.namespace_domains.get(namespace) {
            if list.iter().any(|pattern| pattern.matches(name)) {
                return Ok(());
            }
            return Err(format!(
                "{name} is outside what --namespace-domains allows {}: {}",
                scope_of(namespace),
                join(list)
            ));
        }
        if self.require_namespace_domains {
            return Err(format!(
                "{} has no --namespace-domains entry and --require-namespace-domains is set",
                scope_of(namespace)
            ));
        }
        let assigned: Vec<&str> = self
            .namespace_domains
            .iter()
            .filter(|(_, list)| list.iter().any(|pattern| pattern.matches(name)))
            .map(|(namespace, _)| namespace.as_str())
            .collect();
        if assigned.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{name} is assigned by --namespace-domains to namespace {}",
                assigned.join(", ")
            ))
        }
    }
}

fn join(list: &[NamePattern]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What may be published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Endpoints to plan, in claim order.
    pub endpoints: Vec<Endpoint>,
    /// Claims refused, one per (object, name) and rule.
    pub refusals: Vec<Rejection>,
}

/// One object asking for one name.
#[derive(Debug)]
struct Claim<'a> {
    object: &'a ObjectId,
    created: Option<i64>,
    name: &'a str,
    field: &'a str,
    targets: &'a [Target],
    ttl: Option<u32>,
}

impl Claim<'_> {
    /// Earlier claims first; an unknown creation time counts as the latest. Ties: namespace, name, kind.
    fn order(&self) -> (bool, i64, &str, &str, &str) {
        (
            self.created.is_none(),
            self.created.unwrap_or(0),
            &self.object.namespace,
            &self.object.name,
            self.object.kind,
        )
    }

    fn refuse(&self, kind: RejectionKind, reason: String) -> Rejection {
        Rejection {
            object: self.object.clone(),
            field: self.field.to_owned(),
            reason,
            kind,
        }
    }
}

/// A name with the targets etcd holds for one object (rebuilt claims of objects over a limit).
type Kept = BTreeMap<(ObjectId, String), (Vec<Target>, Option<u32>)>;

/// Our records' names, each with the namespaces whose objects they are attributed to.
type Holders = BTreeMap<String, BTreeSet<String>>;

/// Decides which claims are published. `existing` is what etcd holds under the prefix; only records with
/// our `owner` count (their `resource` says which object, hence which namespace, holds a name).
pub fn decide(
    requests: &[Request],
    existing: &[Existing],
    layout: &KeyLayout,
    owner: &str,
    rules: &PublishRules,
) -> Decision {
    let keep: BTreeMap<&ObjectId, &Request> = requests
        .iter()
        .filter(|r| r.keep_published)
        .map(|r| (&r.object, r))
        .collect();
    let (holders, kept) = read_existing(existing, layout, owner, &keep);
    let claims = claims_of(requests, &keep, &kept);
    let mut decision = Decision::default();
    let by_name = screen(claims, rules, &mut decision.refusals);
    for (name, mut claims) in by_name {
        claims.sort_by(|a, b| a.order().cmp(&b.order()));
        let Some(holder) = holder_of(&claims, holders.get(name)) else {
            continue;
        };
        settle(name, &claims, &holder, rules, &mut decision);
    }
    decision
}

/// Our records by name: the namespaces holding each, and what the objects over a limit (`keep`) had.
fn read_existing(
    existing: &[Existing],
    layout: &KeyLayout,
    owner: &str,
    keep: &BTreeMap<&ObjectId, &Request>,
) -> (Holders, Kept) {
    let mut holders: Holders = BTreeMap::new();
    let mut kept: Kept = BTreeMap::new();
    for record in existing.iter().filter(|e| e.record.owner == owner) {
        let (Some(name), Some(object), Some(target)) = (
            served_name(layout, record),
            ObjectId::parse(&record.record.resource),
            Target::of_record(&record.record),
        ) else {
            continue;
        };
        holders
            .entry(name.clone())
            .or_default()
            .insert(object.namespace.clone());
        if keep.contains_key(&object) {
            let entry = kept.entry((object, name)).or_default();
            entry.0.push(target);
            entry.1 = (record.record.ttl > 0).then_some(record.record.ttl);
        }
    }
    for (targets, _) in kept.values_mut() {
        targets.sort();
        targets.dedup();
    }
    (holders, kept)
}

/// Every (object, name) claim: the names of the objects within their limits, then the records `kept` for
/// the objects over one.
fn claims_of<'a>(
    requests: &'a [Request],
    keep: &BTreeMap<&ObjectId, &Request>,
    kept: &'a Kept,
) -> Vec<Claim<'a>> {
    let mut claims: Vec<Claim<'_>> = Vec::new();
    for request in requests.iter().filter(|r| !r.keep_published) {
        for name in &request.names {
            claims.push(Claim {
                object: &request.object,
                created: request.created,
                name: &name.name,
                field: name.field,
                targets: &request.targets,
                ttl: request.ttl,
            });
        }
    }
    for ((object, name), (targets, ttl)) in kept {
        claims.push(Claim {
            object,
            created: keep.get(object).and_then(|r| r.created),
            name,
            field: KEPT_FIELD,
            targets,
            ttl: *ttl,
        });
    }
    claims
}

/// Rules 1 and 2: claims for reserved names and claims the allow-lists refuse go to `refusals`; the rest,
/// grouped by name.
fn screen<'a>(
    claims: Vec<Claim<'a>>,
    rules: &PublishRules,
    refusals: &mut Vec<Rejection>,
) -> BTreeMap<&'a str, Vec<Claim<'a>>> {
    let mut by_name: BTreeMap<&str, Vec<Claim<'_>>> = BTreeMap::new();
    for claim in claims {
        if let Some(reason) = rules.reserved_reason(claim.name) {
            refusals.push(claim.refuse(RejectionKind::Reserved, reason));
        } else if let Err(reason) = rules.allowed(&claim.object.namespace, claim.name) {
            refusals.push(claim.refuse(RejectionKind::NotAllowed, reason));
        } else {
            by_name.entry(claim.name).or_default().push(claim);
        }
    }
    by_name
}

/// Rule 3: the object whose namespace holds a name, among its `claims` in claim order: the first of a
/// namespace holding it in etcd (`incumbents`), else the first claimant.
fn holder_of(claims: &[Claim<'_>], incumbents: Option<&BTreeSet<String>>) -> Option<ObjectId> {
    claims
        .iter()
        .find(|c| incumbents.is_some_and(|set| set.contains(&c.object.namespace)))
        .or_else(|| claims.first())
        .map(|c| c.object.clone())
}

/// How the rules' messages name a claimant's namespace: Nodes, cluster-scoped, have none and claim together.
fn scope_of(namespace: &str) -> String {
    if namespace.is_empty() {
        "the cluster-scoped Nodes".to_owned()
    } else {
        format!("namespace {namespace}")
    }
}

/// Rules 3 and 4 for one name: claims from other namespaces than the `holder`'s are conflicts; the holder's
/// are published in claim order, except one that would take the name over `--max-targets-per-name`.
fn settle(
    name: &str,
    claims: &[Claim<'_>],
    holder: &ObjectId,
    rules: &PublishRules,
    decision: &mut Decision,
) {
    let mut union: BTreeSet<&Target> = BTreeSet::new();
    for claim in claims {
        if claim.object.namespace != holder.namespace {
            let reason = format!(
                "{name} is held by {} ({holder}), which claimed it first; its records stay as they \
                 are (a cluster admin can assign names with --namespace-domains)",
                scope_of(&holder.namespace)
            );
            decision
                .refusals
                .push(claim.refuse(RejectionKind::Conflict, reason));
            continue;
        }
        // Counted before anything is added: the cap is never crossed, not even in memory.
        let new = claim.targets.iter().filter(|t| !union.contains(t)).count();
        if union.len() + new > rules.max_targets_per_name {
            let reason = format!(
                "{name} would have {} targets with this object's, more than the limit of {} \
                 (--max-targets-per-name)",
                union.len() + new,
                rules.max_targets_per_name
            );
            decision
                .refusals
                .push(claim.refuse(RejectionKind::Limit, reason));
            continue;
        }
        for target in claim.targets {
            union.insert(target);
            decision.endpoints.push(Endpoint {
                name: name.to_owned(),
                target: target.clone(),
                ttl: claim.ttl,
                object: claim.object.clone(),
                at_name: false,
            });
        }
    }
}

#[cfg(test)]
#[path = "publish_tests.rs"]
mod tests;
