//! End to end on the whole lab (`integration_tests::lab::system::Lab`: control plane, two lb-controllers,
//! a speaker per node namespace, dns-sync, the DNS etcd, two dns-servers), driven through the Kubernetes
//! API and checked from the client namespace with the real tools: `arping`, `ndisc6`, `dig`.
//!
//! Each test brings up its own lab with its own state directory, so a user's lab is never touched. Needs
//! root and the daemons' binaries (`cargo build --workspace --bins`; `cargo test --workspace` builds them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::IpAddr;

use integration_tests::lab::probe;
use integration_tests::wait;
use serde_json::json;
use support::*;

#[test]
fn a_named_service_and_ingress_get_an_address_one_node_answers_and_both_dns_servers_serve_until_removed()
 {
    let lab = start_lab();
    let client = lab.client_host();

    lab.create_service(
        "web",
        json!({HOSTNAME_ANNOTATION: "web.test.org"}),
        json!({}),
    );
    let (ips, announcer) = lab.wait_addresses("web", 1);
    let address = v4(ips[0]);
    assert_ne!(address, lab.seed_address(), "two Services got one address");
    lab.wait_arp_answered_by(address, &announcer);
    // Exactly one node answers, every time.
    assert_eq!(
        probe::arping(&client, address).unwrap(),
        [lab.mac(&announcer)]
    );
    lab.create_ingress("shop", "shop.test.org", ips[0]);
    let took = lab.wait_dns("web.test.org", "A", &[address.to_string()]);
    lab.wait_dns("shop.test.org", "A", &[address.to_string()]);
    println!(
        "web got {address}, announced by {announcer}; both names served by both dns-servers within {took:?}"
    );

    lab.delete_service("web");
    lab.delete_ingress("shop");
    lab.wait_nxdomain("web.test.org");
    lab.wait_nxdomain("shop.test.org");
    wait::until_blocking(
        "nobody to answer ARP for the released address",
        WAIT,
        || {
            let macs = probe::arping(&client, address)?;
            macs.is_empty()
                .then_some(())
                .ok_or_else(|| format!("answered by {macs:?}"))
        },
    )
    .unwrap();
    // The seed's name is untouched.
    lab.wait_dns("nginx.test.org", "A", &[lab.seed_address().to_string()]);

    // Released: a new Service asking for it gets it.
    lab.create_service(
        "again",
        json!({"groundwork.dev/loadBalancerIPs": address.to_string()}),
        json!({}),
    );
    let (again, announcer) = lab.wait_addresses("again", 1);
    assert_eq!(again, [IpAddr::V4(address)]);
    lab.wait_arp_answered_by(address, &announcer);
}

#[test]
fn a_dual_stack_service_gets_both_families_answered_by_arp_and_ndp_and_served_as_a_and_aaaa() {
    let lab = start_lab();
    let client = lab.client_host();
    // On the lab segment (10.10.0.0/16 and fd10:10::/64), so the client resolves both on-link.
    lab.create_pool(
        "dual",
        &[
            "10.10.39.230-10.10.39.239",
            "fd10:10::39:200-fd10:10::39:20f",
        ],
    );
    lab.create_service(
        "dual",
        json!({HOSTNAME_ANNOTATION: "dual.test.org", "groundwork.dev/address-pool": "dual"}),
        json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]}),
    );
    let (ips, announcers) = lab.wait_addresses("dual", 2);
    let v4: Vec<_> = ips.iter().filter(|a| a.is_ipv4()).collect();
    let v6: Vec<_> = ips
        .iter()
        .filter_map(|a| match a {
            IpAddr::V6(a) => Some(*a),
            IpAddr::V4(_) => None,
        })
        .collect();
    assert_eq!((v4.len(), v6.len()), (1, 1), "addresses {ips:?}");
    let (address4, address6) = (support::v4(*v4[0]), v6[0]);
    assert!(
        address4.octets()[3] >= 230,
        "{address4} is not from the dual pool"
    );
    assert_eq!(address6.segments()[..4], [0xfd10, 0x10, 0, 0]);
    let announcers: Vec<String> = announcers.split(',').map(str::to_owned).collect();
    let macs: Vec<String> = announcers.iter().map(|n| lab.mac(n)).collect();

    let arp = wait::until_blocking("ARP for the IPv4 address", WAIT, || {
        let found = probe::arping(&client, address4)?;
        (found.len() == 1)
            .then_some(found)
            .ok_or("no single answer".to_owned())
    })
    .unwrap();
    assert!(
        macs.contains(&arp[0]),
        "{arp:?} is no announcer ({announcers:?})"
    );
    let ndp = wait::until_blocking("NDP for the IPv6 address", WAIT, || {
        let found = probe::ndisc(&client, address6)?;
        if found.len() == 1 {
            Ok(found)
        } else {
            Err(format!("answers {found:?}"))
        }
    })
    .unwrap();
    assert!(
        macs.contains(&ndp[0]),
        "{ndp:?} is no announcer ({announcers:?})"
    );

    lab.wait_dns("dual.test.org", "A", &[address4.to_string()]);
    lab.wait_dns("dual.test.org", "AAAA", &[address6.to_string()]);
    println!(
        "dual got {address4} (ARP: {}) and {address6} (NDP: {}); A and AAAA served by both dns-servers",
        lab.node_of(&arp[0]),
        lab.node_of(&ndp[0])
    );
}

#[test]
fn a_local_traffic_service_is_announced_only_from_the_node_with_its_ready_endpoint() {
    let lab = start_lab();
    // No selector: kube-controller-manager leaves its EndpointSlices to us.
    lab.set_endpoint("local", "n2");
    lab.create_service(
        "local",
        json!({}),
        json!({"externalTrafficPolicy": "Local", "selector": null}),
    );
    let (ips, announcer) = lab.wait_addresses("local", 1);
    assert_eq!(announcer, "n2");
    let address = v4(ips[0]);
    lab.wait_arp_answered_by(address, "n2");

    let moved_at = std::time::Instant::now();
    lab.set_endpoint("local", "m1");
    lab.wait_announced_by("local", 1, |node| node == "m1");
    lab.wait_arp_answered_by(address, "m1");
    println!(
        "the endpoint moved from n2 to m1: m1 answers ARP alone after {:?}",
        moved_at.elapsed()
    );
}
