//! One reconcile pass, as pure logic: from the cluster as the reflectors see it (Services, pools, Nodes,
//! EndpointSlices, Namespaces) and the connected speakers, decide every Service's addresses, the node that
//! announces each address, each pool's status, and what to tell people. The I/O layer
//! (`controller.rs`) only writes the differences.
//!
//! [`Planner`] keeps the [`Allocator`] between passes. Its first pass after becoming leader replays
//! Service statuses (oldest Service first) before allocating anything new, so a restart moves nothing.
//!
//! A pass still looks at every Service, but what it learnt before is kept so that it costs little where
//! nothing changed: a Service's request is re-read only when its `resourceVersion` changed, and an
//! address's announcer is recomputed only when its candidate nodes changed (and then only against the
//! nodes that came or went; see [`announcer::Memo`]). At 10,000 Services and 1,000 nodes a pass takes a
//! few tens of milliseconds (`cargo bench -p lb-controller --bench pass`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::allocator::{Allocator, Usage};
use crate::announcer::{self, Candidates};
use crate::pool::{IPPool, PoolDef};
use crate::request::{self, ClassFilter, Request, ServiceKey, TrafficPolicy};
use crate::speakers::{DesiredAssignment, SpeakerInfo};

/// Label that keeps a node out of load balancing (the upstream convention, honoured by MetalLB too).
const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// What the pass reads.
pub struct Inputs<'a> {
    /// Every Service.
    pub services: &'a [Arc<Service>],
    /// Every IPPool.
    pub pools: &'a [Arc<IPPool>],
    /// Pools from the legacy ConfigMap (already parsed).
    pub legacy_pools: &'a [PoolDef],
    /// Every Node.
    pub nodes: &'a [Arc<Node>],
    /// Every EndpointSlice.
    pub slices: &'a [Arc<EndpointSlice>],
    /// Every Namespace.
    pub namespaces: &'a [Arc<Namespace>],
    /// Speakers able to take addresses.
    pub speakers: &'a BTreeMap<String, SpeakerInfo>,
    /// Count Ready nodes without a connected speaker as candidates (just after becoming leader, while
    /// speakers reconnect, so that the first to reconnect does not collect every address)...
    pub include_unconnected: bool,
    /// ...except nodes whose speaker connected since then and went away: those are gone, not late.
    pub ever_connected: &'a BTreeSet<String>,
    /// Where each address is announced now (from the speakers' acknowledgements).
    pub announced: &'a BTreeMap<IpAddr, String>,
}

/// Problems found with a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolReport {
    /// Address usage.
    pub usage: Usage,
    /// The spec error, if the pool is not usable.
    pub invalid: Option<String>,
    /// Other pools sharing addresses with this one.
    pub overlaps: Vec<String>,
}

/// Why a Service has no (or not all) addresses, or a note about them; one per Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Event reason (`AllocationFailed`, `AllocationConflict`, `AddressOutsidePools`, `NoAnnouncer`).
    pub reason: &'static str,
    /// Human message naming the field or object.
    pub message: String,
}

/// What the pass decided.
#[derive(Debug, Default)]
pub struct Outcome {
    /// For every Service we serve (and those we stopped serving that still show our addresses): the
    /// addresses its status should list.
    pub statuses: BTreeMap<ServiceKey, Vec<IpAddr>>,
    /// The node(s) announcing each served Service's addresses, comma-separated; `None` when nobody does
    /// or will. Absent while one of its addresses waits for its new node's acknowledgement.
    pub announcing: BTreeMap<ServiceKey, Option<String>>,
    /// Warnings per Service.
    pub notes: BTreeMap<ServiceKey, Note>,
    /// Desired assignments per node, for the speakers.
    pub desired: BTreeMap<String, Vec<DesiredAssignment>>,
    /// Per IPPool (CRD) name.
    pub pools: BTreeMap<String, PoolReport>,
    /// Served Services still without any address.
    pub pending: usize,
}

/// Keeps allocations between passes.
#[derive(Debug)]
pub struct Planner {
    filter: ClassFilter,
    allocator: Allocator,
    restored: bool,
    /// Addresses Service statuses showed at the first pass: a speaker may still hold them from an earlier
    /// leader. Any other address is fresh.
    inherited: BTreeSet<IpAddr>,
    /// Requests read in earlier passes, by Service, with the `resourceVersion` they were read from.
    requests: HashMap<ServiceKey, (String, Arc<ReadRequest>)>,
    /// Announcers chosen in earlier passes.
    announcers: announcer::Memo,
}

