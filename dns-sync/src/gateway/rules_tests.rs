use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::*;
use crate::gateway::api::{AllowedRoutes, RouteGroupKind, RouteNamespaces};

#[test]
fn hostnames_intersect_as_the_gateway_api_specifies() {
    for (listener, route, want) in [
        // Either side unset accepts anything: the other side is the name.
        (None, Some("a.test.org"), Some("a.test.org")),
        (Some("*.test.org"), None, Some("*.test.org")),
        (None, None, None),
        (Some("a.test.org"), Some("a.test.org"), Some("a.test.org")),
        (Some("a.test.org"), Some("b.test.org"), None),
        // A wildcard covers one or more labels, never its own suffix.
        (Some("*.test.org"), Some("a.test.org"), Some("a.test.org")),
        (
            Some("*.test.org"),
            Some("a.b.test.org"),
            Some("a.b.test.org"),
        ),
        (Some("a.test.org"), Some("*.test.org"), Some("a.test.org")),
        (Some("*.test.org"), Some("test.org"), None),
        (Some("test.org"), Some("*.test.org"), None),
        (Some("*.test.org"), Some("atest.org"), None),
        // Of two wildcards, the narrower.
        (
            Some("*.test.org"),
            Some("*.a.test.org"),
            Some("*.a.test.org"),
        ),
        (
            Some("*.a.test.org"),
            Some("*.test.org"),
            Some("*.a.test.org"),
        ),
        (Some("*.a.test.org"), Some("*.b.test.org"), None),
    ] {
        assert_eq!(
            intersect(listener, route).as_deref(),
            want,
            "{listener:?} and {route:?}"
        );
    }
}

/// Whether host name pattern `pattern` (a name, or `*.suffix`) covers `name` (which may be a wildcard too).
fn covers(pattern: &str, name: &str) -> bool {
    pattern == name
        || pattern
            .strip_prefix('*')
            .is_some_and(|suffix| name.len() > suffix.len() && name.ends_with(suffix))
}

/// Host names over a few labels, half of them wildcards.
fn host_name() -> impl proptest::strategy::Strategy<Value = Option<String>> {
    use proptest::prelude::*;
    let label = prop::sample::select(vec!["a", "b", "x"]);
    (
        prop::collection::vec(label, 0..3),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(labels, wildcard, any)| {
            if any {
                return None;
            }
            let mut name: Vec<&str> = if wildcard { vec!["*"] } else { Vec::new() };
            name.extend(labels);
            name.extend(["test", "org"]);
            Some(name.join("."))
        })
}

proptest::proptest! {
    /// The intersection does not depend on which side is the listener, is covered by both sides, and
    /// covers every concrete name both sides cover.
    #[test]
    fn the_intersection_is_symmetric_and_exactly_what_both_sides_take(
        listener in host_name(),
        route in host_name(),
        probe in host_name(),
    ) {
        let (l, r) = (listener.as_deref(), route.as_deref());
        let both = intersect(l, r);
        proptest::prop_assert_eq!(&both, &intersect(r, l));
        let takes = |side: Option<&str>, name: &str| side.is_none_or(|p| covers(p, name));
        if let Some(name) = &both {
            proptest::prop_assert!(takes(l, name) && takes(r, name), "{name}");
        }
        let concrete = probe.filter(|p| !p.starts_with('*'));
        if let Some(probe) = concrete
            && takes(l, &probe)
            && takes(r, &probe)
            && (l.is_some() || r.is_some())
        {
            let found = both.as_deref().is_some_and(|b| covers(b, &probe));
            proptest::prop_assert!(found, "{probe} {both:?}");
        }
    }
}

#[test]
fn route_kinds_attach_to_the_protocols_external_dns_pairs_them_with() {
    use RouteKind::*;
    for (kind, yes, no) in [
        (Http, &["HTTP", "HTTPS"][..], &["TLS", "TCP", "UDP"][..]),
        (Grpc, &["HTTP", "HTTPS"], &["TLS", "TCP", "UDP"]),
        (Tls, &["TLS"], &["HTTPS", "TCP", "UDP"]),
        (Tcp, &["TCP", "TLS"], &["HTTP", "UDP"]),
        (Udp, &["UDP"], &["TCP", "HTTP", "example.com/custom"]),
    ] {
        assert!(yes.iter().all(|p| protocol_matches(kind, p)), "{kind:?}");
        assert!(!no.iter().any(|p| protocol_matches(kind, p)), "{kind:?}");
    }
}

fn condition(type_: &str, status: &str) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
    }
}

#[test]
fn only_an_accepted_true_condition_accepts() {
    assert!(accepted(&[
        condition("ResolvedRefs", "False"),
        condition("Accepted", "True")
    ]));
    assert!(!accepted(&[condition("Accepted", "False")]));
    assert!(!accepted(&[condition("Accepted", "Unknown")]));
    assert!(!accepted(&[condition("ResolvedRefs", "True")]));
    assert!(!accepted(&[]));
}

