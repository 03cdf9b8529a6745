//! The inbox: a consumer processes each message id once, its effect and
//! the record of the id committed together in one PostgreSQL transaction.

mod consumer;
mod migrate;

use std::fmt;

use annals::error::BoxError;
use async_trait::async_trait;
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::AMQPValue;
use serde::de::DeserializeOwned;
use sqlx::{PgPool, PgTransaction};

use crate::integration::{KEY_HEADER, VERSION_HEADER};

pub use consumer::{
    ATTEMPTS_HEADER, CONSUMER_HEADER, DEAD_LETTER_REASON_HEADER, DEAD_LETTERED_AT_HEADER,
    Subscription,
};

/// Records the message ids a consumer has processed (table `annals_inbox`),
/// so that each message's effect happens once however often the message
/// is delivered.
///
/// [`process`](Self::process) runs one message: in one transaction it
/// records the id and runs the [`Handler`] with that transaction, so the
/// handler's writes (an append with
/// `PgEventStore::append_in_transaction`, a row of a read model) commit
/// with the record or not at all. A message already recorded is not run
/// again. [`consume`](Self::consume) does it for every message of a
/// RabbitMQ queue and acknowledges each one only after its transaction
/// committed: a crash before the acknowledgement redelivers a message the
/// inbox then drops.
///
/// Call [`migrate`](Self::migrate) once at start: it creates the table (a
/// migration of this crate's own, recorded in `annals_inbox_migrations`) in
/// the first schema of the pool's `search_path`.
#[derive(Clone)]
pub struct Inbox {
    pool: PgPool,
    consumer: String,
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

/// What [`Inbox::process`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    /// The effect ran and committed with the message's record.
    Done,
    /// The message id was already recorded: nothing ran (the copy is
    /// counted in the record's `duplicates`).
    Duplicate,
}

/// What the inbox holds for one consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InboxStats {
    /// Message ids recorded.
    pub messages: u64,
    /// Copies received of messages already recorded, in all.
    pub duplicates: u64,
    /// Messages received more than once.
    pub redelivered_messages: u64,
}

/// A consumer's effect for one message, run inside the inbox's transaction.
///
/// ```
/// use annals_rabbitmq::{EffectError, Handler, Message};
/// use sqlx::PgTransaction;
///
/// struct CountConfirmations;
///
/// #[async_trait::async_trait]
/// impl Handler for CountConfirmations {
///     async fn handle(&self, message: &Message, tx: &mut PgTransaction<'_>) -> Result<(), EffectError> {
///         #[derive(serde::Deserialize)]
///         struct Confirmed { booking_id: uuid::Uuid }
///         // A body that does not decode will never decode: straight to the dead letters.
///         let confirmed: Confirmed = message.json().map_err(EffectError::rejected)?;
///         sqlx::query("INSERT INTO confirmations (booking_id) VALUES ($1)")
///             .bind(confirmed.booking_id)
///             .execute(&mut **tx)
///             .await?; // a lost connection is transient, other database errors count as failures
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Runs the effect of `message`, writing through `tx` (committed by the
    /// inbox with the message's record; rolled back when this fails).
    async fn handle(
        &self,
        message: &Message,
        tx: &mut PgTransaction<'_>,
    ) -> Result<(), EffectError>;
}

