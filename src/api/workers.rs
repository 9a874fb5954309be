//! `/workers/scale/{workspace_id}`, `/workers/{workspace_id}`.

use chrono::{DateTime, Utc};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use super::error::ApiError;
use crate::domain::{WorkerInfo, WorkerState, WorkspaceId};
use crate::engine::Engine;
use crate::error::Error;

/// `POST /workers/scale/{workspace_id}`.
#[derive(Debug, Clone, Object)]
pub struct ScaleRequest {
    /// The absolute number of workers wanted (0 to the configured maximum, default 256).
    pub count: i64,
}

/// One worker.
#[derive(Debug, Clone, Object)]
pub struct WorkerDto {
    /// Worker number within the workspace.
    pub worker_id: u64,
    /// `idle`, `busy` or `stopping` (scaled down, finishing its message).
    pub state: String,
    /// Messages it finished.
    pub messages_processed: u64,
    /// The message it is on.
    pub current_message_id: Option<Uuid>,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

impl From<&WorkerInfo> for WorkerDto {
    fn from(w: &WorkerInfo) -> Self {
        Self {
            worker_id: w.id,
            state: w.state.as_str().into(),
            messages_processed: w.processed,
            current_message_id: w.current_message,
            started_at: w.started_at,
        }
    }
}

/// The workers of a workspace.
#[derive(Debug, Object)]
pub struct WorkersResponse {
    /// True.
    pub success: bool,
    /// The workspace.
    pub workspace_id: String,
    /// Workers that are not stopping (the current target).
    pub count: u32,
    /// Every worker, including those finishing their last message.
    pub workers: Vec<WorkerDto>,
}

fn response(ws: &WorkspaceId, workers: &[WorkerInfo]) -> Json<WorkersResponse> {
    Json(WorkersResponse {
        success: true,
        workspace_id: ws.to_string(),
        count: workers
            .iter()
            .filter(|w| w.state != WorkerState::Stopping)
            .count() as u32,
        workers: workers.iter().map(WorkerDto::from).collect(),
    })
}

pub struct WorkersApi(pub Option<Engine>);

impl WorkersApi {
    fn engine(&self) -> Result<&Engine, ApiError> {
        self.0
            .as_ref()
            .ok_or_else(|| Error::Unavailable("no engine".into()).into())
    }
}

#[OpenApi(tag = "ApiTags::Workers")]
impl WorkersApi {
    /// Scale a workspace to `count` workers; busy workers finish their message before stopping.
    #[oai(path = "/workers/scale/:workspace_id", method = "post")]
    async fn scale(
        &self,
        workspace_id: Path<String>,
        body: Json<ScaleRequest>,
    ) -> Result<Json<WorkersResponse>, ApiError> {
        let ws = WorkspaceId::parse(&workspace_id.0)?;
        let engine = self.engine()?;
        let count = u32::try_from(body.0.count)
            .ok()
            .filter(|c| *c <= engine.max_workers())
            .ok_or_else(|| {
                Error::Validation(format!(
                    "count must be between 0 and {}",
                    engine.max_workers()
                ))
            })?;
        let workers = engine.scale_workers(&ws, count).await?;
        Ok(response(&ws, &workers))
    }

    /// List a workspace's workers.
    #[oai(path = "/workers/:workspace_id", method = "get")]
    async fn list(&self, workspace_id: Path<String>) -> Result<Json<WorkersResponse>, ApiError> {
        let ws = WorkspaceId::parse(&workspace_id.0)?;
        let workers = self.engine()?.list_workers(&ws).await?;
        Ok(response(&ws, &workers))
    }
}
