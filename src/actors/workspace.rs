//! The workspace actor: owns one provider-key actor per key and the workspace's consumers.
//!
//! It routes each permit request to the healthy key serving the model that can send soonest
//! (it keeps, per key, the instant the key said a further request could go; every key message
//! that changes it replies with the new instant, so the cache is exact). It applies provider
//! outcomes (429 cool-down, a limit the provider says is used up, 401/403 unhealthy) and scales
//! workers. It never awaits network I/O:
//! its only awaits are replies from its own key actors, which answer in microseconds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Deps;
use super::consumer::{ConsumerActor, ConsumerArgs, WorkerStatus};
use super::provider_key::{KeyArgs, KeyMsg, Permit, PermitDenied, PermitRequest, ProviderKeyActor};
use crate::domain::{ProviderKey, WorkerInfo, WorkspaceId};

/// What a worker reports about a provider call made with a permit.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeyOutcome {
    /// 429: cool the key down (for `retry_after`, or the default cool-down).
    RateLimited(Option<Duration>),
    /// A success after which the provider said the key's limit is used up: pause the key this
    /// long (until the provider's reset), so the next request does not earn a 429.
    Exhausted(Duration),
    /// 401/403: the key is not accepted until it is updated.
    Unauthorized,
}

pub(crate) enum WorkspaceMsg {
    /// A worker wants a permit for `model` (`None`: any key).
    Acquire {
        model: Option<String>,
        /// The prompt part of the token estimate; each key adds its completion allowance.
        prompt_tokens: u64,
        reply: oneshot::Sender<Result<Permit, PermitDenied>>,
    },
    /// A worker reports what a call on `key_id` did.
    Outcome { key_id: Uuid, outcome: KeyOutcome },
    /// Does some key serve this model (`None`: is there any key)?
    ServesModel(Option<String>, RpcReplyPort<bool>),
    /// A key was added.
    AddKey(ProviderKey, RpcReplyPort<()>),
    /// A key was updated.
    UpdateKey(ProviderKey, RpcReplyPort<()>),
    /// A key was deleted.
    RemoveKey(Uuid, RpcReplyPort<()>),
    /// Scale to an absolute number of workers; replies with every worker.
    Scale(u32, RpcReplyPort<Vec<WorkerInfo>>),
    /// Lists the workers.
    Workers(RpcReplyPort<Vec<WorkerInfo>>),
    /// Engine shutdown: every worker stops after its message; replies with them to wait on.
    StopWorkers(RpcReplyPort<Vec<ractor::ActorCell>>),
    /// Try again to start a child whose restart failed (e.g. the broker or database was down).
    Respawn(Respawn),
}

/// A child to start again.
#[derive(Clone)]
pub(crate) enum Respawn {
    Worker(u64, Option<Arc<WorkerStatus>>),
    Key(Arc<ProviderKey>),
}

pub(crate) struct WorkspaceActor;

pub(crate) struct WorkspaceArgs {
    pub id: WorkspaceId,
    pub deps: Arc<Deps>,
}

struct KeyEntry {
    key: Arc<ProviderKey>,
    actor: ActorRef<KeyMsg>,
    /// Earliest instant a further request could be granted on this key.
    next: Instant,
}

struct WorkerEntry {
    actor: ActorRef<super::consumer::ConsumerMsg>,
    status: Arc<WorkerStatus>,
    cancel: CancellationToken,
}

pub(crate) struct WorkspaceState {
    id: WorkspaceId,
    deps: Arc<Deps>,
    keys: HashMap<Uuid, KeyEntry>,
    workers: BTreeMap<u64, WorkerEntry>,
    next_worker: u64,
    /// Which child is which, for supervision events.
    children: HashMap<ActorId, Child>,
    /// Workers stop for good (engine shutdown): never restart them.
    closing: bool,
}

#[derive(Clone, Copy)]
enum Child {
    Key(Uuid),
    Worker(u64),
}

