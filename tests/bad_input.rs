mod common;

// Every bad input is answered with the right 4xx and one JSON error shape,
// `{"success": false, "code": ..., "message": ...}`, and changes nothing: the lists of
// workspaces, keys and workers read the same afterwards, and nothing reaches the provider.
// No request in this file may be answered with a 5xx.

use common::*;
use serde_json::{Value, json};
use uuid::Uuid;

const WS: &str = "ws-1";
const SECRET: &str = "sk-bad-input-0000000000001111";

const BAD_REQUEST: &[u16] = &[400];
const UNPROCESSABLE: &[u16] = &[422];
const NOT_FOUND: &[u16] = &[404];
/// Either is a fair answer: the value is malformed or out of range, depending on the parser.
const BAD_OR_UNPROCESSABLE: &[u16] = &[400, 422];
/// A bad id in a path may not even match the route.
const ANY_4XX: &[u16] = &[400, 404, 405, 422];

/// One registered workspace (`ws-1`, one openai key on the stand-in, one worker) and what the
/// lists said about it before the bad requests.
struct Fixture {
    stand_in: StandIn,
    app: TestApp,
    key_id: String,
    before: Value,
}

impl Fixture {
    async fn new() -> Self {
        let stand_in = StandIn::start().await;
        let app = TestApp::spawn().await;
        let reg = app
            .register(
                WS,
                json!([openai_key(&stand_in, SECRET, 5, json!("minute"), "gpt-4o")]),
            )
            .await;
        let key_id = reg["workspace"]["provider_keys"][0]["key_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let before = state(&app).await;
        Self {
            stand_in,
            app,
            key_id,
            before,
        }
    }

    /// Sends a request with a JSON body (or none) and checks it is refused with one of
    /// `allowed` and the JSON error shape; returns the error body.
    async fn refused(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        allowed: &[u16],
    ) -> Value {
        let what = format!("{method} {path} {}", body.clone().unwrap_or(Value::Null));
        let (status, answer) = self.app.request(method, path, body).await;
        assert_error(&what, status, &answer, allowed);
        answer
    }

    async fn refused_post(&self, path: &str, body: Value, allowed: &[u16]) -> Value {
        self.refused(reqwest::Method::POST, path, Some(body), allowed)
            .await
    }

    async fn refused_put(&self, path: &str, body: Value, allowed: &[u16]) -> Value {
        self.refused(reqwest::Method::PUT, path, Some(body), allowed)
            .await
    }

    /// Sends `body` verbatim with `content_type` (none when `None`).
    async fn refused_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: Option<&str>,
        body: &str,
        allowed: &[u16],
    ) -> Value {
        let what = format!("{method} {path} {content_type:?} {body:?}");
        let mut rb = self
            .app
            .http
            .request(method, format!("{}{}", self.app.base, path))
            .body(body.to_owned());
        if let Some(ct) = content_type {
            rb = rb.header("content-type", ct);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let answer = serde_json::from_str(&text).unwrap_or(Value::String(text));
        assert_error(&what, status, &answer, allowed);
        answer
    }

    /// The lists read as before and nothing reached the provider.
    async fn assert_nothing_changed(&self) {
        assert_eq!(
            state(&self.app).await,
            self.before,
            "a refused request changed something"
        );
        assert!(
            self.stand_in.arrivals().is_empty(),
            "a refused request reached the provider"
        );
    }

    async fn stop(self) {
        self.app.stop().await;
    }
}

/// What the lists say: every workspace with its keys, every key, and each workspace's workers.
async fn state(app: &TestApp) -> Value {
    let (status, workspaces) = app.get("/workspaces").await;
    assert_eq!(status, 200, "{workspaces}");
    let (status, keys) = app.get("/provider-keys").await;
    assert_eq!(status, 200, "{keys}");
    let mut workers = serde_json::Map::new();
    for ws in workspaces["workspaces"].as_array().unwrap() {
        let id = ws["workspace_id"].as_str().unwrap();
        let (status, w) = app.get(&format!("/workers/{id}")).await;
        assert_eq!(status, 200, "{w}");
        let ids: Vec<Value> = w["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["worker_id"].clone())
            .collect();
        workers.insert(id.to_owned(), json!({"count": w["count"], "ids": ids}));
    }
    json!({
        "workspaces": workspaces["workspaces"],
        "keys": keys["provider_keys"],
        "workers": workers,
    })
}

/// A refusal: a status in `allowed` (never a 5xx) and `{"success": false, "code", "message"}`.
fn assert_error(what: &str, status: u16, body: &Value, allowed: &[u16]) {
    assert!(status < 500, "{what} was answered {status}: {body}");
    assert!(
        allowed.contains(&status),
        "{what} was answered {status}, expected one of {allowed:?}: {body}"
    );
    assert_eq!(
        body["success"], false,
        "{what}: not the JSON error shape: {body}"
    );
    let code = body["code"].as_str().unwrap_or_default();
    assert!(!code.is_empty(), "{what}: no error code: {body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        !message.trim().is_empty(),
        "{what}: no error message: {body}"
    );
}

fn message_of(body: &Value) -> String {
    body["message"].as_str().unwrap_or_default().to_owned()
}

/// A valid provider entry of a registration (on an endpoint nobody listens to: never called).
fn provider() -> Value {
    json!({
        "name": "openai", "api_key": "sk-other-0000000000000002222",
        "rate_limit": 5, "rate_limit_period": 60,
        "config": {"model": "gpt-4o", "endpoint": "http://127.0.0.1:9/v1"}
    })
}

/// `provider()` with `field` set to `value` (a `/`-separated path for nested fields).
fn provider_with(field: &str, value: Value) -> Value {
    let mut p = provider();
    set(&mut p, field, value);
    p
}

/// `provider()` without `field`.
fn provider_without(field: &str) -> Value {
    let mut p = provider();
    remove(&mut p, field);
    p
}

fn set(v: &mut Value, field: &str, value: Value) {
    let (parent, last) = split(v, field);
    parent[last] = value;
}

fn remove(v: &mut Value, field: &str) {
    let (parent, last) = split(v, field);
    parent.as_object_mut().unwrap().remove(last);
}

fn split<'a, 'f>(v: &'a mut Value, field: &'f str) -> (&'a mut Value, &'f str) {
    let mut parts: Vec<&str> = field.split('/').collect();
    let last = parts.pop().unwrap();
    let mut parent = v;
    for p in parts {
        parent = &mut parent[p];
    }
    (parent, last)
}

fn register_body(provider: Value) -> Value {
    json!({"workspace_id": "ws-new", "providers": [provider]})
}

/// An add-key body for `ws-1`.
fn add_key_body(provider: Value) -> Value {
    let mut b = provider;
    b["workspace_id"] = json!(WS);
    b
}

fn publish_body() -> Value {
    json!({"workspace_id": WS, "prompt": "Hello", "content": "there"})
}

fn publish_with(field: &str, value: Value) -> Value {
    let mut b = publish_body();
    b[field] = value;
    b
}

#[tokio::test]
async fn malformed_json_is_a_bad_request_and_changes_nothing() {
    let f = Fixture::new().await;
    let update = format!("/provider-key/update/{}", f.key_id);
    let bodies = [
        r#"{"workspace_id": "ws-new","#,
        "not json",
        r#"{"workspace_id": "ws-new" "providers": []}"#,
        r#"{"workspace_id": 'ws-new'}"#,
        "",
    ];
    for body in bodies {
        for path in [
            "/workspace/register",
            "/provider-key/add",
            "/message/publish",
            "/workers/scale/ws-1",
        ] {
            let (status, answer) = f.app.post_raw(path, body).await;
            assert_error(
                &format!("POST {path} {body:?}"),
                status,
                &answer,
                BAD_REQUEST,
            );
        }
        f.refused_raw(
            reqwest::Method::PUT,
            &update,
            Some("application/json"),
            body,
            BAD_REQUEST,
        )
        .await;
    }
    f.assert_nothing_changed().await;
    f.stop().await;
}

#[tokio::test]
async fn a_body_not_sent_as_json_is_refused() {
    let f = Fixture::new().await;
    let body = json!({"workspace_id": "ws-new", "providers": []}).to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        f.refused_raw(
            reqwest::Method::POST,
            "/workspace/register",
            content_type,
            &body,
            &[400, 415],
        )
        .await;
    }
    f.assert_nothing_changed().await;
    f.stop().await;
}

#[tokio::test]
async fn missing_required_fields_are_bad_requests() {
    let f = Fixture::new().await;
    // Registration.
    f.refused_post("/workspace/register", json!({}), BAD_REQUEST)
        .await;
    f.refused_post(
        "/workspace/register",
        json!({"providers": [provider()]}),
        BAD_REQUEST,
    )
    .await;
    for field in ["name", "api_key", "rate_limit", "config", "config/model"] {
        f.refused_post(
            "/workspace/register",
            register_body(provider_without(field)),
            BAD_REQUEST,
        )
        .await;
        f.refused_post(
            "/provider-key/add",
            add_key_body(provider_without(field)),
            BAD_REQUEST,
        )
        .await;
    }
    f.refused_post("/provider-key/add", provider(), BAD_REQUEST)
        .await;
    // Publishing.
    for field in ["workspace_id", "prompt"] {
        let mut body = publish_body();
        remove(&mut body, field);
        f.refused_post("/message/publish", body, BAD_REQUEST).await;
    }
    // Scaling.
    f.refused_post("/workers/scale/ws-1", json!({}), BAD_REQUEST)
        .await;
    // A new config replaces the old one, so it needs its model too.
    f.refused_put(
        &format!("/provider-key/update/{}", f.key_id),
        json!({"config": {"endpoint": "http://127.0.0.1:9/v1"}}),
        BAD_REQUEST,
    )
    .await;
    f.assert_nothing_changed().await;
    f.stop().await;
}

#[tokio::test]
async fn a_missing_rate_limit_period_is_a_bad_request_like_any_missing_field() {
    let f = Fixture::new().await;
    let answer = f
        .refused_post(
            "/workspace/register",
            register_body(provider_without("rate_limit_period")),
            BAD_REQUEST,
        )
        .await;
    assert!(
        message_of(&answer).contains("rate_limit_period"),
        "{answer}"
    );
    f.refused_post(
        "/provider-key/add",
        add_key_body(provider_without("rate_limit_period")),
        BAD_REQUEST,
    )
    .await;
    f.assert_nothing_changed().await;
    f.stop().await;
}

#[tokio::test]
async fn values_of_the_wrong_type_are_bad_requests() {
    let f = Fixture::new().await;
    for (field, value) in [
        ("rate_limit", json!("ten")),
        ("rate_limit", json!(1.5)),
        ("rate_limit", json!(null)),
        ("api_key", json!(["sk-in-a-list"])),
        ("config", json!("gpt-4o")),
        ("config/temperature", json!("hot")),
        ("config/max_tokens", json!("many")),
    ] {
        f.refused_post(
            "/workspace/register",
            register_body(provider_with(field, value.clone())),
            BAD_REQUEST,
        )
        .await;
        f.refused_post(
            "/provider-key/add",
            add_key_body(provider_with(field, value)),
            BAD_REQUEST,
        )
        .await;
    }
    f.refused_post(
        "/workspace/register",
        json!({"workspace_id": "ws-new", "providers": provider()}),
        BAD_REQUEST,
    )
    .await;
    for (field, value) in [
        ("prompt", json!(["Hello"])),
        ("content", json!({"text": "x"})),
        ("sequence_index", json!("one")),
        ("message_id", json!("not-a-uuid")),
        ("message_id", json!(12345)),
        ("response_format", json!({"type": "json_object"})),
        ("workspace_id", json!(["ws-1"])),
    ] {
        f.refused_post("/message/publish", publish_with(field, value), BAD_REQUEST)
            .await;
    }
    for count in [json!("three"), json!(1.5), json!(null), json!(true)] {
        f.refused_post("/workers/scale/ws-1", json!({"count": count}), BAD_REQUEST)
            .await;
    }
    let update = format!("/provider-key/update/{}", f.key_id);
    for body in [
        json!({"rate_limit": "ten"}),
        json!({"api_key": ["sk-in-a-list"]}),
        json!({"config": "gpt-4o"}),
    ] {
        f.refused_put(&update, body, BAD_REQUEST).await;
    }
    f.assert_nothing_changed().await;
    f.stop().await;
}

#[tokio::test]
async fn a_number_or_a_boolean_where_text_is_expected_is_a_bad_request() {
    let f = Fixture::new().await;
    f.refused_post(
        "/workspace/register",
        json!({"workspace_id": 42, "providers": []}),
        BAD_REQUEST,
    )
    .await;
    for (field, value) in [
        ("api_key", json!(123456789012345_u64)),
        ("name", json!(7)),
        ("config/model", json!(4)),
    ] {
        f.refused_post(
            "/provider-key/add",
            add_key_body(provider_with(field, value)),
            BAD_REQUEST,
        )
        .await;
    }
    for (field, value) in [
        ("prompt", json!(5)),
        ("content", json!(true)),
        ("model", json!(4)),
        ("html_tag", json!(3)),
    ] {
        f.refused_post("/message/publish", publish_with(field, value), BAD_REQUEST)
            .await;
    }
    f.refused_put(
        &format!("/provider-key/update/{}", f.key_id),
        json!({"api_key": 123456789012345_u64}),
        BAD_REQUEST,
    )
    .await;
    f.assert_nothing_changed().await;
    f.stop().await;
}

#[tokio::test]
async fn a_rate_limit_below_one_is_unprocessable() {
    let f = Fixture::new().await;
    let update = format!("/provider-key/update/{}", f.key_id);
    for limit in [json!(0), json!(-1), json!(-1000), json!(1_u64 << 40)] {
        let answer = f
            .refused_post(
                "/workspace/register",
                register_body(provider_with("rate_limit", limit.clone())),
                UNPROCESSABLE,
            )
            .await;
        assert!(message_of(&answer).contains("rate_limit"), "{answer}");
        f.refused_post(
            "/provider-key/add",
            add_key_body(provider_with("rate_limit", limit.clone())),
            UNPROCESSABLE,
        )
        .await;
        f.refused_put(&update, json!({"rate_limit": limit}), UNPROCESSABLE)
            .await;
    }
    f.assert_nothing_changed().await;
    f.stop().await;
}

#[tokio::test]
async fn an_unknown_provider_name_is_unprocessable() {
    let f = Fixture::new().await;
    for name in ["gemini", "", "open ai"] {
        let answer = f
            .refused_post(
                "/workspace/register",
                register_body(provider_with("name", json!(name))),
                UNPROCESSABLE,
            )
            .await;
        assert!(message_of(&answer).contains("provider"), "{answer}");
        f.refused_post(
            "/provider-key/add",
            add_key_body(provider_with("name", json!(name))),
            UNPROCESSABLE,
        )
        .await;
        f.refused_put(
            &format!("/provider-key/update/{}", f.key_id),
            json!({"name": name}),
            UNPROCESSABLE,
        )
        .await;
    }
    f.assert_nothing_changed().await;
    f.stop().await;
}

#[tokio::test]
async fn an_empty_api_key_is_unprocessable() {
    let f = Fixture::new().await;
    for key in ["", "   "] {
        f.refused_post(
            "/workspace/register",
            register_body(provider_with("api_key", json!(key))),
            UNPROCESSABLE,
        )
        .await;
        f.refused_post(
            "/provider-key/add",
            add_key_body(provider_with("api_key", json!(key))),
            UNPROCESSABLE,
        )
        .await;
        f.refused_put(
            &format!("/provider-key/update/{}", f.key_id),
            json!({"api_key": key}),
            UNPROCESSABLE,
        )
        .await;
    }
    f.assert_nothing_changed().await;
    f.stop().await;
}

#[tokio::test]
async fn one_bad_provider_refuses_the_whole_registration() {
    let f = Fixture::new().await;
    let answer = f
        .refused_post(
            "/workspace/register",
            json!({"workspace_id": "ws-new", "providers": [
                provider(),
                provider_with("rate_limit", json!(0)),
            ]}),
            UNPROCESSABLE,
        )
        .await;
    assert!(
        message_of(&answer).contains("providers[1]"),
        "the error points at the bad entry: {answer}"
    );
    f.assert_nothing_changed().await;
    f.stop().await;
}

#[tokio::test]
async fn malformed_workspace_ids_are_refused() {
    let f = Fixture::new().await;
    let too_long = "a".repeat(129);
    for bad in ["", too_long.as_str(), "a b", "a/b", "é", "ws-1;drop"] {
        let answer = f
            .refused_post(
                "/workspace/register",
                json!({"workspace_id": bad, "providers": [provider()]}),
                UNPROCESSABLE,
            )
            .await;
        assert!(message_of(&answer).contains("workspace_id"), "{answer}");
        f.refused_post(
            "/provider-key/add",
            json!({
                "workspace_id": bad, "name": "openai", "api_key": "sk-x-000000000000000003333",
                "rate_limit": 5, "rate_limit_period": 60, "config": {"model": "gpt-4o"}
            }),
            UNPROCESSABLE,
        )
        .await;
        f.refused_post(
            "/message/publish",
            json!({"workspace_id": bad, "prompt": "hi"}),
            UNPROCESSABLE,
        )
        .await;
    }
    // In a path or a query, a bad id may not even match the route: any 4xx will do.
    for bad in [
        "",
        too_long.as_str(),
        "a%20b",
        "a/b",
        "a%2Fb",
        "%C3%A9",
        "..",
    ] {
        f.refused(
            reqwest::Method::DELETE,
            &format!("/workspace/delete/{bad}"),
            None,
            ANY_4XX,
        )
        .await;
        f.refused(
            reqwest::Method::GET,
            &format!("/workers/{bad}"),
            None,
            ANY_4XX,
        )
        .await;
        f.refused_post(
            &format!("/workers/scale/{bad}"),
            json!({"count": 2}),
            ANY_4XX,
        )
        .await;
    }
    for bad in [too_long.as_str(), "a%20b", "a%2Fb"] {
        f.refused(
            reqwest::Method::GET,
            &format!("/workspaces?workspace_id={bad}"),
            None,
            UNPROCESSABLE,
        )
        .await;
        f.refused(
            reqwest::Method::GET,
            &format!("/provider-keys?workspace_id={bad}"),
            None,
            UNPROCESSABLE,
        )
        .await;
    }
    f.assert_nothing_changed().await;
    f.stop().await;
}

#[tokio::test]
async fn registering_a_workspace_id_twice_is_a_conflict_and_leaves_the_first_untouched() {
    let f = Fixture::new().await;
    let answer = f
        .refused_post(
            "/workspace/register",
            json!({"workspace_id": WS, "providers": [provider()]}),
            &[409],
        )
        .await;
    assert!(message_of(&answer).contains(WS), "{answer}");
    f.refused_post(
        "/workspace/register",
        json!({"workspace_id": WS, "providers": []}),
        &[409],
    )
    .await;
    // Same key, same secret, same worker as before.
    f.assert_nothing_changed().await;
    let id = f
        .app
        .publish(json!({"workspace_id": WS, "prompt": "still mine"}))
        .await;
    let m = f
        .app
        .wait_final(&id, std::time::Duration::from_secs(10))
        .await;
    assert_eq!(m["status"], "success", "{m}");
    assert_eq!(m["key_id"], f.key_id.as_str());
    assert_eq!(f.stand_in.arrivals()[0].bearer.as_deref(), Some(SECRET));
    f.stop().await;
}

#[tokio::test]
async fn an_unknown_workspace_is_not_found() {
    let f = Fixture::new().await;
    let ghost = "ws-ghost";
    f.refused_post(
        "/message/publish",
        json!({"workspace_id": ghost, "prompt": "hi"}),
        NOT_FOUND,
    )
    .await;
    let answer = f
        .refused_post(
            "/provider-key/add",
            json!({
                "workspace_id": ghost, "name": "openai", "api_key": "sk-ghost-00000000000004444",
                "rate_limit": 5, "rate_limit_period": 60, "config": {"model": "gpt-4o"}
            }),
            NOT_FOUND,
        )
        .await;
    assert!(message_of(&answer).contains(ghost), "{answer}");
    f.refused_post(
        &format!("/workers/scale/{ghost}"),
        json!({"count": 2}),
        NOT_FOUND,
    )
    .await;
    f.refused(
        reqwest::Method::GET,
        &format!("/workers/{ghost}"),
        None,
        NOT_FOUND,
    )
    .await;
    f.refused(
        reqwest::Method::DELETE,
        &format!("/workspace/delete/{ghost}"),
        None,
        NOT_FOUND,
    )
    .await;
    f.assert_nothing_changed().await;
    f.stop().await;
}

#[tokio::test]
async fn an_unknown_key_id_is_not_found() {
    let f = Fixture::new().await;
    let ghost = Uuid::new_v4();
    f.refused_put(
        &format!("/provider-key/update/{ghost}"),
        json!({"rate_limit": 3}),
        NOT_FOUND,
    )
    .await;
    f.refused(
        reqwest::Method::DELETE,
        &format!("/provider-key/delete/{ghost}"),
        None,
        NOT_FOUND,
    )
    .await;
    f.assert_nothing_changed().await;
    f.stop().await;
}

#[tokio::test]
async fn malformed_key_and_message_ids_in_paths_are_bad_requests() {
    let f = Fixture::new().await;
    for bad in [
        "not-a-uuid",
        "12345",
        "ws-1",
        "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
    ] {
        f.refused_put(
            &format!("/provider-key/update/{bad}"),
            json!({"rate_limit": 3}),
            BAD_REQUEST,
        )
        .await;
        f.refused(
            reqwest::Method::DELETE,
            &format!("/provider-key/delete/{bad}"),
            None,
            BAD_REQUEST,
        )
        .await;
        f.refused(
            reqwest::Method::GET,
            &format!("/message/{bad}"),
            None,
            BAD_REQUEST,
        )
        .await;
    }
    f.assert_nothing_changed().await;
    f.stop().await;
}

#[tokio::test]
async fn an_unknown_message_id_is_not_found() {
    let f = Fixture::new().await;
    let ghost = Uuid::new_v4();
    let answer = f
        .refused(
            reqwest::Method::GET,
            &format!("/message/{ghost}"),
            None,
            NOT_FOUND,
        )
        .await;
    assert_eq!(answer["code"], "not_found");
    f.assert_nothing_changed().await;
    f.stop().await;
}

#[tokio::test]
async fn a_message_id_used_by_another_workspace_is_a_conflict() {
    let f = Fixture::new().await;
    let my_id = Uuid::new_v4().to_string();
    f.app
        .register(
            "ws-2",
            json!([{"name": "mock", "api_key": "mock-key-000000000005555", "rate_limit": 5,
                    "rate_limit_period": 60, "config": {"model": "mock-echo"}}]),
        )
        .await;
    f.app
        .publish(json!({"workspace_id": "ws-2", "prompt": "mine", "message_id": my_id}))
        .await;
    f.refused_post(
        "/message/publish",
        json!({"workspace_id": WS, "prompt": "stolen", "message_id": my_id}),
        &[409],
    )
    .await;
    let (_, m) = f.app.get(&format!("/message/{my_id}")).await;
    assert_eq!(m["workspace_id"], "ws-2");
    assert_eq!(m["prompt"], "mine");
    assert!(f.stand_in.arrivals().is_empty());
    f.stop().await;
}

#[tokio::test]
async fn scaling_outside_zero_to_the_maximum_is_refused() {
    let f = Fixture::new().await;
    for count in [json!(-1), json!(65), json!(1000), json!(1_u64 << 40)] {
        let answer = f
            .refused_post(
                "/workers/scale/ws-1",
                json!({"count": count}),
                BAD_OR_UNPROCESSABLE,
            )
            .await;
        assert!(message_of(&answer).contains("count"), "{answer}");
    }
    f.assert_nothing_changed().await;
    let (_, ws) = f.app.get("/workspaces?workspace_id=ws-1").await;
    assert_eq!(ws["workspaces"][0]["worker_count"], 1);
    f.stop().await;
}

#[tokio::test]
async fn an_empty_prompt_is_unprocessable() {
    let f = Fixture::new().await;
    for prompt in ["", "   ", "\n\t"] {
        let answer = f
            .refused_post(
                "/message/publish",
                publish_with("prompt", json!(prompt)),
                UNPROCESSABLE,
            )
            .await;
        assert!(message_of(&answer).contains("prompt"), "{answer}");
    }
    f.refused_post(
        "/message/publish",
        publish_with("model", json!("")),
        UNPROCESSABLE,
    )
    .await;
    f.assert_nothing_changed().await;
    f.stop().await;
}

#[tokio::test]
async fn an_unknown_response_format_is_unprocessable() {
    let f = Fixture::new().await;
    for format in ["xml", "yaml", "json_schema", "html"] {
        let answer = f
            .refused_post(
                "/message/publish",
                publish_with("response_format", json!(format)),
                UNPROCESSABLE,
            )
            .await;
        assert!(message_of(&answer).contains("response_format"), "{answer}");
    }
    f.assert_nothing_changed().await;
    f.stop().await;
}

#[tokio::test]
async fn a_bad_rate_limit_period_is_refused() {
    let f = Fixture::new().await;
    let update = format!("/provider-key/update/{}", f.key_id);
    for period in [
        json!("fortnight"),
        json!(""),
        json!(0),
        json!(-5),
        json!(true),
        json!(1.5),
        json!({"seconds": 60}),
        json!([60]),
    ] {
        f.refused_post(
            "/workspace/register",
            register_body(provider_with("rate_limit_period", period.clone())),
            BAD_OR_UNPROCESSABLE,
        )
        .await;
        f.refused_post(
            "/provider-key/add",
            add_key_body(provider_with("rate_limit_period", period.clone())),
            BAD_OR_UNPROCESSABLE,
        )
        .await;
        f.refused_put(
            &update,
            json!({"rate_limit_period": period}),
            BAD_OR_UNPROCESSABLE,
        )
        .await;
    }
    f.assert_nothing_changed().await;
    f.stop().await;
}

#[tokio::test]
async fn an_empty_config_model_is_unprocessable() {
    let f = Fixture::new().await;
    for model in ["", "   "] {
        let answer = f
            .refused_post(
                "/workspace/register",
                register_body(provider_with("config/model", json!(model))),
                UNPROCESSABLE,
            )
            .await;
        assert!(message_of(&answer).contains("model"), "{answer}");
        f.refused_post(
            "/provider-key/add",
            add_key_body(provider_with("config/model", json!(model))),
            UNPROCESSABLE,
        )
        .await;
        f.refused_put(
            &format!("/provider-key/update/{}", f.key_id),
            json!({"config": {"model": model}}),
            UNPROCESSABLE,
        )
        .await;
    }
    f.assert_nothing_changed().await;
    f.stop().await;
}

#[tokio::test]
async fn a_config_endpoint_that_is_not_an_http_url_is_unprocessable() {
    let f = Fixture::new().await;
    for endpoint in [
        "ftp://example.com/v1",
        "file:///etc/passwd",
        "localhost:8080/v1",
        "not a url",
        "",
    ] {
        let answer = f
            .refused_post(
                "/workspace/register",
                register_body(provider_with("config/endpoint", json!(endpoint))),
                UNPROCESSABLE,
            )
            .await;
        assert!(message_of(&answer).contains("endpoint"), "{answer}");
        f.refused_post(
            "/provider-key/add",
            add_key_body(provider_with("config/endpoint", json!(endpoint))),
            UNPROCESSABLE,
        )
        .await;
        f.refused_put(
            &format!("/provider-key/update/{}", f.key_id),
            json!({"config": {"model": "gpt-4o", "endpoint": endpoint}}),
            UNPROCESSABLE,
        )
        .await;
    }
    f.assert_nothing_changed().await;
    f.stop().await;
}

#[tokio::test]
async fn config_values_out_of_range_are_unprocessable() {
    let f = Fixture::new().await;
    for (field, value) in [
        ("config/temperature", json!(2.5)),
        ("config/temperature", json!(-0.1)),
        ("config/max_tokens", json!(0)),
        ("config/max_tokens", json!(-3)),
        ("config/timeout_s", json!(0)),
        ("config/timeout_s", json!(-1)),
        ("config/timeout_s", json!(100_000)),
    ] {
        f.refused_post(
            "/workspace/register",
            register_body(provider_with(field, value.clone())),
            UNPROCESSABLE,
        )
        .await;
        f.refused_post(
            "/provider-key/add",
            add_key_body(provider_with(field, value)),
            UNPROCESSABLE,
        )
        .await;
    }
    f.assert_nothing_changed().await;
    f.stop().await;
}

#[tokio::test]
async fn an_unknown_path_is_a_json_404() {
    let f = Fixture::new().await;
    for path in [
        "/nope",
        "/api/v1/workspaces",
        "/workspace/register/extra",
        "/message",
        "/provider-key",
    ] {
        for method in [reqwest::Method::GET, reqwest::Method::POST] {
            let answer = f.refused(method, path, None, NOT_FOUND).await;
            assert_eq!(answer["code"], "not_found");
        }
    }
    f.assert_nothing_changed().await;
    f.stop().await;
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405() {
    let f = Fixture::new().await;
    let key = &f.key_id;
    for (method, path) in [
        (reqwest::Method::GET, "/workspace/register".to_owned()),
        (reqwest::Method::PUT, "/message/publish".to_owned()),
        (reqwest::Method::DELETE, "/workspaces".to_owned()),
        (reqwest::Method::POST, "/provider-keys".to_owned()),
        (reqwest::Method::GET, "/provider-key/add".to_owned()),
        (reqwest::Method::POST, "/workspace/delete/ws-1".to_owned()),
        (reqwest::Method::GET, format!("/provider-key/delete/{key}")),
        (reqwest::Method::POST, format!("/provider-key/update/{key}")),
        (reqwest::Method::DELETE, "/workers/ws-1".to_owned()),
        (reqwest::Method::GET, "/workers/scale/ws-1".to_owned()),
        (reqwest::Method::DELETE, "/health".to_owned()),
    ] {
        let answer = f.refused(method, &path, Some(json!({})), &[405]).await;
        assert_eq!(answer["code"], "method_not_allowed");
    }
    f.assert_nothing_changed().await;
    f.stop().await;
}
