//! One DNS message in, at most one out: parsing, the protocol rules around [`lookup::resolve`] (opcode,
//! class, EDNS, truncation, zone transfers), and encoding. No sockets here, so it is tested on bytes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLockReadGuard};
use std::time::Instant;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;

use crate::config::TsigSettings;
use crate::forward::ForwardZones;
use crate::ixfr::Difference;
use crate::lookup::{self, Zones};
use crate::metrics::{QueryLabels, QueryMetrics, TransferLabels};
use crate::store::SharedIndex;
use crate::store::index::{Index, revision_of_serial};
use crate::tsig::{self, Verdict};

/// The EDNS payload size we advertise (the DNS Flag Day 2020 value, avoiding IP fragmentation).
pub const ADVERTISED_PAYLOAD: u16 = 1232;
/// Without EDNS a UDP response may not exceed 512 bytes (RFC 1035).
const PLAIN_UDP_LIMIT: usize = 512;

/// How the message arrived; decides the size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Datagrams: responses are truncated to the client's buffer size.
    Udp,
    /// Streams: responses are complete (up to 65535 bytes).
    Tcp,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

/// Answers DNS messages from the shared index.
#[derive(Debug)]
pub struct Handler {
    index: SharedIndex,
    zones: Zones,
    transfer_allow: Vec<IpNet>,
    forward: ForwardZones,
    rotation: AtomicUsize,
    metrics: QueryMetrics,
    tsig: TsigSettings,
}

/// Bytes of keys and answers a [`ResponseCache`] holds before it starts over (per serving thread): the
/// questions a zone is asked for fit many times over; a flood of distinct names cannot grow it further.
const CACHE_BYTES: usize = 8 << 20;
/// What an entry costs besides its key and answer (map slot, counter handle, allocation headers).
const ENTRY_OVERHEAD: usize = 96;

/// Encoded UDP answers of one serving thread, valid for one index revision (any change in etcd empties
/// it), keyed on what decides the answer ([`crate::cache_key`]) and bounded in bytes. Owned by the thread,
/// so lookups take no lock.
#[derive(Debug)]
pub struct ResponseCache {
    revision: i64,
    bytes: usize,
    budget: usize,
    /// The key of the datagram at hand, in a buffer reused from one to the next.
    key: Vec<u8>,
    entries: HashMap<Vec<u8>, Cached>,
    /// The last answer that was not cached (so a borrowed slice can be returned either way).
    uncached: Vec<u8>,
}

impl Default for ResponseCache {
    fn default() -> Self {
        Self::with_budget(CACHE_BYTES)
    }
}

impl ResponseCache {
    /// An empty cache that starts over once it holds `budget` bytes.
    pub fn with_budget(budget: usize) -> Self {
        Self {
            revision: 0,
            bytes: 0,
            budget,
            key: Vec::new(),
            entries: HashMap::new(),
            uncached: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct Cached {
    bytes: Vec<u8>,
    queries: Counter,
}

/// Records per message of a zone transfer: well under 64 KiB for any record we serve.
const TRANSFER_CHUNK: usize = 100;

/// What to send back for one request.
enum Reply {
    /// Nothing (not a query).
    Drop,
    /// One message, which must fit `limit` bytes.
    One(Message, usize),
    /// A zone transfer of `zone`; the message carries the header and question to repeat.
    Transfer(Message, Name),
    /// An incremental transfer, to compute from the zone at a past revision.
    Incremental(Box<IncrementalTransfer>),
    /// A question for a forwarded zone, to relay to these upstreams.
    Forward(Vec<SocketAddr>),
    /// A signed request whose signature is refused (RFC 8945 5.2): NOTAUTH with the TSIG error.
    Rejected(Message, tsig::Rejection),
}

/// What [`Handler::handle`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The messages to send, in order (none: drop the request).
    Messages(Vec<Vec<u8>>),
    /// Relay the request to these upstreams ([`crate::forward::exchange`]) and send back their reply.
    Forward(Vec<SocketAddr>),
    /// Read the zone as of [`IncrementalTransfer::revision`] from etcd's history
    /// ([`crate::store::history`]) and answer with [`Handler::incremental`].
    Incremental(Box<IncrementalTransfer>),
}

/// An IXFR from a secondary that is behind, waiting for the zone at its version.
#[derive(Debug, PartialEq, Eq)]
pub struct IncrementalTransfer {
    /// The response's header and question, repeated in every message.
    template: Message,
    zone: Name,
    /// The secondary's serial.
    serial: u32,
    /// The etcd revision that serial stands for.
    revision: i64,
    /// The request's valid signature: every message of the answer is signed.
    session: Option<tsig::Session>,
}

impl IncrementalTransfer {
    /// The etcd revision of the secondary's version of the zone.
    pub fn revision(&self) -> i64 {
        self.revision
    }
}

/// What [`Handler::handle_udp`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum UdpOutcome<'c> {
    /// Nothing to send.
    Drop,
    /// Send these bytes.
    Answer(&'c [u8]),
    /// Relay the request to these upstreams.
    Forward(Vec<SocketAddr>),
}

impl Handler {
    /// A handler serving `zones` from `index`, transferring zones to clients in `transfer_allow` (signed
    /// with one of `tsig`'s transfer keys when it names any), and relaying questions for `forward` zones.
    pub fn new(
        index: SharedIndex,
        zones: Zones,
        transfer_allow: Vec<IpNet>,
        forward: ForwardZones,
        metrics: QueryMetrics,
        tsig: TsigSettings,
    ) -> Self {
        Self {
            index,
            zones,
            transfer_allow,
            forward,
            rotation: AtomicUsize::new(0),
            metrics,
            tsig,
        }
    }

    /// The messages answering `request` from `peer`: none when it must be dropped (not a DNS query at all,
    /// or a response: answering those could loop or amplify), several for a zone transfer.
    pub fn handle(&self, request: &[u8], transport: Transport, peer: IpAddr) -> Outcome {
        let started = Instant::now();
        let (outcome, _cacheable, counter) = self.process(request, transport, peer);
        if let Some(counter) = counter {
            counter.inc();
            self.metrics
                .duration
                .observe(started.elapsed().as_secs_f64());
        }
        outcome
    }

    /// [`Handler::handle`] for one UDP datagram, answered from `cache` when the same question (the same
    /// [`crate::cache_key`]) was answered at the current index revision. The returned bytes live in the
    /// cache.
    pub fn handle_udp<'c>(
        &self,
        request: &[u8],
        peer: IpAddr,
        cache: &'c mut ResponseCache,
    ) -> UdpOutcome<'c> {
        let started = Instant::now();
        let revision = self
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .revision();
        if cache.revision != revision || cache.bytes >= cache.budget {
            cache.entries.clear();
            cache.bytes = 0;
            cache.revision = revision;
        }
        let keyed = crate::cache_key::write_cache_key(request, &mut cache.key);
        if keyed && cache.entries.contains_key(&cache.key) {
            let hit = cache.entries.get_mut(&cache.key).map(|hit| {
                hit.bytes[..2].copy_from_slice(&request[..2]);
                hit.queries.inc();
                &hit.bytes[..]
            });
            self.metrics
                .duration
                .observe(started.elapsed().as_secs_f64());
            return hit.map_or(UdpOutcome::Drop, UdpOutcome::Answer);
        }
        let (outcome, cacheable, counter) = self.process(request, Transport::Udp, peer);
        let Some(counter) = counter else {
            return UdpOutcome::Drop;
        };
        counter.inc();
        self.metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        let mut messages = match outcome {
            Outcome::Messages(messages) => messages,
            Outcome::Forward(upstreams) => return UdpOutcome::Forward(upstreams),
            // Over UDP an IXFR is answered with one SOA; never reached.
            Outcome::Incremental(_) => return UdpOutcome::Drop,
        };
        let Some(bytes) = messages.pop() else {
            return UdpOutcome::Drop;
        };
        if keyed && cacheable {
            let key = cache.key.clone();
            cache.bytes += key.len() + bytes.len() + ENTRY_OVERHEAD;
            let entry = cache.entries.entry(key).or_insert(Cached {
                bytes,
                queries: counter,
            });
            UdpOutcome::Answer(&entry.bytes)
        } else {
            cache.uncached = bytes;
            UdpOutcome::Answer(&cache.uncached)
        }
    }

