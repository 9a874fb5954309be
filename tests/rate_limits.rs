mod common;

// Rate limits and provider-failure policy, end to end: the real server, a stand-in OpenAI
// server that logs every arrival, and assertions computed from that log (the stand-in is the
// judge of "never over the limit").
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

/// A key of `limit` requests per `period_s` seconds at the stand-in, serving `gpt-4`.
fn key(s: &StandIn, api_key: &str, limit: u32, period_s: u64) -> Value {
    openai_key(s, api_key, limit, json!(period_s), "gpt-4")
}

/// Adds a key to a workspace through `POST /provider-key/add`; returns its id.
async fn add_key(app: &TestApp, ws: &str, mut k: Value) -> String {
    k["workspace_id"] = json!(ws);
    let (status, body) = app.post("/provider-key/add", k).await;
    assert_eq!(status, 201, "add key failed: {body}");
    body["key_id"].as_str().unwrap().to_owned()
}

/// The listed key (`GET /provider-keys`) whose secret is `api_key`.
async fn listed_key(app: &TestApp, ws: &str, api_key: &str) -> Value {
    let (status, body) = app.get(&format!("/provider-keys?workspace_id={ws}")).await;
    assert_eq!(status, 200, "{body}");
    let masked = format!("****{}", &api_key[api_key.len() - 4..]);
    body["provider_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["api_key"] == masked.as_str())
        .unwrap_or_else(|| panic!("no key {masked} in {body}"))
        .clone()
}

async fn key_id(app: &TestApp, ws: &str, api_key: &str) -> String {
    listed_key(app, ws, api_key).await["key_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `POST /workers/scale/{ws}`; returns the body.
async fn scale(app: &TestApp, ws: &str, count: u32) -> Value {
    let (status, body) = app
        .post(&format!("/workers/scale/{ws}"), json!({"count": count}))
        .await;
    assert_eq!(status, 200, "scale failed: {body}");
    body
}

async fn publish_n(app: &TestApp, ws: &str, n: usize, tag: &str) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(
            app.publish(json!({"workspace_id": ws, "prompt": format!("{tag} {i}")}))
                .await,
        );
    }
    ids
}

async fn wait_all(app: &TestApp, ids: &[String], timeout: Duration) -> Vec<Value> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(app.wait_final(id, timeout).await);
    }
    out
}

