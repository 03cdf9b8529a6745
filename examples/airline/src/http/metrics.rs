//! Prometheus metrics: commands by name and outcome with their latency,
//! HTTP requests by route and status, projection lag and checkpoints.
//!
//! Names:
//! - `annals_commands_total{command, outcome}` and
//!   `annals_command_duration_seconds{command, outcome}` (histogram: load,
//!   decide, append)
//! - `http_requests_total{method, route, status}` and
//!   `http_request_duration_seconds{method, route}` (histogram)
//! - `annals_projection_lag_seconds{projection}`,
//!   `annals_projection_lag_events{projection}`,
//!   `annals_projection_checkpoint{projection}` (the checkpoint's global
//!   sequence number), `annals_projection_events_applied{projection}`,
//!   `annals_projection_dead_letters{projection}`, `annals_projection_up{projection}`
//! - `annals_store_head{}`: the log's newest global sequence number.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::{AppError, Kind};

/// Buckets of the latency histograms, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's Prometheus recorder, installed globally on first use.
///
/// When another global recorder was installed first, the handle renders an
/// empty recorder of its own (and the metrics go to the other one).
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = || {
                PrometheusBuilder::new()
                    .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), LATENCY_BUCKETS)
                    .unwrap_or_else(|_| PrometheusBuilder::new())
            };
            builder().install_recorder().unwrap_or_else(|error| {
                tracing::warn!(%error, "another metrics recorder is installed; /metrics stays empty");
                builder().build_recorder().handle()
            })
        })
        .clone()
}

/// The outcome label of a command's result.
pub(crate) fn outcome<T>(result: &Result<T, AppError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(AppError::Domain(domain)) => match domain.kind {
            Kind::Invalid => "invalid",
            Kind::NotFound => "not_found",
            Kind::Conflict => "conflict",
            Kind::Rule => "rejected",
        },
        Err(AppError::Invalid(_)) => "invalid",
        Err(AppError::NotFound(_)) => "not_found",
        Err(AppError::Conflict(_)) => "conflict",
        Err(AppError::Stale(_) | AppError::Unavailable(_)) => "unavailable",
        Err(AppError::Internal(_)) => "error",
    }
}

/// Counts one command and records how long it took.
pub(crate) fn record_command(command: &'static str, outcome: &'static str, elapsed: Duration) {
    metrics::counter!("annals_commands_total", "command" => command, "outcome" => outcome)
        .increment(1);
    metrics::histogram!(
        "annals_command_duration_seconds",
        "command" => command,
        "outcome" => outcome
    )
    .record(elapsed.as_secs_f64());
}

/// Counts every request by method, matched route and status.
pub(crate) async fn track_http(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(
        "http_requests_total",
        "method" => method.clone(),
        "route" => route.clone(),
        "status" => status
    )
    .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
