//! Provider keys: one API key at one provider, with its own rate limit and call settings.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::WorkspaceId;
use crate::error::{Error, Result};

/// Which provider API a key talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// The OpenAI chat-completions API.
    OpenAi,
    /// Azure OpenAI: a deployment of a resource (`endpoint`, `api_version` required).
    Azure,
    /// The Anthropic Messages API.
    Anthropic,
    /// Any server speaking the OpenAI chat-completions API (vLLM, Ollama, Novita...; `endpoint`
    /// required).
    OpenAiCompatible,
    /// A built-in provider that needs no network and echoes the prompt (demos and tests).
    Mock,
}

impl ProviderKind {
    /// Every provider name accepted at registration (aliases included).
    pub const NAMES: &'static [&'static str] = &[
        "openai",
        "azure",
        "azure_openai",
        "anthropic",
        "openai_compatible",
        "novita",
        "mock",
    ];

    /// Parses a provider name (case-insensitive); an alias maps to its canonical kind
    /// (`azure_openai` is `azure`, `novita` is `openai_compatible`).
    pub fn parse(name: &str) -> Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "openai" => Ok(Self::OpenAi),
            "azure" | "azure_openai" => Ok(Self::Azure),
            "anthropic" => Ok(Self::Anthropic),
            "openai_compatible" | "novita" => Ok(Self::OpenAiCompatible),
            "mock" => Ok(Self::Mock),
            _ => Err(Error::Validation(format!(
                "unknown provider '{name}'; expected one of: {}",
                Self::NAMES.join(", ")
            ))),
        }
    }

    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Azure => "azure",
            Self::Anthropic => "anthropic",
            Self::OpenAiCompatible => "openai_compatible",
            Self::Mock => "mock",
        }
    }

    /// Checks what this provider needs of a (valid) config: Azure needs `endpoint` and
    /// `api_version`, an OpenAI-compatible server needs `endpoint`, Anthropic takes a
    /// temperature of at most 1.
    pub fn check_config(self, config: &KeyConfig) -> Result<()> {
        let name = self.as_str();
        let missing = |field: &str| {
            Err(Error::Validation(format!(
                "config.{field} is required for provider '{name}'"
            )))
        };
        match self {
            Self::Azure => {
                if config.endpoint.is_none() {
                    return missing("endpoint");
                }
                if config.api_version.is_none() {
                    return missing("api_version");
                }
            }
            Self::OpenAiCompatible => {
                if config.endpoint.is_none() {
                    return missing("endpoint");
                }
            }
            Self::Anthropic => {
                if config.temperature.is_some_and(|t| t > 1.0) {
                    return Err(Error::Validation(
                        "config.temperature must be between 0 and 1 for provider 'anthropic'"
                            .into(),
                    ));
                }
            }
            Self::OpenAi | Self::Mock => {}
        }
        Ok(())
    }
}

/// The period of a rate limit, in whole seconds (>= 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatePeriod(u64);

impl RatePeriod {
    /// The longest accepted period (one week).
    pub const MAX_SECS: u64 = 7 * 24 * 3600;

    /// From a number of seconds.
    pub fn from_seconds(secs: i64) -> Result<Self> {
        if secs < 1 || secs as u64 > Self::MAX_SECS {
            return Err(Error::Validation(format!(
                "rate_limit_period must be between 1 and {} seconds",
                Self::MAX_SECS
            )));
        }
        Ok(Self(secs as u64))
    }

    /// From a unit name: `second`, `minute`, `hour` or `day` (as the original service's clients send).
    pub fn from_name(name: &str) -> Result<Self> {
        let secs = match name.trim().to_ascii_lowercase().as_str() {
            "second" | "sec" | "s" => 1,
            "minute" | "min" | "m" => 60,
            "hour" | "h" => 3600,
            "day" | "d" => 86400,
            other => {
                return Err(Error::Validation(format!(
                    "rate_limit_period '{other}' is not a number of seconds nor one of second, minute, hour, day"
                )));
            }
        };
        Ok(Self(secs))
    }

