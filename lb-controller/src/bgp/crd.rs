//! The BGP custom resources: `BGPPeer`, `BGPAdvertisement` and `BFDProfile` under `groundwork.dev/v1alpha1`.
//!
//! Their specs have MetalLB's shapes, field for field (`metallb.io` `BGPPeer` v1beta2, `BGPAdvertisement` and
//! `BFDProfile` v1beta1), so a MetalLB user's YAML works with only `apiVersion` changed, and the same Rust
//! types read MetalLB's own objects in place (`super::metallb`). Fields we do not act on are still parsed:
//! `super::check` names each one a user set, rather than letting serde drop it unseen.
//!
//! Ours are cluster-scoped like `IPPool`; MetalLB's live in its namespace.

use k8s_openapi::api::core::v1::SecretReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A router the nodes' speakers peer with.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "groundwork.dev",
    version = "v1alpha1",
    kind = "BGPPeer",
    plural = "bgppeers",
    shortname = "bgppeer",
    printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.peerAddress"}"#,
    printcolumn = r#"{"name":"ASN","type":"integer","jsonPath":".spec.peerASN"}"#,
    printcolumn = r#"{"name":"BFD Profile","type":"string","jsonPath":".spec.bfdProfile"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerSpec {
    /// AS number of the nodes' end (4-byte ASNs welcome).
    #[serde(rename = "myASN")]
    pub my_asn: u32,
    /// AS number the router must present; equal to `myASN` for iBGP.
    #[serde(default, rename = "peerASN")]
    pub peer_asn: u32,
    /// MetalLB's `internal`/`external` instead of `peerASN`: not supported (reported).
    #[serde(
        default,
        rename = "dynamicASN",
        skip_serializing_if = "Option::is_none"
    )]
    pub dynamic_asn: Option<String>,
    /// The router's address.
    #[serde(default)]
    pub peer_address: String,
    /// Unnumbered peering over an interface: not supported (reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Local address to connect from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    /// TCP port of the router (179 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_port: Option<u16>,
    /// Proposed hold time (`90s` when unset; 0 or at least 3 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<String>,
    /// Keepalive interval (a third of the hold time when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<String>,
    /// Time between connection attempts (`5s` when unset, with backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_time: Option<String>,
    /// BGP identifier to send (the node's first IPv4 address when unset).
    #[serde(default, rename = "routerID", skip_serializing_if = "Option::is_none")]
    pub router_id: Option<String>,
    /// Only nodes matching one of these peer with the router (all nodes when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// TCP MD5 signature key (RFC 2385).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The key from a Secret: not supported yet (reported); use `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretReference>,
    /// Name of the `BFDProfile` for this peer's BFD session (no BFD when unset).
    #[serde(
        default,
        rename = "bfdProfile",
        skip_serializing_if = "Option::is_none"
    )]
    pub bfd_profile: Option<String>,
    /// Graceful restart (RFC 4724): a speaker's restart keeps its routes in the router.
    #[serde(default)]
    pub enable_graceful_restart: bool,
    /// How long the router keeps a restarting speaker's routes (`120s` when unset). Ours, not MetalLB's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_restart_time: Option<String>,
    /// The router is more than one hop away (TTL 255 instead of 1 for eBGP).
    #[serde(default, rename = "ebgpMultiHop")]
    pub ebgp_multi_hop: bool,
    /// A host VRF: not supported (reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<String>,
    /// Deprecated in MetalLB; separate sessions per family are not supported (reported when true).
    #[serde(default, rename = "disableMP")]
    pub disable_mp: bool,
    /// Advertise both families over this session (MP-BGP); otherwise only the peer address's family.
    #[serde(default)]
    pub dual_stack_address_family: bool,
}

