//! The answer to one question, computed from the [`Index`] alone: no I/O, so every rule here is a unit test.
//!
//! Rules (differences from CoreDNS's etcd plugin are listed in `docs/dns-compat.md`):
//! - A question outside every served zone is REFUSED: there is no recursion.
//! - A name's records are its own key and the leaf keys directly below it (see [`Index::records_at`]); at a
//!   zone apex only leaves that declare themselves suffixes (`targetstrip` >= 1) and `dns/apex` leaves count,
//!   so `www`'s key is never an apex answer.
//! - A name that does not exist is answered from a stored `*` label per RFC 4592 (closest encloser), else
//!   NXDOMAIN. An existing name without data of the asked type is NODATA. Both carry the zone's SOA.
//! - A record whose `host` is a name is a CNAME (even with `text`), followed through served zones up to
//!   [`MAX_CNAME_CHAIN`] links; the response code is that of the last name (RFC 6604).
//! - SOA and NS exist only at the apex; the SOA serial is the index's per-zone revision.
//! - ANY gets one RRset, not everything (RFC 8482).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{CNAME, MX, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::store::index::Index;
use crate::store::record::{Host, StoredRecord};

/// Longest CNAME chain followed inside the served zones.
pub const MAX_CNAME_CHAIN: usize = 8;
/// Longest TXT character-string.
const MAX_TXT_STRING: usize = 255;

/// SOA timers, shared by all zones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoaSettings {
    /// TTL of the SOA record itself.
    pub ttl: u32,
    /// Refresh interval for secondaries.
    pub refresh: i32,
    /// Retry interval for secondaries.
    pub retry: i32,
    /// Expiry for secondaries.
    pub expire: i32,
    /// Negative-caching TTL (RFC 2308): how long NXDOMAIN/NODATA may be cached.
    pub negative_ttl: u32,
}

impl SoaSettings {
    /// The defaults: the lowest timers Zonemaster accepts (ZONE02 refresh ≥ 4 h, ZONE04 retry ≥ 1 h, ZONE05
    /// expire ≥ 1 week, ZONE06 minimum 5 min–1 day), expire at RFC 1912's two weeks. CoreDNS's
    /// 7200/1800/86400/30 fail four of them. Refresh can be long because secondaries are sent NOTIFY on
    /// every change; negative answers still live 30 s in caches, because their TTL is the smaller of the
    /// SOA's TTL (30) and its minimum (RFC 2308 §5).
    pub const DEFAULT: Self = Self {
        ttl: 30,
        refresh: 14_400,
        retry: 3_600,
        expire: 1_209_600,
        negative_ttl: 300,
    };
}

impl Default for SoaSettings {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A name server of the zones, configured on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameServer {
    /// Its name (fully qualified).
    pub name: Name,
    /// Its addresses, served as glue when the name is inside a served zone.
    pub addresses: Vec<IpAddr>,
}

/// Everything the answers depend on besides the records.
#[derive(Debug, Clone)]
pub struct Zones {
    /// Served zones, fully qualified and lower-case, longest first (so the first match is the closest).
    zones: Vec<Name>,
    /// Configured name servers; when empty, NS comes from `dns/ns` records as in CoreDNS.
    pub name_servers: Vec<NameServer>,
    /// SOA timers.
    pub soa: SoaSettings,
    /// TTL of records stored with `ttl` 0.
    pub default_ttl: u32,
}

impl Zones {
    /// Zones from names such as `test.org` (validated by the caller).
    pub fn new(zones: Vec<Name>) -> Self {
        let mut zones: Vec<Name> = zones
            .into_iter()
            .map(|mut z| {
                z.set_fqdn(true);
                z.to_lowercase()
            })
            .collect();
        zones.sort_by_key(|z| std::cmp::Reverse(z.num_labels()));
        zones.dedup();
        Self {
            zones,
            name_servers: Vec::new(),
            soa: SoaSettings::default(),
            default_ttl: 300,
        }
    }

    /// The served zones.
    pub fn names(&self) -> &[Name] {
        &self.zones
    }