    /// The period in seconds.
    pub fn seconds(self) -> u64 {
        self.0
    }

    /// The period as a duration.
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

/// A request rate limit: at most `requests` in any `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed in any window of `period` (>= 1).
    pub requests: u32,
    /// The window length.
    pub period: RatePeriod,
}

impl RateLimit {
    /// Validates a limit.
    pub fn new(requests: i64, period: RatePeriod) -> Result<Self> {
        if requests < 1 || requests > i64::from(u32::MAX) {
            return Err(Error::Validation(
                "rate_limit must be an integer of at least 1".into(),
            ));
        }
        Ok(Self {
            requests: requests as u32,
            period,
        })
    }
}

/// Validates a token limit (tokens per `rate_limit_period`): at least 1, and at most
/// `i64::MAX` so that every backend can store it.
pub fn parse_token_limit(tokens: i64) -> Result<u64> {
    u64::try_from(tokens)
        .ok()
        .filter(|t| *t >= 1)
        .ok_or_else(|| Error::Validation("token_limit must be an integer of at least 1".into()))
}

/// Checks an already typed token limit (see [`parse_token_limit`]).
fn check_token_limit(limit: Option<u64>) -> Result<()> {
    match limit {
        Some(t) => parse_token_limit(i64::try_from(t).unwrap_or(-1)).map(|_| ()),
        None => Ok(()),
    }
}

/// A provider API key. Its `Debug` output is masked, so it cannot leak through logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Validates a key (non-empty, no surrounding whitespace is kept).
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() {
            return Err(Error::Validation("api_key must not be empty".into()));
        }
        if s.len() > 4096 {
            return Err(Error::Validation("api_key is too long".into()));
        }
        Ok(Self(s.to_owned()))
    }

    /// The secret itself: only for building the outbound request and for storage.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The key for display: `****` plus at most its last 4 characters (none for short keys).
    pub fn masked(&self) -> String {
        let chars: Vec<char> = self.0.chars().collect();
        if chars.len() < 12 {
            return "****".into();
        }
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("****{tail}")
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({})", self.masked())
    }
}

/// Per-key call settings (`config` in the API).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeyConfig {
    /// The model this key serves (and the default model of its messages).
    pub model: String,
    /// The provider's base URL, e.g. `https://api.openai.com/v1`.
    pub endpoint: Option<String>,
    /// API version: Azure's `api-version` query parameter, Anthropic's `anthropic-version` header.
    pub api_version: Option<String>,
    /// Azure deployment name (defaults to `model`).
    pub deployment: Option<String>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Maximum tokens to generate.
    pub max_tokens: Option<u32>,
    /// Timeout of one provider call, in seconds.
    pub timeout_s: Option<f64>,
}

impl KeyConfig {
    /// Default timeout of one provider call.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

    /// Validates a config.
    pub fn validate(self) -> Result<Self> {
        if self.model.trim().is_empty() {
            return Err(Error::Validation("config.model must not be empty".into()));
        }
        if let Some(ep) = &self.endpoint {
            let ok = reqwest::Url::parse(ep)
                .map(|u| matches!(u.scheme(), "http" | "https"))
                .unwrap_or(false);
            if !ok {
                return Err(Error::Validation(format!(
                    "config.endpoint '{ep}' is not an http(s) URL"
                )));
            }
        }
        for (field, value) in [
            ("api_version", &self.api_version),
            ("deployment", &self.deployment),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(Error::Validation(format!(
                    "config.{field} must not be empty when given"
                )));
            }
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(Error::Validation(
                "config.temperature must be between 0 and 2".into(),
            ));
        }
        if self.max_tokens == Some(0) {
            return Err(Error::Validation("config.max_tokens must be >= 1".into()));
        }
        if let Some(t) = self.timeout_s
            && !(t > 0.0 && t <= 3600.0)
        {
            return Err(Error::Validation(
                "config.timeout_s must be > 0 and <= 3600".into(),
            ));
        }
        Ok(self)
    }

    /// The timeout of one provider call.
    pub fn timeout(&self) -> Duration {
        self.timeout_s
            .map(Duration::from_secs_f64)
            .unwrap_or(Self::DEFAULT_TIMEOUT)
    }

    /// The Azure deployment: `deployment`, else `model`.
    pub fn deployment(&self) -> &str {
        self.deployment.as_deref().unwrap_or(&self.model)
    }
}

