//! One reconcile pass, as pure logic: from the cluster as the reflectors see it (Services, pools, Nodes,
//! EndpointSlices, Namespaces) and the connected speakers, decide every Service's addresses, the node that
//! announces each address, each pool's status, and what to tell people. The I/O layer
//! (`controller.rs`) only writes the differences.
//!
//! [`Planner`] keeps the [`Allocator`] between passes. Its first pass after becoming leader replays
//! Service statuses (oldest Service first) before allocating anything new, so a restart moves nothing.
//!
//! Passes come in two sizes ([`Scope`]):
//! - **A full pass** looks at everything. It runs when pools, Nodes, Namespaces or the speakers change,
//!   after a (re)list, and periodically as a consistency check that should find nothing to do. Even so it
//!   reuses what it learnt: a request is re-read only when the Service's `resourceVersion` changed, and an
//!   announcer is recomputed only when its candidate nodes changed ([`announcer::Memo`]). At 10,000
//!   Services and 1,000 nodes it takes a few tens of milliseconds (`cargo bench -p lb-controller --bench
//!   pass`).
//! - **An incremental pass** touches only what changed Services touch: their own allocation, the addresses
//!   they held or now hold (and so the other Services sharing those), the nodes announcing those, and the
//!   Services still waiting for an address (or refused one) when a Service left one. Nothing in it is
//!   O(cluster) except the comparison of which addresses speakers acknowledged.
//!
//! Both leave the planner in the same state: an incremental pass followed by a full one finds nothing to
//! change (`plan_tests.rs` checks this over random sequences of changes).

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

/// How many times a pass allocates again for the Services an allocation affected, at most.
const ROUNDS: usize = 4;

/// Label that keeps a node out of load balancing (the upstream convention, honoured by MetalLB too).
const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// What the pass reads. An incremental pass ([`Scope::Services`]) reads only `slices`, `announced` and
/// `announced_changed`; the rest may be left empty for it.
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
    /// Whether `announced` may differ from what the last pass saw: an incremental pass compares the
    /// two (O(addresses)) only then.
    pub announced_changed: bool,
}

/// How much a pass looks at.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Everything: pools, Nodes, Namespaces or speakers may have changed (or nothing is known yet).
    Everything,
    /// Only these Services changed since the last pass (each as the reflector shows it now; `None` once
    /// deleted), besides which addresses the speakers acknowledge (compared by the pass itself). The
    /// first pass is always a full one, whatever is asked.
    Services(&'a BTreeMap<ServiceKey, Option<Arc<Service>>>),
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

/// Why a Service has no (or not all) addresses, or what is wrong with them: the Event reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The request cannot be read, or no pool can give what it asks.
    AllocationFailed,
    /// The status showed an address another (older) Service holds.
    AllocationConflict,
    /// An address it holds is in no pool any more.
    AddressOutsidePools,
    /// No node may announce one of its addresses.
    NoAnnouncer,
}

impl Reason {
    /// As the Event's `reason` field spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllocationFailed => "AllocationFailed",
            Self::AllocationConflict => "AllocationConflict",
            Self::AddressOutsidePools => "AddressOutsidePools",
            Self::NoAnnouncer => "NoAnnouncer",
        }
    }
}

/// Why a Service has no (or not all) addresses, or a note about them; one per Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Event reason.
    pub reason: Reason,
    /// Human message naming the field or object.
    pub message: String,
}

/// Which Services an [`Outcome`] speaks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Coverage {
    /// Every Service: one absent from `statuses` is not ours, one absent from `notes` has nothing wrong.
    #[default]
    All,
    /// Only these; nothing is said of the others, which keep what an earlier outcome said.
    Only(BTreeSet<ServiceKey>),
}

impl Coverage {
    /// Whether the outcome speaks for `key`.
    pub fn covers(&self, key: &ServiceKey) -> bool {
        match self {
            Self::All => true,
            Self::Only(keys) => keys.contains(key),
        }
    }
}

