//! How objects become endpoints, and how bad input is rejected with the object and field named.

use super::*;

fn service(annotations: &[(&str, &str)], ingress: &[&str], type_: &str) -> Service {
    let annotations: BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let ingress: Vec<serde_json::Value> = ingress
        .iter()
        .map(|t| {
            if t.parse::<IpAddr>().is_ok() {
                serde_json::json!({"ip": t})
            } else {
                serde_json::json!({"hostname": t})
            }
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "shop", "annotations": annotations},
        "spec": {"type": type_},
        "status": {"loadBalancer": {"ingress": ingress}},
    }))
    .unwrap()
}

fn ingress(hosts: &[&str], class: Option<&str>, status: &[&str]) -> Ingress {
    let rules: Vec<serde_json::Value> = hosts
        .iter()
        .map(|h| serde_json::json!({"host": h}))
        .collect();
    let status: Vec<serde_json::Value> = status
        .iter()
        .map(|ip| serde_json::json!({"ip": ip}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "nginx", "namespace": "default"},
        "spec": {"ingressClassName": class, "rules": rules},
        "status": {"loadBalancer": {"ingress": status}},
    }))
    .unwrap()
}

fn names(wanted: &Wanted) -> Vec<String> {
    wanted
        .request
        .iter()
        .flat_map(Request::endpoints)
        .map(|e| format!("{} {} {:?}", e.name, e.target, e.ttl))
        .collect()
}

fn filters() -> Filters {
    Filters {
        domains: vec!["test.org".to_owned()],
        ..Filters::default()
    }
}

#[test]
fn a_load_balancer_service_publishes_each_hostname_at_each_status_address() {
    let svc = service(
        &[
            (
                "external-dns.alpha.kubernetes.io/hostname",
                "a.test.org, B.test.org.",
            ),
            ("external-dns.alpha.kubernetes.io/ttl", "120"),
        ],
        &["10.10.39.200", "fd10::200"],
        "LoadBalancer",
    );
    let wanted = from_service(&svc, &filters());
    assert!(wanted.rejections.is_empty(), "{:?}", wanted.rejections);
    assert_eq!(
        names(&wanted),
        [
            "a.test.org 10.10.39.200 Some(120)",
            "a.test.org fd10::200 Some(120)",
            "b.test.org 10.10.39.200 Some(120)",
            "b.test.org fd10::200 Some(120)",
        ]
    );
    assert_eq!(
        wanted.request.unwrap().object.to_string(),
        "service/shop/web"
    );
}

#[test]
fn the_newer_annotation_names_and_duration_ttls_work_and_targets_can_be_overridden() {
    let svc = service(
        &[
            ("external-dns.kubernetes.io/hostname", "x.test.org"),
            ("external-dns.kubernetes.io/ttl", "5m"),
            ("external-dns.alpha.kubernetes.io/target", "lb.example.net"),
        ],
        &["10.10.39.200"],
        "LoadBalancer",
    );
    assert_eq!(
        names(&from_service(&svc, &filters())),
        ["x.test.org lb.example.net Some(300)"]
    );
}

#[test]
fn services_that_are_not_load_balancers_or_not_annotated_publish_nothing() {
    let annotated = [("external-dns.alpha.kubernetes.io/hostname", "a.test.org")];
    assert_eq!(
        from_service(&service(&annotated, &["10.0.0.1"], "ClusterIP"), &filters()),
        Wanted::default()
    );
    assert_eq!(
        from_service(&service(&[], &["10.0.0.1"], "LoadBalancer"), &filters()),
        Wanted::default()
    );
}

#[test]
fn bad_input_is_rejected_naming_object_and_field_and_good_names_still_publish() {
    let svc = service(
        &[(
            "external-dns.alpha.kubernetes.io/hostname",
            "ok.test.org,-bad.test.org,outside.example.com,a..test.org",
        )],
        &["10.10.39.200"],
        "LoadBalancer",
    );
    let wanted = from_service(&svc, &filters());
    assert_eq!(names(&wanted), ["ok.test.org 10.10.39.200 None"]);
    assert_eq!(wanted.rejections.len(), 3, "{:?}", wanted.rejections);
    for rejection in &wanted.rejections {
        assert_eq!(rejection.object.to_string(), "service/shop/web");
        assert_eq!(rejection.field, "external-dns.alpha.kubernetes.io/hostname");
    }
    assert!(
        wanted.rejections.iter().any(|r| r
            .reason
            .contains("\"outside.example.com\" is outside --domain-filter")),
        "{:?}",
        wanted.rejections
    );

    let long = format!("{}.test.org", "a".repeat(64));
    let too_long = service(
        &[("external-dns.alpha.kubernetes.io/hostname", &long)],
        &["10.0.0.1"],
        "LoadBalancer",
    );
    assert!(
        from_service(&too_long, &filters()).rejections[0]
            .reason
            .contains("1-63")
    );
}

