//! The queue between publishing and the workers: one queue of message ids per workspace.
//!
//! Only ids travel on the queue; the message itself is stored before it is queued, so the
//! database is the source of truth and a queue entry that repeats is harmless (processing is
//! idempotent by id). A delivery is acknowledged only after the message's final state is stored;
//! a delivery dropped without `ack` is given back to the queue.

mod amqp;
mod memory;

use async_trait::async_trait;
use uuid::Uuid;

pub use amqp::{AmqpQueue, DEFAULT_PREFIX};
pub use memory::MemoryQueue;

use crate::domain::WorkspaceId;
use crate::error::Result;

/// One message id taken from a queue.
#[async_trait]
pub trait Delivery: Send {
    /// The message to process.
    fn message_id(&self) -> Uuid;
    /// Removes it from the queue for good (after its final state is stored).
    async fn ack(self: Box<Self>) -> Result<()>;
}

/// A stream of deliveries for one worker.
#[async_trait]
pub trait QueueConsumer: Send {
    /// The next delivery; `None` once the queue is gone (workspace deleted, engine stopping).
    async fn next(&mut self) -> Option<Result<Box<dyn Delivery>>>;
}

/// A queue backend.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Appends a message id to the workspace's queue; returns once the queue holds it.
    async fn publish(&self, workspace: &WorkspaceId, id: Uuid) -> Result<()>;
    /// Appends many ids (in order); returns once the queue holds them all. Backends with
    /// confirms publish them all and then await the confirms.
    async fn publish_many(&self, workspace: &WorkspaceId, ids: &[Uuid]) -> Result<()> {
        for id in ids {
            self.publish(workspace, *id).await?;
        }
        Ok(())
    }
    /// A consumer of the workspace's queue that holds at most `prefetch` unacked deliveries.
    async fn consumer(
        &self,
        workspace: &WorkspaceId,
        prefetch: u16,
    ) -> Result<Box<dyn QueueConsumer>>;
    /// Deletes the workspace's queue and what it holds.
    async fn delete(&self, workspace: &WorkspaceId) -> Result<()>;
    /// Empties the workspace's queue (start-up: the engine then re-queues every unfinished
    /// message from the database, the source of truth, so nothing is queued twice).
    async fn purge(&self, workspace: &WorkspaceId) -> Result<()>;
    /// Checks the backend answers.
    async fn ping(&self) -> Result<()>;
    /// Name of the backend ("memory", "rabbitmq").
    fn backend(&self) -> &'static str;
}
