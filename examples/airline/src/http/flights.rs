//! Flight commands (admin) and flight queries (open).

use std::future::Future;
use std::time::Instant;

use annals::process::derive_id;
use annals::projection::{ProjectionStore, WaitError, wait_for_checkpoint};
use annals::{CommandContext, Position};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;
use uuid::Uuid;

use super::auth::{Authorized, FlightCommands};
use super::error::ApiError;
use super::extract::{Id, Json, JsonOrEmpty, Query, hyphenated_uuid};
use super::{AppState, POSITION_HEADER, metrics};
use crate::app::Done;
use crate::error::AppError;
use crate::scheduling::{CancelFlight, ChangePrice, MAX_SEATS, RescheduleFlight, ScheduleFlight};
use crate::search::{DEFAULT_LIMIT, FlightSearch, FlightView, MAX_LIMIT, SortOrder, flight_events};
use crate::values::AirportCode;

/// Runs a command, counting it and timing it.
pub(super) async fn run<T>(
    command: &'static str,
    work: impl Future<Output = Result<T, AppError>>,
) -> Result<T, AppError> {
    let started = Instant::now();
    let result = work.await;
    metrics::record_command(command, metrics::outcome(&result), started.elapsed());
    result
}

/// The command context of a request: who asked (the role, never the
/// token), a correlation id (`X-Request-Id` when it is a UUID), and a
/// command id from `Idempotency-Key` (a UUID) so that a retried request runs
/// once.
pub(super) fn command_context(
    role: super::Role,
    headers: &HeaderMap,
) -> Result<CommandContext, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let correlation = header("x-request-id")
        .and_then(|v| v.trim().parse::<Uuid>().ok())
        .unwrap_or_else(Uuid::now_v7);
    let command_id = match header("idempotency-key") {
        None => None,
        Some(key) => Some(hyphenated_uuid(key).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be a UUID (hyphenated)",
            )
        })?),
    };
    let mut context = CommandContext {
        command_id,
        ..CommandContext::default()
    };
    context.metadata.correlation_id = Some(correlation);
    context.metadata.actor = Some(format!("http:{role}"));
    Ok(context)
}

/// A command's answer: the body, with the position also in `X-Annals-Position`.
pub(super) fn accepted(status: StatusCode, position: Position, body: impl Serialize) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&position.to_string()) {
        response.headers_mut().insert(POSITION_HEADER, value);
    }
    response
}

/// Checks a seat count against the bounds the OpenAPI document states.
///
/// The aggregates check it too, but a retry with a known `Idempotency-Key`
/// is answered from the log without running them: checked here, a body the
/// document rejects is refused whatever the key.
pub(super) fn check_seats(seats: u32, max: u32) -> Result<(), ApiError> {
    if (1..=max).contains(&seats) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_seats",
            format!("{seats} seats is not between 1 and {max}"),
        ))
    }
}

fn flight_error(error: AppError) -> ApiError {
    ApiError::from_app(error, "flight_not_found")
}

/// Schedule a flight.
#[utoipa::path(
    post, path = "/flights", tag = "flights",
    request_body = super::openapi::ScheduleFlightBody,
    params(super::openapi::CommandHeaders),
    responses(
        (status = 201, description = "Scheduled", body = super::openapi::DoneBody,
            headers(("X-Annals-Position" = String, description = "Read-your-writes token"))),
        (status = 400, response = super::openapi::BadRequest),
        super::openapi::Command, super::openapi::Limited, super::openapi::AnyRoute,
    ),
    security(("bearer" = []))
)]
pub(super) async fn schedule<S: ProjectionStore + Clone>(
    State(state): State<AppState<S>>,
    Authorized(role, ..): Authorized<FlightCommands>,
    headers: HeaderMap,
    Json(mut command): Json<ScheduleFlight>,
) -> Result<Response, ApiError> {
    let context = command_context(role, &headers)?;
    check_seats(command.seats, MAX_SEATS)?;
    if let Some(key) = context.command_id {
        command.flight_id = derive_id(key, "flight");
    }
    let done = run(
        "schedule_flight",
        state.airline().schedule_flight(command, context),
    )
    .await
    .map_err(flight_error)?;
    Ok(accepted(StatusCode::CREATED, done.position, done))
}

