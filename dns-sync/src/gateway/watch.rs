//! The watches behind the Gateway API sources: one reflector per route kind asked for, one on Gateways
//! (`--gateway-namespace`, `--gateway-label-filter`) and one on Namespaces (their labels decide
//! `allowedRoutes.namespaces.from: Selector`). Before any of them starts, [`Watches::start`] asks the API
//! server whether it serves the resources at the versions read: a missing CRD stops dns-sync at start,
//! naming the `--source` value and the resource, as external-dns stops, instead of a reflector that never
//! lists and a daemon that never becomes ready.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use kube::{Api, Client, Resource};
use ops::CancellationToken;
use ops::kube::{Watched, watch_kind};
use tokio::sync::mpsc::UnboundedSender;

use super::api::{
    GROUP, Gateway, GrpcKind, HttpKind, KindOf, Route, RouteKind, TcpKind, TlsKind, TypedRoute,
    UdpKind,
};
use super::{GatewaySettings, World, from_route};
use crate::config::WatchScope;
use crate::source::{Filters, ObjectId, Wanted};

/// How long transient errors (not "not served") are retried at start before giving up.
const DISCOVERY_PATIENCE: Duration = Duration::from_secs(30);

/// Why the Gateway API sources cannot start; names the `--source` value.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The CRD of a resource a requested source reads is not installed (or not at that version).
    #[error(
        "--source {flag}: the API server does not serve {resource} (install the Gateway API v1.4.0 CRDs, {channel} channel)"
    )]
    NotServed {
        /// The `--source` value.
        flag: String,
        /// `plural.group/version`.
        resource: String,
        /// `standard` or `experimental`.
        channel: &'static str,
    },
    /// The API server could not be asked.
    #[error("--source {flag}: cannot ask the API server whether it serves {resource}: {error}")]
    Discovery {
        /// The `--source` value.
        flag: String,
        /// `plural.group/version`.
        resource: String,
        /// What failed.
        error: String,
    },
}

/// One route kind's reflector, whatever its kind.
trait Routes: Send + Sync {
    fn kind(&self) -> RouteKind;
    fn has_listed(&self) -> bool;
    fn wait_listed(&self, limit: Duration) -> BoxFuture<'_, bool>;
    /// The routes (with the reference Events name them by) and whether the view is fresh.
    fn routes(&self) -> BoxFuture<'_, (Vec<(Route, ObjectReference)>, bool)>;
}

impl<K: KindOf + Clone + std::fmt::Debug + Default> Routes for Watched<TypedRoute<K>> {
    fn kind(&self) -> RouteKind {
        K::KIND
    }
    fn has_listed(&self) -> bool {
        Watched::has_listed(self)
    }
    fn wait_listed(&self, limit: Duration) -> BoxFuture<'_, bool> {
        Box::pin(Watched::wait_listed(self, limit))
    }
    fn routes(&self) -> BoxFuture<'_, (Vec<(Route, ObjectReference)>, bool)> {
        Box::pin(async move {
            let (objects, fresh) = self.objects().await;
            let routes = objects
                .iter()
                .map(|o| (o.route.clone(), o.object_ref(&())))
                .collect();
            (routes, fresh)
        })
    }
}

/// The running Gateway API watches.
pub struct Watches {
    settings: GatewaySettings,
    gateways: Watched<Gateway>,
    namespaces: Watched<Namespace>,
    routes: Vec<Box<dyn Routes>>,
}

/// What the routes ask for, each with its object and the reference Events name it by.
pub type Found = Vec<(Wanted, ObjectId, ObjectReference)>;

