//! Plumbing the benchmark binaries share: JSON requests to the search server.

use annals_elastic::elasticsearch::Elasticsearch;
use annals_elastic::elasticsearch::http::Method;
use annals_elastic::elasticsearch::http::headers::HeaderMap;
use annals_elastic::elasticsearch::http::request::JsonBody;
use serde_json::Value;

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

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
