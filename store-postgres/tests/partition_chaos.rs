//! Partitioned projection daemons as processes, under chaos: four
//! `partition_daemon` processes (this crate's example) share a projection of
//! 8 partitions while 16 writers append; for a bounded time they are killed
//! with SIGKILL and restarted, frozen with SIGSTOP past their claims' expiry
//! and woken, and stopped and restarted. Then:
//!
//! * every event was applied once in effect: each stream's count in the
//!   daemons' read model equals its events in the log, as a clean build
//!   would count them, and no event came after a gap (order held per key);
//! * every partition is owned, and no daemon holds more than
//!   `ceil(8 / daemons)`;
//! * a killed daemon's partitions were owned again within the claims' time
//!   to live plus 5 seconds.
//!
//! The daemons are the example binary `partition_daemon`, which `cargo test`
//! builds with the tests.

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use annals::projection::{ProjectionStore, checkpoint_name};
use annals::testing::new_event;
use annals::{EventStore, ExpectedVersion};
use annals_postgres::{PgEventStore, PgStoreOptions};
use annals_testkit::PgTest;
use rand::{Rng, SeedableRng};
use serde_json::json;

const PROJECTION: &str = "partition_counts";
const PARTITIONS: u32 = 8;
const DAEMONS: usize = 4;
const WRITERS: usize = 16;
const STREAMS: usize = 64;
const TTL: Duration = Duration::from_millis(2000);
const CHAOS: Duration = Duration::from_secs(20);

struct Daemon {
    child: Option<Child>,
    frozen: bool,
}

impl Daemon {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn signal(&self, name: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .args([format!("-{name}"), pid.to_string()])
                .status()
                .expect("kill(1)");
            assert!(status.success(), "kill -{name} {pid}");
        }
    }

    fn kill9(&mut self) {
        if self.frozen {
            self.thaw();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn freeze(&mut self) {
        self.signal("STOP");
        self.frozen = true;
    }

    fn thaw(&mut self) {
        self.signal("CONT");
        self.frozen = false;
    }

    /// SIGTERM: finishes its batches, gives its claims back.
    fn stop(&mut self) {
        if self.frozen {
            self.thaw();
        }
        self.signal("TERM");
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn daemon_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    // target/<profile>/deps/<test> -> target/<profile>/examples/partition_daemon
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join("partition_daemon"))
        .expect("the target folder");
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds it, or `cargo build -p annals-postgres --example partition_daemon`",
        path.display()
    );
    path
}

fn spawn(pg: &PgTest, channel: &str, n: usize, dir: &std::path::Path) -> Daemon {
    let log = dir.join(format!("daemon-{n}.log"));
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("a log file");
    let child = Command::new(daemon_binary())
        .env("DATABASE_URL", pg.url())
        .env("ANNALS_PARTITIONS", PARTITIONS.to_string())
        .env("ANNALS_CLAIM_TTL_MS", TTL.as_millis().to_string())
        .env("ANNALS_CHANNEL", channel)
        .env("RUST_LOG", "warn,annals=info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("a log file"))
        .stderr(out)
        .spawn()
        .expect("the daemon starts");
    Daemon {
        child: Some(child),
        frozen: false,
    }
}

/// Owners per partition, as the claims say.
async fn owners(store: &PgEventStore) -> BTreeMap<u32, Option<String>> {
    store
        .partition_owners(PROJECTION)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.partition < PARTITIONS)
        .map(|p| (p.partition, p.owner))
        .collect()
}

