//! Storage: the database is the source of truth for workspaces, keys and messages.
//!
//! One trait per concern ([`WorkspaceStore`], [`ProviderKeyStore`], [`MessageStore`]), bundled
//! as [`Store`] and implemented per backend (`sqlite`, `postgres`). Backends own their row structs and
//! convert rows to domain types at their edge; JSON column shapes shared by backends live in
//! `json`. Nothing here knows about actors or HTTP.

mod json;
mod postgres;
mod sqlite;
mod writer;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use writer::BatchWriter;

use crate::domain::{Message, MessageResult, MessageStatus, ProviderKey, Workspace, WorkspaceId};
use crate::error::Result;

/// Workspaces.
#[async_trait]
pub trait WorkspaceStore: Send + Sync {
    /// Creates a workspace with its keys in one transaction; `Error::Conflict` if the id exists.
    async fn create_workspace(&self, ws: &Workspace, keys: &[ProviderKey]) -> Result<()>;
    /// All workspaces, or the one matching `filter`, ordered by creation.
    async fn list_workspaces(&self, filter: Option<&WorkspaceId>) -> Result<Vec<Workspace>>;
    /// One workspace.
    async fn get_workspace(&self, id: &WorkspaceId) -> Result<Option<Workspace>>;
    /// Deletes a workspace with its keys and messages; false if it did not exist.
    async fn delete_workspace(&self, id: &WorkspaceId) -> Result<bool>;
    /// Stores the target worker count; false if the workspace does not exist.
    async fn set_worker_count(&self, id: &WorkspaceId, count: u32) -> Result<bool>;
}

/// Provider keys.
#[async_trait]
pub trait ProviderKeyStore: Send + Sync {
    /// Inserts a key (its workspace must exist).
    async fn insert_key(&self, key: &ProviderKey) -> Result<()>;
    /// All keys, or those of one workspace, ordered by creation.
    async fn list_keys(&self, workspace: Option<&WorkspaceId>) -> Result<Vec<ProviderKey>>;
    /// One key.
    async fn get_key(&self, id: Uuid) -> Result<Option<ProviderKey>>;
    /// Replaces a key's settings; false if it does not exist.
    async fn update_key(&self, key: &ProviderKey) -> Result<bool>;
    /// Marks a key healthy or not.
    async fn set_key_healthy(&self, id: Uuid, healthy: bool) -> Result<()>;
    /// Deletes a key; false if it did not exist.
    async fn delete_key(&self, id: Uuid) -> Result<bool>;
    /// Records requests about to be sent on keys: `(key_id, when)`, in one transaction.
    async fn record_grants(&self, grants: &[(Uuid, DateTime<Utc>)]) -> Result<()>;
    /// Requests sent on a workspace's keys since `since`, oldest first (restores each key's
    /// sliding window after a restart).
    async fn recent_grants(
        &self,
        workspace: &WorkspaceId,
        since: DateTime<Utc>,
    ) -> Result<Vec<(Uuid, DateTime<Utc>)>>;
    /// Forgets the grants that can no longer count against their key's window (older than its
    /// period); returns how many went.
    async fn prune_grants(&self, now: DateTime<Utc>) -> Result<u64>;
}

/// One page of a workspace's messages.
#[derive(Debug, Clone)]
pub struct MessagePage {
    /// The messages, by `sequence_index` (absent last), then creation, then id.
    pub messages: Vec<Message>,
    /// How many match the filter in all.
    pub total: u64,
}

/// The final state of a processed message.
#[derive(Debug, Clone)]
pub struct Completion {
    /// `Success` or `Failed`.
    pub status: MessageStatus,
    /// The answer (or the raw text of an unparsable JSON answer).
    pub result: Option<MessageResult>,
    /// Why it failed.
    pub error: Option<String>,
    /// Provider calls made.
    pub attempts: u32,
    /// Key of the last call.
    pub key_id: Option<Uuid>,
    /// When.
    pub completed_at: DateTime<Utc>,
}

/// What inserting a message did.
#[derive(Debug, Clone)]
pub enum Inserted {
    /// A new row was written.
    New,
    /// A message with that id already existed; here it is.
    Existing(Box<Message>),
}

/// Messages.
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Inserts a message, or returns the existing one with the same id (idempotent publish).
    async fn insert_message(&self, msg: &Message) -> Result<Inserted>;
    /// One message.
    async fn get_message(&self, id: Uuid) -> Result<Option<Message>>;
    /// Marks a message `processing` (keeping the first `started_at`); false if it is gone or final.
    async fn mark_processing(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool>;
    /// Stores the final state, unless it is already final; false if nothing was written.
    async fn complete_message(&self, id: Uuid, done: &Completion) -> Result<bool>;
    /// Messages that were `pending` or `processing`, oldest first (re-queued at start-up).
    async fn unfinished_messages(&self) -> Result<Vec<(WorkspaceId, Uuid)>>;
    /// Inserts many messages in one transaction (batch publish); per message, as
    /// [`MessageStore::insert_message`].
    async fn insert_messages(&self, msgs: &[Message]) -> Result<Vec<Inserted>>;
    /// Claims messages for processing: every one that is not final is marked `processing`
    /// (keeping its first `started_at`) and returned; final or unknown ids are left out. One
    /// statement for the whole batch: this is the worker's load.
    async fn claim_messages(&self, ids: &[Uuid], at: DateTime<Utc>) -> Result<Vec<Message>>;
    /// Stores many final states in one transaction; per item, whether it was written (a
    /// repeated id counts once, its first completion).
    async fn complete_messages(&self, done: &[(Uuid, Completion)]) -> Result<Vec<bool>>;
    /// A page of a workspace's messages, optionally of one status.
    async fn list_messages(
        &self,
        workspace: &WorkspaceId,
        status: Option<MessageStatus>,
        limit: u32,
        offset: u64,
    ) -> Result<MessagePage>;
}

/// Every storage concern of the engine, on one backend.
#[async_trait]
pub trait Store: WorkspaceStore + ProviderKeyStore + MessageStore {
    /// A cheap round trip, for health checks.
    async fn ping(&self) -> Result<()>;
    /// Name of the backend ("sqlite", "postgres").
    fn backend(&self) -> &'static str;
}

/// Opens the store a database URL names, running its migrations.
pub async fn connect(database_url: &str) -> Result<std::sync::Arc<dyn Store>> {
    if database_url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(
            SqliteStore::connect(database_url).await?,
        ))
    } else if is_postgres_url(database_url) {
        Ok(std::sync::Arc::new(
            PostgresStore::connect(database_url).await?,
        ))
    } else {
        Err(unsupported_scheme(database_url))
    }
}

/// Runs the migrations of the database a URL names, then disconnects.
pub async fn migrate(database_url: &str) -> Result<()> {
    if database_url.starts_with("sqlite:") {
        // Opening a SQLite store runs its migrations.
        SqliteStore::connect(database_url).await.map(drop)
    } else if is_postgres_url(database_url) {
        postgres::migrate(database_url).await
    } else {
        Err(unsupported_scheme(database_url))
    }
}

fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn unsupported_scheme(url: &str) -> crate::error::Error {
    crate::error::Error::Validation(format!(
        "unsupported database URL scheme in '{}'; expected sqlite:, postgres:// or postgresql://",
        url.split(':').next().unwrap_or_default()
    ))
}
