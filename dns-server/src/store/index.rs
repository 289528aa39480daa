//! The in-memory copy of the skydns keyspace that every query is answered from.
//!
//! It mirrors etcd's sorted key order in a `BTreeMap`, so the few shapes of lookup the server needs are
//! range scans: a name's own key, the leaf keys directly below it, and whether anything exists at or below
//! it. Queries never touch etcd.
//!
//! Which keys are a name's records (deliberately narrower than CoreDNS, see `docs/dns-compat.md`): the value
//! at the name's own key, plus every *leaf* key directly below it (`/skydns/org/test/nginx/1a2b3c4d` is a
//! record of `nginx.test.org`; that is how external-dns stores one key per target). Keys further down belong
//! to deeper names and are never answers for an ancestor.

use std::collections::BTreeMap;

use proto::skydns::KeyLayout;

use super::record::StoredRecord;

/// The parsed records under one prefix, plus per-zone SOA serials.
#[derive(Debug, Clone)]
pub struct Index {
    layout: KeyLayout,
    records: BTreeMap<String, StoredRecord>,
    /// etcd revision the index reflects.
    revision: i64,
    /// For each served zone (by its key directory), the SOA serial: the etcd revision of the last change
    /// inside the zone (see [`super::serial`]).
    serials: Vec<(String, u32)>,
}

impl Index {
    /// An empty index for `zones` (names such as `test.org`) under `layout`.
    pub fn new(layout: KeyLayout, zones: &[String]) -> Self {
        let serials = zones
            .iter()
            .filter_map(|zone| layout.directory_of(zone).ok())
            .map(|dir| (dir, 0))
            .collect();
        Self {
            layout,
            records: BTreeMap::new(),
            revision: 0,
            serials,
        }
    }

    /// Replaces the whole content with a fresh read taken at `revision`. A zone's serial becomes at least
    /// the newest write among its records; deletions are invisible in a read, so the reader adds them
    /// with [`Index::note_change`] (see [`super::serial`]). Serials never go back.
    pub fn replace_all(&mut self, records: impl IntoIterator<Item = StoredRecord>, revision: i64) {
        self.records = records.into_iter().map(|r| (r.key.clone(), r)).collect();
        self.revision = revision;
        for (dir, zone_serial) in &mut self.serials {
            let newest = self
                .records
                .range(dir.clone()..)
                .take_while(|(key, _)| key.starts_with(dir.as_str()))
                .filter(|(key, _)| is_at_or_below(key, dir))
                .map(|(_, r)| r.mod_revision)
                .max()
                .unwrap_or(0);
            *zone_serial = (*zone_serial).max(serial_of(newest));
        }
    }

    /// The key directories of the served zones.
    pub fn zone_dirs(&self) -> Vec<String> {
        self.serials.iter().map(|(dir, _)| dir.clone()).collect()
    }

    /// Records that something at or below `key` changed at `revision` (an etcd event, also one whose
    /// value is not served, or a deletion found in the history): the serials of the zones holding it
    /// move there, never back.
    pub fn note_change(&mut self, key: &str, revision: i64) {
        self.touch(key, revision);
    }

    /// Stores or replaces one record (an etcd put at `revision`).
    pub fn put(&mut self, record: StoredRecord, revision: i64) {
        self.touch(&record.key.clone(), revision);
        self.records.insert(record.key.clone(), record);
    }

    /// Removes a key (an etcd delete at `revision`, or a put of a value that no longer parses).
    pub fn delete(&mut self, key: &str, revision: i64) -> Option<StoredRecord> {
        let removed = self.records.remove(key);
        if removed.is_some() {
            self.touch(key, revision);
        } else {
            self.revision = self.revision.max(revision);
        }
        removed
    }

    fn touch(&mut self, key: &str, revision: i64) {
        self.revision = self.revision.max(revision);
        let serial = serial_of(revision);
        for (dir, zone_serial) in &mut self.serials {
            if is_at_or_below(key, dir) {
                *zone_serial = (*zone_serial).max(serial);
            }
        }
    }

