//! The broker connection: connecting within a bound, the errors of talking
//! to RabbitMQ, and the circuit that keeps a relay from trying while the
//! broker is known to be down.

use std::time::Duration;

use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::time::Instant;

use crate::integration::{EncodeError, short};

/// What went wrong talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The connection could not be made.
    #[error("cannot connect to the broker at {url}")]
    Connect {
        /// The URL, without its password.
        url: String,
        /// What the client said.
        #[source]
        source: lapin::Error,
    },
    /// An operation (connecting, declaring, publishing, confirming) took too long.
    #[error("the broker did not answer {what} within {timeout:?}")]
    Timeout {
        /// The operation.
        what: &'static str,
        /// How long it was given.
        timeout: Duration,
    },
    /// The broker refused an operation, or the connection broke during it.
    #[error("{what} failed")]
    Amqp {
        /// The operation.
        what: &'static str,
        /// What the client said.
        #[source]
        source: lapin::Error,
    },
    /// A recent failure says the broker is down: no attempt until the
    /// circuit's cooldown has passed.
    #[error("the broker is known to be down (circuit open for another {0:?})")]
    CircuitOpen(Duration),
    /// The broker refused to take responsibility for messages (`basic.nack`).
    #[error("the broker did not confirm {count} of {published} messages (nack)")]
    Nacked {
        /// Messages nacked.
        count: usize,
        /// Messages published.
        published: usize,
    },
    /// The broker ended what was under way (it cancelled a consumer), or a
    /// part of this process stopped.
    #[error("{0} ended")]
    Ended(&'static str),
    /// A name or key does not fit AMQP.
    #[error(transparent)]
    Message(#[from] EncodeError),
}

impl BrokerError {
    pub(crate) fn amqp(what: &'static str) -> impl FnOnce(lapin::Error) -> Self {
        move |source| BrokerError::Amqp { what, source }
    }
}

/// `url` without its password, for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// Runs `operation`, at most `timeout`.
pub(crate) async fn bounded<T>(
    what: &'static str,
    timeout: Duration,
    operation: impl Future<Output = lapin::Result<T>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(timeout, operation).await {
        Ok(result) => result.map_err(BrokerError::amqp(what)),
        Err(_) => Err(BrokerError::Timeout { what, timeout }),
    }
}

/// Connects to `url` within `timeout`, naming the connection `name` (as
/// the broker's management tools show it).
pub(crate) async fn connect(
    url: &str,
    name: &str,
    timeout: Duration,
) -> Result<Connection, BrokerError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(timeout, Connection::connect(url, properties)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(source)) => Err(BrokerError::Connect {
            url: redact(url),
            source,
        }),
        Err(_) => Err(BrokerError::Timeout {
            what: "the connection",
            timeout,
        }),
    }
}

/// Declares `exchange` as a durable topic exchange: what the relay
/// publishes to and consumers bind to (declaring is idempotent while the
/// arguments agree).
pub(crate) async fn declare_exchange(
    channel: &Channel,
    exchange: &str,
    timeout: Duration,
) -> Result<(), BrokerError> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    bounded(
        "declaring the exchange",
        timeout,
        channel.exchange_declare(
            short("exchange name", exchange)?,
            ExchangeKind::Topic,
            options,
            FieldTable::default(),
        ),
    )
    .await
}

/// A channel of `connection` in confirm mode.
pub(crate) async fn confirm_channel(
    connection: &Connection,
    timeout: Duration,
) -> Result<Channel, BrokerError> {
    let channel = bounded("opening a channel", timeout, connection.create_channel()).await?;
    bounded(
        "turning publisher confirms on",
        timeout,
        channel.confirm_select(ConfirmSelectOptions::default()),
    )
    .await?;
    Ok(channel)
}

/// Whether a connection and its channel can still be used.
pub(crate) fn usable(connection: &Connection, channel: &Channel) -> bool {
    connection.status().connected() && channel.status().connected()
}

/// Open after a failure: no attempt until `cooldown` has passed; then the
/// next attempt decides (closed again on success, open again on failure).
#[derive(Debug)]
pub(crate) struct Circuit {
    cooldown: Duration,
    open_until: Option<Instant>,
}

impl Circuit {
    pub(crate) fn new(cooldown: Duration) -> Self {
        Self {
            cooldown,
            open_until: None,
        }
    }

    /// `Err` while open.
    pub(crate) fn check(&self) -> Result<(), BrokerError> {
        match self.open_until {
            Some(until) if until > Instant::now() => {
                Err(BrokerError::CircuitOpen(until - Instant::now()))
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn trip(&mut self) {
        self.open_until = Some(Instant::now() + self.cooldown);
    }

    pub(crate) fn reset(&mut self) {
        self.open_until = None;
    }

    pub(crate) fn is_open(&self) -> bool {
        self.check().is_err()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[tokio::test]
    async fn the_circuit_stays_open_for_its_cooldown() {
        let mut circuit = Circuit::new(Duration::from_millis(50));
        assert!(circuit.check().is_ok());
        circuit.trip();
        assert!(matches!(circuit.check(), Err(BrokerError::CircuitOpen(_))));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(circuit.check().is_ok());
        circuit.trip();
        circuit.reset();
        assert!(!circuit.is_open());
    }
}
