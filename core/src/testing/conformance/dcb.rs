//! Dynamic consistency boundaries: tags on events, queries over the log
//! ([`EventStore::read_query`]) and conditional appends
//! ([`EventStore::append_if`]), alone and under racing writers (`races`);
//! decisions over the store (`decider`).
//!
//! Every case selects its events by tags (and types) of its own, so that
//! what it reads is what it wrote.

mod decider;
mod races;

pub use decider::*;
pub use races::*;

use serde_json::json;
use uuid::Uuid;

use super::helpers::*;
use crate::envelope::{NewEvent, RecordedEvent};
use crate::position::Position;
use crate::query::{Query, QueryItem};
use crate::store::{
    AppendCondition, AppendLimits, AppendOptions, Appended, EventFilter, EventStore,
    ExpectedVersion, StoreError,
};
use crate::testing::tagged_event;

const NOTED: &str = "conformance.Noted";

/// More than any case writes: "everything" in one read.
const ALL: usize = 10_000;

/// A `NOTED` event numbered `n`, carrying `tags`.
fn noted(n: u64, tags: &[&str]) -> NewEvent {
    tagged_event(NOTED, json!({ "n": n }), tags.iter().copied())
}

/// Events carrying every one of `tags`, whatever their type.
fn tagged(tags: &[&str]) -> Query {
    Query::new().or(QueryItem::tagged(tags.iter().copied()))
}

fn condition(query: &Query, after: Option<Position>) -> AppendCondition {
    AppendCondition {
        fail_if_events_match: query.clone(),
        after,
    }
}

/// `append_if` with no command id.
async fn try_append_if<S: EventStore>(
    store: &S,
    stream: &str,
    events: Vec<NewEvent>,
    query: &Query,
    after: Option<Position>,
) -> Result<Appended, StoreError> {
    let condition = condition(query, after);
    store
        .append_if(stream, events, condition, AppendOptions::default())
        .await
}

/// `append_if` that must succeed.
async fn append_if<S: EventStore>(
    store: &S,
    stream: &str,
    events: Vec<NewEvent>,
    query: &Query,
    after: Option<Position>,
) -> Appended {
    try_append_if(store, stream, events, query, after)
        .await
        .unwrap_or_else(|e| panic!("append_if to {stream:?} ({query:?} after {after:?}): {e}"))
}

async fn read_query<S: EventStore>(
    store: &S,
    query: &Query,
    after: Position,
    limit: usize,
) -> Vec<RecordedEvent> {
    store
        .read_query(query, after, limit)
        .await
        .unwrap_or_else(|e| panic!("read_query({query:?}, after {after}, limit {limit}): {e}"))
}

/// The ids of every event matching `query`, in the order read.
async fn query_ids<S: EventStore>(store: &S, query: &Query) -> Vec<Uuid> {
    let events = read_query(store, query, Position::START, ALL).await;
    assert_strictly_increasing(&events, &format!("read_query({query:?})"));
    recorded_ids(&events)
}

/// The result must be a `ConditionFailed` naming `position`.
fn assert_condition_failed(result: Result<Appended, StoreError>, position: Position, what: &str) {
    match result {
        Err(StoreError::ConditionFailed { position: named }) => {
            assert_eq!(named, position, "{what}: names the wrong matching event")
        }
        Err(other) => panic!("{what}: failed with {other:?}, not ConditionFailed"),
        Ok(done) => panic!("{what}: appended ({done:?}) although {position} matches"),
    }
}