type ReadRequest = Result<Request, request::RequestError>;

impl Planner {
    /// A planner that will rebuild from Service statuses on its first pass.
    pub fn new(filter: ClassFilter) -> Self {
        Self {
            filter,
            allocator: Allocator::default(),
            restored: false,
            inherited: BTreeSet::new(),
            requests: HashMap::new(),
            announcers: announcer::Memo::default(),
        }
    }

    /// The allocator (for metrics and tests).
    pub fn allocator(&self) -> &Allocator {
        &self.allocator
    }

    /// `service`'s request, re-read only when its `resourceVersion` changed since the last pass.
    fn read(&mut self, key: &str, service: &Service) -> Arc<ReadRequest> {
        let Some(version) = service.metadata.resource_version.as_deref() else {
            return Arc::new(request::read(service));
        };
        if let Some((seen, read)) = self.requests.get(key)
            && seen == version
        {
            return read.clone();
        }
        let read = Arc::new(request::read(service));
        self.requests
            .insert(key.to_owned(), (version.to_owned(), read.clone()));
        read
    }

    /// Runs one pass.
    pub fn pass(&mut self, inputs: &Inputs<'_>) -> Outcome {
        let mut outcome = Outcome::default();

        // Pools: the CRD ones that check out, then legacy ones whose name is free.
        let mut defs = Vec::new();
        for pool in inputs.pools {
            let name = pool.metadata.name.clone().unwrap_or_default();
            match PoolDef::from_spec(&name, &pool.spec) {
                Ok(def) => defs.push(def),
                Err(error) => {
                    outcome.pools.insert(
                        name,
                        PoolReport {
                            usage: Usage::default(),
                            invalid: Some(error.to_string()),
                            overlaps: vec![],
                        },
                    );
                }
            }
        }
        for legacy in inputs.legacy_pools {
            let taken = inputs
                .pools
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some(legacy.name.as_str()));
            if !taken {
                defs.push(legacy.clone());
            }
        }
        let overlaps = overlaps(&defs);
        self.allocator.set_pools(defs);

        // Services.
        let namespace_labels: HashMap<&str, BTreeMap<String, String>> = inputs
            .namespaces
            .iter()
            .map(|n| {
                (
                    n.metadata.name.as_deref().unwrap_or_default(),
                    n.metadata.labels.clone().unwrap_or_default(),
                )
            })
            .collect();
        let served: Vec<&Arc<Service>> = inputs
            .services
            .iter()
            .filter(|s| self.filter.handles(s) && s.metadata.deletion_timestamp.is_none())
            .collect();
        let served_keys: BTreeSet<ServiceKey> = served.iter().map(|s| request::key_of(s)).collect();

