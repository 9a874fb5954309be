//! The one error type of the engine.
//!
//! Every fallible engine operation returns [`Error`]; the HTTP layer maps it to a status
//! with [`Error::status_code`] (each variant is mapped exactly once, here) and to a stable
//! machine-readable [`Error::code`]. Internal details (SQL text, broker errors) are logged
//! where they happen and never leak into a client-facing message beyond a short reason.

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in an engine operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request was well-formed but a value is not acceptable (bad id, `rate_limit < 1`...).
    #[error("{0}")]
    Validation(String),
    /// The request cannot be carried out in the current state (e.g. no key serves the model).
    #[error("{0}")]
    Unprocessable(String),
    /// A workspace, provider key or message does not exist.
    #[error("{kind} '{id}' not found")]
    NotFound {
        /// What was looked up ("workspace", "provider key", "message").
        kind: &'static str,
        /// The id that was asked for.
        id: String,
    },
    /// The resource already exists (duplicate `workspace_id`, message id of another workspace).
    #[error("{0}")]
    Conflict(String),
    /// The engine is shutting down or a backend is not reachable right now.
    #[error("{0}")]
    Unavailable(String),
    /// A storage backend failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// The queue backend failed.
    #[error("queue error: {0}")]
    Queue(String),
    /// An actor could not be reached or a bug was detected.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(kind: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status_code(&self) -> u16 {
        match self {
            Error::Validation(_) => 422,
            Error::Unprocessable(_) => 422,
            Error::NotFound { .. } => 404,
            Error::Conflict(_) => 409,
            Error::Unavailable(_) => 503,
            Error::Storage(_) | Error::Queue(_) | Error::Internal(_) => 500,
        }
    }

    /// A stable, machine-readable code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Validation(_) => "validation_error",
            Error::Unprocessable(_) => "unprocessable",
            Error::NotFound { .. } => "not_found",
            Error::Conflict(_) => "conflict",
            Error::Unavailable(_) => "unavailable",
            Error::Storage(_) => "storage_error",
            Error::Queue(_) => "queue_error",
            Error::Internal(_) => "internal_error",
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "storage operation failed");
        Error::Storage(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Error::Storage(format!("migration failed: {e}"))
    }
}

impl<T> From<ractor::MessagingErr<T>> for Error {
    fn from(e: ractor::MessagingErr<T>) -> Self {
        Error::Internal(format!("actor unreachable: {e}"))
    }
}
