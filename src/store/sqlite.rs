//! The embedded backend: SQLite through sqlx, migrations from `migrations/sqlite/`.
//!
//! Ids are stored as hyphenated text, timestamps as RFC 3339 text, JSON columns as text.
//! WAL mode and a busy timeout let the pool's connections read while one writes.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use uuid::Uuid;

use super::json::{ConfigJson, ResultJson, decode, encode};
use super::{
    Completion, Inserted, MessagePage, MessageStore, ProviderKeyStore, Store, WorkspaceStore,
};
use crate::domain::{
    ApiKey, KeyConfig, Message, MessageRequest, MessageStatus, ProviderKey, ProviderKind,
    RateLimit, RatePeriod, ResponseFormat, Workspace, WorkspaceId, parse_token_limit,
};
use crate::error::{Error, Result};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://path` or `sqlite::memory:`)
    /// and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::Validation(format!("invalid SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true)
            // Pages served from memory instead of a pread per page (measured: reads were ~5%
            // of the embedded benchmark's CPU), a larger page cache, temp tables in memory.
            .pragma("mmap_size", "268435456")
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "memory");
        let in_memory = url.contains(":memory:");
        let pool = SqlitePoolOptions::new()
            // An in-memory database exists once per connection: keep exactly one.
            .max_connections(if in_memory { 1 } else { 8 })
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts)
            .await
            .map_err(|e| Error::Unavailable(format!("cannot open SQLite database: {e}")))?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }
}

#[derive(sqlx::FromRow)]
struct WorkspaceRow {
    workspace_id: String,
    worker_count: i64,
    created_at: DateTime<Utc>,
}

