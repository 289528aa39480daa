//! What the lab's end-to-end and fault suites share: a [`Lab`] in a temporary state directory of the
//! test's own (never a user's lab), and the Kubernetes objects and client-side checks they are written in.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use integration_tests::dig::Answer;
use integration_tests::kube::status_addresses;
use integration_tests::lab::probe;
use integration_tests::lab::state::StateDir;
use integration_tests::lab::system::{DNS_NODES, Lab, NODES};
use integration_tests::process::{Scratch, workspace_binary};
use integration_tests::wait;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// How long a condition is waited for: generous, the machine is shared.
pub const WAIT: Duration = Duration::from_secs(60);
/// The annotation dns-sync reads a Service's names from (external-dns's).
pub const HOSTNAME_ANNOTATION: &str = "external-dns.alpha.kubernetes.io/hostname";

/// A running lab with its state in a temporary directory, both gone on drop (the lab first).
pub struct TestLab {
    lab: Lab,
    /// Kept when the test fails: the speakers', dns-servers' and supervisor's logs are in it.
    _dir: Scratch,
}

impl Deref for TestLab {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl DerefMut for TestLab {
    fn deref_mut(&mut self) -> &mut Lab {
        &mut self.lab
    }
}

/// Brings the whole lab up (the seed scenario applied and checked) for one test.
pub fn start_lab() -> TestLab {
    for daemon in ["lb-controller", "lb-speaker", "dns-sync", "dns-server"] {
        workspace_binary(daemon).unwrap_or_else(|e| panic!("{e} (cargo build --workspace --bins)"));
    }
    let dir = Scratch::new("lab-e2e").unwrap();
    let started = std::time::Instant::now();
    let lab = Lab::start(StateDir::new(dir.path())).unwrap_or_else(|e| {
        let progress = std::fs::read_to_string(dir.path().join("progress.log")).unwrap_or_default();
        panic!("the lab did not come up: {e}\n{progress}")
    });
    println!("lab up in {:?}", started.elapsed());
    TestLab { lab, _dir: dir }
}

fn object<T: k8s_openapi::serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

impl TestLab {
    pub fn client_host(&self) -> integration_tests::netlab::Host {
        self.host("client").unwrap().clone()
    }

    pub fn services(&self, namespace: &str) -> Api<Service> {
        Api::namespaced(self.client(), namespace)
    }

