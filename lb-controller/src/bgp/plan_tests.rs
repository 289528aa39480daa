use super::*;
use crate::bgp::check;
use crate::bgp::crd::{BGPAdvertisementSpec, BGPPeerSpec};

fn peer(name: &str, address: &str, nodes: &[(&str, &str)]) -> PeerDef {
    let spec = BGPPeerSpec {
        my_asn: 64512,
        peer_asn: 64500,
        peer_address: address.to_owned(),
        node_selectors: selector(nodes),
        ..BGPPeerSpec::default()
    };
    check::peer(name, &spec).unwrap().def
}

fn selector(labels: &[(&str, &str)]) -> Vec<LabelSelector> {
    if labels.is_empty() {
        return vec![];
    }
    vec![LabelSelector {
        match_labels: Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..LabelSelector::default()
    }]
}

fn advertisement(spec: BGPAdvertisementSpec) -> AdvertisementDef {
    check::advertisement("adv", &spec, &[]).unwrap().def
}

fn nodes(list: &[(&str, &[(&str, &str)])]) -> Vec<(String, BTreeMap<String, String>)> {
    list.iter()
        .map(|(name, labels)| {
            (
                (*name).to_owned(),
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        })
        .collect()
}

fn held<'a>(address: &str, pool: &'a str, service: &'a ServiceKey) -> Held<'a> {
    Held {
        address: address.parse().unwrap(),
        pool: Some(pool),
        services: vec![service],
        local: None,
    }
}

struct Fixture {
    peers: Vec<PeerDef>,
    advertisements: Vec<AdvertisementDef>,
    nodes: Vec<(String, BTreeMap<String, String>)>,
    bfd: BTreeMap<String, pb::BfdProfile>,
    pool_labels: HashMap<String, BTreeMap<String, String>>,
}

impl Fixture {
    fn new() -> Self {
        Self {
            peers: vec![peer("router", "10.10.40.1", &[])],
            advertisements: vec![advertisement(BGPAdvertisementSpec::default())],
            nodes: nodes(&[
                ("m1", &[]),
                ("n1", &[("rack", "a")]),
                ("n2", &[("rack", "b")]),
            ]),
            bfd: BTreeMap::new(),
            pool_labels: HashMap::new(),
        }
    }

    fn desired<'a>(
        &self,
        held: impl IntoIterator<Item = Held<'a>>,
    ) -> BTreeMap<String, Arc<pb::BgpConfig>> {
        desired(
            &World {
                peers: &self.peers,
                bfd_profiles: &self.bfd,
                advertisements: &self.advertisements,
                nodes: &self.nodes,
                pool_labels: &self.pool_labels,
            },
            held,
        )
    }
}

fn prefixes(config: &pb::BgpConfig) -> Vec<&str> {
    config.routes.iter().map(|r| r.prefix.as_str()).collect()
}

#[test]
fn every_eligible_node_advertises_every_address_to_its_peers() {
    let fixture = Fixture::new();
    let web = ServiceKey::new("default", "web");
    let desired = fixture.desired([held("10.10.39.200", "public", &web)]);
    assert_eq!(desired.keys().collect::<Vec<_>>(), ["m1", "n1", "n2"]);
    for config in desired.values() {
        assert_eq!(prefixes(config), ["10.10.39.200/32"]);
        assert_eq!(config.routes[0].peers, ["router"]);
        assert_eq!(config.routes[0].services, ["default/web"]);
        assert_eq!(config.peers[0].address, "10.10.40.1");
    }
}

#[test]
fn node_selectors_of_peers_and_advertisements_narrow_who_advertises() {
    let mut fixture = Fixture::new();
    fixture.peers = vec![
        peer("rack-a", "10.10.40.1", &[("rack", "a")]),
        peer("rack-b", "10.10.40.2", &[("rack", "b")]),
    ];
    fixture.advertisements = vec![advertisement(BGPAdvertisementSpec {
        node_selectors: selector(&[("rack", "b")]),
        ..BGPAdvertisementSpec::default()
    })];
    let web = ServiceKey::new("default", "web");
    let desired = fixture.desired([held("10.10.39.200", "public", &web)]);
    // m1 has no peer: no config; n1 peers with rack-a but the advertisement leaves it out.
    assert_eq!(desired.keys().collect::<Vec<_>>(), ["n1", "n2"]);
    assert!(desired["n1"].routes.is_empty());
    assert_eq!(desired["n1"].peers[0].name, "rack-a");
    assert_eq!(desired["n2"].routes[0].peers, ["rack-b"]);
}

#[test]
fn local_traffic_policy_advertises_only_from_nodes_with_a_ready_endpoint() {
    let fixture = Fixture::new();
    let web = ServiceKey::new("default", "web");
    let mut address = held("10.10.39.200", "public", &web);
    address.local = Some(BTreeSet::from(["n2".to_owned()]));
    let desired = fixture.desired([address]);
    let advertising: Vec<&str> = desired
        .iter()
        .filter(|(_, c)| !c.routes.is_empty())
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(advertising, ["n2"]);
}