/// What the pass decided.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Which Services the maps below speak for.
    pub coverage: Coverage,
    /// For every covered Service we serve (and those we stopped serving that still show our addresses):
    /// the addresses its status should list.
    pub statuses: BTreeMap<ServiceKey, Vec<IpAddr>>,
    /// The node(s) announcing each covered Service's addresses, comma-separated; `None` when nobody does
    /// or will. Absent while one of its addresses waits for its new node's acknowledgement.
    pub announcing: BTreeMap<ServiceKey, Option<String>>,
    /// Warnings per covered Service.
    pub notes: BTreeMap<ServiceKey, Note>,
    /// Desired assignments per node, for the speakers: every node's after a full pass (a node absent
    /// has none), only the nodes whose set changed after an incremental one.
    pub desired: BTreeMap<String, Vec<DesiredAssignment>>,
    /// Whether `desired` lists every node.
    pub desired_complete: bool,
    /// Per IPPool (CRD) name.
    pub pools: BTreeMap<String, PoolReport>,
    /// Served Services still without any address (all of them, whatever the coverage).
    pub pending: usize,
    /// How many Services' addresses and addresses' announcers this pass changed. A periodic full pass
    /// with no change in between should find 0: anything else means an incremental pass missed it.
    pub changed: usize,
}

/// Keeps allocations, and what passes learnt, between passes.
#[derive(Debug)]
pub struct Planner {
    filter: ClassFilter,
    allocator: Allocator,
    restored: bool,
    /// Addresses Service statuses showed at the first pass: a speaker may still hold them from an earlier
    /// leader. Any other address is fresh.
    inherited: BTreeSet<IpAddr>,
    /// Requests of the Services we serve, with the `resourceVersion` they were read from.
    requests: HashMap<ServiceKey, (Option<String>, Arc<ReadRequest>)>,
    /// Announcers chosen in earlier passes.
    announcers: announcer::Memo,
    /// What only a full pass changes.
    world: World,
    /// Nodes with a ready endpoint, per `externalTrafficPolicy: Local` Service we serve.
    local: HashMap<ServiceKey, BTreeSet<String>>,
    /// Why a served Service's request or allocation failed (retried when addresses are freed).
    failures: HashMap<ServiceKey, Note>,
    /// The announcer of every held address (`None`: nobody may announce it).
    placed: HashMap<IpAddr, Option<String>>,
    /// The speakers' sets: per node, its addresses.
    by_node: BTreeMap<String, BTreeMap<IpAddr, DesiredAssignment>>,
    /// Served Services without any address.
    pending: BTreeSet<ServiceKey>,
    /// The acknowledgements the last pass saw.
    announced: BTreeMap<IpAddr, String>,
}

type ReadRequest = Result<Request, request::RequestError>;

/// A node's name and labels.
pub type NodeLabels = (String, BTreeMap<String, String>);

/// What a full pass derives from pools, Nodes, Namespaces and speakers, for the passes after it.
#[derive(Debug, Default)]
struct World {
    /// Labels per Namespace (pools may select Services by them).
    namespace_labels: HashMap<String, BTreeMap<String, String>>,
    /// Nodes that may announce: Ready, not excluded, with a speaker (or, while settling, late).
    nodes: Vec<(String, BTreeMap<String, String>)>,
    /// Candidate nodes per pool name (`None`: addresses outside every pool), made when first needed.
    candidates: HashMap<Option<String>, Candidates>,
    /// Reports of IPPools whose spec does not check out.
    invalid_pools: BTreeMap<String, PoolReport>,
    /// Names of the IPPools that check out (legacy pools get no report).
    crd_pools: BTreeSet<String>,
    /// Per pool, the others sharing an address with it.
    overlaps: BTreeMap<String, Vec<String>>,
}

