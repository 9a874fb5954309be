//! The OpenAI chat-completions wire format, spoken by three kinds of key:
//!
//! - `openai`: `POST {endpoint}/chat/completions`, `Authorization: Bearer`, default endpoint
//!   `https://api.openai.com/v1`;
//! - `openai_compatible` (vLLM, Ollama, llama.cpp, Novita, OpenRouter...): the same at a required
//!   `endpoint`;
//! - `azure`: the same body at a deployment's URL with an `api-key` header (see `azure.rs`).
//!
//! An endpoint that already ends in `/chat/completions` (as the original service stored it) is
//! used as is.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{
    Completion, CompletionRequest, Provider, ProviderError, azure, missing_config, parse_body,
    secret_header, send,
};
use crate::domain::{ProviderKey, ProviderKind, Usage};

/// Default base URL.
pub const DEFAULT_ENDPOINT: &str = "https://api.openai.com/v1";

/// Which server the OpenAI wire format goes to: decides the URL and how the key is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    OpenAi,
    Compatible,
    Azure,
}

/// A provider speaking the OpenAI chat-completions API: OpenAI itself, an OpenAI-compatible
/// server, or Azure OpenAI.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    http: reqwest::Client,
    flavor: Flavor,
}

impl OpenAiProvider {
    /// OpenAI (`openai`), around a shared HTTP client.
    pub fn new(http: reqwest::Client) -> Self {
        Self {
            http,
            flavor: Flavor::OpenAi,
        }
    }

    /// Any OpenAI-compatible server (`openai_compatible`): `endpoint` is required.
    pub fn compatible(http: reqwest::Client) -> Self {
        Self {
            http,
            flavor: Flavor::Compatible,
        }
    }

    /// Azure OpenAI (`azure`): `endpoint` and `api_version` are required.
    pub fn azure(http: reqwest::Client) -> Self {
        Self {
            http,
            flavor: Flavor::Azure,
        }
    }

    /// The URL and the authenticated request for `key`.
    fn request(&self, key: &ProviderKey) -> Result<reqwest::RequestBuilder, ProviderError> {
        let secret = key.api_key.expose();
        let (url, header, value) = match self.flavor {
            Flavor::OpenAi => (
                url(key.config.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT)),
                reqwest::header::AUTHORIZATION.as_str(),
                format!("Bearer {secret}"),
            ),
            Flavor::Compatible => {
                let endpoint =
                    key.config.endpoint.as_deref().ok_or_else(|| {
                        missing_config(ProviderKind::OpenAiCompatible, "endpoint")
                    })?;
                (
                    url(endpoint),
                    reqwest::header::AUTHORIZATION.as_str(),
                    format!("Bearer {secret}"),
                )
            }
            Flavor::Azure => (
                azure::chat_url(&key.config)?.into(),
                azure::KEY_HEADER,
                secret.to_owned(),
            ),
        };
        Ok(self.http.post(url).header(header, secret_header(&value)?))
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    /// Absent for Azure: the deployment in the URL chooses the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
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
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireChoiceMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireChoiceMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
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
fn url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/chat/completions") {
        base.to_owned()
    } else {
        format!("{base}/chat/completions")
    }
}

/// The request body.
fn wire_request<'a>(req: &'a CompletionRequest, with_model: bool) -> WireRequest<'a> {
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
    WireRequest {
        model: with_model.then_some(req.model.as_str()),
        messages,
        temperature: req.temperature,
        max_tokens: req.max_tokens,
        response_format: req.json.then_some(WireFormat {
            kind: "json_object",
        }),
    }
}

