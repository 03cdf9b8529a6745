//! A fresh PostgreSQL schema per test.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use uuid::Uuid;

use crate::{
    CONNECT_TIMEOUT, DATABASE_URL_ENV, block_on_fresh_runtime, env_nonempty, keep_test_data,
    unavailable,
};

/// Connections of the pool [`postgres()`] builds. Tests that need more build their own
/// pool with [`PgTest::pool_with`].
const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// A test's own PostgreSQL schema, on the server at `DATABASE_URL`.
///
/// Every connection made from [`PgTest::pool`], [`PgTest::connect_options`] or
/// [`PgTest::url`] starts with `search_path` set to [`PgTest::schema`] (sent as the
/// `options` startup parameter), so unqualified table names, and sqlx migrations
/// (`_sqlx_migrations`), land in the test's schema and tests cannot see each other's
/// tables.
///
/// One thing a schema does not isolate: `LISTEN`/`NOTIFY` channels are shared by the
/// whole database. Use [`PgTest::channel`] for channel names, or expect notifications
/// from other tests running at the same time.
///
/// When dropped without a panic in flight (and without `ANNALS_KEEP_TEST_DATA`), the
/// schema is dropped with `DROP SCHEMA ... CASCADE` on a separate connection, best
/// effort. When the test panics the schema is kept and its name printed.
pub struct PgTest {
    pool: PgPool,
    schema: String,
    connect_options: PgConnectOptions,
    admin_options: PgConnectOptions,
    url: String,
    cleaned_up: bool,
}

/// Creates a fresh schema `t_<uuid>` on the PostgreSQL server at `DATABASE_URL` and a
/// pool (up to 10 connections) whose connections use it.
///
/// Returns `None`, after printing `skipping: ...` to stderr, when `DATABASE_URL` is unset
/// or the server cannot be reached within 10 seconds; with `ANNALS_REQUIRE_SERVICES=1` it
/// panics instead, so the test fails rather than silently passing.
///
/// # Panics
///
/// When `DATABASE_URL` is not a valid PostgreSQL URL, when the schema cannot be created
/// (the role needs the `CREATE` privilege on the database), or as described above.
pub async fn postgres() -> Option<PgTest> {
    let Some(url) = env_nonempty(DATABASE_URL_ENV) else {
        return unavailable("PostgreSQL", "DATABASE_URL is not set");
    };
    let base = PgConnectOptions::from_str(&url)
        .unwrap_or_else(|e| panic!("DATABASE_URL is not a valid PostgreSQL URL: {e}"))
        .disable_statement_logging();
    let shown = describe(&base);

    let mut admin = match tokio::time::timeout(CONNECT_TIMEOUT, base.connect()).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            return unavailable(
                "PostgreSQL",
                &format!("DATABASE_URL ({shown}) is unreachable: {e}"),
            );
        }
        Err(_) => {
            return unavailable(
                "PostgreSQL",
                &format!("DATABASE_URL ({shown}) did not answer within {CONNECT_TIMEOUT:?}"),
            );
        }
    };

    let schema = format!("t_{}", Uuid::new_v4().simple());
    sqlx::raw_sql(&format!("CREATE SCHEMA {}", quote_ident(&schema)))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot create the test schema {schema} on {shown} (the role needs CREATE on the database): {e}")
        });
    let _ = admin.close().await;

    let connect_options = base.clone().options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(DEFAULT_MAX_CONNECTIONS)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(connect_options.clone())
        .await
        .unwrap_or_else(|e| panic!("cannot open a pool on {shown} for schema {schema}: {e}"));

    let url = url_with_search_path(&url, &schema);
    Some(PgTest {
        pool,
        schema,
        connect_options,
        admin_options: base,
        url,
        cleaned_up: false,
    })
}