impl Watches {
    /// Checks that the API server serves Gateways and every route kind of `settings`, then starts the
    /// reflectors (routes in `routes_scope`, `--namespace` and `--label-filter`); `None` when no Gateway API
    /// source was asked for.
    pub async fn start(
        client: &Client,
        settings: &GatewaySettings,
        routes_scope: &WatchScope,
        trigger: UnboundedSender<Instant>,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>, StartError> {
        let Some(first) = settings.routes.first() else {
            return Ok(None);
        };
        check_served(client, &first.flag_value(), "v1", "gateways", "standard").await?;
        for kind in &settings.routes {
            let channel = if kind.version() == "v1" {
                "standard"
            } else {
                "experimental"
            };
            check_served(
                client,
                &kind.flag_value(),
                kind.version(),
                kind.plural(),
                channel,
            )
            .await?;
        }
        let gateways = watch_kind(
            settings.scope.api::<Gateway>(client.clone()),
            settings.scope.watch_config(),
            ops::kube::send_time(trigger.clone()),
            shutdown.clone(),
        );
        let namespaces = watch_kind(
            Api::<Namespace>::all(client.clone()),
            kube::runtime::watcher::Config::default(),
            ops::kube::send_time(trigger.clone()),
            shutdown.clone(),
        );
        let routes = settings
            .routes
            .iter()
            .map(|kind| {
                let (client, trigger, shutdown) =
                    (client.clone(), trigger.clone(), shutdown.clone());
                match kind {
                    RouteKind::Http => watch::<HttpKind>(client, routes_scope, trigger, shutdown),
                    RouteKind::Grpc => watch::<GrpcKind>(client, routes_scope, trigger, shutdown),
                    RouteKind::Tls => watch::<TlsKind>(client, routes_scope, trigger, shutdown),
                    RouteKind::Tcp => watch::<TcpKind>(client, routes_scope, trigger, shutdown),
                    RouteKind::Udp => watch::<UdpKind>(client, routes_scope, trigger, shutdown),
                }
            })
            .collect();
        Ok(Some(Self {
            settings: settings.clone(),
            gateways,
            namespaces,
            routes,
        }))
    }

    /// Waits until every reflector listed once, at most `limit` each; the resource that did not.
    pub async fn wait_listed(&self, limit: Duration) -> Result<(), &'static str> {
        if !self.gateways.wait_listed(limit).await {
            return Err("gateways");
        }
        if !self.namespaces.wait_listed(limit).await {
            return Err("namespaces");
        }
        for routes in &self.routes {
            if !routes.wait_listed(limit).await {
                return Err(routes.kind().plural());
            }
        }
        Ok(())
    }

    /// What every route asks for, and whether the whole view is fresh; the resource not listed yet.
    pub async fn wanted(&self, filters: &Filters) -> Result<(Found, bool), &'static str> {
        let (gateways, mut fresh) = self.gateways.objects().await;
        if !self.gateways.has_listed() {
            return Err("gateways");
        }
        let (namespaces, namespaces_fresh) = self.namespaces.objects().await;
        if !self.namespaces.has_listed() {
            return Err("namespaces");
        }
        fresh &= namespaces_fresh;
        let world = World::new(
            gateways.iter().map(AsRef::as_ref),
            namespaces.iter().map(|n| &n.metadata),
            self.settings.name.as_deref(),
        );
        let mut found = Vec::new();
        for routes in &self.routes {
            let (objects, routes_fresh) = routes.routes().await;
            if !routes.has_listed() {
                return Err(routes.kind().plural());
            }
            fresh &= routes_fresh;
            let kind = routes.kind();
            for (route, reference) in objects {
                let object = ObjectId::of(kind.id(), &route.metadata);
                for wanted in from_route(kind, &route, &world, filters) {
                    found.push((wanted, object.clone(), reference.clone()));
                }
            }
        }
        Ok((found, fresh))
    }
}

/// A reflector over routes of kind `K`.
fn watch<K: KindOf + Clone + std::fmt::Debug + Default>(
    client: Client,
    scope: &WatchScope,
    trigger: UnboundedSender<Instant>,
    shutdown: CancellationToken,
) -> Box<dyn Routes> {
    Box::new(watch_kind(
        scope.api::<TypedRoute<K>>(client),
        scope.watch_config(),
        ops::kube::send_time(trigger),
        shutdown,
    ))
}

/// Fails unless the API server serves `plural` in the Gateway API group at `version`. Transient errors are
/// retried for [`DISCOVERY_PATIENCE`].
async fn check_served(
    client: &Client,
    flag: &str,
    version: &str,
    plural: &str,
    channel: &'static str,
) -> Result<(), StartError> {
    let resource = format!("{plural}.{GROUP}/{version}");
    let deadline = tokio::time::Instant::now() + DISCOVERY_PATIENCE;
    let not_served = || StartError::NotServed {
        flag: flag.to_owned(),
        resource: resource.clone(),
        channel,
    };
    loop {
        match client
            .list_api_group_resources(&format!("{GROUP}/{version}"))
            .await
        {
            Ok(list) if list.resources.iter().any(|r| r.name == plural) => return Ok(()),
            Ok(_) => return Err(not_served()),
            Err(kube::Error::Api(status)) if status.code == 404 => return Err(not_served()),
            Err(error) if tokio::time::Instant::now() >= deadline => {
                return Err(StartError::Discovery {
                    flag: flag.to_owned(),
                    resource,
                    error: error.to_string(),
                });
            }
            Err(error) => {
                tracing::warn!(%error, resource, "cannot ask the API server what it serves; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
