//! The server backend: PostgreSQL through sqlx, migrations from `migrations/postgres/`.
//!
//! Why a second backend: SQLite is one file on one machine; PostgreSQL lets the engine run
//! against a managed, backed-up database and lets several processes share it. The semantics are
//! those of the SQLite backend (same tables, same conflict rules, same ordering); only the column
//! types are native: `uuid` ids, `timestamptz` (microsecond precision), `jsonb` JSON columns,
//! `boolean`, `bigint`. The JSON shapes are the ones in `json`, shared with SQLite.
//!
//! PostgreSQL cannot store U+0000 in `text` or `jsonb`: caller input holding it is refused with
//! `Error::Validation`; provider output holding it is stored with U+FFFD in its place (a result
//! that cannot be stored would be asked of the provider again and again).
//!
//! Connecting first opens one plain connection with a timeout, so a server that is down or a
//! wrong password gives a clear `Error::Unavailable` at once instead of the pool's silent retries;
//! error texts name host, port, database and user, never the password.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{ConnectOptions, Connection};
use uuid::Uuid;

use super::json::{ConfigJson, ResultJson};
use super::{
    Completion, Inserted, MessagePage, MessageStore, ProviderKeyStore, Store, WorkspaceStore,
};
use crate::domain::{
    ApiKey, KeyConfig, Message, MessageRequest, MessageResult, MessageStatus, ProviderKey,
    ProviderKind, RateLimit, RatePeriod, ResponseFormat, Workspace, WorkspaceId, parse_token_limit,
};
use crate::error::{Error, Result};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Most connections the pool opens.
const MAX_CONNECTIONS: u32 = 16;
/// How long connecting, or waiting for a pooled connection, may take.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// PostgreSQL implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`) and runs the
    /// migrations. `Error::Unavailable` if the server cannot be reached or refuses the login.
    pub async fn connect(url: &str) -> Result<Self> {
        let secrets = url_secrets(url);
        let redact = |msg: String| redact(msg, &secrets);
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| Error::Validation(redact(format!("invalid PostgreSQL URL: {e}"))))?
            .application_name("ai-rate-limiter");
        let target = describe(&opts);

        // One plain attempt first: the pool retries refused connections until its timeout and
        // then reports only "pool timed out", which hides the reason.
        match tokio::time::timeout(ACQUIRE_TIMEOUT, opts.connect()).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
            Ok(Err(e)) => {
                return Err(Error::Unavailable(redact(format!(
                    "cannot connect to PostgreSQL at {target}: {e}"
                ))));
            }
            Err(_) => {
                return Err(Error::Unavailable(format!(
                    "cannot connect to PostgreSQL at {target}: no answer within {}s",
                    ACQUIRE_TIMEOUT.as_secs()
                )));
            }
        }

        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts)
            .await
            .map_err(|e| {
                Error::Unavailable(redact(format!(
                    "cannot connect to PostgreSQL at {target}: {e}"
                )))
            })?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| Error::Storage(redact(format!("migration failed: {e}"))))?;
        Ok(Self { pool })
    }

    /// The connection pool (for callers that need raw access, e.g. to close it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Runs the migrations of the database at `url`, then disconnects.
pub async fn migrate(url: &str) -> Result<()> {
    let store = PostgresStore::connect(url).await?;
    store.pool.close().await;
    Ok(())
}

/// `host:port/database as user`, for error messages (no password).
fn describe(opts: &PgConnectOptions) -> String {
    let place = match opts.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", opts.get_host(), opts.get_port()),
    };
    format!(
        "{place}/{} as {}",
        opts.get_database().unwrap_or(opts.get_username()),
        opts.get_username()
    )
}

/// The passwords in a URL: after `user:` and in a `password=` parameter (as written).
fn url_secrets(url: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && let Some((_, password)) = userinfo.split_once(':')
    {
        secrets.push(password.to_owned());
    }
    if let Some((_, query)) = rest.split_once('?') {
        let query = query.split('#').next().unwrap_or_default();
        for pair in query.split('&') {
            if let Some(("password", value)) = pair.split_once('=') {
                secrets.push(value.to_owned());
            }
        }
    }
    secrets.retain(|s| !s.is_empty());
    secrets
}

