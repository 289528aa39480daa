//! The lookup rules as specifications, on an index built in memory.

use super::*;
use crate::store::index::Index;
use crate::store::record::StoredRecord;
use proto::skydns::KeyLayout;

fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap()
}

fn index(entries: &[(&str, &str)]) -> Index {
    let mut index = Index::new(
        KeyLayout::default(),
        &["test.org".to_owned(), "other.org".to_owned()],
    );
    let records = entries
        .iter()
        .map(|(key, value)| StoredRecord::parse(key, value.as_bytes(), 42).unwrap());
    index.replace_all(records, 42);
    index
}

fn zones() -> Zones {
    Zones::new(vec![name("test.org."), name("other.org.")])
}

fn ask(index: &Index, qname: &str, qtype: RecordType) -> Answer {
    resolve(index, &zones(), &name(qname), qtype, 0)
}

/// Answer records as "owner TTL TYPE data" lines.
fn lines(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
        .collect()
}

fn seed() -> Index {
    index(&[
        (
            "/skydns/org/test/nginx/1a2b3c4d",
            r#"{"host":"10.10.39.200","ttl":60,"targetstrip":1}"#,
        ),
        (
            "/skydns/org/test/nginx/2b3c4d5e",
            r#"{"host":"10.10.39.201","ttl":60,"targetstrip":1}"#,
        ),
        (
            "/skydns/org/test/nginx/3c4d5e6f",
            r#"{"host":"fd10:10::39:200","targetstrip":1}"#,
        ),
        ("/skydns/org/test/www", r#"{"host":"10.10.39.210"}"#),
        (
            "/skydns/org/test/apex00ff",
            r#"{"host":"10.10.39.211","targetstrip":1}"#,
        ),
        (
            "/skydns/org/test/apps/*/00000001",
            r#"{"host":"10.10.39.202","targetstrip":1}"#,
        ),
        (
            "/skydns/org/test/apps/api/00000002",
            r#"{"host":"10.10.39.203","targetstrip":1}"#,
        ),
        (
            "/skydns/org/test/deep/a/b/00000003",
            r#"{"host":"10.10.39.204"}"#,
        ),
        (
            "/skydns/org/test/alias",
            r#"{"host":"nginx.test.org","text":"still a cname"}"#,
        ),
        ("/skydns/org/test/outside", r#"{"host":"example.com"}"#),
        (
            "/skydns/org/test/dangling",
            r#"{"host":"missing.test.org"}"#,
        ),
        ("/skydns/org/test/loop1", r#"{"host":"loop2.test.org"}"#),
        ("/skydns/org/test/loop2", r#"{"host":"loop1.test.org"}"#),
        (
            "/skydns/org/test/info/00000004",
            r#"{"text":"hello","targetstrip":1}"#,
        ),
        (
            "/skydns/org/test/_http/_tcp/web/x1",
            r#"{"host":"10.10.39.205","port":8080}"#,
        ),
        (
            "/skydns/org/test/_http/_tcp/web/x2",
            r#"{"host":"nginx.test.org","port":80,"priority":20}"#,
        ),
        (
            "/skydns/org/test/mail/00000005",
            r#"{"host":"10.10.39.206","mail":true,"priority":5,"targetstrip":1}"#,
        ),
    ])
}

#[test]
fn every_target_key_of_a_name_is_an_answer_with_aa() {
    let answer = ask(&seed(), "nginx.test.org.", RecordType::A);
    assert_eq!(answer.rcode, ResponseCode::NoError);
    assert!(answer.authoritative);
    assert_eq!(
        lines(&answer.answers),
        [
            "nginx.test.org. 60 A 10.10.39.200",
            "nginx.test.org. 60 A 10.10.39.201"
        ]
    );
    let v6 = ask(&seed(), "nginx.test.org.", RecordType::AAAA);
    assert_eq!(
        lines(&v6.answers),
        ["nginx.test.org. 300 AAAA fd10:10::39:200"]
    );
}

#[test]
fn owner_names_keep_the_question_case() {
    let answer = ask(&seed(), "NGINX.Test.org.", RecordType::A);
    assert_eq!(answer.answers[0].name.to_string(), "NGINX.Test.org.");
}

#[test]
fn a_missing_name_is_nxdomain_with_the_soa_and_the_negative_ttl() {
    let answer = ask(&seed(), "nope.test.org.", RecordType::A);
    assert_eq!(answer.rcode, ResponseCode::NXDomain);
    assert!(answer.answers.is_empty());
    assert_eq!(
        lines(&answer.authorities),
        ["test.org. 30 SOA ns.dns.test.org. hostmaster.test.org. 42 14400 3600 1209600 300"]
    );
}

#[test]
fn the_default_soa_timers_pass_zonemasters_zone_checks() {
    // Zonemaster's default profile (ZONE02-ZONE06); CoreDNS's 7200/1800/86400/30 failed four of them.
    let soa = SoaSettings::default();
    assert!(soa.refresh >= 14_400, "ZONE02 refresh {}", soa.refresh);
    assert!(soa.retry < soa.refresh, "ZONE03 retry {}", soa.retry);
    assert!(soa.retry >= 3_600, "ZONE04 retry {}", soa.retry);
    assert!(
        soa.expire >= 604_800 && soa.expire >= soa.refresh,
        "ZONE05 expire {}",
        soa.expire
    );
    assert!(
        (300..=86_400).contains(&soa.negative_ttl),
        "ZONE06 minimum {}",
        soa.negative_ttl
    );
}

#[test]
fn negative_answers_are_cached_no_longer_than_the_soa_ttl_however_high_the_minimum() {
    // RFC 2308 §5: the negative TTL is the smaller of the SOA's TTL and its minimum. Raising the minimum
    // to Zonemaster's 300 kept a name published after a miss visible within 30 s.
    let answer = ask(&seed(), "nope.test.org.", RecordType::A);
    assert_eq!(answer.authorities[0].ttl, 30);
    let mut zones = zones();
    zones.soa.negative_ttl = 10;
    let answer = resolve(&seed(), &zones, &name("nope.test.org."), RecordType::A, 0);
    assert_eq!(answer.authorities[0].ttl, 10);
}

#[test]
fn an_existing_name_without_the_type_is_nodata_with_the_soa() {
    let answer = ask(&seed(), "www.test.org.", RecordType::AAAA);
    assert_eq!(answer.rcode, ResponseCode::NoError);
    assert!(answer.answers.is_empty());
    assert_eq!(answer.authorities.len(), 1);
}

#[test]
fn empty_non_terminals_are_nodata_not_nxdomain_and_deeper_records_are_not_theirs() {
    for qname in ["deep.test.org.", "a.deep.test.org."] {
        let answer = ask(&seed(), qname, RecordType::A);
        assert_eq!(answer.rcode, ResponseCode::NoError, "{qname}");
        assert!(
            answer.answers.is_empty(),
            "{qname}: {:?}",
            lines(&answer.answers)
        );
    }
    let leaf = ask(&seed(), "b.a.deep.test.org.", RecordType::A);
    assert_eq!(
        lines(&leaf.answers),
        ["b.a.deep.test.org. 300 A 10.10.39.204"]
    );
}

#[test]
fn stored_wildcards_answer_names_that_do_not_exist_per_rfc_4592() {
    let answer = ask(&seed(), "shop.apps.test.org.", RecordType::A);
    assert_eq!(answer.rcode, ResponseCode::NoError);
    assert_eq!(
        lines(&answer.answers),
        ["shop.apps.test.org. 300 A 10.10.39.202"]
    );
    // Below a non-existent name the closest encloser is still apps.test.org.
    let deeper = ask(&seed(), "x.shop.apps.test.org.", RecordType::A);
    assert_eq!(
        lines(&deeper.answers),
        ["x.shop.apps.test.org. 300 A 10.10.39.202"]
    );
    // An existing name is never wildcarded.
    let api = ask(&seed(), "api.apps.test.org.", RecordType::A);
    assert_eq!(
        lines(&api.answers),
        ["api.apps.test.org. 300 A 10.10.39.203"]
    );
    // A name below an existing one that has no wildcard of its own is NXDOMAIN.
    let below_api = ask(&seed(), "x.api.apps.test.org.", RecordType::A);
    assert_eq!(below_api.rcode, ResponseCode::NXDomain);
    // No wildcard at the apex: other names stay NXDOMAIN.
    assert_eq!(
        ask(&seed(), "x.test.org.", RecordType::A).rcode,
        ResponseCode::NXDomain
    );
}

#[test]
fn a_name_valued_host_is_a_cname_even_with_text_and_is_followed_in_zone() {
    for qtype in [RecordType::A, RecordType::TXT] {
        let answer = ask(&seed(), "alias.test.org.", qtype);
        let got = lines(&answer.answers);
        assert_eq!(
            got[0], "alias.test.org. 300 CNAME nginx.test.org.",
            "{qtype}"
        );
        if qtype == RecordType::A {
            assert_eq!(got.len(), 3, "{got:?}");
            assert!(got[1].starts_with("nginx.test.org. 60 A "));
        }
    }
    let cname = ask(&seed(), "alias.test.org.", RecordType::CNAME);
    assert_eq!(
        lines(&cname.answers),
        ["alias.test.org. 300 CNAME nginx.test.org."]
    );
}

#[test]
fn cnames_out_of_zone_are_returned_unfollowed_and_dangling_ones_say_nxdomain() {
    let outside = ask(&seed(), "outside.test.org.", RecordType::A);
    assert_eq!(outside.rcode, ResponseCode::NoError);
    assert_eq!(
        lines(&outside.answers),
        ["outside.test.org. 300 CNAME example.com."]
    );

    let dangling = ask(&seed(), "dangling.test.org.", RecordType::A);
    assert_eq!(
        dangling.rcode,
        ResponseCode::NXDomain,
        "RFC 6604: the last name decides"
    );
    assert_eq!(
        lines(&dangling.answers),
        ["dangling.test.org. 300 CNAME missing.test.org."]
    );
}

#[test]
fn cname_loops_stop() {
    let answer = ask(&seed(), "loop1.test.org.", RecordType::A);
    assert_eq!(answer.answers.len(), 2, "{:?}", lines(&answer.answers));
}

#[test]
fn questions_outside_the_served_zones_are_refused() {
    let answer = ask(&seed(), "example.com.", RecordType::A);
    assert_eq!(answer.rcode, ResponseCode::Refused);
    assert!(!answer.authoritative);
    assert!(answer.answers.is_empty() && answer.authorities.is_empty());
}

#[test]
fn soa_exists_only_at_the_apex() {
    let apex = ask(&seed(), "test.org.", RecordType::SOA);
    assert_eq!(
        lines(&apex.answers),
        ["test.org. 30 SOA ns.dns.test.org. hostmaster.test.org. 42 14400 3600 1209600 300"]
    );
    let below = ask(&seed(), "www.test.org.", RecordType::SOA);
    assert!(below.answers.is_empty());
    assert_eq!(below.authorities.len(), 1);
}

#[test]
fn apex_addresses_come_from_suffix_keys_not_from_other_names() {
    let answer = ask(&seed(), "test.org.", RecordType::A);
    assert_eq!(lines(&answer.answers), ["test.org. 300 A 10.10.39.211"]);
}

#[test]
fn configured_name_servers_are_the_apex_ns_set_with_in_zone_glue() {
    let mut zones = zones();
    zones.name_servers = vec![
        NameServer {
            name: name("ns1.test.org."),
            addresses: vec!["10.10.40.53".parse().unwrap()],
        },
        NameServer {
            name: name("ns.example.net."),
            addresses: vec!["192.0.2.53".parse().unwrap()],
        },
    ];
    let answer = resolve(&seed(), &zones, &name("test.org."), RecordType::NS, 0);
    assert_eq!(
        lines(&answer.answers),
        [
            "test.org. 300 NS ns1.test.org.",
            "test.org. 300 NS ns.example.net."
        ]
    );
    assert_eq!(
        lines(&answer.additionals),
        ["ns1.test.org. 300 A 10.10.40.53"]
    );
    let soa = resolve(&seed(), &zones, &name("test.org."), RecordType::SOA, 0);
    assert!(lines(&soa.answers)[0].contains("SOA ns1.test.org."));
}

#[test]
fn ns_from_dns_ns_records_as_coredns_stores_them() {
    let index = index(&[
        (
            "/skydns/org/test/dns/ns/a",
            r#"{"host":"10.10.40.53","targetstrip":1}"#,
        ),
        (
            "/skydns/org/test/dns/ns/b",
            r#"{"host":"10.10.40.54","targetstrip":1}"#,
        ),
    ]);
    let answer = ask(&index, "test.org.", RecordType::NS);
    assert_eq!(
        lines(&answer.answers),
        ["test.org. 300 NS ns.dns.test.org."]
    );
    assert_eq!(
        lines(&answer.additionals),
        [
            "ns.dns.test.org. 300 A 10.10.40.53",
            "ns.dns.test.org. 300 A 10.10.40.54"
        ]
    );
}

#[test]
fn txt_comes_from_text_records() {
    let answer = ask(&seed(), "info.test.org.", RecordType::TXT);
    assert_eq!(lines(&answer.answers), ["info.test.org. 300 TXT hello"]);
    assert_eq!(
        split_text(&"x".repeat(300))
            .iter()
            .map(String::len)
            .collect::<Vec<_>>(),
        [255, 45]
    );
    assert!(
        split_text(&"x".repeat(255)).len() == 1,
        "no empty trailing string"
    );
}

#[test]
fn srv_targets_come_from_names_or_from_keys_with_glue() {
    let answer = ask(&seed(), "web._tcp._http.test.org.", RecordType::SRV);
    let got = lines(&answer.answers);
    assert!(
        got.contains(
            &"web._tcp._http.test.org. 300 SRV 10 100 8080 x1.web._tcp._http.test.org.".to_owned()
        ),
        "{got:?}"
    );
    assert!(
        got.contains(&"web._tcp._http.test.org. 300 SRV 20 100 80 nginx.test.org.".to_owned()),
        "{got:?}"
    );
    let glue = lines(&answer.additionals);
    assert!(
        glue.contains(&"x1.web._tcp._http.test.org. 300 A 10.10.39.205".to_owned()),
        "{glue:?}"
    );
    assert!(
        glue.iter().any(|l| l.starts_with("nginx.test.org. 60 A")),
        "{glue:?}"
    );
}

#[test]
fn mx_uses_mail_records_with_priority_as_preference() {
    let answer = ask(&seed(), "mail.test.org.", RecordType::MX);
    assert_eq!(
        lines(&answer.answers),
        ["mail.test.org. 300 MX 5 mail.test.org."]
    );
    assert_eq!(
        lines(&answer.additionals),
        ["mail.test.org. 300 A 10.10.39.206"]
    );
}

#[test]
fn any_gets_one_rrset_not_everything() {
    let answer = ask(&seed(), "nginx.test.org.", RecordType::ANY);
    assert_eq!(answer.answers.len(), 3);
    let info = ask(&seed(), "info.test.org.", RecordType::ANY);
    assert_eq!(lines(&info.answers), ["info.test.org. 300 TXT hello"]);
}

#[test]
fn address_order_rotates_between_queries() {
    let index = seed();
    let first = resolve(&index, &zones(), &name("nginx.test.org."), RecordType::A, 0);
    let second = resolve(&index, &zones(), &name("nginx.test.org."), RecordType::A, 1);
    assert_ne!(lines(&first.answers), lines(&second.answers));
    let mut a = lines(&first.answers);
    let mut b = lines(&second.answers);
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

#[test]
fn groups_keep_the_shallowest_group_and_the_ungrouped() {
    let index = index(&[
        (
            "/skydns/org/test/g",
            r#"{"host":"10.0.0.1","group":"blue"}"#,
        ),
        ("/skydns/org/test/g/00000002", r#"{"host":"10.0.0.2"}"#),
        (
            "/skydns/org/test/g/00000003",
            r#"{"host":"10.0.0.5","group":"red"}"#,
        ),
        (
            "/skydns/org/test/h/00000001",
            r#"{"host":"10.0.0.3","group":"blue"}"#,
        ),
        (
            "/skydns/org/test/h/00000002",
            r#"{"host":"10.0.0.4","group":"red"}"#,
        ),
    ]);
    let g = lines(&ask(&index, "g.test.org.", RecordType::A).answers);
    assert_eq!(g.len(), 2, "{g:?}");
    assert!(
        !g.iter().any(|l| l.ends_with("10.0.0.5")),
        "the deeper red record is dropped: {g:?}"
    );
    // Disagreeing groups at one depth: everything, as CoreDNS does.
    assert_eq!(ask(&index, "h.test.org.", RecordType::A).answers.len(), 2);
}

#[test]
fn a_zone_transfer_holds_what_queries_answer_without_suffix_names() {
    let records = lines(&zone_transfer(&seed(), &zones(), &name("test.org.")));
    assert!(
        records[0].starts_with("test.org. 30 SOA ns.dns.test.org."),
        "{records:?}"
    );
    for expected in [
        "nginx.test.org. 60 A 10.10.39.200",
        "nginx.test.org. 60 A 10.10.39.201",
        "nginx.test.org. 300 AAAA fd10:10::39:200",
        "www.test.org. 300 A 10.10.39.210",
        "test.org. 300 A 10.10.39.211",
        "*.apps.test.org. 300 A 10.10.39.202",
        "api.apps.test.org. 300 A 10.10.39.203",
        "alias.test.org. 300 CNAME nginx.test.org.",
        "info.test.org. 300 TXT hello",
        "mail.test.org. 300 MX 5 mail.test.org.",
        "mail.test.org. 300 A 10.10.39.206",
    ] {
        assert!(
            records.iter().any(|r| r == expected),
            "missing {expected}: {records:#?}"
        );
    }
    for suffix in ["1a2b3c4d.", "00000001.", "apex00ff."] {
        assert!(
            !records.iter().any(|r| r.starts_with(suffix)),
            "{suffix} leaked: {records:#?}"
        );
    }
    let other_zone = lines(&zone_transfer(&seed(), &zones(), &name("other.org.")));
    assert_eq!(other_zone.len(), 2, "only SOA and NS: {other_zone:?}");
    assert!(
        other_zone[1].ends_with("NS ns.dns.other.org."),
        "{other_zone:?}"
    );
}

#[test]
fn without_configured_or_stored_name_servers_the_apex_ns_is_the_soa_mname() {
    let answer = ask(&seed(), "test.org.", RecordType::NS);
    assert_eq!(
        lines(&answer.answers),
        ["test.org. 300 NS ns.dns.test.org."]
    );
    assert!(answer.additionals.is_empty());
}

#[test]
fn a_name_host_with_a_port_is_an_srv_owner_never_a_cname_too() {
    // BIND refused the whole transfer ("CNAME and other data") when this was a CNAME and an SRV at once.
    let index = index(&[
        (
            "/skydns/org/test/_tcp/_xmpp/a",
            r#"{"host":"nginx.test.org","port":5222}"#,
        ),
        ("/skydns/org/test/nginx", r#"{"host":"10.10.39.200"}"#),
        ("/skydns/org/test/www", r#"{"host":"nginx.test.org"}"#),
    ]);
    let srv = ask(&index, "_xmpp._tcp.test.org.", RecordType::SRV);
    assert_eq!(
        lines(&srv.answers),
        ["_xmpp._tcp.test.org. 300 SRV 10 100 5222 nginx.test.org."]
    );
    // Unbound asks A first (QNAME minimisation): NODATA, not a CNAME.
    let a = ask(&index, "_xmpp._tcp.test.org.", RecordType::A);
    assert_eq!(a.rcode, ResponseCode::NoError);
    assert!(a.answers.is_empty(), "{:?}", lines(&a.answers));
    assert_eq!(a.authorities.len(), 1, "NODATA carries the SOA");
    let cname = ask(&index, "_xmpp._tcp.test.org.", RecordType::CNAME);
    assert!(cname.answers.is_empty(), "{:?}", lines(&cname.answers));
    // A CNAME owner answers an SRV question with its CNAME (followed), not with a port-0 SRV.
    let www = ask(&index, "www.test.org.", RecordType::SRV);
    assert_eq!(
        lines(&www.answers),
        ["www.test.org. 300 CNAME nginx.test.org."]
    );
    let records = lines(&zone_transfer(&index, &zones(), &name("test.org.")));
    let xmpp: Vec<&String> = records
        .iter()
        .filter(|r| r.starts_with("_xmpp._tcp.test.org."))
        .collect();
    assert_eq!(
        xmpp,
        ["_xmpp._tcp.test.org. 300 SRV 10 100 5222 nginx.test.org."]
    );
}

#[test]
fn a_name_with_mail_or_text_holds_no_cname_beside_it() {
    let index = index(&[
        (
            "/skydns/org/test/both/mx",
            r#"{"host":"mx.example.net","mail":true}"#,
        ),
        (
            "/skydns/org/test/both/plain",
            r#"{"host":"nginx.test.org"}"#,
        ),
        ("/skydns/org/test/said/t", r#"{"text":"v=spf1 -all"}"#),
        ("/skydns/org/test/said/c", r#"{"host":"nginx.test.org"}"#),
    ]);
    for owner in ["both.test.org.", "said.test.org."] {
        let records = lines(&zone_transfer(&index, &zones(), &name("test.org.")));
        assert!(
            !records
                .iter()
                .any(|r| r.starts_with(owner) && r.contains("CNAME")),
            "{owner} is a CNAME beside other data: {records:#?}"
        );
        let a = ask(&index, owner, RecordType::A);
        assert!(a.answers.is_empty(), "{owner}: {:?}", lines(&a.answers));
    }
}

#[test]
fn a_configured_name_server_in_the_zone_answers_its_address() {
    // The AXFR and the NS glue carried ns1's address while `ns1.test.org A` was NXDOMAIN.
    let mut zones = zones();
    zones.name_servers = vec![NameServer {
        name: name("ns1.test.org."),
        addresses: vec![
            "192.0.2.53".parse().unwrap(),
            "2001:db8::53".parse().unwrap(),
        ],
    }];
    let ask = |qname: &str, qtype| resolve(&seed(), &zones, &name(qname), qtype, 0);
    let a = ask("ns1.test.org.", RecordType::A);
    assert_eq!(a.rcode, ResponseCode::NoError);
    assert!(a.authoritative);
    assert_eq!(lines(&a.answers), ["ns1.test.org. 300 A 192.0.2.53"]);
    let aaaa = ask("ns1.test.org.", RecordType::AAAA);
    assert_eq!(
        lines(&aaaa.answers),
        ["ns1.test.org. 300 AAAA 2001:db8::53"]
    );
    let txt = ask("ns1.test.org.", RecordType::TXT);
    assert_eq!(txt.rcode, ResponseCode::NoError, "NODATA, the name exists");
    assert!(txt.answers.is_empty());
    let records = lines(&zone_transfer(&seed(), &zones, &name("test.org.")));
    assert!(records.contains(&"ns1.test.org. 300 A 192.0.2.53".to_owned()));
}

#[test]
fn the_apex_addresses_from_dns_apex_keys_are_transferred() {
    // A secondary answered NODATA for `test.org A` while the primary answered it.
    let index = index(&[
        ("/skydns/org/test/dns/apex/a1", r#"{"host":"10.10.39.230"}"#),
        ("/skydns/org/test/www", r#"{"host":"10.10.39.210"}"#),
    ]);
    let answer = ask(&index, "test.org.", RecordType::A);
    assert_eq!(lines(&answer.answers), ["test.org. 300 A 10.10.39.230"]);
    let records = lines(&zone_transfer(&index, &zones(), &name("test.org.")));
    assert!(
        records.contains(&"test.org. 300 A 10.10.39.230".to_owned()),
        "{records:#?}"
    );
}

#[test]
fn leaves_below_a_stored_wildcard_are_its_records_not_names_in_the_transfer() {
    let index = index(&[
        ("/skydns/org/test/apps/*/x1", r#"{"host":"10.10.39.240"}"#),
        ("/skydns/org/test/apps/api", r#"{"host":"10.10.39.241"}"#),
    ]);
    let records = lines(&zone_transfer(&index, &zones(), &name("test.org.")));
    assert!(
        records.contains(&"*.apps.test.org. 300 A 10.10.39.240".to_owned()),
        "{records:#?}"
    );
    assert!(!records.iter().any(|r| r.contains("x1.")), "{records:#?}");
    let answer = ask(&index, "shop.apps.test.org.", RecordType::A);
    assert_eq!(
        lines(&answer.answers),
        ["shop.apps.test.org. 300 A 10.10.39.240"]
    );
}

#[test]
fn in_a_reverse_zone_a_name_host_is_ptr_data_never_a_cname() {
    let mut index = Index::new(KeyLayout::default(), &["10.in-addr.arpa".to_owned()]);
    let records = [
        (
            "/skydns/arpa/in-addr/10/10/39/200",
            r#"{"host":"web.test.org","ttl":60}"#,
        ),
        (
            "/skydns/arpa/in-addr/10/10/39/200/1a2b3c4d",
            r#"{"host":"www.test.org","ttl":60,"targetstrip":1}"#,
        ),
    ]
    .map(|(key, value)| StoredRecord::parse(key, value.as_bytes(), 42).unwrap());
    index.replace_all(records, 42);
    let zones = Zones::new(vec![name("10.in-addr.arpa.")]);
    let reverse = name("200.39.10.10.in-addr.arpa.");
    let answer = resolve(&index, &zones, &reverse, RecordType::PTR, 0);
    assert_eq!(
        lines(&answer.answers),
        [
            "200.39.10.10.in-addr.arpa. 60 PTR web.test.org.",
            "200.39.10.10.in-addr.arpa. 60 PTR www.test.org."
        ]
    );
    // An address question gets no data, not an alias to follow.
    let answer = resolve(&index, &zones, &reverse, RecordType::A, 0);
    assert!(answer.answers.is_empty(), "{:?}", lines(&answer.answers));
    let answer = resolve(&index, &zones, &reverse, RecordType::CNAME, 0);
    assert!(answer.answers.is_empty(), "{:?}", lines(&answer.answers));
    // And a transfer carries the PTR records (a secondary would otherwise serve a CNAME).
    let transfer = zone_transfer(&index, &zones, &name("10.in-addr.arpa."));
    let types: Vec<String> = transfer
        .iter()
        .map(|r| r.record_type().to_string())
        .collect();
    assert_eq!(types.iter().filter(|t| *t == "PTR").count(), 2, "{types:?}");
    assert!(!types.iter().any(|t| t == "CNAME"), "{types:?}");
}
