mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn smoke() {
    let s = StandIn::start().await;
    let app = TestApp::spawn().await;
    app.register(
        "w1",
        json!([openai_key(&s, "sk-aaaaaaaaaaaa1111", 5, json!(1), "gpt-4")]),
    )
    .await;
    let id = app
        .publish(json!({"workspace_id": "w1", "prompt": "Hi", "content": "there"}))
        .await;
    let m = app.wait_final(&id, Duration::from_secs(5)).await;
    assert_eq!(m["status"], "success", "{m}");
    assert_eq!(m["result"]["text"], "echo: Hi\n\nthere");
    app.stop().await;
}
