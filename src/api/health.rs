//! `/health`: liveness plus the state of the database and the queue.

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use crate::engine::{BackendHealth, Engine};

/// State of one backend.
#[derive(Debug, Object)]
pub struct BackendDto {
    /// Backend name (`sqlite`, `memory`...).
    pub backend: String,
    /// True when it answers.
    pub ok: bool,
    /// The error, when it does not.
    pub error: Option<String>,
}

impl From<BackendHealth> for BackendDto {
    fn from(b: BackendHealth) -> Self {
        Self {
            backend: b.backend.into(),
            ok: b.error.is_none(),
            error: b.error,
        }
    }
}

/// The service's health.
#[derive(Debug, Object)]
pub struct HealthDto {
    /// True when every backend answers.
    pub success: bool,
    /// `ok` or `degraded`.
    pub status: String,
    /// The database.
    pub database: BackendDto,
    /// The queue.
    pub queue: BackendDto,
    /// Workspaces running.
    pub workspaces: u64,
}

#[derive(ApiResponse)]
pub enum HealthResponse {
    /// Every backend answers.
    #[oai(status = 200)]
    Ok(Json<HealthDto>),
    /// A backend does not answer.
    #[oai(status = 503)]
    Degraded(Json<HealthDto>),
}

pub struct HealthApi(pub Option<Engine>);

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness and backend state.
    #[oai(path = "/health", method = "get")]
    async fn health(&self) -> HealthResponse {
        let Some(engine) = &self.0 else {
            return HealthResponse::Degraded(Json(HealthDto {
                success: false,
                status: "degraded".into(),
                database: BackendDto {
                    backend: "none".into(),
                    ok: false,
                    error: None,
                },
                queue: BackendDto {
                    backend: "none".into(),
                    ok: false,
                    error: None,
                },
                workspaces: 0,
            }));
        };
        let h = engine.health().await;
        let ok = h.ok();
        let dto = HealthDto {
            success: ok,
            status: if ok { "ok" } else { "degraded" }.into(),
            workspaces: h.workspaces as u64,
            database: h.database.into(),
            queue: h.queue.into(),
        };
        if ok {
            HealthResponse::Ok(Json(dto))
        } else {
            HealthResponse::Degraded(Json(dto))
        }
    }
}