/// Tags are stored as appended (order, characters, lengths up to the
/// limits) and read back untouched by `read_stream`, `read_all` and
/// `read_query`, whether written by `append` or `append_if`.
pub async fn dcb_tags_round_trip<S: EventStore + Clone>(store: &S) {
    let limits = AppendLimits::default();
    let stream = unique("dcb-tags");
    let key = unique("key");
    let odd = "quotes \"'`, {braces}, [brackets], back\\slash; ünïcødé ✈";
    // Exactly the limit in bytes, fewer in characters.
    let longest = "é".repeat(limits.max_tag_len / 2) + &"x".repeat(limits.max_tag_len % 2);
    let mut most: Vec<String> = (1..limits.max_tags).map(|i| format!("{key}:{i}")).collect();
    most.insert(0, key.clone());
    let written = vec![
        noted(0, &[]),
        noted(1, &[&key, "z:last", "a:first", "flight:0193 AN123"]),
        noted(2, &[odd, &key, &longest]),
        tagged_event(NOTED, json!({ "n": 3 }), most.clone()),
    ];
    append(
        store,
        &stream,
        ExpectedVersion::NoStream,
        written[..2].to_vec(),
    )
    .await;
    append(
        store,
        &stream,
        ExpectedVersion::Exact(2),
        written[2..3].to_vec(),
    )
    .await;
    let unrelated = tagged(&[&unique("unrelated")]);
    let last = append_if(store, &stream, written[3..].to_vec(), &unrelated, None).await;
    settle(store, last.position).await;

    let check = |read: &[RecordedEvent], sent: &[NewEvent], how: &str| {
        assert_eq!(recorded_ids(read), ids(sent), "{how}: the events read");
        for (got, sent) in read.iter().zip(sent) {
            assert_eq!(
                got.tags, sent.tags,
                "{how}: the tags of event {}",
                got.event_id
            );
        }
    };
    check(&whole_stream(store, &stream).await, &written, "read_stream");
    let mut log = read_all(store, Position::START, ALL, &EventFilter::all()).await;
    log.retain(|e| e.stream_id == stream);
    check(&log, &written, "read_all");
    let by_key = read_query(store, &tagged(&[&key]), Position::START, ALL).await;
    check(
        &by_key,
        &written[1..],
        "read_query by a tag all but the first carry",
    );
    for tag in [
        odd,
        longest.as_str(),
        "z:last",
        most[limits.max_tags - 1].as_str(),
    ] {
        let read = read_query(store, &tagged(&[tag]), Position::START, ALL).await;
        let sent: Vec<_> = written
            .iter()
            .filter(|e| e.tags.iter().any(|t| t == tag))
            .cloned()
            .collect();
        check(&read, &sent, &format!("read_query by the tag {tag:?}"));
    }
}

/// Invalid tags (empty, longer than `max_tag_len` bytes, more than
/// `max_tags`, a NUL) are refused with `InvalidInput` by `append` and
/// `append_if` alike, and nothing is written: no event, no command id, no
/// event id.
pub async fn dcb_invalid_tags_are_refused<S: EventStore + Clone>(store: &S) {
    let limits = AppendLimits::default();
    let stream = unique("dcb-invalid-tags");
    let head_before = head(store).await;
    let too_long = "x".repeat(limits.max_tag_len + 1);
    let too_long_in_bytes = "é".repeat(limits.max_tag_len / 2 + 1);
    let too_many: Vec<String> = (0..=limits.max_tags).map(|i| format!("t:{i}")).collect();
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("an empty tag", vec!["ok".into(), String::new()]),
        ("a tag over max_tag_len", vec![too_long]),
        ("a tag over max_tag_len bytes", vec![too_long_in_bytes]),
        ("more than max_tags tags", too_many),
        ("a NUL in a tag", vec!["a\0b".into()]),
    ];
    let mut refused = Vec::new();
    for (what, tags) in cases {
        for conditional in [false, true] {
            // A valid event first: the invalid one must be found anywhere.
            let events = vec![
                noted(1, &["ok"]),
                tagged_event(NOTED, json!({}), tags.clone()),
            ];
            refused.push(events[0].clone());
            let options = AppendOptions {
                command_id: Some(Uuid::new_v4()),
            };
            let result = if conditional {
                let condition = condition(&tagged(&[&unique("free")]), None);
                store
                    .append_if(&stream, events, condition, options.clone())
                    .await
            } else {
                let any = ExpectedVersion::Any;
                store
                    .append_with(&stream, any, events, options.clone())
                    .await
            };
            let how = if conditional { "append_if" } else { "append" };
            match result {
                Err(StoreError::InvalidInput(_)) => {}
                Err(other) => panic!("{how} with {what}: refused with {other:?}, not InvalidInput"),
                Ok(done) => panic!("{how} with {what}: accepted ({done:?})"),
            }
            assert_eq!(
                version(store, &stream).await,
                0,
                "{how} with {what}: wrote the stream"
            );
            assert_eq!(
                head(store).await,
                head_before,
                "{how} with {what}: wrote the log"
            );
            let command = options.command_id.expect("set above");
            let outcome = store.command_outcome(command).await;
            let outcome = outcome.unwrap_or_else(|e| panic!("command_outcome failed: {e}"));
            assert_eq!(outcome, None, "{how} with {what}: recorded the command id");
        }
    }
    // The refused events' ids were not kept.
    let done = append(store, &stream, ExpectedVersion::NoStream, refused).await;
    assert!(!done.repeated, "the ids of refused events were kept");
}