/// What one pass touched so far.
#[derive(Debug, Default)]
struct Touched {
    /// Services to describe in the outcome.
    keys: BTreeSet<ServiceKey>,
    /// Addresses whose announcer to (re)compute.
    addresses: BTreeSet<IpAddr>,
    /// Nodes whose set changed.
    nodes: BTreeSet<String>,
    /// Whether some Service left an address, freeing it or leaving it to fewer holders: a Service waiting
    /// for an address, or refused one because of who held it, may now get it, or be refused naming
    /// another holder.
    freed: bool,
    /// Whether a Service sharing addresses changed (one waiting to share may now fit).
    sharing: bool,
    /// See [`Outcome::changed`].
    changed: usize,
}

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
            world: World::default(),
            local: HashMap::new(),
            failures: HashMap::new(),
            placed: HashMap::new(),
            by_node: BTreeMap::new(),
            pending: BTreeSet::new(),
            announced: BTreeMap::new(),
        }
    }

    /// The allocator (for metrics and tests).
    pub fn allocator(&self) -> &Allocator {
        &self.allocator
    }

    /// What BGP mode needs of the last pass: the nodes that may announce (with their labels), and every
    /// held address with its pool, its holders and, when some holder has `externalTrafficPolicy: Local`,
    /// the nodes with a ready endpoint of every such holder.
    pub fn bgp_view(&self) -> (&[NodeLabels], Vec<crate::bgp::plan::Held<'_>>) {
        let held = self
            .allocator
            .holdings()
            .map(|(address, holders)| {
                let services: Vec<&ServiceKey> = holders.collect();
                let mut local: Option<BTreeSet<String>> = None;
                for ready in services.iter().filter_map(|s| self.local.get(*s)) {
                    local = Some(match local {
                        None => ready.clone(),
                        Some(so_far) => so_far.intersection(ready).cloned().collect(),
                    });
                }
                crate::bgp::plan::Held {
                    address,
                    pool: self.allocator.pool_of(address).map(|p| p.name.as_str()),
                    services,
                    local,
                }
            })
            .collect();
        (&self.world.nodes, held)
    }

    /// Runs one pass over `scope`.
    pub fn pass(&mut self, inputs: &Inputs<'_>, scope: Scope<'_>) -> Outcome {
        let mut outcome = Outcome::default();
        let mut touched = Touched::default();
        match scope {
            Scope::Services(changed) if self.restored => {
                outcome.coverage = Coverage::Only(BTreeSet::new());
                self.allocate_changed(inputs, changed, &mut touched, &mut outcome);
                // The unserved among them still get an entry, so that what was said of them is forgotten.
                touched.keys.extend(changed.keys().cloned());
                if inputs.announced_changed {
                    self.take_acknowledgements(inputs.announced, &mut touched);
                }
            }
            _ => {
                self.refresh_world(inputs);
                self.announcers.begin_pass();
                self.allocate_all(inputs, &mut touched, &mut outcome);
                touched.addresses.extend(self.placed.keys().copied());
                touched
                    .addresses
                    .extend(self.allocator.holdings().map(|(a, _)| a));
                self.announced.clone_from(inputs.announced);
            }
        }
        let complete = matches!(outcome.coverage, Coverage::All);
        for address in std::mem::take(&mut touched.addresses) {
            self.place(address, &mut touched);
        }
        if complete {
            let allocator = &self.allocator;
            self.announcers
                .end_pass(|address| allocator.is_held(*address));
        }
        for key in &touched.keys {
            self.describe(key, &mut outcome);
        }
        self.finish(complete, touched, &mut outcome);
        outcome
    }

    /// Takes in which addresses speakers acknowledge; the Services holding one that changed are touched.
    /// Compared in place: copying ten thousand entries per pass would cost more than the pass.
    fn take_acknowledgements(&mut self, now: &BTreeMap<IpAddr, String>, touched: &mut Touched) {
        let gone: Vec<IpAddr> = self
            .announced
            .keys()
            .filter(|address| !now.contains_key(address))
            .copied()
            .collect();
        for address in gone {
            self.announced.remove(&address);
            touched
                .keys
                .extend(self.allocator.holders_of(address).cloned());
        }
        for (address, node) in now {
            if self.announced.get(address) != Some(node) {
                self.announced.insert(*address, node.clone());
                touched
                    .keys
                    .extend(self.allocator.holders_of(*address).cloned());
            }
        }
    }

    /// Pools and what a full pass derives from Nodes, Namespaces and speakers.
    fn refresh_world(&mut self, inputs: &Inputs<'_>) {
        let mut world = World::default();
        // Pools: the CRD ones that check out, then legacy ones whose name is free.
        let mut defs = Vec::new();
        for pool in inputs.pools {
            let name = pool.metadata.name.clone().unwrap_or_default();
            match PoolDef::from_spec(&name, &pool.spec) {
                Ok(def) => {
                    world.crd_pools.insert(name);
                    defs.push(def);
                }
                Err(error) => {
                    world.invalid_pools.insert(
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
        world.overlaps = overlaps(&defs);
        self.allocator.set_pools(defs);
        world.namespace_labels = inputs
            .namespaces
            .iter()
            .map(|n| {
                (
                    n.metadata.name.clone().unwrap_or_default(),
                    n.metadata.labels.clone().unwrap_or_default(),
                )
            })
            .collect();
        world.nodes = inputs
            .nodes
            .iter()
            .filter(|n| node_ready(n))
            .map(|n| {
                (
                    n.metadata.name.clone().unwrap_or_default(),
                    n.metadata.labels.clone().unwrap_or_default(),
                )
            })
            .filter(|(name, labels)| {
                !labels.contains_key(EXCLUDE_LABEL)
                    && (inputs.speakers.contains_key(name)
                        || (inputs.include_unconnected && !inputs.ever_connected.contains(name)))
            })
            .collect();
        self.world = world;
    }

    /// Every Service: release what those we no longer serve hold, restore from statuses on the first
    /// pass, then allocate oldest first.
    fn allocate_all(&mut self, inputs: &Inputs<'_>, touched: &mut Touched, outcome: &mut Outcome) {
        let served: HashMap<ServiceKey, &Arc<Service>> = inputs
            .services
            .iter()
            .filter(|s| self.serves(s))
            .map(|s| (ServiceKey::of(s), s))
            .collect();
        let unserved: Vec<ServiceKey> = self
            .allocator
            .holdings()
            .flat_map(|(_, holders)| holders.cloned().collect::<Vec<_>>())
            .filter(|k| !served.contains_key(k))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for key in unserved {
            let still_there = inputs.services.iter().find(|s| ServiceKey::of(s) == key);
            self.release(&key, still_there.map(|s| &**s), touched, outcome);
        }
        self.requests.retain(|key, _| served.contains_key(key));
        self.failures.clear();
        self.local.clear();
        self.pending.clear();
        let mut requests: Vec<(ServiceKey, Arc<ReadRequest>)> = served
            .into_iter()
            .map(|(key, service)| {
                let read = self.read(&key, service);
                (key, read)
            })
            .collect();
        sort_oldest_first(&mut requests);
        if !self.restored {
            self.restore(&requests);
        }
        let slices = SliceIndex::new(inputs.slices);
        self.allocate_rounds(requests, &slices, touched);
    }

    /// Only the changed Services (and, through [`Planner::allocate_rounds`], whom they affect).
    fn allocate_changed(
        &mut self,
        inputs: &Inputs<'_>,
        changed: &BTreeMap<ServiceKey, Option<Arc<Service>>>,
        touched: &mut Touched,
        outcome: &mut Outcome,
    ) {
        let mut requests = Vec::new();
        for (key, service) in changed {
            if let Some((_, previous)) = self.requests.get(key) {
                touched.sharing |= shares(previous);
            }
            // What a full pass would have forgotten (a restore conflict) goes once the Service changes.
            self.failures.remove(key);
            match service.as_ref().filter(|s| self.serves(s)) {
                Some(service) => requests.push((key.clone(), self.read(key, service))),
                None => self.release(key, service.as_deref(), touched, outcome),
            }
        }
        let slices = SliceIndex::new(inputs.slices);
        self.allocate_rounds(requests, &slices, touched);
    }

    /// Allocates for `first`, oldest first, then again for whom that may have changed things, until
    /// nothing more changes (at most [`ROUNDS`] times): the Services sharing an address with one whose
    /// request or addresses changed (whether they may go on sharing depends on it), and, once an address
    /// was freed or a sharing Service changed, the Services still waiting for an address.
    fn allocate_rounds(
        &mut self,
        first: Vec<(ServiceKey, Arc<ReadRequest>)>,
        slices: &SliceIndex<'_>,
        touched: &mut Touched,
    ) {
        let mut round = first;
        // Services sharing an address: their terms of sharing may change with their request.
        let mut moved: BTreeSet<ServiceKey> = round
            .iter()
            .filter(|(key, _)| {
                self.allocator
                    .assigned(key)
                    .iter()
                    .any(|a| self.allocator.holders_of(*a).nth(1).is_some())
            })
            .map(|(key, _)| key.clone())
            .collect();
        for _ in 0..ROUNDS {
            sort_oldest_first(&mut round);
            touched.sharing |= round.iter().any(|(_, r)| shares(r));
            for (key, request) in &round {
                if self.allocate(key, request, slices, touched) {
                    moved.insert(key.clone());
                }
                touched.keys.insert(key.clone());
            }
            let mut next: BTreeSet<ServiceKey> = BTreeSet::new();
            for key in std::mem::take(&mut moved) {
                for address in self.allocator.assigned(&key).to_vec() {
                    next.extend(
                        self.allocator
                            .holders_of(address)
                            .filter(|k| **k != key)
                            .cloned(),
                    );
                }
            }
            if std::mem::take(&mut touched.freed) || std::mem::take(&mut touched.sharing) {
                next.extend(
                    self.failures
                        .iter()
                        .filter(|(_, note)| note.reason == Reason::AllocationFailed)
                        .map(|(key, _)| key.clone()),
                );
            }
            round = next
                .into_iter()
                .filter_map(|key| {
                    let request = self.requests.get(&key)?.1.clone();
                    request.is_ok().then_some((key, request))
                })
                .collect();
            if round.is_empty() {
                return;
            }
        }
    }

    /// Whether `service` is one of ours to serve.
    fn serves(&self, service: &Service) -> bool {
        self.filter.handles(service) && service.metadata.deletion_timestamp.is_none()
    }

    /// `service`'s request, re-read only when its `resourceVersion` changed since the last pass.
    fn read(&mut self, key: &ServiceKey, service: &Service) -> Arc<ReadRequest> {
        let version = service.metadata.resource_version.as_deref();
        if let Some((Some(seen), read)) = self.requests.get(key)
            && Some(seen.as_str()) == version
        {
            return read.clone();
        }
        let read = Arc::new(request::read(service));
        self.requests
            .insert(key.clone(), (version.map(str::to_owned), read.clone()));
        read
    }

    /// Frees what a Service we no longer serve holds; if it still exists and shows exactly our
    /// addresses, its status is cleared (other implementations' statuses are left alone).
    fn release(
        &mut self,
        key: &ServiceKey,
        service: Option<&Service>,
        touched: &mut Touched,
        outcome: &mut Outcome,
    ) {
        let ours = self.allocator.assigned(key).to_vec();
        self.requests.remove(key);
        self.failures.remove(key);
        self.local.remove(key);
        self.pending.remove(key);
        if ours.is_empty() {
            return;
        }
        self.allocator.release(key);
        touched.freed = true;
        touched.changed += 1;
        touched.addresses.extend(ours.iter().copied());
        if let Some(service) = service
            && request::read(service).is_ok_and(|r| !r.current.is_empty() && r.current == ours)
        {
            outcome.statuses.insert(key.to_owned(), vec![]);
        }
    }

    /// The first pass: claims what statuses show, oldest Service first.
    fn restore(&mut self, requests: &[(ServiceKey, Arc<ReadRequest>)]) {
        for (key, request) in requests {
            let Ok(request) = request.as_ref() else {
                continue;
            };
            if request.current.is_empty() {
                continue;
            }
            self.inherited.extend(request.current.iter().copied());
            if let Err(error) = self.allocator.restore(request) {
                self.failures.insert(
                    key.clone(),
                    Note {
                        reason: Reason::AllocationConflict,
                        message: format!(
                            "status address not kept: {error}; the older Service keeps it"
                        ),
                    },
                );
            }
        }
        self.restored = true;
    }

    /// Gives one served Service its addresses (keeping what it holds where it can); returns whether
    /// they changed.
    fn allocate(
        &mut self,
        key: &ServiceKey,
        request: &ReadRequest,
        slices: &SliceIndex<'_>,
        touched: &mut Touched,
    ) -> bool {
        let before = self.allocator.assigned(key).to_vec();
        match request {
            Err(error) => {
                self.local.remove(key);
                self.failures.insert(
                    key.clone(),
                    Note {
                        reason: Reason::AllocationFailed,
                        message: error.to_string(),
                    },
                );
            }
            Ok(request) => {
                if request.traffic_policy == TrafficPolicy::Local {
                    self.local.insert(key.clone(), slices.ready_nodes(request));
                } else {
                    self.local.remove(key);
                }
                let labels = self.world.namespace_labels.get(request.namespace.as_str());
                let no_labels = BTreeMap::new();
                let labels = labels.unwrap_or(&no_labels);
                let admits = |p: &PoolDef| p.admits(&request.namespace, labels, &request.labels);
                let result = self.allocator.assign(request, admits);
                self.note_allocation(key, result.err());
            }
        }
        let after = self.allocator.assigned(key);
        if after.is_empty() {
            self.pending.insert(key.clone());
        } else {
            self.pending.remove(key);
        }
        // Its own addresses are placed again even if they stay: its traffic policy or endpoints may
        // have changed.
        touched.addresses.extend(after.iter().copied());
        if before == after {
            return false;
        }
        touched.changed += 1;
        // Not only an address nobody holds any more: one a holder left may now be shared, and a refusal
        // that named the leaver must name who is left, as a full pass would.
        touched.freed |= before.iter().any(|a| !after.contains(a));
        touched.addresses.extend(before.iter().copied());
        true
    }

    /// Records how an allocation went: a failure's note, or the address a restore conflict was given.
    fn note_allocation(&mut self, key: &ServiceKey, error: Option<crate::allocator::AllocError>) {
        match error {
            Some(error) => {
                let kept = self.allocator.assigned(key);
                let message = if kept.is_empty() {
                    error.to_string()
                } else {
                    format!("{error}; keeping {}", request::join_addresses(kept))
                };
                // A conflict note from the restore says more than the retry's outcome.
                if self.failures.get(key).map(|n| n.reason) != Some(Reason::AllocationConflict) {
                    self.failures.insert(
                        key.clone(),
                        Note {
                            reason: Reason::AllocationFailed,
                            message,
                        },
                    );
                }
            }
            None => {
                if self.failures.get(key).map(|n| n.reason) == Some(Reason::AllocationFailed) {
                    self.failures.remove(key);
                }
            }
        }
    }

    /// (Re)computes who announces `address`, and files it in that node's set.
    fn place(&mut self, address: IpAddr, touched: &mut Touched) {
        let holders: Vec<ServiceKey> = self.allocator.holders_of(address).cloned().collect();
        let old = self.placed.get(&address).cloned().flatten();
        if holders.is_empty() {
            self.placed.remove(&address);
            self.announcers.forget(address);
            if let Some(old) = old {
                self.unfile(&old, address, touched);
            }
            return;
        }
        let pool = self.allocator.pool_of(address);
        let pool_name = pool.map(|p| p.name.clone());
        let candidates = match self.world.candidates.get(&pool_name) {
            Some(candidates) => candidates.clone(),
            None => {
                let set = self
                    .world
                    .nodes
                    .iter()
                    .filter(|(_, labels)| pool.is_none_or(|p| p.announces_on(labels)))
                    .map(|(name, _)| name.clone())
                    .collect();
                let candidates = self.announcers.intern(set);
                self.world.candidates.insert(pool_name, candidates.clone());
                candidates
            }
        };
        let ready: Vec<&BTreeSet<String>> =
            holders.iter().filter_map(|s| self.local.get(s)).collect();
        let chosen = if ready.is_empty() {
            self.announcers.choose(address, &candidates)
        } else {
            // externalTrafficPolicy: Local: only nodes with a ready endpoint of every holder; these sets
            // are per Service, so they are not memoised.
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
        }
        .map(str::to_owned);
        let assignment = DesiredAssignment {
            address,
            interfaces: pool
                .map(|p| p.announce.interfaces.clone())
                .unwrap_or_default(),
            services: holders.iter().map(ToString::to_string).collect(),
            fresh: !self.inherited.contains(&address),
        };
        if old != chosen {
            if self.placed.contains_key(&address) {
                touched.changed += 1;
            }
            if let Some(old) = &old {
                self.unfile(old, address, touched);
            }
        }
        if let Some(node) = &chosen {
            let set = self.by_node.entry(node.clone()).or_default();
            if set.get(&address) != Some(&assignment) {
                set.insert(address, assignment);
                touched.nodes.insert(node.clone());
            }
        }
        self.placed.insert(address, chosen);
        touched.keys.extend(holders);
    }

    /// Takes `address` out of `node`'s set.
    fn unfile(&mut self, node: &str, address: IpAddr, touched: &mut Touched) {
        if let Some(set) = self.by_node.get_mut(node) {
            set.remove(&address);
            if set.is_empty() {
                self.by_node.remove(node);
            }
        }
        touched.nodes.insert(node.to_owned());
    }

    /// A served Service's status, note and announcing node(s), as the outcome gives them.
    fn describe(&self, key: &ServiceKey, outcome: &mut Outcome) {
        if !self.requests.contains_key(key) {
            return;
        }
        let assigned = self.allocator.assigned(key);
        outcome.statuses.insert(key.clone(), assigned.to_vec());
        if let Some(note) = self.note(key, assigned) {
            outcome.notes.insert(key.clone(), note);
        }
        // The condition names who acknowledged each address. An address placed on a node that has not
        // acknowledged it yet (a handover in flight, or speakers still reconnecting after a start, when
        // the hub knows nobody yet) says nothing: clearing it for those milliseconds or seconds would
        // cost two writes per Service and show users a gap that is not there.
        let mut announcing: Vec<&str> = Vec::new();
        for address in assigned {
            match self.announced.get(address) {
                Some(node) => announcing.push(node),
                None if matches!(self.placed.get(address), Some(Some(_))) => return,
                None => {}
            }
        }
        announcing.sort_unstable();
        announcing.dedup();
        outcome.announcing.insert(
            key.clone(),
            (!announcing.is_empty()).then(|| announcing.join(",")),
        );
    }

    /// The one note a Service gets, most telling first: a failure, an address outside every pool, an
    /// address nobody may announce (each about its lowest such address).
    fn note(&self, key: &ServiceKey, assigned: &[IpAddr]) -> Option<Note> {
        if let Some(note) = self.failures.get(key) {
            let mut note = note.clone();
            if note.reason == Reason::AllocationConflict && !assigned.is_empty() {
                note.message = format!(
                    "{}; given {}",
                    note.message,
                    request::join_addresses(assigned)
                );
            }
            return Some(note);
        }
        let lowest =
            |wanted: &dyn Fn(&IpAddr) -> bool| assigned.iter().copied().filter(wanted).min();
        if let Some(address) = lowest(&|a| self.allocator.pool_of(*a).is_none()) {
            return Some(Note {
                reason: Reason::AddressOutsidePools,
                message: format!(
                    "{address} is no longer in any pool; it stays with this Service until the Service releases it"
                ),
            });
        }
        // A pool advertised by BGP only has no layer-2 announcer by design: nothing to warn about.
        let address = lowest(&|a| {
            matches!(self.placed.get(a), Some(None))
                && self
                    .allocator
                    .pool_of(*a)
                    .is_none_or(|p| p.layer2 != crate::pool::Layer2::Off)
        })?;
        let pool = self.allocator.pool_of(address);
        Some(Note {
            reason: Reason::NoAnnouncer,
            message: format!(
                "no Ready node with a connected speaker{}{} can announce {address}",
                if pool.is_some_and(|p| p.announce.node_selector.is_some()) {
                    " matching the pool's spec.announce.nodeSelector"
                } else {
                    ""
                },
                if self.local.contains_key(key) {
                    " and a ready endpoint (externalTrafficPolicy: Local)"
                } else {
                    ""
                }
            ),
        })
    }

    /// The speakers' sets, pool reports and counts.
    fn finish(&self, complete: bool, touched: Touched, outcome: &mut Outcome) {
        let set = |node: &str| -> Vec<DesiredAssignment> {
            self.by_node
                .get(node)
                .map(|set| set.values().cloned().collect())
                .unwrap_or_default()
        };
        outcome.desired_complete = complete;
        outcome.desired = if complete {
            self.by_node
                .keys()
                .map(|node| (node.clone(), set(node)))
                .collect()
        } else {
            touched
                .nodes
                .iter()
                .map(|node| (node.clone(), set(node)))
                .collect()
        };
        if let Coverage::Only(keys) = &mut outcome.coverage {
            keys.extend(touched.keys);
            keys.extend(outcome.statuses.keys().cloned());
        }
        outcome.pools.clone_from(&self.world.invalid_pools);
        for def in self.allocator.pools() {
            if self.world.crd_pools.contains(&def.name) {
                outcome.pools.insert(
                    def.name.clone(),
                    PoolReport {
                        usage: self.allocator.usage(&def.name),
                        invalid: None,
                        overlaps: self
                            .world
                            .overlaps
                            .get(&def.name)
                            .cloned()
                            .unwrap_or_default(),
                    },
                );
            }
        }
        outcome.pending = self.pending.len();
        outcome.changed = touched.changed;
    }
}

/// Sorts requests as claims are honoured: the oldest Service first, then by key.
fn sort_oldest_first(requests: &mut [(ServiceKey, Arc<ReadRequest>)]) {
    let created = |r: &ReadRequest| r.as_ref().map_or(i64::MAX, |r: &Request| r.created);
    requests.sort_by(|(ka, ra), (kb, rb)| (created(ra), ka).cmp(&(created(rb), kb)));
}

/// Whether the request may share its addresses with other Services.
fn shares(request: &ReadRequest) -> bool {
    request.as_ref().is_ok_and(|r| r.sharing_key.is_some())
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

/// Whether `node` may announce: Ready, and not cordoned.
pub(crate) fn node_ready(node: &Node) -> bool {
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

static NO_NODES: BTreeSet<String> = BTreeSet::new();

/// EndpointSlices by the Service they belong to (`kubernetes.io/service-name`), indexed once per pass
/// and only if some `externalTrafficPolicy: Local` Service is allocated in it.
struct SliceIndex<'a> {
    slices: &'a [Arc<EndpointSlice>],
    index: std::cell::OnceCell<HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>>,
}

impl<'a> SliceIndex<'a> {
    fn new(slices: &'a [Arc<EndpointSlice>]) -> Self {
        Self {
            slices,
            index: std::cell::OnceCell::new(),
        }
    }

    fn index(&self) -> &HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>> {
        self.index.get_or_init(|| {
            let mut index: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
            for slice in self.slices {
                let service = slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name"));
                if let (Some(namespace), Some(service)) =
                    (slice.metadata.namespace.as_deref(), service)
                {
                    index.entry((namespace, service)).or_default().push(slice);
                }
            }
            index
        })
    }

    /// Nodes with a ready endpoint of the Service.
    fn ready_nodes(&self, request: &Request) -> BTreeSet<String> {
        let name = request.key.name();
        self.index()
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
