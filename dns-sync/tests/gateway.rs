//! Gateway API routes (`--source gateway-*route`) against the real kube-apiserver serving the Gateway API
//! v1.4.0 CRDs (upstream's files, from the Go module), etcd and dns-server. The tests write the Gateways'
//! and routes' status themselves, as a gateway controller would: addresses on the Gateway, an `Accepted`
//! condition per parent on the route.

// Helpers of this test file panic like assertions do: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use integration_tests::daemon::Daemon;
use integration_tests::etcd::Etcd;
use integration_tests::gateway_api::{
    api, create, set_gateway_addresses, set_route_status, version_of,
};
use integration_tests::kube::{GatewayApiChannel, KubeCluster, gateway_api_crds};
use integration_tests::peers::external_dns_once;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

mod support;

use support::{
    HOSTNAME, OWNER, TARGET, create_namespaces, dns_server, events_with_type, failed_start_log,
    records_of, run_once, served_pairs, start_sync_with, sync_launcher, wait_answer, wait_event,
    wait_hosts,
};

const WAIT: Duration = Duration::from_secs(20);
const ALL_ROUTES: &str =
    "gateway-httproute,gateway-grpcroute,gateway-tlsroute,gateway-tcproute,gateway-udproute";

/// A Gateway `namespace/name` of class `lab` with `listeners`, at `ips`.
async fn create_gateway(
    cluster: &KubeCluster,
    namespace: &str,
    name: &str,
    annotations: Value,
    listeners: Value,
    ips: &[&str],
) {
    let spec = json!({"gatewayClassName": "lab", "listeners": listeners});
    create(cluster, "Gateway", namespace, name, annotations, spec)
        .await
        .unwrap();
    if !ips.is_empty() {
        set_gateway_addresses(cluster, namespace, name, ips)
            .await
            .unwrap();
    }
}

/// Gateway `infra/edge` with `listeners`, at `ip`.
async fn create_edge(cluster: &KubeCluster, listeners: Value, ip: &str) {
    create_gateway(cluster, "infra", "edge", json!({}), listeners, &[ip]).await;
}

/// A route of `kind` in `namespace` with `hostnames` (none for TCP and UDP routes) attached to `parent`,
/// and its status saying whether that parent accepted it.
#[allow(clippy::too_many_arguments)]
async fn create_route(
    cluster: &KubeCluster,
    kind: &str,
    namespace: &str,
    name: &str,
    annotations: Value,
    hostnames: &[&str],
    parent: Value,
    accepted: bool,
) {
    let mut spec = json!({"parentRefs": [parent.clone()]});
    if version_of(kind) == "v1alpha2" {
        // TLS, TCP and UDP routes must forward somewhere.
        spec["rules"] = json!([{"backendRefs": [{"name": "backend", "port": 443}]}]);
    }
    if !hostnames.is_empty() {
        spec["hostnames"] = json!(hostnames);
    }
    create(cluster, kind, namespace, name, annotations, spec)
        .await
        .unwrap();
    set_route_status(cluster, kind, namespace, name, &[(parent, accepted)])
        .await
        .unwrap();
}

/// Routes in `apps`, each (kind, name, annotations, hostnames, parent) accepted by its parent.
async fn create_accepted_routes<'a>(
    cluster: &KubeCluster,
    routes: impl IntoIterator<Item = (&'a str, &'a str, Value, &'a [&'a str], Value)>,
) {
    for (kind, name, annotations, hostnames, parent) in routes {
        create_route(
            cluster,
            kind,
            "apps",
            name,
            annotations,
            hostnames,
            parent,
            true,
        )
        .await;
    }
}

/// `HTTPRoute` `apps/refused` for `refused.apps.test.org`, which listener `apps` of `infra/edge` did not accept.
async fn create_refused_route(cluster: &KubeCluster) {
    let parent = json!({"name": "edge", "namespace": "infra", "sectionName": "apps"});
    let hostnames = ["refused.apps.test.org"];
    create_route(
        cluster,
        "HTTPRoute",
        "apps",
        "refused",
        json!({}),
        &hostnames,
        parent,
        false,
    )
    .await;
}

