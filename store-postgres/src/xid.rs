//! The `xid8` column type and the position pair.

use annals::{Position, StoreError};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueFormat, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

/// A PostgreSQL `xid8` (a 64-bit transaction id with epoch), sent and
/// received in binary, so that no query needs a `::text` cast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Xid8(pub(crate) u64);

/// The built-in OID of `xid8` (fixed since PostgreSQL 13).
const XID8_OID: Oid = Oid(5069);

impl Type<Postgres> for Xid8 {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(XID8_OID)
    }
}

impl sqlx::postgres::PgHasArrayType for Xid8 {
    fn array_type_info() -> PgTypeInfo {
        // `_xid8`, the built-in array type of `xid8`.
        PgTypeInfo::with_oid(Oid(271))
    }
}

impl Encode<'_, Postgres> for Xid8 {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        buf.extend_from_slice(&self.0.to_be_bytes());
        Ok(IsNull::No)
    }

    fn size_hint(&self) -> usize {
        8
    }
}

impl Decode<'_, Postgres> for Xid8 {
    fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
        match value.format() {
            PgValueFormat::Binary => {
                let bytes: [u8; 8] = value.as_bytes()?.try_into()?;
                Ok(Xid8(u64::from_be_bytes(bytes)))
            }
            PgValueFormat::Text => Ok(Xid8(value.as_str()?.parse()?)),
        }
    }
}

/// The parameters of a position for `(transaction_id, global_position) > ($1, $2)`.
///
/// A sequence beyond `i64::MAX` cannot be stored; it compares as `i64::MAX`,
/// which no stored position exceeds.
pub(crate) fn after_params(after: Position) -> (Xid8, i64) {
    (
        Xid8(after.transaction()),
        i64::try_from(after.sequence()).unwrap_or(i64::MAX),
    )
}

/// The parameters of a position to store (checkpoints, dead letters).
pub(crate) fn store_params(position: Position) -> Result<(Xid8, i64), StoreError> {
    let sequence = i64::try_from(position.sequence()).map_err(|_| {
        StoreError::InvalidInput(format!(
            "position {position} has a sequence beyond what PostgreSQL stores"
        ))
    })?;
    Ok((Xid8(position.transaction()), sequence))
}

/// A position read from a row.
pub(crate) fn position(transaction: Xid8, global_position: i64) -> Position {
    // Identity values are positive.
    Position::new(transaction.0, u64::try_from(global_position).unwrap_or(0))
}

/// A stream version read from a row (never negative by the table's checks).
pub(crate) fn version(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
