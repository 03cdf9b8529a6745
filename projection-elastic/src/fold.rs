//! The pure part of a batch: which documents it touches, and what each one
//! becomes (no I/O).

use std::collections::HashMap;

use annals::RecordedEvent;
use annals::projection::Failed;

use crate::bulk::Op;
use crate::projection::{DocChange, DocumentProjection};

/// A document's state before a batch: its version (0: none yet) and the
/// document (`None`: none, or deleted).
pub(crate) type Base<D> = (u64, Option<D>);

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
    failed: &mut Vec<Failed>,
) -> Vec<(String, Vec<usize>)> {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for (i, event) in batch.iter().enumerate() {
        let Some(id) = projection.document_id(event) else {
            continue;
        };
        match by_id.get(&id) {
            Some(&g) => {
                let first = &batch[groups[g].1[0]];
                if first.stream_id != event.stream_id {
                    failed.push(Failed {
                        index: i,
                        error: format!(
                            "{} feeds document {id:?}, which stream {:?} already feeds: \
                             a document of {:?} must be fed by one stream only",
                            describe_event(event),
                            first.stream_id,
                            projection.name()
                        ),
                    });
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
/// `base` is the state known (`None`: none yet); `undecodable` holds the
/// stored documents that no longer decode. `None` when the document is
/// unchanged, or failed at its first new event (pushed to `failed`).
pub(crate) fn fold_document<P: DocumentProjection>(
    projection: &P,
    batch: &[RecordedEvent],
    id: String,
    events: &[usize],
    base: Option<Base<P::Doc>>,
    undecodable: &HashMap<String, (u64, String)>,
    failed: &mut Vec<Failed>,
) -> Option<(Write<P::Doc>, Op)> {
    if let Some((version, error)) = undecodable.get(&id) {
        // The stored document no longer decodes: a fold changed shape
        // without a version bump. Fail its first new event.
        if let Some(&i) = events.iter().find(|&&i| batch[i].stream_version > *version) {
            failed.push(Failed {
                index: i,
                error: format!(
                    "cannot apply {}: stored document {id:?} (version {version}) does \
                     not decode: {error}",
                    describe_event(&batch[i]),
                ),
            });
        }
        return None;
    }
    let (stored_version, base) = base.unwrap_or((0, None));
    let mut doc = base.clone();
    let mut changed = false;
    let mut first = None;
    let mut last_version = stored_version;
    // The fold takes the document by value. It is handed over without a
    // copy while every step changes it; the first step that does not
    // (unchanged, or failed) gets the state back by folding again from
    // the base, and from then on each step gets a copy.
    let mut folded: Vec<usize> = Vec::new();
    let mut copying = false;
    for &i in events {
        let event = &batch[i];
        if event.stream_version <= stored_version {
            continue; // already in the document
        }
        let input = if copying { doc.clone() } else { doc.take() };
        let outcome = projection.apply(input, event);
        if !copying && !matches!(outcome, Ok(DocChange::Upsert(_) | DocChange::Delete)) {
            doc = refold(projection, &base, &folded, batch);
            copying = true;
        }
        match outcome {
            Ok(DocChange::Upsert(new)) => {
                doc = Some(new);
                changed = true;
                folded.push(i);
            }
            Ok(DocChange::Delete) => {
                doc = None;
                changed = true;
                folded.push(i);
            }
            Ok(DocChange::Unchanged) => {}
            Err(why) => {
                failed.push(Failed {
                    index: i,
                    error: format!("cannot apply {}: {why}", describe_event(event)),
                });
                break;
            }
        }
        first.get_or_insert(i);
        last_version = event.stream_version;
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
        Err(e) => {
            failed.push(Failed {
                index: first,
                error: format!(
                    "cannot apply {}: document {id:?} does not encode: {e}",
                    describe_event(&batch[first])
                ),
            });
            None
        }
    }
}

/// The document after folding the events at `folded` (which all changed it
/// before) onto `base` again.
fn refold<P: DocumentProjection>(
    projection: &P,
    base: &Option<P::Doc>,
    folded: &[usize],
    batch: &[RecordedEvent],
) -> Option<P::Doc> {
    let mut doc = base.clone();
    for &i in folded {
        match projection.apply(doc.clone(), &batch[i]) {
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
    use annals::{Metadata, Position};
    use serde_json::{Value, json};
    use uuid::Uuid;

    /// Sums `n` of stream `s-<id>`; `n == 0` changes nothing, `n < 0` fails.
    struct Sum;

    impl DocumentProjection for Sum {
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
        fn event_types(&self) -> Vec<String> {
            vec!["N".into()]
        }
        fn document_id(&self, event: &RecordedEvent) -> Option<String> {
            event.stream_id.strip_prefix("s-").map(str::to_owned)
        }
        fn apply(&self, doc: Option<i64>, event: &RecordedEvent) -> Result<DocChange<i64>, String> {
            match event.payload.decode::<i64>().unwrap_or_default() {
                0 => Ok(DocChange::Unchanged),
                n if n < 0 => Err("negative".into()),
                n => Ok(DocChange::Upsert(doc.unwrap_or_default() + n)),
            }
        }
    }

    fn event(stream: &str, version: u64, n: i64) -> RecordedEvent {
        RecordedEvent {
            event_id: Uuid::new_v4(),
            stream_id: format!("s-{stream}"),
            stream_version: version,
            position: Position::START,
            event_type: "N".into(),
            schema_version: 1,
            payload: json!(n).into(),
            metadata: Metadata::default(),
            recorded_at: chrono::Utc::now(),
        }
    }

    /// The writes a batch needs, and the events that failed.
    fn run(
        batch: &[RecordedEvent],
        mut bases: HashMap<String, Base<i64>>,
    ) -> (Vec<Write<i64>>, Vec<Failed>) {
        let mut failed = Vec::new();
        let groups = group(&Sum, batch, &mut failed);
        let writes = groups
            .into_iter()
            .filter_map(|(id, events)| {
                let base = bases.remove(&id);
                fold_document(&Sum, batch, id, &events, base, &HashMap::new(), &mut failed)
            })
            .map(|(write, _)| write)
            .collect();
        (writes, failed)
    }

    #[test]
    fn folds_through_unchanged_and_failed_steps() {
        let batch = [
            event("a", 1, 1),
            event("a", 2, 0), // unchanged: the sum so far must survive it
            event("a", 3, 2),
            event("b", 4, 5),
            event("b", 5, -1), // fails: b keeps 5 + 10
            event("b", 6, 7),
        ];
        let bases = HashMap::from([("b".to_owned(), (3, Some(10)))]);
        let (writes, failed) = run(&batch, bases);
        let writes: Vec<_> = writes
            .iter()
            .map(|w| (w.id.as_str(), w.version, w.doc, w.first_event))
            .collect();
        assert_eq!(writes, [("a", 3, Some(3), 0), ("b", 4, Some(15), 3)]);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].index, 4);
    }
}