    /// Encoded replies, whether they may be cached, and the query counter to bump (none when dropped).
    fn process(
        &self,
        request: &[u8],
        transport: Transport,
        peer: IpAddr,
    ) -> (Outcome, bool, Option<Counter>) {
        let mut session = None;
        let reply = self.respond(request, transport, peer, &mut session);
        let (labels, messages, cacheable) = match reply {
            Reply::Drop => {
                self.metrics.dropped.inc();
                return (Outcome::Messages(Vec::new()), false, None);
            }
            Reply::Forward(upstreams) => {
                let labels = QueryLabels {
                    transport: transport.label(),
                    qtype: "forwarded",
                    rcode: "forwarded",
                };
                let counter = self.metrics.queries.get_or_create(&labels).clone();
                return (Outcome::Forward(upstreams), false, Some(counter));
            }
            Reply::One(response, limit) => {
                let labels = labels_of(&response, transport);
                // Rotated answers must not be frozen; failures and refusals are not worth the space.
                let addresses = response
                    .answers
                    .iter()
                    .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
                    .count();
                let cacheable = addresses <= 1
                    && matches!(
                        response.metadata.response_code,
                        ResponseCode::NoError | ResponseCode::NXDomain
                    );
                let messages = encode(&response, transport, limit).into_iter().collect();
                (labels, messages, cacheable)
            }
            Reply::Transfer(template, zone) => {
                let labels = labels_of(&template, transport);
                self.count_transfer("axfr");
                (labels, self.transfer(&template, &zone), false)
            }
            Reply::Rejected(mut template, rejection) => {
                template.metadata.response_code = ResponseCode::NotAuth;
                let labels = labels_of(&template, transport);
                (
                    labels,
                    rejection.response(template).into_iter().collect(),
                    false,
                )
            }
            Reply::Incremental(transfer) => {
                let labels = labels_of(&transfer.template, transport);
                let counter = self.metrics.queries.get_or_create(&labels).clone();
                return (Outcome::Incremental(transfer), false, Some(counter));
            }
        };
        let counter = self.metrics.queries.get_or_create(&labels).clone();
        let messages = match &session {
            Some(session) => session.sign(messages, tsig::now()),
            None => messages,
        };
        (Outcome::Messages(messages), cacheable, Some(counter))
    }

    /// Counts a TCP connection turned away by the quota.
    pub fn tcp_refused(&self, refusal: crate::tcp_quota::Refusal) {
        let quota = match refusal {
            crate::tcp_quota::Refusal::Full => "total",
            crate::tcp_quota::Refusal::ClientFull => "per_client",
        };
        self.metrics
            .tcp_refused
            .get_or_create(&crate::metrics::TcpRefusedLabels { quota })
            .inc();
    }

    /// SERVFAIL for `request` (e.g. when no upstream of a forwarded zone answered).
    pub fn failure(&self, request: &[u8]) -> Option<Vec<u8>> {
        let request = Message::from_vec(request).ok()?;
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.response_code = ResponseCode::ServFail;
        response.add_queries(request.queries);
        response.to_vec().ok()
    }

