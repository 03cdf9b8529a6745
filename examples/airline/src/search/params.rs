//! The search parameters as a client sends them, and their validation into
//! a [`FlightSearch`]: one set of rules for every API (the REST query string
//! and the gRPC request), with one typed error per rule.

use std::fmt;

use annals::Position;
use chrono::NaiveDate;
use uuid::Uuid;

use super::{DEFAULT_LIMIT, FlightSearch, MAX_LIMIT, SortOrder};
use crate::values::{AirportCode, ValueError, hyphenated_uuid};

/// The longest free-text query, in characters.
pub const MAX_TEXT: usize = 200;

/// The longest `after` cursor, in bytes: a longer one was not issued by any
/// backend, and is refused before it costs a query.
pub const MAX_CURSOR: usize = 1024;

/// A whole number as a client sent it: already a number (a typed API such as
/// gRPC), or the text of a query string still to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raw<'a> {
    /// A number.
    Number(i64),
    /// Text: a whole number only when it is digits and nothing else (Rust's
    /// integer parsing would also take a leading `+`).
    Text(&'a str),
}

impl Raw<'_> {
    /// The value when it is a whole number that is not negative.
    fn whole(self) -> Option<u64> {
        match self {
            Raw::Number(n) => u64::try_from(n).ok(),
            Raw::Text(text) => text
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| text.parse().ok())
                .flatten(),
        }
    }
}

impl fmt::Display for Raw<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Raw::Number(n) => write!(f, "{n}"),
            Raw::Text(text) => write!(f, "{text:?}"),
        }
    }
}

/// A flight search as a client sent it, before validation; `None` is a
/// parameter not given. [`SearchInput::validate`] turns it into a
/// [`FlightSearch`].
///
/// Free-text parameters (`from`, `to`, `q`, `after`) that are blank count as
/// not given; typed ones (dates, numbers, the sort) are taken as sent, so a
/// blank date is refused rather than ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchInput<'a> {
    /// Origin: an IATA airport code (any case).
    pub from: Option<&'a str>,
    /// Destination: an IATA airport code.
    pub to: Option<&'a str>,
    /// First departure day (UTC), `YYYY-MM-DD`.
    pub date: Option<&'a str>,
    /// Last departure day (UTC, inclusive), `YYYY-MM-DD`.
    pub date_to: Option<&'a str>,
    /// Highest price, minor units.
    pub max_price: Option<Raw<'a>>,
    /// Fewest seats available.
    pub min_seats: Option<Raw<'a>>,
    /// Free text.
    pub q: Option<&'a str>,
    /// `price`, `-price`, `departure` or `-departure`.
    pub sort: Option<&'a str>,
    /// Page size, 1 to [`MAX_LIMIT`]; [`DEFAULT_LIMIT`] when not given.
    pub limit: Option<Raw<'a>>,
    /// The previous page's `next` cursor.
    pub after: Option<&'a str>,
}

/// A search parameter that breaks its rule. [`SearchError::code`] is the
/// stable code every API answers with (REST: 400 and `{"error": {"code"}}`;
/// gRPC: `INVALID_ARGUMENT`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// `from` or `to` is not a known airport code.
    #[error("{field}: {source}")]
    Airport {
        /// The parameter.
        field: &'static str,
        /// Why the code was refused.
        #[source]
        source: ValueError,
    },
    /// `date` or `date_to` is not a `YYYY-MM-DD` day.
    #[error("{field}: {value:?} is not a date (YYYY-MM-DD)")]
    Date {
        /// The parameter.
        field: &'static str,
        /// What was sent.
        value: String,
    },
    /// `date_to` is before `date`.
    #[error("date_to is before date")]
    DateRange,
    /// `max_price` is not a non-negative amount (what was sent, as sent).
    #[error("max_price: {0} is not a non-negative amount in minor units")]
    Price(String),
    /// `min_seats` is not a non-negative whole number that fits a seat count.
    #[error("min_seats: {0} is not a non-negative whole number")]
    Seats(String),
    /// `q` is longer than [`MAX_TEXT`] characters.
    #[error("q: at most {MAX_TEXT} characters")]
    Text,
    /// `sort` is not one of the orders.
    #[error("sort: {0:?} is not one of price, -price, departure, -departure")]
    Sort(String),
    /// `limit` is not a number from 1 to [`MAX_LIMIT`].
    #[error("limit: {0} is not a number from 1 to {MAX_LIMIT}")]
    Limit(String),
    /// `after` cannot be a cursor (the read side refuses the others).
    #[error("after: not a cursor this search returned")]
    Cursor,
    /// `min_position` is not a position token.
    #[error("{0:?} is not a position token (e.g. 12.40)")]
    Position(String),
    /// The id of a flight lookup is not a hyphenated UUID.
    #[error("{0:?} is not a flight id (a hyphenated UUID)")]
    Id(String),
}

