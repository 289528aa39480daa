//! The controller's writes to the Kubernetes API: Service statuses, the announcing-node condition, IPPool
//! statuses and Events, each written only where it differs from what the API shows (and each note told
//! once, not per pass).
//!
//! A pass's writes are prepared from its outcome ([`Writer::prepare`]), carried out as a [`Batch`] that
//! owns everything it needs, so the event loop can go on with passes (and the speakers with their
//! assignments) while ten thousand writes are in flight, then taken back in ([`Writer::finish`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource};
use ops::kube::EventPublisher;
use serde_json::json;

use crate::legacy;
use crate::metrics::{Metrics, PoolLabels};
use crate::plan::{Note, Outcome, Planner, PoolReport};
use crate::pool::{IPPool, IPPoolStatus};
use crate::request::{self, ANNOUNCING_CONDITION, ServiceKey, join_addresses, status_addresses};
use crate::speakers::HubEvent;

/// API writes in flight at once.
const WRITE_CONCURRENCY: usize = 32;

/// Status writes without their announcing-node condition (not acknowledged yet) in one batch, at most:
/// the rest wait for the next pass, which by then knows which speakers acknowledged their addresses and
/// so writes status and condition in one patch. A start at 10,000 Services writes about 500 statuses
/// alone and then 9,500 with their condition, instead of 10,000 statuses and then 10,000 conditions.
const MAX_WITHOUT_CONDITION: usize = 500;

/// The writer side: remembers what it wrote and what it told people, so nothing is repeated.
pub(crate) struct Writer {
    client: Client,
    events: EventPublisher,
    metrics: Metrics,
    /// Status written per Service, until the reflector shows it.
    written_status: HashMap<ServiceKey, Vec<IpAddr>>,
    /// Announcing node written per Service, until the reflector shows it.
    written_announcing: HashMap<ServiceKey, Option<String>>,
    /// Note last published per Service.
    told: HashMap<ServiceKey, Note>,
    /// Legacy ConfigMap problems last published.
    told_legacy: Vec<String>,
    /// Problems with BGP objects last published, by object UID (or name) and message.
    told_bgp: BTreeSet<(String, String)>,
    /// Each node's BGP sessions as last reported, and the task writing them as objects.
    bgp_sessions: BTreeMap<String, Vec<proto::announce::v1::BgpSessionState>>,
    session_states: crate::bgp::sessions::SessionStates,
}

/// The API writes one pass needs, ready to run on their own.
pub(crate) struct Batch {
    client: Client,
    services: Vec<ServiceWrite>,
    pools: Vec<(String, IPPoolStatus)>,
    /// When the first change this batch carries was seen.
    first_change: Instant,
    /// Whether some Services' writes were left for a later batch ([`MAX_WITHOUT_CONDITION`]).
    pub(crate) leftover: bool,
}

/// One Service's status write: its addresses, its announcing-node condition, or both in one patch.
struct ServiceWrite {
    service: Arc<Service>,
    status: Option<Vec<IpAddr>>,
    announcing: Option<Option<String>>,
}

/// How one API write went.
type WriteResult = Result<(), kube::Error>;

/// A batch carried out: each write with its result.
pub(crate) struct Written {
    services: Vec<(ServiceWrite, WriteResult)>,
    pools: Vec<(String, WriteResult)>,
    /// When the first change the batch carried was seen.
    pub(crate) first_change: Instant,
}

impl Batch {
    /// Whether there is nothing to write.
    pub(crate) fn is_empty(&self) -> bool {
        self.services.is_empty() && self.pools.is_empty()
    }

