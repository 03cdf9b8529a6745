//! Configuration from flags and the environment.
//!
//! | variable | flag | default |
//! |---|---|---|
//! | `AIRLINE_LISTEN` | `--listen` | `127.0.0.1:8080` |
//! | `AIRLINE_GRPC_LISTEN` | `--grpc-listen` | `127.0.0.1:50051` (a bare port is on 127.0.0.1; `0` picks a free port, logged) |
//! | `AIRLINE_TOKENS` | (environment only) | none: embedded mode generates an admin token |
//! | `AIRLINE_RATE_LIMIT_BURST` | `--rate-limit-burst` | 100 |
//! | `AIRLINE_RATE_LIMIT_PER_SECOND` | `--rate-limit-per-second` | 50 (0 turns limiting off) |
//! | `AIRLINE_BODY_LIMIT` | `--body-limit` | 65536 bytes |
//! | `AIRLINE_REQUEST_TIMEOUT_SECS` | `--request-timeout-secs` | 10 |
//! | `AIRLINE_READ_WAIT_SECS` | `--read-wait-secs` | 5 |
//! | `AIRLINE_MAX_PROJECTION_LAG_SECS` | `--max-projection-lag-secs` | 60 |
//! | `AIRLINE_HEADER_READ_TIMEOUT_SECS` | `--header-read-timeout-secs` | 5 |
//! | `AIRLINE_MAX_CONNECTIONS` | `--max-connections` | 1024 |
//! | `AIRLINE_DRAIN_TIMEOUT_SECS` | `--drain-timeout-secs` | 15 |
//! | `AIRLINE_SEED_FLIGHTS` | `--seed-flights` | 200 (embedded mode) |
//! | `AIRLINE_SAGA_PARTITIONS` | `--saga-partitions` | 1: the booking saga's partitions (1 to 1024), shared among the processes that run projections |
//! | `AIRLINE_STORE` | `--store memory\|postgres` | postgres with `DATABASE_URL`, else memory |
//! | `AIRLINE_READ_MODEL` | `--read-model memory\|elastic` | elastic with `ELASTICSEARCH_URL`, else memory |
//! | `DATABASE_URL` | `--database-url` | none |
//! | `ELASTICSEARCH_URL` | `--elasticsearch-url` | none |
//! | `AIRLINE_PAYMENTS_OUTAGE_SECS` | `--payments-outage-secs` | 0: the simulated payment provider is unavailable this long after start |
//! | `AMQP_URL` (or `RABBITMQ_URL`) | `--amqp-url` | none: no integration events; set, `serve` and `project` run the relay |
//! | `AIRLINE_EXCHANGE` | `--exchange` | `airline.events`: the topic exchange of the integration events |
//! | `AIRLINE_NOTIFY_QUEUE` | `--notify-queue` | `airline.notifications`: the notifications' queue (`airline notify`) |
//! | `AIRLINE_NOTIFY_WORKERS` | `--notify-workers` | 4: messages the notifications process at once |

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::grpc::GrpcSettings;
use crate::http::{HttpSettings, RateLimit, Tokens, TokensError};

/// Where events are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// The in-memory store: nothing survives a restart.
    Memory,
    /// PostgreSQL at `DATABASE_URL`.
    Postgres,
}

/// Where the flight read model lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReadModelKind {
    /// In process memory, rebuilt from the log at start.
    Memory,
    /// Elasticsearch (or OpenSearch) at `ELASTICSEARCH_URL`.
    Elastic,
}

impl ReadModelKind {
    /// Its name on the command line and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadModelKind::Memory => "memory",
            ReadModelKind::Elastic => "elastic",
        }
    }
}

