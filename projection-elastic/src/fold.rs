//! The pure part of a batch: which documents it touches, and what each one
//! becomes (no I/O).

use std::collections::HashMap;

use annals::RecordedEvent;
use annals::projection::FailedEvent;

use crate::bulk::Op;
use crate::error::EventFailure;
use crate::projection::{DocChange, DocumentProjection};

/// A document's state before a batch: its version (0: none yet) and the
/// document (`None`: none, or deleted).
pub(crate) type Base<D> = (u64, Option<D>);

/// What a document's events in a batch are folded onto.
#[derive(Debug)]
pub(crate) enum Start<D> {
    /// The state before the batch.
    Known(Base<D>),
    /// The stored document, at `version`, no longer decodes into the
    /// document type: a fold changed its shape without a version bump.
    Undecodable {
        version: u64,
        error: serde_json::Error,
    },
}

impl<D> Default for Start<D> {
    /// No document yet.
    fn default() -> Self {
        Start::Known((0, None))
    }
}

/// One document write a batch needs.
#[derive(Debug)]
pub(crate) struct Write<D> {
    pub(crate) id: String,
    /// The stream version of the last event folded in.
    pub(crate) version: u64,
    /// The new state (`None`: deleted).
    pub(crate) doc: Option<D>,
    /// Bytes of its `_bulk` operation.
    pub(crate) bytes: usize,
    /// The batch index of the first event folded into it.
    pub(crate) first_event: usize,
}

/// The documents a batch touches, in order of first appearance, each with the
/// batch indexes of its events in log order. Events of a second stream
/// feeding an already grouped document fail.
pub(crate) fn group<P: DocumentProjection>(
    projection: &P,
    batch: &[RecordedEvent],
    failed: &mut Vec<FailedEvent>,
) -> Vec<(String, Vec<usize>)> {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for (i, event) in batch.iter().enumerate() {
        let Some(id) = projection.document_id(&event.stream_id) else {
            continue;
        };
        match by_id.get(&id) {
            Some(&g) => {
                let first = &batch[groups[g].1[0]];
                if first.stream_id != event.stream_id {
                    let failure = EventFailure::SecondStream {
                        event: describe_event(event),
                        id,
                        other: first.stream_id.clone(),
                        projection: projection.name().to_owned(),
                    };
                    failed.push(failure.at(i));
                    continue;
                }
                groups[g].1.push(i);
            }
            None => {
                by_id.insert(id.clone(), groups.len());
                groups.push((id, vec![i]));
            }
        }
    }
    groups
}

