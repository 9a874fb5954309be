//! The queue test suite, written once (`queue/suite.rs`) against the traits of
//! `ai_rate_limiter::queue` and instantiated per backend by `queue_tests!`: `memory` (in-process)
//! and `rabbitmq` (lapin, on the broker `TEST_RABBITMQ_URL` points at).
//!
//! Every RabbitMQ test connects with its own queue prefix `airl-qtest-<uuid>` and its own
//! workspace ids, and deletes the queues it used at the end (also when it panics). Without
//! `TEST_RABBITMQ_URL` the RabbitMQ tests are skipped, except in CI (`CI` set), where they fail.
//!
//! RabbitMQ-only tests at the end of this file: the queue is a quorum queue, and the queue
//! recovers after the broker closes its connections (run with `rabbitmqctl`, or the command in
//! `TEST_RABBITMQCTL`, e.g. `docker exec rabbit rabbitmqctl`).
//!
//! Run: `TEST_RABBITMQ_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo test --test queue`

#[path = "queue/suite.rs"]
mod suite;

use std::collections::{BTreeSet, HashSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use ai_rate_limiter::domain::WorkspaceId;
use ai_rate_limiter::queue::{AmqpQueue, MemoryQueue, Queue};

/// Upper bound of any one test of the suite.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

/// One queue backend for one test, and what it takes to clean up after it.
pub struct TestQueue {
    pub queue: Arc<dyn Queue>,
    /// The RabbitMQ queue (for `queue_name`), when the backend is RabbitMQ.
    pub amqp: Option<AmqpQueue>,
    url: Option<String>,
    prefix: String,
    workspaces: Mutex<Vec<WorkspaceId>>,
    finished: bool,
}

impl TestQueue {
    fn memory() -> Self {
        Self {
            queue: Arc::new(MemoryQueue::new()),
            amqp: None,
            url: None,
            prefix: String::new(),
            workspaces: Mutex::new(Vec::new()),
            finished: false,
        }
    }

    async fn rabbitmq(url: &str) -> Self {
        let prefix = format!("airl-qtest-{}", Uuid::new_v4().simple());
        let q = AmqpQueue::connect(url, &prefix)
            .await
            .expect("connect to TEST_RABBITMQ_URL");
        Self {
            queue: Arc::new(q.clone()),
            amqp: Some(q),
            url: Some(url.to_owned()),
            prefix,
            workspaces: Mutex::new(Vec::new()),
            finished: false,
        }
    }

    /// A workspace id unique to this test (its queue is deleted at the end).
    pub fn ws(&self, name: &str) -> WorkspaceId {
        let id = WorkspaceId::parse(&format!(
            "{name}-{}",
            &Uuid::new_v4().simple().to_string()[..8]
        ))
        .unwrap();
        self.workspaces.lock().unwrap().push(id.clone());
        id
    }

    /// Deletes every queue the test used.
    async fn finish(mut self) {
        let workspaces = std::mem::take(&mut *self.workspaces.lock().unwrap());
        for ws in &workspaces {
            self.queue
                .delete(ws)
                .await
                .unwrap_or_else(|e| panic!("cannot delete the queue of {ws}: {e}"));
        }
        self.finished = true;
    }
}

impl Drop for TestQueue {
    /// A test that panicked: delete its queues anyway, from a fresh connection on a thread of
    /// its own (this may run inside the test's runtime).
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let Some(url) = self.url.clone() else { return };
        let prefix = self.prefix.clone();
        let workspaces = std::mem::take(&mut *self.workspaces.lock().unwrap());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                if let Ok(q) = AmqpQueue::connect(&url, &prefix).await {
                    for ws in &workspaces {
                        let _ = q.delete(ws).await;
                    }
                }
            });
        })
        .join();
    }
}

/// The broker to test on, or `None` (skip) outside CI.
fn test_rabbitmq_url() -> Option<String> {
    match std::env::var("TEST_RABBITMQ_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!(
                "TEST_RABBITMQ_URL must be set in CI (e.g. amqp://guest:guest@127.0.0.1:5672/%2f)"
            )
        }
        _ => {
            eprintln!("skipped: TEST_RABBITMQ_URL not set");
            None
        }
    }
}

async fn memory_queue() -> Option<TestQueue> {
    Some(TestQueue::memory())
}

async fn rabbitmq_queue() -> Option<TestQueue> {
    let url = test_rabbitmq_url()?;
    Some(TestQueue::rabbitmq(&url).await)
}

/// Instantiates the suite for one backend: `queue_tests!(name, make_queue().await)` generates
/// `mod name { #[tokio::test] async fn <each test of suite.rs>() {..} }`.
macro_rules! queue_tests {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            queue_tests!(@each $make;
                answers_ping,
                publish_then_consume_returns_the_ids_in_order,
                ack_removes_for_good,
                a_dropped_delivery_comes_back,
                a_consumer_dropped_with_a_delivery_in_hand_gives_it_back,
                prefetch_one_holds_back_a_second_delivery_for_another_consumer,
                purge_empties_the_queue_but_not_what_is_in_flight,
                delete_removes_the_queue_and_ends_its_consumers,
                workspaces_are_independent,
                thousand_ids_four_consumers_each_exactly_once,
            );

            #[tokio::test]
            async fn reports_its_backend() {
                let Some(q) = $make else { return };
                assert_eq!(q.queue.backend(), stringify!($backend));
                q.finish().await;
            }
        }
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(q) = $make else { return };
                tokio::time::timeout(TEST_TIMEOUT, suite::$name(&q))
                    .await
                    .unwrap_or_else(|_| panic!("{} did not finish within {TEST_TIMEOUT:?}", stringify!($name)));
                q.finish().await;
            }
        )*
    };
}