    /// The etcd revision the index reflects.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the index holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The SOA serial of `zone` (0 if the zone is not served).
    pub fn serial(&self, zone: &str) -> u32 {
        let Ok(dir) = self.layout.directory_of(zone) else {
            return 0;
        };
        self.serials
            .iter()
            .find(|(d, _)| *d == dir)
            .map_or(0, |(_, s)| *s)
    }

    /// The key directory of a DNS name, or `None` for names that cannot exist in the store.
    pub fn directory_of(&self, name: &str) -> Option<String> {
        self.layout.directory_of(name).ok()
    }

    /// The full DNS name a key stands for (every path segment a label).
    pub fn name_of_key(&self, key: &str) -> Option<String> {
        self.layout.name_of(key)
    }

    /// Whether anything is stored at or below `dir` (an empty non-terminal exists too).
    pub fn exists(&self, dir: &str) -> bool {
        self.records.contains_key(dir) || self.has_children(dir)
    }

    /// Every record at or below `dir`, in key order.
    pub fn records_below<'a>(
        &'a self,
        dir: &'a str,
    ) -> impl Iterator<Item = &'a StoredRecord> + 'a {
        self.records
            .range(dir.to_owned()..)
            .take_while(move |(key, _)| is_at_or_below(key, dir))
            .map(|(_, record)| record)
    }

    /// Whether some key lies strictly below `key` (the key is a name with children, not a leaf).
    pub fn has_children(&self, key: &str) -> bool {
        let below = format!("{key}/");
        self.records
            .range(below.clone()..)
            .next()
            .is_some_and(|(next, _)| next.starts_with(&below))
    }

    /// The records of the name at `dir`: its own key, then the leaf keys directly below it, in key order.
    pub fn records_at(&self, dir: &str) -> Vec<&StoredRecord> {
        let mut found: Vec<&StoredRecord> = Vec::new();
        if let Some(own) = self.records.get(dir) {
            found.push(own);
        }
        let below = format!("{dir}/");
        let mut cursor = below.clone();
        while let Some((key, record)) = self.records.range(cursor.clone()..).next() {
            let Some(child) = key.strip_prefix(&below) else {
                break;
            };
            match child.find('/') {
                // A deeper key: the child is a subtree; skip it whole ('0' sorts right after '/').
                Some(slash) => {
                    cursor = format!("{below}{}0", &child[..slash]);
                }
                None => {
                    // Siblings such as `a-b` sort between `a` and `a/...`, so look for the subtree itself.
                    if !self.has_children(key) {
                        found.push(record);
                    }
                    cursor = format!("{key}\u{0}");
                }
            }
        }
        found
    }
}

/// SOA serials are 32-bit; etcd revisions start at 1 and grow by one per write, so the low 32 bits order
/// correctly for the first four billion writes (and RFC 1982 arithmetic copes with the wrap after).
fn serial_of(revision: i64) -> u32 {
    (revision & 0xffff_ffff) as u32
}

/// The etcd revision a serial stands for, given the latest revision: the serial's low 32 bits under the
/// latest revision's high bits, a wrap earlier when that would be in the future (0: none).
pub fn revision_of_serial(serial: u32, latest: i64) -> i64 {
    let candidate = (latest & !0xffff_ffff) | i64::from(serial);
    let revision = if candidate > latest {
        candidate - (1 << 32)
    } else {
        candidate
    };
    revision.max(0)
}

