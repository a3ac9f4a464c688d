//! The HTTP API: health, readiness, Prometheus `/metrics`, and the live cascades in the window.
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 while the consumer group has assigned partitions to this instance, else 503 |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /cascades?top=N` | the N largest live cascades (default 20, at most 1000) |
//! | `GET /cascades/{id}` | one cascade with its nodes and edges; an absorbed id resolves to its merger |
//! | `GET /posts/{id}/lineage` | the post and its primary ancestors up to the root |

use crate::metrics::Metrics;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use echotrace_core::detector::Detector;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    /// The live detector.
    pub detector: Arc<Mutex<Detector>>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Whether partitions are assigned.
    pub ready: Arc<AtomicBool>,
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/cascades", get(top_cascades))
        .route("/cascades/{id}", get(cascade))
        .route("/posts/{id}/lineage", get(lineage))
        .with_state(state)
}

/// Binds `listen` and serves the API until the shutdown future resolves. Returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    state: ApiState,
    shutdown: crate::shutdown::Shutdown,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        let mut shutdown = shutdown;
        let server = axum::serve(listener, router(state)).with_graceful_shutdown(async move { shutdown.recv().await });
        if let Err(error) = server.await {
            tracing::error!(%error, "HTTP server failed");
        }
    });
    Ok((address, handle))
}

async fn readyz(State(state): State<ApiState>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no partitions assigned\n").into_response()
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], state.metrics.encode()).into_response()
}

#[derive(Deserialize)]
struct TopQuery {
    top: Option<usize>,
}

async fn top_cascades(State(state): State<ApiState>, Query(query): Query<TopQuery>) -> Response {
    let top = query.top.unwrap_or(20).min(1000);
    let detector = state.detector.lock().expect("detector lock poisoned");
    Json(detector.graph().top_cascades(top)).into_response()
}

async fn cascade(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let detector = state.detector.lock().expect("detector lock poisoned");
    match detector.graph().cascade_view(&id) {
        Some(view) => Json(view).into_response(),
        None => not_found(&format!("no cascade {id} in the window")),
    }
}

async fn lineage(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let detector = state.detector.lock().expect("detector lock poisoned");
    match detector.graph().lineage(&id) {
        Some(chain) => Json(chain).into_response(),
        None => not_found(&format!("no post {id} in the window")),
    }
}

fn not_found(message: &str) -> Response {
    (StatusCode::NOT_FOUND, Json(serde_json::json!({ "error": message }))).into_response()
}
