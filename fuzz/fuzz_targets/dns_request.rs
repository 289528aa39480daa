//! One DNS request datagram or TCP message, through dns-server's whole request-to-answer path
//! (`handler::Handler`: parsing, TSIG, EDNS, opcode and class rules, the lookup in a small in-memory zone,
//! zone transfers, forwarding decisions, truncation, encoding, and the per-thread UDP answer cache).
//!
//! Input: one control byte, then the request. Control bits: 0 TCP (else UDP); 1 from the allow-listed
//! secondary (else a stranger); 2 sign the request with the server's TSIG key when it parses; 3 the next
//! byte is the length of a first request that warms the UDP cache before this one; 4 an IXFR finds the
//! secondary's version still in etcd's history.
//!
//! Asserts: nothing panics; a response (QR set) or a runt is dropped; anything else gets at least one
//! message, each a parseable response with the request's ID, never with RA, echoing RD and the question;
//! over UDP one message within 512 bytes (no EDNS) or the client's buffer capped at 1232; a signed request
//! gets answers that verify with the request's key; and the UDP cache never changes an answer: after any
//! other request warmed it, the cached path gives the same answer as the uncached one.
#![no_main]

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, RwLock};

use dns_server::config::TsigSettings;
use dns_server::forward::ForwardZones;
use dns_server::handler::{Handler, Outcome, ResponseCache, Transport, UdpOutcome};
use dns_server::lookup::Zones;
use dns_server::metrics::Metrics;
use dns_server::store::index::Index;
use dns_server::store::record::StoredRecord;
use dns_server::tsig;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{Name, TSigner};
use libfuzzer_sys::fuzz_target;
use proto::skydns::KeyLayout;

