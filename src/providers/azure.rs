//! `azure` (alias `azure_openai`): Azure OpenAI. What differs from OpenAI lives here: the URL of
//! a deployment, `POST {endpoint}/openai/deployments/{deployment}/chat/completions
//! ?api-version={api_version}`, and the key sent in an `api-key` header. The body and the answer
//! are the OpenAI chat-completions ones (`openai.rs`, built with [`OpenAiProvider::azure`]).
//!
//! `config.deployment` defaults to `config.model`; `endpoint` and `api_version` are required
//! (checked at registration). An endpoint that already ends in `/chat/completions` is used as is
//! (with `api-version` added when it has none).
//!
//! [`OpenAiProvider::azure`]: super::OpenAiProvider::azure

use super::{ProviderError, missing_config};
use crate::domain::{KeyConfig, ProviderKind};

/// The header carrying the key.
pub(super) const KEY_HEADER: &str = "api-key";

/// The chat-completions URL of the key's deployment.
pub(super) fn chat_url(config: &KeyConfig) -> Result<reqwest::Url, ProviderError> {
    let endpoint = config
        .endpoint
        .as_deref()
        .ok_or_else(|| missing_config(ProviderKind::Azure, "endpoint"))?;
    let api_version = config
        .api_version
        .as_deref()
        .ok_or_else(|| missing_config(ProviderKind::Azure, "api_version"))?;
    let invalid = || ProviderError::Rejected(format!("config.endpoint '{endpoint}' is not a URL"));
    let mut url = reqwest::Url::parse(endpoint).map_err(|_| invalid())?;
    if !url
        .path()
        .trim_end_matches('/')
        .ends_with("/chat/completions")
    {
        url.path_segments_mut()
            .map_err(|_| invalid())?
            .pop_if_empty()
            .extend([
                "openai",
                "deployments",
                config.deployment(),
                "chat",
                "completions",
            ]);
    }
    if !url.query_pairs().any(|(k, _)| k == "api-version") {
        url.query_pairs_mut()
            .append_pair("api-version", api_version);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: &str, deployment: Option<&str>) -> KeyConfig {
        KeyConfig {
            model: "gpt-4o".into(),
            endpoint: Some(endpoint.into()),
            api_version: Some("2024-10-21".into()),
            deployment: deployment.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn the_url_names_the_deployment_and_the_api_version() {
        let u = chat_url(&config("https://res.openai.azure.com", None)).unwrap();
        assert_eq!(
            u.as_str(),
            "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
        );
        let u = chat_url(&config("https://res.openai.azure.com/", Some("prod-4o"))).unwrap();
        assert_eq!(
            u.as_str(),
            "https://res.openai.azure.com/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21"
        );
    }

    #[test]
    fn a_deployment_name_cannot_escape_its_path_segment() {
        let u = chat_url(&config("https://res.openai.azure.com", Some("a/b?c#d"))).unwrap();
        assert_eq!(
            u.path(),
            "/openai/deployments/a%2Fb%3Fc%23d/chat/completions"
        );
        assert_eq!(u.query(), Some("api-version=2024-10-21"));
    }

    #[test]
    fn a_full_url_is_kept() {
        let full = "https://res.openai.azure.com/openai/deployments/x/chat/completions?api-version=2024-02-01";
        assert_eq!(chat_url(&config(full, None)).unwrap().as_str(), full);
        let no_version = "https://res.openai.azure.com/openai/deployments/x/chat/completions";
        assert_eq!(
            chat_url(&config(no_version, None)).unwrap().as_str(),
            format!("{no_version}?api-version=2024-10-21")
        );
    }

    #[test]
    fn missing_fields_are_rejected_not_retried() {
        let mut c = config("https://res.openai.azure.com", None);
        c.api_version = None;
        assert!(
            matches!(chat_url(&c), Err(ProviderError::Rejected(m)) if m.contains("api_version"))
        );
        c.endpoint = None;
        assert!(matches!(chat_url(&c), Err(ProviderError::Rejected(m)) if m.contains("endpoint")));
    }
}