        // Release what Services we no longer serve held; if they still exist and show exactly our
        // addresses, clear their status (we leave other implementations' statuses alone).
        let held_keys: Vec<ServiceKey> = self
            .allocator
            .holdings()
            .flat_map(|(_, holders)| holders.cloned().collect::<Vec<_>>())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|k| !served_keys.contains(k))
            .collect();
        for key in held_keys {
            let ours = self.allocator.assigned(&key).to_vec();
            self.allocator.release(&key);
            let still_there = inputs.services.iter().find(|s| request::key_of(s) == key);
            if let Some(service) = still_there
                && request::read(service).is_ok_and(|r| !r.current.is_empty() && r.current == ours)
            {
                outcome.statuses.insert(key, vec![]);
            }
        }

        let mut requests: Vec<(ServiceKey, Arc<ReadRequest>)> = served
            .iter()
            .map(|s| {
                let key = request::key_of(s);
                let read = self.read(&key, s);
                (key, read)
            })
            .collect();
        self.requests.retain(|key, _| served_keys.contains(key));
        let created = |r: &ReadRequest| r.as_ref().map_or(i64::MAX, |r: &Request| r.created);
        requests.sort_by(|(ka, ra), (kb, rb)| (created(ra), ka).cmp(&(created(rb), kb)));

        if !self.restored {
            for (key, request) in &requests {
                let Ok(request) = request.as_ref() else {
                    continue;
                };
                if request.current.is_empty() {
                    continue;
                }
                self.inherited.extend(request.current.iter().copied());
                if let Err(error) = self.allocator.restore(request) {
                    outcome.notes.insert(
                        key.clone(),
                        Note {
                            reason: "AllocationConflict",
                            message: format!(
                                "status address not kept: {error}; the older Service keeps it"
                            ),
                        },
                    );
                }
            }
            self.restored = true;
        }

        let slices = SliceIndex::new(inputs.slices);
        let mut local: HashMap<ServiceKey, BTreeSet<String>> = HashMap::new();
        for (key, request) in &requests {
            match request.as_ref() {
                Err(error) => {
                    outcome.notes.insert(
                        key.clone(),
                        Note {
                            reason: "AllocationFailed",
                            message: error.to_string(),
                        },
                    );
                }
                Ok(request) => {
                    if request.traffic_policy == TrafficPolicy::Local {
                        local.insert(key.clone(), slices.ready_nodes(request));
                    }
                    let ns_labels = namespace_labels
                        .get(request.namespace.as_str())
                        .cloned()
                        .unwrap_or_default();
                    let admits =
                        |p: &PoolDef| p.admits(&request.namespace, &ns_labels, &request.labels);
                    if let Err(error) = self.allocator.assign(request, admits) {
                        let kept = self.allocator.assigned(key);
                        let message = if kept.is_empty() {
                            error.to_string()
                        } else {
                            format!("{error}; keeping {}", request::join_addresses(kept))
                        };
                        // A conflict note from the restore says more than the retry's outcome.
                        outcome.notes.entry(key.clone()).or_insert(Note {
                            reason: "AllocationFailed",
                            message,
                        });
                    } else if let Some(note) = outcome.notes.get(key)
                        && note.reason == "AllocationConflict"
                    {
                        let message = format!(
                            "{}; given {}",
                            note.message,
                            request::join_addresses(self.allocator.assigned(key))
                        );
                        outcome.notes.insert(
                            key.clone(),
                            Note {
                                reason: "AllocationConflict",
                                message,
                            },
                        );
                    }
                }
            }
            let assigned = self.allocator.assigned(key).to_vec();
            if assigned.is_empty() {
                outcome.pending += 1;
            }
            outcome.statuses.insert(key.clone(), assigned);
        }

        for (address, holders) in self.allocator.outside_pools() {
            for key in holders {
                outcome.notes.entry(key).or_insert(Note {
                    reason: "AddressOutsidePools",
                    message: format!(
                        "{address} is no longer in any pool; it stays with this Service until the Service releases it"
                    ),
                });
            }
        }

        // Announcers: the candidates of each pool are one shared set, so the memo can tell at once
        // whether an address's choice still stands.
        let nodes: Vec<(&str, &BTreeMap<String, String>)> = inputs
            .nodes
            .iter()
            .filter(|n| node_ready(n))
            .map(|n| {
                (
                    n.metadata.name.as_deref().unwrap_or_default(),
                    n.metadata.labels.as_ref().unwrap_or(&NO_LABELS),
                )
            })
            .filter(|(name, labels)| {
                !labels.contains_key(EXCLUDE_LABEL)
                    && (inputs.speakers.contains_key(*name)
                        || (inputs.include_unconnected && !inputs.ever_connected.contains(*name)))
            })
            .collect();
        self.announcers.begin_pass();
        let mut pool_candidates: HashMap<Option<&str>, Candidates> = HashMap::new();
        for (address, services) in self.allocator.holdings() {
            let pool = self.allocator.pool_of(address);
            let candidates = pool_candidates
                .entry(pool.map(|p| p.name.as_str()))
                .or_insert_with(|| {
                    self.announcers.intern(
                        nodes
                            .iter()
                            .filter(|(_, labels)| pool.is_none_or(|p| p.announces_on(labels)))
                            .map(|(name, _)| (*name).to_owned())
                            .collect(),
                    )
                });
            let services: Vec<ServiceKey> = services.cloned().collect();
            let ready: Vec<&BTreeSet<String>> =
                services.iter().filter_map(|s| local.get(s)).collect();
            let chosen = if ready.is_empty() {
                self.announcers.choose(address, candidates)
            } else {
                // externalTrafficPolicy: Local: only nodes with a ready endpoint of every holder; these
                // sets are per Service, so they are not memoised.
                self.announcers.forget(address);
                let smallest = ready
                    .iter()
                    .min_by_key(|r| r.len())
                    .copied()
                    .unwrap_or(&NO_NODES);
                announcer::choose(
                    address,
                    smallest
                        .iter()
                        .filter(|n| candidates.contains(*n) && ready.iter().all(|r| r.contains(*n)))
                        .map(String::as_str),
                )
            };
            match chosen {
                Some(node) => {
                    outcome
                        .desired
                        .entry(node.to_owned())
                        .or_default()
                        .push(DesiredAssignment {
                            address,
                            interfaces: pool
                                .map(|p| p.announce.interfaces.clone())
                                .unwrap_or_default(),
                            services,
                            fresh: !self.inherited.contains(&address),
                        })
                }
                None => {
                    for key in &services {
                        outcome.notes.entry(key.clone()).or_insert(Note {
                            reason: "NoAnnouncer",
                            message: format!(
                                "no Ready node with a connected speaker{}{} can announce {address}",
                                if pool.is_some_and(|p| p.announce.node_selector.is_some()) {
                                    " matching the pool's spec.announce.nodeSelector"
                                } else {
                                    ""
                                },
                                if local.contains_key(key) {
                                    " and a ready endpoint (externalTrafficPolicy: Local)"
                                } else {
                                    ""
                                }
                            ),
                        });
                    }
                }
            }
        }
        let allocator = &self.allocator;
        self.announcers
            .end_pass(|address| allocator.is_held(*address));
        // The annotation names who acknowledged each address. An address placed on a node that has not
        // acknowledged it yet (a handover in flight, or speakers still reconnecting after a start, when
        // the hub knows nobody yet) says nothing: clearing the annotation for those milliseconds or
        // seconds would cost two writes per Service and show users a gap that is not there.
        let placed: BTreeSet<IpAddr> = outcome
            .desired
            .values()
            .flatten()
            .map(|a| a.address)
            .collect();
        for key in &served_keys {
            let mut announcing: Vec<&str> = Vec::new();
            let mut unacknowledged = false;
            for address in self.allocator.assigned(key) {
                match inputs.announced.get(address) {
                    Some(node) => announcing.push(node),
                    None => unacknowledged |= placed.contains(address),
                }
            }
            if unacknowledged {
                continue;
            }
            announcing.sort_unstable();
            announcing.dedup();
            outcome.announcing.insert(
                key.clone(),
                (!announcing.is_empty()).then(|| announcing.join(",")),
            );
        }

        // Pool reports for the CRD pools that checked out.
        for def in self.allocator.pools() {
            let is_crd = inputs
                .pools
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some(def.name.as_str()));
            if is_crd {
                outcome.pools.insert(
                    def.name.clone(),
                    PoolReport {
                        usage: self.allocator.usage(&def.name),
                        invalid: None,
                        overlaps: overlaps.get(&def.name).cloned().unwrap_or_default(),
                    },
                );
            }
        }
        outcome
    }
}