/// Move a flight.
#[utoipa::path(
    post, path = "/flights/{id}/reschedule", tag = "flights",
    request_body = super::openapi::RescheduleBody,
    params(("id" = Uuid, Path, description = "Flight id"), super::openapi::CommandHeaders),
    responses(
        (status = 200, description = "Rescheduled", body = super::openapi::DoneBody,
            headers(("X-Annals-Position" = String, description = "Read-your-writes token"))),
        (status = 400, response = super::openapi::BadRequest),
        (status = 404, description = "flight_not_found", body = super::ErrorBody),
        (status = 422, description = "Rule broken (e.g. flight_cancelled)", body = super::ErrorBody),
        super::openapi::Command, super::openapi::Limited, super::openapi::AnyRoute,
    ),
    security(("bearer" = []))
)]
pub(super) async fn reschedule<S: ProjectionStore + Clone>(
    State(state): State<AppState<S>>,
    Authorized(role, ..): Authorized<FlightCommands>,
    Id(id): Id,
    headers: HeaderMap,
    Json(command): Json<RescheduleFlight>,
) -> Result<Response, ApiError> {
    let context = command_context(role, &headers)?;
    let done = run(
        "reschedule_flight",
        state.airline().reschedule_flight(id, command, context),
    )
    .await
    .map_err(flight_error)?;
    Ok(accepted(StatusCode::OK, done.position, done))
}

/// Change a flight's price.
#[utoipa::path(
    post, path = "/flights/{id}/price", tag = "flights",
    request_body = super::openapi::PriceBody,
    params(("id" = Uuid, Path, description = "Flight id"), super::openapi::CommandHeaders),
    responses(
        (status = 200, description = "Price changed", body = super::openapi::DoneBody,
            headers(("X-Annals-Position" = String, description = "Read-your-writes token"))),
        (status = 400, response = super::openapi::BadRequest),
        (status = 404, description = "flight_not_found", body = super::ErrorBody),
        (status = 422, description = "Rule broken (flight_cancelled, currency_mismatch)", body = super::ErrorBody),
        super::openapi::Command, super::openapi::Limited, super::openapi::AnyRoute,
    ),
    security(("bearer" = []))
)]
pub(super) async fn change_price<S: ProjectionStore + Clone>(
    State(state): State<AppState<S>>,
    Authorized(role, ..): Authorized<FlightCommands>,
    Id(id): Id,
    headers: HeaderMap,
    Json(command): Json<ChangePrice>,
) -> Result<Response, ApiError> {
    let context = command_context(role, &headers)?;
    let done = run(
        "change_price",
        state.airline().change_price(id, command, context),
    )
    .await
    .map_err(flight_error)?;
    Ok(accepted(StatusCode::OK, done.position, done))
}

/// Cancel a flight.
#[utoipa::path(
    post, path = "/flights/{id}/cancel", tag = "flights",
    request_body(content = Option<super::openapi::CancelFlightBody>, description = "`{}` or `{\"reason\"}`; may be empty"),
    params(("id" = Uuid, Path, description = "Flight id"), super::openapi::CommandHeaders),
    responses(
        (status = 200, description = "Cancelled", body = super::openapi::DoneBody,
            headers(("X-Annals-Position" = String, description = "Read-your-writes token"))),
        (status = 400, response = super::openapi::BadRequest),
        (status = 404, description = "flight_not_found", body = super::ErrorBody),
        super::openapi::Command, super::openapi::Limited, super::openapi::AnyRoute,
    ),
    security(("bearer" = []))
)]
pub(super) async fn cancel<S: ProjectionStore + Clone>(
    State(state): State<AppState<S>>,
    Authorized(role, ..): Authorized<FlightCommands>,
    Id(id): Id,
    headers: HeaderMap,
    JsonOrEmpty(command): JsonOrEmpty<CancelFlight>,
) -> Result<Response, ApiError> {
    let context = command_context(role, &headers)?;
    let done: Done = run(
        "cancel_flight",
        state.airline().cancel_flight(id, command, context),
    )
    .await
    .map_err(flight_error)?;
    Ok(accepted(StatusCode::OK, done.position, done))
}

/// Read-your-writes for a single flight.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ReadParams {
    /// A position token from a command: answer only once the read side has
    /// seen it (waits up to about 5 s, then 503 `read_side_behind`).
    #[param(value_type = String, required = false, pattern = r"^[0-9]+\.[0-9]+$", example = "12.40")]
    min_position: Option<String>,
}

