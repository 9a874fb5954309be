//! The stand-in provider of the benchmark: an OpenAI-compatible `/v1/chat/completions` on
//! 127.0.0.1 with a configurable latency, recording every arrival (instant, key, message index).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use poem::web::{Data, Json};
use poem::{EndpointExt, Route, handler, post};
use serde_json::{Value, json};
use tokio::time::Instant;

/// One request received.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Instant,
    pub key: String,
    /// The message index parsed from a prompt `bench #<index>`, if any.
    pub index: Option<usize>,
}

#[derive(Default)]
pub struct State {
    pub arrivals: Mutex<Vec<Arrival>>,
    pub latency: Mutex<Duration>,
}

#[handler]
async fn chat(
    req: &poem::Request,
    Json(body): Json<Value>,
    Data(state): Data<&Arc<State>>,
) -> Json<Value> {
    let key = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let user = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default();
    let index = user
        .strip_prefix("bench #")
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok());
    let at = Instant::now();
    if let Ok(mut a) = state.arrivals.lock() {
        a.push(Arrival { at, key, index });
    }
    let latency = state.latency.lock().map(|l| *l).unwrap_or_default();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    Json(json!({
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}
    }))
}

/// A running stand-in.
#[derive(Clone)]
pub struct StandIn {
    pub endpoint: String,
    pub state: Arc<State>,
}

impl StandIn {
    pub async fn start(latency: Duration) -> anyhow::Result<Self> {
        let state = Arc::new(State::default());
        *state
            .latency
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))? = latency;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Route::new()
            .at("/v1/chat/completions", post(chat))
            .data(state.clone());
        let acceptor = poem::listener::TcpAcceptor::from_tokio(listener)?;
        tokio::spawn(async move {
            let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
        });
        Ok(Self {
            endpoint: format!("http://{addr}/v1"),
            state,
        })
    }

    /// Arrivals so far, taken out of the log.
    pub fn take_arrivals(&self) -> Vec<Arrival> {
        self.state
            .arrivals
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default()
    }
}