    /// The closest served zone containing `name`.
    pub fn zone_of(&self, name: &Name) -> Option<&Name> {
        self.zones.iter().find(|zone| zone.zone_of(name))
    }
}

/// The computed response content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Response code.
    pub rcode: ResponseCode,
    /// Whether to set AA (everything inside a served zone).
    pub authoritative: bool,
    /// ANSWER section.
    pub answers: Vec<Record>,
    /// AUTHORITY section.
    pub authorities: Vec<Record>,
    /// ADDITIONAL section.
    pub additionals: Vec<Record>,
}

impl Answer {
    fn refused() -> Self {
        Self {
            rcode: ResponseCode::Refused,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

/// Answers `qname`/`qtype` from `index`. `rotation` varies between queries to rotate address order.
pub fn resolve(
    index: &Index,
    zones: &Zones,
    qname: &Name,
    qtype: RecordType,
    rotation: usize,
) -> Answer {
    let Some(zone) = zones.zone_of(qname) else {
        return Answer::refused();
    };
    let mut lookup = Lookup {
        index,
        zones,
        answer: Answer {
            rcode: ResponseCode::NoError,
            authoritative: true,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        },
        glue: HashSet::new(),
        glue_targets: HashSet::new(),
    };
    lookup.answer_name(zone.clone(), qname.clone(), qtype);
    rotate_addresses(&mut lookup.answer.answers, rotation);
    lookup.answer
}

struct Lookup<'a> {
    index: &'a Index,
    zones: &'a Zones,
    answer: Answer,
    /// The additional addresses so far, to add each once in constant time.
    glue: HashSet<(Name, IpAddr)>,
    /// The in-zone names whose addresses were added already.
    glue_targets: HashSet<Name>,
}

/// The records found for a name, and whether they came from a wildcard.
enum Node<'a> {
    Missing,
    Found(Vec<&'a StoredRecord>),
}

impl<'a> Lookup<'a> {
    fn answer_name(&mut self, zone: Name, qname: Name, qtype: RecordType) {
        let mut zone = zone;
        let mut name = qname;
        let mut seen: Vec<Name> = Vec::new();
        loop {
            let is_apex = name == zone;
            if is_apex && qtype == RecordType::SOA {
                let soa = self.soa_record(&zone, self.zones.soa.ttl);
                self.answer.answers.push(soa);
                return;
            }
            if is_apex && qtype == RecordType::NS {
                self.answer_ns(&zone, &name);
                return;
            }
            // A configured name server's addresses are records of its name, as in the NS set's glue.
            let configured = self.configured_addresses(&name);
            let records = match self.node(&zone, &name) {
                Node::Missing if configured.is_empty() => {
                    self.negative(&zone, ResponseCode::NXDomain);
                    return;
                }
                Node::Missing => Vec::new(),
                Node::Found(records) => group_filter(records),
            };
            let produced = self.answer_records(&name, &records, qtype)
                | self.answer_configured(&name, &configured, qtype);
            if produced {
                return;
            }
            // No data of the asked type: a CNAME, if the name holds one, is the answer (and is followed).
            let cname_target = cname_of(&records, self.zones.default_ttl)
                .filter(|_| configured.is_empty() && !is_reverse(&zone));
            let Some((target, ttl)) = cname_target.filter(|_| qtype != RecordType::CNAME) else {
                self.negative(&zone, ResponseCode::NoError);
                return;
            };
            self.answer.answers.push(Record::from_rdata(
                name.clone(),
                ttl,
                RData::CNAME(CNAME(target.clone())),
            ));
            seen.push(name.clone());
            if seen.len() > MAX_CNAME_CHAIN || seen.contains(&target) {
                return;
            }
            match self.zones.zone_of(&target) {
                Some(target_zone) => {
                    zone = target_zone.clone();
                    name = target;
                }
                // Outside our zones: the client's resolver follows it, we do not recurse.
                None => return,
            }
        }
    }

    /// The addresses `--ns` gives `name`, if it is a configured name server inside a served zone.
    fn configured_addresses(&self, name: &Name) -> Vec<IpAddr> {
        self.zones
            .name_servers
            .iter()
            .filter(|ns| ns.name == *name && self.zones.zone_of(name).is_some())
            .flat_map(|ns| ns.addresses.iter().copied())
            .collect()
    }

    /// Adds the configured addresses of the asked family; false when there are none to add.
    fn answer_configured(&mut self, owner: &Name, addresses: &[IpAddr], qtype: RecordType) -> bool {
        let before = self.answer.answers.len();
        for ip in addresses {
            let wanted = match qtype {
                RecordType::A => ip.is_ipv4(),
                RecordType::AAAA => ip.is_ipv6(),
                RecordType::ANY => true,
                _ => false,
            };
            let record =
                Record::from_rdata(owner.clone(), self.zones.default_ttl, RData::from(*ip));
            if wanted && !self.answer.answers.contains(&record) {
                self.answer.answers.push(record);
            }
        }
        self.answer.answers.len() > before
    }

    /// The records of `name`, from the name itself or, when it does not exist, from a wildcard.
    fn node(&self, zone: &Name, name: &Name) -> Node<'a> {
        let Some(dir) = self.index.directory_of(&name.to_ascii()) else {
            return Node::Missing;
        };
        if self.index.exists(&dir) {
            return Node::Found(self.records_at(zone, name, &dir));
        }
        // RFC 4592: the closest encloser is the longest existing ancestor (the apex always exists); the
        // wildcard `*.<closest encloser>` answers if it exists.
        let mut ancestor = name.base_name();
        while zone.zone_of(&ancestor) {
            let Some(ancestor_dir) = self.index.directory_of(&ancestor.to_ascii()) else {
                return Node::Missing;
            };
            if ancestor == *zone || self.index.exists(&ancestor_dir) {
                let wildcard_dir = format!("{ancestor_dir}/*");
                if self.index.exists(&wildcard_dir) {
                    return Node::Found(self.index.records_at(&wildcard_dir));
                }
                return Node::Missing;
            }
            ancestor = ancestor.base_name();
        }
        Node::Missing
    }

    fn records_at(&self, zone: &Name, name: &Name, dir: &str) -> Vec<&'a StoredRecord> {
        let records = self.index.records_at(dir);
        if name != zone {
            return records;
        }
        // At the apex, a plain leaf such as `/skydns/org/test/www` is the name `www`, not an apex record.
        let mut apex: Vec<&StoredRecord> = records
            .into_iter()
            .filter(|r| r.key == dir || r.value.target_strip >= 1)
            .collect();
        apex.extend(self.index.records_at(&format!("{dir}/dns/apex")));
        apex
    }

