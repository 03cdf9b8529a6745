//! Reading a read model: a document by id, and sorted searches paged with
//! `search_after` and an opaque cursor.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use elasticsearch::{Elasticsearch, GetParts, SearchParts};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::{ElasticError, refusal, status_and_body};

/// A search: a query, a sort that ends in a unique tie-breaker, a page size
/// and the cursor of the previous page.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    /// The query (the value of `query`), e.g. `{"bool": {"filter": [...]}}`.
    pub query: Value,
    /// The sort (the value of `sort`). It must end with a field unique per
    /// document (e.g. `{"id": "asc"}`, a keyword field; not `_id`), or pages
    /// may skip or repeat documents.
    pub sort: Vec<Value>,
    /// Documents per page.
    pub size: usize,
    /// The `next` cursor of the previous page, for the page after it.
    pub after: Option<String>,
}

impl SearchRequest {
    /// A first page of `size` documents matching `query` in `sort` order.
    pub fn new(query: Value, sort: Vec<Value>, size: usize) -> Self {
        Self {
            query,
            sort,
            size,
            after: None,
        }
    }

    /// The page after the one that returned this cursor.
    pub fn after(mut self, cursor: impl Into<String>) -> Self {
        self.after = Some(cursor.into());
        self
    }

    /// The request body, with `search_after` decoded from the cursor.
    ///
    /// Asks for one document more than `size`, to know whether a next page
    /// exists.
    pub fn body(&self) -> Result<Value, ElasticError> {
        let mut body = json!({
            "query": self.query,
            "sort": self.sort,
            "size": self.size + 1,
            "track_total_hits": false,
        });
        if let Some(cursor) = &self.after {
            body["search_after"] = Value::Array(decode_cursor(cursor, &self.sort)?);
        }
        Ok(body)
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<D> {
    /// The documents, in sort order.
    pub docs: Vec<D>,
    /// The cursor of the next page, `None` on the last page.
    pub next: Option<String>,
}

/// Encodes sort values as a cursor: base64url of `{"k": <sort fingerprint>,
/// "a": [<values>]}`. The fingerprint ties it to the sort that produced it.
pub fn encode_cursor(sort: &[Value], values: &[Value]) -> String {
    let cursor = json!({ "k": fingerprint(sort), "a": values });
    URL_SAFE_NO_PAD.encode(cursor.to_string())
}

/// Decodes a cursor made by [`encode_cursor`] for the same sort.
pub fn decode_cursor(cursor: &str, sort: &[Value]) -> Result<Vec<Value>, ElasticError> {
    let invalid = |why: &str| ElasticError::InvalidCursor(why.to_owned());
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .map_err(|_| invalid("not base64url"))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid("not JSON"))?;
    if value["k"].as_str() != Some(fingerprint(sort).as_str()) {
        return Err(invalid("it was made for another sort"));
    }
    match value.get("a") {
        Some(Value::Array(values)) if values.len() == sort.len() => Ok(values.clone()),
        _ => Err(invalid("wrong number of sort values")),
    }
}

/// FNV-1a of the sort's JSON text, in hex.
fn fingerprint(sort: &[Value]) -> String {
    let text = Value::Array(sort.to_vec()).to_string();
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// Gets a document by id from an index or alias (realtime: no refresh
/// needed). `None` when there is no such document.
pub async fn get_document<D: DeserializeOwned>(
    client: &Elasticsearch,
    index: &str,
    id: &str,
) -> Result<Option<D>, ElasticError> {
    let operation = format!("getting document {id:?} from {index:?}");
    let response = client.get(GetParts::IndexId(index, id)).send().await;
    let (status, body) = status_and_body(&operation, response).await?;
    if status == 404 && body["found"] == false {
        return Ok(None);
    }
    if !(200..300).contains(&status) {
        return Err(refusal(&operation, status, &body));
    }
    decode(&operation, &body["_source"]).map(Some)
}

/// Runs a search on an index or alias and decodes the documents.
pub async fn search_documents<D: DeserializeOwned>(
    client: &Elasticsearch,
    index: &str,
    request: &SearchRequest,
) -> Result<Page<D>, ElasticError> {
    let operation = format!("searching {index:?}");
    let response = client
        .search(SearchParts::Index(&[index]))
        .body(request.body()?)
        .send()
        .await;
    let (status, body) = status_and_body(&operation, response).await?;
    if !(200..300).contains(&status) {
        return Err(refusal(&operation, status, &body));
    }
    let hits = body["hits"]["hits"]
        .as_array()
        .ok_or_else(|| ElasticError::Unexpected {
            operation: operation.clone(),
            reason: format!("no hits in {body}"),
        })?;
    let more = hits.len() > request.size;
    let hits = &hits[..hits.len().min(request.size)];
    let docs = hits
        .iter()
        .map(|hit| decode(&operation, &hit["_source"]))
        .collect::<Result<Vec<D>, _>>()?;
    let next = match (more, hits.last()) {
        (true, Some(last)) => {
            let values = last["sort"].as_array().cloned().unwrap_or_default();
            Some(encode_cursor(&request.sort, &values))
        }
        _ => None,
    };
    Ok(Page { docs, next })
}

fn decode<D: DeserializeOwned>(operation: &str, source: &Value) -> Result<D, ElasticError> {
    serde_json::from_value(source.clone()).map_err(|e| ElasticError::Unexpected {
        operation: operation.to_owned(),
        reason: format!("a document does not decode: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_are_tied_to_their_sort() {
        let sort = vec![json!({"price.amount": "asc"}), json!({"id": "asc"})];
        let values = vec![json!(45000), json!("abc")];
        let cursor = encode_cursor(&sort, &values);
        assert!(
            cursor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(decode_cursor(&cursor, &sort).unwrap(), values);

        let other = vec![json!({"departure": "asc"}), json!({"id": "asc"})];
        assert!(matches!(
            decode_cursor(&cursor, &other),
            Err(ElasticError::InvalidCursor(_))
        ));
        for bad in [
            "",
            "!!",
            "bm90IGpzb24",
            &URL_SAFE_NO_PAD.encode("{\"k\":1}"),
        ] {
            assert!(decode_cursor(bad, &sort).is_err(), "{bad}");
        }
    }

    #[test]
    fn body_asks_one_more_and_carries_search_after() {
        let sort = vec![json!({"id": "asc"})];
        let request = SearchRequest::new(json!({"match_all": {}}), sort.clone(), 10);
        let body = request.body().unwrap();
        assert_eq!(body["size"], 11);
        assert!(body.get("search_after").is_none());
        let next = request.after(encode_cursor(&sort, &[json!("x")]));
        assert_eq!(next.body().unwrap()["search_after"], json!(["x"]));
    }
}
