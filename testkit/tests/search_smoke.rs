//! Smoke tests of the search server setup: the `elasticsearch` crate against the real
//! server at `ELASTICSEARCH_URL` (Elasticsearch 7.10.2, or OpenSearch 2.19.1 in the
//! second pass of `scripts/test`), using exactly the API annals relies on.
//!
//! Every test name starts with `search_` so the OpenSearch pass picks it up.

use annals_testkit::{SearchFlavor, SearchTest, expected_search_version, search};
use elasticsearch::indices::{
    IndicesCreateParts, IndicesExistsIndexTemplateParts, IndicesExistsParts, IndicesGetAliasParts,
    IndicesGetMappingParts, IndicesGetSettingsParts, IndicesPutIndexTemplateParts,
    IndicesRefreshParts,
};
use elasticsearch::params::{Refresh, VersionType};
use elasticsearch::{BulkOperation, BulkParts, CountParts, GetParts, SearchParts};
use serde_json::{Value, json};

/// Sends a request and returns its status and JSON body.
async fn call(
    response: Result<elasticsearch::http::response::Response, elasticsearch::Error>,
) -> (u16, Value) {
    let response = response.expect("request failed");
    let status = response.status_code().as_u16();
    let body = response.json::<Value>().await.expect("JSON body");
    (status, body)
}

/// Sends a request that must succeed and returns its JSON body.
async fn ok(
    response: Result<elasticsearch::http::response::Response, elasticsearch::Error>,
) -> Value {
    let (status, body) = call(response).await;
    assert!((200..300).contains(&status), "status {status}: {body}");
    body
}

/// The composable index template every test here creates: `<prefix>smoke*` indexes get
/// one shard, no replica, no periodic refresh, and explicit mappings.
async fn put_smoke_template(es: &SearchTest) -> String {
    let name = es.index("tpl");
    let body = ok(es
        .client()
        .indices()
        .put_index_template(IndicesPutIndexTemplateParts::Name(&name))
        .body(json!({
            "index_patterns": [es.index("smoke*")],
            "priority": 200,
            "template": {
                "settings": {
                    "number_of_shards": 1,
                    "number_of_replicas": 0,
                    "refresh_interval": "-1"
                },
                "mappings": {
                    "dynamic": "strict",
                    "properties": {
                        "seq": { "type": "long" },
                        "name": { "type": "keyword" }
                    }
                }
            }
        }))
        .send()
        .await)
    .await;
    assert_eq!(body["acknowledged"], true, "{body}");
    name
}

async fn count(es: &SearchTest, index: &str) -> u64 {
    let body = ok(es.client().count(CountParts::Index(&[index])).send().await).await;
    body["count"].as_u64().expect("count")
}

async fn refresh(es: &SearchTest, index: &str) {
    ok(es
        .client()
        .indices()
        .refresh(IndicesRefreshParts::Index(&[index]))
        .send()
        .await)
    .await;
}

fn doc(seq: i64) -> Value {
    json!({ "seq": seq, "name": format!("doc-{seq:03}") })
}

#[tokio::test]
async fn search_server_is_the_expected_one() {
    let Some(es) = search().await else { return };
    let expected = SearchFlavor::expected();
    assert_eq!(
        es.flavor(),
        expected,
        "ELASTICSEARCH_URL={} answers {}; set ANNALS_SEARCH_FLAVOR to what it is",
        es.url(),
        es.info()
    );
    match es.flavor() {
        SearchFlavor::OpenSearch => assert_eq!(es.info()["version"]["distribution"], "opensearch"),
        SearchFlavor::Elasticsearch => {
            assert!(
                es.info()["version"].get("distribution").is_none(),
                "{}",
                es.info()
            )
        }
    }
    assert!(!es.version().is_empty(), "{}", es.info());

    // scripts/test started this node itself: exact version, and alone in its cluster
    // (an OpenSearch 2 node can join an Elasticsearch 7.10 cluster; it must not).
    if let Some(version) = expected_search_version() {
        assert_eq!(es.version(), version, "{}", es.info());
        let nodes = ok(es.client().cat().nodes().format("json").send().await).await;
        let nodes = nodes.as_array().expect("a JSON array of nodes");
        assert_eq!(nodes.len(), 1, "expected one node: {nodes:?}");
    }
}