/// The service's configuration. Its `Debug` hides tokens and URLs' secrets.
#[derive(Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "AIRLINE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Address of the gRPC flight search (proto/flights.proto): an address,
    /// or a port on 127.0.0.1; port 0 picks a free one (logged).
    #[arg(
        long,
        env = "AIRLINE_GRPC_LISTEN",
        default_value = "127.0.0.1:50051",
        value_parser = listen_address
    )]
    pub grpc_listen: SocketAddr,

    /// Bearer tokens and roles, "token:role,token:role" (roles: reader,
    /// agent, admin). Read from the environment only, never a flag.
    #[arg(skip)]
    pub tokens: Option<String>,

    /// Requests a client may send back to back (token bucket size).
    #[arg(long, env = "AIRLINE_RATE_LIMIT_BURST", default_value_t = 100)]
    pub rate_limit_burst: u32,

    /// Requests per second a client's bucket refills; 0 turns rate limiting off.
    #[arg(long, env = "AIRLINE_RATE_LIMIT_PER_SECOND", default_value_t = 50.0)]
    pub rate_limit_per_second: f64,

    /// Largest request body in bytes.
    #[arg(long, env = "AIRLINE_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,

    /// Longest a request may take, seconds.
    #[arg(long, env = "AIRLINE_REQUEST_TIMEOUT_SECS", default_value_t = 10.0)]
    pub request_timeout_secs: f64,

    /// Longest a query with `min_position` waits for the read side, seconds.
    #[arg(long, env = "AIRLINE_READ_WAIT_SECS", default_value_t = 5.0)]
    pub read_wait_secs: f64,

    /// A projection further behind than this (seconds) makes /health answer 503.
    #[arg(long, env = "AIRLINE_MAX_PROJECTION_LAG_SECS", default_value_t = 60.0)]
    pub max_projection_lag_secs: f64,

    /// Longest a client may take to send a request's headers (and longest a
    /// keep-alive connection may idle), seconds.
    #[arg(long, env = "AIRLINE_HEADER_READ_TIMEOUT_SECS", default_value_t = 5.0)]
    pub header_read_timeout_secs: f64,

    /// Most connections served at once; more wait in the listen backlog.
    #[arg(long, env = "AIRLINE_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// How long a shutdown waits for open connections to finish, seconds.
    #[arg(long, env = "AIRLINE_DRAIN_TIMEOUT_SECS", default_value_t = 15.0)]
    pub drain_timeout_secs: f64,

    /// Flights to seed in embedded in-memory mode.
    #[arg(long, env = "AIRLINE_SEED_FLIGHTS", default_value_t = 200)]
    pub seed_flights: usize,

    /// Partitions of the booking saga (by booking): with more than one,
    /// every process running projections claims its share of them.
    /// Changing it starts the saga's checkpoints afresh (see the README's
    /// "Scaling out").
    #[arg(long, env = "AIRLINE_SAGA_PARTITIONS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub saga_partitions: u32,

    /// Event store: postgres when DATABASE_URL is set, else memory.
    #[arg(long, env = "AIRLINE_STORE", value_enum)]
    pub store: Option<StoreKind>,

    /// Flight read model: elastic when ELASTICSEARCH_URL is set, else memory.
    #[arg(long, env = "AIRLINE_READ_MODEL", value_enum)]
    pub read_model: Option<ReadModelKind>,

    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Elasticsearch or OpenSearch URL.
    #[arg(long, env = "ELASTICSEARCH_URL", hide_env_values = true)]
    pub elasticsearch_url: Option<String>,

    /// Prefix of the airline's index and alias names in Elasticsearch.
    #[arg(long, env = "AIRLINE_INDEX_PREFIX", default_value = "airline_")]
    pub index_prefix: String,

    /// Seconds after start during which the simulated payment provider is
    /// unavailable (to watch the saga ride out an outage); 0 for none.
    #[arg(long, env = "AIRLINE_PAYMENTS_OUTAGE_SECS", default_value_t = 0.0)]
    pub payments_outage_secs: f64,

    /// RabbitMQ URL (`amqp://user:pass@host:port/vhost`; `RABBITMQ_URL` is
    /// read when unset): where integration events are published.
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,

    /// The topic exchange of the airline's integration events.
    #[arg(long, env = "AIRLINE_EXCHANGE", default_value = "airline.events")]
    pub exchange: String,

    /// The queue the notifications consume (`airline notify`).
    #[arg(
        long,
        env = "AIRLINE_NOTIFY_QUEUE",
        default_value = "airline.notifications"
    )]
    pub notify_queue: String,

    /// Messages the notifications process at once (one worker per group of bookings).
    #[arg(long, env = "AIRLINE_NOTIFY_WORKERS", default_value_t = 4)]
    pub notify_workers: usize,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("grpc_listen", &self.grpc_listen)
            .field("tokens", &self.tokens.as_ref().map(|_| "<hidden>"))
            .field("rate_limit_burst", &self.rate_limit_burst)
            .field("rate_limit_per_second", &self.rate_limit_per_second)
            .field("body_limit", &self.body_limit)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("read_wait_secs", &self.read_wait_secs)
            .field("header_read_timeout_secs", &self.header_read_timeout_secs)
            .field("max_connections", &self.max_connections)
            .field("drain_timeout_secs", &self.drain_timeout_secs)
            .field("store", &self.store_kind())
            .field("read_model", &self.read_model_kind())
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field(
                "elasticsearch_url",
                &self.elasticsearch_url.as_ref().map(|_| "<set>"),
            )
            .field("amqp_url", &self.amqp_url.as_ref().map(|_| "<set>"))
            .field("exchange", &self.exchange)
            .field("notify_queue", &self.notify_queue)
            .field("notify_workers", &self.notify_workers)
            .finish()
    }
}

