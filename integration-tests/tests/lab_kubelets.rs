//! groundwork as users install it: the image `scripts/image` built, the Helm chart, real kubelets with
//! containerd on the seed's three nodes (`integration_tests::lab::kubelets::KubeletLab`), checked from the
//! client namespace with `arping`, `tcpdump`, `dig` and `curl`.
//!
//! One cluster serves the whole story, in the order a user lives it, because bringing one up takes minutes:
//! the install and the seed scenario through Pods; the announcing node's speaker Pod deleted; a `helm upgrade`
//! to a rebuilt image while a client keeps asking DNS and ARP. Needs root, the kubelet, kube-proxy and
//! kube-scheduler peers (`scripts/build-peers`), and the image (`scripts/image`; `scripts/test` runs both).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use integration_tests::images;
use integration_tests::kube::status_ips;
use integration_tests::lab::kubelets::{KubeletLab, NAMESPACE, RELEASE, SPEAKER_NAMESPACE};
use integration_tests::lab::probe::{ArpProbe, Mac, dig_at, mac_text};
use integration_tests::lab::seed::{INGRESS_NAMESPACE, INGRESS_SERVICE};
use integration_tests::lab::state::StateDir;
use integration_tests::lab::system::{EXPECTED_ADDRESS, HOSTNAME};
use integration_tests::process::Scratch;
use integration_tests::wait;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{DeleteParams, ListParams};

/// The speakers' lease (lb-controller's `--speaker-lease` default): the longest a client may go unanswered.
const LEASE: Duration = Duration::from_secs(1);
/// How often the client asks ARP for the seed address.
const PROBE_EVERY: Duration = Duration::from_millis(20);
const WAIT: Duration = Duration::from_secs(120);

#[test]
fn the_chart_on_real_kubelets_serves_the_seed_survives_a_speaker_pod_deletion_and_upgrades_without_a_gap()
 {
    let image = images::groundwork_archive().unwrap_or_else(|e| panic!("{e}"));
    // Kept (and its path printed) if the test fails: the nodes' logs are in it.
    let dir = Scratch::new("kubelets").unwrap();
    let started = Instant::now();
    let lab = KubeletLab::start(StateDir::new(dir.path()), &image)
        .unwrap_or_else(|e| panic!("the real-node lab did not come up: {e}"));
    println!(
        "bring-up: {:.1} s to three Ready nodes, the chart installed, every Pod Ready and the seed checked",
        started.elapsed().as_secs_f64()
    );
    for line in lab.summary() {
        println!("  {line}");
    }
    // The seed's numbers: the first address of the pool, as in the walk-through.
    assert_eq!(lab.seed().0, EXPECTED_ADDRESS);
    every_etcd_member_enforces_the_dns_identities(&lab);

    deleting_the_announcing_speaker_pod_moves_the_address_and_the_daemonset_brings_it_back(&lab);
    helm_upgrade_to_a_rebuilt_image_rolls_every_component_without_a_failed_query_or_a_second_answerer(&lab);
}

/// etcd authorization is on (etcd.auth): each member's `etcd-auth` container is ready only once etcd holds
/// the DNS identities and enforces them, and the seed just passed with dns-sync and dns-server on their own
/// certificates (the authorization itself is checked against a real etcd in tests/etcd_auth.rs).
fn every_etcd_member_enforces_the_dns_identities(lab: &KubeletLab) {
    let api: Api<Pod> = Api::namespaced(lab.client(), NAMESPACE);
    let params = ListParams::default().labels("app.kubernetes.io/component=etcd");
    let pods = lab.block_on(api.list(&params)).unwrap();
    let ready: Vec<String> = pods
        .items
        .iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.name == "etcd-auth" && c.ready))
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(
        ready.len(),
        3,
        "etcd members whose etcd-auth is ready (auth enforced): {ready:?}"
    );
    println!("etcd auth enforced on {ready:?}");
}

/// The speaker Pod on `node`: its name and UID.
fn speaker_pod(lab: &KubeletLab, node: &str) -> Option<(String, String)> {
    let api: Api<Pod> = Api::namespaced(lab.client(), SPEAKER_NAMESPACE);
    let params = ListParams::default()
        .labels("app.kubernetes.io/component=lb-speaker")
        .fields(&format!("spec.nodeName={node}"));
    let pods = lab.block_on(api.list(&params)).ok()?;
    pods.items.into_iter().find_map(|p| {
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let deleting = p.metadata.deletion_timestamp.is_some();
        if ready && !deleting {
            Some((p.metadata.name?, p.metadata.uid?))
        } else {
            None
        }
    })
}