/// The search parameters of `GET /flights/search`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct SearchParams {
    /// Origin: an IATA airport code from the reference list, e.g. `JFK` (any case).
    #[param(value_type = String, required = false, example = "JFK")]
    from: Option<String>,
    /// Destination airport code.
    #[param(value_type = String, required = false, example = "LHR")]
    to: Option<String>,
    /// Departure day (UTC), `YYYY-MM-DD`; the first day of a range with `date_to`.
    #[param(value_type = String, format = Date, required = false)]
    date: Option<String>,
    /// Last departure day of a range (UTC, inclusive), `YYYY-MM-DD`; not before `date`.
    #[param(value_type = String, format = Date, required = false)]
    date_to: Option<String>,
    /// Highest price of a seat, in minor units.
    #[param(value_type = i64, minimum = 0, required = false)]
    max_price: Option<String>,
    /// Fewest seats still available.
    #[param(value_type = i64, minimum = 0, maximum = 4294967295_i64, required = false)]
    min_seats: Option<String>,
    /// Free text over cities, airport names and codes, and flight number.
    #[param(value_type = String, max_length = 200, required = false)]
    q: Option<String>,
    /// Sort order (default `departure`).
    #[param(value_type = super::openapi::SortBody, required = false)]
    sort: Option<String>,
    /// Page size (default 20).
    #[param(value_type = i64, minimum = 1, maximum = 100, required = false)]
    limit: Option<String>,
    /// The `next` cursor of the previous page.
    #[param(value_type = String, required = false)]
    after: Option<String>,
    /// A position token: answer only once the read side has seen it.
    #[param(value_type = String, required = false, pattern = r"^[0-9]+\.[0-9]+$", example = "12.40")]
    min_position: Option<String>,
}

/// One page of search results.
#[derive(Debug, Serialize)]
pub(super) struct SearchPage {
    flights: Vec<FlightView>,
    next: Option<String>,
    position: Position,
}

/// A free-text parameter: blank counts as absent.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Digits only (Rust's integer parsing also takes a leading `+`).
fn whole_number(value: &str) -> Option<u64> {
    value
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| value.parse().ok())
        .flatten()
}

/// A parameter the document types (number, date, enum, pattern): taken as
/// sent, so a blank or padded value is refused as the document says, not
/// read as absent.
fn typed(value: &Option<String>) -> Option<&str> {
    value.as_deref()
}

fn parse_airport(name: &str, value: &Option<String>) -> Result<Option<AirportCode>, ApiError> {
    given(value)
        .map(|v| {
            v.parse::<AirportCode>()
                .map_err(|e| ApiError::bad_request("invalid_airport", format!("{name}: {e}")))
        })
        .transpose()
}

fn parse_date(name: &str, value: &Option<String>) -> Result<Option<NaiveDate>, ApiError> {
    typed(value)
        .map(|v| {
            // chrono also takes unpadded fields (`2026-1-5`); RFC 3339 dates do not.
            let padded = v.len() == 10;
            let date = NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .ok()
                .filter(|_| padded);
            date.ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_date",
                    format!("{name}: {v:?} is not a date (YYYY-MM-DD)"),
                )
            })
        })
        .transpose()
}

fn parse_position(value: &Option<String>) -> Result<Option<Position>, ApiError> {
    typed(value)
        .map(|v| {
            // As the document's pattern says: digits, a dot, digits.
            let plain = v.bytes().all(|b| b.is_ascii_digit() || b == b'.');
            v.parse::<Position>().ok().filter(|_| plain).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_position",
                    format!("{v:?} is not a position token (e.g. 12.40)"),
                )
            })
        })
        .transpose()
}

impl SearchParams {
    fn validate(&self) -> Result<FlightSearch, ApiError> {
        let date = parse_date("date", &self.date)?;
        let date_to = parse_date("date_to", &self.date_to)?;
        if let (Some(first), Some(last)) = (date, date_to)
            && last < first
        {
            return Err(ApiError::bad_request(
                "invalid_date_range",
                "date_to is before date",
            ));
        }
        let max_price = typed(&self.max_price)
            .map(|v| {
                whole_number(v)
                    .and_then(|p| i64::try_from(p).ok())
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_price",
                            format!("max_price: {v:?} is not a non-negative amount in minor units"),
                        )
                    })
            })
            .transpose()?;
        let min_seats = typed(&self.min_seats)
            .map(|v| {
                whole_number(v)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_seats",
                            format!("min_seats: {v:?} is not a non-negative whole number"),
                        )
                    })
            })
            .transpose()?;
        let q = given(&self.q).map(str::to_owned);
        if q.as_ref().is_some_and(|q| q.chars().count() > 200) {
            return Err(ApiError::bad_request(
                "invalid_text",
                "q: at most 200 characters",
            ));
        }
        let sort = match typed(&self.sort) {
            None => SortOrder::default(),
            Some("price") => SortOrder::PriceAsc,
            Some("-price") => SortOrder::PriceDesc,
            Some("departure") => SortOrder::DepartureAsc,
            Some("-departure") => SortOrder::DepartureDesc,
            Some(other) => {
                return Err(ApiError::bad_request(
                    "invalid_sort",
                    format!("sort: {other:?} is not one of price, -price, departure, -departure"),
                ));
            }
        };
        let limit = typed(&self.limit)
            .map(|v| {
                whole_number(v)
                    .and_then(|l| u32::try_from(l).ok())
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_limit",
                            format!("limit: {v:?} is not a number from 1 to {MAX_LIMIT}"),
                        )
                    })
            })
            .transpose()?
            .unwrap_or(DEFAULT_LIMIT);
        let after = given(&self.after).map(str::to_owned);
        if after.as_ref().is_some_and(|a| a.len() > 1024) {
            return Err(ApiError::bad_request(
                "invalid_cursor",
                "after: not a cursor this search returned",
            ));
        }
        Ok(FlightSearch {
            from: parse_airport("from", &self.from)?,
            to: parse_airport("to", &self.to)?,
            date,
            date_to,
            max_price,
            min_seats,
            q,
            sort,
            limit,
            after,
        })
    }
}