    /// Adds the records of the asked type; false when there are none.
    fn answer_records(
        &mut self,
        owner: &Name,
        records: &[&StoredRecord],
        qtype: RecordType,
    ) -> bool {
        let default_ttl = self.zones.default_ttl;
        let ttl = |r: &StoredRecord| record_ttl(r, default_ttl);
        let before = self.answer.answers.len();
        match qtype {
            RecordType::A | RecordType::AAAA | RecordType::ANY => {
                let mut seen: HashSet<IpAddr> = HashSet::new();
                for record in records {
                    let Host::Address(ip) = record.host else {
                        continue;
                    };
                    let wanted = match qtype {
                        RecordType::A => ip.is_ipv4(),
                        RecordType::AAAA => ip.is_ipv6(),
                        _ => true,
                    };
                    if wanted && seen.insert(ip) {
                        self.answer.answers.push(Record::from_rdata(
                            owner.clone(),
                            ttl(record),
                            RData::from(ip),
                        ));
                    }
                }
                if qtype == RecordType::ANY && self.answer.answers.len() == before {
                    return self.answer_records(owner, records, RecordType::TXT);
                }
            }
            RecordType::TXT => {
                let mut seen: HashSet<&str> = HashSet::new();
                for record in records {
                    let text = record.value.text.as_str();
                    if text.is_empty() || matches!(record.host, Host::Name(_)) || !seen.insert(text)
                    {
                        continue;
                    }
                    let rdata = RData::TXT(TXT::new(split_text(text)));
                    self.answer
                        .answers
                        .push(Record::from_rdata(owner.clone(), ttl(record), rdata));
                }
            }
            RecordType::CNAME => {
                // In a reverse zone a name-valued host is the name's PTR data, not an alias.
                let reverse = self.zones.zone_of(owner).is_some_and(is_reverse);
                if let Some((target, ttl)) =
                    cname_of(records, self.zones.default_ttl).filter(|_| !reverse)
                {
                    self.answer.answers.push(Record::from_rdata(
                        owner.clone(),
                        ttl,
                        RData::CNAME(CNAME(target)),
                    ));
                }
            }
            RecordType::PTR => {
                let mut seen: HashSet<&Name> = HashSet::new();
                for record in records {
                    if let Host::Name(target) = &record.host
                        && seen.insert(target)
                    {
                        let rdata = RData::PTR(PTR(target.clone()));
                        self.answer.answers.push(Record::from_rdata(
                            owner.clone(),
                            ttl(record),
                            rdata,
                        ));
                    }
                }
            }
            RecordType::SRV => self.answer_srv(owner, records),
            RecordType::MX => self.answer_mx(owner, records),
            _ => {}
        }
        self.answer.answers.len() > before
    }

