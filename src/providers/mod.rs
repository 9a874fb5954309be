//! Providers: how one prompt becomes one HTTP call to an LLM API, and how its answer and its
//! failures are classified.
//!
//! Each provider has its own private wire structs and maps them to [`Completion`] /
//! [`ProviderError`]. The classification drives the consumer's policy: a 429 cools the key down
//! and is not an attempt; 401/403 marks the key unhealthy; 5xx (Anthropic's 529 included),
//! connect errors and timeouts are retried with backoff; any other 4xx fails the message at once.
//!
//! | kind | file | wire |
//! | ---- | ---- | ---- |
//! | `openai` | `openai.rs` | chat completions, `Authorization: Bearer` |
//! | `openai_compatible` | `openai.rs` | the same, at a required `endpoint` |
//! | `azure` | `azure.rs` (URL, `api-key`) + `openai.rs` (body) | chat completions of a deployment |
//! | `anthropic` | `anthropic.rs` | Messages API, `x-api-key` + `anthropic-version` |
//! | `mock` | `mock.rs` | none |
//!
//! Rate-limit headers (`Retry-After`, OpenAI's `x-ratelimit-*`, Anthropic's
//! `anthropic-ratelimit-*`) are read in `rate_headers.rs`: they give a 429 its cool-down and a
//! success that used up the key's limit a pause ([`Completion::pause_for`]).

mod anthropic;
mod azure;
mod mock;
mod openai;
mod rate_headers;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{ApiKey, ProviderKey, ProviderKind, Usage};

pub use anthropic::AnthropicProvider;
pub(crate) use anthropic::DEFAULT_MAX_TOKENS as ANTHROPIC_DEFAULT_MAX_TOKENS;
pub use mock::MockProvider;
pub use openai::OpenAiProvider;
pub use rate_headers::{parse_reset_duration, parse_reset_timestamp, parse_retry_after};

/// What is sent to the provider.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    /// The model to ask.
    pub model: String,
    /// The system message, if any.
    pub system: Option<String>,
    /// The one user message.
    pub user: String,
    /// Ask for a JSON object.
    pub json: bool,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Maximum tokens to generate.
    pub max_tokens: Option<u32>,
}

/// What the provider answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The answer's text.
    pub text: String,
    /// The model that answered.
    pub model: String,
    /// Token usage, if reported.
    pub usage: Option<Usage>,
    /// The provider said the key has no request (or token) left until this long from now: the
    /// key pauses that long, so the next request does not earn a 429.
    pub pause_for: Option<Duration>,
}

/// Why a call did not produce a completion.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// 429: the key must cool down (until `retry_after` when the provider said).
    #[error("rate limited by the provider: {message}")]
    RateLimited {
        /// How long the provider asked us to wait.
        retry_after: Option<Duration>,
        /// The provider's message.
        message: String,
    },
    /// 401/403: the key is not accepted.
    #[error("provider rejected the key: {0}")]
    Unauthorized(String),
    /// 5xx, connection error, timeout: worth retrying.
    #[error("{0}")]
    Transient(String),
    /// Any other 4xx (bad request, context too long...): retrying will not help.
    #[error("{0}")]
    Rejected(String),
}

/// One LLM API.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Sends one request with `key`.
    async fn complete(
        &self,
        key: &ProviderKey,
        req: &CompletionRequest,
    ) -> Result<Completion, ProviderError>;
}

/// The provider implementations, sharing one HTTP client (connection pool).
#[derive(Clone)]
pub struct Providers {
    openai: Arc<OpenAiProvider>,
    azure: Arc<OpenAiProvider>,
    compatible: Arc<OpenAiProvider>,
    anthropic: Arc<AnthropicProvider>,
    mock: Arc<MockProvider>,
}