fn parent(namespace: Option<&str>, name: &str) -> ParentReference {
    ParentReference {
        namespace: namespace.map(str::to_owned),
        name: name.to_owned(),
        ..ParentReference::default()
    }
}

#[test]
fn parents_default_to_a_gateway_in_the_routes_namespace() {
    assert_eq!(
        gateway_of(&parent(None, "gw"), "apps"),
        Some(("apps", "gw"))
    );
    assert_eq!(
        gateway_of(&parent(Some("infra"), "gw"), "apps"),
        Some(("infra", "gw"))
    );
    let service = ParentReference {
        group: Some(String::new()),
        kind: Some("Service".to_owned()),
        ..parent(None, "mesh")
    };
    assert_eq!(gateway_of(&service, "apps"), None);
    // A status entry counts only while the spec still names that Gateway (any section of it).
    let spec = [ParentReference {
        section_name: Some("https".to_owned()),
        ..parent(Some("infra"), "gw")
    }];
    assert!(asked_for(&spec, &parent(Some("infra"), "gw"), "apps"));
    assert!(!asked_for(&spec, &parent(None, "gw"), "apps"));
    assert!(!asked_for(&spec, &parent(Some("infra"), "other"), "apps"));
}

fn listener(name: &str, port: i32) -> Listener {
    Listener {
        name: name.to_owned(),
        port,
        protocol: "HTTP".to_owned(),
        ..Listener::default()
    }
}

#[test]
fn section_name_and_port_select_listeners() {
    let listeners = [
        listener("http", 80),
        listener("alt", 8080),
        listener("https", 443),
    ];
    let names = |reference: ParentReference| -> Vec<String> {
        selected(&listeners, &reference)
            .map(|l| l.name.clone())
            .collect()
    };
    assert_eq!(names(parent(None, "gw")), ["http", "alt", "https"]);
    let section = ParentReference {
        section_name: Some("alt".to_owned()),
        ..parent(None, "gw")
    };
    assert_eq!(names(section.clone()), ["alt"]);
    let port = ParentReference {
        port: Some(443),
        ..parent(None, "gw")
    };
    assert_eq!(names(port), ["https"]);
    let mismatch = ParentReference {
        port: Some(443),
        ..section
    };
    assert!(names(mismatch).is_empty());
    let missing = ParentReference {
        section_name: Some("nope".to_owned()),
        ..parent(None, "gw")
    };
    assert!(names(missing).is_empty());
}

fn allowing(from: Option<&str>, selector: Option<LabelSelector>, kinds: &[&str]) -> Listener {
    Listener {
        allowed_routes: Some(AllowedRoutes {
            namespaces: Some(RouteNamespaces {
                from: from.map(str::to_owned),
                selector,
            }),
            kinds: kinds
                .iter()
                .map(|k| RouteGroupKind {
                    group: None,
                    kind: (*k).to_owned(),
                })
                .collect(),
        }),
        ..listener("http", 80)
    }
}

#[test]
fn allowed_routes_check_the_namespace_and_the_kind() {
    let labels: BTreeMap<String, String> = [("team".to_owned(), "web".to_owned())].into();
    let http = RouteKind::Http;
    // No allowedRoutes at all: the Gateway's own namespace only.
    assert_eq!(
        allowed(&listener("l", 80), "infra", "infra", None, http),
        Ok(())
    );
    assert_eq!(
        allowed(&listener("l", 80), "infra", "apps", None, http),
        Err(Refusal::OtherNamespace)
    );
    assert_eq!(
        allowed(
            &allowing(Some("Same"), None, &[]),
            "infra",
            "apps",
            None,
            http
        ),
        Err(Refusal::OtherNamespace)
    );
    assert_eq!(
        allowed(
            &allowing(Some("All"), None, &[]),
            "infra",
            "apps",
            None,
            http
        ),
        Ok(())
    );
    let selector = LabelSelector {
        match_labels: Some([("team".to_owned(), "web".to_owned())].into()),
        ..LabelSelector::default()
    };
    let by_label = allowing(Some("Selector"), Some(selector), &[]);
    assert_eq!(
        allowed(&by_label, "infra", "apps", Some(&labels), http),
        Ok(())
    );
    assert_eq!(
        allowed(&by_label, "infra", "apps", Some(&BTreeMap::new()), http),
        Err(Refusal::NamespaceNotSelected)
    );
    assert_eq!(
        allowed(&by_label, "infra", "gone", None, http),
        Err(Refusal::NamespaceNotSelected)
    );
    assert!(matches!(
        allowed(
            &allowing(Some("Elsewhere"), None, &[]),
            "infra",
            "infra",
            None,
            http
        ),
        Err(Refusal::BadRule(_))
    ));
    let only_grpc = allowing(Some("All"), None, &["GRPCRoute"]);
    assert_eq!(
        allowed(&only_grpc, "infra", "apps", None, http),
        Err(Refusal::Kind)
    );
    assert_eq!(
        allowed(&only_grpc, "infra", "apps", None, RouteKind::Grpc),
        Ok(())
    );
}