/// The seed Service's addresses and announcing node.
fn seed_service(lab: &KubeletLab) -> (Vec<String>, Option<String>) {
    let api: Api<Service> = Api::namespaced(lab.client(), INGRESS_NAMESPACE);
    let service = lab.block_on(api.get(INGRESS_SERVICE)).unwrap();
    let node = integration_tests::kube::announcing_node(&service);
    (status_ips(&service), node)
}

fn mac_of(lab: &KubeletLab, node: &str) -> Mac {
    lab.cluster().host(node).unwrap().mac().unwrap()
}

fn deleting_the_announcing_speaker_pod_moves_the_address_and_the_daemonset_brings_it_back(
    lab: &KubeletLab,
) {
    let (address, _) = lab.seed();
    let (_, announcer) = seed_service(lab);
    let announcer = announcer.expect("an announcing node");
    let client = lab.cluster().host("client").unwrap().clone();
    let probe = ArpProbe::start(&client, address, PROBE_EVERY).unwrap();
    let (pod, uid) =
        speaker_pod(lab, &announcer).expect("a ready speaker Pod on the announcing node");

    let deleted_at = Instant::now();
    let api: Api<Pod> = Api::namespaced(lab.client(), SPEAKER_NAMESPACE);
    lab.block_on(api.delete(&pod, &DeleteParams::default()))
        .unwrap();
    // The address moves to another node, whose MAC the client then gets.
    let (new_announcer, moved_in) =
        wait::until_blocking("the address to be announced by another node", WAIT, || {
            let (ips, node) = seed_service(lab);
            if ips != [address.to_string()] {
                return Err(format!("the Service's addresses changed: {ips:?}"));
            }
            match node {
                Some(node) if node != announcer => {
                    let mac = mac_of(lab, &node);
                    let answered = probe
                        .replies()
                        .into_iter()
                        .any(|(at, m)| m == mac && at > deleted_at);
                    answered
                        .then(|| (node.clone(), deleted_at.elapsed()))
                        .ok_or_else(|| format!("{node} announces, not answering ARP yet"))
                }
                other => Err(format!("announcing node {other:?}")),
            }
        })
        .unwrap();
    // The DaemonSet puts a new speaker Pod on that node.
    let (_, new_uid) = wait::until_blocking(
        &format!("a new speaker Pod Ready on {announcer}"),
        WAIT,
        || match speaker_pod(lab, &announcer) {
            Some((name, new)) if new != uid => Ok((name, new)),
            _ => Err("not yet".to_owned()),
        },
    )
    .unwrap();
    let back_in = deleted_at.elapsed();
    assert_ne!(new_uid, uid);
    let silence = probe.longest_wait();
    let doubles = probe.double_answers();
    println!(
        "speaker Pod {pod} on {announcer} deleted: {address} answered from {new_announcer} after {:.2} s; a new speaker Pod Ready on {announcer} after {:.1} s; longest wait for an ARP answer {:.3} s over {} answers to a request every {PROBE_EVERY:?} (longest gap between requests {:?}); requests answered by two nodes: {}",
        moved_in.as_secs_f64(),
        back_in.as_secs_f64(),
        silence.length.as_secs_f64(),
        probe.answers(),
        probe.longest_send_gap(),
        doubles.len()
    );
    assert!(
        doubles.is_empty(),
        "two nodes answered one ARP request: {doubles:?}"
    );
    assert!(
        silence.length < LEASE,
        "the client waited for an ARP answer while the address moved: {}",
        silence.describe(deleted_at)
    );
}

