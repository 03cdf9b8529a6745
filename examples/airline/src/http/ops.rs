//! Operations: `/health`, `/metrics`, `/openapi.json`, and the JSON answers
//! for unknown routes and methods.

use std::time::Duration;

use annals::Position;
use annals::projection::{ProjectionStore, RunnerState};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::error::ApiError;
use super::openapi::ApiDoc;
use super::{AppState, metrics};

/// The answer of `/health`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Health)]
pub(super) struct Health {
    /// `ok` when everything below is; `unavailable` otherwise (status 503).
    status: &'static str,
    /// The event store.
    store: Component,
    /// The flight read side.
    read_side: Component,
    /// Each projection runner of this process.
    projections: Vec<ProjectionHealth>,
}

/// One backing service.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Component {
    /// Whether it answered.
    ok: bool,
    /// What it said (e.g. the store's head position, the read model's size).
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    /// Why it did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// One projection runner.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ProjectionHealth {
    /// The projection.
    name: String,
    /// Running, within the lag limit, not failing.
    ok: bool,
    /// `idle`, `standby`, `running` or `stopped`.
    state: &'static str,
    /// Its checkpoint (a position token).
    #[schema(value_type = String)]
    checkpoint: Position,
    /// True when its last read found nothing more.
    caught_up: bool,
    /// Seconds between the newest applied event and now; 0 when caught up.
    lag_seconds: f64,
    /// Events in the log after its checkpoint (of any type); 0 when caught up.
    #[serde(skip_serializing_if = "Option::is_none")]
    lag_events: Option<u64>,
    /// Events applied since start.
    events_applied: u64,
    /// Events waiting in the dead letters.
    dead_letters: usize,
    /// The failure it is retrying, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    /// The runner's claim on the projection (or on its partition), while it
    /// runs: its owner id.
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    /// That claim's fencing generation.
    #[serde(skip_serializing_if = "Option::is_none")]
    generation: Option<u64>,
}

fn state_name(state: RunnerState) -> &'static str {
    match state {
        RunnerState::Idle => "idle",
        RunnerState::Standby => "standby",
        RunnerState::Running => "running",
        RunnerState::Stopped => "stopped",
    }
}

async fn projections<S: ProjectionStore + Clone>(
    state: &AppState<S>,
    head: Option<Position>,
) -> Vec<ProjectionHealth> {
    let max_lag = state.settings().max_projection_lag.as_secs_f64();
    state
        .runners()
        .iter()
        .map(|runner| {
            let status = runner.progress.borrow().clone();
            let lag_seconds = status.lag_seconds();
            let ok = matches!(status.state, RunnerState::Running | RunnerState::Standby)
                && status.last_error.is_none()
                && lag_seconds <= max_lag;
            ProjectionHealth {
                name: runner.name.clone(),
                ok,
                state: state_name(status.state),
                checkpoint: status.checkpoint,
                caught_up: status.caught_up,
                lag_seconds,
                lag_events: head.map(|h| {
                    if status.caught_up {
                        0
                    } else {
                        h.sequence().saturating_sub(status.checkpoint.sequence())
                    }
                }),
                events_applied: status.events_applied,
                dead_letters: status.dead_letters,
                last_error: status.last_error,
                owner: status.owner,
                generation: status.generation,
            }
        })
        .collect()
}

/// Health of the store, the read side and every projection runner.
#[utoipa::path(
    get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "All fine", body = Health),
        (status = 400, response = super::openapi::BadRequest),
        (status = 503, description = "Something is down, stopped or too far behind (the health \
            report), or the checks took longer than the request timeout (the `timeout` error)",
            body = super::openapi::HealthOrTimeout),
        super::openapi::AnyRoute,
    )
)]
pub(super) async fn health<S: ProjectionStore + Clone>(
    State(state): State<AppState<S>>,
) -> Response {
    // Both dependencies are asked at once, each with its own bound, so the
    // answer comes within about one bound whatever they do.
    let (head, read_side) = tokio::join!(
        bounded("the event store", state.airline().store().head()),
        bounded("the read side", state.reads().health()),
    );
    let store = match &head {
        Ok(head) => Component::up(format!("head {head}")),
        Err(error) => Component::down(error.clone()),
    };
    let read_side = match read_side {
        Ok(detail) => Component::up(detail),
        Err(error) => Component::down(error),
    };
    let projections = projections(&state, head.ok()).await;
    let ok = store.ok && read_side.ok && projections.iter().all(|p| p.ok);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if ok { "ok" } else { "unavailable" },
        store,
        read_side,
        projections,
    };
    (status, axum::Json(body)).into_response()
}

/// How long `/health` and `/metrics` wait for each dependency.
const DEPENDENCY_CHECK: Duration = Duration::from_millis(1500);

/// A dependency's answer, or why there was none within [`DEPENDENCY_CHECK`].
async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(DEPENDENCY_CHECK, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("{what} did not answer within {DEPENDENCY_CHECK:?}")),
    }
}

impl Component {
    fn up(detail: String) -> Self {
        Self {
            ok: true,
            detail: Some(detail),
            error: None,
        }
    }

    fn down(error: String) -> Self {
        Self {
            ok: false,
            detail: None,
            error: Some(error),
        }
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 400, response = super::openapi::BadRequest),
        (status = 503, response = super::openapi::Unavailable),
        super::openapi::AnyRoute,
    )
)]
pub(super) async fn metrics<S: ProjectionStore + Clone>(
    State(state): State<AppState<S>>,
) -> Response {
    let head = bounded("the event store", state.airline().store().head())
        .await
        .ok();
    if let Some(head) = head {
        ::metrics::gauge!("annals_store_head").set(head.sequence() as f64);
    }
    for projection in projections(&state, head).await {
        let name = projection.name;
        ::metrics::gauge!("annals_projection_lag_seconds", "projection" => name.clone())
            .set(projection.lag_seconds);
        ::metrics::gauge!("annals_projection_checkpoint", "projection" => name.clone())
            .set(projection.checkpoint.sequence() as f64);
        if let Some(lag) = projection.lag_events {
            ::metrics::gauge!("annals_projection_lag_events", "projection" => name.clone())
                .set(lag as f64);
        }
        ::metrics::gauge!("annals_projection_events_applied", "projection" => name.clone())
            .set(projection.events_applied as f64);
        ::metrics::gauge!("annals_projection_dead_letters", "projection" => name.clone())
            .set(projection.dead_letters as f64);
        ::metrics::gauge!("annals_projection_up", "projection" => name).set(if projection.ok {
            1.0
        } else {
            0.0
        });
    }
    let handle = metrics::prometheus();
    handle.run_upkeep();
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    responses(
        (status = 200, description = "The OpenAPI document", content_type = "application/json"),
        (status = 400, response = super::openapi::BadRequest),
        (status = 503, response = super::openapi::Unavailable),
        super::openapi::AnyRoute,
    )
)]
pub(super) async fn openapi() -> Response {
    axum::Json(ApiDoc::openapi()).into_response()
}

/// Unknown route: 404 in the JSON error shape.
pub(super) async fn no_route() -> ApiError {
    ApiError::for_status(StatusCode::NOT_FOUND)
}

/// Known route, wrong method: 405 in the JSON error shape.
pub(super) async fn no_method() -> ApiError {
    ApiError::for_status(StatusCode::METHOD_NOT_ALLOWED)
}
