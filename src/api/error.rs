//! The one error shape of the API: `{"success": false, "code": "...", "message": "..."}`.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

use crate::error::Error;

/// Body of every error response.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct ErrorBody {
    /// Always false.
    pub success: bool,
    /// Machine-readable code (`invalid_request`, `validation_error`, `not_found`, `conflict`...).
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

impl ErrorBody {
    fn new(code: &str, message: impl Into<String>) -> Json<Self> {
        Json(Self {
            success: false,
            code: code.into(),
            message: message.into(),
        })
    }
}

/// Every error an operation can answer with.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// Malformed request: bad JSON, a missing field, a wrong type, a malformed id.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// The workspace, key or message does not exist.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// Already exists (duplicate `workspace_id`).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// Well-formed but not acceptable (`rate_limit < 1`, unknown provider, no key for the model).
    #[oai(status = 422)]
    Unprocessable(Json<ErrorBody>),
    /// A backend failed.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// Shutting down, or a backend is unreachable.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let body = ErrorBody::new(e.code(), e.to_string());
        match e.status_code() {
            404 => Self::NotFound(body),
            409 => Self::Conflict(body),
            422 => Self::Unprocessable(body),
            503 => Self::Unavailable(body),
            400 => Self::BadRequest(body),
            _ => Self::Internal(body),
        }
    }
}

impl ApiError {
    /// A 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(ErrorBody::new("invalid_request", message))
    }
}

/// Turns anything poem rejected before a handler ran (parse errors, unknown paths, wrong
/// methods, panics) into the JSON error shape, keeping its status; responses our handlers
/// built pass through untouched.
pub(crate) async fn json_errors(err: poem::Error) -> Response {
    if err.is_from_response() {
        return err.into_response();
    }
    let status = err.status();
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal_error",
        _ => "invalid_request",
    };
    let message = if status == StatusCode::NOT_FOUND {
        "no such path".to_owned()
    } else if status.is_server_error() {
        tracing::error!(error = %err, "request failed");
        "internal error".to_owned()
    } else {
        err.to_string()
    };
    ErrorBody::new(code, message)
        .with_status(status)
        .into_response()
}
