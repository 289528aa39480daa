//! Response rate limiting (RRL) for UDP answers: a server that answers spoofed queries reflects (and
//! amplifies) a flood onto the address the attacker wrote in, so answers of one kind to one client prefix are
//! limited, and of those over the limit every Nth is sent truncated (TC set, no records: "slip"), the rest
//! dropped. A real client behind a spoofed prefix gets a truncated answer now and then, and retries over TCP,
//! which cannot be spoofed; the victim gets fewer packets than the attacker sent, none larger than a query.
//! TCP answers are never limited.
//!
//! What is counted together (the "response class", after BIND and NSD): the client's prefix (IPv4 /24, IPv6
//! /56 by default), the kind of answer, and a name: the question's name and type for a positive answer; the
//! zone for NXDOMAIN, NODATA and errors, so a flood of random names under a zone shares one count whatever
//! the names and types. Names are compared without case, so 0x20 case randomisation does not split a count.
//! The key is hashed with the process's random SipHash keys ([`RandomState`]): an attacker cannot aim
//! collisions at a victim's slot.
//!
//! The counts live in one table of fixed size shared by every UDP thread, allocated at start: buckets of
//! four 8-byte slots in a 32-byte line, each slot a 20-bit tag of its key and the time its next answer is due
//! (the generic cell rate algorithm, a token bucket stored as one timestamp), updated with compare-and-swap,
//! no lock and no allocation per client. A key not in its bucket takes the slot whose time is furthest in the
//! past, so idle keys are forgotten before limited ones; a flood of more distinct keys than the table holds
//! makes the limits forgetful (more gets through), never the memory larger.
//!
//! Defaults, compared (docs/dns-compat.md has the table): 200 answers per second, a burst of one second's
//! worth, slip 2, prefixes /24 and /56, 524,288 slots (4 MiB). The rate and slip are NSD's (`rrl-ratelimit`
//! 200, `rrl-slip` 2; BIND's `slip` is 2 too): high enough that a resolver farm behind one /24 asking for one
//! name is not limited, while a reflection through one name is capped at 200 answers a second plus half the
//! rest truncated. Knot's `slip` 1 truncates every limited answer, so the victim gets as many packets as the
//! attacker sent; slip 2 halves them and still lets a real client through on its first or second try. The
//! IPv6 prefix is BIND's /56 rather than NSD's /64: one end site usually holds a /56 (or a /48), so with /64
//! one attacker would get 256 separate limits. BIND and Knot ship RRL off; an Internet-facing server should
//! not, and the ones that must not be limited (monitoring, secondaries) are listed with `--rrl-exempt`.
//!
//! Not here (yet): a wildcard's answers are counted by the asked name, not the wildcard (the answer bytes do
//! not say an answer came from one), so random names under a wildcard are limited per name only.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::BinEncodable;
use ipnet::IpNet;

use crate::cache_key::question_name_end;

/// Answers per second to one prefix for one response class, by default (NSD's).
pub const DEFAULT_RESPONSES_PER_SECOND: u32 = 200;
/// Every Nth limited answer is sent truncated, by default (NSD's and BIND's).
pub const DEFAULT_SLIP: u32 = 2;
/// IPv4 client prefix length, by default (everyone's).
pub const DEFAULT_IPV4_PREFIX: u8 = 24;
/// IPv6 client prefix length, by default (BIND's).
pub const DEFAULT_IPV6_PREFIX: u8 = 56;
/// Slots in the table, by default (Knot's `table-size`; 4 MiB).
pub const DEFAULT_TABLE_SIZE: u32 = 1 << 19;
/// The highest rate: the table keeps time in microseconds.
pub const MAX_RESPONSES_PER_SECOND: u32 = 1_000_000;

/// What RRL does, from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrlSettings {
    /// Answers per second to one prefix for one response class; 0 turns RRL off.
    pub responses_per_second: u32,
    /// Every Nth limited answer is sent truncated, the others dropped; 0 drops them all.
    pub slip: u32,
    /// IPv4 client prefix length.
    pub ipv4_prefix: u8,
    /// IPv6 client prefix length.
    pub ipv6_prefix: u8,
    /// Slots in the table (rounded up to a power of two).
    pub table_size: u32,
    /// Clients never limited.
    pub exempt: Vec<IpNet>,
}

