//! Test helpers: `TestApp::spawn()` starts the real server on port 0 over fresh backends: a
//! SQLite file and the in-process queue by default, or, with `AIRL_TEST_BACKEND=production`, a
//! new PostgreSQL database on `TEST_DATABASE_URL` and uniquely named queues on
//! `TEST_RABBITMQ_URL` (CI runs the HTTP suites both ways);
//! `StandIn::start()` starts a stand-in OpenAI chat-completions server on 127.0.0.1 that records
//! every arrival and can be scripted to answer errors.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ai_rate_limiter::{Engine, EngineConfig, RetryPolicy};
use poem::web::{Data, Json};
use poem::{EndpointExt, IntoResponse, Response, Route, handler, http::StatusCode, post};
use serde_json::{Value, json};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// The stand-in provider
// ---------------------------------------------------------------------------------------------

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// When it arrived (monotonic).
    pub at: Instant,
    /// The bearer token (the provider key's secret).
    pub bearer: Option<String>,
    /// The JSON body.
    pub body: Value,
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Scripted {
    pub fn status(status: u16, message: &str) -> Self {
        Self {
            status,
            headers: vec![],
            body: json!({"error": {"message": message, "type": "test"}}),
        }
    }
    pub fn too_many(retry_after: &str) -> Self {
        Self {
            status: 429,
            headers: vec![("retry-after".into(), retry_after.into())],
            body: json!({"error": {"message": "Rate limit reached", "type": "requests"}}),
        }
    }
    /// A 200 whose content is `text` verbatim.
    pub fn content(text: &str) -> Self {
        Self {
            status: 200,
            headers: vec![],
            body: json!({
                "id": "chatcmpl-test", "object": "chat.completion", "model": "stand-in",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
            }),
        }
    }
}

/// How the default echo's `usage` is made from the request body: `(prompt_tokens,
/// completion_tokens)`, or `None` to report no usage at all.
type UsageRule = Arc<dyn Fn(&Value) -> Option<(u64, u64)> + Send + Sync>;

#[derive(Default)]
struct StandInState {
    arrivals: Mutex<Vec<Arrival>>,
    /// Scripted answers per bearer token, served in order before the default echo.
    scripts: Mutex<HashMap<String, VecDeque<Scripted>>>,
    latency: Mutex<Duration>,
    /// The default echo's usage (unset: 3 prompt + 4 completion tokens).
    usage: Mutex<Option<UsageRule>>,
}

/// A stand-in OpenAI server.
#[derive(Clone)]
pub struct StandIn {
    pub addr: SocketAddr,
    state: Arc<StandInState>,
}

#[handler]
async fn chat(
    req: &poem::Request,
    Json(body): Json<Value>,
    Data(state): Data<&Arc<StandInState>>,
) -> Response {
    let bearer = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::to_owned);
    state.arrivals.lock().unwrap().push(Arrival {
        at: Instant::now(),
        bearer: bearer.clone(),
        body: body.clone(),
    });
    let latency = *state.latency.lock().unwrap();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let scripted = bearer.as_ref().and_then(|b| {
        state
            .scripts
            .lock()
            .unwrap()
            .get_mut(b)
            .and_then(|q| q.pop_front())
    });
    if let Some(s) = scripted {
        let mut resp = Json(s.body)
            .with_status(StatusCode::from_u16(s.status).unwrap())
            .into_response();
        for (k, v) in s.headers {
            resp.headers_mut().insert(
                poem::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        return resp;
    }
    let user = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    let content = if body["response_format"]["type"] == "json_object" {
        json!({"echo": user}).to_string()
    } else {
        format!("echo: {user}")
    };
    let rule = state.usage.lock().unwrap().clone();
    let usage = rule.map_or(Some((3, 4)), |rule| rule(&body));
    let mut answer = json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    });
    if let Some((prompt, completion)) = usage {
        answer["usage"] = json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion
        });
    }
    Json(answer).into_response()
}

impl StandIn {
    /// Starts the stand-in on 127.0.0.1:0.
    pub async fn start() -> Self {
        let state = Arc::new(StandInState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Route::new()
            .at("/v1/chat/completions", post(chat))
            .data(state.clone());
        let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).unwrap();
        tokio::spawn(async move {
            let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
        });
        Self { addr, state }
    }

    /// The `config.endpoint` to give keys: `http://127.0.0.1:PORT/v1`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request received so far.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.state.arrivals.lock().unwrap().clone()
    }

    /// Arrival instants of the requests made with `api_key`, sorted.
    pub fn arrivals_for(&self, api_key: &str) -> Vec<Instant> {
        let mut v: Vec<Instant> = self
            .arrivals()
            .into_iter()
            .filter(|a| a.bearer.as_deref() == Some(api_key))
            .map(|a| a.at)
            .collect();
        v.sort();
        v
    }

    /// Queues scripted answers for requests made with `api_key`.
    pub fn script(&self, api_key: &str, answers: impl IntoIterator<Item = Scripted>) {
        self.state
            .scripts
            .lock()
            .unwrap()
            .entry(api_key.to_owned())
            .or_default()
            .extend(answers);
    }

    /// Delays every answer.
    pub fn set_latency(&self, d: Duration) {
        *self.state.latency.lock().unwrap() = d;
    }

    /// Makes the default echo report the usage `rule` computes from the request body:
    /// `(prompt_tokens, completion_tokens)`, or `None` for an answer without `usage`. Without
    /// it the echo reports 3 prompt + 4 completion tokens.
    pub fn set_usage(&self, rule: impl Fn(&Value) -> Option<(u64, u64)> + Send + Sync + 'static) {
        *self.state.usage.lock().unwrap() = Some(Arc::new(rule));
    }
}