/// A stored provider key.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderKey {
    /// Server-made id.
    pub id: Uuid,
    /// Owning workspace.
    pub workspace_id: WorkspaceId,
    /// Which provider API.
    pub provider: ProviderKind,
    /// The secret.
    pub api_key: ApiKey,
    /// Its request limit.
    pub rate_limit: RateLimit,
    /// Tokens allowed in any window of the rate limit's period (`None`: tokens are not limited).
    /// Each request reserves an estimate when it is granted (prompt bytes / 4 plus the key's
    /// completion allowance), reconciled with the provider's reported usage afterwards.
    pub token_limit: Option<u64>,
    /// Call settings.
    pub config: KeyConfig,
    /// False once the provider rejected the key (401/403) until the key is updated.
    pub healthy: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last update time.
    pub updated_at: DateTime<Utc>,
}

/// A key to add to a workspace.
#[derive(Debug, Clone)]
pub struct NewProviderKey {
    /// Which provider API.
    pub provider: ProviderKind,
    /// The secret.
    pub api_key: ApiKey,
    /// Its request limit.
    pub rate_limit: RateLimit,
    /// Its token limit per period, if any (`>= 1`).
    pub token_limit: Option<u64>,
    /// Call settings.
    pub config: KeyConfig,
}

impl NewProviderKey {
    /// Checks that the config carries what the provider needs (e.g. Azure's `endpoint` and
    /// `api_version`) and that a token limit is at least 1. The API runs it on every key it
    /// accepts; embedders should too.
    pub fn validate(self) -> Result<Self> {
        self.provider.check_config(&self.config)?;
        check_token_limit(self.token_limit)?;
        Ok(self)
    }

    /// Makes the stored key, with a fresh id.
    pub fn into_key(self, workspace_id: WorkspaceId, now: DateTime<Utc>) -> ProviderKey {
        ProviderKey {
            id: Uuid::new_v4(),
            workspace_id,
            provider: self.provider,
            api_key: self.api_key,
            rate_limit: self.rate_limit,
            token_limit: self.token_limit,
            config: self.config,
            healthy: true,
            created_at: now,
            updated_at: now,
        }
    }
}

/// A partial update of a key (`PUT /provider-key/update/{key_id}`): absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct KeyUpdate {
    /// New provider.
    pub provider: Option<ProviderKind>,
    /// New secret.
    pub api_key: Option<ApiKey>,
    /// New request count (validated together with the period).
    pub rate_limit: Option<i64>,
    /// New period.
    pub rate_limit_period: Option<RatePeriod>,
    /// New token limit: `None` keeps it, `Some(None)` removes it (tokens no longer limited),
    /// `Some(Some(n))` sets it (validated: `n >= 1`).
    pub token_limit: Option<Option<i64>>,
    /// New config (replaces the whole config).
    pub config: Option<KeyConfig>,
}