/// The owner ids of a process (they carry its pid).
fn of_pid(owner: &str, pid: u32) -> bool {
    owner.contains(&format!("-{pid}-"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_partitioned_daemons_apply_each_event_once_under_chaos() {
    let Some(pg) = annals_testkit::postgres().await else {
        return;
    };
    let channel = pg.channel("events");
    let store = PgStoreOptions::new()
        .notify_channel(channel.clone())
        .from_pool(pg.pool().clone())
        .unwrap();
    store.migrate().await.unwrap();
    let dir = tempdir();
    let mut daemons: Vec<Daemon> = (0..DAEMONS)
        .map(|n| spawn(&pg, &channel, n, &dir))
        .collect();

    // All partitions owned, two per daemon.
    let started = Instant::now();
    loop {
        let owned = owners(&store).await;
        let mut per: HashMap<String, usize> = HashMap::new();
        for owner in owned.values().flatten() {
            *per.entry(owner.clone()).or_default() += 1;
        }
        if owned.len() == PARTITIONS as usize
            && per.len() == DAEMONS
            && per.values().all(|&n| n == 2)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "daemons never shared the partitions: {owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Writers.
    let writing = Arc::new(AtomicBool::new(true));
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, writing, written) =
                (store.clone(), Arc::clone(&writing), Arc::clone(&written));
            tokio::spawn(async move {
                let mut i = w;
                while writing.load(Ordering::Relaxed) {
                    let stream = format!("counted-{}", i % STREAMS);
                    store
                        .append(
                            &stream,
                            ExpectedVersion::Any,
                            vec![new_event("Counted", json!({ "i": i }))],
                        )
                        .await
                        .unwrap();
                    written.fetch_add(1, Ordering::Relaxed);
                    i += WRITERS;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();

    // A kill -9, timed: its partitions change hands within TTL + 5 s.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim = daemons[0].pid().unwrap();
    daemons[0].kill9();
    let killed = Instant::now();
    let failover = loop {
        let owned = owners(&store).await;
        if owned
            .values()
            .all(|o| o.as_deref().is_some_and(|o| !of_pid(o, victim)))
        {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < TTL + Duration::from_secs(5),
            "a killed daemon's partitions were not taken over: {owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    daemons[0] = spawn(&pg, &channel, 0, &dir);

    // Chaos, for a bounded time.
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut actions = Vec::new();
    let chaos = Instant::now();
    while chaos.elapsed() < CHAOS {
        let n = rng.random_range(0..DAEMONS);
        let action = rng.random_range(0..3);
        match action {
            0 => {
                daemons[n].kill9();
                tokio::time::sleep(Duration::from_millis(rng.random_range(100..1500))).await;
                daemons[n] = spawn(&pg, &channel, n, &dir);
                actions.push(format!("kill -9 daemon {n}"));
            }
            1 => {
                daemons[n].freeze();
                // Past the claims' expiry: the others take its partitions.
                tokio::time::sleep(TTL + Duration::from_millis(rng.random_range(200..1500))).await;
                daemons[n].thaw();
                actions.push(format!("SIGSTOP daemon {n}"));
            }
            _ => {
                daemons[n].stop();
                daemons[n] = spawn(&pg, &channel, n, &dir);
                actions.push(format!("restart daemon {n}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1000))).await;
    }
    writing.store(false, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    let written = written.load(Ordering::SeqCst);

    // Settle: every partition's checkpoint at the head.
    let head = store.head().await.unwrap();
    let settling = Instant::now();
    loop {
        let mut behind = Vec::new();
        for partition in 0..PARTITIONS {
            let name = checkpoint_name(PROJECTION, partition, PARTITIONS);
            if store.load_checkpoint(&name).await.unwrap() != Some(head) {
                behind.push(partition);
            }
        }
        if behind.is_empty() {
            break;
        }
        assert!(
            settling.elapsed() < Duration::from_secs(60),
            "partitions {behind:?} never caught up (seed {seed}, {actions:?}); logs in {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Exactly once in effect, in order per stream.
    let counts: Vec<(String, i64, i64, i64)> =
        sqlx::query_as("SELECT stream_id, applied, last_version, gaps FROM partition_counts")
            .fetch_all(pg.pool())
            .await
            .unwrap();
    let logged: Vec<(String, i64)> =
        sqlx::query_as("SELECT stream_id, count(*) FROM annals_events GROUP BY stream_id")
            .fetch_all(pg.pool())
            .await
            .unwrap();
    let logged: BTreeMap<String, i64> = logged.into_iter().collect();
    assert_eq!(logged.values().sum::<i64>() as u64, written);
    let counted: BTreeMap<String, (i64, i64, i64)> = counts
        .into_iter()
        .map(|(s, a, v, g)| (s, (a, v, g)))
        .collect();
    assert_eq!(counted.len(), logged.len(), "streams counted vs logged");
    for (stream, events) in &logged {
        let (applied, last, gaps) = counted[stream];
        assert_eq!(
            (applied, last, gaps),
            (*events, *events, 0),
            "{stream}: applied, last version, gaps (seed {seed}, {actions:?})"
        );
    }

    // Ownership settles: all owned, none above its share.
    let live = daemons.iter().filter(|d| d.child.is_some()).count();
    let share = PARTITIONS.div_ceil(live as u32) as usize;
    let balancing = Instant::now();
    loop {
        let owned = owners(&store).await;
        let mut per: HashMap<String, usize> = HashMap::new();
        for owner in owned.values().flatten() {
            *per.entry(owner.clone()).or_default() += 1;
        }
        if owned.values().all(Option::is_some) && per.values().all(|&n| n <= share) {
            break;
        }
        assert!(
            balancing.elapsed() < Duration::from_secs(20),
            "ownership never settled within ceil({PARTITIONS} / {live}): {owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{written} events, {} streams; failover after kill -9 in {:.2} s (ttl {:.1} s); \
         seed {seed}: {actions:?}",
        logged.len(),
        failover.as_secs_f64(),
        TTL.as_secs_f64()
    );
    for daemon in &mut daemons {
        daemon.stop();
    }
    drop(daemons);
    let _ = std::fs::remove_dir_all(&dir);
    pg.cleanup().await;
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "annals-partition-chaos-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("a log folder");
    dir
}
