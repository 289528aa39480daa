//! Incremental zone transfer (IXFR, RFC 1995): the difference between the zone a secondary holds and the
//! zone now, as one condensed sequence (RFC 1995 4 allows condensing any number of versions into one).
//!
//! Both versions are rendered the same way as an AXFR ([`crate::lookup::zone_transfer`]) — the old one from
//! an index read at the secondary's serial ([`crate::store::history`]) — and compared record by record, so
//! the secondary ends up with exactly what an AXFR would give it, whatever the skydns rules that produced
//! each record. Records are compared with their TTL: a changed TTL is a deletion and an addition.

use std::collections::HashSet;

use hickory_proto::rr::{RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncodable;

/// What changed between two versions of a zone (SOA records excluded).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Difference {
    /// In the old version only.
    pub deleted: Vec<Record>,
    /// In the new version only.
    pub added: Vec<Record>,
}

impl Difference {
    /// The records of `old` missing from `new` and those of `new` missing from `old`, each in its
    /// version's order.
    pub fn between(old: &[Record], new: &[Record]) -> Self {
        // Each record is encoded once: the encoding is most of the cost at 10,000 names.
        fn keyed(records: &[Record]) -> Vec<(Vec<u8>, &Record)> {
            records
                .iter()
                .filter(|r| r.record_type() != RecordType::SOA)
                .filter_map(|r| Some((identity(r)?, r)))
                .collect()
        }
        let (old, new) = (keyed(old), keyed(new));
        let old_keys: HashSet<&[u8]> = old.iter().map(|(k, _)| k.as_slice()).collect();
        let new_keys: HashSet<&[u8]> = new.iter().map(|(k, _)| k.as_slice()).collect();
        let only_in = |records: &[(Vec<u8>, &Record)], other: &HashSet<&[u8]>| {
            let mut seen = HashSet::new();
            records
                .iter()
                .filter(|(k, _)| !other.contains(k.as_slice()) && seen.insert(k.as_slice()))
                .map(|(_, r)| (*r).clone())
                .collect::<Vec<_>>()
        };
        Self {
            deleted: only_in(&old, &new_keys),
            added: only_in(&new, &old_keys),
        }
    }

    /// Records this difference takes to send.
    pub fn len(&self) -> usize {
        self.deleted.len() + self.added.len()
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The answer records of an IXFR response taking a secondary from `old_serial` to `current` (the
    /// zone's SOA now): current SOA, old SOA, deletions, current SOA, additions, current SOA.
    pub fn into_answer(self, current: &Record, old_serial: u32) -> Vec<Record> {
        let mut old = current.clone();
        if let RData::SOA(soa) = &mut old.data {
            soa.serial = old_serial;
        }
        let mut records = Vec::with_capacity(self.len() + 4);
        records.push(current.clone());
        records.push(old);
        records.extend(self.deleted);
        records.push(current.clone());
        records.extend(self.added);
        records.push(current.clone());
        records
    }
}

/// A record's identity for the comparison: its wire form (owner, type, class, TTL, data).
fn identity(record: &Record) -> Option<Vec<u8>> {
    record.to_bytes().ok()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::rr::Name;
    use hickory_proto::rr::rdata::{A, SOA};

    use super::*;

    fn a(name: &str, ttl: u32, address: [u8; 4]) -> Record {
        Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            ttl,
            RData::A(A(Ipv4Addr::from(address))),
        )
    }

    fn soa(serial: u32) -> Record {
        Record::from_rdata(
            Name::from_ascii("test.org.").unwrap(),
            30,
            RData::SOA(SOA::new(
                Name::from_ascii("ns.dns.test.org.").unwrap(),
                Name::from_ascii("hostmaster.test.org.").unwrap(),
                serial,
                7200,
                1800,
                1_209_600,
                30,
            )),
        )
    }

    #[test]
    fn only_what_changed_is_sent_and_soa_records_are_not_compared() {
        let old = [
            soa(5),
            a("a.test.org.", 30, [10, 0, 0, 1]),
            a("b.test.org.", 30, [10, 0, 0, 2]),
        ];
        let new = [
            soa(9),
            a("a.test.org.", 30, [10, 0, 0, 1]),
            a("c.test.org.", 30, [10, 0, 0, 3]),
        ];
        let difference = Difference::between(&old, &new);
        assert_eq!(difference.deleted, [a("b.test.org.", 30, [10, 0, 0, 2])]);
        assert_eq!(difference.added, [a("c.test.org.", 30, [10, 0, 0, 3])]);
    }

    #[test]
    fn a_changed_ttl_is_a_deletion_and_an_addition() {
        let old = [a("a.test.org.", 30, [10, 0, 0, 1])];
        let new = [a("a.test.org.", 60, [10, 0, 0, 1])];
        let difference = Difference::between(&old, &new);
        assert_eq!(difference.deleted[0].ttl, 30);
        assert_eq!(difference.added[0].ttl, 60);
    }

    #[test]
    fn the_answer_is_framed_by_soa_records_as_rfc_1995_orders_them() {
        let difference = Difference {
            deleted: vec![a("b.test.org.", 30, [10, 0, 0, 2])],
            added: vec![a("c.test.org.", 30, [10, 0, 0, 3])],
        };
        let answer = difference.into_answer(&soa(9), 5);
        let serials: Vec<Option<u32>> = answer
            .iter()
            .map(|r| match &r.data {
                RData::SOA(soa) => Some(soa.serial),
                _ => None,
            })
            .collect();
        assert_eq!(serials, [Some(9), Some(5), None, Some(9), None, Some(9)]);
        assert_eq!(answer[2].name.to_ascii(), "b.test.org.");
        assert_eq!(answer[4].name.to_ascii(), "c.test.org.");
    }

    #[test]
    fn records_repeated_in_a_version_are_sent_once() {
        let old = [];
        let new = [
            a("a.test.org.", 30, [10, 0, 0, 1]),
            a("a.test.org.", 30, [10, 0, 0, 1]),
        ];
        assert_eq!(Difference::between(&old, &new).added.len(), 1);
    }
}
