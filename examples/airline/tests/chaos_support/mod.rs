//! The chaos harness: the real `airline` binary in child processes, on the
//! test's own PostgreSQL schema and Elasticsearch index prefix, driven over
//! HTTP, killed, frozen and deprived of its servers; and the invariant
//! checker over what it left in the log.
//!
//! Every wait is bounded ([`Bound`]); every child process is killed when its
//! [`Server`] is dropped, a frozen search server is thawed when its [`Freeze`]
//! is dropped, and a stopped database is started again when its [`Outage`]
//! is dropped, panics included. Each scenario's logs are in a folder of its
//! own ([`Stage::dir`]), kept when the test fails.
#![allow(dead_code)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use airline::booking::SimulatedPayments;
use airline::invariants::{Checker, Report};
use airline::search::ElasticFlights;
use airline::search::{FlightReads, flight_events};
use annals::EventStore;
use annals::projection::wait_for_checkpoint;
use annals_postgres::PgEventStore;
use annals_testkit::{PgTest, SearchTest};
use serde_json::{Value, json};
use uuid::Uuid;

/// May schedule flights.
pub const ADMIN: &str = "chaos-admin-token";
/// May book and cancel.
pub const AGENT: &str = "chaos-agent-token";

/// `ANNALS_ES_PID`: the pid of the Elasticsearch JVM at `ELASTICSEARCH_URL`.
pub const ES_PID_ENV: &str = "ANNALS_ES_PID";
/// `ANNALS_PG_STOP`: a shell command that stops the PostgreSQL server of `DATABASE_URL`.
pub const PG_STOP_ENV: &str = "ANNALS_PG_STOP";
/// `ANNALS_PG_START`: a shell command that starts it again (and returns once it accepts connections).
pub const PG_START_ENV: &str = "ANNALS_PG_START";
/// `ANNALS_CHAOS_BINARY`: the `airline` binary to run instead of the one cargo built.
pub const BINARY_ENV: &str = "ANNALS_CHAOS_BINARY";

/// How long an HTTP call may take before the client gives up: above the
/// service's own request timeout (10 s), so a hang shows as such.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a started process may take to answer `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A control variable a scenario needs: its value, or `None` after saying
/// why the scenario is skipped (a failure under `ANNALS_REQUIRE_SERVICES`).
pub fn control(name: &str, scenario: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => Some(value),
        _ => {
            assert!(
                !annals_testkit::services_required(),
                "{scenario} needs {name} (ANNALS_REQUIRE_SERVICES is set): scripts/test sets it \
                 when it started the server itself; see scripts/README.md"
            );
            eprintln!("skipping {scenario}: {name} is not set (see scripts/README.md)");
            None
        }
    }
}

/// A wait with an end: [`Bound::tick`] sleeps a little, or fails the test
/// with the evidence once the time is up.
pub struct Bound {
    what: String,
    started: Instant,
    limit: Duration,
}

impl Bound {
    /// Waiting for `what`, at most `limit`.
    pub fn new(what: impl Into<String>, limit: Duration) -> Self {
        Self {
            what: what.into(),
            started: Instant::now(),
            limit,
        }
    }