    fn answer_srv(&mut self, owner: &Name, records: &[&StoredRecord]) {
        // Only a record with a port declares a service (what a zone transfer carries too): a name host
        // without one is the name's CNAME and an address without one an A/AAAA, not an SRV for port 0.
        let candidates: Vec<&StoredRecord> = records
            .iter()
            .copied()
            .filter(|r| !matches!(r.host, Host::None) && r.value.port != 0)
            .collect();
        // CoreDNS's weights: each record's share (out of 100) of its priority level, at least 1. Totals
        // once per level, so a name with many records costs linear time (this runs under the index lock).
        let mut totals: HashMap<u16, u32> = HashMap::new();
        for record in &candidates {
            *totals.entry(priority_of(record)).or_default() += u32::from(weight_or_default(record));
        }
        let mut seen: HashSet<(Name, u16)> = HashSet::new();
        for record in &candidates {
            let priority = priority_of(record);
            let total = totals.get(&priority).copied().unwrap_or(0);
            let weight = (100 * u32::from(weight_or_default(record)) / total.max(1)).max(1);
            let weight = u16::try_from(weight).unwrap_or(u16::MAX);
            let Some(target) = self.target_of(record) else {
                continue;
            };
            if !seen.insert((target.clone(), record.value.port)) {
                continue;
            }
            let rdata = RData::SRV(SRV::new(
                priority,
                weight,
                record.value.port,
                target.clone(),
            ));
            self.answer
                .answers
                .push(Record::from_rdata(owner.clone(), self.ttl(record), rdata));
            self.add_glue(&target, record);
        }
    }

    fn answer_mx(&mut self, owner: &Name, records: &[&StoredRecord]) {
        let mut seen: HashSet<(Name, u16)> = HashSet::new();
        for record in records.iter().filter(|r| r.value.mail) {
            let Some(target) = self.target_of(record) else {
                continue;
            };
            let preference = priority_of(record);
            if !seen.insert((target.clone(), preference)) {
                continue;
            }
            let rdata = RData::MX(MX::new(preference, target.clone()));
            self.answer
                .answers
                .push(Record::from_rdata(owner.clone(), self.ttl(record), rdata));
            self.add_glue(&target, record);
        }
    }

    /// The SRV/MX target of a record: its host name, or for an address host a name made from its key
    /// (minus `targetstrip` leftmost labels) whose address goes into the additional section.
    fn target_of(&self, record: &StoredRecord) -> Option<Name> {
        match &record.host {
            Host::Name(name) => Some(name.clone()),
            Host::Address(_) => key_name(self.index, record),
            Host::None => None,
        }
    }

