//! Any bytes a client can send, through the whole request path (parse, protocol rules, lookup, encode,
//! the UDP answer cache): the server must never panic, never answer a response or a runt, and never send
//! more over UDP than the request allows (no amplification).
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use dns_server::forward::ForwardZones;
use dns_server::handler::{Handler, Outcome, ResponseCache, Transport, UdpOutcome};
use dns_server::lookup::Zones;
use dns_server::store::index::Index;
use dns_server::store::record::StoredRecord;
use hickory_proto::op::Message;
use hickory_proto::rr::Name;
use libfuzzer_sys::fuzz_target;
use proto::skydns::KeyLayout;

const SECONDARY: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

static HANDLER: LazyLock<Handler> = LazyLock::new(|| {
    let mut index = Index::new(KeyLayout::default(), &["test.org".to_owned()]);
    let values: &[(&str, &str)] = &[
        ("/skydns/org/test/nginx/00000001", r#"{"host":"10.10.39.200","targetstrip":1}"#),
        ("/skydns/org/test/nginx/00000002", r#"{"host":"fd10::1","targetstrip":1}"#),
        ("/skydns/org/test/alias", r#"{"host":"nginx.test.org","text":"x"}"#),
        ("/skydns/org/test/loop", r#"{"host":"loop.test.org"}"#),
        ("/skydns/org/test/apps/*/00000003", r#"{"host":"10.10.39.201","targetstrip":1}"#),
        ("/skydns/org/test/txt/00000004", r#"{"text":"hello world"}"#),
        ("/skydns/org/test/_s/_tcp/x", r#"{"host":"10.0.0.1","port":80,"mail":true}"#),
    ];
    index.replace_all(
        values.iter().filter_map(|(k, v)| StoredRecord::parse(k, v.as_bytes(), 1).ok()),
        7,
    );
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = dns_server::Metrics::register(&mut registry);
    let zones = Zones::new(vec![Name::from_ascii("test.org.").unwrap()]);
    let allow = vec!["127.0.0.0/8".parse().unwrap()];
    let forward = ForwardZones::new(vec![(
        Name::from_ascii("corp.example.").unwrap(),
        vec![([127, 0, 0, 1], 9).into()],
    )]);
    Handler::new(
        Arc::new(RwLock::new(index)),
        zones,
        allow,
        forward,
        metrics.queries,
        dns_server::config::TsigSettings::default(),
    )
});

static CACHE: LazyLock<Mutex<ResponseCache>> = LazyLock::new(|| Mutex::new(ResponseCache::default()));

fuzz_target!(|request: &[u8]| {
    let handler = &*HANDLER;
    let limit = Message::from_vec(request)
        .ok()
        .and_then(|m| m.edns.map(|e| usize::from(e.max_payload())))
        .map_or(512, |size| size.max(512));
    if let Outcome::Messages(replies) = handler.handle(request, Transport::Udp, SECONDARY) {
        for reply in replies {
            assert!(request.len() >= 12, "answered a runt");
            assert!(reply.len() <= limit, "{} bytes over UDP for a limit of {limit}", reply.len());
        }
    }
    if let Outcome::Messages(replies) = handler.handle(request, Transport::Tcp, SECONDARY) {
        assert!(replies.iter().all(|r| r.len() <= usize::from(u16::MAX)));
    }
    let mut cache = CACHE.lock().unwrap();
    if let UdpOutcome::Answer(reply) = handler.handle_udp(request, SECONDARY, &mut cache) {
        assert!(reply.len() <= limit);
        assert!(request.len() >= 12 && request[..2] == reply[..2], "reply ID differs");
    }
    if handler.failure(request).is_some() {
        assert!(request.len() >= 12);
    }
});