/// Replaces every occurrence of the secrets (as written and percent-decoded) in `msg`.
fn redact(mut msg: String, secrets: &[String]) -> String {
    for secret in secrets {
        msg = msg.replace(secret.as_str(), "***");
        let decoded = percent_decode(secret);
        if !decoded.is_empty() {
            msg = msg.replace(&decoded, "***");
        }
    }
    msg
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok());
        if bytes[i] == b'%'
            && let Some(Ok(b)) = hex.map(|h| u8::from_str_radix(h, 16))
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
    key_id: Uuid,
    workspace_id: String,
    provider: String,
    api_key: String,
    rate_limit: i64,
    rate_limit_period: i64,
    token_limit: Option<i64>,
    config: Json<ConfigJson>,
    healthy: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<KeyRow> for ProviderKey {
    type Error = Error;
    fn try_from(r: KeyRow) -> Result<Self> {
        let corrupt = |e: Error| Error::Storage(format!("corrupt provider key row: {e}"));
        Ok(ProviderKey {
            id: r.key_id,
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
            config: KeyConfig::from(r.config.0),
            healthy: r.healthy,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    message_id: Uuid,
    workspace_id: String,
    status: String,
    prompt: String,
    content: Option<String>,
    system_prompt: Option<String>,
    model: Option<String>,
    sequence_index: Option<i64>,
    html_tag: Option<String>,
    response_format: String,
    result: Option<Json<ResultJson>>,
    error: Option<String>,
    attempts: i64,
    key_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
}

impl TryFrom<MessageRow> for Message {
    type Error = Error;
    fn try_from(r: MessageRow) -> Result<Self> {
        let corrupt = |e: Error| Error::Storage(format!("corrupt message row: {e}"));
        Ok(Message {
            id: r.message_id,
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
            result: r.result.map(|j| j.0.into()),
            error: r.error,
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            key_id: r.key_id,
            created_at: r.created_at,
            started_at: r.started_at,
            completed_at: r.completed_at,
        })
    }
}

/// PostgreSQL `text` and `jsonb` cannot hold U+0000: caller input with it is refused (422),
/// not failed on as a storage error.
fn reject_nul<'a>(fields: impl IntoIterator<Item = (&'static str, Option<&'a str>)>) -> Result<()> {
    for (name, value) in fields {
        if value.is_some_and(|v| v.contains('\0')) {
            return Err(Error::Validation(format!(
                "{name} must not contain NUL characters (U+0000)"
            )));
        }
    }
    Ok(())
}

/// Replaces U+0000 with U+FFFD in provider output, which must be stored whatever it holds (a
/// result that cannot be written would be fetched from the provider again and again).
fn clean(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

fn clean_result(r: &MessageResult) -> MessageResult {
    MessageResult {
        text: clean(&r.text),
        json: r.json.clone().map(clean_value),
        model: clean(&r.model),
        usage: r.usage,
    }
}

fn clean_value(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) if s.contains('\0') => Value::String(clean(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(clean_value).collect()),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let k = if k.contains('\0') { clean(&k) } else { k };
                    (k, clean_value(v))
                })
                .collect(),
        ),
        other => other,
    }
}

