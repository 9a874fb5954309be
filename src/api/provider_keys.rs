//! `/provider-keys/`, `/provider-key/add`, `/provider-key/delete/{key_id}`,
//! `/provider-key/update/{key_id}`, and the key DTOs shared with workspace registration.

use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use super::error::ApiError;
use super::types::{Period, Text};
use crate::domain::{
    ApiKey, KeyConfig, KeyUpdate, NewProviderKey, ProviderKey, ProviderKind, RateLimit,
    WorkspaceId, parse_token_limit,
};
use crate::engine::Engine;
use crate::error::Error;

/// Call settings of a key.
#[derive(Debug, Clone, Object)]
pub struct KeyConfigDto {
    /// The model this key serves, and the default model of its messages (e.g. `gpt-4`).
    pub model: Text,
    /// The provider's base URL (e.g. `https://api.openai.com/v1`, `https://RESOURCE.openai.azure.com`,
    /// `https://api.anthropic.com`); required for `azure` and `openai_compatible`; lets self-hosted
    /// servers and tests point elsewhere.
    pub endpoint: Option<Text>,
    /// API version: Azure's `api-version` (required for `azure`), Anthropic's `anthropic-version`
    /// header (default `2023-06-01`).
    pub api_version: Option<Text>,
    /// Azure deployment name (default: `model`).
    pub deployment: Option<Text>,
    /// Sampling temperature (0 to 2).
    pub temperature: Option<f64>,
    /// Maximum tokens to generate.
    pub max_tokens: Option<i64>,
    /// Timeout of one provider call, in seconds (default 120).
    pub timeout_s: Option<f64>,
}

impl TryFrom<KeyConfigDto> for KeyConfig {
    type Error = Error;
    fn try_from(d: KeyConfigDto) -> Result<Self, Error> {
        let max_tokens = d
            .max_tokens
            .map(|m| {
                u32::try_from(m)
                    .ok()
                    .filter(|m| *m >= 1)
                    .ok_or_else(|| Error::Validation("config.max_tokens must be >= 1".into()))
            })
            .transpose()?;
        KeyConfig {
            model: d.model.into_inner(),
            endpoint: d.endpoint.map(Text::into_inner),
            api_version: d.api_version.map(Text::into_inner),
            deployment: d.deployment.map(Text::into_inner),
            temperature: d.temperature,
            max_tokens,
            timeout_s: d.timeout_s,
        }
        .validate()
    }
}

impl From<&KeyConfig> for KeyConfigDto {
    fn from(c: &KeyConfig) -> Self {
        Self {
            model: Text(c.model.clone()),
            endpoint: c.endpoint.clone().map(Text),
            api_version: c.api_version.clone().map(Text),
            deployment: c.deployment.clone().map(Text),
            temperature: c.temperature,
            max_tokens: c.max_tokens.map(i64::from),
            timeout_s: c.timeout_s,
        }
    }
}

/// A provider key to create (in `providers` of a registration).
#[derive(Debug, Clone, Object)]
pub struct ProviderInput {
    /// Provider: `openai`, `azure` (alias `azure_openai`), `anthropic`, `openai_compatible`
    /// (alias `novita`) or `mock`.
    pub name: Text,
    /// The provider API key (never returned; shown masked).
    pub api_key: Text,
    /// Requests allowed in any window of `rate_limit_period` (>= 1).
    pub rate_limit: i64,
    /// Window length: integer seconds, or `"second"`, `"minute"`, `"hour"`, `"day"`.
    pub rate_limit_period: Period,
    /// Tokens allowed in any window of `rate_limit_period` (>= 1; absent or null: not limited).
    /// Each request reserves the bytes of its text / 4 (rounded up) plus `config.max_tokens`
    /// (default 256; Anthropic 1024) when it is granted; the provider's reported usage replaces
    /// the reservation after the call.
    pub token_limit: Option<i64>,
    /// Call settings; `model` is required.
    pub config: KeyConfigDto,
}