/// An `HTTPRoute` without annotations, accepted by `parent`.
async fn http_route(
    cluster: &KubeCluster,
    namespace: &str,
    name: &str,
    hostnames: &[&str],
    parent: Value,
) {
    create_route(
        cluster,
        "HTTPRoute",
        namespace,
        name,
        json!({}),
        hostnames,
        parent,
        true,
    )
    .await;
}

/// Listener `name` for `protocol` on `port` with `hostname`, taking routes from every namespace (`TLS` ones
/// pass through, `HTTPS` ones terminate with a certificate nobody checks here).
fn listener(name: &str, protocol: &str, port: u16, hostname: Option<&str>) -> Value {
    let mut listener = json!({"name": name, "port": port, "protocol": protocol,
                              "allowedRoutes": {"namespaces": {"from": "All"}}});
    if let Some(hostname) = hostname {
        listener["hostname"] = hostname.into();
    }
    match protocol {
        "TLS" => listener["tls"] = json!({"mode": "Passthrough"}),
        "HTTPS" => {
            listener["tls"] =
                json!({"mode": "Terminate", "certificateRefs": [{"name": "wildcard"}]});
        }
        _ => {}
    }
    listener
}

/// The TLS (`*.tls.test.org`), TCP and UDP listeners `tls`, `tcp` and `udp`.
fn layer4_listeners() -> [Value; 3] {
    [
        listener("tls", "TLS", 8443, Some("*.tls.test.org")),
        listener("tcp", "TCP", 5432, None),
        listener("udp", "UDP", 5353, None),
    ]
}

/// Listener `shop` for `shop.test.org`, taking routes from its Gateway's namespace only (the default).
fn shop_listener() -> Value {
    json!({"name": "shop", "port": 8080, "protocol": "HTTP", "hostname": "shop.test.org"})
}

/// Listener `team` for `team.test.org`, taking routes from the namespaces labelled as `apps` (the apiserver
/// labels each namespace with its name).
fn team_listener() -> Value {
    json!({"name": "team", "port": 8081, "protocol": "HTTP", "hostname": "team.test.org",
           "allowedRoutes": {"namespaces": {"from": "Selector",
              "selector": {"matchLabels": {"kubernetes.io/metadata.name": "apps"}}}}})
}

/// Starts the kube-apiserver with the Gateway API CRDs of `channel` and namespaces `infra` and `apps`.
async fn cluster_with(channel: GatewayApiChannel) -> KubeCluster {
    let cluster = KubeCluster::start().await.unwrap();
    cluster
        .install_crds(&gateway_api_crds(channel).unwrap())
        .await
        .unwrap();
    create_namespaces(&cluster, &["infra", "apps"]).await;
    cluster
}