/// Whether `key` is `dir` itself or lies below it.
pub fn is_at_or_below(key: &str, dir: &str) -> bool {
    key.strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, host: &str) -> StoredRecord {
        StoredRecord::parse(key, format!(r#"{{"host":"{host}"}}"#).as_bytes(), 1).unwrap()
    }

    fn index(keys: &[(&str, &str)]) -> Index {
        let mut index = Index::new(KeyLayout::default(), &["test.org".to_owned()]);
        index.replace_all(keys.iter().map(|(k, h)| record(k, h)), 10);
        index
    }

    fn hosts(index: &Index, name: &str) -> Vec<String> {
        let dir = index.directory_of(name).unwrap();
        index
            .records_at(&dir)
            .iter()
            .map(|r| r.value.host.clone())
            .collect()
    }

    #[test]
    fn a_name_owns_its_key_and_the_leaf_keys_directly_below_it() {
        let index = index(&[
            ("/skydns/org/test/nginx", "10.0.0.1"),
            ("/skydns/org/test/nginx/1a2b3c4d", "10.0.0.2"),
            ("/skydns/org/test/nginx/api/0000beef", "10.0.0.3"),
            ("/skydns/org/test/nginx/zz", "10.0.0.4"),
            ("/skydns/org/test/nginxx/00000001", "10.0.0.5"),
        ]);
        assert_eq!(
            hosts(&index, "nginx.test.org"),
            ["10.0.0.1", "10.0.0.2", "10.0.0.4"]
        );
        assert_eq!(hosts(&index, "api.nginx.test.org"), ["10.0.0.3"]);
        assert_eq!(hosts(&index, "zz.nginx.test.org"), ["10.0.0.4"]);
    }

    #[test]
    fn a_key_with_children_is_a_name_not_a_record_of_its_parent() {
        let index = index(&[
            ("/skydns/org/test/web", "10.0.0.1"),
            ("/skydns/org/test/web-1", "10.0.0.3"),
            ("/skydns/org/test/web/x", "10.0.0.2"),
        ]);
        assert_eq!(hosts(&index, "test.org"), ["10.0.0.3"]);
        assert_eq!(hosts(&index, "web.test.org"), ["10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn empty_non_terminals_exist_and_siblings_with_a_common_prefix_do_not_leak() {
        let index = index(&[("/skydns/org/test/a/b/c/00000001", "10.0.0.1")]);
        assert!(index.exists("/skydns/org/test/a"));
        assert!(index.exists("/skydns/org/test/a/b/c"));
        assert!(!index.exists("/skydns/org/test/a/b/cc"));
        assert!(!index.exists("/skydns/org/test/b"));
        assert!(hosts(&index, "a.test.org").is_empty());
    }

    #[test]
    fn a_serial_maps_back_to_its_revision_across_the_32_bit_wrap() {
        assert_eq!(revision_of_serial(7, 10), 7);
        assert_eq!(revision_of_serial(11, 10), 0, "not a revision yet");
        let latest = (1_i64 << 32) + 5;
        assert_eq!(revision_of_serial(3, latest), (1 << 32) + 3);
        assert_eq!(revision_of_serial(u32::MAX, latest), (1 << 32) - 1);
        assert_eq!(serial_of(revision_of_serial(42, latest)), 42);
    }

    #[test]
    fn the_serial_moves_only_with_changes_inside_the_zone_and_never_back() {
        let mut index = Index::new(
            KeyLayout::default(),
            &["test.org".to_owned(), "other.org".to_owned()],
        );
        // A read gives the newest write inside the zone (the record was written at revision 1), not the
        // read's revision, which other zones move too.
        index.replace_all([record("/skydns/org/test/a", "10.0.0.1")], 10);
        assert_eq!(index.serial("test.org"), 1);
        index.note_change("/skydns/org/test", 10);
        assert_eq!(index.serial("test.org"), 10);
        index.put(record("/skydns/org/other/x", "10.0.0.2"), 11);
        assert_eq!(index.serial("test.org"), 10);
        assert_eq!(index.serial("other.org"), 11);
        index.delete("/skydns/org/test/a", 12);
        assert_eq!(index.serial("test.org"), 12);
        // Deleting a key that is not there changes nothing.
        index.delete("/skydns/org/test/a", 13);
        assert_eq!(index.serial("test.org"), 12);
        // A re-list never lowers a serial, nor raises it without a change in the zone.
        index.replace_all([], 14);
        assert_eq!(index.serial("test.org"), 12);
        assert_eq!(index.revision(), 14);
    }
}