    /// Carries out every write: Services (those whose addresses change first), then pools.
    pub(crate) async fn run(self) -> Written {
        let client = &self.client;
        let services = futures::stream::iter(self.services)
            .map(|write| async move {
                let result = patch_service(client, &write).await;
                (write, result)
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        let mut pools = Vec::new();
        for (name, status) in self.pools {
            let api: Api<IPPool> = Api::all(client.clone());
            let result = api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": status })),
                )
                .await
                .map(|_| ());
            pools.push((name, result));
        }
        Written {
            services,
            pools,
            first_change: self.first_change,
        }
    }
}

impl Writer {
    pub(crate) fn new(client: Client, events: EventPublisher, metrics: Metrics) -> Self {
        Self {
            session_states: crate::bgp::sessions::SessionStates::start(client.clone()),
            client,
            events,
            metrics,
            written_status: HashMap::new(),
            written_announcing: HashMap::new(),
            told: HashMap::new(),
            told_legacy: Vec::new(),
            told_bgp: BTreeSet::new(),
            bgp_sessions: BTreeMap::new(),
        }
    }

    /// What a pass tells without writing objects: each note as an Event once, and the metrics.
    pub(crate) fn tell(&mut self, outcome: &Outcome, services: &Store<Service>) {
        self.told
            .retain(|key, _| !outcome.coverage.covers(key) || outcome.notes.contains_key(key));
        let mut events = Vec::new();
        for (key, note) in &outcome.notes {
            if self.told.get(key) == Some(note) {
                continue;
            }
            let Some(service) = request::find(services, key) else {
                continue;
            };
            let reason = note.reason.as_str();
            tracing::warn!(service = %key, reason, "{}", note.message);
            events.push((
                service.object_ref(&()),
                EventType::Warning,
                reason,
                note.message.clone(),
            ));
            self.told.insert(key.clone(), note.clone());
        }
        self.publish(events);
        self.update_metrics(outcome);
    }

    /// The writes that make the API show `outcome`: only what differs from what the reflectors show and
    /// from what was written before.
    pub(crate) fn prepare(
        &mut self,
        outcome: &Outcome,
        services: &Store<Service>,
        pools: &[Arc<IPPool>],
        first_change: Instant,
    ) -> Batch {
        let mut batch = Batch {
            client: self.client.clone(),
            services: Vec::new(),
            pools: Vec::new(),
            first_change,
            leftover: false,
        };
        let mut writes: BTreeMap<&ServiceKey, ServiceWrite> = BTreeMap::new();
        for (key, desired) in &outcome.statuses {
            let Some(service) = request::find(services, key) else {
                continue;
            };
            if &status_addresses(&service) == desired {
                // Shown: forget the write, so a later change by someone else is written over again.
                self.written_status.remove(key);
                continue;
            }
            if self.written_status.get(key) == Some(desired) {
                continue;
            }
            writes.insert(
                key,
                ServiceWrite {
                    service,
                    status: Some(desired.clone()),
                    announcing: None,
                },
            );
        }
        for (key, desired) in &outcome.announcing {
            let Some(service) = request::find(services, key) else {
                continue;
            };
            if &request::announcing_node(&service) == desired {
                self.written_announcing.remove(key);
                continue;
            }
            if self.written_announcing.get(key) == Some(desired) {
                continue;
            }
            writes
                .entry(key)
                .or_insert(ServiceWrite {
                    service,
                    status: None,
                    announcing: None,
                })
                .announcing = Some(desired.clone());
        }
        let mut without_condition = 0;
        for write in writes.into_values() {
            if write.announcing.is_none() {
                without_condition += 1;
                if without_condition > MAX_WITHOUT_CONDITION {
                    batch.leftover = true;
                    continue;
                }
            }
            batch.services.push(write);
        }
        // Addresses first: what users wait for.
        batch.services.sort_by_key(|w| w.status.is_none());
        for pool in pools {
            let Some(name) = pool.metadata.name.clone() else {
                continue;
            };
            let Some(report) = outcome.pools.get(&name) else {
                continue;
            };
            let previous = pool.status.clone().unwrap_or_default();
            let status = pool_status(report, &previous, pool.metadata.generation);
            if status == previous {
                continue;
            }
            if let Some(invalid) = &report.invalid {
                tracing::warn!(pool = %name, "{invalid}");
                self.publish(vec![(
                    pool.object_ref(&()),
                    EventType::Warning,
                    "InvalidPool",
                    invalid.clone(),
                )]);
            }
            batch.pools.push((name, status));
        }
        batch
    }

