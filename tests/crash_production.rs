//! Crash safety on the production backends (PostgreSQL + RabbitMQ) with the real binary: 3,000
//! messages published (batches and single publishes) to a workspace of 16 workers and two keys
//! on a stand-in provider, SIGKILL while hundreds are done and thousands are not, restart on the
//! same database, queue prefix and port, and every message ends `success` with its own answer,
//! each having reached the provider at least once (how many reached it twice is reported).
//!
//! Needs `TEST_DATABASE_URL` (a fresh database `airl_http_<uuid>` is made on that server and
//! dropped after) and `TEST_RABBITMQ_URL` (queues prefixed `airl-crash-<uuid>`, deleted after).
//! Without them the test is skipped, except in CI (`CI` set), where it fails.
//!
//! Run: `TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test
//! TEST_RABBITMQ_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo test --test crash_production`

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{StandIn, openai_key};
use serde_json::{Value, json};
use tokio::time::Instant;

use ai_rate_limiter::domain::{MessageStatus, WorkspaceId};
use ai_rate_limiter::queue::{AmqpQueue, Queue};

const BIN: &str = env!("CARGO_BIN_EXE_ai-rate-limiter");
const WS: &str = "crash-prod-ws";
const KEY_A: &str = "sk-crash-prod-a";
const KEY_B: &str = "sk-crash-prod-b";
const MESSAGES: usize = 3000;
const WORKERS: u32 = 16;
/// Successes to wait for before the kill.
const KILL_AFTER: u64 = 300;

/// `name`'s value, or `None` (skip) outside CI.
fn required(name: &str, example: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{name} must be set in CI (e.g. {example})")
        }
        _ => {
            eprintln!("skipped: {name} not set");
            None
        }
    }
}

/// A free port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where the binary keeps its state: the same for both runs.
struct Backends {
    database_url: String,
    rabbitmq_url: String,
    queue_prefix: String,
}

/// The binary as a child process; SIGKILLed when dropped, its log printed if the test panics.
struct Server {
    child: Option<Child>,
    base: String,
    log: PathBuf,
}

impl Server {
    async fn start(port: u16, b: &Backends, log: PathBuf, deadline: Instant) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(["--shutdown-grace-secs", "5"])
            .env("DATABASE_URL", &b.database_url)
            .env("RABBITMQ_URL", &b.rabbitmq_url)
            .env("QUEUE_PREFIX", &b.queue_prefix)
            .env("RUST_LOG", "warn")
            .env_remove("SQLALCHEMY_DATABASE_URI")
            .env_remove("BIND_ADDR")
            .env_remove("MAX_WORKERS")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("the binary starts");
        let mut server = Self {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        server.wait_healthy(deadline).await;
        server
    }

    /// Waits for `/health` to answer 200 (start-up re-queues the backlog first, so this may
    /// take a while on the second run).
    async fn wait_healthy(&mut self, deadline: Instant) {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the binary exited early ({status}):\n{}", self.logs());
            }
            if let Ok(r) = http.get(format!("{}/health", self.base)).send().await
                && r.status() == 200
            {
                let h: Value = r.json().await.unwrap();
                assert_eq!(h["database"]["backend"], "postgres", "{h}");
                assert_eq!(h["queue"]["backend"], "rabbitmq", "{h}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no /health in time:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown code runs.
    fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then waits (SIGKILL after 10 s).
    async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("the binary did not stop within 10 s of SIGTERM; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- server log {} ----\n{}",
                self.log.display(),
                self.logs()
            );
        }
    }
}

/// Drops the test database and deletes the workspace's queue if the test did not get to (a
/// panic), from a thread of its own.
struct Leftovers {
    backends: Option<Backends>,
}

impl Leftovers {
    /// Cleans up now.
    async fn clean(&mut self) {
        if let Some(b) = self.backends.take() {
            if let Ok(q) = AmqpQueue::connect(&b.rabbitmq_url, &b.queue_prefix).await {
                let _ = q.delete(&WorkspaceId::parse(WS).unwrap()).await;
            }
            common::drop_postgres_database(&b.database_url).await;
        }
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if self.backends.is_none() {
            return;
        }
        let mut me = Leftovers {
            backends: self.backends.take(),
        };
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(me.clean());
        })
        .join();
    }
}

