//! The [`EventStore`] implementation of [`PgEventStore`]: each method calls
//! the function of the same name in the module named as core's (appends in
//! [`append`], reads in [`read`], queries in [`query`], and so on; see the [crate
//! documentation](crate#where-things-live)).

use annals::{
    AppendCondition, AppendOptions, Appended, EventFilter, EventStore, EventStream,
    ExpectedVersion, NewEvent, Position, Query, RecordedEvent, Snapshot, StoreError,
};
use async_trait::async_trait;
use uuid::Uuid;

use crate::handle::PgEventStore;
use crate::{append, checkpoint, query, read, snapshot, subscription};

#[async_trait]
impl EventStore for PgEventStore {
    async fn append_with(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> Result<Appended, StoreError> {
        append::append_with(self, stream, expected, events, options).await
    }

    async fn command_outcome(&self, command_id: Uuid) -> Result<Option<Appended>, StoreError> {
        read::command_outcome(self, command_id).await
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read::read_stream(self, stream, from_version, limit).await
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        read::stream_version(self, stream).await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read::read_all(self, after, limit, filter).await
    }

    async fn head(&self) -> Result<Position, StoreError> {
        read::head(self).await
    }

    fn subscribe(&self, after: Position, filter: EventFilter) -> EventStream {
        subscription::subscribe(self, after, filter)
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        snapshot::save_snapshot(self, snapshot).await
    }

    async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, StoreError> {
        snapshot::load_snapshot(self, stream).await
    }

    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError> {
        checkpoint::save_checkpoint(self, name, position).await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError> {
        checkpoint::load_checkpoint(self, name).await
    }

    async fn read_query(
        &self,
        query: &Query,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        query::read_query(self, query, after, limit).await
    }

    async fn append_if(
        &self,
        stream: &str,
        events: Vec<NewEvent>,
        condition: AppendCondition,
        options: AppendOptions,
    ) -> Result<Appended, StoreError> {
        append::append_if(self, stream, events, condition, options).await
    }
}
