//! The root actor: starts, stops and restarts workspace actors, and keeps the engine's
//! `DashMap` of them current. Restarting a workspace rebuilds it from the database (its
//! `pre_start` loads keys and the worker count), so the database stays the source of truth.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::Deps;
use super::workspace::{WorkspaceActor, WorkspaceArgs, WorkspaceMsg};
use crate::domain::WorkspaceId;

pub(crate) enum SupervisorMsg {
    /// Starts the actor of a stored workspace.
    Start(
        WorkspaceId,
        RpcReplyPort<Result<ActorRef<WorkspaceMsg>, String>>,
    ),
    /// Stops a workspace actor and its children (workspace deleted).
    Stop(WorkspaceId, RpcReplyPort<()>),
}

pub(crate) struct Supervisor;

pub(crate) struct SupervisorState {
    deps: Arc<Deps>,
    children: HashMap<ActorId, WorkspaceId>,
    stopping: HashSet<ActorId>,
}

impl SupervisorState {
    async fn start(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: WorkspaceId,
    ) -> Result<ActorRef<WorkspaceMsg>, String> {
        if let Some(existing) = self.deps.workspaces.get(&id) {
            return Ok(existing.clone());
        }
        let args = WorkspaceArgs {
            id: id.clone(),
            deps: self.deps.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, WorkspaceActor, args, myself.get_cell())
            .await
            .map_err(|e| format!("cannot start workspace '{id}': {e}"))?;
        self.children.insert(actor.get_id(), id.clone());
        self.deps.workspaces.insert(id, actor.clone());
        Ok(actor)
    }
}

#[ractor::async_trait]
impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Arc<Deps>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        deps: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SupervisorState {
            deps,
            children: HashMap::new(),
            stopping: HashSet::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Start(id, reply) => {
                let r = state.start(&myself, id).await;
                let _ = reply.send(r);
            }
            SupervisorMsg::Stop(id, reply) => {
                if let Some((_, actor)) = state.deps.workspaces.remove(&id) {
                    state.stopping.insert(actor.get_id());
                    let _ = actor
                        .stop_and_wait(
                            Some("workspace deleted".into()),
                            Some(Duration::from_secs(5)),
                        )
                        .await;
                }
                let _ = reply.send(());
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
        let (cell, failure) = match evt {
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, reason),
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            _ => return Ok(()),
        };
        let Some(id) = state.children.remove(&cell.get_id()) else {
            return Ok(());
        };
        if state.stopping.remove(&cell.get_id()) || state.deps.shutdown.is_cancelled() {
            return Ok(());
        }
        // Still registered: it died on its own. Rebuild it from the database.
        if state.deps.workspaces.remove(&id).is_some() {
            tracing::error!(workspace = %id, reason = ?failure, "workspace actor died; restarting it");
            if let Err(e) = state.start(&myself, id.clone()).await {
                tracing::error!(workspace = %id, error = %e, "workspace restart failed");
            }
        }
        Ok(())
    }
}
