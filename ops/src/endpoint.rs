//! The ops HTTP listener: `/metrics` for Prometheus, `/healthz` for liveness (the process serves requests)
//! and `/readyz` for readiness (the daemon can do its job now, with a one-line reason when it cannot).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Readiness shared between the daemon's components and the `/readyz` handler.
#[derive(Debug, Clone)]
pub struct Health {
    state: Arc<Mutex<Readiness>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Readiness {
    ready: bool,
    detail: String,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Starts not ready, with detail "starting".
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(Readiness {
                ready: false,
                detail: "starting".to_owned(),
            })),
        }
    }

    /// Marks the daemon ready; `detail` is shown by `/readyz`.
    pub fn set_ready(&self, detail: impl Into<String>) {
        self.set(true, detail.into());
    }

    /// Marks the daemon not ready, saying why.
    pub fn set_not_ready(&self, detail: impl Into<String>) {
        self.set(false, detail.into());
    }

    /// Whether the daemon is ready, and why (not).
    pub fn get(&self) -> (bool, String) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (state.ready, state.detail.clone())
    }

    fn set(&self, ready: bool, detail: String) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.ready != ready || state.detail != detail {
            tracing::info!(ready, detail = %detail, "readiness changed");
        }
        *state = Readiness { ready, detail };
    }
}

#[derive(Clone)]
struct AppState {
    health: Health,
    registry: Arc<Registry>,
}

/// A running ops listener.
#[derive(Debug)]
pub struct Endpoint {
    /// The address actually bound (useful when asked for port 0).
    pub local_addr: SocketAddr,
    /// Ends when the shutdown token is cancelled.
    pub task: JoinHandle<std::io::Result<()>>,
}

/// Binds `addr` and serves the ops endpoints until `shutdown` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> std::io::Result<Endpoint> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AppState { health, registry });
    tracing::info!(ops_addr = %local_addr, "ops endpoint listening");
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    });
    Ok(Endpoint { local_addr, task })
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (ready, detail) = state.health.get();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, format!("{detail}\n"))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("encoding metrics failed: {e}\n"),
        ),
    }
}
