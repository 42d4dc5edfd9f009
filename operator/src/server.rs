//! The operator's own HTTP server on `--metrics-address`:
//!
//! - `/metrics`: the operator's metrics ([`Metrics`]) in the OpenMetrics text format;
//! - `/healthz`, the liveness probe: 200 `ok` while the controller's loop beats (see
//!   [`crate::liveness`]), 503 once it has not for [`STALE_AFTER`](crate::liveness::STALE_AFTER);
//! - `/readyz`, the readiness probe: 200 `ready` once every cache has synced (every replica,
//!   leader or not), 503 before.
//!
//! [`serve`] does IO (listens on the address); the handlers only read shared state.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::Context as _;
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::{liveness::Heartbeat, metrics::Metrics};

/// Content type of `/metrics`.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the handlers read.
#[derive(Clone, Debug)]
pub struct ServerState {
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// Set once every cache has synced.
    pub ready: Arc<AtomicBool>,
    /// The controller loop's heartbeat.
    pub heartbeat: Heartbeat,
}

/// The routes, without a listener.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves [`router`] on `address` until the listener fails.
pub async fn serve(address: SocketAddr, state: ServerState) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("failed to listen on {address}"))?;
    axum::serve(listener, router(state))
        .await
        .context("metrics server failed")
}

async fn metrics(State(state): State<ServerState>) -> Response {
    ([(CONTENT_TYPE, OPENMETRICS)], state.metrics.encode()).into_response()
}

async fn healthz(State(state): State<ServerState>) -> Response {
    if state.heartbeat.alive() {
        (StatusCode::OK, "ok").into_response()
    } else {
        let stalled = state.heartbeat.age().as_secs();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("controller loop stalled: no heartbeat for {stalled}s"),
        )
            .into_response()
    }
}

async fn readyz(State(state): State<ServerState>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced").into_response()
    }
}

/// The error that ends the process once the `/metrics` server task has ended (it never ends
/// on its own), logged.
pub fn stopped(result: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    let error = match result {
        Ok(Ok(())) => anyhow::anyhow!("metrics server stopped"),
        Ok(Err(error)) => error,
        Err(error) => anyhow::Error::new(error),
    };
    tracing::error!(error = %error, "metrics server failed");
    error
}

#[cfg(test)]
mod tests;
