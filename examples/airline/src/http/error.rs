//! The one error shape of the API: `{"error": {"code", "message"}}`.

use std::borrow::Cow;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{AppError, Kind};
use crate::search::{QueryError, ReadError, SearchError};

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// A machine-readable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code, e.g. `invalid_airport`, `not_enough_seats`, `read_side_behind`.
    #[schema(example = "not_enough_seats")]
    pub code: String,
    /// Explanation for people; may change.
    pub message: String,
}

/// An error answer: a status, a stable code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: Cow<'static, str>,
    /// For people.
    pub message: String,
}

impl ApiError {
    /// An error answer.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// 400: the request itself is wrong.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// Maps an application error; `not_found` is the code for a missing
    /// resource, which the application names only in its message.
    pub fn from_app(error: AppError, not_found: &'static str) -> Self {
        match error {
            AppError::Domain(domain) => {
                let status = match domain.kind {
                    Kind::Invalid => StatusCode::BAD_REQUEST,
                    Kind::NotFound => StatusCode::NOT_FOUND,
                    Kind::Conflict => StatusCode::CONFLICT,
                    Kind::Rule => StatusCode::UNPROCESSABLE_ENTITY,
                };
                Self::new(status, domain.code, domain.message)
            }
            AppError::Invalid(message) => Self::bad_request("invalid_request", message),
            AppError::NotFound(message) => Self::not_found(not_found, message),
            AppError::Conflict(message) => Self::new(StatusCode::CONFLICT, "conflict", message),
            AppError::Stale(message) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "read_side_behind", message)
            }
            AppError::Unavailable(message) => {
                tracing::warn!(%message, "backend unavailable");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            AppError::Internal(message) => Self::internal(message),
        }
    }

    /// Maps a read-side error.
    pub fn from_read(error: ReadError) -> Self {
        match error {
            ReadError::BadCursor(_) => Self::bad_request(
                "invalid_cursor",
                "`after` is not a cursor this search returned",
            ),
            ReadError::Behind(message) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "read_side_behind", message)
            }
            ReadError::Unavailable(message) => {
                tracing::warn!(%message, "read side unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "read_side_unavailable",
                    "the read side is unavailable; retry later",
                )
            }
        }
    }

    /// Maps a query's error: 400 for a parameter, 503 `read_side_behind`
    /// when the read side has not caught up in time, 503 `unavailable` when
    /// the store is down, and the read side's own errors as
    /// [`ApiError::from_read`] maps them.
    pub fn from_query(error: QueryError) -> Self {
        match error {
            QueryError::Invalid(error) => error.into(),
            behind @ QueryError::Behind { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "read_side_behind",
                behind.to_string(),
            ),
            QueryError::Store(error) => {
                tracing::warn!(%error, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the event store is unavailable; retry later",
                )
            }
            QueryError::Read(error) => Self::from_read(error),
        }
    }

    /// 500, logged; the message for the client says no more than that.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!(%message, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }

    /// The generic error for a bare status (one produced by a layer, not a handler).
    pub fn for_status(status: StatusCode) -> Self {
        let (code, message) = match status {
            StatusCode::BAD_REQUEST => ("bad_request", "bad request"),
            StatusCode::UNAUTHORIZED => ("unauthorized", "a bearer token is required"),
            StatusCode::FORBIDDEN => ("forbidden", "not allowed"),
            StatusCode::NOT_FOUND => ("not_found", "no such route"),
            StatusCode::METHOD_NOT_ALLOWED => (
                "method_not_allowed",
                "this route does not accept that method",
            ),
            StatusCode::REQUEST_TIMEOUT => ("timeout", "the request took too long"),
            StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported_media_type",
                "send JSON with Content-Type: application/json",
            ),
            StatusCode::URI_TOO_LONG => ("uri_too_long", "the request URI is too long"),
            StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "too many requests; slow down"),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
                ("headers_too_large", "the request headers are too large")
            }
            // Our own 503s are JSON already: a bare one is the request timeout.
            StatusCode::SERVICE_UNAVAILABLE => ("timeout", "the request took too long"),
            s if s.is_server_error() => ("internal", "internal error"),
            _ => ("error", "the request failed"),
        };
        Self::new(status, code, message)
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        Self::from_app(error, "not_found")
    }
}

impl From<SearchError> for ApiError {
    fn from(error: SearchError) -> Self {
        Self::bad_request(error.code(), error.to_string())
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        Self::from_query(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"airline\""),
            );
        }
        response
    }
}

/// Gives every error answer that is not JSON yet (axum's and tower-http's
/// rejections, 405, 413, timeouts) the JSON error shape, keeping its headers.
pub(crate) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let error = ApiError::for_status(status);
    let body = serde_json::to_vec(&error.body()).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}
