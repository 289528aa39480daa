//! One DNS message in, at most one out: parsing, the protocol rules around [`lookup::resolve`] (opcode,
//! class, EDNS, truncation, zone transfers), and encoding. No sockets here, so it is tested on bytes.

use std::sync::PoisonError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RecordType};

use crate::lookup::{self, Zones};
use crate::metrics::{QueryLabels, QueryMetrics};
use crate::store::SharedIndex;

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
    rotation: AtomicUsize,
    metrics: QueryMetrics,
}

impl Handler {
    /// A handler serving `zones` from `index`.
    pub fn new(index: SharedIndex, zones: Zones, metrics: QueryMetrics) -> Self {
        Self {
            index,
            zones,
            rotation: AtomicUsize::new(0),
            metrics,
        }
    }

    /// The response to `request`, or `None` when it must be dropped (not a DNS query at all, or a
    /// response: answering those could loop or amplify).
    pub fn handle(&self, request: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let started = Instant::now();
        let Some((response, limit)) = self.respond(request, transport) else {
            self.metrics.dropped.inc();
            return None;
        };
        let bytes = encode(&response, transport, limit)?;
        let qtype = response
            .queries
            .first()
            .map_or_else(|| "none".to_owned(), |q| qtype_label(q.query_type()));
        self.metrics
            .queries
            .get_or_create(&QueryLabels {
                transport: transport.label(),
                qtype,
                rcode: rcode_label(response.metadata.response_code),
            })
            .inc();
        self.metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
        Some(bytes)
    }

    /// The response and the size it must fit in.
    fn respond(&self, request: &[u8], transport: Transport) -> Option<(Message, usize)> {
        // 12 bytes of header are needed to address any reply; a set QR bit marks a response.
        if request.len() < 12 || request[2] & 0x80 != 0 {
            return None;
        }
        let id = u16::from_be_bytes([request[0], request[1]]);
        let request = match Message::from_vec(request) {
            Ok(message) => message,
            Err(_) => {
                let formerr = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
                return Some((formerr, PLAIN_UDP_LIMIT));
            }
        };
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        let limit = size_limit(request.edns.as_ref(), transport);
        let mut response = Message::response(id, request.metadata.op_code);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.checking_disabled = request.metadata.checking_disabled;
        response.add_queries(request.queries.iter().cloned());
        if let Some(client_edns) = &request.edns {
            let mut edns = Edns::new();
            edns.set_max_payload(ADVERTISED_PAYLOAD);
            edns.set_dnssec_ok(client_edns.flags().dnssec_ok);
            response.set_edns(edns);
            if client_edns.version() > 0 {
                response.metadata.response_code = ResponseCode::BADVERS;
                return Some((response, limit));
            }
        }
        if request.metadata.op_code != OpCode::Query {
            response.metadata.response_code = ResponseCode::NotImp;
            return Some((response, limit));
        }
        let [query] = request.queries.as_slice() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return Some((response, limit));
        };
        if query.query_class() != DNSClass::IN {
            response.metadata.response_code = ResponseCode::Refused;
            return Some((response, limit));
        }
        if matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR) {
            // Zone transfers go only to allow-listed secondaries, over TCP; none is configured.
            response.metadata.response_code = ResponseCode::Refused;
            return Some((response, limit));
        }
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        let answer = {
            let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
            lookup::resolve(
                &index,
                &self.zones,
                query.name(),
                query.query_type(),
                rotation,
            )
        };
        response.metadata.response_code = answer.rcode;
        response.metadata.authoritative = answer.authoritative;
        response.answers = answer.answers;
        response.authorities = answer.authorities;
        response.additionals = answer.additionals;
        Some((response, limit))
    }
}

/// The size limit for a response: the client's EDNS buffer size over UDP (at least 512), 512 without EDNS,
/// and the 16-bit length prefix over TCP.
fn size_limit(edns: Option<&Edns>, transport: Transport) -> usize {
    match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => edns.map_or(PLAIN_UDP_LIMIT, |e| {
            usize::from(e.max_payload()).max(PLAIN_UDP_LIMIT)
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
    if transport == Transport::Tcp {
        // Cannot be framed; a SERVFAIL tells the client instead of silence.
        let mut failure = response.truncate();
        failure.metadata.truncation = false;
        failure.metadata.response_code = ResponseCode::ServFail;
        return failure.to_vec().ok();
    }
    response.truncate().to_vec().ok()
}

fn qtype_label(qtype: RecordType) -> String {
    match qtype {
        RecordType::A
        | RecordType::AAAA
        | RecordType::ANY
        | RecordType::AXFR
        | RecordType::CNAME
        | RecordType::IXFR
        | RecordType::MX
        | RecordType::NS
        | RecordType::PTR
        | RecordType::SOA
        | RecordType::SRV
        | RecordType::TXT
        | RecordType::HTTPS
        | RecordType::SVCB
        | RecordType::CAA => qtype.to_string(),
        _ => "other".to_owned(),
    }
}

fn rcode_label(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::NoError => "NOERROR".to_owned(),
        ResponseCode::FormErr => "FORMERR".to_owned(),
        ResponseCode::ServFail => "SERVFAIL".to_owned(),
        ResponseCode::NXDomain => "NXDOMAIN".to_owned(),
        ResponseCode::NotImp => "NOTIMP".to_owned(),
        ResponseCode::Refused => "REFUSED".to_owned(),
        ResponseCode::BADVERS => "BADVERS".to_owned(),
        other => u16::from(other).to_string(),
    }
}
