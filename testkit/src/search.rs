//! A fresh index prefix per test on the search server.

use std::fmt;

use elasticsearch::Elasticsearch;
use elasticsearch::http::transport::Transport;
use elasticsearch::indices::{
    IndicesDeleteIndexTemplateParts, IndicesDeleteParts, IndicesGetIndexTemplateParts,
    IndicesGetParts,
};
use elasticsearch::params::ExpandWildcards;
use serde_json::Value;
use uuid::Uuid;

use crate::{
    CONNECT_TIMEOUT, ELASTICSEARCH_URL_ENV, SEARCH_FLAVOR_ENV, block_on_fresh_runtime,
    env_nonempty, keep_test_data, unavailable,
};

/// Which search engine answers at `ELASTICSEARCH_URL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SearchFlavor {
    /// Elasticsearch (7.10 and later).
    Elasticsearch,
    /// OpenSearch (2 and later): `GET /` answers `version.distribution: "opensearch"`.
    OpenSearch,
}

impl SearchFlavor {
    /// The flavor named by a `GET /` answer: OpenSearch when `version.distribution` is
    /// `"opensearch"`, Elasticsearch otherwise.
    pub fn from_info(info: &Value) -> Self {
        match info["version"]["distribution"].as_str() {
            Some("opensearch") => SearchFlavor::OpenSearch,
            _ => SearchFlavor::Elasticsearch,
        }
    }

    /// The flavor the tests expect, from `ANNALS_SEARCH_FLAVOR` (`elasticsearch`, the
    /// default when unset, or `opensearch`).
    ///
    /// # Panics
    ///
    /// When `ANNALS_SEARCH_FLAVOR` holds anything else.
    pub fn expected() -> Self {
        match env_nonempty(SEARCH_FLAVOR_ENV).map(|v| v.to_ascii_lowercase()) {
            None => SearchFlavor::Elasticsearch,
            Some(v) if v == "elasticsearch" => SearchFlavor::Elasticsearch,
            Some(v) if v == "opensearch" => SearchFlavor::OpenSearch,
            Some(v) => {
                panic!("{SEARCH_FLAVOR_ENV}={v:?}: expected `elasticsearch` or `opensearch`")
            }
        }
    }

    /// `"elasticsearch"` or `"opensearch"`, as in `ANNALS_SEARCH_FLAVOR`.
    pub fn as_str(self) -> &'static str {
        match self {
            SearchFlavor::Elasticsearch => "elasticsearch",
            SearchFlavor::OpenSearch => "opensearch",
        }
    }
}

impl fmt::Display for SearchFlavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A test's own corner of the search server at `ELASTICSEARCH_URL`: a client and a
/// unique index prefix.
///
/// Name every index, alias and index template (and its `index_patterns`) the test
/// creates with [`SearchTest::prefix`] (or [`SearchTest::index`]) so parallel tests
/// never collide and cleanup finds them.
///
/// When dropped without a panic in flight (and without `ANNALS_KEEP_TEST_DATA`), the
/// indexes and composable index templates named `<prefix>*` are deleted, best effort.
/// When the test panics they are kept and the prefix printed.
pub struct SearchTest {
    client: Elasticsearch,
    url: String,
    prefix: String,
    info: Value,
    flavor: SearchFlavor,
    cleaned_up: bool,
}

/// Connects to the search server at `ELASTICSEARCH_URL` (`GET /`) and picks a fresh
/// index prefix `t<uuid>_`.
///
/// Returns `None`, after printing `skipping: ...` to stderr, when `ELASTICSEARCH_URL` is
/// unset or the server does not answer `GET /` successfully within 10 seconds; with
/// `ANNALS_REQUIRE_SERVICES=1` it panics instead.
///
/// The client is the `elasticsearch` crate's, over a
/// [`Transport::single_node`] (credentials in the URL become basic auth). It works with
/// Elasticsearch 7.10+ and OpenSearch 2+ alike for the API annals uses.
///
/// # Panics
///
/// When `ELASTICSEARCH_URL` is not a valid URL, or as described above.
pub async fn search() -> Option<SearchTest> {
    let Some(url) = env_nonempty(ELASTICSEARCH_URL_ENV) else {
        return unavailable("Elasticsearch", "ELASTICSEARCH_URL is not set");
    };
    let client =
        client_for(&url).unwrap_or_else(|e| panic!("ELASTICSEARCH_URL ({url}) is not usable: {e}"));
    let info = match tokio::time::timeout(CONNECT_TIMEOUT, server_info(&client)).await {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => {
            return unavailable(
                "Elasticsearch",
                &format!("ELASTICSEARCH_URL ({url}) is unreachable: {e}"),
            );
        }
        Err(_) => {
            return unavailable(
                "Elasticsearch",
                &format!("ELASTICSEARCH_URL ({url}) did not answer within {CONNECT_TIMEOUT:?}"),
            );
        }
    };
    let flavor = SearchFlavor::from_info(&info);
    Some(SearchTest {
        client,
        url,
        prefix: format!("t{}_", Uuid::new_v4().simple()),
        info,
        flavor,
        cleaned_up: false,
    })
}