#[test]
fn a_ttl_that_is_not_a_number_skips_the_object_with_the_annotation_named() {
    let svc = service(
        &[
            ("external-dns.alpha.kubernetes.io/hostname", "a.test.org"),
            ("external-dns.alpha.kubernetes.io/ttl", "soon"),
        ],
        &["10.0.0.1"],
        "LoadBalancer",
    );
    let wanted = from_service(&svc, &filters());
    assert!(wanted.request.is_none());
    assert_eq!(
        wanted.rejections[0].field,
        "external-dns.alpha.kubernetes.io/ttl"
    );
}

#[test]
fn ingresses_publish_their_rule_hosts_at_their_status_addresses_including_wildcards() {
    let ing = ingress(
        &["nginx.test.org", "*.apps.test.org"],
        Some("nginx"),
        &["10.10.39.200"],
    );
    let wanted = from_ingress(&ing, &filters());
    assert_eq!(
        names(&wanted),
        [
            "*.apps.test.org 10.10.39.200 None",
            "nginx.test.org 10.10.39.200 None"
        ]
    );
}

#[test]
fn an_ingress_without_status_waits_without_a_rejection_and_classes_filter() {
    // No address yet is the normal state of a new object: it waits, nobody has anything to fix.
    let pending = from_ingress(&ingress(&["nginx.test.org"], None, &[]), &filters());
    assert!(pending.request.is_none());
    assert!(pending.rejections.is_empty(), "{:?}", pending.rejections);
    assert_eq!(pending.waiting, Some("status.loadBalancer.ingress"));

    // An address that is there but unusable is a rejection, with the field.
    let broken = from_ingress(
        &ingress(&["nginx.test.org"], None, &["not-an-ip!"]),
        &filters(),
    );
    assert!(broken.request.is_none());
    assert_eq!(broken.waiting, None);
    assert!(
        broken
            .rejections
            .iter()
            .all(|r| r.field == "status.loadBalancer.ingress" && r.kind == RejectionKind::Invalid),
        "{:?}",
        broken.rejections
    );
    assert_eq!(
        broken.rejections[0].object.to_string(),
        "ingress/default/nginx"
    );

    let only_nginx = Filters {
        ingress_class: Some("nginx".to_owned()),
        ..filters()
    };
    let other = ingress(&["x.test.org"], Some("traefik"), &["10.0.0.1"]);
    assert_eq!(from_ingress(&other, &only_nginx), Wanted::default());
    let mine = ingress(&["x.test.org"], Some("nginx"), &["10.0.0.1"]);
    assert_eq!(names(&from_ingress(&mine, &only_nginx)).len(), 1);
}

#[test]
fn domain_filters_match_on_label_boundaries() {
    let f = filters();
    assert!(f.in_domain("test.org") && f.in_domain("a.test.org"));
    assert!(!f.in_domain("notatest.org") && !f.in_domain("test.org.evil"));
}

#[test]
fn excluded_domains_take_names_out_of_the_domain_filter_on_label_boundaries() {
    let f = Filters {
        excluded_domains: vec!["lab.test.org".to_owned()],
        ..filters()
    };
    assert!(f.in_domain("a.test.org") && f.in_domain("mylab.test.org"));
    assert!(!f.in_domain("lab.test.org") && !f.in_domain("x.lab.test.org"));
    let ing = ingress(&["web.test.org", "web.lab.test.org"], None, &["10.0.0.1"]);
    let wanted = from_ingress(&ing, &f);
    assert_eq!(names(&wanted), ["web.test.org 10.0.0.1 None"]);
    let refused = format!("{:?}", wanted.rejections);
    assert!(refused.contains("--exclude-domains"), "{refused}");
}

