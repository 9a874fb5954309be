//! Workers: the consumer actors of a workspace, as reported to clients.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What a worker is doing right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Waiting for a message.
    Idle,
    /// Processing a message (waiting for a permit or for the provider).
    Busy,
    /// Scaled down: finishing its current message, then it stops.
    Stopping,
}

impl WorkerState {
    /// Lower-case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Stopping => "stopping",
        }
    }
}

/// A snapshot of one worker.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerInfo {
    /// Worker number, unique within its workspace for the life of the engine.
    pub id: u64,
    /// Its state.
    pub state: WorkerState,
    /// Messages it has finished (success or failed).
    pub processed: u64,
    /// The message it is working on, if any.
    pub current_message: Option<Uuid>,
    /// When it started.
    pub started_at: DateTime<Utc>,
}
