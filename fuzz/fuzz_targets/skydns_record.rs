//! skydns values as etcd holds them (`proto::skydns`, `dns-server`'s `StoredRecord`): anyone who may write
//! under the prefix, external-dns included, decides these bytes. Each record is parsed the way the
//! server's follower parses it, the accepted ones make up the zone `test.org`, and questions are answered
//! from it and the zone is transferred.
//!
//! Asserts: parsing never panics; an accepted value re-encodes (`to_json`) to one that parses back to the
//! same record, host and all; a name's directory maps back to the name; and whatever the zone holds,
//! every answer, the SOA and a whole-zone transfer encode as DNS messages.
#![no_main]

use arbitrary::Arbitrary;
use dns_server::lookup::{self, Zones};
use dns_server::store::index::Index;
use dns_server::store::record::StoredRecord;
use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RecordType};
use libfuzzer_sys::fuzz_target;
use proto::skydns::{KeyLayout, SkydnsRecord};

/// Labels names are made of, so that keys nest, collide and meet the special directories.
const LABELS: &[&str] = &[
    "org", "test", "nginx", "www", "*", "dns", "ns", "apex", "_tcp", "_http", "a", "b", "x1",
    "00000001",
];

#[derive(Debug, Arbitrary)]
enum Label {
    Known(u8),
    Any(String),
}

impl Label {
    fn text(&self) -> String {
        match self {
            Self::Known(i) => LABELS[usize::from(*i) % LABELS.len()].to_owned(),
            Self::Any(text) => text.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Host {
    None,
    Known(u8),
    Any(String),
}

const HOSTS: &[&str] = &[
    "10.0.0.1",
    "fd00::1",
    "nginx.test.org",
    "www.test.org.",
    "example.com",
    "10.0.0.300",
    "::ffff:1.2.3.4",
    "a.b.test.org",
    "*.test.org",
    "ns.dns.test.org",
];

/// A value written field by field, to reach what the lookup does with each field.
#[derive(Debug, Arbitrary)]
struct Fields {
    host: Host,
    port: u16,
    priority: u16,
    weight: u16,
    text: Option<String>,
    mail: bool,
    ttl: u32,
    target_strip: u32,
    group: Option<String>,
}

#[derive(Debug, Arbitrary)]
enum Value {
    Fields(Fields),
    Bytes(Vec<u8>),
}

impl Value {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Bytes(bytes) => bytes.clone(),
            Self::Fields(f) => {
                let mut value = serde_json::json!({
                    "port": f.port, "priority": f.priority, "weight": f.weight, "mail": f.mail,
                    "ttl": f.ttl, "targetstrip": f.target_strip,
                });
                let host = match &f.host {
                    Host::None => None,
                    Host::Known(i) => Some(HOSTS[usize::from(*i) % HOSTS.len()].to_owned()),
                    Host::Any(text) => Some(text.clone()),
                };
                if let Some(host) = host {
                    value["host"] = host.into();
                }
                if let Some(text) = &f.text {
                    value["text"] = text.clone().into();
                }
                if let Some(group) = &f.group {
                    value["group"] = group.clone().into();
                }
                value.to_string().into_bytes()
            }
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    /// Records: the labels below `test.org` (leftmost last, as in the key) and the value.
    records: Vec<(Vec<Label>, Value)>,
    /// Questions: labels before `test.org`, and the type.
    questions: Vec<(Vec<Label>, u16)>,
    /// A name and a suffix label for the key layout's round trip.
    name: String,
    suffix: String,
}

fuzz_target!(|input: Input| {
    let layout = KeyLayout::default();
    let mut records = Vec::new();
    for (revision, (labels, value)) in (1..).zip(&input.records) {
        let mut key = "/skydns/org/test".to_owned();
        for label in labels {
            key.push('/');
            key.push_str(&label.text());
        }
        let bytes = value.bytes();
        let Ok(record) = StoredRecord::parse(&key, &bytes, revision) else {
            continue;
        };
        let again = StoredRecord::parse(&key, record.value.to_json().as_bytes(), revision)
            .expect("a value we encoded parses");
        assert_eq!(
            again,
            record,
            "round trip of {:?}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(
            SkydnsRecord::from_etcd(&key, &bytes).ok().as_ref(),
            Some(&record.value)
        );
        records.push(record);
    }
    key_layout(&layout, &input.name, &input.suffix);

    let mut index = Index::new(layout, &["test.org".to_owned()]);
    index.replace_all(
        records,
        i64::try_from(input.records.len()).unwrap_or(i64::MAX) + 1,
    );
    let zone = Name::from_ascii("test.org.").unwrap();
    let zones = Zones::new(vec![zone.clone()]);
    for (rotation, (labels, qtype)) in input.questions.iter().enumerate() {
        let mut name = String::new();
        for label in labels.iter().rev() {
            name.push_str(&label.text());
            name.push('.');
        }
        name.push_str("test.org.");
        let Ok(qname) = Name::from_ascii(&name) else {
            continue;
        };
        let answer = lookup::resolve(&index, &zones, &qname, RecordType::from(*qtype), rotation);
        let mut message = Message::response(1, hickory_proto::op::OpCode::Query);
        message.metadata.response_code = answer.rcode;
        message.answers = answer.answers;
        message.authorities = answer.authorities;
        message.additionals = answer.additionals;
        let bytes = message
            .to_vec()
            .unwrap_or_else(|e| panic!("answer to {name} {qtype}: {e}"));
        Message::from_vec(&bytes).expect("an encoded answer parses");
    }
    let mut transfer = Message::response(1, hickory_proto::op::OpCode::Query);
    transfer.answers = lookup::zone_transfer(&index, &zones, &zone);
    assert!(
        !transfer.answers.is_empty(),
        "a transfer starts with the SOA"
    );
    for chunk in transfer.answers.chunks(100) {
        let mut message = Message::response(1, hickory_proto::op::OpCode::Query);
        message.answers = chunk.to_vec();
        message.to_vec().expect("a transfer message encodes");
    }
});

fn key_layout(layout: &KeyLayout, name: &str, suffix: &str) {
    let Ok(directory) = layout.directory_of(name) else {
        return;
    };
    let normalized = proto::skydns::normalize_name(name).expect("directory_of accepted it");
    assert_eq!(
        layout.name_of(&directory).as_deref(),
        Some(normalized.as_str())
    );
    if let Ok(key) = layout.record_key(name, suffix) {
        assert_eq!(
            layout.name_of(&key),
            Some(format!("{}.{normalized}", suffix.to_ascii_lowercase()))
        );
    }
}