/// `read_query` matches one of an item's types (any, when it names none)
/// and all of its tags, exactly (no prefix or substring); items are OR'd,
/// an event matching two of them is read once; results are in log order.
pub async fn dcb_read_query_matches_types_and_tags<S: EventStore + Clone>(store: &S) {
    let suffix = Uuid::new_v4().simple().to_string();
    let [a, b, c, d] = ["A", "B", "C", "D"].map(|t| format!("conformance.{t}.{suffix}"));
    let (x, y, z) = (unique("x"), unique("y"), unique("z"));
    let (longer_type, longer_x, shorter_x) = (format!("{a}0"), format!("{x}0"), &x[..x.len() - 1]);
    let event =
        |event_type: &str, tags: &[&str]| tagged_event(event_type, json!({}), tags.iter().copied());
    let events = [
        event(&a, &[&x]),
        event(&b, &[&x, &y]),
        event(&c, &[&y, &x]),
        event(&a, &[&y]),
        event(&b, &[]),
        event(&a, &[&z, &x, &y]),
        event(&d, &[&x, &y]),
        event(&longer_type, &[&longer_x, shorter_x, &y]),
    ];
    let streams = [unique("dcb-query"), unique("dcb-query")];
    let mut last = Position::START;
    for (i, e) in events.iter().enumerate() {
        last = append(
            store,
            &streams[i % 2],
            ExpectedVersion::Any,
            vec![e.clone()],
        )
        .await
        .position;
    }
    settle(store, last).await;

    let types = |names: &[&str]| QueryItem::types(names.iter().copied());
    let never = unique("never");
    let cases: Vec<(&str, Query, &[usize])> = vec![
        (
            "types A or B",
            Query::new().or(types(&[&a, &b])),
            &[0, 1, 3, 4, 5],
        ),
        (
            "type A (not a longer name)",
            Query::new().or(types(&[&a])),
            &[0, 3, 5],
        ),
        (
            "tag x (not a longer or shorter tag)",
            tagged(&[&x]),
            &[0, 1, 2, 5, 6],
        ),
        ("tags x and y", tagged(&[&x, &y]), &[1, 2, 5, 6]),
        ("tag a shorter x", tagged(&[shorter_x]), &[7]),
        (
            "A or C, x and y",
            Query::new().or(types(&[&a, &c]).and_tagged([&x, &y])),
            &[2, 5],
        ),
        (
            "A with x, y, z",
            Query::new().or(types(&[&a]).and_tagged([&x, &y, &z])),
            &[5],
        ),
        (
            "C, or A with y",
            Query::new()
                .or(types(&[&c]))
                .or(types(&[&a]).and_tagged([&y])),
            &[2, 3, 5],
        ),
        (
            "x or y (each once)",
            tagged(&[&x]).or(QueryItem::tagged([&y])),
            &[0, 1, 2, 3, 5, 6, 7],
        ),
        (
            "D or z",
            Query::new().or(types(&[&d])).or(QueryItem::tagged([&z])),
            &[5, 6],
        ),
        ("a tag no event has", tagged(&[&never]), &[]),
        ("x and a tag no event has", tagged(&[&x, &never]), &[]),
        (
            "a type no event has",
            Query::new().or(types(&[&never])),
            &[],
        ),
    ];
    for (what, query, expected) in cases {
        let expected: Vec<_> = expected.iter().map(|&i| events[i].event_id).collect();
        assert_eq!(
            query_ids(store, &query).await,
            expected,
            "read_query: {what}"
        );
    }
}

