//! `openai`: the OpenAI chat-completions API (`POST {endpoint}/chat/completions`, bearer key).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{
    Completion, CompletionRequest, Provider, ProviderError, classify_status, classify_transport,
};
use crate::domain::{ProviderKey, Usage};

/// Default base URL.
pub const DEFAULT_ENDPOINT: &str = "https://api.openai.com/v1";

/// The OpenAI provider.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    http: reqwest::Client,
}

impl OpenAiProvider {
    /// Around a shared HTTP client.
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<WireFormat>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct WireFormat {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    model: Option<String>,
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireChoiceMessage,
}

#[derive(Deserialize)]
struct WireChoiceMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
}

/// `{endpoint}/chat/completions`, accepting an endpoint that already names the full path.
fn url(endpoint: Option<&str>) -> String {
    let base = endpoint.unwrap_or(DEFAULT_ENDPOINT).trim_end_matches('/');
    if base.ends_with("/chat/completions") {
        base.to_owned()
    } else {
        format!("{base}/chat/completions")
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    async fn complete(
        &self,
        key: &ProviderKey,
        req: &CompletionRequest,
    ) -> Result<Completion, ProviderError> {
        let mut messages = Vec::with_capacity(2);
        if let Some(system) = req.system.as_deref() {
            messages.push(WireMessage {
                role: "system",
                content: system,
            });
        }
        messages.push(WireMessage {
            role: "user",
            content: &req.user,
        });
        let body = WireRequest {
            model: &req.model,
            messages,
            temperature: req.temperature,
            max_tokens: req.max_tokens,
            response_format: req.json.then_some(WireFormat {
                kind: "json_object",
            }),
        };
        let resp = self
            .http
            .post(url(key.config.endpoint.as_deref()))
            .bearer_auth(key.api_key.expose())
            .timeout(key.config.timeout())
            .json(&body)
            .send()
            .await
            .map_err(|e| classify_transport(&e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.map_err(|e| classify_transport(&e))?;
        if !status.is_success() {
            return Err(classify_status(status, &headers, &text));
        }
        let wire: WireResponse = serde_json::from_str(&text).map_err(|e| {
            ProviderError::Transient(format!("provider answered an unreadable body: {e}"))
        })?;
        let content = wire
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .ok_or_else(|| ProviderError::Transient("provider answered no choices".into()))?;
        Ok(Completion {
            text: content,
            model: wire.model.unwrap_or_else(|| req.model.clone()),
            usage: wire.usage.map(|u| Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                total_tokens: u.total_tokens,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn url_appends_the_path_unless_already_there() {
        assert_eq!(url(None), "https://api.openai.com/v1/chat/completions");
        assert_eq!(url(Some("http://h/v1/")), "http://h/v1/chat/completions");
        assert_eq!(
            url(Some("http://h/v1/chat/completions")),
            "http://h/v1/chat/completions"
        );
    }
}