impl SearchTest {
    /// The client, talking to `ELASTICSEARCH_URL`.
    pub fn client(&self) -> &Elasticsearch {
        &self.client
    }

    /// The server's URL, as given in `ELASTICSEARCH_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// This test's unique prefix, `t<32 hex digits>_`: lowercase, so valid in index names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `name` behind this test's prefix: the name to give an index, alias or template.
    pub fn index(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Elasticsearch or OpenSearch, from the server's `GET /` answer.
    pub fn flavor(&self) -> SearchFlavor {
        self.flavor
    }

    /// The server's version number (`version.number` of `GET /`), e.g. `"7.10.2"`.
    pub fn version(&self) -> &str {
        self.info["version"]["number"].as_str().unwrap_or_default()
    }

    /// The whole `GET /` answer, as read when connecting.
    pub fn info(&self) -> &Value {
        &self.info
    }

    /// Deletes this test's indexes and composable index templates (`<prefix>*`).
    ///
    /// Indexes are listed first and deleted by name, so it also works where
    /// `action.destructive_requires_name` forbids wildcard deletes (Elasticsearch 8+).
    ///
    /// # Panics
    ///
    /// When the server refuses or cannot be reached.
    pub async fn cleanup(mut self) {
        self.cleaned_up = true;
        if keep_test_data() {
            return;
        }
        delete_prefixed(&self.client, &self.prefix)
            .await
            .unwrap_or_else(|e| panic!("cannot delete test indexes {}*: {e}", self.prefix));
    }
}

impl fmt::Debug for SearchTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SearchTest")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("flavor", &self.flavor)
            .field("version", &self.version())
            .finish_non_exhaustive()
    }
}

impl Drop for SearchTest {
    fn drop(&mut self) {
        if self.cleaned_up {
            return;
        }
        if std::thread::panicking() {
            eprintln!(
                "keeping the indexes {}* of the failed test on {}",
                self.prefix, self.url
            );
            return;
        }
        if keep_test_data() {
            return;
        }
        // The test's client belongs to the test's runtime: use a new one.
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        let result = block_on_fresh_runtime(move || async move {
            let client = client_for(&url)?;
            delete_prefixed(&client, &prefix).await
        });
        if let Err(e) = result {
            eprintln!(
                "warning: could not delete test indexes {}*: {e}",
                self.prefix
            );
        }
    }
}

fn client_for(url: &str) -> Result<Elasticsearch, String> {
    let transport = Transport::single_node(url).map_err(|e| e.to_string())?;
    Ok(Elasticsearch::new(transport))
}

async fn server_info(client: &Elasticsearch) -> Result<Value, String> {
    let response = client.info().send().await.map_err(|e| e.to_string())?;
    let status = response.status_code();
    let body = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("GET / answered {status}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET / answered non-JSON ({e}): {body}"))
}

async fn delete_prefixed(client: &Elasticsearch, prefix: &str) -> Result<(), String> {
    let pattern = format!("{prefix}*");

    let response = client
        .indices()
        .get(IndicesGetParts::Index(&[&pattern]))
        .expand_wildcards(&[ExpandWildcards::All])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let indexes: Value = checked_json(response, "GET /<prefix>*").await?;
    let names: Vec<&str> = indexes
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    if !names.is_empty() {
        let response = client
            .indices()
            .delete(IndicesDeleteParts::Index(&names))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        checked_json(response, "DELETE /<indexes>").await?;
    }

    let response = client
        .indices()
        .get_index_template(IndicesGetIndexTemplateParts::Name(&pattern))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status_code().as_u16() == 404 {
        return Ok(()); // no template matches
    }
    let templates: Value = checked_json(response, "GET /_index_template/<prefix>*").await?;
    let names: Vec<&str> = templates["index_templates"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    for name in names {
        let response = client
            .indices()
            .delete_index_template(IndicesDeleteIndexTemplateParts::Name(name))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status_code().as_u16() != 404 {
            checked_json(response, "DELETE /_index_template/<name>").await?;
        }
    }
    Ok(())
}

async fn checked_json(
    response: elasticsearch::http::response::Response,
    what: &str,
) -> Result<Value, String> {
    let status = response.status_code();
    let body = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{what} answered {status}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{what} answered non-JSON ({e}): {body}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flavor_from_info() {
        let es = json!({"version": {"number": "7.10.2", "build_flavor": "unknown"}});
        let os = json!({"version": {"distribution": "opensearch", "number": "2.19.1"}});
        assert_eq!(SearchFlavor::from_info(&es), SearchFlavor::Elasticsearch);
        assert_eq!(SearchFlavor::from_info(&os), SearchFlavor::OpenSearch);
    }
}