/// Why a [`Handler`] failed.
#[derive(Debug, thiserror::Error)]
pub enum EffectError {
    /// Something it needs is unreachable (the database restarting): the
    /// message is retried with backoff, without counting as an attempt.
    #[error("transient failure: {0}")]
    Transient(#[source] BoxError),
    /// This message failed: it is retried, and after the subscription's
    /// `max_attempts` dead-lettered with the reason.
    #[error("{0}")]
    Failed(#[source] BoxError),
    /// This message can never succeed (a body that does not decode, an
    /// unknown version): dead-lettered at once with the reason.
    #[error("rejected: {0}")]
    Rejected(#[source] BoxError),
}

impl EffectError {
    /// A failure that counts as an attempt.
    pub fn failed(error: impl Into<BoxError>) -> Self {
        EffectError::Failed(error.into())
    }

    /// A transient failure.
    pub fn transient(error: impl Into<BoxError>) -> Self {
        EffectError::Transient(error.into())
    }

    /// A message that can never succeed.
    pub fn rejected(error: impl Into<BoxError>) -> Self {
        EffectError::Rejected(error.into())
    }
}

impl From<sqlx::Error> for EffectError {
    /// A database that cannot be reached (or a transaction the database
    /// rolled back: serialization failures, deadlocks) is transient; any
    /// other database error is a failed attempt.
    fn from(error: sqlx::Error) -> Self {
        if is_transient(&error) {
            EffectError::Transient(Box::new(error))
        } else {
            EffectError::Failed(Box::new(error))
        }
    }
}

impl From<annals::StoreError> for EffectError {
    /// An unreachable store is transient; anything else a failed attempt.
    fn from(error: annals::StoreError) -> Self {
        if error.is_transient() {
            EffectError::Transient(Box::new(error))
        } else {
            EffectError::Failed(Box::new(error))
        }
    }
}

/// Why [`Inbox::process`] did not process a message.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The inbox's own statements failed (recording the id, committing).
    #[error("the inbox's transaction failed")]
    Database(#[source] sqlx::Error),
    /// The handler failed; nothing was recorded.
    #[error("the effect failed")]
    Effect(#[source] EffectError),
}

impl ProcessError {
    /// Whether retrying later may succeed without counting as an attempt.
    pub fn is_transient(&self) -> bool {
        match self {
            ProcessError::Database(error) => is_transient(error),
            ProcessError::Effect(EffectError::Transient(_)) => true,
            ProcessError::Effect(_) => false,
        }
    }
}

/// Why the inbox could not be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// A statement failed.
    #[error("the inbox's database failed")]
    Database(#[source] sqlx::Error),
    /// Its schema could not be migrated.
    #[error("cannot migrate the inbox's schema")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The broker refused the subscription's exchanges, queues or bindings
    /// (different arguments than an existing queue, no permission):
    /// retrying cannot help.
    #[error("the broker refused the subscription of {queue:?}")]
    Subscription {
        /// The queue.
        queue: String,
        /// What the broker said.
        #[source]
        source: crate::BrokerError,
    },
    /// The broker could not be reached to declare the subscription.
    #[error("cannot reach the broker")]
    Broker(#[source] crate::BrokerError),
}

/// Whether a database error is a lost or refused connection, a shutdown,
/// or a transaction the server rolled back on its own (`40xxx`).
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 40: transaction rollback; 57P01..57P05:
            // shutdowns and terminated backends; 53300: too many connections.
            code.starts_with("08")
                || code.starts_with("40")
                || matches!(&*code, "57P01" | "57P02" | "57P03" | "57P05" | "53300")
        }),
        _ => false,
    }
}

const RECORD: &str = "INSERT INTO annals_inbox (consumer, message_id) VALUES ($1, $2) \
                      ON CONFLICT (consumer, message_id) DO NOTHING";
const COUNT_DUPLICATE: &str = "UPDATE annals_inbox SET duplicates = duplicates + 1 \
                               WHERE consumer = $1 AND message_id = $2";

impl Inbox {
    /// The inbox of `consumer` (the name that keeps its message ids apart
    /// from other consumers' in the same table) on `pool`.
    pub fn new(pool: PgPool, consumer: impl Into<String>) -> Self {
        Self {
            pool,
            consumer: consumer.into(),
        }
    }

    /// The consumer's name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates or updates the inbox's table: this crate's migrations not
    /// yet recorded in `annals_inbox_migrations`, each in a transaction with
    /// its record, under an advisory lock (so processes starting together
    /// migrate once). Idempotent.
    pub async fn migrate(&self) -> Result<(), InboxError> {
        migrate::migrate(&self.pool).await
    }

    /// Processes `message` once: in one transaction, records its id and
    /// runs `handler`; commits both, or neither when the handler fails. A
    /// message id already recorded runs nothing ([`Processed::Duplicate`]).
    ///
    /// Two deliveries of one message at the same time are safe: the second
    /// waits on the first one's record and, once it commits, finds it.
    pub async fn process<H: Handler + ?Sized>(
        &self,
        message: &Message,
        handler: &H,
    ) -> Result<Processed, ProcessError> {
        let mut tx = self.pool.begin().await.map_err(ProcessError::Database)?;
        let recorded = sqlx::query(RECORD)
            .bind(&self.consumer)
            .bind(&message.message_id)
            .execute(&mut *tx)
            .await
            .map_err(ProcessError::Database)?
            .rows_affected();
        if recorded == 0 {
            sqlx::query(COUNT_DUPLICATE)
                .bind(&self.consumer)
                .bind(&message.message_id)
                .execute(&mut *tx)
                .await
                .map_err(ProcessError::Database)?;
            tx.commit().await.map_err(ProcessError::Database)?;
            return Ok(Processed::Duplicate);
        }
        // On failure the transaction is dropped, which rolls it back.
        handler
            .handle(message, &mut tx)
            .await
            .map_err(ProcessError::Effect)?;
        tx.commit().await.map_err(ProcessError::Database)?;
        Ok(Processed::Done)
    }

    /// Whether `message_id` is recorded.
    pub async fn contains(&self, message_id: &str) -> Result<bool, InboxError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM annals_inbox WHERE consumer = $1 AND message_id = $2)",
        )
        .bind(&self.consumer)
        .bind(message_id)
        .fetch_one(&self.pool)
        .await
        .map_err(InboxError::Database)
    }

    /// How many messages are recorded, and how many copies came again.
    pub async fn stats(&self) -> Result<InboxStats, InboxError> {
        let (messages, duplicates, redelivered): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*), coalesce(sum(duplicates), 0)::bigint, count(*) FILTER (WHERE duplicates > 0) \
             FROM annals_inbox WHERE consumer = $1",
        )
        .bind(&self.consumer)
        .fetch_one(&self.pool)
        .await
        .map_err(InboxError::Database)?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(InboxStats {
            messages: count(messages),
            duplicates: count(duplicates),
            redelivered_messages: count(redelivered),
        })
    }
}