    /// Sleeps 200 ms; panics with `evidence()` when the bound is passed.
    pub async fn tick(&self, evidence: impl FnOnce() -> String) {
        assert!(
            self.started.elapsed() < self.limit,
            "timed out after {:?} waiting for {}: {}",
            self.limit,
            self.what,
            evidence()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// Panics with `evidence()` when the bound is passed; no sleep, for
    /// waits that poll at their own pace.
    pub fn check(&self, evidence: impl FnOnce() -> String) {
        assert!(
            self.started.elapsed() < self.limit,
            "timed out after {:?} waiting for {}: {}",
            self.limit,
            self.what,
            evidence()
        );
    }

    /// Time since the wait began.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// A scenario's folder for logs: removed when the scenario passes, kept
/// (and named) when it fails.
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// A fresh folder for `scenario` under the target's temporary folder.
    pub fn new(scenario: &str) -> Self {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("chaos")
            .join(format!(
                "{scenario}-{}",
                &Uuid::new_v4().simple().to_string()[..8]
            ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self { path }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("ANNALS_KEEP_TEST_DATA").is_some() {
            eprintln!("chaos logs kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: Value,
    /// How long it took.
    pub elapsed: Duration,
}

impl Reply {
    /// The `error.code` of an error answer.
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

/// One scenario: the test's schema and index prefix, its log folder, an
/// HTTP client. Fields are dropped in order: servers first (they are owned
/// by the test body), then the folder, then the schema and indexes.
pub struct Stage {
    /// The log folder.
    pub dir: RunDir,
    /// The test's PostgreSQL schema.
    pub pg: PgTest,
    /// The test's index prefix.
    pub es: SearchTest,
    http: reqwest::Client,
    binary: PathBuf,
    spawned: std::sync::atomic::AtomicU32,
}

impl Stage {
    /// The scenario's servers; `None` when PostgreSQL or Elasticsearch is
    /// missing (a failure under `ANNALS_REQUIRE_SERVICES`).
    pub async fn new(scenario: &str) -> Option<Self> {
        let pg = annals_testkit::postgres().await?;
        let es = annals_testkit::search().await?;
        let binary = std::env::var_os(BINARY_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_airline")));
        let http = reqwest::Client::builder()
            .timeout(CLIENT_TIMEOUT)
            .build()
            .expect("an HTTP client");
        Some(Self {
            dir: RunDir::new(scenario),
            pg,
            es,
            http,
            binary,
            spawned: Default::default(),
        })
    }

    /// Starts `airline serve` on a free port with the test's schema and
    /// index prefix (and `env` on top), and waits until it answers `/health`.
    pub async fn serve(&self, label: &str, env: &[(&str, &str)]) -> Server {
        let mut last = String::new();
        // A port picked free can be taken before the child binds it: try another.
        for _ in 0..3 {
            let mut server = self.spawn(label, env);
            match server.wait_ready(&self.http).await {
                Ok(()) => return server,
                Err(why) if why.contains("cannot listen") => last = why,
                Err(why) => panic!("{label} did not start: {why}"),
            }
        }
        panic!("{label} did not start: {last}");
    }

    fn spawn(&self, label: &str, env: &[(&str, &str)]) -> Server {
        let n = self
            .spawned
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("{n}-{label}");
        let port = free_port();
        let stdout = self.dir.path().join(format!("{name}.stdout"));
        let stderr = self.dir.path().join(format!("{name}.stderr"));
        let file = |path: &Path| {
            File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()))
        };
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .env("AIRLINE_LISTEN", format!("127.0.0.1:{port}"))
            // Servers run side by side: each gets a free gRPC port.
            .env("AIRLINE_GRPC_LISTEN", "0")
            .env("DATABASE_URL", self.pg.url())
            .env("ELASTICSEARCH_URL", search_url())
            .env("AIRLINE_INDEX_PREFIX", self.es.prefix())
            .env("AIRLINE_TOKENS", format!("{ADMIN}:admin,{AGENT}:agent"))
            .env("AIRLINE_RATE_LIMIT_PER_SECOND", "0")
            .env(
                "RUST_LOG",
                "info,sqlx=warn,elasticsearch=warn,tower_http=warn,hyper=warn",
            )
            .env_remove("AIRLINE_STORE")
            .env_remove("AIRLINE_READ_MODEL")
            .env_remove("AIRLINE_PAYMENTS_OUTAGE_SECS")
            .stdin(Stdio::null())
            .stdout(file(&stdout))
            .stderr(file(&stderr));
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        Server {
            name,
            url: format!("http://127.0.0.1:{port}"),
            child,
            stdout,
            stderr,
        }
    }

    /// A request; `Err` when no answer came (refused, reset, timed out).
    pub async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply, String> {
        let mut request = self.http.request(method, url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let started = Instant::now();
        let response = request.send().await.map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| format!("{e:?}"))?;
        Ok(Reply {
            status,
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
            elapsed: started.elapsed(),
        })
    }

    /// `GET`, anonymous unless a token is given.
    pub async fn get(&self, url: &str, token: Option<&str>) -> Result<Reply, String> {
        self.call(reqwest::Method::GET, url, token, None).await
    }

    /// `POST` with a JSON body.
    pub async fn post(&self, url: &str, token: &str, body: &Value) -> Result<Reply, String> {
        self.call(reqwest::Method::POST, url, Some(token), Some(body))
            .await
    }

    /// Schedules a flight through `server`; its id and position.
    pub async fn schedule(&self, server: &Server, number: u32, seats: u32) -> (Uuid, String) {
        let reply = self
            .post(
                &format!("{}/flights", server.url),
                ADMIN,
                &flight_body(number, seats),
            )
            .await
            .unwrap_or_else(|e| panic!("scheduling through {}: {e}", server.name));
        assert_eq!(reply.status, 201, "scheduling: {:?}", reply.json);
        (id_of(&reply), position_of(&reply))
    }

    /// Books through `server`; the reply as it came (or no answer).
    pub async fn book(
        &self,
        server_url: &str,
        segments: &[(Uuid, u32)],
        card: &str,
    ) -> Result<Reply, String> {
        self.post(
            &format!("{server_url}/bookings"),
            AGENT,
            &booking_body(segments, card),
        )
        .await
    }

    /// A booking's status as `server` tells it.
    pub async fn booking_status(&self, server: &Server, id: Uuid) -> String {
        let reply = self
            .get(&format!("{}/bookings/{id}", server.url), Some(AGENT))
            .await
            .unwrap_or_else(|e| panic!("reading booking {id}: {e}"));
        assert_eq!(reply.status, 200, "booking {id}: {:?}", reply.json);
        reply.json["status"].as_str().unwrap_or_default().to_owned()
    }

    /// The event store of the test's schema, in this process.
    pub fn store(&self) -> PgEventStore {
        PgEventStore::from_pool(self.pg.pool().clone())
    }

    /// The flight read model the servers keep, read from this process.
    pub fn reads(&self) -> ElasticFlights {
        let client = annals_elastic::connect_with_timeout(&search_url(), Duration::from_secs(10))
            .expect("an Elasticsearch client");
        ElasticFlights::new(client, self.es.prefix())
    }

    /// The event types of a stream, in order.
    pub async fn types_in(&self, stream: &str) -> Vec<String> {
        self.store()
            .read_stream(stream, 1, 10_000)
            .await
            .unwrap_or_else(|e| panic!("reading {stream}: {e}"))
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }

    /// Runs the invariant checker (provider ledger and read model included)
    /// until it finds nothing, at most `limit`; the clean report. Panics
    /// with the last report, and where the logs are, when time runs out.
    pub async fn settled(&self, limit: Duration) -> Report {
        let store = self.store();
        let payments = SimulatedPayments::on_postgres(self.pg.pool().clone())
            .await
            .expect("the provider's ledger");
        let reads = self.reads();
        let bound = Bound::new("the invariants to hold", limit);
        loop {
            let outcome = check(&store, &payments, &reads).await;
            match &outcome {
                Ok(report) if report.is_ok() => return report.clone(),
                _ => {}
            }
            bound
                .tick(|| match outcome {
                    Ok(report) => format!("{report}\n(logs in {})", self.dir.path().display()),
                    Err(error) => {
                        format!("{error}\n(logs in {})", self.dir.path().display())
                    }
                })
                .await;
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
    }
}

/// One run of the checker, after letting the read model catch up with the
/// log (briefly: a read model still behind is reported, and retried).
async fn check(
    store: &PgEventStore,
    payments: &SimulatedPayments,
    reads: &ElasticFlights,
) -> Result<Report, String> {
    let head = store.head().await.map_err(|e| e.to_string())?;
    wait_for_checkpoint(
        store,
        &reads.projection_name(),
        &flight_events(),
        head,
        Duration::from_secs(5),
    )
    .await
    .map_err(|e| format!("the read model is behind: {e}"))?;
    Checker::new(store)
        .with_payments(payments)
        .with_reads(reads as &dyn FlightReads)
        .check()
        .await
        .map_err(|e| e.to_string())
}

/// A running `airline` process. Dropping it kills it (after waking it, if
/// it was stopped).
pub struct Server {
    /// `<n>-<label>`, also the name of its log files.
    pub name: String,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Server {
    /// Its process id.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("a pid fits an i32")
    }

    /// `kill -9`, and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything it wrote so far, stdout then stderr.
    pub fn log(&self) -> String {
        [&self.stdout, &self.stderr]
            .iter()
            .map(|path| std::fs::read_to_string(path).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The last lines of its output, for failure messages.
    pub fn tail(&self) -> String {
        let mut out = String::new();
        for path in [&self.stdout, &self.stderr] {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(30);
            out.push_str(&format!("--- {} ---\n", path.display()));
            out.push_str(&lines[from..].join("\n"));
            out.push('\n');
        }
        out
    }

    /// Its `/health` answer, `None` when it does not answer.
    pub async fn health(&self, stage: &Stage) -> Option<Reply> {
        stage.get(&format!("{}/health", self.url), None).await.ok()
    }

    /// The state (`running`, `standby`, ...) of one of its projection runners.
    pub async fn runner_state(&self, stage: &Stage, runner: &str) -> Option<String> {
        let health = self.health(stage).await?;
        health.json["projections"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == runner)
            .and_then(|p| p["state"].as_str().map(str::to_owned))
    }

    /// Waits until `/health` answers (any status: a dependency may be down
    /// on purpose); `Err` with its output when it exits or time runs out.
    async fn wait_ready(&mut self, http: &reqwest::Client) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited with {status}\n{}",
                    self.name,
                    self.tail()
                ));
            }
            let answer = http
                .get(format!("{}/health", self.url))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if answer.is_ok() {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "{} did not answer /health within {START_TIMEOUT:?}\n{}",
                    self.name,
                    self.tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.pid(), libc::SIGCONT);
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Sends a signal to a process.
pub fn signal(pid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) takes any pid and signal number; failures are reported
    // through its return value, which is checked.
    let done = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        done,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// A process stopped with SIGSTOP, continued with SIGCONT when dropped.
pub struct Freeze {
    pid: i32,
    frozen: bool,
}

impl Freeze {
    /// Stops `pid`.
    pub fn new(pid: i32) -> Self {
        signal(pid, libc::SIGSTOP);
        Self { pid, frozen: true }
    }

    /// Continues it.
    pub fn thaw(&mut self) {
        if std::mem::take(&mut self.frozen) {
            signal(self.pid, libc::SIGCONT);
        }
    }
}

impl Drop for Freeze {
    fn drop(&mut self) {
        self.thaw();
    }
}

/// The database stopped by a shell command, started again by another when
/// [`Outage::end`] is called or the value dropped.
pub struct Outage {
    start: String,
    ended: bool,
}

impl Outage {
    /// Runs `stop`.
    pub fn begin(stop: &str, start: &str) -> Self {
        shell(stop);
        Self {
            start: start.to_owned(),
            ended: false,
        }
    }

    /// Runs the start command (once).
    pub fn end(&mut self) {
        if !std::mem::replace(&mut self.ended, true) {
            shell(&self.start);
        }
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.end();
    }
}

/// How long a command that stops or starts a server may take.
const SHELL_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs a shell command, at most [`SHELL_TIMEOUT`], failing the test (not
/// while one already fails) when it fails.
fn shell(command: &str) {
    let failure = match run_bounded(command) {
        Ok(()) => return,
        Err(failure) => failure,
    };
    if std::thread::panicking() {
        eprintln!("`{command}` failed: {failure}");
    } else {
        panic!("`{command}` failed: {failure}");
    }
}

fn run_bounded(command: &str) -> Result<(), String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => {
                let output = child.wait_with_output().map_err(|e| e.to_string())?;
                return Err(format!(
                    "{status}: {}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            None if started.elapsed() > SHELL_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("still running after {SHELL_TIMEOUT:?}: killed"));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The Elasticsearch URL the tests use.
pub fn search_url() -> String {
    std::env::var(annals_testkit::ELASTICSEARCH_URL_ENV).unwrap_or_default()
}

/// The pid of the search server's JVM, as the server itself tells it.
pub async fn search_pid(stage: &Stage) -> Option<i64> {
    let url = format!(
        "{}/_nodes/_local/process?filter_path=nodes.*.process.id",
        search_url().trim_end_matches('/')
    );
    let reply = stage.get(&url, None).await.ok()?;
    let nodes = reply.json["nodes"].as_object()?;
    nodes.values().next()?["process"]["id"].as_i64()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// A flight from Lisbon to Madrid.
pub fn flight_body(number: u32, seats: u32) -> Value {
    json!({
        "flight_number": format!("CH{}", number % 10_000),
        "from": "LIS",
        "to": "MAD",
        "departure": "2027-05-01T07:00:00Z",
        "arrival": "2027-05-01T08:20:00Z",
        "seats": seats,
        "price": { "amount": 12_900, "currency": "USD" },
    })
}

/// A booking request.
pub fn booking_body(segments: &[(Uuid, u32)], card: &str) -> Value {
    let segments: Vec<Value> = segments
        .iter()
        .map(|(flight_id, seats)| json!({ "flight_id": flight_id, "seats": seats }))
        .collect();
    json!({
        "passenger": { "name": "Chaos Monkey", "email": "monkey@example.com" },
        "segments": segments,
        "payment": { "card_token": card },
    })
}

/// The `id` of a command's answer.
pub fn id_of(reply: &Reply) -> Uuid {
    reply.json["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no id in {:?}", reply.json))
}

/// The `position` of a command's answer.
pub fn position_of(reply: &Reply) -> String {
    reply.json["position"]
        .as_str()
        .unwrap_or_else(|| panic!("no position in {:?}", reply.json))
        .to_owned()
}