impl WorkspaceState {
    /// Starts a child again; if that fails, logs it and tries again in a second, so a backend
    /// outage never takes the workspace down with it.
    async fn respawn(&mut self, myself: &ActorRef<WorkspaceMsg>, what: Respawn) {
        // Engine shutdown stops every worker on its own: never restart them then.
        if self.closing || self.deps.shutdown.is_cancelled() {
            self.closing = true;
            return;
        }
        let result = match what.clone() {
            Respawn::Worker(id, status) => {
                if self.workers.contains_key(&id) {
                    return;
                }
                self.spawn_worker(myself, id, status).await
            }
            Respawn::Key(key) => {
                if self.keys.contains_key(&key.id) {
                    return;
                }
                self.spawn_key(myself, key, None).await
            }
        };
        if let Err(e) = result {
            tracing::error!(workspace = %self.id, error = %e, "cannot restart a child; trying again in 1 s");
            myself.send_after(std::time::Duration::from_secs(1), move || {
                WorkspaceMsg::Respawn(what)
            });
        }
    }

    async fn spawn_key(
        &mut self,
        myself: &ActorRef<WorkspaceMsg>,
        key: Arc<ProviderKey>,
        recorded: Option<Vec<chrono::DateTime<chrono::Utc>>>,
    ) -> Result<(), ActorProcessingErr> {
        let args = KeyArgs {
            key: key.clone(),
            store: self.deps.store.clone(),
            guard: self.deps.limit_guard,
            recorded,
        };
        let (actor, _) =
            Actor::spawn_linked(None, ProviderKeyActor, args, myself.get_cell()).await?;
        self.children.insert(actor.get_id(), Child::Key(key.id));
        self.keys.insert(
            key.id,
            KeyEntry {
                key,
                actor,
                next: Instant::now(),
            },
        );
        Ok(())
    }

    async fn spawn_worker(
        &mut self,
        myself: &ActorRef<WorkspaceMsg>,
        id: u64,
        status: Option<Arc<WorkerStatus>>,
    ) -> Result<(), ActorProcessingErr> {
        let status = status.unwrap_or_else(|| Arc::new(WorkerStatus::new(id)));
        let cancel = CancellationToken::new();
        let args = ConsumerArgs {
            workspace: self.id.clone(),
            workspace_actor: myself.clone(),
            deps: self.deps.clone(),
            status: status.clone(),
            cancel: cancel.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, ConsumerActor, args, myself.get_cell()).await?;
        self.children.insert(actor.get_id(), Child::Worker(id));
        self.workers.insert(
            id,
            WorkerEntry {
                actor,
                status,
                cancel,
            },
        );
        Ok(())
    }

    fn worker_infos(&self) -> Vec<WorkerInfo> {
        self.workers.values().map(|w| w.status.snapshot()).collect()
    }

