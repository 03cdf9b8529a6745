//! The HTTP server: its own accept loop, with a header read timeout, a
//! connection limit and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::HttpSettings;
use super::parse_errors::JsonParseErrors;

/// Serves `router` on `listener` over HTTP/1.1 until `shutdown` is
/// cancelled.
///
/// Unlike `axum::serve`, it bounds what clients can hold:
///
/// - a client must send a request's headers within
///   [`HttpSettings::header_read_timeout`], or its connection is closed;
///   idle keep-alive connections are closed under the same clock;
/// - at most [`HttpSettings::max_connections`] connections are served at
///   once. The loop accepts a connection only when it has a free slot, so
///   further clients wait in the kernel's listen backlog (and, once that is
///   full, their connection attempts are not answered, so they retry or time
///   out) instead of being refused: a burst is served late, not dropped.
///
/// Requests hyper cannot parse get the API's JSON error shape too (400
/// `bad_request`, 414 `uri_too_long`, 431 `headers_too_large`; see
/// `parse_errors.rs`). Peer addresses reach the rate limiter as
/// `ConnectInfo<SocketAddr>`.
///
/// On shutdown it stops accepting (the listener is closed, so new clients
/// are refused), lets each connection finish the request it is serving and
/// closes it, and waits for that at most [`HttpSettings::drain_timeout`].
/// HTTP/2 is not served (neither was it before, with axum's default
/// features).
///
/// Of `settings`, only `header_read_timeout`, `max_connections` and
/// `drain_timeout` are read; the router carries its own copy for the rest.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &HttpSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // `Semaphore::new` panics above MAX_PERMITS; no machine gets near it.
    let slots = settings.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(slots));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    let mut connections = JoinSet::new();
    loop {
        // Finished connection tasks are reaped as they end, so the set holds
        // only the open ones.
        let slot = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            slot = Arc::clone(&slots).acquire_owned() => slot,
        };
        // The semaphore is never closed; treat it as a shutdown if it were.
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                accept_failed(error).await;
                continue;
            }
        };
        let http = http.clone();
        let router = router.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            serve_connection(http, stream, peer, router, shutdown).await;
            drop(slot);
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(settings.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open after the drain timeout; closing them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Serves one connection; on shutdown, finishes the request in flight and
/// closes it.
async fn serve_connection(
    http: http1::Builder,
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) {
    let service = service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let io = TokioIo::new(JsonParseErrors::new(stream));
    let connection = http.serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    // Client-side failures (header timeout, reset, malformed request): not
    // the server's problem, so not worth more than a debug line.
    if let Err(error) = served {
        tracing::debug!(%peer, %error, "connection closed with an error");
    }
}

/// What to do when `accept` fails: errors of one connection (the client
/// gave up before it was accepted) are skipped; others, such as running out
/// of file descriptors, would fail again at once, so the loop pauses first.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        tracing::debug!(%error, "accept: connection failed");
        return;
    }
    tracing::error!(%error, "accept failed; pausing for a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
