//! From what the cluster asks for and what etcd holds, the changes to make. Pure, so ownership, adoption,
//! policy and conflict rules are unit-tested without I/O.
//!
//! Rules:
//! - A record is one key per (name, target), at `layout.record_key(name, target_suffix(name, target))`
//!   with `targetstrip: 1`, `owner` = our owner id and `resource` = the object asking for it; the key is
//!   deterministic, so every replica and every run computes the same one (no churn).
//! - Only keys whose `owner` is ours are updated or deleted. A key of another owner is never touched: if it
//!   sits where ours would go, that is a reported conflict.
//! - Several objects asking for the same name (all of one namespace: [`crate::publish`] decided that before):
//!   the union of their targets. One (name, target) asked by several objects is one key, attributed to the
//!   first object in `kind/namespace/name` order, so the attribution never flaps.
//! - Adoption: a key owned by the `--adopt-owner` id that already holds a wanted (name, target) is rewritten
//!   in place with our owner (no delete and re-create, so no gap in answers). Keys of that owner that we do
//!   not want are left alone. An empty adopt id means keys without an owner (external-dns up to v0.20
//!   writes none).
//! - Deletions happen only under `--policy sync`, and only when the caller says its view is complete and
//!   fresh. Under `--policy create-only` nothing already in etcd is rewritten either (adoption included).

use std::collections::{BTreeMap, HashSet};

use proto::skydns::{KeyLayout, SkydnsRecord, target_suffix};

use crate::source::{Endpoint, ObjectId};
use crate::target::Target;

/// What may be changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// Create, update and delete.
    Sync,
    /// Create and update, never delete.
    UpsertOnly,
    /// Create only: a record once written is never rewritten (TTL, owner, attribution) nor deleted, as
    /// external-dns's `--policy=create-only`.
    CreateOnly,
}

impl Policy {
    /// Whether records already there may be rewritten.
    pub fn updates(self) -> bool {
        !matches!(self, Self::CreateOnly)
    }

    /// Whether records no longer wanted may be deleted.
    pub fn deletes(self) -> bool {
        matches!(self, Self::Sync)
    }
}

/// A key under the prefix as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    /// The key.
    pub key: String,
    /// Its modification revision (the guard for updates and deletes).
    pub mod_revision: i64,
    /// Its value.
    pub record: SkydnsRecord,
}

/// One write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Put a key that must not exist yet.
    Create {
        /// Key.
        key: String,
        /// Value.
        record: SkydnsRecord,
    },
    /// Replace a key that must still be at `mod_revision`.
    Update {
        /// Key.
        key: String,
        /// Guard.
        mod_revision: i64,
        /// New value.
        record: SkydnsRecord,
    },
    /// Delete a key that must still be at `mod_revision`.
    Delete {
        /// Key.
        key: String,
        /// Guard.
        mod_revision: i64,
        /// What it held (for logs).
        record: SkydnsRecord,
    },
}

impl Change {
    /// The key written.
    pub fn key(&self) -> &str {
        match self {
            Self::Create { key, .. } | Self::Update { key, .. } | Self::Delete { key, .. } => key,
        }
    }
}

/// A wanted record that cannot be written because another owner holds its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The DNS name.
    pub name: String,
    /// The object asking for it.
    pub object: ObjectId,
    /// The key.
    pub key: String,
    /// The owner holding it.
    pub owner: String,
}

/// Parameters of planning.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    /// Key layout.
    pub layout: &'a KeyLayout,
    /// Our owner id.
    pub owner: &'a str,
    /// An owner id whose matching records we take over.
    pub adopt: Option<&'a str>,
    /// Policy.
    pub policy: Policy,
    /// Whether the view of the cluster is complete and fresh (else nothing is deleted).
    pub allow_deletes: bool,
}

/// The outcome of planning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Writes, in key order.
    pub changes: Vec<Change>,
    /// Wanted records blocked by a foreign key.
    pub conflicts: Vec<Conflict>,
    /// Deletions held back because the view was not fresh.
    pub deferred_deletes: usize,
    /// Records we own once the plan is applied.
    pub managed: usize,
}

/// Computes the changes that make etcd hold exactly `wanted` among our keys.
pub fn plan(wanted: &[Endpoint], existing: &[Existing], rules: &Rules<'_>) -> Plan {
    let held = Held::of(existing, rules);
    let mut result = Plan::default();
    let mut kept: HashSet<&str> = HashSet::new();
    for ((name, target), endpoint) in desired(wanted) {
        place(name, target, endpoint, &held, rules, &mut kept, &mut result);
    }
    delete_unwanted(existing, &kept, rules, &mut result);
    result.changes.sort_by(|a, b| a.key().cmp(b.key()));
    result
}

/// One desired record per (name, target); the smallest object wins the attribution.
fn desired(wanted: &[Endpoint]) -> BTreeMap<(&str, &Target), &Endpoint> {
    let mut desired: BTreeMap<(&str, &Target), &Endpoint> = BTreeMap::new();
    for endpoint in wanted {
        let slot = desired
            .entry((endpoint.name.as_str(), &endpoint.target))
            .or_insert(endpoint);
        if endpoint.object < slot.object {
            *slot = endpoint;
        }
    }
    desired
}

/// What etcd holds, indexed for placing: every key, and the keys we own or may adopt by the (name, target)
/// they serve.
struct Held<'a> {
    by_key: BTreeMap<&'a str, &'a Existing>,
    by_pair: BTreeMap<(String, Target), Vec<&'a Existing>>,
    owner: &'a str,
    adopt: Option<&'a str>,
}

