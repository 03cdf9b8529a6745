//! The HTTP edges: what happens on the wire before (and around) the router
//! — header read timeout, connection limit, hyper's own rejections in the
//! JSON error shape, shutdown — and the OpenAPI document listing what the
//! server really answers.
//!
//! The wire tests serve the app with `airline::http::serve` on 127.0.0.1:0
//! and talk raw HTTP/1.1 over TCP; the document tests use the router
//! directly. They run on the in-memory backend only: nothing here depends on
//! the store.

mod http_support;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use airline::http::{HttpSettings, RateLimit, serve};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_support::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The app served over TCP until dropped.
struct Server {
    address: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<io::Result<()>>>,
    _app: TestApp,
}

impl Server {
    /// Serves a fresh in-memory app with `settings`' connection settings.
    async fn start(settings: HttpSettings) -> Server {
        Server::start_with(Options::default(), settings).await
    }

    /// The same, with the app built from `options`.
    async fn start_with(options: Options, settings: HttpSettings) -> Server {
        let app = test_app_with(Backend::Memory, options).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let router = app.router();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move { serve(listener, router, &settings, stop).await });
        Server {
            address,
            shutdown,
            task: Some(task),
            _app: app,
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.address).await.unwrap()
    }

    /// Cancels the server and waits, at most `bound`, for `serve` to return.
    async fn stop_within(&mut self, bound: Duration) {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(bound, task)
            .await
            .expect("serve did not return in time")
            .unwrap()
            .unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An answer read off the wire.
#[derive(Debug)]
struct Raw {
    status: u16,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The error code, asserting the JSON error shape.
    fn error_code(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        let json: Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"));
        assert_eq!(keys(&json), ["error"], "{json}");
        assert_eq!(keys(&json["error"]), ["code", "message"], "{json}");
        assert!(!json["error"]["message"].as_str().unwrap().is_empty());
        json["error"]["code"].as_str().unwrap().to_owned()
    }
}

/// Reads one answer (head and `content-length` body) from `stream`.
async fn read_answer(stream: &mut TcpStream) -> Raw {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("no answer within 10 s")
            .unwrap();
        assert!(n > 0, "closed before an answer: {buffer:?}");
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buffer[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    Raw {
        status,
        headers,
        body,
    }
}

/// Sends `request` on a new connection and reads the answer.
async fn exchange(server: &Server, request: &[u8]) -> Raw {
    let mut stream = server.connect().await;
    stream.write_all(request).await.unwrap();
    read_answer(&mut stream).await
}

/// Waits, at most `bound`, for the server to close `stream` without
/// answering; how long it took.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> Duration {
    let started = Instant::now();
    let mut chunk = [0u8; 1024];
    match tokio::time::timeout(bound, stream.read(&mut chunk)).await {
        Err(_) => panic!("the connection was still open after {bound:?}"),
        Ok(Ok(0)) | Ok(Err(_)) => started.elapsed(),
        Ok(Ok(n)) => panic!(
            "expected no answer, got {:?}",
            String::from_utf8_lossy(&chunk[..n])
        ),
    }
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n";

fn settings(header_read_timeout: Duration, max_connections: usize) -> HttpSettings {
    HttpSettings {
        header_read_timeout,
        max_connections,
        drain_timeout: Duration::from_secs(5),
        ..HttpSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let timeout = Duration::from_millis(400);
    let server = Server::start(settings(timeout, 16)).await;

    // Half a header line, then silence.
    let mut slow = server.connect().await;
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Slow: ab")
        .await
        .unwrap();
    let took = closed_within(&mut slow, Duration::from_secs(3)).await;
    assert!(
        took >= timeout / 2,
        "closed after {took:?}, before the timeout"
    );

    // A client that sends nothing at all is treated the same.
    let mut silent = server.connect().await;
    closed_within(&mut silent, Duration::from_secs(3)).await;

    // So is an idle keep-alive connection, after its answer.
    let mut idle = server.connect().await;
    idle.write_all(HEALTH).await.unwrap();
    assert_eq!(read_answer(&mut idle).await.status, 200);
    closed_within(&mut idle, Duration::from_secs(3)).await;

    // The server itself keeps serving.
    assert_eq!(exchange(&server, HEALTH).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_slow_header_clients_are_cut_off_while_others_are_served() {
    let timeout = Duration::from_secs(1);
    let server = Server::start(settings(timeout, 1024)).await;
    let mut slow = Vec::new();
    for i in 0..100 {
        let mut stream = server.connect().await;
        stream
            .write_all(format!("GET /health HTTP/1.1\r\nHost: test\r\nX-Slow-{i}: ").as_bytes())
            .await
            .unwrap();
        slow.push(stream);
    }
    // Others are served meanwhile, promptly.
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(exchange(&server, HEALTH).await.status, 200);
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    // Every slow client is cut off, soon after the header read timeout.
    let started = Instant::now();
    for stream in &mut slow {
        closed_within(stream, Duration::from_secs(5)).await;
    }
    assert!(
        started.elapsed() < timeout * 4,
        "cut off only after {:?}",
        started.elapsed()
    );
    assert_eq!(exchange(&server, HEALTH).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let server = Server::start(settings(Duration::from_secs(30), 2)).await;

    // Two connections take both slots (each answered, then kept alive).
    let mut first = server.connect().await;
    first.write_all(HEALTH).await.unwrap();
    assert_eq!(read_answer(&mut first).await.status, 200);
    let mut second = server.connect().await;
    second.write_all(HEALTH).await.unwrap();
    assert_eq!(read_answer(&mut second).await.status, 200);

    // A third connects (the kernel's backlog takes it) but is not served.
    let mut third = server.connect().await;
    third.write_all(HEALTH).await.unwrap();
    let mut chunk = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut chunk)).await;
    assert!(early.is_err(), "served beyond the limit: {early:?}");

    // Once one closes, the waiting one is served.
    drop(first);
    assert_eq!(read_answer(&mut third).await.status, 200);
    second.write_all(HEALTH).await.unwrap();
    assert_eq!(read_answer(&mut second).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_rejects_get_the_json_error_shape() {
    let server = Server::start(settings(Duration::from_secs(5), 16)).await;

    let garbage = exchange(&server, b"NOT HTTP AT ALL\r\n\r\n").await;
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.error_code(), "bad_request");

    let bad_header = exchange(
        &server,
        b"GET /health HTTP/1.1\r\nHost: test\r\nNo colon\r\n\r\n",
    )
    .await;
    assert_eq!(bad_header.status, 400);
    assert_eq!(bad_header.error_code(), "bad_request");

    // hyper's URI limit is 65534 bytes.
    let long = format!(
        "GET /flights/search?q={} HTTP/1.1\r\nHost: test\r\n\r\n",
        "a".repeat(70_000)
    );
    let too_long = exchange(&server, long.as_bytes()).await;
    assert_eq!(too_long.status, 414);
    assert_eq!(too_long.error_code(), "uri_too_long");

    // More than 100 headers.
    let mut many = String::from("GET /health HTTP/1.1\r\nHost: test\r\n");
    for i in 0..120 {
        many.push_str(&format!("X-Header-{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    let too_many = exchange(&server, many.as_bytes()).await;
    assert_eq!(too_many.status, 431);
    assert_eq!(too_many.error_code(), "headers_too_large");

    // A header section larger than hyper buffers (about 400 KiB).
    let huge = format!(
        "GET /health HTTP/1.1\r\nHost: test\r\nX-Huge: {}\r\n\r\n",
        "h".repeat(500_000)
    );
    let too_large = exchange(&server, huge.as_bytes()).await;
    assert_eq!(too_large.status, 431);
    assert_eq!(too_large.error_code(), "headers_too_large");

    // The service's own answers are untouched, error or not.
    let missing = exchange(&server, b"GET /nowhere HTTP/1.1\r\nHost: test\r\n\r\n").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error_code(), "not_found");
    let bad_query = exchange(
        &server,
        b"GET /flights/search?limit=0 HTTP/1.1\r\nHost: test\r\n\r\n",
    )
    .await;
    assert_eq!(bad_query.status, 400);
    assert_eq!(bad_query.error_code(), "invalid_limit");
    let health = exchange(&server, HEALTH).await;
    assert_eq!(health.status, 200);
    assert!(
        health
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_closes_idle_connections() {
    let mut server = Server::start(settings(Duration::from_secs(30), 16)).await;
    let mut idle = server.connect().await;
    idle.write_all(HEALTH).await.unwrap();
    assert_eq!(read_answer(&mut idle).await.status, 200);

    // The idle keep-alive connection does not hold the shutdown up.
    server.stop_within(Duration::from_secs(3)).await;
    closed_within(&mut idle, Duration::from_secs(1)).await;
    assert!(TcpStream::connect(server.address).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limiter_keys_anonymous_clients_by_peer_address() {
    let options = Options {
        rate_limit: Some(RateLimit {
            burst: 1,
            per_second: 0.001,
        }),
        ..Options::default()
    };
    let server = Server::start_with(options, settings(Duration::from_secs(5), 16)).await;
    let search = b"GET /flights/search HTTP/1.1\r\nHost: test\r\n\r\n";
    let from = |ip: [u8; 4]| {
        let address = server.address;
        async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::from((ip, 0))).unwrap();
            socket.connect(address).await.unwrap()
        }
    };
    // 127.0.0.1 spends its bucket...
    let mut first = from([127, 0, 0, 1]).await;
    first.write_all(search).await.unwrap();
    assert_eq!(read_answer(&mut first).await.status, 200);
    first.write_all(search).await.unwrap();
    let limited = read_answer(&mut first).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.error_code(), "rate_limited");
    // ...and 127.0.0.2 has its own: the server passed the peer address on.
    let mut second = from([127, 0, 0, 2]).await;
    second.write_all(search).await.unwrap();
    assert_eq!(read_answer(&mut second).await.status, 200);
}

// ---------------------------------------------------------------------------
// the document

/// Resolves a `$ref` (or returns the value itself).
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("a local $ref");
            doc.pointer(pointer)
                .unwrap_or_else(|| panic!("{reference} does not resolve"))
        }
        None => value,
    }
}

/// Every (method, path, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                all.push((method.clone(), path.clone(), operation));
            }
        }
    }
    assert!(all.len() >= 12, "too few operations: {}", all.len());
    all
}

/// A concrete request for an operation (ids replaced by fresh UUIDs).
fn request(method: &str, path: &str, content_type: &str, body: &'static str) -> Request<Body> {
    let uri = path.replace("{id}", &Uuid::now_v7().to_string());
    Request::builder()
        .method(Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap())
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap()
}

fn openapi_document(reply: &Reply) -> Value {
    reply.expect(StatusCode::OK).clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_429_exactly_where_the_rate_limit_applies() {
    // One request per bucket: after the first (every request below carries
    // the same token, so they share its bucket), every limited route answers
    // 429.
    let app = test_app_with(
        Backend::Memory,
        Options {
            rate_limit: Some(RateLimit {
                burst: 1,
                per_second: 0.001,
            }),
            ..Options::default()
        },
    )
    .await;
    let doc = openapi_document(&app.get("/openapi.json").await);
    app.get_as("/flights/search", ADMIN)
        .await
        .expect(StatusCode::OK);
    for (method, path, operation) in operations(&doc) {
        let documented = operation["responses"].get("429");
        let reply = app
            .send(request(&method, &path, "application/json", "{}"))
            .await;
        let limited = reply.status == StatusCode::TOO_MANY_REQUESTS;
        assert_eq!(
            limited,
            documented.is_some(),
            "{method} {path}: answered {}, 429 documented: {}",
            reply.status,
            documented.is_some()
        );
        if let Some(documented) = documented {
            let response = resolve(&doc, documented);
            assert!(
                response["headers"]["Retry-After"].is_object(),
                "{method} {path}: 429 without Retry-After"
            );
            assert!(reply.headers.contains_key(header::RETRY_AFTER));
            assert_eq!(reply.error_code(), "rate_limited");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_415_on_every_json_body_route() {
    let app = test_app(Backend::Memory).await;
    let doc = openapi_document(&app.get("/openapi.json").await);
    let mut bodies = 0;
    for (method, path, operation) in operations(&doc) {
        let takes_json = operation["requestBody"]["content"]
            .get("application/json")
            .is_some();
        let documented = operation["responses"].get("415").is_some();
        assert_eq!(
            takes_json, documented,
            "{method} {path}: 415 documented: {documented}"
        );
        if !takes_json {
            continue;
        }
        bodies += 1;
        let reply = app.send(request(&method, &path, "text/plain", "x")).await;
        assert_eq!(
            reply.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{method} {path}"
        );
        assert_eq!(reply.error_code(), "unsupported_media_type");
    }
    assert_eq!(bodies, 6, "the six commands take JSON bodies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_documents_the_answers_of_the_http_layer() {
    let app = test_app(Backend::Memory).await;
    let doc = openapi_document(&app.get("/openapi.json").await);
    for (method, path, operation) in operations(&doc) {
        let responses = &operation["responses"];
        for status in ["400", "413", "414", "431", "500", "503"] {
            let response = responses
                .get(status)
                .unwrap_or_else(|| panic!("{method} {path}: no {status}"));
            let response = resolve(&doc, response);
            let schema = resolve(&doc, &response["content"]["application/json"]["schema"]);
            assert!(
                schema.is_object(),
                "{method} {path} {status}: no JSON schema"
            );
        }
        if operation["security"].is_array() {
            let unauthorized = resolve(&doc, &responses["401"]);
            assert!(unauthorized["headers"]["WWW-Authenticate"].is_object());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_describes_the_command_headers_as_the_server_reads_them() {
    let app = test_app(Backend::Memory).await;
    let doc = openapi_document(&app.get("/openapi.json").await);
    let mut commands = 0;
    for (method, path, operation) in operations(&doc) {
        let Some(parameters) = operation["parameters"].as_array() else {
            continue;
        };
        let header = |name: &str| {
            parameters
                .iter()
                .find(|p| p["in"] == "header" && p["name"] == name)
                .map(|p| &p["schema"])
        };
        let Some(request_id) = header("X-Request-Id") else {
            continue;
        };
        commands += 1;
        // Any string: the server never refuses it.
        assert_eq!(request_id["type"], "string", "{method} {path}");
        assert!(request_id.get("format").is_none(), "{method} {path}");
        // A UUID, which the server enforces.
        let key = header("Idempotency-Key").unwrap();
        assert_eq!(key["type"], "string", "{method} {path}");
        assert_eq!(key["format"], "uuid", "{method} {path}");
    }
    assert_eq!(commands, 6);

    // The server agrees: a non-UUID request id is fine, a non-UUID key is not.
    let body = example_flight().to_string();
    let reply = app
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/flights")
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .header("x-request-id", "not a uuid, just a tag")
                .body(Body::from(body.clone()))
                .unwrap(),
        )
        .await;
    reply.expect(StatusCode::CREATED);
    // `format: uuid` is the hyphenated form: the simple one is refused too.
    let simple = Uuid::now_v7().simple().to_string();
    for key in ["not-a-uuid", simple.as_str()] {
        let reply = app
            .send(
                Request::builder()
                    .method(Method::POST)
                    .uri("/flights")
                    .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .header("idempotency-key", key)
                    .body(Body::from(body.clone()))
                    .unwrap(),
            )
            .await;
        reply.expect(StatusCode::BAD_REQUEST);
        assert_eq!(reply.error_code(), "invalid_idempotency_key");
    }
    let reply = app.get(&format!("/flights/{simple}")).await;
    reply.expect(StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "invalid_id");
}