fn has_nul(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// The columns of [`KeyRow`], as a literal so queries stay `&'static str`.
macro_rules! key_columns {
    () => {
        "key_id, workspace_id, provider, api_key, rate_limit, rate_limit_period, token_limit, \
         config, healthy, created_at, updated_at"
    };
}

/// The columns of [`MessageRow`].
macro_rules! message_columns {
    () => {
        "message_id, workspace_id, status, prompt, content, system_prompt, model, \
         sequence_index, html_tag, response_format, result, error, attempts, key_id, \
         created_at, started_at, completed_at"
    };
}

/// The `token_limit` column of a key (the domain keeps it within `i64`).
fn token_limit_column(key: &ProviderKey) -> Option<i64> {
    key.token_limit
        .map(|t| i64::try_from(t).unwrap_or(i64::MAX))
}

fn check_key(key: &ProviderKey) -> Result<()> {
    reject_nul([("api_key", Some(key.api_key.expose()))])?;
    // Any string of the config (whatever fields it has).
    let config = serde_json::to_value(ConfigJson::from(&key.config)).unwrap_or_default();
    if has_nul(&config) {
        return Err(Error::Validation(
            "config must not contain NUL characters (U+0000)".into(),
        ));
    }
    Ok(())
}

async fn insert_key_with<'e, E>(exec: E, key: &ProviderKey) -> Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    check_key(key)?;
    sqlx::query(concat!(
        "INSERT INTO provider_keys (",
        key_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    ))
    .bind(key.id)
    .bind(key.workspace_id.as_str())
    .bind(key.provider.as_str())
    .bind(key.api_key.expose())
    .bind(i64::from(key.rate_limit.requests))
    .bind(key.rate_limit.period.seconds() as i64)
    .bind(token_limit_column(key))
    .bind(Json(ConfigJson::from(&key.config)))
    .bind(key.healthy)
    .bind(key.created_at)
    .bind(key.updated_at)
    .execute(exec)
    .await?;
    Ok(())
}

/// Inserts one message unless its id exists; true when a row was written.
async fn insert_message_with<'e, E>(exec: E, msg: &Message) -> Result<bool>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let q = &msg.request;
    reject_nul([
        ("prompt", Some(q.prompt.as_str())),
        ("content", q.content.as_deref()),
        ("system_prompt", q.system_prompt.as_deref()),
        ("model", q.model.as_deref()),
        ("html_tag", q.html_tag.as_deref()),
    ])?;
    let r = sqlx::query(
        "INSERT INTO messages (message_id, workspace_id, status, prompt, content, \
         system_prompt, model, sequence_index, html_tag, response_format, attempts, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11) \
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(msg.id)
    .bind(msg.workspace_id.as_str())
    .bind(msg.status.as_str())
    .bind(&q.prompt)
    .bind(&q.content)
    .bind(&q.system_prompt)
    .bind(&q.model)
    .bind(q.sequence_index)
    .bind(&q.html_tag)
    .bind(q.response_format.as_str())
    .bind(msg.created_at)
    .execute(exec)
    .await?;
    Ok(r.rows_affected() > 0)
}

/// Stores one final state unless the message is already final; true when written.
async fn complete_with<'e, E>(exec: E, id: Uuid, done: &Completion) -> Result<bool>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let r = sqlx::query(
        "UPDATE messages SET status = $1, result = $2, error = $3, attempts = $4, \
         key_id = $5, completed_at = $6 \
         WHERE message_id = $7 AND status IN ('pending', 'processing')",
    )
    .bind(done.status.as_str())
    .bind(
        done.result
            .as_ref()
            .map(|r| Json(ResultJson::from(&clean_result(r)))),
    )
    .bind(done.error.as_deref().map(clean))
    .bind(i64::from(done.attempts))
    .bind(done.key_id)
    .bind(done.completed_at)
    .bind(id)
    .execute(exec)
    .await?;
    Ok(r.rows_affected() > 0)
}

impl PostgresStore {
    async fn existing(&self, id: Uuid) -> Result<Inserted> {
        match self.get_message(id).await? {
            Some(existing) => Ok(Inserted::Existing(Box::new(existing))),
            // Inserted and deleted (its workspace removed) between the two statements.
            None => Err(Error::Conflict(format!(
                "message '{id}' could not be stored; retry"
            ))),
        }
    }
}