fn helm_upgrade_to_a_rebuilt_image_rolls_every_component_without_a_failed_query_or_a_second_answerer(
    lab: &KubeletLab,
) {
    let (address, _) = lab.seed();
    let (before_ips, _) = seed_service(lab);
    let client = lab.cluster().host("client").unwrap().clone();

    // The same static daemons, rebuilt into an image with a new tag (and so a new image ID).
    let (repository, tag) = integration_tests::oci::split_reference(lab.image());
    let new_tag = format!("{tag}-upgrade");
    let archive =
        std::env::temp_dir().join(format!("groundwork-upgrade-{}.oci.tar", std::process::id()));
    let written = images::groundwork(
        &images::static_binaries_dir(&integration_tests::workspace_root()),
        &format!("{repository}:{new_tag}"),
    )
    .and_then(|spec| spec.write(&archive))
    .unwrap();
    lab.cluster().load_image(&archive).unwrap();
    let _ = std::fs::remove_file(&archive);

    // A client asks dns-server through every node's NodePort, and ARP for the seed address, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let (queries, failures) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(std::sync::Mutex::new(Vec::new())),
    );
    let nodes: Vec<IpAddr> = ["m1", "n1", "n2"]
        .iter()
        .map(|n| IpAddr::V4(lab.cluster().host(n).unwrap().ipv4))
        .collect();
    let started = Instant::now();
    let prober = {
        let (stop, queries, failures, client) = (
            stop.clone(),
            queries.clone(),
            failures.clone(),
            client.clone(),
        );
        let port = lab.dns_port();
        std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let server = nodes[i % nodes.len()];
                i += 1;
                let asked = started.elapsed().as_secs_f64();
                let answer = dig_at(&client, server, port, HOSTNAME, "A");
                queries.fetch_add(1, Ordering::SeqCst);
                match answer {
                    Ok(a) if a.data_of("A") == [address.to_string()] && a.has_flag("aa") => {}
                    Ok(a) => failures.lock().unwrap().push(format!(
                        "{server}, asked {asked:.3} s after the start: {} {:?}",
                        a.status,
                        a.data_of("A")
                    )),
                    Err(e) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{server}, asked {asked:.3} s after the start: {e}")),
                }
            }
        })
    };
    let probe = ArpProbe::start(&client, address, PROBE_EVERY).unwrap();

    let upgraded_at = started;
    println!(
        "upgrade started at {:?} (wall clock), to line up with the Pods' logs",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
    );
    lab.helm(&[
        "upgrade",
        RELEASE,
        &integration_tests::workspace_root()
            .join("deploy/helm/groundwork")
            .display()
            .to_string(),
        "--namespace",
        NAMESPACE,
        "--reuse-values",
        "--set",
        &format!("image.tag={new_tag}"),
    ])
    .unwrap();
    // Rolled out: every workload on its new template, and every Pod of the release on the new image.
    let new_image = format!("{repository}:{new_tag}");
    let mut addresses_seen: BTreeSet<Vec<String>> = BTreeSet::new();
    wait::until_blocking(
        "every groundwork Pod to run the new image",
        Duration::from_secs(300),
        || {
            addresses_seen.insert(seed_service(lab).0);
            lab.wait_release(Duration::from_secs(2))
                .map_err(|e| e.to_string())?;
            let mut old = Vec::new();
            for ns in [NAMESPACE, SPEAKER_NAMESPACE] {
                let api: Api<Pod> = Api::namespaced(lab.client(), ns);
                let pods = lab
                    .block_on(api.list(&ListParams::default()))
                    .map_err(|e| e.to_string())?;
                for pod in pods.items {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    if name.starts_with(&format!("{RELEASE}-etcd")) {
                        continue;
                    }
                    let images: Vec<String> = pod
                        .spec
                        .map(|s| s.containers.into_iter().filter_map(|c| c.image).collect())
                        .unwrap_or_default();
                    if images != [new_image.clone()] {
                        old.push(name);
                    }
                }
            }
            old.is_empty()
                .then_some(())
                .ok_or_else(|| format!("still on the old image: {old:?}"))
        },
    )
    .unwrap();
    let rolled_in = upgraded_at.elapsed();
    // Keep probing a little after the last old Pod went, so a late failure is seen.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    prober.join().unwrap();
    addresses_seen.insert(seed_service(lab).0);

    let failures = failures.lock().unwrap().clone();
    let silence = probe.longest_wait();
    let doubles = probe.double_answers();
    let answerers: Vec<String> = probe.macs().into_iter().map(mac_text).collect();
    println!(
        "helm upgrade to {new_image} (image ID {}): rolled out in {:.1} s; DNS queries {} ({} failed); ARP answers {} to a request every {PROBE_EVERY:?} (longest gap between requests {:?}), longest wait for an answer {:.3} s, answered by {:?} over time, requests answered by two nodes: {}; seed Service addresses seen: {:?}",
        written.config_digest,
        rolled_in.as_secs_f64(),
        queries.load(Ordering::SeqCst),
        failures.len(),
        probe.answers(),
        probe.longest_send_gap(),
        silence.length.as_secs_f64(),
        answerers,
        doubles.len(),
        addresses_seen
    );
    assert!(
        failures.is_empty(),
        "DNS queries failed during the upgrade: {failures:?}"
    );
    assert!(
        doubles.is_empty(),
        "two nodes answered one ARP request: {doubles:?}"
    );
    assert!(
        silence.length < LEASE,
        "the client waited for an ARP answer during the upgrade: {}",
        silence.describe(upgraded_at)
    );
    assert_eq!(
        addresses_seen.into_iter().collect::<Vec<_>>(),
        [before_ips],
        "the seed Service's address changed during the upgrade"
    );
}