/// Which addresses are advertised, how, and to whom.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "groundwork.dev",
    version = "v1alpha1",
    kind = "BGPAdvertisement",
    plural = "bgpadvertisements",
    shortname = "bgpadv",
    printcolumn = r#"{"name":"Pools","type":"string","jsonPath":".spec.ipAddressPools"}"#,
    printcolumn = r#"{"name":"Peers","type":"string","jsonPath":".spec.peers"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BGPAdvertisementSpec {
    /// Prefix length of the IPv4 route each address is advertised in (32 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_length: Option<i32>,
    /// Prefix length of the IPv6 route each address is advertised in (128 when unset).
    #[serde(
        default,
        rename = "aggregationLengthV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub aggregation_length_v6: Option<i32>,
    /// LOCAL_PREF, sent to iBGP peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// Communities: `65000:100`, `large:65000:1:2`, or a name from a MetalLB `Community`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
    /// Pools by name (IPPools for ours, IPAddressPools for MetalLB's).
    #[serde(
        default,
        rename = "ipAddressPools",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ip_address_pools: Vec<String>,
    /// Pools by label; with no pool named or selected, every pool.
    #[serde(
        default,
        rename = "ipAddressPoolSelectors",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Only nodes matching one of these advertise (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// Only to these BGPPeers, by name (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
}

/// BFD timers for a peer's session.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "groundwork.dev",
    version = "v1alpha1",
    kind = "BFDProfile",
    plural = "bfdprofiles",
    shortname = "bfdprofile",
    printcolumn = r#"{"name":"Receive","type":"integer","jsonPath":".spec.receiveInterval"}"#,
    printcolumn = r#"{"name":"Transmit","type":"integer","jsonPath":".spec.transmitInterval"}"#,
    printcolumn = r#"{"name":"Multiplier","type":"integer","jsonPath":".spec.detectMultiplier"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BFDProfileSpec {
    /// Slowest rate, in ms, at which this end wants control packets (300 when unset; 10-60000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_interval: Option<u32>,
    /// Fastest rate, in ms, at which this end sends them (300 when unset; 10-60000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transmit_interval: Option<u32>,
    /// Packets lost before the session is down (3 when unset; 2-255).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_multiplier: Option<u32>,
    /// Echo mode: not supported (reported when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_interval: Option<u32>,
    /// Echo mode: not supported (reported when true).
    #[serde(default)]
    pub echo_mode: bool,
    /// Wait for the router to start the session.
    #[serde(default)]
    pub passive_mode: bool,
    /// Single hop only: packets must arrive with TTL 255 (RFC 5881); other values are reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ttl: Option<u32>,
}

/// MetalLB's `Community` aliases (read from MetalLB only; ours write communities out).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct CommunitySpec {
    /// `name` -> `value` pairs.
    #[serde(default)]
    pub communities: Vec<CommunityAlias>,
}

/// One named community.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
pub struct CommunityAlias {
    /// The alias used in `BGPAdvertisement.spec.communities`.
    pub name: String,
    /// `65000:100` or `large:65000:1:2`.
    pub value: String,
}

/// One node's BGP session with one peer, as its speaker last reported it: `kubectl get bgpsessionstates`.
/// Written by the controller (named `<node>-<peer>`); a user never writes one.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "groundwork.dev",
    version = "v1alpha1",
    kind = "BGPSessionState",
    plural = "bgpsessionstates",
    shortname = "bgpsession",
    status = "BGPSessionStateStatus",
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.node"}"#,
    printcolumn = r#"{"name":"Peer","type":"string","jsonPath":".spec.peer"}"#,
    printcolumn = r#"{"name":"BGP","type":"string","jsonPath":".status.bgpStatus"}"#,
    printcolumn = r#"{"name":"BFD","type":"string","jsonPath":".status.bfdStatus"}"#,
    printcolumn = r#"{"name":"Advertised","type":"integer","jsonPath":".status.advertised"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BGPSessionStateSpec {
    /// The node whose speaker holds the session.
    pub node: String,
    /// The peer's name (`BGPPeer`, MetalLB's `BGPPeer`, or `legacy-peer-<n>`).
    pub peer: String,
}

/// What the speaker reported.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BGPSessionStateStatus {
    /// RFC 4271's state: Idle, Connect, Active, OpenSent, OpenConfirm, Established.
    pub bgp_status: String,
    /// BFD's state (Down, Init, Up, AdminDown); empty without BFD.
    #[serde(default)]
    pub bfd_status: String,
    /// Prefixes advertised to the peer.
    #[serde(default)]
    pub advertised: u32,
    /// Why the session last went down.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
}