#[async_trait]
impl WorkspaceStore for PostgresStore {
    async fn create_workspace(&self, ws: &Workspace, keys: &[ProviderKey]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO workspaces (workspace_id, worker_count, created_at) VALUES ($1, $2, $3)",
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
        // Two statements rather than `$1 IS NULL OR ...`, which would scan the whole table.
        let sql = if filter.is_some() {
            "SELECT workspace_id, worker_count, created_at FROM workspaces \
             WHERE workspace_id = $1 ORDER BY created_at, workspace_id"
        } else {
            "SELECT workspace_id, worker_count, created_at FROM workspaces \
             WHERE $1::text IS NULL ORDER BY created_at, workspace_id"
        };
        let rows: Vec<WorkspaceRow> = sqlx::query_as(sql)
            .bind(filter.map(WorkspaceId::as_str))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(Workspace::try_from).collect()
    }

    async fn get_workspace(&self, id: &WorkspaceId) -> Result<Option<Workspace>> {
        Ok(self.list_workspaces(Some(id)).await?.into_iter().next())
    }

    async fn delete_workspace(&self, id: &WorkspaceId) -> Result<bool> {
        let r = sqlx::query("DELETE FROM workspaces WHERE workspace_id = $1")
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn set_worker_count(&self, id: &WorkspaceId, count: u32) -> Result<bool> {
        let r = sqlx::query("UPDATE workspaces SET worker_count = $1 WHERE workspace_id = $2")
            .bind(i64::from(count))
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }
}

#[async_trait]
impl ProviderKeyStore for PostgresStore {
    async fn insert_key(&self, key: &ProviderKey) -> Result<()> {
        insert_key_with(&self.pool, key).await
    }

    async fn list_keys(&self, workspace: Option<&WorkspaceId>) -> Result<Vec<ProviderKey>> {
        let sql = if workspace.is_some() {
            concat!(
                "SELECT ",
                key_columns!(),
                " FROM provider_keys WHERE workspace_id = $1 ORDER BY created_at, key_id"
            )
        } else {
            concat!(
                "SELECT ",
                key_columns!(),
                " FROM provider_keys WHERE $1::text IS NULL ORDER BY created_at, key_id"
            )
        };
        let rows: Vec<KeyRow> = sqlx::query_as(sql)
            .bind(workspace.map(WorkspaceId::as_str))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(ProviderKey::try_from).collect()
    }

