//! Between the proto's messages and the application's types: a request is
//! read into the shared [`SearchInput`] (whose validation is the REST
//! API's), a [`FlightView`] written as the proto's.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

use super::proto;
use crate::search::{self, FlightView, FlightViewStatus, Raw, SearchInput};

/// A proto3 string left empty is a parameter not given.
fn given(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}

/// The request as the shared validation takes it, with its sort's name
/// from [`sort_name`].
pub(super) fn search_input<'a>(
    request: &'a proto::FlightSearchRequest,
    sort: Option<&'a str>,
) -> SearchInput<'a> {
    SearchInput {
        from: given(&request.from),
        to: given(&request.to),
        date: given(&request.date),
        date_to: given(&request.date_to),
        max_price: request.max_price.map(Raw::Number),
        min_seats: request.min_seats.map(|n| Raw::Number(n.into())),
        q: given(&request.q),
        sort,
        limit: request.limit.map(|n| Raw::Number(n.into())),
        after: given(&request.after),
    }
}

/// The sort's REST name, which the validation reads; a value the proto
/// does not define is passed on by its number, which it refuses
/// (`invalid_sort`).
pub(super) fn sort_name(sort: i32) -> Option<Cow<'static, str>> {
    use proto::SortOrder as Sort;
    let name = match Sort::try_from(sort) {
        Ok(Sort::Unspecified) => return None,
        Ok(Sort::Price) => "price",
        Ok(Sort::PriceDesc) => "-price",
        Ok(Sort::Departure) => "departure",
        Ok(Sort::DepartureDesc) => "-departure",
        Err(_) => return Some(Cow::Owned(format!("SortOrder {sort}"))),
    };
    Some(Cow::Borrowed(name))
}

/// A `min_position` field: empty is none.
pub(super) fn min_position(value: &str) -> Result<Option<annals::Position>, search::SearchError> {
    given(value).map(search::position).transpose()
}

fn timestamp(instant: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: instant.timestamp(),
        // Below a billion: chrono keeps a leap second's extra second in the
        // nanoseconds, which protobuf's Timestamp does not allow.
        nanos: i32::try_from(instant.timestamp_subsec_nanos().min(999_999_999)).unwrap_or(0),
    }
}

/// A flight as the proto writes it.
pub(super) fn flight(view: FlightView) -> proto::FlightView {
    let status = match view.status {
        FlightViewStatus::Scheduled => proto::FlightStatus::Scheduled,
        FlightViewStatus::Cancelled => proto::FlightStatus::Cancelled,
    };
    proto::FlightView {
        id: view.id.hyphenated().to_string(),
        flight_number: view.flight_number.as_str().to_owned(),
        from: view.from.as_str().to_owned(),
        to: view.to.as_str().to_owned(),
        departure: Some(timestamp(view.departure)),
        arrival: Some(timestamp(view.arrival)),
        price: Some(proto::Money {
            amount: view.price.amount,
            currency: view.price.currency.as_str().to_owned(),
        }),
        seats_total: view.seats_total,
        seats_available: view.seats_available,
        status: status.into(),
    }
}