/// `Query::all()` reads the whole log in log order, as `read_all` does;
/// `Query::new()` (no items) reads nothing.
pub async fn dcb_read_query_all_and_nothing<S: EventStore + Clone>(store: &S) {
    let (first, second) = (unique("dcb-all"), unique("dcb-all"));
    append(
        store,
        &first,
        ExpectedVersion::Any,
        vec![noted(1, &[]), noted(2, &["t"])],
    )
    .await;
    let middle = append(store, &second, ExpectedVersion::Any, vec![event(TICK, 3)]).await;
    let last = append(
        store,
        &first,
        ExpectedVersion::Any,
        vec![noted(4, &["t", "u"])],
    )
    .await;
    settle(store, last.position).await;

    let log = read_all(store, Position::START, ALL, &EventFilter::all()).await;
    assert!(log.len() >= 4, "the log holds the case's events");
    let everything = read_query(store, &Query::all(), Position::START, ALL).await;
    assert_eq!(everything, log, "read_query(Query::all()) is not the log");
    let rest = read_query(store, &Query::all(), middle.position, ALL).await;
    let log_rest = read_all(store, middle.position, ALL, &EventFilter::all()).await;
    assert_eq!(
        rest, log_rest,
        "Query::all() after a position is not the rest of the log"
    );
    let nothing = read_query(store, &Query::new(), Position::START, ALL).await;
    assert!(nothing.is_empty(), "Query::new() matched {nothing:?}");
}

/// `read_query` reads strictly after `after`, at most `limit` events (a
/// full page unless the matches run out); paging through with any limit
/// reads exactly what one read does.
pub async fn dcb_read_query_pages_with_after_and_limit<S: EventStore + Clone>(store: &S) {
    let (key, other) = (unique("page"), unique("other"));
    let streams = [unique("dcb-page"), unique("dcb-page")];
    // 12 matching events among 12 others, in batches of 1 to 4 over two streams.
    let events: Vec<_> = (0..24)
        .map(|n| noted(n, &[if n % 2 == 0 { &key } else { &other }]))
        .collect();
    let (mut start, mut last) = (0, Position::START);
    for (i, size) in [3, 1, 4, 2, 4, 1, 3, 2, 4].into_iter().enumerate() {
        let batch = events[start..start + size].to_vec();
        last = append(store, &streams[i % 2], ExpectedVersion::Any, batch)
            .await
            .position;
        start += size;
    }
    assert_eq!(start, events.len());
    settle(store, last).await;

    let query = tagged(&[&key]);
    let full = read_query(store, &query, Position::START, ALL).await;
    let matching: Vec<_> = events.iter().step_by(2).map(|e| e.event_id).collect();
    assert_eq!(recorded_ids(&full), matching, "the matching events");
    for limit in [1, 2, 5, 12, 13] {
        let (mut paged, mut after) = (Vec::new(), Position::START);
        loop {
            let page = read_query(store, &query, after, limit).await;
            let owed = limit.min(full.len() - paged.len());
            assert_eq!(page.len(), owed, "a page of at most {limit} after {after}");
            let Some(last) = page.last() else { break };
            after = last.position;
            paged.extend(page);
        }
        assert_eq!(paged, full, "paging with limit {limit}");
    }
    // Strictly after a matching event's position, or an unmatched one's.
    let all = read_all(store, Position::START, ALL, &EventFilter::all()).await;
    for (i, e) in all
        .iter()
        .filter(|e| streams.contains(&e.stream_id))
        .enumerate()
    {
        let rest = read_query(store, &query, e.position, ALL).await;
        let expected = &full[(i / 2) + 1..];
        assert_eq!(
            rest, expected,
            "read_query after {} (event {i})",
            e.position
        );
    }
    assert!(
        read_query(store, &query, Position::START, 0)
            .await
            .is_empty(),
        "limit 0"
    );
    let huge = read_query(store, &query, Position::START, usize::MAX).await;
    assert_eq!(huge, full, "read_query with limit usize::MAX");
}

