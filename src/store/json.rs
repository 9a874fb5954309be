//! Shapes of the JSON columns (`provider_keys.config`, `messages.result`), shared by backends.

use serde::{Deserialize, Serialize};

use crate::domain::{KeyConfig, MessageResult, Usage};

/// `provider_keys.config`.
#[derive(Debug, Serialize, Deserialize, Default)]
pub(super) struct ConfigJson {
    model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    api_version: Option<String>,
    /// Added with Azure support: rows written before it have none (hence the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deployment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_s: Option<f64>,
}

impl From<&KeyConfig> for ConfigJson {
    fn from(c: &KeyConfig) -> Self {
        Self {
            model: c.model.clone(),
            endpoint: c.endpoint.clone(),
            api_version: c.api_version.clone(),
            deployment: c.deployment.clone(),
            temperature: c.temperature,
            max_tokens: c.max_tokens,
            timeout_s: c.timeout_s,
        }
    }
}

impl From<ConfigJson> for KeyConfig {
    fn from(c: ConfigJson) -> Self {
        Self {
            model: c.model,
            endpoint: c.endpoint,
            api_version: c.api_version,
            deployment: c.deployment,
            temperature: c.temperature,
            max_tokens: c.max_tokens,
            timeout_s: c.timeout_s,
        }
    }
}

/// `messages.result`.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ResultJson {
    text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    json: Option<serde_json::Value>,
    model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    usage: Option<UsageJson>,
}

#[derive(Debug, Serialize, Deserialize)]
struct UsageJson {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl From<&MessageResult> for ResultJson {
    fn from(r: &MessageResult) -> Self {
        Self {
            text: r.text.clone(),
            json: r.json.clone(),
            model: r.model.clone(),
            usage: r.usage.map(|u| UsageJson {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                total_tokens: u.total_tokens,
            }),
        }
    }
}

impl From<ResultJson> for MessageResult {
    fn from(r: ResultJson) -> Self {
        Self {
            text: r.text,
            json: r.json,
            model: r.model,
            usage: r.usage.map(|u| Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                total_tokens: u.total_tokens,
            }),
        }
    }
}

/// Encodes a JSON column.
pub(super) fn encode<T: Serialize>(v: &T) -> crate::error::Result<String> {
    serde_json::to_string(v)
        .map_err(|e| crate::error::Error::Internal(format!("cannot encode JSON column: {e}")))
}

/// Decodes a JSON column.
pub(super) fn decode<T: for<'de> Deserialize<'de>>(s: &str) -> crate::error::Result<T> {
    serde_json::from_str(s)
        .map_err(|e| crate::error::Error::Storage(format!("corrupt JSON column: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_row_written_before_deployment_existed_still_parses() {
        let old = r#"{"model":"gpt-4","endpoint":"https://api.openai.com/v1","timeout_s":30.0}"#;
        let c = KeyConfig::from(decode::<ConfigJson>(old).unwrap());
        assert_eq!(c.model, "gpt-4");
        assert_eq!(c.deployment, None);
    }

    #[test]
    fn deployment_round_trips_and_is_omitted_when_unset() {
        let c = KeyConfig {
            model: "gpt-4o".into(),
            deployment: Some("prod".into()),
            ..Default::default()
        };
        let s = encode(&ConfigJson::from(&c)).unwrap();
        assert!(s.contains(r#""deployment":"prod""#), "{s}");
        assert_eq!(KeyConfig::from(decode::<ConfigJson>(&s).unwrap()), c);
        let s = encode(&ConfigJson::from(&KeyConfig {
            deployment: None,
            ..c
        }))
        .unwrap();
        assert!(!s.contains("deployment"), "{s}");
    }
}