/// Folds one document's new events (`events`: batch indexes, in log order)
/// onto its state before the batch (pure: no I/O), and encodes its write.
/// Each event is decoded only when it is folded: events the document already
/// has are skipped unread. `None` when the document is unchanged, or failed
/// at its first new event (pushed to `failed`).
pub(crate) fn fold_document<P: DocumentProjection>(
    projection: &P,
    batch: &[RecordedEvent],
    id: String,
    events: &[usize],
    start: Start<P::Doc>,
    failed: &mut Vec<FailedEvent>,
) -> Option<(Write<P::Doc>, Op)> {
    let (stored_version, base) = match start {
        Start::Known(base) => base,
        Start::Undecodable { version, error } => {
            // Fail its first new event: folding onto nothing would lose
            // the document's history.
            if let Some(&i) = events.iter().find(|&&i| batch[i].stream_version > version) {
                let failure = EventFailure::StoredUndecodable {
                    event: describe_event(&batch[i]),
                    id,
                    version,
                    source: error,
                };
                failed.push(failure.at(i));
            }
            return None;
        }
    };
    let mut doc = base.clone();
    let mut changed = false;
    let mut first = None;
    let mut last_version = stored_version;
    // The fold takes the document by value. It is handed over without a
    // copy while every step changes it; the first step that does not
    // (unchanged, or failed) gets the state back by folding again from
    // the base, and from then on each step gets a copy.
    let mut folded: Vec<(usize, P::Event)> = Vec::new();
    let mut copying = false;
    for &i in events {
        let envelope = &batch[i];
        if envelope.stream_version <= stored_version {
            continue; // already in the document
        }
        let event = match envelope.decode::<P::Event>() {
            Ok(event) => event,
            Err(source) => {
                let failure = EventFailure::Decode {
                    event: describe_event(envelope),
                    target: std::any::type_name::<P::Event>(),
                    source,
                };
                failed.push(failure.at(i));
                break;
            }
        };
        let input = if copying { doc.clone() } else { doc.take() };
        let outcome = projection.fold(input, &event, envelope);
        let changes = matches!(outcome, Ok(DocChange::Upsert(_) | DocChange::Delete));
        if !copying && !changes {
            doc = refold(projection, &base, &folded, batch);
            copying = true;
            folded = Vec::new(); // not needed again: each step gets a copy
        }
        match outcome {
            Ok(DocChange::Upsert(new)) => doc = Some(new),
            Ok(DocChange::Delete) => doc = None,
            Ok(DocChange::Unchanged) => {}
            Err(source) => {
                let failure = EventFailure::Fold {
                    event: describe_event(envelope),
                    source,
                };
                failed.push(failure.at(i));
                break;
            }
        }
        changed |= changes;
        if !copying {
            folded.push((i, event));
        }
        first.get_or_insert(i);
        last_version = envelope.stream_version;
    }
    let first = first.filter(|_| changed)?;
    let op = match &doc {
        Some(doc) => Op::index(&id, last_version, doc),
        None => Op::delete(&id, last_version),
    };
    match op {
        Ok(op) => Some((
            Write {
                id,
                version: last_version,
                doc,
                bytes: op.len(),
                first_event: first,
            },
            op,
        )),
        Err(source) => {
            let failure = EventFailure::Unencodable {
                event: describe_event(&batch[first]),
                id,
                source,
            };
            failed.push(failure.at(first));
            None
        }
    }
}

/// The document after folding the `folded` events (which all changed it
/// before) onto `base` again.
fn refold<P: DocumentProjection>(
    projection: &P,
    base: &Option<P::Doc>,
    folded: &[(usize, P::Event)],
    batch: &[RecordedEvent],
) -> Option<P::Doc> {
    let mut doc = base.clone();
    for (i, event) in folded {
        match projection.fold(doc.clone(), event, &batch[*i]) {
            Ok(DocChange::Upsert(new)) => doc = Some(new),
            Ok(DocChange::Delete) => doc = None,
            // A pure fold repeats itself; keep what there is otherwise.
            Ok(DocChange::Unchanged) | Err(_) => {}
        }
    }
    doc
}

