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
    // One desired record per (name, target); the smallest object wins the attribution.
    let mut desired: BTreeMap<(String, Target), &Endpoint> = BTreeMap::new();
    for endpoint in wanted {
        let slot = desired
            .entry((endpoint.name.clone(), endpoint.target.clone()))
            .or_insert(endpoint);
        if endpoint.object < slot.object {
            *slot = endpoint;
        }
    }
    let ours = |e: &Existing| e.record.owner == rules.owner;
    let adoptable = |e: &Existing| rules.adopt.is_some_and(|a| e.record.owner == a);
    let by_key: BTreeMap<&str, &Existing> = existing.iter().map(|e| (e.key.as_str(), e)).collect();
    let mut by_pair: BTreeMap<(String, Target), Vec<&Existing>> = BTreeMap::new();
    for record in existing.iter().filter(|e| ours(e) || adoptable(e)) {
        if let (Some(name), Some(target)) = (
            served_name(rules.layout, record),
            Target::of_record(&record.record),
        ) {
            by_pair.entry((name, target)).or_default().push(record);
        }
    }

    let mut result = Plan::default();
    let mut kept: HashSet<&str> = HashSet::new();
    for ((name, target), endpoint) in &desired {
        let mut record = SkydnsRecord {
            ttl: endpoint.ttl.unwrap_or(0),
            target_strip: u32::from(!endpoint.at_name),
            owner: rules.owner.to_owned(),
            resource: endpoint.object.to_string(),
            ..SkydnsRecord::default()
        };
        target.fill(&mut record);
        // Our own key for the pair first, then any other of ours, then one to adopt.
        let candidates = by_pair.get(&(name.clone(), target.clone()));
        let own = own_key(rules.layout, endpoint);
        let matched = candidates.and_then(|list| {
            // A record kept at the name's own key is that key or nothing: another key would serve it
            // under another name once rewritten.
            let fits = |e: &&Existing| !endpoint.at_name || e.key == own;
            list.iter()
                .copied()
                .filter(|e| ours(e) && fits(e))
                .min_by_key(|e| (e.key != own, e.key.clone()))
                .or_else(|| list.iter().copied().find(|e| adoptable(e) && fits(e)))
        });
        if let Some(found) = matched {
            kept.insert(found.key.as_str());
            if !ours(found) && !rules.policy.updates() {
                // Adoption is a rewrite: under create-only the record stays its owner's, serving the pair.
                continue;
            }
            result.managed += 1;
            if found.record != record && rules.policy.updates() {
                result.changes.push(Change::Update {
                    key: found.key.clone(),
                    mod_revision: found.mod_revision,
                    record,
                });
            }
            continue;
        }
        let key = own;
        match by_key.get(key.as_str()) {
            Some(occupant) if !ours(occupant) => result.conflicts.push(Conflict {
                name: name.clone(),
                object: endpoint.object.clone(),
                key,
                owner: occupant.record.owner.clone(),
            }),
            Some(occupant) if !rules.policy.updates() => {
                // Ours, holding another pair (a suffix collision); create-only does not rewrite it.
                kept.insert(occupant.key.as_str());
                result.managed += 1;
            }
            Some(occupant) => {
                // Ours, but holding another pair (a suffix collision): take it over for this pair.
                kept.insert(occupant.key.as_str());
                result.managed += 1;
                result.changes.push(Change::Update {
                    key,
                    mod_revision: occupant.mod_revision,
                    record,
                });
            }
            None => {
                result.managed += 1;
                result.changes.push(Change::Create { key, record });
            }
        }
    }
    for record in existing
        .iter()
        .filter(|e| ours(e) && !kept.contains(e.key.as_str()))
    {
        if !rules.policy.deletes() {
            continue;
        }
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
    result.changes.sort_by(|a, b| a.key().cmp(b.key()));
    result
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