/// `append_if` appends (at whatever the stream's version) when no event
/// matching its query was recorded after `after`: a tag or type no event
/// has, tags no one event carries together, a query of no items, matches
/// only at or before `after`.
pub async fn dcb_append_if_succeeds_when_nothing_matches<S: EventStore + Clone>(store: &S) {
    let (key, other, written) = (unique("key"), unique("other"), unique("written"));
    let stream = unique("dcb-if");
    let first = vec![noted(1, &[&key]), noted(2, &[&other])];
    let first = append(store, &stream, ExpectedVersion::NoStream, first).await;
    settle(store, first.position).await;
    let key_at = whole_stream(store, &stream).await[0].position;

    let never_type = format!("conformance.Never.{}", Uuid::new_v4().simple());
    let conditions: Vec<(&str, Query, Option<Position>)> = vec![
        ("a tag no event has", tagged(&[&unique("free")]), None),
        (
            "a type no event has",
            Query::new().or(QueryItem::types([never_type])),
            None,
        ),
        (
            "tags no one event carries together",
            tagged(&[&key, &other]),
            None,
        ),
        (
            "its tag on another type",
            Query::new().or(QueryItem::types([TICK]).and_tagged([&key])),
            None,
        ),
        ("no items", Query::new(), None),
        ("matches only at after", tagged(&[&key]), Some(key_at)),
        (
            "matches only before after",
            tagged(&[&key]),
            Some(first.position),
        ),
    ];
    let (mut at, mut previous) = (2, first.position);
    for (what, query, after) in conditions {
        let batch = vec![noted(at + 1, &[&written]), noted(at + 2, &[])];
        let done = append_if(store, &stream, batch.clone(), &query, after).await;
        assert!(!done.repeated, "{what}: a first append is not a repeat");
        assert_eq!(
            (done.first_version, done.stream_version),
            (at + 1, at + 2),
            "{what}: versions"
        );
        assert!(
            done.position > previous,
            "{what}: a later append has a later position"
        );
        let read = read_stream(store, &stream, at + 1, ALL).await;
        assert_eq!(
            recorded_ids(&read),
            ids(&batch),
            "{what}: the events read back"
        );
        (at, previous) = (at + 2, done.position);
    }
    let fresh = unique("dcb-if-new");
    let done = append_if(
        store,
        &fresh,
        vec![noted(1, &[&key])],
        &tagged(&[&written, &key]),
        None,
    )
    .await;
    assert_eq!(
        (done.first_version, done.stream_version),
        (1, 1),
        "append_if to a new stream"
    );
}