/// Waits until the stand-in has seen at least `n` requests in all; returns them sorted.
async fn wait_arrivals(s: &StandIn, n: usize, timeout: Duration) -> Vec<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut all: Vec<Instant> = s.arrivals().into_iter().map(|a| a.at).collect();
        if all.len() >= n {
            all.sort();
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

/// Arrivals in the window ending at `at`, i.e. in `(at - period, at]`.
fn in_window_ending_at(sorted: &[Instant], at: Instant, period: Duration) -> usize {
    sorted
        .iter()
        .filter(|x| **x <= at && at.duration_since(**x) < period)
        .count()
}

/// The sliding-window spec in its "spacing" form: in a sorted list, the request `limit` places
/// later is never less than one period after (so no window of `period` holds `limit + 1`).
fn assert_spaced(sorted: &[Instant], limit: usize, period: Duration, what: &str) {
    for i in 0..sorted.len().saturating_sub(limit) {
        let gap = sorted[i + limit].duration_since(sorted[i]);
        assert!(
            gap >= period,
            "{what}: arrivals #{i} and #{} are only {gap:?} apart; {} requests fell within {period:?} (limit {limit})",
            i + limit,
            limit + 1
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Several keys drain a backlog at their combined rate, never over any key's limit
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_keys_of_four_per_second_drain_36_messages_at_twelve_per_second_without_any_window_over_the_limit()
 {
    const KEYS: [&str; 3] = [
        "sk-drain-key-000a",
        "sk-drain-key-000b",
        "sk-drain-key-000c",
    ];
    const LIMIT: usize = 4;
    const MESSAGES: usize = 36;
    let period = SECOND;
    let per_period = KEYS.len() * LIMIT; // 12

    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    app.register(
        "drain",
        json!(KEYS.map(|k| key(&s, k, LIMIT as u32, 1)).to_vec()),
    )
    .await;
    // A real backlog: queue everything with no worker, then start 8 workers at once.
    scale(&app, "drain", 0).await;
    let ids = publish_n(&app, "drain", MESSAGES, "drain").await;
    scale(&app, "drain", 8).await;

    for m in wait_all(&app, &ids, Duration::from_secs(9)).await {
        assert_eq!(m["status"], "success", "{m}");
        assert_eq!(m["attempts"], 1, "{m}");
    }
    assert_eq!(
        s.arrivals().len(),
        MESSAGES,
        "one provider call per message"
    );

    for k in KEYS {
        assert!(!s.arrivals_for(k).is_empty(), "key {k} was never used");
    }

    let mut all: Vec<Instant> = s.arrivals().into_iter().map(|a| a.at).collect();
    all.sort();
    let first = all[0];
    let span = all[MESSAGES - 1].duration_since(first);
    // The limit itself: 12 per period cannot send 36 within 2 periods.
    assert!(
        span >= 2 * period,
        "36 requests at 12 per period went out within {span:?}"
    );
    // And the combined rate is used: the backlog drains in about 36/12 = 3 batches, the last
    // starting 2 periods after the first (plus scheduling slack).
    let slack = Duration::from_millis(900);
    assert!(
        span < 2 * period + slack,
        "draining 36 requests at 12 per period took {span:?}"
    );
    // Batch by batch: by the end of the k-th period (plus slack) k*12 requests went out.
    for k in 1..=2u32 {
        let by = first + period * k + Duration::from_millis(400);
        let sent = all.iter().filter(|a| **a < by).count();
        assert!(
            sent >= per_period * k as usize,
            "only {sent} requests in the first {k} period(s); expected at least {}",
            per_period * k as usize
        );
    }
    // The limit, exactly, as the provider saw it: the request LIMIT places later on a key is
    // never less than one period after (no 2x burst at a window edge), i.e. no window of one
    // period holds more than LIMIT requests of one key.
    for k in KEYS {
        let mine = s.arrivals_for(k);
        assert_spaced(&mine, LIMIT, period, k);
        assert!(max_in_window(&mine, period) <= LIMIT);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_burst_just_before_the_window_ends_waits_until_the_first_burst_ages_out() {
    const K: &str = "sk-edge-burst-0001";
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    app.register("edge", json!([key(&s, K, 3, 1)])).await;
    scale(&app, "edge", 3).await;

    let mut ids = publish_n(&app, "edge", 3, "first").await;
    let first = wait_arrivals(&s, 3, Duration::from_secs(3)).await;
    // Just before the first burst's window ends, a second burst: a fixed-bucket limiter
    // would let it through at the bucket edge (6 within one period).
    tokio::time::sleep_until(first[0] + Duration::from_millis(700)).await;
    ids.extend(publish_n(&app, "edge", 3, "second").await);

    for m in wait_all(&app, &ids, Duration::from_secs(5)).await {
        assert_eq!(m["status"], "success", "{m}");
    }
    let mine = s.arrivals_for(K);
    assert_eq!(mine.len(), 6);
    assert_spaced(&mine, 3, SECOND, K);
    assert!(max_in_window(&mine, SECOND) <= 3);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Live limit changes
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_a_key_limit_applies_at_once_to_a_waiting_backlog_and_lowering_it_is_respected_from_then_on()
 {
    const K: &str = "sk-live-update-0001";
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    app.register("live", json!([key(&s, K, 1, 1)])).await;
    let id = key_id(&app, "live", K).await;
    scale(&app, "live", 6).await;

    // 1 per second with 6 queued: two go out (t0, t0 + 1 s), four wait.
    let mut ids = publish_n(&app, "live", 6, "slow").await;
    wait_arrivals(&s, 2, Duration::from_secs(3)).await;
    let raised_at = Instant::now();
    let (status, body) = app
        .put(
            &format!("/provider-key/update/{id}"),
            json!({"rate_limit": 100}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["provider_key"]["rate_limit"], 100, "{body}");

    for m in wait_all(&app, &ids, Duration::from_secs(5)).await {
        assert_eq!(m["status"], "success", "{m}");
    }
    let mine = s.arrivals_for(K);
    assert_eq!(mine.len(), 6);
    let before: Vec<Instant> = mine.iter().copied().filter(|a| *a < raised_at).collect();
    let after: Vec<Instant> = mine.iter().copied().filter(|a| *a >= raised_at).collect();
    assert_eq!(before.len(), 2, "the old limit held before the update");
    assert_spaced(&before, 1, SECOND, "under the old limit of 1 per second");
    // At the old pace the four waiting ones would need at least 3 more seconds; under the new
    // limit all four go out within one period of the update.
    assert_eq!(after.len(), 4);
    assert_eq!(
        max_in_window(&after, SECOND),
        4,
        "the raised limit did not release the backlog at once: {:?}",
        after
            .iter()
            .map(|a| a.duration_since(raised_at))
            .collect::<Vec<_>>()
    );
    assert!(
        after[3].duration_since(raised_at) < SECOND,
        "the backlog took {:?} after the raise",
        after[3].duration_since(raised_at)
    );

    // Lower to 2 per second: every request from now on has at most 2 (itself included) in the
    // window ending at it, the burst just sent included.
    let lowered_at = Instant::now();
    let (status, body) = app
        .put(
            &format!("/provider-key/update/{id}"),
            json!({"rate_limit": 2}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let more = publish_n(&app, "live", 4, "lowered").await;
    for m in wait_all(&app, &more, Duration::from_secs(6)).await {
        assert_eq!(m["status"], "success", "{m}");
    }
    ids.extend(more);
    let mine = s.arrivals_for(K);
    let since: Vec<Instant> = mine.iter().copied().filter(|a| *a >= lowered_at).collect();
    assert_eq!(since.len(), 4);
    for a in &since {
        let n = in_window_ending_at(&mine, *a, SECOND);
        assert!(
            n <= 2,
            "a request {:?} after lowering the limit to 2 had {n} requests in its window",
            a.duration_since(lowered_at)
        );
    }
    assert!(max_in_window(&since, SECOND) <= 2);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. 429 and Retry-After
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_cools_the_key_down_and_is_not_counted_as_an_attempt() {
    const K: &str = "sk-retry-after-0001";
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    app.register("cool", json!([key(&s, K, 100, 1)])).await;
    s.script(K, [Scripted::too_many("1")]);

    let id = app
        .publish(json!({"workspace_id": "cool", "prompt": "hello"}))
        .await;
    let m = app.wait_final(&id, Duration::from_secs(5)).await;
    assert_eq!(m["status"], "success", "{m}");
    assert_eq!(
        m["attempts"], 1,
        "the 429 must not count as an attempt: {m}"
    );
    assert_eq!(m["result"]["text"], "echo: hello");

    let mine = s.arrivals_for(K);
    assert_eq!(mine.len(), 2, "one 429, one retry");
    let gap = mine[1].duration_since(mine[0]);
    // The cool-down starts when the 429 comes back, after it arrived: the retry is at least
    // Retry-After (1 s) after the 429's arrival.
    assert!(
        gap >= SECOND,
        "retried {gap:?} after a 429 with Retry-After: 1"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_key_cools_down_after_a_429_messages_go_to_the_other_key_and_the_cooled_key_returns_afterwards()
 {
    const A: &str = "sk-cooled-key-000a";
    const B: &str = "sk-spare-key-000b";
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    app.register("spare", json!([key(&s, A, 100, 1)])).await;
    // Added later: A is the older key, so A gets the first message.
    let b_id = add_key(&app, "spare", key(&s, B, 100, 1)).await;
    s.script(A, [Scripted::too_many("5")]);

    let first = app
        .publish(json!({"workspace_id": "spare", "prompt": "first"}))
        .await;
    let m = app.wait_final(&first, Duration::from_secs(4)).await;
    assert_eq!(m["status"], "success", "{m}");
    assert_eq!(m["attempts"], 1, "{m}");
    assert_eq!(m["key_id"], b_id.as_str(), "retried on the other key: {m}");
    let a = s.arrivals_for(A);
    assert_eq!(a.len(), 1, "the first message tried A and got the 429");
    let rate_limited_at = a[0];

    let ids = publish_n(&app, "spare", 5, "meanwhile").await;
    for m in wait_all(&app, &ids, Duration::from_secs(4)).await {
        assert_eq!(m["status"], "success", "{m}");
        assert_eq!(m["key_id"], b_id.as_str(), "went to the cooled key: {m}");
    }
    assert_eq!(s.arrivals_for(B).len(), 6);
    assert!(
        s.arrivals_for(A)
            .iter()
            .all(|t| *t == rate_limited_at || t.duration_since(rate_limited_at) >= 5 * SECOND),
        "a request reached the cooled key within its Retry-After of 5 s"
    );

    // Once the cool-down is over, the key takes traffic again.
    tokio::time::sleep_until(rate_limited_at + Duration::from_millis(5300)).await;
    let later = publish_n(&app, "spare", 3, "later").await;
    for m in wait_all(&app, &later, Duration::from_secs(3)).await {
        assert_eq!(m["status"], "success", "{m}");
    }
    let a = s.arrivals_for(A);
    assert!(
        a.len() > 1,
        "the key was not used again after its cool-down"
    );
    assert!(
        a[1..]
            .iter()
            .all(|t| t.duration_since(rate_limited_at) >= 5 * SECOND)
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. 401: the key is set aside until it is updated
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_answering_401_is_marked_unhealthy_and_skipped_until_it_is_updated() {
    const A: &str = "sk-revoked-key-000a";
    const B: &str = "sk-working-key-000b";
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    app.register("auth", json!([key(&s, A, 100, 1)])).await;
    let b_id = add_key(&app, "auth", key(&s, B, 100, 1)).await;
    let a_id = key_id(&app, "auth", A).await;
    s.script(A, [Scripted::status(401, "Incorrect API key provided")]);

    let first = app
        .publish(json!({"workspace_id": "auth", "prompt": "first"}))
        .await;
    let m = app.wait_final(&first, Duration::from_secs(4)).await;
    assert_eq!(m["status"], "success", "{m}");
    assert_eq!(
        m["key_id"],
        b_id.as_str(),
        "completed on the other key: {m}"
    );
    assert_eq!(s.arrivals_for(A).len(), 1);

    // The key shows unhealthy (the store write may trail the outcome by a moment).
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let k = listed_key(&app, "auth", A).await;
        if k["healthy"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "key A still healthy: {k}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(listed_key(&app, "auth", B).await["healthy"], true);

    let ids = publish_n(&app, "auth", 4, "after 401").await;
    for m in wait_all(&app, &ids, Duration::from_secs(4)).await {
        assert_eq!(m["status"], "success", "{m}");
        assert_eq!(m["key_id"], b_id.as_str(), "{m}");
    }
    assert_eq!(
        s.arrivals_for(A).len(),
        1,
        "the rejected key was used again"
    );

    // Updating the key makes it healthy again, and it takes traffic.
    let (status, body) = app
        .put(
            &format!("/provider-key/update/{a_id}"),
            json!({"api_key": "sk-renewed-key-000a"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["provider_key"]["healthy"], true, "{body}");
    assert_eq!(
        listed_key(&app, "auth", "sk-renewed-key-000a").await["healthy"],
        true
    );
    let ids = publish_n(&app, "auth", 3, "renewed").await;
    for m in wait_all(&app, &ids, Duration::from_secs(4)).await {
        assert_eq!(m["status"], "success", "{m}");
    }
    assert!(
        !s.arrivals_for("sk-renewed-key-000a").is_empty(),
        "the updated key takes no traffic"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_only_key_answering_401_a_message_fails_saying_the_key_was_rejected() {
    const K: &str = "sk-only-revoked-0001";
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    app.register("auth-only", json!([key(&s, K, 100, 1)])).await;
    s.script(K, [Scripted::status(401, "Incorrect API key provided")]);

    let id = app
        .publish(json!({"workspace_id": "auth-only", "prompt": "hello"}))
        .await;
    let m = app.wait_final(&id, Duration::from_secs(4)).await;
    assert_eq!(m["status"], "failed", "{m}");
    let error = m["error"].as_str().unwrap_or_default();
    assert!(error.contains("rejected"), "error: {error}");
    assert_eq!(s.arrivals_for(K).len(), 1, "a rejected key is not retried");
    assert_eq!(listed_key(&app, "auth-only", K).await["healthy"], false);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. 5xx retried with backoff, other 4xx fail at once
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_with_backoff_and_the_third_attempt_can_succeed() {
    const K: &str = "sk-flaky-key-0001";
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    app.register("flaky", json!([key(&s, K, 100, 1)])).await;
    s.script(
        K,
        [Scripted::status(500, "boom"), Scripted::status(500, "boom")],
    );

    let id = app
        .publish(json!({"workspace_id": "flaky", "prompt": "hello"}))
        .await;
    let m = app.wait_final(&id, Duration::from_secs(4)).await;
    assert_eq!(m["status"], "success", "{m}");
    assert_eq!(m["attempts"], 3, "{m}");
    assert_eq!(m["result"]["text"], "echo: hello");

    // fast_retry(): base 20 ms doubling, full jitter down to half: >= 10 ms, then >= 20 ms.
    let mine = s.arrivals_for(K);
    assert_eq!(mine.len(), 3);
    assert!(mine[1].duration_since(mine[0]) >= Duration::from_millis(10));
    assert!(mine[2].duration_since(mine[1]) >= Duration::from_millis(20));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_server_errors_fail_the_message_with_the_providers_message() {
    const K: &str = "sk-broken-key-0001";
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    app.register("broken", json!([key(&s, K, 100, 1)])).await;
    s.script(K, (0..3).map(|_| Scripted::status(500, "boom")));

    let id = app
        .publish(json!({"workspace_id": "broken", "prompt": "hello"}))
        .await;
    let m = app.wait_final(&id, Duration::from_secs(4)).await;
    assert_eq!(m["status"], "failed", "{m}");
    assert_eq!(m["attempts"], 3, "{m}");
    let error = m["error"].as_str().unwrap_or_default();
    assert!(error.contains("boom"), "error: {error}");
    assert_eq!(s.arrivals_for(K).len(), 3, "no call beyond max_attempts");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_fails_the_message_at_once_with_the_providers_message() {
    const K: &str = "sk-bad-request-0001";
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    app.register("bad", json!([key(&s, K, 100, 1)])).await;
    s.script(
        K,
        [Scripted::status(
            400,
            "This model's maximum context length is 8192 tokens",
        )],
    );

    let id = app
        .publish(json!({"workspace_id": "bad", "prompt": "hello"}))
        .await;
    let m = app.wait_final(&id, Duration::from_secs(4)).await;
    assert_eq!(m["status"], "failed", "{m}");
    assert_eq!(m["attempts"], 1, "{m}");
    let error = m["error"].as_str().unwrap_or_default();
    assert!(error.contains("maximum context length"), "error: {error}");
    // Not retried: wait a little longer than any backoff and check.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.arrivals_for(K).len(), 1);
    // The key stays usable.
    assert_eq!(listed_key(&app, "bad", K).await["healthy"], true);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Provider timeout
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_slower_than_the_key_timeout_is_retried_then_the_message_fails_as_timed_out() {
    const K: &str = "sk-slow-provider-0001";
    let s = StandIn::start().await;
    s.set_latency(SECOND);
    let app = TestApp::spawn().await;
    let mut k = key(&s, K, 100, 1);
    k["config"]["timeout_s"] = json!(0.2);
    app.register("slow", json!([k])).await;

    let id = app
        .publish(json!({"workspace_id": "slow", "prompt": "hello"}))
        .await;
    let m = app.wait_final(&id, Duration::from_secs(5)).await;
    assert_eq!(m["status"], "failed", "{m}");
    assert_eq!(m["attempts"], 3, "{m}");
    let error = m["error"].as_str().unwrap_or_default();
    assert!(error.contains("timed out"), "error: {error}");
    assert_eq!(s.arrivals_for(K).len(), 3);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 7. Scaling down
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_to_zero_lets_the_busy_worker_finish_its_message_and_the_workspace_lives_on() {
    const K: &str = "sk-scale-down-0001";
    let s = StandIn::start().await;
    s.set_latency(Duration::from_millis(800));
    let app = TestApp::spawn().await;
    app.register("scale", json!([key(&s, K, 100, 1)])).await;

    let id = app
        .publish(json!({"workspace_id": "scale", "prompt": "in flight"}))
        .await;
    wait_arrivals(&s, 1, Duration::from_secs(3)).await;

    let body = scale(&app, "scale", 0).await;
    assert_eq!(body["count"], 0, "{body}");
    let workers = body["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "the busy worker is still listed: {body}");
    assert_eq!(workers[0]["state"], "stopping", "{body}");
    assert_eq!(workers[0]["current_message_id"], id.as_str(), "{body}");

    let m = app.wait_final(&id, Duration::from_secs(4)).await;
    assert_eq!(m["status"], "success", "{m}");
    assert_eq!(m["result"]["text"], "echo: in flight");

    // The worker goes away once done; the workspace stays.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (status, body) = app.get("/workers/scale").await;
        assert_eq!(status, 200, "{body}");
        if body["workers"].as_array().is_some_and(|w| w.is_empty()) {
            assert_eq!(body["count"], 0);
            break;
        }
        assert!(Instant::now() < deadline, "worker never stopped: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Publishing is still accepted; the message waits until there is a worker again.
    s.set_latency(Duration::ZERO);
    let queued = app
        .publish(json!({"workspace_id": "scale", "prompt": "queued"}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, m) = app.get(&format!("/message/{queued}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        m["status"], "pending",
        "no worker should have taken it: {m}"
    );
    assert_eq!(s.arrivals().len(), 1);

    scale(&app, "scale", 1).await;
    let m = app.wait_final(&queued, Duration::from_secs(4)).await;
    assert_eq!(m["status"], "success", "{m}");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 8. Deleting a key with requests waiting on it
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_key_moves_the_messages_waiting_on_it_to_the_other_key() {
    const A: &str = "sk-deleted-key-000a";
    const B: &str = "sk-remaining-key-000b";
    let period = 2 * SECOND;
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    app.register("del", json!([key(&s, A, 1, 2)])).await;
    let a_id = key_id(&app, "del", A).await;
    let b_id = add_key(&app, "del", key(&s, B, 1, 2)).await;
    scale(&app, "del", 4).await;

    // 1 per 2 s on each key, 4 workers, 4 messages: one goes out on each key, two wait.
    let ids = publish_n(&app, "del", 4, "backlog").await;
    wait_arrivals(&s, 2, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let deleted_at = Instant::now();
    let (status, body) = app.delete(&format!("/provider-key/delete/{a_id}")).await;
    assert_eq!(status, 200, "{body}");

    let done = wait_all(&app, &ids, Duration::from_secs(7)).await;
    for m in &done {
        assert_eq!(m["status"], "success", "{m}");
    }
    let a = s.arrivals_for(A);
    assert_eq!(a.len(), 1, "the deleted key was used after its deletion");
    assert!(a[0] < deleted_at);
    let b = s.arrivals_for(B);
    assert_eq!(b.len(), 3);
    assert_spaced(&b, 1, period, B);
    assert!(max_in_window(&b, period) <= 1);
    assert_eq!(
        done.iter().filter(|m| m["key_id"] == b_id.as_str()).count(),
        3
    );
    app.stop().await;
}
