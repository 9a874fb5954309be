//! `anthropic`: the Anthropic Messages API, `POST {endpoint}/v1/messages` with `x-api-key` and
//! `anthropic-version` headers; default endpoint `https://api.anthropic.com`.
//!
//! The system prompt goes in the top-level `system` field; `max_tokens`, which the API requires,
//! defaults to [`DEFAULT_MAX_TOKENS`]; `config.api_version` overrides the `anthropic-version`
//! header ([`DEFAULT_VERSION`]). The API has no JSON mode: a JSON request appends
//! [`JSON_INSTRUCTION`] to the system prompt, and the answer is parsed as for every provider.
//! Usage: `input_tokens` (plus cache reads and writes) -> `prompt_tokens`, `output_tokens` ->
//! `completion_tokens`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{
    Completion, CompletionRequest, Provider, ProviderError, parse_body, secret_header, send,
};
use crate::domain::{ProviderKey, Usage};

/// Default base URL.
pub const DEFAULT_ENDPOINT: &str = "https://api.anthropic.com";
/// Default `anthropic-version` header.
pub const DEFAULT_VERSION: &str = "2023-06-01";
/// `max_tokens` when the key's config sets none (the API requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 1024;
/// Appended to the system prompt when a JSON answer is asked for.
pub const JSON_INSTRUCTION: &str =
    "Answer only with one valid JSON object: no text before or after it, no Markdown code fence.";

/// The Anthropic provider.
#[derive(Debug, Clone)]
pub struct AnthropicProvider {
    http: reqwest::Client,
}

impl AnthropicProvider {
    /// Around a shared HTTP client.
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: [WireMessage<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Vec<WireBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

/// `{endpoint}/v1/messages`; an endpoint already ending in `/v1` or `/v1/messages` is completed
/// or kept.
fn url(endpoint: Option<&str>) -> String {
    let base = endpoint.unwrap_or(DEFAULT_ENDPOINT).trim_end_matches('/');
    if base.ends_with("/v1/messages") {
        base.to_owned()
    } else if base.ends_with("/v1") {
        format!("{base}/messages")
    } else {
        format!("{base}/v1/messages")
    }
}

fn wire_request(req: &CompletionRequest) -> WireRequest<'_> {
    let system = match (req.system.as_deref(), req.json) {
        (Some(s), true) => Some(format!("{s}\n\n{JSON_INSTRUCTION}")),
        (None, true) => Some(JSON_INSTRUCTION.to_owned()),
        (s, false) => s.map(str::to_owned),
    };
    WireRequest {
        model: &req.model,
        max_tokens: req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        system,
        messages: [WireMessage {
            role: "user",
            content: &req.user,
        }],
        temperature: req.temperature,
    }
}

fn completion(wire: WireResponse, req: &CompletionRequest) -> Result<Completion, ProviderError> {
    let text: String = wire
        .content
        .iter()
        .filter(|b| b.kind == "text")
        .filter_map(|b| b.text.as_deref())
        .collect();
    if text.is_empty() {
        return Err(match wire.stop_reason.as_deref() {
            Some("refusal") => ProviderError::Rejected("the model refused to answer".into()),
            _ => ProviderError::Transient("provider answered no text".into()),
        });
    }
    Ok(Completion {
        text,
        model: wire.model.unwrap_or_else(|| req.model.clone()),
        usage: wire.usage.map(|u| {
            let prompt = u.input_tokens
                + u.cache_creation_input_tokens.unwrap_or(0)
                + u.cache_read_input_tokens.unwrap_or(0);
            Usage {
                prompt_tokens: prompt,
                completion_tokens: u.output_tokens,
                total_tokens: prompt + u.output_tokens,
            }
        }),
        pause_for: None,
    })
}

#[async_trait]
impl Provider for AnthropicProvider {
    async fn complete(
        &self,
        key: &ProviderKey,
        req: &CompletionRequest,
    ) -> Result<Completion, ProviderError> {
        let version = key.config.api_version.as_deref().unwrap_or(DEFAULT_VERSION);
        let request = self
            .http
            .post(url(key.config.endpoint.as_deref()))
            .header("x-api-key", secret_header(key.api_key.expose())?)
            .header("anthropic-version", version)
            .json(&wire_request(req));
        let answer = send(request, key).await?;
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

    fn req(system: Option<&str>, json: bool, max_tokens: Option<u32>) -> CompletionRequest {
        CompletionRequest {
            model: "claude-sonnet-4-5".into(),
            system: system.map(str::to_owned),
            user: "Hi".into(),
            json,
            temperature: None,
            max_tokens,
        }
    }

    #[test]
    fn url_appends_the_path_unless_already_there() {
        assert_eq!(url(None), "https://api.anthropic.com/v1/messages");
        assert_eq!(url(Some("http://h:1/")), "http://h:1/v1/messages");
        assert_eq!(url(Some("http://h:1/v1")), "http://h:1/v1/messages");
        assert_eq!(
            url(Some("http://h:1/v1/messages")),
            "http://h:1/v1/messages"
        );
    }

    #[test]
    fn system_is_top_level_max_tokens_defaulted_and_json_is_an_instruction() {
        let v = serde_json::to_value(wire_request(&req(Some("Be brief."), false, None))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": DEFAULT_MAX_TOKENS,
                "system": "Be brief.",
                "messages": [{"role": "user", "content": "Hi"}]
            })
        );
        let v =
            serde_json::to_value(wire_request(&req(Some("Be brief."), true, Some(50)))).unwrap();
        assert_eq!(v["system"], format!("Be brief.\n\n{JSON_INSTRUCTION}"));
        assert_eq!(v["max_tokens"], 50);
        let v = serde_json::to_value(wire_request(&req(None, true, None))).unwrap();
        assert_eq!(v["system"], JSON_INSTRUCTION);
        let v = serde_json::to_value(wire_request(&req(None, false, None))).unwrap();
        assert!(v.get("system").is_none());
    }

    #[test]
    fn an_answer_maps_text_blocks_and_usage() {
        let wire: WireResponse = serde_json::from_str(
            r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",
                "content":[{"type":"text","text":"Hello"},{"type":"text","text":" there"}],
                "stop_reason":"end_turn","stop_sequence":null,
                "usage":{"input_tokens":10,"cache_creation_input_tokens":2,"cache_read_input_tokens":3,"output_tokens":4}}"#,
        )
        .unwrap();
        let c = completion(wire, &req(None, false, None)).unwrap();
        assert_eq!(c.text, "Hello there");
        assert_eq!(c.model, "claude-sonnet-4-5-20250929");
        assert_eq!(
            c.usage,
            Some(Usage {
                prompt_tokens: 15,
                completion_tokens: 4,
                total_tokens: 19
            })
        );
    }

    #[test]
    fn an_answer_without_text_is_retried_unless_refused() {
        let empty: WireResponse =
            serde_json::from_str(r#"{"content":[],"stop_reason":"end_turn"}"#).unwrap();
        assert!(matches!(
            completion(empty, &req(None, false, None)),
            Err(ProviderError::Transient(_))
        ));
        let refused: WireResponse =
            serde_json::from_str(r#"{"content":[],"stop_reason":"refusal"}"#).unwrap();
        assert!(matches!(
            completion(refused, &req(None, false, None)),
            Err(ProviderError::Rejected(_))
        ));
    }
}