queue_tests!(memory, memory_queue().await);
queue_tests!(rabbitmq, rabbitmq_queue().await);

// ---------------------------------------------------------------------------------------------
// RabbitMQ only: the queue type, and recovery after the broker closes our connections
// ---------------------------------------------------------------------------------------------

/// Runs `rabbitmqctl` (or `TEST_RABBITMQCTL`) with `args`; its stdout, or the reason it failed.
fn rabbitmqctl(args: &[&str]) -> Result<String, String> {
    let cmd = std::env::var("TEST_RABBITMQCTL").unwrap_or_else(|_| "rabbitmqctl".into());
    let mut parts = cmd.split_whitespace();
    let program = parts.next().ok_or("TEST_RABBITMQCTL is empty")?;
    let out = Command::new(program)
        .args(parts)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `rabbitmqctl` can talk to the broker; `false` (skip) outside CI when it cannot.
fn rabbitmqctl_available() -> bool {
    match rabbitmqctl(&["-q", "list_vhosts"]) {
        Ok(_) => true,
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("rabbitmqctl must work in CI (or set TEST_RABBITMQCTL): {e}")
        }
        Err(e) => {
            eprintln!("skipped: rabbitmqctl not usable: {e}");
            false
        }
    }
}

/// The vhost of an AMQP URL (`%2f` → `/`; no path → `/`).
fn vhost_of(url: &str) -> String {
    let u = reqwest::Url::parse(url).expect("TEST_RABBITMQ_URL is not a URL");
    let raw = u.path().trim_start_matches('/');
    if raw.is_empty() {
        return "/".into();
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&raw[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// `(name, type)` of every queue of `vhost`.
fn queues_of(vhost: &str) -> Vec<(String, String)> {
    let out = rabbitmqctl(&[
        "-q",
        "list_queues",
        "-p",
        vhost,
        "--no-table-headers",
        "name",
        "type",
    ])
    .unwrap();
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_owned(), f.next()?.to_owned()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_queue_is_a_durable_quorum_queue_named_after_prefix_and_workspace() {
    let Some(t) = rabbitmq_queue().await else {
        return;
    };
    if !rabbitmqctl_available() {
        return;
    }
    let vhost = vhost_of(t.url.as_deref().unwrap());
    let ws = t.ws("quorum");
    let id = Uuid::new_v4();
    t.queue.publish(&ws, id).await.unwrap();
    let name = t.amqp.as_ref().unwrap().queue_name(&ws);
    assert_eq!(name, format!("{}.ws.{ws}", t.prefix));
    let listed = queues_of(&vhost);
    let found = listed.iter().find(|(n, _)| *n == name);
    assert_eq!(
        found.map(|(_, ty)| ty.as_str()),
        Some("quorum"),
        "queue {name} in vhost {vhost}: {listed:?}"
    );
    // Deleting removes it from the broker.
    t.queue.delete(&ws).await.unwrap();
    assert!(
        !queues_of(&vhost).iter().any(|(n, _)| *n == name),
        "queue {name} still listed after delete"
    );
    t.finish().await;
}

/// A vhost of its own (so closing its connections disturbs nobody else), deleted on drop.
struct TestVhost {
    name: String,
    url: String,
}

impl TestVhost {
    fn create(base_url: &str) -> Self {
        let name = format!("airl-qtest-{}", Uuid::new_v4().simple());
        let mut u = reqwest::Url::parse(base_url).unwrap();
        let user = if u.username().is_empty() {
            "guest".to_owned()
        } else {
            u.username().to_owned()
        };
        u.set_path(&format!("/{name}"));
        rabbitmqctl(&["add_vhost", &name]).unwrap();
        // From here on, dropping it deletes the vhost.
        let vhost = Self {
            name,
            url: u.to_string(),
        };
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            &user,
            ".*",
            ".*",
            ".*",
        ])
        .unwrap();
        vhost
    }

    /// Connections the broker holds on this vhost.
    fn connections(&self) -> usize {
        rabbitmqctl(&["-q", "list_connections", "--no-table-headers", "vhost"])
            .unwrap()
            .lines()
            .filter(|l| l.trim() == self.name)
            .count()
    }

    /// Closes every connection of this vhost, server-side.
    fn close_connections(&self) {
        rabbitmqctl(&["close_all_connections", "--vhost", &self.name, "test"]).unwrap();
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_vhost", &self.name]);
    }
}

/// Publishes `id`, retrying while the queue recovers, until `deadline`. Returns the ids of the
/// attempts that failed (the broker may or may not hold them) and the time it took.
async fn publish_retrying(
    q: &dyn Queue,
    ws: &WorkspaceId,
    id: Uuid,
    deadline: Instant,
) -> (Vec<String>, Duration) {
    let started = Instant::now();
    let mut errors = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(12), q.publish(ws, id)).await {
            Ok(Ok(())) => return (errors, started.elapsed()),
            Ok(Err(e)) => errors.push(e.to_string()),
            Err(_) => errors.push("publish hung for 12 s".into()),
        }
        assert!(
            Instant::now() < deadline,
            "publishing did not work again in time; errors: {errors:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_recovers_after_the_broker_closes_its_connections() {
    let Some(base) = test_rabbitmq_url() else {
        return;
    };
    if !rabbitmqctl_available() {
        return;
    }
    let vhost = TestVhost::create(&base);
    let t = TestQueue::rabbitmq(&vhost.url).await;
    let q = t.queue.clone();
    let ws = t.ws("recover");
    let deadline = Instant::now() + Duration::from_secs(80);

    let mut consumer = q.consumer(&ws, 2).await.unwrap();
    let mut published: Vec<Uuid> = Vec::new();
    let mut acked: HashSet<Uuid> = HashSet::new();

    // What the holder of a delivery taken before the close does with it: ack it at once (the
    // channel is closing), ack it after the queue recovered (a worker whose provider call
    // outlived the outage), or drop it (nack) after the queue recovered.
    for (round, what) in [
        (1, "ack at once"),
        (2, "ack after recovery"),
        (3, "drop after recovery"),
    ] {
        // 10 more ids; 3 taken and acked, 1 taken and held unacked across the close.
        let batch: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();
        for id in &batch {
            q.publish(&ws, *id).await.unwrap();
        }
        published.extend(&batch);
        for _ in 0..3 {
            let d = suite::take(&mut consumer).await;
            let id = d.message_id();
            d.ack().await.unwrap();
            assert!(
                acked.insert(id),
                "round {round}: {id} delivered again after its ack"
            );
        }
        let held = suite::take(&mut consumer).await;
        let held_id = held.message_id();
        assert!(!acked.contains(&held_id));

        assert!(
            vhost.connections() >= 1,
            "round {round}: no connection of ours to close"
        );
        vhost.close_connections();
        let closed_at = Instant::now();

        // The held delivery's channel is gone: its ack fails or is lost; either way the broker
        // requeued it when the connection closed, so it must come back.
        let mut held = Some(held);
        if what == "ack at once" {
            let res = held.take().unwrap().ack().await;
            eprintln!("round {round}: {what}: {res:?}");
        }

        // Publishing works again within a bounded time.
        let fresh = Uuid::new_v4();
        let (errors, took) = publish_retrying(q.as_ref(), &ws, fresh, deadline).await;
        eprintln!(
            "round {round}: publishing worked again after {took:?} ({} failed attempts: {errors:?})",
            errors.len()
        );
        published.push(fresh);
        if let Some(held) = held.take() {
            if what == "ack after recovery" {
                let res = held.ack().await;
                eprintln!("round {round}: {what}: {res:?}");
            } else {
                drop(held);
            }
        }

        // Consuming works again (with the consumer created before the close): everything
        // published and not acked arrives; nothing acked does.
        let mut expected: BTreeSet<Uuid> = published
            .iter()
            .filter(|id| !acked.contains(id))
            .copied()
            .collect();
        let mut seen_now: Vec<Uuid> = Vec::new();
        while !expected.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let d = match tokio::time::timeout(left, consumer.next()).await {
                Ok(Some(Ok(d))) => d,
                Ok(Some(Err(e))) => {
                    eprintln!("round {round}: consumer error while recovering: {e}");
                    continue;
                }
                Ok(None) => panic!("round {round}: the consumer ended after the close"),
                Err(_) => panic!(
                    "round {round}: still missing {} ids after the close ({:?}); got {seen_now:?}",
                    expected.len(),
                    expected
                ),
            };
            let id = d.message_id();
            assert!(
                !acked.contains(&id),
                "round {round}: {id} was acked before the close and delivered again"
            );
            seen_now.push(id);
            d.ack()
                .await
                .unwrap_or_else(|e| panic!("round {round}: ack after recovery failed: {e}"));
            expected.remove(&id);
            acked.insert(id);
        }
        eprintln!(
            "round {round} ({what}): consuming recovered {:?} after the close ({} deliveries, {} distinct)",
            closed_at.elapsed(),
            seen_now.len(),
            seen_now.iter().collect::<HashSet<_>>().len()
        );
        assert!(
            seen_now.contains(&held_id),
            "round {round}: the held delivery did not come back"
        );
        q.ping().await.unwrap();
    }

    // Everything was acked: nothing is left, for the old consumer nor a new one.
    suite::assert_quiet(&mut consumer, "old consumer after all acks").await;
    drop(consumer);
    let mut fresh = q.consumer(&ws, 10).await.unwrap();
    suite::assert_quiet(&mut fresh, "new consumer after all acks").await;
    drop(fresh);
    assert_eq!(acked.len(), published.len());
    t.finish().await;
    drop(vhost);
}