    /// The reply to `request`; `session` is set when the request carries a valid TSIG signature, and every
    /// message of the reply must then be signed.
    fn respond(
        &self,
        request: &[u8],
        transport: Transport,
        peer: IpAddr,
        session: &mut Option<tsig::Session>,
    ) -> Reply {
        let raw = request;
        let request = match parse_query(raw) {
            Ok(request) => request,
            Err(unanswered) => return unanswered.reply(),
        };
        let mut limit = size_limit(request.edns.as_ref(), transport);
        let mut response = response_template(&request);
        if let Some(rejection) =
            self.check_signature(raw, &request, transport, peer, &mut limit, session)
        {
            return Reply::Rejected(response, rejection);
        }
        answer_edns(&mut response, request.edns.as_ref());
        let query = match the_question(&request) {
            Ok(query) => query,
            Err(rcode) => return refuse(response, rcode, limit),
        };
        let in_zone = self.zones.zone_of(query.name()).is_some();
        if !in_zone && let Some(upstreams) = self.forward.upstreams(query.name()) {
            return Reply::Forward(upstreams.to_vec());
        }
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        if index.revision() == 0 && in_zone {
            // Nothing read from etcd yet: an NXDOMAIN now would be cached as truth.
            return refuse(response, ResponseCode::ServFail, limit);
        }
        if matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR) {
            let asked = Asked {
                request: &request,
                query,
                transport,
                peer,
                limit,
            };
            return self.answer_transfer(&index, &asked, response, session);
        }
        self.answer_lookup(index, query, response, limit)
    }

    /// Checks the request's TSIG signature (RFC 8945): a valid one becomes `session`, and over UDP takes its
    /// room from `limit`; a refused one is returned, to answer with.
    fn check_signature(
        &self,
        raw: &[u8],
        request: &Message,
        transport: Transport,
        peer: IpAddr,
        limit: &mut usize,
        session: &mut Option<tsig::Session>,
    ) -> Option<tsig::Rejection> {
        match tsig::verify(&self.tsig.keys, raw, request, tsig::now()) {
            Verdict::Unsigned => {}
            Verdict::Signed(signed) => {
                if transport == Transport::Udp {
                    // Room for the signature within what the client takes.
                    *limit = limit.saturating_sub(signed.overhead());
                }
                *session = Some(signed);
            }
            Verdict::Rejected(rejection) => {
                tracing::info!(peer = %peer, key = %rejection.key, error = rejection.reason, "TSIG signature refused");
                return Some(rejection);
            }
        }
        None
    }

    /// An AXFR or IXFR: only allow-listed clients, for a zone's apex; a transfer itself only over TCP. An IXFR
    /// from a client behind us gets the whole zone, which RFC 1995 allows when no history is kept.
    fn answer_transfer(
        &self,
        index: &Index,
        asked: &Asked<'_>,
        mut response: Message,
        session: &mut Option<tsig::Session>,
    ) -> Reply {
        let Asked {
            request,
            query,
            transport,
            peer,
            limit,
        } = *asked;
        let apex = self
            .zones
            .zone_of(query.name())
            .filter(|z| *z == query.name());
        let listed = self.transfer_allow.iter().any(|net| net.contains(&peer));
        let allowed = listed && transport == Transport::Tcp && self.signed_as_required(session);
        if query.query_type() == RecordType::IXFR
            && listed
            && let Some(zone) = apex
        {
            let ours = index.serial(&zone.to_ascii());
            match ixfr_answer(client_serial(request), ours, transport, allowed) {
                IxfrAnswer::Current => {
                    self.count_transfer("ixfr_current");
                    response.metadata.authoritative = true;
                    response.answers = vec![lookup::soa(index, &self.zones, zone)];
                    return Reply::One(response, limit);
                }
                IxfrAnswer::Incremental(serial) => {
                    tracing::info!(zone = %zone, peer = %peer, serial, "incremental zone transfer");
                    return Reply::Incremental(Box::new(IncrementalTransfer {
                        template: response,
                        zone: zone.clone(),
                        serial,
                        revision: revision_of_serial(serial, index.revision()),
                        session: session.take(),
                    }));
                }
                IxfrAnswer::AsAxfr => {}
            }
        }
        match apex {
            Some(zone) if allowed => {
                tracing::info!(zone = %zone, peer = %peer, "zone transfer");
                Reply::Transfer(response, zone.clone())
            }
            Some(_) if listed && transport == Transport::Tcp => {
                tracing::info!(peer = %peer, qname = %query.name(), key = ?session.as_ref().map(|s| s.key().to_ascii()), "zone transfer refused: not signed with a --transfer-key");
                refuse(response, ResponseCode::Refused, limit)
            }
            _ => {
                tracing::debug!(peer = %peer, qname = %query.name(), "zone transfer refused");
                refuse(response, ResponseCode::Refused, limit)
            }
        }
    }

    /// The answer to `query` from the index ([`lookup::resolve`]); the read lock is released before the
    /// response is filled in.
    fn answer_lookup(
        &self,
        index: RwLockReadGuard<'_, Index>,
        query: &Query,
        mut response: Message,
        limit: usize,
    ) -> Reply {
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        let answer = lookup::resolve(
            &index,
            &self.zones,
            query.name(),
            query.query_type(),
            rotation,
        );
        drop(index);
        response.metadata.response_code = answer.rcode;
        response.metadata.authoritative = answer.authoritative;
        response.answers = answer.answers;
        response.authorities = answer.authorities;
        response.additionals = answer.additionals;
        Reply::One(response, limit)
    }

    /// The zone's records, SOA first and last (RFC 5936), in messages of [`TRANSFER_CHUNK`] records.
    fn transfer(&self, template: &Message, zone: &Name) -> Vec<Vec<u8>> {
        let records = {
            let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
            lookup::zone_transfer(&index, &self.zones, zone)
        };
        transfer_messages(template, whole_zone(records))
    }

    /// The answer to `transfer` given the index as of the secondary's version (`None`: etcd no longer
    /// has it): the difference to the zone now ([`crate::ixfr`]), or the whole zone when the version is
    /// gone or the difference would be larger than the zone (RFC 1995 allows either).
    pub fn incremental(
        &self,
        transfer: Box<IncrementalTransfer>,
        old: Option<Index>,
    ) -> Vec<Vec<u8>> {
        let new = {
            let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
            lookup::zone_transfer(&index, &self.zones, &transfer.zone)
        };
        let difference = old.map(|old| {
            let old = lookup::zone_transfer(&old, &self.zones, &transfer.zone);
            Difference::between(&old, &new)
        });
        let records = match (difference, new.first()) {
            (Some(difference), Some(current)) if difference.len() < new.len() => {
                self.count_transfer("ixfr");
                difference.into_answer(current, transfer.serial)
            }
            _ => {
                self.count_transfer("ixfr_full");
                whole_zone(new)
            }
        };
        let messages = transfer_messages(&transfer.template, records);
        match &transfer.session {
            Some(session) => session.sign(messages, tsig::now()),
            None => messages,
        }
    }

    /// Whether a transfer request's signature satisfies `--transfer-key` (any signature, or none, when no
    /// transfer key is configured).
    fn signed_as_required(&self, session: &Option<tsig::Session>) -> bool {
        self.tsig.transfer_keys.is_empty()
            || session
                .as_ref()
                .is_some_and(|s| self.tsig.transfer_keys.iter().any(|k| k.eq_case(s.key())))
    }

    fn count_transfer(&self, kind: &'static str) {
        self.metrics
            .transfers
            .get_or_create(&TransferLabels { kind })
            .inc();
    }
}

/// A query that passed the protocol checks, and who asked it how: what the answering steps of
/// [`Handler::respond`] share.
#[derive(Clone, Copy)]
struct Asked<'q> {
    request: &'q Message,
    query: &'q Query,
    transport: Transport,
    peer: IpAddr,
    /// The size the reply must fit.
    limit: usize,
}

/// A request that is not a query to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unanswered {
    /// Too short to address a reply, or a response (answering those could loop or amplify).
    Dropped,
    /// Does not parse: FORMERR to the request with this id.
    Malformed(u16),
}

impl Unanswered {
    fn reply(self) -> Reply {
        match self {
            Self::Dropped => Reply::Drop,
            Self::Malformed(id) => {
                let formerr = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
                Reply::One(formerr, PLAIN_UDP_LIMIT)
            }
        }
    }
}

/// The request as a query to answer, or why it is not one.
fn parse_query(request: &[u8]) -> Result<Message, Unanswered> {
    // 12 bytes of header are needed to address any reply; a set QR bit marks a response.
    if request.len() < 12 || request[2] & 0x80 != 0 {
        return Err(Unanswered::Dropped);
    }
    let id = u16::from_be_bytes([request[0], request[1]]);
    let request = Message::from_vec(request).map_err(|_| Unanswered::Malformed(id))?;
    if request.metadata.message_type != MessageType::Query {
        return Err(Unanswered::Dropped);
    }
    Ok(request)
}

