//! The shared kernel: value objects every context speaks, validated on construction.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::airports;

/// Why a value object refused its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not three letters, or not a known airport.
    #[error("{0:?} is not a known IATA airport code")]
    Airport(String),
    /// Not a two-character airline designator followed by 1 to 4 digits.
    #[error("{0:?} is not a flight number (two-character airline code and 1-4 digits, e.g. AN123)")]
    FlightNumber(String),
    /// Not three upper-case letters.
    #[error("{0:?} is not an ISO 4217 currency code")]
    Currency(String),
}

/// A three-letter IATA airport code of a real airport ([`airports::all`]), e.g. `JFK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AirportCode([u8; 3]);

impl AirportCode {
    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Constructed only from ASCII letters, so always valid UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// The city the airport serves (see [`airports::Airport::city`]).
    pub fn city(&self) -> &'static str {
        airports::lookup(self.as_str()).map_or("", |a| a.city)
    }

    /// The airport's name.
    pub fn name(&self) -> &'static str {
        airports::lookup(self.as_str()).map_or("", |a| a.name)
    }
}

impl FromStr for AirportCode {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        match <[u8; 3]>::try_from(upper.as_bytes()) {
            Ok(bytes) if airports::lookup(&upper).is_some() => Ok(AirportCode(bytes)),
            _ => Err(ValueError::Airport(s.to_owned())),
        }
    }
}

/// A flight number: a two-character airline designator and 1 to 4 digits, e.g. `AN123`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FlightNumber(String);

impl FlightNumber {
    /// The flight number as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for FlightNumber {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        let (airline, digits) = upper.split_at_checked(2).unwrap_or(("", ""));
        let airline_ok = airline.bytes().all(|b| b.is_ascii_alphanumeric())
            && airline.bytes().any(|b| b.is_ascii_alphabetic());
        let digits_ok =
            (1..=4).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
        if airline_ok && digits_ok {
            Ok(FlightNumber(upper))
        } else {
            Err(ValueError::FlightNumber(s.to_owned()))
        }
    }
}

/// An ISO 4217 currency code, e.g. `USD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    /// US dollars.
    pub const USD: Currency = Currency(*b"USD");

    /// The code as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl FromStr for Currency {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match <[u8; 3]>::try_from(s.as_bytes()) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_uppercase) => Ok(Currency(bytes)),
            _ => Err(ValueError::Currency(s.to_owned())),
        }
    }
}

/// An amount of money in integer minor units (cents), with its currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Money {
    /// Minor units: 45000 USD is $450.00.
    pub amount: i64,
    /// The currency.
    pub currency: Currency,
}

impl Money {
    /// An amount in minor units.
    pub fn new(amount: i64, currency: Currency) -> Self {
        Self { amount, currency }
    }

    /// US dollars, in cents.
    pub fn usd(cents: i64) -> Self {
        Self::new(cents, Currency::USD)
    }

    /// The sum, or `None` when currencies differ or it overflows.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        (self.currency == other.currency)
            .then(|| self.amount.checked_add(other.amount))
            .flatten()
            .map(|amount| Money::new(amount, self.currency))
    }

    /// This amount times a count, or `None` on overflow.
    pub fn times(self, count: u32) -> Option<Money> {
        self.amount
            .checked_mul(i64::from(count))
            .map(|amount| Money::new(amount, self.currency))
    }
}

macro_rules! text_value {
    ($($ty:ty),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl From<$ty> for String {
            fn from(value: $ty) -> String {
                value.as_str().to_owned()
            }
        }
        impl TryFrom<String> for $ty {
            type Error = ValueError;
            fn try_from(value: String) -> Result<Self, ValueError> {
                value.parse()
            }
        }
    )*};
}
text_value!(AirportCode, FlightNumber, Currency);

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}.{:02}",
            self.currency,
            self.amount / 100,
            (self.amount % 100).abs()
        )
    }
}

/// A UUID in its hyphenated form (`0190c6d8-7d2a-7c3e-9a51-6a1f0c2e4b7d`),
/// the one OpenAPI's `format: uuid` names; the `uuid` crate would also take
/// the simple, braced and URN forms.
pub fn hyphenated_uuid(text: &str) -> Option<uuid::Uuid> {
    (text.len() == 36)
        .then(|| uuid::Uuid::try_parse(text).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn airport_codes_must_be_known() {
        assert_eq!("jfk".parse::<AirportCode>().unwrap().as_str(), "JFK");
        assert_eq!("LHR".parse::<AirportCode>().unwrap().city(), "London");
        // Any airport with an IATA code, not only the hubs.
        for (code, city) in [
            ("anc", "Anchorage"),
            ("FAI", "Fairbanks"),
            ("HNL", "Honolulu"),
        ] {
            let airport = code.parse::<AirportCode>().unwrap();
            assert_eq!(airport.city(), city);
            assert!(!airport.name().is_empty());
        }
        for bad in ["", "JF", "JFKX", "XXX", "XQX", "ZZZ", "J1K", "ÄÄÄ"] {
            assert!(bad.parse::<AirportCode>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn flight_numbers() {
        for good in ["AN123", "an1", "U21234", "9W7"] {
            assert!(good.parse::<FlightNumber>().is_ok(), "{good} refused");
        }
        for bad in ["", "A", "AN", "AN12345", "12345", "AN12A", "99123", "ÅN12"] {
            assert!(bad.parse::<FlightNumber>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn money_json_shape_and_arithmetic() {
        let m: Money = serde_json::from_str(r#"{"amount":45000,"currency":"USD"}"#).unwrap();
        assert_eq!(m, Money::usd(45000));
        assert_eq!(m.to_string(), "USD 450.00");
        assert!(serde_json::from_str::<Money>(r#"{"amount":1,"currency":"usd"}"#).is_err());
        assert!(serde_json::from_str::<Money>(r#"{"amount":1,"currency":"USD","x":1}"#).is_err());
        assert_eq!(m.times(2), Some(Money::usd(90000)));
        assert_eq!(m.checked_add(Money::new(1, "EUR".parse().unwrap())), None);
    }
}
