//! Queries by event type and tag ([`EventStore::read_query`](annals::EventStore::read_query)),
//! and the items of a query as the arrays SQL takes, which the conditional
//! append ([`crate::append::conditional`]) binds too.
//!
//! A query's items go to the server as two `jsonb[]` arrays, each item's types
//! and each item's tags as one JSON array (SQL has no ragged arrays). The
//! statement (`sql/read_query.sql`) looks each item up through the index that
//! suits its shape: the GIN index on `tags` for a tagged item, the type index
//! for an item of types only, the primary key for an empty item (every
//! event); it merges the first `limit` events of each item in log order and
//! reads only below `pg_snapshot_xmin`, as `read_all` does. A query of one
//! tagged item (what a decision about one entity reads) is read first with a
//! statement of its own (`sql/read_query_tagged.sql`), without the merge and
//! without sorting on the server: one row more than the limit, in any
//! order; when fewer come back they are all there, and are sorted here (the
//! server's sort of whole rows cost more than the read); else the general
//! statement reads them in order.

use annals::{Position, Query, RecordedEvent, StoreError};
use sqlx::types::Json;

use crate::error::{retry_lost, store_error};
use crate::handle::PgEventStore;
use crate::read::{PREALLOCATE, fetch_events, limit_param};
use crate::xid;

const READ_QUERY: &str = include_str!("sql/read_query.sql");
const READ_QUERY_TAGGED: &str = include_str!("sql/read_query_tagged.sql");

/// Query items as bound arrays: per item, its types and its tags as JSON
/// arrays, and which query (of several, in a group) it belongs to.
#[derive(Debug, Default)]
pub(crate) struct Items {
    /// The 1-based number of the query each item belongs to.
    pub(crate) owners: Vec<i32>,
    /// Each item's types (empty: any type).
    pub(crate) types: Vec<Json<Vec<String>>>,
    /// Each item's tags (all required).
    pub(crate) tags: Vec<Json<Vec<String>>>,
}

impl Items {
    /// The items of one query.
    pub(crate) fn of(query: &Query) -> Self {
        let mut items = Self::default();
        items.push(1, query);
        items
    }

    /// Adds the items of `query`, owned by query number `owner`. Items that
    /// can match no stored event are left out: a tag or type with a NUL
    /// character (PostgreSQL text cannot hold one, so no event carries it,
    /// and it could not even be sent).
    pub(crate) fn push(&mut self, owner: i32, query: &Query) {
        for item in query.items() {
            if item.tags().iter().any(|tag| tag.contains('\0')) {
                continue;
            }
            let types: Vec<String> = item
                .event_types()
                .iter()
                .filter(|t| !t.contains('\0'))
                .cloned()
                .collect();
            if types.is_empty() && !item.event_types().is_empty() {
                continue; // it named types, none of which can be stored
            }
            self.owners.push(owner);
            self.types.push(Json(types));
            self.tags.push(Json(item.tags().to_vec()));
        }
    }

    /// Whether no item is left: the query matches nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// The types and tags of the only item, when there is one and it has
    /// tags.
    fn one_tagged(&self) -> Option<(&[String], &[String])> {
        match (&self.types[..], &self.tags[..]) {
            ([types], [tags]) if !tags.0.is_empty() => Some((&types.0, &tags.0)),
            _ => None,
        }
    }
}

/// Events matching `query` after `after`, at most `limit`, in log order:
/// only events no running transaction can still precede.
pub(crate) async fn read_query(
    store: &PgEventStore,
    query: &Query,
    after: Position,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let items = Items::of(query);
    if limit == 0 || items.is_empty() {
        return Ok(Vec::new());
    }
    let (transaction, sequence) = xid::after_params(after);
    let capacity = limit.min(PREALLOCATE);
    if let Some((types, tags)) = items.one_tagged() {
        // One more than wanted, in any order: fewer means all of them.
        let events = retry_lost(|| {
            let query = sqlx::query(READ_QUERY_TAGGED)
                .bind(transaction)
                .bind(sequence)
                .bind(limit_param(limit.saturating_add(1)))
                .bind(types)
                .bind(tags);
            fetch_events(query, &store.inner.conns, capacity)
        })
        .await
        .map_err(store_error)?;
        if events.len() <= limit {
            let mut events = events;
            // Most often in order already: rows come in the order they were
            // written, which is the log's unless transactions interleaved.
            if !events.is_sorted_by_key(|e| e.position) {
                events.sort_unstable_by_key(|e| e.position);
            }
            return Ok(events);
        }
    }
    retry_lost(|| {
        let query = sqlx::query(READ_QUERY)
            .bind(transaction)
            .bind(sequence)
            .bind(limit_param(limit))
            .bind(&items.types)
            .bind(&items.tags);
        fetch_events(query, &store.inner.conns, capacity)
    })
    .await
    .map_err(store_error)
}

#[cfg(test)]
mod tests {
    use annals::QueryItem;

    use super::*;

    #[test]
    fn items_that_can_match_nothing_are_left_out() {
        let query = Query::new()
            .or(QueryItem::tagged(["a\0b"]))
            .or(QueryItem::types(["T\0"]))
            .or(QueryItem::types(["T\0", "U"]).and_tagged(["x"]))
            .or(QueryItem::default());
        let items = Items::of(&query);
        assert_eq!(items.owners, [1, 1]);
        assert_eq!(items.types[0].0, ["U"]);
        assert_eq!(items.tags[0].0, ["x"]);
        assert!(items.types[1].0.is_empty() && items.tags[1].0.is_empty());
        assert!(Items::of(&Query::new()).is_empty());
    }
}