#[test]
fn targets_must_be_addresses_or_host_names() {
    assert!(validate_target("10.0.0.300").is_err());
    assert!(validate_target("*.example.com").is_err());
    assert_eq!(validate_target("LB.Example.com").unwrap(), "lb.example.com");
}

#[test]
fn an_object_over_the_per_object_limits_asks_for_nothing_new_and_names_field_and_limit() {
    let hostnames: Vec<String> = (0..1000).map(|i| format!("h{i}.test.org")).collect();
    let targets: Vec<String> = (0..1000)
        .map(|i| format!("10.1.{}.{}", i / 250, i % 250))
        .collect();
    let svc = service(
        &[
            (
                "external-dns.alpha.kubernetes.io/hostname",
                &hostnames.join(","),
            ),
            (
                "external-dns.alpha.kubernetes.io/target",
                &targets.join(","),
            ),
        ],
        &[],
        "LoadBalancer",
    );
    let wanted = from_service(&svc, &filters());
    let request = wanted.request.as_ref().unwrap();
    assert!(request.keep_published);
    assert!(request.names.is_empty() && request.targets.is_empty());
    assert_eq!(names(&wanted), Vec::<String>::new());
    let fields: Vec<(&str, RejectionKind)> = wanted
        .rejections
        .iter()
        .map(|r| (r.field.as_str(), r.kind))
        .collect();
    assert_eq!(
        fields,
        [
            (
                "external-dns.alpha.kubernetes.io/target",
                RejectionKind::Limit
            ),
            (
                "external-dns.alpha.kubernetes.io/hostname",
                RejectionKind::Limit
            ),
        ]
    );
    assert!(
        wanted.rejections[0]
            .reason
            .contains("1000 targets, more than the limit of 100 (--max-targets-per-object)"),
        "{:?}",
        wanted.rejections
    );
    assert!(
        wanted.rejections[1]
            .reason
            .contains("1000 host names, more than the limit of 100 (--max-names-per-object)")
    );
}

#[test]
fn limits_count_distinct_entries_so_repeated_rule_hosts_stay_within() {
    let hosts = vec!["a.test.org"; 150];
    let tight = Filters {
        limits: Limits {
            names_per_object: 1,
            targets_per_object: 1,
        },
        ..filters()
    };
    let wanted = from_ingress(&ingress(&hosts, None, &["10.0.0.1"]), &tight);
    assert_eq!(names(&wanted), ["a.test.org 10.0.0.1 None"]);
    let two = from_ingress(
        &ingress(&["a.test.org", "b.test.org"], None, &["10.0.0.1"]),
        &tight,
    );
    assert_eq!(two.rejections[0].kind, RejectionKind::Limit);
    assert_eq!(two.rejections[0].field, "spec.rules[].host");
}

#[test]
fn requests_carry_the_creation_time_and_the_field_of_each_name() {
    let mut svc = service(
        &[("external-dns.kubernetes.io/hostname", "a.test.org")],
        &["10.0.0.1"],
        "LoadBalancer",
    );
    svc.metadata.creation_timestamp =
        Some(serde_json::from_value(serde_json::json!("2024-01-02T03:04:05Z")).unwrap());
    let request = from_service(&svc, &filters()).request.unwrap();
    assert_eq!(request.created, Some(1_704_164_645));
    assert_eq!(
        request.names[0].field,
        "external-dns.kubernetes.io/hostname"
    );
    assert_eq!(
        ObjectId::parse(&request.object.to_string()),
        Some(request.object.clone())
    );
    assert_eq!(ObjectId::parse("pod/x/y"), None);
}