/// A message as a [`Handler`] sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The AMQP `message_id`: what the inbox records.
    pub message_id: String,
    /// The AMQP `type`: an integration event's name.
    pub name: Option<String>,
    /// An integration event's version (the `x-annals-version` header).
    pub version: Option<u32>,
    /// Its ordering key (the `x-annals-key` header).
    pub key: Option<String>,
    /// The exchange it was published to.
    pub exchange: String,
    /// The routing key it was published with.
    pub routing_key: String,
    /// Whether the broker delivered it before (to this or another consumer).
    pub redelivered: bool,
    /// The body.
    pub body: Vec<u8>,
    /// All its AMQP properties and headers.
    pub properties: BasicProperties,
}

/// Why a delivery is not a message the inbox can process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Without an id the inbox cannot tell copies apart.
    #[error("the message has no message_id: it cannot be processed once only")]
    NoMessageId,
}

impl Message {
    /// A message with `message_id` and `body` and nothing else: for tests
    /// and for calling [`Inbox::process`] directly.
    pub fn new(message_id: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self {
            message_id: message_id.into(),
            name: None,
            version: None,
            key: None,
            exchange: String::new(),
            routing_key: String::new(),
            redelivered: false,
            body: body.into(),
            properties: BasicProperties::default(),
        }
    }

    /// Sets the name and version, as an integration event's.
    pub fn named(mut self, name: impl Into<String>, version: u32) -> Self {
        self.name = Some(name.into());
        self.version = Some(version);
        self
    }

    /// The body decoded from JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The message of a delivery.
    pub fn from_delivery(delivery: &Delivery) -> Result<Self, MessageError> {
        let properties = &delivery.properties;
        let message_id = properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .filter(|id| !id.is_empty())
            .ok_or(MessageError::NoMessageId)?;
        let header = |name: &str| {
            properties
                .headers()
                .as_ref()
                .and_then(|headers| headers.inner().get(name))
        };
        let version = header(VERSION_HEADER).and_then(|value| match value {
            AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
            AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
            AMQPValue::LongUInt(n) => Some(*n),
            AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
            AMQPValue::ShortUInt(n) => Some(u32::from(*n)),
            AMQPValue::ShortShortUInt(n) => Some(u32::from(*n)),
            _ => None,
        });
        Ok(Self {
            message_id,
            name: properties.kind().as_ref().map(|k| k.as_str().to_owned()),
            version,
            key: header(KEY_HEADER).and_then(text),
            exchange: delivery.exchange.as_str().to_owned(),
            routing_key: delivery.routing_key.as_str().to_owned(),
            redelivered: delivery.redelivered,
            body: delivery.data.clone(),
            properties: properties.clone(),
        })
    }
}

/// A header's text, from either kind of AMQP string.
pub(crate) fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::FieldTable;

    use super::*;

    #[test]
    fn a_delivery_becomes_a_message() {
        let mut headers = FieldTable::default();
        headers.insert(VERSION_HEADER.into(), AMQPValue::LongLongInt(2));
        headers.insert(KEY_HEADER.into(), AMQPValue::LongString("b-1".into()));
        let mut delivery = Delivery::mock(
            1,
            "ex".into(),
            "booking.confirmed.v2".into(),
            true,
            b"{}".to_vec(),
        );
        delivery.properties = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_type("booking.confirmed".into())
            .with_headers(headers);
        let message = Message::from_delivery(&delivery).unwrap();
        assert_eq!(message.message_id, "m-1");
        assert_eq!(message.name.as_deref(), Some("booking.confirmed"));
        assert_eq!(message.version, Some(2));
        assert_eq!(message.key.as_deref(), Some("b-1"));
        assert_eq!(message.routing_key, "booking.confirmed.v2");
        assert!(message.redelivered);
        assert_eq!(
            message.json::<serde_json::Value>().unwrap(),
            serde_json::json!({})
        );
    }

    #[test]
    fn a_delivery_without_an_id_cannot_be_processed_once() {
        let delivery = Delivery::mock(1, "ex".into(), "k".into(), false, Vec::new());
        assert_eq!(
            Message::from_delivery(&delivery),
            Err(MessageError::NoMessageId)
        );
    }

    #[test]
    fn lost_connections_are_transient_and_constraint_violations_are_not() {
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(matches!(
            EffectError::from(sqlx::Error::PoolClosed),
            EffectError::Transient(_)
        ));
        assert!(matches!(
            EffectError::from(sqlx::Error::RowNotFound),
            EffectError::Failed(_)
        ));
    }
}
