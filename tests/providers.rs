mod common;

// The real providers, end to end: the real server, and for each provider API a stand-in server
// that checks the request like the real API does (path, query, auth headers, body), answers like
// it (success bodies, error bodies, rate-limit headers), and logs every arrival. Each test
// asserts the exact request it expects from that log, and the stored message (status, result,
// error, attempts) and key state through the public API.
//
// Key secrets end in 4 distinct characters so a key can be found by its masked form.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::TestApp;
use poem::http::StatusCode;
use poem::web::Data;
use poem::{EndpointExt, Request, Response, handler};
use serde_json::{Value, json};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// The stand-in provider APIs
// ---------------------------------------------------------------------------------------------

/// Which real API a stand-in plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// `POST /v1/chat/completions`, `Authorization: Bearer`.
    OpenAi,
    /// `POST /openai/deployments/{deployment}/chat/completions?api-version=`, `api-key`.
    Azure,
    /// `POST /v1/messages`, `x-api-key`, `anthropic-version`.
    Anthropic,
    /// An OpenAI-compatible server under `/v3/openai` (as Novita serves it), vLLM-style errors.
    Compatible,
}

const ALL: [Api; 4] = [Api::OpenAi, Api::Azure, Api::Anthropic, Api::Compatible];

/// Azure stand-in: the deployment it has, and the model behind it.
const AZURE_DEPLOYMENT: &str = "prod-gpt4o";
const AZURE_MODEL: &str = "gpt-4o-2024-08-06";
const AZURE_API_VERSION: &str = "2024-10-21";

/// One request the stand-in received.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    wall: SystemTime,
    path: String,
    query: Option<String>,
    headers: HashMap<String, String>,
    /// The key's secret, from the header this API carries it in.
    secret: Option<String>,
    body: Value,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A scripted answer. `body: None` is the API's normal success answer.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Option<Value>,
}

impl Reply {
    fn ok() -> Self {
        Self {
            status: 200,
            headers: vec![],
            body: None,
        }
    }
    fn status(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: vec![],
            body: Some(body),
        }
    }
    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A script entry: builds its reply when the request arrives (for headers holding instants).
type Script = Box<dyn FnOnce(SystemTime) -> Reply + Send>;

struct FakeState {
    api: Api,
    seen: Mutex<Vec<Seen>>,
    scripts: Mutex<HashMap<String, VecDeque<Script>>>,
    /// Keys the stand-in considers over their limit until then (it answers 429, like the API).
    blocked: Mutex<HashMap<String, SystemTime>>,
    latency: Mutex<Duration>,
}

/// A stand-in provider API on 127.0.0.1.
#[derive(Clone)]
struct Fake {
    addr: SocketAddr,
    state: Arc<FakeState>,
}