#[tokio::test]
async fn search_template_bulk_external_versions_and_refresh() {
    let Some(es) = search().await else { return };
    put_smoke_template(&es).await;
    let index = es.index("smoke_versions");

    // Index 5 documents at external version 10; the index is created from the template.
    let ops: Vec<BulkOperation<Value>> = (1..=5)
        .map(|seq| {
            BulkOperation::index(doc(seq))
                .id(seq.to_string())
                .version(10)
                .version_type(VersionType::External)
                .into()
        })
        .collect();
    let body = ok(es
        .client()
        .bulk(BulkParts::Index(&index))
        .body(ops)
        .send()
        .await)
    .await;
    assert_eq!(body["errors"], false, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    for item in items {
        assert_eq!(item["index"]["status"], 201, "{item}");
        assert_eq!(item["index"]["_version"], 10, "{item}");
    }

    // The template applied: explicit mappings and settings, not dynamic ones.
    let mapping = ok(es
        .client()
        .indices()
        .get_mapping(IndicesGetMappingParts::Index(&[&index]))
        .send()
        .await)
    .await;
    assert_eq!(
        mapping[&index]["mappings"]["properties"]["name"]["type"],
        "keyword"
    );
    assert_eq!(mapping[&index]["mappings"]["dynamic"], "strict");
    let settings = ok(es
        .client()
        .indices()
        .get_settings(IndicesGetSettingsParts::Index(&[&index]))
        .send()
        .await)
    .await;
    let index_settings = &settings[&index]["settings"]["index"];
    assert_eq!(index_settings["number_of_shards"], "1", "{settings}");
    assert_eq!(index_settings["number_of_replicas"], "0", "{settings}");

    // No periodic refresh: nothing is searchable until an explicit refresh.
    assert_eq!(count(&es, &index).await, 0);
    refresh(&es, &index).await;
    assert_eq!(count(&es, &index).await, 5);

    // Lower (and equal) external versions are refused per item with 409; a higher one wins.
    let ops: Vec<BulkOperation<Value>> = vec![
        BulkOperation::index(json!({ "seq": 1, "name": "stale" }))
            .id("1")
            .version(5)
            .version_type(VersionType::External)
            .into(),
        BulkOperation::index(json!({ "seq": 2, "name": "same" }))
            .id("2")
            .version(10)
            .version_type(VersionType::External)
            .into(),
        BulkOperation::index(json!({ "seq": 3, "name": "newer" }))
            .id("3")
            .version(11)
            .version_type(VersionType::External)
            .into(),
    ];
    let body = ok(es
        .client()
        .bulk(BulkParts::Index(&index))
        .body(ops)
        .refresh(Refresh::True)
        .send()
        .await)
    .await;
    assert_eq!(body["errors"], true, "{body}");
    let statuses: Vec<&Value> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| &item["index"]["status"])
        .collect();
    assert_eq!(statuses, [&json!(409), &json!(409), &json!(200)], "{body}");
    assert_eq!(
        body["items"][0]["index"]["error"]["type"],
        "version_conflict_engine_exception"
    );

    for (id, version, name) in [
        ("1", 10, "doc-001"),
        ("2", 10, "doc-002"),
        ("3", 11, "newer"),
    ] {
        let got = ok(es.client().get(GetParts::IndexId(&index, id)).send().await).await;
        assert_eq!(got["_version"], version, "{got}");
        assert_eq!(got["_source"]["name"], name, "{got}");
    }

    // The strict mapping is enforced by the server.
    let (status, body) = call(
        es.client()
            .index(elasticsearch::IndexParts::IndexId(&index, "x"))
            .body(json!({ "unknown": 1 }))
            .send()
            .await,
    )
    .await;
    assert_eq!(status, 400, "{body}");

    es.cleanup().await;
}

#[tokio::test]
async fn search_after_paginates_in_sort_order() {
    let Some(es) = search().await else { return };
    put_smoke_template(&es).await;
    let index = es.index("smoke_pages");

    // 23 documents, indexed in a scrambled order.
    let total = 23_i64;
    let ops: Vec<BulkOperation<Value>> = (0..total)
        .map(|i| (i * 7) % total)
        .map(|seq| BulkOperation::index(doc(seq)).id(seq.to_string()).into())
        .collect();
    let body = ok(es
        .client()
        .bulk(BulkParts::Index(&index))
        .body(ops)
        .refresh(Refresh::True)
        .send()
        .await)
    .await;
    assert_eq!(body["errors"], false, "{body}");

    let mut seen = Vec::new();
    let mut pages = 0;
    let mut after: Option<Value> = None;
    loop {
        let mut query = json!({
            "size": 5,
            "query": { "match_all": {} },
            "sort": [{ "seq": "desc" }, { "name": "asc" }]
        });
        if let Some(after) = &after {
            query["search_after"] = after.clone();
        }
        let body = ok(es
            .client()
            .search(SearchParts::Index(&[&index]))
            .body(query)
            .send()
            .await)
        .await;
        let hits = body["hits"]["hits"].as_array().unwrap();
        if hits.is_empty() {
            break;
        }
        pages += 1;
        assert!(pages <= 5, "search_after does not advance: {body}");
        for hit in hits {
            seen.push(hit["_source"]["seq"].as_i64().unwrap());
        }
        after = Some(hits.last().unwrap()["sort"].clone());
    }
    assert_eq!(pages, 5);
    let expected: Vec<i64> = (0..total).rev().collect();
    assert_eq!(seen, expected);

    es.cleanup().await;
}

