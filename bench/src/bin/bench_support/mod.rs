//! Plumbing the benchmark binaries share: the servers from the environment,
//! JSON requests to the search server, and the clean-up after a run.

use std::str::FromStr;

use annals_elastic::elasticsearch::Elasticsearch;
use annals_elastic::elasticsearch::http::Method;
use annals_elastic::elasticsearch::http::headers::HeaderMap;
use annals_elastic::elasticsearch::http::request::JsonBody;
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};
use uuid::Uuid;

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

/// The servers a benchmark runs against: `DATABASE_URL` and
/// `ELASTICSEARCH_URL`, both checked to answer.
pub struct Servers {
    /// The search server.
    pub client: Elasticsearch,
    /// The search server's answer to `GET /` (its name and version).
    pub server: Value,
    /// `DATABASE_URL`'s connect options, statement logging off.
    pub base: PgConnectOptions,
    /// A connection for set-up, clean-up and probes.
    pub admin: PgConnection,
    /// A fresh id for the names of this run's schemas and indexes.
    pub run_id: String,
}

/// Connects to the servers the environment names.
pub async fn servers() -> Result<Servers> {
    let database_url = std::env::var("DATABASE_URL").map_err(
        |_| "set DATABASE_URL, e.g. postgres://annals:annals@127.0.0.1:5432/annals_test",
    )?;
    let search_url = std::env::var("ELASTICSEARCH_URL")
        .map_err(|_| "set ELASTICSEARCH_URL, e.g. http://127.0.0.1:9200 (or an OpenSearch URL)")?;
    let client = annals_elastic::connect(&search_url)?;
    let server = es_json(&client, Method::Get, "/", None)
        .await
        .map_err(|e| format!("cannot reach {search_url}: {e}"))?;
    let base = PgConnectOptions::from_str(&database_url)
        .map_err(|e| format!("DATABASE_URL: {e}"))?
        .disable_statement_logging();
    let admin = base
        .connect()
        .await
        .map_err(|e| format!("cannot connect to DATABASE_URL: {e}"))?;
    let run_id = Uuid::new_v4().simple().to_string()[..12].to_owned();
    Ok(Servers {
        client,
        server,
        base,
        admin,
        run_id,
    })
}

/// A request whose answer must be a 2xx JSON body.
pub async fn es_json(
    client: &Elasticsearch,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value> {
    es_json_query(client, method, path, &[], body).await
}

/// [`es_json`] with a query string.
pub async fn es_json_query(
    client: &Elasticsearch,
    method: Method,
    path: &str,
    query: &[(&str, &str)],
    body: Option<Value>,
) -> Result<Value> {
    let response = client
        .send(
            method,
            path,
            HeaderMap::new(),
            Some(query),
            body.map(JsonBody::new),
            None,
        )
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    let status = response.status_code();
    let text = response.text().await.map_err(|e| format!("{path}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{path} answered {status}: {text}").into());
    }
    serde_json::from_str(&text).map_err(|e| format!("{path}: not JSON ({e}): {text}").into())
}

/// Deletes every index whose name starts with `prefix`.
pub async fn delete_indexes(client: &Elasticsearch, prefix: &str) -> Result<()> {
    let listed = es_json_query(
        client,
        Method::Get,
        &format!("/_cat/indices/{prefix}*"),
        &[("format", "json"), ("h", "index")],
        None,
    )
    .await?;
    for entry in listed.as_array().into_iter().flatten() {
        if let Some(index) = entry["index"].as_str().filter(|i| i.starts_with(prefix)) {
            es_json(client, Method::Delete, &format!("/{index}"), None).await?;
        }
    }
    Ok(())
}

/// Drops a run's schemas and deletes its indexes (`prefix*`), whatever the
/// run's `outcome`, which it then returns; a failed clean-up is an error too.
pub async fn clean_up<T>(
    client: &Elasticsearch,
    mut admin: PgConnection,
    schemas: &[String],
    prefix: &str,
    outcome: Result<T>,
) -> Result<T> {
    let mut problems: Vec<String> = Vec::new();
    for schema in schemas {
        if let Err(e) = sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut admin)
            .await
        {
            problems.push(format!("dropping schema {schema}: {e}"));
        }
    }
    if let Err(e) = delete_indexes(client, prefix).await {
        problems.push(format!("deleting indexes {prefix}*: {e}"));
    }
    sqlx::Connection::close(admin).await.ok();
    for problem in &problems {
        eprintln!("cleanup failed: {problem}");
    }
    let value = outcome?;
    if !problems.is_empty() {
        return Err("cleanup failed (see above)".into());
    }
    Ok(value)
}