const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const SECONDARY: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The zone `test.org` as etcd holds it: every kind of record the server answers, a name too large for
/// 512 bytes, a CNAME loop, a wildcard, groups, and name servers with glue.
const RECORDS: &[(&str, &str)] = &[
    (
        "/skydns/org/test/nginx/00000001",
        r#"{"host":"10.10.39.200"}"#,
    ),
    (
        "/skydns/org/test/nginx/00000002",
        r#"{"host":"fd10:39::200","ttl":60}"#,
    ),
    (
        "/skydns/org/test/www/00000001",
        r#"{"host":"nginx.test.org"}"#,
    ),
    (
        "/skydns/org/test/loop/00000001",
        r#"{"host":"loop2.test.org"}"#,
    ),
    (
        "/skydns/org/test/loop2/00000001",
        r#"{"host":"loop.test.org"}"#,
    ),
    ("/skydns/org/test/out/00000001", r#"{"host":"example.com"}"#),
    (
        "/skydns/org/test/tcp/_http/_web/1",
        r#"{"host":"nginx.test.org","port":80,"priority":10,"weight":5}"#,
    ),
    (
        "/skydns/org/test/tcp/_http/_web/2",
        r#"{"host":"10.10.39.201","port":8080}"#,
    ),
    (
        "/skydns/org/test/mail/1",
        r#"{"host":"nginx.test.org","mail":true,"priority":10}"#,
    ),
    (
        "/skydns/org/test/mail/2",
        r#"{"host":"10.10.39.202","mail":true}"#,
    ),
    ("/skydns/org/test/txt/1", r#"{"text":"hello world"}"#),
    ("/skydns/org/test/wild/*/1", r#"{"host":"10.0.0.9"}"#),
    (
        "/skydns/org/test/group/1",
        r#"{"host":"10.0.1.1","group":"g1"}"#,
    ),
    (
        "/skydns/org/test/group/2",
        r#"{"host":"10.0.1.2","group":"g2"}"#,
    ),
    (
        "/skydns/org/test/strip/x/1",
        r#"{"host":"10.0.2.1","targetstrip":1}"#,
    ),
    ("/skydns/org/test/dns/ns/ns1", r#"{"host":"10.0.3.1"}"#),
    (
        "/skydns/org/test/dns/ns/ns2",
        r#"{"host":"ns.example.net"}"#,
    ),
];

struct World {
    handler: Handler,
    /// The zone as it was before the last write, for incremental transfers.
    old: Index,
    key: TSigner,
}

fn world() -> World {
    let mut old = Index::new(KeyLayout::default(), &["test.org".to_owned()]);
    let parse = |(key, value): &(&str, &str)| StoredRecord::parse(key, value.as_bytes(), 5);
    let records: Vec<StoredRecord> = RECORDS.iter().map(parse).collect::<Result<_, _>>().unwrap();
    old.replace_all(records[..8].to_vec(), 5);
    let mut index = old.clone();
    let mut all = records;
    for i in 0..40 {
        let value = format!(r#"{{"host":"10.20.0.{i}"}}"#);
        all.push(
            StoredRecord::parse(
                &format!("/skydns/org/test/big/{i:08x}"),
                value.as_bytes(),
                9,
            )
            .unwrap(),
        );
    }
    let long = format!(r#"{{"text":"{}"}}"#, "x".repeat(700));
    all.push(StoredRecord::parse("/skydns/org/test/long/1", long.as_bytes(), 9).unwrap());
    index.replace_all(all, 9);

    let secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==";
    let keys = tsig::Keyring::new(tsig::parse_keys(&format!("hmac-sha256:fuzz:{secret}")).unwrap())
        .unwrap();
    let key = keys
        .get(&Name::from_ascii("fuzz.").unwrap())
        .unwrap()
        .clone();
    let metrics = Metrics::register(&mut prometheus_client::registry::Registry::default());
    let forward = ForwardZones::new(vec![(
        Name::from_ascii("corp.example.").unwrap(),
        vec![([192, 0, 2, 53], 53).into()],
    )]);
    let handler = Handler::new(
        Arc::new(RwLock::new(index)),
        Zones::new(vec![Name::from_ascii("test.org.").unwrap()]),
        vec!["127.0.0.0/8".parse().unwrap()],
        forward,
        metrics.queries,
        TsigSettings {
            keys,
            transfer_keys: Vec::new(),
            notify_key: None,
        },
    );
    World { handler, old, key }
}

thread_local! {
    static WORLD: RefCell<Option<World>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let (warm, request) = match rest.split_first() {
        Some((&length, rest)) if control & 8 != 0 => {
            rest.split_at(usize::from(length).min(rest.len()))
        }
        _ => (&[][..], rest),
    };
    WORLD.with(|world| {
        let mut world = world.borrow_mut();
        let world = world.get_or_insert_with(self::world);
        exchange(world, control, warm, request);
    });
});

fn exchange(world: &World, control: u8, warm: &[u8], request: &[u8]) {
    let transport = if control & 1 != 0 {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let peer = if control & 2 != 0 {
        SECONDARY
    } else {
        STRANGER
    };
    let mut request = request.to_vec();
    let mut verifier = None;
    if control & 4 != 0
        && let Ok(mut message) = Message::from_vec(&request)
        && message.signature().is_none()
        && let Some(v) = tsig::sign_request(&world.key, &mut message, tsig::now())
        && let Ok(bytes) = message.to_vec()
    {
        request = bytes;
        verifier = Some(v);
    }
    let parsed = Message::from_vec(&request).ok();
    let replies = match world.handler.handle(&request, transport, peer) {
        Outcome::Messages(messages) => messages,
        Outcome::Forward(upstreams) => {
            let parsed = parsed
                .as_ref()
                .expect("only a parsed question is forwarded");
            assert!(!upstreams.is_empty());
            let zone = Name::from_ascii("corp.example.").unwrap();
            assert!(parsed.queries.iter().all(|q| zone.zone_of(q.name())));
            return;
        }
        Outcome::Incremental(transfer) => {
            assert_eq!(transport, Transport::Tcp, "an IXFR over UDP is one SOA");
            assert_eq!(peer, SECONDARY, "an IXFR for a stranger");
            let old = (control & 16 != 0).then(|| world.old.clone());
            world.handler.incremental(transfer, old)
        }
    };
    if request.len() < 12 || request[2] & 0x80 != 0 {
        assert!(replies.is_empty(), "a runt or a response was answered");
        return;
    }
    assert!(!replies.is_empty(), "a query got no answer");
    let id = u16::from_be_bytes([request[0], request[1]]);
    let limit = match (&parsed, transport) {
        (_, Transport::Tcp) => usize::from(u16::MAX),
        (Some(message), Transport::Udp) => message
            .edns
            .as_ref()
            .map_or(512, |e| usize::from(e.max_payload().min(1232)).max(512)),
        (None, Transport::Udp) => 512,
    };
    if transport == Transport::Udp {
        assert_eq!(replies.len(), 1, "one datagram answers one datagram");
    }
    for reply in &replies {
        assert!(reply.len() <= limit, "{} bytes, limit {limit}", reply.len());
        let response = Message::from_vec(reply).expect("an answer we cannot parse");
        assert_eq!(response.metadata.id, id);
        assert_eq!(response.metadata.message_type, MessageType::Response);
        assert!(!response.metadata.recursion_available);
        if let Some(request) = &parsed {
            assert_eq!(
                response.metadata.recursion_desired,
                request.metadata.recursion_desired
            );
            // A header alone (TC set) is what is left when even the echoed questions do not fit.
            let header_only = response.metadata.truncation && response.queries.is_empty();
            if response.metadata.response_code != ResponseCode::FormErr && !header_only {
                assert_eq!(response.queries, request.queries, "the question is echoed");
            }
        } else {
            assert_eq!(response.metadata.response_code, ResponseCode::FormErr);
        }
    }
    if let Some(mut verifier) = verifier {
        for reply in &replies {
            verifier
                .verify(reply)
                .expect("an answer to a signed request is signed");
        }
        // Signatures carry the time: the cached path is compared on unsigned requests only.
        return;
    }
    if transport == Transport::Udp {
        let mut cache = ResponseCache::default();
        let _ = world.handler.handle_udp(warm, peer, &mut cache);
        let cached = match world.handler.handle_udp(&request, peer, &mut cache) {
            UdpOutcome::Answer(bytes) => bytes.to_vec(),
            other => panic!("handle answered, handle_udp gave {other:?}"),
        };
        assert_eq!(
            summary(&cached),
            summary(&replies[0]),
            "the UDP cache (warmed by {warm:02x?}) changed the answer"
        );
    }
}

/// What an answer says, with address records in a fixed order (the server rotates them).
fn summary(reply: &[u8]) -> String {
    let mut message = Message::from_vec(reply).expect("parseable");
    for section in [
        &mut message.answers,
        &mut message.authorities,
        &mut message.additionals,
    ] {
        section.sort_by_key(|r| r.to_string());
    }
    format!("{message:?}")
}
