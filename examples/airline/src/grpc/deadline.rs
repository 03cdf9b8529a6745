//! When a call must have been answered: the client's deadline
//! (`grpc-timeout`), or the server's own request timeout.

use std::time::Duration;

use tokio::time::Instant;
use tonic::metadata::MetadataMap;

/// The longest part of a client's timeout kept back for the answer's way
/// back (see [`Deadline::new`]).
const MAX_MARGIN: Duration = Duration::from_millis(100);

/// The instant by which a call answers, and whose it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Deadline {
    at: Instant,
    client: bool,
}

impl Deadline {
    /// The deadline of a call received now: the client's `timeout`, if it
    /// sent one and it ends before the server's `limit`, else `limit`.
    ///
    /// The client's deadline is brought forward by a tenth of its timeout
    /// (at most [`MAX_MARGIN`]): an answer must reach the client before its
    /// deadline to be read (a tonic client stops waiting at its deadline and
    /// reports `CANCELLED`; tonic's server does the same at the same instant),
    /// so the server answers `DEADLINE_EXCEEDED` itself, a little earlier.
    pub(super) fn new(timeout: Option<Duration>, limit: Duration) -> Self {
        match timeout {
            Some(timeout) if timeout < limit => Self::client(timeout),
            _ => Self {
                at: after(limit),
                client: false,
            },
        }
    }

    /// The client's deadline alone, brought forward as [`Deadline::new`] says.
    pub(super) fn client(timeout: Duration) -> Self {
        let margin = (timeout / 10).min(MAX_MARGIN);
        Self {
            at: after(timeout - margin),
            client: true,
        }
    }

    /// The deadline of a call whose request carries `metadata`.
    pub(super) fn of(metadata: &MetadataMap, limit: Duration) -> Self {
        Self::new(client_timeout(metadata), limit)
    }

    /// The instant.
    pub(super) fn at(&self) -> Instant {
        self.at
    }

    /// Whether it is the client's (else the server's request timeout).
    pub(super) fn is_client(&self) -> bool {
        self.client
    }

    /// The time left, zero once passed.
    pub(super) fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Whether it has passed.
    pub(super) fn passed(&self) -> bool {
        Instant::now() >= self.at
    }
}

/// Now plus `duration`, or a far future that `Instant` can still hold.
fn after(duration: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(duration)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

/// The client's timeout: the `grpc-timeout` header, at most 8 digits and a
/// unit (`H`, `M`, `S`, `m`, `u`, `n`). A malformed one is ignored, as tonic
/// itself ignores it.
pub(super) fn client_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    parse_timeout(value)
}

fn parse_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 60 * 60),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_as_the_grpc_protocol_writes_them() {
        for (value, expected) in [
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("3S", Some(Duration::from_secs(3))),
            ("250m", Some(Duration::from_millis(250))),
            ("7u", Some(Duration::from_micros(7))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("0m", Some(Duration::ZERO)),
            ("", None),
            ("m", None),
            ("100", None),
            ("100x", None),
            ("123456789S", None),
            ("-1S", None),
            ("1.5S", None),
            ("5é", None),
        ] {
            assert_eq!(parse_timeout(value), expected, "{value:?}");
        }
    }

    #[tokio::test]
    async fn the_earlier_of_the_client_and_the_server_wins() {
        let close = |d: Duration, expected: u64| {
            let expected = Duration::from_millis(expected);
            d <= expected && expected - d < Duration::from_millis(50)
        };
        let server = Duration::from_secs(10);
        let none = Deadline::new(None, server);
        assert!(!none.is_client());
        assert!(close(none.remaining(), 10_000));
        let later = Deadline::new(Some(Duration::from_secs(30)), server);
        assert!(!later.is_client());
        assert!(close(later.remaining(), 10_000));

        let client = Deadline::new(Some(Duration::from_millis(500)), server);
        assert!(client.is_client());
        assert!(close(client.remaining(), 450), "a tenth kept back");
        let long = Deadline::new(Some(Duration::from_secs(5)), server);
        assert!(close(long.remaining(), 4_900), "at most 100 ms");
        assert!(!long.passed());

        let now = Deadline::new(Some(Duration::ZERO), server);
        assert!(now.is_client() && now.passed());
        assert_eq!(now.remaining(), Duration::ZERO);
        // A server limit too far away for an `Instant` is a far future.
        assert!(!Deadline::new(None, Duration::MAX).passed());
    }
}
