//! Chaos for the integration events: 20,000 confirmed bookings published by
//! the real `airline relay` process and consumed by the real `airline
//! notify`, while the broker is restarted twice and the relay is killed
//! with SIGKILL once. The inbox ends with exactly the 20,000 message ids,
//! each notice recorded once; the copies the inbox dropped (redeliveries)
//! are printed.
//!
//! Built only with the `chaos` feature, and run by `scripts/test` in its
//! chaos phase (it restarts the broker other tests share):
//!
//! ```sh
//! cargo test -p airline --features chaos --test relay_chaos -- --nocapture
//! ```
//!
//! Needs `DATABASE_URL`, `AMQP_URL`, and `ANNALS_RABBITMQ_STOP` and
//! `ANNALS_RABBITMQ_START` (shell commands that stop the broker and start it
//! again, set by `scripts/test` when it started the broker); without them
//! the test is skipped, or fails under `ANNALS_REQUIRE_SERVICES=1`.

mod chaos_support;
mod integration_support;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use airline::booking::BookingEvent;
use airline::integration::RELAY;
use airline::notifications::CONSUMER;
use annals::{EventFilter, EventStore, Position};
use annals_postgres::PgEventStore;
use annals_rabbitmq::lapin::options::QueueDeclareOptions;
use annals_rabbitmq::lapin::types::FieldTable;
use annals_rabbitmq::lapin::{Connection, ConnectionProperties};
use annals_rabbitmq::{Inbox, InboxStats};
use chaos_support::{Bound, Outage, RunDir, control};
use integration_support::*;
use tokio::task::JoinHandle;

/// `ANNALS_RABBITMQ_STOP`: a shell command that stops the broker of `AMQP_URL`.
const RABBITMQ_STOP_ENV: &str = "ANNALS_RABBITMQ_STOP";
/// `ANNALS_RABBITMQ_START`: a shell command that starts it again (and returns
/// once it accepts connections).
const RABBITMQ_START_ENV: &str = "ANNALS_RABBITMQ_START";

/// Confirmed bookings, one integration event each, appended in four
/// tranches: before the first restart, before the kill, before the second
/// restart, and after it (so the second relay has to reconnect).
const TRANCHES: [usize; 4] = [6_000, 6_000, 6_000, 2_000];
/// All of them.
const BOOKINGS: usize = TRANCHES[0] + TRANCHES[1] + TRANCHES[2] + TRANCHES[3];
/// How long the whole publication may take, restarts included.
const LIMIT: Duration = Duration::from_secs(300);

/// An `airline` subcommand in a child process, killed when dropped.
struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(dir: &RunDir, name: &str, subcommand: &str, env: &[(&str, &str)]) -> Self {
        let log = dir.path().join(format!("{name}.log"));
        let out = File::create(&log).expect("a log file");
        let err = out.try_clone().expect("a log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_airline"));
        command
            .arg(subcommand)
            .env("RUST_LOG", "info,sqlx=warn,lapin=warn")
            .env("NO_COLOR", "1")
            .env_remove("AIRLINE_STORE")
            .env_remove("ELASTICSEARCH_URL")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("starting airline");
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of its output.
    fn tail(&self) -> String {
        let output = self.output();
        let lines: Vec<&str> = output.lines().collect();
        let from = lines.len().saturating_sub(30);
        format!("--- {} ---\n{}", self.name, lines[from..].join("\n"))
    }

    /// Waits until its output says `line`; fails when it exits first.
    async fn wait_for(&mut self, line: &str) {
        let bound = Bound::new(
            format!("{} to say {line:?}", self.name),
            Duration::from_secs(60),
        );
        while !self.output().contains(line) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited with {status}\n{}", self.name, self.tail());
            }
            bound.tick(|| self.tail()).await;
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits until the inbox holds at least `count` message ids.
async fn inbox_reaches(inbox: &Inbox, count: u64, evidence: impl Fn() -> String) -> InboxStats {
    let bound = Bound::new(format!("{count} messages in the inbox"), LIMIT);
    loop {
        // The inbox's database stays up; only the broker goes away.
        let stats = inbox.stats().await.expect("the inbox's stats");
        if stats.messages >= count {
            return stats;
        }
        bound.tick(|| format!("{stats:?}\n{}", evidence())).await;
    }
}