/// The most arrivals in any window of `period` (half-open), from a sorted list of instants.
/// The stand-in's own log is the judge of "never over the limit".
pub fn max_in_window(sorted: &[Instant], period: Duration) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..sorted.len() {
        while sorted[hi].duration_since(sorted[lo]) >= period {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

// ---------------------------------------------------------------------------------------------
// The app under test
// ---------------------------------------------------------------------------------------------

/// A running server over a fresh SQLite database.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    pub engine: Engine,
    pub database_url: String,
    pub dir: Arc<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// A retry policy with short backoffs, so failure tests run fast.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        default_cooldown: Duration::from_millis(200),
    }
}

/// True when the HTTP suites run on PostgreSQL + RabbitMQ (`AIRL_TEST_BACKEND=production`).
pub fn production_backends() -> bool {
    std::env::var("AIRL_TEST_BACKEND").is_ok_and(|v| v == "production")
}

fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!("AIRL_TEST_BACKEND=production needs {name}"),
    }
}

/// A new, empty PostgreSQL database on the server `TEST_DATABASE_URL` names; its URL.
pub async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    let admin_url = required_env("TEST_DATABASE_URL");
    let name = format!("airl_http_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connect to TEST_DATABASE_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .expect("create a test database");
    let _ = admin.close().await;
    let mut url = reqwest::Url::parse(&admin_url).expect("TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Drops a test database made by [`fresh_postgres_database`] (best effort).
pub async fn drop_postgres_database(url: &str) {
    use sqlx::Connection;
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return;
    };
    let name = parsed.path().trim_start_matches('/').to_owned();
    if !name.starts_with("airl_http_") {
        return;
    }
    if let Ok(mut admin) = sqlx::PgConnection::connect(&required_env("TEST_DATABASE_URL")).await {
        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await;
        let _ = admin.close().await;
    }
}

impl TestApp {
    /// Starts a server on port 0 over fresh backends (see the module docs).
    pub async fn spawn() -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let url = if production_backends() {
            fresh_postgres_database().await
        } else {
            format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display())
        };
        Self::spawn_on(url, dir).await
    }

    /// Starts a server over an existing database (a restart).
    pub async fn spawn_on(database_url: String, dir: Arc<tempfile::TempDir>) -> Self {
        let mut config = EngineConfig::new(database_url.clone());
        if production_backends() {
            config.rabbitmq_url = Some(required_env("TEST_RABBITMQ_URL"));
            // Queue names unique to this app (and stable across its restarts).
            config.queue_prefix = format!(
                "airl-test-{}",
                dir.path()
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("x")
            );
        }
        config.retry = fast_retry();
        config.max_workers = 64;
        // Tests run in parallel on a loaded 2-core machine: a wider transport guard than the
        // default keeps the stand-in's own clock within the limit under that jitter.
        config.limit_guard = Duration::from_millis(20);
        let engine = Engine::start(config).await.expect("engine starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let e = engine.clone();
        let server = tokio::spawn(async move {
            ai_rate_limiter::server::run(listener, e, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            engine,
            database_url,
            dir,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// Stops the server and the engine (graceful).
    pub async fn stop(mut self) {
        if production_backends() {
            // Leave no queues behind on the shared broker.
            if let Ok(views) = self.engine.list_workspaces(None).await {
                for v in views {
                    let _ = self.engine.delete_workspace(&v.workspace.id).await;
                }
            }
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
        self.engine.shutdown(Duration::from_secs(5)).await;
        if production_backends() && self.database_url.starts_with("postgres") {
            drop_postgres_database(&self.database_url).await;
        }
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rb = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    /// Sends a raw body with a JSON content type (for malformed JSON).
    pub async fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{}", self.base, path))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::PUT, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::DELETE, path, None).await
    }

    /// Registers a workspace; panics unless 201.
    pub async fn register(&self, workspace_id: &str, providers: Value) -> Value {
        let (status, body) = self
            .post(
                "/workspace/register",
                json!({"workspace_id": workspace_id, "providers": providers}),
            )
            .await;
        assert_eq!(status, 201, "register failed: {body}");
        body
    }

    /// Publishes a message; panics unless 201; returns its id.
    pub async fn publish(&self, body: Value) -> String {
        let (status, b) = self.post("/message/publish", body).await;
        assert_eq!(status, 201, "publish failed: {b}");
        b["message_id"].as_str().unwrap().to_owned()
    }

    /// Polls `GET /message/{id}` until `success` or `failed`.
    pub async fn wait_final(&self, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, m) = self.get(&format!("/message/{id}")).await;
            assert_eq!(status, 200, "{m}");
            if m["status"] == "success" || m["status"] == "failed" {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "message {id} not final in time: {m}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An openai key pointing at the stand-in.
pub fn openai_key(
    stand_in: &StandIn,
    api_key: &str,
    rate_limit: u32,
    period: Value,
    model: &str,
) -> Value {
    json!({
        "name": "openai",
        "api_key": api_key,
        "rate_limit": rate_limit,
        "rate_limit_period": period,
        "config": {"model": model, "endpoint": stand_in.endpoint(), "timeout_s": 10}
    })
}