    /// Address records for a target: from the record itself for an address host, or from the index for
    /// an in-zone name.
    fn add_glue(&mut self, target: &Name, record: &StoredRecord) {
        let mut glue: Vec<(IpAddr, u32)> = Vec::new();
        match record.host {
            Host::Address(ip) => glue.push((ip, self.ttl(record))),
            // An in-zone name's addresses, read once however many records point at it.
            Host::Name(_)
                if self.zones.zone_of(target).is_some()
                    && self.glue_targets.insert(target.clone()) =>
            {
                if let Some(dir) = self.index.directory_of(&target.to_ascii()) {
                    for r in self.index.records_at(&dir) {
                        if let Host::Address(ip) = r.host {
                            glue.push((ip, self.ttl(r)));
                        }
                    }
                }
            }
            _ => {}
        }
        for (ip, ttl) in glue {
            if self.glue.insert((target.clone(), ip)) {
                self.answer.additionals.push(Record::from_rdata(
                    target.clone(),
                    ttl,
                    RData::from(ip),
                ));
            }
        }
    }

    /// NS at the apex: configured servers, else `dns/ns` records as CoreDNS reads them, else the SOA's
    /// MNAME (`ns.dns.<zone>`).
    fn answer_ns(&mut self, zone: &Name, owner: &Name) {
        let mut servers: Vec<(Name, Vec<IpAddr>, u32)> = self
            .zones
            .name_servers
            .iter()
            .map(|ns| {
                (
                    ns.name.clone(),
                    ns.addresses.clone(),
                    self.zones.default_ttl,
                )
            })
            .collect();
        if servers.is_empty()
            && let Some(dir) = self.index.directory_of(&zone.to_ascii())
        {
            for record in self.index.records_at(&format!("{dir}/dns/ns")) {
                let ttl = self.ttl(record);
                match &record.host {
                    Host::Address(ip) => {
                        if let Some(name) = key_name(self.index, record) {
                            match servers.iter_mut().find(|(n, _, _)| *n == name) {
                                Some((_, addresses, _)) => addresses.push(*ip),
                                None => servers.push((name, vec![*ip], ttl)),
                            }
                        }
                    }
                    Host::Name(name) => servers.push((name.clone(), Vec::new(), ttl)),
                    Host::None => {}
                }
            }
        }
        if servers.is_empty() {
            // Every zone has an NS set (secondaries reject a zone without one): the SOA's MNAME.
            servers.push((
                prefixed(zone, &["ns", "dns"]),
                Vec::new(),
                self.zones.default_ttl,
            ));
        }
        for (name, addresses, ttl) in &servers {
            let rdata = RData::NS(NS(name.clone()));
            self.answer
                .answers
                .push(Record::from_rdata(owner.clone(), *ttl, rdata));
            if self.zones.zone_of(name).is_some() {
                for ip in addresses {
                    self.answer.additionals.push(Record::from_rdata(
                        name.clone(),
                        *ttl,
                        RData::from(*ip),
                    ));
                }
            }
        }
    }

    fn negative(&mut self, zone: &Name, rcode: ResponseCode) {
        // A later link of a CNAME chain decides the code (RFC 6604); the SOA is that of its zone.
        self.answer.rcode = rcode;
        let soa = self.soa_record(zone, self.zones.soa.ttl.min(self.zones.soa.negative_ttl));
        self.answer.authorities = vec![soa];
    }

    fn soa_record(&self, zone: &Name, ttl: u32) -> Record {
        let soa = &self.zones.soa;
        let mname = self
            .zones
            .name_servers
            .first()
            .map(|ns| ns.name.clone())
            .unwrap_or_else(|| prefixed(zone, &["ns", "dns"]));
        let rname = prefixed(zone, &["hostmaster"]);
        let serial = self.index.serial(&zone.to_ascii());
        let rdata = SOA::new(
            mname,
            rname,
            serial,
            soa.refresh,
            soa.retry,
            soa.expire,
            soa.negative_ttl,
        );
        Record::from_rdata(zone.clone(), ttl, RData::SOA(rdata))
    }

    fn ttl(&self, record: &StoredRecord) -> u32 {
        record_ttl(record, self.zones.default_ttl)
    }
}

/// A record's TTL, or the default for records stored with `ttl` 0.
fn record_ttl(record: &StoredRecord, default_ttl: u32) -> u32 {
    if record.value.ttl == 0 {
        default_ttl
    } else {
        record.value.ttl
    }
}