/// Waits until the relay's checkpoint is past `beyond`: the relay is
/// publishing (and so connected). Its checkpoint.
async fn relay_passes(
    store: &PgEventStore,
    beyond: Option<Position>,
    evidence: impl Fn() -> String,
) -> Position {
    let bound = Bound::new(format!("the relay's checkpoint past {beyond:?}"), LIMIT);
    loop {
        let checkpoint = store.load_checkpoint(RELAY).await.expect("the checkpoint");
        if let Some(at) = checkpoint.filter(|at| Some(*at) > beyond) {
            return at;
        }
        bound
            .tick(|| format!("{checkpoint:?}\n{}", evidence()))
            .await;
    }
}

/// Appends `count` confirmed bookings in the background.
fn append(store: &PgEventStore, count: usize) -> JoinHandle<()> {
    let store = store.clone();
    tokio::spawn(async move { confirmed_bookings(&store, count, 8).await })
}

/// How many lines of `output` contain `needle`.
fn lines_with(output: &str, needle: &str) -> usize {
    output.lines().filter(|line| line.contains(needle)).count()
}

/// Stops the broker, waits a little, starts it again.
async fn restart_broker(stop: &str, start: &str) {
    let started = Instant::now();
    let mut outage = Outage::begin(stop, start);
    tokio::time::sleep(Duration::from_secs(1)).await;
    outage.end();
    eprintln!("broker restarted in {:?}", started.elapsed());
}