impl Default for RrlSettings {
    fn default() -> Self {
        Self {
            responses_per_second: DEFAULT_RESPONSES_PER_SECOND,
            slip: DEFAULT_SLIP,
            ipv4_prefix: DEFAULT_IPV4_PREFIX,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
            table_size: DEFAULT_TABLE_SIZE,
            exempt: Vec::new(),
        }
    }
}

/// The kind of an answer, as RRL counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// NOERROR with records in the answer section: counted by name and type.
    Positive,
    /// NOERROR without answer records (NODATA, referral): counted by zone.
    NoData,
    /// NXDOMAIN: counted by zone.
    NxDomain,
    /// Any other RCODE (REFUSED, SERVFAIL, FORMERR, NOTIMP...): counted by zone, or per prefix outside them.
    Error,
}

/// What an answer is counted under (besides the client's prefix), read from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class<'a> {
    /// The kind.
    pub kind: Kind,
    /// The question type for a positive answer, else 0.
    pub qtype: u16,
    /// The name counted under, in wire format as the answer spells it: the question's name for a positive
    /// answer, else the served zone that holds it (empty outside the zones).
    pub name: &'a [u8],
    /// Where the question section ends (12 when the answer has no single, plain question).
    pub question_end: usize,
}

/// What to do with one UDP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send it as it is.
    Send,
    /// Send its header and question only, with TC set ([`truncated`]).
    Slip {
        /// The end of the question section in the answer.
        question_end: usize,
    },
    /// Send nothing.
    Drop,
}

/// The count of limited answers since the last slipped one, kept by each serving thread (so slipping needs
/// no shared write).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slip {
    since_slipped: u32,
}

/// The lowercased wire names of the served zones, to find the zone of an NXDOMAIN, NODATA or error.
#[derive(Debug, Clone, Default)]
struct ZoneNames(Vec<Vec<u8>>);

impl ZoneNames {
    /// The suffix of `qname` (wire format) that is the longest served zone, or empty.
    fn enclosing<'a>(&self, qname: &'a [u8]) -> &'a [u8] {
        let mut at = 0;
        while at < qname.len() {
            let suffix = &qname[at..];
            if self.0.iter().any(|zone| zone.eq_ignore_ascii_case(suffix)) {
                return suffix;
            }
            at += 1 + usize::from(qname[at]);
        }
        &[]
    }
}

/// Four slots on one 32-byte line, so a lookup touches one cache line.
#[derive(Debug, Default)]
#[repr(align(32))]
struct Bucket([AtomicU64; WAYS]);

const WAYS: usize = 4;
/// A slot: the key's tag in the top bits, the time (µs, modulo 2^44, about 203 days) its next answer is due
/// in the rest.
const TIME_BITS: u32 = 44;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;
/// Attempts at a slot other threads keep changing before the answer is let through.
const CAS_TRIES: usize = 8;

/// The shared RRL state: settings and the table.
#[derive(Debug)]
pub struct Limiter {
    /// Microseconds between answers at the limit (0: RRL off).
    interval: u64,
    /// How far ahead of now a key's due time may be and still be answered: the burst, less one answer.
    tolerance: u64,
    slip: u32,
    ipv4_mask: u32,
    ipv6_mask: u128,
    exempt: Vec<IpNet>,
    zones: ZoneNames,
    keys: RandomState,
    buckets: Box<[Bucket]>,
}