/// A condition matching events recorded after `after` fails with
/// `ConditionFailed` naming the first of them (over all the query's items,
/// past events that do not match), and writes nothing: not the stream, not
/// the log, not the command id, not the event ids.
pub async fn dcb_append_if_fails_at_the_first_match<S: EventStore + Clone>(store: &S) {
    let (key, second, other) = (unique("key"), unique("second"), unique("other"));
    let (a, b) = (unique("dcb-first"), unique("dcb-first"));
    let batch_a = vec![noted(0, &[&other]), noted(1, &[&key]), noted(2, &[&other])];
    append(store, &a, ExpectedVersion::NoStream, batch_a).await;
    let batch_b = vec![noted(3, &[&key, &second]), noted(4, &[&other])];
    append(store, &b, ExpectedVersion::NoStream, batch_b).await;
    let target = unique("dcb-first-target");
    let target_done = append(store, &target, ExpectedVersion::NoStream, ticks(1)).await;
    settle(store, target_done.position).await;
    let mut log = whole_stream(store, &a).await;
    log.extend(whole_stream(store, &b).await);
    let p: Vec<_> = log.iter().map(|e| e.position).collect();
    let head_before = head(store).await;

    let key_only = tagged(&[&key]);
    let key_or_second = tagged(&[&second]).or(QueryItem::tagged([&key]));
    let noted_second = Query::new().or(QueryItem::types([NOTED]).and_tagged([&second]));
    let attempts: Vec<(&str, &Query, Option<Position>, Position)> = vec![
        ("after None", &key_only, None, p[1]),
        ("after START", &key_only, Some(Position::START), p[1]),
        ("after an unmatched event", &key_only, Some(p[0]), p[1]),
        ("after the first match", &key_only, Some(p[1]), p[3]),
        (
            "after an unmatched event between",
            &key_only,
            Some(p[2]),
            p[3],
        ),
        ("its second item matching first", &key_or_second, None, p[1]),
        ("a type and a tag", &noted_second, Some(p[1]), p[3]),
    ];
    // The same event ids every time.
    let batch = vec![noted(5, &[&key]), noted(6, &[])];
    for (what, query, after, position) in attempts {
        let command_id = Uuid::new_v4();
        let options = AppendOptions {
            command_id: Some(command_id),
        };
        let result = store
            .append_if(&target, batch.clone(), condition(query, after), options)
            .await;
        if let Err(error) = &result {
            assert!(
                !error.is_transient(),
                "{what}: a failed condition is not transient"
            );
        }
        assert_condition_failed(result, position, what);
        assert_eq!(version(store, &target).await, 1, "{what}: wrote the stream");
        assert_eq!(head(store).await, head_before, "{what}: moved the head");
        let leaked = read_all(store, head_before, ALL, &EventFilter::all()).await;
        assert!(leaked.is_empty(), "{what}: wrote the log: {leaked:?}");
        let outcome = store.command_outcome(command_id).await;
        let outcome = outcome.unwrap_or_else(|e| panic!("command_outcome failed: {e}"));
        assert_eq!(outcome, None, "{what}: recorded the command id");
    }
    let done = append_if(store, &target, batch, &key_only, Some(p[3])).await;
    assert!(!done.repeated, "the ids of refused events were kept");
    assert_eq!(
        (done.first_version, done.stream_version),
        (2, 3),
        "the append after the refused ones"
    );
}

/// `after` bounds the condition: with `None`, any matching event fails it,
/// however old; a matching event at or before `after` never does.
pub async fn dcb_append_if_after_bounds_the_condition<S: EventStore + Clone>(store: &S) {
    let key = unique("key");
    let query = tagged(&[&key]);
    let stream = unique("dcb-after");
    let old = append(
        store,
        &stream,
        ExpectedVersion::NoStream,
        vec![noted(1, &[&key])],
    )
    .await;
    let mut unrelated = old;
    for n in 0..4 {
        let events = vec![noted(n, &[&unique("other")]), event(TICK, n)];
        unrelated = append(
            store,
            &unique("dcb-after-other"),
            ExpectedVersion::Any,
            events,
        )
        .await;
    }
    settle(store, unrelated.position).await;

    let result = try_append_if(store, &stream, vec![noted(2, &[&key])], &query, None).await;
    assert_condition_failed(result, old.position, "after None, with a match long ago");
    let at = append_if(
        store,
        &stream,
        vec![noted(3, &[&key])],
        &query,
        Some(old.position),
    )
    .await;
    assert_eq!(
        at.stream_version, 2,
        "a match at after does not fail the condition"
    );
    let later = append(
        store,
        &unique("dcb-after-other"),
        ExpectedVersion::Any,
        ticks(1),
    )
    .await;
    let before = append_if(
        store,
        &stream,
        vec![noted(4, &[&key])],
        &query,
        Some(later.position),
    )
    .await;
    assert_eq!(
        before.stream_version, 3,
        "a match before after does not fail the condition"
    );
    settle(store, before.position).await;

    let result = try_append_if(
        store,
        &stream,
        vec![noted(5, &[&key])],
        &query,
        Some(old.position),
    )
    .await;
    assert_condition_failed(
        result,
        at.position,
        "after the old match, with two newer ones",
    );
    let result = try_append_if(store, &stream, vec![noted(5, &[&key])], &query, None).await;
    assert_condition_failed(result, old.position, "after None, with three matches");
    assert_eq!(
        version(store, &stream).await,
        3,
        "failed conditions wrote the stream"
    );
}

