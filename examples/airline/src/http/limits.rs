//! Token-bucket rate limiting per client (tower_governor).
//!
//! A client is its bearer token when the token is known (so an agent behind
//! a shared proxy keeps its own bucket, and made-up tokens buy no new
//! buckets), else its peer address (from `ConnectInfo`), else, where there is
//! no connection info (as under `tower::ServiceExt::oneshot`), one shared
//! anonymous bucket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, header};
use axum::response::IntoResponse;
use governor::middleware::NoOpMiddleware;
use tower_governor::GovernorError;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;

use super::auth::{Tokens, bearer};
use super::error::ApiError;

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Bucket size: requests allowed back to back.
    pub burst: u32,
    /// Refill rate, requests per second.
    pub per_second: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            burst: 100,
            per_second: 50.0,
        }
    }
}

/// The rate-limit key of a request: see the module docs.
#[derive(Debug, Clone)]
pub struct ClientKey {
    tokens: Arc<Tokens>,
}

impl ClientKey {
    /// Keys requests by known token, then peer address.
    pub fn new(tokens: Arc<Tokens>) -> Self {
        Self { tokens }
    }
}

impl KeyExtractor for ClientKey {
    type Key = String;

    fn extract<T>(&self, req: &Request<T>) -> Result<Self::Key, GovernorError> {
        if let Some(token) = bearer(req.headers()).filter(|t| self.tokens.role(t).is_some()) {
            return Ok(format!("token:{token}"));
        }
        Ok(match req.extensions().get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(peer)) => format!("ip:{}", peer.ip()),
            None => "anonymous".to_owned(),
        })
    }
}

type Layer = GovernorLayer<ClientKey, NoOpMiddleware<governor::clock::QuantaInstant>, Body>;

/// The rate-limiting layer, or `None` when the limit is off (zero rate or burst).
pub(crate) fn layer(limit: RateLimit, tokens: Arc<Tokens>) -> Option<Layer> {
    let rate_ok = limit.per_second.is_finite() && limit.per_second > 0.0;
    if limit.burst == 0 || !rate_ok {
        return None;
    }
    let period = Duration::from_secs_f64(1.0 / limit.per_second).max(Duration::from_nanos(1));
    let config = GovernorConfigBuilder::default()
        .period(period)
        .burst_size(limit.burst)
        .key_extractor(ClientKey::new(tokens))
        .finish()?;
    let config = Arc::new(config);
    // Forget idle clients now and then, so the key map does not grow forever.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let weak = Arc::downgrade(&config);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(config) = weak.upgrade() else { break };
                config.limiter().retain_recent();
            }
        });
    }
    Some(GovernorLayer::new(config).error_handler(too_many))
}

fn too_many(error: GovernorError) -> Response<Body> {
    match error {
        GovernorError::TooManyRequests { wait_time, .. } => {
            let mut response = ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests; retry in {wait_time} s"),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&wait_time.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        other => ApiError::internal(format!("rate limiter: {other}")).into_response(),
    }
}