impl TryFrom<WorkspaceRow> for Workspace {
    type Error = Error;
    fn try_from(r: WorkspaceRow) -> Result<Self> {
        Ok(Workspace {
            id: WorkspaceId::parse(&r.workspace_id)?,
            worker_count: u32::try_from(r.worker_count).unwrap_or(0),
            created_at: r.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    key_id: String,
    workspace_id: String,
    provider: String,
    api_key: String,
    rate_limit: i64,
    rate_limit_period: i64,
    token_limit: Option<i64>,
    config: String,
    healthy: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<KeyRow> for ProviderKey {
    type Error = Error;
    fn try_from(r: KeyRow) -> Result<Self> {
        let corrupt = |e: Error| Error::Storage(format!("corrupt provider key row: {e}"));
        Ok(ProviderKey {
            id: parse_uuid(&r.key_id)?,
            workspace_id: WorkspaceId::parse(&r.workspace_id).map_err(corrupt)?,
            provider: ProviderKind::parse(&r.provider).map_err(corrupt)?,
            api_key: ApiKey::parse(&r.api_key).map_err(corrupt)?,
            rate_limit: RateLimit::new(
                r.rate_limit,
                RatePeriod::from_seconds(r.rate_limit_period).map_err(corrupt)?,
            )
            .map_err(corrupt)?,
            token_limit: r
                .token_limit
                .map(parse_token_limit)
                .transpose()
                .map_err(corrupt)?,
            config: KeyConfig::from(decode::<ConfigJson>(&r.config)?),
            healthy: r.healthy,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    message_id: String,
    workspace_id: String,
    status: String,
    prompt: String,
    content: Option<String>,
    system_prompt: Option<String>,
    model: Option<String>,
    sequence_index: Option<i64>,
    html_tag: Option<String>,
    response_format: String,
    result: Option<String>,
    error: Option<String>,
    attempts: i64,
    key_id: Option<String>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
}

impl TryFrom<MessageRow> for Message {
    type Error = Error;
    fn try_from(r: MessageRow) -> Result<Self> {
        let corrupt = |e: Error| Error::Storage(format!("corrupt message row: {e}"));
        Ok(Message {
            id: parse_uuid(&r.message_id)?,
            workspace_id: WorkspaceId::parse(&r.workspace_id).map_err(corrupt)?,
            request: MessageRequest {
                prompt: r.prompt,
                content: r.content,
                system_prompt: r.system_prompt,
                model: r.model,
                sequence_index: r.sequence_index,
                html_tag: r.html_tag,
                response_format: ResponseFormat::parse(&r.response_format).map_err(corrupt)?,
            },
            status: MessageStatus::parse(&r.status).map_err(corrupt)?,
            result: r
                .result
                .as_deref()
                .map(decode::<ResultJson>)
                .transpose()?
                .map(Into::into),
            error: r.error,
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            key_id: r.key_id.as_deref().map(parse_uuid).transpose()?,
            created_at: r.created_at,
            started_at: r.started_at,
            completed_at: r.completed_at,
        })
    }
}

/// Rows per multi-row statement (12 columns x 500 stays far below SQLite's variable limit).
const CHUNK: usize = 500;

/// `(?, ?), (?, ?)` for `rows` rows of `cols` values.
fn placeholders(rows: usize, cols: usize) -> String {
    let row = format!("({})", vec!["?"; cols].join(", "));
    vec![row; rows].join(", ")
}

fn from_micros(us: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| Error::Storage(format!("corrupt timestamp {us}")))
}

fn parse_uuid(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| Error::Storage(format!("corrupt id '{s}': {e}")))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

const KEY_COLUMNS: &str = "key_id, workspace_id, provider, api_key, rate_limit, rate_limit_period, token_limit, config, healthy, created_at, updated_at";

/// The `token_limit` column of a key (the domain keeps it within `i64`).
fn token_limit_column(key: &ProviderKey) -> Option<i64> {
    key.token_limit
        .map(|t| i64::try_from(t).unwrap_or(i64::MAX))
}

async fn insert_key_with<'e, E>(exec: E, key: &ProviderKey) -> Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    sqlx::query(
        "INSERT INTO provider_keys (key_id, workspace_id, provider, api_key, rate_limit, \
         rate_limit_period, token_limit, config, healthy, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(key.id.to_string())
    .bind(key.workspace_id.as_str())
    .bind(key.provider.as_str())
    .bind(key.api_key.expose())
    .bind(i64::from(key.rate_limit.requests))
    .bind(key.rate_limit.period.seconds() as i64)
    .bind(token_limit_column(key))
    .bind(encode(&ConfigJson::from(&key.config))?)
    .bind(key.healthy)
    .bind(key.created_at)
    .bind(key.updated_at)
    .execute(exec)
    .await?;
    Ok(())
}

#[async_trait]
impl WorkspaceStore for SqliteStore {
    async fn create_workspace(&self, ws: &Workspace, keys: &[ProviderKey]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO workspaces (workspace_id, worker_count, created_at) VALUES (?, ?, ?)",
        )
        .bind(ws.id.as_str())
        .bind(i64::from(ws.worker_count))
        .bind(ws.created_at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::Conflict(format!(
                    "workspace '{}' already exists",
                    ws.id
                )));
            }
            other => {
                other?;
            }
        }
        for key in keys {
            insert_key_with(&mut *tx, key).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_workspaces(&self, filter: Option<&WorkspaceId>) -> Result<Vec<Workspace>> {
        // Two statements rather than `?1 IS NULL OR ...`, which would scan the whole table.
        let sql = format!(
            "SELECT workspace_id, worker_count, created_at FROM workspaces WHERE {} \
             ORDER BY created_at, workspace_id",
            filter.map_or("?1 IS NULL", |_| "workspace_id = ?1")
        );
        let rows: Vec<WorkspaceRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(filter.map(WorkspaceId::as_str))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(Workspace::try_from).collect()
    }

    async fn get_workspace(&self, id: &WorkspaceId) -> Result<Option<Workspace>> {
        Ok(self.list_workspaces(Some(id)).await?.into_iter().next())
    }

    async fn delete_workspace(&self, id: &WorkspaceId) -> Result<bool> {
        let r = sqlx::query("DELETE FROM workspaces WHERE workspace_id = ?")
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn set_worker_count(&self, id: &WorkspaceId, count: u32) -> Result<bool> {
        let r = sqlx::query("UPDATE workspaces SET worker_count = ? WHERE workspace_id = ?")
            .bind(i64::from(count))
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }
}

#[async_trait]
impl ProviderKeyStore for SqliteStore {
    async fn insert_key(&self, key: &ProviderKey) -> Result<()> {
        insert_key_with(&self.pool, key).await
    }

    async fn list_keys(&self, workspace: Option<&WorkspaceId>) -> Result<Vec<ProviderKey>> {
        let cond = workspace.map_or("?1 IS NULL", |_| "workspace_id = ?1");
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM provider_keys WHERE {cond} ORDER BY created_at, key_id"
        );
        let rows: Vec<KeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(workspace.map(WorkspaceId::as_str))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(ProviderKey::try_from).collect()
    }

    async fn get_key(&self, id: Uuid) -> Result<Option<ProviderKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM provider_keys WHERE key_id = ?");
        let row: Option<KeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(ProviderKey::try_from).transpose()
    }

    async fn update_key(&self, key: &ProviderKey) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE provider_keys SET provider = ?, api_key = ?, rate_limit = ?, \
             rate_limit_period = ?, token_limit = ?, config = ?, healthy = ?, updated_at = ? \
             WHERE key_id = ?",
        )
        .bind(key.provider.as_str())
        .bind(key.api_key.expose())
        .bind(i64::from(key.rate_limit.requests))
        .bind(key.rate_limit.period.seconds() as i64)
        .bind(token_limit_column(key))
        .bind(encode(&ConfigJson::from(&key.config))?)
        .bind(key.healthy)
        .bind(key.updated_at)
        .bind(key.id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn set_key_healthy(&self, id: Uuid, healthy: bool) -> Result<()> {
        sqlx::query("UPDATE provider_keys SET healthy = ? WHERE key_id = ?")
            .bind(healthy)
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_key(&self, id: Uuid) -> Result<bool> {
        let r = sqlx::query("DELETE FROM provider_keys WHERE key_id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn record_grants(&self, grants: &[(Uuid, DateTime<Utc>)]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for chunk in grants.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO key_grants (key_id, granted_at_us) VALUES {}",
                placeholders(chunk.len(), 2)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (key, at) in chunk {
                q = q.bind(key.to_string()).bind(at.timestamp_micros());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn recent_grants(
        &self,
        workspace: &WorkspaceId,
        since: DateTime<Utc>,
    ) -> Result<Vec<(Uuid, DateTime<Utc>)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT g.key_id, g.granted_at_us FROM key_grants g \
             JOIN provider_keys k ON k.key_id = g.key_id \
             WHERE k.workspace_id = ? AND g.granted_at_us >= ? ORDER BY g.granted_at_us",
        )
        .bind(workspace.as_str())
        .bind(since.timestamp_micros())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(k, us)| Ok((parse_uuid(&k)?, from_micros(us)?)))
            .collect()
    }

    async fn prune_grants(&self, now: DateTime<Utc>) -> Result<u64> {
        let r = sqlx::query(
            "DELETE FROM key_grants WHERE granted_at_us < ?1 - 1000000 * \
             COALESCE((SELECT rate_limit_period FROM provider_keys k \
                       WHERE k.key_id = key_grants.key_id), 0)",
        )
        .bind(now.timestamp_micros())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }
}

/// Inserts one message unless its id exists; true when a row was written.
async fn insert_message_with<'e, E>(exec: E, msg: &Message) -> Result<bool>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let r = sqlx::query(
        "INSERT INTO messages (message_id, workspace_id, status, prompt, content, \
         system_prompt, model, sequence_index, html_tag, response_format, attempts, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(msg.id.to_string())
    .bind(msg.workspace_id.as_str())
    .bind(msg.status.as_str())
    .bind(&msg.request.prompt)
    .bind(&msg.request.content)
    .bind(&msg.request.system_prompt)
    .bind(&msg.request.model)
    .bind(msg.request.sequence_index)
    .bind(&msg.request.html_tag)
    .bind(msg.request.response_format.as_str())
    .bind(msg.created_at)
    .execute(exec)
    .await?;
    Ok(r.rows_affected() > 0)
}

/// Stores one final state unless the message is already final; true when written.
async fn complete_with<'e, E>(exec: E, id: Uuid, done: &Completion) -> Result<bool>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let result = done
        .result
        .as_ref()
        .map(|r| encode(&ResultJson::from(r)))
        .transpose()?;
    let r = sqlx::query(
        "UPDATE messages SET status = ?, result = ?, error = ?, attempts = ?, key_id = ?, \
         completed_at = ? WHERE message_id = ? AND status IN ('pending', 'processing')",
    )
    .bind(done.status.as_str())
    .bind(result)
    .bind(&done.error)
    .bind(i64::from(done.attempts))
    .bind(done.key_id.map(|k| k.to_string()))
    .bind(done.completed_at)
    .bind(id.to_string())
    .execute(exec)
    .await?;
    Ok(r.rows_affected() > 0)
}

impl SqliteStore {
    async fn existing(&self, id: Uuid) -> Result<Inserted> {
        match self.get_message(id).await? {
            Some(existing) => Ok(Inserted::Existing(Box::new(existing))),
            None => Err(Error::Conflict(format!(
                "message '{id}' could not be stored; retry"
            ))),
        }
    }
}

const MESSAGE_COLUMNS: &str = "message_id, workspace_id, status, prompt, content, system_prompt, \
     model, sequence_index, html_tag, response_format, result, error, attempts, key_id, \
     created_at, started_at, completed_at";

#[async_trait]
impl MessageStore for SqliteStore {
    async fn insert_message(&self, msg: &Message) -> Result<Inserted> {
        if insert_message_with(&self.pool, msg).await? {
            return Ok(Inserted::New);
        }
        self.existing(msg.id).await
    }

    async fn get_message(&self, id: Uuid) -> Result<Option<Message>> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE message_id = ?");
        let row: Option<MessageRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(Message::try_from).transpose()
    }

    async fn mark_processing(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE messages SET status = 'processing', started_at = COALESCE(started_at, ?) \
             WHERE message_id = ? AND status IN ('pending', 'processing')",
        )
        .bind(at)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn complete_message(&self, id: Uuid, done: &Completion) -> Result<bool> {
        complete_with(&self.pool, id, done).await
    }

    async fn unfinished_messages(&self) -> Result<Vec<(WorkspaceId, Uuid)>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT workspace_id, message_id FROM messages \
             WHERE status IN ('pending', 'processing') ORDER BY created_at, message_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(w, m)| Ok((WorkspaceId::parse(&w)?, parse_uuid(&m)?)))
            .collect()
    }

    async fn insert_messages(&self, msgs: &[Message]) -> Result<Vec<Inserted>> {
        // Multi-row statements: one round trip to SQLite's thread per chunk, not per message.
        let mut tx = self.pool.begin().await?;
        let mut inserted = std::collections::HashSet::new();
        for chunk in msgs.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO messages (message_id, workspace_id, status, prompt, content, \
                 system_prompt, model, sequence_index, html_tag, response_format, attempts, \
                 created_at) VALUES {} ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
                placeholders(chunk.len(), 12)
            );
            let mut q = sqlx::query_as::<_, (String,)>(sqlx::AssertSqlSafe(sql));
            for m in chunk {
                q = q
                    .bind(m.id.to_string())
                    .bind(m.workspace_id.as_str())
                    .bind(m.status.as_str())
                    .bind(&m.request.prompt)
                    .bind(&m.request.content)
                    .bind(&m.request.system_prompt)
                    .bind(&m.request.model)
                    .bind(m.request.sequence_index)
                    .bind(&m.request.html_tag)
                    .bind(m.request.response_format.as_str())
                    .bind(0_i64)
                    .bind(m.created_at);
            }
            for (id,) in q.fetch_all(&mut *tx).await? {
                inserted.insert(id);
            }
        }
        tx.commit().await?;
        let mut out = Vec::with_capacity(msgs.len());
        for m in msgs {
            // The first occurrence of an id was written; a repeat finds it existing.
            out.push(if inserted.remove(&m.id.to_string()) {
                Inserted::New
            } else {
                self.existing(m.id).await?
            });
        }
        Ok(out)
    }

    async fn complete_messages(&self, done: &[(Uuid, Completion)]) -> Result<Vec<bool>> {
        // The first completion of an id in the batch is the one that counts.
        let mut seen = std::collections::HashSet::new();
        let firsts: Vec<&(Uuid, Completion)> =
            done.iter().filter(|(id, _)| seen.insert(*id)).collect();
        let mut tx = self.pool.begin().await?;
        let mut written = std::collections::HashSet::new();
        for chunk in firsts.chunks(CHUNK) {
            let sql = format!(
                "WITH v (id, status, result, error, attempts, key_id, completed_at) AS (VALUES {}) \
                 UPDATE messages SET status = v.status, result = v.result, error = v.error, \
                 attempts = v.attempts, key_id = v.key_id, completed_at = v.completed_at \
                 FROM v WHERE messages.message_id = v.id \
                 AND messages.status IN ('pending', 'processing') RETURNING messages.message_id",
                placeholders(chunk.len(), 7)
            );
            let mut q = sqlx::query_as::<_, (String,)>(sqlx::AssertSqlSafe(sql));
            for (id, c) in chunk {
                let result = c
                    .result
                    .as_ref()
                    .map(|r| encode(&ResultJson::from(r)))
                    .transpose()?;
                q = q
                    .bind(id.to_string())
                    .bind(c.status.as_str())
                    .bind(result)
                    .bind(c.error.clone())
                    .bind(i64::from(c.attempts))
                    .bind(c.key_id.map(|k| k.to_string()))
                    .bind(c.completed_at);
            }
            for (id,) in q.fetch_all(&mut *tx).await? {
                written.insert(id);
            }
        }
        tx.commit().await?;
        Ok(done
            .iter()
            .map(|(id, _)| written.remove(&id.to_string()))
            .collect())
    }

    async fn claim_messages(&self, ids: &[Uuid], at: DateTime<Utc>) -> Result<Vec<Message>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "UPDATE messages SET status = 'processing', started_at = COALESCE(started_at, ?) \
                 WHERE message_id IN ({marks}) AND status IN ('pending', 'processing') \
                 RETURNING {MESSAGE_COLUMNS}"
            );
            let mut q = sqlx::query_as::<_, MessageRow>(sqlx::AssertSqlSafe(sql)).bind(at);
            for id in chunk {
                q = q.bind(id.to_string());
            }
            for row in q.fetch_all(&self.pool).await? {
                out.push(Message::try_from(row)?);
            }
        }
        Ok(out)
    }

    async fn list_messages(
        &self,
        workspace: &WorkspaceId,
        status: Option<MessageStatus>,
        limit: u32,
        offset: u64,
    ) -> Result<MessagePage> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE workspace_id = ?1 \
             AND (?2 IS NULL OR status = ?2) \
             ORDER BY sequence_index IS NULL, sequence_index, created_at, message_id \
             LIMIT ?3 OFFSET ?4"
        );
        let status = status.map(MessageStatus::as_str);
        let rows: Vec<MessageRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(workspace.as_str())
            .bind(status)
            .bind(i64::from(limit))
            .bind(i64::try_from(offset).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        let (total,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM messages WHERE workspace_id = ?1 AND (?2 IS NULL OR status = ?2)",
        )
        .bind(workspace.as_str())
        .bind(status)
        .fetch_one(&self.pool)
        .await?;
        Ok(MessagePage {
            messages: rows
                .into_iter()
                .map(Message::try_from)
                .collect::<Result<_>>()?,
            total: u64::try_from(total).unwrap_or(0),
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}