/// dns-sync reading `sources`, started and ready.
fn start(cluster: &KubeCluster, etcd: &Etcd, sources: &str) -> Daemon {
    let mut sync = start_sync_with(cluster, etcd, |s| s.flag("--source", sources));
    sync.wait_ready(WAIT).unwrap();
    sync
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_kind_answers_at_its_gateways_address_and_follows_it_until_deleted() {
    let cluster = cluster_with(GatewayApiChannel::Experimental).await;
    let etcd = Etcd::start().await.unwrap();
    let _sync = start(&cluster, &etcd, ALL_ROUTES);
    let [tls, tcp, udp] = layer4_listeners();
    let listeners = json!([
        listener("http", "HTTP", 80, Some("*.test.org")),
        listener("https", "HTTPS", 443, Some("*.test.org")),
        tls,
        tcp,
        udp,
    ]);
    create_edge(&cluster, listeners, "10.10.39.200").await;
    let edge = json!({"name": "edge", "namespace": "infra"});
    let ttl = json!({"external-dns.alpha.kubernetes.io/ttl": "60"});
    let cases: [(&str, &str, Value, &[&str], &str); 5] = [
        ("HTTPRoute", "web", ttl, &["web.test.org"], "web.test.org"),
        (
            "GRPCRoute",
            "api",
            json!({}),
            &["api.test.org"],
            "api.test.org",
        ),
        // No hostnames of its own: the listener's wildcard is the name.
        ("TLSRoute", "secure", json!({}), &[], "*.tls.test.org"),
        (
            "TCPRoute",
            "db",
            json!({HOSTNAME: "db.test.org"}),
            &[],
            "db.test.org",
        ),
        (
            "UDPRoute",
            "dns",
            json!({HOSTNAME: "udp.test.org"}),
            &[],
            "udp.test.org",
        ),
    ];
    let routes = cases.iter().map(|(kind, name, annotations, hostnames, _)| {
        (*kind, *name, annotations.clone(), *hostnames, edge.clone())
    });
    create_accepted_routes(&cluster, routes).await;
    for (kind, name, _, _, published) in &cases {
        wait_hosts(&etcd, published, OWNER, &["10.10.39.200"]).await;
        let (_, record, _) = records_of(&etcd, published).await.remove(0);
        let id = format!("{}/apps/{name}", kind.to_ascii_lowercase());
        assert_eq!(record.resource, id);
    }
    let (_, web, _) = records_of(&etcd, "web.test.org").await.remove(0);
    assert_eq!(web.ttl, 60, "the ttl annotation");

    let (_dns, dns) = dns_server(&etcd);
    for name in [
        "web.test.org",
        "api.test.org",
        "a.tls.test.org",
        "db.test.org",
        "udp.test.org",
    ] {
        wait_answer(dns, "A", name, &["10.10.39.200"]);
    }

    // The Gateway moves: every route's names follow.
    set_gateway_addresses(&cluster, "infra", "edge", &["10.10.39.201"])
        .await
        .unwrap();
    for (_, _, _, _, published) in &cases {
        wait_hosts(&etcd, published, OWNER, &["10.10.39.201"]).await;
    }
    wait_answer(dns, "A", "web.test.org", &["10.10.39.201"]);

    // A deleted route takes its records along; the others stay.
    api(&cluster, "HTTPRoute", "apps")
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    wait_hosts(&etcd, "web.test.org", OWNER, &[]).await;
    wait_answer(dns, "A", "web.test.org", &[]);
    wait_hosts(&etcd, "api.test.org", OWNER, &["10.10.39.201"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn listeners_acceptance_and_allowed_routes_decide_which_names_are_published() {
    let cluster = cluster_with(GatewayApiChannel::Standard).await;
    let etcd = Etcd::start().await.unwrap();
    let _sync = start(&cluster, &etcd, "gateway-httproute");
    let listeners = json!([
        listener("apps", "HTTP", 80, Some("*.apps.test.org")),
        // From its own namespace only (the default).
        shop_listener(),
        // From the namespaces whose labels match.
        team_listener(),
    ]);
    create_edge(&cluster, listeners, "10.10.39.210").await;
    let section = |name: &str| json!({"name": "edge", "namespace": "infra", "sectionName": name});

    // Written first, so the sync that publishes the last route has seen them all.
    // A parent that did not accept the route.
    create_refused_route(&cluster).await;
    // The shop listener takes routes from `infra` only.
    let shop = section("shop");
    http_route(&cluster, "apps", "shop", &["shop.test.org"], shop.clone()).await;
    // sectionName picks the shop listener, whose hostname the route's does not intersect (the apps listener
    // would take it).
    http_route(
        &cluster,
        "infra",
        "elsewhere",
        &["b.apps.test.org"],
        shop.clone(),
    )
    .await;
    // The selector lets `apps` in, not `infra` (which asked first, so it would hold the name if allowed).
    let team = section("team");
    http_route(&cluster, "infra", "team", &["team.test.org"], team.clone()).await;
    http_route(&cluster, "apps", "team", &["team.test.org"], team).await;
    // Wildcards: the route's narrower wildcard and a name below the listener's are published; a name
    // outside it is not, and is reported.
    let hostnames = ["a.apps.test.org", "*.x.apps.test.org", "other.test.org"];
    http_route(&cluster, "apps", "wild", &hostnames, section("apps")).await;
    http_route(&cluster, "infra", "shop", &[], shop).await;

    wait_hosts(&etcd, "shop.test.org", OWNER, &["10.10.39.210"]).await;
    let (_, record, _) = records_of(&etcd, "shop.test.org").await.remove(0);
    assert_eq!(
        record.resource, "httproute/infra/shop",
        "not the route from apps"
    );
    wait_hosts(&etcd, "team.test.org", OWNER, &["10.10.39.210"]).await;
    let (_, record, _) = records_of(&etcd, "team.test.org").await.remove(0);
    assert_eq!(
        record.resource, "httproute/apps/team",
        "not the route from infra"
    );
    wait_hosts(&etcd, "a.apps.test.org", OWNER, &["10.10.39.210"]).await;
    wait_hosts(&etcd, "*.x.apps.test.org", OWNER, &["10.10.39.210"]).await;
    for name in ["refused.apps.test.org", "b.apps.test.org", "other.test.org"] {
        assert!(records_of(&etcd, name).await.is_empty(), "{name}");
    }
    wait_event(
        &cluster,
        "apps",
        "wild",
        "Rejected",
        &["spec.hostnames", "other.test.org", "no listener"],
    )
    .await;
    wait_event(
        &cluster,
        "infra",
        "elsewhere",
        "Rejected",
        &["spec.hostnames", "b.apps.test.org"],
    )
    .await;

    // Once accepted, the refused route publishes.
    set_route_status(
        &cluster,
        "HTTPRoute",
        "apps",
        "refused",
        &[(section("apps"), true)],
    )
    .await
    .unwrap();
    wait_hosts(&etcd, "refused.apps.test.org", OWNER, &["10.10.39.210"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn annotations_on_the_route_and_the_gateway_set_targets_and_a_gateway_without_address_waits()
{
    let cluster = cluster_with(GatewayApiChannel::Standard).await;
    let etcd = Etcd::start().await.unwrap();
    let _sync = start(&cluster, &etcd, "gateway-httproute,gateway-grpcroute");
    let listeners = json!([listener("http", "HTTP", 80, None)]);
    // A Gateway whose target annotation replaces its addresses (external-dns reads it there).
    let lb = json!({TARGET: "10.10.39.250"});
    create_gateway(
        &cluster,
        "infra",
        "edge",
        lb,
        listeners.clone(),
        &["10.10.39.220"],
    )
    .await;
    create_gateway(&cluster, "infra", "pending", json!({}), listeners, &[]).await;
    let edge = json!({"name": "edge", "namespace": "infra"});
    let pending = json!({"name": "pending", "namespace": "infra"});

    http_route(&cluster, "apps", "web", &["web.test.org"], edge.clone()).await;
    wait_hosts(&etcd, "web.test.org", OWNER, &["10.10.39.250"]).await;
    // The route's own annotations: more names, and targets of its own.
    let annotations = json!({HOSTNAME: "extra.test.org", TARGET: "10.10.39.251"});
    create_route(
        &cluster,
        "GRPCRoute",
        "apps",
        "api",
        annotations,
        &["api.test.org"],
        edge,
        true,
    )
    .await;
    wait_hosts(&etcd, "api.test.org", OWNER, &["10.10.39.251"]).await;
    wait_hosts(&etcd, "extra.test.org", OWNER, &["10.10.39.251"]).await;

    // A bad hostname annotation is a Warning naming it; the route's good names still publish.
    let bad = json!({HOSTNAME: "bad_name.test.org"});
    create_route(
        &cluster,
        "HTTPRoute",
        "apps",
        "bad",
        bad,
        &["good.test.org"],
        json!({"name": "edge", "namespace": "infra"}),
        true,
    )
    .await;
    wait_hosts(&etcd, "good.test.org", OWNER, &["10.10.39.250"]).await;
    wait_event(
        &cluster,
        "apps",
        "bad",
        "Rejected",
        &[HOSTNAME, "bad_name.test.org"],
    )
    .await;

    // Attached to a Gateway that has no address yet: a Normal WaitingForAddress, then published.
    http_route(&cluster, "apps", "early", &["early.test.org"], pending).await;
    wait_event(
        &cluster,
        "apps",
        "early",
        "WaitingForAddress",
        &["status.addresses"],
    )
    .await;
    let events = events_with_type(&cluster, "apps", "early").await;
    assert!(
        events.iter().all(|(type_, _, _)| type_ == "Normal"),
        "{events:?}"
    );
    set_gateway_addresses(&cluster, "infra", "pending", &["10.10.39.221"])
        .await
        .unwrap();
    wait_hosts(&etcd, "early.test.org", OWNER, &["10.10.39.221"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_and_route_filters_and_the_fqdn_template_apply_as_to_other_sources() {
    let cluster = cluster_with(GatewayApiChannel::Standard).await;
    let etcd = Etcd::start().await.unwrap();
    let mut sync = start_sync_with(&cluster, &etcd, |s| {
        s.flag("--source", "gateway-httproute")
            .flag("--gateway-label-filter", "dns=public")
            .namespace("apps")
            .fqdn_template("{{.Name}}.{{.Namespace}}.test.org")
    });
    sync.wait_ready(WAIT).unwrap();
    let listeners = json!([listener("http", "HTTP", 80, None)]);
    let public = json!({"name": "public", "namespace": "infra"});
    let private = json!({"name": "private", "namespace": "infra"});
    create_gateway(
        &cluster,
        "infra",
        "private",
        json!({}),
        listeners.clone(),
        &["10.10.39.231"],
    )
    .await;
    create_gateway(
        &cluster,
        "infra",
        "public",
        json!({}),
        listeners,
        &["10.10.39.230"],
    )
    .await;
    let labels = json!({"metadata": {"labels": {"dns": "public"}}});
    api(&cluster, "Gateway", "infra")
        .patch("public", &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .unwrap();
    // Outside --namespace: never published.
    http_route(
        &cluster,
        "infra",
        "outside",
        &["outside.test.org"],
        public.clone(),
    )
    .await;
    // No hostnames and a listener without one: the template names it; only the labelled Gateway counts.
    create(
        &cluster,
        "HTTPRoute",
        "apps",
        "web",
        json!({}),
        json!({"parentRefs": [public.clone(), private.clone()]}),
    )
    .await
    .unwrap();
    set_route_status(
        &cluster,
        "HTTPRoute",
        "apps",
        "web",
        &[(public, true), (private, true)],
    )
    .await
    .unwrap();
    wait_hosts(&etcd, "web.apps.test.org", OWNER, &["10.10.39.230"]).await;
    assert!(records_of(&etcd, "outside.test.org").await.is_empty());
}

/// The real external-dns v0.20.0 and dns-sync, each once over the same objects into its own etcd, serve the
/// same names at the same addresses: wildcards, sectionName, allowedRoutes Same and Selector, a parent that
/// did not accept, every route kind, a Gateway's target annotation. (Where the two differ on purpose, see
/// docs/dns-sync.md, is left out: a route's own target annotation, a TCP route on a TLS listener, names under
/// `dns.<zone>`, which dns-sync reserves for dns-server.)
#[tokio::test(flavor = "multi_thread")]
async fn the_same_gateways_and_routes_publish_the_same_names_as_external_dns() {
    let cluster = cluster_with(GatewayApiChannel::Experimental).await;
    let [tls, tcp, udp] = layer4_listeners();
    let listeners = json!([
        listener("apps", "HTTP", 80, Some("*.apps.test.org")),
        shop_listener(),
        team_listener(),
        tls,
        tcp,
        udp,
    ]);
    create_edge(&cluster, listeners, "10.10.39.240").await;
    let open = json!([listener("http", "HTTP", 80, None)]);
    let lb = json!({TARGET: "10.10.39.241"});
    create_gateway(&cluster, "infra", "lb", lb, open, &["10.10.39.242"]).await;
    let section = |name: &str| json!({"name": "edge", "namespace": "infra", "sectionName": name});
    let hostnames = ["a.apps.test.org", "*.x.apps.test.org", "other.test.org"];
    http_route(&cluster, "apps", "wild", &hostnames, section("apps")).await;
    http_route(
        &cluster,
        "apps",
        "shop",
        &["shop.test.org"],
        section("shop"),
    )
    .await;
    http_route(&cluster, "infra", "shop", &[], section("shop")).await;
    http_route(
        &cluster,
        "apps",
        "team",
        &["team.test.org"],
        section("team"),
    )
    .await;
    let lb = json!({"name": "lb", "namespace": "infra"});
    http_route(&cluster, "apps", "lb", &["lb.test.org"], lb).await;
    create_refused_route(&cluster).await;
    let edge = json!({"name": "edge", "namespace": "infra"});
    let routes: [(&str, &str, Value, &[&str], Value); 4] = [
        ("GRPCRoute", "api", json!({}), &["api.apps.test.org"], edge),
        ("TLSRoute", "secure", json!({}), &[], section("tls")),
        (
            "TCPRoute",
            "db",
            json!({HOSTNAME: "db.test.org"}),
            &[],
            section("tcp"),
        ),
        // Not dns.test.org: dns-sync keeps `dns.<zone>` for dns-server's own records.
        (
            "UDPRoute",
            "udp",
            json!({HOSTNAME: "udp.test.org"}),
            &[],
            section("udp"),
        ),
    ];
    create_accepted_routes(&cluster, routes).await;

    let theirs = Etcd::start().await.unwrap();
    let sources: Vec<String> = ALL_ROUTES
        .split(',')
        .map(|s| format!("--source={s}"))
        .collect();
    let mut args: Vec<&str> = sources.iter().map(String::as_str).collect();
    args.extend(["--domain-filter=test.org", "--txt-owner-id=extdns"]);
    external_dns_once(cluster.kubeconfig(), &theirs, &args)
        .await
        .unwrap();
    let ours = Etcd::start().await.unwrap();
    run_once(sync_launcher(&cluster, &ours).flag("--source", ALL_ROUTES));

    let want = [
        "*.tls.test.org 10.10.39.240",
        "*.x.apps.test.org 10.10.39.240",
        "a.apps.test.org 10.10.39.240",
        "api.apps.test.org 10.10.39.240",
        "db.test.org 10.10.39.240",
        "lb.test.org 10.10.39.241",
        "shop.test.org 10.10.39.240",
        "team.test.org 10.10.39.240",
        "udp.test.org 10.10.39.240",
    ];
    assert_eq!(served_pairs(&theirs).await, want, "external-dns");
    assert_eq!(served_pairs(&ours).await, want, "dns-sync");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_kind_whose_crd_is_not_served_stops_dns_sync_at_start_naming_both() {
    // The standard channel: no TCPRoute.
    let cluster = cluster_with(GatewayApiChannel::Standard).await;
    let etcd = Etcd::start().await.unwrap();
    let launcher =
        sync_launcher(&cluster, &etcd).flag("--source", "gateway-httproute,gateway-tcproute");
    let log = failed_start_log(&launcher);
    assert!(
        log.contains("--source gateway-tcproute")
            && log.contains("tcproutes.gateway.networking.k8s.io/v1alpha2"),
        "{log}"
    );
}