/// The error body each API answers with.
fn error_body(api: Api, status: u16, message: &str) -> Value {
    match api {
        Api::OpenAi => {
            let (kind, code) = match status {
                401 => ("invalid_request_error", json!("invalid_api_key")),
                429 => ("requests", json!("rate_limit_exceeded")),
                s if s >= 500 => ("server_error", Value::Null),
                _ => ("invalid_request_error", Value::Null),
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
        Api::Azure => json!({"error": {"code": status.to_string(), "message": message}}),
        Api::Anthropic => {
            let kind = match status {
                400 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_stand_in"})
        }
        Api::Compatible => json!({
            "object": "error", "message": message, "type": "BadRequestError", "param": null, "code": status
        }),
    }
}

/// The user message of a request body (last `user` message).
fn user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// The normal success answer of each API, echoing the user message (as JSON when asked).
fn success_body(api: Api, body: &Value) -> Value {
    let user = user_text(body);
    match api {
        Api::Anthropic => {
            let wants_json = body["system"]
                .as_str()
                .is_some_and(|s| s.contains("JSON object"));
            let text = if wants_json {
                json!({"echo": user}).to_string()
            } else {
                format!("echo: {user}")
            };
            json!({
                "id": "msg_stand_in", "type": "message", "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": 11, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0, "output_tokens": 6}
            })
        }
        _ => {
            let text = if body["response_format"]["type"] == "json_object" {
                json!({"echo": user}).to_string()
            } else {
                format!("echo: {user}")
            };
            let model = if api == Api::Azure {
                json!(AZURE_MODEL)
            } else {
                body["model"].clone()
            };
            let mut v = json!({
                "id": "chatcmpl-stand-in", "object": "chat.completion", "created": 1_700_000_000,
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}
            });
            if api == Api::Azure {
                v["prompt_filter_results"] =
                    json!([{"prompt_index": 0, "content_filter_results": {}}]);
            }
            v
        }
    }
}

/// The rate-limit headers each API sends on every answer (with plenty left).
fn usual_rate_headers(api: Api, now: SystemTime) -> Vec<(String, String)> {
    let h = |k: &str, v: String| (k.to_owned(), v);
    match api {
        Api::OpenAi => vec![
            h("x-ratelimit-limit-requests", "500".into()),
            h("x-ratelimit-remaining-requests", "499".into()),
            h("x-ratelimit-reset-requests", "120ms".into()),
            h("x-ratelimit-limit-tokens", "30000".into()),
            h("x-ratelimit-remaining-tokens", "29979".into()),
            h("x-ratelimit-reset-tokens", "42ms".into()),
        ],
        Api::Azure => vec![
            h("x-ratelimit-remaining-requests", "119".into()),
            h("x-ratelimit-remaining-tokens", "119979".into()),
        ],
        Api::Anthropic => vec![
            h("anthropic-ratelimit-requests-limit", "50".into()),
            h("anthropic-ratelimit-requests-remaining", "49".into()),
            h(
                "anthropic-ratelimit-requests-reset",
                rfc3339(now + Duration::from_millis(1200)),
            ),
            h("anthropic-ratelimit-tokens-limit", "40000".into()),
            h("anthropic-ratelimit-tokens-remaining", "39983".into()),
            h(
                "anthropic-ratelimit-tokens-reset",
                rfc3339(now + Duration::from_millis(30)),
            ),
        ],
        Api::Compatible => vec![],
    }
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Checks a request like the real API does; `Err` is the API's answer to a bad request.
fn check_request(api: Api, seen: &Seen) -> Result<(), (u16, Value)> {
    let err = |status: u16, message: &str| Err((status, error_body(api, status, message)));
    if seen.header("content-type") != Some("application/json") {
        return err(400, "Content-Type must be application/json");
    }
    match api {
        Api::OpenAi | Api::Compatible => {
            let path = if api == Api::OpenAi {
                "/v1/chat/completions"
            } else {
                "/v3/openai/chat/completions"
            };
            if seen.path != path {
                return err(404, &format!("Invalid URL (POST {})", seen.path));
            }
            if seen.secret.is_none() {
                return err(401, "You didn't provide an API key.");
            }
            if !seen.body["model"].is_string() {
                return err(400, "you must provide a model parameter");
            }
        }
        Api::Azure => {
            let Some(deployment) = seen
                .path
                .strip_prefix("/openai/deployments/")
                .and_then(|p| p.strip_suffix("/chat/completions"))
            else {
                return err(404, "Resource not found");
            };
            let version_ok = seen
                .query
                .as_deref()
                .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("api-version=")));
            if !version_ok {
                return err(404, "Resource not found");
            }
            if seen.secret.is_none() {
                return err(
                    401,
                    "Access denied due to invalid subscription key or wrong API endpoint.",
                );
            }
            if deployment != AZURE_DEPLOYMENT {
                return Err((
                    404,
                    json!({"error": {"code": "DeploymentNotFound",
                        "message": "The API deployment for this resource does not exist."}}),
                ));
            }
        }
        Api::Anthropic => {
            if seen.path != "/v1/messages" {
                return err(404, "Not Found");
            }
            if seen.secret.is_none() {
                return err(401, "x-api-key header is required");
            }
            if seen.header("anthropic-version").is_none() {
                return err(400, "anthropic-version: header is required");
            }
            if !seen.body["max_tokens"].is_u64() {
                return err(400, "max_tokens: Field required");
            }
            let system_in_messages = seen.body["messages"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["role"] == "system"));
            if system_in_messages {
                return err(
                    400,
                    "messages: Unexpected role \"system\". The Messages API accepts a top-level `system` parameter, not \"system\" as an input message role.",
                );
            }
        }
    }
    Ok(())
}

fn respond(status: u16, headers: Vec<(String, String)>, body: &Value) -> Response {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .content_type("application/json");
    for (k, v) in headers {
        b = b.header(k, v);
    }
    b.body(body.to_string())
}

