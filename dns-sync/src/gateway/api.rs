//! The Gateway API objects dns-sync reads (`gateway.networking.k8s.io`, as of Gateway API v1.4.0, the
//! version external-dns v0.20.0 reads): `Gateway` (v1) and the five route kinds, `HTTPRoute` and `GRPCRoute`
//! (v1), `TLSRoute`, `TCPRoute` and `UDPRoute` (v1alpha2, the experimental channel).
//!
//! Hand-written, and only the fields dns-sync reads (serde skips the rest), rather than the kube-rs
//! `gateway-api` crate: its current release (0.22) is generated from Gateway API v1.5.1, where `TLSRoute` is
//! `v1` (v1.4.0 serves `v1alpha2`/`v1alpha3`), and it is built on kube 4 and k8s-openapi 0.28 while this
//! workspace is on kube 5 and k8s-openapi 0.29, so its types are not `kube::Resource`s here. A dozen fields
//! do not justify a second kube in the build.

use std::borrow::Cow;
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::core::NamespaceResourceScope;
use serde::{Deserialize, Serialize};

/// The API group of every Gateway API object.
pub const GROUP: &str = "gateway.networking.k8s.io";

/// A `Gateway` (v1): its listeners and the addresses its controller reports.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Gateway {
    /// Metadata (the target annotation is read from it).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `spec`.
    #[serde(default)]
    pub spec: GatewaySpec,
    /// `status`, written by the Gateway's controller.
    #[serde(default)]
    pub status: Option<GatewayStatus>,
}

/// `Gateway.spec`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct GatewaySpec {
    /// `spec.listeners`.
    #[serde(default)]
    pub listeners: Vec<Listener>,
}

/// One `spec.listeners[]` entry.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// The section name routes refer to.
    #[serde(default)]
    pub name: String,
    /// The host names it accepts (`*.` wildcard allowed); none means any.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Port.
    #[serde(default)]
    pub port: i32,
    /// `HTTP`, `HTTPS`, `TLS`, `TCP`, `UDP` or a domain-prefixed custom protocol.
    #[serde(default)]
    pub protocol: String,
    /// Which routes may attach.
    #[serde(default)]
    pub allowed_routes: Option<AllowedRoutes>,
}

/// `listeners[].allowedRoutes`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct AllowedRoutes {
    /// From which namespaces.
    #[serde(default)]
    pub namespaces: Option<RouteNamespaces>,
    /// Which kinds; none means the kinds of the listener's protocol.
    #[serde(default)]
    pub kinds: Vec<RouteGroupKind>,
}

/// `allowedRoutes.namespaces`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RouteNamespaces {
    /// `Same` (the default), `All` or `Selector`.
    #[serde(default)]
    pub from: Option<String>,
    /// With `Selector`: the labels of the namespaces allowed.
    #[serde(default)]
    pub selector: Option<LabelSelector>,
}

/// `allowedRoutes.kinds[]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RouteGroupKind {
    /// Group (default `gateway.networking.k8s.io`).
    #[serde(default)]
    pub group: Option<String>,
    /// Kind (`HTTPRoute`).
    #[serde(default)]
    pub kind: String,
}

/// `Gateway.status`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct GatewayStatus {
    /// The addresses the Gateway is reachable at.
    #[serde(default)]
    pub addresses: Vec<GatewayAddress>,
}

/// `status.addresses[]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct GatewayAddress {
    /// `IPAddress`, `Hostname` or a custom type.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    /// The address.
    #[serde(default)]
    pub value: String,
}

impl kube::Resource for Gateway {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind((): &()) -> Cow<'_, str> {
        "Gateway".into()
    }
    fn group((): &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version((): &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural((): &()) -> Cow<'_, str> {
        "gateways".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A route of any kind: the fields every kind shares (TCP and UDP routes have no `hostnames`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Route {
    /// Metadata (annotations, labels).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `spec`.
    #[serde(default)]
    pub spec: RouteSpec,
    /// `status`, written by the controllers of its parents.
    #[serde(default)]
    pub status: Option<RouteStatus>,
}

/// The route `spec` fields dns-sync reads.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// The host names it serves (HTTP, GRPC and TLS routes).
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// The Gateways (or other parents) it attaches to.
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
}

/// A `parentRefs[]` entry (also in `status.parents[].parentRef`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// Group (default `gateway.networking.k8s.io`).
    #[serde(default)]
    pub group: Option<String>,
    /// Kind (default `Gateway`).
    #[serde(default)]
    pub kind: Option<String>,
    /// Namespace (default the route's).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// A listener name.
    #[serde(default)]
    pub section_name: Option<String>,
    /// A listener port.
    #[serde(default)]
    pub port: Option<i32>,
}

/// The route `status`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RouteStatus {
    /// One entry per parent (and controller) that looked at the route.
    #[serde(default)]
    pub parents: Vec<RouteParentStatus>,
}