/// A configuration value out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// `AIRLINE_TOKENS` did not parse.
    #[error("AIRLINE_TOKENS: {0}")]
    Tokens(#[from] TokensError),
    /// A duration that is not a positive number of seconds.
    #[error("{0} must be a positive number of seconds")]
    Duration(&'static str),
    /// A count that must be at least one.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// A backend chosen without its URL.
    #[error("{0}")]
    Missing(&'static str),
}

fn seconds(name: &'static str, value: f64) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or(ConfigError::Duration(name))
}

/// A socket address, or a bare port on 127.0.0.1 (`0`: any free port).
fn listen_address(value: &str) -> Result<SocketAddr, String> {
    let value = value.trim();
    if let Ok(port) = value.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    value
        .parse()
        .map_err(|_| format!("{value:?} is not an address (e.g. 127.0.0.1:50051) or a port"))
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

impl Config {
    /// The simulated payment provider's outage at start, if any.
    pub fn payments_outage(&self) -> Option<Duration> {
        Duration::try_from_secs_f64(self.payments_outage_secs)
            .ok()
            .filter(|outage| !outage.is_zero())
    }

    /// Fills what only the environment may give (the tokens) and drops
    /// empty values. Call once after parsing flags.
    pub fn with_environment(mut self) -> Self {
        self.tokens = non_empty(std::env::var("AIRLINE_TOKENS").ok());
        self.database_url = non_empty(self.database_url);
        self.elasticsearch_url = non_empty(self.elasticsearch_url);
        self.amqp_url =
            non_empty(self.amqp_url).or_else(|| non_empty(std::env::var("RABBITMQ_URL").ok()));
        self
    }

    /// `AMQP_URL`, required by the integration relay and the notifications.
    pub fn amqp_url(&self) -> Result<&str, ConfigError> {
        self.amqp_url.as_deref().ok_or(ConfigError::Missing(
            "integration events need AMQP_URL (or RABBITMQ_URL)",
        ))
    }

    /// The configured tokens, `None` when `AIRLINE_TOKENS` is not set.
    pub fn tokens(&self) -> Result<Option<Tokens>, ConfigError> {
        match &self.tokens {
            None => Ok(None),
            Some(spec) => Ok(Some(Tokens::parse(spec)?)),
        }
    }

    /// The store to use.
    pub fn store_kind(&self) -> StoreKind {
        self.store.unwrap_or(if self.database_url.is_some() {
            StoreKind::Postgres
        } else {
            StoreKind::Memory
        })
    }

    /// The read model to use.
    pub fn read_model_kind(&self) -> ReadModelKind {
        self.read_model
            .unwrap_or(if self.elasticsearch_url.is_some() {
                ReadModelKind::Elastic
            } else {
                ReadModelKind::Memory
            })
    }

    /// `DATABASE_URL`, required for the postgres store.
    pub fn database_url(&self) -> Result<&str, ConfigError> {
        self.database_url
            .as_deref()
            .ok_or(ConfigError::Missing("--store postgres needs DATABASE_URL"))
    }

    /// `ELASTICSEARCH_URL`, required for the elastic read model.
    pub fn elasticsearch_url(&self) -> Result<&str, ConfigError> {
        self.elasticsearch_url
            .as_deref()
            .ok_or(ConfigError::Missing(
                "--read-model elastic needs ELASTICSEARCH_URL",
            ))
    }

    /// True when neither store nor read model is external.
    pub fn is_embedded(&self) -> bool {
        self.store_kind() == StoreKind::Memory && self.read_model_kind() == ReadModelKind::Memory
    }

    /// The gRPC server's limits: the same request and drain timeouts as
    /// the HTTP layer's.
    pub fn grpc_settings(&self) -> Result<GrpcSettings, ConfigError> {
        Ok(GrpcSettings {
            request_timeout: seconds("AIRLINE_REQUEST_TIMEOUT_SECS", self.request_timeout_secs)?,
            drain_timeout: seconds("AIRLINE_DRAIN_TIMEOUT_SECS", self.drain_timeout_secs)?,
        })
    }

    /// The HTTP layer's limits.
    pub fn http_settings(&self) -> Result<HttpSettings, ConfigError> {
        let rate_limit =
            (self.rate_limit_per_second > 0.0 && self.rate_limit_burst > 0).then_some(RateLimit {
                burst: self.rate_limit_burst,
                per_second: self.rate_limit_per_second,
            });
        if let Some(limit) = rate_limit
            && !limit.per_second.is_finite()
        {
            return Err(ConfigError::Duration("AIRLINE_RATE_LIMIT_PER_SECOND"));
        }
        Ok(HttpSettings {
            body_limit: self.body_limit,
            request_timeout: seconds("AIRLINE_REQUEST_TIMEOUT_SECS", self.request_timeout_secs)?,
            read_wait: seconds("AIRLINE_READ_WAIT_SECS", self.read_wait_secs)?,
            rate_limit,
            max_projection_lag: seconds(
                "AIRLINE_MAX_PROJECTION_LAG_SECS",
                self.max_projection_lag_secs,
            )?,
            header_read_timeout: seconds(
                "AIRLINE_HEADER_READ_TIMEOUT_SECS",
                self.header_read_timeout_secs,
            )?,
            max_connections: Some(self.max_connections)
                .filter(|n| *n > 0)
                .ok_or(ConfigError::Zero("AIRLINE_MAX_CONNECTIONS"))?,
            drain_timeout: seconds("AIRLINE_DRAIN_TIMEOUT_SECS", self.drain_timeout_secs)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["airline"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap().config
    }

    #[test]
    fn defaults_are_the_embedded_mode() {
        let config = Config {
            database_url: None,
            elasticsearch_url: None,
            store: None,
            read_model: None,
            ..parse(&["--listen", "127.0.0.1:8080"])
        };
        assert!(config.is_embedded());
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        let settings = config.http_settings().unwrap();
        assert_eq!(settings.body_limit, 64 * 1024);
        assert_eq!(settings.read_wait, Duration::from_secs(5));
        assert!(settings.rate_limit.is_some());
        assert_eq!(settings.header_read_timeout, Duration::from_secs(5));
        assert_eq!(settings.max_connections, 1024);
        assert!(format!("{config:?}").contains("Memory"));
    }

    #[test]
    fn flags_choose_backends_and_limits() {
        let config = parse(&[
            "--store",
            "postgres",
            "--read-model",
            "elastic",
            "--rate-limit-per-second",
            "0",
            "--request-timeout-secs",
            "2.5",
        ]);
        assert_eq!(config.store_kind(), StoreKind::Postgres);
        assert_eq!(config.read_model_kind(), ReadModelKind::Elastic);
        let settings = config.http_settings().unwrap();
        assert_eq!(settings.rate_limit, None);
        assert_eq!(settings.request_timeout, Duration::from_millis(2500));
        let edges = parse(&[
            "--header-read-timeout-secs",
            "0.5",
            "--max-connections",
            "7",
            "--drain-timeout-secs",
            "3",
        ])
        .http_settings()
        .unwrap();
        assert_eq!(edges.header_read_timeout, Duration::from_millis(500));
        assert_eq!(edges.max_connections, 7);
        assert_eq!(edges.drain_timeout, Duration::from_secs(3));
        assert_eq!(
            parse(&["--max-connections", "0"]).http_settings(),
            Err(ConfigError::Zero("AIRLINE_MAX_CONNECTIONS"))
        );
        let bad = parse(&["--read-wait-secs", "0"]);
        assert_eq!(
            bad.http_settings(),
            Err(ConfigError::Duration("AIRLINE_READ_WAIT_SECS"))
        );
    }

    #[test]
    fn the_grpc_address_is_an_address_or_a_port() {
        assert_eq!(parse(&[]).grpc_listen, "127.0.0.1:50051".parse().unwrap());
        for (value, address) in [
            ("0", "127.0.0.1:0"),
            ("50052", "127.0.0.1:50052"),
            ("0.0.0.0:9090", "0.0.0.0:9090"),
            ("[::1]:0", "[::1]:0"),
        ] {
            assert_eq!(
                parse(&["--grpc-listen", value]).grpc_listen,
                address.parse().unwrap(),
                "{value}"
            );
        }
        assert!(Cli::try_parse_from(["airline", "--grpc-listen", "somewhere"]).is_err());
        let settings = parse(&["--request-timeout-secs", "2", "--drain-timeout-secs", "3"])
            .grpc_settings()
            .unwrap();
        assert_eq!(settings.request_timeout, Duration::from_secs(2));
        assert_eq!(settings.drain_timeout, Duration::from_secs(3));
    }

    #[test]
    fn tokens_are_never_shown() {
        let config = Config {
            tokens: Some("s3cret:admin".into()),
            database_url: Some("postgres://u:pw@host/db".into()),
            ..parse(&[])
        };
        assert_eq!(
            config.tokens().unwrap().unwrap().role("s3cret"),
            Some(crate::http::Role::Admin)
        );
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("pw"),
            "{shown}"
        );
        let bad = Config {
            tokens: Some("s3cret:root".into()),
            ..parse(&[])
        };
        assert!(!bad.tokens().unwrap_err().to_string().contains("s3cret"));
    }
}
