//! Crash recovery with the real binary: SIGKILL mid-backlog, restart on the same SQLite file and
//! port, and check nothing is lost, nothing finished is redone, workers come back and the key's
//! limit holds across both runs. Also: SIGTERM stops the binary cleanly.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use common::{StandIn, max_in_window, openai_key};
use serde_json::{Value, json};
use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_ai-rate-limiter");

/// A free port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary running as a child process; killed (SIGKILL) when dropped, so a failing test
/// leaves no process behind. Its output goes to a log file, printed if the test panics.
struct Server {
    child: Option<Child>,
    base: String,
    log: PathBuf,
}

impl Server {
    /// Starts the binary on `port` over `database_url` and waits until `/health` answers.
    async fn start(port: u16, database_url: &str, log: PathBuf) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(["--database-url", database_url])
            .args(["--shutdown-grace-secs", "5"])
            .env_remove("RABBITMQ_URL")
            .env_remove("SQLALCHEMY_DATABASE_URI")
            .env("RUST_LOG", "info,poem=warn")
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
        server.wait_healthy().await;
        server
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    async fn wait_healthy(&mut self) {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the binary exited early ({status}):\n{}", self.logs());
            }
            if let Ok(r) = http.get(format!("{}/health", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no /health within 10 s:\n{}",
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

    /// Waits up to `timeout` for the process to exit.
    async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
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

/// A small JSON client of the server's API.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
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

    async fn message(&self, id: &str) -> Value {
        let (status, m) = self.get(&format!("/message/{id}")).await;
        assert_eq!(status, 200, "{m}");
        m
    }

    /// Every message, by id.
    async fn messages(&self, ids: &[String]) -> BTreeMap<String, Value> {
        let mut all = BTreeMap::new();
        for id in ids {
            all.insert(id.clone(), self.message(id).await);
        }
        all
    }

    /// Publishes `n` messages with prompts `m0`, `m1`...; returns their ids in order.
    async fn publish_many(&self, workspace: &str, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for i in 0..n {
            let (status, b) = self
                .post(
                    "/message/publish",
                    json!({"workspace_id": workspace, "prompt": format!("m{i}")}),
                )
                .await;
            assert_eq!(status, 201, "{b}");
            ids.push(b["message_id"].as_str().unwrap().to_owned());
        }
        ids
    }
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("db.sqlite").display())
}

fn successes(all: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    all.iter()
        .filter(|(_, m)| m["status"] == "success")
        .map(|(id, m)| (id.clone(), m.clone()))
        .collect()
}

/// Polls until every message is final; panics after `timeout`.
async fn wait_all_final(
    api: &Api,
    ids: &[String],
    timeout: Duration,
    server: &Server,
) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let all = api.messages(ids).await;
        if all
            .values()
            .all(|m| m["status"] == "success" || m["status"] == "failed")
        {
            return all;
        }
        if Instant::now() >= deadline {
            let stuck: Vec<_> = all
                .values()
                .filter(|m| m["status"] != "success" && m["status"] != "failed")
                .map(|m| format!("{} {}", m["message_id"], m["status"]))
                .collect();
            panic!("not final within {timeout:?}: {stuck:?}\n{}", server.logs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const KEY: &str = "sk-recovery-test-0001";
const WS: &str = "recovery-ws";
const MESSAGES: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_backlog_then_restart_loses_nothing_and_redoes_nothing() {
    let stand_in = StandIn::start().await;
    stand_in.set_latency(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let port = free_port();

    // First run: a key allowing 2 requests per second, 2 workers, a backlog of 20 messages.
    let mut first = Server::start(port, &url, dir.path().join("run1.log")).await;
    let api = Api::new(&first.base);
    let (status, b) = api
        .post(
            "/workspace/register",
            json!({"workspace_id": WS, "providers": [openai_key(&stand_in, KEY, 2, json!(1), "gpt-4")]}),
        )
        .await;
    assert_eq!(status, 201, "{b}");
    let (status, b) = api
        .post(&format!("/workers/scale/{WS}"), json!({"count": 2}))
        .await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["count"], 2, "{b}");
    let ids = api.publish_many(WS, MESSAGES).await;

    // Wait until a few are done, but far from all, then kill -9.
    let deadline = Instant::now() + Duration::from_secs(10);
    let done_before = loop {
        let done = successes(&api.messages(&ids).await);
        if done.len() >= 3 {
            break done;
        }
        assert!(Instant::now() < deadline, "no progress:\n{}", first.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    first.kill();
    assert!(
        done_before.len() < MESSAGES,
        "the whole backlog finished before the kill; nothing was recovered"
    );
    let arrivals_before_kill = stand_in.arrivals_for(KEY).len();

    // Second run: same database file, same port.
    let second = Server::start(port, &url, dir.path().join("run2.log")).await;
    let api = Api::new(&second.base);
    let all = wait_all_final(&api, &ids, Duration::from_secs(15), &second).await;

    // None lost, none stuck, none failed; each has its own answer.
    for (i, id) in ids.iter().enumerate() {
        let m = &all[id];
        assert_eq!(m["status"], "success", "{m}");
        assert_eq!(m["result"]["text"], format!("echo: m{i}"), "{m}");
    }

    // What was finished before the kill was not processed again.
    for (id, before) in &done_before {
        let after = &all[id];
        assert_eq!(
            after["completed_at"], before["completed_at"],
            "message {id} was completed again after the restart"
        );
        assert_eq!(after["attempts"], before["attempts"], "{id}");
        let prompt = before["prompt"].as_str().unwrap();
        let sent = stand_in
            .arrivals()
            .iter()
            .filter(|a| {
                a.body["messages"]
                    .to_string()
                    .contains(&format!("\"{prompt}\""))
            })
            .count();
        assert_eq!(sent, 1, "message {id} ({prompt}) was sent {sent} times");
    }

    // The worker count survived the crash.
    let (status, w) = api.get(&format!("/workers/{WS}")).await;
    assert_eq!(status, 200, "{w}");
    assert_eq!(w["count"], 2, "{w}");

    // The key's limit held across both runs, as the provider saw it.
    let arrivals = stand_in.arrivals_for(KEY);
    let worst = max_in_window(&arrivals, Duration::from_secs(1));
    assert!(
        worst <= 2,
        "the stand-in saw {worst} requests within 1 s on a 2/s key \
         ({arrivals_before_kill} before the kill, {} in total); offsets from the first (ms): {:?}",
        arrivals.len(),
        arrivals
            .iter()
            .map(|a| a.duration_since(arrivals[0]).as_millis())
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully_and_a_restart_finishes_the_rest() {
    let stand_in = StandIn::start().await;
    stand_in.set_latency(Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let port = free_port();

    let mut server = Server::start(port, &url, dir.path().join("run1.log")).await;
    let api = Api::new(&server.base);
    let (status, b) = api
        .post(
            "/workspace/register",
            json!({"workspace_id": WS, "providers": [openai_key(&stand_in, KEY, 2, json!(1), "gpt-4")]}),
        )
        .await;
    assert_eq!(status, 201, "{b}");
    let ids = api.publish_many(WS, 6).await;
    // Let the first call be in flight.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let kill = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let exit = server.wait_exit(Duration::from_secs(5)).await;
    let Some(exit) = exit else {
        panic!("still running 5 s after SIGTERM:\n{}", server.logs());
    };
    assert!(exit.success(), "exit status {exit}:\n{}", server.logs());

    // Whatever was not finished is finished by the next run.
    let second = Server::start(port, &url, dir.path().join("run2.log")).await;
    let api = Api::new(&second.base);
    let all = wait_all_final(&api, &ids, Duration::from_secs(10), &second).await;
    let statuses: HashMap<&str, usize> = all.values().fold(HashMap::new(), |mut acc, m| {
        *acc.entry(m["status"].as_str().unwrap()).or_default() += 1;
        acc
    });
    assert_eq!(statuses.get("success"), Some(&ids.len()), "{statuses:?}");
}
