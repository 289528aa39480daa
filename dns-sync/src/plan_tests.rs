//! Ownership, adoption, policy and conflict rules.

use super::*;

const OWNER: &str = "groundwork";

fn endpoint(name: &str, target: &str, object: &str) -> Endpoint {
    Endpoint {
        name: name.to_owned(),
        target: Target::host(target),
        ttl: None,
        object: ObjectId {
            kind: "service",
            namespace: "default".to_owned(),
            name: object.to_owned(),
        },
        at_name: false,
    }
}

fn rules(layout: &KeyLayout) -> Rules<'_> {
    Rules {
        layout,
        owner: OWNER,
        adopt: None,
        policy: Policy::Sync,
        allow_deletes: true,
    }
}

fn existing(key: &str, host: &str, owner: &str, revision: i64) -> Existing {
    Existing {
        key: key.to_owned(),
        mod_revision: revision,
        record: SkydnsRecord {
            host: host.to_owned(),
            target_strip: 1,
            owner: owner.to_owned(),
            ..SkydnsRecord::default()
        },
    }
}

fn our_key(name: &str, target: &str) -> String {
    KeyLayout::default()
        .record_key(name, &target_suffix(name, target))
        .unwrap()
}

/// Applies a plan to a copy of `existing` (what etcd would hold after the transaction).
fn apply(existing: &[Existing], plan: &Plan) -> Vec<Existing> {
    let mut state: BTreeMap<String, Existing> = existing
        .iter()
        .map(|e| (e.key.clone(), e.clone()))
        .collect();
    for change in &plan.changes {
        match change {
            Change::Create { key, record } | Change::Update { key, record, .. } => {
                state.insert(
                    key.clone(),
                    Existing {
                        key: key.clone(),
                        mod_revision: 99,
                        record: record.clone(),
                    },
                );
            }
            Change::Delete { key, .. } => {
                state.remove(key);
            }
        }
    }
    state.into_values().collect()
}

#[test]
fn new_records_are_created_at_deterministic_keys_in_the_external_dns_shape() {
    let layout = KeyLayout::default();
    let wanted = [endpoint("nginx.test.org", "10.10.39.200", "ingress-nginx")];
    let plan = plan(&wanted, &[], &rules(&layout));
    assert_eq!(plan.managed, 1);
    let [Change::Create { key, record }] = plan.changes.as_slice() else {
        panic!("{plan:?}");
    };
    assert_eq!(key, &our_key("nginx.test.org", "10.10.39.200"));
    assert!(key.starts_with("/skydns/org/test/nginx/"));
    assert_eq!(
        record.to_json(),
        r#"{"host":"10.10.39.200","targetstrip":1,"owner":"groundwork","resource":"service/default/ingress-nginx"}"#
    );
}

#[test]
fn applying_a_plan_twice_writes_nothing_the_second_time() {
    let layout = KeyLayout::default();
    let wanted = [
        endpoint("a.test.org", "10.0.0.1", "x"),
        endpoint("a.test.org", "10.0.0.2", "x"),
        endpoint("b.test.org", "lb.example.net", "y"),
    ];
    let first = plan(&wanted, &[], &rules(&layout));
    let state = apply(&[], &first);
    let second = plan(&wanted, &state, &rules(&layout));
    assert!(second.changes.is_empty(), "{second:?}");
    assert_eq!(second.managed, 3);
}

#[test]
fn only_our_keys_are_updated_or_deleted() {
    let layout = KeyLayout::default();
    let foreign = existing(
        "/skydns/org/test/old/1a2b3c4d",
        "10.0.0.9",
        "external-dns",
        5,
    );
    let stale = existing(&our_key("gone.test.org", "10.0.0.8"), "10.0.0.8", OWNER, 6);
    let changed = existing(&our_key("a.test.org", "10.0.0.1"), "10.0.0.1", OWNER, 7);
    let mut changed_ttl = changed.clone();
    changed_ttl.record.resource = "service/default/x".to_owned();
    let mut wanted = endpoint("a.test.org", "10.0.0.1", "x");
    wanted.ttl = Some(60);
    let plan = plan(
        &[wanted],
        &[foreign.clone(), stale.clone(), changed_ttl],
        &rules(&layout),
    );
    assert_eq!(plan.changes.len(), 2, "{plan:?}");
    assert!(
        matches!(&plan.changes[0], Change::Update { key, mod_revision: 7, record } if *key == changed.key && record.ttl == 60)
    );
    assert!(
        matches!(&plan.changes[1], Change::Delete { key, mod_revision: 6, .. } if *key == stale.key)
    );
    assert!(plan.changes.iter().all(|c| c.key() != foreign.key));
}

#[test]
fn a_foreign_key_where_ours_would_go_is_a_conflict_never_a_write() {
    let layout = KeyLayout::default();
    let key = our_key("a.test.org", "10.0.0.1");
    let squatter = existing(&key, "10.6.6.6", "someone-else", 3);
    let plan = plan(
        &[endpoint("a.test.org", "10.0.0.1", "x")],
        &[squatter],
        &rules(&layout),
    );
    assert!(plan.changes.is_empty());
    assert_eq!(plan.conflicts.len(), 1);
    assert_eq!(plan.conflicts[0].owner, "someone-else");
}

