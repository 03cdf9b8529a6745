//! Queries over the whole log by event type and tag: what a decision reads,
//! and what its conditional append checks (dynamic consistency boundaries).
//!
//! A [`Query`] is a list of items OR'd together. An item matches an event
//! whose type is one of the item's types (any type, when it names none) and
//! whose tags include every one of the item's tags. [`Query::all`] matches
//! every event; a query with no items matches none.
//!
//! ```
//! use annals::query::{Query, QueryItem};
//!
//! // Flights scheduled under AN123 on 2026-12-01, or any event of that flight.
//! let query = Query::new()
//!     .or(QueryItem::types(["FlightScheduled"]).and_tagged(["flight_number:AN123@2026-12-01"]))
//!     .or(QueryItem::tagged(["flight:0193"]));
//! assert!(query.matches("FlightScheduled", &["flight_number:AN123@2026-12-01".into()]));
//! assert!(query.matches("PriceChanged", &["flight:0193".into(), "other".into()]));
//! assert!(!query.matches("PriceChanged", &["flight_number:AN123@2026-12-01".into()]));
//! ```

use serde::{Deserialize, Serialize};

/// Events matching any of its items (see the [module docs](self)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Query {
    items: Vec<QueryItem>,
}

/// Events of one of `types` (any, when empty) carrying every one of `tags`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QueryItem {
    types: Vec<String>,
    tags: Vec<String>,
}

impl Query {
    /// A query with no items: it matches no event. Add items with [`or`](Self::or).
    pub fn new() -> Self {
        Self::default()
    }

    /// Every event.
    pub fn all() -> Self {
        Self::new().or(QueryItem::default())
    }

    /// Also matches what `item` matches.
    pub fn or(mut self, item: QueryItem) -> Self {
        self.items.push(item);
        self
    }

    /// Its items.
    pub fn items(&self) -> &[QueryItem] {
        &self.items
    }

    /// Whether an event of `event_type` carrying `tags` matches.
    pub fn matches(&self, event_type: &str, tags: &[String]) -> bool {
        self.items.iter().any(|item| item.matches(event_type, tags))
    }

    /// Merges two queries: events matching either.
    pub fn union(mut self, other: Query) -> Self {
        for item in other.items {
            if !self.items.contains(&item) {
                self.items.push(item);
            }
        }
        self
    }
}

impl QueryItem {
    /// Events of one of these types, whatever their tags.
    pub fn types<I, T>(types: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Self::default().of_types(types)
    }

    /// Events of any type carrying all these tags.
    pub fn tagged<I, T>(tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Self::default().and_tagged(tags)
    }

    /// Also restricts the item to these types (added to those it names).
    pub fn of_types<I, T>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.types.extend(types.into_iter().map(Into::into));
        self.types.sort();
        self.types.dedup();
        self
    }

    /// Also requires these tags.
    pub fn and_tagged<I, T>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.tags.extend(tags.into_iter().map(Into::into));
        self.tags.sort();
        self.tags.dedup();
        self
    }

    /// Its types (empty: any type).
    pub fn event_types(&self) -> &[String] {
        &self.types
    }

    /// Its tags (all required).
    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    /// Whether an event of `event_type` carrying `tags` matches.
    pub fn matches(&self, event_type: &str, tags: &[String]) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == event_type))
            && self.tags.iter().all(|tag| tags.contains(tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn types_or_tags_and_items_or() {
        let item = QueryItem::types(["A", "B"]).and_tagged(["x", "y"]);
        assert!(item.matches("A", &tags(&["x", "y", "z"])));
        assert!(item.matches("B", &tags(&["y", "x"])));
        assert!(
            !item.matches("C", &tags(&["x", "y"])),
            "a type it does not name"
        );
        assert!(!item.matches("A", &tags(&["x"])), "tags are AND'd");
        let query = Query::new().or(item).or(QueryItem::types(["C"]));
        assert!(query.matches("C", &[]));
        assert!(!query.matches("D", &tags(&["x", "y"])));
        assert!(Query::all().matches("anything", &[]));
        assert!(!Query::new().matches("anything", &[]));
        assert!(QueryItem::tagged(["x"]).matches("any type", &tags(&["x"])));
    }
}
