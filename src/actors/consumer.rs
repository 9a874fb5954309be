//! The consumer actor (a worker): takes one message id at a time from its workspace's queue and
//! processes it (see `processing`).
//!
//! Scaling down cancels the worker's token: it finishes the message in hand, then stops itself.
//! Engine shutdown also cancels `Deps::shutdown`, which makes a worker that is still waiting for a
//! permit give its message back (it stays `processing` and is re-queued at the next start).

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Deps;
use super::processing::{Processed, process};
use super::workspace::WorkspaceMsg;
use crate::domain::{WorkerInfo, WorkerState, WorkspaceId};
use crate::queue::QueueConsumer;

/// A worker's live status, shared with its workspace actor for listing.
#[derive(Debug)]
pub(crate) struct WorkerStatus {
    id: u64,
    started_at: DateTime<Utc>,
    inner: Mutex<StatusInner>,
}

#[derive(Debug, Default)]
struct StatusInner {
    current: Option<Uuid>,
    processed: u64,
    stopping: bool,
}

impl WorkerStatus {
    pub(crate) fn new(id: u64) -> Self {
        Self {
            id,
            started_at: Utc::now(),
            inner: Mutex::new(StatusInner::default()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut StatusInner) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub(crate) fn snapshot(&self) -> WorkerInfo {
        self.with(|s| WorkerInfo {
            id: self.id,
            state: if s.stopping {
                WorkerState::Stopping
            } else if s.current.is_some() {
                WorkerState::Busy
            } else {
                WorkerState::Idle
            },
            processed: s.processed,
            current_message: s.current,
            started_at: self.started_at,
        })
    }

    pub(crate) fn is_busy(&self) -> bool {
        self.with(|s| s.current.is_some())
    }

    pub(crate) fn set_stopping(&self) {
        self.with(|s| s.stopping = true);
    }

    fn begin(&self, id: Uuid) {
        self.with(|s| s.current = Some(id));
    }

    fn end(&self, counted: bool) {
        self.with(|s| {
            s.current = None;
            if counted {
                s.processed += 1;
            }
        });
    }
}

pub(crate) enum ConsumerMsg {
    /// Start the work loop (sent to itself at start).
    Run,
}

pub(crate) struct ConsumerArgs {
    pub workspace: WorkspaceId,
    pub workspace_actor: ActorRef<WorkspaceMsg>,
    pub deps: Arc<Deps>,
    pub status: Arc<WorkerStatus>,
    pub cancel: CancellationToken,
}

pub(crate) struct ConsumerActor;

pub(crate) struct ConsumerState {
    args: ConsumerArgs,
    queue: Box<dyn QueueConsumer>,
}

#[ractor::async_trait]
impl Actor for ConsumerActor {
    type Msg = ConsumerMsg;
    type State = ConsumerState;
    type Arguments = ConsumerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let queue = args.deps.queue.consumer(&args.workspace, 1).await?;
        args.status.end(false);
        myself.cast(ConsumerMsg::Run)?;
        Ok(ConsumerState { args, queue })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ConsumerMsg::Run => {
                run(state).await;
                myself.stop(Some("worker loop ended".into()));
            }
        }
        Ok(())
    }
}

/// Takes deliveries until cancelled or the queue is gone.
async fn run(state: &mut ConsumerState) {
    let args = &state.args;
    loop {
        let delivery = tokio::select! {
            biased;
            _ = args.cancel.cancelled() => return,
            _ = args.deps.shutdown.cancelled() => return,
            d = state.queue.next() => d,
        };
        let delivery = match delivery {
            None => return,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                tracing::warn!(workspace = %args.workspace, error = %e, "queue error; retrying shortly");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
        };
        let id = delivery.message_id();
        args.status.begin(id);
        let outcome = process(&args.deps, &args.workspace_actor, id).await;
        match outcome {
            Processed::Done => {
                if let Err(e) = delivery.ack().await {
                    tracing::warn!(message_id = %id, error = %e, "ack failed; the message may be delivered again");
                }
                args.status.end(true);
            }
            Processed::Skipped => {
                let _ = delivery.ack().await;
                args.status.end(false);
            }
            Processed::Retry => {
                // A backend failed: give the message back and pause before the next one.
                drop(delivery);
                args.status.end(false);
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Processed::GivenBack => {
                // Not acknowledged: dropping the delivery gives it back to the queue; the row
                // stays `processing` and is re-queued at the next start.
                drop(delivery);
                args.status.end(false);
                return;
            }
        }
    }
}