impl KeyUpdate {
    /// Applies the update to `key`, validating the result (including what its provider needs of
    /// its config). Any update marks the key healthy again.
    pub fn apply(self, mut key: ProviderKey, now: DateTime<Utc>) -> Result<ProviderKey> {
        if let Some(p) = self.provider {
            key.provider = p;
        }
        if let Some(k) = self.api_key {
            key.api_key = k;
        }
        let requests = self
            .rate_limit
            .unwrap_or(i64::from(key.rate_limit.requests));
        let period = self.rate_limit_period.unwrap_or(key.rate_limit.period);
        key.rate_limit = RateLimit::new(requests, period)?;
        if let Some(limit) = self.token_limit {
            key.token_limit = limit.map(parse_token_limit).transpose()?;
        }
        if let Some(c) = self.config {
            key.config = c.validate()?;
        }
        key.provider.check_config(&key.config)?;
        key.healthy = true;
        key.updated_at = now;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_is_masked_to_its_last_four_characters() {
        let k = ApiKey::parse("sk-test-1234567890abcd").unwrap();
        assert_eq!(k.masked(), "****abcd");
        assert!(!format!("{k:?}").contains("1234567890"));
        assert_eq!(ApiKey::parse("short").unwrap().masked(), "****");
        assert!(ApiKey::parse("  ").is_err());
    }

    #[test]
    fn periods_accept_seconds_and_unit_names() {
        assert_eq!(RatePeriod::from_seconds(60).unwrap().seconds(), 60);
        assert_eq!(RatePeriod::from_name("minute").unwrap().seconds(), 60);
        assert_eq!(RatePeriod::from_name("Hour").unwrap().seconds(), 3600);
        assert_eq!(RatePeriod::from_name("day").unwrap().seconds(), 86400);
        assert!(RatePeriod::from_seconds(0).is_err());
        assert!(RatePeriod::from_name("fortnight").is_err());
    }

    #[test]
    fn rate_limit_must_be_positive() {
        let p = RatePeriod::from_seconds(1).unwrap();
        assert!(RateLimit::new(0, p).is_err());
        assert!(RateLimit::new(-5, p).is_err());
        assert_eq!(RateLimit::new(3, p).unwrap().requests, 3);
    }

    #[test]
    fn config_checks_model_endpoint_and_ranges() {
        let ok = KeyConfig {
            model: "gpt-4".into(),
            endpoint: Some("http://127.0.0.1:9/v1".into()),
            ..Default::default()
        };
        assert!(ok.clone().validate().is_ok());
        assert!(
            KeyConfig {
                model: " ".into(),
                ..ok.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            KeyConfig {
                endpoint: Some("ftp://x".into()),
                ..ok.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            KeyConfig {
                temperature: Some(3.0),
                ..ok.clone()
            }
            .validate()
            .is_err()
        );
        assert!(
            KeyConfig {
                timeout_s: Some(0.0),
                ..ok
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn provider_names_are_case_insensitive_and_unknown_ones_rejected() {
        assert_eq!(ProviderKind::parse("OpenAI").unwrap(), ProviderKind::OpenAi);
        assert_eq!(ProviderKind::parse("mock").unwrap(), ProviderKind::Mock);
        assert!(ProviderKind::parse("gemini").is_err());
    }

    #[test]
    fn aliases_map_to_their_canonical_kind_and_every_name_parses() {
        assert_eq!(
            ProviderKind::parse("azure_openai").unwrap(),
            ProviderKind::Azure
        );
        assert_eq!(
            ProviderKind::parse("Novita").unwrap(),
            ProviderKind::OpenAiCompatible
        );
        for name in ProviderKind::NAMES {
            let kind = ProviderKind::parse(name).unwrap();
            assert_eq!(ProviderKind::parse(kind.as_str()).unwrap(), kind);
        }
        assert_eq!(ProviderKind::Azure.as_str(), "azure");
        assert_eq!(ProviderKind::OpenAiCompatible.as_str(), "openai_compatible");
    }

    fn new_key(provider: ProviderKind, config: KeyConfig) -> NewProviderKey {
        NewProviderKey {
            provider,
            api_key: ApiKey::parse("sk-test-1234567890abcd").unwrap(),
            rate_limit: RateLimit::new(1, RatePeriod::from_seconds(1).unwrap()).unwrap(),
            token_limit: None,
            config,
        }
    }

    #[test]
    fn azure_needs_endpoint_and_api_version_and_compatible_needs_endpoint() {
        let bare = KeyConfig {
            model: "gpt-4o".into(),
            ..Default::default()
        };
        let with_endpoint = KeyConfig {
            endpoint: Some("https://res.openai.azure.com".into()),
            ..bare.clone()
        };
        let full = KeyConfig {
            api_version: Some("2024-10-21".into()),
            ..with_endpoint.clone()
        };
        let az = ProviderKind::Azure;
        assert!(new_key(az, bare.clone()).validate().is_err());
        let e = new_key(az, with_endpoint.clone()).validate().unwrap_err();
        assert!(e.to_string().contains("api_version"), "{e}");
        assert!(new_key(az, full.clone()).validate().is_ok());
        let compat = ProviderKind::OpenAiCompatible;
        let e = new_key(compat, bare.clone()).validate().unwrap_err();
        assert!(e.to_string().contains("endpoint"), "{e}");
        assert!(new_key(compat, with_endpoint).validate().is_ok());
        assert!(
            new_key(ProviderKind::OpenAi, bare.clone())
                .validate()
                .is_ok()
        );
        assert!(
            new_key(ProviderKind::Anthropic, bare.clone())
                .validate()
                .is_ok()
        );
        let hot = KeyConfig {
            temperature: Some(1.5),
            ..bare
        };
        assert!(
            new_key(ProviderKind::Anthropic, hot.clone())
                .validate()
                .is_err()
        );
        assert!(new_key(ProviderKind::OpenAi, hot).validate().is_ok());
        assert_eq!(full.deployment(), "gpt-4o");
    }

    #[test]
    fn an_update_is_checked_against_the_provider_it_leaves() {
        let key = new_key(
            ProviderKind::OpenAi,
            KeyConfig {
                model: "gpt-4o".into(),
                ..Default::default()
            },
        )
        .into_key(WorkspaceId::parse("ws").unwrap(), Utc::now());
        let to_azure = KeyUpdate {
            provider: Some(ProviderKind::Azure),
            ..Default::default()
        };
        assert!(to_azure.apply(key.clone(), Utc::now()).is_err());
        let to_azure_with_config = KeyUpdate {
            provider: Some(ProviderKind::Azure),
            config: Some(KeyConfig {
                model: "gpt-4o".into(),
                endpoint: Some("https://res.openai.azure.com".into()),
                api_version: Some("2024-10-21".into()),
                deployment: Some("prod-4o".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let k = to_azure_with_config.apply(key, Utc::now()).unwrap();
        assert_eq!(k.provider, ProviderKind::Azure);
        assert_eq!(k.config.deployment(), "prod-4o");
    }

    #[test]
    fn a_token_limit_is_at_least_one_and_may_be_set_changed_or_cleared() {
        assert_eq!(parse_token_limit(1).unwrap(), 1);
        assert_eq!(parse_token_limit(i64::MAX).unwrap(), i64::MAX as u64);
        assert!(parse_token_limit(0).is_err());
        assert!(parse_token_limit(-3).is_err());
        let config = KeyConfig {
            model: "m".into(),
            ..Default::default()
        };
        let mut new = new_key(ProviderKind::OpenAi, config);
        assert!(new.clone().validate().is_ok());
        new.token_limit = Some(0);
        assert!(new.clone().validate().is_err());
        new.token_limit = Some(u64::MAX);
        assert!(new.clone().validate().is_err());
        new.token_limit = Some(1000);
        let key = new
            .validate()
            .unwrap()
            .into_key(WorkspaceId::parse("ws").unwrap(), Utc::now());
        assert_eq!(key.token_limit, Some(1000));

        let update = |token_limit| KeyUpdate {
            token_limit,
            ..Default::default()
        };
        let kept = update(None).apply(key.clone(), Utc::now()).unwrap();
        assert_eq!(kept.token_limit, Some(1000));
        let changed = update(Some(Some(5)))
            .apply(key.clone(), Utc::now())
            .unwrap();
        assert_eq!(changed.token_limit, Some(5));
        let cleared = update(Some(None)).apply(key.clone(), Utc::now()).unwrap();
        assert_eq!(cleared.token_limit, None);
        assert!(
            update(Some(Some(0)))
                .apply(key.clone(), Utc::now())
                .is_err()
        );
        assert!(update(Some(Some(-1))).apply(key, Utc::now()).is_err());
    }

    #[test]
    fn empty_api_version_or_deployment_is_rejected() {
        let c = KeyConfig {
            model: "m".into(),
            deployment: Some(" ".into()),
            ..Default::default()
        };
        assert!(c.validate().is_err());
    }
}