/// How many messages wait in `queue`.
async fn queued(url: &str, queue: &str) -> u32 {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("a connection to the broker");
    let channel = connection.create_channel().await.expect("a channel");
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{queue} exists: {e}"));
    let _ = connection.close(200, "OK".into()).await;
    declared.message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_twenty_thousand_events_survive_broker_restarts_and_a_killed_relay() {
    const SCENARIO: &str = "the relay chaos test";
    let Some(stop) = control(RABBITMQ_STOP_ENV, SCENARIO) else {
        return;
    };
    let Some(start) = control(RABBITMQ_START_ENV, SCENARIO) else {
        return;
    };
    let Some(pg) = annals_testkit::postgres().await else {
        return;
    };
    let Some(rabbit) = annals_testkit::rabbitmq().await else {
        return;
    };
    let dir = RunDir::new("relay");
    let store = PgEventStore::from_pool(pg.pool().clone());
    store.migrate().await.expect("the store's schema");
    let exchange = rabbit.name("airline.events");
    let queue = rabbit.name("notifications");
    let dead_letters = format!("{queue}.dead-letter");
    rabbit.remember(&dead_letters);
    let env = [
        ("DATABASE_URL", pg.url()),
        ("AMQP_URL", rabbit.url()),
        ("AIRLINE_EXCHANGE", exchange.as_str()),
        ("AIRLINE_NOTIFY_QUEUE", queue.as_str()),
    ];
    let began = Instant::now();

    // The consumer first: its queue exists before anything is published.
    let mut notify = Process::spawn(&dir, "notify", "notify", &env);
    notify.wait_for("airline notifications running").await;
    let mut relay = Process::spawn(&dir, "relay-1", "relay", &env);
    let inbox = Inbox::new(pg.pool().clone(), CONSUMER);

    // The first restart while the relay publishes and the consumer consumes.
    let mut appends = vec![append(&store, TRANCHES[0])];
    let publishing = relay_passes(&store, None, || relay.tail()).await;
    inbox_reaches(&inbox, 1_000, || relay.tail()).await;
    restart_broker(&stop, &start).await;

    // The kill lands while the relay publishes: the events appended during
    // the outage and the next tranche are its backlog.
    let back = store.load_checkpoint(RELAY).await.expect("the checkpoint");
    appends.push(append(&store, TRANCHES[1]));
    relay_passes(&store, back.max(Some(publishing)), || relay.tail()).await;
    relay.kill9();
    let killed_at = store.load_checkpoint(RELAY).await.expect("the checkpoint");
    eprintln!(
        "relay killed (SIGKILL) after {:?} at checkpoint {killed_at:?}",
        began.elapsed()
    );
    let relay_1 = relay.output();
    let mut relay = Process::spawn(&dir, "relay-2", "relay", &env);
    relay.wait_for("airline relay running").await;

    // The second restart while the second relay publishes.
    appends.push(append(&store, TRANCHES[2]));
    relay_passes(&store, killed_at, || relay.tail()).await;
    restart_broker(&stop, &start).await;
    appends.push(append(&store, TRANCHES[3]));

    for tranche in appends {
        tranche.await.expect("the appends");
    }
    let evidence = || format!("{}\n{}", relay.tail(), notify.tail());
    let stats = inbox_reaches(&inbox, BOOKINGS as u64, evidence).await;
    let delivered = began.elapsed();
    // The relay's checkpoint reaches the last confirmation: nothing more is
    // on its way but copies, which the inbox must drop.
    let head = events_of(&store, BookingEvent::BOOKING_CONFIRMED)
        .await
        .last()
        .expect("confirmations")
        .position;
    let bound = Bound::new(
        "the relay's checkpoint to reach the head",
        Duration::from_secs(60),
    );
    loop {
        let checkpoint = store.load_checkpoint(RELAY).await.expect("the checkpoint");
        if checkpoint.is_some_and(|at| at >= head) {
            break;
        }
        bound
            .tick(|| format!("{checkpoint:?} < {head:?}\n{}", evidence()))
            .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The chaos reached both processes: each relay published, lost its
    // connection and connected again; the consumer lost its connection and
    // came back (once or twice: its backoff may span both restarts).
    const CONNECTED: &str = "connected to the broker";
    assert!(
        lines_with(&relay_1, CONNECTED) >= 2,
        "the first relay reconnected after the first restart\n{relay_1}"
    );
    assert!(
        lines_with(&relay.output(), CONNECTED) >= 2,
        "the second relay reconnected after the second restart\n{}",
        relay.tail()
    );
    assert!(
        lines_with(&notify.output(), "consumer: consuming") >= 2,
        "the consumer came back after losing the broker\n{}",
        notify.tail()
    );

    let expected = expected_confirmations(&store).await;
    assert_eq!(expected.len(), BOOKINGS);
    let stats_after = inbox.stats().await.expect("the inbox's stats");
    assert_eq!(stats_after.messages, BOOKINGS as u64, "{stats_after:?}");
    let received = inbox_ids(&store).await;
    assert!(
        received == expected,
        "the inbox holds {} ids, {} of them unexpected, {} expected ones missing",
        received.len(),
        received.difference(&expected).count(),
        expected.difference(&received).count()
    );
    let notices = notices_reach(&store, BOOKINGS, Duration::from_secs(60)).await;
    assert_eq!(notices.len(), BOOKINGS, "one notice stream per booking");
    let twice: Vec<_> = notices.iter().filter(|(_, sent)| sent.len() != 1).collect();
    assert!(
        twice.is_empty(),
        "bookings noticed more than once: {:?}",
        &twice[..twice.len().min(5)]
    );
    let noticed = store
        .read_all(
            Position::START,
            BOOKINGS * 3,
            &EventFilter::types(["NoticeSent"]),
        )
        .await
        .expect("the notices")
        .len();
    assert_eq!(noticed, BOOKINGS, "each effect recorded once");
    assert_eq!(
        queued(rabbit.url(), &dead_letters).await,
        0,
        "no dead letters"
    );

    println!(
        "relay chaos: {BOOKINGS} messages delivered in {delivered:?} (2 broker restarts, 1 relay \
         SIGKILL); redeliveries dropped by the inbox: {} copies of {} messages (at the end: {} \
         copies of {} messages)",
        stats.duplicates,
        stats.redelivered_messages,
        stats_after.duplicates,
        stats_after.redelivered_messages
    );
    drop(relay);
    drop(notify);
    rabbit.cleanup().await;
    pg.cleanup().await;
}