    /// Takes in what a batch did; returns what failed (to be passed and prepared again).
    pub(crate) fn finish(&mut self, written: Written) -> Failed {
        let mut failed = Failed::default();
        let mut events = Vec::new();
        let ok = |part: fn(&ServiceWrite) -> bool| {
            written
                .services
                .iter()
                .filter(|(w, r)| part(w) && r.is_ok())
                .count()
        };
        let (statuses, announcing) = (ok(|w| w.status.is_some()), ok(|w| w.announcing.is_some()));
        if statuses > 0 {
            tracing::info!(written = statuses, "Service statuses written");
        }
        if announcing > 0 {
            tracing::info!(written = announcing, "announcing nodes written");
        }
        for (write, result) in written.services {
            let key = ServiceKey::of(&write.service);
            if write.status.is_some() {
                self.metrics.wrote("status", result.is_ok());
            }
            if write.announcing.is_some() {
                self.metrics.wrote("announcing_node", result.is_ok());
            }
            match result {
                Ok(()) => {
                    if let Some(desired) = write.status {
                        self.metrics
                            .change_to_status_seconds
                            .observe(written.first_change.elapsed().as_secs_f64());
                        tracing::debug!(service = %key, addresses = ?desired, "status written");
                        if !desired.is_empty() {
                            events.push((
                                write.service.object_ref(&()),
                                EventType::Normal,
                                "IPAllocated",
                                format!("Assigned {}", join_addresses(&desired)),
                            ));
                        }
                        self.written_status.insert(key.clone(), desired);
                    }
                    if let Some(desired) = write.announcing {
                        self.written_announcing.insert(key, desired);
                    }
                }
                Err(error) => {
                    tracing::warn!(service = %key, error = %error, "cannot write the Service status");
                    // A Service deleted meanwhile is not a failure worth retrying.
                    if !is_not_found(&error) {
                        failed.services.insert(key);
                    }
                }
            }
        }
        for (name, result) in written.pools {
            self.metrics.wrote("pool_status", result.is_ok());
            if let Err(error) = result {
                if !is_not_found(&error) {
                    failed.pools += 1;
                }
                tracing::warn!(pool = %name, error = %error, "cannot write the pool status");
            }
        }
        self.publish(events);
        failed
    }

    fn update_metrics(&self, outcome: &Outcome) {
        self.metrics.pending.set(gauge(outcome.pending));
        self.metrics.pool_total.clear();
        self.metrics.pool_in_use.clear();
        let mut assigned = 0;
        for (name, report) in &outcome.pools {
            let u = report.usage;
            assigned += u.assigned_v4 + u.assigned_v6;
            for (family, used, free) in [
                ("ipv4", u.assigned_v4, u.available_v4),
                ("ipv6", u.assigned_v6, u.available_v6),
            ] {
                let labels = PoolLabels {
                    pool: name.clone(),
                    family: family.to_owned(),
                };
                self.metrics
                    .pool_total
                    .get_or_create(&labels)
                    .set(i64::try_from(used.saturating_add(free)).unwrap_or(i64::MAX));
                self.metrics
                    .pool_in_use
                    .get_or_create(&labels)
                    .set(i64::try_from(used).unwrap_or(i64::MAX));
            }
        }
        self.metrics
            .assignments
            .set(i64::try_from(assigned).unwrap_or(i64::MAX));
    }

