mod common;

// The original service's flow, through HTTP, against a stand-in OpenAI server: register a
// workspace with provider keys, publish messages, read results, manage keys and workers.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use common::*;
use serde_json::{Value, json};
use uuid::Uuid;

/// Upper bound on waiting for a message to finish (a hang guard, not a timing assertion).
const WAIT: Duration = Duration::from_secs(10);

/// Sends requests with the app's client and keeps the raw text of every response body, so a
/// test can prove that a secret appears in none of them.
struct Audited<'a> {
    app: &'a TestApp,
    bodies: Mutex<Vec<(String, String)>>,
}

impl<'a> Audited<'a> {
    fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            bodies: Mutex::new(Vec::new()),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = self
            .app
            .http
            .request(method.clone(), format!("{}{}", self.app.base, path));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        self.bodies
            .lock()
            .unwrap()
            .push((format!("{method} {path}"), text.clone()));
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }
    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    /// Publishes; expects 201 and returns the message id.
    async fn publish(&self, body: Value) -> String {
        let (status, b) = self.post("/message/publish", body).await;
        assert_eq!(status, 201, "publish failed: {b}");
        b["message_id"].as_str().unwrap().to_owned()
    }

    /// Polls `GET /message/{id}` (every poll audited) until `success` or `failed`.
    async fn wait_final(&self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (status, m) = self.get(&format!("/message/{id}")).await;
            assert_eq!(status, 200, "{m}");
            if m["status"] == "success" || m["status"] == "failed" {
                return m;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "message {id} not final: {m}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asserts that no response body seen so far contains `secret`.
    fn assert_never_shown(&self, secret: &str) {
        let bodies = self.bodies.lock().unwrap();
        assert!(!bodies.is_empty(), "no response was audited");
        for (request, body) in bodies.iter() {
            assert!(
                !body.contains(secret),
                "the answer to {request} shows the secret {secret}: {body}"
            );
        }
    }
}

/// `****` and the last 4 characters of `secret`.
fn masked(secret: &str) -> String {
    format!("****{}", &secret[secret.len() - 4..])
}

fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_owned()
}

fn time_of(v: &Value) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}")))
        .unwrap_or_else(|e| panic!("not an RFC 3339 timestamp: {v}: {e}"))
}

/// The one user message of a request body the stand-in received.
fn user_message(body: &Value) -> String {
    let messages = body["messages"].as_array().expect("messages");
    let users: Vec<&Value> = messages.iter().filter(|m| m["role"] == "user").collect();
    assert_eq!(users.len(), 1, "exactly one user message: {body}");
    str_of(&users[0]["content"])
}

/// `key_id` -> masked `api_key` of a list of keys (in any order).
fn masked_by_id(list: &Value) -> BTreeMap<String, String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|k| (str_of(&k["key_id"]), str_of(&k["api_key"])))
        .collect()
}

fn key_ids_of(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|k| str_of(&k["key_id"]))
        .collect()
}

