//! `/workspaces/`, `/workspace/register`, `/workspace/delete/{id}`.

use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use super::error::ApiError;
use super::provider_keys::{DeletedResponse, KeyDto, ProviderInput, workspace_filter};
use super::types::Text;
use crate::domain::{NewProviderKey, NewWorkspace, WorkspaceId};
use crate::engine::{Engine, WorkspaceView};
use crate::error::{Error, Result};

/// `POST /workspace/register`.
#[derive(Debug, Clone, Object)]
pub struct RegisterRequest {
    /// 1 to 128 characters from `[A-Za-z0-9._:-]` (a UUID in practice).
    pub workspace_id: Text,
    /// Provider keys to create with it.
    #[oai(default)]
    pub providers: Vec<ProviderInput>,
}

impl TryFrom<RegisterRequest> for NewWorkspace {
    type Error = Error;
    fn try_from(r: RegisterRequest) -> Result<Self> {
        Ok(NewWorkspace {
            id: WorkspaceId::parse(r.workspace_id.as_str())?,
            providers: r
                .providers
                .into_iter()
                .enumerate()
                .map(|(i, p)| {
                    NewProviderKey::try_from(p).map_err(|e| match e {
                        Error::Validation(m) => Error::Validation(format!("providers[{i}]: {m}")),
                        other => other,
                    })
                })
                .collect::<Result<_>>()?,
        })
    }
}

/// A workspace with its keys.
#[derive(Debug, Clone, Object)]
pub struct WorkspaceDto {
    /// Its id.
    pub workspace_id: String,
    /// Target number of workers.
    pub worker_count: u32,
    /// Registration time.
    pub created_at: DateTime<Utc>,
    /// Its keys (secrets masked).
    pub provider_keys: Vec<KeyDto>,
}

impl From<&WorkspaceView> for WorkspaceDto {
    fn from(v: &WorkspaceView) -> Self {
        Self {
            workspace_id: v.workspace.id.to_string(),
            worker_count: v.workspace.worker_count,
            created_at: v.workspace.created_at,
            provider_keys: v.keys.iter().map(KeyDto::from).collect(),
        }
    }
}

/// A registered workspace.
#[derive(Debug, Object)]
pub struct WorkspaceResponse {
    /// True.
    pub success: bool,
    /// What happened.
    pub message: String,
    /// The workspace.
    pub workspace: WorkspaceDto,
}

/// A list of workspaces.
#[derive(Debug, Object)]
pub struct WorkspaceListResponse {
    /// True.
    pub success: bool,
    /// The workspaces, oldest first.
    pub workspaces: Vec<WorkspaceDto>,
}

#[derive(ApiResponse)]
pub enum RegisterResponse {
    /// Registered, with one worker running.
    #[oai(status = 201)]
    Created(Json<WorkspaceResponse>),
}

pub struct WorkspacesApi(pub Option<Engine>);

impl WorkspacesApi {
    fn engine(&self) -> Result<&Engine, ApiError> {
        self.0
            .as_ref()
            .ok_or_else(|| Error::Unavailable("no engine".into()).into())
    }
}

#[OpenApi(tag = "ApiTags::Workspaces")]
impl WorkspacesApi {
    /// List workspaces with their provider keys (optionally only one).
    #[oai(path = "/workspaces/", method = "get")]
    async fn list(
        &self,
        /// Only this workspace.
        workspace_id: Query<Option<String>>,
    ) -> Result<Json<WorkspaceListResponse>, ApiError> {
        let filter = workspace_filter(workspace_id.0)?;
        let views = self.engine()?.list_workspaces(filter.as_ref()).await?;
        Ok(Json(WorkspaceListResponse {
            success: true,
            workspaces: views.iter().map(WorkspaceDto::from).collect(),
        }))
    }

    /// Register a workspace and its provider keys; it starts with one worker.
    #[oai(path = "/workspace/register", method = "post")]
    async fn register(&self, body: Json<RegisterRequest>) -> Result<RegisterResponse, ApiError> {
        let new = NewWorkspace::try_from(body.0)?;
        let view = self.engine()?.register_workspace(new).await?;
        Ok(RegisterResponse::Created(Json(WorkspaceResponse {
            success: true,
            message: format!("workspace '{}' registered", view.workspace.id),
            workspace: WorkspaceDto::from(&view),
        })))
    }

    /// Delete a workspace with its keys, workers, queue and messages.
    #[oai(path = "/workspace/delete/:id", method = "delete")]
    async fn delete(&self, id: Path<String>) -> Result<Json<DeletedResponse>, ApiError> {
        let id = WorkspaceId::parse(&id.0)?;
        self.engine()?.delete_workspace(&id).await?;
        Ok(Json(DeletedResponse {
            success: true,
            message: format!("workspace '{id}' deleted"),
        }))
    }
}