    pub(crate) fn tell_legacy(&mut self, map: Option<&ConfigMap>, errors: &[legacy::LegacyError]) {
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        if messages == self.told_legacy {
            return;
        }
        self.told_legacy.clone_from(&messages);
        for message in &messages {
            tracing::warn!(configmap = ?map.and_then(|m| m.metadata.name.clone()), "legacy MetalLB configuration: {message}");
        }
        if let Some(map) = map {
            self.publish(
                messages
                    .into_iter()
                    .map(|m| (map.object_ref(&()), EventType::Warning, "InvalidPool", m))
                    .collect(),
            );
        }
    }

    /// Problems with BGP objects, each as a Warning on the object once (again only after it was fixed and
    /// came back).
    pub(crate) fn tell_bgp(&mut self, problems: Vec<crate::bgp::source::Problem>) {
        let key = |(object, _, message): &crate::bgp::source::Problem| {
            (
                object
                    .uid
                    .clone()
                    .or_else(|| object.name.clone())
                    .unwrap_or_default(),
                message.clone(),
            )
        };
        let now: BTreeSet<(String, String)> = problems.iter().map(key).collect();
        let new: Vec<Notice> = problems
            .into_iter()
            .filter(|p| !self.told_bgp.contains(&key(p)))
            .map(|(object, reason, message)| {
                tracing::warn!(object = ?object.name, kind = ?object.kind, reason, "{message}");
                (object, EventType::Warning, reason, message)
            })
            .collect();
        self.told_bgp = now;
        self.publish(new);
    }

    /// Events about what the speakers did, on the Services using the address.
    pub(crate) fn tell_hub_event(
        &mut self,
        event: &HubEvent,
        planner: &Planner,
        services: &Store<Service>,
    ) {
        let (address, kind, reason, message) = match event {
            HubEvent::BgpSessions { node, sessions } => {
                self.tell_bgp_sessions(node, sessions);
                return;
            }
            HubEvent::HandedOver {
                address,
                from,
                to,
                waited,
            } => (
                *address,
                EventType::Normal,
                "AnnouncerChanged",
                match from {
                    Some(from) => format!(
                        "{address} is announced by node {to} (was {from}; handed over after {waited:?})"
                    ),
                    None => format!("{address} is announced by node {to}"),
                },
            ),
            HubEvent::Conflict {
                node,
                address,
                interface,
                foreign_mac,
            } => (
                *address,
                EventType::Warning,
                "AddressConflict",
                format!(
                    "node {node} saw {} answer for {address} on {interface}: another device uses this address",
                    mac(foreign_mac)
                ),
            ),
            HubEvent::Problem {
                node,
                address: Some(address),
                interface,
                message,
            } => (
                *address,
                EventType::Warning,
                "AnnouncementProblem",
                format!("node {node} cannot announce {address} on {interface:?}: {message}"),
            ),
            HubEvent::Problem { .. }
            | HubEvent::Connected { .. }
            | HubEvent::Disconnected { .. } => return,
        };
        let references: Vec<_> = planner
            .allocator()
            .holders_of(address)
            .filter_map(|key| request::find(services, key))
            .map(|s| (s.object_ref(&()), kind, reason, message.clone()))
            .collect();
        self.publish(references);
    }

    /// A node's BGP sessions: its `BGPSessionState` objects, and an Event on the Node for each session that
    /// came up or went down.
    fn tell_bgp_sessions(&mut self, node: &str, sessions: &[proto::announce::v1::BgpSessionState]) {
        let before = self.bgp_sessions.remove(node).unwrap_or_default();
        let reference = ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Node".to_owned()),
            name: Some(node.to_owned()),
            ..ObjectReference::default()
        };
        let events: Vec<Notice> = sessions
            .iter()
            .filter_map(|now| {
                let was = before.iter().find(|b| b.peer == now.peer);
                crate::bgp::sessions::transition(was, now)
            })
            .map(|(warning, reason, message)| {
                tracing::info!(node, reason, "{message}");
                let kind = if warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                (
                    reference.clone(),
                    kind,
                    reason,
                    format!("node {node}: {message}"),
                )
            })
            .collect();
        self.publish(events);
        self.session_states.report(node, sessions.to_vec());
        self.bgp_sessions.insert(node.to_owned(), sessions.to_vec());
    }