impl Limiter {
    /// A limiter with `settings` for answers from `zones`; its table is allocated here, once.
    pub fn new(settings: &RrlSettings, zones: &[Name]) -> Self {
        let rate = u64::from(settings.responses_per_second.min(MAX_RESPONSES_PER_SECOND));
        // A burst of one second's worth (BIND caps its credit at one second too); rate 0: off.
        let (interval, tolerance) = 1_000_000u64
            .checked_div(rate)
            .map_or((0, 0), |interval| (interval, interval * (rate - 1)));
        let slots = if rate == 0 {
            0
        } else {
            usize::try_from(settings.table_size)
                .unwrap_or(usize::MAX)
                .max(WAYS)
                .next_power_of_two()
        };
        let zones = zones
            .iter()
            .filter_map(|zone| zone.to_lowercase().to_bytes().ok())
            .collect();
        Self {
            interval,
            tolerance,
            slip: settings.slip,
            ipv4_mask: u32::MAX
                .checked_shl(32 - u32::from(settings.ipv4_prefix.min(32)))
                .unwrap_or(0),
            ipv6_mask: u128::MAX
                .checked_shl(128 - u32::from(settings.ipv6_prefix.min(128)))
                .unwrap_or(0),
            exempt: settings.exempt.clone(),
            zones: ZoneNames(zones),
            keys: RandomState::new(),
            buckets: (0..slots / WAYS).map(|_| Bucket::default()).collect(),
        }
    }

    /// Whether RRL is on.
    pub fn enabled(&self) -> bool {
        self.interval > 0
    }

