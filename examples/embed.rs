//! Embedding the engine: the library without HTTP.
//!
//! Starts an [`Engine`] in-process on an in-memory SQLite database, registers a workspace with
//! one `mock` key (it echoes the prompt, so no network or API key is needed), publishes a few
//! messages, waits for each result and shuts the engine down. The HTTP API calls these very
//! functions; an embedding program gets the same queueing, rate limiting and durability.
//!
//! ```text
//! cargo run --example embed
//! ```
//!
//! It exits non-zero unless every message ends `success`.

use std::time::Duration;

use ai_rate_limiter::domain::{
    ApiKey, KeyConfig, Message, MessageRequest, MessageStatus, NewMessage, NewProviderKey,
    NewWorkspace, ProviderKind, RateLimit, RatePeriod, WorkspaceId,
};
use ai_rate_limiter::{Engine, EngineConfig};

/// The prompts published, in order.
pub const PROMPTS: [&str; 3] = ["Say hello", "Count to three", "Name a colour"];

/// Runs the whole flow; returns the finished messages in publishing order.
pub async fn run() -> anyhow::Result<Vec<Message>> {
    // A file URL (`sqlite://app.db?mode=rwc`) would keep the messages across restarts.
    let engine = Engine::start(EngineConfig::new("sqlite::memory:")).await?;

    let workspace = WorkspaceId::parse("demo")?;
    engine
        .register_workspace(NewWorkspace {
            id: workspace.clone(),
            providers: vec![NewProviderKey {
                provider: ProviderKind::Mock,
                api_key: ApiKey::parse("mock-key-not-secret")?,
                // At most 2 requests in any 1-second window.
                rate_limit: RateLimit::new(2, RatePeriod::from_name("second")?)?,
                // No token limit (`Some(n)`: at most n tokens in any such window).
                token_limit: None,
                config: KeyConfig {
                    model: "mock-echo".into(),
                    ..Default::default()
                }
                .validate()?,
            }],
        })
        .await?;

    let mut ids = Vec::new();
    for prompt in PROMPTS {
        let published = engine
            .publish(NewMessage {
                id: None,
                workspace_id: workspace.clone(),
                request: MessageRequest {
                    prompt: prompt.into(),
                    ..Default::default()
                }
                .validate()?,
            })
            .await?;
        ids.push(published.message.id);
    }

    let mut done = Vec::new();
    for id in ids {
        let message = engine.wait_for_message(id, Duration::from_secs(10)).await?;
        let text = message.result.as_ref().map_or("-", |r| r.text.as_str());
        println!("{id} {:<10} {text}", message.status.as_str());
        done.push(message);
    }

    engine.shutdown(Duration::from_secs(5)).await;

    if let Some(m) = done.iter().find(|m| m.status != MessageStatus::Success) {
        anyhow::bail!(
            "message {} ended {}: {:?}",
            m.id,
            m.status.as_str(),
            m.error
        );
    }
    Ok(done)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run().await?;
    Ok(())
}
