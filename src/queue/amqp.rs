//! The RabbitMQ queue (lapin): one durable queue per workspace, named
//! `<prefix>.ws.<workspace_id>` (prefix `ai-rate-limiter` by default), quorum where the broker
//! supports it, classic durable otherwise.
//!
//! - Publishing uses publisher confirms: `publish` returns only once the broker confirmed; a
//!   nack or a confirm that does not come within [`CONFIRM_TIMEOUT`] is an error.
//! - Messages are persistent (delivery mode 2) and carry the message id as payload and
//!   `message_id` property.
//! - Every consumer has its own channel with its own prefetch, so the broker never hands a
//!   workspace more unacked deliveries than it has workers. Acks are manual and sent only after
//!   the final state is stored; a delivery dropped without ack is nacked with requeue.
//! - Connection loss: lapin's `enable_auto_recover` recovers channels and consumers; when that
//!   fails, the next operation reconnects with backoff. Nothing accepted is lost: the database
//!   holds every message and the engine re-queues unfinished ones at start-up.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashSet;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::{Delivery, Queue, QueueConsumer};
use crate::domain::WorkspaceId;
use crate::error::{Error, Result};

/// How long `publish` waits for the broker's confirm.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// Default queue-name prefix.
pub const DEFAULT_PREFIX: &str = "ai-rate-limiter";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// RabbitMQ implementation of [`Queue`].
#[derive(Clone)]
pub struct AmqpQueue {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    prefix: String,
    conn: Mutex<Arc<Connection>>,
    publisher: Mutex<Option<Channel>>,
    declared: DashSet<String>,
    quorum: std::sync::atomic::AtomicBool,
}

/// `host:port` of an AMQP URL, for messages that must not show the password.
fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or("?"),
            u.port().unwrap_or(5672)
        ),
        Err(_) => "<unparsable URL>".into(),
    }
}

async fn open(url: &str) -> Result<Connection> {
    let props = ConnectionProperties::default()
        .with_connection_name("ai-rate-limiter".into())
        .enable_auto_recover();
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, props)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(Error::Unavailable(format!(
            "cannot connect to RabbitMQ at {}: {e}",
            redacted(url)
        ))),
        Err(_) => Err(Error::Unavailable(format!(
            "cannot connect to RabbitMQ at {}: timed out",
            redacted(url)
        ))),
    }
}

fn queue_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Queue(format!("{what}: {e}"))
}

