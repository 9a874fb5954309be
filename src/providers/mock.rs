//! `mock`: a provider that needs no network and answers deterministically, so the whole flow
//! can be tried in a minute. It echoes the user message; with `response_format: json` it
//! answers `{"echo": "<user message>"}`.

use async_trait::async_trait;

use super::{Completion, CompletionRequest, Provider, ProviderError};
use crate::domain::{ProviderKey, Usage};

/// The built-in echo provider.
#[derive(Debug, Default, Clone, Copy)]
pub struct MockProvider;

#[async_trait]
impl Provider for MockProvider {
    async fn complete(
        &self,
        _key: &ProviderKey,
        req: &CompletionRequest,
    ) -> Result<Completion, ProviderError> {
        let text = if req.json {
            serde_json::json!({ "echo": req.user }).to_string()
        } else {
            format!("echo: {}", req.user)
        };
        let prompt_tokens = words(&req.user) + req.system.as_deref().map_or(0, words);
        let completion_tokens = words(&text);
        Ok(Completion {
            text,
            model: req.model.clone(),
            usage: Some(Usage {
                prompt_tokens,
                completion_tokens,
                total_tokens: prompt_tokens + completion_tokens,
            }),
            pause_for: None,
        })
    }
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}
