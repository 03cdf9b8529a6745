//! Extractors whose rejections are [`ApiError`]s, so malformed input gets
//! the JSON error shape and a precise code.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::ApiError;

/// A JSON body, strictly parsed: `Content-Type: application/json` (415
/// otherwise), within the body limit (413), well-formed (400
/// `malformed_json`), no unknown fields (400 `unknown_field`), valid values
/// (400 with the field's code, e.g. `invalid_airport`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(&req) {
            return Err(ApiError::for_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        let bytes = body(req, state).await?;
        parse(&bytes).map(Json)
    }
}

/// Like [`Json`], but an empty body counts as `{}` (for commands whose body
/// is optional, such as cancellations).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonOrEmpty<T>(pub T);

impl<T, S> FromRequest<S> for JsonOrEmpty<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(&req);
        let bytes = body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonOrEmpty(T::default()));
        }
        if !json {
            return Err(ApiError::for_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        parse(&bytes).map(JsonOrEmpty)
    }
}

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| v == "application/json" || v.ends_with("+json"))
}

async fn body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::for_status(StatusCode::PAYLOAD_TOO_LARGE)
        } else {
            ApiError::bad_request("unreadable_body", rejection.body_text())
        }
    })
}

/// Parses a JSON document into `T`, naming the offending field on failure.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every body of this API is an object (serde would also take a struct
    // as a positional array).
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9') => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "the body must be a JSON object",
            ));
        }
        _ => {
            return Err(ApiError::bad_request(
                "malformed_json",
                "malformed JSON: expected an object",
            ));
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(json_error)?;
    deserializer
        .end()
        .map_err(|e| ApiError::bad_request("malformed_json", format!("malformed JSON: {e}")))?;
    Ok(value)
}

fn json_error(error: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    use serde_json::error::Category;
    let path = error.path().to_string();
    let inner = error.into_inner();
    if !matches!(inner.classify(), Category::Data) {
        return ApiError::bad_request("malformed_json", format!("malformed JSON: {inner}"));
    }
    let text = inner.to_string();
    let field = path.rsplit('.').next().unwrap_or_default();
    let code = if text.starts_with("unknown field") {
        "unknown_field"
    } else if text.starts_with("missing field") {
        "missing_field"
    } else {
        match field {
            "from" | "to" => "invalid_airport",
            "flight_number" => "invalid_flight_number",
            "currency" => "invalid_currency",
            "amount" => "invalid_amount",
            "departure" | "arrival" => "invalid_time",
            "flight_id" => "invalid_id",
            "seats" => "invalid_seats",
            "" | "." => "invalid_body",
            _ => "invalid_value",
        }
    };
    let message = if path == "." {
        text
    } else {
        format!("{path}: {text}")
    };
    ApiError::bad_request(code, message)
}

pub(crate) use crate::values::hyphenated_uuid;

/// A UUID path segment, hyphenated (400 `invalid_id` otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Id(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let invalid = |detail: &str| {
            ApiError::bad_request(
                "invalid_id",
                format!("the id in the path is not a UUID: {detail}"),
            )
        };
        let axum::extract::Path(text) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| invalid(&rejection.body_text()))?;
        hyphenated_uuid(&text)
            .map(Id)
            .ok_or_else(|| invalid(&format!("{text:?}")))
    }
}

/// Query parameters (400 `invalid_query` when they do not parse).
#[derive(Debug, Clone, Default)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))
    }
}