/// The response's header and question, echoing the request's.
fn response_template(request: &Message) -> Message {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.checking_disabled = request.metadata.checking_disabled;
    response.add_queries(request.queries.iter().cloned());
    response
}

/// Our OPT record when the client sent one (RFC 6891): the payload size we take, and its DO bit echoed.
fn answer_edns(response: &mut Message, client: Option<&Edns>) {
    if let Some(client) = client {
        let mut edns = Edns::new();
        edns.set_max_payload(ADVERTISED_PAYLOAD);
        edns.set_dnssec_ok(client.flags().dnssec_ok);
        response.set_edns(edns);
    }
}

/// The one question of a query we answer, or the response code declining it: BADVERS for an EDNS version
/// above 0, NOTIMP for another opcode, FORMERR unless there is exactly one question, REFUSED for a class
/// other than IN.
fn the_question(request: &Message) -> Result<&Query, ResponseCode> {
    if request.edns.as_ref().is_some_and(|edns| edns.version() > 0) {
        return Err(ResponseCode::BADVERS);
    }
    if request.metadata.op_code != OpCode::Query {
        return Err(ResponseCode::NotImp);
    }
    let [query] = request.queries.as_slice() else {
        return Err(ResponseCode::FormErr);
    };
    if query.query_class() != DNSClass::IN {
        return Err(ResponseCode::Refused);
    }
    Ok(query)
}

/// `response` with `rcode`, as the reply.
fn refuse(mut response: Message, rcode: ResponseCode, limit: usize) -> Reply {
    response.metadata.response_code = rcode;
    Reply::One(response, limit)
}

/// How an IXFR for a zone's apex from an allow-listed client is answered (RFC 1995 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IxfrAnswer {
    /// One SOA, our current version: the client is as new as we are, or asked over UDP (which tells a
    /// client that is behind to come back over TCP).
    Current,
    /// The difference from the client's serial.
    Incremental(u32),
    /// As an AXFR would be: the whole zone, or refused.
    AsAxfr,
}

/// The [`IxfrAnswer`] for a client at serial `theirs` (none: it sent no SOA) when ours is `ours`; `allowed`
/// says whether it may have a transfer at all.
fn ixfr_answer(theirs: Option<u32>, ours: u32, transport: Transport, allowed: bool) -> IxfrAnswer {
    let up_to_date = theirs.is_some_and(|theirs| !serial_lt(theirs, ours));
    if up_to_date || transport == Transport::Udp {
        return IxfrAnswer::Current;
    }
    match theirs {
        Some(serial) if allowed => IxfrAnswer::Incremental(serial),
        _ => IxfrAnswer::AsAxfr,
    }
}

/// The serial of the SOA an IXFR request carries in its authority section (the client's version).
fn client_serial(request: &Message) -> Option<u32> {
    request.authorities.iter().find_map(|r| match r.data {
        hickory_proto::rr::RData::SOA(ref soa) => Some(soa.serial),
        _ => None,
    })
}

/// A zone's records as an AXFR (or an IXFR of the whole zone) sends them: with the SOA again at the end
/// (RFC 5936).
fn whole_zone(mut records: Vec<Record>) -> Vec<Record> {
    if let Some(soa) = records.first().cloned() {
        records.push(soa);
    }
    records
}

/// `records` as the answers of transfer messages of [`TRANSFER_CHUNK`] records each, repeating the header
/// and question of `template`.
fn transfer_messages(template: &Message, records: Vec<Record>) -> Vec<Vec<u8>> {
    records
        .chunks(TRANSFER_CHUNK)
        .filter_map(|chunk| {
            let mut message = template.clone();
            message.metadata.authoritative = true;
            message.answers = chunk.to_vec();
            message.to_vec().ok()
        })
        .collect()
}

fn labels_of(response: &Message, transport: Transport) -> QueryLabels {
    QueryLabels {
        transport: transport.label(),
        qtype: response
            .queries
            .first()
            .map_or("none", |q| qtype_label(q.query_type())),
        rcode: rcode_label(response.metadata.response_code),
    }
}

/// RFC 1982 serial arithmetic: whether `a` is older than `b`.
fn serial_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 1 << 31
}

/// The size limit for a response: the client's EDNS buffer size over UDP (at least 512, at most
/// [`ADVERTISED_PAYLOAD`]), 512 without EDNS, and the 16-bit length prefix over TCP.
fn size_limit(edns: Option<&Edns>, transport: Transport) -> usize {
    match transport {
        Transport::Tcp => usize::from(u16::MAX),
        // Never above what we advertise, whatever the client claims: larger datagrams go out as IP
        // fragments, which are dropped on many paths and spoofable (the 2020 DNS Flag Day value).
        Transport::Udp => edns.map_or(PLAIN_UDP_LIMIT, |e| {
            usize::from(e.max_payload().min(ADVERTISED_PAYLOAD)).max(PLAIN_UDP_LIMIT)
        }),
    }
}

/// Encodes `response`; one that exceeds `limit` is replaced by its header and question with TC set, so the
/// client retries over TCP.
fn encode(response: &Message, transport: Transport, limit: usize) -> Option<Vec<u8>> {
    let bytes = response.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    let mut short = response.truncate();
    if transport == Transport::Tcp {
        // Cannot be framed; a SERVFAIL tells the client instead of silence.
        short.metadata.truncation = false;
        short.metadata.response_code = ResponseCode::ServFail;
    }
    let bytes = short.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    // The echoed questions alone are too large (a request with many, refused as NOTIMP or FORMERR): the
    // header alone, never more than the client takes (found by fuzz/ dns_request).
    short.queries.clear();
    short.to_vec().ok()
}

/// A bounded set of metric label values, so unusual types cannot blow up the series count.
fn qtype_label(qtype: RecordType) -> &'static str {
    match qtype {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::ANY => "ANY",
        RecordType::AXFR => "AXFR",
        RecordType::CAA => "CAA",
        RecordType::CNAME => "CNAME",
        RecordType::HTTPS => "HTTPS",
        RecordType::IXFR => "IXFR",
        RecordType::MX => "MX",
        RecordType::NS => "NS",
        RecordType::PTR => "PTR",
        RecordType::SOA => "SOA",
        RecordType::SRV => "SRV",
        RecordType::SVCB => "SVCB",
        RecordType::TXT => "TXT",
        _ => "other",
    }
}