#[test]
fn fqdn_templates_name_objects_without_names_and_combine_on_request() {
    let templated = Filters {
        fqdn_templates: crate::fqdn_template::parse("{{.Name}}.{{.Namespace}}.test.org").unwrap(),
        ..filters()
    };
    // No hostname annotation: the template's name.
    let bare = service(&[], &["10.10.39.200"], "LoadBalancer");
    assert_eq!(
        names(&from_service(&bare, &templated)),
        ["web.shop.test.org 10.10.39.200 None"]
    );
    // Its own name wins, unless combined.
    let named = service(
        &[("external-dns.alpha.kubernetes.io/hostname", "own.test.org")],
        &["10.10.39.200"],
        "LoadBalancer",
    );
    assert_eq!(
        names(&from_service(&named, &templated)),
        ["own.test.org 10.10.39.200 None"]
    );
    let combined = Filters {
        combine_fqdn_annotation: true,
        ..templated.clone()
    };
    assert_eq!(
        names(&from_service(&named, &combined)),
        [
            "own.test.org 10.10.39.200 None",
            "web.shop.test.org 10.10.39.200 None"
        ]
    );
    // An Ingress without host rules gets the template's name too.
    let ingress = ingress(&[], None, &["10.10.39.201"]);
    assert_eq!(
        names(&from_ingress(&ingress, &templated)),
        ["nginx.default.test.org 10.10.39.201 None"]
    );
    // A rendered name outside the domain filter is refused naming the flag.
    let elsewhere = Filters {
        fqdn_templates: crate::fqdn_template::parse("{{.Name}}.example.com").unwrap(),
        ..filters()
    };
    let refused = from_service(&bare, &elsewhere);
    assert!(refused.request.is_none());
    assert_eq!(refused.rejections[0].field, "--fqdn-template");
}

/// A Service of `type_` with cluster IPs `ips` (`["None"]`: headless) and `annotations`.
fn with_cluster_ips(annotations: &[(&str, &str)], type_: &str, ips: &[&str]) -> Service {
    let mut svc = service(annotations, &["10.10.39.200"], type_);
    let spec = svc.spec.as_mut().unwrap();
    spec.cluster_ip = ips.first().map(|ip| (*ip).to_owned());
    spec.cluster_ips = Some(ips.iter().map(|ip| (*ip).to_owned()).collect());
    svc
}

#[test]
fn cluster_ip_services_publish_their_hostname_only_with_publish_internal_services() {
    let hostname = [("external-dns.alpha.kubernetes.io/hostname", "api.test.org")];
    let svc = with_cluster_ips(&hostname, "ClusterIP", &["10.96.0.10", "fd00::10"]);
    assert_eq!(from_service(&svc, &filters()), Wanted::default());
    let internal = Filters {
        publish_internal: true,
        ..filters()
    };
    assert_eq!(
        names(&from_service(&svc, &internal)),
        ["api.test.org 10.96.0.10 None", "api.test.org fd00::10 None"]
    );
    // A NodePort Service is not a ClusterIP one: nothing either way.
    let node_port = with_cluster_ips(&hostname, "NodePort", &["10.96.0.11"]);
    assert_eq!(from_service(&node_port, &internal), Wanted::default());
}

#[test]
fn the_internal_hostname_is_published_at_the_cluster_ips_of_any_service_but_a_headless_one() {
    let annotations = [
        (
            "external-dns.alpha.kubernetes.io/internal-hostname",
            "web.internal.test.org",
        ),
        ("external-dns.alpha.kubernetes.io/target", "192.0.2.1"),
    ];
    let load_balancer = with_cluster_ips(&annotations, "LoadBalancer", &["10.96.0.12"]);
    let wanted = internal_from_service(&load_balancer, &filters());
    assert_eq!(
        names(&wanted),
        ["web.internal.test.org 10.96.0.12 None"],
        "the target annotation is for the public names"
    );
    let headless = with_cluster_ips(&annotations, "ClusterIP", &["None"]);
    assert_eq!(
        internal_from_service(&headless, &filters()),
        Wanted::default()
    );
    // Without the annotation, nothing.
    let plain = with_cluster_ips(&[], "ClusterIP", &["10.96.0.13"]);
    assert_eq!(internal_from_service(&plain, &filters()), Wanted::default());
}

#[test]
fn a_load_balancer_service_with_external_ips_publishes_them_instead_of_its_status() {
    let mut svc = service(
        &[("external-dns.alpha.kubernetes.io/hostname", "a.test.org")],
        &["10.10.39.200"],
        "LoadBalancer",
    );
    svc.spec.as_mut().unwrap().external_ips = Some(vec!["192.0.2.50".to_owned()]);
    let wanted = from_service(&svc, &filters());
    assert!(wanted.rejections.is_empty(), "{:?}", wanted.rejections);
    assert_eq!(names(&wanted), ["a.test.org 192.0.2.50 None"]);

    svc.spec.as_mut().unwrap().external_ips = Some(vec!["192.0.2.50/32".to_owned()]);
    let wanted = from_service(&svc, &filters());
    let rejected = format!("{:?}", wanted.rejections);
    assert!(rejected.contains("spec.externalIPs"), "{rejected}");
}

