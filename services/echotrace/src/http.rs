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
//! | `/`, `/view/…`, `/alerts…`, `/reviews` | the cascade explorer ([`crate::explorer`]) |
//!
//! Beyond loopback the API needs a token (`http.token`), which every route but `/healthz`,
//! `/readyz`, the explorer's page and assets, and `POST /reviews` (which needs a reviewer's
//! token) then requires (`authorization: Bearer <token>`). The probes say only whether the process
//! is up and ready, for probes that carry no credentials; the page holds no data. Every connection must send its
//! request head within [`HEADER_READ_TIMEOUT`] and keep it under [`MAX_REQUEST_HEAD_BYTES`]; at
//! most [`MAX_CONNECTIONS`] are open at once and [`MAX_CONCURRENT_REQUESTS`] answered at once,
//! each within [`REQUEST_TIMEOUT`]. The accept loop is this module's own because axum's `serve`
//! has neither a header-read timeout nor a connection cap.
//!
//! The `prepare` stage ([`crate::stages::prepare`]) holds no cascades: it serves the probes and
//! `/metrics` only ([`serve_health`]).

use crate::access::{self, AccessError};
use crate::explorer::{self, ExplorerState};
use crate::metrics::Metrics;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{FromRef, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use echotrace_core::detector::Detector;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceBuilder;

/// How long a client may take to send a request's head before its connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head (request line and headers) read; a larger one is answered 431.
pub const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;
/// How long a request may take to be answered before it is answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests answered at once; more wait for a turn.
pub const MAX_CONCURRENT_REQUESTS: usize = 64;
/// Connections open at once; a new one past it is closed at once.
pub const MAX_CONNECTIONS: usize = 256;

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    /// The live detector.
    pub detector: Arc<Mutex<Detector>>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Whether partitions are assigned.
    pub ready: Arc<AtomicBool>,
    /// The explorer's alert board and reviews.
    pub explorer: Arc<ExplorerState>,
}

/// What the probes and `/metrics` read, in every stage.
#[derive(Clone)]
pub struct Health {
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Whether the consumer is in its group (readiness).
    pub ready: Arc<AtomicBool>,
}

impl FromRef<ApiState> for Health {
    fn from_ref(state: &ApiState) -> Health {
        Health { metrics: state.metrics.clone(), ready: state.ready.clone() }
    }
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Beyond loopback without a token.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The address could not be bound.
    #[error("cannot listen on {listen}: {source}")]
    Bind {
        /// The address.
        listen: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The API's routes; every one but `/healthz` and `/readyz` requires `token`, when there is one.
pub fn router(state: ApiState, token: Option<String>) -> Router {
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .route("/cascades", get(top_cascades))
        .route("/cascades/{id}", get(cascade))
        .route("/posts/{id}/lineage", get(lineage))
        .merge(explorer::data_routes())
        .route_layer(middleware::from_fn_with_state(token.map(Arc::<str>::from), require_token));
    let routes = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(explorer::page_routes())
        .merge(guarded)
        .with_state(state);
    bounded(routes)
}

/// The routes of a stage without cascades: `/healthz`, `/readyz`, and `/metrics`, which requires
/// `token` when there is one.
pub fn health_router(health: Health, token: Option<String>) -> Router {
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(token.map(Arc::<str>::from), require_token));
    let routes = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(guarded)
        .with_state(health);
    bounded(routes)
}

/// `routes` with the request timeout and the bound on requests answered at once.
fn bounded(routes: Router) -> Router {
    routes.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                (StatusCode::REQUEST_TIMEOUT, "the request took too long\n")
            }))
            .timeout(REQUEST_TIMEOUT)
            .concurrency_limit(MAX_CONCURRENT_REQUESTS),
    )
}

/// Lets a request through when it presents the token (or none is configured); answers 401
/// otherwise.
async fn require_token(State(token): State<Option<Arc<str>>>, request: Request, next: Next) -> Response {
    let Some(token) = token else { return next.run(request).await };
    let presented = request.headers().get(header::AUTHORIZATION).map(|value| value.to_str().unwrap_or_default());
    if access::presents(presented, &token) {
        return next.run(request).await;
    }
    let message = match presented {
        None => "this API requires a token: send the header `authorization: Bearer <token>`\n",
        Some(_) => "invalid token\n",
    };
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], message).into_response()
}

/// Binds `listen` and serves the API until the shutdown future resolves, with `token` required
/// when given (and when `listen` is not loopback). Returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    state: ApiState,
    token: Option<String>,
    shutdown: crate::shutdown::Shutdown,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ServeError> {
    access::require_token_beyond_loopback(listen, token.as_deref(), "http")?;
    listen_and_serve(listen, router(state, token), shutdown).await
}

/// [`serve`] for a stage without cascades: the probes and `/metrics` ([`health_router`]).
pub async fn serve_health(
    listen: SocketAddr,
    health: Health,
    token: Option<String>,
    shutdown: crate::shutdown::Shutdown,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ServeError> {
    access::require_token_beyond_loopback(listen, token.as_deref(), "http")?;
    listen_and_serve(listen, health_router(health, token), shutdown).await
}

async fn listen_and_serve(
    listen: SocketAddr,
    app: Router,
    shutdown: crate::shutdown::Shutdown,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ServeError> {
    let bind_error = |source| ServeError::Bind { listen, source };
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(bind_error)?;
    let address = listener.local_addr().map_err(bind_error)?;
    let handle = tokio::spawn(accept(listener, app, shutdown));
    Ok((address, handle))
}

/// Accepts connections until shutdown, each served on its own task; then waits for the open ones
/// to finish their requests.
async fn accept(listener: tokio::net::TcpListener, app: Router, mut shutdown: crate::shutdown::Shutdown) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut open = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.recv() => break,
        };
        while open.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = MAX_CONNECTIONS, "too many open connections: closing a new one");
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let mut shutdown = shutdown.clone();
        open.spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_REQUEST_HEAD_BYTES);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "HTTP connection ended with an error");
                    }
                }
                _ = shutdown.recv() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    while open.join_next().await.is_some() {}
}

async fn readyz(State(health): State<Health>) -> Response {
    if health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no partitions assigned\n").into_response()
    }
}

async fn metrics(State(health): State<Health>) -> Response {
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], health.metrics.encode()).into_response()
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
