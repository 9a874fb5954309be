//! The in-process queue: an unbounded MPMC channel per workspace.
//!
//! Nothing here is durable on its own: at start-up the engine re-queues every message the
//! database holds as `pending` or `processing`. A delivery dropped without `ack` (a worker that
//! failed mid-message) is pushed back to its queue, so nothing is lost while the process lives.

use async_trait::async_trait;
use dashmap::DashMap;
use uuid::Uuid;

use super::{Delivery, Queue, QueueConsumer};
use crate::domain::WorkspaceId;
use crate::error::{Error, Result};

/// A workspace's queue; the token is cancelled when the queue is deleted.
type Channel = (
    async_channel::Sender<Uuid>,
    async_channel::Receiver<Uuid>,
    tokio_util::sync::CancellationToken,
);

/// In-process implementation of [`Queue`].
#[derive(Debug, Default)]
pub struct MemoryQueue {
    queues: DashMap<WorkspaceId, Channel>,
}

impl MemoryQueue {
    /// An empty queue set.
    pub fn new() -> Self {
        Self::default()
    }

    fn channel(&self, ws: &WorkspaceId) -> Channel {
        self.queues
            .entry(ws.clone())
            .or_insert_with(|| {
                let (tx, rx) = async_channel::unbounded();
                (tx, rx, tokio_util::sync::CancellationToken::new())
            })
            .clone()
    }

    /// Ids waiting in a workspace's queue (not counting deliveries in flight).
    pub fn len(&self, ws: &WorkspaceId) -> usize {
        self.queues.get(ws).map_or(0, |c| c.1.len())
    }

    /// True when the workspace's queue holds nothing.
    pub fn is_empty(&self, ws: &WorkspaceId) -> bool {
        self.len(ws) == 0
    }
}

struct MemoryDelivery {
    id: Uuid,
    requeue: Option<async_channel::Sender<Uuid>>,
    /// One of its consumer's `prefetch` slots, freed when it is acked or dropped.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for MemoryDelivery {
    fn drop(&mut self) {
        if let Some(tx) = self.requeue.take() {
            // Not acknowledged: give it back (fails only if the queue was deleted).
            let _ = tx.try_send(self.id);
        }
    }
}

#[async_trait]
impl Delivery for MemoryDelivery {
    fn message_id(&self) -> Uuid {
        self.id
    }

    async fn ack(mut self: Box<Self>) -> Result<()> {
        self.requeue = None;
        Ok(())
    }
}

struct MemoryConsumer {
    rx: async_channel::Receiver<Uuid>,
    tx: async_channel::Sender<Uuid>,
    deleted: tokio_util::sync::CancellationToken,
    slots: std::sync::Arc<tokio::sync::Semaphore>,
}

#[async_trait]
impl QueueConsumer for MemoryConsumer {
    async fn next(&mut self) -> Option<Result<Box<dyn Delivery>>> {
        let slot = tokio::select! {
            _ = self.deleted.cancelled() => return None,
            slot = self.slots.clone().acquire_owned() => slot.ok()?,
        };
        let id = tokio::select! {
            _ = self.deleted.cancelled() => return None,
            id = self.rx.recv() => id.ok()?,
        };
        Some(Ok(Box::new(MemoryDelivery {
            id,
            requeue: Some(self.tx.clone()),
            _slot: slot,
        })))
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn publish(&self, workspace: &WorkspaceId, id: Uuid) -> Result<()> {
        self.channel(workspace)
            .0
            .send(id)
            .await
            .map_err(|_| Error::Queue(format!("queue of workspace '{workspace}' is closed")))
    }

    async fn consumer(
        &self,
        workspace: &WorkspaceId,
        prefetch: u16,
    ) -> Result<Box<dyn QueueConsumer>> {
        let (tx, rx, deleted) = self.channel(workspace);
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(prefetch.max(1).into()));
        Ok(Box::new(MemoryConsumer {
            rx,
            tx,
            deleted,
            slots,
        }))
    }

    async fn delete(&self, workspace: &WorkspaceId) -> Result<()> {
        if let Some((_, (tx, rx, deleted))) = self.queues.remove(workspace) {
            // Closed (no send lands after), emptied, and its consumers told: none of them may
            // hand out a deleted id.
            tx.close();
            while rx.try_recv().is_ok() {}
            deleted.cancel();
        }
        Ok(())
    }

    async fn purge(&self, workspace: &WorkspaceId) -> Result<()> {
        if let Some(c) = self.queues.get(workspace) {
            while c.1.try_recv().is_ok() {}
        }
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}