impl Providers {
    /// Builds every provider around one HTTP client.
    pub fn new(http: reqwest::Client) -> Self {
        Self {
            openai: Arc::new(OpenAiProvider::new(http.clone())),
            azure: Arc::new(OpenAiProvider::azure(http.clone())),
            compatible: Arc::new(OpenAiProvider::compatible(http.clone())),
            anthropic: Arc::new(AnthropicProvider::new(http)),
            mock: Arc::new(MockProvider),
        }
    }

    /// The implementation for a kind.
    pub fn get(&self, kind: ProviderKind) -> Arc<dyn Provider> {
        match kind {
            ProviderKind::OpenAi => self.openai.clone(),
            ProviderKind::Azure => self.azure.clone(),
            ProviderKind::OpenAiCompatible => self.compatible.clone(),
            ProviderKind::Anthropic => self.anthropic.clone(),
            ProviderKind::Mock => self.mock.clone(),
        }
    }
}

/// The default HTTP client for providers.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("ai-rate-limiter/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// Classifies a non-success HTTP status with the provider's message and headers.
pub(crate) fn classify_status(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &str,
) -> ProviderError {
    let message = error_message(body, status);
    match status.as_u16() {
        429 => ProviderError::RateLimited {
            retry_after: rate_headers::cooldown_after_429(headers, std::time::SystemTime::now()),
            message,
        },
        401 | 403 => ProviderError::Unauthorized(message),
        408 | 409 => ProviderError::Transient(message),
        s if s >= 500 => ProviderError::Transient(message),
        _ => ProviderError::Rejected(message),
    }
}

impl ProviderError {
    /// Replaces the key's secret, should a provider echo it in its message, by its masked form.
    fn redact(self, key: &ApiKey) -> Self {
        let clean = |m: String| {
            if m.contains(key.expose()) {
                m.replace(key.expose(), &key.masked())
            } else {
                m
            }
        };
        match self {
            Self::RateLimited {
                retry_after,
                message,
            } => Self::RateLimited {
                retry_after,
                message: clean(message),
            },
            Self::Unauthorized(m) => Self::Unauthorized(clean(m)),
            Self::Transient(m) => Self::Transient(clean(m)),
            Self::Rejected(m) => Self::Rejected(clean(m)),
        }
    }
}

/// A provider's successful HTTP answer.
pub(crate) struct Answer {
    /// Its headers (rate-limit hints).
    pub headers: reqwest::header::HeaderMap,
    /// Its body.
    pub body: String,
}

impl Answer {
    /// How long the key must pause because the provider said its limit is used up.
    pub fn pause_for(&self) -> Option<Duration> {
        rate_headers::pause_after_success(&self.headers, std::time::SystemTime::now())
    }
}

/// Sends one provider request and reads the answer; a non-success status is classified (with
/// the secret redacted from the provider's message).
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    key: &ProviderKey,
) -> Result<Answer, ProviderError> {
    let resp = request
        .timeout(key.config.timeout())
        .send()
        .await
        .map_err(|e| classify_transport(&e))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.text().await.map_err(|e| classify_transport(&e))?;
    if !status.is_success() {
        return Err(classify_status(status, &headers, &body).redact(&key.api_key));
    }
    Ok(Answer { headers, body })
}

/// A header carrying the key's secret, marked sensitive (kept out of any debug output). A secret
/// no header can carry makes the key unusable: it is reported as refused (the key goes
/// unhealthy until it is updated).
pub(crate) fn secret_header(value: &str) -> Result<reqwest::header::HeaderValue, ProviderError> {
    let mut v = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
        ProviderError::Unauthorized(
            "the key's api_key has characters an HTTP header cannot carry; update the key".into(),
        )
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// A required config field is missing (registration checks it; this guards older rows).
pub(crate) fn missing_config(kind: ProviderKind, field: &str) -> ProviderError {
    ProviderError::Rejected(format!(
        "config.{field} is required for provider '{}'",
        kind.as_str()
    ))
}

/// Parses a provider's success body.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, ProviderError> {
    serde_json::from_str(body)
        .map_err(|e| ProviderError::Transient(format!("provider answered an unreadable body: {e}")))
}