    async fn scale(
        &mut self,
        myself: &ActorRef<WorkspaceMsg>,
        target: u32,
    ) -> Result<(), ActorProcessingErr> {
        let active: Vec<u64> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.cancel.is_cancelled())
            .map(|(id, _)| *id)
            .collect();
        let target = target as usize;
        if target > active.len() {
            for _ in active.len()..target {
                self.next_worker += 1;
                let id = self.next_worker;
                self.spawn_worker(myself, id, None).await?;
            }
        } else if target < active.len() {
            // Idle workers go first, then the newest busy ones; busy ones finish their message.
            let mut victims: Vec<u64> = active.clone();
            victims.sort_by_key(|id| {
                let busy = self.workers[id].status.is_busy();
                (busy, std::cmp::Reverse(*id))
            });
            for id in victims.into_iter().take(active.len() - target) {
                if let Some(w) = self.workers.get(&id) {
                    w.status.set_stopping();
                    w.cancel.cancel();
                }
            }
        }
        Ok(())
    }

    /// Sends a permit request to the healthy key serving its model that can send soonest.
    async fn route(&mut self, req: PermitRequest) {
        let now = Instant::now();
        let model = req.model.as_deref();
        let best = self
            .keys
            .values()
            .filter(|k| k.key.healthy && model.is_none_or(|m| k.key.config.model == m))
            .min_by_key(|k| (k.next.max(now), k.key.created_at, k.key.id))
            .map(|k| k.key.id);
        let Some(key_id) = best else {
            let serving = self
                .keys
                .values()
                .any(|k| model.is_none_or(|m| k.key.config.model == m));
            let reason = match (model, serving) {
                (Some(m), true) => format!(
                    "every provider key serving model '{m}' was rejected by the provider (401/403); update a key"
                ),
                (None, true) => "every provider key of the workspace was rejected by the provider (401/403); update a key".to_string(),
                (Some(m), false) => format!("no provider key in workspace '{}' serves model '{m}'", self.id),
                (None, false) => format!("workspace '{}' has no provider key", self.id),
            };
            let _ = req.reply.send(Err(PermitDenied(reason)));
            return;
        };
        let Some(entry) = self.keys.get_mut(&key_id) else {
            return;
        };
        match entry.actor.call(|r| KeyMsg::Enqueue(req, r), None).await {
            Ok(ractor::rpc::CallResult::Success(next)) => entry.next = next,
            // The key actor is gone (restarting): the request was dropped with it and the
            // worker asks again.
            other => {
                tracing::warn!(key_id = %key_id, ok = other.is_ok(), "key actor did not take a permit request")
            }
        }
    }

    async fn reroute(&mut self, reqs: Vec<PermitRequest>) {
        for r in reqs {
            self.route(r).await;
        }
    }

    /// Pauses a key for `d` and re-routes the requests that were waiting on it.
    async fn pause_key(&mut self, key_id: Uuid, d: Duration) {
        let Some(entry) = self.keys.get_mut(&key_id) else {
            return;
        };
        let until = Instant::now() + d;
        if let Ok(ractor::rpc::CallResult::Success((handed_back, next))) =
            entry.actor.call(|r| KeyMsg::Pause(until, r), None).await
        {
            entry.next = next;
            self.reroute(handed_back).await;
        }
    }

    async fn outcome(&mut self, key_id: Uuid, outcome: KeyOutcome) {
        match outcome {
            KeyOutcome::RateLimited(retry_after) => {
                let d = retry_after.unwrap_or(self.deps.retry.default_cooldown);
                self.pause_key(key_id, d).await;
            }
            KeyOutcome::Exhausted(d) => {
                tracing::info!(workspace = %self.id, key_id = %key_id, pause_ms = d.as_millis() as u64, "provider reports the key's limit used up; pausing it until the reset");
                self.pause_key(key_id, d).await;
            }
            KeyOutcome::Unauthorized => {
                let Some(entry) = self.keys.get_mut(&key_id) else {
                    return;
                };
                if !entry.key.healthy {
                    return;
                }
                tracing::warn!(workspace = %self.id, key_id = %key_id, "provider rejected the key; marked unhealthy until it is updated");
                let mut key = (*entry.key).clone();
                key.healthy = false;
                entry.key = Arc::new(key);
                let store = self.deps.store.clone();
                tokio::spawn(async move {
                    if let Err(e) = store.set_key_healthy(key_id, false).await {
                        tracing::error!(key_id = %key_id, error = %e, "cannot store key health");
                    }
                });
                if let Ok(ractor::rpc::CallResult::Success(handed_back)) =
                    entry.actor.call(KeyMsg::Drain, None).await
                {
                    self.reroute(handed_back).await;
                }
            }
        }
    }
}