    async fn get_key(&self, id: Uuid) -> Result<Option<ProviderKey>> {
        let row: Option<KeyRow> = sqlx::query_as(concat!(
            "SELECT ",
            key_columns!(),
            " FROM provider_keys WHERE key_id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(ProviderKey::try_from).transpose()
    }

    async fn update_key(&self, key: &ProviderKey) -> Result<bool> {
        check_key(key)?;
        let r = sqlx::query(
            "UPDATE provider_keys SET provider = $1, api_key = $2, rate_limit = $3, \
             rate_limit_period = $4, token_limit = $5, config = $6, healthy = $7, \
             updated_at = $8 WHERE key_id = $9",
        )
        .bind(key.provider.as_str())
        .bind(key.api_key.expose())
        .bind(i64::from(key.rate_limit.requests))
        .bind(key.rate_limit.period.seconds() as i64)
        .bind(token_limit_column(key))
        .bind(Json(ConfigJson::from(&key.config)))
        .bind(key.healthy)
        .bind(key.updated_at)
        .bind(key.id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn set_key_healthy(&self, id: Uuid, healthy: bool) -> Result<()> {
        sqlx::query("UPDATE provider_keys SET healthy = $1 WHERE key_id = $2")
            .bind(healthy)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_key(&self, id: Uuid) -> Result<bool> {
        let r = sqlx::query("DELETE FROM provider_keys WHERE key_id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn record_grants(&self, grants: &[(Uuid, DateTime<Utc>)]) -> Result<()> {
        let keys: Vec<Uuid> = grants.iter().map(|(k, _)| *k).collect();
        let times: Vec<i64> = grants.iter().map(|(_, t)| t.timestamp_micros()).collect();
        sqlx::query(
            "INSERT INTO key_grants (key_id, granted_at_us) \
             SELECT * FROM UNNEST($1::uuid[], $2::bigint[])",
        )
        .bind(keys)
        .bind(times)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn recent_grants(
        &self,
        workspace: &WorkspaceId,
        since: DateTime<Utc>,
    ) -> Result<Vec<(Uuid, DateTime<Utc>)>> {
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(
            "SELECT g.key_id, g.granted_at_us FROM key_grants g \
             JOIN provider_keys k ON k.key_id = g.key_id \
             WHERE k.workspace_id = $1 AND g.granted_at_us >= $2 ORDER BY g.granted_at_us",
        )
        .bind(workspace.as_str())
        .bind(since.timestamp_micros())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(k, us)| {
                DateTime::from_timestamp_micros(us)
                    .map(|t| (k, t))
                    .ok_or_else(|| Error::Storage(format!("corrupt timestamp {us}")))
            })
            .collect()
    }

    async fn prune_grants(&self, now: DateTime<Utc>) -> Result<u64> {
        let r = sqlx::query(
            "DELETE FROM key_grants g USING provider_keys k \
             WHERE k.key_id = g.key_id AND g.granted_at_us < $1 - 1000000 * k.rate_limit_period",
        )
        .bind(now.timestamp_micros())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }
}

#[async_trait]
impl MessageStore for PostgresStore {
    async fn insert_message(&self, msg: &Message) -> Result<Inserted> {
        if insert_message_with(&self.pool, msg).await? {
            return Ok(Inserted::New);
        }
        self.existing(msg.id).await
    }

    async fn get_message(&self, id: Uuid) -> Result<Option<Message>> {
        let row: Option<MessageRow> = sqlx::query_as(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE message_id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Message::try_from).transpose()
    }

    async fn mark_processing(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE messages SET status = 'processing', started_at = COALESCE(started_at, $1) \
             WHERE message_id = $2 AND status IN ('pending', 'processing')",
        )
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn complete_message(&self, id: Uuid, done: &Completion) -> Result<bool> {
        complete_with(&self.pool, id, done).await
    }

    async fn unfinished_messages(&self) -> Result<Vec<(WorkspaceId, Uuid)>> {
        let rows: Vec<(String, Uuid)> = sqlx::query_as(
            "SELECT workspace_id, message_id FROM messages \
             WHERE status IN ('pending', 'processing') ORDER BY created_at, message_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(w, m)| Ok((WorkspaceId::parse(&w)?, m)))
            .collect()
    }

    async fn insert_messages(&self, msgs: &[Message]) -> Result<Vec<Inserted>> {
        let mut tx = self.pool.begin().await?;
        let mut written = Vec::with_capacity(msgs.len());
        for m in msgs {
            written.push(insert_message_with(&mut *tx, m).await?);
        }
        tx.commit().await?;
        let mut out = Vec::with_capacity(msgs.len());
        for (m, new) in msgs.iter().zip(written) {
            out.push(if new {
                Inserted::New
            } else {
                self.existing(m.id).await?
            });
        }
        Ok(out)
    }

    async fn complete_messages(&self, done: &[(Uuid, Completion)]) -> Result<Vec<bool>> {
        // One statement for the batch; the first completion of a repeated id counts.
        let mut seen = std::collections::HashSet::new();
        let firsts: Vec<&(Uuid, Completion)> =
            done.iter().filter(|(id, _)| seen.insert(*id)).collect();
        let mut ids = Vec::with_capacity(firsts.len());
        let mut statuses = Vec::with_capacity(firsts.len());
        let mut results: Vec<Option<String>> = Vec::with_capacity(firsts.len());
        let mut errors: Vec<Option<String>> = Vec::with_capacity(firsts.len());
        let mut attempts = Vec::with_capacity(firsts.len());
        let mut keys: Vec<Option<Uuid>> = Vec::with_capacity(firsts.len());
        let mut times = Vec::with_capacity(firsts.len());
        for (id, c) in firsts {
            ids.push(*id);
            statuses.push(c.status.as_str().to_owned());
            results.push(
                c.result
                    .as_ref()
                    .map(|r| {
                        serde_json::to_string(&ResultJson::from(&clean_result(r)))
                            .map_err(|e| Error::Internal(format!("cannot encode a result: {e}")))
                    })
                    .transpose()?,
            );
            errors.push(c.error.as_deref().map(clean));
            attempts.push(i64::from(c.attempts));
            keys.push(c.key_id);
            times.push(c.completed_at);
        }
        let written: Vec<(Uuid,)> = sqlx::query_as(
            "UPDATE messages m SET status = v.status, result = v.result::jsonb, error = v.error, \
             attempts = v.attempts, key_id = v.key_id, completed_at = v.completed_at \
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], \
                         $6::uuid[], $7::timestamptz[]) \
                  AS v (id, status, result, error, attempts, key_id, completed_at) \
             WHERE m.message_id = v.id AND m.status IN ('pending', 'processing') \
             RETURNING m.message_id",
        )
        .bind(ids)
        .bind(statuses)
        .bind(results)
        .bind(errors)
        .bind(attempts)
        .bind(keys)
        .bind(times)
        .fetch_all(&self.pool)
        .await?;
        let mut written: std::collections::HashSet<Uuid> =
            written.into_iter().map(|(id,)| id).collect();
        Ok(done.iter().map(|(id, _)| written.remove(id)).collect())
    }

    async fn claim_messages(&self, ids: &[Uuid], at: DateTime<Utc>) -> Result<Vec<Message>> {
        let rows: Vec<MessageRow> = sqlx::query_as(concat!(
            "UPDATE messages SET status = 'processing', started_at = COALESCE(started_at, $1) \
             WHERE message_id = ANY($2) AND status IN ('pending', 'processing') RETURNING ",
            message_columns!()
        ))
        .bind(at)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(Message::try_from).collect()
    }

    async fn list_messages(
        &self,
        workspace: &WorkspaceId,
        status: Option<MessageStatus>,
        limit: u32,
        offset: u64,
    ) -> Result<MessagePage> {
        let status = status.map(MessageStatus::as_str);
        let rows: Vec<MessageRow> = sqlx::query_as(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE workspace_id = $1 AND ($2::text IS NULL OR status = $2) \
             ORDER BY sequence_index ASC NULLS LAST, created_at, message_id LIMIT $3 OFFSET $4"
        ))
        .bind(workspace.as_str())
        .bind(status)
        .bind(i64::from(limit))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let (total,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM messages WHERE workspace_id = $1 \
             AND ($2::text IS NULL OR status = $2)",
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
impl Store for PostgresStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_passwords_of_a_url() {
        assert_eq!(url_secrets("postgres://u:s3cr3t@h:5432/db"), ["s3cr3t"]);
        assert_eq!(
            url_secrets("postgres://u:p%40ss@h/db?x=a:b@c&password=two"),
            ["p%40ss", "two"]
        );
        assert!(url_secrets("postgres://u@h/db").is_empty());
        assert!(url_secrets("postgres://h/db?sslmode=disable").is_empty());
        assert!(url_secrets("postgres://u:@h/db").is_empty());
    }

    #[test]
    fn redacts_raw_and_decoded_passwords() {
        let msg = "a p%40ss b p@ss c".to_owned();
        assert_eq!(redact(msg, &["p%40ss".into()]), "a *** b *** c");
        assert_eq!(redact("x".into(), &[]), "x");
    }

    #[test]
    fn nul_is_found_anywhere_in_json_and_cleaned() {
        let v = serde_json::json!({"a": [1, {"b\0": "c"}]});
        assert!(has_nul(&v));
        assert!(!has_nul(&clean_value(v)));
        assert!(!has_nul(&serde_json::json!({"a": ["\\u0000"]})));
    }
}