/// The readable part of a provider error body (`{"error": {"message": ...}}` in most APIs).
fn error_message(body: &str, status: reqwest::StatusCode) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let text = parsed
        .as_ref()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.pointer("/message"))
                .or_else(|| v.get("error"))
        })
        .and_then(|m| m.as_str().map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(300).collect());
    if text.trim().is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {}: {}", status.as_u16(), text.trim())
    }
}

/// Classifies a transport error (connect, timeout, broken body).
pub(crate) fn classify_transport(e: &reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Transient("provider call timed out".into())
    } else if e.is_connect() {
        ProviderError::Transient("cannot connect to the provider".into())
    } else {
        ProviderError::Transient(format!("provider call failed: {}", without_url(e)))
    }
}

/// reqwest errors print the URL; ours carry no secrets in URLs, but keep messages short.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "<endpoint>");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        let h = reqwest::header::HeaderMap::new();
        let body = r#"{"error":{"message":"nope"}}"#;
        let c = |s: u16| classify_status(reqwest::StatusCode::from_u16(s).unwrap(), &h, body);
        assert!(matches!(
            c(429),
            ProviderError::RateLimited {
                retry_after: None,
                ..
            }
        ));
        assert_eq!(c(401), ProviderError::Unauthorized("HTTP 401: nope".into()));
        assert!(matches!(c(503), ProviderError::Transient(_)));
        assert!(matches!(c(529), ProviderError::Transient(_)));
        assert!(matches!(c(400), ProviderError::Rejected(_)));
    }

    #[test]
    fn a_429_cools_down_by_retry_after_or_the_reset_headers() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
        h.insert("x-ratelimit-reset-requests", "6m0s".parse().unwrap());
        let e = classify_status(reqwest::StatusCode::TOO_MANY_REQUESTS, &h, "{}");
        assert!(matches!(
            e,
            ProviderError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(360)
        ));
        h.insert("retry-after", "2".parse().unwrap());
        let e = classify_status(reqwest::StatusCode::TOO_MANY_REQUESTS, &h, "{}");
        assert!(matches!(
            e,
            ProviderError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(2)
        ));
    }

    #[test]
    fn each_providers_error_body_gives_its_message() {
        let msg = |status: u16, body: &str| {
            error_message(body, reqwest::StatusCode::from_u16(status).unwrap())
        };
        // OpenAI
        assert_eq!(
            msg(
                400,
                r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#
            ),
            "HTTP 400: This model's maximum context length is 8192 tokens."
        );
        // Azure OpenAI
        assert_eq!(
            msg(
                404,
                r#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}"#
            ),
            "HTTP 404: The API deployment for this resource does not exist."
        );
        // Anthropic
        assert_eq!(
            msg(
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            "HTTP 529: Overloaded"
        );
        // vLLM and other compatible servers
        assert_eq!(
            msg(
                400,
                r#"{"object":"error","message":"max_tokens is too large","type":"BadRequestError","param":null,"code":400}"#
            ),
            "HTTP 400: max_tokens is too large"
        );
        // Ollama
        assert_eq!(
            msg(404, r#"{"error":"model \"llama9\" not found"}"#),
            "HTTP 404: model \"llama9\" not found"
        );
        // A proxy's page, and nothing at all
        assert_eq!(msg(502, "Bad gateway"), "HTTP 502: Bad gateway");
        assert_eq!(msg(503, ""), "HTTP 503 Service Unavailable");
    }

    #[test]
    fn a_secret_echoed_by_the_provider_is_masked() {
        let key = ApiKey::parse("sk-live-0123456789abcdef").unwrap();
        let e = ProviderError::Unauthorized(
            "Incorrect API key provided: sk-live-0123456789abcdef".into(),
        )
        .redact(&key);
        assert_eq!(
            e,
            ProviderError::Unauthorized("Incorrect API key provided: ****cdef".into())
        );
    }
}
