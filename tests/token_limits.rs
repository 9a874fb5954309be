mod common;

// Token limits, end to end: the real server, a stand-in OpenAI server that logs every arrival
// and reports a usage computed from each request, and assertions computed from that log.
//
// The engine reserves, per request, its prompt estimate (the UTF-8 length of the text sent / 4,
// rounded up) plus the key's `config.max_tokens`; after the call the provider's `total_tokens`
// replaces the reservation. Every prompt here is plain ASCII with no system prompt or content,
// so a prompt of `b` bytes is estimated at `ceil(b / 4)` tokens.
//
// Key names end in 4 distinct characters so a key can be found by its masked form (`****xxxx`).

use common::*;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

const SECOND: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A key at the stand-in serving `gpt-4`: `rate_limit` requests and `token_limit` tokens per
/// `period`, reserving `max_tokens` completion tokens per request.
fn key(
    s: &StandIn,
    api_key: &str,
    rate_limit: u32,
    period: Value,
    token_limit: u64,
    max_tokens: u64,
) -> Value {
    let mut k = openai_key(s, api_key, rate_limit, period, "gpt-4");
    k["token_limit"] = json!(token_limit);
    k["config"]["max_tokens"] = json!(max_tokens);
    k
}

/// The user message of a request the stand-in received.
fn user_text(body: &Value) -> &str {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
}

/// `POST /workers/scale/{ws}`.
async fn scale(app: &TestApp, ws: &str, count: u32) {
    let (status, body) = app
        .post(&format!("/workers/scale/{ws}"), json!({"count": count}))
        .await;
    assert_eq!(status, 200, "scale failed: {body}");
}

/// The key listed by `GET /provider-keys` for workspace `ws` (it has exactly one).
async fn only_key(app: &TestApp, ws: &str) -> Value {
    let (status, body) = app.get(&format!("/provider-keys?workspace_id={ws}")).await;
    assert_eq!(status, 200, "{body}");
    let keys = body["provider_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{body}");
    keys[0].clone()
}

async fn publish(app: &TestApp, ws: &str, prompt: &str) -> String {
    app.publish(json!({"workspace_id": ws, "prompt": prompt}))
        .await
}