/// An Ingress for `nginx.test.org` with a certificate for `*.test.org`, and `annotations`.
fn ingress_with_tls(annotations: serde_json::Value) -> Ingress {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "nginx", "namespace": "default", "annotations": annotations},
        "spec": {
            "rules": [{"host": "nginx.test.org"}],
            "tls": [{"hosts": ["*.test.org", "nginx.test.org"], "secretName": "wildcard"}],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "10.10.39.200"}]}},
    }))
    .unwrap()
}

#[test]
fn an_ingress_publishes_its_tls_hosts_too_unless_told_like_external_dns() {
    let annotated =
        serde_json::json!({"external-dns.alpha.kubernetes.io/hostname": "extra.test.org"});
    let ing = ingress_with_tls(annotated);
    assert_eq!(
        names(&from_ingress(&ing, &filters())),
        [
            "*.test.org 10.10.39.200 None",
            "extra.test.org 10.10.39.200 None",
            "nginx.test.org 10.10.39.200 None"
        ]
    );
    let no_tls = Filters {
        ignore_ingress_tls_spec: true,
        ..filters()
    };
    assert_eq!(
        names(&from_ingress(&ing, &no_tls)),
        [
            "extra.test.org 10.10.39.200 None",
            "nginx.test.org 10.10.39.200 None"
        ]
    );
    let annotation_only = Filters {
        ignore_ingress_tls_spec: true,
        ignore_ingress_rules_spec: true,
        ..filters()
    };
    assert_eq!(
        names(&from_ingress(&ing, &annotation_only)),
        ["extra.test.org 10.10.39.200 None"]
    );
    let no_annotation = Filters {
        ignore_hostname_annotation: true,
        ..filters()
    };
    assert_eq!(
        names(&from_ingress(&ing, &no_annotation)),
        [
            "*.test.org 10.10.39.200 None",
            "nginx.test.org 10.10.39.200 None"
        ]
    );
}

#[test]
fn the_hostname_source_annotation_picks_an_ingress_names_and_a_bad_value_is_refused_by_name() {
    let source = "external-dns.alpha.kubernetes.io/ingress-hostname-source";
    let pick = |value: &str| {
        let ing = ingress_with_tls(serde_json::json!({
            "external-dns.alpha.kubernetes.io/hostname": "extra.test.org",
            source: value,
        }));
        from_ingress(&ing, &filters())
    };
    assert_eq!(
        names(&pick("defined-hosts-only")),
        [
            "*.test.org 10.10.39.200 None",
            "nginx.test.org 10.10.39.200 None"
        ]
    );
    assert_eq!(
        names(&pick("Annotation-Only")),
        ["extra.test.org 10.10.39.200 None"]
    );
    let bad = pick("both");
    assert!(bad.request.is_none());
    assert_eq!(bad.rejections.len(), 1);
    assert_eq!(bad.rejections[0].field, source);
    assert!(
        bad.rejections[0].reason.contains("defined-hosts-only"),
        "{:?}",
        bad.rejections
    );
}

#[test]
fn ignoring_the_hostname_annotation_leaves_a_service_to_the_fqdn_template() {
    let svc = service(
        &[
            ("external-dns.alpha.kubernetes.io/hostname", "a.test.org"),
            (
                "external-dns.alpha.kubernetes.io/internal-hostname",
                "in.test.org",
            ),
        ],
        &["10.10.39.200"],
        "LoadBalancer",
    );
    let mut svc = svc;
    let spec = svc.spec.as_mut().unwrap();
    spec.cluster_ip = Some("10.96.0.10".to_owned());
    spec.cluster_ips = Some(vec!["10.96.0.10".to_owned()]);
    assert_eq!(
        names(&internal_from_service(&svc, &filters())),
        ["in.test.org 10.96.0.10 None"]
    );
    let ignoring = Filters {
        ignore_hostname_annotation: true,
        ..filters()
    };
    assert!(from_service(&svc, &ignoring).request.is_none());
    assert!(internal_from_service(&svc, &ignoring).request.is_none());
    let templated = Filters {
        fqdn_templates: crate::fqdn_template::parse("{{.Name}}.{{.Namespace}}.test.org").unwrap(),
        ..ignoring
    };
    assert_eq!(
        names(&from_service(&svc, &templated)),
        ["web.shop.test.org 10.10.39.200 None"]
    );
}
