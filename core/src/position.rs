//! The position token of the global log.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A point in the global event log, totally ordered.
///
/// A position is the pair `(transaction, sequence)`: the PostgreSQL store fills
/// it with the writing transaction's id (`xid8`) and the event's global
/// sequence number, so that a reader ordered by this pair never passes an
/// event whose transaction commits late. The in-memory store uses its own
/// commit counter for `transaction`. Positions are what appends return, what
/// checkpoints hold and what `min_position` compares.
///
/// The string form (`"<transaction>.<sequence>"`) is stable and is what HTTP
/// clients see; treat it as opaque.
///
/// ```
/// use annals::Position;
/// let p = Position::new(7, 42);
/// assert_eq!(p.to_string().parse::<Position>().unwrap(), p);
/// assert!(Position::START < p);
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub struct Position {
    transaction: u64,
    sequence: u64,
}

impl Position {
    /// Before the first event: reading after `START` reads the whole log.
    pub const START: Position = Position {
        transaction: 0,
        sequence: 0,
    };

    /// A position from its two parts.
    pub const fn new(transaction: u64, sequence: u64) -> Self {
        Self {
            transaction,
            sequence,
        }
    }

    /// The id of the transaction (or commit) that wrote the event.
    pub const fn transaction(self) -> u64 {
        self.transaction
    }

    /// The event's global sequence number, unique across the log.
    pub const fn sequence(self) -> u64 {
        self.sequence
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.transaction, self.sequence)
    }
}

/// A position token that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid position token {0:?}: expected \"<transaction>.<sequence>\"")]
pub struct ParsePositionError(pub String);

impl FromStr for Position {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParsePositionError(s.to_owned());
        let (tx, seq) = s.split_once('.').ok_or_else(err)?;
        let transaction = tx.parse().map_err(|_| err())?;
        let sequence = seq.parse().map_err(|_| err())?;
        Ok(Position::new(transaction, sequence))
    }
}

impl From<Position> for String {
    fn from(p: Position) -> String {
        p.to_string()
    }
}

impl TryFrom<String> for Position {
    type Error = ParsePositionError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_transaction_then_sequence() {
        assert!(Position::new(1, 9) < Position::new(2, 3));
        assert!(Position::new(2, 3) < Position::new(2, 4));
    }

    #[test]
    fn rejects_malformed_tokens() {
        for bad in ["", "1", "1.", ".1", "a.b", "1.2.3", "-1.2"] {
            assert!(bad.parse::<Position>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn serializes_as_string() {
        let json = serde_json::to_string(&Position::new(3, 4)).unwrap();
        assert_eq!(json, "\"3.4\"");
        assert_eq!(
            serde_json::from_str::<Position>(&json).unwrap(),
            Position::new(3, 4)
        );
    }
}
