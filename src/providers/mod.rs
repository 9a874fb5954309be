//! Providers: how one prompt becomes one HTTP call to an LLM API, and how its answer and its
//! failures are classified.
//!
//! Each provider has its own private wire structs and maps them to [`Completion`] /
//! [`ProviderError`]. The classification drives the consumer's policy: a 429 cools the key down
//! and is not an attempt; 401/403 marks the key unhealthy; 5xx, connect errors and timeouts are
//! retried with backoff; any other 4xx fails the message at once.

mod mock;
mod openai;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{ProviderKey, ProviderKind, Usage};

pub use mock::MockProvider;
pub use openai::OpenAiProvider;

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
    mock: Arc<MockProvider>,
}

impl Providers {
    /// Builds every provider around one HTTP client.
    pub fn new(http: reqwest::Client) -> Self {
        Self {
            openai: Arc::new(OpenAiProvider::new(http)),
            mock: Arc::new(MockProvider),
        }
    }

    /// The implementation for a kind.
    pub fn get(&self, kind: ProviderKind) -> Arc<dyn Provider> {
        match kind {
            ProviderKind::OpenAi => self.openai.clone(),
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

/// Parses a `Retry-After` header: delta-seconds (possibly fractional) or an HTTP date.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(86400.0)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
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
            retry_after: headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, std::time::SystemTime::now())),
            message,
        },
        401 | 403 => ProviderError::Unauthorized(message),
        408 | 409 => ProviderError::Transient(message),
        s if s >= 500 => ProviderError::Transient(message),
        _ => ProviderError::Rejected(message),
    }
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
    use std::time::SystemTime;

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("0.5", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

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
        assert!(matches!(c(400), ProviderError::Rejected(_)));
    }
}