/// For each pool, the other pools sharing an address with it.
fn overlaps(defs: &[PoolDef]) -> BTreeMap<String, Vec<String>> {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, a) in defs.iter().enumerate() {
        for b in &defs[i + 1..] {
            if a.ranges
                .iter()
                .any(|ra| b.ranges.iter().any(|rb| ra.overlaps(rb)))
            {
                found
                    .entry(a.name.clone())
                    .or_default()
                    .push(b.name.clone());
                found
                    .entry(b.name.clone())
                    .or_default()
                    .push(a.name.clone());
            }
        }
    }
    found
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        && !node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false)
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
static NO_NODES: BTreeSet<String> = BTreeSet::new();

/// EndpointSlices by the Service they belong to (`kubernetes.io/service-name`), built once per pass.
struct SliceIndex<'a>(HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>);

impl<'a> SliceIndex<'a> {
    fn new(slices: &'a [Arc<EndpointSlice>]) -> Self {
        let mut index: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"));
            if let (Some(namespace), Some(service)) = (slice.metadata.namespace.as_deref(), service)
            {
                index.entry((namespace, service)).or_default().push(slice);
            }
        }
        Self(index)
    }

    /// Nodes with a ready endpoint of the Service.
    fn ready_nodes(&self, request: &Request) -> BTreeSet<String> {
        let name = request.key.split_once('/').map_or("", |(_, n)| n);
        self.0
            .get(&(request.namespace.as_str(), name))
            .into_iter()
            .flatten()
            .flat_map(|s| s.endpoints.iter().flatten())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .filter_map(|e| e.node_name.clone())
            .collect()
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