impl SearchError {
    /// The stable code of the error, e.g. `invalid_airport`.
    pub fn code(&self) -> &'static str {
        match self {
            SearchError::Airport { .. } => "invalid_airport",
            SearchError::Date { .. } => "invalid_date",
            SearchError::DateRange => "invalid_date_range",
            SearchError::Price(_) => "invalid_price",
            SearchError::Seats(_) => "invalid_seats",
            SearchError::Text => "invalid_text",
            SearchError::Sort(_) => "invalid_sort",
            SearchError::Limit(_) => "invalid_limit",
            SearchError::Cursor => "invalid_cursor",
            SearchError::Position(_) => "invalid_position",
            SearchError::Id(_) => "invalid_id",
        }
    }
}

/// A free-text parameter: blank counts as absent.
fn given(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

fn airport(field: &'static str, value: Option<&str>) -> Result<Option<AirportCode>, SearchError> {
    given(value)
        .map(|v| {
            v.parse::<AirportCode>()
                .map_err(|source| SearchError::Airport { field, source })
        })
        .transpose()
}

fn day(field: &'static str, value: Option<&str>) -> Result<Option<NaiveDate>, SearchError> {
    value
        .map(|v| {
            // chrono also takes unpadded fields (`2026-1-5`); RFC 3339 dates do not.
            let padded = v.len() == 10;
            NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .ok()
                .filter(|_| padded)
                .ok_or_else(|| SearchError::Date {
                    field,
                    value: v.to_owned(),
                })
        })
        .transpose()
}

/// Reads a sort order by its API name (`price`, `-price`, `departure`,
/// `-departure`).
pub fn sort_order(value: &str) -> Result<SortOrder, SearchError> {
    match value {
        "price" => Ok(SortOrder::PriceAsc),
        "-price" => Ok(SortOrder::PriceDesc),
        "departure" => Ok(SortOrder::DepartureAsc),
        "-departure" => Ok(SortOrder::DepartureDesc),
        other => Err(SearchError::Sort(other.to_owned())),
    }
}

/// Reads a read-your-writes token (`min_position`): digits, a dot, digits,
/// as the position of a command's answer is written.
pub fn position(value: &str) -> Result<Position, SearchError> {
    let plain = value.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    value
        .parse::<Position>()
        .ok()
        .filter(|_| plain)
        .ok_or_else(|| SearchError::Position(value.to_owned()))
}

/// Reads the id of a flight lookup: a hyphenated UUID.
pub fn flight_id(value: &str) -> Result<Uuid, SearchError> {
    hyphenated_uuid(value).ok_or_else(|| SearchError::Id(value.to_owned()))
}

impl SearchInput<'_> {
    /// The validated search, or the first parameter that breaks its rule
    /// (checked in a fixed order: dates, price, seats, text, sort, limit,
    /// cursor, airports).
    pub fn validate(&self) -> Result<FlightSearch, SearchError> {
        let date = day("date", self.date)?;
        let date_to = day("date_to", self.date_to)?;
        if let (Some(first), Some(last)) = (date, date_to)
            && last < first
        {
            return Err(SearchError::DateRange);
        }
        let max_price = self
            .max_price
            .map(|raw| {
                raw.whole()
                    .and_then(|p| i64::try_from(p).ok())
                    .ok_or_else(|| SearchError::Price(raw.to_string()))
            })
            .transpose()?;
        let min_seats = self
            .min_seats
            .map(|raw| {
                raw.whole()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| SearchError::Seats(raw.to_string()))
            })
            .transpose()?;
        let q = given(self.q).map(str::to_owned);
        if q.as_ref().is_some_and(|q| q.chars().count() > MAX_TEXT) {
            return Err(SearchError::Text);
        }
        let sort = self.sort.map(sort_order).transpose()?.unwrap_or_default();
        let limit = self
            .limit
            .map(|raw| {
                raw.whole()
                    .and_then(|l| u32::try_from(l).ok())
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| SearchError::Limit(raw.to_string()))
            })
            .transpose()?
            .unwrap_or(DEFAULT_LIMIT);
        let after = given(self.after).map(str::to_owned);
        if after.as_ref().is_some_and(|a| a.len() > MAX_CURSOR) {
            return Err(SearchError::Cursor);
        }
        Ok(FlightSearch {
            from: airport("from", self.from)?,
            to: airport("to", self.to)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn code(input: SearchInput<'_>) -> &'static str {
        input.validate().map_or_else(|e| e.code(), |_| "ok")
    }

    #[test]
    fn nothing_given_is_the_default_search() {
        let search = SearchInput::default().validate().unwrap();
        assert_eq!(
            search,
            FlightSearch {
                limit: DEFAULT_LIMIT,
                ..FlightSearch::default()
            }
        );
    }

    #[test]
    fn every_parameter_is_read() {
        let input = SearchInput {
            from: Some(" jfk "),
            to: Some("LHR"),
            date: Some("2026-12-01"),
            date_to: Some("2026-12-03"),
            max_price: Some(Raw::Text("50000")),
            min_seats: Some(Raw::Number(2)),
            q: Some("  london "),
            sort: Some("-price"),
            limit: Some(Raw::Number(100)),
            after: Some("cursor"),
        };
        let search = input.validate().unwrap();
        assert_eq!(search.from, Some("JFK".parse().unwrap()));
        assert_eq!(search.to, Some("LHR".parse().unwrap()));
        assert_eq!(search.date, Some("2026-12-01".parse().unwrap()));
        assert_eq!(search.date_to, Some("2026-12-03".parse().unwrap()));
        assert_eq!(search.max_price, Some(50_000));
        assert_eq!(search.min_seats, Some(2));
        assert_eq!(search.q.as_deref(), Some("london"));
        assert_eq!(search.sort, SortOrder::PriceDesc);
        assert_eq!(search.limit, 100);
        assert_eq!(search.after.as_deref(), Some("cursor"));
    }

    #[test]
    fn blank_text_is_absent_but_a_blank_typed_value_is_refused() {
        let blank = SearchInput {
            from: Some(" "),
            q: Some(""),
            after: Some("  "),
            ..SearchInput::default()
        };
        assert_eq!(code(blank), "ok");
        for input in [
            SearchInput {
                date: Some(""),
                ..SearchInput::default()
            },
            SearchInput {
                date: Some(" 2026-12-01"),
                ..SearchInput::default()
            },
        ] {
            assert_eq!(code(input), "invalid_date", "{input:?}");
        }
        let sort = SearchInput {
            sort: Some(""),
            ..SearchInput::default()
        };
        assert_eq!(code(sort), "invalid_sort");
    }

    #[test]
    fn each_rule_has_its_code() {
        let long_text = "x".repeat(MAX_TEXT + 1);
        let long_cursor = "c".repeat(MAX_CURSOR + 1);
        let cases: Vec<(SearchInput<'_>, &str)> = vec![
            (
                SearchInput {
                    from: Some("XXX"),
                    ..SearchInput::default()
                },
                "invalid_airport",
            ),
            (
                SearchInput {
                    date_to: Some("2026-1-5"),
                    ..SearchInput::default()
                },
                "invalid_date",
            ),
            (
                SearchInput {
                    date: Some("2026-12-02"),
                    date_to: Some("2026-12-01"),
                    ..SearchInput::default()
                },
                "invalid_date_range",
            ),
            (
                SearchInput {
                    max_price: Some(Raw::Number(-1)),
                    ..SearchInput::default()
                },
                "invalid_price",
            ),
            (
                SearchInput {
                    max_price: Some(Raw::Text("+5")),
                    ..SearchInput::default()
                },
                "invalid_price",
            ),
            (
                SearchInput {
                    min_seats: Some(Raw::Text("4294967296")),
                    ..SearchInput::default()
                },
                "invalid_seats",
            ),
            (
                SearchInput {
                    q: Some(&long_text),
                    ..SearchInput::default()
                },
                "invalid_text",
            ),
            (
                SearchInput {
                    sort: Some("cheapest"),
                    ..SearchInput::default()
                },
                "invalid_sort",
            ),
            (
                SearchInput {
                    limit: Some(Raw::Number(0)),
                    ..SearchInput::default()
                },
                "invalid_limit",
            ),
            (
                SearchInput {
                    limit: Some(Raw::Text("101")),
                    ..SearchInput::default()
                },
                "invalid_limit",
            ),
            (
                SearchInput {
                    after: Some(&long_cursor),
                    ..SearchInput::default()
                },
                "invalid_cursor",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(code(input), expected, "{input:?}");
        }
    }

    #[test]
    fn messages_quote_text_but_not_numbers() {
        let text = SearchInput {
            limit: Some(Raw::Text("ten")),
            ..SearchInput::default()
        };
        assert_eq!(
            text.validate().unwrap_err().to_string(),
            "limit: \"ten\" is not a number from 1 to 100"
        );
        let number = SearchInput {
            limit: Some(Raw::Number(0)),
            ..SearchInput::default()
        };
        assert_eq!(
            number.validate().unwrap_err().to_string(),
            "limit: 0 is not a number from 1 to 100"
        );
    }

    #[test]
    fn positions_are_digits_a_dot_and_digits() {
        assert_eq!(position("12.40").unwrap().to_string(), "12.40");
        for bad in ["", "x", "1.2.3", "+1.2", " 1.2"] {
            assert_eq!(
                position(bad).unwrap_err().code(),
                "invalid_position",
                "{bad}"
            );
        }
    }
}
