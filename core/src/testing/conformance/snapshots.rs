//! Snapshots and checkpoints: saved, replaced and loaded per stream or name.

use serde_json::json;

use super::helpers::*;
use crate::position::Position;
use crate::store::{EventStore, ExpectedVersion, Snapshot};

/// Snapshots are per stream; saving replaces; an unknown stream has none.
pub async fn snapshots_save_replace_load<S: EventStore + Clone>(store: &S) {
    let stream = unique("snap");
    let other = unique("snap-other");
    let load = |s: String| async move {
        store
            .load_snapshot(&s)
            .await
            .unwrap_or_else(|e| panic!("load_snapshot({s:?}) failed: {e}"))
    };
    let save = |snapshot: Snapshot| async move {
        store
            .save_snapshot(snapshot)
            .await
            .unwrap_or_else(|e| panic!("save_snapshot failed: {e}"))
    };
    assert_eq!(
        load(stream.clone()).await,
        None,
        "an unknown stream has no snapshot"
    );

    let first = Snapshot {
        stream_id: stream.clone(),
        stream_version: 3,
        schema_version: 1,
        state: json!({"seats": ["1A", "1B"], "open": true}),
    };
    save(first.clone()).await;
    assert_eq!(
        load(stream.clone()).await,
        Some(first.clone()),
        "the snapshot saved"
    );

    let replaced = Snapshot {
        stream_id: stream.clone(),
        stream_version: 7,
        schema_version: 2,
        state: json!({"seats": [], "open": false, "n": 7}),
    };
    save(replaced.clone()).await;
    assert_eq!(
        load(stream.clone()).await,
        Some(replaced.clone()),
        "saving replaces"
    );

    let theirs = Snapshot {
        stream_id: other.clone(),
        stream_version: 1,
        schema_version: 1,
        state: json!(null),
    };
    save(theirs.clone()).await;
    assert_eq!(
        load(other).await,
        Some(theirs),
        "the other stream's snapshot"
    );
    assert_eq!(
        load(stream).await,
        Some(replaced),
        "snapshots of other streams interfere"
    );
}

/// Checkpoints are per name; saving overwrites (even backwards); an unknown
/// name has none.
pub async fn checkpoints_save_overwrite_load<S: EventStore + Clone>(store: &S) {
    let name = unique("projection");
    let other = unique("projection");
    let load = |n: String| async move {
        store
            .load_checkpoint(&n)
            .await
            .unwrap_or_else(|e| panic!("load_checkpoint({n:?}) failed: {e}"))
    };
    let save = |n: String, p: Position| async move {
        store
            .save_checkpoint(&n, p)
            .await
            .unwrap_or_else(|e| panic!("save_checkpoint({n:?}, {p}) failed: {e}"))
    };
    assert_eq!(load(name.clone()).await, None, "an unknown checkpoint");

    let first = append(store, &unique("cp"), ExpectedVersion::Any, ticks(1))
        .await
        .position;
    let second = append(store, &unique("cp"), ExpectedVersion::Any, ticks(2))
        .await
        .position;
    save(name.clone(), first).await;
    assert_eq!(
        load(name.clone()).await,
        Some(first),
        "the checkpoint saved"
    );
    save(name.clone(), second).await;
    assert_eq!(load(name.clone()).await, Some(second), "saving overwrites");
    save(other.clone(), first).await;
    assert_eq!(
        load(name.clone()).await,
        Some(second),
        "checkpoints of other names interfere"
    );
    save(name.clone(), Position::START).await;
    assert_eq!(
        load(name).await,
        Some(Position::START),
        "saving overwrites, even backwards"
    );
    assert_eq!(load(other).await, Some(first), "the other checkpoint");
}