impl PgTest {
    /// The test's pool: every connection has `search_path` set to [`Self::schema`].
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The test's schema, `t_<32 hex digits>` (a valid unquoted identifier).
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Connect options for more connections or pools in the test's schema: those of
    /// `DATABASE_URL` plus `options=-c search_path=<schema>`.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.connect_options.clone()
    }

    /// `DATABASE_URL` with `options=-c search_path=<schema>` appended, for code that
    /// takes a URL (sqlx and libpq both honour it). Contains the password, if any.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A `LISTEN`/`NOTIFY` channel name unique to this test: `<schema>_<name>`.
    ///
    /// # Panics
    ///
    /// When the result exceeds PostgreSQL's 63-byte identifier limit (`name` longer than
    /// 28 bytes).
    pub fn channel(&self, name: &str) -> String {
        let channel = format!("{}_{name}", self.schema);
        assert!(
            channel.len() <= 63,
            "channel name {channel:?} is longer than PostgreSQL's 63-byte limit"
        );
        channel
    }

    /// A new pool in the test's schema with at most `max_connections` connections.
    ///
    /// # Panics
    ///
    /// When the first connection cannot be made.
    pub async fn pool_with(&self, max_connections: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(self.connect_options())
            .await
            .unwrap_or_else(|e| panic!("cannot open a pool for schema {}: {e}", self.schema))
    }

    /// A [`PgListener`] on a connection of [`Self::pool`] (same connect options, so the
    /// same schema).
    ///
    /// # Panics
    ///
    /// When no connection can be acquired.
    pub async fn listener(&self) -> PgListener {
        PgListener::connect_with(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("cannot open a PgListener for schema {}: {e}", self.schema))
    }

    /// Waits until every event the test's schema holds is readable: no
    /// transaction older than the last one that wrote an event is still
    /// open on the server. A store's head stops before the oldest open
    /// transaction of the whole server (positions are transaction ids,
    /// shared by every schema), so while another test's transaction runs, a
    /// head read here trails what this test wrote, and would move later
    /// without a write. Call it before taking a head to compare.
    ///
    /// # Panics
    ///
    /// When the events are not all readable within 30 s, or the query fails.
    pub async fn settle(&self) {
        const SETTLED: &str = "SELECT coalesce((SELECT transaction_id FROM annals_events \
             ORDER BY transaction_id DESC LIMIT 1) < pg_snapshot_xmin(pg_current_snapshot()), true)";
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let settled: bool = sqlx::query_scalar(SETTLED)
                .fetch_one(&self.pool)
                .await
                .unwrap_or_else(|e| {
                    panic!("cannot tell whether schema {} settled: {e}", self.schema)
                });
            if settled {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the events of schema {} are not all readable after 30 s: a transaction \
                 older than the last one that wrote stays open",
                self.schema
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Closes [`Self::pool`] and drops the schema with everything in it.
    ///
    /// Pools the test built itself should be closed first: a connection holding a lock
    /// on a table of the schema makes this wait (at most 10 s, then it fails).
    ///
    /// # Panics
    ///
    /// When the schema cannot be dropped.
    pub async fn cleanup(mut self) {
        self.cleaned_up = true;
        self.pool.close().await;
        if keep_test_data() {
            return;
        }
        drop_schema(self.admin_options.clone(), self.schema.clone())
            .await
            .unwrap_or_else(|e| panic!("cannot drop test schema {}: {e}", self.schema));
    }
}

impl fmt::Debug for PgTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTest")
            .field("server", &describe(&self.admin_options))
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl Drop for PgTest {
    fn drop(&mut self) {
        if self.cleaned_up {
            return;
        }
        if std::thread::panicking() {
            eprintln!(
                "keeping PostgreSQL schema {} of the failed test on {}",
                self.schema,
                describe(&self.admin_options)
            );
            return;
        }
        if keep_test_data() {
            return;
        }
        let (options, schema) = (self.admin_options.clone(), self.schema.clone());
        if let Err(e) = block_on_fresh_runtime(move || drop_schema(options, schema)) {
            eprintln!("warning: could not drop test schema {}: {e}", self.schema);
        }
    }
}

async fn drop_schema(options: PgConnectOptions, schema: String) -> Result<(), String> {
    let mut conn = PgConnection::connect_with(&options)
        .await
        .map_err(|e| e.to_string())?;
    let sql = format!(
        "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {} CASCADE",
        quote_ident(&schema)
    );
    let result = sqlx::raw_sql(&sql).execute(&mut conn).await;
    let _ = conn.close().await;
    result.map(|_| ()).map_err(|e| e.to_string())
}

fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `postgres://user@host:port/db`, without the password.
fn describe(options: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or_default()
    )
}

/// Appends `options=-c search_path=<schema>` (URL-encoded) to a PostgreSQL URL.
fn url_with_search_path(url: &str, schema: &str) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (url, None),
    };
    let separator = if base.contains('?') { '&' } else { '?' };
    let mut out = format!("{base}{separator}options=-c%20search_path%3D{schema}");
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_gets_the_options_parameter() {
        assert_eq!(
            url_with_search_path("postgres://a:b@127.0.0.1:5432/db", "t_1"),
            "postgres://a:b@127.0.0.1:5432/db?options=-c%20search_path%3Dt_1"
        );
        assert_eq!(
            url_with_search_path("postgres://a@h/db?sslmode=disable", "t_1"),
            "postgres://a@h/db?sslmode=disable&options=-c%20search_path%3Dt_1"
        );
    }

    #[test]
    fn url_options_parse_back() {
        let url = url_with_search_path("postgres://a:b@127.0.0.1:5432/db", "t_abc");
        let options = PgConnectOptions::from_str(&url).unwrap();
        assert_eq!(options.get_options(), Some("-c search_path=t_abc"));
        assert_eq!(options.get_database(), Some("db"));
    }

    #[test]
    fn describe_hides_the_password() {
        let options = PgConnectOptions::from_str("postgres://u:secret@h:1/d").unwrap();
        assert_eq!(describe(&options), "postgres://u@h:1/d");
    }

    #[test]
    fn idents_are_quoted() {
        assert_eq!(quote_ident("t_1"), "\"t_1\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