/// `status.parents[]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    /// Which parent.
    #[serde(default)]
    pub parent_ref: ParentReference,
    /// Its conditions (`Accepted`, `ResolvedRefs`, ...).
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A status condition: only its type and status matter here.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Condition {
    /// `Accepted`, ...
    #[serde(default, rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[serde(default)]
    pub status: String,
}

/// The five route kinds dns-sync reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKind {
    /// `HTTPRoute` (v1).
    Http,
    /// `GRPCRoute` (v1).
    Grpc,
    /// `TLSRoute` (v1alpha2).
    Tls,
    /// `TCPRoute` (v1alpha2).
    Tcp,
    /// `UDPRoute` (v1alpha2).
    Udp,
}

impl RouteKind {
    /// Every kind.
    pub const ALL: [Self; 5] = [Self::Http, Self::Grpc, Self::Tls, Self::Tcp, Self::Udp];

    /// The Kubernetes kind (`HTTPRoute`).
    pub fn kind(self) -> &'static str {
        match self {
            Self::Http => "HTTPRoute",
            Self::Grpc => "GRPCRoute",
            Self::Tls => "TLSRoute",
            Self::Tcp => "TCPRoute",
            Self::Udp => "UDPRoute",
        }
    }

    /// The API version dns-sync reads it at (Gateway API v1.4.0, as external-dns v0.20.0).
    pub fn version(self) -> &'static str {
        match self {
            Self::Http | Self::Grpc => "v1",
            Self::Tls | Self::Tcp | Self::Udp => "v1alpha2",
        }
    }

    /// The resource name (`httproutes`).
    pub fn plural(self) -> &'static str {
        match self {
            Self::Http => "httproutes",
            Self::Grpc => "grpcroutes",
            Self::Tls => "tlsroutes",
            Self::Tcp => "tcproutes",
            Self::Udp => "udproutes",
        }
    }

    /// The kind in [`crate::source::ObjectId`]s and records' `resource` (`httproute`, as external-dns).
    pub fn id(self) -> &'static str {
        match self {
            Self::Http => "httproute",
            Self::Grpc => "grpcroute",
            Self::Tls => "tlsroute",
            Self::Tcp => "tcproute",
            Self::Udp => "udproute",
        }
    }

    /// The kind whose [`Self::id`] is `id`.
    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.id() == id)
    }

    /// The `--source` value that asks for it (`gateway-httproute`).
    pub fn flag_value(self) -> String {
        format!("gateway-{}", self.id())
    }

    /// Whether its spec has `hostnames` (TCP and UDP routes have none).
    pub fn has_hostnames(self) -> bool {
        matches!(self, Self::Http | Self::Grpc | Self::Tls)
    }
}

/// The statically typed kind of a [`TypedRoute`], for its `kube::Resource` impl.
pub trait KindOf: Send + Sync + 'static {
    /// The kind.
    const KIND: RouteKind;
}

macro_rules! kind_marker {
    ($($marker:ident => $kind:ident),* $(,)?) => {$(
        #[doc = concat!("The `", stringify!($kind), "` marker.")]
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $marker;
        impl KindOf for $marker {
            const KIND: RouteKind = RouteKind::$kind;
        }
    )*};
}

kind_marker!(HttpKind => Http, GrpcKind => Grpc, TlsKind => Tls, TcpKind => Tcp, UdpKind => Udp);

/// A [`Route`] as the API serves it for kind `K`: what a reflector watches.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(transparent, bound = "")]
pub struct TypedRoute<K> {
    /// The route.
    pub route: Route,
    #[serde(skip)]
    kind: PhantomData<K>,
}

impl<K: KindOf> kube::Resource for TypedRoute<K> {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind((): &()) -> Cow<'_, str> {
        K::KIND.kind().into()
    }
    fn group((): &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version((): &()) -> Cow<'_, str> {
        K::KIND.version().into()
    }
    fn plural((): &()) -> Cow<'_, str> {
        K::KIND.plural().into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.route.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.route.metadata
    }
}