impl AmqpQueue {
    /// Connects to the broker at `url` (`amqp://user:pass@host:5672/vhost`), naming queues
    /// `<prefix>.ws.<workspace_id>`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        let conn = open(url).await?;
        let q = Self {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                prefix: prefix.to_owned(),
                conn: Mutex::new(Arc::new(conn)),
                publisher: Mutex::new(None),
                declared: DashSet::new(),
                quorum: std::sync::atomic::AtomicBool::new(true),
            }),
        };
        tracing::info!(broker = %redacted(url), prefix, "connected to RabbitMQ");
        Ok(q)
    }

    /// The queue name of a workspace.
    pub fn queue_name(&self, ws: &WorkspaceId) -> String {
        format!("{}.ws.{}", self.inner.prefix, ws)
    }

    /// The current connection, reconnecting (with backoff, bounded) when it is gone for good.
    async fn connection(&self) -> Result<Arc<Connection>> {
        let mut guard = self.inner.conn.lock().await;
        let status = guard.status();
        if status.connected() || status.connecting() || status.reconnecting() {
            return Ok(guard.clone());
        }
        tracing::warn!(broker = %redacted(&self.inner.url), "RabbitMQ connection lost; reconnecting");
        let mut delay = Duration::from_millis(200);
        let mut last = None;
        for _ in 0..6 {
            match open(&self.inner.url).await {
                Ok(c) => {
                    *guard = Arc::new(c);
                    self.inner.declared.clear();
                    *self.inner.publisher.lock().await = None;
                    tracing::info!("reconnected to RabbitMQ");
                    return Ok(guard.clone());
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Unavailable("RabbitMQ unreachable".into())))
    }

    async fn channel(&self) -> Result<Channel> {
        let conn = self.connection().await?;
        conn.create_channel()
            .await
            .map_err(|e| queue_err("cannot open a channel", e))
    }

    /// The confirm-mode channel used for publishing.
    async fn publisher(&self) -> Result<Channel> {
        let mut guard = self.inner.publisher.lock().await;
        if let Some(ch) = guard.as_ref()
            && (ch.status().connected() || ch.status().reconnecting())
        {
            return Ok(ch.clone());
        }
        let ch = self.channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| queue_err("cannot enable publisher confirms", e))?;
        *guard = Some(ch.clone());
        Ok(ch)
    }

    /// Declares the workspace's queue once per connection: quorum if the broker takes it.
    async fn declare(&self, ws: &WorkspaceId) -> Result<String> {
        let name = self.queue_name(ws);
        if self.inner.declared.contains(&name) {
            return Ok(name);
        }
        let opts = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        if self.inner.quorum.load(std::sync::atomic::Ordering::Relaxed) {
            // A failed declare closes its channel: use a throw-away one.
            let ch = self.channel().await?;
            let mut args = FieldTable::default();
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            match ch.queue_declare(name.as_str().into(), opts, args).await {
                Ok(_) => {
                    let _ = ch.close(200, "declared".into()).await;
                    self.inner.declared.insert(name.clone());
                    return Ok(name);
                }
                Err(e) => {
                    tracing::warn!(queue = %name, error = %e, "quorum queue refused; using a classic durable queue");
                    self.inner
                        .quorum
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        let ch = self.channel().await?;
        ch.queue_declare(name.as_str().into(), opts, FieldTable::default())
            .await
            .map_err(|e| queue_err("cannot declare queue", e))?;
        let _ = ch.close(200, "declared".into()).await;
        self.inner.declared.insert(name.clone());
        Ok(name)
    }
}

/// Why a publish did not go through.
enum PublishError {
    /// The connection or channel failed: worth retrying once it recovers.
    Transport(lapin::Error),
    /// The broker refused (nack, unroutable) or did not confirm in time.
    Refused(Error),
}

impl AmqpQueue {
    /// Publishes every id, then awaits every confirm (pipelined: one round trip for a batch).
    async fn publish_once(
        &self,
        workspace: &WorkspaceId,
        ids: &[Uuid],
    ) -> std::result::Result<(), PublishError> {
        let name = self
            .declare(workspace)
            .await
            .map_err(PublishError::Refused)?;
        let ch = self.publisher().await.map_err(PublishError::Refused)?;
        let mut confirms = Vec::with_capacity(ids.len());
        for id in ids {
            let payload = id.to_string();
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(payload.as_str().into());
            let confirm = ch
                .basic_publish(
                    "".into(),
                    name.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    payload.as_bytes(),
                    props,
                )
                .await
                .map_err(PublishError::Transport)?;
            confirms.push(confirm);
        }
        let all = futures::future::join_all(confirms);
        let answers = tokio::time::timeout(CONFIRM_TIMEOUT, all)
            .await
            .map_err(|_| {
                PublishError::Refused(Error::Queue(
                    "the broker did not confirm the message in time".into(),
                ))
            })?;
        for answer in answers {
            match answer.map_err(PublishError::Transport)? {
                Confirmation::Ack(None) | Confirmation::NotRequested => {}
                Confirmation::Ack(Some(_)) => {
                    return Err(PublishError::Refused(Error::Queue(format!(
                        "the broker could not route the message to queue '{name}'"
                    ))));
                }
                Confirmation::Nack(_) => {
                    return Err(PublishError::Refused(Error::Queue(
                        "the broker refused the message (nack)".into(),
                    )));
                }
            }
        }
        Ok(())
    }
}

struct AmqpDelivery {
    id: Uuid,
    delivery: Option<lapin::message::Delivery>,
}

impl Drop for AmqpDelivery {
    fn drop(&mut self) {
        if let Some(d) = self.delivery.take() {
            // Not acknowledged: give it back to the queue.
            tokio::spawn(async move {
                let opts = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                if let Err(e) = d.acker.nack(opts).await {
                    tracing::debug!(error = %e, "nack failed; the broker requeues on channel close");
                }
            });
        }
    }
}

#[async_trait]
impl Delivery for AmqpDelivery {
    fn message_id(&self) -> Uuid {
        self.id
    }

    async fn ack(mut self: Box<Self>) -> Result<()> {
        if let Some(d) = self.delivery.take() {
            d.acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(|e| queue_err("ack failed", e))?;
        }
        Ok(())
    }
}

struct AmqpConsumer {
    queue: AmqpQueue,
    workspace: WorkspaceId,
    prefetch: u16,
    current: Option<(Channel, lapin::Consumer)>,
}

impl AmqpConsumer {
    async fn subscribe(&mut self) -> Result<()> {
        let name = self.queue.declare(&self.workspace).await?;
        let ch = self.queue.channel().await?;
        ch.basic_qos(self.prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(|e| queue_err("cannot set prefetch", e))?;
        let consumer = ch
            .basic_consume(
                name.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| queue_err("cannot consume", e))?;
        self.current = Some((ch, consumer));
        Ok(())
    }
}

impl Drop for AmqpConsumer {
    fn drop(&mut self) {
        if let Some((ch, _)) = self.current.take() {
            // Closing the channel hands any prefetched, unacked delivery back to the queue.
            tokio::spawn(async move {
                let _ = ch.close(200, "consumer stopped".into()).await;
            });
        }
    }
}

#[async_trait]
impl QueueConsumer for AmqpConsumer {
    async fn next(&mut self) -> Option<Result<Box<dyn Delivery>>> {
        loop {
            if self.current.is_none()
                && let Err(e) = self.subscribe().await
            {
                return Some(Err(e));
            }
            let (ch, consumer) = self.current.as_mut()?;
            match consumer.next().await {
                Some(Ok(d)) => {
                    let parsed = std::str::from_utf8(&d.data)
                        .ok()
                        .and_then(|s| Uuid::parse_str(s.trim()).ok());
                    match parsed {
                        Some(id) => {
                            return Some(Ok(Box::new(AmqpDelivery {
                                id,
                                delivery: Some(d),
                            })));
                        }
                        None => {
                            // Not ours: drop it for good rather than loop on it.
                            tracing::error!(
                                len = d.data.len(),
                                "unreadable queue entry; rejecting it"
                            );
                            let _ = d
                                .acker
                                .reject(lapin::options::BasicRejectOptions { requeue: false })
                                .await;
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(workspace = %self.workspace, error = %e, "consumer interrupted; waiting for recovery");
                    if ch.wait_for_recovery(e).await.is_err() {
                        self.current = None;
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
                None => {
                    // Consumer cancelled (queue deleted, channel closed): resubscribe, or stop
                    // if the queue is gone.
                    self.current = None;
                    let name = self.queue.queue_name(&self.workspace);
                    if !self.queue.inner.declared.contains(&name) {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

#[async_trait]
impl Queue for AmqpQueue {
    async fn publish(&self, workspace: &WorkspaceId, id: Uuid) -> Result<()> {
        self.publish_many(workspace, &[id]).await
    }

    async fn publish_many(&self, workspace: &WorkspaceId, ids: &[Uuid]) -> Result<()> {
        // A connection that is recovering refuses publishes for about a second: try again
        // until the confirm deadline rather than fail a message the client just sent.
        let deadline = tokio::time::Instant::now() + CONFIRM_TIMEOUT;
        loop {
            match self.publish_once(workspace, ids).await {
                Err(PublishError::Transport(e)) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(workspace = %workspace, error = %e, "publish failed; retrying after the connection recovers");
                    *self.inner.publisher.lock().await = None;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(PublishError::Transport(e)) => return Err(queue_err("publish failed", e)),
                Err(PublishError::Refused(e)) => return Err(e),
                Ok(()) => return Ok(()),
            }
        }
    }

    async fn consumer(
        &self,
        workspace: &WorkspaceId,
        prefetch: u16,
    ) -> Result<Box<dyn QueueConsumer>> {
        let mut c = AmqpConsumer {
            queue: self.clone(),
            workspace: workspace.clone(),
            prefetch,
            current: None,
        };
        c.subscribe().await?;
        Ok(Box::new(c))
    }

    async fn purge(&self, workspace: &WorkspaceId) -> Result<()> {
        let name = self.declare(workspace).await?;
        let ch = self.channel().await?;
        ch.queue_purge(name.as_str().into(), QueuePurgeOptions::default())
            .await
            .map_err(|e| queue_err("cannot purge queue", e))?;
        let _ = ch.close(200, "purged".into()).await;
        Ok(())
    }

    async fn delete(&self, workspace: &WorkspaceId) -> Result<()> {
        let name = self.queue_name(workspace);
        self.inner.declared.remove(&name);
        let ch = self.channel().await?;
        ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await
            .map_err(|e| queue_err("cannot delete queue", e))?;
        let _ = ch.close(200, "deleted".into()).await;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        let conn = self.connection().await?;
        if conn.status().connected() {
            Ok(())
        } else {
            Err(Error::Unavailable(
                "RabbitMQ connection is recovering".into(),
            ))
        }
    }

    fn backend(&self) -> &'static str {
        "rabbitmq"
    }
}
