//! The engine: builds the actor tree on a store and a queue, and offers every operation as a
//! plain async function. The HTTP handlers (`crate::api`) only convert DTOs and call these, so
//! a program embedding the crate gets exactly the same behaviour without HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use dashmap::DashMap;
use ractor::{Actor, ActorRef};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::actors::{Deps, RetryPolicy, Supervisor, SupervisorMsg, WorkspaceMsg};
use crate::domain::{
    KeyUpdate, Message, MessageRequest, MessageStatus, NewMessage, NewProviderKey, NewWorkspace,
    ProviderKey, WorkerInfo, Workspace, WorkspaceId,
};
use crate::error::{Error, Result};
use crate::providers::{Providers, http_client};
use crate::queue::{AmqpQueue, MemoryQueue, Queue};
use crate::store::{BatchWriter, Completion, Inserted, MessagePage, Store};

/// The current time, at microsecond precision (what every backend stores), so a value returned
/// by an operation equals the one read back later.
pub(crate) fn now() -> chrono::DateTime<Utc> {
    let t = Utc::now();
    chrono::DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// The final state of a message the queue refused.
fn queue_failure(reason: &str) -> Completion {
    Completion {
        status: MessageStatus::Failed,
        result: None,
        error: Some(reason.to_owned()),
        attempts: 0,
        key_id: None,
        completed_at: now(),
    }
}

/// How to build an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// `sqlite://path?mode=rwc`, `sqlite::memory:`.
    pub database_url: String,
    /// `amqp://...` for RabbitMQ; `None` for the in-process queue.
    pub rabbitmq_url: Option<String>,
    /// Most workers one workspace may be scaled to.
    pub max_workers: u32,
    /// Retry and cool-down policy of provider calls.
    pub retry: RetryPolicy,
    /// Prefix of RabbitMQ queue names (`<prefix>.ws.<workspace_id>`).
    pub queue_prefix: String,
    /// Margin added to every key's period, absorbing the jitter between a request leaving and
    /// the provider receiving it (default 5 ms).
    pub limit_guard: Duration,
}

impl EngineConfig {
    /// Embedded defaults on the given database URL: in-process queue, 256 workers at most.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            rabbitmq_url: None,
            max_workers: 256,
            retry: RetryPolicy::default(),
            queue_prefix: crate::queue::DEFAULT_PREFIX.to_owned(),
            limit_guard: Duration::from_millis(5),
        }
    }
}

/// A workspace with its keys.
#[derive(Debug, Clone)]
pub struct WorkspaceView {
    /// The workspace.
    pub workspace: Workspace,
    /// Its keys, oldest first.
    pub keys: Vec<ProviderKey>,
}

/// What publishing did.
#[derive(Debug, Clone)]
pub struct Published {
    /// The message as stored.
    pub message: Message,
    /// False when a message with the client's `message_id` already existed (nothing created).
    pub created: bool,
}

/// State of one backend for health checks.
#[derive(Debug, Clone)]
pub struct BackendHealth {
    /// Backend name.
    pub backend: &'static str,
    /// `None` when it answers; the error otherwise.
    pub error: Option<String>,
}

/// The engine's health.
#[derive(Debug, Clone)]
pub struct Health {
    /// The database.
    pub database: BackendHealth,
    /// The queue.
    pub queue: BackendHealth,
    /// Workspace actors running.
    pub workspaces: usize,
}

impl Health {
    /// True when every backend answers.
    pub fn ok(&self) -> bool {
        self.database.error.is_none() && self.queue.error.is_none()
    }
}

struct Inner {
    deps: Arc<Deps>,
    supervisor: ActorRef<SupervisorMsg>,
    max_workers: u32,
    accepting: AtomicBool,
}