/// `FlightCancelled (schema v1) at version 3 of stream "flight-…" (position 7.9)`.
pub(crate) fn describe_event(event: &RecordedEvent) -> String {
    format!(
        "{} (schema v{}) at version {} of stream {:?} (position {})",
        event.event_type,
        event.schema_version,
        event.stream_version,
        event.stream_id,
        event.position
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FoldError;
    use annals::error::report;
    use annals::{DomainEvent, Metadata, Position};
    use serde_json::{Value, json};
    use uuid::Uuid;

    #[derive(Debug, DomainEvent)]
    enum SumEvent {
        N(i64),
    }

    /// Sums `n` of stream `s-<id>`; `n == 0` changes nothing, `n < 0` fails.
    struct Sum;

    #[derive(Debug, thiserror::Error)]
    #[error("{n} cannot be added")]
    struct Negative {
        n: i64,
        #[source]
        source: std::num::TryFromIntError,
    }

    impl DocumentProjection for Sum {
        type Event = SumEvent;
        type Doc = i64;
        fn name(&self) -> &str {
            "sum"
        }
        fn version(&self) -> u32 {
            1
        }
        fn mappings(&self) -> Value {
            json!({})
        }
        fn document_id(&self, stream_id: &str) -> Option<String> {
            stream_id.strip_prefix("s-").map(str::to_owned)
        }
        fn fold(
            &self,
            doc: Option<i64>,
            event: &SumEvent,
            _: &RecordedEvent,
        ) -> Result<DocChange<i64>, FoldError> {
            let SumEvent::N(n) = *event;
            let n = u64::try_from(n).map_err(|source| Negative { n, source })?;
            Ok(match n {
                0 => DocChange::Unchanged,
                n => DocChange::Upsert(doc.unwrap_or_default() + n as i64),
            })
        }
    }

    fn event(stream: &str, version: u64, payload: Value) -> RecordedEvent {
        RecordedEvent {
            event_id: Uuid::new_v4(),
            stream_id: format!("s-{stream}"),
            stream_version: version,
            position: Position::START,
            event_type: "N".into(),
            schema_version: 1,
            payload: payload.into(),
            metadata: Metadata::default(),
            tags: Vec::new(),
            recorded_at: chrono::Utc::now(),
        }
    }

    /// A write: document id, version, document, its first event.
    type Written = (String, u64, Option<i64>, usize);

    /// The writes a batch needs, and the events that failed.
    fn run(
        batch: &[RecordedEvent],
        mut bases: HashMap<String, Base<i64>>,
    ) -> (Vec<Written>, Vec<FailedEvent>) {
        let mut failed = Vec::new();
        let groups = group(&Sum, batch, &mut failed);
        let writes = groups
            .into_iter()
            .filter_map(|(id, events)| {
                let start = bases.remove(&id).map(Start::Known).unwrap_or_default();
                fold_document(&Sum, batch, id, &events, start, &mut failed)
            })
            .map(|(w, _)| (w.id, w.version, w.doc, w.first_event))
            .collect();
        (writes, failed)
    }

    fn w(id: &str, version: u64, doc: i64, first: usize) -> Written {
        (id.to_owned(), version, Some(doc), first)
    }

    #[test]
    fn folds_through_unchanged_and_failed_steps() {
        let batch = [
            event("a", 1, json!(1)),
            event("a", 2, json!(0)), // unchanged: the sum so far must survive it
            event("a", 3, json!(2)),
            event("b", 4, json!(5)),
            event("b", 5, json!(-1)), // fails: b keeps 5 + 10
            event("b", 6, json!(7)),
        ];
        let bases = HashMap::from([("b".to_owned(), (3, Some(10)))]);
        let (writes, failed) = run(&batch, bases);
        assert_eq!(writes, [w("a", 3, 3, 0), w("b", 4, 15, 3)]);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].index, 4);
        // The event, the fold's error and its cause.
        for part in [
            "cannot apply N (schema v1) at version 5 of stream \"s-b\"",
            "-1 cannot be added: out of range integral type conversion",
        ] {
            let error = report(&*failed[0].error);
            assert!(error.contains(part), "{error:?}");
        }
    }

    #[test]
    fn an_event_that_does_not_decode_fails_and_stops_its_document() {
        let batch = [
            event("a", 1, json!(1)),
            event("a", 2, json!("two")), // not an i64
            event("a", 3, json!(3)),
            event("b", 1, json!(4)),
            event("c", 7, json!("seven")), // already in c: never read
        ];
        let bases = HashMap::from([("c".to_owned(), (7, Some(1)))]);
        let (writes, failed) = run(&batch, bases);
        assert_eq!(writes, [w("a", 1, 1, 0), w("b", 1, 4, 3)]);
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].index, 1);
        let error = report(&*failed[0].error);
        for part in [
            "cannot decode N (schema v1) at version 2 of stream \"s-a\"",
            "SumEvent",
            "payload of \"N\" (schema version 1) does not decode",
            "invalid type: string \"two\", expected i64",
        ] {
            assert!(error.contains(part), "{error:?} lacks {part:?}");
        }
        assert_eq!(error.matches("invalid type").count(), 1, "{error}");
    }

    #[test]
    fn a_stored_document_that_does_not_decode_fails_its_first_new_event() {
        let batch = [event("a", 2, json!(1)), event("a", 3, json!(1))];
        let error = serde_json::from_value::<i64>(json!("x")).unwrap_err();
        let start = Start::Undecodable { version: 2, error };
        let mut failed = Vec::new();
        let written = fold_document(&Sum, &batch, "a".into(), &[0, 1], start, &mut failed);
        assert!(written.is_none());
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].index, 1);
        let error = report(&*failed[0].error);
        assert!(
            error.contains("stored document \"a\" (version 2) does not decode: invalid type"),
            "{error}"
        );
    }
}