/// Waits, bounded, until the flight read side has seen `min_position`; the
/// answer is a position the read side has certainly seen.
async fn read_barrier<S: ProjectionStore + Clone>(
    state: &AppState<S>,
    min_position: Option<Position>,
) -> Result<Position, ApiError> {
    let store = state.airline().store();
    let projection = state.reads().projection_name();
    let unavailable = |error: annals::StoreError| {
        tracing::warn!(%error, "store unavailable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the event store is unavailable; retry later",
        )
    };
    let Some(wanted) = min_position else {
        return store
            .load_checkpoint(&projection)
            .await
            .map(Option::unwrap_or_default)
            .map_err(unavailable);
    };
    let wait = state.settings().read_wait;
    match wait_for_checkpoint(store, &projection, &flight_events(), wanted, wait).await {
        Ok(checkpoint) => Ok(checkpoint.max(wanted)),
        Err(WaitError::Timeout {
            checkpoint, waited, ..
        }) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "read_side_behind",
            format!(
                "the flight read side is at {checkpoint}, not yet at {wanted} after {:.1} s; retry",
                waited.as_secs_f64()
            ),
        )),
        Err(WaitError::Store(error)) => Err(unavailable(error)),
    }
}

/// Search scheduled flights.
#[utoipa::path(
    get, path = "/flights/search", tag = "flights",
    params(SearchParams),
    responses(
        (status = 200, description = "One page of scheduled flights", body = super::openapi::SearchPageBody),
        (status = 400, description = "Invalid parameter (invalid_query, invalid_airport, invalid_date, invalid_date_range, invalid_price, invalid_seats, invalid_text, invalid_limit, invalid_sort, invalid_cursor, invalid_position)", body = super::ErrorBody),
        (status = 503, response = super::openapi::Unavailable),
        super::openapi::Limited, super::openapi::AnyRoute,
    )
)]
pub(super) async fn search<S: ProjectionStore + Clone>(
    State(state): State<AppState<S>>,
    Query(params): Query<SearchParams>,
) -> Result<Response, ApiError> {
    let search = params.validate()?;
    let min_position = parse_position(&params.min_position)?;
    let position = read_barrier(&state, min_position).await?;
    let page = state
        .reads()
        .search(&search)
        .await
        .map_err(ApiError::from_read)?;
    Ok(axum::Json(SearchPage {
        flights: page.flights,
        next: page.next,
        position,
    })
    .into_response())
}

/// One flight from the read model, cancelled ones included.
#[utoipa::path(
    get, path = "/flights/{id}", tag = "flights",
    params(("id" = Uuid, Path, description = "Flight id"), ReadParams),
    responses(
        (status = 200, description = "The flight", body = super::openapi::FlightBody),
        (status = 400, description = "Invalid id (invalid_id), position token (invalid_position) or query (invalid_query)", body = super::ErrorBody),
        (status = 404, description = "flight_not_found (yet: pass min_position to read your writes)", body = super::ErrorBody),
        (status = 503, response = super::openapi::Unavailable),
        super::openapi::Limited, super::openapi::AnyRoute,
    )
)]
pub(super) async fn flight<S: ProjectionStore + Clone>(
    State(state): State<AppState<S>>,
    Id(id): Id,
    Query(params): Query<ReadParams>,
) -> Result<Response, ApiError> {
    let min_position = parse_position(&params.min_position)?;
    read_barrier(&state, min_position).await?;
    match state
        .reads()
        .flight(id)
        .await
        .map_err(ApiError::from_read)?
    {
        Some(view) => Ok(axum::Json(view).into_response()),
        None => Err(ApiError::not_found(
            "flight_not_found",
            format!("flight {id} does not exist"),
        )),
    }
}