fn rcode_label(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::BADVERS => "BADVERS",
        ResponseCode::NotAuth => "NOTAUTH",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::{Arc, RwLock};

    use hickory_proto::op::Query;
    use hickory_proto::rr::Record;
    use proto::skydns::KeyLayout;

    use super::*;
    use crate::metrics::Metrics;
    use crate::store::index::Index;
    use crate::store::record::StoredRecord;

    /// A name with enough A records that the answer exceeds 512 bytes.
    const MANY: usize = 40;
    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const SECONDARY: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn handler_with(index: Index) -> Handler {
        let metrics = Metrics::register(&mut prometheus_client::registry::Registry::default());
        let zones = Zones::new(vec![Name::from_ascii("test.org.").unwrap()]);
        let allow = vec!["127.0.0.0/8".parse().unwrap()];
        let forward = ForwardZones::new(vec![(
            Name::from_ascii("corp.example.").unwrap(),
            vec![([192, 0, 2, 53], 53).into()],
        )]);
        Handler::new(
            Arc::new(RwLock::new(index)),
            zones,
            allow,
            forward,
            metrics.queries,
            TsigSettings::default(),
        )
    }

    fn handler() -> Handler {
        let mut index = Index::new(KeyLayout::default(), &["test.org".to_owned()]);
        let mut records = vec![
            StoredRecord::parse(
                "/skydns/org/test/nginx/00000001",
                br#"{"host":"10.10.39.200"}"#,
                1,
            )
            .unwrap(),
        ];
        for i in 0..MANY {
            let key = format!("/skydns/org/test/big/{i:08x}");
            let value = format!(r#"{{"host":"10.20.0.{i}"}}"#);
            records.push(StoredRecord::parse(&key, value.as_bytes(), 1).unwrap());
        }
        index.replace_all(records, 9);
        handler_with(index)
    }

    fn query(name: &str, qtype: RecordType, edns_payload: Option<u16>) -> Message {
        let mut message = Message::query();
        message.metadata.id = 4242;
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some(payload) = edns_payload {
            let mut edns = Edns::new();
            edns.set_max_payload(payload);
            message.set_edns(edns);
        }
        message
    }

    fn exchange_all(
        handler: &Handler,
        request: &Message,
        transport: Transport,
        peer: IpAddr,
    ) -> Vec<Message> {
        messages(handler.handle(&request.to_vec().unwrap(), transport, peer))
            .iter()
            .map(|bytes| Message::from_vec(bytes).unwrap())
            .collect()
    }

    fn exchange(handler: &Handler, request: &Message, transport: Transport) -> Message {
        let mut all = exchange_all(handler, request, transport, CLIENT);
        assert_eq!(all.len(), 1);
        all.remove(0)
    }

    fn messages(outcome: Outcome) -> Vec<Vec<u8>> {
        match outcome {
            Outcome::Messages(messages) => messages,
            Outcome::Forward(upstreams) => panic!("forwarded to {upstreams:?}"),
            Outcome::Incremental(transfer) => panic!("incremental transfer {transfer:?}"),
        }
    }

    fn udp_bytes(outcome: UdpOutcome<'_>) -> Vec<u8> {
        match outcome {
            UdpOutcome::Answer(bytes) => bytes.to_vec(),
            other => panic!("no answer: {other:?}"),
        }
    }

    fn rcode(handler: &Handler, request: &Message, transport: Transport) -> ResponseCode {
        exchange(handler, request, transport).metadata.response_code
    }

    #[test]
    fn an_answer_echoes_id_question_and_rd_sets_aa_and_never_ra() {
        let handler = handler();
        let request = query("nginx.test.org.", RecordType::A, None);
        let response = exchange(&handler, &request, Transport::Udp);
        assert_eq!(response.metadata.id, 4242);
        assert_eq!(response.metadata.message_type, MessageType::Response);
        assert!(response.metadata.authoritative);
        assert!(response.metadata.recursion_desired);
        assert!(!response.metadata.recursion_available);
        assert_eq!(response.queries.len(), 1);
        assert_eq!(response.answers.len(), 1);
        assert!(response.edns.is_none(), "no OPT without one in the query");
    }

    #[test]
    fn udp_answers_larger_than_512_bytes_are_truncated_without_edns_and_complete_over_tcp() {
        let handler = handler();
        let request = query("big.test.org.", RecordType::A, None);
        let plain = exchange(&handler, &request, Transport::Udp);
        assert!(plain.metadata.truncation);
        assert!(plain.answers.is_empty());
        assert_eq!(plain.queries.len(), 1);

        let tcp = exchange(&handler, &request, Transport::Tcp);
        assert!(!tcp.metadata.truncation);
        assert_eq!(tcp.answers.len(), MANY);
    }

    #[test]
    fn edns_buffer_size_of_the_client_is_used_and_ours_advertised() {
        let handler = handler();
        let request = query("big.test.org.", RecordType::A, Some(4096));
        let response = exchange(&handler, &request, Transport::Udp);
        assert!(!response.metadata.truncation);
        assert_eq!(response.answers.len(), MANY);
        assert_eq!(response.edns.unwrap().max_payload(), ADVERTISED_PAYLOAD);
    }

    #[test]
    fn a_response_is_never_larger_than_the_query_allows_over_udp() {
        let handler = handler();
        for payload in [None, Some(512), Some(1232), Some(4096)] {
            let request = query("big.test.org.", RecordType::A, payload);
            let bytes =
                messages(handler.handle(&request.to_vec().unwrap(), Transport::Udp, CLIENT))
                    .remove(0);
            let limit = payload.map_or(512, usize::from);
            assert!(bytes.len() <= limit, "{payload:?}: {} bytes", bytes.len());
        }
    }

    #[test]
    fn udp_answers_stay_within_1232_bytes_whatever_buffer_the_client_claims() {
        // 2,064-byte answers went out as IP fragments to clients claiming a 4096-byte buffer.
        let mut index = Index::new(KeyLayout::default(), &["test.org".to_owned()]);
        let records = (0..150).map(|i| {
            let key = format!("/skydns/org/test/wide/{i:08x}");
            let value = format!(r#"{{"host":"10.40.{}.{}"}}"#, i / 256, i % 256);
            StoredRecord::parse(&key, value.as_bytes(), 1).unwrap()
        });
        index.replace_all(records, 9);
        let handler = handler_with(index);
        let request = query("wide.test.org.", RecordType::A, Some(4096));
        let udp =
            messages(handler.handle(&request.to_vec().unwrap(), Transport::Udp, CLIENT)).remove(0);
        assert!(udp.len() <= 1232, "{} bytes over UDP", udp.len());
        assert!(Message::from_vec(&udp).unwrap().metadata.truncation);
        let tcp = exchange(&handler, &request, Transport::Tcp);
        assert_eq!(tcp.answers.len(), 150, "complete over TCP");
    }

    fn ixfr(serial: u32) -> Message {
        let mut request = query("test.org.", RecordType::IXFR, None);
        let soa = hickory_proto::rr::rdata::SOA::new(
            Name::from_ascii("ns.dns.test.org.").unwrap(),
            Name::from_ascii("hostmaster.test.org.").unwrap(),
            serial,
            7200,
            1800,
            86400,
            30,
        );
        request.add_authority(Record::from_rdata(
            Name::from_ascii("test.org.").unwrap(),
            30,
            hickory_proto::rr::RData::SOA(soa),
        ));
        request
    }

    #[test]
    fn ixfr_from_a_current_secondary_or_over_udp_is_one_soa_and_otherwise_the_zone() {
        let handler = handler();
        let soa = exchange(
            &handler,
            &query("test.org.", RecordType::SOA, None),
            Transport::Udp,
        );
        let ours = match &soa.answers[0].data {
            hickory_proto::rr::RData::SOA(soa) => soa.serial,
            other => panic!("{other:?}"),
        };
        // RFC 1995 2: as new as we are (or newer, in serial arithmetic) gets our SOA alone.
        for serial in [ours, ours + 1] {
            let replies = exchange_all(&handler, &ixfr(serial), Transport::Tcp, SECONDARY);
            assert_eq!(replies.len(), 1, "serial {serial}");
            assert_eq!(replies[0].answers.len(), 1, "serial {serial}");
            assert_eq!(replies[0].answers[0].record_type(), RecordType::SOA);
        }
        // Behind: over TCP the difference from its version, read from etcd's history (see
        // `an_ixfr_sends_the_difference_from_the_secondarys_version`); over UDP our SOA, which sends the
        // client to TCP.
        let request = ixfr(ours - 1).to_vec().unwrap();
        let Outcome::Incremental(transfer) = handler.handle(&request, Transport::Tcp, SECONDARY)
        else {
            panic!("not an incremental transfer");
        };
        assert_eq!(transfer.revision(), i64::from(ours - 1));
        let udp = exchange_all(&handler, &ixfr(ours - 1), Transport::Udp, SECONDARY);
        assert_eq!(udp.len(), 1);
        assert_eq!(udp[0].answers.len(), 1);
        assert_eq!(udp[0].answers[0].record_type(), RecordType::SOA);
        // Not on the allow-list: refused, whatever its serial.
        let stranger = exchange_all(&handler, &ixfr(ours), Transport::Tcp, CLIENT);
        assert_eq!(stranger[0].metadata.response_code, ResponseCode::Refused);
    }

    fn answers_of(replies: Vec<Vec<u8>>) -> Vec<Record> {
        replies
            .iter()
            .flat_map(|bytes| Message::from_vec(bytes).unwrap().answers)
            .collect()
    }

    fn serials_and_names(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| match &r.data {
                hickory_proto::rr::RData::SOA(soa) => format!("SOA {}", soa.serial),
                data => format!("{} {data}", r.name),
            })
            .collect()
    }

    fn a_record(key: &str, host: &str, revision: i64) -> StoredRecord {
        StoredRecord::parse(key, format!(r#"{{"host":"{host}"}}"#).as_bytes(), revision).unwrap()
    }

    #[test]
    fn an_ixfr_sends_the_difference_from_the_secondarys_version() {
        // Version 5: a and b. Now (revision 9): a, b changed, c added.
        let zone = |records: Vec<StoredRecord>, revision| {
            let mut index = Index::new(KeyLayout::default(), &["test.org".to_owned()]);
            index.replace_all(records, revision);
            index
        };
        let old = zone(
            vec![
                a_record("/skydns/org/test/a", "10.0.0.1", 4),
                a_record("/skydns/org/test/b", "10.0.0.2", 5),
            ],
            5,
        );
        let now = zone(
            vec![
                a_record("/skydns/org/test/a", "10.0.0.1", 4),
                a_record("/skydns/org/test/b", "10.0.0.9", 8),
                a_record("/skydns/org/test/c", "10.0.0.3", 9),
            ],
            9,
        );
        let handler = handler_with(now);
        let request = ixfr(5).to_vec().unwrap();
        let Outcome::Incremental(transfer) = handler.handle(&request, Transport::Tcp, SECONDARY)
        else {
            panic!("not an incremental transfer");
        };
        assert_eq!(transfer.revision(), 5);
        let answer = answers_of(handler.incremental(transfer, Some(old)));
        assert_eq!(
            serials_and_names(&answer),
            [
                "SOA 9",
                "SOA 5",
                "b.test.org. 10.0.0.2",
                "SOA 9",
                "b.test.org. 10.0.0.9",
                "c.test.org. 10.0.0.3",
                "SOA 9",
            ]
        );
    }

    #[test]
    fn an_ixfr_whose_version_etcd_no_longer_has_gets_the_whole_zone() {
        let handler = handler();
        let request = ixfr(0).to_vec().unwrap();
        let Outcome::Incremental(transfer) = handler.handle(&request, Transport::Tcp, SECONDARY)
        else {
            panic!("not an incremental transfer");
        };
        let answer = answers_of(handler.incremental(transfer, None));
        let soas = answer
            .iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .count();
        assert_eq!(soas, 2, "an AXFR-style answer: SOA first and last only");
        let axfr = query("test.org.", RecordType::AXFR, None);
        let whole: Vec<Record> = exchange_all(&handler, &axfr, Transport::Tcp, SECONDARY)
            .into_iter()
            .flat_map(|m| m.answers)
            .collect();
        assert_eq!(answer, whole, "what an AXFR sends");
    }

    #[test]
    fn with_a_transfer_key_only_transfers_signed_with_it_are_answered_and_every_message_is_signed()
    {
        let secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==";
        let keys = tsig::Keyring::new(
            tsig::parse_keys(&format!(
                "hmac-sha256:transfer:{secret}\nhmac-sha256:other:{secret}"
            ))
            .unwrap(),
        )
        .unwrap();
        let transfer = keys
            .get(&Name::from_ascii("transfer.").unwrap())
            .unwrap()
            .clone();
        let other = keys
            .get(&Name::from_ascii("other.").unwrap())
            .unwrap()
            .clone();
        let mut handler = handler();
        handler.tsig = TsigSettings {
            keys,
            transfer_keys: vec![Name::from_ascii("transfer.").unwrap()],
            notify_key: None,
        };
        let axfr = |key: Option<&hickory_proto::rr::TSigner>| {
            let mut request = query("test.org.", RecordType::AXFR, None);
            let verifier = key.and_then(|k| tsig::sign_request(k, &mut request, tsig::now()));
            let replies =
                messages(handler.handle(&request.to_vec().unwrap(), Transport::Tcp, SECONDARY));
            (replies, verifier)
        };

        let (replies, verifier) = axfr(Some(&transfer));
        let mut verifier = verifier.unwrap();
        assert!(!replies.is_empty());
        for reply in &replies {
            verifier
                .verify(reply)
                .expect("each message signed, in a chain");
        }
        let records = answers_of(replies);
        assert_eq!(records.first().unwrap().record_type(), RecordType::SOA);

        let (unsigned, _) = axfr(None);
        let unsigned = Message::from_vec(&unsigned[0]).unwrap();
        assert_eq!(unsigned.metadata.response_code, ResponseCode::Refused);
        // Signed, validly, but with a key that may not transfer.
        let (wrong, _) = axfr(Some(&other));
        let wrong = Message::from_vec(&wrong[0]).unwrap();
        assert_eq!(wrong.metadata.response_code, ResponseCode::Refused);
        // A query signed with the key gets a signed answer (a secondary's SOA check).
        let mut soa = query("test.org.", RecordType::SOA, Some(1232));
        let mut verifier = tsig::sign_request(&transfer, &mut soa, tsig::now()).unwrap();
        let reply = messages(handler.handle(&soa.to_vec().unwrap(), Transport::Udp, SECONDARY));
        verifier.verify(&reply[0]).expect("signed SOA answer");
    }

    #[test]
    fn echoed_questions_too_large_for_the_datagram_leave_the_header_alone_within_512_bytes() {
        let handler = handler();
        let mut request = Message::query();
        request.metadata.id = 0x0efd;
        request.metadata.op_code = OpCode::Status;
        for i in 0..40 {
            let name = format!("question-number-{i:02}-of-many.test.org.");
            request.add_query(Query::query(
                Name::from_ascii(&name).unwrap(),
                RecordType::A,
            ));
        }
        let replies = messages(handler.handle(&request.to_vec().unwrap(), Transport::Udp, CLIENT));
        assert!(replies[0].len() <= 512, "{} bytes", replies[0].len());
        let response = Message::from_vec(&replies[0]).unwrap();
        assert_eq!(response.metadata.id, 0x0efd);
        assert!(response.metadata.truncation);
        assert_eq!(response.metadata.response_code, ResponseCode::NotImp);
    }

    #[test]
    fn unknown_edns_versions_get_badvers() {
        let handler = handler();
        let mut request = query("nginx.test.org.", RecordType::A, Some(1232));
        let mut edns = request.edns.take().unwrap();
        edns.set_version(1);
        request.set_edns(edns);
        let response = exchange(&handler, &request, Transport::Udp);
        // Code 16 is BADVERS with OPT and BADSIG with TSIG; the decoder names it BADSIG.
        assert_eq!(u16::from(response.metadata.response_code), 16);
        assert!(response.edns.is_some());
    }

    #[test]
    fn other_opcodes_and_classes_are_declined() {
        let handler = handler();
        let mut update = query("test.org.", RecordType::SOA, None);
        update.metadata.op_code = OpCode::Update;
        assert_eq!(
            rcode(&handler, &update, Transport::Udp),
            ResponseCode::NotImp
        );

        let mut chaos = query("version.bind.", RecordType::TXT, None);
        chaos.queries[0].set_query_class(DNSClass::CH);
        assert_eq!(
            rcode(&handler, &chaos, Transport::Udp),
            ResponseCode::Refused
        );
    }

    #[test]
    fn zone_transfers_go_to_allowed_secondaries_over_tcp_only_soa_first_and_last() {
        // More records than fit one transfer message.
        let names = 3 * TRANSFER_CHUNK / 2;
        let mut index = Index::new(KeyLayout::default(), &["test.org".to_owned()]);
        let records = (0..names).map(|i| {
            let key = format!("/skydns/org/test/host{i}/0000abcd");
            let value = format!(
                r#"{{"host":"10.30.{}.{}","targetstrip":1}}"#,
                i / 256,
                i % 256
            );
            StoredRecord::parse(&key, value.as_bytes(), 1).unwrap()
        });
        index.replace_all(records, 9);
        let handler = handler_with(index);
        let axfr = query("test.org.", RecordType::AXFR, None);
        let messages = exchange_all(&handler, &axfr, Transport::Tcp, SECONDARY);
        let records: Vec<&Record> = messages.iter().flat_map(|m| m.answers.iter()).collect();
        assert!(
            messages.len() > 1,
            "{} records in one message",
            records.len()
        );
        assert!(
            messages
                .iter()
                .all(|m| m.metadata.authoritative && m.metadata.id == 4242)
        );
        assert_eq!(records.first().unwrap().record_type(), RecordType::SOA);
        assert_eq!(records.last().unwrap().record_type(), RecordType::SOA);
        let addresses = records
            .iter()
            .filter(|r| r.record_type() == RecordType::A)
            .count();
        assert_eq!(addresses, names, "one A per name, none for suffix labels");

        let refused = |transport, peer, qname: &str| {
            let request = query(qname, RecordType::AXFR, None);
            let all = exchange_all(&handler, &request, transport, peer);
            all.len() == 1 && all[0].metadata.response_code == ResponseCode::Refused
        };
        assert!(
            refused(Transport::Tcp, CLIENT, "test.org."),
            "not on the allow-list"
        );
        assert!(
            refused(Transport::Udp, SECONDARY, "test.org."),
            "never over UDP"
        );
        assert!(
            refused(Transport::Tcp, SECONDARY, "host1.test.org."),
            "only whole zones"
        );
    }

    #[test]
    fn malformed_messages_get_formerr_and_non_queries_are_dropped() {
        let handler = handler();
        // A valid header claiming one question, then garbage.
        let mut garbage = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        garbage.extend_from_slice(&[0xff; 5]);
        let replies = messages(handler.handle(&garbage, Transport::Udp, CLIENT));
        let response = Message::from_vec(&replies[0]).unwrap();
        assert_eq!(response.metadata.id, 0x1234);
        assert_eq!(response.metadata.response_code, ResponseCode::FormErr);

        assert!(
            messages(handler.handle(&[1, 2, 3], Transport::Udp, CLIENT)).is_empty(),
            "shorter than a header"
        );
        let mut reply = query("nginx.test.org.", RecordType::A, None);
        reply.metadata.message_type = MessageType::Response;
        let bytes = reply.to_vec().unwrap();
        assert!(
            messages(handler.handle(&bytes, Transport::Udp, CLIENT)).is_empty(),
            "a response"
        );

        let mut two = query("nginx.test.org.", RecordType::A, None);
        two.add_query(Query::query(
            Name::from_ascii("big.test.org.").unwrap(),
            RecordType::A,
        ));
        assert_eq!(rcode(&handler, &two, Transport::Udp), ResponseCode::FormErr);
    }

    #[test]
    fn cached_udp_answers_carry_the_new_id_and_are_dropped_when_etcd_changes() {
        let handler = handler();
        let mut cache = ResponseCache::default();
        let mut request = query("nginx.test.org.", RecordType::A, None);
        let first = udp_bytes(handler.handle_udp(&request.to_vec().unwrap(), CLIENT, &mut cache));
        request.metadata.id = 7;
        let second = udp_bytes(handler.handle_udp(&request.to_vec().unwrap(), CLIENT, &mut cache));
        assert_eq!(
            cache.entries.len(),
            1,
            "the second answer came from the cache"
        );
        assert_eq!(Message::from_vec(&second).unwrap().metadata.id, 7);
        assert_eq!(first[2..], second[2..]);

        {
            let mut index = handler.index.write().unwrap();
            let changed = br#"{"host":"10.10.39.250"}"#;
            let record =
                StoredRecord::parse("/skydns/org/test/nginx/00000001", changed, 10).unwrap();
            index.put(record, 10);
        }
        let third = udp_bytes(handler.handle_udp(&request.to_vec().unwrap(), CLIENT, &mut cache));
        let answer = Message::from_vec(&third).unwrap();
        assert_eq!(answer.answers[0].data.to_string(), "10.10.39.250");
    }

    #[test]
    fn a_flood_of_padded_queries_is_one_cache_entry_and_distinct_names_stay_within_the_budget() {
        let handler = handler();
        let mut cache = ResponseCache::with_budget(64 << 10);
        let request = query("nginx.test.org.", RecordType::A, Some(1232))
            .to_vec()
            .unwrap();
        for i in 0..200u32 {
            let mut padded = request.clone();
            padded.extend(std::iter::repeat_n((i % 251) as u8, 9000));
            padded.extend_from_slice(&i.to_be_bytes());
            let answer = udp_bytes(handler.handle_udp(&padded, CLIENT, &mut cache));
            assert_eq!(Message::from_vec(&answer).unwrap().answers.len(), 1);
        }
        assert_eq!(cache.entries.len(), 1);
        assert!(cache.bytes < 1024, "{} bytes", cache.bytes);
        for i in 0..2_000u32 {
            let name = format!("n{i}.test.org.");
            let request = query(&name, RecordType::A, Some(1232)).to_vec().unwrap();
            handler.handle_udp(&request, CLIENT, &mut cache);
            assert!(cache.bytes <= (64 << 10) + 1024, "{} bytes", cache.bytes);
        }
    }

    #[test]
    fn rotated_answers_are_not_cached() {
        let handler = handler();
        let mut cache = ResponseCache::default();
        let request = query("big.test.org.", RecordType::A, Some(4096))
            .to_vec()
            .unwrap();
        let first = udp_bytes(handler.handle_udp(&request, CLIENT, &mut cache));
        let second = udp_bytes(handler.handle_udp(&request, CLIENT, &mut cache));
        assert!(cache.entries.is_empty());
        assert_ne!(first, second, "the address order rotates");
    }

    #[test]
    fn only_configured_zones_are_forwarded_and_never_from_the_cache() {
        let handler = handler();
        let request = query("host.corp.example.", RecordType::A, None)
            .to_vec()
            .unwrap();
        let upstream: SocketAddr = ([192, 0, 2, 53], 53).into();
        assert_eq!(
            handler.handle(&request, Transport::Tcp, CLIENT),
            Outcome::Forward(vec![upstream])
        );
        let mut cache = ResponseCache::default();
        for _ in 0..2 {
            assert_eq!(
                handler.handle_udp(&request, CLIENT, &mut cache),
                UdpOutcome::Forward(vec![upstream])
            );
        }
        let other = query("example.com.", RecordType::A, None);
        assert_eq!(
            rcode(&handler, &other, Transport::Udp),
            ResponseCode::Refused
        );
    }

    #[test]
    fn before_the_first_etcd_read_zone_questions_get_servfail_not_nxdomain() {
        let handler = handler_with(Index::new(KeyLayout::default(), &["test.org".to_owned()]));
        let inside = query("nginx.test.org.", RecordType::A, None);
        assert_eq!(
            rcode(&handler, &inside, Transport::Udp),
            ResponseCode::ServFail
        );
        let outside = query("example.com.", RecordType::A, None);
        assert_eq!(
            rcode(&handler, &outside, Transport::Udp),
            ResponseCode::Refused
        );
    }

    #[test]
    fn the_question_declines_edns_versions_opcodes_question_counts_and_classes_in_that_order() {
        let question = |request: &Message| the_question(request).map(|q| q.name().to_ascii());
        let plain = query("nginx.test.org.", RecordType::A, Some(1232));
        assert_eq!(question(&plain), Ok("nginx.test.org.".to_owned()));

        let mut badvers = plain.clone();
        let mut edns = badvers.edns.take().unwrap();
        edns.set_version(1);
        badvers.set_edns(edns);
        badvers.metadata.op_code = OpCode::Update;
        assert_eq!(question(&badvers), Err(ResponseCode::BADVERS));

        let mut notify = plain.clone();
        notify.metadata.op_code = OpCode::Notify;
        notify.queries.clear();
        assert_eq!(question(&notify), Err(ResponseCode::NotImp));

        let mut none = plain.clone();
        none.queries.clear();
        assert_eq!(question(&none), Err(ResponseCode::FormErr));

        let mut chaos = plain;
        chaos.queries[0].set_query_class(DNSClass::CH);
        assert_eq!(question(&chaos), Err(ResponseCode::Refused));
    }

    #[test]
    fn an_ixfr_is_one_soa_when_current_or_over_udp_a_difference_when_allowed_else_as_an_axfr() {
        use Transport::{Tcp, Udp};
        assert_eq!(ixfr_answer(Some(7), 7, Tcp, true), IxfrAnswer::Current);
        // Serial arithmetic (RFC 1982): a serial just past a wrap is newer than ours.
        assert_eq!(
            ixfr_answer(Some(2), u32::MAX, Tcp, true),
            IxfrAnswer::Current
        );
        assert_eq!(ixfr_answer(Some(5), 7, Udp, true), IxfrAnswer::Current);
        assert_eq!(ixfr_answer(None, 7, Udp, false), IxfrAnswer::Current);
        assert_eq!(
            ixfr_answer(Some(5), 7, Tcp, true),
            IxfrAnswer::Incremental(5)
        );
        assert_eq!(ixfr_answer(Some(5), 7, Tcp, false), IxfrAnswer::AsAxfr);
        assert_eq!(ixfr_answer(None, 7, Tcp, true), IxfrAnswer::AsAxfr);
    }

    #[test]
    fn short_requests_and_responses_are_dropped_and_unparsable_ones_keep_their_id() {
        assert_eq!(parse_query(&[0; 11]).unwrap_err(), Unanswered::Dropped);
        let mut response = vec![0xab, 0xcd, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse_query(&response).unwrap_err(), Unanswered::Dropped);
        response[2] = 0;
        response[5] = 1; // one question, missing
        assert_eq!(
            parse_query(&response).unwrap_err(),
            Unanswered::Malformed(0xabcd)
        );
    }
}