    /// The table's size in bytes: fixed at start.
    pub fn table_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.buckets)
    }

    /// What to do with `answer` to `client` at `now` (time since any fixed start; only differences count).
    /// `slip` is the calling thread's.
    pub fn decide(&self, client: IpAddr, answer: &[u8], now: Duration, slip: &mut Slip) -> Action {
        if !self.enabled() {
            return Action::Send;
        }
        if self
            .exempt
            .iter()
            .any(|net| net.contains(&client.to_canonical()))
        {
            return Action::Send;
        }
        let class = self.classify(answer);
        if self.admit(client, &class, now) {
            return Action::Send;
        }
        if self.slip == 0 {
            return Action::Drop;
        }
        slip.since_slipped += 1;
        if slip.since_slipped < self.slip {
            return Action::Drop;
        }
        slip.since_slipped = 0;
        Action::Slip {
            question_end: class.question_end,
        }
    }

    /// The response class of `answer`, from its header and question (no parse of the records).
    pub fn classify<'a>(&self, answer: &'a [u8]) -> Class<'a> {
        let mut class = Class {
            kind: Kind::Error,
            qtype: 0,
            name: &[],
            question_end: answer.len().min(12),
        };
        let Some(header) = answer.get(..12) else {
            return class;
        };
        let count = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
        let mut qname: &[u8] = &[];
        if count(4) == 1
            && let Some(name_end) = question_name_end(answer)
            && let Some(qtype) = answer.get(name_end..name_end + 4)
        {
            qname = &answer[12..name_end];
            class.qtype = u16::from_be_bytes([qtype[0], qtype[1]]);
            class.question_end = name_end + 4;
        }
        class.kind = match header[3] & 0x0f {
            0 if count(6) > 0 => Kind::Positive,
            0 => Kind::NoData,
            3 => Kind::NxDomain,
            _ => Kind::Error,
        };
        if class.kind == Kind::Positive {
            class.name = qname;
        } else {
            class.qtype = 0;
            class.name = self.zones.enclosing(qname);
        }
        class
    }

    /// Whether an answer of `class` to `client` at `now` is within the limit (and counts it if so).
    pub fn admit(&self, client: IpAddr, class: &Class<'_>, now: Duration) -> bool {
        if !self.enabled() {
            return true;
        }
        let hash = self.hash(client, class);
        // The low bits pick the bucket, the top bits (not overlapping for any table that fits in memory)
        // tell keys in it apart.
        let bucket = &self.buckets[(hash as usize) & (self.buckets.len() - 1)];
        let tag = hash >> TIME_BITS;
        let now = u64::try_from(now.as_micros()).unwrap_or(u64::MAX) & TIME_MASK;
        for _ in 0..CAS_TRIES {
            let (slot, old, due) = self.slot_for(bucket, tag, now);
            let ahead = due.map_or(0, |ahead| ahead.max(0).unsigned_abs());
            if ahead > self.tolerance {
                return false;
            }
            let next = (now + ahead + self.interval) & TIME_MASK;
            if slot
                .compare_exchange(
                    old,
                    (tag << TIME_BITS) | next,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return true;
            }
        }
        // Other threads keep updating this very bucket: let the answer through rather than spin.
        true
    }

    /// The slot holding `tag` (with its value and how far its due time is ahead of `now`), or the one to take
    /// over (with `None`): an expired one first, else the one due furthest in the past.
    fn slot_for<'b>(
        &self,
        bucket: &'b Bucket,
        tag: u64,
        now: u64,
    ) -> (&'b AtomicU64, u64, Option<i64>) {
        let mut victim = (&bucket.0[0], 0, i64::MIN);
        for slot in &bucket.0 {
            let value = slot.load(Ordering::Relaxed);
            let ahead = self.ahead(value & TIME_MASK, now);
            if value >> TIME_BITS == tag {
                return (slot, value, ahead);
            }
            let age = ahead.map_or(i64::MAX, |ahead| -ahead);
            if age > victim.2 {
                victim = (slot, value, age);
            }
        }
        (victim.0, victim.1, None)
    }

    /// How far `due` is ahead of `now` (negative: in the past), or `None` when no live key can be that far
    /// ahead: the slot has not been touched for so long that its time wrapped.
    fn ahead(&self, due: u64, now: u64) -> Option<i64> {
        let difference = due.wrapping_sub(now) & TIME_MASK;
        // Read the 44-bit difference as signed.
        let signed = if difference >= 1 << (TIME_BITS - 1) {
            difference.cast_signed() - (1 << TIME_BITS)
        } else {
            difference.cast_signed()
        };
        (signed <= (self.tolerance + self.interval).cast_signed()).then_some(signed)
    }

    fn hash(&self, client: IpAddr, class: &Class<'_>) -> u64 {
        let mut hasher = self.keys.build_hasher();
        // A dual-stack socket sees IPv4 clients as IPv4-mapped IPv6 addresses.
        match client.to_canonical() {
            IpAddr::V4(v4) => {
                hasher.write_u8(4);
                hasher.write_u32(u32::from(v4) & self.ipv4_mask);
            }
            IpAddr::V6(v6) => {
                hasher.write_u8(6);
                hasher.write_u128(u128::from(v6) & self.ipv6_mask);
            }
        }
        hasher.write_u8(class.kind as u8);
        hasher.write_u16(class.qtype);
        let mut lower = [0u8; 64];
        for chunk in class.name.chunks(lower.len()) {
            let lower = &mut lower[..chunk.len()];
            lower.copy_from_slice(chunk);
            lower.make_ascii_lowercase();
            hasher.write(lower);
        }
        hasher.finish()
    }
}

/// The bytes to send for `answer` after `action`: the answer, its slipped form (written into `slipped`, a
/// buffer the caller reuses), or nothing.
pub fn to_send<'a>(answer: &'a [u8], action: Action, slipped: &'a mut Vec<u8>) -> Option<&'a [u8]> {
    match action {
        Action::Send => Some(answer),
        Action::Slip { question_end } => {
            truncated(answer, question_end, slipped);
            Some(slipped)
        }
        Action::Drop => None,
    }
}