/// A retried `append_if` (the same event ids, or the same command id)
/// answers the first outcome, `repeated`, and writes nothing, although its
/// own events now match its condition; a refused one records nothing, so
/// its retry runs.
pub async fn dcb_append_if_is_idempotent<S: EventStore + Clone>(store: &S) {
    let key = unique("claim");
    let query = tagged(&[&key]);
    let stream = unique("dcb-idempotent");
    let batch = vec![noted(1, &[&key]), noted(2, &[&key])];
    let first = append_if(store, &stream, batch.clone(), &query, None).await;
    settle(store, first.position).await;
    let head_after = head(store).await;
    let again = try_append_if(store, &stream, batch, &query, None).await;
    let again = again.unwrap_or_else(|e| panic!("a retry with the same event ids: {e}"));
    let outcome = |a: &Appended| (a.first_version, a.stream_version, a.position);
    assert!(
        again.repeated,
        "a retry with the same event ids is not marked repeated"
    );
    assert_eq!(
        outcome(&again),
        outcome(&first),
        "a retry by event ids: the first outcome"
    );
    assert_eq!(
        version(store, &stream).await,
        2,
        "a retry by event ids wrote events"
    );
    assert_eq!(
        head(store).await,
        head_after,
        "a retry by event ids moved the head"
    );

    // By command id, with fresh event ids (a retried decision encodes its
    // events anew).
    let (key, command) = (unique("claim"), Uuid::new_v4());
    let (query, stream) = (tagged(&[&key]), unique("dcb-idempotent"));
    let options = AppendOptions {
        command_id: Some(command),
    };
    let run = |n: u64, after: Option<Position>, options: AppendOptions| {
        let (store, stream, when) = (store.clone(), stream.clone(), condition(&query, after));
        let events = vec![noted(n, &[&key])];
        async move { store.append_if(&stream, events, when, options).await }
    };
    let first = run(1, None, options.clone()).await;
    let first = first.unwrap_or_else(|e| panic!("a first append_if with a command id: {e}"));
    settle(store, first.position).await;
    let head_after = head(store).await;
    let again = run(1, None, options).await;
    let again = again.unwrap_or_else(|e| panic!("a retry with the same command id: {e}"));
    assert!(
        again.repeated,
        "a retry with the same command id is not marked repeated"
    );
    assert_eq!(
        outcome(&again),
        outcome(&first),
        "a retry by command id: the first outcome"
    );
    assert_eq!(
        version(store, &stream).await,
        1,
        "a retry by command id wrote events"
    );
    assert_eq!(
        head(store).await,
        head_after,
        "a retry by command id moved the head"
    );
    let recorded = store.command_outcome(command).await;
    let recorded = recorded.unwrap_or_else(|e| panic!("command_outcome failed: {e}"));
    assert_eq!(
        recorded.as_ref().map(outcome),
        Some(outcome(&first)),
        "the command's outcome"
    );

    let refused_command = Uuid::new_v4();
    let options = AppendOptions {
        command_id: Some(refused_command),
    };
    let refused = run(2, None, options.clone()).await;
    assert_condition_failed(refused, first.position, "a condition on a claimed tag");
    let recorded = store.command_outcome(refused_command).await;
    let recorded = recorded.unwrap_or_else(|e| panic!("command_outcome failed: {e}"));
    assert_eq!(recorded, None, "a refused append recorded its command id");
    let retried = run(2, Some(first.position), options).await;
    let retried = retried.unwrap_or_else(|e| panic!("the retry of a refused command: {e}"));
    assert!(
        !retried.repeated,
        "the retry of a refused command is not a repeat"
    );
    assert_eq!(
        (retried.first_version, retried.stream_version),
        (2, 2),
        "the retry's versions"
    );
}