    /// Events are for people: queued for the publisher, never holding up a write.
    fn publish(&self, events: Vec<Notice>) {
        for (reference, type_, reason, note) in events {
            let event = KubeEvent {
                type_,
                reason: reason.to_owned(),
                note: Some(note.chars().take(1000).collect()),
                action: "Allocate".to_owned(),
                secondary: None,
            };
            self.events.publish(event, reference);
        }
    }
}

/// What a batch could not write.
#[derive(Debug, Default)]
pub(crate) struct Failed {
    /// Services whose status or announcing-node condition was not written.
    pub(crate) services: BTreeSet<ServiceKey>,
    /// Pool statuses not written.
    pub(crate) pools: usize,
}

/// An Event to publish: about what, its type, reason and note.
type Notice = (ObjectReference, EventType, &'static str, String);

/// One strategic merge patch on the status subresource: the addresses (replacing the list; `null`
/// removes it) and the announcing-node condition (merged by `type`, so other controllers' conditions
/// stay), either or both. One write where two were needed halves what a start at scale costs the
/// apiserver.
async fn patch_service(client: &Client, write: &ServiceWrite) -> Result<(), kube::Error> {
    let service = &write.service;
    let api: Api<Service> = Api::namespaced(
        client.clone(),
        service.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let mut status = serde_json::Map::new();
    if let Some(addresses) = &write.status {
        let ingress: Vec<_> = addresses
            .iter()
            .map(|a| json!({"ip": a.to_string(), "ipMode": "VIP"}))
            .collect();
        status.insert(
            "loadBalancer".to_owned(),
            if ingress.is_empty() {
                json!({"ingress": null})
            } else {
                json!({ "ingress": ingress })
            },
        );
    }
    if let Some(node) = &write.announcing {
        let condition = match node {
            Some(node) => json!({
                "type": ANNOUNCING_CONDITION,
                "status": "True",
                "reason": "Layer2",
                "message": node,
                "lastTransitionTime": Time(k8s_openapi::jiff::Timestamp::now()),
            }),
            None => json!({"type": ANNOUNCING_CONDITION, "$patch": "delete"}),
        };
        status.insert("conditions".to_owned(), json!([condition]));
    }
    api.patch_status(
        service.metadata.name.as_deref().unwrap_or_default(),
        &PatchParams::default(),
        &Patch::Strategic(json!({ "status": status })),
    )
    .await
    .map(|_| ())
}

/// The pool status to write: usage and conditions, keeping each condition's transition time while its
/// status does not change.
fn pool_status(
    report: &PoolReport,
    previous: &IPPoolStatus,
    generation: Option<i64>,
) -> IPPoolStatus {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let condition = |type_: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" }.to_owned();
        let since = previous
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message,
            last_transition_time: since,
            observed_generation: generation,
        }
    };
    let mut conditions = vec![match &report.invalid {
        None => condition("Ready", true, "Valid", "the spec checks out".to_owned()),
        Some(error) => condition("Ready", false, "InvalidSpec", error.clone()),
    }];
    conditions.push(if report.overlaps.is_empty() {
        condition(
            "Overlapping",
            false,
            "Disjoint",
            "no other pool shares an address".to_owned(),
        )
    } else {
        condition(
            "Overlapping",
            true,
            "SharesAddresses",
            format!(
                "shares addresses with {}; an address is counted in the first pool by name",
                report.overlaps.join(", ")
            ),
        )
    });
    IPPoolStatus {
        assigned_ipv4: report.usage.assigned_v4,
        available_ipv4: report.usage.available_v4,
        assigned_ipv6: report.usage.assigned_v6,
        available_ipv6: report.usage.available_v6,
        conditions,
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

fn mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