/// The first name-valued host without a port (in key order) makes the name a CNAME owner, unless the name
/// holds other data: a CNAME cannot coexist with any (RFC 1034 3.6.2; BIND refuses such a zone, Knot's
/// semantic check fails it). Other data is an address, a text without a name host, a mail exchanger, and a
/// name host with a port, which declares an SRV record.
fn cname_of(records: &[&StoredRecord], default_ttl: u32) -> Option<(Name, u32)> {
    if records.iter().any(|r| holds_other_data(r)) {
        return None;
    }
    records.iter().find_map(|r| match &r.host {
        Host::Name(target) => Some((target.clone(), record_ttl(r, default_ttl))),
        _ => None,
    })
}

/// Whether `zone` is a reverse zone (`in-addr.arpa`, `ip6.arpa` and below), where a name-valued host is a
/// PTR record (what dns-sync's `--create-ptr` and CoreDNS's etcd plugin mean by it), never a CNAME.
fn is_reverse(zone: &Name) -> bool {
    let text = zone.to_ascii().to_ascii_lowercase();
    let text = text.trim_end_matches('.');
    text == "in-addr.arpa"
        || text.ends_with(".in-addr.arpa")
        || text == "ip6.arpa"
        || text.ends_with(".ip6.arpa")
}

/// Whether a record is data other than a CNAME at its name (see [`cname_of`]).
fn holds_other_data(record: &StoredRecord) -> bool {
    match record.host {
        Host::Address(_) => true,
        Host::None => !record.value.text.is_empty(),
        Host::Name(_) => record.value.mail || record.value.port != 0,
    }
}

/// CoreDNS's `group`: records of the shallowest key that names a group keep that group and the
/// ungrouped; if keys at that depth disagree, everything is kept.
fn group_filter(records: Vec<&StoredRecord>) -> Vec<&StoredRecord> {
    let depth = |r: &StoredRecord| r.key.matches('/').count();
    let Some(chosen) = records
        .iter()
        .filter(|r| !r.value.group.is_empty())
        .min_by_key(|r| depth(r))
    else {
        return records;
    };
    let (group, level) = (chosen.value.group.as_str(), depth(chosen));
    let conflict = records
        .iter()
        .any(|r| depth(r) == level && !r.value.group.is_empty() && r.value.group != group);
    if conflict {
        return records;
    }
    records
        .iter()
        .copied()
        .filter(|r| r.value.group.is_empty() || r.value.group == group)
        .collect()
}

fn priority_of(record: &StoredRecord) -> u16 {
    if record.value.priority == 0 {
        10
    } else {
        record.value.priority
    }
}

fn weight_or_default(record: &StoredRecord) -> u16 {
    if record.value.weight == 0 {
        100
    } else {
        record.value.weight
    }
}

/// The DNS name a record's key stands for, minus `targetstrip` leftmost labels (all kept if it would
/// strip everything, as CoreDNS does).
fn key_name(index: &Index, record: &StoredRecord) -> Option<Name> {
    let full = index.name_of_key(&record.key)?;
    let labels: Vec<&str> = full.split('.').collect();
    let strip = usize::try_from(record.value.target_strip).unwrap_or(usize::MAX);
    let kept = if strip < labels.len() {
        &labels[strip..]
    } else {
        &labels[..]
    };
    let mut name = Name::from_ascii(kept.join(".")).ok()?;
    name.set_fqdn(true);
    Some(name)
}

fn prefixed(zone: &Name, labels: &[&str]) -> Name {
    let mut name = zone.clone();
    for label in labels.iter().rev() {
        name = name.prepend_label(*label).unwrap_or_else(|_| zone.clone());
    }
    name
}

/// TXT text cut into character-strings of at most 255 bytes, on UTF-8 boundaries.
fn split_text(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = rest.len().min(MAX_TXT_STRING);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        parts.push(rest[..cut].to_owned());
        rest = &rest[cut..];
    }
    parts
}