    /// Creates a LoadBalancer Service in `default` from `spec` (merged over type, port and selector
    /// defaults) and `annotations`.
    pub fn create_service(&self, name: &str, annotations: Value, spec: Value) {
        let mut full = json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                              "ports": [{"name": "http", "port": 80}], "selector": {"app": name}});
        if let (Some(full), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
            for (k, v) in extra {
                full.insert(k.clone(), v.clone());
            }
        }
        let service: Service = object(json!({
            "metadata": {"name": name, "annotations": annotations},
            "spec": full,
        }));
        self.block_on(
            self.services("default")
                .create(&PostParams::default(), &service),
        )
        .unwrap();
    }

    pub fn delete_service(&self, name: &str) {
        self.block_on(
            self.services("default")
                .delete(name, &DeleteParams::default()),
        )
        .unwrap();
    }

    /// Waits until the Service's status has `count` addresses (whether or not an announcing node is
    /// named yet); returns them.
    pub fn wait_status(&self, name: &str, count: usize) -> Vec<IpAddr> {
        let api = self.services("default");
        wait::until_blocking(
            &format!("Service {name} to get {count} addresses"),
            WAIT,
            || {
                let service = self.block_on(api.get(name)).map_err(|e| e.to_string())?;
                let ips = status_addresses(&service);
                (ips.len() == count)
                    .then_some(ips)
                    .ok_or_else(|| format!("status {:?}", service.status))
            },
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The node the Service's status names as announcing it, now.
    pub fn announcing(&self, name: &str) -> Option<String> {
        let service = self.block_on(self.services("default").get(name)).unwrap();
        integration_tests::kube::announcing_node(&service)
    }

    /// Waits until ARP for `address` from the client is answered by exactly one MAC; returns its node.
    pub fn wait_arp_single(&self, address: Ipv4Addr) -> String {
        let client = self.client_host();
        let mac = wait::until_blocking(
            &format!("ARP for {address} answered by one node"),
            WAIT,
            || {
                let macs = probe::arping(&client, address)?;
                match macs.as_slice() {
                    [mac] => Ok(mac.clone()),
                    other => Err(format!("answered by {other:?}")),
                }
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        self.node_of(&mac)
    }

    /// Waits until the Service has `count` addresses and an announcing node; returns both.
    pub fn wait_addresses(&self, name: &str, count: usize) -> (Vec<IpAddr>, String) {
        self.wait_announced_by(name, count, |_| true)
    }

    /// Waits until the Service has `count` addresses and its announcing node satisfies `ok`.
    pub fn wait_announced_by(
        &self,
        name: &str,
        count: usize,
        ok: impl Fn(&str) -> bool,
    ) -> (Vec<IpAddr>, String) {
        let api = self.services("default");
        wait::until_blocking(&format!("Service {name} to be announced"), WAIT, || {
            let service = self.block_on(api.get(name)).map_err(|e| e.to_string())?;
            let ips = status_addresses(&service);
            let node = integration_tests::kube::announcing_node(&service);
            match node {
                Some(node) if ips.len() == count && ok(&node) => Ok((ips, node)),
                other => Err(format!("addresses {ips:?}, announcing node {other:?}")),
            }
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Creates an Ingress in `default` for `host` and writes `address` into its status, as an ingress
    /// controller would (none runs in the lab).
    pub fn create_ingress(&self, name: &str, host: &str, address: IpAddr) {
        let api: Api<Ingress> = Api::namespaced(self.client(), "default");
        let ingress: Ingress = object(json!({
            "metadata": {"name": name},
            "spec": {"ingressClassName": "nginx", "rules": [{"host": host, "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "nginx", "port": {"number": 80}}}}]}}]}
        }));
        self.block_on(api.create(&PostParams::default(), &ingress))
            .unwrap();
        self.block_on(api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"loadBalancer": {"ingress": [{"ip": address.to_string()}]}}}),
            ),
        ))
        .unwrap();
    }

    pub fn delete_ingress(&self, name: &str) {
        let api: Api<Ingress> = Api::namespaced(self.client(), "default");
        self.block_on(api.delete(name, &DeleteParams::default()))
            .unwrap();
    }

    /// Creates (or replaces the endpoints of) the EndpointSlice of Service `service` with one ready
    /// endpoint on `node`.
    pub fn set_endpoint(&self, service: &str, node: &str) {
        let api: Api<EndpointSlice> = Api::namespaced(self.client(), "default");
        let address = self.host(node).unwrap().ipv4;
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{service}-lab"),
                         "labels": {"kubernetes.io/service-name": service,
                                    "endpointslice.kubernetes.io/managed-by": "groundwork-lab-tests"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address.to_string()], "nodeName": node,
                           "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]
        });
        self.block_on(api.patch(
            &format!("{service}-lab"),
            &PatchParams::apply("groundwork-lab-tests").force(),
            &Patch::Apply(slice),
        ))
        .unwrap();
    }

    /// Creates an IPPool.
    pub fn create_pool(&self, name: &str, addresses: &[&str]) {
        let api: Api<DynamicObject> = Api::all_with(
            self.client(),
            &ApiResource {
                group: "groundwork.dev".into(),
                version: "v1alpha1".into(),
                api_version: "groundwork.dev/v1alpha1".into(),
                kind: "IPPool".into(),
                plural: "ippools".into(),
            },
        );
        let pool: DynamicObject = object(json!({
            "apiVersion": "groundwork.dev/v1alpha1", "kind": "IPPool",
            "metadata": {"name": name}, "spec": {"addresses": addresses}
        }));
        self.block_on(api.create(&PostParams::default(), &pool))
            .unwrap();
    }

    /// The MAC of `node`'s lab interface, as the probes print it.
    pub fn mac(&self, node: &str) -> String {
        probe::mac_text(self.host(node).unwrap().mac().unwrap())
    }

    /// The node whose MAC is `mac`.
    pub fn node_of(&self, mac: &str) -> String {
        NODES
            .iter()
            .find(|n| self.mac(n) == mac)
            .map_or_else(|| mac.to_owned(), |n| (*n).to_owned())
    }

    /// Waits until ARP for `address` from the client is answered by exactly `node`'s MAC.
    pub fn wait_arp_answered_by(&self, address: Ipv4Addr, node: &str) {
        let (client, mac) = (self.client_host(), self.mac(node));
        wait::until_blocking(
            &format!("ARP for {address} answered by {node} only"),
            WAIT,
            || {
                let macs = probe::arping(&client, address)?;
                if macs == [mac.clone()] {
                    Ok(())
                } else {
                    Err(format!("answered by {macs:?}"))
                }
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Asks every dns-server replica for `name`/`rtype` from the client until each answers with exactly
    /// `expected` (authoritatively); returns how long that took.
    pub fn wait_dns(&self, name: &str, rtype: &str, expected: &[String]) -> Duration {
        let started = std::time::Instant::now();
        let client = self.client_host();
        for node in DNS_NODES {
            let server = IpAddr::V4(self.host(node).unwrap().ipv4);
            wait::until_blocking(
                &format!("dns-server on {node} to answer {name} {rtype} with {expected:?}"),
                WAIT,
                || {
                    let answer = probe::dig(&client, server, name, rtype)?;
                    if answer.status == "NOERROR"
                        && answer.has_flag("aa")
                        && answer.data_of(rtype) == expected
                    {
                        Ok(())
                    } else {
                        Err(format!("{} {:?}", answer.status, answer.data_of(rtype)))
                    }
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
        started.elapsed()
    }

    /// Waits until every dns-server replica answers `name` with NXDOMAIN.
    pub fn wait_nxdomain(&self, name: &str) {
        let client = self.client_host();
        for node in DNS_NODES {
            let server = IpAddr::V4(self.host(node).unwrap().ipv4);
            wait::until_blocking(
                &format!("dns-server on {node} to answer {name} with NXDOMAIN"),
                WAIT,
                || {
                    let answer = probe::dig(&client, server, name, "A")?;
                    if answer.status == "NXDOMAIN" {
                        Ok(())
                    } else {
                        Err(format!("{} {:?}", answer.status, answer.data_of("A")))
                    }
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// One query to the dns-server on `node` from the client.
    pub fn dig_on(&self, node: &str, name: &str, rtype: &str) -> Result<Answer, String> {
        let server = IpAddr::V4(self.host(node).unwrap().ipv4);
        probe::dig(&self.client_host(), server, name, rtype)
    }
}

/// The addresses in a Service's load-balancer status.
pub fn v4(address: IpAddr) -> Ipv4Addr {
    match address {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => panic!("{a} is not IPv4"),
    }
}