/// Waits until the stand-in has seen at least `n` requests; returns them in arrival order.
async fn wait_arrivals(s: &StandIn, n: usize, timeout: Duration) -> Vec<Arrival> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut all = s.arrivals();
        if all.len() >= n {
            all.sort_by_key(|a| a.at);
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "the stand-in saw {} requests, expected {n}",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The most tokens in any window of `period` (half-open), from `(arrival, tokens)` sorted by
/// arrival. The stand-in's own log is the judge of "never over the token limit".
fn max_tokens_in_window(sorted: &[(Instant, u64)], period: Duration) -> u64 {
    let mut best = 0;
    let mut sum = 0;
    let mut lo = 0;
    for hi in 0..sorted.len() {
        sum += sorted[hi].1;
        while sorted[hi].0.duration_since(sorted[lo].0) >= period {
            sum -= sorted[lo].1;
            lo += 1;
        }
        best = best.max(sum);
    }
    best
}

// ---------------------------------------------------------------------------------------------
// The token window
// ---------------------------------------------------------------------------------------------

/// Each prompt is 40 bytes (10 estimated tokens) and says how many completion tokens the
/// stand-in reports for it: `n=NN xxx...`.
fn sized_prompt(completion: u64) -> String {
    let p = format!("n={completion:02} {}", "x".repeat(35));
    assert_eq!(p.len(), 40);
    p
}

/// The stand-in's usage for a `sized_prompt`: 10 prompt tokens and `NN` completion tokens.
fn sized_usage(body: &Value) -> Option<(u64, u64)> {
    let n = user_text(body).get(2..4)?.parse().ok()?;
    Some((10, n))
}

#[tokio::test]
async fn the_token_window_binds_and_no_sliding_window_exceeds_the_token_limit() {
    let s = StandIn::start().await;
    s.set_usage(sized_usage);
    let app = TestApp::spawn().await;
    // 1000 requests per second never bind; 300 tokens per second do. Each request reserves
    // 10 + 60 = 70 tokens and reports 15 to 70.
    let (token_limit, reserved) = (300u64, 70u64);
    app.register(
        "tok",
        json!([key(
            &s,
            "sk-tok-window-0001",
            1000,
            json!("second"),
            token_limit,
            60
        )]),
    )
    .await;
    scale(&app, "tok", 8).await;
    let mut ids = Vec::new();
    for i in 0..30u64 {
        ids.push(publish(&app, "tok", &sized_prompt(5 + (i * 37) % 56)).await);
    }
    for id in &ids {
        let m = app.wait_final(id, Duration::from_secs(60)).await;
        assert_eq!(m["status"], "success", "{m}");
    }

    let arrivals = wait_arrivals(&s, ids.len(), Duration::from_secs(5)).await;
    assert_eq!(arrivals.len(), ids.len());
    let used: Vec<(Instant, u64)> = arrivals
        .iter()
        .map(|a| {
            let (prompt, completion) = sized_usage(&a.body).unwrap();
            assert!(prompt + completion <= reserved, "usage within the estimate");
            (a.at, prompt + completion)
        })
        .collect();
    let total: u64 = used.iter().map(|(_, t)| t).sum();
    assert!(
        total > 3 * token_limit,
        "the run must span several windows ({total} tokens)"
    );
    let max = max_tokens_in_window(&used, SECOND);
    assert!(
        max <= token_limit,
        "{max} tokens reached the stand-in within one second (limit {token_limit})"
    );
    // Reservations alone fit 300 / 70 = 4 requests in a window; more went, because each call's
    // unused reservation was given back when it answered.
    let times: Vec<Instant> = used.iter().map(|(at, _)| *at).collect();
    let most = max_in_window(&times, SECOND);
    assert!(
        most as u64 > token_limit / reserved,
        "at most {most} requests in a window: reservations were not given back"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_request_reserves_its_prompt_estimate_plus_max_tokens() {
    let s = StandIn::start().await;
    // No reported usage: each reservation stands for its whole window.
    s.set_usage(|_| None);
    let app = TestApp::spawn().await;
    // A 5-byte prompt is 2 tokens (rounded up), plus max_tokens 69: 71 reserved. 142 tokens
    // per 2 s fit exactly two of them per window (with 72 only one would fit, with 70 not
    // three).
    let period = Duration::from_secs(2);
    app.register(
        "exact",
        json!([key(&s, "sk-tok-exact-0007", 100, json!(2), 142, 69)]),
    )
    .await;
    scale(&app, "exact", 3).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(publish(&app, "exact", &format!("abcd{i}")).await);
    }
    for id in &ids {
        let m = app.wait_final(id, Duration::from_secs(20)).await;
        assert_eq!(m["status"], "success", "{m}");
    }
    let arrivals = wait_arrivals(&s, 3, Duration::from_secs(5)).await;
    let times: Vec<Instant> = arrivals.iter().map(|a| a.at).collect();
    assert_eq!(max_in_window(&times, period), 2, "{times:?}");
    app.stop().await;
}

#[tokio::test]
async fn unused_reservation_is_given_back_at_once() {
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    // Each request reserves 1 + 900 tokens of 1000 per minute, and uses 7: on reservations
    // alone one request a minute could go; given back at once, each goes as soon as the one
    // before it has answered.
    app.register(
        "back",
        json!([key(&s, "sk-tok-back-0002", 100, json!("minute"), 1000, 900)]),
    )
    .await;
    scale(&app, "back", 4).await;
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(publish(&app, "back", &format!("hi {i}")).await);
    }
    for id in &ids {
        let m = app.wait_final(id, Duration::from_secs(20)).await;
        assert_eq!(m["status"], "success", "{m}");
        assert_eq!(m["result"]["usage"]["total_tokens"], 7, "{m}");
    }
    let arrivals = wait_arrivals(&s, 6, Duration::from_secs(5)).await;
    assert_eq!(arrivals.len(), 6);
    // Six requests inside one minute (well inside: far less than a period passed).
    let span = arrivals[5].at.duration_since(arrivals[0].at);
    assert!(span < Duration::from_secs(20), "six requests took {span:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    app.stop().await;
}

#[tokio::test]
async fn a_failed_call_gives_its_whole_reservation_back() {
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    // One request (901 tokens reserved of 1000 per minute) fits at a time: every call below
    // can only go if the one before it gave its reservation back.
    let api_key = "sk-tok-fail-0003";
    app.register(
        "fail",
        json!([key(&s, api_key, 100, json!("minute"), 1000, 900)]),
    )
    .await;
    s.script(
        api_key,
        [
            // Message 1: a 400 fails it at once.
            Scripted::status(400, "bad request"),
            // Message 2: a 500 (retried), then a 429 (the key cools down 1 s), then the echo.
            Scripted::status(500, "oops"),
            Scripted::too_many("1"),
        ],
    );
    let first = publish(&app, "fail", "one").await;
    let m = app.wait_final(&first, Duration::from_secs(10)).await;
    assert_eq!(m["status"], "failed", "{m}");
    let second = publish(&app, "fail", "two").await;
    let m = app.wait_final(&second, Duration::from_secs(20)).await;
    assert_eq!(m["status"], "success", "{m}");
    let arrivals = wait_arrivals(&s, 4, Duration::from_secs(5)).await;
    assert_eq!(arrivals.len(), 4);
    let span = arrivals[3].at.duration_since(arrivals[0].at);
    assert!(
        span < Duration::from_secs(20),
        "four calls took {span:?}: a failed call kept its reservation"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_success_without_reported_usage_keeps_its_reservation() {
    let s = StandIn::start().await;
    // The stand-in reports no usage: the engine cannot know what the call cost.
    s.set_usage(|_| None);
    let app = TestApp::spawn().await;
    // 901 of 1000 tokens per 2 s reserved per request: the second request must wait until the
    // first one's reservation ages out of the window.
    let period = Duration::from_secs(2);
    app.register(
        "nousage",
        json!([key(&s, "sk-tok-none-0004", 100, json!(2), 1000, 900)]),
    )
    .await;
    scale(&app, "nousage", 2).await;
    let ids = [
        publish(&app, "nousage", "one").await,
        publish(&app, "nousage", "two").await,
    ];
    for id in &ids {
        let m = app.wait_final(id, Duration::from_secs(20)).await;
        assert_eq!(m["status"], "success", "{m}");
    }
    let arrivals = wait_arrivals(&s, 2, Duration::from_secs(5)).await;
    let gap = arrivals[1].at.duration_since(arrivals[0].at);
    assert!(
        gap >= period,
        "the second request went {gap:?} after the first"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_update_of_the_token_limit_applies_at_once() {
    let s = StandIn::start().await;
    // Every call reports 950 tokens (more than its 1 + 100 reservation: charged in full).
    s.set_usage(|_| Some((900, 50)));
    let app = TestApp::spawn().await;
    app.register(
        "upd",
        json!([key(&s, "sk-tok-upd-0005", 100, json!("minute"), 1000, 100)]),
    )
    .await;
    let key_id = only_key(&app, "upd").await["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let update = |body: Value| {
        let app = &app;
        let path = format!("/provider-key/update/{key_id}");
        async move {
            let (status, b) = app.put(&path, body).await;
            assert_eq!(status, 200, "update failed: {b}");
            b
        }
    };
    // Waits for request `n` (1-based) to reach the stand-in, after `not_before`.
    let arrives = |n: usize, not_before: Instant| {
        let s = s.clone();
        async move {
            let arrivals = wait_arrivals(&s, n, Duration::from_secs(10)).await;
            assert!(
                arrivals[n - 1].at >= not_before,
                "request {n} went before the update"
            );
        }
    };
    let waits = |n: usize| {
        let s = s.clone();
        async move {
            // Time for the engine to have sent it, had the window allowed.
            tokio::time::sleep(Duration::from_millis(700)).await;
            assert_eq!(s.arrivals().len(), n - 1, "request {n} did not wait");
        }
    };

    // 1. The first call uses 950 of 1000 tokens: the next (101 reserved) waits a minute.
    let first = publish(&app, "upd", "one").await;
    assert_eq!(
        app.wait_final(&first, Duration::from_secs(10)).await["status"],
        "success"
    );
    let second = publish(&app, "upd", "two").await;
    waits(2).await;

    // 2. Raising the limit lets it go at once.
    let at = Instant::now();
    let b = update(json!({"token_limit": 2000})).await;
    assert_eq!(b["provider_key"]["token_limit"], 2000, "{b}");
    arrives(2, at).await;
    // Final once its usage (950) is reconciled.
    assert_eq!(
        app.wait_final(&second, Duration::from_secs(10)).await["status"],
        "success"
    );

    // 3. 1900 of 2000 used: the next waits; removing the limit (null) lets it go at once.
    let third = publish(&app, "upd", "three").await;
    waits(3).await;
    let at = Instant::now();
    let b = update(json!({"token_limit": null})).await;
    assert!(b["provider_key"]["token_limit"].is_null(), "{b}");
    assert!(only_key(&app, "upd").await["token_limit"].is_null());
    arrives(3, at).await;
    assert_eq!(
        app.wait_final(&third, Duration::from_secs(10)).await["status"],
        "success"
    );

    // 4. Lowering it applies at once too: 2850 tokens in the last minute, limit 1000.
    let b = update(json!({"token_limit": 1000})).await;
    assert_eq!(b["provider_key"]["token_limit"], 1000, "{b}");
    let fourth = publish(&app, "upd", "four").await;
    waits(4).await;
    let at = Instant::now();
    update(json!({"token_limit": null})).await;
    arrives(4, at).await;
    assert_eq!(
        app.wait_final(&fourth, Duration::from_secs(10)).await["status"],
        "success"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn token_limit_is_validated_set_listed_and_cleared() {
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    let base = openai_key(&s, "sk-tok-api-0006", 10, json!(60), "gpt-4");
    let with = |limit: Value| {
        let mut k = base.clone();
        k["token_limit"] = limit;
        k
    };
    let register = |ws: &str, k: Value| {
        let body = json!({"workspace_id": ws, "providers": [k]});
        let app = &app;
        async move { app.post("/workspace/register", body).await }
    };

    // Registration: 0 and negatives are unacceptable values; a string or a fraction is the
    // wrong type.
    for (bad, status) in [
        (json!(0), 422),
        (json!(-5), 422),
        (json!("100"), 400),
        (json!(1.5), 400),
    ] {
        let (got, body) = register("api", with(bad.clone())).await;
        assert_eq!(got, status, "token_limit {bad}: {body}");
        assert_eq!(body["success"], false, "{body}");
    }
    // Nothing was created by the rejected requests.
    let (_, list) = app.get("/workspaces/?workspace_id=api").await;
    assert_eq!(
        list["workspaces"].as_array().map_or(0, Vec::len),
        0,
        "{list}"
    );

    let (status, body) = register("api", with(json!(5000))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(only_key(&app, "api").await["token_limit"], 5000);
    let (status, body) = register("plain", base.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert!(only_key(&app, "plain").await["token_limit"].is_null());

    // Adding a key: the same rules.
    let add = |limit: Value| {
        let mut k = with(limit);
        k["workspace_id"] = json!("plain");
        let app = &app;
        async move { app.post("/provider-key/add", k).await }
    };
    for (bad, status) in [(json!(0), 422), (json!(-1), 422), (json!("x"), 400)] {
        let (got, body) = add(bad.clone()).await;
        assert_eq!(got, status, "token_limit {bad}: {body}");
    }
    let (status, body) = add(json!(123)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["provider_key"]["token_limit"], 123, "{body}");

    // Updating: a value sets it, null removes it, absent keeps it; bad values change nothing.
    let key_id = only_key(&app, "api").await["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/provider-key/update/{key_id}");
    for (bad, status) in [
        (json!(0), 422),
        (json!(-1), 422),
        (json!("10"), 400),
        (json!(2.5), 400),
    ] {
        let (got, body) = app.put(&path, json!({"token_limit": bad})).await;
        assert_eq!(got, status, "token_limit {bad}: {body}");
        assert_eq!(only_key(&app, "api").await["token_limit"], 5000);
    }
    let (status, body) = app.put(&path, json!({"token_limit": 42})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["provider_key"]["token_limit"], 42);
    let (status, body) = app.put(&path, json!({"rate_limit": 11})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["provider_key"]["token_limit"], 42, "absent keeps it");
    let (status, body) = app.put(&path, json!({"token_limit": null})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["provider_key"]["token_limit"].is_null(), "{body}");
    assert!(only_key(&app, "api").await["token_limit"].is_null());
    assert_eq!(only_key(&app, "api").await["rate_limit"], 11);
    app.stop().await;
}