#[ractor::async_trait]
impl Actor for WorkspaceActor {
    type Msg = WorkspaceMsg;
    type State = WorkspaceState;
    type Arguments = WorkspaceArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let ws = args
            .deps
            .store
            .get_workspace(&args.id)
            .await?
            .ok_or_else(|| format!("workspace '{}' is not stored", args.id))?;
        let keys = args.deps.store.list_keys(Some(&args.id)).await?;
        let mut state = WorkspaceState {
            id: args.id,
            deps: args.deps,
            keys: HashMap::new(),
            workers: BTreeMap::new(),
            next_worker: 0,
            children: HashMap::new(),
            closing: false,
        };
        // Every key's recorded grants in one read (each key keeps those within its period).
        let longest = keys
            .iter()
            .map(|k| k.rate_limit.period.duration() + state.deps.limit_guard)
            .max()
            .unwrap_or_default();
        let since = chrono::Utc::now()
            - chrono::Duration::from_std(longest).unwrap_or(chrono::Duration::days(7));
        let mut recorded: HashMap<Uuid, Vec<chrono::DateTime<chrono::Utc>>> = HashMap::new();
        if !keys.is_empty() {
            for (key_id, at) in state.deps.store.recent_grants(&state.id, since).await? {
                recorded.entry(key_id).or_default().push(at);
            }
        }
        for key in keys {
            let mine = recorded.remove(&key.id).unwrap_or_default();
            state.spawn_key(&myself, Arc::new(key), Some(mine)).await?;
        }
        state.scale(&myself, ws.worker_count).await?;
        tracing::info!(workspace = %state.id, keys = state.keys.len(), workers = ws.worker_count, "workspace started");
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.closing = true;
        for w in state.workers.values() {
            w.cancel.cancel();
            w.actor.kill();
        }
        for k in state.keys.values() {
            k.actor.kill();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkspaceMsg::Acquire {
                model,
                prompt_tokens,
                reply,
            } => {
                state
                    .route(PermitRequest {
                        prompt_tokens,
                        model,
                        reply,
                    })
                    .await;
            }
            WorkspaceMsg::Outcome { key_id, outcome } => state.outcome(key_id, outcome).await,
            WorkspaceMsg::ServesModel(model, reply) => {
                let serves = state
                    .keys
                    .values()
                    .any(|k| model.as_deref().is_none_or(|m| k.key.config.model == m));
                let _ = reply.send(serves);
            }
            WorkspaceMsg::AddKey(key, reply) => {
                state.respawn(&myself, Respawn::Key(Arc::new(key))).await;
                let _ = reply.send(());
            }
            WorkspaceMsg::Respawn(what) => state.respawn(&myself, what).await,
            WorkspaceMsg::UpdateKey(key, reply) => {
                if let Some(entry) = state.keys.get_mut(&key.id) {
                    let key = Arc::new(key);
                    entry.key = key.clone();
                    if let Ok(ractor::rpc::CallResult::Success(next)) =
                        entry.actor.call(|r| KeyMsg::Update(key, r), None).await
                    {
                        entry.next = next;
                    }
                }
                let _ = reply.send(());
            }
            WorkspaceMsg::RemoveKey(key_id, reply) => {
                if let Some(entry) = state.keys.remove(&key_id) {
                    state.children.remove(&entry.actor.get_id());
                    let handed_back = match entry.actor.call(KeyMsg::Drain, None).await {
                        Ok(ractor::rpc::CallResult::Success(v)) => v,
                        _ => Vec::new(),
                    };
                    entry.actor.stop(None);
                    state.reroute(handed_back).await;
                }
                let _ = reply.send(());
            }
            WorkspaceMsg::Scale(target, reply) => {
                state.scale(&myself, target).await?;
                let _ = reply.send(state.worker_infos());
            }
            WorkspaceMsg::Workers(reply) => {
                let _ = reply.send(state.worker_infos());
            }
            WorkspaceMsg::StopWorkers(reply) => {
                state.closing = true;
                for w in state.workers.values() {
                    w.status.set_stopping();
                    w.cancel.cancel();
                }
                let _ = reply.send(state.workers.values().map(|w| w.actor.get_cell()).collect());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                match state.children.remove(&cell.get_id()) {
                    Some(Child::Worker(id)) => {
                        let stopping = state
                            .workers
                            .get(&id)
                            .is_none_or(|w| w.cancel.is_cancelled());
                        let status = state.workers.remove(&id).map(|w| w.status);
                        if !stopping && !state.closing {
                            tracing::warn!(workspace = %state.id, worker = id, ?reason, "worker stopped unexpectedly; restarting it");
                            state.respawn(&myself, Respawn::Worker(id, status)).await;
                        }
                    }
                    Some(Child::Key(key_id)) => {
                        if let Some(entry) = state.keys.remove(&key_id)
                            && !state.closing
                        {
                            tracing::warn!(workspace = %state.id, key_id = %key_id, ?reason, "key actor stopped unexpectedly; restarting it");
                            state.respawn(&myself, Respawn::Key(entry.key)).await;
                        }
                    }
                    None => {}
                }
            }
            SupervisionEvent::ActorFailed(cell, err) => match state.children.remove(&cell.get_id())
            {
                Some(Child::Worker(id)) => {
                    tracing::error!(workspace = %state.id, worker = id, error = %err, "worker failed; restarting it");
                    let entry = state.workers.remove(&id);
                    let stopping = entry.as_ref().is_none_or(|w| w.cancel.is_cancelled());
                    if !stopping && !state.closing {
                        state
                            .respawn(&myself, Respawn::Worker(id, entry.map(|w| w.status)))
                            .await;
                    }
                }
                Some(Child::Key(key_id)) => {
                    tracing::error!(workspace = %state.id, key_id = %key_id, error = %err, "key actor failed; restarting it");
                    if let Some(entry) = state.keys.remove(&key_id)
                        && !state.closing
                    {
                        state.respawn(&myself, Respawn::Key(entry.key)).await;
                    }
                }
                None => {}
            },
            _ => {}
        }
        Ok(())
    }
}