#[tokio::test]
async fn search_alias_swap_is_atomic() {
    let Some(es) = search().await else { return };
    put_smoke_template(&es).await;
    let (v1, v2, live) = (
        es.index("smoke_v1"),
        es.index("smoke_v2"),
        es.index("smoke_live"),
    );

    for (index, name) in [(&v1, "from-v1"), (&v2, "from-v2")] {
        ok(es
            .client()
            .indices()
            .create(IndicesCreateParts::Index(index))
            .send()
            .await)
        .await;
        ok(es
            .client()
            .index(elasticsearch::IndexParts::IndexId(index, "1"))
            .body(json!({ "seq": 1, "name": name }))
            .refresh(Refresh::True)
            .send()
            .await)
        .await;
    }
    let names_behind = |es: &SearchTest| {
        let live = live.clone();
        let client = es.client().clone();
        async move {
            let body = ok(client
                .search(SearchParts::Index(&[&live]))
                .body(json!({ "query": { "match_all": {} } }))
                .send()
                .await)
            .await;
            body["hits"]["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|hit| hit["_source"]["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let aliased_indexes = |es: &SearchTest| {
        let live = live.clone();
        let client = es.client().clone();
        async move {
            let body = ok(client
                .indices()
                .get_alias(IndicesGetAliasParts::Name(&[&live]))
                .send()
                .await)
            .await;
            let mut indexes: Vec<String> = body.as_object().unwrap().keys().cloned().collect();
            indexes.sort();
            indexes
        }
    };

    let body = ok(es
        .client()
        .indices()
        .update_aliases()
        .body(json!({ "actions": [{ "add": { "index": v1, "alias": live } }] }))
        .send()
        .await)
    .await;
    assert_eq!(body["acknowledged"], true, "{body}");
    assert_eq!(names_behind(&es).await, ["from-v1"]);

    // One `_aliases` call whose second action fails changes nothing.
    let missing = es.index("smoke_missing");
    let (status, body) = call(
        es.client()
            .indices()
            .update_aliases()
            .body(json!({ "actions": [
                { "remove": { "index": v1, "alias": live } },
                { "add": { "index": missing, "alias": live } }
            ] }))
            .send()
            .await,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(aliased_indexes(&es).await, [v1.as_str()]);
    assert_eq!(names_behind(&es).await, ["from-v1"]);

    // The swap: remove + add in one call.
    let body = ok(es
        .client()
        .indices()
        .update_aliases()
        .body(json!({ "actions": [
            { "remove": { "index": v1, "alias": live } },
            { "add": { "index": v2, "alias": live } }
        ] }))
        .send()
        .await)
    .await;
    assert_eq!(body["acknowledged"], true, "{body}");
    assert_eq!(aliased_indexes(&es).await, [v2.as_str()]);
    assert_eq!(names_behind(&es).await, ["from-v2"]);

    es.cleanup().await;
}

#[tokio::test]
async fn search_cleanup_removes_the_test_indexes_and_templates() {
    let Some(es) = search().await else { return };
    let Some(other) = search().await else { return };
    assert_ne!(es.prefix(), other.prefix());
    assert!(es.prefix().starts_with('t') && es.prefix().ends_with('_'));
    assert_eq!(es.prefix(), es.prefix().to_lowercase());

    let exists = |index: String, template: String| {
        let client = other.client().clone();
        async move {
            let index = client
                .indices()
                .exists(IndicesExistsParts::Index(&[&index]))
                .send()
                .await
                .unwrap()
                .status_code()
                .as_u16();
            let template = client
                .indices()
                .exists_index_template(IndicesExistsIndexTemplateParts::Name(&template))
                .send()
                .await
                .unwrap()
                .status_code()
                .as_u16();
            (index, template)
        }
    };

    // Explicit cleanup.
    let template = put_smoke_template(&es).await;
    let index = es.index("smoke_a");
    ok(es
        .client()
        .indices()
        .create(IndicesCreateParts::Index(&index))
        .send()
        .await)
    .await;
    refresh(&es, &index).await;
    assert_eq!(exists(index.clone(), template.clone()).await, (200, 200));
    es.cleanup().await;
    assert_eq!(exists(index, template).await, (404, 404));

    // Cleanup on drop.
    let Some(dropped) = search().await else {
        return;
    };
    let template = put_smoke_template(&dropped).await;
    let index = dropped.index("smoke_b");
    ok(dropped
        .client()
        .indices()
        .create(IndicesCreateParts::Index(&index))
        .send()
        .await)
    .await;
    assert_eq!(exists(index.clone(), template.clone()).await, (200, 200));
    drop(dropped);
    assert_eq!(exists(index, template).await, (404, 404));
}