#[test]
fn aggregation_merges_addresses_into_one_prefix_and_attributes_merge() {
    let mut fixture = Fixture::new();
    fixture.advertisements = vec![
        advertisement(BGPAdvertisementSpec {
            aggregation_length: Some(24),
            communities: vec!["65000:1".to_owned()],
            local_pref: Some(50),
            ..BGPAdvertisementSpec::default()
        }),
        advertisement(BGPAdvertisementSpec {
            aggregation_length: Some(24),
            communities: vec!["65000:2".to_owned()],
            local_pref: Some(200),
            ..BGPAdvertisementSpec::default()
        }),
    ];
    let (a, b) = (
        ServiceKey::new("default", "a"),
        ServiceKey::new("default", "b"),
    );
    let desired = fixture.desired([
        held("10.10.39.200", "public", &a),
        held("10.10.39.201", "public", &b),
    ]);
    let routes = &desired["m1"].routes;
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0].prefix, "10.10.39.0/24");
    assert_eq!(
        routes[0].communities,
        [(65000 << 16) | 1, (65000 << 16) | 2]
    );
    assert_eq!(routes[0].local_pref, Some(200));
    assert_eq!(routes[0].services, ["default/a", "default/b"]);
}

#[test]
fn an_address_goes_only_to_peers_of_its_family_unless_dual_stack() {
    let mut fixture = Fixture::new();
    let mut dual = peer("dual", "fd10:10::1", &[]);
    dual.dual_stack = true;
    fixture.peers = vec![
        peer("v4", "10.10.40.1", &[]),
        peer("v6", "fd10:10::2", &[]),
        dual,
    ];
    let web = ServiceKey::new("default", "web");
    let desired = fixture.desired([
        held("10.10.39.200", "public", &web),
        held("fd10:39::200", "public", &web),
    ]);
    let routes = &desired["m1"].routes;
    let by_prefix: BTreeMap<&str, &Vec<String>> = routes
        .iter()
        .map(|r| (r.prefix.as_str(), &r.peers))
        .collect();
    assert_eq!(
        by_prefix["10.10.39.200/32"],
        &["dual".to_owned(), "v4".to_owned()]
    );
    assert_eq!(
        by_prefix["fd10:39::200/128"],
        &["dual".to_owned(), "v6".to_owned()]
    );
}

#[test]
fn advertisements_select_pools_by_name_and_label_and_peers_by_name() {
    let mut fixture = Fixture::new();
    fixture.peers = vec![peer("a", "10.10.40.1", &[]), peer("b", "10.10.40.2", &[])];
    fixture.advertisements = vec![advertisement(BGPAdvertisementSpec {
        ip_address_pool_selectors: selector(&[("bgp", "yes")]),
        peers: vec!["b".to_owned()],
        ..BGPAdvertisementSpec::default()
    })];
    fixture.pool_labels.insert(
        "public".to_owned(),
        [("bgp".to_owned(), "yes".to_owned())].into(),
    );
    let web = ServiceKey::new("default", "web");
    let desired = fixture.desired([
        held("10.10.39.200", "public", &web),
        held("10.20.0.1", "private", &web),
    ]);
    let routes = &desired["m1"].routes;
    assert_eq!(prefixes(&desired["m1"]), ["10.10.39.200/32"]);
    assert_eq!(routes[0].peers, ["b"]);
}

#[test]
fn aggregate_masks_both_families() {
    assert_eq!(
        aggregate("10.1.2.3".parse().unwrap(), (24, 128)),
        "10.1.2.0/24"
    );
    assert_eq!(
        aggregate("10.1.2.3".parse().unwrap(), (0, 128)),
        "0.0.0.0/0"
    );
    assert_eq!(
        aggregate("fd10::1:2".parse().unwrap(), (32, 112)),
        "fd10::1:0/112"
    );
}

/// Not a test: how long `desired` takes at scale (`cargo test --release -p lb-controller --lib
/// bgp::plan::tests::cost_at_scale -- --ignored --nocapture`).
#[test]
#[ignore = "a measurement, run by hand"]
fn cost_at_scale() {
    for (addresses, node_count) in [(1_000_usize, 100_usize), (10_000, 100), (10_000, 1_000)] {
        let mut fixture = Fixture::new();
        fixture.nodes = (0..node_count)
            .map(|n| (format!("node-{n}"), BTreeMap::new()))
            .collect();
        let keys: Vec<ServiceKey> = (0..addresses)
            .map(|i| ServiceKey::new("default", &format!("s{i}")))
            .collect();
        let held: Vec<Held<'_>> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| Held {
                address: IpAddr::V4(std::net::Ipv4Addr::from(
                    0x0a00_0000 + u32::try_from(i).unwrap(),
                )),
                pool: Some("public"),
                services: vec![key],
                local: None,
            })
            .collect();
        let started = std::time::Instant::now();
        let desired = fixture.desired(held);
        eprintln!(
            "{addresses} addresses x {node_count} nodes: {:?} ({} routes on node-0)",
            started.elapsed(),
            desired["node-0"].routes.len()
        );
    }
}

#[test]
fn nodes_alike_share_one_configuration_and_local_routes_set_a_node_apart() {
    let fixture = Fixture::new();
    let (web, local) = (
        ServiceKey::new("default", "web"),
        ServiceKey::new("default", "local"),
    );
    let mut only_n2 = held("10.10.39.201", "public", &local);
    only_n2.local = Some(BTreeSet::from(["n2".to_owned()]));
    let desired = fixture.desired([held("10.10.39.200", "public", &web), only_n2]);
    assert!(
        Arc::ptr_eq(&desired["m1"], &desired["n1"]),
        "one computation for nodes alike"
    );
    assert!(!Arc::ptr_eq(&desired["m1"], &desired["n2"]));
    assert_eq!(prefixes(&desired["m1"]), ["10.10.39.200/32"]);
    assert_eq!(
        prefixes(&desired["n2"]),
        ["10.10.39.200/32", "10.10.39.201/32"]
    );
}
