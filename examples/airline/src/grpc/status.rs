//! Errors as gRPC statuses, the way the REST API maps them to HTTP
//! statuses: 400 is `INVALID_ARGUMENT`, 404 `NOT_FOUND`, 503
//! `UNAVAILABLE`, and a call that outlives the client's deadline
//! `DEADLINE_EXCEEDED`. Each status carries the REST error code, at the
//! start of its message and in a `google.rpc.ErrorInfo` detail.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

use super::deadline::Deadline;
use crate::search::{QueryError, ReadError, SearchError};

/// The `domain` of the statuses' `ErrorInfo`.
pub const ERROR_DOMAIN: &str = "airline";

/// The `ErrorInfo` metadata key that holds the REST error code as it is
/// spelled there (the `reason` is the same code in upper case, as
/// `google.rpc.ErrorInfo` asks).
pub const ERROR_CODE_KEY: &str = "code";

/// A status with the API's error `code` (e.g. `invalid_airport`).
pub(super) fn status(code: Code, error: &str, message: impl std::fmt::Display) -> Status {
    let metadata = HashMap::from([(ERROR_CODE_KEY.to_owned(), error.to_owned())]);
    let details = ErrorDetails::with_error_info(error.to_ascii_uppercase(), ERROR_DOMAIN, metadata);
    Status::with_error_details(code, format!("{error}: {message}"), details)
}

/// A parameter that breaks its rule (REST: 400).
pub(super) fn invalid(error: &SearchError) -> Status {
    status(Code::InvalidArgument, error.code(), error)
}

/// A flight the read side does not know (REST: 404).
pub(super) fn flight_not_found(id: Uuid) -> Status {
    status(
        Code::NotFound,
        "flight_not_found",
        format!("flight {id} does not exist"),
    )
}

/// A query's error. A read side still behind `min_position` is
/// `UNAVAILABLE` (REST: 503 `read_side_behind`), or `DEADLINE_EXCEEDED` when
/// `deadline` is the client's and ended the wait.
pub(super) fn from_query(error: QueryError, deadline: &Deadline, cut_short: bool) -> Status {
    match error {
        QueryError::Invalid(error) => invalid(&error),
        behind @ QueryError::Behind { .. } => {
            let code = if cut_short && deadline.is_client() {
                Code::DeadlineExceeded
            } else {
                Code::Unavailable
            };
            status(code, "read_side_behind", behind)
        }
        QueryError::Store(error) => {
            tracing::warn!(error = %annals::error::report(&error), "store unavailable");
            status(
                Code::Unavailable,
                "unavailable",
                "the event store is unavailable; retry later",
            )
        }
        QueryError::Read(error) => from_read(error),
    }
}

/// The read side had not seen `wanted` when `deadline` came, before the
/// configured wait would have ended (see [`from_query`]).
pub(super) fn behind_at(deadline: &Deadline, wanted: annals::Position) -> Status {
    let code = if deadline.is_client() {
        Code::DeadlineExceeded
    } else {
        Code::Unavailable
    };
    status(
        code,
        "read_side_behind",
        format!("the flight read side had not reached {wanted} by the deadline; retry"),
    )
}

/// A read side's error.
pub(super) fn from_read(error: ReadError) -> Status {
    match error {
        ReadError::BadCursor(_) => status(
            Code::InvalidArgument,
            "invalid_cursor",
            "`after` is not a cursor this search returned",
        ),
        ReadError::Behind(message) => status(Code::Unavailable, "read_side_behind", message),
        ReadError::Unavailable(message) => {
            tracing::warn!(%message, "read side unavailable");
            status(
                Code::Unavailable,
                "read_side_unavailable",
                "the read side is unavailable; retry later",
            )
        }
    }
}

/// The call ran out of time: `DEADLINE_EXCEEDED` for the client's deadline,
/// `UNAVAILABLE` for the server's request timeout (REST: 503 `timeout`).
pub(super) fn timed_out(deadline: &Deadline) -> Status {
    if deadline.is_client() {
        status(
            Code::DeadlineExceeded,
            "timeout",
            "the call did not finish before its deadline",
        )
    } else {
        status(Code::Unavailable, "timeout", "the request took too long")
    }
}

/// The server is shutting down (a stream is cut short).
pub(super) fn shutting_down() -> Status {
    status(
        Code::Unavailable,
        "shutting_down",
        "the server is shutting down; retry",
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_rest_code_is_in_the_message_and_the_error_info() {
        let status = invalid(&SearchError::Sort("cheapest".into()));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status
                .message()
                .starts_with("invalid_sort: sort: \"cheapest\"")
        );
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "INVALID_SORT");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata[ERROR_CODE_KEY], "invalid_sort");
    }

    #[tokio::test]
    async fn behind_is_a_deadline_only_when_the_clients_deadline_cut_the_wait() {
        let behind = || QueryError::Behind {
            checkpoint: annals::Position::new(1, 1),
            wanted: annals::Position::new(9, 9),
            waited: Duration::from_millis(10),
        };
        let client = Deadline::new(Some(Duration::from_secs(1)), Duration::from_secs(10));
        let server = Deadline::new(None, Duration::from_secs(10));
        let code = |d: &Deadline, cut| from_query(behind(), d, cut).code();
        assert_eq!(code(&client, true), Code::DeadlineExceeded);
        assert_eq!(code(&client, false), Code::Unavailable);
        assert_eq!(code(&server, true), Code::Unavailable);
        assert_eq!(timed_out(&client).code(), Code::DeadlineExceeded);
        assert_eq!(timed_out(&server).code(), Code::Unavailable);
        let unavailable = from_read(ReadError::Unavailable("down".into()));
        assert_eq!(unavailable.code(), Code::Unavailable);
        assert!(unavailable.message().starts_with("read_side_unavailable: "));
    }
}
