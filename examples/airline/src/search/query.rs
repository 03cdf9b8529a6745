//! A [`FlightSearch`] as an Elasticsearch query.

use annals_elastic::SearchRequest;
use chrono::{Days, NaiveDate};
use serde_json::json;

use super::{FlightSearch, MAX_LIMIT, SortOrder};

/// The search request a [`FlightSearch`] asks for: scheduled flights only
/// (a cancelled flight leaves search), filtered by route, departure days
/// (UTC, `date_to` inclusive, defaulting to `date`), price, seats, and free
/// text (every word must start a word of the flight number, codes, cities or
/// airport names); sorted by price or departure with the flight id as
/// tie-breaker; `limit` clamped to 1..=100; `after` the previous page's
/// cursor.
///
/// ```
/// use airline::search::{FlightSearch, SortOrder};
/// use airline::search::search_request;
///
/// let search = FlightSearch {
///     from: Some("JFK".parse().unwrap()),
///     max_price: Some(50_000),
///     sort: SortOrder::PriceAsc,
///     limit: 10,
///     ..FlightSearch::default()
/// };
/// let request = search_request(&search);
/// assert_eq!(request.size, 10);
/// assert_eq!(request.sort[0], serde_json::json!({ "price.amount": "asc" }));
/// ```
pub fn search_request(search: &FlightSearch) -> SearchRequest {
    let mut filters = vec![json!({ "term": { "status": "scheduled" } })];
    if let Some(from) = search.from {
        filters.push(json!({ "term": { "from": from.as_str() } }));
    }
    if let Some(to) = search.to {
        filters.push(json!({ "term": { "to": to.as_str() } }));
    }
    let last_day = search.date_to.or(search.date);
    if search.date.is_some() || last_day.is_some() {
        let mut range = serde_json::Map::new();
        if let Some(first) = search.date {
            range.insert("gte".into(), json!(midnight(first)));
        }
        // The day after the last one; none after the last representable day.
        if let Some(next) = last_day.and_then(|last| last.checked_add_days(Days::new(1))) {
            range.insert("lt".into(), json!(midnight(next)));
        }
        filters.push(json!({ "range": { "departure": range } }));
    }
    if let Some(max) = search.max_price {
        filters.push(json!({ "range": { "price.amount": { "lte": max } } }));
    }
    if let Some(seats) = search.min_seats {
        filters.push(json!({ "range": { "seats_available": { "gte": seats } } }));
    }
    if let Some(q) = &search.q {
        for word in words(q) {
            // An explicit rewrite: Elasticsearch 7.10 fails a prefix query
            // shorter than the field's `index_prefixes.min_chars` (a one-letter
            // word, as in "John F Kennedy") with a NullPointerException when
            // none is given (fixed in OpenSearch 2.0,
            // opensearch-project/OpenSearch#2879). `constant_score` is what a
            // filter does anyway.
            filters.push(json!({
                "prefix": { "search_text": { "value": word, "rewrite": "constant_score" } }
            }));
        }
    }
    let (field, order) = match search.sort {
        SortOrder::PriceAsc => ("price.amount", "asc"),
        SortOrder::PriceDesc => ("price.amount", "desc"),
        SortOrder::DepartureAsc => ("departure", "asc"),
        SortOrder::DepartureDesc => ("departure", "desc"),
    };
    let sort = vec![json!({ field: order }), json!({ "id": "asc" })];
    let query = json!({ "bool": { "filter": filters } });
    let size = search.limit.clamp(1, MAX_LIMIT) as usize;
    let mut request = SearchRequest::new(query, sort, size);
    request.after = search.after.clone();
    request
}

fn midnight(day: NaiveDate) -> String {
    format!("{}T00:00:00Z", day.format("%Y-%m-%d"))
}

/// The words of a free-text query, lower-cased, as the index's standard
/// analyzer splits them (letters and digits).
fn words(q: &str) -> Vec<String> {
    q.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn filters(request: &SearchRequest) -> Vec<Value> {
        request.query["bool"]["filter"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn an_empty_search_lists_scheduled_flights_by_departure() {
        let request = search_request(&FlightSearch::default());
        assert_eq!(
            filters(&request),
            vec![json!({ "term": { "status": "scheduled" } })]
        );
        assert_eq!(
            request.sort,
            vec![json!({ "departure": "asc" }), json!({ "id": "asc" })]
        );
        assert_eq!(request.size, 1, "limit 0 is clamped to 1");
        assert_eq!(request.after, None);
    }

    #[test]
    fn every_parameter_becomes_a_filter() {
        let search = FlightSearch {
            from: Some("JFK".parse().unwrap()),
            to: Some("LHR".parse().unwrap()),
            date: Some("2026-12-01".parse().unwrap()),
            date_to: Some("2026-12-03".parse().unwrap()),
            max_price: Some(50_000),
            min_seats: Some(2),
            q: Some("New-York heathrow".into()),
            sort: SortOrder::PriceDesc,
            limit: 500,
            after: Some("cursor".into()),
        };
        let request = search_request(&search);
        assert_eq!(
            filters(&request),
            vec![
                json!({ "term": { "status": "scheduled" } }),
                json!({ "term": { "from": "JFK" } }),
                json!({ "term": { "to": "LHR" } }),
                json!({ "range": { "departure": { "gte": "2026-12-01T00:00:00Z", "lt": "2026-12-04T00:00:00Z" } } }),
                json!({ "range": { "price.amount": { "lte": 50_000 } } }),
                json!({ "range": { "seats_available": { "gte": 2 } } }),
                json!({ "prefix": { "search_text": { "value": "new", "rewrite": "constant_score" } } }),
                json!({ "prefix": { "search_text": { "value": "york", "rewrite": "constant_score" } } }),
                json!({ "prefix": { "search_text": { "value": "heathrow", "rewrite": "constant_score" } } }),
            ]
        );
        assert_eq!(
            request.sort,
            vec![json!({ "price.amount": "desc" }), json!({ "id": "asc" })]
        );
        assert_eq!(request.size, 100);
        assert_eq!(request.after.as_deref(), Some("cursor"));
    }

    #[test]
    fn a_single_day_and_an_open_ended_range() {
        let day = FlightSearch {
            date: Some("2026-12-31".parse().unwrap()),
            ..FlightSearch::default()
        };
        assert_eq!(
            filters(&search_request(&day))[1],
            json!({ "range": { "departure": { "gte": "2026-12-31T00:00:00Z", "lt": "2027-01-01T00:00:00Z" } } })
        );
        let until = FlightSearch {
            date_to: Some("2026-12-31".parse().unwrap()),
            sort: SortOrder::DepartureDesc,
            ..FlightSearch::default()
        };
        let request = search_request(&until);
        assert_eq!(
            filters(&request)[1],
            json!({ "range": { "departure": { "lt": "2027-01-01T00:00:00Z" } } })
        );
        assert_eq!(request.sort[0], json!({ "departure": "desc" }));
    }
}