impl<'a> Held<'a> {
    fn of(existing: &'a [Existing], rules: &Rules<'a>) -> Self {
        let mut by_pair: BTreeMap<(String, Target), Vec<&Existing>> = BTreeMap::new();
        let claimable = |e: &Existing| {
            e.record.owner == rules.owner || rules.adopt.is_some_and(|a| e.record.owner == a)
        };
        for record in existing.iter().filter(|e| claimable(e)) {
            if let (Some(name), Some(target)) = (
                served_name(rules.layout, record),
                Target::of_record(&record.record),
            ) {
                by_pair.entry((name, target)).or_default().push(record);
            }
        }
        Self {
            by_key: existing.iter().map(|e| (e.key.as_str(), e)).collect(),
            by_pair,
            owner: rules.owner,
            adopt: rules.adopt,
        }
    }

    fn ours(&self, existing: &Existing) -> bool {
        existing.record.owner == self.owner
    }

    fn adoptable(&self, existing: &Existing) -> bool {
        self.adopt.is_some_and(|a| existing.record.owner == a)
    }

    /// The record already serving (name, target) that we keep for it: our own key for the pair first, then
    /// any other of ours, then one to adopt. A record kept at the name's own key is that key or nothing:
    /// another key would serve it under another name once rewritten.
    fn matching(
        &self,
        name: &str,
        target: &Target,
        own: &str,
        at_name: bool,
    ) -> Option<&'a Existing> {
        let list = self.by_pair.get(&(name.to_owned(), target.clone()))?;
        let fits = |e: &&Existing| !at_name || e.key == own;
        list.iter()
            .copied()
            .filter(|e| self.ours(e) && fits(e))
            .min_by_key(|e| (e.key != own, e.key.clone()))
            .or_else(|| list.iter().copied().find(|e| self.adoptable(e) && fits(e)))
    }
}

/// Plans one desired record: kept (rewritten if it changed), or written at its own key.
fn place<'a>(
    name: &str,
    target: &Target,
    endpoint: &Endpoint,
    held: &Held<'a>,
    rules: &Rules<'_>,
    kept: &mut HashSet<&'a str>,
    result: &mut Plan,
) {
    let mut record = SkydnsRecord {
        ttl: endpoint.ttl.unwrap_or(0),
        target_strip: u32::from(!endpoint.at_name),
        owner: rules.owner.to_owned(),
        resource: endpoint.object.to_string(),
        ..SkydnsRecord::default()
    };
    target.fill(&mut record);
    let key = own_key(rules.layout, endpoint);
    if let Some(found) = held.matching(name, target, &key, endpoint.at_name) {
        kept.insert(found.key.as_str());
        if !held.ours(found) && !rules.policy.updates() {
            // Adoption is a rewrite: under create-only the record stays its owner's, serving the pair.
            return;
        }
        result.managed += 1;
        if found.record != record && rules.policy.updates() {
            result.changes.push(Change::Update {
                key: found.key.clone(),
                mod_revision: found.mod_revision,
                record,
            });
        }
        return;
    }
    match held.by_key.get(key.as_str()) {
        Some(occupant) if !held.ours(occupant) => result.conflicts.push(Conflict {
            name: name.to_owned(),
            object: endpoint.object.clone(),
            key,
            owner: occupant.record.owner.clone(),
        }),
        Some(occupant) => {
            // Ours, holding another pair (a suffix collision): taken over for this pair, unless create-only.
            kept.insert(occupant.key.as_str());
            result.managed += 1;
            if rules.policy.updates() {
                result.changes.push(Change::Update {
                    key,
                    mod_revision: occupant.mod_revision,
                    record,
                });
            }
        }
        None => {
            result.managed += 1;
            result.changes.push(Change::Create { key, record });
        }
    }
}

/// Deletes our keys no desired record kept, under `--policy sync` and from a fresh view only.
fn delete_unwanted(
    existing: &[Existing],
    kept: &HashSet<&str>,
    rules: &Rules<'_>,
    result: &mut Plan,
) {
    if !rules.policy.deletes() {
        return;
    }
    for record in existing
        .iter()
        .filter(|e| e.record.owner == rules.owner && !kept.contains(e.key.as_str()))
    {
        if !rules.allow_deletes {
            result.deferred_deletes += 1;
            continue;
        }
        result.changes.push(Change::Delete {
            key: record.key.clone(),
            mod_revision: record.mod_revision,
            record: record.record.clone(),
        });
    }
}

fn own_key(layout: &KeyLayout, endpoint: &Endpoint) -> String {
    // Names were validated (RFC 1123 labels, optional leading `*`), so they always map onto keys.
    let key = if endpoint.at_name {
        layout.directory_of(&endpoint.name)
    } else {
        layout.record_key(
            &endpoint.name,
            &target_suffix(&endpoint.name, &endpoint.target.key_seed()),
        )
    };
    key.unwrap_or_default()
}

/// The name a key is served under: its path with `targetstrip` leftmost labels removed.
pub(crate) fn served_name(layout: &KeyLayout, existing: &Existing) -> Option<String> {
    let full = layout.name_of(&existing.key)?;
    let strip = usize::try_from(existing.record.target_strip).ok()?;
    let labels: Vec<&str> = full.split('.').collect();
    (strip < labels.len()).then(|| labels[strip..].join("."))
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