impl TryFrom<ProviderInput> for NewProviderKey {
    type Error = Error;
    fn try_from(d: ProviderInput) -> Result<Self, Error> {
        NewProviderKey {
            provider: ProviderKind::parse(d.name.as_str())?,
            api_key: ApiKey::parse(d.api_key.as_str())?,
            rate_limit: RateLimit::new(d.rate_limit, d.rate_limit_period.parse()?)?,
            token_limit: d.token_limit.map(parse_token_limit).transpose()?,
            config: d.config.try_into()?,
        }
        .validate()
    }
}

/// A provider key as returned (the secret masked).
#[derive(Debug, Clone, Object)]
pub struct KeyDto {
    /// Server-made id.
    pub key_id: Uuid,
    /// Owning workspace.
    pub workspace_id: String,
    /// Provider name (canonical: `openai`, `azure`, `anthropic`, `openai_compatible` or `mock`).
    pub name: String,
    /// The secret, masked: `****` and at most its last 4 characters.
    pub api_key: String,
    /// Requests allowed per period.
    pub rate_limit: i64,
    /// The period, in seconds.
    pub rate_limit_period: i64,
    /// Tokens allowed per period (null: not limited).
    pub token_limit: Option<i64>,
    /// Call settings.
    pub config: KeyConfigDto,
    /// False once the provider rejected the key (401/403), until it is updated.
    pub healthy: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last update.
    pub updated_at: DateTime<Utc>,
}

impl From<&ProviderKey> for KeyDto {
    fn from(k: &ProviderKey) -> Self {
        Self {
            key_id: k.id,
            workspace_id: k.workspace_id.to_string(),
            name: k.provider.as_str().into(),
            api_key: k.api_key.masked(),
            rate_limit: i64::from(k.rate_limit.requests),
            rate_limit_period: k.rate_limit.period.seconds() as i64,
            token_limit: k.token_limit.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
            config: KeyConfigDto::from(&k.config),
            healthy: k.healthy,
            created_at: k.created_at,
            updated_at: k.updated_at,
        }
    }
}

/// `POST /provider-key/add`.
#[derive(Debug, Clone, Object)]
pub struct AddKeyRequest {
    /// The workspace to add the key to.
    pub workspace_id: Text,
    /// Provider: `openai`, `azure` (alias `azure_openai`), `anthropic`, `openai_compatible`
    /// (alias `novita`) or `mock`.
    pub name: Text,
    /// The provider API key.
    pub api_key: Text,
    /// Requests allowed in any window of `rate_limit_period` (>= 1).
    pub rate_limit: i64,
    /// Window length: integer seconds, or `"second"`, `"minute"`, `"hour"`, `"day"`.
    pub rate_limit_period: Period,
    /// Tokens allowed in any window of `rate_limit_period` (>= 1; absent or null: not limited).
    pub token_limit: Option<i64>,
    /// Call settings; `model` is required.
    pub config: KeyConfigDto,
}

/// `PUT /provider-key/update/{key_id}`: every field optional; absent fields stay.
#[derive(Debug, Clone, Object)]
pub struct UpdateKeyRequest {
    /// New provider name (`openai`, `azure`, `anthropic`, `openai_compatible`, `mock`, or an alias).
    pub name: Option<Text>,
    /// New secret.
    pub api_key: Option<Text>,
    /// New request limit (>= 1); applies at once.
    pub rate_limit: Option<i64>,
    /// New period: integer seconds or a unit name; applies at once.
    pub rate_limit_period: Option<Period>,
    /// New token limit per period (>= 1); `null` removes it (tokens no longer limited); absent
    /// keeps it. Applies at once.
    pub token_limit: MaybeUndefined<i64>,
    /// New call settings (replace the old ones).
    pub config: Option<KeyConfigDto>,
}

impl TryFrom<UpdateKeyRequest> for KeyUpdate {
    type Error = Error;
    fn try_from(d: UpdateKeyRequest) -> Result<Self, Error> {
        let update = KeyUpdate {
            provider: d
                .name
                .as_ref()
                .map(|n| ProviderKind::parse(n.as_str()))
                .transpose()?,
            api_key: d
                .api_key
                .as_ref()
                .map(|k| ApiKey::parse(k.as_str()))
                .transpose()?,
            rate_limit: d.rate_limit,
            rate_limit_period: d
                .rate_limit_period
                .as_ref()
                .map(Period::parse)
                .transpose()?,
            token_limit: match d.token_limit {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(t) => Some(Some(t)),
            },
            config: d.config.map(KeyConfig::try_from).transpose()?,
        };
        Ok(update)
    }
}

