use kube::api::ObjectMeta;

use super::*;
use crate::source::Limits;

fn entry(name: &str, kind: &str, targets: &[&str], ttl: i64) -> EndpointEntry {
    EndpointEntry {
        dns_name: name.to_owned(),
        targets: targets.iter().map(|t| (*t).to_owned()).collect(),
        record_type: kind.to_owned(),
        record_ttl: ttl,
        ..EndpointEntry::default()
    }
}

fn object(entries: Vec<EndpointEntry>) -> DNSEndpoint {
    DNSEndpoint {
        metadata: ObjectMeta {
            name: Some("records".to_owned()),
            namespace: Some("team".to_owned()),
            ..ObjectMeta::default()
        },
        spec: DnsEndpointSpec { endpoints: entries },
        status: None,
    }
}

/// The records asked for as `name target ttl`, and the rejections as `field: reason`.
fn read(object: &DNSEndpoint, filters: &Filters) -> (Vec<String>, Vec<String>) {
    let mut records = Vec::new();
    let mut rejections = Vec::new();
    for wanted in from_dns_endpoint(object, filters) {
        if let Some(request) = &wanted.request {
            for endpoint in request.endpoints() {
                records.push(format!(
                    "{} {} {:?}",
                    endpoint.name, endpoint.target, endpoint.ttl
                ));
            }
        }
        for rejection in wanted.rejections {
            rejections.push(format!("{}: {}", rejection.field, rejection.reason));
        }
    }
    (records, rejections)
}

#[test]
fn every_type_the_skydns_format_expresses_is_read_with_its_ttl() {
    let object = object(vec![
        entry("web.test.org", "A", &["192.0.2.10", "192.0.2.11"], 60),
        entry("web.test.org", "AAAA", &["2001:db8::10"], 0),
        entry("www.test.org", "CNAME", &["Web.Test.org"], 0),
        entry(
            "test.org",
            "TXT",
            &["v=spf1 include:_spf.test.org -all"],
            300,
        ),
        entry("_sip._tcp.test.org", "SRV", &["10 60 5060 sip.test.org"], 0),
        entry(
            "test.org",
            "MX",
            &["10 mail.test.org", "20 mail2.test.org"],
            0,
        ),
        entry("10.2.0.192.in-addr.arpa", "PTR", &["web.test.org"], 0),
    ]);
    let (records, rejections) = read(&object, &Filters::default());
    assert!(rejections.is_empty(), "{rejections:?}");
    assert_eq!(
        records,
        [
            "web.test.org 192.0.2.10 Some(60)",
            "web.test.org 192.0.2.11 Some(60)",
            "web.test.org 2001:db8::10 None",
            "www.test.org web.test.org None",
            "test.org \"v=spf1 include:_spf.test.org -all\" Some(300)",
            "_sip._tcp.test.org SRV 10 60 5060 sip.test.org None",
            "test.org MX 10 mail.test.org None",
            "test.org MX 20 mail2.test.org None",
            "10.2.0.192.in-addr.arpa web.test.org None",
        ]
    );
}

#[test]
fn what_cannot_be_expressed_is_refused_by_field_and_the_rest_is_published() {
    let mut with_identifier = entry("eu.test.org", "A", &["192.0.2.1"], 0);
    with_identifier.set_identifier = "eu".to_owned();
    let object = object(vec![
        entry("sub.test.org", "NS", &["ns1.other.org"], 0),
        entry("test.org", "CAA", &["0 issue \"letsencrypt.org\""], 0),
        with_identifier,
        entry("bad.test.org", "A", &["2001:db8::1", "192.0.2.2"], 0),
        entry("dot.test.org", "CNAME", &["web.test.org."], 0),
        entry("two.test.org", "CNAME", &["a.test.org", "b.test.org"], 0),
        entry("_x._tcp.test.org", "SRV", &["10 60 sip.test.org"], 0),
        entry("test.org", "MX", &["10 mail.test.org extra"], 0),
        entry("web.test.org", "PTR", &["web.test.org"], 0),
        entry("ttl.test.org", "A", &["192.0.2.3"], -5),
        entry("bad name.test.org", "A", &["192.0.2.4"], 0),
    ]);
    let (records, rejections) = read(&object, &Filters::default());
    assert_eq!(records, ["bad.test.org 192.0.2.2 None"]);
    let fields: Vec<&str> = rejections
        .iter()
        .map(|r| r.split(':').next().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "spec.endpoints[0].recordType",
            "spec.endpoints[1].recordType",
            "spec.endpoints[2].setIdentifier",
            "spec.endpoints[3].targets[0]",
            "spec.endpoints[4].targets[0]",
            "spec.endpoints[5].targets",
            "spec.endpoints[6].targets[0]",
            "spec.endpoints[7].targets[0]",
            "spec.endpoints[8].dnsName",
            "spec.endpoints[9].recordTTL",
            "spec.endpoints[10].dnsName",
        ],
        "{rejections:#?}"
    );
    assert!(
        rejections[0].contains("only at a zone's apex"),
        "{}",
        rejections[0]
    );
    assert!(
        rejections[6].contains("port \"sip.test.org\" is not a number"),
        "{}",
        rejections[6]
    );
}

#[test]
fn an_object_over_the_limits_asks_for_nothing_new_and_keeps_what_it_has() {
    let filters = Filters {
        limits: Limits {
            names_per_object: 100,
            targets_per_object: 2,
        },
        ..Filters::default()
    };
    let object = object(vec![entry(
        "web.test.org",
        "A",
        &["192.0.2.1", "192.0.2.2", "192.0.2.3"],
        0,
    )]);
    let wanted = from_dns_endpoint(&object, &filters);
    assert_eq!(wanted.len(), 1);
    assert!(wanted[0].request.as_ref().unwrap().keep_published);
    assert!(
        wanted[0].rejections[0]
            .reason
            .contains("--max-targets-per-object")
    );
}

#[test]
fn names_outside_the_domain_filter_are_refused() {
    let filters = Filters {
        domains: vec!["test.org".to_owned()],
        ..Filters::default()
    };
    let object = object(vec![entry("web.other.org", "A", &["192.0.2.1"], 0)]);
    let (records, rejections) = read(&object, &filters);
    assert!(records.is_empty());
    assert!(rejections[0].contains("--domain-filter"), "{rejections:?}");
}

#[test]
fn an_object_lags_until_its_status_records_its_generation() {
    let mut object: DNSEndpoint = serde_json::from_value(serde_json::json!({
        "apiVersion": "externaldns.k8s.io/v1alpha1",
        "kind": "DNSEndpoint",
        "metadata": {"name": "records", "namespace": "shop", "generation": 2},
        "spec": {"endpoints": []},
        "status": {"observedGeneration": 1},
    }))
    .unwrap();
    assert_eq!(
        lagging(&object),
        Some((("shop".to_owned(), "records".to_owned()), 2))
    );
    object.status = Some(DnsEndpointStatus {
        observed_generation: Some(2),
    });
    assert_eq!(lagging(&object), None);
    object.metadata.generation = None;
    assert_eq!(lagging(&object), None, "no generation, nothing to record");
}