#[tokio::test]
async fn registration_lists_the_workspace_with_masked_keys_and_never_shows_a_secret() {
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    let api = Audited::new(&app);
    let secret_a = "sk-live-AAAAregistrationSecret0001wxyz";
    let secret_b = "sk-live-BBBBregistrationSecret0002abcd";
    let secret_m = "mock-secret-MMMMregistration0003qrst";

    let (status, reg) = api
        .post(
            "/workspace/register",
            json!({"workspace_id": "ws-flow", "providers": [
                openai_key(&s, secret_a, 10, json!(60), "gpt-4o"),
                openai_key(&s, secret_b, 5, json!("minute"), "gpt-4o-mini"),
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{reg}");
    assert_eq!(reg["success"], true, "{reg}");
    let ws = &reg["workspace"];
    assert_eq!(ws["workspace_id"], "ws-flow");
    assert_eq!(ws["worker_count"], 1);
    let keys = ws["provider_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{reg}");
    for (key, (secret, model)) in keys
        .iter()
        .zip([(secret_a, "gpt-4o"), (secret_b, "gpt-4o-mini")])
    {
        Uuid::parse_str(&str_of(&key["key_id"])).expect("key_id is a UUID");
        assert_eq!(key["api_key"], masked(secret), "{key}");
        assert_eq!(key["name"], "openai");
        assert_eq!(key["workspace_id"], "ws-flow");
        assert_eq!(key["config"]["model"], model);
        assert_eq!(key["rate_limit_period"], 60);
    }
    let registered = masked_by_id(&ws["provider_keys"]);
    let key_a = str_of(&keys[0]["key_id"]);

    let (status, other) = api
        .post(
            "/workspace/register",
            json!({"workspace_id": "ws-other", "providers": [{
                "name": "mock", "api_key": secret_m, "rate_limit": 3,
                "rate_limit_period": "second", "config": {"model": "mock-echo"}
            }]}),
        )
        .await;
    assert_eq!(status, 201, "{other}");

    // Every workspace is listed with its keys.
    let (status, all) = api.get("/workspaces").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["success"], true);
    let listed: Vec<String> = all["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| str_of(&w["workspace_id"]))
        .collect();
    assert_eq!(listed, ["ws-flow", "ws-other"]);

    // `?workspace_id=` keeps only that one.
    let (status, one) = api.get("/workspaces?workspace_id=ws-flow").await;
    assert_eq!(status, 200, "{one}");
    let one = one["workspaces"].as_array().unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["workspace_id"], "ws-flow");
    assert_eq!(masked_by_id(&one[0]["provider_keys"]), registered);

    // An unknown id filters down to nothing.
    let (status, none) = api.get("/workspaces?workspace_id=ws-nobody").await;
    assert_eq!(status, 200, "{none}");
    assert_eq!(none["success"], true);
    assert_eq!(none["workspaces"], json!([]));

    // Keys of one workspace, masked.
    let (status, ks) = api.get("/provider-keys?workspace_id=ws-flow").await;
    assert_eq!(status, 200, "{ks}");
    assert_eq!(ks["success"], true);
    assert_eq!(masked_by_id(&ks["provider_keys"]), registered);

    let (status, every_key) = api.get("/provider-keys").await;
    assert_eq!(status, 200, "{every_key}");
    assert_eq!(every_key["provider_keys"].as_array().unwrap().len(), 3);

    // The full secret goes to the provider, and only there.
    let id = api
        .publish(json!({"workspace_id": "ws-flow", "prompt": "Hi", "model": "gpt-4o"}))
        .await;
    let m = api.wait_final(&id).await;
    assert_eq!(m["status"], "success", "{m}");
    assert_eq!(m["key_id"], key_a.as_str());
    let arrivals = s.arrivals();
    assert_eq!(arrivals.len(), 1);
    assert_eq!(arrivals[0].bearer.as_deref(), Some(secret_a));

    let _ = api.get("/workers/ws-flow").await;
    let _ = api.get("/health").await;
    for secret in [secret_a, secret_b, secret_m] {
        api.assert_never_shown(secret);
    }
    app.stop().await;
}

#[tokio::test]
async fn the_original_list_paths_with_their_trailing_slash_answer_like_the_plain_ones() {
    let app = TestApp::spawn().await;
    app.register(
        "ws-slash",
        json!([{
            "name": "mock", "api_key": "mock-key-slash-000000001234",
            "rate_limit": 5, "rate_limit_period": 60, "config": {"model": "mock-echo"}
        }]),
    )
    .await;
    // The original service's clients call `/workspaces/` and `/provider-keys/`.
    for (original, plain) in [
        ("/workspaces/", "/workspaces"),
        (
            "/workspaces/?workspace_id=ws-slash",
            "/workspaces?workspace_id=ws-slash",
        ),
        (
            "/workspaces/?workspace_id=ws-nobody",
            "/workspaces?workspace_id=ws-nobody",
        ),
        ("/provider-keys/", "/provider-keys"),
        (
            "/provider-keys/?workspace_id=ws-slash",
            "/provider-keys?workspace_id=ws-slash",
        ),
    ] {
        let (status, body) = app.get(original).await;
        assert_eq!(status, 200, "GET {original}: {body}");
        assert_eq!(
            body,
            app.get(plain).await.1,
            "GET {original} differs from GET {plain}"
        );
    }
    let (_, listed) = app.get("/workspaces/?workspace_id=ws-slash").await;
    assert_eq!(listed["workspaces"][0]["workspace_id"], "ws-slash");
    let (_, listed) = app.get("/provider-keys/?workspace_id=ws-slash").await;
    assert_eq!(listed["provider_keys"][0]["api_key"], "****1234");
    app.stop().await;
}

#[tokio::test]
async fn keys_registered_together_are_listed_in_the_order_they_were_given() {
    let app = TestApp::spawn().await;
    let providers: Vec<Value> = (0..6)
        .map(|i| {
            json!({
                "name": "mock", "api_key": format!("mock-key-order-00000000{i:04}"),
                "rate_limit": 5, "rate_limit_period": 60, "config": {"model": "mock-echo"}
            })
        })
        .collect();
    let reg = app.register("ws-order", json!(providers)).await;
    let given: Vec<String> = (0..6).map(|i| format!("****{i:04}")).collect();
    let answered: Vec<String> = reg["workspace"]["provider_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| str_of(&k["api_key"]))
        .collect();
    assert_eq!(answered, given);
    for path in [
        "/provider-keys?workspace_id=ws-order",
        "/workspaces?workspace_id=ws-order",
    ] {
        let (_, body) = app.get(path).await;
        let list = if path.starts_with("/provider-keys") {
            &body["provider_keys"]
        } else {
            &body["workspaces"][0]["provider_keys"]
        };
        let listed: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|k| str_of(&k["api_key"]))
            .collect();
        assert_eq!(
            listed, given,
            "GET {path} lists keys out of registration order"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_published_message_succeeds_and_the_provider_gets_the_system_prompt_then_one_user_message()
 {
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    let reg = app
        .register(
            "ws-publish",
            json!([openai_key(
                &s,
                "sk-publish-0000000000001234",
                10,
                json!(1),
                "gpt-4o-mini"
            )]),
        )
        .await;
    let key_id = str_of(&reg["workspace"]["provider_keys"][0]["key_id"]);

    let (status, published) = app
        .post(
            "/message/publish",
            json!({
                "workspace_id": "ws-publish",
                "prompt": "Translate to French",
                "content": "Good morning",
                "system_prompt": "You are a translator.",
                "sequence_index": 7,
                "html_tag": "blockquote-xyz",
            }),
        )
        .await;
    assert_eq!(status, 201, "{published}");
    assert_eq!(published["success"], true);
    assert_eq!(published["status"], "pending");
    assert_eq!(published["workspace_id"], "ws-publish");
    let id = str_of(&published["message_id"]);
    Uuid::parse_str(&id).expect("message_id is a UUID");

    let m = app.wait_final(&id, WAIT).await;
    assert_eq!(m["status"], "success", "{m}");
    assert_eq!(m["success"], true);
    assert_eq!(m["message_id"], id.as_str());
    assert_eq!(
        m["result"]["text"],
        "echo: Translate to French\n\nGood morning"
    );
    assert_eq!(m["result"]["model"], "gpt-4o-mini");
    assert_eq!(
        m["result"]["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
    );
    assert_eq!(m["attempts"], 1);
    assert_eq!(m["key_id"], key_id.as_str());
    assert_eq!(m["error"], Value::Null);
    // The caller's metadata comes back...
    assert_eq!(m["html_tag"], "blockquote-xyz");
    assert_eq!(m["sequence_index"], 7);
    assert_eq!(m["prompt"], "Translate to French");
    assert_eq!(m["content"], "Good morning");
    assert_eq!(m["system_prompt"], "You are a translator.");
    assert_eq!(m["response_format"], "text");
    let created = time_of(&m["created_at"]);
    let started = time_of(&m["started_at"]);
    let completed = time_of(&m["completed_at"]);
    assert!(
        created <= started && started <= completed,
        "timestamps out of order: {m}"
    );

    // ...but the provider saw only the system message, then one user message, with the
    // key's model.
    let arrivals = s.arrivals();
    assert_eq!(arrivals.len(), 1);
    let body = &arrivals[0].body;
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "You are a translator."},
            {"role": "user", "content": "Translate to French\n\nGood morning"},
        ])
    );
    assert!(body.get("html_tag").is_none(), "{body}");
    assert!(body.get("sequence_index").is_none(), "{body}");
    assert!(
        !body.to_string().contains("blockquote-xyz"),
        "html_tag leaked to the provider: {body}"
    );
    assert!(body.get("response_format").is_none(), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn without_content_the_user_message_is_the_prompt_alone_and_no_system_message_is_sent() {
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    app.register(
        "ws-bare",
        json!([openai_key(
            &s,
            "sk-bare-00000000000000005678",
            10,
            json!(1),
            "gpt-4o"
        )]),
    )
    .await;
    let id = app
        .publish(json!({"workspace_id": "ws-bare", "prompt": "What is 2+2?"}))
        .await;
    let m = app.wait_final(&id, WAIT).await;
    assert_eq!(m["status"], "success", "{m}");
    assert_eq!(m["result"]["text"], "echo: What is 2+2?");
    assert_eq!(m["content"], Value::Null);
    assert_eq!(m["model"], Value::Null, "no model was asked for: {m}");

    let arrivals = s.arrivals();
    assert_eq!(arrivals.len(), 1);
    assert_eq!(
        arrivals[0].body["messages"],
        json!([{"role": "user", "content": "What is 2+2?"}])
    );
    assert_eq!(arrivals[0].body["model"], "gpt-4o");
    app.stop().await;
}

#[tokio::test]
async fn the_original_readme_publish_body_with_json_format_gets_a_parsed_json_result() {
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    app.register(
        "ws-json",
        json!([openai_key(
            &s,
            "sk-json-000000000000000json",
            10,
            json!(1),
            "gpt-4"
        )]),
    )
    .await;
    // The README's example, field for field.
    let id = app
        .publish(json!({
            "prompt": "What is the capital of France?",
            "content": "I need to know about France's capital city.",
            "workspace_id": "ws-json",
            "model": "gpt-4",
            "system_prompt": "You are a helpful assistant.",
            "sequence_index": 1,
            "html_tag": "p",
            "response_format": "json"
        }))
        .await;
    let m = app.wait_final(&id, WAIT).await;
    assert_eq!(m["status"], "success", "{m}");
    assert_eq!(m["response_format"], "json");
    assert_eq!(m["model"], "gpt-4");
    assert_eq!(m["html_tag"], "p");
    assert_eq!(m["sequence_index"], 1);
    let user = "What is the capital of France?\n\nI need to know about France's capital city.";
    assert_eq!(m["result"]["json"], json!({"echo": user}));
    let raw: Value =
        serde_json::from_str(m["result"]["text"].as_str().unwrap()).expect("text is the raw JSON");
    assert_eq!(raw, json!({"echo": user}));

    let arrivals = s.arrivals();
    assert_eq!(arrivals.len(), 1);
    let body = &arrivals[0].body;
    assert_eq!(body["response_format"], json!({"type": "json_object"}));
    assert_eq!(body["model"], "gpt-4");
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(user_message(body), user);
    assert!(body.get("html_tag").is_none() && body.get("sequence_index").is_none());
    app.stop().await;
}

#[tokio::test]
async fn a_json_answer_that_does_not_parse_fails_the_message_and_keeps_the_raw_text() {
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    let secret = "sk-notjson-0000000000000bad1";
    app.register(
        "ws-badjson",
        json!([openai_key(&s, secret, 10, json!(1), "gpt-4o")]),
    )
    .await;
    s.script(secret, [Scripted::content("not json")]);
    let id = app
        .publish(
            json!({"workspace_id": "ws-badjson", "prompt": "Give JSON", "response_format": "json"}),
        )
        .await;
    let m = app.wait_final(&id, WAIT).await;
    assert_eq!(m["status"], "failed", "{m}");
    let error = str_of(&m["error"]);
    assert!(
        error.to_lowercase().contains("json"),
        "the error should say the answer is not JSON: {error}"
    );
    assert_eq!(m["result"]["text"], "not json", "{m}");
    assert_eq!(m["result"]["json"], Value::Null);
    app.stop().await;
}

#[tokio::test]
async fn publishing_the_same_message_id_twice_creates_nothing() {
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    app.register(
        "ws-idem",
        json!([openai_key(
            &s,
            "sk-idem-000000000000000idem",
            100,
            json!(1),
            "gpt-4o"
        )]),
    )
    .await;
    // No worker yet, so the repeat arrives while the first is still queued.
    let (status, _) = app
        .post("/workers/scale/ws-idem", json!({"count": 0}))
        .await;
    assert_eq!(status, 200);

    let my_id = Uuid::new_v4().to_string();
    let (status, first) = app
        .post(
            "/message/publish",
            json!({"workspace_id": "ws-idem", "prompt": "first prompt", "message_id": my_id}),
        )
        .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["message_id"], my_id.as_str());
    assert_eq!(first["status"], "pending");

    let (status, again) = app
        .post(
            "/message/publish",
            json!({"workspace_id": "ws-idem", "prompt": "a different prompt", "message_id": my_id}),
        )
        .await;
    assert_eq!(status, 200, "a repeat is not a creation: {again}");
    assert_eq!(again["success"], true);
    assert_eq!(again["message_id"], my_id.as_str());
    assert_eq!(again["status"], "pending");
    assert_eq!(again["created_at"], first["created_at"]);

    let (status, _) = app
        .post("/workers/scale/ws-idem", json!({"count": 1}))
        .await;
    assert_eq!(status, 200);
    let m = app.wait_final(&my_id, WAIT).await;
    assert_eq!(m["status"], "success", "{m}");
    assert_eq!(m["prompt"], "first prompt", "the first request is kept");

    // Once done, a repeat still returns it as it is.
    let (status, late) = app
        .post(
            "/message/publish",
            json!({"workspace_id": "ws-idem", "prompt": "first prompt", "message_id": my_id}),
        )
        .await;
    assert_eq!(status, 200, "{late}");
    assert_eq!(late["status"], "success");

    // A later message, behind anything queued on the single worker, proves no copy was queued.
    let sentinel = app
        .publish(json!({"workspace_id": "ws-idem", "prompt": "sentinel"}))
        .await;
    app.wait_final(&sentinel, WAIT).await;
    let users: Vec<String> = s.arrivals().iter().map(|a| user_message(&a.body)).collect();
    assert_eq!(users, ["first prompt", "sentinel"]);
    app.stop().await;
}

#[tokio::test]
async fn rate_limit_period_unit_names_and_integer_seconds_are_stored_as_seconds() {
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    let periods = [
        (json!("minute"), 60),
        (json!("hour"), 3600),
        (json!("day"), 86400),
        (json!("second"), 1),
        (json!(45), 45),
        (json!(1), 1),
    ];
    let providers: Vec<Value> = periods
        .iter()
        .enumerate()
        .map(|(i, (p, _))| {
            openai_key(
                &s,
                &format!("sk-period-0000000000000{i:04}"),
                5,
                p.clone(),
                "gpt-4o",
            )
        })
        .collect();
    // Each key is told apart by the last 4 characters of its secret (its index).
    let periods_of = |list: &Value| -> BTreeMap<String, i64> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    str_of(&k["api_key"]),
                    k["rate_limit_period"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let expected: BTreeMap<String, i64> = periods
        .iter()
        .enumerate()
        .map(|(i, (_, secs))| (format!("****{i:04}"), *secs))
        .collect();
    let reg = app.register("ws-periods", json!(providers)).await;
    assert_eq!(periods_of(&reg["workspace"]["provider_keys"]), expected);

    // Listing shows the same, so it is what was stored.
    let (_, ks) = app.get("/provider-keys?workspace_id=ws-periods").await;
    assert_eq!(periods_of(&ks["provider_keys"]), expected);

    // Adding and updating take the same forms.
    let mut add = openai_key(&s, "sk-period-added-0000000add", 5, json!("hour"), "gpt-4o");
    add["workspace_id"] = json!("ws-periods");
    let (status, added) = app.post("/provider-key/add", add).await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["provider_key"]["rate_limit_period"], 3600);
    let key_id = str_of(&added["key_id"]);
    for (period, secs) in [
        (json!("day"), 86400),
        (json!(120), 120),
        (json!("second"), 1),
    ] {
        let (status, updated) = app
            .put(
                &format!("/provider-key/update/{key_id}"),
                json!({"rate_limit_period": period}),
            )
            .await;
        assert_eq!(status, 200, "{updated}");
        assert_eq!(updated["provider_key"]["rate_limit_period"], secs);
    }
    app.stop().await;
}

#[tokio::test]
async fn provider_keys_are_added_updated_and_deleted_and_stay_masked() {
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    let api = Audited::new(&app);
    let secret_a = "sk-crud-AAAA-first-key-0000aaaa";
    let secret_b = "sk-crud-BBBB-added-key-0000bbbb";
    let secret_c = "sk-crud-CCCC-rotated-key-00cccc";
    let (status, reg) = api
        .post(
            "/workspace/register",
            json!({"workspace_id": "ws-keys", "providers": [
                openai_key(&s, secret_a, 10, json!(1), "gpt-4o")
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{reg}");
    let key_a = str_of(&reg["workspace"]["provider_keys"][0]["key_id"]);

    // Add.
    let (status, added) = api
        .post(
            "/provider-key/add",
            json!({
                "workspace_id": "ws-keys", "name": "openai", "api_key": secret_b,
                "rate_limit": 3, "rate_limit_period": "hour",
                "config": {"model": "gpt-4o-mini", "endpoint": s.endpoint(), "timeout_s": 10}
            }),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["success"], true);
    let key_b = str_of(&added["key_id"]);
    Uuid::parse_str(&key_b).expect("key_id is a UUID");
    let k = &added["provider_key"];
    assert_eq!(k["key_id"], key_b.as_str());
    assert_eq!(k["workspace_id"], "ws-keys");
    assert_eq!(k["api_key"], masked(secret_b));
    assert_eq!(k["rate_limit"], 3);
    assert_eq!(k["rate_limit_period"], 3600);
    assert_eq!(k["config"]["model"], "gpt-4o-mini");

    let (_, ks) = api.get("/provider-keys?workspace_id=ws-keys").await;
    assert_eq!(
        key_ids_of(&ks["provider_keys"]),
        [key_a.clone(), key_b.clone()]
    );

    // The added key takes traffic for its model.
    let id = api
        .publish(json!({"workspace_id": "ws-keys", "prompt": "to b", "model": "gpt-4o-mini"}))
        .await;
    let m = api.wait_final(&id).await;
    assert_eq!(m["status"], "success", "{m}");
    assert_eq!(m["key_id"], key_b.as_str());
    assert_eq!(
        s.arrivals().last().unwrap().bearer.as_deref(),
        Some(secret_b)
    );

    // Update the limit: the answer and the list show it, the secret stays masked.
    let (status, updated) = api
        .put(
            &format!("/provider-key/update/{key_b}"),
            json!({"rate_limit": 7, "rate_limit_period": "minute"}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["success"], true);
    assert_eq!(updated["key_id"], key_b.as_str());
    let k = &updated["provider_key"];
    assert_eq!(k["rate_limit"], 7);
    assert_eq!(k["rate_limit_period"], 60);
    assert_eq!(k["api_key"], masked(secret_b));
    assert_eq!(
        k["config"]["model"], "gpt-4o-mini",
        "absent fields stay as they were"
    );
    let (_, ks) = api.get("/provider-keys?workspace_id=ws-keys").await;
    let listed_b = ks["provider_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key_b.as_str())
        .unwrap()
        .clone();
    assert_eq!(listed_b["rate_limit"], 7);
    assert_eq!(listed_b["rate_limit_period"], 60);

    // Rotate the secret: new calls carry the new one.
    let (status, rotated) = api
        .put(
            &format!("/provider-key/update/{key_b}"),
            json!({"api_key": secret_c}),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["provider_key"]["api_key"], masked(secret_c));
    assert_eq!(rotated["provider_key"]["rate_limit"], 7);
    let id = api
        .publish(json!({"workspace_id": "ws-keys", "prompt": "to c", "model": "gpt-4o-mini"}))
        .await;
    assert_eq!(api.wait_final(&id).await["status"], "success");
    assert_eq!(
        s.arrivals().last().unwrap().bearer.as_deref(),
        Some(secret_c)
    );

    // Delete: gone from the list, and from routing.
    let (status, deleted) = api.delete(&format!("/provider-key/delete/{key_b}")).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["success"], true);
    let (_, ks) = api.get("/provider-keys?workspace_id=ws-keys").await;
    assert_eq!(
        key_ids_of(&ks["provider_keys"]),
        std::slice::from_ref(&key_a)
    );
    let (_, ws) = api.get("/workspaces?workspace_id=ws-keys").await;
    assert_eq!(
        key_ids_of(&ws["workspaces"][0]["provider_keys"]),
        std::slice::from_ref(&key_a)
    );
    let (status, _) = api.delete(&format!("/provider-key/delete/{key_b}")).await;
    assert_eq!(status, 404);
    let (status, _) = api
        .put(
            &format!("/provider-key/update/{key_b}"),
            json!({"rate_limit": 2}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, refused) = api
        .post(
            "/message/publish",
            json!({"workspace_id": "ws-keys", "prompt": "x", "model": "gpt-4o-mini"}),
        )
        .await;
    assert_eq!(status, 422, "no key serves the model any more: {refused}");

    for secret in [secret_a, secret_b, secret_c] {
        api.assert_never_shown(secret);
    }
    app.stop().await;
}

#[tokio::test]
async fn deleting_a_workspace_removes_its_keys_workers_and_messages() {
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    app.register(
        "ws-doomed",
        json!([openai_key(
            &s,
            "sk-doomed-000000000000doom",
            10,
            json!(1),
            "gpt-4o"
        )]),
    )
    .await;
    app.register(
        "ws-kept",
        json!([openai_key(
            &s,
            "sk-kept-00000000000000kept",
            10,
            json!(1),
            "gpt-4o"
        )]),
    )
    .await;
    let doomed_msg = app
        .publish(json!({"workspace_id": "ws-doomed", "prompt": "soon gone"}))
        .await;
    assert_eq!(app.wait_final(&doomed_msg, WAIT).await["status"], "success");

    let (status, deleted) = app.delete("/workspace/delete/ws-doomed").await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["success"], true);

    let (status, _) = app.get("/workers/ws-doomed").await;
    assert_eq!(status, 404, "its workers are gone");
    let (status, _) = app.get(&format!("/message/{doomed_msg}")).await;
    assert_eq!(status, 404, "its messages are gone");
    let (_, ks) = app.get("/provider-keys?workspace_id=ws-doomed").await;
    assert_eq!(ks["provider_keys"], json!([]), "its keys are gone");
    let (_, all_keys) = app.get("/provider-keys").await;
    assert!(
        all_keys["provider_keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["workspace_id"] == "ws-kept"),
        "{all_keys}"
    );
    let (_, all) = app.get("/workspaces").await;
    let listed: Vec<String> = all["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| str_of(&w["workspace_id"]))
        .collect();
    assert_eq!(listed, ["ws-kept"]);
    let (status, _) = app
        .post(
            "/message/publish",
            json!({"workspace_id": "ws-doomed", "prompt": "x"}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .post("/workers/scale/ws-doomed", json!({"count": 2}))
        .await;
    assert_eq!(status, 404);
    let (status, _) = app.delete("/workspace/delete/ws-doomed").await;
    assert_eq!(status, 404);

    // The other workspace still works.
    let kept = app
        .publish(json!({"workspace_id": "ws-kept", "prompt": "still here"}))
        .await;
    assert_eq!(app.wait_final(&kept, WAIT).await["status"], "success");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_workspace_has_one_worker_and_scaling_sets_the_absolute_count() {
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    app.register(
        "ws-scale",
        json!([openai_key(
            &s,
            "sk-scale-0000000000000scale",
            10,
            json!(1),
            "gpt-4o"
        )]),
    )
    .await;

    let (status, w) = app.get("/workers/ws-scale").await;
    assert_eq!(status, 200, "{w}");
    assert_eq!(w["success"], true);
    assert_eq!(w["workspace_id"], "ws-scale");
    assert_eq!(w["count"], 1);
    assert_eq!(w["workers"].as_array().unwrap().len(), 1);

    let (status, scaled) = app
        .post("/workers/scale/ws-scale", json!({"count": 3}))
        .await;
    assert_eq!(status, 200, "{scaled}");
    assert_eq!(scaled["success"], true);
    assert_eq!(scaled["count"], 3);
    let workers = scaled["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 3);
    for worker in workers {
        assert!(worker["worker_id"].is_u64(), "{worker}");
        assert!(
            ["idle", "busy"].contains(&worker["state"].as_str().unwrap()),
            "{worker}"
        );
        assert_eq!(worker["messages_processed"], 0);
        assert_eq!(worker["current_message_id"], Value::Null);
        time_of(&worker["started_at"]);
    }
    let ids: Vec<u64> = workers
        .iter()
        .map(|w| w["worker_id"].as_u64().unwrap())
        .collect();
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "worker ids are distinct: {scaled}");

    // Listing matches the answer to the scale.
    let (_, listed) = app.get("/workers/ws-scale").await;
    assert_eq!(listed["count"], 3);
    let listed_ids: Vec<u64> = listed["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["worker_id"].as_u64().unwrap())
        .collect();
    assert_eq!(listed_ids, ids);
    let (_, ws) = app.get("/workspaces?workspace_id=ws-scale").await;
    assert_eq!(ws["workspaces"][0]["worker_count"], 3);

    // `count` is absolute: asking for 3 again changes nothing, 2 means 2.
    let (_, same) = app
        .post("/workers/scale/ws-scale", json!({"count": 3}))
        .await;
    assert_eq!(same["count"], 3);
    assert_eq!(same["workers"].as_array().unwrap().len(), 3);
    let (_, fewer) = app
        .post("/workers/scale/ws-scale", json!({"count": 2}))
        .await;
    assert_eq!(fewer["count"], 2);
    let (_, ws) = app.get("/workspaces?workspace_id=ws-scale").await;
    assert_eq!(ws["workspaces"][0]["worker_count"], 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_zero_workers_messages_stay_pending_until_a_worker_is_back() {
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    app.register(
        "ws-zero",
        json!([openai_key(
            &s,
            "sk-zero-00000000000000zero",
            100,
            json!(1),
            "gpt-4o"
        )]),
    )
    .await;
    let (status, scaled) = app
        .post("/workers/scale/ws-zero", json!({"count": 0}))
        .await;
    assert_eq!(status, 200, "{scaled}");
    assert_eq!(scaled["count"], 0);
    let (_, listed) = app.get("/workers/ws-zero").await;
    assert_eq!(listed["count"], 0);
    assert!(
        listed["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["state"] == "stopping"),
        "only workers finishing up may remain: {listed}"
    );

    let ids = [
        app.publish(json!({"workspace_id": "ws-zero", "prompt": "one"}))
            .await,
        app.publish(json!({"workspace_id": "ws-zero", "prompt": "two"}))
            .await,
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in &ids {
        let (_, m) = app.get(&format!("/message/{id}")).await;
        assert_eq!(m["status"], "pending", "no worker, no processing: {m}");
    }
    assert!(s.arrivals().is_empty(), "nothing reached the provider");

    let (status, _) = app
        .post("/workers/scale/ws-zero", json!({"count": 1}))
        .await;
    assert_eq!(status, 200);
    for id in &ids {
        assert_eq!(app.wait_final(id, WAIT).await["status"], "success");
    }
    assert_eq!(s.arrivals().len(), 2);
    let (_, listed) = app.get("/workers/ws-zero").await;
    assert_eq!(listed["count"], 1);
    let active: Vec<&Value> = listed["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] != "stopping")
        .collect();
    assert_eq!(active.len(), 1, "{listed}");
    assert_eq!(active[0]["messages_processed"], 2, "{listed}");
    app.stop().await;
}

#[tokio::test]
async fn publishing_for_a_model_no_key_serves_is_refused_naming_the_model() {
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    app.register(
        "ws-models",
        json!([openai_key(
            &s,
            "sk-model-000000000000model",
            10,
            json!(1),
            "gpt-4o"
        )]),
    )
    .await;
    let (status, body) = app
        .post(
            "/message/publish",
            json!({"workspace_id": "ws-models", "prompt": "hi", "model": "claude-3-opus"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["success"], false);
    assert!(
        body["message"].as_str().unwrap().contains("claude-3-opus"),
        "the error names the model: {body}"
    );
    assert!(s.arrivals().is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_naming_a_model_are_sent_only_with_the_key_serving_it() {
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    let secret_big = "sk-route-BIG-0000000000000big";
    let secret_mini = "sk-route-MINI-00000000000mini";
    let reg = app
        .register(
            "ws-route",
            json!([
                openai_key(&s, secret_big, 100, json!(1), "gpt-4o"),
                openai_key(&s, secret_mini, 100, json!(1), "gpt-4o-mini"),
            ]),
        )
        .await;
    let key_big = str_of(&reg["workspace"]["provider_keys"][0]["key_id"]);
    let key_mini = str_of(&reg["workspace"]["provider_keys"][1]["key_id"]);
    let (status, _) = app
        .post("/workers/scale/ws-route", json!({"count": 3}))
        .await;
    assert_eq!(status, 200);

    let mut published = Vec::new();
    for i in 0..4 {
        for model in ["gpt-4o", "gpt-4o-mini"] {
            let id = app
                .publish(json!({"workspace_id": "ws-route", "prompt": format!("{model} #{i}"), "model": model}))
                .await;
            published.push((id, model));
        }
    }
    for (id, model) in &published {
        let m = app.wait_final(id, WAIT).await;
        assert_eq!(m["status"], "success", "{m}");
        assert_eq!(m["result"]["model"], *model);
        let expected_key = if *model == "gpt-4o" {
            &key_big
        } else {
            &key_mini
        };
        assert_eq!(m["key_id"], expected_key.as_str(), "{m}");
    }
    let arrivals = s.arrivals();
    assert_eq!(arrivals.len(), 8);
    for a in &arrivals {
        let expected = if a.body["model"] == "gpt-4o" {
            secret_big
        } else {
            secret_mini
        };
        assert_eq!(a.bearer.as_deref(), Some(expected), "{}", a.body);
    }
    assert_eq!(s.arrivals_for(secret_big).len(), 4);
    assert_eq!(s.arrivals_for(secret_mini).len(), 4);
    app.stop().await;
}

#[tokio::test]
async fn health_reports_the_database_and_the_queue() {
    let app = TestApp::spawn().await;
    let (database, queue) = if production_backends() {
        ("postgres", "rabbitmq")
    } else {
        ("sqlite", "memory")
    };
    let (status, h) = app.get("/health").await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["success"], true);
    assert_eq!(h["status"], "ok");
    assert_eq!(h["database"]["backend"], database);
    assert_eq!(h["database"]["ok"], true);
    assert_eq!(h["queue"]["backend"], queue);
    assert_eq!(h["queue"]["ok"], true);
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_the_original_paths() {
    let app = TestApp::spawn().await;
    let (status, spec) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(spec.is_object(), "the spec is JSON: {spec}");
    let paths = spec["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/workspaces", "get"),
        ("/workspace/register", "post"),
        ("/workspace/delete/{id}", "delete"),
        ("/provider-keys", "get"),
        ("/provider-key/add", "post"),
        ("/provider-key/delete/{key_id}", "delete"),
        ("/provider-key/update/{key_id}", "put"),
        ("/workers/scale/{workspace_id}", "post"),
        ("/workers/{workspace_id}", "get"),
        ("/message/publish", "post"),
        ("/message/{message_id}", "get"),
        ("/health", "get"),
    ] {
        // The list paths may be documented with or without their trailing slash.
        let documented = [path.to_owned(), format!("{path}/")]
            .iter()
            .any(|p| paths.get(p).and_then(|p| p.get(method)).is_some());
        assert!(documented, "{method} {path} is missing from the spec");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_swagger_ui_is_served_at_docs() {
    let app = TestApp::spawn().await;
    let resp = app
        .http
        .get(format!("{}/docs", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = resp.text().await.unwrap().to_lowercase();
    assert!(html.contains("<html") && html.contains("swagger"), "{html}");
    app.stop().await;
}

#[tokio::test]
async fn the_mock_provider_echoes_end_to_end_without_a_network() {
    let app = TestApp::spawn().await;
    let reg = app
        .register(
            "ws-mock",
            json!([{
                "name": "mock", "api_key": "mock-key-0000000000001234",
                "rate_limit": 100, "rate_limit_period": "second",
                "config": {"model": "mock-echo"}
            }]),
        )
        .await;
    assert_eq!(reg["workspace"]["provider_keys"][0]["name"], "mock");
    assert_eq!(reg["workspace"]["provider_keys"][0]["api_key"], "****1234");

    let id = app
        .publish(json!({"workspace_id": "ws-mock", "prompt": "Say hi", "content": "to Bob"}))
        .await;
    let m = app.wait_final(&id, WAIT).await;
    assert_eq!(m["status"], "success", "{m}");
    assert_eq!(m["result"]["text"], "echo: Say hi\n\nto Bob");
    assert_eq!(m["result"]["model"], "mock-echo");
    assert!(m["result"]["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(m["attempts"], 1);

    let id = app
        .publish(json!({"workspace_id": "ws-mock", "prompt": "Say hi", "response_format": "json"}))
        .await;
    let m = app.wait_final(&id, WAIT).await;
    assert_eq!(m["status"], "success", "{m}");
    assert_eq!(m["result"]["json"], json!({"echo": "Say hi"}));
    app.stop().await;
}

#[tokio::test]
async fn the_original_readme_registration_body_is_accepted() {
    let app = TestApp::spawn().await;
    let workspace_id = Uuid::new_v4().to_string();
    let (status, reg) = app
        .post(
            "/workspace/register",
            json!({
              "workspace_id": workspace_id,
              "providers": [
                {
                  "name": "openai",
                  "api_key": "sk-readme-000000000000000readme",
                  "rate_limit": 100,
                  "rate_limit_period": 60,
                  "config": { "model": "gpt-4", "api_version": "2023-05-15" }
                }
              ]
            }),
        )
        .await;
    assert_eq!(status, 201, "{reg}");
    let key = &reg["workspace"]["provider_keys"][0];
    assert_eq!(key["rate_limit"], 100);
    assert_eq!(key["rate_limit_period"], 60);
    assert_eq!(key["config"]["model"], "gpt-4");
    assert_eq!(key["config"]["api_version"], "2023-05-15");
    assert_eq!(key["api_key"], "****adme");
    app.stop().await;
}