/// A running engine. Cheap to clone; every clone drives the same actors.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("workspaces", &self.inner.deps.workspaces.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Connects the backends, runs migrations, rebuilds every workspace's actors from the
    /// database and re-queues the messages that were `pending` or `processing`.
    pub async fn start(config: EngineConfig) -> Result<Self> {
        Self::start_with_http(config, http_client()).await
    }

    /// Like [`Engine::start`], with the HTTP client the providers use.
    pub async fn start_with_http(config: EngineConfig, http: reqwest::Client) -> Result<Self> {
        let store = crate::store::connect(&config.database_url).await?;
        let queue: Arc<dyn Queue> = match &config.rabbitmq_url {
            None => Arc::new(MemoryQueue::new()),
            Some(url) => Arc::new(AmqpQueue::connect(url, &config.queue_prefix).await?),
        };
        Self::start_on(store, queue, config, http).await
    }

    /// Starts on backends the caller built.
    pub async fn start_on(
        store: Arc<dyn Store>,
        queue: Arc<dyn Queue>,
        config: EngineConfig,
        http: reqwest::Client,
    ) -> Result<Self> {
        let (completions, _) = tokio::sync::broadcast::channel(65536);
        let grants = {
            let store = store.clone();
            BatchWriter::spawn(1024, move |batch: Vec<(Uuid, chrono::DateTime<Utc>)>| {
                let store = store.clone();
                async move {
                    let n = batch.len();
                    store.record_grants(&batch).await.map(|()| vec![true; n])
                }
            })
        };
        let finals = {
            let store = store.clone();
            BatchWriter::spawn(512, move |batch: Vec<(Uuid, Completion)>| {
                let store = store.clone();
                async move { store.complete_messages(&batch).await }
            })
        };
        let claims = {
            let store = store.clone();
            BatchWriter::spawn(512, move |ids: Vec<Uuid>| {
                let store = store.clone();
                async move {
                    let mut claimed: std::collections::HashMap<Uuid, Message> = store
                        .claim_messages(&ids, now())
                        .await?
                        .into_iter()
                        .map(|m| (m.id, m))
                        .collect();
                    Ok(ids.iter().map(|id| claimed.remove(id)).collect())
                }
            })
        };
        let inserts = {
            let store = store.clone();
            BatchWriter::spawn(512, move |msgs: Vec<Message>| {
                let store = store.clone();
                async move { store.insert_messages(&msgs).await }
            })
        };
        let deps = Arc::new(Deps {
            limit_guard: config.limit_guard,
            grants,
            finals,
            claims,
            inserts,
            store,
            queue,
            providers: Providers::new(http),
            retry: config.retry.clone(),
            workspaces: DashMap::new(),
            completions,
            shutdown: CancellationToken::new(),
        });
        let (supervisor, _) = Actor::spawn(None, Supervisor, deps.clone())
            .await
            .map_err(|e| Error::Internal(format!("cannot start the supervisor: {e}")))?;
        let engine = Self {
            inner: Arc::new(Inner {
                deps,
                supervisor,
                max_workers: config.max_workers,
                accepting: AtomicBool::new(true),
            }),
        };
        engine.recover().await?;
        engine.spawn_grant_pruning();
        Ok(engine)
    }

    async fn recover(&self) -> Result<()> {
        let deps = &self.inner.deps;
        let workspaces = deps.store.list_workspaces(None).await?;
        // Queues first, consumers after: empty every queue and re-queue each unfinished message
        // once from the database, before any worker can take a delivery.
        for ws in &workspaces {
            deps.queue.purge(&ws.id).await?;
        }
        let unfinished = deps.store.unfinished_messages().await?;
        let requeued = unfinished.len();
        // Oldest first, in runs of one workspace, published a thousand at a time.
        let mut run: Vec<Uuid> = Vec::new();
        let mut current: Option<WorkspaceId> = None;
        for (ws, id) in unfinished {
            if current.as_ref() != Some(&ws) || run.len() >= 1000 {
                if let Some(w) = &current {
                    deps.queue.publish_many(w, &run).await?;
                }
                run.clear();
                current = Some(ws);
            }
            run.push(id);
        }
        if let Some(w) = &current {
            deps.queue.publish_many(w, &run).await?;
        }
        for ws in &workspaces {
            self.start_workspace(&ws.id).await?;
        }
        tracing::info!(
            workspaces = workspaces.len(),
            requeued,
            database = deps.store.backend(),
            queue = deps.queue.backend(),
            "engine started"
        );
        Ok(())
    }

    /// Forgets grants that aged out of their key's window, every minute until shutdown.
    fn spawn_grant_pruning(&self) {
        let deps = self.inner.deps.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = deps.shutdown.cancelled() => return,
                    _ = tick.tick() => {
                        if let Err(e) = deps.store.prune_grants(now()).await {
                            tracing::warn!(error = %e, "cannot prune old grants");
                        }
                    }
                }
            }
        });
    }

    async fn start_workspace(&self, id: &WorkspaceId) -> Result<ActorRef<WorkspaceMsg>> {
        let r = self
            .inner
            .supervisor
            .call(|reply| SupervisorMsg::Start(id.clone(), reply), None)
            .await?;
        match r {
            ractor::rpc::CallResult::Success(Ok(actor)) => Ok(actor),
            ractor::rpc::CallResult::Success(Err(e)) => Err(Error::Internal(e)),
            _ => Err(Error::Internal("supervisor did not answer".into())),
        }
    }

    fn workspace_actor(&self, id: &WorkspaceId) -> Result<ActorRef<WorkspaceMsg>> {
        self.inner
            .deps
            .workspaces
            .get(id)
            .map(|a| a.clone())
            .ok_or_else(|| Error::not_found("workspace", id))
    }

    fn check_accepting(&self) -> Result<()> {
        if self.inner.accepting.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(Error::Unavailable("the engine is shutting down".into()))
        }
    }

    async fn ask<T: Send + 'static>(
        actor: &ActorRef<WorkspaceMsg>,
        msg: impl FnOnce(ractor::RpcReplyPort<T>) -> WorkspaceMsg,
    ) -> Result<T> {
        match actor.call(msg, None).await? {
            ractor::rpc::CallResult::Success(v) => Ok(v),
            _ => Err(Error::Internal("workspace actor did not answer".into())),
        }
    }

    /// 422 unless some key of the workspace serves `model` (`None`: unless it has a key).
    async fn check_serves(
        &self,
        actor: &ActorRef<WorkspaceMsg>,
        workspace: &WorkspaceId,
        model: Option<String>,
    ) -> Result<()> {
        let asked = model.clone();
        if Self::ask(actor, |r| WorkspaceMsg::ServesModel(asked, r)).await? {
            return Ok(());
        }
        Err(Error::Unprocessable(match model {
            Some(m) => format!("no provider key in workspace '{workspace}' serves model '{m}'"),
            None => format!("workspace '{workspace}' has no provider key; add one first"),
        }))
    }

    /// Registers a workspace with its keys and starts it with one worker.
    pub async fn register_workspace(&self, new: NewWorkspace) -> Result<WorkspaceView> {
        self.check_accepting()?;
        let now = now();
        let workspace = Workspace {
            id: new.id.clone(),
            worker_count: 1,
            created_at: now,
        };
        let keys: Vec<ProviderKey> = new
            .providers
            .into_iter()
            .enumerate()
            // Distinct creation times keep the keys listed in the order they were given.
            .map(|(i, k)| {
                k.into_key(
                    new.id.clone(),
                    now + chrono::Duration::microseconds(i as i64),
                )
            })
            .collect();
        let store = &self.inner.deps.store;
        store.create_workspace(&workspace, &keys).await?;
        if let Err(e) = self.start_workspace(&workspace.id).await {
            let _ = store.delete_workspace(&workspace.id).await;
            return Err(e);
        }
        tracing::info!(workspace = %workspace.id, keys = keys.len(), "workspace registered");
        Ok(WorkspaceView { workspace, keys })
    }

    /// Lists workspaces (all, or the one `filter` names) with their keys.
    pub async fn list_workspaces(
        &self,
        filter: Option<&WorkspaceId>,
    ) -> Result<Vec<WorkspaceView>> {
        let store = &self.inner.deps.store;
        let workspaces = store.list_workspaces(filter).await?;
        let mut keys = store.list_keys(filter).await?;
        Ok(workspaces
            .into_iter()
            .map(|workspace| {
                let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut keys)
                    .into_iter()
                    .partition(|k| k.workspace_id == workspace.id);
                keys = rest;
                WorkspaceView {
                    workspace,
                    keys: mine,
                }
            })
            .collect())
    }

    /// Deletes a workspace: stops its actors, then deletes its keys, messages and queue.
    pub async fn delete_workspace(&self, id: &WorkspaceId) -> Result<()> {
        let deps = &self.inner.deps;
        if deps.store.get_workspace(id).await?.is_none() {
            return Err(Error::not_found("workspace", id));
        }
        self.inner
            .supervisor
            .call(|reply| SupervisorMsg::Stop(id.clone(), reply), None)
            .await?;
        deps.store.delete_workspace(id).await?;
        deps.queue.delete(id).await?;
        tracing::info!(workspace = %id, "workspace deleted");
        Ok(())
    }

    /// Lists keys (all, or one workspace's).
    pub async fn list_keys(&self, workspace: Option<&WorkspaceId>) -> Result<Vec<ProviderKey>> {
        self.inner.deps.store.list_keys(workspace).await
    }

    /// Adds a key to a workspace; it takes traffic at once.
    pub async fn add_key(
        &self,
        workspace: &WorkspaceId,
        new: NewProviderKey,
    ) -> Result<ProviderKey> {
        self.check_accepting()?;
        let actor = self.workspace_actor(workspace)?;
        let key = new.into_key(workspace.clone(), now());
        self.inner.deps.store.insert_key(&key).await?;
        Self::ask(&actor, |r| WorkspaceMsg::AddKey(key.clone(), r)).await?;
        tracing::info!(workspace = %workspace, key_id = %key.id, provider = key.provider.as_str(), "provider key added");
        Ok(key)
    }

    /// Deletes a key; requests waiting on it move to the workspace's other keys.
    pub async fn delete_key(&self, key_id: Uuid) -> Result<()> {
        let store = &self.inner.deps.store;
        let key = store
            .get_key(key_id)
            .await?
            .ok_or_else(|| Error::not_found("provider key", key_id))?;
        store.delete_key(key_id).await?;
        if let Ok(actor) = self.workspace_actor(&key.workspace_id) {
            Self::ask(&actor, |r| WorkspaceMsg::RemoveKey(key_id, r)).await?;
        }
        tracing::info!(key_id = %key_id, "provider key deleted");
        Ok(())
    }

    /// Updates a key; new limits apply at once and the key is healthy again.
    pub async fn update_key(&self, key_id: Uuid, update: KeyUpdate) -> Result<ProviderKey> {
        let store = &self.inner.deps.store;
        let key = store
            .get_key(key_id)
            .await?
            .ok_or_else(|| Error::not_found("provider key", key_id))?;
        let key = update.apply(key, now())?;
        if !store.update_key(&key).await? {
            return Err(Error::not_found("provider key", key_id));
        }
        if let Ok(actor) = self.workspace_actor(&key.workspace_id) {
            Self::ask(&actor, |r| WorkspaceMsg::UpdateKey(key.clone(), r)).await?;
        }
        tracing::info!(key_id = %key_id, rate_limit = key.rate_limit.requests, period_s = key.rate_limit.period.seconds(), "provider key updated");
        Ok(key)
    }

    /// The most workers a workspace may have.
    pub fn max_workers(&self) -> u32 {
        self.inner.max_workers
    }

    /// Scales a workspace to `count` workers (absolute); busy workers finish their message.
    pub async fn scale_workers(
        &self,
        workspace: &WorkspaceId,
        count: u32,
    ) -> Result<Vec<WorkerInfo>> {
        self.check_accepting()?;
        if count > self.inner.max_workers {
            return Err(Error::Validation(format!(
                "count must be between 0 and {}",
                self.inner.max_workers
            )));
        }
        let actor = self.workspace_actor(workspace)?;
        self.inner
            .deps
            .store
            .set_worker_count(workspace, count)
            .await?;
        let workers = Self::ask(&actor, |r| WorkspaceMsg::Scale(count, r)).await?;
        tracing::info!(workspace = %workspace, count, "workers scaled");
        Ok(workers)
    }

    /// Lists a workspace's workers (including those stopping).
    pub async fn list_workers(&self, workspace: &WorkspaceId) -> Result<Vec<WorkerInfo>> {
        let actor = self.workspace_actor(workspace)?;
        Self::ask(&actor, WorkspaceMsg::Workers).await
    }

    /// Stores a message, then queues it. With a client `message_id` that already exists, returns
    /// the existing message and creates nothing.
    pub async fn publish(&self, new: NewMessage) -> Result<Published> {
        self.check_accepting()?;
        let actor = self.workspace_actor(&new.workspace_id)?;
        self.check_serves(&actor, &new.workspace_id, new.request.model.clone())
            .await?;
        let message = Message::new(new, now());
        let deps = &self.inner.deps;
        // Concurrent publishes share one transaction (group commit).
        match deps.inserts.write(message.clone()).await? {
            Inserted::Existing(existing) => {
                if existing.workspace_id != message.workspace_id {
                    return Err(Error::Conflict(format!(
                        "message_id '{}' is already used by another workspace",
                        message.id
                    )));
                }
                Ok(Published {
                    message: *existing,
                    created: false,
                })
            }
            Inserted::New => {
                if let Err(e) = deps.queue.publish(&message.workspace_id, message.id).await {
                    let failed = queue_failure(&format!("could not be queued: {e}"));
                    let _ = deps.store.complete_message(message.id, &failed).await;
                    return Err(Error::Unavailable(format!(
                        "the message was stored but could not be queued: {e}"
                    )));
                }
                Ok(Published {
                    message,
                    created: true,
                })
            }
        }
    }

    /// Most messages in one batch.
    pub const MAX_BATCH: usize = 1000;

    /// Publishes up to [`Engine::MAX_BATCH`] messages to one workspace: all are validated first,
    /// stored in one transaction, then queued; the answers come back in the same order. A
    /// client `message_id` that already exists returns that message and creates nothing.
    pub async fn publish_batch(
        &self,
        workspace: &WorkspaceId,
        items: Vec<(Option<Uuid>, MessageRequest)>,
    ) -> Result<Vec<Published>> {
        self.check_accepting()?;
        if items.is_empty() || items.len() > Self::MAX_BATCH {
            return Err(Error::Validation(format!(
                "a batch holds 1 to {} messages (got {})",
                Self::MAX_BATCH,
                items.len()
            )));
        }
        let actor = self.workspace_actor(workspace)?;
        let mut seen = std::collections::HashSet::new();
        for id in items.iter().filter_map(|(id, _)| *id) {
            if !seen.insert(id) {
                return Err(Error::Validation(format!(
                    "message_id '{id}' appears twice in the batch"
                )));
            }
        }
        let models: std::collections::BTreeSet<Option<String>> =
            items.iter().map(|(_, r)| r.model.clone()).collect();
        for model in models {
            self.check_serves(&actor, workspace, model).await?;
        }
        let now = now();
        let messages: Vec<Message> = items
            .into_iter()
            .map(|(id, request)| {
                Message::new(
                    NewMessage {
                        id,
                        workspace_id: workspace.clone(),
                        request,
                    },
                    now,
                )
            })
            .collect();
        let deps = &self.inner.deps;
        let inserted = deps.store.insert_messages(&messages).await?;
        let mut out = Vec::with_capacity(messages.len());
        for (message, ins) in messages.into_iter().zip(inserted) {
            out.push(match ins {
                Inserted::New => Published {
                    message,
                    created: true,
                },
                Inserted::Existing(existing) => {
                    if existing.workspace_id != *workspace {
                        return Err(Error::Conflict(format!(
                            "message_id '{}' is already used by another workspace",
                            existing.id
                        )));
                    }
                    Published {
                        message: *existing,
                        created: false,
                    }
                }
            });
        }
        let fresh: Vec<Uuid> = out
            .iter()
            .filter(|p| p.created)
            .map(|p| p.message.id)
            .collect();
        if let Err(e) = deps.queue.publish_many(workspace, &fresh).await {
            // Which of them the queue took is unknown: mark them failed, so nothing is stuck
            // `pending` unseen (a re-publish with the same ids returns them failed).
            let reason = format!("could not be queued: {e}");
            for id in &fresh {
                let _ = deps
                    .store
                    .complete_message(*id, &queue_failure(&reason))
                    .await;
            }
            return Err(Error::Unavailable(format!(
                "{} of the batch's messages were stored but could not be queued (marked failed): {e}",
                fresh.len()
            )));
        }
        Ok(out)
    }

    /// A page of a workspace's messages (optionally of one status), by `sequence_index` (absent
    /// last), then creation.
    pub async fn list_messages(
        &self,
        workspace: &WorkspaceId,
        status: Option<MessageStatus>,
        limit: u32,
        offset: u64,
    ) -> Result<MessagePage> {
        let store = &self.inner.deps.store;
        if store.get_workspace(workspace).await?.is_none() {
            return Err(Error::not_found("workspace", workspace));
        }
        store.list_messages(workspace, status, limit, offset).await
    }

    /// One message.
    pub async fn get_message(&self, id: Uuid) -> Result<Message> {
        self.inner
            .deps
            .store
            .get_message(id)
            .await?
            .ok_or_else(|| Error::not_found("message", id))
    }

    /// A stream of the ids of messages that reach `success` or `failed` from now on. A receiver
    /// that falls behind gets `RecvError::Lagged(n)`: `n` completions it did not see.
    pub fn subscribe_completions(&self) -> tokio::sync::broadcast::Receiver<Uuid> {
        self.inner.deps.completions.subscribe()
    }

    /// Waits until a message is `success` or `failed` (or `timeout` passes) and returns it.
    pub async fn wait_for_message(&self, id: Uuid, timeout: Duration) -> Result<Message> {
        let mut done = self.inner.deps.completions.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = self.get_message(id).await?;
            if msg.status.is_final() {
                return Ok(msg);
            }
            loop {
                match tokio::time::timeout_at(deadline, done.recv()).await {
                    Err(_) => return self.get_message(id).await,
                    Ok(Ok(finished)) if finished != id => continue,
                    // Ours, or we lagged behind: look again.
                    Ok(_) => break,
                }
            }
        }
    }

    /// Checks the backends.
    pub async fn health(&self) -> Health {
        let deps = &self.inner.deps;
        Health {
            database: BackendHealth {
                backend: deps.store.backend(),
                error: deps.store.ping().await.err().map(|e| e.to_string()),
            },
            queue: BackendHealth {
                backend: deps.queue.backend(),
                error: deps.queue.ping().await.err().map(|e| e.to_string()),
            },
            workspaces: deps.workspaces.len(),
        }
    }

    /// Stops taking new work, lets workers finish the call in flight (up to `grace`), then stops
    /// every actor. Messages not finished stay in the database and are re-queued at the next start.
    pub async fn shutdown(&self, grace: Duration) {
        let inner = &self.inner;
        if inner.accepting.swap(false, Ordering::AcqRel) {
            tracing::info!(grace_s = grace.as_secs_f64(), "engine shutting down");
        }
        inner.deps.shutdown.cancel();
        let actors: Vec<ActorRef<WorkspaceMsg>> = inner
            .deps
            .workspaces
            .iter()
            .map(|e| e.value().clone())
            .collect();
        let mut workers = Vec::new();
        for actor in &actors {
            if let Ok(cells) = Self::ask(actor, WorkspaceMsg::StopWorkers).await {
                workers.extend(cells);
            }
        }
        let all_stopped = futures::future::join_all(workers.iter().map(|w| w.wait(None)));
        if tokio::time::timeout(grace, all_stopped).await.is_err() {
            tracing::warn!("workers still busy after the grace period; stopping them");
        }
        for actor in &actors {
            actor.kill();
        }
        inner.deps.workspaces.clear();
        let _ = inner
            .supervisor
            .stop_and_wait(None, Some(Duration::from_secs(5)))
            .await;
    }
}
