//! The cascade explorer: a web page served by the API's own server that shows cascades and alerts
//! as they happen, and records what analysts decide about them.
//!
//! | route | answer |
//! |---|---|
//! | `GET /`, `GET /view/cascades/{id}`, `GET /view/alerts/{id}` | the page (one HTML file; the script reads the path) |
//! | `GET /assets/explorer.js`, `GET /assets/explorer.css` | its script and style |
//! | `GET /alerts` | the alerts on the [`board`], the most recently changed first |
//! | `GET /alerts/{id}` | one alert: lifecycle, the rule's conditions, features, SQL, reviews |
//! | `GET /reviews?cascade_id=…&alert_id=…` | recorded decisions, oldest first |
//! | `POST /reviews` | records a decision ([`reviews`]); needs a reviewer's token |
//!
//! The page and its assets hold no data and need no token; everything they fetch is an API route,
//! which needs the API's token when one is configured (the page asks for it and keeps it for the
//! tab). The assets are compiled into the binary: nothing is fetched from elsewhere at run time,
//! and the page has no third-party dependency. Every text from a post reaches the page through
//! `textContent`, never as markup, and a content security policy allows only the page's own
//! script and style.

pub mod board;
pub mod reviews;

use crate::http::ApiState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use board::AlertBoard;
use reviews::{ReviewError, ReviewRequest, ReviewStore, Reviewers};
use serde::Deserialize;
use std::sync::{Arc, Mutex};

const PAGE: &str = include_str!("../../assets/explorer/index.html");
const SCRIPT: &str = include_str!("../../assets/explorer/explorer.js");
const STYLE: &str = include_str!("../../assets/explorer/explorer.css");

/// Only the page's own script, style and API: post texts are untrusted.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What the explorer's routes read and write.
pub struct ExplorerState {
    /// The alerts raised, shared with the pipeline.
    pub alerts: Arc<Mutex<AlertBoard>>,
    /// The `reviews/` dataset.
    pub reviews: ReviewStore,
    /// Who may record decisions.
    pub reviewers: Reviewers,
}

impl ExplorerState {
    /// The explorer of `config`: an empty board for its rules, the reviews under `output.dir`.
    pub fn from_config(config: &crate::config::Config) -> anyhow::Result<ExplorerState> {
        let conditions = config.alerting.rules()?.rules.into_iter().map(|rule| (rule.name, rule.when)).collect();
        Ok(ExplorerState {
            alerts: Arc::new(Mutex::new(AlertBoard::new(conditions))),
            reviews: ReviewStore::open(&config.output.dir)?,
            reviewers: Reviewers::new(&config.http.reviewers),
        })
    }
}

/// The page and its assets: no token needed (they hold no data).
pub fn page_routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(page))
        .route("/view/cascades/{id}", get(page))
        .route("/view/alerts/{id}", get(page))
        .route("/assets/explorer.js", get(|| asset("text/javascript; charset=utf-8", SCRIPT)))
        .route("/assets/explorer.css", get(|| asset("text/css; charset=utf-8", STYLE)))
        .route("/reviews", axum::routing::post(record_review))
}

/// The explorer's data routes, behind the API's token like every data route.
pub fn data_routes() -> Router<ApiState> {
    Router::new().route("/alerts", get(alerts)).route("/alerts/{id}", get(alert)).route("/reviews", get(list_reviews))
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")], body).into_response()
}

async fn alerts(State(state): State<ApiState>) -> Response {
    Json(state.explorer.alerts.lock().expect("alert board lock poisoned").list()).into_response()
}

async fn alert(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let detail = state.explorer.alerts.lock().expect("alert board lock poisoned").detail(&id);
    match detail {
        Some(detail) => {
            let reviews = state.explorer.reviews.about(None, Some(&id));
            let mut answer = serde_json::to_value(detail).expect("an alert serializes");
            answer["reviews"] = serde_json::to_value(reviews).expect("reviews serialize");
            Json(answer).into_response()
        }
        None => {
            error(StatusCode::NOT_FOUND, &format!("no alert {id} on this instance's board (alerts/ has every alert)"))
        }
    }
}

#[derive(Deserialize)]
struct ReviewsQuery {
    cascade_id: Option<String>,
    alert_id: Option<String>,
}

async fn list_reviews(State(state): State<ApiState>, Query(query): Query<ReviewsQuery>) -> Response {
    Json(state.explorer.reviews.about(query.cascade_id.as_deref(), query.alert_id.as_deref())).into_response()
}

/// Records a decision under the name of the reviewer whose token the request presents.
async fn record_review(State(state): State<ApiState>, headers: HeaderMap, body: String) -> Response {
    let explorer = &state.explorer;
    if !explorer.reviewers.any() {
        return error(
            StatusCode::FORBIDDEN,
            "reviews are off on this instance: no reviewer is configured (http.reviewers, name = token)",
        );
    }
    let presented = headers.get(header::AUTHORIZATION).map(|value| value.to_str().unwrap_or_default());
    let Some(reviewer) = explorer.reviewers.who(presented) else {
        let message = match presented {
            None => "recording a review needs a reviewer's token: send `authorization: Bearer <token>`",
            Some(_) => "this token is not a reviewer's",
        };
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(serde_json::json!({ "error": message })),
        )
            .into_response();
    };
    let request: ReviewRequest = match serde_json::from_str(&body) {
        Ok(request) => request,
        Err(problem) => return error(StatusCode::BAD_REQUEST, &format!("not a review: {problem}")),
    };
    match explorer.reviews.record(reviewer, request) {
        Ok(review) => {
            tracing::info!(reviewer = %review.reviewer, decision = review.decision.as_str(), cascade = %review.cascade_id, alert = ?review.alert_id, "review recorded");
            (StatusCode::CREATED, Json(review)).into_response()
        }
        Err(ReviewError::Invalid(message)) => error(StatusCode::BAD_REQUEST, &message),
        Err(ReviewError::Sink(problem)) => {
            tracing::error!(%problem, "cannot record a review");
            error(StatusCode::INTERNAL_SERVER_ERROR, &format!("the review was not recorded: {problem}"))
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}
