//! A name prefix per test on the RabbitMQ broker.

use std::fmt;
use std::sync::Mutex;

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use uuid::Uuid;

use crate::{
    AMQP_URL_ENV, CONNECT_TIMEOUT, RABBITMQ_URL_ENV, block_on_fresh_runtime, env_nonempty,
    keep_test_data, unavailable,
};

/// A test's own corner of the broker at `AMQP_URL`: its URL and a unique
/// prefix for the exchanges and queues the test declares.
///
/// Name every exchange and queue with [`RabbitTest::name`], which remembers
/// it: when the value is dropped without a panic in flight (and without
/// `ANNALS_KEEP_TEST_DATA`), every remembered name is deleted, as a queue
/// and as an exchange, best effort. When the test panics they are kept and
/// the prefix printed.
pub struct RabbitTest {
    url: String,
    prefix: String,
    names: Mutex<Vec<String>>,
    cleaned_up: bool,
}

/// Connects to the broker at `AMQP_URL` (or `RABBITMQ_URL`) and picks a
/// fresh name prefix `t<uuid>.`.
///
/// Returns `None`, after printing `skipping: ...` to stderr, when neither is
/// set or the broker does not accept a connection within 10 seconds; with
/// `ANNALS_REQUIRE_SERVICES=1` it panics instead.
pub async fn rabbitmq() -> Option<RabbitTest> {
    let Some(url) = env_nonempty(AMQP_URL_ENV).or_else(|| env_nonempty(RABBITMQ_URL_ENV)) else {
        return unavailable("RabbitMQ", "AMQP_URL is not set");
    };
    let connect = Connection::connect(&url, ConnectionProperties::default());
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(connection)) => {
            let _ = connection.close(200, "OK".into()).await;
        }
        Ok(Err(e)) => {
            return unavailable(
                "RabbitMQ",
                &format!("AMQP_URL ({}) is unreachable: {e}", describe(&url)),
            );
        }
        Err(_) => {
            return unavailable(
                "RabbitMQ",
                &format!(
                    "AMQP_URL ({}) did not answer within {CONNECT_TIMEOUT:?}",
                    describe(&url)
                ),
            );
        }
    }
    Some(RabbitTest {
        url,
        prefix: format!("t{}.", Uuid::new_v4().simple()),
        names: Mutex::new(Vec::new()),
        cleaned_up: false,
    })
}

impl RabbitTest {
    /// The broker's URL (with its credentials).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The test's prefix, `t<32 hex digits>.`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix><base>`, remembered for the cleanup: the name of an
    /// exchange or a queue of the test.
    pub fn name(&self, base: &str) -> String {
        let name = format!("{}{base}", self.prefix);
        self.remember(&name);
        name
    }

    /// Remembers a name the test's code derived itself (e.g. a dead-letter
    /// queue named after a queue), for the cleanup.
    pub fn remember(&self, name: &str) {
        if let Ok(mut names) = self.names.lock() {
            names.push(name.to_owned());
        }
    }

    /// Deletes every remembered exchange and queue.
    ///
    /// # Panics
    ///
    /// When the broker cannot be reached.
    pub async fn cleanup(mut self) {
        self.cleaned_up = true;
        if keep_test_data() {
            return;
        }
        let names = self.names.lock().map(|n| n.clone()).unwrap_or_default();
        delete(self.url.clone(), names).await.unwrap_or_else(|e| {
            panic!(
                "cannot delete the test's queues and exchanges ({}*): {e}",
                self.prefix
            )
        });
    }
}

impl fmt::Debug for RabbitTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitTest")
            .field("server", &describe(&self.url))
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for RabbitTest {
    fn drop(&mut self) {
        if self.cleaned_up {
            return;
        }
        if std::thread::panicking() {
            eprintln!(
                "keeping the RabbitMQ queues and exchanges {}* of the failed test on {}",
                self.prefix,
                describe(&self.url)
            );
            return;
        }
        if keep_test_data() {
            return;
        }
        let names = self.names.lock().map(|n| n.clone()).unwrap_or_default();
        let url = self.url.clone();
        if let Err(e) = block_on_fresh_runtime(move || delete(url, names)) {
            eprintln!(
                "warning: could not delete the test's queues and exchanges {}*: {e}",
                self.prefix
            );
        }
    }
}

/// Deletes each name as a queue and as an exchange; a missing one is fine.
async fn delete(url: String, names: Vec<String>) -> Result<(), String> {
    let connection = Connection::connect(&url, ConnectionProperties::default())
        .await
        .map_err(|e| e.to_string())?;
    for name in names {
        // A missing queue or exchange closes the channel: one channel each.
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| e.to_string())?;
        let _ = channel
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| e.to_string())?;
        let _ = channel
            .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = connection.close(200, "OK".into()).await;
    Ok(())
}

/// The URL without its password.
fn describe(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| {
        let (user_info, host) = rest.rsplit_once('@')?;
        let user = user_info.split(':').next().unwrap_or_default();
        Some(format!("{scheme}://{user}@{host}"))
    }) {
        Some(shown) => shown,
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown() {
        assert_eq!(
            describe("amqp://guest:pw@127.0.0.1:5672/%2f"),
            "amqp://guest@127.0.0.1:5672/%2f"
        );
        assert_eq!(describe("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
    }
}
