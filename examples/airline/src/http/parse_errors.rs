//! The JSON error shape for requests hyper rejects before the router sees
//! them.
//!
//! When hyper cannot parse a request head it answers by itself and closes
//! the connection: 400 (malformed request line or header), 414 (URI longer
//! than 65534 bytes) or 431 (header section over its buffer, or more than
//! 100 headers). hyper 1.x (`proto::h1::Conn::on_parse_error` and
//! `role::Server::on_error`) writes that answer only while no response is
//! being written on the connection, as a bare head — status line,
//! `content-length: 0`, maybe `date` and `connection: close`, blank line —
//! in a single write with nothing after it.
//!
//! [`JsonParseErrors`] wraps the connection's socket and recognises exactly
//! that write: a lone head with one of those three statuses, an empty body
//! and no content type. The service never writes one: every 4xx it answers
//! carries a JSON body and `content-type: application/json` (see
//! `error::json_errors`). The head is replaced with the same status and
//! headers plus the JSON error body. Every other write passes through
//! untouched. Should a future hyper write that answer differently, the
//! client gets hyper's bare answer again, never a broken one; the HTTP edge
//! tests would notice.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::ApiError;

/// A connection's socket whose bodiless parse-error answers from hyper are
/// rewritten to the JSON error shape (see the module docs).
#[derive(Debug)]
pub(crate) struct JsonParseErrors<T> {
    inner: T,
    /// A rewritten answer not yet fully written, and how much of it was.
    pending: Vec<u8>,
    written: usize,
}

impl<T> JsonParseErrors<T> {
    /// Wraps a socket.
    pub(crate) fn new(inner: T) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> JsonParseErrors<T> {
    /// Writes what is left of a rewritten answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Takes `buf` in as a rewritten answer when it is hyper's own; it is
    /// then written by this call or the next flush.
    fn rewrite(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Option<Poll<io::Result<usize>>> {
        let answer = json_answer(buf)?;
        self.pending = answer;
        self.written = 0;
        // Pending here is fine: `buf` counts as written, and hyper flushes
        // (or shuts down) next, which finishes the job.
        if let Poll::Ready(Err(error)) = self.poll_pending(cx) {
            return Some(Poll::Ready(Err(error)));
        }
        Some(Poll::Ready(Ok(buf.len())))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonParseErrors<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(done) = self.rewrite(cx, buf) {
            return done;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        // hyper's answer is a single buffer; a head followed by a body is
        // the service's.
        let mut non_empty = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (non_empty.next(), non_empty.next())
            && let Some(done) = self.rewrite(cx, only)
        {
            return done;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The JSON answer replacing `head`, when `head` is hyper's own answer to a
/// request it could not parse; `None` for anything else.
fn json_answer(head: &[u8]) -> Option<Vec<u8>> {
    // Cheap test first: this runs on every write of every response.
    let status = match head.get(..13)? {
        b"HTTP/1.1 400 " | b"HTTP/1.0 400 " => StatusCode::BAD_REQUEST,
        b"HTTP/1.1 414 " | b"HTTP/1.0 414 " => StatusCode::URI_TOO_LONG,
        b"HTTP/1.1 431 " | b"HTTP/1.0 431 " => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => return None,
    };
    // Exactly one head, and nothing after it.
    let text = std::str::from_utf8(head).ok()?;
    let lines = text.strip_suffix("\r\n\r\n")?;
    if lines.contains("\r\n\r\n") {
        return None;
    }
    let mut lines = lines.split("\r\n");
    let status_line = lines.next()?;
    let mut kept = Vec::new();
    let mut empty_body = false;
    let mut closes = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            empty_body = value == "0";
        } else if name.eq_ignore_ascii_case("content-type")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            return None;
        } else {
            closes |=
                name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close");
            kept.push(line);
        }
    }
    if !empty_body {
        return None;
    }
    let error = match status {
        StatusCode::BAD_REQUEST => ApiError::bad_request(
            "bad_request",
            "the request is not HTTP/1.1 this server can parse",
        ),
        other => ApiError::for_status(other),
    };
    let body = serde_json::to_vec(&error.body()).ok()?;
    let mut answer = Vec::with_capacity(head.len() + body.len() + 64);
    answer.extend_from_slice(status_line.as_bytes());
    answer.extend_from_slice(b"\r\n");
    for line in kept {
        answer.extend_from_slice(line.as_bytes());
        answer.extend_from_slice(b"\r\n");
    }
    // hyper closes the connection after such an answer; say so.
    if !closes {
        answer.extend_from_slice(b"connection: close\r\n");
    }
    answer.extend_from_slice(b"content-type: application/json\r\n");
    answer.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    answer.extend_from_slice(&body);
    Some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(head: &str) -> Option<String> {
        json_answer(head.as_bytes()).map(|a| String::from_utf8(a).unwrap())
    }

    #[test]
    fn rewrites_hyper_parse_error_answers() {
        let rewritten = answer(
            "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\
             date: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n",
        )
        .unwrap();
        let (head, body) = rewritten.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("\r\ndate: Thu, 01 Jan 2026 00:00:00 GMT"));
        assert!(head.contains("\r\ncontent-type: application/json"));
        assert!(head.contains("\r\nconnection: close"));
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "headers_too_large");

        let bad = answer("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").unwrap();
        assert!(bad.contains("\"code\":\"bad_request\""), "{bad}");
        let long = answer("HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n").unwrap();
        assert!(long.contains("\"code\":\"uri_too_long\""), "{long}");
    }

    #[test]
    fn leaves_every_other_write_alone() {
        for other in [
            // The service's own answers carry a body and a content type.
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n",
            // A head with its body in the same write.
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            "{\"error\":{}}",
            "",
        ] {
            assert_eq!(answer(other), None, "{other:?}");
        }
    }
}