#[test]
fn two_objects_claiming_one_name_get_the_union_and_a_stable_attribution() {
    let layout = KeyLayout::default();
    let wanted = [
        endpoint("shared.test.org", "10.0.0.2", "zeta"),
        endpoint("shared.test.org", "10.0.0.1", "alpha"),
        endpoint("shared.test.org", "10.0.0.2", "beta"),
    ];
    let mut reversed = wanted.clone();
    reversed.reverse();
    let a = plan(&wanted, &[], &rules(&layout));
    let b = plan(&reversed, &[], &rules(&layout));
    assert_eq!(a, b, "order of objects does not matter");
    assert_eq!(a.changes.len(), 2);
    let resources: Vec<String> = a
        .changes
        .iter()
        .map(|c| match c {
            Change::Create { record, .. } => format!("{} {}", record.host, record.resource),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(
        resources.contains(&"10.0.0.2 service/default/beta".to_owned()),
        "{resources:?}"
    );
}

#[test]
fn adoption_rewrites_external_dns_keys_in_place_and_leaves_the_rest_alone() {
    let layout = KeyLayout::default();
    let adopted = existing(
        "/skydns/org/test/nginx/6b8b4567",
        "10.10.39.200",
        "default",
        11,
    );
    let unrelated = existing(
        "/skydns/org/test/other/327b23c6",
        "10.10.39.201",
        "default",
        12,
    );
    let mut adopting = rules(&layout);
    adopting.adopt = Some("default");
    let wanted = [endpoint("nginx.test.org", "10.10.39.200", "ingress-nginx")];
    let plan = plan(&wanted, &[adopted.clone(), unrelated.clone()], &adopting);
    let [
        Change::Update {
            key,
            mod_revision: 11,
            record,
        },
    ] = plan.changes.as_slice()
    else {
        panic!("{plan:?}");
    };
    assert_eq!(key, &adopted.key, "same key: no gap in answers");
    assert_eq!(record.owner, OWNER);
    // Without adoption the external-dns key is someone else's: we create our own beside it.
    let plain = super::plan(&wanted, &[adopted, unrelated], &rules(&layout));
    assert!(
        matches!(plain.changes.as_slice(), [Change::Create { .. }]),
        "{plain:?}"
    );
}

#[test]
fn upsert_only_and_a_stale_view_never_delete() {
    let layout = KeyLayout::default();
    let stale = existing(&our_key("gone.test.org", "10.0.0.8"), "10.0.0.8", OWNER, 6);
    let mut upsert = rules(&layout);
    upsert.policy = Policy::UpsertOnly;
    assert!(
        plan(&[], std::slice::from_ref(&stale), &upsert)
            .changes
            .is_empty()
    );
    let mut not_fresh = rules(&layout);
    not_fresh.allow_deletes = false;
    let deferred = plan(&[], &[stale], &not_fresh);
    assert!(deferred.changes.is_empty());
    assert_eq!(deferred.deferred_deletes, 1);
}

#[test]
fn create_only_creates_but_never_rewrites_adopts_or_deletes() {
    let layout = KeyLayout::default();
    let mut create_only = rules(&layout);
    create_only.policy = Policy::CreateOnly;
    create_only.adopt = Some("external-dns");
    // Ours, for a pair still wanted, but written with another TTL and for another object: left as it is.
    let kept = existing(&our_key("web.test.org", "10.0.0.1"), "10.0.0.1", OWNER, 3);
    // Adoptable, for a wanted pair: not rewritten to our owner.
    let foreign = existing(
        &our_key("shop.test.org", "10.0.0.2"),
        "10.0.0.2",
        "external-dns",
        4,
    );
    // Ours, no longer wanted: not deleted.
    let stale = existing(&our_key("gone.test.org", "10.0.0.8"), "10.0.0.8", OWNER, 6);
    let mut web = endpoint("web.test.org", "10.0.0.1", "web");
    web.ttl = Some(30);
    let wanted = [
        web,
        endpoint("shop.test.org", "10.0.0.2", "shop"),
        endpoint("new.test.org", "10.0.0.3", "new"),
    ];
    let planned = plan(&wanted, &[kept.clone(), foreign, stale], &create_only);
    let keys: Vec<&str> = planned.changes.iter().map(Change::key).collect();
    assert_eq!(
        keys,
        [our_key("new.test.org", "10.0.0.3").as_str()],
        "{planned:?}"
    );
    assert!(matches!(planned.changes[0], Change::Create { .. }));

    // The same under sync rewrites the TTL, adopts and deletes.
    let mut sync = create_only;
    sync.policy = Policy::Sync;
    let stale = existing(&our_key("gone.test.org", "10.0.0.8"), "10.0.0.8", OWNER, 6);
    let foreign = existing(
        &our_key("shop.test.org", "10.0.0.2"),
        "10.0.0.2",
        "external-dns",
        4,
    );
    assert_eq!(
        plan(&wanted, &[kept, foreign, stale], &sync).changes.len(),
        4
    );
}

#[test]
fn wildcard_names_get_a_star_label_key() {
    let layout = KeyLayout::default();
    let plan = plan(
        &[endpoint("*.apps.test.org", "10.0.0.1", "x")],
        &[],
        &rules(&layout),
    );
    assert!(
        plan.changes[0]
            .key()
            .starts_with("/skydns/org/test/apps/*/"),
        "{plan:?}"
    );
}