/// Writes into `out` the slipped form of `answer`: its header with TC set and only the question (up to
/// `question_end`), no records, so it is no larger than the query that asked.
pub fn truncated(answer: &[u8], question_end: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&answer[..question_end.min(answer.len())]);
    if out.len() < 12 {
        return;
    }
    out[2] |= 0x02;
    let questions = u16::from(out.len() > 12);
    out[4..6].copy_from_slice(&questions.to_be_bytes());
    out[6..12].fill(0);
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
    use hickory_proto::rr::{RData, Record, RecordType, rdata};

    use super::*;

    const RATE: u32 = 100;

    fn limiter(settings: RrlSettings) -> Limiter {
        Limiter::new(&settings, &[Name::from_ascii("test.org.").unwrap()])
    }

    fn settings() -> RrlSettings {
        RrlSettings {
            responses_per_second: RATE,
            ..RrlSettings::default()
        }
    }

    fn answer(name: &str, rtype: RecordType, rcode: ResponseCode) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.message_type = MessageType::Response;
        message.metadata.response_code = rcode;
        let name = Name::from_ascii(name).unwrap();
        message.add_query(Query::query(name.clone(), rtype));
        if rcode == ResponseCode::NoError && rtype == RecordType::A {
            message.add_answer(Record::from_rdata(
                name,
                300,
                RData::A(rdata::A::new(10, 0, 0, 1)),
            ));
        }
        message.to_vec().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// Offers `count` answers made by `answer_for(i)` to `client`, evenly over `seconds` from `start`,
    /// and counts what was sent, slipped and dropped.
    fn offer(
        limiter: &Limiter,
        client: IpAddr,
        count: u32,
        seconds: f64,
        start: Duration,
        answer_for: impl Fn(u32) -> Vec<u8>,
    ) -> [u32; 3] {
        let mut slip = Slip::default();
        let mut tally = [0; 3];
        for i in 0..count {
            let now = start + Duration::from_secs_f64(seconds * f64::from(i) / f64::from(count));
            let index = match limiter.decide(client, &answer_for(i), now, &mut slip) {
                Action::Send => 0,
                Action::Slip { .. } => 1,
                Action::Drop => 2,
            };
            tally[index] += 1;
        }
        tally
    }

    #[test]
    fn under_the_limit_every_answer_is_sent() {
        let limiter = limiter(settings());
        let a = answer("nginx.test.org.", RecordType::A, ResponseCode::NoError);
        let [sent, slipped, dropped] = offer(
            &limiter,
            ip("192.0.2.1"),
            10 * RATE * 9 / 10,
            10.0,
            Duration::ZERO,
            |_| a.clone(),
        );
        assert_eq!((slipped, dropped), (0, 0));
        assert_eq!(sent, 10 * RATE * 9 / 10);
    }

    #[test]
    fn over_the_limit_a_burst_then_the_rate_passes_and_every_second_limited_answer_slips() {
        let limiter = limiter(settings());
        let a = answer("nginx.test.org.", RecordType::A, ResponseCode::NoError);
        // 20 times the limit for 10 seconds.
        let offered = 20 * RATE * 10;
        let [sent, slipped, dropped] = offer(
            &limiter,
            ip("192.0.2.1"),
            offered,
            10.0,
            Duration::from_secs(5),
            |_| a.clone(),
        );
        // One second's burst, then the rate.
        let expected = RATE + 10 * RATE;
        assert!(
            sent.abs_diff(expected) <= 2,
            "sent {sent}, expected {expected}"
        );
        let limited = offered - sent;
        assert_eq!(slipped + dropped, limited);
        assert!(
            slipped.abs_diff(limited / 2) <= 1,
            "{slipped} of {limited} slipped"
        );
    }

    #[test]
    fn slip_zero_drops_every_limited_answer_slip_one_truncates_them_all_and_slip_n_every_nth() {
        let a = answer("nginx.test.org.", RecordType::A, ResponseCode::NoError);
        for slip in [0, 1, 3] {
            let limiter = limiter(RrlSettings { slip, ..settings() });
            let [sent, slipped, dropped] =
                offer(&limiter, ip("192.0.2.1"), 3000, 1.0, Duration::ZERO, |_| {
                    a.clone()
                });
            let limited = 3000 - sent;
            let expected = limited.checked_div(slip).unwrap_or(0);
            assert_eq!(slipped, expected, "slip {slip}");
            assert_eq!(dropped, limited - expected, "slip {slip}");
        }
    }

    #[test]
    fn prefixes_are_limited_apart_and_addresses_in_one_prefix_together() {
        let limiter = limiter(settings());
        let a = answer("nginx.test.org.", RecordType::A, ResponseCode::NoError);
        let now = Duration::from_secs(1);
        let class = limiter.classify(&a);
        // 192.0.2.1 spends the burst; 192.0.2.77 (same /24) is limited with it.
        for _ in 0..RATE {
            assert!(limiter.admit(ip("192.0.2.1"), &class, now));
        }
        assert!(!limiter.admit(ip("192.0.2.1"), &class, now));
        assert!(!limiter.admit(ip("192.0.2.77"), &class, now));
        // Another /24, and another /56 in IPv6 (but not another /64 of the same /56), are not.
        assert!(limiter.admit(ip("192.0.3.1"), &class, now));
        for _ in 0..RATE {
            assert!(limiter.admit(ip("2001:db8:0:100::1"), &class, now));
        }
        assert!(!limiter.admit(ip("2001:db8:0:1ff::2"), &class, now));
        assert!(limiter.admit(ip("2001:db8:0:200::1"), &class, now));
        // An IPv4-mapped IPv6 client (a dual-stack socket) is its IPv4 prefix.
        assert!(!limiter.admit(ip("::ffff:192.0.2.9"), &class, now));
        // Another name or another type is another count.
        let other = answer("www.test.org.", RecordType::A, ResponseCode::NoError);
        assert!(limiter.admit(ip("192.0.2.1"), &limiter.classify(&other), now));
    }

    #[test]
    fn random_names_that_do_not_exist_share_the_zones_count_whatever_their_case_and_type() {
        let limiter = limiter(settings());
        let types = [
            RecordType::A,
            RecordType::AAAA,
            RecordType::TXT,
            RecordType::MX,
        ];
        let [sent, _, _] = offer(
            &limiter,
            ip("198.51.100.7"),
            5 * RATE,
            0.5,
            Duration::ZERO,
            |i| {
                let name = format!("r{i:x}Q.{}.TeSt.org.", i * 7919);
                answer(&name, types[i as usize % 4], ResponseCode::NXDomain)
            },
        );
        assert!(sent <= RATE + RATE / 2 + 1, "{sent} NXDOMAIN answers sent");
        let nxdomain = answer("anything.test.org.", RecordType::A, ResponseCode::NXDomain);
        let class = limiter.classify(&nxdomain);
        assert_eq!(class.name, b"\x04test\x03org\x00");
        // A positive answer at the same time is counted apart.
        let a = answer("nginx.test.org.", RecordType::A, ResponseCode::NoError);
        assert!(limiter.admit(ip("198.51.100.7"), &limiter.classify(&a), Duration::ZERO));
        // Refusals outside the zones share one count per prefix.
        let refused = answer("x.example.", RecordType::A, ResponseCode::Refused);
        let class = limiter.classify(&refused);
        assert_eq!((class.kind, class.name), (Kind::Error, &b""[..]));
    }

    #[test]
    fn the_limit_refills_at_the_rate_after_a_pause() {
        let limiter = limiter(settings());
        let a = answer("nginx.test.org.", RecordType::A, ResponseCode::NoError);
        let class = limiter.classify(&a);
        let client = ip("192.0.2.1");
        let start = Duration::from_secs(3);
        while limiter.admit(client, &class, start) {}
        let later = start + Duration::from_millis(100);
        let passed = (0..RATE)
            .filter(|_| limiter.admit(client, &class, later))
            .count();
        assert_eq!(passed, (RATE / 10) as usize);
        // Long idle (longer than the table's clock wraps, too): a full burst again.
        for idle in [Duration::from_secs(60), Duration::from_secs(250 * 86_400)] {
            let passed = (0..2 * RATE)
                .filter(|_| limiter.admit(client, &class, later + idle))
                .count();
            assert_eq!(passed, RATE as usize, "after {idle:?}");
        }
    }

    #[test]
    fn the_table_never_grows_and_keeps_limited_keys_over_idle_ones() {
        let limiter = limiter(RrlSettings {
            table_size: 1000,
            ..settings()
        });
        let bytes = limiter.table_bytes();
        assert_eq!(bytes, 1024 * 8);
        let a = answer("nginx.test.org.", RecordType::A, ResponseCode::NoError);
        let class = limiter.classify(&a);
        // 100,000 spoofed /24s: each is answered (a count of its own), the table stays as it was.
        let now = Duration::from_secs(1);
        for i in 0..100_000u32 {
            let client = IpAddr::from((i << 8).to_be_bytes());
            assert!(limiter.admit(client, &class, now));
        }
        assert_eq!(limiter.table_bytes(), bytes);
        // One bucket of four slots, full of other keys: a limited key (due a second ahead) outlives the
        // keys that keep arriving, which take the slots of the ones due least far ahead.
        let one_bucket = limiter_with_slots(4);
        assert_eq!(one_bucket.table_bytes(), 32);
        let victim = ip("203.0.113.1");
        while one_bucket.admit(victim, &class, now) {}
        // (At the limit of 100 a second, it may answer again 10 ms after the burst.)
        for i in 0..100u32 {
            let client = IpAddr::from((0x0a00_0000 | (i << 8)).to_be_bytes());
            let later = now + Duration::from_micros(1000 + 50 * u64::from(i));
            assert!(one_bucket.admit(client, &class, later));
        }
        assert!(!one_bucket.admit(victim, &class, now + Duration::from_millis(8)));
        assert!(one_bucket.admit(victim, &class, now + Duration::from_millis(10)));
    }

    #[test]
    fn threads_sharing_the_table_together_get_one_burst() {
        let limiter = limiter(settings());
        let a = answer("nginx.test.org.", RecordType::A, ResponseCode::NoError);
        let class = limiter.classify(&a);
        let now = Duration::from_secs(1);
        let passed: usize = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..10_000)
                            .filter(|_| limiter.admit(ip("192.0.2.1"), &class, now))
                            .count()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).sum()
        });
        assert_eq!(passed, RATE as usize);
    }

    fn limiter_with_slots(table_size: u32) -> Limiter {
        limiter(RrlSettings {
            table_size,
            ..settings()
        })
    }

    #[test]
    fn exempt_clients_and_a_zero_rate_are_never_limited() {
        let a = answer("nginx.test.org.", RecordType::A, ResponseCode::NoError);
        let sent = |limiter: &Limiter, client: &str| {
            offer(limiter, ip(client), 10 * RATE, 1.0, Duration::ZERO, |_| {
                a.clone()
            })[0]
        };
        let exempt = limiter(RrlSettings {
            exempt: vec!["192.0.2.0/28".parse().unwrap()],
            ..settings()
        });
        assert_eq!(sent(&exempt, "192.0.2.5"), 10 * RATE);
        assert!(sent(&exempt, "192.0.2.17") < 3 * RATE);
        let off = limiter(RrlSettings {
            responses_per_second: 0,
            ..settings()
        });
        assert_eq!(off.table_bytes(), 0);
        assert_eq!(sent(&off, "192.0.2.5"), 10 * RATE);
    }

    #[test]
    fn a_slipped_answer_is_the_header_with_tc_and_the_question_only() {
        let a = answer("nginx.test.org.", RecordType::A, ResponseCode::NoError);
        let limiter = limiter(settings());
        let class = limiter.classify(&a);
        assert_eq!(class.kind, Kind::Positive);
        let mut out = Vec::new();
        truncated(&a, class.question_end, &mut out);
        let slipped = Message::from_vec(&out).unwrap();
        assert!(slipped.metadata.truncation);
        assert_eq!(slipped.metadata.message_type, MessageType::Response);
        assert_eq!(slipped.queries.len(), 1);
        assert_eq!(slipped.queries[0].name().to_ascii(), "nginx.test.org.");
        assert!(slipped.answers.is_empty() && slipped.additionals.is_empty());
        assert!(out.len() < a.len());
        // A bare header (FORMERR to junk) slips as a header.
        truncated(&a[..12], 12, &mut out);
        assert_eq!(out.len(), 12);
        assert_eq!(out[4..12], [0; 8]);
    }
}