/// Rotates a trailing run of A/AAAA records by `by` (what CoreDNS's `loadbalance` is used for).
fn rotate_addresses(answers: &mut [Record], by: usize) {
    let is_address = |r: &Record| matches!(r.record_type(), RecordType::A | RecordType::AAAA);
    let run = answers.iter().rev().take_while(|r| is_address(r)).count();
    if run > 1 {
        let start = answers.len() - run;
        answers[start..].rotate_left(by % run);
    }
}

/// The SOA record of a served zone, with its current serial.
pub fn soa(index: &Index, zones: &Zones, zone: &Name) -> Record {
    let lookup = Lookup {
        index,
        zones,
        answer: Answer::refused(),
        glue: HashSet::new(),
        glue_targets: HashSet::new(),
    };
    lookup.soa_record(zone, zones.soa.ttl)
}

/// The whole zone as a secondary should hold it (without the closing SOA): the SOA, the apex NS set with
/// glue, then every name's records as [`resolve`] would answer them, names in key order. Names made of a
/// suffix label (`targetstrip` >= 1, e.g. external-dns's `1a2b3c4d.nginx.test.org`) are not zone names and
/// are left out; a stored `*` is transferred as the wildcard it is.
pub fn zone_transfer(index: &Index, zones: &Zones, zone: &Name) -> Vec<Record> {
    let mut lookup = Lookup {
        index,
        zones,
        answer: Answer::refused(),
        glue: HashSet::new(),
        glue_targets: HashSet::new(),
    };
    let mut records = vec![lookup.soa_record(zone, zones.soa.ttl)];
    lookup.answer_ns(zone, zone);
    records.append(&mut lookup.answer.answers);
    records.append(&mut lookup.answer.additionals);

    let Some(zone_dir) = index.directory_of(&zone.to_ascii()) else {
        return records;
    };
    // Names in the zone that hold records: the apex (its `dns/apex` leaves are its own), each key's own
    // name, and the parent of each leaf.
    let mut names: Vec<String> = vec![zone_dir.clone()];
    for record in index.records_below(&zone_dir) {
        let is_leaf = !index.has_children(&record.key);
        // A leaf below a stored `*` is the wildcard's record; as a name of its own it would be
        // `x1.*.apps.<zone>`, a literal `*` inside a name that no secondary should be handed.
        let below_wildcard = record
            .key
            .rsplit_once('/')
            .is_some_and(|(parent, _)| parent.ends_with("/*"));
        let is_suffix = is_leaf && (record.value.target_strip >= 1 || below_wildcard);
        if !is_suffix {
            names.push(record.key.clone());
        }
        if let Some((parent, _)) = record.key.rsplit_once('/')
            && is_leaf
            && (parent != zone_dir || is_suffix)
            && parent.len() >= zone_dir.len()
        {
            names.push(parent.to_owned());
        }
    }
    names.sort();
    names.dedup();
    for dir in names {
        let Some(name) = index
            .name_of_key(&dir)
            .and_then(|n| Name::from_ascii(n + ".").ok())
        else {
            continue;
        };
        let held = group_filter(lookup.records_at(zone, &name, &dir));
        for qtype in [
            RecordType::A,
            RecordType::AAAA,
            RecordType::TXT,
            RecordType::MX,
            RecordType::SRV,
        ] {
            lookup.answer_records(&name, &held, qtype);
        }
        if is_reverse(zone) {
            lookup.answer_records(&name, &held, RecordType::PTR);
        } else if let Some((target, ttl)) = cname_of(&held, zones.default_ttl) {
            lookup.answer.answers.push(Record::from_rdata(
                name.clone(),
                ttl,
                RData::CNAME(CNAME(target)),
            ));
        }
        records.append(&mut lookup.answer.answers);
        // Addresses of targets synthesized from keys exist only as glue: transfer them as records.
        records.extend(lookup.answer.additionals.drain(..).filter(|glue| {
            index
                .directory_of(&glue.name.to_ascii())
                .is_some_and(|d| !index.exists(&d))
        }));
    }
    records.dedup();
    records
}

#[cfg(test)]
#[path = "lookup_tests.rs"]
mod tests;