/// A list of keys.
#[derive(Debug, Object)]
pub struct KeyListResponse {
    /// True.
    pub success: bool,
    /// The keys, oldest first.
    pub provider_keys: Vec<KeyDto>,
}

/// One key after a change.
#[derive(Debug, Object)]
pub struct KeyResponse {
    /// True.
    pub success: bool,
    /// What happened.
    pub message: String,
    /// The key's id.
    pub key_id: Uuid,
    /// The key.
    pub provider_key: KeyDto,
}

/// A deletion.
#[derive(Debug, Object)]
pub struct DeletedResponse {
    /// True.
    pub success: bool,
    /// What was deleted.
    pub message: String,
}

#[derive(ApiResponse)]
pub enum AddKeyResponse {
    /// The key was added and takes traffic at once.
    #[oai(status = 201)]
    Created(Json<KeyResponse>),
}

pub struct ProviderKeysApi(pub Option<Engine>);

impl ProviderKeysApi {
    fn engine(&self) -> Result<&Engine, ApiError> {
        self.0
            .as_ref()
            .ok_or_else(|| Error::Unavailable("no engine".into()).into())
    }
}

/// Parses an optional `workspace_id` filter.
pub(super) fn workspace_filter(q: Option<String>) -> Result<Option<WorkspaceId>, ApiError> {
    Ok(q.as_deref().map(WorkspaceId::parse).transpose()?)
}

#[OpenApi(tag = "ApiTags::ProviderKeys")]
impl ProviderKeysApi {
    /// List provider keys (optionally of one workspace); secrets are masked.
    #[oai(path = "/provider-keys/", method = "get")]
    async fn list(
        &self,
        /// Only this workspace's keys.
        workspace_id: Query<Option<String>>,
    ) -> Result<Json<KeyListResponse>, ApiError> {
        let filter = workspace_filter(workspace_id.0)?;
        let keys = self.engine()?.list_keys(filter.as_ref()).await?;
        Ok(Json(KeyListResponse {
            success: true,
            provider_keys: keys.iter().map(KeyDto::from).collect(),
        }))
    }

    /// Add a provider key to a workspace.
    #[oai(path = "/provider-key/add", method = "post")]
    async fn add(&self, body: Json<AddKeyRequest>) -> Result<AddKeyResponse, ApiError> {
        let b = body.0;
        let workspace = WorkspaceId::parse(b.workspace_id.as_str())?;
        let new = NewProviderKey::try_from(ProviderInput {
            name: b.name,
            api_key: b.api_key,
            rate_limit: b.rate_limit,
            rate_limit_period: b.rate_limit_period,
            token_limit: b.token_limit,
            config: b.config,
        })?;
        let key = self.engine()?.add_key(&workspace, new).await?;
        Ok(AddKeyResponse::Created(Json(KeyResponse {
            success: true,
            message: "provider key added".into(),
            key_id: key.id,
            provider_key: KeyDto::from(&key),
        })))
    }

    /// Delete a provider key; messages waiting on it move to the workspace's other keys.
    #[oai(path = "/provider-key/delete/:key_id", method = "delete")]
    async fn delete(&self, key_id: Path<Uuid>) -> Result<Json<DeletedResponse>, ApiError> {
        self.engine()?.delete_key(key_id.0).await?;
        Ok(Json(DeletedResponse {
            success: true,
            message: format!("provider key '{}' deleted", key_id.0),
        }))
    }

    /// Update a provider key; a new limit applies at once, and the key is healthy again.
    #[oai(path = "/provider-key/update/:key_id", method = "put")]
    async fn update(
        &self,
        key_id: Path<Uuid>,
        body: Json<UpdateKeyRequest>,
    ) -> Result<Json<KeyResponse>, ApiError> {
        let update = KeyUpdate::try_from(body.0)?;
        let key = self.engine()?.update_key(key_id.0, update).await?;
        Ok(Json(KeyResponse {
            success: true,
            message: "provider key updated".into(),
            key_id: key.id,
            provider_key: KeyDto::from(&key),
        }))
    }
}