/// A small JSON client of the server's API.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base: base.to_owned(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("request sent");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Scales the workspace to `count` workers.
    async fn scale(&self, count: u32) {
        let (status, b) = self
            .post(&format!("/workers/scale/{WS}"), json!({"count": count}))
            .await;
        assert_eq!(status, 200, "{b}");
        assert_eq!(b["count"], count, "{b}");
    }

    /// Messages of the workspace in `status`, in all.
    async fn total(&self, status: &str) -> u64 {
        let (code, b) = self
            .get(&format!(
                "/messages?workspace_id={WS}&status={status}&limit=1"
            ))
            .await;
        assert_eq!(code, 200, "{b}");
        b["total"].as_u64().unwrap()
    }

    /// Every message in `status`: id → the message.
    async fn all_in(&self, status: &str) -> HashMap<String, Value> {
        let mut all = HashMap::new();
        let mut offset = 0;
        loop {
            let (code, b) = self
                .get(&format!(
                    "/messages?workspace_id={WS}&status={status}&limit=1000&offset={offset}"
                ))
                .await;
            assert_eq!(code, 200, "{b}");
            let page = b["messages"].as_array().unwrap();
            for m in page {
                all.insert(m["message_id"].as_str().unwrap().to_owned(), m.clone());
            }
            if page.len() < 1000 {
                return all;
            }
            offset += 1000;
        }
    }

    /// Publishes prompts `m{from}`..`m{to-1}` in one batch; their ids.
    async fn publish_batch(&self, from: usize, to: usize) -> Vec<String> {
        let messages: Vec<Value> = (from..to)
            .map(|i| json!({"prompt": format!("m{i}")}))
            .collect();
        let (status, b) = self
            .post(
                "/message/publish/batch",
                json!({"workspace_id": WS, "messages": messages}),
            )
            .await;
        assert_eq!(status, 201, "{b}");
        assert_eq!(b["created"], to - from, "{b}");
        b["message_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    /// Publishes prompts `m{from}`..`m{to-1}` one request each; their ids.
    async fn publish_singles(&self, from: usize, to: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for i in from..to {
            let (status, b) = self
                .post(
                    "/message/publish",
                    json!({"workspace_id": WS, "prompt": format!("m{i}")}),
                )
                .await;
            assert_eq!(status, 201, "{b}");
            ids.push(b["message_id"].as_str().unwrap().to_owned());
        }
        ids
    }
}

/// Stand-in arrivals per prompt (the last user message), optionally only before `before`.
fn arrivals_per_prompt(stand_in: &StandIn, before: Option<Instant>) -> HashMap<String, usize> {
    let mut per: HashMap<String, usize> = HashMap::new();
    for a in stand_in.arrivals() {
        if before.is_some_and(|t| a.at >= t) {
            continue;
        }
        let user = a.body["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_owned();
        *per.entry(user).or_default() += 1;
    }
    per
}

/// The messages of the workspace that the database holds as `success`: id → (prompt,
/// completed_at). Read straight from the store (the server is down at that point).
async fn final_in_database(
    database_url: &str,
) -> HashMap<String, (String, chrono::DateTime<chrono::Utc>)> {
    let store = ai_rate_limiter::store::connect(database_url)
        .await
        .expect("open the test database");
    let ws = WorkspaceId::parse(WS).unwrap();
    let mut all = HashMap::new();
    let mut offset = 0;
    loop {
        let page = store
            .list_messages(&ws, Some(MessageStatus::Success), 1000, offset)
            .await
            .unwrap();
        let n = page.messages.len();
        for m in page.messages {
            all.insert(
                m.id.to_string(),
                (m.request.prompt.clone(), m.completed_at.unwrap()),
            );
        }
        if n < 1000 {
            return all;
        }
        offset += 1000;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_flight_on_postgres_and_rabbitmq_then_restart_finishes_every_message() {
    let Some(_) = required(
        "TEST_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    ) else {
        return;
    };
    let Some(rabbitmq_url) = required("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
    else {
        return;
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(90);

    let backends = Backends {
        database_url: common::fresh_postgres_database().await,
        rabbitmq_url,
        queue_prefix: format!("airl-crash-{}", uuid::Uuid::new_v4().simple()),
    };
    let mut leftovers = Leftovers {
        backends: Some(Backends {
            database_url: backends.database_url.clone(),
            rabbitmq_url: backends.rabbitmq_url.clone(),
            queue_prefix: backends.queue_prefix.clone(),
        }),
    };
    let dir = tempfile::tempdir().unwrap();
    let stand_in = StandIn::start().await;
    stand_in.set_latency(Duration::from_millis(5));
    let port = free_port();

    // First run: two keys of 500 requests per second each. Publishing queues one id at a time
    // with a publisher confirm (a few ms each on a quorum queue), which 16 workers outpace: so
    // the workspace is held at 0 workers while the 3,000 are published, then scaled to 16.
    let mut first = Server::start(
        port,
        &backends,
        dir.path().join("run1.log"),
        Instant::now() + Duration::from_secs(20),
    )
    .await;
    let api = Api::new(&first.base);
    let (status, b) = api
        .post(
            "/workspace/register",
            json!({"workspace_id": WS, "providers": [
                openai_key(&stand_in, KEY_A, 500, json!(1), "gpt-4o-mini"),
                openai_key(&stand_in, KEY_B, 500, json!(1), "gpt-4o-mini"),
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{b}");
    api.scale(0).await;

    // 3,000 messages: batches of 1000, 1000 and 900, with 50 single publishes between them.
    let publish_started = Instant::now();
    let mut ids = Vec::with_capacity(MESSAGES);
    ids.extend(api.publish_batch(0, 1000).await);
    ids.extend(api.publish_singles(1000, 1050).await);
    ids.extend(api.publish_batch(1050, 2050).await);
    ids.extend(api.publish_singles(2050, 2100).await);
    ids.extend(api.publish_batch(2100, MESSAGES).await);
    assert_eq!(ids.len(), MESSAGES);
    let published_in = publish_started.elapsed();
    let prompt_of: HashMap<String, String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), format!("m{i}")))
        .collect();
    // Provider calls made before the workers were scaled up (a worker may have been busy).
    let early = stand_in.arrivals().len();
    api.scale(WORKERS).await;

    // Hundreds done, then kill -9.
    let done_before = loop {
        let done = api.total("success").await;
        if done >= KILL_AFTER {
            break done;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} successes before the kill:\n{}",
            first.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    first.kill();
    let killed_at = Instant::now();
    let arrivals_before_kill = stand_in.arrivals().len();
    eprintln!(
        "published {MESSAGES} in {published_in:?} ({early} provider calls meanwhile); killed at {:?} with >= {done_before} successes \
         and {arrivals_before_kill} provider calls",
        killed_at - started
    );
    assert!(
        (done_before as usize) < MESSAGES - 500,
        "{done_before} of {MESSAGES} were done before the kill: too few left to prove recovery"
    );
    // What the database holds as done at the kill (nothing writes to it until the restart).
    let final_at_kill = final_in_database(&backends.database_url).await;
    assert!(final_at_kill.len() as u64 >= done_before);

    // Second run: same database, queue prefix and port.
    let second = Server::start(
        port,
        &backends,
        dir.path().join("run2.log"),
        deadline.min(Instant::now() + Duration::from_secs(40)),
    )
    .await;
    let api = Api::new(&second.base);
    let restarted_in = killed_at.elapsed();
    loop {
        let success = api.total("success").await;
        if success == MESSAGES as u64 {
            break;
        }
        let last = (
            success,
            api.total("pending").await,
            api.total("processing").await,
            api.total("failed").await,
        );
        assert!(
            last.3 == 0,
            "{} messages failed (success/pending/processing/failed = {last:?}):\n{}",
            last.3,
            second.logs()
        );
        assert!(
            Instant::now() < deadline,
            "not all done in time: success/pending/processing/failed = {last:?}:\n{}",
            second.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let finished_at = Instant::now();
    for status in ["pending", "processing", "failed"] {
        assert_eq!(api.total(status).await, 0, "{status}");
    }

    // Every message has its own answer.
    let done = api.all_in("success").await;
    assert_eq!(done.len(), MESSAGES);
    for (id, prompt) in &prompt_of {
        let m = done
            .get(id)
            .unwrap_or_else(|| panic!("message {id} ({prompt}) is not listed as success"));
        assert_eq!(m["prompt"], *prompt, "{m}");
        assert_eq!(m["result"]["text"], format!("echo: {prompt}"), "{m}");
    }

    // Each reached the provider at least once; count those that reached it more than once.
    let per_prompt = arrivals_per_prompt(&stand_in, None);
    // What was already done at the kill was not done again: same completion, one provider call.
    for (id, (prompt, completed_at)) in &final_at_kill {
        let m = &done[id];
        let after: chrono::DateTime<chrono::Utc> =
            m["completed_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            after, *completed_at,
            "message {id} was completed again: {m}"
        );
        assert_eq!(
            per_prompt.get(prompt),
            Some(&1),
            "message {id} ({prompt}) was done before the kill, yet sent again"
        );
    }
    let missing: Vec<_> = prompt_of
        .values()
        .filter(|p| !per_prompt.contains_key(*p))
        .collect();
    assert!(
        missing.is_empty(),
        "{} messages never reached the provider: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let strangers: Vec<_> = per_prompt
        .keys()
        .filter(|p| !prompt_of.values().any(|q| q == *p))
        .collect();
    assert!(strangers.is_empty(), "unknown prompts: {strangers:?}");
    let twice: usize = per_prompt.values().filter(|n| **n > 1).count();
    let extra: usize = per_prompt.values().map(|n| n - 1).sum();
    let twice_before_kill = arrivals_per_prompt(&stand_in, Some(killed_at))
        .values()
        .filter(|n| **n > 1)
        .count();
    eprintln!(
        "at-least-once: {} provider calls for {MESSAGES} messages; {} were done at the kill; \
         {twice} messages reached the provider more than once ({extra} extra calls; \
         {twice_before_kill} of them already before the kill); restart took {restarted_in:?}, all done {:?} after the kill, \
         whole test {:?}",
        stand_in.arrivals().len(),
        final_at_kill.len(),
        finished_at - killed_at,
        started.elapsed()
    );

    // The worker count survived the crash.
    let (status, w) = api.get(&format!("/workers/{WS}")).await;
    assert_eq!(status, 200, "{w}");
    assert_eq!(w["count"], WORKERS, "{w}");

    // Clean up: deleting the workspace deletes its queue; then stop and drop the database.
    let (status, b) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/workspace/delete/{WS}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{b}");
    let mut second = second;
    second.stop().await;
    leftovers.clean().await;
}