/// The answer's text, model and usage.
fn completion(wire: WireResponse, req: &CompletionRequest) -> Result<Completion, ProviderError> {
    let choice = wire
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| ProviderError::Transient("provider answered no choices".into()))?;
    if let Some(refusal) = choice.message.refusal.filter(|r| !r.trim().is_empty()) {
        return Err(ProviderError::Rejected(format!(
            "the model refused: {refusal}"
        )));
    }
    let content = match (choice.message.content, choice.finish_reason.as_deref()) {
        (c, Some("content_filter")) if c.as_deref().is_none_or(str::is_empty) => {
            return Err(ProviderError::Rejected(
                "the provider's content filter withheld the answer".into(),
            ));
        }
        (Some(c), _) => c,
        (None, _) => {
            return Err(ProviderError::Transient(
                "provider answered no content".into(),
            ));
        }
    };
    Ok(Completion {
        text: content,
        model: wire.model.unwrap_or_else(|| req.model.clone()),
        usage: wire.usage.map(|u| Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
        }),
        pause_for: None,
    })
}

#[async_trait]
impl Provider for OpenAiProvider {
    async fn complete(
        &self,
        key: &ProviderKey,
        req: &CompletionRequest,
    ) -> Result<Completion, ProviderError> {
        let body = wire_request(req, self.flavor != Flavor::Azure);
        let answer = send(self.request(key)?.json(&body), key).await?;
        let pause_for = answer.pause_for();
        let wire: WireResponse = parse_body(&answer.body)?;
        Ok(Completion {
            pause_for,
            ..completion(wire, req)?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: bool) -> CompletionRequest {
        CompletionRequest {
            model: "gpt-4o".into(),
            system: Some("Be brief.".into()),
            user: "Hi".into(),
            json,
            temperature: Some(0.2),
            max_tokens: Some(64),
        }
    }

    #[test]
    fn url_appends_the_path_unless_already_there() {
        assert_eq!(
            url(DEFAULT_ENDPOINT),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(url("http://h/v1/"), "http://h/v1/chat/completions");
        assert_eq!(
            url("http://h/v1/chat/completions"),
            "http://h/v1/chat/completions"
        );
    }

    #[test]
    fn the_body_has_system_then_user_and_json_mode_when_asked() {
        let v = serde_json::to_value(wire_request(&req(true), true)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "model": "gpt-4o",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"}
                ],
                "temperature": 0.2,
                "max_tokens": 64,
                "response_format": {"type": "json_object"}
            })
        );
        let v = serde_json::to_value(wire_request(&req(false), false)).unwrap();
        assert!(
            v.get("model").is_none(),
            "Azure: the deployment names the model"
        );
        assert!(v.get("response_format").is_none());
    }

    #[test]
    fn an_answer_maps_text_model_and_usage() {
        let wire: WireResponse = serde_json::from_str(
            r#"{"id":"x","object":"chat.completion","model":"gpt-4o-2024-08-06",
                "choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],
                "usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#,
        )
        .unwrap();
        let c = completion(wire, &req(false)).unwrap();
        assert_eq!(c.text, "Hello");
        assert_eq!(c.model, "gpt-4o-2024-08-06");
        assert_eq!(
            c.usage,
            Some(Usage {
                prompt_tokens: 5,
                completion_tokens: 1,
                total_tokens: 6
            })
        );
    }

    #[test]
    fn a_filtered_or_refused_answer_is_rejected_not_retried() {
        let filtered: WireResponse = serde_json::from_str(
            r#"{"choices":[{"index":0,"message":{"role":"assistant","content":null},"finish_reason":"content_filter"}]}"#,
        )
        .unwrap();
        assert!(matches!(
            completion(filtered, &req(false)),
            Err(ProviderError::Rejected(_))
        ));
        let refused: WireResponse = serde_json::from_str(
            r#"{"choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":"I can't help with that."},"finish_reason":"stop"}]}"#,
        )
        .unwrap();
        assert_eq!(
            completion(refused, &req(false)),
            Err(ProviderError::Rejected(
                "the model refused: I can't help with that.".into()
            ))
        );
        let empty: WireResponse = serde_json::from_str(r#"{"choices":[]}"#).unwrap();
        assert!(matches!(
            completion(empty, &req(false)),
            Err(ProviderError::Transient(_))
        ));
    }
}