#[handler]
async fn serve(req: &Request, body: poem::Body, Data(state): Data<&Arc<FakeState>>) -> Response {
    let now = SystemTime::now();
    let bytes = body.into_vec().await.unwrap_or_default();
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or("<binary>").to_owned(),
            )
        })
        .collect();
    let secret = match state.api {
        Api::OpenAi | Api::Compatible => headers
            .get("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::to_owned),
        Api::Azure => headers.get("api-key").cloned(),
        Api::Anthropic => headers.get("x-api-key").cloned(),
    };
    let seen = Seen {
        at: Instant::now(),
        wall: now,
        path: req.uri().path().to_owned(),
        query: req.uri().query().map(str::to_owned),
        headers,
        secret: secret.clone(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    };
    state.seen.lock().unwrap().push(seen.clone());
    let latency = *state.latency.lock().unwrap();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Err((status, body)) = check_request(state.api, &seen) {
        return respond(status, vec![], &body);
    }
    let secret = secret.unwrap_or_default();
    // Like the real API: a key that was told it had nothing left gets a 429 until the reset.
    let blocked_until = state.blocked.lock().unwrap().get(&secret).copied();
    if let Some(until) = blocked_until
        && now < until
    {
        let body = error_body(state.api, 429, "Rate limit reached for requests");
        return respond(429, vec![], &body);
    }
    let script = state
        .scripts
        .lock()
        .unwrap()
        .get_mut(&secret)
        .and_then(VecDeque::pop_front);
    let reply = script.map_or_else(Reply::ok, |s| s(now));
    let mut headers = usual_rate_headers(state.api, now);
    // Scripted headers replace the usual ones of the same name.
    headers.retain(|(k, _)| !reply.headers.iter().any(|(sk, _)| sk == k));
    headers.extend(reply.headers.iter().cloned());
    let exhausted = headers.iter().any(|(k, v)| {
        (k == "x-ratelimit-remaining-requests" || k == "anthropic-ratelimit-requests-remaining")
            && v == "0"
    });
    if exhausted && reply.status == 200 {
        let reset = headers.iter().find_map(|(k, v)| match k.as_str() {
            "x-ratelimit-reset-requests" => {
                ai_rate_limiter::providers::parse_reset_duration(v).map(|d| now + d)
            }
            "anthropic-ratelimit-requests-reset" => {
                ai_rate_limiter::providers::parse_reset_timestamp(v, now).map(|d| now + d)
            }
            _ => None,
        });
        if let Some(until) = reset {
            state.blocked.lock().unwrap().insert(secret, until);
        }
    }
    let body = reply
        .body
        .clone()
        .unwrap_or_else(|| success_body(state.api, &seen.body));
    respond(reply.status, headers, &body)
}

impl Fake {
    async fn start(api: Api) -> Self {
        let state = Arc::new(FakeState {
            api,
            seen: Mutex::default(),
            scripts: Mutex::default(),
            blocked: Mutex::default(),
            latency: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).unwrap();
        let app = serve.data(state.clone());
        tokio::spawn(async move {
            let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
        });
        Self { addr, state }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in arrival order.
    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The requests made with `secret`.
    fn seen_for(&self, secret: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.secret.as_deref() == Some(secret))
            .collect()
    }

    /// Queues fixed answers for requests made with `secret`.
    fn script(&self, secret: &str, replies: impl IntoIterator<Item = Reply>) {
        let mut scripts = self.state.scripts.lock().unwrap();
        let q = scripts.entry(secret.to_owned()).or_default();
        for r in replies {
            q.push_back(Box::new(move |_| r));
        }
    }

    /// Queues an answer built at arrival time (its argument: the arrival's wall-clock time).
    fn script_at(&self, secret: &str, f: impl FnOnce(SystemTime) -> Reply + Send + 'static) {
        self.state
            .scripts
            .lock()
            .unwrap()
            .entry(secret.to_owned())
            .or_default()
            .push_back(Box::new(f));
    }

    fn set_latency(&self, d: Duration) {
        *self.state.latency.lock().unwrap() = d;
    }

    /// The API's error body.
    fn error(&self, status: u16, message: &str) -> Reply {
        Reply::status(status, error_body(self.state.api, status, message))
    }

    /// The registration entry of a key at this stand-in, serving `model`.
    fn key(&self, secret: &str, model: &str) -> Value {
        let (name, config) = match self.state.api {
            Api::OpenAi => ("openai", json!({"endpoint": format!("{}/v1", self.base())})),
            Api::Azure => (
                "azure",
                json!({"endpoint": self.base(), "api_version": AZURE_API_VERSION,
                       "deployment": AZURE_DEPLOYMENT}),
            ),
            Api::Anthropic => ("anthropic", json!({"endpoint": self.base()})),
            Api::Compatible => (
                "openai_compatible",
                json!({"endpoint": format!("{}/v3/openai", self.base())}),
            ),
        };
        let mut config = config;
        config["model"] = json!(model);
        config["timeout_s"] = json!(10);
        json!({
            "name": name, "api_key": secret, "rate_limit": 100,
            "rate_limit_period": "second", "config": config
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const WAIT: Duration = Duration::from_secs(10);

/// A workspace with one key at `fake`; returns the key's id.
async fn one_key(app: &TestApp, ws: &str, fake: &Fake, secret: &str, model: &str) -> String {
    let body = app.register(ws, json!([fake.key(secret, model)])).await;
    body["workspace"]["provider_keys"][0]["key_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The listed key (`GET /provider-keys/`) whose secret is `secret`.
async fn listed_key(app: &TestApp, ws: &str, secret: &str) -> Value {
    let (status, body) = app.get(&format!("/provider-keys/?workspace_id={ws}")).await;
    assert_eq!(status, 200, "{body}");
    let masked = format!("****{}", &secret[secret.len() - 4..]);
    body["provider_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["api_key"] == masked.as_str())
        .unwrap_or_else(|| panic!("no key {masked} in {body}"))
        .clone()
}

/// Waits until the listed key's `healthy` is `want` (the store write may trail by a moment).
async fn wait_healthy(app: &TestApp, ws: &str, secret: &str, want: bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let k = listed_key(app, ws, secret).await;
        if k["healthy"] == want {
            return k;
        }
        assert!(
            Instant::now() < deadline,
            "key never became healthy={want}: {k}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn publish_and_wait(app: &TestApp, body: Value) -> Value {
    let id = app.publish(body).await;
    app.wait_final(&id, WAIT).await
}

fn hello(ws: &str) -> Value {
    json!({"workspace_id": ws, "prompt": "Hello", "content": "World", "system_prompt": "Be brief."})
}

// ---------------------------------------------------------------------------------------------
// 1. Each provider's exact request and its mapped answer
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_gets_bearer_auth_system_then_user_messages_and_its_usage_is_stored() {
    const K: &str = "sk-openai-exact-0a1b";
    let fake = Fake::start(Api::OpenAi).await;
    let app = TestApp::spawn().await;
    let mut key = fake.key(K, "gpt-4o-mini");
    key["config"]["temperature"] = json!(0.3);
    key["config"]["max_tokens"] = json!(200);
    app.register("oa", json!([key])).await;

    let m = publish_and_wait(&app, hello("oa")).await;
    assert_eq!(m["status"], "success", "{m}");
    assert_eq!(m["attempts"], 1);
    assert_eq!(m["result"]["text"], "echo: Hello\n\nWorld");
    assert_eq!(m["result"]["model"], "gpt-4o-mini");
    assert_eq!(
        m["result"]["usage"],
        json!({"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21})
    );

    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.query, None);
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {K}").as_str())
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("api-key"), None);
    assert_eq!(
        r.body,
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello\n\nWorld"}
            ],
            "temperature": 0.3,
            "max_tokens": 200
        })
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_endpoint_given_as_the_full_chat_completions_url_is_used_as_is() {
    const K: &str = "sk-openai-fullurl-2c3d";
    let fake = Fake::start(Api::OpenAi).await;
    let app = TestApp::spawn().await;
    let mut key = fake.key(K, "gpt-4");
    key["config"]["endpoint"] = json!(format!("{}/v1/chat/completions", fake.base()));
    app.register("oa-full", json!([key])).await;
    let m = publish_and_wait(&app, json!({"workspace_id": "oa-full", "prompt": "Hi"})).await;
    assert_eq!(m["status"], "success", "{m}");
    assert_eq!(fake.seen()[0].path, "/v1/chat/completions");
    assert_eq!(
        fake.seen()[0].body,
        json!({"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}]})
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_calls_the_deployment_with_the_api_version_and_an_api_key_header() {
    const K: &str = "azure-key-exact-4e5f";
    let fake = Fake::start(Api::Azure).await;
    let app = TestApp::spawn().await;
    let mut key = fake.key(K, "gpt-4o");
    key["config"]["max_tokens"] = json!(300);
    app.register("az", json!([key])).await;

    let m = publish_and_wait(&app, hello("az")).await;
    assert_eq!(m["status"], "success", "{m}");
    assert_eq!(m["result"]["text"], "echo: Hello\n\nWorld");
    assert_eq!(m["result"]["model"], AZURE_MODEL, "the model Azure reports");
    assert_eq!(m["result"]["usage"]["total_tokens"], 21);

    let r = &fake.seen()[0];
    assert_eq!(
        r.path,
        format!("/openai/deployments/{AZURE_DEPLOYMENT}/chat/completions")
    );
    assert_eq!(r.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(r.header("api-key"), Some(K));
    assert_eq!(
        r.header("authorization"),
        None,
        "Azure takes the key in api-key"
    );
    assert_eq!(
        r.body,
        json!({
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello\n\nWorld"}
            ],
            "max_tokens": 300
        }),
        "no model in the body: the deployment names it"
    );

    let listed = listed_key(&app, "az", K).await;
    assert_eq!(listed["name"], "azure");
    assert_eq!(listed["config"]["deployment"], AZURE_DEPLOYMENT);
    assert_eq!(listed["config"]["api_version"], AZURE_API_VERSION);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_openai_alias_is_accepted_and_the_deployment_defaults_to_the_model() {
    const K: &str = "azure-key-alias-6a7b";
    let fake = Fake::start(Api::Azure).await;
    let app = TestApp::spawn().await;
    let key = json!({
        "name": "azure_openai", "api_key": K, "rate_limit": 10, "rate_limit_period": 60,
        "config": {"model": AZURE_DEPLOYMENT, "endpoint": format!("{}/", fake.base()),
                   "api_version": "2024-06-01"}
    });
    let body = app.register("az-alias", json!([key])).await;
    assert_eq!(body["workspace"]["provider_keys"][0]["name"], "azure");
    assert_eq!(
        body["workspace"]["provider_keys"][0]["config"]["deployment"],
        Value::Null
    );

    let m = publish_and_wait(&app, json!({"workspace_id": "az-alias", "prompt": "Hi"})).await;
    assert_eq!(m["status"], "success", "{m}");
    let r = &fake.seen()[0];
    assert_eq!(
        r.path,
        format!("/openai/deployments/{AZURE_DEPLOYMENT}/chat/completions")
    );
    assert_eq!(r.query.as_deref(), Some("api-version=2024-06-01"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_gets_x_api_key_version_header_top_level_system_and_a_default_max_tokens() {
    const K: &str = "sk-ant-exact-8c9d";
    let fake = Fake::start(Api::Anthropic).await;
    let app = TestApp::spawn().await;
    app.register("an", json!([fake.key(K, "claude-sonnet-4-5")]))
        .await;

    let m = publish_and_wait(&app, hello("an")).await;
    assert_eq!(m["status"], "success", "{m}");
    assert_eq!(m["attempts"], 1);
    assert_eq!(m["result"]["text"], "echo: Hello\n\nWorld");
    assert_eq!(m["result"]["model"], "claude-sonnet-4-5");
    assert_eq!(
        m["result"]["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17})
    );

    let r = &fake.seen()[0];
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(r.query, None);
    assert_eq!(r.header("x-api-key"), Some(K));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(r.header("authorization"), None);
    assert_eq!(
        r.body,
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": "Hello\n\nWorld"}]
        })
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_takes_its_version_temperature_and_max_tokens_from_the_key_config() {
    const K: &str = "sk-ant-config-0e1f";
    let fake = Fake::start(Api::Anthropic).await;
    let app = TestApp::spawn().await;
    let mut key = fake.key(K, "claude-haiku-4-5");
    key["config"]["api_version"] = json!("2024-01-01");
    key["config"]["max_tokens"] = json!(64);
    key["config"]["temperature"] = json!(0.5);
    app.register("an-cfg", json!([key])).await;

    let m = publish_and_wait(&app, json!({"workspace_id": "an-cfg", "prompt": "Hi"})).await;
    assert_eq!(m["status"], "success", "{m}");
    let r = &fake.seen()[0];
    assert_eq!(r.header("anthropic-version"), Some("2024-01-01"));
    assert_eq!(
        r.body,
        json!({
            "model": "claude-haiku-4-5", "max_tokens": 64, "temperature": 0.5,
            "messages": [{"role": "user", "content": "Hi"}]
        })
    );

    // Anthropic's temperature stops at 1.
    key["config"]["temperature"] = json!(1.5);
    let (status, body) = app
        .post(
            "/workspace/register",
            json!({"workspace_id": "an-hot", "providers": [key]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_compatible_and_its_novita_alias_use_the_openai_wire_at_their_endpoint() {
    const K: &str = "sk-novita-exact-2a3b";
    const K2: &str = "sk-compat-exact-4c5d";
    let fake = Fake::start(Api::Compatible).await;
    let app = TestApp::spawn().await;
    let mut novita = fake.key(K, "meta-llama/llama-3.1-8b-instruct");
    novita["name"] = json!("novita");
    let body = app.register("compat", json!([novita])).await;
    assert_eq!(
        body["workspace"]["provider_keys"][0]["name"],
        "openai_compatible"
    );

    let m = publish_and_wait(&app, hello("compat")).await;
    assert_eq!(m["status"], "success", "{m}");
    assert_eq!(m["result"]["model"], "meta-llama/llama-3.1-8b-instruct");
    assert_eq!(m["result"]["usage"]["prompt_tokens"], 9);
    let r = &fake.seen()[0];
    assert_eq!(r.path, "/v3/openai/chat/completions");
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {K}").as_str())
    );
    assert_eq!(
        r.body,
        json!({
            "model": "meta-llama/llama-3.1-8b-instruct",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello\n\nWorld"}
            ]
        })
    );

    // The canonical name works too, through POST /provider-key/add.
    let mut k2 = fake.key(K2, "qwen2.5-7b");
    k2["workspace_id"] = json!("compat");
    let (status, body) = app.post("/provider-key/add", k2).await;
    assert_eq!(status, 201, "{body}");
    let m = publish_and_wait(
        &app,
        json!({"workspace_id": "compat", "prompt": "Hi", "model": "qwen2.5-7b"}),
    )
    .await;
    assert_eq!(m["status"], "success", "{m}");
    assert_eq!(fake.seen_for(K2)[0].body["model"], "qwen2.5-7b");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Registration: what each provider requires
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_without_endpoint_or_api_version_and_compatible_without_endpoint_are_422() {
    let app = TestApp::spawn().await;
    let key = |name: &str, config: Value| {
        json!({"name": name, "api_key": "sk-any-key-00000000", "rate_limit": 1,
               "rate_limit_period": 1, "config": config})
    };
    let cases = [
        (
            key(
                "azure",
                json!({"model": "gpt-4o", "api_version": "2024-10-21"}),
            ),
            "config.endpoint",
        ),
        (
            key(
                "azure_openai",
                json!({"model": "gpt-4o", "endpoint": "https://res.openai.azure.com"}),
            ),
            "config.api_version",
        ),
        (
            key("openai_compatible", json!({"model": "llama3"})),
            "config.endpoint",
        ),
        (key("novita", json!({"model": "llama3"})), "config.endpoint"),
    ];
    for (i, (k, field)) in cases.iter().enumerate() {
        let ws = format!("bad-{i}");
        let (status, body) = app
            .post(
                "/workspace/register",
                json!({"workspace_id": ws, "providers": [k]}),
            )
            .await;
        assert_eq!(status, 422, "{k}: {body}");
        assert_eq!(body["success"], false);
        let msg = body["message"].as_str().unwrap();
        assert!(msg.contains(field), "{msg}");
        assert!(msg.contains("providers[0]"), "{msg}");
        let (status, list) = app.get(&format!("/workspaces/?workspace_id={ws}")).await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(
            list["workspaces"],
            json!([]),
            "a rejected registration created it"
        );
    }

    // The same through POST /provider-key/add, and an update that would leave a key invalid.
    let fake = Fake::start(Api::OpenAi).await;
    let key_id = one_key(&app, "good", &fake, "sk-good-key-0000abcd", "gpt-4o").await;
    for (k, field) in cases {
        let mut k = k.clone();
        k["workspace_id"] = json!("good");
        let (status, body) = app.post("/provider-key/add", k).await;
        assert_eq!(status, 422, "{body}");
        assert!(body["message"].as_str().unwrap().contains(field), "{body}");
    }
    let (status, body) = app
        .put(
            &format!("/provider-key/update/{key_id}"),
            json!({"name": "azure"}),
        )
        .await;
    assert_eq!(status, 422, "switching to azure without its config: {body}");
    let (status, body) = app
        .put(
            &format!("/provider-key/update/{key_id}"),
            json!({"name": "azure", "config": {"model": "gpt-4o",
                "endpoint": "https://res.openai.azure.com", "api_version": "2024-10-21"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["provider_key"]["name"], "azure");
    let (_, body) = app.get("/provider-keys/?workspace_id=good").await;
    assert_eq!(body["provider_keys"].as_array().unwrap().len(), 1);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. JSON mode
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_mode_for_each_provider_asks_for_json_and_stores_the_parsed_answer() {
    for api in ALL {
        const K: &str = "sk-json-mode-key-6e7f";
        let fake = Fake::start(api).await;
        let app = TestApp::spawn().await;
        let model = if api == Api::Azure {
            AZURE_DEPLOYMENT
        } else {
            "m-1"
        };
        app.register("js", json!([fake.key(K, model)])).await;
        let m = publish_and_wait(
            &app,
            json!({"workspace_id": "js", "prompt": "List", "system_prompt": "Be brief.",
                   "response_format": "json"}),
        )
        .await;
        assert_eq!(m["status"], "success", "{api:?}: {m}");
        assert_eq!(m["result"]["json"], json!({"echo": "List"}), "{api:?}: {m}");
        let body = &fake.seen()[0].body;
        if api == Api::Anthropic {
            assert!(body.get("response_format").is_none(), "{body}");
            let system = body["system"].as_str().unwrap();
            assert!(system.starts_with("Be brief.\n\n"), "{system}");
            assert!(system.contains("JSON object"), "{system}");
        } else {
            assert_eq!(
                body["response_format"],
                json!({"type": "json_object"}),
                "{api:?}"
            );
            assert_eq!(body["messages"][0]["content"], "Be brief.", "{api:?}");
        }
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_is_not_json_fails_the_message_and_keeps_the_raw_text() {
    for api in [Api::Anthropic, Api::OpenAi] {
        const K: &str = "sk-json-bad-key-8a9b";
        let fake = Fake::start(api).await;
        let app = TestApp::spawn().await;
        app.register("jb", json!([fake.key(K, "m-1")])).await;
        let prose = match api {
            Api::Anthropic => json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": "m-1",
                "content": [{"type": "text", "text": "Sure! Here is the list: a, b"}],
                "stop_reason": "end_turn", "usage": {"input_tokens": 3, "output_tokens": 8}
            }),
            _ => json!({
                "id": "c", "object": "chat.completion", "model": "m-1",
                "choices": [{"index": 0, "message": {"role": "assistant",
                    "content": "Sure! Here is the list: a, b"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}
            }),
        };
        fake.script(K, [Reply::status(200, prose)]);
        let m = publish_and_wait(
            &app,
            json!({"workspace_id": "jb", "prompt": "List", "response_format": "json"}),
        )
        .await;
        assert_eq!(m["status"], "failed", "{api:?}: {m}");
        assert_eq!(m["attempts"], 1);
        assert!(
            m["error"].as_str().unwrap().contains("not valid JSON"),
            "{api:?}: {m}"
        );
        assert_eq!(m["result"]["text"], "Sure! Here is the list: a, b");
        assert_eq!(m["result"]["json"], Value::Null);
        app.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Failure classes, for every provider and its own error bodies
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_fails_at_once_with_the_providers_own_message() {
    for api in ALL {
        const K: &str = "sk-bad-request-0c1d";
        let fake = Fake::start(api).await;
        let app = TestApp::spawn().await;
        let model = if api == Api::Azure {
            AZURE_DEPLOYMENT
        } else {
            "m-1"
        };
        one_key(&app, "br", &fake, K, model).await;
        let message = "This model's maximum context length is 8192 tokens.";
        fake.script(K, [fake.error(400, message)]);
        let m = publish_and_wait(&app, json!({"workspace_id": "br", "prompt": "long"})).await;
        assert_eq!(m["status"], "failed", "{api:?}: {m}");
        assert_eq!(m["attempts"], 1, "{api:?}: no retry");
        assert_eq!(m["error"], format!("HTTP 400: {message}"), "{api:?}");
        assert_eq!(fake.seen().len(), 1, "{api:?}");
        assert_eq!(listed_key(&app, "br", K).await["healthy"], true);
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_azure_deployment_that_does_not_exist_fails_with_azures_message() {
    const K: &str = "azure-key-nodeploy-2e3f";
    let fake = Fake::start(Api::Azure).await;
    let app = TestApp::spawn().await;
    let mut key = fake.key(K, "gpt-4o");
    key["config"]["deployment"] = json!("not-deployed");
    app.register("az-404", json!([key])).await;
    let m = publish_and_wait(&app, json!({"workspace_id": "az-404", "prompt": "Hi"})).await;
    assert_eq!(m["status"], "failed", "{m}");
    assert_eq!(m["attempts"], 1);
    assert_eq!(
        m["error"],
        "HTTP 404: The API deployment for this resource does not exist."
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_marks_the_key_unhealthy_and_the_message_moves_to_a_healthy_key() {
    for api in ALL {
        const BAD: &str = "sk-rejected-key-4a5b";
        const GOOD: &str = "sk-accepted-key-6c7d";
        let fake = Fake::start(api).await;
        let app = TestApp::spawn().await;
        let model = if api == Api::Azure {
            AZURE_DEPLOYMENT
        } else {
            "m-1"
        };
        app.register("auth", json!([fake.key(BAD, model)])).await;
        fake.script(BAD, [fake.error(401, "invalid x-api-key")]);
        let mut good = fake.key(GOOD, model);
        good["workspace_id"] = json!("auth");
        let (status, body) = app.post("/provider-key/add", good).await;
        assert_eq!(status, 201, "{body}");
        let good_id = body["key_id"].clone();

        let m = publish_and_wait(&app, json!({"workspace_id": "auth", "prompt": "Hi"})).await;
        assert_eq!(m["status"], "success", "{api:?}: {m}");
        assert_eq!(m["key_id"], good_id, "{api:?}");
        assert_eq!(
            m["attempts"], 2,
            "{api:?}: the refused call and the good one are both calls"
        );
        let bad = wait_healthy(&app, "auth", BAD, false).await;
        assert_eq!(bad["healthy"], false, "{api:?}");
        assert_eq!(listed_key(&app, "auth", GOOD).await["healthy"], true);

        // It is skipped from then on.
        let m = publish_and_wait(&app, json!({"workspace_id": "auth", "prompt": "Again"})).await;
        assert_eq!(m["status"], "success");
        assert_eq!(
            fake.seen_for(BAD).len(),
            1,
            "{api:?}: the rejected key was used again"
        );
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_only_key_refused_a_message_fails_with_the_providers_reason_and_no_secret() {
    for (api, status) in [
        (Api::OpenAi, 401),
        (Api::Azure, 401),
        (Api::Anthropic, 403),
        (Api::Compatible, 401),
    ] {
        const K: &str = "sk-only-key-refused-8e9f";
        let fake = Fake::start(api).await;
        let app = TestApp::spawn().await;
        let model = if api == Api::Azure {
            AZURE_DEPLOYMENT
        } else {
            "m-1"
        };
        one_key(&app, "only", &fake, K, model).await;
        // The provider echoes the secret in its message: it must not reach the stored error.
        let message = format!("Incorrect API key provided: {K}");
        fake.script(K, [fake.error(status, &message)]);
        let m = publish_and_wait(&app, json!({"workspace_id": "only", "prompt": "Hi"})).await;
        assert_eq!(m["status"], "failed", "{api:?}: {m}");
        assert_eq!(
            m["attempts"], 1,
            "{api:?}: the refused call was one provider call"
        );
        let error = m["error"].as_str().unwrap();
        assert!(error.contains("rejected by the provider"), "{error}");
        assert!(
            error.contains(&format!(
                "HTTP {status}: Incorrect API key provided: ****8e9f"
            )),
            "{api:?}: {error}"
        );
        assert!(
            !error.contains(K),
            "the secret leaked into the error: {error}"
        );
        wait_healthy(&app, "only", K, false).await;
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_anthropic_overloaded_529_are_retried_until_success() {
    for api in ALL {
        const K: &str = "sk-server-error-0a1c";
        let fake = Fake::start(api).await;
        let app = TestApp::spawn().await;
        let model = if api == Api::Azure {
            AZURE_DEPLOYMENT
        } else {
            "m-1"
        };
        one_key(&app, "5xx", &fake, K, model).await;
        let transient = if api == Api::Anthropic {
            fake.error(529, "Overloaded")
        } else {
            fake.error(503, "The server is overloaded or not ready yet.")
        };
        fake.script(K, [fake.error(500, "The server had an error"), transient]);
        let m = publish_and_wait(&app, json!({"workspace_id": "5xx", "prompt": "Hi"})).await;
        assert_eq!(m["status"], "success", "{api:?}: {m}");
        assert_eq!(m["attempts"], 3, "{api:?}: two failures and the success");
        assert_eq!(m["error"], Value::Null);
        let seen = fake.seen();
        assert_eq!(seen.len(), 3);
        // fast_retry(): 20 ms base, doubling, jitter down to half: >= 10 ms, then >= 20 ms.
        assert!(seen[1].at.duration_since(seen[0].at) >= Duration::from_millis(10));
        assert!(seen[2].at.duration_since(seen[1].at) >= Duration::from_millis(20));
        assert_eq!(listed_key(&app, "5xx", K).await["healthy"], true);
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_server_errors_fail_after_the_attempt_limit_with_the_last_message() {
    for api in ALL {
        const K: &str = "sk-server-down-2b3d";
        let fake = Fake::start(api).await;
        let app = TestApp::spawn().await;
        let model = if api == Api::Azure {
            AZURE_DEPLOYMENT
        } else {
            "m-1"
        };
        one_key(&app, "down", &fake, K, model).await;
        let status = if api == Api::Anthropic { 529 } else { 502 };
        fake.script(
            K,
            [
                fake.error(status, "first"),
                fake.error(status, "second"),
                fake.error(status, "Overloaded"),
            ],
        );
        let m = publish_and_wait(&app, json!({"workspace_id": "down", "prompt": "Hi"})).await;
        assert_eq!(m["status"], "failed", "{api:?}: {m}");
        assert_eq!(m["attempts"], 3, "{api:?}: fast_retry() allows 3");
        assert_eq!(
            m["error"],
            format!("gave up after 3 attempts: HTTP {status}: Overloaded"),
            "{api:?}"
        );
        assert_eq!(fake.seen().len(), 3);
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_provider_and_a_slow_one_are_retried_then_failed() {
    // Nothing listens on the port of a listener that was just dropped.
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let app = TestApp::spawn().await;
    let key = json!({"name": "anthropic", "api_key": "sk-ant-nowhere-4c5e", "rate_limit": 100,
                     "rate_limit_period": 1,
                     "config": {"model": "m-1", "endpoint": format!("http://{closed}")}});
    app.register("unreach", json!([key])).await;
    let m = publish_and_wait(&app, json!({"workspace_id": "unreach", "prompt": "Hi"})).await;
    assert_eq!(m["status"], "failed", "{m}");
    assert_eq!(m["attempts"], 3);
    assert_eq!(
        m["error"],
        "gave up after 3 attempts: cannot connect to the provider"
    );

    let fake = Fake::start(Api::Azure).await;
    fake.set_latency(Duration::from_millis(600));
    let mut key = fake.key("azure-key-slow-6d7f", AZURE_DEPLOYMENT);
    key["config"]["timeout_s"] = json!(0.2);
    app.register("slow", json!([key])).await;
    let m = publish_and_wait(&app, json!({"workspace_id": "slow", "prompt": "Hi"})).await;
    assert_eq!(m["status"], "failed", "{m}");
    assert_eq!(m["attempts"], 3);
    assert_eq!(
        m["error"],
        "gave up after 3 attempts: provider call timed out"
    );
    assert_eq!(fake.seen().len(), 3);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. 429s and the providers' rate-limit headers
// ---------------------------------------------------------------------------------------------

/// The gap between consecutive arrivals.
fn gaps(seen: &[Seen]) -> Vec<Duration> {
    seen.windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_as_an_http_date_pauses_the_key_until_that_date() {
    for api in ALL {
        const K: &str = "sk-retry-date-8e9a";
        let fake = Fake::start(api).await;
        let app = TestApp::spawn().await;
        let model = if api == Api::Azure {
            AZURE_DEPLOYMENT
        } else {
            "m-1"
        };
        one_key(&app, "date", &fake, K, model).await;
        let body = error_body(api, 429, "Rate limit reached for requests");
        fake.script_at(K, move |now| {
            // HTTP dates have whole seconds: the date is 1 to 2 s away.
            let at = now + Duration::from_secs(2);
            Reply::status(429, body).header("retry-after", httpdate::fmt_http_date(at))
        });
        let m = publish_and_wait(&app, json!({"workspace_id": "date", "prompt": "Hi"})).await;
        assert_eq!(m["status"], "success", "{api:?}: {m}");
        assert_eq!(m["attempts"], 1, "{api:?}: the 429 is not an attempt");
        let seen = fake.seen();
        assert_eq!(seen.len(), 2, "{api:?}: one 429, one retry");
        let date = httpdate::parse_http_date(&httpdate::fmt_http_date(
            seen[0].wall + Duration::from_secs(2),
        ))
        .unwrap();
        assert!(
            seen[1].wall >= date,
            "{api:?}: retried at {:?}, before the Retry-After date {date:?}",
            seen[1].wall
        );
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_without_retry_after_cools_down_until_the_openai_or_anthropic_reset() {
    for api in [Api::OpenAi, Api::Anthropic] {
        const K: &str = "sk-429-reset-0b1c";
        let fake = Fake::start(api).await;
        let app = TestApp::spawn().await;
        one_key(&app, "reset", &fake, K, "m-1").await;
        let body = error_body(
            api,
            429,
            "Number of request tokens has exceeded your per-minute rate limit",
        );
        fake.script_at(K, move |now| match api {
            Api::OpenAi => Reply::status(429, body)
                .header("x-ratelimit-remaining-requests", "0")
                .header("x-ratelimit-reset-requests", "800ms"),
            _ => Reply::status(429, body)
                .header("anthropic-ratelimit-requests-remaining", "0")
                .header(
                    "anthropic-ratelimit-requests-reset",
                    rfc3339(now + Duration::from_millis(800)),
                ),
        });
        let m = publish_and_wait(&app, json!({"workspace_id": "reset", "prompt": "Hi"})).await;
        assert_eq!(m["status"], "success", "{api:?}: {m}");
        assert_eq!(m["attempts"], 1);
        let g = gaps(&fake.seen());
        assert_eq!(g.len(), 1);
        // The default cool-down of fast_retry() is 200 ms: the reset's 800 ms was used.
        assert!(
            g[0] >= Duration::from_millis(790),
            "{api:?}: retried {:?} after the 429",
            g[0]
        );
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_with_nothing_remaining_pauses_the_key_until_the_reset_so_no_429_follows() {
    for api in [Api::OpenAi, Api::Anthropic] {
        const K: &str = "sk-exhausted-key-2d3e";
        let fake = Fake::start(api).await;
        let app = TestApp::spawn().await;
        one_key(&app, "spent", &fake, K, "m-1").await;
        fake.script_at(K, move |now| match api {
            Api::OpenAi => Reply::ok()
                .header("x-ratelimit-remaining-requests", "0")
                .header("x-ratelimit-reset-requests", "1s"),
            _ => Reply::ok()
                .header("anthropic-ratelimit-requests-remaining", "0")
                .header(
                    "anthropic-ratelimit-requests-reset",
                    rfc3339(now + Duration::from_secs(1)),
                ),
        });
        // Three messages at once on one worker: the first spends the key.
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(
                app.publish(json!({"workspace_id": "spent", "prompt": format!("m{i}")}))
                    .await,
            );
        }
        for id in &ids {
            let m = app.wait_final(id, WAIT).await;
            assert_eq!(m["status"], "success", "{api:?}: {m}");
            assert_eq!(m["attempts"], 1, "{api:?}: {m}");
        }
        let seen = fake.seen();
        assert_eq!(seen.len(), 3, "{api:?}: no request was answered 429");
        let g = gaps(&seen);
        // The stand-in's own log: nothing came on the key before the reset (1 s; an RFC 3339
        // instant in milliseconds may round down by one).
        assert!(
            g[0] >= Duration::from_millis(998),
            "{api:?}: the next request came {:?} after the one that spent the key",
            g[0]
        );
        assert!(
            g[1] < Duration::from_millis(500),
            "{api:?}: the key stayed paused: {:?}",
            g[1]
        );
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_spent_key_waits_for_its_reset_the_message_goes_to_another_key() {
    const A: &str = "sk-ant-spent-key-4f5a";
    const B: &str = "sk-ant-fresh-key-6b7c";
    let fake = Fake::start(Api::Anthropic).await;
    let app = TestApp::spawn().await;
    app.register("two", json!([fake.key(A, "m-1")])).await;
    fake.script_at(A, |now| {
        Reply::ok()
            .header("anthropic-ratelimit-requests-remaining", "0")
            .header(
                "anthropic-ratelimit-requests-reset",
                rfc3339(now + Duration::from_secs(1)),
            )
    });
    let first = publish_and_wait(&app, json!({"workspace_id": "two", "prompt": "first"})).await;
    assert_eq!(first["status"], "success");
    let mut b = fake.key(B, "m-1");
    b["workspace_id"] = json!("two");
    let (status, body) = app.post("/provider-key/add", b).await;
    assert_eq!(status, 201, "{body}");
    let second = publish_and_wait(&app, json!({"workspace_id": "two", "prompt": "second"})).await;
    assert_eq!(second["status"], "success");
    assert_eq!(
        second["key_id"], body["key_id"],
        "the spent key was not skipped"
    );
    assert_eq!(fake.seen_for(A).len(), 1);
    app.stop().await;
}
