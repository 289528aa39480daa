//! Reserved names, first claimant, allow-lists, same-namespace union, per-name limits and the tie-break.

use proto::skydns::{SkydnsRecord, target_suffix};

use super::*;
use crate::plan::{self, Change, Policy, Rules};
use crate::source::NameRequest;

const OWNER: &str = "gw";

fn object(namespace: &str, name: &str) -> ObjectId {
    ObjectId {
        kind: "service",
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

/// `namespace/name` created at `created`, asking for `names` at `targets`.
fn request(id: &str, created: Option<i64>, names: &[&str], targets: &[&str]) -> Request {
    let (namespace, name) = id.split_once('/').unwrap();
    Request {
        object: object(namespace, name),
        created,
        ttl: None,
        names: names
            .iter()
            .map(|n| NameRequest {
                name: (*n).to_owned(),
                field: "external-dns.alpha.kubernetes.io/hostname",
            })
            .collect(),
        targets: targets.iter().map(|t| Target::host(*t)).collect(),
        keep_published: false,
    }
}

fn rules() -> PublishRules {
    PublishRules {
        zones: vec!["test.org".to_owned()],
        ..PublishRules::default()
    }
}

/// A record of ours in etcd for `name` -> `target`, attributed to `namespace/object`.
fn ours(name: &str, target: &str, id: &str) -> Existing {
    let (namespace, object_name) = id.split_once('/').unwrap();
    Existing {
        key: KeyLayout::default()
            .record_key(name, &target_suffix(name, target))
            .unwrap(),
        mod_revision: 7,
        record: SkydnsRecord {
            host: target.to_owned(),
            target_strip: 1,
            owner: OWNER.to_owned(),
            resource: object(namespace, object_name).to_string(),
            ..SkydnsRecord::default()
        },
    }
}

fn decide_with(requests: &[Request], existing: &[Existing], rules: &PublishRules) -> Decision {
    decide(requests, existing, &KeyLayout::default(), OWNER, rules)
}

/// The published endpoints as `name target object`.
fn published(decision: &Decision) -> Vec<String> {
    let mut all: Vec<String> = decision
        .endpoints
        .iter()
        .map(|e| format!("{} {} {}", e.name, e.target, e.object))
        .collect();
    all.sort();
    all
}

fn refusals(decision: &Decision) -> Vec<(String, RejectionKind)> {
    decision
        .refusals
        .iter()
        .map(|r| (r.object.to_string(), r.kind))
        .collect()
}

#[test]
fn the_apex_its_wildcard_and_everything_under_dns_of_a_zone_are_reserved() {
    let rules = PublishRules {
        zones: vec!["test.org".to_owned(), "lab.example".to_owned()],
        reserved: vec![
            NamePattern::new("ns1.test.org"),
            NamePattern::new("*.infra.test.org"),
        ],
        ..PublishRules::default()
    };
    for name in [
        "test.org",
        "*.test.org",
        "dns.test.org",
        "ns.dns.test.org",
        "apex.dns.test.org",
        "x.ns.dns.test.org",
        "*.dns.test.org",
        "lab.example",
        "ns.dns.lab.example",
        "ns1.test.org",
        "a.infra.test.org",
        "*.infra.test.org",
    ] {
        assert!(rules.reserved_reason(name).is_some(), "{name}");
    }
    for name in [
        "shop.test.org",
        "dns.shop.test.org",
        "dnsx.test.org",
        "*.apps.test.org",
        "infra.test.org",
        "dns.other.org",
    ] {
        assert_eq!(rules.reserved_reason(name), None, "{name}");
    }
    let reason = rules.reserved_reason("ns.dns.test.org").unwrap();
    assert!(reason.contains("NS, glue and apex"), "{reason}");
}

#[test]
fn reserved_names_are_refused_and_nothing_of_them_is_published() {
    let requests = [request(
        "b/evil",
        Some(1),
        &["test.org", "ns.dns.test.org", "ok.test.org"],
        &["10.6.6.6"],
    )];
    let decision = decide_with(&requests, &[], &rules());
    assert_eq!(
        published(&decision),
        ["ok.test.org 10.6.6.6 service/b/evil"]
    );
    assert_eq!(
        refusals(&decision),
        [
            ("service/b/evil".to_owned(), RejectionKind::Reserved),
            ("service/b/evil".to_owned(), RejectionKind::Reserved),
        ]
    );
    assert!(
        decision
            .refusals
            .iter()
            .all(|r| r.field == "external-dns.alpha.kubernetes.io/hostname")
    );
}

#[test]
fn the_first_claimant_by_creation_time_holds_a_name_and_the_other_namespace_gets_a_conflict() {
    let requests = [
        request("b/late", Some(200), &["shop.test.org"], &["10.6.6.6"]),
        request("a/shop", Some(100), &["shop.test.org"], &["10.0.0.1"]),
    ];
    let decision = decide_with(&requests, &[], &rules());
    assert_eq!(
        published(&decision),
        ["shop.test.org 10.0.0.1 service/a/shop"]
    );
    assert_eq!(
        refusals(&decision),
        [("service/b/late".to_owned(), RejectionKind::Conflict)]
    );
    let reason = &decision.refusals[0].reason;
    assert!(
        reason.contains("shop.test.org is held by namespace a (service/a/shop)"),
        "{reason}"
    );
    assert_eq!(
        decision.refusals[0].field,
        "external-dns.alpha.kubernetes.io/hostname"
    );
}

#[test]
fn the_namespace_holding_a_name_in_etcd_keeps_it_against_an_older_object() {
    // An old object in `a` gets the annotation after `b` published: creation time must not let it take over.
    let requests = [
        request("a/old", Some(1), &["shop.test.org"], &["10.6.6.6"]),
        request("b/shop", Some(500), &["shop.test.org"], &["10.0.0.2"]),
    ];
    let existing = [ours("shop.test.org", "10.0.0.2", "b/shop")];
    let decision = decide_with(&requests, &existing, &rules());
    assert_eq!(
        published(&decision),
        ["shop.test.org 10.0.0.2 service/b/shop"]
    );
    assert_eq!(
        refusals(&decision),
        [("service/a/old".to_owned(), RejectionKind::Conflict)]
    );
    // Once `b` no longer asks for it, the name goes to the first claimant left.
    let decision = decide_with(&requests[..1], &existing, &rules());
    assert_eq!(
        published(&decision),
        ["shop.test.org 10.6.6.6 service/a/old"]
    );
}

#[test]
fn a_conflict_leaves_the_holders_records_exactly_as_they_are() {
    let existing = [
        ours("shop.test.org", "10.0.0.1", "a/shop"),
        ours("shop.test.org", "10.0.0.2", "a/shop"),
    ];
    let requests = [
        request(
            "a/shop",
            Some(100),
            &["shop.test.org"],
            &["10.0.0.1", "10.0.0.2"],
        ),
        request("b/evil", Some(50), &["shop.test.org"], &["10.6.6.6"]),
    ];
    let decision = decide_with(&requests, &existing, &rules());
    let layout = KeyLayout::default();
    let plan = plan::plan(
        &decision.endpoints,
        &existing,
        &Rules {
            layout: &layout,
            owner: OWNER,
            adopt: None,
            policy: Policy::Sync,
            allow_deletes: true,
        },
    );
    assert_eq!(plan.changes, Vec::<Change>::new());
    assert_eq!(plan.managed, 2);
}

#[test]
fn ties_are_broken_by_namespace_then_name_whatever_the_order_of_the_input() {
    let mut requests = vec![
        request("b/x", Some(100), &["shop.test.org"], &["10.0.0.2"]),
        request("a/z", Some(100), &["shop.test.org"], &["10.0.0.1"]),
        request("c/a", None, &["shop.test.org"], &["10.0.0.3"]),
    ];
    let first = decide_with(&requests, &[], &rules());
    assert_eq!(published(&first), ["shop.test.org 10.0.0.1 service/a/z"]);
    for _ in 0..3 {
        requests.rotate_left(1);
        let again = decide_with(&requests, &[], &rules());
        assert_eq!(published(&again), published(&first));
        let mut a = refusals(&again);
        let mut b = refusals(&first);
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }
    // An unknown creation time counts as the latest, not the earliest.
    let decision = decide_with(
        &[
            request("a/unknown", None, &["x.test.org"], &["10.0.0.1"]),
            request("b/known", Some(9_999_999), &["x.test.org"], &["10.0.0.2"]),
        ],
        &[],
        &rules(),
    );
    assert_eq!(
        published(&decision),
        ["x.test.org 10.0.0.2 service/b/known"]
    );
}

#[test]
fn objects_of_one_namespace_asking_for_one_name_get_the_union() {
    let requests = [
        request("a/blue", Some(100), &["shop.test.org"], &["10.0.0.1"]),
        request("a/green", Some(300), &["shop.test.org"], &["10.0.0.2"]),
    ];
    let decision = decide_with(&requests, &[], &rules());
    assert_eq!(
        published(&decision),
        [
            "shop.test.org 10.0.0.1 service/a/blue",
            "shop.test.org 10.0.0.2 service/a/green",
        ]
    );
    assert!(decision.refusals.is_empty());
}

#[test]
fn an_allow_list_confines_its_namespace_and_keeps_others_out_of_its_names() {
    let rules = PublishRules {
        namespace_domains: BTreeMap::from([
            ("b".to_owned(), vec![NamePattern::new("b.test.org")]),
            ("c".to_owned(), vec![NamePattern::new("*.apps.test.org")]),
        ]),
        ..rules()
    };
    let requests = [
        request(
            "b/web",
            Some(100),
            &["b.test.org", "x.test.org"],
            &["10.0.0.2"],
        ),
        request(
            "d/squat",
            Some(1),
            &["b.test.org", "y.apps.test.org", "free.test.org"],
            &["10.6.6.6"],
        ),
        request(
            "c/app",
            Some(100),
            &["y.apps.test.org", "apps.test.org"],
            &["10.0.0.3"],
        ),
    ];
    let decision = decide_with(&requests, &[], &rules);
    assert_eq!(
        published(&decision),
        [
            "b.test.org 10.0.0.2 service/b/web",
            "free.test.org 10.6.6.6 service/d/squat",
            "y.apps.test.org 10.0.0.3 service/c/app",
        ]
    );
    let refused: Vec<(String, String)> = decision
        .refusals
        .iter()
        .map(|r| (r.object.to_string(), r.reason.clone()))
        .collect();
    assert_eq!(refused.len(), 4, "{refused:?}");
    assert!(
        decision
            .refusals
            .iter()
            .all(|r| r.kind == RejectionKind::NotAllowed)
    );
    assert!(refused.iter().any(|(o, r)| o == "service/b/web"
        && r.contains(
            "x.test.org is outside what --namespace-domains allows namespace b: b.test.org"
        )));
    assert!(refused.iter().any(|(o, r)| o == "service/d/squat"
        && r.contains("b.test.org is assigned by --namespace-domains to namespace b")));
    // `*.apps.test.org` covers the names below, not apps.test.org itself.
    assert!(
        refused
            .iter()
            .any(|(o, r)| o == "service/c/app" && r.contains("apps.test.org is outside"))
    );

    let strict = PublishRules {
        require_namespace_domains: true,
        ..rules
    };
    let decision = decide_with(&requests[1..2], &[], &strict);
    assert!(decision.endpoints.is_empty());
    assert!(
        decision.refusals[0]
            .reason
            .contains("--require-namespace-domains")
    );
}

#[test]
fn an_admin_assignment_moves_a_name_from_its_first_claimant() {
    let existing = [ours("shop.test.org", "10.0.0.1", "a/shop")];
    let requests = [
        request("a/shop", Some(1), &["shop.test.org"], &["10.0.0.1"]),
        request("b/shop", Some(500), &["shop.test.org"], &["10.0.0.2"]),
    ];
    let rules = PublishRules {
        namespace_domains: BTreeMap::from([(
            "b".to_owned(),
            vec![NamePattern::new("shop.test.org")],
        )]),
        ..rules()
    };
    let decision = decide_with(&requests, &existing, &rules);
    assert_eq!(
        published(&decision),
        ["shop.test.org 10.0.0.2 service/b/shop"]
    );
    assert_eq!(
        refusals(&decision),
        [("service/a/shop".to_owned(), RejectionKind::NotAllowed)]
    );
}

#[test]
fn an_object_that_would_take_a_name_over_its_target_limit_is_refused_for_that_name() {
    let rules = PublishRules {
        max_targets_per_name: 3,
        ..rules()
    };
    let requests = [
        request(
            "a/one",
            Some(1),
            &["shop.test.org"],
            &["10.0.0.1", "10.0.0.2"],
        ),
        request(
            "a/two",
            Some(2),
            &["shop.test.org"],
            &["10.0.0.2", "10.0.0.3"],
        ),
        request(
            "a/three",
            Some(3),
            &["shop.test.org", "other.test.org"],
            &["10.0.0.4"],
        ),
    ];
    let decision = decide_with(&requests, &[], &rules);
    assert_eq!(
        published(&decision),
        [
            "other.test.org 10.0.0.4 service/a/three",
            "shop.test.org 10.0.0.1 service/a/one",
            "shop.test.org 10.0.0.2 service/a/one",
            "shop.test.org 10.0.0.2 service/a/two",
            "shop.test.org 10.0.0.3 service/a/two",
        ]
    );
    assert_eq!(
        refusals(&decision),
        [("service/a/three".to_owned(), RejectionKind::Limit)]
    );
    assert!(decision.refusals[0].reason.contains(
        "would have 4 targets with this object's, more than the limit of 3 (--max-targets-per-name)"
    ));
}

#[test]
fn an_object_over_a_limit_keeps_what_it_had_under_the_same_rules_and_others_are_untouched() {
    let existing = [
        ours("big.test.org", "10.0.0.1", "a/big"),
        ours("big.test.org", "10.0.0.2", "a/big"),
        ours("other.test.org", "10.0.0.9", "a/other"),
    ];
    let mut big = request("a/big", Some(1), &[], &[]);
    big.keep_published = true;
    let other = request("a/other", Some(2), &["other.test.org"], &["10.0.0.9"]);
    let decision = decide_with(&[big.clone(), other.clone()], &existing, &rules());
    assert_eq!(
        published(&decision),
        [
            "big.test.org 10.0.0.1 service/a/big",
            "big.test.org 10.0.0.2 service/a/big",
            "other.test.org 10.0.0.9 service/a/other",
        ]
    );
    // What it kept passes the rules again: an allow-list that no longer covers it drops it.
    let rules = PublishRules {
        namespace_domains: BTreeMap::from([(
            "a".to_owned(),
            vec![NamePattern::new("other.test.org")],
        )]),
        ..rules()
    };
    let decision = decide_with(&[big, other], &existing, &rules);
    assert_eq!(
        published(&decision),
        ["other.test.org 10.0.0.9 service/a/other"]
    );
    assert_eq!(decision.refusals[0].field, KEPT_FIELD);
}

#[test]
fn name_patterns_match_on_label_boundaries() {
    let below = NamePattern::new("*.apps.test.org");
    assert!(below.matches("x.apps.test.org") && below.matches("*.apps.test.org"));
    assert!(below.matches("a.b.apps.test.org"));
    assert!(!below.matches("apps.test.org") && !below.matches("xapps.test.org"));
    let exact = NamePattern::new("shop.test.org");
    assert!(exact.matches("shop.test.org") && !exact.matches("a.shop.test.org"));
    assert_eq!(below.to_string(), "*.apps.test.org");
}
